//! The immutable views readers load, and the one step that publishes a node's change into them.
//!
//! A snapshot keeps each node's servable usage (the node and all its pods) together in one
//! [`NodeEntry`], so a reader never sees half of a node's scrape. A second persistent map indexes
//! pods by namespace and name; it changes only when a node's pod set changes, which keeps a steady
//! node update at one path copy in one map however many pods the node runs.
//!
//! An entry also caches its pods' JSON list items (all but the request time and the labels,
//! which change per request), rendered by the first list request that reads the entry: a list of
//! every pod then mostly copies bytes, and each scrape's usage is rendered once however many
//! requests serve it. Writers never pay for it, and a node nobody lists never renders.

use std::cmp::Ordering;
use std::marker::PhantomData;
use std::ops::Bound;
use std::sync::atomic::{AtomicU64, Ordering as AtomicOrdering};
use std::sync::{Arc, OnceLock};

use arc_swap::ArcSwap;
use equivalent::{Comparable, Equivalent};
use imbl::OrdMap;

use crate::api::render::{pod_item_parts, PodItemParts};
use crate::model::{pod_key_order, same_name, Name, NodeMetrics, PodMetrics};

/// An immutable view of everything servable at one instant.
///
/// Cloning the maps inside is O(1) (structural sharing), so a publish copies only the path to what
/// it changes and readers holding older snapshots keep theirs untouched.
#[derive(Clone, Default)]
pub struct Snapshot {
    /// Every node with something servable, by name.
    nodes: OrdMap<Name, Arc<NodeEntry>>,
    /// Which node serves each pod. Ordered by namespace then name, so one namespace is a range.
    pod_owners: OrdMap<PodKey, PodOwner>,
    /// Nodes whose own usage is servable.
    node_count: usize,
    /// Containers served across all pods.
    container_count: usize,
    /// Counts changes to `pod_owners` (a pod added, removed or moved): while it stays, every
    /// pod is served by the node and at the slot it was.
    index_generation: u64,
}

/// What one node's last scrape made servable.
pub(crate) struct NodeEntry {
    pub(crate) node: Option<NodeMetrics>,
    /// Sorted by namespace, then name; no duplicates.
    pub(crate) pods: Vec<PodMetrics>,
    /// The pods' JSON list-item parts, filled by the first reader that wants them.
    json: OnceLock<PodJson>,
    /// Which of the node's publishes this entry is.
    pub(crate) stamp: EntryStamp,
}

/// Which publish of a node an entry is, and where the node announces its latest publish.
///
/// The node's writer numbers each publish (a new entry, or the entry's removal) and stores the
/// number in `latest` once the snapshot holding it is installed. A reader that kept something
/// derived from an entry knows it is still what the node serves while `latest` holds the entry's
/// number, with one atomic load instead of a search of the node map.
#[derive(Clone, Debug, Default)]
pub(crate) struct EntryStamp {
    pub(crate) latest: Arc<LatestPublish>,
    pub(crate) seq: u64,
}

/// Where a node announces its latest publish. Readers load it for every kept pod they serve
/// again, thousands of times a second across nodes, so it sits alone on its cache line: nothing
/// written more often than the node publishes (the `Arc`'s own counts, a neighbouring
/// allocation) may make those loads miss.
#[derive(Debug, Default)]
#[repr(align(64))]
pub(crate) struct LatestPublish(AtomicU64);

/// Where a served pod comes from: its node, its slot in the node's entry, and where the node
/// announces its publishes. With the number of the publish a reader took the pod from, this
/// tells cheaply whether the pod's metrics changed since, and fetches them again without a
/// search of the index.
#[derive(Clone, Debug)]
pub struct PodSource {
    namespace: Name,
    name: Name,
    node: Name,
    slot: u32,
    latest: Arc<LatestPublish>,
}

/// A served pod as one publish of its node holds it.
#[derive(Clone, Copy)]
pub struct ServedPod<'s> {
    pub metrics: &'s PodMetrics,
    /// Its JSON list-item parts (see [`pod_item_parts`]).
    pub parts: PodItemParts<'s>,
    /// The number of the node's publish it was taken from.
    pub publish: u64,
}

/// Every pod of an entry rendered by [`pod_item_parts`], back to back.
struct PodJson {
    bytes: Vec<u8>,
    /// Per pod, in `pods` order: where its head ends and where its tail ends (its head starts
    /// where the previous pod's tail ends).
    ends: Vec<(usize, usize)>,
}

/// A node's entry by the address of the node name its index entries (or a reader's sources)
/// hold, so a walk of the index finds each pod's entry with one hash lookup instead of a search
/// of the node map by name.
///
/// The key is the address of a `Name` borrowed for `'n`, as long as the cache lives, so no two
/// live names share it; a name held in another allocation just takes another slot for the same
/// entry.
struct EntryCache<'s, 'n> {
    nodes: &'s OrdMap<Name, Arc<NodeEntry>>,
    by_address: hashbrown::HashMap<usize, &'s NodeEntry, foldhash::fast::RandomState>,
    names: PhantomData<&'n Name>,
}

/// Pods fetched again from where they were served: each node's entry is searched for by name
/// once, then found by the address of the node name the sources hold (a refresh of a long list
/// fetches many pods of each node).
pub struct SourceLookup<'s, 'a> {
    entries: EntryCache<'s, 'a>,
}

/// The index key of a pod.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct PodKey {
    namespace: Name,
    name: Name,
}

/// Where a pod is served: its node, and its position in that node's entry.
#[derive(Clone, Debug)]
struct PodOwner {
    node: Name,
    /// A hint: checked against the pod's names before use, kept current whenever the node's
    /// pod set changes, so a read finds the pod without searching the node's list.
    slot: u32,
}

/// A pod of the index, not yet looked up in its node's entry: a walk that selects pods by
/// something the snapshot does not hold (their labels) looks up only the pods it selects.
#[derive(Clone, Copy)]
pub struct IndexedPod<'s> {
    nodes: &'s OrdMap<Name, Arc<NodeEntry>>,
    key: &'s PodKey,
    owner: &'s PodOwner,
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
        let entry = self.nodes.get(&*owner.node)?;
        let i = entry.pod_index(namespace, name, owner.slot)?;
        entry.pods.get(i)
    }

    /// All pods sorted by namespace, then name.
    pub fn pods(&self) -> impl Iterator<Item = &PodMetrics> {
        self.owned_pods(self.pod_owners.iter())
            .filter_map(|(entry, i)| entry.pods.get(i))
    }

    /// All pods sorted by namespace, then name, each with its JSON list-item parts (see
    /// [`pod_item_parts`]).
    pub fn pods_json(&self) -> impl Iterator<Item = (&PodMetrics, PodItemParts<'_>)> {
        self.owned_pods(self.pod_owners.iter())
            .filter_map(|(entry, i)| entry.pod_json(i))
    }

    /// One namespace's pods sorted by name, without walking other namespaces.
    pub fn pods_in_namespace(&self, namespace: &str) -> impl Iterator<Item = &PodMetrics> {
        self.owned_pods(self.namespace_owners(namespace))
            .filter_map(|(entry, i)| entry.pods.get(i))
    }

    /// One namespace's pods sorted by name, each with its JSON list-item parts.
    pub fn pods_in_namespace_json(
        &self,
        namespace: &str,
    ) -> impl Iterator<Item = (&PodMetrics, PodItemParts<'_>)> {
        self.owned_pods(self.namespace_owners(namespace))
            .filter_map(|(entry, i)| entry.pod_json(i))
    }

    /// One namespace's pods sorted by name, each looked up in its node's entry only when asked
    /// (see [`IndexedPod::json_with_source`]).
    pub fn indexed_pods_in_namespace(
        &self,
        namespace: &str,
    ) -> impl Iterator<Item = IndexedPod<'_>> {
        self.namespace_owners(namespace)
            .map(|(key, owner)| IndexedPod {
                nodes: &self.nodes,
                key,
                owner,
            })
    }

    /// All pods sorted by namespace, then name, each looked up in its node's entry only when
    /// asked (see [`IndexedPod::json_with_source`]).
    pub fn indexed_pods(&self) -> impl Iterator<Item = IndexedPod<'_>> {
        self.pod_owners.iter().map(|(key, owner)| IndexedPod {
            nodes: &self.nodes,
            key,
            owner,
        })
    }

    /// The index entries of one namespace, in order.
    fn namespace_owners(&self, namespace: &str) -> impl Iterator<Item = (&PodKey, &PodOwner)> {
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
        })
    }

    /// Each index entry's node entry and position in it.
    fn owned_pods<'s>(
        &'s self,
        owners: impl Iterator<Item = (&'s PodKey, &'s PodOwner)>,
    ) -> impl Iterator<Item = (&'s NodeEntry, usize)> {
        let mut entries = EntryCache::new(&self.nodes);
        owners.filter_map(move |(key, owner)| {
            let entry = entries.get(&owner.node)?;
            Some((
                entry,
                entry.pod_index(&key.namespace, &key.name, owner.slot)?,
            ))
        })
    }

    /// Counts changes to which node serves which pod: while it is unchanged, the pods served
    /// are the ones served before, each where it was (see [`SourceLookup::pod`]).
    pub fn index_generation(&self) -> u64 {
        self.index_generation
    }

    /// Fetches pods again from where they were served, for as long as the sources are
    /// borrowed (see [`SourceLookup`]).
    pub fn source_lookup<'a>(&self) -> SourceLookup<'_, 'a> {
        SourceLookup {
            entries: EntryCache::new(&self.nodes),
        }
    }

    /// At least one node and one pod are servable.
    pub fn is_ready(&self) -> bool {
        self.node_count > 0 && !self.pod_owners.is_empty()
    }

    /// Nodes whose own usage is servable: `metrics_server_storage_points{type="node"}`.
    pub fn node_count(&self) -> usize {
        self.node_count
    }

    /// Pods served.
    pub fn pod_count(&self) -> usize {
        self.pod_owners.len()
    }

    /// Containers served across all pods: `metrics_server_storage_points{type="container"}`.
    pub fn container_count(&self) -> usize {
        self.container_count
    }

    /// The node has an entry (its own usage or any pod).
    pub(crate) fn has_node(&self, node: &str) -> bool {
        self.nodes.contains_key(node)
    }

    /// The node serving a pod.
    pub(crate) fn pod_owner(&self, namespace: &str, name: &str) -> Option<&Name> {
        self.pod_owners
            .get(&PodKeyRef { namespace, name })
            .map(|owner| &owner.node)
    }

    /// Every index entry's slot points at its pod.
    #[cfg(test)]
    pub(crate) fn slots_are_current(&self) -> bool {
        self.pod_owners.iter().all(|(key, owner)| {
            self.nodes
                .get(&*owner.node)
                .and_then(|entry| entry.pods.get(owner.slot as usize))
                .is_some_and(|p| p.namespace == key.namespace && p.name == key.name)
        })
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

        let mut index_changed = false;
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
                    if next.pod_owners.get(&key).is_some_and(|o| o.node == *node) {
                        next.pod_owners.remove(&key);
                        index_changed = true;
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
                        PodOwner {
                            node: node.clone(),
                            slot: slot(j),
                        },
                    );
                    index_changed = true;
                    j += 1;
                }
                Ordering::Equal => {
                    // Only a changed pod set moves pods; a steady update skips this.
                    if i != j {
                        let moved = &new_pods[j];
                        let key = PodKeyRef {
                            namespace: &moved.namespace,
                            name: &moved.name,
                        };
                        if let Some(owner) = next.pod_owners.get_mut(&key) {
                            if owner.node == *node {
                                owner.slot = slot(j);
                                index_changed = true;
                            }
                        }
                    }
                    i += 1;
                    j += 1;
                }
            }
        }

        let (old_node, old_containers) = old.as_deref().map_or((0, 0), NodeEntry::counts);
        let (new_node, new_containers) = entry.map_or((0, 0), |e| e.counts());
        // The counts are sums over the entries, the old entry's share included, so subtracting
        // it first cannot underflow.
        next.node_count = next.node_count - old_node + new_node;
        next.container_count = next.container_count - old_containers + new_containers;
        next.index_generation += u64::from(index_changed);
        next
    }
}

// === impl NodeEntry ===

impl NodeEntry {
    pub(crate) fn new(node: Option<NodeMetrics>, pods: Vec<PodMetrics>, stamp: EntryStamp) -> Self {
        NodeEntry {
            node,
            pods,
            json: OnceLock::new(),
            stamp,
        }
    }

    /// Drops the cached JSON, for an entry about to be refilled with new values.
    pub(crate) fn forget_json(&mut self) {
        self.json = OnceLock::new();
    }

    /// Position of the pod named so, looked for first at `slot`.
    fn pod_index(&self, namespace: &str, name: &str, slot: u32) -> Option<usize> {
        let hinted = usize::try_from(slot).ok();
        if let Some(i) = hinted {
            if self
                .pods
                .get(i)
                .is_some_and(|p| same_str(&p.namespace, namespace) && same_str(&p.name, name))
            {
                return hinted;
            }
        }
        self.pods
            .binary_search_by(|p| (&*p.namespace, &*p.name).cmp(&(namespace, name)))
            .ok()
    }

    /// The pod at position `i` with its JSON list-item parts, rendering the entry's parts first
    /// if no reader has yet.
    fn pod_json(&self, i: usize) -> Option<(&PodMetrics, PodItemParts<'_>)> {
        let json = self.json.get_or_init(|| PodJson::render(&self.pods));
        let start = match i.checked_sub(1) {
            Some(before) => json.ends.get(before)?.1,
            None => 0,
        };
        let &(head_end, tail_end) = json.ends.get(i)?;
        let parts = PodItemParts {
            head: json.bytes.get(start..head_end)?,
            tail: json.bytes.get(head_end..tail_end)?,
        };
        Some((self.pods.get(i)?, parts))
    }

    /// (servable node points, served containers) this entry adds to the snapshot's counts.
    fn counts(&self) -> (usize, usize) {
        let containers = self.pods.iter().map(|p| p.containers.len()).sum();
        (usize::from(self.node.is_some()), containers)
    }
}

impl PartialEq for NodeEntry {
    /// The served values; whether the JSON cache is filled yet does not matter.
    fn eq(&self, other: &Self) -> bool {
        self.node == other.node && self.pods == other.pods
    }
}

impl Eq for NodeEntry {}

impl std::fmt::Debug for NodeEntry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeEntry")
            .field("node", &self.node)
            .field("pods", &self.pods)
            .field("json_rendered", &self.json.get().is_some())
            .finish()
    }
}

// === impl PodJson ===

impl PodJson {
    fn render(pods: &[PodMetrics]) -> Self {
        // About 200 bytes per pod plus 100 per container; one growth at most.
        let containers: usize = pods.iter().map(|p| p.containers.len()).sum();
        let mut bytes = Vec::with_capacity(pods.len() * 200 + containers * 100);
        let mut ends = Vec::with_capacity(pods.len());
        for pod in pods {
            let start = bytes.len();
            let head = pod_item_parts(&mut bytes, pod);
            ends.push((start + head, bytes.len()));
        }
        PodJson { bytes, ends }
    }
}

// === impl SourceLookup ===

impl<'s, 'a> SourceLookup<'s, 'a> {
    /// A pod as its node's entry serves it now, given where it was served from. `None` if that
    /// node's entry no longer holds the pod at that slot (the index changed since), or is not
    /// the same node's any more.
    pub fn pod(&mut self, source: &'a PodSource) -> Option<ServedPod<'s>> {
        let entry = self.entries.get(&source.node)?;
        let i = usize::try_from(source.slot).ok()?;
        let pod = entry.pods.get(i)?;
        if !(same_str(&pod.namespace, &source.namespace)
            && same_str(&pod.name, &source.name)
            && Arc::ptr_eq(&entry.stamp.latest, &source.latest))
        {
            return None;
        }
        let (metrics, parts) = entry.pod_json(i)?;
        Some(ServedPod {
            metrics,
            parts,
            publish: entry.stamp.seq,
        })
    }
}

// === impl EntryCache ===

impl<'s, 'n> EntryCache<'s, 'n> {
    fn new(nodes: &'s OrdMap<Name, Arc<NodeEntry>>) -> Self {
        EntryCache {
            nodes,
            by_address: hashbrown::HashMap::with_hasher(foldhash::fast::RandomState::default()),
            names: PhantomData,
        }
    }

    fn get(&mut self, node: &'n Name) -> Option<&'s NodeEntry> {
        let address = Arc::as_ptr(node).cast::<u8>() as usize;
        if let Some(&entry) = self.by_address.get(&address) {
            return Some(entry);
        }
        let entry = &**self.nodes.get(&**node)?;
        self.by_address.insert(address, entry);
        Some(entry)
    }
}

/// String equality that first checks for the very same bytes: the index and the entries share
/// interned names, so the hint check of a list walk costs no string comparison (and no touch of
/// the name's bytes, a cache miss per pod across a large snapshot).
#[inline]
fn same_str(a: &str, b: &str) -> bool {
    same_name(a, b) || a == b
}

/// A position as stored in a [`PodOwner`]; one beyond `u32` just never matches.
fn slot(position: usize) -> u32 {
    u32::try_from(position).unwrap_or(u32::MAX)
}

/// The order pods are kept in: namespace, then name.
pub(crate) fn pod_order(a: &PodMetrics, b: &PodMetrics) -> Ordering {
    // Names are interned across scrapes, so a steady pod compares by pointer.
    pod_key_order((&a.namespace, &a.name), (&b.namespace, &b.name))
}

// === impl IndexedPod ===

impl<'s> IndexedPod<'s> {
    pub fn namespace(&self) -> &'s str {
        &self.key.namespace
    }

    pub fn name(&self) -> &'s str {
        &self.key.name
    }

    /// The pod's metrics and JSON list-item parts, from its node's entry, with where the pod is
    /// served from.
    pub fn json_with_source(&self) -> Option<(ServedPod<'s>, PodSource)> {
        let entry = self.nodes.get(&*self.owner.node)?;
        let i = entry.pod_index(&self.key.namespace, &self.key.name, self.owner.slot)?;
        let (metrics, parts) = entry.pod_json(i)?;
        let source = PodSource {
            namespace: self.key.namespace.clone(),
            name: self.key.name.clone(),
            node: self.owner.node.clone(),
            slot: slot(i),
            latest: Arc::clone(&entry.stamp.latest),
        };
        let served = ServedPod {
            metrics,
            parts,
            publish: entry.stamp.seq,
        };
        Some((served, source))
    }
}

// === impl EntryStamp ===

impl EntryStamp {
    /// Announces that the snapshot holding publish `seq` is installed.
    pub(crate) fn announce(&self, seq: u64) {
        self.latest.0.store(seq, AtomicOrdering::Release);
    }
}

// === impl PodSource ===

impl PodSource {
    /// Publish `publish` of the pod's node is still its latest: the pod's metrics are what they
    /// were when taken from it. One atomic load.
    pub fn is_current(&self, publish: u64) -> bool {
        self.latest.0.load(AtomicOrdering::Acquire) == publish
    }
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
