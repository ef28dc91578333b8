//! `fhirgen load --input`: existing data (Synthea output, bulk NDJSON, stdin) through the binary
//! into the emulator on 127.0.0.1.

mod common;

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

fn load_input(base: &str, mode: &str, input: &std::path::Path) -> std::process::Command {
    let mut command = fhirgen();
    command.args([
        "load",
        "--fhir-url",
        base,
        "--mode",
        mode,
        "--json",
        "--quiet",
        "--input",
    ]);
    command.arg(input);
    command
}

/// Loads `dir` into a fresh store in every mode: everything is stored (`expected` resources,
/// none failed), every reference resolves, and a second run leaves the store as it was.
/// Returns what the store held per type, for each mode.
async fn loads_completely_and_once_in_every_mode(
    dir: &std::path::Path,
    expected: u64,
) -> Vec<std::collections::BTreeMap<String, u64>> {
    let mut held = Vec::new();
    for mode in ["transaction", "create", "update"] {
        let emulator = start_emulator(EmulatorOptions::default()).await;
        let base = emulator.fhir_base_url();
        let first = run(load_input(&base, mode, dir)).await;
        assert_exit(&first, 0);
        let summary = summary(&first);
        assert_eq!(summary["failed"], 0, "{mode}: {summary}");
        assert_eq!(summary["stored"], expected, "{mode}: {summary}");
        let counts = resource_counts(&emulator).await;
        assert_eq!(counts.values().sum::<u64>(), expected, "{mode}: {counts:?}");
        assert_store_consistent(&emulator).await;

        let second = run(load_input(&base, mode, dir)).await;
        assert_exit(&second, 0);
        let again = resource_counts(&emulator).await;
        assert_eq!(again, counts, "{mode}: second run");
        emulator.shutdown().await;
        held.push(counts);
    }
    held
}

/// Synthea's output folder (shared hospital and practitioner batches, then patient bundles
/// with conditional references) loads whole in every mode, with every reference resolved;
/// loading it again stores nothing twice: resources without an identifier get one from their
/// place in the input, and those that cannot carry one (Provenance) are PUT to a stable id.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn synthea_folder_loads_completely_and_once_in_every_mode() {
    let Some(dir) = sample("synthea-bundles") else {
        return;
    };
    // The hospital and practitioner batches, then the three patients' bundles.
    let held = loads_completely_and_once_in_every_mode(&dir, 68 + 68 + 269 + 253 + 379).await;
    assert!(held.iter().all(|counts| counts["Patient"] == 3), "{held:?}");
}

/// Bulk per-type NDJSON with the batch bundles of the same run: the folder order puts what is
/// referred to first, in every mode, and a second run adds nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bulk_export_folder_loads_in_dependency_order_in_every_mode() {
    let Some(dir) = sample("bulk-ndjson/ktmtwm-sytheadata") else {
        return;
    };
    // 989 lines of NDJSON plus the 16 entries of the two batch bundles.
    let held = loads_completely_and_once_in_every_mode(&dir, 989 + 16).await;
    assert!(held.iter().all(|counts| counts["Patient"] == 1), "{held:?}");
}

/// The SMART sample: Patients, then AllergyIntolerances and Devices that point at them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smart_bulk_sample_loads() {
    let Some(dir) = sample("bulk-ndjson/smart-10-patients") else {
        return;
    };
    let emulator = start_emulator(EmulatorOptions::default()).await;
    let output = run(load_input(&emulator.fhir_base_url(), "create", &dir)).await;
    assert_exit(&output, 0);
    assert_eq!(summary(&output)["stored"], 13 + 11 + 16);
    assert_store_consistent(&emulator).await;
    emulator.shutdown().await;
}

/// `fhirgen generate | fhirgen load --input -` stores exactly what was generated, as NDJSON
/// of resources and as NDJSON of bundles, and gzip files and folders read the same.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generated_data_round_trips_through_input() {
    let dir = tempfile::tempdir().unwrap();
    for (format, mode) in [
        ("ndjson", "create"),
        ("ndjson", "transaction"),
        ("bundle", "transaction"),
        ("bundle", "update"),
    ] {
        let generated = fhirgen()
            .args([
                "generate", "--count", "400", "--seed", "9", "--format", format,
            ])
            .output()
            .unwrap();
        assert_exit(&generated, 0);
        let emulator = start_emulator(EmulatorOptions::default()).await;
        let mut command = fhirgen();
        command
            .args([
                "load",
                "--input",
                "-",
                "--json",
                "--quiet",
                "--mode",
                mode,
                "--fhir-url",
            ])
            .arg(emulator.fhir_base_url())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let data = generated.stdout.clone();
        let output = tokio::task::spawn_blocking(move || {
            let mut child = command.spawn().unwrap();
            child.stdin.take().unwrap().write_all(&data).unwrap();
            child.wait_with_output().unwrap()
        })
        .await
        .unwrap();
        assert_exit(&output, 0);
        assert_eq!(summary(&output)["stored"], 400, "{format} {mode}");
        assert_eq!(total_resources(&emulator).await, 400, "{format} {mode}");
        assert_store_consistent(&emulator).await;
        emulator.shutdown().await;
    }

    // The same data gzipped, in a nested folder.
    let generated = fhirgen()
        .args(["generate", "--count", "300", "--seed", "4"])
        .output()
        .unwrap();
    let nested = dir.path().join("a/b");
    std::fs::create_dir_all(&nested).unwrap();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&generated.stdout).unwrap();
    std::fs::write(nested.join("data.ndjson.gz"), gz.finish().unwrap()).unwrap();
    let emulator = start_emulator(EmulatorOptions::default()).await;
    let output = run(load_input(
        &emulator.fhir_base_url(),
        "transaction",
        dir.path(),
    ))
    .await;
    assert_exit(&output, 0);
    assert_eq!(total_resources(&emulator).await, 300);
    emulator.shutdown().await;
}

/// 100 good lines among 3 bad ones: the good ones load, the bad ones are named by line on
/// stderr and kept in `--failed`, exit 1; fixing the file and feeding it back stores the
/// fixable one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_lines_are_reported_kept_and_can_be_fed_back() {
    let generated = fhirgen()
        .args(["generate", "--count", "100", "--seed", "3"])
        .output()
        .unwrap();
    let mut lines: Vec<String> = String::from_utf8(generated.stdout)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect();
    let patient_id = lines
        .iter()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .find(|r| r["resourceType"] == "Patient")
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    // Line 11: not JSON. Line 31: no resourceType. Last line: an Observation the store
    // rejects (no status), pointing at a generated patient.
    lines.insert(10, "this is not json".to_owned());
    lines.insert(30, r#"{"id": "x"}"#.to_owned());
    let rejected = json!({
        "resourceType": "Observation", "id": "obs-without-status",
        "identifier": [{"system": "https://example.org/obs", "value": "no-status"}],
        "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}]},
        "subject": {"reference": format!("Patient/{patient_id}")}
    });
    lines.push(rejected.to_string());
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("input.ndjson");
    std::fs::write(&input, lines.join("\n") + "\n").unwrap();
    let failed = dir.path().join("failed.ndjson");

    let emulator = start_emulator(EmulatorOptions::default()).await;
    let base = emulator.fhir_base_url();
    let mut command = load_input(&base, "create", &input);
    command.arg("--failed").arg(&failed);
    let output = run(command).await;
    assert_exit(&output, 1);
    let summary = summary(&output);
    assert_eq!(
        (summary["stored"].as_u64(), summary["failed"].as_u64()),
        (Some(100), Some(3))
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    let name = input.display().to_string();
    assert!(stderr.contains(&format!("{name}:11")), "{stderr}");
    assert!(stderr.contains(&format!("{name}:31")), "{stderr}");
    // The store's refusal is shown with the resource and where it came from.
    assert!(
        stderr.contains(&format!(
            "not stored: Observation/obs-without-status ({name}:103): HTTP 400"
        )),
        "{stderr}"
    );
    assert_eq!(total_resources(&emulator).await, 100);

    let kept: Vec<Value> = std::fs::read_to_string(&failed)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(kept.len(), 3);
    let rejected_line = kept
        .iter()
        .find(|l| l["resource"]["id"] == "obs-without-status")
        .expect("the rejected resource is kept");
    assert_eq!(rejected_line["failure"]["status"], 400);
    assert_eq!(rejected_line["failure"]["source"], format!("{name}:103"));

    // Writing failures over the file being read is refused before anything is touched.
    let mut command = load_input(&base, "create", &failed);
    command.arg("--failed").arg(&failed);
    let refused = run(command).await;
    assert_exit(&refused, 2);
    assert!(String::from_utf8_lossy(&refused.stderr).contains("would overwrite the --input"));
    assert_eq!(std::fs::read_to_string(&failed).unwrap().lines().count(), 3);

    // Fix the rejected resource in the failed file and feed the whole file back.
    let fixed: Vec<String> = kept
        .iter()
        .map(|line| {
            let mut line = line.clone();
            if line["resource"]["id"] == "obs-without-status" {
                line["resource"]["status"] = json!("final");
            }
            line.to_string()
        })
        .collect();
    std::fs::write(&failed, fixed.join("\n") + "\n").unwrap();
    let output = run(load_input(&base, "create", &failed)).await;
    assert_exit(&output, 1);
    let summary = summary_of(&output);
    assert_eq!(
        (summary["stored"].as_u64(), summary["failed"].as_u64()),
        (Some(1), Some(2))
    );
    assert_eq!(total_resources(&emulator).await, 101);
    assert_store_consistent(&emulator).await;
    emulator.shutdown().await;
}

fn summary_of(output: &std::process::Output) -> Value {
    summary(output)
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
