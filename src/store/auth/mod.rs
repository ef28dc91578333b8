//! Where the credential comes from, how it is kept fresh, and how to say so (without ever
//! showing it) when the store refuses it.

mod adc;
mod external;
mod impersonate;
mod refresh;
mod service_account;
mod token;
mod user;

use std::borrow::Cow;
use std::sync::Arc;

use async_trait::async_trait;
use gcp_auth::TokenProvider;
use http::header::HeaderValue;

use crate::exit::usage;
use crate::secret::SecretString;
use impersonate::Impersonation;
use refresh::SharedToken;
use token::TokenClient;

pub use impersonate::IAM_CREDENTIALS_ENDPOINT;
pub use token::error_chain;

pub const CLOUD_PLATFORM_SCOPE: &str = "https://www.googleapis.com/auth/cloud-platform";

/// What the load flags say about Google credentials.
pub struct GoogleOptions {
    /// `--quota-project` / GOOGLE_CLOUD_QUOTA_PROJECT: wins over the ADC file's `quota_project_id`.
    pub quota_project: Option<String>,
    /// `--impersonate-service-account`: the email of the account whose tokens are sent.
    pub impersonate: Option<String>,
    /// Where `generateAccessToken` is called (a stand-in in tests).
    pub iam_credentials_endpoint: String,
    /// Token requests go through the same proxies and trust the same CAs as the store's.
    pub http: reqwest::Client,
}

/// The credential a load sends, and the project its requests are billed to.
#[derive(Clone)]
pub struct Credentials {
    scheme: Scheme,
    /// `x-goog-user-project`, when a quota project is named.
    quota_project: Option<HeaderValue>,
}

#[derive(Clone)]
enum Scheme {
    /// No Authorization header (the emulator, or an open FHIR server).
    None,
    /// `--access-token` / `FHIRGEN_ACCESS_TOKEN`: used as is, cannot be refreshed.
    Static {
        header: HeaderValue,
        token: SecretString,
    },
    /// `user:password@` in `--fhir-url`, and the forms of it a store could echo.
    Basic {
        header: HeaderValue,
        shown_as: Vec<String>,
    },
    /// A Google credential: Application Default Credentials, maybe impersonating.
    Google(Arc<SharedToken>),
}

impl Credentials {
    pub fn none() -> Self {
        Self {
            scheme: Scheme::None,
            quota_project: None,
        }
    }

    /// `--access-token`: sent as is. With `google` options, it can also be the source of an
    /// impersonated account's tokens, and bill a quota project.
    pub async fn from_token(
        token: &SecretString,
        google: Option<&GoogleOptions>,
    ) -> anyhow::Result<Self> {
        let token = SecretString::new(token.expose().trim());
        if token.expose().is_empty() {
            return Err(usage(
                "--access-token (or FHIRGEN_ACCESS_TOKEN) is empty: pass a token \
                 (`gcloud auth print-access-token`), or leave it out to use Application Default Credentials",
            ));
        }
        let mut header =
            HeaderValue::from_str(&format!("Bearer {}", token.expose())).map_err(|_| {
                usage("--access-token contains characters that cannot go in an HTTP header")
            })?;
        header.set_sensitive(true);
        let quota_project = quota_header(google.and_then(|g| g.quota_project.as_deref()))?;
        if let Some((google, email)) =
            google.and_then(|g| g.impersonate.as_deref().map(|email| (g, email)))
        {
            let source = Arc::new(StaticToken(token.clone()));
            let provider = impersonation(google, email, source)?;
            let description = format!(
                "{email}, impersonated with the token from --access-token / FHIRGEN_ACCESS_TOKEN"
            );
            let shared = SharedToken::start(provider, CLOUD_PLATFORM_SCOPE, description.clone())
                .await
                .map_err(|e| first_token_error(&description, e))?;
            return Ok(Self {
                scheme: Scheme::Google(shared),
                quota_project,
            });
        }
        eprintln!(
            "note: the token from --access-token cannot be refreshed: it lasts about an hour \
             from when it was issued, so a longer load fails with 401 when it runs out"
        );
        Ok(Self {
            scheme: Scheme::Static { header, token },
            quota_project,
        })
    }

    /// `user:password` from the URL (still percent-encoded, as the URL holds them), as the
    /// Basic credential a FHIR server behind a proxy may want.
    pub fn basic(user: &str, password: &str) -> anyhow::Result<Self> {
        use base64::Engine;
        let decode = |part: &str| percent_encoding::percent_decode_str(part).collect::<Vec<u8>>();
        let mut pair = decode(user);
        pair.push(b':');
        pair.extend(decode(password));
        let encoded = base64::engine::general_purpose::STANDARD.encode(&pair);
        let mut header = HeaderValue::from_str(&format!("Basic {encoded}")).map_err(|_| {
            usage("the user name and password in the URL cannot go in an HTTP header")
        })?;
        header.set_sensitive(true);
        let decoded_password = String::from_utf8_lossy(&decode(password)).into_owned();
        let shown_as = [encoded, password.to_owned(), decoded_password]
            .into_iter()
            .filter(|s| !s.is_empty())
            .collect();
        Ok(Self {
            scheme: Scheme::Basic { header, shown_as },
            quota_project: None,
        })
    }

    /// Finds Application Default Credentials (and the account to impersonate, if any) and
    /// fetches the first token, so a missing or broken credential stops the run before any
    /// data is read.
    pub async fn application_default(google: &GoogleOptions) -> anyhow::Result<Self> {
        let client = TokenClient(google.http.clone());
        let found = adc::find(&client).await?;
        let (provider, description) = match &google.impersonate {
            None => (found.provider, found.description),
            Some(email) => (
                impersonation(google, email, found.provider)?,
                format!("{email}, impersonated with {}", found.description),
            ),
        };
        let shared = SharedToken::start(provider, CLOUD_PLATFORM_SCOPE, description.clone())
            .await
            .map_err(|e| first_token_error(&description, e))?;
        let quota_project = google
            .quota_project
            .as_deref()
            .or(found.quota_project.as_deref());
        Ok(Self {
            scheme: Scheme::Google(shared),
            quota_project: quota_header(quota_project)?,
        })
    }

    /// The Authorization header to send now: a look-up in memory while the token is fresh.
    pub async fn header(&self) -> anyhow::Result<Option<HeaderValue>> {
        match &self.scheme {
            Scheme::None => Ok(None),
            Scheme::Static { header, .. } | Scheme::Basic { header, .. } => {
                Ok(Some(header.clone()))
            }
            Scheme::Google(shared) => shared.header().await.map(Some),
        }
    }

    /// `x-goog-user-project`, when requests are billed to a named project.
    pub fn quota_project(&self) -> Option<&HeaderValue> {
        self.quota_project.as_ref()
    }

    /// After a 401: whether a fresh token is worth one more try (the cached one had expired
    /// early or was revoked and the provider now has a different one).
    pub async fn renewed_after_rejection(&self) -> bool {
        let Scheme::Google(shared) = &self.scheme else {
            return false;
        };
        let before = shared.current();
        match shared.renew(&before).await {
            Ok(after) => !Arc::ptr_eq(&after, &before),
            Err(_) => false,
        }
    }

    /// `text` with every secret this credential holds cut out, and the proxy's: a store (or
    /// a proxy in front of it) may echo the Authorization header in an error body.
    pub fn redact<'a>(&self, text: &'a str) -> Cow<'a, str> {
        let mut text = Cow::Borrowed(text);
        let mut cut = |secret: &str| {
            // Too short to be a real secret, and cutting it would mangle the message.
            if secret.len() >= 4 && text.contains(secret) {
                text = Cow::Owned(text.replace(secret, "(redacted)"));
            }
        };
        crate::secret::proxy_secrets().iter().for_each(|s| cut(s));
        match &self.scheme {
            Scheme::None => {}
            Scheme::Static { token, .. } => cut(token.expose()),
            Scheme::Basic { shown_as, .. } => shown_as.iter().for_each(|s| cut(s)),
            Scheme::Google(shared) => shared.sent().iter().for_each(|b| cut(b.token.as_str())),
        }
        text
    }

    /// Which credential was used, for messages: never the token itself.
    pub fn source(&self) -> &str {
        match &self.scheme {
            Scheme::None => "no credential",
            Scheme::Static { .. } => "the token from --access-token / FHIRGEN_ACCESS_TOKEN",
            Scheme::Basic { .. } => "the user name and password in --fhir-url",
            Scheme::Google(shared) => &shared.source,
        }
    }

    /// What a person should do when the store answers 401 or 403 with `message`.
    pub fn remedy(&self, status: u16, message: &str) -> &'static str {
        if status == 403 {
            return forbidden_remedy(message);
        }
        match &self.scheme {
            Scheme::None => {
                "the store wants a credential: pass --access-token, or use --store with Application Default Credentials"
            }
            Scheme::Basic { .. } => {
                "the user name or password in --fhir-url was refused: check them (percent-encode special characters)"
            }
            Scheme::Static { .. } => {
                "the token is invalid or expired (they last about an hour): get a new one (`gcloud auth print-access-token`)"
            }
            Scheme::Google(_) => {
                "the credential was refused even after a fresh token: check that the account still exists and is enabled, \
                 or run `gcloud auth application-default login` again"
            }
        }
    }
}

/// Google's 403s differ by the `reason` in their ErrorInfo details (see `client::store_message`,
/// which keeps it in the message); each has its own fix.
fn forbidden_remedy(message: &str) -> &'static str {
    if message.contains("SERVICE_DISABLED") {
        "the Cloud Healthcare API is not enabled in the project that is billed: enable it \
         (`gcloud services enable healthcare.googleapis.com --project P`), or name another \
         project with --quota-project"
    } else if message.contains("ACCESS_TOKEN_SCOPE_INSUFFICIENT") {
        "the token's OAuth scopes are too narrow (a VM with the default scopes, for instance): \
         give the VM the cloud-platform scope, or use a credential file or --impersonate-service-account"
    } else if message.contains("USER_PROJECT_DENIED") {
        "the credential may not bill the quota project: grant it roles/serviceusage.serviceUsageConsumer \
         there, or name another project with --quota-project"
    } else {
        "the credential lacks an IAM permission on the store: grant roles/healthcare.fhirResourceEditor \
         on the store or dataset"
    }
}

fn quota_header(project: Option<&str>) -> anyhow::Result<Option<HeaderValue>> {
    project
        .map(|p| {
            HeaderValue::from_str(p)
                .ok()
                .filter(|_| !p.is_empty())
                .ok_or_else(|| usage(format!("`{p}` is not a project id (--quota-project)")))
        })
        .transpose()
}

fn impersonation(
    google: &GoogleOptions,
    email: &str,
    source: Arc<dyn TokenProvider>,
) -> anyhow::Result<Arc<dyn TokenProvider>> {
    let url = Impersonation::url_for(&google.iam_credentials_endpoint, email)?;
    Ok(Arc::new(Impersonation::new(
        TokenClient(google.http.clone()),
        source,
        url,
    )))
}

fn first_token_error(description: &str, error: anyhow::Error) -> anyhow::Error {
    usage(format!(
        "could not get an access token from {description}: {}",
        token::error_chain(error.as_ref())
    ))
}

/// `--access-token` as the source of an impersonated account's tokens.
struct StaticToken(SecretString);

#[async_trait]
impl TokenProvider for StaticToken {
    async fn token(&self, _scopes: &[&str]) -> Result<Arc<gcp_auth::Token>, gcp_auth::Error> {
        token::token(self.0.expose(), 3600).map_err(token::provider_error)
    }

    async fn project_id(&self) -> Result<Arc<str>, gcp_auth::Error> {
        Err(gcp_auth::Error::Str("an access token names no project"))
    }
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

    #[tokio::test]
    async fn every_form_of_a_held_secret_is_redacted() {
        let basic = Credentials::basic("loader", "p%3Ass").unwrap();
        let echoed = "denied: Authorization: Basic bG9hZGVyOnA6c3M= (password p:ss, raw p%3Ass)";
        assert_eq!(
            basic.redact(echoed),
            "denied: Authorization: Basic (redacted) (password (redacted), raw (redacted))"
        );
        let token = Credentials::from_token(&SecretString::new("ya29.abcdef"), None)
            .await
            .unwrap();
        assert_eq!(
            token.redact("bad token ya29.abcdef"),
            "bad token (redacted)"
        );
        assert!(matches!(token.redact("nothing here"), Cow::Borrowed(_)));
    }

    #[tokio::test]
    async fn an_empty_access_token_is_a_usage_error() {
        let error = Credentials::from_token(&SecretString::new("  "), None)
            .await
            .err()
            .unwrap();
        assert!(error.downcast_ref::<crate::exit::UsageError>().is_some());
    }

    #[test]
    fn each_kind_of_403_gets_its_own_fix() {
        assert!(
            forbidden_remedy("Cloud Healthcare API has not been used [SERVICE_DISABLED]")
                .contains("services enable")
        );
        assert!(
            forbidden_remedy("insufficient scopes [ACCESS_TOKEN_SCOPE_INSUFFICIENT]")
                .contains("scope")
        );
        assert!(
            forbidden_remedy(
                "Permission 'healthcare.fhirResources.create' denied [IAM_PERMISSION_DENIED]"
            )
            .contains("roles/healthcare.fhirResourceEditor")
        );
    }
}
