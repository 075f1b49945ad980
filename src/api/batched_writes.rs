//! An HTTP/2 connection's responses gathered into few writes.
//!
//! hyper's HTTP/2 server writes out and flushes what is queued each time it takes the next
//! request of a read. Every response then went out as a TLS record and a `writev` of its own,
//! and over loopback each `writev` is also a pass through the peer's TCP stack: the largest
//! single cost of a small answer. [`BatchedWrites`] sits between HTTP/2 and TLS. Writes are
//! gathered in a buffer. A flush during the connection's current *turn* (one poll of its task,
//! counted by [`counting_turns`]) is answered at once but put off: the task is woken to run
//! again after the tasks already waiting, and the first flush of a later turn writes everything
//! gathered. So the responses to all the requests one read brought in, and to those that
//! finished elsewhere meanwhile, leave in one write of large records.
//!
//! The put-off write is always made: the wake guarantees a later turn, and every turn of an
//! HTTP/2 connection ends by flushing. Shutdown writes what is gathered first. At most
//! [`MAX_GATHERED`] bytes wait; past that a write goes out before more are taken.
//!
//! A turn writes out at most [`TURN_BYTES`]; then the connection yields to the tasks waiting
//! behind it, so a long list (tens of MB to encrypt and write) never holds an API worker for
//! more than a fraction of a millisecond while short answers wait.
//!
//! Owns only the gathered bytes; reads pass straight through. The buffer comes from a small
//! per-thread pool and goes back once written out, so an idle connection holds none and a busy
//! one never grows or faults in a new one. HTTP/1.1 connections (one response at a time,
//! nothing to gather) are staged the same way but never put off: a flush writes at once.
//!
//! Staging also places the bytes for TLS. rustls copies each record's plaintext into a fresh
//! buffer, [`TLS_RECORD_HEADER`] bytes past its start; on some x86 processors (AMD's Zen among
//! them) the `rep movsb` behind a large `memcpy` runs twenty to forty times slower when the
//! destination lies 1 to 63 bytes past the source modulo 4 KiB, which a page-aligned body
//! (a kept answer's segment, a rendered chunk) against a page-aligned record buffer always
//! gives. Staged bytes start at the header's length past a 64-byte boundary, so the two stay
//! aligned alike and the copy runs at full speed.

use std::cell::RefCell;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The most bytes gathered before a write goes out regardless of the turn. A gathering buffer
/// holds this plus its lead-in, so it never grows.
pub const MAX_GATHERED: usize = 128 * 1024;

/// The most bytes one turn writes out. Past it the connection yields (it wakes itself and
/// answers "not yet"), so a long list being sent holds an API worker for a fraction of a
/// millisecond at a time, and the short answers of the connections queued behind it go out
/// in between.
pub const TURN_BYTES: usize = 256 * 1024;

/// A TLS record's header: where rustls puts a record's plaintext in the buffer it encrypts.
pub const TLS_RECORD_HEADER: usize = 5;

/// Staged bytes start this far past a multiple of it (see the module docs).
const STAGING_ALIGN: usize = 64;

/// Gathering buffers kept per thread for the connections that gather at the same instant. A
/// connection holds one only while it has bytes waiting.
const KEPT_PER_THREAD: usize = 4;

thread_local! {
    static BUFFERS: RefCell<Vec<Vec<u8>>> = const { RefCell::new(Vec::new()) };
}

fn take_buffer() -> Vec<u8> {
    BUFFERS
        .try_with(|pool| pool.borrow_mut().pop())
        .ok()
        .flatten()
        .unwrap_or_else(|| Vec::with_capacity(MAX_GATHERED + STAGING_ALIGN))
}

/// The lead-in for a buffer at `start`: staged bytes then begin [`TLS_RECORD_HEADER`] bytes
/// past a multiple of [`STAGING_ALIGN`], as a record's plaintext does in rustls's buffer.
fn lead_in(start: *const u8) -> usize {
    (TLS_RECORD_HEADER + STAGING_ALIGN - start as usize % STAGING_ALIGN) % STAGING_ALIGN
}

fn give_back(mut buffer: Vec<u8>) {
    buffer.clear();
    // A thread being torn down drops the buffer instead.
    let _ = BUFFERS.try_with(|pool| {
        let mut pool = pool.borrow_mut();
        if pool.len() < KEPT_PER_THREAD {
            pool.push(buffer);
        }
    });
}

/// Counts the polls of one connection's task; shared by the task and its transport.
#[derive(Clone, Debug, Default)]
pub struct Turns(Arc<AtomicU64>);

impl Turns {
    fn current(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }

    fn advance(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
}

/// Runs `connection`, advancing `turns` each time its task polls it.
pub async fn counting_turns<F: Future>(turns: Turns, connection: F) -> F::Output {
    let mut connection = std::pin::pin!(connection);
    std::future::poll_fn(|cx| {
        turns.advance();
        connection.as_mut().poll(cx)
    })
    .await
}

/// A transport whose writes are gathered and written out one turn later (see the module docs).
#[derive(Debug)]
pub struct BatchedWrites<S> {
    inner: S,
    /// Off for HTTP/1.1: bytes are staged, but every flush writes them at once.
    putting_off: bool,
    /// A lead-in (see [`lead_in`]), then the bytes gathered.
    gathered: Vec<u8>,
    /// How much of `gathered` is the lead-in or already written out.
    written: usize,
    turns: Turns,
    /// The turn in which a flush was answered without writing; a flush in any later turn
    /// writes.
    put_off_in: Option<u64>,
    /// The last turn that wrote, and how many bytes it wrote.
    written_in: (u64, usize),
}

impl<S> BatchedWrites<S> {
    /// Puts flushes off by a turn when `putting_off` (HTTP/2); stages writes either way.
    pub fn new(inner: S, turns: Turns, putting_off: bool) -> Self {
        BatchedWrites {
            inner,
            putting_off,
            gathered: Vec::new(),
            written: 0,
            turns,
            put_off_in: None,
            written_in: (0, 0),
        }
    }

    /// The transport underneath.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    fn waiting(&self) -> usize {
        self.gathered.len() - self.written
    }
}

impl<S: AsyncWrite + Unpin> BatchedWrites<S> {
    /// Writes out everything gathered, and gives the buffer back to the thread's pool.
    /// A turn that already wrote [`TURN_BYTES`] writes nothing more: the task is woken to go on
    /// in a later turn.
    fn poll_write_out(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.written < self.gathered.len() {
            let turn = self.turns.current();
            if self.written_in.0 != turn {
                self.written_in = (turn, 0);
            } else if self.written_in.1 >= TURN_BYTES {
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            let n =
                ready!(Pin::new(&mut self.inner).poll_write(cx, &self.gathered[self.written..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.written += n;
            self.written_in.1 += n;
        }
        self.written = 0;
        if self.gathered.capacity() > 0 {
            give_back(std::mem::take(&mut self.gathered));
        }
        self.put_off_in = None;
        Poll::Ready(Ok(()))
    }

    /// Takes `parts` into the buffer, writing out what waits first if they would not fit.
    /// Everything offered is taken, unless that first write-out cannot finish now.
    fn poll_gather<'b>(
        &mut self,
        cx: &mut Context<'_>,
        parts: impl Iterator<Item = &'b [u8]> + Clone,
    ) -> Poll<io::Result<usize>> {
        let total: usize = parts.clone().map(<[u8]>::len).sum();
        if self.waiting() > 0 && self.waiting() + total > MAX_GATHERED {
            ready!(self.poll_write_out(cx))?;
        }
        if self.gathered.capacity() == 0 {
            self.gathered = take_buffer();
        }
        if self.gathered.is_empty() {
            let lead = lead_in(self.gathered.as_ptr());
            self.gathered.resize(lead, 0);
            self.written = lead;
        }
        // Past the capacity only when one write alone is larger; then the buffer grows for it.
        for part in parts {
            self.gathered.extend_from_slice(part);
        }
        Poll::Ready(Ok(total))
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for BatchedWrites<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for BatchedWrites<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.poll_gather(cx, std::iter::once(buf))
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.poll_gather(cx, bufs.iter().map(|buf| &**buf))
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.waiting() > 0 && !self.putting_off {
            ready!(self.poll_write_out(cx))?;
        } else if self.waiting() > 0 {
            let turn = self.turns.current();
            match self.put_off_in {
                None => {
                    // Answered now, written in a later turn: the wake makes sure there is one.
                    self.put_off_in = Some(turn);
                    cx.waker().wake_by_ref();
                    return Poll::Ready(Ok(()));
                }
                Some(put_off) if put_off == turn => return Poll::Ready(Ok(())),
                Some(_) => ready!(self.poll_write_out(cx))?,
            }
        }
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.poll_write_out(cx))?;
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::sync::atomic::AtomicUsize;
    use std::task::Wake;

    /// A transport that records each write it is given, taking at most `step` bytes a call.
    #[derive(Default)]
    struct Recorder {
        writes: Vec<Vec<u8>>,
        /// Where each write's bytes started, modulo [`STAGING_ALIGN`].
        alignments: Vec<usize>,
        step: Option<usize>,
        shut: bool,
    }

    impl AsyncWrite for Recorder {
        fn poll_write(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            let n = self.step.map_or(buf.len(), |step| step.min(buf.len()));
            self.writes.push(buf[..n].to_vec());
            self.alignments.push(buf.as_ptr() as usize % STAGING_ALIGN);
            Poll::Ready(Ok(n))
        }

        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }

        fn poll_shutdown(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            self.shut = true;
            Poll::Ready(Ok(()))
        }
    }

    impl AsyncRead for Recorder {
        fn poll_read(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
            _: &mut ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    /// Counts its wakes.
    #[derive(Default)]
    struct CountingWaker(AtomicUsize);

    impl Wake for CountingWaker {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }

        fn wake_by_ref(self: &Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    /// A waker counting its wakes, and the count.
    fn counting_waker() -> (Arc<CountingWaker>, std::task::Waker) {
        let waker = Arc::new(CountingWaker::default());
        let handle = std::task::Waker::from(Arc::clone(&waker));
        (waker, handle)
    }

    fn write(io: &mut BatchedWrites<Recorder>, cx: &mut Context<'_>, bytes: &[u8]) {
        let taken = Pin::new(io).poll_write(cx, bytes);
        assert!(matches!(taken, Poll::Ready(Ok(n)) if n == bytes.len()));
    }

    fn flush(io: &mut BatchedWrites<Recorder>, cx: &mut Context<'_>) {
        assert!(matches!(Pin::new(io).poll_flush(cx), Poll::Ready(Ok(()))));
    }

    #[test]
    fn flushes_of_one_turn_are_written_together_in_the_next() {
        let turns = Turns::default();
        let (waker, waker_handle) = counting_waker();
        let mut cx = Context::from_waker(&waker_handle);
        let mut io = BatchedWrites::new(Recorder::default(), turns.clone(), true);

        turns.advance();
        write(&mut io, &mut cx, b"first response;");
        flush(&mut io, &mut cx);
        write(&mut io, &mut cx, b"second;");
        io.poll_write_vectored_all(&mut cx, &[b"third ", b"in two parts;"]);
        flush(&mut io, &mut cx);
        assert!(
            io.get_ref().writes.is_empty(),
            "nothing written in the turn"
        );
        assert_eq!(waker.0.load(Ordering::SeqCst), 1, "one wake for the turn");

        turns.advance();
        flush(&mut io, &mut cx);
        assert_eq!(
            io.get_ref().writes,
            [b"first response;second;third in two parts;".to_vec()]
        );
        assert_eq!(
            io.gathered.capacity(),
            0,
            "the buffer went back to the pool"
        );

        // Nothing waiting: a flush passes through without a wake.
        flush(&mut io, &mut cx);
        assert_eq!(io.get_ref().writes.len(), 1);
        assert_eq!(waker.0.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn a_short_transport_gets_everything_in_order() {
        let turns = Turns::default();
        let mut cx = Context::from_waker(std::task::Waker::noop());
        let recorder = Recorder {
            step: Some(3),
            ..Recorder::default()
        };
        let mut io = BatchedWrites::new(recorder, turns.clone(), true);
        write(&mut io, &mut cx, b"abcdefgh");
        flush(&mut io, &mut cx);
        turns.advance();
        flush(&mut io, &mut cx);
        assert_eq!(io.get_ref().writes.concat(), b"abcdefgh");
        assert_eq!(io.get_ref().writes.len(), 3);
    }

    #[test]
    fn past_the_limit_a_write_goes_out_before_more_is_taken() {
        let turns = Turns::default();
        let mut cx = Context::from_waker(std::task::Waker::noop());
        let mut io = BatchedWrites::new(Recorder::default(), turns, true);
        let block = vec![7u8; MAX_GATHERED];
        write(&mut io, &mut cx, &block);
        assert!(io.get_ref().writes.is_empty());
        write(&mut io, &mut cx, b"next");
        assert_eq!(io.get_ref().writes, [block]);
        assert_eq!(io.waiting(), 4);
    }

    #[test]
    fn a_turn_that_wrote_its_share_yields_and_the_next_goes_on() {
        let turns = Turns::default();
        let (waker, waker_handle) = counting_waker();
        let mut cx = Context::from_waker(&waker_handle);
        let mut io = BatchedWrites::new(Recorder::default(), turns.clone(), false);
        let block = vec![1u8; MAX_GATHERED];
        let total = 4 * TURN_BYTES;
        let mut taken = 0;
        let mut per_turn = vec![0usize];
        let mut written_before = 0;
        let mut next_turn = |io: &BatchedWrites<Recorder>, per_turn: &mut Vec<usize>| {
            let written: usize = io.get_ref().writes.iter().map(Vec::len).sum();
            *per_turn.last_mut().unwrap() = written - written_before;
            written_before = written;
            per_turn.push(0);
            turns.advance();
        };
        // A long body offered a block at a time, as a list's chunks are, then flushed.
        while taken < total {
            match Pin::new(&mut io).poll_write(&mut cx, &block) {
                Poll::Ready(Ok(n)) => taken += n,
                Poll::Pending => next_turn(&io, &mut per_turn),
                Poll::Ready(Err(error)) => panic!("{error}"),
            }
        }
        loop {
            match Pin::new(&mut io).poll_flush(&mut cx) {
                Poll::Ready(Ok(())) => break,
                Poll::Pending => next_turn(&io, &mut per_turn),
                Poll::Ready(Err(error)) => panic!("{error}"),
            }
        }
        next_turn(&io, &mut per_turn);
        assert!(
            per_turn.iter().all(|&n| n <= TURN_BYTES),
            "no turn wrote more than its share: {per_turn:?}"
        );
        let yields = per_turn.len() - 2;
        assert!(yields >= 3, "{per_turn:?}");
        assert_eq!(
            waker.0.load(Ordering::SeqCst),
            yields,
            "woken at each yield"
        );
        assert_eq!(io.get_ref().writes.concat(), vec![1u8; total]);
    }

    #[test]
    fn shutdown_writes_what_waits_first() {
        let turns = Turns::default();
        let mut cx = Context::from_waker(std::task::Waker::noop());
        let mut io = BatchedWrites::new(Recorder::default(), turns, true);
        write(&mut io, &mut cx, b"goaway");
        flush(&mut io, &mut cx);
        assert!(matches!(
            Pin::new(&mut io).poll_shutdown(&mut cx),
            Poll::Ready(Ok(()))
        ));
        assert_eq!(io.get_ref().writes, [b"goaway".to_vec()]);
        assert!(io.get_ref().shut);
    }

    #[test]
    fn http1_is_written_at_each_flush_without_a_wake() {
        let turns = Turns::default();
        let (waker, waker_handle) = counting_waker();
        let mut cx = Context::from_waker(&waker_handle);
        let mut io = BatchedWrites::new(Recorder::default(), turns.clone(), false);
        turns.advance();
        write(&mut io, &mut cx, b"HTTP/1.1 200 OK\r\n");
        io.poll_write_vectored_all(&mut cx, &[b"content-length: 2\r\n\r\n", b"{}"]);
        assert!(io.get_ref().writes.is_empty(), "staged until the flush");
        flush(&mut io, &mut cx);
        assert_eq!(
            io.get_ref().writes,
            [b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}".to_vec()]
        );
        assert_eq!(waker.0.load(Ordering::SeqCst), 0, "nothing put off");
        assert_eq!(io.gathered.capacity(), 0, "the buffer went back");
    }

    #[test]
    fn staged_bytes_start_where_a_record_plaintext_does() {
        let turns = Turns::default();
        let mut cx = Context::from_waker(std::task::Waker::noop());
        for putting_off in [true, false] {
            let mut io = BatchedWrites::new(Recorder::default(), turns.clone(), putting_off);
            for round in 0..3 {
                // A page-aligned source, as a kept answer's segment is.
                let body = vec![round; 3 * 4096];
                write(&mut io, &mut cx, &body);
                flush(&mut io, &mut cx);
                turns.advance();
                flush(&mut io, &mut cx);
            }
            let recorder = io.get_ref();
            assert_eq!(recorder.writes.len(), 3);
            assert!(
                recorder.alignments.iter().all(|&a| a == TLS_RECORD_HEADER),
                "{:?}",
                recorder.alignments
            );
        }
        for address in [0usize, 1, 5, 6, 63, 64, 4096 + 17] {
            let lead = lead_in(address as *const u8);
            assert!(lead < STAGING_ALIGN);
            assert_eq!((address + lead) % STAGING_ALIGN, TLS_RECORD_HEADER);
        }
    }

    #[tokio::test]
    async fn counting_turns_advances_once_per_poll() {
        let turns = Turns::default();
        let mut polls = 0;
        let pending_twice = std::future::poll_fn(|cx| {
            polls += 1;
            if polls < 3 {
                cx.waker().wake_by_ref();
                Poll::Pending
            } else {
                Poll::Ready(polls)
            }
        });
        assert_eq!(counting_turns(turns.clone(), pending_twice).await, 3);
        assert_eq!(turns.current(), 3);
    }

    impl BatchedWrites<Recorder> {
        fn poll_write_vectored_all(&mut self, cx: &mut Context<'_>, parts: &[&[u8]]) {
            let slices: Vec<io::IoSlice<'_>> = parts.iter().map(|p| io::IoSlice::new(p)).collect();
            let total: usize = parts.iter().map(|p| p.len()).sum();
            let taken = Pin::new(self).poll_write_vectored(cx, &slices);
            assert!(matches!(taken, Poll::Ready(Ok(n)) if n == total));
        }
    }
}
