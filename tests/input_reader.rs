//! `fhirgen load --input`: existing data (Synthea output, bulk NDJSON, stdin) through the binary
//! into the emulator on 127.0.0.1.

mod common;

use std::collections::HashSet;
use std::io::Write;
use std::path::PathBuf;
use std::process::Stdio;

use common::*;
use fhirgen::emulator::EmulatorOptions;
use serde_json::{Value, json};

/// A folder of the shared third-party samples, or `None` (with a note) when it is absent.
fn sample(name: &str) -> Option<PathBuf> {
    let path = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/data/")).join(name);
    if path.is_dir() {
        Some(path)
    } else {
        eprintln!("note: {} is absent; test skipped", path.display());
        None
    }
}

/// Every relative reference in the store points at a stored resource, and no two resources of
/// a type share the identifier their conditional create used. (Real data may share other
/// identifiers: Synthea gives every ExplanationOfBenefit the same claim-group.)
async fn assert_loaded_consistently(emulator: &fhirgen::emulator::Emulator) {
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
    let mut conditional = HashSet::new();
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
            let id = format!("{}?{query}", resource.resource_type());
            assert!(conditional.insert(id.clone()), "stored twice: {id}");
        }
    }
}

#[test]
fn missing_input_is_a_usage_error() {
    let output = fhirgen()
        .args(["load", "--emulator", "--input", "/no/such/input.ndjson"])
        .output()
        .unwrap();
    assert_exit(&output, 2);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("--input /no/such/input.ndjson: no such file or directory"),
        "{stderr}"
    );
}

/// Synthea's output folder loads whole, with every reference resolved, and loading it again
/// stores nothing twice: resources without an identifier get one from their place in the input.
/// Provenance can carry no identifier in R4, so only it is stored again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn synthea_folder_loads_completely_and_once() {
    let Some(dir) = sample("synthea-bundles") else {
        return;
    };
    let emulator = start_emulator(EmulatorOptions::default()).await;
    let base = emulator.fhir_base_url();
    let load = || {
        let mut command = fhirgen();
        command.args(["load", "--fhir-url", &base, "--json", "--quiet", "--input"]);
        command.arg(&dir);
        command
    };
    let first = run(load()).await;
    assert_exit(&first, 0);
    assert_eq!(summary(&first)["stored"], 68 + 68 + 269 + 253 + 379);
    let counts = resource_counts(&emulator).await;
    assert_eq!(counts.values().sum::<u64>(), 1037);
    assert_eq!(counts["Patient"], 3);
    assert_loaded_consistently(&emulator).await;

    let second = run(load()).await;
    assert_exit(&second, 0);
    let mut again = resource_counts(&emulator).await;
    assert_eq!(again.remove("Provenance"), Some(2 * counts["Provenance"]));
    let mut before = counts.clone();
    before.remove("Provenance");
    assert_eq!(again, before);
    emulator.shutdown().await;
}

/// Bulk per-type NDJSON with the batch bundles of the same run, in create mode: the folder order
/// puts what is referred to first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bulk_export_folder_loads_in_dependency_order() {
    let Some(dir) = sample("bulk-ndjson/ktmtwm-sytheadata") else {
        return;
    };
    let emulator = start_emulator(EmulatorOptions::default()).await;
    let mut command = fhirgen();
    command.args(["load", "--mode", "create", "--json", "--quiet", "--input"]);
    command.arg(&dir);
    command.args(["--fhir-url", &emulator.fhir_base_url()]);
    let output = run(command).await;
    assert_exit(&output, 0);
    let summary = summary(&output);
    assert_eq!(summary["failed"], 0, "{summary}");
    assert_eq!(
        total_resources(&emulator).await,
        summary["stored"].as_u64().unwrap()
    );
    assert_loaded_consistently(&emulator).await;
    emulator.shutdown().await;
}

/// NDJSON on stdin with a bad line: the rest loads, the bad line goes to `--failed` with its
/// line number, and the run exits 1.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stdin_with_a_bad_line() {
    let emulator = start_emulator(EmulatorOptions::default()).await;
    let failed = tempfile::NamedTempFile::new().unwrap();
    let mut input = Vec::new();
    for line in [
        json!({"resourceType": "Patient", "id": "p1"}).to_string(),
        "{\"resourceType\": \"Observation\", ".to_owned(),
        String::new(),
        json!({"resourceType": "Observation", "id": "o1", "status": "final",
               "code": {"text": "pulse"}, "subject": {"reference": "Patient/p1"}})
        .to_string(),
    ] {
        writeln!(input, "{line}").unwrap();
    }
    let mut command = fhirgen();
    command
        .args(["load", "--input", "-", "--json", "--quiet", "--fhir-url"])
        .arg(emulator.fhir_base_url())
        .arg("--failed")
        .arg(failed.path())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let output = tokio::task::spawn_blocking(move || {
        let mut child = command.spawn().unwrap();
        child.stdin.take().unwrap().write_all(&input).unwrap();
        child.wait_with_output().unwrap()
    })
    .await
    .unwrap();
    assert_exit(&output, 1);
    let summary = summary(&output);
    assert_eq!(
        (summary["stored"].as_u64(), summary["failed"].as_u64()),
        (Some(2), Some(1))
    );
    let failed_lines = std::fs::read_to_string(failed.path()).unwrap();
    let failed_lines: Vec<Value> = failed_lines
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(failed_lines.len(), 1);
    assert_eq!(failed_lines[0]["failure"]["source"], "-:2");
    assert_eq!(
        failed_lines[0]["resource"],
        "{\"resourceType\": \"Observation\","
    );
    emulator.shutdown().await;
}
