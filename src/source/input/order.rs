//! The files of an `--input` folder, in an order where what is referred to comes first: shared
//! resources, then per-type NDJSON files by the rank of their type, then bundles by name.

use std::io::{self, Read};
use std::path::{Path, PathBuf};

use super::{read, types};

struct InputFile {
    path: PathBuf,
    /// The path relative to the folder, with `/` between components: the same on every run.
    relative: String,
}

/// Every file under `root`, recursively, in load order. Hidden files and folders (`.name`) are
/// left out; links to folders are not followed, so a loop of links cannot trap the walk.
pub(super) fn files_in(root: &Path) -> io::Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    walk(root, &mut Vec::new(), &mut files)?;
    let mut keyed: Vec<(LoadOrder, InputFile)> = files
        .into_iter()
        .map(|file| (load_order(&file.path), file))
        .collect();
    keyed.sort_by(|(a, fa), (b, fb)| a.cmp(b).then_with(|| fa.relative.cmp(&fb.relative)));
    Ok(keyed.into_iter().map(|(_, file)| file.path).collect())
}

fn walk(dir: &Path, relative: &mut Vec<String>, out: &mut Vec<InputFile>) -> io::Result<()> {
    let listing = std::fs::read_dir(dir).map_err(|e| with_path(e, dir))?;
    for entry in listing {
        let entry = entry.map_err(|e| with_path(e, dir))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') {
            continue;
        }
        let path = entry.path();
        let file_type = entry.file_type().map_err(|e| with_path(e, &path))?;
        relative.push(name);
        if file_type.is_dir() {
            walk(&path, relative, out)?;
        } else if file_type.is_file() || path.is_file() {
            out.push(InputFile {
                path,
                relative: relative.join("/"),
            });
        }
        relative.pop();
    }
    Ok(())
}

fn with_path(error: io::Error, path: &Path) -> io::Error {
    io::Error::new(error.kind(), format!("{}: {error}", path.display()))
}

/// Sorts files: `(group, type rank)`, then by relative path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct LoadOrder(u8, usize);

const SHARED: u8 = 0;
const BY_TYPE: u8 = 1;
const BUNDLES: u8 = 2;

/// Synthea writes the shared resources of a run to these files (batch Bundles).
const SHARED_FILE_PREFIXES: &[(&str, &str)] = &[
    ("hospitalInformation", "Organization"),
    ("practitionerInformation", "Practitioner"),
];

fn load_order(path: &Path) -> LoadOrder {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy())
        .unwrap_or_default();
    if let Some(resource_type) = type_from_name(&name) {
        return by_type(resource_type);
    }
    if let Some((_, resource_type)) = SHARED_FILE_PREFIXES
        .iter()
        .find(|(prefix, _)| name.starts_with(prefix))
    {
        return LoadOrder(SHARED, types::rank(resource_type));
    }
    match sniff_types(path) {
        Head::Resources(resource_type) => by_type(&resource_type),
        Head::Bundle(resource_type) if types::is_shared_type(&resource_type) => {
            LoadOrder(SHARED, types::rank(&resource_type))
        }
        _ => LoadOrder(BUNDLES, 0),
    }
}

fn by_type(resource_type: &str) -> LoadOrder {
    let group = if types::is_shared_type(resource_type) {
        SHARED
    } else {
        BY_TYPE
    };
    LoadOrder(group, types::rank(resource_type))
}

/// The resource type a bulk-export file name gives: `Observation.ndjson`,
/// `Observation.000.ndjson.gz`, `Patient1.ndjson`.
fn type_from_name(name: &str) -> Option<&str> {
    let stem = name.split('.').next()?;
    let stem = stem.trim_end_matches(|c: char| c.is_ascii_digit() || c == '_' || c == '-');
    let looks_like_type = stem.starts_with(|c: char| c.is_ascii_uppercase())
        && stem.chars().all(|c| c.is_ascii_alphabetic());
    looks_like_type.then_some(stem)
}

enum Head {
    /// Plain resources, the first of this type.
    Resources(String),
    /// A Bundle whose first entry is of this type.
    Bundle(String),
    Unknown,
}

/// What the first few kilobytes of a file hold, from its first two `"resourceType"`s.
fn sniff_types(path: &Path) -> Head {
    const HEAD_BYTES: u64 = 16 * 1024;
    let mut head = Vec::new();
    let read = read::open_file(path).and_then(|file| file.take(HEAD_BYTES).read_to_end(&mut head));
    if read.is_err() {
        return Head::Unknown;
    }
    let mut found = resource_types(&head);
    match found.next() {
        Some("Bundle") => match found.next() {
            Some(first_entry) => Head::Bundle(first_entry.to_owned()),
            None => Head::Unknown,
        },
        Some(resource_type) => Head::Resources(resource_type.to_owned()),
        None => Head::Unknown,
    }
}

/// The values of `"resourceType": "..."` in `text`, in order.
fn resource_types(text: &[u8]) -> impl Iterator<Item = &str> {
    const KEY: &[u8] = b"\"resourceType\"";
    let mut rest = text;
    std::iter::from_fn(move || {
        loop {
            let at = rest.windows(KEY.len()).position(|w| w == KEY)?;
            rest = &rest[at + KEY.len()..];
            let after_colon = rest.trim_ascii_start().strip_prefix(b":")?;
            let Some(value) = after_colon.trim_ascii_start().strip_prefix(b"\"") else {
                continue;
            };
            let end = value.iter().position(|&b| b == b'"')?;
            if let Ok(resource_type) = std::str::from_utf8(&value[..end]) {
                rest = &value[end..];
                return Some(resource_type);
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn types_from_names() {
        assert_eq!(type_from_name("Observation.ndjson"), Some("Observation"));
        assert_eq!(type_from_name("Patient.000.ndjson.gz"), Some("Patient"));
        assert_eq!(type_from_name("Patient1.ndjson"), Some("Patient"));
        assert_eq!(type_from_name("patient-example.json"), None);
        assert_eq!(
            type_from_name("Andreas188_Rosenbaum794_3d3a9956-55ab-4905-1f1c-69872391aa50.json"),
            None
        );
    }

    #[test]
    fn types_from_content() {
        let pretty = b"{\n  \"resourceType\" : \"Bundle\",\n  \"entry\": [{\"resource\": {\"resourceType\":\"Organization\"";
        assert_eq!(
            resource_types(pretty).collect::<Vec<_>>(),
            ["Bundle", "Organization"]
        );
        let escaped = br#"{"text": "say \"resourceType\": \"X\"", "resourceType": "Patient"}"#;
        assert_eq!(resource_types(escaped).collect::<Vec<_>>(), ["Patient"]);
    }
}
