//! Ctrl-C and SIGTERM (what Kubernetes and Cloud Run send): the first stops new work and lets
//! the requests in flight finish, so that the summary still tells what was stored; the second
//! leaves at once, after saving what `--failed` holds.

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::exit;
use crate::failed::FailedSink;

/// Which signal stopped the run, as the exit code it calls for.
#[derive(Clone, Default)]
pub struct Interruption(Arc<AtomicU8>);

impl Interruption {
    /// `Some(130)` after Ctrl-C, `Some(143)` after SIGTERM.
    pub fn exit_code(&self) -> Option<u8> {
        match self.0.load(Ordering::SeqCst) {
            0 => None,
            code => Some(code),
        }
    }
}

/// Watches for the signals until the returned task is aborted.
pub fn watch(
    stop: CancellationToken,
    failed: Option<Arc<FailedSink>>,
) -> (JoinHandle<()>, Interruption) {
    let interruption = Interruption::default();
    let flag = interruption.0.clone();
    let task = tokio::spawn(async move {
        let Some(first) = next_signal().await else {
            return;
        };
        flag.store(first.code, Ordering::SeqCst);
        stop.cancel();
        eprintln!(
            "\n{}: finishing requests in flight ({} again to abort)",
            first.name, first.name
        );
        if let Some(second) = next_signal().await {
            eprintln!("{}: aborted", second.name);
            // A write error has been reported already, when it happened.
            if let Some(sink) = &failed {
                sink.flush();
            }
            std::process::exit(second.code.into());
        }
    });
    (task, interruption)
}

struct Signal {
    name: &'static str,
    code: u8,
}

async fn next_signal() -> Option<Signal> {
    let ctrl_c = Signal {
        name: "interrupted (Ctrl-C)",
        code: exit::INTERRUPTED,
    };
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let Ok(mut terminate) = signal(SignalKind::terminate()) else {
            return tokio::signal::ctrl_c().await.ok().map(|()| ctrl_c);
        };
        tokio::select! {
            result = tokio::signal::ctrl_c() => result.ok().map(|()| ctrl_c),
            received = terminate.recv() => received.map(|()| Signal {
                name: "terminated (SIGTERM)",
                code: exit::TERMINATED,
            }),
        }
    }
    #[cfg(not(unix))]
    {
        tokio::signal::ctrl_c().await.ok().map(|()| ctrl_c)
    }
}
