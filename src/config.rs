//! Command-line arguments, checked once and turned into what the engines take: `load` runs on a
//! [`LoadConfig`], `verify` on a [`VerifyConfig`]; neither sees clap's structs. Every size that
//! follows from `--workers` is decided here too ([`WorkerPool`]), each by one rule.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::cli::{
    ConnectionArgs, HttpVersion, LoadArgs, LoadMode, SeedArg, TargetArgs, VerifyArgs,
};
use crate::exit::usage;
use crate::generate::GeneratorConfig;
use crate::store::client::{ClientOptions, Network};
use crate::store::limiter::{Limiter, LimiterOptions};
use crate::store::retry::RetryPolicy;
use crate::store::target::{AuthOptions, TargetSpec};

/// Where the records come from.
pub enum SourceConfig {
    Generated(GeneratorConfig),
    /// `--input`: a file, a folder, or `-` for stdin.
    Input(PathBuf),
}

impl SourceConfig {
    fn from_args(input: Option<PathBuf>, data: &crate::cli::DataArgs) -> anyhow::Result<Self> {
        match input {
            Some(path) => Ok(Self::Input(path)),
            None => Ok(Self::Generated(GeneratorConfig::from_args(data)?)),
        }
    }

    pub fn input(&self) -> Option<&Path> {
        match self {
            Self::Input(path) => Some(path),
            Self::Generated(_) => None,
        }
    }
}

/// How requests reach the store and when they give up: shared by `load` and `verify`.
#[derive(Debug, Clone)]
pub struct ConnectionConfig {
    pub timeout: Duration,
    pub retry: RetryPolicy,
    pub min_backoff: Duration,
    pub max_throttle_wait: Duration,
    pub http: HttpVersion,
    pub network: Network,
    pub auth: AuthOptions,
}

impl ConnectionConfig {
    pub fn from_args(args: ConnectionArgs) -> anyhow::Result<Self> {
        let timeout = Duration::try_from_secs_f64(args.timeout)
            .ok()
            .filter(|_| args.timeout > 0.0)
            .ok_or_else(|| {
                usage(format!(
                    "--timeout {} must be a positive number of seconds",
                    args.timeout
                ))
            })?;
        Ok(Self {
            timeout,
            retry: RetryPolicy::new(args.max_retries, args.min_backoff),
            min_backoff: args.min_backoff,
            max_throttle_wait: args.max_throttle_wait,
            http: args.http,
            network: Network {
                ca_file: args.ca_file,
            },
            auth: AuthOptions {
                access_token: args.access_token,
                quota_project: args.quota_project,
                impersonate: args.impersonate_service_account,
                iam_credentials_endpoint: args.iam_credentials_endpoint,
            },
        })
    }

    /// The limiter that rides the store's quota, capped at `max_rate` operations per second.
    pub fn limiter(&self, max_rate: Option<f64>) -> Arc<Limiter> {
        Arc::new(Limiter::new(LimiterOptions {
            max_rate,
            min_probe_delay: self.min_backoff,
            ..LimiterOptions::default()
        }))
    }

    /// The store client's options for `pool`'s workers.
    pub fn client_options(&self, pool: WorkerPool, limiter: Arc<Limiter>) -> ClientOptions {
        ClientOptions {
            workers: pool.workers,
            timeout: self.timeout,
            retry: self.retry.clone(),
            limiter,
            max_throttle_wait: self.max_throttle_wait,
            http: self.http,
            network: self.network.clone(),
        }
    }
}

/// The target flags and the endpoint, checked.
fn target_spec(
    target: &TargetArgs,
    endpoint: &str,
    auth: &AuthOptions,
) -> anyhow::Result<TargetSpec> {
    TargetSpec::check(
        target.store.as_deref(),
        target.fhir_url.as_deref(),
        target.emulator,
        endpoint,
        auth,
    )
}

/// `--workers` and every size that follows from it.
#[derive(Debug, Clone, Copy)]
pub struct WorkerPool {
    pub workers: u32,
    /// The store runs in this process (`--emulator`): it needs threads and files too.
    pub store_in_process: bool,
}

/// Workers one thread keeps up with: a create request costs about 22 µs of client CPU, so 128
/// workers against a store that answers in 5 ms (25,600 requests/s) keep a thread half busy.
pub const WORKERS_PER_THREAD: u32 = 128;

impl WorkerPool {
    pub fn for_load(args: &LoadArgs) -> Self {
        Self {
            workers: args.workers,
            store_in_process: args.target.emulator,
        }
    }

    /// Records written at once. A record offers dozens of resources at once but only one at
    /// its start (the Patient) and its end: half as many records as workers keeps every worker
    /// busy (a quarter left 6% of them idle at 20 ms latency; as many as workers adds 8 MiB).
    pub fn records_in_progress(self) -> usize {
        (self.workers as usize / 2).max(4)
    }

    /// Jobs queued for the workers. Workers refill from here as they finish; a quarter of the
    /// pool keeps them fed (the dispatcher is far faster than a store) without holding every
    /// bundle twice. Records written resource by resource hold a record permit while queued:
    /// a short queue keeps those permits on records that are being written.
    pub fn job_queue(self, resource_by_resource: bool) -> usize {
        if resource_by_resource {
            4
        } else {
            (self.workers as usize / 4).max(2)
        }
    }

    /// Open files each worker may hold: its own connection (HTTP/1.1), and the store's end of
    /// it too when the store runs in this process.
    pub fn files_per_worker(self) -> u64 {
        if self.store_in_process { 2 } else { 1 }
    }

    /// Lookups queued for verify's workers: two each keeps them busy.
    pub fn lookup_queue(self) -> usize {
        self.workers as usize * 2
    }

    /// Runtime threads on a machine of `cores`. A store elsewhere sets the pace, and a second
    /// thread only adds cross-thread wake-ups; the emulator in this process wants them all.
    pub fn runtime_threads(self, cores: usize) -> usize {
        if self.store_in_process {
            cores
        } else {
            (self.workers.div_ceil(WORKERS_PER_THREAD) as usize).clamp(1, cores)
        }
    }
}

/// A checked `fhirgen load`.
pub struct LoadConfig {
    pub target: TargetSpec,
    pub connection: ConnectionConfig,
    pub source: SourceConfig,
    pub pool: WorkerPool,
    pub mode: LoadMode,
    pub bundle_size: usize,
    /// `--rate`, when it caps anything.
    pub max_rate: Option<f64>,
    pub failed: Option<PathBuf>,
    pub json: bool,
    pub quiet: bool,
}

impl LoadConfig {
    pub fn from_args(args: LoadArgs) -> anyhow::Result<Self> {
        let rate_ok = args.rate == 0.0
            || (args.rate > 0.0 && Duration::try_from_secs_f64(1.0 / args.rate).is_ok());
        if !rate_ok {
            return Err(usage(format!(
                "--rate {} must be a number of operations per second (0 for no cap)",
                args.rate
            )));
        }
        if let (Some(input), Some(failed)) = (&args.input, &args.failed) {
            if failed_would_clobber_input(input, failed) {
                return Err(usage(format!(
                    "--failed {} would overwrite the --input being read; write failures to another \
                     file (e.g. --failed failed-again.ndjson)",
                    failed.display()
                )));
            }
        }
        let pool = WorkerPool::for_load(&args);
        let endpoint = args.connection.endpoint.clone();
        let connection = ConnectionConfig::from_args(args.connection)?;
        Ok(Self {
            target: target_spec(&args.target, &endpoint, &connection.auth)?,
            pool,
            source: SourceConfig::from_args(args.input, &args.data)?,
            mode: args.mode,
            bundle_size: args.bundle_size as usize,
            max_rate: (args.rate > 0.0).then_some(args.rate),
            failed: args.failed,
            json: args.json,
            quiet: args.quiet,
            connection,
        })
    }
}

/// `verify --via`: where the store's export goes.
#[derive(Debug, Clone)]
pub struct ViaConfig {
    pub url: crate::store::storage::GcsUrl,
    pub keep_objects: bool,
    pub storage_endpoint: Option<String>,
}

impl ViaConfig {
    fn from_args(args: &VerifyArgs) -> anyhow::Result<Option<Self>> {
        let Some(raw) = &args.via else {
            return Ok(None);
        };
        if args.target.fhir_url.is_some() {
            return Err(usage(
                "--via reads the store through fhirStores.export, a method of Google's \
                 Healthcare API stores (and of the emulator, `fhirgen serve`, given as --store \
                 with --endpoint), which a --fhir-url server does not have: use --store, or leave \
                 out --via",
            ));
        }
        let url = crate::store::storage::GcsUrl::parse(raw).map_err(|why| {
            usage(format!(
                "--via {raw} is not a Cloud Storage location: {why}"
            ))
        })?;
        Ok(Some(Self {
            url,
            keep_objects: args.keep_objects,
            storage_endpoint: args.storage_endpoint.clone(),
        }))
    }
}

/// A checked `fhirgen verify`.
pub struct VerifyConfig {
    pub target: TargetSpec,
    pub connection: ConnectionConfig,
    pub source: SourceConfig,
    pub pool: WorkerPool,
    pub sample: Option<u64>,
    pub exact_counts: bool,
    pub json: bool,
    pub quiet: bool,
    /// `--via`: read the store through its export.
    pub via: Option<ViaConfig>,
}

impl VerifyConfig {
    pub fn from_args(args: VerifyArgs) -> anyhow::Result<Self> {
        if args.target.emulator {
            return Err(usage(
                "--emulator starts an empty store for one run, so there is nothing to verify: run \
                 `fhirgen serve` and give --fhir-url http://127.0.0.1:PORT/fhir to both load and verify",
            ));
        }
        if args.data.seed == SeedArg::Random {
            return Err(usage(
                "--seed random describes no particular data set: give the seed the load used \
                 (its summary prints it)",
            ));
        }
        let via = ViaConfig::from_args(&args)?;
        let endpoint = args.connection.endpoint.clone();
        let connection = ConnectionConfig::from_args(args.connection)?;
        Ok(Self {
            target: target_spec(&args.target, &endpoint, &connection.auth)?,
            source: SourceConfig::from_args(args.input, &args.data)?,
            via,
            pool: WorkerPool {
                workers: args.workers,
                store_in_process: false,
            },
            sample: args.sample,
            exact_counts: args.exact_counts,
            json: args.json,
            quiet: args.quiet,
            connection,
        })
    }
}

/// Whether writing `failed` would truncate `input` or a file inside it.
fn failed_would_clobber_input(input: &Path, failed: &Path) -> bool {
    if input == Path::new("-") {
        return false;
    }
    let Ok(input) = input.canonicalize() else {
        return false;
    };
    let failed = match failed.canonicalize() {
        Ok(existing) => existing,
        // Not there yet: where it would be created.
        Err(_) => match (failed.parent(), failed.file_name()) {
            (Some(parent), Some(name)) => {
                let parent = if parent.as_os_str().is_empty() {
                    Path::new(".")
                } else {
                    parent
                };
                match parent.canonicalize() {
                    Ok(parent) => parent.join(name),
                    Err(_) => return false,
                }
            }
            _ => return false,
        },
    };
    failed == input || failed.starts_with(&input)
}
