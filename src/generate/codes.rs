//! The clinical vocabulary, as data: code systems, codes with their displays, UCUM units and
//! plausible ranges, and what each condition brings with it. Add a row to extend it.

pub const SNOMED: &str = "http://snomed.info/sct";
pub const LOINC: &str = "http://loinc.org";
pub const RXNORM: &str = "http://www.nlm.nih.gov/research/umls/rxnorm";
pub const CVX: &str = "http://hl7.org/fhir/sid/cvx";
pub const UCUM: &str = "http://unitsofmeasure.org";
pub const NPI: &str = "http://hl7.org/fhir/sid/us-npi";
pub const NUCC: &str = "http://nucc.org/provider-taxonomy";
pub const ACT_CODE: &str = "http://terminology.hl7.org/CodeSystem/v3-ActCode";
pub const OBSERVATION_CATEGORY: &str = "http://terminology.hl7.org/CodeSystem/observation-category";
pub const DIAGNOSTIC_SERVICE: &str = "http://terminology.hl7.org/CodeSystem/v2-0074";
pub const CONDITION_CLINICAL: &str = "http://terminology.hl7.org/CodeSystem/condition-clinical";
pub const CONDITION_VERIFICATION: &str =
    "http://terminology.hl7.org/CodeSystem/condition-ver-status";
pub const CONDITION_CATEGORY: &str = "http://terminology.hl7.org/CodeSystem/condition-category";
pub const ALLERGY_CLINICAL: &str =
    "http://terminology.hl7.org/CodeSystem/allergyintolerance-clinical";
pub const ALLERGY_VERIFICATION: &str =
    "http://terminology.hl7.org/CodeSystem/allergyintolerance-verification";
pub const MEDICATION_REQUEST_CATEGORY: &str =
    "http://terminology.hl7.org/CodeSystem/medicationrequest-category";
pub const PARTICIPATION_TYPE: &str = "http://terminology.hl7.org/CodeSystem/v3-ParticipationType";
pub const DISCHARGE_DISPOSITION: &str =
    "http://terminology.hl7.org/CodeSystem/discharge-disposition";
pub const MARITAL_STATUS: &str = "http://terminology.hl7.org/CodeSystem/v3-MaritalStatus";
pub const ORGANIZATION_TYPE: &str = "http://terminology.hl7.org/CodeSystem/organization-type";
pub const PRACTITIONER_ROLE: &str = "http://terminology.hl7.org/CodeSystem/practitioner-role";
/// CDC Race & Ethnicity code system, as US Core's race and ethnicity extensions use it.
pub const RACE_ETHNICITY: &str = "urn:oid:2.16.840.1.113883.6.238";
pub const LANGUAGE: &str = "urn:ietf:bcp:47";
pub const US_CORE_RACE: &str = "http://hl7.org/fhir/us/core/StructureDefinition/us-core-race";
pub const US_CORE_ETHNICITY: &str =
    "http://hl7.org/fhir/us/core/StructureDefinition/us-core-ethnicity";
pub const US_CORE_BIRTH_SEX: &str =
    "http://hl7.org/fhir/us/core/StructureDefinition/us-core-birthsex";

/// A code and its display, in a system the table it sits in implies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Concept {
    pub code: &'static str,
    pub display: &'static str,
}

const fn concept(code: &'static str, display: &'static str) -> Concept {
    Concept { code, display }
}

/// A LOINC-coded quantity: its UCUM unit, the range a plausible value stays in, and how many
/// decimals it is reported with.
#[derive(Debug, PartialEq)]
pub struct Measure {
    pub loinc: Concept,
    /// A second LOINC code the observation also carries (pulse oximetry for US Core).
    pub also: Option<Concept>,
    pub unit: &'static str,
    pub low: f64,
    pub high: f64,
    pub decimals: u8,
}

const fn measure(
    code: &'static str,
    display: &'static str,
    unit: &'static str,
    low: f64,
    high: f64,
    decimals: u8,
) -> Measure {
    Measure {
        loinc: concept(code, display),
        also: None,
        unit,
        low,
        high,
        decimals,
    }
}

// Vital signs.
pub const BLOOD_PRESSURE: Concept =
    concept("85354-9", "Blood pressure panel with all children optional");
pub const SYSTOLIC: Measure = measure(
    "8480-6",
    "Systolic blood pressure",
    "mm[Hg]",
    60.0,
    220.0,
    0,
);
pub const DIASTOLIC: Measure = measure(
    "8462-4",
    "Diastolic blood pressure",
    "mm[Hg]",
    30.0,
    130.0,
    0,
);
pub const HEART_RATE: Measure = measure("8867-4", "Heart rate", "/min", 40.0, 190.0, 0);
pub const RESPIRATORY_RATE: Measure = measure("9279-1", "Respiratory rate", "/min", 8.0, 60.0, 0);
pub const BODY_TEMPERATURE: Measure = measure("8310-5", "Body temperature", "Cel", 35.0, 41.0, 1);
pub const OXYGEN_SATURATION: Measure = Measure {
    also: Some(concept("2708-6", "Oxygen saturation in Arterial blood")),
    ..measure(
        "59408-5",
        "Oxygen saturation in Arterial blood by Pulse oximetry",
        "%",
        80.0,
        100.0,
        0,
    )
};
pub const BODY_HEIGHT: Measure = measure("8302-2", "Body height", "cm", 40.0, 215.0, 1);
pub const BODY_WEIGHT: Measure = measure("29463-7", "Body weight", "kg", 1.5, 250.0, 1);
pub const BMI: Measure = measure(
    "39156-5",
    "Body mass index (BMI) [Ratio]",
    "kg/m2",
    10.0,
    70.0,
    1,
);

// Laboratory.
pub const HBA1C: Measure = measure(
    "4548-4",
    "Hemoglobin A1c/Hemoglobin.total in Blood",
    "%",
    4.0,
    14.0,
    1,
);
pub const GLUCOSE: Measure = measure(
    "2345-7",
    "Glucose [Mass/volume] in Serum or Plasma",
    "mg/dL",
    55.0,
    400.0,
    0,
);
pub const CREATININE: Measure = measure(
    "2160-0",
    "Creatinine [Mass/volume] in Serum or Plasma",
    "mg/dL",
    0.2,
    6.0,
    2,
);
pub const SODIUM: Measure = measure(
    "2951-2",
    "Sodium [Moles/volume] in Serum or Plasma",
    "mmol/L",
    125.0,
    150.0,
    0,
);
pub const POTASSIUM: Measure = measure(
    "2823-3",
    "Potassium [Moles/volume] in Serum or Plasma",
    "mmol/L",
    3.0,
    6.0,
    1,
);
pub const HEMOGLOBIN: Measure = measure(
    "718-7",
    "Hemoglobin [Mass/volume] in Blood",
    "g/dL",
    7.0,
    19.0,
    1,
);

/// Every lab, in the order a full panel reports them.
pub const LABS: [&Measure; 6] = [
    &HBA1C,
    &GLUCOSE,
    &CREATININE,
    &SODIUM,
    &POTASSIUM,
    &HEMOGLOBIN,
];
/// What an emergency department draws.
pub const EMERGENCY_LABS: [&Measure; 5] = [&GLUCOSE, &CREATININE, &SODIUM, &POTASSIUM, &HEMOGLOBIN];
pub const LAB_REPORT: Concept = concept("11502-2", "Laboratory report");

// Encounter types (SNOMED CT).
pub const WELL_CHILD_VISIT: Concept = concept("410620009", "Well child visit (procedure)");
pub const GENERAL_EXAMINATION: Concept =
    concept("162673000", "General examination of patient (procedure)");
pub const FOLLOW_UP_ENCOUNTER: Concept = concept("390906007", "Follow-up encounter (procedure)");
pub const SYMPTOM_ENCOUNTER: Concept = concept("185345009", "Encounter for symptom (procedure)");
pub const EMERGENCY_ADMISSION: Concept =
    concept("50849002", "Emergency room admission (procedure)");
pub const HOSPITAL_ADMISSION: Concept = concept("32485007", "Hospital admission (procedure)");

/// A drug (RxNorm) and how it is taken.
#[derive(Debug, PartialEq)]
pub struct Medication {
    pub rxnorm: Concept,
    pub dosage: &'static str,
    /// Length of a course in days; 0 for a long-term medication.
    pub course_days: u32,
    /// A penicillin, which a patient allergic to penicillin must not get.
    pub penicillin: bool,
}

const fn long_term(code: &'static str, display: &'static str, dosage: &'static str) -> Medication {
    Medication {
        rxnorm: concept(code, display),
        dosage,
        course_days: 0,
        penicillin: false,
    }
}

const fn course(
    code: &'static str,
    display: &'static str,
    dosage: &'static str,
    course_days: u32,
) -> Medication {
    Medication {
        rxnorm: concept(code, display),
        dosage,
        course_days,
        penicillin: false,
    }
}

pub const LISINOPRIL: Medication = long_term(
    "314076",
    "lisinopril 10 MG Oral Tablet",
    "Take 1 tablet by mouth once daily",
);
pub const AMLODIPINE: Medication = long_term(
    "197361",
    "amlodipine 5 MG Oral Tablet",
    "Take 1 tablet by mouth once daily",
);
pub const HYDROCHLOROTHIAZIDE: Medication = long_term(
    "310798",
    "hydrochlorothiazide 25 MG Oral Tablet",
    "Take 1 tablet by mouth every morning",
);
pub const METFORMIN: Medication = long_term(
    "860975",
    "24 HR metformin hydrochloride 500 MG Extended Release Oral Tablet",
    "Take 1 tablet by mouth once daily with the evening meal",
);
pub const ATORVASTATIN: Medication = long_term(
    "617312",
    "atorvastatin 10 MG Oral Tablet",
    "Take 1 tablet by mouth once daily",
);
pub const ALBUTEROL: Medication = long_term(
    "745679",
    "200 ACTUAT albuterol 0.09 MG/ACTUAT Metered Dose Inhaler",
    "Inhale 2 puffs every 4 to 6 hours as needed for shortness of breath",
);
pub const FLUTICASONE: Medication = long_term(
    "895994",
    "120 ACTUAT fluticasone propionate 0.044 MG/ACTUAT Metered Dose Inhaler",
    "Inhale 2 puffs twice daily",
);
pub const SERTRALINE: Medication = long_term(
    "312938",
    "sertraline 100 MG Oral Tablet",
    "Take 1 tablet by mouth once daily",
);
pub const LEVOTHYROXINE: Medication = long_term(
    "966222",
    "levothyroxine sodium 0.075 MG Oral Tablet",
    "Take 1 tablet by mouth every morning on an empty stomach",
);
pub const WARFARIN: Medication = long_term(
    "855332",
    "warfarin sodium 5 MG Oral Tablet",
    "Take 1 tablet by mouth once daily in the evening",
);
pub const METOPROLOL: Medication = long_term(
    "866412",
    "24 HR metoprolol succinate 100 MG Extended Release Oral Tablet",
    "Take 1 tablet by mouth once daily",
);
pub const FUROSEMIDE: Medication = long_term(
    "313988",
    "furosemide 40 MG Oral Tablet",
    "Take 1 tablet by mouth every morning",
);
pub const FERROUS_SULFATE: Medication = long_term(
    "310325",
    "ferrous sulfate 325 MG Oral Tablet",
    "Take 1 tablet by mouth once daily",
);
pub const NAPROXEN: Medication = long_term(
    "849574",
    "naproxen sodium 220 MG Oral Tablet",
    "Take 1 tablet by mouth twice daily with food as needed for pain",
);
pub const ASPIRIN: Medication = long_term(
    "243670",
    "aspirin 81 MG Oral Tablet",
    "Take 1 tablet by mouth once daily",
);
pub const AMOXICILLIN: Medication = Medication {
    penicillin: true,
    ..course(
        "308182",
        "amoxicillin 250 MG Oral Capsule",
        "Take 2 capsules by mouth every 12 hours for 10 days",
        10,
    )
};
pub const PENICILLIN_V: Medication = Medication {
    penicillin: true,
    ..course(
        "834061",
        "penicillin V potassium 250 MG Oral Tablet",
        "Take 1 tablet by mouth 4 times daily for 10 days",
        10,
    )
};
pub const AZITHROMYCIN: Medication = course(
    "308460",
    "azithromycin 250 MG Oral Tablet",
    "Take 2 tablets on day 1, then 1 tablet daily for 4 days",
    5,
);
pub const NITROFURANTOIN: Medication = course(
    "1648755",
    "nitrofurantoin, macrocrystals 25 MG / nitrofurantoin, monohydrate 75 MG Oral Capsule",
    "Take 1 capsule by mouth every 12 hours for 5 days",
    5,
);
pub const IBUPROFEN: Medication = course(
    "310965",
    "ibuprofen 200 MG Oral Tablet",
    "Take 2 tablets by mouth every 6 hours as needed for pain",
    14,
);
pub const ACETAMINOPHEN: Medication = course(
    "313782",
    "acetaminophen 325 MG Oral Tablet",
    "Take 2 tablets by mouth every 6 hours as needed for fever or pain",
    7,
);

/// What a condition does to the measurements of a patient who has it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Effect {
    None,
    HighBloodPressure,
    HighGlucose,
    HighCreatinine,
    LowHemoglobin,
    LowOxygen,
    FastHeart,
}

/// A long-term condition: how common it is, when it can start, how it is treated and followed.
#[derive(Debug)]
pub struct Chronic {
    pub snomed: Concept,
    /// Share of men who have it by age band (0-17, 18-44, 45-64, 65+).
    pub prevalence: [f64; 4],
    /// Multiplier for women.
    pub female_factor: f64,
    pub min_onset_years: u32,
    /// First-line treatment first; later ones are added less often.
    pub medications: &'static [Medication],
    pub effect: Effect,
    pub follow_ups_per_year: f64,
    pub follow_up_labs: &'static [&'static Measure],
    pub follow_up_procedure: Option<Concept>,
}

pub const CHRONIC: &[Chronic] = &[
    Chronic {
        snomed: concept(
            "38341003",
            "Hypertensive disorder, systemic arterial (disorder)",
        ),
        prevalence: [0.01, 0.12, 0.38, 0.62],
        female_factor: 0.9,
        min_onset_years: 18,
        medications: &[LISINOPRIL, AMLODIPINE, HYDROCHLOROTHIAZIDE],
        effect: Effect::HighBloodPressure,
        follow_ups_per_year: 1.0,
        follow_up_labs: &[&CREATININE, &SODIUM, &POTASSIUM],
        follow_up_procedure: None,
    },
    Chronic {
        snomed: concept("44054006", "Diabetes mellitus type 2 (disorder)"),
        prevalence: [0.003, 0.04, 0.15, 0.26],
        female_factor: 0.9,
        min_onset_years: 20,
        medications: &[METFORMIN],
        effect: Effect::HighGlucose,
        follow_ups_per_year: 2.0,
        follow_up_labs: &[&HBA1C, &GLUCOSE, &CREATININE],
        follow_up_procedure: None,
    },
    Chronic {
        snomed: concept("55822004", "Hyperlipidemia (disorder)"),
        prevalence: [0.0, 0.08, 0.3, 0.45],
        female_factor: 0.9,
        min_onset_years: 25,
        medications: &[ATORVASTATIN],
        effect: Effect::None,
        follow_ups_per_year: 0.5,
        follow_up_labs: &[],
        follow_up_procedure: None,
    },
    Chronic {
        snomed: concept("195967001", "Asthma (disorder)"),
        prevalence: [0.07, 0.07, 0.08, 0.07],
        female_factor: 1.2,
        min_onset_years: 2,
        medications: &[ALBUTEROL, FLUTICASONE],
        effect: Effect::None,
        follow_ups_per_year: 0.7,
        follow_up_labs: &[],
        follow_up_procedure: Some(concept("127783003", "Spirometry (procedure)")),
    },
    Chronic {
        snomed: concept("13645005", "Chronic obstructive lung disease (disorder)"),
        prevalence: [0.0, 0.01, 0.07, 0.12],
        female_factor: 0.9,
        min_onset_years: 40,
        medications: &[ALBUTEROL, FLUTICASONE],
        effect: Effect::LowOxygen,
        follow_ups_per_year: 1.0,
        follow_up_labs: &[],
        follow_up_procedure: Some(concept("127783003", "Spirometry (procedure)")),
    },
    Chronic {
        snomed: concept("35489007", "Depressive disorder (disorder)"),
        prevalence: [0.02, 0.07, 0.06, 0.05],
        female_factor: 1.7,
        min_onset_years: 12,
        medications: &[SERTRALINE],
        effect: Effect::None,
        follow_ups_per_year: 1.0,
        follow_up_labs: &[],
        follow_up_procedure: Some(concept("171207006", "Depression screening (procedure)")),
    },
    Chronic {
        snomed: concept("40930008", "Hypothyroidism (disorder)"),
        prevalence: [0.001, 0.01, 0.02, 0.04],
        female_factor: 4.0,
        min_onset_years: 10,
        medications: &[LEVOTHYROXINE],
        effect: Effect::None,
        follow_ups_per_year: 0.5,
        follow_up_labs: &[],
        follow_up_procedure: None,
    },
    Chronic {
        snomed: concept("49436004", "Atrial fibrillation (disorder)"),
        prevalence: [0.0, 0.002, 0.02, 0.1],
        female_factor: 0.8,
        min_onset_years: 40,
        medications: &[WARFARIN, METOPROLOL],
        effect: Effect::FastHeart,
        follow_ups_per_year: 1.5,
        follow_up_labs: &[],
        follow_up_procedure: Some(concept(
            "29303009",
            "Electrocardiographic procedure (procedure)",
        )),
    },
    Chronic {
        snomed: concept("84114007", "Heart failure (disorder)"),
        prevalence: [0.0, 0.002, 0.015, 0.07],
        female_factor: 0.8,
        min_onset_years: 40,
        medications: &[FUROSEMIDE, METOPROLOL, LISINOPRIL],
        effect: Effect::LowOxygen,
        follow_ups_per_year: 2.0,
        follow_up_labs: &[&CREATININE, &SODIUM, &POTASSIUM],
        follow_up_procedure: None,
    },
    Chronic {
        snomed: concept("433144002", "Chronic kidney disease stage 3 (disorder)"),
        prevalence: [0.0, 0.01, 0.05, 0.15],
        female_factor: 1.1,
        min_onset_years: 30,
        medications: &[],
        effect: Effect::HighCreatinine,
        follow_ups_per_year: 1.0,
        follow_up_labs: &[&CREATININE, &SODIUM, &POTASSIUM, &HEMOGLOBIN],
        follow_up_procedure: None,
    },
    Chronic {
        snomed: concept("271737000", "Anemia (disorder)"),
        prevalence: [0.02, 0.02, 0.03, 0.08],
        female_factor: 2.0,
        min_onset_years: 1,
        medications: &[FERROUS_SULFATE],
        effect: Effect::LowHemoglobin,
        follow_ups_per_year: 0.5,
        follow_up_labs: &[&HEMOGLOBIN],
        follow_up_procedure: None,
    },
    Chronic {
        snomed: concept("239873007", "Osteoarthritis of knee (disorder)"),
        prevalence: [0.0, 0.02, 0.12, 0.25],
        female_factor: 1.3,
        min_onset_years: 35,
        medications: &[NAPROXEN],
        effect: Effect::None,
        follow_ups_per_year: 0.5,
        follow_up_labs: &[],
        follow_up_procedure: None,
    },
];

/// Recorded for adults whose BMI is 30 or more, rather than drawn by prevalence.
pub const OBESITY: Chronic = Chronic {
    snomed: concept("414916001", "Obesity (disorder)"),
    prevalence: [0.0; 4],
    female_factor: 1.0,
    min_onset_years: 18,
    medications: &[],
    effect: Effect::None,
    follow_ups_per_year: 0.0,
    follow_up_labs: &[],
    follow_up_procedure: None,
};

/// Where an acute problem is seen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Setting {
    Ambulatory,
    Emergency,
    Inpatient,
}

/// A short-lived problem: how often it happens, where it is seen, how it is treated.
#[derive(Debug)]
pub struct Acute {
    pub snomed: Concept,
    pub setting: Setting,
    /// Episodes per person-year for men by age band (0-17, 18-44, 45-64, 65+).
    pub rate_per_year: [f64; 4],
    pub female_factor: f64,
    /// The first day it can happen, for diseases that did not always exist.
    pub not_before: Option<(i32, u32, u32)>,
    pub lasts_days: (u32, u32),
    pub fever: bool,
    pub low_oxygen: bool,
    pub medication: Option<&'static Medication>,
    /// What a patient allergic to penicillin gets instead.
    pub penicillin_alternative: Option<&'static Medication>,
    pub procedures: &'static [Concept],
    /// Length of a hospital stay, for inpatient problems.
    pub stay_days: (u32, u32),
}

const CHEST_X_RAY: Concept = concept("399208008", "Plain chest X-ray (procedure)");

pub const ACUTE: &[Acute] = &[
    Acute {
        snomed: concept("444814009", "Viral sinusitis (disorder)"),
        setting: Setting::Ambulatory,
        rate_per_year: [0.08, 0.1, 0.1, 0.08],
        female_factor: 1.2,
        not_before: None,
        lasts_days: (7, 21),
        fever: false,
        low_oxygen: false,
        medication: Some(&ACETAMINOPHEN),
        penicillin_alternative: None,
        procedures: &[],
        stay_days: (0, 0),
    },
    Acute {
        snomed: concept("195662009", "Acute viral pharyngitis (disorder)"),
        setting: Setting::Ambulatory,
        rate_per_year: [0.12, 0.06, 0.04, 0.03],
        female_factor: 1.0,
        not_before: None,
        lasts_days: (5, 10),
        fever: true,
        low_oxygen: false,
        medication: Some(&ACETAMINOPHEN),
        penicillin_alternative: None,
        procedures: &[],
        stay_days: (0, 0),
    },
    Acute {
        snomed: concept("43878008", "Streptococcal sore throat (disorder)"),
        setting: Setting::Ambulatory,
        rate_per_year: [0.07, 0.02, 0.01, 0.01],
        female_factor: 1.0,
        not_before: None,
        lasts_days: (7, 10),
        fever: true,
        low_oxygen: false,
        medication: Some(&PENICILLIN_V),
        penicillin_alternative: Some(&AZITHROMYCIN),
        procedures: &[concept("117015009", "Throat culture (procedure)")],
        stay_days: (0, 0),
    },
    Acute {
        snomed: concept("65363002", "Otitis media (disorder)"),
        setting: Setting::Ambulatory,
        rate_per_year: [0.2, 0.01, 0.01, 0.01],
        female_factor: 1.0,
        not_before: None,
        lasts_days: (7, 14),
        fever: true,
        low_oxygen: false,
        medication: Some(&AMOXICILLIN),
        penicillin_alternative: Some(&AZITHROMYCIN),
        procedures: &[],
        stay_days: (0, 0),
    },
    Acute {
        snomed: concept("10509002", "Acute bronchitis (disorder)"),
        setting: Setting::Ambulatory,
        rate_per_year: [0.05, 0.04, 0.05, 0.07],
        female_factor: 1.0,
        not_before: None,
        lasts_days: (10, 21),
        fever: true,
        low_oxygen: false,
        medication: Some(&ACETAMINOPHEN),
        penicillin_alternative: None,
        procedures: &[],
        stay_days: (0, 0),
    },
    Acute {
        snomed: concept("307426000", "Acute infective cystitis (disorder)"),
        setting: Setting::Ambulatory,
        rate_per_year: [0.002, 0.004, 0.005, 0.01],
        female_factor: 10.0,
        not_before: None,
        lasts_days: (3, 7),
        fever: false,
        low_oxygen: false,
        medication: Some(&NITROFURANTOIN),
        penicillin_alternative: None,
        procedures: &[],
        stay_days: (0, 0),
    },
    Acute {
        snomed: concept(
            "840539006",
            "Disease caused by severe acute respiratory syndrome coronavirus 2 (disorder)",
        ),
        setting: Setting::Ambulatory,
        rate_per_year: [0.02, 0.03, 0.03, 0.04],
        female_factor: 1.0,
        not_before: Some((2020, 3, 1)),
        lasts_days: (10, 21),
        fever: true,
        low_oxygen: false,
        medication: Some(&ACETAMINOPHEN),
        penicillin_alternative: None,
        procedures: &[],
        stay_days: (0, 0),
    },
    Acute {
        snomed: concept("44465007", "Sprain of ankle (disorder)"),
        setting: Setting::Emergency,
        rate_per_year: [0.02, 0.025, 0.012, 0.008],
        female_factor: 1.0,
        not_before: None,
        lasts_days: (14, 42),
        fever: false,
        low_oxygen: false,
        medication: Some(&IBUPROFEN),
        penicillin_alternative: None,
        procedures: &[],
        stay_days: (0, 0),
    },
    Acute {
        snomed: concept("65966004", "Fracture of forearm (disorder)"),
        setting: Setting::Emergency,
        rate_per_year: [0.012, 0.004, 0.004, 0.01],
        female_factor: 1.0,
        not_before: None,
        lasts_days: (42, 84),
        fever: false,
        low_oxygen: false,
        medication: Some(&ACETAMINOPHEN),
        penicillin_alternative: None,
        procedures: &[
            concept("168537006", "Plain radiography (procedure)"),
            concept("274474001", "Bone immobilization (procedure)"),
        ],
        stay_days: (0, 0),
    },
    Acute {
        snomed: concept(
            "62106007",
            "Concussion with no loss of consciousness (disorder)",
        ),
        setting: Setting::Emergency,
        rate_per_year: [0.008, 0.004, 0.003, 0.005],
        female_factor: 1.0,
        not_before: None,
        lasts_days: (14, 42),
        fever: false,
        low_oxygen: false,
        medication: Some(&ACETAMINOPHEN),
        penicillin_alternative: None,
        procedures: &[concept(
            "303653007",
            "Computed tomography of head (procedure)",
        )],
        stay_days: (0, 0),
    },
    Acute {
        snomed: concept("29857009", "Chest pain (finding)"),
        setting: Setting::Emergency,
        rate_per_year: [0.0, 0.008, 0.015, 0.025],
        female_factor: 0.9,
        not_before: None,
        lasts_days: (1, 3),
        fever: false,
        low_oxygen: false,
        medication: None,
        penicillin_alternative: None,
        procedures: &[
            concept("29303009", "Electrocardiographic procedure (procedure)"),
            CHEST_X_RAY,
        ],
        stay_days: (0, 0),
    },
    Acute {
        snomed: concept("233604007", "Pneumonia (disorder)"),
        setting: Setting::Inpatient,
        rate_per_year: [0.004, 0.002, 0.004, 0.02],
        female_factor: 1.0,
        not_before: None,
        lasts_days: (14, 28),
        fever: true,
        low_oxygen: true,
        medication: Some(&AZITHROMYCIN),
        penicillin_alternative: None,
        procedures: &[CHEST_X_RAY],
        stay_days: (2, 6),
    },
    Acute {
        snomed: concept("22298006", "Myocardial infarction (disorder)"),
        setting: Setting::Inpatient,
        rate_per_year: [0.0, 0.0005, 0.003, 0.008],
        female_factor: 0.6,
        not_before: None,
        lasts_days: (28, 56),
        fever: false,
        low_oxygen: false,
        medication: Some(&ASPIRIN),
        penicillin_alternative: None,
        procedures: &[
            concept("29303009", "Electrocardiographic procedure (procedure)"),
            concept(
                "36969009",
                "Placement of stent in coronary artery (procedure)",
            ),
        ],
        stay_days: (3, 6),
    },
];

// Procedures done at wellness visits.
pub const HEALTH_ASSESSMENT: Concept = concept(
    "710824005",
    "Assessment of health and social care needs (procedure)",
);
pub const DEPRESSION_SCREENING: Concept = concept("171207006", "Depression screening (procedure)");
pub const MEDICATION_RECONCILIATION: Concept =
    concept("430193006", "Medication reconciliation (procedure)");
pub const COLONOSCOPY: Concept = concept("73761001", "Colonoscopy (procedure)");
pub const SCREENING_MAMMOGRAPHY: Concept = concept("24623002", "Screening mammography (procedure)");

/// When a vaccine is due.
#[derive(Debug)]
pub enum Schedule {
    /// One dose at each of these ages, in days.
    Doses(&'static [u32]),
    /// A dose each year from this age, taken with this probability, from this date on.
    Yearly {
        min_age_days: u32,
        probability: f64,
        not_before: Option<(i32, u32, u32)>,
    },
    /// A booster every `interval_days` from `first_age_days`.
    Every {
        first_age_days: u32,
        interval_days: u32,
    },
}

#[derive(Debug)]
pub struct Vaccine {
    pub cvx: Concept,
    pub schedule: Schedule,
}

const YEAR: u32 = 365;

/// The routine US schedule, simplified.
pub const VACCINES: &[Vaccine] = &[
    Vaccine {
        cvx: concept("08", "Hep B, adolescent or pediatric"),
        schedule: Schedule::Doses(&[0, 30, 180]),
    },
    Vaccine {
        cvx: concept("116", "rotavirus, pentavalent"),
        schedule: Schedule::Doses(&[60, 120, 180]),
    },
    Vaccine {
        cvx: concept("20", "DTaP"),
        schedule: Schedule::Doses(&[60, 120, 180, 456, 4 * YEAR]),
    },
    Vaccine {
        cvx: concept("49", "Hib (PRP-OMP)"),
        schedule: Schedule::Doses(&[60, 120, YEAR]),
    },
    Vaccine {
        cvx: concept("133", "Pneumococcal conjugate PCV 13"),
        schedule: Schedule::Doses(&[60, 120, 180, YEAR]),
    },
    Vaccine {
        cvx: concept("10", "IPV"),
        schedule: Schedule::Doses(&[60, 120, 180, 4 * YEAR]),
    },
    Vaccine {
        cvx: concept("03", "MMR"),
        schedule: Schedule::Doses(&[YEAR, 4 * YEAR]),
    },
    Vaccine {
        cvx: concept("21", "varicella"),
        schedule: Schedule::Doses(&[YEAR, 4 * YEAR]),
    },
    Vaccine {
        cvx: concept("83", "Hep A, ped/adol, 2 dose"),
        schedule: Schedule::Doses(&[YEAR, 2 * YEAR]),
    },
    Vaccine {
        cvx: concept("115", "Tdap"),
        schedule: Schedule::Doses(&[11 * YEAR]),
    },
    Vaccine {
        cvx: concept("165", "HPV9"),
        schedule: Schedule::Doses(&[11 * YEAR, 11 * YEAR + 180]),
    },
    Vaccine {
        cvx: concept("114", "meningococcal MCV4P"),
        schedule: Schedule::Doses(&[11 * YEAR, 16 * YEAR]),
    },
    Vaccine {
        cvx: concept("113", "Td (adult) preservative free"),
        schedule: Schedule::Every {
            first_age_days: 21 * YEAR,
            interval_days: 10 * YEAR,
        },
    },
    Vaccine {
        cvx: concept("187", "zoster vaccine recombinant"),
        schedule: Schedule::Doses(&[50 * YEAR, 50 * YEAR + 60]),
    },
    Vaccine {
        cvx: concept("33", "pneumococcal polysaccharide vaccine, 23 valent"),
        schedule: Schedule::Doses(&[65 * YEAR]),
    },
    Vaccine {
        cvx: concept("140", "Influenza, seasonal, injectable, preservative free"),
        schedule: Schedule::Yearly {
            min_age_days: 180,
            probability: 0.55,
            not_before: None,
        },
    },
    Vaccine {
        cvx: concept(
            "208",
            "SARS-COV-2 (COVID-19) vaccine, mRNA, spike protein, LNP, preservative free, 30 mcg/0.3mL dose",
        ),
        schedule: Schedule::Yearly {
            min_age_days: 12 * YEAR,
            probability: 0.35,
            not_before: Some((2020, 12, 14)),
        },
    },
];

/// AllergyIntolerance.category (a required binding).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AllergyCategory {
    Food,
    Medication,
    Environment,
}

impl AllergyCategory {
    pub fn code(self) -> &'static str {
        match self {
            AllergyCategory::Food => "food",
            AllergyCategory::Medication => "medication",
            AllergyCategory::Environment => "environment",
        }
    }
}

#[derive(Debug)]
pub struct Allergy {
    pub substance: Concept,
    pub category: AllergyCategory,
    pub prevalence: f64,
    pub min_onset_years: u32,
    pub reactions: &'static [Concept],
    /// Share of allergic patients for whom a reaction could be life-threatening.
    pub high_criticality: f64,
    /// An allergy to penicillins: such patients get no penicillin.
    pub penicillin: bool,
}

const HIVES: Concept = concept("247472004", "Wheal (finding)");
const ANAPHYLAXIS: Concept = concept("39579001", "Anaphylaxis (disorder)");
const RASH: Concept = concept("271807003", "Eruption of skin (disorder)");
const URTICARIA: Concept = concept("126485001", "Urticaria (disorder)");
const RHINITIS: Concept = concept("61582004", "Allergic rhinitis (disorder)");
const SNEEZING: Concept = concept("76067001", "Sneezing (finding)");

pub const ALLERGIES: &[Allergy] = &[
    Allergy {
        substance: concept("762952008", "Peanut (substance)"),
        category: AllergyCategory::Food,
        prevalence: 0.02,
        min_onset_years: 1,
        reactions: &[HIVES, ANAPHYLAXIS],
        high_criticality: 0.4,
        penicillin: false,
    },
    Allergy {
        substance: concept("442571000124108", "Tree nut (substance)"),
        category: AllergyCategory::Food,
        prevalence: 0.01,
        min_onset_years: 1,
        reactions: &[HIVES, ANAPHYLAXIS],
        high_criticality: 0.3,
        penicillin: false,
    },
    Allergy {
        substance: concept("735029006", "Shellfish (substance)"),
        category: AllergyCategory::Food,
        prevalence: 0.02,
        min_onset_years: 3,
        reactions: &[HIVES, URTICARIA],
        high_criticality: 0.2,
        penicillin: false,
    },
    Allergy {
        substance: concept("102263004", "Eggs (edible) (substance)"),
        category: AllergyCategory::Food,
        prevalence: 0.01,
        min_onset_years: 1,
        reactions: &[HIVES, RASH],
        high_criticality: 0.1,
        penicillin: false,
    },
    Allergy {
        substance: concept("764146007", "Penicillin (substance)"),
        category: AllergyCategory::Medication,
        prevalence: 0.08,
        min_onset_years: 1,
        reactions: &[RASH, URTICARIA, ANAPHYLAXIS],
        high_criticality: 0.1,
        penicillin: true,
    },
    Allergy {
        substance: concept("387207008", "Ibuprofen (substance)"),
        category: AllergyCategory::Medication,
        prevalence: 0.01,
        min_onset_years: 2,
        reactions: &[URTICARIA, RASH],
        high_criticality: 0.05,
        penicillin: false,
    },
    Allergy {
        substance: concept("256277009", "Grass pollen (substance)"),
        category: AllergyCategory::Environment,
        prevalence: 0.08,
        min_onset_years: 3,
        reactions: &[RHINITIS, SNEEZING],
        high_criticality: 0.0,
        penicillin: false,
    },
    Allergy {
        substance: concept("260147004", "House dust mite (substance)"),
        category: AllergyCategory::Environment,
        prevalence: 0.05,
        min_onset_years: 2,
        reactions: &[RHINITIS, SNEEZING],
        high_criticality: 0.0,
        penicillin: false,
    },
    Allergy {
        substance: concept("264287008", "Animal dander (substance)"),
        category: AllergyCategory::Environment,
        prevalence: 0.04,
        min_onset_years: 2,
        reactions: &[RHINITIS, SNEEZING, HIVES],
        high_criticality: 0.0,
        penicillin: false,
    },
    Allergy {
        substance: concept("288328004", "Bee venom (substance)"),
        category: AllergyCategory::Environment,
        prevalence: 0.01,
        min_onset_years: 3,
        reactions: &[URTICARIA, ANAPHYLAXIS],
        high_criticality: 0.5,
        penicillin: false,
    },
    Allergy {
        substance: concept("111088007", "Latex (substance)"),
        category: AllergyCategory::Environment,
        prevalence: 0.01,
        min_onset_years: 5,
        reactions: &[RASH, URTICARIA],
        high_criticality: 0.1,
        penicillin: false,
    },
];

/// OMB race categories with their share of the US population.
pub const RACES: &[(Concept, f64)] = &[
    (concept("2106-3", "White"), 0.77),
    (concept("2054-5", "Black or African American"), 0.14),
    (ASIAN, 0.07),
    (concept("1002-5", "American Indian or Alaska Native"), 0.015),
    (
        concept("2076-8", "Native Hawaiian or Other Pacific Islander"),
        0.005,
    ),
];
pub const ASIAN: Concept = concept("2028-9", "Asian");
pub const HISPANIC: Concept = concept("2135-2", "Hispanic or Latino");
pub const NOT_HISPANIC: Concept = concept("2186-5", "Not Hispanic or Latino");
pub const HISPANIC_SHARE: f64 = 0.19;

/// Languages (BCP 47) a patient communicates in.
pub const ENGLISH: Concept = concept("en-US", "English (United States)");
pub const SPANISH: Concept = concept("es", "Spanish");
pub const OTHER_LANGUAGES: &[Concept] = &[
    concept("zh", "Chinese"),
    concept("vi", "Vietnamese"),
    concept("fr", "French"),
    concept("ko", "Korean"),
    concept("de", "German"),
];

pub const MARRIED: Concept = concept("M", "Married");
pub const NEVER_MARRIED: Concept = concept("S", "Never Married");
pub const DIVORCED: Concept = concept("D", "Divorced");
pub const WIDOWED: Concept = concept("W", "Widowed");

/// NUCC specialties of the practitioner pool, in the order practitioners cycle through them.
pub const SPECIALTIES: [Concept; 4] = [
    concept("207Q00000X", "Family Medicine"),
    concept("207R00000X", "Internal Medicine"),
    concept("208000000X", "Pediatrics"),
    concept("207P00000X", "Emergency Medicine"),
];

/// The kinds of organization in the pool, and the words their names end with.
pub const ORGANIZATION_KINDS: &[&str] = &[
    "Medical Center",
    "Community Hospital",
    "Family Health Center",
    "Primary Care Clinic",
    "General Hospital",
];

// Billing, care plans, documents, imaging and devices.

pub const CPT: &str = "http://www.ama-assn.org/go/cpt";
pub const HCPCS: &str = "https://www.cms.gov/Medicare/Coding/HCPCSReleaseCodeSets";
pub const CLAIM_TYPE: &str = "http://terminology.hl7.org/CodeSystem/claim-type";
pub const PROCESS_PRIORITY: &str = "http://terminology.hl7.org/CodeSystem/processpriority";
pub const ADJUDICATION: &str = "http://terminology.hl7.org/CodeSystem/adjudication";
pub const SUBSCRIBER_RELATIONSHIP: &str =
    "http://terminology.hl7.org/CodeSystem/subscriber-relationship";
/// Source of Payment Typology, the coverage types US Core names.
pub const PAYMENT_TYPOLOGY: &str = "https://nahdo.org/sopt";
pub const CARE_PLAN_CATEGORY: &str = "http://hl7.org/fhir/us/core/CodeSystem/careplan-category";
pub const DOCUMENT_CATEGORY: &str =
    "http://hl7.org/fhir/us/core/CodeSystem/us-core-documentreference-category";
pub const FORMAT_CODE: &str = "http://ihe.net/fhir/ihe.formatcode.fhir/CodeSystem/formatcode";
pub const PROVENANCE_PARTICIPANT: &str =
    "http://terminology.hl7.org/CodeSystem/provenance-participant-type";
pub const ROLE_CODE: &str = "http://terminology.hl7.org/CodeSystem/v3-RoleCode";
pub const DICOM: &str = "http://dicom.nema.org/resources/ontology/DCM";
pub const US_DOLLAR: &str = "USD";

/// An insurer: its name, the payment typology of its plans, the share of a bill it pays (in
/// percent), and who it covers.
#[derive(Debug)]
pub struct Payer {
    pub name: &'static str,
    pub typology: Concept,
    pub pays_percent: i64,
    pub kind: PayerKind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PayerKind {
    Medicare,
    Medicaid,
    Commercial,
}

const MEDICARE_TYPOLOGY: Concept = concept("1", "MEDICARE");
const MEDICAID_TYPOLOGY: Concept = concept("2", "MEDICAID");
const PRIVATE_TYPOLOGY: Concept = concept("5", "PRIVATE HEALTH INSURANCE");

/// The insurers of the shared record, in pool order: Medicare and Medicaid first.
pub const PAYERS: &[Payer] = &[
    Payer {
        name: "Medicare",
        typology: MEDICARE_TYPOLOGY,
        pays_percent: 80,
        kind: PayerKind::Medicare,
    },
    Payer {
        name: "Medicaid",
        typology: MEDICAID_TYPOLOGY,
        pays_percent: 100,
        kind: PayerKind::Medicaid,
    },
    Payer {
        name: "Blue Cross Blue Shield",
        typology: PRIVATE_TYPOLOGY,
        pays_percent: 85,
        kind: PayerKind::Commercial,
    },
    Payer {
        name: "UnitedHealthcare",
        typology: PRIVATE_TYPOLOGY,
        pays_percent: 80,
        kind: PayerKind::Commercial,
    },
    Payer {
        name: "Aetna",
        typology: PRIVATE_TYPOLOGY,
        pays_percent: 80,
        kind: PayerKind::Commercial,
    },
    Payer {
        name: "Cigna Health",
        typology: PRIVATE_TYPOLOGY,
        pays_percent: 90,
        kind: PayerKind::Commercial,
    },
    Payer {
        name: "Humana",
        typology: PRIVATE_TYPOLOGY,
        pays_percent: 80,
        kind: PayerKind::Commercial,
    },
];

/// Every drug the generator prescribes: the shared record's Medications, in this order.
pub const FORMULARY: &[&Medication] = &[
    &LISINOPRIL,
    &AMLODIPINE,
    &HYDROCHLOROTHIAZIDE,
    &METFORMIN,
    &ATORVASTATIN,
    &ALBUTEROL,
    &FLUTICASONE,
    &SERTRALINE,
    &LEVOTHYROXINE,
    &WARFARIN,
    &METOPROLOL,
    &FUROSEMIDE,
    &FERROUS_SULFATE,
    &NAPROXEN,
    &ASPIRIN,
    &AMOXICILLIN,
    &PENICILLIN_V,
    &AZITHROMYCIN,
    &NITROFURANTOIN,
    &IBUPROFEN,
    &ACETAMINOPHEN,
];

/// A billed service: its CPT or HCPCS code and its price in cents.
#[derive(Debug, Clone, Copy)]
pub struct Charge {
    pub system: &'static str,
    pub code: Concept,
    pub cents: i64,
}

const fn cpt(code: &'static str, display: &'static str, cents: i64) -> Charge {
    Charge {
        system: CPT,
        code: concept(code, display),
        cents,
    }
}

/// The visit itself, by encounter kind and age (preventive visits are billed by age band).
pub fn visit_charge(kind: Concept, age_years: i32) -> Charge {
    match (kind.code, age_years) {
        ("410620009", 0) => cpt("99391", "Preventive visit, established, infant", 14_500),
        ("410620009", 1..=4) => cpt("99392", "Preventive visit, established, age 1-4", 15_500),
        ("410620009", 5..=11) => cpt("99393", "Preventive visit, established, age 5-11", 15_500),
        ("410620009", _) => cpt("99394", "Preventive visit, established, age 12-17", 17_000),
        ("162673000", ..=39) => cpt("99395", "Preventive visit, established, age 18-39", 18_000),
        ("162673000", 40..=64) => cpt("99396", "Preventive visit, established, age 40-64", 19_500),
        ("162673000", _) => cpt("99397", "Preventive visit, established, age 65+", 21_000),
        ("50849002", _) => cpt("99284", "Emergency department visit, high severity", 52_000),
        ("32485007", _) => cpt("99223", "Initial hospital inpatient care, high", 38_000),
        _ => cpt("99213", "Office visit, established patient, low", 13_000),
    }
}

/// A procedure, by its SNOMED CT code.
pub fn procedure_charge(snomed: Concept) -> Charge {
    match snomed.code {
        "710824005" => cpt("96160", "Health risk assessment", 1_500),
        "171207006" => Charge {
            system: HCPCS,
            code: concept("G0444", "Annual depression screening, 5 to 15 minutes"),
            cents: 2_000,
        },
        "430193006" => cpt("1111F", "Discharge medications reconciled", 0),
        "73761001" => cpt("45378", "Colonoscopy, flexible, diagnostic", 110_000),
        "24623002" => cpt("77067", "Screening mammography, bilateral", 25_000),
        "127783003" => cpt("94010", "Spirometry", 4_500),
        "117015009" => cpt("87070", "Culture, bacterial, any other source", 2_500),
        "399208008" => cpt("71046", "Radiologic examination, chest; 2 views", 9_000),
        "168537006" => cpt("73090", "Radiologic examination; forearm, 2 views", 8_500),
        "274474001" => cpt(
            "29075",
            "Application, elbow to finger (short arm) cast",
            22_000,
        ),
        "303653007" => cpt(
            "70450",
            "Computed tomography, head or brain; without contrast",
            75_000,
        ),
        "29303009" => cpt(
            "93000",
            "Electrocardiogram, routine, with interpretation",
            6_000,
        ),
        "36969009" => cpt(
            "92928",
            "Percutaneous transcatheter placement of coronary stent",
            1_450_000,
        ),
        "65200003" => cpt("58300", "Insertion of intrauterine device", 35_000),
        _ => cpt(
            "99199",
            "Unlisted special service, procedure or report",
            10_000,
        ),
    }
}

/// A lab test, by the LOINC code of its result.
pub fn lab_charge(loinc: Concept) -> Charge {
    match loinc.code {
        "4548-4" => cpt("83036", "Hemoglobin; glycosylated (A1C)", 4_000),
        "2345-7" => cpt("82947", "Glucose; quantitative, blood", 1_500),
        "2160-0" => cpt("82565", "Creatinine; blood", 1_800),
        "2951-2" => cpt("84295", "Sodium; serum, plasma or whole blood", 1_700),
        "2823-3" => cpt("84132", "Potassium; serum, plasma or whole blood", 1_700),
        _ => cpt("85018", "Blood count; hemoglobin", 1_200),
    }
}

/// Administering a vaccine.
pub const VACCINE_ADMINISTRATION: Charge = cpt("90471", "Immunization administration", 2_500);

/// A drug's price in cents: long-term drugs a month's supply, courses the whole course.
pub fn drug_cents(medication: &Medication) -> i64 {
    let rxcui: i64 = medication.rxnorm.code.parse().unwrap_or(0);
    1_000 + rxcui % 7_000
}

/// Procedures that leave a device in the body: the procedure, the device type (SNOMED CT), and
/// the GS1 company prefix of its UDI.
pub const IMPLANTS: &[(&str, Concept, &str)] = &[
    (
        "36969009",
        concept("705643001", "Coronary artery stent (physical object)"),
        "0884521",
    ),
    (
        "65200003",
        concept(
            "268460000",
            "Intrauterine contraceptive device (physical object)",
        ),
        "0030012",
    ),
];

pub const IUD_INSERTION: Concept = concept(
    "65200003",
    "Insertion of intrauterine contraceptive device (procedure)",
);

/// Imaging procedures: the procedure, the DICOM modality, the body site (SNOMED CT).
pub const IMAGING: &[(&str, Concept, Concept)] = &[
    (
        "399208008",
        concept("DX", "Digital Radiography"),
        concept("51185008", "Thoracic structure (body structure)"),
    ),
    (
        "168537006",
        concept("CR", "Computed Radiography"),
        concept("14975008", "Forearm structure (body structure)"),
    ),
    (
        "303653007",
        concept("CT", "Computed Tomography"),
        concept("69536005", "Head structure (body structure)"),
    ),
    (
        "24623002",
        concept("MG", "Mammography"),
        concept("76752008", "Breast structure (body structure)"),
    ),
];

/// The implant a procedure leaves, if any.
pub fn implant_of(procedure: Concept) -> Option<&'static (&'static str, Concept, &'static str)> {
    IMPLANTS.iter().find(|(code, _, _)| *code == procedure.code)
}

/// How a procedure is imaged, if it is imaging.
pub fn imaging_of(procedure: Concept) -> Option<&'static (&'static str, Concept, Concept)> {
    IMAGING.iter().find(|(code, _, _)| *code == procedure.code)
}

/// The LOINC document type of an encounter's note.
pub fn note_type(kind: Concept) -> Concept {
    match kind.code {
        "410620009" | "162673000" => concept("34117-2", "History and physical note"),
        "50849002" => concept("34111-5", "Emergency department Note"),
        "32485007" => concept("18842-5", "Discharge summary"),
        _ => concept("11506-3", "Progress note"),
    }
}

pub const CLINICAL_NOTE: Concept = concept("clinical-note", "Clinical Note");
pub const MIME_TYPE_SUFFICIENT: Concept = concept(
    "urn:ihe:iti:xds:2017:mimeTypeSufficient",
    "mimeType Sufficient",
);

/// A care plan for a long-term condition (SNOMED CT): its kind and its activities.
pub const CHRONIC_CARE_PLAN: Concept =
    concept("736271009", "Outpatient care plan (record artifact)");
pub const CARE_ACTIVITIES: [Concept; 3] = [
    concept("409063005", "Counseling (procedure)"),
    concept("226234005", "Healthy diet (regime/therapy)"),
    concept("229065009", "Exercise therapy (regime/therapy)"),
];

/// Care team roles (SNOMED CT), as Synthea and US Core examples use them.
pub const PATIENT_ROLE: Concept = concept("116154003", "Patient");
pub const PROFESSIONAL_ROLE: Concept = concept("223366009", "Healthcare professional (occupation)");
pub const SERVICES_ROLE: Concept = concept("224891009", "Healthcare services (qualifier value)");

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn measures_have_ranges_and_units() {
        let all = [
            &SYSTOLIC,
            &DIASTOLIC,
            &HEART_RATE,
            &RESPIRATORY_RATE,
            &BODY_TEMPERATURE,
            &OXYGEN_SATURATION,
            &BODY_HEIGHT,
            &BODY_WEIGHT,
            &BMI,
        ]
        .into_iter()
        .chain(LABS);
        for m in all {
            assert!(m.low < m.high, "{}", m.loinc.code);
            assert!(!m.unit.is_empty() && !m.loinc.display.is_empty());
        }
    }

    #[test]
    fn every_procedure_is_billed_with_its_own_code() {
        let mut procedures: Vec<Concept> = vec![
            HEALTH_ASSESSMENT,
            DEPRESSION_SCREENING,
            MEDICATION_RECONCILIATION,
            COLONOSCOPY,
            SCREENING_MAMMOGRAPHY,
            IUD_INSERTION,
        ];
        procedures.extend(CHRONIC.iter().filter_map(|c| c.follow_up_procedure));
        procedures.extend(ACUTE.iter().flat_map(|a| a.procedures.iter().copied()));
        for p in procedures {
            assert_ne!(procedure_charge(p).code.code, "99199", "{}", p.display);
        }
        let implants = IMPLANTS.iter().map(|(code, _, _)| *code);
        for code in implants.chain(IMAGING.iter().map(|(code, _, _)| *code)) {
            assert_ne!(
                procedure_charge(concept(code, "")).code.code,
                "99199",
                "{code}"
            );
        }
    }

    #[test]
    fn tables_are_consistent() {
        for c in CHRONIC {
            assert!(c.prevalence.iter().all(|p| (0.0..1.0).contains(p)));
            assert!(c.medications.iter().all(|m| m.course_days == 0));
        }
        for a in ACUTE {
            assert!(a.lasts_days.0 <= a.lasts_days.1);
            assert_eq!(a.setting == Setting::Inpatient, a.stay_days.1 > 0);
            if let Some(alternative) = a.penicillin_alternative {
                assert!(!alternative.penicillin);
            }
        }
        for v in VACCINES {
            if let Schedule::Doses(ages) = v.schedule {
                assert!(ages.windows(2).all(|w| w[0] < w[1]), "{}", v.cvx.code);
            }
        }
        let share: f64 = RACES.iter().map(|(_, p)| p).sum();
        assert!((share - 1.0).abs() < 1e-9);
    }
}
