//! Client-certificate chains checked at request time against a CA pool, and the subject names
//! (CN, O) a verified certificate carries.
//!
//! The TLS layer accepts any chain (see [`super::tls`]); here the chain is verified with webpki
//! for client authentication at the current time, against whichever pool is current when the
//! request arrives, so a CA rotation in the `extension-apiserver-authentication` ConfigMap applies
//! to the next request without a new listener.
//!
//! A chain that verified is remembered by its digest for a few seconds (never past the earliest
//! `notAfter` in it): an aggregator sends every request over a few connections with one chain, and
//! a signature check per request was the largest cost of a small read.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use rustls::pki_types::{CertificateDer, UnixTime};
use webpki::{EndEntityCert, KeyUsage};

use super::{AuthnError, PeerCertificates};

/// How long a verified chain is taken as verified without checking it again.
const VERIFIED_FOR_SECS: u64 = 10;
/// Chains remembered at most; the memory is forgotten whole when full.
const VERIFIED_MAX: usize = 1024;

/// Trust anchors parsed from a PEM bundle.
#[derive(Clone, Debug)]
pub struct CaPool {
    anchors: Vec<rustls::pki_types::TrustAnchor<'static>>,
    /// Chains that verified against these anchors, by digest, with the second (Unix time) until
    /// which that holds. Shared by clones, which trust the same anchors; a new pool (a rotated
    /// CA) starts empty.
    verified: Arc<Mutex<HashMap<[u8; 32], u64>>>,
}

/// The subject of a verified certificate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Subject {
    /// The last common name, as Go's `pkix.Name.CommonName` keeps it; empty when there is none.
    pub common_name: String,
    /// Every organization, in order.
    pub organizations: Vec<String>,
}

// === impl CaPool ===

impl CaPool {
    /// Parses every `CERTIFICATE` block of a PEM bundle. A bundle with no certificate, or with one
    /// webpki cannot use as a trust anchor, is an error: a silently empty pool would reject every
    /// client without saying why.
    pub fn from_pem(origin: &str, pem_bytes: &[u8]) -> Result<Self, AuthnError> {
        let invalid = |reason: String| AuthnError::InvalidCaBundle {
            origin: origin.to_owned(),
            reason,
        };
        let blocks = pem::parse_many(pem_bytes).map_err(|e| invalid(e.to_string()))?;
        let mut anchors = Vec::new();
        for block in blocks.iter().filter(|b| b.tag() == "CERTIFICATE") {
            let der = CertificateDer::from(block.contents());
            let anchor = webpki::anchor_from_trusted_cert(&der)
                .map_err(|e| invalid(format!("{e:?}")))?
                .to_owned();
            anchors.push(anchor);
        }
        if anchors.is_empty() {
            return Err(invalid("no certificate in the bundle".to_owned()));
        }
        Ok(CaPool {
            anchors,
            verified: Arc::default(),
        })
    }

    /// How many CA certificates the pool trusts.
    pub fn len(&self) -> usize {
        self.anchors.len()
    }

    /// Whether the pool trusts nothing (never true for a pool built by [`CaPool::from_pem`]).
    pub fn is_empty(&self) -> bool {
        self.anchors.is_empty()
    }

    /// Verifies `chain` (leaf first, then intermediates) for client authentication at `now`.
    pub fn verify(&self, chain: &PeerCertificates, now: UnixTime) -> Result<(), webpki::Error> {
        let digest = chain_digest(chain);
        let now_secs = now.as_secs();
        let remembered = self
            .verified
            .lock()
            .ok()
            .and_then(|verified| verified.get(&digest).copied());
        if remembered.is_some_and(|until| now_secs < until) {
            return Ok(());
        }
        self.verify_now(chain, now)?;
        // A chain whose validity cannot be read is verified again on every request.
        let Some(not_after) = earliest_not_after(chain) else {
            return Ok(());
        };
        let until = now_secs.saturating_add(VERIFIED_FOR_SECS).min(not_after);
        if let Ok(mut verified) = self.verified.lock() {
            if verified.len() >= VERIFIED_MAX {
                verified.clear();
            }
            verified.insert(digest, until);
        }
        Ok(())
    }

    /// [`CaPool::verify`] without the memory of verified chains.
    fn verify_now(&self, chain: &PeerCertificates, now: UnixTime) -> Result<(), webpki::Error> {
        let Some((leaf, intermediates)) = chain.0.split_first() else {
            return Err(webpki::Error::BadDer);
        };
        let leaf = EndEntityCert::try_from(leaf)?;
        let algorithms = rustls::crypto::ring::default_provider()
            .signature_verification_algorithms
            .all;
        leaf.verify_for_usage(
            algorithms,
            &self.anchors,
            intermediates,
            now,
            KeyUsage::client_auth(),
            None,
            None,
        )
        .map(|_| ())
    }
}

/// SHA-256 over the chain's certificates, each preceded by its length.
fn chain_digest(chain: &PeerCertificates) -> [u8; 32] {
    let mut context = ring::digest::Context::new(&ring::digest::SHA256);
    for certificate in chain.0.iter() {
        context.update(&(certificate.len() as u64).to_be_bytes());
        context.update(certificate.as_ref());
    }
    let mut digest = [0u8; 32];
    digest.copy_from_slice(context.finish().as_ref());
    digest
}

/// The earliest `notAfter` (Unix seconds) of the chain's certificates; `None` if one cannot be
/// read.
fn earliest_not_after(chain: &PeerCertificates) -> Option<u64> {
    chain
        .0
        .iter()
        .map(|der| {
            let (_, cert) = x509_parser::parse_x509_certificate(der.as_ref()).ok()?;
            u64::try_from(cert.validity().not_after.timestamp()).ok()
        })
        .try_fold(u64::MAX, |earliest, not_after| {
            Some(earliest.min(not_after?))
        })
}

/// The CN and O values of a DER certificate.
pub fn subject(der: &CertificateDer<'_>) -> Result<Subject, AuthnError> {
    let (_, cert) = x509_parser::parse_x509_certificate(der.as_ref())
        .map_err(|e| AuthnError::InvalidCertificate(e.to_string()))?;
    let text = |attr: &x509_parser::x509::AttributeTypeAndValue<'_>| {
        attr.as_str()
            .map(str::to_owned)
            .map_err(|e| AuthnError::InvalidCertificate(e.to_string()))
    };
    let common_name = match cert.subject().iter_common_name().last() {
        Some(attr) => text(attr)?,
        None => String::new(),
    };
    let organizations = cert
        .subject()
        .iter_organization()
        .map(text)
        .collect::<Result<_, _>>()?;
    Ok(Subject {
        common_name,
        organizations,
    })
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use rcgen::{
        BasicConstraints, CertificateParams, CertifiedIssuer, ExtendedKeyUsagePurpose, IsCa,
        KeyPair,
    };

    use super::*;

    fn ca() -> CertifiedIssuer<'static, KeyPair> {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap()
    }

    fn pool(issuer: &CertifiedIssuer<'static, KeyPair>) -> CaPool {
        CaPool::from_pem("test", issuer.pem().as_bytes()).unwrap()
    }

    /// A client certificate valid from 2020 until `not_after` (Unix seconds).
    fn client(issuer: &CertifiedIssuer<'static, KeyPair>, not_after: u64) -> PeerCertificates {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        params.not_before = rcgen::date_time_ymd(2020, 1, 1);
        params.not_after = (std::time::UNIX_EPOCH + Duration::from_secs(not_after)).into();
        let cert = params
            .signed_by(&KeyPair::generate().unwrap(), issuer)
            .unwrap();
        PeerCertificates(vec![cert.der().clone()].into())
    }

    fn at(secs: u64) -> UnixTime {
        UnixTime::since_unix_epoch(Duration::from_secs(secs))
    }

    const NOT_AFTER: u64 = 1_800_000_000;

    #[test]
    fn a_remembered_chain_is_refused_once_it_expires() {
        let issuer = ca();
        let pool = pool(&issuer);
        let chain = client(&issuer, NOT_AFTER);
        assert_eq!(pool.verify(&chain, at(NOT_AFTER - 5)), Ok(()));
        // Remembered for ten seconds, but not past the certificate's end.
        assert_eq!(pool.verify(&chain, at(NOT_AFTER - 1)), Ok(()));
        assert!(pool.verify(&chain, at(NOT_AFTER + 1)).is_err());
    }

    #[test]
    fn a_chain_is_verified_again_after_the_memory_lapses() {
        let issuer = ca();
        let pool = pool(&issuer);
        let chain = client(&issuer, NOT_AFTER);
        let start = NOT_AFTER - 1_000;
        assert_eq!(pool.verify(&chain, at(start)), Ok(()));
        assert_eq!(
            pool.verify(&chain, at(start + VERIFIED_FOR_SECS + 1)),
            Ok(())
        );
        let remembered = pool
            .verified
            .lock()
            .unwrap()
            .values()
            .copied()
            .collect::<Vec<_>>();
        assert_eq!(remembered, vec![start + 2 * VERIFIED_FOR_SECS + 1]);
    }

    #[test]
    fn another_pool_does_not_share_what_this_one_verified() {
        let issuer = ca();
        let chain = client(&issuer, NOT_AFTER);
        assert_eq!(pool(&issuer).verify(&chain, at(NOT_AFTER - 100)), Ok(()));
        let rotated = pool(&ca());
        assert!(rotated.verify(&chain, at(NOT_AFTER - 99)).is_err());
    }

    #[test]
    fn a_refused_chain_is_not_remembered() {
        let issuer = ca();
        let pool = pool(&issuer);
        let stranger = client(&ca(), NOT_AFTER);
        assert!(pool.verify(&stranger, at(NOT_AFTER - 100)).is_err());
        assert!(pool.verified.lock().unwrap().is_empty());
    }
}
