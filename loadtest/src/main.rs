//! `kubelet-fleet`: runs a simulated cluster (kubelets and the API stand-in) until
//! SIGINT or SIGTERM, printing a line beginning with `ready` once everything listens.

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use tokio_util::sync::CancellationToken;

use kubelet_fleet::apiserver;
use kubelet_fleet::churn::{self, ChurnRates};
use kubelet_fleet::fleet::{raise_open_file_limit, Fleet, FleetHandle};
use kubelet_fleet::kubelet::fault::{FaultKind, FaultParams};
use kubelet_fleet::scrape_all::{self, ScrapeConfig};

/// A simulated Kubernetes cluster: N kubelets serving /metrics/resource over TLS.
#[derive(Parser, Debug)]
#[command(
    name = "kubelet-fleet",
    version,
    args_conflicts_with_subcommands = true,
    subcommand_negates_reqs = true
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    run: Args,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Scrape every kubelet of a running fleet over persistent HTTP/2 connections and report the
    /// fleet's CPU and memory.
    ScrapeAll(ScrapeArgs),
    /// The embedded default: a simulated cluster, the metrics server on it, and a live view of
    /// what it serves.
    Demo(DemoArgs),
}

#[derive(clap::Args, Debug)]
struct DemoArgs {
    /// Simulated nodes.
    #[arg(long, default_value_t = 300)]
    nodes: u64,
    /// Pods per node.
    #[arg(long, default_value_t = 30)]
    pods_per_node: u64,
    /// Where certificates and kubeconfigs are written (default: a folder in the temp dir).
    #[arg(long)]
    state_dir: Option<PathBuf>,
    /// The metrics server's --metric-resolution.
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    resolution: Duration,
    /// The metrics server's --secure-port (0: any free port).
    #[arg(long, default_value_t = 0)]
    port: u16,
    /// How many of the busiest nodes the live view lists.
    #[arg(long, default_value_t = 10)]
    top: usize,
}

#[derive(clap::Args, Debug)]
struct ScrapeArgs {
    /// The running fleet's state directory.
    #[arg(long)]
    state_dir: PathBuf,
    /// Each node is scraped once per interval, start times spread evenly.
    #[arg(long, default_value = "15s", value_parser = parse_duration)]
    interval: Duration,
    /// How long to run.
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    duration: Duration,
    /// Per-request timeout.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    timeout: Duration,
    /// The fleet's process id (default: read from the state directory).
    #[arg(long)]
    fleet_pid: Option<u32>,
}

/// Running the fleet.
#[derive(clap::Args, Debug)]
struct Args {
    /// Number of simulated nodes.
    #[arg(long, default_value_t = 100)]
    nodes: u64,
    /// Pods per node.
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u64).range(0..=110))]
    pods_per_node: u64,
    /// Where CA, client credentials and token (and kubeconfigs) are written.
    #[arg(long, required = true)]
    state_dir: Option<PathBuf>,
    /// Kubelet port (0: a free one).
    #[arg(long, default_value_t = 10250)]
    port: u16,
    /// Seed for names, profiles and fault selection.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Put every node on 127.0.0.1 with its own port (port + index) instead of one address each.
    #[arg(long)]
    single_address: bool,
    /// Address of the shared listener.
    #[arg(long, default_value = "0.0.0.0")]
    bind: IpAddr,
    /// Accept unauthenticated scrapes (a real kubelet answers them with 401).
    #[arg(long)]
    anonymous: bool,
    /// Bearer token the kubelets accept (default: drawn at start, written to STATE_DIR/kubelet-token).
    #[arg(long)]
    token: Option<String>,
    /// Spacing of each container's sampling grid (cAdvisor housekeeping), e.g. 10s; 0 samples at
    /// request time.
    #[arg(long, default_value = "0s", value_parser = parse_duration)]
    sample_period: Duration,
    /// Close connections idle this long, like the kubelet (0: never).
    #[arg(long, default_value = "90s", value_parser = parse_duration)]
    idle_timeout: Duration,
    /// Where the API stand-in forwards metrics.k8s.io (the metrics server), https://HOST:PORT.
    #[arg(long)]
    aggregate_to: Option<String>,
    /// Run the kubelets alone, without the API stand-in (a real kube-apiserver holds the nodes and
    /// pods), and write STATE_DIR/kubelet-cluster.json naming every node's address and pods so that
    /// they can be created there. Churn is refused: nothing would mirror it.
    #[arg(long)]
    kubelets_only: bool,
    /// Address of the API stand-in.
    #[arg(long, default_value = "127.0.0.1")]
    api_address: IpAddr,
    /// Port of the API stand-in (0: any free port; the kubeconfigs name the one chosen).
    #[arg(long, default_value_t = 0)]
    api_port: u16,

    /// Fraction of nodes answering slowly (see --slow-delay).
    #[arg(long, default_value_t = 0.0)]
    fault_slow: f64,
    /// Fraction of nodes that never answer.
    #[arg(long, default_value_t = 0.0)]
    fault_hang: f64,
    /// Fraction of nodes resetting the connection mid-body.
    #[arg(long, default_value_t = 0.0)]
    fault_reset: f64,
    /// Fraction of nodes answering 500.
    #[arg(long, default_value_t = 0.0)]
    fault_500: f64,
    /// Fraction of nodes answering 401 whatever the credentials.
    #[arg(long, default_value_t = 0.0)]
    fault_401: f64,
    /// Fraction of nodes answering garbage bytes.
    #[arg(long, default_value_t = 0.0)]
    fault_garbage: f64,
    /// Fraction of nodes answering truncated bodies.
    #[arg(long, default_value_t = 0.0)]
    fault_truncated: f64,
    /// Fraction of nodes answering multi-megabyte bodies (see --huge-bytes).
    #[arg(long, default_value_t = 0.0)]
    fault_huge: f64,
    /// Fraction of nodes whose samples are stale (see --skew).
    #[arg(long, default_value_t = 0.0)]
    fault_stale: f64,
    /// Fraction of nodes whose samples are from the future (see --skew).
    #[arg(long, default_value_t = 0.0)]
    fault_future: f64,
    /// Fraction of nodes whose certificate names another IP.
    #[arg(long, default_value_t = 0.0)]
    fault_wrong_san: f64,
    /// Fraction of nodes whose certificate comes from an untrusted CA.
    #[arg(long, default_value_t = 0.0)]
    fault_wrong_ca: f64,
    /// Delay of slow nodes.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    slow_delay: Duration,
    /// Extra bytes in multi-megabyte bodies.
    #[arg(long, default_value_t = 8 << 20)]
    huge_bytes: usize,
    /// How far stale or future samples are off.
    #[arg(long, default_value = "10m", value_parser = parse_duration)]
    skew: Duration,

    /// Pods created per second.
    #[arg(long, default_value_t = 0.0)]
    churn_pod_create: f64,
    /// Pods deleted per second.
    #[arg(long, default_value_t = 0.0)]
    churn_pod_delete: f64,
    /// Containers restarted per second.
    #[arg(long, default_value_t = 0.0)]
    churn_restart: f64,
    /// Nodes added per second.
    #[arg(long, default_value_t = 0.0)]
    churn_node_add: f64,
    /// Nodes removed per second.
    #[arg(long, default_value_t = 0.0)]
    churn_node_remove: f64,
    /// How often churn is applied.
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    churn_tick: Duration,
}

/// Parses `500ms`, `15s`, `2m`, `1h` (a bare number is seconds).
fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (number, unit) = s.split_at(split);
    let value: f64 = number
        .parse()
        .map_err(|_| format!("{s:?} is not a duration like 15s"))?;
    let seconds = match unit {
        "ms" => value / 1000.0,
        "" | "s" => value,
        "m" => value * 60.0,
        "h" => value * 3600.0,
        _ => return Err(format!("{s:?}: unknown unit {unit:?} (ms, s, m, h)")),
    };
    Duration::try_from_secs_f64(seconds).map_err(|e| format!("{s:?}: {e}"))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    match cli.command {
        Some(Command::ScrapeAll(scrape)) => scrape_all_command(scrape).await,
        Some(Command::Demo(demo)) => {
            if let Err(error) = raise_open_file_limit() {
                tracing::warn!(%error, "Could not raise the open-file limit.");
            }
            kubelet_fleet::demo::run(kubelet_fleet::demo::DemoConfig {
                nodes: demo.nodes,
                pods_per_node: demo.pods_per_node,
                state_dir: demo
                    .state_dir
                    .unwrap_or_else(|| std::env::temp_dir().join("metrics-server-demo")),
                resolution: demo.resolution,
                server_port: demo.port,
                top: demo.top,
            })
            .await
        }
        None => run(cli.run).await,
    }
}

async fn scrape_all_command(args: ScrapeArgs) -> anyhow::Result<()> {
    if let Err(error) = raise_open_file_limit() {
        tracing::warn!(%error, "Could not raise the open-file limit.");
    }
    let summary = scrape_all::run(ScrapeConfig {
        state_dir: args.state_dir,
        interval: args.interval,
        duration: args.duration,
        timeout: args.timeout,
        fleet_pid: args.fleet_pid,
    })
    .await
    .context("scraping the fleet")?;
    println!("{summary}");
    Ok(())
}

async fn run(args: Args) -> anyhow::Result<()> {
    let Some(state_dir) = args.state_dir.clone() else {
        anyhow::bail!("--state-dir is required");
    };
    let rates = ChurnRates {
        pod_create: args.churn_pod_create,
        pod_delete: args.churn_pod_delete,
        container_restart: args.churn_restart,
        node_add: args.churn_node_add,
        node_remove: args.churn_node_remove,
    };
    if args.kubelets_only && !rates.is_idle() {
        anyhow::bail!("--kubelets-only takes no churn: no API server would learn of the changes");
    }
    let started = Instant::now();
    match raise_open_file_limit() {
        Ok(limit) => tracing::info!(limit, "Open-file limit raised."),
        Err(error) => tracing::warn!(%error, "Could not raise the open-file limit."),
    }

    let mut builder = Fleet::builder()
        .nodes(args.nodes)
        .pods_per_node(args.pods_per_node)
        .seed(args.seed)
        .port(args.port)
        .single_address(args.single_address)
        .bind(args.bind)
        .auth_required(!args.anonymous)
        .sample_period(args.sample_period)
        .idle_timeout((!args.idle_timeout.is_zero()).then_some(args.idle_timeout))
        .fault_params(FaultParams {
            slow_delay: args.slow_delay,
            huge_bytes: args.huge_bytes,
            skew_ms: args.skew.as_millis() as i64,
        });
    if let Some(token) = &args.token {
        builder = builder.token(token.clone());
    }
    for (kind, fraction) in [
        (FaultKind::Slow, args.fault_slow),
        (FaultKind::Hang, args.fault_hang),
        (FaultKind::Reset, args.fault_reset),
        (FaultKind::ServerError, args.fault_500),
        (FaultKind::Unauthorized, args.fault_401),
        (FaultKind::Garbage, args.fault_garbage),
        (FaultKind::Truncated, args.fault_truncated),
        (FaultKind::Huge, args.fault_huge),
        (FaultKind::Stale, args.fault_stale),
        (FaultKind::Future, args.fault_future),
        (FaultKind::WrongSan, args.fault_wrong_san),
        (FaultKind::WrongCa, args.fault_wrong_ca),
    ] {
        builder = builder.fault(kind, fraction).context("fault fractions")?;
    }
    let fleet = builder
        .start(&state_dir)
        .await
        .context("starting the kubelet fleet")?;

    // === API stand-in ===
    let api = if args.kubelets_only {
        write_cluster_file(&fleet, &state_dir).context("writing the cluster description")?;
        None
    } else {
        let mut api_config = apiserver::ApiServerConfig::new(&state_dir);
        api_config.bind = std::net::SocketAddr::new(args.api_address, args.api_port);
        api_config.aggregate_to = args.aggregate_to.clone();
        Some(
            apiserver::start(api_config, fleet.cluster())
                .await
                .context("starting the API stand-in")?,
        )
    };

    let stop = CancellationToken::new();
    let churn_task = (!rates.is_idle()).then(|| {
        tokio::spawn(churn::run(
            fleet.clone(),
            rates,
            args.churn_tick,
            stop.clone(),
        ))
    });

    fleet.write_node_list().context("writing the node list")?;
    let pods = fleet.cluster().list_pods().items.len();
    let port = fleet
        .port()
        .map(|p| p.to_string())
        .unwrap_or_else(|| "per-node".to_owned());
    println!(
        "ready nodes={} pods={} port={} faulty={} api={} state_dir={} startup_ms={}",
        fleet.node_count(),
        pods,
        port,
        fleet.faulty_nodes().len(),
        api.as_ref().map_or("none", |api| api.url()),
        state_dir.display(),
        started.elapsed().as_millis()
    );

    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("installing the SIGTERM handler")?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    stop.cancel();
    if let Some(task) = churn_task {
        if let Ok(tally) = task.await {
            tracing::info!(?tally, "Churn stopped.");
        }
    }
    let totals = fleet.total_counts();
    if let Some(api) = api {
        api.shutdown().await;
    }
    fleet.shutdown().await;
    eprintln!(
        "stopped connections={} requests={} bodies={}",
        totals.connections, totals.requests, totals.bodies
    );
    Ok(())
}

/// Name of the file `--kubelets-only` writes into the state directory.
const CLUSTER_FILE: &str = "kubelet-cluster.json";

/// Writes every node (name, kubelet address and port, labels) with its pods (namespace, name,
/// labels, containers, phase) as JSON, so that a script can create the matching Node and Pod
/// objects in a real API server. Written to a temporary name and renamed: a reader never sees half.
fn write_cluster_file(fleet: &FleetHandle, state_dir: &std::path::Path) -> anyhow::Result<()> {
    let cluster = fleet.cluster();
    let nodes: Vec<serde_json::Value> = cluster
        .list_nodes()
        .items
        .iter()
        .map(|node| {
            let pods: Vec<serde_json::Value> = cluster
                .pods_on_node(&node.name)
                .iter()
                .map(|pod| {
                    serde_json::json!({
                        "namespace": pod.namespace,
                        "name": pod.name,
                        "labels": pod.labels,
                        "containers": pod.containers,
                        "phase": pod.phase.as_str(),
                    })
                })
                .collect();
            serde_json::json!({
                "name": node.name,
                "ip": node.ip.to_string(),
                "port": node.port,
                "labels": node.labels,
                "pods": pods,
            })
        })
        .collect();
    let body = serde_json::to_vec_pretty(&serde_json::json!({ "nodes": nodes }))?;
    let path = state_dir.join(CLUSTER_FILE);
    let partial = state_dir.join(format!("{CLUSTER_FILE}.partial"));
    std::fs::write(&partial, body).with_context(|| format!("writing {}", partial.display()))?;
    std::fs::rename(&partial, &path).with_context(|| format!("renaming to {}", path.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_cluster_file_names_every_node_address_and_pod_of_the_fleet() {
        let dir = tempfile::tempdir().expect("temp dir");
        let fleet = Fleet::builder()
            .nodes(3)
            .pods_per_node(4)
            .port(0)
            .bind(IpAddr::from([127, 0, 0, 1]))
            .start(dir.path())
            .await
            .expect("fleet starts");
        write_cluster_file(&fleet, dir.path()).expect("cluster file written");

        let text = std::fs::read_to_string(dir.path().join(CLUSTER_FILE)).expect("file read");
        let doc: serde_json::Value = serde_json::from_str(&text).expect("valid JSON");
        let nodes = doc["nodes"].as_array().expect("a node array");
        assert_eq!(nodes.len(), 3);
        let cluster = fleet.cluster();
        for node in nodes {
            let name = node["name"].as_str().expect("node name");
            let addr = fleet.address(name).expect("a node of the fleet");
            assert_eq!(node["ip"].as_str(), Some(addr.ip().to_string().as_str()));
            assert_eq!(node["port"].as_u64(), Some(u64::from(addr.port())));
            assert_eq!(
                node["labels"]["kubernetes.io/hostname"].as_str(),
                Some(name)
            );
            let mut listed: Vec<(String, String)> = node["pods"]
                .as_array()
                .expect("a pod array")
                .iter()
                .map(|p| {
                    assert_eq!(p["phase"].as_str(), Some("Running"));
                    assert!(!p["containers"].as_array().expect("containers").is_empty());
                    (
                        p["namespace"].as_str().expect("namespace").to_owned(),
                        p["name"].as_str().expect("name").to_owned(),
                    )
                })
                .collect();
            let mut expected: Vec<(String, String)> = cluster
                .pods_on_node(name)
                .iter()
                .map(|p| (p.namespace.clone(), p.name.clone()))
                .collect();
            listed.sort();
            expected.sort();
            assert_eq!(listed.len(), 4);
            assert_eq!(listed, expected);
        }
        assert!(!dir.path().join(format!("{CLUSTER_FILE}.partial")).exists());
        fleet.shutdown().await;
    }

    #[test]
    fn kubelets_only_refuses_churn() {
        let cli = Cli::try_parse_from([
            "kubelet-fleet",
            "--state-dir",
            "/nonexistent",
            "--kubelets-only",
            "--churn-pod-create",
            "1",
        ])
        .expect("flags parse");
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let error = runtime
            .block_on(run(cli.run))
            .expect_err("churn without an API server is refused");
        assert!(error.to_string().contains("--kubelets-only"), "{error}");
    }
}
