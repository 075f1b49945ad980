//! JSON rendering of the metrics.k8s.io objects, byte for byte as upstream serves them.
//!
//! Upstream encodes the `k8s.io/metrics` v1beta1 types with Go's `encoding/json` through the API
//! server's encoder, which fixes everything observable here:
//! - field order is struct order: `kind`, `apiVersion`, `metadata` {`name`, `namespace` (pods),
//!   `creationTimestamp`, `labels`}, `timestamp`, `window`, then `usage` or `containers`;
//! - `labels` is omitted when empty and its keys are sorted (our [`Labels`] already are); a usage
//!   map has its keys sorted too, so `cpu` comes before `memory`;
//! - only the top-level object carries `kind` and `apiVersion`: items of a list have an empty
//!   type (both fields are `omitempty`), so each item starts at `metadata`;
//! - a list's `metadata` is an empty `ListMeta`, `{}`, and an empty list has `"items":[]`;
//! - the encoder ends the body with a newline, so every public function here writes a complete
//!   response body including that newline.
//!
//! Rendering appends to the caller's buffer and allocates nothing else: numbers, quantities,
//! durations and times are formatted on the stack, and the creation time of a list is formatted
//! once for all its items.

use crate::api::gofmt::{self, push_go_quoted, write_duration};
use crate::api::json::write_str;
use crate::api::quantity::{write_cpu, write_memory};
use crate::model::{ContainerMetrics, Labels, NodeMetrics, PodMetrics, UnixNanos, Usage};

const API_VERSION: &str = "metrics.k8s.io/v1beta1";

/// Writes one `NodeMetrics` object. `now` is the object's `creationTimestamp` (upstream stamps the
/// time of the request).
pub fn node_metrics(out: &mut Vec<u8>, metrics: &NodeMetrics, labels: &Labels, now: UnixNanos) {
    out.extend_from_slice(br#"{"kind":"NodeMetrics","apiVersion":"metrics.k8s.io/v1beta1","#);
    node_body(out, metrics, labels, &gofmt::rfc3339(now));
    out.push(b'\n');
}

/// Writes one `PodMetrics` object.
pub fn pod_metrics(out: &mut Vec<u8>, metrics: &PodMetrics, labels: &Labels, now: UnixNanos) {
    out.extend_from_slice(br#"{"kind":"PodMetrics","apiVersion":"metrics.k8s.io/v1beta1","#);
    pod_body(out, metrics, labels, &gofmt::rfc3339(now));
    out.push(b'\n');
}

/// Writes a `NodeMetricsList` of the given items, in the order given.
pub fn node_metrics_list<'a>(
    out: &mut Vec<u8>,
    items: impl Iterator<Item = (&'a NodeMetrics, &'a Labels)>,
    now: UnixNanos,
) {
    let now = gofmt::rfc3339(now);
    list(out, "NodeMetricsList", items, |out, (metrics, labels)| {
        out.push(b'{');
        node_body(out, metrics, labels, &now);
    });
}

/// Writes a `PodMetricsList` of the given items, in the order given.
pub fn pod_metrics_list<'a>(
    out: &mut Vec<u8>,
    items: impl Iterator<Item = (&'a PodMetrics, &'a Labels)>,
    now: UnixNanos,
) {
    let now = gofmt::rfc3339(now);
    list(out, "PodMetricsList", items, |out, (metrics, labels)| {
        out.push(b'{');
        pod_body(out, metrics, labels, &now);
    });
}

/// The parts of one `PodMetricsList` item that depend on the pod's metrics alone, so a list can be
/// served from parts rendered once per scrape: everything before `creationTimestamp` and labels
/// (`head`) and everything after them (`tail`). See [`pod_item_parts`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PodItemParts<'a> {
    pub head: &'a [u8],
    pub tail: &'a [u8],
}

/// How a JSON `PodMetricsList` opens, as [`pod_metrics_list_from_parts`] writes it (a test
/// holds the two to the same bytes): a list assembled from cached items starts with it.
pub(crate) const POD_LIST_JSON_HEAD: &[u8] =
    br#"{"kind":"PodMetricsList","apiVersion":"metrics.k8s.io/v1beta1","metadata":{},"items":["#;
/// What precedes the request time in an item, right after its head (see
/// [`creation_and_labels`]): a kept answer rewrites the 20 bytes that follow it.
pub(crate) const CREATION_TIMESTAMP_KEY: &[u8] = br#","creationTimestamp":""#;
/// How every JSON list closes.
pub(crate) const LIST_JSON_TAIL: &[u8] = b"]}\n";

/// Appends a pod's list-item parts to `out`, head then tail; returns the head's length.
///
/// With the request's time and the pod's labels between them, they make the item
/// [`pod_metrics_list`] writes, byte for byte.
pub fn pod_item_parts(out: &mut Vec<u8>, metrics: &PodMetrics) -> usize {
    let start = out.len();
    out.push(b'{');
    pod_head(out, metrics);
    let head = out.len() - start;
    pod_tail(out, metrics);
    head
}

/// Writes a `PodMetricsList` of items given as pre-rendered parts (see [`pod_item_parts`]) and
/// labels, in the order given. The output equals [`pod_metrics_list`]'s for the same pods.
pub fn pod_metrics_list_from_parts<'a>(
    out: &mut Vec<u8>,
    items: impl Iterator<Item = (PodItemParts<'a>, &'a Labels)>,
    now: UnixNanos,
) {
    let now = gofmt::rfc3339(now);
    list(out, "PodMetricsList", items, |out, (parts, labels)| {
        out.extend_from_slice(parts.head);
        creation_and_labels(out, labels, &now);
        out.extend_from_slice(parts.tail);
    });
}

/// Writes a Kubernetes `Status` failure object (`reason` such as `NotFound`, `BadRequest`).
pub fn status(out: &mut Vec<u8>, code: u16, reason: &str, message: &str) {
    status_with_details(out, code, reason, message, None);
}

/// The `details` of a `Status`; empty fields are left out, as Go's `omitempty` does.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StatusDetails<'a> {
    pub name: &'a str,
    pub group: &'a str,
    /// The resource, lower-case plural as upstream's `NotFound` puts it (`nodemetrics`, `pods`).
    pub kind: &'a str,
}

/// Writes a `Status` failure object with optional `details`. `code` 0 and empty `reason` or
/// `message` are left out, as Go's `omitempty` does.
pub fn status_with_details(
    out: &mut Vec<u8>,
    code: u16,
    reason: &str,
    message: &str,
    details: Option<StatusDetails<'_>>,
) {
    out.extend_from_slice(
        br#"{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure""#,
    );
    if !message.is_empty() {
        out.extend_from_slice(br#","message":"#);
        write_str(out, message);
    }
    if !reason.is_empty() {
        out.extend_from_slice(br#","reason":"#);
        write_str(out, reason);
    }
    if let Some(details) = details {
        out.extend_from_slice(br#","details":{"#);
        let mut first = true;
        for (key, value) in [
            ("name", details.name),
            ("group", details.group),
            ("kind", details.kind),
        ] {
            if value.is_empty() {
                continue;
            }
            if !first {
                out.push(b',');
            }
            first = false;
            write_str(out, key);
            out.push(b':');
            write_str(out, value);
        }
        out.push(b'}');
    }
    if code != 0 {
        out.extend_from_slice(br#","code":"#);
        out.extend_from_slice(itoa::Buffer::new().format(code).as_bytes());
    }
    out.extend_from_slice(b"}\n");
}

/// Writes the `404 NotFound` status upstream returns for a missing object: message
/// `<resource>.<group> "<name>" not found` (just `<resource>` when `group` is empty), details
/// `{name, group, kind: resource}`. Upstream answers `nodemetrics`/`podmetrics` in group
/// `metrics.k8s.io` when the object exists but has no metrics, and `node`/`pod` with no group
/// when the object itself is unknown to its informer.
pub fn status_not_found(out: &mut Vec<u8>, group: &str, resource: &str, name: &str) {
    // Built in a small local string: this is the rare error path, not the per-item hot path.
    let mut message = String::with_capacity(resource.len() + group.len() + name.len() + 16);
    message.push_str(resource);
    if !group.is_empty() {
        message.push('.');
        message.push_str(group);
    }
    message.push(' ');
    push_go_quoted(&mut message, name);
    message.push_str(" not found");
    status_with_details(
        out,
        404,
        "NotFound",
        &message,
        Some(StatusDetails {
            name,
            group,
            kind: resource,
        }),
    );
}

// === rendering helpers ===

fn list<T>(
    out: &mut Vec<u8>,
    kind: &str,
    items: impl Iterator<Item = T>,
    mut item: impl FnMut(&mut Vec<u8>, T),
) {
    out.extend_from_slice(br#"{"kind":""#);
    out.extend_from_slice(kind.as_bytes());
    out.extend_from_slice(br#"","apiVersion":""#);
    out.extend_from_slice(API_VERSION.as_bytes());
    out.extend_from_slice(br#"","metadata":{},"items":["#);
    let mut first = true;
    for each in items {
        if !first {
            out.push(b',');
        }
        first = false;
        item(out, each);
    }
    out.extend_from_slice(b"]}\n");
}

/// Everything of a node object after its opening brace and type fields.
fn node_body(out: &mut Vec<u8>, metrics: &NodeMetrics, labels: &Labels, now: &[u8; 20]) {
    out.extend_from_slice(br#""metadata":{"name":"#);
    write_str(out, &metrics.name);
    creation_and_labels(out, labels, now);
    times(out, metrics.timestamp, metrics.window);
    out.extend_from_slice(br#","usage":"#);
    usage(out, &metrics.usage);
    out.push(b'}');
}

/// Everything of a pod object after its opening brace and type fields.
fn pod_body(out: &mut Vec<u8>, metrics: &PodMetrics, labels: &Labels, now: &[u8; 20]) {
    pod_head(out, metrics);
    creation_and_labels(out, labels, now);
    pod_tail(out, metrics);
}

/// `"metadata":{"name":...,"namespace":...`: the metadata up to the creation time.
fn pod_head(out: &mut Vec<u8>, metrics: &PodMetrics) {
    out.extend_from_slice(br#""metadata":{"name":"#);
    write_str(out, &metrics.name);
    out.extend_from_slice(br#","namespace":"#);
    write_str(out, &metrics.namespace);
}

/// Everything of a pod object after its metadata, closing brace included.
fn pod_tail(out: &mut Vec<u8>, metrics: &PodMetrics) {
    times(out, metrics.timestamp, metrics.window);
    out.extend_from_slice(br#","containers":["#);
    for (i, ContainerMetrics { name, usage: u }) in metrics.containers.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(br#"{"name":"#);
        write_str(out, name);
        out.extend_from_slice(br#","usage":"#);
        usage(out, u);
        out.push(b'}');
    }
    out.extend_from_slice(b"]}");
}

/// `"creationTimestamp":...,"labels":{...}}` closing the metadata object.
pub(crate) fn creation_and_labels(out: &mut Vec<u8>, labels: &Labels, now: &[u8; 20]) {
    out.extend_from_slice(CREATION_TIMESTAMP_KEY);
    out.extend_from_slice(now);
    out.push(b'"');
    // Encoded once per label set (a workload's pods share one) and copied after that.
    out.extend_from_slice(labels.cached_json(labels_member));
    out.push(b'}');
}

/// The length of what [`creation_and_labels`] writes for `labels`.
pub(crate) fn creation_and_labels_len(labels: &Labels) -> usize {
    CREATION_TIMESTAMP_KEY.len() + 20 + 1 + labels.cached_json(labels_member).len() + 1
}

/// `,"labels":{...}`, or nothing for an empty set (Go's `omitempty`).
fn labels_member(labels: &Labels) -> Vec<u8> {
    let mut out = Vec::new();
    if !labels.is_empty() {
        out.extend_from_slice(br#","labels":{"#);
        for (i, (key, value)) in labels.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            write_str(&mut out, key);
            out.push(b':');
            write_str(&mut out, value);
        }
        out.push(b'}');
    }
    out
}

/// `,"timestamp":"...","window":"..."`.
fn times(out: &mut Vec<u8>, timestamp: UnixNanos, window: i64) {
    out.extend_from_slice(br#","timestamp":""#);
    gofmt::write_rfc3339(out, timestamp);
    out.extend_from_slice(br#"","window":""#);
    write_duration(out, window);
    out.push(b'"');
}

/// `{"cpu":"...","memory":"..."}`.
fn usage(out: &mut Vec<u8>, usage: &Usage) {
    out.extend_from_slice(br#"{"cpu":""#);
    write_cpu(out, usage.cpu_nanocores);
    out.extend_from_slice(br#"","memory":""#);
    write_memory(out, usage.memory_bytes);
    out.extend_from_slice(br#""}"#);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Name;

    const S: i64 = 1_000_000_000;
    /// 2026-01-27T18:48:33Z plus a fraction that must not show.
    const NOW: i64 = 1_769_539_713 * S + 999_999_999;
    /// 2026-01-27T18:48:20Z.
    const SAMPLE: i64 = 1_769_539_700 * S + 250_000_000;

    fn node(name: &str) -> NodeMetrics {
        NodeMetrics {
            name: Name::from(name),
            timestamp: SAMPLE,
            window: 15_012_000_000,
            usage: Usage {
                cpu_nanocores: 487_558_164,
                memory_bytes: 732_212 * 1024,
            },
        }
    }

    fn pod(namespace: &str, name: &str, containers: &[(&str, u64, u64)]) -> PodMetrics {
        PodMetrics {
            namespace: Name::from(namespace),
            name: Name::from(name),
            node: Name::from("node-1"),
            timestamp: SAMPLE,
            window: 60 * S + 500_000_000,
            containers: containers
                .iter()
                .map(|&(name, cpu, memory)| ContainerMetrics {
                    name: Name::from(name),
                    usage: Usage {
                        cpu_nanocores: cpu,
                        memory_bytes: memory,
                    },
                })
                .collect(),
        }
    }

    fn text(out: Vec<u8>) -> String {
        let s = String::from_utf8(out).unwrap();
        let _: serde_json::Value = serde_json::from_str(&s).unwrap();
        s
    }

    #[test]
    fn node_metrics_matches_upstream_shape() {
        let labels = Labels::from_pairs([
            ("kubernetes.io/os", "linux"),
            ("kubernetes.io/hostname", "node-1"),
        ]);
        let mut out = Vec::new();
        node_metrics(&mut out, &node("node-1"), &labels, NOW);
        assert_eq!(
            text(out),
            concat!(
                r#"{"kind":"NodeMetrics","apiVersion":"metrics.k8s.io/v1beta1","#,
                r#""metadata":{"name":"node-1","creationTimestamp":"2026-01-27T18:48:33Z","#,
                r#""labels":{"kubernetes.io/hostname":"node-1","kubernetes.io/os":"linux"}},"#,
                r#""timestamp":"2026-01-27T18:48:20Z","window":"15.012s","#,
                r#""usage":{"cpu":"487558164n","memory":"732212Ki"}}"#,
                "\n"
            )
        );
    }

    #[test]
    fn node_without_labels_omits_the_labels_field() {
        let mut out = Vec::new();
        node_metrics(&mut out, &node("n"), &Labels::default(), NOW);
        assert_eq!(
            text(out),
            concat!(
                r#"{"kind":"NodeMetrics","apiVersion":"metrics.k8s.io/v1beta1","#,
                r#""metadata":{"name":"n","creationTimestamp":"2026-01-27T18:48:33Z"},"#,
                r#""timestamp":"2026-01-27T18:48:20Z","window":"15.012s","#,
                r#""usage":{"cpu":"487558164n","memory":"732212Ki"}}"#,
                "\n"
            )
        );
    }

    #[test]
    fn pod_metrics_matches_upstream_shape() {
        let labels = Labels::from_pairs([("app", "web"), ("tier", "<front>")]);
        let p = pod(
            "ns",
            "p",
            &[
                ("c", 9_559_630, 22_244 * 1024),
                ("sidecar", 5_000_000, 1000),
            ],
        );
        let mut out = Vec::new();
        pod_metrics(&mut out, &p, &labels, NOW);
        assert_eq!(
            text(out),
            concat!(
                r#"{"kind":"PodMetrics","apiVersion":"metrics.k8s.io/v1beta1","#,
                r#""metadata":{"name":"p","namespace":"ns","creationTimestamp":"2026-01-27T18:48:33Z","#,
                r#""labels":{"app":"web","tier":"\u003cfront\u003e"}},"#,
                r#""timestamp":"2026-01-27T18:48:20Z","window":"1m0.5s","#,
                r#""containers":[{"name":"c","usage":{"cpu":"9559630n","memory":"22244Ki"}},"#,
                r#"{"name":"sidecar","usage":{"cpu":"5m","memory":"1k"}}]}"#,
                "\n"
            )
        );
    }

    #[test]
    fn node_list_items_have_no_type_fields() {
        let (a, b) = (node("a"), node("b"));
        let la = Labels::from_pairs([("role", "x")]);
        let lb = Labels::default();
        let mut out = Vec::new();
        node_metrics_list(&mut out, [(&a, &la), (&b, &lb)].into_iter(), NOW);
        assert_eq!(
            text(out),
            concat!(
                r#"{"kind":"NodeMetricsList","apiVersion":"metrics.k8s.io/v1beta1","metadata":{},"items":["#,
                r#"{"metadata":{"name":"a","creationTimestamp":"2026-01-27T18:48:33Z","labels":{"role":"x"}},"#,
                r#""timestamp":"2026-01-27T18:48:20Z","window":"15.012s","#,
                r#""usage":{"cpu":"487558164n","memory":"732212Ki"}},"#,
                r#"{"metadata":{"name":"b","creationTimestamp":"2026-01-27T18:48:33Z"},"#,
                r#""timestamp":"2026-01-27T18:48:20Z","window":"15.012s","#,
                r#""usage":{"cpu":"487558164n","memory":"732212Ki"}}]}"#,
                "\n"
            )
        );
    }

    #[test]
    fn pod_list_renders_items_in_the_given_order() {
        let p1 = pod(
            "kube-system",
            "coredns",
            &[("coredns", 7_338_891, 14_520 * 1024)],
        );
        let p2 = pod("default", "empty", &[]);
        let labels = Labels::default();
        let mut out = Vec::new();
        pod_metrics_list(&mut out, [(&p1, &labels), (&p2, &labels)].into_iter(), NOW);
        assert_eq!(
            text(out),
            concat!(
                r#"{"kind":"PodMetricsList","apiVersion":"metrics.k8s.io/v1beta1","metadata":{},"items":["#,
                r#"{"metadata":{"name":"coredns","namespace":"kube-system","creationTimestamp":"2026-01-27T18:48:33Z"},"#,
                r#""timestamp":"2026-01-27T18:48:20Z","window":"1m0.5s","#,
                r#""containers":[{"name":"coredns","usage":{"cpu":"7338891n","memory":"14520Ki"}}]},"#,
                r#"{"metadata":{"name":"empty","namespace":"default","creationTimestamp":"2026-01-27T18:48:33Z"},"#,
                r#""timestamp":"2026-01-27T18:48:20Z","window":"1m0.5s","containers":[]}]}"#,
                "\n"
            )
        );
    }

    #[test]
    fn a_list_from_pre_rendered_parts_equals_the_list_rendered_whole() {
        let p1 = pod(
            "kube-system",
            "coredns",
            &[("coredns", 7_338_891, 14_520 * 1024), ("side\"car", 1, 2)],
        );
        let p2 = pod("<ns>", "empty", &[]);
        let l1 = Labels::from_pairs([("app", "dns"), ("k8s-app", "kube-dns")]);
        let l2 = Labels::default();
        let mut whole = Vec::new();
        pod_metrics_list(&mut whole, [(&p1, &l1), (&p2, &l2)].into_iter(), NOW);

        let mut rendered = Vec::new();
        let mut spans = Vec::new();
        for p in [&p1, &p2] {
            let start = rendered.len();
            let head = pod_item_parts(&mut rendered, p);
            spans.push((start, start + head, rendered.len()));
        }
        let parts: Vec<PodItemParts<'_>> = spans
            .iter()
            .map(|&(start, mid, end)| PodItemParts {
                head: &rendered[start..mid],
                tail: &rendered[mid..end],
            })
            .collect();
        let mut from_parts = Vec::new();
        pod_metrics_list_from_parts(&mut from_parts, parts.into_iter().zip([&l1, &l2]), NOW);
        assert_eq!(text(from_parts), text(whole));
    }

    #[test]
    fn the_creation_and_labels_length_is_what_is_written() {
        for labels in [
            Labels::default(),
            Labels::from_pairs([("app", "web"), ("tier", "a \"quoted\" value")]),
        ] {
            let mut out = b"before".to_vec();
            creation_and_labels(&mut out, &labels, &gofmt::rfc3339(NOW));
            assert_eq!(out.len() - 6, creation_and_labels_len(&labels));
        }
    }

    #[test]
    fn empty_lists_have_an_empty_items_array() {
        let mut out = Vec::new();
        node_metrics_list(&mut out, std::iter::empty(), NOW);
        assert_eq!(
            text(out),
            "{\"kind\":\"NodeMetricsList\",\"apiVersion\":\"metrics.k8s.io/v1beta1\",\"metadata\":{},\"items\":[]}\n"
        );
        let mut out = Vec::new();
        pod_metrics_list(&mut out, std::iter::empty(), NOW);
        assert_eq!(
            text(out),
            "{\"kind\":\"PodMetricsList\",\"apiVersion\":\"metrics.k8s.io/v1beta1\",\"metadata\":{},\"items\":[]}\n"
        );
    }

    #[test]
    fn rendering_appends_to_existing_buffer_contents() {
        let mut out = b"prefix".to_vec();
        node_metrics(&mut out, &node("n"), &Labels::default(), NOW);
        assert!(out.starts_with(b"prefix{\"kind\":\"NodeMetrics\""));
    }

    #[test]
    fn status_is_a_kubernetes_failure_object() {
        let mut out = Vec::new();
        status(&mut out, 400, "BadRequest", "unable to parse \"a\" <x>");
        assert_eq!(
            text(out),
            concat!(
                r#"{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","#,
                r#""message":"unable to parse \"a\" \u003cx\u003e","reason":"BadRequest","code":400}"#,
                "\n"
            )
        );
    }

    #[test]
    fn status_leaves_out_empty_fields() {
        let mut out = Vec::new();
        status(&mut out, 0, "", "");
        assert_eq!(
            text(out),
            "{\"kind\":\"Status\",\"apiVersion\":\"v1\",\"metadata\":{},\"status\":\"Failure\"}\n"
        );
    }

    #[test]
    fn not_found_status_names_the_group_resource_and_object() {
        let mut out = Vec::new();
        status_not_found(&mut out, "metrics.k8s.io", "nodemetrics", "node-9");
        assert_eq!(
            text(out),
            concat!(
                r#"{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","#,
                r#""message":"nodemetrics.metrics.k8s.io \"node-9\" not found","reason":"NotFound","#,
                r#""details":{"name":"node-9","group":"metrics.k8s.io","kind":"nodemetrics"},"code":404}"#,
                "\n"
            )
        );
        let mut out = Vec::new();
        status_not_found(&mut out, "", "pod", "web-0");
        assert_eq!(
            text(out),
            concat!(
                r#"{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","#,
                r#""message":"pod \"web-0\" not found","reason":"NotFound","#,
                r#""details":{"name":"web-0","kind":"pod"},"code":404}"#,
                "\n"
            )
        );
    }

    proptest::proptest! {
        #[test]
        fn any_pod_renders_as_json_carrying_its_values(
            namespace in proptest::prelude::any::<String>(),
            name in proptest::prelude::any::<String>(),
            label in proptest::prelude::any::<(String, String)>(),
            container in proptest::prelude::any::<String>(),
            cpu in proptest::prelude::any::<u64>(),
            memory in proptest::prelude::any::<u64>(),
            timestamp in proptest::prelude::any::<i64>(),
            window in proptest::prelude::any::<i64>(),
        ) {
            let mut p = pod(&namespace, &name, &[(&container, cpu, memory)]);
            p.timestamp = timestamp;
            p.window = window;
            let labels = Labels::from_pairs([label.clone()]);
            let mut out = Vec::new();
            pod_metrics_list(&mut out, [(&p, &labels)].into_iter(), timestamp);
            let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
            let item = &v["items"][0];
            proptest::prop_assert_eq!(item["metadata"]["name"].as_str(), Some(name.as_str()));
            proptest::prop_assert_eq!(item["metadata"]["namespace"].as_str(), Some(namespace.as_str()));
            proptest::prop_assert_eq!(item["metadata"]["labels"][&label.0].as_str(), Some(label.1.as_str()));
            proptest::prop_assert_eq!(item["containers"][0]["name"].as_str(), Some(container.as_str()));
            proptest::prop_assert_eq!(
                item["metadata"]["creationTimestamp"].as_str(),
                item["timestamp"].as_str()
            );
        }
    }
}
