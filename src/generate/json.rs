//! Building FHIR JSON: resource bodies and the datatypes they are made of (Identifier, Coding,
//! CodeableConcept, Reference, Period, Address, dates). Shared by the patient records and the
//! shared record; it knows nothing of either.

use std::fmt::Write;

use chrono::{Datelike, NaiveDate, Timelike};
use fake::Fake;
use fake::faker::address::en::{BuildingNumber, CitySuffix, PostCode, StateAbbr, StreetName};
use fake::faker::name::en::LastName;
use fake::faker::phone_number::en::CellNumber;
use rand::rngs::ChaCha8Rng;
use serde_json::{Map, Value};

use super::codes::Concept;
use super::types::ResourceType;
use crate::fhir::{IDENTIFIER_SYSTEM_BASE, Resource};

// Bodies are built straight into maps allocated at their final size: `json!` would grow each
// map as it fills and copy every nested `Value` it is given through the serializer, and
// generating is a large share of the loader's CPU time.

/// A resource body built field by field, in FHIR's element order.
pub struct Body {
    resource_type: ResourceType,
    key: String,
    fields: Map<String, Value>,
    /// The most fields the resource can have: its map never grows.
    capacity: usize,
}

impl Body {
    /// `capacity` counts every field the resource can have, resourceType and id included.
    pub fn new(resource_type: ResourceType, id: String, capacity: usize) -> Self {
        let key = key(resource_type, &id);
        let mut fields = Map::with_capacity(capacity);
        fields.insert("resourceType".to_owned(), resource_type.name().into());
        fields.insert("id".to_owned(), id.into());
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

    /// Adds the fhirgen identifier of a resource of this (lower-case) type: how re-runs find
    /// it again.
    pub fn identified(self, lower_type: &str) -> Self {
        let id = &self.key[self.resource_type.name().len() + 1..];
        let identifiers = array([identifier(lower_type, id)]);
        self.set("identifier", identifiers)
    }

    pub fn set(mut self, key: &str, value: impl Into<Value>) -> Self {
        self.fields.insert(key.to_owned(), value.into());
        self
    }

    pub fn set_some(self, key: &str, value: Option<impl Into<Value>>) -> Self {
        match value {
            Some(value) => self.set(key, value),
            None => self,
        }
    }

    pub fn build(self) -> Resource {
        debug_assert!(
            self.fields.len() <= self.capacity,
            "{} has more fields than its capacity",
            self.key
        );
        Resource::with_key(self.key, &Value::Object(self.fields))
    }
}

/// A JSON object with these fields, in this order.
pub fn object<const N: usize>(fields: [(&str, Value); N]) -> Value {
    let mut map = Map::with_capacity(N);
    for (key, value) in fields {
        map.insert(key.to_owned(), value);
    }
    Value::Object(map)
}

/// A JSON array of these items.
pub fn array<const N: usize>(items: [Value; N]) -> Value {
    Value::Array(items.into())
}

/// `Type/id`: how resources refer to each other.
pub fn key(t: ResourceType, id: &str) -> String {
    [t.name(), "/", id].concat()
}

/// The fhirgen identifier of a resource of this (lower-case) type.
pub fn identifier(lower_type: &str, id: &str) -> Value {
    object([
        (
            "system",
            [IDENTIFIER_SYSTEM_BASE, "/", lower_type].concat().into(),
        ),
        ("value", id.into()),
    ])
}

pub fn coding(system: &str, concept: Concept) -> Value {
    object([
        ("system", system.into()),
        ("code", concept.code.into()),
        ("display", concept.display.into()),
    ])
}

/// A CodeableConcept of one coding and no text.
pub fn coded(system: &str, concept: Concept) -> Value {
    object([("coding", array([coding(system, concept)]))])
}

pub fn codeable(system: &str, concept: Concept) -> Value {
    object([
        ("coding", array([coding(system, concept)])),
        ("text", concept.display.into()),
    ])
}

/// A list of one CodeableConcept of one coding and no text.
pub fn coded_list(system: &str, concept: Concept) -> Value {
    array([coded(system, concept)])
}

pub fn reference(key: impl Into<String>) -> Value {
    object([("reference", Value::String(key.into()))])
}

/// A Period from `start` to `end` (Unix seconds).
pub fn period(start: i64, end: i64) -> Value {
    object([
        ("start", date_time(start).into()),
        ("end", date_time(end).into()),
    ])
}

pub fn phone(rng: &mut ChaCha8Rng) -> String {
    CellNumber().fake_with_rng(rng)
}

/// A US street address, of this `use` if any.
pub fn address(rng: &mut ChaCha8Rng, address_use: Option<&str>) -> Value {
    let number: String = BuildingNumber().fake_with_rng(rng);
    let street: String = StreetName().fake_with_rng(rng);
    let town: &str = LastName().fake_with_rng(rng);
    let suffix: &str = CitySuffix().fake_with_rng(rng);
    let state: &str = StateAbbr().fake_with_rng(rng);
    let postal_code: String = PostCode().fake_with_rng(rng);
    let mut fields = Map::with_capacity(6);
    fields.insert(
        "line".to_owned(),
        array([[number.as_str(), " ", &street].concat().into()]),
    );
    fields.insert("city".to_owned(), [town, suffix].concat().into());
    fields.insert("state".to_owned(), state.into());
    fields.insert("postalCode".to_owned(), postal_code.into());
    fields.insert("country".to_owned(), "US".into());
    if let Some(address_use) = address_use {
        fields.insert("use".to_owned(), address_use.into());
    }
    Value::Object(fields)
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
