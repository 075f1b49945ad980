//! The immutable views readers load, and the one step that publishes a node's change into them.
//!
//! A snapshot keeps each node's servable usage (the node and all its pods) together in one
//! [`NodeEntry`], so a reader never sees half of a node's scrape. A second persistent map indexes
//! pods by namespace and name; it changes only when a node's pod set changes, which keeps a steady
//! node update at one path copy in one map however many pods the node runs.

use std::cmp::Ordering;
use std::ops::Bound;
use std::sync::Arc;

use arc_swap::ArcSwap;
use equivalent::{Comparable, Equivalent};
use imbl::OrdMap;

use crate::model::{Name, NodeMetrics, PodMetrics};

/// An immutable view of everything servable at one instant.
///
/// Cloning the maps inside is O(1) (structural sharing), so a publish copies only the path to what
/// it changes and readers holding older snapshots keep theirs untouched.
#[derive(Clone, Default)]
pub struct Snapshot {
    /// Every node with something servable, by name.
    nodes: OrdMap<Name, Arc<NodeEntry>>,
    /// Which node serves each pod. Ordered by namespace then name, so one namespace is a range.
    pod_owners: OrdMap<PodKey, Name>,
    /// Nodes whose own usage is servable.
    node_count: usize,
    /// Containers served across all pods.
    container_count: usize,
}

/// What one node's last scrape made servable.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct NodeEntry {
    pub(crate) node: Option<NodeMetrics>,
    /// Sorted by namespace, then name; no duplicates.
    pub(crate) pods: Vec<PodMetrics>,
}

/// The index key of a pod.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct PodKey {
    namespace: Name,
    name: Name,
}

/// A borrowed [`PodKey`], so lookups need no allocation.
struct PodKeyRef<'a> {
    namespace: &'a str,
    name: &'a str,
}

/// Where snapshots are published. Production uses [`ArcSwap`]; the model checker substitutes a cell
/// it can see inside (see `sync.rs`).
pub(crate) trait SnapshotCell {
    fn load(&self) -> Arc<Snapshot>;
    /// Installs `new` only if `current` is still installed; says whether it did.
    fn compare_and_swap(&self, current: &Arc<Snapshot>, new: Arc<Snapshot>) -> bool;
}

/// Applies `change` to the current snapshot and installs the result, retrying on a concurrent
/// publish so no node's change is lost. Lock-free: readers never wait, and a retry only redoes this
/// node's few path copies.
pub(crate) fn publish(cell: &impl SnapshotCell, change: impl Fn(&Snapshot) -> Snapshot) {
    loop {
        let current = cell.load();
        let next = Arc::new(change(&current));
        // `current` stays alive across the swap, so its address cannot be reused: no ABA.
        if cell.compare_and_swap(&current, next) {
            return;
        }
    }
}

// === impl Snapshot ===

impl Snapshot {
    pub fn node(&self, name: &str) -> Option<&NodeMetrics> {
        self.nodes.get(name)?.node.as_ref()
    }

    /// Nodes sorted by name.
    pub fn nodes(&self) -> impl Iterator<Item = &NodeMetrics> {
        self.nodes.values().filter_map(|entry| entry.node.as_ref())
    }

    pub fn pod(&self, namespace: &str, name: &str) -> Option<&PodMetrics> {
        let key = PodKeyRef { namespace, name };
        let owner = self.pod_owners.get(&key)?;
        self.nodes.get(&**owner)?.pod(namespace, name)
    }

    /// All pods sorted by namespace, then name.
    pub fn pods(&self) -> impl Iterator<Item = &PodMetrics> {
        self.pod_owners
            .iter()
            .filter_map(|(key, owner)| self.owned_pod(key, owner))
    }

    /// One namespace's pods sorted by name, without walking other namespaces.
    pub fn pods_in_namespace(&self, namespace: &str) -> impl Iterator<Item = &PodMetrics> {
        // The iterator may borrow only `self`, so the range restarts from the first key of the
        // namespace as stored in the index.
        let first = self
            .pod_owners
            .range::<_, PodKeyRef<'_>>((
                Bound::Included(PodKeyRef {
                    namespace,
                    name: "",
                }),
                Bound::Unbounded,
            ))
            .next()
            .map(|(key, _)| key)
            .filter(|key| &*key.namespace == namespace);
        first.into_iter().flat_map(move |first| {
            self.pod_owners
                .range::<_, PodKey>((Bound::Included(first), Bound::Unbounded))
                .take_while(move |(key, _)| key.namespace == first.namespace)
                .filter_map(|(key, owner)| self.owned_pod(key, owner))
        })
    }

    /// At least one node and one pod are servable.
    pub fn is_ready(&self) -> bool {
        self.node_count > 0 && !self.pod_owners.is_empty()
    }

    /// Nodes whose own usage is servable.
    pub fn node_count(&self) -> usize {
        self.node_count
    }

    /// Pods served.
    pub fn pod_count(&self) -> usize {
        self.pod_owners.len()
    }

    /// Containers served across all pods.
    pub fn container_count(&self) -> usize {
        self.container_count
    }

    /// The node has an entry (its own usage or any pod).
    pub(crate) fn has_node(&self, node: &str) -> bool {
        self.nodes.contains_key(node)
    }

    /// The node serving a pod.
    pub(crate) fn pod_owner(&self, namespace: &str, name: &str) -> Option<&Name> {
        self.pod_owners.get(&PodKeyRef { namespace, name })
    }

    fn owned_pod(&self, key: &PodKey, owner: &Name) -> Option<&PodMetrics> {
        self.nodes.get(&**owner)?.pod(&key.namespace, &key.name)
    }

    /// This snapshot with `node`'s entry replaced by `entry` (`None` removes it).
    ///
    /// Pods new to the node take the index (the newest reporter of a name wins, e.g. a stateful
    /// pod recreated elsewhere); pods the node no longer serves leave it only if the node still
    /// owns them. Pods in both stay as they are, so a steady update touches only `nodes`.
    pub(crate) fn with_node(&self, node: &Name, entry: Option<&Arc<NodeEntry>>) -> Snapshot {
        let mut next = self.clone();
        let old = match entry {
            Some(entry) => next.nodes.insert(node.clone(), Arc::clone(entry)),
            None => next.nodes.remove(&**node),
        };
        let old_pods = old.as_deref().map_or(&[][..], |e| &e.pods[..]);
        let new_pods = entry.map_or(&[][..], |e| &e.pods[..]);

        let (mut i, mut j) = (0, 0);
        while i < old_pods.len() || j < new_pods.len() {
            let order = match (old_pods.get(i), new_pods.get(j)) {
                (Some(o), Some(n)) => pod_order(o, n),
                (Some(_), None) => Ordering::Less,
                _ => Ordering::Greater,
            };
            match order {
                Ordering::Less => {
                    let gone = &old_pods[i];
                    let key = PodKeyRef {
                        namespace: &gone.namespace,
                        name: &gone.name,
                    };
                    if next.pod_owners.get(&key).is_some_and(|o| o == node) {
                        next.pod_owners.remove(&key);
                    }
                    i += 1;
                }
                Ordering::Greater => {
                    let added = &new_pods[j];
                    next.pod_owners.insert(
                        PodKey {
                            namespace: added.namespace.clone(),
                            name: added.name.clone(),
                        },
                        node.clone(),
                    );
                    j += 1;
                }
                Ordering::Equal => {
                    i += 1;
                    j += 1;
                }
            }
        }

        let (old_node, old_containers) = old.as_deref().map_or((0, 0), NodeEntry::counts);
        let (new_node, new_containers) = entry.map_or((0, 0), |e| e.counts());
        next.node_count = next.node_count + new_node - old_node;
        next.container_count = next.container_count + new_containers - old_containers;
        next
    }
}

// === impl NodeEntry ===

impl NodeEntry {
    fn pod(&self, namespace: &str, name: &str) -> Option<&PodMetrics> {
        self.pods
            .binary_search_by(|p| (&*p.namespace, &*p.name).cmp(&(namespace, name)))
            .ok()
            .map(|i| &self.pods[i])
    }

    /// (servable node points, served containers) this entry adds to the snapshot's counts.
    fn counts(&self) -> (usize, usize) {
        let containers = self.pods.iter().map(|p| p.containers.len()).sum();
        (usize::from(self.node.is_some()), containers)
    }
}

/// The order pods are kept in: namespace, then name.
pub(crate) fn pod_order(a: &PodMetrics, b: &PodMetrics) -> Ordering {
    (&*a.namespace, &*a.name).cmp(&(&*b.namespace, &*b.name))
}

// === impl PodKeyRef ===

impl Equivalent<PodKey> for PodKeyRef<'_> {
    fn equivalent(&self, key: &PodKey) -> bool {
        self.namespace == &*key.namespace && self.name == &*key.name
    }
}

impl Comparable<PodKey> for PodKeyRef<'_> {
    fn compare(&self, key: &PodKey) -> Ordering {
        (self.namespace, self.name).cmp(&(&*key.namespace, &*key.name))
    }
}

// === impl SnapshotCell for ArcSwap ===

impl SnapshotCell for ArcSwap<Snapshot> {
    fn load(&self) -> Arc<Snapshot> {
        self.load_full()
    }

    fn compare_and_swap(&self, current: &Arc<Snapshot>, new: Arc<Snapshot>) -> bool {
        let previous = ArcSwap::compare_and_swap(self, current, new);
        Arc::ptr_eq(&previous, current)
    }
}
