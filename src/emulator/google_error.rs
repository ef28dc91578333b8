//! Google's own error body, `{"error": {"code", "message", "status"}}`, which the Healthcare
//! API answers with when a request fails before it reaches the FHIR store: authentication,
//! quota and transient failures.

use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

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
