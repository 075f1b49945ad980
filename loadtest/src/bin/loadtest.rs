//! `loadtest`: runs a load-test case (a TOML file under `loadtest/cases/`) against the metrics
//! server binary and a simulated kubelet fleet, and writes a report directory.
//!
//! Exit status: 0 when every budget passed, 1 when one failed, 2 when the run could not be done.

use std::path::PathBuf;

use anyhow::Context as _;
use clap::{Parser, Subcommand};

use kubelet_fleet::harness::case::Case;
use kubelet_fleet::harness::runner::{self, RunOptions};

/// mimalloc, as the server uses: the load generator allocates per request and per frame, and
/// glibc's allocator took ~8 % of its CPU on the HPA stream, CPU the server's two cores share.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser, Debug)]
#[command(name = "loadtest", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run a case and write its report.
    Run {
        /// The case file, e.g. loadtest/cases/smoke.toml.
        #[arg(long)]
        case: PathBuf,
        /// The report directory, e.g. loadtest/reports/smoke.
        #[arg(long)]
        out: PathBuf,
        /// The metrics server binary.
        #[arg(long, default_value = "target/release/metrics-server")]
        server_bin: PathBuf,
        /// Run without a server: this process scrapes the kubelets and the API load goes to one
        /// kubelet (measures the fleet and the harness).
        #[arg(long)]
        no_server: bool,
        /// No progress bar.
        #[arg(long)]
        quiet: bool,
    },
    /// Run the fleet of a case until stdin closes (started by `run` as a child process).
    #[command(hide = true)]
    Fleet {
        #[arg(long)]
        case: PathBuf,
        #[arg(long)]
        state_dir: PathBuf,
        /// Where the API stand-in forwards metrics.k8s.io (the server), https://HOST:PORT.
        #[arg(long)]
        aggregate_to: Option<String>,
    },
}

#[tokio::main]
async fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let code = match Cli::parse().command {
        Command::Run {
            case,
            out,
            server_bin,
            no_server,
            quiet,
        } => match run(case, out, (!no_server).then_some(server_bin), !quiet).await {
            Ok(true) => 0,
            Ok(false) => 1,
            Err(error) => {
                eprintln!("loadtest: {error:#}");
                2
            }
        },
        Command::Fleet {
            case,
            state_dir,
            aggregate_to,
        } => match Case::load(&case).map_err(anyhow::Error::from) {
            Ok(case) => match runner::serve_fleet(&case, &state_dir, aggregate_to).await {
                Ok(()) => 0,
                Err(error) => {
                    eprintln!("loadtest fleet: {error}");
                    2
                }
            },
            Err(error) => {
                eprintln!("loadtest fleet: {error:#}");
                2
            }
        },
    };
    std::process::exit(code);
}

async fn run(
    case_path: PathBuf,
    out: PathBuf,
    server_bin: Option<PathBuf>,
    progress: bool,
) -> anyhow::Result<bool> {
    let case_text = std::fs::read_to_string(&case_path)
        .with_context(|| format!("reading {}", case_path.display()))?;
    let case = Case::load(&case_path)?;
    if let Some(bin) = &server_bin {
        anyhow::ensure!(
            bin.exists(),
            "{} does not exist: build it (cargo build --release --workspace) or pass --server-bin, or --no-server",
            bin.display()
        );
    }
    let fleet_exe = std::env::current_exe().context("locating this binary")?;
    let outcome = runner::run(RunOptions {
        case,
        case_text,
        out,
        fleet_exe,
        server_bin,
        progress,
    })
    .await?;
    println!("{}", outcome.summary);
    println!("report: {}", outcome.out.display());
    Ok(outcome.passed)
}
