//! The synthetic data generator: `--count` resources exactly, streamed record by record.
//!
//! The data set is a shared record (Organizations, Practitioners, PractitionerRoles) followed by
//! patient records. Each patient is planned from its own random stream (so any shard can plan it
//! without the others), counted, and rendered only by the shard that owns it; the last patient
//! is cut at its tail so that the total is exact. Records are in dependency order, so the cut
//! never leaves a dangling reference.
//!
//! `--types` keeps only some types (and those they refer to): patients are planned as without
//! it and counted and rendered by the resources kept, so a patient is the same data either way.

mod codes;
mod json;
mod names;
mod plan;
mod random;
mod render;
mod shard;
mod shared;
mod types;

#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::io::{self, BufWriter, Write};
use std::path::Path;
use std::process::ExitCode;

use anyhow::Context;
use chrono::{Datelike, NaiveDate};
use flate2::Compression;
use flate2::write::GzEncoder;

use crate::cli::{DataArgs, GenerateArgs, OutputFormat, SeedArg};
use crate::exit;
use crate::fhir::{Record, RecordKind, write_transaction_bundle};

pub use shard::Shard;
pub use types::{ResourceType, TypeSet};

use plan::{PlanContext, plan_patient};
use shared::{PoolShape, SharedPool};

#[derive(Debug, Clone)]
pub struct GeneratorConfig {
    pub seed: u64,
    pub as_of: NaiveDate,
    pub count: u64,
    pub shard: Shard,
    /// The types asked for; the generator adds the types they refer to.
    pub types: TypeSet,
    /// Decoded size of every note's attachment, when asked for.
    pub attachment_size: Option<usize>,
}

impl GeneratorConfig {
    /// Validates the flags (shard syntax, scheduler environment) and picks a seed for `random`.
    pub fn from_args(data: &DataArgs) -> anyhow::Result<Self> {
        Self::from_args_with_env(data, |name| std::env::var(name).ok())
    }

    /// [`GeneratorConfig::from_args`] with the environment read through `env`.
    pub fn from_args_with_env(
        data: &DataArgs,
        env: impl Fn(&str) -> Option<String>,
    ) -> anyhow::Result<Self> {
        let shard = match &data.shard {
            Some(spec) => Shard::parse(spec, env)?,
            None => Shard::WHOLE,
        };
        let as_of = data
            .as_of
            .unwrap_or_else(|| chrono::Utc::now().date_naive());
        if !(1900..=9999).contains(&as_of.year()) {
            return Err(exit::usage(format!(
                "--as-of {as_of}: use a date between 1900-01-01 and 9999-12-31"
            )));
        }
        let types = TypeSet::parse(&data.types)?;
        let closed = types.with_references();
        if !closed.has_patient_types() {
            let most = PoolShape::for_types(u64::MAX, closed).kept(closed);
            if data.count > most {
                return Err(exit::usage(format!(
                    "--types {closed} makes at most {most} resources (the shared pool is \
                     that big); lower --count or add a patient type such as Patient"
                )));
            }
        }
        let attachment_size = match data.attachment_size {
            Some(size) if size > MAX_ATTACHMENT_SIZE => {
                return Err(exit::usage(format!(
                    "--attachment-size {size}: use at most {MAX_ATTACHMENT_SIZE} bytes; a \
                     store takes requests of 50 MB at most, and base64 makes a note 4/3 bigger"
                )));
            }
            size => size.map(|size| size as usize),
        };
        let seed = match data.seed {
            SeedArg::Fixed(seed) => seed,
            SeedArg::Random => rand::random(),
        };
        Ok(Self {
            seed,
            as_of,
            count: data.count,
            shard,
            types,
            attachment_size,
        })
    }
}

/// The largest note `--attachment-size` makes: its base64 text still fits a 50 MB request.
const MAX_ATTACHMENT_SIZE: u64 = 30_000_000;

/// Yields the records of one shard in load order: the shared record first (shard 0 only), then
/// the shard's patients.
pub struct Generator {
    config: GeneratorConfig,
    /// The types written: those asked for and those they refer to.
    types: TypeSet,
    pool: SharedPool,
    context: PlanContext,
    /// Resources in the shared record.
    shared_size: u64,
    shared_pending: bool,
    next_patient: u64,
    /// Resources of the whole (unsharded) data set not yet given to a patient.
    unallotted: u64,
}

impl Generator {
    pub fn new(config: GeneratorConfig) -> Self {
        let types = config.types.with_references();
        let shape = PoolShape::for_types(config.count, types);
        let pool = SharedPool::new(config.seed, shape);
        let context = PlanContext::new(config.seed, config.as_of, shape);
        let shared_size = shape.kept(types).min(config.count);
        // Without patient types the pool is all there is (`from_args` keeps --count to it).
        let unallotted = if types.has_patient_types() {
            config.count - shared_size
        } else {
            0
        };
        Self {
            shared_pending: shared_size > 0 && config.shard.index == 0,
            unallotted,
            next_patient: 0,
            shared_size,
            types,
            config,
            pool,
            context,
        }
    }

    pub fn seed(&self) -> u64 {
        self.config.seed
    }

    /// The shared resources every patient of every shard may refer to.
    pub fn shared_record(&self) -> Record {
        self.pool.record(self.types, self.shared_size)
    }
}

impl Iterator for Generator {
    type Item = Record;

    fn next(&mut self) -> Option<Record> {
        if std::mem::take(&mut self.shared_pending) {
            return Some(self.shared_record());
        }
        while self.unallotted > 0 {
            let index = self.next_patient;
            self.next_patient += 1;
            let plan = plan_patient(&self.context, index);
            // At least the Patient: every patient type refers to it.
            let size = plan.resource_count(self.types).min(self.unallotted);
            self.unallotted -= size;
            if self.config.shard.owns(index) {
                let resources = render::render_patient(
                    self.seed(),
                    index,
                    &plan,
                    &self.pool,
                    self.types,
                    size,
                    self.config.attachment_size,
                );
                return Some(Record {
                    kind: RecordKind::Patient,
                    resources,
                });
            }
        }
        None
    }
}

/// `fhirgen generate`: writes the shard's resources as NDJSON or transaction Bundles.
pub async fn run(args: GenerateArgs) -> anyhow::Result<ExitCode> {
    let config = GeneratorConfig::from_args(&args.data)?;
    if args.data.seed == SeedArg::Random {
        crate::say!("seed: {}", config.seed);
    }
    if let Some(url) = crate::import::gcs_output(args.output.as_deref())? {
        return crate::import::generate(args, config, url).await;
    }
    let GenerateArgs { format, output, .. } = args;
    if output.as_deref().is_none_or(|path| path == Path::new("-")) {
        exit::ensure_stdout_open("the data set")?;
    }
    tokio::task::spawn_blocking(move || write_data_set(config, format, output.as_deref()))
        .await
        .context("the generator stopped unexpectedly")??;
    Ok(exit::SUCCESS.into())
}

/// Buffer big enough that writes are few, small enough to stay out of the way.
const OUTPUT_BUFFER: usize = 1 << 20;

fn write_data_set(
    config: GeneratorConfig,
    format: OutputFormat,
    output: Option<&Path>,
) -> anyhow::Result<()> {
    let generator = Generator::new(config);
    let Some(path) = output.filter(|path| *path != Path::new("-")) else {
        let mut stdout = BufWriter::with_capacity(OUTPUT_BUFFER, io::stdout().lock());
        return write_records(generator, format, &mut stdout)
            .and_then(|()| stdout.flush())
            .context("cannot write to stdout");
    };
    let file =
        std::fs::File::create(path).with_context(|| format!("cannot create {}", path.display()))?;
    let written = if is_gzip_path(path) {
        // The buffer sits in front of the compressor: it gets big writes, not one per token.
        let gzip = GzEncoder::new(file, Compression::new(GZIP_LEVEL));
        let mut out = BufWriter::with_capacity(OUTPUT_BUFFER, gzip);
        write_records(generator, format, &mut out).and_then(|()| {
            let gzip = out.into_inner().map_err(io::IntoInnerError::into_error)?;
            gzip.finish().map(drop)
        })
    } else {
        let mut out = BufWriter::with_capacity(OUTPUT_BUFFER, file);
        write_records(generator, format, &mut out).and_then(|()| out.flush())
    };
    written.with_context(|| format!("cannot write {}", path.display()))
}

/// gzip's own default: generated NDJSON shrinks about 12x, at ~2.5 s of CPU per 180 MB.
const GZIP_LEVEL: u32 = 6;

/// `-o data.ndjson.gz` asks for gzip, as the name says.
fn is_gzip_path(path: &Path) -> bool {
    path.extension()
        .is_some_and(|extension| extension.eq_ignore_ascii_case("gz"))
}

/// Writes every record to `out`; the caller flushes (or finishes) it.
fn write_records(
    generator: Generator,
    format: OutputFormat,
    out: &mut impl Write,
) -> io::Result<()> {
    match format {
        OutputFormat::Ndjson => {
            for record in generator {
                for resource in &record.resources {
                    out.write_all(resource.json().as_bytes())?;
                    out.write_all(b"\n")?;
                }
            }
        }
        OutputFormat::Bundle => {
            // Patient bundles find shared resources by identifier: their server ids are unknown.
            let shared: HashMap<String, String> = generator
                .shared_record()
                .resources
                .into_iter()
                .filter_map(|r| Some((r.key.clone(), r.conditional_reference()?)))
                .collect();
            let resolve = |key: &str| shared.get(key).cloned();
            let mut bundle = Vec::new();
            for record in generator {
                bundle.clear();
                write_transaction_bundle(&mut bundle, &record.resources, &resolve);
                bundle.push(b'\n');
                out.write_all(&bundle)?;
            }
        }
    }
    Ok(())
}
