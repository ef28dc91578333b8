//! Where the records to load come from: the generator, or files given with `--input`.

pub mod input;

use crate::config::SourceConfig;
use crate::fhir::Record;
use crate::generate::Generator;

/// One item of the stream the loader drains.
pub enum SourceItem {
    /// Resources to write, with the `path:line` of each when they came from a file.
    Record {
        record: Record,
        sources: Option<Vec<String>>,
    },
    /// Input that is not a FHIR resource: reported, kept in `--failed`, and skipped.
    Invalid {
        source: String,
        message: String,
        content: serde_json::Value,
    },
}

pub struct RecordSource {
    /// Records that must be stored before anything else (shared resources another shard owns).
    pub prerequisites: Vec<Record>,
    pub items: Box<dyn Iterator<Item = SourceItem> + Send>,
    /// The number of resources `items` will yield, when known in advance.
    pub total: Option<u64>,
    pub seed: Option<u64>,
}

/// Opens the source of a load. Walking an `--input` folder and reading the head of its files
/// is blocking work: it runs on a blocking thread, not on the async runtime.
pub async fn open(config: &SourceConfig) -> anyhow::Result<RecordSource> {
    let config = match config {
        SourceConfig::Input(path) => {
            let path = path.clone();
            return tokio::task::spawn_blocking(move || input::open(&path))
                .await
                .map_err(|e| anyhow::anyhow!("reading --input failed: {e}"))?;
        }
        SourceConfig::Generated(config) => config,
    };
    let generator = Generator::new(config.clone());
    let prerequisites = if config.shard.index == 0 {
        Vec::new()
    } else {
        vec![generator.shared_record()]
    };
    let total = (config.shard.count == 1).then_some(config.count);
    Ok(RecordSource {
        prerequisites,
        items: Box::new(generator.map(|record| SourceItem::Record {
            record,
            sources: None,
        })),
        total,
        seed: Some(config.seed),
    })
}

impl SourceItem {
    /// Resources this item would have stored.
    pub fn resource_count(&self) -> u64 {
        match self {
            Self::Record { record, .. } => record.resources.len() as u64,
            Self::Invalid { .. } => 0,
        }
    }
}
