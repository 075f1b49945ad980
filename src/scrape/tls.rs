//! TLS towards kubelets: the client configuration built once from the `--kubelet-*` flags, and the
//! translation of handshake failures into messages that say how to fix them.
//!
//! Reads certificate files once, at start; holds no connection and does no network I/O.

use std::path::Path;
use std::sync::Arc;

use hyper::header::HeaderValue;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
};

use super::{KubeletTlsConfig, ScrapeError};

/// ALPN protocols offered to kubelets, HTTP/2 first: the kubelet's Go server picks h2 when offered.
pub const ALPN_H2: &[u8] = b"h2";
pub const ALPN_HTTP1: &[u8] = b"http/1.1";

/// What every scraper shares to open connections and authenticate requests.
#[derive(Clone)]
pub struct KubeletTls {
    pub connector: tokio_rustls::TlsConnector,
    /// `Authorization` header value; `None` when a client certificate authenticates instead.
    pub authorization: Option<HeaderValue>,
}

impl std::fmt::Debug for KubeletTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubeletTls")
            .field("bearer_token", &self.authorization.is_some())
            .finish_non_exhaustive()
    }
}

// === impl KubeletTls ===

impl KubeletTls {
    /// Builds the client configuration from the flags. Every inconsistency is an error here, at start,
    /// rather than a failed scrape on every node later.
    pub fn from_config(config: &KubeletTlsConfig) -> Result<Self, ScrapeError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| ScrapeError::Tls(format!("TLS protocol versions: {e}")))?;

        let builder = if config.insecure {
            if config.ca_file.is_some() {
                return Err(ScrapeError::Tls(
                    "--kubelet-insecure-tls conflicts with --kubelet-certificate-authority".into(),
                ));
            }
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(NoVerification { provider }))
        } else {
            let pem = match (&config.ca_file, &config.cluster_ca_pem) {
                (Some(path), _) => read_file(path, "--kubelet-certificate-authority")?,
                (None, Some(pem)) => pem.clone(),
                (None, None) => {
                    return Err(ScrapeError::Tls(
                        "no CA to verify kubelets: pass --kubelet-certificate-authority, a \
                         kubeconfig with a cluster CA, or --kubelet-insecure-tls"
                            .into(),
                    ))
                }
            };
            builder.with_root_certificates(root_store(&pem)?)
        };

        let mut client = match (&config.client_cert_file, &config.client_key_file) {
            (Some(cert), Some(key)) => {
                let chain = certificates(
                    &read_file(cert, "--kubelet-client-certificate")?,
                    "--kubelet-client-certificate",
                )?;
                let key = PrivateKeyDer::from_pem_slice(&read_file(key, "--kubelet-client-key")?)
                    .map_err(|e| ScrapeError::Tls(format!("--kubelet-client-key: {e}")))?;
                builder
                    .with_client_auth_cert(chain, key)
                    .map_err(|e| ScrapeError::Tls(format!("kubelet client certificate: {e}")))?
            }
            (None, None) => builder.with_no_client_auth(),
            _ => {
                return Err(ScrapeError::Tls(
                    "--kubelet-client-certificate and --kubelet-client-key must be given together"
                        .into(),
                ))
            }
        };
        client.alpn_protocols = vec![ALPN_H2.to_vec(), ALPN_HTTP1.to_vec()];

        // A client certificate authenticates on its own; sending the token as well would let the
        // kubelet pick an identity the admin did not mean.
        let authorization = match (&config.client_cert_file, &config.bearer_token) {
            (None, Some(token)) => {
                let mut value =
                    HeaderValue::try_from(format!("Bearer {}", token.trim())).map_err(|_| {
                        ScrapeError::Tls(
                            "bearer token has characters not allowed in a header".into(),
                        )
                    })?;
                value.set_sensitive(true);
                Some(value)
            }
            _ => None,
        };

        Ok(KubeletTls {
            connector: tokio_rustls::TlsConnector::from(Arc::new(client)),
            authorization,
        })
    }
}

/// Lets an idle connection's TLS session give back its receive buffer (up to one 16 KiB record),
/// which rustls keeps at its largest until its next read and trims at the start of a read that
/// finds nothing buffered. That read is made here against a source that has nothing, so no bytes
/// move: anything already buffered stays for the next exchange.
pub fn release_read_buffer(session: &mut rustls::ClientConnection) {
    struct Nothing;
    impl std::io::Read for Nothing {
        fn read(&mut self, _: &mut [u8]) -> std::io::Result<usize> {
            Err(std::io::ErrorKind::WouldBlock.into())
        }
    }
    // The error is the expected WouldBlock, or a full plaintext buffer: either way nothing moved.
    let _ = session.read_tls(&mut Nothing);
}

/// The name a kubelet certificate must cover: an IP address (verified against IP SANs) or a DNS name.
pub fn server_name(host: &str) -> Option<ServerName<'static>> {
    let bare = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    ServerName::try_from(bare.to_owned()).ok()
}

/// If `error` is a TLS handshake failure because the certificate does not name `host`, the message
/// an admin needs: what is wrong and the ways to fix it.
pub fn name_mismatch_message(node: &str, host: &str, error: &std::io::Error) -> Option<String> {
    let tls = error.get_ref()?.downcast_ref::<rustls::Error>()?;
    match tls {
        rustls::Error::InvalidCertificate(
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
        ) => {
            let what =
                if server_name(host).is_some_and(|name| matches!(name, ServerName::IpAddress(_))) {
                    "IP"
                } else {
                    "host name"
                };
            Some(format!(
                "kubelet certificate for node {node} does not cover {what} {host}: enable kubelet \
                 serving certificates with IP SANs (serverTLSBootstrap) or pass \
                 --kubelet-insecure-tls / --kubelet-preferred-address-types=Hostname"
            ))
        }
        _ => None,
    }
}

fn read_file(path: &Path, flag: &str) -> Result<Vec<u8>, ScrapeError> {
    std::fs::read(path).map_err(|e| ScrapeError::Tls(format!("{flag} {}: {e}", path.display())))
}

fn certificates(pem: &[u8], what: &str) -> Result<Vec<CertificateDer<'static>>, ScrapeError> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| ScrapeError::Tls(format!("{what}: {e}")))?;
    if certs.is_empty() {
        return Err(ScrapeError::Tls(format!(
            "{what}: no PEM certificate found"
        )));
    }
    Ok(certs)
}

fn root_store(pem: &[u8]) -> Result<RootCertStore, ScrapeError> {
    let mut roots = RootCertStore::empty();
    for cert in certificates(pem, "kubelet CA")? {
        roots
            .add(cert)
            .map_err(|e| ScrapeError::Tls(format!("kubelet CA: {e}")))?;
    }
    Ok(roots)
}

/// `--kubelet-insecure-tls`: any certificate is accepted, but the handshake signature is still
/// checked, so the session is at least bound to the key the peer presented. Also used by the
/// simulated cluster's clients, which talk to self-signed loopback servers.
#[derive(Debug)]
pub struct NoVerification {
    provider: Arc<CryptoProvider>,
}

impl NoVerification {
    pub fn new(provider: Arc<CryptoProvider>) -> Self {
        NoVerification { provider }
    }
}

impl ServerCertVerifier for NoVerification {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn insecure_with_ca_file_is_rejected() {
        let config = KubeletTlsConfig {
            insecure: true,
            ca_file: Some("ca.pem".into()),
            ..Default::default()
        };
        assert!(matches!(
            KubeletTls::from_config(&config),
            Err(ScrapeError::Tls(m)) if m.contains("conflicts")
        ));
    }

    #[test]
    fn missing_ca_is_rejected_unless_insecure() {
        assert!(KubeletTls::from_config(&KubeletTlsConfig::default()).is_err());
        let insecure = KubeletTlsConfig {
            insecure: true,
            bearer_token: Some("t".into()),
            ..Default::default()
        };
        let tls = KubeletTls::from_config(&insecure).expect("insecure config builds");
        assert_eq!(
            tls.authorization.as_ref().map(|v| v.as_bytes()),
            Some(&b"Bearer t"[..])
        );
    }

    #[test]
    fn garbage_ca_pem_is_a_typed_error() {
        let config = KubeletTlsConfig {
            cluster_ca_pem: Some(b"not a certificate".to_vec()),
            ..Default::default()
        };
        assert!(matches!(
            KubeletTls::from_config(&config),
            Err(ScrapeError::Tls(_))
        ));
    }

    #[test]
    fn client_cert_without_key_is_rejected() {
        let config = KubeletTlsConfig {
            insecure: true,
            client_cert_file: Some("cert.pem".into()),
            ..Default::default()
        };
        assert!(matches!(
            KubeletTls::from_config(&config),
            Err(ScrapeError::Tls(m)) if m.contains("together")
        ));
    }

    #[test]
    fn ip_hosts_are_ip_server_names() {
        assert!(matches!(
            server_name("10.0.0.1"),
            Some(ServerName::IpAddress(_))
        ));
        assert!(matches!(
            server_name("[::1]"),
            Some(ServerName::IpAddress(_))
        ));
        assert!(matches!(
            server_name("node-1.example"),
            Some(ServerName::DnsName(_))
        ));
    }
}
