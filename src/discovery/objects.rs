//! Slim wire forms of `Node` and `Pod`: only the fields discovery reads survive decoding.
//!
//! The watcher decodes every listed and watched object. Decoding into the full `k8s-openapi` types
//! would allocate every container spec, volume, condition and `managedFields` entry only to drop
//! them a moment later; on a 300,000-pod initial list that is most of the work and most of the
//! transient memory. These types skip unknown fields while parsing (no allocation for them) and
//! implement [`kube::Resource`] so they go through `kube::Api` and the watcher unchanged.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::{ClusterResourceScope, NamespaceResourceScope};
use serde::de::{self, MapAccess, Visitor};
use serde::{Deserialize, Deserializer};

/// The node annotation that overrides the kubelet path scraped for resource metrics.
pub const METRICS_PATH_ANNOTATION: &str = "metrics.k8s.io/resource-metrics-path";

/// The parts of `metadata` both kinds need. Of the annotations only the metrics path is kept
/// (pods have none such; their annotations are skipped key by key without allocating).
#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct WireMeta {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    namespace: Option<String>,
    #[serde(default)]
    resource_version: Option<String>,
    #[serde(default, deserialize_with = "null_as_default")]
    labels: BTreeMap<String, String>,
    #[serde(default, rename = "annotations")]
    metrics_path: MetricsPath,
}

/// The value of [`METRICS_PATH_ANNOTATION`] found in an annotation map, if any.
#[derive(Default)]
struct MetricsPath(Option<String>);

impl<'de> Deserialize<'de> for MetricsPath {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_option(MetricsPathVisitor)
    }
}

struct MetricsPathVisitor;

impl<'de> Visitor<'de> for MetricsPathVisitor {
    type Value = MetricsPath;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an annotation map")
    }

    fn visit_none<E: de::Error>(self) -> Result<MetricsPath, E> {
        Ok(MetricsPath(None))
    }

    fn visit_unit<E: de::Error>(self) -> Result<MetricsPath, E> {
        Ok(MetricsPath(None))
    }

    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<MetricsPath, D::Error> {
        deserializer.deserialize_map(self)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<MetricsPath, A::Error> {
        let mut found = None;
        while let Some(IsMetricsPathKey(wanted)) = map.next_key()? {
            if wanted {
                found = Some(map.next_value::<String>()?);
            } else {
                map.next_value::<de::IgnoredAny>()?;
            }
        }
        Ok(MetricsPath(found))
    }
}

/// An annotation key, reduced to whether it is [`METRICS_PATH_ANNOTATION`].
struct IsMetricsPathKey(bool);

impl<'de> Deserialize<'de> for IsMetricsPathKey {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl Visitor<'_> for KeyVisitor {
            type Value = IsMetricsPathKey;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an annotation key")
            }
            fn visit_str<E: de::Error>(self, key: &str) -> Result<IsMetricsPathKey, E> {
                Ok(IsMetricsPathKey(key == METRICS_PATH_ANNOTATION))
            }
        }
        deserializer.deserialize_str(KeyVisitor)
    }
}

/// `null` and absent both mean "none" for maps and lists in Kubernetes JSON.
fn null_as_default<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(deserializer)?.unwrap_or_default())
}

/// `metadata` as the watcher needs it: it reads `resourceVersion` to resume watches.
fn object_meta(meta: &WireMeta) -> ObjectMeta {
    ObjectMeta {
        name: meta.name.clone(),
        namespace: meta.namespace.clone(),
        resource_version: meta.resource_version.clone(),
        ..ObjectMeta::default()
    }
}

// === Node ===

/// One entry of `node.status.addresses`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct NodeAddress {
    /// `Hostname`, `InternalIP`, `InternalDNS`, `ExternalIP`, `ExternalDNS`.
    #[serde(rename = "type", default)]
    pub kind: String,
    #[serde(default)]
    pub address: String,
}

/// A node reduced to what scraping and the API need.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct NodeObject {
    meta: ObjectMeta,
    pub labels: BTreeMap<String, String>,
    /// The `metrics.k8s.io/resource-metrics-path` annotation, when set.
    pub metrics_path: Option<String>,
    pub addresses: Vec<NodeAddress>,
    /// `status.daemonEndpoints.kubeletEndpoint.Port`; 0 when absent.
    pub kubelet_endpoint_port: i32,
}

#[derive(Deserialize)]
struct NodeWire {
    #[serde(default)]
    metadata: WireMeta,
    #[serde(default)]
    status: Option<NodeWireStatus>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct NodeWireStatus {
    #[serde(default, deserialize_with = "null_as_default")]
    addresses: Vec<NodeAddress>,
    #[serde(default)]
    daemon_endpoints: Option<DaemonEndpoints>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct DaemonEndpoints {
    #[serde(default)]
    kubelet_endpoint: Option<DaemonEndpoint>,
}

/// The Go field carries no JSON tag, so the key really is `Port`.
#[derive(Deserialize, Default)]
struct DaemonEndpoint {
    #[serde(rename = "Port", default)]
    port: i32,
}

impl<'de> Deserialize<'de> for NodeObject {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let NodeWire { metadata, status } = NodeWire::deserialize(deserializer)?;
        let status = status.unwrap_or_default();
        Ok(NodeObject {
            meta: object_meta(&metadata),
            labels: metadata.labels,
            metrics_path: metadata.metrics_path.0,
            addresses: status.addresses,
            kubelet_endpoint_port: status
                .daemon_endpoints
                .and_then(|d| d.kubelet_endpoint)
                .map_or(0, |e| e.port),
        })
    }
}

impl NodeObject {
    pub fn name(&self) -> Option<&str> {
        self.meta.name.as_deref()
    }

    #[cfg(test)]
    /// Builds a node in memory (tests and benches; the cluster's come from JSON).
    pub fn new(name: &str) -> Self {
        NodeObject {
            meta: ObjectMeta {
                name: Some(name.to_owned()),
                ..ObjectMeta::default()
            },
            ..NodeObject::default()
        }
    }
}

impl kube::Resource for NodeObject {
    type DynamicType = ();
    type Scope = ClusterResourceScope;

    fn kind(_: &()) -> Cow<'_, str> {
        Cow::Borrowed("Node")
    }
    fn group(_: &()) -> Cow<'_, str> {
        Cow::Borrowed("")
    }
    fn version(_: &()) -> Cow<'_, str> {
        Cow::Borrowed("v1")
    }
    fn plural(_: &()) -> Cow<'_, str> {
        Cow::Borrowed("nodes")
    }
    fn meta(&self) -> &ObjectMeta {
        &self.meta
    }
    fn meta_mut(&mut self) -> &mut ObjectMeta {
        &mut self.meta
    }
}

// === Pod ===

/// A pod reduced to what the API needs.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PodObject {
    meta: ObjectMeta,
    pub labels: BTreeMap<String, String>,
    /// `spec.nodeName`; empty or absent until scheduled.
    pub node_name: Option<String>,
    /// `status.phase` (`Pending`, `Running`, `Succeeded`, `Failed`, `Unknown`).
    pub phase: Option<String>,
}

#[derive(Deserialize)]
struct PodWire {
    #[serde(default)]
    metadata: WireMeta,
    #[serde(default)]
    spec: Option<PodWireSpec>,
    #[serde(default)]
    status: Option<PodWireStatus>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct PodWireSpec {
    #[serde(default)]
    node_name: Option<String>,
}

#[derive(Deserialize, Default)]
struct PodWireStatus {
    #[serde(default)]
    phase: Option<String>,
}

impl<'de> Deserialize<'de> for PodObject {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let PodWire {
            metadata,
            spec,
            status,
        } = PodWire::deserialize(deserializer)?;
        Ok(PodObject {
            meta: object_meta(&metadata),
            labels: metadata.labels,
            node_name: spec.and_then(|s| s.node_name),
            phase: status.and_then(|s| s.phase),
        })
    }
}

impl PodObject {
    pub fn name(&self) -> Option<&str> {
        self.meta.name.as_deref()
    }

    pub fn namespace(&self) -> Option<&str> {
        self.meta.namespace.as_deref()
    }

    #[cfg(test)]
    /// Builds a pod in memory (tests and benches; the cluster's come from JSON).
    pub fn new(namespace: &str, name: &str) -> Self {
        PodObject {
            meta: ObjectMeta {
                name: Some(name.to_owned()),
                namespace: Some(namespace.to_owned()),
                ..ObjectMeta::default()
            },
            ..PodObject::default()
        }
    }
}

impl kube::Resource for PodObject {
    type DynamicType = ();
    type Scope = NamespaceResourceScope;

    fn kind(_: &()) -> Cow<'_, str> {
        Cow::Borrowed("Pod")
    }
    fn group(_: &()) -> Cow<'_, str> {
        Cow::Borrowed("")
    }
    fn version(_: &()) -> Cow<'_, str> {
        Cow::Borrowed("v1")
    }
    fn plural(_: &()) -> Cow<'_, str> {
        Cow::Borrowed("pods")
    }
    fn meta(&self) -> &ObjectMeta {
        &self.meta
    }
    fn meta_mut(&mut self) -> &mut ObjectMeta {
        &mut self.meta
    }
}

#[cfg(test)]
mod tests {
    use kube::Resource;

    use super::*;

    #[test]
    fn node_keeps_addresses_port_labels_and_path_annotation() {
        let json = r#"{
            "kind": "Node", "apiVersion": "v1",
            "metadata": {
                "name": "node-1", "resourceVersion": "42", "uid": "u",
                "labels": {"kubernetes.io/hostname": "node-1", "zone": "a"},
                "annotations": {"other": "x", "metrics.k8s.io/resource-metrics-path": "/metrics/nodes/node-1/metrics/resource"},
                "managedFields": [{"manager": "kubelet", "fieldsV1": {"f:status": {}}}]
            },
            "spec": {"podCIDR": "10.0.0.0/24"},
            "status": {
                "addresses": [{"type": "InternalIP", "address": "10.0.0.1"}, {"type": "Hostname", "address": "node-1"}],
                "daemonEndpoints": {"kubeletEndpoint": {"Port": 10255}},
                "conditions": [{"type": "Ready", "status": "True"}]
            }
        }"#;
        let node: NodeObject = serde_json::from_str(json).unwrap();
        assert_eq!(node.name(), Some("node-1"));
        assert_eq!(node.meta().resource_version.as_deref(), Some("42"));
        assert_eq!(node.labels.get("zone").map(String::as_str), Some("a"));
        assert_eq!(
            node.metrics_path.as_deref(),
            Some("/metrics/nodes/node-1/metrics/resource")
        );
        assert_eq!(node.addresses.len(), 2);
        assert_eq!(node.addresses[1].kind, "Hostname");
        assert_eq!(node.kubelet_endpoint_port, 10255);
    }

    #[test]
    fn node_without_status_or_labels_decodes_to_empty_fields() {
        let node: NodeObject =
            serde_json::from_str(r#"{"metadata": {"name": "n", "labels": null}}"#).unwrap();
        assert!(node.labels.is_empty());
        assert!(node.addresses.is_empty());
        assert_eq!(node.kubelet_endpoint_port, 0);
        assert_eq!(node.metrics_path, None);
    }

    #[test]
    fn pod_keeps_namespace_name_node_phase_and_labels() {
        let json = r#"{
            "metadata": {"name": "p", "namespace": "ns", "resourceVersion": "7", "labels": {"app": "web"}},
            "spec": {"nodeName": "node-1", "containers": [{"name": "c", "image": "i"}]},
            "status": {"phase": "Running", "podIP": "10.1.1.1"}
        }"#;
        let pod: PodObject = serde_json::from_str(json).unwrap();
        assert_eq!(pod.namespace(), Some("ns"));
        assert_eq!(pod.name(), Some("p"));
        assert_eq!(pod.meta().resource_version.as_deref(), Some("7"));
        assert_eq!(pod.node_name.as_deref(), Some("node-1"));
        assert_eq!(pod.phase.as_deref(), Some("Running"));
        assert_eq!(pod.labels.get("app").map(String::as_str), Some("web"));
    }

    #[test]
    fn kinds_map_to_the_core_v1_paths() {
        assert_eq!(NodeObject::url_path(&(), None), "/api/v1/nodes");
        assert_eq!(PodObject::url_path(&(), None), "/api/v1/pods");
    }
}
