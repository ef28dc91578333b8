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
        .try_init();
}

/// Whether request logs are on: the progress bar then stays hidden, so the two never tear
/// each other's lines.
pub fn requests_logged() -> bool {
    tracing::enabled!(tracing::Level::INFO)
}
