//! `load --store` with a service-account key: a generated key (parsed and signing with
//! gcp_auth) whose `token_uri` is a token endpoint on 127.0.0.1 that checks the signed
//! assertion, and a store that demands the token it issues.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::common::google;
use crate::common::*;
use axum::routing::post;
use axum::{Form, Router};
use fhirgen::emulator::EmulatorOptions;
use fhirgen::secret::SecretString;

const ISSUED_TOKEN: &str = "test-token-issued-by-the-local-endpoint";

/// Panics (failing the token request, and so the load) unless the assertion is signed by the
/// generated key and names `token_uri`.
fn check_assertion(form: &HashMap<String, String>, token_uri: &str) {
    let key = google::service_account_key().to_public_key();
    if let Err(reason) = google::check_assertion(form, &key, &[token_uri.to_owned()]) {
        panic!("a wrong service-account assertion: {reason}");
    }
}

/// A token endpoint that counts its calls and always issues the same hour-long token.
async fn start_token_endpoint() -> (String, Arc<AtomicU64>) {
    let calls = Arc::new(AtomicU64::new(0));
    let counter = calls.clone();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/token", listener.local_addr().unwrap());
    let token_uri = url.clone();
    let app = Router::new().route(
        "/token",
        post(move |Form(form): Form<HashMap<String, String>>| {
            let counter = counter.clone();
            let token_uri = token_uri.clone();
            async move {
                check_assertion(&form, &token_uri);
                counter.fetch_add(1, Ordering::SeqCst);
                axum::Json(serde_json::json!({
                    "access_token": ISSUED_TOKEN,
                    "expires_in": 3600,
                    "token_type": "Bearer"
                }))
            }
        }),
    );
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, calls)
}

fn write_service_account(dir: &std::path::Path, token_uri: &str) -> std::path::PathBuf {
    let account = google::service_account("loader@fhirgen-test.iam.gserviceaccount.com", token_uri);
    let path = dir.join("service-account.json");
    std::fs::write(&path, serde_json::to_vec_pretty(&account).unwrap()).unwrap();
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_target_uses_application_default_credentials() {
    let (token_uri, token_calls) = start_token_endpoint().await;
    let dir = tempfile::tempdir().unwrap();
    let credentials = write_service_account(dir.path(), &token_uri);
    // Update mode PUTs to client ids, so it gets a store of its own: mixing it with the
    // store-assigned ids of the other modes would hold each patient twice.
    for modes in [&["transaction", "create"][..], &["update"][..]] {
        let emulator = start_emulator(EmulatorOptions {
            require_token: Some(SecretString::new(ISSUED_TOKEN)),
            ..EmulatorOptions::default()
        })
        .await;
        for mode in modes {
            let mut command = fhirgen();
            command
                .env("GOOGLE_APPLICATION_CREDENTIALS", &credentials)
                .args(["load", "--store", emulator.store_name()])
                .args(["--endpoint", &format!("http://{}/v1", emulator.addr())])
                .args([
                    "--count",
                    "300",
                    "--workers",
                    "16",
                    "--mode",
                    mode,
                    "--json",
                ]);
            let output = run(command).await;
            assert_exit(&output, 0);
            assert_eq!(summary(&output)["stored"], 300);
            let stderr = stderr(&output);
            assert!(
                !stderr.contains(ISSUED_TOKEN),
                "the token was printed: {stderr}"
            );
        }
        let stats = stats(&emulator).await;
        assert_eq!(stats["auth_failures"], 0, "{stats}");
        assert!(stats["max_in_flight"].as_u64().unwrap() <= 16);
        assert_eq!(total_resources(&emulator).await, 300);
        assert_store_consistent(&emulator).await;
        emulator.shutdown().await;
    }
    // One token per run, never one per request.
    assert_eq!(token_calls.load(Ordering::SeqCst), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_token_stops_the_run_with_advice() {
    let emulator = start_emulator(EmulatorOptions {
        require_token: Some(SecretString::new("the-right-token")),
        ..EmulatorOptions::default()
    })
    .await;
    let mut command = fhirgen();
    command
        .args(["load", "--fhir-url", &emulator.fhir_base_url()])
        .args([
            "--access-token",
            "a-wrong-token",
            "--count",
            "2000",
            "--workers",
            "8",
        ]);
    let started = std::time::Instant::now();
    let output = run(command).await;
    assert_exit(&output, 1);
    assert!(started.elapsed() < std::time::Duration::from_secs(15));
    let stderr = stderr(&output);
    assert!(stderr.contains("401"), "{stderr}");
    assert!(
        stderr.contains("--access-token"),
        "names the credential: {stderr}"
    );
    assert!(
        !stderr.contains("a-wrong-token"),
        "the token was printed: {stderr}"
    );
    // After the first 401, at most one more request per worker.
    let requests = stats(&emulator).await["requests"].as_u64().unwrap();
    assert!(requests <= 1 + 8, "{requests} requests after a 401");
    emulator.shutdown().await;
}

/// Tokens that live four seconds (renewed at half their life), and a store that accepts only
/// tokens the endpoint issued: a run of several seconds must renew, not fail.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expiring_token_is_renewed_mid_run() {
    use axum::extract::{Path, State};
    use axum::http::{HeaderMap, StatusCode};

    let issued: Arc<std::sync::Mutex<Vec<String>>> = Arc::default();
    let issuer = issued.clone();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let token_uri = format!("http://{}/token", listener.local_addr().unwrap());
    let audience = token_uri.clone();
    let token_app = Router::new().route(
        "/token",
        post(move |Form(form): Form<HashMap<String, String>>| {
            let issuer = issuer.clone();
            let audience = audience.clone();
            async move {
                // Each renewal signs a new assertion.
                check_assertion(&form, &audience);
                let mut issued = issuer.lock().unwrap();
                let token = format!("short-lived-token-{}", issued.len());
                issued.push(token.clone());
                axum::Json(serde_json::json!({"access_token": token, "expires_in": 4, "token_type": "Bearer"}))
            }
        }),
    );
    tokio::spawn(async move { axum::serve(listener, token_app).await.unwrap() });

    let store_app = Router::new()
        .route(
            "/v1/{*path}",
            post(
                |State(issued): State<Arc<std::sync::Mutex<Vec<String>>>>,
                 Path(path): Path<String>,
                 headers: HeaderMap| async move {
                    let token = headers
                        .get("authorization")
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.strip_prefix("Bearer "))
                        .unwrap_or_default()
                        .to_owned();
                    if !issued.lock().unwrap().contains(&token) {
                        return (StatusCode::UNAUTHORIZED, HeaderMap::new(), "{}".to_owned());
                    }
                    let resource_type = path.rsplit('/').next().unwrap().to_owned();
                    let mut reply = HeaderMap::new();
                    let n = rand08::random::<u64>();
                    reply.insert("location", format!("{resource_type}/{n}").parse().unwrap());
                    (StatusCode::CREATED, reply, String::new())
                },
            ),
        )
        .with_state(issued.clone());
    let endpoint = format!("http://{}/v1", serve_on_loopback(store_app).await);

    let dir = tempfile::tempdir().unwrap();
    let credentials = write_service_account(dir.path(), &token_uri);
    let mut command = fhirgen();
    command
        .env("GOOGLE_APPLICATION_CREDENTIALS", &credentials)
        .args([
            "load",
            "--store",
            "projects/p/locations/l/datasets/d/fhirStores/s",
        ])
        .args(["--endpoint", &endpoint, "--mode", "create", "--rate", "100"])
        .args(["--count", "450", "--workers", "4", "--json", "--quiet"])
        // A create-only stand-in: no type that is found by a search before it is created.
        .args(["--types", "Patient,Encounter,Observation"]);
    let output = run(command).await;
    assert_exit(&output, 0);
    let summary = summary(&output);
    assert_eq!(summary["stored"], 450);
    assert!(summary["status_counts"].get("401").is_none(), "{summary}");
    assert!(issued.lock().unwrap().len() >= 2, "the token was renewed");
}
