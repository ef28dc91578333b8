//! One HTTP client for the whole run: sends a request to the store, retrying what is worth
//! retrying, and turns every other answer into an error a person can act on.

use std::borrow::Cow;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
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
}

impl SendError {
    /// HTTP status for `--failed` and the summary, when the store gave one.
    pub fn status(&self) -> Option<u16> {
        match self {
            Self::Rejected { status, .. } | Self::Unauthorized { status, .. } => Some(*status),
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
        let mut delays = self.retry.delays();
        let mut attempts = 0u32;
        let mut renewed_token = false;
        let mut throttled_since: Option<Instant> = None;
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
            attempts += 1;
            if attempts > 1 {
                stats.retries += 1;
            }
            let started = Instant::now();
            let outcome = self.attempt(&uri, request).await;
            let retry = match outcome {
                Ok(Answer {
                    status,
                    location,
                    retry_after,
                    body,
                }) => {
                    stats.record_answer(status.as_u16(), started.elapsed());
                    tracing::info!(
                        "{} {} -> {} in {:.1} ms (attempt {attempts})",
                        request.method,
                        shown_path(&request.path),
                        status.as_u16(),
                        started.elapsed().as_secs_f64() * 1e3
                    );
                    self.reached.store(true, Ordering::Relaxed);
                    let code = status.as_u16();
                    if code == 429 {
                        let wait = self.limiter.done(permit, Outcome::Throttled(retry_after));
                        let since = *throttled_since.get_or_insert(started);
                        if since.elapsed() >= self.max_throttle_wait {
                            return Err(SendError::GaveUp {
                                attempts,
                                last: format!(
                                    "throttled by the store for {} (HTTP 429: {}); the quota is \
                                     too small for this load or shared with other work: lower \
                                     --workers or --rate, ask for more quota, or raise \
                                     --max-throttle-wait",
                                    humantime::format_duration(Duration::from_secs(
                                        since.elapsed().as_secs()
                                    )),
                                    store_message(&body)
                                ),
                            });
                        }
                        Retry::Throttled(wait)
                    } else {
                        // An overloaded store (503) slows everyone, as a quota does; it still
                        // counts against this request's retries.
                        let overloaded = code == 503;
                        let wait = self.limiter.done(
                            permit,
                            if overloaded {
                                Outcome::Throttled(retry_after)
                            } else {
                                Outcome::Answered
                            },
                        );
                        if status.is_success() {
                            return Ok(Reply {
                                status: code,
                                location,
                                body,
                            });
                        }
                        let message = store_message(&body);
                        if code == 401
                            && !renewed_token
                            && self.credentials.renewed_after_rejection().await
                        {
                            renewed_token = true;
                            continue;
                        }
                        if code == 401 || code == 403 {
                            return Err(self.unauthorized(code, message));
                        }
                        // A plain-http request forwarded by a proxy that wants credentials.
                        if code == 407 {
                            let last = format!("HTTP 407: {message}");
                            return Err(self.fail_run(
                                format!("{PROXY_REFUSED} ({last}): {PROXY_REMEDY}"),
                                SendError::GaveUp { attempts, last },
                            ));
                        }
                        // A transaction that met another writer (Google's ABORTED) goes again.
                        let contended = code == 409 && request.is_bundle();
                        if !is_transient(code) && !contended {
                            return Err(SendError::Rejected {
                                status: code,
                                message,
                            });
                        }
                        Retry::Error {
                            last: format!("HTTP {code}: {message}"),
                            at_least: retry_after.unwrap_or_default().max(wait),
                            maybe_written: true,
                        }
                    }
                }
                Err(error) => {
                    self.limiter.done(permit, Outcome::Lost);
                    match error {
                        AttemptError::Unsendable(message) => {
                            return Err(SendError::Unsendable { message });
                        }
                        AttemptError::Auth(message) => {
                            return Err(
                                self.fail_run(message.clone(), SendError::Unsendable { message })
                            );
                        }
                        AttemptError::Timeout => {
                            stats.record_error("timeout");
                            tracing::info!(
                                "{} {} -> no answer within {:?} (attempt {attempts})",
                                request.method,
                                shown_path(&request.path),
                                self.timeout
                            );
                            Retry::Error {
                                last: format!("timeout: no answer within {:?}", self.timeout),
                                at_least: Duration::ZERO,
                                maybe_written: true,
                            }
                        }
                        AttemptError::Http(error) => {
                            let cause = error.cause();
                            let kind = cause.label();
                            stats.record_error(kind);
                            tracing::info!(
                                "{} {} -> {kind} (attempt {attempts})",
                                request.method,
                                shown_path(&request.path)
                            );
                            let last = format!("{kind}: {}", error_chain(&*error));
                            // Nothing will work: say so now rather than retry every resource.
                            let hopeless = cause.is_final()
                                || (cause == Cause::Connect
                                    && attempts >= UNREACHABLE_AFTER
                                    && !self.reached.load(Ordering::Relaxed));
                            if hopeless {
                                let reason = self.unreachable(&last, cause.remedy());
                                return Err(
                                    self.fail_run(reason, SendError::GaveUp { attempts, last })
                                );
                            }
                            Retry::Error {
                                last,
                                at_least: Duration::ZERO,
                                // Refused connections never carried the request.
                                maybe_written: cause != Cause::Connect,
                            }
                        }
                    }
                }
            };
            let wait = match retry {
                Retry::Throttled(wait) => {
                    tracing::info!(
                        "throttled (429): this request waits {wait:?}, then the limiter"
                    );
                    wait
                }
                Retry::Error {
                    last,
                    at_least,
                    maybe_written,
                } => {
                    if maybe_written && !request.is_idempotent() {
                        return Err(SendError::GaveUp { attempts, last });
                    }
                    let Some(backoff) = delays.next() else {
                        return Err(SendError::GaveUp { attempts, last });
                    };
                    let wait = backoff.max(at_least);
                    tracing::info!("retrying in {wait:?}: {last}");
                    wait
                }
            };
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = self.stop.cancelled() => return Err(SendError::Cancelled),
            }
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

    /// Why the run stops when the store cannot be reached at all, and what to check.
    fn unreachable(&self, last: &str, remedy: &str) -> String {
        format!("cannot reach {}: {last}; {remedy}", self.base)
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

/// Why an attempt goes again, and how long it waits first.
enum Retry {
    /// Throttled: waits as the limiter says, without spending a retry.
    Throttled(Duration),
    /// Failed in a way that may heal: spends a retry, waits its backoff (or longer if told).
    Error {
        last: String,
        at_least: Duration,
        /// The store may have written it before failing.
        maybe_written: bool,
    },
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
}
