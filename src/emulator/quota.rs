//! The operations quota: Google counts FHIR *operations* per project and region, each entry of
//! a batch or transaction bundle being one operation and any other request one. Here the
//! count runs in fixed windows (Google's accounting is rolling: see the README).

use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

/// How many operations each window allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QuotaLimit {
    pub operations: u32,
    pub window: Duration,
}

/// Why a request was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refusal {
    /// Time until the current window ends and the quota is whole again.
    pub resets_in: Duration,
}

impl Refusal {
    /// Whole seconds for a `Retry-After` header, never 0 (that would invite a busy loop).
    pub fn retry_after_secs(&self) -> u64 {
        (self.resets_in.as_secs_f64().ceil() as u64).max(1)
    }
}

/// The operations used in the current window.
#[derive(Debug, Default)]
pub struct Quota {
    window: Mutex<Window>,
}

#[derive(Debug, Default)]
struct Window {
    /// When the current window opened: at the first request after the previous one closed.
    opened: Option<Instant>,
    used: u64,
}

impl Quota {
    /// Admits a request of `operations` operations at `now`, or refuses it whole. A refused
    /// request uses nothing, and one larger than what is left waits for a fresh window, like
    /// Google, which never runs part of a bundle; one larger than a whole window's quota is
    /// therefore refused every time.
    pub fn admit(&self, limit: QuotaLimit, operations: u64, now: Instant) -> Result<(), Refusal> {
        let mut window = self.window.lock().unwrap_or_else(PoisonError::into_inner);
        let opened = match window.opened {
            Some(opened) if now.duration_since(opened) < limit.window => opened,
            _ => {
                *window = Window {
                    opened: Some(now),
                    used: 0,
                };
                now
            }
        };
        if window.used + operations <= u64::from(limit.operations) {
            window.used += operations;
            Ok(())
        } else {
            Err(Refusal {
                resets_in: limit.window.saturating_sub(now.duration_since(opened)),
            })
        }
    }

    /// Forgets the current window.
    pub fn reset(&self) {
        *self.window.lock().unwrap_or_else(PoisonError::into_inner) = Window::default();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMIT: QuotaLimit = QuotaLimit {
        operations: 10,
        window: Duration::from_secs(60),
    };

    #[test]
    fn operations_are_counted_in_fixed_windows() {
        let quota = Quota::default();
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        assert!(quota.admit(LIMIT, 1, at(0)).is_ok());
        assert!(quota.admit(LIMIT, 8, at(1_000)).is_ok());
        // A bundle larger than what is left is refused whole and uses nothing.
        let refused = quota.admit(LIMIT, 2, at(10_500)).unwrap_err();
        assert_eq!(refused.resets_in, Duration::from_millis(49_500));
        assert_eq!(refused.retry_after_secs(), 50);
        assert!(quota.admit(LIMIT, 1, at(11_000)).is_ok());
        assert_eq!(
            quota
                .admit(LIMIT, 1, at(59_999))
                .unwrap_err()
                .retry_after_secs(),
            1
        );
        // The next window starts whole.
        assert!(quota.admit(LIMIT, 10, at(60_000)).is_ok());
        assert!(quota.admit(LIMIT, 1, at(60_001)).is_err());
        quota.reset();
        assert!(quota.admit(LIMIT, 10, at(60_002)).is_ok());
    }

    #[test]
    fn a_bundle_larger_than_the_window_never_passes() {
        let quota = Quota::default();
        let t0 = Instant::now();
        assert!(quota.admit(LIMIT, 11, t0).is_err());
        assert!(
            quota
                .admit(LIMIT, 11, t0 + Duration::from_secs(61))
                .is_err()
        );
        assert!(quota.admit(LIMIT, 10, t0 + Duration::from_secs(62)).is_ok());
    }

    #[test]
    fn fractional_windows() {
        let limit = QuotaLimit {
            operations: 1,
            window: Duration::from_millis(250),
        };
        let quota = Quota::default();
        let t0 = Instant::now();
        assert!(quota.admit(limit, 1, t0).is_ok());
        assert_eq!(
            quota
                .admit(limit, 1, t0 + Duration::from_millis(100))
                .unwrap_err()
                .resets_in,
            Duration::from_millis(150)
        );
        assert!(
            quota
                .admit(limit, 1, t0 + Duration::from_millis(250))
                .is_ok()
        );
    }
}
