//! What a load did: live counters for the progress bar, and per-worker tallies merged at the end.

use std::collections::BTreeMap;
use std::ops::AddAssign;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use hdrhistogram::Histogram;

/// A rate or a duration as it is reported: to the millisecond, or the thousandth.
pub fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// Counters every worker bumps as resources land; read by the progress bar.
#[derive(Debug, Default)]
pub struct Progress {
    stored: AtomicU64,
    failed: AtomicU64,
    not_sent: AtomicU64,
}

impl Progress {
    pub fn add_stored(&self, n: u64) {
        self.stored.fetch_add(n, Ordering::Relaxed);
    }

    pub fn add_failed(&self, n: u64) {
        self.failed.fetch_add(n, Ordering::Relaxed);
    }

    /// Resources left unsent because something they refer to was not stored.
    pub fn add_not_sent(&self, n: u64) {
        self.not_sent.fetch_add(n, Ordering::Relaxed);
    }

    pub fn not_sent(&self) -> u64 {
        self.not_sent.load(Ordering::Relaxed)
    }

    pub fn stored(&self) -> u64 {
        self.stored.load(Ordering::Relaxed)
    }

    pub fn failed(&self) -> u64 {
        self.failed.load(Ordering::Relaxed)
    }
}

/// One worker's tally of requests; merged with `+=` when the workers finish, so no lock is
/// taken per request.
#[derive(Debug, Clone)]
pub struct RequestStats {
    pub requests: u64,
    pub retries: u64,
    /// Latency of every attempt that got an answer, in microseconds.
    pub latency_us: Histogram<u64>,
    pub status_counts: BTreeMap<u16, u64>,
    /// Attempts that got no HTTP answer, by kind ("timeout", "connection refused or reset",
    /// "connection error").
    pub errors: BTreeMap<String, u64>,
}

impl Default for RequestStats {
    fn default() -> Self {
        Self {
            requests: 0,
            retries: 0,
            // 1 µs .. 1 hour at 2 significant digits (1% resolution): ~45 KiB per worker,
            // where 3 digits would take ~350 KiB each, tens of MiB for a large pool.
            latency_us: Histogram::new_with_bounds(1, 3_600_000_000, 2)
                .expect("static histogram bounds are valid"),
            status_counts: BTreeMap::new(),
            errors: BTreeMap::new(),
        }
    }
}

impl RequestStats {
    pub fn record_answer(&mut self, status: u16, latency: Duration) {
        self.requests += 1;
        *self.status_counts.entry(status).or_default() += 1;
        self.latency_us
            .saturating_record(latency.as_micros().clamp(1, u64::MAX as u128) as u64);
    }

    pub fn record_error(&mut self, kind: &str) {
        self.requests += 1;
        *self.errors.entry(kind.to_owned()).or_default() += 1;
    }

    /// Latency at `quantile` (0..=1) in milliseconds; 0 when nothing was answered.
    pub fn latency_ms(&self, quantile: f64) -> f64 {
        if self.latency_us.is_empty() {
            return 0.0;
        }
        self.latency_us.value_at_quantile(quantile) as f64 / 1000.0
    }
}

impl AddAssign<&RequestStats> for RequestStats {
    fn add_assign(&mut self, other: &RequestStats) {
        self.requests += other.requests;
        self.retries += other.retries;
        self.latency_us
            .add(&other.latency_us)
            .expect("histograms share bounds");
        for (status, n) in &other.status_counts {
            *self.status_counts.entry(*status).or_default() += n;
        }
        for (kind, n) in &other.errors {
            *self.errors.entry(kind.clone()).or_default() += n;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merges_worker_tallies() {
        let mut a = RequestStats::default();
        a.record_answer(201, Duration::from_millis(10));
        a.record_error("timeout");
        a.retries = 1;
        let mut b = RequestStats::default();
        b.record_answer(201, Duration::from_millis(30));
        b.record_answer(429, Duration::from_millis(1));
        a += &b;
        assert_eq!(a.requests, 4);
        assert_eq!(a.retries, 1);
        assert_eq!(a.status_counts[&201], 2);
        assert_eq!(a.status_counts[&429], 1);
        assert_eq!(a.errors["timeout"], 1);
        assert!((a.latency_ms(1.0) - 30.0).abs() < 0.1);
    }
}
