//! JSON rendering of the cluster's objects and of API `Status` replies.
//!
//! Writes straight into a `String` instead of building serde values: a list of 300,000 pods is
//! rendered on every relist, and an intermediate tree per pod would dominate that. Owns the wire
//! shape only; it decides nothing about which objects are served.

use std::fmt::Write as _;
use std::time::SystemTime;

use crate::cluster::{Node, Pod};

/// The image every simulated container claims to run.
const CONTAINER_IMAGE: &str = "registry.k8s.io/pause:3.10";

/// What a node reports as `status.capacity` and `status.allocatable` (Kubernetes quantities).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeResources {
    pub cpu_capacity: String,
    pub memory_capacity: String,
    pub cpu_allocatable: String,
    pub memory_allocatable: String,
    pub pods: String,
}

impl Default for NodeResources {
    fn default() -> Self {
        NodeResources {
            cpu_capacity: "4".to_owned(),
            memory_capacity: "16Gi".to_owned(),
            cpu_allocatable: "3900m".to_owned(),
            memory_allocatable: "15Gi".to_owned(),
            pods: "110".to_owned(),
        }
    }
}

/// RFC 3339 with whole seconds, as Kubernetes writes `metav1.Time`.
pub(crate) fn rfc3339(t: SystemTime) -> String {
    let secs = match t.duration_since(SystemTime::UNIX_EPOCH) {
        Ok(d) => d.as_secs() as i64,
        Err(_) => 0,
    };
    time::OffsetDateTime::from_unix_timestamp(secs)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| "1970-01-01T00:00:00Z".to_owned())
}

/// Appends `s` as a JSON string literal.
pub(crate) fn push_json_str(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

fn push_labels(out: &mut String, labels: &std::collections::BTreeMap<String, String>) {
    out.push('{');
    for (i, (k, v)) in labels.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        push_json_str(out, k);
        out.push(':');
        push_json_str(out, v);
    }
    out.push('}');
}

/// Appends a `v1.Node`.
pub(crate) fn push_node(out: &mut String, node: &Node, resources: &NodeResources) {
    let created = rfc3339(node.created);
    out.push_str(r#"{"kind":"Node","apiVersion":"v1","metadata":{"name":"#);
    push_json_str(out, &node.name);
    out.push_str(r#","uid":"#);
    push_json_str(out, &node.uid);
    let _ = write!(
        out,
        r#","resourceVersion":"{}","creationTimestamp":"{}","labels":"#,
        node.resource_version, created
    );
    push_labels(out, &node.labels);
    out.push_str(r#"},"spec":{},"status":{"capacity":{"cpu":"#);
    push_json_str(out, &resources.cpu_capacity);
    out.push_str(r#","memory":"#);
    push_json_str(out, &resources.memory_capacity);
    out.push_str(r#","pods":"#);
    push_json_str(out, &resources.pods);
    out.push_str(r#"},"allocatable":{"cpu":"#);
    push_json_str(out, &resources.cpu_allocatable);
    out.push_str(r#","memory":"#);
    push_json_str(out, &resources.memory_allocatable);
    out.push_str(r#","pods":"#);
    push_json_str(out, &resources.pods);
    let _ = write!(
        out,
        concat!(
            r#"}},"conditions":[{{"type":"Ready","status":"True","lastHeartbeatTime":"{c}","#,
            r#""lastTransitionTime":"{c}","reason":"KubeletReady","#,
            r#""message":"kubelet is posting ready status"}}],"#,
            r#""addresses":[{{"type":"InternalIP","address":"{ip}"}},{{"type":"Hostname","address":"#
        ),
        c = created,
        ip = node.ip
    );
    // The Hostname address is the node's IP: simulated node names resolve nowhere, and a metrics
    // server on its default address preference (Hostname first) must still reach the kubelet.
    push_json_str(out, &node.ip.to_string());
    let _ = write!(
        out,
        concat!(
            r#"}}],"daemonEndpoints":{{"kubeletEndpoint":{{"Port":{port}}}}},"#,
            r#""nodeInfo":{{"machineID":"","systemUUID":"","bootID":"","kernelVersion":"","#,
            r#""osImage":"","containerRuntimeVersion":"","kubeletVersion":"v1.33.0","#,
            r#""kubeProxyVersion":"","operatingSystem":"linux","architecture":"amd64"}}}}}}"#
        ),
        port = node.port
    );
}

/// Appends a `v1.Pod`.
pub(crate) fn push_pod(out: &mut String, pod: &Pod) {
    let created = rfc3339(pod.created);
    out.push_str(r#"{"kind":"Pod","apiVersion":"v1","metadata":{"name":"#);
    push_json_str(out, &pod.name);
    out.push_str(r#","namespace":"#);
    push_json_str(out, &pod.namespace);
    out.push_str(r#","uid":"#);
    push_json_str(out, &pod.uid);
    let _ = write!(
        out,
        r#","resourceVersion":"{}","creationTimestamp":"{}","labels":"#,
        pod.resource_version, created
    );
    push_labels(out, &pod.labels);
    out.push_str(r#"},"spec":{"nodeName":"#);
    push_json_str(out, &pod.node);
    out.push_str(r#","containers":["#);
    for (i, name) in pod.containers.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(r#"{"name":"#);
        push_json_str(out, name);
        let _ = write!(out, r#","image":"{CONTAINER_IMAGE}"}}"#);
    }
    let running = pod.phase == crate::cluster::PodPhase::Running;
    let _ = write!(out, r#"]}},"status":{{"phase":"{}""#, pod.phase.as_str());
    if running {
        let _ = write!(out, r#","startTime":"{created}","containerStatuses":["#);
        for (i, name) in pod.containers.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            out.push_str(r#"{"name":"#);
            push_json_str(out, name);
            let _ = write!(
                out,
                concat!(
                    r#","ready":true,"started":true,"restartCount":0,"image":"{img}","#,
                    r#""imageID":"","state":{{"running":{{"startedAt":"{c}"}}}}}}"#
                ),
                img = CONTAINER_IMAGE,
                c = created
            );
        }
        out.push(']');
    }
    out.push_str("}}");
}

/// A `Status` object with `status: Failure`.
pub(crate) fn status_failure(code: u16, reason: &str, message: &str) -> String {
    let mut out = String::with_capacity(128 + message.len());
    out.push_str(
        r#"{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","message":"#,
    );
    push_json_str(&mut out, message);
    out.push_str(r#","reason":"#);
    push_json_str(&mut out, reason);
    let _ = write!(out, r#","code":{code}}}"#);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::PodPhase;
    use std::collections::BTreeMap;
    use std::time::Duration;

    fn value(s: &str) -> serde_json::Value {
        serde_json::from_str(s).expect("valid JSON")
    }

    #[test]
    fn node_json_carries_addresses_port_and_resources() {
        let node = Node {
            name: "node-\"1\"".to_owned(),
            ip: "127.0.0.9".parse().expect("ip"),
            port: 10250,
            labels: BTreeMap::from([("zone".to_owned(), "a".to_owned())]),
            created: SystemTime::UNIX_EPOCH + Duration::from_secs(1_769_539_713),
            uid: "u1".to_owned(),
            resource_version: 42,
        };
        let mut out = String::new();
        push_node(&mut out, &node, &NodeResources::default());
        let v = value(&out);
        assert_eq!(v["metadata"]["name"], "node-\"1\"");
        assert_eq!(v["metadata"]["resourceVersion"], "42");
        assert_eq!(v["metadata"]["creationTimestamp"], "2026-01-27T18:48:33Z");
        assert_eq!(v["metadata"]["labels"]["zone"], "a");
        assert_eq!(v["status"]["addresses"][0]["type"], "InternalIP");
        assert_eq!(v["status"]["addresses"][0]["address"], "127.0.0.9");
        assert_eq!(v["status"]["addresses"][1]["type"], "Hostname");
        assert_eq!(v["status"]["addresses"][1]["address"], "127.0.0.9");
        assert_eq!(
            v["status"]["daemonEndpoints"]["kubeletEndpoint"]["Port"],
            10250
        );
        assert_eq!(v["status"]["allocatable"]["cpu"], "3900m");
        assert_eq!(v["status"]["capacity"]["memory"], "16Gi");
        assert_eq!(v["status"]["conditions"][0]["type"], "Ready");
    }

    #[test]
    fn pod_json_lists_containers_and_phase() {
        let pod = Pod {
            namespace: "ns".to_owned(),
            name: "p\n1".to_owned(),
            node: "n1".to_owned(),
            labels: BTreeMap::new(),
            containers: vec!["a".to_owned(), "b".to_owned()],
            phase: PodPhase::Running,
            created: SystemTime::now(),
            uid: "u".to_owned(),
            resource_version: 7,
        };
        let mut out = String::new();
        push_pod(&mut out, &pod);
        let v = value(&out);
        assert_eq!(v["metadata"]["name"], "p\n1");
        assert_eq!(v["metadata"]["namespace"], "ns");
        assert_eq!(v["spec"]["nodeName"], "n1");
        assert_eq!(v["spec"]["containers"][1]["name"], "b");
        assert_eq!(v["status"]["phase"], "Running");
        assert_eq!(v["status"]["containerStatuses"][1]["ready"], true);
    }

    #[test]
    fn status_is_a_failure_object_with_code() {
        let v = value(&status_failure(
            410,
            "Expired",
            "too old resource version: 1 (5)",
        ));
        assert_eq!(v["kind"], "Status");
        assert_eq!(v["code"], 410);
        assert_eq!(v["reason"], "Expired");
    }
}
