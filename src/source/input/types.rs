//! What the input reader knows about FHIR R4 resource types: which are shared by many patients,
//! which come before which, and which cannot carry a list of identifiers.

use crate::fhir::Resource;

/// Types that many patients refer to and that refer to no patient: loaded before everything else.
const SHARED: &[&str] = &[
    "Organization",
    "Endpoint",
    "Location",
    "Practitioner",
    "PractitionerRole",
    "HealthcareService",
    "OrganizationAffiliation",
    "InsurancePlan",
    "Substance",
    "Medication",
];

/// Dependency order of the types after the shared ones: each comes after the types its
/// resources usually refer to (Encounter before what happens in it, DiagnosticReport after its
/// Observations, Claim after what it bills, ExplanationOfBenefit after its Claim). Types not
/// listed go after these.
const AFTER_SHARED: &[&str] = &[
    "Patient",
    "RelatedPerson",
    "Person",
    "Group",
    "Coverage",
    "Account",
    "EpisodeOfCare",
    "Appointment",
    "Encounter",
    "Condition",
    "AllergyIntolerance",
    "FamilyMemberHistory",
    "Goal",
    "CareTeam",
    "CarePlan",
    "ServiceRequest",
    "Specimen",
    "Device",
    "DeviceRequest",
    "DeviceUseStatement",
    "Procedure",
    "Immunization",
    "MedicationRequest",
    "MedicationAdministration",
    "MedicationDispense",
    "MedicationStatement",
    "ImagingStudy",
    "Media",
    "Observation",
    "DiagnosticReport",
    "DocumentReference",
    "QuestionnaireResponse",
    "Composition",
    "Communication",
    "Claim",
    "ClaimResponse",
    "ExplanationOfBenefit",
];

/// Types that point at anything and that nothing points at: after every other type.
const LAST: &[&str] = &["Provenance", "AuditEvent"];

/// R4 types without an `identifier` of cardinality 0..*: they have none at all, or a single
/// one (0..1). Adding an identifier list to them would make them invalid.
const NO_IDENTIFIER_LIST: &[&str] = &[
    // No identifier element.
    "AuditEvent",
    "Binary",
    "CapabilityStatement",
    "CompartmentDefinition",
    "GraphDefinition",
    "ImplementationGuide",
    "Linkage",
    "MedicationKnowledge",
    "MedicinalProductContraindication",
    "MedicinalProductIndication",
    "MedicinalProductInteraction",
    "MedicinalProductManufactured",
    "MedicinalProductUndesirableEffect",
    "MessageHeader",
    "NamingSystem",
    "OperationDefinition",
    "OperationOutcome",
    "Parameters",
    "Provenance",
    "SearchParameter",
    "Subscription",
    "SubstanceNucleicAcid",
    "SubstancePolymer",
    "SubstanceProtein",
    "SubstanceReferenceInformation",
    "SubstanceSourceMaterial",
    "TerminologyCapabilities",
    "VerificationResult",
    // identifier 0..1.
    "AdverseEvent",
    "Bundle",
    "Composition",
    "ConceptMap",
    "MedicinalProductIngredient",
    "QuestionnaireResponse",
    "SpecimenDefinition",
    "SubstanceSpecification",
    "TestReport",
    "TestScript",
];

pub(super) fn is_shared_type(resource_type: &str) -> bool {
    SHARED.contains(&resource_type)
}

/// A resource many patients may refer to: a shared type, or a Device that belongs to no patient.
pub(super) fn is_shared(resource: &Resource) -> bool {
    match resource.resource_type() {
        // Rare enough to look at the whole resource.
        "Device" => resource.to_value().get("patient").is_none(),
        resource_type => is_shared_type(resource_type),
    }
}

/// Where a type goes in the dependency order: lower first.
pub(super) fn rank(resource_type: &str) -> usize {
    let mut order = SHARED.iter().chain(AFTER_SHARED);
    if let Some(position) = order.position(|t| *t == resource_type) {
        return position;
    }
    let known = SHARED.len() + AFTER_SHARED.len();
    match LAST.iter().position(|t| *t == resource_type) {
        Some(position) => known + 1 + position,
        None => known,
    }
}

pub(super) fn has_identifier_list(resource_type: &str) -> bool {
    !NO_IDENTIFIER_LIST.contains(&resource_type)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn ranks_follow_references() {
        let order = [
            "Organization",
            "Practitioner",
            "Patient",
            "Encounter",
            "Condition",
            "Observation",
            "DiagnosticReport",
            "Claim",
            "ExplanationOfBenefit",
            "MolecularSequence",
            "Provenance",
        ];
        for pair in order.windows(2) {
            assert!(
                rank(pair[0]) < rank(pair[1]),
                "{} before {}",
                pair[0],
                pair[1]
            );
        }
    }

    #[test]
    fn shared_resources() {
        let shared = |body| is_shared(&Resource::new(body));
        assert!(shared(json!({"resourceType": "Organization"})));
        assert!(shared(json!({"resourceType": "Device"})));
        assert!(!shared(
            json!({"resourceType": "Device", "patient": {"reference": "Patient/1"}})
        ));
        assert!(!shared(json!({"resourceType": "Patient"})));
        assert!(SHARED.iter().all(|t| rank(t) < rank("Patient")));
    }

    #[test]
    fn identifier_lists() {
        assert!(has_identifier_list("Observation"));
        assert!(has_identifier_list("StructureMap"));
        assert!(!has_identifier_list("Provenance"));
        assert!(!has_identifier_list("Bundle"));
    }
}
