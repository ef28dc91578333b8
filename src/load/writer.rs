//! How one job (patient records packed into bundles, one resource of a record written
//! resource by resource, a record read from a file, or a slice of shared resources) is
//! written in each mode, keeping every reference pointing at something already stored.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use bytes::Bytes;
use http::Method;
use serde_json::Value;
use tokio::sync::{Notify, OwnedSemaphorePermit};

use super::client::{Reply, SendError, StoreClient, StoreRequest};
use super::failed::{FailedSink, Failure};
use super::report::FailureLog;
use super::stats::{Progress, RequestStats};
use crate::cli::LoadMode;
use crate::fhir::{IdField, Resource, Rewritten, for_each_reference_mut, write_transaction_bundle};

/// executeBundle requests are capped at 50 MB; stay clear of it.
const MAX_BUNDLE_BYTES: usize = 45 * 1024 * 1024;

/// Resources to write in order, by one worker.
pub struct Job {
    pub resources: Vec<Resource>,
    /// `path:line` each resource came from, when it came from a file.
    pub sources: Option<Vec<String>>,
    /// What of the ids this job gets the rest of the run may need.
    pub publish: Publish,
    /// Marked when the job is finished and its ids are published, for jobs that refer to it.
    pub done: Option<Arc<Completion>>,
    /// Set when the job is one resource of a record written resource by resource.
    pub node: Option<Node>,
}

/// One resource of a [`RecordDag`].
pub struct Node {
    dag: Arc<RecordDag>,
    index: usize,
}

/// A record written one request per resource, each resource as soon as the resources of the
/// record it refers to are stored: a patient's observations go out on all free workers at
/// once instead of one after another, so a run does not end with one busy worker per record.
pub struct RecordDag {
    /// How many of the record's resources each resource still waits for.
    waiting: Vec<AtomicUsize>,
    /// The resources that refer to each resource.
    dependents: Vec<Vec<usize>>,
    state: Mutex<DagState>,
    /// Held while any resource of the record is unwritten: bounds the records in progress,
    /// and with them memory.
    _in_progress: OwnedSemaphorePermit,
}

/// A record's resources, and what writing them has taught so far. A body is dropped once
/// its resource is written: only the key is needed after that, and a record in progress
/// should hold only what is still to be sent.
struct DagState {
    resources: Vec<Resource>,
    job: JobState,
}

impl RecordDag {
    /// The jobs to start with: the resources that refer to nothing else in the record.
    pub fn start(resources: Vec<Resource>, in_progress: OwnedSemaphorePermit) -> Vec<Job> {
        let index_of: HashMap<&str, usize> = resources
            .iter()
            .enumerate()
            .map(|(i, r)| (r.key.as_str(), i))
            .collect();
        let mut dependents = vec![Vec::new(); resources.len()];
        let mut waiting = Vec::with_capacity(resources.len());
        for (i, resource) in resources.iter().enumerate() {
            let mut depends_on: Vec<usize> = Vec::new();
            crate::fhir::any_reference(&resource.body, &mut |reference| {
                if let Some(&j) = index_of.get(reference) {
                    if j != i && !depends_on.contains(&j) {
                        depends_on.push(j);
                    }
                }
                false
            });
            for &j in &depends_on {
                dependents[j].push(i);
            }
            waiting.push(AtomicUsize::new(depends_on.len()));
        }
        let ready: Vec<usize> = (0..resources.len())
            .filter(|&i| waiting[i].load(Ordering::Relaxed) == 0)
            .collect();
        let dag = Arc::new(RecordDag {
            waiting,
            dependents,
            state: Mutex::new(DagState {
                resources,
                job: JobState::default(),
            }),
            _in_progress: in_progress,
        });
        ready
            .into_iter()
            .map(|index| Job::node(&dag, index))
            .collect()
    }

    /// The dependents of `index` that it was the last to wait for.
    fn release(self: &Arc<Self>, index: usize) -> Vec<Job> {
        self.dependents[index]
            .iter()
            .filter(|&&d| self.waiting[d].fetch_sub(1, Ordering::AcqRel) == 1)
            .map(|&d| Job::node(self, d))
            .collect()
    }
}

/// Which store ids a job makes known to the whole run. Patient records keep theirs to
/// themselves, so that memory stays flat.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Publish {
    Nothing,
    /// Records read from files, which other records may refer to by key.
    Keys,
    /// Shared resources, which patient records may also find by identifier
    /// (`Practitioner?identifier=...`).
    KeysAndIdentifiers,
}

/// A job's finish line, for the dispatcher to wait on before sending what refers to the job.
#[derive(Debug, Default)]
pub struct Completion {
    finished: std::sync::atomic::AtomicBool,
    notify: Notify,
}

impl Completion {
    pub fn is_finished(&self) -> bool {
        self.finished.load(std::sync::atomic::Ordering::Acquire)
    }

    pub fn finish(&self) {
        self.finished
            .store(true, std::sync::atomic::Ordering::Release);
        self.notify.notify_waiters();
    }

    pub async fn wait(&self) {
        loop {
            let notified = self.notify.notified();
            if self.is_finished() {
                return;
            }
            notified.await;
        }
    }
}

impl Job {
    pub fn new(resources: Vec<Resource>) -> Self {
        Self {
            resources,
            sources: None,
            publish: Publish::Nothing,
            done: None,
            node: None,
        }
    }

    fn node(dag: &Arc<RecordDag>, index: usize) -> Self {
        Self {
            node: Some(Node {
                dag: dag.clone(),
                index,
            }),
            ..Self::new(Vec::new())
        }
    }
}

/// Data-set references (`Organization/<local id>`, `urn:uuid:...`, `Practitioner?identifier=...`)
/// mapped to the `Type/id` the store holds them under; shared by all workers.
#[derive(Debug, Default)]
pub struct IdMap {
    map: RwLock<HashMap<String, String>>,
}

impl IdMap {
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

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct JobOutcome {
    pub stored: u64,
    pub failed: u64,
    /// Not attempted because the run was stopping.
    pub not_sent: u64,
}

impl std::ops::AddAssign for JobOutcome {
    fn add_assign(&mut self, more: Self) {
        self.stored += more.stored;
        self.failed += more.failed;
        self.not_sent += more.not_sent;
    }
}

pub struct RecordWriter {
    pub client: Arc<StoreClient>,
    pub mode: LoadMode,
    pub bundle_size: usize,
    pub ids: Arc<IdMap>,
    pub failed: Option<Arc<FailedSink>>,
    pub failures: Arc<FailureLog>,
    pub progress: Arc<Progress>,
}

/// What one job has learnt so far: where its resources went, and which did not make it.
#[derive(Debug, Default)]
struct JobState {
    targets: HashMap<String, String>,
    failed_keys: HashSet<String>,
}

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
                self.write_one_by_one(&job, &mut state, &mut outcome, stats)
                    .await
            }
        }
        if job.publish != Publish::Nothing {
            let mut published = Vec::new();
            for resource in &job.resources {
                let Some(target) = state.targets.get(&resource.key) else {
                    continue;
                };
                if job.publish == Publish::KeysAndIdentifiers {
                    if let Some(conditional) = resource.conditional_reference() {
                        published.push((conditional, target.clone()));
                    }
                }
                // A resource PUT to its own `Type/id` needs no entry: the key is the target.
                if *target != resource.key {
                    published.push((resource.key.clone(), target.clone()));
                }
            }
            self.ids.extend(published);
        }
        if let Some(done) = &job.done {
            done.finish();
        }
        (outcome, Vec::new())
    }

    async fn write_one_by_one(
        &self,
        job: &Job,
        state: &mut JobState,
        outcome: &mut JobOutcome,
        stats: &mut RequestStats,
    ) {
        for (index, resource) in job.resources.iter().enumerate() {
            let source = job.sources.as_ref().map(|s| s[index].as_str());
            let request = match self.prepare(resource, state) {
                Ok(request) => request,
                Err(failure) => {
                    self.fail(resource, source, state, outcome, failure);
                    continue;
                }
            };
            let sent = self.client.send(&request, stats).await;
            if matches!(sent, Err(SendError::Cancelled)) {
                outcome.not_sent += (job.resources.len() - index) as u64;
                return;
            }
            self.settle(resource, &request, source, sent, state, outcome);
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
            self.prepare(&state.resources[index], &state.job)
        };
        let written_body = match prepared {
            Ok(request) => {
                let sent = self.client.send(&request, stats).await;
                if matches!(sent, Err(SendError::Cancelled)) {
                    outcome.not_sent += 1;
                    return Vec::new();
                }
                let mut state = node.dag.state.lock().expect("record lock");
                let DagState { resources, job } = &mut *state;
                self.settle(&resources[index], &request, None, sent, job, outcome);
                std::mem::take(&mut resources[index].body)
            }
            Err(failure) => {
                let mut state = node.dag.state.lock().expect("record lock");
                let DagState { resources, job } = &mut *state;
                self.fail(&resources[index], None, job, outcome, failure);
                std::mem::take(&mut resources[index].body)
            }
        };
        // Freed outside the lock: the record's other resources may be settling meanwhile.
        drop(written_body);
        node.dag.release(index)
    }

    /// The request that writes `resource`, with its references pointing at what is stored;
    /// a failure when something it refers to was not stored.
    fn prepare(&self, resource: &Resource, state: &JobState) -> Result<StoreRequest, Failure> {
        if let Some(missing) = self.missing_dependency(resource, state) {
            return Err(dependency_failure(&missing));
        }
        let resolve = |reference: &str| self.resolve(reference, state);
        // Without an identifier a create cannot be made conditional, so such resources are
        // PUT to a stable id in every mode: a retry or a re-run must not store them twice.
        let condition = match self.mode {
            LoadMode::Update => None,
            _ => resource.conditional_query(),
        };
        let request = match condition {
            Some(condition) => StoreRequest {
                method: Method::POST,
                path: resource.resource_type().to_owned(),
                body: to_bytes(&Rewritten {
                    body: &resource.body,
                    resolve: &resolve,
                    id: IdField::Remove,
                }),
                if_none_exist: Some(condition),
                operations: 1,
            },
            None => {
                let id = resource.stable_id();
                StoreRequest {
                    method: Method::PUT,
                    path: format!("{}/{id}", resource.resource_type()),
                    body: to_bytes(&Rewritten {
                        body: &resource.body,
                        resolve: &resolve,
                        id: IdField::Set(&id),
                    }),
                    if_none_exist: None,
                    operations: 1,
                }
            }
        };
        Ok(request)
    }

    /// Books the answer to one resource's request.
    fn settle(
        &self,
        resource: &Resource,
        request: &StoreRequest,
        source: Option<&str>,
        sent: Result<Reply, SendError>,
        state: &mut JobState,
        outcome: &mut JobOutcome,
    ) {
        let reply = match sent {
            Ok(reply) => reply,
            Err(error) => return self.fail(resource, source, state, outcome, failure_of(&error)),
        };
        // A PUT's path is where the resource now is; a create's answer says where it went.
        let target = match request.method {
            Method::PUT => Some(request.path.clone()),
            _ => reply
                .location
                .as_deref()
                .and_then(target_from_location)
                .or_else(|| target_from_body(&reply.body)),
        };
        let Some(target) = target else {
            let failure = Failure {
                status: Some(reply.status),
                message: "the store stored the resource but did not say where \
                          (no Location, no id in the body)"
                    .to_owned(),
                source: None,
            };
            return self.fail(resource, source, state, outcome, failure);
        };
        state.targets.insert(resource.key.clone(), target);
        outcome.stored += 1;
        self.progress.add_stored(1);
    }

    async fn write_bundles(
        &self,
        job: &mut Job,
        state: &mut JobState,
        outcome: &mut JobOutcome,
        stats: &mut RequestStats,
    ) {
        // Once in a bundle, a body is needed again only for --failed or to publish its
        // identifier; otherwise it is dropped, not held (~8 KiB each) while the store answers.
        let keep_bodies = self.failed.is_some() || job.publish != Publish::Nothing;
        let Job {
            resources, sources, ..
        } = job;
        let source = |index: usize| sources.as_ref().map(|s| s[index].as_str());
        let mut next = 0;
        // Resources checked for a bundle that did not fit in it: first in the next one.
        let mut carried: Vec<usize> = Vec::new();
        while next < resources.len() || !carried.is_empty() {
            // Resources whose dependencies failed are reported, not sent.
            let mut chunk: Vec<usize> = std::mem::take(&mut carried);
            while next < resources.len() && chunk.len() < self.bundle_size {
                let resource = &resources[next];
                match self.missing_dependency(resource, state) {
                    Some(missing) => self.fail(
                        resource,
                        source(next),
                        state,
                        outcome,
                        dependency_failure(&missing),
                    ),
                    None => chunk.push(next),
                }
                next += 1;
            }
            if chunk.is_empty() {
                continue;
            }
            let (sent, body) = self.bundle_within_limit(resources, &chunk, state);
            carried = chunk.split_off(sent);
            let chunk = &chunk[..];
            if !keep_bodies {
                for &index in chunk {
                    resources[index].body = Value::Null;
                }
            }
            let request = StoreRequest {
                method: Method::POST,
                path: String::new(),
                body,
                if_none_exist: None,
                operations: chunk.len() as u32,
            };
            match self.client.send(&request, stats).await {
                Ok(reply) => match transaction_targets(&reply.body, chunk.len()) {
                    Ok(targets) => {
                        for (&index, target) in chunk.iter().zip(targets) {
                            state.targets.insert(resources[index].key.clone(), target);
                        }
                        outcome.stored += chunk.len() as u64;
                        self.progress.add_stored(chunk.len() as u64);
                    }
                    Err(message) => {
                        let failure = Failure {
                            status: Some(reply.status),
                            message,
                            source: None,
                        };
                        for &index in chunk {
                            let resource = &resources[index];
                            self.fail(resource, source(index), state, outcome, failure.clone());
                        }
                    }
                },
                Err(SendError::Cancelled) => {
                    outcome.not_sent +=
                        (chunk.len() + carried.len() + resources.len() - next) as u64;
                    return;
                }
                Err(error) => {
                    let failure = failure_of(&error);
                    for &index in chunk {
                        let resource = &resources[index];
                        self.fail(resource, source(index), state, outcome, failure.clone());
                    }
                }
            }
        }
    }

    /// The bundle for the longest prefix of `chunk` that stays under the request size cap.
    fn bundle_within_limit(
        &self,
        resources: &[Resource],
        chunk: &[usize],
        state: &JobState,
    ) -> (usize, Bytes) {
        let mut take = chunk.len();
        loop {
            let resources: Vec<&Resource> = chunk[..take].iter().map(|&i| &resources[i]).collect();
            let mut body = Vec::with_capacity(take * 1024);
            write_transaction_bundle(&mut body, &resources, &|reference| {
                self.resolve(reference, state)
            })
            .expect("JSON values always serialize");
            if body.len() <= MAX_BUNDLE_BYTES || take == 1 {
                return (take, Bytes::from(body));
            }
            take /= 2;
        }
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
        let mut body = resource.body.clone();
        for_each_reference_mut(&mut body, &mut |reference| {
            if let Some(target) = self.resolve(reference, state) {
                *reference = target;
            }
        });
        body
    }

    fn missing_dependency(&self, resource: &Resource, state: &JobState) -> Option<String> {
        if state.failed_keys.is_empty() {
            return None;
        }
        let mut missing = None;
        crate::fhir::any_reference(&resource.body, &mut |reference| {
            let failed = state.failed_keys.contains(reference);
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
        mut failure: Failure,
    ) {
        state.failed_keys.insert(resource.key.clone());
        outcome.failed += 1;
        self.progress.add_failed(1);
        let what = match source {
            Some(source) => format!("{} ({source})", resource.key),
            None => resource.key.clone(),
        };
        self.failures.note(&what, &failure.message);
        if let Some(sink) = &self.failed {
            failure.source = source.map(str::to_owned);
            // Keep the original id so that re-fed dependents still find this resource, and
            // point references at what is already stored so that they resolve on re-feed.
            let body = self.resolved_body(resource, state);
            if let Err(e) = sink.write(&body, &failure) {
                eprintln!("warning: {e:#}");
            }
        }
    }
}

fn dependency_failure(missing: &str) -> Failure {
    Failure {
        status: None,
        message: format!("not sent: it refers to {missing}, which was not stored"),
        source: None,
    }
}

fn failure_of(error: &SendError) -> Failure {
    Failure {
        status: error.status(),
        message: error.to_string(),
        source: None,
    }
}

fn to_bytes(value: &impl serde::Serialize) -> Bytes {
    // Most resources fit: one allocation instead of growing from 128 bytes by doubling.
    let mut body = Vec::with_capacity(2048);
    serde_json::to_writer(&mut body, value).expect("JSON values always serialize");
    Bytes::from(body)
}

/// `Type/id` from a Location such as `https://host/v1/.../fhir/Patient/123/_history/1`.
pub fn target_from_location(location: &str) -> Option<String> {
    let path = location.split(['?', '#']).next()?;
    let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let end = segments
        .iter()
        .position(|s| *s == "_history")
        .unwrap_or(segments.len());
    if end < 2 {
        return None;
    }
    let (kind, id) = (segments[end - 2], segments[end - 1]);
    kind.starts_with(|c: char| c.is_ascii_uppercase())
        .then(|| format!("{kind}/{id}"))
}

fn target_from_body(body: &[u8]) -> Option<String> {
    let value: Value = serde_json::from_slice(body).ok()?;
    Some(format!(
        "{}/{}",
        value["resourceType"].as_str()?,
        value["id"].as_str()?
    ))
}

/// Where each entry of a transaction went, from the `transaction-response` Bundle.
fn transaction_targets(body: &[u8], expected: usize) -> Result<Vec<String>, String> {
    let response: Value = serde_json::from_slice(body)
        .map_err(|e| format!("the store's answer to a transaction is not JSON: {e}"))?;
    let entries = response["entry"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or(&[]);
    if response["resourceType"] != "Bundle" || entries.len() != expected {
        return Err(format!(
            "the store answered a transaction of {expected} entries with {} entries; \
             it is not known what was stored; re-running stores nothing twice",
            entries.len()
        ));
    }
    entries
        .iter()
        .enumerate()
        .map(|(i, entry)| {
            let response = &entry["response"];
            let status = response["status"].as_str().unwrap_or_default();
            if !status.starts_with('2') {
                let reason = serde_json::to_vec(&response["outcome"])
                    .map(|outcome| super::client::store_message(&outcome))
                    .unwrap_or_default();
                return Err(format!(
                    "entry {i} of the transaction answered `{status}`: {reason}"
                ));
            }
            response["location"]
                .as_str()
                .and_then(target_from_location)
                .or_else(|| {
                    let resource = &entry["resource"];
                    Some(format!(
                        "{}/{}",
                        resource["resourceType"].as_str()?,
                        resource["id"].as_str()?
                    ))
                })
                .ok_or_else(|| format!("entry {i} has no location"))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_dag_releases_resources_once_all_they_refer_to_is_written() {
        let r = |body: serde_json::Value| Resource::new(body);
        let permit = Arc::new(tokio::sync::Semaphore::new(1))
            .try_acquire_owned()
            .unwrap();
        let jobs = RecordDag::start(
            vec![
                r(serde_json::json!({"resourceType": "Patient", "id": "p"})),
                r(serde_json::json!({"resourceType": "Encounter", "id": "e",
                "subject": {"reference": "Patient/p"}})),
                r(serde_json::json!({"resourceType": "Condition", "id": "c",
                "subject": {"reference": "Patient/p"}, "encounter": {"reference": "Encounter/e"}})),
                r(serde_json::json!({"resourceType": "Organization", "id": "o"})),
            ],
            permit,
        );
        let index = |job: &Job| job.node.as_ref().unwrap().index;
        let started: Vec<usize> = jobs.iter().map(index).collect();
        assert_eq!(started, [0, 3]);
        let dag = jobs[0].node.as_ref().unwrap().dag.clone();
        assert_eq!(dag.release(0).iter().map(index).collect::<Vec<_>>(), [1]);
        // The condition waits for both the patient and the encounter.
        assert_eq!(dag.release(1).iter().map(index).collect::<Vec<_>>(), [2]);
        assert!(dag.release(3).is_empty());
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
    }

    #[test]
    fn transaction_answers_are_checked() {
        let ok = br#"{"resourceType":"Bundle","type":"transaction-response","entry":[
            {"response":{"status":"201 Created","location":"Patient/1/_history/1"}},
            {"response":{"status":"200 OK","location":"Encounter/2/_history/3"}}]}"#;
        assert_eq!(
            transaction_targets(ok, 2).unwrap(),
            ["Patient/1", "Encounter/2"]
        );
        assert!(transaction_targets(ok, 3).is_err());
        assert!(transaction_targets(b"{}", 1).is_err());
    }
}
