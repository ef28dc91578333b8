//! Records in an order where what they refer to comes first, whatever order the input has.
//!
//! Once a record is passed on, the keys it makes known are remembered (as 128-bit hashes:
//! about 50 bytes per resource). A record that refers to something not passed on yet waits:
//! in memory while the waiting records take less than a bound, beyond it in a temporary file.
//! A record waiting in memory goes as soon as the last thing it waits for has gone; the file
//! is read again once the input is done, as long as that lets more records go. When a reading
//! lets none go, whatever is still waited for and that no waiting record provides is taken to
//! be in the store already (a reference out of the data set), and reading goes on; records
//! that still wait after that (they refer to each other in a cycle) go as they are.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::fs::File;
use std::hash::{BuildHasher, RandomState};
use std::io::{self, BufRead, BufReader, BufWriter, Seek, Write};

use serde::{Deserialize, Serialize};
use serde_json::Value;
use serde_json::value::RawValue;

use super::SourceItem;
use crate::fhir::{Record, RecordKind, Resource};

/// Memory that records waiting for what they refer to may take before they go to disk.
pub(super) const DEFAULT_MEMORY: usize = 256 << 20;

type KeyHash = u128;

/// Yields the records of `input` once everything they refer to has been yielded.
pub(super) struct InOrder<I> {
    input: Pass<I>,
    stage: Stage,
    hasher: KeyHasher,
    /// Keys of the records passed on.
    seen: HashSet<KeyHash>,
    /// Records waiting in memory, by arrival: at the end, the rest goes in input order.
    waiting: BTreeMap<u64, Waiting>,
    waiting_on: HashMap<KeyHash, Vec<u64>>,
    arrivals: u64,
    memory: usize,
    memory_limit: usize,
    /// Where this reading puts records that do not fit in memory.
    spill: Option<Spill>,
    /// Set when a temporary file could not be written: records then wait in memory.
    spill_failed: bool,
    /// Whether a record was passed on since the current reading started.
    progress: bool,
    ready: VecDeque<SourceItem>,
}

enum Pass<I> {
    Input(I),
    Spilled(SpillReader),
    Done,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    /// Records wait for what the data set provides.
    Ordering,
    /// What no waiting record provides was taken to be in the store already.
    OutsideTaken,
    /// What still waits goes as it is.
    Flushing,
}

struct Waiting {
    record: Record,
    sources: Option<Vec<String>>,
    missing: usize,
    memory: usize,
}

impl<I: Iterator<Item = SourceItem>> InOrder<I> {
    pub(super) fn new(input: I, memory_limit: usize) -> Self {
        Self {
            input: Pass::Input(input),
            stage: Stage::Ordering,
            hasher: KeyHasher::default(),
            seen: HashSet::new(),
            waiting: BTreeMap::new(),
            waiting_on: HashMap::new(),
            arrivals: 0,
            memory: 0,
            memory_limit,
            spill: None,
            spill_failed: false,
            progress: false,
            ready: VecDeque::new(),
        }
    }

    fn read(&mut self) -> Option<SourceItem> {
        match &mut self.input {
            Pass::Input(items) => items.next(),
            Pass::Spilled(reader) => reader.next(),
            Pass::Done => None,
        }
    }

    fn offer(&mut self, record: Record, sources: Option<Vec<String>>) {
        let provided = self.provided(&record);
        let missing = self.missing(&record, &provided);
        let parts = self.parts(&record);
        if missing.is_empty() || self.stage == Stage::Flushing {
            // Whole, but with what is referred to first: shared records go out one resource
            // per job, each job once the jobs before it that it refers to are done.
            let order: Vec<usize> = parts.into_iter().flatten().collect();
            let (record, sources) = match order.windows(2).all(|w| w[0] < w[1]) {
                true => (record, sources),
                false => take_parts(record, sources, vec![order]).remove(0),
            };
            return self.pass_on(record, sources, provided);
        }
        if parts.len() > 1 {
            for (record, sources) in take_parts(record, sources, parts) {
                self.offer(record, sources);
            }
            return;
        }
        let memory = footprint(&record, sources.as_deref(), missing.len());
        if self.memory + memory > self.memory_limit && !self.spill_failed {
            match self.spill_record(&record, sources.as_deref()) {
                Ok(()) => return,
                Err(e) => {
                    self.spill_failed = true;
                    eprintln!(
                        "warning: cannot set records aside in a temporary file ({e}); those \
                         that wait for what they refer to now wait in memory (set TMPDIR to a \
                         folder with room)"
                    );
                }
            }
        }
        let id = self.arrivals;
        self.arrivals += 1;
        for key in &missing {
            self.waiting_on.entry(*key).or_default().push(id);
        }
        self.memory += memory;
        self.waiting.insert(
            id,
            Waiting {
                record,
                sources,
                missing: missing.len(),
                memory,
            },
        );
    }

    /// The resources of a record in the smallest parts that can wait apart, each after those
    /// it refers to. Lines of a file gathered into a record because they refer
    /// to each other (a Patient and the Observations after it) must not wait together for what
    /// only some of them refer to: records could then wait for each other in a cycle that the
    /// data does not have. Resources that refer to each other in a cycle stay together (only a
    /// transaction can store them).
    fn parts(&self, record: &Record) -> Vec<Vec<usize>> {
        if record.resources.len() < 2 {
            return vec![vec![0]];
        }
        let mut position: HashMap<KeyHash, usize> = HashMap::new();
        for (i, resource) in record.resources.iter().enumerate() {
            for key in self.provided_by(resource) {
                position.entry(key).or_insert(i);
            }
        }
        let refers_to: Vec<Vec<usize>> = record
            .resources
            .iter()
            .enumerate()
            .map(|(i, resource)| {
                let mut targets = Vec::new();
                resource.any_reference(|reference| {
                    if let Some(&j) = position.get(&self.hasher.hash(reference)) {
                        if j != i && !targets.contains(&j) {
                            targets.push(j);
                        }
                    }
                    false
                });
                targets
            })
            .collect();
        strongly_connected(&refers_to)
    }

    fn spill_record(&mut self, record: &Record, sources: Option<&[String]>) -> io::Result<()> {
        if self.spill.is_none() {
            self.spill = Some(Spill::create()?);
        }
        self.spill
            .as_mut()
            .expect("created above")
            .write(record, sources)
    }

    /// Passes `record` on, then every waiting record that it was the last to wait for.
    fn pass_on(&mut self, record: Record, sources: Option<Vec<String>>, provided: Vec<KeyHash>) {
        let mut going = VecDeque::from([(record, sources, provided)]);
        while let Some((record, sources, provided)) = going.pop_front() {
            self.ready.push_back(SourceItem::Record { record, sources });
            self.progress = true;
            for key in provided {
                for waiting in self.see(key) {
                    let provided = self.provided(&waiting.record);
                    going.push_back((waiting.record, waiting.sources, provided));
                }
            }
        }
    }

    /// Marks `key` as passed on; the waiting records that waited for it last.
    fn see(&mut self, key: KeyHash) -> Vec<Waiting> {
        if !self.seen.insert(key) {
            return Vec::new();
        }
        let mut released = Vec::new();
        for id in self.waiting_on.remove(&key).unwrap_or_default() {
            let Some(waiting) = self.waiting.get_mut(&id) else {
                continue;
            };
            waiting.missing -= 1;
            if waiting.missing == 0 {
                let waiting = self.waiting.remove(&id).expect("found above");
                self.memory -= waiting.memory;
                released.push(waiting);
            }
        }
        released
    }

    /// What others may refer to `record`'s resources by: their keys, `urn:uuid:<id>` for
    /// `Type/<uuid>` keys (bundle references fed back from a `--failed` file), and
    /// `Type?identifier=system|value` for each of their identifiers.
    fn provided(&self, record: &Record) -> Vec<KeyHash> {
        record
            .resources
            .iter()
            .flat_map(|resource| self.provided_by(resource))
            .collect()
    }

    fn provided_by(&self, resource: &Resource) -> Vec<KeyHash> {
        let mut keys = vec![self.hasher.hash(&resource.key)];
        if let Some((_, id)) = resource.key.split_once('/') {
            if uuid::Uuid::try_parse(id).is_ok() {
                keys.push(self.hasher.hash(&format!("urn:uuid:{id}")));
            }
        }
        for_each_identifier_reference(resource, |reference| {
            keys.push(self.hasher.hash(reference));
        });
        keys
    }

    /// What `record` refers to outside itself that has not been passed on yet.
    fn missing(&self, record: &Record, provided: &[KeyHash]) -> Vec<KeyHash> {
        let mut missing: Vec<KeyHash> = Vec::new();
        for resource in &record.resources {
            resource.any_reference(|reference| {
                if reference.is_empty() || reference.starts_with('#') {
                    return false;
                }
                let key = self.hasher.hash(reference);
                if !self.seen.contains(&key) && !provided.contains(&key) && !missing.contains(&key)
                {
                    missing.push(key);
                }
                false
            });
        }
        missing
    }

    /// The input (or a reading of the temporary file) is done: starts the next reading, or
    /// says that nothing is left.
    fn next_pass(&mut self) -> bool {
        let spilled = match self.spill.take().map(Spill::into_reader).transpose() {
            Ok(spilled) => spilled,
            Err(e) => {
                self.ready.push_back(spill_lost(&e));
                None
            }
        };
        let progress = std::mem::replace(&mut self.progress, false);
        if spilled.is_none() && self.waiting.is_empty() {
            self.input = Pass::Done;
            return !self.ready.is_empty();
        }
        match self.stage {
            Stage::Ordering | Stage::OutsideTaken if progress && spilled.is_some() => {}
            Stage::Ordering => {
                self.stage = Stage::OutsideTaken;
                let spilled = match spilled {
                    Some(mut reader) => match self.take_outside_references(&mut reader) {
                        Ok(()) => Some(reader),
                        Err(e) => {
                            self.ready.push_back(spill_lost(&e));
                            None
                        }
                    },
                    None => {
                        self.take_outside_references_in_memory();
                        None
                    }
                };
                self.input = spilled.map_or(Pass::Done, Pass::Spilled);
                return true;
            }
            Stage::OutsideTaken | Stage::Flushing => {
                self.stage = Stage::Flushing;
                self.waiting_on.clear();
                self.memory = 0;
                for (_, waiting) in std::mem::take(&mut self.waiting) {
                    let provided = self.provided(&waiting.record);
                    self.pass_on(waiting.record, waiting.sources, provided);
                }
            }
        }
        self.input = spilled.map_or(Pass::Done, Pass::Spilled);
        true
    }

    /// Takes every key that is waited for and that no waiting record provides to be in the
    /// store already, and lets go what waited for it.
    fn take_outside_references(&mut self, spilled: &mut SpillReader) -> io::Result<()> {
        let mut provided: HashSet<KeyHash> = HashSet::new();
        let mut missing: HashSet<KeyHash> = self.waiting_on.keys().copied().collect();
        for waiting in self.waiting.values() {
            provided.extend(self.provided(&waiting.record));
        }
        for item in spilled.by_ref() {
            if let SourceItem::Record { record, .. } = item {
                let own = self.provided(&record);
                missing.extend(self.missing(&record, &own));
                provided.extend(own);
            }
        }
        spilled.rewind()?;
        self.take_as_present(missing.difference(&provided).copied().collect());
        Ok(())
    }

    fn take_outside_references_in_memory(&mut self) {
        let provided: HashSet<KeyHash> = self
            .waiting
            .values()
            .flat_map(|waiting| self.provided(&waiting.record))
            .collect();
        let outside = self
            .waiting_on
            .keys()
            .filter(|key| !provided.contains(key))
            .copied()
            .collect();
        self.take_as_present(outside);
    }

    fn take_as_present(&mut self, keys: Vec<KeyHash>) {
        for key in keys {
            for waiting in self.see(key) {
                let provided = self.provided(&waiting.record);
                self.pass_on(waiting.record, waiting.sources, provided);
            }
        }
    }
}

impl<I: Iterator<Item = SourceItem>> Iterator for InOrder<I> {
    type Item = SourceItem;

    fn next(&mut self) -> Option<SourceItem> {
        loop {
            if let Some(item) = self.ready.pop_front() {
                return Some(item);
            }
            match self.read() {
                Some(SourceItem::Record { record, sources }) => self.offer(record, sources),
                Some(invalid) => return Some(invalid),
                None if self.next_pass() => {}
                None => return None,
            }
        }
    }
}

/// The resources of `record` (and their sources) at the indices of each part, as records.
fn take_parts(
    record: Record,
    sources: Option<Vec<String>>,
    parts: Vec<Vec<usize>>,
) -> Vec<(Record, Option<Vec<String>>)> {
    let mut resources: Vec<Option<Resource>> = record.resources.into_iter().map(Some).collect();
    let mut sources: Option<Vec<Option<String>>> =
        sources.map(|s| s.into_iter().map(Some).collect());
    parts
        .into_iter()
        .map(|part| {
            let taken = Record {
                kind: record.kind,
                resources: part.iter().filter_map(|&i| resources[i].take()).collect(),
            };
            let taken_sources = sources
                .as_mut()
                .map(|s| part.iter().filter_map(|&i| s[i].take()).collect());
            (taken, taken_sources)
        })
        .collect()
}

/// The strongly connected parts of a graph (Tarjan's algorithm), each part after the parts it
/// has edges to, the nodes of a part in order.
fn strongly_connected(edges: &[Vec<usize>]) -> Vec<Vec<usize>> {
    struct Walk<'a> {
        edges: &'a [Vec<usize>],
        visited: usize,
        order: Vec<Option<usize>>,
        low: Vec<usize>,
        on_stack: Vec<bool>,
        stack: Vec<usize>,
        parts: Vec<Vec<usize>>,
    }
    fn visit(walk: &mut Walk, node: usize) {
        let order = walk.visited;
        walk.visited += 1;
        walk.order[node] = Some(order);
        walk.low[node] = order;
        walk.stack.push(node);
        walk.on_stack[node] = true;
        let edges = walk.edges;
        for &next in &edges[node] {
            match walk.order[next] {
                None => {
                    visit(walk, next);
                    walk.low[node] = walk.low[node].min(walk.low[next]);
                }
                Some(seen) if walk.on_stack[next] => walk.low[node] = walk.low[node].min(seen),
                Some(_) => {}
            }
        }
        if walk.order[node] == Some(walk.low[node]) {
            let mut part = Vec::new();
            while let Some(member) = walk.stack.pop() {
                walk.on_stack[member] = false;
                part.push(member);
                if member == node {
                    break;
                }
            }
            part.sort_unstable();
            walk.parts.push(part);
        }
    }
    let nodes = edges.len();
    let mut walk = Walk {
        edges,
        visited: 0,
        order: vec![None; nodes],
        low: vec![0; nodes],
        on_stack: vec![false; nodes],
        stack: Vec::new(),
        parts: Vec::new(),
    };
    for node in 0..nodes {
        if walk.order[node].is_none() {
            visit(&mut walk, node);
        }
    }
    walk.parts
}

/// `Type?identifier=system|value` for each identifier of `resource`, as data sets write them
/// and as the loader escapes them.
fn for_each_identifier_reference(resource: &Resource, mut found: impl FnMut(&str)) {
    let resource_type = resource.resource_type();
    for (system, value) in resource.identifiers() {
        found(&format!("{resource_type}?identifier={system}|{value}"));
    }
    if let Some(escaped) = resource.conditional_reference() {
        found(&escaped);
    }
}

/// Roughly what a waiting record takes in memory: its text and keys, and a little more for
/// each resource (where its references and identifiers are, its place in the record).
fn footprint(record: &Record, sources: Option<&[String]>, missing: usize) -> usize {
    let resources: usize = record
        .resources
        .iter()
        .map(|r| 128 + r.key.len() + r.json().len())
        .sum();
    let sources: usize = sources.map_or(0, |s| s.iter().map(|s| 24 + s.len()).sum());
    resources + sources + missing * 64
}

/// Builds 128-bit hashes of keys: a false match among billions of keys is unlikely enough
/// to ignore, at a third of the memory of the keys themselves.
#[derive(Default)]
struct KeyHasher {
    high: RandomState,
    low: RandomState,
}

impl KeyHasher {
    fn hash(&self, key: &str) -> KeyHash {
        (u128::from(self.high.hash_one(key)) << 64) | u128::from(self.low.hash_one(key))
    }
}

/// Records written to a temporary file (deleted when closed), one JSON line each.
struct Spill {
    out: BufWriter<File>,
}

#[derive(Serialize)]
struct SpilledRecord<'a> {
    shared: bool,
    resources: Vec<SpilledResource<'a>>,
}

#[derive(Serialize)]
struct SpilledResource<'a> {
    key: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    source: Option<&'a str>,
    body: Box<RawValue>,
}

#[derive(Deserialize)]
struct ReadRecord {
    shared: bool,
    resources: Vec<ReadResource>,
}

#[derive(Deserialize)]
struct ReadResource {
    key: String,
    source: Option<String>,
    body: Value,
}

impl Spill {
    fn create() -> io::Result<Self> {
        Ok(Self {
            out: BufWriter::with_capacity(1 << 20, tempfile::tempfile()?),
        })
    }

    fn write(&mut self, record: &Record, sources: Option<&[String]>) -> io::Result<()> {
        let line = SpilledRecord {
            shared: record.kind == RecordKind::Shared,
            resources: record
                .resources
                .iter()
                .enumerate()
                .map(|(i, resource)| SpilledResource {
                    key: &resource.key,
                    source: sources.map(|s| s[i].as_str()),
                    body: RawValue::from_string(resource.json().to_owned())
                        .expect("a resource's text is JSON"),
                })
                .collect(),
        };
        serde_json::to_writer(&mut self.out, &line)?;
        self.out.write_all(b"\n")
    }

    fn into_reader(self) -> io::Result<SpillReader> {
        let mut file = self
            .out
            .into_inner()
            .map_err(io::IntoInnerError::into_error)?;
        file.rewind()?;
        Ok(SpillReader {
            lines: BufReader::with_capacity(1 << 20, file),
            line: Vec::new(),
        })
    }
}

struct SpillReader {
    lines: BufReader<File>,
    line: Vec<u8>,
}

impl SpillReader {
    fn rewind(&mut self) -> io::Result<()> {
        self.lines.rewind()
    }
}

impl Iterator for SpillReader {
    type Item = SourceItem;

    fn next(&mut self) -> Option<SourceItem> {
        self.line.clear();
        match self.lines.read_until(b'\n', &mut self.line) {
            Ok(0) => return None,
            Ok(_) => {}
            Err(e) => return Some(spill_lost(&e)),
        }
        let record: ReadRecord = match serde_json::from_slice(&self.line) {
            Ok(record) => record,
            Err(e) => return Some(spill_lost(&e.into())),
        };
        let mut sources = Vec::with_capacity(record.resources.len());
        let resources = record
            .resources
            .into_iter()
            .map(|r| {
                sources.push(r.source);
                Resource::with_key(r.key, &r.body)
            })
            .collect();
        let kind = if record.shared {
            RecordKind::Shared
        } else {
            RecordKind::Patient
        };
        Some(SourceItem::Record {
            record: Record { kind, resources },
            sources: sources.into_iter().collect(),
        })
    }
}

/// The temporary file failed on reading back: what it held cannot be loaded.
fn spill_lost(error: &io::Error) -> SourceItem {
    SourceItem::Invalid {
        source: "temporary file".to_owned(),
        message: format!(
            "cannot read back records set aside until what they refer to was read: {error}; \
             load the input again (nothing is stored twice)"
        ),
        content: Value::Null,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn record(resources: &[Value]) -> SourceItem {
        SourceItem::Record {
            record: Record {
                kind: RecordKind::Patient,
                resources: resources.iter().cloned().map(Resource::new).collect(),
            },
            sources: Some(vec!["in:1".to_owned(); resources.len()]),
        }
    }

    fn keys(items: impl Iterator<Item = SourceItem>) -> Vec<String> {
        items
            .flat_map(|item| match item {
                SourceItem::Record { record, .. } => record.resources,
                SourceItem::Invalid { .. } => panic!("invalid item"),
            })
            .map(|r| r.key)
            .collect()
    }

    fn chain() -> Vec<SourceItem> {
        vec![
            record(&[json!({"resourceType": "Observation", "id": "o",
                "encounter": {"reference": "Encounter/e"}, "subject": {"reference": "Patient/p"}})]),
            record(&[json!({"resourceType": "Encounter", "id": "e",
                "subject": {"reference": "Patient/p"}})]),
            record(&[json!({"resourceType": "Patient", "id": "p",
                "managingOrganization": {"reference": "Organization/elsewhere"}})]),
            record(&[json!({"resourceType": "Practitioner", "id": "d",
                "identifier": [{"system": "https://npi", "value": "1"}]})]),
            record(&[json!({"resourceType": "Procedure", "id": "x",
                "performer": [{"actor": {"reference": "Practitioner?identifier=https://npi|1"}}]})]),
        ]
    }

    #[test]
    fn records_wait_for_what_they_refer_to_in_memory_and_on_disk() {
        for memory in [DEFAULT_MEMORY, 0] {
            let ordered = keys(InOrder::new(chain().into_iter(), memory));
            // The patient refers out of the data set: it goes once the input is read.
            assert_eq!(
                ordered,
                [
                    "Practitioner/d",
                    "Procedure/x",
                    "Patient/p",
                    "Encounter/e",
                    "Observation/o"
                ],
                "memory {memory}"
            );
        }
    }

    #[test]
    fn cycles_go_as_they_are_in_input_order() {
        let items = [
            record(&[json!({"resourceType": "Encounter", "id": "e",
                "diagnosis": [{"condition": {"reference": "Condition/c"}}]})]),
            record(&[json!({"resourceType": "Condition", "id": "c",
                "encounter": {"reference": "Encounter/e"}})]),
            record(&[json!({"resourceType": "Observation", "id": "o",
                "encounter": {"reference": "Encounter/e"}})]),
        ];
        for memory in [DEFAULT_MEMORY, 0] {
            let ordered = keys(InOrder::new(items.iter().map(copy), memory));
            assert_eq!(ordered, ["Encounter/e", "Condition/c", "Observation/o"]);
        }
    }

    fn copy(item: &SourceItem) -> SourceItem {
        match item {
            SourceItem::Record { record, sources } => SourceItem::Record {
                record: record.clone(),
                sources: sources.clone(),
            },
            SourceItem::Invalid { .. } => unreachable!(),
        }
    }

    #[test]
    fn spilled_records_come_back_whole() {
        let mut spill = Spill::create().unwrap();
        let SourceItem::Record { record, sources } = &chain()[0] else {
            unreachable!()
        };
        spill.write(record, sources.as_deref()).unwrap();
        let mut reader = spill.into_reader().unwrap();
        let Some(SourceItem::Record {
            record: back,
            sources: back_sources,
        }) = reader.next()
        else {
            panic!("nothing read back")
        };
        assert_eq!(&back, record);
        assert_eq!(&back_sources, sources);
        assert!(reader.next().is_none());
    }

    #[test]
    fn parts_come_after_what_they_refer_to_and_cycles_stay_whole() {
        // 0 -> 2, 1 <-> 3, 3 -> 0, 4 alone.
        let edges = vec![vec![2], vec![3], vec![], vec![1, 0], vec![]];
        assert_eq!(
            strongly_connected(&edges),
            [vec![2], vec![0], vec![1, 3], vec![4]]
        );
    }

    #[test]
    fn a_record_goes_with_what_is_referred_to_first() {
        let shared = SourceItem::Record {
            record: Record {
                kind: RecordKind::Shared,
                resources: [
                    json!({"resourceType": "PractitionerRole", "id": "r",
                        "practitioner": {"reference": "Practitioner/d"}}),
                    json!({"resourceType": "Practitioner", "id": "d"}),
                    json!({"resourceType": "Organization", "id": "o"}),
                ]
                .into_iter()
                .map(Resource::new)
                .collect(),
            },
            sources: Some(vec!["in:1".into(), "in:2".into(), "in:3".into()]),
        };
        let mut ordered = InOrder::new(std::iter::once(shared), DEFAULT_MEMORY);
        let Some(SourceItem::Record { record, sources }) = ordered.next() else {
            panic!("no record")
        };
        let keys: Vec<&str> = record.resources.iter().map(|r| r.key.as_str()).collect();
        assert_eq!(
            keys,
            ["Practitioner/d", "PractitionerRole/r", "Organization/o"]
        );
        assert_eq!(sources.unwrap(), ["in:2", "in:1", "in:3"]);
        assert_eq!(record.kind, RecordKind::Shared);
        assert!(ordered.next().is_none());
    }

    #[test]
    fn byte_sizes() {
        assert!(
            footprint(
                &Record {
                    kind: RecordKind::Patient,
                    resources: vec![Resource::new(json!({"resourceType": "Patient", "id": "p"}))],
                },
                None,
                1
            ) > 128
        );
    }
}
