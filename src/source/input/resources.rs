//! JSON values to resources: `--failed` lines unwrapped, Bundles unpacked, a key for every
//! resource, and a source key (an identifier, or a tag where no identifier fits) that depends
//! only on the resource's content, so that re-runs store nothing twice whatever the file name.

use std::collections::HashMap;

use serde_json::{Value, json};

use super::types;
use crate::failed::unwrap_failed_line;
use crate::fhir::{
    Resource, SOURCE_KEY_SYSTEM, for_each_reference_mut, recorded_source_key, source_key,
};

/// Where a value was read, for messages.
pub(super) struct Origin<'a> {
    pub label: &'a str,
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
        // A JSON array of resources is a common export shape that fhirgen does not read.
        let hint = if value.is_array() {
            "; to load a JSON array of resources, make it NDJSON first: jq -c '.[]' FILE > FILE.ndjson"
        } else {
            ""
        };
        return Unpacked::Invalid {
            message: format!(
                "not a FHIR resource: {} is not a JSON object{hint}",
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
    let key = own_key(&value);
    Unpacked::Single(Resource::with_key(key, &with_source_key(value)))
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
            None => own_key(&resource),
        };
        resources.push((key, with_source_key(resource), origin.entry_source(index)));
    }
    resolve_relative_references(&mut resources);
    let resources = resources
        .into_iter()
        .map(|(key, body, source)| (Resource::with_key(key, &body), source))
        .collect();
    Unpacked::Entries(resources, bad)
}

/// A relative reference (`Medication/x`) inside a Bundle means the entry whose RESTful fullUrl
/// ends with it (`https://example.com/base/Medication/x`): point it at that fullUrl, the key
/// the loader knows the entry by.
fn resolve_relative_references(resources: &mut [(String, Value, String)]) {
    let by_relative: HashMap<String, String> = resources
        .iter()
        .filter_map(|(key, ..)| {
            let relative = restful_tail(key)?;
            Some((relative.to_owned(), key.clone()))
        })
        .collect();
    if by_relative.is_empty() {
        return;
    }
    for (_, body, _) in resources.iter_mut() {
        for_each_reference_mut(body, &mut |reference| {
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

/// The key of a resource that is not a Bundle entry: `Type/id`, else `Type/<source key>`,
/// the id it is PUT to when it cannot be created conditionally.
fn own_key(body: &Value) -> String {
    let resource_type = body["resourceType"].as_str().unwrap_or_default();
    match body["id"].as_str().filter(|id| !id.is_empty()) {
        Some(id) => format!("{resource_type}/{id}"),
        None => format!("{resource_type}/{}", source_key(body)),
    }
}

/// The resource, with its source key where it has no identifier with a system and a value:
/// as an identifier where its type has a list of them, so that creates can be conditional,
/// else as a `meta.tag`, by which it can be searched for (`_tag=system|code`).
fn with_source_key(mut body: Value) -> Value {
    let identifiers = body["resourceType"]
        .as_str()
        .is_some_and(types::has_identifier_list);
    if identifiers {
        let usable = |ids: &Vec<Value>| {
            ids.iter()
                .any(|id| id["system"].is_string() && id["value"].is_string())
        };
        match body.get("identifier") {
            None => {
                let value = source_key(&body);
                body["identifier"] = json!([{"system": SOURCE_KEY_SYSTEM, "value": value}]);
            }
            Some(Value::Array(ids)) if !usable(ids) => {
                let value = source_key(&body);
                if let Some(Value::Array(ids)) = body.get_mut("identifier") {
                    ids.push(json!({"system": SOURCE_KEY_SYSTEM, "value": value}));
                }
            }
            Some(_) => {}
        }
    } else if body.is_object() && recorded_source_key(&body).is_none() {
        let code = source_key(&body);
        let tag = json!({"system": SOURCE_KEY_SYSTEM, "code": code});
        match body.get_mut("meta") {
            Some(Value::Object(meta)) => match meta.get_mut("tag") {
                Some(Value::Array(tags)) => tags.push(tag),
                _ => {
                    meta.insert("tag".to_owned(), json!([tag]));
                }
            },
            _ => body["meta"] = json!({"tag": [tag]}),
        }
    }
    body
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
            line: 7,
        }
    }

    fn single(value: Value) -> Resource {
        match unpack(value, &origin()) {
            Unpacked::Single(resource) => resource,
            _ => panic!("not a single resource"),
        }
    }

    fn source_key_of(resource: &Resource) -> String {
        let body = resource.to_value();
        body["identifier"]
            .as_array()
            .into_iter()
            .flatten()
            .chain(body["meta"]["tag"].as_array().into_iter().flatten())
            .find(|id| id["system"] == "https://fhirgen.dev/sid/source-key")
            .and_then(|id| id["value"].as_str().or(id["code"].as_str()))
            .expect("a source key")
            .to_owned()
    }

    #[test]
    fn source_key_added_only_where_missing_as_identifier_or_tag() {
        let observation = single(json!({"resourceType": "Observation", "id": "o1"}));
        assert_eq!(observation.key, "Observation/o1");
        let key = source_key_of(&observation).to_owned();
        assert!(uuid::Uuid::try_parse(&key).is_ok(), "{key}");
        assert_eq!(
            observation.to_value()["identifier"],
            json!([{"system": "https://fhirgen.dev/sid/source-key", "value": key}])
        );
        assert_eq!(
            observation.conditional_query(),
            Some(format!(
                "identifier=https://fhirgen.dev/sid/source-key|{key}"
            ))
        );

        let role = single(json!({
            "resourceType": "PractitionerRole", "id": "r",
            "identifier": [{"value": "no system"}]
        }));
        assert_eq!(role.to_value()["identifier"].as_array().unwrap().len(), 2);

        let patient = json!({
            "resourceType": "Patient", "id": "p",
            "identifier": [{"system": "https://x", "value": "1"}]
        });
        assert_eq!(single(patient.clone()).to_value(), patient);

        // No identifier element: the key goes in meta.tag, next to the tags already there.
        let provenance = single(json!({"resourceType": "Provenance", "id": "v",
            "meta": {"tag": [{"system": "https://t", "code": "c"}]}}));
        assert!(provenance.to_value().get("identifier").is_none());
        let provenance = provenance.to_value();
        let tags = provenance["meta"]["tag"].as_array().unwrap();
        assert_eq!(tags.len(), 2);
        assert_eq!(tags[1]["system"], "https://fhirgen.dev/sid/source-key");
        let bundle = single(json!({"resourceType": "Bundle", "type": "document"}));
        assert!(uuid::Uuid::try_parse(&source_key_of(&bundle)).is_ok());
    }

    #[test]
    fn source_keys_come_from_the_content_only() {
        let a = single(json!({"resourceType": "Observation", "status": "final"}));
        let elsewhere = Origin {
            label: "another/name.ndjson",
            line: 1000,
        };
        let Unpacked::Single(b) = unpack(
            json!({"status": "final", "resourceType": "Observation"}),
            &elsewhere,
        ) else {
            panic!()
        };
        // Same content, key order aside, anywhere: the same key, a bare UUID, never a urn.
        assert_eq!(a.key, b.key);
        assert_eq!(source_key_of(&a), source_key_of(&b));
        assert!(!source_key_of(&a).starts_with("urn:"));
        assert_eq!(a.key, format!("Observation/{}", source_key_of(&a)));
        // What an export stamps on its copy does not count; the id does.
        let stamped = single(json!({"resourceType": "Observation", "status": "final",
            "meta": {"versionId": "3", "lastUpdated": "2024-01-01T00:00:00Z", "source": "#x"}}));
        assert_eq!(source_key_of(&stamped), source_key_of(&a));
        let other = single(json!({"resourceType": "Observation", "status": "amended"}));
        assert_ne!(source_key_of(&other), source_key_of(&a));
        let with_id = single(json!({"resourceType": "Observation", "status": "final", "id": "x"}));
        assert_ne!(source_key_of(&with_id), source_key_of(&a));
        let profiled = single(json!({"resourceType": "Observation", "status": "final",
            "meta": {"profile": ["https://p"]}}));
        assert_ne!(source_key_of(&profiled), source_key_of(&a));

        // Read back from a --failed file (references since pointed at store ids), it keeps
        // the key it was given, as identifier or as tag.
        for resource in [a, single(json!({"resourceType": "Provenance", "id": "v"}))] {
            let mut body = resource.to_value().clone();
            body["target"] = json!([{"reference": "Patient/store-id"}]);
            let again = single(json!({
                "resource": body.clone(),
                "failure": {"message": "503", "source": "dir/in.ndjson:7"}
            }));
            assert_eq!(again.key, resource.key);
            assert_eq!(again.to_value(), body);
        }
    }

    #[test]
    fn not_resources() {
        for (value, message) in [
            (
                json!([1]),
                "not a FHIR resource: an array is not a JSON object; to load a JSON array of \
                 resources, make it NDJSON first: jq -c '.[]' FILE > FILE.ndjson",
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
        assert!(keys[3].starts_with("Observation/"));
        assert_eq!(
            resources[0].0.to_value()["medicationReference"]["reference"],
            keys[1]
        );
        assert_eq!(resources[3].1, "dir/in.ndjson:7#entry 4");
        assert!(
            resources
                .iter()
                .all(|(r, _)| r.to_value().get("request").is_none())
        );
        assert_eq!(bad.len(), 1);
        assert_eq!(bad[0].source, "dir/in.ndjson:7#entry 5");

        let document =
            json!({"resourceType": "Bundle", "id": "d", "type": "document", "entry": []});
        let resource = single(document.clone());
        assert_eq!(resource.key, "Bundle/d");
        assert_eq!(resource.to_value()["entry"], document["entry"]);
        assert_eq!(
            resource.to_value()["meta"]["tag"][0]["system"],
            "https://fhirgen.dev/sid/source-key"
        );
    }
}
