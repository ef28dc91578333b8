//! JSON values to resources: `--failed` lines unwrapped, Bundles unpacked, a stable key for
//! every resource, and an identifier where there is none to make re-runs store nothing twice.

use std::collections::HashMap;

use serde_json::{Value, json};

use super::types;
use crate::fhir::{IDENTIFIER_SYSTEM_BASE, Resource, for_each_reference_mut};
use crate::load::failed::unwrap_failed_line;

/// The `identifier.system` given to input resources that have no identifier with a system
/// and a value; its value is the resource's key, which is the same on every run.
pub(super) fn source_key_system() -> String {
    format!("{IDENTIFIER_SYSTEM_BASE}/source-key")
}

/// Where a value was read: `label` for messages, `stable` (the path relative to the `--input`
/// folder, or the file name) for keys derived from the position, so they do not depend on the
/// current directory.
pub(super) struct Origin<'a> {
    pub label: &'a str,
    pub stable: &'a str,
    pub line: u64,
}

impl Origin<'_> {
    pub fn source(&self) -> String {
        format!("{}:{}", self.label, self.line)
    }

    /// Entries are numbered from 0, as `.entry[N]` in jq.
    pub fn entry_source(&self, entry: usize) -> String {
        format!("{}:{}#entry {entry}", self.label, self.line)
    }

    fn derived_key(&self, entry: Option<usize>) -> String {
        let name = match entry {
            Some(entry) => format!("fhirgen-input:{}:{}#entry {entry}", self.stable, self.line),
            None => format!("fhirgen-input:{}:{}", self.stable, self.line),
        };
        let uuid = uuid::Uuid::new_v5(&uuid::Uuid::NAMESPACE_URL, name.as_bytes());
        format!("urn:uuid:{uuid}")
    }
}

pub(super) enum Unpacked {
    /// A resource on its own; NDJSON neighbours that refer to each other share a record.
    Single(Resource),
    /// The entries of a transaction, batch, collection or searchset Bundle: one record.
    Entries(Vec<(Resource, String)>, Vec<BadEntry>),
    Invalid {
        message: String,
        content: Value,
    },
}

pub(super) struct BadEntry {
    pub source: String,
    pub message: String,
    pub content: Value,
}

/// Bundle types whose entries are loaded as resources of their own; other Bundles (`document`,
/// `message`, `history`...) are resources in their own right and are loaded whole.
const UNPACKED_BUNDLES: &[&str] = &["transaction", "batch", "collection", "searchset"];

pub(super) fn unpack(mut value: Value, origin: &Origin) -> Unpacked {
    if unwrap_failed_line(&value).is_some() {
        value = value["resource"].take();
    }
    if !value.is_object() {
        return Unpacked::Invalid {
            message: format!(
                "not a FHIR resource: {} is not a JSON object",
                kind_of(&value)
            ),
            content: value,
        };
    }
    let Some(resource_type) = resource_type(&value) else {
        return Unpacked::Invalid {
            message: "not a FHIR resource: no \"resourceType\"".to_owned(),
            content: value,
        };
    };
    let unpacked_bundle = resource_type == "Bundle"
        && value["type"]
            .as_str()
            .is_some_and(|t| UNPACKED_BUNDLES.contains(&t));
    if unpacked_bundle {
        return unpack_bundle(value, origin);
    }
    let key = own_key(&value, || origin.derived_key(None));
    Unpacked::Single(with_identifier(key, value))
}

fn unpack_bundle(mut bundle: Value, origin: &Origin) -> Unpacked {
    let searchset = bundle["type"] == "searchset";
    let entries = match bundle.get_mut("entry").map(Value::take) {
        Some(Value::Array(entries)) => entries,
        _ => Vec::new(),
    };
    let mut resources = Vec::with_capacity(entries.len());
    let mut bad = Vec::new();
    for (index, mut entry) in entries.into_iter().enumerate() {
        // Search results may carry an OperationOutcome about the search: not data.
        if searchset && entry["search"]["mode"] == "outcome" {
            continue;
        }
        let resource = entry.get_mut("resource").map(Value::take);
        let problem = match &resource {
            Some(resource) if !resource.is_object() => "its resource is not a JSON object",
            Some(resource) if resource_type(resource).is_none() => {
                "its resource has no \"resourceType\""
            }
            Some(_) => "",
            None => "it has no resource",
        };
        let (Some(resource), "") = (resource, problem) else {
            bad.push(BadEntry {
                source: origin.entry_source(index),
                message: format!("not a FHIR resource: Bundle entry {index}: {problem}"),
                content: entry,
            });
            continue;
        };
        let key = match entry["fullUrl"].as_str().filter(|url| !url.is_empty()) {
            Some(url) => url.to_owned(),
            None => own_key(&resource, || origin.derived_key(Some(index))),
        };
        resources.push((with_identifier(key, resource), origin.entry_source(index)));
    }
    resolve_relative_references(&mut resources);
    Unpacked::Entries(resources, bad)
}

/// A relative reference (`Medication/x`) inside a Bundle means the entry whose RESTful fullUrl
/// ends with it (`https://example.com/base/Medication/x`): point it at that fullUrl, the key
/// the loader knows the entry by.
fn resolve_relative_references(resources: &mut [(Resource, String)]) {
    let by_relative: HashMap<String, String> = resources
        .iter()
        .filter_map(|(resource, _)| {
            let relative = restful_tail(&resource.key)?;
            Some((relative.to_owned(), resource.key.clone()))
        })
        .collect();
    if by_relative.is_empty() {
        return;
    }
    for (resource, _) in resources.iter_mut() {
        for_each_reference_mut(&mut resource.body, &mut |reference| {
            if let Some(full_url) = by_relative.get(reference.as_str()) {
                reference.clone_from(full_url);
            }
        });
    }
}

/// `Type/id` at the end of an absolute http(s) URL.
fn restful_tail(url: &str) -> Option<&str> {
    if !(url.starts_with("http://") || url.starts_with("https://")) {
        return None;
    }
    let mut slashes = url.rmatch_indices('/').map(|(i, _)| i);
    let _ = slashes.next()?;
    let start = slashes.next()? + 1;
    let tail = &url[start..];
    tail.starts_with(|c: char| c.is_ascii_uppercase())
        .then_some(tail)
}

fn resource_type(value: &Value) -> Option<&str> {
    value["resourceType"].as_str().filter(|t| !t.is_empty())
}

/// The key of a resource that is not a Bundle entry: the source key it was given when it was
/// read before (a `--failed` line fed back), else `Type/id`, else one derived from its place.
fn own_key(body: &Value, derived: impl FnOnce() -> String) -> String {
    let is_source_key = |system: &str| {
        system
            .strip_prefix(IDENTIFIER_SYSTEM_BASE)
            .is_some_and(|rest| rest == "/source-key")
    };
    let recorded = body["identifier"].as_array().and_then(|ids| {
        ids.iter()
            .find(|id| id["system"].as_str().is_some_and(is_source_key))
            .and_then(|id| id["value"].as_str())
    });
    if let Some(key) = recorded {
        return key.to_owned();
    }
    match body["id"].as_str().filter(|id| !id.is_empty()) {
        Some(id) => format!("{}/{id}", body["resourceType"].as_str().unwrap_or_default()),
        None => derived(),
    }
}

/// The resource, with an identifier holding its key when it has none with a system and a
/// value (and its type allows a list of them), so that creates can be made conditional.
fn with_identifier(key: String, mut body: Value) -> Resource {
    let allowed = body["resourceType"]
        .as_str()
        .is_some_and(types::has_identifier_list);
    if allowed {
        let source_key = || json!({"system": source_key_system(), "value": key});
        match body.get_mut("identifier") {
            None => body["identifier"] = json!([source_key()]),
            Some(Value::Array(ids)) => {
                let usable = ids
                    .iter()
                    .any(|id| id["system"].is_string() && id["value"].is_string());
                if !usable {
                    ids.push(source_key());
                }
            }
            Some(_) => {}
        }
    }
    Resource { key, body }
}

fn kind_of(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn origin() -> Origin<'static> {
        Origin {
            label: "dir/in.ndjson",
            stable: "in.ndjson",
            line: 7,
        }
    }

    fn single(value: Value) -> Resource {
        match unpack(value, &origin()) {
            Unpacked::Single(resource) => resource,
            _ => panic!("not a single resource"),
        }
    }

    #[test]
    fn identifier_added_only_where_missing_and_allowed() {
        let observation = single(json!({"resourceType": "Observation", "id": "o1"}));
        assert_eq!(observation.key, "Observation/o1");
        assert_eq!(
            observation.body["identifier"],
            json!([{"system": "https://fhirgen.dev/sid/source-key", "value": "Observation/o1"}])
        );
        assert_eq!(
            observation.conditional_query().as_deref(),
            Some("identifier=https://fhirgen.dev/sid/source-key|Observation/o1")
        );

        let role = single(json!({
            "resourceType": "PractitionerRole", "id": "r",
            "identifier": [{"value": "no system"}]
        }));
        assert_eq!(role.body["identifier"].as_array().unwrap().len(), 2);

        let patient = json!({
            "resourceType": "Patient", "id": "p",
            "identifier": [{"system": "https://x", "value": "1"}]
        });
        assert_eq!(single(patient.clone()).body, patient);

        let provenance = json!({"resourceType": "Provenance", "id": "v"});
        assert_eq!(single(provenance.clone()).body, provenance);
    }

    #[test]
    fn keys_without_ids_come_from_the_place() {
        let a = single(json!({"resourceType": "Observation"}));
        let b = single(json!({"resourceType": "Observation"}));
        assert!(a.key.starts_with("urn:uuid:"));
        assert_eq!(a.key, b.key);
        let elsewhere = Origin {
            line: 8,
            ..origin()
        };
        let Unpacked::Single(c) = unpack(json!({"resourceType": "Observation"}), &elsewhere) else {
            panic!()
        };
        assert_ne!(a.key, c.key);
        // Read back from a --failed file, it keeps the key it was given.
        let again = single(json!({
            "resource": a.body.clone(),
            "failure": {"message": "503", "source": "dir/in.ndjson:7"}
        }));
        assert_eq!(again.key, a.key);
        assert_eq!(again.body, a.body);
    }

    #[test]
    fn not_resources() {
        for (value, message) in [
            (
                json!([1]),
                "not a FHIR resource: an array is not a JSON object",
            ),
            (
                json!({"id": "x"}),
                "not a FHIR resource: no \"resourceType\"",
            ),
            (
                json!({"resource": 3, "failure": {}}),
                "not a FHIR resource: no \"resourceType\"",
            ),
        ] {
            match unpack(value, &origin()) {
                Unpacked::Invalid { message: m, .. } => assert_eq!(m, message),
                _ => panic!("{message}"),
            }
        }
    }

    #[test]
    fn bundles_are_unpacked_by_type() {
        let bundle = json!({
            "resourceType": "Bundle", "type": "searchset",
            "entry": [
                {"fullUrl": "https://example.com/base/MedicationRequest/1",
                 "resource": {"resourceType": "MedicationRequest", "id": "1",
                              "medicationReference": {"reference": "Medication/m"}},
                 "search": {"mode": "match"}},
                {"fullUrl": "https://example.com/base/Medication/m",
                 "resource": {"resourceType": "Medication", "id": "m"},
                 "search": {"mode": "include"}},
                {"resource": {"resourceType": "OperationOutcome"}, "search": {"mode": "outcome"}},
                {"resource": {"resourceType": "Observation", "id": "o"},
                 "request": {"method": "POST", "url": "Observation"}},
                {"resource": {"resourceType": "Observation"}},
                {"request": {"method": "DELETE", "url": "Patient/1"}}
            ]
        });
        let Unpacked::Entries(resources, bad) = unpack(bundle, &origin()) else {
            panic!("not unpacked")
        };
        let keys: Vec<&str> = resources.iter().map(|(r, _)| r.key.as_str()).collect();
        assert_eq!(
            keys[..3],
            [
                "https://example.com/base/MedicationRequest/1",
                "https://example.com/base/Medication/m",
                "Observation/o"
            ]
        );
        assert!(keys[3].starts_with("urn:uuid:"));
        assert_eq!(
            resources[0].0.body["medicationReference"]["reference"],
            keys[1]
        );
        assert_eq!(resources[3].1, "dir/in.ndjson:7#entry 4");
        assert!(
            resources
                .iter()
                .all(|(r, _)| r.body.get("request").is_none())
        );
        assert_eq!(bad.len(), 1);
        assert_eq!(bad[0].source, "dir/in.ndjson:7#entry 5");

        let document =
            json!({"resourceType": "Bundle", "id": "d", "type": "document", "entry": []});
        let resource = single(document.clone());
        assert_eq!(
            (resource.key.as_str(), resource.body),
            ("Bundle/d", document)
        );
    }
}
