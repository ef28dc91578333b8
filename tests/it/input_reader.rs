//! `fhirgen load --input`: existing data (Synthea output, bulk NDJSON, stdin) through the binary
//! into the emulator on 127.0.0.1.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use crate::common::samples::{bundled, unlicensed};
use crate::common::*;
use fhirgen::emulator::{Emulator, EmulatorOptions};
use fhirgen::source::input::DEFER_MEMORY_ENV;
use serde_json::{Value, json};

#[test]
fn missing_input_is_a_usage_error() {
    let output = fhirgen()
        .args(["load", "--emulator", "--input", "/no/such/input.ndjson"])
        .output()
        .unwrap();
    assert_exit(&output, 2);
    let stderr = stderr(&output);
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
/// content, and those that cannot carry one (Provenance) are PUT to a stable id.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn synthea_folder_loads_completely_and_once_in_every_mode() {
    let dir = unlicensed("synthea-bundles");
    // The hospital and practitioner batches, then the three patients' bundles.
    let held = loads_completely_and_once_in_every_mode(&dir, 68 + 68 + 269 + 253 + 379).await;
    assert!(held.iter().all(|counts| counts["Patient"] == 3), "{held:?}");
}

/// Bulk per-type NDJSON with the batch bundles of the same run: the folder order puts what is
/// referred to first, in every mode, and a second run adds nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bulk_export_folder_loads_in_dependency_order_in_every_mode() {
    let dir = unlicensed("bulk-ndjson/ktmtwm-sytheadata");
    // 989 lines of NDJSON plus the 16 entries of the two batch bundles.
    let held = loads_completely_and_once_in_every_mode(&dir, 989 + 16).await;
    assert!(held.iter().all(|counts| counts["Patient"] == 1), "{held:?}");
}

/// The SMART sample: Patients, then AllergyIntolerances and Devices that point at them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smart_bulk_sample_loads() {
    let dir = bundled("smart-10-patients");
    let emulator = start_emulator(EmulatorOptions::default()).await;
    let output = run(load_input(&emulator.fhir_base_url(), "create", &dir)).await;
    assert_exit(&output, 0);
    assert_eq!(summary(&output)["stored"], 13 + 11 + 16);
    assert_store_consistent(&emulator).await;
    emulator.shutdown().await;
}

/// How the data reaches `--input`.
#[derive(Debug, Clone, Copy)]
enum Through {
    /// A file of this name in a fresh folder.
    File(&'static str),
    Stdin,
}

/// Loads NDJSON `lines` into `base`; `memory` (when given) bounds what waits in memory for
/// what it refers to, so that a bound of 0 sends every waiting record to disk.
async fn load_lines(
    base: &str,
    mode: &str,
    lines: &[String],
    through: Through,
    memory: Option<&str>,
) -> std::process::Output {
    let data = (lines.join("\n") + "\n").into_bytes();
    let folder = tempfile::tempdir().unwrap();
    let input = match through {
        Through::File(name) => {
            let path = folder.path().join(name);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, &data).unwrap();
            path
        }
        Through::Stdin => PathBuf::from("-"),
    };
    let mut command = load_input(base, mode, &input);
    if let Some(memory) = memory {
        command.env(DEFER_MEMORY_ENV, memory);
    }
    command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    tokio::task::spawn_blocking(move || {
        let mut child = command.spawn().unwrap();
        let mut stdin = child.stdin.take().unwrap();
        if matches!(through, Through::Stdin) {
            stdin.write_all(&data).unwrap();
        }
        drop(stdin);
        let output = child.wait_with_output().unwrap();
        drop(folder);
        output
    })
    .await
    .unwrap()
}

/// A bulk export as `cat export/*` gives it: the NDJSON files in name order, their lines as
/// they are, Bundles (pretty JSON) one line each.
fn concatenated(export: &Path) -> Vec<String> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(export)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    let mut lines = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        if file.extension().is_some_and(|e| e == "ndjson") {
            lines.extend(text.lines().map(str::to_owned));
        } else {
            lines.push(serde_json::from_str::<Value>(&text).unwrap().to_string());
        }
    }
    lines
}

/// Resources per type in `lines` (a Bundle's entries counted as theirs).
fn counts_of(lines: &[String]) -> BTreeMap<String, u64> {
    let mut counts = BTreeMap::new();
    for line in lines {
        let value: Value = serde_json::from_str(line).unwrap();
        let resources: Vec<&Value> = match value["entry"].as_array() {
            Some(entries) => entries.iter().map(|e| &e["resource"]).collect(),
            None => vec![&value],
        };
        for resource in resources {
            let resource_type = resource["resourceType"].as_str().unwrap().to_owned();
            *counts.entry(resource_type).or_default() += 1;
        }
    }
    counts
}

/// The same lines in an order fixed by `seed`.
fn shuffled(lines: &[String], seed: u64) -> Vec<String> {
    let mut out = lines.to_vec();
    let mut state = seed;
    for i in (1..out.len()).rev() {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        out.swap(i, (state >> 33) as usize % (i + 1));
    }
    out
}

/// Every source key in the store (identifier values and tag codes of the source-key system)
/// is a bare UUID: no `urn:uuid:`, nothing a server rewrites inside a transaction.
async fn assert_source_keys_are_plain(emulator: &Emulator) -> usize {
    let base = emulator.fhir_base_url();
    let mut checked = 0;
    for resource_type in resource_counts(emulator).await.keys() {
        for resource in all_of_type(&base, resource_type).await {
            let identifiers = resource["identifier"].as_array().into_iter().flatten();
            let tags = resource["meta"]["tag"].as_array().into_iter().flatten();
            for key in identifiers.chain(tags) {
                if key["system"] != "https://fhirgen.dev/sid/source-key" {
                    continue;
                }
                let value = key["value"].as_str().or(key["code"].as_str()).unwrap();
                assert!(
                    uuid::Uuid::try_parse(value).is_ok() && value.len() == 36,
                    "{resource_type}: source key {value:?}"
                );
                checked += 1;
            }
        }
    }
    checked
}

/// A bulk export concatenated in name order (`cat export/*`: AllergyIntolerance before
/// Patient, the shared Bundles last), reversed, and shuffled, loads completely in every mode,
/// through a file or stdin, with everything that waits for what it refers to sent to disk;
/// the same data again under another name, and through stdin, stores nothing new.
async fn any_order_loads_completely_and_once(export: &Path) {
    let in_name_order = concatenated(export);
    let expected = counts_of(&in_name_order);
    let total: u64 = expected.values().sum();
    let mut reversed = in_name_order.clone();
    reversed.reverse();
    let orders = [
        (
            "name order",
            in_name_order.clone(),
            Through::File("export.ndjson"),
        ),
        ("reversed", reversed, Through::Stdin),
        (
            "shuffled",
            shuffled(&in_name_order, 11),
            Through::File("a/b.json"),
        ),
    ];
    for mode in ["transaction", "create", "update"] {
        for (order, lines, through) in &orders {
            let what = format!("{} {mode} {order} {through:?}", export.display());
            let emulator = start_emulator(EmulatorOptions::default()).await;
            let base = emulator.fhir_base_url();
            let output = load_lines(&base, mode, lines, *through, Some("0")).await;
            assert_exit(&output, 0);
            let summary = summary(&output);
            assert_eq!(
                (summary["stored"].as_u64(), summary["failed"].as_u64()),
                (Some(total), Some(0)),
                "{what}: {summary}"
            );
            assert_eq!(resource_counts(&emulator).await, expected, "{what}");
            assert_store_consistent(&emulator).await;
            if *order == "shuffled" {
                assert!(assert_source_keys_are_plain(&emulator).await > 0, "{what}");
                for again in [
                    Through::File("elsewhere/renamed.ndjson.txt"),
                    Through::Stdin,
                ] {
                    let output = load_lines(&base, mode, &in_name_order, again, None).await;
                    assert_exit(&output, 0);
                    assert_eq!(
                        resource_counts(&emulator).await,
                        expected,
                        "{what}, then again {again:?}"
                    );
                }
            }
            emulator.shutdown().await;
        }
    }
}

/// `fhirgen generate` output upside down (`tac`): the shared Organizations, Practitioners and
/// PractitionerRoles come last, each role before what it refers to, every patient's record
/// after its observations. It loads whole in the modes that write one resource per request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generated_data_upside_down_loads_whole() {
    let generated = fhirgen()
        .args(["generate", "--count", "300", "--seed", "2"])
        .output()
        .unwrap();
    assert_exit(&generated, 0);
    let mut lines: Vec<String> = String::from_utf8(generated.stdout)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect();
    lines.reverse();
    for mode in ["create", "update"] {
        let emulator = start_emulator(EmulatorOptions::default()).await;
        let output = load_lines(
            &emulator.fhir_base_url(),
            mode,
            &lines,
            Through::Stdin,
            None,
        )
        .await;
        assert_exit(&output, 0);
        assert_eq!(summary(&output)["stored"], 300, "{mode}");
        assert_eq!(total_resources(&emulator).await, 300, "{mode}");
        assert_store_consistent(&emulator).await;
        emulator.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn synthea_bulk_export_in_any_order_loads_completely_and_once() {
    any_order_loads_completely_and_once(&unlicensed("bulk-ndjson/ktmtwm-sytheadata")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smart_bulk_export_in_any_order_loads_completely_and_once() {
    any_order_loads_completely_and_once(&bundled("smart-10-patients")).await;
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
    let stderr = stderr(&output);
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
    assert!(crate::common::stderr(&refused).contains("would overwrite the --input"));
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
