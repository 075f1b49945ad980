//! Peers run side by side with the metrics server, on the same fleet and machine, in the same run:
//!
//! - **Prometheus** scrapes the same kubelets' `/metrics/resource` at the server's resolution, with
//!   the fleet's kubelet CA and client certificate. Its CPU and memory are sampled from `/proc`
//!   like the server's, and its completed scrapes are counted from its own data
//!   (`sum_over_time(up[window])`), so CPU per 1,000 scrapes compares with the server's.
//! - **nginx** serves, over TLS (HTTP/2 and HTTP/1.1), the bytes the server answered for the load's
//!   paths; the same load shapes run closed loop against the server and nginx in turn.
//! - **memchr**: a few kubelet bodies are decoded by the server's parser and scanned for newlines
//!   by `memchr`, each timed on this thread's CPU clock; the scan is the floor a parser can reach.
//!
//! Every peer listens on loopback only and writes its files under the run's state directory. A
//! peer whose binary is missing is reported as skipped, with the reason.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};
use tokio_util::sync::CancellationToken;

use super::apiload::{self, Client, Stream, Target, WindowSummary};
use super::case::Protocol;
use super::procstat;
use super::report::SideBySide;
use crate::pki::{Authority, LeafSpec, PkiError};

/// Why a peer could not run.
#[derive(Debug, thiserror::Error)]
pub enum PeerError {
    #[error("{peer} binary {bin:?} not found (a path, or a name looked up in PATH)")]
    Missing { peer: &'static str, bin: String },
    #[error("writing {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("starting {peer} ({bin}): {source}")]
    Spawn {
        peer: &'static str,
        bin: PathBuf,
        source: std::io::Error,
    },
    #[error("{peer} did not become ready within {waited:?} (see {log}): {last}")]
    NotReady {
        peer: &'static str,
        waited: Duration,
        log: PathBuf,
        last: String,
    },
    #[error("{peer} exited early ({status}; see {log})")]
    Exited {
        peer: &'static str,
        status: String,
        log: PathBuf,
    },
    #[error("GET {addr}{path}: {reason}")]
    Http {
        addr: SocketAddr,
        path: String,
        reason: String,
    },
    #[error("query {query:?}: {reason}")]
    Query { query: String, reason: String },
    #[error("no free loopback port: {0}")]
    Port(std::io::Error),
    #[error("certificate: {0}")]
    Pki(#[from] PkiError),
    #[error(transparent)]
    ApiLoad(#[from] apiload::ApiLoadError),
    #[error("capturing {path} from the server: {reason}")]
    Capture { path: String, reason: String },
    #[error("the node list {0} has no kubelet address")]
    NoTargets(PathBuf),
    #[error("no kubelet body could be fetched: {0}")]
    NoBodies(String),
}

/// Finds a peer's binary: `bin` itself when it names a path, else the first executable file of
/// that name in `PATH`.
pub fn find_binary(bin: &str) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt as _;
    let executable = |p: &Path| {
        std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    };
    if bin.contains('/') {
        let p = PathBuf::from(bin);
        return executable(&p).then_some(p);
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(bin))
        .find(|p| executable(p))
}

/// The first line a binary prints for `args` (on stdout or stderr), e.g. its version.
pub async fn version_line(bin: &Path, args: &[&str]) -> String {
    let out = tokio::time::timeout(
        Duration::from_secs(10),
        Command::new(bin)
            .args(args)
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .output(),
    )
    .await;
    match out {
        Ok(Ok(out)) => {
            let text = if out.stdout.is_empty() {
                out.stderr
            } else {
                out.stdout
            };
            String::from_utf8_lossy(&text)
                .lines()
                .next()
                .unwrap_or_default()
                .trim()
                .to_owned()
        }
        _ => String::new(),
    }
}

fn free_port() -> Result<u16, PeerError> {
    let l = std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).map_err(PeerError::Port)?;
    Ok(l.local_addr().map_err(PeerError::Port)?.port())
}

fn write(path: &Path, contents: impl AsRef<[u8]>) -> Result<(), PeerError> {
    std::fs::write(path, contents).map_err(|source| PeerError::Write {
        path: path.to_path_buf(),
        source,
    })
}

fn mkdir(path: &Path) -> Result<(), PeerError> {
    std::fs::create_dir_all(path).map_err(|source| PeerError::Write {
        path: path.to_path_buf(),
        source,
    })
}

fn absolute(path: &Path) -> Result<PathBuf, PeerError> {
    std::path::absolute(path).map_err(|source| PeerError::Read {
        path: path.to_path_buf(),
        source,
    })
}

fn log_file(path: &Path) -> Result<Stdio, PeerError> {
    std::fs::File::create(path)
        .map(Stdio::from)
        .map_err(|source| PeerError::Write {
            path: path.to_path_buf(),
            source,
        })
}

/// A plain-HTTP GET over loopback (HTTP/1.0, the connection closes after the answer); returns the
/// status and the body.
pub async fn http_get(
    addr: SocketAddr,
    path: &str,
    timeout: Duration,
) -> Result<(u16, Vec<u8>), PeerError> {
    let fail = |reason: String| PeerError::Http {
        addr,
        path: path.to_owned(),
        reason,
    };
    let exchange = async {
        let mut tcp = TcpStream::connect(addr).await?;
        let request = format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
        tcp.write_all(request.as_bytes()).await?;
        let mut answer = Vec::new();
        tcp.read_to_end(&mut answer).await?;
        Ok::<_, std::io::Error>(answer)
    };
    let answer = match tokio::time::timeout(timeout, exchange).await {
        Ok(Ok(answer)) => answer,
        Ok(Err(e)) => return Err(fail(e.to_string())),
        Err(_) => return Err(fail("timed out".to_owned())),
    };
    let split = memchr::memmem::find(&answer, b"\r\n\r\n")
        .ok_or_else(|| fail("no end of headers".to_owned()))?;
    let head = String::from_utf8_lossy(&answer[..split]);
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| fail(format!("bad status line {:?}", head.lines().next())))?;
    Ok((status, answer[split + 4..].to_vec()))
}

/// Sums the values of every sample of the metric `name` in a Prometheus text exposition whose
/// label set contains `label` (e.g. `success="true"`; empty: any).
pub fn sum_series(text: &str, name: &str, label: &str) -> Option<f64> {
    let mut found = None;
    for line in text.lines() {
        if line.starts_with('#') {
            continue;
        }
        let Some(rest) = line.strip_prefix(name) else {
            continue;
        };
        let (labels, value) = if let Some(after) = rest.strip_prefix('{') {
            match after.split_once('}') {
                Some((labels, value)) => (labels, value),
                None => continue,
            }
        } else if rest.starts_with(' ') {
            ("", rest)
        } else {
            // Another metric whose name starts with `name`.
            continue;
        };
        if !label.is_empty() && !labels.contains(label) {
            continue;
        }
        if let Some(v) = value
            .split_whitespace()
            .next()
            .and_then(|v| v.parse::<f64>().ok())
        {
            *found.get_or_insert(0.0) += v;
        }
    }
    found
}

/// The kubelet addresses of the fleet's node list (`name address:port` per line).
pub fn node_addresses(list: &str) -> Vec<(String, SocketAddr)> {
    list.lines()
        .filter_map(|l| {
            let (name, addr) = l.split_once(' ')?;
            Some((name.to_owned(), addr.trim().parse().ok()?))
        })
        .collect()
}

/// `prometheus.yml` for the fleet in `state_dir` (JSON, which YAML reads as well): one job over
/// every kubelet's `/metrics/resource`, HTTPS with the fleet's CA and client certificate, every
/// `interval`.
pub fn prometheus_config(state_dir: &Path, targets: &[SocketAddr], interval: Duration) -> String {
    let interval_s = super::runner::go_duration(interval);
    let timeout_s = super::runner::go_duration(interval.min(Duration::from_secs(10)));
    let path = |f: &str| state_dir.join(f).display().to_string();
    let config = serde_json::json!({
        "global": {
            "scrape_interval": interval_s,
            "scrape_timeout": timeout_s,
            "evaluation_interval": "1m",
        },
        "scrape_configs": [{
            "job_name": "kubelet-resource",
            "scheme": "https",
            "metrics_path": "/metrics/resource",
            "scrape_interval": interval_s,
            "scrape_timeout": timeout_s,
            "tls_config": {
                "ca_file": path("kubelet-ca.crt"),
                "cert_file": path("kubelet-client.crt"),
                "key_file": path("kubelet-client.key"),
            },
            "static_configs": [{
                "targets": targets.iter().map(|a| a.to_string()).collect::<Vec<_>>(),
            }],
        }],
    });
    // A json! value always encodes.
    serde_json::to_string_pretty(&config).unwrap_or_default()
}

/// Waits until `ready` succeeds, the child exits, or `wait` passes.
async fn wait_ready<F, Fut>(
    peer: &'static str,
    child: &mut Child,
    log: &Path,
    wait: Duration,
    mut ready: F,
) -> Result<(), PeerError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<(), String>>,
{
    let until = Instant::now() + wait;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Err(PeerError::Exited {
                peer,
                status: status.to_string(),
                log: log.to_path_buf(),
            });
        }
        let last = match ready().await {
            Ok(()) => return Ok(()),
            Err(e) => e,
        };
        if Instant::now() > until {
            return Err(PeerError::NotReady {
                peer,
                waited: wait,
                log: log.to_path_buf(),
                last,
            });
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Asks a child to stop (SIGTERM), then kills it and its children if it has not exited within
/// `grace`.
pub async fn stop_tree(child: &mut Child, grace: Duration) {
    let Some(pid) = child.id() else {
        return;
    };
    // SAFETY: signalling a process id we spawned and have not yet reaped.
    unsafe {
        libc::kill(pid as libc::pid_t, libc::SIGTERM);
    }
    if tokio::time::timeout(grace, child.wait()).await.is_err() {
        for c in children(pid) {
            // SAFETY: a child of our own child, found just now in /proc.
            unsafe {
                libc::kill(c as libc::pid_t, libc::SIGKILL);
            }
        }
        let _ = child.kill().await;
    }
}

/// The direct children of `pid`, from `/proc/*/stat`.
pub fn children(pid: u32) -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| {
        let name = e.ok()?.file_name();
        let child: u32 = name.to_str()?.parse().ok()?;
        let stat = std::fs::read_to_string(format!("/proc/{child}/stat")).ok()?;
        // Fields after the command name: state ppid ...
        let rest = stat.get(stat.rfind(')')? + 1..)?;
        let ppid: u32 = rest.split_ascii_whitespace().nth(1)?.parse().ok()?;
        (ppid == pid).then_some(child)
    })
    .collect()
}

/// CPU seconds and resident bytes of a process and its direct children (nginx's master and
/// workers).
pub fn tree_reading(pid: u32) -> Option<procstat::ProcReading> {
    let mut total = procstat::read(pid).ok()?;
    for c in children(pid) {
        if let Ok(r) = procstat::read(c) {
            total.cpu_seconds += r.cpu_seconds;
            total.rss_bytes += r.rss_bytes;
        }
    }
    Some(total)
}

/// Threads of a process, from `/proc/PID/status`.
pub fn threads(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("Threads:"))
        .and_then(|v| v.trim().parse().ok())
}

// ===================================================================================== Prometheus

/// A running Prometheus.
pub struct Prometheus {
    child: Child,
    pub pid: u32,
    pub addr: SocketAddr,
    pub version: String,
    pub targets: usize,
}

impl Prometheus {
    /// Writes `prometheus.yml` for the fleet in `state_dir` and starts Prometheus on a free
    /// loopback port, its TSDB under `state_dir/prometheus`; waits until it is ready and has
    /// scraped every target once (or a bounded time has passed).
    pub async fn start(
        bin: &Path,
        state_dir: &Path,
        interval: Duration,
        log: &Path,
    ) -> Result<Prometheus, PeerError> {
        // Prometheus resolves relative paths in its configuration against the file's directory.
        let state_dir = &absolute(state_dir)?;
        let list_path = state_dir.join(crate::scrape_all::NODES_FILE);
        let list = std::fs::read_to_string(&list_path).map_err(|source| PeerError::Read {
            path: list_path.clone(),
            source,
        })?;
        let targets: Vec<SocketAddr> = node_addresses(&list).into_iter().map(|(_, a)| a).collect();
        if targets.is_empty() {
            return Err(PeerError::NoTargets(list_path));
        }
        let dir = state_dir.join("prometheus");
        // Each run starts from an empty TSDB: one left by earlier runs in the same report
        // directory would be replayed at start (hundreds of MB after a few runs, longer than
        // the wait for readiness) and would grow without bound.
        let data = dir.join("data");
        match std::fs::remove_dir_all(&data) {
            Ok(()) => {}
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
            Err(source) => return Err(PeerError::Write { path: data, source }),
        }
        mkdir(&data)?;
        let config = dir.join("prometheus.yml");
        write(&config, prometheus_config(state_dir, &targets, interval))?;
        let port = free_port()?;
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        let version = version_line(bin, &["--version"]).await;
        let mut child = Command::new(bin)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address={addr}"))
            .arg("--log.level=warn")
            .current_dir(&dir)
            .stdin(Stdio::null())
            .stdout(log_file(log)?)
            .stderr(log_file(&log.with_extension("err.log"))?)
            .kill_on_drop(true)
            .spawn()
            .map_err(|source| PeerError::Spawn {
                peer: "prometheus",
                bin: bin.to_path_buf(),
                source,
            })?;
        let pid = child.id().unwrap_or(0);
        wait_ready(
            "prometheus",
            &mut child,
            log,
            Duration::from_secs(30),
            || async move {
                match http_get(addr, "/-/ready", Duration::from_secs(2)).await {
                    Ok((200, _)) => Ok(()),
                    Ok((status, _)) => Err(format!("status {status}")),
                    Err(e) => Err(e.to_string()),
                }
            },
        )
        .await?;
        let prometheus = Prometheus {
            child,
            pid,
            addr,
            version,
            targets: targets.len(),
        };
        // Prometheus applies discovered targets a few seconds after start; wait until every
        // target has been scraped once, so a short warm-up does not leave it idle in the window.
        let until = Instant::now() + Duration::from_secs(15) + interval * 2;
        while Instant::now() < until {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0.0, |d| d.as_secs_f64());
            match prometheus.query("count(up)", now).await {
                Ok(n) if n >= targets.len() as f64 => break,
                _ => tokio::time::sleep(Duration::from_millis(250)).await,
            }
        }
        Ok(prometheus)
    }

    /// Scrape iterations Prometheus has run so far, over every target
    /// (`prometheus_target_interval_length_seconds_count`: one per scrape after a target's first).
    pub async fn interval_count(addr: SocketAddr) -> Option<f64> {
        let (status, body) = http_get(addr, "/metrics", Duration::from_secs(5))
            .await
            .ok()?;
        if status != 200 {
            return None;
        }
        sum_series(
            &String::from_utf8_lossy(&body),
            "prometheus_target_interval_length_seconds_count",
            "",
        )
    }

    /// Evaluates an instant query at `unix_seconds`; the sum of the result's values (0 for an
    /// empty result).
    pub async fn query(&self, query: &str, unix_seconds: f64) -> Result<f64, PeerError> {
        let fail = |reason: String| PeerError::Query {
            query: query.to_owned(),
            reason,
        };
        let encoded: String = form_urlencoded::Serializer::new(String::new())
            .append_pair("query", query)
            .append_pair("time", &format!("{unix_seconds:.3}"))
            .finish();
        let (status, body) = http_get(
            self.addr,
            &format!("/api/v1/query?{encoded}"),
            Duration::from_secs(30),
        )
        .await
        .map_err(|e| fail(e.to_string()))?;
        let json: serde_json::Value =
            serde_json::from_slice(&body).map_err(|e| fail(format!("status {status}: {e}")))?;
        if json["status"] != "success" {
            return Err(fail(format!("status {status}: {json}")));
        }
        let results = json["data"]["result"]
            .as_array()
            .ok_or_else(|| fail(format!("no result array: {json}")))?;
        let mut sum = 0.0;
        for r in results {
            let v = r["value"][1]
                .as_str()
                .and_then(|s| s.parse::<f64>().ok())
                .ok_or_else(|| fail(format!("no value in {r}")))?;
            sum += v;
        }
        Ok(sum)
    }

    /// Stops Prometheus (SIGTERM; killed after `grace`).
    pub async fn stop(mut self, grace: Duration) {
        stop_tree(&mut self.child, grace).await;
    }
}

/// Samples Prometheus's scrape iteration counter every `every` until `stop`:
/// `(seconds since began, count)`.
pub async fn sample_prometheus(
    addr: SocketAddr,
    every: Duration,
    began: Instant,
    stop: CancellationToken,
) -> Vec<(f64, f64)> {
    let mut points = Vec::new();
    let mut ticker = tokio::time::interval(every);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = stop.cancelled() => break,
        }
        let t = began.elapsed().as_secs_f64();
        if let Some(count) = Prometheus::interval_count(addr).await {
            points.push((t, count));
        }
    }
    points
}

/// Prometheus against the server over the same window.
#[derive(Clone, Debug, Default, Serialize)]
pub struct PrometheusFigures {
    pub version: String,
    pub targets: usize,
    /// Targets whose last scrape in the window succeeded.
    pub targets_up: Option<f64>,
    /// Successful scrapes in the window, from Prometheus's data (`sum_over_time(up[...])`).
    pub scrapes: Option<f64>,
    /// Scrape iterations in the window from its own `/metrics` (successful or not).
    pub iterations: Option<f64>,
    pub cpu_seconds: Option<f64>,
    pub rss_peak_mib: Option<f64>,
    /// The server's successful scrapes in the window (`metrics_server_kubelet_request_total`).
    pub ours_scrapes: Option<f64>,
    pub ours_cpu_seconds: Option<f64>,
    pub ours_rss_peak_mib: Option<f64>,
}

impl PrometheusFigures {
    /// CPU seconds per 1,000 scrapes: (ours, theirs).
    pub fn per_thousand(&self) -> (Option<f64>, Option<f64>) {
        let per = |cpu: Option<f64>, n: Option<f64>| match (cpu, n) {
            (Some(c), Some(n)) if n > 0.0 => Some(c / n * 1000.0),
            _ => None,
        };
        (
            per(self.ours_cpu_seconds, self.ours_scrapes),
            per(self.cpu_seconds, self.scrapes.or(self.iterations)),
        )
    }

    /// The rows of the side-by-side table.
    pub fn side_by_side(&self) -> Vec<SideBySide> {
        let peer = format!("Prometheus ({})", short_version(&self.version));
        let mut rows = Vec::new();
        if let (Some(ours), Some(theirs)) = self.per_thousand() {
            rows.push(SideBySide {
                figure: "CPU-seconds per 1,000 kubelet scrapes".into(),
                ours,
                peer: peer.clone(),
                theirs,
                want: "ratio <= 0.1 (>= 10x less)".into(),
            });
        }
        if let (Some(ours), Some(theirs)) = (self.ours_rss_peak_mib, self.rss_peak_mib) {
            rows.push(SideBySide {
                figure: "peak RSS while scraping (MiB)".into(),
                ours,
                peer: peer.clone(),
                theirs,
                want: String::new(),
            });
        }
        if let (Some(ours), Some(theirs)) = (self.ours_scrapes, self.scrapes.or(self.iterations)) {
            rows.push(SideBySide {
                figure: "successful scrapes in the window".into(),
                ours,
                peer,
                theirs,
                want: "about 1 (same targets, same interval)".into(),
            });
        }
        rows
    }
}

fn short_version(line: &str) -> String {
    // "prometheus, version 2.42.0+ds (branch: ...)" or "nginx version: nginx/1.22.1"
    line.split_whitespace()
        .find(|w| w.chars().next().is_some_and(|c| c.is_ascii_digit()) || w.contains('/'))
        .map(|w| w.trim_start_matches("nginx/").to_owned())
        .unwrap_or_else(|| line.to_owned())
}

// ========================================================================================== nginx

/// A running nginx serving captured bodies.
pub struct Nginx {
    child: Child,
    pub pid: u32,
    pub addr: SocketAddr,
    pub version: String,
    pub workers: u32,
}

fn nginx_quote(s: &str) -> String {
    let mut q = String::with_capacity(s.len() + 2);
    q.push('"');
    for c in s.chars() {
        if matches!(c, '"' | '\\' | '$') {
            q.push('\\');
        }
        q.push(c);
    }
    q.push('"');
    q
}

/// `nginx.conf`: one loopback TLS listener with HTTP/2 (HTTP/1.1 too, by ALPN), each request URI
/// (path and query, exactly as sent) mapped to its captured body under `dir/bodies`.
pub fn nginx_conf(dir: &Path, port: u16, workers: u32, uris: &[(String, String)]) -> String {
    let d = |f: &str| nginx_quote(&dir.join(f).display().to_string());
    let mut map = String::new();
    for (uri, file) in uris {
        let _ = writeln!(
            map,
            "        {} {};",
            nginx_quote(uri),
            nginx_quote(&format!("/{file}"))
        );
    }
    format!(
        r#"# Generated by the load-test harness: serves captured API bodies, loopback only.
daemon off;
master_process on;
worker_processes {workers};
pid {pid};
error_log {error_log} warn;
worker_rlimit_nofile 8192;
events {{
    worker_connections 4096;
}}
http {{
    access_log off;
    client_body_temp_path {tmp_body};
    proxy_temp_path {tmp_proxy};
    fastcgi_temp_path {tmp_fastcgi};
    uwsgi_temp_path {tmp_uwsgi};
    scgi_temp_path {tmp_scgi};
    sendfile on;
    tcp_nodelay on;
    keepalive_timeout 300s;
    keepalive_requests 100000000;
    open_file_cache max=1000 inactive=300s;
    open_file_cache_valid 300s;
    types {{ }}
    default_type application/json;
    map_hash_bucket_size 512;
    map_hash_max_size 8192;
    map $request_uri $body_file {{
        default "";
{map}    }}
    server {{
        listen 127.0.0.1:{port} ssl http2;
        ssl_certificate {cert};
        ssl_certificate_key {key};
        ssl_protocols TLSv1.2 TLSv1.3;
        ssl_session_cache shared:SSL:1m;
        root {root};
        location / {{
            try_files $body_file =404;
        }}
    }}
}}
"#,
        pid = d("nginx.pid"),
        error_log = d("error.log"),
        tmp_body = d("tmp/body"),
        tmp_proxy = d("tmp/proxy"),
        tmp_fastcgi = d("tmp/fastcgi"),
        tmp_uwsgi = d("tmp/uwsgi"),
        tmp_scgi = d("tmp/scgi"),
        cert = d("tls.crt"),
        key = d("tls.key"),
        root = d("bodies"),
    )
}

impl Nginx {
    /// Writes `bodies` (request URI, bytes) as static files under `dir`, a self-signed certificate
    /// for 127.0.0.1 and `nginx.conf`, starts nginx on a free loopback port and waits until it
    /// serves the first body byte for byte.
    pub async fn start(
        bin: &Path,
        dir: &Path,
        workers: u32,
        bodies: &[(String, Bytes)],
    ) -> Result<Nginx, PeerError> {
        // nginx resolves relative paths against its prefix (`-p`).
        let dir = &absolute(dir)?;
        mkdir(&dir.join("bodies"))?;
        mkdir(&dir.join("tmp"))?;
        let mut uris = Vec::new();
        for (i, (uri, body)) in bodies.iter().enumerate() {
            let file = format!("b{i}.json");
            write(&dir.join("bodies").join(&file), body)?;
            uris.push((uri.clone(), file));
        }
        let ca = Authority::new("nginx-ca")?;
        let pair = ca.issue(&LeafSpec::server(
            "nginx",
            &["localhost"],
            &[IpAddr::V4(Ipv4Addr::LOCALHOST)],
        ))?;
        write(&dir.join("tls.crt"), &pair.cert_pem)?;
        write(&dir.join("tls.key"), &pair.key_pem)?;
        let port = free_port()?;
        let conf = dir.join("nginx.conf");
        write(&conf, nginx_conf(dir, port, workers, &uris))?;
        let version = version_line(bin, &["-v"]).await;
        let log = dir.join("error.log");
        let mut child = Command::new(bin)
            .arg("-p")
            .arg(dir)
            .arg("-c")
            .arg(&conf)
            .arg("-e")
            .arg(&log)
            .stdin(Stdio::null())
            .stdout(log_file(&dir.join("stdout.log"))?)
            .stderr(log_file(&dir.join("stderr.log"))?)
            .kill_on_drop(true)
            .spawn()
            .map_err(|source| PeerError::Spawn {
                peer: "nginx",
                bin: bin.to_path_buf(),
                source,
            })?;
        let pid = child.id().unwrap_or(0);
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        let (first_uri, first_body) = match bodies.first() {
            Some((u, b)) => (u.clone(), b.clone()),
            None => ("/".to_owned(), Bytes::new()),
        };
        wait_ready("nginx", &mut child, &log, Duration::from_secs(20), || {
            let uri = first_uri.clone();
            let want = first_body.clone();
            async move {
                let mut probe = Client::new(
                    nginx_target(addr, None),
                    Protocol::H2,
                    Duration::from_secs(2),
                )
                .map_err(|e| e.to_string())?;
                match probe.get(&uri).await {
                    Ok(body) if body == want => Ok(()),
                    Ok(body) => Err(format!(
                        "served {} bytes, not the {} captured",
                        body.len(),
                        want.len()
                    )),
                    Err(e) => Err(e.to_string()),
                }
            }
        })
        .await?;
        Ok(Nginx {
            child,
            pid,
            addr,
            version,
            workers,
        })
    }

    /// Stops nginx (SIGTERM: fast shutdown of master and workers; killed after `grace`).
    pub async fn stop(mut self, grace: Duration) {
        stop_tree(&mut self.child, grace).await;
    }
}

/// Where the load goes for nginx: its certificate is self-signed and not checked.
pub fn nginx_target(addr: SocketAddr, token: Option<String>) -> Target {
    Target {
        addr,
        server_name: "127.0.0.1".to_owned(),
        ca: None,
        token,
    }
}

/// Fetches each distinct path of `streams` from the server once; (URI, body).
pub async fn capture_bodies(
    target: &Target,
    streams: &[Stream],
) -> Result<Vec<(String, Bytes)>, PeerError> {
    let mut client = Client::new(target.clone(), Protocol::H2, Duration::from_secs(60))?;
    let mut seen = BTreeMap::new();
    for path in streams.iter().flat_map(|s| s.paths.iter()) {
        if seen.contains_key(path) {
            continue;
        }
        let body = client.get(path).await.map_err(|e| PeerError::Capture {
            path: path.clone(),
            reason: e.reason,
        })?;
        seen.insert(path.clone(), body);
    }
    Ok(seen.into_iter().collect())
}

/// One shape run against one target for one leg.
#[derive(Clone, Debug, Serialize)]
pub struct Leg {
    pub shape: String,
    /// `ours` or `nginx`.
    pub peer: String,
    pub round: u32,
    pub ok: u64,
    pub errors: u64,
    pub rps: f64,
    pub mb_per_s: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    /// CPU of the serving process (and its children), cores, over the measured part.
    pub serving_cpu_cores: Option<f64>,
    /// CPU of this process (the load generator), cores.
    pub loadgen_cpu_cores: Option<f64>,
    #[serde(skip)]
    pub result: Option<apiload::StreamResult>,
    /// The measured seconds of `result`.
    #[serde(skip)]
    pub span: (usize, usize),
    pub sample_errors: Vec<String>,
}

/// Runs `stream` closed loop against `target` for `warmup + leg` (whole seconds), measuring the
/// last `leg` seconds and the CPU of `serving_pid` (with its children) over them.
pub async fn run_leg(
    target: Target,
    stream: Stream,
    peer: &str,
    round: u32,
    warmup: Duration,
    leg: Duration,
    serving_pid: u32,
) -> Result<Leg, PeerError> {
    let w = warmup.as_secs().max(1);
    let l = leg.as_secs().max(1);
    let began = Instant::now();
    let stop = CancellationToken::new();
    let label = stream.label.clone();
    let task = tokio::spawn(apiload::run_stream(
        target,
        stream,
        Duration::from_secs(10),
        began,
        stop.clone(),
    ));
    tokio::time::sleep_until((began + Duration::from_secs(w)).into()).await;
    let serving0 = tree_reading(serving_pid);
    let self0 = procstat::read(std::process::id()).ok();
    let t0 = Instant::now();
    tokio::time::sleep_until((began + Duration::from_secs(w + l)).into()).await;
    let serving1 = tree_reading(serving_pid);
    let self1 = procstat::read(std::process::id()).ok();
    let span = t0.elapsed().as_secs_f64().max(1e-9);
    stop.cancel();
    let result = match tokio::time::timeout(Duration::from_secs(15), task).await {
        Ok(Ok(r)) => r?,
        _ => {
            return Err(PeerError::Capture {
                path: label,
                reason: "the leg's stream did not stop".into(),
            })
        }
    };
    let (from, to) = (w as usize, (w + l) as usize);
    let win: WindowSummary = result.window(from, to);
    let cores = |a: Option<procstat::ProcReading>, b: Option<procstat::ProcReading>| match (a, b) {
        (Some(a), Some(b)) => Some((b.cpu_seconds - a.cpu_seconds) / span),
        _ => None,
    };
    Ok(Leg {
        shape: label,
        peer: peer.to_owned(),
        round,
        ok: win.ok,
        errors: win.errors,
        rps: win.rps,
        mb_per_s: win.mb_per_s,
        p50_ms: win.p50_ms,
        p99_ms: win.p99_ms,
        serving_cpu_cores: cores(serving0, serving1),
        loadgen_cpu_cores: cores(self0, self1),
        sample_errors: result.sample_errors.clone(),
        result: Some(result),
        span: (from, to),
    })
}

/// What the nginx comparison ran.
#[derive(Clone, Debug, Default, Serialize)]
pub struct NginxFigures {
    pub version: String,
    pub workers: u32,
    /// The server's threads when the legs began.
    pub server_threads: Option<u64>,
    /// Captured bodies: (URI, bytes).
    pub bodies: Vec<(String, usize)>,
    pub legs: Vec<Leg>,
}

impl NginxFigures {
    /// Per shape, the legs of one peer merged: (req/s, MB/s, p50, p99) means over the legs and
    /// percentiles over every request.
    pub fn merged(&self, shape: &str, peer: &str) -> Option<WindowSummary> {
        let legs: Vec<&Leg> = self
            .legs
            .iter()
            .filter(|l| l.shape == shape && l.peer == peer)
            .collect();
        let first = legs.first()?;
        let results: Vec<apiload::StreamResult> =
            legs.iter().filter_map(|l| l.result.clone()).collect();
        if results.is_empty() {
            return None;
        }
        let n = results.len() as f64;
        let mut w = apiload::window_all(&results, first.span.0, first.span.1);
        // window_all adds the legs' requests as if they ran at once; they ran one after another.
        w.rps /= n;
        w.mb_per_s /= n;
        Some(w)
    }

    fn shapes(&self) -> Vec<String> {
        let mut shapes: Vec<String> = Vec::new();
        for l in &self.legs {
            if !shapes.contains(&l.shape) {
                shapes.push(l.shape.clone());
            }
        }
        shapes
    }

    /// The rows of the side-by-side table.
    pub fn side_by_side(&self) -> Vec<SideBySide> {
        let peer = format!(
            "nginx {} ({} worker{})",
            short_version(&self.version),
            self.workers,
            if self.workers == 1 { "" } else { "s" }
        );
        let mut rows = Vec::new();
        for shape in self.shapes() {
            let (Some(ours), Some(theirs)) =
                (self.merged(&shape, "ours"), self.merged(&shape, "nginx"))
            else {
                continue;
            };
            let mut row = |figure: &str, o: f64, t: f64, want: &str| {
                rows.push(SideBySide {
                    figure: format!("{shape}: {figure}"),
                    ours: o,
                    peer: peer.clone(),
                    theirs: t,
                    want: want.to_owned(),
                })
            };
            row("req/s", ours.rps, theirs.rps, "ratio >= 1.0");
            row("MB/s", ours.mb_per_s, theirs.mb_per_s, "ratio >= 1.0");
            row("p50 ms", ours.p50_ms, theirs.p50_ms, "");
            row("p99 ms", ours.p99_ms, theirs.p99_ms, "");
        }
        rows
    }
}

// ========================================================================================= memchr

/// Fetches `/metrics/resource` from up to `n` of the given nodes' kubelets, with the fleet's CA
/// and token from `state_dir`.
pub async fn fetch_kubelet_bodies(
    state_dir: &Path,
    nodes: &[String],
    n: usize,
) -> Result<Vec<Bytes>, PeerError> {
    let list_path = state_dir.join(crate::scrape_all::NODES_FILE);
    let list = std::fs::read_to_string(&list_path).map_err(|source| PeerError::Read {
        path: list_path.clone(),
        source,
    })?;
    let addresses: BTreeMap<String, SocketAddr> = node_addresses(&list).into_iter().collect();
    let token = std::fs::read_to_string(state_dir.join("kubelet-token"))
        .ok()
        .map(|t| t.trim().to_owned());
    let mut bodies = Vec::new();
    let mut last_error = String::from("no healthy node has an address");
    for node in nodes {
        if bodies.len() >= n {
            break;
        }
        let Some(addr) = addresses.get(node) else {
            continue;
        };
        let target = Target {
            addr: *addr,
            server_name: addr.ip().to_string(),
            ca: Some(state_dir.join("kubelet-ca.crt")),
            token: token.clone(),
        };
        let mut client = Client::new(target, Protocol::H2, Duration::from_secs(10))?;
        match client.get("/metrics/resource").await {
            Ok(body) => bodies.push(body),
            Err(e) => last_error = e.to_string(),
        }
    }
    if bodies.is_empty() {
        return Err(PeerError::NoBodies(last_error));
    }
    Ok(bodies)
}

/// This thread's CPU time, seconds.
fn thread_cpu_seconds() -> f64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, exclusively borrowed timespec for the duration of the call.
    if unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) } != 0 {
        return 0.0;
    }
    ts.tv_sec as f64 + ts.tv_nsec as f64 * 1e-9
}

/// Parser against a plain newline scan over the same bodies.
#[derive(Clone, Debug, Default, Serialize)]
pub struct ScanFigures {
    pub bodies: usize,
    pub body_bytes_mean: f64,
    pub lines_mean: f64,
    /// Bodies the parser rejected (left out of both timings).
    pub rejected: usize,
    pub memchr_gb_per_s: f64,
    pub decode_gb_per_s: f64,
    pub memchr_cpu_seconds: f64,
    pub decode_cpu_seconds: f64,
    /// Whether this harness was built with optimisations (timings of a debug build say little).
    pub optimized: bool,
}

impl ScanFigures {
    pub fn side_by_side(&self) -> Vec<SideBySide> {
        vec![SideBySide {
            figure: "kubelet body throughput, GB/s of CPU time".into(),
            ours: self.decode_gb_per_s,
            peer: "memchr newline count".into(),
            theirs: self.memchr_gb_per_s,
            want: "the scan is the floor; ratio = share of it".into(),
        }]
    }
}

/// Times a `memchr` newline count and the server's decoder over `bodies`, each for about `budget`
/// of this thread's CPU time. Blocking: run it off the async runtime.
pub fn time_scans(bodies: &[Bytes], budget: Duration) -> ScanFigures {
    let request_time = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as i64);
    let good: Vec<&Bytes> = bodies
        .iter()
        .filter(|b| metrics_server::parse::decode_resource_metrics(b, request_time).is_ok())
        .collect();
    let mut figures = ScanFigures {
        bodies: good.len(),
        rejected: bodies.len() - good.len(),
        optimized: !cfg!(debug_assertions),
        ..ScanFigures::default()
    };
    if good.is_empty() {
        return figures;
    }
    let total: usize = good.iter().map(|b| b.len()).sum();
    figures.body_bytes_mean = total as f64 / good.len() as f64;
    figures.lines_mean = good
        .iter()
        .map(|b| memchr::memchr_iter(b'\n', b).count())
        .sum::<usize>() as f64
        / good.len() as f64;
    let budget = budget.as_secs_f64();
    let run = |f: &dyn Fn(&[u8])| -> (f64, f64) {
        let start = thread_cpu_seconds();
        let mut bytes = 0usize;
        loop {
            for b in &good {
                f(b);
                bytes += b.len();
            }
            let spent = thread_cpu_seconds() - start;
            if spent >= budget {
                return (bytes as f64 / spent / 1e9, spent);
            }
        }
    };
    let (gbps, spent) = run(&|b| {
        std::hint::black_box(memchr::memchr_iter(b'\n', std::hint::black_box(b)).count());
    });
    figures.memchr_gb_per_s = gbps;
    figures.memchr_cpu_seconds = spent;
    let (gbps, spent) = run(&|b| {
        let decoded =
            metrics_server::parse::decode_resource_metrics(std::hint::black_box(b), request_time);
        std::hint::black_box(&decoded);
    });
    figures.decode_gb_per_s = gbps;
    figures.decode_cpu_seconds = spent;
    figures
}

// ========================================================================================= report

/// What the peers did in a run.
#[derive(Clone, Debug, Default, Serialize)]
pub struct PeersReport {
    /// (peer, why it did not run).
    pub skipped: Vec<(String, String)>,
    pub prometheus: Option<PrometheusFigures>,
    pub nginx: Option<NginxFigures>,
    pub scan: Option<ScanFigures>,
    /// Prometheus's scrape iteration counter over the run: (seconds since began, count).
    #[serde(skip)]
    pub prometheus_counts: Vec<(f64, f64)>,
}

impl PeersReport {
    pub fn skip(&mut self, peer: &str, reason: impl Into<String>) {
        self.skipped.push((peer.to_owned(), reason.into()));
    }

    pub fn is_empty(&self) -> bool {
        self.skipped.is_empty()
            && self.prometheus.is_none()
            && self.nginx.is_none()
            && self.scan.is_none()
    }

    /// Every side-by-side row the peers measured.
    pub fn side_by_side(&self) -> Vec<SideBySide> {
        let mut rows = Vec::new();
        if let Some(p) = &self.prometheus {
            rows.extend(p.side_by_side());
        }
        if let Some(n) = &self.nginx {
            rows.extend(n.side_by_side());
        }
        if let Some(s) = &self.scan {
            rows.extend(s.side_by_side());
        }
        rows
    }

    /// The peers' section of `summary.md`.
    pub fn markdown(&self, fmt: fn(Option<f64>) -> String) -> String {
        let mut md = String::new();
        if self.is_empty() {
            return md;
        }
        let _ = writeln!(md, "\n## Peers\n");
        for (peer, why) in &self.skipped {
            let _ = writeln!(md, "- **{peer} skipped**: {}", why.replace('|', "/"));
        }
        if let Some(p) = &self.prometheus {
            let (ours, theirs) = p.per_thousand();
            let _ = writeln!(
                md,
                "\n### Prometheus\n\n{}, scraping the same {} kubelets at the same interval during the warm-up and the window. \
                 Scrapes counted over the window: ours from `metrics_server_kubelet_request_total{{success=\"true\"}}`, \
                 theirs from `sum_over_time(up[window])` ({} iterations by `prometheus_target_interval_length_seconds_count`). \
                 The fleet serves both scrapers; its CPU is in the process table.\n",
                p.version,
                p.targets,
                fmt(p.iterations)
            );
            let _ = writeln!(
                md,
                "| | ours | Prometheus |\n|---|---|---|\n| CPU-seconds in the window | {} | {} |\n| successful scrapes | {} | {} |\n| CPU-seconds per 1,000 scrapes | {} | {} |\n| peak RSS (MiB) | {} | {} |\n| targets up at the end | | {} of {} |",
                fmt(p.ours_cpu_seconds),
                fmt(p.cpu_seconds),
                fmt(p.ours_scrapes),
                fmt(p.scrapes),
                fmt(ours),
                fmt(theirs),
                fmt(p.ours_rss_peak_mib),
                fmt(p.rss_peak_mib),
                fmt(p.targets_up),
                p.targets
            );
            if let (Some(o), Some(t)) = (ours, theirs) {
                if o > 0.0 && t >= o {
                    let _ = writeln!(
                        md,
                        "\nOurs uses {:.1}x less CPU per scrape than Prometheus (goal: at least 10x).",
                        t / o
                    );
                } else if t > 0.0 {
                    let _ = writeln!(
                        md,
                        "\nOurs uses {:.1}x **more** CPU per scrape than Prometheus (goal: at least 10x less).",
                        o / t
                    );
                }
            }
        }
        if let Some(n) = &self.nginx {
            let _ = writeln!(
                md,
                "\n### nginx\n\n{} with `worker_processes {}`; the server had {} threads. nginx serves the bytes the server answered \
                 for each path (captured once, after the window), from static files over TLS; each shape runs closed loop against \
                 the server and then nginx, with the same concurrency, connections and protocol. The server goes on scraping the \
                 fleet meanwhile.\n",
                n.version,
                n.workers,
                n.server_threads.map_or("n/a".to_owned(), |t| t.to_string())
            );
            let bytes: usize = n.bodies.iter().map(|(_, b)| b).sum();
            let _ = writeln!(
                md,
                "{} bodies captured, {} bytes in all (largest {} bytes).\n",
                n.bodies.len(),
                bytes,
                n.bodies.iter().map(|(_, b)| *b).max().unwrap_or(0)
            );
            let _ = writeln!(
                md,
                "| shape | target | round | ok | errors | req/s | MB/s | p50 ms | p99 ms | serving CPU (cores) | load generator CPU |\n|---|---|---|---|---|---|---|---|---|---|---|"
            );
            for l in &n.legs {
                let _ = writeln!(
                    md,
                    "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                    l.shape,
                    l.peer,
                    l.round + 1,
                    l.ok,
                    l.errors,
                    fmt(Some(l.rps)),
                    fmt(Some(l.mb_per_s)),
                    fmt(Some(l.p50_ms)),
                    fmt(Some(l.p99_ms)),
                    fmt(l.serving_cpu_cores),
                    fmt(l.loadgen_cpu_cores)
                );
            }
            for l in &n.legs {
                for e in &l.sample_errors {
                    let _ = writeln!(
                        md,
                        "\n- `{}` against {} error: {}",
                        l.shape,
                        l.peer,
                        e.replace('|', "/")
                    );
                }
            }
        }
        if let Some(s) = &self.scan {
            let _ = writeln!(
                md,
                "\n### Parser vs memchr\n\n{} kubelet bodies of {:.0} bytes and {:.0} lines on average ({} rejected by the parser), \
                 each pass timed on the thread's CPU clock{}.\n",
                s.bodies,
                s.body_bytes_mean,
                s.lines_mean,
                s.rejected,
                if s.optimized {
                    ""
                } else {
                    " (**debug build of the harness: the timings say little**)"
                }
            );
            let _ = writeln!(
                md,
                "| pass | GB/s | CPU-seconds timed |\n|---|---|---|\n| `memchr_iter(b'\\n', body).count()` | {} | {} |\n| `decode_resource_metrics` | {} | {} |",
                fmt(Some(s.memchr_gb_per_s)),
                fmt(Some(s.memchr_cpu_seconds)),
                fmt(Some(s.decode_gb_per_s)),
                fmt(Some(s.decode_cpu_seconds))
            );
        }
        md
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn series_are_summed_over_matching_labels_only() {
        let text = "# HELP x\n\
            metrics_server_kubelet_request_total{success=\"true\"} 40\n\
            metrics_server_kubelet_request_total{success=\"false\"} 2\n\
            metrics_server_kubelet_request_totally 7\n\
            prometheus_target_interval_length_seconds_count{interval=\"1s\"} 10\n\
            prometheus_target_interval_length_seconds_count{interval=\"15s\"} 5 1700000000000\n";
        assert_eq!(
            sum_series(
                text,
                "metrics_server_kubelet_request_total",
                "success=\"true\""
            ),
            Some(40.0)
        );
        assert_eq!(
            sum_series(text, "metrics_server_kubelet_request_total", ""),
            Some(42.0)
        );
        assert_eq!(
            sum_series(text, "prometheus_target_interval_length_seconds_count", ""),
            Some(15.0)
        );
        assert_eq!(sum_series(text, "absent", ""), None);
    }

    #[test]
    fn the_prometheus_config_scrapes_every_kubelet_with_the_fleets_credentials() {
        let targets: Vec<SocketAddr> = vec![
            "127.0.0.2:10250".parse().expect("addr"),
            "127.0.0.3:10250".parse().expect("addr"),
        ];
        let text = prometheus_config(Path::new("/s"), &targets, Duration::from_secs(15));
        let v: serde_json::Value = serde_json::from_str(&text).expect("JSON, which YAML reads");
        let job = &v["scrape_configs"][0];
        assert_eq!(job["scheme"], "https");
        assert_eq!(job["metrics_path"], "/metrics/resource");
        assert_eq!(job["scrape_interval"], "15s");
        assert_eq!(job["scrape_timeout"], "10s");
        assert_eq!(job["tls_config"]["ca_file"], "/s/kubelet-ca.crt");
        assert_eq!(job["tls_config"]["key_file"], "/s/kubelet-client.key");
        assert_eq!(
            job["static_configs"][0]["targets"],
            serde_json::json!(["127.0.0.2:10250", "127.0.0.3:10250"])
        );
        let fast = prometheus_config(Path::new("/s"), &targets, Duration::from_secs(1));
        assert!(fast.contains("\"scrape_timeout\": \"1s\""), "{fast}");
    }

    #[test]
    fn the_nginx_config_maps_each_uri_with_its_query_to_a_file_on_loopback() {
        let conf = nginx_conf(
            Path::new("/s/nginx"),
            8443,
            2,
            &[(
                "/apis/metrics.k8s.io/v1beta1/namespaces/shop/pods?labelSelector=app%3D\"x\""
                    .into(),
                "b0.json".into(),
            )],
        );
        assert!(conf.contains("listen 127.0.0.1:8443 ssl http2;"), "{conf}");
        assert!(conf.contains("worker_processes 2;"));
        assert!(conf.contains("daemon off;"));
        assert!(conf.contains(
            "\"/apis/metrics.k8s.io/v1beta1/namespaces/shop/pods?labelSelector=app%3D\\\"x\\\"\" \"/b0.json\";"
        ), "{conf}");
        assert!(conf.contains("pid \"/s/nginx/nginx.pid\";"));
        assert!(!conf.contains("0.0.0.0"));
    }

    #[test]
    fn a_missing_binary_is_not_found_and_a_path_must_be_executable() {
        assert_eq!(find_binary("no-such-peer-binary-here"), None);
        assert_eq!(find_binary("/no/such/dir/prometheus"), None);
        let dir = tempfile::tempdir().expect("dir");
        let file = dir.path().join("plain");
        std::fs::write(&file, "x").expect("writes");
        assert_eq!(find_binary(&file.display().to_string()), None);
        assert!(find_binary("sh").is_some(), "sh is on PATH");
    }

    #[test]
    fn cpu_per_thousand_scrapes_prefers_the_completed_scrape_count() {
        let p = PrometheusFigures {
            version: "prometheus, version 2.42.0+ds (branch: x)".into(),
            scrapes: Some(2000.0),
            iterations: Some(2100.0),
            cpu_seconds: Some(4.0),
            ours_scrapes: Some(2000.0),
            ours_cpu_seconds: Some(0.2),
            ..PrometheusFigures::default()
        };
        assert_eq!(p.per_thousand(), (Some(0.1), Some(2.0)));
        let rows = p.side_by_side();
        assert_eq!(rows[0].peer, "Prometheus (2.42.0+ds)");
        assert!(rows[0].ours / rows[0].theirs <= 0.1);
    }

    #[test]
    fn a_newline_scan_and_the_parser_both_report_throughput() {
        let good = Bytes::from(metrics_server::parse::fixtures::realistic_body(3, 2));
        let lines = memchr::memchr_iter(b'\n', &good).count() as f64;
        // The one body the decoder refuses: the kubelet says its own collection failed.
        let bad = Bytes::from_static(b"scrape_error 1\n");
        let s = time_scans(&[good, bad], Duration::from_millis(20));
        assert_eq!((s.bodies, s.rejected), (1, 1), "{s:?}");
        assert_eq!(s.lines_mean, lines);
        assert!(s.memchr_gb_per_s > 0.0 && s.decode_gb_per_s > 0.0, "{s:?}");
        assert!(s.memchr_cpu_seconds >= 0.02 && s.decode_cpu_seconds >= 0.02);
    }
}
