//! Nodes and pods from the kube-apiserver (list + watch), cached compactly.
//!
//! Knows nothing about metrics: it produces scrape targets and the label/phase caches the API joins with.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::model::{Labels, Name, ScrapeTarget};

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
#[derive(Debug, Default)]
pub struct ClusterView {}

impl ClusterView {
    pub fn node(&self, _name: &str) -> Option<&NodeInfo> {
        todo!("discovery helper")
    }
    /// Nodes sorted by name.
    pub fn nodes(&self) -> impl Iterator<Item = &NodeInfo> {
        std::iter::empty()
    }
    pub fn pod(&self, _namespace: &str, _name: &str) -> Option<&PodInfo> {
        todo!("discovery helper")
    }
    /// Pods sorted by namespace, then name.
    pub fn pods(&self) -> impl Iterator<Item = &PodInfo> {
        std::iter::empty()
    }
    /// One namespace's pods sorted by name, without walking other namespaces.
    pub fn pods_in_namespace(&self, _namespace: &str) -> impl Iterator<Item = &PodInfo> {
        std::iter::empty()
    }
}

/// Why discovery could not start.
#[derive(Debug, thiserror::Error)]
pub enum DiscoveryError {
    #[error("invalid node selector {0:?}")]
    NodeSelector(String),
}

/// The running reflectors: readers load views, the supervisor watches targets.
#[derive(Clone)]
pub struct DiscoveryHandle {}

impl DiscoveryHandle {
    /// The current cached nodes and pods; never blocks.
    pub fn view(&self) -> Arc<ClusterView> {
        todo!("discovery helper")
    }
    /// Scrape targets, updated as nodes come, change and go.
    pub fn targets(&self) -> tokio::sync::watch::Receiver<Targets> {
        todo!("discovery helper")
    }
    /// Both the node and the pod caches have completed their initial list.
    pub fn is_synced(&self) -> bool {
        todo!("discovery helper")
    }
}

/// Starts the node and pod reflectors on the current tokio runtime.
pub fn start(
    _client: kube::Client,
    _config: DiscoveryConfig,
) -> Result<DiscoveryHandle, DiscoveryError> {
    todo!("discovery helper")
}
