//! The emulator's added latency, to the tenth of a millisecond.
//!
//! Tokio's timer wheel ticks in whole milliseconds and rounds every deadline up, so a 20 ms
//! `sleep` answers after 20–21 ms plus the wake-up: a benchmark sink that means to hold a
//! request 20 ms would hold it ~21.5 ms and understate every client measured against it by
//! ~7%. Here one thread keeps the deadlines in a heap and waits on a condition variable,
//! which the kernel wakes within tens of microseconds.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::time::Instant;

use tokio::sync::oneshot;

/// Hands out precise waits; the timer thread ends when this is dropped.
pub struct Delays {
    shared: Arc<Shared>,
}

#[derive(Default)]
struct Shared {
    state: Mutex<State>,
    changed: Condvar,
}

#[derive(Default)]
struct State {
    due: BinaryHeap<Reverse<Due>>,
    /// Breaks ties so that equal deadlines never compare their senders.
    next_seq: u64,
    closed: bool,
}

struct Due {
    at: Instant,
    seq: u64,
    wake: oneshot::Sender<()>,
}

impl PartialEq for Due {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}
impl Eq for Due {}
impl PartialOrd for Due {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Due {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.at, self.seq).cmp(&(other.at, other.seq))
    }
}

impl Delays {
    pub fn start() -> std::io::Result<Self> {
        let shared = Arc::new(Shared::default());
        let timer = shared.clone();
        std::thread::Builder::new()
            .name("emulator-latency".to_owned())
            .spawn(move || timer.run())?;
        Ok(Self { shared })
    }

    /// Resolves at `at` (at once if it has passed).
    pub async fn until(&self, at: Instant) {
        if at <= Instant::now() {
            return;
        }
        let (wake, woken) = oneshot::channel();
        {
            let mut state = self.shared.lock();
            let seq = state.next_seq;
            state.next_seq += 1;
            let earliest = state.due.peek().is_none_or(|Reverse(first)| at < first.at);
            state.due.push(Reverse(Due { at, seq, wake }));
            if earliest {
                self.shared.changed.notify_one();
            }
        }
        // The sender is only dropped unsent when the emulator is going away.
        let _ = woken.await;
    }
}

impl Drop for Delays {
    fn drop(&mut self) {
        self.shared.lock().closed = true;
        self.shared.changed.notify_one();
    }
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn run(&self) {
        let mut state = self.lock();
        while !state.closed {
            let now = Instant::now();
            match state.due.peek() {
                Some(Reverse(first)) if first.at <= now => {
                    let Reverse(due) = state.due.pop().expect("peeked");
                    let _ = due.wake.send(());
                }
                Some(Reverse(first)) => {
                    let wait = first.at - now;
                    state = self
                        .changed
                        .wait_timeout(state, wait)
                        .unwrap_or_else(PoisonError::into_inner)
                        .0;
                }
                None => {
                    state = self
                        .changed
                        .wait(state)
                        .unwrap_or_else(PoisonError::into_inner);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn wakes_in_deadline_order_and_never_early() {
        let delays = Arc::new(Delays::start().unwrap());
        let start = Instant::now();
        let order = Arc::new(Mutex::new(Vec::new()));
        let mut waits = tokio::task::JoinSet::new();
        for (label, ms) in [(3, 30u64), (1, 10), (2, 20), (0, 0)] {
            let (delays, order) = (delays.clone(), order.clone());
            waits.spawn(async move {
                let at = start + Duration::from_millis(ms);
                delays.until(at).await;
                assert!(Instant::now() >= at, "woke before its deadline");
                order.lock().unwrap().push(label);
            });
        }
        while let Some(done) = waits.join_next().await {
            done.unwrap();
        }
        assert_eq!(*order.lock().unwrap(), vec![0, 1, 2, 3]);
    }
}
