//! `fhirgen load --store S --via gs://BUCKET/PREFIX` (or `--emulator --via ...`): the data set
//! is written to Cloud Storage as for `generate -o gs://...` (complete objects of an earlier
//! run reused), imported with `fhirStores.import` (`contentStructure: RESOURCE`), and the
//! long-running operation followed to its end with a progress bar. The objects are deleted
//! after a clean import unless `--keep-objects`. Ctrl-C or SIGTERM leaves the import running
//! (it is Google's to finish or cancel) and says how to follow or cancel it.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use serde::Serialize;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use super::dataset::{Layout, Uploader, Written};
use super::sessions::SessionStore;
use crate::cli::{LoadArgs, StorageArgs};
use crate::config::{LoadConfig, SourceConfig};
use crate::exit::{self, usage};
use crate::store::storage::{Endpoint, GcsUrl, StorageClient, StorageError};
use crate::store::target;

/// The longest wait between two looks at the operation.
const MAX_POLL: Duration = Duration::from_secs(10);

/// What `--via` reads from the flags besides what every load does.
struct ViaOptions {
    quiet: bool,
    json: bool,
    keep_objects: bool,
    storage: StorageArgs,
}

#[derive(Debug, Serialize)]
struct Summary {
    objects: usize,
    bytes: u64,
    resources: u64,
    objects_uploaded: u32,
    objects_reused: u32,
    operation: String,
    imported: u64,
    /// The same as `imported`, under the name every load's summary uses.
    stored: u64,
    failed: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    logs_url: Option<String>,
    objects_deleted: bool,
    elapsed_seconds: f64,
    seed: u64,
}

pub async fn run(args: LoadArgs) -> anyhow::Result<ExitCode> {
    let started = Instant::now();
    let raw = args.via.clone().unwrap_or_default();
    let url = GcsUrl::parse(&raw).map_err(|why| {
        usage(format!(
            "--via {raw} is not a Cloud Storage location: {why}"
        ))
    })?;
    if args.target.fhir_url.is_some() {
        return Err(usage(
            "--via imports with fhirStores.import, a method of Google's Healthcare API stores (and \
             of the built-in emulator, --emulator), which a --fhir-url server does not have: use \
             --store, or leave out --via",
        ));
    }
    if args.input.is_some() {
        return Err(usage(
            "--via takes a generated data set (--count, --seed, ...); --input is not supported \
             with it yet: load the files without --via, or upload them yourself and run \
             `gcloud healthcare fhir-stores import gcs ... --content-structure=RESOURCE`",
        ));
    }
    let options = ViaOptions {
        quiet: args.quiet,
        json: args.json,
        keep_objects: args.keep_objects,
        storage: args.storage.clone(),
    };
    let load = LoadConfig::from_args(args)?;
    let SourceConfig::Generated(config) = &load.source else {
        return Err(usage("--via takes a generated data set"));
    };
    let connection = &load.connection;
    let target = target::resolve(&load.target, &connection.auth, &connection.network).await?;
    let store_url = target
        .google
        .as_ref()
        .map(|store| store.url.clone())
        .context("--via needs a Healthcare API store")?;
    let store_name = store_url
        .split_once("/projects/")
        .map(|(_, rest)| format!("projects/{rest}"))
        .context("the store URL names no project")?;
    let endpoint = store_url[..store_url.len() - store_name.len() - 1].to_owned();
    let credentials = Arc::new(target.credentials);
    let network = connection.network.clone();
    let retry = connection.retry.clone();
    let timeout = connection.timeout;
    let storage_endpoint = match (&target.emulator, &options.storage.storage_endpoint) {
        (Some(emulator), None) if std::env::var_os("STORAGE_EMULATOR_HOST").is_none() => {
            Endpoint::resolve(Some(&emulator.addr().to_string()), |_| None)?
        }
        (_, flag) => Endpoint::resolve(flag.as_deref(), |name| std::env::var(name).ok())?,
    };
    let storage = Arc::new(StorageClient::new(
        storage_endpoint,
        credentials.clone(),
        &network,
        retry.clone(),
        timeout,
    )?);
    // The Healthcare API's own calls (the store, import, operations) with the store's credential.
    let api = StorageClient::new(
        Endpoint {
            url: reqwest::Url::parse(&endpoint)
                .with_context(|| format!("`{endpoint}` is not a Healthcare API endpoint"))?,
            emulated: false,
        },
        credentials,
        &network,
        retry,
        timeout,
    )?;
    let layout = Layout::new(url, config);
    preflight(&api, &store_url, &storage, &layout).await?;

    let uploader = Uploader {
        client: storage.clone(),
        sessions: SessionStore::from_env(|name| std::env::var(name).ok()),
        chunk_size: options.storage.upload_chunk_size,
    };
    let written = uploader.write(&layout, config).await?;
    if !options.quiet {
        crate::say!(
            "uploaded {} resources in {} objects under {} ({} sent now, {} already there)",
            written.manifest.total,
            written.manifest.objects.len(),
            layout.url,
            written.uploaded,
            written.reused
        );
    }
    let operation = start_import(&api, &store_url, &layout).await?;
    let stop = CancellationToken::new();
    let (watcher, interruption) = crate::shutdown::watch(stop.clone(), None);
    let followed = follow(
        &api,
        &endpoint,
        &operation,
        written.manifest.total,
        &options,
        &stop,
    )
    .await;
    watcher.abort();
    if let Some(code) = interruption.exit_code() {
        print_follow_up(&operation, &store_name);
        return Ok(code.into());
    }
    let done = followed?;
    let counter = |key: &str| counter(&done, key);
    let (imported, failed) = (counter("success"), counter("failure"));
    let error = done["error"]["message"].as_str().map(str::to_owned);
    let clean = error.is_none() && failed == 0 && imported >= written.manifest.total;
    let deleted =
        clean && !options.keep_objects && delete_objects(&storage, &layout, &written).await;
    let summary = Summary {
        objects: written.manifest.objects.len(),
        bytes: written.manifest.objects.iter().map(|o| o.bytes).sum(),
        resources: written.manifest.total,
        objects_uploaded: written.uploaded,
        objects_reused: written.reused,
        operation: operation.clone(),
        imported,
        stored: imported,
        failed,
        logs_url: (!clean)
            .then(|| done["metadata"]["logsUrl"].as_str().map(str::to_owned))
            .flatten(),
        error,
        objects_deleted: deleted,
        elapsed_seconds: (started.elapsed().as_secs_f64() * 1000.0).round() / 1000.0,
        seed: config.seed,
    };
    report(&summary, &options)?;
    Ok(if clean { exit::SUCCESS } else { exit::FAILURE }.into())
}

/// Before the first byte: the store is R4, the bucket is there and may be written.
async fn preflight(
    api: &StorageClient,
    store_url: &str,
    storage: &StorageClient,
    layout: &Layout,
) -> anyhow::Result<()> {
    let settings: Value = api
        .json(api.send(|http| http.get(store_url)).await?)
        .await
        .map_err(|e| preflight_error(&format!("cannot read the store's settings: {e}"), &e))?;
    if let Some(version) = settings["version"].as_str().filter(|v| *v != "R4") {
        return Err(usage(format!(
            "the store holds FHIR {version}, and fhirgen generates R4: import into an R4 store"
        )));
    }
    let bucket = &layout.url.bucket;
    let missing = storage
        .missing_permissions(bucket)
        .await
        .map_err(|e| preflight_error(&format!("cannot use bucket {bucket}: {e}"), &e))?;
    if !missing.is_empty() {
        return Err(usage(format!(
            "the credential may not write to gs://{bucket}: it lacks {}; grant it \
             roles/storage.objectAdmin on the bucket",
            missing.join(", ")
        )));
    }
    let foreign: Vec<String> = storage
        .list(bucket, &layout.url.prefix)
        .await?
        .into_iter()
        .filter(|o| o.name.ends_with(".ndjson") && !layout.owns(&o.name))
        .map(|o| o.name)
        .collect();
    if let Some(first) = foreign.first() {
        return Err(usage(format!(
            "{} holds {} NDJSON object(s) of another data set (such as {first}); the import \
             reads only this run's objects, but use a prefix of its own to keep runs apart, or \
             delete them",
            layout.url,
            foreign.len()
        )));
    }
    Ok(())
}

fn preflight_error(message: &str, error: &StorageError) -> anyhow::Error {
    match error {
        StorageError::Refused {
            status: 400 | 401 | 403 | 404,
            ..
        } => usage(message),
        _ => anyhow::anyhow!("{message}"),
    }
}

/// Starts the import of this data set's objects; gives the operation's name.
async fn start_import(
    api: &StorageClient,
    store_url: &str,
    layout: &Layout,
) -> anyhow::Result<String> {
    let uri = format!("gs://{}/{}", layout.url.bucket, layout.import_pattern());
    let request = json!({"contentStructure": "RESOURCE", "gcsSource": {"uri": uri}}).to_string();
    let url = format!("{store_url}:import");
    let response = api
        .send(|http| {
            http.post(&url)
                .header("content-type", "application/json; charset=utf-8")
                .body(request.clone())
        })
        .await?;
    let started: Value = api.json(response).await.map_err(|e| match &e {
        StorageError::Refused { status: 403, .. } => anyhow::anyhow!(
            "the import was refused: {e}. The store reads the objects as its Healthcare Service \
             Agent, service-PROJECT_NUMBER@gcp-sa-healthcare.iam.gserviceaccount.com: grant it \
             roles/storage.objectViewer on gs://{}",
            layout.url.bucket
        ),
        _ => anyhow::anyhow!("cannot start the import of {uri}: {e}"),
    })?;
    started["name"]
        .as_str()
        .map(str::to_owned)
        .context("the import's answer names no operation")
}

fn counter(operation: &Value, key: &str) -> u64 {
    let value = &operation["metadata"]["counter"][key];
    value
        .as_u64()
        .or_else(|| value.as_str().and_then(|s| s.parse().ok()))
        .unwrap_or(0)
}

/// Looks at the operation, more and more rarely, until it is done or the run is stopped.
async fn follow(
    api: &StorageClient,
    endpoint: &str,
    operation: &str,
    total: u64,
    options: &ViaOptions,
    stop: &CancellationToken,
) -> anyhow::Result<Value> {
    let bar = progress_bar(total, options);
    let url = format!("{endpoint}/{operation}");
    let mut wait = Duration::from_millis(100);
    loop {
        let state: Value = api
            .json(api.send(|http| http.get(&url)).await?)
            .await
            .with_context(|| format!("cannot read the operation {operation}"))?;
        let (success, failure) = (counter(&state, "success"), counter(&state, "failure"));
        bar.set_position(success + failure);
        bar.set_message(format!("imported {success}, failed {failure}"));
        if state["done"] == true {
            bar.finish_and_clear();
            return Ok(state);
        }
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            () = stop.cancelled() => {
                bar.abandon();
                return Ok(state);
            }
        }
        wait = (wait * 2).min(MAX_POLL);
    }
}

fn progress_bar(total: u64, options: &ViaOptions) -> indicatif::ProgressBar {
    use std::io::IsTerminal;
    if options.quiet || options.json || !std::io::stderr().is_terminal() {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new(total);
    bar.set_style(
        indicatif::ProgressStyle::with_template("import {bar:40} {pos}/{len} {msg} [{elapsed}]")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    bar
}

/// After Ctrl-C: the import goes on at Google; say how to follow or cancel it.
fn print_follow_up(operation: &str, store_name: &str) {
    let id = operation.rsplit('/').next().unwrap_or(operation);
    let part = |name: &str| {
        store_name
            .split('/')
            .skip_while(|p| *p != name)
            .nth(1)
            .unwrap_or("?")
            .to_owned()
    };
    let (project, location, dataset) = (part("projects"), part("locations"), part("datasets"));
    crate::say!(
        "the import goes on in the store: operation {operation}\n  follow it: gcloud healthcare \
         operations describe {id} --project={project} --location={location} --dataset={dataset}\n  \
         cancel it: gcloud alpha healthcare operations cancel {id} --project={project} \
         --location={location} --dataset={dataset}"
    );
}

/// Deletes the data set's objects and manifest; says so when it cannot.
async fn delete_objects(storage: &StorageClient, layout: &Layout, written: &Written) -> bool {
    let names = written
        .manifest
        .objects
        .iter()
        .map(|o| o.name.clone())
        .chain([layout.manifest_name()]);
    for name in names {
        if let Err(e) = storage.delete(&layout.url.bucket, &name).await {
            crate::say!(
                "note: cannot delete {} after the import ({e}); delete the objects under {} yourself",
                layout.url.object_url(&name),
                layout.url
            );
            return false;
        }
    }
    true
}

fn report(summary: &Summary, options: &ViaOptions) -> anyhow::Result<()> {
    if options.json {
        return exit::print_json_line(summary);
    }
    if options.quiet {
        return Ok(());
    }
    crate::say!(
        "import {}: {} imported, {} failed of {} resources ({} objects, {:.1} MB) in {:.1} s",
        summary.operation,
        summary.imported,
        summary.failed,
        summary.resources,
        summary.objects,
        summary.bytes as f64 / 1e6,
        summary.elapsed_seconds
    );
    if let Some(error) = &summary.error {
        crate::say!("the import reported: {error}");
    }
    if let Some(logs) = &summary.logs_url {
        crate::say!("what failed, and why: {logs}");
    }
    if summary.objects_deleted {
        crate::say!("the uploaded objects were deleted (--keep-objects keeps them)");
    }
    Ok(())
}
