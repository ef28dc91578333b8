//! The unit of work: a `Job` (records packed for one request, a slice of shared resources, or
//! one resource of a record written resource by resource), the `RecordDag` that releases a
//! record's resources as what they refer to is stored, the `Completion` that later jobs wait
//! on, and what became of it all (`JobOutcome`).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use foldhash::{HashMap, HashSet};
use tokio::sync::{Notify, OwnedSemaphorePermit};

use crate::fhir::Resource;

/// Resources to write in order, by one worker.
pub struct Job {
    pub resources: Vec<Resource>,
    /// `path:line` each resource came from, when it came from a file.
    pub sources: Option<Vec<String>>,
    /// Where each record packed into the job ends (an index into `resources`, exclusive): a
    /// transaction refused because of one record is sent again without it.
    pub record_ends: Vec<usize>,
    /// What of the ids this job gets the rest of the run may need.
    pub publish: Publish,
    /// Marked when the job is finished and its ids are published, for jobs that refer to it.
    pub done: Option<Arc<Completion>>,
    /// Set when the job is one resource of a record written resource by resource.
    pub node: Option<Node>,
}

/// One resource of a [`RecordDag`].
pub struct Node {
    pub(super) dag: Arc<RecordDag>,
    pub(super) index: usize,
}

/// A record written one request per resource, each resource as soon as the resources of the
/// record it refers to are stored: a patient's observations go out on all free workers at
/// once instead of one after another, so a run does not end with one busy worker per record.
pub struct RecordDag {
    /// How many of the record's resources each resource still waits for.
    waiting: Vec<AtomicUsize>,
    /// The resources that refer to each resource.
    dependents: Vec<Vec<usize>>,
    pub(super) state: Mutex<DagState>,
    /// Held while any resource of the record is unwritten: bounds the records in progress,
    /// and with them memory.
    _in_progress: OwnedSemaphorePermit,
}

/// A record's resources, and what writing them has taught so far. A body is dropped once
/// its resource is written: only the key is needed after that, and a record in progress
/// should hold only what is still to be sent.
pub(super) struct DagState {
    pub(super) resources: Vec<Resource>,
    pub(super) job: JobState,
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
            resource.any_reference(|reference| {
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
    pub(super) fn release(self: &Arc<Self>, index: usize) -> Vec<Job> {
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
            record_ends: vec![resources.len()],
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

/// What became of a job's resources.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct JobOutcome {
    /// New in the store.
    pub created: u64,
    /// In the store already: a conditional create that matched, a transaction entry answered
    /// 200 for its `ifNoneExist`, or a resource found by its source-key tag.
    pub already_present: u64,
    /// Found present when sent again after an answer was lost: created by the lost attempt,
    /// or there before.
    pub created_or_present: u64,
    /// Written over what the store held (update mode, PUTs).
    pub updated: u64,
    pub failed: u64,
    /// Not attempted because the run was stopping.
    pub not_sent: u64,
    /// Not sent because something they refer to was not stored.
    pub not_sent_unstored_reference: u64,
}

impl JobOutcome {
    /// Resources the store holds after the job: created, already present or updated.
    pub fn stored(&self) -> u64 {
        self.created + self.already_present + self.created_or_present + self.updated
    }

    pub(super) fn book(&mut self, stored: Stored) {
        match stored {
            Stored::Created => self.created += 1,
            Stored::AlreadyPresent => self.already_present += 1,
            Stored::CreatedOrPresent => self.created_or_present += 1,
            Stored::Updated => self.updated += 1,
        }
    }
}

impl std::ops::AddAssign for JobOutcome {
    fn add_assign(&mut self, more: Self) {
        self.created += more.created;
        self.already_present += more.already_present;
        self.created_or_present += more.created_or_present;
        self.updated += more.updated;
        self.failed += more.failed;
        self.not_sent += more.not_sent;
        self.not_sent_unstored_reference += more.not_sent_unstored_reference;
    }
}

/// What one job has learnt so far: where its resources went, and which did not make it.
#[derive(Debug, Default)]
pub(super) struct JobState {
    pub(super) targets: HashMap<String, String>,
    /// Resources that failed or were not sent: what refers to them is not sent either.
    pub(super) failed_keys: HashSet<String>,
}

/// How a stored resource got there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Stored {
    Created,
    AlreadyPresent,
    /// Present when sent again after an attempt whose answer was lost.
    CreatedOrPresent,
    Updated,
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
}
