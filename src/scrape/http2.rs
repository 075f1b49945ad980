//! The HTTP/2 a scrape needs, spoken by the scraper's own task: one `GET` at a time on a
//! persistent connection, the body read straight into the caller's buffer.
//!
//! Owns the framing, flow control and header decoding of one kubelet connection; knows nothing
//! of TLS, timeouts or what a body means. Nothing runs between two scrapes: the connection holds
//! no read or write buffer while idle (only the header decoder's state, kept at zero by asking
//! the kubelet not to index response headers), so ten thousand idle connections cost what their
//! sockets and TLS sessions cost. Frames the kubelet sends meanwhile (settings, pings, a GOAWAY)
//! wait in the socket and are handled when the next scrape reads.
//!
//! A connection carries one stream at a time, so the only window that matters is the
//! connection's: both windows are opened to the maximum at the start, and the connection's is
//! topped up as bodies arrive. A failed or abandoned exchange leaves the connection in an unknown
//! state: the caller drops it (dropping a half-done future is how a timeout ends an exchange).

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::hpack::HeaderDecoder;

/// What a client sends first on every HTTP/2 connection (RFC 9113, section 3.4).
pub const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

pub const FRAME_HEADER_LEN: usize = 9;
/// The frame size every peer must accept; this client does not advertise more.
pub const MAX_RECV_FRAME: usize = 16_384;
/// The largest window either side may open (2^31 - 1).
pub const MAX_WINDOW: u32 = (1 << 31) - 1;
/// A window's starting size before any settings or updates.
pub const DEFAULT_WINDOW: u32 = 65_535;
/// Received bytes after which the connection window is topped up: half the window, so the kubelet
/// never waits on it.
pub const WINDOW_REFILL: u32 = 1 << 30;
/// A response header block larger than this (after CONTINUATION frames) fails the exchange.
const MAX_HEADER_BLOCK: usize = 64 * 1024;

/// Frame types and flags (RFC 9113, section 6).
pub mod frame {
    pub const DATA: u8 = 0x0;
    pub const HEADERS: u8 = 0x1;
    pub const RST_STREAM: u8 = 0x3;
    pub const SETTINGS: u8 = 0x4;
    pub const PUSH_PROMISE: u8 = 0x5;
    pub const PING: u8 = 0x6;
    pub const GOAWAY: u8 = 0x7;
    pub const WINDOW_UPDATE: u8 = 0x8;
    pub const CONTINUATION: u8 = 0x9;

    pub const END_STREAM: u8 = 0x1;
    pub const ACK: u8 = 0x1;
    pub const END_HEADERS: u8 = 0x4;
    pub const PADDED: u8 = 0x8;
    pub const PRIORITY: u8 = 0x20;
}

/// Setting identifiers (RFC 9113, section 6.5.2).
pub mod setting {
    pub const HEADER_TABLE_SIZE: u16 = 0x1;
    pub const ENABLE_PUSH: u16 = 0x2;
    pub const MAX_CONCURRENT_STREAMS: u16 = 0x3;
    pub const INITIAL_WINDOW_SIZE: u16 = 0x4;
    pub const MAX_FRAME_SIZE: u16 = 0x5;
    pub const MAX_HEADER_LIST_SIZE: u16 = 0x6;
}

/// Why an HTTP/2 exchange failed. Every error leaves the connection unusable.
#[derive(Debug, thiserror::Error)]
pub enum Http2Error {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("the kubelet closed the connection")]
    Closed,
    #[error("protocol error: {0}")]
    Protocol(&'static str),
    #[error("undecodable response headers: {0}")]
    Headers(String),
    #[error("the kubelet reset the stream (error code {0})")]
    Reset(u32),
    /// The kubelet is closing the connection and did not take the request: safe to retry.
    #[error("the kubelet is closing the connection (GOAWAY, error code {0})")]
    GoingAway(u32),
    #[error("response body exceeds {limit} bytes")]
    BodyTooLarge { limit: usize },
}

/// The head of an answer: its status, its declared length, and whether the stream already ended
/// (an answer without a body).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Head {
    pub status: u16,
    pub content_length: Option<u64>,
    ended: bool,
}

/// A request header block, HPACK-encoded once per target: it uses no dynamic table, so it never
/// changes and costs nothing to send again.
#[derive(Clone, Debug)]
pub struct RequestBlock(Vec<u8>);

/// One HTTP/2 connection to one kubelet over `io` (a TLS stream in the server, a pipe in tests).
pub struct Http2Connection<S> {
    io: S,
    decoder: HeaderDecoder,
    /// The next stream id this client opens (odd, increasing).
    next_stream: u32,
    /// The largest frame the kubelet accepts (its `SETTINGS_MAX_FRAME_SIZE`).
    max_send_frame: usize,
    /// Bytes received since the connection window was last topped up.
    window_debt: u32,
    /// When to top it up; [`WINDOW_REFILL`] except in tests.
    window_refill: u32,
    /// Set once the kubelet sent GOAWAY: finish the exchange under way, then reconnect.
    going_away: bool,
}

// === impl RequestBlock ===

impl RequestBlock {
    /// `GET https://{authority}{path}` with `accept: text/plain` and, when given, an
    /// `authorization` that intermediaries are told never to index.
    pub fn new(authority: &str, path: &str, authorization: Option<&[u8]>) -> Self {
        let mut block = Vec::with_capacity(32 + authority.len() + path.len());
        // Indexed fields from the static table: `:method: GET` (2), `:scheme: https` (7).
        block.extend_from_slice(&[0x80 | 2, 0x80 | 7]);
        // Literals without indexing (4-bit prefix 0000) naming a static-table entry.
        literal(&mut block, 0x00, 4, path.as_bytes()); // :path
        literal(&mut block, 0x00, 1, authority.as_bytes()); // :authority
        literal(&mut block, 0x00, 19, b"text/plain"); // accept
        if let Some(value) = authorization {
            // Never indexed (0001): a credential.
            literal(&mut block, 0x10, 23, value); // authorization
        }
        RequestBlock(block)
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

/// A literal header field whose name is static-table entry `name_index`, value not Huffman-coded.
fn literal(out: &mut Vec<u8>, pattern: u8, name_index: usize, value: &[u8]) {
    integer(out, pattern, 4, name_index);
    integer(out, 0x00, 7, value.len());
    out.extend_from_slice(value);
}

/// An HPACK integer with an `prefix_bits`-bit prefix, the first byte's other bits from `pattern`.
pub fn integer(out: &mut Vec<u8>, pattern: u8, prefix_bits: u32, mut value: usize) {
    let max = (1usize << prefix_bits) - 1;
    if value < max {
        out.push(pattern | value as u8);
        return;
    }
    out.push(pattern | max as u8);
    value -= max;
    while value >= 0x80 {
        out.push((value as u8 & 0x7f) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

/// The response fields a scrape reads; the others are stepped over, not decoded.
fn wanted_header(name: &[u8]) -> bool {
    name == b":status" || name == b"content-length"
}

/// Appends what a client sends first: the preface, its `settings`, and a WINDOW_UPDATE opening
/// the connection's receive window to the maximum.
pub fn client_preface(out: &mut Vec<u8>, settings: &[(u16, u32)]) {
    out.extend_from_slice(PREFACE);
    frame_header(out, 6 * settings.len(), frame::SETTINGS, 0, 0);
    for (id, value) in settings {
        out.extend_from_slice(&id.to_be_bytes());
        out.extend_from_slice(&value.to_be_bytes());
    }
    frame_header(out, 4, frame::WINDOW_UPDATE, 0, 0);
    out.extend_from_slice(&(MAX_WINDOW - DEFAULT_WINDOW).to_be_bytes());
}

/// Appends a frame header.
pub fn frame_header(out: &mut Vec<u8>, len: usize, kind: u8, flags: u8, stream: u32) {
    // Frame lengths here are at most 2^24 - 1 (checked by the callers), so three bytes hold them.
    out.extend_from_slice(&(len as u32).to_be_bytes()[1..]);
    out.push(kind);
    out.push(flags);
    out.extend_from_slice(&(stream & MAX_WINDOW).to_be_bytes());
}

/// A received frame's header.
#[derive(Clone, Copy, Debug)]
struct FrameHeader {
    len: usize,
    kind: u8,
    flags: u8,
    stream: u32,
}

impl FrameHeader {
    fn parse(bytes: &[u8; FRAME_HEADER_LEN]) -> Self {
        FrameHeader {
            len: u32::from_be_bytes([0, bytes[0], bytes[1], bytes[2]]) as usize,
            kind: bytes[3],
            flags: bytes[4],
            stream: u32::from_be_bytes([bytes[5], bytes[6], bytes[7], bytes[8]]) & MAX_WINDOW,
        }
    }

    fn has(&self, flag: u8) -> bool {
        self.flags & flag != 0
    }
}

/// What reading the next frame of the exchange produced.
enum Event {
    /// Response headers for our stream (informational ones are skipped before this).
    Head(Head),
    /// Body bytes were appended; `true` when the stream ended.
    Data { ended: bool },
    /// Trailers, which end the stream.
    Trailers,
    /// A frame that does not concern the exchange (settings, ping, another stream...).
    Other,
}

// === impl Http2Connection ===

impl<S: AsyncRead + AsyncWrite + Unpin> Http2Connection<S> {
    /// Sends the connection preface and this client's settings. Does not wait for the kubelet's:
    /// they are read with the first answer.
    pub async fn handshake(io: S) -> Result<Self, Http2Error> {
        let mut connection = Http2Connection {
            io,
            decoder: HeaderDecoder::default(),
            next_stream: 1,
            max_send_frame: MAX_RECV_FRAME,
            window_debt: 0,
            window_refill: WINDOW_REFILL,
            going_away: false,
        };
        let settings: [(u16, u32); 4] = [
            // Response headers are decoded without a dynamic table: nothing kept between scrapes.
            (setting::HEADER_TABLE_SIZE, 0),
            (setting::ENABLE_PUSH, 0),
            // One stream at a time; the body is read as it arrives.
            (setting::INITIAL_WINDOW_SIZE, MAX_WINDOW),
            (setting::MAX_HEADER_LIST_SIZE, MAX_HEADER_BLOCK as u32),
        ];
        let mut out = Vec::with_capacity(PREFACE.len() + 9 + 6 * settings.len() + 13);
        client_preface(&mut out, &settings);
        connection.io.write_all(&out).await?;
        connection.io.flush().await?;
        Ok(connection)
    }

    /// Whether another request may be sent (the kubelet has not announced it is going away).
    pub fn is_reusable(&self) -> bool {
        !self.going_away && self.next_stream <= MAX_WINDOW
    }

    /// The transport, for its owner's housekeeping between exchanges.
    pub fn io_mut(&mut self) -> &mut S {
        &mut self.io
    }

    /// Sends a `GET` with `request`'s headers and waits for the answer's head.
    pub async fn send(&mut self, request: &RequestBlock) -> Result<Head, Http2Error> {
        if !self.is_reusable() {
            return Err(Http2Error::GoingAway(0));
        }
        let stream = self.next_stream;
        self.next_stream += 2;
        let block = request.as_bytes();
        let mut out = Vec::with_capacity(block.len() + 2 * FRAME_HEADER_LEN);
        let mut chunks = block.chunks(self.max_send_frame).peekable();
        let mut kind = frame::HEADERS;
        let mut flags = frame::END_STREAM;
        // An empty block still needs its HEADERS frame.
        if block.is_empty() {
            frame_header(&mut out, 0, kind, flags | frame::END_HEADERS, stream);
        }
        while let Some(chunk) = chunks.next() {
            if chunks.peek().is_none() {
                flags |= frame::END_HEADERS;
            }
            frame_header(&mut out, chunk.len(), kind, flags, stream);
            out.extend_from_slice(chunk);
            kind = frame::CONTINUATION;
            flags = 0;
        }
        self.io.write_all(&out).await?;
        self.io.flush().await?;
        // Data before the head is a protocol error, reported once its frame (at most one frame
        // size) is read.
        let mut unused = BytesMut::new();
        loop {
            match self.next_event(stream, &mut unused, MAX_RECV_FRAME).await? {
                Event::Head(head) => return Ok(head),
                Event::Other => {}
                Event::Data { .. } | Event::Trailers => {
                    return Err(Http2Error::Protocol("response data before its headers"))
                }
            }
        }
    }

    /// Reads the body of the answer whose head [`Http2Connection::send`] returned, appending it
    /// to `body`; fails as soon as `body` would exceed `limit` bytes.
    pub async fn read_body(
        &mut self,
        head: &Head,
        body: &mut BytesMut,
        limit: usize,
    ) -> Result<(), Http2Error> {
        if head.ended {
            return Ok(());
        }
        // The stream being read is the last one opened.
        let stream = self.next_stream - 2;
        loop {
            match self.next_event(stream, body, limit).await? {
                Event::Data { ended: true } | Event::Trailers => return Ok(()),
                Event::Data { ended: false } | Event::Other => {}
                Event::Head(_) => return Err(Http2Error::Protocol("a second response head")),
            }
        }
    }

    /// Reads and handles one frame (with its CONTINUATIONs) of the exchange on `stream`.
    async fn next_event(
        &mut self,
        stream: u32,
        body: &mut BytesMut,
        limit: usize,
    ) -> Result<Event, Http2Error> {
        let header = self.read_frame_header().await?;
        match header.kind {
            frame::DATA => {
                if header.stream == 0 {
                    return Err(Http2Error::Protocol("DATA on stream 0"));
                }
                self.received(header.len).await?;
                if header.stream != stream {
                    // A stream this client no longer reads: its window was counted above.
                    self.skip(header.len).await?;
                    return Ok(Event::Other);
                }
                let (pad, data_len) = self.padding(&header).await?;
                if body.len().saturating_add(data_len) > limit {
                    return Err(Http2Error::BodyTooLarge { limit });
                }
                self.read_into(body, data_len).await?;
                self.skip(pad).await?;
                Ok(Event::Data {
                    ended: header.has(frame::END_STREAM),
                })
            }
            frame::HEADERS => {
                if header.stream == 0 {
                    return Err(Http2Error::Protocol("HEADERS on stream 0"));
                }
                let block = self.header_block(&header).await?;
                // Decoded whatever the stream, so the decoder stays in step with the encoder.
                let mut status = None;
                let mut content_length = None;
                let mut malformed = false;
                self.decoder
                    .decode(&block, wanted_header, |name, value| match name {
                        b":status" => {
                            status = std::str::from_utf8(value)
                                .ok()
                                .and_then(|v| v.parse::<u16>().ok())
                                .filter(|s| (100..1000).contains(s));
                            malformed |= status.is_none();
                        }
                        b"content-length" => {
                            content_length = std::str::from_utf8(value)
                                .ok()
                                .and_then(|v| v.parse::<u64>().ok());
                            malformed |= content_length.is_none();
                        }
                        _ => {}
                    })
                    .map_err(|error| Http2Error::Headers(error.to_string()))?;
                if header.stream != stream {
                    return Ok(Event::Other);
                }
                let ended = header.has(frame::END_STREAM);
                match status {
                    // Trailers carry no status and end the stream.
                    None if !malformed && ended => Ok(Event::Trailers),
                    None => Err(Http2Error::Protocol(
                        "response headers without a valid :status",
                    )),
                    // Informational answers (100 Continue, 103 Early Hints) precede the real one.
                    Some(status) if status < 200 && !ended => Ok(Event::Other),
                    Some(_) if malformed => Err(Http2Error::Protocol("invalid content-length")),
                    Some(status) => Ok(Event::Head(Head {
                        status,
                        content_length,
                        ended,
                    })),
                }
            }
            frame::RST_STREAM => {
                let payload = self.read_control::<4>(&header).await?;
                if header.stream == 0 {
                    return Err(Http2Error::Protocol("RST_STREAM on stream 0"));
                }
                if header.stream == stream {
                    return Err(Http2Error::Reset(u32::from_be_bytes(payload)));
                }
                Ok(Event::Other)
            }
            frame::SETTINGS => {
                if header.stream != 0 {
                    return Err(Http2Error::Protocol("SETTINGS on a stream"));
                }
                if header.has(frame::ACK) {
                    if header.len != 0 {
                        return Err(Http2Error::Protocol(
                            "SETTINGS acknowledgement with a payload",
                        ));
                    }
                    return Ok(Event::Other);
                }
                if header.len % 6 != 0 {
                    return Err(Http2Error::Protocol("SETTINGS length not a multiple of 6"));
                }
                let payload = self.read_payload(header.len).await?;
                for entry in payload.chunks_exact(6) {
                    let id = u16::from_be_bytes([entry[0], entry[1]]);
                    let value = u32::from_be_bytes([entry[2], entry[3], entry[4], entry[5]]);
                    if id == setting::MAX_FRAME_SIZE {
                        if !(MAX_RECV_FRAME as u32..=0xff_ffff).contains(&value) {
                            return Err(Http2Error::Protocol(
                                "SETTINGS_MAX_FRAME_SIZE out of range",
                            ));
                        }
                        self.max_send_frame = value as usize;
                    }
                    // The rest do not concern a client that sends one small header block
                    // without a dynamic table and no data.
                }
                self.write_control(frame::SETTINGS, frame::ACK, &[]).await?;
                Ok(Event::Other)
            }
            frame::PING => {
                if header.stream != 0 {
                    return Err(Http2Error::Protocol("PING on a stream"));
                }
                let payload = self.read_control::<8>(&header).await?;
                if !header.has(frame::ACK) {
                    self.write_control(frame::PING, frame::ACK, &payload)
                        .await?;
                }
                Ok(Event::Other)
            }
            frame::GOAWAY => {
                if header.stream != 0 {
                    return Err(Http2Error::Protocol("GOAWAY on a stream"));
                }
                if header.len < 8 {
                    return Err(Http2Error::Protocol("GOAWAY shorter than 8 bytes"));
                }
                let payload = self.read_payload(header.len).await?;
                let last_stream =
                    u32::from_be_bytes([payload[0], payload[1], payload[2], payload[3]])
                        & MAX_WINDOW;
                let code = u32::from_be_bytes([payload[4], payload[5], payload[6], payload[7]]);
                self.going_away = true;
                if stream > last_stream {
                    return Err(Http2Error::GoingAway(code));
                }
                Ok(Event::Other)
            }
            frame::WINDOW_UPDATE => {
                // This client sends no data, so the kubelet's windows do not concern it.
                self.read_control::<4>(&header).await?;
                Ok(Event::Other)
            }
            frame::PUSH_PROMISE => Err(Http2Error::Protocol("server push, which was disabled")),
            frame::CONTINUATION => Err(Http2Error::Protocol("CONTINUATION without HEADERS")),
            // PRIORITY and frame types this client does not know are ignored, as the protocol
            // requires.
            _ => {
                self.skip(header.len).await?;
                Ok(Event::Other)
            }
        }
    }

    async fn read_frame_header(&mut self) -> Result<FrameHeader, Http2Error> {
        let mut bytes = [0u8; FRAME_HEADER_LEN];
        self.read_exact(&mut bytes).await?;
        let header = FrameHeader::parse(&bytes);
        if header.len > MAX_RECV_FRAME {
            return Err(Http2Error::Protocol(
                "frame larger than SETTINGS_MAX_FRAME_SIZE",
            ));
        }
        Ok(header)
    }

    /// The padding of a DATA or HEADERS frame (its pad-length byte is read here) and the length
    /// of what is left once padding and the pad-length byte are taken away.
    async fn padding(&mut self, header: &FrameHeader) -> Result<(usize, usize), Http2Error> {
        if !header.has(frame::PADDED) {
            return Ok((0, header.len));
        }
        let mut pad = [0u8; 1];
        if header.len < 1 {
            return Err(Http2Error::Protocol("padded frame without a pad length"));
        }
        self.read_exact(&mut pad).await?;
        let pad = pad[0] as usize;
        let rest = header.len - 1;
        if pad > rest {
            return Err(Http2Error::Protocol("padding longer than the frame"));
        }
        Ok((pad, rest - pad))
    }

    /// A HEADERS frame's header block fragment with every CONTINUATION that follows it.
    async fn header_block(&mut self, header: &FrameHeader) -> Result<Vec<u8>, Http2Error> {
        let (pad, mut len) = self.padding(header).await?;
        if header.has(frame::PRIORITY) {
            if len < 5 {
                return Err(Http2Error::Protocol("HEADERS too short for its priority"));
            }
            self.skip(5).await?;
            len -= 5;
        }
        let mut block = self.read_payload(len).await?;
        self.skip(pad).await?;
        let mut ended = header.has(frame::END_HEADERS);
        while !ended {
            let next = self.read_frame_header().await?;
            if next.kind != frame::CONTINUATION || next.stream != header.stream {
                return Err(Http2Error::Protocol("header block interrupted"));
            }
            if block.len() + next.len > MAX_HEADER_BLOCK {
                return Err(Http2Error::Protocol("response header block too large"));
            }
            let start = block.len();
            block.resize(start + next.len, 0);
            self.read_exact(&mut block[start..]).await?;
            ended = next.has(frame::END_HEADERS);
        }
        Ok(block)
    }

    /// A fixed-size control payload; any other length is a protocol error.
    async fn read_control<const N: usize>(
        &mut self,
        header: &FrameHeader,
    ) -> Result<[u8; N], Http2Error> {
        if header.len != N {
            return Err(Http2Error::Protocol("control frame of the wrong length"));
        }
        let mut payload = [0u8; N];
        self.read_exact(&mut payload).await?;
        Ok(payload)
    }

    async fn read_payload(&mut self, len: usize) -> Result<Vec<u8>, Http2Error> {
        let mut payload = vec![0u8; len];
        self.read_exact(&mut payload).await?;
        Ok(payload)
    }

    async fn read_exact(&mut self, buf: &mut [u8]) -> Result<(), Http2Error> {
        match self.io.read_exact(buf).await {
            Ok(_) => Ok(()),
            Err(error) if error.kind() == std::io::ErrorKind::UnexpectedEof => {
                Err(Http2Error::Closed)
            }
            Err(error) => Err(error.into()),
        }
    }

    /// Appends exactly `len` bytes from the connection to `body`, without an intermediate copy.
    async fn read_into(&mut self, body: &mut BytesMut, len: usize) -> Result<(), Http2Error> {
        body.reserve(len);
        let mut rest = (&mut self.io).take(len as u64);
        while rest.limit() > 0 {
            if rest.read_buf(body).await? == 0 {
                return Err(Http2Error::Closed);
            }
        }
        Ok(())
    }

    async fn skip(&mut self, mut len: usize) -> Result<(), Http2Error> {
        let mut scratch = [0u8; 512];
        while len > 0 {
            let n = len.min(scratch.len());
            self.read_exact(&mut scratch[..n]).await?;
            len -= n;
        }
        Ok(())
    }

    /// Counts a DATA frame against the connection window and tops the window up when half of
    /// it is used.
    async fn received(&mut self, len: usize) -> Result<(), Http2Error> {
        // `len` is at most MAX_RECV_FRAME, checked with the frame header.
        self.window_debt += len as u32;
        if self.window_debt >= self.window_refill {
            let increment = self.window_debt.to_be_bytes();
            self.write_control(frame::WINDOW_UPDATE, 0, &increment)
                .await?;
            self.window_debt = 0;
        }
        Ok(())
    }

    /// Writes one connection-level frame and flushes it: acknowledgements and window updates go
    /// out at once, not with the next request.
    async fn write_control(
        &mut self,
        kind: u8,
        flags: u8,
        payload: &[u8],
    ) -> Result<(), Http2Error> {
        let mut frame = Vec::with_capacity(FRAME_HEADER_LEN + payload.len());
        frame_header(&mut frame, payload.len(), kind, flags, 0);
        frame.extend_from_slice(payload);
        self.io.write_all(&frame).await?;
        self.io.flush().await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests;
