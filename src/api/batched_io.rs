//! Gathers a connection's writes so that responses finished close together leave in one write.
//!
//! hyper's HTTP/2 codec writes each response's DATA frame and flushes before it takes the next,
//! so without this each short response (an HPA's few kilobytes) costs its own TLS record, its
//! own `writev` and its own trip through the loopback or network stack. Here writes go into a
//! buffer (up to [`BATCH_BYTES`]); a flush yields the connection's task once, so the streams
//! whose answers are ready run and queue theirs first, and the next flush writes the lot. A
//! write at least as large as the buffer passes straight through.
//!
//! Nothing is held back past the task's next turn: a flush after the yield writes everything,
//! and so does a read (a connection's task always reads when it runs), so a codec that does not
//! flush again still gets its bytes out. Owns only the buffer; knows nothing of HTTP.

use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Bytes gathered at most before they are written: four 16 KiB TLS records.
pub const BATCH_BYTES: usize = 64 * 1024;

/// An I/O stream whose writes are gathered until a flush, which yields once before it writes.
#[derive(Debug)]
pub struct BatchedWrites<T> {
    inner: T,
    buffer: Vec<u8>,
    /// How much of `buffer` has been written to `inner`.
    written: usize,
    /// A flush has yielded since the last write-out.
    yielded: bool,
}

impl<T> BatchedWrites<T> {
    pub fn new(inner: T) -> Self {
        BatchedWrites {
            inner,
            buffer: Vec::new(),
            written: 0,
            yielded: false,
        }
    }

    pub fn get_ref(&self) -> &T {
        &self.inner
    }
}

impl<T: AsyncWrite + Unpin> BatchedWrites<T> {
    /// Writes out everything gathered.
    fn poll_write_out(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.written < self.buffer.len() {
            let n = ready!(Pin::new(&mut self.inner).poll_write(cx, &self.buffer[self.written..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.written += n;
        }
        self.buffer.clear();
        self.written = 0;
        self.yielded = false;
        Poll::Ready(Ok(()))
    }

    /// Room for `len` more bytes, writing out first if the buffer is full. `None`: `len` bytes
    /// are to pass straight through (the buffer is empty and they would fill it).
    fn poll_room(&mut self, cx: &mut Context<'_>, len: usize) -> Poll<io::Result<Option<usize>>> {
        if self.buffer.len() >= BATCH_BYTES {
            ready!(self.poll_write_out(cx))?;
        }
        if self.buffer.is_empty() && len >= BATCH_BYTES {
            return Poll::Ready(Ok(None));
        }
        Poll::Ready(Ok(Some(BATCH_BYTES - self.buffer.len())))
    }
}

impl<T: AsyncRead + AsyncWrite + Unpin> AsyncRead for BatchedWrites<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        // The task runs again after a flush yielded: whatever it was gathering goes out now,
        // whether or not its codec flushes again. A full socket keeps the rest for later.
        if this.yielded {
            if let Poll::Ready(Err(error)) = this.poll_write_out(cx) {
                return Poll::Ready(Err(error));
            }
        }
        Pin::new(&mut this.inner).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for BatchedWrites<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        match ready!(this.poll_room(cx, data.len()))? {
            None => Pin::new(&mut this.inner).poll_write(cx, data),
            Some(room) => {
                let n = room.min(data.len());
                this.buffer.extend_from_slice(&data[..n]);
                Poll::Ready(Ok(n))
            }
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        slices: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let len = slices.iter().map(|s| s.len()).sum();
        match ready!(this.poll_room(cx, len))? {
            None => Pin::new(&mut this.inner).poll_write_vectored(cx, slices),
            Some(mut room) => {
                let mut n = 0;
                for slice in slices {
                    let take = room.min(slice.len());
                    this.buffer.extend_from_slice(&slice[..take]);
                    n += take;
                    room -= take;
                    if room == 0 {
                        break;
                    }
                }
                Poll::Ready(Ok(n))
            }
        }
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !this.buffer.is_empty() && !this.yielded && this.buffer.len() < BATCH_BYTES {
            // Once, then write: the streams already woken queue their answers meanwhile.
            this.yielded = true;
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        ready!(this.poll_write_out(cx))?;
        Pin::new(&mut this.inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_write_out(cx))?;
        Pin::new(&mut this.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use std::task::{Wake, Waker};

    /// Records each write it takes, taking at most `limit` bytes a call.
    #[derive(Default)]
    struct Recorder {
        writes: Vec<Vec<u8>>,
        limit: Option<usize>,
        flushes: usize,
        input: Vec<u8>,
    }

    impl AsyncWrite for Recorder {
        fn poll_write(
            mut self: Pin<&mut Self>,
            _cx: &mut Context<'_>,
            data: &[u8],
        ) -> Poll<io::Result<usize>> {
            let n = self.limit.unwrap_or(usize::MAX).min(data.len());
            self.writes.push(data[..n].to_vec());
            Poll::Ready(Ok(n))
        }
        fn poll_flush(mut self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            self.flushes += 1;
            Poll::Ready(Ok(()))
        }
        fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    impl AsyncRead for Recorder {
        fn poll_read(
            mut self: Pin<&mut Self>,
            _cx: &mut Context<'_>,
            buf: &mut ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
            let input = std::mem::take(&mut self.input);
            buf.put_slice(&input);
            Poll::Ready(Ok(()))
        }
    }

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

    fn context() -> (Arc<CountingWaker>, Waker) {
        let wakes = Arc::new(CountingWaker::default());
        let waker = Waker::from(Arc::clone(&wakes));
        (wakes, waker)
    }

    fn write(io: &mut BatchedWrites<Recorder>, cx: &mut Context<'_>, data: &[u8]) -> usize {
        match Pin::new(io).poll_write(cx, data) {
            Poll::Ready(Ok(n)) => n,
            other => panic!("write: {other:?}"),
        }
    }

    #[test]
    fn writes_gather_until_the_flush_after_one_yield() {
        let (wakes, waker) = context();
        let mut cx = Context::from_waker(&waker);
        let mut io = BatchedWrites::new(Recorder::default());
        assert_eq!(write(&mut io, &mut cx, b"first "), 6);
        assert_eq!(write(&mut io, &mut cx, b"second "), 7);
        // The first flush yields and wakes the task to run again.
        assert!(Pin::new(&mut io).poll_flush(&mut cx).is_pending());
        assert_eq!(wakes.0.load(Ordering::SeqCst), 1);
        assert!(io.inner.writes.is_empty());
        // Meanwhile another answer is queued; the next flush writes all three at once.
        let slices = [io::IoSlice::new(b"thi"), io::IoSlice::new(b"rd")];
        assert!(matches!(
            Pin::new(&mut io).poll_write_vectored(&mut cx, &slices),
            Poll::Ready(Ok(5))
        ));
        assert!(matches!(
            Pin::new(&mut io).poll_flush(&mut cx),
            Poll::Ready(Ok(()))
        ));
        assert_eq!(io.inner.writes, vec![b"first second third".to_vec()]);
        assert_eq!(io.inner.flushes, 1);
        // A flush with nothing gathered does not yield.
        assert!(Pin::new(&mut io).poll_flush(&mut cx).is_ready());
        assert_eq!(wakes.0.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn a_read_after_the_yield_writes_out_what_was_gathered() {
        let (_wakes, waker) = context();
        let mut cx = Context::from_waker(&waker);
        let mut io = BatchedWrites::new(Recorder {
            input: b"next request".to_vec(),
            ..Recorder::default()
        });
        write(&mut io, &mut cx, b"answer");
        assert!(Pin::new(&mut io).poll_flush(&mut cx).is_pending());
        let mut storage = [0u8; 32];
        let mut read = ReadBuf::new(&mut storage);
        assert!(Pin::new(&mut io).poll_read(&mut cx, &mut read).is_ready());
        assert_eq!(read.filled(), b"next request");
        assert_eq!(io.inner.writes, vec![b"answer".to_vec()]);
    }

    #[test]
    fn a_full_buffer_is_written_before_more_is_taken_and_partial_writes_continue() {
        let (_wakes, waker) = context();
        let mut cx = Context::from_waker(&waker);
        let mut io = BatchedWrites::new(Recorder {
            limit: Some(BATCH_BYTES / 3),
            ..Recorder::default()
        });
        let chunk = vec![7u8; BATCH_BYTES - 10];
        assert_eq!(write(&mut io, &mut cx, &chunk), BATCH_BYTES - 10);
        // Only the room left is taken.
        assert_eq!(write(&mut io, &mut cx, &[1u8; 30]), 10);
        assert!(io.inner.writes.is_empty());
        // Full: written out (in pieces the inner stream accepts) before the next bytes.
        assert_eq!(write(&mut io, &mut cx, &[2u8; 20]), 20);
        let out: Vec<u8> = io.inner.writes.concat();
        assert_eq!(out.len(), BATCH_BYTES);
        assert!(io.inner.writes.len() >= 3);
        // Shutdown writes out the rest.
        assert!(Pin::new(&mut io).poll_shutdown(&mut cx).is_ready());
        assert_eq!(io.inner.writes.concat().len(), BATCH_BYTES + 20);
    }

    #[test]
    fn a_write_as_large_as_the_buffer_passes_straight_through() {
        let (_wakes, waker) = context();
        let mut cx = Context::from_waker(&waker);
        let mut io = BatchedWrites::new(Recorder::default());
        let big = vec![3u8; BATCH_BYTES + 1];
        assert_eq!(write(&mut io, &mut cx, &big), BATCH_BYTES + 1);
        assert_eq!(io.inner.writes, vec![big]);
        assert!(io.buffer.is_empty());
    }
}
