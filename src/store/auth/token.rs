//! What every token exchange shares: one HTTP client (the store's proxy and trust settings),
//! turning an endpoint's answer into a `gcp_auth::Token`, and naming the field of a credential
//! file that is wrong.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};
use gcp_auth::Token;
use serde_json::Value;

/// Token requests go through the same proxies and trust the same CAs as store requests.
#[derive(Clone)]
pub struct TokenClient(pub reqwest::Client);

impl TokenClient {
    /// POSTs `request` and reads a JSON answer; the error names `what` and the endpoint, and
    /// carries the endpoint's own message with any of `secrets` cut out.
    pub async fn exchange(
        &self,
        what: &str,
        request: reqwest::RequestBuilder,
        secrets: &[&str],
    ) -> anyhow::Result<Value> {
        let request = request
            .header(
                reqwest::header::USER_AGENT,
                concat!("fhirgen/", env!("CARGO_PKG_VERSION")),
            )
            .timeout(Duration::from_secs(30))
            .build()?;
        let endpoint = without_query(request.url());
        // A token endpoint that blinks (a dropped connection, a 5xx, a 429) gets a few more
        // tries, as gcp_auth's own requests did, before the run is told it has no token.
        let send = || async {
            let request = request
                .try_clone()
                .expect("token requests have in-memory bodies");
            let response = self
                .0
                .execute(request)
                .await
                .map_err(|e| Attempt::Unreachable(error_chain(&e)))?;
            let status = response.status();
            let body = response
                .bytes()
                .await
                .map_err(|e| Attempt::Unreachable(e.to_string()))?;
            let transient = status.as_u16() == 429 || status.is_server_error();
            if transient {
                return Err(Attempt::Transient(status, body));
            }
            Ok((status, body))
        };
        let answer = send
            .retry(
                ExponentialBuilder::default()
                    .with_min_delay(Duration::from_millis(200))
                    .with_max_times(3)
                    .with_jitter(),
            )
            .await;
        let (status, body) = match answer {
            Ok(answer) => answer,
            Err(Attempt::Transient(status, body)) => (status, body),
            Err(Attempt::Unreachable(e)) => {
                anyhow::bail!("{what}: cannot reach {endpoint}: {e}")
            }
        };
        let mut text = String::from_utf8_lossy(&body).into_owned();
        let proxy_secrets = crate::secret::proxy_secrets().iter().map(String::as_str);
        let all_secrets = secrets.iter().copied().chain(proxy_secrets);
        for secret in all_secrets.filter(|s| s.len() >= 4) {
            text = text.replace(secret, "(redacted)");
        }
        if !status.is_success() {
            return Err(Refused {
                status,
                message: format!(
                    "{what}: {endpoint} answered {status}: {}",
                    endpoint_message(&text)
                ),
            }
            .into());
        }
        serde_json::from_str(&text).map_err(|e| {
            anyhow::anyhow!("{what}: {endpoint} answered something that is not JSON ({e})")
        })
    }
}

/// A token endpoint that answered, but not with a token: the status, for a provider to say
/// what a given refusal means, and the whole message.
#[derive(Debug)]
pub struct Refused {
    pub status: reqwest::StatusCode,
    message: String,
}

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Refused {}

/// Why one try at a token endpoint did not give an answer to keep.
enum Attempt {
    Unreachable(String),
    /// 429 or 5xx: tried again, and if it persists, reported as the endpoint's answer.
    Transient(reqwest::StatusCode, bytes::Bytes),
}

fn without_query(url: &reqwest::Url) -> String {
    let mut url = url.clone();
    url.set_query(None);
    let _ = url.set_username("");
    let _ = url.set_password(None);
    url.to_string()
}

/// OAuth's `error_description`, Google's `error.message`, or the start of the text.
fn endpoint_message(text: &str) -> String {
    if let Ok(json) = serde_json::from_str::<Value>(text) {
        let found = json["error_description"]
            .as_str()
            .or_else(|| json["error"]["message"].as_str())
            .or_else(|| json["error"].as_str());
        if let Some(message) = found {
            return message.to_owned();
        }
    }
    text.trim().chars().take(300).collect()
}

pub fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
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

/// A `gcp_auth::Token` from an access token and its lifetime in seconds.
pub fn token(access_token: &str, expires_in: u64) -> anyhow::Result<Arc<Token>> {
    let token = serde_json::from_value(serde_json::json!({
        "access_token": access_token,
        "expires_in": expires_in,
    }))?;
    Ok(Arc::new(token))
}

/// The `access_token` and `expires_in` of an OAuth token answer.
pub fn oauth_token(what: &str, answer: &Value) -> anyhow::Result<Arc<Token>> {
    let access_token = answer["access_token"]
        .as_str()
        .filter(|t| !t.is_empty())
        .ok_or_else(|| anyhow::anyhow!("{what}: the answer has no access_token"))?;
    // Google's tokens last an hour; an answer without a lifetime is taken as that.
    let expires_in = answer["expires_in"].as_u64().unwrap_or(3600);
    token(access_token, expires_in)
}

/// Turns a failure into the error type `TokenProvider` returns, keeping the whole message.
pub fn provider_error(error: anyhow::Error) -> gcp_auth::Error {
    gcp_auth::Error::Other("token request failed", error.into())
}

/// A credential file being read, so that every complaint names the file and the field.
pub struct CredentialFile {
    pub path: PathBuf,
    pub kind: String,
    pub json: Value,
}

impl CredentialFile {
    pub fn read(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read(path).map_err(|e| {
            crate::exit::usage(format!(
                "cannot read the credential file {}: {e}",
                path.display()
            ))
        })?;
        Self::parse(path, &text)
    }

    pub fn parse(path: &Path, text: &[u8]) -> anyhow::Result<Self> {
        let json: Value = serde_json::from_slice(text).map_err(|e| {
            crate::exit::usage(format!(
                "the credential file {} is not JSON: {e}",
                path.display()
            ))
        })?;
        let kind = json["type"].as_str().unwrap_or_default().to_owned();
        Ok(Self {
            path: path.to_owned(),
            kind,
            json,
        })
    }

    /// The same file seen at one of its nested objects (`source_credentials`).
    pub fn nested(&self, field: &str) -> anyhow::Result<Self> {
        let json = self.json[field].clone();
        if !json.is_object() {
            return Err(self.wrong(field, "is missing or not an object"));
        }
        let kind = json["type"].as_str().unwrap_or_default().to_owned();
        Ok(Self {
            path: self.path.clone(),
            kind: format!("{}.{kind}", self.kind),
            json,
        })
    }

    /// A string at a dotted path (`credential_source.format.type`), required.
    pub fn text(&self, field: &str) -> anyhow::Result<String> {
        self.optional_text(field)?
            .ok_or_else(|| self.wrong(field, "is missing"))
    }

    pub fn optional_text(&self, field: &str) -> anyhow::Result<Option<String>> {
        match self.at(field) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(text)) if !text.is_empty() => Ok(Some(text.clone())),
            Some(_) => Err(self.wrong(field, "must be a non-empty string")),
        }
    }

    pub fn at(&self, field: &str) -> Option<&Value> {
        field
            .split('.')
            .try_fold(&self.json, |value, key| value.get(key))
    }

    /// An https URL at `field` (http to loopback, for local stand-ins), required.
    pub fn url(&self, field: &str) -> anyhow::Result<reqwest::Url> {
        let text = self.text(field)?;
        let url = reqwest::Url::parse(&text)
            .map_err(|e| self.wrong(field, &format!("is not a URL ({e})")))?;
        let loopback = match url.host() {
            Some(url::Host::Domain(domain)) => domain == "localhost",
            Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
            Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
            None => false,
        };
        // Secrets go to these endpoints: never in the clear over a network.
        if !(url.scheme() == "https" || url.scheme() == "http" && loopback) {
            return Err(self.wrong(
                field,
                "must be an https URL (plain http only to a loopback address)",
            ));
        }
        Ok(url)
    }

    /// An exit-2 error that names the file, its type and the field.
    pub fn wrong(&self, field: &str, problem: &str) -> anyhow::Error {
        crate::exit::usage(format!(
            "the {} credential file {}: `{field}` {problem}",
            self.kind_name(),
            self.path.display()
        ))
    }

    pub fn kind_name(&self) -> &str {
        if self.kind.is_empty() {
            "(untyped)"
        } else {
            &self.kind
        }
    }
}
