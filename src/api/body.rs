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
//! Renderers run at a lower CPU priority (nice [`RENDER_NICE`]): a list of hundreds of thousands
//! of pods takes a core for a second or more, and on a small machine small reads (an HPA's) and
//! scraping must not queue behind it. The blocking pool of the API's runtime does nothing else.
//!
//! Such a body has no length up front: HTTP/1.1 sends it chunked and HTTP/2 ends the stream with
//! its last frame, as Go's server does for large bodies. The bytes are those of a buffered render.

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use hyper::body::{Frame, SizeHint};
use tokio::sync::mpsc;

/// The nice value of threads rendering long lists (0 is the default, 19 the lowest priority).
pub const RENDER_NICE: i32 = 10;

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
    Full(Option<Bytes>),
    /// What a renderer on the blocking pool hands over; the stream ends when it drops its
    /// sender.
    Streamed {
        handed: mpsc::Receiver<Handed>,
        /// Segments handed over and not all sent yet.
        segments: Option<Segments>,
    },
    /// A body rendered earlier in segments (a kept answer).
    Segments(Segments),
}

/// What a renderer hands over at a time.
#[derive(Debug)]
enum Handed {
    Chunk(Bytes),
    /// Bytes rendered earlier (a kept answer's segments), sent as they are.
    Segments(Arc<[Bytes]>),
}

/// Segments of a body, sent one after another without a copy.
#[derive(Debug)]
struct Segments {
    segments: Arc<[Bytes]>,
    next: usize,
    /// The bytes of the segments not yet sent.
    left: u64,
}

impl Default for Inner {
    fn default() -> Self {
        Inner::Full(None)
    }
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
            inner: Inner::Segments(Segments::new(segments)),
        }
    }

    /// Whether this body is produced in chunks off the I/O workers.
    pub fn is_streamed(&self) -> bool {
        matches!(self.inner, Inner::Streamed { .. })
    }
}

impl From<Bytes> for Body {
    fn from(bytes: Bytes) -> Self {
        Body {
            inner: Inner::Full(Some(bytes)),
        }
    }
}

impl From<Vec<u8>> for Body {
    fn from(bytes: Vec<u8>) -> Self {
        Body::from(Bytes::from(bytes))
    }
}

impl hyper::body::Body for Body {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let data = match &mut self.get_mut().inner {
            Inner::Full(bytes) => bytes.take().filter(|b| !b.is_empty()),
            Inner::Streamed { handed, segments } => loop {
                if let Some(segment) = segments.as_mut().and_then(Segments::next_segment) {
                    break Some(segment);
                }
                *segments = None;
                match std::task::ready!(handed.poll_recv(cx)) {
                    Some(Handed::Chunk(chunk)) => break Some(chunk),
                    Some(Handed::Segments(handed)) => *segments = Some(Segments::new(handed)),
                    None => break None,
                }
            },
            Inner::Segments(segments) => segments.next_segment(),
        };
        Poll::Ready(data.map(|data| Ok(Frame::data(data))))
    }

    fn is_end_stream(&self) -> bool {
        match &self.inner {
            Inner::Full(bytes) => bytes.as_ref().is_none_or(Bytes::is_empty),
            Inner::Streamed { .. } => false,
            Inner::Segments(segments) => segments.left == 0,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.inner {
            Inner::Full(bytes) => {
                SizeHint::with_exact(bytes.as_ref().map_or(0, |b| b.len() as u64))
            }
            Inner::Streamed { .. } => SizeHint::default(),
            Inner::Segments(segments) => SizeHint::with_exact(segments.left),
        }
    }
}

// === impl Segments ===

impl Segments {
    fn new(segments: Arc<[Bytes]>) -> Self {
        let left = segments.iter().map(|s| s.len() as u64).sum();
        Segments {
            segments,
            next: 0,
            left,
        }
    }

    /// The next non-empty segment, if any is left.
    fn next_segment(&mut self) -> Option<Bytes> {
        while let Some(segment) = self.segments.get(self.next) {
            self.next += 1;
            if !segment.is_empty() {
                self.left -= segment.len() as u64;
                return Some(segment.clone());
            }
        }
        None
    }
}

/// Where an off-thread renderer writes: a buffer it appends to, handed to the client each time
/// it holds a chunk.
#[derive(Debug)]
pub struct Chunks {
    buffer: Vec<u8>,
    /// `None` when rendering inline (no runtime): everything stays in `buffer`.
    sender: Option<mpsc::Sender<Handed>>,
    /// The client went away: rendering more is wasted.
    closed: bool,
}

// === impl Chunks ===

impl Chunks {
    fn streaming(sender: mpsc::Sender<Handed>) -> Self {
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
        self.send_handed(Handed::Segments(segments));
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
            self.send_handed(Handed::Chunk(Bytes::from(chunk)));
        }
    }

    fn send_handed(&mut self, handed: Handed) {
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
        lower_thread_priority();
        let mut chunks = Chunks::streaming(sender);
        render(&mut chunks);
        chunks.finish();
    });
    Body {
        inner: Inner::Streamed {
            handed: receiver,
            segments: None,
        },
    }
}

/// Makes the calling thread run at [`RENDER_NICE`] (Linux nice values are per thread). Left as it
/// is when the thread already runs at that priority or lower, or when the system refuses.
fn lower_thread_priority() {
    // SAFETY: `gettid` has no preconditions.
    let thread = unsafe { libc::gettid() };
    let Ok(id) = libc::id_t::try_from(thread) else {
        return;
    };
    // `getpriority` can return -1 as a valid value, so errors are told apart by `errno`; any
    // failure just leaves the priority alone.
    // SAFETY: plain system calls on this thread's own id; no memory is passed.
    unsafe {
        *libc::__errno_location() = 0;
        let current = libc::getpriority(libc::PRIO_PROCESS, id);
        if *libc::__errno_location() != 0 || current >= RENDER_NICE {
            return;
        }
        let _ = libc::setpriority(libc::PRIO_PROCESS, id, RENDER_NICE);
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
            received.extend_from_slice(&data);
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

    #[test]
    fn a_segmented_body_sends_its_segments_in_order_with_their_length() {
        let segments: Arc<[Bytes]> = vec![
            Bytes::from_static(b"{\"items\":["),
            Bytes::new(),
            Bytes::from_static(b"1,2"),
            Bytes::from_static(b"]}\n"),
        ]
        .into();
        let mut body = Body::segments(Arc::clone(&segments));
        assert!(!body.is_streamed());
        assert!(!hyper::body::Body::is_end_stream(&body));
        assert_eq!(hyper::body::Body::size_hint(&body).exact(), Some(16));
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let mut frames = Vec::new();
        while let Some(frame) = runtime.block_on(body.frame()) {
            let data = frame.unwrap().into_data().unwrap();
            // Handed over as they are: the very bytes of the segment.
            assert!(segments.iter().any(|s| s.as_ptr() == data.as_ptr()));
            frames.push(data);
        }
        assert_eq!(frames, [&segments[0], &segments[2], &segments[3]]);
        assert!(hyper::body::Body::is_end_stream(&body));
        assert_eq!(hyper::body::Body::size_hint(&body).exact(), Some(0));
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
                // SAFETY: as in `lower_thread_priority`.
                let id = unsafe { libc::gettid() } as libc::id_t;
                let priority = unsafe { libc::getpriority(libc::PRIO_PROCESS, id) };
                let _ = seen.send(priority);
                chunks.buffer().extend_from_slice(b"done");
            })
        });
        let collected = runtime.block_on(body.collect()).unwrap().to_bytes();
        assert_eq!(&collected[..], b"done");
        assert!(nice.recv().unwrap() >= RENDER_NICE);
    }
}
