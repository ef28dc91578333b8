//! `--failed PATH`: every resource that was not stored, one JSON line each, with the reason.
//!
//! A line is `{"resource": {...}, "failure": {"status": 400, "message": "...", "source": "..."}}`;
//! `load --input` reads such lines back as the resource they carry, so a fixed file can be
//! fed straight back.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use anyhow::Context;
use serde_json::{Value, json};

pub struct FailedSink {
    path: PathBuf,
    out: Mutex<BufWriter<File>>,
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
            out: Mutex::new(BufWriter::new(file)),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn write(&self, resource: &Value, failure: &Failure) -> anyhow::Result<()> {
        let mut reason = json!({"message": failure.message});
        if let Some(status) = failure.status {
            reason["status"] = status.into();
        }
        if let Some(source) = &failure.source {
            reason["source"] = source.as_str().into();
        }
        let line = json!({"resource": resource, "failure": reason});
        let mut out = self.out.lock().expect("failed-file lock");
        serde_json::to_writer(&mut *out, &line)?;
        out.write_all(b"\n")
            .with_context(|| format!("writing to {}", self.path.display()))
    }

    pub fn flush(&self) -> anyhow::Result<()> {
        self.out
            .lock()
            .expect("failed-file lock")
            .flush()
            .with_context(|| format!("writing to {}", self.path.display()))
    }
}

/// The resource inside a `--failed` line, or `None` when `line` is not one.
pub fn unwrap_failed_line(value: &Value) -> Option<&Value> {
    if value.get("resourceType").is_some() || value.get("failure").is_none() {
        return None;
    }
    value.get("resource").filter(|r| r.is_object())
}
