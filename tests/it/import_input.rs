//! `load --input PATH --via gs://...`: the user's own files imported, every resource with a
//! stable id and every reference within the data set as `Type/id`.

use std::path::Path;

use fhirgen::emulator::{Emulator, EmulatorOptions};
use serde_json::Value;

use crate::common::samples::unlicensed;
use crate::common::{
    all_of_type, assert_exit, assert_store_consistent, resource_counts, run, start_emulator,
    stderr, summary,
};
use crate::import::{objects, via_command};

/// `load --input INPUT --via gs://bucket-a/PREFIX --json` into the emulator's store.
fn import_input(
    emulator: &Emulator,
    state: &Path,
    prefix: &str,
    input: &Path,
) -> std::process::Command {
    let endpoint = format!("http://{}/v1", emulator.addr());
    let mut command = via_command(&endpoint, emulator.store_name(), emulator, state, prefix);
    command.arg("--input").arg(input).arg("--json");
    command
}

/// What the REST path stores of the same input, per type.
async fn loaded_by_rest(input: &Path) -> std::collections::BTreeMap<String, u64> {
    let emulator = start_emulator(EmulatorOptions::default()).await;
    let output = crate::common::load_into(&emulator.fhir_base_url())
        .input(input)
        .json()
        .run()
        .await;
    assert_exit(&output, 0);
    let counts = resource_counts(&emulator).await;
    emulator.shutdown().await;
    counts
}

/// Imports the sample twice: each run exits 0 with every resource imported, the store holds
/// what the REST path stores of it, every reference resolves, and the objects are gone.
async fn imports_exactly_and_again(input: &Path, expected: u64) -> Emulator {
    let emulator = start_emulator(EmulatorOptions::default()).await;
    let state = tempfile::tempdir().unwrap();
    let rest = loaded_by_rest(input).await;
    for round in 0..2 {
        let output = run(import_input(&emulator, state.path(), "mine", input)).await;
        assert_exit(&output, 0);
        let summary = summary(&output);
        assert_eq!(summary["imported"], expected, "round {round}: {summary}");
        assert_eq!(summary["resources"], expected);
        assert_eq!(summary["failed"], 0);
        assert_eq!(summary["invalid"], 0);
        assert!(summary.get("seed").is_none());
        assert_eq!(summary["objects_deleted"], true);
        assert_eq!(resource_counts(&emulator).await, rest, "round {round}");
        assert!(objects(&emulator, "mine").await.is_empty());
        assert!(
            !stderr(&output).contains("reference(s)"),
            "{}",
            stderr(&output)
        );
    }
    assert_store_consistent(&emulator).await;
    // verify --input finds every resource where the REST path would have put it.
    let verified = run({
        let mut command = crate::common::fhirgen();
        command
            .args(["verify", "--fhir-url", &emulator.fhir_base_url(), "--json"])
            .arg("--input")
            .arg(input);
        command
    })
    .await;
    assert_exit(&verified, 0);
    assert_eq!(summary(&verified)["ok"], true);
    emulator
}

/// Synthea's bundles: urn:uuid fullUrls, conditional references to shared resources.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn synthea_bundles_import_with_their_ids_and_references_set() {
    let emulator =
        imports_exactly_and_again(&unlicensed("synthea-bundles"), 68 + 68 + 269 + 253 + 379).await;
    // Each resource keeps its own id.
    let patients = all_of_type(&emulator.fhir_base_url(), "Patient").await;
    assert!(
        patients
            .iter()
            .any(|p| p["id"] == "30698f23-2ad6-bac0-45c4-0d5982c27af2"),
        "{patients:?}"
    );
}

/// A bulk export folder: per-type NDJSON with ids, and the batch bundles of the same run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bulk_export_folder_imports() {
    imports_exactly_and_again(&unlicensed("bulk-ndjson/ktmtwm-sytheadata"), 989 + 16).await;
}

const UUID_PATIENT: &str = "6f1c1a5e-2f7b-4c59-9a51-0c7d3c1b2a10";
const UUID_ENCOUNTER: &str = "0b8e8f7e-51d2-4a8a-a3c4-2d8f0b9e7c61";

/// Resources without ids, referred to by identifier, by urn:uuid and by a relative reference
/// inside a Bundle, and a line that is not JSON.
fn hand_made(dir: &Path) -> std::path::PathBuf {
    let bundle = serde_json::json!({"resourceType": "Bundle", "type": "transaction", "entry": [
        {"fullUrl": format!("urn:uuid:{UUID_PATIENT}"),
         "resource": {"resourceType": "Patient", "name": [{"family": "Ames"}]},
         "request": {"method": "POST", "url": "Patient"}},
        {"fullUrl": "https://example.org/fhir/Practitioner/dr-1",
         "resource": {"resourceType": "Practitioner", "id": "dr-1", "name": [{"family": "Who"}]},
         "request": {"method": "PUT", "url": "Practitioner/dr-1"}},
        {"fullUrl": format!("urn:uuid:{UUID_ENCOUNTER}"),
         "resource": {"resourceType": "Encounter", "status": "finished",
                      "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode",
                                "code": "AMB"},
                      "subject": {"reference": format!("urn:uuid:{UUID_PATIENT}")},
                      "participant": [{"individual": {"reference": "Practitioner/dr-1"}}]},
         "request": {"method": "POST", "url": "Encounter"}},
    ]});
    let lines = [
        r#"{"resourceType":"Patient","identifier":[{"system":"https://example.org/mrn","value":"m-1"}],"name":[{"family":"Nolan"}],"gender":"female"}"#.to_owned(),
        r#"{"resourceType":"Observation","status":"final","code":{"text":"weight"},"subject":{"reference":"Patient?identifier=https://example.org/mrn|m-1"}}"#.to_owned(),
        "not json".to_owned(),
        bundle.to_string(),
    ];
    let path = dir.join("mine.ndjson");
    std::fs::write(&path, lines.join("\n") + "\n").unwrap();
    path
}

#[tokio::test]
async fn resources_without_ids_get_stable_ids_and_their_references_follow() {
    let emulator = start_emulator(EmulatorOptions::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let input = hand_made(dir.path());
    let mut first = None;
    for round in 0..2 {
        let mut command = import_input(&emulator, dir.path(), "hand", &input);
        command
            .arg("--failed")
            .arg(dir.path().join("failed.ndjson"));
        let output = run(command).await;
        // The line that is not JSON is said, with its place, kept in --failed, and makes the
        // run exit 1.
        assert_exit(&output, 1);
        assert!(
            stderr(&output).contains("mine.ndjson:3") && stderr(&output).contains("not imported"),
            "{}",
            stderr(&output)
        );
        let summary = summary(&output);
        assert_eq!(summary["invalid"], 1, "{summary}");
        assert_eq!(summary["imported"], 5);
        assert_eq!(summary["failed"], 0);
        let counts = resource_counts(&emulator).await;
        assert_eq!(counts.values().sum::<u64>(), 5, "round {round}: {counts:?}");
        first.get_or_insert(counts.clone());
        assert_eq!(Some(&counts), first.as_ref(), "the same ids again");
    }
    let failed = std::fs::read_to_string(dir.path().join("failed.ndjson")).unwrap();
    let failed: Vec<Value> = failed
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(failed.len(), 1, "{failed:?}");
    assert!(
        failed[0]["failure"]["source"]
            .as_str()
            .unwrap()
            .ends_with("mine.ndjson:3")
    );
    assert_store_consistent(&emulator).await;
    let base = emulator.fhir_base_url();
    let of = |resources: &[Value], family: &str| -> String {
        let found = resources
            .iter()
            .find(|r| r["name"][0]["family"] == family)
            .unwrap();
        found["id"].as_str().unwrap().to_owned()
    };
    let patients = all_of_type(&base, "Patient").await;
    assert_eq!(of(&patients, "Ames"), UUID_PATIENT, "a urn:uuid entry's id");
    let nolan = of(&patients, "Nolan");
    let observation = &all_of_type(&base, "Observation").await[0];
    assert_eq!(
        observation["subject"]["reference"],
        format!("Patient/{nolan}")
    );
    let encounter = &all_of_type(&base, "Encounter").await[0];
    assert_eq!(encounter["id"], UUID_ENCOUNTER);
    assert_eq!(
        encounter["subject"]["reference"],
        format!("Patient/{UUID_PATIENT}")
    );
    assert_eq!(
        encounter["participant"][0]["individual"]["reference"],
        "Practitioner/dr-1"
    );
}

#[tokio::test]
async fn a_reference_to_nothing_in_the_input_is_named() {
    let emulator = start_emulator(EmulatorOptions::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("lonely.ndjson");
    std::fs::write(
        &input,
        r#"{"resourceType":"Observation","id":"o-1","status":"final","code":{"text":"x"},"subject":{"reference":"urn:uuid:00000000-0000-4000-8000-000000000000"}}"#,
    )
    .unwrap();
    let output = run(import_input(&emulator, dir.path(), "lonely", &input)).await;
    assert_exit(&output, 0);
    assert!(
        stderr(&output).contains("1 reference(s) of the input name a urn:uuid"),
        "{}",
        stderr(&output)
    );
    assert_eq!(summary(&output)["imported"], 1);
}

#[test]
fn an_input_missing_or_empty_is_refused() {
    let output = crate::common::fhirgen()
        .args(["load", "--emulator", "--input", "/no/such/input.ndjson"])
        .args(["--via", "gs://bucket-a/x"])
        .output()
        .unwrap();
    assert_exit(&output, 2);
    assert!(stderr(&output).contains("--input /no/such/input.ndjson: no such file"));

    // An input with nothing to import: said, and nothing is started.
    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().join("empty.ndjson");
    std::fs::write(&empty, "not json\n").unwrap();
    let output = crate::common::fhirgen()
        .env("FHIRGEN_STATE_DIR", dir.path())
        .args(["load", "--emulator", "--input"])
        .arg(&empty)
        .args(["--via", "gs://bucket-a/x"])
        .output()
        .unwrap();
    assert_exit(&output, 1);
    let said = stderr(&output);
    assert!(
        said.contains("empty.ndjson:1") && said.contains("the input holds no FHIR resources"),
        "{said}"
    );
}

/// What a run with the same input left (more objects, from a longer input) is replaced, not
/// imported.
#[tokio::test]
async fn a_run_again_replaces_what_the_last_one_left() {
    let emulator = start_emulator(EmulatorOptions::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("one.ndjson");
    std::fs::write(
        &input,
        r#"{"resourceType":"Observation","id":"o-1","status":"final","code":{"text":"x"}}"#,
    )
    .unwrap();
    let mut first = import_input(&emulator, dir.path(), "again", &input);
    first.arg("--keep-objects");
    assert_exit(&run(first).await, 0);
    let kept = objects(&emulator, "again").await;
    let manifest = kept.keys().find(|n| n.ends_with(".manifest.json")).unwrap();
    let tag = manifest["again/fhirgen-".len()..]
        .split("-shard")
        .next()
        .unwrap();
    let stale =
        r#"{"resourceType":"Observation","id":"stale","status":"final","code":{"text":"y"}}"#;
    crate::import_failures::put_object(
        &emulator,
        &format!("again/ffffffff-{tag}-shard0of1-001.ndjson"),
        stale,
    )
    .await;

    let output = run(import_input(&emulator, dir.path(), "again", &input)).await;
    assert_exit(&output, 0);
    assert_eq!(summary(&output)["imported"], 1);
    let observations = all_of_type(&emulator.fhir_base_url(), "Observation").await;
    assert_eq!(observations.len(), 1, "{observations:?}");
    assert_eq!(observations[0]["id"], "o-1");
    assert!(objects(&emulator, "again").await.is_empty());
}
