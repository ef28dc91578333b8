//! Bytes to JSON values, streaming: gzip is recognised by its magic bytes, and the layout
//! (one value per line, or documents spanning many lines) by the content, never by the name.

use std::fs::File;
use std::io::{self, BufRead, BufReader, Cursor, Read};
use std::path::Path;

use flate2::bufread::MultiGzDecoder;
use serde_json::Value;

/// Reads go through buffers this large: parsing runs at 100k+ lines a second.
const BUFFER_BYTES: usize = 1 << 20;

const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];
const UTF8_BOM: [u8; 3] = [0xef, 0xbb, 0xbf];

pub(super) type Bytes = Box<dyn BufRead + Send>;

pub(super) fn open_file(path: &Path) -> io::Result<Bytes> {
    decompressed(BufReader::with_capacity(BUFFER_BYTES, File::open(path)?))
}

pub(super) fn stdin() -> io::Result<Bytes> {
    decompressed(BufReader::with_capacity(BUFFER_BYTES, io::stdin()))
}

/// `reader` itself, or its gunzipped content when it starts like gzip (whatever the file name).
pub(super) fn decompressed<R: BufRead + Send + 'static>(mut reader: R) -> io::Result<Bytes> {
    if reader.fill_buf()?.starts_with(&GZIP_MAGIC) {
        let gunzip = MultiGzDecoder::new(reader);
        Ok(Box::new(BufReader::with_capacity(BUFFER_BYTES, gunzip)))
    } else {
        Ok(Box::new(reader))
    }
}

/// One step of reading a file.
pub(super) enum Step {
    /// A JSON value that starts on `line` (1-based).
    Value {
        line: u64,
        value: Value,
    },
    /// Text starting on `line` that is not JSON.
    NotJson {
        line: u64,
        message: String,
        text: String,
    },
    /// Reading failed on `line` (a truncated gzip, a disk error); nothing more comes.
    Broken {
        line: u64,
        message: String,
        text: String,
    },
    End,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Layout {
    /// One JSON value per line (NDJSON), or a single value on one line.
    Lines,
    /// JSON values that may span many lines, one after the other (pretty-printed files).
    Documents,
    /// Neither: reported once, at its first line, and skipped.
    NotJson,
}

/// Yields the JSON values of one stream with the line each starts on.
pub(super) struct ValueReader {
    /// The layout is sniffed from the first lines, which are then read again from the start.
    state: Option<(Layout, Bytes)>,
    unsniffed: Option<Bytes>,
    /// Lines consumed so far.
    line: u64,
    buffer: Vec<u8>,
}

impl ValueReader {
    pub(super) fn new(bytes: Bytes) -> Self {
        Self {
            state: None,
            unsniffed: Some(bytes),
            line: 0,
            buffer: Vec::new(),
        }
    }

    pub(super) fn next_step(&mut self) -> Step {
        if let Some(bytes) = self.unsniffed.take() {
            match sniff(bytes) {
                Ok(Some(state)) => self.state = Some(state),
                Ok(None) => return Step::End,
                Err(e) => return self.broken(e, 1),
            }
        }
        let Some((layout, _)) = &self.state else {
            return Step::End;
        };
        let step = match layout {
            Layout::Lines => self.next_line(),
            Layout::Documents => self.next_document(),
            Layout::NotJson => match self.next_line() {
                Step::NotJson {
                    line,
                    message,
                    text,
                } => {
                    self.state = None;
                    return Step::NotJson {
                        line,
                        message: format!("{message}; the rest of the file is skipped"),
                        text,
                    };
                }
                step => step,
            },
        };
        if matches!(step, Step::Broken { .. } | Step::End) {
            self.state = None;
        }
        step
    }

    fn bytes(&mut self) -> &mut Bytes {
        &mut self.state.as_mut().expect("reading after the end").1
    }

    fn next_line(&mut self) -> Step {
        loop {
            let mut buffer = std::mem::take(&mut self.buffer);
            buffer.clear();
            let read = self.bytes().read_until(b'\n', &mut buffer);
            self.buffer = buffer;
            match read {
                Ok(0) => return Step::End,
                Ok(_) => self.line += 1,
                Err(e) => return self.broken(e, self.line + 1),
            }
            let text = self.buffer.trim_ascii();
            if text.is_empty() {
                continue;
            }
            return match serde_json::from_slice(text) {
                Ok(value) => Step::Value {
                    line: self.line,
                    value,
                },
                Err(e) => Step::NotJson {
                    line: self.line,
                    message: format!("not JSON: {} at column {}", error_text(&e), e.column()),
                    text: String::from_utf8_lossy(text).into_owned(),
                },
            };
        }
    }

    /// The next value, from its first byte to the bracket that closes it, however many lines
    /// that takes; text outside brackets is taken up to the end of its line.
    fn next_document(&mut self) -> Step {
        if let Err(e) = self.skip_whitespace() {
            return self.broken(e, self.line + 1);
        }
        let start = self.line + 1;
        let mut buffer = std::mem::take(&mut self.buffer);
        buffer.clear();
        let read = self.read_value(&mut buffer);
        self.buffer = buffer;
        match read {
            Ok(()) if self.buffer.is_empty() => return Step::End,
            Ok(()) => {}
            Err(e) => return self.broken(e, start),
        }
        let text = self.buffer.trim_ascii_end();
        match serde_json::from_slice(text) {
            Ok(value) => Step::Value { line: start, value },
            Err(e) => Step::NotJson {
                line: start,
                message: format!(
                    "not JSON: {} at line {} column {}",
                    error_text(&e),
                    start + e.line().max(1) as u64 - 1,
                    e.column()
                ),
                text: String::from_utf8_lossy(text).into_owned(),
            },
        }
    }

    fn skip_whitespace(&mut self) -> io::Result<()> {
        loop {
            let available = self.bytes().fill_buf()?;
            if available.is_empty() {
                return Ok(());
            }
            let (skip, found) = match available.iter().position(|b| !b.is_ascii_whitespace()) {
                Some(at) => (at, true),
                None => (available.len(), false),
            };
            let newlines = count_newlines(&available[..skip]);
            self.bytes().consume(skip);
            self.line += newlines;
            if found {
                return Ok(());
            }
        }
    }

    /// Appends one value (or one line of something else) to `out`, counting the lines it spans.
    fn read_value(&mut self, out: &mut Vec<u8>) -> io::Result<()> {
        let first = match self.bytes().fill_buf()?.first() {
            Some(&b) => b,
            None => return Ok(()),
        };
        if first != b'{' && first != b'[' {
            self.bytes().read_until(b'\n', out)?;
            self.line += count_newlines(out);
            return Ok(());
        }
        let mut scan = BracketScan::default();
        loop {
            let available = self.bytes().fill_buf()?;
            if available.is_empty() {
                return Ok(());
            }
            let (take, closed) = match scan.feed(available) {
                Some(end) => (end, true),
                None => (available.len(), false),
            };
            out.extend_from_slice(&available[..take]);
            let newlines = count_newlines(&available[..take]);
            self.bytes().consume(take);
            self.line += newlines;
            if closed {
                return Ok(());
            }
        }
    }

    fn broken(&mut self, error: io::Error, line: u64) -> Step {
        self.state = None;
        Step::Broken {
            line,
            message: format!("read error: {error}"),
            text: String::from_utf8_lossy(self.buffer.trim_ascii()).into_owned(),
        }
    }
}

/// Reads the first lines to tell NDJSON from a document that spans many lines: when the first
/// value ends on its line, or the next line starts a new object at its first column, it is
/// NDJSON; a first line that opens a value left open is the start of a document; a first line
/// that opens no value (a binary file, a README) means the file is not JSON. The bytes read
/// come back in front of the rest. `None`: the stream is empty.
fn sniff(mut bytes: Bytes) -> io::Result<Option<(Layout, Bytes)>> {
    if bytes.fill_buf()?.starts_with(&UTF8_BOM) {
        bytes.consume(UTF8_BOM.len());
    }
    let mut head = Vec::new();
    let Some(first) = read_non_blank_line(&mut bytes, &mut head)? else {
        return Ok(None);
    };
    let first_line = head[first].trim_ascii();
    let opens_value = first_line.starts_with(b"{") || first_line.starts_with(b"[");
    let layout = match serde_json::from_slice::<serde::de::IgnoredAny>(first_line) {
        Ok(_) => Layout::Lines,
        Err(e) => match read_non_blank_line(&mut bytes, &mut head)? {
            Some(next) if head[next.start] == b'{' => Layout::Lines,
            _ if e.is_eof() && opens_value => Layout::Documents,
            _ if opens_value => Layout::Lines,
            _ => Layout::NotJson,
        },
    };
    Ok(Some((layout, Box::new(Cursor::new(head).chain(bytes)))))
}

/// Appends lines to `head` up to and including the first that is not blank; its range.
fn read_non_blank_line(
    bytes: &mut Bytes,
    head: &mut Vec<u8>,
) -> io::Result<Option<std::ops::Range<usize>>> {
    loop {
        let start = head.len();
        if bytes.read_until(b'\n', head)? == 0 {
            return Ok(None);
        }
        if !head[start..].trim_ascii().is_empty() {
            return Ok(Some(start..head.len()));
        }
    }
}

/// serde_json's message without its " at line L column C" (the caller says where).
fn error_text(error: &serde_json::Error) -> String {
    let text = error.to_string();
    match text.rsplit_once(" at line ") {
        Some((message, _)) => message.to_owned(),
        None => text,
    }
}

fn count_newlines(bytes: &[u8]) -> u64 {
    bytes.iter().filter(|&&b| b == b'\n').count() as u64
}

/// Finds where a JSON value that starts with `{` or `[` closes, across chunks.
#[derive(Default)]
struct BracketScan {
    depth: usize,
    in_string: bool,
    escaped: bool,
}

impl BracketScan {
    /// How many bytes of `chunk` the value still takes, if it closes in this chunk.
    fn feed(&mut self, chunk: &[u8]) -> Option<usize> {
        for (i, &b) in chunk.iter().enumerate() {
            if self.in_string {
                if self.escaped {
                    self.escaped = false;
                } else if b == b'\\' {
                    self.escaped = true;
                } else if b == b'"' {
                    self.in_string = false;
                }
                continue;
            }
            match b {
                b'"' => self.in_string = true,
                b'{' | b'[' => self.depth += 1,
                b'}' | b']' => {
                    self.depth = self.depth.saturating_sub(1);
                    if self.depth == 0 {
                        return Some(i + 1);
                    }
                }
                _ => {}
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn steps(text: &[u8]) -> Vec<String> {
        let mut reader = ValueReader::new(Box::new(Cursor::new(text.to_vec())));
        let mut out = Vec::new();
        loop {
            match reader.next_step() {
                Step::Value { line, value } => out.push(format!("{line}: {value}")),
                Step::NotJson { line, message, .. } => out.push(format!("{line}! {message}")),
                Step::Broken { line, message, .. } => out.push(format!("{line}!! {message}")),
                Step::End => return out,
            }
        }
    }

    #[test]
    fn ndjson_lines_with_blank_and_bad_lines() {
        let text = b"{\"a\":1}\r\n\n  \n{\"b\":2}\noops\n{\"c\":\n{\"d\":4}";
        assert_eq!(
            steps(text),
            [
                r#"1: {"a":1}"#,
                r#"4: {"b":2}"#,
                "5! not JSON: expected value at column 1",
                "6! not JSON: EOF while parsing a value at column 5",
                r#"7: {"d":4}"#,
            ]
        );
    }

    #[test]
    fn broken_first_line_of_ndjson_is_one_bad_line() {
        let text = b"{\"a\":\n{\"b\":2}\n";
        assert_eq!(
            steps(text),
            [
                "1! not JSON: EOF while parsing a value at column 5",
                r#"2: {"b":2}"#
            ]
        );
    }

    #[test]
    fn pretty_documents_one_after_the_other() {
        let text = b"\xef\xbb\xbf{\n  \"a\": \"}{\\\"\",\n  \"b\": [1, {\"c\": 2}]\n}\n\n{\n  \"d\": 1\n}{\"e\":\n2}\n{\n  \"f\": ,\n}\n";
        assert_eq!(
            steps(text),
            [
                r#"1: {"a":"}{\"","b":[1,{"c":2}]}"#,
                r#"6: {"d":1}"#,
                r#"8: {"e":2}"#,
                "10! not JSON: expected value at line 11 column 8",
            ]
        );
    }

    #[test]
    fn text_that_is_not_json_is_reported_once() {
        assert_eq!(
            steps(b"\n# notes\nmore notes\n{\"a\":1}\n"),
            ["2! not JSON: expected value at column 1; the rest of the file is skipped"]
        );
        assert_eq!(
            steps(b"# notes\n{\"a\":1}\n"),
            ["1! not JSON: expected value at column 1", r#"2: {"a":1}"#]
        );
    }

    #[test]
    fn one_line_document_and_empty_input() {
        assert_eq!(steps(b"{\"a\": [1, 2]}"), [r#"1: {"a":[1,2]}"#]);
        assert!(steps(b"").is_empty());
        assert!(steps(b"\n \n").is_empty());
    }

    #[test]
    fn gzip_is_recognised_by_content() {
        use flate2::{Compression, write::GzEncoder};
        use std::io::Write;
        let mut gz = GzEncoder::new(Vec::new(), Compression::fast());
        gz.write_all(b"{\"a\":1}\n{\"b\":2}\n").unwrap();
        let compressed = gz.finish().unwrap();
        let bytes = decompressed(Cursor::new(compressed.clone())).unwrap();
        let mut reader = ValueReader::new(bytes);
        assert!(matches!(reader.next_step(), Step::Value { line: 1, .. }));
        assert!(matches!(reader.next_step(), Step::Value { line: 2, .. }));
        assert!(matches!(reader.next_step(), Step::End));

        let truncated = compressed[..compressed.len() - 12].to_vec();
        let bytes = decompressed(Cursor::new(truncated)).unwrap();
        let mut reader = ValueReader::new(bytes);
        let mut broken = false;
        loop {
            match reader.next_step() {
                Step::Broken { message, .. } => {
                    assert!(message.starts_with("read error"), "{message}");
                    broken = true;
                }
                Step::End => break,
                _ => {}
            }
        }
        assert!(broken);
    }
}
