//! Turns a patient's plan into FHIR R4 resources (US Core where it applies), in dependency
//! order. Ids, names and addresses come from the patient's render stream, so a patient renders
//! to the same bytes in any shard.

use chrono::{Datelike, NaiveDate, Timelike};
use fake::Fake;
use fake::faker::address::en::{BuildingNumber, CitySuffix, PostCode, StateAbbr, StreetName};
use fake::faker::name::en::LastName;
use fake::faker::phone_number::en::CellNumber;
use rand::RngExt;
use rand::rngs::ChaCha8Rng;
use serde_json::{Map, Value, json};

use super::codes::{self, Concept, Measure};
use super::names;
use super::plan::{
    AllergyPlan, ConditionPlan, EncounterClass, EncounterPlan, MedicationStatus, PatientPlan,
    ProcedurePlan, Sex, date_of, years_between,
};
use super::random::{Purpose, stream, uuid};
use super::shared::SharedPool;
use super::types::{ResourceType, TypeSet};
use crate::fhir::{IDENTIFIER_SYSTEM_BASE, Resource};

/// A resource body built field by field, in FHIR's element order.
pub struct Body(Map<String, Value>);

impl Body {
    pub fn new(resource_type: &str, id: &str) -> Self {
        let mut map = Map::new();
        map.insert("resourceType".to_owned(), Value::from(resource_type));
        map.insert("id".to_owned(), Value::from(id));
        Self(map)
    }

    pub fn set(mut self, key: &str, value: impl Into<Value>) -> Self {
        self.0.insert(key.to_owned(), value.into());
        self
    }

    pub fn set_some(self, key: &str, value: Option<impl Into<Value>>) -> Self {
        match value {
            Some(value) => self.set(key, value),
            None => self,
        }
    }

    pub fn build(self) -> Value {
        Value::Object(self.0)
    }
}

/// The fhirgen identifier of a resource of this (lower-case) type: how re-runs find it again.
pub fn identifiers(lower_type: &str, id: &str) -> Value {
    json!([{"system": format!("{IDENTIFIER_SYSTEM_BASE}/{lower_type}"), "value": id}])
}

pub fn coding(system: &str, concept: Concept) -> Value {
    json!({"system": system, "code": concept.code, "display": concept.display})
}

pub fn codeable(system: &str, concept: Concept) -> Value {
    json!({"coding": [coding(system, concept)], "text": concept.display})
}

pub fn reference(key: &str) -> Value {
    json!({"reference": key})
}

/// The reference to the resource of type `t` with this id.
fn key_reference(t: ResourceType, id: &str) -> Value {
    reference(&format!("{t}/{id}"))
}

pub fn phone(rng: &mut ChaCha8Rng) -> String {
    CellNumber().fake_with_rng(rng)
}

/// A US street address.
pub fn address(rng: &mut ChaCha8Rng) -> Value {
    let number: String = BuildingNumber().fake_with_rng(rng);
    let street: String = StreetName().fake_with_rng(rng);
    let town: &str = LastName().fake_with_rng(rng);
    let suffix: &str = CitySuffix().fake_with_rng(rng);
    let city = format!("{town}{suffix}");
    let state: &str = StateAbbr().fake_with_rng(rng);
    let postal_code: String = PostCode().fake_with_rng(rng);
    json!({
        "line": [format!("{number} {street}")],
        "city": city,
        "state": state,
        "postalCode": postal_code,
        "country": "US",
    })
}

/// `YYYY-MM-DDThh:mm:ss+00:00`.
pub fn date_time(at: i64) -> String {
    let t = chrono::DateTime::from_timestamp(at, 0)
        .expect("time is in range")
        .naive_utc();
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}+00:00",
        t.year(),
        t.month(),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    )
}

/// `YYYY-MM-DD`.
pub fn date(d: NaiveDate) -> String {
    format!("{:04}-{:02}-{:02}", d.year(), d.month(), d.day())
}

fn period(start: i64, end: i64) -> Value {
    json!({"start": date_time(start), "end": date_time(end)})
}

/// A UCUM quantity; whole numbers are written without a fraction.
fn quantity(measure: &Measure, value: f64) -> Value {
    let number = if measure.decimals == 0 {
        Value::from(value as i64)
    } else {
        Value::from(value)
    };
    json!({"value": number, "unit": measure.unit, "system": codes::UCUM, "code": measure.unit})
}

fn loinc_code(measure: &Measure) -> Value {
    let mut coding = vec![coding(codes::LOINC, measure.loinc)];
    if let Some(also) = measure.also {
        coding.push(self::coding(codes::LOINC, also));
    }
    json!({"coding": coding, "text": measure.loinc.display})
}

/// What an observation of `category` is filed under.
#[derive(Clone, Copy)]
enum Category {
    VitalSigns,
    Laboratory,
}

impl Category {
    fn value(self) -> Value {
        let (code, display) = match self {
            Category::VitalSigns => ("vital-signs", "Vital Signs"),
            Category::Laboratory => ("laboratory", "Laboratory"),
        };
        json!([{"coding": [{"system": codes::OBSERVATION_CATEGORY, "code": code, "display": display}]}])
    }
}

/// Renders patient `index` from its plan: the first `limit` of its resources of `types`, that
/// is `plan.resource_count(types).min(limit)` resources. Every resource draws its id whether it
/// is kept or not, so a kept resource is the same whatever else is kept.
pub fn render_patient(
    seed: u64,
    index: u64,
    plan: &PatientPlan,
    pool: &SharedPool,
    types: TypeSet,
    limit: u64,
) -> Vec<Resource> {
    let mut rng = stream(seed, Purpose::Render, index);
    let patient_id = uuid(&mut rng);
    let expected = plan.resource_count(types).min(limit);
    let mut renderer = Renderer {
        resources: Vec::with_capacity(expected as usize),
        types,
        limit,
        patient: Value::from(format!("Patient/{patient_id}")),
        condition_refs: Vec::with_capacity(plan.conditions.len()),
        encounter: Value::Null,
        pool,
        rng,
    };
    renderer.patient(plan, patient_id);
    for allergy in &plan.allergies {
        renderer.allergy(allergy);
    }
    for (i, encounter) in plan.encounters.iter().enumerate() {
        if renderer.is_full() {
            break;
        }
        renderer.encounter(encounter);
        for condition in plan.conditions_of(i) {
            renderer.condition(condition);
        }
        renderer.observations(encounter);
        for procedure in &encounter.procedures {
            renderer.procedure(encounter, procedure);
        }
        for medication in &encounter.medications {
            renderer.medication(encounter, medication);
        }
        for vaccine in &encounter.immunizations {
            renderer.immunization(encounter, *vaccine);
        }
    }
    debug_assert_eq!(renderer.resources.len() as u64, expected);
    renderer.resources
}

struct Renderer<'a> {
    resources: Vec<Resource>,
    /// What to keep: `limit` resources at most, of these types.
    types: TypeSet,
    limit: u64,
    /// `Patient/<id>` of this patient.
    patient: Value,
    /// References to the conditions rendered so far, by index in the plan.
    condition_refs: Vec<Value>,
    /// Reference to the encounter being rendered.
    encounter: Value,
    pool: &'a SharedPool,
    rng: ChaCha8Rng,
}

impl Renderer<'_> {
    fn id(&mut self) -> String {
        uuid(&mut self.rng)
    }

    fn is_full(&self) -> bool {
        self.resources.len() as u64 >= self.limit
    }

    /// Whether the next resource of type `t` is kept; one that is not is never built.
    fn keeps(&self, t: ResourceType) -> bool {
        self.types.contains(t) && !self.is_full()
    }

    fn subject(&self) -> Value {
        json!({"reference": self.patient})
    }

    fn practitioner(&self, encounter: &EncounterPlan) -> Value {
        reference(self.pool.practitioner(encounter.practitioner))
    }

    fn push(&mut self, body: Value) {
        self.resources.push(Resource::new(body));
    }

    fn patient(&mut self, plan: &PatientPlan, id: String) {
        let rng = &mut self.rng;
        let female = plan.sex == Sex::Female;
        let given_names = if female { names::FEMALE } else { names::MALE };
        let first = rng.random_range(0..given_names.len());
        let mut given = vec![given_names[first]];
        if rng.random_bool(0.5) {
            // A middle name other than the first name.
            let offset = rng.random_range(1..given_names.len());
            given.push(given_names[(first + offset) % given_names.len()]);
        }
        let family: &str = LastName().fake_with_rng(rng);
        let adult = years_between(plan.birth_date, date_of(plan.history_end)) >= 18;
        let mut name = json!({"use": "official", "family": family, "given": given});
        if adult {
            let prefix = match (female, plan.marital_status) {
                (false, _) => "Mr.",
                (true, Some(codes::MARRIED | codes::WIDOWED)) => "Mrs.",
                (true, _) => "Ms.",
            };
            name["prefix"] = json!([prefix]);
        }
        let race = plan.race;
        let ethnicity = if plan.hispanic {
            codes::HISPANIC
        } else {
            codes::NOT_HISPANIC
        };
        let extension = json!([
            {
                "url": codes::US_CORE_RACE,
                "extension": [
                    {"url": "ombCategory", "valueCoding": coding(codes::RACE_ETHNICITY, race)},
                    {"url": "text", "valueString": race.display},
                ],
            },
            {
                "url": codes::US_CORE_ETHNICITY,
                "extension": [
                    {"url": "ombCategory", "valueCoding": coding(codes::RACE_ETHNICITY, ethnicity)},
                    {"url": "text", "valueString": ethnicity.display},
                ],
            },
            {"url": codes::US_CORE_BIRTH_SEX, "valueCode": if female { "F" } else { "M" }},
        ]);
        let telecom = json!([{"system": "phone", "value": phone(rng), "use": "home"}]);
        let mut home = address(rng);
        home["use"] = Value::from("home");
        let gp = plan.general_practitioner;
        let body = Body::new("Patient", &id)
            .set("extension", extension)
            .set("identifier", identifiers("patient", &id))
            .set("active", true)
            .set("name", json!([name]))
            .set("telecom", telecom)
            .set("gender", if female { "female" } else { "male" })
            .set("birthDate", date(plan.birth_date))
            .set_some("deceasedDateTime", plan.death.map(date_time))
            .set("address", json!([home]))
            .set_some(
                "maritalStatus",
                plan.marital_status
                    .map(|status| codeable(codes::MARITAL_STATUS, status)),
            )
            .set(
                "communication",
                json!([{"language": codeable(codes::LANGUAGE, plan.language), "preferred": true}]),
            )
            .set(
                "generalPractitioner",
                json!([reference(self.pool.practitioner(gp))]),
            )
            .set(
                "managingOrganization",
                reference(
                    self.pool
                        .organization(self.pool.shape().organization_of(gp)),
                ),
            )
            .build();
        // Built whatever is kept: its draws decide the ids of everything after it.
        if self.keeps(ResourceType::Patient) {
            self.push(body);
        }
    }

    fn allergy(&mut self, allergy: &AllergyPlan) {
        let id = self.id();
        if !self.keeps(ResourceType::AllergyIntolerance) {
            return;
        }
        let severity = if allergy.high_criticality {
            "severe"
        } else {
            "mild"
        };
        let body = Body::new("AllergyIntolerance", &id)
            .set("identifier", identifiers("allergyintolerance", &id))
            .set(
                "clinicalStatus",
                json!({"coding": [{"system": codes::ALLERGY_CLINICAL, "code": "active", "display": "Active"}]}),
            )
            .set(
                "verificationStatus",
                json!({"coding": [{"system": codes::ALLERGY_VERIFICATION, "code": "confirmed", "display": "Confirmed"}]}),
            )
            .set("type", "allergy")
            .set("category", json!([allergy.allergy.category.code()]))
            .set(
                "criticality",
                if allergy.high_criticality { "high" } else { "low" },
            )
            .set("code", codeable(codes::SNOMED, allergy.allergy.substance))
            .set("patient", self.subject())
            .set("onsetDateTime", date_time(allergy.onset))
            .set("recordedDate", date_time(allergy.recorded))
            .set(
                "reaction",
                json!([{
                    "manifestation": [codeable(codes::SNOMED, allergy.reaction)],
                    "severity": severity,
                }]),
            )
            .build();
        self.push(body);
    }

    fn encounter(&mut self, encounter: &EncounterPlan) {
        let id = self.id();
        self.encounter = key_reference(ResourceType::Encounter, &id);
        if !self.keeps(ResourceType::Encounter) {
            return;
        }
        let (code, display) = match encounter.class {
            EncounterClass::Ambulatory => ("AMB", "ambulatory"),
            EncounterClass::Emergency => ("EMER", "emergency"),
            EncounterClass::Inpatient => ("IMP", "inpatient encounter"),
        };
        let hospitalization = (encounter.class == EncounterClass::Inpatient).then(|| {
            json!({"dischargeDisposition": {"coding": [{"system": codes::DISCHARGE_DISPOSITION, "code": "home", "display": "Home"}]}})
        });
        let body = Body::new("Encounter", &id)
            .set("identifier", identifiers("encounter", &id))
            .set("status", "finished")
            .set(
                "class",
                json!({"system": codes::ACT_CODE, "code": code, "display": display}),
            )
            .set("type", json!([codeable(codes::SNOMED, encounter.kind)]))
            .set("subject", self.subject())
            .set(
                "participant",
                json!([{
                    "type": [{"coding": [{"system": codes::PARTICIPATION_TYPE, "code": "PPRF", "display": "primary performer"}]}],
                    "period": period(encounter.start, encounter.end),
                    "individual": self.practitioner(encounter),
                }]),
            )
            .set("period", period(encounter.start, encounter.end))
            .set_some(
                "reasonCode",
                encounter
                    .reason
                    .map(|reason| json!([codeable(codes::SNOMED, reason)])),
            )
            .set_some("hospitalization", hospitalization)
            .set(
                "serviceProvider",
                reference(self.pool.organization(encounter.organization)),
            )
            .build();
        self.push(body);
    }

    fn condition(&mut self, condition: &ConditionPlan) {
        let id = self.id();
        self.condition_refs
            .push(key_reference(ResourceType::Condition, &id));
        if !self.keeps(ResourceType::Condition) {
            return;
        }
        let (status, status_display) = if condition.abatement.is_some() {
            ("resolved", "Resolved")
        } else {
            ("active", "Active")
        };
        let (category, category_display) = if condition.chronic {
            ("problem-list-item", "Problem List Item")
        } else {
            ("encounter-diagnosis", "Encounter Diagnosis")
        };
        let body = Body::new("Condition", &id)
            .set("identifier", identifiers("condition", &id))
            .set(
                "clinicalStatus",
                json!({"coding": [{"system": codes::CONDITION_CLINICAL, "code": status, "display": status_display}]}),
            )
            .set(
                "verificationStatus",
                json!({"coding": [{"system": codes::CONDITION_VERIFICATION, "code": "confirmed", "display": "Confirmed"}]}),
            )
            .set(
                "category",
                json!([{"coding": [{"system": codes::CONDITION_CATEGORY, "code": category, "display": category_display}]}]),
            )
            .set("code", codeable(codes::SNOMED, condition.snomed))
            .set("subject", self.subject())
            .set("encounter", self.encounter.clone())
            .set("onsetDateTime", date_time(condition.onset))
            .set_some("abatementDateTime", condition.abatement.map(date_time))
            .set("recordedDate", date_time(condition.recorded))
            .build();
        self.push(body);
    }

    fn observation(
        &mut self,
        category: Category,
        code: Value,
        at: i64,
        value_key: &str,
        value: Value,
    ) -> Value {
        let id = self.id();
        let reference = key_reference(ResourceType::Observation, &id);
        if !self.keeps(ResourceType::Observation) {
            return reference;
        }
        let body = Body::new("Observation", &id)
            .set("identifier", identifiers("observation", &id))
            .set("status", "final")
            .set("category", category.value())
            .set("code", code)
            .set("subject", self.subject())
            .set("encounter", self.encounter.clone())
            .set("effectiveDateTime", date_time(at))
            .set("issued", date_time(at))
            .set(value_key, value)
            .build();
        self.push(body);
        reference
    }

    fn observations(&mut self, encounter: &EncounterPlan) {
        if let Some((systolic, diastolic)) = encounter.blood_pressure {
            let components = json!([
                {"code": loinc_code(&codes::SYSTOLIC), "valueQuantity": quantity(&codes::SYSTOLIC, systolic)},
                {"code": loinc_code(&codes::DIASTOLIC), "valueQuantity": quantity(&codes::DIASTOLIC, diastolic)},
            ]);
            self.observation(
                Category::VitalSigns,
                codeable(codes::LOINC, codes::BLOOD_PRESSURE),
                encounter.vitals_at,
                "component",
                components,
            );
        }
        for m in &encounter.vitals {
            self.observation(
                Category::VitalSigns,
                loinc_code(m.measure),
                encounter.vitals_at,
                "valueQuantity",
                quantity(m.measure, m.value),
            );
        }
        if encounter.labs.is_empty() {
            return;
        }
        let results: Vec<Value> = encounter
            .labs
            .iter()
            .map(|m| {
                self.observation(
                    Category::Laboratory,
                    loinc_code(m.measure),
                    encounter.labs_at,
                    "valueQuantity",
                    quantity(m.measure, m.value),
                )
            })
            .collect();
        let id = self.id();
        if !self.keeps(ResourceType::DiagnosticReport) {
            return;
        }
        let issued = (encounter.labs_at + 3_600).min(encounter.end);
        let body = Body::new("DiagnosticReport", &id)
            .set("identifier", identifiers("diagnosticreport", &id))
            .set("status", "final")
            .set(
                "category",
                json!([{"coding": [{"system": codes::DIAGNOSTIC_SERVICE, "code": "LAB", "display": "Laboratory"}]}]),
            )
            .set("code", codeable(codes::LOINC, codes::LAB_REPORT))
            .set("subject", self.subject())
            .set("encounter", self.encounter.clone())
            .set("effectiveDateTime", date_time(encounter.labs_at))
            .set("issued", date_time(issued))
            .set("performer", json!([self.practitioner(encounter)]))
            .set("result", results)
            .build();
        self.push(body);
    }

    fn procedure(&mut self, encounter: &EncounterPlan, procedure: &ProcedurePlan) {
        let id = self.id();
        if !self.keeps(ResourceType::Procedure) {
            return;
        }
        let reason = procedure
            .reason
            .map(|i| json!([self.condition_refs[i].clone()]));
        let body = Body::new("Procedure", &id)
            .set("identifier", identifiers("procedure", &id))
            .set("status", "completed")
            .set("code", codeable(codes::SNOMED, procedure.snomed))
            .set("subject", self.subject())
            .set("encounter", self.encounter.clone())
            .set("performedPeriod", period(procedure.start, procedure.end))
            .set(
                "performer",
                json!([{"actor": self.practitioner(encounter)}]),
            )
            .set_some("reasonReference", reason)
            .build();
        self.push(body);
    }

    fn medication(&mut self, encounter: &EncounterPlan, medication: &super::plan::MedicationPlan) {
        let id = self.id();
        if !self.keeps(ResourceType::MedicationRequest) {
            return;
        }
        let status = match medication.status {
            MedicationStatus::Active => "active",
            MedicationStatus::Completed => "completed",
            MedicationStatus::Stopped => "stopped",
        };
        let (category, category_display) = if encounter.class == EncounterClass::Inpatient {
            ("inpatient", "Inpatient")
        } else {
            ("community", "Community")
        };
        let drug = medication.medication;
        let body = Body::new("MedicationRequest", &id)
            .set("identifier", identifiers("medicationrequest", &id))
            .set("status", status)
            .set("intent", "order")
            .set(
                "category",
                json!([{"coding": [{"system": codes::MEDICATION_REQUEST_CATEGORY, "code": category, "display": category_display}]}]),
            )
            .set(
                "medicationCodeableConcept",
                codeable(codes::RXNORM, drug.rxnorm),
            )
            .set("subject", self.subject())
            .set("encounter", self.encounter.clone())
            .set("authoredOn", date_time(medication.authored))
            .set("requester", self.practitioner(encounter))
            .set(
                "reasonReference",
                json!([self.condition_refs[medication.reason].clone()]),
            )
            .set("dosageInstruction", json!([{"text": drug.dosage}]))
            .build();
        self.push(body);
    }

    fn immunization(&mut self, encounter: &EncounterPlan, vaccine: Concept) {
        let id = self.id();
        if !self.keeps(ResourceType::Immunization) {
            return;
        }
        let body = Body::new("Immunization", &id)
            .set("identifier", identifiers("immunization", &id))
            .set("status", "completed")
            .set("vaccineCode", codeable(codes::CVX, vaccine))
            .set("patient", self.subject())
            .set("encounter", self.encounter.clone())
            .set("occurrenceDateTime", date_time(encounter.immunized_at))
            .set("primarySource", true)
            .set(
                "performer",
                json!([{"actor": self.practitioner(encounter)}]),
            )
            .build();
        self.push(body);
    }
}
