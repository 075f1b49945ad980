//! A real router behind the real TLS server on loopback, over a small fixed cluster, for the
//! wire tests of the API's formats and certificates.

#![allow(dead_code)]

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::client::conn::http2::SendRequest;
use hyper_util::rt::{TokioExecutor, TokioIo};
use metrics_server::api::auth::Auth;
use metrics_server::api::health::HealthConfig;
use metrics_server::api::routes::{self, ClusterLookup, ClusterSource, Router};
use metrics_server::api::server::{self, ServingTls, TlsSettings};
use metrics_server::model::{ContainerScrape, Labels, MetricsPoint, Name, NodeScrape, PodScrape};
use metrics_server::store::{Store, StoreConfig};
use metrics_server::telemetry::Telemetry;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

/// Bound on every wait in these tests.
pub const LIMIT: Duration = Duration::from_secs(10);
const SECOND: i64 = 1_000_000_000;

/// Nodes `node-0..n`, each running pods `pod-<node>-0..2` in namespace `ns-<node % 2>`.
#[derive(Default)]
pub struct Cluster {
    pub nodes: BTreeMap<String, Labels>,
    pub pods: BTreeMap<(String, String), Labels>,
}

impl ClusterLookup for Cluster {
    fn node_labels(&self, name: &str) -> Option<&Labels> {
        self.nodes.get(name)
    }
    fn running_pod_labels(&self, namespace: &str, name: &str) -> Option<&Labels> {
        self.pods.get(&(namespace.to_owned(), name.to_owned()))
    }
}

struct Source(Arc<Cluster>);

impl ClusterSource for Source {
    fn view(&self) -> Arc<dyn ClusterLookup> {
        Arc::clone(&self.0) as Arc<dyn ClusterLookup>
    }
    fn is_synced(&self) -> bool {
        true
    }
}

/// A store holding two scrapes 10 s apart of `nodes` nodes with two pods each, the last one
/// a second ago, and the matching cluster view.
pub fn populated(nodes: usize) -> (Arc<Store>, Cluster) {
    let now = routes::now();
    let store = Arc::new(Store::new(StoreConfig::from_resolution(
        Duration::from_secs(10),
    )));
    let mut cluster = Cluster::default();
    for n in 0..nodes {
        let node = format!("node-{n}");
        cluster
            .nodes
            .insert(node.clone(), Labels::from_pairs([("zone", "a")]));
        let pods: Vec<(String, String)> = (0..2)
            .map(|p| (format!("ns-{}", n % 2), format!("pod-{n}-{p}")))
            .collect();
        for key in &pods {
            cluster
                .pods
                .insert(key.clone(), Labels::from_pairs([("app", "web")]));
        }
        for (i, at) in [now - 11 * SECOND, now - SECOND].into_iter().enumerate() {
            let i = i as u64;
            let scrape = NodeScrape {
                node: Some(MetricsPoint {
                    start_time: 0,
                    timestamp: at,
                    cumulative_cpu_used: (100 + 10 * i) * 1_000_000_000,
                    memory_usage: 1 << 30,
                }),
                pods: pods
                    .iter()
                    .map(|(namespace, name)| PodScrape {
                        namespace: Cow::Owned(namespace.clone()),
                        name: Cow::Owned(name.clone()),
                        containers: smallvec::smallvec![ContainerScrape {
                            name: Cow::Borrowed("app"),
                            point: MetricsPoint {
                                start_time: now - 3600 * SECOND,
                                timestamp: at,
                                cumulative_cpu_used: (10 + i) * 1_000_000_000,
                                memory_usage: 64 << 20,
                            },
                        }],
                    })
                    .collect(),
            };
            store.write_node(&Name::from(node.as_str()), &scrape, at);
        }
    }
    (store, cluster)
}

pub struct Running {
    pub address: std::net::SocketAddr,
    pub tls: ServingTls,
    pub stop: watch::Sender<bool>,
    pub served: tokio::task::JoinHandle<()>,
}

/// Serves `store` and `cluster` with the given TLS settings, re-reading certificates every
/// `reload`.
pub async fn serve(
    store: Arc<Store>,
    cluster: Cluster,
    settings: &TlsSettings,
    reload: Duration,
) -> Running {
    let tls = server::serving_tls(settings, reload).unwrap();
    let router = Arc::new(Router::new(
        store,
        Arc::new(Source(Arc::new(cluster))),
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
    let served = tokio::spawn(server::serve(
        listener,
        Arc::clone(&tls.config),
        router,
        stopped,
    ));
    Running {
        address,
        tls,
        stop,
        served,
    }
}

/// Serves `populated(nodes)` with a self-signed pair generated into a scratch directory for
/// `name`, and connects an HTTP/2 client that trusts it. Returns the server, the client and the
/// directory (for the caller to remove).
pub async fn serve_generated(
    name: &str,
    nodes: usize,
) -> (Running, SendRequest<Empty<Bytes>>, PathBuf) {
    let dir = scratch(name);
    let (store, cluster) = populated(nodes);
    let running = serve(
        store,
        cluster,
        &TlsSettings {
            cert_dir: dir.clone(),
            ..TlsSettings::default()
        },
        Duration::from_secs(60),
    )
    .await;
    let pem = std::fs::read(dir.join("apiserver.crt")).unwrap();
    let roots: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&pem)
        .map(Result::unwrap)
        .collect();
    let sender = h2(connect(running.address, &connector(&roots)).await).await;
    (running, sender, dir)
}

/// A client trusting exactly `roots`, offering h2 then HTTP/1.1, never resuming sessions.
pub fn connector(roots: &[CertificateDer<'static>]) -> TlsConnector {
    let mut store = rustls::RootCertStore::empty();
    for root in roots {
        store.add(root.clone()).unwrap();
    }
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(store)
    .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    // Every connection does a full handshake, so each one sees the certificate presented now
    // rather than the one a resumed session was made with.
    config.resumption = rustls::client::Resumption::disabled();
    TlsConnector::from(Arc::new(config))
}

pub async fn connect(
    address: std::net::SocketAddr,
    connector: &TlsConnector,
) -> TlsStream<TcpStream> {
    let tcp = TcpStream::connect(address).await.unwrap();
    let name = ServerName::try_from("localhost").unwrap();
    tokio::time::timeout(LIMIT, connector.connect(name, tcp))
        .await
        .unwrap()
        .unwrap()
}

/// An HTTP/2 client on an established TLS stream.
pub async fn h2(tls: TlsStream<TcpStream>) -> SendRequest<Empty<Bytes>> {
    let (sender, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
            .await
            .unwrap();
    tokio::spawn(connection);
    sender
}

/// A response's status, headers and body bytes.
pub struct Reply {
    pub code: u16,
    pub headers: http::HeaderMap,
    pub body: Bytes,
}

impl Reply {
    pub fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .map(|v| v.to_str().unwrap())
            .unwrap_or("")
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "invalid JSON ({e}): {}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }
}

pub async fn send(
    sender: &mut SendRequest<Empty<Bytes>>,
    method: http::Method,
    path: &str,
    headers: &[(&str, &str)],
) -> Reply {
    let mut request = http::Request::builder()
        .method(method)
        .uri(format!("https://localhost{path}"));
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = tokio::time::timeout(
        LIMIT,
        sender.send_request(request.body(Empty::new()).unwrap()),
    )
    .await
    .unwrap()
    .unwrap();
    let code = response.status().as_u16();
    let headers = response.headers().clone();
    let body = tokio::time::timeout(LIMIT, response.into_body().collect())
        .await
        .unwrap()
        .unwrap()
        .to_bytes();
    Reply {
        code,
        headers,
        body,
    }
}

/// A scratch directory for one test.
pub fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("metrics-server-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}
