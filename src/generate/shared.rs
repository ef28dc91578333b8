//! The shared record: Organizations (providers and insurers), their Locations, Practitioners
//! and their PractitionerRoles, and the Medications of the formulary, which every patient of
//! every shard may refer to. Its size is a function of `--count` alone.

use std::sync::Arc;

use fake::Fake;
use fake::faker::name::en::LastName;
use rand::RngExt;
use rand::rngs::ChaCha8Rng;
use rand::seq::IndexedRandom;

use super::codes::{self, Concept};
use super::json::{
    Body, Json, address, array, codeable, coded_list, identifier, key, object, phone, reference,
};
use super::names;
use super::random::{Purpose, stream, uuid};
use super::types::{ResourceType, TypeSet};
use crate::fhir::{Record, RecordKind, Resource};

/// How many shared resources of each kind a data set of `count` resources has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolShape {
    pub organizations: u32,
    pub practitioners: u32,
    /// One PractitionerRole per practitioner, unless `count` is too small to hold them.
    pub roles: u32,
    /// One Location per organization, then the insurers and the formulary, as room allows.
    pub locations: u32,
    pub payers: u32,
    pub medications: u32,
}

/// Roughly one organization per this many resources.
const RESOURCES_PER_ORGANIZATION: u64 = 2_000;
/// Roughly one practitioner per this many resources (five per organization).
const RESOURCES_PER_PRACTITIONER: u64 = 400;
const MAX_ORGANIZATIONS: u64 = 1_000;
const MAX_PRACTITIONERS: u64 = 5_000;

const FAMILY_MEDICINE: u32 = 0;
const INTERNAL_MEDICINE: u32 = 1;
const PEDIATRICS: u32 = 2;
const EMERGENCY_MEDICINE: u32 = 3;

impl PoolShape {
    pub fn for_count(count: u64) -> Self {
        let organizations = (count / RESOURCES_PER_ORGANIZATION)
            .clamp(1, MAX_ORGANIZATIONS)
            .min(count);
        let practitioners = (count / RESOURCES_PER_PRACTITIONER)
            .clamp(1, MAX_PRACTITIONERS)
            .min(count - organizations);
        let roles = practitioners.min(count - organizations - practitioners);
        let rest = count - organizations - practitioners - roles;
        let locations = organizations.min(rest);
        let payers = (codes::PAYERS.len() as u64).min(rest - locations);
        let medications = (codes::FORMULARY.len() as u64).min(rest - locations - payers);
        // All are at most MAX_PRACTITIONERS.
        Self {
            organizations: organizations as u32,
            practitioners: practitioners as u32,
            roles: roles as u32,
            locations: locations as u32,
            payers: payers as u32,
            medications: medications as u32,
        }
    }

    /// The pool of a data set of `count` resources of `types` (with what they refer to): the
    /// usual one when there are patients, so that `--types` does not change them; otherwise the
    /// smallest that has `count` resources of `types`, or the largest there is.
    pub fn for_types(count: u64, types: TypeSet) -> Self {
        if types.has_patient_types() {
            return Self::for_count(count);
        }
        let holds = |size: u64| Self::for_count(size).kept(types) >= count;
        let (mut low, mut high) = (0, u64::MAX);
        if !holds(high) {
            return Self::for_count(high);
        }
        // `high` always holds `count`.
        while low < high {
            let middle = low + (high - low) / 2;
            if holds(middle) {
                high = middle;
            } else {
                low = middle + 1;
            }
        }
        Self::for_count(high)
    }

    /// How many of the pool's resources are of `types`.
    pub fn kept(&self, types: TypeSet) -> u64 {
        types.iter().map(|t| u64::from(self.size_of(t))).sum()
    }

    /// How many resources of type `t` the pool has.
    fn size_of(&self, t: ResourceType) -> u32 {
        match t {
            ResourceType::Organization => self.organizations + self.payers,
            ResourceType::Location => self.locations,
            ResourceType::Practitioner => self.practitioners,
            ResourceType::PractitionerRole => self.roles,
            ResourceType::Medication => self.medications,
            _ => 0,
        }
    }

    /// The organization a practitioner works for.
    pub fn organization_of(&self, practitioner: u32) -> u32 {
        practitioner % self.organizations.max(1)
    }

    /// Index into [`codes::SPECIALTIES`]: practitioners cycle through them.
    pub fn specialty_of(practitioner: u32) -> u32 {
        practitioner % codes::SPECIALTIES.len() as u32
    }

    /// A family physician or internist for an adult, a family physician or pediatrician for a
    /// child.
    pub fn primary_care(&self, rng: &mut ChaCha8Rng, child: bool) -> u32 {
        let i = rng.random_range(0..self.practitioners.max(1));
        match (Self::specialty_of(i), child) {
            (FAMILY_MEDICINE, _) | (INTERNAL_MEDICINE, false) | (PEDIATRICS, true) => i,
            (INTERNAL_MEDICINE, true) | (PEDIATRICS, false) => i - 1,
            (EMERGENCY_MEDICINE, true) => i - 1,
            _ => i - 2,
        }
    }

    /// An emergency physician when the pool has one near the draw, else anyone.
    pub fn emergency(&self, rng: &mut ChaCha8Rng) -> u32 {
        let i = rng.random_range(0..self.practitioners.max(1));
        let candidate = i - Self::specialty_of(i) + EMERGENCY_MEDICINE;
        if candidate < self.practitioners {
            candidate
        } else {
            i
        }
    }
}

/// The pool's references (`Type/id`), which patients need; the full resources are made again on
/// demand from the same streams.
#[derive(Debug, Clone)]
pub struct SharedPool {
    seed: u64,
    shape: PoolShape,
    organizations: Vec<Arc<str>>,
    practitioners: Vec<Arc<str>>,
    locations: Vec<Arc<str>>,
    payers: Vec<Arc<str>>,
    medications: Vec<Arc<str>>,
}

impl SharedPool {
    pub fn new(seed: u64, shape: PoolShape) -> Self {
        let keys = |t: ResourceType, purpose, n: u32| -> Vec<Arc<str>> {
            (0..n)
                .map(|i| key(t, &first_id(seed, purpose, i)).into())
                .collect()
        };
        Self {
            seed,
            shape,
            organizations: keys(
                ResourceType::Organization,
                Purpose::Organization,
                shape.organizations,
            ),
            practitioners: keys(
                ResourceType::Practitioner,
                Purpose::Practitioner,
                shape.practitioners,
            ),
            locations: keys(ResourceType::Location, Purpose::Location, shape.locations),
            payers: keys(ResourceType::Organization, Purpose::Payer, shape.payers),
            medications: keys(
                ResourceType::Medication,
                Purpose::Medication,
                shape.medications,
            ),
        }
    }

    pub fn shape(&self) -> &PoolShape {
        &self.shape
    }

    pub fn organization(&self, index: u32) -> &Arc<str> {
        &self.organizations[index as usize]
    }

    pub fn practitioner(&self, index: u32) -> &Arc<str> {
        &self.practitioners[index as usize]
    }

    /// The Location of an organization.
    pub fn location(&self, organization: u32) -> &Arc<str> {
        &self.locations[organization as usize]
    }

    /// The insurer at `index` of [`codes::PAYERS`].
    pub fn payer(&self, index: usize) -> &Arc<str> {
        &self.payers[index]
    }

    /// The Medication of a drug of the formulary.
    pub fn medication(&self, drug: &codes::Medication) -> &Arc<str> {
        let index = codes::FORMULARY
            .iter()
            .position(|m| *m == drug)
            .expect("every prescribed drug is in the formulary");
        &self.medications[index]
    }

    /// The first `limit` shared resources of `types`, in load order: organizations (providers,
    /// then insurers), locations, practitioners, roles, medications.
    pub fn record(&self, types: TypeSet, limit: u64) -> Record {
        let resources: Vec<Resource> = types
            .iter()
            .flat_map(|t| (0..self.shape.size_of(t)).map(move |i| (t, i)))
            .take(usize::try_from(limit).unwrap_or(usize::MAX))
            .map(|(t, i)| self.resource(t, i))
            .collect();
        Record {
            kind: RecordKind::Shared,
            resources,
        }
    }

    fn resource(&self, t: ResourceType, index: u32) -> Resource {
        match t {
            ResourceType::Organization if index < self.shape.organizations => {
                self.organization_resource(index)
            }
            ResourceType::Organization => self.payer_resource(index - self.shape.organizations),
            ResourceType::Location => self.location_resource(index),
            ResourceType::Practitioner => self.practitioner_resource(index),
            ResourceType::PractitionerRole => self.role_resource(index),
            ResourceType::Medication => self.medication_resource(index),
            _ => unreachable!("{t} is not a shared type"),
        }
    }

    /// An organization's id, address, name and kind, and its stream after them.
    fn organization_parts(&self, index: u32) -> (String, Json, String, &'static str, ChaCha8Rng) {
        let mut rng = stream(self.seed, Purpose::Organization, u64::from(index));
        let id = uuid(&mut rng);
        let address = address(&mut rng, None);
        let kind = codes::ORGANIZATION_KINDS
            .choose(&mut rng)
            .expect("organization kinds are not empty");
        let name = format!(
            "{} {kind}",
            address
                .get("city")
                .and_then(Json::as_str)
                .unwrap_or("Springfield")
        );
        (id, address, name, kind, rng)
    }

    fn organization_resource(&self, index: u32) -> Resource {
        let (id, address, name, _, mut rng) = self.organization_parts(index);
        Body::new(ResourceType::Organization, id)
            .identified()
            .set("active", true)
            .set("type", coded_list(codes::ORGANIZATION_TYPE, PROVIDER))
            .set("name", name)
            .set("telecom", work_phone(&mut rng))
            .set("address", array([address]))
            .build()
    }

    /// The place where an organization sees patients: its address, under its name.
    fn location_resource(&self, index: u32) -> Resource {
        let (_, address, name, kind, mut rng) = self.organization_parts(index);
        let id = first_id(self.seed, Purpose::Location, index);
        let role = if kind.contains("Hospital") || kind.contains("Medical Center") {
            HOSPITAL
        } else {
            PRIMARY_CARE_CLINIC
        };
        Body::new(ResourceType::Location, id)
            .identified()
            .set("status", "active")
            .set("name", name)
            .set("mode", "instance")
            .set("type", array([codeable(codes::ROLE_CODE, role)]))
            .set("telecom", work_phone(&mut rng))
            .set("address", address)
            .set(
                "managingOrganization",
                reference(self.organization(index).to_owned()),
            )
            .build()
    }

    fn payer_resource(&self, index: u32) -> Resource {
        let mut rng = stream(self.seed, Purpose::Payer, u64::from(index));
        let id = uuid(&mut rng);
        let payer = &codes::PAYERS[index as usize];
        Body::new(ResourceType::Organization, id)
            .identified()
            .set("active", true)
            .set("type", coded_list(codes::ORGANIZATION_TYPE, PAYER))
            .set("name", payer.name)
            .set("telecom", work_phone(&mut rng))
            .set("address", array([address(&mut rng, None)]))
            .build()
    }

    fn medication_resource(&self, index: u32) -> Resource {
        let id = first_id(self.seed, Purpose::Medication, index);
        let drug = codes::FORMULARY[index as usize];
        Body::new(ResourceType::Medication, id)
            .identified()
            .set("code", codeable(codes::RXNORM, drug.rxnorm))
            .set("status", "active")
            .build()
    }

    fn practitioner_resource(&self, index: u32) -> Resource {
        let mut rng = stream(self.seed, Purpose::Practitioner, u64::from(index));
        let id = uuid(&mut rng);
        let female = rng.random_bool(0.5);
        let given = if female { names::FEMALE } else { names::MALE }
            .choose(&mut rng)
            .expect("names are not empty");
        let family: &str = LastName().fake_with_rng(&mut rng);
        let ids = array([
            identifier(ResourceType::Practitioner, &id),
            object([
                ("system", codes::NPI.into()),
                ("value", npi(self.seed, index).into()),
            ]),
        ]);
        Body::new(ResourceType::Practitioner, id)
            .set("identifier", ids)
            .set("active", true)
            .set(
                "name",
                array([object([
                    ("use", "official".into()),
                    ("family", family.into()),
                    ("given", array([(*given).into()])),
                    ("prefix", array(["Dr.".into()])),
                ])]),
            )
            .set("telecom", work_phone(&mut rng))
            .set("gender", if female { "female" } else { "male" })
            .build()
    }

    fn role_resource(&self, index: u32) -> Resource {
        let mut rng = stream(self.seed, Purpose::PractitionerRole, u64::from(index));
        let id = uuid(&mut rng);
        let specialty = codes::SPECIALTIES[PoolShape::specialty_of(index) as usize];
        Body::new(ResourceType::PractitionerRole, id)
            .identified()
            .set("active", true)
            .set(
                "practitioner",
                reference(self.practitioner(index).to_owned()),
            )
            .set(
                "organization",
                reference(
                    self.organization(self.shape.organization_of(index))
                        .to_owned(),
                ),
            )
            .set("code", coded_list(codes::PRACTITIONER_ROLE, DOCTOR))
            .set("specialty", array([codeable(codes::NUCC, specialty)]))
            .build()
    }
}

/// The telecom of a pool member: one work phone.
fn work_phone(rng: &mut ChaCha8Rng) -> Json {
    array([object([
        ("system", "phone".into()),
        ("value", phone(rng).into()),
        ("use", "work".into()),
    ])])
}

const PROVIDER: Concept = Concept {
    code: "prov",
    display: "Healthcare Provider",
};
const PAYER: Concept = Concept {
    code: "pay",
    display: "Payer",
};
const HOSPITAL: Concept = Concept {
    code: "HOSP",
    display: "Hospital",
};
const PRIMARY_CARE_CLINIC: Concept = Concept {
    code: "PC",
    display: "primary care clinic",
};
const DOCTOR: Concept = Concept {
    code: "doctor",
    display: "Doctor",
};

/// The id a pool member's stream draws first.
fn first_id(seed: u64, purpose: Purpose, index: u32) -> String {
    uuid(&mut stream(seed, purpose, u64::from(index)))
}

/// A well-formed NPI (10 digits, starting 1 or 2, Luhn check digit over the 80840 prefix),
/// distinct for every practitioner of a pool: 7919 is prime to 2e8, so the map is one-to-one.
fn npi(seed: u64, index: u32) -> String {
    let base = 100_000_000 + (u64::from(index) * 7_919 + seed % 200_000_000) % 200_000_000;
    npi_with_check_digit(base)
}

fn npi_with_check_digit(base: u64) -> String {
    let payload = format!("80840{base:09}");
    let sum: u32 = payload
        .bytes()
        .rev()
        .enumerate()
        .map(|(i, b)| {
            let digit = u32::from(b - b'0');
            if i % 2 == 0 {
                let doubled = digit * 2;
                if doubled > 9 { doubled - 9 } else { doubled }
            } else {
                digit
            }
        })
        .sum();
    format!("{base:09}{}", (10 - sum % 10) % 10)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shape_grows_with_count_and_fits_tiny_counts() {
        let shape = |count| PoolShape::for_count(count);
        let total = |count| shape(count).kept(TypeSet::ALL);
        assert_eq!(total(0), 0);
        assert_eq!(
            shape(1),
            PoolShape {
                organizations: 1,
                practitioners: 0,
                roles: 0,
                locations: 0,
                payers: 0,
                medications: 0,
            }
        );
        assert_eq!(total(2), 2);
        assert_eq!(total(3), 3);
        assert_eq!(total(5), 5);
        // 1 organization, 2 practitioners and roles, 1 location, 7 insurers, 21 drugs.
        assert_eq!(total(1000), 34);
        let big = shape(1_000_000);
        assert_eq!((big.organizations, big.practitioners), (500, 2500));
        assert_eq!(big.locations, 500);
        assert_eq!(total(u64::MAX), 12_028);
        for count in 0..5000 {
            assert!(total(count) <= count);
        }
    }

    #[test]
    fn primary_care_and_emergency_pick_the_right_specialties() {
        let shape = PoolShape::for_count(100_000);
        let mut rng = stream(1, Purpose::Plan, 0);
        for _ in 0..1000 {
            let adult = PoolShape::specialty_of(shape.primary_care(&mut rng, false));
            assert!([FAMILY_MEDICINE, INTERNAL_MEDICINE].contains(&adult));
            let child = PoolShape::specialty_of(shape.primary_care(&mut rng, true));
            assert!([FAMILY_MEDICINE, PEDIATRICS].contains(&child));
            let er = shape.emergency(&mut rng);
            assert!(er < shape.practitioners);
        }
        let tiny = PoolShape::for_count(10);
        assert_eq!(tiny.primary_care(&mut rng, true), 0);
        assert_eq!(tiny.emergency(&mut rng), 0);
    }

    #[test]
    fn npis_are_valid_and_distinct() {
        assert_eq!(npi_with_check_digit(123_456_789), "1234567893");
        let all: std::collections::BTreeSet<String> = (0..5000).map(|i| npi(42, i)).collect();
        assert_eq!(all.len(), 5000);
        assert!(
            all.iter()
                .all(|n| n.len() == 10 && n.starts_with(['1', '2']))
        );
    }

    #[test]
    fn record_matches_the_references() {
        let pool = SharedPool::new(9, PoolShape::for_count(20_000));
        let record = pool.record(TypeSet::ALL, u64::MAX);
        assert_eq!(record.kind, RecordKind::Shared);
        assert_eq!(
            record.resources.len() as u64,
            pool.shape().kept(TypeSet::ALL)
        );
        assert_eq!(record.resources[0].key, &**pool.organization(0));
        let shape = pool.shape();
        let first_payer = shape.organizations as usize;
        assert_eq!(record.resources[first_payer].key, &**pool.payer(0));
        let first_location = first_payer + shape.payers as usize;
        assert_eq!(record.resources[first_location].key, &**pool.location(0));
        let first_practitioner = first_location + shape.locations as usize;
        assert_eq!(
            record.resources[first_practitioner].key,
            &**pool.practitioner(0)
        );
        let ids = &record.resources[first_practitioner].to_value()["identifier"];
        assert_eq!(ids[1]["system"], codes::NPI);
        let last = record.resources.last().unwrap();
        assert_eq!(last.key, &**pool.medication(codes::FORMULARY[20]));
    }
}
