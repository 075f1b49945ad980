//! A small load client: scrapes every kubelet of a running fleet over one persistent HTTP/2
//! connection each, spread evenly over an interval, and reports what the fleet process spent.
//!
//! It plays the part of a metrics server for measuring the fleet alone. It reads the node list,
//! CA and token the fleet wrote into its state directory, and the fleet's CPU time and memory from
//! `/proc/PID/stat` and `/proc/PID/status`. One socket per node, so 10,000 nodes stay within the
//! open-file limit.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::client::conn::http2;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

/// Name of the node list the fleet writes: one `name address:port` per line.
pub const NODES_FILE: &str = "kubelet-nodes.txt";
/// Name of the file holding the fleet's process id.
pub const PID_FILE: &str = "kubelet-fleet.pid";

/// Why a load run could not start.
#[derive(Debug, thiserror::Error)]
pub enum ScrapeError {
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("bad line in the node list: {0:?}")]
    BadNode(String),
    #[error("CA: {0}")]
    Pem(#[from] rustls::pki_types::pem::Error),
    #[error("CA: {0}")]
    Tls(#[from] rustls::Error),
}

/// What to scrape and for how long.
#[derive(Clone, Debug)]
pub struct ScrapeConfig {
    pub state_dir: PathBuf,
    pub interval: Duration,
    pub duration: Duration,
    /// Per-request timeout.
    pub timeout: Duration,
    /// The fleet's process id (default: read from the state directory).
    pub fleet_pid: Option<u32>,
}

/// What a load run saw.
#[derive(Clone, Debug, Default)]
pub struct Summary {
    pub nodes: usize,
    /// Nodes whose connection could not be opened during the warm-up.
    pub connect_failed: u64,
    /// Time to open every connection before measuring.
    pub warmup: Duration,
    pub scrapes_ok: u64,
    pub scrapes_failed: u64,
    pub bytes: u64,
    pub elapsed: Duration,
    /// Fleet CPU over the run, in cores (CPU seconds per second).
    pub fleet_cpu_cores: Option<f64>,
    pub fleet_rss_kib: Option<u64>,
    /// This client's own CPU over the run, in cores.
    pub client_cpu_cores: Option<f64>,
    /// Latency quantiles, milliseconds (upper bucket bounds).
    pub p50_ms: u64,
    pub p99_ms: u64,
    pub max_ms: u64,
}

impl std::fmt::Display for Summary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let secs = self.elapsed.as_secs_f64().max(1e-9);
        write!(
            f,
            "nodes={} connect_failed={} warmup={:.1}s ok={} failed={} rate={:.1}/s bytes={} latency_p50<={}ms p99<={}ms max<={}ms",
            self.nodes,
            self.connect_failed,
            self.warmup.as_secs_f64(),
            self.scrapes_ok,
            self.scrapes_failed,
            self.scrapes_ok as f64 / secs,
            self.bytes,
            self.p50_ms,
            self.p99_ms,
            self.max_ms
        )?;
        if let Some(cpu) = self.fleet_cpu_cores {
            write!(f, " fleet_cpu={:.1}%", cpu * 100.0)?;
            if self.scrapes_ok > 0 {
                let per = cpu * secs / self.scrapes_ok as f64 * 1e6;
                write!(f, " fleet_cpu_per_scrape={per:.0}us")?;
            }
        }
        if let Some(rss) = self.fleet_rss_kib {
            write!(f, " fleet_rss={}MiB", rss / 1024)?;
        }
        if let Some(cpu) = self.client_cpu_cores {
            write!(f, " client_cpu={:.1}%", cpu * 100.0)?;
        }
        Ok(())
    }
}

/// Latency histogram with power-of-two millisecond buckets.
#[derive(Default)]
struct Stats {
    connect_failed: AtomicU64,
    ok: AtomicU64,
    failed: AtomicU64,
    bytes: AtomicU64,
    buckets: [AtomicU64; 20],
}

impl Stats {
    /// Counts a failure, logging the first few so a broken run explains itself.
    fn fail(&self, what: &str, error: &dyn std::fmt::Display) {
        let before = self.failed.fetch_add(1, Ordering::Relaxed);
        if before < 5 {
            tracing::warn!(%error, what, "Scrape failed.");
        }
    }

    fn observe(&self, latency: Duration) {
        let ms = latency.as_millis().max(1) as u64;
        let bucket = (64 - ms.leading_zeros() as usize).min(19);
        self.buckets[bucket].fetch_add(1, Ordering::Relaxed);
    }

    fn quantile(&self, q: f64) -> u64 {
        let counts: Vec<u64> = self
            .buckets
            .iter()
            .map(|b| b.load(Ordering::Relaxed))
            .collect();
        let total: u64 = counts.iter().sum();
        if total == 0 {
            return 0;
        }
        let want = ((total as f64) * q).ceil() as u64;
        let mut seen = 0;
        for (i, c) in counts.iter().enumerate() {
            seen += c;
            if seen >= want {
                return 1u64 << i;
            }
        }
        1 << 19
    }
}

fn read(path: &Path) -> Result<String, ScrapeError> {
    std::fs::read_to_string(path).map_err(|source| ScrapeError::Read {
        path: path.to_path_buf(),
        source,
    })
}

/// CPU seconds (user + system) of a process, from `/proc/PID/stat`.
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name, which may contain spaces, start after the last ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split(' ').collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    // SAFETY: sysconf only reads a configuration value.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    let ticks = if ticks > 0 { ticks as f64 } else { 100.0 };
    Some((utime + stime) / ticks)
}

/// Resident memory of a process, KiB, from `/proc/PID/status`.
pub fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Runs the load and returns what it saw.
pub async fn run(config: ScrapeConfig) -> Result<Summary, ScrapeError> {
    let dir = &config.state_dir;
    let mut nodes: Vec<SocketAddr> = Vec::new();
    for line in read(&dir.join(NODES_FILE))?.lines() {
        let addr = line
            .split_whitespace()
            .nth(1)
            .and_then(|a| a.parse().ok())
            .ok_or_else(|| ScrapeError::BadNode(line.to_owned()))?;
        nodes.push(addr);
    }
    let token = read(&dir.join("kubelet-token"))?.trim().to_owned();
    let ca = read(&dir.join("kubelet-ca.crt"))?;
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca.as_bytes()) {
        roots.add(cert?)?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    tls.alpn_protocols = vec![b"h2".to_vec()];
    let connector = TlsConnector::from(Arc::new(tls));
    let fleet_pid = match config.fleet_pid {
        Some(pid) => Some(pid),
        None => read(&dir.join(PID_FILE))
            .ok()
            .and_then(|s| s.trim().parse().ok()),
    };

    let stats = Arc::new(Stats::default());

    // Warm-up: open every connection first (a bounded number at a time), so the measured window
    // shows steady-state scraping rather than 10,000 handshakes.
    let warmup_began = Instant::now();
    let mut senders: Vec<Option<Sender>> = Vec::with_capacity(nodes.len());
    {
        let gate = Arc::new(tokio::sync::Semaphore::new(64));
        let mut opening = tokio::task::JoinSet::new();
        for (i, addr) in nodes.iter().copied().enumerate() {
            let gate = gate.clone();
            let connector = connector.clone();
            let timeout = config.timeout;
            opening.spawn(async move {
                let _permit = gate.acquire_owned().await;
                let result = tokio::time::timeout(timeout, open(addr, &connector)).await;
                (i, result)
            });
        }
        senders.resize_with(nodes.len(), || None);
        while let Some(joined) = opening.join_next().await {
            match joined {
                Ok((i, Ok(Ok(sender)))) => senders[i] = Some(sender),
                Ok((_, Ok(Err(error)))) => {
                    stats.connect_failed.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(%error, "Connecting failed.");
                }
                _ => {
                    stats.connect_failed.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    }
    let warmup = warmup_began.elapsed();

    let started = Instant::now();
    let fleet_cpu_start = fleet_pid.and_then(cpu_seconds);
    let own_cpu_start = cpu_seconds(std::process::id());
    let n = nodes.len().max(1) as u32;
    let mut tasks = tokio::task::JoinSet::new();
    for (i, (addr, sender)) in nodes.iter().copied().zip(senders).enumerate() {
        let offset = config.interval * i as u32 / n;
        let connector = connector.clone();
        let token = token.clone();
        let stats = stats.clone();
        let config = config.clone();
        tasks.spawn(async move {
            node_loop(
                addr, sender, offset, connector, token, stats, config, started,
            )
            .await;
        });
    }
    while tasks.join_next().await.is_some() {}
    let elapsed = started.elapsed();
    let secs = elapsed.as_secs_f64().max(1e-9);
    let fleet_cpu = match (fleet_cpu_start, fleet_pid.and_then(cpu_seconds)) {
        (Some(a), Some(b)) => Some((b - a) / secs),
        _ => None,
    };
    let own_cpu = match (own_cpu_start, cpu_seconds(std::process::id())) {
        (Some(a), Some(b)) => Some((b - a) / secs),
        _ => None,
    };
    Ok(Summary {
        nodes: nodes.len(),
        connect_failed: stats.connect_failed.load(Ordering::Relaxed),
        warmup,
        scrapes_ok: stats.ok.load(Ordering::Relaxed),
        scrapes_failed: stats.failed.load(Ordering::Relaxed),
        bytes: stats.bytes.load(Ordering::Relaxed),
        elapsed,
        fleet_cpu_cores: fleet_cpu,
        fleet_rss_kib: fleet_pid.and_then(rss_kib),
        client_cpu_cores: own_cpu,
        p50_ms: stats.quantile(0.5),
        p99_ms: stats.quantile(0.99),
        max_ms: stats.quantile(1.0),
    })
}

type Sender = http2::SendRequest<Empty<Bytes>>;

#[allow(clippy::too_many_arguments)]
async fn node_loop(
    addr: SocketAddr,
    mut sender: Option<Sender>,
    offset: Duration,
    connector: TlsConnector,
    token: String,
    stats: Arc<Stats>,
    config: ScrapeConfig,
    started: Instant,
) {
    let mut next = started + offset;
    let end = started + config.duration;
    while next < end {
        tokio::time::sleep_until(next.into()).await;
        next += config.interval;
        let began = Instant::now();
        let outcome = tokio::time::timeout(
            config.timeout,
            scrape_once(addr, &connector, &token, &mut sender),
        )
        .await;
        match outcome {
            Ok(Ok(bytes)) => {
                stats.ok.fetch_add(1, Ordering::Relaxed);
                stats.bytes.fetch_add(bytes, Ordering::Relaxed);
                stats.observe(began.elapsed());
            }
            Ok(Err(error)) => {
                stats.fail("request", &error);
                sender = None;
            }
            Err(_) => {
                stats.fail("request", &"timed out");
                sender = None;
            }
        }
    }
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

async fn open(addr: SocketAddr, connector: &TlsConnector) -> Result<Sender, BoxError> {
    let tcp = TcpStream::connect(addr).await?;
    tcp.set_nodelay(true)?;
    let tls = connector
        .connect(ServerName::IpAddress(addr.ip().into()), tcp)
        .await?;
    let (send, conn) = http2::handshake(TokioExecutor::new(), TokioIo::new(tls)).await?;
    tokio::spawn(conn);
    Ok(send)
}

async fn scrape_once(
    addr: SocketAddr,
    connector: &TlsConnector,
    token: &str,
    sender: &mut Option<Sender>,
) -> Result<u64, BoxError> {
    if sender.as_ref().is_none_or(|s| s.is_closed()) {
        *sender = Some(open(addr, connector).await?);
    }
    let Some(send) = sender.as_mut() else {
        return Err("no connection".into());
    };
    send.ready().await?;
    let req = http::Request::get(format!("https://{addr}/metrics/resource"))
        .header("authorization", format!("Bearer {token}"))
        .body(Empty::<Bytes>::new())?;
    let response = send.send_request(req).await?;
    if !response.status().is_success() {
        return Err(format!("status {}", response.status()).into());
    }
    let body = response.into_body().collect().await?.to_bytes();
    Ok(body.len() as u64)
}
