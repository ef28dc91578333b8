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
