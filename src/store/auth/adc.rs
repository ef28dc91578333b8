//! Application Default Credentials, found in gcloud's order: the file named by
//! GOOGLE_APPLICATION_CREDENTIALS, gcloud's ADC file, the metadata server, the gcloud CLI.
//! A file is read here and handed to the provider for its `type`, whose token requests go
//! through `TokenClient`; gcp_auth's own providers serve the metadata server (link-local,
//! never proxied) and gcloud (which has its own proxy settings).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use gcp_auth::{Token, TokenProvider};

use super::external::ExternalAccount;
use super::impersonate::Impersonation;
use super::service_account::ServiceAccountKey;
use super::token::{CredentialFile, TokenClient};
use super::user::AuthorizedUser;
use crate::exit::usage;

/// A credential ready for its first token, with what messages should call it.
pub struct Found {
    pub provider: Arc<dyn TokenProvider>,
    /// Type and where it came from, e.g. "external_account credential from /path (GOOGLE_APPLICATION_CREDENTIALS)".
    pub description: String,
    pub quota_project: Option<String>,
}

pub async fn find(client: &TokenClient) -> anyhow::Result<Found> {
    if let Some(path) = std::env::var_os("GOOGLE_APPLICATION_CREDENTIALS") {
        let path = PathBuf::from(path);
        if !path.is_file() {
            return Err(usage(format!(
                "GOOGLE_APPLICATION_CREDENTIALS names {}, which is not a readable file: fix or unset it",
                path.display()
            )));
        }
        return from_file(&path, "GOOGLE_APPLICATION_CREDENTIALS", client);
    }
    if let Some(path) = gcloud_adc_file().filter(|p| p.is_file()) {
        return from_file(&path, "gcloud's Application Default Credentials", client);
    }
    let metadata_error = match gcp_auth::MetadataServiceAccount::new().await {
        Ok(provider) => {
            return Ok(Found {
                provider: Arc::new(provider),
                description: "the metadata server's service account".to_owned(),
                quota_project: None,
            });
        }
        Err(e) => e,
    };
    // gcp_auth runs gcloud as a blocking child process: keep it off the runtime's threads.
    let gcloud = tokio::task::spawn_blocking(|| {
        tokio::runtime::Handle::current().block_on(gcp_auth::GCloudAuthorizedUser::new())
    })
    .await?;
    match gcloud {
        Ok(provider) => Ok(Found {
            provider: Arc::new(OffRuntime(Arc::new(provider))),
            description: "the gcloud CLI's account (`gcloud auth print-access-token`)".to_owned(),
            quota_project: None,
        }),
        Err(gcloud_error) => Err(usage(format!(
            "no Google credentials found: GOOGLE_APPLICATION_CREDENTIALS is not set, there is no \
             {}, no metadata server answered ({metadata_error}), and gcloud gave no token \
             ({gcloud_error}); run `gcloud auth application-default login`, point \
             GOOGLE_APPLICATION_CREDENTIALS at a credential file, or pass --access-token",
            gcloud_adc_file()
                .map_or_else(|| "gcloud ADC file".to_owned(), |p| p.display().to_string())
        ))),
    }
}

/// `$CLOUDSDK_CONFIG/application_default_credentials.json`, or under `~/.config/gcloud`.
fn gcloud_adc_file() -> Option<PathBuf> {
    let config = match std::env::var_os("CLOUDSDK_CONFIG") {
        Some(dir) => PathBuf::from(dir),
        None => Path::new(&std::env::var_os("HOME")?).join(".config/gcloud"),
    };
    Some(config.join("application_default_credentials.json"))
}

fn from_file(path: &Path, named_by: &str, client: &TokenClient) -> anyhow::Result<Found> {
    let file = CredentialFile::read(path)?;
    let provider = provider_for(&file, client)?;
    let mut description = format!(
        "the {} credential {} ({named_by})",
        file.kind,
        path.display()
    );
    if let Some(account) = file.optional_text("client_email")? {
        description.push_str(&format!(" for {account}"));
    }
    Ok(Found {
        provider,
        description,
        quota_project: file.optional_text("quota_project_id")?,
    })
}

fn provider_for(
    file: &CredentialFile,
    client: &TokenClient,
) -> anyhow::Result<Arc<dyn TokenProvider>> {
    let kind = file.kind.rsplit('.').next().unwrap_or_default();
    Ok(match kind {
        "service_account" => Arc::new(ServiceAccountKey::from_file(file, client.clone())?),
        "authorized_user" | "external_account_authorized_user" => {
            Arc::new(AuthorizedUser::from_file(file, client.clone())?)
        }
        "external_account" => {
            let exchange: Arc<dyn TokenProvider> =
                Arc::new(ExternalAccount::from_file(file, client.clone())?);
            match file.optional_text("service_account_impersonation_url")? {
                None => exchange,
                Some(_) => {
                    let url = file.url("service_account_impersonation_url")?;
                    let lifetime =
                        match file.at("service_account_impersonation.token_lifetime_seconds") {
                            None => 3600,
                            Some(value) => value
                                .as_u64()
                                .filter(|s| (600..=43_200).contains(s))
                                .ok_or_else(|| {
                                    file.wrong(
                                        "service_account_impersonation.token_lifetime_seconds",
                                        "must be a whole number of seconds from 600 to 43200",
                                    )
                                })?,
                        };
                    Arc::new(
                        Impersonation::new(client.clone(), exchange, url).with_lifetime(lifetime),
                    )
                }
            }
        }
        "impersonated_service_account" if !file.kind.contains('.') => {
            let url = file.url("service_account_impersonation_url")?;
            let source = provider_for(&file.nested("source_credentials")?, client)?;
            let delegates = match file.at("delegates") {
                None | Some(serde_json::Value::Null) => Vec::new(),
                Some(value) => value
                    .as_array()
                    .and_then(|list| {
                        list.iter()
                            .map(|d| d.as_str().map(str::to_owned))
                            .collect::<Option<Vec<_>>>()
                    })
                    .ok_or_else(|| {
                        file.wrong("delegates", "must be a list of service-account names")
                    })?,
            };
            Arc::new(Impersonation::new(client.clone(), source, url).with_delegates(delegates))
        }
        _ => {
            return Err(file.wrong(
                "type",
                "is not one fhirgen knows: expected service_account, authorized_user, \
                 external_account, external_account_authorized_user or impersonated_service_account \
                 (source_credentials: service_account, authorized_user or external_account)",
            ));
        }
    })
}

/// A provider whose token requests block their thread (gcloud's): run on the blocking pool.
struct OffRuntime(Arc<dyn TokenProvider>);

#[async_trait]
impl TokenProvider for OffRuntime {
    async fn token(&self, scopes: &[&str]) -> Result<Arc<Token>, gcp_auth::Error> {
        let inner = self.0.clone();
        let scopes: Vec<String> = scopes.iter().map(|s| s.to_string()).collect();
        tokio::task::spawn_blocking(move || {
            let scopes: Vec<&str> = scopes.iter().map(String::as_str).collect();
            tokio::runtime::Handle::current().block_on(inner.token(&scopes))
        })
        .await
        .map_err(|e| gcp_auth::Error::Other("the gcloud token task failed", e.into()))?
    }

    async fn project_id(&self) -> Result<Arc<str>, gcp_auth::Error> {
        self.0.project_id().await
    }
}
