//! How one job (a patient's record, or a level of shared resources) is written in each mode,
//! keeping every reference pointing at something that already exists in the store.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, RwLock};

use bytes::Bytes;
use reqwest::Method;
use serde_json::Value;
use tokio::sync::Notify;

use super::client::{SendError, StoreClient, StoreRequest};
use super::failed::{FailedSink, Failure};
use super::stats::{Progress, RequestStats};
use crate::cli::LoadMode;
use crate::fhir::{Resource, for_each_reference_mut, transaction_bundle};

/// executeBundle requests are capped at 50 MB; stay clear of it.
const MAX_BUNDLE_BYTES: usize = 45 * 1024 * 1024;

/// Resources to write in order, by one worker.
pub struct Job {
    pub resources: Vec<Resource>,
    /// `path:line` each resource came from, when it came from a file.
    pub sources: Option<Vec<String>>,
    /// Publish the ids this job gets to the whole run (shared resources that later jobs
    /// refer to); patient records keep theirs to themselves so memory stays flat.
    pub publish: bool,
    /// Marked when the job is finished and its ids are published, for jobs that refer to it.
    pub done: Option<Arc<Completion>>,
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
            publish: false,
            done: None,
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

    pub fn len(&self) -> usize {
        self.map.read().expect("id map lock").len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct JobOutcome {
    pub stored: u64,
    pub failed: u64,
    /// Not attempted because the run was stopping.
    pub not_sent: u64,
}

pub struct RecordWriter {
    pub client: Arc<StoreClient>,
    pub mode: LoadMode,
    pub bundle_size: usize,
    pub ids: Arc<IdMap>,
    pub failed: Option<Arc<FailedSink>>,
    pub progress: Arc<Progress>,
}

/// What one job has learnt so far: where its resources went, and which did not make it.
#[derive(Default)]
struct JobState {
    targets: HashMap<String, String>,
    failed_keys: HashSet<String>,
    outcome: JobOutcome,
}

impl RecordWriter {
    pub async fn write(&self, job: Job, stats: &mut RequestStats) -> JobOutcome {
        let mut state = JobState::default();
        match self.mode {
            LoadMode::Transaction => self.write_bundles(&job, &mut state, stats).await,
            LoadMode::Create | LoadMode::Update => {
                self.write_one_by_one(&job, &mut state, stats).await
            }
        }
        if job.publish {
            let mut published = Vec::with_capacity(state.targets.len() * 2);
            for resource in &job.resources {
                if let Some(target) = state.targets.get(&resource.key) {
                    if let Some(conditional) = resource.conditional_reference() {
                        published.push((conditional, target.clone()));
                    }
                    published.push((resource.key.clone(), target.clone()));
                }
            }
            self.ids.extend(published);
        }
        if let Some(done) = &job.done {
            done.finish();
        }
        state.outcome
    }

    async fn write_one_by_one(&self, job: &Job, state: &mut JobState, stats: &mut RequestStats) {
        if self.mode == LoadMode::Update {
            // PUT ids are known up front, so references need no answer from the store.
            for resource in &job.resources {
                let target = format!("{}/{}", resource.resource_type(), resource.stable_id());
                state.targets.insert(resource.key.clone(), target);
            }
        }
        for (index, resource) in job.resources.iter().enumerate() {
            if let Some(missing) = self.missing_dependency(resource, state) {
                self.fail(job, index, resource, state, dependency_failure(&missing));
                continue;
            }
            let mut body = self.resolved_body(resource, state);
            // Without an identifier a create cannot be made conditional: PUT to a stable id
            // instead, so that a retry or a re-run does not store the resource twice.
            let condition = resource.conditional_query();
            let put = self.mode == LoadMode::Update || condition.is_none();
            let request = if put {
                let id = resource.stable_id();
                body["id"] = Value::String(id.clone());
                StoreRequest {
                    method: Method::PUT,
                    path: format!("{}/{id}", resource.resource_type()),
                    body: to_bytes(&body),
                    if_none_exist: None,
                }
            } else {
                if let Some(map) = body.as_object_mut() {
                    map.remove("id");
                }
                StoreRequest {
                    method: Method::POST,
                    path: resource.resource_type().to_owned(),
                    body: to_bytes(&body),
                    if_none_exist: condition,
                }
            };
            match self.client.send(&request, stats).await {
                Ok(reply) => {
                    if put {
                        let target =
                            format!("{}/{}", resource.resource_type(), resource.stable_id());
                        state.targets.insert(resource.key.clone(), target);
                    } else {
                        let target = reply
                            .location
                            .as_deref()
                            .and_then(target_from_location)
                            .or_else(|| target_from_body(&reply.body));
                        match target {
                            Some(target) => {
                                state.targets.insert(resource.key.clone(), target);
                            }
                            None => {
                                let failure = Failure {
                                    status: Some(reply.status),
                                    message: "the store stored the resource but did not say \
                                              where (no Location, no id in the body)"
                                        .to_owned(),
                                    source: None,
                                };
                                self.fail(job, index, resource, state, failure);
                                continue;
                            }
                        }
                    }
                    state.outcome.stored += 1;
                    self.progress.add_stored(1);
                }
                Err(SendError::Cancelled) => {
                    state.outcome.not_sent += (job.resources.len() - index) as u64;
                    return;
                }
                Err(error) => self.fail(job, index, resource, state, failure_of(&error)),
            }
        }
    }

    async fn write_bundles(&self, job: &Job, state: &mut JobState, stats: &mut RequestStats) {
        let mut next = 0;
        while next < job.resources.len() {
            // Resources whose dependencies failed are reported, not sent.
            let mut chunk: Vec<usize> = Vec::new();
            while next < job.resources.len() && chunk.len() < self.bundle_size {
                let resource = &job.resources[next];
                match self.missing_dependency(resource, state) {
                    Some(missing) => {
                        self.fail(job, next, resource, state, dependency_failure(&missing))
                    }
                    None => chunk.push(next),
                }
                next += 1;
            }
            if chunk.is_empty() {
                continue;
            }
            let (sent, body) = self.bundle_within_limit(job, &chunk, state);
            // Whatever did not fit goes into the next bundle.
            next = chunk.get(sent).copied().unwrap_or(next);
            let chunk = &chunk[..sent];
            let request = StoreRequest {
                method: Method::POST,
                path: String::new(),
                body,
                if_none_exist: None,
            };
            match self.client.send(&request, stats).await {
                Ok(reply) => match transaction_targets(&reply.body, chunk.len()) {
                    Ok(targets) => {
                        for (&index, target) in chunk.iter().zip(targets) {
                            state
                                .targets
                                .insert(job.resources[index].key.clone(), target);
                        }
                        state.outcome.stored += chunk.len() as u64;
                        self.progress.add_stored(chunk.len() as u64);
                    }
                    Err(message) => {
                        let failure = Failure {
                            status: Some(reply.status),
                            message,
                            source: None,
                        };
                        for &index in chunk {
                            self.fail(job, index, &job.resources[index], state, failure.clone());
                        }
                    }
                },
                Err(SendError::Cancelled) => {
                    state.outcome.not_sent += (job.resources.len() - chunk[0]) as u64;
                    return;
                }
                Err(error) => {
                    let failure = failure_of(&error);
                    for &index in chunk {
                        self.fail(job, index, &job.resources[index], state, failure.clone());
                    }
                }
            }
        }
    }

    /// The bundle for the longest prefix of `chunk` that stays under the request size cap.
    fn bundle_within_limit(&self, job: &Job, chunk: &[usize], state: &JobState) -> (usize, Bytes) {
        let mut take = chunk.len();
        loop {
            let resources: Vec<Resource> = chunk[..take]
                .iter()
                .map(|&i| job.resources[i].clone())
                .collect();
            let bundle =
                transaction_bundle(&resources, &|reference| self.resolve(reference, state));
            let body = to_bytes(&bundle);
            if body.len() <= MAX_BUNDLE_BYTES || take == 1 {
                return (take, body);
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
        job: &Job,
        index: usize,
        resource: &Resource,
        state: &mut JobState,
        mut failure: Failure,
    ) {
        state.failed_keys.insert(resource.key.clone());
        state.outcome.failed += 1;
        self.progress.add_failed(1);
        if let Some(sink) = &self.failed {
            failure.source = job.sources.as_ref().map(|s| s[index].clone());
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

fn to_bytes(value: &Value) -> Bytes {
    Bytes::from(serde_json::to_vec(value).expect("JSON values always serialize"))
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
             it is not known what was stored",
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
                return Err(format!("entry {i} answered `{status}`"));
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
