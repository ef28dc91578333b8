//! `fhirgen verify`: reads a store back and checks that it holds what a load with the same
//! arguments wrote. The data set is walked again (generated, or read with `--input`, as `load`
//! does) and every resource, or a fixed sample of them, is looked up by its identifier through a
//! bounded channel drained by `--workers` tasks; then each type is counted in the store.
//!
//! "Exactly" means: every resource looked up is found once (none missing, none duplicated), and
//! the store holds at least as many resources of each type as the data set has. The store may
//! hold other data, so more is reported but passes, unless `--exact-counts` asks for equality.
//!
//! With `--via gs://...` the store is read through its export instead (`via.rs`), against the
//! data set held as hashes (`ledger.rs`): the way that ends at tens of millions of resources.

mod ledger;
mod references;
mod report;
mod via;

use std::collections::{BTreeMap, BinaryHeap};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use bytes::Bytes;
use http::Method;
use serde_json::Value;
use tokio::sync::{Mutex, mpsc};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::config::VerifyConfig;
use crate::exit;
use crate::fhir::{Resource, SOURCE_KEY_SYSTEM, query_for_url, recorded_source_key};
use crate::shutdown;
use crate::source::{self, RecordSource, SourceItem};
use crate::store::client::{Reply, SendError, StoreClient, StoreRequest};
use crate::store::target;
use references::References;
use report::{Findings, Report};

/// One thing a worker asks the store.
enum Check {
    /// Is this resource there, once?
    Resource(Lookup),
    /// How many resources of this type does the store hold?
    Count(String),
}

/// How one resource of the data set is found again: by the identifier its conditional create
/// used, by the source-key tag the loader found it by (a type without identifiers), or else
/// at the stable id the loader PUT it to.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Lookup {
    resource_type: String,
    /// `identifier=system|value` or `_tag=system|code`, search-escaped.
    identifier: Option<String>,
    id: String,
}

impl Lookup {
    fn of(resource: &Resource) -> Self {
        let identifier = resource.conditional_query().or_else(|| {
            recorded_source_key(&resource.to_value())
                .map(|code| format!("_tag={SOURCE_KEY_SYSTEM}|{code}"))
        });
        Self {
            resource_type: resource.resource_type().to_owned(),
            identifier,
            id: resource.stable_id(),
        }
    }

    /// What a person reads in the report: `Patient?identifier=system|value` or `Patient/id`.
    fn describe(&self) -> String {
        match &self.identifier {
            Some(query) => format!("{}?{query}", self.resource_type),
            None => format!("{}/{}", self.resource_type, self.id),
        }
    }

    fn request(&self) -> StoreRequest {
        let path = match &self.identifier {
            Some(query) => format!("{}?{}", self.resource_type, query_for_url(query)),
            None => format!("{}/{}", self.resource_type, self.id),
        };
        get(path)
    }

    /// How many times the store holds the resource, from its answer.
    fn times_found(&self, answer: Result<Reply, SendError>) -> Result<u64, String> {
        match (&self.identifier, answer) {
            (Some(_), Ok(reply)) => matches_in(&reply.body),
            (None, Ok(_)) => Ok(1),
            (
                None,
                Err(SendError::Rejected {
                    status: 404 | 410, ..
                }),
            ) => Ok(0),
            (_, Err(error)) => Err(error.to_string()),
        }
    }
}

fn get(path: String) -> StoreRequest {
    StoreRequest {
        method: Method::GET,
        path,
        body: Bytes::new(),
        if_none_exist: None,
        operations: 1,
    }
}

/// The number of matches a search Bundle reports: its `total`, or else its matching entries.
fn matches_in(body: &[u8]) -> Result<u64, String> {
    let bundle: Value = serde_json::from_slice(body)
        .map_err(|e| format!("the store's answer to a search is not JSON: {e}"))?;
    if bundle["resourceType"] != "Bundle" {
        return Err("the store's answer to a search is not a Bundle".to_owned());
    }
    if let Some(total) = bundle["total"].as_u64() {
        return Ok(total);
    }
    let entries = bundle["entry"].as_array().map_or(&[][..], Vec::as_slice);
    Ok(entries
        .iter()
        .filter(|entry| entry["search"]["mode"] != "include")
        .count() as u64)
}

/// What the data set holds, by type, as the walk found it.
#[derive(Debug, Default)]
struct Expected {
    per_type: BTreeMap<String, u64>,
    /// Input lines that are not FHIR resources: a load skips them, so they are not looked up.
    invalid_input: u64,
    /// Whether every item was walked (not when the run stopped early).
    complete: bool,
}

pub async fn run(config: VerifyConfig) -> anyhow::Result<ExitCode> {
    if let Some(via) = config.via.clone() {
        return via::run(config, via).await;
    }
    let source = source::open(&config.source).await?;
    let connection = &config.connection;
    let target = target::resolve(&config.target, &connection.auth, &connection.network).await?;
    let stop = CancellationToken::new();
    let client = Arc::new(StoreClient::new(
        &target.fhir_base,
        target.credentials,
        connection.client_options(config.pool, connection.limiter(None)),
        stop.clone(),
    )?);
    let (signals, interruption) = shutdown::watch(stop.clone(), None);
    let started = Instant::now();

    let (checks, queue) = mpsc::channel(config.pool.lookup_queue());
    let queue = Arc::new(Mutex::new(queue));
    let mut workers = JoinSet::new();
    let references = Arc::new(References::default());
    for _ in 0..config.pool.workers {
        workers.spawn(work(client.clone(), queue.clone(), references.clone()));
    }
    drop(queue);
    let seed = source.seed;
    let sample = config.sample;
    let walk = tokio::task::spawn_blocking(move || walk(source, sample, checks));
    let mut findings = Findings::default();
    while let Some(done) = workers.join_next().await {
        findings += done.context("a verify worker stopped unexpectedly")?;
    }
    let expected = walk
        .await
        .context("reading the data set stopped unexpectedly")?;
    signals.abort();

    let report = Report::new(
        &expected.per_type,
        findings,
        report::Context {
            target: target.description,
            seed,
            sample,
            exact_counts: config.exact_counts,
            invalid_input: expected.invalid_input,
            elapsed: started.elapsed(),
            walked_all: expected.complete,
            interrupted: interruption.exit_code().is_some(),
            fatal_error: client.fatal().map(|f| f.0),
        },
    );
    if !config.quiet {
        report.print_text();
    }
    if config.json {
        exit::print_json_line(&report)?;
    }
    let code = if let Some(code) = interruption.exit_code() {
        code
    } else if report.ok {
        exit::SUCCESS
    } else {
        exit::FAILURE
    };
    Ok(code.into())
}

/// Walks the data set in load order, counting it by type and queueing a lookup for every
/// resource (or, with `--sample N`, for the N whose descriptions hash lowest: the same N on
/// every run, whatever the order), then one count per type.
fn walk(source: RecordSource, sample: Option<u64>, checks: mpsc::Sender<Check>) -> Expected {
    let mut expected = Expected::default();
    let mut sampled = sample.map(Sample::new);
    let mut checking = true;
    for item in records(source) {
        let record = match item {
            SourceItem::Record { record, .. } => record,
            SourceItem::Invalid { .. } => {
                expected.invalid_input += 1;
                continue;
            }
        };
        for resource in &record.resources {
            *expected
                .per_type
                .entry(resource.resource_type().to_owned())
                .or_default() += 1;
            let lookup = Lookup::of(resource);
            match &mut sampled {
                Some(sampled) => sampled.offer(lookup),
                // Once the checks stop (the store is unreachable), the rest is still counted:
                // the report says what was expected, not how far the walk got.
                None if checking => {
                    checking = checks.blocking_send(Check::Resource(lookup)).is_ok()
                }
                None => {}
            }
        }
    }
    if !checking {
        return expected;
    }
    let counts = expected.per_type.keys().cloned().map(Check::Count);
    let sampled = sampled
        .map(Sample::into_lookups)
        .unwrap_or_default()
        .into_iter()
        .map(Check::Resource);
    for check in sampled.chain(counts) {
        if checks.blocking_send(check).is_err() {
            return expected;
        }
    }
    expected.complete = true;
    expected
}

/// The data set's items in load order: the shared resources first.
fn records(source: RecordSource) -> impl Iterator<Item = SourceItem> {
    source
        .prerequisites
        .into_iter()
        .map(|record| SourceItem::Record {
            record,
            sources: None,
        })
        .chain(source.items)
}

/// The `size` lookups whose descriptions hash lowest (SHA-1, as UUID v5): the same ones on
/// every run whatever order they come in, and spread evenly over the data set.
struct Sample {
    size: usize,
    lowest: BinaryHeap<(u128, Lookup)>,
}

impl Sample {
    fn new(size: u64) -> Self {
        Self {
            size: usize::try_from(size).unwrap_or(usize::MAX),
            lowest: BinaryHeap::new(),
        }
    }

    fn offer(&mut self, lookup: Lookup) {
        let rank =
            uuid::Uuid::new_v5(&uuid::Uuid::NAMESPACE_URL, lookup.describe().as_bytes()).as_u128();
        self.lowest.push((rank, lookup));
        if self.lowest.len() > self.size {
            self.lowest.pop();
        }
    }

    fn into_lookups(self) -> Vec<Lookup> {
        let ranked = self.lowest.into_sorted_vec();
        ranked.into_iter().map(|(_, lookup)| lookup).collect()
    }
}

/// One worker: takes checks off the shared queue until it is empty or the run stops.
async fn work(
    client: Arc<StoreClient>,
    queue: Arc<Mutex<mpsc::Receiver<Check>>>,
    references: Arc<References>,
) -> Findings {
    let mut findings = Findings::default();
    loop {
        let Some(check) = queue.lock().await.recv().await else {
            return findings;
        };
        match check {
            Check::Resource(lookup) => {
                let answer = client.send(&lookup.request(), &mut findings.stats).await;
                if matches!(answer, Err(SendError::Cancelled)) {
                    return findings;
                }
                if let Ok(reply) = &answer {
                    let found = references.dangling(&client, &reply.body, &mut findings.stats);
                    let Ok(dangling) = found.await else {
                        return findings;
                    };
                    for target in dangling {
                        findings.record_dangling(&lookup.describe(), &target);
                    }
                }
                findings.record_lookup(lookup.describe(), lookup.times_found(answer));
            }
            Check::Count(resource_type) => {
                let request = get(format!("{resource_type}?_summary=count"));
                let answer = client.send(&request, &mut findings.stats).await;
                if matches!(answer, Err(SendError::Cancelled)) {
                    return findings;
                }
                let total = answer
                    .map_err(|e| e.to_string())
                    .and_then(|reply| summary_total(&reply.body));
                findings.record_count(resource_type, total);
            }
        }
    }
}

/// The `total` of a `_summary=count` answer.
fn summary_total(body: &[u8]) -> Result<u64, String> {
    let bundle: Value = serde_json::from_slice(body)
        .map_err(|e| format!("the store's answer to a count is not JSON: {e}"))?;
    bundle["total"]
        .as_u64()
        .ok_or_else(|| "the store's answer to `_summary=count` has no total".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn reply(body: Value) -> Result<Reply, SendError> {
        Ok(Reply {
            status: 200,
            location: None,
            body: Bytes::from(body.to_string()),
            after_lost_answer: false,
        })
    }

    #[test]
    fn identifier_lookups_count_matches() {
        let lookup = Lookup::of(&Resource::new(json!({
            "resourceType": "Patient", "id": "p1",
            "identifier": [{"system": "https://s.org/a|b", "value": "v 1"}]
        })));
        assert_eq!(
            lookup.describe(),
            r"Patient?identifier=https://s.org/a\|b|v%201"
        );
        assert_eq!(
            lookup.request().path,
            "Patient?identifier=https://s.org/a%5C%7Cb%7Cv%201"
        );
        let bundle = |total| json!({"resourceType": "Bundle", "type": "searchset", "total": total});
        assert_eq!(lookup.times_found(reply(bundle(2))), Ok(2));
        let untotalled = json!({"resourceType": "Bundle", "entry": [
            {"search": {"mode": "match"}}, {"search": {"mode": "include"}}, {}
        ]});
        assert_eq!(lookup.times_found(reply(untotalled)), Ok(2));
        assert!(lookup.times_found(reply(json!({"error": 1}))).is_err());
        let gone = Err(SendError::Rejected {
            status: 404,
            message: "no".into(),
        });
        assert!(
            lookup.times_found(gone).is_err(),
            "a failed search is not a miss"
        );
    }

    #[test]
    fn resources_without_identifiers_are_read_by_id() {
        let lookup = Lookup::of(&Resource::new(
            json!({"resourceType": "Provenance", "id": "x"}),
        ));
        assert_eq!(lookup.request().path, "Provenance/x");
        let gone = Err(SendError::Rejected {
            status: 404,
            message: "not found".into(),
        });
        assert_eq!(lookup.times_found(gone), Ok(0));
        assert_eq!(lookup.times_found(reply(json!({}))), Ok(1));
    }

    #[test]
    fn samples_do_not_depend_on_order() {
        let lookups: Vec<Lookup> = (0..50)
            .map(|i| Lookup {
                resource_type: "Patient".into(),
                identifier: Some(format!("identifier=s|{i}")),
                id: i.to_string(),
            })
            .collect();
        let pick = |order: &mut dyn Iterator<Item = &Lookup>| {
            let mut sample = Sample::new(5);
            order.for_each(|lookup| sample.offer(lookup.clone()));
            sample.into_lookups()
        };
        let forward = pick(&mut lookups.iter());
        assert_eq!(forward.len(), 5);
        assert_eq!(forward, pick(&mut lookups.iter().rev()));
        assert_ne!(forward, lookups[..5], "a sample is not the first N");
    }
}
