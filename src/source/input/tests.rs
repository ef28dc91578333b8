use std::collections::HashMap;
use std::io::{Cursor, Write};

use serde_json::{Value, json};

use super::*;

/// What reading yields, flattened for assertions.
#[derive(Debug)]
struct Read {
    records: Vec<(Record, Vec<String>)>,
    invalid: Vec<(String, String, Value)>,
}

impl Read {
    fn resources(&self) -> impl Iterator<Item = &Resource> {
        self.records.iter().flat_map(|(r, _)| &r.resources)
    }

    fn sizes(&self) -> Vec<usize> {
        self.records
            .iter()
            .map(|(r, _)| r.resources.len())
            .collect()
    }

    fn kinds(&self) -> Vec<RecordKind> {
        self.records.iter().map(|(r, _)| r.kind).collect()
    }
}

fn collect(items: impl Iterator<Item = SourceItem>) -> Read {
    let mut read = Read {
        records: Vec::new(),
        invalid: Vec::new(),
    };
    for item in items {
        match item {
            SourceItem::Record { record, sources } => {
                let sources = sources.expect("input records say where they come from");
                assert_eq!(sources.len(), record.resources.len());
                read.records.push((record, sources));
            }
            SourceItem::Invalid {
                source,
                message,
                content,
            } => read.invalid.push((source, message, content)),
        }
    }
    read
}

fn read_path(path: &Path) -> Read {
    collect(open(path).expect("opens").items)
}

fn read_text(label: &str, text: &[u8]) -> Read {
    let bytes = read::decompressed(Cursor::new(text.to_vec()));
    let mut file = FileItems::new(label.to_owned(), bytes);
    collect(std::iter::from_fn(move || file.next()))
}

#[path = "../../../tests/data/samples.rs"]
mod samples;
use samples::{bundled, unlicensed};

/// A source key is a bare UUID: never a `urn:uuid:` or anything else a server rewrites.
fn assert_is_source_key(key: &str) {
    assert!(uuid::Uuid::try_parse(key).is_ok(), "{key:?}");
    assert_eq!(key.len(), 36, "{key:?}");
}

fn lines(resources: &[Value]) -> Vec<u8> {
    let mut out = Vec::new();
    for resource in resources {
        serde_json::to_writer(&mut out, resource).unwrap();
        out.push(b'\n');
    }
    out
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(bytes).unwrap();
    gz.finish().unwrap()
}

/// Literal references (not `#contained`, not `Type?search`).
fn literal_references(body: &Value) -> Vec<String> {
    crate::fhir::references(body)
        .into_iter()
        .filter(|r| !r.starts_with('#') && !r.contains('?'))
        .collect()
}

#[test]
fn synthea_bundles_shared_first_then_patients() {
    let dir = unlicensed("synthea-bundles");
    let read = read_path(&dir);
    assert!(read.invalid.is_empty(), "{:?}", read.invalid);
    use RecordKind::{Patient, Shared};
    assert_eq!(read.kinds(), [Shared, Shared, Patient, Patient, Patient]);
    // hospitalInformation, practitionerInformation, then the patients by file name:
    // Andreas188, Ken316, Philip822.
    assert_eq!(read.sizes(), [68, 68, 269, 379, 253]);
    let (hospitals, sources) = &read.records[0];
    assert_eq!(hospitals.resources[0].resource_type(), "Organization");
    assert!(sources[0].ends_with("hospitalInformation1625487628939.json:1#entry 0"));
    assert!(sources[67].ends_with("#entry 67"));

    // Keys are the fullUrls; resources keep their own identifiers first, and those without
    // one (the PractitionerRoles) get a source key from their content: never the fullUrl.
    for resource in read.resources() {
        assert!(resource.key.starts_with("urn:uuid:"), "{}", resource.key);
        let query = resource.conditional_query().unwrap_or_default();
        match resource.resource_type() {
            "Provenance" => {
                assert!(resource.to_value().get("identifier").is_none());
                let tag = &resource.to_value()["meta"]["tag"][0];
                assert_eq!(tag["system"], "https://fhirgen.dev/sid/source-key");
                assert_is_source_key(tag["code"].as_str().unwrap_or_default());
            }
            "PractitionerRole" => {
                let key = query
                    .strip_prefix("identifier=https://fhirgen.dev/sid/source-key|")
                    .unwrap_or_default();
                assert_is_source_key(key);
            }
            "Practitioner" => {
                assert!(query.starts_with("identifier=http://hl7.org/fhir/sid/us-npi|"))
            }
            _ => assert!(!query.is_empty(), "{}", resource.key),
        }
    }
    // The patient's references to shared resources (by identifier) resolve against what the
    // shared records will publish.
    let published: HashSet<String> = read.records[..2]
        .iter()
        .flat_map(|(r, _)| &r.resources)
        .filter_map(Resource::conditional_reference)
        .collect();
    for (record, _) in &read.records[2..] {
        for reference in record
            .resources
            .iter()
            .flat_map(|r| crate::fhir::references(&r.to_value()))
        {
            if reference.contains('?') {
                assert!(published.contains(&reference), "{reference}");
            }
        }
    }
}

#[test]
fn bulk_export_references_point_backwards() {
    let dir = unlicensed("bulk-ndjson/ktmtwm-sytheadata");
    let read = read_path(&dir);
    assert!(read.invalid.is_empty(), "{:?}", read.invalid);
    assert_eq!(read.kinds()[..2], [RecordKind::Shared, RecordKind::Shared]);
    assert!(read.kinds()[2..].iter().all(|k| *k == RecordKind::Patient));
    let all: Vec<&Resource> = read.resources().collect();
    assert_eq!(all[16].resource_type(), "Patient");
    assert_eq!(read.records[2].0.resources[0].resource_type(), "Patient");
    assert_eq!(all.last().unwrap().resource_type(), "Provenance");

    let ndjson_lines: usize = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "ndjson"))
        .map(|p| std::fs::read_to_string(p).unwrap().lines().count())
        .sum();
    assert_eq!(all.len(), 16 + ndjson_lines);

    let position: HashMap<&str, usize> = all
        .iter()
        .enumerate()
        .map(|(i, r)| (r.key.as_str(), i))
        .collect();
    let mut checked = HashSet::new();
    for (i, resource) in all.iter().enumerate() {
        for reference in literal_references(&resource.to_value()) {
            let target = position.get(reference.as_str());
            assert!(
                target.is_some_and(|t| *t < i),
                "{} refers to {reference}, which does not come before it",
                resource.key
            );
            checked.insert(reference);
        }
    }
    assert_eq!(checked.len(), 988);
    // Bulk per-type lines each refer to the Patient of another file: a record each.
    assert!(read.sizes()[2..].iter().all(|n| *n == 1));
}

#[test]
fn smart_patients_before_what_refers_to_them() {
    let dir = bundled("smart-10-patients");
    let read = read_path(&dir);
    assert!(read.invalid.is_empty(), "{:?}", read.invalid);
    let types: Vec<&str> = read.resources().map(Resource::resource_type).collect();
    assert_eq!(types.len(), 13 + 11 + 16);
    let last_patient = types.iter().rposition(|t| *t == "Patient").unwrap();
    let first_other = types.iter().position(|t| *t != "Patient").unwrap();
    assert!(last_patient < first_other);
    let keys: HashSet<&str> = read.resources().map(|r| r.key.as_str()).collect();
    for resource in read.resources() {
        for reference in literal_references(&resource.to_value()) {
            assert!(keys.contains(reference.as_str()), "{reference}");
        }
    }
}

#[test]
fn hl7_examples_each_read_as_specified() {
    let dir = bundled("hl7-examples");
    // Resources per file. A Bundle is one record, unless it refers out of the data set: then
    // its entries wait for that apart, each after what it refers to.
    let expected: &[(&str, usize)] = &[
        ("bundle-example.json", 2),
        ("diagnosticreport-hla-genetics-results-example.json", 22),
        ("document-example-dischargesummary.json", 1),
        ("encounter-example.json", 1),
        ("observation-example-bloodpressure.json", 1),
        ("observation-example.json", 1),
        ("organization-example.json", 1),
        ("patient-example.json", 1),
        ("patient-examples-general.json", 12),
        ("practitioner-example.json", 1),
        ("xds-example.json", 5),
    ];
    for (name, count) in expected {
        let read = read_path(&dir.join(name));
        assert!(read.invalid.is_empty(), "{name}: {:?}", read.invalid);
        assert_eq!(read.resources().count(), *count, "{name}");
    }

    let document = read_path(&dir.join("document-example-dischargesummary.json"));
    let bundle = &document.records[0].0.resources[0];
    assert_eq!(bundle.key, "Bundle/father");
    assert_eq!(bundle.to_value()["type"], "document");
    assert!(bundle.to_value()["identifier"].is_object());

    let patients = read_path(&dir.join("patient-examples-general.json"));
    assert!(patients.resources().all(|r| r.resource_type() == "Patient"));
    assert!(
        patients
            .resources()
            .any(|r| r.key == "http://hl7.org/fhir/Patient/1")
    );

    let xds = read_path(&dir.join("xds-example.json"));
    let binary = xds
        .resources()
        .find(|r| r.resource_type() == "Binary")
        .unwrap();
    assert!(binary.to_value().get("identifier").is_none());

    let search = read_path(&dir.join("bundle-example.json"));
    let request = search
        .resources()
        .find(|r| r.resource_type() == "MedicationRequest")
        .unwrap();
    assert_eq!(
        request.to_value()["medicationReference"]["reference"],
        "https://example.com/base/Medication/example"
    );

    // The folder: what is referred to first (the examples refer out of the set too: those
    // go once everything else has).
    let read = read_path(&dir);
    assert!(read.invalid.is_empty(), "{:?}", read.invalid);
    let keys: HashSet<&str> = read.resources().map(|r| r.key.as_str()).collect();
    let mut before = HashSet::new();
    for (record, _) in &read.records {
        // A record goes whole (one transaction): inside it, references may point anywhere.
        before.extend(record.resources.iter().map(|r| r.key.as_str()));
        for resource in &record.resources {
            for reference in literal_references(&resource.to_value()) {
                assert!(
                    before.contains(reference.as_str()) || !keys.contains(reference.as_str()),
                    "{} refers to {reference}, which does not come before it",
                    resource.key
                );
            }
        }
    }
    assert_eq!(read.resources().count(), 2 + 22 + 1 + 5 + 5 + 12 + 1);
}

#[test]
fn gzip_files_whatever_their_name() {
    let dir = tempfile::tempdir().unwrap();
    let text = lines(&[
        json!({"resourceType": "Patient", "id": "p"}),
        json!({"resourceType": "Encounter", "id": "e", "subject": {"reference": "Patient/p"}}),
    ]);
    std::fs::write(dir.path().join("export.bin"), gzip(&text)).unwrap();
    let read = read_path(&dir.path().join("export.bin"));
    assert!(read.invalid.is_empty(), "{:?}", read.invalid);
    assert_eq!(read.sizes(), [2]);
    assert!(read.records[0].1[1].ends_with("export.bin:2"));
}

#[test]
fn truncated_gzip_is_reported_and_the_next_file_still_loads() {
    let dir = tempfile::tempdir().unwrap();
    let many: Vec<Value> = (0..2000)
        .map(|i| json!({"resourceType": "Patient", "id": format!("p{i}"), "note": "x".repeat(40 + i % 7)}))
        .collect();
    let compressed = gzip(&lines(&many));
    std::fs::write(
        dir.path().join("a.ndjson.gz"),
        &compressed[..compressed.len() / 2],
    )
    .unwrap();
    std::fs::write(
        dir.path().join("b.ndjson"),
        lines(&[json!({"resourceType": "Patient", "id": "b"})]),
    )
    .unwrap();
    let read = read_path(dir.path());
    assert_eq!(read.invalid.len(), 1, "{:?}", read.invalid);
    let (source, message, _) = &read.invalid[0];
    assert!(source.contains("a.ndjson.gz:"), "{source}");
    assert!(message.starts_with("read error"), "{message}");
    assert!(message.contains("a.ndjson.gz is skipped"), "{message}");
    let keys: Vec<&str> = read.resources().map(|r| r.key.as_str()).collect();
    assert!(keys.len() > 1 && keys.len() < 2001);
    assert_eq!(keys.last(), Some(&"Patient/b"));
}

#[test]
fn nested_folders_in_a_stable_dependency_order() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    for sub in ["a/b", "z", ".git"] {
        std::fs::create_dir_all(root.join(sub)).unwrap();
    }
    let write =
        |path: &str, values: &[Value]| std::fs::write(root.join(path), lines(values)).unwrap();
    write(
        "z/Observation.ndjson",
        &[json!({"resourceType": "Observation", "id": "o", "subject": {"reference": "Patient/p"}})],
    );
    write(
        "a/b/Patient.000.ndjson",
        &[json!({"resourceType": "Patient", "id": "p"})],
    );
    write(
        "Organization.ndjson",
        &[json!({"resourceType": "Organization", "id": "org"})],
    );
    write(
        "a/patient-bundle.json",
        &[
            json!({"resourceType": "Bundle", "type": "transaction", "entry": [
                {"fullUrl": "urn:uuid:0b8d5d38-5c3e-4a4e-9d43-1c4cf0d6e0a1",
                 "resource": {"resourceType": "Patient"}}
            ]}),
        ],
    );
    write(".git/Patient.ndjson", &[json!({"hidden": true})]);
    std::fs::write(
        root.join("z/Encounter.ndjson.gz"),
        gzip(&lines(&[
            json!({"resourceType": "Encounter", "id": "e", "subject": {"reference": "Patient/p"}}),
        ])),
    )
    .unwrap();

    let first = read_path(root);
    assert!(first.invalid.is_empty(), "{:?}", first.invalid);
    let keys: Vec<&str> = first.resources().map(|r| r.key.as_str()).collect();
    assert_eq!(
        keys,
        [
            "Organization/org",
            "Patient/p",
            "Encounter/e",
            "Observation/o",
            "urn:uuid:0b8d5d38-5c3e-4a4e-9d43-1c4cf0d6e0a1"
        ]
    );
    let again = read_path(root);
    assert_eq!(
        first.resources().collect::<Vec<_>>(),
        again.resources().collect::<Vec<_>>()
    );
}

#[test]
fn pretty_json_documents() {
    let bundle = json!({"resourceType": "Bundle", "type": "transaction", "entry": [
        {"fullUrl": "urn:uuid:0b8d5d38-5c3e-4a4e-9d43-1c4cf0d6e0a1",
         "resource": {"resourceType": "Patient", "name": [{"family": "Brace}{"}]},
         "request": {"method": "POST", "url": "Patient"}},
        {"fullUrl": "urn:uuid:7c393185-f15c-45bc-a714-c0fdbea32675",
         "resource": {"resourceType": "Encounter",
                      "subject": {"reference": "urn:uuid:0b8d5d38-5c3e-4a4e-9d43-1c4cf0d6e0a1"}},
         "request": {"method": "POST", "url": "Encounter"}}
    ]});
    let mut text = serde_json::to_vec_pretty(&bundle).unwrap();
    let first_lines = text.iter().filter(|&&b| b == b'\n').count() + 1;
    text.extend_from_slice(b"\n");
    // `jq .` output: pretty resources one after the other.
    text.extend(serde_json::to_vec_pretty(&json!({"resourceType": "Patient", "id": "q"})).unwrap());
    text.extend_from_slice(b"\n");
    text.extend(
        serde_json::to_vec_pretty(&json!({"resourceType": "Observation", "id": "o",
        "subject": {"reference": "Patient/q"}}))
        .unwrap(),
    );

    let read = read_text("pretty.json", &text);
    assert!(read.invalid.is_empty(), "{:?}", read.invalid);
    assert_eq!(read.sizes(), [2, 2]);
    assert_eq!(
        read.records[0].1,
        ["pretty.json:1#entry 0", "pretty.json:1#entry 1"]
    );
    let second = first_lines + 1;
    assert_eq!(
        read.records[1].1,
        [
            format!("pretty.json:{second}"),
            format!("pretty.json:{}", second + 4)
        ]
    );
    let encounter = &read.records[0].0.resources[1];
    assert!(encounter.to_value().get("request").is_none());
    assert_eq!(
        encounter.to_value()["subject"]["reference"],
        "urn:uuid:0b8d5d38-5c3e-4a4e-9d43-1c4cf0d6e0a1"
    );
}

#[test]
fn ndjson_of_bundles() {
    let bundle = |n: u32| {
        json!({"resourceType": "Bundle", "type": "transaction", "entry": [
            {"fullUrl": format!("urn:uuid:00000000-0000-4000-8000-00000000000{n}"),
             "resource": {"resourceType": "Patient"}, "request": {"method": "POST", "url": "Patient"}},
            {"fullUrl": format!("urn:uuid:00000000-0000-4000-8000-00000000010{n}"),
             "resource": {"resourceType": "Organization"}, "request": {"method": "POST", "url": "Organization"}}
        ]})
    };
    let read = read_text("-", &lines(&[bundle(1), bundle(2)]));
    assert_eq!(read.sizes(), [2, 2]);
    assert_eq!(read.kinds(), [RecordKind::Patient, RecordKind::Patient]);
    assert_eq!(read.records[1].1, ["-:2#entry 0", "-:2#entry 1"]);
}

#[test]
fn failed_lines_are_read_as_their_resource() {
    let text = lines(&[json!({
        "resource": {"resourceType": "Observation", "id": "o"},
        "failure": {"status": 422, "message": "bad code", "source": "in.ndjson:4"}
    })]);
    let read = read_text("failed.ndjson", &text);
    assert!(read.invalid.is_empty(), "{:?}", read.invalid);
    let resource = read.resources().next().unwrap();
    assert_eq!(resource.key, "Observation/o");
    assert!(resource.to_value().get("failure").is_none());
}

#[test]
fn bad_lines_are_reported_where_they_are_and_the_rest_loads() {
    let text = b"{\"resourceType\":\"Patient\",\"id\":\"a\"}\n\
        \n\
        not json\n\
        [1, 2]\n\
        {\"id\": \"no type\"}\n\
        {\"resourceType\":\"Patient\",\"id\":\"b\"}\n\
        \r\n\
        {\"resourceType\":\"Patient\",\n";
    let read = read_text("in.ndjson", text);
    let keys: Vec<&str> = read.resources().map(|r| r.key.as_str()).collect();
    assert_eq!(keys, ["Patient/a", "Patient/b"]);
    assert_eq!(read.records[1].1, ["in.ndjson:6"]);
    let invalid: Vec<(&str, &str)> = read
        .invalid
        .iter()
        .map(|(s, m, _)| (s.as_str(), m.as_str()))
        .collect();
    assert_eq!(
        invalid,
        [
            ("in.ndjson:3", "not JSON: expected ident at column 2"),
            (
                "in.ndjson:4",
                "not a FHIR resource: an array is not a JSON object; to load a JSON array of \
                 resources, make it NDJSON first: jq -c '.[]' FILE > FILE.ndjson"
            ),
            ("in.ndjson:5", "not a FHIR resource: no \"resourceType\""),
            (
                "in.ndjson:8",
                "not JSON: EOF while parsing a value at column 26"
            ),
        ]
    );
    assert_eq!(read.invalid[0].2, "not json");
    assert_eq!(read.invalid[1].2, json!([1, 2]));
}

#[test]
fn missing_path_is_a_usage_error() {
    let Err(error) = open(Path::new("/no/such/place.ndjson")) else {
        panic!("opened a missing path")
    };
    assert!(error.downcast_ref::<crate::exit::UsageError>().is_some());
    assert_eq!(
        error.to_string(),
        "--input /no/such/place.ndjson: no such file or directory"
    );
    let empty = tempfile::tempdir().unwrap();
    assert!(open(empty.path()).is_err());
}

#[test]
fn source_keys_are_the_same_under_any_name() {
    let dir = tempfile::tempdir().unwrap();
    let values = [
        json!({"resourceType": "Observation", "status": "final"}),
        json!({"resourceType": "Observation", "status": "amended"}),
        json!({"resourceType": "Provenance"}),
    ];
    std::fs::write(dir.path().join("Observation.ndjson"), lines(&values)).unwrap();
    std::fs::create_dir(dir.path().join("elsewhere")).unwrap();
    let renamed = dir.path().join("elsewhere/export-2.json.gz");
    let mut shuffled = values.to_vec();
    shuffled.reverse();
    std::fs::write(&renamed, gzip(&lines(&shuffled))).unwrap();
    let keys = |read: Read| -> Vec<String> {
        let mut keys: Vec<String> = read.resources().map(|r| r.key.clone()).collect();
        keys.sort();
        keys
    };
    let first = keys(read_path(&dir.path().join("Observation.ndjson")));
    assert_eq!(first.len(), 3);
    assert_ne!(first[0], first[1]);
    assert_eq!(keys(read_path(&renamed)), first);
    assert_eq!(keys(read_text("-", &lines(&values))), first);

    let read = read_path(&renamed);
    for resource in read.resources() {
        let (_, key) = resource.key.split_once('/').unwrap();
        assert_is_source_key(key);
        match resource.resource_type() {
            "Provenance" => assert_eq!(resource.to_value()["meta"]["tag"][0]["code"], key),
            _ => assert_eq!(resource.to_value()["identifier"][0]["value"], key),
        }
    }
}

#[test]
fn bulk_exports_in_any_order_read_in_dependency_order() {
    for dir in [
        unlicensed("bulk-ndjson/ktmtwm-sytheadata"),
        bundled("smart-10-patients"),
    ] {
        let in_order: Vec<Resource> = read_path(&dir).resources().cloned().collect();
        let keys: HashSet<&str> = in_order.iter().map(|r| r.key.as_str()).collect();
        // Every file's lines in reverse, the files in alphabetical order (as `cat *` has
        // them), then shuffled; each through a spill bound of nothing and of plenty.
        let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "ndjson"))
            .collect();
        files.sort();
        let mut alphabetical: Vec<String> = Vec::new();
        for file in &files {
            alphabetical.extend(
                std::fs::read_to_string(file)
                    .unwrap()
                    .lines()
                    .map(str::to_owned),
            );
        }
        let mut reversed = alphabetical.clone();
        reversed.reverse();
        let mut shuffled = alphabetical.clone();
        let mut state = 7u64;
        for i in (1..shuffled.len()).rev() {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            shuffled.swap(i, (state >> 33) as usize % (i + 1));
        }
        for (order, lines) in [
            ("alphabetical", &alphabetical),
            ("reversed", &reversed),
            ("shuffled", &shuffled),
        ] {
            for memory in [0, defer::DEFAULT_MEMORY] {
                let text = lines.join("\n");
                let bytes = read::decompressed(Cursor::new(text.into_bytes()));
                let file = FileItems::new("-".to_owned(), bytes);
                let items = InputItems {
                    inputs: Vec::new().into_iter(),
                    current: Some(file),
                };
                let read = collect(defer::InOrder::new(items, memory));
                assert!(read.invalid.is_empty(), "{:?}", read.invalid);
                let all: Vec<&Resource> = read.resources().collect();
                let what = format!("{} {order} {memory}", dir.display());
                let ndjson_resources = in_order
                    .iter()
                    .filter(|r| !r.key.starts_with("urn:uuid:"))
                    .count();
                assert_eq!(all.len(), ndjson_resources, "{what}");
                let mut before = HashSet::new();
                for resource in &all {
                    for reference in literal_references(&resource.to_value()) {
                        assert!(
                            before.contains(reference.as_str())
                                || !keys.contains(reference.as_str()),
                            "{what}: {} refers to {reference}, which does not come before it",
                            resource.key
                        );
                    }
                    before.insert(resource.key.as_str());
                }
            }
        }
    }
}

#[test]
fn generated_ndjson_groups_each_patients_lines() {
    let mut values = vec![
        json!({"resourceType": "Organization", "id": "o1"}),
        json!({"resourceType": "Practitioner", "id": "d1"}),
    ];
    for p in 0..2 {
        values.push(json!({"resourceType": "Patient", "id": format!("p{p}"),
            "generalPractitioner": [{"reference": "Practitioner/d1"}]}));
        values.push(json!({"resourceType": "Encounter", "id": format!("e{p}"),
            "subject": {"reference": format!("Patient/p{p}")},
            "serviceProvider": {"reference": "Organization/o1"}}));
        values.push(json!({"resourceType": "Observation", "id": format!("x{p}"),
            "encounter": {"reference": format!("Encounter/e{p}")}}));
    }
    let read = read_text("gen.ndjson", &lines(&values));
    assert_eq!(read.sizes(), [2, 3, 3]);
    assert_eq!(
        read.kinds(),
        [RecordKind::Shared, RecordKind::Patient, RecordKind::Patient]
    );

    let many: Vec<Value> = std::iter::once(json!({"resourceType": "Patient", "id": "p"}))
        .chain((0..600).map(|i| {
            json!({"resourceType": "Observation", "id": format!("o{i}"), "subject": {"reference": "Patient/p"}})
        }))
        .collect();
    let read = read_text("big.ndjson", &lines(&many));
    // Cut at the cap; what follows still refers to the patient, and carries on together.
    assert_eq!(read.sizes(), [500, 101]);
}

#[test]
fn references_by_urn_uuid_join_the_resource_with_that_id() {
    let id = "0b8d5d38-5c3e-4a4e-9d43-1c4cf0d6e0a1";
    let read = read_text(
        "refed.ndjson",
        &lines(&[
            json!({"resourceType": "Patient", "id": id}),
            json!({"resourceType": "Encounter", "subject": {"reference": format!("urn:uuid:{id}")}}),
        ]),
    );
    assert_eq!(read.sizes(), [2]);
}
