//! `fhirgen verify --store S --via gs://BUCKET/PREFIX`: the store is read back through its own
//! export (`fhirStores.export`, a long-running operation followed to its end) into a fresh
//! `PREFIX/export-MILLIS/`, not resource by resource: at 20 million resources that is the only
//! way that ends. The exported objects are streamed line by line and compared with the data set
//! held as hashes (see [`super::ledger`]); they are deleted afterwards unless `--keep-objects`.
//!
//! The store is expected to hold the data set under its own ids, as `load --via` (the import)
//! writes it: every resource present once with the same content, per type counts at least the
//! data set's (exactly with `--exact-counts`), every reference resolving. Resources the data set does not have are reported and pass, as for `verify`,
//! unless `--exact-counts`, or unless they carry the identifier of one of the data set's
//! resources: then they are a second copy, and fail.

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use serde::Serialize;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use super::ledger::{ExpectedSet, ExportFindings, Ledger, content_hash};
use super::report::{Named, TypeCount, name_some};
use super::{Lookup, records};
use crate::config::{SourceConfig, VerifyConfig, ViaConfig};
use crate::exit;
use crate::fhir::Resource;
use crate::import::operation::counter;
use crate::source::{self, RecordSource, SourceItem};
use crate::store::storage::{Endpoint, GcsUrl, ObjectMeta, StorageClient, StorageError};
use crate::store::target;

/// The longest wait between two looks at the operation.
const MAX_POLL: Duration = Duration::from_secs(10);

/// How many times one object's read starts again where it was cut off.
const RESUMES: u32 = 5;

#[derive(Debug, Serialize)]
struct ViaReport {
    ok: bool,
    target: String,
    seed: Option<u64>,
    /// Where the export wrote.
    export: String,
    operation: String,
    expected: u64,
    exact_counts: bool,
    types: BTreeMap<String, TypeCount>,
    count_mismatches: Vec<String>,
    #[serde(flatten)]
    findings: ExportFindings,
    objects: usize,
    objects_deleted: bool,
    /// Memory held per resource of the data set while comparing.
    bytes_per_resource: usize,
    elapsed_seconds: f64,
    interrupted: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    logs_url: Option<String>,
}

/// The Healthcare API's calls and Cloud Storage's, with the store's credential.
struct Clients {
    api: StorageClient,
    storage: StorageClient,
    /// `{endpoint}/projects/.../fhirStores/S`.
    store_url: String,
    /// `{endpoint}`, which operation names are relative to.
    endpoint: String,
}

impl Clients {
    async fn new(config: &VerifyConfig, via: &ViaConfig) -> anyhow::Result<(Self, String)> {
        let connection = &config.connection;
        let target = target::resolve(&config.target, &connection.auth, &connection.network).await?;
        let store_url = target
            .google
            .as_ref()
            .map(|store| store.url.clone())
            .context("--via needs a Healthcare API store")?;
        let endpoint = store_url
            .split_once("/projects/")
            .map(|(endpoint, _)| endpoint.to_owned())
            .context("the store URL names no project")?;
        let credentials = Arc::new(target.credentials);
        let client = |endpoint: Endpoint| {
            StorageClient::new(
                endpoint,
                credentials.clone(),
                &connection.network,
                connection.retry.clone(),
                connection.timeout,
            )
        };
        let api_endpoint = Endpoint {
            url: reqwest::Url::parse(&endpoint)
                .with_context(|| format!("`{endpoint}` is not a Healthcare API endpoint"))?,
            emulated: false,
        };
        let storage_endpoint = Endpoint::resolve(via.storage_endpoint.as_deref(), |name| {
            std::env::var(name).ok()
        })?;
        let clients = Self {
            api: client(api_endpoint)?,
            storage: client(storage_endpoint)?,
            store_url,
            endpoint,
        };
        Ok((clients, target.description))
    }
}

pub async fn run(config: VerifyConfig, via: ViaConfig) -> anyhow::Result<ExitCode> {
    let started = Instant::now();
    let (clients, description) = Clients::new(&config, &via).await?;
    let source = source::open(&config.source).await?;
    let (seed, total) = (source.seed, resources_hint(&config.source, source.total));
    let millis = chrono::Utc::now().timestamp_millis();
    let export = GcsUrl {
        bucket: via.url.bucket.clone(),
        prefix: format!("{}export-{millis}/", via.url.prefix),
    };
    let operation = start_export(&clients, &export).await?;
    let capacity = usize::try_from(total).unwrap_or(0);
    let building = tokio::task::spawn_blocking(move || expected_set(source, capacity));

    let stop = CancellationToken::new();
    let (watcher, interruption) = crate::shutdown::watch(stop.clone(), None);
    let done = follow(
        &clients,
        &operation,
        total,
        config.quiet || config.json,
        &stop,
    )
    .await?;
    // Stopped, the run does not wait for the data set: there is nothing left to compare.
    let built = tokio::select! {
        biased;
        () = stop.cancelled() => None,
        built = building => Some(built.context("reading the data set stopped unexpectedly")?),
    };
    let mut ledger = built.unwrap_or_default().into_ledger();
    let error = done["error"]["message"].as_str().map(str::to_owned);
    let objects = match error {
        None if !stop.is_cancelled() => {
            let hidden = config.quiet || config.json;
            read_export(&clients.storage, &export, &mut ledger, hidden, &stop).await?
        }
        _ => Vec::new(),
    };
    watcher.abort();
    let interrupted = interruption.exit_code();
    // A store not read through has nothing to count: the report says why instead.
    if error.is_none() && interrupted.is_none() {
        ledger.settle();
        if ledger.findings.missing.count > 0 {
            ledger = name_missing(&config, ledger).await?;
        }
    }
    let deleted = interrupted.is_none()
        && !via.keep_objects
        && delete_objects(&clients.storage, &export, &objects).await;
    if !deleted && !objects.is_empty() && !config.quiet {
        crate::say!("the export's objects are kept under {export}");
    }
    let report = ViaReport::new(
        ledger,
        config.exact_counts,
        ViaContext {
            target: description,
            seed,
            export: export.to_string(),
            operation,
            objects: objects.len(),
            objects_deleted: deleted,
            elapsed: started.elapsed(),
            interrupted: interrupted.is_some(),
            error,
            logs_url: done["metadata"]["logsUrl"].as_str().map(str::to_owned),
        },
    );
    if !config.quiet {
        crate::logs::to_stderr(&report.text());
    }
    if config.json {
        exit::print_json_line(&report)?;
    }
    Ok(match interrupted {
        Some(code) => code,
        None if report.ok => exit::SUCCESS,
        None => exit::FAILURE,
    }
    .into())
}

/// How many resources the data set holds, or about (a shard's share), to size the ledger once.
fn resources_hint(source: &SourceConfig, total: Option<u64>) -> u64 {
    match (total, source) {
        (Some(total), _) => total,
        (None, SourceConfig::Generated(config)) => {
            config.count / u64::from(config.shard.count).max(1) * 11 / 10
        }
        (None, SourceConfig::Input(_)) => 0,
    }
}

/// The data set as hashes, built while the store exports.
fn expected_set(source: RecordSource, capacity: usize) -> ExpectedSet {
    let mut expected = ExpectedSet::with_capacity(capacity);
    for record in records(source) {
        let SourceItem::Record { record, .. } = record else {
            continue;
        };
        for resource in &record.resources {
            let lookup = Lookup::of(resource);
            let content = content_hash(&resource.to_value());
            let identity = lookup.identifier.as_deref();
            expected.add(&lookup.resource_type, &lookup.id, identity, content);
        }
    }
    expected
}

/// Walks the data set again to name what the export did not hold (only hashes were kept).
async fn name_missing(config: &VerifyConfig, mut ledger: Ledger) -> anyhow::Result<Ledger> {
    let source = source::open(&config.source).await?;
    let named = tokio::task::spawn_blocking(move || {
        'walk: for record in records(source) {
            let SourceItem::Record { record, .. } = record else {
                continue;
            };
            for resource in &record.resources {
                let lookup = Lookup::of(resource);
                if !ledger.name_missing(&lookup.resource_type, &lookup.id) {
                    break 'walk;
                }
            }
        }
        ledger
    });
    named
        .await
        .context("reading the data set again stopped unexpectedly")
}

/// Starts the export into `export`; gives the operation's name.
async fn start_export(clients: &Clients, export: &GcsUrl) -> anyhow::Result<String> {
    let uri = format!(
        "gs://{}/{}",
        export.bucket,
        export.prefix.trim_end_matches('/')
    );
    let request = json!({"gcsDestination": {"uriPrefix": uri}}).to_string();
    let url = format!("{}:export", clients.store_url);
    let api = &clients.api;
    let response = api
        .send(|http| {
            http.post(&url)
                .header("content-type", "application/json; charset=utf-8")
                .body(request.clone())
        })
        .await?;
    let started: Value = api.json(response).await.map_err(|e| match &e {
        StorageError::Refused { status: 403, .. } => anyhow::anyhow!(
            "the store's export to {uri} was refused: {e}. The store writes the objects as its \
             Healthcare Service Agent, \
             service-PROJECT_NUMBER@gcp-sa-healthcare.iam.gserviceaccount.com: grant it \
             roles/storage.objectAdmin on gs://{}",
            export.bucket
        ),
        _ => anyhow::anyhow!("cannot start the store's export to {uri}: {e}"),
    })?;
    started["name"]
        .as_str()
        .map(str::to_owned)
        .context("the export's answer names no operation")
}

/// Looks at the operation, more and more rarely, until it is done or the run is stopped.
async fn follow(
    clients: &Clients,
    operation: &str,
    total: u64,
    hidden: bool,
    stop: &CancellationToken,
) -> anyhow::Result<Value> {
    let bar = progress_bar(total, "export {bar:40} {pos}/{len} [{elapsed}]", hidden);
    let url = format!("{}/{operation}", clients.endpoint);
    let api = &clients.api;
    let mut wait = Duration::from_millis(100);
    loop {
        let state: Value = api
            .json(api.send(|http| http.get(&url)).await?)
            .await
            .with_context(|| format!("cannot read the operation {operation}"))?;
        bar.set_position(counter(&state, "success"));
        if state["done"] == true {
            bar.finish_and_clear();
            return Ok(state);
        }
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            () = stop.cancelled() => {
                bar.abandon();
                crate::say!("the export goes on in the store: operation {operation}");
                return Ok(state);
            }
        }
        wait = (wait * 2).min(MAX_POLL);
    }
}

fn progress_bar(total: u64, template: &str, hidden: bool) -> indicatif::ProgressBar {
    use std::io::IsTerminal;
    if hidden || !std::io::stderr().is_terminal() || crate::logs::requests_logged() {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new(total);
    bar.set_style(
        indicatif::ProgressStyle::with_template(template)
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    bar
}

/// Streams every object the export wrote through the ledger, a line at a time; gives the
/// objects (every one under the folder, whatever Google names them).
async fn read_export(
    storage: &StorageClient,
    export: &GcsUrl,
    ledger: &mut Ledger,
    hidden: bool,
    stop: &CancellationToken,
) -> anyhow::Result<Vec<ObjectMeta>> {
    let objects = storage
        .list(&export.bucket, &export.prefix)
        .await
        .with_context(|| format!("cannot list the export's objects under {export}"))?;
    let bytes = objects.iter().map(|o| o.size).sum();
    let bar = progress_bar(
        bytes,
        "read {bar:40} {bytes}/{total_bytes} [{elapsed}]",
        hidden,
    );
    for object in &objects {
        let mut lines = Lines::default();
        let mut observe = |line: &[u8]| observe_line(ledger, &object.name, line);
        let mut each_chunk = |chunk: &[u8]| {
            bar.inc(chunk.len() as u64);
            lines.feed(chunk, &mut observe);
        };
        if !read_object(storage, export, &object.name, &mut each_chunk, stop).await? {
            break;
        }
        lines.finish(&mut observe);
    }
    bar.finish_and_clear();
    Ok(objects)
}

/// Hands one object's bytes to `each` as they arrive; a read cut off starts again from the byte
/// it reached, up to [`RESUMES`] times in a row without progress. `false` when stopped.
async fn read_object(
    storage: &StorageClient,
    export: &GcsUrl,
    name: &str,
    each: &mut impl FnMut(&[u8]),
    stop: &CancellationToken,
) -> anyhow::Result<bool> {
    let mut offset = 0;
    let mut resumes = 0;
    let mut response = storage.download_stream(&export.bucket, name, 0).await?;
    loop {
        if stop.is_cancelled() {
            return Ok(false);
        }
        match response.chunk().await {
            Ok(Some(chunk)) => {
                offset += chunk.len() as u64;
                resumes = 0;
                each(&chunk);
            }
            Ok(None) => return Ok(true),
            Err(e) if resumes < RESUMES => {
                resumes += 1;
                tracing::debug!("reading {name} cut off at {offset} ({e}); resuming");
                response = storage
                    .download_stream(&export.bucket, name, offset)
                    .await?;
            }
            Err(e) => anyhow::bail!(
                "reading {} stopped at byte {offset}, {RESUMES} times in a row: {e}",
                export.object_url(name)
            ),
        }
    }
}

/// One line of an exported object, compared with the data set.
fn observe_line(ledger: &mut Ledger, object: &str, line: &[u8]) {
    let resource = serde_json::from_slice::<Value>(line)
        .map_err(|e| format!("not JSON ({e})"))
        .and_then(|value| {
            let has = |field: &str| value[field].as_str().is_some_and(|s| !s.is_empty());
            if has("resourceType") && has("id") {
                Ok(value)
            } else {
                Err("not a resource with a type and an id".to_owned())
            }
        });
    let value = match resource {
        Ok(value) => value,
        Err(why) => {
            let start: String = String::from_utf8_lossy(line).chars().take(80).collect();
            ledger
                .findings
                .unreadable
                .push(format!("{object}: {why}: {start}"));
            return;
        }
    };
    let content = content_hash(&value);
    let resource = Resource::new(value);
    let lookup = Lookup::of(&resource);
    let references: Vec<_> = resource.references().collect();
    let relative = references
        .iter()
        .map(|r| r.as_ref())
        .filter(|r| super::references::is_relative(r));
    ledger.observe(
        &lookup.resource_type,
        &lookup.id,
        lookup.identifier.as_deref(),
        content,
        relative,
    );
}

/// Splits a stream of chunks into lines without holding more than one line.
#[derive(Default)]
struct Lines {
    partial: Vec<u8>,
}

impl Lines {
    fn feed(&mut self, chunk: &[u8], each: &mut impl FnMut(&[u8])) {
        let mut start = 0;
        for end in chunk
            .iter()
            .enumerate()
            .filter(|(_, b)| **b == b'\n')
            .map(|(i, _)| i)
        {
            if self.partial.is_empty() {
                emit(&chunk[start..end], each);
            } else {
                self.partial.extend_from_slice(&chunk[start..end]);
                emit(&self.partial, each);
                self.partial.clear();
            }
            start = end + 1;
        }
        self.partial.extend_from_slice(&chunk[start..]);
    }

    fn finish(self, each: &mut impl FnMut(&[u8])) {
        emit(&self.partial, each);
    }
}

/// A line without its `\r`, unless it is blank.
fn emit(line: &[u8], each: &mut impl FnMut(&[u8])) {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    if !line.iter().all(u8::is_ascii_whitespace) {
        each(line);
    }
}

/// Deletes the export's objects; says so when it cannot.
async fn delete_objects(storage: &StorageClient, export: &GcsUrl, objects: &[ObjectMeta]) -> bool {
    for object in objects {
        if let Err(e) = storage.delete(&export.bucket, &object.name).await {
            crate::say!(
                "note: cannot delete {} after reading it ({e}); delete the objects under {export} \
                 yourself",
                export.object_url(&object.name)
            );
            return false;
        }
    }
    true
}

/// The run's circumstances, for the report.
struct ViaContext {
    target: String,
    seed: Option<u64>,
    export: String,
    operation: String,
    objects: usize,
    objects_deleted: bool,
    elapsed: Duration,
    interrupted: bool,
    error: Option<String>,
    logs_url: Option<String>,
}

impl ViaReport {
    fn new(ledger: Ledger, exact_counts: bool, context: ViaContext) -> Self {
        let expected_per_type = ledger.expected_per_type().clone();
        let expected = ledger.expected_total();
        let findings = ledger.findings;
        let mut types = BTreeMap::new();
        let mut count_mismatches = Vec::new();
        let all_types = expected_per_type
            .keys()
            .chain(findings.found_per_type.keys());
        for resource_type in all_types {
            let expected = expected_per_type.get(resource_type).copied().unwrap_or(0);
            let found = findings
                .found_per_type
                .get(resource_type)
                .copied()
                .unwrap_or(0);
            let wrong = found < expected || (exact_counts && found != expected);
            if wrong && !count_mismatches.contains(resource_type) {
                count_mismatches.push(resource_type.clone());
            }
            let found = Some(found);
            types.insert(resource_type.clone(), TypeCount { expected, found });
        }
        let f = &findings;
        let wrong = [
            &f.missing,
            &f.changed,
            &f.duplicated,
            &f.dangling,
            &f.unreadable,
        ];
        let ok = context.error.is_none()
            && !context.interrupted
            && count_mismatches.is_empty()
            && wrong.iter().all(|named| named.count == 0)
            && (!exact_counts || f.not_in_data_set.count == 0);
        Self {
            ok,
            target: context.target,
            seed: context.seed,
            export: context.export,
            operation: context.operation,
            expected,
            exact_counts,
            types,
            count_mismatches,
            findings,
            objects: context.objects,
            objects_deleted: context.objects_deleted,
            bytes_per_resource: Ledger::bytes_per_resource(),
            elapsed_seconds: crate::store::stats::round3(context.elapsed.as_secs_f64()),
            interrupted: context.interrupted,
            logs_url: context.error.as_ref().and(context.logs_url),
            error: context.error,
        }
    }

    fn text(&self) -> String {
        let mut out = format!(
            "verify {} through its export ({}, operation {}): {} resources expected, {} read \
             from {} objects\n",
            self.target,
            self.export,
            self.operation,
            self.expected,
            self.findings.read,
            self.objects
        );
        out += &format!("  {:<24} {:>10} {:>10}\n", "type", "expected", "found");
        for (resource_type, count) in &self.types {
            let found = count.found.unwrap_or(0);
            out += &format!("  {resource_type:<24} {:>10} {found:>10}\n", count.expected);
        }
        let f = &self.findings;
        let show = |s: &String| s.clone();
        name_some(&mut out, "missing", &f.missing, show);
        name_some(
            &mut out,
            "content differs from the data set",
            &f.changed,
            show,
        );
        name_some(&mut out, "duplicated", &f.duplicated, show);
        name_some(&mut out, "not in the data set", &f.not_in_data_set, show);
        name_some(&mut out, "referring to nothing", &f.dangling, show);
        name_some(&mut out, "unreadable export lines", &f.unreadable, show);
        if f.missing.count > 0 && f.duplicated.count >= f.missing.count {
            out += "hint: the store holds the data set under ids it chose (a load through the \
                    REST API, not the import): check such a store with verify without --via\n";
        }
        if let Some(logs) = &self.logs_url {
            out += &format!("what failed, and why: {logs}\n");
        }
        out += &self.verdict();
        out.push('\n');
        out
    }

    fn verdict(&self) -> String {
        if self.ok {
            return "OK: every resource of the data set is stored once with the same content, \
                    every reference resolves, and no type has fewer than the data set"
                .to_owned();
        }
        if let Some(error) = &self.error {
            return format!("FAILED: the export failed: {error}");
        }
        if self.interrupted {
            return "FAILED: interrupted before the export was read through".to_owned();
        }
        let f = &self.findings;
        let counted: [(&Named<String>, &str); 6] = [
            (&f.missing, "missing"),
            (&f.changed, "changed"),
            (&f.duplicated, "duplicated"),
            (&f.dangling, "references to nothing"),
            (&f.unreadable, "unreadable lines"),
            (&f.not_in_data_set, "not in the data set"),
        ];
        let mut problems: Vec<String> = counted
            .iter()
            .filter(|(named, what)| {
                named.count > 0 && (self.exact_counts || *what != "not in the data set")
            })
            .map(|(named, what)| format!("{} {what}", named.count))
            .collect();
        if !self.count_mismatches.is_empty() {
            problems.push(format!(
                "counts differ for {}",
                self.count_mismatches.join(", ")
            ));
        }
        format!("FAILED: {}", problems.join("; "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Serves `content` with a `Content-Length` but cut off after `cut` bytes, unless asked
    /// for `Range: bytes=N-`, which gets the rest whole (206).
    async fn cutting_server(
        content: &'static [u8],
        cut: usize,
        requests: Arc<std::sync::atomic::AtomicUsize>,
    ) -> std::net::SocketAddr {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                requests.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let mut request = vec![0; 4096];
                let n = socket.read(&mut request).await.unwrap();
                let request = String::from_utf8_lossy(&request[..n]).to_lowercase();
                let from = request
                    .split("range: bytes=")
                    .nth(1)
                    .and_then(|rest| rest.split('-').next()?.parse::<usize>().ok());
                let (status, body) = match from {
                    Some(from) => ("206 Partial Content", &content[from..]),
                    None => ("200 OK", content),
                };
                let head = format!(
                    "HTTP/1.1 {status}\r\ncontent-length: {}\r\n\r\n",
                    body.len()
                );
                socket.write_all(head.as_bytes()).await.unwrap();
                let sent = if from.is_some() { body } else { &body[..cut] };
                socket.write_all(sent).await.unwrap();
            }
        });
        addr
    }

    #[tokio::test]
    async fn a_read_cut_off_resumes_where_it_stopped() {
        let content: &'static [u8] = b"{\"a\":1}\n{\"b\":2}\n{\"c\":3}\n";
        let requests = Arc::default();
        let addr = cutting_server(content, 12, Arc::clone(&requests)).await;
        let endpoint = Endpoint::resolve(Some(&addr.to_string()), |_| None).unwrap();
        let storage = StorageClient::new(
            endpoint,
            Arc::new(crate::store::auth::Credentials::none()),
            &crate::store::client::Network::default(),
            crate::store::retry::RetryPolicy::new(0, Duration::from_millis(1)),
            Duration::from_secs(10),
        )
        .unwrap();
        let export = GcsUrl::parse("gs://bucket-a/x/").unwrap();
        let mut read = Vec::new();
        let stop = CancellationToken::new();
        let mut each = |chunk: &[u8]| read.extend_from_slice(chunk);
        let done = read_object(&storage, &export, "x/Patient", &mut each, &stop).await;
        assert!(done.unwrap());
        assert_eq!(read, content);
        assert_eq!(requests.load(std::sync::atomic::Ordering::SeqCst), 2);
    }

    #[test]
    fn lines_are_whole_whatever_the_chunks() {
        let text = b"{\"a\":1}\n{\"b\":2}\r\n\n{\"c\":3}";
        for cut in 1..text.len() {
            let mut lines = Lines::default();
            let mut seen = Vec::new();
            let mut each = |line: &[u8]| seen.push(String::from_utf8(line.to_vec()).unwrap());
            for chunk in text.chunks(cut) {
                lines.feed(chunk, &mut each);
            }
            lines.finish(&mut each);
            assert_eq!(
                seen,
                [r#"{"a":1}"#, r#"{"b":2}"#, r#"{"c":3}"#],
                "chunks of {cut}"
            );
        }
    }

    fn context(error: Option<&str>) -> ViaContext {
        ViaContext {
            target: "store".into(),
            seed: Some(1),
            export: "gs://b/x/".into(),
            operation: "op".into(),
            objects: 1,
            objects_deleted: true,
            elapsed: Duration::from_secs(1),
            interrupted: false,
            error: error.map(str::to_owned),
            logs_url: Some("http://logs".into()),
        }
    }

    #[test]
    fn a_failed_export_fails_with_its_error_and_logs() {
        let mut expected = ExpectedSet::with_capacity(1);
        expected.add("Patient", "p", None, 1);
        let report = ViaReport::new(expected.into_ledger(), false, context(Some("no bucket")));
        assert!(!report.ok);
        assert_eq!(report.logs_url.as_deref(), Some("http://logs"));
        let text = report.text();
        assert!(
            text.ends_with("FAILED: the export failed: no bucket\n"),
            "{text}"
        );
        assert!(text.contains("what failed, and why: http://logs"), "{text}");
        let report = ViaReport::new(ExpectedSet::default().into_ledger(), false, context(None));
        assert!(report.ok && report.logs_url.is_none(), "{}", report.text());
    }

    #[test]
    fn a_store_with_ids_of_its_own_gets_a_hint() {
        let mut expected = ExpectedSet::with_capacity(1);
        let patient = json!({"resourceType": "Patient", "id": "p",
            "identifier": [{"system": "s", "value": "1"}]});
        expected.add(
            "Patient",
            "p",
            Some("identifier=s|1"),
            content_hash(&patient),
        );
        let mut ledger = expected.into_ledger();
        let stored = json!({"resourceType": "Patient", "id": "server-chose-this",
            "identifier": [{"system": "s", "value": "1"}]});
        observe_line(&mut ledger, "x/Patient", stored.to_string().as_bytes());
        ledger.settle();
        let report = ViaReport::new(ledger, false, context(None));
        let text = report.text();
        assert!(text.contains("FAILED: 1 missing; 1 duplicated"), "{text}");
        assert!(text.contains("verify without --via"), "{text}");
    }

    #[test]
    fn unreadable_lines_are_named_and_fail() {
        let mut expected = ExpectedSet::with_capacity(1);
        let patient = json!({"resourceType": "Patient", "id": "p"});
        expected.add("Patient", "p", None, content_hash(&patient));
        let mut ledger = expected.into_ledger();
        observe_line(&mut ledger, "x/Patient", patient.to_string().as_bytes());
        observe_line(&mut ledger, "x/Patient", b"{not json");
        observe_line(&mut ledger, "x/Patient", br#"{"resourceType":"Patient"}"#);
        ledger.settle();
        let report = ViaReport::new(ledger, false, context(None));
        assert!(!report.ok);
        assert_eq!(report.findings.unreadable.count, 2);
        assert_eq!(report.findings.missing.count, 0);
        let text = report.text();
        assert!(text.contains("FAILED: 2 unreadable lines"), "{text}");
        assert!(text.contains("x/Patient: not JSON"), "{text}");
    }
}
