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

use super::codes::{Concept, LOINC, Measure, UCUM, US_DOLLAR};
use super::types::ResourceType;
use crate::fhir::{IDENTIFIER_SYSTEM_BASE, Resource, TextWriter};

// Generating is a large share of the loader's CPU time, and most of a resource is fixed text:
// keys, systems, codes and displays. `Json` borrows all of those, so a field's value allocates
// only for what is drawn (ids, names) and for its objects' field lists. The commonest shapes
// (codings, quantities, references, dates, periods, amounts) are variants of their own that
// allocate nothing, references share their key, and a [`Body`] writes each field as it is set.
// Only what the loader reads (type, id, identifiers, references) goes through the text
// writer's steps; every other value is written as plain text in one go.

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
    /// `{"reference": key}`, to a resource the generator made: the key needs no escapes.
    Reference(Arc<str>),
    /// The fhirgen identifier of a resource of this type and (generated) id.
    Identifier(ResourceType, Arc<str>),
    /// A Coding in this system.
    Coding(&'static str, Concept),
    /// A CodeableConcept of one Coding in this system, with its display as the text if `.2`.
    Codeable(&'static str, Concept, bool),
    /// A list of one CodeableConcept of one Coding in this system, and no text.
    CodedList(&'static str, Concept),
    /// What a measure measures: its LOINC codes, with the first one's display as the text.
    Loinc(&'static Measure),
    /// A value of a measure, in its UCUM unit; whole numbers are written without a fraction.
    Quantity(&'static Measure, f64),
    /// A dateTime at these Unix seconds, as [`date_time`] writes it.
    DateTime(i64),
    /// A Period between these Unix seconds.
    Period(i64, i64),
    /// A Money amount in US dollars, given in cents.
    Money(i64),
}

impl Json {
    /// Writes the value as serde_json writes JSON: a float that is not finite becomes null,
    /// as `serde_json::Value::from(f64)` has it. What holds no reference is written as plain
    /// text, in one go.
    pub fn write(&self, out: &mut TextWriter) {
        if self.is_plain() {
            out.raw_value(|text| self.write_plain(text));
        } else {
            self.write_noted(out);
        }
    }

    /// Whether the writer has nothing to note in the value: no reference, no identifier.
    fn is_plain(&self) -> bool {
        match self {
            Json::Reference(_) | Json::Identifier(..) => false,
            Json::Array(items) => items.iter().all(Json::is_plain),
            Json::Object(fields) => fields.iter().all(|(_, value)| value.is_plain()),
            _ => true,
        }
    }

    /// Writes the value through the writer's own steps, so that it notes the spans of what
    /// the loader reads: references, identifiers, the resource's type and id.
    fn write_noted(&self, out: &mut TextWriter) {
        match self {
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
            Json::Reference(key) => {
                out.begin_object();
                out.plain_key("reference");
                out.plain_string(key);
                out.end_object();
            }
            Json::Identifier(t, id) => write_identifier(out, *t, id),
            plain => out.raw_value(|text| plain.write_plain(text)),
        }
    }

    /// Writes an object; the members the writer notes at the top of a resource (its type, id
    /// and identifiers) go through its own steps whatever they hold.
    fn write_object(fields: &[(&'static str, Json)], out: &mut TextWriter) {
        out.begin_object();
        for (key, value) in fields {
            out.plain_key(key);
            match *key {
                "resourceType" | "id" => value.write_noted(out),
                "identifier" => value.write_identifiers(out),
                _ => value.write(out),
            }
        }
        out.end_object();
    }

    /// Writes a list of identifiers with every entry noted, whatever it holds.
    fn write_identifiers(&self, out: &mut TextWriter) {
        match self {
            Json::Array(items) => {
                out.begin_array();
                for item in items {
                    item.write_noted(out);
                }
                out.end_array();
            }
            other => other.write_noted(out),
        }
    }

    /// Writes a value that [`Json::is_plain`] as compact JSON text.
    fn write_plain(&self, text: &mut String) {
        match self {
            Json::Null => text.push_str("null"),
            Json::Bool(b) => text.push_str(if *b { "true" } else { "false" }),
            Json::Int(n) => text.push_str(itoa::Buffer::new().format(*n)),
            Json::Float(x) if x.is_finite() => {
                text.push_str(zmij::Buffer::new().format_finite(*x));
            }
            Json::Float(_) => text.push_str("null"),
            Json::Str(Cow::Borrowed(s)) => push_plain_string(text, s),
            Json::Str(Cow::Owned(s)) => TextWriter::push_string(text, s),
            Json::Array(items) => {
                text.push('[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        text.push(',');
                    }
                    item.write_plain(text);
                }
                text.push(']');
            }
            Json::Object(fields) => {
                text.push('{');
                for (i, (key, value)) in fields.iter().enumerate() {
                    text.push_str(if i > 0 { ",\"" } else { "\"" });
                    text.push_str(key);
                    text.push_str("\":");
                    value.write_plain(text);
                }
                text.push('}');
            }
            Json::Coding(system, concept) => push_coding(text, system, concept),
            Json::Codeable(system, concept, with_text) => {
                text.push_str("{\"coding\":[");
                push_coding(text, system, concept);
                text.push(']');
                if *with_text {
                    text.push_str(",\"text\":");
                    push_plain_string(text, concept.display);
                }
                text.push('}');
            }
            Json::CodedList(system, concept) => {
                text.push('[');
                Json::Codeable(system, *concept, false).write_plain(text);
                text.push(']');
            }
            Json::Loinc(measure) => {
                text.push_str("{\"coding\":[");
                push_coding(text, LOINC, &measure.loinc);
                if let Some(also) = &measure.also {
                    text.push(',');
                    push_coding(text, LOINC, also);
                }
                text.push_str("],\"text\":");
                push_plain_string(text, measure.loinc.display);
                text.push('}');
            }
            Json::Quantity(measure, value) => {
                text.push_str("{\"value\":");
                if measure.decimals == 0 {
                    Json::Int(*value as i64).write_plain(text);
                } else {
                    Json::Float(*value).write_plain(text);
                }
                text.push_str(",\"unit\":");
                push_plain_string(text, measure.unit);
                text.push_str(",\"system\":");
                push_plain_string(text, UCUM);
                text.push_str(",\"code\":");
                push_plain_string(text, measure.unit);
                text.push('}');
            }
            Json::DateTime(at) => push_date_time(text, *at),
            Json::Period(start, end) => {
                text.push_str("{\"start\":");
                push_date_time(text, *start);
                text.push_str(",\"end\":");
                push_date_time(text, *end);
                text.push('}');
            }
            Json::Money(cents) => {
                text.push_str("{\"value\":");
                push_dollars(text, *cents);
                text.push_str(",\"currency\":");
                push_plain_string(text, US_DOLLAR);
                text.push('}');
            }
            Json::Reference(_) | Json::Identifier(..) => {
                unreachable!("a value holding a reference or an identifier is not plain")
            }
        }
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

/// The fhirgen identifier of resource `id` of type `t`, through the writer's own steps: the
/// loader reads it.
fn write_identifier(out: &mut TextWriter, t: ResourceType, id: &str) {
    out.begin_object();
    out.plain_key("system");
    out.plain_string(identifier_system(t));
    out.plain_key("value");
    out.plain_string(id);
    out.end_object();
}

/// `cents / 100` as serde_json writes that float (`12.5`, `3.0`), from the integer: the
/// shortest decimal that reads back as the nearest float to `cents / 100` is `cents / 100`
/// itself without its trailing zeros, for any amount short of 10^13 dollars.
fn push_dollars(text: &mut String, cents: i64) {
    debug_assert!(
        cents.unsigned_abs() < 1_000_000_000_000_000,
        "{cents} cents"
    );
    if cents < 0 {
        text.push('-');
    }
    let cents = cents.unsigned_abs();
    text.push_str(itoa::Buffer::new().format(cents / 100));
    let fraction = (cents % 100) as u8;
    let digits = [b'.', b'0' + fraction / 10, b'0' + fraction % 10];
    let kept = match fraction {
        0 => 2,
        f if f % 10 == 0 => 2,
        _ => 3,
    };
    text.push_str(std::str::from_utf8(&digits[..kept]).expect("digits are ASCII"));
}

/// A fixed string, such as the generator's codes and displays: it needs no escapes.
fn push_plain_string(text: &mut String, s: &str) {
    debug_assert!(
        !s.contains(['"', '\\']) && !s.contains(char::is_control),
        "{s:?} needs escapes"
    );
    text.push('"');
    text.push_str(s);
    text.push('"');
}

fn push_coding(text: &mut String, system: &str, concept: &Concept) {
    text.push_str("{\"system\":");
    push_plain_string(text, system);
    text.push_str(",\"code\":");
    push_plain_string(text, concept.code);
    text.push_str(",\"display\":");
    push_plain_string(text, concept.display);
    text.push('}');
}

fn push_date_time(text: &mut String, at: i64) {
    match DateTimeText::new(at) {
        Some(date_time) => push_plain_string(text, date_time.as_str()),
        None => TextWriter::push_string(text, &date_time(at)),
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

/// A resource body built field by field, in FHIR's element order, each field written as it
/// is set: a resource is never held as a tree.
pub struct Body {
    resource_type: ResourceType,
    key: String,
    text: TextWriter,
    /// The fields set so far, to catch one set twice.
    #[cfg(debug_assertions)]
    keys: Vec<&'static str>,
}

impl Body {
    pub fn new(resource_type: ResourceType, id: String) -> Self {
        let key = key(resource_type, &id);
        let mut text = TextWriter::default();
        text.begin_object();
        text.plain_key("resourceType");
        text.plain_string(resource_type.name());
        text.plain_key("id");
        text.plain_string(&id);
        Self {
            resource_type,
            key,
            text,
            #[cfg(debug_assertions)]
            keys: vec!["resourceType", "id"],
        }
    }

    /// `Type/id` of the resource.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// Adds the fhirgen identifier of the resource: how re-runs find it again.
    pub fn identified(mut self) -> Self {
        self.begin_field("identifier");
        self.text.begin_array();
        let id = &self.key[self.resource_type.name().len() + 1..];
        write_identifier(&mut self.text, self.resource_type, id);
        self.text.end_array();
        self
    }

    pub fn set(mut self, key: &'static str, value: impl Into<Json>) -> Self {
        self.begin_field(key);
        let value = value.into();
        match key {
            "identifier" => value.write_identifiers(&mut self.text),
            _ => value.write(&mut self.text),
        }
        self
    }

    pub fn set_some(self, key: &'static str, value: Option<impl Into<Json>>) -> Self {
        match value {
            Some(value) => self.set(key, value),
            None => self,
        }
    }

    fn begin_field(&mut self, key: &'static str) {
        #[cfg(debug_assertions)]
        {
            assert!(!self.keys.contains(&key), "{} sets {key} twice", self.key);
            self.keys.push(key);
        }
        self.text.plain_key(key);
    }

    /// The resource, its JSON text as written.
    pub fn build(mut self) -> Resource {
        self.text.end_object();
        Resource::written(self.key, self.text)
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
    Json::CodedList(system, concept)
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
        let (year, month, day) = civil_from_days(at.div_euclid(DAY_SECONDS));
        let year = u32::try_from(year).ok().filter(|year| *year <= 9999)?;
        let second = at.rem_euclid(DAY_SECONDS) as u32;
        let mut text = *b"0000-00-00T00:00:00+00:00";
        for (at, n) in [
            (0, year / 100),
            (2, year % 100),
            (5, month),
            (8, day),
            (11, second / 3600),
            (14, second / 60 % 60),
            (17, second % 60),
        ] {
            text[at] = b'0' + (n / 10) as u8;
            text[at + 1] = b'0' + (n % 10) as u8;
        }
        Some(Self(text))
    }

    fn as_str(&self) -> &str {
        std::str::from_utf8(&self.0).expect("digits and separators are ASCII")
    }
}

const DAY_SECONDS: i64 = 86_400;

/// The (proleptic Gregorian) year, month and day `days` after 1970-01-01: Howard Hinnant's
/// `civil_from_days`, a few multiplications where a calendar library walks its tables.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1_460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let shifted_month = (5 * day_of_year + 2) / 153;
    let day = (day_of_year - (153 * shifted_month + 2) / 5 + 1) as u32;
    let month = if shifted_month < 10 {
        shifted_month + 3
    } else {
        shifted_month - 9
    } as u32;
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
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
    use crate::generate::codes;

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
            ("quoted", String::from("a \"b\"\n").into()),
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
            ("coded list", coded_list("s", concept)),
            ("loinc", Json::Loinc(&codes::OXYGEN_SATURATION)),
            ("whole quantity", Json::Quantity(&codes::SYSTOLIC, 120.4)),
            (
                "fraction quantity",
                Json::Quantity(&codes::BODY_TEMPERATURE, 36.6),
            ),
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
        let oximetry = &codes::OXYGEN_SATURATION;
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
            "quoted": "a \"b\"\n",
            "nested": [[1, []], {"inner": {"deep": "x"}}, {}],
            "subject": {"reference": "Patient/p1"},
            "identifier": [{"system": system, "value": "p1"}],
            "coding": {"system": "s", "code": "c", "display": "d"},
            "coded": {"coding": [{"system": "s", "code": "c", "display": "d"}]},
            "codeable": {"coding": [{"system": "s", "code": "c", "display": "d"}], "text": "d"},
            "coded list": [{"coding": [{"system": "s", "code": "c", "display": "d"}]}],
            "loinc": {
                "coding": [
                    {"system": LOINC, "code": "59408-5", "display": oximetry.loinc.display},
                    {"system": LOINC, "code": "2708-6", "display": oximetry.also.unwrap().display},
                ],
                "text": oximetry.loinc.display,
            },
            "whole quantity": {"value": 120, "unit": "mm[Hg]", "system": UCUM, "code": "mm[Hg]"},
            "fraction quantity": {"value": 36.6, "unit": "Cel", "system": UCUM, "code": "Cel"},
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
            r#"{"null":null,"yes":true,"count":-3,"large":4294967295,"ratio":1.5,"whole":2.0,"nan":null,"infinite":null,"static":"fixed","drawn":"drawn","quoted":"a \"b\"\n","nested":[[1,[]],{"inner":{"deep":"x"}},{}],"subject":{"reference":"Patient/p1"}"#
        ));
        // The loader finds references and identifiers in the text, however they were built.
        assert_eq!(resource.references().collect::<Vec<_>>(), ["Patient/p1"]);
    }

    #[test]
    fn dates_are_written_as_chrono_reads_them() {
        // Every day from 1800 to 2200, at a few times of day.
        for day in -62_000..85_000i64 {
            for second in [0, 1, 3_599, 43_210, 86_399] {
                let at = day * DAY_SECONDS + second;
                let text = DateTimeText::new(at).unwrap();
                let expected = utc(at).format("%Y-%m-%dT%H:%M:%S+00:00").to_string();
                assert_eq!(text.as_str(), expected, "{at}");
            }
        }
        assert!(DateTimeText::new(300_000_000_000).is_none());
    }

    #[test]
    fn amounts_are_written_as_serde_json_writes_their_float() {
        let samples = (-1_000..=250_000).chain([
            999_999_999,
            1_000_000_001,
            123_456_789_012_345,
            999_999_999_999_999,
        ]);
        for cents in samples {
            let mut text = String::new();
            push_dollars(&mut text, cents);
            let float = serde_json::to_string(&(cents as f64 / 100.0)).unwrap();
            assert_eq!(text, float, "{cents} cents");
        }
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
        let resource = Body::new(ResourceType::Encounter, "e1".to_owned())
            .set("status", "finished")
            .identified()
            .set("subject", reference("Patient/p1"))
            .build();
        assert_eq!(resource.key, "Encounter/e1");
        let system = [IDENTIFIER_SYSTEM_BASE, "/encounter"].concat();
        assert_eq!(
            resource.json(),
            format!(
                r#"{{"resourceType":"Encounter","id":"e1","status":"finished","identifier":[{{"system":"{system}","value":"e1"}}],"subject":{{"reference":"Patient/p1"}}}}"#
            )
        );
        assert_eq!(resource.resource_type(), "Encounter");
        let identifiers: Vec<_> = resource.identifiers().collect();
        assert_eq!(identifiers, [(system.as_str().into(), "e1".into())]);
        assert_eq!(resource.references().collect::<Vec<_>>(), ["Patient/p1"]);
    }

    #[test]
    #[should_panic(expected = "sets status twice")]
    fn body_refuses_a_field_set_twice() {
        Body::new(ResourceType::Encounter, "e1".to_owned())
            .set("status", "finished")
            .set("status", "planned");
    }
}
