//! Sharded storage of the last two points per node and container, and the snapshots readers load.
//!
//! Only a node's own scraper writes that node's data ([`Store::write_node`]); the API only reads
//! [`Snapshot`]s, loaded without locks. Usage is computed here, exactly as upstream metrics-server does.
//!
//! Writers hold one shard of a [`DashMap`] keyed by node while they update that node's points and
//! publish its new usage, so one node's write never waits for another node's beyond a shared shard.
//! Publishing swaps in a new [`Snapshot`] that shares everything but that node's path; a reader
//! holding a snapshot keeps a consistent view of every node in it.
//!
//! Each publish of a node is numbered and announced once installed (see `snapshot::EntryStamp`),
//! so a reader that kept an answer derived from a node's entry knows with one atomic load
//! whether the node has published since.
//!
//! ## Memory usage
//! Two points per node and per container the kubelets currently report, plus one servable entry
//! per node in the current snapshot. A node's scrape replaces its pod set, and a node that stops
//! producing fresh points is dropped after [`StoreConfig::staleness`].

mod points;
mod snapshot;
mod state;
mod sync;

#[cfg(all(test, store_loom))]
mod loom_tests;
#[cfg(test)]
mod tests;

use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use dashmap::DashMap;

use crate::model::{Name, NodeScrape, PodNames, UnixNanos};

pub use points::RateError;
pub use snapshot::{IndexedPod, PodSource, ServedPod, Snapshot};

use snapshot::{publish, SnapshotCell};
use state::NodeState;

/// Settings the usage rules depend on.
#[derive(Clone, Debug)]
pub struct StoreConfig {
    /// `--metric-resolution`: the scrape period.
    pub resolution: Duration,
    /// A node whose newest sample has not moved forward for this long (measured on the caller's
    /// clock from when it last did) is dropped with its pods by [`Store::expire`].
    pub staleness: Duration,
}

/// The writer side: scrapers write, discovery removes, a periodic tick expires.
pub struct Store {
    resolution_nanos: i64,
    staleness_nanos: i64,
    /// Writer state by node. Sharded so a write locks only its node's shard; the shard lock is
    /// held through the publish so a node's publishes happen in the order its state changed.
    nodes: DashMap<Name, NodeState>,
    /// What readers load. `ArcSwap`, not a lock: many readers, frequent small writers, and the API
    /// must never wait on the scrape side.
    published: ArcSwap<Snapshot>,
    /// Where a pod new to the store takes its names from (see [`PodNames`]); without it, from
    /// the scrape.
    pod_names: Option<Arc<dyn PodNames>>,
}

/// Shards for the writer map: more than the default (4 x cores) so that thousands of scrapers
/// rarely meet on one shard.
const SHARDS: usize = 64;

// === impl StoreConfig ===

impl StoreConfig {
    /// Staleness of four resolutions, at least one minute: a node survives a few failed scrapes
    /// (and kubelet timeouts) and still disappears within minutes when it keeps failing.
    pub fn from_resolution(resolution: Duration) -> Self {
        StoreConfig {
            resolution,
            staleness: (resolution * 4).max(Duration::from_secs(60)),
        }
    }
}

impl Default for StoreConfig {
    /// Upstream's default `--metric-resolution` of 60 s.
    fn default() -> Self {
        StoreConfig::from_resolution(Duration::from_secs(60))
    }
}

// === impl Store ===

impl Store {
    pub fn new(config: StoreConfig) -> Self {
        Store {
            resolution_nanos: duration_nanos(config.resolution),
            staleness_nanos: duration_nanos(config.staleness),
            nodes: DashMap::with_shard_amount(SHARDS),
            published: ArcSwap::from_pointee(Snapshot::default()),
            pod_names: None,
        }
    }

    /// This store, taking the names of pods new to it from `source` (the discovery cache) when
    /// the source knows them, so lists join the two by pointer.
    pub fn with_pod_names(mut self, source: Arc<dyn PodNames>) -> Self {
        self.pod_names = Some(source);
        self
    }

    /// Stores one node's scrape and publishes the node's new usage at once.
    pub fn write_node(&self, node: &Name, scrape: &NodeScrape<'_>, now: UnixNanos) {
        let mut state = match self.nodes.get_mut(&**node) {
            Some(state) => state,
            None => self
                .nodes
                .entry(node.clone())
                .or_insert_with(|| NodeState::new(now)),
        };
        write_locked(
            &mut state,
            node,
            scrape,
            now,
            self.resolution_nanos,
            self.pod_names.as_deref(),
            &self.published,
        );
    }

    /// Forgets a node and every pod it reported.
    pub fn remove_node(&self, node: &str) {
        let removed = self.nodes.remove_if(node, |name, state| {
            unpublish_node(name, &self.published);
            state.retire();
            true
        });
        if removed.is_some() {
            tracing::debug!(node, "Forgot node.");
        }
    }

    /// Forgets a pod (deleted from the cluster).
    ///
    /// Only a served pod is found (through the snapshot's index); a pod not yet served holds only
    /// points that its node's next scrape replaces anyway. If the kubelet still reports the pod,
    /// that next scrape brings it back.
    pub fn remove_pod(&self, namespace: &str, name: &str) {
        let Some(owner) = self.snapshot().pod_owner(namespace, name).cloned() else {
            return;
        };
        if let Some(mut state) = self.nodes.get_mut(&*owner) {
            if state.remove_pod(namespace, name) {
                state.begin_publish();
                let entry = state.entry(&owner).map(Arc::new);
                publish(&self.published, |current| {
                    current.with_node(&owner, entry.as_ref())
                });
                state.announce();
            }
        }
    }

    /// Drops nodes (and their pods) whose points are older than the staleness bound.
    pub fn expire(&self, now: UnixNanos) {
        let stale: Vec<Name> = self
            .nodes
            .iter()
            .filter(|state| state.is_stale(now, self.staleness_nanos))
            .map(|state| state.key().clone())
            .collect();
        for node in stale {
            // Checked again under the shard lock: a write may have landed since the scan.
            let removed = self.nodes.remove_if(&*node, |name, state| {
                let stale = state.is_stale(now, self.staleness_nanos);
                if stale {
                    unpublish_node(name, &self.published);
                    state.retire();
                }
                stale
            });
            if removed.is_some() {
                tracing::info!(node = %node, "Dropped stale node.");
            }
        }
    }

    /// The current snapshot; never blocks.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.published.load_full()
    }

    /// Nodes with writer state (servable or not).
    pub fn tracked_nodes(&self) -> usize {
        self.nodes.len()
    }
}

/// Stores a scrape into a node's state, held under the node's lock by the caller, and publishes the
/// node's new entry before returning.
pub(crate) fn write_locked(
    state: &mut NodeState,
    node: &Name,
    scrape: &NodeScrape<'_>,
    now: UnixNanos,
    resolution: i64,
    pod_names: Option<&dyn PodNames>,
    cell: &impl SnapshotCell,
) {
    state.update(scrape, now, resolution, pod_names);
    state.begin_publish();
    match state.next_entry(node) {
        Some(entry) => publish(cell, |current| current.with_node(node, Some(&entry))),
        None => unpublish_node(node, cell),
    }
    state.announce();
}

/// Removes a node and its pods from the published snapshot. Called under the node's lock.
pub(crate) fn unpublish_node(node: &Name, cell: &impl SnapshotCell) {
    // Only this node's lock holder changes its entry, so a check outside the swap is stable.
    if cell.load().has_node(node) {
        publish(cell, |current| current.with_node(node, None));
    }
}

fn duration_nanos(duration: Duration) -> i64 {
    i64::try_from(duration.as_nanos()).unwrap_or(i64::MAX)
}
