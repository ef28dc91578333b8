//! A generated data set of every resource type the generator makes, loaded twice in every mode:
//! the store holds each resource once, Provenance (which has no identifier) included.

use std::collections::BTreeMap;

use crate::common::*;
use fhirgen::emulator::EmulatorOptions;
use serde_json::Value;

/// A data set small enough to load quickly that still has all 25 types.
const SOURCE: [&str; 6] = ["--count", "2500", "--seed", "4", "--as-of", "2026-01-01"];

/// Resources per type of the data set, as `generate` writes it.
fn generated_counts() -> BTreeMap<String, u64> {
    let output = fhirgen().arg("generate").args(SOURCE).output().unwrap();
    assert!(output.status.success(), "{output:?}");
    let mut counts = BTreeMap::new();
    for line in String::from_utf8(output.stdout).unwrap().lines() {
        let resource: Value = serde_json::from_str(line).unwrap();
        let resource_type = resource["resourceType"].as_str().unwrap().to_owned();
        *counts.entry(resource_type).or_default() += 1;
    }
    counts
}

async fn loads_every_type_once(mode: &str, update_create: bool) {
    let expected = generated_counts();
    assert_eq!(expected.len(), 25, "{expected:?}");
    let emulator = start_emulator(EmulatorOptions {
        update_create,
        ..EmulatorOptions::default()
    })
    .await;
    let base = emulator.fhir_base_url();
    for run_number in 1..=2 {
        let mut command = fhirgen();
        command
            .args(["load", "--fhir-url", &base, "--mode", mode])
            .args(["--workers", "8", "--json", "--quiet"])
            .args(SOURCE);
        let output = run(command).await;
        assert_exit(&output, 0);
        let summary = summary(&output);
        assert_eq!(
            summary["stored"], 2500,
            "{mode} run {run_number}: {summary}"
        );
        assert_eq!(summary["failed"], 0, "{mode} run {run_number}: {summary}");
        assert_eq!(
            resource_counts(&emulator).await,
            expected,
            "{mode} (update-create {update_create}) after run {run_number}"
        );
    }
    assert_store_consistent(&emulator).await;
    let tag_system = fhirgen::fhir::SOURCE_KEY_SYSTEM;
    let mut tags = std::collections::BTreeSet::new();
    for provenance in all_of_type(&base, "Provenance").await {
        let tag = &provenance["meta"]["tag"].as_array().unwrap()[0];
        assert_eq!(tag["system"], tag_system);
        assert!(
            tags.insert(tag["code"].as_str().unwrap().to_owned()),
            "{mode}: {tag}"
        );
    }
    assert_eq!(tags.len() as u64, expected["Provenance"]);
    emulator.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_type_loads_once_in_transaction_mode() {
    loads_every_type_once("transaction", false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_type_loads_once_in_create_mode() {
    loads_every_type_once("create", false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_type_loads_once_in_update_mode() {
    loads_every_type_once("update", false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_type_loads_once_in_update_mode_with_update_create() {
    loads_every_type_once("update", true).await;
}
