//! The engine-wide bound on TLS handshakes in progress: many nodes starting at once take turns at
//! handshaking, a kubelet that stalls its handshake holds a turn for at most the request timeout,
//! and a healthy node still gets connected and scraped while others stall.
//!
//! Everything listens on 127.0.0.1 and stops with the test.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
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
use tokio::sync::{oneshot, watch};

use metrics_server::discovery::Targets;
use metrics_server::model::{Name, ScrapeTarget, UnixNanos};
use metrics_server::scrape::{
    self, EngineOptions, KubeletTlsConfig, ScrapeConfig, ScrapeFailure, ScrapeHandle, ScrapeSink,
};
use metrics_server::telemetry::Telemetry;

// === a listener that accepts TCP and never answers the TLS handshake ===

/// Counts the connections that are in a TLS handshake at once: those that have sent their
/// ClientHello and not closed. Whenever any connection becomes readable, one sweep over all of
/// them (under one lock) drains what each sent and drops the closed ones before counting. The
/// client closes its socket before it passes its turn on, and on loopback that close is visible
/// by the time the next node's ClientHello is, so the count is the client's own concurrency.
struct Silent {
    addr: SocketAddr,
    /// Connections that sent a ClientHello, in all.
    hellos: Arc<AtomicUsize>,
    most_handshaking: Arc<AtomicUsize>,
    shutdown: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// A connection held by [`Silent`], and whether it has sent anything yet.
struct Held {
    tcp: Arc<tokio::net::TcpStream>,
    said_hello: bool,
}

#[derive(Default)]
struct Census {
    held: Vec<Held>,
}

impl Census {
    /// Drains every connection, forgets closed ones, and returns how many are handshaking and
    /// how many said hello in this sweep.
    fn sweep(&mut self) -> (usize, usize) {
        let mut new_hellos = 0;
        self.held.retain_mut(|held| {
            let (open, read) = drain(&held.tcp);
            if read && !held.said_hello {
                held.said_hello = true;
                new_hellos += 1;
            }
            open
        });
        let handshaking = self.held.iter().filter(|held| held.said_hello).count();
        (handshaking, new_hellos)
    }
}

impl Silent {
    fn start() -> Silent {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind loopback");
        listener.set_nonblocking(true).expect("nonblocking");
        let addr = listener.local_addr().expect("local addr");
        let hellos = Arc::new(AtomicUsize::new(0));
        let most_handshaking = Arc::new(AtomicUsize::new(0));
        let (shutdown, mut stop) = oneshot::channel::<()>();
        let (thread_hellos, thread_most) = (hellos.clone(), most_handshaking.clone());
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("listener runtime");
            runtime.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
                let census = Arc::new(std::sync::Mutex::new(Census::default()));
                loop {
                    let tcp = tokio::select! {
                        accepted = listener.accept() => match accepted {
                            Ok((tcp, _)) => Arc::new(tcp),
                            Err(_) => continue,
                        },
                        _ = &mut stop => return,
                    };
                    census.lock().expect("census").held.push(Held {
                        tcp: tcp.clone(),
                        said_hello: false,
                    });
                    let (census, hellos, most) =
                        (census.clone(), thread_hellos.clone(), thread_most.clone());
                    tokio::spawn(async move {
                        loop {
                            if tcp.readable().await.is_err() {
                                return;
                            }
                            let (handshaking, new_hellos) = census.lock().expect("census").sweep();
                            hellos.fetch_add(new_hellos, Ordering::SeqCst);
                            most.fetch_max(handshaking, Ordering::SeqCst);
                            // Closed (the sweep dropped it): this task is done.
                            if Arc::strong_count(&tcp) == 1 {
                                return;
                            }
                        }
                    });
                }
            });
            // Dropping the runtime closes every held connection.
            drop(runtime);
        });
        Silent {
            addr,
            hellos,
            most_handshaking,
            shutdown: Some(shutdown),
            thread: Some(thread),
        }
    }

    fn target(&self, node: &str) -> ScrapeTarget {
        target(node, self.addr)
    }
}

/// Reads (and discards) what the peer sent until the socket would block. Returns whether the
/// connection is still open and whether anything was read.
fn drain(tcp: &tokio::net::TcpStream) -> (bool, bool) {
    let mut scratch = [0u8; 4096];
    let mut read = false;
    loop {
        match tcp.try_read(&mut scratch) {
            Ok(0) => return (false, read),
            Ok(_) => read = true,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return (true, read),
            Err(_) => return (false, read),
        }
    }
}

impl Drop for Silent {
    fn drop(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

// === a healthy kubelet: TLS, HTTP/2, a fixed body ===

struct Healthy {
    addr: SocketAddr,
    shutdown: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Healthy {
    fn start() -> Healthy {
        let key = KeyPair::generate().expect("key");
        let cert = CertificateParams::new(vec!["127.0.0.1".to_string()])
            .expect("params")
            .self_signed(&key)
            .expect("certificate");
        let chain: Vec<CertificateDer<'static>> = vec![cert.der().clone()];
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("protocol versions")
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .expect("server certificate");
        config.alpn_protocols = vec![b"h2".to_vec()];
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind loopback");
        listener.set_nonblocking(true).expect("nonblocking");
        let addr = listener.local_addr().expect("local addr");
        let (shutdown, mut stop) = oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("kubelet runtime");
            runtime.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
                loop {
                    let tcp = tokio::select! {
                        accepted = listener.accept() => match accepted {
                            Ok((tcp, _)) => tcp,
                            Err(_) => continue,
                        },
                        _ = &mut stop => return,
                    };
                    let acceptor = acceptor.clone();
                    tokio::spawn(async move {
                        let Ok(tls) = acceptor.accept(tcp).await else {
                            return;
                        };
                        let service = hyper::service::service_fn(|_: Request<Incoming>| async {
                            Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(
                                b"node_cpu_usage_seconds_total 1.5 1633253812125\n",
                            ))))
                        });
                        let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                            .serve_connection(TokioIo::new(tls), service)
                            .await;
                    });
                }
            });
            drop(runtime);
        });
        Healthy {
            addr,
            shutdown: Some(shutdown),
            thread: Some(thread),
        }
    }
}

impl Drop for Healthy {
    fn drop(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

// === harness ===

struct CountingSink(AtomicUsize);

impl ScrapeSink for CountingSink {
    fn accept(&self, _: &Name, _: &[u8], _: UnixNanos, _: UnixNanos) -> Result<(), ScrapeFailure> {
        self.0.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }

    fn remove(&self, _: &str) {}
}

fn target(node: &str, addr: SocketAddr) -> ScrapeTarget {
    ScrapeTarget {
        node: node.into(),
        host: addr.ip().to_string(),
        port: addr.port(),
        path: "/metrics/resource".into(),
    }
}

fn start(targets: &[ScrapeTarget], limit: usize, request_timeout: Duration) -> ScrapeHandle {
    let targets: Targets = Arc::new(
        targets
            .iter()
            .map(|t| (t.node.clone(), t.clone()))
            .collect::<BTreeMap<_, _>>(),
    );
    let (_tx, rx) = watch::channel(targets);
    scrape::start_with(
        Arc::new(CountingSink(AtomicUsize::new(0))),
        rx,
        ScrapeConfig {
            resolution: Duration::from_millis(100),
            request_timeout,
            max_body_bytes: 1 << 20,
            tls: KubeletTlsConfig {
                insecure: true,
                ..Default::default()
            },
        },
        Arc::new(Telemetry::new()),
        EngineOptions {
            arbiters: 2,
            reconnect_base: Duration::from_millis(20),
            reconnect_max: Duration::from_millis(100),
            max_concurrent_connects: limit,
        },
    )
    .expect("scraping starts")
}

/// Waits for a condition the engine makes true by itself; fails the test after 10 s.
async fn wait_for(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        actix_rt::time::sleep(Duration::from_millis(5)).await;
    }
}

// === tests ===

#[actix_rt::test]
async fn connects_in_progress_never_exceed_the_limit_and_hanging_ones_give_their_turn_back() {
    let silent = Silent::start();
    let targets: Vec<ScrapeTarget> = (0..8)
        .map(|i| silent.target(&format!("node-{i}")))
        .collect();
    let handle = start(&targets, 2, Duration::from_millis(250));

    // Every handshake hangs, so each turn ends only by the request timeout of the handshake;
    // 12 handshakes mean turns were handed on several times over.
    wait_for("twelve handshakes", || {
        silent.hellos.load(Ordering::SeqCst) >= 12
    })
    .await;
    handle.stop();
    assert_eq!(silent.most_handshaking.load(Ordering::SeqCst), 2);
}

#[actix_rt::test]
async fn without_a_limit_every_node_connects_at_once() {
    // The counter-check of the test above: the listener does see more than two at once when
    // the engine is not limiting them.
    let silent = Silent::start();
    let targets: Vec<ScrapeTarget> = (0..8)
        .map(|i| silent.target(&format!("node-{i}")))
        .collect();
    let handle = start(&targets, 0, Duration::from_secs(5));
    wait_for("all eight nodes to be in a handshake", || {
        silent.most_handshaking.load(Ordering::SeqCst) == 8
    })
    .await;
    handle.stop();
}

#[actix_rt::test]
async fn hanging_kubelets_holding_every_turn_do_not_keep_a_healthy_node_from_scraping() {
    let silent = Silent::start();
    let healthy = Healthy::start();
    let mut targets: Vec<ScrapeTarget> = (0..3)
        .map(|i| silent.target(&format!("hanging-{i}")))
        .collect();
    targets.push(target("healthy", healthy.addr));
    let handle = start(&targets, 1, Duration::from_millis(250));

    wait_for("the healthy node to be scraped three times", || {
        handle
            .node_stats("healthy")
            .is_some_and(|stats| stats.scrapes_ok >= 3)
    })
    .await;
    assert_eq!(silent.most_handshaking.load(Ordering::SeqCst), 1);
    handle.stop();
}
