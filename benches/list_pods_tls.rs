//! The all-pods list of a 150,000-pod cluster end to end over loopback: the real listener (TLS
//! with a generated certificate, HTTP/2 by ALPN) serving one client connection, body read in
//! full. Wall time on a shared machine; throughput is bytes of JSON per second.
//!
//! Two clients: one advertising the flow-control windows of Go's HTTP/2 transport (what the
//! kube-apiserver's aggregator uses: 4 MiB per stream, 1 GiB per connection), and one with the
//! protocol's 64 KiB defaults, whose window updates cost a round trip per 64 KiB.

/// The allocator the server binary runs with, so the figures are the server's.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};
use metrics_server::api::server::{self, TlsSettings};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio_rustls::TlsConnector;

#[path = "support/cluster.rs"]
mod cluster;

const NODES: usize = 5_000;
const PODS_PER_NODE: usize = 30;
const PATH: &str = "https://localhost/apis/metrics.k8s.io/v1beta1/pods";

type Sender = hyper::client::conn::http2::SendRequest<Empty<Bytes>>;

async fn connect(
    address: std::net::SocketAddr,
    connector: &TlsConnector,
    windows: Option<(u32, u32)>,
) -> Sender {
    let tcp = TcpStream::connect(address).await.expect("connect");
    tcp.set_nodelay(true).expect("nodelay");
    let name = ServerName::try_from("localhost").expect("a DNS name");
    let tls = connector.connect(name, tcp).await.expect("TLS handshake");
    let mut builder = hyper::client::conn::http2::Builder::new(TokioExecutor::new());
    match windows {
        Some((stream, connection)) => builder
            .initial_stream_window_size(stream)
            .initial_connection_window_size(connection),
        None => builder
            .initial_stream_window_size(65_535)
            .initial_connection_window_size(65_535),
    };
    let (sender, connection) = builder
        .handshake(TokioIo::new(tls))
        .await
        .expect("HTTP/2 handshake");
    tokio::spawn(connection);
    sender
}

async fn fetch(sender: &mut Sender) -> usize {
    let request = http::Request::get(PATH)
        .body(Empty::new())
        .expect("a valid request");
    let response = sender.send_request(request).await.expect("response");
    assert_eq!(response.status(), 200);
    let body = response
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes();
    body.len()
}

fn list_over_tls(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime");
    let dir = std::env::temp_dir().join(format!("metrics-server-bench-tls-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let tls = server::tls_config(&TlsSettings {
        cert_dir: dir.clone(),
        ..TlsSettings::default()
    })
    .expect("a generated certificate");
    let router = Arc::new(cluster::router(NODES, PODS_PER_NODE));
    let (stop, stopped) = watch::channel(false);
    let (address, served) = runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a loopback port");
        let address = listener.local_addr().expect("its address");
        (
            address,
            tokio::spawn(server::serve(listener, tls, router, stopped)),
        )
    });
    let cert_pem = std::fs::read(dir.join("apiserver.crt")).expect("the generated certificate");
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(&cert_pem) {
        roots.add(cert.expect("PEM")).expect("a root");
    }
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("versions")
    .with_root_certificates(roots)
    .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec()];
    let connector = TlsConnector::from(Arc::new(config));

    let mut group = c.benchmark_group("5000 nodes x 30 pods over TLS + HTTP/2");
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(20));
    for (label, windows) in [
        ("all pods, Go transport windows", Some((4 << 20, 1 << 30))),
        ("all pods, 64 KiB windows", None),
    ] {
        let mut sender = runtime.block_on(connect(address, &connector, windows));
        let len = runtime.block_on(fetch(&mut sender));
        group.throughput(Throughput::Bytes(len as u64));
        group.bench_function(label, |b| {
            b.iter_custom(|iterations| {
                let start = Instant::now();
                for _ in 0..iterations {
                    runtime.block_on(fetch(&mut sender));
                }
                start.elapsed()
            })
        });
    }
    group.finish();
    let _ = stop.send(true);
    drop(runtime.block_on(served));
    let _ = std::fs::remove_dir_all(&dir);
}

criterion_group!(benches, list_over_tls);
criterion_main!(benches);
