//! `--shard`: which disjoint part of the data set this run makes, from the flag or from the
//! environment a scheduler (Kubernetes Indexed Job, Cloud Run jobs, Cloud Batch) sets.

use std::fmt;

use crate::exit::usage;

/// Variables that carry the task index, in the order they are consulted for `auto/N`.
const INDEX_VARIABLES: [&str; 3] = [
    "JOB_COMPLETION_INDEX",
    "CLOUD_RUN_TASK_INDEX",
    "BATCH_TASK_INDEX",
];

/// Index and count pairs, in the order they are consulted for `auto`. Kubernetes does not tell
/// a pod how many completions its job has, so `JOB_COMPLETION_INDEX` needs `auto/N`.
const INDEX_AND_COUNT_VARIABLES: [(&str, &str); 2] = [
    ("CLOUD_RUN_TASK_INDEX", "CLOUD_RUN_TASK_COUNT"),
    ("BATCH_TASK_INDEX", "BATCH_TASK_COUNT"),
];

/// Part `index` of `count` (zero-based) of a data set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    pub index: u32,
    pub count: u32,
}

impl Default for Shard {
    fn default() -> Self {
        Self::WHOLE
    }
}

impl fmt::Display for Shard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

impl Shard {
    /// The whole data set.
    pub const WHOLE: Shard = Shard { index: 0, count: 1 };

    /// Whether the patient with this index belongs to this shard.
    pub fn owns(&self, patient: u64) -> bool {
        patient % u64::from(self.count) == u64::from(self.index)
    }

    /// Parses `--shard` (`I/N`, `auto/N` or `auto`), reading the scheduler's variables through
    /// `env` so that the process environment stays out of tests.
    pub fn parse(spec: &str, env: impl Fn(&str) -> Option<String>) -> anyhow::Result<Shard> {
        let spec = spec.trim();
        if spec.eq_ignore_ascii_case("auto") {
            return Self::from_index_and_count(&env);
        }
        let Some((index, count)) = spec.split_once('/') else {
            return Err(malformed(spec));
        };
        let count: u32 = count.trim().parse().map_err(|_| malformed(spec))?;
        if count == 0 {
            return Err(usage(format!(
                "--shard {spec}: the number of shards must be at least 1"
            )));
        }
        let index = index.trim();
        let index = if index.eq_ignore_ascii_case("auto") {
            Self::index_from_env(&env, count)?
        } else {
            index.parse().map_err(|_| malformed(spec))?
        };
        Self::checked(index, count, spec)
    }

    fn index_from_env(env: &impl Fn(&str) -> Option<String>, count: u32) -> anyhow::Result<u32> {
        for variable in INDEX_VARIABLES {
            if let Some(value) = env(variable) {
                return parse_variable(variable, &value);
            }
        }
        Err(usage(format!(
            "--shard auto/{count}: no task index in the environment (looked for {}); \
             run under a scheduler that sets one, or write --shard I/{count}",
            INDEX_VARIABLES.join(", ")
        )))
    }

    fn from_index_and_count(env: &impl Fn(&str) -> Option<String>) -> anyhow::Result<Shard> {
        for (index_variable, count_variable) in INDEX_AND_COUNT_VARIABLES {
            let (Some(index), Some(count)) = (env(index_variable), env(count_variable)) else {
                continue;
            };
            let index = parse_variable(index_variable, &index)?;
            let count = parse_variable(count_variable, &count)?;
            if count == 0 {
                return Err(usage(format!(
                    "--shard auto: {count_variable} is 0; the number of shards must be at least 1"
                )));
            }
            let spec = format!("auto ({index_variable}={index}, {count_variable}={count})");
            return Self::checked(index, count, &spec);
        }
        let hint = if env("JOB_COMPLETION_INDEX").is_some() {
            "; JOB_COMPLETION_INDEX is set but carries no shard count: write --shard auto/N with N \
             the job's completions"
        } else {
            "; write --shard auto/N to take only the index from the environment, or --shard I/N"
        };
        Err(usage(format!(
            "--shard auto needs CLOUD_RUN_TASK_INDEX and CLOUD_RUN_TASK_COUNT, or BATCH_TASK_INDEX \
             and BATCH_TASK_COUNT, in the environment{hint}"
        )))
    }

    fn checked(index: u32, count: u32, spec: &str) -> anyhow::Result<Shard> {
        if index >= count {
            return Err(usage(format!(
                "--shard {spec}: index {index} is out of range; shards are numbered 0 to {}",
                count - 1
            )));
        }
        Ok(Shard { index, count })
    }
}

fn parse_variable(variable: &str, value: &str) -> anyhow::Result<u32> {
    value.trim().parse().map_err(|_| {
        usage(format!(
            "--shard: {variable}={value:?} is not a shard index or count (a non-negative integer)"
        ))
    })
}

fn malformed(spec: &str) -> anyhow::Error {
    usage(format!(
        "--shard {spec:?} is not a shard: write I/N (zero-based, e.g. 0/4), auto/N (index from the \
         scheduler's environment) or auto"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exit::UsageError;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let pairs: Vec<(String, String)> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |key| pairs.iter().find(|(k, _)| k == key).map(|(_, v)| v.clone())
    }

    fn parse(spec: &str, pairs: &[(&str, &str)]) -> anyhow::Result<Shard> {
        Shard::parse(spec, env(pairs))
    }

    fn usage_message(result: anyhow::Result<Shard>) -> String {
        let error = result.expect_err("expected a usage error");
        assert!(error.downcast_ref::<UsageError>().is_some(), "{error}");
        error.to_string()
    }

    #[test]
    fn explicit_index_and_count() {
        assert_eq!(parse("0/1", &[]).unwrap(), Shard::WHOLE);
        assert_eq!(parse("3/4", &[]).unwrap(), Shard { index: 3, count: 4 });
        assert_eq!(parse(" 2 / 5 ", &[]).unwrap(), Shard { index: 2, count: 5 });
        assert_eq!(parse("3/4", &[]).unwrap().to_string(), "3/4");
    }

    #[test]
    fn rejects_bad_specs_with_what_to_write() {
        for spec in ["", "3", "a/4", "1/b", "-1/4", "1/4/5", "1.5/4"] {
            let message = usage_message(parse(spec, &[]));
            assert!(message.contains("I/N"), "{spec}: {message}");
        }
        let message = usage_message(parse("4/4", &[]));
        assert!(message.contains("0 to 3"), "{message}");
        let message = usage_message(parse("0/0", &[]));
        assert!(message.contains("at least 1"), "{message}");
    }

    #[test]
    fn auto_with_count_reads_the_index_in_order() {
        let shard = parse("auto/8", &[("JOB_COMPLETION_INDEX", "5")]).unwrap();
        assert_eq!(shard, Shard { index: 5, count: 8 });
        let shard = parse("auto/8", &[("CLOUD_RUN_TASK_INDEX", "6")]).unwrap();
        assert_eq!(shard, Shard { index: 6, count: 8 });
        let shard = parse("AUTO/8", &[("BATCH_TASK_INDEX", "7")]).unwrap();
        assert_eq!(shard, Shard { index: 7, count: 8 });
        let both = [("BATCH_TASK_INDEX", "1"), ("JOB_COMPLETION_INDEX", "2")];
        assert_eq!(parse("auto/8", &both).unwrap().index, 2);
    }

    #[test]
    fn auto_with_count_errors() {
        let message = usage_message(parse("auto/8", &[]));
        assert!(message.contains("JOB_COMPLETION_INDEX"), "{message}");
        assert!(message.contains("--shard I/8"), "{message}");
        let message = usage_message(parse("auto/8", &[("JOB_COMPLETION_INDEX", "8")]));
        assert!(message.contains("out of range"), "{message}");
        let message = usage_message(parse("auto/8", &[("CLOUD_RUN_TASK_INDEX", "x")]));
        assert!(message.contains("CLOUD_RUN_TASK_INDEX"), "{message}");
    }

    #[test]
    fn auto_reads_index_and_count() {
        let cloud_run = [
            ("CLOUD_RUN_TASK_INDEX", "2"),
            ("CLOUD_RUN_TASK_COUNT", "10"),
        ];
        assert_eq!(
            parse("auto", &cloud_run).unwrap(),
            Shard {
                index: 2,
                count: 10
            }
        );
        let batch = [("BATCH_TASK_INDEX", "0"), ("BATCH_TASK_COUNT", "3")];
        assert_eq!(parse("auto", &batch).unwrap(), Shard { index: 0, count: 3 });
        // An index without its count is not enough.
        let partial = [("CLOUD_RUN_TASK_INDEX", "2"), ("BATCH_TASK_INDEX", "1")];
        assert!(parse("auto", &partial).is_err());
    }

    #[test]
    fn auto_errors() {
        let message = usage_message(parse("auto", &[]));
        assert!(message.contains("CLOUD_RUN_TASK_COUNT"), "{message}");
        let message = usage_message(parse("auto", &[("JOB_COMPLETION_INDEX", "1")]));
        assert!(message.contains("auto/N"), "{message}");
        let zero = [("BATCH_TASK_INDEX", "0"), ("BATCH_TASK_COUNT", "0")];
        assert!(usage_message(parse("auto", &zero)).contains("at least 1"));
        let over = [("BATCH_TASK_INDEX", "3"), ("BATCH_TASK_COUNT", "3")];
        assert!(usage_message(parse("auto", &over)).contains("out of range"));
    }

    #[test]
    fn owns_patients_round_robin() {
        let shard = Shard { index: 1, count: 3 };
        let owned: Vec<u64> = (0..10).filter(|&p| shard.owns(p)).collect();
        assert_eq!(owned, [1, 4, 7]);
        assert!((0..10).all(|p| Shard::WHOLE.owns(p)));
    }
}
