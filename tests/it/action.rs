//! The GitHub Action's shell steps (`.github/action/*.sh`) run as the runner runs them: inputs
//! in INPUT_* variables, the built binary in FHIRGEN_BIN, step outputs and the job summary in
//! files named by GITHUB_OUTPUT and GITHUB_STEP_SUMMARY. Needs bash, jq, curl, tar, sha256sum.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Command, Output};
use std::sync::Arc;

use crate::common::*;
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
            stdout(&self.output),
            stderr(&self.output),
            self.summary
        )
    }

    fn number(&self, name: &str) -> f64 {
        self.outputs[name]
            .parse()
            .unwrap_or_else(|_| panic!("output {name} is not a number: {:?}", self.outputs))
    }
}

/// Runs the load step with these inputs.
async fn run_step(inputs: &[(&str, &str)]) -> Step {
    run_script("run.sh", inputs).await
}

/// Runs one of the action's scripts from an environment without the user's fhirgen or Google
/// settings (the script's fhirgen would read them).
async fn run_script(name: &str, inputs: &[(&str, &str)]) -> Step {
    let dir = tempfile::tempdir().unwrap();
    let outputs = dir.path().join("github_output");
    let summary = dir.path().join("step_summary");
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join(".github/action")
        .join(name);
    let mut command = Command::new("bash");
    command.arg(script);
    for (key, _) in std::env::vars() {
        if key.starts_with("FHIRGEN_")
            || key.starts_with("GOOGLE_")
            || key.starts_with("INPUT_")
            || key.starts_with("RUNNER_")
            || key.starts_with("ACTION_")
        {
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
    let stdout = stdout(&step.output);
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
    // Types found again by identifier: a Provenance's lookup by tag would find the sink empty
    // and rightly refuse to write it.
    let step = run_step(&[
        ("INPUT_FHIR_URL", &forgetful.fhir_base_url()),
        ("INPUT_COUNT", "120"),
        ("INPUT_VERIFY", "true"),
        ("INPUT_ARGS", "--types Patient,Encounter,Observation"),
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
    let stdout = stdout(&step.output);
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
        let stdout = stdout(&step.output);
        assert!(
            stdout.contains("set exactly one of the inputs"),
            "{}",
            step.log()
        );
        assert!(step.outputs.is_empty());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_multi_line_args_block_reaches_the_load_whole() {
    let emulator = start_emulator(EmulatorOptions::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let failed = dir.path().join("failed.ndjson");
    // As a YAML `args: |` block gives it: one flag per line, a newline at the end.
    let args = format!(
        "--types Patient\n--failed {}\n  --bundle-size 7\n",
        failed.display()
    );
    let step = run_step(&[
        ("INPUT_FHIR_URL", &emulator.fhir_base_url()),
        ("INPUT_COUNT", "30"),
        ("INPUT_ARGS", &args),
    ])
    .await;
    assert_eq!(step.code(), Some(0), "{}", step.log());
    assert!(failed.exists(), "--failed on the second line was dropped");
    // Bundles of 7 resources: 30 Patients take at least five transactions.
    assert!(step.number("requests") >= 5.0, "{:?}", step.outputs);
    assert_eq!(step.outputs["stored"], "30");
    // Patients only (with the Practitioner and Organization they refer to).
    let counts = resource_counts(&emulator).await;
    assert!(counts.contains_key("Patient"), "{counts:?}");
    assert!(!counts.contains_key("Observation"), "{counts:?}");
    emulator.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_gets_the_network_and_credential_flags_the_load_got() {
    let emulator = start_emulator(EmulatorOptions::default()).await;
    // Only reachable with the CA given in args: a verify without it cannot read the store.
    let (tls, pem) = tls_in_front_of(emulator.addr()).await;
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, pem).unwrap();
    let url = emulator.fhir_base_url().replace(
        &format!("http://{}", emulator.addr()),
        &format!("https://{tls}"),
    );
    // A load-only flag among them (--rate) stays with the load.
    let args = format!(
        "--ca-file {} --max-throttle-wait=2m --min-backoff 5ms --rate 5000",
        ca.display()
    );
    let step = run_step(&[
        ("INPUT_FHIR_URL", &url),
        ("INPUT_COUNT", "40"),
        ("INPUT_VERIFY", "true"),
        ("INPUT_ARGS", &args),
    ])
    .await;
    assert_eq!(step.code(), Some(0), "{}", step.log());
    assert_eq!(step.outputs["verified"], "true", "{}", step.log());
    emulator.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_random_seed_is_verified_with_the_seed_the_load_picked() {
    let emulator = start_emulator(EmulatorOptions::default()).await;
    let step = run_step(&[
        ("INPUT_FHIR_URL", &emulator.fhir_base_url()),
        ("INPUT_COUNT", "60"),
        ("INPUT_SEED", "random"),
        ("INPUT_VERIFY", "true"),
    ])
    .await;
    assert_eq!(step.code(), Some(0), "{}", step.log());
    assert_eq!(step.outputs["verified"], "true", "{}", step.log());
    assert_ne!(step.outputs["seed"], "random");
    assert!(
        step.summary
            .contains("#### ✅ fhirgen verify: 60 of 60 looked up"),
        "{}",
        step.log()
    );
    emulator.shutdown().await;
}

/// A stand-in for a GitHub releases page serving `files` by path.
async fn releases_page(files: Vec<(String, Vec<u8>)>) -> String {
    let files: Arc<BTreeMap<String, Vec<u8>>> = Arc::new(files.into_iter().collect());
    let app = axum::Router::new().fallback(move |uri: axum::http::Uri| {
        let files = files.clone();
        async move {
            match files.get(uri.path()) {
                Some(bytes) => (axum::http::StatusCode::OK, bytes.clone()),
                None => (axum::http::StatusCode::NOT_FOUND, Vec::new()),
            }
        }
    });
    format!("http://{}", serve_on_loopback(app).await)
}

/// The release archive for Linux x86_64 as release.yml packs it, and its line of SHA256SUMS.
/// Its `fhirgen` is a stand-in that answers `--version` (the real one is 100+ MB unoptimised).
fn release_archive(dir: &std::path::Path) -> (Vec<u8>, String) {
    use std::os::unix::fs::PermissionsExt;
    let staging = dir.join("staging");
    std::fs::create_dir_all(&staging).unwrap();
    let binary = staging.join("fhirgen");
    std::fs::write(&binary, "#!/bin/sh\necho 'fhirgen 9.9.9'\n").unwrap();
    std::fs::set_permissions(&binary, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::write(staging.join("LICENSE"), "Apache-2.0").unwrap();
    std::fs::write(staging.join("README.md"), "fhirgen").unwrap();
    let name = "fhirgen-x86_64-unknown-linux-musl.tar.gz";
    let packed = Command::new("tar")
        .args([
            "-czf",
            name,
            "-C",
            "staging",
            "fhirgen",
            "LICENSE",
            "README.md",
        ])
        .current_dir(dir)
        .status()
        .unwrap();
    assert!(packed.success());
    let sums = Command::new("sha256sum")
        .arg(name)
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(sums.status.success());
    (
        std::fs::read(dir.join(name)).unwrap(),
        String::from_utf8(sums.stdout).unwrap(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn install_fetches_the_release_the_action_is_pinned_to_and_checks_its_sum() {
    let dir = tempfile::tempdir().unwrap();
    let (archive, sums) = release_archive(dir.path());
    let path = |name: &str| format!("/download/v9.9.9/{name}");
    let archive_path = path("fhirgen-x86_64-unknown-linux-musl.tar.gz");
    let good = releases_page(vec![
        (archive_path.clone(), archive.clone()),
        (path("SHA256SUMS"), sums.clone().into_bytes()),
    ])
    .await;
    let runner_temp = dir.path().join("runner");
    std::fs::create_dir_all(&runner_temp).unwrap();
    let runner = |releases: &str| {
        vec![
            ("RUNNER_OS", "Linux".to_owned()),
            ("RUNNER_ARCH", "X64".to_owned()),
            ("RUNNER_TEMP", runner_temp.to_str().unwrap().to_owned()),
            ("ACTION_REF", "v9.9.9".to_owned()),
            ("FHIRGEN_RELEASES_URL", releases.to_owned()),
        ]
    };
    let inputs = runner(&good);
    let inputs: Vec<(&str, &str)> = inputs.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let step = run_script("install.sh", &inputs).await;
    assert_eq!(step.code(), Some(0), "{}", step.log());
    let installed = &step.outputs["bin"];
    let version = Command::new(installed).arg("--version").output().unwrap();
    assert_eq!(stdout(&version), "fhirgen 9.9.9\n");

    // An archive that is not the one the sums name is refused.
    let tampered = releases_page(vec![
        (archive_path, archive[..archive.len() - 1].to_vec()),
        (path("SHA256SUMS"), sums.into_bytes()),
    ])
    .await;
    std::fs::remove_dir_all(&runner_temp).unwrap();
    std::fs::create_dir_all(&runner_temp).unwrap();
    let inputs = runner(&tampered);
    let inputs: Vec<(&str, &str)> = inputs.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let step = run_script("install.sh", &inputs).await;
    assert_ne!(step.code(), Some(0), "{}", step.log());
    assert!(step.outputs.is_empty(), "{}", step.log());
    assert!(!runner_temp.join("fhirgen/bin/fhirgen").exists());

    // A runner no release is built for says what to do instead.
    let windows = [
        ("RUNNER_OS", "Windows"),
        ("RUNNER_ARCH", "X64"),
        ("RUNNER_TEMP", runner_temp.to_str().unwrap()),
    ];
    let step = run_script("install.sh", &windows).await;
    assert_eq!(step.code(), Some(1), "{}", step.log());
    let stdout = stdout(&step.output);
    assert!(stdout.contains("build-from-source: true"), "{}", step.log());
}
