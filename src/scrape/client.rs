//! One persistent connection to one kubelet, and the `GET` that a scrape is.
//!
//! The connection is opened on first use and kept: HTTP/2 when the kubelet negotiates `h2` by ALPN
//! (one connection carries every scrape), else HTTP/1.1 keep-alive.
//!
//! HTTP/2 is spoken through `h2` directly rather than through hyper's client: a scrape is one
//! `GET` at a time, so the scraper's own task can drive the request and read the body itself.
//! That saves, per scrape, hyper's request channel, its dispatch task's wake-up and the task it
//! spawns per request; per connection, the dispatch task. One task per connection remains, the
//! one that reads and writes the socket. A connection that failed, timed
//! out or was closed by the kubelet is dropped and the next scrape opens a new one. The client owns
//! no timer: the caller bounds each [`KubeletClient::fetch`] with the request timeout.

use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use hyper::client::conn::http1;
use hyper::header::{HeaderMap, HeaderValue, ACCEPT, AUTHORIZATION, CONTENT_LENGTH, HOST};
use hyper::{Request, Response, StatusCode, Uri};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::sync::{oneshot, OwnedSemaphorePermit, Semaphore};

use super::buffer;
use super::tls::{self, KubeletTls, ALPN_H2};
use super::{NodeCounters, Protocol, ScrapeFailure};
use crate::model::ScrapeTarget;

/// A live connection. Dropping it closes the socket: the `close` sender's drop ends the task that
/// drives the connection, even if the kubelet never answers again.
enum Connection {
    Http2 {
        sender: h2::client::SendRequest<Bytes>,
        _close: oneshot::Sender<()>,
    },
    Http1 {
        sender: http1::SendRequest<Empty<Bytes>>,
        _close: oneshot::Sender<()>,
    },
}

/// A kubelet client for one target.
pub struct KubeletClient {
    target: ScrapeTarget,
    tls: KubeletTls,
    max_body_bytes: usize,
    /// `host:port`, with IPv6 hosts bracketed, as it goes in URIs and `Host`.
    authority: String,
    /// The request URIs and `Host`, built once: a scrape clones them (reference counts only).
    /// `None` when the target does not make a valid URI; every fetch then fails with `Address`.
    request: Option<RequestParts>,
    /// Shared by every scraper: bounds the TLS handshakes in progress at once.
    connect_limit: Option<Arc<Semaphore>>,
    connection: Option<Connection>,
    counters: Arc<NodeCounters>,
}

/// The parts of a scrape request that never change for a target.
struct RequestParts {
    /// Absolute form: HTTP/2 takes the authority from the URI (`:authority`).
    absolute: Uri,
    /// Origin form, for HTTP/1.1, with `host` in its own header.
    origin: Uri,
    host: HeaderValue,
}

// === impl KubeletClient ===

impl KubeletClient {
    pub(crate) fn new(
        target: ScrapeTarget,
        tls: KubeletTls,
        max_body_bytes: usize,
        connect_limit: Option<Arc<Semaphore>>,
        counters: Arc<NodeCounters>,
    ) -> Self {
        let authority = if target.host.contains(':') && !target.host.starts_with('[') {
            format!("[{}]:{}", target.host, target.port)
        } else {
            format!("{}:{}", target.host, target.port)
        };
        let request = RequestParts::new(&authority, &target.path);
        KubeletClient {
            target,
            tls,
            max_body_bytes,
            authority,
            request,
            connect_limit,
            connection: None,
            counters,
        }
    }

    /// Whether a connection is currently held (it may still turn out closed on next use).
    pub fn is_connected(&self) -> bool {
        self.connection.is_some()
    }

    /// Closes the connection; the next fetch opens a new one.
    pub fn disconnect(&mut self) {
        self.connection = None;
    }

    /// Requests the target's path and returns the whole body. On any error the connection is
    /// dropped unless it is known to be reusable (a complete non-2xx answer).
    pub async fn fetch(&mut self) -> Result<Bytes, ScrapeFailure> {
        let mut body = BytesMut::new();
        self.fetch_into(&mut body).await?;
        Ok(body.freeze())
    }

    /// [`KubeletClient::fetch`] into a caller's buffer, which is cleared first; on error its
    /// content is unspecified. Lets the caller reuse one buffer for many scrapes.
    pub async fn fetch_into(&mut self, body: &mut BytesMut) -> Result<(), ScrapeFailure> {
        self.fetch_with_turn(body, None).await
    }

    /// A turn at handshaking, if handshakes are bounded and this client will need one (it holds
    /// no connection). Waited for before the scrape's own timeout starts, so a node that waited
    /// long for its turn still has the whole request timeout for its handshake and request.
    pub(crate) async fn handshake_turn(&self) -> Option<OwnedSemaphorePermit> {
        if self.connection.is_some() {
            return None;
        }
        // A closed semaphore (never closed today) means no limit.
        self.connect_limit.clone()?.acquire_owned().await.ok()
    }

    /// [`KubeletClient::fetch_into`], connecting (if it must) on `turn` when given, else on a
    /// turn it waits for itself. The turn is given back as soon as the connection is ready, or
    /// when this future ends or is dropped.
    pub(crate) async fn fetch_with_turn(
        &mut self,
        body: &mut BytesMut,
        mut turn: Option<OwnedSemaphorePermit>,
    ) -> Result<(), ScrapeFailure> {
        body.clear();
        // Taken out for the exchange: if this future is dropped (timeout) or fails, the connection
        // goes with it, and only a connection that finished the exchange cleanly is put back.
        let reused = match self.connection.take() {
            Some(connection) => ready(connection).await,
            None => None,
        };
        let (connection, response) = match reused {
            Some(mut connection) => match self.send(&mut connection).await {
                Ok(response) => (connection, response),
                // The kubelet may close an idle connection just as a request goes out; that is not
                // the kubelet failing, so one fresh connection gets the same request.
                Err(_) => {
                    let mut connection = self.connect(turn.take()).await?;
                    let response = self.send(&mut connection).await?;
                    (connection, response)
                }
            },
            None => {
                let mut connection = self.connect(turn.take()).await?;
                let response = self.send(&mut connection).await?;
                (connection, response)
            }
        };
        let status = response.status();
        if !status.is_success() {
            // Drained (bounded) so an HTTP/1.1 connection stays usable for the next scrape.
            if read_body(response, self.max_body_bytes, body).await.is_ok() {
                self.connection = Some(connection);
            }
            body.clear();
            return Err(ScrapeFailure::Status(status.as_u16()));
        }
        read_body(response, self.max_body_bytes, body).await?;
        self.connection = Some(connection);
        Ok(())
    }

    /// Sends the request and waits for the answer's head.
    async fn send(&self, connection: &mut Connection) -> Result<Answer, ScrapeFailure> {
        let parts = self
            .request
            .as_ref()
            .ok_or_else(|| ScrapeFailure::Address(self.authority.clone()))?;
        let mut headers = HeaderMap::with_capacity(3);
        headers.insert(ACCEPT, HeaderValue::from_static("text/plain"));
        if let Some(value) = &self.tls.authorization {
            headers.insert(AUTHORIZATION, value.clone());
        }
        match connection {
            Connection::Http2 { sender, .. } => {
                let mut request = Request::new(());
                *request.uri_mut() = parts.absolute.clone();
                *request.headers_mut() = headers;
                // Ends the stream with the headers: a GET has no body.
                let (response, _) = sender
                    .send_request(request, true)
                    .map_err(ScrapeFailure::Http2)?;
                response
                    .await
                    .map(Answer::Http2)
                    .map_err(ScrapeFailure::Http2)
            }
            Connection::Http1 { sender, .. } => {
                headers.insert(HOST, parts.host.clone());
                let mut request = Request::new(Empty::new());
                *request.uri_mut() = parts.origin.clone();
                *request.headers_mut() = headers;
                sender
                    .send_request(request)
                    .await
                    .map(Answer::Http1)
                    .map_err(ScrapeFailure::Http)
            }
        }
    }

    async fn connect(
        &self,
        turn: Option<OwnedSemaphorePermit>,
    ) -> Result<Connection, ScrapeFailure> {
        let server_name = tls::server_name(&self.target.host)
            .ok_or_else(|| ScrapeFailure::Address(self.target.host.clone()))?;
        let host = self
            .target
            .host
            .trim_start_matches('[')
            .trim_end_matches(']');
        let tcp = TcpStream::connect((host, self.target.port))
            .await
            .map_err(|source| ScrapeFailure::Connect {
                address: self.authority.clone(),
                source,
            })?;
        // A turn covers the TLS handshake and the HTTP/2 preface, the part of a connect that
        // costs CPU, not the TCP connect: a kubelet that does not answer SYNs (a powered-off
        // node) holds no turn. It is held until the connection is ready for requests and no
        // longer; the caller's timeout drops this future and the turn with it, so a kubelet that
        // stalls its handshake holds a turn for at most the request timeout. (The handshake
        // future, which owns the socket, is dropped before the turn: the socket is closed before
        // the turn passes on.)
        let _turn = match turn {
            Some(turn) => Some(turn),
            None => self.handshake_turn().await,
        };
        // Requests are small and latency matters more than packet count.
        let _ = tcp.set_nodelay(true);
        let stream = self
            .tls
            .connector
            .connect(server_name, tcp)
            .await
            .map_err(|error| {
                match tls::name_mismatch_message(&self.target.node, &self.target.host, &error) {
                    Some(message) => ScrapeFailure::CertificateName(message),
                    None => ScrapeFailure::Tls {
                        address: self.authority.clone(),
                        message: error.to_string(),
                    },
                }
            })?;
        let h2 = stream.get_ref().1.alpn_protocol() == Some(ALPN_H2);
        let (close, closed) = oneshot::channel::<()>();
        let connection = if h2 {
            let (sender, driver) = h2_builder()
                .handshake::<_, Bytes>(stream)
                .await
                .map_err(ScrapeFailure::Http2)?;
            tokio::spawn(async move {
                tokio::select! {
                    // Work: the connection ran until the kubelet or an error closed it.
                    _ = driver => {}
                    // Shutdown: the client dropped the connection.
                    _ = closed => {}
                }
            });
            self.counters.connection_opened(Protocol::Http2);
            Connection::Http2 {
                sender,
                _close: close,
            }
        } else {
            let (sender, driver) = http1::handshake(TokioIo::new(stream))
                .await
                .map_err(ScrapeFailure::Http)?;
            tokio::spawn(async move {
                tokio::select! {
                    _ = driver => {}
                    _ = closed => {}
                }
            });
            self.counters.connection_opened(Protocol::Http1);
            Connection::Http1 {
                sender,
                _close: close,
            }
        };
        tracing::debug!(node = %self.target.node, address = %self.authority, http2 = h2, "Connected to kubelet.");
        Ok(connection)
    }
}

/// The connection if it can take a request now; `None` if the kubelet closed it (for example its
/// idle timeout), so the caller reconnects instead of failing the scrape.
async fn ready(mut connection: Connection) -> Option<Connection> {
    let ok = match &mut connection {
        // A connection the kubelet closed or sent GOAWAY on reports an error here.
        Connection::Http2 { sender, .. } => std::future::poll_fn(|cx| sender.poll_ready(cx))
            .await
            .is_ok(),
        Connection::Http1 { sender, .. } => !sender.is_closed() && sender.ready().await.is_ok(),
    };
    ok.then_some(connection)
}

/// The head of a kubelet's answer, its body still to be read.
enum Answer {
    Http2(Response<h2::RecvStream>),
    Http1(Response<Incoming>),
}

// === impl Answer ===

impl Answer {
    fn status(&self) -> StatusCode {
        match self {
            Answer::Http2(response) => response.status(),
            Answer::Http1(response) => response.status(),
        }
    }

    fn headers(&self) -> &HeaderMap {
        match self {
            Answer::Http2(response) => response.headers(),
            Answer::Http1(response) => response.headers(),
        }
    }
}

/// Reads a body into `body`, failing as soon as it would exceed `limit` bytes.
async fn read_body(answer: Answer, limit: usize, body: &mut BytesMut) -> Result<(), ScrapeFailure> {
    body.clear();
    let declared = answer
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > limit as u64) {
        return Err(ScrapeFailure::BodyTooLarge { limit });
    }
    // `len <= limit` here, and `limit` is a usize, so the cast cannot truncate.
    let capacity = declared
        .map_or(buffer::INITIAL_CAPACITY, |len| len as usize)
        .min(limit);
    body.reserve(capacity);
    let append = |body: &mut BytesMut, data: &[u8]| {
        if body.len() + data.len() > limit {
            return Err(ScrapeFailure::BodyTooLarge { limit });
        }
        body.extend_from_slice(data);
        Ok(())
    };
    match answer {
        Answer::Http2(response) => {
            let mut stream = response.into_body();
            while let Some(data) = stream.data().await {
                let data = data.map_err(ScrapeFailure::Http2)?;
                // The bytes are copied out at once, so the window is given back at once and the
                // kubelet never waits on it. An error means the stream is already gone; the next
                // `data` reports why.
                let _ = stream.flow_control().release_capacity(data.len());
                append(body, &data)?;
            }
        }
        Answer::Http1(response) => {
            let mut incoming = response.into_body();
            while let Some(frame) = incoming.frame().await {
                let frame = frame.map_err(ScrapeFailure::Http)?;
                if let Ok(data) = frame.into_data() {
                    append(body, &data)?;
                }
            }
        }
    }
    Ok(())
}

/// HTTP/2 settings towards kubelets. One request at a time, a body of tens of KiB: windows large
/// enough that a body never waits on a window update (windows cost nothing until data arrives,
/// and a body is read as it arrives), no server push, and a send buffer sized for one small
/// request rather than an upload.
fn h2_builder() -> h2::client::Builder {
    let mut builder = h2::client::Builder::new();
    builder
        .enable_push(false)
        .initial_window_size(1 << 20)
        .initial_connection_window_size(2 << 20)
        .max_send_buffer_size(16 * 1024)
        .max_header_list_size(16 * 1024)
        .max_concurrent_reset_streams(8);
    builder
}

// === impl RequestParts ===

impl RequestParts {
    fn new(authority: &str, path: &str) -> Option<Self> {
        Some(RequestParts {
            absolute: Uri::try_from(format!("https://{authority}{path}")).ok()?,
            origin: Uri::try_from(path).ok()?,
            host: HeaderValue::try_from(authority).ok()?,
        })
    }
}
