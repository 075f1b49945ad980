//! One kind's cache: applies watcher events to a persistent map, with relists swapped in whole.
//!
//! The writer side only; readers see the maps through published views. A relist (after start,
//! or after the API server answered `410 Gone`) is buffered from `Init` to `InitDone` and then
//! replaces the live map in one step, so objects deleted while the watch was down disappear and
//! readers never see a half-listed cache. Until then the previous contents keep being served.
//!
//! ## Memory usage
//! Entries are `Arc`s. When a relisted entry equals the live one, the live `Arc` is reused, so a
//! relist of an unchanged cluster allocates only the buffer's tree nodes, and the old and new maps
//! share every entry.

use std::sync::Arc;

use equivalent::Comparable;
use imbl::OrdMap;

/// What an event did to the live map.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change<V> {
    /// Nothing visible changed (equal re-apply, unknown delete, or an event inside a relist).
    None,
    /// One entry was inserted, replaced or removed; `before`/`after` are `None` when absent.
    Entry {
        before: Option<Arc<V>>,
        after: Option<Arc<V>>,
    },
    /// A relist replaced the whole map.
    Relisted,
}

/// The live map of one kind and the relist being buffered, if any.
#[derive(Debug)]
pub struct Cache<K: Ord + Clone, V> {
    live: OrdMap<K, Arc<V>>,
    relist: Option<OrdMap<K, Arc<V>>>,
    synced: bool,
}

impl<K: Ord + Clone, V> Default for Cache<K, V> {
    fn default() -> Self {
        Cache {
            live: OrdMap::new(),
            relist: None,
            synced: false,
        }
    }
}

impl<K: Ord + Clone, V: PartialEq> Cache<K, V> {
    /// The entries readers should see.
    pub fn live(&self) -> &OrdMap<K, Arc<V>> {
        &self.live
    }

    /// The first relist has completed.
    pub fn is_synced(&self) -> bool {
        self.synced
    }

    /// A relist starts: buffer what follows.
    pub fn init(&mut self) {
        self.relist = Some(OrdMap::new());
    }

    /// One object of the relist.
    pub fn init_apply(&mut self, key: K, value: V) {
        let value = self.reuse(&key, value);
        match &mut self.relist {
            Some(buffer) => {
                buffer.insert(key, value);
            }
            // The watcher always opens a relist with `Init`; should it not, the object is
            // still current and belongs in the map.
            None => {
                self.live.insert(key, value);
            }
        }
    }

    /// The relist is complete: it becomes the live map.
    pub fn init_done(&mut self) -> Change<V> {
        if let Some(buffer) = self.relist.take() {
            self.live = buffer;
        }
        self.synced = true;
        Change::Relisted
    }

    /// An object was added or modified.
    pub fn apply(&mut self, key: K, value: V) -> Change<V> {
        if let Some(buffer) = &mut self.relist {
            // The watcher emits no `Apply` inside a relist; keep it with the relist so it
            // is not lost at the swap.
            buffer.insert(key, Arc::new(value));
            return Change::None;
        }
        if self.live.get(&key).is_some_and(|old| **old == value) {
            return Change::None;
        }
        let after = Arc::new(value);
        let before = self.live.insert(key, Arc::clone(&after));
        Change::Entry {
            before,
            after: Some(after),
        }
    }

    /// An object was deleted.
    pub fn delete<Q>(&mut self, key: &Q) -> Change<V>
    where
        Q: Comparable<K> + ?Sized,
    {
        if let Some(buffer) = &mut self.relist {
            buffer.remove(key);
            return Change::None;
        }
        match self.live.remove(key) {
            Some(before) => Change::Entry {
                before: Some(before),
                after: None,
            },
            None => Change::None,
        }
    }

    /// The live `Arc` when it already holds an equal value.
    fn reuse(&self, key: &K, value: V) -> Arc<V> {
        match self.live.get(key) {
            Some(old) if **old == value => Arc::clone(old),
            _ => Arc::new(value),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(cache: &Cache<u32, &'static str>) -> Vec<(u32, &'static str)> {
        cache.live().iter().map(|(k, v)| (*k, **v)).collect()
    }

    #[test]
    fn relist_is_invisible_until_done_then_replaces_everything() {
        let mut cache = Cache::default();
        cache.init();
        cache.init_apply(1, "a");
        cache.init_apply(2, "b");
        assert!(keys(&cache).is_empty());
        assert!(!cache.is_synced());
        assert_eq!(cache.init_done(), Change::Relisted);
        assert!(cache.is_synced());
        assert_eq!(keys(&cache), vec![(1, "a"), (2, "b")]);

        // 2 vanished while the watch was down; 3 appeared.
        cache.init();
        cache.init_apply(1, "a");
        cache.init_apply(3, "c");
        assert_eq!(keys(&cache), vec![(1, "a"), (2, "b")]);
        cache.init_done();
        assert_eq!(keys(&cache), vec![(1, "a"), (3, "c")]);
    }

    #[test]
    fn unchanged_entries_keep_their_allocation_across_a_relist() {
        let mut cache = Cache::default();
        cache.init();
        cache.init_apply(1, "a");
        cache.init_done();
        let before = Arc::clone(cache.live().get(&1).unwrap());
        cache.init();
        cache.init_apply(1, "a");
        cache.init_done();
        assert!(Arc::ptr_eq(&before, cache.live().get(&1).unwrap()));
    }

    #[test]
    fn equal_apply_changes_nothing_and_different_apply_reports_both_sides() {
        let mut cache = Cache::default();
        cache.init();
        cache.init_done();
        assert_eq!(
            cache.apply(1, "a"),
            Change::Entry {
                before: None,
                after: Some(Arc::new("a"))
            }
        );
        assert_eq!(cache.apply(1, "a"), Change::None);
        assert_eq!(
            cache.apply(1, "b"),
            Change::Entry {
                before: Some(Arc::new("a")),
                after: Some(Arc::new("b"))
            }
        );
    }

    #[test]
    fn delete_removes_and_unknown_delete_changes_nothing() {
        let mut cache = Cache::default();
        cache.apply(1, "a");
        assert_eq!(
            cache.delete(&1),
            Change::Entry {
                before: Some(Arc::new("a")),
                after: None
            }
        );
        assert_eq!(cache.delete(&1), Change::None);
        assert!(keys(&cache).is_empty());
    }
}
