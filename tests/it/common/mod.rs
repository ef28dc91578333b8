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

/// `fhirgen load --fhir-url BASE`, with the flags the tests set most as a builder.
pub struct LoadCommand(std::process::Command);

pub fn load_into(base: &str) -> LoadCommand {
    let mut command = fhirgen();
    command.args(["load", "--fhir-url", base]);
    LoadCommand(command)
}

impl LoadCommand {
    pub fn mode(self, mode: &str) -> Self {
        self.args(["--mode", mode])
    }

    pub fn count(self, count: u64) -> Self {
        self.args(["--count", &count.to_string()])
    }

    pub fn workers(self, workers: u32) -> Self {
        self.args(["--workers", &workers.to_string()])
    }

    /// `--input PATH` instead of generated data.
    pub fn input(self, path: impl AsRef<std::ffi::OsStr>) -> Self {
        self.args([std::ffi::OsStr::new("--input"), path.as_ref()])
    }

    /// `--failed PATH`.
    pub fn failed(self, path: impl AsRef<std::ffi::OsStr>) -> Self {
        self.args([std::ffi::OsStr::new("--failed"), path.as_ref()])
    }

    /// The JSON summary alone on stdout, and no text summary on stderr.
    pub fn json(self) -> Self {
        self.args(["--json", "--quiet"])
    }

    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        self.0.args(args);
        self
    }

    pub fn command(self) -> std::process::Command {
        self.0
    }

    /// Runs it to the end off the async runtime.
    pub async fn run(self) -> Output {
        run(self.0).await
    }
}

/// `load` in create mode of `count` generated resources by `workers` workers, printing the JSON
/// summary alone.
pub fn create_load(emulator: &Emulator, count: u32, workers: u32) -> std::process::Command {
    load_into(&emulator.fhir_base_url())
        .mode("create")
        .count(count.into())
        .workers(workers)
        .json()
        .command()
}

/// Runs the command off the async runtime (the emulator lives on it).
pub async fn run(mut command: std::process::Command) -> Output {
    tokio::task::spawn_blocking(move || command.output().expect("fhirgen runs"))
        .await
        .unwrap()
}

/// What the command wrote on stdout, as text.
pub fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// What the command wrote on stderr, as text.
pub fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Both streams, for an assertion's message.
pub fn text(output: &Output) -> String {
    format!("stdout:\n{}\nstderr:\n{}", stdout(output), stderr(output))
}

pub fn summary(output: &Output) -> Value {
    let stdout = stdout(output);
    serde_json::from_str(stdout.trim()).unwrap_or_else(|e| {
        panic!(
            "stdout is not one JSON summary ({e}):\n{stdout}\nstderr:\n{}",
            stderr(output)
        )
    })
}

pub fn assert_exit(output: &Output, code: i32) {
    assert_eq!(output.status.code(), Some(code), "{}", text(output));
}

/// Waits for `condition`, looking every 10 ms: a test waits for what it needs to have
/// happened, not for a time it hopes is enough. Fails after 30 s, naming `what`.
pub async fn wait_until(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !condition() {
        assert!(
            std::time::Instant::now() < deadline,
            "waited 30 s for {what}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
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
    load_twice_with(emulator, mode, count, workers, &[]).await
}

/// [`load_twice`] with `extra` flags on both runs.
pub async fn load_twice_with(
    emulator: &Emulator,
    mode: &str,
    count: u64,
    workers: u32,
    extra: &[&str],
) -> Value {
    let base = emulator.fhir_base_url();
    let load = || {
        load_into(&base)
            .count(count)
            .workers(workers)
            .mode(mode)
            .json()
            .args(extra)
    };
    let mut summaries = Vec::new();
    for run_number in 1..=2 {
        let output = load().run().await;
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
