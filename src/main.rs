//! The `metrics-server` binary: parses flags, sets up logging, runs the server.
//!
//! `anyhow` lives here only, to print the chain of causes of a fatal error.

use std::process::ExitCode;

use anyhow::Context as _;
use metrics_server::app;
use metrics_server::config::{Config, ParseError};
use tracing_subscriber::EnvFilter;

/// mimalloc instead of the C library's allocator: each scrape allocates and frees per-connection
/// buffers on several threads, and glibc's per-thread arenas kept that memory (fragmented) long
/// after it was freed, so resident memory at 10,000 nodes was about twice the live heap.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let config = match Config::try_parse_args(std::env::args_os()) {
        Ok(config) => config,
        Err(ParseError::Flags(error)) => {
            // `--help` and `--version` arrive here too, and exit 0.
            let _ = error.print();
            return ExitCode::from(u8::try_from(error.exit_code()).unwrap_or(2));
        }
        Err(ParseError::Invalid(error)) => {
            eprintln!("error: {error}");
            return ExitCode::from(2);
        }
    };

    // RUST_LOG, when set, overrides `-v`.
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new(config.log_level().as_str().to_ascii_lowercase()));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();

    match app::raise_open_file_limit() {
        Ok(limit) => tracing::info!(limit, "Open-file limit raised to the hard limit."),
        Err(error) => tracing::warn!(%error, "Cannot raise the open-file limit."),
    }
    tracing::info!(
        version = env!("CARGO_PKG_VERSION"),
        resolution = ?config.metric_resolution,
        "Starting metrics-server."
    );

    match app::run(config).context("metrics-server stopped") {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(error = format!("{error:#}"), "Fatal error.");
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}
