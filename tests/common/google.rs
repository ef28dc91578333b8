//! A stand-in for Google's token endpoints and a FHIR store, all on one loopback port: the
//! OAuth token endpoint (refresh tokens), STS (token exchange), IAM Credentials
//! (generateAccessToken), a URL that serves a subject token, and a store that records the
//! Authorization and x-goog-user-project of every create.
#![allow(dead_code)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::Form;
use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::json;

pub const REFRESH_TOKEN: &str = "refresh-token-secret-1234";
pub const CLIENT_SECRET: &str = "client-secret-5678";
pub const SUBJECT_TOKEN: &str = "subject-jwt-secret-9012";
pub const SUBJECT_URL_BEARER: &str = "oidc-request-bearer-3456";
pub const USER_TOKEN: &str = "user-access-token-7890";
pub const STS_TOKEN: &str = "sts-federated-token-1111";
pub const STORE: &str = "projects/p/locations/l/datasets/d/fhirStores/s";

/// Every secret the stand-in hands out or expects; none may ever be printed.
pub const SECRETS: [&str; 6] = [
    REFRESH_TOKEN,
    CLIENT_SECRET,
    SUBJECT_TOKEN,
    SUBJECT_URL_BEARER,
    USER_TOKEN,
    STS_TOKEN,
];

pub fn impersonated_token(email: &str) -> String {
    format!("impersonated-token-for-{email}")
}

/// `(authorization, x-goog-user-project)` of a store request.
pub type StoreRequestSeen = (Option<String>, Option<String>);

#[derive(Clone, Default)]
pub struct Seen {
    /// `(path, form or JSON body)` of every token request.
    pub token_requests: Arc<Mutex<Vec<(String, String)>>>,
    pub store_requests: Arc<Mutex<Vec<StoreRequestSeen>>>,
}

impl Seen {
    pub fn store_authorizations(&self) -> Vec<Option<String>> {
        let seen = self.store_requests.lock().unwrap();
        seen.iter().map(|(auth, _)| auth.clone()).collect()
    }

    pub fn quota_projects(&self) -> Vec<Option<String>> {
        let seen = self.store_requests.lock().unwrap();
        seen.iter().map(|(_, project)| project.clone()).collect()
    }

    pub fn token_paths(&self) -> Vec<String> {
        let seen = self.token_requests.lock().unwrap();
        seen.iter().map(|(path, _)| path.clone()).collect()
    }
}

pub struct StandIn {
    pub addr: SocketAddr,
    pub seen: Seen,
}

impl StandIn {
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn endpoint(&self) -> String {
        self.url("/v1")
    }

    pub fn impersonation_url(&self, email: &str) -> String {
        self.url(&format!(
            "/v1/projects/-/serviceAccounts/{email}:generateAccessToken"
        ))
    }
}

pub async fn start_google() -> StandIn {
    let seen = Seen::default();
    let app = Router::new()
        .route("/oauth/token", post(oauth_token))
        .route("/sts/token", post(sts_token))
        .route("/v1/projects/-/serviceAccounts/{action}", post(generate))
        .route("/subject", get(subject))
        .route("/v1/projects/{*path}", post(store_create))
        .with_state(seen.clone());
    StandIn {
        addr: super::serve_on_loopback(app).await,
        seen,
    }
}

async fn oauth_token(
    State(seen): State<Seen>,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    seen.token_requests
        .lock()
        .unwrap()
        .push(("/oauth/token".into(), format!("{form:?}")));
    let right = form.get("grant_type").map(String::as_str) == Some("refresh_token")
        && form.get("refresh_token").map(String::as_str) == Some(REFRESH_TOKEN)
        && form.get("client_secret").map(String::as_str) == Some(CLIENT_SECRET);
    if !right {
        return (
            StatusCode::BAD_REQUEST,
            axum::Json(json!({"error": "invalid_grant", "error_description": "Bad Request"})),
        )
            .into_response();
    }
    axum::Json(json!({"access_token": USER_TOKEN, "expires_in": 3599, "token_type": "Bearer"}))
        .into_response()
}

async fn sts_token(
    State(seen): State<Seen>,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    seen.token_requests
        .lock()
        .unwrap()
        .push(("/sts/token".into(), format!("{form:?}")));
    let expect = [
        (
            "grant_type",
            "urn:ietf:params:oauth:grant-type:token-exchange",
        ),
        (
            "requested_token_type",
            "urn:ietf:params:oauth:token-type:access_token",
        ),
        ("subject_token_type", "urn:ietf:params:oauth:token-type:jwt"),
        ("scope", "https://www.googleapis.com/auth/cloud-platform"),
        ("subject_token", SUBJECT_TOKEN),
        (
            "audience",
            "//iam.googleapis.com/projects/1/locations/global/workloadIdentityPools/pool/providers/github",
        ),
    ];
    if let Some((field, _)) = expect
        .iter()
        .find(|(field, value)| form.get(*field).map(String::as_str) != Some(*value))
    {
        // Google's STS echoes nothing secret; a careless one might: this one does.
        let message = format!("bad {field} in {form:?}");
        return (
            StatusCode::BAD_REQUEST,
            axum::Json(json!({"error": "invalid_request", "error_description": message})),
        )
            .into_response();
    }
    axum::Json(json!({
        "access_token": STS_TOKEN,
        "issued_token_type": "urn:ietf:params:oauth:token-type:access_token",
        "token_type": "Bearer",
        "expires_in": 3600
    }))
    .into_response()
}

async fn generate(
    State(seen): State<Seen>,
    Path(action): Path<String>,
    headers: HeaderMap,
    body: String,
) -> Response {
    seen.token_requests
        .lock()
        .unwrap()
        .push((format!("/iam/{action}"), body.clone()));
    let Some(email) = action.strip_suffix(":generateAccessToken") else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let bearer = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let body: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
    let known_source = [USER_TOKEN, STS_TOKEN, "a-static-token-2222"]
        .iter()
        .any(|t| bearer == format!("Bearer {t}"));
    if !known_source || body["scope"][0] != "https://www.googleapis.com/auth/cloud-platform" {
        return (
            StatusCode::FORBIDDEN,
            axum::Json(json!({"error": {"code": 403, "message": "The caller does not have permission", "status": "PERMISSION_DENIED"}})),
        )
            .into_response();
    }
    let expires = chrono::Utc::now() + chrono::Duration::hours(1);
    axum::Json(json!({
        "accessToken": impersonated_token(email),
        "expireTime": expires.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
    }))
    .into_response()
}

async fn subject(headers: HeaderMap) -> Response {
    let wanted = format!("Bearer {SUBJECT_URL_BEARER}");
    if headers.get("authorization").and_then(|v| v.to_str().ok()) != Some(wanted.as_str()) {
        return StatusCode::UNAUTHORIZED.into_response();
    }
    axum::Json(json!({"count": 1, "value": SUBJECT_TOKEN})).into_response()
}

async fn store_create(
    State(seen): State<Seen>,
    Path(path): Path<String>,
    headers: HeaderMap,
) -> Response {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let mut seen = seen.store_requests.lock().unwrap();
    seen.push((header("authorization"), header("x-goog-user-project")));
    let resource_type = path.rsplit('/').next().unwrap_or_default();
    let location = format!("{resource_type}/{}/_history/1", seen.len());
    // The minimal answer a store may give: where it went, no body.
    (StatusCode::CREATED, [("location", location)], "").into_response()
}

/// `fhirgen load --store` against the stand-in, with no proxy and no credential from the
/// environment unless the test sets one.
pub fn load_command(stand_in: &StandIn) -> std::process::Command {
    let mut command = super::fhirgen();
    without_proxies(&mut command);
    command
        .args(["load", "--store", STORE, "--endpoint", &stand_in.endpoint()])
        .args([
            "--mode",
            "create",
            "--count",
            "20",
            "--workers",
            "4",
            "--json",
            "--quiet",
        ]);
    command
}

pub fn without_proxies(command: &mut std::process::Command) {
    for name in ["HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY"] {
        command.env_remove(name);
        command.env_remove(name.to_lowercase());
    }
}

/// Everything the run printed or wrote must be free of every secret in `extra` and `SECRETS`.
pub fn assert_no_secrets(
    output: &std::process::Output,
    files: &[&std::path::Path],
    extra: &[&str],
) {
    let mut shown = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    for file in files {
        shown.push_str(&std::fs::read_to_string(file).unwrap_or_default());
    }
    for secret in SECRETS.iter().chain(extra) {
        assert!(!shown.contains(secret), "{secret} was shown:\n{shown}");
    }
}
