//! `fhirgen generate` through the binary: exact counts, determinism, formats, output file,
//! sharding and a quiet broken pipe.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Read};
use std::process::{Command as StdCommand, Stdio};

use assert_cmd::Command;
use predicates::prelude::*;
use serde_json::Value;

const SCHEDULER_VARIABLES: [&str; 5] = [
    "JOB_COMPLETION_INDEX",
    "CLOUD_RUN_TASK_INDEX",
    "CLOUD_RUN_TASK_COUNT",
    "BATCH_TASK_INDEX",
    "BATCH_TASK_COUNT",
];

/// `fhirgen generate --as-of 2025-06-30 ARGS`, untouched by the caller's scheduler variables.
fn generate(args: &[&str]) -> Command {
    let mut command = Command::cargo_bin("fhirgen").unwrap();
    command
        .args(["generate", "--as-of", "2025-06-30"])
        .args(args);
    for variable in SCHEDULER_VARIABLES {
        command.env_remove(variable);
    }
    command
}

fn stdout_of(args: &[&str]) -> String {
    let output = generate(args).output().unwrap();
    assert!(output.status.success(), "{output:?}");
    assert!(output.stderr.is_empty(), "{output:?}");
    String::from_utf8(output.stdout).unwrap()
}

#[test]
fn writes_exactly_count_resources() {
    for count in ["1", "5", "1234", "3k"] {
        let out = stdout_of(&["--count", count]);
        let expected = fhirgen::cli::parse_count(count).unwrap() as usize;
        assert_eq!(out.lines().count(), expected, "--count {count}");
        for line in out.lines() {
            let resource: Value = serde_json::from_str(line).unwrap();
            assert!(resource["resourceType"].is_string());
            assert!(line.starts_with(r#"{"resourceType":"#));
        }
    }
}

#[test]
fn same_seed_same_bytes_other_seed_other_bytes() {
    let a = stdout_of(&["--count", "2000", "--seed", "42"]);
    let b = stdout_of(&["--count", "2000", "--seed", "42"]);
    let c = stdout_of(&["--count", "2000", "--seed", "43"]);
    assert_eq!(a, b);
    assert_ne!(a, c);
    // The default seed is fixed too.
    assert_eq!(
        stdout_of(&["--count", "300"]),
        stdout_of(&["--count", "300"])
    );
}

#[test]
fn random_seed_is_printed_and_reproducible() {
    let output = generate(&["--count", "200", "--seed", "random"])
        .output()
        .unwrap();
    assert!(output.status.success());
    let stderr = String::from_utf8(output.stderr).unwrap();
    let seed = stderr
        .trim()
        .strip_prefix("seed: ")
        .unwrap_or_else(|| panic!("no seed in {stderr:?}"));
    seed.parse::<u64>().unwrap();
    assert_eq!(
        String::from_utf8(output.stdout).unwrap(),
        stdout_of(&["--count", "200", "--seed", seed])
    );
}

#[test]
fn bundle_format_writes_transaction_bundles() {
    let out = stdout_of(&["--count", "1500", "--format", "bundle"]);
    let bundles: Vec<Value> = out
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    assert!(bundles.len() > 2);
    let mut entries = 0;
    for bundle in &bundles {
        assert_eq!(bundle["resourceType"], "Bundle");
        assert_eq!(bundle["type"], "transaction");
        for entry in bundle["entry"].as_array().unwrap() {
            assert!(entry["fullUrl"].as_str().unwrap().starts_with("urn:uuid:"));
            if entry["resource"]["resourceType"] == "Provenance" {
                // No identifier to create it by: it goes to its own id.
                let id = entry["resource"]["id"].as_str().unwrap();
                assert_eq!(entry["request"]["method"], "PUT");
                assert_eq!(entry["request"]["url"], format!("Provenance/{id}"));
                entries += 1;
                continue;
            }
            assert_eq!(entry["request"]["method"], "POST");
            assert!(
                entry["request"]["ifNoneExist"]
                    .as_str()
                    .unwrap()
                    .starts_with("identifier=https://fhirgen.dev/sid/")
            );
            entries += 1;
        }
    }
    assert_eq!(entries, 1500);
    // Patients find shared practitioners by identifier.
    let patient = &bundles[1]["entry"][0]["resource"];
    assert_eq!(patient["resourceType"], "Patient");
    let gp = patient["generalPractitioner"][0]["reference"]
        .as_str()
        .unwrap();
    assert!(gp.starts_with("Practitioner?identifier="), "{gp}");
}

#[test]
fn output_file_gets_the_data_and_stdout_stays_empty() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("data.ndjson");
    generate(&["--count", "777", "--output", path.to_str().unwrap()])
        .assert()
        .success()
        .stdout("")
        .stderr("");
    let written = std::fs::read_to_string(&path).unwrap();
    assert_eq!(written.lines().count(), 777);
    assert_eq!(written, stdout_of(&["--count", "777"]));
}

#[test]
fn output_to_a_missing_directory_fails_with_the_path() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("missing").join("data.ndjson");
    generate(&["--count", "10", "-o", path.to_str().unwrap()])
        .assert()
        .code(1)
        .stderr(predicate::str::contains("missing"));
}

#[test]
fn shards_make_up_the_whole() {
    let whole = stdout_of(&["--count", "5000", "--seed", "9"]);
    let mut union = Vec::new();
    for index in 0..3 {
        let shard = format!("{index}/3");
        let part = stdout_of(&["--count", "5000", "--seed", "9", "--shard", &shard]);
        assert!(!part.is_empty());
        union.extend(part.lines().map(str::to_owned));
    }
    assert_eq!(union.len(), 5000);
    let union: BTreeSet<String> = union.into_iter().collect();
    let whole: BTreeSet<String> = whole.lines().map(str::to_owned).collect();
    assert_eq!(union.len(), 5000, "shards overlap");
    assert_eq!(union, whole);
}

#[test]
fn shard_index_can_come_from_the_scheduler() {
    let explicit = stdout_of(&["--count", "3000", "--shard", "1/2"]);
    let cloud_run = generate(&["--count", "3000", "--shard", "auto"])
        .env("CLOUD_RUN_TASK_INDEX", "1")
        .env("CLOUD_RUN_TASK_COUNT", "2")
        .output()
        .unwrap();
    assert!(cloud_run.status.success());
    assert_eq!(String::from_utf8(cloud_run.stdout).unwrap(), explicit);
    let indexed_job = generate(&["--count", "3000", "--shard", "auto/2"])
        .env("JOB_COMPLETION_INDEX", "1")
        .output()
        .unwrap();
    assert_eq!(String::from_utf8(indexed_job.stdout).unwrap(), explicit);
}

#[test]
fn bad_shards_are_usage_errors() {
    generate(&["--shard", "3/3"])
        .assert()
        .code(2)
        .stdout("")
        .stderr(predicate::str::contains("0 to 2"));
    generate(&["--shard", "half"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("I/N"));
    generate(&["--shard", "auto"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("CLOUD_RUN_TASK_COUNT"));
}

#[test]
fn a_closed_pipe_is_not_an_error() {
    let mut child = StdCommand::new(env!("CARGO_BIN_EXE_fhirgen"))
        .args(["generate", "--count", "10m"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut first = String::new();
    stdout.read_line(&mut first).unwrap();
    assert!(first.starts_with(r#"{"resourceType":"#));
    drop(stdout);
    let status = child.wait().unwrap();
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    assert!(status.success(), "{status:?} {stderr}");
    assert_eq!(stderr, "");
}

#[test]
fn types_keep_what_was_asked_for_and_what_it_refers_to() {
    let out = stdout_of(&["--types", "Observation", "--count", "500"]);
    assert_eq!(out.lines().count(), 500);
    let mut types = BTreeSet::new();
    for line in out.lines() {
        let resource: Value = serde_json::from_str(line).unwrap();
        types.insert(resource["resourceType"].as_str().unwrap().to_owned());
    }
    let expected = [
        "Encounter",
        "Location",
        "Observation",
        "Organization",
        "Patient",
        "Practitioner",
    ];
    assert_eq!(types, BTreeSet::from(expected.map(str::to_owned)));
    assert_eq!(
        out,
        stdout_of(&["--types", "Observation", "--count", "500"])
    );
}

#[test]
fn unknown_types_are_usage_errors_that_list_the_known_ones() {
    generate(&["--types", "Observation,Binary"])
        .assert()
        .code(2)
        .stdout("")
        .stderr(
            predicate::str::contains("`Binary`").and(predicate::str::contains(
                "MedicationRequest, MedicationAdministration",
            )),
        );
    generate(&["--types", "observation"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("did you mean Observation?"));
}
