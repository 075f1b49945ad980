//! The HTTP/2 client of the load streams: many `GET`s in flight on one connection, each answer's
//! body counted as it is read and dropped.
//!
//! Owns one connection's framing, flow control and header coding; knows nothing of schedules,
//! timeouts or figures (the driver in `apiload.rs` decides when to send and what an answer
//! means). Built so that the generator's own cost stays small beside the server it loads: a
//! request is one HEADERS frame appended to a write buffer, the frames queued in one turn leave
//! in one write, frames are parsed where they were read, and bodies are never assembled.
//!
//! Header coding is what a well-behaved client does: once the server's settings allow it, the
//! fields every request repeats (`:authority`, `accept`, `authorization`) are added to the
//! server's dynamic table by the first request and referred to by index after that; the path is
//! a literal the table does not keep. Requests carry no body, so flow control is the receiving
//! side's only: both windows are opened to the maximum and the connection's is topped up.

use bytes::{Buf, BytesMut};
use metrics_server::scrape::hpack::HeaderDecoder;
use metrics_server::scrape::http2::{
    client_preface, frame, frame_header, integer, setting, FRAME_HEADER_LEN, MAX_RECV_FRAME,
    MAX_WINDOW, WINDOW_REFILL,
};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// The dynamic table each side starts with (RFC 7541), before settings say otherwise.
const DEFAULT_TABLE_SIZE: u32 = 4_096;
/// A response header block larger than this (after CONTINUATION frames) fails the connection.
const MAX_HEADER_BLOCK: usize = 64 * 1024;
/// Room made in the read buffer before each read: a few 16 KiB frames.
const READ_RESERVE: usize = 64 * 1024;
/// Bytes a dynamic-table entry costs beyond its name and value (RFC 7541, section 4.1).
const ENTRY_OVERHEAD: usize = 32;

/// Why the connection cannot go on. Every error ends it: the caller fails what is in flight.
#[derive(Debug, thiserror::Error)]
pub enum H2Error {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("the server closed the connection")]
    Closed,
    #[error("protocol error: {0}")]
    Protocol(&'static str),
    #[error("undecodable response headers: {0}")]
    Headers(String),
    #[error("a request's header block ({0} bytes) does not fit a frame")]
    RequestTooLarge(usize),
}

/// How one request ended: its caller's token and the body's length, or why it failed.
#[derive(Debug)]
pub struct Answer<T> {
    pub token: T,
    pub result: Result<u64, String>,
}

/// The header fields every request of a connection repeats.
#[derive(Clone, Debug)]
pub struct Fields {
    pub authority: String,
    pub accept: &'static str,
    pub authorization: Option<String>,
}

/// How the repeated fields are coded in the next request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Indexing {
    /// Literals the server does not keep: before its settings, or when its table is too small.
    Plain,
    /// The server's table can hold them: the next request adds them.
    Allowed,
    /// Added: referred to by index.
    Added,
    /// The server shrank its table below what they need: the next request empties the table
    /// (a size update to 0) and they stay literals from then on.
    Withdrawn,
}

/// The repeated fields, coded three ways once per connection.
struct FieldBlocks {
    plain: Vec<u8>,
    adding: Vec<u8>,
    indexed: Vec<u8>,
    /// What they take in the server's table.
    table_bytes: usize,
}

impl FieldBlocks {
    fn new(fields: &Fields) -> Self {
        // Static-table names: `:authority` (1), `accept` (19), `authorization` (23).
        let mut list: Vec<(usize, &str, &[u8])> = vec![
            (1, ":authority", fields.authority.as_bytes()),
            (19, "accept", fields.accept.as_bytes()),
        ];
        if let Some(value) = &fields.authorization {
            list.push((23, "authorization", value.as_bytes()));
        }
        let (mut plain, mut adding, mut indexed) = (Vec::new(), Vec::new(), Vec::new());
        let mut table_bytes = 0;
        for (i, (name_index, name, value)) in list.iter().enumerate() {
            // Without indexing (0000, 4-bit prefix) and with incremental indexing (01, 6-bit).
            integer(&mut plain, 0x00, 4, *name_index);
            string(&mut plain, value);
            integer(&mut adding, 0x40, 6, *name_index);
            string(&mut adding, value);
            // Entries added in this order: the last added is index 62, the first the highest.
            integer(&mut indexed, 0x80, 7, 62 + list.len() - 1 - i);
            table_bytes += name.len() + value.len() + ENTRY_OVERHEAD;
        }
        FieldBlocks {
            plain,
            adding,
            indexed,
            table_bytes,
        }
    }
}

/// A string literal, not Huffman-coded.
fn string(out: &mut Vec<u8>, value: &[u8]) {
    integer(out, 0x00, 7, value.len());
    out.extend_from_slice(value);
}

/// A request whose answer has not ended.
#[derive(Debug)]
struct Pending<T> {
    stream: u32,
    token: T,
    /// The final status, once the answer's head arrived.
    status: Option<u16>,
    bytes: u64,
}

/// A header block spread over CONTINUATION frames.
struct PartialBlock {
    stream: u32,
    end_stream: bool,
    block: Vec<u8>,
}

/// Everything but the read buffer, so frames are handled where they lie in it.
struct State<T> {
    decoder: HeaderDecoder,
    fields: FieldBlocks,
    indexing: Indexing,
    next_stream: u32,
    /// The server's `SETTINGS_MAX_CONCURRENT_STREAMS`.
    max_concurrent: usize,
    max_send_frame: usize,
    /// Frames waiting to be written.
    out: Vec<u8>,
    /// In the order sent, so the first is the oldest.
    pending: Vec<Pending<T>>,
    partial: Option<PartialBlock>,
    window_debt: u32,
    going_away: bool,
}

/// One HTTP/2 connection over `io` (TLS in the load generator, a pipe in tests), answers
/// identified by the caller's tokens `T`.
pub struct PipelinedH2<T, S> {
    io: S,
    read: BytesMut,
    state: State<T>,
}

impl<T, S: AsyncRead + AsyncWrite + Unpin> PipelinedH2<T, S> {
    /// Queues the preface, this client's settings and the connection window's opening; they
    /// leave with the first [`PipelinedH2::flush`].
    pub fn new(io: S, fields: &Fields) -> Self {
        let settings: [(u16, u32); 2] = [
            (setting::ENABLE_PUSH, 0),
            // Answers are read as they arrive, so no stream needs to be held back.
            (setting::INITIAL_WINDOW_SIZE, MAX_WINDOW),
        ];
        let mut out = Vec::with_capacity(4096);
        client_preface(&mut out, &settings);
        PipelinedH2 {
            io,
            read: BytesMut::with_capacity(READ_RESERVE),
            state: State {
                decoder: HeaderDecoder::default(),
                fields: FieldBlocks::new(fields),
                indexing: Indexing::Plain,
                next_stream: 1,
                max_concurrent: usize::MAX,
                max_send_frame: MAX_RECV_FRAME,
                out,
                pending: Vec::new(),
                partial: None,
                window_debt: 0,
                going_away: false,
            },
        }
    }

    /// Requests in flight.
    pub fn in_flight(&self) -> usize {
        self.state.pending.len()
    }

    /// Whether another request may be queued now.
    pub fn can_send(&self) -> bool {
        self.is_reusable() && self.state.pending.len() < self.state.max_concurrent
    }

    /// Whether the connection may carry more requests at all (no GOAWAY, stream ids left).
    pub fn is_reusable(&self) -> bool {
        !self.state.going_away && self.state.next_stream < MAX_WINDOW
    }

    /// The token of the oldest request in flight.
    pub fn oldest(&self) -> Option<&T> {
        self.state.pending.first().map(|p| &p.token)
    }

    /// Whether frames wait to be written.
    pub fn has_output(&self) -> bool {
        !self.state.out.is_empty()
    }

    /// Queues `GET path`; it leaves with the next [`PipelinedH2::flush`].
    pub fn queue(&mut self, path: &str, token: T) -> Result<(), H2Error> {
        if !self.is_reusable() {
            return Err(H2Error::Protocol(
                "request on a connection that is going away",
            ));
        }
        let s = &mut self.state;
        let stream = s.next_stream;
        s.next_stream += 2;
        let start = s.out.len();
        frame_header(
            &mut s.out,
            0,
            frame::HEADERS,
            frame::END_STREAM | frame::END_HEADERS,
            stream,
        );
        let block_start = s.out.len();
        if s.indexing == Indexing::Withdrawn {
            // Dynamic table size update to 0: the entries this client added are gone.
            s.out.push(0x20);
        }
        // `:method: GET` (2) and `:scheme: https` (7) from the static table.
        s.out.extend_from_slice(&[0x80 | 2, 0x80 | 7]);
        // `:path` (4) as a literal without indexing.
        integer(&mut s.out, 0x00, 4, 4);
        string(&mut s.out, path.as_bytes());
        match s.indexing {
            Indexing::Plain => s.out.extend_from_slice(&s.fields.plain),
            Indexing::Withdrawn => {
                s.out.extend_from_slice(&s.fields.plain);
                s.indexing = Indexing::Plain;
            }
            Indexing::Allowed => {
                s.out.extend_from_slice(&s.fields.adding);
                s.indexing = Indexing::Added;
            }
            Indexing::Added => s.out.extend_from_slice(&s.fields.indexed),
        }
        let len = s.out.len() - block_start;
        if len > s.max_send_frame {
            s.out.truncate(start);
            return Err(H2Error::RequestTooLarge(len));
        }
        s.out[start..start + 3].copy_from_slice(&(len as u32).to_be_bytes()[1..]);
        s.pending.push(Pending {
            stream,
            token,
            status: None,
            bytes: 0,
        });
        Ok(())
    }

    /// Writes the queued frames. Not cancel-safe: a write cut short leaves the connection unusable.
    pub async fn flush(&mut self) -> Result<(), H2Error> {
        self.io.write_all(&self.state.out).await?;
        self.io.flush().await?;
        self.state.out.clear();
        Ok(())
    }

    /// Reads once and handles every whole frame read, pushing the answers that ended to `done`.
    /// Cancel-safe: nothing is lost if the read has not completed.
    pub async fn read(&mut self, done: &mut Vec<Answer<T>>) -> Result<(), H2Error> {
        if self.read.capacity() - self.read.len() < READ_RESERVE / 2 {
            self.read.reserve(READ_RESERVE);
        }
        if self.io.read_buf(&mut self.read).await? == 0 {
            return Err(H2Error::Closed);
        }
        while self.read.len() >= FRAME_HEADER_LEN {
            let h = &self.read[..FRAME_HEADER_LEN];
            let len = u32::from_be_bytes([0, h[0], h[1], h[2]]) as usize;
            let (kind, flags) = (h[3], h[4]);
            let stream = u32::from_be_bytes([h[5], h[6], h[7], h[8]]) & MAX_WINDOW;
            if len > MAX_RECV_FRAME {
                return Err(H2Error::Protocol("frame larger than this client's maximum"));
            }
            if self.read.len() < FRAME_HEADER_LEN + len {
                break;
            }
            let payload = &self.read[FRAME_HEADER_LEN..FRAME_HEADER_LEN + len];
            self.state.frame(kind, flags, stream, payload, done)?;
            self.read.advance(FRAME_HEADER_LEN + len);
        }
        Ok(())
    }

    /// Ends every request in flight with `reason` (the connection is being dropped).
    pub fn abandon(&mut self, reason: &str, done: &mut Vec<Answer<T>>) {
        done.extend(self.state.pending.drain(..).map(|p| Answer {
            token: p.token,
            result: Err(reason.to_owned()),
        }));
    }
}

impl<T> State<T> {
    fn frame(
        &mut self,
        kind: u8,
        flags: u8,
        stream: u32,
        payload: &[u8],
        done: &mut Vec<Answer<T>>,
    ) -> Result<(), H2Error> {
        if self.partial.is_some() && kind != frame::CONTINUATION {
            return Err(H2Error::Protocol(
                "a header block interrupted by another frame",
            ));
        }
        match kind {
            frame::DATA => {
                self.window_debt += payload.len() as u32;
                if self.window_debt >= WINDOW_REFILL {
                    frame_header(&mut self.out, 4, frame::WINDOW_UPDATE, 0, 0);
                    self.out.extend_from_slice(&self.window_debt.to_be_bytes());
                    self.window_debt = 0;
                }
                let data = unpadded(flags, payload)?;
                if let Some(i) = self.position(stream) {
                    if self.pending[i].status.is_none() {
                        return Err(H2Error::Protocol("data before the answer's head"));
                    }
                    self.pending[i].bytes += data.len() as u64;
                    if flags & frame::END_STREAM != 0 {
                        self.finish(i, done);
                    }
                }
            }
            frame::HEADERS => {
                let mut fragment = unpadded(flags, payload)?;
                if flags & frame::PRIORITY != 0 {
                    fragment = fragment
                        .get(5..)
                        .ok_or(H2Error::Protocol("HEADERS shorter than its priority"))?;
                }
                let end_stream = flags & frame::END_STREAM != 0;
                if flags & frame::END_HEADERS != 0 {
                    self.header_block(stream, end_stream, fragment, done)?;
                } else {
                    self.partial = Some(PartialBlock {
                        stream,
                        end_stream,
                        block: fragment.to_vec(),
                    });
                }
            }
            frame::CONTINUATION => {
                let Some(mut partial) = self.partial.take() else {
                    return Err(H2Error::Protocol("CONTINUATION without a header block"));
                };
                if partial.stream != stream {
                    return Err(H2Error::Protocol("CONTINUATION on another stream"));
                }
                partial.block.extend_from_slice(payload);
                if partial.block.len() > MAX_HEADER_BLOCK {
                    return Err(H2Error::Protocol("response header block too large"));
                }
                if flags & frame::END_HEADERS != 0 {
                    self.header_block(stream, partial.end_stream, &partial.block, done)?;
                } else {
                    self.partial = Some(partial);
                }
            }
            frame::RST_STREAM => {
                let code = u32_at(payload).ok_or(H2Error::Protocol("short RST_STREAM"))?;
                if let Some(i) = self.position(stream) {
                    let p = self.pending.remove(i);
                    done.push(Answer {
                        token: p.token,
                        result: Err(format!("stream reset (error code {code})")),
                    });
                }
            }
            frame::SETTINGS => {
                if flags & frame::ACK != 0 {
                    return Ok(());
                }
                if !payload.len().is_multiple_of(6) {
                    return Err(H2Error::Protocol(
                        "SETTINGS of a length not a multiple of 6",
                    ));
                }
                let mut table_size = None;
                for entry in payload.chunks_exact(6) {
                    let id = u16::from_be_bytes([entry[0], entry[1]]);
                    let value = u32::from_be_bytes([entry[2], entry[3], entry[4], entry[5]]);
                    match id {
                        setting::HEADER_TABLE_SIZE => table_size = Some(value),
                        setting::MAX_CONCURRENT_STREAMS => self.max_concurrent = value as usize,
                        setting::MAX_FRAME_SIZE => {
                            self.max_send_frame = (value as usize).clamp(MAX_RECV_FRAME, 1 << 24)
                        }
                        _ => {}
                    }
                }
                self.table_settled(table_size);
                frame_header(&mut self.out, 0, frame::SETTINGS, frame::ACK, 0);
            }
            frame::PING => {
                if payload.len() != 8 {
                    return Err(H2Error::Protocol("PING not of 8 bytes"));
                }
                if flags & frame::ACK == 0 {
                    frame_header(&mut self.out, 8, frame::PING, frame::ACK, 0);
                    self.out.extend_from_slice(payload);
                }
            }
            frame::GOAWAY => {
                let last = u32_at(payload).ok_or(H2Error::Protocol("short GOAWAY"))? & MAX_WINDOW;
                let code = payload.get(4..8).and_then(u32_at).unwrap_or(0);
                self.going_away = true;
                // Requests the server did not take fail now; the others may still be answered.
                let mut i = 0;
                while i < self.pending.len() {
                    if self.pending[i].stream > last {
                        let p = self.pending.remove(i);
                        done.push(Answer {
                            token: p.token,
                            result: Err(format!("GOAWAY (error code {code})")),
                        });
                    } else {
                        i += 1;
                    }
                }
            }
            frame::PUSH_PROMISE => return Err(H2Error::Protocol("push was disabled")),
            // WINDOW_UPDATE (nothing is sent that waits on a window), PRIORITY, extensions.
            _ => {}
        }
        Ok(())
    }

    /// What a SETTINGS frame (the first, or a later one carrying a table size) means for the
    /// repeated fields.
    fn table_settled(&mut self, table_size: Option<u32>) {
        let fits = |size: u32| size as usize >= self.fields.table_bytes;
        self.indexing = match (self.indexing, table_size) {
            (Indexing::Plain, size) => {
                if fits(size.unwrap_or(DEFAULT_TABLE_SIZE)) {
                    Indexing::Allowed
                } else {
                    Indexing::Plain
                }
            }
            (Indexing::Allowed, Some(size)) if !fits(size) => Indexing::Plain,
            (Indexing::Added, Some(size)) if !fits(size) => Indexing::Withdrawn,
            (state, _) => state,
        };
    }

    fn header_block(
        &mut self,
        stream: u32,
        end_stream: bool,
        block: &[u8],
        done: &mut Vec<Answer<T>>,
    ) -> Result<(), H2Error> {
        // Every block is decoded, whoever it is for, to keep the decoder's table in step.
        let mut status = None;
        self.decoder
            .decode(
                block,
                |name| name == b":status",
                |_, value| {
                    status = std::str::from_utf8(value)
                        .ok()
                        .and_then(|v| v.parse::<u16>().ok())
                },
            )
            .map_err(|e| H2Error::Headers(e.to_string()))?;
        let Some(i) = self.position(stream) else {
            return Ok(());
        };
        if self.pending[i].status.is_none() {
            match status {
                // Informational: the final head follows.
                Some(100..=199) if !end_stream => return Ok(()),
                Some(code) if (200..=999).contains(&code) => self.pending[i].status = Some(code),
                _ => return Err(H2Error::Protocol("answer head without a valid :status")),
            }
        }
        // A head with END_STREAM, or trailers.
        if end_stream {
            self.finish(i, done);
        }
        Ok(())
    }

    fn position(&self, stream: u32) -> Option<usize> {
        self.pending.iter().position(|p| p.stream == stream)
    }

    fn finish(&mut self, i: usize, done: &mut Vec<Answer<T>>) {
        let p = self.pending.remove(i);
        let result = match p.status {
            Some(200..=299) => Ok(p.bytes),
            Some(status) => Err(format!("status {status}")),
            None => Err("answer without a head".to_owned()),
        };
        done.push(Answer {
            token: p.token,
            result,
        });
    }
}

/// A DATA or HEADERS payload without its padding.
fn unpadded(flags: u8, payload: &[u8]) -> Result<&[u8], H2Error> {
    if flags & frame::PADDED == 0 {
        return Ok(payload);
    }
    let (&pad, rest) = payload
        .split_first()
        .ok_or(H2Error::Protocol("padded frame without its pad length"))?;
    rest.len()
        .checked_sub(usize::from(pad))
        .map(|len| &rest[..len])
        .ok_or(H2Error::Protocol("padding longer than the frame"))
}

fn u32_at(bytes: &[u8]) -> Option<u32> {
    Some(u32::from_be_bytes(bytes.get(..4)?.try_into().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use metrics_server::scrape::http2::PREFACE;
    use tokio::io::DuplexStream;

    /// The server's end of a connection: reads what the client wrote, writes frames to it.
    struct Peer {
        io: DuplexStream,
        read: Vec<u8>,
        decoder: HeaderDecoder,
    }

    impl Peer {
        /// Reads the client's preface and frames until `count` HEADERS frames were seen; returns
        /// their stream ids and decoded fields, and every other frame's kind.
        async fn requests(&mut self, count: usize) -> (Vec<(u32, Vec<(String, String)>)>, Vec<u8>) {
            let mut requests = Vec::new();
            let mut others = Vec::new();
            while requests.len() < count {
                if self.read.starts_with(PREFACE) {
                    self.read.drain(..PREFACE.len());
                }
                if self.read.len() >= FRAME_HEADER_LEN {
                    let h = &self.read[..FRAME_HEADER_LEN];
                    let len = u32::from_be_bytes([0, h[0], h[1], h[2]]) as usize;
                    if self.read.len() >= FRAME_HEADER_LEN + len {
                        let (kind, stream) = (h[3], u32::from_be_bytes([h[5], h[6], h[7], h[8]]));
                        let payload = self.read[FRAME_HEADER_LEN..FRAME_HEADER_LEN + len].to_vec();
                        self.read.drain(..FRAME_HEADER_LEN + len);
                        if kind == frame::HEADERS {
                            let mut fields = Vec::new();
                            self.decoder
                                .decode(
                                    &payload,
                                    |_| true,
                                    |n, v| {
                                        fields.push((
                                            String::from_utf8_lossy(n).into_owned(),
                                            String::from_utf8_lossy(v).into_owned(),
                                        ))
                                    },
                                )
                                .expect("the request's block decodes");
                            requests.push((stream, fields));
                        } else {
                            others.push(kind);
                        }
                        continue;
                    }
                }
                let mut chunk = [0u8; 4096];
                let n = self.io.read(&mut chunk).await.expect("reads");
                assert!(n > 0, "client closed");
                self.read.extend_from_slice(&chunk[..n]);
            }
            (requests, others)
        }

        /// A `200` head that ends its stream: an answer without a body.
        async fn empty_ok(&mut self, stream: u32) {
            self.send(
                frame::HEADERS,
                frame::END_HEADERS | frame::END_STREAM,
                stream,
                &[0x88],
            )
            .await;
        }

        async fn send(&mut self, kind: u8, flags: u8, stream: u32, payload: &[u8]) {
            let mut out = Vec::new();
            frame_header(&mut out, payload.len(), kind, flags, stream);
            out.extend_from_slice(payload);
            self.io.write_all(&out).await.expect("writes");
        }
    }

    fn pair() -> (PipelinedH2<u32, DuplexStream>, Peer) {
        let (client, server) = tokio::io::duplex(1 << 20);
        let fields = Fields {
            authority: "127.0.0.1:4443".to_owned(),
            accept: "application/json",
            authorization: Some("Bearer secret".to_owned()),
        };
        let peer = Peer {
            io: server,
            read: Vec::new(),
            decoder: HeaderDecoder::default(),
        };
        (PipelinedH2::new(client, &fields), peer)
    }

    /// Reads until `want` answers ended.
    async fn answers(conn: &mut PipelinedH2<u32, DuplexStream>, want: usize) -> Vec<Answer<u32>> {
        let mut done = Vec::new();
        while done.len() < want {
            conn.read(&mut done).await.expect("reads");
        }
        done
    }

    fn field<'f>(fields: &'f [(String, String)], name: &str) -> Option<&'f str> {
        fields
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    #[tokio::test]
    async fn answers_end_in_any_order_and_count_only_their_bodies() {
        let (mut conn, mut peer) = pair();
        for token in 0..3 {
            conn.queue(&format!("/path/{token}"), token)
                .expect("queued");
        }
        conn.flush().await.expect("written");
        let (requests, others) = peer.requests(3).await;
        assert_eq!(others, vec![frame::SETTINGS, frame::WINDOW_UPDATE]);
        let streams: Vec<u32> = requests.iter().map(|(s, _)| *s).collect();
        assert_eq!(streams, vec![1, 3, 5]);
        for (i, (_, fields)) in requests.iter().enumerate() {
            assert_eq!(field(fields, ":path"), Some(format!("/path/{i}").as_str()));
            assert_eq!(field(fields, ":method"), Some("GET"));
            assert_eq!(field(fields, "authorization"), Some("Bearer secret"));
        }
        // Stream 5 first: 200 with a padded body in two frames; then stream 1: a 404 whose head
        // spans a CONTINUATION; stream 3 is reset.
        peer.send(frame::HEADERS, frame::END_HEADERS, 5, &[0x88])
            .await;
        peer.send(frame::DATA, frame::PADDED, 5, &[2, b'a', b'b', b'c', 0, 0])
            .await;
        peer.send(frame::DATA, frame::END_STREAM, 5, b"defg").await;
        peer.send(frame::HEADERS, 0, 1, &[0x8d]).await;
        peer.send(
            frame::CONTINUATION,
            frame::END_HEADERS,
            1,
            &[0x0f, 0x0d, 0x01, b'0'],
        )
        .await;
        peer.send(frame::DATA, frame::END_STREAM, 1, b"").await;
        peer.send(frame::RST_STREAM, 0, 3, &2u32.to_be_bytes())
            .await;
        let done = answers(&mut conn, 3).await;
        let by_token = |t: u32| done.iter().find(|a| a.token == t).expect("answered");
        assert_eq!(by_token(2).result, Ok(7));
        assert_eq!(by_token(0).result, Err("status 404".to_owned()));
        assert_eq!(
            by_token(1).result,
            Err("stream reset (error code 2)".to_owned())
        );
        assert_eq!(conn.in_flight(), 0);
    }

    #[tokio::test]
    async fn repeated_fields_are_indexed_once_the_server_allows_and_withdrawn_when_it_shrinks() {
        let (mut conn, mut peer) = pair();
        conn.queue("/a", 0).expect("queued");
        conn.flush().await.expect("written");
        // Before the server's settings: literals.
        let (first, _) = peer.requests(1).await;
        // The server's settings (default table), a ping: both answered.
        peer.send(frame::SETTINGS, 0, 0, &[]).await;
        peer.send(frame::PING, 0, 0, b"12345678").await;
        peer.empty_ok(1).await;
        assert_eq!(answers(&mut conn, 1).await[0].result, Ok(0));
        for token in 1..3 {
            conn.queue("/b", token).expect("queued");
        }
        conn.flush().await.expect("written");
        let (next, others) = peer.requests(2).await;
        assert_eq!(others, vec![frame::SETTINGS, frame::PING]);
        // The second request added the three fields; the third only referred to them.
        let added =
            ":authority127.0.0.1:4443acceptapplication/jsonauthorizationBearer secret".len();
        assert_eq!(peer.decoder.table_size(), added + 3 * ENTRY_OVERHEAD);
        // The server now shrinks its table below what the fields need.
        let mut shrink = Vec::new();
        shrink.extend_from_slice(&setting::HEADER_TABLE_SIZE.to_be_bytes());
        shrink.extend_from_slice(&40u32.to_be_bytes());
        peer.send(frame::SETTINGS, 0, 0, &shrink).await;
        for stream in [3, 5] {
            peer.empty_ok(stream).await;
        }
        answers(&mut conn, 2).await;
        conn.queue("/c", 3).expect("queued");
        conn.flush().await.expect("written");
        let (last, _) = peer.requests(1).await;
        // Every request carried the same fields, however coded.
        for (_, fields) in first.iter().chain(&next).chain(&last) {
            assert_eq!(field(fields, ":authority"), Some("127.0.0.1:4443"));
            assert_eq!(field(fields, "accept"), Some("application/json"));
            assert_eq!(field(fields, "authorization"), Some("Bearer secret"));
        }
        // Added by the second request, referred to by the third, gone after the shrink.
        assert_eq!(peer.decoder.table_size(), 0);
        let sizes = {
            let (mut c2, mut p2) = pair();
            c2.queue("/x", 0).expect("queued");
            c2.flush().await.expect("written");
            p2.requests(1).await;
            p2.decoder.table_size()
        };
        assert_eq!(sizes, 0, "nothing added before the server's settings");
    }

    #[tokio::test]
    async fn goaway_fails_only_what_the_server_did_not_take() {
        let (mut conn, mut peer) = pair();
        for token in 0..3 {
            conn.queue("/p", token).expect("queued");
        }
        conn.flush().await.expect("written");
        peer.requests(3).await;
        let mut goaway = Vec::new();
        goaway.extend_from_slice(&3u32.to_be_bytes());
        goaway.extend_from_slice(&0u32.to_be_bytes());
        peer.send(frame::GOAWAY, 0, 0, &goaway).await;
        let done = answers(&mut conn, 1).await;
        assert_eq!(done[0].token, 2);
        assert!(!conn.is_reusable() && !conn.can_send());
        assert!(conn.queue("/p", 9).is_err());
        // Streams 1 and 3 are still answered.
        for stream in [1, 3] {
            peer.empty_ok(stream).await;
        }
        let done = answers(&mut conn, 2).await;
        assert!(done.iter().all(|a| a.result == Ok(0)));
    }

    #[tokio::test]
    async fn bad_frames_end_the_connection_and_abandon_fails_what_was_in_flight() {
        for (kind, flags, stream, payload) in [
            // Data before the answer's head.
            (frame::DATA, 0, 1, b"x".to_vec()),
            // Padding longer than the frame.
            (
                frame::HEADERS,
                frame::PADDED | frame::END_HEADERS,
                1,
                vec![9, 0x88],
            ),
            // A head without a status.
            (frame::HEADERS, frame::END_HEADERS, 1, vec![0x82]),
            // A push, which was disabled.
            (
                frame::PUSH_PROMISE,
                frame::END_HEADERS,
                1,
                vec![0, 0, 0, 2, 0x82],
            ),
            // A frame larger than the client accepts.
            (frame::DATA, 0, 1, vec![0; MAX_RECV_FRAME + 1]),
        ] {
            let (mut conn, mut peer) = pair();
            conn.queue("/p", 7).expect("queued");
            conn.flush().await.expect("written");
            peer.requests(1).await;
            peer.send(kind, flags, stream, &payload).await;
            let mut done = Vec::new();
            let error = loop {
                if let Err(error) = conn.read(&mut done).await {
                    break error;
                }
            };
            assert!(done.is_empty(), "{error}");
            conn.abandon(&error.to_string(), &mut done);
            assert_eq!(done.len(), 1);
            assert!(done[0].result.is_err());
        }
        // A closed connection is an error, not an endless read.
        let (mut conn, peer) = pair();
        drop(peer);
        assert!(matches!(
            conn.read(&mut Vec::new()).await,
            Err(H2Error::Closed) | Err(H2Error::Io(_))
        ));
    }
}
