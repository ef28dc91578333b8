//! Whether what the store holds points at what it holds. A store that does not check
//! references (Google with `disableReferentialIntegrity`, most other servers) keeps a resource
//! whose reference names nothing; counting and looking up by identifier cannot see that, so
//! each resource found is read for its relative references (`Type/id`), and each target not
//! yet known to be there is read from the store.

use std::collections::HashSet;
use std::sync::Mutex;

use bytes::Bytes;
use http::Method;
use serde_json::Value;

use crate::store::client::{SendError, StoreClient, StoreRequest};
use crate::store::stats::RequestStats;

/// Targets known to be in the store are remembered up to this many (a Patient is referred to
/// by all its record): past it they are read again, so memory stays bounded.
const REMEMBERED: usize = 200_000;

#[derive(Default)]
pub struct References {
    present: Mutex<HashSet<String>>,
}

impl References {
    /// The references of the resources in `answer` (a search Bundle or a resource) that name
    /// nothing in the store, as `Type/id`. A target the store did not answer for is not
    /// counted either way.
    pub async fn dangling(
        &self,
        client: &StoreClient,
        answer: &[u8],
        stats: &mut RequestStats,
    ) -> Result<Vec<String>, SendError> {
        let mut dangling = Vec::new();
        for target in relative_references(answer) {
            if self
                .present
                .lock()
                .expect("references lock")
                .contains(&target)
            {
                continue;
            }
            let read = StoreRequest {
                method: Method::GET,
                path: target.clone(),
                body: Bytes::new(),
                if_none_exist: None,
                operations: 1,
            };
            match client.send(&read, stats).await {
                Ok(_) => {
                    let mut present = self.present.lock().expect("references lock");
                    if present.len() < REMEMBERED {
                        present.insert(target);
                    }
                }
                Err(SendError::Rejected {
                    status: 404 | 410, ..
                }) => dangling.push(target),
                Err(error @ SendError::Cancelled) => return Err(error),
                Err(_) => {}
            }
        }
        Ok(dangling)
    }
}

/// The distinct `Type/id` references of the resources a search Bundle matched, or of the one
/// resource `answer` is.
fn relative_references(answer: &[u8]) -> Vec<String> {
    let Ok(answer) = serde_json::from_slice::<Value>(answer) else {
        return Vec::new();
    };
    let resources: Vec<&Value> = match answer["resourceType"].as_str() {
        Some("Bundle") => answer["entry"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|entry| entry["search"]["mode"] != "include")
            .map(|entry| &entry["resource"])
            .collect(),
        Some(_) => vec![&answer],
        None => Vec::new(),
    };
    let mut targets: Vec<String> = resources
        .into_iter()
        .flat_map(crate::fhir::references)
        .filter(|reference| is_relative(reference))
        .collect();
    targets.sort();
    targets.dedup();
    targets
}

/// `Type/id`, the form a store rewrites references to: not a contained `#x`, a URL, a
/// `urn:`, or a conditional reference left as it was.
pub(super) fn is_relative(reference: &str) -> bool {
    let Some((kind, id)) = reference.split_once('/') else {
        return false;
    };
    kind.starts_with(|c: char| c.is_ascii_uppercase())
        && kind.chars().all(|c| c.is_ascii_alphanumeric())
        && !id.is_empty()
        && !id.contains(['/', '?', '#'])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_relative_references_of_matches_are_read() {
        let search = serde_json::json!({"resourceType": "Bundle", "type": "searchset", "entry": [
            {"resource": {"resourceType": "Observation", "id": "o",
                "subject": {"reference": "Patient/p"},
                "performer": [{"reference": "Practitioner/x"}, {"reference": "#contained"},
                    {"reference": "https://other.example/fhir/Practitioner/y"},
                    {"reference": "urn:uuid:8e2d"}, {"reference": "Patient/p"}]},
             "search": {"mode": "match"}},
            {"resource": {"resourceType": "Organization", "id": "g",
                "partOf": {"reference": "Organization/h"}},
             "search": {"mode": "include"}}]});
        assert_eq!(
            relative_references(search.to_string().as_bytes()),
            ["Patient/p", "Practitioner/x"]
        );
        let read = br#"{"resourceType":"Patient","id":"p","generalPractitioner":[{"reference":"Practitioner/pr1"}]}"#;
        assert_eq!(relative_references(read), ["Practitioner/pr1"]);
        assert!(relative_references(b"<html>").is_empty());
        assert!(!is_relative("Practitioner?identifier=a|b"));
    }
}
