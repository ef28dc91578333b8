//! `fhirgen load --store S --via gs://BUCKET/PREFIX` (or `--emulator --via ...`): the data set
//! is written to Cloud Storage as for `generate -o gs://...` (complete objects of an earlier
//! run reused), imported with `fhirStores.import` (`contentStructure: RESOURCE`), and the
//! long-running operation followed to its end with a progress bar. The objects are deleted
//! after a clean import unless `--keep-objects`. Ctrl-C or SIGTERM leaves the import running
//! (it is Google's to finish or cancel) and says how to follow or cancel it.
//!
//! With `--shard I/N` every shard uploads its part; shard 0 waits for the others and imports
//! the whole data set once (see `shards`).

use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use super::dataset::{Arguments, Layout, Manifest, Uploader, Written};
use super::input::{Findings, InputUpload};
use super::operation::{self, StoreApi};
use super::prefix::refuse_strangers;
use super::sessions::SessionStore;
use super::shards::Waiting;
use crate::cli::{LoadArgs, StorageArgs};
use crate::config::{LoadConfig, SourceConfig};
use crate::exit::{self, usage};
use crate::failed::FailedSink;
use crate::generate::GeneratorConfig;
use crate::store::storage::{Endpoint, GcsUrl, StorageClient, StorageError};
use crate::store::target::{self, Target};

/// What `--via` reads from the flags besides what every load does.
struct ViaOptions {
    quiet: bool,
    json: bool,
    keep_objects: bool,
    wait_for_shards: Duration,
    storage: StorageArgs,
}

#[derive(Debug, Default, Serialize)]
struct Summary {
    /// This run's shard, `I/N`.
    shard: String,
    /// The data set's objects, bytes and resources: every shard's when this run imports.
    objects: usize,
    bytes: u64,
    resources: u64,
    /// This run's own objects: sent now, and found complete from an earlier run.
    objects_uploaded: u32,
    objects_reused: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    operation: Option<String>,
    /// Set on shards other than 0: the shard that imports the whole data set.
    #[serde(skip_serializing_if = "Option::is_none")]
    imported_by: Option<String>,
    imported: u64,
    /// The same as `imported`, under the name every load's summary uses.
    stored: u64,
    failed: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    logs_url: Option<String>,
    objects_deleted: bool,
    interrupted: bool,
    /// Stopped before the upload was complete.
    #[serde(skip)]
    stopped_uploading: bool,
    /// With --input: the items that are not FHIR resources, said on stderr and not imported.
    #[serde(skip_serializing_if = "Option::is_none")]
    invalid: Option<u64>,
    elapsed_seconds: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    seed: Option<u64>,
}

impl Summary {
    /// The data set as far as these manifests describe it.
    fn count(&mut self, parts: &[Manifest]) {
        let objects = parts.iter().flat_map(|part| &part.objects);
        self.objects = objects.clone().count();
        self.bytes = objects.map(|o| o.bytes).sum();
        self.resources = parts.iter().map(|part| part.total).sum();
    }
}

/// What is imported: a generated data set, or the resources of `--input`.
enum Data<'a> {
    Generated(&'a GeneratorConfig),
    Input(crate::source::RecordSource),
}

impl Data<'_> {
    /// The data set `source` describes, where its objects go under `url`, and the arguments
    /// its manifest records. An --input that cannot be read is found here, before anything
    /// else.
    async fn open(
        source: &SourceConfig,
        url: GcsUrl,
    ) -> anyhow::Result<(Data<'_>, Layout, Arguments)> {
        Ok(match source {
            SourceConfig::Generated(config) => (
                Data::Generated(config),
                Layout::new(url, config),
                Arguments::of(config),
            ),
            SourceConfig::Input(path) => {
                let (layout, arguments) = super::input::layout(url, path);
                let records = crate::source::open(source).await?;
                (Data::Input(records), layout, arguments)
            }
        })
    }

    fn seed(&self) -> Option<u64> {
        match self {
            Data::Generated(config) => Some(config.seed),
            Data::Input(_) => None,
        }
    }
}

/// A run's clients and where its data set goes.
struct Via {
    api: StoreApi,
    storage: Arc<StorageClient>,
    layout: Layout,
    options: ViaOptions,
    /// `--failed`: the input's items that are not FHIR resources. What the import itself
    /// refuses is in Cloud Logging, at the operation's `logsUrl`.
    failed: Option<Arc<FailedSink>>,
}

pub async fn run(args: LoadArgs) -> anyhow::Result<ExitCode> {
    let started = Instant::now();
    let url = checked_url(&args)?;
    let options = ViaOptions {
        quiet: args.quiet,
        json: args.json,
        keep_objects: args.keep_objects,
        wait_for_shards: args.wait_for_shards,
        storage: args.storage.clone(),
    };
    let load = LoadConfig::from_args(args)?;
    let (data, layout, own) = Data::open(&load.source, url).await?;
    let connection = &load.connection;
    let target = target::resolve(&load.target, &connection.auth, &connection.network).await?;
    let via = Via::connect(&target, &load, options, layout)?;
    via.preflight(&own).await?;
    let stop = CancellationToken::new();
    let (watcher, interruption) = crate::shutdown::watch(stop.clone(), None);
    let loaded = via.load(data, own, &stop).await;
    watcher.abort();
    let (mut summary, clean) = loaded?;
    let code = match interruption.exit_code() {
        Some(code) => {
            summary.interrupted = true;
            code
        }
        None if clean && summary.invalid.is_none_or(|n| n == 0) => exit::SUCCESS,
        None => exit::FAILURE,
    };
    summary.elapsed_seconds = (started.elapsed().as_secs_f64() * 1000.0).round() / 1000.0;
    via.report(&summary)?;
    Ok(code.into())
}

/// `--via`'s location, and the refusals that need no store.
fn checked_url(args: &LoadArgs) -> anyhow::Result<GcsUrl> {
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
    Ok(url)
}

impl Via {
    fn connect(
        target: &Target,
        load: &LoadConfig,
        options: ViaOptions,
        layout: Layout,
    ) -> anyhow::Result<Self> {
        let (connection, failed) = (&load.connection, load.failed.as_deref());
        let store_url = target
            .google
            .as_ref()
            .map(|store| store.url.clone())
            .context("--via needs a Healthcare API store")?;
        let credentials = Arc::new(target.credentials.clone());
        let storage_endpoint = match (&target.emulator, &options.storage.storage_endpoint) {
            (Some(emulator), None) if std::env::var_os("STORAGE_EMULATOR_HOST").is_none() => {
                Endpoint::resolve(Some(&emulator.addr().to_string()), |_| None)?
            }
            (_, flag) => Endpoint::resolve(flag.as_deref(), |name| std::env::var(name).ok())?,
        };
        let storage = Arc::new(StorageClient::new(
            storage_endpoint,
            credentials.clone(),
            &connection.network,
            connection.retry.clone(),
            connection.timeout,
        )?);
        let api = StoreApi::new(
            &store_url,
            credentials,
            &connection.network,
            connection.retry.clone(),
            connection.timeout,
        )?;
        // Created only once everything else checked out, so a mistake never wipes an old file.
        let failed = failed.map(FailedSink::create).transpose()?.map(Arc::new);
        Ok(Self {
            api,
            storage,
            layout,
            options,
            failed,
        })
    }

    /// Writes the data set's objects and manifest: a generated one reusing what an earlier
    /// run completed, `--input` with ids and references fit for the import.
    async fn upload(
        &self,
        data: Data<'_>,
        arguments: Arguments,
    ) -> anyhow::Result<(Written, Option<Findings>)> {
        let chunk_size = self.options.storage.upload_chunk_size;
        let records = match data {
            Data::Generated(config) => {
                let uploader = Uploader {
                    client: self.storage.clone(),
                    sessions: SessionStore::from_env(|name| std::env::var(name).ok()),
                    chunk_size,
                };
                return Ok((uploader.write(&self.layout, config).await?, None));
            }
            Data::Input(records) => records,
        };
        let upload = InputUpload {
            client: self.storage.clone(),
            chunk_size,
            failed: self.failed.clone(),
        };
        let (written, findings) = upload.write(&self.layout, arguments, records).await?;
        if let Some(error) = self.failed.as_deref().and_then(FailedSink::flush) {
            anyhow::bail!("{error}");
        }
        if findings.unresolved > 0 {
            crate::say!(
                "note: {} reference(s) of the input name a urn:uuid, URL or search that no \
                 resource of the input matches: they are imported as they are, and a store \
                 cannot resolve them",
                findings.unresolved
            );
        }
        Ok((written, Some(findings)))
    }

    /// Before the first byte: the store is R4, the bucket is there and may be written, and
    /// the prefix holds no other data set.
    async fn preflight(&self, own: &Arguments) -> anyhow::Result<()> {
        let settings =
            self.api.settings().await.map_err(|e| {
                preflight_error(&format!("cannot read the store's settings: {e}"), &e)
            })?;
        if let Some(version) = settings["version"].as_str().filter(|v| *v != "R4") {
            return Err(usage(format!(
                "the store holds FHIR {version}, and fhirgen generates R4: import into an R4 store"
            )));
        }
        let bucket = &self.layout.url.bucket;
        let missing = self
            .storage
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
        let listing = self.storage.list(bucket, &self.layout.url.prefix).await?;
        refuse_strangers(&self.storage, &self.layout, own, &listing).await
    }

    fn say_uploaded(&self, written: &Written) {
        if self.options.quiet {
            return;
        }
        let shard = self.layout.shard;
        let whose = if shard.count > 1 {
            format!("shard {shard}: ")
        } else {
            String::new()
        };
        crate::say!(
            "{whose}uploaded {} resources in {} objects under {} ({} sent now, {} already there)",
            written.manifest.total,
            written.manifest.objects.len(),
            self.layout.url,
            written.uploaded,
            written.reused
        );
        if shard.index != 0 {
            crate::say!(
                "shard 0/{} imports the whole data set once every shard has uploaded its part",
                shard.count
            );
        }
    }

    /// Uploads the data set and, on shard 0, waits for the other shards, imports every
    /// shard's objects in one operation and follows it. Gives the summary and whether all
    /// went well. `stop` (Ctrl-C, SIGTERM) ends the upload, the wait or the following, never
    /// the import, which is the store's.
    async fn load(
        &self,
        data: Data<'_>,
        arguments: Arguments,
        stop: &CancellationToken,
    ) -> anyhow::Result<(Summary, bool)> {
        let mut summary = Summary {
            shard: self.layout.shard.to_string(),
            seed: data.seed(),
            ..Summary::default()
        };
        let (written, findings) = tokio::select! {
            uploaded = self.upload(data, arguments) => uploaded?,
            () = stop.cancelled() => {
                summary.stopped_uploading = true;
                return Ok((summary, false));
            }
        };
        summary.objects_uploaded = written.uploaded;
        summary.objects_reused = written.reused;
        summary.invalid = findings.as_ref().map(|f| f.invalid);
        summary.count(std::slice::from_ref(&written.manifest));
        self.say_uploaded(&written);
        if self.layout.shard.index != 0 {
            summary.imported_by = Some(format!("shard 0/{}", self.layout.shard.count));
            return Ok((summary, true));
        }
        let clean = self.import(&written, &mut summary, stop).await?;
        Ok((summary, clean))
    }

    /// Whether everything was imported; the summary gets the operation's outcome.
    async fn import(
        &self,
        written: &Written,
        summary: &mut Summary,
        stop: &CancellationToken,
    ) -> anyhow::Result<bool> {
        let parts = if self.layout.shard.count > 1 {
            let waiting = Waiting {
                storage: &self.storage,
                layout: &self.layout,
                own: &written.manifest,
                timeout: self.options.wait_for_shards,
                quiet: self.options.quiet,
            };
            match waiting.all_shards(stop).await? {
                Some(parts) => parts,
                None => return Ok(false),
            }
        } else {
            vec![written.manifest.clone()]
        };
        summary.count(&parts);
        let bucket = &self.layout.url.bucket;
        let uri = format!("gs://{bucket}/{}", self.layout.import_pattern());
        let operation = self.api.start_import(&uri, bucket).await?;
        summary.operation = Some(operation.clone());
        let visible = !self.options.quiet && !self.options.json;
        let bar = operation::progress_bar(summary.resources, visible);
        let done = self.api.follow(&operation, &bar, stop).await?;
        summary.imported = operation::counter(&done, "success");
        summary.stored = summary.imported;
        summary.failed = operation::counter(&done, "failure");
        if stop.is_cancelled() {
            return Ok(false);
        }
        summary.error = operation::error_message(&done, bucket);
        let clean =
            summary.error.is_none() && summary.failed == 0 && summary.imported >= summary.resources;
        if !clean {
            summary.logs_url = done["metadata"]["logsUrl"].as_str().map(str::to_owned);
        } else if !self.options.keep_objects {
            summary.objects_deleted = self.delete_objects(&parts).await;
        }
        Ok(clean)
    }

    /// Deletes every shard's objects and manifest; says so when it cannot.
    async fn delete_objects(&self, parts: &[Manifest]) -> bool {
        let names = parts.iter().enumerate().flat_map(|(index, part)| {
            let manifest = self.layout.for_shard(index as u32).manifest_name();
            part.objects
                .iter()
                .map(|o| o.name.clone())
                .chain([manifest])
        });
        for name in names {
            if let Err(e) = self.storage.delete(&self.layout.url.bucket, &name).await {
                crate::say!(
                    "note: cannot delete {} after the import ({e}); delete the objects under {} \
                     yourself",
                    self.layout.url.object_url(&name),
                    self.layout.url
                );
                return false;
            }
        }
        true
    }

    fn report(&self, summary: &Summary) -> anyhow::Result<()> {
        if self.options.json {
            exit::print_json_line(summary)?;
        } else if !self.options.quiet {
            self.report_text(summary);
        }
        if summary.interrupted {
            match &summary.operation {
                Some(operation) => crate::say!("{}", self.api.follow_up(operation)),
                None if summary.stopped_uploading => crate::say!(
                    "stopped during the upload; nothing was imported. The same command again \
                     finishes it: a generated data set's upload resumes where it stopped"
                ),
                None => crate::say!(
                    "stopped waiting for the other shards; nothing was imported, and the \
                     uploaded objects are kept: run shard 0 again to import"
                ),
            }
        }
        Ok(())
    }

    fn report_text(&self, summary: &Summary) {
        let Some(operation) = &summary.operation else {
            return;
        };
        let shards = match self.layout.shard.count {
            1 => String::new(),
            n => format!(" of {n} shards"),
        };
        crate::say!(
            "import {operation}: {} imported, {} failed of {} resources ({} objects{shards}, \
             {:.1} MB) in {:.1} s",
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
        } else if !summary.interrupted && !self.options.keep_objects {
            crate::say!(
                "the uploaded objects are kept under {}: the same command again imports them \
                 without uploading",
                self.layout.url
            );
        }
    }
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
