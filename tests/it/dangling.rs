//! A resource is never sent after what it refers to failed, in any mode, on a store that does
//! not check references (Google with `disableReferentialIntegrity`, most other servers): it
//! would be stored pointing at nothing. It goes to `--failed` with the reason instead, and
//! `verify` finds references that do not resolve.

use fhirgen::emulator::EmulatorOptions;

use crate::common::*;

/// A Practitioner the store refuses (its gender is not a code), in a file of its own, and a
/// Patient in another that names it as general practitioner.
fn refused_practitioner_and_its_patient(dir: &std::path::Path) -> std::path::PathBuf {
    let input = dir.join("ri");
    std::fs::create_dir(&input).unwrap();
    std::fs::write(
        input.join("practitioners.ndjson"),
        r#"{"resourceType":"Practitioner","id":"pr1","identifier":[{"system":"urn:test:npi","value":"pr1"}],"gender":"bogus"}"#.to_owned() + "\n",
    )
    .unwrap();
    std::fs::write(
        input.join("patients.ndjson"),
        [
            r#"{"resourceType":"Patient","id":"p1","identifier":[{"system":"urn:test:mrn","value":"p1"}],"gender":"female","generalPractitioner":[{"reference":"Practitioner/pr1"}]}"#,
            r#"{"resourceType":"Patient","id":"p2","identifier":[{"system":"urn:test:mrn","value":"p2"}],"gender":"male"}"#,
        ]
        .join("\n")
            + "\n",
    )
    .unwrap();
    input
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_refers_to_a_refused_resource_is_not_sent_in_any_mode() {
    let dir = tempfile::tempdir().unwrap();
    let input = refused_practitioner_and_its_patient(dir.path());
    for mode in ["create", "update", "transaction"] {
        let emulator = start_emulator(EmulatorOptions {
            referential_integrity: false,
            ..EmulatorOptions::default()
        })
        .await;
        let failed = dir.path().join(format!("failed-{mode}.ndjson"));
        let output = load_into(&emulator.fhir_base_url())
            .mode(mode)
            .json()
            .input(&input)
            .failed(&failed)
            .run()
            .await;
        assert_exit(&output, 1);
        let summary = summary(&output);
        assert_eq!(summary["stored"], 1, "{mode}: {summary}");
        assert_eq!(summary["failed"], 1, "{mode}: {summary}");
        assert_eq!(summary["not_sent"], 1, "{mode}: {summary}");
        let kept = std::fs::read_to_string(&failed).unwrap();
        assert_eq!(kept.lines().count(), 2, "{mode}: {kept}");
        assert!(
            kept.contains("it refers to Practitioner/pr1, which was not stored"),
            "{mode}: {kept}"
        );
        // Only the Patient with nothing wrong is stored.
        assert_eq!(
            resource_counts(&emulator).await,
            [("Patient".to_owned(), 1)].into(),
            "{mode}"
        );
        assert_store_consistent(&emulator).await;
        emulator.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_finds_a_reference_that_names_nothing() {
    let emulator = start_emulator(EmulatorOptions {
        referential_integrity: false,
        update_create: true,
        ..EmulatorOptions::default()
    })
    .await;
    let base = emulator.fhir_base_url();
    // Stored, as an older load would have, pointing at a Practitioner that is not there.
    let patient = serde_json::json!({"resourceType": "Patient", "id": "p1",
        "identifier": [{"system": "urn:test:mrn", "value": "p1"}], "gender": "female",
        "generalPractitioner": [{"reference": "Practitioner/pr1"}]});
    let stored = reqwest::Client::new()
        .put(format!("{base}/Patient/p1"))
        .header("content-type", "application/fhir+json")
        .body(patient.to_string())
        .send()
        .await
        .unwrap();
    assert!(stored.status().is_success(), "{}", stored.status());
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("patients.ndjson");
    std::fs::write(&input, patient.to_string() + "\n").unwrap();
    let mut command = fhirgen();
    command
        .args([
            "verify",
            "--fhir-url",
            &base,
            "--json",
            "--quiet",
            "--input",
        ])
        .arg(&input);
    let output = run(command).await;
    assert_exit(&output, 1);
    let report = summary(&output);
    assert_eq!(report["missing"]["count"], 0, "{report}");
    assert_eq!(report["dangling"]["count"], 1, "{report}");
    assert_eq!(
        report["dangling"]["first"][0],
        "Patient?identifier=urn:test:mrn|p1 refers to Practitioner/pr1",
        "{report}"
    );
}
