//! Nodes and pods from the kube-apiserver (list + watch), cached compactly.
//!
//! Knows nothing about metrics: it produces scrape targets and the label/phase caches the API joins with.
//!
//! Two `kube` watchers (nodes, filtered by `--node-selector`, and all pods) feed one writer task
//! (`watcher`) that converts each object into a small [`NodeInfo`] or [`PodInfo`] as it arrives
//! and never keeps the object itself. The writer publishes immutable [`ClusterView`]s through
//! `arc-swap` (readers never lock) and the scrape target set through a `tokio::sync::watch`
//! channel that changes only when a target does. Code map: `objects` decodes only the fields
//! used, `convert` picks address, port and path and interns names, `cache` applies events and
//! swaps relists in whole, `selector` checks `--node-selector`.
//!
//! ## Memory usage
//! A pod costs its `PodInfo`, its name and a map entry; namespaces, node names, label strings
//! and whole label sets (identical across a ReplicaSet's replicas) are shared. Measured by
//! `tests/discovery_memory.rs`: about 240 bytes per cached object, some 70 MiB for 10,000 nodes
//! and 300,000 pods. Views share structure, so publishing one copies nothing but a few tree
//! nodes, and a relist reuses every unchanged entry.

mod cache;
mod convert;
mod objects;
mod selector;
mod watcher;

use std::cmp::Ordering as CmpOrdering;
use std::collections::BTreeMap;
use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;

use equivalent::{Comparable, Equivalent};
use futures::StreamExt;
use imbl::OrdMap;
use kube::runtime::{watcher as kube_watcher, WatchStreamExt};
use kube::Api;
use tokio::sync::watch;

use crate::model::{Labels, Name, PodNames, ScrapeTarget};

pub use convert::{DEFAULT_ADDRESS_TYPES, DEFAULT_METRICS_PATH};
pub use objects::METRICS_PATH_ANNOTATION;

use objects::{NodeObject, PodObject};
use watcher::{Reflector, Shared, Update};

/// The writer's pieces, for benches and memory tests; not a supported interface.
#[doc(hidden)]
pub mod internals {
    pub use super::convert::TargetRules;
    pub use super::objects::{NodeAddress, NodeObject, PodObject};
    pub use super::watcher::{Reflector, Shared, Update};
}

/// What the API and the scrape supervisor need of a node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeInfo {
    pub name: Name,
    pub labels: Labels,
    /// `None` when the node has no address of a preferred type.
    pub target: Option<ScrapeTarget>,
}

/// What the API needs of a pod.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodInfo {
    pub namespace: Name,
    pub name: Name,
    pub node: Option<Name>,
    pub labels: Labels,
    /// `status.phase == Running`.
    pub running: bool,
}

/// Scrape targets by node name, as the supervisor consumes them.
pub type Targets = Arc<BTreeMap<Name, ScrapeTarget>>;

/// Settings taken from the command line.
#[derive(Clone, Debug)]
pub struct DiscoveryConfig {
    /// `--kubelet-preferred-address-types`, in order (`Hostname`, `InternalDNS`, `InternalIP`, ...).
    pub preferred_address_types: Vec<String>,
    /// `--kubelet-port`.
    pub kubelet_port: u16,
    /// `--kubelet-use-node-status-port`.
    pub use_node_status_port: bool,
    /// `--node-selector`, a label selector sent to the API server.
    pub node_selector: Option<String>,
}

/// An immutable view of the cached nodes and pods.
///
/// Both maps are persistent: a view is a pair of tree roots, cheap to publish and to keep.
#[derive(Debug, Default)]
pub struct ClusterView {
    nodes: OrdMap<Name, Arc<NodeInfo>>,
    /// Keyed by (namespace, name), so one namespace is one contiguous range.
    pods: OrdMap<(Name, Name), Arc<PodInfo>>,
    generation: u64,
}

impl ClusterView {
    pub fn node(&self, name: &str) -> Option<&NodeInfo> {
        self.nodes.get(name).map(|info| &**info)
    }
    /// Nodes sorted by name.
    pub fn nodes(&self) -> impl Iterator<Item = &NodeInfo> {
        self.nodes.values().map(|info| &**info)
    }
    pub fn pod(&self, namespace: &str, name: &str) -> Option<&PodInfo> {
        self.pods.get(&PodKey(namespace, name)).map(|info| &**info)
    }
    /// Pods sorted by namespace, then name.
    pub fn pods(&self) -> impl Iterator<Item = &PodInfo> {
        self.pods.values().map(|info| &**info)
    }
    /// One namespace's pods sorted by name, without walking other namespaces.
    pub fn pods_in_namespace(&self, namespace: &str) -> impl Iterator<Item = &PodInfo> {
        let range = (
            Bound::Included(NamespaceEdge {
                namespace,
                after: false,
            }),
            Bound::Excluded(NamespaceEdge {
                namespace,
                after: true,
            }),
        );
        self.pods.range(range).map(|(_, info)| &**info)
    }
    pub fn node_count(&self) -> usize {
        self.nodes.len()
    }
    pub fn pod_count(&self) -> usize {
        self.pods.len()
    }
    /// Counts published views: 0 for the empty view before the first publish, then one more
    /// per view. Lets readers cache work derived from a view.
    pub fn generation(&self) -> u64 {
        self.generation
    }
}

/// A borrowed pod key, to look pods up without allocating.
struct PodKey<'a>(&'a str, &'a str);

impl Equivalent<(Name, Name)> for PodKey<'_> {
    fn equivalent(&self, key: &(Name, Name)) -> bool {
        *self.0 == *key.0 && *self.1 == *key.1
    }
}

impl Comparable<(Name, Name)> for PodKey<'_> {
    fn compare(&self, key: &(Name, Name)) -> CmpOrdering {
        (self.0, self.1).cmp(&(&*key.0, &*key.1))
    }
}

/// A cut in the pod key order just before (or just after) every key of one namespace.
struct NamespaceEdge<'a> {
    namespace: &'a str,
    after: bool,
}

impl Equivalent<(Name, Name)> for NamespaceEdge<'_> {
    /// A cut lies between keys and equals none of them.
    fn equivalent(&self, _key: &(Name, Name)) -> bool {
        false
    }
}

impl Comparable<(Name, Name)> for NamespaceEdge<'_> {
    fn compare(&self, key: &(Name, Name)) -> CmpOrdering {
        match self.namespace.cmp(&*key.0) {
            CmpOrdering::Equal if self.after => CmpOrdering::Greater,
            CmpOrdering::Equal => CmpOrdering::Less,
            other => other,
        }
    }
}

/// Why discovery could not start.
///
/// All are start-up errors for the caller to report and exit on; once started, discovery
/// retries on its own and never fails.
#[derive(Debug, thiserror::Error)]
pub enum DiscoveryError {
    #[error("invalid node selector {0:?}")]
    NodeSelector(String),
    /// `start` was called outside a tokio runtime.
    #[error("discovery must start inside a tokio runtime")]
    NoRuntime,
    #[error("cannot load kubeconfig {path:?}: {source}")]
    Kubeconfig {
        path: PathBuf,
        #[source]
        source: kube::config::KubeconfigError,
    },
    #[error("no --kubeconfig given and no in-cluster configuration: {0}")]
    InCluster(#[source] kube::config::InClusterError),
    #[error("cannot build the Kubernetes client: {0}")]
    Client(#[source] kube::Error),
}

/// The running reflectors: readers load views, the supervisor watches targets.
///
/// Discovery runs while a handle exists; dropping the last one stops the watchers.
#[derive(Clone)]
pub struct DiscoveryHandle {
    shared: Arc<Shared>,
    targets: watch::Receiver<Targets>,
    _task: Arc<AbortOnDrop>,
}

/// Stops the writer task with the last handle.
struct AbortOnDrop(tokio::task::AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The names of a pod in the current view, so that the store shares them (see [`PodNames`]).
impl PodNames for Shared {
    fn pod_names(&self, namespace: &str, name: &str) -> Option<(Name, Name)> {
        let view = self.view.load();
        let info = view.pod(namespace, name)?;
        Some((Arc::clone(&info.namespace), Arc::clone(&info.name)))
    }
}

impl PodNames for DiscoveryHandle {
    fn pod_names(&self, namespace: &str, name: &str) -> Option<(Name, Name)> {
        self.shared.pod_names(namespace, name)
    }
}

impl DiscoveryHandle {
    /// The current cached nodes and pods; never blocks.
    pub fn view(&self) -> Arc<ClusterView> {
        self.shared.view.load_full()
    }
    /// Scrape targets, updated as nodes come, change and go.
    pub fn targets(&self) -> tokio::sync::watch::Receiver<Targets> {
        self.targets.clone()
    }
    /// Both the node and the pod caches have completed their initial list.
    pub fn is_synced(&self) -> bool {
        self.shared.synced.load(Ordering::Acquire)
    }
}

/// Starts the node and pod reflectors on the current tokio runtime.
pub fn start(
    client: kube::Client,
    config: DiscoveryConfig,
) -> Result<DiscoveryHandle, DiscoveryError> {
    let node_selector = config
        .node_selector
        .as_deref()
        .map(str::trim)
        .filter(|s| !s.is_empty());
    if let Some(selector) = node_selector {
        if let Err(reason) = selector::validate(selector) {
            tracing::error!(selector, reason, "Invalid node selector.");
            return Err(DiscoveryError::NodeSelector(selector.to_owned()));
        }
    }
    let runtime = tokio::runtime::Handle::try_current().map_err(|_| DiscoveryError::NoRuntime)?;

    // Lists are served from the API server's watch cache (resourceVersion=0), as informers do:
    // a fresh quorum read of 300,000 pods would load etcd for no benefit.
    let mut node_config = kube_watcher::Config::default().any_semantic();
    if let Some(selector) = node_selector {
        node_config = node_config.labels(selector);
    }
    let pod_config = kube_watcher::Config::default().any_semantic();
    let nodes = kube_watcher::watcher(Api::<NodeObject>::all(client.clone()), node_config)
        .default_backoff()
        .map(Update::Node);
    let pods = kube_watcher::watcher(Api::<PodObject>::all(client), pod_config)
        .default_backoff()
        .map(Update::Pod);

    let shared = Arc::new(Shared::default());
    let (targets_tx, targets_rx) = watch::channel(Targets::default());
    let task = runtime.spawn(watcher::run(
        futures::stream::select(nodes, pods),
        Reflector::new(convert::TargetRules::from(&config)),
        Arc::clone(&shared),
        targets_tx,
    ));
    Ok(DiscoveryHandle {
        shared,
        targets: targets_rx,
        _task: Arc::new(AbortOnDrop(task.abort_handle())),
    })
}

// === Client ===

/// The client configuration: from `--kubeconfig` when given, else the in-cluster service account.
pub async fn load_config(kubeconfig: Option<&Path>) -> Result<kube::Config, DiscoveryError> {
    match kubeconfig {
        Some(path) => {
            let kubeconfig_error = |source| DiscoveryError::Kubeconfig {
                path: path.to_owned(),
                source,
            };
            let file = kube::config::Kubeconfig::read_from(path).map_err(kubeconfig_error)?;
            kube::Config::from_custom_kubeconfig(file, &kube::config::KubeConfigOptions::default())
                .await
                .map_err(kubeconfig_error)
        }
        None => kube::Config::incluster().map_err(DiscoveryError::InCluster),
    }
}

/// A client for the API server, configured as [`load_config`] does.
pub async fn client_from(kubeconfig: Option<&Path>) -> Result<kube::Client, DiscoveryError> {
    client_for(load_config(kubeconfig).await?)
}

/// A client for an already loaded configuration.
pub fn client_for(config: kube::Config) -> Result<kube::Client, DiscoveryError> {
    kube::Client::try_from(config).map_err(DiscoveryError::Client)
}

/// The cluster CA certificates of `config` as PEM, the kubelet TLS default when
/// `--kubelet-certificate-authority` is not given. `None` when the configuration carries none
/// (for example a kubeconfig that skips TLS verification).
pub fn cluster_ca_pem(config: &kube::Config) -> Option<Vec<u8>> {
    let certs = config
        .root_cert
        .as_ref()
        .filter(|certs| !certs.is_empty())?;
    let pems: Vec<pem::Pem> = certs
        .iter()
        .map(|der| pem::Pem::new("CERTIFICATE", der.clone()))
        .collect();
    Some(pem::encode_many(&pems).into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(namespace: &str, name: &str) -> ((Name, Name), Arc<PodInfo>) {
        let info = PodInfo {
            namespace: Name::from(namespace),
            name: Name::from(name),
            node: None,
            labels: Labels::default(),
            running: true,
        };
        ((info.namespace.clone(), info.name.clone()), Arc::new(info))
    }

    fn view(pods: &[(&str, &str)]) -> ClusterView {
        ClusterView {
            pods: pods.iter().map(|(ns, n)| pod(ns, n)).collect(),
            ..ClusterView::default()
        }
    }

    fn names<'a>(pods: impl Iterator<Item = &'a PodInfo>) -> Vec<String> {
        pods.map(|p| format!("{}/{}", p.namespace, p.name))
            .collect()
    }

    #[test]
    fn pods_in_namespace_yields_exactly_that_namespace_sorted_by_name() {
        let v = view(&[
            ("b", "z"),
            ("a", "x"),
            ("b", "a"),
            ("bb", "a"),
            ("b-", "q"),
            ("c", "a"),
        ]);
        assert_eq!(names(v.pods_in_namespace("b")), vec!["b/a", "b/z"]);
        assert_eq!(names(v.pods_in_namespace("a")), vec!["a/x"]);
        assert!(names(v.pods_in_namespace("missing")).is_empty());
        assert!(names(v.pods_in_namespace("")).is_empty());
    }

    #[test]
    fn pods_come_out_sorted_by_namespace_then_name() {
        let v = view(&[("b", "a"), ("a", "b"), ("a", "a")]);
        assert_eq!(names(v.pods()), vec!["a/a", "a/b", "b/a"]);
    }

    #[test]
    fn pod_lookup_needs_both_namespace_and_name_to_match() {
        let v = view(&[("a", "x"), ("b", "y")]);
        assert_eq!(v.pod("a", "x").map(|p| &*p.name), Some("x"));
        assert!(v.pod("a", "y").is_none());
        assert!(v.pod("b", "x").is_none());
    }

    #[test]
    fn cluster_ca_is_rendered_as_pem_certificates() {
        let mut config = kube::Config::new("https://127.0.0.1:6443".parse().unwrap());
        assert_eq!(cluster_ca_pem(&config), None);
        config.root_cert = Some(vec![vec![1, 2, 3], vec![4, 5]]);
        let pem = String::from_utf8(cluster_ca_pem(&config).unwrap()).unwrap();
        let parsed = pem::parse_many(&pem).unwrap();
        assert_eq!(parsed.len(), 2);
        assert_eq!(parsed[0].tag(), "CERTIFICATE");
        assert_eq!(parsed[1].contents(), &[4, 5]);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn malformed_node_selector_is_refused_at_start() {
        let config = kube::Config::new("http://127.0.0.1:9".parse().unwrap());
        let client = client_for(config).unwrap();
        let result = start(
            client,
            DiscoveryConfig {
                preferred_address_types: vec!["InternalIP".into()],
                kubelet_port: 10250,
                use_node_status_port: false,
                node_selector: Some("zone in a".into()),
            },
        );
        assert!(matches!(result, Err(DiscoveryError::NodeSelector(s)) if s == "zone in a"));
    }

    #[tokio::test(flavor = "current_thread")]
    async fn missing_kubeconfig_file_is_a_typed_error() {
        let result = load_config(Some(Path::new("/nonexistent/kubeconfig"))).await;
        assert!(matches!(result, Err(DiscoveryError::Kubeconfig { .. })));
    }
}
