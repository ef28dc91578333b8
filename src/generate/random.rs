//! Deterministic randomness: every patient and every shared resource has its own ChaCha stream
//! derived from (seed, purpose, index) alone, so any of them can be made without the others.

use rand::rngs::ChaCha8Rng;
use rand::{Rng, RngExt, SeedableRng};

/// What a stream is for. Distinct purposes get distinct keys, so their streams never overlap.
#[derive(Debug, Clone, Copy)]
pub enum Purpose {
    /// A patient's plan: life, encounters, values.
    Plan = 1,
    /// A patient's rendering: ids, names, address.
    Render = 2,
    Organization = 3,
    Practitioner = 4,
    PractitionerRole = 5,
    Location = 6,
    /// The insurers that Coverage names.
    Payer = 7,
    Medication = 8,
}

/// The stream for `purpose` and `index` (a patient or pool index) under `seed`.
pub fn stream(seed: u64, purpose: Purpose, index: u64) -> ChaCha8Rng {
    let mut state = seed ^ (purpose as u64).wrapping_mul(0xA076_1D64_78BD_642F);
    let mut key = [0u8; 32];
    for chunk in key.chunks_exact_mut(8) {
        chunk.copy_from_slice(&splitmix64(&mut state).to_le_bytes());
    }
    let mut rng = ChaCha8Rng::from_seed(key);
    rng.set_stream(index);
    rng
}

fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A random (version 4) UUID drawn from `rng`, as FHIR ids are written.
pub fn uuid(rng: &mut impl Rng) -> String {
    let mut text = uuid::Uuid::encode_buffer();
    uuid::Builder::from_random_bytes(rng.random())
        .into_uuid()
        .hyphenated()
        .encode_lower(&mut text)
        .to_owned()
}

/// A normally distributed value (Box-Muller).
pub fn normal(rng: &mut impl Rng, mean: f64, sd: f64) -> f64 {
    let u1 = 1.0 - rng.random::<f64>();
    let u2 = rng.random::<f64>();
    mean + sd * (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}

/// A uniform value in `[low, high]`, tolerating an empty range.
pub fn between(rng: &mut impl Rng, low: i64, high: i64) -> i64 {
    if high <= low {
        low
    } else {
        rng.random_range(low..=high)
    }
}

/// An index into `weights`, chosen in proportion to them.
pub fn weighted<T>(rng: &mut impl Rng, items: &[(T, f64)]) -> usize {
    let total: f64 = items.iter().map(|(_, w)| w).sum();
    let mut pick = rng.random::<f64>() * total;
    for (i, (_, w)) in items.iter().enumerate() {
        if pick < *w {
            return i;
        }
        pick -= w;
    }
    items.len() - 1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streams_are_reproducible_and_distinct() {
        let draw = |seed, purpose, index| stream(seed, purpose, index).random::<u64>();
        assert_eq!(draw(1, Purpose::Plan, 7), draw(1, Purpose::Plan, 7));
        assert_ne!(draw(1, Purpose::Plan, 7), draw(1, Purpose::Plan, 8));
        assert_ne!(draw(1, Purpose::Plan, 7), draw(2, Purpose::Plan, 7));
        assert_ne!(draw(1, Purpose::Plan, 7), draw(1, Purpose::Render, 7));
    }

    #[test]
    fn normal_has_the_right_moments() {
        let mut rng = stream(3, Purpose::Plan, 0);
        let samples: Vec<f64> = (0..20_000).map(|_| normal(&mut rng, 10.0, 2.0)).collect();
        let mean = samples.iter().sum::<f64>() / samples.len() as f64;
        let var = samples.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / samples.len() as f64;
        assert!((mean - 10.0).abs() < 0.1, "{mean}");
        assert!((var.sqrt() - 2.0).abs() < 0.1, "{var}");
    }

    #[test]
    fn uuids_are_version_4() {
        let mut rng = stream(1, Purpose::Render, 0);
        let id = uuid(&mut rng);
        assert_eq!(uuid::Uuid::parse_str(&id).unwrap().get_version_num(), 4);
    }
}
