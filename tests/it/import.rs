//! The managed-import path offline: `generate -o gs://...` into the emulator's Cloud Storage,
//! resumed after an interruption, and its usage errors.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use fhirgen::emulator::{Emulator, EmulatorOptions, UploadFaults};
use serde_json::Value;

use crate::common::{assert_exit, fhirgen, run, start_emulator};

/// `generate` of `count` resources into gs://bucket-a/PREFIX/ of `emulator`, in 256 KiB chunks.
pub(crate) fn generate_to(
    emulator: &Emulator,
    state: &std::path::Path,
    prefix: &str,
    count: u32,
) -> std::process::Command {
    let mut command = fhirgen();
    command
        .env("STORAGE_EMULATOR_HOST", emulator.addr().to_string())
        .env("FHIRGEN_STATE_DIR", state)
        .args(["generate", "--count", &count.to_string(), "--seed", "7"])
        .args(["--as-of", "2025-06-01", "--upload-chunk-size", "256KiB"])
        .args(["-o", &format!("gs://bucket-a/{prefix}/")]);
    command
}

pub(crate) async fn get_json(url: String) -> Value {
    reqwest::get(url).await.unwrap().json().await.unwrap()
}

/// The objects under the prefix: name -> content.
pub(crate) async fn objects(emulator: &Emulator, prefix: &str) -> BTreeMap<String, String> {
    let list = get_json(format!(
        "http://{}/storage/v1/b/bucket-a/o?prefix={prefix}/",
        emulator.addr()
    ))
    .await;
    let mut found = BTreeMap::new();
    for item in list["items"].as_array().into_iter().flatten() {
        let name = item["name"].as_str().unwrap();
        let encoded = name.replace('/', "%2F");
        let content = reqwest::get(format!(
            "http://{}/storage/v1/b/bucket-a/o/{encoded}?alt=media",
            emulator.addr()
        ))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
        found.insert(name.to_owned(), content);
    }
    found
}

pub(crate) fn generated_lines(count: u32) -> Vec<String> {
    let output = fhirgen()
        .args(["generate", "--count", &count.to_string(), "--seed", "7"])
        .args(["--as-of", "2025-06-01"])
        .output()
        .unwrap();
    assert_exit(&output, 0);
    let mut lines: Vec<String> = String::from_utf8(output.stdout)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect();
    lines.sort();
    lines
}

#[tokio::test]
async fn generate_writes_the_data_set_as_objects_and_a_manifest_once() {
    let emulator = start_emulator(EmulatorOptions::default()).await;
    let state = tempfile::tempdir().unwrap();
    let output = run(generate_to(&emulator, state.path(), "run", 3000)).await;
    assert_exit(&output, 0);
    let stored = objects(&emulator, "run").await;
    let (manifests, data): (Vec<_>, Vec<_>) = stored
        .iter()
        .partition(|(name, _)| name.ends_with(".manifest.json"));
    assert_eq!(manifests.len(), 1);
    let manifest: Value = serde_json::from_str(manifests[0].1).unwrap();
    assert_eq!(manifest["total"], 3000);
    assert_eq!(manifest["arguments"]["seed"], 7);

    // The objects hold exactly what `generate` writes to stdout, one resource per line, each
    // with an id and references as Type/id.
    let mut lines: Vec<String> = data
        .iter()
        .flat_map(|(_, content)| content.lines().map(str::to_owned))
        .collect();
    lines.sort();
    assert_eq!(lines, generated_lines(3000));
    let mut counts: BTreeMap<String, u64> = BTreeMap::new();
    for line in &lines {
        let resource: Value = serde_json::from_str(line).unwrap();
        assert!(resource["id"].as_str().is_some_and(|id| !id.is_empty()));
        *counts
            .entry(resource["resourceType"].as_str().unwrap().to_owned())
            .or_default() += 1;
    }
    let listed: BTreeMap<String, u64> =
        serde_json::from_value(manifest["resources"].clone()).unwrap();
    assert_eq!(listed, counts);
    for object in manifest["objects"].as_array().unwrap() {
        let content = &stored[object["name"].as_str().unwrap()];
        assert_eq!(object["bytes"], content.len() as u64);
    }

    // The same command again finds the data set complete and sends nothing.
    let before = emulator.storage_stats();
    let again = run(generate_to(&emulator, state.path(), "run", 3000)).await;
    assert_exit(&again, 0);
    assert!(String::from_utf8_lossy(&again.stderr).contains("0 uploaded"));
    assert_eq!(
        emulator.storage_stats().bytes_received,
        before.bytes_received
    );
    assert_eq!(objects(&emulator, "run").await, stored);
}

#[tokio::test]
async fn an_expired_session_restarts_its_object() {
    let emulator = start_emulator(EmulatorOptions {
        upload_faults: UploadFaults {
            expire_session_chunk: 3,
            ..UploadFaults::default()
        },
        ..EmulatorOptions::default()
    })
    .await;
    let state = tempfile::tempdir().unwrap();
    let output = run(generate_to(&emulator, state.path(), "expiring", 2000)).await;
    assert_exit(&output, 0);
    let stored = objects(&emulator, "expiring").await;
    let mut lines: Vec<String> = stored
        .iter()
        .filter(|(name, _)| name.ends_with(".ndjson"))
        .flat_map(|(_, content)| content.lines().map(str::to_owned))
        .collect();
    lines.sort();
    assert_eq!(lines, generated_lines(2000));
    assert_eq!(emulator.storage_stats().sessions, 2);
}

#[tokio::test]
async fn a_killed_upload_resumes_from_its_session() {
    // The fourth chunk is answered 503 and the client waits a minute before asking again:
    // the run is killed in that wait, with three chunks kept.
    let emulator = start_emulator(EmulatorOptions {
        upload_faults: UploadFaults {
            unavailable_chunk: 4,
            ..UploadFaults::default()
        },
        ..EmulatorOptions::default()
    })
    .await;
    let state = tempfile::tempdir().unwrap();
    let mut first = generate_to(&emulator, state.path(), "killed", 3000);
    first.args(["--min-backoff", "60s"]);
    let mut child = first.spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while emulator.storage_stats().chunks < 4 {
        assert!(
            Instant::now() < deadline,
            "the upload never reached its fourth chunk"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let killed = emulator.storage_stats();
    assert_eq!(killed.sessions, 1);

    let output = run(generate_to(&emulator, state.path(), "killed", 3000)).await;
    assert_exit(&output, 0);
    let resumed = emulator.storage_stats();
    // Same session, and nothing sent twice but the refused chunk.
    assert_eq!(resumed.sessions, 1);
    let stored = objects(&emulator, "killed").await;
    // Every object once (the manifest too), and the refused chunk once more.
    let size: u64 = stored.values().map(|content| content.len() as u64).sum();
    assert_eq!(resumed.bytes_received, size + 256 * 1024);
    let mut lines: Vec<String> = stored
        .iter()
        .filter(|(name, _)| name.ends_with(".ndjson"))
        .flat_map(|(_, content)| content.lines().map(str::to_owned))
        .collect();
    lines.sort();
    assert_eq!(lines, generated_lines(3000));
}

#[test]
fn malformed_storage_locations_are_usage_errors() {
    for (url, why) in [
        ("gs://", "names no bucket"),
        ("gs://Bad_Bucket/x", "is not a bucket name"),
        ("gs://bucket-a/x*", "wildcards"),
    ] {
        let output = fhirgen()
            .args(["generate", "--count", "10", "-o", url])
            .output()
            .unwrap();
        assert_exit(&output, 2);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(why), "{url}: {stderr}");
    }
    let output = fhirgen()
        .args([
            "generate",
            "--count",
            "10",
            "--format",
            "bundle",
            "-o",
            "gs://bucket-a/x/",
        ])
        .env("STORAGE_EMULATOR_HOST", "127.0.0.1:9")
        .output()
        .unwrap();
    assert_exit(&output, 2);
    let output = fhirgen()
        .args([
            "generate",
            "--upload-chunk-size",
            "1000",
            "-o",
            "gs://bucket-a/x/",
        ])
        .output()
        .unwrap();
    assert_exit(&output, 2);
}

/// Starts `fhirStores.import` of gs://bucket-a/PREFIX/**.ndjson into the emulator's store and
/// follows the operation to its end.
async fn import_and_wait(emulator: &Emulator, prefix: &str, structure: Option<&str>) -> Value {
    let store = format!("http://{}/v1/{}", emulator.addr(), emulator.store_name());
    let mut request =
        serde_json::json!({"gcsSource": {"uri": format!("gs://bucket-a/{prefix}/**.ndjson")}});
    if let Some(structure) = structure {
        request["contentStructure"] = Value::from(structure);
    }
    let client = reqwest::Client::new();
    let started: Value = client
        .post(format!("{store}:import"))
        .json(&request)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let name = started["name"].as_str().unwrap().to_owned();
    assert!(name.contains("/datasets/dev/operations/"), "{name}");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let operation = get_json(format!("http://{}/v1/{name}", emulator.addr())).await;
        if operation["done"] == true {
            return operation;
        }
        assert!(Instant::now() < deadline, "the import never finished");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn the_emulator_imports_as_google_does() {
    let emulator = start_emulator(EmulatorOptions::default()).await;
    let state = tempfile::tempdir().unwrap();
    assert_exit(
        &run(generate_to(&emulator, state.path(), "data", 2000)).await,
        0,
    );
    let manifest: Value = objects(&emulator, "data")
        .await
        .into_iter()
        .find(|(name, _)| name.ends_with(".manifest.json"))
        .map(|(_, text)| serde_json::from_str(&text).unwrap())
        .unwrap();
    let expected: BTreeMap<String, u64> =
        serde_json::from_value(manifest["resources"].clone()).unwrap();

    // The default content structure is BUNDLE: NDJSON resources fail, with Google's message.
    let bundle = import_and_wait(&emulator, "data", None).await;
    assert_eq!(bundle["error"]["code"], 3);
    assert_eq!(bundle["metadata"]["counter"]["failure"], "2000");
    let logs = reqwest::get(bundle["metadata"]["logsUrl"].as_str().unwrap())
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(logs.contains("no bundle is found"), "{logs}");
    assert_eq!(crate::common::total_resources(&emulator).await, 0);

    // RESOURCE: every resource under its own id, references unchecked; twice, still exact.
    for _ in 0..2 {
        let done = import_and_wait(&emulator, "data", Some("RESOURCE")).await;
        assert!(done["error"].is_null(), "{done}");
        assert_eq!(done["metadata"]["counter"]["success"], "2000");
        assert_eq!(done["metadata"]["counter"]["pending"], "0");
        assert!(
            done["response"]["@type"]
                .as_str()
                .unwrap()
                .ends_with("ImportResourcesResponse")
        );
        assert_eq!(crate::common::resource_counts(&emulator).await, expected);
    }
    crate::common::assert_store_consistent(&emulator).await;
    // The store's settings are still served beside the import method.
    let settings = get_json(format!(
        "http://{}/v1/{}",
        emulator.addr(),
        emulator.store_name()
    ))
    .await;
    assert_eq!(settings["name"], emulator.store_name());
}

/// `load --store` of the emulator's store through gs://bucket-a/PREFIX, printing the JSON
/// summary.
pub(crate) fn load_via(
    emulator: &Emulator,
    state: &std::path::Path,
    prefix: &str,
    count: u32,
) -> std::process::Command {
    let mut command = load_via_text(emulator, state, prefix, count);
    command.arg("--json");
    command
}

/// The same, with the text summary on stderr.
pub(crate) fn load_via_text(
    emulator: &Emulator,
    state: &std::path::Path,
    prefix: &str,
    count: u32,
) -> std::process::Command {
    let endpoint = format!("http://{}/v1", emulator.addr());
    let mut command = via_command(&endpoint, emulator.store_name(), emulator, state, prefix);
    command
        .args(["--count", &count.to_string()])
        .args(["--seed", "7", "--as-of", "2025-06-01"]);
    command
}

/// `load --store STORE --endpoint ENDPOINT --via gs://bucket-a/PREFIX` with the emulator's
/// Cloud Storage and a made-up token, without the data arguments.
pub(crate) fn via_command(
    endpoint: &str,
    store: &str,
    storage: &Emulator,
    state: &std::path::Path,
    prefix: &str,
) -> std::process::Command {
    let mut command = fhirgen();
    crate::common::google::without_proxies(&mut command);
    command
        .env("FHIRGEN_STATE_DIR", state)
        .args(["load", "--store", store, "--endpoint", endpoint])
        .args(["--access-token", "test-token-not-a-secret"])
        .args(["--storage-endpoint", &storage.addr().to_string()])
        .args(["--via", &format!("gs://bucket-a/{prefix}")]);
    command
}

pub(crate) fn expected_counts(count: u32) -> BTreeMap<String, u64> {
    let mut counts = BTreeMap::new();
    for line in generated_lines(count) {
        let resource: Value = serde_json::from_str(&line).unwrap();
        *counts
            .entry(resource["resourceType"].as_str().unwrap().to_owned())
            .or_default() += 1;
    }
    counts
}

#[tokio::test]
async fn load_via_storage_imports_the_data_set_exactly_and_again() {
    let emulator = start_emulator(EmulatorOptions::default()).await;
    let state = tempfile::tempdir().unwrap();
    let expected = expected_counts(2500);
    for round in 0..2 {
        let output = run(load_via(&emulator, state.path(), "via", 2500)).await;
        assert_exit(&output, 0);
        let summary = crate::common::summary(&output);
        assert_eq!(summary["resources"], 2500, "round {round}: {summary}");
        assert_eq!(summary["imported"], 2500);
        assert_eq!(summary["failed"], 0);
        assert!(
            summary["operation"]
                .as_str()
                .unwrap()
                .contains("/operations/")
        );
        assert!(summary.get("logs_url").is_none());
        assert_eq!(summary["objects_deleted"], true);
        assert_eq!(crate::common::resource_counts(&emulator).await, expected);
        assert!(objects(&emulator, "via").await.is_empty());
    }
    crate::common::assert_store_consistent(&emulator).await;

    let kept = run({
        let mut command = load_via(&emulator, state.path(), "kept", 300);
        command.arg("--keep-objects");
        command
    })
    .await;
    assert_exit(&kept, 0);
    assert_eq!(objects(&emulator, "kept").await.len(), 2);
}

#[tokio::test]
async fn load_via_the_built_in_emulator() {
    let state = tempfile::tempdir().unwrap();
    let output = run({
        let mut command = fhirgen();
        command
            .env("FHIRGEN_STATE_DIR", state.path())
            .args(["load", "--emulator", "--count", "700"])
            .args(["--via", "gs://bucket-a/local", "--json"]);
        command
    })
    .await;
    assert_exit(&output, 0);
    assert_eq!(crate::common::summary(&output)["imported"], 700);
}

#[test]
fn via_refuses_what_the_import_cannot_do() {
    let cases: [(&[&str], &str); 4] = [
        (
            &["--fhir-url", "http://127.0.0.1:9/fhir"],
            "fhirStores.import",
        ),
        (&["--emulator", "--mode", "create"], "--mode"),
        (
            &["--emulator", "--input", "x.ndjson"],
            "--input x.ndjson: no such file",
        ),
        (&["--emulator"], "not a bucket name"),
    ];
    for (args, why) in cases {
        let via = if why == "not a bucket name" {
            "gs://Bad/x"
        } else {
            "gs://bucket-a/x"
        };
        let output = fhirgen()
            .arg("load")
            .args(args)
            .args(["--via", via])
            .output()
            .unwrap();
        assert_exit(&output, 2);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(why), "{args:?}: {stderr}");
    }
}

#[tokio::test]
async fn via_refuses_a_prefix_holding_another_data_set() {
    let emulator = start_emulator(EmulatorOptions::default()).await;
    let state = tempfile::tempdir().unwrap();
    let upload = reqwest::Client::new()
        .post(format!(
            "http://{}/upload/storage/v1/b/bucket-a/o?uploadType=media&name=shared/old.ndjson",
            emulator.addr()
        ))
        .body("{}\n")
        .send()
        .await
        .unwrap();
    assert_eq!(upload.status(), 200);
    let output = run(load_via(&emulator, state.path(), "shared", 100)).await;
    assert_exit(&output, 2);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("another data set") && stderr.contains("shared/old.ndjson"),
        "{stderr}"
    );
    assert_eq!(emulator.storage_stats().sessions, 0, "nothing was uploaded");
    assert_eq!(crate::common::total_resources(&emulator).await, 0);
}
