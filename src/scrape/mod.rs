//! One scraper actor per node, each with its own persistent connection to its kubelet.
//!
//! A scraper writes only its own node's data; a slow or broken kubelet delays nobody else.
//!
//! - [`supervisor`]: keeps one scraper per scrape target, in step with discovery's targets.
//! - [`scraper`]: the per-node actor and its scrape loop (phase, timeout, backoff, telemetry).
//! - [`client`]: one persistent HTTP/2 (or HTTP/1.1 keep-alive) connection to one kubelet.
//! - [`http2`]: the HTTP/2 of one scrape at a time, driven by the scraper's own task.
//! - [`hpack`]: decoding of the kubelet's response header blocks.
//! - [`tls`]: the rustls client configuration built from the `--kubelet-*` flags.
//! - [`read_ahead`]: socket reads in large steps under the TLS layer.
//! - [`backoff`]: exponential backoff with jitter between reconnects.
//!
//! Scraping does not parse and does not store: a successful body goes to a [`ScrapeSink`], which in
//! the server is [`StoreSink`] (decode, then write the node's points).

pub mod backoff;
pub mod buffer;
pub mod client;
pub mod hpack;
pub mod http2;
pub mod read_ahead;
pub mod scraper;
pub mod supervisor;
pub mod tls;

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix::{Actor, Addr};
use dashmap::DashMap;

use crate::discovery::Targets;
use crate::model::{Name, UnixNanos};
use crate::parse::DecodeError;
use crate::store::Store;
use crate::telemetry::Telemetry;

/// How to reach and trust kubelets (`--kubelet-*` flags).
#[derive(Clone, Debug, Default)]
pub struct KubeletTlsConfig {
    /// `--kubelet-certificate-authority`; `None` means the cluster CA from the kubeconfig.
    pub ca_file: Option<PathBuf>,
    /// The cluster CA (PEM), used when `ca_file` is not given.
    pub cluster_ca_pem: Option<Vec<u8>>,
    /// `--kubelet-client-certificate` / `--kubelet-client-key`.
    pub client_cert_file: Option<PathBuf>,
    pub client_key_file: Option<PathBuf>,
    /// The service-account bearer token sent when no client certificate is configured.
    pub bearer_token: Option<String>,
    /// `--kubelet-insecure-tls`.
    pub insecure: bool,
}

/// Scrape settings.
#[derive(Clone, Debug)]
pub struct ScrapeConfig {
    /// `--metric-resolution`: the period between two scrapes of a node.
    pub resolution: Duration,
    /// `--kubelet-request-timeout`: the bound on one scrape, connect included (a node waiting
    /// for its turn at a TLS handshake waits up to this long before it, see
    /// [`EngineOptions::max_concurrent_connects`]).
    pub request_timeout: Duration,
    /// A larger response body fails the scrape.
    pub max_body_bytes: usize,
    pub tls: KubeletTlsConfig,
}

/// Why scraping could not start.
#[derive(Debug, thiserror::Error)]
pub enum ScrapeError {
    #[error("invalid kubelet TLS settings: {0}")]
    Tls(String),
    #[error("invalid scrape settings: {0}")]
    Config(String),
    #[error("the scrape supervisor must be started inside a running actix system")]
    NoSystem,
}

/// Why one scrape of one node failed. The node's stored points are left as they were.
#[derive(Debug, thiserror::Error)]
pub enum ScrapeFailure {
    #[error("invalid kubelet address {0:?}")]
    Address(String),
    #[error("connecting to kubelet at {address}: {source}")]
    Connect {
        address: String,
        #[source]
        source: std::io::Error,
    },
    #[error("TLS handshake with kubelet at {address}: {message}")]
    Tls { address: String, message: String },
    /// The kubelet's certificate does not name the address it was dialled at; says how to fix it.
    #[error("{0}")]
    CertificateName(String),
    #[error("HTTP exchange with kubelet failed: {0}")]
    Http(#[source] hyper::Error),
    #[error("HTTP/2 exchange with kubelet failed: {0}")]
    Http2(#[source] http2::Http2Error),
    #[error("scrape did not finish within {0:?}")]
    Timeout(Duration),
    #[error("kubelet answered HTTP {0}")]
    Status(u16),
    #[error("response body exceeds {limit} bytes")]
    BodyTooLarge { limit: usize },
    #[error("decoding the response body: {0}")]
    Decode(#[from] DecodeError),
}

/// Where successful scrapes go. Implementations must leave a node's data untouched when `accept`
/// fails, and must not block for long: they run on the scraper's own thread.
pub trait ScrapeSink: Send + Sync + 'static {
    /// One successful response body of `node`, requested at `request_time` and received by `now`
    /// (unix nanoseconds).
    fn accept(
        &self,
        node: &Name,
        body: &[u8],
        request_time: UnixNanos,
        now: UnixNanos,
    ) -> Result<(), ScrapeFailure>;

    /// The node is no longer a target: forget it.
    fn remove(&self, node: &str);
}

/// The server's sink: decode the body and write the node's points to the store.
pub struct StoreSink {
    store: Arc<Store>,
}

// === impl StoreSink ===

impl StoreSink {
    pub fn new(store: Arc<Store>) -> Self {
        StoreSink { store }
    }
}

impl ScrapeSink for StoreSink {
    fn accept(
        &self,
        node: &Name,
        body: &[u8],
        request_time: UnixNanos,
        now: UnixNanos,
    ) -> Result<(), ScrapeFailure> {
        let decoded = crate::parse::decode_resource_metrics(body, request_time)?;
        self.store.write_node(node, &decoded.scrape, now);
        Ok(())
    }

    fn remove(&self, node: &str) {
        self.store.remove_node(node);
    }
}

/// Tuning that the flags do not expose.
#[derive(Clone, Debug)]
pub struct EngineOptions {
    /// Threads (actix arbiters) the scrapers are spread over, round-robin.
    pub arbiters: usize,
    /// First reconnect delay after a failure that lost the connection.
    pub reconnect_base: Duration,
    /// Largest reconnect delay.
    pub reconnect_max: Duration,
    /// TLS handshakes (with the HTTP/2 preface) in progress at once, all nodes together; 0 means
    /// no limit. A server starting against thousands of nodes would otherwise run all their
    /// handshakes at once, each slowed by all the others until most time out. The TCP connect
    /// before it is not limited (it costs no CPU, and a node that does not answer must not hold
    /// a turn). Waiting for a turn is bounded by the request timeout, after which the handshake
    /// and request have a request timeout of their own; a handshake holds its turn for at most
    /// that timeout, so a stalling kubelet cannot hold one longer.
    pub max_concurrent_connects: usize,
}

impl Default for EngineOptions {
    fn default() -> Self {
        EngineOptions {
            arbiters: std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1),
            reconnect_base: Duration::from_millis(500),
            reconnect_max: Duration::from_secs(60),
            max_concurrent_connects: 64,
        }
    }
}

/// The HTTP version a kubelet connection speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    Http1,
    Http2,
}

/// Counters of one node's scraper, as observed at one instant.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NodeStats {
    /// Connections opened to the kubelet since the node became a target.
    pub connections_opened: u64,
    pub scrapes_ok: u64,
    pub scrapes_failed: u64,
    /// Scrape ticks skipped because a reconnect was backing off.
    pub ticks_skipped: u64,
    /// The protocol of the last connection opened.
    pub protocol: Option<Protocol>,
    /// The message of the last failure.
    pub last_error: Option<String>,
}

/// Live counters shared by a node's scraper (writer) and the handle (reader).
#[derive(Debug, Default)]
pub(crate) struct NodeCounters {
    connections_opened: AtomicU64,
    scrapes_ok: AtomicU64,
    scrapes_failed: AtomicU64,
    ticks_skipped: AtomicU64,
    /// 0 = none yet, 1 = HTTP/1.1, 2 = HTTP/2.
    protocol: AtomicU8,
    /// std Mutex, not tokio's: held only to swap a string, never across an await.
    last_error: Mutex<Option<String>>,
}

// === impl NodeCounters ===

impl NodeCounters {
    fn connection_opened(&self, protocol: Protocol) {
        self.connections_opened.fetch_add(1, Ordering::Relaxed);
        let code = match protocol {
            Protocol::Http1 => 1,
            Protocol::Http2 => 2,
        };
        self.protocol.store(code, Ordering::Relaxed);
    }

    fn scraped(&self) {
        self.scrapes_ok.fetch_add(1, Ordering::Relaxed);
    }

    fn failed(&self, error: &ScrapeFailure) {
        if let Ok(mut last) = self.last_error.lock() {
            *last = Some(error.to_string());
        }
        // Counted after the message is set, so a reader that saw the count sees the message.
        self.scrapes_failed.fetch_add(1, Ordering::Release);
    }

    fn skipped(&self) {
        self.ticks_skipped.fetch_add(1, Ordering::Relaxed);
    }

    fn snapshot(&self) -> NodeStats {
        let scrapes_failed = self.scrapes_failed.load(Ordering::Acquire);
        NodeStats {
            connections_opened: self.connections_opened.load(Ordering::Relaxed),
            scrapes_ok: self.scrapes_ok.load(Ordering::Relaxed),
            scrapes_failed,
            ticks_skipped: self.ticks_skipped.load(Ordering::Relaxed),
            protocol: match self.protocol.load(Ordering::Relaxed) {
                1 => Some(Protocol::Http1),
                2 => Some(Protocol::Http2),
                _ => None,
            },
            last_error: self.last_error.lock().ok().and_then(|e| e.clone()),
        }
    }
}

/// Counters of every current target, by node.
pub(crate) type StatsMap = Arc<DashMap<Name, Arc<NodeCounters>>>;

/// The running supervisor; dropping it does not stop scraping, [`ScrapeHandle::stop`] does.
pub struct ScrapeHandle {
    supervisor: Addr<supervisor::Supervisor>,
    arbiters: Vec<actix::Arbiter>,
    stats: StatsMap,
}

// === impl ScrapeHandle ===

impl ScrapeHandle {
    /// Stops the supervisor, every scraper and the scraper threads. Stored data is left as it is.
    pub fn stop(&self) {
        self.supervisor.do_send(supervisor::Shutdown);
        for arbiter in &self.arbiters {
            arbiter.stop();
        }
    }

    /// Connections opened to kubelets of the current targets, all nodes summed.
    pub fn connections_opened(&self) -> u64 {
        self.stats
            .iter()
            .map(|entry| entry.value().connections_opened.load(Ordering::Relaxed))
            .sum()
    }

    /// One current target's counters; `None` once the node is no longer a target and its scraper
    /// has stopped.
    pub fn node_stats(&self, node: &str) -> Option<NodeStats> {
        self.stats.get(node).map(|entry| entry.value().snapshot())
    }
}

/// Starts the supervisor, which keeps one scraper actor per target in `targets`. Must be called
/// from within a running actix `System`.
pub fn start(
    store: Arc<Store>,
    targets: tokio::sync::watch::Receiver<Targets>,
    config: ScrapeConfig,
    telemetry: Arc<Telemetry>,
) -> Result<ScrapeHandle, ScrapeError> {
    start_with(
        Arc::new(StoreSink::new(store)),
        targets,
        config,
        telemetry,
        EngineOptions::default(),
    )
}

/// [`start`] with any sink and explicit engine options.
pub fn start_with(
    sink: Arc<dyn ScrapeSink>,
    targets: tokio::sync::watch::Receiver<Targets>,
    config: ScrapeConfig,
    telemetry: Arc<Telemetry>,
    options: EngineOptions,
) -> Result<ScrapeHandle, ScrapeError> {
    if config.resolution.is_zero() {
        return Err(ScrapeError::Config(
            "--metric-resolution must be positive".into(),
        ));
    }
    if config.request_timeout.is_zero() {
        return Err(ScrapeError::Config(
            "--kubelet-request-timeout must be positive".into(),
        ));
    }
    let tls = tls::KubeletTls::from_config(&config.tls)?;
    if actix::System::try_current().is_none() {
        return Err(ScrapeError::NoSystem);
    }
    let arbiters: Vec<actix::Arbiter> = (0..options.arbiters.max(1))
        .map(|_| actix::Arbiter::new())
        .collect();
    for arbiter in &arbiters {
        // Queued before any scraper: the thread lowers its priority first.
        arbiter.spawn_fn(|| crate::priority::lower_current_thread(crate::priority::SCRAPE_NICE));
    }
    let stats: StatsMap = Arc::new(DashMap::new());
    let connect_limit = (options.max_concurrent_connects > 0)
        .then(|| Arc::new(tokio::sync::Semaphore::new(options.max_concurrent_connects)));
    let supervisor = supervisor::Supervisor::new(
        supervisor::SupervisorParts {
            sink,
            telemetry,
            tls,
            config,
            options,
            arbiters: arbiters.iter().map(|a| a.handle()).collect(),
            connect_limit,
            stats: stats.clone(),
        },
        targets,
    )
    .start();
    Ok(ScrapeHandle {
        supervisor,
        arbiters,
        stats,
    })
}

/// The wall clock in unix nanoseconds; 0 if the clock is before 1970.
pub(crate) fn unix_now() -> UnixNanos {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every 15 s, without checking kubelets' certificates.
    fn insecure_config() -> ScrapeConfig {
        ScrapeConfig {
            resolution: Duration::from_secs(15),
            request_timeout: Duration::from_secs(10),
            max_body_bytes: 1 << 20,
            tls: KubeletTlsConfig {
                insecure: true,
                ..Default::default()
            },
        }
    }

    #[test]
    fn handle_can_move_to_the_thread_that_stops_it() {
        fn send_sync<T: Send + Sync>() {}
        send_sync::<ScrapeHandle>();
    }

    #[test]
    fn zero_resolution_is_rejected_before_anything_starts() {
        let (_tx, rx) = tokio::sync::watch::channel(Targets::default());
        let result = start_with(
            Arc::new(StoreSink::new(Arc::new(Store::new(
                crate::store::StoreConfig::default(),
            )))),
            rx,
            ScrapeConfig {
                resolution: Duration::ZERO,
                ..insecure_config()
            },
            Arc::new(Telemetry::new()),
            EngineOptions::default(),
        );
        assert!(matches!(result, Err(ScrapeError::Config(_))));
    }

    #[test]
    fn scrape_threads_run_below_the_api_priority() {
        let system = actix::System::new();
        let niceness = system.block_on(async {
            let (_tx, rx) = tokio::sync::watch::channel(Targets::default());
            let handle = start(
                Arc::new(Store::new(crate::store::StoreConfig::default())),
                rx,
                insecure_config(),
                Arc::new(Telemetry::new()),
            )
            .expect("starts");
            let (seen, niceness) = std::sync::mpsc::channel();
            for arbiter in &handle.arbiters {
                let seen = seen.clone();
                arbiter.spawn_fn(move || {
                    let _ = seen.send(crate::priority::current_thread_nice());
                });
            }
            let niceness: Vec<_> = (0..handle.arbiters.len())
                .map(|_| niceness.recv().expect("every arbiter answers"))
                .collect();
            handle.stop();
            niceness
        });
        let own = crate::priority::current_thread_nice().expect("readable");
        assert!(!niceness.is_empty());
        for nice in niceness {
            assert_eq!(nice, Some(own.max(crate::priority::SCRAPE_NICE)));
        }
    }

    #[test]
    fn starting_outside_an_actix_system_is_an_error() {
        let (_tx, rx) = tokio::sync::watch::channel(Targets::default());
        let result = start(
            Arc::new(Store::new(crate::store::StoreConfig::default())),
            rx,
            insecure_config(),
            Arc::new(Telemetry::new()),
        );
        assert!(matches!(result, Err(ScrapeError::NoSystem)));
    }
}
