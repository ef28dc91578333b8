//! Open files: every worker may hold a connection of its own (HTTP/1.1), and macOS starts a
//! shell at 256 descriptors. Too few, and connections fail one by one with "Too many open
//! files" while every resource is retried; so the limit is raised before loading, or the load
//! is refused, saying what would fit.

use crate::exit::usage;

/// Descriptors the process needs besides its connections: stdio, input and --failed files,
/// the runtime, DNS, certificates.
const HEADROOM: u64 = 64;

/// Makes sure `workers` connections (twice that when the store runs in this process) fit.
pub fn ensure_room_for(workers: u32, store_in_process: bool) -> anyhow::Result<()> {
    let per_worker = if store_in_process { 2 } else { 1 };
    let needed = u64::from(workers) * per_worker + HEADROOM;
    let available = raise_limit()?;
    if available >= needed {
        return Ok(());
    }
    let fits = available.saturating_sub(HEADROOM) / per_worker;
    Err(usage(format!(
        "--workers {workers} needs about {needed} open files, but this process may open only \
         {available} (the hard limit); raise it (`ulimit -n {needed}`, as root or in the \
         service's settings) or use --workers {} or fewer",
        fits.max(1)
    )))
}

/// Raises the soft limit to the hard one (connections come and go faster than they are
/// counted here, so exactly what was counted is too tight); the limit now.
#[cfg(unix)]
fn raise_limit() -> anyhow::Result<u64> {
    use anyhow::Context;
    rlimit::increase_nofile_limit(u64::MAX).context("reading the open-file limit (RLIMIT_NOFILE)")
}

#[cfg(not(unix))]
fn raise_limit() -> anyhow::Result<u64> {
    Ok(u64::MAX)
}
