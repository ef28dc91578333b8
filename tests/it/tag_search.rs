//! Resources without an identifier are found by their source-key tag before they are created.
//! A store whose tag search finds nothing (Medplum for `Binary?_tag=`) would get a new copy on
//! every run: fhirgen notices that the search does not find what it just created, deletes that
//! one again, and sends no more of that type, saying why.

use fhirgen::emulator::EmulatorOptions;

use crate::common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_type_the_store_cannot_find_by_tag_is_refused_not_duplicated() {
    let emulator = start_emulator(EmulatorOptions {
        tag_search_blind: true,
        ..EmulatorOptions::default()
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("binaries.ndjson");
    let binaries: Vec<String> = (0..6)
        .map(|i| {
            format!(r#"{{"resourceType":"Binary","id":"b{i}","contentType":"text/plain","data":"aGVsbG8{i}"}}"#)
        })
        .collect();
    std::fs::write(&input, binaries.join("\n") + "\n").unwrap();
    let failed = dir.path().join("failed.ndjson");
    // Run after run, nothing of the type is stored: the one created to find out is deleted.
    for run in 0..2 {
        let output = load_into(&emulator.fhir_base_url())
            .mode("create")
            .json()
            .input(&input)
            .failed(&failed)
            .run()
            .await;
        assert_exit(&output, 1);
        let summary = summary(&output);
        assert_eq!(summary["stored"], 0, "run {run}: {summary}");
        assert_eq!(summary["failed"], 6, "run {run}: {summary}");
        assert_eq!(total_resources(&emulator).await, 0, "run {run}");
        let kept = std::fs::read_to_string(&failed).unwrap();
        assert_eq!(kept.lines().count(), 6, "run {run}: {kept}");
        assert!(
            kept.contains("this store does not find Binary resources by their tag"),
            "run {run}: {kept}"
        );
        assert!(kept.contains("and deleted again"), "run {run}: {kept}");
    }
    emulator.shutdown().await;
}
