//! Cheap structural checks on incoming resources, meant to catch the mistakes a real store would
//! reject (wrong type, missing required elements, codes outside required bindings, malformed
//! dates) without a full profile validator. The per-type rules are a table so they can grow.

use chrono::NaiveDate;
use serde_json::Value;

use Primitive::{Date, DateTime, Instant};
use Rule::{Code, Format, Period, Required, RequiredChoice};

/// Every resource type of FHIR R4 (4.0.1), sorted so it can be binary-searched.
pub const RESOURCE_TYPES: &[&str] = &[
    "Account",
    "ActivityDefinition",
    "AdverseEvent",
    "AllergyIntolerance",
    "Appointment",
    "AppointmentResponse",
    "AuditEvent",
    "Basic",
    "Binary",
    "BiologicallyDerivedProduct",
    "BodyStructure",
    "Bundle",
    "CapabilityStatement",
    "CarePlan",
    "CareTeam",
    "CatalogEntry",
    "ChargeItem",
    "ChargeItemDefinition",
    "Claim",
    "ClaimResponse",
    "ClinicalImpression",
    "CodeSystem",
    "Communication",
    "CommunicationRequest",
    "CompartmentDefinition",
    "Composition",
    "ConceptMap",
    "Condition",
    "Consent",
    "Contract",
    "Coverage",
    "CoverageEligibilityRequest",
    "CoverageEligibilityResponse",
    "DetectedIssue",
    "Device",
    "DeviceDefinition",
    "DeviceMetric",
    "DeviceRequest",
    "DeviceUseStatement",
    "DiagnosticReport",
    "DocumentManifest",
    "DocumentReference",
    "EffectEvidenceSynthesis",
    "Encounter",
    "Endpoint",
    "EnrollmentRequest",
    "EnrollmentResponse",
    "EpisodeOfCare",
    "EventDefinition",
    "Evidence",
    "EvidenceVariable",
    "ExampleScenario",
    "ExplanationOfBenefit",
    "FamilyMemberHistory",
    "Flag",
    "Goal",
    "GraphDefinition",
    "Group",
    "GuidanceResponse",
    "HealthcareService",
    "ImagingStudy",
    "Immunization",
    "ImmunizationEvaluation",
    "ImmunizationRecommendation",
    "ImplementationGuide",
    "InsurancePlan",
    "Invoice",
    "Library",
    "Linkage",
    "List",
    "Location",
    "Measure",
    "MeasureReport",
    "Media",
    "Medication",
    "MedicationAdministration",
    "MedicationDispense",
    "MedicationKnowledge",
    "MedicationRequest",
    "MedicationStatement",
    "MedicinalProduct",
    "MedicinalProductAuthorization",
    "MedicinalProductContraindication",
    "MedicinalProductIndication",
    "MedicinalProductIngredient",
    "MedicinalProductInteraction",
    "MedicinalProductManufactured",
    "MedicinalProductPackaged",
    "MedicinalProductPharmaceutical",
    "MedicinalProductUndesirableEffect",
    "MessageDefinition",
    "MessageHeader",
    "MolecularSequence",
    "NamingSystem",
    "NutritionOrder",
    "Observation",
    "ObservationDefinition",
    "OperationDefinition",
    "OperationOutcome",
    "Organization",
    "OrganizationAffiliation",
    "Parameters",
    "Patient",
    "PaymentNotice",
    "PaymentReconciliation",
    "Person",
    "PlanDefinition",
    "Practitioner",
    "PractitionerRole",
    "Procedure",
    "Provenance",
    "Questionnaire",
    "QuestionnaireResponse",
    "RelatedPerson",
    "RequestGroup",
    "ResearchDefinition",
    "ResearchElementDefinition",
    "ResearchStudy",
    "ResearchSubject",
    "RiskAssessment",
    "RiskEvidenceSynthesis",
    "Schedule",
    "SearchParameter",
    "ServiceRequest",
    "Slot",
    "Specimen",
    "SpecimenDefinition",
    "StructureDefinition",
    "StructureMap",
    "Subscription",
    "Substance",
    "SubstanceNucleicAcid",
    "SubstancePolymer",
    "SubstanceProtein",
    "SubstanceReferenceInformation",
    "SubstanceSourceMaterial",
    "SubstanceSpecification",
    "SupplyDelivery",
    "SupplyRequest",
    "Task",
    "TerminologyCapabilities",
    "TestReport",
    "TestScript",
    "ValueSet",
    "VerificationResult",
    "VisionPrescription",
];

pub fn is_resource_type(name: &str) -> bool {
    RESOURCE_TYPES.binary_search(&name).is_ok()
}

/// FHIR `id`: `[A-Za-z0-9\-\.]{1,64}`.
pub fn is_valid_id(id: &str) -> bool {
    (1..=64).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
}

/// Checks `resource` as the body of a write to `expected_type`; the error is the diagnostics.
pub fn check_resource(resource: &Value, expected_type: &str) -> Result<(), String> {
    if !is_resource_type(expected_type) {
        return Err(format!("`{expected_type}` is not a FHIR R4 resource type"));
    }
    let Some(map) = resource.as_object() else {
        return Err("the body must be a JSON object (a FHIR resource)".to_owned());
    };
    match map.get("resourceType").and_then(Value::as_str) {
        None => return Err("the resource has no resourceType".to_owned()),
        Some(found) if found != expected_type => {
            return Err(format!(
                "resourceType `{found}` does not match the resource type in the URL (`{expected_type}`)"
            ));
        }
        Some(_) => {}
    }
    if let Some(id) = map.get("id") {
        match id.as_str() {
            Some(id) if is_valid_id(id) => {}
            _ => {
                return Err(format!(
                    "id {id} is invalid: it must match [A-Za-z0-9\\-\\.]{{1,64}}"
                ));
            }
        }
    }
    check_json_shape(resource).map_err(|(path, problem)| format!("{path}: {problem}"))?;
    if let Some((_, rules)) = RULES.iter().find(|(name, _)| *name == expected_type) {
        for rule in *rules {
            rule.check(resource, expected_type)?;
        }
    }
    Ok(())
}

/// FHIR JSON forbids empty strings, empty arrays and objects, and `null` object members (ele-1);
/// generators that emit them by accident are the most common source of rejected writes.
fn check_json_shape(value: &Value) -> Result<(), (String, &'static str)> {
    match value {
        Value::Object(map) => {
            if map.is_empty() {
                return Err((String::new(), "empty objects are not allowed"));
            }
            for (key, child) in map {
                let problem = match child {
                    Value::Null => Some("null is not allowed"),
                    Value::String(s) if s.is_empty() => Some("empty strings are not allowed"),
                    _ => None,
                };
                if let Some(problem) = problem {
                    return Err((key.clone(), problem));
                }
                check_json_shape(child).map_err(|(path, problem)| (join(key, &path), problem))?;
            }
            Ok(())
        }
        Value::Array(items) => {
            if items.is_empty() {
                return Err((String::new(), "empty arrays are not allowed"));
            }
            for (i, item) in items.iter().enumerate() {
                // `null` is allowed inside arrays: it pads primitive arrays paired with `_name`.
                if matches!(item, Value::String(s) if s.is_empty()) {
                    return Err((format!("[{i}]"), "empty strings are not allowed"));
                }
                check_json_shape(item)
                    .map_err(|(path, problem)| (format!("[{i}]{}", dotted(&path)), problem))?;
            }
            Ok(())
        }
        _ => Ok(()),
    }
}

fn join(key: &str, rest: &str) -> String {
    if rest.is_empty() {
        key.to_owned()
    } else {
        format!("{key}{}", dotted(rest))
    }
}

fn dotted(rest: &str) -> String {
    if rest.is_empty() || rest.starts_with('[') {
        rest.to_owned()
    } else {
        format!(".{rest}")
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Primitive {
    Date,
    DateTime,
    Instant,
}

enum Rule {
    /// The element must be present (cardinality 1..).
    Required(&'static str),
    /// One of the named elements must be present: a required choice type such as `medication[x]`.
    RequiredChoice(&'static str, &'static [&'static str]),
    /// A `code` (or array of codes) with a required binding.
    Code(&'static str, &'static [&'static str]),
    /// A primitive date/time element; the path may go through objects and arrays (`a.b`).
    Format(&'static str, Primitive),
    /// A Period: both ends well formed and start not after end.
    Period(&'static str),
}

impl Rule {
    fn check(&self, resource: &Value, resource_type: &str) -> Result<(), String> {
        match self {
            Rule::Required(name) => {
                if resource.get(name).is_none() {
                    return Err(format!("{resource_type}.{name} is required"));
                }
            }
            Rule::RequiredChoice(name, choices) => {
                if !choices.iter().any(|c| resource.get(c).is_some()) {
                    return Err(format!(
                        "{resource_type}.{name} is required (one of {})",
                        choices.join(", ")
                    ));
                }
            }
            Rule::Code(name, allowed) => {
                let mut result = Ok(());
                each_at(resource, name, &mut |value| {
                    let codes: Vec<&Value> = match value {
                        Value::Array(items) => items.iter().collect(),
                        other => vec![other],
                    };
                    for code in codes {
                        if !code.as_str().is_some_and(|c| allowed.contains(&c)) && result.is_ok() {
                            result = Err(format!(
                                "{resource_type}.{name} {code} is not one of {}",
                                allowed.join("|")
                            ));
                        }
                    }
                });
                result?;
            }
            Rule::Format(path, kind) => {
                let mut result = Ok(());
                each_at(resource, path, &mut |value| {
                    if result.is_ok() {
                        result = check_primitive(value, *kind)
                            .map_err(|e| format!("{resource_type}.{path} {e}"));
                    }
                });
                result?;
            }
            Rule::Period(path) => {
                let mut result = Ok(());
                each_at(resource, path, &mut |period| {
                    if result.is_ok() {
                        result =
                            check_period(period).map_err(|e| format!("{resource_type}.{path} {e}"));
                    }
                });
                result?;
            }
        }
        Ok(())
    }
}

/// Calls `f` on every value found at the dotted `path`, fanning out through arrays.
fn each_at<'a>(value: &'a Value, path: &str, f: &mut impl FnMut(&'a Value)) {
    let (head, rest) = match path.split_once('.') {
        Some((head, rest)) => (head, Some(rest)),
        None => (path, None),
    };
    let children: Vec<&Value> = match value {
        Value::Array(items) => items.iter().filter_map(|i| i.get(head)).collect(),
        other => other.get(head).into_iter().collect(),
    };
    for child in children {
        match rest {
            Some(rest) => match child {
                Value::Array(items) => items.iter().for_each(|i| each_at(i, rest, f)),
                _ => each_at(child, rest, f),
            },
            None => f(child),
        }
    }
}

fn check_primitive(value: &Value, kind: Primitive) -> Result<(), String> {
    let Some(text) = value.as_str() else {
        return Err(format!("{value} must be a string"));
    };
    let ok = match kind {
        Primitive::Date => is_date(text),
        Primitive::DateTime => is_date_time(text),
        Primitive::Instant => text.len() > 10 && is_date_time(text),
    };
    if ok {
        Ok(())
    } else {
        let name = match kind {
            Primitive::Date => "date (YYYY, YYYY-MM or YYYY-MM-DD)",
            Primitive::DateTime => "dateTime (a date, or YYYY-MM-DDThh:mm:ss with a time zone)",
            Primitive::Instant => "instant (YYYY-MM-DDThh:mm:ss[.fff] with a time zone)",
        };
        Err(format!("\"{text}\" is not a valid FHIR {name}"))
    }
}

fn check_period(period: &Value) -> Result<(), String> {
    let start = period.get("start");
    let end = period.get("end");
    for end_value in [start, end].into_iter().flatten() {
        check_primitive(end_value, Primitive::DateTime)?;
    }
    // Only full date-times are compared: partial dates have no single order (per-1).
    let (Some(Value::String(start)), Some(Value::String(end))) = (start, end) else {
        return Ok(());
    };
    match (
        chrono::DateTime::parse_from_rfc3339(start),
        chrono::DateTime::parse_from_rfc3339(end),
    ) {
        (Ok(s), Ok(e)) if s > e => Err(format!("start {start} is after end {end}")),
        _ => Ok(()),
    }
}

/// FHIR `date`: `YYYY`, `YYYY-MM` or `YYYY-MM-DD`, a real calendar date.
pub fn is_date(s: &str) -> bool {
    let b = s.as_bytes();
    let digits = |range: std::ops::Range<usize>| b[range].iter().all(u8::is_ascii_digit);
    match b.len() {
        4 => digits(0..4),
        7 => digits(0..4) && b[4] == b'-' && digits(5..7) && (1..=12).contains(&number(&s[5..7])),
        10 => {
            digits(0..4)
                && b[4] == b'-'
                && digits(5..7)
                && b[7] == b'-'
                && digits(8..10)
                && NaiveDate::from_ymd_opt(
                    number(&s[0..4]) as i32,
                    number(&s[5..7]),
                    number(&s[8..10]),
                )
                .is_some()
        }
        _ => false,
    }
}

/// FHIR `dateTime`: a `date`, or `YYYY-MM-DDThh:mm:ss[.f+]` followed by `Z` or `±hh:mm`.
pub fn is_date_time(s: &str) -> bool {
    if s.len() <= 10 {
        return is_date(s);
    }
    let b = s.as_bytes();
    if !s.is_char_boundary(10) || !is_date(&s[..10]) || b[10] != b'T' || b.len() < 19 {
        return false;
    }
    let two = |at: usize, max: u32| {
        b[at].is_ascii_digit() && b[at + 1].is_ascii_digit() && number(&s[at..at + 2]) <= max
    };
    if !(two(11, 23) && b[13] == b':' && two(14, 59) && b[16] == b':' && two(17, 60)) {
        return false;
    }
    let mut rest = &s[19..];
    if let Some(fraction) = rest.strip_prefix('.') {
        let digits = fraction.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return false;
        }
        rest = &fraction[digits..];
    }
    match rest.as_bytes() {
        [b'Z'] => true,
        [sign, h1, h2, b':', m1, m2]
            if (*sign == b'+' || *sign == b'-')
                && [h1, h2, m1, m2].iter().all(|d| d.is_ascii_digit()) =>
        {
            number(&rest[1..3]) <= 14 && number(&rest[4..6]) <= 59
        }
        _ => false,
    }
}

fn number(digits: &str) -> u32 {
    digits.parse().unwrap_or(u32::MAX)
}

const GENDER: &[&str] = &["male", "female", "other", "unknown"];
const REQUEST_INTENT: &[&str] = &[
    "proposal",
    "plan",
    "directive",
    "order",
    "original-order",
    "reflex-order",
    "filler-order",
    "instance-order",
    "option",
];
const FINANCIAL_STATUS: &[&str] = &["active", "cancelled", "draft", "entered-in-error"];
const CLAIM_USE: &[&str] = &["claim", "preauthorization", "predetermination"];

/// FHIR's RequestStatus value set, shared by the request resources (CarePlan, ServiceRequest).
const REQUEST_STATUS: &[&str] = &[
    "draft",
    "active",
    "on-hold",
    "revoked",
    "completed",
    "entered-in-error",
    "unknown",
];

/// Per-type rules: required elements (R4 min cardinality 1), required code bindings, and the
/// date/time elements generated data is most likely to get wrong.
static RULES: &[(&str, &[Rule])] = &[
    (
        "AllergyIntolerance",
        &[
            Required("patient"),
            Code("type", &["allergy", "intolerance"]),
            Code(
                "category",
                &["food", "medication", "environment", "biologic"],
            ),
            Code("criticality", &["low", "high", "unable-to-assess"]),
            Format("onsetDateTime", DateTime),
            Format("recordedDate", DateTime),
            Format("lastOccurrence", DateTime),
        ],
    ),
    (
        "Bundle",
        &[
            Required("type"),
            Code(
                "type",
                &[
                    "document",
                    "message",
                    "transaction",
                    "transaction-response",
                    "batch",
                    "batch-response",
                    "history",
                    "searchset",
                    "collection",
                ],
            ),
        ],
    ),
    (
        "CarePlan",
        &[
            Required("status"),
            Required("intent"),
            Required("subject"),
            Code("status", REQUEST_STATUS),
            Code("intent", &["proposal", "plan", "order", "option"]),
            Period("period"),
            Format("created", DateTime),
        ],
    ),
    (
        "CareTeam",
        &[Code(
            "status",
            &[
                "proposed",
                "active",
                "suspended",
                "inactive",
                "entered-in-error",
            ],
        )],
    ),
    (
        "Claim",
        &[
            Required("status"),
            Required("type"),
            Required("use"),
            Required("patient"),
            Required("created"),
            Required("provider"),
            Required("priority"),
            Required("insurance"),
            Code("status", FINANCIAL_STATUS),
            Code("use", CLAIM_USE),
            Format("created", DateTime),
            Period("billablePeriod"),
        ],
    ),
    (
        "Condition",
        &[
            Required("subject"),
            Format("onsetDateTime", DateTime),
            Format("abatementDateTime", DateTime),
            Format("recordedDate", DateTime),
            Period("onsetPeriod"),
        ],
    ),
    (
        "Coverage",
        &[
            Required("status"),
            Required("beneficiary"),
            Required("payor"),
            Code("status", FINANCIAL_STATUS),
            Period("period"),
        ],
    ),
    (
        "DiagnosticReport",
        &[
            Required("status"),
            Required("code"),
            Code(
                "status",
                &[
                    "registered",
                    "partial",
                    "preliminary",
                    "final",
                    "amended",
                    "corrected",
                    "appended",
                    "cancelled",
                    "entered-in-error",
                    "unknown",
                ],
            ),
            Format("effectiveDateTime", DateTime),
            Period("effectivePeriod"),
            Format("issued", Instant),
        ],
    ),
    (
        "DocumentReference",
        &[
            Required("status"),
            Required("content"),
            Code("status", &["current", "superseded", "entered-in-error"]),
            Code(
                "docStatus",
                &["preliminary", "final", "amended", "entered-in-error"],
            ),
            Format("date", Instant),
        ],
    ),
    (
        "Encounter",
        &[
            Required("status"),
            Required("class"),
            Code(
                "status",
                &[
                    "planned",
                    "arrived",
                    "triaged",
                    "in-progress",
                    "onleave",
                    "finished",
                    "cancelled",
                    "entered-in-error",
                    "unknown",
                ],
            ),
            Period("period"),
        ],
    ),
    (
        "ExplanationOfBenefit",
        &[
            Required("status"),
            Required("type"),
            Required("use"),
            Required("patient"),
            Required("created"),
            Required("insurer"),
            Required("provider"),
            Required("outcome"),
            Required("insurance"),
            Code("status", FINANCIAL_STATUS),
            Code("use", CLAIM_USE),
            Code("outcome", &["queued", "complete", "error", "partial"]),
            Format("created", DateTime),
            Period("billablePeriod"),
        ],
    ),
    (
        "Goal",
        &[
            Required("lifecycleStatus"),
            Required("description"),
            Required("subject"),
            Code(
                "lifecycleStatus",
                &[
                    "proposed",
                    "planned",
                    "accepted",
                    "active",
                    "on-hold",
                    "completed",
                    "cancelled",
                    "entered-in-error",
                    "rejected",
                ],
            ),
            Format("startDate", Date),
        ],
    ),
    (
        "ImagingStudy",
        &[
            Required("status"),
            Required("subject"),
            Code(
                "status",
                &[
                    "registered",
                    "available",
                    "cancelled",
                    "entered-in-error",
                    "unknown",
                ],
            ),
            Format("started", DateTime),
        ],
    ),
    (
        "Immunization",
        &[
            Required("status"),
            Required("vaccineCode"),
            Required("patient"),
            RequiredChoice("occurrence[x]", &["occurrenceDateTime", "occurrenceString"]),
            Code("status", &["completed", "entered-in-error", "not-done"]),
            Format("occurrenceDateTime", DateTime),
            Format("recorded", DateTime),
        ],
    ),
    (
        "Location",
        &[
            Code("status", &["active", "suspended", "inactive"]),
            Code("mode", &["instance", "kind"]),
        ],
    ),
    (
        "Medication",
        &[Code("status", &["active", "inactive", "entered-in-error"])],
    ),
    (
        "MedicationAdministration",
        &[
            Required("status"),
            Required("subject"),
            RequiredChoice(
                "medication[x]",
                &["medicationCodeableConcept", "medicationReference"],
            ),
            RequiredChoice("effective[x]", &["effectiveDateTime", "effectivePeriod"]),
            Code(
                "status",
                &[
                    "in-progress",
                    "not-done",
                    "on-hold",
                    "completed",
                    "entered-in-error",
                    "stopped",
                    "unknown",
                ],
            ),
            Format("effectiveDateTime", DateTime),
            Period("effectivePeriod"),
        ],
    ),
    (
        "MedicationRequest",
        &[
            Required("status"),
            Required("intent"),
            Required("subject"),
            RequiredChoice(
                "medication[x]",
                &["medicationCodeableConcept", "medicationReference"],
            ),
            Code(
                "status",
                &[
                    "active",
                    "on-hold",
                    "cancelled",
                    "completed",
                    "entered-in-error",
                    "stopped",
                    "draft",
                    "unknown",
                ],
            ),
            Code(
                "intent",
                &[
                    "proposal",
                    "plan",
                    "order",
                    "original-order",
                    "reflex-order",
                    "filler-order",
                    "instance-order",
                    "option",
                ],
            ),
            Code("priority", &["routine", "urgent", "asap", "stat"]),
            Format("authoredOn", DateTime),
        ],
    ),
    (
        "MedicationStatement",
        &[
            Required("status"),
            Required("subject"),
            RequiredChoice(
                "medication[x]",
                &["medicationCodeableConcept", "medicationReference"],
            ),
            Code(
                "status",
                &[
                    "active",
                    "completed",
                    "entered-in-error",
                    "intended",
                    "stopped",
                    "on-hold",
                    "unknown",
                    "not-taken",
                ],
            ),
            Format("effectiveDateTime", DateTime),
            Period("effectivePeriod"),
            Format("dateAsserted", DateTime),
        ],
    ),
    (
        "Observation",
        &[
            Required("status"),
            Required("code"),
            Code(
                "status",
                &[
                    "registered",
                    "preliminary",
                    "final",
                    "amended",
                    "corrected",
                    "cancelled",
                    "entered-in-error",
                    "unknown",
                ],
            ),
            Format("effectiveDateTime", DateTime),
            Format("effectiveInstant", Instant),
            Period("effectivePeriod"),
            Format("issued", Instant),
        ],
    ),
    (
        "Patient",
        &[
            Code("gender", GENDER),
            Format("birthDate", Date),
            Format("deceasedDateTime", DateTime),
        ],
    ),
    (
        "Person",
        &[Code("gender", GENDER), Format("birthDate", Date)],
    ),
    (
        "Practitioner",
        &[Code("gender", GENDER), Format("birthDate", Date)],
    ),
    (
        "Procedure",
        &[
            Required("status"),
            Required("subject"),
            Code(
                "status",
                &[
                    "preparation",
                    "in-progress",
                    "not-done",
                    "on-hold",
                    "stopped",
                    "completed",
                    "entered-in-error",
                    "unknown",
                ],
            ),
            Format("performedDateTime", DateTime),
            Period("performedPeriod"),
        ],
    ),
    (
        "Provenance",
        &[
            Required("target"),
            Required("recorded"),
            Required("agent"),
            Format("recorded", Instant),
        ],
    ),
    (
        "RelatedPerson",
        &[
            Required("patient"),
            Code("gender", GENDER),
            Format("birthDate", Date),
        ],
    ),
    (
        "ServiceRequest",
        &[
            Required("status"),
            Required("intent"),
            Required("subject"),
            Code("status", REQUEST_STATUS),
            Code("intent", REQUEST_INTENT),
            Format("authoredOn", DateTime),
        ],
    ),
];

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn type_list_is_sorted_and_complete() {
        assert!(RESOURCE_TYPES.windows(2).all(|w| w[0] < w[1]));
        assert_eq!(RESOURCE_TYPES.len(), 146);
        assert!(is_resource_type("Patient"));
        assert!(!is_resource_type("Patients"));
        assert!(RULES.iter().all(|(name, _)| is_resource_type(name)));
    }

    #[test]
    fn ids() {
        assert!(is_valid_id("a-B.9"));
        assert!(is_valid_id(&"x".repeat(64)));
        assert!(!is_valid_id(&"x".repeat(65)));
        assert!(!is_valid_id(""));
        assert!(!is_valid_id("a_b"));
        assert!(!is_valid_id("a/b"));
    }

    #[test]
    fn dates_and_times() {
        for ok in ["2024", "2024-02", "2024-02-29", "1900-01-01"] {
            assert!(is_date(ok), "{ok}");
            assert!(is_date_time(ok), "{ok}");
        }
        for bad in ["24", "2024-13", "2023-02-29", "2024-1-01", "2024/01/01", ""] {
            assert!(!is_date(bad), "{bad}");
        }
        for ok in [
            "2024-02-29T13:45:00Z",
            "2024-02-29T13:45:00.123+02:00",
            "2024-02-29T23:59:60-05:30",
        ] {
            assert!(is_date_time(ok), "{ok}");
        }
        for bad in [
            "2024-02-29T13:45:00",
            "2024-02-29 13:45:00Z",
            "2024-02-29T24:00:00Z",
            "2024-02-29T13:45Z",
            "2024-02-29T13:45:00.Z",
            "2024-02-29T13:45:00+2:00",
        ] {
            assert!(!is_date_time(bad), "{bad}");
        }
    }

    #[test]
    fn type_must_match_the_url() {
        let patient = json!({"resourceType": "Patient", "gender": "female"});
        assert!(check_resource(&patient, "Patient").is_ok());
        let err = check_resource(&patient, "Observation").unwrap_err();
        assert!(err.contains("does not match"), "{err}");
        assert!(check_resource(&json!([1]), "Patient").is_err());
        assert!(check_resource(&json!({"resourceType": "Nope"}), "Nope").is_err());
        let bad_id = json!({"resourceType": "Patient", "id": "a b"});
        assert!(
            check_resource(&bad_id, "Patient")
                .unwrap_err()
                .contains("id")
        );
    }

    #[test]
    fn table_rules() {
        let observation = json!({"resourceType": "Observation", "code": {"text": "x"}});
        let err = check_resource(&observation, "Observation").unwrap_err();
        assert_eq!(err, "Observation.status is required");

        let bad_gender = json!({"resourceType": "Patient", "gender": "F"});
        let err = check_resource(&bad_gender, "Patient").unwrap_err();
        assert!(err.contains("Patient.gender \"F\""), "{err}");

        let request = json!({
            "resourceType": "MedicationRequest", "status": "active", "intent": "order",
            "subject": {"reference": "Patient/1"}
        });
        let err = check_resource(&request, "MedicationRequest").unwrap_err();
        assert!(err.contains("medication[x]"), "{err}");

        let encounter = json!({
            "resourceType": "Encounter", "status": "finished", "class": {"code": "AMB"},
            "period": {"start": "2024-01-02T10:00:00Z", "end": "2024-01-02T09:00:00Z"}
        });
        let err = check_resource(&encounter, "Encounter").unwrap_err();
        assert!(err.contains("is after end"), "{err}");

        let allergy = json!({
            "resourceType": "AllergyIntolerance", "patient": {"reference": "Patient/1"},
            "category": ["food", "drink"]
        });
        assert!(check_resource(&allergy, "AllergyIntolerance").is_err());

        let birth = json!({"resourceType": "Patient", "birthDate": "1980-02-30"});
        assert!(
            check_resource(&birth, "Patient")
                .unwrap_err()
                .contains("birthDate")
        );
    }

    #[test]
    fn json_shape() {
        let empty = json!({"resourceType": "Patient", "name": [{"given": ["A", ""]}]});
        assert_eq!(
            check_resource(&empty, "Patient").unwrap_err(),
            "name[0].given[1]: empty strings are not allowed"
        );
        let null = json!({"resourceType": "Patient", "active": null});
        assert!(
            check_resource(&null, "Patient")
                .unwrap_err()
                .contains("null")
        );
        let empty_array = json!({"resourceType": "Patient", "telecom": []});
        assert!(check_resource(&empty_array, "Patient").is_err());
    }
}
