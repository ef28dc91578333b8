//! Cloud Storage: the emulator's JSON API as Google shapes it, and the client's resumable
//! uploads against it, faults included.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use fhirgen::emulator::{EmulatorOptions, UploadFaults};
use fhirgen::store::auth::Credentials;
use fhirgen::store::client::Network;
use fhirgen::store::retry::RetryPolicy;
use fhirgen::store::storage::{
    CHUNK_UNIT, Endpoint, StorageClient, StorageError, UploadState, crc32c_text,
};
use serde_json::Value;

use crate::common::start_emulator;

fn client_for(addr: std::net::SocketAddr) -> StorageClient {
    let endpoint = Endpoint::resolve(Some(&addr.to_string()), |_| None).unwrap();
    StorageClient::new(
        endpoint,
        Arc::new(Credentials::none()),
        &Network::default(),
        RetryPolicy::new(4, Duration::from_millis(1)),
        Duration::from_secs(10),
    )
    .unwrap()
}

/// `units` whole 256 KiB units plus `tail` bytes, each byte telling where it is.
fn content(units: usize, tail: usize) -> Bytes {
    (0..units * CHUNK_UNIT + tail)
        .map(|i| (i % 251) as u8)
        .collect::<Vec<u8>>()
        .into()
}

/// Uploads `data` in chunks of `chunk` bytes as the generator does: the total is told with
/// the last chunk only.
async fn upload(client: &StorageClient, name: &str, data: &Bytes, chunk: usize) -> Value {
    let session = client
        .begin_upload("bucket-a", name, "application/fhir+ndjson")
        .await
        .unwrap();
    let mut offset = 0;
    loop {
        let end = (offset + chunk).min(data.len());
        let last = end == data.len();
        let total = last.then_some(data.len() as u64);
        match client
            .upload_chunk(&session, offset as u64, data.slice(offset..end), total)
            .await
            .unwrap()
        {
            UploadState::Complete(object) => return serde_json::to_value(object).unwrap(),
            UploadState::Persisted(kept) => {
                assert!(!last, "the last chunk ends the upload");
                assert_eq!(kept, end as u64);
                offset = end;
            }
        }
    }
}

#[tokio::test]
async fn objects_are_uploaded_listed_read_and_deleted_as_on_google() {
    let emulator = start_emulator(EmulatorOptions::default()).await;
    let client = client_for(emulator.addr());
    let data = content(3, 1000);
    let object = upload(&client, "runs/a/part-1.ndjson", &data, 2 * CHUNK_UNIT).await;
    assert_eq!(object["name"], "runs/a/part-1.ndjson");
    assert_eq!(object["size"], data.len() as u64);
    assert_eq!(object["crc32c"], crc32c_text(crc32c::crc32c(&data)));
    let small = client
        .upload_small(
            "bucket-a",
            "runs/a/manifest.json",
            "application/json",
            Bytes::from_static(b"{}"),
        )
        .await
        .unwrap();
    assert_eq!(small.size, 2);
    assert_eq!(
        client
            .download("bucket-a", "runs/a/part-1.ndjson")
            .await
            .unwrap(),
        data
    );

    // Google's shapes, read raw: sizes and generations are strings, a missing object is 404
    // with Google's error body.
    let base = format!("http://{}/storage/v1/b/bucket-a/o", emulator.addr());
    let raw: Value = reqwest::get(format!("{base}/runs%2Fa%2Fpart-1.ndjson"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(raw["kind"], "storage#object");
    assert_eq!(raw["size"], data.len().to_string());
    assert!(raw["generation"].is_string());
    let missing = reqwest::get(format!("{base}/nothing")).await.unwrap();
    assert_eq!(missing.status(), 404);
    let error: Value = missing.json().await.unwrap();
    assert_eq!(error["error"]["code"], 404);
    assert_eq!(error["error"]["errors"][0]["reason"], "notFound");

    // Listing pages through more objects than one page holds.
    for i in 0..1005 {
        client
            .upload_small(
                "bucket-a",
                &format!("many/{i:04}"),
                "text/plain",
                Bytes::new(),
            )
            .await
            .unwrap();
    }
    let first: Value = reqwest::get(format!("{base}?prefix=many/"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(first["items"].as_array().unwrap().len(), 1000);
    assert!(first["nextPageToken"].is_string());
    let listed = client.list("bucket-a", "many/").await.unwrap();
    assert_eq!(listed.len(), 1005);
    assert_eq!(client.list("bucket-a", "runs/").await.unwrap().len(), 2);

    client
        .delete("bucket-a", "runs/a/manifest.json")
        .await
        .unwrap();
    assert_eq!(
        client
            .object("bucket-a", "runs/a/manifest.json")
            .await
            .unwrap(),
        None
    );
    assert!(client.object("bucket-b", "x").await.unwrap().is_none());
}

#[tokio::test]
async fn a_status_query_tells_what_was_kept() {
    let emulator = start_emulator(EmulatorOptions::default()).await;
    let client = client_for(emulator.addr());
    let session = client
        .begin_upload("bucket-a", "o", "text/plain")
        .await
        .unwrap();
    assert_eq!(
        client.upload_status(&session, None).await.unwrap(),
        UploadState::Persisted(0)
    );
    let data = content(2, 10);
    client
        .upload_chunk(&session, 0, data.slice(..CHUNK_UNIT), None)
        .await
        .unwrap();
    // Asked raw, as Google answers: 308 with the range kept.
    let raw = reqwest::Client::new()
        .put(&session)
        .header("content-range", "bytes */*")
        .send()
        .await
        .unwrap();
    assert_eq!(raw.status(), 308);
    assert_eq!(
        raw.headers()["range"],
        format!("bytes=0-{}", CHUNK_UNIT - 1)
    );
    let done = client
        .upload_chunk(
            &session,
            CHUNK_UNIT as u64,
            data.slice(CHUNK_UNIT..),
            Some(data.len() as u64),
        )
        .await
        .unwrap();
    assert!(matches!(done, UploadState::Complete(o) if o.size == data.len() as u64));
}

async fn upload_with(
    faults: UploadFaults,
) -> (Result<Value, StorageError>, fhirgen::emulator::StorageStats) {
    let emulator = start_emulator(EmulatorOptions {
        upload_faults: faults,
        ..EmulatorOptions::default()
    })
    .await;
    let client = client_for(emulator.addr());
    let data = content(8, 77);
    let session = client
        .begin_upload("bucket-a", "o", "text/plain")
        .await
        .unwrap();
    let mut offset = 0;
    let chunk = 2 * CHUNK_UNIT;
    let result = loop {
        let end = (offset + chunk).min(data.len());
        let total = (end == data.len()).then_some(data.len() as u64);
        match client
            .upload_chunk(&session, offset as u64, data.slice(offset..end), total)
            .await
        {
            Ok(UploadState::Complete(object)) => break Ok(serde_json::to_value(object).unwrap()),
            Ok(UploadState::Persisted(_)) => offset = end,
            Err(e) => break Err(e),
        }
    };
    if let Ok(object) = &result {
        assert_eq!(object["crc32c"], crc32c_text(crc32c::crc32c(&data)));
        assert_eq!(client.download("bucket-a", "o").await.unwrap(), data);
    }
    (result, emulator.storage_stats())
}

#[tokio::test]
async fn a_chunk_cut_short_is_completed_and_a_503_is_retried_after_asking() {
    let (partial, stats) = upload_with(UploadFaults {
        partial_chunk: 2,
        ..UploadFaults::default()
    })
    .await;
    partial.unwrap();
    // The rest of the cut chunk went once more: one request more than the five chunks.
    assert_eq!(stats.chunks, 6);
    let (unavailable, stats) = upload_with(UploadFaults {
        unavailable_chunk: 3,
        ..UploadFaults::default()
    })
    .await;
    unavailable.unwrap();
    assert_eq!(stats.chunks, 6);
    let total = 8 * CHUNK_UNIT as u64 + 77;
    // The refused chunk is sent twice; nothing else is.
    assert_eq!(stats.bytes_received, total + 2 * CHUNK_UNIT as u64);
}

#[tokio::test]
async fn an_expired_session_is_reported_as_gone() {
    let (expired, _) = upload_with(UploadFaults {
        expire_session_chunk: 2,
        ..UploadFaults::default()
    })
    .await;
    assert_eq!(expired.unwrap_err(), StorageError::SessionGone);
}
