//! Command-line surface. Doc comments are the help text.
//!
//! House rules: every flag a user can set in CI also has an environment variable only when it
//! names a target or a credential; numeric flags accept `10k`/`1m` suffixes where counts are large.

use std::path::PathBuf;

use chrono::NaiveDate;
use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::secret::SecretString;

#[derive(Debug, Parser)]
#[command(
    name = "fhirgen",
    version,
    about = "Generate realistic synthetic FHIR R4 data and load it into a FHIR store, fast, losing nothing.",
    propagate_version = true
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Write synthetic FHIR R4 resources to stdout or a file.
    Generate(GenerateArgs),
    /// Generate (or read) resources and load them into a FHIR store.
    Load(Box<LoadArgs>),
    /// Run the built-in Healthcare-API-shaped FHIR store (in memory).
    Serve(ServeArgs),
}

/// What to generate: shared by `generate` and `load`.
#[derive(Debug, Args, Clone)]
pub struct DataArgs {
    /// Number of resources, exactly (all types together). Accepts 10k, 1m.
    #[arg(long, default_value = "1000", value_parser = parse_count)]
    pub count: u64,

    /// RNG seed: a number, or `random` to pick one (it is printed in the summary).
    #[arg(long, default_value = "1", value_parser = parse_seed)]
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
}

#[derive(Debug, Args)]
pub struct GenerateArgs {
    #[command(flatten)]
    pub data: DataArgs,

    /// Output format: one resource per line, or one transaction Bundle per line.
    #[arg(long, value_enum, default_value_t = OutputFormat::Ndjson)]
    pub format: OutputFormat,

    /// Write here instead of stdout.
    #[arg(long, short = 'o', value_name = "PATH")]
    pub output: Option<PathBuf>,
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
    #[arg(long, env = "FHIRGEN_STORE", value_name = "STORE")]
    pub store: Option<String>,

    /// Any FHIR R4 base URL.
    #[arg(long, env = "FHIRGEN_FHIR_URL", value_name = "URL")]
    pub fhir_url: Option<String>,

    /// Start the built-in emulator on a free loopback port and load into it.
    #[arg(long)]
    pub emulator: bool,
}

#[derive(Debug, Args)]
pub struct LoadArgs {
    #[command(flatten)]
    pub target: TargetArgs,

    /// Healthcare API endpoint used with --store.
    #[arg(
        long,
        env = "FHIRGEN_ENDPOINT",
        default_value = "https://healthcare.googleapis.com/v1",
        value_name = "URL"
    )]
    pub endpoint: String,

    /// Bearer token to use instead of Application Default Credentials.
    #[arg(
        long,
        env = "FHIRGEN_ACCESS_TOKEN",
        value_name = "TOKEN",
        hide_env_values = true
    )]
    pub access_token: Option<SecretString>,

    /// Project billed for the store's requests, sent as `x-goog-user-project` (user
    /// credentials need one). Default: the ADC file's `quota_project_id`.
    #[arg(long, env = "GOOGLE_CLOUD_QUOTA_PROJECT", value_name = "PROJECT")]
    pub quota_project: Option<String>,

    /// Send this service account's tokens, obtained with the credential found (it needs
    /// roles/iam.serviceAccountTokenCreator on the account).
    #[arg(
        long,
        env = "FHIRGEN_IMPERSONATE_SERVICE_ACCOUNT",
        value_name = "EMAIL"
    )]
    pub impersonate_service_account: Option<String>,

    /// IAM Credentials API endpoint for impersonation (a stand-in, for tests).
    #[arg(
        long,
        hide = true,
        env = "FHIRGEN_IAM_CREDENTIALS_ENDPOINT",
        default_value = crate::load::auth::IAM_CREDENTIALS_ENDPOINT
    )]
    pub iam_credentials_endpoint: String,

    /// Also trust the CA certificates in this PEM file (a corporate proxy's, a private
    /// store's), besides the system's.
    #[arg(long, env = "FHIRGEN_CA_FILE", value_name = "PATH")]
    pub ca_file: Option<PathBuf>,

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

    /// Cap on requests per second across all workers (0 = no cap).
    #[arg(long, default_value_t = 0.0)]
    pub rate: f64,

    /// Retries per request for transient failures (429, 5xx, timeouts, connection errors).
    #[arg(long, default_value_t = 8)]
    pub max_retries: u32,

    /// Per-request timeout in seconds.
    #[arg(long, default_value_t = 60.0, value_name = "SECS")]
    pub timeout: f64,

    /// HTTP version: `auto` negotiates HTTP/2 over https where the store offers it (all
    /// workers share one connection); `1` keeps a pool of HTTP/1.1 connections, one per
    /// worker; `2` speaks HTTP/2 only, also over plain http.
    #[arg(long, value_enum, default_value_t = HttpVersion::Auto)]
    pub http: HttpVersion,

    /// Write every resource that could not be stored here, as NDJSON with the reason.
    #[arg(long, value_name = "PATH")]
    pub failed: Option<PathBuf>,

    /// Print the final summary as one JSON object on stdout.
    #[arg(long)]
    pub json: bool,

    /// No progress bar and no text summary.
    #[arg(long, short = 'q')]
    pub quiet: bool,
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

    /// Requests per minute before answering 429 RESOURCE_EXHAUSTED (0 = unlimited).
    #[arg(long, default_value_t = 0)]
    pub quota_rpm: u32,

    /// Require this bearer token on every request.
    #[arg(long, env = "FHIRGEN_EMULATOR_TOKEN", hide_env_values = true)]
    pub require_token: Option<SecretString>,

    /// Accept references to resources that do not exist.
    #[arg(long)]
    pub disable_referential_integrity: bool,

    /// Refuse PUT to an id that does not exist (Google's enableUpdateCreate=false).
    #[arg(long)]
    pub disable_update_create: bool,

    /// Seed for fault injection, so fault tests are reproducible.
    #[arg(long, default_value_t = 0)]
    pub fault_seed: u64,

    /// Benchmark sink: answer every write as created (after --latency-ms) without storing or
    /// validating it, so that a load test measures the client, not this store.
    #[arg(long)]
    pub sink: bool,
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
        return number
            .parse()
            .map_err(|_| format!("`{s}` is not a count: use e.g. 1000, 10k or 1m"));
    }
    match number.parse::<f64>() {
        Ok(n) if n >= 0.0 && (n * factor).fract() == 0.0 => Ok((n * factor) as u64),
        _ => Err(format!("`{s}` is not a count: use e.g. 1000, 10k or 1m")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
