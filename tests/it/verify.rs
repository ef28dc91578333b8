//! `fhirgen verify` end to end: `fhirgen serve` in its own process on 127.0.0.1, the binary
//! loading into it and reading it back.

use std::io::{BufRead, BufReader};
use std::process::{Child, Output, Stdio};

use crate::common::*;
use serde_json::{Value, json};

/// The data set every test loads: fixed seed and date, so load and verify agree on it.
const DATA: [&str; 6] = ["--count", "300", "--seed", "7", "--as-of", "2024-06-01"];

/// `fhirgen serve --port 0`, stopped when dropped.
struct Served {
    child: Child,
    addr: String,
}

impl Served {
    fn start() -> Self {
        Self::start_with(&[])
    }

    fn start_with(flags: &[&str]) -> Self {
        let mut child = fhirgen()
            .args(["serve", "--port", "0"])
            .args(flags)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("fhirgen serve starts");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let addr = line
            .trim()
            .strip_prefix("listening on http://")
            .unwrap_or_else(|| panic!("serve printed `{line}`, not its address"))
            .to_owned();
        Self { child, addr }
    }

    fn base(&self) -> String {
        format!("http://{}/fhir", self.addr)
    }

    async fn reset(&self) {
        let reset = reqwest::Client::new()
            .post(format!("http://{}/_emulator/reset", self.addr))
            .send()
            .await
            .unwrap();
        assert!(reset.status().is_success());
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn fhirgen_with(served: &Served, command: &str, extra: &[&str]) -> Output {
    let mut cmd = fhirgen();
    cmd.args([command, "--fhir-url", &served.base()])
        .args(extra)
        .stdin(Stdio::null());
    run(cmd).await
}

async fn load(served: &Served, args: &[&str]) {
    let output = fhirgen_with(served, "load", &[args, &["--quiet"]].concat()).await;
    assert_exit(&output, 0);
}

async fn verify(served: &Served, extra: &[&str]) -> (Output, Value) {
    let output = fhirgen_with(served, "verify", &[&["--json"], extra].concat()).await;
    let report = summary(&output);
    (output, report)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passes_after_a_load_and_names_what_is_missing_after_a_reset() {
    let served = Served::start();
    load(&served, &DATA).await;

    let (output, report) = verify(&served, &DATA).await;
    assert_exit(&output, 0);
    assert_eq!(report["ok"], true);
    assert_eq!(report["expected"], 300);
    assert_eq!(report["checked"], 300);
    let types = report["types"].as_object().unwrap();
    assert!(types.contains_key("Patient") && types.contains_key("Observation"));
    for (resource_type, count) in types {
        assert_eq!(count["found"], count["expected"], "{resource_type}");
    }
    assert!(stderr(&output).contains("OK:"), "{}", stderr(&output));

    let (output, report) = verify(&served, &[&DATA[..], &["--sample", "25"]].concat()).await;
    assert_exit(&output, 0);
    assert_eq!(
        (report["checked"].clone(), report["sample"].clone()),
        (json!(25), json!(25))
    );

    served.reset().await;
    let (output, report) = verify(&served, &DATA).await;
    assert_exit(&output, 1);
    assert_eq!(report["ok"], false);
    assert_eq!(report["missing"]["count"], 300);
    let first = report["missing"]["first"][0].as_str().unwrap();
    assert!(
        first.contains("?identifier=https://fhirgen.dev/sid/"),
        "{first}"
    );
    assert_eq!(report["types"]["Patient"]["found"], 0);
    assert!(
        report["count_mismatches"]
            .as_array()
            .unwrap()
            .contains(&json!("Patient"))
    );
    let text = stderr(&output);
    assert!(
        text.contains("missing (300):") && text.contains(first),
        "{text}"
    );
    assert!(text.contains("FAILED: 300 missing"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn names_a_resource_stored_twice() {
    let served = Served::start();
    load(&served, &[&DATA[..], &["--mode", "create"]].concat()).await;
    // A second copy of one Patient, posted without If-None-Exist as a careless loader would.
    let client = reqwest::Client::new();
    let page: Value = client
        .get(format!("{}/Patient?_count=1", served.base()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let mut patient = page["entry"][0]["resource"].clone();
    patient.as_object_mut().unwrap().remove("id");
    let identifier = &patient["identifier"][0];
    let value = identifier["value"].as_str().unwrap().to_owned();
    let created = client
        .post(format!("{}/Patient", served.base()))
        .header("content-type", "application/fhir+json")
        .body(patient.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);

    let (output, report) = verify(&served, &DATA).await;
    assert_exit(&output, 1);
    assert_eq!(report["duplicated"]["count"], 1);
    let duplicate = &report["duplicated"]["first"][0];
    assert_eq!(duplicate["found"], 2);
    let named = duplicate["resource"].as_str().unwrap();
    assert!(
        named.starts_with("Patient?identifier=") && named.ends_with(&value),
        "{named}"
    );
    assert_eq!(report["missing"]["count"], 0);
    // One more Patient than the data set: reported, but only --exact-counts calls it a mismatch.
    let patients = &report["types"]["Patient"];
    assert_eq!(
        patients["found"].as_u64(),
        patients["expected"].as_u64().map(|n| n + 1)
    );
    assert_eq!(report["count_mismatches"], json!([]));
    let text = stderr(&output);
    assert!(
        text.contains("duplicated (1):") && text.contains("(found 2 times)"),
        "{text}"
    );

    let (output, report) = verify(&served, &[&DATA[..], &["--exact-counts"]].concat()).await;
    assert_exit(&output, 1);
    assert_eq!(report["count_mismatches"], json!(["Patient"]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checks_what_was_loaded_from_files() {
    let served = Served::start();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data.ndjson.gz");
    let data = data.to_str().unwrap();
    let mut generate = fhirgen();
    generate.args(["generate", "-o", data]).args(DATA);
    assert_exit(&run(generate).await, 0);
    let input = ["--input", data];
    load(&served, &input).await;

    let (output, report) = verify(&served, &input).await;
    assert_exit(&output, 0);
    assert_eq!(
        (report["expected"].clone(), report["checked"].clone()),
        (json!(300), json!(300))
    );
    // Another data set is not what the store holds.
    let (output, report) = verify(&served, &["--count", "300", "--seed", "8"]).await;
    assert_exit(&output, 1);
    assert!(report["missing"]["count"].as_u64().unwrap() > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_credential_stops_the_check_and_fails_it() {
    let served = Served::start_with(&["--require-token", "the-right-token"]);
    load(
        &served,
        &[&DATA[..], &["--access-token", "the-right-token"]].concat(),
    )
    .await;
    let (output, report) = verify(
        &served,
        &[&DATA[..], &["--access-token", "the-right-token"]].concat(),
    )
    .await;
    assert_exit(&output, 0);
    assert_eq!(report["ok"], true);

    let (output, report) = verify(
        &served,
        &[&DATA[..], &["--access-token", "a-wrong-one"]].concat(),
    )
    .await;
    assert_exit(&output, 1);
    assert_eq!(report["ok"], false);
    assert_eq!(report["walked_all"], false, "no lookup after the first 401");
    let reason = report["fatal_error"].as_str().unwrap();
    assert!(reason.contains("401"), "{reason}");
    assert!(
        !stderr(&output).contains("a-wrong-one")
            && !output.stdout.windows(11).any(|w| w == b"a-wrong-one")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refuses_what_cannot_be_verified() {
    let mut command = fhirgen();
    command.args(["verify", "--emulator"]);
    let output = run(command).await;
    assert_exit(&output, 2);
    assert!(
        stderr(&output).contains("fhirgen serve"),
        "{}",
        stderr(&output)
    );
    for (flags, says) in [
        (["--seed", "random"], "the seed the load used"),
        (["--timeout", "0"], "--timeout 0 must be a positive number"),
    ] {
        let mut command = fhirgen();
        command
            .args(["verify", "--fhir-url", "http://127.0.0.1:1/fhir"])
            .args(flags);
        let output = run(command).await;
        assert_exit(&output, 2);
        assert!(stderr(&output).contains(says), "{}", stderr(&output));
    }
}
