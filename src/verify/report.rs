//! What verify found, merged from its workers, and how it is shown: a text report on stderr,
//! and with `--json` one object on stdout.

use std::collections::BTreeMap;
use std::ops::AddAssign;
use std::time::Duration;

use serde::Serialize;

use crate::store::stats::{RequestStats, round3};

/// How many missing, duplicated or unchecked resources are named; the counts cover them all.
pub(super) const NAMED: usize = 100;

/// One worker's tally; workers' tallies merge with `+=`.
#[derive(Debug, Default)]
pub struct Findings {
    pub stats: RequestStats,
    checked: u64,
    missing: Named<String>,
    duplicated: Named<Duplicate>,
    /// Lookups the store did not answer usefully: nothing can be said about those resources.
    unchecked: Named<String>,
    /// References in resources found that name nothing in the store: `Patient?... -> Type/id`.
    dangling: Named<String>,
    found_per_type: BTreeMap<String, Result<u64, String>>,
}

/// The first [`NAMED`] of something, and how many there were in all.
#[derive(Debug, Serialize)]
pub(super) struct Named<T> {
    pub(super) count: u64,
    pub(super) first: Vec<T>,
}

impl<T> Default for Named<T> {
    fn default() -> Self {
        Self {
            count: 0,
            first: Vec::new(),
        }
    }
}

impl<T> Named<T> {
    pub(super) fn push(&mut self, item: T) {
        self.count += 1;
        self.name(item);
    }

    /// Names one of those already counted, while there is room.
    pub(super) fn name(&mut self, item: T) {
        if self.first.len() < NAMED {
            self.first.push(item);
        }
    }

    /// Whether as many are named as will be.
    pub(super) fn all_named(&self) -> bool {
        self.first.len() as u64 >= self.count.min(NAMED as u64)
    }

    fn merge(&mut self, other: Self) {
        self.count += other.count;
        let room = NAMED.saturating_sub(self.first.len());
        self.first.extend(other.first.into_iter().take(room));
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Duplicate {
    pub resource: String,
    pub found: u64,
}

impl Findings {
    /// `resource` (as the report names it) was found `times` times, or could not be looked up.
    pub fn record_lookup(&mut self, resource: String, times: Result<u64, String>) {
        match times {
            Ok(0) => self.missing.push(resource),
            Ok(1) => {}
            Ok(found) => self.duplicated.push(Duplicate { resource, found }),
            Err(reason) => {
                self.unchecked.push(format!("{resource}: {reason}"));
                return;
            }
        }
        self.checked += 1;
    }

    /// `resource` (as the report names it) refers to `target`, which the store does not hold.
    pub fn record_dangling(&mut self, resource: &str, target: &str) {
        self.dangling.push(format!("{resource} refers to {target}"));
    }

    pub fn record_count(&mut self, resource_type: String, total: Result<u64, String>) {
        self.found_per_type.insert(resource_type, total);
    }
}

impl AddAssign for Findings {
    fn add_assign(&mut self, other: Self) {
        self.stats += &other.stats;
        self.checked += other.checked;
        self.missing.merge(other.missing);
        self.duplicated.merge(other.duplicated);
        self.unchecked.merge(other.unchecked);
        self.dangling.merge(other.dangling);
        self.found_per_type.extend(other.found_per_type);
    }
}

/// How a type's count in the store compares with the data set's.
#[derive(Debug, Serialize)]
pub struct TypeCount {
    pub expected: u64,
    /// `None` when the store could not be asked.
    pub found: Option<u64>,
}

/// The run's circumstances, for the report.
pub struct Context {
    pub target: String,
    pub seed: Option<u64>,
    pub sample: Option<u64>,
    pub exact_counts: bool,
    pub invalid_input: u64,
    pub elapsed: Duration,
    /// Whether every check of the data set was handed out (not when the run stopped early).
    pub walked_all: bool,
    pub interrupted: bool,
    pub fatal_error: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct Report {
    /// The store holds exactly what the load should have written (see the module's doc).
    pub ok: bool,
    target: String,
    seed: Option<u64>,
    /// Resources in the data set.
    expected: u64,
    /// Resources looked up and answered for (all of them, or `--sample`).
    checked: u64,
    sample: Option<u64>,
    types: BTreeMap<String, TypeCount>,
    /// Types the store holds fewer of (or, with `--exact-counts`, a different number of) than
    /// the data set.
    count_mismatches: Vec<String>,
    missing: Named<String>,
    duplicated: Named<Duplicate>,
    unchecked: Named<String>,
    /// References that name nothing in the store.
    dangling: Named<String>,
    /// Errors from the `_summary=count` queries, by type.
    count_errors: BTreeMap<String, String>,
    invalid_input: u64,
    requests: u64,
    elapsed_seconds: f64,
    walked_all: bool,
    interrupted: bool,
    fatal_error: Option<String>,
}

impl Report {
    pub fn new(expected: &BTreeMap<String, u64>, findings: Findings, context: Context) -> Self {
        let mut found_per_type = findings.found_per_type;
        let mut count_errors = BTreeMap::new();
        let mut count_mismatches = Vec::new();
        let types: BTreeMap<String, TypeCount> = expected
            .iter()
            .map(|(resource_type, &expected)| {
                let found = match found_per_type.remove(resource_type) {
                    Some(Ok(found)) => Some(found),
                    Some(Err(reason)) => {
                        count_errors.insert(resource_type.clone(), reason);
                        None
                    }
                    None => None,
                };
                let wrong = match found {
                    Some(found) if context.exact_counts => found != expected,
                    Some(found) => found < expected,
                    None => true,
                };
                if wrong {
                    count_mismatches.push(resource_type.clone());
                }
                (resource_type.clone(), TypeCount { expected, found })
            })
            .collect();
        let ok = context.walked_all
            && !context.interrupted
            && context.fatal_error.is_none()
            && count_mismatches.is_empty()
            && findings.missing.count == 0
            && findings.duplicated.count == 0
            && findings.unchecked.count == 0
            && findings.dangling.count == 0;
        Self {
            ok,
            target: context.target,
            seed: context.seed,
            expected: expected.values().sum(),
            checked: findings.checked,
            sample: context.sample,
            types,
            count_mismatches,
            missing: findings.missing,
            duplicated: findings.duplicated,
            unchecked: findings.unchecked,
            dangling: findings.dangling,
            count_errors,
            invalid_input: context.invalid_input,
            requests: findings.stats.requests,
            elapsed_seconds: round3(context.elapsed.as_secs_f64()),
            walked_all: context.walked_all,
            interrupted: context.interrupted,
            fatal_error: context.fatal_error,
        }
    }

    pub fn print_text(&self) {
        crate::logs::to_stderr(&self.text());
    }

    fn text(&self) -> String {
        let mut out = String::new();
        let looked_up = match self.sample {
            Some(_) => format!("a sample of {} looked up", self.checked),
            None => format!("{} looked up", self.checked),
        };
        out += &format!(
            "verify {}: {} resources expected, {looked_up} by identifier\n",
            self.target, self.expected
        );
        out += &format!("  {:<24} {:>10} {:>10}\n", "type", "expected", "found");
        for (resource_type, count) in &self.types {
            let found = count
                .found
                .map_or_else(|| "?".to_owned(), |found| found.to_string());
            let note = match count.found {
                Some(found) if found < count.expected => {
                    format!("  {} fewer", count.expected - found)
                }
                Some(found) if found > count.expected => {
                    format!("  {} more", found - count.expected)
                }
                _ => String::new(),
            };
            out += &format!(
                "  {resource_type:<24} {:>10} {found:>10}{note}\n",
                count.expected
            );
        }
        for (resource_type, reason) in &self.count_errors {
            out += &format!("cannot count {resource_type}: {reason}\n");
        }
        name_some(&mut out, "missing", &self.missing, |r| r.clone());
        name_some(&mut out, "duplicated", &self.duplicated, |d| {
            format!("{} (found {} times)", d.resource, d.found)
        });
        name_some(&mut out, "not checked", &self.unchecked, |r| r.clone());
        name_some(&mut out, "referring to nothing", &self.dangling, |r| {
            r.clone()
        });
        if self.invalid_input > 0 {
            out += &format!(
                "{} input items are not FHIR resources (a load skips them)\n",
                self.invalid_input
            );
        }
        if let Some(reason) = &self.fatal_error {
            out += &format!("stopped: {reason}\n");
        }
        out += &self.verdict();
        out.push('\n');
        out
    }

    fn verdict(&self) -> String {
        if self.ok {
            return "OK: every resource looked up is stored once and refers only to what is \
                    stored, and no type has fewer than the data set"
                .to_owned();
        }
        let mut problems = Vec::new();
        if self.missing.count > 0 {
            problems.push(format!("{} missing", self.missing.count));
        }
        if self.duplicated.count > 0 {
            problems.push(format!("{} duplicated", self.duplicated.count));
        }
        if self.unchecked.count > 0 {
            problems.push(format!("{} not checked", self.unchecked.count));
        }
        if self.dangling.count > 0 {
            problems.push(format!("{} references to nothing", self.dangling.count));
        }
        if !self.count_mismatches.is_empty() {
            problems.push(format!(
                "counts differ for {}",
                self.count_mismatches.join(", ")
            ));
        }
        if self.interrupted {
            problems.push("interrupted".to_owned());
        } else if self.fatal_error.is_some() || !self.walked_all {
            problems.push("stopped before the end".to_owned());
        }
        format!("FAILED: {}", problems.join("; "))
    }
}

pub(super) fn name_some<T>(
    out: &mut String,
    what: &str,
    named: &Named<T>,
    show: impl Fn(&T) -> String,
) {
    if named.count == 0 {
        return;
    }
    *out += &format!("{what} ({}):\n", named.count);
    for item in &named.first {
        *out += &format!("  {}\n", show(item));
    }
    if named.count > named.first.len() as u64 {
        *out += &format!(
            "  ... and {} more\n",
            named.count - named.first.len() as u64
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn context(exact_counts: bool) -> Context {
        Context {
            target: "store".into(),
            seed: Some(1),
            sample: None,
            exact_counts,
            invalid_input: 0,
            elapsed: Duration::from_secs(1),
            walked_all: true,
            interrupted: false,
            fatal_error: None,
        }
    }

    #[test]
    fn more_of_a_type_passes_unless_counts_must_be_exact() {
        let expected = BTreeMap::from([("Patient".to_owned(), 2)]);
        let findings = || {
            let mut findings = Findings::default();
            findings.record_lookup("Patient?identifier=s|1".into(), Ok(1));
            findings.record_count("Patient".into(), Ok(3));
            findings
        };
        let report = Report::new(&expected, findings(), context(false));
        assert!(report.ok);
        assert!(report.text().contains("1 more"), "{}", report.text());
        let report = Report::new(&expected, findings(), context(true));
        assert!(!report.ok);
        assert_eq!(report.count_mismatches, ["Patient"]);
    }

    #[test]
    fn merged_findings_name_the_first_and_count_all() {
        let mut all = Findings::default();
        for worker in 0..3 {
            let mut findings = Findings::default();
            for i in 0..60 {
                findings.record_lookup(format!("Patient?identifier=s|{worker}-{i}"), Ok(0));
            }
            findings.record_lookup("Encounter?identifier=s|e".into(), Ok(2));
            findings.record_lookup("Observation/o".into(), Err("HTTP 500: boom".into()));
            all += findings;
        }
        let expected = BTreeMap::from([("Patient".to_owned(), 180)]);
        all.record_count("Patient".into(), Ok(0));
        let report = Report::new(&expected, all, context(false));
        assert!(!report.ok);
        assert_eq!(
            (report.missing.count, report.missing.first.len()),
            (180, NAMED)
        );
        assert_eq!(report.duplicated.count, 3);
        assert_eq!(report.checked, 183);
        assert_eq!(report.unchecked.count, 3);
        let text = report.text();
        assert!(text.contains("... and 80 more"), "{text}");
        assert!(
            text.contains(
                "FAILED: 180 missing; 3 duplicated; 3 not checked; counts differ for Patient"
            ),
            "{text}"
        );
    }
}
