//! A resource is never sent after what it refers to failed, in any mode, on a store that does
//! not check references (Google with `disableReferentialIntegrity`, most other servers): it
//! would be stored pointing at nothing. It goes to `--failed` with the reason instead, and
//! `verify` finds references that do not resolve.

use fhirgen::emulator::EmulatorOptions;

use crate::common::*;

/// A Practitioner the store refuses (its gender is not a code), in a file of its own, and a
/// Patient in another that names it as general practitioner.
fn refused_practitioner_and_its_patient(dir: &std::path::Path) -> std::path::PathBuf {
    practitioner_and_its_patient(dir, "bogus")
}

fn practitioner_and_its_patient(dir: &std::path::Path, gender: &str) -> std::path::PathBuf {
    let input = dir.join("ri");
    std::fs::create_dir(&input).unwrap();
    std::fs::write(
        input.join("practitioners.ndjson"),
        format!(
            r#"{{"resourceType":"Practitioner","id":"pr1","identifier":[{{"system":"urn:test:npi","value":"pr1"}}],"gender":"{gender}"}}"#
        ) + "\n",
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
    not_sent_after_its_dependency_failed(&input, dir.path(), Reach::Directly).await;
}

/// The store answers 503 to every write of a Practitioner, so its retries run out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_refers_to_a_resource_whose_retries_ran_out_is_not_sent_in_any_mode() {
    let dir = tempfile::tempdir().unwrap();
    let input = practitioner_and_its_patient(dir.path(), "male");
    not_sent_after_its_dependency_failed(&input, dir.path(), Reach::PractitionersUnavailable).await;
}

/// Forwards to the emulator at `upstream`, except writes of a Practitioner: 503.
async fn practitioners_unavailable(
    axum::extract::State(upstream): axum::extract::State<String>,
    request: axum::extract::Request,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let (parts, body) = request.into_parts();
    let body = axum::body::to_bytes(body, usize::MAX).await.unwrap();
    if String::from_utf8_lossy(&body).contains(r#""resourceType":"Practitioner""#) {
        return (axum::http::StatusCode::SERVICE_UNAVAILABLE, "try later").into_response();
    }
    let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let mut forwarded = reqwest::Client::new().request(parts.method, format!("{upstream}{path}"));
    for (name, value) in &parts.headers {
        if name != "host" && name != "content-length" {
            forwarded = forwarded.header(name, value);
        }
    }
    let answer = forwarded.body(body).send().await.unwrap();
    let mut response = axum::http::Response::builder().status(answer.status());
    for (name, value) in answer.headers() {
        if name != "content-length" && name != "transfer-encoding" {
            response = response.header(name, value);
        }
    }
    response
        .body(axum::body::Body::from(answer.bytes().await.unwrap()))
        .unwrap()
}

enum Reach {
    Directly,
    /// Through [`practitioners_unavailable`].
    PractitionersUnavailable,
}

/// Loads `input` (a Practitioner that will fail and a Patient that names it, plus one that
/// does not) in every mode into a store that does not check references: only the Patient with
/// nothing wrong is stored, and the other one is not sent.
async fn not_sent_after_its_dependency_failed(
    input: &std::path::Path,
    dir: &std::path::Path,
    reach: Reach,
) {
    for mode in ["create", "update", "transaction"] {
        let emulator = start_emulator(EmulatorOptions {
            referential_integrity: false,
            ..EmulatorOptions::default()
        })
        .await;
        let base = match reach {
            Reach::Directly => emulator.fhir_base_url(),
            Reach::PractitionersUnavailable => {
                let upstream = emulator.addr().to_string();
                let app = axum::Router::new()
                    .fallback(practitioners_unavailable)
                    .with_state(format!("http://{upstream}"));
                let proxy = serve_on_loopback(app).await.to_string();
                emulator.fhir_base_url().replace(&upstream, &proxy)
            }
        };
        let failed = dir.join(format!("failed-{mode}.ndjson"));
        let output = load_into(&base)
            .mode(mode)
            .json()
            .input(input)
            .failed(&failed)
            .args(["--max-retries", "1", "--min-backoff", "5ms"])
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
        if matches!(reach, Reach::PractitionersUnavailable) {
            assert!(kept.contains("gave up after 2 attempts"), "{mode}: {kept}");
        }
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
