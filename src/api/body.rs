//! Response bodies: a whole buffer, segments rendered earlier (a kept answer), or chunks
//! produced off the I/O workers.
//!
//! A small answer is rendered where the request is handled and sent as one buffer with its
//! length. A large list (hundreds of thousands of pods renders for a second or more) must not hold
//! an I/O worker that long, nor one buffer of its whole size: [`render_off_thread`] runs its
//! renderer on the runtime's blocking pool, which hands the body [`CHUNK_BYTES`] at a time through
//! a channel of [`CHUNKS_IN_FLIGHT`] chunks. The renderer owns the snapshot it reads (an `Arc`),
//! so the body is one consistent snapshot however slowly the client reads it, and a client that
//! stops reading stops the renderer (the channel is full) rather than growing a buffer. A client
//! that goes away ends it (the channel is closed).
//!
//! Renderers run at the lowest of the server's CPU priorities ([`crate::priority::RENDER_NICE`]):
//! a list of hundreds of thousands of pods takes a core for a second or more, and on a small
//! machine small reads (an HPA's) and scraping must not queue behind it. The blocking pool of
//! the API's runtime does nothing else.
//!
//! Such a body has no length up front: HTTP/1.1 sends it chunked and HTTP/2 ends the stream with
//! its last frame, as Go's server does for large bodies. The bytes are those of a buffered render.
//!
//! A body is sent as [`Chunk`]s. A chunk is one buffer or a run of segments rendered earlier (a
//! kept answer, see [`crate::api::answers`]): the connection frames such a run itself, writing
//! each segment from where it lies (vectored writes), so a body of hundreds of segments costs
//! one hand-over and no copy.

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use std::io::IoSlice;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use hyper::body::{Frame, SizeHint};
use tokio::sync::mpsc;

use crate::priority;

/// How much rendered output is handed over at once.
pub const CHUNK_BYTES: usize = 256 * 1024;
/// Chunks rendered ahead of the client: with [`CHUNK_BYTES`], at most 1 MiB per body in flight.
pub const CHUNKS_IN_FLIGHT: usize = 4;
/// Room past a chunk's size, so the item that crosses the boundary rarely regrows the buffer.
const CHUNK_SLACK: usize = 16 * 1024;

/// The body of every response the API gives.
#[derive(Debug, Default)]
pub struct Body {
    inner: Inner,
}

#[derive(Debug)]
enum Inner {
    /// The whole body, taken when sent.
    Full(Option<Chunk>),
    /// What a renderer on the blocking pool hands over; the stream ends when it drops its
    /// sender.
    Streamed(mpsc::Receiver<Chunk>),
}

impl Default for Inner {
    fn default() -> Self {
        Inner::Full(None)
    }
}

/// A piece of a body as the connection sends it: one buffer, or segments rendered earlier (a
/// kept answer) sent as one piece, so that the connection frames them itself, reading each
/// segment where it is, without a copy and without a hand-over per segment.
#[derive(Debug)]
pub struct Chunk {
    inner: ChunkInner,
}

#[derive(Debug)]
enum ChunkInner {
    Bytes(Bytes),
    Segments(Segments),
}

/// A read position in a run of segments.
#[derive(Debug)]
struct Segments {
    segments: Arc<[Bytes]>,
    /// The segment read next, and where in it; past the last non-empty segment once all is read.
    index: usize,
    offset: usize,
    /// Bytes not read yet.
    left: usize,
}

// === impl Body ===

impl Body {
    /// An empty body.
    pub fn empty() -> Self {
        Body::default()
    }

    /// A body made of `segments`, in order, sent without a copy.
    pub fn segments(segments: Arc<[Bytes]>) -> Self {
        Body {
            inner: Inner::Full(Some(Chunk::segments(segments))),
        }
    }

    /// Whether this body is produced in chunks off the I/O workers.
    pub fn is_streamed(&self) -> bool {
        matches!(self.inner, Inner::Streamed(_))
    }
}

impl From<Bytes> for Body {
    fn from(bytes: Bytes) -> Self {
        Body {
            inner: Inner::Full(Some(Chunk::from(bytes))),
        }
    }
}

impl From<Vec<u8>> for Body {
    fn from(bytes: Vec<u8>) -> Self {
        Body::from(Bytes::from(bytes))
    }
}

impl hyper::body::Body for Body {
    type Data = Chunk;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Chunk>, Infallible>>> {
        match &mut self.get_mut().inner {
            Inner::Full(chunk) => Poll::Ready(
                chunk
                    .take()
                    .filter(|c| c.has_remaining())
                    .map(|c| Ok(Frame::data(c))),
            ),
            Inner::Streamed(chunks) => chunks
                .poll_recv(cx)
                .map(|chunk| chunk.map(|c| Ok(Frame::data(c)))),
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.inner {
            Inner::Full(chunk) => chunk.as_ref().is_none_or(|c| !c.has_remaining()),
            Inner::Streamed(_) => false,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.inner {
            Inner::Full(chunk) => {
                SizeHint::with_exact(chunk.as_ref().map_or(0, |c| c.remaining() as u64))
            }
            Inner::Streamed(_) => SizeHint::default(),
        }
    }
}

// === impl Chunk ===

impl Chunk {
    /// `segments`, in order, as one piece.
    pub fn segments(segments: Arc<[Bytes]>) -> Self {
        let left = segments.iter().map(Bytes::len).sum();
        let mut segments = Segments {
            segments,
            index: 0,
            offset: 0,
            left,
        };
        segments.skip_read();
        Chunk {
            inner: ChunkInner::Segments(segments),
        }
    }

    /// The bytes not yet sent.
    pub fn len(&self) -> usize {
        self.remaining()
    }

    pub fn is_empty(&self) -> bool {
        !self.has_remaining()
    }
}

impl From<Bytes> for Chunk {
    fn from(bytes: Bytes) -> Self {
        Chunk {
            inner: ChunkInner::Bytes(bytes),
        }
    }
}

impl Buf for Chunk {
    fn remaining(&self) -> usize {
        match &self.inner {
            ChunkInner::Bytes(bytes) => bytes.len(),
            ChunkInner::Segments(segments) => segments.left,
        }
    }

    fn chunk(&self) -> &[u8] {
        match &self.inner {
            ChunkInner::Bytes(bytes) => bytes,
            ChunkInner::Segments(segments) => segments.current(),
        }
    }

    fn advance(&mut self, count: usize) {
        match &mut self.inner {
            ChunkInner::Bytes(bytes) => bytes.advance(count.min(bytes.len())),
            ChunkInner::Segments(segments) => segments.advance(count),
        }
    }

    fn chunks_vectored<'a>(&'a self, dst: &mut [IoSlice<'a>]) -> usize {
        match &self.inner {
            ChunkInner::Bytes(bytes) => bytes.chunks_vectored(dst),
            ChunkInner::Segments(segments) => segments.chunks_vectored(dst),
        }
    }

    fn copy_to_bytes(&mut self, count: usize) -> Bytes {
        match &mut self.inner {
            ChunkInner::Bytes(bytes) => bytes.copy_to_bytes(count),
            // Within one segment, a slice of it; across segments, a copy.
            ChunkInner::Segments(segments) => match segments.segments.get(segments.index) {
                Some(segment) if segment.len() - segments.offset >= count => {
                    let slice = segment.slice(segments.offset..segments.offset + count);
                    segments.advance(count);
                    slice
                }
                _ => {
                    let mut copy = BytesMut::with_capacity(count);
                    copy.put((&mut *self).take(count));
                    copy.freeze()
                }
            },
        }
    }
}

// === impl Segments ===

impl Segments {
    /// What is left of the current segment.
    fn current(&self) -> &[u8] {
        self.segments
            .get(self.index)
            .and_then(|segment| segment.get(self.offset..))
            .unwrap_or_default()
    }

    /// Moves past `count` bytes (at most what is left).
    fn advance(&mut self, count: usize) {
        let mut count = count.min(self.left);
        self.left -= count;
        while count > 0 {
            let in_segment = self.current().len();
            if count < in_segment {
                self.offset += count;
                return;
            }
            count -= in_segment;
            self.index += 1;
            self.offset = 0;
        }
        self.skip_read();
    }

    /// Moves past the current segment while nothing of it is left to read.
    fn skip_read(&mut self) {
        while self.index < self.segments.len() && self.current().is_empty() {
            self.index += 1;
            self.offset = 0;
        }
    }

    fn chunks_vectored<'a>(&'a self, dst: &mut [IoSlice<'a>]) -> usize {
        let mut filled = 0;
        let mut slices = std::iter::once(self.current())
            .chain(self.segments.iter().skip(self.index + 1).map(|s| &s[..]))
            .filter(|slice| !slice.is_empty());
        for slot in dst.iter_mut() {
            let Some(slice) = slices.next() else {
                break;
            };
            *slot = IoSlice::new(slice);
            filled += 1;
        }
        filled
    }
}

/// Where an off-thread renderer writes: a buffer it appends to, handed to the client each time
/// it holds a chunk.
#[derive(Debug)]
pub struct Chunks {
    buffer: Vec<u8>,
    /// `None` when rendering inline (no runtime): everything stays in `buffer`.
    sender: Option<mpsc::Sender<Chunk>>,
    /// The client went away: rendering more is wasted.
    closed: bool,
}

// === impl Chunks ===

impl Chunks {
    fn streaming(sender: mpsc::Sender<Chunk>) -> Self {
        Chunks {
            buffer: Vec::with_capacity(CHUNK_BYTES + CHUNK_SLACK),
            sender: Some(sender),
            closed: false,
        }
    }

    fn buffered(capacity: usize) -> Self {
        Chunks {
            buffer: Vec::with_capacity(capacity),
            sender: None,
            closed: false,
        }
    }

    /// The buffer to append rendered bytes to.
    pub fn buffer(&mut self) -> &mut Vec<u8> {
        &mut self.buffer
    }

    /// Hands the buffer over if it holds at least a chunk, waiting while the client is
    /// [`CHUNKS_IN_FLIGHT`] chunks behind. Returns `false` once the client has gone, so the
    /// renderer can stop.
    pub fn flush_full(&mut self) -> bool {
        if self.buffer.len() >= CHUNK_BYTES {
            self.send(Vec::with_capacity(CHUNK_BYTES + CHUNK_SLACK));
        }
        !self.closed
    }

    /// Hands `segments` over as they are, in one piece, after whatever the buffer holds: a body
    /// rendered earlier (a kept answer) goes out without a copy. Without a client (rendering
    /// inline), they are appended to the buffer.
    pub fn hand_over(&mut self, segments: Arc<[Bytes]>) {
        if self.sender.is_none() {
            for segment in segments.iter() {
                self.buffer.extend_from_slice(segment);
            }
            return;
        }
        self.send(Vec::new());
        self.send_handed(Chunk::segments(segments));
    }

    /// Hands over what is left; the body ends when `self` is dropped.
    fn finish(mut self) -> Vec<u8> {
        if self.sender.is_some() {
            self.send(Vec::new());
        }
        std::mem::take(&mut self.buffer)
    }

    fn send(&mut self, next: Vec<u8>) {
        if self.sender.is_none() {
            // Rendering inline: everything stays in the buffer.
            return;
        }
        let chunk = std::mem::replace(&mut self.buffer, next);
        if !chunk.is_empty() {
            self.send_handed(Chunk::from(Bytes::from(chunk)));
        }
    }

    fn send_handed(&mut self, handed: Chunk) {
        let Some(sender) = &self.sender else {
            return;
        };
        if self.closed {
            return;
        }
        // Only ever called on the blocking pool (see `render_off_thread`), where waiting is
        // allowed.
        if sender.blocking_send(handed).is_err() {
            self.closed = true;
        }
    }
}

/// A body rendered by `render` on the runtime's blocking pool and streamed as it is produced.
///
/// Outside a tokio runtime (benchmarks and unit tests calling the router directly) `render` runs
/// here and the body is one buffer, sized by `expected_bytes`.
pub fn render_off_thread<F>(expected_bytes: usize, render: F) -> Body
where
    F: FnOnce(&mut Chunks) + Send + 'static,
{
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        let mut chunks = Chunks::buffered(expected_bytes);
        render(&mut chunks);
        return Body::from(chunks.finish());
    };
    let (sender, receiver) = mpsc::channel(CHUNKS_IN_FLIGHT);
    runtime.spawn_blocking(move || {
        priority::lower_current_thread(priority::RENDER_NICE);
        let mut chunks = Chunks::streaming(sender);
        render(&mut chunks);
        chunks.finish();
    });
    Body {
        inner: Inner::Streamed(receiver),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    fn render_numbers(chunks: &mut Chunks, count: usize) {
        for i in 0..count {
            chunks
                .buffer()
                .extend_from_slice(format!("{i},").as_bytes());
            if !chunks.flush_full() {
                return;
            }
        }
    }

    fn expected(count: usize) -> Vec<u8> {
        (0..count)
            .flat_map(|i| format!("{i},").into_bytes())
            .collect()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_streamed_body_carries_every_byte_in_order_in_bounded_chunks() {
        let count = 200_000;
        let mut body = render_off_thread(0, move |chunks| render_numbers(chunks, count));
        assert!(body.is_streamed());
        assert_eq!(hyper::body::Body::size_hint(&body).exact(), None);
        let mut received = Vec::new();
        while let Some(frame) = body.frame().await {
            let data = frame.unwrap().into_data().unwrap();
            assert!(data.len() < CHUNK_BYTES + CHUNK_SLACK, "{}", data.len());
            received.extend_from_slice(&flat(data));
        }
        assert_eq!(received, expected(count));
    }

    #[test]
    fn without_a_runtime_the_body_is_one_buffer_with_its_length() {
        let body = render_off_thread(16, |chunks| render_numbers(chunks, 100_000));
        assert!(!body.is_streamed());
        let length = hyper::body::Body::size_hint(&body).exact();
        let bytes = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(body.collect())
            .unwrap()
            .to_bytes();
        assert_eq!(length, Some(bytes.len() as u64));
        assert_eq!(bytes, expected(100_000));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_dropped_body_stops_its_renderer() {
        let (finished, done) = tokio::sync::oneshot::channel();
        let body = render_off_thread(0, move |chunks| {
            // Endless unless the client's going away is noticed.
            let mut i = 0u64;
            loop {
                chunks.buffer().extend_from_slice(&i.to_le_bytes());
                i += 1;
                if !chunks.flush_full() {
                    break;
                }
            }
            let _ = finished.send(i);
        });
        drop(body);
        let rendered = tokio::time::timeout(std::time::Duration::from_secs(30), done)
            .await
            .expect("the renderer stops")
            .unwrap();
        assert!(rendered > 0);
    }

    /// A chunk's bytes, read as a connection reads them.
    fn flat(mut chunk: Chunk) -> Vec<u8> {
        let mut out = Vec::new();
        while chunk.has_remaining() {
            let piece = chunk.chunk();
            assert!(!piece.is_empty(), "a chunk with bytes left shows some");
            out.extend_from_slice(piece);
            let read = piece.len();
            chunk.advance(read);
        }
        out
    }

    fn segments() -> Arc<[Bytes]> {
        vec![
            Bytes::new(),
            Bytes::from_static(b"{\"items\":["),
            Bytes::new(),
            Bytes::from_static(b"1,2"),
            Bytes::from_static(b"]}\n"),
            Bytes::new(),
        ]
        .into()
    }

    #[test]
    fn a_segmented_body_is_one_piece_reading_each_segment_in_place() {
        let segments = segments();
        let mut body = Body::segments(Arc::clone(&segments));
        assert!(!body.is_streamed());
        assert!(!hyper::body::Body::is_end_stream(&body));
        assert_eq!(hyper::body::Body::size_hint(&body).exact(), Some(16));
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let frame = runtime.block_on(body.frame()).unwrap().unwrap();
        assert!(runtime.block_on(body.frame()).is_none());
        assert!(hyper::body::Body::is_end_stream(&body));
        let chunk = frame.into_data().unwrap();
        assert_eq!(chunk.len(), 16);
        // Written as it lies: one slice per non-empty segment, the segments' own bytes.
        let mut slices = [IoSlice::new(&[]); 8];
        assert_eq!(chunk.chunks_vectored(&mut slices), 3);
        for (slice, segment) in slices
            .iter()
            .zip([&segments[1], &segments[3], &segments[4]])
        {
            assert_eq!(slice.as_ptr(), segment.as_ptr());
            assert_eq!(slice.len(), segment.len());
        }
        assert_eq!(flat(chunk), b"{\"items\":[1,2]}\n");
    }

    #[test]
    fn a_segmented_chunk_reads_across_segment_boundaries() {
        let whole = b"{\"items\":[1,2]}\n";
        for step in 1..=whole.len() {
            let mut chunk = Chunk::segments(segments());
            let mut read = Vec::new();
            while chunk.has_remaining() {
                let taken = chunk.copy_to_bytes(step.min(chunk.remaining()));
                read.extend_from_slice(&taken);
                // What is left is seen in place, from where reading stopped.
                let mut slices = [IoSlice::new(&[]); 8];
                let filled = chunk.chunks_vectored(&mut slices);
                let rest: Vec<u8> = slices[..filled].iter().flat_map(|s| s.to_vec()).collect();
                assert_eq!(rest, whole[read.len()..], "step {step}");
            }
            assert_eq!(read, whole, "step {step}");
            // Past the end, nothing moves.
            chunk.advance(5);
            assert_eq!(chunk.remaining(), 0);
        }
        // Within a segment, a slice of it rather than a copy.
        let segments = segments();
        let mut chunk = Chunk::segments(Arc::clone(&segments));
        chunk.advance(2);
        assert_eq!(chunk.copy_to_bytes(3).as_ptr(), segments[1][2..].as_ptr());
    }

    #[test]
    fn an_empty_full_body_ends_at_once() {
        let body = Body::empty();
        assert!(hyper::body::Body::is_end_stream(&body));
        assert_eq!(hyper::body::Body::size_hint(&body).exact(), Some(0));
    }

    #[test]
    fn long_lists_render_at_a_lower_priority() {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .build()
            .unwrap();
        let (seen, nice) = std::sync::mpsc::channel();
        let body = runtime.block_on(async move {
            render_off_thread(16, move |chunks| {
                let _ = seen.send(priority::current_thread_nice());
                chunks.buffer().extend_from_slice(b"done");
            })
        });
        let collected = runtime.block_on(body.collect()).unwrap().to_bytes();
        assert_eq!(&collected[..], b"done");
        assert!(nice.recv().unwrap().expect("readable") >= priority::RENDER_NICE);
    }
}
