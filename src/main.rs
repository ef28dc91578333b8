use std::process::ExitCode;

use clap::Parser;

// Generating and loading build and drop millions of small JSON values: jemalloc spends about a
// third less CPU on them than glibc's malloc, at about the same peak memory (bench/run.sh).
#[cfg(not(target_env = "msvc"))]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> ExitCode {
    let cli = fhirgen::cli::Cli::parse();
    fhirgen::logs::init(cli.verbose);
    let runtime = match fhirgen::runtime::build(&cli) {
        Ok(runtime) => runtime,
        Err(error) => return fhirgen::exit::report_error(&error),
    };
    let code = match runtime.block_on(fhirgen::run(cli)) {
        Ok(code) => code,
        Err(error) => fhirgen::exit::report_error(&error),
    };
    // A reader blocked on a stdin nobody closes must not keep a finished run alive.
    runtime.shutdown_background();
    code
}
