//! Turns a patient's plan into FHIR R4 resources (US Core where it applies), in dependency
//! order. Ids, names and addresses come from the patient's render stream, so a patient renders
//! to the same bytes in any shard.

use fake::Fake;
use fake::faker::name::en::LastName;
use rand::RngExt;
use rand::rngs::ChaCha8Rng;

mod billing;
mod care;
mod chart;

use super::codes::{self, Concept, Measure};
use super::json::{
    Body, Json, address, array, codeable, coded, coded_list, coding, date, key, object, period,
    phone, reference,
};
use super::names;
use super::plan::{
    AllergyPlan, ConditionPlan, EncounterClass, EncounterPlan, MedicationPlan, MedicationStatus,
    PatientPlan, ProcedurePlan, Sex, date_of, years_between,
};
use super::random::{Purpose, stream, uuid};
use super::shared::SharedPool;
use super::types::{ResourceType, TypeSet};
use crate::fhir::Resource;

/// A UCUM quantity; whole numbers are written without a fraction.
fn quantity(measure: &'static Measure, value: f64) -> Json {
    Json::Quantity(measure, value)
}

fn loinc_code(measure: &'static Measure) -> Json {
    Json::Loinc(measure)
}

/// What an observation of `category` is filed under.
#[derive(Clone, Copy)]
enum Category {
    VitalSigns,
    Laboratory,
}

impl Category {
    fn value(self) -> Json {
        let (code, display) = match self {
            Category::VitalSigns => ("vital-signs", "Vital Signs"),
            Category::Laboratory => ("laboratory", "Laboratory"),
        };
        coded_list(codes::OBSERVATION_CATEGORY, Concept { code, display })
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
    attachment_size: Option<usize>,
) -> Vec<Resource> {
    let mut rng = stream(seed, Purpose::Render, index);
    let patient_id = uuid(&mut rng);
    let expected = plan.resource_count(types).min(limit);
    let mut renderer = Renderer {
        resources: Vec::with_capacity(expected as usize),
        types,
        limit,
        subject: reference(key(ResourceType::Patient, &patient_id)),
        name: String::new(),
        condition_refs: Vec::with_capacity(plan.conditions.len()),
        encounter: Json::Null,
        procedure_refs: Vec::new(),
        request_refs: Vec::new(),
        coverage: Json::Null,
        payer: 0,
        attachment_size,
        pool,
        rng,
    };
    renderer.patient(plan, patient_id);
    renderer.coverage(plan);
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
            if condition.chronic {
                renderer.care_plan(plan, encounter, condition);
            }
        }
        renderer.observations(encounter);
        renderer.procedure_refs.clear();
        for procedure in &encounter.procedures {
            renderer.procedure(plan, encounter, procedure);
        }
        renderer.request_refs.clear();
        for medication in &encounter.medications {
            renderer.medication(encounter, medication);
        }
        for (medication, request) in encounter.administered().iter().zip(0..) {
            for at in encounter.doses(medication) {
                renderer.administration(encounter, medication, request, at);
            }
        }
        for vaccine in &encounter.immunizations {
            renderer.immunization(encounter, *vaccine);
        }
        renderer.note(plan, i);
        renderer.bill(plan, i);
    }
    renderer.provenance(plan);
    debug_assert_eq!(renderer.resources.len() as u64, expected);
    renderer.resources
}

struct Renderer<'a> {
    resources: Vec<Resource>,
    /// What to keep: `limit` resources at most, of these types.
    types: TypeSet,
    limit: u64,
    /// Reference to this patient.
    subject: Json,
    /// The patient's name as a note writes it.
    name: String,
    /// References to the conditions rendered so far, by index in the plan.
    condition_refs: Vec<Json>,
    /// Reference to the encounter being rendered.
    encounter: Json,
    /// References to the procedures and prescriptions of the encounter being rendered.
    procedure_refs: Vec<Json>,
    request_refs: Vec<Json>,
    /// Reference to the patient's Coverage, and its insurer (index into [`codes::PAYERS`]).
    coverage: Json,
    payer: usize,
    /// Decoded size of each note, when asked for.
    attachment_size: Option<usize>,
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

    fn subject(&self) -> Json {
        self.subject.clone()
    }

    fn practitioner(&self, encounter: &EncounterPlan) -> Json {
        reference(self.pool.practitioner(encounter.practitioner).to_owned())
    }

    fn push(&mut self, body: Body) {
        self.resources.push(body.build());
    }

    fn patient(&mut self, plan: &PatientPlan, id: String) {
        let rng = &mut self.rng;
        let female = plan.sex == Sex::Female;
        let given_names = if female { names::FEMALE } else { names::MALE };
        let first = rng.random_range(0..given_names.len());
        let mut given = Vec::with_capacity(2);
        given.push(Json::from(given_names[first]));
        if rng.random_bool(0.5) {
            // A middle name other than the first name.
            let offset = rng.random_range(1..given_names.len());
            given.push(given_names[(first + offset) % given_names.len()].into());
        }
        let family: &str = LastName().fake_with_rng(rng);
        self.name = format!(
            "{} {family}",
            given[0].as_str().expect("given names are text")
        );
        let rng = &mut self.rng;
        let adult = years_between(plan.birth_date, date_of(plan.history_end)) >= 18;
        let mut name = Vec::with_capacity(4);
        name.push(("use", "official".into()));
        name.push(("family", family.into()));
        name.push(("given", Json::Array(given)));
        if adult {
            let prefix = match (female, plan.marital_status) {
                (false, _) => "Mr.",
                (true, Some(codes::MARRIED | codes::WIDOWED)) => "Mrs.",
                (true, _) => "Ms.",
            };
            name.push(("prefix", array([prefix.into()])));
        }
        let race = plan.race;
        let ethnicity = if plan.hispanic {
            codes::HISPANIC
        } else {
            codes::NOT_HISPANIC
        };
        let category = |url: &'static str, concept: Concept| {
            object([
                ("url", url.into()),
                (
                    "extension",
                    array([
                        object([
                            ("url", "ombCategory".into()),
                            ("valueCoding", coding(codes::RACE_ETHNICITY, concept)),
                        ]),
                        object([
                            ("url", "text".into()),
                            ("valueString", concept.display.into()),
                        ]),
                    ]),
                ),
            ])
        };
        let extension = array([
            category(codes::US_CORE_RACE, race),
            category(codes::US_CORE_ETHNICITY, ethnicity),
            object([
                ("url", codes::US_CORE_BIRTH_SEX.into()),
                ("valueCode", if female { "F" } else { "M" }.into()),
            ]),
        ]);
        let telecom = array([object([
            ("system", "phone".into()),
            ("value", phone(rng).into()),
            ("use", "home".into()),
        ])]);
        let home = address(rng, Some("home"));
        let gp = plan.general_practitioner;
        let body = Body::new(ResourceType::Patient, id)
            .set("extension", extension)
            .identified()
            .set("active", true)
            .set("name", array([Json::Object(name)]))
            .set("telecom", telecom)
            .set("gender", if female { "female" } else { "male" })
            .set("birthDate", date(plan.birth_date))
            .set_some("deceasedDateTime", plan.death.map(Json::DateTime))
            .set("address", array([home]))
            .set_some(
                "maritalStatus",
                plan.marital_status
                    .map(|status| codeable(codes::MARITAL_STATUS, status)),
            )
            .set(
                "communication",
                array([object([
                    ("language", codeable(codes::LANGUAGE, plan.language)),
                    ("preferred", true.into()),
                ])]),
            )
            .set(
                "generalPractitioner",
                array([reference(self.pool.practitioner(gp).to_owned())]),
            )
            .set(
                "managingOrganization",
                reference(
                    self.pool
                        .organization(self.pool.shape().organization_of(gp))
                        .to_owned(),
                ),
            );
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
        let body = Body::new(ResourceType::AllergyIntolerance, id)
            .identified()
            .set("clinicalStatus", coded(codes::ALLERGY_CLINICAL, ACTIVE))
            .set(
                "verificationStatus",
                coded(codes::ALLERGY_VERIFICATION, CONFIRMED),
            )
            .set("type", "allergy")
            .set("category", array([allergy.allergy.category.code().into()]))
            .set(
                "criticality",
                if allergy.high_criticality {
                    "high"
                } else {
                    "low"
                },
            )
            .set("code", codeable(codes::SNOMED, allergy.allergy.substance))
            .set("patient", self.subject())
            .set("onsetDateTime", Json::DateTime(allergy.onset))
            .set("recordedDate", Json::DateTime(allergy.recorded))
            .set(
                "reaction",
                array([object([
                    (
                        "manifestation",
                        array([codeable(codes::SNOMED, allergy.reaction)]),
                    ),
                    ("severity", severity.into()),
                ])]),
            );
        self.push(body);
    }

    fn encounter(&mut self, encounter: &EncounterPlan) {
        let id = self.id();
        if !self.keeps(ResourceType::Encounter) {
            self.encounter = reference(key(ResourceType::Encounter, &id));
            return;
        }
        let (code, display) = match encounter.class {
            EncounterClass::Ambulatory => ("AMB", "ambulatory"),
            EncounterClass::Emergency => ("EMER", "emergency"),
            EncounterClass::Inpatient => ("IMP", "inpatient encounter"),
        };
        let hospitalization = (encounter.class == EncounterClass::Inpatient).then(|| {
            object([(
                "dischargeDisposition",
                coded(
                    codes::DISCHARGE_DISPOSITION,
                    Concept {
                        code: "home",
                        display: "Home",
                    },
                ),
            )])
        });
        let period = period(encounter.start, encounter.end);
        let body = Body::new(ResourceType::Encounter, id)
            .identified()
            .set("status", "finished")
            .set("class", coding(codes::ACT_CODE, Concept { code, display }))
            .set("type", array([codeable(codes::SNOMED, encounter.kind)]))
            .set("subject", self.subject())
            .set(
                "participant",
                array([object([
                    (
                        "type",
                        coded_list(
                            codes::PARTICIPATION_TYPE,
                            Concept {
                                code: "PPRF",
                                display: "primary performer",
                            },
                        ),
                    ),
                    ("period", period.clone()),
                    ("individual", self.practitioner(encounter)),
                ])]),
            )
            .set("period", period)
            .set_some(
                "reasonCode",
                encounter
                    .reason
                    .map(|reason| array([codeable(codes::SNOMED, reason)])),
            )
            .set_some("hospitalization", hospitalization)
            .set(
                "location",
                array([object([(
                    "location",
                    reference(self.pool.location(encounter.organization).to_owned()),
                )])]),
            )
            .set(
                "serviceProvider",
                reference(self.pool.organization(encounter.organization).to_owned()),
            );
        self.encounter = reference(body.key().to_owned());
        self.push(body);
    }

    fn condition(&mut self, condition: &ConditionPlan) {
        let id = self.id();
        if !self.keeps(ResourceType::Condition) {
            self.condition_refs
                .push(reference(key(ResourceType::Condition, &id)));
            return;
        }
        let status = if condition.abatement.is_some() {
            Concept {
                code: "resolved",
                display: "Resolved",
            }
        } else {
            ACTIVE
        };
        let category = if condition.chronic {
            Concept {
                code: "problem-list-item",
                display: "Problem List Item",
            }
        } else {
            Concept {
                code: "encounter-diagnosis",
                display: "Encounter Diagnosis",
            }
        };
        let body = Body::new(ResourceType::Condition, id)
            .identified()
            .set("clinicalStatus", coded(codes::CONDITION_CLINICAL, status))
            .set(
                "verificationStatus",
                coded(codes::CONDITION_VERIFICATION, CONFIRMED),
            )
            .set("category", coded_list(codes::CONDITION_CATEGORY, category))
            .set("code", codeable(codes::SNOMED, condition.snomed))
            .set("subject", self.subject())
            .set("encounter", self.encounter.clone())
            .set("onsetDateTime", Json::DateTime(condition.onset))
            .set_some("abatementDateTime", condition.abatement.map(Json::DateTime))
            .set("recordedDate", Json::DateTime(condition.recorded));
        self.condition_refs.push(reference(body.key().to_owned()));
        self.push(body);
    }

    /// An observation made at `at` (Unix seconds); returns the reference to it.
    fn observation(
        &mut self,
        category: Category,
        code: Json,
        at: i64,
        value_key: &'static str,
        value: Json,
    ) -> Json {
        let id = self.id();
        if !self.keeps(ResourceType::Observation) {
            return reference(key(ResourceType::Observation, &id));
        }
        let body = Body::new(ResourceType::Observation, id)
            .identified()
            .set("status", "final")
            .set("category", category.value())
            .set("code", code)
            .set("subject", self.subject())
            .set("encounter", self.encounter.clone())
            .set("effectiveDateTime", Json::DateTime(at))
            .set("issued", Json::DateTime(at))
            .set(value_key, value);
        let reference = reference(body.key().to_owned());
        self.push(body);
        reference
    }

    fn observations(&mut self, encounter: &EncounterPlan) {
        let vitals_at = encounter.vitals_at;
        if let Some((systolic, diastolic)) = encounter.blood_pressure {
            let components = array([
                object([
                    ("code", loinc_code(&codes::SYSTOLIC)),
                    ("valueQuantity", quantity(&codes::SYSTOLIC, systolic)),
                ]),
                object([
                    ("code", loinc_code(&codes::DIASTOLIC)),
                    ("valueQuantity", quantity(&codes::DIASTOLIC, diastolic)),
                ]),
            ]);
            self.observation(
                Category::VitalSigns,
                codeable(codes::LOINC, codes::BLOOD_PRESSURE),
                vitals_at,
                "component",
                components,
            );
        }
        for m in &encounter.vitals {
            self.observation(
                Category::VitalSigns,
                loinc_code(m.measure),
                vitals_at,
                "valueQuantity",
                quantity(m.measure, m.value),
            );
        }
        if encounter.labs.is_empty() {
            return;
        }
        let labs_at = encounter.labs_at;
        let results: Vec<Json> = encounter
            .labs
            .iter()
            .map(|m| {
                self.observation(
                    Category::Laboratory,
                    loinc_code(m.measure),
                    labs_at,
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
        let body = Body::new(ResourceType::DiagnosticReport, id)
            .identified()
            .set("status", "final")
            .set(
                "category",
                coded_list(
                    codes::DIAGNOSTIC_SERVICE,
                    Concept {
                        code: "LAB",
                        display: "Laboratory",
                    },
                ),
            )
            .set("code", codeable(codes::LOINC, codes::LAB_REPORT))
            .set("subject", self.subject())
            .set("encounter", self.encounter.clone())
            .set("effectiveDateTime", Json::DateTime(labs_at))
            .set("issued", Json::DateTime(issued))
            .set("performer", array([self.practitioner(encounter)]))
            .set("result", results);
        self.push(body);
    }

    /// A procedure, and what it leaves: an image, an implant.
    fn procedure(
        &mut self,
        plan: &PatientPlan,
        encounter: &EncounterPlan,
        procedure: &ProcedurePlan,
    ) {
        let id = self.id();
        let procedure_ref = reference(key(ResourceType::Procedure, &id));
        self.procedure_refs.push(procedure_ref.clone());
        if self.keeps(ResourceType::Procedure) {
            self.procedure_resource(encounter, procedure, id);
        }
        if let Some(imaging) = codes::imaging_of(procedure.snomed) {
            self.imaging_study(encounter, procedure, imaging, procedure_ref);
        }
        if let Some(implant) = codes::implant_of(procedure.snomed) {
            self.device(plan, procedure, implant);
        }
    }

    fn procedure_resource(
        &mut self,
        encounter: &EncounterPlan,
        procedure: &ProcedurePlan,
        id: String,
    ) {
        let reason = procedure
            .reason
            .map(|i| array([self.condition_refs[i].clone()]));
        let body = Body::new(ResourceType::Procedure, id)
            .identified()
            .set("status", "completed")
            .set("code", codeable(codes::SNOMED, procedure.snomed))
            .set("subject", self.subject())
            .set("encounter", self.encounter.clone())
            .set("performedPeriod", period(procedure.start, procedure.end))
            .set(
                "performer",
                array([object([("actor", self.practitioner(encounter))])]),
            )
            .set_some("reasonReference", reason);
        self.push(body);
    }

    fn medication(&mut self, encounter: &EncounterPlan, medication: &MedicationPlan) {
        let id = self.id();
        self.request_refs
            .push(reference(key(ResourceType::MedicationRequest, &id)));
        if !self.keeps(ResourceType::MedicationRequest) {
            return;
        }
        let status = match medication.status {
            MedicationStatus::Active => "active",
            MedicationStatus::Completed => "completed",
            MedicationStatus::Stopped => "stopped",
        };
        let category = if encounter.class == EncounterClass::Inpatient {
            Concept {
                code: "inpatient",
                display: "Inpatient",
            }
        } else {
            Concept {
                code: "community",
                display: "Community",
            }
        };
        let drug = medication.medication;
        let body = Body::new(ResourceType::MedicationRequest, id)
            .identified()
            .set("status", status)
            .set("intent", "order")
            .set(
                "category",
                coded_list(codes::MEDICATION_REQUEST_CATEGORY, category),
            )
            .set(
                "medicationCodeableConcept",
                codeable(codes::RXNORM, drug.rxnorm),
            )
            .set("subject", self.subject())
            .set("encounter", self.encounter.clone())
            .set("authoredOn", Json::DateTime(medication.authored))
            .set("requester", self.practitioner(encounter))
            .set(
                "reasonReference",
                array([self.condition_refs[medication.reason].clone()]),
            )
            .set(
                "dosageInstruction",
                array([object([("text", drug.dosage.into())])]),
            );
        self.push(body);
    }

    fn immunization(&mut self, encounter: &EncounterPlan, vaccine: Concept) {
        let id = self.id();
        if !self.keeps(ResourceType::Immunization) {
            return;
        }
        let body = Body::new(ResourceType::Immunization, id)
            .identified()
            .set("status", "completed")
            .set("vaccineCode", codeable(codes::CVX, vaccine))
            .set("patient", self.subject())
            .set("encounter", self.encounter.clone())
            .set("occurrenceDateTime", Json::DateTime(encounter.immunized_at))
            .set("primarySource", true)
            .set(
                "performer",
                array([object([("actor", self.practitioner(encounter))])]),
            );
        self.push(body);
    }
}

const ACTIVE: Concept = Concept {
    code: "active",
    display: "Active",
};
const CONFIRMED: Concept = Concept {
    code: "confirmed",
    display: "Confirmed",
};
