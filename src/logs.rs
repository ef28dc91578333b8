//! `-v`/`-vv` and `RUST_LOG`: request logs on stderr through `tracing`. What is logged is
//! chosen where it is logged (methods, paths relative to the FHIR base, statuses, reasons that
//! have already had credentials taken out), so no level can show a secret.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

/// Starts logging at the level `-v` asks for; `RUST_LOG`, when set, decides instead.
pub fn init(verbose: u8) {
    let level = match verbose {
        0 => "warn",
        1 => "fhirgen=info",
        _ => "fhirgen=debug",
    };
    let filter = match std::env::var("RUST_LOG") {
        Ok(directives) if !directives.trim().is_empty() => EnvFilter::new(directives),
        _ => EnvFilter::new(level),
    };
    // A second call (tests that run in one process) keeps the first subscriber.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false)
        // A closed or broken stderr must not stop a load: tracing would report the failed
        // write with `eprintln!`, which panics when stderr is gone.
        .log_internal_errors(false)
        .try_init();
}

/// Writes `text` to stderr as it is. A stderr that is closed, or whose reader went away
/// (`2>&1 | head -c1`), loses what is written there and nothing else: `eprint!` would panic
/// and take the run, its summary and its `--failed` lines with it.
pub fn to_stderr(text: &str) {
    use std::io::Write;
    let mut stderr = std::io::stderr().lock();
    let _ = stderr.write_all(text.as_bytes());
    let _ = stderr.flush();
}

/// Writes one line to stderr, as [`to_stderr`]: never fails, never panics.
pub fn line_to_stderr(args: std::fmt::Arguments<'_>) {
    to_stderr(&format!("{args}\n"));
}

/// `eprintln!` for a run: a line on stderr that is lost, not fatal, when stderr is gone.
#[macro_export]
macro_rules! say {
    ($($arg:tt)*) => {
        $crate::logs::line_to_stderr(format_args!($($arg)*))
    };
}

/// Whether request logs are on: the progress bar then stays hidden, so the two never tear
/// each other's lines.
pub fn requests_logged() -> bool {
    tracing::enabled!(tracing::Level::INFO)
}
