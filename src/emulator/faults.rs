//! What stands between a request and the store: in-flight tracking, added latency, the bearer
//! token check, the per-minute quota and injected faults, plus the counters tests read back.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::Response;
use rand::rngs::ChaCha8Rng;
use rand::{RngExt, SeedableRng};

use super::routes::google_error;
use super::{AppState, EmulatorOptions};

/// Paths under here are the emulator's own and pass through untouched and uncounted.
pub const CONTROL_PREFIX: &str = "/_emulator/";

const QUOTA_WINDOW: Duration = Duration::from_secs(60);

/// Request counters, lock-free so that counting never slows the store down.
#[derive(Debug)]
pub struct Metrics {
    pub requests: AtomicU64,
    pub writes: AtomicU64,
    pub in_flight: AtomicU64,
    pub max_in_flight: AtomicU64,
    pub faults_injected: AtomicU64,
    pub quota_exceeded: AtomicU64,
    pub auth_failures: AtomicU64,
    /// Time from arrival to answer, summed over FHIR requests, in microseconds.
    pub answer_micros: AtomicU64,
    /// Responses by HTTP status code (index = code).
    statuses: Box<[AtomicU64]>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self {
            requests: AtomicU64::new(0),
            writes: AtomicU64::new(0),
            in_flight: AtomicU64::new(0),
            max_in_flight: AtomicU64::new(0),
            faults_injected: AtomicU64::new(0),
            quota_exceeded: AtomicU64::new(0),
            auth_failures: AtomicU64::new(0),
            answer_micros: AtomicU64::new(0),
            statuses: (0..600).map(|_| AtomicU64::new(0)).collect(),
        }
    }
}

impl Metrics {
    fn enter(&self) -> InFlight<'_> {
        let now = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        self.max_in_flight.fetch_max(now, Ordering::SeqCst);
        InFlight(self)
    }

    fn count_status(&self, status: StatusCode) {
        if let Some(counter) = self.statuses.get(usize::from(status.as_u16())) {
            counter.fetch_add(1, Ordering::Relaxed);
        }
    }

    pub fn status_counts(&self) -> BTreeMap<String, u64> {
        self.statuses
            .iter()
            .enumerate()
            .filter_map(|(code, n)| {
                let n = n.load(Ordering::Relaxed);
                (n > 0).then(|| (code.to_string(), n))
            })
            .collect()
    }

    /// Zeroes every counter; requests still in flight stay counted as such.
    pub fn reset(&self) {
        for counter in [
            &self.requests,
            &self.writes,
            &self.faults_injected,
            &self.quota_exceeded,
            &self.auth_failures,
            &self.answer_micros,
        ] {
            counter.store(0, Ordering::SeqCst);
        }
        for counter in self.statuses.iter() {
            counter.store(0, Ordering::SeqCst);
        }
        self.max_in_flight
            .store(self.in_flight.load(Ordering::SeqCst), Ordering::SeqCst);
    }
}

/// Counts a request as in flight until dropped, even if the connection goes away mid-request.
struct InFlight<'a>(&'a Metrics);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    /// Answer with this transient status and write nothing.
    Before(StatusCode),
    /// Write, then lose the answer.
    AfterWrite,
}

/// Seeded fault decisions and the quota window.
#[derive(Debug)]
pub struct Faults {
    seed: u64,
    rng: Mutex<ChaCha8Rng>,
    quota: Mutex<QuotaWindow>,
}

#[derive(Debug, Default)]
struct QuotaWindow {
    started: Option<Instant>,
    used: u32,
}

impl Faults {
    pub fn new(seed: u64) -> Self {
        Self {
            seed,
            rng: Mutex::new(ChaCha8Rng::seed_from_u64(seed)),
            quota: Mutex::default(),
        }
    }

    /// Back to the state right after start: same seed, fresh quota window.
    pub fn reset(&self) {
        *self.rng.lock().unwrap_or_else(PoisonError::into_inner) =
            ChaCha8Rng::seed_from_u64(self.seed);
        *self.quota.lock().unwrap_or_else(PoisonError::into_inner) = QuotaWindow::default();
    }

    /// One draw per write, so the sequence of decisions depends only on the seed.
    fn draw(&self, options: &EmulatorOptions) -> Option<Fault> {
        if options.fault_rate <= 0.0 && options.fault_after_write_rate <= 0.0 {
            return None;
        }
        let (roll, throttle): (f64, bool) = {
            let mut rng = self.rng.lock().unwrap_or_else(PoisonError::into_inner);
            (rng.random(), rng.random())
        };
        if roll < options.fault_rate {
            Some(Fault::Before(if throttle {
                StatusCode::TOO_MANY_REQUESTS
            } else {
                StatusCode::SERVICE_UNAVAILABLE
            }))
        } else if roll < options.fault_rate + options.fault_after_write_rate {
            Some(Fault::AfterWrite)
        } else {
            None
        }
    }

    /// Admits a request into the current one-minute window, or says how many seconds until
    /// the next window opens.
    fn admit(&self, limit: u32, now: Instant) -> Result<(), u64> {
        let mut window = self.quota.lock().unwrap_or_else(PoisonError::into_inner);
        let started = match window.started {
            Some(started) if now.duration_since(started) < QUOTA_WINDOW => started,
            _ => {
                *window = QuotaWindow {
                    started: Some(now),
                    used: 0,
                };
                now
            }
        };
        if window.used < limit {
            window.used += 1;
            Ok(())
        } else {
            let left = QUOTA_WINDOW.saturating_sub(now.duration_since(started));
            Err(left.as_secs_f64().ceil().max(1.0) as u64)
        }
    }
}

/// The middleware in front of every FHIR request.
pub async fn gate(State(state): State<Arc<AppState>>, request: Request, next: Next) -> Response {
    if request.uri().path().starts_with(CONTROL_PREFIX) {
        return next.run(request).await;
    }
    let arrived = Instant::now();
    let metrics = &state.metrics;
    let _in_flight = metrics.enter();
    metrics.requests.fetch_add(1, Ordering::Relaxed);
    if let Some(delays) = &state.delays {
        delays.until(arrived + state.options.latency).await;
    }
    let response = admit(&state, request, next).await;
    metrics.count_status(response.status());
    let micros = u64::try_from(arrived.elapsed().as_micros()).unwrap_or(u64::MAX);
    metrics.answer_micros.fetch_add(micros, Ordering::Relaxed);
    response
}

async fn admit(state: &AppState, request: Request, next: Next) -> Response {
    let options = &state.options;
    let metrics = &state.metrics;
    if let Some(token) = &options.require_token {
        let expected = format!("Bearer {}", token.expose());
        let sent = request.headers().get(header::AUTHORIZATION);
        if sent.is_none_or(|sent| sent.as_bytes() != expected.as_bytes()) {
            metrics.auth_failures.fetch_add(1, Ordering::Relaxed);
            let mut response = google_error(
                StatusCode::UNAUTHORIZED,
                "UNAUTHENTICATED",
                "Request had invalid authentication credentials. Expected OAuth 2 access token, \
                 login cookie or other valid authentication credential. See \
                 https://developers.google.com/identity/sign-in/web/devconsole-project.",
            );
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"https://accounts.google.com/\""),
            );
            return response;
        }
    }
    let quota = match options.quota_rpm {
        0 => Ok(()),
        limit => state.faults.admit(limit, Instant::now()),
    };
    if let Err(retry_after) = quota {
        metrics.quota_exceeded.fetch_add(1, Ordering::Relaxed);
        let mut response = google_error(
            StatusCode::TOO_MANY_REQUESTS,
            "RESOURCE_EXHAUSTED",
            &format!(
                "Quota exceeded for quota metric 'Number of FHIR operations' and limit \
                 'Number of FHIR operations per minute' of service \
                 'healthcare.googleapis.com' ({} per minute).",
                options.quota_rpm
            ),
        );
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(retry_after));
        return response;
    }
    if !matches!(*request.method(), Method::POST | Method::PUT) {
        return next.run(request).await;
    }
    metrics.writes.fetch_add(1, Ordering::Relaxed);
    match state.faults.draw(options) {
        None => next.run(request).await,
        Some(Fault::Before(status)) => {
            metrics.faults_injected.fetch_add(1, Ordering::Relaxed);
            transient(status)
        }
        Some(Fault::AfterWrite) => {
            let written = next.run(request).await;
            drop(written);
            metrics.faults_injected.fetch_add(1, Ordering::Relaxed);
            transient(StatusCode::SERVICE_UNAVAILABLE)
        }
    }
}

fn transient(status: StatusCode) -> Response {
    if status == StatusCode::TOO_MANY_REQUESTS {
        google_error(
            status,
            "RESOURCE_EXHAUSTED",
            "Resource has been exhausted (e.g. check quota). (injected by the emulator)",
        )
    } else {
        google_error(
            status,
            "UNAVAILABLE",
            "The service is currently unavailable. (injected by the emulator)",
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quota_window_resets_after_a_minute() {
        let faults = Faults::new(0);
        let t0 = Instant::now();
        assert!(faults.admit(2, t0).is_ok());
        assert!(faults.admit(2, t0 + Duration::from_secs(1)).is_ok());
        assert_eq!(faults.admit(2, t0 + Duration::from_millis(10_500)), Err(50));
        assert_eq!(faults.admit(2, t0 + Duration::from_millis(59_999)), Err(1));
        assert!(faults.admit(2, t0 + Duration::from_secs(60)).is_ok());
    }

    #[test]
    fn fault_draws_follow_the_seed_and_the_rates() {
        let options = EmulatorOptions {
            fault_rate: 0.2,
            fault_after_write_rate: 0.1,
            ..EmulatorOptions::default()
        };
        let draws = |faults: &Faults| (0..2000).map(|_| faults.draw(&options)).collect::<Vec<_>>();
        let faults = Faults::new(42);
        let first = draws(&faults);
        faults.reset();
        assert_eq!(first, draws(&faults));
        assert_ne!(first, draws(&Faults::new(43)));
        let before = first
            .iter()
            .filter(|f| matches!(f, Some(Fault::Before(_))))
            .count();
        let after = first
            .iter()
            .filter(|f| matches!(f, Some(Fault::AfterWrite)))
            .count();
        assert!((300..500).contains(&before), "{before}");
        assert!((120..280).contains(&after), "{after}");
        assert!(first.contains(&Some(Fault::Before(StatusCode::TOO_MANY_REQUESTS))));
        assert!(first.contains(&Some(Fault::Before(StatusCode::SERVICE_UNAVAILABLE))));
        assert_eq!(Faults::new(1).draw(&EmulatorOptions::default()), None);
    }
}
