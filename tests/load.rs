//! `fhirgen load` end to end: the binary against the emulator on 127.0.0.1.

mod common;

use std::time::Duration;

use common::*;
use fhirgen::emulator::EmulatorOptions;

/// The same command twice: everything stored once, and never more than 8 requests in flight.
async fn load_twice_in_mode(mode: &str) {
    let emulator = start_emulator(EmulatorOptions::default()).await;
    load_twice(&emulator, mode, 700, 8).await;
    let max_in_flight = stats(&emulator).await["max_in_flight"].as_u64().unwrap();
    assert!(
        max_in_flight <= 8,
        "{max_in_flight} requests in flight with --workers 8"
    );
    emulator.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transaction_mode_stores_everything_once() {
    load_twice_in_mode("transaction").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_mode_stores_everything_once() {
    load_twice_in_mode("create").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn update_mode_stores_everything_once() {
    load_twice_in_mode("update").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn never_more_requests_in_flight_than_workers() {
    let emulator = start_emulator(EmulatorOptions {
        latency: Duration::from_millis(15),
        ..EmulatorOptions::default()
    })
    .await;
    let mut command = fhirgen();
    command.args([
        "load",
        "--fhir-url",
        &emulator.fhir_base_url(),
        "--count",
        "400",
        "--workers",
        "4",
        "--mode",
        "create",
        "--json",
        "--quiet",
    ]);
    let output = run(command).await;
    assert_exit(&output, 0);
    let max_in_flight = stats(&emulator).await["max_in_flight"].as_u64().unwrap();
    // All four busy at once (the pool is used), never a fifth.
    assert_eq!(max_in_flight, 4);
    emulator.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn emulator_target_runs_in_process() {
    let mut command = fhirgen();
    command.args([
        "load",
        "--emulator",
        "--count",
        "300",
        "--workers",
        "16",
        "--json",
    ]);
    let output = run(command).await;
    assert_exit(&output, 0);
    let summary = summary(&output);
    assert_eq!(summary["stored"], 300);
    assert!(summary["requests"].as_u64().unwrap() > 0);
    for key in ["p50", "p90", "p99", "max"] {
        assert!(summary["latency_ms"][key].is_number(), "{summary}");
    }
    assert!(
        summary["status_counts"]["200"].is_number() || summary["status_counts"]["201"].is_number()
    );
    assert_eq!(summary["seed"], 1);
    // The text summary goes to stderr, the JSON alone to stdout.
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("Stored:"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_is_never_sent_over_plain_http_to_a_remote_host() {
    let mut command = fhirgen();
    command.args([
        "load",
        "--fhir-url",
        "http://fhir.example.com/fhir",
        "--access-token",
        "ya29.not-real",
        "--count",
        "5",
    ]);
    let output = run(command).await;
    assert_exit(&output, 2);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("plain http"), "{stderr}");
    assert!(!stderr.contains("ya29.not-real"), "{stderr}");

    // A password in the URL is a credential as well.
    let mut command = fhirgen();
    command.args([
        "load",
        "--fhir-url",
        "http://loader:hunter2@fhir.example.com/fhir",
    ]);
    let output = run(command).await;
    assert_exit(&output, 2);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("plain http"), "{stderr}");
    assert!(!stderr.contains("hunter2"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_password_in_the_url_is_not_shown() {
    let emulator = start_emulator(EmulatorOptions::default()).await;
    let base = emulator
        .fhir_base_url()
        .replace("http://", "http://loader:hunter2@");
    let mut command = fhirgen();
    command.args(["load", "--fhir-url", &base, "--count", "20", "--json"]);
    let output = run(command).await;
    assert_exit(&output, 0);
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(!all.contains("hunter2"), "{all}");
    emulator.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_store_name_is_a_usage_error() {
    let mut command = fhirgen();
    command.args(["load", "--store", "projects/p/fhirStores/s", "--count", "5"]);
    let output = run(command).await;
    assert_exit(&output, 2);
    assert!(String::from_utf8_lossy(&output.stderr).contains("projects/PROJECT/locations"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn out_of_range_numbers_are_usage_errors() {
    for flags in [
        ["--timeout", "1e20"],
        ["--rate", "1e-300"],
        ["--timeout", "0"],
    ] {
        let mut command = fhirgen();
        command
            .args(["load", "--emulator", "--count", "5"])
            .args(flags);
        let output = run(command).await;
        assert_exit(&output, 2);
        assert!(String::from_utf8_lossy(&output.stderr).contains(flags[0]));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http1_pools_and_http2_both_load() {
    let emulator = start_emulator(EmulatorOptions::default()).await;
    for (version, mode) in [("1", "create"), ("2", "create"), ("2", "transaction")] {
        let mut command = fhirgen();
        command
            .args([
                "load",
                "--fhir-url",
                &emulator.fhir_base_url(),
                "--count",
                "300",
            ])
            .args([
                "--http",
                version,
                "--mode",
                mode,
                "--workers",
                "8",
                "--json",
                "--quiet",
            ]);
        let output = run(command).await;
        assert_exit(&output, 0);
        assert_eq!(
            summary(&output)["stored"],
            300,
            "--http {version} --mode {mode}"
        );
    }
    assert_eq!(total_resources(&emulator).await, 300);
    emulator.shutdown().await;
}
