//! Certificate authorities and certificates for the simulated cluster.
//!
//! Owns key and certificate generation only: nothing here opens a socket or reads configuration.
//! Every CA the cluster needs (kubelet serving, kubelet clients, the API stand-in, front proxy,
//! client users) is an [`Authority`]; leaves are issued from it as PEM pairs.

use std::net::IpAddr;
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};

/// Why a certificate could not be made.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    #[error("generating a certificate: {0}")]
    Generate(#[from] rcgen::Error),
}

/// A certificate and its private key, both PEM.
#[derive(Clone, Debug)]
pub struct PemPair {
    pub cert_pem: String,
    pub key_pem: String,
}

/// What a leaf certificate is for.
#[derive(Clone, Debug)]
pub struct LeafSpec {
    pub common_name: String,
    /// Subject organisations (Kubernetes reads them as groups).
    pub organizations: Vec<String>,
    pub dns_names: Vec<String>,
    pub ips: Vec<IpAddr>,
    pub server: bool,
    pub client: bool,
    /// Validity from now; a zero or negative window can be had with `expired`.
    pub valid_for: Duration,
    /// Issue a certificate whose validity ended a day ago.
    pub expired: bool,
}

impl LeafSpec {
    pub fn server(common_name: &str, dns_names: &[&str], ips: &[IpAddr]) -> Self {
        LeafSpec {
            common_name: common_name.to_owned(),
            organizations: Vec::new(),
            dns_names: dns_names.iter().map(|s| (*s).to_owned()).collect(),
            ips: ips.to_vec(),
            server: true,
            client: false,
            valid_for: Duration::from_secs(365 * 24 * 3600),
            expired: false,
        }
    }

    pub fn client(common_name: &str, organizations: &[&str]) -> Self {
        LeafSpec {
            common_name: common_name.to_owned(),
            organizations: organizations.iter().map(|s| (*s).to_owned()).collect(),
            dns_names: Vec::new(),
            ips: Vec::new(),
            server: false,
            client: true,
            valid_for: Duration::from_secs(365 * 24 * 3600),
            expired: false,
        }
    }
}

/// A certificate authority that can issue leaves.
pub struct Authority {
    cert_pem: String,
    issuer: Issuer<'static, KeyPair>,
    /// Leaves share one key: generating a key per leaf dominates start-up for thousands of kubelets,
    /// and nothing in a simulation depends on keys being distinct.
    leaf_key: KeyPair,
}

impl Authority {
    /// A new self-signed CA named `common_name`.
    pub fn new(common_name: &str) -> Result<Self, PkiError> {
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.distinguished_name = name(common_name, &[]);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let now = time::OffsetDateTime::now_utc();
        params.not_before = now - time::Duration::days(2);
        params.not_after = now + time::Duration::days(3650);
        let key = KeyPair::generate()?;
        let cert = params.self_signed(&key)?;
        Ok(Authority {
            cert_pem: cert.pem(),
            issuer: Issuer::new(params, key),
            leaf_key: KeyPair::generate()?,
        })
    }

    /// The CA certificate, PEM.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// Issues a leaf certificate.
    pub fn issue(&self, spec: &LeafSpec) -> Result<PemPair, PkiError> {
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.distinguished_name = name(&spec.common_name, &spec.organizations);
        for dns in &spec.dns_names {
            params
                .subject_alt_names
                .push(SanType::DnsName(dns.clone().try_into()?));
        }
        for ip in &spec.ips {
            params.subject_alt_names.push(SanType::IpAddress(*ip));
        }
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        if spec.server {
            params
                .extended_key_usages
                .push(ExtendedKeyUsagePurpose::ServerAuth);
        }
        if spec.client {
            params
                .extended_key_usages
                .push(ExtendedKeyUsagePurpose::ClientAuth);
        }
        let now = time::OffsetDateTime::now_utc();
        if spec.expired {
            params.not_before = now - time::Duration::days(30);
            params.not_after = now - time::Duration::days(1);
        } else {
            params.not_before = now - time::Duration::hours(1);
            params.not_after =
                now + time::Duration::try_from(spec.valid_for).unwrap_or(time::Duration::days(365));
        }
        let cert = params.signed_by(&self.leaf_key, &self.issuer)?;
        Ok(PemPair {
            cert_pem: cert.pem(),
            key_pem: self.leaf_key.serialize_pem(),
        })
    }
}

fn name(common_name: &str, organizations: &[String]) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, common_name);
    for org in organizations {
        dn.push(DnType::OrganizationName, org.as_str());
    }
    dn
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issued_leaf_carries_ip_san_and_is_pem() {
        let ca = Authority::new("test-ca").expect("ca");
        let ip: IpAddr = "127.0.0.7".parse().expect("ip");
        let pair = ca
            .issue(&LeafSpec::server("node-7", &["node-7"], &[ip]))
            .expect("leaf");
        assert!(pair.cert_pem.starts_with("-----BEGIN CERTIFICATE-----"));
        assert!(pair.key_pem.contains("PRIVATE KEY"));
        assert!(ca.cert_pem().starts_with("-----BEGIN CERTIFICATE-----"));
        assert_ne!(pair.cert_pem, ca.cert_pem());
    }
}
