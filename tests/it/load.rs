//! `fhirgen load` end to end: the binary against the emulator on 127.0.0.1.

use std::time::Duration;

use crate::common::*;
use fhirgen::emulator::EmulatorOptions;
use serde_json::{Value, json};

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
    let output = run(create_load(&emulator, 400, 4)).await;
    assert_exit(&output, 0);
    let max_in_flight = stats(&emulator).await["max_in_flight"].as_u64().unwrap();
    // All four busy at once (the pool is used), never a fifth.
    assert_eq!(max_in_flight, 4);
    emulator.shutdown().await;
}

/// `requests` counts the checks before the load (its `metadata` read), so the time they took is
/// in `elapsed_seconds` too, and the rates are of the same requests in the same time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_time_reported_covers_every_request_counted() {
    let latency = Duration::from_millis(200);
    let emulator = start_emulator(EmulatorOptions {
        latency,
        ..EmulatorOptions::default()
    })
    .await;
    let output = run(create_load(&emulator, 2, 1)).await;
    assert_exit(&output, 0);
    let summary = summary(&output);
    let requests = summary["requests"].as_u64().unwrap();
    assert!(requests >= 3, "{summary}");
    // One worker: the requests went one after another, each taking the store's latency.
    let elapsed = summary["elapsed_seconds"].as_f64().unwrap();
    assert!(
        elapsed >= (latency * requests as u32).as_secs_f64(),
        "{requests} requests of {latency:?} each in {elapsed} s: {summary}"
    );
    let rate = summary["requests_per_second"].as_f64().unwrap();
    assert!(
        (rate * elapsed - requests as f64).abs() < 0.01 * requests as f64,
        "{summary}"
    );
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
    let stderr = stderr(&output);
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
    let stderr = stderr(&output);
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
    let stderr = crate::common::stderr(&output);
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
    let all = format!("{}{}", stdout(&output), stderr(&output));
    assert!(!all.contains("hunter2"), "{all}");
    emulator.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_store_name_is_a_usage_error() {
    let mut command = fhirgen();
    command.args(["load", "--store", "projects/p/fhirStores/s", "--count", "5"]);
    let output = run(command).await;
    assert_exit(&output, 2);
    assert!(stderr(&output).contains("projects/PROJECT/locations"));
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
        assert!(stderr(&output).contains(flags[0]));
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

/// A store that behaves like a new Google store: the emulator without create-on-PUT, with
/// Google's conditional update by identifier (`PUT {type}?identifier=...`) and `_tag` search
/// added in front of it, and full resources in every answer (`Prefer` is not passed on).
struct GoogleDefaultStore {
    emulator: fhirgen::emulator::Emulator,
    base: String,
}

impl GoogleDefaultStore {
    async fn start() -> Self {
        let emulator = start_emulator(EmulatorOptions {
            update_create: false,
            ..EmulatorOptions::default()
        })
        .await;
        let upstream = Upstream {
            origin: format!("http://{}", emulator.addr()),
            http: reqwest::Client::new(),
        };
        let app = axum::Router::new()
            .fallback(google_default)
            .with_state(upstream);
        let addr = serve_on_loopback(app).await;
        let path = emulator
            .fhir_base_url()
            .split_once(&emulator.addr().to_string())
            .map(|(_, path)| path.to_owned())
            .unwrap();
        Self {
            base: format!("http://{addr}{path}"),
            emulator,
        }
    }
}

#[derive(Clone)]
struct Upstream {
    origin: String,
    http: reqwest::Client,
}

struct Answer {
    status: u16,
    location: Option<String>,
    body: Vec<u8>,
}

impl axum::response::IntoResponse for Answer {
    fn into_response(self) -> axum::response::Response {
        let mut response = axum::response::Response::new(axum::body::Body::from(self.body));
        *response.status_mut() = axum::http::StatusCode::from_u16(self.status).unwrap();
        let headers = response.headers_mut();
        headers.insert("content-type", "application/fhir+json".parse().unwrap());
        if let Some(location) = self.location {
            headers.insert("location", location.parse().unwrap());
        }
        response
    }
}

impl Upstream {
    async fn send(
        &self,
        method: reqwest::Method,
        url: &str,
        if_none_exist: Option<&str>,
        body: Vec<u8>,
    ) -> Answer {
        let mut request = self
            .http
            .request(method, url)
            .header("content-type", "application/fhir+json")
            .body(body);
        if let Some(condition) = if_none_exist {
            request = request.header("if-none-exist", condition);
        }
        let response = request.send().await.unwrap();
        Answer {
            status: response.status().as_u16(),
            location: response
                .headers()
                .get("location")
                .map(|l| l.to_str().unwrap().to_owned()),
            body: response.bytes().await.unwrap().to_vec(),
        }
    }

    async fn get_json(&self, url: &str) -> Value {
        let answer = self.send(reqwest::Method::GET, url, None, Vec::new()).await;
        serde_json::from_slice(&answer.body).unwrap()
    }
}

async fn google_default(
    axum::extract::State(upstream): axum::extract::State<Upstream>,
    request: axum::extract::Request,
) -> Answer {
    let (parts, body) = request.into_parts();
    let body = axum::body::to_bytes(body, 64 << 20).await.unwrap().to_vec();
    let path = parts.uri.path();
    let url = format!("{}{path}", upstream.origin);
    let if_none_exist = parts
        .headers
        .get("if-none-exist")
        .map(|h| h.to_str().unwrap().to_owned());
    let method = reqwest::Method::from_bytes(parts.method.as_str().as_bytes()).unwrap();
    match (parts.uri.query(), method.as_str()) {
        (Some(query), "PUT") if query.starts_with("identifier=") => {
            let found = upstream.get_json(&format!("{url}?{query}")).await;
            let matches = found["entry"].as_array().cloned().unwrap_or_default();
            let mut resource: Value = serde_json::from_slice(&body).unwrap();
            match matches.as_slice() {
                [] if resource.get("id").is_none() => {
                    upstream.send(reqwest::Method::POST, &url, None, body).await
                }
                [] => Answer {
                    status: 404,
                    location: None,
                    body: b"{\"resourceType\":\"OperationOutcome\",\"issue\":[{\"severity\":\"error\",\"code\":\"not-found\",\"diagnostics\":\"no match, and enableUpdateCreate is off\"}]}".to_vec(),
                },
                [one] => {
                    let id = one["resource"]["id"].as_str().unwrap().to_owned();
                    resource["id"] = json!(id);
                    let body = serde_json::to_vec(&resource).unwrap();
                    upstream
                        .send(reqwest::Method::PUT, &format!("{url}/{id}"), None, body)
                        .await
                }
                _ => Answer {
                    status: 412,
                    location: None,
                    body: b"{\"resourceType\":\"OperationOutcome\",\"issue\":[{\"severity\":\"error\",\"code\":\"multiple-matches\",\"diagnostics\":\"several resources match\"}]}".to_vec(),
                },
            }
        }
        (Some(query), "GET") if query.contains("_tag=") => {
            let tag = query
                .split('&')
                .find_map(|p| p.strip_prefix("_tag="))
                .unwrap();
            let tag = percent_encoding::percent_decode_str(tag)
                .decode_utf8()
                .unwrap()
                .into_owned();
            let (system, code) = tag.split_once('|').unwrap();
            let mut next = Some(format!("{url}?_count=1000"));
            let mut entries = Vec::new();
            while let Some(page_url) = next.take() {
                let page = upstream.get_json(&page_url).await;
                for entry in page["entry"].as_array().into_iter().flatten() {
                    let tagged = entry["resource"]["meta"]["tag"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .any(|t| t["system"] == system && t["code"] == code);
                    if tagged {
                        entries.push(entry.clone());
                    }
                }
                next = page["link"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .find(|l| l["relation"] == "next")
                    .and_then(|l| l["url"].as_str())
                    .map(str::to_owned);
            }
            let bundle = json!({"resourceType": "Bundle", "type": "searchset",
                "total": entries.len(), "entry": entries});
            Answer {
                status: 200,
                location: None,
                body: serde_json::to_vec(&bundle).unwrap(),
            }
        }
        (query, _) => {
            let url = match query {
                Some(query) => format!("{url}?{query}"),
                None => url,
            };
            upstream
                .send(method, &url, if_none_exist.as_deref(), body)
                .await
        }
    }
}

fn load_command(base: &str, mode: &str, source: &[&str]) -> std::process::Command {
    let mut command = fhirgen();
    command
        .args(["load", "--fhir-url", base, "--mode", mode])
        .args(["--workers", "8", "--json", "--quiet"])
        .args(source);
    command
}

/// One run: exit 0, nothing failed or left unsent; the summary.
async fn load_ok(base: &str, mode: &str, source: &[&str]) -> Value {
    let output = run(load_command(base, mode, source)).await;
    assert_exit(&output, 0);
    let summary = summary(&output);
    assert_eq!(summary["failed"], 0, "{mode}: {summary}");
    assert_eq!(summary["not_sent"], 0, "{mode}: {summary}");
    let parts = ["created", "already_present", "updated"]
        .map(|key| summary[key].as_u64().unwrap())
        .iter()
        .sum::<u64>();
    assert_eq!(summary["stored"], parts, "{mode}: {summary}");
    summary
}

/// What the second of two runs of `source` should say: all of it was there already, or
/// (update mode) written over, but for what has no identifier (Provenance), which update mode
/// finds by its source-key tag and leaves.
fn assert_all_there(summary: &Value, mode: &str, source: &[&str]) {
    let output = fhirgen().arg("generate").args(source).output().unwrap();
    assert!(output.status.success(), "{output:?}");
    let text = String::from_utf8(output.stdout).unwrap();
    let count = text.lines().count() as u64;
    let tagged = text
        .lines()
        .filter(|line| line.starts_with(r#"{"resourceType":"Provenance""#))
        .count() as u64;
    let (updated, already_present) = if mode == "update" {
        (count - tagged, tagged)
    } else {
        (0, count)
    };
    assert_eq!(summary["updated"], updated, "{mode}: {summary}");
    assert_eq!(
        summary["already_present"], already_present,
        "{mode}: {summary}"
    );
    assert_eq!(summary["created"], 0, "{mode}: {summary}");
}

/// Every mode, on a store with Google's default settings: the first run creates everything,
/// the second creates nothing, and the store holds each resource once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_mode_loads_once_on_a_google_default_store() {
    for mode in ["transaction", "create", "update"] {
        let store = GoogleDefaultStore::start().await;
        let source = ["--count", "500"];
        let first = load_ok(&store.base, mode, &source).await;
        assert_eq!(first["created"], 500, "{mode}: {first}");
        assert_eq!(total_resources(&store.emulator).await, 500);
        let second = load_ok(&store.base, mode, &source).await;
        assert_all_there(&second, mode, &source);
        assert_eq!(total_resources(&store.emulator).await, 500, "{mode}");
        assert_store_consistent(&store.emulator).await;
        store.emulator.shutdown().await;
    }
}

/// The same data loaded in one mode, then another: the store holds it once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn switching_modes_stores_nothing_twice() {
    let store = GoogleDefaultStore::start().await;
    let source = ["--count", "500", "--seed", "3"];
    let first = load_ok(&store.base, "transaction", &source).await;
    assert_eq!(first["created"], 500, "{first}");
    for mode in ["update", "create", "transaction"] {
        let again = load_ok(&store.base, mode, &source).await;
        assert_all_there(&again, mode, &source);
        assert_eq!(total_resources(&store.emulator).await, 500, "after {mode}");
    }
    assert_store_consistent(&store.emulator).await;
    store.emulator.shutdown().await;
}

fn synthea_bundles() -> std::path::PathBuf {
    let beside = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../shared/data/synthea-bundles"
    );
    [beside, "/work/shared/data/synthea-bundles"]
        .into_iter()
        .map(std::path::PathBuf::from)
        .find(|path| path.is_dir())
        .unwrap_or_else(|| panic!("the Synthea sample is not at {beside}"))
}

/// Synthea's bundles (Provenance has no identifier) load exactly once in every mode on a
/// store that does not create on PUT, and a second run, in any mode, adds nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn synthea_with_provenance_loads_once_in_every_mode_on_a_google_default_store() {
    let dir = synthea_bundles();
    let dir = dir.to_str().unwrap();
    for (mode, then) in [
        ("transaction", "update"),
        ("create", "transaction"),
        ("update", "create"),
    ] {
        let store = GoogleDefaultStore::start().await;
        let first = load_ok(&store.base, mode, &["--input", dir]).await;
        assert_eq!(first["created"], 1037, "{mode}: {first}");
        let counts = resource_counts(&store.emulator).await;
        assert_eq!(counts.values().sum::<u64>(), 1037, "{mode}: {counts:?}");
        assert_eq!(counts["Provenance"], 3, "{mode}");
        assert_store_consistent(&store.emulator).await;
        for (run_mode, label) in [(mode, "again"), (then, "then")] {
            let again = load_ok(&store.base, run_mode, &["--input", dir]).await;
            assert_eq!(again["created"], 0, "{mode} {label} {run_mode}: {again}");
            assert_eq!(again["stored"], 1037, "{mode} {label} {run_mode}: {again}");
            assert_eq!(
                resource_counts(&store.emulator).await,
                counts,
                "{mode} {label} {run_mode}"
            );
        }
        store.emulator.shutdown().await;
    }
}

/// 2,500 small records (a Patient and an Observation each, 5,000 resources) packed into
/// transactions, one Observation invalid.
fn records_with_one_invalid_observation(path: &std::path::Path, records: usize, bad: usize) {
    let mut lines = String::new();
    for i in 0..records {
        let patient = format!("urn:uuid:00000000-0000-4000-8000-{i:012}");
        let observation = format!("urn:uuid:00000000-0000-4000-9000-{i:012}");
        let status = if i == bad { "not-a-status" } else { "final" };
        let bundle = json!({"resourceType": "Bundle", "type": "transaction", "entry": [
            {"fullUrl": patient, "request": {"method": "POST", "url": "Patient"},
             "resource": {"resourceType": "Patient",
                "identifier": [{"system": "https://example.org/patient", "value": format!("p{i}")}]}},
            {"fullUrl": observation, "request": {"method": "POST", "url": "Observation"},
             "resource": {"resourceType": "Observation", "status": status, "code": {"text": "x"},
                "identifier": [{"system": "https://example.org/obs", "value": format!("o{i}")}],
                "subject": {"reference": patient}}}]});
        lines.push_str(&bundle.to_string());
        lines.push('\n');
    }
    std::fs::write(path, lines).unwrap();
}

/// One invalid Observation among 5,000 resources: exactly its record fails, with the store's
/// message naming it, and every other record packed with it is stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_transaction_fails_only_the_wrong_record() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("records.ndjson");
    records_with_one_invalid_observation(&input, 2500, 1234);
    let failed = dir.path().join("failed.ndjson");
    let emulator = start_emulator(EmulatorOptions::default()).await;
    let mut command = load_command(&emulator.fhir_base_url(), "transaction", &["--input"]);
    command.arg(&input).arg("--failed").arg(&failed);
    let output = run(command).await;
    assert_exit(&output, 1);
    let summary = summary(&output);
    assert_eq!(summary["failed"], 2, "{summary}");
    assert_eq!(summary["not_sent"], 0, "{summary}");
    assert_eq!(summary["stored"], 4998, "{summary}");
    assert_eq!(total_resources(&emulator).await, 4998);
    let lines: Vec<Value> = std::fs::read_to_string(&failed)
        .unwrap()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    assert_eq!(lines.len(), 2);
    for line in &lines {
        let message = line["failure"]["message"].as_str().unwrap();
        assert!(message.contains("not-a-status"), "{message}");
        assert!(
            message.contains("is urn:uuid:00000000-0000-4000-9000-000000001234"),
            "the invalid entry is named: {message}"
        );
        assert_eq!(line["failure"]["status"], 400);
    }
    assert_eq!(lines[1]["resource"]["status"], "not-a-status");
    emulator.shutdown().await;
}

/// A `--failed` file that cannot be written (a full disk) is said once, with its path; the
/// load goes on and the summary is printed, and the run exits 1.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_file_on_a_full_disk_is_reported_once() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("records.ndjson");
    records_with_one_invalid_observation(&input, 300, 7);
    let emulator = start_emulator(EmulatorOptions::default()).await;
    let mut command = fhirgen();
    command
        .args(["load", "--fhir-url", &emulator.fhir_base_url(), "--json"])
        .arg("--input")
        .arg(&input)
        .args(["--failed", "/dev/full"]);
    let output = run(command).await;
    assert_exit(&output, 1);
    let summary = summary(&output);
    assert_eq!(summary["stored"], 598, "{summary}");
    assert_eq!(summary["failed"], 2, "{summary}");
    assert!(
        summary["failed_file_error"]
            .as_str()
            .is_some_and(|e| e.contains("/dev/full")),
        "{summary}"
    );
    let stderr = stderr(&output);
    assert_eq!(stderr.matches("/dev/full").count(), 1, "{stderr}");
    assert!(stderr.contains("Summary:"), "{stderr}");
    emulator.shutdown().await;
}

/// A server that answers 2xx with something other than the FHIR answer asked for.
async fn false_success_server(
    status: u16,
    content_type: &'static str,
    body: &'static str,
) -> String {
    let app = axum::Router::new().fallback(move || async move {
        (
            axum::http::StatusCode::from_u16(status).unwrap(),
            [("content-type", content_type)],
            body,
        )
    });
    format!("http://{}/fhir", serve_on_loopback(app).await)
}

/// Nothing is counted as stored when a 2xx answer is an HTML page, JSON of another shape, a
/// resource of another type or a Bundle of the wrong type; what came back is reported.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_success_that_is_not_the_fhir_answer_stores_nothing() {
    let html = "<!DOCTYPE html><html><body>Sign in to continue</body></html>";
    let cases = [
        ("transaction", 200, "text/html", html, "an HTML"),
        ("create", 201, "text/html", html, "an HTML"),
        ("update", 200, "text/html", html, "an HTML"),
        (
            "create",
            201,
            "application/json",
            r#"{"ok":true}"#,
            "JSON that is not a FHIR resource",
        ),
        (
            "update",
            200,
            "application/fhir+json",
            r#"{"resourceType":"OperationOutcome","issue":[]}"#,
            "a OperationOutcome",
        ),
        (
            "transaction",
            200,
            "application/fhir+json",
            r#"{"resourceType":"Bundle","type":"batch-response","entry":[]}"#,
            "a batch-response Bundle",
        ),
    ];
    for (mode, status, content_type, body, said) in cases {
        let base = false_success_server(status, content_type, body).await;
        let output = run(load_command(&base, mode, &["--count", "40"])).await;
        assert_exit(&output, 1);
        let summary = summary(&output);
        let what = format!("{mode}, {status} {content_type}: {summary}");
        assert_eq!(summary["stored"], 0, "{what}");
        assert!(summary["failed"].as_u64().unwrap() > 0, "{what}");
        assert_eq!(
            summary["failed"].as_u64().unwrap() + summary["not_sent"].as_u64().unwrap(),
            40,
            "{what}"
        );
        let stderr = stderr(&output);
        assert!(stderr.contains(said), "{what}\n{stderr}");
        assert!(
            stderr.contains(&format!("HTTP {status}")),
            "{what}\n{stderr}"
        );
    }
}
