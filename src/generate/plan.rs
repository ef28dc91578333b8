//! A patient's plan: their life, encounters and every value measured, as typed data drawn from
//! the patient's own stream. Planning is cheap and fixes the number of resources, so every
//! shard can plan every patient (to know where the data set ends) and render only its own.

use chrono::{Datelike, NaiveDate};
use rand::RngExt;
use rand::rngs::ChaCha8Rng;
use rand::seq::IndexedRandom;

use super::codes::{
    self, Acute, Allergy, Chronic, Concept, Effect, Measure, Medication, Schedule, Setting,
};
use super::random::{Purpose, between, normal, stream, weighted};
use super::shared::PoolShape;
use super::types::{ResourceType, TypeSet};

pub const MINUTE: i64 = 60;
pub const HOUR: i64 = 3_600;
pub const DAY: i64 = 86_400;
pub const YEAR: i64 = 31_557_600;

/// What every plan depends on besides the patient's own stream.
#[derive(Debug, Clone)]
pub struct PlanContext {
    pub seed: u64,
    /// The last second of the `--as-of` day (UTC), in seconds since the epoch: histories end here.
    pub as_of_end: i64,
    pub shape: PoolShape,
}

impl PlanContext {
    pub fn new(seed: u64, as_of: NaiveDate, shape: PoolShape) -> Self {
        let as_of_end = midnight(as_of) + DAY - 1;
        Self {
            seed,
            as_of_end,
            shape,
        }
    }
}

/// Seconds since the epoch at the start of `date` (UTC).
pub fn midnight(date: NaiveDate) -> i64 {
    date.and_hms_opt(0, 0, 0)
        .expect("midnight exists")
        .and_utc()
        .timestamp()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sex {
    Male,
    Female,
}

#[derive(Debug)]
pub struct PatientPlan {
    pub sex: Sex,
    pub birth_date: NaiveDate,
    pub death: Option<i64>,
    /// Death, or the end of `--as-of`: nothing in the record is later.
    pub history_end: i64,
    pub race: Concept,
    pub hispanic: bool,
    pub language: Concept,
    pub marital_status: Option<Concept>,
    pub general_practitioner: u32,
    pub allergies: Vec<AllergyPlan>,
    /// In the order of the encounters that record them.
    pub conditions: Vec<ConditionPlan>,
    /// In time order.
    pub encounters: Vec<EncounterPlan>,
}

#[derive(Debug)]
pub struct AllergyPlan {
    pub allergy: &'static Allergy,
    pub onset: i64,
    pub recorded: i64,
    pub reaction: Concept,
    pub high_criticality: bool,
}

#[derive(Debug)]
pub struct ConditionPlan {
    pub snomed: Concept,
    /// A long-term problem (problem-list-item) rather than an encounter diagnosis.
    pub chronic: bool,
    pub onset: i64,
    pub abatement: Option<i64>,
    pub recorded: i64,
    /// Index of the encounter that records it.
    pub encounter: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EncounterClass {
    Ambulatory,
    Emergency,
    Inpatient,
}

#[derive(Debug)]
pub struct EncounterPlan {
    pub class: EncounterClass,
    pub kind: Concept,
    pub start: i64,
    pub end: i64,
    pub practitioner: u32,
    pub organization: u32,
    pub reason: Option<Concept>,
    /// Systolic and diastolic, one panel observation.
    pub blood_pressure: Option<(f64, f64)>,
    pub vitals: Vec<Measurement>,
    pub vitals_at: i64,
    /// Grouped by one DiagnosticReport.
    pub labs: Vec<Measurement>,
    pub labs_at: i64,
    pub procedures: Vec<ProcedurePlan>,
    pub medications: Vec<MedicationPlan>,
    pub immunizations: Vec<Concept>,
    pub immunized_at: i64,
}

#[derive(Debug, Clone, Copy)]
pub struct Measurement {
    pub measure: &'static Measure,
    /// Already clamped to the measure's range and rounded to its decimals.
    pub value: f64,
}

impl Measurement {
    fn new(measure: &'static Measure, raw: f64) -> Self {
        let scale = 10f64.powi(i32::from(measure.decimals));
        let value = (raw.clamp(measure.low, measure.high) * scale).round() / scale;
        Self { measure, value }
    }
}

#[derive(Debug)]
pub struct ProcedurePlan {
    pub snomed: Concept,
    /// Index of the condition it treats or investigates.
    pub reason: Option<usize>,
    pub start: i64,
    pub end: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MedicationStatus {
    Active,
    Completed,
    Stopped,
}

#[derive(Debug)]
pub struct MedicationPlan {
    pub medication: &'static Medication,
    /// Index of the condition it treats.
    pub reason: usize,
    pub authored: i64,
    pub status: MedicationStatus,
}

impl EncounterPlan {
    fn resource_count(&self, types: TypeSet) -> u64 {
        let of = |t, n| kept(types, t, n);
        let procedures_with =
            |find: fn(Concept) -> bool| self.procedures.iter().filter(|p| find(p.snomed)).count();
        of(ResourceType::Encounter, 1)
            + of(
                ResourceType::Observation,
                usize::from(self.blood_pressure.is_some()) + self.vitals.len() + self.labs.len(),
            )
            + of(
                ResourceType::DiagnosticReport,
                usize::from(!self.labs.is_empty()),
            )
            + of(ResourceType::Procedure, self.procedures.len())
            + of(
                ResourceType::ImagingStudy,
                procedures_with(|p| codes::imaging_of(p).is_some()),
            )
            + of(
                ResourceType::Device,
                procedures_with(|p| codes::implant_of(p).is_some()),
            )
            + of(ResourceType::MedicationRequest, self.medications.len())
            + of(
                ResourceType::MedicationAdministration,
                self.administered()
                    .iter()
                    .map(|m| self.doses(m).count())
                    .sum(),
            )
            + of(ResourceType::Immunization, self.immunizations.len())
            + of(ResourceType::DocumentReference, 1)
            + of(ResourceType::Claim, 1)
            + of(ResourceType::ExplanationOfBenefit, 1)
    }

    /// The prescriptions given during the encounter itself: those of a hospital stay.
    pub fn administered(&self) -> &[MedicationPlan] {
        if self.class == EncounterClass::Inpatient {
            &self.medications
        } else {
            &[]
        }
    }

    /// When a prescription of the stay is given: a few minutes after it is written, then
    /// daily until discharge.
    pub fn doses(&self, medication: &MedicationPlan) -> impl Iterator<Item = i64> + use<> {
        let (end, first) = (self.end, medication.authored + 2 * MINUTE);
        (0..)
            .map(move |day| first + day * DAY)
            .take_while(move |&at| at <= end)
    }
}

/// `n` resources of type `t`, if `types` keeps them.
fn kept(types: TypeSet, t: ResourceType, n: usize) -> u64 {
    if types.contains(t) { n as u64 } else { 0 }
}

impl PatientPlan {
    /// How many resources of `types` rendering this plan makes.
    pub fn resource_count(&self, types: TypeSet) -> u64 {
        let of = |t, n| kept(types, t, n);
        let chronic = self.conditions.iter().filter(|c| c.chronic).count();
        of(ResourceType::Patient, 1)
            + of(ResourceType::Coverage, 1)
            + of(ResourceType::AllergyIntolerance, self.allergies.len())
            + of(ResourceType::Condition, self.conditions.len())
            + of(ResourceType::CareTeam, chronic)
            + of(ResourceType::Goal, chronic)
            + of(ResourceType::CarePlan, chronic)
            + self
                .encounters
                .iter()
                .map(|e| e.resource_count(types))
                .sum::<u64>()
            + of(ResourceType::Provenance, 1)
    }

    /// The indices of the conditions an encounter records.
    pub fn conditions_recorded_at(&self, encounter: usize) -> std::ops::Range<usize> {
        let start = self.conditions.partition_point(|c| c.encounter < encounter);
        let end = self
            .conditions
            .partition_point(|c| c.encounter <= encounter);
        start..end
    }

    /// The conditions an encounter records.
    pub fn conditions_of(&self, encounter: usize) -> impl Iterator<Item = &ConditionPlan> {
        self.conditions[self.conditions_recorded_at(encounter)].iter()
    }
}

/// Share of the population in each five-year age band (0-4, 5-9, ... 95-99), US-like.
const AGE_PYRAMID: [(u32, f64); 20] = [
    (0, 6.0),
    (5, 6.2),
    (10, 6.4),
    (15, 6.5),
    (20, 6.6),
    (25, 6.9),
    (30, 7.0),
    (35, 6.6),
    (40, 6.2),
    (45, 6.0),
    (50, 6.3),
    (55, 6.4),
    (60, 6.1),
    (65, 5.3),
    (70, 4.2),
    (75, 2.9),
    (80, 1.9),
    (85, 1.2),
    (90, 0.6),
    (95, 0.2),
];

/// Ages of well-child visits in days, before the yearly ones from age 3.
const WELL_CHILD_DAYS: [i64; 12] = [4, 30, 61, 122, 183, 274, 365, 456, 548, 730, 913, 1096];

/// Median height (cm) and weight (kg) by age in years (CDC growth charts), boys and girls.
const GROWTH: [(f64, [f64; 2], [f64; 2]); 22] = [
    (0.0, [49.9, 49.1], [3.3, 3.2]),
    (0.25, [61.4, 59.8], [6.4, 5.8]),
    (0.5, [67.6, 65.7], [7.9, 7.3]),
    (1.0, [75.7, 74.0], [9.6, 8.9]),
    (1.5, [82.3, 80.7], [10.9, 10.2]),
    (2.0, [87.1, 85.7], [12.2, 11.5]),
    (3.0, [96.1, 95.1], [14.3, 13.9]),
    (4.0, [103.3, 102.7], [16.3, 15.9]),
    (5.0, [110.0, 109.4], [18.4, 18.0]),
    (6.0, [116.0, 115.5], [20.7, 20.2]),
    (7.0, [121.7, 121.1], [23.1, 22.4]),
    (8.0, [127.3, 126.6], [25.6, 25.0]),
    (9.0, [132.6, 132.2], [28.6, 28.2]),
    (10.0, [137.8, 138.3], [31.9, 31.9]),
    (11.0, [143.5, 144.8], [35.6, 36.0]),
    (12.0, [149.1, 151.5], [39.9, 40.5]),
    (13.0, [156.2, 157.1], [45.3, 44.9]),
    (14.0, [163.8, 160.4], [50.8, 48.6]),
    (15.0, [170.1, 161.8], [56.0, 51.4]),
    (16.0, [173.4, 162.5], [60.8, 53.4]),
    (17.0, [175.2, 162.9], [64.6, 54.8]),
    (18.0, [176.1, 163.2], [67.2, 56.0]),
];

/// Plans patient `index`.
pub fn plan_patient(context: &PlanContext, index: u64) -> PatientPlan {
    Planner::new(context, stream(context.seed, Purpose::Plan, index)).plan()
}

/// A patient's fixed traits that measurements vary around.
struct Body {
    sex: Sex,
    height_z: f64,
    build_z: f64,
    systolic_offset: f64,
    diastolic_offset: f64,
    heart_offset: f64,
    hba1c: f64,
    diabetic_hba1c: f64,
    creatinine: f64,
    sodium: f64,
    potassium: f64,
    hemoglobin_offset: f64,
}

/// Conditions the patient has at some moment, as far as measurements are concerned.
#[derive(Debug, Default, Clone, Copy)]
struct Effects {
    high_blood_pressure: bool,
    high_glucose: bool,
    high_creatinine: bool,
    low_hemoglobin: bool,
    low_oxygen: bool,
    fast_heart: bool,
}

struct ChronicDraw {
    chronic: &'static Chronic,
    onset: i64,
    /// Index into the plan's conditions once recorded.
    condition: Option<usize>,
    /// Its current prescriptions: (encounter, medication) indices.
    orders: Vec<(usize, usize)>,
}

#[derive(Debug, Clone, Copy)]
enum Visit {
    Wellness,
    /// Follow-up of a chronic draw.
    FollowUp(usize),
    Acute(&'static Acute),
}

#[derive(Debug, Clone, Copy)]
struct Draft {
    visit: Visit,
    start: i64,
    end: i64,
}

struct Planner<'a> {
    context: &'a PlanContext,
    rng: ChaCha8Rng,
    sex: Sex,
    birth: i64,
    window_start: i64,
    end: i64,
    dead: bool,
}

impl<'a> Planner<'a> {
    fn new(context: &'a PlanContext, mut rng: ChaCha8Rng) -> Self {
        let sex = if rng.random_bool(0.505) {
            Sex::Female
        } else {
            Sex::Male
        };
        let band = AGE_PYRAMID[weighted(&mut rng, &AGE_PYRAMID)].0;
        let age_days = (i64::from(band) * 365 + between(&mut rng, 0, 5 * 365 - 1)).max(10);
        let birth = context.as_of_end - context.as_of_end.rem_euclid(DAY) - age_days * DAY;
        // How far back the record goes: a few years of history, as a practice would hold.
        let years_back = rng.random_range(1..=5);
        let window_start = (context.as_of_end - years_back * YEAR).max(birth + 2 * DAY);
        let mut planner = Self {
            context,
            rng,
            sex,
            birth,
            window_start,
            end: context.as_of_end,
            dead: false,
        };
        let years = (context.as_of_end - window_start) as f64 / YEAR as f64;
        let yearly = annual_mortality(age_days as f64 / 365.25);
        let p_death = 1.0 - (1.0 - yearly).powf(years);
        if planner.rng.random_bool(p_death) && context.as_of_end - window_start > 30 * DAY {
            planner.end = between(&mut planner.rng, window_start + 14 * DAY, context.as_of_end);
            planner.dead = true;
        }
        planner
    }

    fn age_years(&self, at: i64) -> f64 {
        (at - self.birth) as f64 / YEAR as f64
    }

    fn age_days(&self, at: i64) -> i64 {
        (at - self.birth) / DAY
    }

    fn plan(mut self) -> PatientPlan {
        let female = self.sex == Sex::Female;
        let age_at_end = self.age_years(self.end);
        let race = codes::RACES[weighted(&mut self.rng, codes::RACES)].0;
        let hispanic = self.rng.random_bool(codes::HISPANIC_SHARE);
        let language = self.language(hispanic, race);
        let marital_status = self.marital_status(age_at_end);
        let general_practitioner = self
            .context
            .shape
            .primary_care(&mut self.rng, age_at_end < 18.0);
        let body = self.body();

        let allergies = self.allergies();
        let penicillin_allergy = allergies.iter().any(|a| a.allergy.penicillin);

        let chronic = self.chronic_draws(female, &body);
        let wellness = self.wellness_times();
        let mut drafts: Vec<Draft> = wellness
            .iter()
            .map(|&start| Draft {
                visit: Visit::Wellness,
                start,
                end: start + between(&mut self.rng, 20, 45) * MINUTE,
            })
            .collect();
        self.follow_ups(&chronic, &wellness, &mut drafts);
        self.acute_episodes(&mut drafts);
        let drafts = without_overlaps(drafts, self.end);

        let mut plan = PatientPlan {
            sex: self.sex,
            birth_date: date_of(self.birth),
            death: self.dead.then_some(self.end),
            history_end: self.end,
            race,
            hispanic,
            language,
            marital_status,
            general_practitioner,
            allergies,
            conditions: Vec::new(),
            encounters: Vec::with_capacity(drafts.len()),
        };
        let mut history = History {
            chronic,
            penicillin_allergy,
            vaccines: vec![VaccineState::default(); codes::VACCINES.len()],
            long_term_medications: 0,
        };
        for draft in drafts {
            let encounter = self.encounter(&draft, &mut plan, &mut history, &body);
            plan.encounters.push(encounter);
        }
        plan
    }

    fn language(&mut self, hispanic: bool, race: Concept) -> Concept {
        if hispanic && self.rng.random_bool(0.4) {
            codes::SPANISH
        } else if (race == codes::ASIAN && self.rng.random_bool(0.3)) || self.rng.random_bool(0.02)
        {
            *codes::OTHER_LANGUAGES
                .choose(&mut self.rng)
                .expect("languages are not empty")
        } else {
            codes::ENGLISH
        }
    }

    fn marital_status(&mut self, age: f64) -> Option<Concept> {
        if age < 18.0 {
            return None;
        }
        let married = (0.25 + age / 100.0).min(0.6);
        let draw = self.rng.random::<f64>();
        Some(if draw < married {
            codes::MARRIED
        } else if draw < married + 0.12 && age >= 25.0 {
            codes::DIVORCED
        } else if draw < married + 0.25 && age >= 60.0 {
            codes::WIDOWED
        } else {
            codes::NEVER_MARRIED
        })
    }

    fn body(&mut self) -> Body {
        let rng = &mut self.rng;
        let female = self.sex == Sex::Female;
        Body {
            sex: self.sex,
            height_z: normal(rng, 0.0, 1.0).clamp(-2.5, 2.5),
            build_z: normal(rng, 0.0, 1.0).clamp(-2.0, 3.0),
            systolic_offset: normal(rng, 0.0, 8.0),
            diastolic_offset: normal(rng, 0.0, 5.0),
            heart_offset: normal(rng, 0.0, 6.0),
            hba1c: normal(rng, 5.3, 0.25).clamp(4.4, 5.9),
            diabetic_hba1c: normal(rng, 7.6, 0.9).clamp(6.5, 11.0),
            creatinine: if female {
                normal(rng, 0.8, 0.1)
            } else {
                normal(rng, 1.0, 0.12)
            }
            .clamp(0.5, 1.3),
            sodium: normal(rng, 140.0, 1.5),
            potassium: normal(rng, 4.2, 0.2),
            hemoglobin_offset: normal(rng, 0.0, 0.8),
        }
    }

    fn allergies(&mut self) -> Vec<AllergyPlan> {
        let mut allergies = Vec::new();
        let age_days = self.age_days(self.end);
        for allergy in codes::ALLERGIES {
            if !self.rng.random_bool(allergy.prevalence) || allergies.len() == 3 {
                continue;
            }
            let earliest = i64::from(allergy.min_onset_years) * 365;
            if age_days <= earliest {
                continue;
            }
            let onset_day = between(
                &mut self.rng,
                earliest,
                age_days.min(earliest + 15 * 365) - 1,
            );
            let onset = self.birth + onset_day * DAY + between(&mut self.rng, 8, 20) * HOUR;
            let onset = onset.min(self.end);
            let reaction = *allergy
                .reactions
                .choose(&mut self.rng)
                .expect("reactions are not empty");
            allergies.push(AllergyPlan {
                allergy,
                onset,
                recorded: onset.max(self.window_start),
                reaction,
                high_criticality: self.rng.random_bool(allergy.high_criticality),
            });
        }
        allergies
    }

    fn chronic_draws(&mut self, female: bool, body: &Body) -> Vec<ChronicDraw> {
        let age = self.age_years(self.end);
        let mut draws = Vec::new();
        for chronic in codes::CHRONIC {
            let factor = if female { chronic.female_factor } else { 1.0 };
            let p = (chronic.prevalence[age_band(age)] * factor).clamp(0.0, 1.0);
            if self.rng.random_bool(p) && age > f64::from(chronic.min_onset_years) {
                let onset = self.onset(chronic.min_onset_years, 25);
                draws.push(ChronicDraw {
                    chronic,
                    onset,
                    condition: None,
                    orders: Vec::new(),
                });
            }
        }
        if age >= 18.0 && body.bmi(age) >= 30.0 {
            let onset = self.onset(18, 15);
            draws.push(ChronicDraw {
                chronic: &codes::OBESITY,
                onset,
                condition: None,
                orders: Vec::new(),
            });
        }
        draws
    }

    /// An onset after `min_age` years of life and within `years` before the end of history.
    fn onset(&mut self, min_age: u32, years: i64) -> i64 {
        let earliest = (self.birth + i64::from(min_age) * YEAR).max(self.end - years * YEAR);
        between(&mut self.rng, earliest, self.end)
    }

    fn visit_time(&mut self, day_start: i64) -> i64 {
        day_start - day_start.rem_euclid(DAY) + between(&mut self.rng, 96, 198) * 5 * MINUTE
    }

    fn wellness_times(&mut self) -> Vec<i64> {
        let mut times = Vec::new();
        for days in WELL_CHILD_DAYS {
            let day = self.birth + (days + between(&mut self.rng, 0, 6)) * DAY;
            let at = self.visit_time(day);
            if at >= self.window_start && at + HOUR <= self.end {
                times.push(at);
            }
        }
        let first_year = (self.age_days(self.window_start) / 365).max(4);
        for year in first_year.. {
            let day = self.birth + (year * 365 + between(&mut self.rng, -30, 30)) * DAY;
            let at = self.visit_time(day);
            if at + HOUR > self.end {
                break;
            }
            let skip = match year {
                0..18 => 0.1,
                18..65 => 0.3,
                _ => 0.1,
            };
            if at >= self.window_start && !self.rng.random_bool(skip) {
                times.push(at);
            }
        }
        times
    }

    fn follow_ups(&mut self, chronic: &[ChronicDraw], wellness: &[i64], drafts: &mut Vec<Draft>) {
        for (i, draw) in chronic.iter().enumerate() {
            let Some(&diagnosed) = wellness.iter().find(|&&t| t >= draw.onset) else {
                continue;
            };
            if draw.chronic.follow_ups_per_year <= 0.0 {
                continue;
            }
            let interval = 365.0 / draw.chronic.follow_ups_per_year;
            let mut at = diagnosed;
            loop {
                let days = (interval * self.rng.random_range(0.8..1.2)) as i64;
                at += days.max(14) * DAY;
                let length = between(&mut self.rng, 15, 30) * MINUTE;
                if at + length > self.end {
                    break;
                }
                drafts.push(Draft {
                    visit: Visit::FollowUp(i),
                    start: at,
                    end: at + length,
                });
            }
        }
    }

    fn acute_episodes(&mut self, drafts: &mut Vec<Draft>) {
        let female = self.sex == Sex::Female;
        for acute in codes::ACUTE {
            let not_before = acute
                .not_before
                .and_then(|(y, m, d)| NaiveDate::from_ymd_opt(y, m, d))
                .map_or(i64::MIN, midnight);
            let mut at = self.window_start;
            while at < self.end {
                let factor = if female { acute.female_factor } else { 1.0 };
                let rate = acute.rate_per_year[age_band(self.age_years(at))] * factor;
                if rate <= 0.0 {
                    at += YEAR;
                    continue;
                }
                let gap = -(1.0 - self.rng.random::<f64>()).ln() / rate;
                at += (gap * YEAR as f64) as i64;
                if at >= self.end || at < not_before || self.age_days(at) < 30 {
                    continue;
                }
                let (start, length) = match acute.setting {
                    Setting::Ambulatory => {
                        (self.visit_time(at), between(&mut self.rng, 15, 40) * MINUTE)
                    }
                    Setting::Emergency => (at, between(&mut self.rng, 2 * 60, 8 * 60) * MINUTE),
                    Setting::Inpatient => {
                        let (low, high) = acute.stay_days;
                        let days = between(&mut self.rng, i64::from(low), i64::from(high));
                        (at, days * DAY + between(&mut self.rng, 0, 12 * 60) * MINUTE)
                    }
                };
                drafts.push(Draft {
                    visit: Visit::Acute(acute),
                    start,
                    end: start + length,
                });
            }
        }
    }

    fn encounter(
        &mut self,
        draft: &Draft,
        plan: &mut PatientPlan,
        history: &mut History,
        body: &Body,
    ) -> EncounterPlan {
        let (start, end) = (draft.start, draft.end);
        let age = self.age_years(start);
        let (class, kind) = match draft.visit {
            Visit::Wellness if age < 18.0 => (EncounterClass::Ambulatory, codes::WELL_CHILD_VISIT),
            Visit::Wellness => (EncounterClass::Ambulatory, codes::GENERAL_EXAMINATION),
            Visit::FollowUp(_) => (EncounterClass::Ambulatory, codes::FOLLOW_UP_ENCOUNTER),
            Visit::Acute(acute) => match acute.setting {
                Setting::Ambulatory => (EncounterClass::Ambulatory, codes::SYMPTOM_ENCOUNTER),
                Setting::Emergency => (EncounterClass::Emergency, codes::EMERGENCY_ADMISSION),
                Setting::Inpatient => (EncounterClass::Inpatient, codes::HOSPITAL_ADMISSION),
            },
        };
        let practitioner = if class == EncounterClass::Ambulatory {
            plan.general_practitioner
        } else {
            self.context.shape.emergency(&mut self.rng)
        };
        let duration = end - start;
        let mut encounter = EncounterPlan {
            class,
            kind,
            start,
            end,
            practitioner,
            organization: self.context.shape.organization_of(practitioner),
            reason: match draft.visit {
                Visit::Wellness => None,
                Visit::FollowUp(i) => Some(history.chronic[i].chronic.snomed),
                Visit::Acute(acute) => Some(acute.snomed),
            },
            blood_pressure: None,
            vitals: Vec::new(),
            vitals_at: start + (duration / 4).min(10 * MINUTE),
            labs: Vec::new(),
            labs_at: start + (duration / 3).min(20 * MINUTE),
            procedures: Vec::new(),
            medications: Vec::new(),
            immunizations: Vec::new(),
            immunized_at: start + (duration * 3 / 4).min(30 * MINUTE),
        };

        self.renew_prescriptions(draft.visit, &mut encounter, plan, history);
        let reason = match draft.visit {
            Visit::Acute(acute) => Some(self.record_acute(acute, &mut encounter, plan, history)),
            Visit::FollowUp(i) => {
                self.record_chronic(&mut encounter, plan, history);
                history.chronic[i].condition
            }
            Visit::Wellness => {
                self.record_chronic(&mut encounter, plan, history);
                None
            }
        };

        let effects = history.effects_at(start);
        let acute = match draft.visit {
            Visit::Acute(acute) => Some(acute),
            _ => None,
        };
        let vitals = self.vital_set(draft.visit, class, age, effects);
        self.vital_signs(&mut encounter, vitals, body, age, effects, acute);
        let follow_up_labs = match draft.visit {
            Visit::FollowUp(i) => history.chronic[i].chronic.follow_up_labs,
            _ => &[],
        };
        for lab in self.lab_orders(draft.visit, follow_up_labs, age, effects) {
            let value = self.lab_value(lab, body, age, effects);
            encounter.labs.push(Measurement::new(lab, value));
        }
        self.procedures(draft.visit, reason, &mut encounter, history, age);
        if matches!(draft.visit, Visit::Wellness) {
            self.immunize(&mut encounter, &mut history.vaccines);
        }
        encounter
    }

    /// When this encounter's prescriptions are written: on admission for a hospital stay,
    /// which gives them there, near its end otherwise.
    fn prescribed_at(encounter: &EncounterPlan) -> i64 {
        if encounter.class == EncounterClass::Inpatient {
            encounter.start + HOUR
        } else {
            encounter.end - ((encounter.end - encounter.start) / 4).min(5 * MINUTE)
        }
    }

    fn ongoing(&self) -> MedicationStatus {
        if self.dead {
            MedicationStatus::Stopped
        } else {
            MedicationStatus::Active
        }
    }

    /// Prescriptions are renewed at follow-ups of their condition and at yearly check-ups; the
    /// order a renewal replaces is completed.
    fn renew_prescriptions(
        &mut self,
        visit: Visit,
        encounter: &mut EncounterPlan,
        plan: &mut PatientPlan,
        history: &mut History,
    ) {
        let index = plan.encounters.len();
        let draws = match visit {
            Visit::FollowUp(i) => i..i + 1,
            Visit::Wellness => 0..history.chronic.len(),
            Visit::Acute(_) => 0..0,
        };
        let status = self.ongoing();
        for draw in &mut history.chronic[draws] {
            if draw.orders.is_empty() || !self.rng.random_bool(0.6) {
                continue;
            }
            for (e, m) in std::mem::take(&mut draw.orders) {
                let previous = &mut plan.encounters[e].medications[m];
                previous.status = MedicationStatus::Completed;
                encounter.medications.push(MedicationPlan {
                    medication: previous.medication,
                    reason: previous.reason,
                    authored: Self::prescribed_at(encounter),
                    status,
                });
                draw.orders.push((index, encounter.medications.len() - 1));
            }
        }
    }

    /// Records the long-term conditions that have begun and are not yet on the problem list,
    /// with their first prescriptions.
    fn record_chronic(
        &mut self,
        encounter: &mut EncounterPlan,
        plan: &mut PatientPlan,
        history: &mut History,
    ) {
        let index = plan.encounters.len();
        let status = self.ongoing();
        let start = encounter.start;
        for draw in history
            .chronic
            .iter_mut()
            .filter(|d| d.condition.is_none() && d.onset <= start)
        {
            let condition = plan.conditions.len();
            draw.condition = Some(condition);
            plan.conditions.push(ConditionPlan {
                snomed: draw.chronic.snomed,
                chronic: true,
                onset: draw.onset,
                abatement: None,
                recorded: start,
                encounter: index,
            });
            for (rank, medication) in draw.chronic.medications.iter().enumerate() {
                let p = [0.85, 0.35, 0.2][rank.min(2)];
                if self.rng.random_bool(p) {
                    history.long_term_medications += 1;
                    encounter.medications.push(MedicationPlan {
                        medication,
                        reason: condition,
                        authored: Self::prescribed_at(encounter),
                        status,
                    });
                    draw.orders.push((index, encounter.medications.len() - 1));
                }
            }
        }
    }

    /// Records the acute problem an encounter is for and its treatment; returns the condition.
    fn record_acute(
        &mut self,
        acute: &'static Acute,
        encounter: &mut EncounterPlan,
        plan: &mut PatientPlan,
        history: &History,
    ) -> usize {
        let condition = plan.conditions.len();
        let start = encounter.start;
        let onset = (start - between(&mut self.rng, 2, 72) * HOUR).max(self.birth + DAY);
        let (low, high) = acute.lasts_days;
        let resolves = start + between(&mut self.rng, i64::from(low), i64::from(high)) * DAY;
        plan.conditions.push(ConditionPlan {
            snomed: acute.snomed,
            chronic: false,
            onset,
            abatement: (resolves <= self.end).then_some(resolves),
            recorded: start,
            encounter: plan.encounters.len(),
        });
        let medication = match (acute.medication, acute.penicillin_alternative) {
            (Some(m), alternative) if m.penicillin && history.penicillin_allergy => alternative,
            (m, _) => m,
        };
        if let Some(medication) = medication.filter(|_| self.rng.random_bool(0.85)) {
            let authored = Self::prescribed_at(encounter);
            let finished = authored + i64::from(medication.course_days) * DAY;
            encounter.medications.push(MedicationPlan {
                medication,
                reason: condition,
                authored,
                status: if finished <= self.end {
                    MedicationStatus::Completed
                } else {
                    self.ongoing()
                },
            });
        }
        condition
    }

    /// Screening at check-ups, tests for the problem otherwise; `reason` is the condition the
    /// encounter is about.
    fn procedures(
        &mut self,
        visit: Visit,
        reason: Option<usize>,
        encounter: &mut EncounterPlan,
        history: &History,
        age: f64,
    ) {
        let mut chosen: Vec<Concept> = Vec::new();
        match visit {
            Visit::Wellness => {
                let female = self.sex == Sex::Female;
                let candidates = [
                    (codes::HEALTH_ASSESSMENT, age >= 18.0, 0.5),
                    (codes::DEPRESSION_SCREENING, age >= 12.0, 0.4),
                    (
                        codes::MEDICATION_RECONCILIATION,
                        history.long_term_medications > 0,
                        0.8,
                    ),
                    (codes::COLONOSCOPY, (45.0..75.0).contains(&age), 0.08),
                    (
                        codes::IUD_INSERTION,
                        female && (18.0..45.0).contains(&age),
                        0.03,
                    ),
                    (
                        codes::SCREENING_MAMMOGRAPHY,
                        female && (40.0..75.0).contains(&age),
                        0.45,
                    ),
                ];
                for (snomed, eligible, p) in candidates {
                    if eligible && self.rng.random_bool(p) {
                        chosen.push(snomed);
                    }
                }
            }
            Visit::FollowUp(i) => {
                let procedure = history.chronic[i].chronic.follow_up_procedure;
                if let Some(snomed) = procedure.filter(|_| self.rng.random_bool(0.5)) {
                    chosen.push(snomed);
                }
            }
            Visit::Acute(acute) => {
                for &snomed in acute.procedures {
                    if self.rng.random_bool(0.9) {
                        chosen.push(snomed);
                    }
                }
            }
        }
        let (start, end) = (encounter.start, encounter.end);
        let mut at = start + ((end - start) / 3).min(25 * MINUTE);
        for snomed in chosen {
            let length = (between(&mut self.rng, 10, 40) * MINUTE).min(end - at);
            encounter.procedures.push(ProcedurePlan {
                snomed,
                reason: if matches!(visit, Visit::Wellness) {
                    None
                } else {
                    reason
                },
                start: at,
                end: at + length,
            });
            at += length;
        }
    }

    /// Which vital signs an encounter takes: all of them at a wellness visit, what the
    /// problem calls for otherwise.
    fn vital_set(
        &mut self,
        visit: Visit,
        class: EncounterClass,
        age: f64,
        effects: Effects,
    ) -> VitalSet {
        let blood_pressure = age >= 3.0;
        match visit {
            Visit::Wellness => VitalSet {
                blood_pressure,
                breathing: self.rng.random_bool(0.5),
                temperature: self.rng.random_bool(0.2),
                oxygen: age >= 1.0 && self.rng.random_bool(0.2),
                weight: true,
                height: true,
            },
            Visit::FollowUp(_) => VitalSet {
                blood_pressure,
                breathing: effects.low_oxygen,
                temperature: false,
                oxygen: effects.low_oxygen,
                weight: self.rng.random_bool(0.3),
                height: false,
            },
            Visit::Acute(acute) if class == EncounterClass::Ambulatory => {
                let respiratory = acute.fever || acute.low_oxygen;
                VitalSet {
                    blood_pressure: blood_pressure && self.rng.random_bool(0.3),
                    breathing: respiratory,
                    temperature: true,
                    oxygen: respiratory,
                    weight: false,
                    height: false,
                }
            }
            Visit::Acute(_) => VitalSet {
                blood_pressure,
                breathing: true,
                temperature: true,
                oxygen: true,
                weight: class == EncounterClass::Inpatient,
                height: false,
            },
        }
    }

    fn vital_signs(
        &mut self,
        encounter: &mut EncounterPlan,
        set: VitalSet,
        body: &Body,
        age: f64,
        effects: Effects,
        acute: Option<&Acute>,
    ) {
        if set.blood_pressure {
            encounter.blood_pressure = Some(self.blood_pressure(body, age, effects));
        }
        let fever = acute.is_some_and(|a| a.fever);
        let acute_low_oxygen = acute.is_some_and(|a| a.low_oxygen);
        let rng = &mut self.rng;
        let fever_rise = if fever {
            rng.random_range(1.2..2.7)
        } else {
            0.0
        };
        let irregular = if effects.fast_heart {
            12.0 + normal(rng, 0.0, 10.0)
        } else {
            0.0
        };
        let heart = median_heart_rate(age)
            + body.heart_offset
            + normal(rng, 0.0, 5.0)
            + fever_rise * 8.0
            + irregular;
        let vitals = &mut encounter.vitals;
        vitals.push(Measurement::new(&codes::HEART_RATE, heart));
        if set.breathing {
            let faster = if fever || acute_low_oxygen { 3.0 } else { 0.0 };
            let breathing = median_respiratory_rate(age) + normal(rng, 0.0, 1.5) + faster;
            vitals.push(Measurement::new(&codes::RESPIRATORY_RATE, breathing));
        }
        if set.temperature {
            let temperature = normal(rng, 36.8, 0.2).clamp(36.1, 37.3) + fever_rise;
            vitals.push(Measurement::new(&codes::BODY_TEMPERATURE, temperature));
        }
        if set.oxygen {
            let chronic_drop = if effects.low_oxygen { 4.0 } else { 0.0 };
            let acute_drop = if acute_low_oxygen { 6.0 } else { 0.0 };
            let oxygen = normal(rng, 97.6, 0.9).min(100.0) - chronic_drop - acute_drop;
            vitals.push(Measurement::new(&codes::OXYGEN_SATURATION, oxygen));
        }
        if set.weight {
            let height = Measurement::new(&codes::BODY_HEIGHT, body.height(age));
            let weight = body.weight(age, height.value);
            let weight = Measurement::new(
                &codes::BODY_WEIGHT,
                weight + normal(rng, 0.0, 0.01 * weight),
            );
            if set.height {
                vitals.push(height);
            }
            vitals.push(weight);
            if set.height && age >= 2.0 {
                let meters = height.value / 100.0;
                vitals.push(Measurement::new(
                    &codes::BMI,
                    weight.value / (meters * meters),
                ));
            }
        }
    }

    /// The labs an encounter orders, in the order a report lists them.
    fn lab_orders(
        &mut self,
        visit: Visit,
        follow_up_labs: &'static [&'static Measure],
        age: f64,
        effects: Effects,
    ) -> Vec<&'static Measure> {
        let rng = &mut self.rng;
        match visit {
            Visit::Wellness if age >= 18.0 => {
                let hba1c = match (effects.high_glucose, age >= 45.0) {
                    (true, _) => 0.9,
                    (false, true) => 0.3,
                    (false, false) => 0.1,
                };
                let hba1c = rng.random_bool(hba1c);
                let metabolic = rng.random_bool(0.3);
                let blood_count = rng.random_bool(0.25);
                codes::LABS
                    .into_iter()
                    .filter(|lab| {
                        if lab.loinc == codes::HBA1C.loinc {
                            hba1c
                        } else if lab.loinc == codes::HEMOGLOBIN.loinc {
                            blood_count
                        } else {
                            metabolic
                        }
                    })
                    .collect()
            }
            // Anemia screening around the first birthday.
            Visit::Wellness if (0.7..1.3).contains(&age) && rng.random_bool(0.8) => {
                vec![&codes::HEMOGLOBIN]
            }
            Visit::FollowUp(_) if rng.random_bool(0.5) => follow_up_labs.to_vec(),
            Visit::Acute(acute) if acute.setting == Setting::Inpatient => codes::LABS.to_vec(),
            Visit::Acute(acute) if acute.setting == Setting::Emergency && rng.random_bool(0.4) => {
                codes::EMERGENCY_LABS.to_vec()
            }
            _ => Vec::new(),
        }
    }

    fn blood_pressure(&mut self, body: &Body, age: f64, effects: Effects) -> (f64, f64) {
        let rng = &mut self.rng;
        let (systolic, diastolic) = if age < 18.0 {
            (90.0 + 1.4 * age, 52.0 + 1.1 * age)
        } else {
            let older = (age - 30.0).max(0.0);
            (112.0 + 0.35 * older, 72.0 + 0.1 * older)
        };
        let (raise_s, raise_d) = if effects.high_blood_pressure {
            (18.0, 9.0)
        } else {
            (0.0, 0.0)
        };
        let systolic = Measurement::new(
            &codes::SYSTOLIC,
            systolic + body.systolic_offset + raise_s + normal(rng, 0.0, 6.0),
        );
        let diastolic = Measurement::new(
            &codes::DIASTOLIC,
            (diastolic + body.diastolic_offset + raise_d + normal(rng, 0.0, 4.0))
                .min(systolic.value - 20.0),
        );
        (systolic.value, diastolic.value)
    }

    fn lab_value(&mut self, lab: &'static Measure, body: &Body, age: f64, effects: Effects) -> f64 {
        let rng = &mut self.rng;
        let hba1c = if effects.high_glucose {
            body.diabetic_hba1c
        } else {
            body.hba1c
        };
        match lab.loinc.code {
            // Hemoglobin A1c; glucose follows it.
            "4548-4" => hba1c + normal(rng, 0.0, 0.15),
            "2345-7" => 28.7 * hba1c - 58.7 + normal(rng, 0.0, 9.0),
            "2160-0" => {
                let base = if age < 18.0 {
                    0.3 + 0.035 * age
                } else {
                    body.creatinine + if age > 70.0 { 0.1 } else { 0.0 }
                };
                let base = if effects.high_creatinine {
                    base * 1.9
                } else {
                    base
                };
                base * (1.0 + normal(rng, 0.0, 0.05))
            }
            "2951-2" => body.sodium + normal(rng, 0.0, 1.2),
            "2823-3" => {
                body.potassium
                    + if effects.high_creatinine { 0.3 } else { 0.0 }
                    + normal(rng, 0.0, 0.2)
            }
            "718-7" => {
                let base = match (age, body.sex) {
                    (a, _) if a < 12.0 => 11.6 + 0.1 * a,
                    (a, Sex::Male) if a < 18.0 => 12.8 + 0.35 * (a - 12.0),
                    (_, Sex::Male) => 15.0,
                    (_, Sex::Female) => 13.4,
                };
                base + body.hemoglobin_offset * 0.8
                    - if effects.low_hemoglobin { 2.8 } else { 0.0 }
                    - if effects.high_creatinine { 1.0 } else { 0.0 }
                    + normal(rng, 0.0, 0.3)
            }
            _ => (lab.low + lab.high) / 2.0,
        }
    }

    fn immunize(&mut self, encounter: &mut EncounterPlan, vaccines: &mut [VaccineState]) {
        let start = encounter.start;
        let age_days = self.age_days(start);
        for (vaccine, state) in codes::VACCINES.iter().zip(vaccines.iter_mut()) {
            let given = match vaccine.schedule {
                Schedule::Doses(ages) => {
                    let mut given = false;
                    while let Some(&due) = ages.get(state.next_dose) {
                        if age_days < i64::from(due) {
                            break;
                        }
                        state.next_dose += 1;
                        // A dose due before the history starts was given before it.
                        if self.birth + i64::from(due) * DAY >= self.window_start {
                            given = true;
                            break;
                        }
                    }
                    given
                }
                Schedule::Yearly {
                    min_age_days,
                    probability,
                    not_before,
                } => {
                    let allowed = not_before
                        .and_then(|(y, m, d)| NaiveDate::from_ymd_opt(y, m, d))
                        .is_none_or(|date| start >= midnight(date));
                    age_days >= i64::from(min_age_days)
                        && allowed
                        && state
                            .last_given
                            .is_none_or(|last| start - last >= 300 * DAY)
                        && self.rng.random_bool(probability)
                }
                Schedule::Every {
                    first_age_days,
                    interval_days,
                } => {
                    let first = i64::from(first_age_days);
                    let interval = i64::from(interval_days);
                    if age_days < first {
                        false
                    } else {
                        let due =
                            self.birth + (first + (age_days - first) / interval * interval) * DAY;
                        due >= self.window_start && state.last_given.is_none_or(|last| last < due)
                    }
                }
            };
            if given {
                state.last_given = Some(start);
                encounter.immunizations.push(vaccine.cvx);
            }
        }
    }
}

/// What the walk through a patient's encounters carries from one to the next.
struct History {
    chronic: Vec<ChronicDraw>,
    penicillin_allergy: bool,
    vaccines: Vec<VaccineState>,
    /// Long-term prescriptions written so far.
    long_term_medications: usize,
}

impl History {
    /// What the patient's conditions do to measurements at `at`, diagnosed or not.
    fn effects_at(&self, at: i64) -> Effects {
        let mut effects = Effects::default();
        for draw in self.chronic.iter().filter(|d| d.onset <= at) {
            match draw.chronic.effect {
                Effect::None => {}
                Effect::HighBloodPressure => effects.high_blood_pressure = true,
                Effect::HighGlucose => effects.high_glucose = true,
                Effect::HighCreatinine => effects.high_creatinine = true,
                Effect::LowHemoglobin => effects.low_hemoglobin = true,
                Effect::LowOxygen => effects.low_oxygen = true,
                Effect::FastHeart => effects.fast_heart = true,
            }
        }
        effects
    }
}

/// The vital signs an encounter takes besides heart rate.
#[derive(Debug, Clone, Copy)]
struct VitalSet {
    blood_pressure: bool,
    breathing: bool,
    temperature: bool,
    oxygen: bool,
    weight: bool,
    /// Height and, from age 2, body mass index.
    height: bool,
}

#[derive(Debug, Default, Clone, Copy)]
struct VaccineState {
    next_dose: usize,
    last_given: Option<i64>,
}

impl Body {
    fn height(&self, age: f64) -> f64 {
        let shrink = if age > 60.0 { 0.1 * (age - 60.0) } else { 0.0 };
        growth(age, |row| row.1[self.sex_index()]) * (1.0 + 0.037 * self.height_z) - shrink
    }

    /// Weight at `age` for a patient `height` cm tall: growth charts for children, a body mass
    /// index that creeps up through adulthood for adults.
    fn weight(&self, age: f64, height: f64) -> f64 {
        if age < 18.0 {
            growth(age, |row| row.2[self.sex_index()]) * (1.0 + 0.13 * self.build_z)
        } else {
            let meters = height / 100.0;
            self.bmi(age) * meters * meters
        }
    }

    fn bmi(&self, age: f64) -> f64 {
        (21.5 + 4.5 * self.build_z + 0.2 * (age - 18.0).clamp(0.0, 35.0)).clamp(16.0, 55.0)
    }

    fn sex_index(&self) -> usize {
        match self.sex {
            Sex::Male => 0,
            Sex::Female => 1,
        }
    }
}

/// Linear interpolation in the growth table; adults keep the value at 18.
fn growth(age: f64, column: impl Fn(&(f64, [f64; 2], [f64; 2])) -> f64) -> f64 {
    let age = age.clamp(0.0, 18.0);
    let upper = GROWTH
        .partition_point(|row| row.0 < age)
        .min(GROWTH.len() - 1);
    if upper == 0 {
        return column(&GROWTH[0]);
    }
    let (a, b) = (&GROWTH[upper - 1], &GROWTH[upper]);
    let t = (age - a.0) / (b.0 - a.0);
    column(a) + t * (column(b) - column(a))
}

fn median_heart_rate(age: f64) -> f64 {
    match age {
        a if a < 1.0 => 130.0,
        a if a < 3.0 => 115.0,
        a if a < 6.0 => 100.0,
        a if a < 12.0 => 88.0,
        a if a < 18.0 => 78.0,
        _ => 72.0,
    }
}

fn median_respiratory_rate(age: f64) -> f64 {
    match age {
        a if a < 1.0 => 36.0,
        a if a < 3.0 => 28.0,
        a if a < 6.0 => 23.0,
        a if a < 12.0 => 20.0,
        a if a < 18.0 => 17.0,
        _ => 15.0,
    }
}

/// Index into the condition tables' age bands: 0-17, 18-44, 45-64, 65+.
fn age_band(age: f64) -> usize {
    match age {
        a if a < 18.0 => 0,
        a if a < 45.0 => 1,
        a if a < 65.0 => 2,
        _ => 3,
    }
}

/// Probability of dying within a year at this age (US life tables, rounded).
fn annual_mortality(age: f64) -> f64 {
    match age {
        a if a < 1.0 => 0.005,
        a if a < 45.0 => 0.001,
        a if a < 65.0 => 0.006,
        a if a < 75.0 => 0.02,
        a if a < 85.0 => 0.05,
        _ => 0.14,
    }
}

/// Sorts drafts by start and drops any that would overlap the one before or end after `end`.
fn without_overlaps(mut drafts: Vec<Draft>, end: i64) -> Vec<Draft> {
    drafts.sort_by_key(|d| d.start);
    let mut kept: Vec<Draft> = Vec::with_capacity(drafts.len());
    for draft in drafts {
        let free = kept
            .last()
            .is_none_or(|last| draft.start >= last.end + HOUR);
        if free && draft.end <= end {
            kept.push(draft);
        }
    }
    kept
}

/// The date of a time, as the plan's dates are compared.
pub fn date_of(at: i64) -> NaiveDate {
    chrono::DateTime::from_timestamp(at, 0)
        .expect("time is in range")
        .date_naive()
}

/// Years between two dates, as ages are counted.
pub fn years_between(from: NaiveDate, to: NaiveDate) -> i32 {
    let mut years = to.year() - from.year();
    if (to.month(), to.day()) < (from.month(), from.day()) {
        years -= 1;
    }
    years
}

#[cfg(test)]
mod tests {
    use super::*;

    fn context() -> PlanContext {
        let as_of = NaiveDate::from_ymd_opt(2025, 6, 30).unwrap();
        PlanContext::new(7, as_of, PoolShape::for_count(1_000_000))
    }

    #[test]
    fn plans_are_reproducible() {
        let context = context();
        for index in 0..50 {
            let a = plan_patient(&context, index);
            let b = plan_patient(&context, index);
            assert_eq!(format!("{a:?}"), format!("{b:?}"));
        }
    }

    #[test]
    fn encounters_are_ordered_and_inside_life() {
        let context = context();
        for index in 0..500 {
            let plan = plan_patient(&context, index);
            let birth = midnight(plan.birth_date);
            let end = plan.death.unwrap_or(context.as_of_end);
            let mut last_end = i64::MIN;
            for e in &plan.encounters {
                assert!(e.start >= last_end && e.start < e.end && e.end <= end);
                assert!(e.start > birth);
                last_end = e.end;
                for p in &e.procedures {
                    assert!(e.start <= p.start && p.start <= p.end && p.end <= e.end);
                }
            }
            for c in &plan.conditions {
                let e = &plan.encounters[c.encounter];
                assert!(birth <= c.onset && c.onset <= c.recorded && c.recorded <= e.end);
                assert!(c.abatement.is_none_or(|a| a > c.onset && a <= end));
            }
            assert!(
                plan.conditions
                    .windows(2)
                    .all(|w| w[0].encounter <= w[1].encounter)
            );
        }
    }

    #[test]
    fn measurements_are_plausible() {
        let context = context();
        for index in 0..500 {
            let plan = plan_patient(&context, index);
            for e in &plan.encounters {
                for m in e.vitals.iter().chain(&e.labs) {
                    assert!(
                        m.measure.low <= m.value && m.value <= m.measure.high,
                        "{} {}",
                        m.measure.loinc.code,
                        m.value
                    );
                }
                if let Some((systolic, diastolic)) = e.blood_pressure {
                    assert!(diastolic < systolic);
                }
            }
        }
    }

    #[test]
    fn adults_are_adult_sized_and_children_grow() {
        let context = context();
        for index in 0..500 {
            let plan = plan_patient(&context, index);
            for e in &plan.encounters {
                let age = years_between(plan.birth_date, date_of(e.start));
                for m in &e.vitals {
                    match (m.measure.loinc.code, age) {
                        ("8302-2", 20..) => assert!((140.0..205.0).contains(&m.value), "{m:?}"),
                        ("29463-7", 20..) => assert!((38.0..200.0).contains(&m.value), "{m:?}"),
                        ("8302-2", 0) => assert!(m.value < 90.0, "{m:?}"),
                        ("8302-2", 5) => assert!((95.0..130.0).contains(&m.value), "{m:?}"),
                        ("29463-7", 0) => assert!(m.value < 14.0, "{m:?}"),
                        _ => {}
                    }
                }
            }
        }
    }

    #[test]
    fn diabetics_have_high_hba1c() {
        let context = context();
        let (mut diabetic, mut other) = (Vec::new(), Vec::new());
        for index in 0..3000 {
            let plan = plan_patient(&context, index);
            let has_diabetes = plan.conditions.iter().any(|c| c.snomed.code == "44054006");
            for e in &plan.encounters {
                for m in e.labs.iter().filter(|m| m.measure.loinc.code == "4548-4") {
                    if has_diabetes
                        && e.start
                            >= plan
                                .conditions
                                .iter()
                                .find(|c| c.snomed.code == "44054006")
                                .unwrap()
                                .onset
                    {
                        diabetic.push(m.value);
                    } else if !has_diabetes {
                        other.push(m.value);
                    }
                }
            }
        }
        let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
        assert!(!diabetic.is_empty() && !other.is_empty());
        assert!(mean(&diabetic) > 7.0, "{}", mean(&diabetic));
        assert!(mean(&other) < 5.8, "{}", mean(&other));
    }

    #[test]
    fn penicillin_allergy_means_no_penicillins() {
        let context = context();
        let mut checked = 0;
        for index in 0..5000 {
            let plan = plan_patient(&context, index);
            if !plan.allergies.iter().any(|a| a.allergy.penicillin) {
                continue;
            }
            checked += 1;
            for e in &plan.encounters {
                assert!(e.medications.iter().all(|m| !m.medication.penicillin));
            }
        }
        assert!(checked > 0);
    }

    #[test]
    fn growth_interpolates() {
        assert_eq!(growth(0.0, |r| r.1[0]), 49.9);
        assert!((growth(0.75, |r| r.1[0]) - (67.6 + 75.7) / 2.0).abs() < 1e-9);
        assert_eq!(growth(40.0, |r| r.1[1]), 163.2);
    }
}
