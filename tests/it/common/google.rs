//! A stand-in for Google's token endpoints and a FHIR store, all on one loopback port: the
//! OAuth token endpoint (refresh tokens, and service-account assertions it checks against the
//! generated key), STS (token exchange), IAM Credentials (generateAccessToken), a URL that
//! serves a subject token, and a store that records the Authorization and
//! x-goog-user-project of every create. Plain http, or behind TLS with a fresh certificate.
#![allow(dead_code)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, OnceLock};

use axum::Form;
use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rsa::pkcs1::EncodeRsaPublicKey;
use rsa::pkcs8::{EncodePrivateKey, LineEnding};
use serde_json::{Value, json};

pub const REFRESH_TOKEN: &str = "refresh-token-secret-1234";
pub const CLIENT_SECRET: &str = "client-secret-5678";
pub const SUBJECT_TOKEN: &str = "subject-jwt-secret-9012";
pub const SUBJECT_URL_BEARER: &str = "oidc-request-bearer-3456";
pub const USER_TOKEN: &str = "user-access-token-7890";
pub const STS_TOKEN: &str = "sts-federated-token-1111";
pub const KEY_TOKEN: &str = "service-account-token-8888";
pub const STORE: &str = "projects/p/locations/l/datasets/d/fhirStores/s";
pub const CLOUD_PLATFORM: &str = "https://www.googleapis.com/auth/cloud-platform";

/// The account of the generated service-account key, and one the token endpoint does not know.
pub const KEY_ACCOUNT: &str = "loader-key@p.iam.gserviceaccount.com";
pub const DELETED_ACCOUNT: &str = "deleted-key@p.iam.gserviceaccount.com";
pub const KEY_ID: &str = "0123456789abcdef0123456789abcdef01234567";

/// Every secret the stand-in hands out or expects; none may ever be printed.
pub const SECRETS: [&str; 7] = [
    REFRESH_TOKEN,
    CLIENT_SECRET,
    SUBJECT_TOKEN,
    SUBJECT_URL_BEARER,
    USER_TOKEN,
    STS_TOKEN,
    KEY_TOKEN,
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
    /// How many more times `/blinking/oauth/token` answers 503 before it serves tokens.
    pub blinks_left: Arc<Mutex<u32>>,
}

impl Seen {
    pub fn store_authorizations(&self) -> Vec<Option<String>> {
        let seen = self.store_requests.lock().unwrap();
        seen.iter().map(|(auth, _)| auth.clone()).collect()
    }

    /// Checks that the store saw `count` requests, each with `Bearer {token}`.
    pub fn assert_store_requests_carried(&self, token: &str, count: usize) {
        let expected = format!("Bearer {token}");
        let authorizations = self.store_authorizations();
        assert_eq!(authorizations.len(), count, "{authorizations:?}");
        assert!(
            authorizations
                .iter()
                .all(|a| a.as_deref() == Some(&expected)),
            "{authorizations:?}"
        );
    }

    pub fn quota_projects(&self) -> Vec<Option<String>> {
        let seen = self.store_requests.lock().unwrap();
        seen.iter().map(|(_, project)| project.clone()).collect()
    }

    /// Notes a token request: the path it came to and what it carried.
    fn token_request(&self, path: impl Into<String>, body: impl Into<String>) {
        let mut seen = self.token_requests.lock().unwrap();
        seen.push((path.into(), body.into()));
    }

    pub fn token_paths(&self) -> Vec<String> {
        let seen = self.token_requests.lock().unwrap();
        seen.iter().map(|(path, _)| path.clone()).collect()
    }
}

pub struct StandIn {
    pub addr: SocketAddr,
    pub seen: Seen,
    /// The self-signed certificate (for 127.0.0.1 and localhost) when it speaks TLS.
    pub certificate_pem: Option<String>,
}

impl StandIn {
    pub fn url(&self, path: &str) -> String {
        format!("{}://{}{path}", self.scheme(), self.addr)
    }

    /// The same endpoint named `localhost`: a host NO_PROXY can take out apart from 127.0.0.1.
    pub fn localhost_url(&self, path: &str) -> String {
        format!("{}://localhost:{}{path}", self.scheme(), self.addr.port())
    }

    fn scheme(&self) -> &'static str {
        if self.certificate_pem.is_some() {
            "https"
        } else {
            "http"
        }
    }

    /// An `authorized_user` credential (a copied gcloud ADC file) whose refresh token this
    /// stand-in's OAuth endpoint takes.
    pub fn authorized_user(&self) -> Value {
        json!({
            "type": "authorized_user",
            "client_id": "123.apps.googleusercontent.com",
            "client_secret": CLIENT_SECRET,
            "refresh_token": REFRESH_TOKEN,
            "token_uri": self.url("/oauth/token"),
        })
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
    StandIn {
        addr: super::serve_on_loopback(google_app(seen.clone())).await,
        seen,
        certificate_pem: None,
    }
}

/// The same stand-in behind TLS, with a fresh self-signed certificate for 127.0.0.1 and
/// localhost (give its `certificate_pem` to `--ca-file`).
pub async fn start_google_tls() -> StandIn {
    let seen = Seen::default();
    let plain = super::serve_on_loopback(google_app(seen.clone())).await;
    let (addr, pem) = super::tls_in_front_of(plain).await;
    StandIn {
        addr,
        seen,
        certificate_pem: Some(pem),
    }
}

fn google_app(seen: Seen) -> Router {
    Router::new()
        .route("/oauth/token", post(oauth_token))
        .route("/blinking/oauth/token", post(blinking_oauth_token))
        .route("/sa/token", post(service_account_token))
        .route("/sts/token", post(sts_token))
        .route("/v1/projects/-/serviceAccounts/{action}", post(generate))
        .route("/subject", get(subject))
        .route("/v1/projects/{*path}", post(store_create))
        .with_state(seen)
}

async fn oauth_token(
    State(seen): State<Seen>,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    seen.token_request("/oauth/token", format!("{form:?}"));
    let right = form.get("grant_type").map(String::as_str) == Some("refresh_token")
        && form.get("refresh_token").map(String::as_str) == Some(REFRESH_TOKEN)
        && form.get("client_secret").map(String::as_str) == Some(CLIENT_SECRET);
    if !right {
        return invalid_grant("Bad Request");
    }
    access_token(USER_TOKEN)
}

/// An OAuth token endpoint's answer that hands out `token` for an hour.
fn access_token(token: &str) -> Response {
    axum::Json(json!({"access_token": token, "expires_in": 3599, "token_type": "Bearer"}))
        .into_response()
}

/// An OAuth token endpoint's refusal, as Google words it.
fn invalid_grant(description: &str) -> Response {
    (
        StatusCode::BAD_REQUEST,
        axum::Json(json!({"error": "invalid_grant", "error_description": description})),
    )
        .into_response()
}

/// The OAuth token endpoint having a bad moment: 503 for its first `blinks_left` requests.
async fn blinking_oauth_token(
    State(seen): State<Seen>,
    form: Form<HashMap<String, String>>,
) -> Response {
    {
        let mut left = seen.blinks_left.lock().unwrap();
        if *left > 0 {
            *left -= 1;
            seen.token_request("/blinking/oauth/token", "503");
            return (StatusCode::SERVICE_UNAVAILABLE, "try again").into_response();
        }
    }
    oauth_token(State(seen), form).await
}

/// Google's token endpoint for service-account keys: the assertion must be signed by the
/// generated key and name this endpoint, whichever name (and scheme) it was reached by.
async fn service_account_token(
    State(seen): State<Seen>,
    headers: HeaderMap,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    seen.token_request("/sa/token", format!("{form:?}"));
    let host = headers
        .get("host")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let audiences = ["http", "https"].map(|scheme| format!("{scheme}://{host}/sa/token"));
    let refusal = match check_assertion(&form, &service_account_key().to_public_key(), &audiences) {
        Ok(claims) if claims["iss"] == KEY_ACCOUNT => None,
        Ok(_) => Some("Invalid grant: account not found".to_owned()),
        Err(reason) => Some(format!("Invalid JWT: {reason}")),
    };
    if let Some(message) = refusal {
        return invalid_grant(&message);
    }
    access_token(KEY_TOKEN)
}

/// Checks a JWT-bearer token request as Google does: RS256 over `header.claims` by `key`,
/// the key id, the audience (one of `audiences`), the cloud-platform scope, and an hour's
/// life from now. Gives the claims, or why they are wrong.
pub fn check_assertion(
    form: &HashMap<String, String>,
    key: &rsa::RsaPublicKey,
    audiences: &[String],
) -> Result<Value, String> {
    if form.get("grant_type").map(String::as_str)
        != Some("urn:ietf:params:oauth:grant-type:jwt-bearer")
    {
        return Err(format!("grant_type in {form:?}"));
    }
    let assertion = form.get("assertion").ok_or("no assertion")?;
    let parts: Vec<&str> = assertion.split('.').collect();
    let [header, claims, signature] = parts[..] else {
        return Err(format!("{} parts, not 3", parts.len()));
    };
    let decode = |part: &str| URL_SAFE_NO_PAD.decode(part).map_err(|e| e.to_string());
    let public_key = key.to_pkcs1_der().unwrap();
    ring::signature::UnparsedPublicKey::new(
        &ring::signature::RSA_PKCS1_2048_8192_SHA256,
        public_key.as_bytes(),
    )
    .verify(format!("{header}.{claims}").as_bytes(), &decode(signature)?)
    .map_err(|_| "the signature does not verify with the key's public key".to_owned())?;
    let header: Value = serde_json::from_slice(&decode(header)?).map_err(|e| e.to_string())?;
    if header != json!({"alg": "RS256", "typ": "JWT", "kid": KEY_ID}) {
        return Err(format!("header {header}"));
    }
    let claims: Value = serde_json::from_slice(&decode(claims)?).map_err(|e| e.to_string())?;
    let now = chrono::Utc::now().timestamp();
    let issued_at = claims["iat"].as_i64().ok_or("no iat")?;
    let fits = claims["scope"] == CLOUD_PLATFORM
        && audiences.iter().any(|aud| claims["aud"] == aud.as_str())
        && (now - 60..=now + 60).contains(&issued_at)
        && claims["exp"].as_i64() == Some(issued_at + 3600);
    if !fits {
        return Err(format!("claims {claims} (audience one of {audiences:?})"));
    }
    Ok(claims)
}

/// One RSA key for the whole test binary: generating it is the slow part.
pub fn service_account_key() -> &'static rsa::RsaPrivateKey {
    static KEY: OnceLock<rsa::RsaPrivateKey> = OnceLock::new();
    KEY.get_or_init(|| rsa::RsaPrivateKey::new(&mut rand08::rngs::OsRng, 2048).unwrap())
}

/// A `service_account` key file's content for `key` as `client_email`, trading at `token_uri`.
pub fn service_account_with(
    key: &rsa::RsaPrivateKey,
    client_email: &str,
    token_uri: &str,
) -> Value {
    json!({
        "type": "service_account",
        "project_id": "p",
        "private_key_id": KEY_ID,
        "private_key": key.to_pkcs8_pem(LineEnding::LF).unwrap().as_str(),
        "client_email": client_email,
        "client_id": "1",
        "auth_uri": "https://accounts.google.com/o/oauth2/auth",
        "token_uri": token_uri,
    })
}

/// The generated key as `client_email`, trading at this stand-in's `token_uri`.
pub fn service_account(client_email: &str, token_uri: &str) -> Value {
    service_account_with(service_account_key(), client_email, token_uri)
}

/// A line from the middle of the generated private key's PEM: it must never be shown.
pub fn private_key_line() -> String {
    let pem = service_account_key().to_pkcs8_pem(LineEnding::LF).unwrap();
    pem.lines().nth(5).unwrap().to_owned()
}

async fn sts_token(
    State(seen): State<Seen>,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    seen.token_request("/sts/token", format!("{form:?}"));
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
    seen.token_request(format!("/iam/{action}"), body.clone());
    let Some(email) = action.strip_suffix(":generateAccessToken") else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let bearer = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let body: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
    let known_source = [USER_TOKEN, STS_TOKEN, KEY_TOKEN, "a-static-token-2222"]
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
        .args(SMALL_LOAD);
    command
}

/// What every load against the stand-in writes: 20 resources, one request each.
pub const SMALL_LOAD: [&str; 8] = [
    "--mode",
    "create",
    "--count",
    "20",
    "--workers",
    "4",
    "--json",
    "--quiet",
];

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
