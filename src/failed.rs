//! `--failed PATH`: every resource that was not stored, one JSON line each, with the reason.
//!
//! A line is `{"resource": {...}, "failure": {"status": 400, "message": "...", "source": "..."}}`;
//! `load --input` reads such lines back as the resource they carry, so a fixed file can be
//! fed straight back.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde_json::{Value, json};

pub struct FailedSink {
    path: PathBuf,
    out: Mutex<Output>,
}

/// The file, and why writing to it stopped, if it did: a full disk is said once, and the
/// load goes on (failures are still counted).
struct Output {
    file: BufWriter<File>,
    error: Option<String>,
}

/// Why one resource was not stored.
#[derive(Debug, Clone)]
pub struct Failure {
    pub status: Option<u16>,
    pub message: String,
    /// Where the resource came from, when it came from a file: `path:line`.
    pub source: Option<String>,
}

impl FailedSink {
    pub fn create(path: &Path) -> anyhow::Result<Self> {
        let file = File::create(path).map_err(|e| {
            crate::exit::usage(format!(
                "cannot create the --failed file {}: {e}; check the folder exists and is writable",
                path.display()
            ))
        })?;
        Ok(Self {
            path: path.to_owned(),
            out: Mutex::new(Output {
                file: BufWriter::new(file),
                error: None,
            }),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Adds a line; once writing has failed, nothing more is written (the error was said).
    pub fn write(&self, resource: &Value, failure: &Failure) {
        let mut reason = json!({"message": failure.message});
        if let Some(status) = failure.status {
            reason["status"] = status.into();
        }
        if let Some(source) = &failure.source {
            reason["source"] = source.as_str().into();
        }
        let line = json!({"resource": resource, "failure": reason});
        let mut out = self.out.lock().expect("failed-file lock");
        if out.error.is_some() {
            return;
        }
        let written = serde_json::to_writer(&mut out.file, &line)
            .map_err(std::io::Error::from)
            .and_then(|()| out.file.write_all(b"\n"));
        if let Err(error) = written {
            self.stop_writing(&mut out, &error);
        }
    }

    /// Writes out what is buffered; the error that stopped writing, if any.
    pub fn flush(&self) -> Option<String> {
        let mut out = self.out.lock().expect("failed-file lock");
        if out.error.is_none() {
            if let Err(error) = out.file.flush() {
                self.stop_writing(&mut out, &error);
            }
        }
        out.error.clone()
    }

    fn stop_writing(&self, out: &mut Output, error: &std::io::Error) {
        let message = format!(
            "cannot write the --failed file {}: {error}; the failures are counted but not all \
             are kept there",
            self.path.display()
        );
        eprintln!("error: {message}");
        out.error = Some(message);
    }
}

/// The resource inside a `--failed` line, or `None` when `line` is not one.
pub fn unwrap_failed_line(value: &Value) -> Option<&Value> {
    if value.get("resourceType").is_some() || value.get("failure").is_none() {
        return None;
    }
    value.get("resource").filter(|r| r.is_object())
}
