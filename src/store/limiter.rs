//! The adaptive limit in front of the worker pool: how fast requests may leave, shared by every
//! worker and learnt from the store's throttling.
//!
//! A Cloud Healthcare store's quota counts *operations* (each bundle entry is one) per minute and
//! answers 429 once it is spent, without saying when it refills. Retrying each request on its
//! own either gives up before the quota comes back or keeps hammering a store that has said no.
//! Instead, the first 429 starts a throttle *episode*: every worker holds off while one probe at a
//! time asks whether the store takes work again (doubling waits, as Google advises). When a probe
//! that follows a refused probe gets through, the quota has refilled, and the operations the
//! store admitted since the last refill, over the time since then, are the rate it sustains: the
//! limiter paces operations a little below it and creeps up again (multiplicative decrease,
//! additive increase, as TCP rides a link), so the load runs at the quota rather than against it.
//! A lone 429 whose first probe succeeds was noise, not a spent quota: nothing is learnt from it.

use std::sync::Mutex;
use std::time::Duration;

use rand::RngExt;
use tokio::sync::Notify;
use tokio::time::Instant;

/// Pace at this fraction of the rate the store sustained in the last quota cycle, so that the
/// next cycle ends just short of the quota instead of on it.
const DECREASE: f64 = 0.95;
/// How much the pace grows per quota cycle without throttling: slow enough that a 429 is rare,
/// fast enough to find quota that frees up.
const GROWTH_PER_CYCLE: f64 = 0.02;
/// After this many quiet cycles the learnt rate is dropped: the quota has grown, or others
/// sharing it have stopped.
const FORGET_AFTER_CYCLES: f64 = 6.0;
/// Throttled answers in a row that mean the quota is spent rather than one request unlucky.
const SPENT_AFTER: u32 = 3;
/// Never pace slower than this (operations per second), whatever was measured.
const MIN_RATE: f64 = 0.5;

#[derive(Debug, Clone)]
pub struct LimiterOptions {
    /// `--rate`: a hard cap in operations per second, whatever the store would take.
    pub max_rate: Option<f64>,
    /// The first wait before a throttled store is probed; doubles per refused probe.
    pub min_probe_delay: Duration,
    /// The longest wait between two probes.
    pub max_probe_delay: Duration,
}

impl Default for LimiterOptions {
    fn default() -> Self {
        Self {
            max_rate: None,
            min_probe_delay: Duration::from_millis(100),
            max_probe_delay: Duration::from_secs(32),
        }
    }
}

/// What became of a request that went out under a [`Permit`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Outcome {
    /// The store answered (2xx or an error other than throttling): its operations counted.
    Answered,
    /// The store throttled it (429, or 503 when overloaded), with its `Retry-After` if any.
    Throttled(Option<Duration>),
    /// No answer (timeout, connection): nothing learnt about the quota.
    Lost,
}

/// Leave to send one request of `ops` operations; hand it back with [`Limiter::done`].
#[derive(Debug)]
pub struct Permit {
    ops: u32,
    /// This request asks whether a throttled store takes work again.
    probe: bool,
    sent: Instant,
}

pub struct Limiter {
    options: LimiterOptions,
    state: Mutex<State>,
    /// Woken when an episode ends or a probe comes back.
    changed: Notify,
}

#[derive(Debug)]
struct State {
    learnt: Option<Learnt>,
    /// When the next operation may leave, when pacing.
    next_slot: Instant,
    episode: Option<Episode>,
    /// Since the last refill of the quota: when it began and the operations admitted since.
    cycle_start: Instant,
    cycle_ops: u64,
    /// The last measured quota cycle, used to guess when the next refill comes.
    last_cycle: Option<Duration>,
    throttled_total: Duration,
    /// Throttled answers since the last one that was not.
    consecutive_throttles: u32,
    /// Bumped whenever an episode begins or ends, voiding the pace slots taken before.
    epoch: u64,
}

/// The pace the store sustained, and when it was measured (it grows from there).
#[derive(Debug, Clone, Copy)]
struct Learnt {
    rate: f64,
    at: Instant,
    cycle: Duration,
}

#[derive(Debug)]
struct Episode {
    started: Instant,
    probe_at: Instant,
    probe_out: bool,
    /// When the last refused request was sent: the quota refilled after it.
    last_refused: Instant,
    /// A probe was refused too: the quota is spent, not one request unlucky.
    confirmed: bool,
}

impl Limiter {
    pub fn new(options: LimiterOptions) -> Self {
        let now = Instant::now();
        Self {
            options,
            state: Mutex::new(State {
                learnt: None,
                next_slot: now,
                episode: None,
                cycle_start: now,
                cycle_ops: 0,
                last_cycle: None,
                throttled_total: Duration::ZERO,
                consecutive_throttles: 0,
                epoch: 0,
            }),
            changed: Notify::new(),
        }
    }

    /// Waits until a request of `ops` operations may go: after any throttle episode (or as its
    /// probe), and in its slot of the pace.
    pub async fn acquire(&self, ops: u32) -> Permit {
        let ops = ops.max(1);
        loop {
            let changed = self.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            let wait = {
                let mut state = self.state.lock().expect("limiter lock");
                let now = Instant::now();
                match &mut state.episode {
                    Some(episode) if !episode.probe_out && now >= episode.probe_at => {
                        episode.probe_out = true;
                        return Permit {
                            ops,
                            probe: true,
                            sent: now,
                        };
                    }
                    Some(episode) => {
                        Wait::Episode((!episode.probe_out).then_some(episode.probe_at))
                    }
                    None => match self.rate(&state, now) {
                        None => {
                            return Permit {
                                ops,
                                probe: false,
                                sent: now,
                            };
                        }
                        Some(rate) => {
                            let slot = now.max(state.next_slot);
                            state.next_slot = slot + Duration::from_secs_f64(f64::from(ops) / rate);
                            Wait::Slot(slot, state.epoch)
                        }
                    },
                }
            };
            match wait {
                Wait::Slot(slot, epoch) => {
                    tokio::time::sleep_until(slot).await;
                    // A slot taken before an episode began or ended is void: the pace changed.
                    let state = self.state.lock().expect("limiter lock");
                    if state.epoch == epoch {
                        return Permit {
                            ops,
                            probe: false,
                            sent: Instant::now(),
                        };
                    }
                }
                Wait::Episode(Some(probe_at)) => {
                    tokio::select! {
                        _ = tokio::time::sleep_until(probe_at) => {}
                        _ = changed => {}
                    }
                }
                Wait::Episode(None) => changed.await,
            }
        }
    }

    /// Books what became of the request `permit` let out. For a throttled request, hands back
    /// how long it should wait on its own before asking again (an episode holds it anyway).
    pub fn done(&self, permit: Permit, outcome: Outcome) -> Duration {
        let mut state = self.state.lock().expect("limiter lock");
        let now = Instant::now();
        let mut own_wait = Duration::ZERO;
        // Waiters care only when an episode begins or ends or a probe comes back: an ordinary
        // answer wakes nobody.
        let wakes = permit.probe;
        let epoch = state.epoch;
        match outcome {
            Outcome::Answered => {
                state.cycle_ops += u64::from(permit.ops);
                if permit.probe {
                    self.end_episode(&mut state, permit);
                } else if state.episode.is_none() {
                    state.consecutive_throttles = 0;
                }
            }
            Outcome::Throttled(retry_after) => {
                let floor = now + retry_after.unwrap_or_default();
                let expected_refill = self.expected_refill(&state, now);
                state.consecutive_throttles += 1;
                let spent = state.consecutive_throttles >= SPENT_AFTER || retry_after.is_some();
                match &mut state.episode {
                    Some(episode) if permit.probe => {
                        episode.confirmed = true;
                        episode.last_refused = permit.sent;
                        // Probing more often early on finds a refill sooner; later, less often
                        // keeps the 429s few: each wait is about a quarter of the time throttled so far.
                        let delay = ((now - episode.started) / 4)
                            .clamp(self.options.min_probe_delay, self.options.max_probe_delay);
                        let backoff = now + jitter(delay);
                        // Where the quota refills on a schedule, probe just after it refills.
                        let at = match expected_refill {
                            Some(refill) if refill > now => backoff.min(refill),
                            _ => backoff,
                        };
                        episode.probe_at = at.max(floor);
                        episode.probe_out = false;
                    }
                    Some(episode) => episode.probe_at = episode.probe_at.max(floor),
                    None if spent => {
                        let at = now + jitter(self.options.min_probe_delay);
                        state.epoch += 1;
                        tracing::debug!(
                            "the store is throttling: every worker holds off, one probe at a time"
                        );
                        state.episode = Some(Episode {
                            started: now,
                            probe_at: at.max(floor),
                            probe_out: false,
                            confirmed: false,
                            last_refused: permit.sent,
                        });
                    }
                    // Maybe one unlucky request: it waits on its own, the others go on.
                    None => own_wait = jitter(self.options.min_probe_delay),
                }
            }
            Outcome::Lost => {
                if let Some(episode) = state.episode.as_mut().filter(|_| permit.probe) {
                    episode.probe_out = false;
                    episode.probe_at = now + jitter(self.options.min_probe_delay);
                }
            }
        }
        let changed = wakes || state.epoch != epoch;
        drop(state);
        if changed {
            self.changed.notify_waiters();
        }
        own_wait
    }

    /// Whether the store is throttling the load right now.
    pub fn is_throttled(&self) -> bool {
        self.state.lock().expect("limiter lock").episode.is_some()
    }

    /// Time spent in throttle episodes so far (the one in progress included).
    pub fn throttled_time(&self) -> Duration {
        let state = self.state.lock().expect("limiter lock");
        let current = state
            .episode
            .as_ref()
            .map_or(Duration::ZERO, |e| e.started.elapsed());
        state.throttled_total + current
    }

    /// The pace now, in operations per second; `None` when nothing holds the load back.
    fn rate(&self, state: &State, now: Instant) -> Option<f64> {
        let learnt = state.learnt.and_then(|learnt| {
            let cycles =
                (now - learnt.at).as_secs_f64() / learnt.cycle.as_secs_f64().max(f64::EPSILON);
            (cycles < FORGET_AFTER_CYCLES)
                .then_some(learnt.rate * (1.0 + GROWTH_PER_CYCLE * cycles))
        });
        match (learnt, self.options.max_rate) {
            (Some(learnt), Some(cap)) => Some(learnt.min(cap)),
            (learnt, cap) => learnt.or(cap),
        }
    }

    /// When the quota should refill next, if it has refilled on a schedule before.
    fn expected_refill(&self, state: &State, now: Instant) -> Option<Instant> {
        // A cycle measured as nothing (two probes at one instant) schedules nothing.
        let cycle = state.last_cycle.filter(|cycle| !cycle.is_zero())?;
        let since = now.saturating_duration_since(state.cycle_start);
        let cycles_past = (since.as_secs_f64() / cycle.as_secs_f64()).floor() + 1.0;
        let refill = state.cycle_start + cycle.mul_f64(cycles_past);
        Some(refill + self.options.min_probe_delay / 2)
    }

    /// A probe got through: everyone may go again. If the quota had been spent, it refilled
    /// between the last refused probe and this one, and what the store admitted since the
    /// refill before sets the pace.
    fn end_episode(&self, state: &mut State, probe: Permit) {
        let Some(episode) = state.episode.take() else {
            return;
        };
        let now = Instant::now();
        state.throttled_total += now - episode.started;
        state.next_slot = now;
        state.epoch += 1;
        state.consecutive_throttles = 0;
        if !episode.confirmed {
            return;
        }
        let midpoint = episode.last_refused + (probe.sent - episode.last_refused) / 2;
        let (rate, refill, cycle) = match (self.rate(state, probe.sent), state.last_cycle) {
            // Paced and still too fast: the store refused work for part of its cycle, so the
            // pace shrinks by that part (and a little more).
            (Some(pace), Some(cycle)) => {
                let refused = midpoint.saturating_duration_since(episode.started);
                let usable = 1.0 - refused.as_secs_f64() / cycle.as_secs_f64().max(1e-3);
                // Refills come a whole number of cycles apart: refine the cycle from them.
                let since = midpoint.saturating_duration_since(state.cycle_start);
                let cycles = (since.as_secs_f64() / cycle.as_secs_f64()).round().max(1.0);
                let refined = since.div_f64(cycles);
                (pace * usable.clamp(0.5, 1.0) * DECREASE, midpoint, refined)
            }
            // The first time: what the store admitted until it refilled is what it sustains.
            // The refill came after the last refused probe; taking that moment errs on the
            // fast side, which the next cycle corrects, where a slow guess would linger.
            _ => {
                let refill = episode.last_refused;
                let cycle = refill.saturating_duration_since(state.cycle_start);
                let admitted = state.cycle_ops - u64::from(probe.ops);
                (
                    admitted as f64 / cycle.as_secs_f64().max(1e-3) * DECREASE,
                    refill,
                    cycle,
                )
            }
        };
        state.learnt = Some(Learnt {
            rate: rate.max(MIN_RATE),
            at: now,
            cycle,
        });
        tracing::debug!(
            "the quota refilled after {:.1} s held back; pacing at {:.1} operations/s (quota \
             cycle ~{:.1} s)",
            (now - episode.started).as_secs_f64(),
            rate.max(MIN_RATE),
            cycle.as_secs_f64()
        );
        state.last_cycle = Some(cycle);
        state.cycle_start = refill;
        state.cycle_ops = u64::from(probe.ops);
    }
}

enum Wait {
    /// A slot of the pace, taken in this epoch.
    Slot(Instant, u64),
    /// Until the probe may go (`None`: one is out; wait for its answer).
    Episode(Option<Instant>),
}

/// Somewhere in the upper half of `delay`, so that shards sharing a quota do not probe in step.
fn jitter(delay: Duration) -> Duration {
    delay.mul_f64(0.5 + 0.5 * rand::rng().random::<f64>())
}

#[cfg(test)]
mod tests;
