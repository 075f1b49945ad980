//! Types every stage of the data path shares: points, scrapes, usage, names and labels.
//!
//! This module owns plain data and nothing else: no I/O, no locks, no knowledge of where a value came
//! from or where it goes. Stages depend on it and never on each other's internals.

use std::borrow::Cow;
use std::sync::{Arc, OnceLock};

use smallvec::SmallVec;

/// Nanoseconds since the Unix epoch. Kubelet sample timestamps (milliseconds) and container start
/// times (float seconds) are both converted to this unit.
pub type UnixNanos = i64;

/// A name shared between the store, the snapshots and the discovery caches (node, namespace, pod,
/// container). Cloning is a reference-count bump, so names are not copied per scrape.
pub type Name = Arc<str>;

/// Where a stage that meets a pod by name takes the pod's shared [`Name`]s from: the discovery
/// cache in the server. The store asks it for each pod new to it, so the store's names and the
/// discovery view's are the very same strings, and a list joining the two (in the same order)
/// tells a pod present on both sides by comparing pointers, without reading either name.
pub trait PodNames: Send + Sync {
    /// The shared namespace and name of a pod the source knows; `None` otherwise.
    fn pod_names(&self, namespace: &str, name: &str) -> Option<(Name, Name)>;
}

/// Whether two names are the very same string (one allocation), without reading their bytes.
#[inline]
pub fn same_name(a: &str, b: &str) -> bool {
    std::ptr::eq(a.as_ptr(), b.as_ptr()) && a.len() == b.len()
}

/// How two pods' (namespace, name) keys order, the order every pod walk keeps. Names the store took from discovery are the
/// very same strings on both sides (see [`PodNames`]), so a pod present in both
/// walks of a join is told by pointer, without reading the names (a cache miss each, per pod,
/// across a large cluster).
#[inline]
pub fn pod_key_order(a: (&str, &str), b: (&str, &str)) -> std::cmp::Ordering {
    let by_namespace = if same_name(a.0, b.0) {
        std::cmp::Ordering::Equal
    } else {
        a.0.cmp(b.0)
    };
    by_namespace.then_with(|| {
        if same_name(a.1, b.1) {
            std::cmp::Ordering::Equal
        } else {
            a.1.cmp(b.1)
        }
    })
}

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

/// A pod's containers as one scrape lists them. Most pods have one or two, held in place: a
/// scrape decodes tens of thousands of pods per second across a large cluster, and one allocation
/// (and free) per pod was a measurable share of a scrape.
pub type ScrapedContainers<'a> = SmallVec<[ContainerScrape<'a>; 2]>;

/// One pod's containers from one scrape.
#[derive(Clone, Debug, PartialEq)]
pub struct PodScrape<'a> {
    pub namespace: Cow<'a, str>,
    pub name: Cow<'a, str>,
    pub containers: ScrapedContainers<'a>,
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
/// discovery caches and rendering (discovery interns equal sets, so the pods of one workload share
/// one). A set also keeps its JSON as list items carry it, made by the first list that asks
/// ([`Labels::cached_json`]), so a list of many pods copies each pod's labels instead of encoding
/// them.
#[derive(Clone, Default, PartialEq, Eq, Hash)]
pub struct Labels(Arc<LabelSet>);

#[derive(Default)]
struct LabelSet {
    pairs: Box<[(Name, Name)]>,
    /// [`Labels::cached_json`]'s bytes; not part of the set's identity.
    json: OnceLock<Box<[u8]>>,
}

impl PartialEq for LabelSet {
    fn eq(&self, other: &Self) -> bool {
        self.pairs == other.pairs
    }
}

impl Eq for LabelSet {}

impl std::hash::Hash for LabelSet {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.pairs.hash(state);
    }
}

impl std::fmt::Debug for Labels {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}

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
        Labels(Arc::new(LabelSet {
            pairs: unique.into(),
            json: OnceLock::new(),
        }))
    }

    /// The set's JSON as the API writes it into an object, rendered by `render` on first use
    /// and kept for the set's life: `render` must always produce the same bytes for the same
    /// pairs (the API's one JSON writer is the only caller).
    pub fn cached_json(&self, render: impl FnOnce(&Labels) -> Vec<u8>) -> &[u8] {
        self.0.json.get_or_init(|| render(self).into_boxed_slice())
    }

    /// The value of `key`, if set.
    pub fn get(&self, key: &str) -> Option<&str> {
        let pairs = &self.0.pairs;
        pairs
            .binary_search_by(|(k, _)| k.as_ref().cmp(key))
            .ok()
            .map(|i| pairs[i].1.as_ref())
    }

    /// Pairs in key order.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = (&str, &str)> {
        self.0.pairs.iter().map(|(k, v)| (k.as_ref(), v.as_ref()))
    }

    pub fn len(&self) -> usize {
        self.0.pairs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.pairs.is_empty()
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
    fn pod_keys_order_by_namespace_then_name_whether_or_not_they_share_strings() {
        use std::cmp::Ordering::{Equal, Greater, Less};
        let (namespace, name): (Arc<str>, Arc<str>) = (Arc::from("ns"), Arc::from("web-1"));
        let (copy_namespace, copy_name) = (String::from("ns"), String::from("web-1"));
        assert_eq!(
            pod_key_order((&namespace, &name), (&namespace, &name)),
            Equal
        );
        assert_eq!(
            pod_key_order((&namespace, &name), (&copy_namespace, &copy_name)),
            Equal
        );
        assert_eq!(
            pod_key_order((&namespace, &name), (&namespace, "web-2")),
            Less
        );
        assert_eq!(pod_key_order((&namespace, &name), ("nr", &name)), Greater);
        // The namespace decides before the name.
        assert_eq!(pod_key_order(("a", "z"), ("b", "a")), Less);
        // A shared prefix of the same allocation is not the same name.
        assert_eq!(
            pod_key_order((&namespace, &name[..4]), (&namespace, &name)),
            Less
        );
    }

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

    #[test]
    fn cached_json_renders_once_per_set_and_is_not_part_of_its_identity() {
        use std::collections::hash_map::DefaultHasher;
        use std::hash::{Hash, Hasher};
        let hash = |labels: &Labels| {
            let mut hasher = DefaultHasher::new();
            labels.hash(&mut hasher);
            hasher.finish()
        };
        let labels = Labels::from_pairs([("app", "web")]);
        let same = Labels::from_pairs([("app", "web")]);
        let shared = labels.clone();
        let mut renders = 0;
        let first = labels
            .cached_json(|l| {
                renders += 1;
                format!("{:?}", l.iter().collect::<Vec<_>>()).into_bytes()
            })
            .to_vec();
        // A clone shares the set, so it shares the rendering.
        let again = shared.cached_json(|_| {
            renders += 1;
            Vec::new()
        });
        assert_eq!((renders, again), (1, &first[..]));
        // An equal set built apart is equal and hashes alike, rendered or not.
        assert_eq!(labels, same);
        assert_eq!(hash(&labels), hash(&same));
        assert_eq!(format!("{labels:?}"), r#"{"app": "web"}"#);
    }
}
