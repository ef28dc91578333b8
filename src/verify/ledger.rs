//! What `verify --via` holds in memory while it reads a store's export: not the data set, but
//! for each of its resources a 128-bit hash of `Type/id` and a 64-bit hash of its content
//! (24 bytes), a 64-bit hash of the identity it is found by (`Type?identifier=...`, 8 bytes),
//! and two bits (seen in the export, referred to): 32 bytes and two bits per resource, so 20
//! million resources fit in about 640 MB. Resources of the store outside the data set cost their
//! key in a hash set, 16 bytes and the set's slack (20 to 40 bytes), so that references to them
//! resolve; a reference to such a resource read before it waits as 16 bytes until the end.
//!
//! Content is compared as the store gives it back: keys in any order, and the store's own
//! `meta.versionId` and `meta.lastUpdated` left out.

use std::collections::BTreeMap;
use std::hash::{BuildHasher, Hash, Hasher};

use serde::Serialize;
use serde_json::Value;

use super::report::Named;

/// 128 bits of `Type/id`: two differently seeded 64-bit hashes.
type Key = [u64; 2];

#[derive(Debug, Clone, Copy)]
struct Entry {
    key: Key,
    content: u64,
}

type Fold = foldhash::quality::FoldHasher<'static>;

fn hash_with(seed: u64, feed: impl FnOnce(&mut Fold)) -> u64 {
    let mut hasher = foldhash::quality::FixedState::with_seed(seed).build_hasher();
    feed(&mut hasher);
    hasher.finish()
}

fn key(resource_type: &str, id: &str) -> Key {
    let feed = |seed| {
        hash_with(seed, |h| {
            h.write(resource_type.as_bytes());
            h.write_u8(b'/');
            h.write(id.as_bytes());
        })
    };
    [feed(0x5eed_0001), feed(0x5eed_0002)]
}

fn identity_hash(resource_type: &str, identity: &str) -> u64 {
    hash_with(0x5eed_0003, |h| {
        h.write(resource_type.as_bytes());
        h.write_u8(b'?');
        h.write(identity.as_bytes());
    })
}

/// The hash of a resource's content: object keys sorted, the store's version and time of
/// writing left out.
pub fn content_hash(resource: &Value) -> u64 {
    hash_with(0x5eed_0004, |h| {
        let Value::Object(fields) = resource else {
            return feed_value(h, resource);
        };
        let mut keys: Vec<&String> = fields.keys().collect();
        keys.sort();
        for key in keys {
            let value = &fields[key];
            if key == "meta" {
                let Value::Object(meta) = value else { continue };
                let mut kept = meta.clone();
                kept.remove("versionId");
                kept.remove("lastUpdated");
                if kept.is_empty() {
                    continue;
                }
                key.hash(h);
                feed_value(h, &Value::Object(kept));
                continue;
            }
            key.hash(h);
            feed_value(h, value);
        }
    })
}

fn feed_value(h: &mut Fold, value: &Value) {
    match value {
        Value::Null => h.write_u8(0),
        Value::Bool(b) => h.write_u8(1 + u8::from(*b)),
        Value::Number(n) => {
            h.write_u8(3);
            n.to_string().hash(h);
        }
        Value::String(s) => {
            h.write_u8(4);
            s.hash(h);
        }
        Value::Array(items) => {
            h.write_u8(5);
            h.write_usize(items.len());
            items.iter().for_each(|item| feed_value(h, item));
        }
        Value::Object(fields) => {
            h.write_u8(6);
            h.write_usize(fields.len());
            let mut keys: Vec<&String> = fields.keys().collect();
            keys.sort();
            for key in keys {
                key.hash(h);
                feed_value(h, &fields[key]);
            }
        }
    }
}

/// The data set, as [`Ledger`] compares the store with it.
#[derive(Default)]
pub struct ExpectedSet {
    entries: Vec<Entry>,
    identities: Vec<u64>,
    pub per_type: BTreeMap<String, u64>,
}

impl ExpectedSet {
    pub fn with_capacity(resources: usize) -> Self {
        Self {
            entries: Vec::with_capacity(resources),
            identities: Vec::with_capacity(resources),
            per_type: BTreeMap::new(),
        }
    }

    /// One resource of the data set, with the identity it is found by, if any.
    pub fn add(&mut self, resource_type: &str, id: &str, identity: Option<&str>, content: u64) {
        self.entries.push(Entry {
            key: key(resource_type, id),
            content,
        });
        if let Some(identity) = identity {
            self.identities.push(identity_hash(resource_type, identity));
        }
        *self.per_type.entry(resource_type.to_owned()).or_default() += 1;
    }

    /// Ready to compare: sorted for binary search.
    pub fn into_ledger(mut self) -> Ledger {
        self.entries.sort_unstable_by_key(|e| e.key);
        self.entries.shrink_to_fit();
        self.identities.sort_unstable();
        self.identities.dedup();
        self.identities.shrink_to_fit();
        let words = self.entries.len().div_ceil(64);
        Ledger {
            seen: vec![0; words],
            referenced: vec![0; words],
            expected: self,
            findings: ExportFindings::default(),
            extra_keys: foldhash::HashSet::default(),
            unknown_targets: Vec::new(),
            unknown_named: Vec::new(),
        }
    }
}

/// What reading the export found.
#[derive(Debug, Default, Serialize)]
pub struct ExportFindings {
    /// Resources read from the export.
    pub read: u64,
    /// Shown in the report's `types`.
    #[serde(skip)]
    pub found_per_type: BTreeMap<String, u64>,
    /// Resources of the data set whose content differs in the store.
    pub changed: Named<String>,
    /// A second copy of a resource of the data set: the same id again, or another id with its
    /// identifier.
    pub duplicated: Named<String>,
    /// Resources the data set does not have (a store may hold other data).
    pub not_in_data_set: Named<String>,
    /// Export lines that are not FHIR resources.
    pub unreadable: Named<String>,
    /// References that name nothing in the store.
    pub dangling: Named<String>,
    pub missing: Named<String>,
}

/// The data set and what the export showed of it so far.
pub struct Ledger {
    expected: ExpectedSet,
    seen: Vec<u64>,
    referenced: Vec<u64>,
    pub findings: ExportFindings,
    /// Keys of resources outside the data set, which references may name.
    extra_keys: foldhash::HashSet<Key>,
    /// References to neither a resource of the data set nor one read so far.
    unknown_targets: Vec<Key>,
    /// The first of those, with who refers to them, for the report.
    unknown_named: Vec<(Key, String)>,
}

fn bit(bits: &[u64], i: usize) -> bool {
    bits[i / 64] & (1 << (i % 64)) != 0
}

fn set(bits: &mut [u64], i: usize) {
    bits[i / 64] |= 1 << (i % 64);
}

impl Ledger {
    pub fn expected_total(&self) -> u64 {
        self.expected.entries.len() as u64
    }

    pub fn expected_per_type(&self) -> &BTreeMap<String, u64> {
        &self.expected.per_type
    }

    /// Bytes held per resource of the data set.
    pub fn bytes_per_resource() -> usize {
        size_of::<Entry>() + size_of::<u64>()
    }

    fn position(&self, key: &Key) -> Option<usize> {
        self.expected
            .entries
            .binary_search_by_key(key, |e| e.key)
            .ok()
    }

    /// One resource of the export, with the identity it is found by, and its references.
    pub fn observe<'a>(
        &mut self,
        resource_type: &str,
        id: &str,
        identity: Option<&str>,
        content: u64,
        references: impl IntoIterator<Item = &'a str>,
    ) {
        let name = format!("{resource_type}/{id}");
        self.findings.read += 1;
        *self
            .findings
            .found_per_type
            .entry(resource_type.to_owned())
            .or_default() += 1;
        let key = key(resource_type, id);
        match self.position(&key) {
            Some(i) if bit(&self.seen, i) => self.findings.duplicated.push(name.clone()),
            Some(i) => {
                set(&mut self.seen, i);
                if self.expected.entries[i].content != content {
                    self.findings.changed.push(name.clone());
                }
            }
            None => {
                let copy = identity.is_some_and(|identity| {
                    let hash = identity_hash(resource_type, identity);
                    self.expected.identities.binary_search(&hash).is_ok()
                });
                match identity {
                    Some(identity) if copy => self
                        .findings
                        .duplicated
                        .push(format!("{name} (a second {resource_type}?{identity})")),
                    _ => self.findings.not_in_data_set.push(name.clone()),
                }
                self.extra_keys.insert(key);
            }
        }
        for target in references {
            self.refer(&name, target);
        }
    }

    fn refer(&mut self, from: &str, target: &str) {
        let Some((kind, id)) = target.split_once('/') else {
            return;
        };
        let key = key(kind, id);
        if let Some(i) = self.position(&key) {
            set(&mut self.referenced, i);
        } else if !self.extra_keys.contains(&key) {
            self.unknown_targets.push(key);
            if self.unknown_named.len() < super::report::NAMED {
                self.unknown_named
                    .push((key, format!("{from} refers to {target}")));
            }
        }
    }

    /// Once the whole export is read: counts what is missing and the references that name
    /// nothing (names for those that name a missing resource come from [`Self::name_missing`]).
    pub fn settle(&mut self) {
        let extra = &self.extra_keys;
        self.unknown_targets.retain(|key| !extra.contains(key));
        self.unknown_targets.sort_unstable();
        self.unknown_targets.dedup();
        for (key, named) in std::mem::take(&mut self.unknown_named) {
            if !extra.contains(&key) {
                self.findings.dangling.push(named);
            }
        }
        let count =
            |bits: &mut dyn Iterator<Item = u64>| u64::from(bits.map(u64::count_ones).sum::<u32>());
        let seen = count(&mut self.seen.iter().copied());
        let to_missing = count(
            &mut self
                .referenced
                .iter()
                .zip(&self.seen)
                .map(|(referenced, seen)| referenced & !seen),
        );
        self.findings.missing.count = self.expected_total() - seen;
        self.findings.dangling.count = self.unknown_targets.len() as u64 + to_missing;
    }

    /// Names `Type/id` of the data set in the report if the export did not hold it; `false`
    /// once no more names are wanted.
    pub fn name_missing(&mut self, resource_type: &str, id: &str) -> bool {
        let Some(i) = self.position(&key(resource_type, id)) else {
            return true;
        };
        let findings = &mut self.findings;
        if !bit(&self.seen, i) {
            findings.missing.name(format!("{resource_type}/{id}"));
            if bit(&self.referenced, i) {
                let what = format!(
                    "resources in the store refer to {resource_type}/{id}, which is missing"
                );
                findings.dangling.name(what);
            }
        }
        !findings.missing.all_named()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn patient(id: &str, family: &str) -> Value {
        json!({"resourceType": "Patient", "id": id, "name": [{"family": family}],
            "identifier": [{"system": "s", "value": id}]})
    }

    fn ledger(resources: &[Value]) -> Ledger {
        let mut expected = ExpectedSet::with_capacity(resources.len());
        for r in resources {
            let identity = format!("identifier=s|{}", r["id"].as_str().unwrap());
            let (kind, id) = (
                r["resourceType"].as_str().unwrap(),
                r["id"].as_str().unwrap(),
            );
            expected.add(kind, id, Some(&identity), content_hash(r));
        }
        expected.into_ledger()
    }

    fn observe(ledger: &mut Ledger, r: &Value, identity: &str, references: &[&str]) {
        let (kind, id) = (
            r["resourceType"].as_str().unwrap(),
            r["id"].as_str().unwrap(),
        );
        let content = content_hash(r);
        ledger.observe(
            kind,
            id,
            Some(identity),
            content,
            references.iter().copied(),
        );
    }

    #[test]
    fn content_ignores_key_order_and_the_stores_stamps() {
        let generated = json!({"resourceType": "Patient", "id": "a", "gender": "female",
            "meta": {"tag": [{"system": "t", "code": "c"}]}});
        let stored = json!({"meta": {"versionId": "3", "lastUpdated": "2026-01-01T00:00:00Z",
            "tag": [{"code": "c", "system": "t"}]}, "gender": "female", "id": "a",
            "resourceType": "Patient"});
        assert_eq!(content_hash(&generated), content_hash(&stored));
        let bare = json!({"resourceType": "Patient", "id": "a"});
        let stamped = json!({"resourceType": "Patient", "id": "a",
            "meta": {"versionId": "1", "lastUpdated": "x"}});
        assert_eq!(content_hash(&bare), content_hash(&stamped));
        let changed = json!({"resourceType": "Patient", "id": "a", "gender": "male",
            "meta": {"tag": [{"system": "t", "code": "c"}]}});
        assert_ne!(content_hash(&generated), content_hash(&changed));
        assert_ne!(
            content_hash(&json!({"a": [1, 2]})),
            content_hash(&json!({"a": [2, 1]}))
        );
        assert_ne!(
            content_hash(&json!({"a": "1"})),
            content_hash(&json!({"a": 1}))
        );
    }

    #[test]
    fn an_exact_export_finds_nothing_wrong() {
        let data = [patient("a", "X"), patient("b", "Y")];
        let mut ledger = ledger(&data);
        observe(&mut ledger, &data[1], "identifier=s|b", &["Patient/a"]);
        observe(&mut ledger, &data[0], "identifier=s|a", &["Patient/b"]);
        ledger.settle();
        assert_eq!(
            (
                ledger.findings.missing.count,
                ledger.findings.dangling.count
            ),
            (0, 0)
        );
        let f = &ledger.findings;
        assert_eq!(f.read, 2);
        assert_eq!(f.found_per_type["Patient"], 2);
        let wrong = f.changed.count + f.duplicated.count + f.not_in_data_set.count;
        assert_eq!(wrong, 0);
    }

    #[test]
    fn missing_changed_duplicated_extra_and_dangling_are_told_apart() {
        let data = [patient("a", "X"), patient("b", "Y"), patient("c", "Z")];
        let mut ledger = ledger(&data);
        // a: changed; b: twice, once under its id and once under another with its identifier;
        // c: missing, and referred to; d: not in the data set, referring to nothing.
        observe(
            &mut ledger,
            &patient("a", "Changed"),
            "identifier=s|a",
            &["Patient/c"],
        );
        observe(&mut ledger, &data[1], "identifier=s|b", &["Patient/d"]);
        observe(&mut ledger, &data[1], "identifier=s|b", &[]);
        let copy = json!({"resourceType": "Patient", "id": "b2"});
        observe(&mut ledger, &copy, "identifier=s|b", &[]);
        let extra = json!({"resourceType": "Patient", "id": "d"});
        observe(
            &mut ledger,
            &extra,
            "identifier=s|d",
            &["Practitioner/nobody"],
        );
        let f = &ledger.findings;
        assert_eq!(f.changed.first, ["Patient/a"]);
        assert_eq!(
            f.duplicated.first,
            ["Patient/b", "Patient/b2 (a second Patient?identifier=s|b)"]
        );
        assert_eq!(f.not_in_data_set.first, ["Patient/d"]);
        // Patient/d was read after Patient/b referred to it: that reference resolves.
        ledger.settle();
        assert_eq!(ledger.findings.missing.count, 1);
        assert_eq!(ledger.findings.dangling.count, 2);
        for id in ["a", "b", "c"] {
            assert!(ledger.name_missing("Patient", id) == (id != "c"));
        }
        assert_eq!(ledger.findings.missing.first, ["Patient/c"]);
        assert_eq!(
            ledger.findings.dangling.first,
            [
                "Patient/d refers to Practitioner/nobody",
                "resources in the store refer to Patient/c, which is missing"
            ]
        );
    }
}
