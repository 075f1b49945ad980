//! Runs a case: starts the fleet and the metrics server as child processes, applies the API load
//! from this process, samples every process, stops at the end of the window (or kills everything
//! at the hard deadline), and writes the report.
//!
//! Two modes:
//! - **server**: the server binary runs with the fleet's credentials and scrapes the kubelets;
//!   the API load, the freshness probe and `/metrics` scrapes go to it.
//! - **fleet only** (no server binary): this process scrapes the kubelets itself at the case's
//!   resolution (`scrape_all`), and the API streams are aimed at one kubelet's
//!   `/metrics/resource`, which exercises the harness end to end without a server.
//!
//! Everything listens and connects on loopback only.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::apiload::{self, Client, Stream, Target};
use super::case::{Case, Protocol};
use super::fleetctl::{self, ControlClient};
use super::freshness::{self, PromHistogram};
use super::peers::{self, Nginx, NginxFigures, Prometheus, PrometheusFigures};
use super::procstat;
use super::report::{self, Environment, MetricsScrape, RunData};
use crate::apiserver::{self, ApiServerConfig, ApiServerError};
use crate::churn::{self, ChurnRates};
use crate::fleet::{raise_open_file_limit, Fleet, FleetError};
use crate::kubelet::workload::Catalogue;
use crate::scrape_all::{self, ScrapeConfig};

/// Name of the kubeconfig the API stand-in writes for the server into the state directory.
pub const SERVER_KUBECONFIG: &str = "server.kubeconfig";
/// Name of the bearer token file for API requests to the server, if the stand-in writes one.
pub const API_TOKEN_FILE: &str = "api-token";
/// Name of the token file of the cluster's administrator (`system:masters`), which may read the
/// server's own `/metrics` (a non-resource path the metrics reader may not).
pub const ADMIN_TOKEN_FILE: &str = "admin-token";

/// Why a run could not be carried out.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("writing {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("starting {what} ({path}): {source}")]
    Spawn {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the fleet did not become ready: {0}")]
    FleetNotReady(String),
    #[error("the server did not become ready within {0:?} (see server.log)")]
    ServerNotReady(Duration),
    #[error(
        "{0} is missing: the API stand-in must write it before a server can run (fleet-only mode runs without)"
    )]
    NoKubeconfig(PathBuf),
    #[error("no free loopback port: {0}")]
    Port(std::io::Error),
    #[error(transparent)]
    Fleet(#[from] FleetError),
    #[error(transparent)]
    ApiServer(#[from] ApiServerError),
    #[error(transparent)]
    ApiLoad(#[from] apiload::ApiLoadError),
    #[error(transparent)]
    Control(#[from] fleetctl::ControlError),
    #[error(transparent)]
    Report(#[from] report::ReportError),
    #[error("reading the fleet's credentials: {0}")]
    Credentials(String),
}

/// What to run and where the report goes.
#[derive(Clone, Debug)]
pub struct RunOptions {
    pub case: Case,
    /// The case file's text, copied into the report.
    pub case_text: String,
    /// The report directory (created).
    pub out: PathBuf,
    /// A binary whose `fleet --case FILE --state-dir DIR` runs the fleet (the `loadtest` binary).
    pub fleet_exe: PathBuf,
    /// The metrics server binary; `None`: fleet-only mode.
    pub server_bin: Option<PathBuf>,
    /// Show a progress bar on the terminal.
    pub progress: bool,
}

/// What a run produced.
#[derive(Clone, Debug)]
pub struct RunOutcome {
    pub passed: bool,
    pub summary: String,
    pub out: PathBuf,
}

/// The default server command line; placeholders are filled by [`server_args`].
pub const DEFAULT_SERVER_ARGS: &[&str] = &[
    "--kubeconfig",
    "{state_dir}/server.kubeconfig",
    "--kubelet-certificate-authority",
    "{state_dir}/kubelet-ca.crt",
    "--kubelet-client-certificate",
    "{state_dir}/kubelet-client.crt",
    "--kubelet-client-key",
    "{state_dir}/kubelet-client.key",
    "--kubelet-use-node-status-port",
    // The simulated nodes' hostnames do not resolve; their InternalIP is their loopback address.
    "--kubelet-preferred-address-types",
    "InternalIP",
    "--bind-address",
    "127.0.0.1",
    "--secure-port",
    "{port}",
    "--cert-dir",
    "{cert_dir}",
    "--metric-resolution",
    "{resolution}",
];

/// A duration as the server's flags spell it (`15s`, `1500ms`).
pub fn go_duration(d: Duration) -> String {
    if d.subsec_millis() == 0 {
        format!("{}s", d.as_secs())
    } else {
        format!("{}ms", d.as_millis())
    }
}

/// The server's command line for a case.
pub fn server_args(case: &Case, state_dir: &Path, cert_dir: &Path, port: u16) -> Vec<String> {
    let template: Vec<String> = match &case.server.args {
        Some(args) => args.clone(),
        None => DEFAULT_SERVER_ARGS
            .iter()
            .map(|s| (*s).to_owned())
            .collect(),
    };
    template
        .iter()
        .chain(case.server.extra_args.iter())
        .map(|a| {
            a.replace("{state_dir}", &state_dir.display().to_string())
                .replace("{cert_dir}", &cert_dir.display().to_string())
                .replace("{port}", &port.to_string())
                .replace("{resolution}", &go_duration(case.server.resolution))
        })
        .collect()
}

/// The fleet's side of a run: starts the fleet described by `case`, the API stand-in (forwarding
/// `metrics.k8s.io` to `aggregate_to`), the control endpoint and churn, prints
/// `ready nodes=N pods=P faulty=F control_port=C api=URL`, and serves until stdin closes or
/// SIGTERM/SIGINT arrives.
pub async fn serve_fleet(
    case: &Case,
    state_dir: &Path,
    aggregate_to: Option<String>,
) -> Result<(), RunError> {
    if let Err(error) = raise_open_file_limit() {
        tracing::warn!(%error, "Could not raise the open-file limit.");
    }
    let mut builder = Fleet::builder()
        .nodes(case.fleet.nodes)
        .pods_per_node(case.fleet.pods_per_node)
        .seed(case.fleet.seed)
        .port(0)
        .sample_period(case.fleet.sample_period);
    for (kind, fraction) in case.fault_kinds() {
        builder = builder
            .fault(kind, fraction)
            .map_err(|e| RunError::Fleet(FleetError::Fault(e)))?;
    }
    let fleet = builder.start(state_dir).await?;
    fleet.write_node_list()?;
    // The stand-in writes `server.kubeconfig` for the server; the metrics reader's token is
    // what the load generator presents.
    let mut api_config = ApiServerConfig::new(state_dir);
    api_config.aggregate_to = aggregate_to;
    let api = apiserver::start(api_config, fleet.cluster()).await?;
    let stop = CancellationToken::new();
    let control_port = fleetctl::serve(fleet.clone(), stop.clone()).await?;
    let write = |name: &str, text: String| {
        let path = state_dir.join(name);
        std::fs::write(&path, text).map_err(|source| RunError::Write { path, source })
    };
    write(fleetctl::CONTROL_PORT_FILE, control_port.to_string())?;
    if let Some(token) = api.token(apiserver::METRICS_READER) {
        write(API_TOKEN_FILE, token.to_owned())?;
    }
    if let Some(token) = api.token(apiserver::ADMIN_USER) {
        write(ADMIN_TOKEN_FILE, token.to_owned())?;
    }
    let c = case.fleet.churn;
    let rates = ChurnRates {
        pod_create: c.pod_create,
        pod_delete: c.pod_delete,
        container_restart: c.container_restart,
        node_add: c.node_add,
        node_remove: c.node_remove,
    };
    let churn_task = (!rates.is_idle()).then(|| {
        tokio::spawn(churn::run(
            fleet.clone(),
            rates,
            Duration::from_secs(1),
            stop.clone(),
        ))
    });
    let pods = fleet.cluster().list_pods().items;
    let containers: usize = pods.iter().map(|p| p.containers.len()).sum();
    println!(
        "ready nodes={} pods={} containers={containers} faulty={} control_port={control_port} api={}",
        fleet.node_count(),
        pods.len(),
        fleet.faulty_nodes().len(),
        api.url()
    );
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(|source| RunError::Write {
            path: PathBuf::from("SIGTERM handler"),
            source,
        })?;
    let mut stdin = tokio::io::stdin();
    let mut sink = [0u8; 64];
    loop {
        tokio::select! {
            read = stdin.read(&mut sink) => match read {
                // The harness holds our stdin: end of file means it is gone.
                Ok(0) | Err(_) => break,
                Ok(_) => continue,
            },
            _ = term.recv() => break,
            _ = tokio::signal::ctrl_c() => break,
        }
    }
    stop.cancel();
    if let Some(task) = churn_task {
        if let Ok(tally) = task.await {
            tracing::info!(?tally, "Churn stopped.");
        }
    }
    api.shutdown().await;
    fleet.shutdown().await;
    Ok(())
}

/// What the fleet said when ready.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Ready {
    pub nodes: u64,
    pub pods: u64,
    pub containers: u64,
    pub faulty: u64,
    pub control_port: u16,
}

/// Parses the fleet's `ready ...` line.
pub fn parse_ready(line: &str) -> Option<Ready> {
    let rest = line.strip_prefix("ready ")?;
    let mut ready = Ready::default();
    for kv in rest.split_whitespace() {
        let (k, v) = kv.split_once('=')?;
        match k {
            "nodes" => ready.nodes = v.parse().ok()?,
            "pods" => ready.pods = v.parse().ok()?,
            "containers" => ready.containers = v.parse().ok()?,
            "faulty" => ready.faulty = v.parse().ok()?,
            "control_port" => ready.control_port = v.parse().ok()?,
            _ => {}
        }
    }
    (ready.control_port != 0).then_some(ready)
}

fn log_file(path: &Path) -> Result<Stdio, RunError> {
    std::fs::File::create(path)
        .map(Stdio::from)
        .map_err(|source| RunError::Write {
            path: path.to_path_buf(),
            source,
        })
}

fn free_port() -> Result<u16, RunError> {
    let l = std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).map_err(RunError::Port)?;
    Ok(l.local_addr().map_err(RunError::Port)?.port())
}

/// Asks a child to stop (SIGTERM), then kills it if it has not exited within `grace`.
async fn stop_child(child: &mut Child, grace: Duration) {
    if let Some(pid) = child.id() {
        // SAFETY: signalling a process id we spawned and have not yet reaped; the worst case
        // is a signal to an exited child, which kill reports as an error we ignore.
        unsafe {
            libc::kill(pid as libc::pid_t, libc::SIGTERM);
        }
    }
    if tokio::time::timeout(grace, child.wait()).await.is_err() {
        let _ = child.kill().await;
    }
}

/// Waits for a task until `deadline`; aborts it past the deadline.
async fn join_by<T>(task: JoinHandle<T>, deadline: Instant, hit: &mut bool) -> Option<T> {
    let abort = task.abort_handle();
    match tokio::time::timeout_at(deadline.into(), task).await {
        Ok(Ok(v)) => Some(v),
        Ok(Err(_)) => None,
        Err(_) => {
            abort.abort();
            *hit = true;
            None
        }
    }
}

fn read_trimmed(path: &Path) -> Option<String> {
    std::fs::read_to_string(path)
        .ok()
        .map(|s| s.trim().to_owned())
}

/// Runs a case and writes its report.
pub async fn run(opts: RunOptions) -> Result<RunOutcome, RunError> {
    let case = &opts.case;
    let started = Instant::now();
    let deadline = started + case.hard_deadline();
    let out = opts.out.clone();
    let state_dir = out.join("state");
    let cert_dir = state_dir.join("certs");
    for dir in [&out, &state_dir, &cert_dir] {
        std::fs::create_dir_all(dir).map_err(|source| RunError::Write {
            path: dir.clone(),
            source,
        })?;
    }
    let case_path = out.join("case.toml");
    std::fs::write(&case_path, &opts.case_text).map_err(|source| RunError::Write {
        path: case_path.clone(),
        source,
    })?;
    if let Err(error) = raise_open_file_limit() {
        tracing::warn!(%error, "Could not raise the open-file limit.");
    }
    let mut data = RunData {
        mode: if opts.server_bin.is_some() {
            "server".to_owned()
        } else {
            "fleet only (no server binary: this process scrapes the kubelets; API streams aim at one kubelet's /metrics/resource)".to_owned()
        },
        env: Environment::detect(opts.server_bin.as_deref()),
        ..RunData::default()
    };

    // === Fleet ===
    // The server's port is chosen first: the API stand-in forwards metrics.k8s.io to it.
    let server_port = match opts.server_bin {
        Some(_) => Some(free_port()?),
        None => None,
    };
    let mut fleet_cmd = Command::new(&opts.fleet_exe);
    fleet_cmd
        .arg("fleet")
        .arg("--case")
        .arg(&case_path)
        .arg("--state-dir")
        .arg(&state_dir);
    if let Some(port) = server_port {
        fleet_cmd
            .arg("--aggregate-to")
            .arg(format!("https://127.0.0.1:{port}"));
    }
    let mut fleet = fleet_cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(log_file(&out.join("fleet.log"))?)
        .kill_on_drop(true)
        .spawn()
        .map_err(|source| RunError::Spawn {
            what: "the fleet",
            path: opts.fleet_exe.clone(),
            source,
        })?;
    let fleet_pid = fleet.id().unwrap_or(0);
    let ready = {
        let Some(stdout) = fleet.stdout.take() else {
            return Err(RunError::FleetNotReady("no stdout".into()));
        };
        let mut lines = BufReader::new(stdout).lines();
        let waited = tokio::time::timeout_at(deadline.into(), async {
            while let Ok(Some(line)) = lines.next_line().await {
                if let Some(ready) = parse_ready(&line) {
                    return Some(ready);
                }
            }
            None
        })
        .await;
        match waited {
            Ok(Some(ready)) => ready,
            Ok(None) => return Err(RunError::FleetNotReady("it exited (see fleet.log)".into())),
            Err(_) => return Err(RunError::FleetNotReady("hard deadline".into())),
        }
    };
    data.nodes = ready.nodes;
    data.pods = ready.pods;
    data.containers = ready.containers;
    data.faulty_nodes = ready.faulty;
    let mut control = ControlClient::new(ready.control_port);
    let healthy = control.healthy().await?;

    // === Server ===
    let mut server: Option<Child> = None;
    let target = match &opts.server_bin {
        Some(bin) => {
            let kubeconfig = state_dir.join(SERVER_KUBECONFIG);
            if !kubeconfig.exists() {
                return Err(RunError::NoKubeconfig(kubeconfig));
            }
            let port = match server_port {
                Some(port) => port,
                None => free_port()?,
            };
            let child = Command::new(bin)
                .args(server_args(case, &state_dir, &cert_dir, port))
                .stdin(Stdio::null())
                .stdout(log_file(&out.join("server.log"))?)
                .stderr(log_file(&out.join("server.err.log"))?)
                .kill_on_drop(true)
                .spawn()
                .map_err(|source| RunError::Spawn {
                    what: "the server",
                    path: bin.clone(),
                    source,
                })?;
            server = Some(child);
            let target = Target {
                addr: SocketAddr::from((Ipv4Addr::LOCALHOST, port)),
                server_name: "127.0.0.1".to_owned(),
                ca: None,
                token: read_trimmed(&state_dir.join(API_TOKEN_FILE)),
            };
            let mut probe = Client::new(target.clone(), Protocol::H2, Duration::from_secs(2))?;
            let wait = case
                .run
                .margin
                .min(deadline.saturating_duration_since(Instant::now()));
            let until = Instant::now() + wait;
            loop {
                if probe.get("/readyz").await.is_ok() {
                    break;
                }
                if Instant::now() > until {
                    return Err(RunError::ServerNotReady(wait));
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            target
        }
        None => {
            let node = healthy
                .first()
                .ok_or_else(|| RunError::FleetNotReady("no healthy node".into()))?;
            let list = std::fs::read_to_string(state_dir.join(scrape_all::NODES_FILE))
                .map_err(|e| RunError::Credentials(e.to_string()))?;
            let addr: SocketAddr = list
                .lines()
                .find_map(|l| {
                    let (name, addr) = l.split_once(' ')?;
                    (name == node).then(|| addr.trim().parse().ok()).flatten()
                })
                .ok_or_else(|| RunError::Credentials(format!("no address for {node}")))?;
            data.notes.push(format!(
                "API streams were aimed at kubelet {node} ({addr}) /metrics/resource: there is no server in this mode."
            ));
            Target {
                addr,
                server_name: addr.ip().to_string(),
                ca: Some(state_dir.join("kubelet-ca.crt")),
                token: read_trimmed(&state_dir.join("kubelet-token")),
            }
        }
    };
    let server_pid = server.as_ref().and_then(Child::id);

    // === Prometheus beside the server, over the same warm-up and window ===
    let mut prometheus: Option<Prometheus> = None;
    if case.peers.prometheus {
        match (&server, peers::find_binary(&case.peers.prometheus_bin)) {
            (None, _) => data.peers.skip(
                "prometheus",
                "fleet-only mode: there is no server to compare with",
            ),
            (Some(_), None) => data.peers.skip(
                "prometheus",
                peers::PeerError::Missing {
                    peer: "prometheus",
                    bin: case.peers.prometheus_bin.clone(),
                }
                .to_string(),
            ),
            (Some(_), Some(bin)) => match Prometheus::start(
                &bin,
                &state_dir,
                case.server.resolution,
                &out.join("prometheus.log"),
            )
            .await
            {
                Ok(p) => prometheus = Some(p),
                Err(e) => data.peers.skip("prometheus", e.to_string()),
            },
        }
    }

    // === Load and measurement ===
    let began = Instant::now();
    let began_unix = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64());
    let window = (
        case.run.warmup.as_secs_f64(),
        (case.run.warmup + case.run.duration).as_secs_f64(),
    );
    data.window = window;
    let end = began + case.run.warmup + case.run.duration;
    let stop = CancellationToken::new();
    let mut procs = vec![
        ("fleet".to_owned(), fleet_pid),
        ("loadgen".to_owned(), std::process::id()),
    ];
    if let Some(pid) = server_pid {
        procs.insert(0, ("server".to_owned(), pid));
    }
    if let Some(p) = &prometheus {
        procs.push(("prometheus".to_owned(), p.pid));
    }
    let sampler = tokio::spawn(procstat::sample(
        procs,
        case.run.sample_interval,
        began,
        stop.clone(),
    ));

    let mut streams = Vec::new();
    let catalogue = case_catalogue(case);
    for spec in &case.api.shapes {
        let mut stream = Stream::for_shape(spec, &catalogue);
        if !case.run.warmup.is_zero() {
            stream.schedule_restart = Some(began + case.run.warmup);
        }
        if server.is_none() {
            stream.paths = vec!["/metrics/resource".to_owned()];
        }
        streams.push(tokio::spawn(apiload::run_stream(
            target.clone(),
            stream,
            Duration::from_secs(10),
            began,
            stop.clone(),
        )));
    }

    let scraper = if server.is_none() {
        let config = ScrapeConfig {
            state_dir: state_dir.clone(),
            interval: case.server.resolution,
            duration: case.run.warmup + case.run.duration,
            timeout: Duration::from_secs(10),
            fleet_pid: Some(fleet_pid),
        };
        Some(tokio::spawn(scrape_all::run(config)))
    } else {
        None
    };

    let (metrics_task, probe_task) = if server.is_some() {
        // The server's /metrics is a non-resource path: the administrator may read it.
        let metrics_target = Target {
            token: read_trimmed(&state_dir.join(ADMIN_TOKEN_FILE)).or(target.token.clone()),
            ..target.clone()
        };
        let mut client = Client::new(metrics_target, Protocol::H2, Duration::from_secs(5))?;
        let every = case.run.metrics_interval;
        let stop_m = stop.clone();
        // Besides every `metrics_interval`, a read at each edge of the window, so counts taken
        // from the server's counters cover the window exactly however coarse the interval.
        let window_start = began + case.run.warmup;
        let window_end = window_start + case.run.duration;
        let metrics_task = tokio::spawn(async move {
            let mut scrapes = Vec::new();
            let mut ticker = tokio::time::interval(every);
            let start_read = tokio::time::sleep_until(window_start.into());
            let end_read = tokio::time::sleep_until(window_end.into());
            tokio::pin!(start_read, end_read);
            let (mut started, mut ended) = (false, false);
            loop {
                // An edge read is stamped with its edge (it happens within milliseconds of it),
                // so the window's filters keep it.
                let edge = tokio::select! {
                    biased;
                    _ = &mut start_read, if !started => {
                        started = true;
                        Some(window_start)
                    }
                    _ = &mut end_read, if !ended => {
                        ended = true;
                        Some(window_end)
                    }
                    _ = stop_m.cancelled() => break,
                    _ = ticker.tick() => None,
                };
                let t = edge
                    .unwrap_or_else(Instant::now)
                    .saturating_duration_since(began)
                    .as_secs_f64();
                if let Ok(body) = client.get("/metrics").await {
                    let text = String::from_utf8_lossy(&body);
                    scrapes.push(MetricsScrape {
                        t,
                        kubelet_request_duration: PromHistogram::parse(
                            &text,
                            "metrics_server_kubelet_request_duration_seconds",
                        ),
                        api_metric_freshness: PromHistogram::parse(
                            &text,
                            "metrics_server_api_metric_freshness_seconds",
                        ),
                        kubelet_requests_ok: peers::sum_series(
                            &text,
                            "metrics_server_kubelet_request_total",
                            "success=\"true\"",
                        ),
                    });
                }
            }
            scrapes
        });
        let k = case.api.freshness_nodes.min(healthy.len());
        let probe_task = (k > 0).then(|| -> Result<_, RunError> {
            let step = healthy.len() / k;
            let nodes: Vec<String> = (0..k).map(|i| healthy[i * step].clone()).collect();
            let api = Client::new(target.clone(), Protocol::H2, Duration::from_secs(5))?;
            Ok(tokio::spawn(freshness::probe(
                api,
                ControlClient::new(ready.control_port),
                nodes,
                case.server.resolution,
                Duration::from_millis(5),
                began,
                stop.clone(),
            )))
        });
        (Some(metrics_task), probe_task.transpose()?)
    } else {
        (None, None)
    };

    let prometheus_sampler = prometheus.as_ref().map(|p| {
        tokio::spawn(peers::sample_prometheus(
            p.addr,
            case.run.sample_interval,
            began,
            stop.clone(),
        ))
    });

    // The progress bar ticks until the window ends; this is the run's clock, not a wait for
    // another task.
    let total = (case.run.warmup + case.run.duration).as_secs().max(1);
    let bar = if opts.progress {
        let bar = indicatif::ProgressBar::new(total);
        if let Ok(style) =
            indicatif::ProgressStyle::with_template("{prefix} [{bar:40}] {pos}/{len}s {msg}")
        {
            bar.set_style(style.progress_chars("=> "));
        }
        bar.set_prefix(case.name.clone());
        bar
    } else {
        indicatif::ProgressBar::hidden()
    };
    while Instant::now() < end {
        let elapsed = began.elapsed();
        bar.set_position(elapsed.as_secs());
        bar.set_message(if elapsed < case.run.warmup {
            "warm-up"
        } else {
            "measuring"
        });
        let step = end
            .saturating_duration_since(Instant::now())
            .min(Duration::from_millis(250));
        tokio::time::sleep(step).await;
    }
    bar.finish_with_message("done");
    stop.cancel();

    // === Collect, bounded by the hard deadline ===
    let mut hit = false;
    data.procs = join_by(sampler, deadline, &mut hit)
        .await
        .unwrap_or_default();
    for s in streams {
        match join_by(s, deadline, &mut hit).await {
            Some(Ok(r)) => data.streams.push(r),
            Some(Err(e)) => data.notes.push(format!("an API stream could not run: {e}")),
            None => data.notes.push("an API stream did not finish".to_owned()),
        }
    }
    if let Some(t) = metrics_task {
        data.metrics = join_by(t, deadline, &mut hit).await.unwrap_or_default();
        if data.metrics.is_empty() {
            data.notes
                .push("the server's /metrics could not be read".to_owned());
        }
    }
    if let Some(t) = probe_task {
        data.probe = join_by(t, deadline, &mut hit).await;
    }
    if let Some(t) = scraper {
        match join_by(t, deadline, &mut hit).await {
            Some(Ok(s)) => data.notes.push(format!("scraping by this process: {s}")),
            Some(Err(e)) => data
                .notes
                .push(format!("scraping by this process failed: {e}")),
            None => data
                .notes
                .push("scraping by this process did not finish".to_owned()),
        }
    }
    if let Some(t) = prometheus_sampler {
        data.peers.prometheus_counts = join_by(t, deadline, &mut hit).await.unwrap_or_default();
    }

    // === Peers after the window ===
    let grace = Duration::from_secs(5);
    if let Some(p) = prometheus.take() {
        let figures = prometheus_figures(&p, &data, began_unix).await;
        p.stop(grace).await;
        data.peers.prometheus = Some(figures);
    }
    if case.peers.nginx {
        match (server_pid, peers::find_binary(&case.peers.nginx_bin)) {
            (None, _) => data.peers.skip(
                "nginx",
                "fleet-only mode: there is no server to compare with",
            ),
            (Some(_), None) => data.peers.skip(
                "nginx",
                peers::PeerError::Missing {
                    peer: "nginx",
                    bin: case.peers.nginx_bin.clone(),
                }
                .to_string(),
            ),
            (Some(pid), Some(bin)) => {
                let nginx_dir = state_dir.join("nginx");
                let compared = tokio::time::timeout_at(
                    deadline.into(),
                    compare_with_nginx(case, &bin, &nginx_dir, &target, pid),
                )
                .await;
                match compared {
                    Ok(Ok(figures)) => data.peers.nginx = Some(figures),
                    Ok(Err(e)) => data.peers.skip("nginx", e.to_string()),
                    Err(_) => {
                        hit = true;
                        data.peers
                            .skip("nginx", "the hard deadline passed during the legs");
                    }
                }
            }
        }
    }
    let scan_bodies = if case.peers.memchr {
        match peers::fetch_kubelet_bodies(&state_dir, &healthy, case.peers.memchr_bodies).await {
            Ok(bodies) => Some(bodies),
            Err(e) => {
                data.peers.skip("memchr", e.to_string());
                None
            }
        }
    } else {
        None
    };
    data.deadline_hit = hit;

    // === Stop children ===
    if let Some(mut s) = server {
        stop_child(&mut s, grace).await;
    }
    drop(fleet.stdin.take());
    stop_child(&mut fleet, grace).await;

    // Timed with the other processes stopped: only this thread's CPU clock counts anyway.
    if let Some(bodies) = scan_bodies {
        match tokio::task::spawn_blocking(move || {
            peers::time_scans(&bodies, Duration::from_millis(1500))
        })
        .await
        {
            Ok(scan) => data.peers.scan = Some(scan),
            Err(e) => data
                .peers
                .skip("memchr", format!("the timing thread failed: {e}")),
        }
    }

    let summary = report::write_report(&out, case, &data)?;
    let passed = data.passed(&case.budgets);
    drop(control);
    Ok(RunOutcome {
        passed,
        summary,
        out,
    })
}

/// Prometheus's and the server's scrapes and CPU over the window.
async fn prometheus_figures(p: &Prometheus, data: &RunData, began_unix: f64) -> PrometheusFigures {
    let (from, to) = data.window;
    let range = (to - from).round().max(1.0) as u64;
    let at = began_unix + to;
    let scrapes = p
        .query(&format!("sum(sum_over_time(up[{range}s]))"), at)
        .await
        .ok();
    let targets_up = p.query("sum(up)", at).await.ok();
    let counts: Vec<&(f64, f64)> = data
        .peers
        .prometheus_counts
        .iter()
        .filter(|(t, _)| *t >= from - 1e-6 && *t <= to + 1e-6)
        .collect();
    let iterations = match (counts.first(), counts.last()) {
        (Some(a), Some(b)) => Some(b.1 - a.1),
        _ => None,
    };
    PrometheusFigures {
        version: p.version.clone(),
        targets: p.targets,
        targets_up,
        scrapes,
        iterations,
        cpu_seconds: data.cpu_seconds_in_window("prometheus"),
        rss_peak_mib: data.rss_peak_mib("prometheus"),
        ours_scrapes: data.server_scrapes_in_window(),
        ours_cpu_seconds: data.cpu_seconds_in_window("server"),
        ours_rss_peak_mib: data.rss_peak_mib("server"),
    }
}

/// The fleet's workloads as the fleet lays them out for this case (same seed, same size).
fn case_catalogue(case: &Case) -> Catalogue {
    Catalogue::new(case.fleet.seed, case.fleet.nodes, case.fleet.pods_per_node)
}

/// Captures the server's bodies for the compared shapes, starts nginx on them, and runs each
/// shape against the server and nginx in turn.
async fn compare_with_nginx(
    case: &Case,
    bin: &Path,
    dir: &Path,
    ours: &Target,
    server_pid: u32,
) -> Result<NginxFigures, peers::PeerError> {
    let catalogue = case_catalogue(case);
    let streams: Vec<Stream> = case
        .nginx_shapes()
        .iter()
        .map(|spec| Stream::for_shape(spec, &catalogue))
        .collect();
    let bodies = peers::capture_bodies(ours, &streams).await?;
    let nginx = Nginx::start(bin, dir, case.peers.nginx_workers, &bodies).await?;
    let theirs = peers::nginx_target(nginx.addr, ours.token.clone());
    let mut figures = NginxFigures {
        version: nginx.version.clone(),
        workers: nginx.workers,
        server_threads: peers::threads(server_pid),
        bodies: bodies.iter().map(|(u, b)| (u.clone(), b.len())).collect(),
        legs: Vec::new(),
    };
    let mut failed = None;
    'legs: for round in 0..case.peers.rounds {
        for stream in &streams {
            for (peer, target, pid) in [("ours", ours, server_pid), ("nginx", &theirs, nginx.pid)] {
                match peers::run_leg(
                    target.clone(),
                    stream.clone(),
                    peer,
                    round,
                    case.peers.leg_warmup,
                    case.peers.leg,
                    pid,
                )
                .await
                {
                    Ok(leg) => figures.legs.push(leg),
                    Err(e) => {
                        failed = Some(e);
                        break 'legs;
                    }
                }
            }
        }
    }
    nginx.stop(Duration::from_secs(5)).await;
    match failed {
        Some(e) if figures.legs.is_empty() => Err(e),
        _ => Ok(figures),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ready_line_gives_the_control_port() {
        assert_eq!(
            parse_ready("ready nodes=5 pods=20 containers=31 faulty=1 control_port=4321 api=https://127.0.0.1:1"),
            Some(Ready {
                nodes: 5,
                pods: 20,
                containers: 31,
                faulty: 1,
                control_port: 4321
            })
        );
        assert_eq!(parse_ready("ready nodes=5"), None);
        assert_eq!(parse_ready("starting"), None);
    }

    #[test]
    fn the_server_command_line_is_filled_in() {
        let case = Case::parse(
            "name = \"t\"\n[fleet]\nnodes = 1\npods_per_node = 1\n[server]\nresolution = \"1s\"\nextra_args = [\"-v=2\"]\n[run]\nduration = \"2s\"\n",
        )
        .expect("case");
        let args = server_args(&case, Path::new("/s"), Path::new("/s/certs"), 8443);
        let joined = args.join(" ");
        assert!(
            joined.contains("--kubeconfig /s/server.kubeconfig"),
            "{joined}"
        );
        assert!(joined.contains("--secure-port 8443"), "{joined}");
        assert!(joined.contains("--metric-resolution 1s"), "{joined}");
        assert!(joined.ends_with("-v=2"), "{joined}");
        assert_eq!(go_duration(Duration::from_millis(1500)), "1500ms");
    }
}
