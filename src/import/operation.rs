//! The store's `fhirStores.import` as Google runs it: a long-running operation, started with
//! the objects' wildcard URI and followed with `operations.get` until it is done.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use crate::exit::usage;
use crate::store::auth::Credentials;
use crate::store::client::Network;
use crate::store::retry::RetryPolicy;
use crate::store::storage::{Endpoint, StorageClient, StorageError};

/// The longest wait between two looks at the operation.
const MAX_POLL: Duration = Duration::from_secs(10);

/// Google's `PERMISSION_DENIED`, as an operation's `error.code`.
const PERMISSION_DENIED: i64 = 7;

/// A store's Healthcare API methods, with the store's credential.
pub struct StoreApi {
    client: StorageClient,
    /// `https://healthcare.googleapis.com/v1`, or the emulator's.
    endpoint: String,
    pub store_url: String,
    /// `projects/P/locations/L/datasets/D/fhirStores/S`.
    pub store_name: String,
}

impl StoreApi {
    pub fn new(
        store_url: &str,
        credentials: Arc<Credentials>,
        network: &Network,
        retry: RetryPolicy,
        timeout: Duration,
    ) -> anyhow::Result<Self> {
        let store_name = store_url
            .split_once("/projects/")
            .map(|(_, rest)| format!("projects/{rest}"))
            .context("the store URL names no project")?;
        let endpoint = store_url[..store_url.len() - store_name.len() - 1].to_owned();
        let url = reqwest::Url::parse(&endpoint)
            .with_context(|| format!("`{endpoint}` is not a Healthcare API endpoint"))?;
        let client = StorageClient::new(
            Endpoint {
                url,
                emulated: false,
            },
            credentials,
            network,
            retry,
            timeout,
        )?;
        Ok(Self {
            client,
            endpoint,
            store_url: store_url.to_owned(),
            store_name,
        })
    }

    /// `fhirStores.get`: the store's settings.
    pub async fn settings(&self) -> Result<Value, StorageError> {
        let url = &self.store_url;
        self.client
            .json(self.client.send(|http| http.get(url)).await?)
            .await
    }

    /// Starts the import of the objects `uri` names (wildcards allowed) in `bucket`; gives the
    /// operation's name. A refusal for want of access names who needs it, as a usage error.
    pub async fn start_import(&self, uri: &str, bucket: &str) -> anyhow::Result<String> {
        let request =
            json!({"contentStructure": "RESOURCE", "gcsSource": {"uri": uri}}).to_string();
        let url = format!("{}:import", self.store_url);
        let response = self
            .client
            .send(|http| {
                http.post(&url)
                    .header("content-type", "application/json; charset=utf-8")
                    .body(request.clone())
            })
            .await?;
        if response.status() == reqwest::StatusCode::FORBIDDEN {
            let body = response.bytes().await.unwrap_or_default();
            return Err(forbidden(&self.client.message(&body), uri, bucket));
        }
        let started: Value = self
            .client
            .json(response)
            .await
            .map_err(|e| anyhow::anyhow!("cannot start the import of {uri}: {e}"))?;
        started["name"]
            .as_str()
            .map(str::to_owned)
            .context("the import's answer names no operation")
    }

    /// Looks at the operation, more and more rarely, until it is done or `stop` is cancelled;
    /// gives its last state.
    pub async fn follow(
        &self,
        operation: &str,
        bar: &indicatif::ProgressBar,
        stop: &CancellationToken,
    ) -> anyhow::Result<Value> {
        let url = format!("{}/{operation}", self.endpoint);
        let mut wait = Duration::from_millis(100);
        loop {
            let state: Value = self
                .client
                .json(self.client.send(|http| http.get(&url)).await?)
                .await
                .with_context(|| format!("cannot read the operation {operation}"))?;
            let (success, failure) = (counter(&state, "success"), counter(&state, "failure"));
            bar.set_position(success + failure);
            bar.set_message(format!("imported {success}, failed {failure}"));
            if state["done"] == true {
                bar.finish_and_clear();
                return Ok(state);
            }
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                () = stop.cancelled() => {
                    bar.abandon();
                    return Ok(state);
                }
            }
            wait = (wait * 2).min(MAX_POLL);
        }
    }

    /// After Ctrl-C: the import goes on at the store; how to follow or cancel it.
    pub fn follow_up(&self, operation: &str) -> String {
        let id = operation.rsplit('/').next().unwrap_or(operation);
        let part = |name: &str| {
            self.store_name
                .split('/')
                .skip_while(|p| *p != name)
                .nth(1)
                .unwrap_or("?")
                .to_owned()
        };
        let flags = format!(
            "--project={} --location={} --dataset={}",
            part("projects"),
            part("locations"),
            part("datasets")
        );
        format!(
            "the import goes on in the store: operation {operation}\n  follow it: gcloud \
             healthcare operations describe {id} {flags}\n  cancel it: gcloud alpha healthcare \
             operations cancel {id} {flags}"
        )
    }
}

/// Who reads the objects for the store, and the role it needs.
pub fn service_agent_hint(bucket: &str) -> String {
    format!(
        "The store reads the objects as its Healthcare Service Agent, \
         service-PROJECT_NUMBER@gcp-sa-healthcare.iam.gserviceaccount.com (PROJECT_NUMBER is the \
         store's project's number: gcloud projects describe PROJECT \
         --format='value(projectNumber)'): grant it roles/storage.objectViewer on gs://{bucket}"
    )
}

/// A 403 on the import: this run's credential may not import, or (more often) the store's
/// service agent may not read the bucket. Google's message tells which.
fn forbidden(message: &str, uri: &str, bucket: &str) -> anyhow::Error {
    let import_permission = "healthcare.fhirStores.import";
    let fix = if message.contains(import_permission) {
        format!(
            "This run's credential needs {import_permission}: grant it \
             roles/healthcare.fhirStoreAdmin on the store or its dataset"
        )
    } else {
        format!(
            "{}. (Should it be this run's credential that was refused, it needs \
             {import_permission}, in roles/healthcare.fhirStoreAdmin.)",
            service_agent_hint(bucket)
        )
    };
    usage(format!(
        "the import of {uri} was refused (HTTP 403: {message}). {fix} The uploaded objects are \
         kept: run the same command again once access is granted"
    ))
}

/// The operation's error message, with what to do when it is a want of access.
pub fn error_message(operation: &Value, bucket: &str) -> Option<String> {
    let error = &operation["error"];
    let message = error["message"].as_str()?;
    Some(if error["code"].as_i64() == Some(PERMISSION_DENIED) {
        format!("{message}. {}", service_agent_hint(bucket))
    } else {
        message.to_owned()
    })
}

/// One of the operation's counters (`success`, `failure`, `pending`); int64 comes as text.
pub fn counter(operation: &Value, key: &str) -> u64 {
    let value = &operation["metadata"]["counter"][key];
    value
        .as_u64()
        .or_else(|| value.as_str().and_then(|s| s.parse().ok()))
        .unwrap_or(0)
}

/// The import's progress bar, on a terminal only.
pub fn progress_bar(total: u64, visible: bool) -> indicatif::ProgressBar {
    use std::io::IsTerminal;
    if !visible || !std::io::stderr().is_terminal() {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new(total);
    bar.set_style(
        indicatif::ProgressStyle::with_template("import {bar:40} {pos}/{len} {msg} [{elapsed}]")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    bar
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_and_errors_as_google_writes_them() {
        let state = json!({"metadata": {"counter": {"success": "12", "failure": 3}},
            "error": {"code": 7, "message": "Permission denied"}});
        assert_eq!(counter(&state, "success"), 12);
        assert_eq!(counter(&state, "failure"), 3);
        assert_eq!(counter(&state, "pending"), 0);
        let message = error_message(&state, "b-1").unwrap();
        assert!(message.starts_with("Permission denied. "));
        assert!(message.contains("roles/storage.objectViewer on gs://b-1"));
        let failed = json!({"error": {"code": 3, "message": "invalid_argument: ..."}});
        assert_eq!(
            error_message(&failed, "b-1").as_deref(),
            Some("invalid_argument: ...")
        );
        assert_eq!(error_message(&json!({"done": true}), "b-1"), None);
    }
}
