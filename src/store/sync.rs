//! The synchronisation primitives the publish protocol is written against: `std` normally, `loom`
//! under `--cfg store_loom`, so the model checker explores every interleaving of our own protocol.
//! The cfg is our own: the plain `loom` cfg would also switch tokio (and break its dependents).
//!
//! Loom cannot see inside `dashmap` or `arc-swap`, so the model replaces them with what they
//! promise: a per-node mutex (the shard lock) and [`ModelCell`], a compare-and-swap cell built
//! from one atomic pointer.

// The model cell is used only by tests (with or without the model checker).
#![cfg_attr(not(test), allow(dead_code, unused_imports))]

#[cfg(store_loom)]
pub(crate) use loom::sync::{
    atomic::{AtomicPtr, Ordering},
    Mutex,
};
#[cfg(not(store_loom))]
pub(crate) use std::sync::{
    atomic::{AtomicPtr, Ordering},
    Mutex,
};

#[cfg(any(test, store_loom))]
pub(crate) use model::ModelCell;

#[cfg(any(test, store_loom))]
mod model {
    use std::sync::Arc;

    use super::{AtomicPtr, Mutex, Ordering};
    use crate::store::snapshot::{Snapshot, SnapshotCell};

    /// A snapshot cell with arc-swap's contract (linearizable load and compare-and-swap) and
    /// nothing else: one atomic pointer to a boxed `Arc`.
    ///
    /// Replaced boxes are retired, not freed, until the cell drops, so a pointer loaded from the
    /// cell stays valid for the cell's whole life (the reclamation arc-swap does is not modelled).
    pub(crate) struct ModelCell {
        current: AtomicPtr<Arc<Snapshot>>,
        retired: Mutex<Vec<*mut Arc<Snapshot>>>,
    }

    // SAFETY: the raw pointers are owned boxes of `Arc<Snapshot>` (Send + Sync) that are only
    // dereferenced immutably while the cell lives and freed once, in `Drop`.
    unsafe impl Send for ModelCell {}
    unsafe impl Sync for ModelCell {}

    impl ModelCell {
        pub(crate) fn new(snapshot: Snapshot) -> Self {
            ModelCell {
                current: AtomicPtr::new(Box::into_raw(Box::new(Arc::new(snapshot)))),
                retired: Mutex::new(Vec::new()),
            }
        }

        fn retire(&self, ptr: *mut Arc<Snapshot>) {
            match self.retired.lock() {
                Ok(mut retired) => retired.push(ptr),
                Err(poisoned) => poisoned.into_inner().push(ptr),
            }
        }
    }

    impl SnapshotCell for ModelCell {
        fn load(&self) -> Arc<Snapshot> {
            let ptr = self.current.load(Ordering::Acquire);
            // SAFETY: every pointer ever stored is a live box until the cell drops (see type doc).
            unsafe { Arc::clone(&*ptr) }
        }

        fn compare_and_swap(&self, current: &Arc<Snapshot>, new: Arc<Snapshot>) -> bool {
            let seen = self.current.load(Ordering::Acquire);
            // SAFETY: as in `load`.
            if !Arc::ptr_eq(unsafe { &*seen }, current) {
                return false;
            }
            let new = Box::into_raw(Box::new(new));
            match self
                .current
                .compare_exchange(seen, new, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(old) => {
                    self.retire(old);
                    true
                }
                Err(_) => {
                    // SAFETY: `new` was never shared.
                    drop(unsafe { Box::from_raw(new) });
                    false
                }
            }
        }
    }

    impl Drop for ModelCell {
        fn drop(&mut self) {
            let retired = match self.retired.lock() {
                Ok(mut retired) => std::mem::take(&mut *retired),
                Err(poisoned) => std::mem::take(&mut *poisoned.into_inner()),
            };
            let current = self.current.load(Ordering::Acquire);
            for ptr in retired.into_iter().chain([current]) {
                // SAFETY: each pointer came from `Box::into_raw` and is freed exactly once here.
                drop(unsafe { Box::from_raw(ptr) });
            }
        }
    }
}
