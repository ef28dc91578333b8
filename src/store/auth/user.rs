//! `authorized_user`: a refresh token from `gcloud auth application-default login`, traded
//! for an access token at the file's `token_uri` (Google's by default). Also
//! `external_account_authorized_user` (a workforce identity federation login), the same grant
//! at its `token_url` with the client sent as Basic auth.

use std::sync::Arc;

use async_trait::async_trait;
use gcp_auth::{Token, TokenProvider};

use super::token::{CredentialFile, TokenClient, oauth_token, provider_error};
use crate::secret::SecretString;

const GOOGLE_TOKEN_URI: &str = "https://oauth2.googleapis.com/token";

pub struct AuthorizedUser {
    client: TokenClient,
    token_uri: reqwest::Url,
    client_id: String,
    client_secret: SecretString,
    refresh_token: SecretString,
    /// Client id and secret as Basic auth rather than in the form.
    client_in_header: bool,
}

impl AuthorizedUser {
    pub fn from_file(file: &CredentialFile, client: TokenClient) -> anyhow::Result<Self> {
        let workforce = file.kind.ends_with("external_account_authorized_user");
        let token_uri = match (workforce, file.optional_text("token_uri")?) {
            (true, _) => file.url("token_url")?,
            (false, Some(_)) => file.url("token_uri")?,
            (false, None) => reqwest::Url::parse(GOOGLE_TOKEN_URI).expect("static URL"),
        };
        Ok(Self {
            client,
            token_uri,
            client_id: file.text("client_id")?,
            client_secret: SecretString::new(file.text("client_secret")?),
            refresh_token: SecretString::new(file.text("refresh_token")?),
            client_in_header: workforce,
        })
    }

    async fn fetch(&self) -> anyhow::Result<Arc<Token>> {
        let mut request = self.client.0.post(self.token_uri.clone());
        let mut form = vec![
            ("grant_type", "refresh_token"),
            ("refresh_token", self.refresh_token.expose()),
        ];
        if self.client_in_header {
            request = request.basic_auth(&self.client_id, Some(self.client_secret.expose()));
        } else {
            form.push(("client_id", &self.client_id));
            form.push(("client_secret", self.client_secret.expose()));
        }
        let request = request.form(&form);
        let secrets = [self.client_secret.expose(), self.refresh_token.expose()];
        let answer = self
            .client
            .exchange("refreshing the user credential", request, &secrets)
            .await?;
        oauth_token("refreshing the user credential", &answer)
    }
}

#[async_trait]
impl TokenProvider for AuthorizedUser {
    async fn token(&self, _scopes: &[&str]) -> Result<Arc<Token>, gcp_auth::Error> {
        self.fetch().await.map_err(provider_error)
    }

    async fn project_id(&self) -> Result<Arc<str>, gcp_auth::Error> {
        Err(gcp_auth::Error::Str("a user credential names no project"))
    }
}
