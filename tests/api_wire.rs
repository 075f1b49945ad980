//! The API over the wire: TLS with a generated certificate, HTTP/2 and HTTP/1.1 by ALPN, a bad
//! peer not stopping the accept loop, and graceful shutdown. Loopback only.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};
use metrics_server::api::auth::Auth;
use metrics_server::api::discovery_docs;
use metrics_server::api::health::HealthConfig;
use metrics_server::api::routes::{self, ClusterLookup, ClusterSource, Router};
use metrics_server::api::server::{self, TlsSettings};
use metrics_server::model::Labels;
use metrics_server::store::{Store, StoreConfig};
use metrics_server::telemetry::Telemetry;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

/// Bound on every wait in these tests.
const LIMIT: Duration = Duration::from_secs(10);

struct EmptyCluster;

impl ClusterLookup for EmptyCluster {
    fn node_labels(&self, _name: &str) -> Option<&Labels> {
        None
    }
    fn running_pod_labels(&self, _namespace: &str, _name: &str) -> Option<&Labels> {
        None
    }
}

impl ClusterSource for EmptyCluster {
    fn view(&self) -> Arc<dyn ClusterLookup> {
        Arc::new(EmptyCluster)
    }
    fn is_synced(&self) -> bool {
        true
    }
}

struct Running {
    address: std::net::SocketAddr,
    connector: TlsConnector,
    alpn_h1: TlsConnector,
    stop: watch::Sender<bool>,
    served: tokio::task::JoinHandle<()>,
    dir: std::path::PathBuf,
}

async fn start(name: &str) -> Running {
    let dir =
        std::env::temp_dir().join(format!("metrics-server-wire-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let tls = server::tls_config(&TlsSettings {
        cert_dir: dir.clone(),
        ..TlsSettings::default()
    })
    .unwrap();
    let router = Arc::new(Router::new(
        Arc::new(Store::new(StoreConfig::default())),
        Arc::new(EmptyCluster),
        Arc::new(Telemetry::new()),
        None,
        Auth::default(),
        HealthConfig {
            resolution: Duration::from_secs(60),
            startup_grace: Duration::from_secs(60),
            started: routes::now(),
        },
    ));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let (stop, stopped) = watch::channel(false);
    let served = tokio::spawn(server::serve(listener, tls, router, stopped));

    let cert_pem = std::fs::read(dir.join("apiserver.crt")).unwrap();
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(&cert_pem) {
        roots.add(cert.unwrap()).unwrap();
    }
    let client = |alpn: Vec<Vec<u8>>| {
        let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots.clone())
        .with_no_client_auth();
        config.alpn_protocols = alpn;
        TlsConnector::from(Arc::new(config))
    };
    Running {
        address,
        connector: client(vec![b"h2".to_vec(), b"http/1.1".to_vec()]),
        alpn_h1: client(vec![b"http/1.1".to_vec()]),
        stop,
        served,
        dir,
    }
}

impl Running {
    async fn connect(&self, connector: &TlsConnector) -> TlsStream<TcpStream> {
        let tcp = TcpStream::connect(self.address).await.unwrap();
        let name = ServerName::try_from("localhost").unwrap();
        tokio::time::timeout(LIMIT, connector.connect(name, tcp))
            .await
            .unwrap()
            .unwrap()
    }
}

fn get(path: &str) -> http::Request<Empty<Bytes>> {
    http::Request::get(format!("https://localhost{path}"))
        .body(Empty::new())
        .unwrap()
}

async fn read_body(response: http::Response<hyper::body::Incoming>) -> (u16, String) {
    let code = response.status().as_u16();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (code, String::from_utf8(body.to_vec()).unwrap())
}

#[tokio::test]
async fn http2_is_negotiated_by_alpn_and_serves_discovery() {
    let running = start("h2").await;
    let tls = running.connect(&running.connector).await;
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let (mut sender, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
            .await
            .unwrap();
    tokio::spawn(connection);
    let response = tokio::time::timeout(
        LIMIT,
        sender.send_request(get("/apis/metrics.k8s.io/v1beta1")),
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!(response.version(), http::Version::HTTP_2);
    assert_eq!(response.headers()["content-type"], "application/json");
    let (code, body) = read_body(response).await;
    assert_eq!(code, 200);
    assert_eq!(body, discovery_docs::API_RESOURCE_LIST);

    // Several requests share the one connection.
    let (code, body) = read_body(sender.send_request(get("/livez")).await.unwrap()).await;
    assert_eq!((code, body.as_str()), (200, "ok"));
    let _ = std::fs::remove_dir_all(&running.dir);
}

#[tokio::test]
async fn http1_is_served_to_clients_without_h2() {
    let running = start("h1").await;
    let tls = running.connect(&running.alpn_h1).await;
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .unwrap();
    tokio::spawn(connection);
    let response = tokio::time::timeout(
        LIMIT,
        sender.send_request(get("/apis/metrics.k8s.io/v1beta1/nodes/missing")),
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!(response.version(), http::Version::HTTP_11);
    let (code, body) = read_body(response).await;
    assert_eq!(code, 404);
    assert!(body.contains("\"kind\":\"Status\""), "{body}");
    let _ = std::fs::remove_dir_all(&running.dir);
}

#[tokio::test]
async fn a_peer_that_is_not_speaking_tls_does_not_stop_the_server() {
    let running = start("garbage").await;
    let mut plain = TcpStream::connect(running.address).await.unwrap();
    plain
        .write_all(b"GET /livez HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    // The server drops the connection (after at most a TLS alert).
    let mut sink = Vec::new();
    let _ = tokio::time::timeout(LIMIT, plain.read_to_end(&mut sink))
        .await
        .unwrap();

    let tls = running.connect(&running.connector).await;
    let (mut sender, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
            .await
            .unwrap();
    tokio::spawn(connection);
    let (code, _) = read_body(sender.send_request(get("/version")).await.unwrap()).await;
    assert_eq!(code, 200);
    let _ = std::fs::remove_dir_all(&running.dir);
}

#[tokio::test]
async fn shutdown_stops_accepting_and_the_server_returns() {
    let running = start("shutdown").await;
    // An idle open connection must not hold shutdown up.
    let tls = running.connect(&running.connector).await;
    let (_sender, connection) = hyper::client::conn::http2::handshake::<_, _, Empty<Bytes>>(
        TokioExecutor::new(),
        TokioIo::new(tls),
    )
    .await
    .unwrap();
    let client_side = tokio::spawn(connection);

    running.stop.send(true).unwrap();
    tokio::time::timeout(LIMIT, running.served)
        .await
        .expect("the server did not stop in time")
        .unwrap();
    assert!(TcpStream::connect(running.address).await.is_err());
    // The idle connection was closed by the server (HTTP/2 GOAWAY).
    let _ = tokio::time::timeout(LIMIT, client_side).await.unwrap();
    let _ = std::fs::remove_dir_all(&running.dir);
}
