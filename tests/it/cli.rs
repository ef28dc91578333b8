//! The command line as a user meets it: usage mistakes, help, and credentials that must never
//! be shown, whatever else is wrong with the command. Every run starts from an empty
//! environment, so nothing of the user's own settings leaks in.

use std::process::Output;

use assert_cmd::Command;
use fhirgen::emulator::{Emulator, EmulatorOptions};

use crate::common::{stderr, stdout, text};

/// In every credential below; it must appear nowhere in what fhirgen prints.
const SENTINEL: &str = "S3NTINEL";

/// The binary with an empty environment but for PATH (and a HOME with no gcloud settings).
fn fhirgen() -> Command {
    let mut command = Command::new(assert_cmd::cargo::cargo_bin!("fhirgen"));
    command
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", std::env::temp_dir().join("fhirgen-cli-test-home"));
    command
}

/// Exits with `code` and shows no part of any credential.
fn assert_exits_without_secrets(output: &Output, code: i32) {
    let shown = text(output);
    assert_eq!(output.status.code(), Some(code), "{shown}");
    assert!(
        !shown.contains(SENTINEL),
        "a credential was shown:\n{shown}"
    );
}

/// Malformed URLs that carry a password, by what is wrong with them.
const MALFORMED: [(&str, &str); 10] = [
    ("bad scheme", "ftp://loader:S3NTINEL@fhir.example.com/fhir"),
    ("no scheme", "loader:S3NTINEL@fhir.example.com/fhir"),
    (
        "bad port",
        "https://loader:S3NTINEL@fhir.example.com:99999/fhir",
    ),
    (
        "port not a number",
        "https://loader:S3NTINEL@fhir.example.com:ssl/fhir",
    ),
    (
        "bad host",
        "https://loader:S3NTINEL@fhir..example..com%/fhir",
    ),
    ("no host", "https://loader:S3NTINEL@/fhir"),
    ("bad IPv6 host", "https://loader:S3NTINEL@[::1/fhir"),
    (
        "space in host",
        "https://loader:S3NTINEL@fhir example.com/fhir",
    ),
    (
        "unencoded slash in password",
        "https://loader:S3NT/INEL@fhir.example.com/fhir",
    ),
    (
        "control character in host",
        "https://loader:S3NTINEL@fhir\u{1}example.com/fhir",
    ),
];

#[test]
fn a_malformed_fhir_url_is_shown_without_its_password() {
    for (what, url) in MALFORMED {
        let output = fhirgen()
            .args(["load", "--fhir-url", url, "--count", "5"])
            .output()
            .unwrap();
        assert_exits_without_secrets(&output, 2);
        let stderr = stderr(&output);
        assert!(stderr.contains("--fhir-url"), "{what}: {stderr}");
        // Even with `/` unencoded, no part of the password is left.
        assert!(!stderr.contains("INEL"), "{what}: {stderr}");
    }
}

#[test]
fn a_malformed_url_from_the_environment_is_shown_without_its_password() {
    for (_, url) in MALFORMED {
        let output = fhirgen()
            .args(["load", "--count", "5"])
            .env("FHIRGEN_FHIR_URL", url)
            .output()
            .unwrap();
        assert_exits_without_secrets(&output, 2);
    }
}

#[test]
fn a_malformed_endpoint_is_shown_without_its_password() {
    let store = "projects/p/locations/l/datasets/d/fhirStores/s";
    for (what, url) in MALFORMED {
        let output = fhirgen()
            .args(["load", "--store", store, "--endpoint", url, "--count", "5"])
            .output()
            .unwrap();
        assert_exits_without_secrets(&output, 2);
        let stderr = stderr(&output);
        assert!(stderr.contains("--endpoint"), "{what}: {stderr}");
    }
}

#[test]
fn a_password_with_a_space_is_refused_over_plain_http_without_being_shown() {
    let url = "http://loader:S3NTINEL pw@fhir.example.com/fhir";
    let output = fhirgen()
        .args(["load", "--fhir-url", url, "--count", "5"])
        .output()
        .unwrap();
    assert_exits_without_secrets(&output, 2);
    assert!(text(&output).contains("plain http"), "{}", text(&output));
}

#[test]
fn help_shows_which_variables_are_read_but_not_their_values() {
    let environment = [
        (
            "FHIRGEN_FHIR_URL",
            "https://loader:S3NTINEL@fhir.example.com/fhir",
        ),
        ("FHIRGEN_ACCESS_TOKEN", "ya29.S3NTINEL"),
        (
            "FHIRGEN_STORE",
            "projects/S3NTINEL/locations/l/datasets/d/fhirStores/s",
        ),
        (
            "FHIRGEN_ENDPOINT",
            "https://loader:S3NTINEL@healthcare.example.com/v1",
        ),
        ("FHIRGEN_EMULATOR_TOKEN", "S3NTINEL"),
    ];
    let asks: [&[&str]; 4] = [
        &["load", "--help"],
        &["load", "-h"],
        &["help", "load"],
        &["serve", "--help"],
    ];
    for args in asks {
        let output = fhirgen().args(args).envs(environment).output().unwrap();
        assert_exits_without_secrets(&output, 0);
    }
    let output = fhirgen()
        .args(["load", "--help"])
        .envs(environment)
        .output()
        .unwrap();
    let help = stdout(&output);
    for (name, _) in &environment[..4] {
        assert!(help.contains(name), "{name} is not named in:\n{help}");
    }
}

async fn start_emulator() -> Emulator {
    Emulator::start(EmulatorOptions::default(), "127.0.0.1:0".parse().unwrap())
        .await
        .expect("emulator starts")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_in_the_query_is_not_shown_as_the_target() {
    let emulator = start_emulator().await;
    let base = emulator.fhir_base_url();
    let url = format!("{base}?api_key=S3NTINEL&access_token=S3NTINEL");
    let failed = tempfile::NamedTempFile::new().unwrap();
    let mut command = fhirgen();
    command
        .args(["load", "--fhir-url", &url, "--count", "20", "--json"])
        .args(["--access-token", "ya29.S3NTINEL", "--failed"])
        .arg(failed.path());
    let output = tokio::task::spawn_blocking(move || command.output().unwrap())
        .await
        .unwrap();
    emulator.shutdown().await;
    assert_exits_without_secrets(&output, 0);
    let summary: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(
        summary["target"],
        format!("{base}?api_key=***&access_token=***"),
        "{summary}"
    );
    assert_eq!(summary["stored"], 20, "{summary}");
    let stderr = stderr(&output);
    assert!(stderr.contains("api_key=***"), "{stderr}");
    let failed = std::fs::read_to_string(failed.path()).unwrap();
    assert!(!failed.contains(SENTINEL), "{failed}");
}

#[test]
fn help_about_help_is_help() {
    for args in [&["help", "--help"][..], &["help", "help"], &["help"]] {
        let output = fhirgen().args(args).output().unwrap();
        assert_eq!(output.status.code(), Some(0), "{args:?}: {}", text(&output));
        let stdout = stdout(&output);
        assert!(stdout.contains("Usage: fhirgen"), "{args:?}: {stdout}");
    }
    let output = fhirgen().args(["help", "load"]).output().unwrap();
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));
    assert!(stdout(&output).contains("--fhir-url"));

    let output = fhirgen().args(["help", "lod"]).output().unwrap();
    assert_eq!(output.status.code(), Some(2), "{}", text(&output));
    assert!(text(&output).contains("no subcommand `lod`"));
}

#[test]
fn a_negative_count_is_called_a_count() {
    for count in ["-5", "-1k"] {
        let output = fhirgen()
            .args(["generate", "--count", count])
            .output()
            .unwrap();
        assert_eq!(output.status.code(), Some(2), "{}", text(&output));
        let stderr = stderr(&output);
        assert!(stderr.contains("non-negative"), "{stderr}");
        assert!(!stderr.contains("unexpected argument"), "{stderr}");
        assert!(output.stdout.is_empty());
    }
}

#[test]
fn counts_take_suffixes() {
    let output = fhirgen()
        .args(["generate", "--count", "2k"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));
    assert_eq!(output.stdout.iter().filter(|&&b| b == b'\n').count(), 2000);
}

#[test]
fn an_empty_access_token_is_refused() {
    let output = fhirgen()
        .args(["load", "--emulator", "--count", "5", "--access-token", ""])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2), "{}", text(&output));
    let stderr = stderr(&output);
    assert!(stderr.contains("access token is empty"), "{stderr}");
}

#[test]
fn a_thread_count_from_the_environment_is_checked_not_panicked_on() {
    for value in ["0", "two", "", "100000"] {
        let output = fhirgen()
            .env("TOKIO_WORKER_THREADS", value)
            .args(["generate", "--count", "1"])
            .output()
            .unwrap();
        assert_eq!(
            output.status.code(),
            Some(2),
            "{value:?}: {}",
            text(&output)
        );
        let stderr = stderr(&output);
        assert!(
            stderr.contains("TOKIO_WORKER_THREADS") && stderr.contains("1 or more"),
            "{stderr}"
        );
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
    let output = fhirgen()
        .env("TOKIO_WORKER_THREADS", "3")
        .args(["generate", "--count", "1"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));
}
