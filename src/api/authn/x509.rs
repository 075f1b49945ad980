//! Client-certificate chains checked at request time against a CA pool, and the subject names
//! (CN, O) a verified certificate carries.
//!
//! The TLS layer accepts any chain (see [`super::tls`]); here the chain is verified with webpki
//! for client authentication at the current time, against whichever pool is current when the
//! request arrives, so a CA rotation in the `extension-apiserver-authentication` ConfigMap applies
//! to the next request without a new listener.

use rustls::pki_types::{CertificateDer, UnixTime};
use webpki::{EndEntityCert, KeyUsage};

use super::{AuthnError, PeerCertificates};

/// Trust anchors parsed from a PEM bundle.
#[derive(Clone, Debug)]
pub struct CaPool {
    anchors: Vec<rustls::pki_types::TrustAnchor<'static>>,
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
        Ok(CaPool { anchors })
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
