//! What else a prefix holds. The import reads only this data set's objects, but another data
//! set's NDJSON under the same prefix is refused: two runs given one prefix is a mistake more
//! often than not. A manifest of this same data set cut into another number of shards is the
//! mistake of a job whose copies were given different counts, and is named as such.

use super::dataset::{Arguments, Layout, Manifest};
use crate::exit::usage;
use crate::store::storage::{ObjectMeta, StorageClient};

/// Refuses `listing` (the objects under the layout's prefix) when it holds another data set's
/// NDJSON, or a shard of this one cut into another number of shards.
pub async fn refuse_strangers(
    storage: &StorageClient,
    layout: &Layout,
    own: &Arguments,
    listing: &[ObjectMeta],
) -> anyhow::Result<()> {
    for object in listing {
        let Some((tag, shard)) = layout.foreign_manifest(&object.name) else {
            continue;
        };
        if shard.count == layout.shard.count {
            continue;
        }
        let Ok(text) = storage.download(&layout.url.bucket, &object.name).await else {
            continue;
        };
        let Ok(theirs) = serde_json::from_slice::<Manifest>(&text) else {
            continue;
        };
        if theirs.arguments.for_shard(layout.shard) == *own {
            return Err(usage(format!(
                "{} is shard {shard} of this same data set, and this run is shard {}: every copy \
                 must be given the same number of shards (--shard auto/N, N the job's task \
                 count). Delete that run's objects (gs://{}/{}*-{tag}-*) and its manifest, or \
                 give this run a prefix of its own",
                layout.url.object_url(&object.name),
                layout.shard,
                layout.url.bucket,
                layout.url.prefix,
            )));
        }
    }
    let foreign: Vec<&str> = listing
        .iter()
        .map(|o| o.name.as_str())
        .filter(|name| name.ends_with(".ndjson") && !layout.owns(name))
        .collect();
    if let Some(first) = foreign.first() {
        return Err(usage(format!(
            "{} holds {} NDJSON object(s) of another data set, or of this one with another \
             --shard count (such as {first}); the import reads only this run's objects, but use \
             a prefix of its own to keep runs apart, or delete them",
            layout.url,
            foreign.len()
        )));
    }
    Ok(())
}
