//! What stands between a request and the store: in-flight tracking, added latency, the bearer
//! token check, the operations quota and injected faults, plus the counters tests read back.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::Response;
use rand::rngs::ChaCha8Rng;
use rand::{RngExt, SeedableRng};

use super::google_error::google_error;
use super::path::FhirPath;
use super::quota::{QuotaLimit, Refusal};
use super::{AppState, EmulatorOptions, wire};

/// Paths under here are the emulator's own and pass through untouched and uncounted.
pub const CONTROL_PREFIX: &str = "/_emulator/";

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

/// Seeded fault decisions.
#[derive(Debug)]
pub struct Faults {
    seed: u64,
    rng: Mutex<ChaCha8Rng>,
}

impl Faults {
    pub fn new(seed: u64) -> Self {
        Self {
            seed,
            rng: Mutex::new(ChaCha8Rng::seed_from_u64(seed)),
        }
    }

    /// Back to the state right after start: same seed, same sequence.
    pub fn reset(&self) {
        *self.rng.lock().unwrap_or_else(PoisonError::into_inner) =
            ChaCha8Rng::seed_from_u64(self.seed);
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
    let request = match options.quota_limit() {
        None => request,
        Some(limit) => {
            let (request, operations) = match count_operations(request).await {
                Ok(counted) => counted,
                Err(response) => return response,
            };
            if let Err(refusal) = state.quota.admit(limit, operations, Instant::now()) {
                metrics.quota_exceeded.fetch_add(1, Ordering::Relaxed);
                return quota_exceeded(options, limit, refusal);
            }
            request
        }
    };
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

/// How many operations the request is: one per entry of an executeBundle, one for any other
/// FHIR request, none for what is not FHIR (`fhirStores.get`). A bundle's body is read (and
/// gunzipped) here to count its entries and handed on decoded.
async fn count_operations(request: Request) -> Result<(Request, u64), Response> {
    let path = request.uri().path();
    let Some(target) = FhirPath::parse(path) else {
        return Ok((request, 0));
    };
    if request.method() != Method::POST || !target.is_base() {
        return Ok((request, 1));
    }
    #[derive(serde::Deserialize)]
    struct Entries {
        #[serde(default)]
        entry: Vec<serde::de::IgnoredAny>,
    }
    let (mut parts, body) = request.into_parts();
    let decoded = match wire::collect(body, wire::MAX_BUNDLE_BODY).await {
        Ok(raw) => wire::decode(raw, &parts.headers, wire::MAX_BUNDLE_BODY),
        Err(e) => Err(e),
    }
    .map_err(|e| wire::fhir_error(&e))?;
    // What is not a Bundle is still one request; the handler says what is wrong with it.
    let operations = serde_json::from_slice::<Entries>(&decoded)
        .map_or(1, |bundle| bundle.entry.len().max(1) as u64);
    parts.headers.remove(header::CONTENT_ENCODING);
    parts.headers.remove(header::CONTENT_LENGTH);
    Ok((Request::from_parts(parts, Body::from(decoded)), operations))
}

/// Google's quota answer: no `Retry-After` unless asked for.
fn quota_exceeded(options: &EmulatorOptions, limit: QuotaLimit, refusal: Refusal) -> Response {
    let mut response = google_error(
        StatusCode::TOO_MANY_REQUESTS,
        "RESOURCE_EXHAUSTED",
        &format!(
            "Quota exceeded for quota metric 'Number of FHIR operations' and limit \
             'Number of FHIR operations per minute per region' of service \
             'healthcare.googleapis.com' for consumer 'project_number:0'. (emulator quota: {} \
             operations per {} s window)",
            limit.operations,
            limit.window.as_secs_f64()
        ),
    );
    if options.quota_retry_after {
        response.headers_mut().insert(
            header::RETRY_AFTER,
            HeaderValue::from(refusal.retry_after_secs()),
        );
    }
    response
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
