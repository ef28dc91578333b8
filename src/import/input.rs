//! `load --input PATH --via gs://...`: the user's own resources, imported. The import stores
//! every resource under the id it carries and leaves references as they are, so each
//! resource gets the id the REST path's update mode would PUT it to (its own when it is a
//! valid FHIR id, else one derived from its key, the same on every run), and every reference
//! to a resource of the input (a Bundle's `urn:uuid:` or absolute fullUrl, a relative
//! reference resolved within its Bundle) becomes that resource's `Type/id`.
//!
//! The input is read once, by the same readers as `load --input` (records come after what
//! they refer to), into temporary files of up to 250,000 resources; each is uploaded while
//! the next is written. Every run reads and uploads again: unlike generated data, files can
//! change between runs without their name changing.

use std::collections::{BTreeMap, HashMap};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use anyhow::Context;
use bytes::Bytes;
use tokio::sync::mpsc;

use super::dataset::{
    Arguments, Chunk, Layout, Manifest, ManifestObject, ObjectUpload, Outcome, Written,
};
use super::sessions::SessionStore;
use crate::failed::{FailedSink, Failure};
use crate::fhir::{IdField, Resource};
use crate::source::{RecordSource, SourceItem};
use crate::store::storage::{GcsUrl, StorageClient, crc32c_text};

/// Resources per object, as for generated data sets.
const RESOURCES_PER_OBJECT: u64 = 250_000;

/// Times an object is sent again from its start when its upload session is lost.
const MAX_RESTARTS: usize = 3;

/// The layout of `--input PATH`'s objects: their tag depends on the path only, so that a run
/// again with the same input writes over the objects of the last one.
pub fn layout(url: GcsUrl, path: &Path) -> (Layout, Arguments) {
    let described = if path.as_os_str() == "-" {
        // Stdin is another data set every time.
        format!("stdin {:?}", std::time::SystemTime::now())
    } else {
        std::path::absolute(path)
            .unwrap_or_else(|_| path.to_owned())
            .display()
            .to_string()
    };
    let tag = format!(
        "{:08x}",
        crc32c::crc32c(format!("input|{described}").as_bytes())
    );
    (
        Layout::of_input(url, tag),
        Arguments::of_input(path.display().to_string()),
    )
}

/// What reading the input found besides its resources.
#[derive(Debug, Default)]
pub struct Findings {
    /// Items that are not FHIR resources, each said on stderr with its file and line.
    pub invalid: u64,
    /// References to a `urn:uuid:`, an absolute URL or a search (`Type?identifier=...`) that
    /// name no resource of the input: imported as they are, which a store cannot resolve.
    pub unresolved: u64,
}

/// One object's content, complete in a temporary file.
struct ObjectFile {
    path: PathBuf,
    resources: u64,
    size: u64,
    crc: u32,
}

pub struct InputUpload {
    pub client: Arc<StorageClient>,
    pub chunk_size: usize,
    /// `--failed`: where the items that are not FHIR resources go, with their place.
    pub failed: Option<Arc<FailedSink>>,
}

impl InputUpload {
    /// Reads `source` into objects under `layout`, uploading each as it is complete, then the
    /// manifest.
    pub async fn write(
        &self,
        layout: &Layout,
        arguments: Arguments,
        source: RecordSource,
    ) -> anyhow::Result<(Written, Findings)> {
        self.forget_last_run(layout).await?;
        let dir = tempfile::tempdir().context("cannot make a temporary folder for the objects")?;
        let (sender, mut files) = mpsc::channel::<ObjectFile>(1);
        let folder = dir.path().to_owned();
        let failed = self.failed.clone();
        let reading = tokio::task::spawn_blocking(move || {
            write_files(source, &folder, failed.as_deref(), &sender)
        });
        let mut objects = Vec::new();
        while let Some(file) = files.recv().await {
            let name = layout.object_name(objects.len() as u32);
            self.upload(&layout.url.bucket, &name, &file).await?;
            let _ = std::fs::remove_file(&file.path);
            objects.push(ManifestObject {
                name,
                resources: file.resources,
                bytes: file.size,
                crc32c: crc32c_text(file.crc),
            });
        }
        let (resources, findings) = reading.await.context("the input reader stopped")??;
        anyhow::ensure!(
            !objects.is_empty(),
            "the input holds no FHIR resources: nothing to import"
        );
        let manifest = Manifest {
            arguments,
            total: resources.values().sum(),
            objects,
            resources,
        };
        let text = serde_json::to_vec_pretty(&manifest)?;
        self.client
            .upload_small(
                &layout.url.bucket,
                &layout.manifest_name(),
                "application/json",
                text.into(),
            )
            .await
            .with_context(|| format!("cannot write the manifest under {}", layout.url))?;
        let uploaded = manifest.objects.len() as u32;
        let written = Written {
            manifest,
            uploaded,
            reused: 0,
            bytes_sent: 0,
        };
        Ok((written, findings))
    }

    /// Deletes the objects a run with the same input left (after a failed import, or with
    /// --keep-objects): the input may have made more of them then, which the import would read.
    async fn forget_last_run(&self, layout: &Layout) -> anyhow::Result<()> {
        let bucket = &layout.url.bucket;
        let manifest = layout.manifest_name();
        for object in self.client.list(bucket, &layout.url.prefix).await? {
            if layout.owns(&object.name) || object.name == manifest {
                self.client
                    .delete(bucket, &object.name)
                    .await
                    .with_context(|| {
                        format!("cannot replace {}", layout.url.object_url(&object.name))
                    })?;
            }
        }
        Ok(())
    }

    /// Sends the file as the object `name`, from its start again when the session is lost.
    async fn upload(&self, bucket: &str, name: &str, file: &ObjectFile) -> anyhow::Result<()> {
        let task = ObjectUpload {
            client: self.client.clone(),
            sessions: SessionStore::none(),
            bucket: bucket.to_owned(),
            name: name.to_owned(),
            bytes_sent: Arc::new(AtomicU64::new(0)),
        };
        let object = format!("gs://{bucket}/{name}");
        for _ in 0..MAX_RESTARTS {
            let (sender, receiver) = mpsc::channel::<Chunk>(1);
            let (path, size, chunk_size) = (file.path.clone(), file.size, self.chunk_size);
            let feeding =
                tokio::task::spawn_blocking(move || feed(&path, size, chunk_size, &sender));
            let outcome = task.run(receiver).await;
            feeding
                .await
                .context("the object's reader stopped")?
                .with_context(|| format!("cannot read {}", file.path.display()))?;
            match outcome.with_context(|| format!("cannot upload {object}"))? {
                Outcome::Done => return Ok(()),
                Outcome::Restart => continue,
            }
        }
        anyhow::bail!(
            "cannot upload {object}: its upload session was lost {MAX_RESTARTS} times; run the \
             same command again"
        )
    }
}

/// Hands the file's content on in chunks, the last one with the size.
fn feed(
    path: &Path,
    size: u64,
    chunk_size: usize,
    sender: &mpsc::Sender<Chunk>,
) -> std::io::Result<()> {
    let mut file = std::fs::File::open(path)?;
    let mut offset = 0;
    while offset < size {
        let length = (size - offset).min(chunk_size as u64) as usize;
        let mut data = vec![0; length];
        file.read_exact(&mut data)?;
        let end = offset + length as u64;
        let chunk = Chunk {
            offset,
            data: Bytes::from(data),
            total: (end == size).then_some(size),
        };
        if sender.blocking_send(chunk).is_err() {
            break;
        }
        offset = end;
    }
    Ok(())
}

/// Reads every record, writing its resources with their ids and references set into files
/// of up to [`RESOURCES_PER_OBJECT`], each handed on when complete. Gives the count per type.
fn write_files(
    source: RecordSource,
    folder: &Path,
    failed: Option<&FailedSink>,
    sender: &mpsc::Sender<ObjectFile>,
) -> anyhow::Result<(BTreeMap<String, u64>, Findings)> {
    let mut ids = Ids::default();
    let mut findings = Findings::default();
    let mut counts: BTreeMap<String, u64> = BTreeMap::new();
    let mut writer = FileWriter::create(folder, 0)?;
    let mut line = Vec::new();
    for item in source.items {
        let record = match item {
            SourceItem::Record { record, .. } => record,
            SourceItem::Invalid {
                source,
                message,
                content,
            } => {
                crate::say!("{source}: {message}; not imported");
                findings.invalid += 1;
                if let Some(sink) = failed {
                    let failure = Failure {
                        status: None,
                        message,
                        source: Some(source),
                    };
                    sink.write(&content, &failure);
                }
                continue;
            }
        };
        for resource in &record.resources {
            ids.learn(resource);
        }
        for resource in &record.resources {
            line.clear();
            findings.unresolved += ids.write(resource, &mut line);
            line.push(b'\n');
            writer.write(&line)?;
            *counts
                .entry(resource.resource_type().to_owned())
                .or_default() += 1;
            if writer.resources == RESOURCES_PER_OBJECT {
                let next = FileWriter::create(folder, writer.index + 1)?;
                let full = std::mem::replace(&mut writer, next).finish()?;
                if sender.blocking_send(full).is_err() {
                    anyhow::bail!("the upload stopped");
                }
            }
        }
    }
    if writer.resources > 0 {
        let last = writer.finish()?;
        if sender.blocking_send(last).is_err() {
            anyhow::bail!("the upload stopped");
        }
    }
    Ok((counts, findings))
}

/// The `Type/id` each key of the input is imported as, where it differs from the key (a
/// Bundle entry's fullUrl), and each conditional reference by identifier resolves to. Keys
/// are held as 128-bit hashes: memory grows with the identifiers of the input, not their text.
#[derive(Default)]
struct Ids {
    targets: HashMap<u128, String>,
}

impl Ids {
    fn hash(key: &str) -> u128 {
        uuid::Uuid::new_v5(&uuid::Uuid::NAMESPACE_OID, key.as_bytes()).as_u128()
    }

    /// Remembers what the resource's key, and each conditional reference by one of its
    /// identifiers (`Type?identifier=system|value`, as Synthea refers to shared resources),
    /// are imported as.
    fn learn(&mut self, resource: &Resource) {
        let resource_type = resource.resource_type();
        let target = format!("{resource_type}/{}", resource.stable_id());
        for (system, value) in resource.identifiers() {
            let condition = format!("{resource_type}?identifier={system}|{value}");
            self.targets.insert(Self::hash(&condition), target.clone());
        }
        if target != resource.key {
            self.targets.insert(Self::hash(&resource.key), target);
        }
    }

    /// Writes the resource with its id and references set; gives the references left that
    /// only make sense inside a Bundle.
    fn write(&self, resource: &Resource, out: &mut Vec<u8>) -> u64 {
        let unresolved = std::cell::Cell::new(0);
        let resolve = |reference: &str| {
            let target = self.targets.get(&Self::hash(reference)).cloned();
            let local_only = reference.starts_with("urn:")
                || reference.starts_with("http://")
                || reference.starts_with("https://")
                || reference.contains('?');
            if target.is_none() && local_only {
                unresolved.set(unresolved.get() + 1);
            }
            target
        };
        let id = resource.stable_id();
        resource.write_rewritten(out, &resolve, IdField::Set(&id));
        unresolved.get()
    }
}

/// One object being written to its temporary file.
struct FileWriter {
    index: u32,
    path: PathBuf,
    file: std::io::BufWriter<std::fs::File>,
    resources: u64,
    size: u64,
    crc: u32,
}

impl FileWriter {
    fn create(folder: &Path, index: u32) -> anyhow::Result<Self> {
        let path = folder.join(format!("{index:03}.ndjson"));
        let file = std::fs::File::create(&path)
            .with_context(|| format!("cannot write {}", path.display()))?;
        Ok(Self {
            index,
            path,
            file: std::io::BufWriter::new(file),
            resources: 0,
            size: 0,
            crc: 0,
        })
    }

    fn write(&mut self, line: &[u8]) -> anyhow::Result<()> {
        self.file
            .write_all(line)
            .with_context(|| format!("cannot write {}", self.path.display()))?;
        self.crc = crc32c::crc32c_append(self.crc, line);
        self.size += line.len() as u64;
        self.resources += 1;
        Ok(())
    }

    fn finish(mut self) -> anyhow::Result<ObjectFile> {
        self.file
            .flush()
            .with_context(|| format!("cannot write {}", self.path.display()))?;
        Ok(ObjectFile {
            path: self.path,
            resources: self.resources,
            size: self.size,
            crc: self.crc,
        })
    }
}
