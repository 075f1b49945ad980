//! One persistent connection to one kubelet, and the `GET` that a scrape is.
//!
//! The connection is opened on first use and kept: HTTP/2 when the kubelet negotiates `h2` by ALPN
//! (one connection carries every scrape), else HTTP/1.1 keep-alive.
//!
//! HTTP/2 is spoken by [`super::http2`] from the scraper's own task: a scrape is one `GET` at a
//! time, so no task drives the connection between scrapes and nothing is buffered while it is
//! idle; the body is read from the TLS stream straight into the scrape's buffer. HTTP/1.1 goes
//! through hyper. A connection that failed, timed out or was closed by the kubelet is dropped and
//! the next scrape opens a new one. The client owns no timer: the caller bounds each
//! [`KubeletClient::fetch`] with the request timeout.

use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use hyper::client::conn::http1;
use hyper::header::{HeaderMap, HeaderValue, ACCEPT, AUTHORIZATION, CONTENT_LENGTH, HOST};
use hyper::{Request, Response, Uri};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::sync::{oneshot, OwnedSemaphorePermit, Semaphore};
use tokio_rustls::client::TlsStream;

use super::buffer;
use super::http2::{self, Http2Connection, RequestBlock};
use super::read_ahead::ReadAhead;
use super::tls::{self, KubeletTls, ALPN_H2};
use super::{NodeCounters, Protocol, ScrapeFailure};
use crate::model::ScrapeTarget;

/// A live connection. Dropping it closes the socket (for HTTP/1.1, the `close` sender's drop ends
/// the task that drives the connection, even if the kubelet never answers again).
enum Connection {
    /// Boxed: a TLS session is large, and the connection moves in and out of the client.
    Http2(Box<Http2Connection<TlsStream<ReadAhead<TcpStream>>>>),
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
    /// The request, built once: HTTP/2's header block and HTTP/1.1's URI and `Host`.
    /// `None` when the target does not make a valid URI; every fetch then fails with `Address`.
    request: Option<RequestParts>,
    /// Shared by every scraper: bounds the TLS handshakes in progress at once.
    connect_limit: Option<Arc<Semaphore>>,
    connection: Option<Connection>,
    counters: Arc<NodeCounters>,
}

/// The parts of a scrape request that never change for a target.
struct RequestParts {
    /// The HTTP/2 header block (`:authority` and `:path` included).
    http2: RequestBlock,
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
        let request = RequestParts::new(&authority, &target.path, tls.authorization.as_ref());
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
        let (mut connection, answer) = match reused {
            Some(mut connection) => match self.send(&mut connection).await {
                Ok(answer) => (connection, answer),
                // The kubelet may close an idle connection just as a request goes out; that is not
                // the kubelet failing, so one fresh connection gets the same request.
                Err(_) => {
                    let mut connection = self.connect(turn.take()).await?;
                    let answer = self.send(&mut connection).await?;
                    (connection, answer)
                }
            },
            None => {
                let mut connection = self.connect(turn.take()).await?;
                let answer = self.send(&mut connection).await?;
                (connection, answer)
            }
        };
        let status = answer.status();
        if !(200..300).contains(&status) {
            // Drained (bounded) so the connection stays usable for the next scrape.
            if read_body(&mut connection, answer, self.max_body_bytes, body)
                .await
                .is_ok()
            {
                self.keep(connection);
            }
            body.clear();
            return Err(ScrapeFailure::Status(status));
        }
        read_body(&mut connection, answer, self.max_body_bytes, body).await?;
        self.keep(connection);
        Ok(())
    }

    /// Keeps a connection that finished an exchange cleanly for the next scrape, unless the
    /// kubelet announced it is closing it. An idle HTTP/2 connection gives its TLS read buffer
    /// back: nothing is read until the next scrape.
    fn keep(&mut self, mut connection: Connection) {
        if let Connection::Http2(http2) = &mut connection {
            if !http2.is_reusable() {
                return;
            }
            tls::release_read_buffer(http2.io_mut().get_mut().1);
        }
        self.connection = Some(connection);
    }

    /// Sends the request and waits for the answer's head.
    async fn send(&self, connection: &mut Connection) -> Result<Answer, ScrapeFailure> {
        let parts = self
            .request
            .as_ref()
            .ok_or_else(|| ScrapeFailure::Address(self.authority.clone()))?;
        match connection {
            Connection::Http2(http2) => http2
                .send(&parts.http2)
                .await
                .map(Answer::Http2)
                .map_err(ScrapeFailure::Http2),
            Connection::Http1 { sender, .. } => {
                let mut headers = HeaderMap::with_capacity(3);
                headers.insert(ACCEPT, HeaderValue::from_static("text/plain"));
                if let Some(value) = &self.tls.authorization {
                    headers.insert(AUTHORIZATION, value.clone());
                }
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
            .connect(server_name, ReadAhead::new(tcp))
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
        let connection = if h2 {
            let connection = Http2Connection::handshake(stream)
                .await
                .map_err(ScrapeFailure::Http2)?;
            self.counters.connection_opened(Protocol::Http2);
            Connection::Http2(Box::new(connection))
        } else {
            let (close, closed) = oneshot::channel::<()>();
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
        // A GOAWAY read during the last exchange retired it; one sent since is found on use.
        Connection::Http2(http2) => http2.is_reusable(),
        Connection::Http1 { sender, .. } => !sender.is_closed() && sender.ready().await.is_ok(),
    };
    ok.then_some(connection)
}

/// The head of a kubelet's answer, its body still to be read.
enum Answer {
    Http2(http2::Head),
    Http1(Response<Incoming>),
}

// === impl Answer ===

impl Answer {
    fn status(&self) -> u16 {
        match self {
            Answer::Http2(head) => head.status,
            Answer::Http1(response) => response.status().as_u16(),
        }
    }

    /// The length the kubelet declared, if any.
    fn content_length(&self) -> Option<u64> {
        match self {
            Answer::Http2(head) => head.content_length,
            Answer::Http1(response) => response
                .headers()
                .get(CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<u64>().ok()),
        }
    }
}

/// Reads the body of `answer`, received on `connection`, into `body`, failing as soon as it
/// would exceed `limit` bytes.
async fn read_body(
    connection: &mut Connection,
    answer: Answer,
    limit: usize,
    body: &mut BytesMut,
) -> Result<(), ScrapeFailure> {
    body.clear();
    let declared = answer.content_length();
    if declared.is_some_and(|len| len > limit as u64) {
        return Err(ScrapeFailure::BodyTooLarge { limit });
    }
    // `len <= limit` here, and `limit` is a usize, so the cast cannot truncate.
    let capacity = declared
        .map_or(buffer::INITIAL_CAPACITY, |len| len as usize)
        .min(limit);
    body.reserve(capacity);
    match (connection, answer) {
        (Connection::Http2(http2), Answer::Http2(head)) => http2
            .read_body(&head, body, limit)
            .await
            .map_err(|error| match error {
                http2::Http2Error::BodyTooLarge { limit } => ScrapeFailure::BodyTooLarge { limit },
                error => ScrapeFailure::Http2(error),
            }),
        (Connection::Http1 { .. }, Answer::Http1(response)) => {
            let mut incoming = response.into_body();
            while let Some(frame) = incoming.frame().await {
                let frame = frame.map_err(ScrapeFailure::Http)?;
                if let Ok(data) = frame.into_data() {
                    if body.len() + data.len() > limit {
                        return Err(ScrapeFailure::BodyTooLarge { limit });
                    }
                    body.extend_from_slice(&data);
                }
            }
            Ok(())
        }
        // An answer always comes from the connection it is read on.
        _ => Err(ScrapeFailure::Http2(http2::Http2Error::Protocol(
            "answer read on another connection",
        ))),
    }
}

// === impl RequestParts ===

impl RequestParts {
    fn new(authority: &str, path: &str, authorization: Option<&HeaderValue>) -> Option<Self> {
        // Parsed as a URI to refuse what HTTP/1.1 would refuse, for both protocols alike.
        Uri::try_from(format!("https://{authority}{path}")).ok()?;
        Some(RequestParts {
            http2: RequestBlock::new(authority, path, authorization.map(HeaderValue::as_bytes)),
            origin: Uri::try_from(path).ok()?,
            host: HeaderValue::try_from(authority).ok()?,
        })
    }
}
