//! Cloud Storage's JSON API, the part the managed import needs: resumable uploads in chunks,
//! small uploads, object metadata, listing by prefix, reading (whole, or streamed) and deleting
//! objects.
//!
//! Requests go through the same network settings as the store's (proxies, `--ca-file`) and
//! carry the same credential. `STORAGE_EMULATOR_HOST` (the variable Google's client libraries
//! honour) or `--storage-endpoint` sends them to an emulator instead, and then, as with
//! Google's libraries, no credential is sent.
//!
//! Resumable uploads follow Google's protocol: a session is started with
//! `POST /upload/storage/v1/b/B/o?uploadType=resumable`, its URI (the `Location` answer) takes
//! chunks with `PUT` and `Content-Range: bytes FIRST-LAST/TOTAL` (`*` while the total is not
//! known), every chunk but the last a multiple of 256 KiB. `308` answers an unfinished upload
//! with what the service kept (`Range: bytes=0-N`), `200`/`201` the finished one with the
//! object. After a failure the client asks what was kept (`Content-Range: bytes */TOTAL` with
//! no body) and sends the rest; `404`/`410` say the session is gone and the upload starts over.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use bytes::Bytes;
use http::header::{AUTHORIZATION, CONTENT_RANGE, CONTENT_TYPE, HeaderName, LOCATION, RANGE};
use reqwest::Url;
use serde::{Deserialize, Deserializer, Serialize};

use super::auth::Credentials;
use super::client::{Network, store_message};
use super::retry::{RetryPolicy, is_transient, retry_after};
use crate::exit::usage;

/// Google's Cloud Storage endpoint.
pub const GOOGLE_STORAGE: &str = "https://storage.googleapis.com";

/// Every chunk of a resumable upload but the last is a multiple of this (Google's rule).
pub const CHUNK_UNIT: usize = 256 * 1024;

/// Bytes per upload request unless told otherwise.
pub const DEFAULT_CHUNK: usize = 8 << 20;

const X_GOOG_USER_PROJECT: HeaderName = HeaderName::from_static("x-goog-user-project");

/// `gs://BUCKET/PREFIX`: where a data set's objects go. The prefix is empty or ends with `/`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GcsUrl {
    pub bucket: String,
    pub prefix: String,
}

impl std::fmt::Display for GcsUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "gs://{}/{}", self.bucket, self.prefix)
    }
}

impl GcsUrl {
    /// Whether `raw` is meant as a Cloud Storage URL at all (then it must parse).
    pub fn is_gcs(raw: &str) -> bool {
        raw.get(..5)
            .is_some_and(|scheme| scheme.eq_ignore_ascii_case("gs://"))
    }

    /// Parses `gs://BUCKET/PREFIX/`, saying what is wrong in terms of Google's naming rules.
    pub fn parse(raw: &str) -> Result<Self, String> {
        let Some(rest) = raw.strip_prefix("gs://") else {
            return Err("it must start with gs://".to_owned());
        };
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        check_bucket(bucket)?;
        check_prefix(prefix)?;
        let prefix = if prefix.is_empty() || prefix.ends_with('/') {
            prefix.to_owned()
        } else {
            format!("{prefix}/")
        };
        Ok(Self {
            bucket: bucket.to_owned(),
            prefix,
        })
    }

    /// The URL of one object under the prefix, for messages.
    pub fn object_url(&self, name: &str) -> String {
        format!("gs://{}/{name}", self.bucket)
    }
}

/// Google's bucket names: 3-63 characters (up to 222 with dots), lowercase letters, digits,
/// `-`, `_` and `.`, starting and ending with a letter or digit.
fn check_bucket(bucket: &str) -> Result<(), String> {
    if bucket.is_empty() {
        return Err("it names no bucket (gs://BUCKET/PREFIX/)".to_owned());
    }
    let max = if bucket.contains('.') { 222 } else { 63 };
    let allowed = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-_.".contains(&b);
    let edge = |b: Option<&u8>| b.is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
    if !(3..=max).contains(&bucket.len())
        || !bucket.bytes().all(allowed)
        || !edge(bucket.as_bytes().first())
        || !edge(bucket.as_bytes().last())
    {
        return Err(format!(
            "`{bucket}` is not a bucket name: 3-63 lowercase letters, digits, `-`, `_` or `.`, \
             starting and ending with a letter or digit"
        ));
    }
    Ok(())
}

/// Object names are UTF-8 up to 1024 bytes; the import's source URI adds wildcards, so the
/// prefix must not hold any, nor the characters Google advises against.
fn check_prefix(prefix: &str) -> Result<(), String> {
    if prefix.len() > 900 {
        return Err("the prefix is longer than 900 bytes".to_owned());
    }
    if let Some(c) = prefix
        .chars()
        .find(|c| matches!(c, '*' | '?' | '[' | ']' | '#') || c.is_control())
    {
        return Err(format!(
            "the prefix holds {c:?}, which the import's wildcards or Cloud Storage's naming rules \
             do not allow"
        ));
    }
    if prefix.contains("//") || prefix.split('/').any(|part| part == "." || part == "..") {
        return Err("the prefix has an empty, `.` or `..` part".to_owned());
    }
    Ok(())
}

/// Where requests go: Google's endpoint, or an emulator named by `--storage-endpoint` or
/// `STORAGE_EMULATOR_HOST` (`host:port` or a URL, as Google's libraries take it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub url: Url,
    /// Requests to an emulator carry no credential.
    pub emulated: bool,
}

impl Endpoint {
    pub fn resolve(
        flag: Option<&str>,
        env: impl Fn(&str) -> Option<String>,
    ) -> anyhow::Result<Self> {
        let (raw, what) = match (flag, env("STORAGE_EMULATOR_HOST").filter(|v| !v.is_empty())) {
            (Some(flag), _) => (flag.to_owned(), "--storage-endpoint"),
            (None, Some(host)) => (host, "STORAGE_EMULATOR_HOST"),
            (None, None) => {
                return Ok(Self {
                    url: Url::parse(GOOGLE_STORAGE).expect("static URL"),
                    emulated: false,
                });
            }
        };
        let with_scheme = if raw.contains("://") {
            raw.clone()
        } else {
            format!("http://{raw}")
        };
        let url = Url::parse(with_scheme.trim_end_matches('/'))
            .ok()
            .filter(|url| matches!(url.scheme(), "http" | "https") && url.has_host())
            .ok_or_else(|| {
                usage(format!(
                    "{what} `{raw}` is not an address: give host:port or an http(s) URL, such as \
                     127.0.0.1:9023"
                ))
            })?;
        Ok(Self {
            url,
            emulated: true,
        })
    }
}

/// An object as Cloud Storage describes it (the fields this tool reads).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectMeta {
    pub name: String,
    /// int64 fields are strings in Google's JSON.
    #[serde(deserialize_with = "u64_or_string")]
    pub size: u64,
    /// Base64 of the big-endian CRC32C of the content.
    #[serde(default)]
    pub crc32c: Option<String>,
}

fn u64_or_string<'de, D: Deserializer<'de>>(deserializer: D) -> Result<u64, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Number {
        Text(String),
        Plain(u64),
    }
    match Number::deserialize(deserializer)? {
        Number::Plain(n) => Ok(n),
        Number::Text(text) => text.parse().map_err(serde::de::Error::custom),
    }
}

/// The CRC32C of `data` as Cloud Storage writes it in `crc32c`: base64 of its 4 big-endian bytes.
pub fn crc32c_text(crc: u32) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(crc.to_be_bytes())
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StorageError {
    /// The service answered with a status that retrying will not change.
    Refused { status: u16, message: String },
    /// Transient failures outlasted the retries.
    GaveUp { attempts: u32, last: String },
    /// The upload session expired or was lost (404/410, or bytes it had kept are gone): the
    /// upload must start over.
    SessionGone,
}

impl std::fmt::Display for StorageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Refused { status, message } => write!(f, "HTTP {status}: {message}"),
            Self::GaveUp { attempts, last } => {
                write!(f, "gave up after {attempts} attempts; last: {last}")
            }
            Self::SessionGone => f.write_str("the upload session expired or was lost"),
        }
    }
}

impl std::error::Error for StorageError {}

/// Where a resumable upload stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UploadState {
    /// The service keeps this many bytes, from the start.
    Persisted(u64),
    /// The object is written.
    Complete(ObjectMeta),
}

/// One answer to a chunk or a status query.
enum ChunkReply {
    State(UploadState),
    Gone,
    Refused(u16, String),
}

pub struct StorageClient {
    http: reqwest::Client,
    endpoint: Endpoint,
    credentials: Arc<Credentials>,
    retry: RetryPolicy,
    timeout: Duration,
}

impl StorageClient {
    /// `credentials` are ignored for an emulator.
    pub fn new(
        endpoint: Endpoint,
        credentials: Arc<Credentials>,
        network: &Network,
        retry: RetryPolicy,
        timeout: Duration,
    ) -> anyhow::Result<Self> {
        let http = network
            .builder()?
            .build()
            .context("cannot set up the HTTP client for Cloud Storage")?;
        let credentials = if endpoint.emulated {
            Arc::new(Credentials::none())
        } else {
            credentials
        };
        Ok(Self {
            http,
            endpoint,
            credentials,
            retry,
            timeout,
        })
    }

    pub fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    /// `{endpoint}/{base...}/b/{bucket}/o[/{object}]`, each part one encoded path segment.
    fn url(&self, base: &[&str], bucket: &str, object: Option<&str>) -> Url {
        let mut url = self.endpoint.url.clone();
        {
            let mut segments = url.path_segments_mut().expect("an http(s) URL has a path");
            segments
                .pop_if_empty()
                .extend(base)
                .push("b")
                .push(bucket)
                .push("o");
            if let Some(object) = object {
                segments.push(object);
            }
        }
        url
    }

    /// Sends what `build` makes with the credential, retrying connection errors and transient
    /// statuses; any other answer is the caller's to read.
    pub async fn send(
        &self,
        build: impl Fn(&reqwest::Client) -> reqwest::RequestBuilder,
    ) -> Result<reqwest::Response, StorageError> {
        let mut delays = self.retry.delays();
        let mut attempts = 0;
        loop {
            attempts += 1;
            let mut request = build(&self.http).timeout(self.timeout);
            match self.credentials.header().await {
                Ok(Some(header)) => request = request.header(AUTHORIZATION, header),
                Ok(None) => {}
                Err(e) => {
                    return Err(StorageError::Refused {
                        status: 401,
                        message: format!("no credential to send: {e:#}"),
                    });
                }
            }
            if let Some(project) = self.credentials.quota_project() {
                request = request.header(X_GOOG_USER_PROJECT, project.clone());
            }
            let (wait, last) = match request.send().await {
                Ok(response) if is_transient(response.status().as_u16()) => {
                    let wait = retry_after(response.headers());
                    (wait, format!("HTTP {}", response.status().as_u16()))
                }
                Ok(response) => return Ok(response),
                Err(e) => (None, self.redacted(&crate::store::auth::error_chain(&e))),
            };
            match delays.next() {
                Some(delay) => tokio::time::sleep(wait.unwrap_or(delay).max(delay)).await,
                None => return Err(StorageError::GaveUp { attempts, last }),
            }
        }
    }

    fn redacted(&self, text: &str) -> String {
        self.credentials.redact(text).into_owned()
    }

    /// The answer's body as JSON when it is a success, else the service's own message.
    pub async fn json<T: serde::de::DeserializeOwned>(
        &self,
        response: reqwest::Response,
    ) -> Result<T, StorageError> {
        let status = response.status().as_u16();
        let body = response.bytes().await.map_err(|e| StorageError::GaveUp {
            attempts: 1,
            last: format!("the answer was cut off: {e}"),
        })?;
        if !(200..300).contains(&status) {
            return Err(self.refusal(status, &body));
        }
        serde_json::from_slice(&body).map_err(|e| StorageError::Refused {
            status,
            message: format!("the answer is not the JSON expected: {e}"),
        })
    }

    /// The service's own message in a refusal's body, with any credential redacted.
    pub fn message(&self, body: &[u8]) -> String {
        self.redacted(&store_message(body))
    }

    fn refusal(&self, status: u16, body: &[u8]) -> StorageError {
        let message = self.message(body);
        let message = if matches!(status, 401 | 403) {
            format!(
                "{message} (credential: {}; {})",
                self.credentials.source(),
                self.credentials.remedy(status, &message)
            )
        } else {
            message
        };
        StorageError::Refused { status, message }
    }

    /// Which of the permissions a data set's upload needs the credential lacks on `bucket`;
    /// an error when the bucket cannot be reached or does not exist.
    pub async fn missing_permissions(&self, bucket: &str) -> Result<Vec<String>, StorageError> {
        const NEEDED: [&str; 4] = [
            "storage.objects.create",
            "storage.objects.get",
            "storage.objects.list",
            "storage.objects.delete",
        ];
        #[derive(Deserialize)]
        struct Granted {
            #[serde(default)]
            permissions: Vec<String>,
        }
        let mut url = self.endpoint.url.clone();
        url.path_segments_mut()
            .expect("an http(s) URL has a path")
            .pop_if_empty()
            .extend(["storage", "v1", "b", bucket, "iam", "testPermissions"]);
        for permission in NEEDED {
            url.query_pairs_mut().append_pair("permissions", permission);
        }
        let granted: Granted = self
            .json(self.send(|http| http.get(url.clone())).await?)
            .await?;
        Ok(NEEDED
            .iter()
            .filter(|p| !granted.permissions.iter().any(|g| g == *p))
            .map(|p| (*p).to_owned())
            .collect())
    }

    /// The object's metadata, or `None` when there is no such object.
    pub async fn object(
        &self,
        bucket: &str,
        name: &str,
    ) -> Result<Option<ObjectMeta>, StorageError> {
        let url = self.url(&["storage", "v1"], bucket, Some(name));
        let response = self.send(|http| http.get(url.clone())).await?;
        if response.status().as_u16() == 404 {
            return Ok(None);
        }
        self.json(response).await.map(Some)
    }

    /// Every object whose name starts with `prefix`, page by page.
    pub async fn list(&self, bucket: &str, prefix: &str) -> Result<Vec<ObjectMeta>, StorageError> {
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct Page {
            #[serde(default)]
            items: Vec<ObjectMeta>,
            next_page_token: Option<String>,
        }
        let mut objects = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let mut url = self.url(&["storage", "v1"], bucket, None);
            url.query_pairs_mut().append_pair("prefix", prefix);
            if let Some(token) = &token {
                url.query_pairs_mut().append_pair("pageToken", token);
            }
            let page: Page = self
                .json(self.send(|http| http.get(url.clone())).await?)
                .await?;
            objects.extend(page.items);
            match page.next_page_token.filter(|t| !t.is_empty()) {
                Some(next) => token = Some(next),
                None => return Ok(objects),
            }
        }
    }

    /// The object's content.
    pub async fn download(&self, bucket: &str, name: &str) -> Result<Bytes, StorageError> {
        let mut url = self.url(&["storage", "v1"], bucket, Some(name));
        url.query_pairs_mut().append_pair("alt", "media");
        let response = self.send(|http| http.get(url.clone())).await?;
        let status = response.status().as_u16();
        let body = response.bytes().await.map_err(|e| StorageError::GaveUp {
            attempts: 1,
            last: format!("the download was cut off: {e}"),
        })?;
        if status == 200 {
            Ok(body)
        } else {
            Err(self.refusal(status, &body))
        }
    }

    /// The object's content from byte `from` on, as it arrives, to be read with `chunk()`: an
    /// object larger than memory is read a piece at a time, and a read cut off (or timed out:
    /// the timeout covers the whole answer) starts again where it stopped.
    pub async fn download_stream(
        &self,
        bucket: &str,
        name: &str,
        from: u64,
    ) -> Result<reqwest::Response, StorageError> {
        let mut url = self.url(&["storage", "v1"], bucket, Some(name));
        url.query_pairs_mut().append_pair("alt", "media");
        let response = self
            .send(|http| match from {
                0 => http.get(url.clone()),
                _ => http
                    .get(url.clone())
                    .header(RANGE, format!("bytes={from}-")),
            })
            .await?;
        match response.status().as_u16() {
            200 if from == 0 => Ok(response),
            206 => Ok(response),
            status => Err(self.refusal(status, &response.bytes().await.unwrap_or_default())),
        }
    }

    /// Deletes the object; one already gone is not an error.
    pub async fn delete(&self, bucket: &str, name: &str) -> Result<(), StorageError> {
        let url = self.url(&["storage", "v1"], bucket, Some(name));
        let response = self.send(|http| http.delete(url.clone())).await?;
        match response.status().as_u16() {
            200..300 | 404 => Ok(()),
            status => Err(self.refusal(status, &response.bytes().await.unwrap_or_default())),
        }
    }

    /// Writes a small object in one request (`uploadType=media`).
    pub async fn upload_small(
        &self,
        bucket: &str,
        name: &str,
        content_type: &str,
        data: Bytes,
    ) -> Result<ObjectMeta, StorageError> {
        let mut url = self.url(&["upload", "storage", "v1"], bucket, None);
        url.query_pairs_mut()
            .append_pair("uploadType", "media")
            .append_pair("name", name);
        let response = self
            .send(|http| {
                http.post(url.clone())
                    .header(CONTENT_TYPE, content_type)
                    .body(data.clone())
            })
            .await?;
        self.json(response).await
    }

    /// Starts a resumable upload of `name`; gives the session URI, which is the credential for
    /// the upload's chunks (they are sent without the Authorization header).
    pub async fn begin_upload(
        &self,
        bucket: &str,
        name: &str,
        content_type: &str,
    ) -> Result<String, StorageError> {
        let mut url = self.url(&["upload", "storage", "v1"], bucket, None);
        url.query_pairs_mut()
            .append_pair("uploadType", "resumable")
            .append_pair("name", name);
        let metadata = serde_json::json!({"name": name, "contentType": content_type}).to_string();
        let response = self
            .send(|http| {
                http.post(url.clone())
                    .header(CONTENT_TYPE, "application/json; charset=UTF-8")
                    .header("x-upload-content-type", content_type)
                    .body(metadata.clone())
            })
            .await?;
        let status = response.status().as_u16();
        let location = response
            .headers()
            .get(LOCATION)
            .and_then(|l| l.to_str().ok())
            .map(str::to_owned);
        match location {
            Some(session) if (200..300).contains(&status) => Ok(session),
            _ => Err(self.refusal(status, &response.bytes().await.unwrap_or_default())),
        }
    }

    /// What the service kept of an upload (`Content-Range: bytes */TOTAL`, no body).
    pub async fn upload_status(
        &self,
        session: &str,
        total: Option<u64>,
    ) -> Result<UploadState, StorageError> {
        let range = format!("bytes */{}", total_text(total));
        let mut delays = self.retry.delays();
        let mut attempts = 0;
        loop {
            attempts += 1;
            let last = match self.put_range(session, &range, Bytes::new()).await {
                Ok(ChunkReply::State(state)) => return Ok(state),
                Ok(ChunkReply::Gone) => return Err(StorageError::SessionGone),
                Ok(ChunkReply::Refused(status, message)) if is_transient(status) => {
                    format!("HTTP {status}: {message}")
                }
                Ok(ChunkReply::Refused(status, message)) => {
                    return Err(StorageError::Refused { status, message });
                }
                Err(e) => e,
            };
            match delays.next() {
                Some(delay) => tokio::time::sleep(delay).await,
                None => return Err(StorageError::GaveUp { attempts, last }),
            }
        }
    }

    /// Sends `data`, the object's bytes from `offset` (which the service has kept up to), and
    /// ends the object when `total` is known. A failure is followed by asking what the service
    /// kept and sending the rest, with backoff, up to the retry limit.
    pub async fn upload_chunk(
        &self,
        session: &str,
        offset: u64,
        data: Bytes,
        total: Option<u64>,
    ) -> Result<UploadState, StorageError> {
        let end = offset + data.len() as u64;
        let mut kept = offset;
        let mut delays = self.retry.delays();
        let mut attempts = 0;
        loop {
            if kept >= end && total.is_none() {
                return Ok(UploadState::Persisted(kept));
            }
            attempts += 1;
            let rest = data.slice(usize::try_from(kept - offset).expect("within the chunk")..);
            let range = if rest.is_empty() {
                format!("bytes */{}", total_text(total))
            } else {
                format!("bytes {kept}-{}/{}", end - 1, total_text(total))
            };
            let last = match self.put_range(session, &range, rest).await {
                Ok(ChunkReply::State(UploadState::Complete(object))) => {
                    return Ok(UploadState::Complete(object));
                }
                Ok(ChunkReply::State(UploadState::Persisted(now))) if now > kept => {
                    // Progress, maybe not all of it: send the rest at once.
                    kept = now;
                    continue;
                }
                Ok(ChunkReply::State(UploadState::Persisted(now))) => {
                    format!("the service kept nothing of the chunk (it has {now} bytes)")
                }
                Ok(ChunkReply::Gone) => return Err(StorageError::SessionGone),
                Ok(ChunkReply::Refused(status, message)) if is_transient(status) => {
                    format!("HTTP {status}: {message}")
                }
                Ok(ChunkReply::Refused(status, message)) => {
                    return Err(StorageError::Refused { status, message });
                }
                Err(e) => e,
            };
            let Some(delay) = delays.next() else {
                return Err(StorageError::GaveUp { attempts, last });
            };
            tracing::debug!("upload chunk at {kept} failed ({last}); asking what was kept");
            tokio::time::sleep(delay).await;
            match self.upload_status(session, total).await? {
                UploadState::Complete(object) => return Ok(UploadState::Complete(object)),
                // Bytes the service had said it kept are gone: only a new upload can help.
                UploadState::Persisted(now) if now < offset => {
                    return Err(StorageError::SessionGone);
                }
                UploadState::Persisted(now) => kept = now,
            }
        }
    }

    /// One PUT to the session URI; `Err` is a failure to get an answer.
    async fn put_range(
        &self,
        session: &str,
        range: &str,
        body: Bytes,
    ) -> Result<ChunkReply, String> {
        let response = self
            .http
            .put(session)
            .timeout(self.timeout)
            .header(CONTENT_RANGE, range)
            .body(body)
            .send()
            .await
            .map_err(|e| crate::store::auth::error_chain(&e))?;
        let status = response.status().as_u16();
        match status {
            308 => {
                let kept = response
                    .headers()
                    .get(RANGE)
                    .and_then(|r| r.to_str().ok())
                    .and_then(kept_bytes)
                    .unwrap_or(0);
                Ok(ChunkReply::State(UploadState::Persisted(kept)))
            }
            200 | 201 => {
                let body = response.bytes().await.map_err(|e| e.to_string())?;
                serde_json::from_slice(&body)
                    .map(|object| ChunkReply::State(UploadState::Complete(object)))
                    .map_err(|e| format!("the finished upload's answer is not an object: {e}"))
            }
            404 | 410 => Ok(ChunkReply::Gone),
            status => {
                let body = response.bytes().await.unwrap_or_default();
                Ok(ChunkReply::Refused(
                    status,
                    self.redacted(&store_message(&body)),
                ))
            }
        }
    }
}

fn total_text(total: Option<u64>) -> String {
    total.map_or_else(|| "*".to_owned(), |t| t.to_string())
}

/// `bytes=0-N` -> N + 1 bytes kept.
fn kept_bytes(range: &str) -> Option<u64> {
    let (first, last) = range.trim().strip_prefix("bytes=")?.split_once('-')?;
    (first.trim() == "0").then_some(())?;
    last.trim().parse::<u64>().ok().map(|last| last + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gcs_urls() {
        let url = GcsUrl::parse("gs://my-bucket/runs/one").unwrap();
        assert_eq!(url.bucket, "my-bucket");
        assert_eq!(url.prefix, "runs/one/");
        assert_eq!(url.to_string(), "gs://my-bucket/runs/one/");
        assert_eq!(GcsUrl::parse("gs://b.example.com").unwrap().prefix, "");
        assert_eq!(GcsUrl::parse("gs://abc/x/").unwrap().prefix, "x/");
        for bad in [
            "gs://",
            "gs:///prefix",
            "gs://Upper/x",
            "gs://ab/x",
            "gs://-abc/x",
            "gs://abc/x*",
            "gs://abc/a//b",
            "gs://abc/../x",
            "s3://abc/x",
        ] {
            assert!(GcsUrl::parse(bad).is_err(), "{bad}");
        }
        assert!(GcsUrl::is_gcs("GS://x") && !GcsUrl::is_gcs("out.ndjson"));
    }

    #[test]
    fn endpoints() {
        let none = |_: &str| None;
        let google = Endpoint::resolve(None, none).unwrap();
        assert!(!google.emulated);
        assert_eq!(google.url.as_str(), "https://storage.googleapis.com/");
        let env = |name: &str| (name == "STORAGE_EMULATOR_HOST").then(|| "127.0.0.1:9023".into());
        let emulator = Endpoint::resolve(None, env).unwrap();
        assert!(emulator.emulated);
        assert_eq!(emulator.url.as_str(), "http://127.0.0.1:9023/");
        let flag = Endpoint::resolve(Some("http://localhost:1/"), env).unwrap();
        assert_eq!(flag.url.as_str(), "http://localhost:1/");
        assert!(Endpoint::resolve(Some("ftp://x"), none).is_err());
    }

    #[test]
    fn kept_ranges_and_checksums() {
        assert_eq!(kept_bytes("bytes=0-262143"), Some(262_144));
        assert_eq!(kept_bytes("bytes=5-9"), None);
        assert_eq!(kept_bytes("nonsense"), None);
        // Google's documented example: the CRC32C of "hello world" is yZRlqg== in base64.
        assert_eq!(crc32c_text(crc32c::crc32c(b"hello world")), "yZRlqg==");
    }
}
