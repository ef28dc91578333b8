//! Secrets kept out of what is shown: a string that never shows itself in logs, errors or
//! `Debug` output, and URLs shown without the credentials they may carry.

use std::borrow::Cow;
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

/// What stands in for a secret cut out of a text.
pub const CUT: &str = "(redacted)";

/// Secrets shorter than this are not cut: too short to be real, and cutting them would mangle
/// the message.
const SHORTEST_SECRET: usize = 4;

/// `text` with each of `secrets` cut out in every form a server may echo it in: as it is,
/// JSON-escaped (`\/`, `\u003d` in either case, as PHP and Gson write them), percent-encoded
/// (`%2F` or `%2f`, `+` for a space), or as an HTML character reference (`&#47;`, `&#x2F;`,
/// `&amp;`) — each character in any of these forms, mixed as a server mixes them. A text that
/// fhirgen decodes (a JSON message) is cut before and after: whatever the decoding turns back
/// into the secret was one of these forms.
pub fn redact<'a, S: AsRef<str>>(
    text: &'a str,
    secrets: impl IntoIterator<Item = S>,
) -> Cow<'a, str> {
    let secrets: Vec<Vec<char>> = secrets
        .into_iter()
        .filter(|s| s.as_ref().len() >= SHORTEST_SECRET)
        .map(|s| s.as_ref().chars().collect())
        .collect();
    if secrets.is_empty() {
        return Cow::Borrowed(text);
    }
    let bytes = text.as_bytes();
    let mut out = String::new();
    let mut copied = 0;
    let mut at = 0;
    while at < bytes.len() {
        let end = secrets
            .iter()
            .filter_map(|secret| match_end(bytes, at, secret))
            .max();
        match end {
            Some(end) => {
                out.push_str(&text[copied..at]);
                out.push_str(CUT);
                copied = end;
                at = end;
            }
            None => at += utf8_len(bytes[at]),
        }
    }
    if copied == 0 && out.is_empty() {
        return Cow::Borrowed(text);
    }
    out.push_str(&text[copied..]);
    Cow::Owned(out)
}

/// Where `secret` ends in `text` when it starts at `at`, each of its characters in any form.
fn match_end(text: &[u8], mut at: usize, secret: &[char]) -> Option<usize> {
    for (i, &c) in secret.iter().enumerate() {
        let forms = forms_at(&text[at..], c);
        match forms.as_slice() {
            [] => return None,
            [len] => at += len,
            // `\`, `%` or `&` as themselves or as the start of an escape: try each.
            lens => {
                return lens
                    .iter()
                    .find_map(|len| match_end(text, at + len, &secret[i + 1..]));
            }
        }
    }
    Some(at)
}

/// The lengths of the forms of `c` that `text` starts with.
fn forms_at(text: &[u8], c: char) -> Forms {
    let mut forms = Forms::default();
    let mut raw = [0u8; 4];
    let raw = c.encode_utf8(&mut raw).as_bytes();
    if text.starts_with(raw) {
        forms.push(raw.len());
    }
    let code = u32::from(c);
    match text.first() {
        Some(b'\\') => {
            // `\/`, `\\`, `\"`: JSON's escapes of punctuation.
            if c.is_ascii_punctuation() && text.get(1) == Some(&(c as u8)) {
                forms.push(2);
            }
            if text.get(1) == Some(&b'u') && hex_value(text.get(2..6)) == Some(code) {
                forms.push(6);
            }
        }
        Some(b'%') => {
            let percent = raw.len() * 3;
            let all = text.len() >= percent
                && raw.iter().enumerate().all(|(i, &byte)| {
                    text[i * 3] == b'%'
                        && hex_value(text.get(i * 3 + 1..i * 3 + 3)) == Some(u32::from(byte))
                });
            if all {
                forms.push(percent);
            }
        }
        Some(b'+') if c == ' ' => forms.push(1),
        Some(b'&') => {
            if let Some(len) = html_reference(text, code) {
                forms.push(len);
            }
        }
        _ => {}
    }
    forms
}

/// The length of an HTML character reference to `code` at the start of `text`.
fn html_reference(text: &[u8], code: u32) -> Option<usize> {
    let end = text.iter().take(12).position(|&b| b == b';')?;
    let name = std::str::from_utf8(&text[1..end]).ok()?;
    let value = match name {
        "amp" => u32::from('&'),
        "lt" => u32::from('<'),
        "gt" => u32::from('>'),
        "quot" => u32::from('"'),
        "apos" => u32::from('\''),
        _ => {
            let number = name.strip_prefix('#')?;
            match number.strip_prefix(['x', 'X']) {
                Some(hex) => u32::from_str_radix(hex, 16).ok()?,
                None => number.parse().ok()?,
            }
        }
    };
    (value == code).then_some(end + 1)
}

fn hex_value(digits: Option<&[u8]>) -> Option<u32> {
    let digits = std::str::from_utf8(digits?).ok()?;
    digits
        .bytes()
        .all(|b| b.is_ascii_hexdigit())
        .then(|| u32::from_str_radix(digits, 16).ok())
        .flatten()
}

fn utf8_len(first: u8) -> usize {
    match first {
        0xF0.. => 4,
        0xE0.. => 3,
        0xC0.. => 2,
        _ => 1,
    }
}

/// At most three forms of a character can start at one place.
#[derive(Default)]
struct Forms {
    lens: [usize; 3],
    count: usize,
}

impl Forms {
    fn push(&mut self, len: usize) {
        if self.count < self.lens.len() {
            self.lens[self.count] = len;
            self.count += 1;
        }
    }

    fn as_slice(&self) -> &[usize] {
        &self.lens[..self.count]
    }
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
    let mut secrets = basic_forms(format!("{}:{}", decode(user), decode(password)).as_bytes());
    let secret = if password.is_empty() { user } else { password };
    secrets.extend([secret.to_owned(), decode(secret)]);
    secrets.retain(|s| !s.is_empty());
    secrets.dedup();
    secrets
}

/// The Basic credential for `user:password` as a server may echo it: base64 as sent, and in
/// the standard and the URL-safe alphabet without the padding.
pub fn basic_forms(pair: &[u8]) -> Vec<String> {
    use base64::Engine;
    use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE_NO_PAD};
    let mut forms = vec![
        STANDARD.encode(pair),
        STANDARD_NO_PAD.encode(pair),
        URL_SAFE_NO_PAD.encode(pair),
    ];
    forms.dedup();
    forms
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
            // base64("loader:pa$$"), with and without its padding
            ["bG9hZGVyOnBhJCQ=", "bG9hZGVyOnBhJCQ", "pa%24%24", "pa$$"]
        );
        // base64("k3y-as-user:")
        assert_eq!(
            userinfo_secrets("k3y-as-user@proxy.corp:3128"),
            ["azN5LWFzLXVzZXI6", "k3y-as-user"]
        );
        // base64("u:>>>?") holds `+` and `/`, which the URL-safe alphabet writes `-` and `_`.
        assert_eq!(basic_forms(b"u:>>>?"), ["dTo+Pj4/", "dTo-Pj4_"]);
        assert_eq!(basic_forms(b"u:p"), ["dTpw"]);
        assert!(userinfo_secrets("http://proxy.corp:3128").is_empty());
    }

    /// Every form a server may echo `secret` in, by name.
    fn echoed_forms(secret: &str) -> Vec<(&'static str, String)> {
        let each = |form: &dyn Fn(char) -> String| secret.chars().map(form).collect::<String>();
        let unless_alphanumeric = |form: &dyn Fn(u32) -> String| {
            each(&|c: char| match c.is_ascii_alphanumeric() {
                true => c.to_string(),
                false => form(u32::from(c)),
            })
        };
        let percent = |upper: bool| {
            each(&|c: char| {
                let mut bytes = [0u8; 4];
                match c.is_ascii_alphanumeric() {
                    true => c.to_string(),
                    false => c
                        .encode_utf8(&mut bytes)
                        .bytes()
                        .map(|b| match upper {
                            true => format!("%{b:02X}"),
                            false => format!("%{b:02x}"),
                        })
                        .collect(),
                }
            })
        };
        let gson = each(&|c: char| match "=+&<>'".contains(c) {
            true => format!("\\u{:04x}", u32::from(c)),
            false => c.to_string(),
        });
        let mixed: String = secret
            .chars()
            .enumerate()
            .map(|(i, c)| match i % 3 {
                0 => format!("\\u{:04X}", u32::from(c)),
                1 if c.is_ascii() => format!("%{:02X}", u32::from(c)),
                _ => c.to_string(),
            })
            .collect();
        vec![
            ("as sent", secret.to_owned()),
            (
                "JSON with PHP's escaped slashes",
                secret.replace('/', "\\/"),
            ),
            ("JSON with Gson's escaped = + &", gson),
            (
                "JSON, every character escaped",
                each(&|c| format!("\\u{:04X}", u32::from(c))),
            ),
            ("percent-encoded", percent(true)),
            ("percent-encoded in lower case", percent(false)),
            ("form-encoded", percent(true).replace("%20", "+")),
            (
                "HTML decimal references",
                unless_alphanumeric(&|code| format!("&#{code};")),
            ),
            (
                "HTML hex references",
                unless_alphanumeric(&|code| format!("&#x{code:X};")),
            ),
            ("mixed", mixed),
        ]
    }

    /// `text` decoded every way fhirgen or a reader might: as a JSON string, percent- and
    /// form-decoded, HTML references resolved.
    fn decodings(text: &str) -> Vec<String> {
        let json = serde_json::from_str::<String>(&format!("\"{text}\"")).unwrap_or_default();
        let percent = |text: &str| {
            percent_encoding::percent_decode_str(&text.replace('+', " "))
                .decode_utf8_lossy()
                .into_owned()
        };
        let mut html = text.to_owned();
        while let Some(start) = html.find("&#") {
            let Some(end) = html[start..].find(';').map(|end| start + end) else {
                break;
            };
            let number = &html[start + 2..end];
            let code = match number.strip_prefix(['x', 'X']) {
                Some(hex) => u32::from_str_radix(hex, 16),
                None => number.parse(),
            };
            let decoded = code.ok().and_then(char::from_u32).unwrap_or('?');
            html.replace_range(start..=end, &decoded.to_string());
        }
        vec![text.to_owned(), percent(text), percent(&json), json, html]
    }

    #[test]
    fn a_secret_is_cut_in_every_form_a_server_echoes_it_in() {
        let secrets = [
            ("bearer token", "ya29.a0Af/Tk+zQ=9_x-y"),
            ("Google refresh token", "1//0gLx-refresh+token="),
            ("Basic password", "p@ss w/rd+\u{e9}=&<"),
            ("Basic credential", "bG9hZGVyOnA6c3M+/w"),
        ];
        for (what, secret) in secrets {
            for (form, echoed) in echoed_forms(secret) {
                let body = format!("denied: {echoed} is not valid; try again");
                let cut = redact(&body, [secret]);
                assert_eq!(
                    cut,
                    format!("denied: {CUT} is not valid; try again"),
                    "{what} {form}: {echoed}"
                );
                for decoded in decodings(&cut) {
                    assert!(!decoded.contains(secret), "{what} {form}: {decoded}");
                }
            }
        }
    }

    #[test]
    fn only_secrets_are_cut() {
        let text = "Patient/1 has no gender; token ya29.a0Af/Tk+zQ=8 expired";
        assert!(matches!(
            redact(text, ["ya29.a0Af/Tk+zQ=9"]),
            Cow::Borrowed(_)
        ));
        // Too short to be a real secret: cutting it would mangle the message.
        assert!(matches!(redact(text, ["has"]), Cow::Borrowed(_)));
        assert_eq!(redact("a%2Fb\\/c a/b/c", ["a/b/c"]), format!("{CUT} {CUT}"));
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
