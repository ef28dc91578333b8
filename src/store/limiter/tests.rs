//! The limiter against simulated stores, on tokio's paused clock: minutes of quota windows run
//! in milliseconds, and the numbers are the ones a real run would see at these latencies.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use super::*;

/// A store whose quota admits `quota` operations per fixed window of `window`, as Google's
/// per-minute quota does, answering 429 without `Retry-After` once it is spent.
struct QuotaStore {
    started: Instant,
    window: Duration,
    quota: u64,
    used: Mutex<(u64, u64)>,
}

impl QuotaStore {
    fn new(quota: u64, window: Duration) -> Self {
        Self {
            started: Instant::now(),
            window,
            quota,
            used: Mutex::new((0, 0)),
        }
    }

    fn admit(&self, ops: u32) -> bool {
        let index = (self.started.elapsed().as_nanos() / self.window.as_nanos()) as u64;
        let mut used = self.used.lock().unwrap();
        if used.0 != index {
            *used = (index, 0);
        }
        if used.1 + u64::from(ops) > self.quota {
            return false;
        }
        used.1 += u64::from(ops);
        true
    }
}

struct Run {
    elapsed: Duration,
    requests: u64,
    throttled: u64,
}

/// `workers` tasks send `requests` requests of `ops` operations each, every one until the store
/// admits it; `admit` is the store, `latency` its answer time.
async fn run(
    workers: usize,
    requests: u64,
    ops: u32,
    latency: Duration,
    admit: Arc<dyn Fn(u32) -> bool + Send + Sync>,
) -> Run {
    let limiter = Arc::new(Limiter::new(LimiterOptions::default()));
    let next = Arc::new(AtomicU64::new(0));
    let sent = Arc::new(AtomicU64::new(0));
    let throttled = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut pool = tokio::task::JoinSet::new();
    for _ in 0..workers {
        let (limiter, next, sent, throttled, admit) = (
            limiter.clone(),
            next.clone(),
            sent.clone(),
            throttled.clone(),
            admit.clone(),
        );
        pool.spawn(async move {
            while next.fetch_add(1, Ordering::Relaxed) < requests {
                loop {
                    let permit = limiter.acquire(ops).await;
                    sent.fetch_add(1, Ordering::Relaxed);
                    tokio::time::sleep(latency / 2).await;
                    let admitted = admit(ops);
                    tokio::time::sleep(latency / 2).await;
                    if admitted {
                        limiter.done(permit, Outcome::Answered);
                        break;
                    }
                    throttled.fetch_add(1, Ordering::Relaxed);
                    let wait = limiter.done(permit, Outcome::Throttled(None));
                    tokio::time::sleep(wait).await;
                }
            }
        });
    }
    while pool.join_next().await.is_some() {}
    Run {
        elapsed: started.elapsed(),
        requests: sent.load(Ordering::Relaxed),
        throttled: throttled.load(Ordering::Relaxed),
    }
}

/// Loads `windows` windows' worth of a quota of `quota` operations per minute and checks the
/// targets: at most 1.10x the time the quota allows, at most 5% of requests throttled.
async fn rides_the_quota(workers: usize, ops: u32, quota: u64, windows: u64, latency_ms: u64) {
    let window = Duration::from_secs(60);
    let store = Arc::new(QuotaStore::new(quota, window));
    let requests = quota * windows / u64::from(ops);
    let result = run(
        workers,
        requests,
        ops,
        Duration::from_millis(latency_ms),
        Arc::new(move |ops| store.admit(ops)),
    )
    .await;
    let quota_bound = window.as_secs_f64() * windows as f64;
    let ratio = result.elapsed.as_secs_f64() / quota_bound;
    let throttled = result.throttled as f64 / result.requests as f64;
    eprintln!(
        "{workers} workers, {ops} ops a request, {quota}/min: {ratio:.3}x the quota-bound time, \
         {:.1}% throttled",
        throttled * 100.0
    );
    assert!(
        ratio <= 1.10 && throttled <= 0.05,
        "{workers} workers, {ops} ops a request, {quota}/min: {:.1} s = {ratio:.3}x the quota-bound \
         {quota_bound} s; {} of {} requests throttled ({:.1}%)",
        result.elapsed.as_secs_f64(),
        result.throttled,
        result.requests,
        throttled * 100.0
    );
}

#[tokio::test(start_paused = true)]
async fn single_resource_requests_ride_a_per_minute_quota() {
    rides_the_quota(64, 1, 3000, 6, 40).await;
}

#[tokio::test(start_paused = true)]
async fn bundles_ride_a_per_minute_quota() {
    rides_the_quota(32, 100, 30_000, 6, 300).await;
}

#[tokio::test(start_paused = true)]
async fn a_fast_store_with_a_small_quota_is_ridden_too() {
    rides_the_quota(16, 10, 3_000, 10, 2).await;
}

#[tokio::test(start_paused = true)]
async fn stray_429s_do_not_slow_a_store_with_room() {
    // One request in ten throttled at random, no quota: each waits ~75 ms on its own (1.5x
    // for 20 ms requests), and now and then three in a row hold everyone for a probe; what
    // must not happen is every stray 429 pausing every worker (that was 6.8x).
    let calm = run(8, 2000, 1, Duration::from_millis(20), Arc::new(|_| true)).await;
    let noisy = run(
        8,
        2000,
        1,
        Duration::from_millis(20),
        Arc::new(|_| rand::rng().random::<f64>() >= 0.1),
    )
    .await;
    let ratio = noisy.elapsed.as_secs_f64() / calm.elapsed.as_secs_f64();
    eprintln!("stray 429s: {ratio:.2}x the time without");
    assert!(ratio < 2.5, "stray 429s made the load {ratio:.2}x slower");
}

#[tokio::test(start_paused = true)]
async fn a_rate_cap_counts_operations() {
    let limiter = Limiter::new(LimiterOptions {
        max_rate: Some(100.0),
        ..LimiterOptions::default()
    });
    let start = Instant::now();
    for _ in 0..5 {
        let permit = limiter.acquire(50).await;
        limiter.done(permit, Outcome::Answered);
    }
    // Five bundles of 50 entries at 100 operations per second: the fifth leaves at 2 s.
    assert_eq!(start.elapsed(), Duration::from_secs(2));
}

#[tokio::test(start_paused = true)]
async fn retry_after_holds_every_worker() {
    let limiter = Limiter::new(LimiterOptions::default());
    let permit = limiter.acquire(1).await;
    limiter.done(permit, Outcome::Throttled(Some(Duration::from_secs(3))));
    assert!(limiter.is_throttled());
    let start = Instant::now();
    let probe = limiter.acquire(1).await;
    assert!(
        start.elapsed() >= Duration::from_secs(3),
        "{:?}",
        start.elapsed()
    );
    limiter.done(probe, Outcome::Answered);
    assert!(!limiter.is_throttled());
    assert!(limiter.throttled_time() >= Duration::from_secs(3));
}

#[tokio::test(start_paused = true)]
async fn only_one_probe_goes_out_while_throttled() {
    let limiter = Arc::new(Limiter::new(LimiterOptions::default()));
    // Throttled again and again: the quota is spent, not one request unlucky.
    for _ in 0..SPENT_AFTER {
        let permit = limiter.acquire(1).await;
        assert!(!limiter.is_throttled());
        limiter.done(permit, Outcome::Throttled(None));
    }
    assert!(limiter.is_throttled());
    let probe = limiter.acquire(1).await;
    let waiting = tokio::spawn({
        let limiter = limiter.clone();
        async move { limiter.acquire(1).await }
    });
    tokio::time::sleep(Duration::from_secs(60)).await;
    assert!(
        !waiting.is_finished(),
        "a second request went out beside the probe"
    );
    limiter.done(probe, Outcome::Answered);
    let next = waiting.await.unwrap();
    assert!(!next.probe);
}
