//! `-v` and `-vv`: a line per request on stderr, and never a secret, at any level.

use crate::common::*;
use fhirgen::emulator::EmulatorOptions;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verbose_prints_a_line_per_request() {
    let mut command = fhirgen();
    command.args([
        "load",
        "--emulator",
        "--mode",
        "create",
        "--count",
        "30",
        "--quiet",
        "-v",
    ]);
    let output = run(command).await;
    assert_exit(&output, 0);
    let stderr = stderr(&output);
    let creates = stderr
        .lines()
        .filter(|line| line.contains("POST /") && line.contains("-> 201 in"))
        .count();
    assert_eq!(creates, 30, "{stderr}");
    assert!(stderr.contains("(attempt 1)"), "{stderr}");
    // Plain text for a file or a pipe: no colour codes.
    assert!(!stderr.contains('\u{1b}'), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_level_logs_a_secret() {
    let emulator = start_emulator(EmulatorOptions {
        fault_rate: 0.2,
        fault_seed: 3,
        ..EmulatorOptions::default()
    })
    .await;
    let base = emulator.fhir_base_url();
    let with_secrets = base.replacen("http://", "http://loader:S3NTINEL@", 1) + "?api_key=S3NTINEL";
    for level in ["-vv", "-v"] {
        for rust_log in ["", "trace"] {
            let mut command = fhirgen();
            command
                .env("RUST_LOG", rust_log)
                .args(["load", "--fhir-url", &with_secrets, "--mode", "create"])
                .args(["--count", "50", "--min-backoff", "1ms", "--quiet", level]);
            let output = run(command).await;
            let stderr = stderr(&output);
            // The first run creates, later ones find: either way, a line per request.
            assert!(stderr.contains("POST /Patient -> 20"), "{stderr}");
            assert!(
                !stderr.contains("S3NTINEL"),
                "{level} RUST_LOG={rust_log}: {stderr}"
            );
        }
    }
    emulator.shutdown().await;
}
