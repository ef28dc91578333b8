//! `load --via` when the import does not go well: resources the import refuses, a signal while
//! the operation runs, and an import refused for want of access to the bucket.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use fhirgen::emulator::{Emulator, EmulatorOptions, UploadFaults};
use serde_json::json;

use crate::common::{assert_exit, run, serve_on_loopback, start_emulator, stderr, summary};
use crate::import::{load_via, load_via_text, objects, via_command};

const STORE: &str = "projects/p/locations/l/datasets/d/fhirStores/s";
const OPERATION: &str = "projects/p/locations/l/datasets/d/operations/4242";

/// Puts `content` at gs://bucket-a/NAME of the emulator.
pub(crate) async fn put_object(emulator: &Emulator, name: &str, content: &str) {
    let answer = reqwest::Client::new()
        .post(format!(
            "http://{}/upload/storage/v1/b/bucket-a/o?uploadType=media&name={name}",
            emulator.addr()
        ))
        .body(content.to_owned())
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 200);
}

#[tokio::test]
async fn an_import_that_refuses_resources_exits_1_and_keeps_the_objects() {
    let emulator = start_emulator(EmulatorOptions::default()).await;
    let state = tempfile::tempdir().unwrap();
    let mut first = load_via(&emulator, state.path(), "partly", 300);
    first.arg("--keep-objects");
    assert_exit(&run(first).await, 0);
    // An object named as the data set's own, so that the import reads it too, holding a line
    // that is not JSON and a Patient without an id: the import refuses both.
    let kept = objects(&emulator, "partly").await;
    let manifest = kept.keys().find(|n| n.ends_with(".manifest.json")).unwrap();
    let tag = manifest["partly/fhirgen-".len()..]
        .split("-shard")
        .next()
        .unwrap();
    let intruder = format!("partly/ffffffff-{tag}-shard0of1-999.ndjson");
    put_object(
        &emulator,
        &intruder,
        "not json\n{\"resourceType\":\"Patient\"}\n",
    )
    .await;

    let output = run(load_via(&emulator, state.path(), "partly", 300)).await;
    assert_exit(&output, 1);
    let summary = summary(&output);
    assert_eq!(summary["imported"], 300, "{summary}");
    assert_eq!(summary["failed"], 2);
    assert_eq!(summary["objects_deleted"], false);
    assert_eq!(summary["objects_uploaded"], 0, "the data set was complete");
    assert!(
        summary["error"]
            .as_str()
            .unwrap()
            .contains("importing one or more resources failed")
    );
    let logs = reqwest::get(summary["logs_url"].as_str().unwrap())
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        logs.contains(&intruder) && logs.contains("not JSON") && logs.contains("has no id"),
        "{logs}"
    );
    assert_eq!(objects(&emulator, "partly").await.len(), kept.len() + 1);

    // The text summary says the same, where to read why, and that the objects stay.
    let output = run(load_via_text(&emulator, state.path(), "partly", 300)).await;
    assert_exit(&output, 1);
    let stderr = stderr(&output);
    assert!(
        stderr.contains("300 imported, 2 failed of 300 resources")
            && stderr.contains("what failed, and why: http://")
            && stderr.contains("the uploaded objects are kept under gs://bucket-a/partly/"),
        "{stderr}"
    );
}

/// A stand-in for the Healthcare API's store methods: settings, an import that runs forever
/// (or is refused with Google's 403), and `operations.get`, counting the looks at it.
async fn stand_in_store(refuse_import: bool) -> (SocketAddr, Arc<AtomicU64>) {
    let looks = Arc::new(AtomicU64::new(0));
    let store = format!("/v1/{}", STORE.rsplit_once('/').unwrap().0);
    let app = Router::new()
        .route(
            &format!("{store}/{{store}}"),
            get(|| async { axum::Json(json!({"name": STORE, "version": "R4"})) }).post(
                move || async move {
                    if refuse_import {
                        forbidden()
                    } else {
                        axum::Json(json!({"name": OPERATION})).into_response()
                    }
                },
            ),
        )
        .route(
            &format!("/v1/{OPERATION}"),
            get(|State(looks): State<Arc<AtomicU64>>| async move {
                looks.fetch_add(1, Ordering::SeqCst);
                axum::Json(json!({
                    "name": OPERATION,
                    "metadata": {"counter": {"success": "40", "pending": "160"}},
                }))
            }),
        )
        .with_state(looks.clone());
    (serve_on_loopback(app).await, looks)
}

/// Google's answer when the store's service agent may not read the bucket.
fn forbidden() -> Response {
    let message = "service-123456789012@gcp-sa-healthcare.iam.gserviceaccount.com does not have \
                   storage.objects.list access to the Google Cloud Storage bucket. Permission \
                   'storage.objects.list' denied on resource (or it may not exist).";
    (
        StatusCode::FORBIDDEN,
        axum::Json(
            json!({"error": {"code": 403, "message": message, "status": "PERMISSION_DENIED"}}),
        ),
    )
        .into_response()
}

fn stand_in_load(
    addr: SocketAddr,
    emulator: &Emulator,
    state: &std::path::Path,
) -> std::process::Command {
    let mut command = via_command(
        &format!("http://{addr}/v1"),
        STORE,
        emulator,
        state,
        "signal",
    );
    command.args([
        "--count",
        "200",
        "--seed",
        "7",
        "--as-of",
        "2025-06-01",
        "--json",
    ]);
    command
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctrl_c_while_the_import_runs_names_the_operation() {
    a_signal_leaves_the_import_running("INT", 130).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_while_the_import_runs_names_the_operation() {
    a_signal_leaves_the_import_running("TERM", 143).await;
}

/// A signal while the operation runs stops the following, not the import: the summary has
/// the counters so far, stderr the commands that follow or cancel it, and the objects stay.
async fn a_signal_leaves_the_import_running(signal: &str, code: i32) {
    let emulator = start_emulator(EmulatorOptions::default()).await;
    let (addr, looks) = stand_in_store(false).await;
    let state = tempfile::tempdir().unwrap();
    let mut command = stand_in_load(addr, &emulator, state.path());
    command
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let child = command.spawn().unwrap();
    crate::common::wait_until("two looks at the running import", || {
        looks.load(Ordering::SeqCst) >= 2
    })
    .await;
    let killed = std::process::Command::new("kill")
        .args([&format!("-{signal}"), &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let output = tokio::task::spawn_blocking(move || child.wait_with_output().unwrap())
        .await
        .unwrap();
    assert_exit(&output, code);
    let summary = summary(&output);
    assert_eq!(summary["interrupted"], true, "{summary}");
    assert_eq!(summary["operation"], OPERATION);
    assert_eq!(summary["imported"], 40);
    assert_eq!(summary["objects_deleted"], false);
    let stderr = stderr(&output);
    let flags = "--project=p --location=l --dataset=d";
    for expected in [
        format!("operation {OPERATION}"),
        format!("gcloud healthcare operations describe 4242 {flags}"),
        format!("gcloud alpha healthcare operations cancel 4242 {flags}"),
    ] {
        assert!(stderr.contains(&expected), "{expected}:\n{stderr}");
    }
    assert_eq!(objects(&emulator, "signal").await.len(), 2);
}

#[tokio::test]
async fn an_import_refused_403_names_the_service_agent_and_its_role() {
    let emulator = start_emulator(EmulatorOptions::default()).await;
    let (addr, looks) = stand_in_store(true).await;
    let state = tempfile::tempdir().unwrap();
    let output = run(stand_in_load(addr, &emulator, state.path())).await;
    assert_exit(&output, 2);
    let stderr = stderr(&output);
    for expected in [
        "HTTP 403: service-123456789012@gcp-sa-healthcare.iam.gserviceaccount.com does not have",
        "service-PROJECT_NUMBER@gcp-sa-healthcare.iam.gserviceaccount.com",
        "roles/storage.objectViewer on gs://bucket-a",
        "The uploaded objects are kept",
    ] {
        assert!(stderr.contains(expected), "{expected}:\n{stderr}");
    }
    assert_eq!(looks.load(Ordering::SeqCst), 0, "no operation to follow");
    assert_eq!(objects(&emulator, "signal").await.len(), 2);
}

/// Ctrl-C during the upload stops it at once (its upload was waiting a minute to retry a
/// refused chunk) with nothing imported; the same command again resumes the kept session.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctrl_c_during_the_upload_stops_it_and_a_run_again_resumes() {
    let emulator = start_emulator(EmulatorOptions {
        upload_faults: UploadFaults {
            unavailable_chunk: 4,
            ..UploadFaults::default()
        },
        ..EmulatorOptions::default()
    })
    .await;
    let state = tempfile::tempdir().unwrap();
    let chunks = ["--upload-chunk-size", "256KiB"];
    let mut first = load_via(&emulator, state.path(), "upload", 3000);
    first
        .args(chunks)
        .args(["--min-backoff", "60s"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let child = first.spawn().unwrap();
    crate::common::wait_until("the refused fourth chunk", || {
        emulator.storage_stats().chunks >= 4
    })
    .await;
    let interrupted_at = std::time::Instant::now();
    std::process::Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    let output = tokio::task::spawn_blocking(move || child.wait_with_output().unwrap())
        .await
        .unwrap();
    assert_exit(&output, 130);
    assert!(interrupted_at.elapsed() < std::time::Duration::from_secs(10));
    let summary = summary(&output);
    assert_eq!(summary["interrupted"], true, "{summary}");
    assert!(summary.get("operation").is_none());
    assert!(stderr(&output).contains("stopped during the upload; nothing was imported"));
    assert_eq!(crate::common::total_resources(&emulator).await, 0);

    let mut again = load_via(&emulator, state.path(), "upload", 3000);
    again.args(chunks);
    let output = run(again).await;
    assert_exit(&output, 0);
    assert_eq!(crate::common::summary(&output)["imported"], 3000);
    assert_eq!(
        emulator.storage_stats().sessions,
        1,
        "the same session, resumed"
    );
}
