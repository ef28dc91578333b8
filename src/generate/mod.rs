//! The synthetic data generator. (Being written.)

use std::process::ExitCode;

use chrono::NaiveDate;

use crate::cli::{DataArgs, GenerateArgs};
use crate::fhir::Record;

/// Part `index` of `count` (zero-based) of a data set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    pub index: u32,
    pub count: u32,
}

#[derive(Debug, Clone)]
pub struct GeneratorConfig {
    pub seed: u64,
    pub as_of: NaiveDate,
    pub count: u64,
    pub shard: Shard,
}

impl GeneratorConfig {
    /// Validates the flags (shard syntax, scheduler environment) and picks a seed for `random`.
    pub fn from_args(data: &DataArgs) -> anyhow::Result<Self> {
        let _ = data;
        todo!()
    }
}

/// Yields the records of one shard in load order: the shared record first, then patients.
pub struct Generator {}

impl Generator {
    pub fn new(config: GeneratorConfig) -> Self {
        let _ = config;
        todo!()
    }

    /// The shared resources every patient of every shard may refer to.
    pub fn shared_record(&self) -> Record {
        todo!()
    }
}

impl Iterator for Generator {
    type Item = Record;
    fn next(&mut self) -> Option<Record> {
        todo!()
    }
}

pub async fn run(args: GenerateArgs) -> anyhow::Result<ExitCode> {
    let _ = args;
    todo!()
}
