//! One scraper actor per node, each with its own persistent connection to its kubelet.
//!
//! A scraper writes only its own node's data; a slow or broken kubelet delays nobody else.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::discovery::Targets;
use crate::store::Store;
use crate::telemetry::Telemetry;

/// How to reach and trust kubelets (`--kubelet-*` flags).
#[derive(Clone, Debug, Default)]
pub struct KubeletTlsConfig {
    /// `--kubelet-certificate-authority`; `None` means the cluster CA from the kubeconfig.
    pub ca_file: Option<PathBuf>,
    /// The cluster CA (PEM), used when `ca_file` is not given.
    pub cluster_ca_pem: Option<Vec<u8>>,
    /// `--kubelet-client-certificate` / `--kubelet-client-key`.
    pub client_cert_file: Option<PathBuf>,
    pub client_key_file: Option<PathBuf>,
    /// The service-account bearer token sent when no client certificate is configured.
    pub bearer_token: Option<String>,
    /// `--kubelet-insecure-tls`.
    pub insecure: bool,
}

/// Scrape settings.
#[derive(Clone, Debug)]
pub struct ScrapeConfig {
    /// `--metric-resolution`: the period between two scrapes of a node.
    pub resolution: Duration,
    /// `--kubelet-request-timeout`: the bound on one scrape, connect included.
    pub request_timeout: Duration,
    /// A larger response body fails the scrape.
    pub max_body_bytes: usize,
    pub tls: KubeletTlsConfig,
}

/// Why scraping could not start.
#[derive(Debug, thiserror::Error)]
pub enum ScrapeError {
    #[error("invalid kubelet TLS settings: {0}")]
    Tls(String),
}

/// The running supervisor; dropping it does not stop scraping, [`ScrapeHandle::stop`] does.
pub struct ScrapeHandle {}

impl ScrapeHandle {
    pub fn stop(&self) {
        todo!("scrape helper")
    }
}

/// Starts the supervisor, which keeps one scraper actor per target in `targets`. Must be called
/// from within a running actix `System`.
pub fn start(
    _store: Arc<Store>,
    _targets: tokio::sync::watch::Receiver<Targets>,
    _config: ScrapeConfig,
    _telemetry: Arc<Telemetry>,
) -> Result<ScrapeHandle, ScrapeError> {
    todo!("scrape helper")
}
