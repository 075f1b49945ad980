//! Socket reads in large steps under the TLS layer.
//!
//! rustls asks its transport for about 4 KiB at a time, so a 15 kB kubelet answer took four or five
//! `recv` calls, each a system call (and on loopback, each a pass through the peer's TCP stack).
//! [`ReadAhead`] reads whatever the socket holds, up to [`STEP_BYTES`], into a scratch buffer
//! from this thread's pool and hands it out to the reader above in the sizes it asks for.
//!
//! Owns only buffers; never parses, never writes (writes pass straight through). A connection
//! holds a scratch buffer only while it has bytes read ahead that the reader above has not taken;
//! a small rest is moved to a buffer of its own size, so an idle connection holds at most that.

use std::cell::RefCell;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The most one socket read takes: a few answers of a busy node.
pub const STEP_BYTES: usize = 64 * 1024;

/// A rest at most this long is copied out and the scratch buffer goes back to the pool.
const SMALL_REST: usize = 4 * 1024;

/// Scratch buffers kept per thread, for the connections that read at the same instant.
const KEPT_PER_THREAD: usize = 4;

thread_local! {
    static SCRATCH: RefCell<Vec<Box<[u8]>>> = const { RefCell::new(Vec::new()) };
}

fn take_scratch() -> Box<[u8]> {
    SCRATCH
        .try_with(|pool| pool.borrow_mut().pop())
        .ok()
        .flatten()
        .unwrap_or_else(|| vec![0; STEP_BYTES].into_boxed_slice())
}

fn give_back(buf: Box<[u8]>) {
    if buf.len() != STEP_BYTES {
        return;
    }
    // During thread teardown the pool may be gone; the buffer is then simply freed.
    let _ = SCRATCH.try_with(|pool| {
        let mut pool = pool.borrow_mut();
        if pool.len() < KEPT_PER_THREAD {
            pool.push(buf);
        }
    });
}

/// Bytes read from the socket that the reader above has not taken yet.
struct Rest {
    buf: Box<[u8]>,
    start: usize,
    end: usize,
}

/// A transport whose reads take what the socket holds, in one call.
pub struct ReadAhead<S> {
    io: S,
    rest: Option<Rest>,
}

// === impl ReadAhead ===

impl<S> ReadAhead<S> {
    pub fn new(io: S) -> Self {
        ReadAhead { io, rest: None }
    }

    pub fn get_ref(&self) -> &S {
        &self.io
    }

    /// Bytes read from the socket and not yet handed out.
    pub fn buffered(&self) -> usize {
        self.rest.as_ref().map_or(0, |rest| rest.end - rest.start)
    }

    /// Hands out from the rest; gives the scratch back once it is empty.
    fn take_rest(&mut self, out: &mut ReadBuf<'_>) {
        let Some(rest) = &mut self.rest else {
            return;
        };
        let n = out.remaining().min(rest.end - rest.start);
        out.put_slice(&rest.buf[rest.start..rest.start + n]);
        rest.start += n;
        if rest.start == rest.end {
            if let Some(rest) = self.rest.take() {
                give_back(rest.buf);
            }
        }
    }

    /// Keeps `buf[start..end]` for later reads: in `buf` itself if it is long, else in a copy of
    /// its own size (and `buf` goes back to the pool).
    fn keep(&mut self, buf: Box<[u8]>, start: usize, end: usize) {
        if start == end {
            give_back(buf);
        } else if end - start <= SMALL_REST {
            let copy: Box<[u8]> = buf[start..end].into();
            give_back(buf);
            self.rest = Some(Rest {
                end: copy.len(),
                buf: copy,
                start: 0,
            });
        } else {
            self.rest = Some(Rest { buf, start, end });
        }
    }
}

impl<S> Drop for ReadAhead<S> {
    fn drop(&mut self) {
        if let Some(rest) = self.rest.take() {
            give_back(rest.buf);
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for ReadAhead<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        out: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.rest.is_some() {
            this.take_rest(out);
            return Poll::Ready(Ok(()));
        }
        // A reader that asks for a large read gets it directly: nothing to gain from a copy.
        if out.remaining() >= STEP_BYTES / 2 {
            return Pin::new(&mut this.io).poll_read(cx, out);
        }
        let mut buf = take_scratch();
        let mut scratch = ReadBuf::new(&mut buf);
        match Pin::new(&mut this.io).poll_read(cx, &mut scratch) {
            Poll::Ready(Ok(())) => {
                let got = scratch.filled().len();
                let n = got.min(out.remaining());
                out.put_slice(&buf[..n]);
                this.keep(buf, n, got);
                Poll::Ready(Ok(()))
            }
            other => {
                give_back(buf);
                other
            }
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for ReadAhead<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A reader that counts how many reads reached it.
    struct Counted<R> {
        inner: R,
        reads: usize,
    }

    impl<R: AsyncRead + Unpin> AsyncRead for Counted<R> {
        fn poll_read(
            self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &mut ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
            let this = self.get_mut();
            this.reads += 1;
            Pin::new(&mut this.inner).poll_read(cx, buf)
        }
    }

    fn pattern(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 7 + i / 251) as u8).collect()
    }

    #[tokio::test]
    async fn small_reads_are_served_from_one_socket_read_in_order() {
        let sent = pattern(15_000);
        let mut ahead = ReadAhead::new(Counted {
            inner: &sent[..],
            reads: 0,
        });
        let mut got = Vec::new();
        let mut step = [0u8; 4096];
        loop {
            let n = ahead.read(&mut step).await.unwrap();
            if n == 0 {
                break;
            }
            got.extend_from_slice(&step[..n]);
        }
        assert_eq!(got, sent);
        // One read took all 15,000 bytes; one more saw the end.
        assert_eq!(ahead.get_ref().reads, 2);
        assert_eq!(ahead.buffered(), 0);
    }

    #[tokio::test]
    async fn a_small_rest_is_kept_in_its_own_buffer() {
        let sent = pattern(4096 + 100);
        let mut ahead = ReadAhead::new(&sent[..]);
        let mut first = [0u8; 4096];
        ahead.read_exact(&mut first).await.unwrap();
        assert_eq!(ahead.buffered(), 100);
        let rest = ahead.rest.as_ref().unwrap();
        assert_eq!(
            rest.buf.len(),
            100,
            "the scratch buffer is not held for 100 bytes"
        );
        let mut second = Vec::new();
        ahead.read_to_end(&mut second).await.unwrap();
        assert_eq!([&first[..], &second[..]].concat(), sent);
    }

    #[tokio::test]
    async fn large_reads_and_reads_past_a_step_lose_nothing() {
        let sent = pattern(3 * STEP_BYTES + 17);
        let mut ahead = ReadAhead::new(&sent[..]);
        let mut got = Vec::new();
        // Sizes below, at and above the direct-read threshold, in turn.
        let sizes = [1, 4096, STEP_BYTES / 2, 5, STEP_BYTES + 3, 999];
        let mut i = 0;
        loop {
            let mut step = vec![0u8; sizes[i % sizes.len()]];
            i += 1;
            let n = ahead.read(&mut step).await.unwrap();
            if n == 0 {
                break;
            }
            got.extend_from_slice(&step[..n]);
        }
        assert_eq!(got, sent);
    }

    #[tokio::test]
    async fn writes_pass_through() {
        let mut ahead = ReadAhead::new(std::io::Cursor::new(Vec::new()));
        ahead.write_all(b"body").await.unwrap();
        ahead.flush().await.unwrap();
        assert_eq!(ahead.get_ref().get_ref(), b"body");
    }
}
