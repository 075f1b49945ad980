//! The serving certificate is reloaded when its files change: new handshakes present the new
//! pair while connections made before keep working, and a bad pair is refused with the old one
//! kept. Loopback only; every wait polls a real condition against a deadline.

#[path = "common/tls_api.rs"]
mod tls_api;

use std::path::Path;
use std::time::{Duration, Instant};

use metrics_server::api::server::TlsSettings;
use rustls::pki_types::CertificateDer;
use tls_api::{connect, connector, h2, populated, scratch, send, serve, LIMIT};

/// How often the server re-reads the files in this test.
const RELOAD: Duration = Duration::from_millis(50);
/// Spacing of polls: how often a condition is re-checked.
const POLL: Duration = Duration::from_millis(20);

/// A self-signed pair for `localhost` with the given serial: (cert PEM, key PEM, cert DER).
fn pair(serial: u64) -> (String, String, CertificateDer<'static>) {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
    params.serial_number = Some(rcgen::SerialNumber::from(serial));
    let cert = params.self_signed(&key).unwrap();
    (cert.pem(), key.serialize_pem(), cert.der().clone())
}

/// Replaces a file in one step (write aside, then rename), as a mounted Secret changes.
fn replace(path: &Path, contents: &str) {
    let aside = path.with_extension("new");
    std::fs::write(&aside, contents).unwrap();
    std::fs::rename(&aside, path).unwrap();
}

fn serial_of(der: &CertificateDer<'_>) -> Vec<u8> {
    let (_, cert) = x509_parser::parse_x509_certificate(der.as_ref()).unwrap();
    cert.tbs_certificate.raw_serial().to_vec()
}

async fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + LIMIT;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(POLL).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_connections_get_the_new_certificate_and_old_ones_keep_working() {
    let dir = scratch("tls-reload");
    let cert_file = dir.join("tls.crt");
    let key_file = dir.join("tls.key");
    let (old_cert, old_key, old_der) = pair(0x0a);
    let (new_cert, new_key, new_der) = pair(0x0b);
    std::fs::write(&cert_file, &old_cert).unwrap();
    std::fs::write(&key_file, &old_key).unwrap();

    let (store, cluster) = populated(1);
    let running = serve(
        store,
        cluster,
        &TlsSettings {
            cert_file: Some(cert_file.clone()),
            key_file: Some(key_file.clone()),
            cert_dir: dir.join("unused"),
            ..TlsSettings::default()
        },
        RELOAD,
    )
    .await;
    let client = connector(&[old_der.clone(), new_der.clone()]);
    let presented = |tls: &tokio_rustls::client::TlsStream<tokio::net::TcpStream>| {
        serial_of(&tls.get_ref().1.peer_certificates().unwrap()[0])
    };

    let before = connect(running.address, &client).await;
    assert_eq!(presented(&before), serial_of(&old_der));
    let mut before = h2(before).await;
    assert_eq!(
        send(&mut before, http::Method::GET, "/openapi/v3", &[])
            .await
            .code,
        200
    );

    // Key first, then certificate: a check between the two sees a mismatched pair and keeps
    // the old one, and the next check takes up the complete new pair.
    replace(&key_file, &new_key);
    replace(&cert_file, &new_cert);
    let certificate = running.tls.certificate.clone();
    wait_until("the new pair to be taken up", || {
        certificate.current().cert[0] == new_der
    })
    .await;
    let after = connect(running.address, &client).await;
    assert_eq!(presented(&after), serial_of(&new_der));
    let mut after = h2(after).await;
    assert_eq!(
        send(
            &mut after,
            http::Method::GET,
            "/apis/metrics.k8s.io/v1beta1/nodes",
            &[]
        )
        .await
        .code,
        200
    );
    // The connection made before the swap still serves requests.
    let reply = send(
        &mut before,
        http::Method::GET,
        "/apis/metrics.k8s.io/v1beta1/nodes",
        &[],
    )
    .await;
    assert_eq!(reply.code, 200);
    assert_eq!(reply.json()["items"][0]["metadata"]["name"], "node-0");

    // A certificate whose key is not the one on disk is refused; the last good pair stays.
    let rejected = certificate.rejections();
    let (stray_cert, _, _) = pair(0x0c);
    replace(&cert_file, &stray_cert);
    wait_until("the mismatched pair to be refused", || {
        certificate.rejections() > rejected
    })
    .await;
    let kept = connect(running.address, &client).await;
    assert_eq!(presented(&kept), serial_of(&new_der));
    // Garbage is refused too.
    let rejected = certificate.rejections();
    replace(&cert_file, "not a certificate");
    wait_until("the unparsable certificate to be refused", || {
        certificate.rejections() > rejected
    })
    .await;
    assert_eq!(certificate.current().cert[0], new_der);

    running.stop.send(true).unwrap();
    let _ = tokio::time::timeout(LIMIT, running.served).await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_mismatched_pair_at_start_is_a_typed_error() {
    let dir = scratch("tls-mismatch");
    let (cert, _, _) = pair(1);
    let (_, other_key, _) = pair(2);
    std::fs::write(dir.join("tls.crt"), cert).unwrap();
    std::fs::write(dir.join("tls.key"), other_key).unwrap();
    let result = metrics_server::api::server::tls_config(&TlsSettings {
        cert_file: Some(dir.join("tls.crt")),
        key_file: Some(dir.join("tls.key")),
        ..TlsSettings::default()
    });
    assert!(
        matches!(
            result,
            Err(metrics_server::api::server::ServerError::KeyMismatch { .. })
        ),
        "{result:?}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
