//! fhirgen: generate realistic synthetic FHIR R4 data and load it into a FHIR store.
//!
//! Data flows generate (or read) -> dispatch -> (bounded channel) -> load workers -> store client
//! (adaptive limiter, retries, credentials) -> stats -> report; `verify` reads a store back.

pub mod cli;
pub mod config;
pub mod emulator;
pub mod exit;
pub mod failed;
pub mod fhir;
pub mod generate;
pub mod load;
pub mod logs;
pub mod runtime;
pub mod secret;
pub mod shutdown;
pub mod source;
pub mod store;
pub mod verify;

use std::process::ExitCode;

use cli::{Cli, Command};

pub async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Generate(args) => generate::run(args).await,
        Command::Load(args) => load::run(config::LoadConfig::from_args(*args)?).await,
        Command::Serve(args) => emulator::serve(args).await,
        Command::Verify(args) => verify::run(config::VerifyConfig::from_args(*args)?).await,
        Command::Completions(args) => cli::print_completions(args.shell),
        Command::Man => cli::print_man_page(),
        Command::Help(args) => args.print(),
    }
}
