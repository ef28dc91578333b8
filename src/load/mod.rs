//! Loading. (Being written.)
use std::process::ExitCode;

use crate::cli::LoadArgs;

pub async fn run(args: LoadArgs) -> anyhow::Result<ExitCode> {
    let _ = args;
    todo!()
}
