//! A store that echoes the credential it was sent, in every encoding servers use (PHP's `\/`,
//! Gson's `\u003d`, percent-encoding, HTML references): no form of it reaches stderr, stdout
//! or `--failed`, even once fhirgen has decoded the store's message.

use axum::Router;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::routing::any;

use crate::common::*;

/// `text` in the forms a server may echo it in, as one line of JSON-string content.
fn echoed_in_every_form(text: &str) -> String {
    let escaped = |c: char, form: &dyn Fn(u32) -> String| match c.is_ascii_alphanumeric() {
        true => c.to_string(),
        false => form(u32::from(c)),
    };
    let each = |form: &dyn Fn(u32) -> String| -> String {
        text.chars().map(|c| escaped(c, form)).collect()
    };
    [
        text.to_owned(),
        text.replace('/', "\\/"),
        each(&|code| format!("\\u{code:04x}")),
        each(&|code| format!("%{code:02X}")),
        each(&|code| format!("%{code:02x}")),
        each(&|code| format!("&#{code};")),
    ]
    .join(" | ")
}

/// A FHIR server that refuses every write with a message echoing the credential it got, and
/// for Basic the user and password inside it too.
async fn echoing_store() -> String {
    let app = Router::new().fallback(any(|uri: Uri, headers: HeaderMap| async move {
        if uri.path().ends_with("/metadata") {
            let capabilities = r#"{"resourceType":"CapabilityStatement","fhirVersion":"4.0.1"}"#;
            return (StatusCode::OK, capabilities.to_owned());
        }
        let sent = headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        let credential = sent.split_once(' ').map_or(sent, |(_, c)| c);
        let mut echoes = vec![echoed_in_every_form(credential)];
        if sent.starts_with("Basic ") {
            use base64::Engine;
            let pair = base64::engine::general_purpose::STANDARD
                .decode(credential)
                .unwrap();
            echoes.push(echoed_in_every_form(&String::from_utf8(pair).unwrap()));
        }
        let outcome = format!(
            r#"{{"resourceType":"OperationOutcome","issue":[{{"severity":"error","code":"security","diagnostics":"credential not allowed here: {}"}}]}}"#,
            echoes.join(" / ")
        );
        (StatusCode::BAD_REQUEST, outcome)
    }));
    format!("http://{}/fhir", serve_on_loopback(app).await)
}

/// `text` decoded in each way a reader (or fhirgen) might: JSON escapes, percent-encoding,
/// HTML references.
fn decoded(text: &str) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(c) = rest.chars().next() {
        let (decoded, len) = if let Some(hex) = rest.strip_prefix("\\u").and_then(|r| r.get(..4)) {
            (
                u32::from_str_radix(hex, 16).ok().and_then(char::from_u32),
                6,
            )
        } else if let Some(hex) = rest.strip_prefix('%').and_then(|r| r.get(..2)) {
            (
                u32::from_str_radix(hex, 16).ok().and_then(char::from_u32),
                3,
            )
        } else if rest.starts_with("\\/") {
            (Some('/'), 2)
        } else if let Some(end) = rest.strip_prefix("&#").and_then(|r| r.find(';')) {
            (
                rest[2..2 + end].parse().ok().and_then(char::from_u32),
                end + 3,
            )
        } else {
            (None, 0)
        };
        match decoded {
            Some(d) => {
                out.push(d);
                rest = &rest[len..];
            }
            None => {
                out.push(c);
                rest = &rest[c.len_utf8()..];
            }
        }
    }
    out
}

/// Loads three Patients into `url`; every one is refused with the echo. Checks that they were
/// reported (so the echo was read), and that no form of `secrets` was shown or kept.
async fn refused_without_showing(url: &str, token: Option<&str>, secrets: &[&str]) {
    let dir = tempfile::tempdir().unwrap();
    let failed = dir.path().join("failed.ndjson");
    let mut command = fhirgen();
    command
        .args([
            "load",
            "--fhir-url",
            url,
            "--mode",
            "create",
            "--count",
            "3",
        ])
        .args(["--types", "Patient", "--json", "-vv", "--failed"])
        .arg(&failed);
    if let Some(token) = token {
        command.args(["--access-token", token]);
    }
    let output = run(command).await;
    assert_exit(&output, 1);
    let kept = std::fs::read_to_string(&failed).unwrap();
    assert!(
        kept.contains("credential not allowed here: (redacted)"),
        "{kept}"
    );
    let shown = [stdout(&output), stderr(&output), kept].join("\n");
    for text in [shown.clone(), decoded(&shown), decoded(&decoded(&shown))] {
        for secret in secrets {
            assert!(!text.contains(secret), "{secret} was shown:\n{text}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bearer_token_echoed_in_any_encoding_is_never_shown() {
    let url = echoing_store().await;
    let token = "ya29.a0Af/Tk+zQ=9_x-Y";
    refused_without_showing(&url, Some(token), &[token, "a0Af/Tk+zQ"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_basic_password_echoed_in_any_encoding_is_never_shown() {
    let url = echoing_store().await;
    let with_password = url.replacen("http://", "http://loader:p%2Fw%2Brd%3D%3D@", 1);
    // base64("loader:p/w+rd==")
    let basic = "bG9hZGVyOnAvdytyZD09";
    refused_without_showing(&with_password, None, &["p/w+rd==", basic]).await;
}
