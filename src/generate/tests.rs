//! Properties of whole generated data sets: exact counts, determinism, sharding, referential
//! integrity, dates, units, identifiers and FHIR shape.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use chrono::NaiveDate;
use serde_json::Value;

use super::codes::{self, Measure};
use super::names;
use super::*;
use crate::fhir::{IDENTIFIER_SYSTEM_BASE, Resource, references};
use ResourceType::*;

fn as_of() -> NaiveDate {
    NaiveDate::from_ymd_opt(2025, 6, 30).unwrap()
}

fn config(count: u64, seed: u64, shard: Shard) -> GeneratorConfig {
    GeneratorConfig {
        seed,
        as_of: as_of(),
        count,
        shard,
        types: TypeSet::ALL,
        attachment_size: None,
    }
}

/// The configuration of `--types TYPES`.
fn typed(count: u64, shard: Shard, types: &[ResourceType]) -> GeneratorConfig {
    GeneratorConfig {
        types: TypeSet::of(types),
        ..config(count, 21, shard)
    }
}

fn records(count: u64, seed: u64, shard: Shard) -> Vec<Record> {
    Generator::new(config(count, seed, shard)).collect()
}

fn lines_of(config: GeneratorConfig) -> Vec<String> {
    Generator::new(config)
        .flat_map(|r| r.resources)
        .map(|r| serde_json::to_string(&r.to_value()).unwrap())
        .collect()
}

fn type_of(resource: &Resource) -> ResourceType {
    ResourceType::from_name(resource.resource_type()).unwrap()
}

fn resources(count: u64, seed: u64) -> Vec<Resource> {
    records(count, seed, Shard::WHOLE)
        .into_iter()
        .flat_map(|r| r.resources)
        .collect()
}

fn lines(count: u64, seed: u64, shard: Shard) -> Vec<String> {
    records(count, seed, shard)
        .iter()
        .flat_map(|r| &r.resources)
        .map(|r| serde_json::to_string(&r.to_value()).unwrap())
        .collect()
}

#[test]
fn count_is_exact() {
    let counts = (0..=300).chain([999, 1000, 4321, 10_000, 54_321]);
    for count in counts {
        assert_eq!(resources(count, 1).len() as u64, count, "count {count}");
    }
}

#[test]
fn tiny_counts_still_make_sense() {
    let types = |count| -> Vec<String> {
        resources(count, 3)
            .iter()
            .map(|r| r.resource_type().to_owned())
            .collect()
    };
    assert_eq!(types(1), ["Organization"]);
    assert_eq!(types(2), ["Organization", "Practitioner"]);
    assert_eq!(
        types(3),
        ["Organization", "Practitioner", "PractitionerRole"]
    );
    assert_eq!(
        types(5),
        [
            "Organization",
            "Organization",
            "Location",
            "Practitioner",
            "PractitionerRole"
        ]
    );
    // The whole pool first: a provider, its location, a doctor and role, 7 insurers, 21 drugs.
    let first_patient = types(40);
    assert_eq!(first_patient[32], "Patient");
    assert_eq!(first_patient[31], "Medication");
    assert_eq!(first_patient.len(), 40);
}

#[test]
fn same_seed_same_bytes_other_seed_other_bytes() {
    assert_eq!(lines(3000, 11, Shard::WHOLE), lines(3000, 11, Shard::WHOLE));
    assert_ne!(lines(3000, 11, Shard::WHOLE), lines(3000, 12, Shard::WHOLE));
    let later = Generator::new(GeneratorConfig {
        as_of: NaiveDate::from_ymd_opt(2026, 1, 1).unwrap(),
        ..config(3000, 11, Shard::WHOLE)
    });
    let later: Vec<String> = later
        .flat_map(|r| r.resources)
        .map(|r| serde_json::to_string(&r.to_value()).unwrap())
        .collect();
    assert_ne!(later, lines(3000, 11, Shard::WHOLE));
}

/// Three shards of `whole` are disjoint, only the first has the shared record, and together they
/// are `whole`.
fn assert_shards_make_up(whole: GeneratorConfig) {
    let count = whole.count;
    let expected = lines_of(whole.clone());
    let mut union = Vec::new();
    for index in 0..3 {
        let shard = Shard { index, count: 3 };
        let part = GeneratorConfig {
            shard,
            ..whole.clone()
        };
        let records: Vec<Record> = Generator::new(part.clone()).collect();
        let has_shared = records.iter().any(|r| r.kind == RecordKind::Shared);
        assert_eq!(has_shared, index == 0, "count {count} shard {shard}");
        union.extend(lines_of(part));
    }
    assert_eq!(union.len(), expected.len(), "count {count}");
    let union: BTreeSet<String> = union.into_iter().collect();
    let expected: BTreeSet<String> = expected.into_iter().collect();
    assert_eq!(
        union.len() as u64,
        count,
        "shards overlap for count {count}"
    );
    assert_eq!(union, expected, "count {count}");
}

#[test]
fn shards_are_disjoint_and_make_up_the_whole() {
    for count in [7, 250, 5000] {
        assert_shards_make_up(config(count, 5, Shard::WHOLE));
    }
}

#[test]
fn every_shard_knows_the_shared_record() {
    let first = records(20_000, 2, Shard::WHOLE).remove(0);
    assert_eq!(first.kind, RecordKind::Shared);
    let other = Generator::new(config(20_000, 2, Shard { index: 2, count: 4 }));
    assert_eq!(other.shared_record(), first);
    assert_eq!(other.seed(), 2);
}

/// Every reference in `records` (a whole data set) is to the shared record or to an earlier
/// resource of the same record.
fn assert_references_resolve(records: &[Record]) {
    let shared: BTreeSet<&str> = records
        .iter()
        .filter(|r| r.kind == RecordKind::Shared)
        .flat_map(|r| &r.resources)
        .map(|r| r.key.as_str())
        .collect();
    for record in records {
        let mut seen: BTreeSet<&str> = BTreeSet::new();
        for resource in &record.resources {
            for reference in references(&resource.to_value()) {
                assert!(
                    seen.contains(reference.as_str()) || shared.contains(reference.as_str()),
                    "{} refers to {reference}, which is not before it",
                    resource.key
                );
            }
            seen.insert(&resource.key);
        }
        if record.kind == RecordKind::Patient {
            assert_eq!(record.resources[0].resource_type(), "Patient");
        }
    }
}

#[test]
fn references_resolve_to_earlier_resources() {
    let records = records(20_000, 8, Shard::WHOLE);
    assert_eq!(records[0].kind, RecordKind::Shared);
    assert_references_resolve(&records);
}

#[test]
fn the_reference_table_is_what_the_renderer_writes() {
    let mut written = BTreeSet::new();
    for resource in resources(30_000, 19) {
        for reference in references(&resource.to_value()) {
            let (target, _) = reference.split_once('/').unwrap();
            written.insert((type_of(&resource), ResourceType::from_name(target).unwrap()));
        }
    }
    let table: BTreeSet<(ResourceType, ResourceType)> = ResourceType::ALL
        .into_iter()
        .flat_map(|t| t.refers_to().iter().map(move |&target| (t, target)))
        .collect();
    assert_eq!(written, table);
}

/// `--types` choices: patient types, shared ones, and both.
const TYPE_CHOICES: [&[ResourceType]; 12] = [
    &[Observation],
    &[Patient],
    &[MedicationRequest, Immunization],
    &[AllergyIntolerance, DiagnosticReport],
    &[Organization],
    &[PractitionerRole],
    &[Practitioner, Procedure],
    &[Location],
    &[Provenance],
    &[ExplanationOfBenefit, Device],
    &[MedicationAdministration, ImagingStudy],
    &[CarePlan, Coverage],
];

#[test]
fn types_keep_the_count_exact_and_references_resolved() {
    for types in TYPE_CHOICES {
        let allowed = TypeSet::of(types).with_references();
        let counts: Vec<u64> = if allowed.has_patient_types() {
            // The rare types (implants, hospital doses) need a big data set to show up.
            let rare = allowed.contains(Device) || allowed.contains(MedicationAdministration);
            let last = if rare { 25_000 } else { 4321 };
            (0..=60).chain([99, 1000, last]).collect()
        } else {
            // The shared pool holds at most 1000 organizations.
            (0..=60).chain([99, 1000]).collect()
        };
        for &count in &counts {
            let records: Vec<Record> = Generator::new(typed(count, Shard::WHOLE, types)).collect();
            let written: Vec<ResourceType> = records
                .iter()
                .flat_map(|r| &r.resources)
                .map(type_of)
                .collect();
            assert_eq!(written.len() as u64, count, "{types:?} count {count}");
            for t in &written {
                assert!(allowed.contains(*t), "{t} with --types {types:?}");
            }
            assert_references_resolve(&records);
            if count == *counts.last().unwrap() {
                for t in allowed.iter() {
                    assert!(written.contains(&t), "no {t} in {count} of {types:?}");
                }
            }
        }
    }
}

#[test]
fn types_are_deterministic_and_shard_like_the_whole() {
    for types in TYPE_CHOICES {
        assert_eq!(
            lines_of(typed(2000, Shard::WHOLE, types)),
            lines_of(typed(2000, Shard::WHOLE, types))
        );
        for count in [7, 2500] {
            let count = if TypeSet::of(types).with_references().has_patient_types() {
                count
            } else {
                count.min(1000)
            };
            assert_shards_make_up(typed(count, Shard::WHOLE, types));
        }
    }
}

#[test]
fn types_keep_patients_as_they_are() {
    let types = [Observation, Immunization];
    let allowed = TypeSet::of(&types).with_references();
    let config = typed(5000, Shard::WHOLE, &types);
    let everything = Generator::new(GeneratorConfig {
        types: TypeSet::ALL,
        ..config.clone()
    });
    let records: Vec<Record> = Generator::new(config.clone()).collect();
    assert_eq!(
        records[0],
        everything.pool.record(allowed, everything.shared_size)
    );
    for (index, record) in records[1..].iter().enumerate() {
        let plan = plan_patient(&everything.context, index as u64);
        let all = render::render_patient(
            config.seed,
            index as u64,
            &plan,
            &everything.pool,
            TypeSet::ALL,
            u64::MAX,
            None,
        );
        let kept: Vec<Resource> = all
            .into_iter()
            .filter(|r| allowed.contains(type_of(r)))
            .take(record.resources.len())
            .collect();
        assert_eq!(record.resources, kept, "patient {index}");
    }
}

#[test]
fn shared_types_alone_fill_the_count_from_the_pool() {
    let organizations: Vec<Record> =
        Generator::new(typed(500, Shard::WHOLE, &[Organization])).collect();
    assert_eq!(organizations.len(), 1);
    assert_eq!(organizations[0].kind, RecordKind::Shared);
    assert_eq!(organizations[0].resources.len(), 500);
    // Practitioners and organizations both, in proportion.
    let both: Vec<ResourceType> = Generator::new(typed(60, Shard::WHOLE, &[PractitionerRole]))
        .flat_map(|r| r.resources)
        .map(|r| type_of(&r))
        .collect();
    assert_eq!(both.len(), 60);
    assert!(both.contains(&Organization) && both.contains(&Practitioner));
    assert!(both.contains(&PractitionerRole));
}

#[test]
fn identifiers_are_unique_and_fhirgen_first() {
    let mut seen = BTreeSet::new();
    let mut ids = BTreeSet::new();
    for resource in resources(30_000, 4) {
        let body = &resource.to_value();
        let kind = resource.resource_type().to_ascii_lowercase();
        let id = body["id"].as_str().unwrap();
        if kind == "provenance" {
            // No identifier in R4: its source-key tag finds it again.
            assert!(body.get("identifier").is_none());
            assert!(!resource.has_conditional_identifier());
            let tag = &body["meta"]["tag"][0];
            assert_eq!(tag["system"], crate::fhir::SOURCE_KEY_SYSTEM);
            assert_eq!(tag["code"], id);
            assert_eq!(resource.source_tag(), id);
            assert!(ids.insert(id.to_owned()));
            continue;
        }
        let first = &body["identifier"][0];
        assert_eq!(first["system"], format!("{IDENTIFIER_SYSTEM_BASE}/{kind}"));
        assert!(seen.insert(resource.conditional_query().unwrap()));
        assert_eq!(uuid::Uuid::parse_str(id).unwrap().to_string(), id);
        assert!(ids.insert(id.to_owned()));
        if kind == "practitioner" {
            let npi = &body["identifier"][1];
            assert_eq!(npi["system"], codes::NPI);
            assert_eq!(npi["value"].as_str().unwrap().len(), 10);
        }
    }
}

/// Calls `f` with every (key, value) pair at any depth.
fn walk<'a>(value: &'a Value, f: &mut impl FnMut(&'a str, &'a Value)) {
    match value {
        Value::Object(map) => {
            for (key, child) in map {
                f(key, child);
                walk(child, f);
            }
        }
        Value::Array(items) => items.iter().for_each(|item| walk(item, f)),
        _ => {}
    }
}

fn is_date_time(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 25
        && s.ends_with("+00:00")
        && b[4] == b'-'
        && b[7] == b'-'
        && b[10] == b'T'
        && b[13] == b':'
        && b[16] == b':'
        && NaiveDate::parse_from_str(&s[..10], "%Y-%m-%d").is_ok()
}

#[test]
fn no_empty_values_and_well_formed_dates() {
    for resource in resources(20_000, 6) {
        assert_eq!(
            resource
                .to_value()
                .as_object()
                .unwrap()
                .keys()
                .next()
                .unwrap(),
            "resourceType"
        );
        walk(&resource.to_value(), &mut |key, value| {
            match value {
                Value::String(s) => assert!(!s.is_empty(), "{} {key}", resource.key),
                Value::Array(a) => assert!(!a.is_empty(), "{} {key}", resource.key),
                Value::Object(o) => assert!(!o.is_empty(), "{} {key}", resource.key),
                Value::Null => panic!("{} {key} is null", resource.key),
                _ => {}
            }
            let date_time_key = key.ends_with("DateTime")
                || matches!(
                    key,
                    "start" | "end" | "issued" | "authoredOn" | "recordedDate"
                );
            if date_time_key {
                let s = value.as_str().unwrap();
                assert!(is_date_time(s), "{} {key} {s}", resource.key);
            }
            if key == "birthDate" {
                let s = value.as_str().unwrap();
                assert!(NaiveDate::parse_from_str(s, "%Y-%m-%d").is_ok() && s.len() == 10);
            }
        });
    }
}

#[test]
fn nothing_before_birth_or_after_death_or_as_of() {
    let as_of_end = format!("{}T23:59:59+00:00", as_of());
    for record in records(30_000, 9, Shard::WHOLE) {
        if record.kind == RecordKind::Shared {
            continue;
        }
        let patient = &record.resources[0].to_value();
        let birth = format!("{}T00:00:00+00:00", patient["birthDate"].as_str().unwrap());
        let end = patient["deceasedDateTime"]
            .as_str()
            .map_or(as_of_end.clone(), str::to_owned);
        let mut periods: HashMap<&str, (&str, &str)> = HashMap::new();
        let bodies: Vec<Value> = record.resources.iter().map(Resource::to_value).collect();
        for (resource, body) in record.resources.iter().zip(&bodies) {
            walk(body, &mut |key, value| {
                if let Some(s) = value.as_str().filter(|s| is_date_time(s)) {
                    assert!(
                        s >= birth.as_str(),
                        "{} {key} {s} before {birth}",
                        resource.key
                    );
                    assert!(s <= end.as_str(), "{} {key} {s} after {end}", resource.key);
                }
            });
            if resource.resource_type() == "Encounter" {
                let period = &body["period"];
                periods.insert(
                    &resource.key,
                    (
                        period["start"].as_str().unwrap(),
                        period["end"].as_str().unwrap(),
                    ),
                );
            }
            if let Some(encounter) = body["encounter"]["reference"].as_str() {
                let (start, end) = periods[encounter];
                for key in ["effectiveDateTime", "occurrenceDateTime", "authoredOn"] {
                    if let Some(at) = body[key].as_str() {
                        assert!(
                            start <= at && at <= end,
                            "{} {key} outside its encounter",
                            resource.key
                        );
                    }
                }
                if let Some(onset) = body["onsetDateTime"].as_str() {
                    assert!(onset <= body["recordedDate"].as_str().unwrap());
                }
            }
        }
    }
}

fn measures() -> BTreeMap<&'static str, &'static Measure> {
    let vitals: [&'static Measure; 9] = [
        &codes::SYSTOLIC,
        &codes::DIASTOLIC,
        &codes::HEART_RATE,
        &codes::RESPIRATORY_RATE,
        &codes::BODY_TEMPERATURE,
        &codes::OXYGEN_SATURATION,
        &codes::BODY_HEIGHT,
        &codes::BODY_WEIGHT,
        &codes::BMI,
    ];
    vitals
        .into_iter()
        .chain(codes::LABS)
        .map(|m| (m.loinc.code, m))
        .collect()
}

fn check_quantity(code: &Value, quantity: &Value, measures: &BTreeMap<&str, &Measure>) {
    let loinc = code["coding"][0]["code"].as_str().unwrap();
    let measure = measures[loinc];
    assert_eq!(code["coding"][0]["system"], codes::LOINC);
    assert_eq!(code["coding"][0]["display"], measure.loinc.display);
    assert_eq!(quantity["system"], codes::UCUM);
    assert_eq!(quantity["code"], measure.unit, "{loinc}");
    let value = quantity["value"].as_f64().unwrap();
    assert!(
        measure.low <= value && value <= measure.high,
        "{loinc} {value}"
    );
}

#[test]
fn observations_have_ucum_units_and_plausible_values() {
    let measures = measures();
    let mut seen = BTreeSet::new();
    for resource in resources(30_000, 10) {
        let body = &resource.to_value();
        match resource.resource_type() {
            "Observation" => {
                let code = &body["code"];
                let loinc = code["coding"][0]["code"].as_str().unwrap();
                seen.insert(loinc.to_owned());
                let category = body["category"][0]["coding"][0]["code"].as_str().unwrap();
                let lab = codes::LABS.iter().any(|m| m.loinc.code == loinc);
                assert_eq!(category, if lab { "laboratory" } else { "vital-signs" });
                if loinc == codes::BLOOD_PRESSURE.code {
                    let components = body["component"].as_array().unwrap();
                    assert_eq!(components.len(), 2);
                    for component in components {
                        check_quantity(&component["code"], &component["valueQuantity"], &measures);
                    }
                    assert_eq!(components[0]["code"]["coding"][0]["code"], "8480-6");
                    assert_eq!(components[1]["code"]["coding"][0]["code"], "8462-4");
                } else {
                    check_quantity(code, &body["valueQuantity"], &measures);
                }
                if loinc == "59408-5" {
                    assert_eq!(code["coding"][1]["code"], "2708-6");
                }
            }
            "DiagnosticReport" => assert!(!body["result"].as_array().unwrap().is_empty()),
            _ => {}
        }
    }
    // Every vital sign and lab shows up in a data set this size.
    assert_eq!(seen.len(), measures.len() - 2 + 1, "{seen:?}");
}

#[test]
fn bmi_agrees_with_height_and_weight() {
    for record in records(20_000, 12, Shard::WHOLE) {
        let mut by_encounter: BTreeMap<String, BTreeMap<String, f64>> = BTreeMap::new();
        for resource in &record.resources {
            let body = &resource.to_value();
            if resource.resource_type() != "Observation" {
                continue;
            }
            if let (Some(encounter), Some(value)) = (
                body["encounter"]["reference"].as_str(),
                body["valueQuantity"]["value"].as_f64(),
            ) {
                let code = body["code"]["coding"][0]["code"].as_str().unwrap();
                by_encounter
                    .entry(encounter.to_owned())
                    .or_default()
                    .insert(code.to_owned(), value);
            }
        }
        for values in by_encounter.values() {
            if let (Some(h), Some(w), Some(bmi)) = (
                values.get("8302-2"),
                values.get("29463-7"),
                values.get("39156-5"),
            ) {
                let expected = w / (h / 100.0) / (h / 100.0);
                assert!((bmi - expected).abs() < 0.051, "{bmi} vs {expected}");
            }
        }
    }
}

#[test]
fn required_fields_are_present() {
    let required: &[(&str, &[&str])] = &[
        ("Patient", &["identifier", "name", "gender", "birthDate"]),
        (
            "Encounter",
            &["status", "class", "type", "subject", "period"],
        ),
        (
            "Observation",
            &["status", "category", "code", "subject", "effectiveDateTime"],
        ),
        (
            "Condition",
            &[
                "clinicalStatus",
                "verificationStatus",
                "category",
                "code",
                "subject",
                "onsetDateTime",
            ],
        ),
        (
            "MedicationRequest",
            &[
                "status",
                "intent",
                "medicationCodeableConcept",
                "subject",
                "authoredOn",
                "requester",
                "reasonReference",
            ],
        ),
        (
            "Immunization",
            &[
                "status",
                "vaccineCode",
                "patient",
                "occurrenceDateTime",
                "primarySource",
            ],
        ),
        (
            "AllergyIntolerance",
            &["clinicalStatus", "verificationStatus", "code", "patient"],
        ),
        (
            "Procedure",
            &["status", "code", "subject", "performedPeriod"],
        ),
        (
            "DiagnosticReport",
            &[
                "status",
                "category",
                "code",
                "subject",
                "effectiveDateTime",
                "issued",
                "result",
            ],
        ),
        ("Organization", &["identifier", "active", "name"]),
        ("Practitioner", &["identifier", "name"]),
        (
            "PractitionerRole",
            &["practitioner", "organization", "specialty"],
        ),
        (
            "Location",
            &["identifier", "status", "name", "managingOrganization"],
        ),
        ("Medication", &["identifier", "code"]),
        ("Coverage", &["status", "beneficiary", "payor", "period"]),
        ("CareTeam", &["status", "subject", "participant"]),
        (
            "Goal",
            &["lifecycleStatus", "description", "subject", "target"],
        ),
        (
            "CarePlan",
            &["text", "status", "intent", "category", "subject"],
        ),
        ("ImagingStudy", &["status", "subject", "started", "series"]),
        ("Device", &["udiCarrier", "type", "patient"]),
        (
            "MedicationAdministration",
            &[
                "status",
                "medicationReference",
                "subject",
                "effectiveDateTime",
                "dosage",
            ],
        ),
        (
            "DocumentReference",
            &[
                "status", "type", "category", "subject", "date", "author", "content", "context",
            ],
        ),
        (
            "Claim",
            &[
                "status",
                "type",
                "use",
                "patient",
                "created",
                "provider",
                "priority",
                "insurance",
                "item",
                "total",
            ],
        ),
        (
            "ExplanationOfBenefit",
            &[
                "status",
                "type",
                "use",
                "patient",
                "created",
                "insurer",
                "provider",
                "outcome",
                "insurance",
                "total",
                "payment",
            ],
        ),
        ("Provenance", &["target", "recorded", "agent"]),
    ];
    let mut types = BTreeSet::new();
    for resource in resources(30_000, 13) {
        let kind = resource.resource_type().to_owned();
        let (_, fields) = required
            .iter()
            .find(|(t, _)| *t == kind)
            .unwrap_or_else(|| panic!("unexpected {kind}"));
        for field in *fields {
            assert!(
                resource.to_value().get(*field).is_some(),
                "{kind} lacks {field}"
            );
        }
        types.insert(kind);
    }
    assert_eq!(types.len(), required.len(), "{types:?}");
}

#[test]
fn value_set_bindings_use_valid_codes() {
    for resource in resources(20_000, 14) {
        let body = &resource.to_value();
        let code_of = |path: &str| body[path]["coding"][0]["code"].as_str().unwrap_or("");
        match resource.resource_type() {
            "Encounter" => {
                assert!(["AMB", "EMER", "IMP"].contains(&body["class"]["code"].as_str().unwrap()));
                assert_eq!(body["status"], "finished");
            }
            "Condition" => {
                assert!(["active", "resolved"].contains(&code_of("clinicalStatus")));
                assert_eq!(code_of("verificationStatus"), "confirmed");
                assert_eq!(
                    body["abatementDateTime"].is_string(),
                    code_of("clinicalStatus") == "resolved"
                );
            }
            "MedicationRequest" => {
                assert!(
                    ["active", "completed", "stopped"].contains(&body["status"].as_str().unwrap())
                );
            }
            "AllergyIntolerance" => {
                let category = body["category"][0].as_str().unwrap();
                assert!(["food", "medication", "environment", "biologic"].contains(&category));
                assert!(["low", "high"].contains(&body["criticality"].as_str().unwrap()));
            }
            "Patient" => {
                let gender = body["gender"].as_str().unwrap();
                let given = body["name"][0]["given"][0].as_str().unwrap();
                let list = if gender == "female" {
                    names::FEMALE
                } else {
                    names::MALE
                };
                assert!(list.contains(&given), "{given} is not a {gender} name");
                let birth_sex = body["extension"][2]["valueCode"].as_str().unwrap();
                assert_eq!(birth_sex, if gender == "female" { "F" } else { "M" });
            }
            _ => {}
        }
    }
}

#[test]
fn mix_is_mostly_observations_and_records_are_patient_sized() {
    let records = records(100_000, 15, Shard::WHOLE);
    let total: usize = records.iter().map(|r| r.resources.len()).sum();
    let observations = records
        .iter()
        .flat_map(|r| &r.resources)
        .filter(|r| r.resource_type() == "Observation")
        .count();
    let share = observations as f64 / total as f64;
    // Synthea's records are about 40% observations too (see the data-set table in README).
    assert!(
        (0.33..0.48).contains(&share),
        "observations are {share:.2} of the data"
    );
    let mut sizes: Vec<usize> = records
        .iter()
        .filter(|r| r.kind == RecordKind::Patient)
        .map(|r| r.resources.len())
        .collect();
    sizes.sort_unstable();
    let median = sizes[sizes.len() / 2];
    assert!(
        (30..=150).contains(&median),
        "median record has {median} resources"
    );
}

#[test]
fn bundles_are_transactions_referring_to_shared_resources_by_identifier() {
    let mut out = Vec::new();
    let generator = Generator::new(config(3000, 16, Shard::WHOLE));
    write_records(generator, OutputFormat::Bundle, &mut out).unwrap();
    let text = String::from_utf8(out).unwrap();
    let bundles: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(bundles.len() > 2);
    let entries: usize = bundles
        .iter()
        .map(|b| b["entry"].as_array().unwrap().len())
        .sum();
    assert_eq!(entries, 3000);
    for bundle in &bundles {
        assert_eq!(bundle["resourceType"], "Bundle");
        assert_eq!(bundle["type"], "transaction");
    }
    let patient = &bundles[1]["entry"][0]["resource"];
    assert_eq!(patient["resourceType"], "Patient");
    let gp = patient["generalPractitioner"][0]["reference"]
        .as_str()
        .unwrap();
    assert!(gp.starts_with("Practitioner?identifier="), "{gp}");
    let encounter = &bundles[1]["entry"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["resource"]["resourceType"] == "Encounter")
        .unwrap()["resource"];
    assert!(
        encounter["subject"]["reference"]
            .as_str()
            .unwrap()
            .starts_with("urn:uuid:")
    );
}

#[test]
fn ndjson_is_one_compact_resource_per_line() {
    let mut out = Vec::new();
    write_records(
        Generator::new(config(500, 17, Shard::WHOLE)),
        OutputFormat::Ndjson,
        &mut out,
    )
    .unwrap();
    let text = String::from_utf8(out).unwrap();
    assert_eq!(text.lines().count(), 500);
    for line in text.lines() {
        assert!(line.starts_with("{\"resourceType\":"), "{line}");
    }
}

#[test]
fn config_from_args() {
    let args = DataArgs {
        count: 10,
        seed: SeedArg::Fixed(5),
        as_of: None,
        shard: Some("auto/4".to_owned()),
        types: Vec::new(),
        attachment_size: None,
    };
    let config = GeneratorConfig::from_args_with_env(&args, |name| {
        (name == "BATCH_TASK_INDEX").then(|| "3".to_owned())
    })
    .unwrap();
    assert_eq!(config.shard, Shard { index: 3, count: 4 });
    assert_eq!(config.seed, 5);
    assert_eq!(config.as_of, chrono::Utc::now().date_naive());
    let random = DataArgs {
        seed: SeedArg::Random,
        shard: None,
        ..args.clone()
    };
    let a = GeneratorConfig::from_args_with_env(&random, |_| None).unwrap();
    let b = GeneratorConfig::from_args_with_env(&random, |_| None).unwrap();
    assert_ne!(a.seed, b.seed);
    let old = DataArgs {
        as_of: NaiveDate::from_ymd_opt(1850, 1, 1),
        ..random
    };
    assert!(GeneratorConfig::from_args_with_env(&old, |_| None).is_err());
}

#[test]
fn config_checks_types() {
    let args = |types: &[&str], count: u64| DataArgs {
        count,
        seed: SeedArg::Fixed(1),
        as_of: Some(as_of()),
        shard: None,
        types: types.iter().map(|t| t.to_string()).collect(),
        attachment_size: None,
    };
    let config =
        |types: &[&str], count| GeneratorConfig::from_args_with_env(&args(types, count), |_| None);
    assert_eq!(config(&[], 10).unwrap().types, TypeSet::ALL);
    assert_eq!(
        config(&["Observation", "Patient"], 10).unwrap().types,
        TypeSet::of(&[Observation, Patient])
    );
    let unknown = config(&["Observation", "Binary"], 10).unwrap_err();
    assert!(unknown.downcast_ref::<exit::UsageError>().is_some());
    assert!(unknown.to_string().contains("`Binary`"), "{unknown}");
    // 1000 providers and 7 insurers.
    assert_eq!(config(&["Organization"], 1007).unwrap().count, 1007);
    let too_many = config(&["Organization"], 1008).unwrap_err();
    assert!(too_many.downcast_ref::<exit::UsageError>().is_some());
    assert!(too_many.to_string().contains("at most 1007"), "{too_many}");
}

#[test]
fn bundles_with_types_hold_the_count() {
    let mut out = Vec::new();
    let generator = Generator::new(typed(3000, Shard::WHOLE, &[Observation]));
    write_records(generator, OutputFormat::Bundle, &mut out).unwrap();
    let allowed = TypeSet::of(&[Observation]).with_references();
    let mut entries = 0;
    for line in String::from_utf8(out).unwrap().lines() {
        let bundle: Value = serde_json::from_str(line).unwrap();
        for entry in bundle["entry"].as_array().unwrap() {
            let name = entry["resource"]["resourceType"].as_str().unwrap();
            assert!(allowed.contains(ResourceType::from_name(name).unwrap()));
            entries += 1;
        }
    }
    assert_eq!(entries, 3000);
}

/// The bodies of a record's resources, by key.
fn bodies_of(record: &Record) -> HashMap<&str, Value> {
    record
        .resources
        .iter()
        .map(|r| (r.key.as_str(), r.to_value()))
        .collect()
}

fn reference_of(value: &Value) -> &str {
    value["reference"].as_str().unwrap()
}

/// A Money value in cents.
fn cents(money: &Value) -> i64 {
    assert_eq!(money["currency"], "USD");
    (money["value"].as_f64().unwrap() * 100.0).round() as i64
}

#[test]
fn claims_bill_what_their_encounter_did_and_add_up() {
    let (mut claims, mut explanations) = (0, 0);
    for record in records(20_000, 22, Shard::WHOLE) {
        let bodies = bodies_of(&record);
        let of_type = |t: &str, encounter: &str| -> BTreeSet<&str> {
            bodies
                .iter()
                .filter(|(_, b)| {
                    b["resourceType"] == t && reference_of(&b["encounter"]) == encounter
                })
                .map(|(k, _)| *k)
                .collect()
        };
        for resource in &record.resources {
            let body = &bodies[resource.key.as_str()];
            let items = body["item"].as_array();
            match resource.resource_type() {
                "Claim" => {
                    claims += 1;
                    let items = items.unwrap();
                    let sum: i64 = items.iter().map(|i| cents(&i["net"])).sum();
                    assert_eq!(sum, cents(&body["total"]), "{}", resource.key);
                    let encounter = reference_of(&items[0]["encounter"][0]);
                    assert_eq!(body["billablePeriod"], bodies[encounter]["period"]);
                    let billed: BTreeSet<&str> = body["procedure"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .map(|p| reference_of(&p["procedureReference"]))
                        .collect();
                    assert_eq!(billed, of_type("Procedure", encounter), "{}", resource.key);
                    let procedure_lines = items
                        .iter()
                        .filter(|i| i.get("procedureSequence").is_some())
                        .count();
                    assert_eq!(procedure_lines, billed.len());
                    let drug_lines = items
                        .iter()
                        .filter(|i| i["productOrService"]["coding"][0]["system"] == codes::RXNORM)
                        .count();
                    assert_eq!(drug_lines, of_type("MedicationRequest", encounter).len());
                    for diagnosis in body["diagnosis"].as_array().into_iter().flatten() {
                        let condition = reference_of(&diagnosis["diagnosisReference"]);
                        assert_eq!(bodies[condition]["resourceType"], "Condition");
                    }
                    let kind = body["type"]["coding"][0]["code"].as_str().unwrap();
                    assert!(["professional", "institutional"].contains(&kind));
                    assert_eq!(
                        reference_of(&body["insurance"][0]["coverage"])
                            .split('/')
                            .next(),
                        Some("Coverage")
                    );
                }
                "ExplanationOfBenefit" => {
                    explanations += 1;
                    let claim = &bodies[reference_of(&body["claim"])];
                    assert_eq!(cents(&body["total"][0]["amount"]), cents(&claim["total"]));
                    let benefit: i64 = items
                        .unwrap()
                        .iter()
                        .map(|i| cents(&i["adjudication"][1]["amount"]))
                        .sum();
                    assert_eq!(benefit, cents(&body["total"][1]["amount"]));
                    assert_eq!(benefit, cents(&body["payment"]["amount"]));
                    assert!(benefit <= cents(&claim["total"]));
                    assert_eq!(body["outcome"], "complete");
                    assert_eq!(
                        body["insurance"][0]["coverage"],
                        claim["insurance"][0]["coverage"]
                    );
                }
                _ => {}
            }
        }
    }
    assert!(
        claims > 100 && explanations >= claims - 1,
        "{claims} {explanations}"
    );
}

/// The encounter a resource belongs to, however its type names it.
fn encounter_of<'a>(body: &'a Value, bodies: &'a HashMap<&str, Value>) -> Option<&'a str> {
    let named = [
        &body["encounter"],
        &body["context"],
        &body["context"]["encounter"][0],
        &body["item"][0]["encounter"][0],
    ];
    if let Some(found) = named.iter().find_map(|v| v["reference"].as_str()) {
        return Some(found);
    }
    let claim = bodies.get(body["claim"]["reference"].as_str()?)?;
    claim["item"][0]["encounter"][0]["reference"].as_str()
}

#[test]
fn chart_resources_fall_inside_their_encounter() {
    let checked_types = [
        "ImagingStudy",
        "MedicationAdministration",
        "DocumentReference",
        "Claim",
        "ExplanationOfBenefit",
    ];
    let mut seen = BTreeSet::new();
    for record in records(30_000, 23, Shard::WHOLE) {
        let bodies = bodies_of(&record);
        for resource in &record.resources {
            let kind = resource.resource_type();
            if !checked_types.contains(&kind) {
                continue;
            }
            let body = &bodies[resource.key.as_str()];
            let encounter = &bodies[encounter_of(body, &bodies).unwrap()]["period"];
            let (start, end) = (
                encounter["start"].as_str().unwrap(),
                encounter["end"].as_str().unwrap(),
            );
            walk(body, &mut |key, value| {
                if let Some(at) = value.as_str().filter(|s| is_date_time(s)) {
                    assert!(
                        start <= at && at <= end,
                        "{} {key} {at} outside {start}..{end}",
                        resource.key
                    );
                }
            });
            seen.insert(kind.to_owned());
        }
    }
    assert_eq!(seen.len(), checked_types.len(), "{seen:?}");
}

#[test]
fn chronic_conditions_get_a_care_plan_team_and_goal() {
    let mut plans = 0;
    for record in records(20_000, 24, Shard::WHOLE) {
        let bodies = bodies_of(&record);
        let chronic: BTreeSet<&str> = bodies
            .iter()
            .filter(|(_, b)| b["category"][0]["coding"][0]["code"] == "problem-list-item")
            .map(|(k, _)| *k)
            .collect();
        let mut addressed = BTreeSet::new();
        for (key, body) in bodies
            .iter()
            .filter(|(_, b)| b["resourceType"] == "CarePlan")
        {
            plans += 1;
            let condition = reference_of(&body["addresses"][0]);
            assert!(addressed.insert(condition), "{key}");
            assert_eq!(body["category"][0]["coding"][0]["code"], "assess-plan");
            let team = &bodies[reference_of(&body["careTeam"][0])];
            assert_eq!(reference_of(&team["reasonReference"][0]), condition);
            let goal = &bodies[reference_of(&body["goal"][0])];
            assert_eq!(reference_of(&goal["addresses"][0]), condition);
            assert!(
                goal["target"][0]["dueDate"].as_str().unwrap()
                    >= goal["startDate"].as_str().unwrap()
            );
        }
        // The last record may be cut before the care plan of its last condition.
        let kept: BTreeSet<&str> = chronic
            .iter()
            .copied()
            .filter(|c| addressed.contains(c))
            .collect();
        assert!(chronic.len() - kept.len() <= 1, "{chronic:?} {addressed:?}");
    }
    assert!(plans > 50, "{plans}");
}

#[test]
fn provenance_names_every_resource_of_its_record() {
    let records = records(10_000, 26, Shard::WHOLE);
    let patients = records
        .iter()
        .filter(|r| r.kind == RecordKind::Patient)
        .count();
    let mut provenances = 0;
    for record in records.iter().filter(|r| r.kind == RecordKind::Patient) {
        let (last, before) = record.resources.split_last().unwrap();
        if last.resource_type() != "Provenance" {
            continue;
        }
        provenances += 1;
        let body = last.to_value();
        let targets: Vec<&str> = body["target"]
            .as_array()
            .unwrap()
            .iter()
            .map(reference_of)
            .collect();
        let keys: Vec<&str> = before.iter().map(|r| r.key.as_str()).collect();
        assert_eq!(targets, keys);
        assert!(reference_of(&body["agent"][0]["who"]).starts_with("Organization/"));
        assert_eq!(body["agent"][0]["type"]["coding"][0]["code"], "author");
    }
    // Only the last patient, cut at its tail, can lack one.
    assert!(
        provenances + 1 >= patients && provenances > 0,
        "{provenances} of {patients}"
    );
}

#[test]
fn attachment_size_sets_every_note_and_nothing_else() {
    use base64::Engine as _;
    let with_size = |attachment_size| -> Vec<Resource> {
        Generator::new(GeneratorConfig {
            attachment_size,
            ..config(2000, 25, Shard::WHOLE)
        })
        .flat_map(|r| r.resources)
        .collect()
    };
    let plain = with_size(None);
    let big = with_size(Some(10_000));
    assert_eq!(big, with_size(Some(10_000)));
    assert_eq!(plain.len(), big.len());
    let decode = |resource: &Resource| -> (Vec<u8>, Value) {
        let attachment = resource.to_value()["content"][0]["attachment"].clone();
        let data = attachment["data"].as_str().unwrap();
        (
            base64::engine::general_purpose::STANDARD
                .decode(data)
                .unwrap(),
            attachment,
        )
    };
    let mut notes = 0;
    for (small, large) in plain.iter().zip(&big) {
        if small.resource_type() != "DocumentReference" {
            assert_eq!(small, large);
            continue;
        }
        notes += 1;
        let (text, attachment) = decode(small);
        assert_eq!(attachment["size"], text.len());
        assert!(
            String::from_utf8(text.clone())
                .unwrap()
                .contains("# Assessment and Plan")
        );
        let (padded, attachment) = decode(large);
        assert_eq!(
            (padded.len(), attachment["size"].as_u64()),
            (10_000, Some(10_000))
        );
        assert!(padded.starts_with(&text));
    }
    assert!(notes > 10);
}

#[test]
fn attachment_size_is_checked() {
    let args = |size| DataArgs {
        count: 10,
        seed: SeedArg::Fixed(1),
        as_of: Some(as_of()),
        shard: None,
        types: Vec::new(),
        attachment_size: Some(size),
    };
    let config = GeneratorConfig::from_args_with_env(&args(1_000_000), |_| None).unwrap();
    assert_eq!(config.attachment_size, Some(1_000_000));
    let error = GeneratorConfig::from_args_with_env(&args(40_000_000), |_| None).unwrap_err();
    assert!(error.downcast_ref::<exit::UsageError>().is_some());
    assert!(
        error.to_string().contains("--attachment-size 40000000"),
        "{error}"
    );
}
