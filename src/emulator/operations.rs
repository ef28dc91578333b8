//! `fhirStores.import` from the emulator's own Cloud Storage and `fhirStores.export` into it,
//! as long-running operations shaped as Google's: `POST .../fhirStores/S:import` (or
//! `:export`) answers at once with the operation's `name`; `GET .../datasets/D/operations/ID` gives `metadata` (`apiMethodName`, `createTime`,
//! `endTime`, `logsUrl`, `counter` {`success`, `failure`, `pending`}), `done`, and then
//! `response` or `error`; `POST .../operations/ID:cancel` stops it (`error.code` 1).
//!
//! Import semantics are Google's: every resource needs its own id and is stored under it
//! whatever the store's settings, an existing one is replaced, references are not checked.
//! `contentStructure` RESOURCE reads one resource per line; the default, BUNDLE, one Bundle per
//! line, and fails a line that is not one with Google's message. When anything fails, the
//! operation ends with Google's `invalid_argument` error and the failures are listed at its
//! `logsUrl` (here the emulator's own `/_emulator/operations/ID/logs`).
//!
//! Export writes what Google's reference describes: one object per resource type under
//! `gcsDestination.uriPrefix` (a `/` appended when missing), named for the type
//! (`PREFIX/Patient`), each line one resource as the store holds it; `_type` limits the types.
//! `counter.success` counts the resources written; the response is `ExportResourcesResponse`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::{Value, json};

use super::AppState;
use super::faults::CONTROL_PREFIX;
use super::google_error::google_error;

const IMPORT_METHOD: &str = "google.cloud.healthcare.v1.fhir.FhirStoreService.ImportResources";
const EXPORT_METHOD: &str = "google.cloud.healthcare.v1.fhir.FhirStoreService.ExportResources";
const FAILED_MESSAGE: &str = "invalid_argument: importing one or more resources failed. Please \
     use the link in the metadata.logsUrl field to view the error logs for this operation.";
/// Google's words for a line that is not a Bundle under the default content structure.
const NO_BUNDLE: &str = "no bundle is found; if you intend to import individual resources, \
     make sure you specify the appropriate ContentStructure in the request";

/// Lines imported between yields, so that progress shows while an import runs.
const LINES_PER_STEP: usize = 500;

/// One long-running operation.
#[derive(Debug)]
pub struct Operation {
    name: String,
    /// `metadata.apiMethodName`.
    method: &'static str,
    id: String,
    created: String,
    success: AtomicU64,
    failure: AtomicU64,
    pending: AtomicU64,
    cancel: AtomicBool,
    /// `endTime` and `response` or `error`, once done.
    outcome: Mutex<Option<(String, Result<Value, Value>)>>,
    logs: Mutex<Vec<String>>,
}

#[derive(Debug, Default)]
pub struct Operations {
    by_id: Mutex<HashMap<String, Arc<Operation>>>,
    next: AtomicU64,
}

impl Operations {
    fn start(&self, dataset: &str, method: &'static str) -> Arc<Operation> {
        // Google's operation ids are long decimal numbers.
        let id = (1_000_000_000_000 + self.next.fetch_add(1, Ordering::SeqCst)).to_string();
        let operation = Arc::new(Operation {
            name: format!("{dataset}/operations/{id}"),
            method,
            id: id.clone(),
            created: now(),
            success: AtomicU64::new(0),
            failure: AtomicU64::new(0),
            pending: AtomicU64::new(0),
            cancel: AtomicBool::new(false),
            outcome: Mutex::new(None),
            logs: Mutex::new(Vec::new()),
        });
        self.by_id
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(id, operation.clone());
        operation
    }

    fn get(&self, id: &str) -> Option<Arc<Operation>> {
        self.by_id
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(id)
            .cloned()
    }

    pub fn clear(&self) {
        self.by_id
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
    }
}

fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

impl Operation {
    fn finish(&self, outcome: Result<Value, Value>) {
        *self.outcome.lock().unwrap_or_else(PoisonError::into_inner) = Some((now(), outcome));
    }

    fn log(&self, line: String) {
        self.logs
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(line);
    }

    /// The operation as `operations.get` answers it.
    fn describe(&self, host: &str) -> Value {
        let count = |n: &AtomicU64| n.load(Ordering::SeqCst).to_string();
        let mut metadata = json!({
            "@type": "type.googleapis.com/google.cloud.healthcare.v1.OperationMetadata",
            "apiMethodName": self.method,
            "createTime": self.created,
            "logsUrl": format!("http://{host}{CONTROL_PREFIX}operations/{}/logs", self.id),
            "counter": {
                "success": count(&self.success),
                "failure": count(&self.failure),
                "pending": count(&self.pending),
            },
        });
        if self.cancel.load(Ordering::SeqCst) {
            metadata["cancelRequested"] = Value::Bool(true);
        }
        let mut operation = json!({"name": self.name, "metadata": metadata});
        if let Some((end, outcome)) = &*self.outcome.lock().unwrap_or_else(PoisonError::into_inner)
        {
            operation["metadata"]["endTime"] = Value::String(end.clone());
            operation["done"] = Value::Bool(true);
            match outcome {
                Ok(response) => operation["response"] = response.clone(),
                Err(error) => operation["error"] = error.clone(),
            }
        }
        operation
    }
}

/// `POST .../fhirStores/S:import` or `S:export`; other `:method`s are not served.
pub async fn store_method(
    State(state): State<Arc<AppState>>,
    Path((p, l, d, store)): Path<(String, String, String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let request: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let dataset = format!("projects/{p}/locations/{l}/datasets/{d}");
    if let Some(store) = store.strip_suffix(":import") {
        return start_import(&state, &dataset, store, &request, &headers);
    }
    if let Some(store) = store.strip_suffix(":export") {
        return start_export(&state, &dataset, store, &request);
    }
    google_error(
        StatusCode::NOT_FOUND,
        "NOT_FOUND",
        &format!(
            "fhirStores/{store} is not a method the emulator serves: use S:import or S:export"
        ),
    )
}

fn start_import(
    state: &Arc<AppState>,
    dataset: &str,
    store: &str,
    request: &Value,
    headers: &HeaderMap,
) -> Response {
    let structure = request["contentStructure"]
        .as_str()
        .filter(|s| *s != "CONTENT_STRUCTURE_UNSPECIFIED")
        .unwrap_or("BUNDLE")
        .to_owned();
    let Some((bucket, pattern)) = request["gcsSource"]["uri"]
        .as_str()
        .and_then(|uri| uri.strip_prefix("gs://"))
        .and_then(|rest| rest.split_once('/'))
        .map(|(b, p)| (b.to_owned(), p.to_owned()))
    else {
        return google_error(
            StatusCode::BAD_REQUEST,
            "INVALID_ARGUMENT",
            "gcsSource.uri must be gs://BUCKET/OBJECT, wildcards allowed",
        );
    };
    if !matches!(structure.as_str(), "BUNDLE" | "RESOURCE") {
        return google_error(
            StatusCode::BAD_REQUEST,
            "INVALID_ARGUMENT",
            &format!(
                "contentStructure {structure} is not served by the emulator: use RESOURCE or BUNDLE"
            ),
        );
    }
    let operation = state.operations.start(dataset, IMPORT_METHOD);
    let host = host(state, headers);
    let answer = json!({"name": operation.name});
    let store = state.stores.get(&format!("{dataset}/fhirStores/{store}"));
    let objects = state
        .storage
        .matching(&bucket, |name| wildcard(&pattern, name));
    tokio::spawn(async move {
        import(&operation, &store, objects, structure == "RESOURCE").await;
    });
    tracing::debug!(
        "import started; follow it at http://{host}/v1/{}",
        answer["name"]
    );
    json_ok(&answer)
}

fn json_ok(value: &Value) -> Response {
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json; charset=UTF-8")],
        value.to_string(),
    )
        .into_response()
}

/// `POST .../fhirStores/S:export` to `gcsDestination.uriPrefix`, `_type` limiting the types.
fn start_export(state: &Arc<AppState>, dataset: &str, store: &str, request: &Value) -> Response {
    let Some((bucket, prefix)) = request["gcsDestination"]["uriPrefix"]
        .as_str()
        .and_then(|uri| uri.strip_prefix("gs://"))
        .map(|rest| rest.split_once('/').unwrap_or((rest, "")))
        .filter(|(bucket, _)| !bucket.is_empty())
    else {
        return google_error(
            StatusCode::BAD_REQUEST,
            "INVALID_ARGUMENT",
            "gcsDestination.uriPrefix must be gs://BUCKET/PATH (the emulator exports only to \
             Cloud Storage)",
        );
    };
    let prefix = match prefix {
        "" => String::new(),
        p if p.ends_with('/') => p.to_owned(),
        p => format!("{p}/"),
    };
    let types: Option<Vec<String>> = request["_type"]
        .as_str()
        .filter(|t| !t.is_empty())
        .map(|t| t.split(',').map(|t| t.trim().to_owned()).collect());
    let operation = state.operations.start(dataset, EXPORT_METHOD);
    let answer = json!({"name": operation.name});
    let store = state.stores.get(&format!("{dataset}/fhirStores/{store}"));
    let (state, bucket) = (state.clone(), bucket.to_owned());
    tokio::spawn(async move {
        let bodies = store.bodies(types.as_deref());
        export(&operation, &state.storage, &bucket, &prefix, bodies).await;
    });
    json_ok(&answer)
}

/// Writes one NDJSON object per type, counting the resources as they go.
async fn export(
    operation: &Operation,
    storage: &super::storage::Buckets,
    bucket: &str,
    prefix: &str,
    bodies: Vec<(String, Vec<Bytes>)>,
) {
    let total: usize = bodies.iter().map(|(_, b)| b.len()).sum();
    operation.pending.store(total as u64, Ordering::SeqCst);
    for (resource_type, resources) in bodies {
        if operation.cancel.load(Ordering::SeqCst) {
            operation.finish(Err(
                json!({"code": 1, "message": "Operation was cancelled"}),
            ));
            return;
        }
        let mut object = Vec::with_capacity(resources.iter().map(|b| b.len() + 1).sum());
        for body in &resources {
            object.extend_from_slice(body);
            object.push(b'\n');
        }
        let name = format!("{prefix}{resource_type}");
        storage.put(bucket, &name, Bytes::from(object), "application/x-ndjson");
        let n = resources.len() as u64;
        operation.success.fetch_add(n, Ordering::SeqCst);
        operation.pending.fetch_sub(n, Ordering::SeqCst);
        tokio::task::yield_now().await;
    }
    operation.finish(Ok(json!({
        "@type": "type.googleapis.com/google.cloud.healthcare.v1.fhir.rest.ExportResourcesResponse",
    })));
}

fn host(state: &AppState, headers: &HeaderMap) -> String {
    headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .map_or_else(|| state.addr.to_string(), str::to_owned)
}

async fn import(
    operation: &Operation,
    store: &super::store::Store,
    objects: Vec<(String, Bytes)>,
    one_resource_per_line: bool,
) {
    if objects.is_empty() {
        operation.finish(Err(json!({
            "code": 5,
            "message": "no object matches the import's gcsSource.uri",
        })));
        return;
    }
    let lines: u64 = objects
        .iter()
        .map(|(_, data)| {
            data.split(|b| *b == b'\n')
                .filter(|l| !l.is_empty())
                .count() as u64
        })
        .sum();
    operation.pending.store(lines, Ordering::SeqCst);
    for (name, data) in &objects {
        let mut offset = 0;
        for (i, line) in data.split(|b| *b == b'\n').enumerate() {
            let start = offset;
            offset += line.len() + 1;
            if line.is_empty() {
                continue;
            }
            if operation.cancel.load(Ordering::SeqCst) {
                operation.finish(Err(
                    json!({"code": 1, "message": "Operation was cancelled"}),
                ));
                return;
            }
            let failures = import_line(store, line, one_resource_per_line);
            operation.pending.fetch_sub(1, Ordering::SeqCst);
            for failure in failures {
                match failure {
                    Ok(()) => operation.success.fetch_add(1, Ordering::SeqCst),
                    Err(message) => {
                        operation.log(format!(
                            "gs object {name}, record starting at byte {start}: {message}"
                        ));
                        operation.failure.fetch_add(1, Ordering::SeqCst)
                    }
                };
            }
            if i % LINES_PER_STEP == LINES_PER_STEP - 1 {
                tokio::task::yield_now().await;
            }
        }
    }
    if operation.failure.load(Ordering::SeqCst) > 0 {
        operation.finish(Err(json!({"code": 3, "message": FAILED_MESSAGE})));
    } else {
        operation.finish(Ok(json!({
            "@type": "type.googleapis.com/google.cloud.healthcare.v1.fhir.rest.ImportResourcesResponse",
        })));
    }
}

/// One line's resources, each stored or refused with a reason.
fn import_line(
    store: &super::store::Store,
    line: &[u8],
    one_resource_per_line: bool,
) -> Vec<Result<(), String>> {
    let value: Value = match serde_json::from_slice(line) {
        Ok(value) => value,
        Err(e) => return vec![Err(format!("not JSON: {e}"))],
    };
    let store_one = |resource: Value| store.import(resource).map_err(|e| e.diagnostics);
    if one_resource_per_line {
        return vec![store_one(value)];
    }
    if value["resourceType"] != "Bundle" {
        return vec![Err(NO_BUNDLE.to_owned())];
    }
    value["entry"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|entry| store_one(entry["resource"].clone()))
        .collect()
}

/// Google's import wildcards: `*` within a path part, `**` across parts, `?` one character.
fn wildcard(pattern: &str, name: &str) -> bool {
    fn matches(p: &[u8], n: &[u8]) -> bool {
        match p {
            [] => n.is_empty(),
            [b'*', b'*', rest @ ..] => (0..=n.len()).any(|i| matches(rest, &n[i..])),
            [b'*', rest @ ..] => (0..=n.len())
                .take_while(|&i| i == 0 || n[i - 1] != b'/')
                .any(|i| matches(rest, &n[i..])),
            [b'?', rest @ ..] => !n.is_empty() && matches(rest, &n[1..]),
            [c, rest @ ..] => n.first() == Some(c) && matches(rest, &n[1..]),
        }
    }
    matches(pattern.as_bytes(), name.as_bytes())
}

/// `operations.get`, `operations.cancel` and the logs a `logsUrl` points at.
pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route(
            "/v1/projects/{p}/locations/{l}/datasets/{d}/operations/{op}",
            get(get_operation).post(cancel_operation),
        )
        .route(
            &format!("{CONTROL_PREFIX}operations/{{id}}/logs"),
            get(logs),
        )
}

fn no_operation(id: &str) -> Response {
    google_error(
        StatusCode::NOT_FOUND,
        "NOT_FOUND",
        &format!("operation {id} not found"),
    )
}

async fn get_operation(
    State(state): State<Arc<AppState>>,
    Path((_, _, _, id)): Path<(String, String, String, String)>,
    headers: HeaderMap,
) -> Response {
    match state.operations.get(&id) {
        Some(operation) => json_ok(&operation.describe(&host(&state, &headers))),
        None => no_operation(&id),
    }
}

async fn cancel_operation(
    State(state): State<Arc<AppState>>,
    Path((_, _, _, op)): Path<(String, String, String, String)>,
) -> Response {
    let Some(id) = op.strip_suffix(":cancel") else {
        return no_operation(&op);
    };
    match state.operations.get(id) {
        Some(operation) => {
            operation.cancel.store(true, Ordering::SeqCst);
            (
                StatusCode::OK,
                [(header::CONTENT_TYPE, "application/json; charset=UTF-8")],
                "{}",
            )
                .into_response()
        }
        None => no_operation(id),
    }
}

async fn logs(State(state): State<Arc<AppState>>, Path(id): Path<String>) -> Response {
    match state.operations.get(&id) {
        Some(operation) => operation
            .logs
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .join("\n")
            .into_response(),
        None => no_operation(&id),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards_as_google_reads_them() {
        assert!(wildcard("run/**.ndjson", "run/a/b.ndjson"));
        assert!(wildcard("run/*.ndjson", "run/b.ndjson"));
        assert!(!wildcard("run/*.ndjson", "run/a/b.ndjson"));
        assert!(!wildcard("run/**.ndjson", "run/m.manifest.json"));
        assert!(wildcard("run/?.ndjson", "run/x.ndjson"));
        assert!(!wildcard("run/?.ndjson", "run/xy.ndjson"));
        assert!(wildcard("run/exact", "run/exact"));
    }
}
