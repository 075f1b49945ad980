//! From wire objects to cached infos: address, port and path selection, and name interning.
//!
//! Pure functions over decoded objects: no I/O, no clocks. The rules follow the flags an admin
//! already uses (`--kubelet-preferred-address-types`, `--kubelet-port`,
//! `--kubelet-use-node-status-port`) and the per-node path annotation.

use std::collections::HashSet;
use std::sync::Arc;

use super::objects::{NodeAddress, NodeObject, PodObject};
use super::{DiscoveryConfig, NodeInfo, PodInfo};
use crate::model::{Labels, Name, ScrapeTarget};

/// The kubelet path scraped when a node does not override it.
pub const DEFAULT_METRICS_PATH: &str = "/metrics/resource";

/// The default of `--kubelet-preferred-address-types`: overrides first, internal before external,
/// DNS before IP within each.
pub const DEFAULT_ADDRESS_TYPES: [&str; 5] = [
    "Hostname",
    "InternalDNS",
    "InternalIP",
    "ExternalDNS",
    "ExternalIP",
];

/// How a node becomes a scrape target.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TargetRules {
    pub preferred_address_types: Vec<String>,
    pub kubelet_port: u16,
    pub use_node_status_port: bool,
}

impl From<&DiscoveryConfig> for TargetRules {
    fn from(config: &DiscoveryConfig) -> Self {
        TargetRules {
            preferred_address_types: config.preferred_address_types.clone(),
            kubelet_port: config.kubelet_port,
            use_node_status_port: config.use_node_status_port,
        }
    }
}

impl TargetRules {
    /// The address to dial: for the first preferred type any address of that type has, the first
    /// such address in `status.addresses` order. Empty addresses cannot be dialled and are passed
    /// over.
    pub fn address<'a>(&self, addresses: &'a [NodeAddress]) -> Option<&'a str> {
        self.preferred_address_types.iter().find_map(|wanted| {
            addresses
                .iter()
                .find(|a| a.kind == *wanted && !a.address.is_empty())
                .map(|a| a.address.as_str())
        })
    }

    /// `--kubelet-port`, unless the node's own kubelet endpoint port is asked for and reported.
    /// A port of 0 (not reported) or one outside 1..=65535 falls back to `--kubelet-port`.
    pub fn port(&self, kubelet_endpoint_port: i32) -> u16 {
        if self.use_node_status_port {
            if let Ok(port) = u16::try_from(kubelet_endpoint_port) {
                if port != 0 {
                    return port;
                }
            }
        }
        self.kubelet_port
    }
}

/// The path to scrape: the annotation when set and non-empty, else `/metrics/resource`. A value
/// without a leading slash gets one, as a URL built from host and path would add it.
pub fn metrics_path(annotation: Option<&str>) -> String {
    match annotation.map(str::trim) {
        None | Some("") => DEFAULT_METRICS_PATH.to_owned(),
        Some(path) if path.starts_with('/') => path.to_owned(),
        Some(path) => format!("/{path}"),
    }
}

/// Shares one allocation among equal strings: namespaces, node names, label keys and values.
///
/// A 300,000-pod cluster has a few hundred namespaces, a few thousand nodes and a handful of
/// label keys, each repeated across many pods; interning stores each once. Entries that nothing
/// else references any more are pruned whenever the table doubles since the last prune, so
/// churn (nodes and namespaces coming and going) does not grow it without bound.
#[derive(Debug)]
pub struct Interner {
    names: HashSet<Name>,
    /// Size at which the next prune runs.
    prune_at: usize,
}

impl Default for Interner {
    fn default() -> Self {
        Interner {
            names: HashSet::new(),
            prune_at: Self::MIN_PRUNE_AT,
        }
    }
}

impl Interner {
    const MIN_PRUNE_AT: usize = 4096;

    /// The shared copy of `value`.
    pub fn intern(&mut self, value: &str) -> Name {
        if let Some(name) = self.names.get(value) {
            return Arc::clone(name);
        }
        if self.names.len() >= self.prune_at {
            self.prune();
        }
        let name: Name = Arc::from(value);
        self.names.insert(Arc::clone(&name));
        name
    }

    /// Forgets strings only the table still holds.
    pub fn prune(&mut self) {
        self.names.retain(|name| Arc::strong_count(name) > 1);
        self.prune_at = (self.names.len() * 2).max(Self::MIN_PRUNE_AT);
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.names.len()
    }

    fn labels<'a>(&mut self, pairs: impl IntoIterator<Item = (&'a String, &'a String)>) -> Labels {
        let pairs: Vec<(Name, Name)> = pairs
            .into_iter()
            .map(|(k, v)| (self.intern(k), self.intern(v)))
            .collect();
        Labels::from_pairs(pairs)
    }
}

/// A node as cached. `None` when it has no name (the API server never sends one without).
pub fn node_info(node: &NodeObject, rules: &TargetRules, names: &mut Interner) -> Option<NodeInfo> {
    let name = names.intern(node.name().filter(|n| !n.is_empty())?);
    let target = rules.address(&node.addresses).map(|host| ScrapeTarget {
        node: Arc::clone(&name),
        host: host.to_owned(),
        port: rules.port(node.kubelet_endpoint_port),
        path: metrics_path(node.metrics_path.as_deref()),
    });
    Some(NodeInfo {
        name,
        labels: names.labels(&node.labels),
        target,
    })
}

/// A pod as cached. `None` when it has no name or namespace.
pub fn pod_info(pod: &PodObject, names: &mut Interner) -> Option<PodInfo> {
    let namespace = names.intern(pod.namespace().filter(|n| !n.is_empty())?);
    let name: Name = Arc::from(pod.name().filter(|n| !n.is_empty())?);
    let node = pod
        .node_name
        .as_deref()
        .filter(|n| !n.is_empty())
        .map(|n| names.intern(n));
    Some(PodInfo {
        namespace,
        name,
        node,
        labels: names.labels(&pod.labels),
        running: pod.phase.as_deref() == Some("Running"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(types: &[&str]) -> TargetRules {
        TargetRules {
            preferred_address_types: types.iter().map(|t| t.to_string()).collect(),
            kubelet_port: 10250,
            use_node_status_port: false,
        }
    }

    fn addr(kind: &str, address: &str) -> NodeAddress {
        NodeAddress {
            kind: kind.to_owned(),
            address: address.to_owned(),
        }
    }

    #[test]
    fn preferred_type_wins_over_address_order() {
        let addresses = [
            addr("ExternalIP", "1.2.3.4"),
            addr("InternalIP", "10.0.0.1"),
            addr("Hostname", "node-1"),
        ];
        assert_eq!(
            rules(&["InternalIP", "ExternalIP"]).address(&addresses),
            Some("10.0.0.1")
        );
        assert_eq!(
            rules(&DEFAULT_ADDRESS_TYPES).address(&addresses),
            Some("node-1")
        );
    }

    #[test]
    fn first_address_of_the_preferred_type_is_taken() {
        let addresses = [
            addr("InternalIP", "10.0.0.1"),
            addr("InternalIP", "10.0.0.2"),
        ];
        assert_eq!(rules(&["InternalIP"]).address(&addresses), Some("10.0.0.1"));
    }

    #[test]
    fn node_without_an_address_of_any_preferred_type_has_no_address() {
        let addresses = [addr("ExternalIP", "1.2.3.4"), addr("InternalIP", "")];
        assert_eq!(rules(&["InternalIP", "Hostname"]).address(&addresses), None);
        assert_eq!(rules(&[]).address(&addresses), None);
    }

    #[test]
    fn node_status_port_is_used_only_when_asked_and_reported() {
        let mut r = rules(&[]);
        assert_eq!(r.port(10255), 10250);
        r.use_node_status_port = true;
        assert_eq!(r.port(10255), 10255);
        assert_eq!(r.port(0), 10250);
        assert_eq!(r.port(-1), 10250);
        assert_eq!(r.port(70_000), 10250);
    }

    #[test]
    fn path_annotation_overrides_the_default_path() {
        assert_eq!(metrics_path(None), "/metrics/resource");
        assert_eq!(metrics_path(Some("")), "/metrics/resource");
        assert_eq!(
            metrics_path(Some("/metrics/nodes/n/x")),
            "/metrics/nodes/n/x"
        );
        assert_eq!(metrics_path(Some("custom")), "/custom");
    }

    #[test]
    fn node_converts_to_name_labels_and_target() {
        let mut node = NodeObject::new("node-1");
        node.labels.insert("zone".into(), "a".into());
        node.addresses = vec![addr("InternalIP", "10.0.0.1")];
        node.kubelet_endpoint_port = 10255;
        node.metrics_path = Some("/m".into());
        let mut r = rules(&DEFAULT_ADDRESS_TYPES);
        r.use_node_status_port = true;
        let info = node_info(&node, &r, &mut Interner::default()).unwrap();
        assert_eq!(&*info.name, "node-1");
        assert_eq!(info.labels.get("zone"), Some("a"));
        let target = info.target.unwrap();
        assert_eq!(
            (
                &*target.node,
                target.host.as_str(),
                target.port,
                target.path.as_str()
            ),
            ("node-1", "10.0.0.1", 10255, "/m")
        );
        assert!(Arc::ptr_eq(&target.node, &info.name));
    }

    #[test]
    fn node_without_addresses_is_cached_without_a_target() {
        let node = NodeObject::new("node-1");
        let info = node_info(
            &node,
            &rules(&DEFAULT_ADDRESS_TYPES),
            &mut Interner::default(),
        );
        assert_eq!(info.unwrap().target, None);
    }

    #[test]
    fn pod_converts_and_only_running_phase_counts_as_running() {
        let mut names = Interner::default();
        let mut pod = PodObject::new("ns", "p");
        pod.node_name = Some("node-1".into());
        pod.labels.insert("app".into(), "web".into());
        pod.phase = Some("Running".into());
        let info = pod_info(&pod, &mut names).unwrap();
        assert_eq!((&*info.namespace, &*info.name), ("ns", "p"));
        assert_eq!(info.node.as_deref(), Some("node-1"));
        assert_eq!(info.labels.get("app"), Some("web"));
        assert!(info.running);

        pod.phase = Some("Pending".into());
        pod.node_name = Some(String::new());
        let info = pod_info(&pod, &mut names).unwrap();
        assert!(!info.running);
        assert_eq!(info.node, None);
    }

    #[test]
    fn pod_without_namespace_or_name_is_skipped() {
        let mut names = Interner::default();
        assert!(pod_info(&PodObject::new("", "p"), &mut names).is_none());
        assert!(pod_info(&PodObject::new("ns", ""), &mut names).is_none());
    }

    #[test]
    fn repeated_namespaces_nodes_and_labels_share_one_allocation() {
        let mut names = Interner::default();
        let mut a = PodObject::new("ns", "a");
        a.node_name = Some("node-1".into());
        a.labels.insert("app".into(), "web".into());
        let mut b = PodObject::new("ns", "b");
        b.node_name = Some("node-1".into());
        b.labels.insert("app".into(), "web".into());
        let a = pod_info(&a, &mut names).unwrap();
        let b = pod_info(&b, &mut names).unwrap();
        assert!(Arc::ptr_eq(&a.namespace, &b.namespace));
        assert!(Arc::ptr_eq(
            a.node.as_ref().unwrap(),
            b.node.as_ref().unwrap()
        ));
        let node = node_info(&NodeObject::new("node-1"), &rules(&[]), &mut names).unwrap();
        assert!(Arc::ptr_eq(&node.name, a.node.as_ref().unwrap()));
    }

    #[test]
    fn pruning_forgets_only_unreferenced_names() {
        let mut names = Interner::default();
        let kept = names.intern("kept");
        drop(names.intern("dropped"));
        assert_eq!(names.len(), 2);
        names.prune();
        assert_eq!(names.len(), 1);
        assert!(Arc::ptr_eq(&names.intern("kept"), &kept));
    }
}
