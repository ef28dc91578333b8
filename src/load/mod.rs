//! `fhirgen load`, laid out along its data flow:
//!
//! - the store (`crate::store`: target, preflight, credentials) is checked before the first
//!   write (`descriptors`: enough open files for the workers);
//! - `crate::source`: generated records, or `--input` read in any order, on a thread of their own;
//! - `dispatch`: the scheduler that decides what may go next (nothing before what it refers to
//!   is stored) and feeds a bounded channel;
//! - `worker`: the fixed pool of `--workers` tasks that take `job`s from it;
//! - `writer`: writes a job in its mode through the store client, which passes the limiter that
//!   rides the store's quota, retries what may heal and authenticates;
//! - `report` tells what the store stats counted, `crate::failed` keeps what could not be
//!   stored, and `crate::shutdown` turns Ctrl-C and SIGTERM into a clean stop.
//!
//! Never more than `--workers` requests are in flight, and memory stays bounded whatever the
//! count.

pub mod descriptors;
pub mod dispatch;
pub mod job;
pub mod report;
pub mod worker;
pub mod writer;

use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use tokio::sync::{Mutex, mpsc};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::cli::LoadArgs;
use crate::exit;
use crate::failed::FailedSink;
use crate::shutdown;
use crate::source::{self, RecordSource, SourceItem};
use crate::store::client::{ClientOptions, Network, StoreClient};
use crate::store::limiter::{Limiter, LimiterOptions};
use crate::store::retry::RetryPolicy;
use crate::store::stats::{Progress, RequestStats, round3};
use crate::store::{preflight, target};
use dispatch::Dispatcher;
use job::{Job, JobOutcome, Publish};
use report::{FailureLog, Latency, ProgressReporter, Summary};
use worker::worker;
use writer::{BundleSizes, IdMap, RecordWriter};

pub async fn run(args: LoadArgs) -> anyhow::Result<ExitCode> {
    check_flags(&args)?;
    descriptors::ensure_room_for(args.workers, args.target.emulator)?;
    let source = source::open(&args).await?;
    let target = target::resolve(&args).await?;
    // Created only once everything else checked out, so a mistake never wipes an old file.
    let failed_sink = args
        .failed
        .as_deref()
        .map(FailedSink::create)
        .transpose()?
        .map(Arc::new);
    let stop = CancellationToken::new();
    let limiter = Arc::new(Limiter::new(LimiterOptions {
        max_rate: (args.rate > 0.0).then_some(args.rate),
        min_probe_delay: args.connection.min_backoff,
        ..LimiterOptions::default()
    }));
    let client = Arc::new(StoreClient::new(
        &target.fhir_base,
        target.credentials,
        ClientOptions {
            workers: args.workers,
            timeout: args.connection.timeout()?,
            retry: RetryPolicy::new(args.connection.max_retries, args.connection.min_backoff),
            limiter: limiter.clone(),
            max_throttle_wait: args.connection.max_throttle_wait,
            http: args.connection.http,
            network: Network {
                ca_file: args.connection.ca_file.clone(),
            },
        },
        stop.clone(),
    )?);
    let store_url = target.fhir_base.trim_end_matches("/fhir").to_owned();
    let settings = match (&args.target.store, &target.emulator) {
        (Some(store), _) => preflight::Settings::Google {
            store_url: &store_url,
            store,
        },
        (None, Some(_)) => preflight::Settings::Google {
            store_url: &store_url,
            store: "the built-in emulator's store",
        },
        (None, None) => preflight::Settings::Fhir,
    };
    // Its requests count with the run's, and so does its time: a refused handshake there is
    // the run's story, and a rate is of the requests in the time it gives.
    let started = Instant::now();
    let mut preflight_stats = RequestStats::default();
    let facts = preflight::check(&client, settings, &mut preflight_stats).await?;
    let progress = Arc::new(Progress::default());
    let reporter = Arc::new(ProgressReporter::start(
        source.total,
        progress.clone(),
        limiter.clone(),
        !args.quiet,
    ));
    let bundle_sizes = Arc::new(BundleSizes::default());
    let writer = Arc::new(RecordWriter {
        client: client.clone(),
        mode: args.mode,
        bundle_size: args.bundle_size as usize,
        // Create-on-PUT only where the store said so: a new Google store has it off.
        update_create: facts.update_create == Some(true),
        ids: Arc::new(IdMap::default()),
        failed: failed_sink.clone(),
        failures: Arc::new(FailureLog::new(
            reporter.clone(),
            args.failed.as_ref().map(|p| p.display().to_string()),
        )),
        progress: progress.clone(),
        bundle_sizes: bundle_sizes.clone(),
    });

    let (signals, interruption) = shutdown::watch(stop.clone(), failed_sink.clone());

    let total = source.total;
    let seed = source.seed;
    let mut run = Pipeline {
        workers: args.workers,
        dispatcher: Dispatcher {
            writer,
            stop: stop.clone(),
            reporter: reporter.clone(),
            publish_records: if args.input.is_some() {
                Publish::Keys
            } else {
                Publish::Nothing
            },
            followups: Arc::default(),
            // A record offers dozens of resources at once but only one at its start (the
            // Patient) and its end: half as many records as workers keeps every worker busy (a
            // quarter left 6% of them idle at 20 ms latency; as many as workers adds 8 MiB).
            records_in_progress: Arc::new(tokio::sync::Semaphore::new(
                (args.workers as usize / 2).max(4),
            )),
        },
    }
    .run(source)
    .await?;
    run.stats += &preflight_stats;
    let elapsed = started.elapsed();
    signals.abort();
    let failed_file_error = failed_sink.as_ref().and_then(|sink| sink.flush());
    if let Ok(reporter) = Arc::try_unwrap(reporter) {
        reporter.finish();
    }
    if let Some(emulator) = target.emulator {
        emulator.shutdown().await;
    }

    let interrupted = interruption.exit_code();
    let fatal = client.fatal().map(|f| f.0);
    let outcome = run.outcome;
    let (stored, failed) = (outcome.stored(), outcome.failed);
    let unstored_reference = outcome.not_sent_unstored_reference;
    // With a known total, whatever was never generated also counts as not sent.
    let stopped = match total {
        Some(total) => total
            .saturating_sub(stored + failed + unstored_reference)
            .max(outcome.not_sent),
        None => outcome.not_sent,
    };
    let not_sent = stopped + unstored_reference;
    let seconds = elapsed.as_secs_f64().max(1e-9);
    let summary = Summary {
        stored,
        created: outcome.created,
        already_present: outcome.already_present,
        updated: outcome.updated,
        failed,
        not_sent,
        not_sent_reasons: [
            (report::NOT_SENT_STOPPED, stopped),
            (report::NOT_SENT_UNSTORED_REFERENCE, unstored_reference),
        ]
        .into_iter()
        .filter(|(_, n)| *n > 0)
        .map(|(reason, n)| (reason.to_owned(), n))
        .collect(),
        requests: run.stats.requests,
        retries: run.stats.retries,
        throttled_requests: run.stats.status_counts.get(&429).copied().unwrap_or(0),
        throttled_seconds: round3(limiter.throttled_time().as_secs_f64()),
        elapsed_seconds: round3(seconds),
        resources_per_second: round3(stored as f64 / seconds),
        requests_per_second: round3(run.stats.requests as f64 / seconds),
        latency_ms: Latency::from_stats(&run.stats),
        status_counts: run
            .stats
            .status_counts
            .iter()
            .map(|(status, n)| (status.to_string(), *n))
            .collect(),
        errors: run.stats.errors.clone(),
        seed,
        mode: format!("{:?}", args.mode).to_lowercase(),
        workers: args.workers,
        target: target.description,
        interrupted: interrupted.is_some(),
        fatal_error: fatal.clone(),
        failed_file: failed_sink.map(|s| s.path().display().to_string()),
        failed_file_error: failed_file_error.clone(),
    };
    if !args.quiet {
        summary.print_text();
    } else if let Some(reason) = &fatal {
        eprintln!("error: {reason}");
    }
    if args.json {
        exit::print_json_line(&summary)?;
    }
    if failed > 0 {
        if let Some(hint) = bundle_size_hint(&bundle_sizes, args.bundle_size as usize) {
            eprintln!("{hint}");
        }
    }
    // An input with nothing in it is a mistake (a wrong path, an export that wrote nothing),
    // not a load that stored everything.
    let read_nothing = args.input.is_some() && stored + failed + not_sent == 0;
    if read_nothing && interrupted.is_none() && fatal.is_none() {
        eprintln!(
            "error: --input {} holds no FHIR resources: nothing was loaded",
            args.input
                .as_deref()
                .unwrap_or(std::path::Path::new("-"))
                .display()
        );
    }
    let code = if let Some(code) = interrupted {
        code
    } else if fatal.is_some()
        || failed > 0
        || not_sent > 0
        || failed_file_error.is_some()
        || read_nothing
    {
        exit::FAILURE
    } else {
        exit::SUCCESS
    };
    Ok(code.into())
}

/// What to try when the store refused only the larger bundles: most likely it caps the entries
/// of a transaction, and every refused entry failed with the store's own words for it.
fn bundle_size_hint(sizes: &BundleSizes, bundle_size: usize) -> Option<String> {
    let (stored, refused) = sizes.cap_seen()?;
    (stored < bundle_size).then(|| {
        format!(
            "hint: every transaction bundle the store refused had {refused} or more entries, and \
             every one it stored {stored} or fewer: if it caps the entries of a transaction, \
             --bundle-size {stored} stays under the cap (the same command with it stores what \
             failed, and nothing twice)"
        )
    })
}

fn check_flags(args: &LoadArgs) -> anyhow::Result<()> {
    args.connection.timeout()?;
    let rate_ok = args.rate == 0.0
        || (args.rate > 0.0 && Duration::try_from_secs_f64(1.0 / args.rate).is_ok());
    if !rate_ok {
        return Err(exit::usage(format!(
            "--rate {} must be a number of operations per second (0 for no cap)",
            args.rate
        )));
    }
    if let (Some(input), Some(failed)) = (&args.input, &args.failed) {
        if failed_would_clobber_input(input, failed) {
            return Err(exit::usage(format!(
                "--failed {} would overwrite the --input being read; write failures to another file \
                 (e.g. --failed failed-again.ndjson)",
                failed.display()
            )));
        }
    }
    Ok(())
}

/// Whether writing `failed` would truncate `input` or a file inside it.
fn failed_would_clobber_input(input: &std::path::Path, failed: &std::path::Path) -> bool {
    if input == std::path::Path::new("-") {
        return false;
    }
    let Ok(input) = input.canonicalize() else {
        return false;
    };
    let failed = match failed.canonicalize() {
        Ok(existing) => existing,
        // Not there yet: where it would be created.
        Err(_) => match (failed.parent(), failed.file_name()) {
            (Some(parent), Some(name)) => {
                let parent = if parent.as_os_str().is_empty() {
                    std::path::Path::new(".")
                } else {
                    parent
                };
                match parent.canonicalize() {
                    Ok(parent) => parent.join(name),
                    Err(_) => return false,
                }
            }
            _ => return false,
        },
    };
    failed == input || failed.starts_with(&input)
}

/// The data flow of a load: the source on a thread of its own, feeding the dispatcher, which
/// feeds the worker pool through a bounded channel.
struct Pipeline {
    workers: u32,
    dispatcher: Dispatcher,
}

/// Records read or generated ahead of the dispatcher.
const SOURCE_QUEUE: usize = 8;

struct PipelineResult {
    outcome: JobOutcome,
    stats: RequestStats,
}

impl Pipeline {
    async fn run(self, source: RecordSource) -> anyhow::Result<PipelineResult> {
        // Workers refill from here as they finish; a quarter of the pool queued keeps them
        // fed (the dispatcher is far faster than a store) without holding every bundle twice.
        // Records written resource by resource start here, each holding a record permit while
        // it waits: a short queue keeps those permits on records that are being written.
        let dispatcher = &self.dispatcher;
        let capacity = if dispatcher.resource_by_resource() {
            4
        } else {
            (self.workers as usize / 4).max(2)
        };
        let (job_tx, job_rx) = mpsc::channel::<Job>(capacity);
        let job_rx = Arc::new(Mutex::new(job_rx));
        let mut pool = JoinSet::new();
        for _ in 0..self.workers {
            pool.spawn(worker(
                job_rx.clone(),
                dispatcher.followups.clone(),
                dispatcher.writer.clone(),
                dispatcher.stop.clone(),
            ));
        }

        // Generation and parsing are CPU work: a thread of their own, feeding a bounded channel.
        // The producer only has to stay ahead of the dispatcher, which is faster than any
        // store: a short queue is enough, and every record in it is memory.
        let (item_tx, item_rx) = mpsc::channel::<SourceItem>(SOURCE_QUEUE);
        let RecordSource {
            prerequisites,
            items,
            ..
        } = source;
        // It ends with the source, or at its next send once the dispatcher has gone; one
        // blocked on a stdin nobody closes is left behind when the runtime shuts down.
        tokio::task::spawn_blocking(move || {
            for item in items {
                if item_tx.blocking_send(item).is_err() {
                    break;
                }
            }
        });

        let mut invalid = 0;
        let dispatched = dispatcher
            .run(prerequisites, item_rx, &job_tx, &mut invalid)
            .await;
        drop(job_tx);

        let mut outcome = JobOutcome::default();
        let mut stats = RequestStats::default();
        while let Some(joined) = pool.join_next().await {
            let (worker_outcome, worker_stats) = joined.context("a load worker crashed")?;
            outcome += worker_outcome;
            stats += &worker_stats;
        }
        // Jobs still queued when the run stopped were never attempted; resources of records
        // written one by one are counted, queued or not, by what the follow-ups left unwritten.
        let mut rx = job_rx.lock().await;
        while let Ok(job) = rx.try_recv() {
            outcome.not_sent += job.resources.len() as u64;
        }
        outcome.not_sent += dispatcher.followups.unwritten() + dispatched?;
        outcome.failed += invalid;
        Ok(PipelineResult { outcome, stats })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bundle_size_hint_names_a_size_under_the_one_used() {
        let sizes = BundleSizes::default();
        assert_eq!(bundle_size_hint(&sizes, 100), None);
        sizes.stored(8);
        sizes.refused(9);
        let hint = bundle_size_hint(&sizes, 100).unwrap();
        assert!(hint.contains("--bundle-size 8 "), "{hint}");
        assert!(hint.contains("9 or more entries"), "{hint}");
        // Already at that size: the refusals were about something else.
        assert_eq!(bundle_size_hint(&sizes, 8), None);
    }
}
