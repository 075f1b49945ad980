//! Measures what the scrape engine keeps per node between scrapes: N scrapers, each holding its
//! own HTTP/2-over-TLS connection to a loopback kubelet stand-in, as resident memory per node.
//!
//! ```sh
//! cargo run --release -p kubelet-fleet --bin idle_connections -- 2000
//! ```
//!
//! The kubelet stand-in runs in a child process (this program, re-run with `serve`), so its
//! memory is not counted. The sink discards bodies, so no stored data is counted either: the
//! figure is scraper actor, connection (TLS and HTTP/2 state) and per-node self-metrics.
//! Resident memory (`/proc/self/status`) and live heap bytes (counted by the global allocator,
//! mimalloc as in the server) are read before the engine starts and half a resolution after every
//! node has been scraped twice, when most connections are idle. Live heap is the steadier figure:
//! resident memory also keeps what the allocator has not returned since the start-up peak.

use std::alloc::{GlobalAlloc, Layout};
use std::collections::BTreeMap;
use std::convert::Infallible;
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rcgen::{CertificateParams, KeyPair};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

use metrics_server::discovery::Targets;
use metrics_server::model::{Name, ScrapeTarget, UnixNanos};
use metrics_server::scrape::{
    self, EngineOptions, KubeletTlsConfig, ScrapeConfig, ScrapeFailure, ScrapeSink,
};
use metrics_server::telemetry::Telemetry;

/// mimalloc, as in the server, with a count of the bytes currently allocated.
struct LiveBytes;

static LIVE: AtomicUsize = AtomicUsize::new(0);

// SAFETY: defers every operation to mimalloc unchanged; only counts sizes.
unsafe impl GlobalAlloc for LiveBytes {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size(), Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { mimalloc::MiMalloc.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { mimalloc::MiMalloc.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE.fetch_add(new_size, Ordering::Relaxed);
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { mimalloc::MiMalloc.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: LiveBytes = LiveBytes;

fn live_kib() -> u64 {
    (LIVE.load(Ordering::Relaxed) / 1024) as u64
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    match args.next().as_deref() {
        Some("serve") => serve(),
        count => {
            let nodes: usize = count.unwrap_or("1000").parse()?;
            measure(nodes)
        }
    }
}

/// A body about the size of a 30-pod node's `/metrics/resource`.
fn body() -> Bytes {
    let mut text = String::new();
    for pod in 0..30 {
        for metric in [
            "container_cpu_usage_seconds_total",
            "container_memory_working_set_bytes",
        ] {
            text.push_str(&format!(
                "{metric}{{container=\"app\",namespace=\"default\",pod=\"pod-{pod}\"}} 12345.678 1700000000000\n"
            ));
        }
    }
    Bytes::from(text.repeat(4))
}

fn serve() -> Result<(), Box<dyn std::error::Error>> {
    let key = KeyPair::generate()?;
    let cert = CertificateParams::new(vec!["127.0.0.1".to_string()])?.self_signed(&key)?;
    let chain: Vec<CertificateDer<'static>> = vec![cert.der().clone()];
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_no_client_auth()
    .with_single_cert(chain, key)?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let body = body();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        println!("{}", listener.local_addr()?.port());
        std::io::stdout().flush()?;
        loop {
            let (tcp, _) = listener.accept().await?;
            let acceptor = acceptor.clone();
            let body = body.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let service = hyper::service::service_fn(move |_: Request<Incoming>| {
                    let body = body.clone();
                    async move { Ok::<_, Infallible>(Response::new(Full::new(body))) }
                });
                let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tls), service)
                    .await;
            });
        }
    })
}

struct Discard;

impl ScrapeSink for Discard {
    fn accept(&self, _: &Name, _: &[u8], _: UnixNanos, _: UnixNanos) -> Result<(), ScrapeFailure> {
        Ok(())
    }

    fn remove(&self, _: &str) {}
}

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find(|line| line.starts_with("VmRSS:"))
                .and_then(|line| line.split_whitespace().nth(1))
                .and_then(|kib| kib.parse().ok())
        })
        .unwrap_or(0)
}

fn measure(nodes: usize) -> Result<(), Box<dyn std::error::Error>> {
    let mut server = Command::new(std::env::current_exe()?)
        .arg("serve")
        .stdout(Stdio::piped())
        .spawn()?;
    let mut line = String::new();
    BufReader::new(server.stdout.take().ok_or("no server stdout")?).read_line(&mut line)?;
    let port: u16 = line.trim().parse()?;

    let result = actix::System::new().block_on(async move {
        let targets: Targets = Arc::new(
            (0..nodes)
                .map(|i| {
                    let node: Name = format!("node-{i}").into();
                    let target = ScrapeTarget {
                        node: node.clone(),
                        host: "127.0.0.1".into(),
                        port,
                        path: "/metrics/resource".into(),
                    };
                    (node, target)
                })
                .collect::<BTreeMap<_, _>>(),
        );
        let before = rss_kib();
        let heap_before = live_kib();
        let (_tx, rx) = tokio::sync::watch::channel(targets);
        let resolution = Duration::from_secs(2);
        let handle = scrape::start_with(
            Arc::new(Discard),
            rx,
            ScrapeConfig {
                resolution,
                request_timeout: Duration::from_secs(10),
                max_body_bytes: 10 << 20,
                tls: KubeletTlsConfig {
                    insecure: true,
                    ..Default::default()
                },
            },
            Arc::new(Telemetry::new()),
            EngineOptions::default(),
        )?;
        let started = Instant::now();
        let mut peak = before;
        loop {
            peak = peak.max(rss_kib());
            let done = (0..nodes).all(|i| {
                handle
                    .node_stats(&format!("node-{i}"))
                    .is_some_and(|stats| stats.scrapes_ok >= 2)
            });
            if done {
                break;
            }
            if started.elapsed() > Duration::from_secs(120) {
                let behind: Vec<_> = (0..nodes)
                    .filter_map(|i| handle.node_stats(&format!("node-{i}")))
                    .filter(|stats| stats.scrapes_ok < 2)
                    .collect();
                return Err(format!(
                    "{} nodes were not scraped twice within 120 s; one of them: {:?}",
                    behind.len(),
                    behind.first()
                )
                .into());
            }
            actix_rt::time::sleep(Duration::from_millis(100)).await;
        }
        // Half a period later: between two scrapes of most nodes.
        actix_rt::time::sleep(resolution / 2).await;
        let after = rss_kib();
        let heap_after = live_kib();
        let opened = handle.connections_opened();
        handle.stop();
        println!(
            "nodes {nodes}, connections opened {opened}; RSS before {before} KiB, after {after} KiB \
             (peak {peak} KiB), {:.1} KiB per node; heap before {heap_before} KiB, after \
             {heap_after} KiB, {:.1} KiB per node",
            after.saturating_sub(before) as f64 / nodes as f64,
            heap_after.saturating_sub(heap_before) as f64 / nodes as f64,
        );
        Ok::<_, Box<dyn std::error::Error>>(())
    });
    let _ = server.kill();
    let _ = server.wait();
    result
}
