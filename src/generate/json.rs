//! Building FHIR JSON: resource bodies and the datatypes they are made of (Identifier, Coding,
//! CodeableConcept, Reference, Period, Address, dates). Shared by the patient records and the
//! shared record; it knows nothing of either.

use std::borrow::Cow;
use std::fmt::Write;
use std::sync::LazyLock;

use chrono::{Datelike, NaiveDate, Timelike};
use fake::Fake;
use fake::faker::address::en::{BuildingNumber, CitySuffix, PostCode, StateAbbr, StreetName};
use fake::faker::name::en::LastName;
use fake::faker::phone_number::en::CellNumber;
use rand::rngs::ChaCha8Rng;
use serde_json::Number;

use super::codes::Concept;
use super::types::ResourceType;
use crate::fhir::{IDENTIFIER_SYSTEM_BASE, Resource, TextWriter};

// Generating is a large share of the loader's CPU time, and most of a resource is fixed text:
// keys, systems, codes and displays. `Json` borrows all of those, so building a resource
// allocates only for what is drawn (ids, dates, names) and for its objects' field lists, each
// allocated at its final size.

/// A JSON value as the generator builds it: keys are static, strings borrow when they can,
/// objects keep FHIR's element order.
#[derive(Debug, Clone, PartialEq)]
pub enum Json {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(Cow<'static, str>),
    Array(Vec<Json>),
    Object(Vec<(&'static str, Json)>),
}

impl Json {
    /// Writes the value as serde_json writes JSON: a float that is not finite becomes null,
    /// as `serde_json::Value::from(f64)` has it.
    pub fn write(&self, out: &mut TextWriter) {
        match self {
            Json::Null => out.scalar("null"),
            Json::Bool(b) => out.scalar(if *b { "true" } else { "false" }),
            Json::Int(n) => out.number(&Number::from(*n)),
            Json::Float(x) => match Number::from_f64(*x) {
                Some(n) => out.number(&n),
                None => out.scalar("null"),
            },
            Json::Str(Cow::Borrowed(s)) => out.plain_string(s),
            Json::Str(Cow::Owned(s)) => out.string(s),
            Json::Array(items) => {
                out.begin_array();
                for item in items {
                    item.write(out);
                }
                out.end_array();
            }
            Json::Object(fields) => Json::write_object(fields, out),
        }
    }

    fn write_object(fields: &[(&'static str, Json)], out: &mut TextWriter) {
        out.begin_object();
        for (key, value) in fields {
            out.plain_key(key);
            value.write(out);
        }
        out.end_object();
    }

    /// Field `key` of an object.
    pub fn get(&self, key: &str) -> Option<&Json> {
        match self {
            Json::Object(fields) => fields.iter().find(|(k, _)| *k == key).map(|(_, v)| v),
            _ => None,
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            Json::Str(s) => Some(s),
            _ => None,
        }
    }
}

impl From<&'static str> for Json {
    fn from(s: &'static str) -> Self {
        Json::Str(Cow::Borrowed(s))
    }
}

impl From<String> for Json {
    fn from(s: String) -> Self {
        Json::Str(Cow::Owned(s))
    }
}

impl From<Cow<'static, str>> for Json {
    fn from(s: Cow<'static, str>) -> Self {
        Json::Str(s)
    }
}

impl From<bool> for Json {
    fn from(b: bool) -> Self {
        Json::Bool(b)
    }
}

impl From<i64> for Json {
    fn from(n: i64) -> Self {
        Json::Int(n)
    }
}

impl From<u32> for Json {
    fn from(n: u32) -> Self {
        Json::Int(n.into())
    }
}

impl From<f64> for Json {
    fn from(x: f64) -> Self {
        Json::Float(x)
    }
}

impl From<Vec<Json>> for Json {
    fn from(items: Vec<Json>) -> Self {
        Json::Array(items)
    }
}

/// A resource body built field by field, in FHIR's element order.
pub struct Body {
    resource_type: ResourceType,
    key: String,
    fields: Vec<(&'static str, Json)>,
    /// The most fields the resource can have: its field list never grows.
    capacity: usize,
}

impl Body {
    /// `capacity` counts every field the resource can have, resourceType and id included.
    pub fn new(resource_type: ResourceType, id: String, capacity: usize) -> Self {
        let key = key(resource_type, &id);
        let mut fields = Vec::with_capacity(capacity);
        fields.push(("resourceType", resource_type.name().into()));
        fields.push(("id", id.into()));
        Self {
            resource_type,
            key,
            fields,
            capacity,
        }
    }

    /// `Type/id` of the resource.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// Adds the fhirgen identifier of the resource: how re-runs find it again.
    pub fn identified(self) -> Self {
        let id = &self.key[self.resource_type.name().len() + 1..];
        let identifiers = array([identifier(self.resource_type, id)]);
        self.set("identifier", identifiers)
    }

    pub fn set(mut self, key: &'static str, value: impl Into<Json>) -> Self {
        debug_assert!(
            self.fields.iter().all(|(k, _)| *k != key),
            "{} sets {key} twice",
            self.key
        );
        self.fields.push((key, value.into()));
        self
    }

    pub fn set_some(self, key: &'static str, value: Option<impl Into<Json>>) -> Self {
        match value {
            Some(value) => self.set(key, value),
            None => self,
        }
    }

    /// `Type/id` and the fields, resourceType and id first.
    pub fn into_parts(self) -> (String, Vec<(&'static str, Json)>) {
        debug_assert!(
            self.fields.len() <= self.capacity,
            "{} has more fields than its capacity",
            self.key
        );
        (self.key, self.fields)
    }

    /// The resource, written as its JSON text straight from the fields.
    pub fn build(self) -> Resource {
        let (key, fields) = self.into_parts();
        let mut writer = TextWriter::default();
        Json::write_object(&fields, &mut writer);
        Resource::written(key, writer)
    }
}

/// A JSON object with these fields, in this order.
pub fn object<const N: usize>(fields: [(&'static str, Json); N]) -> Json {
    Json::Object(fields.into())
}

/// A JSON array of these items.
pub fn array<const N: usize>(items: [Json; N]) -> Json {
    Json::Array(items.into())
}

/// `Type/id`: how resources refer to each other.
pub fn key(t: ResourceType, id: &str) -> String {
    [t.name(), "/", id].concat()
}

/// The system of fhirgen identifiers of each type (`<base>/<lower-case type>`), in the order of
/// [`ResourceType::ALL`]: made once, so that identifiers borrow it.
static IDENTIFIER_SYSTEMS: LazyLock<[String; ResourceType::ALL.len()]> = LazyLock::new(|| {
    ResourceType::ALL.map(|t| [IDENTIFIER_SYSTEM_BASE, "/", &t.name().to_lowercase()].concat())
});

fn identifier_system(t: ResourceType) -> &'static str {
    // ALL is in declaration order, as TypeSet's bits also have it.
    &IDENTIFIER_SYSTEMS[t as usize]
}

/// The fhirgen identifier of a resource of type `t`.
pub fn identifier(t: ResourceType, id: &str) -> Json {
    object([
        ("system", identifier_system(t).into()),
        ("value", id.to_owned().into()),
    ])
}

pub fn coding(system: &'static str, concept: Concept) -> Json {
    object([
        ("system", system.into()),
        ("code", concept.code.into()),
        ("display", concept.display.into()),
    ])
}

/// A CodeableConcept of one coding and no text.
pub fn coded(system: &'static str, concept: Concept) -> Json {
    object([("coding", array([coding(system, concept)]))])
}

pub fn codeable(system: &'static str, concept: Concept) -> Json {
    object([
        ("coding", array([coding(system, concept)])),
        ("text", concept.display.into()),
    ])
}

/// A list of one CodeableConcept of one coding and no text.
pub fn coded_list(system: &'static str, concept: Concept) -> Json {
    array([coded(system, concept)])
}

pub fn reference(key: impl Into<Cow<'static, str>>) -> Json {
    object([("reference", Json::Str(key.into()))])
}

/// A Period from `start` to `end` (Unix seconds).
pub fn period(start: i64, end: i64) -> Json {
    object([
        ("start", date_time(start).into()),
        ("end", date_time(end).into()),
    ])
}

pub fn phone(rng: &mut ChaCha8Rng) -> String {
    CellNumber().fake_with_rng(rng)
}

/// A US street address, of this `use` if any.
pub fn address(rng: &mut ChaCha8Rng, address_use: Option<&'static str>) -> Json {
    let number: String = BuildingNumber().fake_with_rng(rng);
    let street: String = StreetName().fake_with_rng(rng);
    let town: &str = LastName().fake_with_rng(rng);
    let suffix: &str = CitySuffix().fake_with_rng(rng);
    let state: &'static str = StateAbbr().fake_with_rng(rng);
    let postal_code: String = PostCode().fake_with_rng(rng);
    let mut fields = Vec::with_capacity(6);
    fields.push((
        "line",
        array([[number.as_str(), " ", &street].concat().into()]),
    ));
    fields.push(("city", [town, suffix].concat().into()));
    fields.push(("state", state.into()));
    fields.push(("postalCode", postal_code.into()));
    fields.push(("country", "US".into()));
    if let Some(address_use) = address_use {
        fields.push(("use", address_use.into()));
    }
    Json::Object(fields)
}

/// `YYYY-MM-DDThh:mm:ss+00:00`.
pub fn date_time(at: i64) -> String {
    let t = chrono::DateTime::from_timestamp(at, 0)
        .expect("time is in range")
        .naive_utc();
    let mut text = String::with_capacity(25);
    push_date(&mut text, t.date());
    for (separator, n) in [('T', t.hour()), (':', t.minute()), (':', t.second())] {
        text.push(separator);
        push_digits(&mut text, n, 2);
    }
    text.push_str("+00:00");
    text
}

/// `YYYY-MM-DD`.
pub fn date(d: NaiveDate) -> String {
    let mut text = String::with_capacity(10);
    push_date(&mut text, d);
    text
}

/// Dates are written digit by digit: `format!` costs more than the rest of the field.
fn push_date(text: &mut String, d: NaiveDate) {
    match u32::try_from(d.year()) {
        Ok(year) if year <= 9999 => push_digits(text, year, 4),
        _ => write!(text, "{:04}", d.year()).expect("a String takes any write"),
    }
    text.push('-');
    push_digits(text, d.month(), 2);
    text.push('-');
    push_digits(text, d.day(), 2);
}

/// The last `width` decimal digits of `n`, zero-padded.
fn push_digits(text: &mut String, n: u32, width: u32) {
    for place in (0..width).rev() {
        let digit = (n / 10u32.pow(place) % 10) as u8;
        text.push(char::from(b'0' + digit));
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn writes_every_variant_as_serde_json_would_in_field_order() {
        let tree = object([
            ("null", Json::Null),
            ("yes", true.into()),
            ("count", Json::Int(-3)),
            ("large", u32::MAX.into()),
            ("ratio", Json::Float(1.5)),
            ("whole", Json::Float(2.0)),
            ("nan", Json::Float(f64::NAN)),
            ("infinite", Json::Float(f64::INFINITY)),
            ("static", "fixed".into()),
            ("drawn", String::from("drawn").into()),
            (
                "nested",
                array([
                    array([Json::Int(1), array([])]),
                    object([("inner", object([("deep", "x".into())]))]),
                    object([]),
                ]),
            ),
        ]);
        let expected = json!({
            "null": null,
            "yes": true,
            "count": -3,
            "large": 4_294_967_295u32,
            "ratio": 1.5,
            "whole": 2.0,
            "nan": null,
            "infinite": null,
            "static": "fixed",
            "drawn": "drawn",
            "nested": [[1, []], {"inner": {"deep": "x"}}, {}],
        });
        let mut writer = TextWriter::default();
        tree.write(&mut writer);
        let resource = Resource::written("k".to_owned(), writer);
        assert_eq!(resource.to_value(), expected);
        // Objects compare without regard to order; their text does not.
        assert_eq!(resource.json(), serde_json::to_string(&expected).unwrap());
        assert_eq!(
            resource.json(),
            r#"{"null":null,"yes":true,"count":-3,"large":4294967295,"ratio":1.5,"whole":2.0,"nan":null,"infinite":null,"static":"fixed","drawn":"drawn","nested":[[1,[]],{"inner":{"deep":"x"}},{}]}"#
        );
    }

    #[test]
    fn static_strings_stay_borrowed() {
        assert!(matches!(Json::from("x"), Json::Str(Cow::Borrowed(_))));
        assert!(matches!(
            Json::from(String::from("x")),
            Json::Str(Cow::Owned(_))
        ));
        let concept = Concept {
            code: "c",
            display: "d",
        };
        let borrowed = |json: &Json| matches!(json, Json::Str(Cow::Borrowed(_)));
        let coding = coding("s", concept);
        for field in ["system", "code", "display"] {
            assert!(borrowed(coding.get(field).unwrap()), "{field}");
        }
        let id = identifier(ResourceType::Patient, "p1");
        assert!(borrowed(id.get("system").unwrap()));
        assert_eq!(
            id.get("system").and_then(Json::as_str),
            Some([IDENTIFIER_SYSTEM_BASE, "/patient"].concat().as_str())
        );
        assert!(borrowed(reference("Patient/p1").get("reference").unwrap()));
    }

    #[test]
    fn body_keeps_resource_type_and_id_first() {
        let (key, fields) = Body::new(ResourceType::Encounter, "e1".to_owned(), 4)
            .set("status", "finished")
            .identified()
            .into_parts();
        assert_eq!(key, "Encounter/e1");
        let names: Vec<&str> = fields.iter().map(|(name, _)| *name).collect();
        assert_eq!(names, ["resourceType", "id", "status", "identifier"]);
        assert_eq!(fields[0].1, Json::from("Encounter"));
        assert_eq!(fields[1].1, Json::from(String::from("e1")));
    }
}
