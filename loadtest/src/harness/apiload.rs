//! The API load generator: streams of HTTPS GETs over HTTP/2 or HTTP/1.1, closed loop or at a
//! fixed rate, with a latency histogram per second of the run.
//!
//! Each stream ([`Stream`]) has its own workers and connections. Over HTTP/2 the workers share
//! `connections` connections (requests multiplex); over HTTP/1.1 each worker keeps its own
//! keep-alive connection. At a fixed rate, latency counts from the instant a request was due, not
//! when it was sent, so a stalled server cannot hide its queue (no coordinated omission).
//! The server's certificate is either checked against a CA file or not checked at all, as the
//! metrics server's own certificate is self-signed.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use hdrhistogram::Histogram;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_util::sync::CancellationToken;

use super::case::{Protocol, ShapeKind, ShapeSpec};
use metrics_server::scrape::tls::NoVerification;

use crate::kubelet::workload::{DAEMONSETS, WORKLOADS};

/// Latencies are recorded in microseconds up to this bound; slower answers count as the bound.
const MAX_LATENCY_US: u64 = 120_000_000;

/// Why the load generator could not start.
#[derive(Debug, thiserror::Error)]
pub enum ApiLoadError {
    #[error("reading the CA {path}: {source}")]
    Ca {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("CA: {0}")]
    Pem(#[from] rustls::pki_types::pem::Error),
    #[error("TLS: {0}")]
    Tls(#[from] rustls::Error),
    #[error("server name {0:?} is not valid")]
    ServerName(String),
    #[error("histogram: {0}")]
    Histogram(#[from] hdrhistogram::CreationError),
}

/// Where the load goes.
#[derive(Clone, Debug)]
pub struct Target {
    pub addr: SocketAddr,
    /// The name the certificate is checked against (and the `Host` header).
    pub server_name: String,
    /// Trust only this CA; `None`: accept any certificate.
    pub ca: Option<PathBuf>,
    /// Sent as `Authorization: Bearer ...`.
    pub token: Option<String>,
}

/// One stream to run: its spec and the paths it cycles through.
#[derive(Clone, Debug)]
pub struct Stream {
    pub label: String,
    pub spec: ShapeSpec,
    pub paths: Vec<String>,
}

impl Stream {
    /// The paths a shape requests from a `metrics.k8s.io` server for the fleet's workloads.
    pub fn for_shape(spec: &ShapeSpec) -> Stream {
        let base = "/apis/metrics.k8s.io/v1beta1";
        let paths = match spec.kind {
            ShapeKind::Hpa => DAEMONSETS
                .iter()
                .chain(WORKLOADS.iter())
                .map(|w| {
                    format!(
                        "{base}/namespaces/{}/pods?labelSelector=app.kubernetes.io%2Fname%3D{}",
                        w.namespace, w.name
                    )
                })
                .collect(),
            ShapeKind::TopPodsAll | ShapeKind::Vpa => vec![format!("{base}/pods")],
            ShapeKind::Nodes => vec![format!("{base}/nodes")],
            ShapeKind::Path => vec![spec.path.clone().unwrap_or_else(|| "/".to_owned())],
        };
        Stream {
            label: spec.label(),
            spec: spec.clone(),
            paths,
        }
    }
}

/// What happened in one second of the run.
#[derive(Clone, Debug)]
pub struct Second {
    /// Latency of successful requests, microseconds.
    pub latency: Histogram<u64>,
    pub ok: u64,
    pub errors: u64,
    pub bytes: u64,
}

impl Second {
    fn new() -> Result<Self, hdrhistogram::CreationError> {
        Ok(Second {
            // Two significant figures keep a second's histogram small (a few KiB) for long runs.
            latency: Histogram::new_with_bounds(1, MAX_LATENCY_US, 2)?,
            ok: 0,
            errors: 0,
            bytes: 0,
        })
    }

    fn absorb(&mut self, other: &Second) {
        // Both histograms share bounds, so adding cannot fail; a failure would only lose
        // latency points, never counts.
        let _ = self.latency.add(&other.latency);
        self.ok += other.ok;
        self.errors += other.errors;
        self.bytes += other.bytes;
    }

    fn clear(&mut self) {
        self.latency.reset();
        self.ok = 0;
        self.errors = 0;
        self.bytes = 0;
    }
}

/// A stream's outcome: one [`Second`] per second since the run began.
#[derive(Clone, Debug)]
pub struct StreamResult {
    pub label: String,
    pub seconds: Vec<Second>,
    /// The first few distinct failures, for the report.
    pub sample_errors: Vec<String>,
}

/// Figures over a window of seconds.
#[derive(Clone, Debug, PartialEq)]
pub struct WindowSummary {
    pub ok: u64,
    pub errors: u64,
    pub bytes: u64,
    pub seconds: f64,
    pub rps: f64,
    pub mb_per_s: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
}

impl StreamResult {
    /// Figures over seconds `[from, to)` of the run.
    pub fn window(&self, from: usize, to: usize) -> WindowSummary {
        summarize(
            self.seconds.iter().skip(from).take(to.saturating_sub(from)),
            to.saturating_sub(from),
        )
    }
}

/// Figures over several streams' seconds `[from, to)`, merged.
pub fn window_all(results: &[StreamResult], from: usize, to: usize) -> WindowSummary {
    let span = to.saturating_sub(from);
    summarize(
        results
            .iter()
            .flat_map(|r| r.seconds.iter().skip(from).take(span)),
        span,
    )
}

fn summarize<'a>(seconds: impl Iterator<Item = &'a Second>, span: usize) -> WindowSummary {
    let mut total = match Second::new() {
        Ok(s) => s,
        Err(_) => return empty_window(),
    };
    for s in seconds {
        total.absorb(s);
    }
    let secs = span.max(1) as f64;
    let q = |q: f64| total.latency.value_at_quantile(q) as f64 / 1000.0;
    let has = !total.latency.is_empty();
    WindowSummary {
        ok: total.ok,
        errors: total.errors,
        bytes: total.bytes,
        seconds: span as f64,
        rps: total.ok as f64 / secs,
        mb_per_s: total.bytes as f64 / secs / 1e6,
        p50_ms: if has { q(0.5) } else { 0.0 },
        p99_ms: if has { q(0.99) } else { 0.0 },
        p999_ms: if has { q(0.999) } else { 0.0 },
        max_ms: if has {
            total.latency.max() as f64 / 1000.0
        } else {
            0.0
        },
    }
}

fn empty_window() -> WindowSummary {
    WindowSummary {
        ok: 0,
        errors: 0,
        bytes: 0,
        seconds: 0.0,
        rps: 0.0,
        mb_per_s: 0.0,
        p50_ms: 0.0,
        p99_ms: 0.0,
        p999_ms: 0.0,
        max_ms: 0.0,
    }
}

/// A TLS client configuration for `target`, offering `protocol` by ALPN.
pub fn tls_connector(target: &Target, protocol: Protocol) -> Result<TlsConnector, ApiLoadError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()?;
    let mut config = match &target.ca {
        Some(path) => {
            let pem = std::fs::read(path).map_err(|source| ApiLoadError::Ca {
                path: path.clone(),
                source,
            })?;
            let mut roots = rustls::RootCertStore::empty();
            for cert in CertificateDer::pem_slice_iter(&pem) {
                roots.add(cert?)?;
            }
            builder.with_root_certificates(roots).with_no_client_auth()
        }
        None => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(NoVerification::new(provider)))
            .with_no_client_auth(),
    };
    config.alpn_protocols = match protocol {
        Protocol::H2 => vec![b"h2".to_vec()],
        Protocol::Http1 => vec![b"http/1.1".to_vec()],
    };
    Ok(TlsConnector::from(Arc::new(config)))
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A connection of either protocol.
#[derive(Clone)]
enum Conn {
    H2(hyper::client::conn::http2::SendRequest<Empty<Bytes>>),
    /// HTTP/1.1 senders are not shared: each worker owns one.
    H1(Arc<tokio::sync::Mutex<hyper::client::conn::http1::SendRequest<Empty<Bytes>>>>),
}

impl Conn {
    fn is_closed(&self) -> bool {
        match self {
            Conn::H2(s) => s.is_closed(),
            Conn::H1(s) => s.try_lock().map(|s| s.is_closed()).unwrap_or(false),
        }
    }
}

struct Dialer {
    target: Target,
    protocol: Protocol,
    connector: TlsConnector,
    server_name: ServerName<'static>,
}

impl Dialer {
    async fn open(&self) -> Result<Conn, BoxError> {
        let tcp = TcpStream::connect(self.target.addr).await?;
        tcp.set_nodelay(true)?;
        let tls = self
            .connector
            .connect(self.server_name.clone(), tcp)
            .await?;
        let io = TokioIo::new(tls);
        match self.protocol {
            Protocol::H2 => {
                let (send, conn) =
                    hyper::client::conn::http2::handshake(TokioExecutor::new(), io).await?;
                tokio::spawn(conn);
                Ok(Conn::H2(send))
            }
            Protocol::Http1 => {
                let (send, conn) = hyper::client::conn::http1::handshake(io).await?;
                tokio::spawn(conn);
                Ok(Conn::H1(Arc::new(tokio::sync::Mutex::new(send))))
            }
        }
    }

    async fn send(
        &self,
        conn: &Conn,
        path: &str,
    ) -> Result<http::Response<hyper::body::Incoming>, BoxError> {
        let authority = match self.target.addr {
            SocketAddr::V4(a) => format!("{}:{}", a.ip(), a.port()),
            SocketAddr::V6(a) => format!("[{}]:{}", a.ip(), a.port()),
        };
        let mut req = http::Request::get(match conn {
            Conn::H2(_) => format!("https://{authority}{path}"),
            Conn::H1(_) => path.to_owned(),
        })
        .header("accept", "application/json");
        if matches!(conn, Conn::H1(_)) {
            req = req.header("host", authority.as_str());
        }
        if let Some(token) = &self.target.token {
            req = req.header("authorization", format!("Bearer {token}"));
        }
        let req = req.body(Empty::<Bytes>::new())?;
        Ok(match conn {
            Conn::H2(send) => {
                let mut send = send.clone();
                send.ready().await?;
                send.send_request(req).await?
            }
            Conn::H1(send) => {
                let mut send = send.lock().await;
                send.ready().await?;
                send.send_request(req).await?
            }
        })
    }

    /// Sends one GET and reads the whole body without keeping it; returns its length.
    async fn get(&self, conn: &Conn, path: &str) -> Result<u64, BoxError> {
        let response = self.send(conn, path).await?;
        let status = response.status();
        let mut body = response.into_body();
        let mut bytes = 0u64;
        while let Some(frame) = body.frame().await {
            if let Some(data) = frame?.data_ref() {
                bytes += data.len() as u64;
            }
        }
        if !status.is_success() {
            return Err(format!("status {status}").into());
        }
        Ok(bytes)
    }

    /// Sends one GET and returns the body of a 2xx answer.
    async fn get_body(&self, conn: &Conn, path: &str) -> Result<Bytes, BoxError> {
        let response = self.send(conn, path).await?;
        let status = response.status();
        let body = response.into_body().collect().await?.to_bytes();
        if !status.is_success() {
            return Err(format!("status {status}").into());
        }
        Ok(body)
    }
}

/// A single client connection for occasional requests (probes, `/metrics` scrapes), reopened
/// when it breaks.
pub struct Client {
    dialer: Dialer,
    conn: Option<Conn>,
    timeout: Duration,
}

/// Why a single request failed.
#[derive(Debug, thiserror::Error)]
#[error("GET {path}: {reason}")]
pub struct RequestError {
    pub path: String,
    pub reason: String,
}

impl Client {
    pub fn new(
        target: Target,
        protocol: Protocol,
        timeout: Duration,
    ) -> Result<Client, ApiLoadError> {
        let connector = tls_connector(&target, protocol)?;
        let server_name = ServerName::try_from(target.server_name.clone())
            .map_err(|_| ApiLoadError::ServerName(target.server_name.clone()))?;
        Ok(Client {
            dialer: Dialer {
                target,
                protocol,
                connector,
                server_name,
            },
            conn: None,
            timeout,
        })
    }

    /// GETs `path` and returns the body of a 2xx answer.
    pub async fn get(&mut self, path: &str) -> Result<Bytes, RequestError> {
        let fail = |reason: String| RequestError {
            path: path.to_owned(),
            reason,
        };
        let outcome = tokio::time::timeout(self.timeout, async {
            if self.conn.as_ref().is_none_or(Conn::is_closed) {
                self.conn = Some(self.dialer.open().await?);
            }
            match &self.conn {
                Some(conn) => self.dialer.get_body(conn, path).await,
                None => Err::<Bytes, BoxError>("no connection".into()),
            }
        })
        .await;
        match outcome {
            Ok(Ok(body)) => Ok(body),
            Ok(Err(error)) => {
                self.conn = None;
                Err(fail(error.to_string()))
            }
            Err(_) => {
                self.conn = None;
                Err(fail("timed out".to_owned()))
            }
        }
    }
}

/// Per-second results shared by a stream's workers; each worker adds its own second's figures
/// when the second turns, so the lock is taken about once per worker per second.
struct Shared {
    /// std Mutex, not tokio's: sections only add histograms and never await.
    seconds: Mutex<Vec<Second>>,
    errors: Mutex<Vec<String>>,
}

impl Shared {
    fn flush(&self, second: usize, local: &mut Second) {
        if local.ok == 0 && local.errors == 0 {
            return;
        }
        let mut all = self.seconds.lock().unwrap_or_else(|e| e.into_inner());
        while all.len() <= second {
            match Second::new() {
                Ok(s) => all.push(s),
                Err(_) => return,
            }
        }
        all[second].absorb(local);
        local.clear();
    }

    fn note_error(&self, error: &str) {
        let mut errors = self.errors.lock().unwrap_or_else(|e| e.into_inner());
        if errors.len() < 5 && !errors.iter().any(|e| e == error) {
            errors.push(error.to_owned());
        }
    }
}

/// Runs `stream` against `target` from `began` until `stop`; per-second figures are indexed by
/// whole seconds since `began`.
pub async fn run_stream(
    target: Target,
    stream: Stream,
    timeout: Duration,
    began: Instant,
    stop: CancellationToken,
) -> Result<StreamResult, ApiLoadError> {
    let protocol = stream.spec.protocol;
    let connector = tls_connector(&target, protocol)?;
    let server_name = ServerName::try_from(target.server_name.clone())
        .map_err(|_| ApiLoadError::ServerName(target.server_name.clone()))?;
    let dialer = Arc::new(Dialer {
        target,
        protocol,
        connector,
        server_name,
    });
    Second::new()?;
    let shared = Arc::new(Shared {
        seconds: Mutex::new(Vec::new()),
        errors: Mutex::new(Vec::new()),
    });
    let workers = stream.spec.concurrency.max(1);
    let connections = match protocol {
        Protocol::H2 => stream.spec.connections.unwrap_or(1).clamp(1, workers),
        Protocol::Http1 => workers,
    };
    let mut pool: Vec<Option<Conn>> = Vec::with_capacity(connections as usize);
    for _ in 0..connections {
        let opened = tokio::select! {
            opened = tokio::time::timeout(timeout, dialer.open()) => opened,
            _ = stop.cancelled() => break,
        };
        match opened {
            Ok(Ok(conn)) => pool.push(Some(conn)),
            Ok(Err(error)) => {
                shared.note_error(&format!("connect: {error}"));
                pool.push(None);
            }
            Err(_) => {
                shared.note_error("connect: timed out");
                pool.push(None);
            }
        }
    }
    // Each worker's period at a fixed rate; workers start spread over one period.
    let period = stream
        .spec
        .target_rate()
        .map(|rate| Duration::from_secs_f64(f64::from(workers) / rate.max(1e-9)));
    let paths = Arc::new(stream.paths.clone());
    let mut tasks = tokio::task::JoinSet::new();
    for w in 0..workers {
        let conn = pool.get((w % connections) as usize).cloned().flatten();
        let dialer = dialer.clone();
        let shared = shared.clone();
        let paths = paths.clone();
        let stop = stop.clone();
        let offset = period.map(|p| p.mul_f64(f64::from(w) / f64::from(workers)));
        tasks.spawn(async move {
            worker(WorkerArgs {
                index: w as usize,
                conn,
                dialer,
                shared,
                paths,
                period,
                offset,
                timeout,
                began,
                stop,
            })
            .await
        });
    }
    while tasks.join_next().await.is_some() {}
    let seconds = std::mem::take(&mut *shared.seconds.lock().unwrap_or_else(|e| e.into_inner()));
    let sample_errors =
        std::mem::take(&mut *shared.errors.lock().unwrap_or_else(|e| e.into_inner()));
    Ok(StreamResult {
        label: stream.label,
        seconds,
        sample_errors,
    })
}

struct WorkerArgs {
    index: usize,
    conn: Option<Conn>,
    dialer: Arc<Dialer>,
    shared: Arc<Shared>,
    paths: Arc<Vec<String>>,
    period: Option<Duration>,
    offset: Option<Duration>,
    timeout: Duration,
    began: Instant,
    stop: CancellationToken,
}

async fn worker(mut a: WorkerArgs) {
    let Ok(mut local) = Second::new() else {
        return;
    };
    let mut local_second = a.began.elapsed().as_secs() as usize;
    let mut due = Instant::now() + a.offset.unwrap_or_default();
    let mut n = a.index;
    loop {
        if let Some(period) = a.period {
            tokio::select! {
                _ = tokio::time::sleep_until(due.into()) => {}
                _ = a.stop.cancelled() => break,
            }
            // A worker that fell behind skips what it missed rather than bursting.
            let now = Instant::now();
            due += period;
            if due < now {
                due = now;
            }
        } else if a.stop.is_cancelled() {
            break;
        }
        let intended = if a.period.is_some() {
            due.checked_sub(a.period.unwrap_or_default()).unwrap_or(due)
        } else {
            Instant::now()
        };
        let path = &a.paths[n % a.paths.len().max(1)];
        n = n.wrapping_add(1);
        let outcome = tokio::select! {
            outcome = tokio::time::timeout(a.timeout, async {
                if a.conn.as_ref().is_none_or(Conn::is_closed) {
                    a.conn = Some(a.dialer.open().await?);
                }
                match &a.conn {
                    Some(conn) => a.dialer.get(conn, path).await,
                    None => Err::<u64, BoxError>("no connection".into()),
                }
            }) => outcome,
            _ = a.stop.cancelled() => break,
        };
        let done = Instant::now();
        let second = done.saturating_duration_since(a.began).as_secs() as usize;
        if second != local_second {
            a.shared.flush(local_second, &mut local);
            local_second = second;
        }
        match outcome {
            Ok(Ok(bytes)) => {
                let us = done.saturating_duration_since(intended).as_micros() as u64;
                local.latency.saturating_record(us.clamp(1, MAX_LATENCY_US));
                local.ok += 1;
                local.bytes += bytes;
            }
            Ok(Err(error)) => {
                local.errors += 1;
                a.shared.note_error(&error.to_string());
                a.conn = None;
            }
            Err(_) => {
                local.errors += 1;
                a.shared.note_error("timed out");
                a.conn = None;
            }
        }
    }
    a.shared.flush(local_second, &mut local);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn second(latencies_us: &[u64], errors: u64) -> Second {
        let mut s = Second::new().expect("histogram");
        for &l in latencies_us {
            s.latency.record(l).expect("in range");
            s.ok += 1;
            s.bytes += 1000;
        }
        s.errors = errors;
        s
    }

    #[test]
    fn a_window_merges_its_seconds_only() {
        let r = StreamResult {
            label: "x".into(),
            seconds: vec![
                second(&[100_000; 10], 5),
                second(&[1_000; 99], 0),
                second(&[2_000], 1),
            ],
            sample_errors: vec![],
        };
        let w = r.window(1, 3);
        assert_eq!(w.ok, 100);
        assert_eq!(w.errors, 1);
        assert!((w.rps - 50.0).abs() < 1e-9);
        assert!((w.p50_ms - 1.0).abs() < 0.02, "{w:?}");
        assert!((w.max_ms - 2.0).abs() < 0.03, "{w:?}");
        assert!((w.mb_per_s - 0.05).abs() < 1e-9);
    }

    #[test]
    fn hpa_paths_cover_every_workload_namespace() {
        let spec: ShapeSpec = toml::from_str("kind = \"hpa\"").expect("spec");
        let stream = Stream::for_shape(&spec);
        assert_eq!(stream.paths.len(), DAEMONSETS.len() + WORKLOADS.len());
        assert!(stream
            .paths
            .iter()
            .any(|p| p.contains("/namespaces/shop/pods?labelSelector=")));
    }

    #[tokio::test]
    async fn both_protocols_load_a_loopback_kubelet_without_checking_its_certificate() {
        let dir = tempfile::tempdir().expect("dir");
        let fleet = crate::fleet::Fleet::builder()
            .nodes(1)
            .pods_per_node(2)
            .port(0)
            .start(dir.path())
            .await
            .expect("starts");
        let (_, addr) = fleet.addresses().into_iter().next().expect("a node");
        for protocol in ["h2", "http1"] {
            let spec: ShapeSpec = toml::from_str(&format!(
                "kind = \"path\"\npath = \"/metrics/resource\"\nprotocol = \"{protocol}\"\nconcurrency = 2\n"
            ))
            .expect("spec");
            let target = Target {
                addr,
                server_name: addr.ip().to_string(),
                ca: None,
                token: Some(fleet.token().to_owned()),
            };
            let stop = CancellationToken::new();
            let began = Instant::now();
            let task = tokio::spawn(run_stream(
                target,
                Stream::for_shape(&spec),
                Duration::from_secs(5),
                began,
                stop.clone(),
            ));
            // Stop once the kubelet has answered a few requests of this stream. The kubelet counts
            // a body when it sends it; with two closed-loop workers, at most two of those are
            // still being read by the client, so 12 sent bodies mean at least 10 completed.
            let before = fleet.total_counts().bodies;
            let deadline = Instant::now() + Duration::from_secs(20);
            while fleet.total_counts().bodies < before + 12 && Instant::now() < deadline {
                tokio::task::yield_now().await;
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            stop.cancel();
            let result = task.await.expect("joins").expect("runs");
            let all = result.window(0, result.seconds.len());
            assert!(
                all.ok >= 10,
                "{protocol}: {all:?} {:?}",
                result.sample_errors
            );
            assert_eq!(all.errors, 0, "{protocol}: {:?}", result.sample_errors);
            assert!(all.bytes > 0);
        }
        fleet.shutdown().await;
    }
}
