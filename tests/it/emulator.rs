//! The emulator's HTTP API, exercised with reqwest against an emulator on 127.0.0.1.

use std::io::Write;
use std::time::Duration;

use fhirgen::emulator::{Emulator, EmulatorOptions, EmulatorStats};
use fhirgen::secret::SecretString;
use reqwest::header::HeaderMap;
use serde_json::{Value, json};

const SID: &str = "https://fhirgen.dev/sid/patient";

async fn start(options: EmulatorOptions) -> Emulator {
    Emulator::start(options, "127.0.0.1:0".parse().unwrap())
        .await
        .expect("emulator starts")
}

struct Reply {
    status: u16,
    headers: HeaderMap,
    body: Value,
}

impl Reply {
    fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .unwrap_or_else(|| panic!("no {name} header"))
            .to_str()
            .unwrap()
    }

    fn diagnostics(&self) -> &str {
        self.body["issue"][0]["diagnostics"].as_str().unwrap_or("")
    }
}

async fn send(request: reqwest::RequestBuilder) -> Reply {
    let response = request
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let bytes = response.bytes().await.unwrap();
    let body = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes).unwrap_or_else(|e| {
            panic!(
                "answer is not JSON ({e}): {}",
                String::from_utf8_lossy(&bytes)
            )
        })
    };
    Reply {
        status,
        headers,
        body,
    }
}

async fn post(url: &str, body: &Value) -> Reply {
    send(reqwest::Client::new().post(url).json(body)).await
}

async fn get(url: &str) -> Reply {
    send(reqwest::Client::new().get(url)).await
}

async fn stats(emulator: &Emulator) -> EmulatorStats {
    let reply = get(&format!("http://{}/_emulator/stats", emulator.addr())).await;
    assert_eq!(reply.status, 200);
    let from_http: EmulatorStats = serde_json::from_value(reply.body).unwrap();
    assert_eq!(from_http.resources, emulator.stats().resources);
    from_http
}

fn count(stats: &EmulatorStats, resource_type: &str) -> u64 {
    stats.resources.get(resource_type).copied().unwrap_or(0)
}

fn patient(value: &str) -> Value {
    json!({
        "resourceType": "Patient",
        "identifier": [{"system": SID, "value": value}],
        "name": [{"family": "Doe", "given": ["Jane"]}],
        "gender": "female",
        "birthDate": "1980-04-01"
    })
}

fn encounter(subject: &str) -> Value {
    json!({
        "resourceType": "Encounter",
        "status": "finished",
        "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"},
        "subject": {"reference": subject}
    })
}

#[tokio::test]
async fn create_read_update() {
    let emulator = start(EmulatorOptions::default()).await;
    let base = emulator.fhir_base_url();
    assert_eq!(
        base,
        format!(
            "http://127.0.0.1:{}/v1/projects/fhirgen/locations/local/datasets/dev/fhirStores/emulator/fhir",
            emulator.addr().port()
        )
    );

    let created = post(&format!("{base}/Patient"), &patient("1")).await;
    assert_eq!(created.status, 201);
    assert_eq!(
        created.header("content-type"),
        "application/fhir+json; charset=utf-8"
    );
    let id = created.body["id"].as_str().unwrap().to_owned();
    assert_eq!(
        created.header("location"),
        format!("{base}/Patient/{id}/_history/1")
    );
    assert_eq!(created.body["meta"]["versionId"], "1");
    assert_eq!(created.body["name"][0]["family"], "Doe");

    let read = get(&format!("{base}/Patient/{id}")).await;
    assert_eq!(read.status, 200);
    assert_eq!(read.body, created.body);

    let mut changed = read.body.clone();
    changed["gender"] = json!("other");
    let client = reqwest::Client::new();
    let updated = send(client.put(format!("{base}/Patient/{id}")).json(&changed)).await;
    assert_eq!(updated.status, 200);
    assert_eq!(updated.body["meta"]["versionId"], "2");
    assert_eq!(
        get(&format!("{base}/Patient/{id}")).await.body["gender"],
        "other"
    );
    assert_eq!(
        get(&format!("{base}/Patient/{id}/_history/2")).await.status,
        200
    );
    assert_eq!(
        get(&format!("{base}/Patient/{id}/_history/1")).await.status,
        404
    );

    let mismatch = send(
        client
            .put(format!("{base}/Patient/other-id"))
            .json(&changed),
    )
    .await;
    assert_eq!(mismatch.status, 400);
    assert!(mismatch.diagnostics().contains("does not match"));

    // A new Google store does not create on PUT (enableUpdateCreate is off).
    let mut new = patient("2");
    new["id"] = json!("client-chosen");
    let put_missing = send(
        client
            .put(format!("{base}/Patient/client-chosen"))
            .json(&new),
    )
    .await;
    assert_eq!(put_missing.status, 404);
    assert_eq!(put_missing.body["issue"][0]["code"], "not-found");

    let missing = get(&format!("{base}/Patient/nope")).await;
    assert_eq!(missing.status, 404);
    assert_eq!(missing.body["resourceType"], "OperationOutcome");
    assert_eq!(missing.body["issue"][0]["code"], "not-found");

    let metadata = get(&format!("{base}/metadata")).await;
    assert_eq!(metadata.body["resourceType"], "CapabilityStatement");
    assert_eq!(metadata.body["fhirVersion"], "4.0.1");

    // `/fhir` is the same store; other store paths are separate stores.
    let plain = format!("http://{}/fhir", emulator.addr());
    assert_eq!(get(&format!("{plain}/Patient/{id}")).await.status, 200);
    let other = format!(
        "http://{}/v1/projects/p/locations/l/datasets/d/fhirStores/other/fhir",
        emulator.addr()
    );
    assert_eq!(get(&format!("{other}/Patient/{id}")).await.status, 404);
    assert_eq!(
        post(&format!("{other}/Patient"), &patient("1"))
            .await
            .status,
        201
    );
    assert_eq!(count(&stats(&emulator).await, "Patient"), 2);
    emulator.shutdown().await;
}

#[tokio::test]
async fn put_creates_only_with_enable_update_create() {
    let mut body = patient("1");
    body["id"] = json!("p1");
    let put_entry = json!({"resource": body, "request": {"method": "PUT", "url": "Patient/p1"}});
    let in_transaction =
        json!({"resourceType": "Bundle", "type": "transaction", "entry": [put_entry]});

    let google_default = start(EmulatorOptions::default()).await;
    let base = google_default.fhir_base_url();
    let client = reqwest::Client::new();
    let reply = send(client.put(format!("{base}/Patient/p1")).json(&body)).await;
    assert_eq!(reply.status, 404);
    assert_eq!(reply.body["resourceType"], "OperationOutcome");
    assert!(reply.diagnostics().contains("enableUpdateCreate"));
    let reply = post(&base, &in_transaction).await;
    assert_eq!(reply.status, 404);
    assert!(
        reply.diagnostics().starts_with("entry 0: "),
        "{}",
        reply.diagnostics()
    );
    assert!(stats(&google_default).await.resources.is_empty());
    google_default.shutdown().await;

    let update_create = start(EmulatorOptions {
        update_create: true,
        ..EmulatorOptions::default()
    })
    .await;
    let base = update_create.fhir_base_url();
    let created = send(client.put(format!("{base}/Patient/p1")).json(&body)).await;
    assert_eq!(created.status, 201);
    assert_eq!(created.body["id"], "p1");
    assert_eq!(
        created.header("location"),
        format!("{base}/Patient/p1/_history/1")
    );
    assert_eq!(created.header("etag"), "W/\"1\"");
    let again = post(&base, &in_transaction).await;
    assert_eq!(again.status, 200);
    assert_eq!(again.body["entry"][0]["response"]["status"], "200 OK");
    assert_eq!(again.body["entry"][0]["resource"]["meta"]["versionId"], "2");
    update_create.shutdown().await;
}

#[tokio::test]
async fn conditional_update_by_identifier() {
    let emulator = start(EmulatorOptions::default()).await;
    let base = emulator.fhir_base_url();
    let client = reqwest::Client::new();
    let url = format!("{base}/Patient?identifier={SID}|u1");
    let put = |body: &Value| send(client.put(&url).json(body));

    // No match and no id: created with a server id.
    let created = put(&patient("u1")).await;
    assert_eq!(created.status, 201, "{}", created.body);
    let id = created.body["id"].as_str().unwrap().to_owned();
    assert_eq!(
        created.header("location"),
        format!("{base}/Patient/{id}/_history/1")
    );
    assert_eq!(created.header("etag"), "W/\"1\"");
    assert_eq!(created.body["name"][0]["family"], "Doe");

    // One match: updated, 200, the resource in full.
    let mut changed = patient("u1");
    changed["gender"] = json!("other");
    let updated = put(&changed).await;
    assert_eq!(updated.status, 200);
    assert_eq!(updated.body["id"], id.as_str());
    assert_eq!(updated.body["meta"]["versionId"], "2");
    assert_eq!(updated.body["gender"], "other");
    assert_eq!(updated.header("etag"), "W/\"2\"");

    // A body id that is not the match's.
    changed["id"] = json!("not-the-match");
    let mismatch = put(&changed).await;
    assert_eq!(mismatch.status, 400);
    assert_eq!(mismatch.body["resourceType"], "OperationOutcome");

    // No match with an id in the body: needs enableUpdateCreate.
    let mut with_id = patient("u2");
    with_id["id"] = json!("client-u2");
    let refused = send(
        client
            .put(format!("{base}/Patient?identifier={SID}|u2"))
            .json(&with_id),
    )
    .await;
    assert_eq!(refused.status, 404);

    // Inside a transaction and a batch too.
    let entry = |value: &str| {
        json!({"resource": patient(value),
               "request": {"method": "PUT", "url": format!("Patient?identifier={SID}|{value}")}})
    };
    let transaction = json!({"resourceType": "Bundle", "type": "transaction",
                             "entry": [entry("u1"), entry("u3")]});
    let reply = post(&base, &transaction).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(reply.body["entry"][0]["response"]["status"], "200 OK");
    assert_eq!(reply.body["entry"][0]["resource"]["id"], id.as_str());
    assert_eq!(reply.body["entry"][1]["response"]["status"], "201 Created");

    // Several matches.
    post(&format!("{base}/Patient"), &patient("u1")).await;
    let ambiguous = put(&patient("u1")).await;
    assert_eq!(ambiguous.status, 412);
    let batch = json!({"resourceType": "Bundle", "type": "batch", "entry": [entry("u1")]});
    let reply = post(&base, &batch).await;
    assert_eq!(
        reply.body["entry"][0]["response"]["status"],
        "412 Precondition Failed"
    );

    // A PUT to a type needs a condition.
    let bare = send(client.put(format!("{base}/Patient")).json(&patient("u4"))).await;
    assert_eq!(bare.status, 400);
    assert_eq!(count(&stats(&emulator).await, "Patient"), 3);
    emulator.shutdown().await;
}

#[tokio::test]
async fn conditional_create_and_references() {
    let emulator = start(EmulatorOptions::default()).await;
    let base = emulator.fhir_base_url();
    let client = reqwest::Client::new();
    // A value with FHIR search separators in it, escaped and percent-encoded.
    let value = "a|b,c d";
    let condition = format!("identifier={}|a%5C%7Cb%5C%2Cc%20d", SID.replace(':', "%3A"));
    let create = || {
        client
            .post(format!("{base}/Patient"))
            .header("If-None-Exist", condition.as_str())
            .json(&patient(value))
    };
    let first = send(create()).await;
    let second = send(create()).await;
    assert_eq!((first.status, second.status), (201, 200));
    assert_eq!(first.body["id"], second.body["id"]);
    assert_eq!(first.header("location"), second.header("location"));
    assert_eq!(count(&stats(&emulator).await, "Patient"), 1);

    // A conditional reference resolves to the resource it names.
    let reference = format!(r"Patient?identifier={SID}|a\|b\,c d");
    let created = post(&format!("{base}/Encounter"), &encounter(&reference)).await;
    assert_eq!(created.status, 201, "{}", created.body);
    assert_eq!(
        created.body["subject"]["reference"],
        format!("Patient/{}", first.body["id"].as_str().unwrap())
    );
    let unmatched = post(
        &format!("{base}/Encounter"),
        &encounter(&format!("Patient?identifier={SID}|zzz")),
    )
    .await;
    assert_eq!(unmatched.status, 400);
    assert!(unmatched.diagnostics().contains("no resource matches"));

    // Two matches: the condition is ambiguous.
    post(&format!("{base}/Patient"), &patient(value)).await;
    assert_eq!(send(create()).await.status, 412);
    emulator.shutdown().await;
}

/// A patient, an encounter and an observation linked by urn:uuid, each created only if its
/// identifier is not stored yet.
fn record_bundle(n: &str) -> Value {
    let entry = |uuid: &str, resource: Value, system: &str| {
        let mut resource = resource;
        resource["identifier"] = json!([{"system": system, "value": n}]);
        json!({
            "fullUrl": format!("urn:uuid:{uuid}"),
            "resource": resource,
            "request": {
                "method": "POST",
                "url": resource["resourceType"],
                "ifNoneExist": format!("identifier={system}|{n}")
            }
        })
    };
    let patient_urn = "urn:uuid:00000000-0000-4000-8000-000000000001";
    let encounter_urn = "urn:uuid:00000000-0000-4000-8000-000000000002";
    json!({
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            entry("00000000-0000-4000-8000-000000000001", patient(n), SID),
            entry("00000000-0000-4000-8000-000000000002", encounter(patient_urn), "https://fhirgen.dev/sid/encounter"),
            entry("00000000-0000-4000-8000-000000000003", json!({
                "resourceType": "Observation",
                "status": "final",
                "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}]},
                "subject": {"reference": patient_urn},
                "encounter": {"reference": encounter_urn},
                "effectiveDateTime": "2024-01-02T10:00:00Z",
                "valueQuantity": {"value": 72, "unit": "/min", "system": "http://unitsofmeasure.org", "code": "/min"}
            }), "https://fhirgen.dev/sid/observation"),
        ]
    })
}

#[tokio::test]
async fn transactions_are_atomic_and_idempotent() {
    let emulator = start(EmulatorOptions::default()).await;
    let base = emulator.fhir_base_url();

    let first = post(&base, &record_bundle("r1")).await;
    assert_eq!(first.status, 200, "{}", first.body);
    assert_eq!(first.body["type"], "transaction-response");
    let entries = first.body["entry"].as_array().unwrap();
    assert_eq!(entries.len(), 3);
    for entry in entries {
        assert_eq!(entry["response"]["status"], "201 Created");
    }
    let patient_id = entries[0]["resource"]["id"].as_str().unwrap();
    let encounter_id = entries[1]["resource"]["id"].as_str().unwrap();
    // Locations are absolute, as the Healthcare API's are.
    assert_eq!(
        entries[0]["response"]["location"],
        format!("{base}/Patient/{patient_id}/_history/1")
    );
    assert_eq!(entries[0]["response"]["etag"], "W/\"1\"");
    assert_eq!(
        entries[0]["fullUrl"],
        format!("{base}/Patient/{patient_id}")
    );
    let observation = get(entries[2]["response"]["location"]
        .as_str()
        .unwrap()
        .split("/_history")
        .next()
        .unwrap())
    .await;
    assert_eq!(
        observation.body["subject"]["reference"],
        format!("Patient/{patient_id}")
    );
    assert_eq!(
        observation.body["encounter"]["reference"],
        format!("Encounter/{encounter_id}")
    );

    // The same transaction again finds everything and creates nothing.
    let before = stats(&emulator).await.resources;
    let second = post(&base, &record_bundle("r1")).await;
    assert_eq!(second.status, 200);
    for (entry, again) in entries.iter().zip(second.body["entry"].as_array().unwrap()) {
        assert_eq!(again["response"]["status"], "200 OK");
        assert_eq!(again["resource"]["id"], entry["resource"]["id"]);
    }
    assert_eq!(stats(&emulator).await.resources, before);

    // One bad entry and nothing at all is written.
    let mut bad = record_bundle("r2");
    bad["entry"][2]["resource"]
        .as_object_mut()
        .unwrap()
        .remove("code");
    let failed = post(&base, &bad).await;
    assert_eq!(failed.status, 400);
    assert_eq!(failed.body["resourceType"], "OperationOutcome");
    assert!(
        failed.diagnostics().starts_with("entry 2: "),
        "{}",
        failed.diagnostics()
    );
    assert_eq!(stats(&emulator).await.resources, before);

    let mut dangling = record_bundle("r3");
    dangling["entry"][1]["resource"]["participant"] =
        json!([{"individual": {"reference": "Practitioner/nope"}}]);
    let failed = post(&base, &dangling).await;
    assert_eq!(failed.status, 400);
    assert!(failed.diagnostics().contains("Practitioner/nope"));
    let mut unresolved = record_bundle("r3");
    unresolved["entry"][2]["resource"]["subject"]["reference"] =
        json!("urn:uuid:99999999-0000-4000-8000-000000000000");
    let failed = post(&base, &unresolved).await;
    assert_eq!(failed.status, 400);
    assert!(failed.diagnostics().contains("urn:uuid:9999"));
    assert_eq!(stats(&emulator).await.resources, before);

    // The answers carry the resources whatever Prefer says, as Google's do.
    let client = reqwest::Client::new();
    let minimal = send(
        client
            .post(&base)
            .header("Prefer", "return=minimal")
            .json(&record_bundle("r4")),
    )
    .await;
    assert_eq!(minimal.status, 200);
    assert_eq!(
        minimal.body["entry"][0]["resource"]["resourceType"],
        "Patient"
    );
    let single = send(
        client
            .post(format!("{base}/Patient"))
            .header("Prefer", "return=minimal")
            .json(&patient("r5")),
    )
    .await;
    assert_eq!(single.status, 201);
    assert_eq!(single.body["identifier"][0]["value"], "r5");
    emulator.shutdown().await;
}

#[tokio::test]
async fn batch_entries_succeed_or_fail_alone() {
    let emulator = start(EmulatorOptions::default()).await;
    let entry = |resource: Value| json!({"resource": resource, "request": {"method": "POST", "url": resource["resourceType"]}});
    let bundle = json!({"resourceType": "Bundle", "type": "batch", "entry": [
        entry(patient("b1")),
        entry(encounter("Patient/missing")),
        entry(patient("b2")),
    ]});
    let reply = post(&emulator.fhir_base_url(), &bundle).await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.body["type"], "batch-response");
    let statuses: Vec<&str> = reply.body["entry"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["response"]["status"].as_str().unwrap())
        .collect();
    assert_eq!(statuses, ["201 Created", "400 Bad Request", "201 Created"]);
    let outcome = &reply.body["entry"][1]["response"]["outcome"];
    assert_eq!(outcome["resourceType"], "OperationOutcome");
    assert!(
        outcome["issue"][0]["diagnostics"]
            .as_str()
            .unwrap()
            .contains("Patient/missing")
    );
    let stats = stats(&emulator).await;
    assert_eq!(
        (count(&stats, "Patient"), count(&stats, "Encounter")),
        (2, 0)
    );
    emulator.shutdown().await;
}

#[tokio::test]
async fn referential_integrity_can_be_disabled() {
    let strict = start(EmulatorOptions::default()).await;
    let reply = post(
        &format!("{}/Encounter", strict.fhir_base_url()),
        &encounter("Patient/missing"),
    )
    .await;
    assert_eq!(reply.status, 400);
    assert!(reply.diagnostics().contains("Patient/missing"));
    strict.shutdown().await;

    let lax = start(EmulatorOptions {
        referential_integrity: false,
        ..EmulatorOptions::default()
    })
    .await;
    let reply = post(
        &format!("{}/Encounter", lax.fhir_base_url()),
        &encounter("Patient/missing"),
    )
    .await;
    assert_eq!(reply.status, 201);
    lax.shutdown().await;
}

#[tokio::test]
async fn bodies_must_be_resources_of_the_path_type() {
    let emulator = start(EmulatorOptions::default()).await;
    let base = emulator.fhir_base_url();
    let mismatch = post(&format!("{base}/Patient"), &encounter("Patient/x")).await;
    assert_eq!(mismatch.status, 400);
    assert_eq!(mismatch.body["issue"][0]["code"], "invalid");
    assert!(mismatch.diagnostics().contains("does not match"));

    let unknown = post(
        &format!("{base}/Patients"),
        &json!({"resourceType": "Patients"}),
    )
    .await;
    assert_eq!(unknown.status, 400);

    let bad_gender = post(
        &format!("{base}/Patient"),
        &json!({"resourceType": "Patient", "gender": "F"}),
    )
    .await;
    assert_eq!(bad_gender.status, 400);
    assert!(bad_gender.diagnostics().contains("gender"));

    let not_json = send(
        reqwest::Client::new()
            .post(format!("{base}/Patient"))
            .body("{not json"),
    )
    .await;
    assert_eq!(not_json.status, 400);
    assert!(not_json.diagnostics().contains("JSON"));

    // Gzip-encoded bodies are accepted.
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(patient("gz").to_string().as_bytes()).unwrap();
    let gzipped = send(
        reqwest::Client::new()
            .post(format!("{base}/Patient"))
            .header("Content-Type", "application/fhir+json")
            .header("Content-Encoding", "gzip")
            .body(gz.finish().unwrap()),
    )
    .await;
    assert_eq!(gzipped.status, 201, "{}", gzipped.body);
    emulator.shutdown().await;
}

#[tokio::test]
async fn search_counts_and_pages() {
    let emulator = start(EmulatorOptions::default()).await;
    let base = emulator.fhir_base_url();
    let mut created = Vec::new();
    for i in 0..25 {
        let reply = post(&format!("{base}/Patient"), &patient(&format!("s{i}"))).await;
        created.push(reply.body["id"].as_str().unwrap().to_owned());
    }
    let total = get(&format!("{base}/Patient?_summary=count")).await;
    assert_eq!(total.body["type"], "searchset");
    assert_eq!(total.body["total"], 25);
    assert!(total.body.get("entry").is_none());

    let mut seen = Vec::new();
    let mut url = format!("{base}/Patient?_count=10");
    loop {
        let page = get(&url).await;
        assert_eq!(page.status, 200);
        for entry in page.body["entry"].as_array().into_iter().flatten() {
            seen.push(entry["resource"]["id"].as_str().unwrap().to_owned());
        }
        let next = page.body["link"]
            .as_array()
            .unwrap()
            .iter()
            .find(|l| l["relation"] == "next")
            .map(|l| l["url"].as_str().unwrap().to_owned());
        match next {
            Some(next) => url = next,
            None => break,
        }
    }
    assert_eq!(seen, created);

    let found = get(&format!("{base}/Patient?identifier={SID}|s7")).await;
    assert_eq!(found.body["total"], 1);
    assert_eq!(
        found.body["entry"][0]["resource"]["id"],
        created[7].as_str()
    );
    let by_id = get(&format!("{base}/Patient?_id={},{}", created[1], created[2])).await;
    assert_eq!(by_id.body["total"], 2);

    // Resources without identifiers are found by a meta.tag the loader puts on them.
    let provenance = |tag: &str| {
        json!({
            "resourceType": "Provenance",
            "meta": {"tag": [{"system": "https://fhirgen.dev/load", "code": tag}]},
            "target": [{"reference": format!("Patient/{}", created[0])}],
            "recorded": "2024-01-02T10:00:00Z",
            "agent": [{"who": {"display": "fhirgen"}}]
        })
    };
    for tag in ["run-1", "run-1", "run-2"] {
        let reply = post(&format!("{base}/Provenance"), &provenance(tag)).await;
        assert_eq!(reply.status, 201, "{}", reply.body);
    }
    let tagged = get(&format!(
        "{base}/Provenance?_tag=https://fhirgen.dev/load%7Crun-1&_count=1"
    ))
    .await;
    assert_eq!(tagged.status, 200, "{}", tagged.body);
    assert_eq!(tagged.body["total"], 2);
    assert_eq!(tagged.body["entry"].as_array().unwrap().len(), 1);
    let next = tagged.body["link"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["relation"] == "next")
        .expect("a next page");
    assert!(next["url"].as_str().unwrap().contains("_tag="));
    let counted = get(&format!("{base}/Provenance?_tag=run-2&_summary=count")).await;
    assert_eq!(counted.body["total"], 1);
    assert_eq!(get(&format!("{base}/Patient?name=Doe")).await.status, 400);
    assert_eq!(get(&format!("{base}/Observation")).await.body["total"], 0);
    emulator.shutdown().await;
}

#[tokio::test]
async fn bearer_token_is_checked() {
    let emulator = start(EmulatorOptions {
        require_token: Some(SecretString::new("s3cret")),
        ..EmulatorOptions::default()
    })
    .await;
    let url = format!("{}/Patient", emulator.fhir_base_url());
    let client = reqwest::Client::new();
    let missing = send(client.post(&url).json(&patient("t"))).await;
    assert_eq!(missing.status, 401);
    assert_eq!(missing.body["error"]["code"], 401);
    assert_eq!(missing.body["error"]["status"], "UNAUTHENTICATED");
    assert!(
        missing.body["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("Request had invalid authentication credentials.")
    );
    let wrong = send(client.post(&url).bearer_auth("nope").json(&patient("t"))).await;
    assert_eq!(wrong.status, 401);
    let right = send(client.post(&url).bearer_auth("s3cret").json(&patient("t"))).await;
    assert_eq!(right.status, 201);
    let stats = stats(&emulator).await;
    assert_eq!(stats.auth_failures, 2);
    assert_eq!(count(&stats, "Patient"), 1);
    emulator.shutdown().await;
}

/// Sends `n` creates one after the other and returns their statuses.
async fn create_many(emulator: &Emulator, n: usize) -> Vec<u16> {
    let url = format!("{}/Patient", emulator.fhir_base_url());
    let client = reqwest::Client::new();
    let mut statuses = Vec::with_capacity(n);
    for i in 0..n {
        let reply = send(client.post(&url).json(&patient(&format!("f{i}")))).await;
        if reply.status >= 400 {
            let expected = if reply.status == 429 {
                "RESOURCE_EXHAUSTED"
            } else {
                "UNAVAILABLE"
            };
            assert_eq!(reply.body["error"]["status"], expected);
        }
        statuses.push(reply.status);
    }
    statuses
}

#[tokio::test]
async fn faults_follow_the_rate_and_the_seed() {
    let options = EmulatorOptions {
        fault_rate: 0.3,
        fault_seed: 7,
        ..EmulatorOptions::default()
    };
    let emulator = start(options.clone()).await;
    let statuses = create_many(&emulator, 300).await;
    let faults = statuses.iter().filter(|s| **s == 429 || **s == 503).count();
    assert!((60..=120).contains(&faults), "{faults} faults in 300");
    assert!(statuses.contains(&429) && statuses.contains(&503));
    let stats = stats(&emulator).await;
    assert_eq!(stats.faults_injected, faults as u64);
    assert_eq!(stats.writes, 300);
    // A fault before writing writes nothing.
    assert_eq!(count(&stats, "Patient"), 300 - faults as u64);
    emulator.shutdown().await;

    let again = start(options).await;
    assert_eq!(create_many(&again, 300).await, statuses);
    again.shutdown().await;
}

#[tokio::test]
async fn faults_after_write_still_write() {
    let emulator = start(EmulatorOptions {
        fault_after_write_rate: 0.5,
        fault_seed: 3,
        ..EmulatorOptions::default()
    })
    .await;
    let statuses = create_many(&emulator, 200).await;
    let lost = statuses.iter().filter(|s| **s == 503).count();
    assert!((60..=140).contains(&lost), "{lost} lost answers in 200");
    assert_eq!(
        statuses.len() - lost,
        statuses.iter().filter(|s| **s == 201).count()
    );
    assert_eq!(count(&stats(&emulator).await, "Patient"), 200);
    emulator.shutdown().await;
}

fn batch_of_patients(prefix: &str, n: usize) -> Value {
    let entries: Vec<Value> = (0..n)
        .map(|i| {
            json!({"resource": patient(&format!("{prefix}{i}")),
                   "request": {"method": "POST", "url": "Patient"}})
        })
        .collect();
    json!({"resourceType": "Bundle", "type": "batch", "entry": entries})
}

fn assert_quota_refusal(reply: &Reply) {
    assert_eq!(reply.status, 429);
    assert_eq!(reply.body["error"]["code"], 429);
    assert_eq!(reply.body["error"]["status"], "RESOURCE_EXHAUSTED");
    let message = reply.body["error"]["message"].as_str().unwrap();
    assert!(
        message.starts_with("Quota exceeded for quota metric 'Number of FHIR operations'"),
        "{message}"
    );
}

#[tokio::test]
async fn quota_counts_operations_and_sends_no_retry_after() {
    let emulator = start(EmulatorOptions {
        quota_ops: 6,
        ..EmulatorOptions::default()
    })
    .await;
    let base = emulator.fhir_base_url();
    let client = reqwest::Client::new();
    assert_eq!(get(&format!("{base}/metadata")).await.status, 200);
    // Each entry of a bundle is one operation, gzipped or not.
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(batch_of_patients("q", 3).to_string().as_bytes())
        .unwrap();
    let batch = send(
        client
            .post(&base)
            .header("Content-Type", "application/fhir+json")
            .header("Content-Encoding", "gzip")
            .body(gz.finish().unwrap()),
    )
    .await;
    assert_eq!(batch.status, 200, "{}", batch.body);
    assert_eq!(count(&stats(&emulator).await, "Patient"), 3);
    // 4 of 6 used: a bundle of 3 is refused whole, writes nothing and uses nothing.
    let refused = post(&base, &batch_of_patients("r", 3)).await;
    assert_quota_refusal(&refused);
    assert!(refused.headers.get("retry-after").is_none());
    assert_eq!(count(&stats(&emulator).await, "Patient"), 3);
    let transaction = json!({"resourceType": "Bundle", "type": "transaction", "entry": [
        {"resource": patient("t1"), "request": {"method": "POST", "url": "Patient"}},
    ]});
    assert_eq!(post(&base, &transaction).await.status, 200);
    assert_eq!(get(&format!("{base}/Patient")).await.status, 200);
    assert_quota_refusal(&get(&format!("{base}/Patient")).await);
    // fhirStores.get is not a FHIR operation.
    let store = format!("http://{}/v1/{}", emulator.addr(), emulator.store_name());
    assert_eq!(get(&store).await.status, 200);

    let stats_now = stats(&emulator).await;
    assert_eq!(stats_now.quota_exceeded, 2);
    assert_eq!(stats_now.status_counts["429"], 2);
    // A reset starts a fresh window.
    send(client.post(format!("http://{}/_emulator/reset", emulator.addr()))).await;
    assert_eq!(post(&base, &batch_of_patients("s", 6)).await.status, 200);
    assert_quota_refusal(&get(&format!("{base}/metadata")).await);
    emulator.shutdown().await;
}

#[tokio::test]
async fn quota_retry_after_on_request() {
    let emulator = start(EmulatorOptions {
        quota_ops: 1,
        quota_window: Duration::from_secs(30),
        quota_retry_after: true,
        ..EmulatorOptions::default()
    })
    .await;
    let url = format!("{}/metadata", emulator.fhir_base_url());
    assert_eq!(get(&url).await.status, 200);
    let refused = get(&url).await;
    assert_quota_refusal(&refused);
    let retry_after: u64 = refused.header("retry-after").parse().unwrap();
    assert!((1..=30).contains(&retry_after), "{retry_after}");
    emulator.shutdown().await;
}

#[tokio::test]
async fn size_and_entry_limits_are_googles() {
    let emulator = start(EmulatorOptions::default()).await;
    let base = emulator.fhir_base_url();
    // 4,500 entries at most in a transaction; the whole of it is refused.
    let mut too_many = batch_of_patients("l", 4501);
    too_many["type"] = json!("transaction");
    let refused = post(&base, &too_many).await;
    assert_eq!(refused.status, 400);
    assert_eq!(refused.body["resourceType"], "OperationOutcome");
    assert!(
        refused.diagnostics().contains("4500"),
        "{}",
        refused.diagnostics()
    );
    assert!(stats(&emulator).await.resources.is_empty());

    // 10 MB for a single resource, 50 MB for executeBundle (bodies built as text: serializing
    // tens of megabytes through serde_json is slow in a debug build).
    let padded = |json_head: &str, megabytes: usize| {
        let padding = "x".repeat(megabytes * 1024 * 1024);
        format!(r#"{json_head},"implicitRules":"{padding}"}}"#)
    };
    let client = reqwest::Client::new();
    let big_patient = padded(r#"{"resourceType":"Patient""#, 11);
    let refused = send(client.post(format!("{base}/Patient")).body(big_patient)).await;
    assert_eq!(refused.status, 413);
    let bundle_head = r#"{"resourceType":"Bundle","type":"batch","entry":[]"#;
    let accepted = send(client.post(&base).body(padded(bundle_head, 11))).await;
    assert_eq!(accepted.status, 200, "{}", accepted.body);
    assert_eq!(accepted.body["type"], "batch-response");
    let refused = send(client.post(&base).body(padded(bundle_head, 51))).await;
    assert_eq!(refused.status, 413);
    emulator.shutdown().await;
}

#[tokio::test]
async fn the_store_resource_and_metadata_describe_the_emulator() {
    let google_default = start(EmulatorOptions::default()).await;
    let path = "projects/p/locations/l/datasets/d/fhirStores/s";
    let store = get(&format!("http://{}/v1/{path}", google_default.addr())).await;
    assert_eq!(store.status, 200);
    assert_eq!(store.body["name"], path);
    assert_eq!(store.body["version"], "R4");
    // False settings are left out, as in Google's JSON.
    assert!(
        store.body.get("enableUpdateCreate").is_none(),
        "{}",
        store.body
    );
    assert!(store.body.get("disableReferentialIntegrity").is_none());
    assert_eq!(store.body["disableResourceVersioning"], true);
    let metadata = get(&format!("{}/metadata", google_default.fhir_base_url())).await;
    assert_eq!(metadata.body["resourceType"], "CapabilityStatement");
    assert_eq!(metadata.body["fhirVersion"], "4.0.1");
    let patient_caps = metadata.body["rest"][0]["resource"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["type"] == "Patient")
        .unwrap()
        .clone();
    assert_eq!(patient_caps["updateCreate"], false);
    assert_eq!(patient_caps["conditionalCreate"], true);
    assert_eq!(patient_caps["conditionalUpdate"], true);
    assert_eq!(patient_caps["conditionalDelete"], "not-supported");
    let params: Vec<&str> = patient_caps["searchParam"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(params, ["_id", "identifier", "_tag"]);
    assert_eq!(
        get(&format!(
            "http://{}/v1/projects/p/locations/l",
            google_default.addr()
        ))
        .await
        .status,
        404
    );
    google_default.shutdown().await;

    let relaxed = start(EmulatorOptions {
        update_create: true,
        referential_integrity: false,
        ..EmulatorOptions::default()
    })
    .await;
    let store = get(&format!("http://{}/v1/{path}", relaxed.addr())).await;
    assert_eq!(store.body["enableUpdateCreate"], true);
    assert_eq!(store.body["disableReferentialIntegrity"], true);
    let metadata = get(&format!("{}/metadata", relaxed.fhir_base_url())).await;
    assert_eq!(
        metadata.body["rest"][0]["resource"][0]["updateCreate"],
        true
    );
    relaxed.shutdown().await;
}

#[tokio::test]
async fn max_in_flight_is_measured_and_reset_clears() {
    let emulator = start(EmulatorOptions {
        latency: Duration::from_millis(200),
        ..EmulatorOptions::default()
    })
    .await;
    let url = format!("{}/metadata", emulator.fhir_base_url());
    let mut requests = tokio::task::JoinSet::new();
    for _ in 0..8 {
        let url = url.clone();
        requests.spawn(async move { get(&url).await.status });
    }
    while let Some(status) = requests.join_next().await {
        assert_eq!(status.unwrap(), 200);
    }
    get(&url).await;
    let stats_now = stats(&emulator).await;
    assert_eq!(stats_now.max_in_flight, 8);
    assert_eq!(stats_now.in_flight, 0);
    assert_eq!(stats_now.requests, 9);

    post(
        &format!("{}/Patient", emulator.fhir_base_url()),
        &patient("x"),
    )
    .await;
    let reset =
        send(reqwest::Client::new().post(format!("http://{}/_emulator/reset", emulator.addr())))
            .await;
    assert_eq!(reset.status, 204);
    let cleared = stats(&emulator).await;
    assert_eq!((cleared.requests, cleared.max_in_flight), (0, 0));
    assert!(cleared.resources.is_empty());
    emulator.shutdown().await;
}

#[cfg(unix)]
#[test]
fn serve_prints_its_address_and_stops_on_ctrl_c() {
    use std::io::BufRead;
    use std::process::{Command, Stdio};

    let mut child = Command::new(env!("CARGO_BIN_EXE_fhirgen"))
        .args(["serve", "--port", "0"])
        .env_remove("FHIRGEN_EMULATOR_TOKEN")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let pid = child.id();
    // Never leave the server behind, whatever happens below.
    let (done, finished) = std::sync::mpsc::channel::<()>();
    let watchdog = std::thread::spawn(move || {
        if finished.recv_timeout(Duration::from_secs(30)).is_err() {
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
        }
    });
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let address = line
        .trim()
        .strip_prefix("listening on http://")
        .unwrap_or_else(|| panic!("unexpected first line: {line:?}"));
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let reply = runtime.block_on(get(&format!("http://{address}/fhir/metadata")));
    assert_eq!(reply.status, 200);
    Command::new("kill")
        .args(["-INT", &pid.to_string()])
        .status()
        .unwrap();
    let status = child.wait().unwrap();
    let _ = done.send(());
    watchdog.join().unwrap();
    assert_eq!(status.code(), Some(0));
}

#[tokio::test]
async fn the_benchmark_sink_answers_writes_without_keeping_them() {
    let emulator = start(EmulatorOptions {
        sink: true,
        ..EmulatorOptions::default()
    })
    .await;
    let base = emulator.fhir_base_url();
    let client = reqwest::Client::new();
    let created = client
        .post(format!("{base}/Patient"))
        .body(r#"{"resourceType":"Patient"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    let location = created.headers()["location"].to_str().unwrap().to_owned();
    assert!(
        location.starts_with(&format!("{base}/Patient/")),
        "{location}"
    );
    let resource: Value = created.json().await.unwrap();
    assert_eq!(resource["resourceType"], "Patient");
    assert_eq!(
        location,
        format!(
            "{base}/Patient/{}/_history/1",
            resource["id"].as_str().unwrap()
        )
    );
    let bundle = json!({"resourceType": "Bundle", "type": "transaction", "entry": [
        {"resource": {"resourceType": "Patient"}, "request": {"method": "POST", "url": "Patient"}},
        {"resource": {"resourceType": "Observation"}, "request": {"method": "POST", "url": "Observation"}},
    ]});
    let answer: Value = client
        .post(&base)
        .body(bundle.to_string())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(answer["type"], "transaction-response");
    let entries = answer["entry"].as_array().unwrap();
    assert_eq!(entries.len(), 2);
    assert!(
        entries[1]["response"]["location"]
            .as_str()
            .unwrap()
            .starts_with(&format!("{base}/Observation/"))
    );
    assert_eq!(entries[1]["resource"]["resourceType"], "Observation");
    assert_eq!(entries[1]["resource"]["meta"]["versionId"], "1");
    let stats = emulator.stats();
    assert_eq!(stats.requests, 2);
    assert!(
        stats.resources.values().all(|n| *n == 0),
        "{:?}",
        stats.resources
    );
    emulator.shutdown().await;
}
