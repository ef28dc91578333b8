//! What ships around the commands: shell completions, the man page, gzip output.

use std::io::Read;
use std::process::{Output, Stdio};

use crate::common::*;

fn fhirgen_output(args: &[&str]) -> Output {
    let output = fhirgen().args(args).stdin(Stdio::null()).output().unwrap();
    assert_exit(&output, 0);
    output
}

#[test]
fn completions_for_every_shell_know_the_commands() {
    for shell in ["bash", "zsh", "fish", "powershell", "elvish"] {
        let script = String::from_utf8(fhirgen_output(&["completions", shell]).stdout).unwrap();
        // fish spells flags `-l fhir-url`, the others `--fhir-url`.
        for word in ["load", "verify", "fhir-url", "sample"] {
            assert!(script.contains(word), "{shell} completions lack {word}");
        }
    }
    let output = fhirgen().args(["completions", "tcsh"]).output().unwrap();
    assert_exit(&output, 2);
}

#[test]
fn the_man_page_renders_and_names_every_command() {
    let roff = fhirgen_output(&["man"]).stdout;
    let dir = tempfile::tempdir().unwrap();
    let page = dir.path().join("fhirgen.1");
    std::fs::write(&page, &roff).unwrap();
    let rendered = std::process::Command::new("man")
        .arg("-l")
        .arg(&page)
        // Not a terminal and no pager: man prints plain text, without overstrike.
        .env("MANWIDTH", "100")
        .env_remove("MANPAGER")
        .env_remove("PAGER")
        .env_remove("MAN_KEEP_FORMATTING")
        .output()
        .expect("man is installed (apt-get install man-db)");
    assert_exit(&rendered, 0);
    let text = stdout(&rendered);
    for heading in [
        "FHIRGEN GENERATE",
        "FHIRGEN LOAD",
        "FHIRGEN SERVE",
        "FHIRGEN VERIFY",
        "FHIRGEN COMPLETIONS",
    ] {
        assert!(
            text.contains(heading),
            "the man page has no `{heading}`:\n{text}"
        );
    }
    for flag in ["--fhir-url", "--sample", "--bundle-size", "--latency-ms"] {
        assert!(text.contains(flag), "the man page does not mention {flag}");
    }
    assert!(
        !text.contains("fhirgen man"),
        "the hidden command stays hidden"
    );
}

#[test]
fn generate_writes_gzip_when_the_name_says_so() {
    let data = ["--count", "500", "--seed", "3", "--as-of", "2024-06-01"];
    let dir = tempfile::tempdir().unwrap();
    let plain = dir.path().join("data.ndjson");
    let gzip = dir.path().join("data.ndjson.GZ");
    for path in [&plain, &gzip] {
        fhirgen_output(&[&["generate", "-o", path.to_str().unwrap()], &data[..]].concat());
    }
    let plain = std::fs::read(plain).unwrap();
    let compressed = std::fs::read(gzip).unwrap();
    assert_eq!(&compressed[..2], [0x1f, 0x8b], "a gzip header");
    assert!(compressed.len() * 4 < plain.len(), "compressed");
    let mut unzipped = Vec::new();
    flate2::read::GzDecoder::new(&compressed[..])
        .read_to_end(&mut unzipped)
        .unwrap();
    assert_eq!(unzipped.len(), plain.len());
    assert!(
        unzipped == plain,
        "gunzipped output differs from the plain output"
    );

    let stdout = fhirgen_output(&[&["generate", "-o", "-"], &data[..]].concat()).stdout;
    assert!(stdout == plain, "-o - writes plain NDJSON to stdout");
}
