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

use crate::config::{LoadConfig, SourceConfig, WorkerPool};
use crate::exit;
use crate::failed::FailedSink;
use crate::shutdown;
use crate::source::{self, RecordSource, SourceItem};
use crate::store::client::StoreClient;
use crate::store::stats::{Progress, RequestStats, round3};
use crate::store::{preflight, target};
use dispatch::Dispatcher;
use job::{Job, JobOutcome, Publish};
use report::{FailureLog, Latency, ProgressReporter, Summary};
use worker::worker;
use writer::{BundleSizes, IdMap, RecordWriter};

pub async fn run(config: LoadConfig) -> anyhow::Result<ExitCode> {
    descriptors::ensure_room_for(config.pool)?;
    let source = source::open(&config.source).await?;
    let connection = &config.connection;
    let target = target::resolve(&config.target, &connection.auth, &connection.network).await?;
    // Created only once everything else checked out, so a mistake never wipes an old file.
    let failed_sink = config
        .failed
        .as_deref()
        .map(FailedSink::create)
        .transpose()?
        .map(Arc::new);
    let stop = CancellationToken::new();
    let limiter = connection.limiter(config.max_rate);
    let client = Arc::new(StoreClient::new(
        &target.fhir_base,
        target.credentials,
        connection.client_options(config.pool, limiter.clone()),
        stop.clone(),
    )?);
    let settings = match &target.google {
        Some(store) => preflight::Settings::Google {
            store_url: &store.url,
            store: &store.name,
        },
        None => preflight::Settings::Fhir,
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
        !config.quiet,
    ));
    let bundle_sizes = Arc::new(BundleSizes::default());
    let writer = Arc::new(RecordWriter {
        client: client.clone(),
        mode: config.mode,
        bundle_size: config.bundle_size,
        // Create-on-PUT only where the store said so: a new Google store has it off.
        update_create: facts.update_create == Some(true),
        ids: Arc::new(IdMap::default()),
        failed: failed_sink.clone(),
        failures: Arc::new(FailureLog::new(
            reporter.clone(),
            config.failed.as_ref().map(|p| p.display().to_string()),
        )),
        progress,
        bundle_sizes: bundle_sizes.clone(),
        tag_search: Default::default(),
    });

    let (signals, interruption) = shutdown::watch(stop.clone(), failed_sink.clone());
    let (total, seed) = (source.total, source.seed);
    let mut run = Pipeline {
        pool: config.pool,
        dispatcher: Dispatcher {
            writer,
            mode: config.mode,
            bundle_size: config.bundle_size,
            stop,
            reporter: reporter.clone(),
            publish_records: match config.source {
                SourceConfig::Input(_) => Publish::Keys,
                SourceConfig::Generated(_) => Publish::Nothing,
            },
            followups: Arc::default(),
            records_in_progress: Arc::new(tokio::sync::Semaphore::new(
                config.pool.records_in_progress(),
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
    let ended = Ended {
        total,
        seed,
        elapsed,
        throttled: limiter.throttled_time(),
        target: target.description,
        interrupted: interruption.exit_code(),
        fatal: client.fatal().map(|f| f.0),
        failed_file: failed_sink.map(|s| s.path().display().to_string()),
        failed_file_error,
    };
    let summary = summarize(&config, run, &ended);
    tell(&config, &summary, &ended, &bundle_sizes)
}

/// How the run ended, besides what its workers counted.
struct Ended {
    /// The resources the source said it would yield, when it knew.
    total: Option<u64>,
    seed: Option<u64>,
    elapsed: Duration,
    throttled: Duration,
    target: String,
    /// The exit code of the signal that stopped the run.
    interrupted: Option<u8>,
    /// What stopped every worker (a refused credential, an unreachable store).
    fatal: Option<String>,
    failed_file: Option<String>,
    failed_file_error: Option<String>,
}

fn summarize(config: &LoadConfig, run: PipelineResult, ended: &Ended) -> Summary {
    let outcome = run.outcome;
    let (stored, failed) = (outcome.stored(), outcome.failed);
    let unstored_reference = outcome.not_sent_unstored_reference;
    // With a known total, whatever was never generated also counts as not sent.
    let stopped = match ended.total {
        Some(total) => total
            .saturating_sub(stored + failed + unstored_reference)
            .max(outcome.not_sent),
        None => outcome.not_sent,
    };
    let seconds = ended.elapsed.as_secs_f64().max(1e-9);
    Summary {
        stored,
        created: outcome.created,
        already_present: outcome.already_present,
        created_or_present: outcome.created_or_present,
        updated: outcome.updated,
        failed,
        not_sent: stopped + unstored_reference,
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
        throttled_seconds: round3(ended.throttled.as_secs_f64()),
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
        errors: run.stats.errors,
        seed: ended.seed,
        mode: format!("{:?}", config.mode).to_lowercase(),
        workers: config.pool.workers,
        target: ended.target.clone(),
        interrupted: ended.interrupted.is_some(),
        fatal_error: ended.fatal.clone(),
        failed_file: ended.failed_file.clone(),
        failed_file_error: ended.failed_file_error.clone(),
    }
}

/// Prints the summary as asked, with what to try next, and gives the exit code.
fn tell(
    config: &LoadConfig,
    summary: &Summary,
    ended: &Ended,
    bundle_sizes: &BundleSizes,
) -> anyhow::Result<ExitCode> {
    if !config.quiet {
        summary.print_text();
    } else if let Some(reason) = &ended.fatal {
        crate::say!("error: {reason}");
    }
    if config.json {
        exit::print_json_line(summary)?;
    }
    if summary.failed > 0 {
        if let Some(hint) = bundle_size_hint(bundle_sizes, config.bundle_size) {
            crate::say!("{hint}");
        }
    }
    if let Some(fit) = bundle_sizes.quota_fit() {
        crate::say!(
            "hint: the store's quota window never admitted the larger bundles, so they were \
             split (into bundles of {fit} entries or fewer); --bundle-size {fit} sends them so \
             from the start"
        );
    }
    // An input with nothing in it is a mistake (a wrong path, an export that wrote nothing),
    // not a load that stored everything.
    let read_nothing = summary.stored + summary.failed + summary.not_sent == 0;
    let empty_input = config.source.input().filter(|_| read_nothing);
    if let Some(input) = empty_input {
        if ended.interrupted.is_none() && ended.fatal.is_none() {
            crate::say!(
                "error: --input {} holds no FHIR resources: nothing was loaded",
                input.display()
            );
        }
    }
    let code = if let Some(code) = ended.interrupted {
        code
    } else if empty_input.is_some() && ended.fatal.is_none() {
        // Bad usage: nothing was attempted.
        exit::USAGE
    } else if ended.fatal.is_some()
        || summary.failed > 0
        || summary.not_sent > 0
        || ended.failed_file_error.is_some()
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

/// The data flow of a load: the source on a thread of its own, feeding the dispatcher, which
/// feeds the worker pool through a bounded channel.
struct Pipeline {
    pool: WorkerPool,
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
        let dispatcher = &self.dispatcher;
        let capacity = self.pool.job_queue(dispatcher.resource_by_resource());
        let (job_tx, job_rx) = mpsc::channel::<Job>(capacity);
        let job_rx = Arc::new(Mutex::new(job_rx));
        let mut pool = JoinSet::new();
        for _ in 0..self.pool.workers {
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
