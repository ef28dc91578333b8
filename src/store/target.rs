//! Which store to load into, with which credential; checked before any data moves.

use url::Url;

use super::auth::{Credentials, GoogleOptions};
use super::client::Network;
use crate::emulator::{Emulator, EmulatorOptions};
use crate::exit::usage;
use crate::secret::{SecretString, redact_url};

/// The store named on the command line, checked: a well-formed name or URL, and no credential
/// bound for plain http off this machine. Nothing is started or fetched yet.
pub enum TargetSpec {
    /// A Cloud Healthcare FHIR store: its name and URL (`{endpoint}/{name}`).
    Google { name: String, store_url: String },
    /// Any FHIR server: its base URL without user info, which became Basic credentials.
    Fhir {
        base: String,
        basic: Option<Credentials>,
    },
    /// The built-in emulator, started in this process for the run.
    Emulator,
}

/// The credential flags: a token given outright, or what Application Default Credentials need.
#[derive(Debug, Clone)]
pub struct AuthOptions {
    pub access_token: Option<SecretString>,
    pub quota_project: Option<String>,
    pub impersonate: Option<String>,
    pub iam_credentials_endpoint: String,
}

/// A Cloud Healthcare FHIR store (or the emulator's): where its settings are read.
pub struct GoogleStore {
    pub url: String,
    /// For messages: the store's name.
    pub name: String,
}

pub struct Target {
    pub fhir_base: String,
    /// Set for a Google-shaped store, whose settings are read before loading.
    pub google: Option<GoogleStore>,
    /// For the summary: the store or URL, never a credential.
    pub description: String,
    pub credentials: Credentials,
    /// The in-process store, kept alive for the run with `--emulator`.
    pub emulator: Option<Emulator>,
}

impl TargetSpec {
    /// Checks the target flags (clap has made sure exactly one is given).
    pub fn check(
        store: Option<&str>,
        fhir_url: Option<&str>,
        emulator: bool,
        endpoint: &str,
        auth: &AuthOptions,
    ) -> anyhow::Result<Self> {
        if emulator {
            return Ok(Self::Emulator);
        }
        let (raw_base, flag) = match (store, fhir_url) {
            (Some(store), _) => {
                check_store_name(store)?;
                let endpoint = endpoint.trim_end_matches('/');
                (
                    format!("{endpoint}/{}/fhir", store.trim_matches('/')),
                    "--endpoint",
                )
            }
            (None, Some(url)) => (url.trim_end_matches('/').to_owned(), "--fhir-url"),
            (None, None) => return Err(usage("no target: give --store, --fhir-url or --emulator")),
        };
        let url = parse_base(&raw_base, flag)?;
        let has_userinfo = !url.username().is_empty() || url.password().is_some();
        // user:password in the URL is a credential too: sent as Basic auth, never shown.
        let (fhir_base, basic) = if has_userinfo {
            let basic = Credentials::basic(url.username(), url.password().unwrap_or(""))?;
            let mut bare = url.clone();
            let _ = bare.set_username("");
            let _ = bare.set_password(None);
            (
                bare.to_string().trim_end_matches('/').to_owned(),
                Some(basic),
            )
        } else {
            (raw_base, None)
        };
        check_sendable(&fhir_base, flag)?;
        let sends_token = auth.access_token.is_some() || store.is_some() || has_userinfo;
        if sends_token && url.scheme() == "http" && !is_loopback(&url) {
            return Err(usage(format!(
                "refusing to send credentials over plain http to {}: use https, or a loopback address for local testing",
                url.host_str().unwrap_or("?")
            )));
        }
        Ok(match store {
            Some(name) => Self::Google {
                name: name.to_owned(),
                store_url: fhir_base
                    .strip_suffix("/fhir")
                    .expect("built with /fhir above")
                    .to_owned(),
            },
            None => Self::Fhir {
                base: fhir_base,
                basic,
            },
        })
    }
}

/// Starts the emulator or finds the credential: the target, ready for requests.
pub async fn resolve(
    spec: &TargetSpec,
    auth: &AuthOptions,
    network: &Network,
) -> anyhow::Result<Target> {
    match spec {
        TargetSpec::Emulator => {
            let emulator = Emulator::start(
                EmulatorOptions::default(),
                "127.0.0.1:0".parse().expect("static address"),
            )
            .await?;
            let fhir_base = emulator.fhir_base_url();
            Ok(Target {
                description: format!("built-in emulator at {fhir_base}"),
                google: Some(GoogleStore {
                    url: emulator.store_url(),
                    name: "the built-in emulator's store".to_owned(),
                }),
                fhir_base,
                credentials: Credentials::none(),
                emulator: Some(emulator),
            })
        }
        TargetSpec::Google { name, store_url } => {
            let credentials = google_credentials(auth, network).await?;
            Ok(Target {
                fhir_base: format!("{store_url}/fhir"),
                description: name.clone(),
                google: Some(GoogleStore {
                    url: store_url.clone(),
                    name: name.clone(),
                }),
                credentials,
                emulator: None,
            })
        }
        TargetSpec::Fhir { base, basic } => {
            let credentials = match (&auth.access_token, basic) {
                (Some(token), _) => Credentials::from_token(token, None).await?,
                (None, Some(basic)) => basic.clone(),
                (None, None) => Credentials::none(),
            };
            Ok(Target {
                // The query may carry a key (`?api_key=...`): the summary shows the URL without it.
                description: redact_url(base),
                fhir_base: base.clone(),
                google: None,
                credentials,
                emulator: None,
            })
        }
    }
}

/// The FHIR base from `flag`, parsed; a mistake is shown with its credentials redacted, since
/// a malformed URL is the one most likely to be printed.
fn parse_base(raw: &str, flag: &str) -> anyhow::Result<Url> {
    let url = Url::parse(raw).map_err(|e| unusable(raw, flag, &e.to_string()))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(unusable(
            raw,
            flag,
            "it must start with http:// or https://",
        ));
    }
    Ok(url)
}

/// What the URL parser accepts, an HTTP request line may still not: found here, not by the
/// first request.
fn check_sendable(fhir_base: &str, flag: &str) -> anyhow::Result<()> {
    fhir_base
        .parse::<http::Uri>()
        .map(drop)
        .map_err(|e| unusable(fhir_base, flag, &e.to_string()))
}

fn unusable(raw: &str, flag: &str, why: &str) -> anyhow::Error {
    usage(format!(
        "{flag} `{}` is not a usable FHIR base URL: {why}; give one such as \
         https://fhir.example.com/r4 (percent-encode special characters in a user name or password)",
        redact_url(raw)
    ))
}

/// The credential for Google's APIs (the store's, Cloud Storage's): the token given, or
/// Application Default Credentials, with the quota project and impersonation asked for.
pub async fn google_credentials(
    auth: &AuthOptions,
    network: &Network,
) -> anyhow::Result<Credentials> {
    let google = google_options(auth, network)?;
    match &auth.access_token {
        Some(token) => Credentials::from_token(token, Some(&google)).await,
        None => Credentials::application_default(&google).await,
    }
}

fn google_options(auth: &AuthOptions, network: &Network) -> anyhow::Result<GoogleOptions> {
    Ok(GoogleOptions {
        quota_project: auth.quota_project.clone(),
        impersonate: auth.impersonate.clone(),
        iam_credentials_endpoint: auth.iam_credentials_endpoint.clone(),
        http: network.builder()?.build()?,
    })
}

fn check_store_name(store: &str) -> anyhow::Result<()> {
    let parts: Vec<&str> = store.trim_matches('/').split('/').collect();
    let shape = ["projects", "locations", "datasets", "fhirStores"];
    let ok = parts.len() == 8
        && parts
            .chunks(2)
            .zip(shape)
            .all(|(pair, name)| pair[0] == name && !pair[1].is_empty());
    if ok {
        Ok(())
    } else {
        Err(usage(format!(
            "`{store}` is not a FHIR store name: expected projects/PROJECT/locations/LOCATION/datasets/DATASET/fhirStores/STORE"
        )))
    }
}

fn is_loopback(url: &Url) -> bool {
    match url.host() {
        Some(url::Host::Domain(domain)) => domain == "localhost",
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_names() {
        assert!(check_store_name("projects/p/locations/us/datasets/d/fhirStores/s").is_ok());
        assert!(check_store_name("projects/p/datasets/d/fhirStores/s").is_err());
        assert!(check_store_name("projects//locations/us/datasets/d/fhirStores/s").is_err());
    }

    #[test]
    fn loopback_hosts() {
        for url in [
            "http://127.0.0.1:8080/fhir",
            "http://localhost/fhir",
            "http://[::1]:1/fhir",
        ] {
            assert!(is_loopback(&Url::parse(url).unwrap()), "{url}");
        }
        assert!(!is_loopback(
            &Url::parse("http://example.com/fhir").unwrap()
        ));
    }
}
