//! Serving: accepting connections, picking the node by the dialled address, TLS, HTTP/2 and
//! HTTP/1.1, authentication, and the `/metrics/resource` answer with its faults.
//!
//! One listening socket serves every node: the accepted connection's local address (what the client
//! dialled) names the node. This keeps the fleet at one file descriptor per connection, which is
//! what lets 10,000 kubelets fit under a 20,000 open-file limit.

use std::collections::{HashMap, VecDeque};
use std::convert::Infallible;
use std::future::Future as _;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, RwLock};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{header, Request, Response, StatusCode};
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::fault::Fault;
use super::sim::mix;
use super::{now_ms, KubeletNode};

/// Which nodes answer on which local address.
#[derive(Debug, Default)]
pub struct NodeTable {
    /// std RwLock: read once per accepted connection, written on node churn; never held across
    /// an await.
    by_addr: RwLock<HashMap<SocketAddr, Arc<KubeletNode>>>,
}

impl NodeTable {
    pub fn insert(&self, node: Arc<KubeletNode>) {
        self.write().insert(node.addr, node);
    }

    pub fn remove(&self, addr: &SocketAddr) -> Option<Arc<KubeletNode>> {
        self.write().remove(addr)
    }

    pub fn get(&self, addr: &SocketAddr) -> Option<Arc<KubeletNode>> {
        self.by_addr
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(addr)
            .cloned()
    }

    pub fn all(&self) -> Vec<Arc<KubeletNode>> {
        self.by_addr
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .cloned()
            .collect()
    }

    pub fn len(&self) -> usize {
        self.by_addr.read().unwrap_or_else(|e| e.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<SocketAddr, Arc<KubeletNode>>> {
        self.by_addr.write().unwrap_or_else(|e| e.into_inner())
    }
}

/// How requests must authenticate.
#[derive(Clone, Debug)]
pub struct AuthPolicy {
    /// Reject requests with neither a verified client certificate nor the token (like a kubelet
    /// with anonymous auth disabled).
    pub required: bool,
    /// The accepted bearer token.
    pub token: String,
}

/// What every connection task shares.
pub struct ServeContext {
    pub nodes: Arc<NodeTable>,
    pub auth: AuthPolicy,
    /// Unrelated series appended by the multi-megabyte fault, made on first use and shared.
    pub padding: std::sync::OnceLock<Bytes>,
    /// Upper bound of the padding, bytes.
    pub padding_limit: usize,
    /// Connections with no bytes moving for this long are closed gracefully (the kubelet's Go
    /// server closes idle connections after 90 s); `None` keeps them forever.
    pub idle_timeout: Option<Duration>,
    pub shutdown: CancellationToken,
    pub tracker: TaskTracker,
}

/// How long a client may take to finish the TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Accepts connections until shutdown (or until `only` is removed, for a per-node listener).
pub async fn accept_loop(
    listener: TcpListener,
    ctx: Arc<ServeContext>,
    only: Option<Arc<KubeletNode>>,
) {
    let node_gone = only.as_ref().map(|n| n.gone.clone()).unwrap_or_default();
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = ctx.shutdown.cancelled() => return,
            _ = node_gone.cancelled() => return,
        };
        match accepted {
            Ok((stream, peer)) => {
                let ctx2 = ctx.clone();
                ctx.tracker
                    .spawn(async move { serve_connection(stream, peer, ctx2).await });
            }
            Err(error) => {
                // Running out of descriptors is transient: back off instead of spinning.
                tracing::warn!(%error, "Accept failed.");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

async fn serve_connection(stream: TcpStream, peer: SocketAddr, ctx: Arc<ServeContext>) {
    let Ok(local) = stream.local_addr() else {
        return;
    };
    let Some(node) = ctx.nodes.get(&local) else {
        tracing::debug!(%local, %peer, "Connection to an address no node has; closing.");
        return;
    };
    let _ = stream.set_nodelay(true);
    let acceptor = TlsAcceptor::from(node.tls_config());
    let tls = tokio::select! {
        tls = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)) => tls,
        _ = node.gone.cancelled() => return,
        _ = ctx.shutdown.cancelled() => return,
    };
    let tls = match tls {
        Ok(Ok(tls)) => tls,
        Ok(Err(error)) => {
            tracing::debug!(node = %node.name, %peer, %error, "TLS handshake failed.");
            return;
        }
        Err(_) => {
            tracing::debug!(node = %node.name, %peer, "TLS handshake timed out.");
            return;
        }
    };
    node.counters.connections.fetch_add(1, Ordering::Relaxed);
    let client_cert = tls.get_ref().1.peer_certificates().is_some();
    let service = {
        let node = node.clone();
        let ctx = ctx.clone();
        service_fn(move |req| {
            let node = node.clone();
            let ctx = ctx.clone();
            async move { Ok::<_, Infallible>(handle(req, &node, &ctx, client_cert).await) }
        })
    };
    let last_activity = Arc::new(AtomicI64::new(now_ms()));
    let io = Tracked {
        inner: tls,
        last: last_activity.clone(),
    };
    let builder = auto::Builder::new(TokioExecutor::new());
    let conn = builder.serve_connection(TokioIo::new(io), service);
    tokio::pin!(conn);
    let idle_ms = ctx.idle_timeout.map(|d| d.as_millis() as i64);
    let mut check = tokio::time::interval(
        ctx.idle_timeout
            .map(|d| (d / 4).max(Duration::from_millis(10)))
            .unwrap_or(Duration::from_secs(3600)),
    );
    let mut closing = false;
    loop {
        tokio::select! {
            result = conn.as_mut() => {
                if let Err(error) = result {
                    tracing::debug!(node = %node.name, %peer, %error, "Connection ended with an error.");
                }
                return;
            }
            _ = check.tick(), if idle_ms.is_some() && !closing => {
                let idle = now_ms() - last_activity.load(Ordering::Relaxed);
                if idle_ms.is_some_and(|limit| idle >= limit) {
                    tracing::debug!(node = %node.name, %peer, idle_ms = idle, "Closing an idle connection.");
                    conn.as_mut().graceful_shutdown();
                    closing = true;
                }
            }
            _ = node.gone.cancelled() => return,
            _ = ctx.shutdown.cancelled() => return,
        }
    }
}

/// A connection's byte stream, noting when bytes last moved.
struct Tracked<S> {
    inner: S,
    /// Unix milliseconds of the last read or write.
    last: Arc<AtomicI64>,
}

impl<S: AsyncRead + Unpin> AsyncRead for Tracked<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let result = Pin::new(&mut this.inner).poll_read(cx, buf);
        if matches!(result, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            this.last.store(now_ms(), Ordering::Relaxed);
        }
        result
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Tracked<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        let result = Pin::new(&mut this.inner).poll_write(cx, buf);
        if matches!(result, Poll::Ready(Ok(n)) if n > 0) {
            this.last.store(now_ms(), Ordering::Relaxed);
        }
        result
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        let result = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        if matches!(result, Poll::Ready(Ok(n)) if n > 0) {
            this.last.store(now_ms(), Ordering::Relaxed);
        }
        result
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

fn text(status: StatusCode, body: &'static str) -> Response<FleetBody> {
    let mut response = Response::new(FleetBody::full(Bytes::from_static(body.as_bytes())));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

fn authorized(req: &Request<Incoming>, auth: &AuthPolicy, client_cert: bool) -> bool {
    if !auth.required || client_cert {
        return true;
    }
    req.headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .is_some_and(|token| token.trim() == auth.token)
}

async fn handle(
    req: Request<Incoming>,
    node: &KubeletNode,
    ctx: &ServeContext,
    client_cert: bool,
) -> Response<FleetBody> {
    node.counters.requests.fetch_add(1, Ordering::Relaxed);
    let path = req.uri().path();
    if path == "/healthz" {
        return text(StatusCode::OK, "ok");
    }
    if !authorized(&req, &ctx.auth, client_cert) {
        return text(StatusCode::UNAUTHORIZED, "Unauthorized");
    }
    if path != "/metrics/resource" {
        return text(StatusCode::NOT_FOUND, "404 page not found\n");
    }
    if req.method() != http::Method::GET && req.method() != http::Method::HEAD {
        return text(StatusCode::METHOD_NOT_ALLOWED, "Method Not Allowed\n");
    }
    let fault = node.fault();
    let mut skew = 0;
    match fault {
        Some(Fault::Slow(delay)) => {
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = node.gone.cancelled() => return text(StatusCode::SERVICE_UNAVAILABLE, "gone"),
                _ = ctx.shutdown.cancelled() => return text(StatusCode::SERVICE_UNAVAILABLE, "gone"),
            }
        }
        Some(Fault::Hang) => {
            // Hangs until the node or the fleet goes away; the client gives up first.
            tokio::select! {
                _ = node.gone.cancelled() => {}
                _ = ctx.shutdown.cancelled() => {}
            }
            return text(StatusCode::SERVICE_UNAVAILABLE, "gone");
        }
        Some(Fault::ServerError) => {
            return text(
                StatusCode::INTERNAL_SERVER_ERROR,
                "Internal Error: failed to get stats\n",
            )
        }
        Some(Fault::Unauthorized) => return text(StatusCode::UNAUTHORIZED, "Unauthorized"),
        Some(Fault::Garbage) => {
            let mut junk = Vec::with_capacity(4096);
            let mut x = mix(node.index, &[now_ms() as u64]);
            while junk.len() < 4096 {
                x = mix(x, &[1]);
                junk.extend_from_slice(&x.to_le_bytes());
            }
            return metrics_response(FleetBody::full(Bytes::from(junk)));
        }
        Some(Fault::Skewed(ms)) => skew = ms,
        _ => {}
    }
    let rendered = node.rendered();
    let t_ms = now_ms() + skew;
    let evaluated = rendered.layout.evaluate(t_ms);
    let body = rendered.template.render(&evaluated);
    match fault {
        Some(Fault::Truncated) => {
            // Cut inside a line, past the headers, like a kubelet dying mid-write.
            let cut = body.len() / 2;
            metrics_response(FleetBody::full(body.slice(..cut)))
        }
        Some(Fault::ResetMidBody) => {
            let cut = body.len() / 2;
            metrics_response(FleetBody::reset_after(body.slice(..cut)))
        }
        Some(Fault::Huge(bytes)) => {
            node.record(rendered.clone(), t_ms);
            // Whole lines only, so the body stays valid exposition text.
            let padding_all = ctx.padding.get_or_init(|| padding(ctx.padding_limit));
            let want = bytes.min(padding_all.len());
            let cut = padding_all[..want]
                .iter()
                .rposition(|&b| b == b'\n')
                .map_or(0, |at| at + 1);
            metrics_response(FleetBody::chunks(vec![body, padding_all.slice(..cut)]))
        }
        _ => {
            node.record(rendered.clone(), t_ms);
            metrics_response(FleetBody::full(body))
        }
    }
}

fn metrics_response(body: FleetBody) -> Response<FleetBody> {
    let mut response = Response::new(body);
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    response
}

/// Padding lines for the multi-megabyte fault: a series no metrics server reads, about `bytes` long.
pub fn padding(bytes: usize) -> Bytes {
    let mut out = Vec::with_capacity(bytes + 128);
    out.extend_from_slice(
        b"# HELP kubelet_fleet_padding_bytes Filler that makes the body large.\n# TYPE kubelet_fleet_padding_bytes gauge\n",
    );
    let mut i = 0u64;
    while out.len() < bytes {
        let line = format!(
            "kubelet_fleet_padding_bytes{{index=\"{i}\",note=\"unrelated series padding the body\"}} {i}\n"
        );
        out.extend_from_slice(line.as_bytes());
        i += 1;
    }
    Bytes::from(out)
}

/// Why a body stopped early.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    #[error("connection reset by the simulated kubelet")]
    Reset,
}

/// A response body: some chunks, then either the end or a reset.
pub struct FleetBody {
    chunks: VecDeque<Bytes>,
    reset: bool,
    /// Sent chunks are flushed before the reset so the client really sees a partial body.
    pause: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl FleetBody {
    pub fn full(body: Bytes) -> Self {
        FleetBody::chunks(vec![body])
    }

    pub fn chunks(chunks: Vec<Bytes>) -> Self {
        FleetBody {
            chunks: chunks.into_iter().filter(|c| !c.is_empty()).collect(),
            reset: false,
            pause: None,
        }
    }

    fn reset_after(part: Bytes) -> Self {
        FleetBody {
            chunks: VecDeque::from([part]),
            reset: true,
            pause: None,
        }
    }
}

impl Body for FleetBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let this = self.get_mut();
        if let Some(chunk) = this.chunks.pop_front() {
            if this.reset {
                this.pause = Some(Box::pin(tokio::time::sleep(Duration::from_millis(50))));
            }
            return Poll::Ready(Some(Ok(Frame::data(chunk))));
        }
        if !this.reset {
            return Poll::Ready(None);
        }
        if let Some(pause) = this.pause.as_mut() {
            if pause.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
        }
        this.reset = false;
        Poll::Ready(Some(Err(BodyError::Reset)))
    }

    fn is_end_stream(&self) -> bool {
        self.chunks.is_empty() && !self.reset
    }

    fn size_hint(&self) -> SizeHint {
        if self.reset {
            return SizeHint::default();
        }
        SizeHint::with_exact(self.chunks.iter().map(|c| c.len() as u64).sum())
    }
}
