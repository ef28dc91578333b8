//! Secrets kept out of what is shown: a string that never shows itself in logs, errors or
//! `Debug` output, and URLs shown without the credentials they may carry.

use std::fmt;
use std::str::FromStr;

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
