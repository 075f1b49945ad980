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
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;

use hdrhistogram::Histogram;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;
use tokio_util::sync::CancellationToken;

use super::case::{Protocol, ShapeKind, ShapeSpec};
use super::h2_pipeline;
use metrics_server::scrape::tls::NoVerification;

use crate::kubelet::workload::Catalogue;

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
    #[error("building the stream's requests: {0}")]
    Request(String),
    #[error("starting the stream's thread: {0}")]
    Runtime(std::io::Error),
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
    /// When the measured window opens, if the run has a warm-up. An open-loop schedule starts
    /// over then: requests that fell due during warm-up and are still unsent (the server fell
    /// behind while it warmed up) are dropped and counted, not carried into the window, whose
    /// latencies then show how the server keeps up with the rate from there on.
    pub schedule_restart: Option<Instant>,
}

impl Stream {
    /// The paths a shape requests from a `metrics.k8s.io` server for a fleet whose workloads
    /// are `catalogue` (rebuilt from the case: [`Catalogue::new`] with its seed and size).
    ///
    /// HPA: one path per Deployment or StatefulSet with pods, as the HPA controller asks for its
    /// target's pods: the target's namespace and its label selector. A cluster with none (no
    /// slot past the DaemonSets) gets the DaemonSets' selections instead, so the stream still
    /// has paths.
    pub fn for_shape(spec: &ShapeSpec, catalogue: &Catalogue) -> Stream {
        let base = "/apis/metrics.k8s.io/v1beta1";
        let selection = |namespace: &str, name: &str| {
            format!(
                "{base}/namespaces/{namespace}/pods?labelSelector=app.kubernetes.io%2Fname%3D{name}"
            )
        };
        let paths = match spec.kind {
            ShapeKind::Hpa => {
                let mut paths: Vec<String> = catalogue
                    .hpa_targets()
                    .map(|w| selection(&w.namespace, &w.name))
                    .collect();
                if paths.is_empty() {
                    paths = catalogue
                        .daemonsets()
                        .iter()
                        .map(|w| selection(&w.namespace, &w.name))
                        .collect();
                }
                paths
            }
            ShapeKind::TopPodsAll | ShapeKind::Vpa => vec![format!("{base}/pods")],
            ShapeKind::Nodes => vec![format!("{base}/nodes")],
            ShapeKind::Path => vec![spec.path.clone().unwrap_or_else(|| "/".to_owned())],
        };
        Stream {
            label: spec.label(),
            spec: spec.clone(),
            paths,
            schedule_restart: None,
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
    /// An empty second.
    pub fn new() -> Result<Self, hdrhistogram::CreationError> {
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
    /// Requests due during warm-up and still unsent when the window opened, dropped by the
    /// schedule's restart (see [`Stream::schedule_restart`]).
    pub dropped_at_window: u64,
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
pub fn window_all<'a>(
    results: impl IntoIterator<Item = &'a StreamResult>,
    from: usize,
    to: usize,
) -> WindowSummary {
    let span = to.saturating_sub(from);
    summarize(
        results
            .into_iter()
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
    /// A TCP connection to the target (no Nagle delay) with TLS on it.
    async fn connect_tls(&self) -> Result<TlsStream<TcpStream>, BoxError> {
        let tcp = TcpStream::connect(self.target.addr).await?;
        tcp.set_nodelay(true)?;
        Ok(self
            .connector
            .connect(self.server_name.clone(), tcp)
            .await?)
    }

    async fn open(&self) -> Result<Conn, BoxError> {
        let io = TokioIo::new(self.connect_tls().await?);
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

/// Per-second results shared by a stream's drivers; each driver adds its own second's figures
/// when the second turns, so the lock is taken about once per driver per second.
struct Shared {
    /// std Mutex, not tokio's: sections only add histograms and never await.
    seconds: Mutex<Vec<Second>>,
    errors: Mutex<Vec<String>>,
    dropped_at_window: AtomicU64,
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

/// A stream's requests, built once. Over HTTP/1.1 (through hyper) per request only the header
/// map is new, the URI and header values are shared buffers; over HTTP/2 a request is its path
/// and the connection's repeated fields.
struct Prepared {
    paths: Vec<String>,
    /// Origin-form, one per path (HTTP/1.1).
    uris: Vec<http::Uri>,
    host: http::HeaderValue,
    authorization: Option<http::HeaderValue>,
    /// The fields every HTTP/2 request repeats.
    fields: h2_pipeline::Fields,
}

impl Prepared {
    fn new(target: &Target, paths: &[String]) -> Result<Prepared, BoxError> {
        let authority = match target.addr {
            SocketAddr::V4(a) => format!("{}:{}", a.ip(), a.port()),
            SocketAddr::V6(a) => format!("[{}]:{}", a.ip(), a.port()),
        };
        let mut uris = Vec::with_capacity(paths.len());
        for path in paths {
            // From `Bytes`, so a clone shares the buffer instead of copying the string.
            uris.push(http::Uri::from_maybe_shared(Bytes::from(path.clone()))?);
        }
        let bearer = target.token.as_ref().map(|token| format!("Bearer {token}"));
        let authorization = match &bearer {
            Some(value) => Some(http::HeaderValue::from_maybe_shared(Bytes::from(
                value.clone(),
            ))?),
            None => None,
        };
        Ok(Prepared {
            paths: paths.to_vec(),
            uris,
            host: http::HeaderValue::from_maybe_shared(Bytes::from(authority.clone()))?,
            authorization,
            fields: h2_pipeline::Fields {
                authority,
                accept: "application/json",
                authorization: bearer,
            },
        })
    }

    fn path(&self, n: usize) -> &str {
        self.paths
            .get(n % self.paths.len().max(1))
            .map_or("/", String::as_str)
    }

    /// Request `n` over HTTP/1.1.
    fn request(&self, n: usize) -> http::Request<Empty<Bytes>> {
        let mut req = http::Request::new(Empty::new());
        if let Some(uri) = self.uris.get(n % self.uris.len().max(1)) {
            *req.uri_mut() = uri.clone();
        }
        let headers = req.headers_mut();
        headers.insert(
            http::header::ACCEPT,
            http::HeaderValue::from_static("application/json"),
        );
        headers.insert(http::header::HOST, self.host.clone());
        if let Some(value) = &self.authorization {
            headers.insert(http::header::AUTHORIZATION, value.clone());
        }
        req
    }
}

/// Runs `stream` against `target` from `began` until `stop`; per-second figures are indexed by
/// whole seconds since `began`.
///
/// One driver task per connection: over HTTP/2 the stream's `concurrency` is split over its
/// `connections` (each driver keeps up to its share of requests in flight on its connection);
/// over HTTP/1.1 each of `concurrency` connections has one request in flight. At a fixed rate
/// the schedule is open loop: request `k` is due at `k / rate` and goes out then, whatever is
/// still in flight, unless its driver already has its share in flight, in which case it waits
/// for a slot and its latency counts that wait. Closed loop, a driver refills a slot as soon as
/// an answer is read.
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
    let prepared =
        Prepared::new(&target, &stream.paths).map_err(|e| ApiLoadError::Request(e.to_string()))?;
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
        dropped_at_window: AtomicU64::new(0),
    });
    let restart = stream.schedule_restart;
    let concurrency = stream.spec.concurrency.max(1);
    let connections = match protocol {
        Protocol::H2 => stream.spec.connections.unwrap_or(1).clamp(1, concurrency),
        Protocol::Http1 => concurrency,
    };
    let rate = stream.spec.target_rate().filter(|r| *r > 0.0);
    let prepared = Arc::new(prepared);
    // The stream runs on a thread of its own with a single-threaded runtime: its drivers and
    // their connections' tasks wake each other without crossing threads, and the stream uses
    // at most one core whatever else this process runs.
    let (done_tx, done_rx) = tokio::sync::oneshot::channel::<()>();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(ApiLoadError::Runtime)?;
    let drivers_shared = shared.clone();
    let stop_all = stop.clone();
    std::thread::Builder::new()
        .name(format!("load-{}", stream.label))
        .spawn(move || {
            runtime.block_on(async move {
                let start = Instant::now();
                let mut tasks = tokio::task::JoinSet::new();
                for c in 0..connections {
                    // Connection c sends requests c, c + C, c + 2C, ... of the schedule.
                    let schedule = rate.map(|rate| Schedule {
                        first: start + Duration::from_secs_f64(f64::from(c) / rate),
                        period: Duration::from_secs_f64(f64::from(connections) / rate),
                    });
                    let cap = concurrency / connections + u32::from(c < concurrency % connections);
                    let driver = Driver {
                        first_path: c as usize,
                        path_step: connections as usize,
                        cap: cap.max(1) as usize,
                        schedule,
                        restart,
                        dialer: dialer.clone(),
                        prepared: prepared.clone(),
                        shared: drivers_shared.clone(),
                        timeout,
                        began,
                        stop: stop_all.clone(),
                    };
                    match protocol {
                        Protocol::H2 => tasks.spawn(drive_h2(driver)),
                        Protocol::Http1 => tasks.spawn(drive_http1(driver)),
                    };
                }
                while tasks.join_next().await.is_some() {}
            });
            // Dropping the runtime here ends the connections' tasks before the result is read.
            drop(runtime);
            let _ = done_tx.send(());
        })
        .map_err(ApiLoadError::Runtime)?;
    // The sender is dropped, sent or not, when the thread ends: either way the drivers are done.
    let _ = done_rx.await;
    let seconds = std::mem::take(&mut *shared.seconds.lock().unwrap_or_else(|e| e.into_inner()));
    let sample_errors =
        std::mem::take(&mut *shared.errors.lock().unwrap_or_else(|e| e.into_inner()));
    Ok(StreamResult {
        label: stream.label,
        seconds,
        sample_errors,
        dropped_at_window: shared.dropped_at_window.load(Ordering::Relaxed),
    })
}

/// An open-loop schedule: due instants `first + k * period`.
#[derive(Clone, Copy, Debug)]
struct Schedule {
    first: Instant,
    period: Duration,
}

impl Schedule {
    /// Where a schedule whose next request is due at `due` goes on from `at`: the first due
    /// instant at or after `at` in the same phase, and how many due instants were skipped.
    fn restarted(self, due: Instant, at: Instant) -> (Instant, u64) {
        if due >= at || self.period.is_zero() {
            return (due, 0);
        }
        let behind = at.duration_since(due).as_nanos();
        let period = self.period.as_nanos();
        let skipped = behind.div_ceil(period);
        let step = u32::try_from(skipped).unwrap_or(u32::MAX);
        (due + self.period * step, u64::from(step))
    }
}

/// One connection's share of a stream.
struct Driver {
    first_path: usize,
    path_step: usize,
    /// Requests in flight at most.
    cap: usize,
    /// `None`: closed loop.
    schedule: Option<Schedule>,
    /// When the schedule starts over (see [`Stream::schedule_restart`]).
    restart: Option<Instant>,
    dialer: Arc<Dialer>,
    prepared: Arc<Prepared>,
    shared: Arc<Shared>,
    timeout: Duration,
    began: Instant,
    stop: CancellationToken,
}

/// A driver's place in its schedule.
struct Pacer {
    /// `None`: closed loop.
    schedule: Option<Schedule>,
    next_due: Option<Instant>,
    /// When the schedule starts over (see [`Stream::schedule_restart`]); cleared once done.
    restart: Option<Instant>,
}

impl Pacer {
    fn new(d: &Driver) -> Self {
        Pacer {
            schedule: d.schedule,
            next_due: d.schedule.map(|s| s.first),
            restart: d.restart,
        }
    }

    /// Starts the schedule over once `now` passes the restart instant, counting what it drops.
    fn restart_at(&mut self, now: Instant, shared: &Shared) {
        if let (Some(at), Some(schedule), Some(due)) = (self.restart, self.schedule, self.next_due)
        {
            if now >= at {
                self.restart = None;
                let (next, dropped) = schedule.restarted(due, at);
                self.next_due = Some(next);
                shared
                    .dropped_at_window
                    .fetch_add(dropped, Ordering::Relaxed);
            }
        }
    }

    /// The instant a request sent `now` was intended for: its due instant in an open loop (if it
    /// is due), `now` in a closed loop.
    fn take(&mut self, now: Instant) -> Option<Instant> {
        match (self.next_due, self.schedule) {
            (Some(due), Some(s)) if due <= now => {
                self.next_due = Some(due + s.period);
                Some(due)
            }
            (Some(_), _) => None,
            (None, _) => Some(now),
        }
    }
}

/// A driver's figures for the second under way, added to the stream's when the second turns.
struct Tally {
    local: Second,
    second: usize,
}

impl Tally {
    fn new(d: &Driver) -> Option<Self> {
        Some(Tally {
            local: Second::new().ok()?,
            second: d.began.elapsed().as_secs() as usize,
        })
    }

    fn record(
        &mut self,
        d: &Driver,
        intended: Instant,
        done: Instant,
        result: Result<u64, String>,
    ) {
        let second = done.saturating_duration_since(d.began).as_secs() as usize;
        if second != self.second {
            d.shared.flush(self.second, &mut self.local);
            self.second = second;
        }
        match result {
            Ok(bytes) => {
                let us = done.saturating_duration_since(intended).as_micros() as u64;
                self.local
                    .latency
                    .saturating_record(us.clamp(1, MAX_LATENCY_US));
                self.local.ok += 1;
                self.local.bytes += bytes;
            }
            Err(error) => self.error(d, &error),
        }
    }

    fn error(&mut self, d: &Driver, error: &str) {
        self.local.errors += 1;
        d.shared.note_error(error);
    }

    /// Counts a failed connection attempt, then pauses so a refusing server is not hammered.
    /// `false` when the stream was stopped meanwhile.
    async fn connect_failed(&mut self, d: &Driver, failure: &str) -> bool {
        self.error(d, failure);
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(100)) => true,
            _ = d.stop.cancelled() => false,
        }
    }

    fn finish(mut self, d: &Driver) {
        d.shared.flush(self.second, &mut self.local);
    }
}

/// An HTTP/2 connection of [`drive_h2`]; each request's token is the instant it was due.
type H2Connection = h2_pipeline::PipelinedH2<Instant, TlsStream<TcpStream>>;

/// Opens a connection for [`drive_h2`]: TCP, TLS with `h2` agreed by ALPN, the client's preface
/// queued.
async fn open_h2(d: &Driver) -> Result<H2Connection, BoxError> {
    let tls = d.dialer.connect_tls().await?;
    if tls.get_ref().1.alpn_protocol() != Some(b"h2".as_slice()) {
        return Err("the server did not agree to HTTP/2 (ALPN)".into());
    }
    Ok(h2_pipeline::PipelinedH2::new(tls, &d.prepared.fields))
}

/// One HTTP/2 connection's share of a stream: every request due is queued, the turn's frames
/// leave in one write, and answers are counted as their frames are read. A request unanswered
/// after the timeout ends the connection (its other requests fail with it) and a new one is
/// opened.
async fn drive_h2(d: Driver) {
    let Some(mut tally) = Tally::new(&d) else {
        return;
    };
    let mut pacer = Pacer::new(&d);
    let mut conn: Option<H2Connection> = None;
    let mut answers = Vec::new();
    let mut n = d.first_path;
    'run: loop {
        if d.stop.is_cancelled() {
            break;
        }
        // (Re)connect once the old connection's requests have all ended.
        let c = match &mut conn {
            Some(c) if c.is_reusable() || c.in_flight() > 0 => c,
            _ => {
                conn = None;
                let opened = tokio::select! {
                    opened = tokio::time::timeout(d.timeout, open_h2(&d)) => opened,
                    _ = d.stop.cancelled() => break,
                };
                let failure = match opened {
                    Ok(Ok(c)) => {
                        conn = Some(c);
                        continue;
                    }
                    Ok(Err(error)) => format!("connect: {error}"),
                    Err(_) => "connect: timed out".to_owned(),
                };
                if !tally.connect_failed(&d, &failure).await {
                    break;
                }
                continue;
            }
        };
        let now = Instant::now();
        pacer.restart_at(now, &d.shared);
        while c.in_flight() < d.cap && c.can_send() {
            let Some(intended) = pacer.take(now) else {
                break;
            };
            let queued = c.queue(d.prepared.path(n), intended);
            n = n.wrapping_add(d.path_step);
            if let Err(error) = queued {
                tally.record(&d, intended, now, Err(error.to_string()));
                break;
            }
        }
        let mut failure = None;
        if c.has_output() {
            tokio::select! {
                written = c.flush() => failure = written.err().map(|e| e.to_string()),
                _ = d.stop.cancelled() => break 'run,
            }
        }
        if failure.is_none() {
            let may_send = c.in_flight() < d.cap && c.can_send();
            let deadline = c.oldest().map(|intended| *intended + d.timeout);
            tokio::select! {
                biased;
                _ = d.stop.cancelled() => break,
                read = c.read(&mut answers) => failure = read.err().map(|e| e.to_string()),
                _ = sleep_until_due(pacer.next_due), if may_send => {}
                _ = sleep_until_due(deadline), if deadline.is_some() => {
                    failure = Some("timed out".to_owned());
                }
            }
        }
        if let Some(failure) = &failure {
            c.abandon(failure, &mut answers);
        }
        let done = Instant::now();
        for answer in answers.drain(..) {
            tally.record(&d, answer.token, done, answer.result);
        }
        if failure.is_some() {
            conn = None;
        }
    }
    tally.finish(&d);
}

/// Waits for the answer to a sent HTTP/1.1 request and reads its body without keeping it.
async fn exchange<F>(sent: F, timeout: Duration) -> Result<u64, String>
where
    F: std::future::Future<Output = hyper::Result<http::Response<hyper::body::Incoming>>>,
{
    tokio::time::timeout(timeout, async {
        let response = sent.await.map_err(|e| e.to_string())?;
        let status = response.status();
        let mut body = response.into_body();
        let mut bytes = 0u64;
        while let Some(frame) = body.frame().await {
            if let Some(data) = frame.map_err(|e| e.to_string())?.data_ref() {
                bytes += data.len() as u64;
            }
        }
        if !status.is_success() {
            return Err(format!("status {status}"));
        }
        Ok(bytes)
    })
    .await
    .unwrap_or_else(|_| Err("timed out".to_owned()))
}

/// One HTTP/1.1 connection's share of a stream: one request at a time on a keep-alive
/// connection, reopened when it breaks.
async fn drive_http1(d: Driver) {
    let Some(mut tally) = Tally::new(&d) else {
        return;
    };
    let mut pacer = Pacer::new(&d);
    let mut sender: Option<hyper::client::conn::http1::SendRequest<Empty<Bytes>>> = None;
    let mut n = d.first_path;
    loop {
        if d.stop.is_cancelled() {
            break;
        }
        if sender.as_ref().is_none_or(|s| s.is_closed()) {
            sender = None;
            let opened = tokio::select! {
                opened = tokio::time::timeout(d.timeout, d.dialer.open()) => opened,
                _ = d.stop.cancelled() => break,
            };
            let failure = match opened {
                Ok(Ok(Conn::H1(s))) => match Arc::try_unwrap(s) {
                    Ok(s) => {
                        sender = Some(s.into_inner());
                        continue;
                    }
                    Err(_) => "connect: HTTP/1.1 sender shared".to_owned(),
                },
                Ok(Ok(Conn::H2(_))) => "connect: HTTP/2 where HTTP/1.1 was asked".to_owned(),
                Ok(Err(error)) => format!("connect: {error}"),
                Err(_) => "connect: timed out".to_owned(),
            };
            if !tally.connect_failed(&d, &failure).await {
                break;
            }
            continue;
        }
        let Some(s) = sender.as_mut() else {
            continue;
        };
        let now = Instant::now();
        pacer.restart_at(now, &d.shared);
        let Some(intended) = pacer.take(now) else {
            tokio::select! {
                _ = sleep_until_due(pacer.next_due) => {}
                _ = d.stop.cancelled() => break,
            }
            continue;
        };
        // One request at a time; the last answer was read, so the connection is ready within a
        // turn of its task.
        let ready = tokio::select! {
            ready = tokio::time::timeout(d.timeout, s.ready()) => ready,
            _ = d.stop.cancelled() => break,
        };
        if !matches!(ready, Ok(Ok(()))) {
            sender = None;
            tally.record(
                &d,
                intended,
                Instant::now(),
                Err("connection not ready".to_owned()),
            );
            continue;
        }
        let sent = s.send_request(d.prepared.request(n));
        n = n.wrapping_add(d.path_step);
        let result = tokio::select! {
            result = exchange(sent, d.timeout) => result,
            _ = d.stop.cancelled() => break,
        };
        if result.is_err() && s.is_closed() {
            sender = None;
        }
        tally.record(&d, intended, Instant::now(), result);
    }
    tally.finish(&d);
}

/// Sleeps until `due`; never returns for a closed loop (`None`).
async fn sleep_until_due(due: Option<Instant>) {
    match due {
        Some(due) => tokio::time::sleep_until(due.into()).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_restarted_schedule_skips_what_fell_due_before_and_keeps_its_phase() {
        let t = Instant::now();
        let schedule = Schedule {
            first: t,
            period: Duration::from_millis(10),
        };
        // Behind by 95 ms: the requests due at t, t+10, ..., t+90 are dropped; t+100 is next.
        let at = t + Duration::from_millis(95);
        assert_eq!(
            schedule.restarted(t, at),
            (t + Duration::from_millis(100), 10)
        );
        // Due exactly at the restart: nothing is dropped.
        let due = t + Duration::from_millis(95);
        assert_eq!(schedule.restarted(due, at), (due, 0));
        // Ahead of the restart: unchanged.
        let ahead = t + Duration::from_millis(120);
        assert_eq!(schedule.restarted(ahead, at), (ahead, 0));
    }

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
            dropped_at_window: 0,
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
    fn hpa_paths_are_one_selection_per_scalable_workload_of_the_fleet() {
        let spec: ShapeSpec = toml::from_str("kind = \"hpa\"").expect("spec");
        let catalogue = Catalogue::new(1, 1_000, 30);
        let stream = Stream::for_shape(&spec, &catalogue);
        assert_eq!(stream.paths.len(), catalogue.hpa_targets().count());
        assert!(stream.paths.len() > 500, "{}", stream.paths.len());
        let distinct: std::collections::HashSet<_> = stream.paths.iter().collect();
        assert_eq!(distinct.len(), stream.paths.len());
        assert!(stream.paths.iter().any(|p| p.ends_with(
            "/namespaces/kube-system/pods?labelSelector=app.kubernetes.io%2Fname%3Dcoredns"
        )));
        assert!(stream
            .paths
            .iter()
            .any(|p| p.contains("/namespaces/team-001/pods?labelSelector=")));
        // No slot past the DaemonSets: the DaemonSets' selections keep the stream going.
        let tiny = Stream::for_shape(&spec, &Catalogue::new(1, 3, 2));
        assert!(!tiny.paths.is_empty());
    }

    #[tokio::test]
    async fn closed_and_open_loops_load_a_loopback_kubelet_without_checking_its_certificate() {
        let dir = tempfile::tempdir().expect("dir");
        let fleet = crate::fleet::Fleet::builder()
            .nodes(1)
            .pods_per_node(2)
            .port(0)
            .start(dir.path())
            .await
            .expect("starts");
        let (_, addr) = fleet.addresses().into_iter().next().expect("a node");
        // Closed loop over both protocols, then open loop over several h2 connections.
        for (protocol, extra) in [
            ("h2", ""),
            ("http1", ""),
            ("h2", "connections = 2\nrate = 400.0\n"),
        ] {
            let spec: ShapeSpec = toml::from_str(&format!(
                "kind = \"path\"\npath = \"/metrics/resource\"\nprotocol = \"{protocol}\"\nconcurrency = 2\n{extra}"
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
                Stream::for_shape(&spec, &Catalogue::new(1, 1, 2)),
                Duration::from_secs(5),
                began,
                stop.clone(),
            ));
            // Stop once the kubelet has answered a few requests of this stream. The kubelet counts
            // a body when it sends it; with two requests in flight at most, at most two of those are
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

    #[tokio::test]
    async fn a_stream_reconnects_after_its_connection_is_reset() {
        let dir = tempfile::tempdir().expect("dir");
        let fleet = crate::fleet::Fleet::builder()
            .nodes(1)
            .pods_per_node(2)
            .port(0)
            .start(dir.path())
            .await
            .expect("starts");
        let (node, addr) = fleet.addresses().into_iter().next().expect("a node");
        fleet
            .set_fault(&node, Some(crate::kubelet::fault::Fault::ResetMidBody))
            .expect("fault");
        let spec: ShapeSpec = toml::from_str(
            "kind = \"path\"\npath = \"/metrics/resource\"\nprotocol = \"http1\"\nconcurrency = 1\nrate = 200.0\n",
        )
        .expect("spec");
        let target = Target {
            addr,
            server_name: addr.ip().to_string(),
            ca: None,
            token: Some(fleet.token().to_owned()),
        };
        let stop = CancellationToken::new();
        let task = tokio::spawn(run_stream(
            target,
            Stream::for_shape(&spec, &Catalogue::new(1, 1, 2)),
            Duration::from_secs(5),
            Instant::now(),
            stop.clone(),
        ));
        let wait_for = |what: fn(crate::kubelet::Counts) -> u64, at_least: u64| {
            let fleet = fleet.clone();
            async move {
                let deadline = Instant::now() + Duration::from_secs(20);
                while what(fleet.total_counts()) < at_least && Instant::now() < deadline {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
        };
        // Over HTTP/1.1 a body cut short ends its connection: a few requests meet the reset,
        // each on a fresh connection.
        wait_for(|c| c.connections, 3).await;
        fleet.set_fault(&node, None).expect("fault cleared");
        let bodies = fleet.total_counts().bodies;
        wait_for(|c| c.bodies, bodies + 12).await;
        stop.cancel();
        let result = task.await.expect("joins").expect("runs");
        let all = result.window(0, result.seconds.len());
        assert!(all.errors >= 1, "{all:?}");
        assert!(all.ok >= 10, "{all:?} {:?}", result.sample_errors);
        assert!(
            fleet.total_counts().connections >= 3,
            "reconnected after each reset"
        );
        fleet.shutdown().await;
    }
}
