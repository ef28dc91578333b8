//! The worker pool: a fixed number of tasks, each taking the next job and writing it, so that
//! never more than `--workers` requests are in flight. Work reaches a worker one way,
//! [`next_job`]: resources of records in progress that became ready (follow-ups) first, then
//! the next job from the dispatcher's bounded channel.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::sync::{Mutex, Notify, mpsc};
use tokio_util::sync::CancellationToken;

use super::job::{Job, JobOutcome};
use super::writer::RecordWriter;
use crate::store::stats::RequestStats;

pub async fn worker(
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
            // No new records will come, but records in progress may still make follow-ups,
            // unless the run stops: then nothing wakes this worker but the stop itself.
            None => tokio::select! {
                _ = stop.cancelled() => return None,
                _ = notified => {}
            },
        }
    }
}

/// Resources of records in progress that became ready to write when what they refer to was
/// stored; taken before new records, so that records in progress finish first and the end of
/// a run keeps every worker busy.
#[derive(Default)]
pub struct FollowUps {
    queue: std::sync::Mutex<VecDeque<Job>>,
    /// Resources of records in progress not yet written: while there are any, more work
    /// may appear here even when no new record will.
    unwritten: AtomicUsize,
    notify: Notify,
}

impl FollowUps {
    fn pop(&self) -> Option<Job> {
        self.queue.lock().expect("follow-up lock").pop_front()
    }

    /// A record of `resources` starts being written resource by resource.
    pub fn start_record(&self, resources: usize) {
        self.unwritten.fetch_add(resources, Ordering::SeqCst);
    }

    /// One resource was written (or failed); `ready` are those that waited for it.
    fn written(&self, ready: Vec<Job>) {
        let added = !ready.is_empty();
        if added {
            self.queue.lock().expect("follow-up lock").extend(ready);
        }
        let finished = self.unwritten.fetch_sub(1, Ordering::SeqCst) == 1;
        // Waiting workers only need to look again when there is work for them, or when the
        // last record finished and they may stop: waking them all on every write cost each
        // request a round of wake-ups for nothing.
        if added || finished {
            self.notify.notify_waiters();
        }
    }

    fn idle(&self) -> bool {
        self.unwritten() == 0
    }

    /// Resources of records in progress never written (the run stopped).
    pub fn unwritten(&self) -> u64 {
        self.unwritten.load(Ordering::SeqCst) as u64
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    /// A worker waiting for follow-ups after the last new record has gone out must stop with
    /// the run, even though nothing will ever be written again to wake it.
    #[tokio::test(start_paused = true)]
    async fn a_worker_waiting_for_follow_ups_stops_with_the_run() {
        let (job_tx, job_rx) = mpsc::channel::<Job>(1);
        drop(job_tx);
        let jobs = Mutex::new(job_rx);
        let followups = FollowUps::default();
        // A record in progress: follow-ups may still come, so the worker waits for them.
        followups.start_record(2);
        let stop = CancellationToken::new();
        let waiting = next_job(&jobs, &followups, &stop);
        tokio::pin!(waiting);
        assert!(
            tokio::time::timeout(Duration::from_secs(1), &mut waiting)
                .await
                .is_err(),
            "the worker waits while the record is in progress"
        );
        stop.cancel();
        let next = tokio::time::timeout(Duration::from_secs(1), waiting)
            .await
            .expect("the worker stops with the run");
        assert!(next.is_none());
    }
}
