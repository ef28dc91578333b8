//! FHIR search syntax the emulator understands: query strings, `identifier` tokens with FHIR's
//! backslash escaping, conditional references and updates (`Type?identifier=...`) and search
//! parameters.

/// Default page size, as the Healthcare API uses.
pub const DEFAULT_COUNT: usize = 100;

/// Percent-decodes a query component; `+` is a space, as in form encoding.
pub fn percent_decode(raw: &str) -> String {
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                (Some(hi), Some(lo)) => {
                    out.push(hi << 4 | lo);
                    i += 3;
                    continue;
                }
                _ => out.push(b'%'),
            },
            b'+' => out.push(b' '),
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Splits `a=b&c=d` into decoded pairs (a leading `?` is ignored).
pub fn parse_query(raw: &str) -> Vec<(String, String)> {
    raw.trim_start_matches('?')
        .split('&')
        .filter(|part| !part.is_empty())
        .map(|part| {
            let (name, value) = part.split_once('=').unwrap_or((part, ""));
            (percent_decode(name), percent_decode(value))
        })
        .collect()
}

/// One token search value, as `identifier` and `_tag` take: a system and a value (or code).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Token {
    /// `system|value`
    SystemValue(String, String),
    /// `value`: any system.
    Value(String),
    /// `|value`: no system.
    NoSystem(String),
    /// `system|`: any value in that system.
    System(String),
}

impl Token {
    pub fn matches(&self, system: Option<&str>, value: &str) -> bool {
        match self {
            Self::SystemValue(s, v) => system == Some(s.as_str()) && value == v,
            Self::Value(v) => value == v,
            Self::NoSystem(v) => system.is_none() && value == v,
            Self::System(s) => system == Some(s.as_str()),
        }
    }

    /// The value to look up in an index by value, when the token has one.
    pub fn value(&self) -> Option<&str> {
        match self {
            Self::SystemValue(_, v) | Self::Value(v) | Self::NoSystem(v) => Some(v),
            Self::System(_) => None,
        }
    }
}

/// Parses a decoded token parameter value: comma-separated tokens (any may match).
pub fn parse_tokens(value: &str) -> Result<Vec<Token>, String> {
    split_escaped(value, ',')
        .into_iter()
        .map(|token| {
            let parts = split_escaped(token, '|');
            match parts.as_slice() {
                [value] if !value.is_empty() => Ok(Token::Value(unescape(value))),
                ["", value] if !value.is_empty() => Ok(Token::NoSystem(unescape(value))),
                [system, ""] if !system.is_empty() => Ok(Token::System(unescape(system))),
                [system, value] if !system.is_empty() => {
                    Ok(Token::SystemValue(unescape(system), unescape(value)))
                }
                _ => Err(format!(
                    "`{token}` is not an identifier token (system|value, |value, system| or value)"
                )),
            }
        })
        .collect()
}

/// Parses the query of a conditional create or reference: only `identifier=...` is allowed, as
/// on the Healthcare API.
pub fn parse_condition(query: &str) -> Result<Vec<Token>, String> {
    let params = parse_query(query);
    match params.as_slice() {
        [(name, value)] if name == "identifier" => parse_tokens(value),
        _ => Err(format!(
            "`{query}` is not a supported condition: only identifier=system|value is"
        )),
    }
}

/// Splits on `sep` where it is not escaped by a backslash; escapes stay in the pieces.
fn split_escaped(s: &str, sep: char) -> Vec<&str> {
    let mut pieces = Vec::new();
    let mut start = 0;
    let mut escaped = false;
    for (i, c) in s.char_indices() {
        if escaped {
            escaped = false;
        } else if c == '\\' {
            escaped = true;
        } else if c == sep {
            pieces.push(&s[start..i]);
            start = i + c.len_utf8();
        }
    }
    pieces.push(&s[start..]);
    pieces
}

/// Removes FHIR search escapes: `\|` `\,` `\$` `\\`.
fn unescape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            if let Some(next) = chars.next() {
                out.push(next);
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// What a search asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SearchQuery {
    /// `_id`: any of these ids.
    pub ids: Option<Vec<String>>,
    /// `identifier`: each parameter must match (AND); tokens within one parameter are ORed.
    pub identifiers: Vec<Vec<Token>>,
    /// `_tag` (a `meta.tag` coding), combined like `identifier`.
    pub tags: Vec<Vec<Token>>,
    pub count: usize,
    pub offset: usize,
    /// `_summary=count`: the total only.
    pub summary_count: bool,
}

impl Default for SearchQuery {
    fn default() -> Self {
        Self {
            ids: None,
            identifiers: Vec::new(),
            tags: Vec::new(),
            count: DEFAULT_COUNT,
            offset: 0,
            summary_count: false,
        }
    }
}

impl SearchQuery {
    pub fn parse(raw: &str) -> Result<Self, String> {
        let mut query = Self::default();
        for (name, value) in parse_query(raw) {
            match name.as_str() {
                "_count" => query.count = number(&name, &value)?,
                "_offset" => query.offset = number(&name, &value)?,
                "_summary" => query.summary_count = value == "count",
                "_id" => {
                    let ids = value.split(',').map(str::to_owned);
                    query.ids.get_or_insert_with(Vec::new).extend(ids);
                }
                "identifier" => query.identifiers.push(parse_tokens(&value)?),
                "_tag" => query.tags.push(parse_tokens(&value)?),
                // Formatting hints that do not change which resources match.
                "_format" | "_pretty" | "_total" => {}
                _ => {
                    return Err(format!(
                        "search parameter `{name}` is not supported by the emulator \
                         (supported: _id, identifier, _tag, _count, _offset, _summary=count)"
                    ));
                }
            }
        }
        Ok(query)
    }

    /// The query string of the same search at another offset (for `next`/`self` links).
    pub fn to_query_string(&self, offset: usize) -> String {
        let mut parts = Vec::new();
        if let Some(ids) = &self.ids {
            parts.push(format!("_id={}", encode(&ids.join(","))));
        }
        for (name, values) in [("identifier", &self.identifiers), ("_tag", &self.tags)] {
            for tokens in values {
                let joined: Vec<String> = tokens.iter().map(token_text).collect();
                parts.push(format!("{name}={}", encode(&joined.join(","))));
            }
        }
        parts.push(format!("_count={}", self.count));
        if offset > 0 {
            parts.push(format!("_offset={offset}"));
        }
        parts.join("&")
    }
}

fn number(name: &str, value: &str) -> Result<usize, String> {
    value
        .parse()
        .map_err(|_| format!("{name}={value} is not a non-negative integer"))
}

fn token_text(token: &Token) -> String {
    let esc = |s: &str| {
        s.replace('\\', "\\\\")
            .replace('|', "\\|")
            .replace(',', "\\,")
            .replace('$', "\\$")
    };
    match token {
        Token::SystemValue(s, v) => format!("{}|{}", esc(s), esc(v)),
        Token::Value(v) => esc(v),
        Token::NoSystem(v) => format!("|{}", esc(v)),
        Token::System(s) => format!("{}|", esc(s)),
    }
}

/// Percent-encodes everything but unreserved characters and the FHIR separators `|` `,`.
fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~|,:/".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes() {
        assert_eq!(percent_decode("a%7Cb+c%2B"), "a|b c+");
        assert_eq!(percent_decode("100%"), "100%");
        assert_eq!(percent_decode("%zz"), "%zz");
        assert_eq!(percent_decode("%C3%A9"), "é");
    }

    #[test]
    fn identifier_tokens_with_escapes() {
        assert_eq!(
            parse_tokens(r"https://x.org/a\|b|1\,2").unwrap(),
            [Token::SystemValue("https://x.org/a|b".into(), "1,2".into())]
        );
        assert_eq!(
            parse_tokens(r"s|1,|2,s|,v\\").unwrap(),
            [
                Token::SystemValue("s".into(), "1".into()),
                Token::NoSystem("2".into()),
                Token::System("s".into()),
                Token::Value(r"v\".into()),
            ]
        );
        assert!(parse_tokens("a|b|c").is_err());
        assert!(parse_tokens("").is_err());
    }

    #[test]
    fn conditions_accept_only_identifier() {
        assert_eq!(
            parse_condition("identifier=https%3A%2F%2Fs%7Cv%26w").unwrap(),
            [Token::SystemValue("https://s".into(), "v&w".into())]
        );
        assert!(parse_condition("?identifier=s|v").is_ok());
        assert!(parse_condition("name=x").is_err());
        assert!(parse_condition("identifier=s|v&name=x").is_err());
    }

    #[test]
    fn search_parameters() {
        let q = SearchQuery::parse(
            "identifier=s|v&_tag=https%3A%2F%2Ft|load-1&_count=5&_offset=10&_summary=count",
        )
        .unwrap();
        assert_eq!(q.count, 5);
        assert_eq!(q.offset, 10);
        assert!(q.summary_count);
        assert_eq!(q.identifiers.len(), 1);
        assert_eq!(
            q.tags,
            [vec![Token::SystemValue(
                "https://t".into(),
                "load-1".into()
            )]]
        );
        assert!(SearchQuery::parse("name=x").is_err());
        assert!(SearchQuery::parse("_count=-1").is_err());
        let round = SearchQuery::parse(&q.to_query_string(20)).unwrap();
        assert_eq!(round.identifiers, q.identifiers);
        assert_eq!(round.tags, q.tags);
        assert_eq!(round.offset, 20);
    }
}
