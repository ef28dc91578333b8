//! Open files: every worker may hold a connection of its own (HTTP/1.1), and macOS starts a
//! shell at 256 descriptors. Too few, and connections fail one by one with "Too many open
//! files" while every resource is retried; so the limit is raised before loading, or the load
//! is refused, saying what would fit.

use crate::config::WorkerPool;
use crate::exit::usage;

/// Descriptors the process needs besides its connections: stdio, input and --failed files,
/// the runtime, DNS, certificates.
const HEADROOM: u64 = 64;

/// Makes sure the pool's connections fit.
pub fn ensure_room_for(pool: WorkerPool) -> anyhow::Result<()> {
    let (workers, per_worker) = (pool.workers, pool.files_per_worker());
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
