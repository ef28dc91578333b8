//! Shared by the integration tests: an emulator (or a stand-in store) on 127.0.0.1, the
//! binary with a clean environment, and readers of what the store holds.
#![allow(dead_code)]

pub mod google;
#[path = "../../data/samples.rs"]
pub mod samples;

use std::collections::{BTreeMap, HashSet};
use std::process::Output;

use fhirgen::emulator::{Emulator, EmulatorOptions};
use serde_json::Value;

/// Serves a stand-in store (or token endpoint) on a free loopback port; gives its address.
pub async fn serve_on_loopback(app: axum::Router) -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    addr
}

/// Terminates TLS with a fresh self-signed certificate for 127.0.0.1 and localhost, and passes
/// the bytes on to `plain`; gives the address and the certificate's PEM.
pub async fn tls_in_front_of(plain: std::net::SocketAddr) -> (std::net::SocketAddr, String) {
    use tokio_rustls::rustls;
    let names = vec!["127.0.0.1".to_owned(), "localhost".to_owned()];
    let certified = rcgen::generate_simple_self_signed(names).unwrap();
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(certified.signing_key.serialize_der().into());
    let config = rustls::ServerConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(vec![certified.cert.der().clone()], key)
    .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(socket).await else {
                    return;
                };
                let mut upstream = tokio::net::TcpStream::connect(plain).await.unwrap();
                let _ = tokio::io::copy_bidirectional(&mut tls, &mut upstream).await;
            });
        }
    });
    (addr, certified.cert.pem())
}

pub async fn start_emulator(options: EmulatorOptions) -> Emulator {
    Emulator::start(options, "127.0.0.1:0".parse().unwrap())
        .await
        .expect("emulator starts")
}

/// The binary, with none of the user's fhirgen or Google settings leaking in.
pub fn fhirgen() -> std::process::Command {
    let mut command = std::process::Command::new(assert_cmd::cargo::cargo_bin!("fhirgen"));
    for (key, _) in std::env::vars() {
        if key.starts_with("FHIRGEN_")
            || key.starts_with("GOOGLE_")
            || key.starts_with("CLOUDSDK_")
            || key.ends_with("_TASK_INDEX")
            || key.ends_with("_TASK_COUNT")
            || key == "JOB_COMPLETION_INDEX"
        {
            command.env_remove(key);
        }
    }
    command.env("HOME", std::env::temp_dir().join("fhirgen-test-home"));
    command
}

/// `load` in create mode of `count` generated resources by `workers` workers, printing the JSON
/// summary alone.
pub fn create_load(emulator: &Emulator, count: u32, workers: u32) -> std::process::Command {
    let mut command = fhirgen();
    command
        .args([
            "load",
            "--fhir-url",
            &emulator.fhir_base_url(),
            "--mode",
            "create",
        ])
        .args([
            "--count",
            &count.to_string(),
            "--workers",
            &workers.to_string(),
        ])
        .args(["--json", "--quiet"]);
    command
}

/// Runs the command off the async runtime (the emulator lives on it).
pub async fn run(mut command: std::process::Command) -> Output {
    tokio::task::spawn_blocking(move || command.output().expect("fhirgen runs"))
        .await
        .unwrap()
}

pub fn summary(output: &Output) -> Value {
    let stdout = String::from_utf8_lossy(&output.stdout);
    serde_json::from_str(stdout.trim()).unwrap_or_else(|e| {
        panic!(
            "stdout is not one JSON summary ({e}):\n{stdout}\nstderr:\n{}",
            String::from_utf8_lossy(&output.stderr)
        )
    })
}

pub fn assert_exit(output: &Output, code: i32) {
    assert_eq!(
        output.status.code(),
        Some(code),
        "stdout:\n{}\nstderr:\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

pub async fn stats(emulator: &Emulator) -> Value {
    reqwest::get(format!("http://{}/_emulator/stats", emulator.addr()))
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// Number of resources of each type the store holds.
pub async fn resource_counts(emulator: &Emulator) -> BTreeMap<String, u64> {
    let stats = stats(emulator).await;
    stats["resources"]
        .as_object()
        .map(|m| {
            m.iter()
                .filter(|(_, n)| n.as_u64() != Some(0))
                .map(|(k, v)| (k.clone(), v.as_u64().unwrap()))
                .collect()
        })
        .unwrap_or_default()
}

pub async fn total_resources(emulator: &Emulator) -> u64 {
    resource_counts(emulator).await.values().sum()
}

/// Every resource of `resource_type` in the store, following search paging.
pub async fn all_of_type(base: &str, resource_type: &str) -> Vec<Value> {
    let client = reqwest::Client::new();
    let mut url = format!("{base}/{resource_type}?_count=1000");
    let mut found = Vec::new();
    loop {
        let page: Value = client.get(&url).send().await.unwrap().json().await.unwrap();
        for entry in page["entry"].as_array().into_iter().flatten() {
            found.push(entry["resource"].clone());
        }
        let next = page["link"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|l| l["relation"] == "next")
            .and_then(|l| l["url"].as_str());
        match next {
            Some(next) => url = next.to_owned(),
            None => return found,
        }
    }
}

/// Reads the whole store and checks that every relative reference points at a stored
/// resource, and that no two resources of a type share the identifier their conditional
/// create used: nothing was stored twice. (Real data may share other identifiers: Synthea
/// gives every ExplanationOfBenefit the same claim-group.)
pub async fn assert_store_consistent(emulator: &Emulator) {
    let base = emulator.fhir_base_url();
    let mut resources = Vec::new();
    for resource_type in resource_counts(emulator).await.keys() {
        resources.extend(all_of_type(&base, resource_type).await);
    }
    let keys: HashSet<String> = resources
        .iter()
        .map(|r| {
            format!(
                "{}/{}",
                r["resourceType"].as_str().unwrap(),
                r["id"].as_str().unwrap()
            )
        })
        .collect();
    let mut conditions = HashSet::new();
    for resource in &resources {
        for reference in fhirgen::fhir::references(resource) {
            if !reference.starts_with('#') && !reference.contains("://") {
                assert!(
                    keys.contains(&reference),
                    "dangling reference {reference} in {resource}"
                );
            }
        }
        let resource = fhirgen::fhir::Resource::new(resource.clone());
        if let Some(query) = resource.conditional_query() {
            let condition = format!("{}?{query}", resource.resource_type());
            assert!(
                conditions.insert(condition.clone()),
                "stored twice: {condition}"
            );
        }
    }
}

/// Runs the same `load` of `count` generated resources into `emulator` twice. Each run exits 0
/// and reports all `count` stored and none failed; after each, the store holds exactly `count`
/// resources, every reference resolves and nothing is stored twice. Returns the first run's
/// summary.
pub async fn load_twice(emulator: &Emulator, mode: &str, count: u64, workers: u32) -> Value {
    let base = emulator.fhir_base_url();
    let (count_arg, workers_arg) = (count.to_string(), workers.to_string());
    let args = [
        "load",
        "--fhir-url",
        &base,
        "--count",
        &count_arg,
        "--workers",
        &workers_arg,
        "--mode",
        mode,
        "--json",
        "--quiet",
    ];
    let mut summaries = Vec::new();
    for run_number in 1..=2 {
        let mut command = fhirgen();
        command.args(args);
        let output = run(command).await;
        assert_exit(&output, 0);
        let summary = summary(&output);
        assert_eq!(summary["stored"], count, "run {run_number}: {summary}");
        assert_eq!(summary["failed"], 0, "run {run_number}: {summary}");
        assert_eq!(summary["mode"], mode);
        assert_eq!(
            total_resources(emulator).await,
            count,
            "after run {run_number}"
        );
        assert_store_consistent(emulator).await;
        summaries.push(summary);
    }
    summaries.swap_remove(0)
}

/// What a stand-in store that holds nothing answers a search by tag, the lookup before a
/// resource without an identifier (a Provenance) is created: an empty searchset. It serves no
/// other read.
pub async fn empty_tag_search(
    axum::extract::RawQuery(query): axum::extract::RawQuery,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    if !query.is_some_and(|q| q.contains("_tag=")) {
        return axum::http::StatusCode::METHOD_NOT_ALLOWED.into_response();
    }
    (
        axum::http::StatusCode::OK,
        [(axum::http::header::CONTENT_TYPE, "application/fhir+json")],
        r#"{"resourceType":"Bundle","type":"searchset","total":0}"#,
    )
        .into_response()
}
