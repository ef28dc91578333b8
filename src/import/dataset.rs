//! A generated data set written as Cloud Storage objects: NDJSON, one resource per line, each
//! with its own id and `Type/id` references, which is what `fhirStores.import` reads with
//! `contentStructure: RESOURCE`.
//!
//! The data set is cut into a number of objects that depends only on the arguments; patient
//! record `m` goes to object `m mod K` and the shared record to object 0, so the same
//! arguments make the same objects, byte for byte, on any machine. Object names start with a
//! hash, spreading them over the key space as Google advises against hot spots. One thread
//! generates; every object has its own upload task, all streaming at once, chunk by chunk.
//!
//! Resuming: an object that exists under its name is complete (an upload only becomes an
//! object when it is finished) and is not sent again; its CRC32C is still checked against
//! what the run generates. An unfinished upload resumes from its kept session at the offset
//! the service reports, or starts over when the session is gone. The manifest (arguments,
//! objects with sizes and checksums, counts per type) is written last: when it is there and
//! agrees, the data set is complete.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::Context;
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use super::sessions::SessionStore;
use crate::fhir::RecordKind;
use crate::generate::{Generator, GeneratorConfig, Shard};
use crate::store::storage::{
    GcsUrl, ObjectMeta, StorageClient, StorageError, UploadState, crc32c_text,
};

/// About 250 MB of NDJSON per object: big enough that an import has few to open, small
/// enough that a data set of millions has several to upload at once.
const RESOURCES_PER_OBJECT: u64 = 250_000;
const MAX_OBJECTS: u64 = 64;

/// Passes over the data set for objects whose upload had to start over.
const MAX_PASSES: usize = 3;

pub const NDJSON_TYPE: &str = "application/fhir+ndjson";

/// Where each object of a data set goes.
#[derive(Debug, Clone)]
pub struct Layout {
    pub url: GcsUrl,
    pub shard: Shard,
    pub objects: u32,
    /// A hash of the arguments: runs with other arguments never touch these objects.
    tag: String,
}

impl Layout {
    /// The layout of a data set read from `--input`, whose objects are counted as they are
    /// written: `tag` tells it from other data sets under the prefix.
    pub fn of_input(url: GcsUrl, tag: String) -> Self {
        Self {
            url,
            shard: Shard::WHOLE,
            objects: 0,
            tag,
        }
    }

    pub fn new(url: GcsUrl, config: &GeneratorConfig) -> Self {
        let shard = config.shard;
        let per_shard = config.count.div_ceil(u64::from(shard.count));
        let objects = per_shard
            .div_ceil(RESOURCES_PER_OBJECT)
            .clamp(1, MAX_OBJECTS) as u32;
        // Every shard of one data set shares the tag: the index is left out.
        let arguments = Arguments::of(config);
        let mut described = [
            arguments.generator,
            arguments.count.to_string(),
            arguments.seed.to_string(),
            arguments.as_of,
            arguments.types,
            shard.count.to_string(),
        ]
        .join("|");
        if let Some(size) = arguments.attachment_size {
            described.push_str(&format!("|attachments of {size} bytes"));
        }
        let tag = format!("{:08x}", crc32c::crc32c(described.as_bytes()));
        Self {
            url,
            shard,
            objects,
            tag,
        }
    }

    pub fn object_name(&self, object: u32) -> String {
        let (i, n) = (self.shard.index, self.shard.count);
        let spread = crc32c::crc32c(format!("{}/{i}/{n}/{object}", self.tag).as_bytes());
        format!(
            "{}{spread:08x}-{}-shard{i}of{n}-{object:03}.ndjson",
            self.url.prefix, self.tag
        )
    }

    /// Whether `name` is one of this data set's objects (of any shard).
    pub fn owns(&self, name: &str) -> bool {
        name.contains(&format!("-{}-shard", self.tag))
    }

    /// The import's source: every shard's objects of this data set, by Google's wildcards.
    pub fn import_pattern(&self) -> String {
        let n = self.shard.count;
        format!("{}*-{}-shard*of{n}-*.ndjson", self.url.prefix, self.tag)
    }

    /// The layout of another shard of the same data set.
    pub fn for_shard(&self, index: u32) -> Layout {
        Layout {
            shard: Shard {
                index,
                count: self.shard.count,
            },
            ..self.clone()
        }
    }

    /// A manifest of another data set under this prefix, read from its name: its tag and shard.
    pub fn foreign_manifest(&self, name: &str) -> Option<(String, Shard)> {
        let rest = name
            .strip_prefix(&self.url.prefix)?
            .strip_prefix("fhirgen-")?
            .strip_suffix(".manifest.json")?;
        let (tag, shard) = rest.split_once("-shard")?;
        let (index, count) = shard.split_once("of")?;
        let shard = Shard {
            index: index.parse().ok()?,
            count: count.parse().ok()?,
        };
        (tag != self.tag).then(|| (tag.to_owned(), shard))
    }

    pub fn manifest_name(&self) -> String {
        let (i, n) = (self.shard.index, self.shard.count);
        format!(
            "{}fhirgen-{}-shard{i}of{n}.manifest.json",
            self.url.prefix, self.tag
        )
    }
}

/// What made the data set: a manifest from other arguments does not describe these objects.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Arguments {
    pub generator: String,
    pub count: u64,
    pub seed: u64,
    pub as_of: String,
    pub types: String,
    pub shard: String,
    /// `--attachment-size`: it changes every note, so it names another data set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attachment_size: Option<usize>,
    /// `--input`: the files read instead of generating (the data arguments are then unset).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input: Option<String>,
}

impl Arguments {
    /// What differs from `other`, in the flags' words: `--seed 1 here, 2 there`.
    pub fn differences(&self, other: &Arguments) -> Vec<String> {
        let size = |a: Option<usize>| a.map_or_else(|| "none".to_owned(), |s| s.to_string());
        [
            ("fhirgen version", &self.generator, &other.generator),
            ("--count", &self.count.to_string(), &other.count.to_string()),
            ("--seed", &self.seed.to_string(), &other.seed.to_string()),
            ("--as-of", &self.as_of, &other.as_of),
            ("--types", &self.types, &other.types),
            ("--shard", &self.shard, &other.shard),
            (
                "--attachment-size",
                &size(self.attachment_size),
                &size(other.attachment_size),
            ),
        ]
        .into_iter()
        .filter(|(_, here, there)| here != there)
        .map(|(flag, here, there)| format!("{flag} {here} here, {there} there"))
        .collect()
    }

    /// The same arguments for shard `index` of the same count.
    pub fn for_shard(&self, shard: Shard) -> Arguments {
        Arguments {
            shard: shard.to_string(),
            ..self.clone()
        }
    }

    pub fn of(config: &GeneratorConfig) -> Self {
        Self {
            generator: concat!("fhirgen ", env!("CARGO_PKG_VERSION")).to_owned(),
            count: config.count,
            seed: config.seed,
            as_of: config.as_of.to_string(),
            types: config.types.to_string(),
            shard: config.shard.to_string(),
            attachment_size: config.attachment_size,
            input: None,
        }
    }

    /// The arguments of a data set read from `--input`.
    pub fn of_input(input: String) -> Self {
        Self {
            generator: concat!("fhirgen ", env!("CARGO_PKG_VERSION")).to_owned(),
            count: 0,
            seed: 0,
            as_of: String::new(),
            types: String::new(),
            shard: Shard::WHOLE.to_string(),
            attachment_size: None,
            input: Some(input),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestObject {
    pub name: String,
    pub resources: u64,
    pub bytes: u64,
    /// As Cloud Storage writes it: base64 of the big-endian CRC32C.
    pub crc32c: String,
}

/// Written last: the data set is complete when it is there.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub arguments: Arguments,
    pub objects: Vec<ManifestObject>,
    /// Resources per type.
    pub resources: BTreeMap<String, u64>,
    pub total: u64,
}

/// What a run did.
#[derive(Debug, Clone)]
pub struct Written {
    pub manifest: Manifest,
    /// Objects sent in this run, and found complete from an earlier one.
    pub uploaded: u32,
    pub reused: u32,
    /// Bytes sent in upload requests (a resent part counts again).
    pub bytes_sent: u64,
}

pub struct Uploader {
    pub client: Arc<StorageClient>,
    pub sessions: SessionStore,
    pub chunk_size: usize,
}

/// One piece of an object's content, in order.
pub(super) struct Chunk {
    pub offset: u64,
    pub data: Bytes,
    /// Set on the last chunk: the object's size.
    pub total: Option<u64>,
}

pub(super) enum Outcome {
    Done,
    /// The session was lost: the object must be sent again from its start.
    Restart,
}

impl Uploader {
    /// Writes the data set `config` describes under `layout`, reusing what an earlier run with
    /// the same arguments completed, and the manifest last.
    pub async fn write(
        &self,
        layout: &Layout,
        config: &GeneratorConfig,
    ) -> anyhow::Result<Written> {
        let bucket = &layout.url.bucket;
        let existing: HashMap<String, ObjectMeta> = self
            .client
            .list(bucket, &layout.url.prefix)
            .await
            .with_context(|| format!("cannot list {}", layout.url))?
            .into_iter()
            .map(|o| (o.name.clone(), o))
            .collect();
        if let Some(manifest) = self.complete_manifest(layout, config, &existing).await {
            return Ok(Written {
                reused: manifest.objects.len() as u32,
                manifest,
                uploaded: 0,
                bytes_sent: 0,
            });
        }
        let mut wanted: HashSet<u32> = (0..layout.objects)
            .filter(|&j| !existing.contains_key(&layout.object_name(j)))
            .collect();
        let reused = layout.objects - wanted.len() as u32;
        let bytes_sent = Arc::new(AtomicU64::new(0));
        let mut produced = None;
        for _ in 0..MAX_PASSES {
            let pass = self.pass(layout, config, &wanted, &bytes_sent).await?;
            let mut again: HashSet<u32> = pass.restart;
            // A complete object from an earlier run must be what this run generates.
            for (j, object) in pass.manifest.objects.iter().enumerate() {
                let j = j as u32;
                let stale = existing.get(&object.name).is_some_and(|found| {
                    !wanted.contains(&j)
                        && (found.size != object.bytes
                            || found.crc32c.as_deref() != Some(&object.crc32c))
                });
                if stale {
                    crate::say!(
                        "note: {} differs from what these arguments make; sending it again",
                        layout.url.object_url(&object.name)
                    );
                    again.insert(j);
                }
            }
            produced = Some(pass.manifest);
            wanted = again;
            if wanted.is_empty() {
                break;
            }
        }
        anyhow::ensure!(
            wanted.is_empty(),
            "{} object(s) under {} could not be uploaded in {MAX_PASSES} passes: their upload \
             sessions kept being lost; run the same command again",
            wanted.len(),
            layout.url
        );
        let manifest = produced.expect("at least one pass");
        let text = serde_json::to_vec_pretty(&manifest)?;
        self.client
            .upload_small(
                bucket,
                &layout.manifest_name(),
                "application/json",
                text.into(),
            )
            .await
            .with_context(|| format!("cannot write the manifest under {}", layout.url))?;
        Ok(Written {
            manifest,
            uploaded: layout.objects - reused,
            reused,
            bytes_sent: bytes_sent.load(Ordering::SeqCst),
        })
    }

    /// The manifest of an earlier run with these arguments, when it is there and every object
    /// it names is too, with its size and checksum.
    async fn complete_manifest(
        &self,
        layout: &Layout,
        config: &GeneratorConfig,
        existing: &HashMap<String, ObjectMeta>,
    ) -> Option<Manifest> {
        existing.get(&layout.manifest_name())?;
        let text = self
            .client
            .download(&layout.url.bucket, &layout.manifest_name())
            .await
            .ok()?;
        let manifest: Manifest = serde_json::from_slice(&text).ok()?;
        let complete = manifest.arguments == Arguments::of(config)
            && manifest.objects.len() == layout.objects as usize
            && manifest.objects.iter().all(|object| {
                existing.get(&object.name).is_some_and(|found| {
                    found.size == object.bytes && found.crc32c.as_deref() == Some(&object.crc32c)
                })
            });
        complete.then_some(manifest)
    }

    /// Generates the whole data set once, uploading the `wanted` objects.
    async fn pass(
        &self,
        layout: &Layout,
        config: &GeneratorConfig,
        wanted: &HashSet<u32>,
        bytes_sent: &Arc<AtomicU64>,
    ) -> anyhow::Result<Pass> {
        let mut senders = Vec::with_capacity(layout.objects as usize);
        let mut uploads = tokio::task::JoinSet::new();
        for j in 0..layout.objects {
            if !wanted.contains(&j) {
                senders.push(None);
                continue;
            }
            let (sender, receiver) = mpsc::channel::<Chunk>(1);
            senders.push(Some(sender));
            let task = ObjectUpload {
                client: self.client.clone(),
                sessions: self.sessions.clone(),
                bucket: layout.url.bucket.clone(),
                name: layout.object_name(j),
                bytes_sent: bytes_sent.clone(),
            };
            uploads.spawn(async move { (j, task.run(receiver).await) });
        }
        let (generating, chunk_size, objects) = (config.clone(), self.chunk_size, layout.objects);
        let produce =
            tokio::task::spawn_blocking(move || produce(generating, objects, chunk_size, senders));
        let mut restart = HashSet::new();
        let mut failure = None;
        while let Some(joined) = uploads.join_next().await {
            let (j, outcome) = joined.context("an upload task stopped unexpectedly")?;
            match outcome {
                Ok(Outcome::Done) => {}
                Ok(Outcome::Restart) => {
                    restart.insert(j);
                }
                Err(e) => {
                    failure.get_or_insert_with(|| {
                        anyhow::anyhow!(e).context(format!(
                            "cannot upload {}",
                            layout.url.object_url(&layout.object_name(j))
                        ))
                    });
                }
            }
        }
        let (objects, resources) = produce
            .await
            .context("the generator stopped unexpectedly")?;
        if let Some(failure) = failure {
            return Err(failure);
        }
        let manifest = Manifest {
            arguments: Arguments::of(config),
            total: resources.values().sum(),
            objects: objects
                .iter()
                .enumerate()
                .map(|(j, o)| ManifestObject {
                    name: layout.object_name(j as u32),
                    resources: o.resources,
                    bytes: o.size,
                    crc32c: crc32c_text(o.crc),
                })
                .collect(),
            resources,
        };
        Ok(Pass { manifest, restart })
    }
}

struct Pass {
    manifest: Manifest,
    restart: HashSet<u32>,
}

/// One object's upload: resumes a kept session or starts one, then sends the chunks the
/// generator hands it, skipping what the service already has.
pub(super) struct ObjectUpload {
    pub client: Arc<StorageClient>,
    pub sessions: SessionStore,
    pub bucket: String,
    pub name: String,
    pub bytes_sent: Arc<AtomicU64>,
}

impl ObjectUpload {
    fn endpoint(&self) -> String {
        self.client.endpoint().url.to_string()
    }

    pub async fn run(&self, mut chunks: mpsc::Receiver<Chunk>) -> Result<Outcome, StorageError> {
        let (session, mut kept) = self.session().await?;
        while let Some(chunk) = chunks.recv().await {
            let end = chunk.offset + chunk.data.len() as u64;
            if end <= kept && chunk.total.is_none() {
                continue;
            }
            if kept < chunk.offset {
                // The service lost bytes it had said it kept.
                return Ok(self.restart());
            }
            let data = chunk.data.slice((kept - chunk.offset) as usize..);
            self.bytes_sent
                .fetch_add(data.len() as u64, Ordering::Relaxed);
            match self
                .client
                .upload_chunk(&session, kept, data, chunk.total)
                .await
            {
                Ok(UploadState::Persisted(now)) => kept = now,
                Ok(UploadState::Complete(_)) => {
                    self.sessions
                        .forget(&self.endpoint(), &self.bucket, &self.name);
                    return Ok(Outcome::Done);
                }
                Err(StorageError::SessionGone) => return Ok(self.restart()),
                Err(e) => return Err(e),
            }
        }
        Err(StorageError::Refused {
            status: 0,
            message: "the generator stopped before the object was complete".to_owned(),
        })
    }

    fn restart(&self) -> Outcome {
        self.sessions
            .forget(&self.endpoint(), &self.bucket, &self.name);
        Outcome::Restart
    }

    /// The kept session and what it holds, or a new one.
    async fn session(&self) -> Result<(String, u64), StorageError> {
        let endpoint = self.endpoint();
        if let Some(session) = self.sessions.load(&endpoint, &self.bucket, &self.name) {
            match self.client.upload_status(&session, None).await {
                Ok(UploadState::Persisted(kept)) => return Ok((session, kept)),
                Ok(UploadState::Complete(_)) | Err(StorageError::SessionGone) => {}
                Err(e) => return Err(e),
            }
        }
        let session = self
            .client
            .begin_upload(&self.bucket, &self.name, NDJSON_TYPE)
            .await?;
        self.sessions
            .save(&endpoint, &self.bucket, &self.name, &session);
        Ok((session, 0))
    }
}

/// One object's content as it is generated.
struct ObjectBuffer {
    sender: Option<mpsc::Sender<Chunk>>,
    buffer: Vec<u8>,
    sent: u64,
    size: u64,
    crc: u32,
    resources: u64,
}

impl ObjectBuffer {
    fn write(&mut self, bytes: &[u8]) {
        self.crc = crc32c::crc32c_append(self.crc, bytes);
        self.size += bytes.len() as u64;
        if self.sender.is_some() {
            self.buffer.extend_from_slice(bytes);
        }
    }

    /// Hands on whole chunks, keeping at least one byte back so that the last chunk, which
    /// tells the size, is never empty.
    fn send_full(&mut self, chunk_size: usize) {
        while self.buffer.len() > chunk_size {
            let rest = self.buffer.split_off(chunk_size);
            let data = std::mem::replace(&mut self.buffer, rest);
            self.send(data, None);
        }
    }

    fn finish(&mut self) {
        let data = std::mem::take(&mut self.buffer);
        self.send(data, Some(self.size));
    }

    fn send(&mut self, data: Vec<u8>, total: Option<u64>) {
        let Some(sender) = &self.sender else {
            return;
        };
        let chunk = Chunk {
            offset: self.sent,
            data: Bytes::from(data),
            total,
        };
        self.sent += chunk.data.len() as u64;
        // The upload stopped (its session was lost, or it failed): its bytes are not needed.
        if sender.blocking_send(chunk).is_err() {
            self.sender = None;
            self.buffer = Vec::new();
        }
    }
}

/// Generates the data set on this thread, handing each wanted object's chunks to its upload.
fn produce(
    config: GeneratorConfig,
    objects: u32,
    chunk_size: usize,
    senders: Vec<Option<mpsc::Sender<Chunk>>>,
) -> (Vec<ObjectBuffer>, BTreeMap<String, u64>) {
    let mut buffers: Vec<ObjectBuffer> = senders
        .into_iter()
        .map(|sender| ObjectBuffer {
            buffer: Vec::with_capacity(if sender.is_some() {
                chunk_size + (1 << 16)
            } else {
                0
            }),
            sender,
            sent: 0,
            size: 0,
            crc: 0,
            resources: 0,
        })
        .collect();
    let mut counts: BTreeMap<String, u64> = BTreeMap::new();
    let mut patients: u64 = 0;
    for record in Generator::new(config) {
        let j = match record.kind {
            RecordKind::Shared => 0,
            RecordKind::Patient => {
                patients += 1;
                ((patients - 1) % u64::from(objects)) as usize
            }
        };
        let object = &mut buffers[j];
        for resource in &record.resources {
            object.write(resource.json().as_bytes());
            object.write(b"\n");
            object.resources += 1;
            match counts.get_mut(resource.resource_type()) {
                Some(n) => *n += 1,
                None => {
                    counts.insert(resource.resource_type().to_owned(), 1);
                }
            }
        }
        object.send_full(chunk_size);
    }
    for object in &mut buffers {
        object.finish();
    }
    (buffers, counts)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::{DataArgs, SeedArg};

    fn config(count: u64, seed: u64, shard: Option<&str>) -> GeneratorConfig {
        let data = DataArgs {
            count,
            seed: SeedArg::Fixed(seed),
            as_of: chrono::NaiveDate::from_ymd_opt(2025, 6, 1),
            shard: shard.map(str::to_owned),
            types: Vec::new(),
            attachment_size: None,
        };
        GeneratorConfig::from_args_with_env(&data, |_| None).unwrap()
    }

    #[test]
    fn the_layout_depends_on_the_arguments_only() {
        let url = GcsUrl::parse("gs://bucket-a/run/").unwrap();
        let small = Layout::new(url.clone(), &config(1000, 1, None));
        assert_eq!(small.objects, 1);
        let big = Layout::new(url.clone(), &config(1_000_000, 1, None));
        assert_eq!(big.objects, 4);
        assert_eq!(
            Layout::new(url.clone(), &config(10_000_000_000, 1, None)).objects,
            64
        );
        let names: HashSet<String> = (0..big.objects).map(|j| big.object_name(j)).collect();
        assert_eq!(names.len(), 4);
        // Hash first, so names do not sort in sequence.
        assert!(
            names
                .iter()
                .all(|n| n.starts_with("run/") && n.ends_with(".ndjson"))
        );
        let firsts: HashSet<char> = names.iter().map(|n| n.as_bytes()[4] as char).collect();
        assert!(firsts.len() > 1, "{names:?}");
        assert_eq!(
            Layout::new(url.clone(), &config(1_000_000, 1, None)).object_name(2),
            big.object_name(2)
        );
        let other_seed = Layout::new(url.clone(), &config(1_000_000, 2, None));
        assert_ne!(other_seed.object_name(2), big.object_name(2));
        let shard = Layout::new(url, &config(1_000_000, 1, Some("1/4")));
        assert_eq!(shard.objects, 1);
        assert!(shard.manifest_name().contains("shard1of4"));
        assert_ne!(shard.manifest_name(), big.manifest_name());
    }
}
