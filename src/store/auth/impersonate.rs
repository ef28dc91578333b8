//! Service-account impersonation: IAM Credentials `generateAccessToken`, called with the
//! token of another credential. Used by `--impersonate-service-account`, by
//! `impersonated_service_account` files, and by `external_account` files that name a
//! `service_account_impersonation_url`.

use std::sync::Arc;

use async_trait::async_trait;
use gcp_auth::{Token, TokenProvider};

use super::token::{TokenClient, provider_error, token};

pub const IAM_CREDENTIALS_ENDPOINT: &str = "https://iamcredentials.googleapis.com/v1";

pub struct Impersonation {
    client: TokenClient,
    source: Arc<dyn TokenProvider>,
    /// `.../serviceAccounts/EMAIL:generateAccessToken`.
    url: reqwest::Url,
    delegates: Vec<String>,
    lifetime_seconds: u64,
}

impl Impersonation {
    pub fn new(client: TokenClient, source: Arc<dyn TokenProvider>, url: reqwest::Url) -> Self {
        Self {
            client,
            source,
            url,
            delegates: Vec::new(),
            lifetime_seconds: 3600,
        }
    }

    /// The `generateAccessToken` URL of `email` under an IAM Credentials endpoint.
    pub fn url_for(endpoint: &str, email: &str) -> anyhow::Result<reqwest::Url> {
        if email.is_empty() || email.contains(['/', '?', '#', ' ']) {
            return Err(crate::exit::usage(format!(
                "--impersonate-service-account `{email}` is not a service-account email"
            )));
        }
        let endpoint = endpoint.trim_end_matches('/');
        reqwest::Url::parse(&format!(
            "{endpoint}/projects/-/serviceAccounts/{email}:generateAccessToken"
        ))
        .map_err(|e| {
            crate::exit::usage(format!(
                "the IAM Credentials endpoint `{endpoint}` is not a URL: {e}"
            ))
        })
    }

    pub fn with_delegates(mut self, delegates: Vec<String>) -> Self {
        self.delegates = delegates;
        self
    }

    pub fn with_lifetime(mut self, seconds: u64) -> Self {
        self.lifetime_seconds = seconds;
        self
    }

    /// The service account this impersonates, for messages.
    pub fn account(url: &reqwest::Url) -> String {
        url.path()
            .rsplit('/')
            .next()
            .and_then(|last| last.strip_suffix(":generateAccessToken"))
            .map(|email| {
                percent_encoding::percent_decode_str(email)
                    .decode_utf8_lossy()
                    .into_owned()
            })
            .unwrap_or_else(|| url.to_string())
    }

    async fn fetch(&self, scopes: &[&str]) -> anyhow::Result<Arc<Token>> {
        let source = self.source.token(scopes).await.map_err(|e| {
            anyhow::anyhow!(
                "impersonating {}: the source credential gave no token: {}",
                Self::account(&self.url),
                super::token::error_chain(&e)
            )
        })?;
        let body = serde_json::json!({
            "scope": scopes,
            "delegates": self.delegates,
            "lifetime": format!("{}s", self.lifetime_seconds),
        });
        let request = self
            .client
            .0
            .post(self.url.clone())
            .bearer_auth(source.as_str())
            .json(&body);
        let what = format!("impersonating {}", Self::account(&self.url));
        let answer = self
            .client
            .exchange(&what, request, &[source.as_str()])
            .await
            .map_err(|e| {
                if e.to_string().contains(" 403 ") {
                    anyhow::anyhow!(
                        "{e:#}; the source credential needs roles/iam.serviceAccountTokenCreator on {}",
                        Self::account(&self.url)
                    )
                } else {
                    e
                }
            })?;
        let access_token = answer["accessToken"]
            .as_str()
            .filter(|t| !t.is_empty())
            .ok_or_else(|| anyhow::anyhow!("{what}: the answer has no accessToken"))?;
        let expires_in = answer["expireTime"]
            .as_str()
            .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
            .map(|at| (at.timestamp() - chrono::Utc::now().timestamp()).max(0) as u64)
            .unwrap_or(self.lifetime_seconds);
        token(access_token, expires_in)
    }
}

#[async_trait]
impl TokenProvider for Impersonation {
    async fn token(&self, scopes: &[&str]) -> Result<Arc<Token>, gcp_auth::Error> {
        self.fetch(scopes).await.map_err(provider_error)
    }

    async fn project_id(&self) -> Result<Arc<str>, gcp_auth::Error> {
        self.source.project_id().await
    }
}
