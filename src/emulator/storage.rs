//! Cloud Storage's JSON API, the subset the import and export paths use, on the emulator's own
//! port: simple (`uploadType=media`) and resumable uploads, object metadata and content
//! (`alt=media`, whole or from a byte on with `Range: bytes=N-`), listing by prefix in pages,
//! deletion, the bucket itself and `testIamPermissions`. A bucket exists on first use, as a store does. Answers and errors are
//! shaped as Google's (`storage#object`, `{"error": {"code", "message", "errors"}}`, `308` with
//! `Range` for an unfinished upload).
//!
//! Tests can make uploads fail: the Nth chunk request keeps only its first 256 KiB (the rest
//! was lost on the way), or is answered 503, or finds its session expired (404).
//! `GET /_emulator/storage` counts what arrived.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::AppState;
use super::faults::CONTROL_PREFIX;

/// Every chunk of a resumable upload but the last is kept in multiples of this.
const CHUNK_UNIT: usize = 256 * 1024;

/// The largest upload request (a chunk, or a simple upload) the emulator takes.
const MAX_UPLOAD_BODY: usize = 64 << 20;

/// Objects per page of a listing unless `maxResults` says fewer (Google's default).
const PAGE_SIZE: usize = 1000;

/// Which chunk requests (counted from 1 over all uploads; 0 = none) fail, and how.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UploadFaults {
    /// Keeps only the first 256 KiB of this chunk and says so (`308`): the rest was lost.
    pub partial_chunk: u64,
    /// Answers this chunk `503` and keeps nothing of it.
    pub unavailable_chunk: u64,
    /// This chunk finds its session expired (`404`), as after a week.
    pub expire_session_chunk: u64,
}

/// What the storage side has received since start (or the last reset).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StorageStats {
    /// Resumable upload sessions started.
    pub sessions: u64,
    /// Chunk requests with a body.
    pub chunks: u64,
    /// Object bytes received (simple uploads and chunks), kept or not.
    pub bytes_received: u64,
    /// Objects in all buckets now.
    pub objects: u64,
}

#[derive(Debug, Clone)]
pub struct StoredObject {
    pub data: Bytes,
    generation: u64,
    content_type: String,
    crc32c: u32,
    created: String,
}

#[derive(Debug)]
struct Session {
    bucket: String,
    name: String,
    content_type: String,
    data: Vec<u8>,
    done: Option<Value>,
}

#[derive(Debug, Default)]
struct Inner {
    buckets: HashMap<String, BTreeMap<String, StoredObject>>,
    sessions: HashMap<String, Session>,
    next_generation: u64,
    next_session: u64,
}

/// Every bucket of the emulator, in memory.
#[derive(Debug, Default)]
pub struct Buckets {
    inner: Mutex<Inner>,
    faults: UploadFaults,
    sessions: AtomicU64,
    chunks: AtomicU64,
    bytes_received: AtomicU64,
}

impl Buckets {
    pub fn new(faults: UploadFaults) -> Self {
        Self {
            faults,
            ..Self::default()
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub fn stats(&self) -> StorageStats {
        StorageStats {
            sessions: self.sessions.load(Ordering::SeqCst),
            chunks: self.chunks.load(Ordering::SeqCst),
            bytes_received: self.bytes_received.load(Ordering::SeqCst),
            objects: self.lock().buckets.values().map(|b| b.len() as u64).sum(),
        }
    }

    pub fn clear(&self) {
        *self.lock() = Inner::default();
        for counter in [&self.sessions, &self.chunks, &self.bytes_received] {
            counter.store(0, Ordering::SeqCst);
        }
    }

    /// Writes (or replaces) an object, as a finished upload or an export does.
    pub fn put(&self, bucket: &str, name: &str, data: Bytes, content_type: &str) -> Value {
        let mut inner = self.lock();
        inner.next_generation += 1;
        let object = StoredObject {
            crc32c: crc32c::crc32c(&data),
            data,
            generation: inner.next_generation,
            content_type: content_type.to_owned(),
            created: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        };
        let described = describe(bucket, name, &object);
        inner
            .buckets
            .entry(bucket.to_owned())
            .or_default()
            .insert(name.to_owned(), object);
        described
    }

    /// The objects of `bucket` whose names `matches` accepts, in name order.
    pub fn matching(&self, bucket: &str, matches: impl Fn(&str) -> bool) -> Vec<(String, Bytes)> {
        self.lock()
            .buckets
            .get(bucket)
            .into_iter()
            .flatten()
            .filter(|(name, _)| matches(name))
            .map(|(name, object)| (name.clone(), object.data.clone()))
            .collect()
    }

    fn object(&self, bucket: &str, name: &str) -> Option<StoredObject> {
        self.lock().buckets.get(bucket)?.get(name).cloned()
    }
}

/// The routes, for the emulator's router (outside the FHIR store's gate: its quota, faults and
/// counters are the store's).
pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route(
            "/upload/storage/v1/b/{bucket}/o",
            axum::routing::post(start_upload)
                .put(upload_chunk)
                .delete(cancel_upload),
        )
        .route("/storage/v1/b/{bucket}", get(bucket))
        .route(
            "/storage/v1/b/{bucket}/iam/testPermissions",
            get(test_permissions),
        )
        .route("/storage/v1/b/{bucket}/o", get(list))
        .route(
            "/storage/v1/b/{bucket}/o/{*object}",
            get(read).delete(delete),
        )
        .route("/download/storage/v1/b/{bucket}/o/{*object}", get(media))
        .route(&format!("{CONTROL_PREFIX}storage"), get(stats))
        .layer(axum::extract::DefaultBodyLimit::max(MAX_UPLOAD_BODY))
}

async fn stats(State(state): State<Arc<AppState>>) -> Response {
    axum::Json(state.storage.stats()).into_response()
}

/// Google's error body for Cloud Storage.
fn storage_error(status: StatusCode, reason: &str, message: &str) -> Response {
    let body = json!({"error": {
        "code": status.as_u16(),
        "message": message,
        "errors": [{"message": message, "domain": "global", "reason": reason}],
    }});
    (
        status,
        [(header::CONTENT_TYPE, "application/json; charset=UTF-8")],
        body.to_string(),
    )
        .into_response()
}

fn json_ok(value: &Value) -> Response {
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json; charset=UTF-8")],
        value.to_string(),
    )
        .into_response()
}

fn no_such_object(bucket: &str, name: &str) -> Response {
    storage_error(
        StatusCode::NOT_FOUND,
        "notFound",
        &format!("No such object: {bucket}/{name}"),
    )
}

/// An object's resource, as `objects.get` answers it.
fn describe(bucket: &str, name: &str, object: &StoredObject) -> Value {
    use base64::Engine;
    let encoded = percent_encoding::utf8_percent_encode(name, percent_encoding::NON_ALPHANUMERIC);
    json!({
        "kind": "storage#object",
        "id": format!("{bucket}/{name}/{}", object.generation),
        "selfLink": format!("/storage/v1/b/{bucket}/o/{encoded}"),
        "mediaLink": format!(
            "/download/storage/v1/b/{bucket}/o/{encoded}?generation={}&alt=media",
            object.generation
        ),
        "name": name,
        "bucket": bucket,
        "generation": object.generation.to_string(),
        "metageneration": "1",
        "contentType": object.content_type,
        "storageClass": "STANDARD",
        "size": object.data.len().to_string(),
        "crc32c": base64::engine::general_purpose::STANDARD.encode(object.crc32c.to_be_bytes()),
        "timeCreated": object.created,
        "updated": object.created,
    })
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct UploadQuery {
    upload_type: Option<String>,
    name: Option<String>,
    /// Google spells this one in snake case.
    #[serde(rename = "upload_id")]
    upload_id: Option<String>,
}

async fn start_upload(
    State(state): State<Arc<AppState>>,
    Path(bucket): Path<String>,
    Query(query): Query<UploadQuery>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let storage = &state.storage;
    let content_type = |fallback: &str| {
        headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or(fallback)
            .to_owned()
    };
    match query.upload_type.as_deref() {
        Some("media") => {
            let Some(name) = query.name.filter(|n| !n.is_empty()) else {
                return storage_error(
                    StatusCode::BAD_REQUEST,
                    "required",
                    "Required parameter: name",
                );
            };
            let content_type = content_type("application/octet-stream");
            storage
                .bytes_received
                .fetch_add(body.len() as u64, Ordering::Relaxed);
            json_ok(&storage.put(&bucket, &name, body, &content_type))
        }
        Some("resumable") => {
            let metadata: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
            let name = query
                .name
                .or_else(|| metadata["name"].as_str().map(str::to_owned))
                .filter(|n| !n.is_empty());
            let Some(name) = name else {
                return storage_error(
                    StatusCode::BAD_REQUEST,
                    "required",
                    "Required parameter: name",
                );
            };
            let content_type = headers
                .get("x-upload-content-type")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
                .or_else(|| metadata["contentType"].as_str().map(str::to_owned))
                .unwrap_or_else(|| "application/octet-stream".to_owned());
            let id = {
                let mut inner = storage.lock();
                inner.next_session += 1;
                let id = format!("emulator-upload-{}", inner.next_session);
                inner.sessions.insert(
                    id.clone(),
                    Session {
                        bucket: bucket.clone(),
                        name: name.clone(),
                        content_type,
                        data: Vec::new(),
                        done: None,
                    },
                );
                id
            };
            storage.sessions.fetch_add(1, Ordering::Relaxed);
            let host = headers
                .get(header::HOST)
                .and_then(|h| h.to_str().ok())
                .map_or_else(|| state.addr.to_string(), str::to_owned);
            let mut location = url::Url::parse(&format!("http://{host}/upload/storage/v1/b/"))
                .expect("a host makes a URL");
            location
                .path_segments_mut()
                .expect("http URL")
                .pop_if_empty()
                .push(&bucket)
                .push("o");
            location
                .query_pairs_mut()
                .append_pair("uploadType", "resumable")
                .append_pair("name", &name)
                .append_pair("upload_id", &id);
            let mut response = StatusCode::OK.into_response();
            if let Ok(value) = HeaderValue::from_str(location.as_str()) {
                response.headers_mut().insert(header::LOCATION, value);
            }
            response
        }
        other => storage_error(
            StatusCode::BAD_REQUEST,
            "invalidParameter",
            &format!(
                "uploadType {} is not supported by the emulator: use media or resumable",
                other.unwrap_or("(none)")
            ),
        ),
    }
}

/// `Content-Range: bytes FIRST-LAST/TOTAL`, `bytes */TOTAL`, with `*` for an unknown total.
#[derive(Debug, PartialEq, Eq)]
struct ContentRange {
    range: Option<(u64, u64)>,
    total: Option<u64>,
}

fn parse_content_range(value: &str) -> Option<ContentRange> {
    let (range, total) = value.trim().strip_prefix("bytes ")?.split_once('/')?;
    let total = match total.trim() {
        "*" => None,
        n => Some(n.parse().ok()?),
    };
    let range = match range.trim() {
        "*" => None,
        r => {
            let (first, last) = r.split_once('-')?;
            let (first, last): (u64, u64) = (first.parse().ok()?, last.parse().ok()?);
            (first <= last).then_some((first, last))?;
            Some((first, last))
        }
    };
    Some(ContentRange { range, total })
}

/// The answer for an upload that is not finished: `308` with what is kept.
fn incomplete(kept: usize) -> Response {
    let mut response = StatusCode::PERMANENT_REDIRECT.into_response();
    if kept > 0 {
        if let Ok(value) = HeaderValue::from_str(&format!("bytes=0-{}", kept - 1)) {
            response.headers_mut().insert(header::RANGE, value);
        }
    }
    response
}

async fn upload_chunk(
    State(state): State<Arc<AppState>>,
    Query(query): Query<UploadQuery>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let storage = &state.storage;
    storage
        .bytes_received
        .fetch_add(body.len() as u64, Ordering::Relaxed);
    let Some(id) = query.upload_id else {
        return storage_error(
            StatusCode::BAD_REQUEST,
            "required",
            "Required parameter: upload_id",
        );
    };
    let Some(range) = headers
        .get(header::CONTENT_RANGE)
        .and_then(|v| v.to_str().ok())
        .and_then(parse_content_range)
    else {
        return storage_error(
            StatusCode::BAD_REQUEST,
            "invalid",
            "Content-Range must be bytes FIRST-LAST/TOTAL or bytes */TOTAL",
        );
    };
    let fault = if body.is_empty() {
        None
    } else {
        let n = storage.chunks.fetch_add(1, Ordering::SeqCst) + 1;
        let faults = storage.faults;
        [
            (faults.partial_chunk, Fault::Partial),
            (faults.unavailable_chunk, Fault::Unavailable),
            (faults.expire_session_chunk, Fault::Expire),
        ]
        .into_iter()
        .find_map(|(at, fault)| (at == n).then_some(fault))
    };
    let mut inner = storage.lock();
    let Some(session) = inner.sessions.get_mut(&id) else {
        return gone();
    };
    match fault {
        Some(Fault::Expire) => {
            inner.sessions.remove(&id);
            return gone();
        }
        Some(Fault::Unavailable) => {
            return storage_error(
                StatusCode::SERVICE_UNAVAILABLE,
                "backendError",
                "Backend Error (injected by the emulator)",
            );
        }
        _ => {}
    }
    if let Some(done) = &session.done {
        return json_ok(done);
    }
    let body = if fault == Some(Fault::Partial) {
        body.slice(..body.len().min(CHUNK_UNIT))
    } else {
        body
    };
    if let Err(message) = append(session, &range, &body, fault == Some(Fault::Partial)) {
        return storage_error(StatusCode::BAD_REQUEST, "invalid", &message);
    }
    if range.total == Some(session.data.len() as u64) {
        let session = inner.sessions.get_mut(&id).expect("still there");
        let (bucket, name, content_type) = (
            session.bucket.clone(),
            session.name.clone(),
            session.content_type.clone(),
        );
        let data = Bytes::from(std::mem::take(&mut session.data));
        drop(inner);
        let described = storage.put(&bucket, &name, data, &content_type);
        if let Some(session) = storage.lock().sessions.get_mut(&id) {
            session.done = Some(described.clone());
        }
        return json_ok(&described);
    }
    incomplete(session.data.len())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    Partial,
    Unavailable,
    Expire,
}

fn gone() -> Response {
    storage_error(
        StatusCode::NOT_FOUND,
        "notFound",
        "No such upload session: it expired or was cancelled; start a new upload",
    )
}

/// Adds the chunk to the session: bytes already kept are skipped, a gap is refused, and what
/// does not end the object is kept in multiples of 256 KiB.
fn append(
    session: &mut Session,
    range: &ContentRange,
    body: &[u8],
    partial: bool,
) -> Result<(), String> {
    let Some((first, last)) = range.range else {
        return Ok(());
    };
    let kept = session.data.len() as u64;
    if body.len() as u64 != last - first + 1 && !partial {
        return Err(format!(
            "Content-Range says {} bytes, the body has {}",
            last - first + 1,
            body.len()
        ));
    }
    if first > kept {
        return Err(format!(
            "the chunk starts at byte {first}, but only {kept} bytes are kept"
        ));
    }
    let new = &body[usize::try_from(kept - first)
        .unwrap_or(usize::MAX)
        .min(body.len())..];
    let ends_object = range.total == Some(last + 1) && !partial;
    let take = if ends_object {
        new.len()
    } else {
        (session.data.len() + new.len()) / CHUNK_UNIT * CHUNK_UNIT - session.data.len()
    };
    session.data.extend_from_slice(&new[..take.min(new.len())]);
    if let Some(total) = range.total {
        if session.data.len() as u64 > total {
            return Err(format!("more than the {total} bytes the upload declared"));
        }
    }
    Ok(())
}

async fn cancel_upload(
    State(state): State<Arc<AppState>>,
    Query(query): Query<UploadQuery>,
) -> Response {
    let removed = query
        .upload_id
        .and_then(|id| state.storage.lock().sessions.remove(&id));
    match removed {
        // Google answers a cancelled upload with 499 Client Closed Request.
        Some(_) => StatusCode::from_u16(499)
            .expect("a valid code")
            .into_response(),
        None => gone(),
    }
}

async fn bucket(Path(bucket): Path<String>) -> Response {
    json_ok(&json!({
        "kind": "storage#bucket",
        "id": bucket,
        "name": bucket,
        "location": "US",
        "storageClass": "STANDARD",
        "metageneration": "1",
    }))
}

/// Every permission asked about is held: the emulator checks no credential for storage.
async fn test_permissions(axum::extract::RawQuery(query): axum::extract::RawQuery) -> Response {
    let asked: Vec<String> = url::form_urlencoded::parse(query.unwrap_or_default().as_bytes())
        .filter(|(key, _)| key == "permissions")
        .map(|(_, value)| value.into_owned())
        .collect();
    json_ok(&json!({
        "kind": "storage#testIamPermissionsResponse",
        "permissions": asked,
    }))
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ListQuery {
    #[serde(default)]
    prefix: String,
    page_token: Option<String>,
    max_results: Option<usize>,
}

async fn list(
    State(state): State<Arc<AppState>>,
    Path(bucket): Path<String>,
    Query(query): Query<ListQuery>,
) -> Response {
    let page_size = query.max_results.unwrap_or(PAGE_SIZE).clamp(1, PAGE_SIZE);
    let inner = state.storage.lock();
    let empty = BTreeMap::new();
    let objects = inner.buckets.get(&bucket).unwrap_or(&empty);
    // The token is the last name of the previous page.
    let after = query.page_token.unwrap_or_default();
    let mut names = objects
        .range::<str, _>((
            std::ops::Bound::Excluded(after.as_str()),
            std::ops::Bound::Unbounded,
        ))
        .filter(|(name, _)| name.starts_with(&query.prefix))
        .take(page_size + 1);
    let items: Vec<Value> = names
        .by_ref()
        .take(page_size)
        .map(|(name, object)| describe(&bucket, name, object))
        .collect();
    let more = names.next().is_some();
    let mut page = json!({"kind": "storage#objects"});
    if more {
        page["nextPageToken"] = items.last().map_or(Value::Null, |o| o["name"].clone());
    }
    if !items.is_empty() {
        page["items"] = Value::Array(items);
    }
    json_ok(&page)
}

#[derive(Debug, Deserialize)]
struct ReadQuery {
    alt: Option<String>,
}

async fn read(
    State(state): State<Arc<AppState>>,
    Path((bucket, name)): Path<(String, String)>,
    Query(query): Query<ReadQuery>,
    headers: HeaderMap,
) -> Response {
    let Some(object) = state.storage.object(&bucket, &name) else {
        return no_such_object(&bucket, &name);
    };
    if query.alt.as_deref() == Some("media") {
        return content(&object, &headers);
    }
    json_ok(&describe(&bucket, &name, &object))
}

async fn media(
    State(state): State<Arc<AppState>>,
    Path((bucket, name)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    match state.storage.object(&bucket, &name) {
        Some(object) => content(&object, &headers),
        None => no_such_object(&bucket, &name),
    }
}

/// The object's bytes, or with `Range: bytes=N-` those from N on (`206`), as a read that was
/// cut off asks for the rest.
fn content(object: &StoredObject, headers: &HeaderMap) -> Response {
    let from = headers
        .get(header::RANGE)
        .and_then(|r| r.to_str().ok())
        .and_then(|r| r.strip_prefix("bytes="))
        .and_then(|r| r.strip_suffix('-'))
        .and_then(|n| n.parse::<usize>().ok());
    let content_type = [(header::CONTENT_TYPE, object.content_type.clone())];
    match from {
        None => (StatusCode::OK, content_type, object.data.clone()).into_response(),
        Some(from) if from < object.data.len() => {
            let range = format!(
                "bytes {from}-{}/{}",
                object.data.len() - 1,
                object.data.len()
            );
            let range = [(header::CONTENT_RANGE, range)];
            let rest = object.data.slice(from..);
            (StatusCode::PARTIAL_CONTENT, content_type, range, rest).into_response()
        }
        Some(_) => storage_error(
            StatusCode::RANGE_NOT_SATISFIABLE,
            "requestedRangeNotSatisfiable",
            "The requested range cannot be satisfied.",
        ),
    }
}

async fn delete(
    State(state): State<Arc<AppState>>,
    Path((bucket, name)): Path<(String, String)>,
) -> Response {
    let removed = state
        .storage
        .lock()
        .buckets
        .get_mut(&bucket)
        .and_then(|objects| objects.remove(&name));
    match removed {
        Some(_) => StatusCode::NO_CONTENT.into_response(),
        None => no_such_object(&bucket, &name),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_ranges() {
        assert_eq!(
            parse_content_range("bytes 0-262143/*"),
            Some(ContentRange {
                range: Some((0, 262_143)),
                total: None
            })
        );
        assert_eq!(
            parse_content_range("bytes */100"),
            Some(ContentRange {
                range: None,
                total: Some(100)
            })
        );
        assert_eq!(parse_content_range("bytes 5-1/10"), None);
        assert_eq!(parse_content_range("0-1/10"), None);
    }

    fn session() -> Session {
        Session {
            bucket: "b".into(),
            name: "o".into(),
            content_type: "text/plain".into(),
            data: Vec::new(),
            done: None,
        }
    }

    #[test]
    fn chunks_are_kept_in_whole_units_until_the_last() {
        let mut s = session();
        let unit = CHUNK_UNIT as u64;
        let range = |first: u64, last: u64, total| ContentRange {
            range: Some((first, last)),
            total,
        };
        // A chunk that is not a whole number of units keeps only the whole units.
        let body = vec![1u8; CHUNK_UNIT + 10];
        append(&mut s, &range(0, unit + 9, None), &body, false).unwrap();
        assert_eq!(s.data.len(), CHUNK_UNIT);
        // Bytes already kept are skipped; a gap is refused.
        append(&mut s, &range(0, unit + 9, Some(unit + 10)), &body, false).unwrap();
        assert_eq!(s.data.len(), CHUNK_UNIT + 10);
        assert!(append(&mut s, &range(unit + 20, unit + 29, None), &[0; 10], false).is_err());
    }
}
