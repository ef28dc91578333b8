//! The built-in Healthcare-API-shaped FHIR store. (Being written.)

use std::process::ExitCode;

use crate::cli::ServeArgs;

pub async fn serve(args: ServeArgs) -> anyhow::Result<ExitCode> {
    let _ = args;
    todo!()
}
