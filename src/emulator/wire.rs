//! FHIR JSON in and out of HTTP bodies: request bodies read within Google's size limits and
//! gunzipped, answers with the FHIR content type.

use std::io::Read;

use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::Value;

use super::store::FhirError;

/// executeBundle requests are capped at 50 MB on the Healthcare API, before and after gzip.
pub const MAX_BUNDLE_BODY: usize = 50 * 1024 * 1024;
/// Every other FHIR method is capped at 10 MB.
pub const MAX_BODY: usize = 10 * 1024 * 1024;

pub const FHIR_JSON: &str = "application/fhir+json; charset=utf-8";

fn too_large(limit: usize) -> FhirError {
    FhirError::new(
        413,
        "too-costly",
        format!(
            "the request body is larger than {} MB, the limit of this method",
            limit / (1024 * 1024)
        ),
    )
}

/// The body as sent, up to `limit` bytes.
pub async fn collect(body: Body, limit: usize) -> Result<Bytes, FhirError> {
    axum::body::to_bytes(body, limit)
        .await
        .map_err(|_| too_large(limit))
}

/// The body as meant: gunzipped when `Content-Encoding` says so, at most `limit` bytes either way.
pub fn decode(bytes: Bytes, headers: &HeaderMap, limit: usize) -> Result<Bytes, FhirError> {
    if bytes.len() > limit {
        return Err(too_large(limit));
    }
    let encoding = headers
        .get(header::CONTENT_ENCODING)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("identity")
        .trim()
        .to_ascii_lowercase();
    match encoding.as_str() {
        "identity" | "" => Ok(bytes),
        "gzip" | "x-gzip" => {
            let mut inflated = Vec::new();
            flate2::read::GzDecoder::new(&bytes[..])
                .take(limit as u64 + 1)
                .read_to_end(&mut inflated)
                .map_err(|e| FhirError::invalid(format!("the gzip body is corrupt: {e}")))?;
            if inflated.len() > limit {
                return Err(too_large(limit));
            }
            Ok(Bytes::from(inflated))
        }
        other => Err(FhirError::new(
            415,
            "not-supported",
            format!("Content-Encoding {other} is not supported (gzip is)"),
        )),
    }
}

pub fn parse_json(bytes: &[u8]) -> Result<Value, FhirError> {
    if bytes.is_empty() {
        return Err(FhirError::invalid("the request has no body"));
    }
    serde_json::from_slice(bytes)
        .map_err(|e| FhirError::invalid(format!("the body is not valid JSON: {e}")))
}

pub fn fhir_json(status: StatusCode, body: impl Into<Body>) -> Response {
    (status, [(header::CONTENT_TYPE, FHIR_JSON)], body.into()).into_response()
}

pub fn fhir_error(error: &FhirError) -> Response {
    let status = StatusCode::from_u16(error.status).unwrap_or(StatusCode::BAD_REQUEST);
    fhir_json(status, error.operation_outcome().to_string())
}

/// Appends `value` as JSON, for answers spliced together from stored bodies.
pub fn write_json(out: &mut Vec<u8>, value: &Value) {
    // Writing a Value into a Vec cannot fail.
    let _ = serde_json::to_writer(out, value);
}
