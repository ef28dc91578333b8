//! The rest of a chart: images of imaging procedures, implanted devices, drugs given in
//! hospital, the note of every encounter, and the Provenance of the whole record.

use std::fmt::Write as _;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use rand::RngExt;

use super::Renderer;
use crate::fhir::SOURCE_KEY_SYSTEM;
use crate::generate::codes::{self, Concept};
use crate::generate::json::{Body, Json, array, codeable, coding, object, period, reference};
use crate::generate::plan::{
    DAY, EncounterPlan, MedicationPlan, PatientPlan, ProcedurePlan, Sex, date_of, midnight,
    years_between,
};
use crate::generate::types::ResourceType;

/// The DICOM SOP class of the images: Computed Radiography Image Storage.
const SOP_CLASS: &str = "urn:oid:1.2.840.10008.5.1.4.1.1.1";

impl Renderer<'_> {
    /// The study an imaging procedure made: one series of a few images.
    pub(super) fn imaging_study(
        &mut self,
        encounter: &EncounterPlan,
        procedure: &ProcedurePlan,
        (_, modality, body_site): &(&str, Concept, Concept),
        procedure_ref: Json,
    ) {
        let id = self.id();
        let images: i64 = self.rng.random_range(1..=4);
        let study_uid = dicom_uid(self.rng.random());
        let series_uid = dicom_uid(self.rng.random());
        let first_image: u128 = self.rng.random();
        if !self.keeps(ResourceType::ImagingStudy) {
            return;
        }
        let modality = coding(codes::DICOM, *modality);
        let started = Json::DateTime(procedure.start);
        let instances: Vec<Json> = (0..images)
            .map(|i| {
                object([
                    ("uid", dicom_uid(first_image.wrapping_add(i as u128)).into()),
                    (
                        "sopClass",
                        object([
                            ("system", "urn:ietf:rfc:3986".into()),
                            ("code", SOP_CLASS.into()),
                        ]),
                    ),
                    ("number", (i + 1).into()),
                ])
            })
            .collect();
        let series = object([
            ("uid", series_uid.into()),
            ("number", 1i64.into()),
            ("modality", modality.clone()),
            ("numberOfInstances", images.into()),
            ("bodySite", coding(codes::SNOMED, *body_site)),
            ("started", started.clone()),
            ("instance", instances.into()),
        ]);
        let identifiers = array([
            crate::generate::json::identifier(ResourceType::ImagingStudy, &id),
            object([
                ("system", "urn:dicom:uid".into()),
                ("value", ["urn:oid:", &study_uid].concat().into()),
            ]),
        ]);
        let body = Body::new(ResourceType::ImagingStudy, id)
            .set("identifier", identifiers)
            .set("status", "available")
            .set("modality", array([modality]))
            .set("subject", self.subject())
            .set("encounter", self.encounter.clone())
            .set("started", started)
            .set("referrer", self.practitioner(encounter))
            .set("numberOfSeries", 1i64)
            .set("numberOfInstances", images)
            .set("procedureReference", procedure_ref)
            .set(
                "location",
                reference(self.pool.location(encounter.organization).to_owned()),
            )
            .set("series", array([series]));
        self.push(body);
    }

    /// The device a procedure implanted, with its UDI.
    pub(super) fn device(
        &mut self,
        plan: &PatientPlan,
        procedure: &ProcedurePlan,
        (_, device_type, company): &(&str, Concept, &str),
    ) {
        let id = self.id();
        let item: u32 = self.rng.random_range(10_000..100_000);
        let lot: u32 = self.rng.random_range(100_000..1_000_000);
        let serial: u64 = self.rng.random_range(10_000_000..100_000_000);
        let age_days: i64 = self.rng.random_range(60..=400);
        if !self.keeps(ResourceType::Device) {
            return;
        }
        let made = (procedure.start - age_days * DAY).max(midnight(plan.birth_date));
        let made_on = date_of(made);
        let device_identifier = gtin(format!("{company}{item:05}"));
        let lot = format!("L{lot}");
        let serial = serial.to_string();
        let human_readable = format!(
            "(01){device_identifier}(11){}(10){lot}(21){serial}",
            made_on.format("%y%m%d")
        );
        let body = Body::new(ResourceType::Device, id)
            .identified()
            .set(
                "udiCarrier",
                array([object([
                    ("deviceIdentifier", device_identifier.into()),
                    ("carrierHRF", human_readable.into()),
                ])]),
            )
            .set("status", "active")
            .set("distinctIdentifier", serial.clone())
            .set("manufactureDate", Json::DateTime(made))
            .set("lotNumber", lot)
            .set("serialNumber", serial)
            .set("type", codeable(codes::SNOMED, *device_type))
            .set("patient", self.subject());
        self.push(body);
    }

    /// A dose given in hospital at `given`, as its order (the `request`-th of the encounter)
    /// says.
    pub(super) fn administration(
        &mut self,
        encounter: &EncounterPlan,
        medication: &MedicationPlan,
        request: usize,
        given: i64,
    ) {
        let id = self.id();
        if !self.keeps(ResourceType::MedicationAdministration) {
            return;
        }
        let drug = medication.medication;
        let body = Body::new(ResourceType::MedicationAdministration, id)
            .identified()
            .set("status", "completed")
            .set(
                "medicationReference",
                reference(self.pool.medication(drug).to_owned()),
            )
            .set("subject", self.subject())
            .set("context", self.encounter.clone())
            .set("effectiveDateTime", Json::DateTime(given))
            .set(
                "performer",
                array([object([("actor", self.practitioner(encounter))])]),
            )
            .set("request", self.request_refs[request].clone())
            .set(
                "dosage",
                object([
                    ("text", drug.dosage.into()),
                    (
                        "dose",
                        object([("value", 1i64.into()), ("unit", "dose".into())]),
                    ),
                ]),
            );
        self.push(body);
    }

    /// The clinician's note of encounter `index`, as a US Core DocumentReference.
    pub(super) fn note(&mut self, plan: &PatientPlan, index: usize) {
        let id = self.id();
        if !self.keeps(ResourceType::DocumentReference) {
            return;
        }
        let encounter = &plan.encounters[index];
        let mut text = self.note_text(plan, index);
        if let Some(size) = self.attachment_size {
            fit(&mut text, size);
        }
        let attachment = object([
            ("contentType", "text/plain; charset=utf-8".into()),
            ("data", BASE64.encode(text.as_bytes()).into()),
            ("size", Json::Int(text.len() as i64)),
        ]);
        let organization = reference(self.pool.organization(encounter.organization).to_owned());
        let body = Body::new(ResourceType::DocumentReference, id)
            .identified()
            .set("status", "current")
            .set(
                "type",
                codeable(codes::LOINC, codes::note_type(encounter.kind)),
            )
            .set(
                "category",
                array([object([(
                    "coding",
                    array([coding(codes::DOCUMENT_CATEGORY, codes::CLINICAL_NOTE)]),
                )])]),
            )
            .set("subject", self.subject())
            .set("date", Json::DateTime(encounter.end))
            .set("author", array([self.practitioner(encounter)]))
            .set("custodian", organization)
            .set(
                "content",
                array([object([
                    ("attachment", attachment),
                    (
                        "format",
                        coding(codes::FORMAT_CODE, codes::MIME_TYPE_SUFFICIENT),
                    ),
                ])]),
            )
            .set(
                "context",
                object([
                    ("encounter", array([self.encounter.clone()])),
                    ("period", period(encounter.start, encounter.end)),
                ]),
            );
        self.push(body);
    }

    /// A plain-text note: who, why, what was measured, found and done.
    fn note_text(&self, plan: &PatientPlan, index: usize) -> String {
        let encounter = &plan.encounters[index];
        let mut note = String::with_capacity(1024);
        let age = years_between(plan.birth_date, date_of(encounter.start));
        let sex = match plan.sex {
            Sex::Female => "female",
            Sex::Male => "male",
        };
        let reason = encounter.reason.map_or("No complaints.", |r| r.display);
        let _ = write!(
            note,
            "{}\n\n# Chief Complaint\n{reason}\n\n# History of Present Illness\n{} is a \
             {age}-year-old {sex} seen for {}.\n",
            date_of(encounter.start),
            self.name,
            encounter.kind.display,
        );
        if let Some((systolic, diastolic)) = encounter.blood_pressure {
            let _ = write!(
                note,
                "\n# Vital Signs\nBlood pressure {systolic}/{diastolic} mm[Hg]\n"
            );
        }
        for m in &encounter.vitals {
            let _ = writeln!(
                note,
                "{}: {} {}",
                m.measure.loinc.display, m.value, m.measure.unit
            );
        }
        if !encounter.labs.is_empty() {
            note.push_str("\n# Results\n");
            for m in &encounter.labs {
                let _ = writeln!(
                    note,
                    "{}: {} {}",
                    m.measure.loinc.display, m.value, m.measure.unit
                );
            }
        }
        note.push_str("\n# Assessment and Plan\n");
        let mut section = |title: &str, items: &mut dyn Iterator<Item = &str>| {
            let mut first = true;
            for item in items {
                if std::mem::take(&mut first) {
                    let _ = writeln!(note, "{title}:");
                }
                let _ = writeln!(note, "- {item}");
            }
        };
        section(
            "Diagnoses",
            &mut plan.conditions_of(index).map(|c| c.snomed.display),
        );
        section(
            "Procedures",
            &mut encounter.procedures.iter().map(|p| p.snomed.display),
        );
        section(
            "Medications",
            &mut encounter
                .medications
                .iter()
                .map(|m| m.medication.rxnorm.display),
        );
        section(
            "Immunizations",
            &mut encounter.immunizations.iter().map(|v| v.display),
        );
        note
    }

    /// Who made the record: the patient's practice, on every resource of it.
    pub(super) fn provenance(&mut self, plan: &PatientPlan) {
        let id = self.id();
        if !self.keeps(ResourceType::Provenance) {
            return;
        }
        let targets: Vec<Json> = self
            .resources
            .iter()
            .map(|r| reference(r.key.clone()))
            .collect();
        let practice = self.pool.shape().organization_of(plan.general_practitioner);
        let organization = reference(self.pool.organization(practice).to_owned());
        // No identifier list in R4: the loader finds it again by this tag.
        let meta = object([(
            "tag",
            array([object([
                ("system", SOURCE_KEY_SYSTEM.into()),
                ("code", id.clone().into()),
            ])]),
        )]);
        let body = Body::new(ResourceType::Provenance, id)
            .set("meta", meta)
            .set("target", targets)
            .set("recorded", Json::DateTime(plan.history_end))
            .set(
                "agent",
                array([object([
                    ("type", codeable(codes::PROVENANCE_PARTICIPANT, AUTHOR)),
                    ("who", organization),
                ])]),
            );
        self.push(body);
    }
}

/// Pads (repeating the note) or cuts `text` to exactly `size` bytes.
fn fit(text: &mut String, size: usize) {
    if text.len() >= size {
        let mut end = size;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
    } else if !text.is_empty() {
        let original = text.clone();
        while text.len() + original.len() <= size {
            text.push_str(&original);
        }
        let mut end = size - text.len();
        while !original.is_char_boundary(end) {
            end -= 1;
        }
        text.push_str(&original[..end]);
    }
    while text.len() < size {
        text.push(' ');
    }
}

/// A DICOM UID under the UUID root `2.25`.
fn dicom_uid(n: u128) -> String {
    format!("2.25.{n}")
}

/// A GTIN-14 (GS1 device identifier) of 13 digits and their check digit.
fn gtin(digits: String) -> String {
    let digits = format!("{digits:0>13}");
    let sum: u32 = digits
        .bytes()
        .rev()
        .enumerate()
        .map(|(i, b)| u32::from(b - b'0') * if i % 2 == 0 { 3 } else { 1 })
        .sum();
    format!("{digits}{}", (10 - sum % 10) % 10)
}

const AUTHOR: Concept = Concept {
    code: "author",
    display: "Author",
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notes_fit_the_size_asked_for() {
        for size in [0, 1, 5, 17, 100, 4096] {
            let mut text = String::from("note é text");
            fit(&mut text, size);
            assert_eq!(text.len(), size);
        }
    }

    #[test]
    fn device_identifiers_carry_their_check_digit() {
        // The GTIN-13 4006381333931, as a GTIN-14.
        assert_eq!(gtin("400638133393".to_owned()), "04006381333931");
        assert_eq!(gtin("0884521".to_owned() + "12345").len(), 14);
    }
}
