//! A kube-apiserver stand-in: serves the simulated cluster's nodes and pods over HTTPS with
//! list/watch semantics close enough for kube-rs reflectors and kubectl, answers `TokenReview` and
//! `SubjectAccessReview`, publishes the `extension-apiserver-authentication` ConfigMap, and proxies
//! `metrics.k8s.io` to an aggregated backend like kube-aggregator does.
//!
//! Owns the wire only: the objects and their resource versions belong to [`Cluster`]; this module
//! never changes them. Files for clients (CA certificates, kubeconfigs) are written into the
//! configured state directory at start.
//!
//! ```no_run
//! # async fn demo() -> Result<(), kubelet_fleet::apiserver::ApiServerError> {
//! use kubelet_fleet::{apiserver, cluster::Cluster};
//! let config = apiserver::ApiServerConfig::new(std::env::temp_dir().join("fleet-api"));
//! let server = apiserver::start(config, Cluster::new()).await?;
//! // `server.files().kubeconfig` now works with kubectl; metrics need a backend:
//! server.set_aggregate_to(Some("https://127.0.0.1:4443".to_owned()));
//! # Ok(()) }
//! ```
//!
//! Code map: `routes` dispatches and serves the core API, `watches` streams changes, `proxy` forwards to the backend,
//! `auth` decides identities and permissions, `selector` parses selectors, `objects` renders JSON
//! and `table` the kubectl Table form,
//! `tls` holds the CAs and rustls configurations, `files` writes kubeconfigs.

pub mod auth;
mod body;
mod files;
mod objects;
mod proxy;
mod routes;
mod selector;
mod table;
mod tls;
mod watches;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;
use tracing::{debug, info, warn};

pub use auth::{
    authorize, Attributes, UserInfo, ADMIN_USER, AUTHENTICATED_GROUP, DENIED_USER, MASTERS_GROUP,
    METRICS_READER, READERS_GROUP, SERVER_USER,
};
pub use body::Body;
pub use objects::NodeResources;
pub use selector::{FieldSelector, LabelSelector, SelectorError};
pub use tls::{TlsError, FRONT_PROXY_CLIENT_CN};

use crate::cluster::Cluster;
use crate::pki::{LeafSpec, PemPair, PkiError};

/// Why the stand-in could not start or issue a certificate.
#[derive(Debug, thiserror::Error)]
pub enum ApiServerError {
    #[error("creating the state directory {path:?}: {source}")]
    StateDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("writing {path:?}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("binding {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error("issuing a certificate: {0}")]
    Pki(#[from] PkiError),
}

/// How to run the stand-in.
#[derive(Clone, Debug)]
pub struct ApiServerConfig {
    /// Where to listen; port 0 picks an ephemeral port.
    pub bind: SocketAddr,
    /// Where CA certificates and kubeconfigs are written (created if missing).
    pub state_dir: PathBuf,
    /// The `metrics.k8s.io` backend, e.g. `https://127.0.0.1:4443`; `None` answers 503 until
    /// [`ApiServerHandle::set_aggregate_to`] sets one.
    pub aggregate_to: Option<String>,
    /// The CA to verify the backend with; `None` skips verification (`insecureSkipTLSVerify`).
    pub aggregate_ca_pem: Option<String>,
    /// `status.capacity` / `status.allocatable` of every node.
    pub node_resources: NodeResources,
    /// How long a watch lasts when the client names no `timeoutSeconds`.
    pub default_watch_timeout: Duration,
    /// How often an idle watch that allows bookmarks gets one.
    pub bookmark_interval: Duration,
}

impl ApiServerConfig {
    /// Loopback, ephemeral port, no backend yet.
    pub fn new(state_dir: impl Into<PathBuf>) -> Self {
        ApiServerConfig {
            bind: SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 0),
            state_dir: state_dir.into(),
            aggregate_to: None,
            aggregate_ca_pem: None,
            node_resources: NodeResources::default(),
            default_watch_timeout: Duration::from_secs(30 * 60),
            bookmark_interval: Duration::from_secs(60),
        }
    }
}

/// What every connection shares.
pub(crate) struct Shared {
    pub(crate) cluster: Arc<Cluster>,
    pub(crate) users: auth::Users,
    pub(crate) node_resources: NodeResources,
    pub(crate) default_watch_timeout: Duration,
    pub(crate) bookmark_interval: Duration,
    /// std RwLock, not tokio's: read once per proxied request, never held across an await.
    pub(crate) aggregate_to: RwLock<Option<String>>,
    pub(crate) backend: proxy::BackendClient,
    pub(crate) server_url: String,
    pub(crate) client_ca_pem: String,
    pub(crate) front_proxy_ca_pem: String,
    pub(crate) shutdown: watch::Receiver<bool>,
}

/// Paths of the files written into the state directory.
#[derive(Clone, Debug)]
pub struct StateFiles {
    /// The stand-in's serving CA (`ca.crt`).
    pub ca: PathBuf,
    /// The CA of user client certificates (`client-ca.crt`).
    pub client_ca: PathBuf,
    /// The front-proxy CA (`front-proxy-ca.crt`).
    pub front_proxy_ca: PathBuf,
    /// `metrics-reader`, who may read metrics (bearer token).
    pub kubeconfig: PathBuf,
    /// `metrics-denied`, authenticated but not allowed to read metrics (client certificate).
    pub denied_kubeconfig: PathBuf,
    /// The metrics server's identity: list/watch nodes and pods, create reviews (client certificate).
    pub server_kubeconfig: PathBuf,
    /// A `system:masters` member (client certificate).
    pub admin_kubeconfig: PathBuf,
}

/// A running stand-in. Dropping it stops serving, as [`ApiServerHandle::shutdown`] does, without
/// waiting.
pub struct ApiServerHandle {
    addr: SocketAddr,
    url: String,
    pki: Arc<tls::Pki>,
    shared: Arc<Shared>,
    files: StateFiles,
    shutdown: watch::Sender<bool>,
    task: Option<JoinHandle<()>>,
}

impl ApiServerHandle {
    /// `https://127.0.0.1:PORT`.
    pub fn url(&self) -> &str {
        &self.url
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// The CA that signed the serving certificate.
    pub fn ca_pem(&self) -> &str {
        self.pki.server_ca.cert_pem()
    }

    /// The CA that user client certificates chain to (`client-ca-file`).
    pub fn client_ca_pem(&self) -> &str {
        self.pki.client_ca.cert_pem()
    }

    /// The front-proxy CA (`requestheader-client-ca-file`).
    pub fn front_proxy_ca_pem(&self) -> &str {
        self.pki.front_proxy_ca.cert_pem()
    }

    /// The certificate the stand-in presents to the aggregated backend.
    pub fn front_proxy_client(&self) -> &PemPair {
        &self.pki.front_proxy_client
    }

    /// A client certificate for `user` in `groups`, accepted by the stand-in and by anything that
    /// trusts the client CA.
    pub fn issue_client_cert(
        &self,
        user: &str,
        groups: &[&str],
    ) -> Result<PemPair, ApiServerError> {
        Ok(self.pki.client_ca.issue(&LeafSpec::client(user, groups))?)
    }

    /// A certificate signed by the front-proxy CA with any CN (for testing allowed names).
    pub fn issue_front_proxy_cert(&self, common_name: &str) -> Result<PemPair, ApiServerError> {
        Ok(self
            .pki
            .front_proxy_ca
            .issue(&LeafSpec::client(common_name, &[]))?)
    }

    /// The bearer token of a known user ([`METRICS_READER`], [`DENIED_USER`], [`SERVER_USER`],
    /// [`ADMIN_USER`]).
    pub fn token(&self, user: &str) -> Option<&str> {
        self.shared.users.token_of(user)
    }

    pub fn files(&self) -> &StateFiles {
        &self.files
    }

    /// Points `metrics.k8s.io` at a backend (or at none: 503).
    pub fn set_aggregate_to(&self, url: Option<String>) {
        let mut slot = self
            .shared
            .aggregate_to
            .write()
            .unwrap_or_else(|e| e.into_inner());
        *slot = url.map(|u| u.trim_end_matches('/').to_owned());
    }

    /// Stops accepting, ends every watch and connection, and waits for the listener task.
    pub async fn shutdown(mut self) {
        let _ = self.shutdown.send(true);
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for ApiServerHandle {
    fn drop(&mut self) {
        let _ = self.shutdown.send(true);
    }
}

/// Starts the stand-in: creates the CAs, writes the state files, binds, and serves in the
/// background until the handle is shut down or dropped.
pub async fn start(
    config: ApiServerConfig,
    cluster: Arc<Cluster>,
) -> Result<ApiServerHandle, ApiServerError> {
    std::fs::create_dir_all(&config.state_dir).map_err(|source| ApiServerError::StateDir {
        path: config.state_dir.clone(),
        source,
    })?;
    let pki = Arc::new(tls::Pki::new()?);
    let listener = TcpListener::bind(config.bind)
        .await
        .map_err(|source| ApiServerError::Bind {
            addr: config.bind,
            source,
        })?;
    let addr = listener
        .local_addr()
        .map_err(|source| ApiServerError::Bind {
            addr: config.bind,
            source,
        })?;
    let host = match addr.ip() {
        ip if ip.is_unspecified() => "127.0.0.1".to_owned(),
        IpAddr::V6(ip) => format!("[{ip}]"),
        IpAddr::V4(ip) => ip.to_string(),
    };
    let url = format!("https://{host}:{}", addr.port());

    let users = auth::Users::new();
    let files = write_state_files(&config.state_dir, &url, &pki, &users)?;
    let acceptor = TlsAcceptor::from(Arc::new(tls::server_config(&pki)?));
    let backend = proxy::BackendClient::new(&pki, config.aggregate_ca_pem.as_deref())?;
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let shared = Arc::new(Shared {
        cluster,
        users,
        node_resources: config.node_resources,
        default_watch_timeout: config.default_watch_timeout,
        bookmark_interval: config.bookmark_interval,
        aggregate_to: RwLock::new(
            config
                .aggregate_to
                .map(|u| u.trim_end_matches('/').to_owned()),
        ),
        backend,
        server_url: url.clone(),
        client_ca_pem: pki.client_ca.cert_pem().to_owned(),
        front_proxy_ca_pem: pki.front_proxy_ca.cert_pem().to_owned(),
        shutdown: shutdown_rx.clone(),
    });
    let task = tokio::spawn(accept_loop(listener, acceptor, shared.clone(), shutdown_rx));
    info!(%url, "API server stand-in listening.");
    Ok(ApiServerHandle {
        addr,
        url,
        pki,
        shared,
        files,
        shutdown: shutdown_tx,
        task: Some(task),
    })
}

fn write_state_files(
    dir: &Path,
    url: &str,
    pki: &tls::Pki,
    users: &auth::Users,
) -> Result<StateFiles, ApiServerError> {
    use files::{kubeconfig, write, Credential};
    let ca_pem = pki.server_ca.cert_pem();
    let cert_for = |user: &str| -> Result<PemPair, ApiServerError> {
        let groups: Vec<&str> = users
            .find(user)
            .map(|u| {
                u.groups
                    .iter()
                    .map(String::as_str)
                    .filter(|g| *g != AUTHENTICATED_GROUP)
                    .collect()
            })
            .unwrap_or_default();
        Ok(pki.client_ca.issue(&LeafSpec::client(user, &groups))?)
    };
    let reader_token = users.token_of(METRICS_READER).unwrap_or_default();
    let denied = cert_for(DENIED_USER)?;
    let server = cert_for(SERVER_USER)?;
    let admin = cert_for(ADMIN_USER)?;
    Ok(StateFiles {
        ca: write(dir, "ca.crt", ca_pem)?,
        client_ca: write(dir, "client-ca.crt", pki.client_ca.cert_pem())?,
        front_proxy_ca: write(dir, "front-proxy-ca.crt", pki.front_proxy_ca.cert_pem())?,
        kubeconfig: write(
            dir,
            "kubeconfig",
            &kubeconfig(url, ca_pem, METRICS_READER, Credential::Token(reader_token)),
        )?,
        denied_kubeconfig: write(
            dir,
            "denied.kubeconfig",
            &kubeconfig(url, ca_pem, DENIED_USER, Credential::Certificate(&denied)),
        )?,
        server_kubeconfig: write(
            dir,
            "server.kubeconfig",
            &kubeconfig(url, ca_pem, SERVER_USER, Credential::Certificate(&server)),
        )?,
        admin_kubeconfig: write(
            dir,
            "admin.kubeconfig",
            &kubeconfig(url, ca_pem, ADMIN_USER, Credential::Certificate(&admin)),
        )?,
    })
}

/// How long a client may take to finish the TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

async fn accept_loop(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    shared: Arc<Shared>,
    mut shutdown: watch::Receiver<bool>,
) {
    let for_connections = shutdown.clone();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let _ = stream.set_nodelay(true);
                    tokio::spawn(serve_connection(
                        stream,
                        peer,
                        acceptor.clone(),
                        shared.clone(),
                        for_connections.clone(),
                    ));
                }
                Err(error) => {
                    // Out of file descriptors or a reset before accept: pause instead of spinning.
                    warn!(%error, "Accepting a connection failed.");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            _ = stopped(&mut shutdown) => break,
        }
    }
    debug!("API server stand-in stopped accepting.");
}

async fn serve_connection(
    stream: tokio::net::TcpStream,
    peer: SocketAddr,
    acceptor: TlsAcceptor,
    shared: Arc<Shared>,
    mut shutdown: watch::Receiver<bool>,
) {
    let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
        Ok(Ok(tls)) => tls,
        Ok(Err(error)) => {
            debug!(%peer, %error, "TLS handshake failed.");
            return;
        }
        Err(_) => {
            debug!(%peer, "TLS handshake timed out.");
            return;
        }
    };
    let cert_user = tls
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|chain| chain.first())
        .and_then(|cert| auth::user_from_certificate(cert.as_ref()));
    let cert_user = Arc::new(cert_user);
    let service = service_fn(move |req| {
        let shared = shared.clone();
        let cert_user = cert_user.clone();
        async move {
            Ok::<_, std::convert::Infallible>(
                routes::handle(shared, cert_user.as_ref().as_ref(), req).await,
            )
        }
    });
    let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    let conn = builder.serve_connection(TokioIo::new(tls), service);
    tokio::select! {
        result = conn => {
            if let Err(error) = result {
                debug!(%peer, %error, "Connection ended with an error.");
            }
        }
        // Dropping the connection closes it; watch bodies end on the same signal.
        _ = stopped(&mut shutdown) => {}
    }
}

/// Resolves once shutdown is signalled (or the signal's sender is gone). Returns nothing so no
/// lock guard of the watch channel lives across an await in a `select!`.
pub(crate) async fn stopped(shutdown: &mut watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|stop| *stop).await;
}
