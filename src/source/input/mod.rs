//! `--input PATH|-`: loads data that already exists instead of generating it.
//!
//! Reads NDJSON of resources (bulk-data exports, `--failed` files), NDJSON of Bundles, JSON
//! files of one resource or Bundle (pretty-printed or not), any of these gzipped, a folder of
//! them (recursively, in an order where what is referred to comes first), or stdin. Everything
//! streams: a file is read, parsed and handed on as it goes; what has to wait for what it
//! refers to is held within a bound and then goes to disk, and only the keys read (as hashes)
//! grow with the size of the input.
//!
//! Records: a transaction, batch, collection or searchset Bundle is one record of its entries
//! (split, when it has to wait, into the parts that can wait apart).
//! NDJSON lines that refer to a resource of the record being built join it (a patient's lines
//! in `fhirgen generate` output); any other line starts a new record (every line of a bulk
//! per-type file). Consecutive shared resources (Organizations, Practitioners...) make one
//! shared record.
//!
//! Order: whatever order the input has, a record comes out only after every record it refers
//! to (see `defer`), so that a bulk export concatenated in any order loads whole.
//!
//! Keys: a Bundle entry's `fullUrl`, else `Type/id`, else `Type/<source key>`. Resources
//! without a usable identifier get a source key that depends only on their content (see
//! `resources`), so that re-runs find them instead of storing them again.

mod defer;
mod order;
mod read;
mod resources;
mod types;

use std::collections::{HashSet, VecDeque};
use std::path::{Path, PathBuf};

use serde_json::Value;

use super::{RecordSource, SourceItem};
use crate::fhir::{Record, RecordKind, Resource};
use read::{Step, ValueReader};
use resources::{Origin, Unpacked};

/// Sets how much memory records waiting for what they refer to may take before they are
/// written to a temporary file (bytes; `k`, `M`, `G` suffixes allowed).
pub const DEFER_MEMORY_ENV: &str = "FHIRGEN_INPUT_DEFER_MEMORY";

/// NDJSON records are cut at this many resources, however they refer to each other.
const MAX_RECORD: usize = 500;

/// Opens `path` (a file, a folder, or `-` for stdin) for reading as it is loaded. A path that
/// does not exist, or a folder without files, is a usage error; anything wrong inside the
/// files is reported item by item while the rest loads. Blocking: it walks the folder and
/// reads the head of its files.
pub fn open(path: &Path) -> anyhow::Result<RecordSource> {
    let memory = defer_memory()?;
    let inputs = if path.as_os_str() == "-" {
        vec![Input::Stdin]
    } else {
        let metadata = std::fs::metadata(path).map_err(|e| {
            let why = match e.kind() {
                std::io::ErrorKind::NotFound => "no such file or directory".to_owned(),
                _ => e.to_string(),
            };
            crate::exit::usage(format!("--input {}: {why}", path.display()))
        })?;
        if metadata.is_dir() {
            let files = order::files_in(path)
                .map_err(|e| crate::exit::usage(format!("--input {}: {e}", path.display())))?;
            if files.is_empty() {
                return Err(crate::exit::usage(format!(
                    "--input {}: the folder holds no files",
                    path.display()
                )));
            }
            files.into_iter().map(Input::File).collect()
        } else {
            vec![Input::File(path.to_owned())]
        }
    };
    let read = InputItems {
        inputs: inputs.into_iter(),
        current: None,
    };
    Ok(RecordSource {
        prerequisites: Vec::new(),
        items: Box::new(defer::InOrder::new(read, memory)),
        total: None,
        seed: None,
    })
}

fn defer_memory() -> anyhow::Result<usize> {
    let Ok(text) = std::env::var(DEFER_MEMORY_ENV) else {
        return Ok(defer::DEFAULT_MEMORY);
    };
    parse_bytes(&text).ok_or_else(|| {
        crate::exit::usage(format!(
            "{DEFER_MEMORY_ENV}={text}: expected a number of bytes, such as 268435456 or 256M"
        ))
    })
}

/// `1024`, `64k`, `256M`, `2G` (powers of 1024).
fn parse_bytes(text: &str) -> Option<usize> {
    let text = text.trim();
    let (digits, unit) = match text.char_indices().last()? {
        (at, c) if c.is_ascii_alphabetic() => (&text[..at], c.to_ascii_uppercase()),
        _ => (text, 'B'),
    };
    let shift = match unit {
        'B' => 0,
        'K' => 10,
        'M' => 20,
        'G' => 30,
        _ => return None,
    };
    digits.trim().parse::<usize>().ok()?.checked_mul(1 << shift)
}

enum Input {
    Stdin,
    File(PathBuf),
}

struct InputItems {
    inputs: std::vec::IntoIter<Input>,
    current: Option<FileItems>,
}

impl Iterator for InputItems {
    type Item = SourceItem;

    fn next(&mut self) -> Option<SourceItem> {
        loop {
            if let Some(item) = self.current.as_mut().and_then(FileItems::next) {
                return Some(item);
            }
            self.current = Some(FileItems::open(self.inputs.next()?));
        }
    }
}

/// The items of one file (or of stdin), in file order.
struct FileItems {
    label: String,
    values: Option<ValueReader>,
    building: RecordBuilder,
    ready: VecDeque<SourceItem>,
}

impl FileItems {
    fn open(input: Input) -> Self {
        match input {
            Input::Stdin => Self::new("-".to_owned(), read::stdin()),
            Input::File(path) => Self::new(path.display().to_string(), read::open_file(&path)),
        }
    }

    fn new(label: String, bytes: std::io::Result<read::Bytes>) -> Self {
        let mut items = Self {
            label,
            values: None,
            building: RecordBuilder::default(),
            ready: VecDeque::new(),
        };
        match bytes {
            Ok(bytes) => items.values = Some(ValueReader::new(bytes)),
            Err(e) => items.ready.push_back(SourceItem::Invalid {
                source: items.label.clone(),
                message: format!("cannot read: {e}"),
                content: Value::Null,
            }),
        }
        items
    }

    fn next(&mut self) -> Option<SourceItem> {
        loop {
            if let Some(item) = self.ready.pop_front() {
                return Some(item);
            }
            let values = self.values.as_mut()?;
            match values.next_step() {
                Step::Value { line, value } => self.accept(line, value),
                Step::NotJson {
                    line,
                    message,
                    text,
                } => self.invalid(format!("{}:{line}", self.label), message, text.into()),
                Step::Broken {
                    line,
                    message,
                    text,
                } => {
                    self.values = None;
                    self.finish_record();
                    let message = format!("{message}; the rest of {} is skipped", self.label);
                    self.invalid(format!("{}:{line}", self.label), message, text.into());
                }
                Step::End => {
                    self.values = None;
                    self.finish_record();
                }
            }
        }
    }

    fn accept(&mut self, line: u64, value: Value) {
        let origin = Origin {
            label: &self.label,
            line,
        };
        match resources::unpack(value, &origin) {
            Unpacked::Single(resource) => {
                let source = origin.source();
                if let Some(done) = self.building.push(resource, source) {
                    self.ready.push_back(done);
                }
            }
            Unpacked::Entries(entries, bad) => {
                self.finish_record();
                for entry in bad {
                    self.invalid(entry.source, entry.message, entry.content);
                }
                if entries.is_empty() {
                    return;
                }
                let (resources, sources): (Vec<Resource>, Vec<String>) =
                    entries.into_iter().unzip();
                let all_shared = resources.iter().all(types::is_shared);
                self.ready.push_back(record(resources, sources, all_shared));
            }
            Unpacked::Invalid { message, content } => {
                let source = origin.source();
                self.invalid(source, message, content);
            }
        }
    }

    fn finish_record(&mut self) {
        if let Some(done) = self.building.finish() {
            self.ready.push_back(done);
        }
    }

    fn invalid(&mut self, source: String, message: String, content: Value) {
        self.ready.push_back(SourceItem::Invalid {
            source,
            message,
            content,
        });
    }
}

fn record(resources: Vec<Resource>, sources: Vec<String>, shared: bool) -> SourceItem {
    let kind = if shared {
        RecordKind::Shared
    } else {
        RecordKind::Patient
    };
    SourceItem::Record {
        record: Record { kind, resources },
        sources: Some(sources),
    }
}

/// Groups consecutive NDJSON resources into records.
#[derive(Default)]
struct RecordBuilder {
    resources: Vec<Resource>,
    sources: Vec<String>,
    /// What the record's resources are referred to by: their keys, and `urn:uuid:<id>` for
    /// `Type/<uuid>` keys (bundle references fed back from a `--failed` file use that form).
    /// When a record is cut at `MAX_RECORD`, the next one carries on with the same keys, so
    /// that the rest of a large patient still travels in records, not line by line.
    keys: HashSet<String>,
    shared: bool,
}

/// Past this many keys, a record cut at `MAX_RECORD` starts afresh (memory stays bounded even
/// when every line refers to the one before).
const MAX_CARRIED_KEYS: usize = 100 * MAX_RECORD;

impl RecordBuilder {
    /// Adds `resource`, first finishing the record being built when `resource` does not
    /// belong with it or the record is full; returns the finished record.
    fn push(&mut self, resource: Resource, source: String) -> Option<SourceItem> {
        let shared = types::is_shared(&resource);
        let belongs = if self.shared {
            shared && !self.resources.is_empty()
        } else {
            resource.any_reference(|reference| self.keys.contains(reference))
        };
        let done = if !belongs {
            let done = self.finish();
            self.shared = shared;
            done
        } else if self.resources.len() >= MAX_RECORD {
            let carried = std::mem::take(&mut self.keys);
            let done = self.finish();
            if carried.len() < MAX_CARRIED_KEYS {
                self.keys = carried;
            }
            done
        } else {
            None
        };
        if let Some((_, id)) = resource.key.split_once('/') {
            if uuid::Uuid::try_parse(id).is_ok() {
                self.keys.insert(format!("urn:uuid:{id}"));
            }
        }
        self.keys.insert(resource.key.clone());
        self.resources.push(resource);
        self.sources.push(source);
        done
    }

    fn finish(&mut self) -> Option<SourceItem> {
        self.keys.clear();
        if self.resources.is_empty() {
            return None;
        }
        Some(record(
            std::mem::take(&mut self.resources),
            std::mem::take(&mut self.sources),
            self.shared,
        ))
    }
}

/// Whether any `reference` inside `value` is one of `keys`.
#[cfg(test)]
mod tests;
