//! Wire-level tests of the scrape engine against tiny TLS kubelets on 127.0.0.1.
//!
//! Each test kubelet runs on its own thread and runtime, signed by a CA made for the test, and
//! counts what it sees (connections, requests, headers). Most scrapes go to a recording sink, so
//! those tests exercise connection handling, scheduling and supervision independently of decoding;
//! the store tests go through the real parser and store.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::{Body, Frame, Incoming};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair, KeyUsagePurpose};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::sync::{oneshot, watch};

use metrics_server::discovery::Targets;
use metrics_server::model::{Name, ScrapeTarget, UnixNanos};
use metrics_server::scrape::{
    self, EngineOptions, KubeletTlsConfig, Protocol, ScrapeConfig, ScrapeFailure, ScrapeHandle,
    ScrapeSink,
};
use metrics_server::store::{Store, StoreConfig};
use metrics_server::telemetry::Telemetry;

// === test CA ===

struct TestCa {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

impl TestCa {
    fn new() -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let key = KeyPair::generate().expect("CA key");
        TestCa {
            issuer: CertifiedIssuer::self_signed(params, key).expect("CA certificate"),
        }
    }

    fn pem(&self) -> Vec<u8> {
        self.issuer.pem().into_bytes()
    }

    /// A serving certificate with the given subject alternative names (IPs or DNS names).
    fn serving(&self, sans: &[&str]) -> (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>) {
        let key = KeyPair::generate().expect("serving key");
        let params = CertificateParams::new(sans.iter().map(|s| s.to_string()).collect::<Vec<_>>())
            .expect("serving params");
        let cert = params
            .signed_by(&key, &self.issuer)
            .expect("serving certificate");
        (
            vec![cert.der().clone()],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
        )
    }
}

impl TestCa {
    /// A certificate and its key, PEM-encoded, as files on disk hold them.
    fn serving_pem(&self, sans: &[&str]) -> (String, String) {
        let key = KeyPair::generate().expect("client key");
        let params = CertificateParams::new(sans.iter().map(|s| s.to_string()).collect::<Vec<_>>())
            .expect("client params");
        let cert = params
            .signed_by(&key, &self.issuer)
            .expect("client certificate");
        (cert.pem(), key.serialize_pem())
    }
}

// === test kubelet ===

#[derive(Clone)]
enum Behavior {
    /// 200 with this body, `Content-Length` set.
    Body(Bytes),
    /// 200 with this body sent in chunks and no length, so only reading it tells its size.
    Streamed(Bytes),
    Status(u16),
    /// Accepts the request and never answers.
    Hang,
    /// 200 with this body, then the kubelet closes the connection (as its idle timeout does).
    BodyThenClose(Bytes),
    /// 200 with a body made for the n-th request (from 0), so samples can advance.
    Generated(Arc<dyn Fn(usize) -> Bytes + Send + Sync>),
}

/// A body of unknown length, sent in 1 KiB frames.
struct Chunked(VecDeque<Bytes>);

impl Body for Chunked {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        Poll::Ready(self.0.pop_front().map(|b| Ok(Frame::data(b))))
    }
}

type AnyBody = http_body_util::combinators::BoxBody<Bytes, Infallible>;

#[derive(Default)]
struct Seen {
    connections: AtomicUsize,
    requests: AtomicUsize,
    authorization: Mutex<Vec<Option<String>>>,
    versions: Mutex<Vec<hyper::Version>>,
}

struct Kubelet {
    addr: SocketAddr,
    seen: Arc<Seen>,
    shutdown: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Kubelet {
    fn start(ca: &TestCa, sans: &[&str], alpn: &[&[u8]], behavior: Behavior) -> Kubelet {
        let (chain, key) = ca.serving(sans);
        let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("protocol versions")
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .expect("server certificate");
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));

        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind loopback");
        listener.set_nonblocking(true).expect("nonblocking");
        let addr = listener.local_addr().expect("local addr");
        let seen = Arc::new(Seen::default());
        let (shutdown, mut stop) = oneshot::channel::<()>();
        let thread_seen = seen.clone();
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("kubelet runtime");
            runtime.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
                loop {
                    let (tcp, _) = tokio::select! {
                        accepted = listener.accept() => match accepted {
                            Ok(accepted) => accepted,
                            Err(_) => continue,
                        },
                        _ = &mut stop => return,
                    };
                    let acceptor = acceptor.clone();
                    let seen = thread_seen.clone();
                    let behavior = behavior.clone();
                    tokio::spawn(async move {
                        let Ok(tls) = acceptor.accept(tcp).await else {
                            return;
                        };
                        seen.connections.fetch_add(1, Ordering::SeqCst);
                        let h2 = tls.get_ref().1.alpn_protocol() == Some(&b"h2"[..]);
                        let close_after_answer = matches!(behavior, Behavior::BodyThenClose(_));
                        let answered = Arc::new(tokio::sync::Notify::new());
                        let answered_in_service = answered.clone();
                        let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                            let seen = seen.clone();
                            let behavior = behavior.clone();
                            let answered = answered_in_service.clone();
                            async move {
                                let response = answer(&seen, req, behavior).await;
                                answered.notify_one();
                                Ok::<_, Infallible>(response)
                            }
                        });
                        let io = TokioIo::new(tls);
                        if h2 {
                            let connection =
                                hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                                    .serve_connection(io, service);
                            tokio::pin!(connection);
                            if close_after_answer {
                                // HTTP/2 has no `Connection: close`: a GOAWAY after the first
                                // answer is how a Go kubelet retires an idle connection.
                                tokio::select! {
                                    _ = connection.as_mut() => return,
                                    _ = answered.notified() => connection.as_mut().graceful_shutdown(),
                                }
                            }
                            let _ = connection.await;
                        } else {
                            let _ = hyper::server::conn::http1::Builder::new()
                                .serve_connection(io, service)
                                .await;
                        }
                    });
                }
            });
            // Dropping the runtime cancels every connection task, hanging ones included.
            drop(runtime);
        });
        Kubelet {
            addr,
            seen,
            shutdown: Some(shutdown),
            thread: Some(thread),
        }
    }

    fn requests(&self) -> usize {
        self.seen.requests.load(Ordering::SeqCst)
    }

    fn connections(&self) -> usize {
        self.seen.connections.load(Ordering::SeqCst)
    }

    fn target(&self, node: &str) -> ScrapeTarget {
        ScrapeTarget {
            node: node.into(),
            host: self.addr.ip().to_string(),
            port: self.addr.port(),
            path: "/metrics/resource".into(),
        }
    }
}

impl Drop for Kubelet {
    fn drop(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

async fn answer(seen: &Seen, req: Request<Incoming>, behavior: Behavior) -> Response<AnyBody> {
    use http_body_util::BodyExt;
    let n = seen.requests.fetch_add(1, Ordering::SeqCst);
    seen.authorization.lock().expect("lock").push(
        req.headers()
            .get(hyper::header::AUTHORIZATION)
            .map(|v| v.to_str().unwrap_or_default().to_owned()),
    );
    seen.versions.lock().expect("lock").push(req.version());
    assert_eq!(req.uri().path(), "/metrics/resource");
    match behavior {
        Behavior::Body(body) => Response::new(Full::new(body).boxed()),
        Behavior::Streamed(body) => {
            let chunks = body
                .chunks(1024)
                .map(Bytes::copy_from_slice)
                .collect::<VecDeque<_>>();
            Response::new(Chunked(chunks).boxed())
        }
        Behavior::Status(code) => {
            let mut response =
                Response::new(Full::new(Bytes::from_static(b"Unauthorized")).boxed());
            *response.status_mut() = StatusCode::from_u16(code).expect("status code");
            response
        }
        Behavior::Hang => std::future::pending().await,
        Behavior::Generated(make) => Response::new(Full::new(make(n)).boxed()),
        Behavior::BodyThenClose(body) => {
            let mut response = Response::new(Full::new(body).boxed());
            response.headers_mut().insert(
                hyper::header::CONNECTION,
                hyper::header::HeaderValue::from_static("close"),
            );
            response
        }
    }
}

fn metrics_body(bytes: usize) -> Bytes {
    let line = "container_cpu_usage_seconds_total{container=\"c\",namespace=\"ns\",pod=\"p\"} 4.71 1633253812125\n";
    Bytes::from(line.repeat(bytes / line.len() + 1))
}

// === recording sink ===

#[derive(Default)]
struct RecordingSink {
    accepted: Mutex<HashMap<String, usize>>,
    bytes: Mutex<HashMap<String, usize>>,
    removed: Mutex<Vec<String>>,
}

impl RecordingSink {
    fn accepted(&self, node: &str) -> usize {
        self.accepted
            .lock()
            .expect("lock")
            .get(node)
            .copied()
            .unwrap_or(0)
    }

    fn removed(&self) -> Vec<String> {
        self.removed.lock().expect("lock").clone()
    }
}

impl ScrapeSink for RecordingSink {
    fn accept(
        &self,
        node: &Name,
        body: &[u8],
        request_time: UnixNanos,
        now: UnixNanos,
    ) -> Result<(), ScrapeFailure> {
        assert!(request_time > 0 && request_time <= now);
        *self
            .accepted
            .lock()
            .expect("lock")
            .entry(node.to_string())
            .or_default() += 1;
        self.bytes
            .lock()
            .expect("lock")
            .insert(node.to_string(), body.len());
        Ok(())
    }

    fn remove(&self, node: &str) {
        self.removed.lock().expect("lock").push(node.to_owned());
    }
}

// === harness ===

struct Engine {
    handle: ScrapeHandle,
    sink: Arc<RecordingSink>,
    telemetry: Arc<Telemetry>,
    targets: watch::Sender<Targets>,
}

impl Engine {
    fn start(targets: &[ScrapeTarget], config: ScrapeConfig, options: EngineOptions) -> Engine {
        let sink = Arc::new(RecordingSink::default());
        let telemetry = Arc::new(Telemetry::new());
        let (tx, rx) = watch::channel(targets_of(targets));
        let handle = scrape::start_with(sink.clone(), rx, config, telemetry.clone(), options)
            .expect("scraping starts");
        Engine {
            handle,
            sink,
            telemetry,
            targets: tx,
        }
    }

    fn set_targets(&self, targets: &[ScrapeTarget]) {
        self.targets.send_replace(targets_of(targets));
    }

    fn stats(&self, node: &str) -> scrape::NodeStats {
        self.handle.node_stats(node).unwrap_or_default()
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        self.handle.stop();
    }
}

fn targets_of(targets: &[ScrapeTarget]) -> Targets {
    Arc::new(
        targets
            .iter()
            .map(|t| (t.node.clone(), t.clone()))
            .collect::<BTreeMap<_, _>>(),
    )
}

fn config(ca: &TestCa) -> ScrapeConfig {
    ScrapeConfig {
        resolution: Duration::from_millis(20),
        request_timeout: Duration::from_secs(5),
        max_body_bytes: 1 << 20,
        tls: KubeletTlsConfig {
            cluster_ca_pem: Some(ca.pem()),
            bearer_token: Some("sa-token".into()),
            ..Default::default()
        },
    }
}

fn options(arbiters: usize) -> EngineOptions {
    EngineOptions {
        arbiters,
        reconnect_base: Duration::from_millis(50),
        reconnect_max: Duration::from_millis(200),
        ..EngineOptions::default()
    }
}

/// Waits for a condition the engine makes true by itself; fails the test after 10 s.
async fn wait_for(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        actix_rt::time::sleep(Duration::from_millis(5)).await;
    }
}

const BOTH: &[&[u8]] = &[b"h2", b"http/1.1"];
const HTTP1_ONLY: &[&[u8]] = &[b"http/1.1"];

// === tests ===

#[actix_rt::test]
async fn h2_is_negotiated_and_one_connection_serves_every_scrape() {
    let ca = TestCa::new();
    let body = metrics_body(4096);
    let kubelet = Kubelet::start(&ca, &["127.0.0.1"], BOTH, Behavior::Body(body.clone()));
    let engine = Engine::start(&[kubelet.target("node-a")], config(&ca), options(2));

    wait_for("ten scrapes", || engine.sink.accepted("node-a") >= 10).await;

    let stats = engine.stats("node-a");
    assert_eq!(stats.protocol, Some(Protocol::Http2));
    assert_eq!(stats.connections_opened, 1);
    assert_eq!(engine.handle.connections_opened(), 1);
    assert_eq!(kubelet.connections(), 1);
    assert!(kubelet.requests() >= 10);
    assert!(kubelet
        .seen
        .versions
        .lock()
        .expect("lock")
        .iter()
        .all(|v| *v == hyper::Version::HTTP_2));
    assert!(kubelet
        .seen
        .authorization
        .lock()
        .expect("lock")
        .iter()
        .all(|a| a.as_deref() == Some("Bearer sa-token")));
    assert_eq!(
        engine.sink.bytes.lock().expect("lock").get("node-a"),
        Some(&body.len())
    );
    assert!(engine.telemetry.last_collection() > 0);
    assert!(engine
        .telemetry
        .encode()
        .contains("metrics_server_kubelet_request_duration_seconds_count{node=\"node-a\"}"));
}

#[actix_rt::test]
async fn http1_fallback_keeps_one_connection_alive() {
    let ca = TestCa::new();
    let kubelet = Kubelet::start(
        &ca,
        &["127.0.0.1"],
        HTTP1_ONLY,
        Behavior::Body(metrics_body(2048)),
    );
    let engine = Engine::start(&[kubelet.target("node-a")], config(&ca), options(1));

    wait_for("ten scrapes", || engine.sink.accepted("node-a") >= 10).await;

    let stats = engine.stats("node-a");
    assert_eq!(stats.protocol, Some(Protocol::Http1));
    assert_eq!(stats.connections_opened, 1);
    assert_eq!(kubelet.connections(), 1);
    assert!(kubelet
        .seen
        .versions
        .lock()
        .expect("lock")
        .iter()
        .all(|v| *v == hyper::Version::HTTP_11));
}

#[actix_rt::test]
async fn connection_closed_by_the_kubelet_is_reopened_without_a_failed_scrape() {
    let ca = TestCa::new();
    let http1 = Kubelet::start(
        &ca,
        &["127.0.0.1"],
        HTTP1_ONLY,
        Behavior::BodyThenClose(metrics_body(512)),
    );
    let http2 = Kubelet::start(
        &ca,
        &["127.0.0.1"],
        BOTH,
        Behavior::BodyThenClose(metrics_body(512)),
    );
    let engine = Engine::start(
        &[http1.target("node-h1"), http2.target("node-h2")],
        config(&ca),
        options(1),
    );

    wait_for("five scrapes of each", || {
        engine.sink.accepted("node-h1") >= 5 && engine.sink.accepted("node-h2") >= 5
    })
    .await;

    for (node, protocol) in [("node-h1", Protocol::Http1), ("node-h2", Protocol::Http2)] {
        let stats = engine.stats(node);
        assert_eq!(stats.protocol, Some(protocol));
        assert_eq!(stats.scrapes_failed, 0, "{node}: {stats:?}");
        // HTTP/2's graceful GOAWAY may still admit a request sent just before it, so a connection
        // can serve two scrapes; what matters is that the closed ones were replaced silently.
        assert!(stats.connections_opened >= 3, "{node}: {stats:?}");
        assert_eq!(
            stats.ticks_skipped, 0,
            "{node}: no backoff after a clean close"
        );
    }
}

#[actix_rt::test]
async fn host_name_target_is_verified_against_dns_names() {
    let ca = TestCa::new();
    let kubelet = Kubelet::start(&ca, &["localhost"], BOTH, Behavior::Body(metrics_body(64)));
    let mut target = kubelet.target("node-dns");
    target.host = "localhost".into();
    let mut wrong = kubelet.target("node-wrong");
    wrong.host = "127.0.0.1".into();
    let engine = Engine::start(&[target, wrong], config(&ca), options(1));

    wait_for("two scrapes by name", || {
        engine.sink.accepted("node-dns") >= 2
    })
    .await;
    wait_for("a failure by IP", || {
        engine.stats("node-wrong").scrapes_failed >= 1
    })
    .await;
    assert_eq!(engine.sink.accepted("node-wrong"), 0);
}

#[actix_rt::test]
async fn each_of_many_nodes_keeps_exactly_one_connection() {
    let ca = TestCa::new();
    // One listener stands in for every kubelet; each node still dials its own connection.
    let kubelet = Kubelet::start(
        &ca,
        &["127.0.0.1"],
        BOTH,
        Behavior::Body(metrics_body(1024)),
    );
    let nodes: Vec<ScrapeTarget> = (0..100)
        .map(|i| kubelet.target(&format!("node-{i:03}")))
        .collect();
    let mut config = config(&ca);
    // 200 requests a second at most: a loaded test machine serves that, so no scrape times out
    // and every reconnect seen here would be the engine's fault.
    config.resolution = Duration::from_millis(500);
    config.request_timeout = Duration::from_secs(30);
    let engine = Engine::start(&nodes, config, options(2));

    wait_for("two scrapes of every node", || {
        nodes.iter().all(|t| engine.sink.accepted(&t.node) >= 2)
    })
    .await;

    for target in &nodes {
        let stats = engine.stats(&target.node);
        assert_eq!(stats.connections_opened, 1, "{}: {stats:?}", target.node);
        assert_eq!(stats.scrapes_failed, 0, "{}: {stats:?}", target.node);
    }
    assert_eq!(engine.handle.connections_opened(), 100);
    assert_eq!(kubelet.connections(), 100);
}

#[actix_rt::test]
async fn hanging_kubelet_does_not_delay_another_node_on_the_same_thread() {
    let ca = TestCa::new();
    let hanging = Kubelet::start(&ca, &["127.0.0.1"], BOTH, Behavior::Hang);
    let healthy = Kubelet::start(
        &ca,
        &["127.0.0.1"],
        BOTH,
        Behavior::Body(metrics_body(1024)),
    );
    let mut config = config(&ca);
    // Far longer than the test: the hanging scrape stays in flight throughout.
    config.request_timeout = Duration::from_secs(60);
    // One arbiter, so both scrapers share a thread.
    let engine = Engine::start(
        &[hanging.target("node-hang"), healthy.target("node-ok")],
        config,
        options(1),
    );

    wait_for("the hanging kubelet to receive a request", || {
        hanging.requests() >= 1
    })
    .await;
    let before = engine.sink.accepted("node-ok");
    wait_for("five more scrapes of the healthy node", || {
        engine.sink.accepted("node-ok") >= before + 5
    })
    .await;

    let stuck = engine.stats("node-hang");
    assert_eq!(
        stuck.scrapes_ok + stuck.scrapes_failed,
        0,
        "still in flight"
    );
    assert_eq!(hanging.requests(), 1, "one scrape in flight, no pile-up");
    assert_eq!(engine.sink.accepted("node-hang"), 0);
}

#[actix_rt::test]
async fn timed_out_scrape_is_a_failure_and_the_node_keeps_scraping() {
    let ca = TestCa::new();
    let hanging = Kubelet::start(&ca, &["127.0.0.1"], BOTH, Behavior::Hang);
    let mut config = config(&ca);
    config.request_timeout = Duration::from_millis(200);
    let engine = Engine::start(&[hanging.target("node-hang")], config, options(1));

    wait_for("two requests, each timed out", || {
        engine.stats("node-hang").scrapes_failed >= 2 && hanging.requests() >= 2
    })
    .await;

    let stats = engine.stats("node-hang");
    assert!(stats
        .last_error
        .as_deref()
        .unwrap_or_default()
        .contains("did not finish"));
    // A timed-out connection is not trusted again: no request reused one (under load a handshake
    // may itself time out, so connections can outnumber requests).
    assert!(hanging.connections() >= hanging.requests());
    assert_eq!(engine.sink.accepted("node-hang"), 0);
}

#[actix_rt::test]
async fn oversize_body_is_rejected_without_writing() {
    let ca = TestCa::new();
    let declared = Kubelet::start(
        &ca,
        &["127.0.0.1"],
        BOTH,
        Behavior::Body(metrics_body(64 * 1024)),
    );
    let streamed_h2 = Kubelet::start(
        &ca,
        &["127.0.0.1"],
        BOTH,
        Behavior::Streamed(metrics_body(64 * 1024)),
    );
    let streamed_h1 = Kubelet::start(
        &ca,
        &["127.0.0.1"],
        HTTP1_ONLY,
        Behavior::Streamed(metrics_body(64 * 1024)),
    );
    let mut config = config(&ca);
    config.max_body_bytes = 16 * 1024;
    let engine = Engine::start(
        &[
            declared.target("declared"),
            streamed_h2.target("streamed-h2"),
            streamed_h1.target("streamed-h1"),
        ],
        config,
        options(2),
    );

    for node in ["declared", "streamed-h2", "streamed-h1"] {
        wait_for("two failed scrapes", || {
            engine.stats(node).scrapes_failed >= 2
        })
        .await;
        let stats = engine.stats(node);
        assert!(
            stats
                .last_error
                .as_deref()
                .unwrap_or_default()
                .contains("exceeds 16384 bytes"),
            "{node}: {stats:?}"
        );
        assert_eq!(stats.scrapes_ok, 0);
        assert_eq!(engine.sink.accepted(node), 0);
    }
}

#[actix_rt::test]
async fn body_at_the_limit_is_accepted() {
    let ca = TestCa::new();
    let body = metrics_body(8 * 1024);
    let kubelet = Kubelet::start(&ca, &["127.0.0.1"], BOTH, Behavior::Streamed(body.clone()));
    let mut config = config(&ca);
    config.max_body_bytes = body.len();
    let engine = Engine::start(&[kubelet.target("node-a")], config, options(1));

    wait_for("two scrapes", || engine.sink.accepted("node-a") >= 2).await;
    assert_eq!(
        engine.sink.bytes.lock().expect("lock").get("node-a"),
        Some(&body.len())
    );
}

#[actix_rt::test]
async fn certificate_without_the_node_ip_names_the_fix() {
    let ca = TestCa::new();
    let kubelet = Kubelet::start(
        &ca,
        &["kubelet.example"],
        BOTH,
        Behavior::Body(metrics_body(64)),
    );
    let engine = Engine::start(&[kubelet.target("node-x")], config(&ca), options(1));

    wait_for("a failed scrape", || {
        engine.stats("node-x").scrapes_failed >= 1
    })
    .await;

    let message = engine.stats("node-x").last_error.unwrap_or_default();
    assert!(
        message.contains("kubelet certificate for node node-x does not cover IP 127.0.0.1"),
        "{message}"
    );
    assert!(message.contains("serverTLSBootstrap"), "{message}");
    assert!(message.contains("--kubelet-insecure-tls"), "{message}");
    assert!(
        message.contains("--kubelet-preferred-address-types=Hostname"),
        "{message}"
    );
    assert_eq!(kubelet.requests(), 0);
    assert_eq!(engine.sink.accepted("node-x"), 0);
}

#[actix_rt::test]
async fn insecure_tls_accepts_a_certificate_that_does_not_verify() {
    let ca = TestCa::new();
    let other_ca = TestCa::new();
    let kubelet = Kubelet::start(
        &other_ca,
        &["kubelet.example"],
        BOTH,
        Behavior::Body(metrics_body(64)),
    );
    let mut config = config(&ca);
    config.tls = KubeletTlsConfig {
        insecure: true,
        bearer_token: Some("sa-token".into()),
        ..Default::default()
    };
    let engine = Engine::start(&[kubelet.target("node-x")], config, options(1));

    wait_for("two scrapes", || engine.sink.accepted("node-x") >= 2).await;
}

#[actix_rt::test]
async fn unknown_ca_fails_verification() {
    let ca = TestCa::new();
    let other_ca = TestCa::new();
    let kubelet = Kubelet::start(
        &other_ca,
        &["127.0.0.1"],
        BOTH,
        Behavior::Body(metrics_body(64)),
    );
    let engine = Engine::start(&[kubelet.target("node-x")], config(&ca), options(1));

    wait_for("a failed scrape", || {
        engine.stats("node-x").scrapes_failed >= 1
    })
    .await;
    let message = engine.stats("node-x").last_error.unwrap_or_default();
    assert!(message.contains("TLS handshake"), "{message}");
    assert_eq!(kubelet.requests(), 0);
}

#[actix_rt::test]
async fn unauthorized_answer_is_counted_as_a_failure() {
    let ca = TestCa::new();
    let kubelet = Kubelet::start(&ca, &["127.0.0.1"], BOTH, Behavior::Status(401));
    let engine = Engine::start(&[kubelet.target("node-a")], config(&ca), options(1));

    wait_for("three failed scrapes", || {
        engine.stats("node-a").scrapes_failed >= 3
    })
    .await;

    let stats = engine.stats("node-a");
    assert_eq!(stats.scrapes_ok, 0);
    assert!(stats
        .last_error
        .as_deref()
        .unwrap_or_default()
        .contains("HTTP 401"));
    // An answered request leaves the connection healthy: no reconnect per failure.
    assert_eq!(stats.connections_opened, 1);
    assert_eq!(engine.sink.accepted("node-a"), 0);
    let text = engine.telemetry.encode();
    assert!(
        text.contains("metrics_server_kubelet_request_total{success=\"false\"}"),
        "{text}"
    );
    assert!(!text.contains("metrics_server_kubelet_request_total{success=\"true\"}"));
}

#[actix_rt::test]
async fn refused_connection_backs_off_before_redialling() {
    let closed_port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.local_addr().expect("addr").port()
    };
    let ca = TestCa::new();
    let target = ScrapeTarget {
        node: "node-down".into(),
        host: "127.0.0.1".into(),
        port: closed_port,
        path: "/metrics/resource".into(),
    };
    let mut options = options(1);
    options.reconnect_base = Duration::from_millis(200);
    options.reconnect_max = Duration::from_millis(400);
    let engine = Engine::start(&[target], config(&ca), options);

    wait_for("ticks skipped while backing off", || {
        let stats = engine.stats("node-down");
        stats.scrapes_failed >= 2 && stats.ticks_skipped >= 5
    })
    .await;
    let stats = engine.stats("node-down");
    assert!(stats
        .last_error
        .as_deref()
        .unwrap_or_default()
        .contains("connecting"));
    // Every 20 ms tick would have dialled without the backoff.
    assert!(stats.ticks_skipped > stats.scrapes_failed, "{stats:?}");
}

#[actix_rt::test]
async fn removed_target_stops_its_scraper_and_forgets_the_node() {
    let ca = TestCa::new();
    let leaving = Kubelet::start(&ca, &["127.0.0.1"], BOTH, Behavior::Body(metrics_body(256)));
    let staying = Kubelet::start(&ca, &["127.0.0.1"], BOTH, Behavior::Body(metrics_body(256)));
    let engine = Engine::start(
        &[
            leaving.target("node-leaving"),
            staying.target("node-staying"),
        ],
        config(&ca),
        options(2),
    );
    wait_for("both nodes scraped", || {
        engine.sink.accepted("node-leaving") >= 2 && engine.sink.accepted("node-staying") >= 2
    })
    .await;
    assert!(engine.telemetry.encode().contains("node=\"node-leaving\""));

    engine.set_targets(&[staying.target("node-staying")]);
    wait_for("the node to be forgotten", || {
        engine.handle.node_stats("node-leaving").is_none()
    })
    .await;

    assert_eq!(engine.sink.removed(), vec!["node-leaving".to_owned()]);
    assert!(!engine.telemetry.encode().contains("node=\"node-leaving\""));
    // No more scrapes of the removed node while the other keeps going.
    let requests = leaving.requests();
    let accepted = engine.sink.accepted("node-leaving");
    let base = engine.sink.accepted("node-staying");
    wait_for("five more scrapes of the remaining node", || {
        engine.sink.accepted("node-staying") >= base + 5
    })
    .await;
    assert_eq!(leaving.requests(), requests);
    assert_eq!(engine.sink.accepted("node-leaving"), accepted);
    assert!(engine.telemetry.encode().contains("node=\"node-staying\""));
}

#[actix_rt::test]
async fn changed_target_restarts_the_scraper_at_the_new_address() {
    let ca = TestCa::new();
    let old = Kubelet::start(&ca, &["127.0.0.1"], BOTH, Behavior::Body(metrics_body(256)));
    let new = Kubelet::start(
        &ca,
        &["127.0.0.1"],
        HTTP1_ONLY,
        Behavior::Body(metrics_body(256)),
    );
    let engine = Engine::start(&[old.target("node-a")], config(&ca), options(2));
    wait_for("scrapes at the old address", || old.requests() >= 2).await;

    engine.set_targets(&[new.target("node-a")]);
    wait_for("scrapes at the new address", || new.requests() >= 3).await;

    // A moved node is the same node: its data is not removed.
    assert!(engine.sink.removed().is_empty());
    let stats = engine.stats("node-a");
    assert_eq!(stats.protocol, Some(Protocol::Http1));
    assert_eq!(stats.connections_opened, 2);
    let old_requests = old.requests();
    let base = new.requests();
    wait_for("more scrapes at the new address", || {
        new.requests() >= base + 3
    })
    .await;
    assert_eq!(old.requests(), old_requests);
}

#[actix_rt::test]
async fn client_certificate_replaces_the_bearer_token() {
    let ca = TestCa::new();
    let kubelet = Kubelet::start(&ca, &["127.0.0.1"], BOTH, Behavior::Body(metrics_body(64)));
    let (cert_pem, key_pem) = ca.serving_pem(&["metrics-server"]);
    let dir = TempDir::new("client-cert");
    let cert_path = dir.path("client.crt");
    let key_path = dir.path("client.key");
    std::fs::write(&cert_path, cert_pem).expect("write cert");
    std::fs::write(&key_path, key_pem).expect("write key");
    let mut config = config(&ca);
    config.tls.client_cert_file = Some(cert_path);
    config.tls.client_key_file = Some(key_path);
    let engine = Engine::start(&[kubelet.target("node-a")], config, options(1));

    wait_for("two scrapes", || engine.sink.accepted("node-a") >= 2).await;
    assert!(kubelet
        .seen
        .authorization
        .lock()
        .expect("lock")
        .iter()
        .all(Option::is_none));
}

#[actix_rt::test]
async fn stop_ends_every_scraper() {
    let ca = TestCa::new();
    let kubelet = Kubelet::start(&ca, &["127.0.0.1"], BOTH, Behavior::Body(metrics_body(64)));
    let other = Kubelet::start(&ca, &["127.0.0.1"], BOTH, Behavior::Body(metrics_body(64)));
    let engine = Engine::start(&[kubelet.target("node-a")], config(&ca), options(2));
    wait_for("two scrapes", || engine.sink.accepted("node-a") >= 2).await;

    engine.handle.stop();
    // Silence is judged against events: a second engine keeps scraping while the stopped one
    // sends nothing more.
    let witness = Engine::start(&[other.target("witness")], config(&ca), options(1));
    wait_for("the witness to scrape once", || {
        witness.sink.accepted("witness") >= 1
    })
    .await;
    let requests = kubelet.requests();
    wait_for("five more witness scrapes", || {
        witness.sink.accepted("witness") >= 6
    })
    .await;
    assert_eq!(kubelet.requests(), requests);
    assert!(
        engine.sink.removed().is_empty(),
        "stopping keeps stored data"
    );
}

#[actix_rt::test]
async fn inconsistent_tls_flags_fail_at_start() {
    let (_tx, rx) = watch::channel(targets_of(&[]));
    let result = scrape::start_with(
        Arc::new(RecordingSink::default()),
        rx,
        ScrapeConfig {
            resolution: Duration::from_secs(15),
            request_timeout: Duration::from_secs(10),
            max_body_bytes: 1 << 20,
            tls: KubeletTlsConfig {
                insecure: true,
                ca_file: Some(PathBuf::from("/nonexistent/ca.crt")),
                ..Default::default()
            },
        },
        Arc::new(Telemetry::new()),
        options(1),
    );
    assert!(matches!(result, Err(scrape::ScrapeError::Tls(_))));
}

/// A kubelet body whose samples advance with every request: one node and one pod of one container.
fn advancing_body(pod: &'static str) -> Behavior {
    let started_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_millis() as u64
        - 60_000;
    Behavior::Generated(Arc::new(move |n| {
        let ts = started_ms + 1_000 * (n as u64 + 1);
        let cpu = 10.0 + n as f64;
        Bytes::from(format!(
            "node_cpu_usage_seconds_total {cpu} {ts}\n\
             node_memory_working_set_bytes 1.2e+09 {ts}\n\
             container_cpu_usage_seconds_total{{container=\"app\",namespace=\"ns\",pod=\"{pod}\"}} {cpu} {ts}\n\
             container_memory_working_set_bytes{{container=\"app\",namespace=\"ns\",pod=\"{pod}\"}} 5.0e+07 {ts}\n\
             container_start_time_seconds{{container=\"app\",namespace=\"ns\",pod=\"{pod}\"}} {start}\n\
             resource_scrape_error 0\n",
            start = (started_ms - 3_600_000) / 1000,
        ))
    }))
}

#[actix_rt::test]
async fn scrapes_reach_the_store_and_a_removed_node_is_forgotten() {
    let ca = TestCa::new();
    let kubelet_a = Kubelet::start(&ca, &["127.0.0.1"], BOTH, advancing_body("pod-a"));
    let kubelet_b = Kubelet::start(&ca, &["127.0.0.1"], BOTH, advancing_body("pod-b"));
    let config = config(&ca);
    let store = Arc::new(Store::new(StoreConfig::from_resolution(config.resolution)));
    let telemetry = Arc::new(Telemetry::new());
    let (targets, rx) = watch::channel(targets_of(&[
        kubelet_a.target("node-a"),
        kubelet_b.target("node-b"),
    ]));
    let handle = scrape::start(store.clone(), rx, config, telemetry.clone()).expect("starts");

    wait_for("both nodes and their pods served", || {
        let snapshot = store.snapshot();
        snapshot.node("node-a").is_some()
            && snapshot.node("node-b").is_some()
            && snapshot.pod("ns", "pod-a").is_some()
            && snapshot.pod("ns", "pod-b").is_some()
    })
    .await;
    let node_a = store.snapshot().node("node-a").cloned().expect("served");
    // One core-second per kubelet second: the rate is one core.
    assert_eq!(node_a.usage.cpu_nanocores, 1_000_000_000);
    assert_eq!(node_a.window, 1_000_000_000);
    assert!(telemetry.last_collection() > 0);

    targets.send_replace(targets_of(&[kubelet_b.target("node-b")]));
    wait_for("node-a forgotten", || handle.node_stats("node-a").is_none()).await;
    let snapshot = store.snapshot();
    assert!(snapshot.node("node-a").is_none());
    assert!(snapshot.pod("ns", "pod-a").is_none());
    assert!(snapshot.node("node-b").is_some());
    assert_eq!(store.tracked_nodes(), 1);
    assert!(!telemetry.encode().contains("node=\"node-a\""));
    handle.stop();
}

#[actix_rt::test]
async fn kubelet_scrape_error_fails_the_scrape_and_keeps_the_points() {
    let ca = TestCa::new();
    let good = advancing_body("pod-a");
    let Behavior::Generated(make_good) = good else {
        unreachable!("advancing_body generates")
    };
    // Three good answers, then the kubelet reports it could not collect.
    let kubelet = Kubelet::start(
        &ca,
        &["127.0.0.1"],
        BOTH,
        Behavior::Generated(Arc::new(move |n| {
            if n < 3 {
                make_good(n)
            } else {
                Bytes::from_static(b"resource_scrape_error 1\n")
            }
        })),
    );
    let config = config(&ca);
    let store = Arc::new(Store::new(StoreConfig::from_resolution(config.resolution)));
    let (_targets, rx) = watch::channel(targets_of(&[kubelet.target("node-a")]));
    let handle =
        scrape::start(store.clone(), rx, config, Arc::new(Telemetry::new())).expect("starts");

    wait_for("two failed scrapes", || {
        handle
            .node_stats("node-a")
            .is_some_and(|s| s.scrapes_failed >= 2)
    })
    .await;
    let stats = handle.node_stats("node-a").expect("still a target");
    assert_eq!(stats.scrapes_ok, 3);
    assert!(stats
        .last_error
        .as_deref()
        .unwrap_or_default()
        .contains("scrape error"));
    let node = store
        .snapshot()
        .node("node-a")
        .cloned()
        .expect("points kept");
    // Still the rate between the second and third good answers.
    assert_eq!(node.usage.cpu_nanocores, 1_000_000_000);
    handle.stop();
}

// === small helpers ===

/// A directory removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> Self {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "scrape-wire-{tag}-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::SeqCst)
        ));
        std::fs::create_dir_all(&dir).expect("temp dir");
        TempDir(dir)
    }

    fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
