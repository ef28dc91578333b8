//! Exit codes, in one place, and how errors map to them.

use std::io;
use std::process::ExitCode;

/// Everything was stored (or generated).
pub const SUCCESS: u8 = 0;
/// Something was not stored, or the run failed.
pub const FAILURE: u8 = 1;
/// Bad usage or configuration: nothing was attempted.
pub const USAGE: u8 = 2;
/// Interrupted by Ctrl-C (128 + SIGINT).
pub const INTERRUPTED: u8 = 130;
/// Stopped by SIGTERM (128 + SIGTERM), as a scheduler stops a job: in-flight requests finished,
/// summary printed, like [`INTERRUPTED`].
pub const TERMINATED: u8 = 143;

/// A mistake in flags, environment or configuration, found before any work started.
#[derive(Debug)]
pub struct UsageError(pub String);

impl std::fmt::Display for UsageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UsageError {}

/// Shorthand for returning a [`UsageError`].
pub fn usage(message: impl Into<String>) -> anyhow::Error {
    UsageError(message.into()).into()
}

/// Prints `error` for a person and picks the exit code: a closed stdout (`| head`) is not an
/// error, usage mistakes exit 2, everything else 1.
pub fn report_error(error: &anyhow::Error) -> ExitCode {
    if is_broken_pipe(error) {
        return SUCCESS.into();
    }
    crate::say!("error: {error:#}");
    if error.downcast_ref::<UsageError>().is_some() {
        USAGE.into()
    } else {
        FAILURE.into()
    }
}

/// Prints `value` as one JSON line on stdout (a run's `--json` summary). A reader that went
/// away (`| head -c0`) changes nothing about how the run went, so a closed stdout is not an
/// error.
pub fn print_json_line(value: &impl serde::Serialize) -> anyhow::Result<()> {
    use std::io::Write;
    let printed = (|| -> anyhow::Result<()> {
        let mut stdout = io::stdout().lock();
        serde_json::to_writer(&mut stdout, value)?;
        stdout.write_all(b"\n")?;
        stdout.flush()?;
        Ok(())
    })();
    match printed {
        Err(error) if !is_broken_pipe(&error) => Err(error),
        _ => Ok(()),
    }
}

pub fn is_broken_pipe(error: &anyhow::Error) -> bool {
    error.chain().any(|cause| {
        cause
            .downcast_ref::<io::Error>()
            .is_some_and(|e| e.kind() == io::ErrorKind::BrokenPipe)
    })
}

/// Refuses to write `what` to a stdout that was closed when fhirgen started (`>&-`): the
/// standard library reopens a closed standard descriptor on /dev/null, so everything written
/// would vanish and the run would claim success.
pub fn ensure_stdout_open(what: &str) -> anyhow::Result<()> {
    if stdout_was_closed() {
        return Err(usage(format!(
            "stdout is closed, so {what} would go nowhere: send it to a file or a pipe              (> data.ndjson, | ...), or name a file with --output"
        )));
    }
    Ok(())
}

/// Whether stdout is the /dev/null the standard library opened, read-write, in place of a
/// closed descriptor (a shell's `>/dev/null` opens it write-only).
#[cfg(target_os = "linux")]
fn stdout_was_closed() -> bool {
    let is_null = std::fs::read_link("/proc/self/fd/1").is_ok_and(|path| path == *"/dev/null");
    let read_write = || {
        let info = std::fs::read_to_string("/proc/self/fdinfo/1").unwrap_or_default();
        info.lines()
            .find_map(|line| line.strip_prefix("flags:"))
            .and_then(|flags| u32::from_str_radix(flags.trim(), 8).ok())
            .is_some_and(|flags| flags & 0o3 == 0o2)
    };
    is_null && read_write()
}

#[cfg(not(target_os = "linux"))]
fn stdout_was_closed() -> bool {
    false
}
