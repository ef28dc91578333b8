//! Standard streams that are closed, or whose reader went away: what fhirgen writes there may
//! be lost, but never the run, its summary, or a `--failed` line.

use std::io::Read;
use std::process::Stdio;

use crate::common::*;

/// `count` Patients as NDJSON, every `refused_every`-th with a gender the store refuses.
fn patients(count: usize, refused_every: usize) -> String {
    (0..count)
        .map(|i| {
            let gender = if i % refused_every == 0 { "bogus" } else { "female" };
            format!(
                r#"{{"resourceType":"Patient","id":"p{i}","identifier":[{{"system":"urn:test","value":"p{i}"}}],"gender":"{gender}"}}"#
            ) + "\n"
        })
        .collect()
}

#[test]
fn a_stderr_whose_reader_went_away_loses_no_summary_and_no_failed_line() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("patients.ndjson");
    std::fs::write(&input, patients(60, 5)).unwrap();
    let failed = dir.path().join("failed.ndjson");
    let mut child = fhirgen()
        .args(["load", "--emulator", "--mode", "create", "--json", "-v"])
        .arg("--input")
        .arg(&input)
        .arg("--failed")
        .arg(&failed)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The reader of stderr stops at once: every later write there meets a broken pipe.
    drop(child.stderr.take());
    let mut stdout = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut stdout)
        .unwrap();
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(1), "stdout: {stdout}");
    let summary: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(summary["failed"], 12, "{summary}");
    assert_eq!(summary["stored"], 48, "{summary}");
    let kept = std::fs::read_to_string(&failed).unwrap();
    assert_eq!(kept.lines().count(), 12, "{kept}");
}

/// Runs fhirgen under `sh` with `redirect` applied to it (`>&-`, `>/dev/null`).
fn redirected(args: &str, redirect: &str) -> std::process::Output {
    let binary = fhirgen().get_program().to_owned();
    std::process::Command::new("sh")
        .arg("-c")
        .arg(format!(
            "exec \"{}\" {args} {redirect}",
            binary.to_string_lossy()
        ))
        .output()
        .unwrap()
}

#[test]
fn generating_to_a_closed_stdout_is_refused_not_a_silent_success() {
    let closed = redirected("generate --count 5", ">&-");
    assert_exit(&closed, 2);
    let stderr = stderr(&closed);
    assert!(stderr.contains("stdout is closed"), "{stderr}");
    // Thrown away on purpose is another matter.
    assert_exit(&redirected("generate --count 5", ">/dev/null"), 0);
}
