//! `fhirgen load`: records flow from a source through a bounded channel to a fixed pool of
//! workers, each writing one job at a time, so never more than `--workers` requests are in
//! flight and memory stays flat whatever the count.

pub mod auth;
pub mod client;
pub mod descriptors;
pub mod failed;
pub mod limiter;
pub mod preflight;
pub mod report;
pub mod retry;
pub mod shutdown;
pub mod source;
pub mod stats;
pub mod target;
pub mod writer;

use std::collections::{HashMap, HashSet};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use tokio::sync::{Mutex, mpsc};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::cli::{LoadArgs, LoadMode};
use crate::exit;
use crate::fhir::{Record, RecordKind, Resource};
use client::{ClientOptions, StoreClient};
use failed::{FailedSink, Failure};
use limiter::{Limiter, LimiterOptions};
use report::{FailureLog, Latency, ProgressReporter, Summary, round3};
use retry::RetryPolicy;
use source::{RecordSource, SourceItem};
use stats::{Progress, RequestStats};
use writer::{Completion, IdMap, Job, JobOutcome, Publish, RecordDag, RecordWriter};

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
            timeout: Duration::from_secs_f64(args.connection.timeout),
            retry: RetryPolicy::new(args.connection.max_retries, args.connection.min_backoff),
            limiter: limiter.clone(),
            max_throttle_wait: args.connection.max_throttle_wait,
            http: args.connection.http,
            network: client::Network {
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
    // Its requests count with the run's: a refused handshake there is the run's story.
    let mut preflight_stats = RequestStats::default();
    let facts = preflight::check(&client, settings, &mut preflight_stats).await?;
    let progress = Arc::new(Progress::default());
    let reporter = Arc::new(ProgressReporter::start(
        source.total,
        progress.clone(),
        limiter.clone(),
        !args.quiet,
    ));
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
    });

    let (signals, interruption) = shutdown::watch(stop.clone(), failed_sink.clone());

    let started = Instant::now();
    let total = source.total;
    let seed = source.seed;
    let mut run = Pipeline {
        writer,
        workers: args.workers,
        stop: stop.clone(),
        reporter: reporter.clone(),
        publish_records: if args.input.is_some() {
            Publish::Keys
        } else {
            Publish::Nothing
        },
        followups: Arc::default(),
        // A record offers dozens of resources at once but only one at its start (the Patient)
        // and its end: half as many records as workers keeps every worker busy (a quarter
        // left 6% of them idle at 20 ms latency; as many as workers adds 8 MiB for 1%).
        records_in_progress: Arc::new(tokio::sync::Semaphore::new(
            (args.workers as usize / 2).max(4),
        )),
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
        // A reader that went away (`| head -c0`) changes nothing about how the load went.
        if let Err(error) = summary.print_json() {
            if !exit::is_broken_pipe(&error) {
                return Err(error);
            }
        }
    }
    let code = if let Some(code) = interrupted {
        code
    } else if fatal.is_some() || failed > 0 || not_sent > 0 || failed_file_error.is_some() {
        exit::FAILURE
    } else {
        exit::SUCCESS
    };
    Ok(code.into())
}

fn check_flags(args: &LoadArgs) -> anyhow::Result<()> {
    if !(args.connection.timeout > 0.0
        && Duration::try_from_secs_f64(args.connection.timeout).is_ok())
    {
        return Err(exit::usage(format!(
            "--timeout {} must be a positive number of seconds",
            args.connection.timeout
        )));
    }
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

struct Pipeline {
    writer: Arc<RecordWriter>,
    workers: u32,
    stop: CancellationToken,
    reporter: Arc<ProgressReporter>,
    /// Records read from files may refer to each other (bulk exports split by type), so
    /// their ids are kept for the run; generated patient records never do.
    publish_records: Publish,
    followups: Arc<FollowUps>,
    /// Records being written resource by resource; a record holds a permit until its last
    /// resource is written, so that memory does not grow with the count.
    records_in_progress: Arc<tokio::sync::Semaphore>,
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
        let capacity = if self.resource_by_resource() {
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
                self.followups.clone(),
                self.writer.clone(),
                self.stop.clone(),
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
        let dispatched = self
            .dispatch(prerequisites, item_rx, &job_tx, &mut invalid)
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
        outcome.not_sent += self.followups.unwritten() + dispatched?;
        outcome.failed += invalid;
        Ok(PipelineResult { outcome, stats })
    }

    /// Feeds the workers in an order that keeps references satisfiable: a job is sent only
    /// once every job it refers to has finished (and published where its resources went).
    /// Shared records are split into small jobs so that all workers store them at once.
    async fn dispatch(
        &self,
        prerequisites: Vec<Record>,
        mut items: mpsc::Receiver<SourceItem>,
        jobs: &mpsc::Sender<Job>,
        invalid: &mut u64,
    ) -> anyhow::Result<u64> {
        let mut in_flight = InFlight::default();
        let mut pack = Pack::default();
        let mut ready: std::collections::VecDeque<Job> = prerequisites
            .into_iter()
            .flat_map(|record| self.split_shared(record.resources, None))
            .collect();
        let mut unsent = 0;
        'feed: loop {
            while let Some(job) = ready.pop_front() {
                let resources = job.resources.len() as u64;
                if !self.send_in_order(jobs, job, &mut in_flight).await {
                    unsent += resources;
                    break 'feed;
                }
            }
            // Take what is ready; before waiting for more, send what has been packed so far
            // so that a slow source never leaves a bundle sitting half full.
            let item = match items.try_recv() {
                Ok(item) => Some(item),
                Err(mpsc::error::TryRecvError::Disconnected) => None,
                Err(mpsc::error::TryRecvError::Empty) => {
                    if let Some(job) = pack.take(self.publish_records) {
                        ready.push_back(job);
                        continue;
                    }
                    tokio::select! {
                        item = items.recv() => item,
                        _ = self.stop.cancelled() => None,
                    }
                }
            };
            let Some(item) = item else {
                // The source is done (or the run stopped): send what is packed, then finish.
                match pack.take(self.publish_records) {
                    Some(job) if !self.stop.is_cancelled() => {
                        ready.push_back(job);
                        continue;
                    }
                    Some(job) => unsent += job.resources.len() as u64,
                    None => {}
                }
                break;
            };
            if self.stop.is_cancelled() {
                unsent += item.resource_count();
                break;
            }
            match item {
                SourceItem::Record { record, sources } if record.kind == RecordKind::Shared => {
                    ready.extend(pack.take(self.publish_records));
                    ready.extend(self.split_shared(record.resources, sources));
                }
                SourceItem::Record { record, sources } => match self.writer.mode {
                    LoadMode::Create | LoadMode::Update if self.resource_by_resource() => {
                        // Nothing outside the record refers into it: its resources can go
                        // out one by one on any worker, once what it refers to is stored.
                        let resources = record.resources.len() as u64;
                        let waited = wait_all(in_flight.dependencies_of(&record.resources));
                        let permit = tokio::select! {
                            permit = async {
                                waited.await;
                                self.records_in_progress.clone().acquire_owned().await
                            } => permit.expect("the semaphore is never closed"),
                            _ = self.stop.cancelled() => {
                                unsent += resources;
                                break;
                            }
                        };
                        self.followups.expect(record.resources.len());
                        ready.extend(RecordDag::start(record.resources, permit));
                    }
                    LoadMode::Create | LoadMode::Update => {
                        // Others may refer to any of these: keep the record whole, so that
                        // one completion covers all of its keys.
                        ready.push_back(Job {
                            sources,
                            publish: self.publish_records,
                            ..Job::new(record.resources)
                        });
                    }
                    LoadMode::Transaction => {
                        // Small records share a bundle: a transaction costs one round trip
                        // whether it holds 10 entries or 100.
                        if pack.len() + record.resources.len() > self.writer.bundle_size {
                            ready.extend(pack.take(self.publish_records));
                        }
                        pack.add(record.resources, sources);
                        if pack.len() >= self.writer.bundle_size {
                            ready.extend(pack.take(self.publish_records));
                        }
                    }
                },
                SourceItem::Invalid {
                    source,
                    message,
                    content,
                } => {
                    *invalid += 1;
                    self.reporter.println(&format!("{source}: {message}"));
                    if let Some(sink) = &self.writer.failed {
                        let failure = Failure {
                            status: None,
                            message,
                            source: Some(source),
                        };
                        sink.write(&content, &failure);
                    }
                }
            }
        }
        // What the run stopped before sending: jobs made but not sent (a record written
        // resource by resource is counted by the follow-ups), packed records, queued input.
        unsent += ready
            .iter()
            .map(|job| job.resources.len() as u64)
            .sum::<u64>();
        unsent += pack.len() as u64;
        while let Ok(item) = items.try_recv() {
            unsent += item.resource_count();
        }
        Ok(unsent)
    }

    /// Whether patient records go out one resource per job: when nothing outside a record
    /// refers into it, any free worker can take any of its resources that is ready.
    fn resource_by_resource(&self) -> bool {
        self.writer.mode != LoadMode::Transaction && self.publish_records == Publish::Nothing
    }

    /// Shared resources in jobs small enough to spread over all workers: one resource each,
    /// or one bundle each in transaction mode. Their ids are published for what follows.
    fn split_shared(&self, resources: Vec<Resource>, sources: Option<Vec<String>>) -> Vec<Job> {
        let per_job = match self.writer.mode {
            LoadMode::Transaction => self.writer.bundle_size,
            LoadMode::Create | LoadMode::Update => 1,
        };
        let mut sources = sources.map(Vec::into_iter);
        let mut resources = resources.into_iter().peekable();
        let mut split = Vec::new();
        while resources.peek().is_some() {
            let chunk: Vec<Resource> = resources.by_ref().take(per_job).collect();
            let chunk_sources = sources
                .as_mut()
                .map(|s| s.by_ref().take(chunk.len()).collect());
            split.push(Job {
                // Independent of each other: a transaction refused for one is sent again
                // without it.
                record_ends: (1..=chunk.len()).collect(),
                sources: chunk_sources,
                publish: Publish::KeysAndIdentifiers,
                ..Job::new(chunk)
            });
        }
        split
    }

    /// Waits for the jobs that `job` refers to, then sends it.
    async fn send_in_order(
        &self,
        jobs: &mpsc::Sender<Job>,
        mut job: Job,
        in_flight: &mut InFlight,
    ) -> bool {
        tokio::select! {
            _ = wait_all(in_flight.dependencies_of(&job.resources)) => {}
            _ = self.stop.cancelled() => return false,
        }
        if job.publish != Publish::Nothing {
            job.done = Some(in_flight.track(&job));
        }
        self.send_job(jobs, job).await
    }

    async fn send_job(&self, jobs: &mpsc::Sender<Job>, job: Job) -> bool {
        tokio::select! {
            sent = jobs.send(job) => sent.is_ok(),
            _ = self.stop.cancelled() => false,
        }
    }
}

async fn wait_all(completions: Vec<Arc<Completion>>) {
    for completion in completions {
        completion.wait().await;
    }
}

async fn worker(
    jobs: Arc<Mutex<mpsc::Receiver<Job>>>,
    followups: Arc<FollowUps>,
    writer: Arc<RecordWriter>,
    stop: CancellationToken,
) -> (JobOutcome, RequestStats) {
    let _stop_on_panic = StopOnPanic(stop.clone());
    let mut outcome = JobOutcome::default();
    let mut stats = RequestStats::default();
    while let Some(job) = next_job(&jobs, &followups, &stop).await {
        let part_of_record = job.node.is_some();
        let (written, ready) = writer.write(job, &mut stats).await;
        outcome += written;
        if part_of_record {
            followups.written(ready);
        }
    }
    (outcome, stats)
}

/// Stops the run when a worker panics: the jobs it held would never finish, and everything
/// waiting for them would wait forever. The panic then surfaces as the run's error.
struct StopOnPanic(CancellationToken);

impl Drop for StopOnPanic {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.0.cancel();
        }
    }
}

/// Follow-ups first (they finish records already started), then new jobs; `None` once the
/// run stops, or when no job is left and none can appear.
async fn next_job(
    jobs: &Mutex<mpsc::Receiver<Job>>,
    followups: &FollowUps,
    stop: &CancellationToken,
) -> Option<Job> {
    loop {
        if stop.is_cancelled() {
            return None;
        }
        let notified = followups.notify.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        if let Some(job) = followups.pop() {
            return Some(job);
        }
        let received = tokio::select! {
            _ = stop.cancelled() => return None,
            _ = &mut notified => continue,
            job = async { jobs.lock().await.recv().await } => job,
        };
        match received {
            Some(job) => return Some(job),
            None if followups.idle() => return None,
            None => notified.await,
        }
    }
}

/// Resources of records in progress that became ready to write when what they refer to was
/// stored; taken before new records, so that records in progress finish first and the end of
/// a run keeps every worker busy.
#[derive(Default)]
struct FollowUps {
    queue: std::sync::Mutex<std::collections::VecDeque<Job>>,
    /// Resources of records in progress not yet written: while there are any, more work
    /// may appear here even when no new record will.
    unwritten: std::sync::atomic::AtomicUsize,
    notify: tokio::sync::Notify,
}

impl FollowUps {
    fn pop(&self) -> Option<Job> {
        self.queue.lock().expect("follow-up lock").pop_front()
    }

    /// A record of `resources` starts being written resource by resource.
    fn expect(&self, resources: usize) {
        self.unwritten
            .fetch_add(resources, std::sync::atomic::Ordering::SeqCst);
    }

    /// One resource was written (or failed); `ready` are those that waited for it.
    fn written(&self, ready: Vec<Job>) {
        if !ready.is_empty() {
            self.queue.lock().expect("follow-up lock").extend(ready);
        }
        self.unwritten
            .fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
        self.notify.notify_waiters();
    }

    fn idle(&self) -> bool {
        self.unwritten() == 0
    }

    /// Resources of records in progress never written (the run stopped).
    fn unwritten(&self) -> u64 {
        self.unwritten.load(std::sync::atomic::Ordering::SeqCst) as u64
    }
}

/// Whole records gathered into one job, so that one transaction carries several.
#[derive(Default)]
struct Pack {
    resources: Vec<Resource>,
    /// Where each record added ends in `resources`.
    record_ends: Vec<usize>,
    /// `path:line` per resource, while every record added had them.
    sources: Option<Vec<String>>,
}

impl Pack {
    fn len(&self) -> usize {
        self.resources.len()
    }

    fn add(&mut self, resources: Vec<Resource>, sources: Option<Vec<String>>) {
        self.sources = match (self.resources.is_empty(), self.sources.take(), sources) {
            (true, _, sources) => sources,
            (false, Some(mut all), Some(more)) => {
                all.extend(more);
                Some(all)
            }
            _ => None,
        };
        self.resources.extend(resources);
        self.record_ends.push(self.resources.len());
    }

    fn take(&mut self, publish: Publish) -> Option<Job> {
        if self.resources.is_empty() {
            return None;
        }
        Some(Job {
            sources: self.sources.take(),
            record_ends: std::mem::take(&mut self.record_ends),
            publish,
            ..Job::new(std::mem::take(&mut self.resources))
        })
    }
}

/// Jobs sent but not finished, by the keys of the resources they hold (and the
/// conditional references that find them), so that what refers to them can wait.
#[derive(Default)]
struct InFlight {
    by_key: HashMap<String, Arc<Completion>>,
    /// The jobs in `by_key` not known to have finished: once there are none, no resource
    /// has anything to wait for, and the walk over its references is skipped.
    unfinished: Vec<Arc<Completion>>,
    /// Size after the last sweep of finished jobs: sweeping only when the map has doubled
    /// keeps the cost per job constant.
    swept_at: usize,
}

impl InFlight {
    fn track(&mut self, job: &Job) -> Arc<Completion> {
        if self.by_key.len() > 2 * self.swept_at + 1024 {
            self.by_key
                .retain(|_, completion| !completion.is_finished());
            self.swept_at = self.by_key.len();
        }
        let completion = Arc::new(Completion::default());
        self.unfinished.push(completion.clone());
        for resource in &job.resources {
            if let Some(conditional) = resource.conditional_reference() {
                self.by_key.insert(conditional, completion.clone());
            }
            self.by_key.insert(resource.key.clone(), completion.clone());
        }
        completion
    }

    /// Unfinished jobs holding something `resources` refer to (other than themselves).
    fn dependencies_of(&mut self, resources: &[Resource]) -> Vec<Arc<Completion>> {
        self.unfinished
            .retain(|completion| !completion.is_finished());
        if self.unfinished.is_empty() {
            return Vec::new();
        }
        let own: HashSet<&str> = resources.iter().map(|r| r.key.as_str()).collect();
        let mut waits: Vec<Arc<Completion>> = Vec::new();
        for resource in resources {
            crate::fhir::any_reference(&resource.body, &mut |reference| {
                if let Some(completion) = self.by_key.get(reference) {
                    if !own.contains(reference)
                        && !completion.is_finished()
                        && !waits.iter().any(|w| Arc::ptr_eq(w, completion))
                    {
                        waits.push(completion.clone());
                    }
                }
                false
            });
        }
        waits
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[tokio::test]
    async fn waits_only_for_unfinished_jobs_it_refers_to() {
        let org = Resource::new(json!({"resourceType": "Organization", "id": "o",
            "identifier": [{"system": "https://x", "value": "o"}]}));
        let patient = Resource::new(json!({"resourceType": "Patient", "id": "p",
            "managingOrganization": {"reference": "Organization/o"}}));
        let by_identifier = Resource::new(json!({"resourceType": "Patient", "id": "q",
            "managingOrganization": {"reference": "Organization?identifier=https://x|o"}}));
        let mut in_flight = InFlight::default();
        let org_done = in_flight.track(&Job::new(vec![org]));
        assert_eq!(
            in_flight
                .dependencies_of(std::slice::from_ref(&patient))
                .len(),
            1
        );
        assert_eq!(in_flight.dependencies_of(&[by_identifier]).len(), 1);
        org_done.finish();
        assert!(in_flight.dependencies_of(&[patient]).is_empty());
    }
}
