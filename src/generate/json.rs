//! Building FHIR JSON: resource bodies and the datatypes they are made of (Identifier, Coding,
//! CodeableConcept, Reference, Period, Address, dates). Shared by the patient records and the
//! shared record; it knows nothing of either.

use std::borrow::Cow;
use std::fmt::Write;
use std::sync::{Arc, LazyLock};

use chrono::{Datelike, NaiveDate, Timelike};
use fake::Fake;
use fake::faker::address::en::{BuildingNumber, CitySuffix, PostCode, StateAbbr, StreetName};
use fake::faker::name::en::LastName;
use fake::faker::phone_number::en::CellNumber;
use rand::rngs::ChaCha8Rng;

use super::codes::{Concept, US_DOLLAR};
use super::types::ResourceType;
use crate::fhir::{IDENTIFIER_SYSTEM_BASE, Resource, TextWriter};

// Generating is a large share of the loader's CPU time, and most of a resource is fixed text:
// keys, systems, codes and displays. `Json` borrows all of those, so building a resource
// allocates only for what is drawn (ids, dates, names) and for its objects' field lists, each
// allocated at its final size. The commonest shapes (codings, references, dates, periods,
// amounts) are variants of their own: they allocate nothing, and those that hold no reference
// are written as text pieces, not key by key.

/// A JSON value as the generator builds it: keys are static, strings borrow when they can,
/// objects keep FHIR's element order.
#[derive(Debug, Clone, PartialEq)]
pub enum Json {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(Cow<'static, str>),
    /// A string many resources hold (an id): cloned without copying.
    Shared(Arc<str>),
    Array(Vec<Json>),
    Object(Vec<(&'static str, Json)>),
    /// `{"reference": key}`.
    Reference(Arc<str>),
    /// The fhirgen identifier of a resource of this type and id.
    Identifier(ResourceType, Arc<str>),
    /// A Coding in this system.
    Coding(&'static str, Concept),
    /// A CodeableConcept of one Coding in this system, with its display as the text if `.2`.
    Codeable(&'static str, Concept, bool),
    /// A dateTime at these Unix seconds, as [`date_time`] writes it.
    DateTime(i64),
    /// A Period between these Unix seconds.
    Period(i64, i64),
    /// A Money amount in US dollars, given in cents.
    Money(i64),
}

impl Json {
    /// Writes the value as serde_json writes JSON: a float that is not finite becomes null,
    /// as `serde_json::Value::from(f64)` has it.
    pub fn write(&self, out: &mut TextWriter) {
        match self {
            Json::Null => out.scalar("null"),
            Json::Bool(b) => out.scalar(if *b { "true" } else { "false" }),
            Json::Int(n) => out.raw_value(&[itoa::Buffer::new().format(*n)]),
            Json::Float(x) => write_float(*x, out),
            Json::Str(Cow::Borrowed(s)) => out.plain_string(s),
            Json::Str(Cow::Owned(s)) => out.string(s),
            Json::Shared(s) => out.string(s),
            Json::Array(items) => {
                out.begin_array();
                for item in items {
                    item.write(out);
                }
                out.end_array();
            }
            Json::Object(fields) => Json::write_object(fields, out),
            Json::Reference(key) => {
                out.begin_object();
                out.plain_key("reference");
                out.string(key);
                out.end_object();
            }
            Json::Identifier(t, id) => {
                out.begin_object();
                out.plain_key("system");
                out.plain_string(identifier_system(*t));
                out.plain_key("value");
                out.string(id);
                out.end_object();
            }
            Json::Coding(system, concept) => {
                debug_assert_plain(system, concept);
                out.raw_value(&[
                    "{\"system\":\"",
                    system,
                    "\",\"code\":\"",
                    concept.code,
                    "\",\"display\":\"",
                    concept.display,
                    "\"}",
                ]);
            }
            Json::Codeable(system, concept, text) => {
                debug_assert_plain(system, concept);
                let (text_key, display) = match text {
                    true => (",\"text\":\"", concept.display),
                    false => ("", ""),
                };
                out.raw_value(&[
                    "{\"coding\":[{\"system\":\"",
                    system,
                    "\",\"code\":\"",
                    concept.code,
                    "\",\"display\":\"",
                    concept.display,
                    "\"}]",
                    text_key,
                    display,
                    if *text { "\"}" } else { "}" },
                ]);
            }
            Json::DateTime(at) => match DateTimeText::new(*at) {
                Some(text) => out.raw_value(&["\"", text.as_str(), "\""]),
                None => out.string(&date_time(*at)),
            },
            Json::Period(start, end) => {
                match (DateTimeText::new(*start), DateTimeText::new(*end)) {
                    (Some(start), Some(end)) => out.raw_value(&[
                        "{\"start\":\"",
                        start.as_str(),
                        "\",\"end\":\"",
                        end.as_str(),
                        "\"}",
                    ]),
                    _ => Json::write_object(
                        &[
                            ("start", date_time(*start).into()),
                            ("end", date_time(*end).into()),
                        ],
                        out,
                    ),
                }
            }
            Json::Money(cents) => {
                let mut value = zmij::Buffer::new();
                out.raw_value(&[
                    "{\"value\":",
                    value.format_finite(*cents as f64 / 100.0),
                    ",\"currency\":\"",
                    US_DOLLAR,
                    "\"}",
                ]);
            }
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
            Json::Shared(s) => Some(s),
            _ => None,
        }
    }
}

/// A float as serde_json writes it; one that is not finite becomes null.
fn write_float(x: f64, out: &mut TextWriter) {
    if x.is_finite() {
        out.raw_value(&[zmij::Buffer::new().format_finite(x)]);
    } else {
        out.scalar("null");
    }
}

/// Codings are written without looking for escapes: their text is fixed and has none.
fn debug_assert_plain(system: &str, concept: &Concept) {
    debug_assert!(
        [system, concept.code, concept.display]
            .iter()
            .all(|s| !s.contains(['"', '\\']) && !s.contains(char::is_control)),
        "{system} {concept:?} needs escapes"
    );
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
    id: Arc<str>,
    fields: Vec<(&'static str, Json)>,
    /// The most fields the resource can have: its field list never grows.
    capacity: usize,
}

impl Body {
    /// `capacity` counts every field the resource can have, resourceType and id included.
    pub fn new(resource_type: ResourceType, id: String, capacity: usize) -> Self {
        let key = key(resource_type, &id);
        let id: Arc<str> = id.into();
        let mut fields = Vec::with_capacity(capacity);
        fields.push(("resourceType", resource_type.name().into()));
        fields.push(("id", Json::Shared(id.clone())));
        Self {
            resource_type,
            key,
            id,
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
        let identifiers = array([Json::Identifier(self.resource_type, self.id.clone())]);
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
    Json::Identifier(t, id.into())
}

pub fn coding(system: &'static str, concept: Concept) -> Json {
    Json::Coding(system, concept)
}

/// A CodeableConcept of one coding and no text.
pub fn coded(system: &'static str, concept: Concept) -> Json {
    Json::Codeable(system, concept, false)
}

pub fn codeable(system: &'static str, concept: Concept) -> Json {
    Json::Codeable(system, concept, true)
}

/// A list of one CodeableConcept of one coding and no text.
pub fn coded_list(system: &'static str, concept: Concept) -> Json {
    array([coded(system, concept)])
}

pub fn reference(key: impl Into<Arc<str>>) -> Json {
    Json::Reference(key.into())
}

/// A Period from `start` to `end` (Unix seconds).
pub fn period(start: i64, end: i64) -> Json {
    Json::Period(start, end)
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
    if let Some(text) = DateTimeText::new(at) {
        return text.as_str().to_owned();
    }
    let t = utc(at);
    let mut text = String::with_capacity(25);
    push_date(&mut text, t.date());
    for (separator, n) in [('T', t.hour()), (':', t.minute()), (':', t.second())] {
        text.push(separator);
        push_digits(&mut text, n, 2);
    }
    text.push_str("+00:00");
    text
}

fn utc(at: i64) -> chrono::NaiveDateTime {
    chrono::DateTime::from_timestamp(at, 0)
        .expect("time is in range")
        .naive_utc()
}

/// A [`date_time`] of a four-digit year, written on the stack: most fields are dates.
struct DateTimeText([u8; 25]);

impl DateTimeText {
    fn new(at: i64) -> Option<Self> {
        let t = utc(at);
        let year = u32::try_from(t.year()).ok().filter(|year| *year <= 9999)?;
        let mut text = *b"0000-00-00T00:00:00+00:00";
        for (at, n, width) in [
            (0, year, 4),
            (5, t.month(), 2),
            (8, t.day(), 2),
            (11, t.hour(), 2),
            (14, t.minute(), 2),
            (17, t.second(), 2),
        ] {
            let mut n = n;
            for digit in text[at..at + width].iter_mut().rev() {
                *digit = b'0' + (n % 10) as u8;
                n /= 10;
            }
        }
        Some(Self(text))
    }

    fn as_str(&self) -> &str {
        std::str::from_utf8(&self.0).expect("digits and separators are ASCII")
    }
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
        let concept = Concept {
            code: "c",
            display: "d",
        };
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
            ("shared", Json::Shared("sh\"ared".into())),
            (
                "nested",
                array([
                    array([Json::Int(1), array([])]),
                    object([("inner", object([("deep", "x".into())]))]),
                    object([]),
                ]),
            ),
            ("subject", reference("Patient/p1")),
            (
                "identifier",
                array([identifier(ResourceType::Patient, "p1")]),
            ),
            ("coding", coding("s", concept)),
            ("coded", coded("s", concept)),
            ("codeable", codeable("s", concept)),
            ("at", Json::DateTime(1_700_000_000)),
            ("early", Json::DateTime(-50_000_000_000)),
            ("late", Json::DateTime(300_000_000_000)),
            ("period", period(0, 86_399)),
            (
                "amounts",
                array([
                    Json::Money(12_345),
                    Json::Money(100),
                    Json::Money(0),
                    Json::Money(-5),
                ]),
            ),
        ]);
        let system = [IDENTIFIER_SYSTEM_BASE, "/patient"].concat();
        let money = |value: f64| json!({"value": value, "currency": "USD"});
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
            "shared": "sh\"ared",
            "nested": [[1, []], {"inner": {"deep": "x"}}, {}],
            "subject": {"reference": "Patient/p1"},
            "identifier": [{"system": system, "value": "p1"}],
            "coding": {"system": "s", "code": "c", "display": "d"},
            "coded": {"coding": [{"system": "s", "code": "c", "display": "d"}]},
            "codeable": {"coding": [{"system": "s", "code": "c", "display": "d"}], "text": "d"},
            "at": "2023-11-14T22:13:20+00:00",
            "early": "0385-07-25T07:06:40+00:00",
            "late": "11476-08-15T05:20:00+00:00",
            "period": {"start": "1970-01-01T00:00:00+00:00", "end": "1970-01-01T23:59:59+00:00"},
            "amounts": [money(123.45), money(1.0), money(0.0), money(-0.05)],
        });
        let mut writer = TextWriter::default();
        tree.write(&mut writer);
        let resource = Resource::written("k".to_owned(), writer);
        assert_eq!(resource.to_value(), expected);
        // Objects compare without regard to order; their text does not.
        assert_eq!(resource.json(), serde_json::to_string(&expected).unwrap());
        assert!(resource.json().starts_with(
            r#"{"null":null,"yes":true,"count":-3,"large":4294967295,"ratio":1.5,"whole":2.0,"nan":null,"infinite":null,"static":"fixed","drawn":"drawn","shared":"sh\"ared","nested":[[1,[]],{"inner":{"deep":"x"}},{}],"subject":{"reference":"Patient/p1"}"#
        ));
        // The loader finds references and identifiers in the text, however they were built.
        assert_eq!(resource.references().collect::<Vec<_>>(), ["Patient/p1"]);
    }

    #[test]
    fn fixed_strings_stay_borrowed_and_references_share_their_key() {
        assert!(matches!(Json::from("x"), Json::Str(Cow::Borrowed(_))));
        assert!(matches!(
            Json::from(String::from("x")),
            Json::Str(Cow::Owned(_))
        ));
        let subject = reference("Patient/p1");
        let (Json::Reference(key), Json::Reference(copy)) = (&subject, &subject.clone()) else {
            panic!("a reference is a Reference");
        };
        assert!(Arc::ptr_eq(key, copy));
    }

    #[test]
    fn body_keeps_resource_type_and_id_first_and_finds_its_identifier() {
        let (key, fields) = Body::new(ResourceType::Encounter, "e1".to_owned(), 4)
            .set("status", "finished")
            .identified()
            .into_parts();
        assert_eq!(key, "Encounter/e1");
        let names: Vec<&str> = fields.iter().map(|(name, _)| *name).collect();
        assert_eq!(names, ["resourceType", "id", "status", "identifier"]);
        assert_eq!(fields[0].1, Json::from("Encounter"));
        assert_eq!(fields[1].1, Json::Shared("e1".into()));
        let resource = Body::new(ResourceType::Encounter, "e1".to_owned(), 3)
            .identified()
            .build();
        let identifiers: Vec<_> = resource.identifiers().collect();
        let system = [IDENTIFIER_SYSTEM_BASE, "/encounter"].concat();
        assert_eq!(identifiers, [(system.as_str().into(), "e1".into())]);
    }
}
