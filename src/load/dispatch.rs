//! The scheduler: decides what goes to the workers next, so that every reference points at
//! something already stored. A job is sent only once the jobs it refers to have finished and
//! published where their resources went; shared resources go first, split so that every worker
//! stores them at once; small patient records are packed into one transaction; records written
//! resource by resource start as [`RecordDag`]s whose resources the workers release.

use std::collections::VecDeque;

use foldhash::{HashMap, HashSet};
use std::sync::Arc;

use tokio::sync::{Semaphore, mpsc};
use tokio_util::sync::CancellationToken;

use super::job::{Completion, Job, Publish, RecordDag};
use super::report::ProgressReporter;
use super::worker::FollowUps;
use super::writer::RecordWriter;
use crate::cli::LoadMode;
use crate::failed::Failure;
use crate::fhir::{Record, RecordKind, Resource};
use crate::source::SourceItem;

pub struct Dispatcher {
    pub writer: Arc<RecordWriter>,
    /// How records are written, and the most entries a transaction bundle takes: what
    /// decides how records are cut into jobs.
    pub mode: LoadMode,
    pub bundle_size: usize,
    pub stop: CancellationToken,
    pub reporter: Arc<ProgressReporter>,
    /// Records read from files may refer to each other (bulk exports split by type), so
    /// their ids are kept for the run; generated patient records never do.
    pub publish_records: Publish,
    pub followups: Arc<FollowUps>,
    /// Records being written resource by resource; a record holds a permit until its last
    /// resource is written, so that memory does not grow with the count.
    pub records_in_progress: Arc<Semaphore>,
}

/// What the dispatcher holds between two items of the source.
#[derive(Default)]
struct Feed {
    unfinished: Unfinished,
    /// Small records packed into the next transaction bundle.
    pack: Pack,
    /// Jobs made and not yet sent, in order.
    ready: VecDeque<Job>,
    /// Resources the run stopped before sending.
    unsent: u64,
}

/// What the source gave, once what was ready went out.
enum Next {
    Item(SourceItem),
    /// A job became ready instead (a pack sent before waiting): send it, then ask again.
    Again,
    /// The source is done, or the run stopped.
    Done,
}

impl Dispatcher {
    /// Feeds the workers in an order that keeps references satisfiable: a job is sent only
    /// once every job it refers to has finished (and published where its resources went).
    /// Shared records are split into small jobs so that all workers store them at once.
    /// Gives the number of resources the run stopped before sending.
    pub async fn run(
        &self,
        prerequisites: Vec<Record>,
        mut items: mpsc::Receiver<SourceItem>,
        jobs: &mpsc::Sender<Job>,
        invalid: &mut u64,
    ) -> anyhow::Result<u64> {
        let mut feed = Feed {
            ready: prerequisites
                .into_iter()
                .flat_map(|record| self.split_shared(record.resources, None))
                .collect(),
            ..Feed::default()
        };
        while self.send_ready(jobs, &mut feed).await {
            match self.next_item(&mut items, &mut feed).await {
                Next::Item(item) if self.stop.is_cancelled() => {
                    feed.unsent += item.resource_count();
                    break;
                }
                Next::Item(item) => {
                    if !self.admit(item, &mut feed, invalid).await {
                        break;
                    }
                }
                Next::Again => {}
                Next::Done => break,
            }
        }
        // What the run stopped before sending: jobs made but not sent (a record written
        // resource by resource is counted by the follow-ups), packed records, queued input.
        feed.unsent += feed
            .ready
            .iter()
            .map(|job| job.resources.len() as u64)
            .sum::<u64>();
        feed.unsent += feed.pack.len() as u64;
        while let Ok(item) = items.try_recv() {
            feed.unsent += item.resource_count();
        }
        Ok(feed.unsent)
    }

    /// Sends every ready job in order; false when the run stopped first.
    async fn send_ready(&self, jobs: &mpsc::Sender<Job>, feed: &mut Feed) -> bool {
        while let Some(job) = feed.ready.pop_front() {
            let resources = job.resources.len() as u64;
            if !self.send_in_order(jobs, job, &mut feed.unfinished).await {
                feed.unsent += resources;
                return false;
            }
        }
        true
    }

    /// The next item of the source. Before waiting for one, what has been packed so far goes
    /// out, so that a slow source never leaves a bundle sitting half full; so does the last
    /// pack once the source is done.
    async fn next_item(&self, items: &mut mpsc::Receiver<SourceItem>, feed: &mut Feed) -> Next {
        let item = match items.try_recv() {
            Ok(item) => Some(item),
            Err(mpsc::error::TryRecvError::Disconnected) => None,
            Err(mpsc::error::TryRecvError::Empty) => {
                if let Some(job) = feed.pack.take(self.publish_records) {
                    feed.ready.push_back(job);
                    return Next::Again;
                }
                tokio::select! {
                    item = items.recv() => item,
                    _ = self.stop.cancelled() => None,
                }
            }
        };
        if let Some(item) = item {
            return Next::Item(item);
        }
        match feed.pack.take(self.publish_records) {
            Some(job) if !self.stop.is_cancelled() => {
                feed.ready.push_back(job);
                Next::Again
            }
            Some(job) => {
                feed.unsent += job.resources.len() as u64;
                Next::Done
            }
            None => Next::Done,
        }
    }

    /// Turns an item of the source into jobs; false when the run stopped first.
    async fn admit(&self, item: SourceItem, feed: &mut Feed, invalid: &mut u64) -> bool {
        let (record, sources) = match item {
            SourceItem::Record { record, sources } => (record, sources),
            SourceItem::Invalid {
                source,
                message,
                content,
            } => {
                *invalid += 1;
                self.reject(source, message, &content);
                return true;
            }
        };
        if record.kind == RecordKind::Shared {
            feed.ready.extend(feed.pack.take(self.publish_records));
            feed.ready
                .extend(self.split_shared(record.resources, sources));
            return true;
        }
        match self.mode {
            LoadMode::Create | LoadMode::Update if self.resource_by_resource() => {
                return self.start_record(record, feed).await;
            }
            LoadMode::Create | LoadMode::Update => {
                // Others may refer to any of these: keep the record whole, so that one
                // completion covers all of its keys.
                feed.ready.push_back(Job {
                    sources,
                    publish: self.publish_records,
                    ..Job::new(record.resources)
                });
            }
            LoadMode::Transaction => {
                // Small records share a bundle: a transaction costs one round trip whether it
                // holds 10 entries or 100.
                if feed.pack.len() + record.resources.len() > self.bundle_size {
                    feed.ready.extend(feed.pack.take(self.publish_records));
                }
                feed.pack.add(record.resources, sources);
                if feed.pack.len() >= self.bundle_size {
                    feed.ready.extend(feed.pack.take(self.publish_records));
                }
            }
        }
        true
    }

    /// A patient record written resource by resource: nothing outside the record refers into
    /// it, so its resources can go out one by one on any worker once what it refers to is
    /// stored and a record permit is free. False when the run stopped first.
    async fn start_record(&self, record: Record, feed: &mut Feed) -> bool {
        let resources = record.resources.len();
        let waited = wait_all(feed.unfinished.dependencies_of(&record.resources));
        let permit = tokio::select! {
            permit = async {
                waited.await;
                self.records_in_progress.clone().acquire_owned().await
            } => permit.expect("the semaphore is never closed"),
            _ = self.stop.cancelled() => {
                feed.unsent += resources as u64;
                return false;
            }
        };
        self.followups.start_record(resources);
        feed.ready
            .extend(RecordDag::start(record.resources, permit));
        true
    }

    /// Input that is not a FHIR resource: said, and kept in `--failed`.
    fn reject(&self, source: String, message: String, content: &serde_json::Value) {
        self.reporter.println(&format!("{source}: {message}"));
        if let Some(sink) = &self.writer.failed {
            let failure = Failure {
                status: None,
                message,
                source: Some(source),
            };
            sink.write(content, &failure);
        }
    }

    /// Whether patient records go out one resource per job: when nothing outside a record
    /// refers into it, any free worker can take any of its resources that is ready.
    pub fn resource_by_resource(&self) -> bool {
        self.mode != LoadMode::Transaction && self.publish_records == Publish::Nothing
    }

    /// Shared resources in jobs small enough to spread over all workers: one resource each,
    /// or one bundle each in transaction mode. Their ids are published for what follows.
    fn split_shared(&self, resources: Vec<Resource>, sources: Option<Vec<String>>) -> Vec<Job> {
        let per_job = match self.mode {
            LoadMode::Transaction => self.bundle_size,
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
        unfinished: &mut Unfinished,
    ) -> bool {
        tokio::select! {
            _ = wait_all(unfinished.dependencies_of(&job.resources)) => {}
            _ = self.stop.cancelled() => return false,
        }
        if job.publish != Publish::Nothing {
            job.done = Some(unfinished.track(&job));
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
struct Unfinished {
    by_key: HashMap<String, Arc<Completion>>,
    /// The jobs in `by_key` not known to have finished: once there are none, no resource
    /// has anything to wait for, and the walk over its references is skipped.
    unfinished: Vec<Arc<Completion>>,
    /// Size after the last sweep of finished jobs: sweeping only when the map has doubled
    /// keeps the cost per job constant.
    swept_at: usize,
}

impl Unfinished {
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
            resource.any_reference(|reference| {
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
        let mut unfinished = Unfinished::default();
        let org_done = unfinished.track(&Job::new(vec![org]));
        assert_eq!(
            unfinished
                .dependencies_of(std::slice::from_ref(&patient))
                .len(),
            1
        );
        assert_eq!(unfinished.dependencies_of(&[by_identifier]).len(), 1);
        org_done.finish();
        assert!(unfinished.dependencies_of(&[patient]).is_empty());
    }
}
