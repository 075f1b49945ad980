//! Response-body buffers reused across scrapes on the same thread.
//!
//! Every scrape reads a whole body before the sink decodes it, and the sink only borrows the bytes,
//! so a body buffer is free again as soon as the sink returns. Each scrape thread keeps a few such
//! buffers instead of allocating (and page-faulting) a fresh one per scrape. The pool is bounded
//! in count and in the capacity of what it keeps, so one oversized body or a burst of concurrent
//! scrapes does not pin memory for the life of the thread.

use std::cell::RefCell;
use std::ops::{Deref, DerefMut};

use bytes::BytesMut;

/// Buffers kept per thread: about the number of bodies a thread reads at the same instant.
const KEPT_PER_THREAD: usize = 16;

/// A buffer that grew past this is dropped on return rather than kept.
const KEPT_CAPACITY: usize = 256 * 1024;

/// What a new buffer starts with when the response declares no length: a typical kubelet
/// `/metrics/resource` body of a busy node fits.
pub(crate) const INITIAL_CAPACITY: usize = 64 * 1024;

thread_local! {
    static POOL: RefCell<Vec<BytesMut>> = const { RefCell::new(Vec::new()) };
}

/// An empty body buffer from this thread's pool, given back when dropped.
pub struct BodyBuffer {
    buf: BytesMut,
}

// === impl BodyBuffer ===

impl BodyBuffer {
    /// An empty buffer, reused if this thread has one.
    pub fn take() -> Self {
        let buf = POOL
            .try_with(|pool| pool.borrow_mut().pop())
            .ok()
            .flatten()
            .unwrap_or_default();
        BodyBuffer { buf }
    }

    /// Buffers currently kept by this thread's pool.
    pub fn kept() -> usize {
        POOL.try_with(|pool| pool.borrow().len()).unwrap_or(0)
    }
}

impl Deref for BodyBuffer {
    type Target = BytesMut;

    fn deref(&self) -> &BytesMut {
        &self.buf
    }
}

impl DerefMut for BodyBuffer {
    fn deref_mut(&mut self) -> &mut BytesMut {
        &mut self.buf
    }
}

impl Drop for BodyBuffer {
    fn drop(&mut self) {
        let mut buf = std::mem::take(&mut self.buf);
        // Never grown: nothing worth keeping. Grown past the bound: an outlier, not kept.
        if buf.capacity() == 0 || buf.capacity() > KEPT_CAPACITY {
            return;
        }
        buf.clear();
        // During thread teardown the pool may be gone; the buffer is then simply freed.
        let _ = POOL.try_with(|pool| {
            let mut pool = pool.borrow_mut();
            if pool.len() < KEPT_PER_THREAD {
                pool.push(buf);
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each test runs on its own thread, so the thread-local pool starts empty.
    #[test]
    fn a_returned_buffer_is_reused_with_its_capacity_and_no_content() {
        let mut first = BodyBuffer::take();
        first.reserve(10_000);
        first.extend_from_slice(b"previous body");
        let address = first.as_ptr();
        drop(first);
        assert_eq!(BodyBuffer::kept(), 1);

        let second = BodyBuffer::take();
        assert!(second.is_empty());
        assert!(second.capacity() >= 10_000);
        assert_eq!(second.as_ptr(), address);
        assert_eq!(BodyBuffer::kept(), 0);
    }

    #[test]
    fn an_oversized_buffer_is_not_kept() {
        let mut big = BodyBuffer::take();
        big.reserve(KEPT_CAPACITY + 1);
        drop(big);
        assert_eq!(BodyBuffer::kept(), 0);
    }

    #[test]
    fn the_pool_keeps_a_bounded_number_of_buffers() {
        let buffers: Vec<BodyBuffer> = (0..KEPT_PER_THREAD + 5)
            .map(|_| {
                let mut b = BodyBuffer::take();
                b.reserve(1024);
                b
            })
            .collect();
        drop(buffers);
        assert_eq!(BodyBuffer::kept(), KEPT_PER_THREAD);
    }

    #[test]
    fn a_buffer_never_grown_is_not_kept() {
        drop(BodyBuffer::take());
        assert_eq!(BodyBuffer::kept(), 0);
    }
}
