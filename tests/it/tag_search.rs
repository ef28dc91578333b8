//! Resources without an identifier are found by their source-key tag before they are created.
//! A store whose tag search finds nothing (Medplum for `Binary?_tag=`) would get a new copy on
//! every run: fhirgen notices that the search does not find what it just created, and sends no
//! more of that type, saying why.

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
    let output = load_into(&emulator.fhir_base_url())
        .mode("create")
        .json()
        .input(&input)
        .failed(&failed)
        .run()
        .await;
    assert_exit(&output, 1);
    let summary = summary(&output);
    // The first one, created to find out; none of the others.
    assert_eq!(summary["stored"], 1, "{summary}");
    assert_eq!(summary["failed"], 5, "{summary}");
    assert_eq!(total_resources(&emulator).await, 1);
    let kept = std::fs::read_to_string(&failed).unwrap();
    assert_eq!(kept.lines().count(), 5, "{kept}");
    assert!(
        kept.contains("this store does not find Binary resources by their tag"),
        "{kept}"
    );
    emulator.shutdown().await;
}
