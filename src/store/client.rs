//! One HTTP client for the whole run: sends a request to the store, retrying what is worth
//! retrying, and turns every other answer into an error a person can act on.

use std::borrow::Cow;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::Duration;

use anyhow::Context;
use bytes::Bytes;
use http::header::{AUTHORIZATION, CONTENT_TYPE, HeaderName, HeaderValue, LOCATION, USER_AGENT};
use http::{Method, StatusCode};
use reqwest::Url;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::auth::{Credentials, error_chain};
use super::limiter::{Limiter, Outcome};
use super::retry::{RetryPolicy, is_transient, retry_after};
use super::stats::RequestStats;
use crate::cli::HttpVersion;
use crate::fhir::FHIR_JSON;

/// A request relative to the FHIR base: `path` is "" (executeBundle), "Patient", or "Patient/1",
/// optionally followed by `?` and a search query that is already percent-encoded (or an
/// absolute URL beside the base, such as the store's settings).
#[derive(Debug, Clone)]
pub struct StoreRequest {
    pub method: Method,
    pub path: String,
    pub body: Bytes,
    /// `If-None-Exist` for conditional creates.
    pub if_none_exist: Option<String>,
    /// Operations the store's quota counts: one, or a bundle's entries.
    pub operations: u32,
}

impl StoreRequest {
    /// Whether this is an executeBundle request (a POST to the FHIR base).
    pub fn is_bundle(&self) -> bool {
        self.path.is_empty() && self.method == Method::POST
    }

    /// Whether sending it twice stores nothing twice: PUTs, reads, conditional creates and
    /// bundles (whose entries are conditional or PUTs) are; a bare POST is not, so after an
    /// answer that leaves it unknown whether the store wrote, its caller looks first.
    pub fn is_idempotent(&self) -> bool {
        !(self.method == Method::POST && !self.is_bundle() && self.if_none_exist.is_none())
    }
}

#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub location: Option<String>,
    pub body: Bytes,
    /// An earlier attempt may have been written before its answer was lost: a match found
    /// now may be this very request's doing.
    pub after_lost_answer: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub enum SendError {
    /// The store answered with a status that retrying will not change.
    Rejected { status: u16, message: String },
    /// Transient failures outlasted `--max-retries`.
    GaveUp { attempts: u32, last: String },
    /// The store refused the credential; the run stops.
    Unauthorized { status: u16, message: String },
    /// The request could not be sent as it is (a URL or header it cannot carry, no
    /// credential to be had): no store answered, so there is no status.
    Unsendable { message: String },
    /// The run is stopping, so this request was not sent (or not retried).
    Cancelled,
    /// A bundle throttled again and again while nothing as large got through: the store's
    /// quota window is likely smaller than the bundle, which then never fits. Sent again in
    /// smaller parts, it does.
    OutgrewQuota {
        operations: u32,
        largest_admitted: u32,
    },
}

impl SendError {
    /// HTTP status for `--failed` and the summary, when the store gave one.
    pub fn status(&self) -> Option<u16> {
        match self {
            Self::Rejected { status, .. } | Self::Unauthorized { status, .. } => Some(*status),
            Self::OutgrewQuota { .. } => Some(429),
            Self::GaveUp { .. } | Self::Unsendable { .. } | Self::Cancelled => None,
        }
    }
}

impl std::fmt::Display for SendError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Rejected { status, message } | Self::Unauthorized { status, message } => {
                write!(f, "HTTP {status}: {message}")
            }
            Self::GaveUp { attempts, last } => {
                write!(f, "gave up after {attempts} attempts; last: {last}")
            }
            Self::Unsendable { message } => write!(f, "not sent: {message}"),
            Self::Cancelled => f.write_str("not sent: the run was stopped"),
            Self::OutgrewQuota {
                operations,
                largest_admitted,
            } => write!(
                f,
                "throttled {THROTTLES_BEFORE_SPLIT} times: a bundle of {operations} \
                 operations never fits the store's quota window (the largest request it \
                 admitted in this run had {largest_admitted}); --bundle-size {} or less fits",
                operations / 2
            ),
        }
    }
}

/// Why the run stopped early, kept by whoever noticed first.
#[derive(Debug, Clone)]
pub struct Fatal(pub String);

pub struct StoreClient {
    /// reqwest's pooled client: keep-alive connections, one per worker over HTTP/1.1, or
    /// streams on one connection over HTTP/2.
    http: reqwest::Client,
    /// The FHIR base without a trailing slash or query; request URIs are this plus a path.
    base: String,
    /// The same, parsed once: each request's URL is a copy with its path segments added,
    /// which costs far less than parsing a whole URL per request.
    base_url: Url,
    /// A query the base URL carried (`?api_key=...`): it goes on every request, after the
    /// request's own path.
    base_query: Option<String>,
    timeout: Duration,
    credentials: Credentials,
    retry: RetryPolicy,
    /// The adaptive limit every worker passes: it rides the store's quota.
    limiter: Arc<Limiter>,
    max_throttle_wait: Duration,
    /// Cancelled on Ctrl-C or on a fatal answer (401/403): no new request starts after it.
    stop: CancellationToken,
    fatal: std::sync::Mutex<Option<Fatal>>,
    /// Whether the store has answered anything yet: until it has, a refused connection
    /// means a wrong address rather than a blip.
    reached: AtomicBool,
    /// The most operations a request of this run carried past the quota: a bundle larger than
    /// this that keeps being throttled may be larger than the whole quota window.
    largest_admitted: AtomicU32,
}

pub struct ClientOptions {
    pub workers: u32,
    pub timeout: Duration,
    pub retry: RetryPolicy,
    pub limiter: Arc<Limiter>,
    /// How long one request may stay throttled before it counts as failed.
    pub max_throttle_wait: Duration,
    pub http: HttpVersion,
    pub network: Network,
}

/// Connection attempts, before the store has answered anything, after which it is taken to
/// be unreachable.
const UNREACHABLE_AFTER: u32 = 3;

/// Throttled answers after which a bundle larger than any the store admitted is
/// handed back to be split: a quota window smaller than the bundle would refuse it forever,
/// while the advice for a spent quota (fewer workers, a lower rate) would not help.
pub const THROTTLES_BEFORE_SPLIT: u32 = 3;

/// How every request of a run reaches the network, the store's and the token endpoints'
/// alike: the proxies the environment names (HTTPS_PROXY, HTTP_PROXY, ALL_PROXY, NO_PROXY),
/// the system's root certificates (webpki's too) plus `--ca-file`, and no redirects.
#[derive(Debug, Clone, Default)]
pub struct Network {
    /// `--ca-file`: PEM certificates to trust besides the system's (a corporate proxy's CA).
    pub ca_file: Option<PathBuf>,
}

impl Network {
    pub fn builder(&self) -> anyhow::Result<reqwest::ClientBuilder> {
        let mut builder = reqwest::Client::builder()
            .use_rustls_tls()
            // A store that redirects is misconfigured, and a redirect could carry the
            // token elsewhere: the 3xx is reported instead.
            .redirect(reqwest::redirect::Policy::none())
            .tcp_nodelay(true)
            .connect_timeout(Duration::from_secs(10));
        // With no proxy named, skipping reqwest's proxy matcher saves each plain-http request
        // two look-ups (macOS and Windows keep it: their system settings may name one).
        if !cfg!(any(target_os = "macos", target_os = "windows")) && !proxy_in_environment() {
            builder = builder.no_proxy();
        }
        if let Some(path) = &self.ca_file {
            for certificate in read_ca_file(path)? {
                builder = builder.add_root_certificate(certificate);
            }
        }
        Ok(builder)
    }
}

fn proxy_in_environment() -> bool {
    ["HTTPS_PROXY", "HTTP_PROXY", "ALL_PROXY"]
        .iter()
        .any(|name| {
            [name.to_string(), name.to_lowercase()]
                .iter()
                .any(|name| std::env::var_os(name).is_some_and(|v| !v.is_empty()))
        })
}

fn read_ca_file(path: &std::path::Path) -> anyhow::Result<Vec<reqwest::Certificate>> {
    let pem = std::fs::read(path).map_err(|e| {
        crate::exit::usage(format!("cannot read --ca-file {}: {e}", path.display()))
    })?;
    let certificates = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| {
        crate::exit::usage(format!(
            "--ca-file {} is not PEM certificates: {e}",
            path.display()
        ))
    })?;
    if certificates.is_empty() {
        return Err(crate::exit::usage(format!(
            "--ca-file {} holds no PEM certificate (-----BEGIN CERTIFICATE-----)",
            path.display()
        )));
    }
    Ok(certificates)
}

const USER_AGENT_VALUE: &str = concat!("fhirgen/", env!("CARGO_PKG_VERSION"));
const X_GOOG_USER_PROJECT: HeaderName = HeaderName::from_static("x-goog-user-project");

const PREFER: HeaderName = HeaderName::from_static("prefer");
const IF_NONE_EXIST: HeaderName = HeaderName::from_static("if-none-exist");
impl StoreClient {
    /// `base` is an http(s) URL without credentials in it (the caller turns those into
    /// `credentials`).
    pub fn new(
        base: &str,
        credentials: Credentials,
        options: ClientOptions,
        stop: CancellationToken,
    ) -> anyhow::Result<Self> {
        let (base, base_query) = match base.split_once('?') {
            Some((base, query)) => (base, Some(query.to_owned()).filter(|q| !q.is_empty())),
            None => (base, None),
        };
        let base = base.trim_end_matches('/').to_owned();
        let base_url = Url::parse(&base)
            .ok()
            .filter(|url| !url.cannot_be_a_base())
            .with_context(|| {
                format!(
                    "`{}` is not a URL an HTTP request can go to",
                    crate::secret::redact_url(&base)
                )
            })?;
        let builder = options
            .network
            .builder()?
            .connect_timeout(Duration::from_secs(10).min(options.timeout))
            .pool_max_idle_per_host(options.workers as usize);
        // Over TLS the versions are offered by ALPN; plain http is HTTP/1.1 unless told.
        let (builder, http1_only) = match options.http {
            HttpVersion::Auto => (builder, base_url.scheme() == "http"),
            HttpVersion::Http1 => (builder.http1_only(), true),
            HttpVersion::Http2 => (builder.http2_prior_knowledge(), false),
        };
        // reqwest's own retries only resend HTTP/2 streams the server refused unprocessed; over
        // HTTP/1.1 they never apply, yet keeping them copies every request's headers.
        let builder = if http1_only {
            builder.retry(reqwest::retry::never().max_retries_per_request(0))
        } else {
            builder
        };
        let http = builder.build().context("cannot set up the HTTP client")?;
        Ok(Self {
            http,
            base,
            base_url,
            base_query,
            timeout: options.timeout,
            credentials,
            retry: options.retry,
            limiter: options.limiter,
            max_throttle_wait: options.max_throttle_wait,
            stop,
            fatal: std::sync::Mutex::new(None),
            reached: AtomicBool::new(false),
            largest_admitted: AtomicU32::new(0),
        })
    }

    /// The reason the run stopped early, if it was not Ctrl-C.
    pub fn fatal(&self) -> Option<Fatal> {
        self.fatal.lock().expect("fatal lock").clone()
    }

    /// The FHIR base requests go to, without a trailing slash.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// `path` ("Patient", "Patient/1", "" or "Patient?identifier=..." with a query already
    /// encoded for a URL) under the base; an absolute URL (the store's own settings, beside
    /// its FHIR base) as it is.
    fn uri(&self, path: &str) -> Result<Url, String> {
        if path.starts_with("https://") || path.starts_with("http://") {
            return Url::parse(path).map_err(|e| format!("`{path}` is not a URL: {e}"));
        }
        let (segments, query) = match path.split_once('?') {
            Some((segments, query)) => (segments, Some(query)),
            None => (path, None),
        };
        let mut uri = self.base_url.clone();
        uri.path_segments_mut()
            .map_err(|()| format!("cannot make a request URL for `{path}`"))?
            .extend(segments.split('/').filter(|s| !s.is_empty()));
        let queries: Vec<&str> = [self.base_query.as_deref(), query]
            .into_iter()
            .flatten()
            .filter(|query| !query.is_empty())
            .collect();
        if !queries.is_empty() {
            uri.set_query(Some(&queries.join("&")));
        }
        Ok(uri)
    }

    /// Sends `request`, retrying transient failures with backoff; every attempt lands in `stats`.
    /// Throttling is not failure: a throttled request waits (with every other) for as long as
    /// `--max-throttle-wait`, without spending its retries.
    pub async fn send(
        &self,
        request: &StoreRequest,
        stats: &mut RequestStats,
    ) -> Result<Reply, SendError> {
        let uri = self
            .uri(&request.path)
            .map_err(|message| SendError::Unsendable { message })?;
        let mut tries = Tries::new(self.retry.delays());
        loop {
            // The run may stop while this worker waits for its turn: then it sends nothing.
            let permit = tokio::select! {
                // Usually no wait at all: try it first.
                biased;
                permit = self.limiter.acquire(request.operations) => permit,
                _ = self.stop.cancelled() => return Err(SendError::Cancelled),
            };
            if self.stop.is_cancelled() {
                return Err(SendError::Cancelled);
            }
            tries.count += 1;
            if tries.count > 1 {
                stats.retries += 1;
            }
            let started = Instant::now();
            let outcome = self.attempt(&uri, request).await;
            let took = started.elapsed();
            self.record(request, &outcome, tries.count, took, stats);
            let told_to_wait = match &outcome {
                Ok(answer) => answer.retry_after.unwrap_or_default(),
                Err(_) => Duration::ZERO,
            };
            let throttle_wait = self.limiter.done(permit, limiter_outcome(&outcome));
            let wait = match verdict(outcome, &self.attempt_context(request, tries.count)) {
                Verdict::Done(reply) => {
                    self.largest_admitted
                        .fetch_max(request.operations, Ordering::Relaxed);
                    return Ok(tries.reply(reply));
                }
                Verdict::Throttled { message } => {
                    tries.throttles += 1;
                    self.outgrew_quota(request, tries.throttles)?;
                    tries.throttled(started, self.max_throttle_wait, throttle_wait, &message)?
                }
                Verdict::Refused { status, message } => {
                    if status == 401
                        && !tries.renewed_token
                        && self.credentials.renewed_after_rejection().await
                    {
                        tries.renewed_token = true;
                        continue;
                    }
                    return Err(self.unauthorized(status, message));
                }
                Verdict::Retry {
                    last,
                    at_least,
                    maybe_written,
                } => tries.failed(request, last, at_least, maybe_written)?,
                Verdict::Fail(error) => return Err(error),
                Verdict::StopRun { reason, error } => return Err(self.fail_run(reason, error)),
            };
            tokio::select! {
                _ = tokio::time::sleep(tries.shortened(wait, took.max(told_to_wait))) => {}
                _ = self.stop.cancelled() => return Err(SendError::Cancelled),
            }
        }
    }

    /// `Err` when `request`, throttled `throttles` times, is a bundle larger than any
    /// request the store admitted in this run: the caller sends it again in smaller parts.
    fn outgrew_quota(&self, request: &StoreRequest, throttles: u32) -> Result<(), SendError> {
        let largest_admitted = self.largest_admitted.load(Ordering::Relaxed);
        if throttles >= THROTTLES_BEFORE_SPLIT
            && request.operations > 1
            && request.operations > largest_admitted
        {
            return Err(SendError::OutgrewQuota {
                operations: request.operations,
                largest_admitted,
            });
        }
        Ok(())
    }

    /// What the verdict on attempt number `attempt` of `request` depends on besides its outcome.
    fn attempt_context<'a>(&'a self, request: &StoreRequest, attempt: u32) -> AttemptContext<'a> {
        AttemptContext {
            attempt,
            bundle: request.is_bundle(),
            store_reached: self.reached.load(Ordering::Relaxed),
            timeout: self.timeout,
            base: &self.base,
            credentials: &self.credentials,
        }
    }

    /// Counts and logs one attempt's outcome; an answer of any kind shows the store is there.
    fn record(
        &self,
        request: &StoreRequest,
        outcome: &Result<Answer, AttemptError>,
        attempt: u32,
        took: Duration,
        stats: &mut RequestStats,
    ) {
        // The path is shown only when the line is logged: each costs an allocation.
        let method = &request.method;
        match outcome {
            Ok(answer) => {
                let status = answer.status.as_u16();
                stats.record_answer(status, took);
                tracing::info!(
                    "{method} {} -> {status} in {:.1} ms (attempt {attempt})",
                    shown_path(&request.path),
                    took.as_secs_f64() * 1e3
                );
                self.reached.store(true, Ordering::Relaxed);
            }
            Err(AttemptError::Timeout) => {
                stats.record_error("timeout");
                tracing::info!(
                    "{method} {} -> no answer within {:?} (attempt {attempt})",
                    shown_path(&request.path),
                    self.timeout
                );
            }
            Err(AttemptError::Http(error)) => {
                let kind = error.cause().label();
                stats.record_error(kind);
                tracing::info!(
                    "{method} {} -> {kind} (attempt {attempt})",
                    shown_path(&request.path)
                );
            }
            Err(AttemptError::Auth(_) | AttemptError::Unsendable(_)) => {}
        }
    }

    async fn attempt(&self, url: &Url, request: &StoreRequest) -> Result<Answer, AttemptError> {
        let mut http_request = reqwest::Request::new(request.method.clone(), url.clone());
        *http_request.body_mut() = Some(request.body.clone().into());
        let headers = http_request.headers_mut();
        // Room for this request's six and the three the HTTP stack adds (accept, host,
        // content-length): the map's copies keep its table, so none of them grows it again.
        headers.reserve(9);
        headers.insert(USER_AGENT, HeaderValue::from_static(USER_AGENT_VALUE));
        headers.insert(CONTENT_TYPE, HeaderValue::from_static(FHIR_JSON));
        // Only the Location is needed back; echoing every resource costs both sides.
        headers.insert(PREFER, HeaderValue::from_static("return=minimal"));
        if let Some(query) = &request.if_none_exist {
            let value = HeaderValue::from_str(query).map_err(|_| {
                AttemptError::Unsendable(format!(
                    "the If-None-Exist query `{query}` cannot go in an HTTP header"
                ))
            })?;
            headers.insert(IF_NONE_EXIST, value);
        }
        if let Some(project) = self.credentials.quota_project() {
            headers.insert(X_GOOG_USER_PROJECT, project.clone());
        }
        if let Some(auth) = self
            .credentials
            .header()
            .await
            .map_err(|e| AttemptError::Auth(format!("{e:#}")))?
        {
            http_request.headers_mut().insert(AUTHORIZATION, auth);
        }
        let exchange = async {
            let response = self.http.execute(http_request).await?;
            let status = response.status();
            let location = response
                .headers()
                .get(LOCATION)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            let retry_after = retry_after(response.headers());
            let body = response.bytes().await?;
            Ok::<_, reqwest::Error>(Answer {
                status,
                location,
                retry_after,
                body,
            })
        };
        match tokio::time::timeout(self.timeout, exchange).await {
            Ok(Ok(answer)) if answer.status.is_success() => Ok(answer),
            Ok(Ok(answer)) => Ok(self.explained_failure(answer)),
            Ok(Err(error)) => Err(AttemptError::Http(HttpError(error))),
            Err(_) => Err(AttemptError::Timeout),
        }
    }

    /// A failure's body as it may be shown: a redirect says where it pointed, and nothing the
    /// credential holds survives (a store may echo the Authorization header).
    fn explained_failure(&self, mut answer: Answer) -> Answer {
        if answer.status.is_redirection() {
            let to = answer.location.as_deref().map_or_else(
                || "nowhere (no Location)".to_owned(),
                |location| shown_location(&self.base_url, location),
            );
            answer.body = Bytes::from(format!(
                "the store redirected to {to}; fhirgen does not follow redirects: put the final \
                 address in --fhir-url or --endpoint"
            ));
        }
        let text = String::from_utf8_lossy(&answer.body);
        if let Cow::Owned(redacted) = self.credentials.redact(&text) {
            answer.body = Bytes::from(redacted);
        }
        answer
    }

    /// `text` with every form of the credential, and of the proxy's, cut out: for what a
    /// store said that is about to be shown or kept.
    pub fn redact(&self, text: &str) -> String {
        self.credentials.redact(text).into_owned()
    }

    fn unauthorized(&self, status: u16, message: String) -> SendError {
        let explanation = format!(
            "the store answered {status} to {}: {message}; {}",
            self.credentials.source(),
            self.credentials.remedy(status, &message)
        );
        self.fail_run(explanation, SendError::Unauthorized { status, message })
    }

    /// Records why the run must stop and stops it: no worker starts another request.
    fn fail_run(&self, reason: String, error: SendError) -> SendError {
        let mut fatal = self.fatal.lock().expect("fatal lock");
        if fatal.is_none() {
            *fatal = Some(Fatal(reason));
        }
        self.stop.cancel();
        error
    }
}

/// A request's path as a log line shows it: relative paths as they are (they hold types, ids
/// and identifier searches), absolute ones with anything secret in them masked.
fn shown_path(path: &str) -> String {
    if path.starts_with("http://") || path.starts_with("https://") {
        crate::secret::redact_url(path)
    } else {
        format!("/{path}")
    }
}

/// What one attempt's outcome means for its request, decided apart from acting on it.
#[derive(Debug)]
enum Verdict {
    /// The store took it.
    Done(Reply),
    /// 429: the request waits as the limiter says, without spending a retry.
    Throttled { message: String },
    /// 401 or 403: the credential was refused (a 401 may be renewed once), and the run stops.
    Refused { status: u16, message: String },
    /// Failed in a way that may heal: spends a retry, waits its backoff (or longer if told).
    Retry {
        last: String,
        at_least: Duration,
        /// The store may have written it before failing.
        maybe_written: bool,
    },
    /// Retrying will not change it: this request fails.
    Fail(SendError),
    /// Nothing will get through: the run stops, for `reason`.
    StopRun { reason: String, error: SendError },
}

/// What the verdict on an attempt depends on besides its outcome.
struct AttemptContext<'a> {
    /// 1 for a request's first attempt.
    attempt: u32,
    /// An executeBundle request: a transaction that met another writer goes again.
    bundle: bool,
    /// Whether the store has answered anything yet in this run.
    store_reached: bool,
    timeout: Duration,
    /// The FHIR base, for saying what cannot be reached.
    base: &'a str,
    /// To cut the credential out of what the store said.
    credentials: &'a Credentials,
}

impl AttemptContext<'_> {
    /// The store's own words from a failure's body, with every form of a secret cut out after
    /// the decoding too (the body was cut before it).
    fn said(&self, body: &[u8]) -> String {
        self.credentials.redact(&store_message(body)).into_owned()
    }
}

/// Sorts one attempt's outcome into what to do next: done, wait, retry, or fail.
fn verdict(outcome: Result<Answer, AttemptError>, context: &AttemptContext) -> Verdict {
    match outcome {
        Ok(answer) => answer_verdict(answer, context),
        Err(AttemptError::Unsendable(message)) => Verdict::Fail(SendError::Unsendable { message }),
        Err(AttemptError::Auth(message)) => Verdict::StopRun {
            reason: message.clone(),
            error: SendError::Unsendable { message },
        },
        Err(AttemptError::Timeout) => Verdict::Retry {
            last: format!("timeout: no answer within {:?}", context.timeout),
            at_least: Duration::ZERO,
            maybe_written: true,
        },
        Err(AttemptError::Http(error)) => {
            connection_verdict(error.cause(), &error_chain(&*error), context)
        }
    }
}

/// What the store's answer means: its status decides, its body says why.
fn answer_verdict(answer: Answer, context: &AttemptContext) -> Verdict {
    let code = answer.status.as_u16();
    if answer.status.is_success() {
        return Verdict::Done(Reply {
            status: code,
            location: answer.location,
            body: answer.body,
            after_lost_answer: false,
        });
    }
    let message = context.said(&answer.body);
    match code {
        429 => Verdict::Throttled { message },
        401 | 403 => Verdict::Refused {
            status: code,
            message,
        },
        // A plain-http request forwarded by a proxy that wants credentials.
        407 => {
            let last = format!("HTTP 407: {message}");
            Verdict::StopRun {
                reason: format!("{PROXY_REFUSED} ({last}): {PROXY_REMEDY}"),
                error: SendError::GaveUp {
                    attempts: context.attempt,
                    last,
                },
            }
        }
        // A transaction that met another writer (Google's ABORTED) goes again.
        409 if context.bundle => retry_answer(code, &message, answer.retry_after),
        code if is_transient(code) => retry_answer(code, &message, answer.retry_after),
        code => Verdict::Fail(SendError::Rejected {
            status: code,
            message,
        }),
    }
}

fn retry_answer(code: u16, message: &str, retry_after: Option<Duration>) -> Verdict {
    Verdict::Retry {
        last: format!("HTTP {code}: {message}"),
        at_least: retry_after.unwrap_or_default(),
        maybe_written: true,
    }
}

/// What a failed connection or exchange (`detail` says how) means: retried, unless nothing
/// will get through.
fn connection_verdict(cause: Cause, detail: &str, context: &AttemptContext) -> Verdict {
    let last = format!("{}: {detail}", cause.label());
    // Nothing will work: say so now rather than retry every resource.
    let hopeless = cause.is_final()
        || (cause == Cause::Connect
            && context.attempt >= UNREACHABLE_AFTER
            && !context.store_reached);
    if hopeless {
        return Verdict::StopRun {
            reason: format!("cannot reach {}: {last}; {}", context.base, cause.remedy()),
            error: SendError::GaveUp {
                attempts: context.attempt,
                last,
            },
        };
    }
    Verdict::Retry {
        last,
        at_least: Duration::ZERO,
        // Refused connections never carried the request.
        maybe_written: cause != Cause::Connect,
    }
}

/// What the limiter learns from an attempt. A pattern of 503s (an overloaded store) slows
/// everyone, as a quota does; a lone one costs only its request a retry, whose wait is the
/// retry's backoff.
fn limiter_outcome(outcome: &Result<Answer, AttemptError>) -> Outcome {
    match outcome {
        Ok(answer) if matches!(answer.status.as_u16(), 429 | 503) => {
            Outcome::Throttled(answer.retry_after)
        }
        Ok(_) => Outcome::Answered,
        Err(_) => Outcome::Lost,
    }
}

/// One request's attempts so far: what decides whether, and how long, the next one waits.
struct Tries<D> {
    /// Attempts made, the one under way included.
    count: u32,
    /// The backoffs still left to spend.
    delays: D,
    renewed_token: bool,
    throttled_since: Option<Instant>,
    /// Throttled answers to this request so far.
    throttles: u32,
    /// An earlier attempt may have been written before its answer was lost.
    maybe_written_before: bool,
    waited: bool,
}

impl<D: Iterator<Item = Duration>> Tries<D> {
    fn new(delays: D) -> Self {
        Self {
            count: 0,
            delays,
            renewed_token: false,
            throttled_since: None,
            throttles: 0,
            maybe_written_before: false,
            waited: false,
        }
    }

    fn reply(&self, reply: Reply) -> Reply {
        Reply {
            after_lost_answer: self.maybe_written_before,
            ..reply
        }
    }

    /// How long a throttled attempt (begun at `started`) waits, as the limiter said; it gives
    /// up once the request has been throttled for `max_wait`.
    fn throttled(
        &mut self,
        started: Instant,
        max_wait: Duration,
        wait: Duration,
        message: &str,
    ) -> Result<Duration, SendError> {
        let since = *self.throttled_since.get_or_insert(started);
        if since.elapsed() >= max_wait {
            return Err(SendError::GaveUp {
                attempts: self.count,
                last: format!(
                    "throttled by the store for {} (HTTP 429: {message}); the quota is too \
                     small for this load or shared with other work: lower --workers or \
                     --rate, ask for more quota, or raise --max-throttle-wait",
                    humantime::format_duration(Duration::from_secs(since.elapsed().as_secs())),
                ),
            });
        }
        tracing::info!("throttled (429): this request waits {wait:?}, then the limiter");
        Ok(wait)
    }

    /// How long a failed attempt waits before the next: its backoff, or longer if told; it
    /// gives up when the retries are spent, or when a request that is not idempotent may
    /// have been written.
    fn failed(
        &mut self,
        request: &StoreRequest,
        last: String,
        at_least: Duration,
        maybe_written: bool,
    ) -> Result<Duration, SendError> {
        if maybe_written && !request.is_idempotent() {
            return Err(SendError::GaveUp {
                attempts: self.count,
                last,
            });
        }
        let Some(backoff) = self.delays.next() else {
            return Err(SendError::GaveUp {
                attempts: self.count,
                last,
            });
        };
        self.maybe_written_before |= maybe_written;
        let wait = backoff.max(at_least);
        tracing::info!("retrying in {wait:?}: {last}");
        Ok(wait)
    }

    /// A request's first refusal, from a store that takes the others (a pattern would hold
    /// everyone in the limiter), goes again about as soon as an answer takes (`answer_time`):
    /// a flaky backend costs retries, not time. Later ones wait their backoff in full.
    fn shortened(&mut self, wait: Duration, answer_time: Duration) -> Duration {
        let first = !self.waited;
        self.waited = true;
        if first { wait.min(answer_time) } else { wait }
    }
}

/// What one attempt got back: only the parts a writer or a retry needs.
struct Answer {
    status: StatusCode,
    location: Option<String>,
    retry_after: Option<Duration>,
    body: Bytes,
}

enum AttemptError {
    /// No (whole) answer within `--timeout`.
    Timeout,
    Http(HttpError),
    /// No credential could be had: the run stops.
    Auth(String),
    /// This request cannot be sent as it is.
    Unsendable(String),
}

/// A failure of the connection or of the exchange on it.
struct HttpError(reqwest::Error);

const PROXY_REFUSED: &str = "the proxy refused fhirgen's credentials";
const PROXY_REMEDY: &str = "check the user:password in HTTPS_PROXY / HTTP_PROXY / ALL_PROXY (percent-encode any @ : / in them)";

/// What a connection failure was, as far as retrying it goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cause {
    /// TLS refused the connection (a certificate, or a server that speaks no TLS).
    Tls,
    /// The proxy answered the CONNECT with 407.
    ProxyRefused,
    /// The connection could not be made (refused, reset, unresolvable).
    Connect,
    /// The exchange broke on a connection that was made.
    Other,
}

impl Cause {
    fn label(self) -> &'static str {
        match self {
            Cause::Tls => "TLS handshake failed",
            Cause::ProxyRefused => PROXY_REFUSED,
            Cause::Connect => "connection refused or reset",
            Cause::Other => "connection error",
        }
    }

    /// No retry will change it: the run stops at the first.
    fn is_final(self) -> bool {
        matches!(self, Cause::Tls | Cause::ProxyRefused)
    }

    /// What to check when this failure means nothing will get through.
    fn remedy(self) -> &'static str {
        match self {
            Cause::ProxyRefused => PROXY_REMEDY,
            Cause::Tls => {
                "check that the URL's scheme matches the server (https for TLS), that the \
                 server's certificate is valid for its name, and that its CA is trusted"
            }
            Cause::Connect | Cause::Other => {
                "check the URL (host and port), that the store is up, and any proxy or \
                 firewall between"
            }
        }
    }
}

impl HttpError {
    fn cause(&self) -> Cause {
        if self.is_tls() {
            Cause::Tls
        } else if self.is_proxy_refusal() {
            Cause::ProxyRefused
        } else if self.0.is_connect() {
            Cause::Connect
        } else {
            Cause::Other
        }
    }

    /// Whether the proxy answered the CONNECT with 407. The tunnel's error type is private to
    /// hyper-util, so its words are what can be matched.
    fn is_proxy_refusal(&self) -> bool {
        error_chain(&self.0).contains("proxy authorization required")
    }

    /// Whether TLS refused the connection (a certificate, or a server that speaks no TLS).
    fn is_tls(&self) -> bool {
        let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(&self.0);
        while let Some(error) = cause {
            if error.is::<rustls::Error>() {
                return true;
            }
            // An io::Error's source() skips the error it wraps: look inside it instead.
            cause = match error
                .downcast_ref::<std::io::Error>()
                .and_then(std::io::Error::get_ref)
            {
                Some(inner) => Some(inner),
                None => error.source(),
            };
        }
        false
    }
}

impl std::ops::Deref for HttpError {
    type Target = dyn std::error::Error + 'static;

    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

/// The store's own words from an error body: OperationOutcome diagnostics or details, Google's
/// `{"error":{"message"}}`, or the start of whatever text came back.
pub fn store_message(body: &[u8]) -> String {
    if let Ok(json) = serde_json::from_slice::<serde_json::Value>(body) {
        if let Some(issues) = json["issue"].as_array() {
            let texts: Vec<&str> = issues
                .iter()
                .filter_map(|issue| {
                    issue["diagnostics"]
                        .as_str()
                        .or_else(|| issue["details"]["text"].as_str())
                })
                .collect();
            if !texts.is_empty() {
                return texts.join("; ");
            }
        }
        if let Some(message) = json["error"]["message"].as_str() {
            return with_google_reasons(message, &json["error"]["details"]);
        }
    }
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    if text.is_empty() {
        return "(no message)".to_owned();
    }
    let mut end = text.len().min(300);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_owned()
}

/// Google's error `details` carry an ErrorInfo whose `reason` (SERVICE_DISABLED,
/// ACCESS_TOKEN_SCOPE_INSUFFICIENT, IAM_PERMISSION_DENIED, ...) tells one 403 from another.
fn with_google_reasons(message: &str, details: &serde_json::Value) -> String {
    let reasons: Vec<&str> = details
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|detail| detail["reason"].as_str())
        .filter(|reason| !message.contains(reason))
        .collect();
    if reasons.is_empty() {
        message.to_owned()
    } else {
        format!("{message} [{}]", reasons.join(", "))
    }
}

/// Where a redirect pointed (a relative Location is resolved against the FHIR base), without
/// any user name, password or query it carried.
fn shown_location(base: &Url, location: &str) -> String {
    match base.join(location) {
        Ok(mut url) => {
            let _ = url.set_username("");
            let _ = url.set_password(None);
            url.set_query(None);
            url.to_string()
        }
        Err(_) => "an address that is not a URL".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_bundle_larger_than_any_admitted_outgrows_the_quota() {
        let client = client_for("http://127.0.0.1:1/fhir");
        let bundle = |operations| StoreRequest {
            method: Method::POST,
            path: String::new(),
            body: Bytes::new(),
            if_none_exist: None,
            operations,
        };
        let split = THROTTLES_BEFORE_SPLIT;
        assert_eq!(client.outgrew_quota(&bundle(40), split - 1), Ok(()));
        assert_eq!(
            client.outgrew_quota(&bundle(40), split),
            Err(SendError::OutgrewQuota {
                operations: 40,
                largest_admitted: 0
            })
        );
        // One operation cannot be smaller: the quota is spent, however long it takes.
        assert_eq!(client.outgrew_quota(&bundle(1), 10 * split), Ok(()));
        // As large a request got through: the quota is spent, not smaller than the bundle.
        client.largest_admitted.store(40, Ordering::Relaxed);
        assert_eq!(client.outgrew_quota(&bundle(40), 10 * split), Ok(()));
        assert!(client.outgrew_quota(&bundle(41), split).is_err());
    }

    #[test]
    fn store_messages() {
        let outcome = br#"{"resourceType":"OperationOutcome","issue":[{"severity":"error","code":"invalid","diagnostics":"bad date"},{"details":{"text":"missing subject"}}]}"#;
        assert_eq!(store_message(outcome), "bad date; missing subject");
        let google =
            br#"{"error":{"code":429,"message":"Quota exceeded","status":"RESOURCE_EXHAUSTED"}}"#;
        assert_eq!(store_message(google), "Quota exceeded");
        let disabled = br#"{"error":{"code":403,"message":"Cloud Healthcare API has not been used in project 1 before or it is disabled.","status":"PERMISSION_DENIED","details":[{"@type":"type.googleapis.com/google.rpc.ErrorInfo","reason":"SERVICE_DISABLED","domain":"googleapis.com"}]}}"#;
        assert_eq!(
            store_message(disabled),
            "Cloud Healthcare API has not been used in project 1 before or it is disabled. [SERVICE_DISABLED]"
        );
        assert_eq!(store_message(b"  "), "(no message)");
        assert_eq!(store_message(b"<html>oops</html>"), "<html>oops</html>");
    }

    fn client_for(base: &str) -> StoreClient {
        let options = ClientOptions {
            workers: 1,
            timeout: Duration::from_secs(5),
            retry: RetryPolicy::new(0, Duration::from_millis(1)),
            limiter: Arc::new(Limiter::new(Default::default())),
            max_throttle_wait: Duration::from_secs(1),
            http: HttpVersion::Auto,
            network: Network::default(),
        };
        StoreClient::new(base, Credentials::none(), options, CancellationToken::new()).unwrap()
    }

    #[test]
    fn request_urls_escape_ids_and_keep_the_base_query() {
        let client = client_for("http://127.0.0.1:1/r4/fhir/");
        let url = |path: &str| client.uri(path).unwrap().to_string();
        assert_eq!(url("Patient"), "http://127.0.0.1:1/r4/fhir/Patient");
        assert_eq!(url(""), "http://127.0.0.1:1/r4/fhir");
        // An id read from a file can hold anything: it stays one segment, and `..` climbs nowhere.
        assert_eq!(
            url("Patient/a b#c%d?"),
            "http://127.0.0.1:1/r4/fhir/Patient/a%20b%23c%25d"
        );
        assert_eq!(url("Patient/../x"), "http://127.0.0.1:1/r4/fhir/Patient/x");
        assert_eq!(
            url("Patient?identifier=urn:x%7C1"),
            "http://127.0.0.1:1/r4/fhir/Patient?identifier=urn:x%7C1"
        );
        assert_eq!(
            url("https://other.example/v1/settings"),
            "https://other.example/v1/settings"
        );
        let keyed = client_for("http://127.0.0.1:1/fhir?api_key=k");
        assert_eq!(
            keyed.uri("Patient?identifier=a%7Cb").unwrap().to_string(),
            "http://127.0.0.1:1/fhir/Patient?api_key=k&identifier=a%7Cb"
        );
        assert_eq!(
            keyed.uri("Patient").unwrap().to_string(),
            "http://127.0.0.1:1/fhir/Patient?api_key=k"
        );
    }

    #[test]
    fn redirect_targets_are_shown_without_credentials() {
        let base = Url::parse("https://fhir.example/r4").unwrap();
        assert_eq!(
            shown_location(&base, "https://u:p@other.example/fhir?sig=s3cret"),
            "https://other.example/fhir"
        );
        assert_eq!(
            shown_location(&base, "/login"),
            "https://fhir.example/login"
        );
    }

    fn answer(
        status: u16,
        body: &str,
        retry_after: Option<Duration>,
    ) -> Result<Answer, AttemptError> {
        Ok(Answer {
            status: StatusCode::from_u16(status).unwrap(),
            location: Some("Patient/1/_history/1".to_owned()),
            retry_after,
            body: Bytes::from(body.to_owned()),
        })
    }

    fn context(
        credentials: &Credentials,
        attempt: u32,
        bundle: bool,
        reached: bool,
    ) -> AttemptContext<'_> {
        AttemptContext {
            attempt,
            bundle,
            store_reached: reached,
            timeout: Duration::from_secs(7),
            base: "http://127.0.0.1:1/fhir",
            credentials,
        }
    }

    const OUTCOME: &str =
        r#"{"resourceType":"OperationOutcome","issue":[{"diagnostics":"bad date"}]}"#;

    #[test]
    fn answers_are_done_throttled_refused_retried_or_failed_by_status() {
        let none = Credentials::none();
        let first = context(&none, 1, false, true);
        let done = verdict(answer(201, "", None), &first);
        assert!(
            matches!(&done, Verdict::Done(Reply { status: 201, location: Some(l), after_lost_answer: false, .. }) if l == "Patient/1/_history/1"),
            "{done:?}"
        );
        let throttled = verdict(answer(429, OUTCOME, None), &first);
        assert!(
            matches!(&throttled, Verdict::Throttled { message } if message == "bad date"),
            "{throttled:?}"
        );
        for status in [401, 403] {
            let refused = verdict(answer(status, OUTCOME, None), &first);
            assert!(
                matches!(&refused, Verdict::Refused { status: s, message } if *s == status && message == "bad date"),
                "{refused:?}"
            );
        }
        let rejected = verdict(answer(400, OUTCOME, None), &first);
        assert!(
            matches!(&rejected, Verdict::Fail(SendError::Rejected { status: 400, message }) if message == "bad date"),
            "{rejected:?}"
        );
        let told = Some(Duration::from_secs(3));
        let overloaded = verdict(answer(503, OUTCOME, told), &first);
        assert!(
            matches!(&overloaded, Verdict::Retry { last, at_least, maybe_written: true }
                if last == "HTTP 503: bad date" && *at_least == Duration::from_secs(3)),
            "{overloaded:?}"
        );
    }

    #[test]
    fn only_a_transaction_goes_again_after_a_conflict() {
        let none = Credentials::none();
        let bundle = verdict(answer(409, OUTCOME, None), &context(&none, 1, true, true));
        assert!(
            matches!(
                &bundle,
                Verdict::Retry {
                    maybe_written: true,
                    ..
                }
            ),
            "{bundle:?}"
        );
        let single = verdict(answer(409, OUTCOME, None), &context(&none, 1, false, true));
        assert!(
            matches!(
                &single,
                Verdict::Fail(SendError::Rejected { status: 409, .. })
            ),
            "{single:?}"
        );
    }

    #[test]
    fn a_refusing_proxy_or_a_missing_credential_stops_the_run() {
        let none = Credentials::none();
        let proxy = verdict(answer(407, "no", None), &context(&none, 2, false, true));
        assert!(
            matches!(&proxy, Verdict::StopRun { reason, error: SendError::GaveUp { attempts: 2, last } }
                if reason.starts_with(PROXY_REFUSED) && reason.ends_with(PROXY_REMEDY) && last == "HTTP 407: no"),
            "{proxy:?}"
        );
        let auth = verdict(
            Err(AttemptError::Auth("no token".into())),
            &context(&none, 1, false, true),
        );
        assert!(
            matches!(&auth, Verdict::StopRun { reason, error: SendError::Unsendable { message } }
                if reason == "no token" && message == "no token"),
            "{auth:?}"
        );
        let unsendable = verdict(
            Err(AttemptError::Unsendable("bad header".into())),
            &context(&none, 1, false, true),
        );
        assert!(
            matches!(&unsendable, Verdict::Fail(SendError::Unsendable { message }) if message == "bad header"),
            "{unsendable:?}"
        );
    }

    #[test]
    fn connection_failures_retry_until_the_store_looks_unreachable() {
        let none = Credentials::none();
        let timeout = verdict(Err(AttemptError::Timeout), &context(&none, 1, false, false));
        assert!(
            matches!(&timeout, Verdict::Retry { last, at_least: Duration::ZERO, maybe_written: true }
                if last == "timeout: no answer within 7s"),
            "{timeout:?}"
        );
        // A refused connection never carried the request; reset midway, it may have.
        let refused =
            connection_verdict(Cause::Connect, "refused", &context(&none, 1, false, false));
        assert!(
            matches!(&refused, Verdict::Retry { last, maybe_written: false, .. }
                if last == "connection refused or reset: refused"),
            "{refused:?}"
        );
        let broken = connection_verdict(Cause::Other, "reset", &context(&none, 5, false, false));
        assert!(
            matches!(
                &broken,
                Verdict::Retry {
                    maybe_written: true,
                    ..
                }
            ),
            "{broken:?}"
        );
        // Refused from the start, the store was never there; once it answered, it is a blip.
        let never = connection_verdict(
            Cause::Connect,
            "refused",
            &context(&none, UNREACHABLE_AFTER, false, false),
        );
        assert!(
            matches!(&never, Verdict::StopRun { reason, error: SendError::GaveUp { attempts: UNREACHABLE_AFTER, .. } }
                if reason.starts_with("cannot reach http://127.0.0.1:1/fhir: connection refused or reset: refused; check the URL")),
            "{never:?}"
        );
        let blip = connection_verdict(
            Cause::Connect,
            "refused",
            &context(&none, UNREACHABLE_AFTER, false, true),
        );
        assert!(matches!(&blip, Verdict::Retry { .. }), "{blip:?}");
        let tls = connection_verdict(
            Cause::Tls,
            "bad certificate",
            &context(&none, 1, false, true),
        );
        assert!(matches!(&tls, Verdict::StopRun { .. }), "{tls:?}");
    }

    #[test]
    fn the_limiter_learns_of_throttling_and_overload_only() {
        let told = Some(Duration::from_secs(2));
        for (outcome, learnt) in [
            (answer(429, "", told), Outcome::Throttled(told)),
            (answer(503, "", None), Outcome::Throttled(None)),
            (answer(500, "", told), Outcome::Answered),
            (answer(200, "", None), Outcome::Answered),
            (Err(AttemptError::Timeout), Outcome::Lost),
        ] {
            assert_eq!(limiter_outcome(&outcome), learnt);
        }
    }
}
