//! The HTTPS listener: TLS (rustls), HTTP/2 and HTTP/1.1 negotiated by ALPN, graceful shutdown.
//!
//! Owns the serving certificate (given by `--tls-cert-file`/`--tls-private-key-file`, else a
//! self-signed pair generated once into `--cert-dir` and reused) and the accept loop. A failed
//! handshake or a broken connection ends that connection only; the loop itself never stops on a bad
//! peer. Requests go to the [`Router`].
//!
//! The certificate files are re-read every [`RELOAD_INTERVAL`], as upstream's dynamic serving
//! certificate is: when either file's bytes changed, the new pair is parsed and checked (the key
//! must match the certificate) and, if good, every later handshake presents it. Connections
//! already open keep the session they negotiated. A bad pair is logged once and the last good
//! one kept. The poll runs on its own small thread, which ends once the configuration is dropped.
//!
//! [`serve`] runs on whatever tokio runtime it is spawned on; the binary gives it a multi-thread
//! runtime of its own with a worker per core (see `app`). Each connection is a task. A stream's
//! handler gets its first poll on the connection's task, where hyper hands the stream over
//! ([`FirstPollInline`]); most requests finish there, and their responses leave together, in
//! few writes ([`crate::api::batched_writes`]). A handler that has to wait (a review in flight, a
//! long list) goes on as a task of its own, so on the work-stealing runtime it runs on any core
//! and holds up neither its connection nor others. A handler does no blocking work on a worker:
//! small answers render in microseconds, and lists long enough to take milliseconds render on the
//! runtime's blocking pool and stream from there (see [`crate::api::body`]). The cost: what
//! finishes in its first poll runs on its connection's thread, so one connection's short
//! requests use one core at a time, as its TLS and HTTP/2 framing always did.

use std::convert::Infallible;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use arc_swap::ArcSwap;

use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::ServerConfig;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;

use crate::api::authn::tls::AcceptAnyClientCert;
use crate::api::authn::PeerCertificates;
use crate::api::batched_writes::{counting_turns, BatchedWrites, Turns};
use crate::api::routes::Router;
use crate::config::{cipher_suite_support, TlsVersion};

/// A handshake not done by then is dropped, so idle half-open peers cannot pin tasks.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// HTTP/2 ping interval; a peer that stops answering is disconnected.
const KEEP_ALIVE_INTERVAL: Duration = Duration::from_secs(30);
/// How long in-flight requests may take to finish once shutdown starts.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);
/// Pause after a failed `accept` (such as running out of file descriptors) so the loop does not spin.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(50);
/// How often the serving certificate files are checked for a new pair.
pub const RELOAD_INTERVAL: Duration = Duration::from_secs(5);

/// The file names of a generated pair inside `--cert-dir`, as upstream names them.
const GENERATED_CERT: &str = "apiserver.crt";
const GENERATED_KEY: &str = "apiserver.key";

/// Why the server could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("reading {path}: {source}")]
    Read { path: PathBuf, source: io::Error },
    #[error("writing {path}: {source}")]
    Write { path: PathBuf, source: io::Error },
    #[error("no PEM certificate in {0}")]
    NoCertificate(PathBuf),
    #[error("no usable PEM private key in {path}: {reason}")]
    BadKey { path: PathBuf, reason: String },
    #[error("generating a self-signed certificate: {0}")]
    Generate(String),
    #[error("TLS settings: {0}")]
    Tls(#[from] rustls::Error),
    #[error("none of --tls-cipher-suites is supported")]
    NoCipherSuites,
    #[error("the private key in {key} does not match the certificate in {cert}: {reason}")]
    KeyMismatch {
        cert: PathBuf,
        key: PathBuf,
        reason: String,
    },
}

/// Serving TLS settings, from the flags.
#[derive(Clone, Debug, Default)]
pub struct TlsSettings {
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
    pub cert_dir: PathBuf,
    pub min_version: TlsVersion,
    /// Go/IANA names; empty = every suite the provider offers.
    pub cipher_suites: Vec<String>,
}

/// Builds the rustls server configuration: certificate, versions, suites and ALPN (`h2`, then
/// `http/1.1`). The certificate files are re-read every [`RELOAD_INTERVAL`].
pub fn tls_config(settings: &TlsSettings) -> Result<Arc<ServerConfig>, ServerError> {
    serving_tls(settings, RELOAD_INTERVAL).map(|serving| serving.config)
}

/// The server configuration and the certificate it presents.
#[derive(Debug, Clone)]
pub struct ServingTls {
    pub config: Arc<ServerConfig>,
    pub certificate: Arc<ReloadingCertificate>,
}

/// As [`tls_config`], checking the certificate files every `reload_interval`, and also handing
/// back the certificate so its reloads can be observed.
pub fn serving_tls(
    settings: &TlsSettings,
    reload_interval: Duration,
) -> Result<ServingTls, ServerError> {
    let (cert_path, key_path) = match (&settings.cert_file, &settings.key_file) {
        (Some(cert), Some(key)) => (cert.clone(), key.clone()),
        _ => ensure_self_signed(&settings.cert_dir)?,
    };
    let provider = Arc::new(provider(&settings.cipher_suites)?);
    let certificate = Arc::new(ReloadingCertificate::load(
        cert_path,
        key_path,
        Arc::clone(&provider),
    )?);
    ReloadingCertificate::watch(Arc::downgrade(&certificate), reload_interval);
    let versions: &[&'static rustls::SupportedProtocolVersion] = match settings.min_version {
        TlsVersion::Tls12 => &[&rustls::version::TLS13, &rustls::version::TLS12],
        TlsVersion::Tls13 => &[&rustls::version::TLS13],
    };
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(versions)?
        // Any chain is accepted at the handshake and kept; authentication checks it per request
        // against the CAs current at that moment.
        .with_client_cert_verifier(AcceptAnyClientCert::shared())
        .with_cert_resolver(Arc::clone(&certificate) as Arc<dyn ResolvesServerCert>);
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(ServingTls {
        config: Arc::new(config),
        certificate,
    })
}

/// The serving certificate and key, swapped for a new pair when their files change.
#[derive(Debug)]
pub struct ReloadingCertificate {
    /// Read by every handshake, written only by the poll: arc-swap, so a handshake never waits.
    current: ArcSwap<CertifiedKey>,
    cert_path: PathBuf,
    key_path: PathBuf,
    provider: Arc<CryptoProvider>,
    /// The bytes of both files when last read, so an unchanged pair is not parsed (or a bad one
    /// logged) again. A std `Mutex`: only the poll (or a test's explicit check) takes it, and
    /// nothing awaits while it is held.
    last_read: Mutex<(Vec<u8>, Vec<u8>)>,
    reloads: AtomicU64,
    rejections: AtomicU64,
}

impl ReloadingCertificate {
    fn load(
        cert_path: PathBuf,
        key_path: PathBuf,
        provider: Arc<CryptoProvider>,
    ) -> Result<Self, ServerError> {
        let cert_pem = read_file(&cert_path)?;
        let key_pem = read_file(&key_path)?;
        let key = certified_key(&cert_path, &cert_pem, &key_path, &key_pem, &provider)?;
        Ok(ReloadingCertificate {
            current: ArcSwap::from_pointee(key),
            cert_path,
            key_path,
            provider,
            last_read: Mutex::new((cert_pem, key_pem)),
            reloads: AtomicU64::new(0),
            rejections: AtomicU64::new(0),
        })
    }

    /// The pair new handshakes present.
    pub fn current(&self) -> Arc<CertifiedKey> {
        self.current.load_full()
    }

    /// How many new pairs have been taken up since start.
    pub fn reloads(&self) -> u64 {
        self.reloads.load(Ordering::Relaxed)
    }

    /// How many changed pairs were refused (unreadable, unparsable or mismatched).
    pub fn rejections(&self) -> u64 {
        self.rejections.load(Ordering::Relaxed)
    }

    /// Re-reads the files; takes up the pair if either changed and it is good. Returns whether
    /// a new pair is now presented. Errors are only those of a changed pair; the old pair stays.
    pub fn check(&self) -> Result<bool, ServerError> {
        // A file being replaced may be briefly missing; the next check reads it again.
        let cert_pem = read_file(&self.cert_path)?;
        let key_pem = read_file(&self.key_path)?;
        {
            let mut last = self
                .last_read
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if last.0 == cert_pem && last.1 == key_pem {
                return Ok(false);
            }
            *last = (cert_pem.clone(), key_pem.clone());
        }
        match certified_key(
            &self.cert_path,
            &cert_pem,
            &self.key_path,
            &key_pem,
            &self.provider,
        ) {
            Ok(key) => {
                self.current.store(Arc::new(key));
                self.reloads.fetch_add(1, Ordering::Relaxed);
                tracing::info!(cert = %self.cert_path.display(), "Serving certificate reloaded.");
                Ok(true)
            }
            Err(error) => {
                self.rejections.fetch_add(1, Ordering::Relaxed);
                Err(error)
            }
        }
    }

    /// Checks every `interval` on a thread of its own until the certificate is dropped.
    fn watch(certificate: Weak<ReloadingCertificate>, interval: Duration) {
        let spawned = std::thread::Builder::new()
            .name("serving-cert-reload".to_owned())
            .spawn(move || loop {
                std::thread::sleep(interval);
                let Some(certificate) = certificate.upgrade() else {
                    return;
                };
                if let Err(error) = certificate.check() {
                    tracing::warn!(%error, "Keeping the current serving certificate.");
                }
            });
        if let Err(error) = spawned {
            tracing::warn!(%error, "Cannot watch the serving certificate files; they will not be reloaded.");
        }
    }
}

impl ResolvesServerCert for ReloadingCertificate {
    fn resolve(&self, _client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.load_full())
    }
}

fn read_file(path: &Path) -> Result<Vec<u8>, ServerError> {
    std::fs::read(path).map_err(|source| ServerError::Read {
        path: path.to_owned(),
        source,
    })
}

/// Parses a PEM pair into what rustls presents, checking that the key belongs to the certificate.
fn certified_key(
    cert_path: &Path,
    cert_pem: &[u8],
    key_path: &Path,
    key_pem: &[u8],
    provider: &CryptoProvider,
) -> Result<CertifiedKey, ServerError> {
    let (certs, key) = parse_pair(cert_path, cert_pem, key_path, key_pem)?;
    let signing_key =
        provider
            .key_provider
            .load_private_key(key)
            .map_err(|e| ServerError::BadKey {
                path: key_path.to_owned(),
                reason: e.to_string(),
            })?;
    let certified = CertifiedKey::new(certs, signing_key);
    match certified.keys_match() {
        // A key that cannot name its public half cannot be checked here; the handshake would
        // fail visibly if it were wrong.
        Ok(()) | Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => {
            Ok(certified)
        }
        Err(error) => Err(ServerError::KeyMismatch {
            cert: cert_path.to_owned(),
            key: key_path.to_owned(),
            reason: error.to_string(),
        }),
    }
}

/// The ring provider restricted to the named TLS 1.2 suites. TLS 1.3 suites are always on, as Go
/// does not let them be configured either; legacy names rustls lacks are skipped with a warning.
fn provider(names: &[String]) -> Result<CryptoProvider, ServerError> {
    let mut provider = rustls::crypto::ring::default_provider();
    if names.is_empty() {
        return Ok(provider);
    }
    for name in names {
        if cipher_suite_support(name) == Some(false) {
            tracing::warn!(suite = %name, "Cipher suite is not supported and is skipped.");
        }
    }
    provider.cipher_suites.retain(|suite| {
        let rustls_name = format!("{:?}", suite.suite());
        rustls_name.starts_with("TLS13_")
            || names
                .iter()
                .any(|name| *name == rustls_name || format!("{name}_SHA256") == rustls_name)
    });
    if !provider
        .cipher_suites
        .iter()
        .any(|s| !format!("{:?}", s.suite()).starts_with("TLS13_"))
    {
        tracing::warn!("No TLS 1.2 cipher suite left; only TLS 1.3 clients can connect.");
    }
    if provider.cipher_suites.is_empty() {
        return Err(ServerError::NoCipherSuites);
    }
    Ok(provider)
}

fn parse_pair(
    cert_path: &Path,
    cert_pem: &[u8],
    key_path: &Path,
    key_pem: &[u8],
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), ServerError> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert_pem)
        .filter_map(Result::ok)
        .collect();
    if certs.is_empty() {
        return Err(ServerError::NoCertificate(cert_path.to_owned()));
    }
    let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|e| ServerError::BadKey {
        path: key_path.to_owned(),
        reason: e.to_string(),
    })?;
    Ok((certs, key))
}

/// Returns the generated pair in `dir`, creating it first if either file is missing.
pub fn ensure_self_signed(dir: &Path) -> Result<(PathBuf, PathBuf), ServerError> {
    let cert_path = dir.join(GENERATED_CERT);
    let key_path = dir.join(GENERATED_KEY);
    if cert_path.is_file() && key_path.is_file() {
        tracing::info!(cert = %cert_path.display(), "Reusing the self-signed serving certificate.");
        return Ok((cert_path, key_path));
    }
    let generated =
        rcgen::generate_simple_self_signed(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
            .map_err(|e| ServerError::Generate(e.to_string()))?;
    std::fs::create_dir_all(dir).map_err(|source| ServerError::Write {
        path: dir.to_owned(),
        source,
    })?;
    write_file(
        &key_path,
        generated.signing_key.serialize_pem().as_bytes(),
        0o600,
    )?;
    write_file(&cert_path, generated.cert.pem().as_bytes(), 0o644)?;
    tracing::info!(cert = %cert_path.display(), "Generated a self-signed serving certificate.");
    Ok((cert_path, key_path))
}

fn write_file(path: &Path, contents: &[u8], mode: u32) -> Result<(), ServerError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let wrap = |source| ServerError::Write {
        path: path.to_owned(),
        source,
    };
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(path)
        .map_err(wrap)?;
    file.write_all(contents).map_err(wrap)
}

/// Runs each HTTP/2 stream's first poll on the connection's own task, right where hyper hands
/// the stream over, and spawns it as a task of its own only if that poll does not finish it.
///
/// Most requests finish in that first poll (a kept answer, a small list). Their responses are
/// then queued on the connection before it next writes, so the responses to all the requests one
/// read brought in leave in one write, and no task is spawned, scheduled and woken for each. A
/// request that waits (a review in flight, a long list rendered on the blocking pool) goes on as
/// its own task: once spawned, it is polled again at once with a real waker, so nothing that
/// became ready in between is missed.
#[derive(Clone, Copy, Debug, Default)]
struct FirstPollInline;

impl<F> hyper::rt::Executor<F> for FirstPollInline
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    fn execute(&self, future: F) {
        let mut future = Box::pin(future);
        let mut context = std::task::Context::from_waker(std::task::Waker::noop());
        // A handler that panics ends its own stream, as it would in a task of its own, and not
        // the connection (for the aggregator, every client's requests) around it.
        let first = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            future.as_mut().poll(&mut context)
        }));
        match first {
            Ok(std::task::Poll::Pending) => {
                tokio::spawn(future);
            }
            Ok(std::task::Poll::Ready(_)) => {}
            Err(_) => tracing::error!("A request handler panicked; its stream was dropped."),
        }
    }
}

/// Accepts connections until `shutdown` turns true (or its sender is dropped), then stops accepting
/// and lets in-flight requests finish for up to [`DRAIN_TIMEOUT`].
pub async fn serve(
    listener: TcpListener,
    tls: Arc<ServerConfig>,
    router: Arc<Router>,
    mut shutdown: watch::Receiver<bool>,
) {
    let acceptor = TlsAcceptor::from(tls);
    let graceful = GracefulShutdown::new();
    let mut builder = auto::Builder::new(FirstPollInline);
    // The timers make hyper enforce its HTTP/1 header-read timeout (a peer trickling headers is
    // dropped) and let HTTP/2 keep-alive pings find dead peers.
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(HANDSHAKE_TIMEOUT);
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(Some(KEEP_ALIVE_INTERVAL));
    if let Ok(address) = listener.local_addr() {
        tracing::info!(%address, "Serving metrics.k8s.io over HTTPS.");
    }
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(accepted) => accepted,
                    Err(error) => {
                        tracing::warn!(%error, "Accepting a connection failed.");
                        tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                        continue;
                    }
                };
                // Responses are small and latency matters more than packet count.
                let _ = stream.set_nodelay(true);
                let acceptor = acceptor.clone();
                let router = Arc::clone(&router);
                let builder = builder.clone();
                let watcher = graceful.watcher();
                tokio::spawn(async move {
                    let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                        Ok(Ok(tls)) => tls,
                        Ok(Err(error)) => {
                            tracing::debug!(%peer, %error, "TLS handshake failed.");
                            return;
                        }
                        Err(_) => {
                            tracing::debug!(%peer, "TLS handshake timed out.");
                            return;
                        }
                    };
                    // Shared by the connection's requests, not copied into each.
                    let peer_certificates = PeerCertificates(
                        tls.get_ref()
                            .1
                            .peer_certificates()
                            .map(Arc::from)
                            .unwrap_or_default(),
                    );
                    let service = service_fn(move |mut request: hyper::Request<hyper::body::Incoming>| {
                        let router = Arc::clone(&router);
                        // Always inserted (empty without a chain), so nothing the client sends can
                        // stand in for it.
                        request.extensions_mut().insert(peer_certificates.clone());
                        async move { Ok::<_, Infallible>(router.handle(request).await) }
                    });
                    // Responses over HTTP/2 are gathered into few writes (see `batched_writes`).
                    let gathering = tls.get_ref().1.alpn_protocol() == Some(b"h2".as_slice());
                    let turns = Turns::default();
                    let io = BatchedWrites::new(tls, turns.clone(), gathering);
                    let connection = builder.serve_connection(TokioIo::new(io), service).into_owned();
                    if let Err(error) = counting_turns(turns, watcher.watch(connection)).await {
                        tracing::debug!(%peer, %error, "Connection ended with an error.");
                    }
                });
            }
            changed = shutdown.changed() => {
                // A dropped sender means the owner is gone: stop as if asked.
                if changed.is_err() || *shutdown.borrow() {
                    break;
                }
            }
        }
    }
    drop(listener);
    tracing::info!("Stopped accepting connections; draining.");
    tokio::select! {
        () = graceful.shutdown() => tracing::info!("All connections closed."),
        () = tokio::time::sleep(DRAIN_TIMEOUT) => tracing::warn!("Connections still open after the drain timeout."),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("metrics-server-test-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    #[tokio::test]
    async fn a_stream_that_finishes_in_its_first_poll_runs_inline_and_one_that_waits_as_a_task() {
        use hyper::rt::Executor;
        use std::sync::atomic::AtomicBool;

        let finished = Arc::new(AtomicBool::new(false));
        let done = Arc::clone(&finished);
        FirstPollInline.execute(async move { done.store(true, Ordering::SeqCst) });
        assert!(
            finished.load(Ordering::SeqCst),
            "a stream that needs nothing ran before `execute` returned"
        );

        let (answer, waiting) = tokio::sync::oneshot::channel::<u32>();
        let (result, outcome) = tokio::sync::oneshot::channel::<u32>();
        FirstPollInline.execute(async move {
            let value = waiting.await.unwrap_or(0);
            let _ = result.send(value + 1);
        });
        // The waiting stream went on as a task: what it waits for arrives later and it finishes.
        answer.send(41).unwrap();
        let value = tokio::time::timeout(Duration::from_secs(10), outcome)
            .await
            .expect("the spawned stream finished")
            .unwrap();
        assert_eq!(value, 42);

        // A panic in the first poll stays in its stream (its message goes to the test's
        // captured output).
        FirstPollInline.execute(async { panic!("a handler bug") });
    }

    #[test]
    fn a_generated_pair_is_written_once_and_reused() {
        let dir = temp_dir("certs");
        let (cert, key) = ensure_self_signed(&dir).unwrap();
        let first = std::fs::read(&cert).unwrap();
        let (cert_again, _) = ensure_self_signed(&dir).unwrap();
        assert_eq!(cert, cert_again);
        assert_eq!(std::fs::read(&cert_again).unwrap(), first);
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&key).unwrap().permissions().mode();
        assert_eq!(mode & 0o077, 0, "the key must not be readable by others");
        let config = tls_config(&TlsSettings {
            cert_dir: dir.clone(),
            ..TlsSettings::default()
        })
        .unwrap();
        assert_eq!(
            config.alpn_protocols,
            vec![b"h2".to_vec(), b"http/1.1".to_vec()]
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_missing_certificate_file_is_a_typed_error() {
        let settings = TlsSettings {
            cert_file: Some(PathBuf::from("/nonexistent/tls.crt")),
            key_file: Some(PathBuf::from("/nonexistent/tls.key")),
            ..TlsSettings::default()
        };
        assert!(matches!(
            tls_config(&settings),
            Err(ServerError::Read { .. })
        ));
    }

    #[test]
    fn cipher_suites_restrict_tls12_and_keep_tls13() {
        let provider = provider(&[
            "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256".to_owned(),
            "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305".to_owned(),
            "TLS_RSA_WITH_AES_128_GCM_SHA256".to_owned(),
        ])
        .unwrap();
        let names: Vec<String> = provider
            .cipher_suites
            .iter()
            .map(|s| format!("{:?}", s.suite()))
            .collect();
        assert!(names.contains(&"TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256".to_owned()));
        assert!(names.contains(&"TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256".to_owned()));
        assert!(!names.contains(&"TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384".to_owned()));
        assert!(names.iter().any(|n| n.starts_with("TLS13_")));
    }
}
