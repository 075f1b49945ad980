//! The stand-in's certificate authorities and its rustls configurations.
//!
//! Three CAs, as a kubeadm cluster has: one signs the serving certificate, one signs user client
//! certificates (the `client-ca-file`), and the front proxy's (the `requestheader-client-ca-file`)
//! signs the certificate presented to the aggregated backend. Owns no sockets.

use std::net::IpAddr;
use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::RootCertStore;

use metrics_server::scrape::tls::NoVerification;

use crate::pki::{Authority, LeafSpec, PemPair, PkiError};

/// Why a TLS configuration could not be made.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("issuing a certificate: {0}")]
    Pki(#[from] PkiError),
    #[error("reading PEM: {0}")]
    Pem(#[from] rustls::pki_types::pem::Error),
    #[error("configuring TLS: {0}")]
    Rustls(#[from] rustls::Error),
    #[error("configuring client verification: {0}")]
    Verifier(#[from] rustls::server::VerifierBuilderError),
}

/// The CN the front-proxy client certificate carries (`requestheader-allowed-names`).
pub const FRONT_PROXY_CLIENT_CN: &str = "front-proxy-client";

/// Every authority and long-lived certificate of the stand-in.
pub(crate) struct Pki {
    pub(crate) server_ca: Authority,
    pub(crate) client_ca: Authority,
    pub(crate) front_proxy_ca: Authority,
    pub(crate) serving: PemPair,
    pub(crate) front_proxy_client: PemPair,
}

impl Pki {
    pub(crate) fn new() -> Result<Self, TlsError> {
        let server_ca = Authority::new("fleet-apiserver-ca")?;
        let client_ca = Authority::new("fleet-client-ca")?;
        let front_proxy_ca = Authority::new("fleet-front-proxy-ca")?;
        let ips: [IpAddr; 2] = [
            IpAddr::from([127, 0, 0, 1]),
            IpAddr::from([0, 0, 0, 0, 0, 0, 0, 1]),
        ];
        let serving = server_ca.issue(&LeafSpec::server(
            "kube-apiserver",
            &["localhost", "kubernetes", "kubernetes.default.svc"],
            &ips,
        ))?;
        let front_proxy_client =
            front_proxy_ca.issue(&LeafSpec::client(FRONT_PROXY_CLIENT_CN, &[]))?;
        Ok(Pki {
            server_ca,
            client_ca,
            front_proxy_ca,
            serving,
            front_proxy_client,
        })
    }
}

pub(crate) fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn certs(pem: &str) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    Ok(CertificateDer::pem_slice_iter(pem.as_bytes()).collect::<Result<Vec<_>, _>>()?)
}

fn roots(pem: &str) -> Result<RootCertStore, TlsError> {
    let mut store = RootCertStore::empty();
    for cert in certs(pem)? {
        store.add(cert)?;
    }
    Ok(store)
}

/// The serving configuration: HTTP/2 and HTTP/1.1 by ALPN; a client certificate is optional but,
/// when presented, must chain to the client CA.
pub(crate) fn server_config(pki: &Pki) -> Result<rustls::ServerConfig, TlsError> {
    let verifier = WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots(pki.client_ca.cert_pem())?),
        provider(),
    )
    .allow_unauthenticated()
    .build()?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_client_cert_verifier(verifier)
        .with_single_cert(
            certs(&pki.serving.cert_pem)?,
            PrivateKeyDer::from_pem_slice(pki.serving.key_pem.as_bytes())?,
        )?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

/// The configuration for dialling the aggregated backend: presents the front-proxy client
/// certificate; verifies the backend against `backend_ca_pem`, or not at all when it is `None`
/// (an APIService with `insecureSkipTLSVerify: true`).
pub(crate) fn backend_client_config(
    pki: &Pki,
    backend_ca_pem: Option<&str>,
) -> Result<rustls::ClientConfig, TlsError> {
    let builder = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?;
    let builder = match backend_ca_pem {
        Some(pem) => builder.with_root_certificates(roots(pem)?),
        None => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(NoVerification::new(provider()))),
    };
    Ok(builder.with_client_auth_cert(
        certs(&pki.front_proxy_client.cert_pem)?,
        PrivateKeyDer::from_pem_slice(pki.front_proxy_client.key_pem.as_bytes())?,
    )?)
}
