//! What the visits cost and who pays: the patient's Coverage, and for every encounter a Claim
//! whose items are the encounter's visit, procedures, labs, drugs and vaccines, and the
//! ExplanationOfBenefit that adjudicates it. Amounts are whole cents, so totals add up.

use rand::RngExt;

use super::Renderer;
use crate::generate::codes::{self, Charge, Concept, PayerKind};
use crate::generate::json::{
    Body, Json, array, codeable, coded, coding, key, object, period, reference,
};
use crate::generate::plan::{EncounterClass, EncounterPlan, PatientPlan, date_of, years_between};
use crate::generate::types::ResourceType;

/// One billed line: what was done, when, and its price.
struct Line {
    product: Json,
    cents: i64,
    period: Option<Json>,
    /// The Claim.procedure it bills, by sequence.
    procedure: Option<i64>,
}

impl Renderer<'_> {
    /// The patient's health insurance: Medicare from 65, Medicaid or a commercial plan before.
    pub(super) fn coverage(&mut self, plan: &PatientPlan) {
        let age = years_between(plan.birth_date, date_of(plan.history_end));
        let commercial = 2..codes::PAYERS.len();
        self.payer = match (age, self.rng.random::<f64>()) {
            (65.., _) => 0,
            (_, draw) if draw < 0.2 => 1,
            (_, draw) => commercial.start + (draw * 1e6) as usize % commercial.len(),
        };
        let id = self.id();
        let member: u32 = self.rng.random_range(100_000_000..1_000_000_000);
        self.coverage = reference(key(ResourceType::Coverage, &id));
        if !self.keeps(ResourceType::Coverage) {
            return;
        }
        let payer = &codes::PAYERS[self.payer];
        let prefix = match payer.kind {
            PayerKind::Medicare => "1EG4",
            PayerKind::Medicaid => "MCD",
            PayerKind::Commercial => "XGH",
        };
        let start = plan
            .encounters
            .first()
            .map_or(plan.history_end, |e| e.start);
        let start = start - start.rem_euclid(crate::generate::plan::DAY);
        let period = match plan.death {
            Some(death) => period(start, death),
            None => object([("start", Json::DateTime(start))]),
        };
        let (relationship, subscriber) = if age >= 18 {
            (SELF, Some(self.subject()))
        } else {
            (CHILD, None)
        };
        let body = Body::new(ResourceType::Coverage, id)
            .identified()
            .set("status", "active")
            .set("type", codeable(codes::PAYMENT_TYPOLOGY, payer.typology))
            .set_some("subscriber", subscriber)
            .set("subscriberId", format!("{prefix}{member}"))
            .set("beneficiary", self.subject())
            .set(
                "relationship",
                coded(codes::SUBSCRIBER_RELATIONSHIP, relationship),
            )
            .set("period", period)
            .set(
                "payor",
                array([reference(self.pool.payer(self.payer).to_owned())]),
            );
        self.push(body);
    }

    /// The Claim for encounter `index` and its ExplanationOfBenefit.
    pub(super) fn bill(&mut self, plan: &PatientPlan, index: usize) {
        let claim_id = self.id();
        let claim_ref = reference(key(ResourceType::Claim, &claim_id));
        let eob_id = self.id();
        let wants_claim = self.keeps(ResourceType::Claim);
        // The EOB comes after the claim: it is kept if there is room for both.
        let wants_eob = self.types.contains(ResourceType::ExplanationOfBenefit)
            && self.resources.len() as u64 + u64::from(wants_claim) < self.limit;
        if !wants_claim && !wants_eob {
            return;
        }
        let encounter = &plan.encounters[index];
        let lines = self.lines(plan, encounter);
        let total: i64 = lines.iter().map(|l| l.cents).sum();
        if wants_claim {
            self.claim(plan, index, claim_id, &lines, total);
        }
        if wants_eob {
            self.explanation(encounter, eob_id, claim_ref, &lines, total);
        }
    }

    fn lines(&self, plan: &PatientPlan, encounter: &EncounterPlan) -> Vec<Line> {
        let age = years_between(plan.birth_date, date_of(encounter.start));
        let mut lines = Vec::with_capacity(
            1 + encounter.procedures.len()
                + encounter.labs.len()
                + encounter.medications.len()
                + encounter.immunizations.len(),
        );
        lines.push(charged(
            codes::visit_charge(encounter.kind, age),
            Some(period(encounter.start, encounter.end)),
            None,
        ));
        for (procedure, sequence) in encounter.procedures.iter().zip(1..) {
            lines.push(charged(
                codes::procedure_charge(procedure.snomed),
                Some(period(procedure.start, procedure.end)),
                Some(sequence),
            ));
        }
        for lab in &encounter.labs {
            lines.push(charged(codes::lab_charge(lab.measure.loinc), None, None));
        }
        for medication in &encounter.medications {
            let drug = medication.medication;
            lines.push(Line {
                product: codeable(codes::RXNORM, drug.rxnorm),
                cents: codes::drug_cents(drug),
                period: None,
                procedure: None,
            });
        }
        for vaccine in &encounter.immunizations {
            let administration = codes::VACCINE_ADMINISTRATION;
            lines.push(Line {
                product: object([
                    (
                        "coding",
                        array([
                            coding(administration.system, administration.code),
                            coding(codes::CVX, *vaccine),
                        ]),
                    ),
                    ("text", vaccine.display.into()),
                ]),
                cents: administration.cents,
                period: None,
                procedure: None,
            });
        }
        lines
    }

    fn claim(&mut self, plan: &PatientPlan, index: usize, id: String, lines: &[Line], total: i64) {
        let encounter = &plan.encounters[index];
        let diagnoses = diagnoses_of(plan, index);
        let diagnosis: Vec<Json> = diagnoses
            .iter()
            .zip(1i64..)
            .map(|(&condition, sequence)| {
                object([
                    ("sequence", sequence.into()),
                    ("diagnosisReference", self.condition_refs[condition].clone()),
                ])
            })
            .collect();
        let procedure: Vec<Json> = self
            .procedure_refs
            .iter()
            .zip(1i64..)
            .map(|(procedure, sequence)| {
                object([
                    ("sequence", sequence.into()),
                    ("procedureReference", procedure.clone()),
                ])
            })
            .collect();
        let diagnosis_sequences: Vec<Json> = (1..=diagnoses.len() as i64).map(Json::from).collect();
        let items: Vec<Json> = lines
            .iter()
            .zip(1i64..)
            .map(|(line, sequence)| {
                let mut item = Vec::with_capacity(7);
                item.push(("sequence", sequence.into()));
                if sequence == 1 && !diagnosis_sequences.is_empty() {
                    item.push(("diagnosisSequence", diagnosis_sequences.clone().into()));
                }
                if let Some(procedure) = line.procedure {
                    item.push(("procedureSequence", vec![Json::from(procedure)].into()));
                }
                item.push(("productOrService", line.product.clone()));
                if let Some(period) = &line.period {
                    item.push(("servicedPeriod", period.clone()));
                }
                if sequence == 1 {
                    item.push(("encounter", array([self.encounter.clone()])));
                }
                item.push(("net", money(line.cents)));
                Json::Object(item)
            })
            .collect();
        let body = Body::new(ResourceType::Claim, id)
            .identified()
            .set("status", "active")
            .set("type", coded(codes::CLAIM_TYPE, claim_type(encounter)))
            .set("use", "claim")
            .set("patient", self.subject())
            .set("billablePeriod", period(encounter.start, encounter.end))
            .set("created", Json::DateTime(encounter.end))
            .set(
                "provider",
                reference(self.pool.organization(encounter.organization).to_owned()),
            )
            .set("priority", coded(codes::PROCESS_PRIORITY, NORMAL))
            .set(
                "facility",
                reference(self.pool.location(encounter.organization).to_owned()),
            )
            .set_some("diagnosis", (!diagnosis.is_empty()).then_some(diagnosis))
            .set_some("procedure", (!procedure.is_empty()).then_some(procedure))
            .set(
                "insurance",
                array([object([
                    ("sequence", 1i64.into()),
                    ("focal", true.into()),
                    ("coverage", self.coverage.clone()),
                ])]),
            )
            .set("item", items)
            .set("total", money(total));
        self.push(body);
    }

    fn explanation(
        &mut self,
        encounter: &EncounterPlan,
        id: String,
        claim: Json,
        lines: &[Line],
        total: i64,
    ) {
        let share = codes::PAYERS[self.payer].pays_percent;
        let paid = |cents: i64| cents * share / 100;
        let items: Vec<Json> = lines
            .iter()
            .zip(1i64..)
            .map(|(line, sequence)| {
                let mut item = Vec::with_capacity(5);
                item.push(("sequence", sequence.into()));
                item.push(("productOrService", line.product.clone()));
                if let Some(period) = &line.period {
                    item.push(("servicedPeriod", period.clone()));
                }
                item.push(("net", money(line.cents)));
                item.push((
                    "adjudication",
                    array([
                        adjudication(SUBMITTED, line.cents),
                        adjudication(BENEFIT, paid(line.cents)),
                    ]),
                ));
                Json::Object(item)
            })
            .collect();
        let benefit: i64 = lines.iter().map(|l| paid(l.cents)).sum();
        let body = Body::new(ResourceType::ExplanationOfBenefit, id)
            .identified()
            .set("status", "active")
            .set("type", coded(codes::CLAIM_TYPE, claim_type(encounter)))
            .set("use", "claim")
            .set("patient", self.subject())
            .set("billablePeriod", period(encounter.start, encounter.end))
            .set("created", Json::DateTime(encounter.end))
            .set("insurer", reference(self.pool.payer(self.payer).to_owned()))
            .set(
                "provider",
                reference(self.pool.organization(encounter.organization).to_owned()),
            )
            .set(
                "facility",
                reference(self.pool.location(encounter.organization).to_owned()),
            )
            .set("claim", claim)
            .set("outcome", "complete")
            .set(
                "insurance",
                array([object([
                    ("focal", true.into()),
                    ("coverage", self.coverage.clone()),
                ])]),
            )
            .set("item", items)
            .set(
                "total",
                array([
                    adjudication(SUBMITTED, total),
                    adjudication(BENEFIT, benefit),
                ]),
            )
            .set("payment", object([("amount", money(benefit))]));
        self.push(body);
    }
}

fn charged(charge: Charge, period: Option<Json>, procedure: Option<i64>) -> Line {
    Line {
        product: codeable(charge.system, charge.code),
        cents: charge.cents,
        period,
        procedure,
    }
}

/// The conditions an encounter is billed for: those it records and those its procedures and
/// prescriptions treat, by index in the plan, in order.
fn diagnoses_of(plan: &PatientPlan, index: usize) -> Vec<usize> {
    let encounter = &plan.encounters[index];
    let mut conditions: Vec<usize> = plan.conditions_recorded_at(index).collect();
    conditions.extend(encounter.procedures.iter().filter_map(|p| p.reason));
    conditions.extend(encounter.medications.iter().map(|m| m.reason));
    conditions.sort_unstable();
    conditions.dedup();
    conditions
}

/// Hospital and emergency stays are billed by the institution, office visits by the
/// professional.
fn claim_type(encounter: &EncounterPlan) -> Concept {
    match encounter.class {
        EncounterClass::Ambulatory => Concept {
            code: "professional",
            display: "Professional",
        },
        EncounterClass::Emergency | EncounterClass::Inpatient => Concept {
            code: "institutional",
            display: "Institutional",
        },
    }
}

fn money(cents: i64) -> Json {
    Json::Money(cents)
}

fn adjudication(category: Concept, cents: i64) -> Json {
    object([
        ("category", coded(codes::ADJUDICATION, category)),
        ("amount", money(cents)),
    ])
}

const SUBMITTED: Concept = Concept {
    code: "submitted",
    display: "Submitted Amount",
};
const BENEFIT: Concept = Concept {
    code: "benefit",
    display: "Benefit Amount",
};
const NORMAL: Concept = Concept {
    code: "normal",
    display: "Normal",
};
const SELF: Concept = Concept {
    code: "self",
    display: "Self",
};
const CHILD: Concept = Concept {
    code: "child",
    display: "Child",
};
