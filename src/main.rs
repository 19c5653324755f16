//! The `substrate` binary: parses the command line and runs it.

use clap::Parser;

/// mimalloc instead of glibc malloc: a request allocates and frees many small objects on
/// several threads, and glibc's malloc was ~18% of the gateway's CPU samples. Measured on a
/// quiet machine in one run (bench/RESULTS.md): 13–20% less CPU per single event.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = substrate::cli::Cli::parse();
    match substrate::cli::run(cli).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
