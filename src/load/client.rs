//! One HTTP client for the whole run: sends a request to the store, retrying what is worth
//! retrying, and turns every other answer into an error a person can act on.

use std::time::Duration;

use bytes::Bytes;
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, HeaderValue, LOCATION};
use reqwest::{Method, StatusCode};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::auth::Credentials;
use super::retry::{Pacer, RetryPolicy, is_transient, retry_after};
use super::stats::RequestStats;
use crate::cli::HttpVersion;
use crate::fhir::FHIR_JSON;

/// A request relative to the FHIR base: `path` is "" (executeBundle), "Patient", or "Patient/1".
#[derive(Debug, Clone)]
pub struct StoreRequest {
    pub method: Method,
    pub path: String,
    pub body: Bytes,
    /// `If-None-Exist` for conditional creates.
    pub if_none_exist: Option<String>,
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
    /// The run is stopping, so this request was not sent (or not retried).
    Cancelled,
}

impl SendError {
    /// HTTP status for `--failed` and the summary, when the store gave one.
    pub fn status(&self) -> Option<u16> {
        match self {
            Self::Rejected { status, .. } | Self::Unauthorized { status, .. } => Some(*status),
            Self::GaveUp { .. } | Self::Cancelled => None,
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
            Self::Cancelled => f.write_str("not sent: the run was stopped"),
        }
    }
}

/// Why the run stopped early, kept by whoever noticed first.
#[derive(Debug, Clone)]
pub struct Fatal(pub String);

pub struct StoreClient {
    http: reqwest::Client,
    base: String,
    credentials: Credentials,
    retry: RetryPolicy,
    pacer: Pacer,
    /// Cancelled on Ctrl-C or on a fatal answer (401/403): no new request starts after it.
    stop: CancellationToken,
    fatal: std::sync::Mutex<Option<Fatal>>,
}

pub struct ClientOptions {
    pub workers: u32,
    pub timeout: Duration,
    pub retry: RetryPolicy,
    pub rate: f64,
    pub http: HttpVersion,
}

impl StoreClient {
    pub fn new(
        base: &str,
        credentials: Credentials,
        options: ClientOptions,
        stop: CancellationToken,
    ) -> anyhow::Result<Self> {
        let builder = match options.http {
            HttpVersion::Auto => reqwest::Client::builder(),
            HttpVersion::Http1 => reqwest::Client::builder().http1_only(),
            HttpVersion::Http2 => reqwest::Client::builder().http2_prior_knowledge(),
        };
        let http = builder
            .user_agent(concat!("fhirgen/", env!("CARGO_PKG_VERSION")))
            .pool_max_idle_per_host(options.workers as usize)
            .tcp_nodelay(true)
            .connect_timeout(Duration::from_secs(10).min(options.timeout))
            .timeout(options.timeout)
            .build()?;
        Ok(Self {
            http,
            base: base.trim_end_matches('/').to_owned(),
            credentials,
            retry: options.retry,
            pacer: Pacer::new(options.rate),
            stop,
            fatal: std::sync::Mutex::new(None),
        })
    }

    /// The reason the run stopped early, if it was not Ctrl-C.
    pub fn fatal(&self) -> Option<Fatal> {
        self.fatal.lock().expect("fatal lock").clone()
    }

    fn url(&self, path: &str) -> String {
        if path.is_empty() {
            self.base.clone()
        } else {
            format!("{}/{}", self.base, path)
        }
    }

    /// Sends `request`, retrying transient failures with backoff; every attempt lands in `stats`.
    pub async fn send(
        &self,
        request: &StoreRequest,
        stats: &mut RequestStats,
    ) -> Result<Reply, SendError> {
        let url = self.url(&request.path);
        let mut delays = self.retry.delays();
        let mut attempts = 0u32;
        let mut renewed_token = false;
        loop {
            // The run may stop while this worker waits for its turn: then it sends nothing.
            tokio::select! {
                _ = self.pacer.wait_turn() => {}
                _ = self.stop.cancelled() => return Err(SendError::Cancelled),
            }
            if self.stop.is_cancelled() {
                return Err(SendError::Cancelled);
            }
            attempts += 1;
            if attempts > 1 {
                stats.retries += 1;
            }
            let started = Instant::now();
            let outcome = self.attempt(&url, request).await;
            let transient = match outcome {
                Ok((status, headers, body)) => {
                    stats.record_answer(status.as_u16(), started.elapsed());
                    if status.is_success() {
                        let location = headers
                            .get(LOCATION)
                            .and_then(|v| v.to_str().ok())
                            .map(str::to_owned);
                        return Ok(Reply {
                            status: status.as_u16(),
                            location,
                            body,
                        });
                    }
                    let message = store_message(&body);
                    let code = status.as_u16();
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
                    if !is_transient(code) {
                        return Err(SendError::Rejected {
                            status: code,
                            message,
                        });
                    }
                    (
                        format!("HTTP {code}: {message}"),
                        retry_after(&headers),
                        code == 429,
                    )
                }
                Err(AttemptError::Auth(message)) => {
                    return Err(
                        self.fail_run(message.clone(), SendError::Rejected { status: 0, message })
                    );
                }
                Err(AttemptError::Http(error)) => {
                    let kind = if error.is_timeout() {
                        "timeout"
                    } else if error.is_connect() {
                        "connection refused or reset"
                    } else {
                        "connection error"
                    };
                    stats.record_error(kind);
                    // The URL may carry user:password; the request is named elsewhere.
                    let error = error.without_url();
                    (format!("{kind}: {}", error_chain(&error)), None, false)
                }
            };
            let (last, hinted, throttled) = transient;
            let Some(backoff) = delays.next() else {
                return Err(SendError::GaveUp { attempts, last });
            };
            let wait = hinted.map_or(backoff, |h| h.max(backoff));
            if throttled {
                // The quota is the project's, not this worker's: everyone holds off.
                self.pacer.pause_all(wait);
            }
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = self.stop.cancelled() => return Err(SendError::Cancelled),
            }
        }
    }

    async fn attempt(
        &self,
        url: &str,
        request: &StoreRequest,
    ) -> Result<(StatusCode, reqwest::header::HeaderMap, Bytes), AttemptError> {
        let mut builder = self
            .http
            .request(request.method.clone(), url)
            .header(CONTENT_TYPE, HeaderValue::from_static(FHIR_JSON))
            // Only the Location is needed back; echoing every resource costs both sides.
            .header("Prefer", HeaderValue::from_static("return=minimal"))
            .body(request.body.clone());
        if let Some(query) = &request.if_none_exist {
            builder = builder.header("If-None-Exist", query);
        }
        if let Some(auth) = self
            .credentials
            .header()
            .await
            .map_err(|e| AttemptError::Auth(format!("{e:#}")))?
        {
            builder = builder.header(AUTHORIZATION, auth);
        }
        let response = builder.send().await.map_err(AttemptError::Http)?;
        let status = response.status();
        let headers = response.headers().clone();
        let body = response.bytes().await.map_err(AttemptError::Http)?;
        Ok((status, headers, body))
    }

    fn unauthorized(&self, status: u16, message: String) -> SendError {
        let explanation = format!(
            "the store answered {status} to {}: {message}; {}",
            self.credentials.source(),
            self.credentials.remedy(status)
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

enum AttemptError {
    Http(reqwest::Error),
    Auth(String),
}

fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
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
            return message.to_owned();
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
        assert_eq!(store_message(b"  "), "(no message)");
        assert_eq!(store_message(b"<html>oops</html>"), "<html>oops</html>");
    }
}
