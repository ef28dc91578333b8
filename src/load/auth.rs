//! Where the bearer token comes from, and how to say so when the store refuses it.

use std::sync::Arc;

use anyhow::Context;
use gcp_auth::TokenProvider;
use reqwest::header::HeaderValue;
use tokio::sync::RwLock;

use crate::secret::SecretString;

pub const CLOUD_PLATFORM_SCOPE: &str = "https://www.googleapis.com/auth/cloud-platform";

/// The credential a load sends, fetched once and refreshed only when it expires.
pub enum Credentials {
    /// No Authorization header (the emulator, or an open FHIR server).
    None,
    /// `--access-token` / `FHIRGEN_ACCESS_TOKEN`: used as is, cannot be refreshed.
    Static(HeaderValue),
    /// Application Default Credentials through gcp_auth, which caches and refreshes the token.
    Google {
        provider: Arc<dyn TokenProvider>,
        source: String,
        current: RwLock<Arc<gcp_auth::Token>>,
    },
}

impl Credentials {
    pub fn from_token(token: &SecretString) -> anyhow::Result<Self> {
        let mut value =
            HeaderValue::from_str(&format!("Bearer {}", token.expose())).map_err(|_| {
                crate::exit::usage(
                    "--access-token contains characters that cannot go in an HTTP header",
                )
            })?;
        value.set_sensitive(true);
        Ok(Self::Static(value))
    }

    /// Finds Application Default Credentials and fetches the first token, so a missing or
    /// broken credential stops the run before any data is read.
    pub async fn application_default() -> anyhow::Result<Self> {
        let source = describe_adc_source();
        let provider = gcp_auth::provider().await.map_err(|e| {
            crate::exit::usage(format!(
                "no Google credentials found ({e}); run `gcloud auth application-default login`, \
                 set GOOGLE_APPLICATION_CREDENTIALS to a service-account key file, or pass --access-token"
            ))
        })?;
        let token = provider.token(&[CLOUD_PLATFORM_SCOPE]).await.map_err(|e| {
            crate::exit::usage(format!(
                "could not get an access token from {source}: {e}; check the credential or run \
                     `gcloud auth application-default login`"
            ))
        })?;
        Ok(Self::Google {
            provider,
            source,
            current: RwLock::new(token),
        })
    }

    /// The Authorization header to send now; a look-up in memory unless the token has expired.
    pub async fn header(&self) -> anyhow::Result<Option<HeaderValue>> {
        match self {
            Self::None => Ok(None),
            Self::Static(value) => Ok(Some(value.clone())),
            Self::Google {
                provider, current, ..
            } => {
                let mut token = current.read().await.clone();
                if token.has_expired() {
                    token = self.refresh(provider, current).await?;
                }
                let mut value = HeaderValue::from_str(&format!("Bearer {}", token.as_str()))
                    .context("the access token cannot go in an HTTP header")?;
                value.set_sensitive(true);
                Ok(Some(value))
            }
        }
    }

    async fn refresh(
        &self,
        provider: &Arc<dyn TokenProvider>,
        current: &RwLock<Arc<gcp_auth::Token>>,
    ) -> anyhow::Result<Arc<gcp_auth::Token>> {
        let token = provider
            .token(&[CLOUD_PLATFORM_SCOPE])
            .await
            .with_context(|| format!("refreshing the access token from {}", self.source()))?;
        *current.write().await = token.clone();
        Ok(token)
    }

    /// After a 401: whether a fresh token is worth one more try (the cached one had expired
    /// early or was revoked and the provider now has a different one).
    pub async fn renewed_after_rejection(&self) -> bool {
        let Self::Google {
            provider, current, ..
        } = self
        else {
            return false;
        };
        let before = current.read().await.as_str().to_owned();
        match self.refresh(provider, current).await {
            Ok(token) => token.as_str() != before,
            Err(_) => false,
        }
    }

    /// Which credential was used, for messages: never the token itself.
    pub fn source(&self) -> &str {
        match self {
            Self::None => "no credential",
            Self::Static(_) => "the token from --access-token / FHIRGEN_ACCESS_TOKEN",
            Self::Google { source, .. } => source,
        }
    }

    /// What a person should do when the store answers 401 or 403 to this credential.
    pub fn remedy(&self, status: u16) -> &'static str {
        match (self, status) {
            (Self::None, _) => {
                "the store wants a credential: pass --access-token, or use --store with Application Default Credentials"
            }
            (Self::Static(_), 401) => {
                "the token is invalid or expired: get a new one (`gcloud auth print-access-token`)"
            }
            (Self::Google { .. }, 401) => {
                "the credential was refused: run `gcloud auth application-default login` or check the service-account key"
            }
            (_, _) => {
                "the credential lacks permission: grant roles/healthcare.fhirResourceEditor on the store or dataset"
            }
        }
    }
}

/// Mirrors gcp_auth's search order so that messages can name what was (probably) used.
fn describe_adc_source() -> String {
    if let Some(path) = std::env::var_os("GOOGLE_APPLICATION_CREDENTIALS") {
        return format!(
            "the service-account key in GOOGLE_APPLICATION_CREDENTIALS ({})",
            path.to_string_lossy()
        );
    }
    let adc_file = std::env::var_os("HOME").map(|home| {
        std::path::Path::new(&home).join(".config/gcloud/application_default_credentials.json")
    });
    if adc_file.as_ref().is_some_and(|p| p.exists()) {
        return "the Application Default Credentials file from `gcloud auth application-default login`"
            .to_owned();
    }
    "the GCE metadata server or the gcloud CLI (Application Default Credentials)".to_owned()
}
