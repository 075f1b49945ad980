//! A plain kubelet client for the tests: TLS verified against the fleet's CA with the node's IP as
//! server name, HTTP/2 (or HTTP/1.1) over one connection.

#![allow(dead_code)]

use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

pub type Error = Box<dyn std::error::Error + Send + Sync>;

/// Bounds every network step of a test.
pub const STEP: Duration = Duration::from_secs(10);

pub enum Credentials {
    None,
    Token(String),
    ClientCert,
}

pub fn client_config(dir: &Path, creds: &Credentials, alpn: &[&[u8]]) -> Arc<rustls::ClientConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    let ca = std::fs::read(dir.join("kubelet-ca.crt")).expect("read CA");
    for cert in CertificateDer::pem_slice_iter(&ca) {
        roots.add(cert.expect("CA PEM")).expect("add CA");
    }
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots);
    let mut config = match creds {
        Credentials::ClientCert => {
            let cert = std::fs::read(dir.join("kubelet-client.crt")).expect("client cert");
            let key = std::fs::read(dir.join("kubelet-client.key")).expect("client key");
            let chain = CertificateDer::pem_slice_iter(&cert)
                .collect::<Result<Vec<_>, _>>()
                .expect("cert PEM");
            let key = PrivateKeyDer::from_pem_slice(&key).expect("key PEM");
            builder
                .with_client_auth_cert(chain, key)
                .expect("client auth")
        }
        _ => builder.with_no_client_auth(),
    };
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Arc::new(config)
}

/// An open connection to one kubelet.
pub struct Conn {
    pub alpn: Option<Vec<u8>>,
    h2: Option<http2::SendRequest<Empty<Bytes>>>,
    h1: Option<http1::SendRequest<Empty<Bytes>>>,
    token: Option<String>,
}

/// Connects to `addr`, verifying the certificate for `server_ip`.
pub async fn connect(
    dir: &Path,
    addr: SocketAddr,
    server_ip: IpAddr,
    creds: Credentials,
    alpn: &[&[u8]],
) -> Result<Conn, Error> {
    let config = client_config(dir, &creds, alpn);
    let tcp = tokio::time::timeout(STEP, TcpStream::connect(addr)).await??;
    let tls = tokio::time::timeout(
        STEP,
        TlsConnector::from(config).connect(ServerName::IpAddress(server_ip.into()), tcp),
    )
    .await??;
    let alpn = tls.get_ref().1.alpn_protocol().map(|p| p.to_vec());
    let token = match creds {
        Credentials::Token(t) => Some(t),
        _ => None,
    };
    if alpn.as_deref() == Some(b"h2") {
        let (send, conn) = http2::handshake(TokioExecutor::new(), TokioIo::new(tls)).await?;
        tokio::spawn(conn);
        Ok(Conn {
            alpn,
            h2: Some(send),
            h1: None,
            token,
        })
    } else {
        let (send, conn) = http1::handshake(TokioIo::new(tls)).await?;
        tokio::spawn(conn);
        Ok(Conn {
            alpn,
            h2: None,
            h1: Some(send),
            token,
        })
    }
}

impl Conn {
    /// Whether the server closed (or is closing) the connection.
    pub fn is_closed(&self) -> bool {
        self.h2.as_ref().map(|s| s.is_closed()).unwrap_or(true)
            && self.h1.as_ref().map(|s| s.is_closed()).unwrap_or(true)
    }

    /// GETs `path`; returns the status and the whole body.
    pub async fn get(&mut self, path: &str) -> Result<(u16, Bytes), Error> {
        let mut req = http::Request::get(format!("https://kubelet{path}"));
        if let Some(t) = &self.token {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        let req = req.body(Empty::<Bytes>::new())?;
        let response = if let Some(h2) = self.h2.as_mut() {
            tokio::time::timeout(STEP, h2.send_request(req)).await??
        } else if let Some(h1) = self.h1.as_mut() {
            tokio::time::timeout(STEP, h1.send_request(req)).await??
        } else {
            return Err("no connection".into());
        };
        let status = response.status().as_u16();
        let body = tokio::time::timeout(STEP, response.into_body().collect())
            .await??
            .to_bytes();
        Ok((status, body))
    }
}

/// One parsed sample line.
#[derive(Debug, Clone, PartialEq)]
pub struct Line {
    pub name: String,
    pub labels: Vec<(String, String)>,
    pub value: f64,
    pub timestamp: Option<i64>,
}

impl Line {
    pub fn label(&self, key: &str) -> Option<&str> {
        self.labels
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

/// A minimal exposition parser: enough to check series, labels, values and timestamps.
pub fn parse(body: &[u8]) -> Result<Vec<Line>, String> {
    let text = std::str::from_utf8(body).map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    for line in text.lines() {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (series, rest) = match line.find('}') {
            Some(end) => (&line[..=end], line[end + 1..].trim_start()),
            None => line.split_once(' ').ok_or(format!("no value: {line}"))?,
        };
        let (name, labels) = match series.find('{') {
            Some(open) => {
                let inner = &series[open + 1..series.len() - 1];
                let labels = inner
                    .split(',')
                    .map(|kv| {
                        let (k, v) = kv.split_once('=').ok_or(format!("bad label: {kv}"))?;
                        Ok((k.to_owned(), v.trim_matches('"').to_owned()))
                    })
                    .collect::<Result<Vec<_>, String>>()?;
                (series[..open].to_owned(), labels)
            }
            None => (series.to_owned(), Vec::new()),
        };
        let mut parts = rest.split(' ');
        let value: f64 = parts
            .next()
            .ok_or("no value")?
            .parse()
            .map_err(|e| format!("value in {line}: {e}"))?;
        let timestamp = match parts.next() {
            Some(t) => Some(t.parse().map_err(|e| format!("timestamp in {line}: {e}"))?),
            None => None,
        };
        out.push(Line {
            name,
            labels,
            value,
            timestamp,
        });
    }
    Ok(out)
}
