//! The wiring: starts discovery, the scrape supervisor and the API, and stops them together.
//!
//! Discovery, the scrape actors and the expiry tick run inside one actix `System` and share its
//! main arbiter. The API server runs on a tokio runtime of its own with one worker per core (at
//! least two; see [`server`] for why a work-stealing runtime rather than more arbiters), so serving
//! a read never queues behind scrape work, and reads are served on every core. SIGINT or SIGTERM
//! starts shutdown: `/readyz` fails, the listener stops accepting, in-flight requests drain,
//! scraping stops.

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use secrecy::ExposeSecret as _;
use tokio::sync::{oneshot, watch};

use crate::api::auth::{AlwaysAllowPaths, Auth, Authenticator, Authorizer};
use crate::api::authn::{self, AuthenticationConfig, AuthnError};
use crate::api::authz::{AuthorizationConfig, DelegatedAuthorizer};
use crate::api::health::HealthConfig;
use crate::api::routes::{self, Router};
use crate::api::selector::{LabelSelector, SelectorError};
use crate::api::server::{self, ServerError, TlsSettings};
use crate::config::Config;
use crate::discovery::{self, DiscoveryConfig, DiscoveryError};
use crate::scrape::{self, KubeletTlsConfig, ScrapeConfig, ScrapeError};
use crate::store::{Store, StoreConfig};
use crate::telemetry::Telemetry;

/// A kubelet response larger than this fails the scrape; a node's `/metrics/resource` with a few
/// hundred pods is well under a megabyte.
const MAX_BODY_BYTES: usize = 32 * 1024 * 1024;

/// Why the server could not start or stopped abnormally.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error("invalid --node-selector: {0}")]
    NodeSelector(#[from] SelectorError),
    #[error(transparent)]
    Discovery(#[from] DiscoveryError),
    #[error(transparent)]
    Scrape(#[from] ScrapeError),
    #[error(transparent)]
    Server(#[from] ServerError),
    #[error(transparent)]
    Authentication(#[from] AuthnError),
    #[error("listening on {address}: {source}")]
    Bind {
        address: SocketAddr,
        source: io::Error,
    },
    #[error("waiting for signals: {0}")]
    Signals(io::Error),
    #[error("the API server stopped unexpectedly")]
    ServerStopped,
    #[error("starting the API server's threads: {0}")]
    ApiRuntime(io::Error),
}

/// How long the API runtime may take to end its blocking renderers once the server has stopped;
/// each ends at its next chunk once its connection is gone.
const API_RUNTIME_SHUTDOWN: Duration = Duration::from_secs(2);

/// Runs until SIGINT or SIGTERM. Fails fast on bad TLS material, a taken port or an unusable
/// kubeconfig.
pub fn run(config: Config) -> Result<(), AppError> {
    let node_selector = config
        .node_selector
        .as_deref()
        .map(LabelSelector::parse)
        .transpose()?;
    let tls = server::tls_config(&TlsSettings {
        cert_file: config.tls_cert_file.clone(),
        key_file: config.tls_private_key_file.clone(),
        cert_dir: config.cert_dir.clone(),
        min_version: config.tls_min_version.unwrap_or_default(),
        cipher_suites: config.tls_cipher_suites.clone(),
    })?;
    let address = SocketAddr::new(config.bind_address, config.secure_port);
    let bind_error = |source| AppError::Bind { address, source };
    let listener = bind(address).map_err(bind_error)?;
    listener.set_nonblocking(true).map_err(bind_error)?;

    let api_runtime = api_runtime().map_err(AppError::ApiRuntime)?;
    let system = actix_rt::System::new();
    let result = system.block_on(run_in_system(
        config,
        tls,
        listener,
        node_selector,
        api_runtime.handle().clone(),
    ));
    actix_rt::System::current().stop();
    // Outside any runtime's context, where a runtime may be shut down.
    api_runtime.shutdown_timeout(API_RUNTIME_SHUTDOWN);
    result
}

/// The API server's runtime: one worker per core, at least two, so a request is never queued
/// behind another on a busy worker while a core is idle. Large lists render on its blocking pool.
pub fn api_runtime() -> io::Result<tokio::runtime::Runtime> {
    let workers = std::thread::available_parallelism()
        .map(std::num::NonZeroUsize::get)
        .unwrap_or(2)
        .max(2);
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .thread_name("api")
        .enable_all()
        .build()
}

/// Binds the API's socket. `0.0.0.0` means every address, as it does for upstream's Go listener: the
/// IPv6 wildcard is tried first (dual-stack on Linux, so IPv6-only clusters are served too), and the
/// IPv4 wildcard when the host has no IPv6.
fn bind(address: SocketAddr) -> io::Result<std::net::TcpListener> {
    if address.ip() == std::net::IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED) {
        let dual = SocketAddr::new(std::net::Ipv6Addr::UNSPECIFIED.into(), address.port());
        match std::net::TcpListener::bind(dual) {
            Ok(listener) => return Ok(listener),
            Err(error) => {
                tracing::debug!(%error, "No IPv6 wildcard; listening on IPv4 only.");
            }
        }
    }
    std::net::TcpListener::bind(address)
}

async fn run_in_system(
    config: Config,
    tls: Arc<rustls::ServerConfig>,
    listener: std::net::TcpListener,
    node_selector: Option<LabelSelector>,
    api: tokio::runtime::Handle,
) -> Result<(), AppError> {
    let kube_config = discovery::load_config(config.kubeconfig.as_deref()).await?;
    let kubelet_tls = kubelet_tls(&config, &kube_config).await;
    let client = discovery::client_for(kube_config)?;
    let discovery = discovery::start(
        client,
        DiscoveryConfig {
            preferred_address_types: config.kubelet_preferred_address_types.clone(),
            kubelet_port: config.kubelet_port,
            use_node_status_port: config.kubelet_use_node_status_port,
            node_selector: config.node_selector.clone(),
        },
    )?;

    let telemetry = Arc::new(Telemetry::new());
    let store = Arc::new(
        Store::new(StoreConfig::from_resolution(config.metric_resolution))
            .with_pod_names(Arc::new(discovery.clone())),
    );
    let scraping = scrape::start(
        Arc::clone(&store),
        discovery.targets(),
        ScrapeConfig {
            resolution: config.metric_resolution,
            request_timeout: config.kubelet_request_timeout,
            max_body_bytes: MAX_BODY_BYTES,
            tls: kubelet_tls,
        },
        Arc::clone(&telemetry),
    )?;

    let router = Arc::new(
        Router::new(
            Arc::clone(&store),
            Arc::new(discovery.clone()),
            Arc::clone(&telemetry),
            node_selector,
            auth(&config).await?,
            HealthConfig {
                resolution: config.metric_resolution,
                startup_grace: config.kubelet_request_timeout + config.metric_resolution,
                started: routes::now(),
            },
        )
        .with_answer_budget(config.kept_answers_max_bytes),
    );
    let shutting_down = router.shutting_down();
    let (stop_serving, serving_stopped) = watch::channel(false);
    let (server_done, mut server_exited) = oneshot::channel::<()>();
    // The listener is registered with the API runtime's reactor, inside the task.
    api.spawn(async move {
        match tokio::net::TcpListener::from_std(listener) {
            Ok(listener) => server::serve(listener, tls, router, serving_stopped).await,
            Err(error) => tracing::error!(%error, "Cannot use the listening socket."),
        }
        let _ = server_done.send(());
    });

    let expiry = actix_rt::spawn(expire_periodically(
        Arc::clone(&store),
        Arc::clone(&telemetry),
        discovery.targets(),
        (config.metric_resolution / 2).max(Duration::from_secs(1)),
    ));

    // `server_running` tracks whether the oneshot is still pending: a completed one must not be
    // awaited again.
    let (outcome, server_running) = tokio::select! {
        signal = shutdown_signal() => (signal.map_err(AppError::Signals), true),
        _ = &mut server_exited => (Err(AppError::ServerStopped), false),
    };
    tracing::info!("Shutting down.");
    shutting_down.store(true, Ordering::Relaxed);
    let _ = stop_serving.send(true);
    scraping.stop();
    expiry.abort();
    // The server drains for a bounded time itself; this bound only guards against a stuck thread.
    if server_running {
        let _ = tokio::time::timeout(Duration::from_secs(15), server_exited).await;
    }
    outcome
}

/// The authentication/authorization hook: delegated authentication (`TokenReview`, client and
/// front-proxy certificates) and authorization (`SubjectAccessReview`) through the clients of
/// `--authentication-kubeconfig` and `--authorization-kubeconfig` (each `--kubeconfig` when unset,
/// in-cluster configuration when neither is).
async fn auth(config: &Config) -> Result<Auth, AppError> {
    let authn_client =
        discovery::client_for(discovery::load_config(config.authentication_kubeconfig()).await?)?;
    let authz_client =
        discovery::client_for(discovery::load_config(config.authorization_kubeconfig()).await?)?;
    let authenticator = authn::start(authn_client, authentication_config(config)).await?;
    let authorizer = DelegatedAuthorizer::new(
        authz_client,
        AuthorizationConfig {
            allowed_ttl: config.authorization_webhook_cache_authorized_ttl,
            denied_ttl: config.authorization_webhook_cache_unauthorized_ttl,
            ..AuthorizationConfig::default()
        },
    );
    Ok(Auth {
        authenticator: Authenticator::Delegated(Arc::new(authenticator)),
        authorizer: Authorizer::Delegated(Arc::new(authorizer)),
        always_allow: AlwaysAllowPaths::new(&config.authorization_always_allow_paths),
    })
}

/// The authentication flags, as [`authn::start`] takes them.
fn authentication_config(config: &Config) -> AuthenticationConfig {
    AuthenticationConfig {
        client_ca_file: config.client_ca_file.clone(),
        requestheader_client_ca_file: config.requestheader_client_ca_file.clone(),
        requestheader_allowed_names: config.requestheader_allowed_names.clone(),
        requestheader_username_headers: config.requestheader_username_headers.clone(),
        requestheader_group_headers: config.requestheader_group_headers.clone(),
        requestheader_extra_headers_prefix: config.requestheader_extra_headers_prefix.clone(),
        skip_lookup: config.authentication_skip_lookup,
        tolerate_lookup_failure: config.authentication_tolerate_lookup_failure,
        token_cache_ttl: config.authentication_token_webhook_cache_ttl,
        ..AuthenticationConfig::default()
    }
}

/// Kubelet TLS from the flags, with the cluster CA and the service-account token from the
/// kubeconfig as fallbacks.
async fn kubelet_tls(config: &Config, kube: &kube::Config) -> KubeletTlsConfig {
    let cluster_ca_pem = discovery::cluster_ca_pem(kube);
    let mut bearer_token = kube
        .auth_info
        .token
        .as_ref()
        .map(|t| t.expose_secret().to_owned());
    if bearer_token.is_none() {
        if let Some(file) = &kube.auth_info.token_file {
            match tokio::fs::read_to_string(file).await {
                Ok(token) => bearer_token = Some(token.trim().to_owned()),
                Err(error) => tracing::warn!(file = %file, %error, "Cannot read the token file."),
            }
        }
    }
    KubeletTlsConfig {
        ca_file: config.kubelet_certificate_authority.clone(),
        cluster_ca_pem,
        client_cert_file: config.kubelet_client_certificate.clone(),
        client_key_file: config.kubelet_client_key.clone(),
        bearer_token,
        insecure: config.kubelet_insecure_tls,
    }
}

/// Expires stale points, and counts an empty target set as collection progress: with no node to
/// scrape nothing can stall, and `/livez` must not restart a server whose cluster has no nodes
/// (upstream's tick likewise advances with zero nodes).
async fn expire_periodically(
    store: Arc<Store>,
    telemetry: Arc<Telemetry>,
    targets: watch::Receiver<discovery::Targets>,
    period: Duration,
) {
    let mut ticks = tokio::time::interval(period);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        let now = routes::now();
        store.expire(now);
        if targets.borrow().is_empty() {
            telemetry.collection_progressed(now);
        }
    }
}

/// Resolves on the first SIGINT or SIGTERM.
async fn shutdown_signal() -> io::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut terminate = signal(SignalKind::terminate())?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    tokio::select! {
        _ = terminate.recv() => tracing::info!(signal = "SIGTERM", "Received a signal."),
        _ = interrupt.recv() => tracing::info!(signal = "SIGINT", "Received a signal."),
    }
    Ok(())
}

/// Raises the open-file soft limit to the hard limit: each kubelet holds a connection, and the
/// default soft limit (often 1024) is below a large cluster's node count. Returns the new soft limit.
pub fn raise_open_file_limit() -> io::Result<u64> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `getrlimit` only writes into `limit`, a valid, exclusively borrowed `rlimit`.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return Err(io::Error::last_os_error());
    }
    if limit.rlim_cur < limit.rlim_max {
        limit.rlim_cur = limit.rlim_max;
        // SAFETY: `setrlimit` only reads `limit`, a valid `rlimit` whose soft value does not exceed
        // its hard value.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) } != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(limit.rlim_cur)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ipv4_wildcard_accepts_ipv4_clients() {
        let listener = bind("0.0.0.0:0".parse().unwrap()).unwrap();
        let port = listener.local_addr().unwrap().port();
        let client = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        let (_accepted, peer) = listener.accept().unwrap();
        assert_eq!(peer.port(), client.local_addr().unwrap().port());
    }

    #[test]
    fn open_file_soft_limit_reaches_the_hard_limit() {
        let soft = raise_open_file_limit().unwrap();
        let mut limit = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: as in `raise_open_file_limit`.
        assert_eq!(
            unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) },
            0
        );
        assert_eq!(limit.rlim_cur, limit.rlim_max);
        assert_eq!(soft, limit.rlim_cur);
    }
}
