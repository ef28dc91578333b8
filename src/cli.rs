//! Command-line surface. Doc comments are the help text.
//!
//! House rules: every flag a user can set in CI also has an environment variable only when it
//! names a target or a credential, and help never shows that variable's value
//! (`hide_env_values`): a URL or token in it may be a secret. Numeric flags accept `10k`/`1m`
//! suffixes where counts are large.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use chrono::NaiveDate;
use clap::{Args, CommandFactory, Parser, Subcommand, ValueEnum};

use crate::secret::SecretString;

#[derive(Debug, Parser)]
#[command(
    name = "fhirgen",
    version,
    about = "Generate realistic synthetic FHIR R4 data and load it into a FHIR store, fast, losing nothing.",
    propagate_version = true,
    // clap's own `help` subcommand refuses `help --help`; ours answers it like any command.
    disable_help_subcommand = true
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,

    /// Log on stderr: `-v` one line per request (method, path, status, latency, attempt, why
    /// it is retried), `-vv` debug detail (throttle episodes, store settings). RUST_LOG works
    /// too. Secrets are never logged.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Write synthetic FHIR R4 resources to stdout or a file.
    Generate(Box<GenerateArgs>),
    /// Generate (or read) resources and load them into a FHIR store.
    Load(Box<LoadArgs>),
    /// Run the built-in Healthcare-API-shaped FHIR store (in memory).
    Serve(ServeArgs),
    /// Read a store back and check that it holds what a load with the same arguments wrote:
    /// every resource found by its identifier exactly once, and the counts per type.
    Verify(Box<VerifyArgs>),
    /// Print a shell completion script (bash, zsh, fish, powershell or elvish) on stdout.
    Completions(CompletionsArgs),
    /// Print the man page (roff) on stdout.
    #[command(hide = true)]
    Man,
    /// Print this message or the help of the given subcommand(s).
    Help(HelpArgs),
}

#[derive(Debug, Args)]
pub struct HelpArgs {
    /// The subcommand to describe, e.g. `load`.
    #[arg(value_name = "COMMAND")]
    pub command: Vec<String>,
}

impl HelpArgs {
    /// The long help of the named (sub)command, as `COMMAND --help` prints it.
    pub fn help_text(&self) -> anyhow::Result<String> {
        let mut command = Cli::command();
        command.build();
        let mut described = &mut command;
        for name in &self.command {
            let names: Vec<String> = described
                .get_subcommands()
                .map(|c| c.get_name().to_owned())
                .collect();
            described = described.find_subcommand_mut(name).ok_or_else(|| {
                crate::exit::usage(format!(
                    "no subcommand `{name}`: try one of {}",
                    names.join(", ")
                ))
            })?;
        }
        Ok(described.render_long_help().to_string())
    }

    /// Prints [`HelpArgs::help_text`] on stdout.
    pub fn print(&self) -> anyhow::Result<ExitCode> {
        std::io::stdout().write_all(self.help_text()?.as_bytes())?;
        Ok(ExitCode::SUCCESS)
    }
}

/// What to generate: shared by `generate` and `load`.
#[derive(Debug, Args, Clone)]
pub struct DataArgs {
    /// Number of resources, exactly (all types together). Accepts 10k, 1m.
    // `-5` and `-1k` reach the parser, which says what a count is, not "unexpected argument".
    #[arg(long, default_value = "1000", value_parser = parse_count, allow_hyphen_values = true)]
    pub count: u64,

    /// RNG seed: a number, or `random` to pick one (it is printed in the summary).
    #[arg(long, default_value = "1", value_parser = parse_seed, allow_negative_numbers = true)]
    pub seed: SeedArg,

    /// The date the data is generated "as of": histories end here. Default: today.
    #[arg(long, value_name = "YYYY-MM-DD")]
    pub as_of: Option<NaiveDate>,

    /// Generate only part I of N of the data set (`I/N`, zero-based), `auto/N` (index from the
    /// scheduler's environment), or `auto` (index and count from the environment).
    #[arg(long, value_name = "I/N")]
    pub shard: Option<String>,

    /// Only these resource types (comma-separated); the types they refer to (Patient, Encounter,
    /// Practitioner, Organization...) come along so that every reference resolves. Default: all.
    #[arg(long, value_delimiter = ',', value_name = "TYPE,...")]
    pub types: Vec<String>,

    /// Make every clinical note (DocumentReference attachment) this many bytes, for heavy-write
    /// load tests. Accepts 10k, 1m. Default: the note's own length (about 1 KB).
    #[arg(long, value_name = "BYTES", value_parser = parse_count)]
    pub attachment_size: Option<u64>,
}

#[derive(Debug, Args)]
pub struct GenerateArgs {
    #[command(flatten)]
    pub data: DataArgs,

    /// Output format: one resource per line, or one transaction Bundle per line.
    #[arg(long, value_enum, default_value_t = OutputFormat::Ndjson)]
    pub format: OutputFormat,

    /// Write here instead of stdout: a file (gzip when it ends in .gz), or `gs://BUCKET/PREFIX/`
    /// for NDJSON objects in Cloud Storage that `fhirStores.import` reads, with a manifest
    /// written last; a stopped run started again resumes.
    #[arg(long, short = 'o', value_name = "PATH")]
    pub output: Option<PathBuf>,

    #[command(flatten)]
    pub storage: StorageArgs,

    #[command(flatten)]
    pub connection: ConnectionArgs,
}

/// Where Cloud Storage requests go and how uploads are cut: shared by `generate -o gs://...`
/// and `load --via gs://...`. Credentials, proxies and `--ca-file` are the store's.
#[derive(Debug, Args, Clone)]
pub struct StorageArgs {
    /// Cloud Storage JSON API endpoint, such as an emulator's (`http://127.0.0.1:9023`).
    /// STORAGE_EMULATOR_HOST works too, as with Google's libraries; either way no credential
    /// is sent. Default: https://storage.googleapis.com.
    #[arg(long, value_name = "URL")]
    pub storage_endpoint: Option<String>,

    /// Bytes per upload request: a multiple of 256 KiB, e.g. 8MiB or 256KiB.
    #[arg(long, default_value = "8MiB", value_name = "SIZE", value_parser = parse_chunk_size)]
    pub upload_chunk_size: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    Ndjson,
    Bundle,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum HttpVersion {
    Auto,
    #[value(name = "1")]
    Http1,
    #[value(name = "2")]
    Http2,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LoadMode {
    /// POST transaction Bundles of whole patient records (urn:uuid references).
    Transaction,
    /// POST each resource (conditional create), references rewritten to server ids.
    Create,
    /// PUT each resource to a deterministic id (the store needs enableUpdateCreate).
    Update,
}

#[derive(Debug, Args)]
#[group(id = "target", required = true, multiple = false)]
pub struct TargetArgs {
    /// A Cloud Healthcare FHIR store: projects/P/locations/L/datasets/D/fhirStores/S.
    #[arg(
        long,
        env = "FHIRGEN_STORE",
        value_name = "STORE",
        hide_env_values = true
    )]
    pub store: Option<String>,

    /// Any FHIR R4 base URL.
    #[arg(
        long,
        env = "FHIRGEN_FHIR_URL",
        value_name = "URL",
        hide_env_values = true
    )]
    pub fhir_url: Option<String>,

    /// Start the built-in emulator on a free loopback port and load into it.
    #[arg(long)]
    pub emulator: bool,
}

/// How requests reach the store, and with which credential: shared by `load` and `verify`.
#[derive(Debug, Args)]
pub struct ConnectionArgs {
    /// Healthcare API endpoint used with --store.
    #[arg(
        long,
        env = "FHIRGEN_ENDPOINT",
        default_value = "https://healthcare.googleapis.com/v1",
        value_name = "URL",
        hide_env_values = true
    )]
    pub endpoint: String,

    /// Bearer token to use instead of Application Default Credentials.
    #[arg(
        long,
        env = "FHIRGEN_ACCESS_TOKEN",
        value_name = "TOKEN",
        hide_env_values = true,
        value_parser = parse_access_token
    )]
    pub access_token: Option<SecretString>,

    /// Project billed for the store's requests, sent as `x-goog-user-project` (user
    /// credentials need one). Default: the ADC file's `quota_project_id`.
    #[arg(
        long,
        env = "GOOGLE_CLOUD_QUOTA_PROJECT",
        hide_env_values = true,
        value_name = "PROJECT"
    )]
    pub quota_project: Option<String>,

    /// Send this service account's tokens, obtained with the credential found (it needs
    /// roles/iam.serviceAccountTokenCreator on the account).
    #[arg(
        long,
        env = "FHIRGEN_IMPERSONATE_SERVICE_ACCOUNT",
        hide_env_values = true,
        value_name = "EMAIL"
    )]
    pub impersonate_service_account: Option<String>,

    /// IAM Credentials API endpoint for impersonation (a stand-in, for tests).
    #[arg(
        long,
        hide = true,
        env = "FHIRGEN_IAM_CREDENTIALS_ENDPOINT",
        hide_env_values = true,
        default_value = crate::store::auth::IAM_CREDENTIALS_ENDPOINT
    )]
    pub iam_credentials_endpoint: String,

    /// Also trust the CA certificates in this PEM file (a corporate proxy's, a private
    /// store's), besides the system's.
    #[arg(
        long,
        env = "FHIRGEN_CA_FILE",
        hide_env_values = true,
        value_name = "PATH"
    )]
    pub ca_file: Option<PathBuf>,

    /// Retries per request for errors that may heal (5xx, 408, timeouts, connection errors).
    /// Throttling (429) spends none: it waits, up to --max-throttle-wait.
    #[arg(long, default_value_t = 8)]
    pub max_retries: u32,

    /// How long one request may stay throttled by the store (429) before it counts as failed:
    /// long enough for several quota windows (Google's are a minute). E.g. 90s, 10m, 1h.
    #[arg(long, default_value = "10m", value_name = "DURATION", value_parser = parse_duration)]
    pub max_throttle_wait: std::time::Duration,

    /// The longest first wait before a retry (each wait is drawn at random up to its bound, which
    /// doubles per retry up to 32 s), and the first wait before a throttled store is probed.
    #[arg(long, default_value = "100ms", value_name = "DURATION", value_parser = parse_duration)]
    pub min_backoff: std::time::Duration,

    /// Per-request timeout in seconds.
    #[arg(long, default_value_t = 60.0, value_name = "SECS")]
    pub timeout: f64,

    /// HTTP version: `auto` negotiates HTTP/2 over https where the store offers it (all
    /// workers share one connection); `1` keeps a pool of HTTP/1.1 connections, one per
    /// worker; `2` speaks HTTP/2 only, also over plain http.
    #[arg(long, value_enum, default_value_t = HttpVersion::Auto)]
    pub http: HttpVersion,
}

#[derive(Debug, Args)]
pub struct LoadArgs {
    #[command(flatten)]
    pub target: TargetArgs,

    #[command(flatten)]
    pub connection: ConnectionArgs,

    #[command(flatten)]
    pub data: DataArgs,

    /// Read resources from NDJSON, NDJSON bundles or JSON files (a file, a directory, or - for
    /// stdin) instead of generating them.
    #[arg(long, value_name = "PATH", conflicts_with_all = ["count", "shard", "seed", "as_of", "types"])]
    pub input: Option<PathBuf>,

    /// Requests in flight at once.
    #[arg(long, short = 'w', default_value_t = 32, value_parser = clap::value_parser!(u32).range(1..=4096))]
    pub workers: u32,

    /// How resources are written.
    #[arg(long, value_enum, default_value_t = LoadMode::Transaction)]
    pub mode: LoadMode,

    /// Maximum entries per transaction Bundle.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub bundle_size: u32,

    /// Cap on operations per second across all workers, counted as the store's quota counts
    /// them: each entry of a bundle is one (0 = no cap; the load still rides the quota).
    #[arg(long, default_value_t = 0.0)]
    pub rate: f64,

    /// Write every resource that could not be stored here, as NDJSON with the reason.
    #[arg(long, value_name = "PATH")]
    pub failed: Option<PathBuf>,

    /// Print the final summary as one JSON object on stdout.
    #[arg(long)]
    pub json: bool,

    /// No progress bar and no text summary.
    #[arg(long, short = 'q')]
    pub quiet: bool,

    /// Load through Cloud Storage and the store's managed import (fhirStores.import, its own
    /// quota) instead of the REST API: the data set is written here as NDJSON objects, then
    /// imported and followed to the end. A method of Google's stores and of --emulator, so not
    /// with --fhir-url; the import writes each resource under its own id, so not with --mode.
    #[arg(long, value_name = "gs://BUCKET/PREFIX", conflicts_with = "mode")]
    pub via: Option<String>,

    /// With --via: keep the uploaded objects after a successful import (they are deleted).
    #[arg(long, requires = "via")]
    pub keep_objects: bool,

    /// With --via and --shard I/N: how long shard 0 waits for the other shards to finish
    /// uploading before it gives up. Shard 0 imports every shard's objects in one import; the
    /// other shards upload their part and leave. E.g. 30m, 2h.
    #[arg(long, default_value = "1h", value_name = "DURATION", value_parser = parse_duration, requires = "via")]
    pub wait_for_shards: std::time::Duration,

    #[command(flatten)]
    pub storage: StorageArgs,
}

#[derive(Debug, Args)]
pub struct VerifyArgs {
    #[command(flatten)]
    pub target: TargetArgs,

    #[command(flatten)]
    pub connection: ConnectionArgs,

    #[command(flatten)]
    pub data: DataArgs,

    /// The files that were loaded with --input (a file, a directory, or - for stdin).
    #[arg(long, value_name = "PATH", conflicts_with_all = ["count", "shard", "seed", "as_of", "types"])]
    pub input: Option<PathBuf>,

    /// Look up only N resources, the same N on every run; the counts per type still cover all.
    #[arg(long, value_name = "N", value_parser = parse_count)]
    pub sample: Option<u64>,

    /// Also fail when the store holds more resources of a type than the data set has (for a
    /// store that holds nothing else).
    #[arg(long)]
    pub exact_counts: bool,

    /// Lookups in flight at once.
    #[arg(long, short = 'w', default_value_t = 32, value_parser = clap::value_parser!(u32).range(1..=4096))]
    pub workers: u32,

    /// Print the report as one JSON object on stdout.
    #[arg(long)]
    pub json: bool,

    /// No text report on stderr.
    #[arg(long, short = 'q')]
    pub quiet: bool,

    /// Read the store back through its export (fhirStores.export) into a fresh folder under
    /// this Cloud Storage location instead of searching it resource by resource: the way that
    /// ends at tens of millions. A method of Google's stores (and of the emulator), so not with
    /// --fhir-url.
    #[arg(long, value_name = "gs://BUCKET/PREFIX", conflicts_with_all = ["sample", "input"])]
    pub via: Option<String>,

    /// With --via: keep the exported objects after reading them (they are deleted).
    #[arg(long, requires = "via")]
    pub keep_objects: bool,

    /// With --via: the Cloud Storage JSON API endpoint, such as an emulator's
    /// (`http://127.0.0.1:9023`). STORAGE_EMULATOR_HOST works too; either way no credential is
    /// sent. Default: https://storage.googleapis.com.
    #[arg(long, value_name = "URL", requires = "via")]
    pub storage_endpoint: Option<String>,
}

#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// The shell to complete for.
    #[arg(value_enum)]
    pub shell: clap_complete::Shell,
}

#[derive(Debug, Args, Clone)]
pub struct ServeArgs {
    /// Port on 127.0.0.1 (0 picks a free one; the address is printed on stdout).
    #[arg(long, default_value_t = 8080)]
    pub port: u16,

    /// Address to bind.
    #[arg(long, default_value = "127.0.0.1")]
    pub host: std::net::IpAddr,

    /// Added latency per request, in milliseconds.
    #[arg(long, default_value_t = 0)]
    pub latency_ms: u64,

    /// Fraction of write requests answered with a transient 429/503 before writing.
    #[arg(long, default_value_t = 0.0)]
    pub fault_rate: f64,

    /// Fraction of write requests that are written but answered with a 503 (the reply is lost).
    #[arg(long, default_value_t = 0.0)]
    pub fault_after_write_rate: f64,

    /// FHIR operations per quota window before answering 429 RESOURCE_EXHAUSTED, as Google's
    /// quota does: each entry of a batch or transaction bundle is one operation, any other
    /// request one (0 = unlimited).
    #[arg(long, default_value_t = 0, value_name = "N")]
    pub quota_ops: u32,

    /// Length of a quota window in seconds (fractions allowed).
    #[arg(long, default_value = "60", value_name = "SECS", value_parser = parse_seconds)]
    pub quota_window: std::time::Duration,

    /// Shorthand for --quota-ops N --quota-window 60.
    #[arg(long, default_value_t = 0, value_name = "N", conflicts_with_all = ["quota_ops", "quota_window"])]
    pub quota_rpm: u32,

    /// Add a Retry-After header (seconds until the window resets) to quota refusals. Google
    /// sends none.
    #[arg(long)]
    pub quota_retry_after: bool,

    /// Require this bearer token on every request.
    #[arg(long, env = "FHIRGEN_EMULATOR_TOKEN", hide_env_values = true)]
    pub require_token: Option<SecretString>,

    /// Accept references to resources that do not exist.
    #[arg(long)]
    pub disable_referential_integrity: bool,

    /// Let PUT create a resource at an id that does not exist (Google's enableUpdateCreate,
    /// off on a new store).
    #[arg(long)]
    pub enable_update_create: bool,

    /// Seed for fault injection, so fault tests are reproducible.
    #[arg(long, default_value_t = 0)]
    pub fault_seed: u64,

    /// Benchmark sink: answer every write as created (after --latency-ms) without storing or
    /// validating it, so that a load test measures the client, not this store.
    #[arg(long)]
    pub sink: bool,

    /// Cloud Storage: the Nth upload chunk (counted from 1 over all uploads) keeps only its
    /// first 256 KiB, as if the rest were lost on the way (0 = never).
    #[arg(long, default_value_t = 0, value_name = "N")]
    pub storage_partial_chunk: u64,

    /// Cloud Storage: the Nth upload chunk is answered 503 and nothing of it is kept.
    #[arg(long, default_value_t = 0, value_name = "N")]
    pub storage_unavailable_chunk: u64,

    /// Cloud Storage: the Nth upload chunk finds its session expired (404).
    #[arg(long, default_value_t = 0, value_name = "N")]
    pub storage_expire_session: u64,
}

/// Parses a positive number of seconds, fractions allowed: `60`, `0.5`.
fn parse_seconds(s: &str) -> Result<std::time::Duration, String> {
    s.trim()
        .parse::<f64>()
        .ok()
        .filter(|secs| *secs > 0.0)
        .and_then(|secs| std::time::Duration::try_from_secs_f64(secs).ok())
        .ok_or_else(|| format!("`{s}` is not a positive number of seconds"))
}

/// `fhirgen completions SHELL`: the script goes to stdout, to be saved where the shell looks.
pub fn print_completions(shell: clap_complete::Shell) -> anyhow::Result<ExitCode> {
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut Cli::command(), "fhirgen", &mut script);
    write_stdout(&script)
}

/// `fhirgen man`: the man page, generated from the same definitions as `--help`: the
/// top-level page, then a section per command with its options.
pub fn print_man_page() -> anyhow::Result<ExitCode> {
    let mut page = Vec::new();
    let mut command = Cli::command().disable_help_subcommand(true);
    command.build();
    clap_mangen::Man::new(command.clone()).render(&mut page)?;
    for sub in command.get_subcommands().filter(|s| !s.is_hide_set()) {
        let heading = format!("fhirgen {}", sub.get_name());
        let sub = sub
            .clone()
            .mut_args(|arg| arg.help_heading(heading.clone()));
        clap_mangen::Man::new(sub).render_options_section(&mut page)?;
    }
    write_stdout(&page)
}

fn write_stdout(bytes: &[u8]) -> anyhow::Result<ExitCode> {
    let mut stdout = std::io::stdout().lock();
    stdout.write_all(bytes)?;
    stdout.flush()?;
    Ok(crate::exit::SUCCESS.into())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SeedArg {
    Fixed(u64),
    Random,
}

fn parse_seed(s: &str) -> Result<SeedArg, String> {
    if s.eq_ignore_ascii_case("random") {
        return Ok(SeedArg::Random);
    }
    s.parse()
        .map(SeedArg::Fixed)
        .map_err(|_| format!("`{s}` is not a seed: use a non-negative integer or `random`"))
}

/// A duration as `90s`, `10m`, `1h30m` or `250ms`; a bare number is seconds.
fn parse_duration(raw: &str) -> Result<std::time::Duration, String> {
    let raw = raw.trim();
    if let Ok(seconds) = raw.parse::<f64>() {
        return std::time::Duration::try_from_secs_f64(seconds)
            .map_err(|_| format!("`{raw}` is not a duration: expected e.g. 90s, 10m or 250ms"));
    }
    humantime::parse_duration(raw)
        .map_err(|e| format!("`{raw}` is not a duration ({e}): expected e.g. 90s, 10m or 250ms"))
}

/// An upload chunk size: bytes, or KiB/MiB, a positive multiple of 256 KiB as Cloud Storage
/// requires of every chunk but the last.
fn parse_chunk_size(raw: &str) -> Result<usize, String> {
    let clean = raw.trim().to_ascii_lowercase();
    let (number, factor) = if let Some(n) = clean.strip_suffix("mib") {
        (n, 1 << 20)
    } else if let Some(n) = clean.strip_suffix("kib") {
        (n, 1 << 10)
    } else {
        (clean.as_str(), 1)
    };
    number
        .trim()
        .parse::<usize>()
        .ok()
        .and_then(|n| n.checked_mul(factor))
        .filter(|&size| size > 0 && size % (256 << 10) == 0)
        .ok_or_else(|| {
            format!("`{raw}` is not an upload chunk size: use a multiple of 256KiB, such as 8MiB")
        })
}

/// An empty token would go out as `Bearer ` and fail at the store, after the run started.
fn parse_access_token(s: &str) -> Result<SecretString, String> {
    if s.trim().is_empty() {
        return Err("the access token is empty: pass a token, e.g. \
             --access-token \"$(gcloud auth print-access-token)\", or leave the flag out to use \
             Application Default Credentials"
            .to_owned());
    }
    Ok(SecretString::new(s))
}

/// Parses `1000`, `10k`, `2.5m`, `1_000_000`.
pub fn parse_count(s: &str) -> Result<u64, String> {
    let clean = s.trim().replace('_', "").to_ascii_lowercase();
    let (number, factor) = match clean.chars().last() {
        Some('k') => (&clean[..clean.len() - 1], 1_000.0),
        Some('m') => (&clean[..clean.len() - 1], 1_000_000.0),
        Some('g') | Some('b') => (&clean[..clean.len() - 1], 1_000_000_000.0),
        _ => (clean.as_str(), 1.0),
    };
    if factor == 1.0 {
        return number.parse().map_err(|_| not_a_count(s));
    }
    match number.parse::<f64>() {
        Ok(n) if n >= 0.0 && (n * factor).fract() == 0.0 => Ok((n * factor) as u64),
        _ => Err(not_a_count(s)),
    }
}

fn not_a_count(s: &str) -> String {
    format!(
        "`{s}` is not a count: a count must be a non-negative whole number, e.g. 1000, 10k or 1m"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upload_chunk_sizes_are_whole_256_kib_units() {
        assert_eq!(parse_chunk_size("8MiB"), Ok(8 << 20));
        assert_eq!(parse_chunk_size("256kib"), Ok(256 << 10));
        assert_eq!(parse_chunk_size("524288"), Ok(512 << 10));
        for bad in ["0", "1000", "300KiB", "8MB", "-1", "lots"] {
            assert!(parse_chunk_size(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn counts_accept_suffixes() {
        assert_eq!(parse_count("1000"), Ok(1000));
        assert_eq!(parse_count("10k"), Ok(10_000));
        assert_eq!(parse_count("2.5m"), Ok(2_500_000));
        assert_eq!(parse_count("1_000_000"), Ok(1_000_000));
        assert!(parse_count("ten").is_err());
        assert!(parse_count("1.5").is_err());
    }

    #[test]
    fn seeds() {
        assert_eq!(parse_seed("42"), Ok(SeedArg::Fixed(42)));
        assert_eq!(parse_seed("random"), Ok(SeedArg::Random));
        assert!(parse_seed("-1").is_err());
    }

    #[test]
    fn load_needs_exactly_one_target() {
        assert!(Cli::try_parse_from(["fhirgen", "load"]).is_err());
        assert!(
            Cli::try_parse_from(["fhirgen", "load", "--emulator", "--fhir-url", "http://x"])
                .is_err()
        );
        let cli = Cli::try_parse_from(["fhirgen", "load", "--emulator", "--count", "5k"]).unwrap();
        let Command::Load(load) = cli.command else {
            panic!("expected load")
        };
        assert!(load.target.emulator);
        assert_eq!(load.data.count, 5000);
        assert_eq!(load.mode, LoadMode::Transaction);
    }

    #[test]
    fn wait_for_shards_goes_with_via() {
        let load = |args: &[&str]| {
            let cli = Cli::try_parse_from(["fhirgen", "load", "--emulator"].iter().chain(args))?;
            let Command::Load(load) = cli.command else {
                panic!("expected load")
            };
            Ok::<_, clap::Error>(load)
        };
        let via = ["--via", "gs://b-1/p", "--shard", "auto/3"];
        assert_eq!(
            load(&via).unwrap().wait_for_shards,
            std::time::Duration::from_secs(3600)
        );
        let waited = load(&[&via[..], &["--wait-for-shards", "30m"]].concat()).unwrap();
        assert_eq!(waited.wait_for_shards, std::time::Duration::from_secs(1800));
        assert!(load(&["--wait-for-shards", "30m"]).is_err());
        assert!(load(&[&via[..], &["--wait-for-shards", "soon"]].concat()).is_err());
    }

    #[test]
    fn types_are_a_comma_separated_list() {
        let cli = Cli::try_parse_from([
            "fhirgen",
            "generate",
            "--types",
            "Observation,Patient",
            "--types",
            "Immunization",
        ])
        .unwrap();
        let Command::Generate(generate) = cli.command else {
            panic!("expected generate")
        };
        assert_eq!(
            generate.data.types,
            ["Observation", "Patient", "Immunization"]
        );
        let cli = Cli::try_parse_from(["fhirgen", "load", "--emulator"]).unwrap();
        let Command::Load(load) = cli.command else {
            panic!("expected load")
        };
        assert!(load.data.types.is_empty());
    }

    #[test]
    fn input_conflicts_with_what_shapes_generated_data() {
        let flags = [
            ["--count", "5"],
            ["--seed", "2"],
            ["--as-of", "2024-01-01"],
            ["--types", "Patient"],
        ];
        for [flag, value] in flags {
            let args = ["fhirgen", "load", "--emulator", "--input", "-", flag, value];
            assert!(Cli::try_parse_from(args).is_err(), "{flag}");
        }
        assert!(Cli::try_parse_from(["fhirgen", "load", "--emulator", "--input", "-"]).is_ok());
    }

    #[test]
    fn negative_counts_are_refused_as_counts_not_as_flags() {
        for count in ["-5", "-1k"] {
            let error = Cli::try_parse_from(["fhirgen", "generate", "--count", count]).unwrap_err();
            assert_eq!(error.kind(), clap::error::ErrorKind::ValueValidation);
            assert!(error.to_string().contains("non-negative"), "{error}");
        }
        let error = Cli::try_parse_from(["fhirgen", "generate", "--seed", "-1"]).unwrap_err();
        assert!(error.to_string().contains("non-negative"), "{error}");
    }

    #[test]
    fn an_empty_access_token_is_refused() {
        for token in ["", "  "] {
            let args = ["fhirgen", "load", "--emulator", "--access-token", token];
            let error = Cli::try_parse_from(args).unwrap_err();
            assert_eq!(error.kind(), clap::error::ErrorKind::ValueValidation);
            assert!(
                error.to_string().contains("access token is empty"),
                "{error}"
            );
        }
        let args = ["fhirgen", "load", "--emulator", "--access-token", "ya29.x"];
        let cli = Cli::try_parse_from(args).unwrap();
        let Command::Load(load) = cli.command else {
            panic!("expected load")
        };
        assert_eq!(load.connection.access_token.unwrap().expose(), "ya29.x");
    }

    #[test]
    fn help_never_shows_an_environment_value() {
        fn check(command: &clap::Command) {
            for arg in command.get_arguments() {
                if let Some(env) = arg.get_env() {
                    assert!(
                        arg.is_hide_env_values_set(),
                        "{} {env:?} would show its value in help",
                        command.get_name()
                    );
                }
            }
            command.get_subcommands().for_each(check);
        }
        check(&Cli::command());
    }

    #[test]
    fn help_answers_for_itself_and_every_subcommand() {
        let error = Cli::try_parse_from(["fhirgen", "help", "--help"]).unwrap_err();
        assert_eq!(error.kind(), clap::error::ErrorKind::DisplayHelp);
        let help = |names: &[&str]| {
            let command = names.iter().map(|n| n.to_string()).collect();
            HelpArgs { command }.help_text()
        };
        let load = help(&["load"]).unwrap();
        assert!(load.contains("Usage: fhirgen load"), "{load}");
        assert!(load.contains("--fhir-url"), "{load}");
        assert!(help(&[]).unwrap().contains("Usage: fhirgen"));
        assert!(help(&["help"]).unwrap().contains("Usage: fhirgen help"));
        let error = help(&["lod"]).unwrap_err().to_string();
        assert!(error.contains("no subcommand `lod`"), "{error}");
    }
}
