//! A resource's compact JSON text, written once, with where the parts the loader reads or
//! rewrites lie in it: its type, its id, its identifiers and every reference. Sending a
//! resource with its references pointing at stored ids is then a copy with a few splices,
//! not a walk over a tree of maps, and a resource waiting to be sent costs its text, not a
//! tree many times that size.

use std::borrow::Cow;
use std::fmt::Write as _;

use serde_json::Value;

/// A byte range of the text: the contents of a JSON string (inside its quotes, still
/// escaped), or a whole object member.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span {
    start: u32,
    end: u32,
}

impl Span {
    fn range(self) -> std::ops::Range<usize> {
        self.start as usize..self.end as usize
    }
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct Text {
    json: Box<str>,
    resource_type: Option<Span>,
    /// The top-level `"id":...` member, and its string when it is one.
    id_member: Option<Span>,
    id: Option<Span>,
    /// Where an `id` goes when there is none: just after `resourceType`, as FHIR orders it.
    id_slot: u32,
    /// `(system, value)` of each top-level identifier that has both as strings, in order.
    identifiers: Vec<(Span, Span)>,
    references: Vec<Span>,
}

impl Text {
    pub fn of_value(value: &Value) -> Self {
        let mut writer = TextWriter::default();
        writer.value(value);
        writer.finish()
    }

    pub fn json(&self) -> &str {
        &self.json
    }

    /// The text of a string at `span`, unescaped.
    fn string(&self, span: Span) -> Cow<'_, str> {
        let raw = &self.json[span.range()];
        if !raw.contains('\\') {
            return Cow::Borrowed(raw);
        }
        let quoted = &self.json[span.start as usize - 1..span.end as usize + 1];
        Cow::Owned(serde_json::from_str(quoted).expect("a string this writer escaped"))
    }

    /// The `resourceType` as written: resource type names need no escapes.
    pub fn resource_type(&self) -> Option<&str> {
        self.resource_type.map(|span| &self.json[span.range()])
    }

    pub fn id(&self) -> Option<Cow<'_, str>> {
        self.id.map(|span| self.string(span))
    }

    pub fn identifiers(&self) -> impl Iterator<Item = (Cow<'_, str>, Cow<'_, str>)> {
        self.identifiers
            .iter()
            .map(|&(system, value)| (self.string(system), self.string(value)))
    }

    /// Every `reference` string (Reference.reference, at any depth), in order.
    pub fn references(&self) -> impl Iterator<Item = Cow<'_, str>> {
        self.references.iter().map(|&span| self.string(span))
    }

    /// Writes the text with each reference `resolve` knows replaced, and the `id` member
    /// kept, removed or set.
    pub fn write_rewritten(
        &self,
        out: &mut Vec<u8>,
        resolve: &dyn Fn(&str) -> Option<String>,
        id: super::IdField,
    ) {
        let text = self.json.as_bytes();
        let mut copied = 0;
        let mut id_edit = self.id_edit(id);
        for &span in &self.references {
            if let Some((at, to, with)) = id_edit.take_if(|(at, ..)| *at < span.start as usize) {
                out.extend_from_slice(&text[copied..at]);
                out.extend_from_slice(with.as_bytes());
                copied = to;
            }
            // A reference inside an `id` that is not a string went with the id.
            if (span.start as usize) < copied {
                continue;
            }
            let Some(resolved) = resolve(&self.string(span)) else {
                continue;
            };
            out.extend_from_slice(&text[copied..span.start as usize]);
            write_string_contents(out, &resolved);
            copied = span.end as usize;
        }
        if let Some((at, to, with)) = id_edit {
            out.extend_from_slice(&text[copied..at]);
            out.extend_from_slice(with.as_bytes());
            copied = to;
        }
        out.extend_from_slice(&text[copied..]);
    }

    /// What `id` asks of the text: the bytes from `.0` to `.1` become `.2`.
    fn id_edit(&self, id: super::IdField) -> Option<(usize, usize, String)> {
        let text = self.json.as_bytes();
        let member = |id: &str| {
            let mut member = Vec::with_capacity(id.len() + 8);
            member.extend_from_slice(b"\"id\":\"");
            write_string_contents(&mut member, id);
            member.push(b'"');
            String::from_utf8(member).expect("JSON text is UTF-8")
        };
        match (id, self.id_member) {
            (super::IdField::Keep, _) | (super::IdField::Remove, None) => None,
            // The member goes with the comma that separates it from its neighbour.
            (super::IdField::Remove, Some(span)) => {
                let (start, end) = (span.start as usize, span.end as usize);
                if text[start - 1] == b',' {
                    Some((start - 1, end, String::new()))
                } else if text.get(end) == Some(&b',') {
                    Some((start, end + 1, String::new()))
                } else {
                    Some((start, end, String::new()))
                }
            }
            (super::IdField::Set(id), Some(span)) => {
                Some((span.start as usize, span.end as usize, member(id)))
            }
            // Not an object: nowhere to put an id.
            (super::IdField::Set(_), None) if self.id_slot == 0 => None,
            (super::IdField::Set(id), None) => {
                let at = self.id_slot as usize;
                let separated = match text[at - 1] {
                    b'{' if text[at] == b'}' => member(id),
                    b'{' => member(id) + ",",
                    _ => format!(",{}", member(id)),
                };
                Some((at, at, separated))
            }
        }
    }
}

/// Writes `s` as the inside of a JSON string, escaped exactly as serde_json escapes it.
fn write_string_contents(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(escaped(s).as_deref().unwrap_or(s).as_bytes());
}

/// Whether a string is looked at for what needs escaping before it is written.
#[derive(Clone, Copy)]
enum Escape {
    AsNeeded,
    /// Known not to need any: written as it is.
    Never,
}

impl Escape {
    fn push(self, out: &mut String, s: &str) {
        let escaped = match self {
            Escape::AsNeeded => escaped(s),
            Escape::Never => None,
        };
        out.push_str(escaped.as_deref().unwrap_or(s));
    }
}

/// `s` escaped for the inside of a JSON string, or `None` when it needs no escapes (nearly
/// always).
fn escaped(s: &str) -> Option<String> {
    // Every byte looked at, without stopping at the first that needs an escape: that loop
    // compiles to a few vector compares, where stopping early costs a branch a byte, and every
    // key and string of every resource goes through here.
    let needs_escape = s.bytes().fold(false, |found, b| {
        found | (b < 0x20) | (b == b'"') | (b == b'\\')
    });
    if !needs_escape {
        return None;
    }
    let quoted = serde_json::to_string(s).expect("strings serialize");
    Some(quoted[1..quoted.len() - 1].to_owned())
}

/// What a container being written is, as far as the spans care.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Container {
    /// The resource itself.
    Resource,
    /// The resource's `identifier` list.
    Identifiers,
    /// One entry of it: its `system` and `value` strings so far.
    Identifier(Option<Span>, Option<Span>),
    Other,
}

/// What the member whose key was just written is.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Member {
    ResourceType,
    Id,
    Identifiers,
    System,
    Value,
    Reference,
    Other,
}

/// Writes compact JSON exactly as serde_json does, noting the spans as it goes.
pub struct TextWriter {
    out: String,
    /// The open containers, and whether each has a member or item yet.
    open: Vec<(Container, bool)>,
    member: Option<Member>,
    text: Text,
    /// Start of the top-level `id` member while it is being written.
    id_start: Option<u32>,
}

impl Default for TextWriter {
    fn default() -> Self {
        Self {
            // Most resources fit: growing from nothing would copy the text about ten times.
            out: String::with_capacity(2048),
            open: Vec::with_capacity(8),
            member: None,
            text: Text::default(),
            id_start: None,
        }
    }
}

impl TextWriter {
    fn position(&self) -> u32 {
        u32::try_from(self.out.len()).expect("a resource under 4 GiB")
    }

    /// Before any value: the comma between array items.
    fn item(&mut self) {
        if self.member.is_none() {
            if let Some((_, has_items)) = self.open.last_mut() {
                if *has_items {
                    self.out.push(',');
                }
                *has_items = true;
            }
        }
    }

    fn close_id_member(&mut self) {
        if let Some(start) = self.id_start.take() {
            self.text.id_member = Some(Span {
                start,
                end: self.position(),
            });
        }
    }

    pub fn begin_object(&mut self) {
        self.item();
        let container = match (self.open.last(), self.member.take()) {
            (None, _) => Container::Resource,
            (Some((Container::Identifiers, _)), None) => Container::Identifier(None, None),
            _ => Container::Other,
        };
        self.open.push((container, false));
        self.out.push('{');
    }

    pub fn key(&mut self, key: &str) {
        self.member_key(key, Escape::AsNeeded);
    }

    /// A key that needs no escapes, such as every FHIR element name: written without looking.
    pub fn plain_key(&mut self, key: &'static str) {
        debug_assert!(escaped(key).is_none(), "{key:?} needs escapes");
        self.member_key(key, Escape::Never);
    }

    fn member_key(&mut self, key: &str, escape: Escape) {
        let Some((container, has_members)) = self.open.last_mut() else {
            unreachable!("a key is written inside an object")
        };
        let container = *container;
        let separated = std::mem::replace(has_members, true);
        if container == Container::Resource {
            self.close_id_member();
        }
        if separated {
            self.out.push(',');
        }
        let member = match (container, key) {
            (Container::Resource, "resourceType") => Member::ResourceType,
            (Container::Resource, "id") => {
                // The comma before it, if any, is already written: the member starts here.
                self.id_start = Some(self.position());
                Member::Id
            }
            (Container::Resource, "identifier") => Member::Identifiers,
            (Container::Identifier(..), "system") => Member::System,
            (Container::Identifier(..), "value") => Member::Value,
            (_, "reference") => Member::Reference,
            _ => Member::Other,
        };
        self.out.push('"');
        escape.push(&mut self.out, key);
        self.out.push_str("\":");
        self.member = Some(member);
    }

    pub fn end_object(&mut self) {
        let Some((container, _)) = self.open.pop() else {
            unreachable!("an object is ended after it is begun")
        };
        match container {
            Container::Resource => {
                self.close_id_member();
                if self.text.resource_type.is_none() {
                    self.text.id_slot = self.position();
                }
            }
            Container::Identifier(Some(system), Some(value)) => {
                self.text.identifiers.push((system, value));
            }
            _ => {}
        }
        self.out.push('}');
    }

    pub fn begin_array(&mut self) {
        self.item();
        let container = match (self.open.last(), self.member.take()) {
            (Some((Container::Resource, _)), Some(Member::Identifiers)) => Container::Identifiers,
            _ => Container::Other,
        };
        self.open.push((container, false));
        self.out.push('[');
    }

    pub fn end_array(&mut self) {
        self.open.pop();
        self.out.push(']');
    }

    pub fn string(&mut self, s: &str) {
        self.string_value(s, Escape::AsNeeded);
    }

    /// A string that needs no escapes, such as the codes and displays the generator holds and
    /// the ids it makes: written without looking.
    pub fn plain_string(&mut self, s: &str) {
        debug_assert!(escaped(s).is_none(), "{s:?} needs escapes");
        self.string_value(s, Escape::Never);
    }

    fn string_value(&mut self, s: &str, escape: Escape) {
        self.item();
        self.out.push('"');
        let start = self.position();
        escape.push(&mut self.out, s);
        let span = Span {
            start,
            end: self.position(),
        };
        self.out.push('"');
        match self.member.take() {
            Some(Member::ResourceType) => {
                self.text.resource_type = Some(span);
                self.text.id_slot = self.position();
            }
            Some(Member::Id) => self.text.id = Some(span),
            Some(Member::Reference) => self.text.references.push(span),
            Some(Member::System) => {
                if let Some((Container::Identifier(system, _), _)) = self.open.last_mut() {
                    *system = Some(span);
                }
            }
            Some(Member::Value) => {
                if let Some((Container::Identifier(_, value), _)) = self.open.last_mut() {
                    *value = Some(span);
                }
            }
            _ => {}
        }
    }

    /// A number, `true`, `false` or `null`, as its JSON text.
    pub fn scalar(&mut self, json: &str) {
        self.item();
        self.member = None;
        self.out.push_str(json);
    }

    /// A value that `write` puts straight into the text as compact JSON, without looking: for
    /// values the generator knows hold no `reference` and no identifier (codings, dates,
    /// amounts, whole elements of them), which then cost a copy, not a walk.
    pub fn raw_value(&mut self, write: impl FnOnce(&mut String)) {
        self.item();
        self.member = None;
        write(&mut self.out);
    }

    /// Writes `s` as a JSON string, quoted and escaped as serde_json does: for [`Self::raw_value`].
    pub fn push_string(out: &mut String, s: &str) {
        out.push('"');
        Escape::AsNeeded.push(out, s);
        out.push('"');
    }

    /// A number, written as serde_json writes it.
    pub fn number(&mut self, n: &serde_json::Number) {
        self.item();
        self.member = None;
        write!(self.out, "{n}").expect("a String takes any write");
    }

    pub fn value(&mut self, value: &Value) {
        match value {
            Value::Null => self.scalar("null"),
            Value::Bool(b) => self.scalar(if *b { "true" } else { "false" }),
            Value::Number(n) => self.number(n),
            Value::String(s) => self.string(s),
            Value::Array(items) => {
                self.begin_array();
                for item in items {
                    self.value(item);
                }
                self.end_array();
            }
            Value::Object(map) => {
                self.begin_object();
                for (key, item) in map {
                    self.key(key);
                    self.value(item);
                }
                self.end_object();
            }
        }
    }

    pub fn finish(mut self) -> Text {
        self.text.json = self.out.into_boxed_str();
        self.text
    }
}
