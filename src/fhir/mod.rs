//! The unit the generator, the input reader and the loader share: a `Record` of resources that
//! refer to each other, in dependency order (nothing refers to a resource after it), each held
//! as its JSON text (`text`), and how a resource is sent: alone with its references rewritten,
//! or in a transaction Bundle.

use std::borrow::{Borrow, Cow};
use std::fmt::Write as _;

use foldhash::HashMap;
use serde_json::Value;

mod text;

use text::Text;
pub use text::TextWriter;

/// Base of the `identifier.system` of every generated resource.
pub const IDENTIFIER_SYSTEM_BASE: &str = "https://fhirgen.dev/sid";

/// Content-Type for FHIR JSON bodies, as the Healthcare API documents it.
pub const FHIR_JSON: &str = "application/fhir+json;charset=utf-8";

/// The `meta.tag` system that finds a resource without an identifier again: conditional
/// creates and updates only search by identifier, so such resources are looked up by this tag
/// before they are created.
pub const SOURCE_KEY_SYSTEM: &str = "https://fhirgen.dev/sid/source-key";

/// One resource of the data set: its key, and its compact JSON text with where the parts the
/// loader reads and rewrites lie (see [`text`]).
#[derive(Debug, Clone, PartialEq)]
pub struct Resource {
    /// How the rest of the data set refers to this resource: `Type/id` for generated and
    /// NDJSON input, the Bundle entry's `fullUrl` (often `urn:uuid:...`) for bundle input.
    pub key: String,
    text: Text,
}

impl Resource {
    /// A resource whose key is its own `Type/id`.
    pub fn new(body: Value) -> Self {
        let key = [
            body["resourceType"].as_str().unwrap_or_default(),
            "/",
            body["id"].as_str().unwrap_or_default(),
        ]
        .concat();
        Self::with_key(key, &body)
    }

    pub fn with_key(key: String, body: &Value) -> Self {
        Self {
            key,
            text: Text::of_value(body),
        }
    }

    /// A resource from what a [`TextWriter`] wrote.
    pub fn written(key: String, writer: TextWriter) -> Self {
        Self {
            key,
            text: writer.finish(),
        }
    }

    /// The resource as compact JSON.
    pub fn json(&self) -> &str {
        self.text.json()
    }

    /// The resource as a JSON tree, parsed from its text: for what reads more than the
    /// loader's few fields.
    pub fn to_value(&self) -> Value {
        serde_json::from_str(self.json()).expect("a resource's text is JSON")
    }

    /// Frees the text of a resource that will not be read again.
    pub fn release(&mut self) {
        self.text = Text::default();
    }

    pub fn resource_type(&self) -> &str {
        self.text.resource_type().unwrap_or_default()
    }

    /// `(system, value)` of each identifier that has both.
    pub fn identifiers(&self) -> impl Iterator<Item = (Cow<'_, str>, Cow<'_, str>)> {
        self.text.identifiers()
    }

    /// Every `reference` string inside the resource (Reference.reference, at any depth).
    pub fn references(&self) -> impl Iterator<Item = Cow<'_, str>> {
        self.text.references()
    }

    /// Whether `found` holds for one of its references; stops at the first.
    pub fn any_reference(&self, mut found: impl FnMut(&str) -> bool) -> bool {
        self.references().any(|reference| found(&reference))
    }

    /// Writes the resource to be sent: each reference `resolve` knows replaced, and its `id`
    /// kept, removed or set.
    pub fn write_rewritten(&self, out: &mut Vec<u8>, resolve: Resolve<'_>, id: IdField<'_>) {
        self.text.write_rewritten(out, resolve, id);
    }

    /// Whether [`Self::conditional_query`] finds one, without building it.
    pub fn has_conditional_identifier(&self) -> bool {
        self.identifiers().next().is_some()
    }

    /// The search that finds this resource again (`identifier=system|value`), from its first
    /// identifier that has both; conditional creates use it so that re-runs store nothing twice.
    pub fn conditional_query(&self) -> Option<String> {
        let (system, value) = self.identifiers().next()?;
        Some(
            [
                "identifier=",
                &escape_search_value(&system),
                "|",
                &escape_search_value(&value),
            ]
            .concat(),
        )
    }
}

/// FHIR search escaping (`\`, `|`, `,`, `$`) and percent-encoding of what a query, or the
/// If-None-Exist header it travels in, cannot carry.
fn escape_search_value(raw: &str) -> Cow<'_, str> {
    let needs_escape = |c: char| {
        matches!(c, '\\' | '|' | ',' | '$' | '&' | '#' | '+' | '%' | ' ')
            || c.is_control()
            || !c.is_ascii()
    };
    // Identifiers almost never need escaping, and every conditional create builds one.
    let Some(first) = raw.find(needs_escape) else {
        return Cow::Borrowed(raw);
    };
    let mut out = String::with_capacity(raw.len() + 8);
    out.push_str(&raw[..first]);
    for c in raw[first..].chars() {
        match c {
            '\\' | '|' | ',' | '$' => {
                out.push('\\');
                out.push(c);
            }
            c if needs_escape(c) => {
                let mut buf = [0; 4];
                for b in c.encode_utf8(&mut buf).bytes() {
                    write!(out, "%{b:02X}").expect("a String takes any write");
                }
            }
            _ => out.push(c),
        }
    }
    Cow::Owned(out)
}

impl Resource {
    /// The id this resource is PUT to: its own when it has a valid one, else one derived from
    /// its key, so that every run picks the same.
    pub fn stable_id(&self) -> String {
        if let Some(id) = self.text.id().filter(|id| is_fhir_id(id)) {
            return id.into_owned();
        }
        key_uuid(&self.key)
    }

    /// The code of this resource's source-key tag: the one it carries, else [`source_key`] of
    /// its JSON as read (before references are rewritten), the same on every run and in every
    /// mode, and the same the input reader gives.
    pub fn source_tag(&self) -> String {
        source_key(&self.to_value())
    }

    /// This resource with the source-key tag `code` in its `meta.tag`, added when it is not
    /// there.
    pub fn with_source_tag(&self, code: &str) -> Resource {
        Self::with_key(self.key.clone(), &with_source_tag(&self.to_value(), code))
    }

    /// A reference that finds this resource by identifier (`Type?identifier=system|value`):
    /// what patient bundles use for shared resources whose server ids they cannot know.
    pub fn conditional_reference(&self) -> Option<String> {
        Some(format!(
            "{}?{}",
            self.resource_type(),
            self.conditional_query()?
        ))
    }
}

/// `body` with the source-key tag `code` in its `meta.tag`, added when it is not there.
pub fn with_source_tag(body: &Value, code: &str) -> Value {
    let mut tagged = body.clone();
    let tag = serde_json::json!({"system": SOURCE_KEY_SYSTEM, "code": code});
    let Some(resource) = tagged.as_object_mut() else {
        return tagged;
    };
    let meta = resource
        .entry("meta")
        .or_insert_with(|| Value::Object(Default::default()));
    if !meta.is_object() {
        *meta = Value::Object(Default::default());
    }
    let tags = meta
        .as_object_mut()
        .expect("meta was just made an object")
        .entry("tag")
        .or_insert_with(|| Value::Array(Vec::new()));
    match tags {
        Value::Array(tags) if tags.contains(&tag) => {}
        Value::Array(tags) => tags.push(tag),
        other => *other = Value::Array(vec![tag]),
    }
    tagged
}

/// A search or condition (`identifier=system|value`, `_tag=system|code`) made fit for a URL's
/// query: FHIR's `|` and `\` escapes, which a header carries as they are, percent-encoded.
pub fn query_for_url(condition: &str) -> String {
    let mut out = String::with_capacity(condition.len() + 8);
    for c in condition.chars() {
        match c {
            '|' => out.push_str("%7C"),
            '\\' => out.push_str("%5C"),
            '"' | '<' | '>' | '^' | '`' | '{' | '}' => out.push_str(&format!("%{:02X}", c as u32)),
            c => out.push(c),
        }
    }
    out
}

/// The source key of a resource without an identifier of its own: the one it was given
/// before (a `--failed` line fed back, whose references now point at store ids; a resource
/// the input reader tagged), else a UUID v5 over its content.
///
/// The content is the resource as read, with object keys sorted, less what describes the
/// copy rather than the resource (`meta.versionId`, `meta.lastUpdated`, `meta.source`, which
/// an export sets) and less a source key itself. The `id` is in it: two resources that differ
/// only by id are two resources. The key is a bare UUID: never a `urn:uuid:`, a fullUrl or a
/// reference, which servers rewrite inside transactions.
pub fn source_key(body: &Value) -> String {
    if let Some(recorded) = recorded_source_key(body) {
        return recorded.to_owned();
    }
    let mut canonical = Vec::with_capacity(1024);
    write_canonical(body, 0, &mut canonical);
    uuid::Uuid::new_v5(&SOURCE_KEY_NAMESPACE, &canonical).to_string()
}

/// The namespace of content keys: the UUID v5 of the source-key system in the URL namespace.
const SOURCE_KEY_NAMESPACE: uuid::Uuid =
    uuid::Uuid::from_u128(0x467608fe_5711_5484_845d_88b9b693fad3);

/// The source key a resource already carries, as an identifier or a tag.
pub fn recorded_source_key(body: &Value) -> Option<&str> {
    fn in_list<'a>(list: &'a Value, field: &str) -> Option<&'a str> {
        list.as_array()?
            .iter()
            .find(|item| is_source_key_system(&item["system"]))
            .and_then(|item| item[field].as_str())
    }
    in_list(&body["identifier"], "value").or_else(|| in_list(&body["meta"]["tag"], "code"))
}

/// `value` as compact JSON with object keys sorted; at the top (`depth` 0) and in its `meta`,
/// what differs between copies of the same resource is left out.
fn write_canonical(value: &Value, depth: usize, out: &mut Vec<u8>) {
    match value {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            out.push(b'{');
            let mut first = true;
            for key in keys {
                let child = &map[key.as_str()];
                let left_out = match (depth, key.as_str()) {
                    (0, "meta") => !describes_the_resource(child),
                    (1, "versionId" | "lastUpdated" | "source") => true,
                    _ => false,
                };
                if left_out {
                    continue;
                }
                if !first {
                    out.push(b',');
                }
                first = false;
                serde_json::to_writer(&mut *out, key).expect("strings serialize");
                out.push(b':');
                match (depth, key.as_str(), child) {
                    (0, "meta", _) => write_canonical(child, 1, out),
                    (0, "identifier", Value::Array(ids)) | (1, "tag", Value::Array(ids)) => {
                        write_list_without_source_keys(ids, out)
                    }
                    _ => write_canonical(child, 2, out),
                }
            }
            out.push(b'}');
        }
        Value::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_canonical(item, 2, out);
            }
            out.push(b']');
        }
        scalar => serde_json::to_writer(&mut *out, scalar).expect("scalars serialize"),
    }
}

/// Whether `meta` holds more than what an export stamps on its copy and a source-key tag.
fn describes_the_resource(meta: &Value) -> bool {
    let Some(meta) = meta.as_object() else {
        return true;
    };
    meta.iter().any(|(key, value)| match key.as_str() {
        "versionId" | "lastUpdated" | "source" => false,
        "tag" => value
            .as_array()
            .is_none_or(|tags| tags.iter().any(|tag| !is_source_key_system(&tag["system"]))),
        _ => true,
    })
}

fn write_list_without_source_keys(items: &[Value], out: &mut Vec<u8>) {
    let kept: Vec<Value> = items
        .iter()
        .filter(|item| !is_source_key_system(&item["system"]))
        .cloned()
        .collect();
    write_canonical(&Value::Array(kept), 2, out);
}

fn is_source_key_system(system: &Value) -> bool {
    system == SOURCE_KEY_SYSTEM
}

/// FHIR's `id` datatype: 1 to 64 of `A-Z a-z 0-9 - .`.
pub fn is_fhir_id(id: &str) -> bool {
    (1..=64).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
}

/// The `urn:uuid:` fullUrl a resource has inside a transaction Bundle: a UUID derived from its
/// key in fhirgen's own namespace, the same on every run. Never the input's own fullUrl or id:
/// a server may rewrite every string in the bundle that holds a fullUrl, identifiers included
/// (Medplum does), and Synthea's DocumentReferences carry their report's fullUrl as an
/// identifier, so reusing it would change what a later run looks them up by.
pub fn full_url(key: &str) -> String {
    format!(
        "urn:uuid:{}",
        uuid::Uuid::new_v5(&FULL_URL_NAMESPACE, key.as_bytes())
    )
}

const FULL_URL_NAMESPACE: uuid::Uuid =
    uuid::Uuid::from_u128(0x5f0c_1e2a_8d4b_4c71_9a36_2be8_f1d0_7c45);

/// A UUID for `key`: the input's own when the key is a `urn:uuid:` or its id a UUID, else one
/// derived from the key.
fn key_uuid(key: &str) -> String {
    if let Some(uuid) = key.strip_prefix("urn:uuid:") {
        return uuid.to_owned();
    }
    let id = key.rsplit('/').next().unwrap_or(key);
    match uuid::Uuid::try_parse(id) {
        Ok(uuid) => uuid.to_string(),
        Err(_) => uuid::Uuid::new_v5(&uuid::Uuid::NAMESPACE_URL, key.as_bytes()).to_string(),
    }
}

/// Looks up what a reference should become; `None` leaves it as it is.
pub type Resolve<'a> = &'a dyn Fn(&str) -> Option<String>;

/// What to do with a resource's `id` when it is sent.
#[derive(Debug, Clone, Copy)]
pub enum IdField<'a> {
    Keep,
    /// A create: the store assigns the id.
    Remove,
    /// A PUT: the id in the body must be the one in the URL.
    Set(&'a str),
}

/// Writes a transaction Bundle that stores `resources` so that a retry or a re-run stores
/// nothing twice: a conditional create (`ifNoneExist` by identifier) for each resource that
/// has an identifier, a PUT to its stable id for each that has none. References between the
/// resources become their `urn:uuid` fullUrls (or the PUT's `Type/id`); any other reference is
/// replaced by what `resolve` returns for it, if anything.
pub fn write_transaction_bundle<R: std::borrow::Borrow<Resource>>(
    out: &mut Vec<u8>,
    resources: &[R],
    resolve: Resolve<'_>,
) {
    let resources: Vec<&Resource> = resources.iter().map(Borrow::borrow).collect();
    let plans: Vec<EntryPlan> = resources.iter().map(|r| EntryPlan::new(r)).collect();
    let local: HashMap<&str, &str> = resources
        .iter()
        .zip(&plans)
        .map(|(r, plan)| (r.key.as_str(), plan.target.as_str()))
        .collect();
    let resolve_all = |reference: &str| match local.get(reference) {
        Some(target) => Some((*target).to_owned()),
        None => resolve(reference),
    };
    out.extend_from_slice(br#"{"resourceType":"Bundle","type":"transaction","entry":["#);
    for (i, (resource, plan)) in resources.iter().zip(&plans).enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(br#"{"fullUrl":"#);
        write_string(out, &plan.full_url);
        out.extend_from_slice(br#","resource":"#);
        let id = match &plan.put_id {
            Some(id) => IdField::Set(id),
            None => IdField::Remove,
        };
        resource.write_rewritten(out, &resolve_all, id);
        match (&plan.put_id, &plan.condition) {
            (Some(_), _) => {
                out.extend_from_slice(br#","request":{"method":"PUT","url":"#);
                write_string(out, &plan.target);
            }
            (None, condition) => {
                out.extend_from_slice(br#","request":{"method":"POST","url":"#);
                write_string(out, resource.resource_type());
                if let Some(condition) = condition {
                    out.extend_from_slice(br#","ifNoneExist":"#);
                    write_string(out, condition);
                }
            }
        }
        out.extend_from_slice(b"}}");
    }
    out.extend_from_slice(b"]}");
}

/// `s` as a JSON string.
fn write_string(out: &mut Vec<u8>, s: &str) {
    serde_json::to_writer(out, s).expect("strings serialize");
}

/// How one resource goes into a transaction.
struct EntryPlan {
    full_url: String,
    condition: Option<String>,
    /// Set when the resource has no identifier and is PUT to its stable id instead.
    put_id: Option<String>,
    /// What references to it become inside the bundle.
    target: String,
}

impl EntryPlan {
    fn new(resource: &Resource) -> Self {
        let full_url = full_url(&resource.key);
        match resource.conditional_query() {
            Some(condition) => Self {
                target: full_url.clone(),
                full_url,
                condition: Some(condition),
                put_id: None,
            },
            None => {
                let id = resource.stable_id();
                Self {
                    target: format!("{}/{id}", resource.resource_type()),
                    full_url,
                    condition: None,
                    put_id: Some(id),
                }
            }
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordKind {
    /// Organizations, Practitioners and the like that many patients refer to: loaded first.
    Shared,
    /// One patient's record, or one input bundle.
    Patient,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    pub kind: RecordKind,
    pub resources: Vec<Resource>,
}

/// Calls `f` on every `reference` string inside `value` (Reference.reference, at any depth).
pub fn for_each_reference_mut(value: &mut Value, f: &mut impl FnMut(&mut String)) {
    match value {
        Value::Object(map) => {
            for (key, child) in map.iter_mut() {
                match child {
                    Value::String(s) if key == "reference" => f(s),
                    _ => for_each_reference_mut(child, f),
                }
            }
        }
        Value::Array(items) => {
            for item in items {
                for_each_reference_mut(item, f);
            }
        }
        _ => {}
    }
}

/// Every `reference` string inside a JSON tree (a resource read back from a store, say).
pub fn references(value: &Value) -> Vec<String> {
    let mut all = Vec::new();
    for_each_reference_mut(&mut value.clone(), &mut |r| all.push(r.clone()));
    all
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn conditional_query_escapes() {
        let r = Resource::new(json!({
            "resourceType": "Patient", "id": "p1",
            "identifier": [{"value": "no-system"}, {"system": "https://x.org/a|b", "value": "1,2"}]
        }));
        assert_eq!(r.key, "Patient/p1");
        assert!(r.has_conditional_identifier());
        let no_system = Resource::new(json!({"resourceType": "Patient",
            "identifier": [{"value": "no-system"}]}));
        assert!(!no_system.has_conditional_identifier());
        assert_eq!(no_system.conditional_query(), None);
        assert_eq!(
            r.conditional_query().as_deref(),
            Some(r"identifier=https://x.org/a\|b|1\,2")
        );
    }

    #[test]
    fn finds_nested_references() {
        let mut body = json!({
            "subject": {"reference": "Patient/1"},
            "participant": [{"individual": {"reference": "Practitioner/2", "display": "Dr"}}],
            "note": [{"text": "reference"}]
        });
        assert_eq!(references(&body), ["Patient/1", "Practitioner/2"]);
        for_each_reference_mut(&mut body, &mut |r| r.insert_str(0, "x/"));
        assert_eq!(body["subject"]["reference"], "x/Patient/1");
    }

    #[test]
    fn rewriting_on_the_way_out_sends_what_an_edited_copy_would() {
        let body = json!({"resourceType": "Encounter", "id": "e1", "status": "finished",
            "subject": {"reference": "Patient/local", "display": "x"},
            "participant": [{"individual": {"reference": "Practitioner/p"}}]});
        let resource = Resource::new(body.clone());
        let resolve = |r: &str| (r == "Patient/local").then(|| "Patient/123".to_owned());
        let sent = |resource: &Resource, id| {
            let mut out = Vec::new();
            resource.write_rewritten(&mut out, &resolve, id);
            String::from_utf8(out).unwrap()
        };
        let mut edited = body.clone();
        edited["subject"]["reference"] = json!("Patient/123");
        assert_eq!(sent(&resource, IdField::Keep), edited.to_string());
        edited.as_object_mut().unwrap().shift_remove("id");
        assert_eq!(sent(&resource, IdField::Remove), edited.to_string());
        edited["id"] = json!("e2");
        let with_new_id: Value =
            serde_json::from_str(&sent(&resource, IdField::Set("e2"))).unwrap();
        assert_eq!(with_new_id, edited);
        let without_id = Resource::new(json!({"resourceType": "Basic", "code": {}}));
        assert_eq!(
            sent(&without_id, IdField::Set("b")),
            r#"{"resourceType":"Basic","id":"b","code":{}}"#
        );
    }

    /// The spans must hold wherever the parts sit: the id first or last, a resource with
    /// nothing but an id, strings that need escapes, references next to the id.
    #[test]
    fn rewriting_holds_wherever_the_parts_sit() {
        let resolve = |r: &str| {
            r.strip_prefix("local/")
                .map(|id| format!("Patient/\"{id}\""))
        };
        let cases = [
            json!({"id": "first", "resourceType": "Patient", "link": [{"other": {"reference": "local/1"}}]}),
            json!({"resourceType": "Patient", "link": [{"other": {"reference": "local/1"}}], "id": "last"}),
            json!({"id": "only"}),
            json!({"resourceType": "Patient"}),
            json!({}),
            json!({"resourceType": "Observation", "subject": {"reference": "local/\u{e9}\"q"}, "id": "x\ny",
                "note": [{"text": "tab\there", "reference": "not/local"}], "valueQuantity": {"value": 1.5e-7}}),
            json!({"resourceType": "Patient", "id": {"reference": "local/2"}, "text": {"reference": "local/3"}}),
            json!(["not", "an", "object"]),
            json!({"resourceType": "Patient", "id": 7, "identifier": [{"system": "s", "value": 3},
                {"system": "a\\b", "value": "v|w"}]}),
        ];
        for body in cases {
            let resource = Resource::with_key("k".to_owned(), &body);
            assert_eq!(
                resource.json(),
                body.to_string(),
                "written as serde_json writes it"
            );
            assert_eq!(resource.to_value(), body);
            let mut edited = body.clone();
            for_each_reference_mut(&mut edited, &mut |r| {
                if let Some(resolved) = resolve(r) {
                    *r = resolved;
                }
            });
            for id in [IdField::Keep, IdField::Remove, IdField::Set("new-id")] {
                let mut out = Vec::new();
                resource.write_rewritten(&mut out, &resolve, id);
                let sent: Value = serde_json::from_slice(&out).unwrap_or_else(|e| {
                    panic!("{body} {id:?}: {e}: {}", String::from_utf8_lossy(&out))
                });
                let mut expected = edited.clone();
                match id {
                    _ if !body.is_object() => {}
                    IdField::Keep => {}
                    IdField::Remove => {
                        expected.as_object_mut().unwrap().shift_remove("id");
                    }
                    IdField::Set(id) => expected["id"] = json!(id),
                }
                assert_eq!(sent, expected, "{body} {id:?}");
            }
            let references: Vec<String> = resource.references().map(String::from).collect();
            assert_eq!(references, super::references(&body), "{body}");
        }
        let odd = Resource::with_key(
            "k".to_owned(),
            &json!({"resourceType": "Patient", "id": "x\ny",
            "identifier": [{"system": "s", "value": 3}, {"system": "a\\b", "value": "v|w"}]}),
        );
        assert_eq!(
            odd.stable_id(),
            key_uuid("k"),
            "an id that is not a FHIR id is not used"
        );
        let identifiers: Vec<(String, String)> = odd
            .identifiers()
            .map(|(s, v)| (s.into_owned(), v.into_owned()))
            .collect();
        assert_eq!(identifiers, [("a\\b".to_owned(), "v|w".to_owned())]);
        assert_eq!(
            odd.conditional_query().as_deref(),
            Some(r"identifier=a\\b|v\|w")
        );
    }

    #[test]
    fn transaction_bundle_links_entries_by_urn_uuid() {
        let id = "0b8d5d38-5c3e-4a4e-9d43-1c4cf0d6e0a1";
        let patient = Resource::new(json!({
            "resourceType": "Patient", "id": id,
            "identifier": [{"system": "https://fhirgen.dev/sid/patient", "value": "p-1"}],
            "generalPractitioner": [{"reference": "Practitioner/shared-1"}]
        }));
        let encounter = Resource::new(json!({
            "resourceType": "Encounter", "id": "enc-1",
            "subject": {"reference": format!("Patient/{id}")}
        }));
        let provenance = Resource::new(json!({
            "resourceType": "Provenance", "id": "prov-1",
            "target": [{"reference": "Encounter/enc-1"}]
        }));
        let mut bytes = Vec::new();
        write_transaction_bundle(&mut bytes, &[patient, encounter, provenance], &|r| {
            (r == "Practitioner/shared-1").then(|| "Practitioner/42".to_owned())
        });
        let bundle: Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(bundle["resourceType"], "Bundle");
        assert_eq!(bundle["type"], "transaction");
        let entries = bundle["entry"].as_array().unwrap();
        let patient_url = full_url(&format!("Patient/{id}"));
        assert_eq!(entries[0]["fullUrl"], patient_url);
        assert_ne!(patient_url, format!("urn:uuid:{id}"));
        assert!(entries[0]["resource"].get("id").is_none());
        assert_eq!(
            entries[0]["request"]["ifNoneExist"],
            "identifier=https://fhirgen.dev/sid/patient|p-1"
        );
        assert_eq!(
            entries[0]["resource"]["generalPractitioner"][0]["reference"],
            "Practitioner/42"
        );
        assert_eq!(entries[1]["resource"]["subject"]["reference"], patient_url);
        assert_eq!(entries[1]["fullUrl"], full_url("Encounter/enc-1"));
        assert!(entries[1]["request"].get("ifNoneExist").is_none());
    }

    /// Some servers rewrite every string in a transaction that holds an entry's fullUrl (Medplum
    /// does). Synthea's DocumentReferences carry their report's `urn:uuid` fullUrl as an
    /// identifier: if the bundle reused it, the stored identifier would change and a later run
    /// would not find the resource by it. A fullUrl appears only where it is a reference.
    #[test]
    fn full_urls_appear_in_a_bundle_only_as_references() {
        let report_url = "urn:uuid:7c393185-f15c-45bc-a714-c0fdbea32675";
        let mut report = Resource::new(json!({"resourceType": "DiagnosticReport",
            "identifier": [{"system": "urn:ietf:rfc:3986", "value": report_url}]}));
        report.key = report_url.to_owned();
        let document_url = "urn:uuid:0b8d5d38-5c3e-4a4e-9d43-1c4cf0d6e0a1";
        let mut document = Resource::new(json!({"resourceType": "DocumentReference",
            "identifier": [{"system": "urn:ietf:rfc:3986", "value": report_url}],
            "context": {"related": [{"reference": report_url}]},
            "description": format!("report {report_url}")}));
        document.key = document_url.to_owned();
        let mut bytes = Vec::new();
        write_transaction_bundle(&mut bytes, &[report, document], &|_| None);
        let bundle: Value = serde_json::from_slice(&bytes).unwrap();
        let entries = bundle["entry"].as_array().unwrap();
        let full_urls: Vec<&str> = entries
            .iter()
            .map(|e| e["fullUrl"].as_str().unwrap())
            .collect();
        assert_eq!(full_urls, [full_url(report_url), full_url(document_url)]);

        fn strings<'a>(value: &'a Value, key: &str, out: &mut Vec<(String, &'a str)>) {
            match value {
                Value::String(s) => out.push((key.to_owned(), s)),
                Value::Array(items) => items.iter().for_each(|v| strings(v, key, out)),
                Value::Object(map) => map.iter().for_each(|(k, v)| strings(v, k, out)),
                _ => {}
            }
        }
        let mut found = Vec::new();
        strings(&bundle, "", &mut found);
        for (key, text) in found {
            if full_urls.iter().any(|url| text.contains(url)) {
                assert!(key == "fullUrl" || key == "reference", "{key}: {text}");
            }
        }
        let document = &entries[1]["resource"];
        assert_eq!(document["identifier"][0]["value"], report_url);
        assert_eq!(document["context"]["related"][0]["reference"], full_urls[0]);
    }

    #[test]
    fn a_source_tag_is_kept_or_derived_from_the_content_as_read() {
        let provenance = Resource::new(json!({"resourceType": "Provenance", "id": "p1",
            "target": [{"reference": "Encounter/e1"}]}));
        let code = provenance.source_tag();
        assert_eq!(code, provenance.clone().source_tag());
        let other = Resource::new(json!({"resourceType": "Provenance", "id": "p2",
            "target": [{"reference": "Encounter/e1"}]}));
        assert_ne!(code, other.source_tag());

        let tagged = with_source_tag(&provenance.to_value(), &code);
        assert_eq!(
            tagged["meta"]["tag"],
            json!([{"system": SOURCE_KEY_SYSTEM, "code": code}])
        );
        // Already tagged (by the input reader, or by the line above): the tag is reused.
        let again = Resource::new(tagged.clone());
        assert_eq!(again.source_tag(), code);
        assert_eq!(with_source_tag(&tagged, &code), tagged);
        let with_meta = json!({"resourceType": "AuditEvent",
            "meta": {"tag": [{"system": "https://x", "code": "y"}]}});
        assert_eq!(
            with_source_tag(&with_meta, "c")["meta"]["tag"]
                .as_array()
                .unwrap()
                .len(),
            2
        );
    }

    #[test]
    fn queries_are_escaped_for_urls() {
        assert_eq!(
            query_for_url(r"identifier=https://x.org/a\|b|1\,2"),
            "identifier=https://x.org/a%5C%7Cb%7C1%5C,2"
        );
        assert_eq!(query_for_url("_tag=s|c"), "_tag=s%7Cc");
    }
}
