//! How one job (patient records packed into bundles, one resource of a record written
//! resource by resource, a record read from a file, or a slice of shared resources) is
//! written in each mode, keeping every reference pointing at something already stored, on a
//! store with Google's default settings: conditional creates and updates by identifier, and
//! search-then-create by a source-key tag for resources that have no identifier.

use std::borrow::Cow;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};

use bytes::Bytes;
use foldhash::{HashMap, HashSet};
use http::Method;
use serde_json::Value;

use super::job::{DagState, Job, JobOutcome, JobState, Node, Publish, Stored};
use super::report::FailureLog;
use crate::cli::LoadMode;
use crate::failed::{FailedSink, Failure};
use crate::fhir::{IdField, Resource, SOURCE_KEY_SYSTEM, query_for_url, write_transaction_bundle};
use crate::store::client::{Reply, SendError, StoreClient, StoreRequest};
use crate::store::stats::{Progress, RequestStats};

/// executeBundle requests are capped at 50 MB; stay clear of it.
const MAX_BUNDLE_BYTES: usize = 45 * 1024 * 1024;

/// The sizes of the transaction bundles the store stored, and of those it refused whole: a
/// store that caps the entries of a transaction (Medplum's strict isolation allows 8) refuses
/// every bundle over its cap, whatever the entries hold, and stores every one under it.
/// And the smallest bundle that outgrew the store's quota window (throttled again and again
/// while nothing as large got through): bundles are cut to half of it from then on.
#[derive(Debug)]
pub struct BundleSizes {
    largest_stored: AtomicUsize,
    smallest_refused: AtomicUsize,
    smallest_outgrown: AtomicUsize,
}

impl Default for BundleSizes {
    fn default() -> Self {
        Self {
            largest_stored: AtomicUsize::new(0),
            smallest_refused: AtomicUsize::new(usize::MAX),
            smallest_outgrown: AtomicUsize::new(usize::MAX),
        }
    }
}

impl BundleSizes {
    pub fn stored(&self, entries: usize) {
        self.largest_stored.fetch_max(entries, Ordering::Relaxed);
    }

    pub fn refused(&self, entries: usize) {
        self.smallest_refused.fetch_min(entries, Ordering::Relaxed);
    }

    /// Books a bundle of `entries` that outgrew the quota window; true the first time.
    pub fn outgrew_quota(&self, entries: usize) -> bool {
        self.smallest_outgrown.fetch_min(entries, Ordering::Relaxed) == usize::MAX
    }

    /// The most entries a bundle may have to fit the quota window, once one outgrew it.
    pub fn quota_fit(&self) -> Option<usize> {
        let outgrown = self.smallest_outgrown.load(Ordering::Relaxed);
        (outgrown != usize::MAX).then(|| (outgrown / 2).max(1))
    }

    /// `(largest stored, smallest refused)` when every bundle refused whole was larger than
    /// every bundle stored: then the largest stored is a size the store takes.
    pub fn cap_seen(&self) -> Option<(usize, usize)> {
        let stored = self.largest_stored.load(Ordering::Relaxed);
        let refused = self.smallest_refused.load(Ordering::Relaxed);
        (stored > 0 && refused != usize::MAX && refused > stored).then_some((stored, refused))
    }
}

/// Data-set references (`Organization/<local id>`, `urn:uuid:...`, `Practitioner?identifier=...`)
/// mapped to the `Type/id` the store holds them under, and those of resources that were not
/// stored (refused, retries outlasted, never sent); shared by all workers.
#[derive(Debug, Default)]
pub struct IdMap {
    map: RwLock<HashMap<String, String>>,
    /// What refers to any of these is not sent: on a store that does not check references,
    /// it would be stored pointing at nothing.
    unstored: RwLock<HashSet<String>>,
    /// Whether `unstored` holds anything: most runs never take its lock.
    any_unstored: AtomicBool,
}

impl IdMap {
    /// Whether `reference` names a resource of the data set that was not stored.
    fn is_unstored(&self, reference: &str) -> bool {
        self.any_unstored.load(Ordering::Acquire)
            && self
                .unstored
                .read()
                .expect("id map lock")
                .contains(reference)
    }

    fn mark_unstored(&self, references: Vec<String>) {
        if references.is_empty() {
            return;
        }
        self.unstored
            .write()
            .expect("id map lock")
            .extend(references);
        self.any_unstored.store(true, Ordering::Release);
    }

    pub fn get(&self, reference: &str) -> Option<String> {
        self.map
            .read()
            .expect("id map lock")
            .get(reference)
            .cloned()
    }

    fn extend(&self, entries: impl IntoIterator<Item = (String, String)>) {
        self.map.write().expect("id map lock").extend(entries);
    }
}

/// Whether the store finds a type by its source-key tag, learnt from the first resource of
/// the type that this run creates: while it is checked, the others of its type wait.
#[derive(Default)]
pub struct TagSearch {
    types: std::sync::Mutex<HashMap<String, Arc<tokio::sync::Mutex<TagVerdict>>>>,
}

/// Not known yet, found to work, or why it does not.
type TagVerdict = Option<Result<(), String>>;

impl TagSearch {
    fn gate(&self, resource_type: &str) -> Arc<tokio::sync::Mutex<TagVerdict>> {
        let mut types = self.types.lock().expect("tag search lock");
        types.entry(resource_type.to_owned()).or_default().clone()
    }
}

pub struct RecordWriter {
    pub client: Arc<StoreClient>,
    pub mode: LoadMode,
    pub bundle_size: usize,
    /// Whether the store creates a resource PUT to an id it does not hold
    /// (`enableUpdateCreate`); false unless known to be true, as on a new Google store.
    pub update_create: bool,
    pub ids: Arc<IdMap>,
    pub failed: Option<Arc<FailedSink>>,
    pub failures: Arc<FailureLog>,
    pub progress: Arc<Progress>,
    pub bundle_sizes: Arc<BundleSizes>,
    /// Whether the store finds each type by its source-key tag, as resources without an
    /// identifier need.
    pub tag_search: TagSearch,
}

/// A resource the store holds, and where.
#[derive(Debug, PartialEq)]
struct Written {
    target: String,
    stored: Stored,
}

enum WriteError {
    /// The run is stopping: not sent.
    Cancelled,
    Failed(Failure),
}

/// The requests that write one resource.
enum Prepared {
    /// A conditional create, a conditional update, or a PUT to a stable id.
    One(StoreRequest),
    /// A resource with no identifier, on a store that does not create on PUT: found by its
    /// source-key tag, or created once.
    SearchThenCreate {
        search: StoreRequest,
        create: StoreRequest,
        tag: String,
    },
}

/// How a resource goes into a transaction, known before its body may be dropped.
struct EntryKind {
    resource_type: String,
    /// A PUT to a stable id (no identifier), not a conditional create.
    put: bool,
}

/// What of a job's resources is still to be bundled, as the bundles go out.
#[derive(Default)]
struct BundleQueue {
    /// The first resource not yet looked at.
    next: usize,
    /// Resources checked for a bundle that did not fit in it: first in the next one.
    carried: Vec<usize>,
    /// Resources a bundle cannot hold (no identifier on a store that does not create on
    /// PUT), and what refers to them: written one by one after the bundles.
    deferred: Vec<usize>,
    deferred_keys: HashSet<String>,
}

impl BundleQueue {
    /// How many of a job's `len` resources are still to be sent.
    fn unsent(&self, len: usize) -> usize {
        self.carried.len() + (len - self.next) + self.deferred.len()
    }
}

/// The run stopped while a bundle's parts were going out; `unsent` of them were not sent.
struct Cancelled {
    unsent: usize,
}

/// How many times a resource found by no search is created (the client hands back at once an
/// answer that leaves it unknown whether the store wrote): each round searches first, so it is
/// never stored twice; as many rounds as a request has tries by default.
const CREATE_ROUNDS: usize = 9;

impl RecordWriter {
    /// Writes `job`; hands back the jobs that it made ready (resources of the same record
    /// that were waiting for it).
    pub async fn write(&self, mut job: Job, stats: &mut RequestStats) -> (JobOutcome, Vec<Job>) {
        let mut outcome = JobOutcome::default();
        if let Some(node) = &job.node {
            let ready = self.write_node(node, &mut outcome, stats).await;
            return (outcome, ready);
        }
        let mut state = JobState::default();
        match self.mode {
            LoadMode::Transaction => {
                self.write_bundles(&mut job, &mut state, &mut outcome, stats)
                    .await
            }
            LoadMode::Create | LoadMode::Update => {
                let all: Vec<usize> = (0..job.resources.len()).collect();
                self.write_each(&job, &all, &mut state, &mut outcome, stats)
                    .await;
            }
        }
        if job.publish != Publish::Nothing {
            self.publish(&job, &state);
        }
        if let Some(done) = &job.done {
            done.finish();
        }
        (outcome, Vec::new())
    }

    /// Makes known to the rest of the run where `job`'s resources went, and which were not
    /// stored, however that came about: what refers to those is then not sent.
    fn publish(&self, job: &Job, state: &JobState) {
        let mut published = Vec::new();
        let mut unstored = Vec::new();
        for resource in &job.resources {
            let conditional = match job.publish {
                Publish::KeysAndIdentifiers => resource.conditional_reference(),
                Publish::Keys | Publish::Nothing => None,
            };
            let Some(target) = state.targets.get(&resource.key) else {
                unstored.push(resource.key.clone());
                unstored.extend(conditional);
                continue;
            };
            if let Some(conditional) = conditional {
                published.push((conditional, target.clone()));
            }
            // A resource PUT to its own `Type/id` needs no entry: the key is the target.
            if *target != resource.key {
                published.push((resource.key.clone(), target.clone()));
            }
        }
        self.ids.extend(published);
        self.ids.mark_unstored(unstored);
    }

    /// Writes the resources at `indices` of `job` one request (or search and create) each.
    async fn write_each(
        &self,
        job: &Job,
        indices: &[usize],
        state: &mut JobState,
        outcome: &mut JobOutcome,
        stats: &mut RequestStats,
    ) {
        for (done, &index) in indices.iter().enumerate() {
            let resource = &job.resources[index];
            let source = job.sources.as_ref().map(|s| s[index].as_str());
            let prepared = match self.prepare(resource, state) {
                Ok(prepared) => prepared,
                Err(missing) => {
                    self.not_send(resource, source, state, outcome, &missing);
                    continue;
                }
            };
            match self
                .execute(&prepared, resource.resource_type(), stats)
                .await
            {
                Err(WriteError::Cancelled) => {
                    outcome.not_sent += (indices.len() - done) as u64;
                    return;
                }
                Err(WriteError::Failed(failure)) => {
                    self.fail(resource, source, state, outcome, failure)
                }
                Ok(written) => self.settle(resource, written, state, outcome),
            }
        }
    }

    async fn write_node(
        &self,
        node: &Node,
        outcome: &mut JobOutcome,
        stats: &mut RequestStats,
    ) -> Vec<Job> {
        let index = node.index;
        let prepared = {
            let state = node.dag.state.lock().expect("record lock");
            let resource = &state.resources[index];
            self.prepare(resource, &state.job)
                .map(|prepared| (prepared, resource.resource_type().to_owned()))
        };
        // Sent without holding the record: its other resources may be settling meanwhile.
        let result: Result<Result<Written, Failure>, String> = match prepared {
            Err(missing) => Err(missing),
            Ok((prepared, resource_type)) => {
                match self.execute(&prepared, &resource_type, stats).await {
                    Err(WriteError::Cancelled) => {
                        outcome.not_sent += 1;
                        return Vec::new();
                    }
                    Err(WriteError::Failed(failure)) => Ok(Err(failure)),
                    Ok(written) => Ok(Ok(written)),
                }
            }
        };
        {
            let mut state = node.dag.state.lock().expect("record lock");
            let DagState { resources, job } = &mut *state;
            let resource = &resources[index];
            match result {
                Ok(Ok(written)) => self.settle(resource, written, job, outcome),
                Ok(Err(failure)) => self.fail(resource, None, job, outcome, failure),
                Err(missing) => self.not_send(resource, None, job, outcome, &missing),
            }
            resources[index].release();
        }
        node.dag.release(index)
    }

    /// The requests that write `resource`, with its references pointing at what is stored;
    /// `Err` names what it refers to that was not stored.
    fn prepare(&self, resource: &Resource, state: &JobState) -> Result<Prepared, String> {
        if let Some(missing) = self.missing_dependency(resource, state) {
            return Err(missing);
        }
        let resolve = |reference: &str| self.resolve(reference, state);
        let resource_type = resource.resource_type();
        let body = |resource: &Resource, id: IdField| {
            // Most resources fit: one allocation instead of growing by doubling.
            let mut body = Vec::with_capacity(resource.json().len() + 256);
            resource.write_rewritten(&mut body, &resolve, id);
            Bytes::from(body)
        };
        let prepared = match (resource.conditional_query(), self.mode) {
            // Conditional update: updates the one match, creates with a server id when there
            // is none; no `enableUpdateCreate` needed, and the same resource whichever mode
            // stored it before.
            (Some(condition), LoadMode::Update) => Prepared::One(StoreRequest {
                method: Method::PUT,
                path: format!("{resource_type}?{}", query_for_url(&condition)),
                body: body(resource, IdField::Remove),
                if_none_exist: None,
                operations: 1,
            }),
            (Some(condition), LoadMode::Create | LoadMode::Transaction) => {
                Prepared::One(StoreRequest {
                    method: Method::POST,
                    path: resource_type.to_owned(),
                    body: body(resource, IdField::Remove),
                    if_none_exist: Some(condition),
                    operations: 1,
                })
            }
            (None, _) if self.update_create => {
                let id = resource.stable_id();
                Prepared::One(StoreRequest {
                    method: Method::PUT,
                    path: format!("{resource_type}/{id}"),
                    body: body(resource, IdField::Set(&id)),
                    if_none_exist: None,
                    operations: 1,
                })
            }
            (None, _) => {
                let tag = resource.source_tag();
                let tagged = resource.with_source_tag(&tag);
                let search = format!("_tag={SOURCE_KEY_SYSTEM}|{tag}");
                Prepared::SearchThenCreate {
                    search: StoreRequest {
                        method: Method::GET,
                        path: format!("{resource_type}?{}", query_for_url(&search)),
                        body: Bytes::new(),
                        if_none_exist: None,
                        operations: 1,
                    },
                    create: StoreRequest {
                        method: Method::POST,
                        path: resource_type.to_owned(),
                        body: body(&tagged, IdField::Remove),
                        if_none_exist: None,
                        operations: 1,
                    },
                    tag,
                }
            }
        };
        Ok(prepared)
    }

    async fn execute(
        &self,
        prepared: &Prepared,
        resource_type: &str,
        stats: &mut RequestStats,
    ) -> Result<Written, WriteError> {
        let (search, create, tag) = match prepared {
            Prepared::One(request) => {
                let reply = self
                    .client
                    .send(request, stats)
                    .await
                    .map_err(write_error)?;
                return written(request, resource_type, &reply).map_err(WriteError::Failed);
            }
            Prepared::SearchThenCreate {
                search,
                create,
                tag,
            } => (search, create, tag),
        };
        let gate = self.tag_search.gate(resource_type);
        let mut verdict = gate.lock().await;
        match &*verdict {
            Some(Ok(())) => drop(verdict),
            Some(Err(reason)) => {
                return Err(WriteError::Failed(Failure {
                    status: None,
                    message: reason.clone(),
                    source: None,
                }));
            }
            // The first of its type: the others wait until it is known whether the store
            // finds what was created by its tag.
            None => {
                let written = self
                    .search_then_create(search, create, tag, resource_type, stats)
                    .await?;
                *verdict = match written.stored {
                    Stored::Created => {
                        self.found_again(search, &written.target, tag, resource_type, stats)
                            .await
                    }
                    _ => Some(Ok(())),
                };
                return match &*verdict {
                    Some(Err(reason)) => self.take_back(written, reason, stats).await,
                    _ => Ok(written),
                };
            }
        }
        self.search_then_create(search, create, tag, resource_type, stats)
            .await
    }

    /// Deletes the resource created to learn that its type cannot be found by tag, which the
    /// next run could not find either: kept, each run would leave one more copy. It then
    /// fails as the others of its type do; if the store will not delete it, it stays stored.
    async fn take_back(
        &self,
        written: Written,
        reason: &str,
        stats: &mut RequestStats,
    ) -> Result<Written, WriteError> {
        let delete = StoreRequest {
            method: Method::DELETE,
            path: written.target.clone(),
            body: Bytes::new(),
            if_none_exist: None,
            operations: 1,
        };
        match self.client.send(&delete, stats).await {
            Ok(_) => Err(WriteError::Failed(Failure {
                status: None,
                message: format!(
                    "{reason} ({} was created to find this out, and deleted again)",
                    written.target
                ),
                source: None,
            })),
            Err(error) => {
                tracing::warn!(
                    "{} was created to learn whether the store finds it by its tag, which it \
                     does not, and could not be deleted ({error}): delete it by hand, or each \
                     run leaves one more",
                    written.target
                );
                Ok(written)
            }
        }
    }

    /// Whether the store's tag search finds `target`, just created: if it does not, every run
    /// would create such resources again.
    async fn found_again(
        &self,
        search: &StoreRequest,
        target: &str,
        tag: &str,
        resource_type: &str,
        stats: &mut RequestStats,
    ) -> TagVerdict {
        let reply = self.client.send(search, stats).await.ok()?;
        match found_by_tag(&reply, resource_type, tag) {
            Ok(Some(found)) if found == target => Some(Ok(())),
            Ok(_) => Some(Err(format!(
                "not sent: this store does not find {resource_type} resources by their tag (the \
                 {target} just created was not found by `{}`), so whether one is stored already \
                 cannot be told, and each run would store it again; give {resource_type} \
                 resources an identifier, or enable create on PUT (enableUpdateCreate) so that \
                 they go to stable ids",
                search.path
            ))),
            Err(_) => None,
        }
    }

    /// Finds the resource by its tag, or creates it (searching again before each new try).
    async fn search_then_create(
        &self,
        search: &StoreRequest,
        create: &StoreRequest,
        tag: &str,
        resource_type: &str,
        stats: &mut RequestStats,
    ) -> Result<Written, WriteError> {
        let mut ambiguous = None;
        for _ in 0..CREATE_ROUNDS {
            let reply = self.client.send(search, stats).await.map_err(write_error)?;
            if let Some(target) =
                found_by_tag(&reply, resource_type, tag).map_err(WriteError::Failed)?
            {
                // Found after a create whose answer was lost: that create may have stored it.
                let stored = match ambiguous {
                    Some(_) => Stored::CreatedOrPresent,
                    None => Stored::AlreadyPresent,
                };
                return Ok(Written { target, stored });
            }
            match self.client.send(create, stats).await {
                Ok(reply) => {
                    return written(create, resource_type, &reply).map_err(WriteError::Failed);
                }
                // Retries outlasted: the store may have written it. Look before sending again.
                Err(error @ SendError::GaveUp { .. }) => ambiguous = Some(error),
                Err(error) => return Err(write_error(error)),
            }
        }
        Err(write_error(
            ambiguous.expect("every round that does not return is ambiguous"),
        ))
    }

    /// Books a resource the store holds.
    fn settle(
        &self,
        resource: &Resource,
        written: Written,
        state: &mut JobState,
        outcome: &mut JobOutcome,
    ) {
        state.targets.insert(resource.key.clone(), written.target);
        outcome.book(written.stored);
        self.progress.add_stored(1);
    }

    async fn write_bundles(
        &self,
        job: &mut Job,
        state: &mut JobState,
        outcome: &mut JobOutcome,
        stats: &mut RequestStats,
    ) {
        let record_of = record_numbers(&job.record_ends, job.resources.len());
        let mut queue = BundleQueue::default();
        while let Some(mut chunk) = self.next_chunk(job, &mut queue, state, outcome) {
            let (fits, body) = self.bundle_within_limit(&job.resources, &chunk, state);
            queue.carried = chunk.split_off(fits);
            let sent = self
                .send_bundle(job, (chunk, body), &record_of, state, outcome, stats)
                .await;
            if let Err(Cancelled { unsent }) = sent {
                outcome.not_sent += (unsent + queue.unsent(job.resources.len())) as u64;
                return;
            }
        }
        self.write_each(job, &queue.deferred, state, outcome, stats)
            .await;
    }

    /// The next resources to bundle, those carried over first, up to `--bundle-size`; `None`
    /// once every resource is bundled, deferred or left unsent.
    fn next_chunk(
        &self,
        job: &Job,
        queue: &mut BundleQueue,
        state: &mut JobState,
        outcome: &mut JobOutcome,
    ) -> Option<Vec<usize>> {
        let len = job.resources.len();
        let bundle_size = self
            .bundle_sizes
            .quota_fit()
            .map_or(self.bundle_size, |fit| fit.min(self.bundle_size));
        while queue.next < len || !queue.carried.is_empty() {
            let mut chunk: Vec<usize> = std::mem::take(&mut queue.carried);
            if chunk.len() > bundle_size {
                queue.carried = chunk.split_off(bundle_size);
                return Some(chunk);
            }
            while queue.next < len && chunk.len() < bundle_size {
                let next = queue.next;
                let resource = &job.resources[next];
                let source = job.sources.as_ref().map(|s| s[next].as_str());
                if let Some(missing) = self.missing_dependency(resource, state) {
                    self.not_send(resource, source, state, outcome, &missing);
                } else if self.leaves_bundle(resource, &queue.deferred_keys) {
                    queue.deferred_keys.insert(resource.key.clone());
                    queue.deferred.push(next);
                } else {
                    chunk.push(next);
                }
                queue.next += 1;
            }
            if !chunk.is_empty() {
                return Some(chunk);
            }
        }
        None
    }

    /// Sends `chunk` (with its body) as one transaction; a part refused for one of its records
    /// is split by record and sent again, so that only the wrong record fails, and a part too
    /// large for the store's quota window is split in half until it fits.
    async fn send_bundle(
        &self,
        job: &Job,
        chunk: (Vec<usize>, Bytes),
        record_of: &[u32],
        state: &mut JobState,
        outcome: &mut JobOutcome,
        stats: &mut RequestStats,
    ) -> Result<(), Cancelled> {
        // Parts still to send, last first; a split part's body is built when its turn comes.
        let (chunk, body) = chunk;
        let mut parts = vec![(chunk, Some(body))];
        while let Some((part, body)) = parts.pop() {
            let part = match body {
                Some(_) => part,
                None => self.still_sendable(job, part, state, outcome),
            };
            if part.is_empty() {
                continue;
            }
            let body = body.unwrap_or_else(|| self.bundle(&job.resources, &part, state));
            let request = StoreRequest {
                method: Method::POST,
                path: String::new(),
                body,
                if_none_exist: None,
                operations: part.len() as u32,
            };
            let failure = match self.client.send(&request, stats).await {
                Ok(reply) => match self.settle_bundle(job, &part, &reply, state, outcome) {
                    Ok(()) => continue,
                    Err(failure) => failure,
                },
                Err(SendError::Cancelled) => {
                    let queued: usize = parts.iter().map(|(p, _)| p.len()).sum();
                    return Err(Cancelled {
                        unsent: part.len() + queued,
                    });
                }
                Err(SendError::OutgrewQuota { operations, .. }) if part.len() > 1 => {
                    if self.bundle_sizes.outgrew_quota(part.len()) {
                        tracing::warn!(
                            "the store's quota never admitted a bundle of {operations} entries: \
                             sending smaller ones"
                        );
                    }
                    let mut part = part;
                    let second = part.split_off(part.len() / 2);
                    parts.push((second, None));
                    parts.push((part, None));
                    continue;
                }
                Err(error @ SendError::Rejected { status, .. }) if (400..500).contains(&status) => {
                    self.bundle_sizes.refused(part.len());
                    if spans_records(&part, record_of) {
                        let (first, second) = split_by_record(part, record_of);
                        parts.push((second, None));
                        parts.push((first, None));
                        continue;
                    }
                    failure_of(&error)
                }
                Err(error) => failure_of(&error),
            };
            let failure = name_entry(failure, &part, job);
            for &index in &part {
                let source = job.sources.as_ref().map(|s| s[index].as_str());
                self.fail(
                    &job.resources[index],
                    source,
                    state,
                    outcome,
                    failure.clone(),
                );
            }
        }
        Ok(())
    }

    /// Books each resource of `part` by its entry in the store's transaction-response;
    /// `Err` when the answer as a whole says nothing of what was stored.
    fn settle_bundle(
        &self,
        job: &Job,
        part: &[usize],
        reply: &Reply,
        state: &mut JobState,
        outcome: &mut JobOutcome,
    ) -> Result<(), Failure> {
        let kinds: Vec<EntryKind> = part
            .iter()
            .map(|&i| EntryKind {
                resource_type: job.resources[i].resource_type().to_owned(),
                put: !job.resources[i].has_conditional_identifier(),
            })
            .collect();
        let results = transaction_results(reply, &kinds)?;
        if results.iter().all(Result::is_ok) {
            self.bundle_sizes.stored(part.len());
        }
        for (&index, result) in part.iter().zip(results) {
            let resource = &job.resources[index];
            match result {
                Ok(written) => self.settle(resource, written, state, outcome),
                Err(failure) => {
                    let source = job.sources.as_ref().map(|s| s[index].as_str());
                    self.fail(resource, source, state, outcome, failure)
                }
            }
        }
        Ok(())
    }

    /// Whether `resource` must be written on its own after the bundle: a transaction cannot
    /// search for a resource by tag before creating it.
    fn leaves_bundle(&self, resource: &Resource, deferred_keys: &HashSet<String>) -> bool {
        if !self.update_create && !resource.has_conditional_identifier() {
            return true;
        }
        !deferred_keys.is_empty() && resource.any_reference(|r| deferred_keys.contains(r))
    }

    /// The resources of `part` whose references are all stored; the others are not sent.
    fn still_sendable(
        &self,
        job: &Job,
        part: Vec<usize>,
        state: &mut JobState,
        outcome: &mut JobOutcome,
    ) -> Vec<usize> {
        part.into_iter()
            .filter(|&index| {
                let resource = &job.resources[index];
                let Some(missing) = self.missing_dependency(resource, state) else {
                    return true;
                };
                let source = job.sources.as_ref().map(|s| s[index].as_str());
                self.not_send(resource, source, state, outcome, &missing);
                false
            })
            .collect()
    }

    /// The bundle for the longest prefix of `chunk` that stays under the request size cap,
    /// and how long that prefix is.
    fn bundle_within_limit(
        &self,
        resources: &[Resource],
        chunk: &[usize],
        state: &JobState,
    ) -> (usize, Bytes) {
        let mut take = chunk.len();
        loop {
            let body = self.bundle(resources, &chunk[..take], state);
            if body.len() <= MAX_BUNDLE_BYTES || take == 1 {
                return (take, body);
            }
            take /= 2;
        }
    }

    fn bundle(&self, resources: &[Resource], part: &[usize], state: &JobState) -> Bytes {
        let resources: Vec<&Resource> = part.iter().map(|&i| &resources[i]).collect();
        let size: usize = resources.iter().map(|r| r.json().len() + 256).sum();
        let mut body = Vec::with_capacity(size);
        write_transaction_bundle(&mut body, &resources, &|reference| {
            self.resolve(reference, state)
        });
        Bytes::from(body)
    }

    fn resolve(&self, reference: &str, state: &JobState) -> Option<String> {
        state
            .targets
            .get(reference)
            .cloned()
            .or_else(|| self.ids.get(reference))
    }

    /// The body with every reference to an already-written resource pointing at its store id.
    fn resolved_body(&self, resource: &Resource, state: &JobState) -> Value {
        let mut body = Vec::with_capacity(resource.json().len());
        resource.write_rewritten(
            &mut body,
            &|reference| self.resolve(reference, state),
            IdField::Keep,
        );
        serde_json::from_slice(&body).expect("a resource's text is JSON")
    }

    /// What `resource` refers to that was not stored: in its own job, or anywhere in the run.
    fn missing_dependency(&self, resource: &Resource, state: &JobState) -> Option<String> {
        if state.failed_keys.is_empty() && !self.ids.any_unstored.load(Ordering::Acquire) {
            return None;
        }
        let mut missing = None;
        resource.any_reference(|reference| {
            let failed = state.failed_keys.contains(reference) || self.ids.is_unstored(reference);
            if failed {
                missing = Some(reference.to_owned());
            }
            failed
        });
        missing
    }

    fn fail(
        &self,
        resource: &Resource,
        source: Option<&str>,
        state: &mut JobState,
        outcome: &mut JobOutcome,
        failure: Failure,
    ) {
        outcome.failed += 1;
        self.progress.add_failed(1);
        self.report(resource, source, state, failure);
    }

    /// A resource left unsent because `missing`, which it refers to, was not stored.
    fn not_send(
        &self,
        resource: &Resource,
        source: Option<&str>,
        state: &mut JobState,
        outcome: &mut JobOutcome,
        missing: &str,
    ) {
        outcome.not_sent_unstored_reference += 1;
        self.progress.add_not_sent(1);
        let failure = Failure {
            status: None,
            message: format!("not sent: it refers to {missing}, which was not stored"),
            source: None,
        };
        self.report(resource, source, state, failure);
    }

    /// Says why `resource` is not stored, keeps it in `--failed`, and holds back what refers
    /// to it.
    fn report(
        &self,
        resource: &Resource,
        source: Option<&str>,
        state: &mut JobState,
        mut failure: Failure,
    ) {
        // What the store said may have been decoded from an answer (a transaction's entry, a
        // success that is not one): cut every form of a secret from it before it is shown.
        failure.message = self.client.redact(&failure.message);
        state.failed_keys.insert(resource.key.clone());
        let what = match source {
            Some(source) => format!("{} ({source})", resource.key),
            None => resource.key.clone(),
        };
        self.failures.note(&what, &failure.message);
        if let Some(sink) = &self.failed {
            failure.source = source.map(str::to_owned);
            // Keep the original id so that re-fed dependents still find this resource, and
            // point references at what is already stored so that they resolve on re-feed.
            sink.write(&self.resolved_body(resource, state), &failure);
        }
    }
}

/// The record each resource of a job belongs to, from where each record ends.
fn record_numbers(record_ends: &[usize], len: usize) -> Vec<u32> {
    let mut numbers = Vec::with_capacity(len);
    let mut record = 0u32;
    for index in 0..len {
        while (record as usize) < record_ends.len() && record_ends[record as usize] <= index {
            record += 1;
        }
        numbers.push(record);
    }
    numbers
}

fn spans_records(part: &[usize], record_of: &[u32]) -> bool {
    match (part.first(), part.last()) {
        (Some(&first), Some(&last)) => record_of[first] != record_of[last],
        _ => false,
    }
}

/// `part` cut in two at the record boundary nearest its middle record.
fn split_by_record(mut part: Vec<usize>, record_of: &[u32]) -> (Vec<usize>, Vec<usize>) {
    let first = record_of[part[0]];
    let last = record_of[part[part.len() - 1]];
    let middle = first + (last - first).div_ceil(2);
    let cut = part
        .iter()
        .position(|&index| record_of[index] >= middle)
        .unwrap_or(part.len());
    let second = part.split_off(cut);
    (part, second)
}

/// Names the resource behind "entry N" in a store's message about a bundle.
fn name_entry(mut failure: Failure, part: &[usize], job: &Job) -> Failure {
    let entry = failure
        .message
        .match_indices("entry ")
        .find_map(|(at, word)| {
            let digits: String = failure.message[at + word.len()..]
                .chars()
                .take_while(char::is_ascii_digit)
                .collect();
            digits.parse::<usize>().ok()
        });
    if let Some(&index) = entry.and_then(|entry| part.get(entry)) {
        let key = &job.resources[index].key;
        let named = match job.sources.as_ref() {
            Some(sources) => format!("{key} ({})", sources[index]),
            None => key.clone(),
        };
        failure.message = format!(
            "{} [entry {} is {named}]",
            failure.message,
            entry.unwrap_or_default()
        );
    }
    failure
}

fn write_error(error: SendError) -> WriteError {
    match error {
        SendError::Cancelled => WriteError::Cancelled,
        error => WriteError::Failed(failure_of(&error)),
    }
}

fn failure_of(error: &SendError) -> Failure {
    Failure {
        status: error.status(),
        message: error.to_string(),
        source: None,
    }
}

/// Where the store put the resource `request` wrote, and how, from a 2xx answer; a failure
/// when the answer is not the FHIR answer to that request.
fn written(request: &StoreRequest, resource_type: &str, reply: &Reply) -> Result<Written, Failure> {
    // Only a failure says what was wanted: most answers are what was asked for.
    let wanted = || format!("the {resource_type} that was sent");
    let answered_id =
        answered_resource(reply, resource_type).ok_or_else(|| not_the_answer(reply, &wanted()))?;
    let located = match reply.location.as_deref() {
        Some(location) => match target_from_location(location) {
            Some(target) if is_of_type(&target, resource_type) => Some(target),
            Some(target) => {
                return Err(not_the_answer(
                    reply,
                    &format!("{} (its Location names {target})", wanted()),
                ));
            }
            None => None,
        },
        None => None,
    };
    let put_to_id = request.method == Method::PUT && !request.path.contains('?');
    let target = if put_to_id {
        Some(request.path.clone())
    } else {
        located.or_else(|| Some(format!("{resource_type}/{}", answered_id?)))
    };
    let Some(target) = target else {
        return Err(Failure {
            status: Some(reply.status),
            message: "the store stored the resource but did not say where \
                      (no Location, no id in the body)"
                .to_owned(),
            source: None,
        });
    };
    let stored = match (&request.method, reply.status) {
        (_, 201) => Stored::Created,
        (&Method::POST, _) if request.if_none_exist.is_some() => match reply.after_lost_answer {
            true => Stored::CreatedOrPresent,
            false => Stored::AlreadyPresent,
        },
        (&Method::POST, _) => Stored::Created,
        _ => Stored::Updated,
    };
    Ok(Written { target, stored })
}

fn is_of_type(target: &str, resource_type: &str) -> bool {
    target
        .strip_prefix(resource_type)
        .is_some_and(|rest| rest.starts_with('/'))
}

/// The id in a write's answer (`None` for an empty answer, as `return=minimal` gives, or one
/// without an id), or `None` outright when the answer is not a resource of the type sent. Only
/// the two fields are read: the rest of an echoed resource is skipped, not built.
fn answered_resource(reply: &Reply, resource_type: &str) -> Option<Option<String>> {
    if reply.body.trim_ascii().is_empty() {
        return Some(None);
    }
    match serde_json::from_slice::<ResourceHead>(&reply.body) {
        Ok(head) if head.resource_type.as_deref() == Some(resource_type) => {
            Some(head.id.map(Cow::into_owned))
        }
        _ => None,
    }
}

/// What identifies a resource in an answer; the rest of it is skipped, not built.
#[derive(serde::Deserialize)]
struct ResourceHead<'a> {
    #[serde(rename = "resourceType", borrow, default)]
    resource_type: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    id: Option<Cow<'a, str>>,
}

/// A `transaction-response` Bundle, as far as a writer reads it: each entry's status, location
/// and outcome. The resources a store echoes (Google echoes every one) are skipped, not built:
/// a bundle's answer is the largest thing a load receives.
#[derive(serde::Deserialize)]
struct TransactionResponse<'a> {
    #[serde(rename = "resourceType", borrow)]
    resource_type: Cow<'a, str>,
    #[serde(rename = "type", borrow)]
    kind: Cow<'a, str>,
    #[serde(borrow, default)]
    entry: Vec<ResponseEntry<'a>>,
}

#[derive(serde::Deserialize)]
struct ResponseEntry<'a> {
    #[serde(borrow, default)]
    response: EntryResponse<'a>,
    #[serde(borrow, default)]
    resource: Option<ResourceHead<'a>>,
}

#[derive(serde::Deserialize, Default)]
struct EntryResponse<'a> {
    #[serde(borrow, default)]
    status: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    location: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    outcome: Option<&'a serde_json::value::RawValue>,
}

/// The store's id for the resource tagged `tag`, when the search answer holds it.
fn found_by_tag(reply: &Reply, resource_type: &str, tag: &str) -> Result<Option<String>, Failure> {
    let wanted = "a searchset Bundle";
    let bundle: Value =
        serde_json::from_slice(&reply.body).map_err(|_| not_the_answer(reply, wanted))?;
    if bundle["resourceType"] != "Bundle" || bundle["type"] != "searchset" {
        return Err(not_the_answer(reply, wanted));
    }
    let entries = bundle["entry"].as_array().map(Vec::as_slice).unwrap_or(&[]);
    // Checked here too: a server that ignored `_tag` would answer with every resource.
    Ok(entries.iter().find_map(|entry| {
        let resource = &entry["resource"];
        let tagged = resource["meta"]["tag"]
            .as_array()?
            .iter()
            .any(|t| t["system"] == SOURCE_KEY_SYSTEM && t["code"] == tag);
        (tagged && resource["resourceType"] == resource_type)
            .then(|| {
                format!(
                    "{resource_type}/{}",
                    resource["id"].as_str().unwrap_or_default()
                )
            })
            .filter(|target| !target.ends_with('/'))
    }))
}

/// A failure for a 2xx answer that is not what was asked for: what came back, so that a
/// person can tell a proxy's login page from a store's bug.
fn not_the_answer(reply: &Reply, wanted: &str) -> Failure {
    let text = String::from_utf8_lossy(&reply.body);
    let text = text.trim();
    let what = if text.is_empty() {
        "an empty body".to_owned()
    } else if text.starts_with('<') {
        "an HTML or XML page (not FHIR JSON)".to_owned()
    } else {
        match serde_json::from_str::<Value>(text) {
            Ok(value) => match (value["resourceType"].as_str(), value["type"].as_str()) {
                (Some("Bundle"), Some(kind)) => format!("a {kind} Bundle"),
                (Some(kind), _) => format!("a {kind}"),
                (None, _) => "JSON that is not a FHIR resource".to_owned(),
            },
            Err(_) => "a body that is not JSON".to_owned(),
        }
    };
    let mut start: String = text.chars().take(200).collect();
    start = start.split_whitespace().collect::<Vec<_>>().join(" ");
    Failure {
        status: Some(reply.status),
        message: format!(
            "the store answered HTTP {} with {what}, not {wanted}; not counted as stored. \
             The answer starts: {start}",
            reply.status
        ),
        source: None,
    }
}

/// `Type/id` from a Location such as `https://host/v1/.../fhir/Patient/123/_history/1`.
pub fn target_from_location(location: &str) -> Option<String> {
    let path = location.split(['?', '#']).next()?;
    // The last two segments before any `_history`, found without collecting them: every
    // create's answer goes through here.
    let mut last_two = (None, None);
    for segment in path.split('/').filter(|s| !s.is_empty()) {
        if segment == "_history" {
            break;
        }
        last_two = (last_two.1, Some(segment));
    }
    let (Some(kind), Some(id)) = last_two else {
        return None;
    };
    kind.starts_with(|c: char| c.is_ascii_uppercase())
        .then(|| [kind, "/", id].concat())
}

/// Where each entry of a transaction went and how, from the `transaction-response` Bundle;
/// `kinds` says what each entry sent. Each entry counts by its own answer: a store that wrote
/// the entries one by one, as a batch (Medplum without its `transaction-bundles` feature),
/// answers 200 with some entries refused and the others stored. `Err` when the answer as a
/// whole says nothing of what was stored.
fn transaction_results(
    reply: &Reply,
    kinds: &[EntryKind],
) -> Result<Vec<Result<Written, Failure>>, Failure> {
    let wanted = "a transaction-response Bundle";
    let response = serde_json::from_slice::<TransactionResponse>(&reply.body)
        .ok()
        .filter(|r| r.resource_type == "Bundle" && r.kind == "transaction-response")
        .ok_or_else(|| not_the_answer(reply, wanted))?;
    let failure = |message: String| Failure {
        status: Some(reply.status),
        message,
        source: None,
    };
    let entries = response.entry;
    if entries.len() != kinds.len() {
        return Err(failure(format!(
            "the store answered a transaction of {} entries with {} entries; \
             it is not known what was stored; re-running stores nothing twice",
            kinds.len(),
            entries.len()
        )));
    }
    let mut results = entries
        .into_iter()
        .zip(kinds)
        .enumerate()
        .map(|(i, (entry, kind))| {
            let response = entry.response;
            let status = response.status.as_deref().unwrap_or_default();
            if !status.starts_with('2') {
                let reason = response.outcome.map_or_else(
                    || "(no OperationOutcome)".to_owned(),
                    |outcome| crate::store::client::store_message(outcome.get().as_bytes()),
                );
                return Err(failure(format!(
                    "entry {i} of the transaction answered `{status}`: {reason}"
                )));
            }
            let target = response
                .location
                .as_deref()
                .and_then(target_from_location)
                .or_else(|| {
                    let resource = entry.resource.as_ref()?;
                    Some(format!(
                        "{}/{}",
                        resource.resource_type.as_deref()?,
                        resource.id.as_deref()?
                    ))
                })
                .ok_or_else(|| failure(format!("entry {i} of the transaction has no location")))?;
            if !is_of_type(&target, &kind.resource_type) {
                return Err(failure(format!(
                    "entry {i} of the transaction, a {}, was answered with {target}; \
                     it is not known what was stored",
                    kind.resource_type
                )));
            }
            let stored = if status.starts_with("201") {
                Stored::Created
            } else if kind.put {
                Stored::Updated
            } else if reply.after_lost_answer {
                Stored::CreatedOrPresent
            } else {
                Stored::AlreadyPresent
            };
            Ok(Written { target, stored })
        })
        .collect::<Vec<_>>();
    if results.iter().any(Result::is_ok) {
        for failure in results.iter_mut().filter_map(|r| r.as_mut().err()) {
            failure.message.push_str(
                " (the store wrote the transaction's other entries one by one, as a batch: \
                 they count as stored)",
            );
        }
    }
    Ok(results)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every entry's result, or the first failure.
    fn whole_transaction(reply: &Reply, kinds: &[EntryKind]) -> Result<Vec<Written>, Failure> {
        transaction_results(reply, kinds)?.into_iter().collect()
    }

    #[test]
    fn bundles_are_cut_to_half_the_smallest_that_outgrew_the_quota() {
        let sizes = BundleSizes::default();
        assert_eq!(sizes.quota_fit(), None);
        assert!(sizes.outgrew_quota(100));
        assert_eq!(sizes.quota_fit(), Some(50));
        assert!(!sizes.outgrew_quota(50), "said once");
        assert_eq!(sizes.quota_fit(), Some(25));
        sizes.outgrew_quota(80);
        assert_eq!(sizes.quota_fit(), Some(25), "the smallest decides");
        sizes.outgrew_quota(2);
        sizes.outgrew_quota(1);
        assert_eq!(sizes.quota_fit(), Some(1));
    }

    #[test]
    fn a_cap_is_seen_only_when_every_refused_bundle_outgrew_every_stored_one() {
        let sizes = |stored: &[usize], refused: &[usize]| {
            let sizes = BundleSizes::default();
            stored.iter().for_each(|&n| sizes.stored(n));
            refused.iter().for_each(|&n| sizes.refused(n));
            sizes.cap_seen()
        };
        // Medplum's strict isolation: bundles of up to 8 go in, larger ones do not.
        assert_eq!(sizes(&[3, 8, 5], &[100, 40, 9, 23]), Some((8, 9)));
        assert_eq!(sizes(&[8], &[100]), Some((8, 100)));
        // A refusal among stored bundles of its size or larger is about what it held.
        assert_eq!(sizes(&[3, 8, 5], &[100, 6]), None);
        assert_eq!(sizes(&[8], &[8]), None);
        // Nothing refused, or nothing stored: no size to say.
        assert_eq!(sizes(&[8, 100], &[]), None);
        assert_eq!(sizes(&[], &[100, 9]), None);
    }

    #[test]
    fn locations() {
        assert_eq!(
            target_from_location(
                "https://healthcare.googleapis.com/v1/projects/p/locations/l/datasets/d/fhirStores/s/fhir/Patient/abc/_history/1"
            )
            .as_deref(),
            Some("Patient/abc")
        );
        assert_eq!(
            target_from_location("Observation/7/_history/2").as_deref(),
            Some("Observation/7")
        );
        assert_eq!(
            target_from_location("Encounter/9").as_deref(),
            Some("Encounter/9")
        );
        assert_eq!(target_from_location("nonsense"), None);
        let cases = [
            ("http://h/fhir/Patient/abc/", Some("Patient/abc")),
            ("http://h/fhir/Patient/abc/_history", Some("Patient/abc")),
            (
                "http://h/fhir/Patient/abc?_format=json#x",
                Some("Patient/abc"),
            ),
            (
                "http://h/fhir/Patient/abc/_history/3?x=/_history/",
                Some("Patient/abc"),
            ),
            ("http://h/fhir/Patient/abc/_historyX", None),
            ("_history/1", None),
            ("http://h/fhir/patient/abc", None),
            ("/", None),
            ("", None),
        ];
        for (location, target) in cases {
            assert_eq!(
                target_from_location(location).as_deref(),
                target,
                "{location}"
            );
        }
    }

    fn reply(status: u16, location: Option<&str>, body: &str) -> Reply {
        Reply {
            status,
            location: location.map(str::to_owned),
            body: Bytes::from(body.to_owned()),
            after_lost_answer: false,
        }
    }

    fn kinds(types: &[(&str, bool)]) -> Vec<EntryKind> {
        types
            .iter()
            .map(|&(resource_type, put)| EntryKind {
                resource_type: resource_type.to_owned(),
                put,
            })
            .collect()
    }

    #[test]
    fn transaction_answers_are_checked() {
        let ok = r#"{"resourceType":"Bundle","type":"transaction-response","entry":[
            {"response":{"status":"201 Created","location":"Patient/1/_history/1"}},
            {"response":{"status":"200 OK","location":"Encounter/2/_history/3"}},
            {"response":{"status":"200 OK","location":"Provenance/x/_history/2"}}]}"#;
        let three = kinds(&[
            ("Patient", false),
            ("Encounter", false),
            ("Provenance", true),
        ]);
        let results = whole_transaction(&reply(200, None, ok), &three).unwrap();
        let stored: Vec<(&str, Stored)> = results
            .iter()
            .map(|w| (w.target.as_str(), w.stored))
            .collect();
        assert_eq!(
            stored,
            [
                ("Patient/1", Stored::Created),
                ("Encounter/2", Stored::AlreadyPresent),
                ("Provenance/x", Stored::Updated)
            ]
        );
        assert!(whole_transaction(&reply(200, None, ok), &three[..2]).is_err());
        let swapped = kinds(&[
            ("Encounter", false),
            ("Patient", false),
            ("Provenance", true),
        ]);
        assert!(whole_transaction(&reply(200, None, ok), &swapped).is_err());

        // Google echoes every resource: without a location, the resource says where it went.
        let echoed = r#"{"resourceType":"Bundle","type":"transaction-response","entry":[
            {"resource":{"resourceType":"Patient","id":"p\u0031","name":[{"family":"X"}]},
             "response":{"status":"201 Created"}}]}"#;
        let one = kinds(&[("Patient", false)]);
        let results = whole_transaction(&reply(200, None, echoed), &one).unwrap();
        assert_eq!(results[0].target, "Patient/p1");
        let nowhere = r#"{"resourceType":"Bundle","type":"transaction-response",
            "entry":[{"response":{"status":"201 Created"}}]}"#;
        let message = whole_transaction(&reply(200, None, nowhere), &one)
            .unwrap_err()
            .message;
        assert!(message.contains("has no location"), "{message}");
        let refused = r#"{"resourceType":"Bundle","type":"transaction-response","entry":[
            {"response":{"status":"400 Bad Request","outcome":{"resourceType":"OperationOutcome",
             "issue":[{"severity":"error","code":"invalid","diagnostics":"bad birthDate"}]}}}]}"#;
        let message = whole_transaction(&reply(200, None, refused), &one)
            .unwrap_err()
            .message;
        assert_eq!(
            message,
            "entry 0 of the transaction answered `400 Bad Request`: bad birthDate"
        );
    }

    #[test]
    fn a_transaction_written_as_a_batch_counts_each_entry_by_its_answer() {
        let mixed = r#"{"resourceType":"Bundle","type":"transaction-response","entry":[
            {"response":{"status":"400 Bad Request","outcome":{"resourceType":"OperationOutcome",
             "issue":[{"severity":"error","code":"invalid","diagnostics":"bad gender"}]}}},
            {"response":{"status":"201 Created","location":"Patient/2/_history/1"}}]}"#;
        let two = kinds(&[("Patient", false), ("Patient", false)]);
        let results = transaction_results(&reply(200, None, mixed), &two).unwrap();
        let message = &results[0].as_ref().unwrap_err().message;
        assert!(message.contains("bad gender"), "{message}");
        assert!(message.contains("as a batch"), "{message}");
        assert_eq!(results[1].as_ref().unwrap().target, "Patient/2");
    }

    #[test]
    fn a_success_that_is_not_the_answer_asked_for_is_a_failure() {
        let html = reply(200, None, "<html><body>Sign in to continue</body></html>");
        let one = kinds(&[("Patient", false)]);
        let message = whole_transaction(&html, &one).unwrap_err().message;
        assert!(message.contains("HTTP 200 with an HTML"), "{message}");
        assert!(message.contains("Sign in to continue"), "{message}");
        let batch = reply(
            200,
            None,
            r#"{"resourceType":"Bundle","type":"batch-response","entry":[{"response":{"status":"201 Created","location":"Patient/1"}}]}"#,
        );
        let message = whole_transaction(&batch, &one).unwrap_err().message;
        assert!(message.contains("a batch-response Bundle"), "{message}");
        assert!(whole_transaction(&reply(200, None, r#"{"ok":true}"#), &one).is_err());

        let create = StoreRequest {
            method: Method::POST,
            path: "Patient".into(),
            body: Bytes::new(),
            if_none_exist: Some("identifier=s|1".into()),
            operations: 1,
        };
        // Location alone (return=minimal), the resource alone, and a match of the condition.
        let by_location = written(
            &create,
            "Patient",
            &reply(201, Some("Patient/7/_history/1"), ""),
        );
        assert_eq!(
            by_location.unwrap(),
            Written {
                target: "Patient/7".into(),
                stored: Stored::Created
            }
        );
        let by_body = written(
            &create,
            "Patient",
            &reply(200, None, r#"{"resourceType":"Patient","id":"8"}"#),
        );
        assert_eq!(
            by_body.unwrap(),
            Written {
                target: "Patient/8".into(),
                stored: Stored::AlreadyPresent
            }
        );
        for wrong in [
            reply(201, None, "<html>proxy</html>"),
            reply(201, None, r#"{"status":"ok"}"#),
            reply(201, None, r#"{"resourceType":"Observation","id":"9"}"#),
            reply(201, Some("Observation/9"), ""),
        ] {
            let message = written(&create, "Patient", &wrong).unwrap_err().message;
            assert!(message.contains("not counted as stored"), "{message}");
        }
        // Said to be stored, a Patient indeed, but not where: only then is it said so.
        let nowhere = written(
            &create,
            "Patient",
            &reply(201, None, r#"{"resourceType":"Patient"}"#),
        );
        assert!(nowhere.unwrap_err().message.contains("did not say where"));

        let search = |body: &str| found_by_tag(&reply(200, None, body), "Provenance", "t1");
        let tagged = r#"{"resourceType":"Bundle","type":"searchset","entry":[
            {"resource":{"resourceType":"Provenance","id":"a","meta":{"tag":[{"system":"https://fhirgen.dev/sid/source-key","code":"t0"}]}}},
            {"resource":{"resourceType":"Provenance","id":"b","meta":{"tag":[{"system":"https://fhirgen.dev/sid/source-key","code":"t1"}]}}}]}"#;
        assert_eq!(search(tagged).unwrap().as_deref(), Some("Provenance/b"));
        assert_eq!(
            search(r#"{"resourceType":"Bundle","type":"searchset"}"#).unwrap(),
            None
        );
        assert!(search("<html></html>").is_err());
    }

    #[test]
    fn refused_parts_split_at_record_boundaries() {
        let record_of = record_numbers(&[2, 3, 6, 7], 7);
        assert_eq!(record_of, [0, 0, 1, 2, 2, 2, 3]);
        let all: Vec<usize> = (0..7).collect();
        assert!(spans_records(&all, &record_of));
        let (first, second) = split_by_record(all, &record_of);
        assert_eq!(
            (first.as_slice(), second.as_slice()),
            (&[0, 1, 2][..], &[3, 4, 5, 6][..])
        );
        assert!(!spans_records(&[3, 4, 5], &record_of));
        let (first, second) = split_by_record(vec![2, 3, 4], &record_of);
        assert_eq!((first, second), (vec![2], vec![3, 4]));
    }
}
