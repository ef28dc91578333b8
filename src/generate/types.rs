//! The resource types the generator makes, what each refers to, and what `--types` therefore
//! has to bring along so that every reference resolves.

use std::fmt;

use crate::exit;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum ResourceType {
    Organization,
    Location,
    Practitioner,
    PractitionerRole,
    Medication,
    Patient,
    Coverage,
    AllergyIntolerance,
    Encounter,
    Condition,
    CareTeam,
    Goal,
    CarePlan,
    Observation,
    DiagnosticReport,
    Procedure,
    ImagingStudy,
    Device,
    MedicationRequest,
    MedicationAdministration,
    Immunization,
    DocumentReference,
    Claim,
    ExplanationOfBenefit,
    Provenance,
}

use ResourceType::*;

impl ResourceType {
    /// Every type, in load order.
    pub const ALL: [ResourceType; 25] = [
        Organization,
        Location,
        Practitioner,
        PractitionerRole,
        Medication,
        Patient,
        Coverage,
        AllergyIntolerance,
        Encounter,
        Condition,
        CareTeam,
        Goal,
        CarePlan,
        Observation,
        DiagnosticReport,
        Procedure,
        ImagingStudy,
        Device,
        MedicationRequest,
        MedicationAdministration,
        Immunization,
        DocumentReference,
        Claim,
        ExplanationOfBenefit,
        Provenance,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Organization => "Organization",
            Location => "Location",
            Practitioner => "Practitioner",
            PractitionerRole => "PractitionerRole",
            Patient => "Patient",
            Coverage => "Coverage",
            AllergyIntolerance => "AllergyIntolerance",
            Encounter => "Encounter",
            Condition => "Condition",
            CareTeam => "CareTeam",
            Goal => "Goal",
            CarePlan => "CarePlan",
            Observation => "Observation",
            DiagnosticReport => "DiagnosticReport",
            Procedure => "Procedure",
            ImagingStudy => "ImagingStudy",
            Device => "Device",
            MedicationRequest => "MedicationRequest",
            Medication => "Medication",
            MedicationAdministration => "MedicationAdministration",
            Immunization => "Immunization",
            DocumentReference => "DocumentReference",
            Claim => "Claim",
            ExplanationOfBenefit => "ExplanationOfBenefit",
            Provenance => "Provenance",
        }
    }

    /// The type of this (case-sensitive) FHIR name, if the generator makes it.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.name() == name)
    }

    /// The types a resource of this type refers to, as the renderer writes them.
    pub fn refers_to(self) -> &'static [ResourceType] {
        match self {
            Organization | Practitioner | Medication => &[],
            Location => &[Organization],
            PractitionerRole => &[Practitioner, Organization],
            Patient => &[Practitioner, Organization],
            Coverage => &[Patient, Organization],
            AllergyIntolerance | Device => &[Patient],
            Encounter => &[Patient, Practitioner, Organization, Location],
            Condition | Observation => &[Patient, Encounter],
            CareTeam => &[Patient, Encounter, Practitioner, Organization, Condition],
            Goal => &[Patient, Condition],
            CarePlan => &[Patient, Encounter, Condition, CareTeam, Goal],
            DiagnosticReport => &[Patient, Encounter, Practitioner, Observation],
            Procedure | MedicationRequest => &[Patient, Encounter, Practitioner, Condition],
            ImagingStudy => &[Patient, Encounter, Practitioner, Location, Procedure],
            MedicationAdministration => &[
                Patient,
                Encounter,
                Practitioner,
                Medication,
                MedicationRequest,
            ],
            Immunization => &[Patient, Encounter, Practitioner],
            DocumentReference => &[Patient, Encounter, Practitioner, Organization],
            Claim => &[
                Patient,
                Organization,
                Location,
                Coverage,
                Encounter,
                Condition,
                Procedure,
            ],
            ExplanationOfBenefit => &[Patient, Organization, Location, Coverage, Claim],
            // One per record, naming everything in it.
            Provenance => &[
                Organization,
                Patient,
                Coverage,
                AllergyIntolerance,
                Encounter,
                Condition,
                CareTeam,
                Goal,
                CarePlan,
                Observation,
                DiagnosticReport,
                Procedure,
                ImagingStudy,
                Device,
                MedicationRequest,
                MedicationAdministration,
                Immunization,
                DocumentReference,
                Claim,
                ExplanationOfBenefit,
            ],
        }
    }

    /// Part of the shared record rather than of a patient's.
    pub fn is_shared(self) -> bool {
        matches!(
            self,
            Organization | Location | Practitioner | PractitionerRole | Medication
        )
    }

    fn bit(self) -> u32 {
        1 << self as u32
    }
}

impl fmt::Display for ResourceType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A set of resource types.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct TypeSet(u32);

impl TypeSet {
    pub const ALL: TypeSet = TypeSet((1 << ResourceType::ALL.len()) - 1);

    pub fn of(types: &[ResourceType]) -> Self {
        Self(types.iter().fold(0, |bits, t| bits | t.bit()))
    }

    /// The `--types` names, checked; no names means every type.
    pub fn parse(names: &[String]) -> anyhow::Result<Self> {
        if names.is_empty() {
            return Ok(Self::ALL);
        }
        let mut types = Vec::with_capacity(names.len());
        for name in names {
            let Some(found) = ResourceType::from_name(name) else {
                let hint = ResourceType::ALL
                    .into_iter()
                    .find(|t| t.name().eq_ignore_ascii_case(name))
                    .map(|t| format!(" (did you mean {t}?)"))
                    .unwrap_or_default();
                return Err(exit::usage(format!(
                    "--types: `{name}` is not a resource type fhirgen generates{hint}; \
                     it generates {}",
                    Self::ALL
                )));
            };
            types.push(found);
        }
        Ok(Self::of(&types))
    }

    pub fn contains(self, t: ResourceType) -> bool {
        self.0 & t.bit() != 0
    }

    pub fn iter(self) -> impl Iterator<Item = ResourceType> {
        ResourceType::ALL
            .into_iter()
            .filter(move |&t| self.contains(t))
    }

    /// These types and every type they refer to, directly or not.
    pub fn with_references(self) -> Self {
        let mut closed = self;
        loop {
            let next = Self(
                closed
                    .iter()
                    .fold(closed.0, |bits, t| bits | Self::of(t.refers_to()).0),
            );
            if next == closed {
                return closed;
            }
            closed = next;
        }
    }

    /// Whether patient records have anything to give.
    pub fn has_patient_types(self) -> bool {
        self.iter().any(|t| !t.is_shared())
    }
}

impl fmt::Display for TypeSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, t) in self.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            f.write_str(t.name())?;
        }
        Ok(())
    }
}

impl fmt::Debug for TypeSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TypeSet[{self}]")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(names: &[&str]) -> anyhow::Result<TypeSet> {
        TypeSet::parse(&names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
    }

    /// A type's discriminant is its place in ALL: type sets and per-type tables index by it.
    #[test]
    fn all_is_in_declaration_order() {
        for (i, t) in ResourceType::ALL.iter().enumerate() {
            assert_eq!(*t as usize, i, "{}", t.name());
        }
    }

    #[test]
    fn names_parse_exactly() {
        assert_eq!(parse(&[]).unwrap(), TypeSet::ALL);
        assert_eq!(
            parse(&["Observation", "Patient"]).unwrap(),
            TypeSet::of(&[Patient, Observation])
        );
        let unknown = parse(&["Observation", "Bogus"]).unwrap_err();
        assert!(unknown.downcast_ref::<exit::UsageError>().is_some());
        let message = unknown.to_string();
        assert!(message.contains("`Bogus`"), "{message}");
        assert!(
            message.contains("Organization, Location, Practitioner"),
            "{message}"
        );
        let lower = parse(&["observation"]).unwrap_err().to_string();
        assert!(lower.contains("did you mean Observation?"), "{lower}");
    }

    #[test]
    fn closure_follows_references() {
        let closed = |types: &[ResourceType]| TypeSet::of(types).with_references();
        assert_eq!(
            closed(&[Observation]),
            TypeSet::of(&[
                Observation,
                Patient,
                Encounter,
                Practitioner,
                Organization,
                Location
            ])
        );
        assert_eq!(
            closed(&[Patient]),
            TypeSet::of(&[Patient, Practitioner, Organization])
        );
        assert_eq!(
            closed(&[MedicationRequest]),
            TypeSet::of(&[
                MedicationRequest,
                Condition,
                Patient,
                Encounter,
                Practitioner,
                Organization,
                Location
            ])
        );
        assert_eq!(closed(&[Organization]), TypeSet::of(&[Organization]));
        assert_eq!(TypeSet::ALL.with_references(), TypeSet::ALL);
        // Nothing refers to a PractitionerRole: it comes only when asked for.
        for t in ResourceType::ALL
            .into_iter()
            .filter(|&t| t != PractitionerRole)
        {
            assert!(!closed(&[t]).contains(PractitionerRole), "{t}");
        }
    }

    #[test]
    fn every_patient_type_brings_the_patient() {
        // So every planned patient keeps at least one resource and counting always ends.
        for t in ResourceType::ALL.into_iter().filter(|t| !t.is_shared()) {
            assert!(TypeSet::of(&[t]).with_references().contains(Patient), "{t}");
        }
    }
}
