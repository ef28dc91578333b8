//! The store client on the wire: a credential in the URL becomes Basic auth and is never
//! shown (not even when the store echoes it), an https URL really goes through TLS and trusts
//! --ca-file, a redirect is reported rather than followed, and each 403 names its fix.

use std::sync::{Arc, Mutex};

use crate::common::*;
use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::post;

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
    let printed = format!("{}{}", stdout(&output), stderr(&output));
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
    // The first handshake stops the run: nothing else is tried.
    assert_eq!(
        summary["failed"].as_u64().unwrap() + summary["not_sent"].as_u64().unwrap(),
        5,
        "{summary}"
    );
    assert!(
        summary["errors"]["TLS handshake failed"].as_u64().unwrap() > 0,
        "{summary}"
    );
    let stderr = stderr(&output);
    assert!(stderr.contains("TLS handshake failed"), "{stderr}");
}

/// A store whose every create fails with `status`, `body` (where `{auth}` becomes the
/// Authorization header it got) and `headers`; counts what reached `/elsewhere`.
async fn failing_store(
    status: StatusCode,
    body: &'static str,
    headers: Vec<(&'static str, String)>,
) -> (std::net::SocketAddr, Arc<Mutex<u32>>) {
    let elsewhere = Arc::new(Mutex::new(0));
    let counter = elsewhere.clone();
    let app = Router::new()
        .route(
            "/fhir/{resource_type}",
            post(move |request_headers: HeaderMap| {
                let headers = headers.clone();
                async move {
                    let auth = request_headers
                        .get("authorization")
                        .map(|v| v.to_str().unwrap().to_owned())
                        .unwrap_or_default();
                    let mut reply = HeaderMap::new();
                    for (name, value) in headers {
                        reply.insert(name, value.parse().unwrap());
                    }
                    (status, reply, body.replace("{auth}", &auth))
                }
            }),
        )
        .route(
            "/elsewhere/{*rest}",
            post(move || {
                let counter = counter.clone();
                async move {
                    *counter.lock().unwrap() += 1;
                    StatusCode::CREATED
                }
            }),
        );
    (serve_on_loopback(app).await, elsewhere)
}

fn load_into(url: &str, failed: &std::path::Path) -> std::process::Command {
    let mut command = fhirgen();
    for name in ["HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY"] {
        command.env_remove(name).env_remove(name.to_lowercase());
    }
    command
        .args(["load", "--fhir-url", url])
        .args(["--mode", "create", "--count", "5", "--workers", "2"])
        .args(["--json", "--failed"])
        .arg(failed);
    command
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_that_echoes_the_credential_never_gets_it_shown() {
    let token = "echoed-bearer-token-5555";
    let dir = tempfile::tempdir().unwrap();
    for (body, credential) in [
        (
            r#"{"resourceType":"OperationOutcome","issue":[{"severity":"error","code":"invalid","diagnostics":"rejected request with {auth}"}]}"#,
            "token",
        ),
        ("plain text: you sent {auth}", "basic"),
    ] {
        let (addr, _) = failing_store(StatusCode::BAD_REQUEST, body, vec![]).await;
        let failed = dir.path().join(format!("failed-{credential}.ndjson"));
        let (url, secrets) = if credential == "token" {
            (format!("http://{addr}/fhir"), vec![token])
        } else {
            (
                format!("http://loader:pa%24%24word@{addr}/fhir"),
                // base64("loader:pa$$word")
                vec!["pa$$word", "pa%24%24word", "bG9hZGVyOnBhJCR3b3Jk"],
            )
        };
        let mut command = load_into(&url, &failed);
        if credential == "token" {
            command.args(["--access-token", token]);
        }
        let output = run(command).await;
        assert_exit(&output, 1);
        let failed_lines = std::fs::read_to_string(&failed).unwrap();
        assert_eq!(failed_lines.lines().count(), 5);
        assert!(failed_lines.contains("(redacted)"), "{failed_lines}");
        let shown = format!("{}{}{failed_lines}", stdout(&output), stderr(&output));
        for secret in secrets {
            assert!(!shown.contains(secret), "{secret} was shown:\n{shown}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_kind_of_403_says_what_to_fix() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        (
            r#"{"error":{"code":403,"message":"Cloud Healthcare API has not been used in project 123 before or it is disabled.","status":"PERMISSION_DENIED","details":[{"@type":"type.googleapis.com/google.rpc.ErrorInfo","reason":"SERVICE_DISABLED","domain":"googleapis.com","metadata":{"service":"healthcare.googleapis.com","consumer":"projects/123"}}]}}"#,
            "gcloud services enable healthcare.googleapis.com",
        ),
        (
            r#"{"error":{"code":403,"message":"Request had insufficient authentication scopes.","status":"PERMISSION_DENIED","details":[{"@type":"type.googleapis.com/google.rpc.ErrorInfo","reason":"ACCESS_TOKEN_SCOPE_INSUFFICIENT","domain":"googleapis.com","metadata":{"service":"healthcare.googleapis.com","method":"google.cloud.healthcare.v1.fhir.FhirService.CreateResource"}}]}}"#,
            "cloud-platform scope",
        ),
        (
            r#"{"error":{"code":403,"message":"Permission 'healthcare.fhirResources.create' denied on resource '//healthcare.googleapis.com/projects/p/locations/l/datasets/d/fhirStores/s' (or it may not exist).","status":"PERMISSION_DENIED","details":[{"@type":"type.googleapis.com/google.rpc.ErrorInfo","reason":"IAM_PERMISSION_DENIED","domain":"healthcare.googleapis.com"}]}}"#,
            "roles/healthcare.fhirResourceEditor",
        ),
    ];
    for (body, fix) in cases {
        let (addr, _) = failing_store(StatusCode::FORBIDDEN, body, vec![]).await;
        let mut command = load_into(
            &format!("http://{addr}/fhir"),
            &dir.path().join("failed.ndjson"),
        );
        command.args(["--access-token", "a-token-6666"]);
        let output = run(command).await;
        assert_exit(&output, 1);
        let stderr = stderr(&output);
        assert!(stderr.contains(fix), "expected `{fix}`:\n{stderr}");
        assert!(stderr.contains("--access-token"), "{stderr}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redirect_is_not_followed_and_names_where_it_pointed() {
    let dir = tempfile::tempdir().unwrap();
    let (addr, elsewhere) = failing_store(
        StatusCode::TEMPORARY_REDIRECT,
        "",
        vec![("location", "/elsewhere/fhir/Patient?sig=s3cret".to_owned())],
    )
    .await;
    let failed = dir.path().join("failed.ndjson");
    let mut command = load_into(&format!("http://{addr}/fhir"), &failed);
    command.args(["--access-token", "a-token-7777"]);
    let output = run(command).await;
    assert_exit(&output, 1);
    assert_eq!(*elsewhere.lock().unwrap(), 0, "the redirect was followed");
    let failed_lines = std::fs::read_to_string(&failed).unwrap();
    let expected = format!("redirected to http://{addr}/elsewhere/fhir/Patient;");
    assert!(failed_lines.contains(&expected), "{failed_lines}");
    assert!(!failed_lines.contains("s3cret"), "{failed_lines}");
    let summary = summary(&output);
    assert_eq!(summary["stored"], 0);
    assert!(
        summary["status_counts"]["307"].as_u64().unwrap() > 0,
        "{summary}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ca_file_adds_a_trusted_certificate() {
    let store = RecordingStore::default();
    let app = Router::new()
        .route("/fhir/{resource_type}", post(recorded_create))
        .with_state(store.clone());
    let (tls, pem) = tls_in_front_of(serve_on_loopback(app).await).await;
    let port = tls.port();
    let dir = tempfile::tempdir().unwrap();
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, pem).unwrap();
    let url = format!("https://localhost:{port}/fhir");
    let load = |extra: &[&str]| {
        let mut command = fhirgen();
        command
            .args([
                "load",
                "--fhir-url",
                &url,
                "--mode",
                "create",
                "--count",
                "5",
            ])
            .args(["--workers", "2", "--max-retries", "0", "--json", "--quiet"])
            .args(extra);
        command
    };
    let untrusted = run(load(&[])).await;
    assert_exit(&untrusted, 1);
    assert!(
        summary(&untrusted)["errors"]["TLS handshake failed"]
            .as_u64()
            .unwrap()
            > 0
    );
    let trusted = run(load(&["--ca-file", ca_file.to_str().unwrap()])).await;
    assert_exit(&trusted, 0);
    assert_eq!(summary(&trusted)["stored"], 5);

    let not_pem = dir.path().join("not.pem");
    std::fs::write(&not_pem, "hello").unwrap();
    let output = run(load(&["--ca-file", not_pem.to_str().unwrap()])).await;
    assert_exit(&output, 2);
    assert!(stderr(&output).contains("--ca-file"));
}
