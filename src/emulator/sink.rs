//! The benchmark sink (`serve --sink`): answers every write like a store that created it, with
//! the resource in full, without storing or checking anything, so that a load test measures
//! the client and not this store.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::Response;
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{Map, Value, json};

use super::store::FhirError;
use super::wire::{self, fhir_error, fhir_json, write_json};

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

fn new_id() -> String {
    NEXT_ID.fetch_add(1, Ordering::Relaxed).to_string()
}

pub async fn answer(
    method: &Method,
    headers: &HeaderMap,
    rest: &str,
    base: &str,
    body: Body,
) -> Response {
    let limit = wire::MAX_BUNDLE_BODY;
    let bytes = match wire::collect(body, limit).await {
        Ok(bytes) => wire::decode(bytes, headers, limit),
        Err(e) => Err(e),
    };
    let bytes = match bytes {
        Ok(bytes) => bytes,
        Err(e) => return fhir_error(&e),
    };
    let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
    let segments: Vec<&str> = rest.split('/').filter(|s| !s.is_empty()).collect();
    match (method, segments.as_slice()) {
        (&Method::POST, []) => bundle(&bytes, base, &now),
        // A create, an update, or a conditional update (`PUT Type?identifier=...`).
        (&Method::POST | &Method::PUT, [resource_type]) | (&Method::PUT, [resource_type, _]) => {
            let id = match segments.as_slice() {
                [_, id] => (*id).to_owned(),
                _ => new_id(),
            };
            let location = format!("{base}/{resource_type}/{id}/_history/1");
            let stamped = serde_json::from_slice::<&RawValue>(&bytes)
                .ok()
                .and_then(|resource| stamp(resource, &id, &now))
                .map(|(_, body)| body)
                .unwrap_or_default();
            let mut response = fhir_json(StatusCode::CREATED, stamped);
            let headers = response.headers_mut();
            if let Ok(location) = HeaderValue::try_from(location) {
                headers.insert(header::LOCATION, location);
            }
            headers.insert(header::ETAG, HeaderValue::from_static("W/\"1\""));
            response
        }
        // The lookup before creating a resource without an identifier (a Provenance): a
        // store that keeps nothing finds nothing.
        (&Method::GET, [_]) => fhir_json(
            StatusCode::OK,
            br#"{"resourceType":"Bundle","type":"searchset","total":0}"#.to_vec(),
        ),
        _ => fhir_error(&FhirError::new(
            405,
            "not-supported",
            "the benchmark sink only answers creates, updates, searches and transactions",
        )),
    }
}

/// One created entry per request entry, each with its resource stamped.
fn bundle(bytes: &[u8], base: &str, now: &str) -> Response {
    #[derive(Deserialize)]
    struct Bundle<'a> {
        #[serde(default, borrow)]
        entry: Vec<Entry<'a>>,
    }
    #[derive(Deserialize)]
    struct Entry<'a> {
        #[serde(borrow)]
        resource: Option<&'a RawValue>,
    }
    let Ok(bundle) = serde_json::from_slice::<Bundle>(bytes) else {
        return fhir_error(&FhirError::invalid("the body is not a Bundle"));
    };
    let mut out = Vec::with_capacity(bytes.len() + 256 * bundle.entry.len() + 64);
    out.extend_from_slice(br#"{"resourceType":"Bundle","type":"transaction-response""#);
    for (i, entry) in bundle.entry.iter().enumerate() {
        out.extend_from_slice(if i == 0 { br#","entry":["# } else { b"," });
        let id = new_id();
        let stamped = entry.resource.and_then(|r| stamp(r, &id, now));
        let kind = stamped.as_ref().map_or("Basic", |(kind, _)| kind.as_str());
        let location = format!("{base}/{kind}/{id}/_history/1");
        out.extend_from_slice(br#"{"fullUrl":"#);
        write_json(&mut out, &Value::String(format!("{base}/{kind}/{id}")));
        if let Some((_, body)) = &stamped {
            out.extend_from_slice(br#","resource":"#);
            out.extend_from_slice(body);
        }
        out.extend_from_slice(br#","response":"#);
        write_json(
            &mut out,
            &json!({"status": "201 Created", "location": location, "etag": "W/\"1\"",
                    "lastModified": now}),
        );
        out.push(b'}');
    }
    if !bundle.entry.is_empty() {
        out.push(b']');
    }
    out.push(b'}');
    fhir_json(StatusCode::OK, out)
}

/// The resource with `id` and `meta.versionId`/`meta.lastUpdated` set, and its type. Only the
/// top level is parsed: every other value is copied through as sent.
fn stamp(resource: &RawValue, id: &str, now: &str) -> Option<(String, Vec<u8>)> {
    let fields: BTreeMap<&str, &RawValue> = serde_json::from_str(resource.get()).ok()?;
    let resource_type: String = serde_json::from_str(fields.get("resourceType")?.get()).ok()?;
    let mut meta: Map<String, Value> = match fields.get("meta") {
        Some(meta) => serde_json::from_str(meta.get()).ok()?,
        None => Map::new(),
    };
    meta.insert("versionId".into(), json!("1"));
    meta.insert("lastUpdated".into(), json!(now));
    let mut out = Vec::with_capacity(resource.get().len() + 96);
    out.extend_from_slice(br#"{"resourceType":"#);
    write_json(&mut out, &Value::String(resource_type.clone()));
    out.extend_from_slice(br#","id":"#);
    write_json(&mut out, &Value::String(id.to_owned()));
    out.extend_from_slice(br#","meta":"#);
    write_json(&mut out, &Value::Object(meta));
    for (key, value) in fields {
        if !matches!(key, "resourceType" | "id" | "meta") {
            out.push(b',');
            write_json(&mut out, &Value::String(key.to_owned()));
            out.push(b':');
            out.extend_from_slice(value.get().as_bytes());
        }
    }
    out.push(b'}');
    Some((resource_type, out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamping_keeps_the_resource_and_sets_id_and_meta() {
        let sent: &RawValue = serde_json::from_str(
            r#"{"resourceType":"Patient","id":"old","meta":{"tag":[{"code":"t"}]},"gender":"female","name":[{"family":"Doe"}]}"#,
        )
        .unwrap();
        let (kind, body) = stamp(sent, "7", "2026-01-01T00:00:00Z").unwrap();
        assert_eq!(kind, "Patient");
        let body: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(
            body,
            json!({"resourceType": "Patient", "id": "7",
                   "meta": {"tag": [{"code": "t"}], "versionId": "1",
                            "lastUpdated": "2026-01-01T00:00:00Z"},
                   "gender": "female", "name": [{"family": "Doe"}]})
        );
        let untyped: &RawValue = serde_json::from_str(r#"{"gender":"female"}"#).unwrap();
        assert!(stamp(untyped, "8", "now").is_none());
    }
}
