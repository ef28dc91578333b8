//! The async runtime a command runs on, and how many threads drive it.
//!
//! A load into a store over the network is paced by the store, not by the client: one runtime
//! thread drives its requests (one more per [`WORKERS_PER_THREAD`] workers, up to the cores:
//! [`WorkerPool::runtime_threads`]).
//! A second thread buys no throughput there and costs every request cross-thread wake-ups and
//! cache misses: 28.2 against 22.7 µs of CPU per create request on 2 cores (`bench/run.sh`).
//! Other commands, and a load into the built-in emulator (which serves from this same
//! process), get a thread per core. Generating and reading input run on threads of their own
//! either way.

use std::num::NonZeroUsize;

use tokio::runtime::{Builder, Runtime};

use crate::cli::{Cli, Command};
#[cfg(doc)]
use crate::config::WORKERS_PER_THREAD;
use crate::config::WorkerPool;
use crate::exit;

/// tokio's own variable for its thread count, honoured here for every command.
const THREADS_VARIABLE: &str = "TOKIO_WORKER_THREADS";

/// More threads than this is a typo, not a plan: tokio would abort when the system refuses
/// to start them, part-way through a run.
const MAX_THREADS: usize = 1024;

/// The runtime for `cli`; a usage error when `TOKIO_WORKER_THREADS` is not a thread count.
pub fn build(cli: &Cli) -> anyhow::Result<Runtime> {
    let cores = std::thread::available_parallelism().map_or(1, NonZeroUsize::get);
    let threads = match std::env::var_os(THREADS_VARIABLE) {
        Some(value) => parse_threads(&value.to_string_lossy())?,
        None => threads_for(cli, cores),
    };
    Builder::new_multi_thread()
        .worker_threads(threads)
        .enable_all()
        .build()
        .map_err(|e| anyhow::anyhow!("cannot start the async runtime: {e}"))
}

/// Threads for `cli` on a machine of `cores`, when `TOKIO_WORKER_THREADS` does not say.
fn threads_for(cli: &Cli, cores: usize) -> usize {
    match &cli.command {
        Command::Load(args) => WorkerPool::for_load(args).runtime_threads(cores),
        _ => cores,
    }
}

fn parse_threads(value: &str) -> anyhow::Result<usize> {
    match value.trim().parse::<usize>() {
        Ok(threads) if (1..=MAX_THREADS).contains(&threads) => Ok(threads),
        _ => Err(exit::usage(format!(
            "{THREADS_VARIABLE}={value:?} is not a number of threads: set it to 1 or more, up \
             to {MAX_THREADS}, or unset it to let fhirgen choose"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    fn threads(args: &[&str], cores: usize) -> usize {
        let cli = Cli::try_parse_from(args).expect("valid flags");
        threads_for(&cli, cores)
    }

    #[test]
    fn a_load_over_the_network_gets_a_thread_per_128_workers_up_to_the_cores() {
        let url = "http://127.0.0.1:1/fhir";
        let load = |workers: &str, cores| {
            threads(
                &["fhirgen", "load", "--fhir-url", url, "--workers", workers],
                cores,
            )
        };
        assert_eq!(load("1", 8), 1);
        assert_eq!(load("64", 8), 1);
        assert_eq!(load("128", 8), 1);
        assert_eq!(load("129", 8), 2);
        assert_eq!(load("512", 8), 4);
        assert_eq!(load("4096", 8), 8);
        assert_eq!(load("4096", 1), 1);
        // The default (32 workers).
        assert_eq!(threads(&["fhirgen", "load", "--fhir-url", url], 8), 1);
    }

    #[test]
    fn the_emulator_and_other_commands_get_a_thread_per_core() {
        assert_eq!(threads(&["fhirgen", "load", "--emulator"], 6), 6);
        assert_eq!(threads(&["fhirgen", "serve"], 6), 6);
        assert_eq!(threads(&["fhirgen", "generate", "--count", "10"], 6), 6);
    }

    #[test]
    fn a_thread_count_out_of_range_or_not_a_number_is_a_usage_error() {
        assert_eq!(parse_threads("3").unwrap(), 3);
        assert_eq!(parse_threads(" 2\n").unwrap(), 2);
        assert_eq!(parse_threads("1024").unwrap(), 1024);
        for bad in [
            "0",
            "-1",
            "two",
            "",
            "1.5",
            "1025",
            "99999999999999999999999",
        ] {
            let error = parse_threads(bad).unwrap_err();
            assert!(
                error.downcast_ref::<exit::UsageError>().is_some(),
                "{bad:?} is a usage error"
            );
            let message = error.to_string();
            assert!(
                message.contains("TOKIO_WORKER_THREADS") && message.contains("1 or more"),
                "{message}"
            );
        }
    }
}
