//! The same key (`Type/id`, or a Bundle entry's `fullUrl`) read twice with different content:
//! two resources claim one name, and which of them a reference means cannot be told. Read
//! order must not decide it. The second is not sent, and neither is anything that refers to the
//! key or still waits under it once the clash is known; each says where both were read.
//!
//! Each key read is remembered as a 64-bit hash with a hash of its content and where it was
//! read (about 32 bytes a resource). A key read again with the same content is the same
//! resource and goes as before.

use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasher, RandomState};
use std::sync::{Arc, Mutex};

use super::SourceItem;
use crate::fhir::{Record, Resource};

/// What the input has shown so far, shared by the check on reading and the one on passing on.
#[derive(Default)]
pub(super) struct Clashes {
    state: Mutex<Seen>,
}

#[derive(Default)]
struct Seen {
    hasher: RandomState,
    keys: HashMap<u64, FirstRead>,
    /// The files read, so that a place costs an index and a line.
    labels: Vec<String>,
    /// Keys read with two different contents, and where: "a.ndjson:1 and b.ndjson:1".
    clashing: HashMap<String, String>,
}

struct FirstRead {
    content: u64,
    label: u32,
    line: u32,
    entry: Option<u32>,
}

impl Clashes {
    /// Items as read: a resource whose key was read before with other content is taken out.
    pub(super) fn on_reading<I>(self: &Arc<Self>, read: I) -> ReadChecked<I> {
        ReadChecked {
            read,
            clashes: self.clone(),
            ready: VecDeque::new(),
        }
    }

    /// Items as they are passed on: what refers to a clashing key, or has one, is taken out.
    pub(super) fn on_passing<I>(self: &Arc<Self>, items: I) -> PassChecked<I> {
        PassChecked {
            items,
            clashes: self.clone(),
            ready: VecDeque::new(),
        }
    }

    /// Why `resource`, read at `source`, is not sent, when its key was read before with
    /// other content.
    fn read(&self, resource: &Resource, source: &str) -> Option<String> {
        let mut seen = self.state.lock().expect("clash lock");
        let key = seen.hasher.hash_one(&resource.key);
        let content = seen.hasher.hash_one(resource.json());
        let first = match seen.keys.get(&key) {
            None => {
                let read = seen.place(source);
                seen.keys.insert(key, read(content));
                return None;
            }
            Some(first) if first.content == content => return None,
            Some(first) => seen.describe(first),
        };
        let places = format!("{first} and {source}");
        let message = format!(
            "{} is read twice with different content, at {places}: references to it cannot \
             be told apart, so neither is sent where that is still possible, nor what refers \
             to it; give one of them another id",
            resource.key
        );
        seen.clashing.insert(resource.key.clone(), places);
        Some(message)
    }

    /// Why `resource` is not sent, when it has a clashing key or refers to one.
    fn passing(&self, resource: &Resource) -> Option<String> {
        let seen = self.state.lock().expect("clash lock");
        if seen.clashing.is_empty() {
            return None;
        }
        if let Some(places) = seen.clashing.get(&resource.key) {
            return Some(format!(
                "{} is read twice with different content, at {places}: which one is meant \
                 cannot be told, so neither is sent; give one of them another id",
                resource.key
            ));
        }
        let mut message = None;
        resource.any_reference(|reference| {
            message = seen.clashing.get(reference).map(|places| {
                format!(
                    "not sent: it refers to {reference}, which two different resources in the \
                     input have, at {places}; give one of them another id"
                )
            });
            message.is_some()
        });
        message
    }
}

impl Seen {
    /// `path:line` or `path:line#entry N`, kept as an index into the labels and numbers.
    fn place(&mut self, source: &str) -> impl FnOnce(u64) -> FirstRead + use<> {
        let (at, entry) = match source.rsplit_once("#entry ") {
            Some((at, entry)) => (at, entry.parse().ok()),
            None => (source, None),
        };
        let (label, line) = match at.rsplit_once(':') {
            Some((label, line)) => (label, line.parse().unwrap_or(0)),
            None => (at, 0),
        };
        let index = match self.labels.iter().rposition(|known| known == label) {
            Some(index) => index,
            None => {
                self.labels.push(label.to_owned());
                self.labels.len() - 1
            }
        };
        let label = u32::try_from(index).unwrap_or(u32::MAX);
        move |content| FirstRead {
            content,
            label,
            line,
            entry,
        }
    }

    fn describe(&self, read: &FirstRead) -> String {
        let label = self
            .labels
            .get(read.label as usize)
            .map_or("?", String::as_str);
        match read.entry {
            Some(entry) => format!("{label}:{}#entry {entry}", read.line),
            None => format!("{label}:{}", read.line),
        }
    }
}

pub(super) struct ReadChecked<I> {
    read: I,
    clashes: Arc<Clashes>,
    ready: VecDeque<SourceItem>,
}

impl<I: Iterator<Item = SourceItem>> Iterator for ReadChecked<I> {
    type Item = SourceItem;

    fn next(&mut self) -> Option<SourceItem> {
        if let Some(item) = self.ready.pop_front() {
            return Some(item);
        }
        let clashes = &self.clashes;
        let item = self.read.next()?;
        Some(split_off(item, &mut self.ready, |resource, source| {
            clashes.read(resource, source)
        }))
    }
}

pub(super) struct PassChecked<I> {
    items: I,
    clashes: Arc<Clashes>,
    ready: VecDeque<SourceItem>,
}

impl<I: Iterator<Item = SourceItem>> Iterator for PassChecked<I> {
    type Item = SourceItem;

    fn next(&mut self) -> Option<SourceItem> {
        if let Some(item) = self.ready.pop_front() {
            return Some(item);
        }
        let clashes = &self.clashes;
        let item = self.items.next()?;
        Some(split_off(item, &mut self.ready, |resource, _| {
            clashes.passing(resource)
        }))
    }
}

/// `item` without the resources `refused` gives a reason for; those follow it in `ready`, as
/// invalid input with that reason.
fn split_off(
    item: SourceItem,
    ready: &mut VecDeque<SourceItem>,
    mut refused: impl FnMut(&Resource, &str) -> Option<String>,
) -> SourceItem {
    let SourceItem::Record { record, sources } = item else {
        return item;
    };
    let count = record.resources.len();
    let mut kept = Vec::with_capacity(count);
    let mut kept_sources = Vec::with_capacity(count);
    for (index, resource) in record.resources.into_iter().enumerate() {
        let source = sources
            .as_ref()
            .map_or("-", |sources| sources[index].as_str());
        match refused(&resource, source) {
            None => {
                kept.push(resource);
                kept_sources.push(source.to_owned());
            }
            Some(message) => ready.push_back(SourceItem::Invalid {
                source: source.to_owned(),
                message,
                content: resource.to_value(),
            }),
        }
    }
    let record = Record {
        kind: record.kind,
        resources: kept,
    };
    let sources = sources.map(|_| kept_sources);
    match (record.resources.is_empty(), ready.pop_front()) {
        // Nothing of it is left: its first refusal stands in its place.
        (true, Some(first)) => first,
        (_, first) => {
            if let Some(first) = first {
                ready.push_front(first);
            }
            SourceItem::Record { record, sources }
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::fhir::RecordKind;

    fn record(resources: &[(serde_json::Value, &str)]) -> SourceItem {
        let (resources, sources) = resources
            .iter()
            .map(|(body, source)| (Resource::new(body.clone()), (*source).to_owned()))
            .unzip();
        SourceItem::Record {
            record: Record {
                kind: RecordKind::Patient,
                resources,
            },
            sources: Some(sources),
        }
    }

    /// What each item is: the keys of a record, or the source and message of a refusal.
    fn shown(items: impl Iterator<Item = SourceItem>) -> Vec<String> {
        items
            .map(|item| match item {
                SourceItem::Record { record, .. } => record
                    .resources
                    .iter()
                    .map(|r| r.key.clone())
                    .collect::<Vec<_>>()
                    .join(" "),
                SourceItem::Invalid {
                    source, message, ..
                } => format!("{source}: {message}"),
            })
            .collect()
    }

    #[test]
    fn a_key_read_twice_with_other_content_is_sent_neither_way_nor_what_refers_to_it() {
        let patient = |family: &str| json!({"resourceType": "Patient", "id": "x", "name": [{"family": family}]});
        let observation = json!({"resourceType": "Observation", "id": "o", "subject": {"reference": "Patient/x"}});
        let input = vec![
            record(&[(patient("Ames"), "a.ndjson:1")]),
            // The same resource again: nothing clashes.
            record(&[(patient("Ames"), "c.ndjson:4")]),
            record(&[(patient("Baker"), "b.ndjson:1")]),
            record(&[
                (observation, "o.ndjson:1"),
                (
                    json!({"resourceType": "Organization", "id": "g"}),
                    "o.ndjson:2",
                ),
            ]),
        ];
        let clashes = Arc::new(Clashes::default());
        // All of it read before any is passed on, as when records wait for what they refer to.
        let read: Vec<SourceItem> = clashes.on_reading(input.into_iter()).collect();
        let shown = shown(clashes.on_passing(read.into_iter()));
        let places = "at a.ndjson:1 and b.ndjson:1";
        let neither = format!(
            "Patient/x is read twice with different content, {places}: which one is meant cannot be told, so neither is sent; give one of them another id"
        );
        assert_eq!(
            shown,
            [
                format!("a.ndjson:1: {neither}"),
                format!("c.ndjson:4: {neither}"),
                format!(
                    "b.ndjson:1: Patient/x is read twice with different content, {places}: references to it cannot be told apart, so neither is sent where that is still possible, nor what refers to it; give one of them another id"
                ),
                "Organization/g".to_owned(),
                format!(
                    "o.ndjson:1: not sent: it refers to Patient/x, which two different resources in the input have, {places}; give one of them another id"
                ),
            ]
        );
    }
}
