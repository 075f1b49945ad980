//! The `meta.k8s.io/v1` `Table` rendering kubectl asks for (`Accept: ...;as=Table;...`), so
//! `kubectl get nodes` / `kubectl get pods` print the usual columns instead of only names.

use std::fmt::Write as _;
use std::time::SystemTime;

use crate::cluster::{Node, Pod, PodPhase};

use super::objects::{push_json_str, rfc3339};

/// Whether an `Accept` header asks for a Table first.
pub(crate) fn wants_table(accept: &str) -> bool {
    accept
        .split(',')
        .next()
        .is_some_and(|first| first.contains("as=Table"))
}

/// Columns: (name, format, priority). Priority 1 columns show with `-o wide` only.
const NODE_COLUMNS: &[(&str, &str, u8)] = &[
    ("Name", "name", 0),
    ("Status", "", 0),
    ("Roles", "", 0),
    ("Age", "", 0),
    ("Version", "", 0),
    ("Internal-IP", "", 1),
];
const POD_COLUMNS: &[(&str, &str, u8)] = &[
    ("Name", "name", 0),
    ("Ready", "", 0),
    ("Status", "", 0),
    ("Restarts", "", 0),
    ("Age", "", 0),
    ("Node", "", 1),
];
const CONFIGMAP_COLUMNS: &[(&str, &str, u8)] =
    &[("Name", "name", 0), ("Data", "", 0), ("Age", "", 0)];

/// Which object kind a table lists.
#[derive(Clone, Copy)]
pub(crate) enum TableKind {
    Nodes,
    Pods,
    ConfigMaps,
}

/// Opens a Table; rows follow, comma-separated, then [`TABLE_TAIL`].
pub(crate) fn push_head(out: &mut String, kind: TableKind, resource_version: u64) {
    let columns = match kind {
        TableKind::Nodes => NODE_COLUMNS,
        TableKind::Pods => POD_COLUMNS,
        TableKind::ConfigMaps => CONFIGMAP_COLUMNS,
    };
    let _ = write!(
        out,
        r#"{{"kind":"Table","apiVersion":"meta.k8s.io/v1","metadata":{{"resourceVersion":"{resource_version}"}},"columnDefinitions":["#
    );
    for (i, (name, format, priority)) in columns.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        let kind = if *name == "Restarts" {
            "integer"
        } else {
            "string"
        };
        let _ = write!(
            out,
            r#"{{"name":"{name}","type":"{kind}","format":"{format}","description":"","priority":{priority}}}"#
        );
    }
    out.push_str(r#"],"rows":["#);
}

pub(crate) const TABLE_TAIL: &str = "]}";

/// Kubernetes' short human duration ("45s", "5m3s", "3h", "2d4h", "3y12d").
pub(crate) fn human_age(created: SystemTime, now: SystemTime) -> String {
    let secs = match now.duration_since(created) {
        Ok(d) => d.as_secs(),
        Err(_) => 0,
    };
    let (m, h, d) = (secs / 60, secs / 3600, secs / 86_400);
    let with = |big: u64, unit: &str, small: u64, small_unit: &str| {
        if small == 0 {
            format!("{big}{unit}")
        } else {
            format!("{big}{unit}{small}{small_unit}")
        }
    };
    if secs < 120 {
        format!("{secs}s")
    } else if m < 10 {
        with(m, "m", secs % 60, "s")
    } else if m < 180 {
        format!("{m}m")
    } else if h < 8 {
        with(h, "h", m % 60, "m")
    } else if h < 48 {
        format!("{h}h")
    } else if h < 24 * 8 {
        with(d, "d", h % 24, "h")
    } else if d < 365 * 2 {
        format!("{d}d")
    } else if d < 365 * 8 {
        with(d / 365, "y", d % 365, "d")
    } else {
        format!("{}y", d / 365)
    }
}

fn push_partial_metadata(
    out: &mut String,
    name: &str,
    namespace: Option<&str>,
    uid: &str,
    resource_version: u64,
    created: SystemTime,
) {
    out.push_str(
        r#""object":{"kind":"PartialObjectMetadata","apiVersion":"meta.k8s.io/v1","metadata":{"name":"#,
    );
    push_json_str(out, name);
    if let Some(ns) = namespace {
        out.push_str(r#","namespace":"#);
        push_json_str(out, ns);
    }
    out.push_str(r#","uid":"#);
    push_json_str(out, uid);
    let _ = write!(
        out,
        r#","resourceVersion":"{resource_version}","creationTimestamp":"{}"}}}}}}"#,
        rfc3339(created)
    );
}

pub(crate) fn push_node_row(out: &mut String, node: &Node, now: SystemTime) {
    out.push_str(r#"{"cells":["#);
    push_json_str(out, &node.name);
    let roles: Vec<&str> = node
        .labels
        .keys()
        .filter_map(|k| k.strip_prefix("node-role.kubernetes.io/"))
        .collect();
    let roles = if roles.is_empty() {
        "<none>".to_owned()
    } else {
        roles.join(",")
    };
    out.push_str(r#","Ready","#);
    push_json_str(out, &roles);
    let _ = write!(
        out,
        r#","{}","v1.33.0","{}"],"#,
        human_age(node.created, now),
        node.ip
    );
    push_partial_metadata(
        out,
        &node.name,
        None,
        &node.uid,
        node.resource_version,
        node.created,
    );
}

pub(crate) fn push_pod_row(out: &mut String, pod: &Pod, now: SystemTime) {
    out.push_str(r#"{"cells":["#);
    push_json_str(out, &pod.name);
    let total = pod.containers.len();
    let ready = if pod.phase == PodPhase::Running {
        total
    } else {
        0
    };
    let status = match pod.phase {
        PodPhase::Succeeded => "Completed",
        phase => phase.as_str(),
    };
    let _ = write!(
        out,
        r#","{ready}/{total}","{status}",0,"{}","#,
        human_age(pod.created, now)
    );
    push_json_str(out, &pod.node);
    out.push_str("],");
    push_partial_metadata(
        out,
        &pod.name,
        Some(&pod.namespace),
        &pod.uid,
        pod.resource_version,
        pod.created,
    );
}

pub(crate) fn push_configmap_row(out: &mut String, name: &str, namespace: &str, keys: usize) {
    out.push_str(r#"{"cells":["#);
    push_json_str(out, name);
    let _ = write!(out, r#",{keys},"<unknown>"],"#);
    push_partial_metadata(out, name, Some(namespace), name, 1, SystemTime::UNIX_EPOCH);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn ages_read_like_kubectl_prints_them() {
        let t0 = SystemTime::UNIX_EPOCH;
        let age = |secs: u64| human_age(t0, t0 + Duration::from_secs(secs));
        assert_eq!(age(45), "45s");
        assert_eq!(age(119), "119s");
        assert_eq!(age(303), "5m3s");
        assert_eq!(age(600), "10m");
        assert_eq!(age(3 * 3600 + 60), "3h1m");
        assert_eq!(age(20 * 3600), "20h");
        assert_eq!(age(2 * 86_400 + 4 * 3600), "2d4h");
        assert_eq!(age(100 * 86_400), "100d");
        assert_eq!(age(3 * 365 * 86_400 + 12 * 86_400), "3y12d");
        assert_eq!(human_age(t0 + Duration::from_secs(5), t0), "0s");
    }

    #[test]
    fn a_table_of_pods_is_valid_json_with_namespaced_rows() {
        let pod = Pod {
            namespace: "ns".to_owned(),
            name: "p".to_owned(),
            node: "n1".to_owned(),
            labels: Default::default(),
            containers: vec!["a".to_owned(), "b".to_owned()],
            phase: PodPhase::Running,
            created: SystemTime::UNIX_EPOCH,
            uid: "u".to_owned(),
            resource_version: 3,
        };
        let mut out = String::new();
        push_head(&mut out, TableKind::Pods, 9);
        push_pod_row(
            &mut out,
            &pod,
            SystemTime::UNIX_EPOCH + Duration::from_secs(30),
        );
        out.push_str(TABLE_TAIL);
        let v: serde_json::Value = serde_json::from_str(&out).expect("json");
        assert_eq!(v["kind"], "Table");
        assert_eq!(v["columnDefinitions"][1]["name"], "Ready");
        assert_eq!(v["rows"][0]["cells"][1], "2/2");
        assert_eq!(v["rows"][0]["cells"][4], "30s");
        assert_eq!(v["rows"][0]["object"]["metadata"]["namespace"], "ns");
        assert!(wants_table(
            "application/json;as=Table;v=v1;g=meta.k8s.io,application/json"
        ));
        assert!(!wants_table("application/json"));
    }
}
