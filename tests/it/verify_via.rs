//! `fhirgen verify --via gs://...`: the store read back through its export, after `load --via`,
//! and the emulator's `fhirStores.export` as Google documents it.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use fhirgen::emulator::{Emulator, EmulatorOptions};
use serde_json::{Value, json};

use crate::common::{assert_exit, fhirgen, resource_counts, run, start_emulator, summary, text};

const COUNT: &str = "600";

/// `fhirgen COMMAND --store` of the emulator's store, the data set fixed.
fn against(emulator: &Emulator, command: &str) -> std::process::Command {
    let mut cmd = fhirgen();
    cmd.arg(command)
        .args(["--store", emulator.store_name()])
        .args(["--endpoint", &format!("http://{}/v1", emulator.addr())])
        .args(["--access-token", "test-token-not-a-secret"])
        .args(["--storage-endpoint", &emulator.addr().to_string()])
        .args(["--count", COUNT, "--seed", "7", "--as-of", "2025-06-01"]);
    cmd
}

/// An emulator holding the data set, loaded with `load --via`.
async fn loaded(state: &std::path::Path) -> Emulator {
    let emulator = start_emulator(EmulatorOptions::default()).await;
    let mut load = against(&emulator, "load");
    load.env("FHIRGEN_STATE_DIR", state)
        .args(["--via", "gs://bucket-a/data", "--quiet"]);
    assert_exit(&run(load).await, 0);
    emulator
}

/// `verify --via gs://bucket-a/checks --json` with `extra`; the exit code and the report.
async fn verify_via(emulator: &Emulator, extra: &[&str]) -> (i32, Value) {
    let mut verify = against(emulator, "verify");
    verify
        .args(["--via", "gs://bucket-a/checks", "--json"])
        .args(extra);
    let output = run(verify).await;
    let report = summary(&output);
    assert_eq!(
        report["ok"],
        output.status.code() == Some(0),
        "{}",
        text(&output)
    );
    (output.status.code().unwrap(), report)
}

fn fhir_base(emulator: &Emulator) -> String {
    format!(
        "http://{}/v1/{}/fhir",
        emulator.addr(),
        emulator.store_name()
    )
}

async fn object_names(emulator: &Emulator, prefix: &str) -> Vec<String> {
    let list: Value = reqwest::get(format!(
        "http://{}/storage/v1/b/bucket-a/o?prefix={prefix}",
        emulator.addr()
    ))
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    let items = list["items"].as_array().into_iter().flatten();
    items
        .map(|o| o["name"].as_str().unwrap().to_owned())
        .collect()
}

/// One Patient of the store.
async fn a_patient(emulator: &Emulator) -> Value {
    let url = format!("{}/Patient?_count=1", fhir_base(emulator));
    let page: Value = reqwest::get(url).await.unwrap().json().await.unwrap();
    page["entry"][0]["resource"].clone()
}

fn names(report: &Value, list: &str) -> Vec<String> {
    let first = report[list]["first"].as_array().into_iter().flatten();
    first.map(|n| n.as_str().unwrap().to_owned()).collect()
}

#[tokio::test]
async fn verify_via_passes_after_load_via_and_leaves_no_objects() {
    let state = tempfile::tempdir().unwrap();
    let emulator = loaded(state.path()).await;
    let (code, report) = verify_via(&emulator, &[]).await;
    assert_eq!(code, 0, "{report}");
    assert_eq!(report["expected"], 600);
    assert_eq!(report["read"], 600);
    let expected: u64 = resource_counts(&emulator).await.values().sum();
    assert_eq!(expected, 600);
    for (resource_type, count) in resource_counts(&emulator).await {
        assert_eq!(report["types"][&resource_type]["expected"], count);
        assert_eq!(report["types"][&resource_type]["found"], count);
    }
    assert_eq!(report["objects_deleted"], true);
    assert!(
        report["export"]
            .as_str()
            .unwrap()
            .starts_with("gs://bucket-a/checks/export-")
    );
    assert!(object_names(&emulator, "checks/").await.is_empty());

    let (code, report) = verify_via(&emulator, &["--keep-objects", "--exact-counts"]).await;
    assert_eq!(code, 0, "{report}");
    let kept = object_names(&emulator, "checks/").await;
    assert_eq!(kept.len() as u64, report["objects"].as_u64().unwrap());
    assert!(
        kept.iter().any(|name| name.ends_with("/Patient")),
        "{kept:?}"
    );
}

#[tokio::test]
async fn verify_via_names_a_resource_deleted_from_the_store() {
    let state = tempfile::tempdir().unwrap();
    let emulator = loaded(state.path()).await;
    let id = a_patient(&emulator).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let url = format!("{}/Patient/{id}", fhir_base(&emulator));
    let deleted = reqwest::Client::new().delete(&url).send().await.unwrap();
    assert_eq!(deleted.status(), 200);
    assert_eq!(reqwest::get(&url).await.unwrap().status(), 404);

    let (code, report) = verify_via(&emulator, &[]).await;
    assert_eq!(code, 1);
    assert_eq!(names(&report, "missing"), [format!("Patient/{id}")]);
    assert_eq!(report["count_mismatches"], json!(["Patient"]));
    // The record's other resources refer to the Patient that is gone.
    let dangling = names(&report, "dangling");
    assert!(dangling.iter().any(|d| d.contains(&id)), "{dangling:?}");
}

#[tokio::test]
async fn verify_via_names_a_second_copy_and_tolerates_unrelated_resources() {
    let state = tempfile::tempdir().unwrap();
    let emulator = loaded(state.path()).await;
    let client = reqwest::Client::new();
    let create = |resource: Value| {
        let url = format!("{}/Patient", fhir_base(&emulator));
        let request = client
            .post(url)
            .header("content-type", "application/fhir+json")
            .body(resource.to_string());
        async move { request.send().await.unwrap().json::<Value>().await.unwrap() }
    };
    let unrelated = create(json!({"resourceType": "Patient", "gender": "other"})).await;
    let unrelated = format!("Patient/{}", unrelated["id"].as_str().unwrap());
    let (code, report) = verify_via(&emulator, &[]).await;
    assert_eq!(code, 0, "{report}");
    assert_eq!(
        names(&report, "not_in_data_set"),
        std::slice::from_ref(&unrelated)
    );
    let (code, report) = verify_via(&emulator, &["--exact-counts"]).await;
    assert_eq!(code, 1);
    assert_eq!(report["count_mismatches"], json!(["Patient"]));

    let mut copy = a_patient(&emulator).await;
    copy.as_object_mut().unwrap().remove("id");
    let copy = create(copy).await;
    let copy = format!("Patient/{}", copy["id"].as_str().unwrap());
    let (code, report) = verify_via(&emulator, &[]).await;
    assert_eq!(code, 1);
    let duplicated = names(&report, "duplicated");
    assert_eq!(duplicated.len(), 1, "{duplicated:?}");
    assert!(
        duplicated[0].starts_with(&format!("{copy} (a second Patient?identifier=")),
        "{duplicated:?}"
    );
    assert_eq!(names(&report, "not_in_data_set"), [unrelated]);
}

#[tokio::test]
async fn verify_via_names_a_resource_whose_content_changed() {
    let state = tempfile::tempdir().unwrap();
    let emulator = loaded(state.path()).await;
    let mut patient = a_patient(&emulator).await;
    let id = patient["id"].as_str().unwrap().to_owned();
    let gender = if patient["gender"] == "female" {
        "male"
    } else {
        "female"
    };
    patient["gender"] = json!(gender);
    let updated = reqwest::Client::new()
        .put(format!("{}/Patient/{id}", fhir_base(&emulator)))
        .header("content-type", "application/fhir+json")
        .body(patient.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(updated.status(), 200);
    let (code, report) = verify_via(&emulator, &[]).await;
    assert_eq!(code, 1);
    assert_eq!(names(&report, "changed"), [format!("Patient/{id}")]);
    assert_eq!(report["missing"]["count"], 0);
    assert_eq!(report["count_mismatches"], json!([]));
}

/// Starts `fhirStores.export` with `request` and follows the operation to its end.
async fn export_and_wait(emulator: &Emulator, request: Value) -> Value {
    let store = format!("http://{}/v1/{}", emulator.addr(), emulator.store_name());
    let started: Value = reqwest::Client::new()
        .post(format!("{store}:export"))
        .json(&request)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let name = started["name"].as_str().unwrap().to_owned();
    assert!(name.contains("/datasets/dev/operations/"), "{name}");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let url = format!("http://{}/v1/{name}", emulator.addr());
        let operation: Value = reqwest::get(url).await.unwrap().json().await.unwrap();
        if operation["done"] == true {
            return operation;
        }
        assert!(Instant::now() < deadline, "the export never finished");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn object(emulator: &Emulator, name: &str, range: Option<&str>) -> reqwest::Response {
    let url = format!(
        "http://{}/storage/v1/b/bucket-a/o/{}?alt=media",
        emulator.addr(),
        name.replace('/', "%2F")
    );
    let request = reqwest::Client::new().get(url);
    let request = match range {
        Some(range) => request.header("range", range),
        None => request,
    };
    request.send().await.unwrap()
}

#[tokio::test]
async fn the_emulator_exports_as_google_documents() {
    let state = tempfile::tempdir().unwrap();
    let emulator = loaded(state.path()).await;
    let counts = resource_counts(&emulator).await;

    // Every type, one object each, named for the type under the prefix (a `/` appended).
    let done = export_and_wait(
        &emulator,
        json!({"gcsDestination": {"uriPrefix": "gs://bucket-a/all"}}),
    )
    .await;
    assert!(done["error"].is_null(), "{done}");
    let metadata = &done["metadata"];
    assert!(
        metadata["apiMethodName"]
            .as_str()
            .unwrap()
            .ends_with("FhirStoreService.ExportResources")
    );
    assert_eq!(metadata["counter"]["success"], "600");
    assert_eq!(metadata["counter"]["pending"], "0");
    assert!(metadata["createTime"].is_string() && metadata["endTime"].is_string());
    assert_eq!(
        done["response"]["@type"],
        "type.googleapis.com/google.cloud.healthcare.v1.fhir.rest.ExportResourcesResponse"
    );
    let expected_names: Vec<String> = counts.keys().map(|t| format!("all/{t}")).collect();
    assert_eq!(object_names(&emulator, "all/").await, expected_names);
    let mut exported = BTreeMap::new();
    for name in &expected_names {
        let body = object(&emulator, name, None).await.text().await.unwrap();
        for line in body.lines() {
            let resource: Value = serde_json::from_str(line).unwrap();
            assert_eq!(
                name,
                &format!("all/{}", resource["resourceType"].as_str().unwrap())
            );
            assert!(resource["id"].is_string() && resource["meta"]["versionId"].is_string());
            *exported
                .entry(resource["resourceType"].as_str().unwrap().to_owned())
                .or_insert(0) += 1;
        }
    }
    assert_eq!(exported, counts);

    // `_type` limits the types; a read from a byte on gets the rest, as a resumed read asks.
    let request = json!({"gcsDestination": {"uriPrefix": "gs://bucket-a/some/"},
        "_type": "Patient,Organization"});
    let done = export_and_wait(&emulator, request).await;
    let some = counts["Patient"] + counts["Organization"];
    assert_eq!(done["metadata"]["counter"]["success"], some.to_string());
    assert_eq!(
        object_names(&emulator, "some/").await,
        ["some/Organization", "some/Patient"]
    );
    let whole = object(&emulator, "some/Patient", None)
        .await
        .bytes()
        .await
        .unwrap();
    let rest = object(&emulator, "some/Patient", Some("bytes=10-")).await;
    assert_eq!(rest.status(), 206);
    assert_eq!(rest.bytes().await.unwrap(), whole.slice(10..));
}

#[test]
fn via_with_a_fhir_url_is_a_usage_error() {
    let output = fhirgen()
        .args(["verify", "--fhir-url", "http://127.0.0.1:9/fhir"])
        .args(["--via", "gs://bucket-a/x"])
        .output()
        .unwrap();
    assert_exit(&output, 2);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("fhirStores.export"), "{stderr}");
    assert!(stderr.contains("--store"), "{stderr}");
}

#[tokio::test]
async fn a_refused_export_names_the_service_agent_that_needs_the_bucket() {
    let refuse = || async {
        let body = json!({"error": {"code": 403, "message": "Permission denied on bucket",
            "status": "PERMISSION_DENIED"}});
        (axum::http::StatusCode::FORBIDDEN, axum::Json(body))
    };
    let addr = crate::common::serve_on_loopback(axum::Router::new().fallback(refuse)).await;
    let output = run({
        let mut cmd = fhirgen();
        cmd.args([
            "verify",
            "--store",
            "projects/p/locations/l/datasets/d/fhirStores/s",
        ])
        .args(["--endpoint", &format!("http://{addr}/v1")])
        .args(["--access-token", "test-token-not-a-secret"])
        .args(["--storage-endpoint", &addr.to_string()])
        .args(["--count", "10", "--via", "gs://bucket-a/x"]);
        cmd
    })
    .await;
    assert_exit(&output, 1);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("Permission denied on bucket")
            && stderr.contains("gcp-sa-healthcare")
            && stderr.contains("roles/storage.objectAdmin on gs://bucket-a"),
        "{stderr}"
    );
}

#[tokio::test]
async fn a_signal_leaves_the_export_to_the_store_and_says_so() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    // A store whose export never ends: the run is stopped while following it.
    let polls = Arc::new(AtomicUsize::new(0));
    let operation = "projects/p/locations/l/datasets/d/operations/77";
    let seen = polls.clone();
    let app = axum::Router::new()
        .route(
            "/v1/projects/p/locations/l/datasets/d/fhirStores/{store}",
            axum::routing::post(move || async move { axum::Json(json!({"name": operation})) }),
        )
        .fallback(move || {
            seen.fetch_add(1, Ordering::SeqCst);
            async move {
                axum::Json(json!({"name": operation, "metadata": {"counter": {"success": "5"}}}))
            }
        });
    let addr = crate::common::serve_on_loopback(app).await;
    let child = fhirgen()
        .args([
            "verify",
            "--store",
            "projects/p/locations/l/datasets/d/fhirStores/s",
        ])
        .args(["--endpoint", &format!("http://{addr}/v1")])
        .args(["--access-token", "test-token-not-a-secret"])
        .args(["--storage-endpoint", &addr.to_string()])
        .args(["--count", "10", "--via", "gs://bucket-a/x", "--json"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    crate::common::wait_until("the operation followed", || {
        polls.load(Ordering::SeqCst) > 0
    })
    .await;
    let status = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let output = tokio::task::spawn_blocking(move || child.wait_with_output().unwrap())
        .await
        .unwrap();
    assert_exit(&output, 143);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains(&format!(
            "the export goes on in the store: operation {operation}"
        )),
        "{stderr}"
    );
    let report = summary(&output);
    assert_eq!(report["interrupted"], true);
    assert_eq!(
        report["missing"]["count"], 0,
        "nothing is counted missing unread"
    );
}
