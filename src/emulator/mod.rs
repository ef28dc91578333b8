//! The built-in Healthcare-API-shaped FHIR store, in memory (`fhirgen serve`, `load --emulator`).
//!
//! It serves the Cloud Healthcare API FHIR REST surface at
//! `/v1/projects/{p}/locations/{l}/datasets/{d}/fhirStores/{s}/fhir/...` (each store path is its
//! own store, created on first use) and at `/fhir/...` (the store named [`STORE_NAME`]):
//! create (with `If-None-Exist`), update and conditional update by identifier, read, vread,
//! search (`_id`, `identifier`, `_tag`, `_count`, `_offset`, `_summary=count`), executeBundle
//! (atomic transactions with `urn:uuid` rewriting and `ifNoneExist`; batches), conditional
//! references, referential integrity, structural validation, `metadata`, and the store
//! resource itself (`fhirStores.get`). Its defaults are a new Google store's
//! (`enableUpdateCreate` off, referential integrity on); options relax them. For tests it can
//! add latency, require a bearer token, enforce an operations quota and inject transient
//! faults from a seed.
//!
//! Outside the FHIR paths, `GET /_emulator/stats` returns [`EmulatorStats`] as JSON and
//! `POST /_emulator/reset` empties every store and zeroes the counters. Both are exempt from
//! latency, auth, quota and faults, and are not counted. Counters and resource counts are
//! aggregated over all stores.

mod capability;
mod delay;
mod faults;
mod google_error;
mod path;
mod query;
mod quota;
mod routes;
mod sink;
mod store;
mod validate;
mod wire;

use std::collections::BTreeMap;
use std::io::Write;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::Context;
use axum::serve::ListenerExt;
use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::cli::ServeArgs;
use crate::secret::SecretString;
use faults::{Faults, Metrics};
use quota::{Quota, QuotaLimit};
use store::{StoreOptions, Stores};

/// The store `/fhir` addresses, and the one [`Emulator::fhir_base_url`] points at.
pub const STORE_NAME: &str = "projects/fhirgen/locations/local/datasets/dev/fhirStores/emulator";

#[derive(Debug, Clone)]
pub struct EmulatorOptions {
    /// Added before answering every FHIR request.
    pub latency: Duration,
    /// Fraction of writes answered 429 or 503 without writing.
    pub fault_rate: f64,
    /// Fraction of writes that are written but answered 503, as if the reply were lost.
    pub fault_after_write_rate: f64,
    /// FHIR operations per quota window before answering 429 RESOURCE_EXHAUSTED (0 =
    /// unlimited); each entry of an executeBundle is one operation.
    pub quota_ops: u32,
    /// The length of a quota window.
    pub quota_window: Duration,
    /// Add `Retry-After` (seconds until the window resets) to quota refusals; Google does not.
    pub quota_retry_after: bool,
    /// When set, every FHIR request needs `Authorization: Bearer <token>`.
    pub require_token: Option<SecretString>,
    pub referential_integrity: bool,
    /// PUT creates missing resources (`enableUpdateCreate`, false on a new Google store).
    pub update_create: bool,
    /// Seed of the fault decisions: the same seed gives the same sequence of faults.
    pub fault_seed: u64,
    /// Answer writes like a store without storing or checking anything: a benchmark target
    /// whose own cost stays out of the client's measurements.
    pub sink: bool,
}

impl Default for EmulatorOptions {
    fn default() -> Self {
        Self {
            latency: Duration::ZERO,
            fault_rate: 0.0,
            fault_after_write_rate: 0.0,
            quota_ops: 0,
            quota_window: Duration::from_secs(60),
            quota_retry_after: false,
            require_token: None,
            referential_integrity: true,
            update_create: false,
            fault_seed: 0,
            sink: false,
        }
    }
}

impl From<&ServeArgs> for EmulatorOptions {
    fn from(args: &ServeArgs) -> Self {
        Self {
            latency: Duration::from_millis(args.latency_ms),
            fault_rate: args.fault_rate,
            fault_after_write_rate: args.fault_after_write_rate,
            quota_ops: if args.quota_rpm > 0 {
                args.quota_rpm
            } else {
                args.quota_ops
            },
            quota_window: if args.quota_rpm > 0 {
                Duration::from_secs(60)
            } else {
                args.quota_window
            },
            quota_retry_after: args.quota_retry_after,
            require_token: args.require_token.clone(),
            referential_integrity: !args.disable_referential_integrity,
            update_create: args.enable_update_create,
            fault_seed: args.fault_seed,
            sink: args.sink,
        }
    }
}

impl EmulatorOptions {
    /// The quota, when there is one.
    fn quota_limit(&self) -> Option<QuotaLimit> {
        (self.quota_ops > 0).then_some(QuotaLimit {
            operations: self.quota_ops,
            window: self.quota_window,
        })
    }

    fn check(&self) -> anyhow::Result<()> {
        if self.quota_ops > 0 && self.quota_window.is_zero() {
            return Err(crate::exit::usage(
                "--quota-window must be a positive number of seconds",
            ));
        }
        for (flag, rate) in [
            ("--fault-rate", self.fault_rate),
            ("--fault-after-write-rate", self.fault_after_write_rate),
        ] {
            if !(0.0..=1.0).contains(&rate) {
                return Err(crate::exit::usage(format!(
                    "{flag} must be between 0 and 1, got {rate}"
                )));
            }
        }
        if self.fault_rate + self.fault_after_write_rate > 1.0 {
            return Err(crate::exit::usage(
                "--fault-rate and --fault-after-write-rate together must not exceed 1",
            ));
        }
        Ok(())
    }
}

/// What the emulator has seen since it started (or since the last reset), over all stores.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EmulatorStats {
    /// FHIR requests received.
    pub requests: u64,
    /// FHIR requests with method POST or PUT (creates, updates, executeBundle).
    pub writes: u64,
    /// FHIR requests being handled right now.
    pub in_flight: u64,
    /// The most FHIR requests ever handled at the same moment, latency included.
    pub max_in_flight: u64,
    /// Writes answered with an injected 429/503 (before or after writing).
    pub faults_injected: u64,
    /// Requests refused with 429 because the operations quota was used up.
    pub quota_exceeded: u64,
    /// Requests refused with 401.
    pub auth_failures: u64,
    /// Mean time from a FHIR request's arrival to its answer, added latency included: what
    /// a client's throughput ceiling (in flight / latency) is computed from.
    pub mean_latency_ms: f64,
    /// Responses by HTTP status ("201": n).
    pub status_counts: BTreeMap<String, u64>,
    /// Resources stored, by type, summed over all stores.
    pub resources: BTreeMap<String, u64>,
}

/// What every request handler shares.
struct AppState {
    addr: SocketAddr,
    options: EmulatorOptions,
    stores: Stores,
    metrics: Metrics,
    faults: Faults,
    quota: Quota,
    /// Present when requests wait `options.latency` before being answered.
    delays: Option<delay::Delays>,
}

impl AppState {
    fn stats(&self) -> EmulatorStats {
        let m = &self.metrics;
        let load = |counter: &std::sync::atomic::AtomicU64| counter.load(Ordering::SeqCst);
        EmulatorStats {
            requests: load(&m.requests),
            writes: load(&m.writes),
            in_flight: load(&m.in_flight),
            max_in_flight: load(&m.max_in_flight),
            faults_injected: load(&m.faults_injected),
            quota_exceeded: load(&m.quota_exceeded),
            auth_failures: load(&m.auth_failures),
            mean_latency_ms: match load(&m.requests) {
                0 => 0.0,
                requests => {
                    // Whole microseconds, in milliseconds.
                    (load(&m.answer_micros) as f64 / requests as f64).round() / 1e3
                }
            },
            status_counts: m.status_counts(),
            resources: self
                .stores
                .counts()
                .into_iter()
                .map(|(t, n)| (t, n as u64))
                .collect(),
        }
    }

    fn reset(&self) {
        self.stores.clear();
        self.metrics.reset();
        self.faults.reset();
        self.quota.reset();
    }
}

/// A running emulator. Dropping it stops the server too; [`Emulator::shutdown`] also waits.
pub struct Emulator {
    addr: SocketAddr,
    state: Arc<AppState>,
    stop: oneshot::Sender<()>,
    server: JoinHandle<()>,
}

impl Emulator {
    /// Binds `addr` (port 0 picks a free port) and serves in a background task.
    pub async fn start(options: EmulatorOptions, addr: SocketAddr) -> anyhow::Result<Emulator> {
        options.check()?;
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("cannot listen on {addr}"))?;
        let addr = listener.local_addr()?;
        let state = Arc::new(AppState {
            addr,
            stores: Stores::new(StoreOptions {
                referential_integrity: options.referential_integrity,
                update_create: options.update_create,
            }),
            metrics: Metrics::default(),
            faults: Faults::new(options.fault_seed),
            quota: Quota::default(),
            delays: if options.latency.is_zero() {
                None
            } else {
                Some(delay::Delays::start().context("cannot start the latency timer thread")?)
            },
            options,
        });
        let app = routes::router(state.clone());
        let (stop, stopped) = oneshot::channel::<()>();
        // Small answers must not wait for Nagle's algorithm.
        let listener = listener.tap_io(|tcp| {
            let _ = tcp.set_nodelay(true);
        });
        let server = tokio::spawn(async move {
            let shutdown = async {
                let _ = stopped.await;
            };
            if let Err(e) = axum::serve(listener, app)
                .with_graceful_shutdown(shutdown)
                .await
            {
                eprintln!("emulator: server error: {e}");
            }
        });
        Ok(Emulator {
            addr,
            state,
            stop,
            server,
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The URL of [`STORE_NAME`] (its `fhirStores.get`), on a loopback address when bound to
    /// all interfaces.
    pub fn store_url(&self) -> String {
        let ip = match self.addr.ip() {
            IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
            IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
            ip => ip,
        };
        format!(
            "http://{}/v1/{STORE_NAME}",
            SocketAddr::new(ip, self.addr.port())
        )
    }

    /// The FHIR base URL of [`STORE_NAME`].
    pub fn fhir_base_url(&self) -> String {
        format!("{}/fhir", self.store_url())
    }

    pub fn store_name(&self) -> &'static str {
        STORE_NAME
    }

    pub fn stats(&self) -> EmulatorStats {
        self.state.stats()
    }

    /// Stops accepting connections and waits (briefly) for requests in flight to finish.
    pub async fn shutdown(self) {
        let _ = self.stop.send(());
        let mut server = self.server;
        if tokio::time::timeout(Duration::from_secs(5), &mut server)
            .await
            .is_err()
        {
            server.abort();
        }
    }
}

/// `fhirgen serve`: run the emulator until Ctrl-C.
pub async fn serve(args: ServeArgs) -> anyhow::Result<ExitCode> {
    let options = EmulatorOptions::from(&args);
    let emulator = Emulator::start(options, SocketAddr::new(args.host, args.port)).await?;
    // One line on stdout, flushed, so a parent process can read the port chosen for --port 0.
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "listening on http://{}", emulator.addr())?;
    stdout.flush()?;
    drop(stdout);
    eprintln!("FHIR base URL: {}", emulator.fhir_base_url());
    eprintln!(
        "load into it with: fhirgen load --fhir-url {}",
        emulator.fhir_base_url()
    );
    tokio::signal::ctrl_c()
        .await
        .context("cannot listen for Ctrl-C")?;
    emulator.shutdown().await;
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;
    use crate::cli::{Cli, Command};

    fn serve_options(args: &[&str]) -> Result<EmulatorOptions, clap::Error> {
        let cli = Cli::try_parse_from(["fhirgen", "serve"].iter().chain(args))?;
        let Command::Serve(serve) = cli.command else {
            panic!("expected serve")
        };
        Ok(EmulatorOptions::from(&serve))
    }

    #[test]
    fn defaults_are_a_new_google_store() {
        let options = serve_options(&[]).unwrap();
        assert!(!options.update_create);
        assert!(options.referential_integrity);
        assert_eq!(options.quota_limit(), None);
        assert!(!options.quota_retry_after);
        let relaxed =
            serve_options(&["--enable-update-create", "--disable-referential-integrity"]).unwrap();
        assert!(relaxed.update_create && !relaxed.referential_integrity);
        assert!(serve_options(&["--disable-update-create"]).is_err());
    }

    #[test]
    fn quota_flags() {
        let options = serve_options(&[
            "--quota-ops",
            "500",
            "--quota-window",
            "0.5",
            "--quota-retry-after",
        ])
        .unwrap();
        assert_eq!(
            options.quota_limit(),
            Some(QuotaLimit {
                operations: 500,
                window: Duration::from_millis(500)
            })
        );
        assert!(options.quota_retry_after);
        let rpm = serve_options(&["--quota-rpm", "1200"]).unwrap();
        assert_eq!(
            rpm.quota_limit(),
            Some(QuotaLimit {
                operations: 1200,
                window: Duration::from_secs(60)
            })
        );
        assert!(serve_options(&["--quota-rpm", "1", "--quota-ops", "2"]).is_err());
        assert!(serve_options(&["--quota-window", "0"]).is_err());
        assert!(serve_options(&["--quota-window", "-1"]).is_err());
        assert!(serve_options(&["--quota-window", "soon"]).is_err());
    }
}
