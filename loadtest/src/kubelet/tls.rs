//! TLS identities of the simulated kubelets: serving certificates from the fleet CA with the
//! node's IP in the SANs, and the client-certificate check.
//!
//! Every node gets its own `ServerConfig` (its certificate), but they share one signing key, one
//! client verifier and one session cache: per-node copies of those would cost tens of kilobytes
//! each at 10,000 nodes.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::server::danger::ClientCertVerifier;
use rustls::server::{ClientHello, ResolvesServerCert, StoresServerSessions, WebPkiClientVerifier};
use rustls::sign::{CertifiedKey, SigningKey};
use rustls::{RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use super::fault::Fault;
use crate::pki::{Authority, LeafSpec, PemPair, PkiError};

/// Why a TLS identity could not be made.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error(transparent)]
    Pki(#[from] PkiError),
    #[error("reading PEM: {0}")]
    Pem(#[from] rustls_pki_types::pem::Error),
    #[error("TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
    #[error("client verifier: {0}")]
    Verifier(#[from] rustls::server::VerifierBuilderError),
}

/// Answers every handshake with one certificate.
struct FixedCert(Arc<CertifiedKey>);

impl fmt::Debug for FixedCert {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("FixedCert")
    }
}

impl ResolvesServerCert for FixedCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.clone())
    }
}

/// The address a wrong-SAN certificate names instead of the node's.
pub const WRONG_SAN_IP: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 255, 255, 254));

/// Issues serving identities for nodes.
pub struct TlsFactory {
    provider: Arc<CryptoProvider>,
    ca: Authority,
    /// A CA nobody trusts, for the wrong-CA fault.
    rogue: Authority,
    /// The key every leaf of `ca` shares (see `pki`), loaded once.
    key: Arc<dyn SigningKey>,
    rogue_key: Arc<dyn SigningKey>,
    verifier: Arc<dyn ClientCertVerifier>,
    sessions: Arc<dyn StoresServerSessions>,
}

impl TlsFactory {
    /// `client_ca_pem` is the CA whose client certificates are accepted.
    pub fn new(ca: Authority, client_ca_pem: &str) -> Result<Self, TlsError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let rogue = Authority::new("untrusted-kubelet-ca")?;
        let probe = LeafSpec::server("probe", &[], &[]);
        let key = load_key(&provider, &ca.issue(&probe)?)?;
        let rogue_key = load_key(&provider, &rogue.issue(&probe)?)?;
        let mut roots = RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(client_ca_pem.as_bytes()) {
            roots.add(cert?)?;
        }
        // Clients may also authenticate with a bearer token, so a certificate is optional here;
        // the request handler decides.
        let verifier =
            WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                .allow_unauthenticated()
                .build()?;
        Ok(TlsFactory {
            provider,
            ca,
            rogue,
            key,
            rogue_key,
            verifier,
            sessions: rustls::server::ServerSessionMemoryCache::new(16_384),
        })
    }

    pub fn ca_pem(&self) -> &str {
        self.ca.cert_pem()
    }

    /// The serving configuration of a node named `name` at `ip`, honouring certificate faults.
    pub fn server_config(
        &self,
        name: &str,
        ip: IpAddr,
        fault: Option<Fault>,
    ) -> Result<Arc<ServerConfig>, TlsError> {
        let (authority, key, san) = match fault {
            Some(Fault::WrongSan) => (&self.ca, &self.key, WRONG_SAN_IP),
            Some(Fault::WrongCa) => (&self.rogue, &self.rogue_key, ip),
            _ => (&self.ca, &self.key, ip),
        };
        let dns = [name];
        let pair = authority.issue(&LeafSpec::server(name, &dns, &[san]))?;
        let chain = vec![CertificateDer::from_pem_slice(pair.cert_pem.as_bytes())?];
        let certified = Arc::new(CertifiedKey::new(chain, key.clone()));
        let mut config = ServerConfig::builder_with_provider(self.provider.clone())
            .with_safe_default_protocol_versions()?
            .with_client_cert_verifier(self.verifier.clone())
            .with_cert_resolver(Arc::new(FixedCert(certified)));
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        config.session_storage = self.sessions.clone();
        Ok(Arc::new(config))
    }
}

fn load_key(provider: &CryptoProvider, pair: &PemPair) -> Result<Arc<dyn SigningKey>, TlsError> {
    let der = PrivateKeyDer::from_pem_slice(pair.key_pem.as_bytes())?;
    Ok(provider.key_provider.load_private_key(der)?)
}
