//! Two different resources with one `Type/id` in the input: the second is not stored, nor what
//! refers to that id, and the reason names both places. Read order decides nothing.

use fhirgen::emulator::EmulatorOptions;

use crate::common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_id_in_two_files_is_named_not_resolved_by_read_order() {
    let emulator = start_emulator(EmulatorOptions::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("export");
    std::fs::create_dir(&input).unwrap();
    let patient = |id: &str, family: &str| {
        format!(
            r#"{{"resourceType":"Patient","id":"{id}","name":[{{"family":"{family}"}}],"gender":"female"}}"#
        )
    };
    std::fs::write(input.join("a.ndjson"), patient("x", "Ames") + "\n").unwrap();
    std::fs::write(
        input.join("b.ndjson"),
        [patient("y", "Young"), patient("x", "Baker")].join("\n") + "\n",
    )
    .unwrap();
    std::fs::write(
        input.join("c.ndjson"),
        r#"{"resourceType":"Observation","id":"o","status":"final","code":{"text":"weight"},"subject":{"reference":"Patient/x"}}"#.to_owned() + "\n",
    )
    .unwrap();
    let failed = dir.path().join("failed.ndjson");
    let mut command = fhirgen();
    command
        .args([
            "load",
            "--fhir-url",
            &emulator.fhir_base_url(),
            "--mode",
            "update",
        ])
        .args(["--json", "--input"])
        .arg(&input)
        .arg("--failed")
        .arg(&failed);
    let output = run(command).await;
    assert_exit(&output, 1);
    let summary = summary(&output);
    assert_eq!(summary["failed"], 2, "{summary}");
    let a = input.join("a.ndjson").display().to_string();
    let b = input.join("b.ndjson").display().to_string();
    let places = format!("at {a}:1 and {b}:2");
    let stderr = stderr(&output);
    let kept = std::fs::read_to_string(&failed).unwrap();
    for shown in [&*stderr, &kept] {
        assert!(shown.contains(&places), "{shown}");
        assert!(shown.contains("it refers to Patient/x"), "{shown}");
    }
    let kept: Vec<serde_json::Value> = kept
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    let refused: Vec<&str> = kept
        .iter()
        .map(|line| line["resource"]["resourceType"].as_str().unwrap())
        .collect();
    assert_eq!(refused, ["Patient", "Observation"], "{kept:?}");
    assert_eq!(kept[0]["resource"]["name"][0]["family"], "Baker");
    // Nothing was linked to either Patient/x.
    let counts = resource_counts(&emulator).await;
    assert_eq!(counts.get("Observation"), None, "{counts:?}");
    let families: Vec<String> = all_of_type(&emulator.fhir_base_url(), "Patient")
        .await
        .iter()
        .map(|p| p["name"][0]["family"].as_str().unwrap().to_owned())
        .collect();
    assert!(!families.contains(&"Baker".to_owned()), "{families:?}");
    emulator.shutdown().await;
}
