//! The `meta.k8s.io` `Table` form of the metrics resources, what `kubectl get nodemetrics` and
//! `kubectl get podmetrics` ask for with `Accept: application/json;as=Table;v=v1;g=meta.k8s.io`.
//!
//! The columns and cells are those of upstream's table convertor: `Name` (format `name`), one
//! column per resource in sorted order, `cpu` then `memory` (format `quantity`), and `Window`
//! (format `duration`). A pod's usage cell is the sum over its containers, as a canonical quantity
//! of the same kind as a container's. Every row carries the object as the `includeObject` query
//! parameter asks: its `PartialObjectMetadata` (the default, `Metadata`), the whole object
//! (`Object`) or `null` (`None`). A single object's table has one row.
//!
//! Upstream quirks kept: an empty table has `"columnDefinitions":null` and `"rows":null` (the
//! convertor builds the columns from its first item), and a table's `metadata` is an empty
//! `ListMeta`. One deliberate difference: a pod without containers shows `0` usage under the same
//! columns as every other row, where upstream would give that row (and, if it comes first, the
//! whole table) no resource columns.
//!
//! JSON is written straight into the caller's buffer with the functions the object renderer uses;
//! the creation time is formatted once per table.

use thiserror::Error;

use crate::api::gofmt::{self, push_go_quoted, write_duration};
use crate::api::json::write_str;
use crate::api::quantity::{write_cpu, write_memory};
use crate::api::render;
use crate::model::{Labels, NodeMetrics, PodMetrics, UnixNanos, Usage};

pub use crate::api::negotiate::{accepts_table, TableVersion};

/// What each row's `object` holds, from the `includeObject` query parameter.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum IncludeObject {
    /// `null`.
    None,
    /// The object's `PartialObjectMetadata` (kind, apiVersion and metadata only).
    #[default]
    Metadata,
    /// The whole object, with its own kind and apiVersion.
    Object,
}

/// `includeObject` had a value other than `None`, `Metadata` or `Object`. Callers answer
/// `400 Bad Request` (reason `BadRequest`) with the error's text as the `Status` message, which
/// is kube-apiserver's text for the same mistake.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
#[error(
    "Unable to convert to Table as requested: includeObject: Invalid value: {}: \
     must be 'Metadata', 'Object', 'None', or empty",
    go_quoted(value)
)]
pub struct InvalidIncludeObject {
    pub value: String,
}

fn go_quoted(value: &str) -> String {
    let mut quoted = String::with_capacity(value.len() + 2);
    push_go_quoted(&mut quoted, value);
    quoted
}

impl IncludeObject {
    /// Reads the `includeObject` query parameter (`None` when absent); an empty value is the
    /// default.
    pub fn from_query(value: Option<&str>) -> Result<Self, InvalidIncludeObject> {
        match value.unwrap_or("") {
            "" | "Metadata" => Ok(IncludeObject::Metadata),
            "None" => Ok(IncludeObject::None),
            "Object" => Ok(IncludeObject::Object),
            other => Err(InvalidIncludeObject {
                value: other.to_owned(),
            }),
        }
    }
}

/// Writes a `Table` of node metrics, one row per item in the order given.
pub fn node_metrics_table<'a>(
    out: &mut Vec<u8>,
    version: TableVersion,
    include: IncludeObject,
    items: impl Iterator<Item = (&'a NodeMetrics, &'a Labels)>,
    now: UnixNanos,
) {
    let created = gofmt::rfc3339(now);
    table(out, version, items, |out, (metrics, labels)| {
        row_start(out, &metrics.name);
        usage_cells(out, &metrics.usage);
        window_cell(out, metrics.window);
        out.extend_from_slice(br#"],"object":"#);
        match include {
            IncludeObject::None => out.extend_from_slice(b"null"),
            IncludeObject::Metadata => {
                partial_object_metadata(out, version, &metrics.name, None, labels, &created)
            }
            IncludeObject::Object => {
                render::node_metrics(out, metrics, labels, now);
                strip_newline(out);
            }
        }
        out.push(b'}');
    });
}

/// Writes a `Table` of pod metrics, one row per item in the order given.
pub fn pod_metrics_table<'a>(
    out: &mut Vec<u8>,
    version: TableVersion,
    include: IncludeObject,
    items: impl Iterator<Item = (&'a PodMetrics, &'a Labels)>,
    now: UnixNanos,
) {
    let created = gofmt::rfc3339(now);
    table(out, version, items, |out, (metrics, labels)| {
        row_start(out, &metrics.name);
        usage_cells(out, &pod_usage(metrics));
        window_cell(out, metrics.window);
        out.extend_from_slice(br#"],"object":"#);
        match include {
            IncludeObject::None => out.extend_from_slice(b"null"),
            IncludeObject::Metadata => partial_object_metadata(
                out,
                version,
                &metrics.name,
                Some(&metrics.namespace),
                labels,
                &created,
            ),
            IncludeObject::Object => {
                render::pod_metrics(out, metrics, labels, now);
                strip_newline(out);
            }
        }
        out.push(b'}');
    });
}

/// The sum of a pod's container usage. Saturates rather than wraps: a sum past `u64::MAX` is far
/// beyond any real pod and upstream's arbitrary-precision sum would not fit a cell either.
pub fn pod_usage(metrics: &PodMetrics) -> Usage {
    metrics
        .containers
        .iter()
        .fold(Usage::default(), |sum, container| Usage {
            cpu_nanocores: sum
                .cpu_nanocores
                .saturating_add(container.usage.cpu_nanocores),
            memory_bytes: sum
                .memory_bytes
                .saturating_add(container.usage.memory_bytes),
        })
}

// === rendering ===

const COLUMNS: &[u8] = concat!(
    r#""columnDefinitions":["#,
    r#"{"name":"Name","type":"string","format":"name","description":"Name of the resource","priority":0},"#,
    r#"{"name":"cpu","type":"string","format":"quantity","description":"","priority":0},"#,
    r#"{"name":"memory","type":"string","format":"quantity","description":"","priority":0},"#,
    r#"{"name":"Window","type":"string","format":"duration","description":"","priority":0}],"#,
)
.as_bytes();

fn table<T>(
    out: &mut Vec<u8>,
    version: TableVersion,
    items: impl Iterator<Item = T>,
    mut row: impl FnMut(&mut Vec<u8>, T),
) {
    out.extend_from_slice(br#"{"kind":"Table","apiVersion":""#);
    out.extend_from_slice(version.api_version().as_bytes());
    out.extend_from_slice(br#"","metadata":{},"#);
    let mut items = items.peekable();
    if items.peek().is_none() {
        out.extend_from_slice(b"\"columnDefinitions\":null,\"rows\":null}\n");
        return;
    }
    out.extend_from_slice(COLUMNS);
    out.extend_from_slice(br#""rows":["#);
    let mut first = true;
    for item in items {
        if !first {
            out.push(b',');
        }
        first = false;
        row(out, item);
    }
    out.extend_from_slice(b"]}\n");
}

/// `{"cells":["<name>"`.
fn row_start(out: &mut Vec<u8>, name: &str) {
    out.extend_from_slice(br#"{"cells":["#);
    write_str(out, name);
}

/// `,"<cpu>","<memory>"`.
fn usage_cells(out: &mut Vec<u8>, usage: &Usage) {
    out.extend_from_slice(br#",""#);
    write_cpu(out, usage.cpu_nanocores);
    out.extend_from_slice(br#"",""#);
    write_memory(out, usage.memory_bytes);
    out.push(b'"');
}

/// `,"<window>"`.
fn window_cell(out: &mut Vec<u8>, window: i64) {
    out.extend_from_slice(br#",""#);
    write_duration(out, window);
    out.push(b'"');
}

/// A row's `PartialObjectMetadata`, typed with the table's own group version as upstream does.
fn partial_object_metadata(
    out: &mut Vec<u8>,
    version: TableVersion,
    name: &str,
    namespace: Option<&str>,
    labels: &Labels,
    created: &[u8; 20],
) {
    out.extend_from_slice(br#"{"kind":"PartialObjectMetadata","apiVersion":""#);
    out.extend_from_slice(version.api_version().as_bytes());
    out.extend_from_slice(br#"","metadata":{"name":"#);
    write_str(out, name);
    if let Some(namespace) = namespace {
        out.extend_from_slice(br#","namespace":"#);
        write_str(out, namespace);
    }
    render::creation_and_labels(out, labels, created);
    out.push(b'}');
}

/// Drops the newline the object renderer ends a response body with, so the object can be nested.
fn strip_newline(out: &mut Vec<u8>) {
    if out.last() == Some(&b'\n') {
        out.pop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{ContainerMetrics, Name};

    const S: i64 = 1_000_000_000;
    /// 2026-01-27T18:48:33Z.
    const NOW: i64 = 1_769_539_713 * S;

    fn node(name: &str) -> NodeMetrics {
        NodeMetrics {
            name: Name::from(name),
            timestamp: NOW - 3 * S,
            window: 15_012_000_000,
            usage: Usage {
                cpu_nanocores: 487_558_164,
                memory_bytes: 732_212 * 1024,
            },
        }
    }

    fn pod(containers: &[(u64, u64)]) -> PodMetrics {
        PodMetrics {
            namespace: Name::from("kube-system"),
            name: Name::from("coredns-0"),
            node: Name::from("node-1"),
            timestamp: NOW - 3 * S,
            window: 1_000,
            containers: containers
                .iter()
                .enumerate()
                .map(|(i, &(cpu, memory))| ContainerMetrics {
                    name: Name::from(format!("c{i}")),
                    usage: Usage {
                        cpu_nanocores: cpu,
                        memory_bytes: memory,
                    },
                })
                .collect(),
        }
    }

    fn json(out: &[u8]) -> serde_json::Value {
        assert_eq!(out.last(), Some(&b'\n'));
        serde_json::from_slice(out).unwrap()
    }

    #[test]
    fn node_table_has_upstream_columns_and_cells() {
        let labels = Labels::from_pairs([("kubernetes.io/os", "linux")]);
        let n = node("node-1");
        let mut out = Vec::new();
        node_metrics_table(
            &mut out,
            TableVersion::V1,
            IncludeObject::Metadata,
            [(&n, &labels)].into_iter(),
            NOW,
        );
        assert_eq!(
            String::from_utf8(out).unwrap(),
            concat!(
                r#"{"kind":"Table","apiVersion":"meta.k8s.io/v1","metadata":{},"columnDefinitions":["#,
                r#"{"name":"Name","type":"string","format":"name","description":"Name of the resource","priority":0},"#,
                r#"{"name":"cpu","type":"string","format":"quantity","description":"","priority":0},"#,
                r#"{"name":"memory","type":"string","format":"quantity","description":"","priority":0},"#,
                r#"{"name":"Window","type":"string","format":"duration","description":"","priority":0}],"#,
                r#""rows":[{"cells":["node-1","487558164n","732212Ki","15.012s"],"#,
                r#""object":{"kind":"PartialObjectMetadata","apiVersion":"meta.k8s.io/v1","#,
                r#""metadata":{"name":"node-1","creationTimestamp":"2026-01-27T18:48:33Z","#,
                r#""labels":{"kubernetes.io/os":"linux"}}}}]}"#,
                "\n"
            )
        );
    }

    #[test]
    fn pod_cells_sum_the_containers_usage() {
        // 10m + 10m + 0 and 5Mi + 10Mi + 10Mi, each sum in canonical form.
        let p = pod(&[(10_000_000, 5 << 20), (10_000_000, 10 << 20), (0, 10 << 20)]);
        let mut out = Vec::new();
        pod_metrics_table(
            &mut out,
            TableVersion::V1,
            IncludeObject::None,
            [(&p, &Labels::default())].into_iter(),
            NOW,
        );
        let v = json(&out);
        assert_eq!(
            v["rows"][0]["cells"],
            serde_json::json!(["coredns-0", "20m", "25Mi", "1µs"])
        );
        assert!(v["rows"][0]["object"].is_null());
    }

    #[test]
    fn pod_rows_carry_namespace_in_their_metadata() {
        let p = pod(&[(1, 1)]);
        let labels = Labels::from_pairs([("app", "dns")]);
        let mut out = Vec::new();
        pod_metrics_table(
            &mut out,
            TableVersion::V1beta1,
            IncludeObject::Metadata,
            [(&p, &labels)].into_iter(),
            NOW,
        );
        let v = json(&out);
        assert_eq!(v["apiVersion"], "meta.k8s.io/v1beta1");
        let object = &v["rows"][0]["object"];
        assert_eq!(object["apiVersion"], "meta.k8s.io/v1beta1");
        assert_eq!(object["kind"], "PartialObjectMetadata");
        assert_eq!(object["metadata"]["namespace"], "kube-system");
        assert_eq!(object["metadata"]["labels"]["app"], "dns");
    }

    #[test]
    fn include_object_embeds_the_whole_typed_object() {
        let p = pod(&[(1, 1)]);
        let mut out = Vec::new();
        pod_metrics_table(
            &mut out,
            TableVersion::V1,
            IncludeObject::Object,
            [(&p, &Labels::default())].into_iter(),
            NOW,
        );
        let v = json(&out);
        let object = &v["rows"][0]["object"];
        assert_eq!(object["kind"], "PodMetrics");
        assert_eq!(object["apiVersion"], "metrics.k8s.io/v1beta1");
        assert_eq!(object["containers"][0]["usage"]["cpu"], "1n");
    }

    #[test]
    fn an_empty_table_has_null_columns_and_rows() {
        let mut out = Vec::new();
        node_metrics_table(
            &mut out,
            TableVersion::V1,
            IncludeObject::Metadata,
            std::iter::empty(),
            NOW,
        );
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "{\"kind\":\"Table\",\"apiVersion\":\"meta.k8s.io/v1\",\"metadata\":{},\"columnDefinitions\":null,\"rows\":null}\n"
        );
    }

    #[test]
    fn a_pod_without_containers_shows_zero_usage() {
        let p = pod(&[]);
        let mut out = Vec::new();
        pod_metrics_table(
            &mut out,
            TableVersion::V1,
            IncludeObject::None,
            [(&p, &Labels::default())].into_iter(),
            NOW,
        );
        let v = json(&out);
        assert_eq!(
            v["rows"][0]["cells"],
            serde_json::json!(["coredns-0", "0", "0", "1µs"])
        );
    }

    #[test]
    fn include_object_parses_the_three_values_and_rejects_others() {
        assert_eq!(IncludeObject::from_query(None), Ok(IncludeObject::Metadata));
        assert_eq!(
            IncludeObject::from_query(Some("")),
            Ok(IncludeObject::Metadata)
        );
        assert_eq!(
            IncludeObject::from_query(Some("None")),
            Ok(IncludeObject::None)
        );
        assert_eq!(
            IncludeObject::from_query(Some("Object")),
            Ok(IncludeObject::Object)
        );
        let err = IncludeObject::from_query(Some("object")).unwrap_err();
        assert_eq!(
            err.to_string(),
            "Unable to convert to Table as requested: includeObject: Invalid value: \"object\": must be 'Metadata', 'Object', 'None', or empty"
        );
    }

    #[test]
    fn sums_saturate_instead_of_wrapping() {
        let p = pod(&[(u64::MAX, 1), (1, u64::MAX)]);
        assert_eq!(
            pod_usage(&p),
            Usage {
                cpu_nanocores: u64::MAX,
                memory_bytes: u64::MAX
            }
        );
    }

    proptest::proptest! {
        #[test]
        fn any_names_and_values_render_as_valid_json(
            name in proptest::prelude::any::<String>(),
            label in proptest::prelude::any::<(String, String)>(),
            cpu in proptest::prelude::any::<u64>(),
            memory in proptest::prelude::any::<u64>(),
            window in proptest::prelude::any::<i64>(),
        ) {
            let mut p = pod(&[(cpu, memory)]);
            p.name = Name::from(name.as_str());
            p.window = window;
            let labels = Labels::from_pairs([label.clone()]);
            for include in [IncludeObject::None, IncludeObject::Metadata, IncludeObject::Object] {
                let mut out = Vec::new();
                pod_metrics_table(&mut out, TableVersion::V1, include, [(&p, &labels)].into_iter(), NOW);
                let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
                proptest::prop_assert_eq!(v["rows"][0]["cells"][0].as_str(), Some(name.as_str()));
                proptest::prop_assert_eq!(v["rows"][0]["cells"].as_array().map(Vec::len), Some(4));
            }
        }
    }
}
