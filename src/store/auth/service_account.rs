//! `service_account`: a key file's RSA key signs a JWT-bearer assertion, traded for an access
//! token at the key's `token_uri`. gcp_auth parses and checks the key and signs; the request
//! goes through `TokenClient`, so it takes the store's proxy and `--ca-file` like every other
//! token request (gcp_auth's own client would take neither).

use std::sync::Arc;

use async_trait::async_trait;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use gcp_auth::{Token, TokenProvider};

use super::token::{
    CredentialFile, Refused, TokenClient, error_chain, oauth_token, provider_error,
};
use crate::secret::SecretString;

const JWT_BEARER: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";
/// The longest an assertion may live, as Google's token endpoint (and gcp_auth) have it.
const ASSERTION_LIFETIME_SECONDS: i64 = 3600;

pub struct ServiceAccountKey {
    client: TokenClient,
    token_uri: reqwest::Url,
    /// `aud` of the assertion: the `token_uri` exactly as the file has it.
    audience: String,
    client_email: String,
    /// `kid` of the assertion, so the endpoint can pick the public key without trying each.
    key_id: Option<String>,
    project_id: Option<String>,
    /// Only its signer is used: it holds the parsed private key.
    parsed: gcp_auth::CustomServiceAccount,
}

impl ServiceAccountKey {
    pub fn from_file(file: &CredentialFile, client: TokenClient) -> anyhow::Result<Self> {
        let client_email = file.text("client_email")?;
        file.text("private_key")?;
        let token_uri = file.url("token_uri")?;
        let audience = file.text("token_uri")?;
        let key_id = file.optional_text("private_key_id")?;
        let project_id = file.optional_text("project_id")?;
        let json = SecretString::new(file.json.to_string());
        let parsed = gcp_auth::CustomServiceAccount::from_json(json.expose()).map_err(|e| {
            match e {
                // gcp_auth builds an HTTPS client of its own while parsing, which needs the
                // system's root certificates even though fhirgen never uses that client.
                gcp_auth::Error::Io(..) => crate::exit::usage(format!(
                    "the {} credential file {}: cannot be read without the system's root \
                     certificates ({}): install them (the ca-certificates package), or point \
                     SSL_CERT_FILE at a PEM bundle",
                    file.kind_name(),
                    file.path.display(),
                    error_chain(&e)
                )),
                _ => file.wrong(
                    "private_key",
                    &format!("is not a usable PKCS#8 RSA key ({})", error_chain(&e)),
                ),
            }
        })?;
        Ok(Self {
            client,
            token_uri,
            audience,
            client_email,
            key_id,
            project_id,
            parsed,
        })
    }

    /// The signed JWT the token endpoint trades for an access token to `scopes`.
    fn assertion(&self, scopes: &[&str]) -> anyhow::Result<String> {
        let mut header = serde_json::json!({ "alg": "RS256", "typ": "JWT" });
        if let Some(key_id) = &self.key_id {
            header["kid"] = key_id.as_str().into();
        }
        let issued_at = chrono::Utc::now().timestamp();
        let claims = serde_json::json!({
            "iss": self.client_email,
            "scope": scopes.join(" "),
            "aud": self.audience,
            "iat": issued_at,
            "exp": issued_at + ASSERTION_LIFETIME_SECONDS,
        });
        let mut jwt = URL_SAFE_NO_PAD.encode(header.to_string());
        jwt.push('.');
        jwt.push_str(&URL_SAFE_NO_PAD.encode(claims.to_string()));
        let signature = self.parsed.signer().sign(jwt.as_bytes()).map_err(|e| {
            anyhow::anyhow!(
                "signing the token request of {} with its key: {}",
                self.client_email,
                error_chain(&e)
            )
        })?;
        jwt.push('.');
        jwt.push_str(&URL_SAFE_NO_PAD.encode(signature));
        Ok(jwt)
    }

    async fn fetch(&self, scopes: &[&str]) -> anyhow::Result<Arc<Token>> {
        let assertion = self.assertion(scopes)?;
        let request = self
            .client
            .0
            .post(self.token_uri.clone())
            .form(&[("grant_type", JWT_BEARER), ("assertion", &assertion)]);
        let what = format!(
            "getting a token for the service account {} at its key's token_uri",
            self.client_email
        );
        let answer = self
            .client
            .exchange(&what, request, &[&assertion])
            .await
            .map_err(|e| {
                // Google answers 400 invalid_grant to a deleted or disabled key, and to an
                // assertion whose times are off.
                let refused = e.downcast_ref::<Refused>();
                if refused.is_some_and(|r| r.status == reqwest::StatusCode::BAD_REQUEST) {
                    anyhow::anyhow!(
                        "{e:#}; check that the key still exists and is enabled \
                         (`gcloud iam service-accounts keys list --iam-account {}`) and that \
                         this machine's clock is right",
                        self.client_email
                    )
                } else {
                    e
                }
            })?;
        oauth_token(&what, &answer)
    }
}

#[async_trait]
impl TokenProvider for ServiceAccountKey {
    async fn token(&self, scopes: &[&str]) -> Result<Arc<Token>, gcp_auth::Error> {
        self.fetch(scopes).await.map_err(provider_error)
    }

    async fn project_id(&self) -> Result<Arc<str>, gcp_auth::Error> {
        self.project_id
            .as_deref()
            .map(Arc::from)
            .ok_or(gcp_auth::Error::Str("no project_id in the key"))
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use rsa::pkcs1::EncodeRsaPublicKey;
    use rsa::pkcs8::{EncodePrivateKey, LineEnding};

    use super::*;

    fn key_file(key: &rsa::RsaPrivateKey, changes: serde_json::Value) -> CredentialFile {
        let mut json = serde_json::json!({
            "type": "service_account",
            "project_id": "p",
            "private_key_id": "key-1",
            "private_key": key.to_pkcs8_pem(LineEnding::LF).unwrap().as_str(),
            "client_email": "loader@p.iam.gserviceaccount.com",
            "token_uri": "https://oauth2.googleapis.com/token",
        });
        for (field, value) in changes.as_object().unwrap() {
            json[field] = value.clone();
        }
        CredentialFile::parse(Path::new("/keys/sa.json"), json.to_string().as_bytes()).unwrap()
    }

    fn client() -> TokenClient {
        TokenClient(reqwest::Client::new())
    }

    fn decode(part: &str) -> serde_json::Value {
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(part).unwrap()).unwrap()
    }

    #[test]
    fn the_assertion_is_signed_by_the_key_and_names_the_account_scopes_and_token_uri() {
        let key = rsa::RsaPrivateKey::new(&mut rand08::rngs::OsRng, 2048).unwrap();
        let account =
            ServiceAccountKey::from_file(&key_file(&key, serde_json::json!({})), client()).unwrap();
        let assertion = account.assertion(&["scope-a", "scope-b"]).unwrap();
        let (signed, signature) = assertion.rsplit_once('.').unwrap();
        let public_key = key.to_public_key().to_pkcs1_der().unwrap();
        ring::signature::UnparsedPublicKey::new(
            &ring::signature::RSA_PKCS1_2048_8192_SHA256,
            public_key.as_bytes(),
        )
        .verify(
            signed.as_bytes(),
            &URL_SAFE_NO_PAD.decode(signature).unwrap(),
        )
        .expect("RS256 by the key");
        let (header, claims) = signed.split_once('.').unwrap();
        assert_eq!(
            decode(header),
            serde_json::json!({"alg": "RS256", "typ": "JWT", "kid": "key-1"})
        );
        let claims = decode(claims);
        assert_eq!(claims["iss"], "loader@p.iam.gserviceaccount.com");
        assert_eq!(claims["scope"], "scope-a scope-b");
        assert_eq!(claims["aud"], "https://oauth2.googleapis.com/token");
        let issued_at = claims["iat"].as_i64().unwrap();
        assert!((chrono::Utc::now().timestamp() - issued_at).abs() < 60);
        assert_eq!(claims["exp"].as_i64(), Some(issued_at + 3600));
    }

    #[test]
    fn a_broken_key_file_names_the_file_and_the_field() {
        let key = rsa::RsaPrivateKey::new(&mut rand08::rngs::OsRng, 1024).unwrap();
        let cases = [
            (
                serde_json::json!({"private_key": "-----BEGIN PRIVATE KEY-----\nnope\n"}),
                "`private_key` is not a usable PKCS#8 RSA key",
            ),
            (
                serde_json::json!({"client_email": null}),
                "`client_email` is missing",
            ),
            (
                serde_json::json!({"token_uri": "http://oauth2.example.com/token"}),
                "`token_uri` must be an https URL",
            ),
        ];
        for (changes, expected) in cases {
            let error = ServiceAccountKey::from_file(&key_file(&key, changes), client())
                .err()
                .unwrap()
                .to_string();
            assert!(error.contains(expected), "{error}");
            assert!(
                error.contains("service_account credential file /keys/sa.json"),
                "{error}"
            );
        }
    }
}
