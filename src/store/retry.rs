//! When to try a failed request again, and how long to wait first.

use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};
use http::header::{HeaderMap, RETRY_AFTER};
use rand::RngExt;

/// Statuses that say "try again later": the request may succeed unchanged.
pub fn is_transient(status: u16) -> bool {
    matches!(status, 408 | 429 | 500 | 502 | 503 | 504)
}

/// Exponential backoff with full jitter, as Google advises for its quotas.
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    pub max_retries: u32,
    pub min_delay: Duration,
    pub max_delay: Duration,
}

impl RetryPolicy {
    /// `max_retries` waits, the first about `min_delay`, doubling up to 32 s.
    pub fn new(max_retries: u32, min_delay: Duration) -> Self {
        Self {
            max_retries,
            min_delay,
            max_delay: Duration::from_secs(32).max(min_delay),
        }
    }

    /// The waits before retry 1, 2, ...: each uniform in [min, cap] where the cap doubles from
    /// `min_delay` up to `max_delay` (the "full jitter" of the AWS architecture blog).
    pub fn delays(&self) -> impl Iterator<Item = Duration> + Send + use<> {
        let min = self.min_delay;
        ExponentialBuilder::new()
            .with_min_delay(self.min_delay)
            .with_max_delay(self.max_delay)
            .with_factor(2.0)
            .with_max_times(self.max_retries as usize)
            .build()
            .map(move |cap| {
                let spread = cap.saturating_sub(min);
                min + spread.mul_f64(rand::rng().random::<f64>())
            })
    }
}

/// `Retry-After` as seconds or an HTTP date, capped so a confused server cannot park the run.
pub fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let value = headers.get(RETRY_AFTER)?.to_str().ok()?.trim();
    let wait = if let Ok(seconds) = value.parse::<f64>() {
        Duration::try_from_secs_f64(seconds).ok()?
    } else {
        let date = chrono::DateTime::parse_from_rfc2822(value).ok()?;
        (date.with_timezone(&chrono::Utc) - chrono::Utc::now())
            .to_std()
            .unwrap_or_default()
    };
    Some(wait.min(Duration::from_secs(300)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::header::HeaderValue;

    #[test]
    fn transient_statuses() {
        for status in [408, 429, 500, 502, 503, 504] {
            assert!(is_transient(status), "{status}");
        }
        for status in [400, 401, 403, 404, 409, 412, 422] {
            assert!(!is_transient(status), "{status}");
        }
    }

    #[test]
    fn delays_are_bounded_and_grow() {
        let policy = RetryPolicy::new(8, Duration::from_millis(100));
        let delays: Vec<_> = policy.delays().collect();
        assert_eq!(delays.len(), 8);
        assert!(
            delays
                .iter()
                .all(|d| *d >= policy.min_delay && *d <= policy.max_delay)
        );
        // The cap doubles, so the average of late waits is far above the first cap.
        let late: Duration = (0..200)
            .map(|_| policy.delays().nth(7).unwrap())
            .sum::<Duration>()
            / 200;
        assert!(late > Duration::from_secs(2), "{late:?}");
    }

    #[test]
    fn retry_after_seconds_and_dates() {
        let mut headers = HeaderMap::new();
        headers.insert(RETRY_AFTER, HeaderValue::from_static("3"));
        assert_eq!(retry_after(&headers), Some(Duration::from_secs(3)));
        let soon = chrono::Utc::now() + chrono::Duration::seconds(10);
        let date = soon.format("%a, %d %b %Y %H:%M:%S GMT").to_string();
        headers.insert(RETRY_AFTER, HeaderValue::from_str(&date).unwrap());
        let wait = retry_after(&headers).unwrap();
        assert!(wait > Duration::from_secs(8) && wait <= Duration::from_secs(10));
        headers.insert(RETRY_AFTER, HeaderValue::from_static("soon"));
        assert_eq!(retry_after(&headers), None);
    }
}
