//! Where the bearer token comes from, and how to say so when the store refuses it.

use std::sync::{Arc, RwLock};

use anyhow::Context;
use gcp_auth::TokenProvider;
use http::header::HeaderValue;

use crate::secret::SecretString;

pub const CLOUD_PLATFORM_SCOPE: &str = "https://www.googleapis.com/auth/cloud-platform";

/// The credential a load sends, fetched once and refreshed only when it expires.
pub enum Credentials {
    /// No Authorization header (the emulator, or an open FHIR server).
    None,
    /// `--access-token` / `FHIRGEN_ACCESS_TOKEN`: used as is, cannot be refreshed.
    Static(HeaderValue),
    /// `user:password@` in `--fhir-url`.
    Basic(HeaderValue),
    /// Application Default Credentials through gcp_auth, which caches and refreshes the token.
    Google {
        provider: Arc<dyn TokenProvider>,
        source: String,
        current: RwLock<Arc<Bearer>>,
    },
}

/// A token with its header built once, so that a request costs a look-up, not a format.
pub struct Bearer {
    token: Arc<gcp_auth::Token>,
    header: HeaderValue,
}

impl Bearer {
    fn new(token: Arc<gcp_auth::Token>) -> anyhow::Result<Self> {
        let mut header = HeaderValue::from_str(&format!("Bearer {}", token.as_str()))
            .context("the access token cannot go in an HTTP header")?;
        header.set_sensitive(true);
        Ok(Self { token, header })
    }
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

    /// `user:password` from the URL (still percent-encoded, as the URL holds them), as the
    /// Basic credential a FHIR server behind a proxy may want.
    pub fn basic(user: &str, password: &str) -> anyhow::Result<Self> {
        use base64::Engine;
        let decode = |part: &str| percent_encoding::percent_decode_str(part).collect::<Vec<u8>>();
        let mut pair = decode(user);
        pair.push(b':');
        pair.extend(decode(password));
        let encoded = base64::engine::general_purpose::STANDARD.encode(pair);
        let mut value = HeaderValue::from_str(&format!("Basic {encoded}"))
            .context("the user name and password in the URL cannot go in an HTTP header")?;
        value.set_sensitive(true);
        Ok(Self::Basic(value))
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
            current: RwLock::new(Arc::new(Bearer::new(token)?)),
        })
    }

    /// The Authorization header to send now; a look-up in memory unless the token has expired.
    pub async fn header(&self) -> anyhow::Result<Option<HeaderValue>> {
        match self {
            Self::None => Ok(None),
            Self::Static(value) | Self::Basic(value) => Ok(Some(value.clone())),
            Self::Google {
                provider, current, ..
            } => {
                let mut bearer = current.read().expect("token lock").clone();
                if bearer.token.has_expired() {
                    bearer = self.refresh(provider, current).await?;
                }
                Ok(Some(bearer.header.clone()))
            }
        }
    }

    async fn refresh(
        &self,
        provider: &Arc<dyn TokenProvider>,
        current: &RwLock<Arc<Bearer>>,
    ) -> anyhow::Result<Arc<Bearer>> {
        let token = provider
            .token(&[CLOUD_PLATFORM_SCOPE])
            .await
            .with_context(|| format!("refreshing the access token from {}", self.source()))?;
        let bearer = Arc::new(Bearer::new(token)?);
        *current.write().expect("token lock") = bearer.clone();
        Ok(bearer)
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
        let before = current.read().expect("token lock").token.clone();
        match self.refresh(provider, current).await {
            Ok(bearer) => bearer.token.as_str() != before.as_str(),
            Err(_) => false,
        }
    }

    /// Which credential was used, for messages: never the token itself.
    pub fn source(&self) -> &str {
        match self {
            Self::None => "no credential",
            Self::Static(_) => "the token from --access-token / FHIRGEN_ACCESS_TOKEN",
            Self::Basic(_) => "the user name and password in --fhir-url",
            Self::Google { source, .. } => source,
        }
    }

    /// What a person should do when the store answers 401 or 403 to this credential.
    pub fn remedy(&self, status: u16) -> &'static str {
        match (self, status) {
            (Self::None, _) => {
                "the store wants a credential: pass --access-token, or use --store with Application Default Credentials"
            }
            (Self::Basic(_), 401) => {
                "the user name or password in --fhir-url was refused: check them (percent-encode special characters)"
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

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn url_user_and_password_become_a_sensitive_basic_header() {
        let credentials = Credentials::basic("loader%40example", "p%3Ass").unwrap();
        let header = credentials.header().await.unwrap().unwrap();
        // base64("loader@example:p:ss")
        assert_eq!(header, "Basic bG9hZGVyQGV4YW1wbGU6cDpzcw==");
        assert!(header.is_sensitive());
        assert_eq!(
            credentials.source(),
            "the user name and password in --fhir-url"
        );
    }
}
