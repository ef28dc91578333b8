//! A server that writes a transaction's entries one by one, as a batch, and answers 200 with
//! some refused (Medplum without its `transaction-bundles` feature): each entry counts by its
//! own answer, so the summary says what the store holds.

use fhirgen::emulator::EmulatorOptions;

use crate::common::*;

fn patient(id: &str, gender: &str) -> String {
    format!(
        r#"{{"resourceType":"Patient","id":"{id}","identifier":[{{"system":"urn:test:mrn","value":"{id}"}}],"gender":"{gender}"}}"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transaction_written_as_a_batch_counts_each_entry_by_its_answer() {
    let emulator = start_emulator(EmulatorOptions {
        transaction_as_batch: true,
        ..EmulatorOptions::default()
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("export");
    std::fs::create_dir(&input).unwrap();
    // p1 is refused (its gender is not a code); the others are stored one by one.
    std::fs::write(
        input.join("a.ndjson"),
        [patient("p1", "bogus"), patient("p2", "male")].join("\n") + "\n",
    )
    .unwrap();
    // An unrelated file, packed into the same transaction.
    std::fs::write(
        input.join("b.ndjson"),
        [patient("p3", "female"), patient("p4", "other")].join("\n") + "\n",
    )
    .unwrap();
    let failed = dir.path().join("failed.ndjson");
    let output = load_into(&emulator.fhir_base_url())
        .mode("transaction")
        .json()
        .input(&input)
        .failed(&failed)
        .run()
        .await;
    assert_exit(&output, 1);
    let summary = summary(&output);
    assert_eq!(summary["stored"], 3, "{summary}");
    assert_eq!(summary["failed"], 1, "{summary}");
    assert_eq!(total_resources(&emulator).await, 3);
    let kept = std::fs::read_to_string(&failed).unwrap();
    let refused: Vec<String> = kept
        .lines()
        .map(|line| {
            let line: serde_json::Value = serde_json::from_str(line).unwrap();
            line["resource"]["id"].as_str().unwrap().to_owned()
        })
        .collect();
    assert_eq!(refused, ["p1"], "{kept}");
    emulator.shutdown().await;
}
