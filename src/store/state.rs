//! One node's writer-side state: its last two points, its pods' containers' last two points, and
//! how a scrape updates them and turns them into a servable [`NodeEntry`].
//!
//! Only the node's own scraper changes this state, under the node's shard lock; nothing here
//! knows about locks or publishing.

use std::cmp::Ordering;
use std::sync::Arc;

use crate::model::{ContainerMetrics, Name, NodeMetrics, NodeScrape, PodMetrics, UnixNanos};

use super::points::{Points, RateError};
use super::snapshot::NodeEntry;

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
        }
    }

    /// Stores one scrape: the node's point and the full set of its pods.
    ///
    /// Names are interned: a pod or container seen before keeps its [`Name`], so a steady scrape
    /// allocates no strings.
    pub(crate) fn update(&mut self, scrape: &NodeScrape<'_>, now: UnixNanos, resolution: i64) {
        let mut newest = UnixNanos::MIN;
        // A successful scrape without a usable node point forgets the node's points, as upstream
        // does for a node missing from a batch.
        self.node = scrape.node.map(|point| {
            newest = newest.max(point.timestamp);
            Points::next_node(self.node.as_ref(), point)
        });

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
                    let namespace = intern_namespace(&old_pods, near, &pod.namespace)
                        .or_else(|| {
                            pods.last()
                                .filter(|p| *p.namespace == *pod.namespace)
                                .map(|p| p.namespace.clone())
                        })
                        .unwrap_or_else(|| Name::from(pod.namespace.as_ref()));
                    (namespace, Name::from(pod.name.as_ref()), Vec::new())
                }
            };

            let same_containers = old_containers.len() == pod.containers.len()
                && old_containers
                    .iter()
                    .zip(&pod.containers)
                    .all(|(old, new)| *old.name == *new.name);
            let containers = if same_containers {
                // The steady case: same containers in the same order, updated in place.
                let mut containers = old_containers;
                for (state, container) in containers.iter_mut().zip(&pod.containers) {
                    newest = newest.max(container.point.timestamp);
                    state.points =
                        Points::next_container(Some(&state.points), container.point, resolution);
                }
                containers
            } else {
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
                    newest = newest.max(container.point.timestamp);
                    let old = old_containers.iter().find(|c| *c.name == *container.name);
                    containers.push(ContainerState {
                        name: old.map_or_else(
                            || Name::from(container.name.as_ref()),
                            |c| c.name.clone(),
                        ),
                        points: Points::next_container(
                            old.map(|c| &c.points),
                            container.point,
                            resolution,
                        ),
                    });
                }
                containers
            };
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
        let node_metrics = self.node.as_ref().and_then(|points| match points.rate() {
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
        });
        let pods: Vec<PodMetrics> = self
            .pods
            .iter()
            .filter_map(|pod| pod.metrics(node))
            .collect();
        if node_metrics.is_none() && pods.is_empty() {
            return None;
        }
        Some(NodeEntry::new(node_metrics, pods))
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

/// A position as a `u32`; a node never runs four billion pods, and a saturated hint just misses.
fn slot(position: usize) -> u32 {
    u32::try_from(position).unwrap_or(u32::MAX)
}

fn pod_state_order(a: &PodState, b: &PodState) -> Ordering {
    (&*a.namespace, &*a.name).cmp(&(&*b.namespace, &*b.name))
}
