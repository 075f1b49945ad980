//! Types every stage of the data path shares: points, scrapes, usage, names and labels.
//!
//! This module owns plain data and nothing else: no I/O, no locks, no knowledge of where a value came
//! from or where it goes. Stages depend on it and never on each other's internals.

use std::borrow::Cow;
use std::sync::Arc;

/// Nanoseconds since the Unix epoch. Kubelet sample timestamps (milliseconds) and container start
/// times (float seconds) are both converted to this unit.
pub type UnixNanos = i64;

/// A name shared between the store, the snapshots and the discovery caches (node, namespace, pod,
/// container). Cloning is a reference-count bump, so names are not copied per scrape.
pub type Name = Arc<str>;

/// One observation of a node or container, as the kubelet reported it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MetricsPoint {
    /// When the container started, unix nanoseconds; 0 for a node.
    pub start_time: UnixNanos,
    /// Sample time of the CPU counter, unix nanoseconds (the kubelet's clock, not ours).
    pub timestamp: UnixNanos,
    /// Cumulative CPU used, in nanocore-seconds (core-seconds * 1e9, truncated).
    pub cumulative_cpu_used: u64,
    /// Working set, in bytes.
    pub memory_usage: u64,
}

/// What one scrape of one node yielded once decoded. Names borrow from the response body where
/// they needed no unescaping.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct NodeScrape<'a> {
    /// The node's own point; `None` when the kubelet reported none usable.
    pub node: Option<MetricsPoint>,
    /// Pods on the node, each with every container the kubelet reported a usable point for.
    pub pods: Vec<PodScrape<'a>>,
}

/// One pod's containers from one scrape.
#[derive(Clone, Debug, PartialEq)]
pub struct PodScrape<'a> {
    pub namespace: Cow<'a, str>,
    pub name: Cow<'a, str>,
    pub containers: Vec<ContainerScrape<'a>>,
}

/// One container's point from one scrape.
#[derive(Clone, Debug, PartialEq)]
pub struct ContainerScrape<'a> {
    pub name: Cow<'a, str>,
    pub point: MetricsPoint,
}

/// Resource usage over a window, as served.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Usage {
    /// CPU rate, in nanocores (1e9 = one core).
    pub cpu_nanocores: u64,
    /// Working set, in bytes.
    pub memory_bytes: u64,
}

/// A node's usage, ready to serve.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeMetrics {
    pub name: Name,
    /// Sample time of the newest point, unix nanoseconds.
    pub timestamp: UnixNanos,
    /// Time between the two points the rate was computed from, nanoseconds.
    pub window: i64,
    pub usage: Usage,
}

/// A pod's usage, ready to serve.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodMetrics {
    pub namespace: Name,
    pub name: Name,
    /// The node whose scrape produced these points.
    pub node: Name,
    /// Sample time of the container with the earliest newest point, unix nanoseconds.
    pub timestamp: UnixNanos,
    /// That container's window, nanoseconds.
    pub window: i64,
    /// Containers in the order the kubelet reported them.
    pub containers: Vec<ContainerMetrics>,
}

/// One container of a served pod.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ContainerMetrics {
    pub name: Name,
    pub usage: Usage,
}

/// A Kubernetes label set: sorted by key, keys unique. Cheap to clone and shared between the
/// discovery caches and rendering.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Labels(Arc<[(Name, Name)]>);

impl Labels {
    /// Builds a label set; a repeated key keeps its last value.
    pub fn from_pairs<K, V, I>(pairs: I) -> Self
    where
        K: Into<Name>,
        V: Into<Name>,
        I: IntoIterator<Item = (K, V)>,
    {
        let mut pairs: Vec<(Name, Name)> = pairs
            .into_iter()
            .map(|(k, v)| (k.into(), v.into()))
            .collect();
        // Stable sort keeps insertion order among equal keys, so the last one wins below.
        pairs.sort_by(|a, b| a.0.cmp(&b.0));
        let mut unique: Vec<(Name, Name)> = Vec::with_capacity(pairs.len());
        for (key, value) in pairs {
            match unique.last_mut() {
                Some(last) if last.0 == key => last.1 = value,
                _ => unique.push((key, value)),
            }
        }
        Labels(unique.into())
    }

    /// The value of `key`, if set.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0
            .binary_search_by(|(k, _)| k.as_ref().cmp(key))
            .ok()
            .map(|i| self.0[i].1.as_ref())
    }

    /// Pairs in key order.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = (&str, &str)> {
        self.0.iter().map(|(k, v)| (k.as_ref(), v.as_ref()))
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// Where to scrape one node's kubelet. Discovery produces it; the scrape supervisor consumes it.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ScrapeTarget {
    pub node: Name,
    /// The address picked by `--kubelet-preferred-address-types` (an IP or a host name).
    pub host: String,
    pub port: u16,
    /// The request path, `/metrics/resource` unless the node annotation overrides it.
    pub path: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_sorted_and_last_value_wins() {
        let labels = Labels::from_pairs([("b", "1"), ("a", "2"), ("b", "3")]);
        assert_eq!(
            labels.iter().collect::<Vec<_>>(),
            vec![("a", "2"), ("b", "3")]
        );
        assert_eq!(labels.get("b"), Some("3"));
        assert_eq!(labels.get("c"), None);
    }
}
