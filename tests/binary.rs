//! The binary end to end: flags are checked before anything starts; with an unreachable API server
//! it still serves health over HTTPS (live, not ready) and exits cleanly on SIGTERM. Loopback only.

use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

const BINARY: &str = env!("CARGO_BIN_EXE_metrics-server");
/// Bound on every wait in these tests.
const LIMIT: Duration = Duration::from_secs(20);

#[test]
fn unknown_flags_and_invalid_values_fail_before_starting() {
    for args in [
        &["--no-such-flag"][..],
        &["--metric-resolution=500ms"],
        &[
            "--kubelet-insecure-tls",
            "--kubelet-certificate-authority=/ca.crt",
        ],
    ] {
        let output = Command::new(BINARY).args(args).output().unwrap();
        assert_eq!(output.status.code(), Some(2), "{args:?}");
        assert!(!output.stderr.is_empty());
    }
    let output = Command::new(BINARY).arg("--version").output().unwrap();
    assert!(output.status.success());
    assert!(String::from_utf8_lossy(&output.stdout).contains(env!("CARGO_PKG_VERSION")));
}

/// Kills the child if a test fails before it stops it.
struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn serves_health_without_an_api_server_and_stops_on_sigterm() {
    let dir = std::env::temp_dir().join(format!("metrics-server-binary-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    // Port 1 on loopback refuses connections: discovery keeps retrying and never syncs.
    let kubeconfig = dir.join("kubeconfig");
    std::fs::write(
        &kubeconfig,
        "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: https://127.0.0.1:1\n    insecure-skip-tls-verify: true\nusers:\n- name: u\n  user:\n    token: t\ncontexts:\n- name: x\n  context: {cluster: c, user: u}\ncurrent-context: x\n",
    )
    .unwrap();
    let port = {
        let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        probe.local_addr().unwrap().port()
    };
    let cert_dir = dir.join("certs");
    let mut child = Child(
        Command::new(BINARY)
            .arg(format!("--kubeconfig={}", kubeconfig.display()))
            .arg(format!("--secure-port={port}"))
            .arg("--bind-address=127.0.0.1")
            .arg(format!("--cert-dir={}", cert_dir.display()))
            .arg("--metric-resolution=2s")
            .arg("--kubelet-insecure-tls")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );

    // The port is bound before the certificate is used, so wait for a TLS connection to succeed.
    let deadline = Instant::now() + LIMIT;
    let stream = loop {
        if let Ok(stream) = TcpStream::connect(("127.0.0.1", port)).await {
            if cert_dir.join("apiserver.crt").is_file() {
                break stream;
            }
        }
        assert!(
            Instant::now() < deadline,
            "the server did not start listening"
        );
        assert!(
            child.0.try_wait().unwrap().is_none(),
            "the server exited early"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let mut roots = rustls::RootCertStore::empty();
    let pem = std::fs::read(cert_dir.join("apiserver.crt")).unwrap();
    for cert in CertificateDer::pem_slice_iter(&pem) {
        roots.add(cert.unwrap()).unwrap();
    }
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec()];
    let tls = TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from("localhost").unwrap(), stream)
        .await
        .unwrap();
    let (mut sender, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
            .await
            .unwrap();
    tokio::spawn(connection);
    let mut get = |path: &'static str| {
        let request = http::Request::get(format!("https://localhost{path}"))
            .body(Empty::<Bytes>::new())
            .unwrap();
        let response = sender.send_request(request);
        async move {
            let response = tokio::time::timeout(LIMIT, response)
                .await
                .unwrap()
                .unwrap();
            let code = response.status().as_u16();
            let body = response.into_body().collect().await.unwrap().to_bytes();
            (code, String::from_utf8(body.to_vec()).unwrap())
        }
    };

    let (code, body) = get("/livez").await;
    assert_eq!((code, body.as_str()), (200, "ok"));
    let (code, body) = get("/readyz?verbose").await;
    assert_eq!(code, 500);
    assert!(body.contains("[-]informer-sync failed"), "{body}");
    assert!(body.contains("no metrics to serve"), "{body}");
    // Metrics need a SubjectAccessReview, which cannot be made without the API server: an
    // internal error, as upstream answers, never an unchecked answer.
    let (code, body) = get("/apis/metrics.k8s.io/v1beta1/nodes").await;
    assert_eq!(code, 500, "{body}");
    assert!(body.contains("\"reason\":\"InternalError\""), "{body}");

    // SAFETY: `kill` with a valid pid of our own child and a standard signal number.
    assert_eq!(unsafe { libc::kill(child.0.id() as i32, libc::SIGTERM) }, 0);
    let deadline = Instant::now() + LIMIT;
    let status = loop {
        if let Some(status) = child.0.try_wait().unwrap() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "the server did not stop on SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(status.success(), "exit status {status}");
    let _ = std::fs::remove_dir_all(&dir);
}
