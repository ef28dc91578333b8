//! Counts that say what is known: a resource found after its answer was lost is not called
//! "already present", and a verify that could not reach the store still names all it expected.

use fhirgen::emulator::EmulatorOptions;

use crate::common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resources_found_after_a_lost_answer_are_not_counted_as_already_present() {
    // Three writes in ten are stored, then answered 503 as if the reply were lost.
    let emulator = start_emulator(EmulatorOptions {
        fault_after_write_rate: 0.3,
        fault_seed: 7,
        ..EmulatorOptions::default()
    })
    .await;
    for mode in ["create", "transaction"] {
        let mut command = fhirgen();
        command
            .args([
                "load",
                "--fhir-url",
                &emulator.fhir_base_url(),
                "--mode",
                mode,
            ])
            .args([
                "--count",
                "200",
                "--min-backoff",
                "1ms",
                "--json",
                "--quiet",
            ])
            .args(["--seed", if mode == "create" { "1" } else { "2" }]);
        let output = run(command).await;
        assert_exit(&output, 0);
        let summary = summary(&output);
        assert_eq!(summary["stored"], 200, "{summary}");
        // An empty store to begin with: nothing was there before this run.
        assert_eq!(summary["already_present"], 0, "{mode}: {summary}");
        assert!(
            summary["created_or_present"].as_u64().unwrap() > 0,
            "{mode}: {summary}"
        );
    }
    assert_eq!(total_resources(&emulator).await, 400);
    assert_store_consistent(&emulator).await;
    emulator.shutdown().await;
}

#[tokio::test]
async fn verify_against_a_dead_store_still_names_everything_it_expected() {
    // Bound, then closed: nothing listens there.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut command = fhirgen();
    command
        .args([
            "verify",
            "--fhir-url",
            &format!("http://127.0.0.1:{port}/fhir"),
        ])
        .args(["--count", "100", "--json", "--quiet"]);
    let output = run(command).await;
    assert_exit(&output, 1);
    let report = summary(&output);
    assert_eq!(report["expected"], 100, "{report}");
}
