//! The GitHub Action's shell step (`.github/action/run.sh`) run as the runner runs it: inputs in
//! INPUT_* variables, the built binary in FHIRGEN_BIN, step outputs and the job summary in
//! files named by GITHUB_OUTPUT and GITHUB_STEP_SUMMARY. Needs bash and jq.

mod common;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Command, Output};

use common::*;
use fhirgen::emulator::EmulatorOptions;
use fhirgen::secret::SecretString;
use serde_json::Value;

/// What one run of the step left behind.
struct Step {
    output: Output,
    outputs: BTreeMap<String, String>,
    summary: String,
}

impl Step {
    fn code(&self) -> Option<i32> {
        self.output.status.code()
    }

    fn log(&self) -> String {
        format!(
            "stdout:\n{}\nstderr:\n{}\nsummary:\n{}",
            String::from_utf8_lossy(&self.output.stdout),
            String::from_utf8_lossy(&self.output.stderr),
            self.summary
        )
    }

    fn number(&self, name: &str) -> f64 {
        self.outputs[name]
            .parse()
            .unwrap_or_else(|_| panic!("output {name} is not a number: {:?}", self.outputs))
    }
}

/// Runs the step with these inputs, from an environment without the user's fhirgen or Google
/// settings (the script's fhirgen would read them).
async fn run_step(inputs: &[(&str, &str)]) -> Step {
    let dir = tempfile::tempdir().unwrap();
    let outputs = dir.path().join("github_output");
    let summary = dir.path().join("step_summary");
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".github/action/run.sh");
    let mut command = Command::new("bash");
    command.arg(script);
    for (key, _) in std::env::vars() {
        if key.starts_with("FHIRGEN_") || key.starts_with("GOOGLE_") || key.starts_with("INPUT_") {
            command.env_remove(key);
        }
    }
    command
        .env("FHIRGEN_BIN", assert_cmd::cargo::cargo_bin!("fhirgen"))
        .env("GITHUB_OUTPUT", &outputs)
        .env("GITHUB_STEP_SUMMARY", &summary)
        .envs(inputs.iter().copied());
    let output = run(command).await;
    let outputs = std::fs::read_to_string(&outputs)
        .unwrap_or_default()
        .lines()
        .filter_map(|line| line.split_once('='))
        .map(|(name, value)| (name.to_owned(), value.to_owned()))
        .collect();
    let summary = std::fs::read_to_string(&summary).unwrap_or_default();
    Step {
        output,
        outputs,
        summary,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_load_into_the_emulator_sets_outputs_and_a_summary_table() {
    let step = run_step(&[
        ("INPUT_EMULATOR", "true"),
        ("INPUT_COUNT", "200"),
        ("INPUT_SEED", "5"),
        ("INPUT_WORKERS", "4"),
        ("INPUT_ARGS", "--as-of 2024-06-01  --bundle-size 50"),
    ])
    .await;
    assert_eq!(step.code(), Some(0), "{}", step.log());
    assert_eq!(step.outputs["stored"], "200");
    assert_eq!(step.outputs["failed"], "0");
    assert_eq!(step.outputs["not-sent"], "0");
    assert_eq!(step.outputs["seed"], "5");
    assert_eq!(step.outputs["exit-code"], "0");
    assert!(step.number("requests") >= 4.0, "{:?}", step.outputs);
    assert!(step.number("resources-per-second") > 0.0);
    assert!(step.number("latency-p99-ms") >= step.number("latency-p50-ms"));
    let summary: Value = serde_json::from_str(&step.outputs["summary"]).unwrap();
    assert_eq!(
        (summary["stored"].as_u64(), summary["workers"].as_u64()),
        (Some(200), Some(4))
    );
    for row in [
        "### ✅ fhirgen load: 200 stored, 0 failed, 0 not sent",
        "| mode, workers | transaction, 4 |",
        "| stored | 200 |",
        "| failed | 0 |",
        "| seed | 5 |",
    ] {
        assert!(step.summary.contains(row), "no `{row}` in\n{}", step.log());
    }
    assert!(!step.summary.contains("| stopped |"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_that_refuses_fails_the_step_and_says_why() {
    let emulator = start_emulator(EmulatorOptions {
        require_token: Some(SecretString::new("only-for-the-right-caller")),
        ..EmulatorOptions::default()
    })
    .await;
    let step = run_step(&[
        ("INPUT_FHIR_URL", &emulator.fhir_base_url()),
        ("INPUT_COUNT", "50"),
    ])
    .await;
    assert_eq!(step.code(), Some(1), "{}", step.log());
    assert_eq!(step.outputs["exit-code"], "1");
    assert_eq!(step.outputs["stored"], "0");
    assert_eq!(step.number("failed") + step.number("not-sent"), 50.0);
    assert!(
        step.summary.contains("### ❌ fhirgen load: 0 stored"),
        "{}",
        step.log()
    );
    assert!(step.summary.contains("| stopped | "), "{}", step.log());
    let stdout = String::from_utf8_lossy(&step.output.stdout);
    assert!(
        stdout.contains("::error title=fhirgen::fhirgen load: "),
        "{}",
        step.log()
    );
    assert!(
        stdout.contains("401"),
        "the annotation names the refusal: {}",
        step.log()
    );
    emulator.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_reads_the_store_back_after_the_load() {
    let emulator = start_emulator(EmulatorOptions::default()).await;
    // verify must walk the same data set: --as-of reaches it, --mode does not (it has none).
    let step = run_step(&[
        ("INPUT_FHIR_URL", &emulator.fhir_base_url()),
        ("INPUT_COUNT", "120"),
        ("INPUT_MODE", "create"),
        ("INPUT_VERIFY", "true"),
        ("INPUT_ARGS", "--as-of=2024-06-01 --timeout 30 --rate 1000"),
    ])
    .await;
    assert_eq!(step.code(), Some(0), "{}", step.log());
    assert_eq!(step.outputs["verified"], "true");
    assert!(
        step.summary
            .contains("#### ✅ fhirgen verify: 120 of 120 looked up"),
        "{}",
        step.log()
    );
    emulator.shutdown().await;

    // A store that answers every write as created but keeps nothing.
    let forgetful = start_emulator(EmulatorOptions {
        sink: true,
        ..EmulatorOptions::default()
    })
    .await;
    let step = run_step(&[
        ("INPUT_FHIR_URL", &forgetful.fhir_base_url()),
        ("INPUT_COUNT", "120"),
        ("INPUT_VERIFY", "true"),
    ])
    .await;
    assert_eq!(step.code(), Some(1), "{}", step.log());
    assert_eq!(step.outputs["stored"], "120", "the load itself succeeded");
    assert_eq!(step.outputs["verified"], "false");
    assert!(
        step.summary.contains("#### ❌ fhirgen verify"),
        "{}",
        step.log()
    );
    let stdout = String::from_utf8_lossy(&step.output.stdout);
    assert!(
        stdout.contains("::error title=fhirgen::fhirgen verify: "),
        "{}",
        step.log()
    );
    forgetful.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_step_without_exactly_one_target_is_a_usage_error() {
    for inputs in [
        &[("INPUT_COUNT", "10")][..],
        &[
            ("INPUT_EMULATOR", "true"),
            ("INPUT_FHIR_URL", "http://127.0.0.1:1/fhir"),
        ],
    ] {
        let step = run_step(inputs).await;
        assert_eq!(step.code(), Some(2), "{}", step.log());
        let stdout = String::from_utf8_lossy(&step.output.stdout);
        assert!(
            stdout.contains("set exactly one of the inputs"),
            "{}",
            step.log()
        );
        assert!(step.outputs.is_empty());
    }
}
