//! One node's writer-side state: its last two points, its pods' containers' last two points, and
//! how a scrape updates them and turns them into a servable [`NodeEntry`].
//!
//! Only the node's own scraper changes this state, under the node's shard lock; nothing here
//! knows about locks or publishing.

use std::cmp::Ordering;
use std::sync::Arc;

use crate::model::{
    pod_key_order, ContainerMetrics, Name, NodeMetrics, NodeScrape, PodMetrics, PodNames,
    PodScrape, UnixNanos,
};

use super::points::{Points, RateError};
use super::snapshot::{EntryStamp, NodeEntry};

/// What the store remembers about one node between scrapes.
#[derive(Debug)]
pub(crate) struct NodeState {
    node: Option<Points>,
    /// Sorted by namespace, then name; no duplicates. Replaced by each scrape, so pods the kubelet
    /// stops reporting are forgotten and memory stays bounded by what the node runs.
    pods: Vec<PodState>,
    /// Newest sample time seen from this node (kubelet clock).
    newest_sample: UnixNanos,
    /// Our clock when `newest_sample` last moved forward; staleness is measured from it, so a
    /// kubelet clock that runs behind does not expire its node and a stuck one does.
    fresh_at: UnixNanos,
    /// The entry published before the last one, kept for its allocations: once no snapshot or
    /// reader holds it any more, the next publish refills it in place (see [`Self::next_entry`]).
    spare: Option<Arc<NodeEntry>>,
    /// The entry published last; becomes the spare at the next publish.
    published: Option<Arc<NodeEntry>>,
    /// For each position in the last scrape, where that pod landed in `pods`: a kubelet lists
    /// its pods in the same order every time, so the next scrape finds each pod's state at its
    /// hinted position with one comparison instead of a binary search.
    positions: Vec<u32>,
    /// Every name of the last scrape, in its order, in one run of bytes: when the next scrape
    /// lists the same names, `positions` still says where each pod's state is and every pod keeps
    /// its containers, which is checked against this instead of against the stored names (one
    /// allocation each, and cold by the next scrape).
    scraped_names: ScrapedNames,
    /// The number of this node's latest publish, and where it is announced (see
    /// [`EntryStamp`]).
    stamp: EntryStamp,
}

#[derive(Debug)]
struct PodState {
    namespace: Name,
    name: Name,
    /// In the order the kubelet reported them; no duplicate names.
    containers: Vec<ContainerState>,
}

#[derive(Debug)]
struct ContainerState {
    name: Name,
    points: Points,
}

// === impl NodeState ===

impl NodeState {
    pub(crate) fn new(now: UnixNanos) -> Self {
        NodeState {
            node: None,
            pods: Vec::new(),
            newest_sample: UnixNanos::MIN,
            fresh_at: now,
            spare: None,
            published: None,
            positions: Vec::new(),
            scraped_names: ScrapedNames::default(),
            stamp: EntryStamp::default(),
        }
    }

    /// Numbers the publish about to be built: entries built from here on carry its number.
    pub(crate) fn begin_publish(&mut self) {
        self.stamp.seq += 1;
    }

    /// The publish numbered last is installed: readers holding older entries' stamps see them
    /// outdated from now on.
    pub(crate) fn announce(&self) {
        self.stamp.announce(self.stamp.seq);
    }

    /// The node's state is being dropped: every stamp taken from its entries is outdated.
    pub(crate) fn retire(&self) {
        self.stamp.announce(u64::MAX);
    }

    /// Stores one scrape: the node's point and the full set of its pods.
    ///
    /// Names are interned: a pod or container seen before keeps its [`Name`], so a steady scrape
    /// allocates no strings. A pod new to the node takes its names from `pod_names` when that
    /// knows the pod.
    pub(crate) fn update(
        &mut self,
        scrape: &NodeScrape<'_>,
        now: UnixNanos,
        resolution: i64,
        pod_names: Option<&dyn PodNames>,
    ) {
        let mut newest = UnixNanos::MIN;
        // A successful scrape without a usable node point forgets the node's points, as upstream
        // does for a node missing from a batch.
        self.node = scrape.node.map(|point| {
            newest = newest.max(point.timestamp);
            Points::next_node(self.node.as_ref(), point)
        });

        if self.scraped_names.matches(scrape)
            && self.positions.len() == self.pods.len()
            && self.positions_are_a_permutation()
        {
            self.update_same_names(scrape, resolution, &mut newest);
        } else {
            if !self.update_in_place(scrape, resolution, &mut newest) {
                self.rebuild(scrape, resolution, pod_names, &mut newest);
            }
            self.scraped_names.record(scrape);
        }
        self.note_newest(newest, now);
    }

    /// The general path: pods matched by name (a hinted position, else a binary search), new
    /// ones created, missing ones dropped, then sorted.
    fn rebuild(
        &mut self,
        scrape: &NodeScrape<'_>,
        resolution: i64,
        pod_names: Option<&dyn PodNames>,
        newest: &mut UnixNanos,
    ) {
        // Old pods are consumed as they are matched: their container lists are reused in place.
        let mut old_pods = std::mem::take(&mut self.pods);
        let mut pods: Vec<PodState> = Vec::with_capacity(scrape.pods.len());
        for (position, pod) in scrape.pods.iter().enumerate() {
            let hinted = self
                .positions
                .get(position)
                .and_then(|&i| usize::try_from(i).ok())
                .filter(|&i| {
                    old_pods
                        .get(i)
                        .is_some_and(|p| *p.namespace == *pod.namespace && *p.name == *pod.name)
                });
            let found = match hinted {
                Some(i) => Ok(i),
                None => old_pods.binary_search_by(|p| {
                    (&*p.namespace, &*p.name).cmp(&(pod.namespace.as_ref(), pod.name.as_ref()))
                }),
            };
            let (namespace, name, old_containers) = match found {
                Ok(i) => {
                    let old = &mut old_pods[i];
                    let containers = std::mem::take(&mut old.containers);
                    (old.namespace.clone(), old.name.clone(), containers)
                }
                Err(near) => {
                    match pod_names.and_then(|source| source.pod_names(&pod.namespace, &pod.name)) {
                        Some((namespace, name)) => (namespace, name, Vec::new()),
                        None => {
                            let namespace = intern_namespace(&old_pods, near, &pod.namespace)
                                .or_else(|| {
                                    pods.last()
                                        .filter(|p| *p.namespace == *pod.namespace)
                                        .map(|p| p.namespace.clone())
                                })
                                .unwrap_or_else(|| Name::from(pod.namespace.as_ref()));
                            (namespace, Name::from(pod.name.as_ref()), Vec::new())
                        }
                    }
                }
            };

            let containers =
                next_containers(old_containers, pod, (&namespace, &name), resolution, newest);
            pods.push(PodState {
                namespace,
                name,
                containers,
            });
        }
        // Sorted through a permutation, to learn where each scrape position lands. Stable, so
        // the first of duplicate pods wins (a later duplicate points at the kept one).
        let mut order: Vec<usize> = (0..pods.len()).collect();
        order.sort_by(|&a, &b| pod_state_order(&pods[a], &pods[b]));
        let mut unsorted: Vec<Option<PodState>> = pods.into_iter().map(Some).collect();
        let mut sorted: Vec<PodState> = Vec::with_capacity(unsorted.len());
        let mut positions = std::mem::take(&mut self.positions);
        positions.clear();
        positions.resize(unsorted.len(), 0);
        for &at in &order {
            let Some(pod) = unsorted.get_mut(at).and_then(Option::take) else {
                continue;
            };
            let duplicate = sorted
                .last()
                .is_some_and(|kept| pod_state_order(kept, &pod) == Ordering::Equal);
            if !duplicate {
                sorted.push(pod);
            }
            positions[at] = slot(sorted.len() - 1);
        }
        self.pods = sorted;
        self.positions = positions;
    }

    /// The scrape lists exactly the names of the last one, in the same order, and `positions` is
    /// a permutation: each pod's state is at its position and has the scraped pod's names, and a
    /// container list as long as the scraped one has its names in its order (a list is only ever
    /// shorter when a duplicate name was dropped), so only the points change.
    fn update_same_names(
        &mut self,
        scrape: &NodeScrape<'_>,
        resolution: i64,
        newest: &mut UnixNanos,
    ) {
        for (pod, &slot) in scrape.pods.iter().zip(&self.positions) {
            // A permutation of the slots: every one is in range.
            let Some(state) = self.pods.get_mut(slot as usize) else {
                continue;
            };
            if state.containers.len() != pod.containers.len() {
                state.take_scraped_containers(pod, resolution, newest);
                continue;
            }
            for (state, container) in state.containers.iter_mut().zip(&pod.containers) {
                *newest = (*newest).max(container.point.timestamp);
                state.points =
                    Points::next_container(Some(&state.points), container.point, resolution);
            }
        }
    }

    /// The steady case: the scrape lists exactly the pods of the last one, each at the position
    /// it had then, so every pod's state is updated where it lies: no sorting, no new vectors, no
    /// name reference counting. Returns `false`, having changed nothing, when the scrape differs
    /// in any way (a pod added, gone, moved or repeated); the general path then takes it.
    fn update_in_place(
        &mut self,
        scrape: &NodeScrape<'_>,
        resolution: i64,
        newest: &mut UnixNanos,
    ) -> bool {
        let pods = &self.pods;
        if scrape.pods.len() != pods.len() || self.positions.len() != pods.len() {
            return false;
        }
        // With as many positions as pods, every position hitting a distinct slot whose pod has
        // the scraped name makes the positions a permutation of the sorted, duplicate-free pods.
        // A pod lands at the slot its position names, so two positions naming one slot would be
        // one pod listed twice, which the general path keeps once.
        let all_hit = scrape.pods.iter().zip(&self.positions).all(|(pod, &slot)| {
            usize::try_from(slot)
                .ok()
                .and_then(|i| pods.get(i))
                .is_some_and(|old| *old.namespace == *pod.namespace && *old.name == *pod.name)
        });
        if !all_hit || !self.positions_are_a_permutation() {
            return false;
        }
        for (pod, &slot) in scrape.pods.iter().zip(&self.positions) {
            // Checked above: every slot is in range.
            let Some(state) = self.pods.get_mut(slot as usize) else {
                continue;
            };
            state.take_scraped_containers(pod, resolution, newest);
        }
        true
    }

    /// Whether `positions` names every slot of `pods` exactly once.
    fn positions_are_a_permutation(&self) -> bool {
        // Bits on the stack for a typical node; a very large one pays one allocation.
        const INLINE_WORDS: usize = 8;
        let words = self.pods.len().div_ceil(64);
        let mut inline = [0u64; INLINE_WORDS];
        let mut heap = Vec::new();
        let seen: &mut [u64] = if words <= INLINE_WORDS {
            &mut inline[..words]
        } else {
            heap.resize(words, 0u64);
            &mut heap
        };
        for &slot in &self.positions {
            let slot = slot as usize;
            let (word, bit) = (slot / 64, 1u64 << (slot % 64));
            match seen.get_mut(word) {
                Some(w) if *w & bit == 0 => *w |= bit,
                _ => return false,
            }
        }
        true
    }

    fn note_newest(&mut self, newest: UnixNanos, now: UnixNanos) {
        if newest > self.newest_sample {
            self.newest_sample = newest;
            self.fresh_at = now;
        }
    }

    /// Forgets one pod; says whether it was there.
    pub(crate) fn remove_pod(&mut self, namespace: &str, name: &str) -> bool {
        match self
            .pods
            .binary_search_by(|p| (&*p.namespace, &*p.name).cmp(&(namespace, name)))
        {
            Ok(i) => {
                self.pods.remove(i);
                // Slots after `i` moved: the next scrape matches pods by name again.
                self.scraped_names.forget();
                true
            }
            Err(_) => false,
        }
    }

    /// No point from this node has moved forward for longer than `staleness` before `now`.
    pub(crate) fn is_stale(&self, now: UnixNanos, staleness: i64) -> bool {
        now.saturating_sub(self.fresh_at) > staleness
    }

    /// What this node can serve now, to publish; `None` if nothing.
    ///
    /// Refills the spare entry in place when nothing else holds it (no snapshot, no reader): in
    /// steady state every pod and container is where it was, so the refill only overwrites
    /// numbers, with no allocation and no reference-count traffic for names. Otherwise, as
    /// [`Self::entry`], a new one.
    pub(crate) fn next_entry(&mut self, node: &Name) -> Option<Arc<NodeEntry>> {
        let next = match self.spare.take() {
            Some(mut spare) => match Arc::get_mut(&mut spare) {
                Some(entry) => self.refill(node, entry).then_some(spare),
                None => self.entry(node).map(Arc::new),
            },
            None => self.entry(node).map(Arc::new),
        };
        self.spare = std::mem::replace(&mut self.published, next.clone());
        next
    }

    /// Overwrites `entry` with what this node can serve now; false if nothing.
    fn refill(&self, node: &Name, entry: &mut NodeEntry) -> bool {
        entry.forget_json();
        entry.stamp.seq = self.stamp.seq;
        entry.node = self.node_metrics(node);
        let mut served = 0;
        for pod in &self.pods {
            match entry.pods.get_mut(served) {
                Some(slot) => {
                    if pod.write_metrics(node, slot) {
                        served += 1;
                    }
                }
                None => {
                    if let Some(metrics) = pod.metrics(node) {
                        entry.pods.push(metrics);
                        served += 1;
                    }
                }
            }
        }
        entry.pods.truncate(served);
        entry.node.is_some() || served > 0
    }

    fn node_metrics(&self, node: &Name) -> Option<NodeMetrics> {
        self.node.as_ref().and_then(|points| match points.rate() {
            Ok(rate) => Some(NodeMetrics {
                name: node.clone(),
                timestamp: rate.timestamp,
                window: rate.window,
                usage: rate.usage,
            }),
            Err(RateError::MissingPrevious) => None,
            Err(error) => {
                tracing::warn!(node = %node, %error, "Skipped node usage.");
                None
            }
        })
    }

    /// What this node can serve now; `None` if nothing.
    pub(crate) fn entry(&self, node: &Name) -> Option<NodeEntry> {
        let node_metrics = self.node_metrics(node);
        let pods: Vec<PodMetrics> = self
            .pods
            .iter()
            .filter_map(|pod| pod.metrics(node))
            .collect();
        if node_metrics.is_none() && pods.is_empty() {
            return None;
        }
        Some(NodeEntry::new(node_metrics, pods, self.stamp.clone()))
    }

    #[cfg(test)]
    pub(crate) fn pod_names(&self, namespace: &str, name: &str) -> Option<(Name, Name, Vec<Name>)> {
        self.pods
            .iter()
            .find(|p| &*p.namespace == namespace && &*p.name == name)
            .map(|p| {
                (
                    p.namespace.clone(),
                    p.name.clone(),
                    p.containers.iter().map(|c| c.name.clone()).collect(),
                )
            })
    }
}

// === impl PodState ===

impl PodState {
    /// As [`Self::metrics`], written over `out` (whatever pod it held); false if not servable,
    /// leaving `out` partly overwritten. Names already in place are kept, not cloned again.
    fn write_metrics(&self, node: &Name, out: &mut PodMetrics) -> bool {
        if self.containers.iter().any(|c| c.points.prev.is_none()) {
            return false;
        }
        let mut earliest: Option<(UnixNanos, i64)> = None;
        let mut written = 0;
        for container in &self.containers {
            match container.points.rate() {
                Ok(rate) => {
                    match out.containers.get_mut(written) {
                        Some(slot) => {
                            if !Arc::ptr_eq(&slot.name, &container.name) {
                                slot.name = container.name.clone();
                            }
                            slot.usage = rate.usage;
                        }
                        None => out.containers.push(ContainerMetrics {
                            name: container.name.clone(),
                            usage: rate.usage,
                        }),
                    }
                    written += 1;
                    if earliest.is_none_or(|(timestamp, _)| timestamp > rate.timestamp) {
                        earliest = Some((rate.timestamp, rate.window));
                    }
                }
                Err(error) => tracing::warn!(
                    namespace = %self.namespace,
                    pod = %self.name,
                    container = %container.name,
                    %error,
                    "Skipped container usage."
                ),
            }
        }
        let Some((timestamp, window)) = earliest else {
            return false;
        };
        out.containers.truncate(written);
        for (slot, name) in [
            (&mut out.namespace, &self.namespace),
            (&mut out.name, &self.name),
            (&mut out.node, node),
        ] {
            if !Arc::ptr_eq(slot, name) {
                *slot = name.clone();
            }
        }
        out.timestamp = timestamp;
        out.window = window;
        true
    }

    /// The pod's usage, if servable: every container has two points and at least one has a rate.
    /// The pod's time is that of its container with the earliest sample.
    fn metrics(&self, node: &Name) -> Option<PodMetrics> {
        if self.containers.iter().any(|c| c.points.prev.is_none()) {
            return None;
        }
        let mut containers = Vec::with_capacity(self.containers.len());
        let mut earliest: Option<(UnixNanos, i64)> = None;
        for container in &self.containers {
            match container.points.rate() {
                Ok(rate) => {
                    containers.push(ContainerMetrics {
                        name: container.name.clone(),
                        usage: rate.usage,
                    });
                    if earliest.is_none_or(|(timestamp, _)| timestamp > rate.timestamp) {
                        earliest = Some((rate.timestamp, rate.window));
                    }
                }
                Err(error) => tracing::warn!(
                    namespace = %self.namespace,
                    pod = %self.name,
                    container = %container.name,
                    %error,
                    "Skipped container usage."
                ),
            }
        }
        let (timestamp, window) = earliest?;
        Some(PodMetrics {
            namespace: self.namespace.clone(),
            name: self.name.clone(),
            node: Arc::clone(node),
            timestamp,
            window,
            containers,
        })
    }
}

/// The namespace name of a pod next to position `near` in `pods`, if it is `namespace`.
fn intern_namespace(pods: &[PodState], near: usize, namespace: &str) -> Option<Name> {
    let before = near.checked_sub(1).and_then(|i| pods.get(i));
    [before, pods.get(near)]
        .into_iter()
        .flatten()
        .find(|p| *p.namespace == *namespace)
        .map(|p| p.namespace.clone())
}

// === impl PodState ===

impl PodState {
    /// Replaces the containers with the scraped pod's, by [`next_containers`].
    fn take_scraped_containers(
        &mut self,
        pod: &PodScrape<'_>,
        resolution: i64,
        newest: &mut UnixNanos,
    ) {
        let old_containers = std::mem::take(&mut self.containers);
        self.containers = next_containers(
            old_containers,
            pod,
            (&self.namespace, &self.name),
            resolution,
            newest,
        );
    }
}

/// A pod's containers after a scrape: its old states updated in place when the kubelet lists the
/// same containers in the same order (the steady case), else rebuilt by name, keeping the first
/// of duplicate names.
fn next_containers(
    old_containers: Vec<ContainerState>,
    pod: &PodScrape<'_>,
    (namespace, name): (&Name, &Name),
    resolution: i64,
    newest: &mut UnixNanos,
) -> Vec<ContainerState> {
    let same_containers = old_containers.len() == pod.containers.len()
        && old_containers
            .iter()
            .zip(&pod.containers)
            .all(|(old, new)| *old.name == *new.name);
    if same_containers {
        let mut containers = old_containers;
        for (state, container) in containers.iter_mut().zip(&pod.containers) {
            *newest = (*newest).max(container.point.timestamp);
            state.points = Points::next_container(Some(&state.points), container.point, resolution);
        }
        return containers;
    }
    let mut containers: Vec<ContainerState> = Vec::with_capacity(pod.containers.len());
    for container in &pod.containers {
        if containers.iter().any(|c| *c.name == *container.name) {
            tracing::debug!(
                namespace = %namespace,
                pod = %name,
                container = %container.name,
                "Dropped a duplicate container point."
            );
            continue;
        }
        *newest = (*newest).max(container.point.timestamp);
        let old = old_containers.iter().find(|c| *c.name == *container.name);
        containers.push(ContainerState {
            name: old.map_or_else(|| Name::from(container.name.as_ref()), |c| c.name.clone()),
            points: Points::next_container(old.map(|c| &c.points), container.point, resolution),
        });
    }
    containers
}

/// The names of one scrape in its order, each behind its length: per pod the namespace, the
/// name, the number of containers and their names. Compared front to back, one run of bytes.
#[derive(Debug, Default)]
struct ScrapedNames {
    bytes: Vec<u8>,
    /// `false` until a scrape is recorded, and after the pods changed behind the record's back.
    known: bool,
}

impl ScrapedNames {
    fn record(&mut self, scrape: &NodeScrape<'_>) {
        self.bytes.clear();
        let mut fits = true;
        for pod in &scrape.pods {
            fits &= put_len(&mut self.bytes, pod.namespace.len());
            self.bytes.extend_from_slice(pod.namespace.as_bytes());
            fits &= put_len(&mut self.bytes, pod.name.len());
            self.bytes.extend_from_slice(pod.name.as_bytes());
            fits &= put_len(&mut self.bytes, pod.containers.len());
            for container in &pod.containers {
                fits &= put_len(&mut self.bytes, container.name.len());
                self.bytes.extend_from_slice(container.name.as_bytes());
            }
        }
        // A length past `u32` (never written by a kubelet) would make the record ambiguous.
        self.known = fits;
    }

    fn forget(&mut self) {
        self.known = false;
    }

    fn matches(&self, scrape: &NodeScrape<'_>) -> bool {
        if !self.known {
            return false;
        }
        let mut rest = self.bytes.as_slice();
        let all_same = scrape.pods.iter().all(|pod| {
            take_name(&mut rest, &pod.namespace)
                && take_name(&mut rest, &pod.name)
                && take_len(&mut rest, pod.containers.len())
                && pod
                    .containers
                    .iter()
                    .all(|container| take_name(&mut rest, &container.name))
        });
        all_same && rest.is_empty()
    }
}

/// Appends `len` as four bytes; `false` if it does not fit.
fn put_len(out: &mut Vec<u8>, len: usize) -> bool {
    let fits = u32::try_from(len);
    out.extend_from_slice(&fits.unwrap_or(u32::MAX).to_le_bytes());
    fits.is_ok()
}

/// Consumes `len` from the front of `rest` if it is there.
fn take_len(rest: &mut &[u8], len: usize) -> bool {
    let Some((recorded, after)) = rest.split_first_chunk::<4>() else {
        return false;
    };
    if usize::try_from(u32::from_le_bytes(*recorded)) != Ok(len) {
        return false;
    }
    *rest = after;
    true
}

/// Consumes `name` (its length, then its bytes) from the front of `rest` if it is there.
fn take_name(rest: &mut &[u8], name: &str) -> bool {
    if !take_len(rest, name.len()) {
        return false;
    }
    match rest.split_at_checked(name.len()) {
        Some((recorded, after)) if recorded == name.as_bytes() => {
            *rest = after;
            true
        }
        _ => false,
    }
}

/// A position as a `u32`; a node never runs four billion pods, and a saturated hint just misses.
fn slot(position: usize) -> u32 {
    u32::try_from(position).unwrap_or(u32::MAX)
}

fn pod_state_order(a: &PodState, b: &PodState) -> Ordering {
    pod_key_order((&a.namespace, &a.name), (&b.namespace, &b.name))
}

#[cfg(test)]
mod tests {
    use std::borrow::Cow;

    use proptest::prelude::*;

    use super::*;
    use crate::model::{ContainerScrape, MetricsPoint};

    const S: i64 = 1_000_000_000;
    const RESOLUTION: i64 = 15 * S;

    /// One scrape at `t` seconds: each listed pod `(namespace, pod, containers)` with a value
    /// derived from its listing position, so a pod's points depend on where it was listed.
    fn scrape(t: i64, listed: &[(usize, usize, usize)]) -> (Vec<String>, Vec<MetricsPoint>) {
        let names = listed
            .iter()
            .map(|(ns, p, _)| format!("ns{ns}/p{p}"))
            .collect();
        let points = listed
            .iter()
            .enumerate()
            .map(|(i, _)| MetricsPoint {
                start_time: 0,
                timestamp: t * S,
                cumulative_cpu_used: (t * S) as u64 * (i as u64 + 1),
                memory_usage: 1000 + i as u64,
            })
            .collect();
        (names, points)
    }

    fn node_scrape<'a>(
        names: &'a [String],
        points: &[MetricsPoint],
        containers: &[(usize, usize, usize)],
    ) -> NodeScrape<'a> {
        NodeScrape {
            node: points.first().copied(),
            pods: names
                .iter()
                .zip(points)
                .zip(containers)
                .map(|((full, point), &(_, _, count))| {
                    let (namespace, name) = full.split_once('/').unwrap_or((full, ""));
                    PodScrape {
                        namespace: Cow::Borrowed(namespace),
                        name: Cow::Borrowed(name),
                        // A third container repeats the second's name, which the store keeps
                        // once; a fourth follows it.
                        containers: ["a", "b", "b", "c"][..count]
                            .iter()
                            .enumerate()
                            .map(|(j, c)| ContainerScrape {
                                name: Cow::Borrowed(c),
                                // Each container its own memory, so one served for another shows.
                                point: MetricsPoint {
                                    memory_usage: point.memory_usage + 100 * j as u64,
                                    ..*point
                                },
                            })
                            .collect(),
                    }
                })
                .collect(),
        }
    }

    fn listing() -> impl Strategy<Value = Vec<(usize, usize, usize)>> {
        proptest::collection::vec((0..2usize, 0..4usize, 1..5usize), 0..6)
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

        /// Updating in place (the steady case) serves exactly what the general path serves, for
        /// any sequence of listings: repeated ones take the in-place path, changed, reordered or
        /// duplicated ones must not, nor a repeated one after a pod was removed between scrapes.
        #[test]
        fn in_place_updates_serve_what_the_general_path_serves(
            first in listing(),
            steps in proptest::collection::vec(
                (any::<bool>(), listing(), proptest::option::of(0..6usize)),
                1..8,
            ),
        ) {
            let node = Name::from("n1");
            let mut fast = NodeState::new(0);
            let mut general = NodeState::new(0);
            let mut current = first;
            for (t, (repeat, next, removed)) in steps.into_iter().enumerate() {
                if let Some(&(ns, p, _)) = removed.and_then(|i| current.get(i)) {
                    let (namespace, name) = (format!("ns{ns}"), format!("p{p}"));
                    prop_assert_eq!(
                        fast.remove_pod(&namespace, &name),
                        general.remove_pod(&namespace, &name)
                    );
                }
                if !repeat {
                    current = next;
                }
                let t = t as i64 + 1;
                let (names, points) = scrape(t * 15, &current);
                let scrape = node_scrape(&names, &points, &current);
                fast.update(&scrape, t * 15 * S, RESOLUTION, None);
                // No remembered positions or names: the general path, always.
                general.positions.clear();
                general.scraped_names.forget();
                general.update(&scrape, t * 15 * S, RESOLUTION, None);
                let served = |state: &NodeState| state.entry(&node).map(|e| (e.node, e.pods));
                prop_assert_eq!(served(&fast), served(&general));
                prop_assert_eq!(fast.newest_sample, general.newest_sample);
                prop_assert_eq!(fast.fresh_at, general.fresh_at);
            }
        }
    }

    #[test]
    fn a_repeated_listing_is_updated_in_place() {
        let listed = [(0, 1, 1), (1, 0, 2), (0, 0, 1)];
        let mut state = NodeState::new(0);
        let (names, points) = scrape(15, &listed);
        state.update(
            &node_scrape(&names, &points, &listed),
            15 * S,
            RESOLUTION,
            None,
        );
        let before: Vec<*const PodState> = state.pods.iter().map(|p| p as *const _).collect();
        let (names, points) = scrape(30, &listed);
        let scrape = node_scrape(&names, &points, &listed);
        let mut newest = UnixNanos::MIN;
        assert!(state.update_in_place(&scrape, RESOLUTION, &mut newest));
        let after: Vec<*const PodState> = state.pods.iter().map(|p| p as *const _).collect();
        assert_eq!(before, after, "the pods stay where they were");
        assert_eq!(newest, 30 * S);
    }

    #[test]
    fn a_changed_listing_is_not_updated_in_place() {
        let listed = [(0, 1, 1), (0, 2, 1)];
        for changed in [
            vec![(0, 1, 1), (0, 1, 1)],
            vec![(0, 2, 1), (0, 1, 1)],
            vec![(0, 1, 1)],
            vec![(0, 1, 1), (0, 3, 1)],
        ] {
            let mut state = NodeState::new(0);
            let (names, points) = scrape(15, &listed);
            state.update(
                &node_scrape(&names, &points, &listed),
                15 * S,
                RESOLUTION,
                None,
            );
            let (names, points) = scrape(30, &changed);
            let mut newest = UnixNanos::MIN;
            assert!(
                !state.update_in_place(
                    &node_scrape(&names, &points, &changed),
                    RESOLUTION,
                    &mut newest
                ),
                "{changed:?}"
            );
            assert_eq!(newest, UnixNanos::MIN, "nothing was touched");
        }
    }
}
