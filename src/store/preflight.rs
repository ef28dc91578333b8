//! Before the first write: what kind of store this is and how it is set up, so that the load
//! picks a way of writing that works there, or refuses, saying what to change.

use http::Method;
use serde_json::Value;

use super::client::{SendError, StoreClient, StoreRequest};
use super::stats::RequestStats;
use crate::exit::usage;

/// What the store told about itself; `None` where it could not be read.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StoreFacts {
    /// Whether a PUT to a client-chosen id that does not exist creates the resource
    /// (`enableUpdateCreate`, false on a new Cloud Healthcare store).
    pub update_create: Option<bool>,
}

/// Where the store's description is.
pub enum Settings<'a> {
    /// A Cloud Healthcare FHIR store: `fhirStores.get` at the store's own URL.
    Google { store_url: &'a str, store: &'a str },
    /// Any FHIR server: its CapabilityStatement at `{base}/metadata`.
    Fhir,
}

/// Reads the store's settings; refuses a store that is not FHIR R4 (exit 2), warns and goes on
/// where the settings cannot be read.
pub async fn check(
    client: &StoreClient,
    settings: Settings<'_>,
    stats: &mut RequestStats,
) -> anyhow::Result<StoreFacts> {
    let facts = read(client, settings, stats).await?;
    tracing::debug!("store settings: {facts:?}");
    Ok(facts)
}

async fn read(
    client: &StoreClient,
    settings: Settings<'_>,
    stats: &mut RequestStats,
) -> anyhow::Result<StoreFacts> {
    let path = match settings {
        Settings::Google { store_url, .. } => store_url.to_owned(),
        Settings::Fhir => "metadata".to_owned(),
    };
    let request = StoreRequest {
        method: Method::GET,
        path,
        body: bytes::Bytes::new(),
        if_none_exist: None,
        operations: 1,
    };
    let answer = client.send(&request, stats).await;
    match (settings, answer) {
        (Settings::Google { store, .. }, Ok(reply)) => {
            let described = serde_json::from_slice::<Value>(&reply.body).unwrap_or_default();
            google_facts(store, &described)
        }
        (Settings::Fhir, Ok(reply)) => {
            let described = serde_json::from_slice::<Value>(&reply.body).unwrap_or_default();
            if described["resourceType"] != "CapabilityStatement" {
                eprintln!(
                    "note: {}/metadata is not a FHIR CapabilityStatement; the server's FHIR \
                     version and settings could not be checked",
                    client.base()
                );
                return Ok(StoreFacts::default());
            }
            capability_facts(client.base(), &described)
        }
        (
            Settings::Google { store, .. },
            Err(SendError::Rejected {
                status: 404,
                message,
            }),
        ) => Err(usage(format!(
            "no FHIR store {store} ({message}); check the name, or create it: \
                 gcloud healthcare fhir-stores create STORE --dataset=DATASET \
                 --location=LOCATION --version=R4"
        ))),
        // The client has stopped the run and says why (a refused credential, an unreachable
        // store, Ctrl-C).
        (_, Err(_)) if client.fatal().is_some() => Ok(StoreFacts::default()),
        (_, Err(SendError::Cancelled)) => Ok(StoreFacts::default()),
        (Settings::Google { .. }, Err(error)) => {
            eprintln!(
                "note: the store's settings could not be read ({error}); going on as with \
                 Google's defaults (enableUpdateCreate off). Grant healthcare.fhirStores.get \
                 to have them checked"
            );
            Ok(StoreFacts::default())
        }
        (Settings::Fhir, Err(error)) => {
            eprintln!(
                "note: {}/metadata could not be read ({error}); the server's FHIR version and \
                 settings were not checked",
                client.base()
            );
            Ok(StoreFacts::default())
        }
    }
}

/// From a `fhirStores.get` answer.
fn google_facts(store: &str, described: &Value) -> anyhow::Result<StoreFacts> {
    let version = described["version"].as_str().unwrap_or("R4");
    if version != "R4" {
        return Err(usage(format!(
            "{store} is a FHIR {version} store; fhirgen writes FHIR R4. Load into an R4 store \
             (gcloud healthcare fhir-stores create STORE --dataset=DATASET \
             --location=LOCATION --version=R4)"
        )));
    }
    Ok(StoreFacts {
        // Absent from the answer means its default: off.
        update_create: Some(described["enableUpdateCreate"].as_bool().unwrap_or(false)),
    })
}

/// From a CapabilityStatement: R4 (4.0.x) or refused; `updateCreate` where every resource
/// type it lists agrees.
fn capability_facts(base: &str, described: &Value) -> anyhow::Result<StoreFacts> {
    let version = described["fhirVersion"].as_str().unwrap_or("4.0.1");
    if !version.starts_with("4.0") {
        return Err(usage(format!(
            "{base} speaks FHIR {version}; fhirgen writes FHIR R4 (4.0.1): point --fhir-url at \
             an R4 endpoint"
        )));
    }
    let flags: Vec<Option<bool>> = described["rest"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|rest| rest["mode"] == "server")
        .flat_map(|rest| rest["resource"].as_array().into_iter().flatten())
        .map(|resource| resource["updateCreate"].as_bool())
        .collect();
    let update_create = if !flags.is_empty() && flags.iter().all(|f| *f == Some(true)) {
        Some(true)
    } else if flags.contains(&Some(false)) {
        Some(false)
    } else {
        None
    };
    Ok(StoreFacts { update_create })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_store_that_is_not_r4_is_refused() {
        let error = google_facts(
            "projects/p/locations/l/datasets/d/fhirStores/s",
            &json!({"version": "STU3"}),
        )
        .unwrap_err();
        assert!(format!("{error:#}").contains("STU3"), "{error:#}");
        assert_eq!(
            google_facts("s", &json!({"version": "R4", "enableUpdateCreate": true})).unwrap(),
            StoreFacts {
                update_create: Some(true)
            }
        );
        assert_eq!(
            google_facts("s", &json!({"version": "R4"})).unwrap(),
            StoreFacts {
                update_create: Some(false)
            }
        );
    }

    #[test]
    fn capability_statements() {
        let r5 = json!({"resourceType": "CapabilityStatement", "fhirVersion": "5.0.0"});
        assert!(capability_facts("http://x", &r5).is_err());
        let statement = |flags: Value| {
            json!({"resourceType": "CapabilityStatement", "fhirVersion": "4.0.1",
                "rest": [{"mode": "server", "resource": flags}]})
        };
        let all = statement(json!([{"type": "Patient", "updateCreate": true},
            {"type": "Observation", "updateCreate": true}]));
        assert_eq!(
            capability_facts("b", &all).unwrap().update_create,
            Some(true)
        );
        let some = statement(json!([{"type": "Patient", "updateCreate": true},
            {"type": "Observation", "updateCreate": false}]));
        assert_eq!(
            capability_facts("b", &some).unwrap().update_create,
            Some(false)
        );
        let silent = statement(json!([{"type": "Patient"}]));
        assert_eq!(capability_facts("b", &silent).unwrap().update_create, None);
    }
}
