//! The serving side's client-certificate policy: ask for a certificate, never require one, and
//! accept any chain during the handshake.
//!
//! The handshake still proves the client holds the certificate's key (the signature checks are
//! the ring provider's), but which CA signed the chain is decided per request in
//! [`super::DelegatedAuthenticator`], against the CA pools current at that moment. Verifying
//! during the handshake would pin the pools of the listener's start and turn an unknown
//! certificate into a failed connection, where Kubernetes answers such a request as anonymous or
//! `401` instead.

use std::sync::Arc;

use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{DigitallySignedStruct, DistinguishedName, SignatureScheme};

/// A [`ClientCertVerifier`] that offers client authentication, does not require it, and accepts
/// any chain; only the handshake signature is checked.
#[derive(Debug)]
pub struct AcceptAnyClientCert {
    algorithms: WebPkiSupportedAlgorithms,
}

impl AcceptAnyClientCert {
    pub fn new() -> Self {
        AcceptAnyClientCert {
            algorithms: rustls::crypto::ring::default_provider().signature_verification_algorithms,
        }
    }

    /// The verifier as `ServerConfig::builder().with_client_cert_verifier` takes it.
    pub fn shared() -> Arc<dyn ClientCertVerifier> {
        Arc::new(Self::new())
    }
}

impl Default for AcceptAnyClientCert {
    fn default() -> Self {
        Self::new()
    }
}

impl ClientCertVerifier for AcceptAnyClientCert {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        false
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        // No hints: the acceptable CAs change with the ConfigMap, and clients (the front proxy
        // included) send their certificate when the list is empty.
        &[]
    }

    fn verify_client_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
    use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
    use rustls::{ClientConfig, RootCertStore, ServerConfig};
    use tokio_rustls::{TlsAcceptor, TlsConnector};

    struct Pair {
        chain: Vec<CertificateDer<'static>>,
        key: PrivateKeyDer<'static>,
        /// Present the pair even if the key does not belong to the certificate.
        forged: bool,
    }

    /// Hands rustls a certificate with whatever key it was given, which its checked constructors
    /// refuse to do.
    #[derive(Debug)]
    struct Unchecked(Arc<rustls::sign::CertifiedKey>);

    impl rustls::client::ResolvesClientCert for Unchecked {
        fn resolve(
            &self,
            _hints: &[&[u8]],
            _schemes: &[SignatureScheme],
        ) -> Option<Arc<rustls::sign::CertifiedKey>> {
            Some(Arc::clone(&self.0))
        }

        fn has_certs(&self) -> bool {
            true
        }
    }

    fn ca() -> CertifiedIssuer<'static, KeyPair> {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap()
    }

    fn leaf(issuer: &CertifiedIssuer<'static, KeyPair>, name: &str) -> Pair {
        let key = KeyPair::generate().unwrap();
        let cert = CertificateParams::new(vec![name.to_owned()])
            .unwrap()
            .signed_by(&key, issuer)
            .unwrap();
        Pair {
            chain: vec![cert.der().clone()],
            key: PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
            forged: false,
        }
    }

    /// Runs one TLS 1.2 or 1.3 handshake over an in-memory pipe and returns the chain the server
    /// received, or the handshake error.
    async fn handshake(
        client_cert: Option<Pair>,
        tls13: bool,
    ) -> Result<Option<Vec<CertificateDer<'static>>>, std::io::Error> {
        let server_ca = ca();
        let serving = leaf(&server_ca, "localhost");
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let versions: &[&rustls::SupportedProtocolVersion] = if tls13 {
            &[&rustls::version::TLS13]
        } else {
            &[&rustls::version::TLS12]
        };
        let server = ServerConfig::builder_with_provider(Arc::clone(&provider))
            .with_protocol_versions(versions)
            .unwrap()
            .with_client_cert_verifier(AcceptAnyClientCert::shared())
            .with_single_cert(serving.chain, serving.key)
            .unwrap();
        let mut roots = RootCertStore::empty();
        roots.add(server_ca.der().clone()).unwrap();
        let client = ClientConfig::builder_with_provider(Arc::clone(&provider))
            .with_protocol_versions(versions)
            .unwrap()
            .with_root_certificates(roots);
        let client = match client_cert {
            Some(pair) if pair.forged => {
                let key = provider.key_provider.load_private_key(pair.key).unwrap();
                let certified = rustls::sign::CertifiedKey::new(pair.chain, key);
                client.with_client_cert_resolver(Arc::new(Unchecked(Arc::new(certified))))
            }
            Some(pair) => client.with_client_auth_cert(pair.chain, pair.key).unwrap(),
            None => client.with_no_client_auth(),
        };
        let (a, b) = tokio::io::duplex(64 * 1024);
        let accept = TlsAcceptor::from(Arc::new(server)).accept(a);
        let connect = TlsConnector::from(Arc::new(client))
            .connect(ServerName::try_from("localhost").unwrap(), b);
        let (accepted, connected) = tokio::join!(accept, connect);
        let accepted = accepted?;
        connected?;
        Ok(accepted
            .get_ref()
            .1
            .peer_certificates()
            .map(|c| c.iter().map(|d| d.clone().into_owned()).collect()))
    }

    #[test]
    fn client_certificates_are_requested_but_not_required() {
        let verifier = AcceptAnyClientCert::new();
        assert!(verifier.offer_client_auth());
        assert!(!verifier.client_auth_mandatory());
        assert!(verifier.root_hint_subjects().is_empty());
        assert!(!verifier.supported_verify_schemes().is_empty());
    }

    #[tokio::test]
    async fn a_client_without_a_certificate_completes_the_handshake() {
        for tls13 in [false, true] {
            assert_eq!(handshake(None, tls13).await.unwrap(), None);
        }
    }

    #[tokio::test]
    async fn a_certificate_from_an_unknown_ca_reaches_the_server_for_request_time_checks() {
        for tls13 in [false, true] {
            let stranger = leaf(&ca(), "anyone");
            let expected = stranger.chain.clone();
            let received = handshake(Some(stranger), tls13).await.unwrap();
            assert_eq!(received, Some(expected));
        }
    }

    #[tokio::test]
    async fn a_client_that_does_not_hold_the_certificate_key_fails_the_handshake() {
        for tls13 in [false, true] {
            let issuer = ca();
            let honest = leaf(&issuer, "honest");
            let thief = leaf(&issuer, "thief");
            // Someone else's certificate presented with the thief's own key.
            let forged = Pair {
                chain: honest.chain,
                key: thief.key,
                forged: true,
            };
            assert!(handshake(Some(forged), tls13).await.is_err());
        }
    }
}
