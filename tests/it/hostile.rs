//! What a hostile or unlucky user meets: too few open files, a store that cannot be reached,
//! a TLS mismatch. Each stops early with the reason instead of retrying every resource.

use std::time::{Duration, Instant};

use crate::common::*;
use axum::Router;
use axum::routing::any;

/// Runs fhirgen under `sh` with the open-file limits `limits` (e.g. `ulimit -n 256`).
fn under_limits(limits: &str, args: &str) -> std::process::Command {
    let binary = fhirgen().get_program().to_owned();
    let mut command = std::process::Command::new("sh");
    command.arg("-c").arg(format!(
        "{limits} && exec \"{}\" {args}",
        binary.to_string_lossy()
    ));
    command
}

#[tokio::test]
async fn too_few_open_files_for_the_workers_is_refused_before_loading() {
    let output = run(under_limits(
        "ulimit -n 256",
        "load --emulator --workers 512 --count 100",
    ))
    .await;
    assert_exit(&output, 2);
    let stderr = stderr(&output);
    assert!(
        stderr.contains("needs about 1088 open files") && stderr.contains("--workers 96"),
        "{stderr}"
    );
}

#[tokio::test]
async fn a_low_soft_limit_is_raised_toward_the_hard_one() {
    let output = run(under_limits(
        "ulimit -Sn 256 && ulimit -Hn 4096",
        "load --emulator --workers 512 --count 2000 --mode create --json --quiet",
    ))
    .await;
    assert_exit(&output, 0);
    let summary = summary(&output);
    assert_eq!(summary["stored"], 2000);
    assert_eq!(summary["errors"], serde_json::json!({}), "{summary}");
}

/// Loads 500 resources into `url`, which cannot work: the run must stop by itself within
/// seconds, exit 1, and say why in its summary.
async fn stops_within_seconds(url: &str) -> serde_json::Value {
    let started = Instant::now();
    let mut command = fhirgen();
    command.args([
        "load",
        "--fhir-url",
        url,
        "--count",
        "500",
        "--json",
        "--quiet",
    ]);
    let output = run(command).await;
    assert_exit(&output, 1);
    let elapsed = started.elapsed();
    assert!(elapsed < Duration::from_secs(10), "{elapsed:?}");
    summary(&output)
}

#[tokio::test]
async fn an_unreachable_store_stops_the_run_in_seconds() {
    // Bound, then closed: nothing listens there.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let summary = stops_within_seconds(&format!("http://127.0.0.1:{port}/fhir")).await;
    let reason = summary["fatal_error"].as_str().unwrap();
    assert!(
        reason.contains("cannot reach") && reason.contains("refused"),
        "{reason}"
    );
    assert_eq!(summary["not_sent"], 500, "{summary}");
}

#[tokio::test]
async fn https_to_a_plain_http_server_stops_at_the_first_handshake() {
    let app = Router::new().fallback(any(|| async { "plain http" }));
    let address = serve_on_loopback(app).await;
    let summary = stops_within_seconds(&format!("https://{address}/fhir")).await;
    let reason = summary["fatal_error"].as_str().unwrap();
    assert!(reason.contains("TLS"), "{reason}");
}

#[tokio::test]
async fn an_empty_input_is_an_error_not_a_success() {
    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().join("export.ndjson");
    std::fs::write(&empty, "").unwrap();
    let mut command = fhirgen();
    command
        .args(["load", "--emulator", "--quiet", "--input"])
        .arg(&empty);
    let output = run(command).await;
    assert_exit(&output, 1);
    let stderr = stderr(&output);
    assert!(stderr.contains("holds no FHIR resources"), "{stderr}");
}
