//! The store client on the wire: a credential in the URL becomes Basic auth and is never
//! shown, and an https URL really goes through TLS.

mod common;

use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::post;
use common::*;

/// Answers every create as stored and keeps the Authorization header each one came with.
#[derive(Clone, Default)]
struct RecordingStore {
    authorizations: Arc<Mutex<Vec<Option<String>>>>,
}

async fn recorded_create(
    State(store): State<RecordingStore>,
    Path(resource_type): Path<String>,
    headers: HeaderMap,
) -> impl IntoResponse {
    let mut seen = store.authorizations.lock().unwrap();
    seen.push(
        headers
            .get("authorization")
            .map(|v| v.to_str().unwrap().to_owned()),
    );
    let location = format!("{resource_type}/{}/_history/1", seen.len());
    (StatusCode::CREATED, [("location", location)], "")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_and_password_in_the_url_go_as_basic_auth_and_are_never_shown() {
    let store = RecordingStore::default();
    let app = Router::new()
        .route("/fhir/{resource_type}", post(recorded_create))
        .with_state(store.clone());
    let addr = serve_on_loopback(app).await;

    let mut command = fhirgen();
    command.args([
        "load",
        "--fhir-url",
        &format!("http://loader:s%40cret@{addr}/fhir"),
        "--count",
        "30",
        "--workers",
        "4",
        "--mode",
        "create",
        "--json",
    ]);
    let output = run(command).await;
    assert_exit(&output, 0);
    let summary = summary(&output);
    assert_eq!(summary["stored"], 30);
    assert_eq!(summary["target"], format!("http://{addr}/fhir"));

    let seen = store.authorizations.lock().unwrap().clone();
    assert_eq!(seen.len(), 30);
    // base64("loader:s@cret"): the password percent-decoded, as a browser would send it.
    let expected = "Basic bG9hZGVyOnNAY3JldA==";
    assert!(
        seen.iter().all(|a| a.as_deref() == Some(expected)),
        "{seen:?}"
    );
    let printed = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    for secret in ["s%40cret", "s@cret", "bG9hZGVyOnNAY3JldA"] {
        assert!(
            !printed.contains(secret),
            "{secret} was printed:\n{printed}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_to_a_server_without_tls_fails_the_handshake_and_says_so() {
    // A plain HTTP server: the client's TLS hello gets an HTTP answer back.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        while let Ok((mut socket, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut hello = [0u8; 512];
                let _ = socket.read(&mut hello).await;
                let _ = socket
                    .write_all(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n")
                    .await;
            });
        }
    });

    let mut command = fhirgen();
    command.args([
        "load",
        "--fhir-url",
        &format!("https://{addr}/fhir"),
        "--count",
        "5",
        "--workers",
        "1",
        "--mode",
        "create",
        "--max-retries",
        "1",
        "--json",
        "--quiet",
    ]);
    let output = run(command).await;
    assert_exit(&output, 1);
    let summary = summary(&output);
    assert_eq!(summary["stored"], 0);
    assert_eq!(summary["failed"], 5);
    assert!(
        summary["errors"]["TLS handshake failed"].as_u64().unwrap() > 0,
        "{summary}"
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("TLS handshake failed"), "{stderr}");
}
