//! Secrets kept out of what is shown: a string that never shows itself in logs, errors or
//! `Debug` output, and URLs shown without the credentials they may carry.

use std::fmt;
use std::str::FromStr;
use std::sync::OnceLock;

#[derive(Clone, PartialEq, Eq)]
pub struct SecretString(String);

impl SecretString {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The secret itself; call only where it is sent, never where it is shown.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for SecretString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("(redacted)")
    }
}

impl fmt::Display for SecretString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("(redacted)")
    }
}

impl FromStr for SecretString {
    type Err = std::convert::Infallible;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(Self(s.to_owned()))
    }
}

/// What stands in for a secret in a shown URL.
const REDACTED: &str = "***";

/// `raw` as it may be shown: user name and password, query values and fragment replaced by
/// `***`, the rest kept so that a person can see what is wrong with it.
///
/// It works on the raw text, never on a parsed URL: the URLs that most need showing are the
/// ones that do not parse. It redacts too much rather than too little, so an unencoded `/`,
/// `?` or `#` in a password still cannot leak it: everything up to the last `@` counts as user
/// information.
pub fn redact_url(raw: &str) -> String {
    let (scheme, rest) = match raw.find("://") {
        Some(end) => raw.split_at(end + 3),
        None => ("", raw),
    };
    let (userinfo, location) = match rest.rfind('@') {
        Some(at) => (Some(REDACTED), &rest[at + 1..]),
        None => (None, rest),
    };
    let (location, fragment) = match location.split_once('#') {
        Some((location, _)) => (location, Some(REDACTED)),
        None => (location, None),
    };
    let mut shown = String::with_capacity(raw.len());
    shown.push_str(scheme);
    if let Some(userinfo) = userinfo {
        shown.push_str(userinfo);
        shown.push('@');
    }
    match location.split_once('?') {
        Some((path, query)) => {
            shown.push_str(path);
            shown.push('?');
            shown.push_str(&redact_query(query));
        }
        None => shown.push_str(location),
    }
    if let Some(fragment) = fragment {
        shown.push('#');
        shown.push_str(fragment);
    }
    shown
}

/// `a=1&b` as `a=***&***`: every value hidden, and a bare word too (it may be a key itself).
fn redact_query(query: &str) -> String {
    query
        .split('&')
        .map(|pair| match pair.split_once('=') {
            Some((name, _)) => format!("{name}={REDACTED}"),
            None if pair.is_empty() => String::new(),
            None => REDACTED.to_owned(),
        })
        .collect::<Vec<_>>()
        .join("&")
}

/// The secrets in the proxy URLs the environment names (HTTPS_PROXY, HTTP_PROXY, ALL_PROXY, in
/// either case), read once: a proxy's error page, or a store behind it, may echo them.
pub fn proxy_secrets() -> &'static [String] {
    static SECRETS: OnceLock<Vec<String>> = OnceLock::new();
    SECRETS.get_or_init(|| {
        ["HTTPS_PROXY", "HTTP_PROXY", "ALL_PROXY"]
            .iter()
            .flat_map(|name| [name.to_string(), name.to_lowercase()])
            .filter_map(|name| std::env::var(name).ok())
            .flat_map(|url| userinfo_secrets(&url))
            .collect()
    })
}

/// The secret of `user:password@` in `url` in each form it may be echoed: as written,
/// percent-decoded, and as the Basic credential sent in Proxy-Authorization. Without a
/// password the user name is the secret (an API key as the user, as some proxies take).
fn userinfo_secrets(url: &str) -> Vec<String> {
    use base64::Engine;
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    let Some((userinfo, _)) = rest.rsplit_once('@') else {
        return Vec::new();
    };
    let decode = |part: &str| {
        percent_encoding::percent_decode_str(part)
            .decode_utf8_lossy()
            .into_owned()
    };
    let (user, password) = userinfo.split_once(':').unwrap_or((userinfo, ""));
    let basic = base64::engine::general_purpose::STANDARD.encode(format!(
        "{}:{}",
        decode(user),
        decode(password)
    ));
    let secret = if password.is_empty() { user } else { password };
    let mut secrets = vec![basic, secret.to_owned(), decode(secret)];
    secrets.retain(|s| !s.is_empty());
    secrets.dedup();
    secrets
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_prints_itself() {
        let token = SecretString::new("ya29.secret");
        assert_eq!(format!("{token:?} {token}"), "(redacted) (redacted)");
        assert_eq!(token.expose(), "ya29.secret");
    }

    #[test]
    fn a_proxy_password_is_cut_in_every_form_it_is_sent() {
        assert_eq!(
            userinfo_secrets("http://loader:pa%24%24@proxy.corp:3128"),
            // base64("loader:pa$$")
            ["bG9hZGVyOnBhJCQ=", "pa%24%24", "pa$$"]
        );
        // base64("k3y-as-user:")
        assert_eq!(
            userinfo_secrets("k3y-as-user@proxy.corp:3128"),
            ["azN5LWFzLXVzZXI6", "k3y-as-user"]
        );
        assert!(userinfo_secrets("http://proxy.corp:3128").is_empty());
    }

    #[test]
    fn urls_show_without_their_credentials() {
        let cases = [
            ("https://fhir.example/r4", "https://fhir.example/r4"),
            (
                "https://user:hunter2@fhir.example:8443/r4",
                "https://***@fhir.example:8443/r4",
            ),
            ("https://apikey@fhir.example/", "https://***@fhir.example/"),
            (
                "https://fhir.example/r4?api_key=hunter2&_format=json",
                "https://fhir.example/r4?api_key=***&_format=***",
            ),
            (
                "https://fhir.example/r4?hunter2",
                "https://fhir.example/r4?***",
            ),
            (
                "https://fhir.example/r4#access_token=hunter2",
                "https://fhir.example/r4#***",
            ),
            // Malformed: no scheme, unencoded `/`, `?`, `#` or `@` in the password, spaces.
            ("user:hunter2@fhir.example/r4", "***@fhir.example/r4"),
            (
                "https://u:hun/ter2@fhir.example/r4",
                "https://***@fhir.example/r4",
            ),
            (
                "https://u:hun?ter2@fhir.example/r4",
                "https://***@fhir.example/r4",
            ),
            (
                "https://u:hun#ter2@fhir.example/r4",
                "https://***@fhir.example/r4",
            ),
            (
                "https://u:hun@ter2@fhir.example:99999",
                "https://***@fhir.example:99999",
            ),
            (
                "ftp://u:hunter 2@fhir example/r4",
                "ftp://***@fhir example/r4",
            ),
            ("", ""),
        ];
        for (raw, shown) in cases {
            assert_eq!(redact_url(raw), shown, "{raw}");
        }
    }
}
