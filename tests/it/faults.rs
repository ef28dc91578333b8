//! A store that misbehaves: transient faults before and after the write, throttling with
//! Retry-After, expiring tokens, Ctrl-C. Nothing may be lost or stored twice.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::common::*;
use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::post;
use fhirgen::emulator::EmulatorOptions;

/// 15% transient faults before the write and 5% after it (the reply is lost): every resource
/// is stored exactly once, and running the same command again leaves the store as it was.
async fn faulty_store_keeps_everything_exactly_once(mode: &str) {
    let emulator = start_emulator(EmulatorOptions {
        fault_rate: 0.15,
        fault_after_write_rate: 0.05,
        fault_seed: 7,
        ..EmulatorOptions::default()
    })
    .await;
    // Retries start at 5 ms: the test is about what is retried, not how long it waits.
    let first = load_twice_with(&emulator, mode, 2000, 16, &["--min-backoff", "5ms"]).await;
    assert!(
        first["retries"].as_u64().unwrap() > 0,
        "faults were retried: {first}"
    );
    let injected = stats(&emulator).await["faults_injected"].as_u64().unwrap();
    assert!(injected > 0);
    emulator.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn faults_in_transaction_mode() {
    faulty_store_keeps_everything_exactly_once("transaction").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn faults_in_create_mode() {
    faulty_store_keeps_everything_exactly_once("create").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn faults_in_update_mode() {
    faulty_store_keeps_everything_exactly_once("update").await;
}

/// A minimal create-only store that throttles its first request with `Retry-After: 1` and
/// notes when each request arrived.
#[derive(Clone, Default)]
struct ThrottlingStore {
    arrivals: Arc<Mutex<Vec<(Instant, u16)>>>,
}

async fn throttled_create(
    State(store): State<ThrottlingStore>,
    Path(resource_type): Path<String>,
) -> impl IntoResponse {
    let mut arrivals = store.arrivals.lock().unwrap();
    let n = arrivals.len();
    let status = if n == 0 { 429 } else { 201 };
    arrivals.push((Instant::now(), status));
    drop(arrivals);
    let mut headers = HeaderMap::new();
    if status == 429 {
        headers.insert("retry-after", "1".parse().unwrap());
        let body = r#"{"error":{"code":429,"message":"Quota exceeded for quota metric 'Number of FHIR operations'","status":"RESOURCE_EXHAUSTED"}}"#;
        return (StatusCode::TOO_MANY_REQUESTS, headers, body.to_owned());
    }
    headers.insert(
        "location",
        format!("{resource_type}/{n}/_history/1").parse().unwrap(),
    );
    let created = format!(r#"{{"resourceType":"{resource_type}","id":"{n}"}}"#);
    (StatusCode::CREATED, headers, created)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lone_retry_after_holds_its_own_request_and_no_other() {
    let store = ThrottlingStore::default();
    let app = Router::new()
        .route("/fhir/{resource_type}", post(throttled_create))
        .with_state(store.clone());
    let base = format!("http://{}/fhir", serve_on_loopback(app).await);

    let mut command = fhirgen();
    command.args([
        "load",
        "--fhir-url",
        &base,
        "--count",
        "200",
        "--workers",
        "8",
        "--mode",
        "create",
        "--json",
        "--quiet",
        // A create-only stand-in: no type that is found by a search before it is created.
        "--types",
        "Patient,Encounter,Observation",
    ]);
    let output = run(command).await;
    assert_exit(&output, 0);
    let summary = summary(&output);
    assert_eq!(summary["stored"], 200);
    assert_eq!(summary["retries"], 1);
    assert_eq!(summary["status_counts"]["429"], 1);

    let arrivals = store.arrivals.lock().unwrap().clone();
    let throttled_at = arrivals[0].0;
    // One 429 amid successes is noise, not a spent quota: the other workers go on at once...
    let during_the_wait = arrivals[1..]
        .iter()
        .filter(|(at, _)| at.duration_since(throttled_at) < Duration::from_millis(950))
        .count();
    assert!(during_the_wait > 0, "the others waited too");
    // ...and the throttled request waits as long as its Retry-After says before it goes again.
    let last = arrivals.last().unwrap().0.duration_since(throttled_at);
    assert!(last >= Duration::from_millis(950), "retried after {last:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctrl_c_finishes_in_flight_work_and_a_rerun_completes() {
    a_signal_finishes_in_flight_work_and_a_rerun_completes("INT", 130).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_finishes_in_flight_work_and_a_rerun_completes() {
    a_signal_finishes_in_flight_work_and_a_rerun_completes("TERM", 143).await;
}

/// Sends `signal` mid-load: the load stops taking work, finishes what is in flight, prints
/// its summary and exits with `code`; running it again completes the data set exactly.
async fn a_signal_finishes_in_flight_work_and_a_rerun_completes(signal: &str, code: i32) {
    let emulator = start_emulator(EmulatorOptions {
        latency: Duration::from_millis(20),
        ..EmulatorOptions::default()
    })
    .await;
    let base = emulator.fhir_base_url();
    let args = [
        "load",
        "--fhir-url",
        &base,
        "--count",
        "400",
        "--workers",
        "4",
        "--mode",
        "create",
        "--json",
    ];
    let mut command = fhirgen();
    command
        .args(args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let child = command.spawn().unwrap();
    wait_until("100 writes before the signal", || {
        emulator.stats().writes >= 100
    })
    .await;
    let status = std::process::Command::new("kill")
        .args([&format!("-{signal}"), &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let output = tokio::task::spawn_blocking(move || child.wait_with_output().unwrap())
        .await
        .unwrap();
    assert_exit(&output, code);
    let summary = summary(&output);
    assert_eq!(summary["interrupted"], true);
    let stored = summary["stored"].as_u64().unwrap();
    assert!(stored > 0 && stored < 400, "{summary}");
    assert_eq!(
        stored + summary["not_sent"].as_u64().unwrap(),
        400,
        "{summary}"
    );
    assert!(stderr(&output).contains("Interrupted"));

    let mut command = fhirgen();
    command.args(args);
    let rerun = run(command).await;
    assert_exit(&rerun, 0);
    assert_eq!(total_resources(&emulator).await, 400);
    assert_store_consistent(&emulator).await;
    emulator.shutdown().await;
}

/// Workers waiting for their turn under `--rate` stop at Ctrl-C instead of sending on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctrl_c_stops_workers_waiting_for_their_rate_slot() {
    let emulator = start_emulator(EmulatorOptions::default()).await;
    let mut command = create_load(&emulator, 400, 8);
    command
        .args(["--rate", "2"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let child = command.spawn().unwrap();
    // Two writes at 2 a second: the other workers are waiting for their slots.
    wait_until("two writes before Ctrl-C", || emulator.stats().writes >= 2).await;
    let requests_at_interrupt = stats(&emulator).await["requests"].as_u64().unwrap();
    let interrupted_at = Instant::now();
    std::process::Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    let output = tokio::task::spawn_blocking(move || child.wait_with_output().unwrap())
        .await
        .unwrap();
    assert_exit(&output, 130);
    assert!(
        interrupted_at.elapsed() < Duration::from_secs(2),
        "took {:?}",
        interrupted_at.elapsed()
    );
    // At most the one request whose slot had already come.
    let requests = stats(&emulator).await["requests"].as_u64().unwrap();
    assert!(
        requests <= requests_at_interrupt + 1,
        "{requests_at_interrupt} -> {requests}"
    );
    emulator.shutdown().await;
}

/// A store that refuses every write, slowly, counting them.
async fn refuse_slowly(State(refused): State<Arc<AtomicU64>>) -> impl IntoResponse {
    tokio::time::sleep(Duration::from_millis(20)).await;
    refused.fetch_add(1, Ordering::Relaxed);
    let outcome = r#"{"resourceType":"OperationOutcome","issue":[{"severity":"error","code":"invalid","diagnostics":"refused for the test"}]}"#;
    (StatusCode::BAD_REQUEST, outcome)
}

/// A second signal leaves at once, but what `--failed` had gathered is on disk.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_signal_aborts_but_keeps_the_failed_file() {
    let refused = Arc::new(AtomicU64::new(0));
    let app = Router::new()
        .route("/fhir/{resource_type}", post(refuse_slowly))
        .with_state(refused.clone());
    let base = format!("http://{}/fhir", serve_on_loopback(app).await);
    let dir = tempfile::tempdir().unwrap();
    let failed = dir.path().join("failed.ndjson");
    let mut command = fhirgen();
    command
        .args([
            "load",
            "--fhir-url",
            &base,
            "--mode",
            "create",
            "--count",
            "100000",
        ])
        .arg("--failed")
        .arg(&failed)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped());
    let child = command.spawn().unwrap();
    wait_until("20 refusals before the signals", || {
        refused.load(Ordering::Relaxed) >= 20
    })
    .await;
    for _ in 0..2 {
        std::process::Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let output = tokio::task::spawn_blocking(move || child.wait_with_output().unwrap())
        .await
        .unwrap();
    assert_exit(&output, 143);
    let lines = std::fs::read_to_string(&failed).unwrap();
    assert!(!lines.is_empty(), "nothing in --failed");
    let entries: Vec<serde_json::Value> = lines
        .lines()
        .map(|line| serde_json::from_str(line).expect("whole JSON lines"))
        .collect();
    assert!(entries.iter().all(|e| e["failure"]["message"].is_string()));
    assert!(entries.iter().any(|e| e["failure"]["status"] == 400));
}

/// A quota window smaller than the bundles (12 operations per 100 ms, bundles of 40): no
/// bundle ever fits, and fewer workers or a lower rate would not help. The bundles are split
/// until they fit, everything is stored once, and the summary names the size that fits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bundles_larger_than_the_quota_window_are_split_until_they_fit() {
    let emulator = start_emulator(EmulatorOptions {
        quota_ops: 12,
        quota_window: Duration::from_millis(100),
        ..EmulatorOptions::default()
    })
    .await;
    let output = load_into(&emulator.fhir_base_url())
        .mode("transaction")
        .count(150)
        .workers(2)
        .json()
        .args(["--bundle-size", "40", "--min-backoff", "5ms"])
        .run()
        .await;
    assert_exit(&output, 0);
    let summary = summary(&output);
    assert_eq!(summary["stored"], 150, "{summary}");
    assert_eq!(summary["failed"], 0, "{summary}");
    assert_eq!(total_resources(&emulator).await, 150);
    let stderr = stderr(&output);
    assert!(
        stderr.contains("the store's quota never admitted a bundle of "),
        "{stderr}"
    );
    // Halved until a bundle fits the window of 12 operations.
    let fit: usize = stderr
        .split("--bundle-size ")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .and_then(|size| size.parse().ok())
        .unwrap_or_else(|| panic!("no --bundle-size named: {stderr}"));
    assert!((1..=12).contains(&fit), "{stderr}");
    assert!(!stderr.contains("lower --workers"), "{stderr}");
    emulator.shutdown().await;
}
