//! In-process costs of the pipeline's CPU-bound steps, per resource: generating, writing
//! NDJSON, building transaction bundles, serializing a request body with references
//! rewritten (against the edit-a-copy approach it replaced), and reading NDJSON input.
//! `cargo bench --bench pipeline`; whole runs are measured by bench/run.sh.

use std::io::Write;

use clap::Parser;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use fhirgen::cli::{Cli, Command};
use fhirgen::fhir::{IdField, Record, for_each_reference_mut, write_transaction_bundle};
use fhirgen::generate::{Generator, GeneratorConfig};

const RESOURCES: u64 = 5_000;

// The allocator the binary runs with, so that these costs are the binary's.
#[cfg(not(target_env = "msvc"))]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// The configuration `fhirgen generate --count 5000 --seed 1 --as-of 2026-01-01` runs with.
fn config() -> GeneratorConfig {
    let count = RESOURCES.to_string();
    let args = [
        "fhirgen",
        "generate",
        "--count",
        &count,
        "--seed",
        "1",
        "--as-of",
        "2026-01-01",
    ];
    let Command::Generate(generate) = Cli::try_parse_from(args).unwrap().command else {
        unreachable!("parsed a generate command")
    };
    GeneratorConfig::from_args(&generate.data).unwrap()
}

fn records() -> Vec<Record> {
    Generator::new(config()).collect()
}

fn generation(c: &mut Criterion) {
    let mut group = c.benchmark_group("generate");
    group.throughput(Throughput::Elements(RESOURCES));
    group.bench_function("records", |b| {
        b.iter(|| {
            Generator::new(config())
                .map(|r| r.resources.len())
                .sum::<usize>()
        })
    });
    let records = records();
    group.bench_function("ndjson", |b| {
        let mut out = Vec::with_capacity(8 << 20);
        b.iter(|| {
            out.clear();
            for resource in records.iter().flat_map(|r| &r.resources) {
                out.extend_from_slice(resource.json().as_bytes());
                out.push(b'\n');
            }
            out.len()
        })
    });
    group.finish();
}

fn request_bodies(c: &mut Criterion) {
    let records = records();
    let resolve = |reference: &str| Some(format!("{reference}-stored"));
    let mut group = c.benchmark_group("request body");
    group.throughput(Throughput::Elements(RESOURCES));
    group.bench_function(BenchmarkId::new("rewrite", "on the way out"), |b| {
        b.iter(|| {
            let mut bytes = 0;
            for resource in records.iter().flat_map(|r| &r.resources) {
                let mut body = Vec::with_capacity(resource.json().len() + 256);
                resource.write_rewritten(&mut body, &resolve, IdField::Remove);
                bytes += body.len();
            }
            bytes
        })
    });
    // The approach splicing the text replaced: a JSON tree of the resource, copied, edited
    // and serialized.
    let trees: Vec<serde_json::Value> = records
        .iter()
        .flat_map(|r| &r.resources)
        .map(|r| r.to_value())
        .collect();
    group.bench_function(BenchmarkId::new("rewrite", "edited copy"), |b| {
        b.iter(|| {
            let mut bytes = 0;
            for tree in &trees {
                let mut body = tree.clone();
                body.as_object_mut().unwrap().shift_remove("id");
                for_each_reference_mut(&mut body, &mut |r| {
                    if let Some(target) = resolve(r) {
                        *r = target;
                    }
                });
                bytes += serde_json::to_vec(&body).unwrap().len();
            }
            bytes
        })
    });
    group.bench_function("transaction bundles", |b| {
        let mut out = Vec::with_capacity(8 << 20);
        b.iter(|| {
            out.clear();
            for record in &records {
                write_transaction_bundle(&mut out, &record.resources, &|_| None);
            }
            out.len()
        })
    });
    group.finish();
}

fn input(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("input.ndjson");
    let mut file = std::fs::File::create(&path).unwrap();
    for resource in records().iter().flat_map(|r| &r.resources) {
        file.write_all(resource.json().as_bytes()).unwrap();
        file.write_all(b"\n").unwrap();
    }
    drop(file);
    let mut group = c.benchmark_group("input");
    group.throughput(Throughput::Elements(RESOURCES));
    group.bench_function("ndjson records", |b| {
        b.iter(|| fhirgen::source::input::open(&path).unwrap().items.count())
    });
    group.finish();
}

criterion_group!(benches, generation, request_bodies, input);
criterion_main!(benches);
