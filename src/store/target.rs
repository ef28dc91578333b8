//! Which store to load into, with which credential; checked before any data moves.

use url::Url;

use super::auth::{Credentials, GoogleOptions};
use super::client::Network;
use crate::cli::LoadArgs;
use crate::emulator::{Emulator, EmulatorOptions};
use crate::exit::usage;
use crate::secret::redact_url;

pub struct Target {
    pub fhir_base: String,
    /// For the summary: the store or URL, never a credential.
    pub description: String,
    pub credentials: Credentials,
    /// The in-process store, kept alive for the run with `--emulator`.
    pub emulator: Option<Emulator>,
}

pub async fn resolve(args: &LoadArgs) -> anyhow::Result<Target> {
    let target = &args.target;
    if target.emulator {
        let emulator = Emulator::start(
            EmulatorOptions::default(),
            "127.0.0.1:0".parse().expect("static address"),
        )
        .await?;
        let fhir_base = emulator.fhir_base_url();
        return Ok(Target {
            description: format!("built-in emulator at {fhir_base}"),
            fhir_base,
            credentials: Credentials::none(),
            emulator: Some(emulator),
        });
    }
    let (raw_base, flag, wants_google_auth) = if let Some(store) = &target.store {
        check_store_name(store)?;
        let endpoint = args.connection.endpoint.trim_end_matches('/');
        let base = format!("{endpoint}/{}/fhir", store.trim_matches('/'));
        (base, "--endpoint", true)
    } else if let Some(url) = &target.fhir_url {
        (url.trim_end_matches('/').to_owned(), "--fhir-url", false)
    } else {
        return Err(usage("no target: give --store, --fhir-url or --emulator"));
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
    // The query may carry a key (`?api_key=...`): the summary shows the URL without it.
    let description = match &target.store {
        Some(store) => store.clone(),
        None => redact_url(&fhir_base),
    };
    let sends_token = args.connection.access_token.is_some() || wants_google_auth || has_userinfo;
    if sends_token && url.scheme() == "http" && !is_loopback(&url) {
        return Err(usage(format!(
            "refusing to send credentials over plain http to {}: use https, or a loopback address for local testing",
            url.host_str().unwrap_or("?")
        )));
    }
    let google = if wants_google_auth {
        Some(google_options(args)?)
    } else {
        None
    };
    let credentials = match (&args.connection.access_token, basic, &google) {
        (Some(token), _, google) => Credentials::from_token(token, google.as_ref()).await?,
        (None, _, Some(google)) => Credentials::application_default(google).await?,
        (None, Some(basic), None) => basic,
        (None, None, None) => Credentials::none(),
    };
    Ok(Target {
        fhir_base,
        description,
        credentials,
        emulator: None,
    })
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

fn google_options(args: &LoadArgs) -> anyhow::Result<GoogleOptions> {
    let network = Network {
        ca_file: args.connection.ca_file.clone(),
    };
    Ok(GoogleOptions {
        quota_project: args.connection.quota_project.clone(),
        impersonate: args.connection.impersonate_service_account.clone(),
        iam_credentials_endpoint: args.connection.iam_credentials_endpoint.clone(),
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
