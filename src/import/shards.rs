//! `load --via` on N machines (`--shard I/N`): every shard uploads its part and writes its
//! manifest last; shard 0 then waits for every other shard's manifest and imports the whole
//! data set in one operation. A shard is complete when its manifest is there, was written
//! with the same arguments, and every object it names is there with its size and checksum.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use super::dataset::{Layout, Manifest};
use super::prefix::refuse_strangers;
use crate::exit::usage;
use crate::store::storage::{ObjectMeta, StorageClient};

/// The longest wait between two looks at the prefix.
const MAX_LOOK: Duration = Duration::from_secs(10);

/// How often a wait with no news says it is still waiting.
const STILL_WAITING: Duration = Duration::from_secs(60);

/// How shard 0 waits.
pub struct Waiting<'a> {
    pub storage: &'a StorageClient,
    pub layout: &'a Layout,
    /// Shard 0's own manifest.
    pub own: &'a Manifest,
    pub timeout: Duration,
    pub quiet: bool,
}

impl Waiting<'_> {
    /// Every shard's manifest in shard order, once all are complete; `None` when `stop` is
    /// cancelled first. Gives up after the timeout, naming the shards still missing.
    pub async fn all_shards(
        &self,
        stop: &CancellationToken,
    ) -> anyhow::Result<Option<Vec<Manifest>>> {
        let count = self.layout.shard.count;
        let mut complete = BTreeMap::from([(self.layout.shard.index, self.own.clone())]);
        let started = Instant::now();
        let mut wait = Duration::from_millis(200);
        let mut said = (0, Duration::ZERO);
        loop {
            let listing = self
                .storage
                .list(&self.layout.url.bucket, &self.layout.url.prefix)
                .await?;
            refuse_strangers(self.storage, self.layout, &self.own.arguments, &listing).await?;
            let listing: HashMap<&str, &ObjectMeta> =
                listing.iter().map(|o| (o.name.as_str(), o)).collect();
            let unknown: Vec<u32> = (0..count).filter(|i| !complete.contains_key(i)).collect();
            for index in unknown {
                if let Some(manifest) = self.complete_shard(index, &listing).await? {
                    complete.insert(index, manifest);
                }
            }
            if complete.len() == count as usize {
                return Ok(Some(complete.into_values().collect()));
            }
            let missing: Vec<String> = (0..count)
                .filter(|i| !complete.contains_key(i))
                .map(|i| i.to_string())
                .collect();
            let waited = started.elapsed();
            if waited >= self.timeout {
                return Err(self.gave_up(&missing));
            }
            if !self.quiet && (said.0 != complete.len() || waited >= said.1 + STILL_WAITING) {
                crate::say!(
                    "waiting for shards under {}: {} of {count} uploaded; not yet {} \
                     ({:.0} s of --wait-for-shards {})",
                    self.layout.url,
                    complete.len(),
                    missing.join(", "),
                    waited.as_secs_f64(),
                    humantime::format_duration(self.timeout),
                );
                said = (complete.len(), waited);
            }
            tokio::select! {
                () = tokio::time::sleep(wait.min(self.timeout - waited)) => {}
                () = stop.cancelled() => return Ok(None),
            }
            wait = (wait * 2).min(MAX_LOOK);
        }
    }

    /// Shard `index`'s manifest when the shard is complete.
    async fn complete_shard(
        &self,
        index: u32,
        listing: &HashMap<&str, &ObjectMeta>,
    ) -> anyhow::Result<Option<Manifest>> {
        let layout = self.layout.for_shard(index);
        let name = layout.manifest_name();
        if !listing.contains_key(name.as_str()) {
            return Ok(None);
        }
        let Ok(text) = self.storage.download(&layout.url.bucket, &name).await else {
            return Ok(None);
        };
        let manifest: Manifest = serde_json::from_slice(&text).map_err(|e| {
            anyhow::anyhow!(
                "{} is not a fhirgen manifest ({e}): delete it and run shard {index} again",
                layout.url.object_url(&name)
            )
        })?;
        let expected = self.own.arguments.for_shard(layout.shard);
        let differences = expected.differences(&manifest.arguments);
        if !differences.is_empty() {
            return Err(usage(format!(
                "shard {index} was written with other arguments ({}; see {}): every shard must \
                 run the same command and fhirgen version, only the shard index differing",
                differences.join(", "),
                layout.url.object_url(&name)
            )));
        }
        let objects_there = manifest.objects.len() == layout.objects as usize
            && manifest.objects.iter().enumerate().all(|(j, object)| {
                object.name == layout.object_name(j as u32)
                    && listing.get(object.name.as_str()).is_some_and(|found| {
                        found.size == object.bytes
                            && found.crc32c.as_deref() == Some(&object.crc32c)
                    })
            });
        Ok(objects_there.then_some(manifest))
    }

    fn gave_up(&self, missing: &[String]) -> anyhow::Error {
        let count = self.layout.shard.count;
        anyhow::anyhow!(
            "shard(s) {} of {count} had not finished uploading under {} after --wait-for-shards \
             {}: start them (the same command with --shard I/{count}, or let the scheduler \
             retry them), then run this shard again; what is uploaded is kept and not sent again",
            missing.join(", "),
            self.layout.url,
            humantime::format_duration(self.timeout)
        )
    }
}
