//! The HTTP surface: Healthcare API paths, status codes, headers and error shapes, on top of
//! the store.

use std::io::Read;
use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};

use super::faults::{self, CONTROL_PREFIX};
use super::query::SearchQuery;
use super::store::{BundleResult, FhirError, Store, WriteResult};
use super::{AppState, STORE_NAME, validate};

/// executeBundle requests are capped at 50 MB on the Healthcare API; so is every body here,
/// before and after gzip.
pub const MAX_BODY: usize = 50 * 1024 * 1024;

const FHIR_JSON: &str = "application/fhir+json; charset=utf-8";

pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route(&format!("{CONTROL_PREFIX}stats"), get(stats))
        .route(&format!("{CONTROL_PREFIX}reset"), post(reset))
        .fallback(fhir)
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            faults::gate,
        ))
        .with_state(state)
}

async fn stats(State(state): State<Arc<AppState>>) -> Response {
    axum::Json(state.stats()).into_response()
}

async fn reset(State(state): State<Arc<AppState>>) -> StatusCode {
    state.reset();
    StatusCode::NO_CONTENT
}

/// Google's error shape, used for auth, quota and transient failures.
pub fn google_error(status: StatusCode, google_status: &str, message: &str) -> Response {
    let body = json!({"error": {
        "code": status.as_u16(),
        "message": message,
        "status": google_status,
    }});
    (
        status,
        [(header::CONTENT_TYPE, "application/json; charset=UTF-8")],
        body.to_string(),
    )
        .into_response()
}

/// A request path split into the store it addresses and the part after `/fhir`.
struct FhirPath<'a> {
    store: String,
    /// The path up to and including `/fhir`.
    prefix: &'a str,
    rest: &'a str,
}

impl<'a> FhirPath<'a> {
    fn parse(path: &'a str) -> Option<Self> {
        if let Some(rest) = path.strip_prefix("/fhir") {
            if rest.is_empty() || rest.starts_with('/') {
                return Some(Self {
                    store: STORE_NAME.to_owned(),
                    prefix: "/fhir",
                    rest,
                });
            }
            return None;
        }
        let after_version = path.strip_prefix("/v1/")?;
        let segments: Vec<&str> = after_version.splitn(10, '/').collect();
        match segments.as_slice() {
            [
                "projects",
                p,
                "locations",
                l,
                "datasets",
                d,
                "fhirStores",
                s,
                "fhir",
                rest @ ..,
            ] if [p, l, d, s].iter().all(|part| !part.is_empty()) => {
                let prefix_len = match rest.first() {
                    Some(rest) => path.len() - rest.len() - 1,
                    None => path.len(),
                };
                Some(Self {
                    store: format!("projects/{p}/locations/{l}/datasets/{d}/fhirStores/{s}"),
                    prefix: &path[..prefix_len],
                    rest: &path[prefix_len..],
                })
            }
            _ => None,
        }
    }
}

async fn fhir(State(state): State<Arc<AppState>>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let path = parts.uri.path();
    let Some(target) = FhirPath::parse(path) else {
        return fhir_error(&FhirError::not_found(format!(
            "{path} is not a FHIR endpoint: use \
             /v1/projects/P/locations/L/datasets/D/fhirStores/S/fhir/... or /fhir/..."
        )));
    };
    if state.options.sink {
        return sink_answer(&parts.method, target.rest, body).await;
    }
    let host = parts
        .headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .map_or_else(|| state.addr.to_string(), str::to_owned);
    let base = format!("http://{host}{}", target.prefix);
    let store = state.stores.get(&target.store);
    let segments: Vec<&str> = target.rest.split('/').filter(|s| !s.is_empty()).collect();
    let minimal = prefers_minimal(&parts.headers);

    let body = if matches!(parts.method, Method::POST | Method::PUT) {
        match read_json(body, &parts.headers).await {
            Ok(value) => Some(value),
            Err(e) => return fhir_error(&e),
        }
    } else {
        None
    };
    let result = match (&parts.method, segments.as_slice(), body) {
        (&Method::GET, ["metadata"], _) => Ok(fhir_json(StatusCode::OK, capability(&base))),
        (&Method::POST, [], Some(bundle)) => execute_bundle(&store, bundle, &base, minimal),
        (&Method::GET, [resource_type], _) => search(
            &store,
            resource_type,
            parts.uri.query().unwrap_or(""),
            &base,
        ),
        (&Method::POST, [resource_type], Some(resource)) => {
            let condition = parts
                .headers
                .get("if-none-exist")
                .map(|h| String::from_utf8_lossy(h.as_bytes()).into_owned());
            store
                .create(resource_type, resource, condition.as_deref())
                .map(|r| write_response(&r, &base, minimal))
        }
        (&Method::GET, [resource_type, id], _) => store
            .read(resource_type, id)
            .map(|r| resource_response(StatusCode::OK, &r, &base, false)),
        (&Method::PUT, [resource_type, id], Some(resource)) => store
            .update(resource_type, id, resource)
            .map(|r| write_response(&r, &base, minimal)),
        (&Method::GET, [resource_type, id, "_history", version], _) => store
            .read(resource_type, id)
            .and_then(|r| {
                if r.version.to_string() == *version {
                    Ok(r)
                } else {
                    Err(FhirError::not_found(format!(
                        "{resource_type}/{id} has no version {version} (the emulator keeps only \
                         the current version, {})",
                        r.version
                    )))
                }
            })
            .map(|r| resource_response(StatusCode::OK, &r, &base, false)),
        (method, [] | [_] | [_, _] | [_, _, "_history", _], _) => Err(FhirError::new(
            405,
            "not-supported",
            format!("{method} {path} is not supported by the emulator"),
        )),
        _ => Err(FhirError::not_found(format!(
            "no FHIR interaction at {path}"
        ))),
    };
    result.unwrap_or_else(|e| fhir_error(&e))
}

/// The benchmark sink's answer: a write is "created" at a new id; a transaction gets one
/// created entry per request entry. Nothing is kept and nothing is checked.
async fn sink_answer(method: &Method, rest: &str, body: Body) -> Response {
    static NEXT_ID: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    let new_id = || NEXT_ID.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let Ok(bytes) = axum::body::to_bytes(body, MAX_BODY).await else {
        return fhir_error(&FhirError::new(
            413,
            "too-costly",
            "the request body is larger than 50 MB",
        ));
    };
    let segments: Vec<&str> = rest.split('/').filter(|s| !s.is_empty()).collect();
    match (method, segments.as_slice()) {
        (&Method::POST, []) => {
            #[derive(serde::Deserialize)]
            struct Bundle {
                #[serde(default)]
                entry: Vec<Entry>,
            }
            #[derive(serde::Deserialize)]
            struct Entry {
                resource: Option<Typed>,
            }
            #[derive(serde::Deserialize)]
            struct Typed {
                #[serde(rename = "resourceType")]
                resource_type: String,
            }
            let Ok(bundle) = serde_json::from_slice::<Bundle>(&bytes) else {
                return fhir_error(&FhirError::new(400, "invalid", "the body is not a Bundle"));
            };
            let entries: Vec<Value> = bundle
                .entry
                .iter()
                .map(|entry| {
                    let kind = entry
                        .resource
                        .as_ref()
                        .map_or("Basic", |r| r.resource_type.as_str());
                    json!({"response": {
                        "status": "201 Created",
                        "location": format!("{kind}/{}/_history/1", new_id()),
                    }})
                })
                .collect();
            let answer =
                json!({"resourceType": "Bundle", "type": "transaction-response", "entry": entries});
            fhir_json(StatusCode::OK, answer.to_string())
        }
        (&Method::POST, [resource_type]) | (&Method::PUT, [resource_type, _]) => {
            let id = match segments.as_slice() {
                [_, id] => (*id).to_owned(),
                _ => new_id().to_string(),
            };
            let location = format!("{resource_type}/{id}/_history/1");
            (
                StatusCode::CREATED,
                [
                    (header::LOCATION, location.as_str()),
                    (header::CONTENT_TYPE, FHIR_JSON),
                ],
            )
                .into_response()
        }
        _ => fhir_error(&FhirError::new(
            405,
            "not-supported",
            "the benchmark sink only answers creates, updates and transactions",
        )),
    }
}

/// `Prefer: return=minimal` asks for no resource bodies in answers.
fn prefers_minimal(headers: &HeaderMap) -> bool {
    headers
        .get_all("prefer")
        .iter()
        .any(|h| h.to_str().is_ok_and(|v| v.contains("return=minimal")))
}

async fn read_json(body: Body, headers: &HeaderMap) -> Result<Value, FhirError> {
    let too_large = || FhirError::new(413, "too-costly", "the request body is larger than 50 MB");
    let bytes = axum::body::to_bytes(body, MAX_BODY)
        .await
        .map_err(|_| too_large())?;
    let encoding = headers
        .get(header::CONTENT_ENCODING)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("identity")
        .trim()
        .to_ascii_lowercase();
    let bytes = match encoding.as_str() {
        "identity" | "" => bytes.to_vec(),
        "gzip" | "x-gzip" => {
            let mut inflated = Vec::new();
            flate2::read::GzDecoder::new(&bytes[..])
                .take(MAX_BODY as u64 + 1)
                .read_to_end(&mut inflated)
                .map_err(|e| FhirError::invalid(format!("the gzip body is corrupt: {e}")))?;
            if inflated.len() > MAX_BODY {
                return Err(too_large());
            }
            inflated
        }
        other => {
            return Err(FhirError::new(
                415,
                "not-supported",
                format!("Content-Encoding {other} is not supported (gzip is)"),
            ));
        }
    };
    if bytes.is_empty() {
        return Err(FhirError::invalid("the request has no body"));
    }
    serde_json::from_slice(&bytes)
        .map_err(|e| FhirError::invalid(format!("the body is not valid JSON: {e}")))
}

fn fhir_json(status: StatusCode, body: impl Into<Body>) -> Response {
    (status, [(header::CONTENT_TYPE, FHIR_JSON)], body.into()).into_response()
}

fn fhir_error(error: &FhirError) -> Response {
    let status = StatusCode::from_u16(error.status).unwrap_or(StatusCode::BAD_REQUEST);
    fhir_json(status, error.operation_outcome().to_string())
}

fn resource_response(
    status: StatusCode,
    resource: &super::store::StoredResource,
    base: &str,
    minimal: bool,
) -> Response {
    let body = if minimal {
        Body::empty()
    } else {
        Body::from(resource.body.clone())
    };
    let mut response = fhir_json(status, body);
    let headers = response.headers_mut();
    if let Ok(location) = HeaderValue::try_from(format!("{base}/{}", resource.location())) {
        headers.insert(header::LOCATION, location);
    }
    if let Ok(etag) = HeaderValue::try_from(resource.etag()) {
        headers.insert(header::ETAG, etag);
    }
    response
}

fn write_response(result: &WriteResult, base: &str, minimal: bool) -> Response {
    let status = StatusCode::from_u16(result.status()).unwrap_or(StatusCode::OK);
    resource_response(status, &result.resource, base, minimal)
}

fn status_line(status: u16) -> String {
    let reason = StatusCode::from_u16(status)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("");
    format!("{status} {reason}")
}

fn execute_bundle(
    store: &Store,
    bundle: Value,
    base: &str,
    minimal: bool,
) -> Result<Response, FhirError> {
    let (kind, entries): (&str, Vec<Result<WriteResult, FhirError>>) =
        match store.execute_bundle(bundle)? {
            BundleResult::Transaction(results) => (
                "transaction-response",
                results.into_iter().map(Ok).collect(),
            ),
            BundleResult::Batch(results) => ("batch-response", results),
        };
    // Stored bodies are spliced in as they are: the answer is never parsed and re-serialized.
    let mut out = Vec::with_capacity(
        64 + entries
            .iter()
            .map(|e| e.as_ref().map_or(256, |r| r.resource.body.len() + 256))
            .sum::<usize>(),
    );
    out.extend_from_slice(br#"{"resourceType":"Bundle","type":""#);
    out.extend_from_slice(kind.as_bytes());
    out.push(b'"');
    for (i, entry) in entries.iter().enumerate() {
        out.extend_from_slice(if i == 0 { br#","entry":["# } else { b"," });
        match entry {
            Ok(result) => {
                let resource = &result.resource;
                let response = json!({
                    "status": status_line(result.status()),
                    "location": resource.location(),
                    "etag": resource.etag(),
                    "lastModified": &*resource.last_updated,
                });
                let full_url = format!("{base}/{}/{}", resource.resource_type, resource.id);
                out.extend_from_slice(br#"{"fullUrl":"#);
                write_json(&mut out, &Value::String(full_url));
                if !minimal {
                    out.extend_from_slice(br#","resource":"#);
                    out.extend_from_slice(&resource.body);
                }
                out.extend_from_slice(br#","response":"#);
                write_json(&mut out, &response);
                out.push(b'}');
            }
            Err(error) => write_json(
                &mut out,
                &json!({"response": {
                    "status": status_line(error.status),
                    "outcome": error.operation_outcome(),
                }}),
            ),
        }
    }
    if !entries.is_empty() {
        out.push(b']');
    }
    out.push(b'}');
    Ok(fhir_json(StatusCode::OK, out))
}

fn search(
    store: &Store,
    resource_type: &str,
    raw_query: &str,
    base: &str,
) -> Result<Response, FhirError> {
    let query = SearchQuery::parse(raw_query).map_err(FhirError::invalid)?;
    let page = store.search(resource_type, &query)?;
    let mut out = Vec::with_capacity(
        256 + page
            .resources
            .iter()
            .map(|r| r.body.len() + 128)
            .sum::<usize>(),
    );
    let link = |offset: usize| format!("{base}/{resource_type}?{}", query.to_query_string(offset));
    let mut links = vec![json!({"relation": "self", "url": link(query.offset)})];
    let next = query.offset.saturating_add(query.count);
    if !query.summary_count && query.count > 0 && next < page.total {
        links.push(json!({"relation": "next", "url": link(next)}));
    }
    out.extend_from_slice(br#"{"resourceType":"Bundle","type":"searchset","total":"#);
    out.extend_from_slice(page.total.to_string().as_bytes());
    if !query.summary_count {
        out.extend_from_slice(br#","link":"#);
        write_json(&mut out, &Value::Array(links));
    }
    for (i, resource) in page.resources.iter().enumerate() {
        out.extend_from_slice(if i == 0 { br#","entry":["# } else { b"," });
        out.extend_from_slice(br#"{"fullUrl":"#);
        write_json(
            &mut out,
            &Value::String(format!("{base}/{resource_type}/{}", resource.id)),
        );
        out.extend_from_slice(br#","resource":"#);
        out.extend_from_slice(&resource.body);
        out.extend_from_slice(br#","search":{"mode":"match"}}"#);
    }
    if !page.resources.is_empty() {
        out.push(b']');
    }
    out.push(b'}');
    Ok(fhir_json(StatusCode::OK, out))
}

fn write_json(out: &mut Vec<u8>, value: &Value) {
    // Writing a Value into a Vec cannot fail.
    let _ = serde_json::to_writer(out, value);
}

/// A minimal CapabilityStatement: what the emulator does, for clients that ask.
fn capability(base: &str) -> String {
    let resources: Vec<Value> = validate::RESOURCE_TYPES
        .iter()
        .map(|resource_type| {
            json!({
                "type": resource_type,
                "interaction": [
                    {"code": "read"}, {"code": "vread"}, {"code": "update"},
                    {"code": "create"}, {"code": "search-type"}
                ],
                "versioning": "versioned",
                "updateCreate": true,
                "conditionalCreate": true,
                "searchParam": [
                    {"name": "_id", "type": "token"},
                    {"name": "identifier", "type": "token"}
                ]
            })
        })
        .collect();
    json!({
        "resourceType": "CapabilityStatement",
        "status": "active",
        "date": chrono::Utc::now().format("%Y-%m-%d").to_string(),
        "kind": "instance",
        "software": {"name": "fhirgen emulator", "version": env!("CARGO_PKG_VERSION")},
        "implementation": {
            "description": "In-memory Cloud Healthcare API FHIR store emulator",
            "url": base
        },
        "fhirVersion": "4.0.1",
        "format": ["json"],
        "rest": [{
            "mode": "server",
            "resource": resources,
            "interaction": [{"code": "transaction"}, {"code": "batch"}]
        }]
    })
    .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_name_their_store() {
        let p =
            FhirPath::parse("/v1/projects/a/locations/b/datasets/c/fhirStores/d/fhir/Patient/1")
                .unwrap();
        assert_eq!(p.store, "projects/a/locations/b/datasets/c/fhirStores/d");
        assert_eq!(
            p.prefix,
            "/v1/projects/a/locations/b/datasets/c/fhirStores/d/fhir"
        );
        assert_eq!(p.rest, "/Patient/1");
        let bare = "/v1/projects/a/locations/b/datasets/c/fhirStores/d/fhir";
        let p = FhirPath::parse(bare).unwrap();
        assert_eq!((p.prefix, p.rest), (bare, ""));
        let slash = format!("{bare}/");
        let p = FhirPath::parse(&slash).unwrap();
        assert_eq!((p.prefix, p.rest), (bare, "/"));
        let p = FhirPath::parse("/fhir/metadata").unwrap();
        assert_eq!(
            (p.store.as_str(), p.prefix, p.rest),
            (STORE_NAME, "/fhir", "/metadata")
        );
        assert!(FhirPath::parse("/fhirx").is_none());
        assert!(FhirPath::parse("/v1/projects/a/locations/b/datasets/c/fhirStores/d").is_none());
        assert!(
            FhirPath::parse("/v1/projects//locations/b/datasets/c/fhirStores/d/fhir").is_none()
        );
    }
}
