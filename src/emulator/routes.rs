//! The HTTP surface: Healthcare API paths, status codes, headers and error shapes, on top of
//! the store.

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};

use super::faults::{self, CONTROL_PREFIX};
use super::path::{FhirPath, store_resource};
use super::query::SearchQuery;
use super::store::{BundleResult, FhirError, Store, StoredResource, WriteResult};
use super::wire::{self, fhir_error, fhir_json, write_json};
use super::{AppState, capability, sink};

pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route(&format!("{CONTROL_PREFIX}stats"), get(stats))
        .route(&format!("{CONTROL_PREFIX}reset"), post(reset))
        // fhirStores.import is a POST beside the store's settings (fhirStores.get).
        .route(
            "/v1/projects/{p}/locations/{l}/datasets/{d}/fhirStores/{s}",
            post(super::operations::store_method).fallback(fhir),
        )
        .fallback(fhir)
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            faults::gate,
        ))
        // After the gate: the store's quota, faults and counters are not Cloud Storage's.
        .merge(super::storage::routes())
        .merge(super::operations::routes())
        .with_state(state)
}

async fn stats(State(state): State<Arc<AppState>>) -> Response {
    axum::Json(state.stats()).into_response()
}

async fn reset(State(state): State<Arc<AppState>>) -> StatusCode {
    state.reset();
    StatusCode::NO_CONTENT
}

async fn fhir(State(state): State<Arc<AppState>>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let path = parts.uri.path();
    let Some(target) = FhirPath::parse(path) else {
        if let (&Method::GET, Some(name)) = (&parts.method, store_resource(path)) {
            // fhirStores.get: the store's settings, which are the emulator's.
            let settings = capability::store_settings(&name, &state.options);
            return (
                StatusCode::OK,
                [(header::CONTENT_TYPE, "application/json; charset=UTF-8")],
                settings.to_string(),
            )
                .into_response();
        }
        return fhir_error(&FhirError::not_found(format!(
            "{path} is not a FHIR endpoint: use \
             /v1/projects/P/locations/L/datasets/D/fhirStores/S/fhir/... or /fhir/..."
        )));
    };
    let host = parts
        .headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .map_or_else(|| state.addr.to_string(), str::to_owned);
    let base = format!("http://{host}{}", target.prefix);
    // The sink describes itself like the store it stands in for, and answers writes alone.
    if state.options.sink
        && !(parts.method == Method::GET && target.rest.trim_matches('/') == "metadata")
    {
        return sink::answer(&parts.method, &parts.headers, target.rest, &base, body).await;
    }
    let store = state.stores.get(&target.store);
    let segments: Vec<&str> = target.rest.split('/').filter(|s| !s.is_empty()).collect();

    let body = if matches!(parts.method, Method::POST | Method::PUT) {
        let limit = if target.is_base() {
            wire::MAX_BUNDLE_BODY
        } else {
            wire::MAX_BODY
        };
        match read_json(body, &parts.headers, limit).await {
            Ok(value) => Some(value),
            Err(e) => return fhir_error(&e),
        }
    } else {
        None
    };
    let query = parts.uri.query().filter(|q| !q.is_empty());
    let result = match (&parts.method, segments.as_slice(), body) {
        (&Method::GET, ["metadata"], _) => Ok(fhir_json(
            StatusCode::OK,
            capability::capability_statement(&base, &state.options).to_string(),
        )),
        (&Method::POST, [], Some(bundle)) => execute_bundle(&store, bundle, &base),
        (&Method::GET, [resource_type], _) => {
            search(&store, resource_type, query.unwrap_or(""), &base)
        }
        (&Method::POST, [resource_type], Some(resource)) => {
            let condition = parts
                .headers
                .get("if-none-exist")
                .map(|h| String::from_utf8_lossy(h.as_bytes()).into_owned());
            store
                .create(resource_type, resource, condition.as_deref())
                .map(|r| write_response(&r, &base))
        }
        (&Method::PUT, [resource_type], Some(resource)) => match query {
            Some(condition) => store
                .conditional_update(resource_type, condition, resource)
                .map(|r| write_response(&r, &base)),
            None => Err(FhirError::invalid(format!(
                "PUT {path} needs an id (PUT {resource_type}/ID) or a condition \
                 (PUT {resource_type}?identifier=system|value)"
            ))),
        },
        (&Method::GET, [resource_type, id], _) => store
            .read(resource_type, id)
            .map(|r| resource_response(StatusCode::OK, &r, &base)),
        (&Method::PUT, [resource_type, id], Some(resource)) => store
            .update(resource_type, id, resource)
            .map(|r| write_response(&r, &base)),
        (&Method::DELETE, [resource_type, id], _) => store
            .delete(resource_type, id)
            .map(|()| fhir_json(StatusCode::OK, "{}".to_owned())),
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
            .map(|r| resource_response(StatusCode::OK, &r, &base)),
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

async fn read_json(body: Body, headers: &HeaderMap, limit: usize) -> Result<Value, FhirError> {
    let bytes = wire::collect(body, limit).await?;
    wire::parse_json(&wire::decode(bytes, headers, limit)?)
}

/// A resource in full, whatever `Prefer` asks: the Healthcare API documents the resource as
/// the answer of every read, create and update.
fn resource_response(status: StatusCode, resource: &StoredResource, base: &str) -> Response {
    let mut response = fhir_json(status, resource.body.clone());
    let headers = response.headers_mut();
    if let Ok(location) = HeaderValue::try_from(format!("{base}/{}", resource.location())) {
        headers.insert(header::LOCATION, location);
    }
    if let Ok(etag) = HeaderValue::try_from(resource.etag()) {
        headers.insert(header::ETAG, etag);
    }
    response
}

fn write_response(result: &WriteResult, base: &str) -> Response {
    let status = StatusCode::from_u16(result.status()).unwrap_or(StatusCode::OK);
    resource_response(status, &result.resource, base)
}

fn status_line(status: u16) -> String {
    let reason = StatusCode::from_u16(status)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("");
    format!("{status} {reason}")
}

/// The transaction-response or batch-response: per entry the resource in full, its absolute
/// `fullUrl`, and a `response` whose `location` is absolute as the Healthcare API's is.
fn execute_bundle(store: &Store, bundle: Value, base: &str) -> Result<Response, FhirError> {
    let (kind, entries): (&str, Vec<Result<WriteResult, FhirError>>) =
        match store.execute_bundle(bundle)? {
            BundleResult::Transaction(results) => (
                "transaction-response",
                results.into_iter().map(Ok).collect(),
            ),
            BundleResult::Batch(results) => ("batch-response", results),
            BundleResult::TransactionAsBatch(results) => ("transaction-response", results),
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
                    "location": format!("{base}/{}", resource.location()),
                    "etag": resource.etag(),
                    "lastModified": &*resource.last_updated,
                });
                let full_url = format!("{base}/{}/{}", resource.resource_type, resource.id);
                out.extend_from_slice(br#"{"fullUrl":"#);
                write_json(&mut out, &Value::String(full_url));
                out.extend_from_slice(br#","resource":"#);
                out.extend_from_slice(&resource.body);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_lines_carry_the_reason() {
        assert_eq!(status_line(201), "201 Created");
        assert_eq!(status_line(412), "412 Precondition Failed");
    }
}
