//! `external_account` (workload identity federation, what `google-github-actions/auth` and
//! `gcloud iam workload-identity-pools create-cred-config` write): a subject token from a
//! file or a URL, exchanged at the STS `token_url` for a Google access token, then optionally
//! for a service account's token through `service_account_impersonation_url`.

use std::path::PathBuf;
use std::sync::Arc;

use async_trait::async_trait;
use gcp_auth::{Token, TokenProvider};

use super::token::{CredentialFile, TokenClient, oauth_token, provider_error};

const TOKEN_EXCHANGE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
const ACCESS_TOKEN_TYPE: &str = "urn:ietf:params:oauth:token-type:access_token";

/// Where the subject token is read from.
enum SubjectSource {
    File(PathBuf),
    Url {
        url: reqwest::Url,
        headers: reqwest::header::HeaderMap,
    },
}

/// How the subject token is held in what the source gives.
enum SubjectFormat {
    Text,
    Json { field: String },
}

pub struct ExternalAccount {
    client: TokenClient,
    token_url: reqwest::Url,
    audience: String,
    subject_token_type: String,
    source: SubjectSource,
    format: SubjectFormat,
    /// For workforce pools without impersonation: the project billed for the exchange.
    workforce_pool_user_project: Option<String>,
}

impl ExternalAccount {
    pub fn from_file(file: &CredentialFile, client: TokenClient) -> anyhow::Result<Self> {
        let token_url = file.url("token_url")?;
        let audience = file.text("audience")?;
        let subject_token_type = file.text("subject_token_type")?;
        if file.at("credential_source").is_none_or(|s| !s.is_object()) {
            return Err(file.wrong("credential_source", "is missing or not an object"));
        }
        if file.at("credential_source.environment_id").is_some() {
            return Err(file.wrong(
                "credential_source.environment_id",
                "names an AWS source, which fhirgen does not support: run the load where a \
                 file- or URL-sourced credential is available, or pass --access-token",
            ));
        }
        if file.at("credential_source.executable").is_some() {
            return Err(file.wrong(
                "credential_source.executable",
                "names an executable source, which fhirgen does not run: write the subject \
                 token to a file and point `credential_source.file` at it",
            ));
        }
        let source = match (
            file.optional_text("credential_source.file")?,
            file.optional_text("credential_source.url")?,
        ) {
            (Some(path), None) => SubjectSource::File(PathBuf::from(path)),
            (None, Some(_)) => SubjectSource::Url {
                url: file.url("credential_source.url")?,
                headers: source_headers(file)?,
            },
            (Some(_), Some(_)) => {
                return Err(
                    file.wrong("credential_source", "names both `file` and `url`: keep one")
                );
            }
            (None, None) => {
                return Err(file.wrong(
                    "credential_source",
                    "names neither `file` nor `url` (the sources fhirgen supports)",
                ));
            }
        };
        let format = match file
            .optional_text("credential_source.format.type")?
            .as_deref()
        {
            None | Some("text") => SubjectFormat::Text,
            Some("json") => SubjectFormat::Json {
                field: file.text("credential_source.format.subject_token_field_name")?,
            },
            Some(other) => {
                return Err(file.wrong(
                    "credential_source.format.type",
                    &format!("is `{other}`: expected `text` or `json`"),
                ));
            }
        };
        Ok(Self {
            client,
            token_url,
            audience,
            subject_token_type,
            source,
            format,
            workforce_pool_user_project: file.optional_text("workforce_pool_user_project")?,
        })
    }

    async fn subject_token(&self) -> anyhow::Result<String> {
        let (raw, from) = match &self.source {
            SubjectSource::File(path) => {
                let raw = tokio::fs::read_to_string(path).await.map_err(|e| {
                    anyhow::anyhow!("cannot read the subject token file {}: {e}", path.display())
                })?;
                (raw, path.display().to_string())
            }
            SubjectSource::Url { url, headers } => {
                let mut shown = url.clone();
                shown.set_query(None);
                let response = self
                    .client
                    .0
                    .get(url.clone())
                    .headers(headers.clone())
                    .timeout(std::time::Duration::from_secs(30))
                    .send()
                    .await
                    .map_err(|e| {
                        anyhow::anyhow!(
                            "cannot fetch the subject token from {shown}: {}",
                            super::token::error_chain(&e)
                        )
                    })?;
                let status = response.status();
                if !status.is_success() {
                    anyhow::bail!("fetching the subject token: {shown} answered {status}");
                }
                (response.text().await?, shown.to_string())
            }
        };
        let token = match &self.format {
            SubjectFormat::Text => raw.trim().to_owned(),
            SubjectFormat::Json { field } => serde_json::from_str::<serde_json::Value>(&raw)
                .ok()
                .and_then(|json| json[field.as_str()].as_str().map(str::to_owned))
                .ok_or_else(|| {
                    anyhow::anyhow!(
                        "the subject token from {from} is not JSON with a string field `{field}` \
                         (credential_source.format.subject_token_field_name)"
                    )
                })?,
        };
        if token.is_empty() {
            anyhow::bail!("the subject token from {from} is empty");
        }
        Ok(token)
    }

    async fn fetch(&self, scopes: &[&str]) -> anyhow::Result<Arc<Token>> {
        let subject_token = self.subject_token().await?;
        let scope = scopes.join(" ");
        let options = self
            .workforce_pool_user_project
            .as_ref()
            .map(|project| serde_json::json!({ "userProject": project }).to_string());
        let mut form = vec![
            ("grant_type", TOKEN_EXCHANGE),
            ("audience", &self.audience),
            ("scope", &scope),
            ("requested_token_type", ACCESS_TOKEN_TYPE),
            ("subject_token", &subject_token),
            ("subject_token_type", &self.subject_token_type),
        ];
        if let Some(options) = &options {
            form.push(("options", options));
        }
        let request = self.client.0.post(self.token_url.clone()).form(&form);
        let what = "exchanging the external subject token (STS)";
        let answer = self
            .client
            .exchange(what, request, &[&subject_token])
            .await?;
        oauth_token(what, &answer)
    }
}

fn source_headers(file: &CredentialFile) -> anyhow::Result<reqwest::header::HeaderMap> {
    let mut headers = reqwest::header::HeaderMap::new();
    let Some(found) = file.at("credential_source.headers") else {
        return Ok(headers);
    };
    let field = "credential_source.headers";
    let object = found
        .as_object()
        .ok_or_else(|| file.wrong(field, "must be an object of header names to values"))?;
    for (name, value) in object {
        let name = reqwest::header::HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| file.wrong(field, &format!("has `{name}`, not a header name")))?;
        let mut value = value
            .as_str()
            .and_then(|v| reqwest::header::HeaderValue::from_str(v).ok())
            .ok_or_else(|| {
                file.wrong(
                    field,
                    &format!("has a value for `{name}` that is not a header value"),
                )
            })?;
        value.set_sensitive(true);
        headers.insert(name, value);
    }
    Ok(headers)
}

#[async_trait]
impl TokenProvider for ExternalAccount {
    async fn token(&self, scopes: &[&str]) -> Result<Arc<Token>, gcp_auth::Error> {
        self.fetch(scopes).await.map_err(provider_error)
    }

    async fn project_id(&self) -> Result<Arc<str>, gcp_auth::Error> {
        Err(gcp_auth::Error::Str("an external account names no project"))
    }
}
