//! A long list over the wire: rendered off the I/O workers and streamed, so small requests are
//! answered while it is still being produced, and it arrives whole (HTTP/2 and HTTP/1.1 chunked)
//! without a length up front.

#[path = "common/tls_api.rs"]
mod tls_api;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::Method;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};
use metrics_server::api::auth::Auth;
use metrics_server::api::health::HealthConfig;
use metrics_server::api::routes::{self, ClusterLookup, ClusterSource, Router};
use metrics_server::api::server::{self, TlsSettings};
use metrics_server::telemetry::Telemetry;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use tls_api::{connect, connector, populated, scratch, send, Cluster, LIMIT};
use tokio::sync::watch;

/// 8,000 nodes x 2 pods: the JSON list is several MiB, far more than a paused client's window,
/// the server's send buffer and the chunks rendered ahead together hold.
const NODES: usize = 8_000;
const PODS: &str = "/apis/metrics.k8s.io/v1beta1/pods";

struct Source(Arc<Cluster>);

impl ClusterSource for Source {
    fn view(&self) -> Arc<dyn ClusterLookup> {
        Arc::clone(&self.0) as Arc<dyn ClusterLookup>
    }
    fn is_synced(&self) -> bool {
        true
    }
}

struct Served {
    address: std::net::SocketAddr,
    roots: Vec<CertificateDer<'static>>,
    telemetry: Arc<Telemetry>,
    stop: watch::Sender<bool>,
    served: tokio::task::JoinHandle<()>,
    dir: std::path::PathBuf,
}

async fn start(name: &str) -> Served {
    let dir = scratch(name);
    let (store, cluster) = populated(NODES);
    let telemetry = Arc::new(Telemetry::new());
    let router = Arc::new(Router::new(
        store,
        Arc::new(Source(Arc::new(cluster))),
        Arc::clone(&telemetry),
        None,
        Auth::default(),
        HealthConfig {
            resolution: Duration::from_secs(60),
            startup_grace: Duration::from_secs(60),
            started: routes::now(),
        },
    ));
    let tls = server::tls_config(&TlsSettings {
        cert_dir: dir.clone(),
        ..TlsSettings::default()
    })
    .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let (stop, stopped) = watch::channel(false);
    let served = tokio::spawn(server::serve(listener, tls, router, stopped));
    let pem = std::fs::read(dir.join("apiserver.crt")).unwrap();
    let roots = CertificateDer::pem_slice_iter(&pem)
        .map(Result::unwrap)
        .collect();
    Served {
        address,
        roots,
        telemetry,
        stop,
        served,
        dir,
    }
}

impl Served {
    /// Items whose freshness was recorded: a list records its items once it is fully rendered.
    fn items_served(&self) -> u64 {
        let text = self.telemetry.encode();
        let line = text
            .lines()
            .find(|line| line.starts_with("metrics_server_api_metric_freshness_seconds_count"))
            .unwrap_or_else(|| panic!("no freshness count in {text}"));
        line.rsplit(' ').next().unwrap().parse().unwrap()
    }

    async fn stop(self) {
        self.stop.send(true).unwrap();
        tokio::time::timeout(LIMIT, self.served)
            .await
            .unwrap()
            .unwrap();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// An HTTP/2 client that grants each stream the protocol's default 64 KiB window and its
/// connection Go's 1 GiB, so an unread stream stalls alone.
async fn h2_small_windows(
    served: &Served,
) -> hyper::client::conn::http2::SendRequest<Empty<Bytes>> {
    let tls = connect(served.address, &connector(&served.roots)).await;
    let (sender, connection) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
        .initial_stream_window_size(65_535)
        .initial_connection_window_size(1 << 30)
        .handshake(TokioIo::new(tls))
        .await
        .unwrap();
    tokio::spawn(connection);
    sender
}

fn item_count(body: &[u8]) -> usize {
    let list: serde_json::Value = serde_json::from_slice(body).unwrap();
    assert_eq!(list["kind"], "PodMetricsList");
    list["items"].as_array().unwrap().len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn small_requests_are_answered_while_a_long_list_is_still_being_produced() {
    let served = start("streaming-concurrent").await;
    let mut paused = h2_small_windows(&served).await;
    let request = http::Request::get(format!("https://localhost{PODS}"))
        .body(Empty::new())
        .unwrap();
    let response = tokio::time::timeout(LIMIT, paused.send_request(request))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(response.status(), 200);
    assert!(
        response
            .headers()
            .get(http::header::CONTENT_LENGTH)
            .is_none(),
        "a streamed list has no length up front"
    );
    let mut big = response.into_body();
    let first = tokio::time::timeout(LIMIT, big.frame())
        .await
        .unwrap()
        .unwrap()
        .unwrap()
        .into_data()
        .unwrap();
    assert!(first.starts_with(br#"{"kind":"PodMetricsList""#));

    // With the long list unread, small requests on its own connection and on another one.
    let mut other = h2_small_windows(&served).await;
    for sender in [&mut paused, &mut other] {
        let node = send(
            sender,
            Method::GET,
            "/apis/metrics.k8s.io/v1beta1/nodes/node-1",
            &[],
        )
        .await;
        assert_eq!(node.code, 200);
        assert_eq!(node.json()["metadata"]["name"], "node-1");
        assert!(node.header("content-length").parse::<usize>().unwrap() > 0);
        let ready = send(sender, Method::GET, "/readyz", &[]).await;
        assert_eq!((ready.code, &ready.body[..]), (200, &b"ok"[..]));
    }
    // Only the two node reads are recorded: the long list's renderer is still waiting for its
    // client, well short of its end.
    assert_eq!(served.items_served(), 2);

    let mut body = first.to_vec();
    while let Some(frame) = tokio::time::timeout(LIMIT, big.frame()).await.unwrap() {
        body.extend_from_slice(&frame.unwrap().into_data().unwrap());
    }
    assert!(body.len() > 3 << 20, "{} bytes", body.len());
    assert_eq!(item_count(&body), 2 * NODES);
    assert_eq!(served.items_served(), 2 + 2 * NODES as u64);
    served.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_list_over_http1_is_sent_chunked_and_whole() {
    let served = start("streaming-http1").await;
    let mut roots = rustls::RootCertStore::empty();
    for root in &served.roots {
        roots.add(root.clone()).unwrap();
    }
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let tcp = tokio::net::TcpStream::connect(served.address)
        .await
        .unwrap();
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .unwrap();
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .unwrap();
    tokio::spawn(connection);
    let request = http::Request::get(PODS)
        .header(http::header::HOST, "localhost")
        .body(Empty::<Bytes>::new())
        .unwrap();
    let response = tokio::time::timeout(LIMIT, sender.send_request(request))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers().get(http::header::TRANSFER_ENCODING),
        Some(&http::HeaderValue::from_static("chunked"))
    );
    assert!(response
        .headers()
        .get(http::header::CONTENT_LENGTH)
        .is_none());
    let body = tokio::time::timeout(LIMIT, response.into_body().collect())
        .await
        .unwrap()
        .unwrap()
        .to_bytes();
    assert_eq!(item_count(&body), 2 * NODES);
    served.stop().await;
}
