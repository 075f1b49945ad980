//! What `kubectl get nodemetrics` / `kubectl get podmetrics -A` receive: the header kubectl sends
//! negotiates a v1 `Table`, and the table's rows line up with the objects the JSON form serves.

use metrics_server::api::negotiate::{negotiate, Format, TableVersion};
use metrics_server::api::table::{self, IncludeObject};
use metrics_server::api::{openapi, render};
use metrics_server::model::{ContainerMetrics, Labels, Name, NodeMetrics, PodMetrics, Usage};

const S: i64 = 1_000_000_000;
const NOW: i64 = 1_769_539_713 * S;

/// What kubectl (1.2x and later) sends for `kubectl get`.
const KUBECTL_ACCEPT: &str = "application/json;as=Table;v=v1;g=meta.k8s.io,application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json";

fn pods() -> Vec<(PodMetrics, Labels)> {
    [("default", "web-0", 2), ("kube-system", "coredns-0", 1)]
        .into_iter()
        .map(|(namespace, name, containers)| {
            (
                PodMetrics {
                    namespace: Name::from(namespace),
                    name: Name::from(name),
                    node: Name::from("node-1"),
                    timestamp: NOW - 5 * S,
                    window: 15 * S,
                    containers: (0..containers)
                        .map(|c| ContainerMetrics {
                            name: Name::from(format!("c{c}")),
                            usage: Usage {
                                cpu_nanocores: 250_000_000,
                                memory_bytes: 64 << 20,
                            },
                        })
                        .collect(),
                },
                Labels::from_pairs([("app", name)]),
            )
        })
        .collect()
}

#[test]
fn kubectl_get_podmetrics_receives_a_table_of_summed_usage() {
    let format = negotiate(Some(KUBECTL_ACCEPT)).unwrap();
    let Format::Table(version) = format else {
        panic!("expected a table, got {format:?}");
    };
    assert_eq!(version, TableVersion::V1);
    assert_eq!(format.content_type(), "application/json");

    let items = pods();
    let mut out = Vec::new();
    table::pod_metrics_table(
        &mut out,
        version,
        IncludeObject::from_query(None).unwrap(),
        items.iter().map(|(m, l)| (m, l)),
        NOW,
    );
    let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(v["kind"], "Table");
    assert_eq!(v["apiVersion"], "meta.k8s.io/v1");
    let columns: Vec<&str> = v["columnDefinitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(columns, ["Name", "cpu", "memory", "Window"]);
    let rows = v["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 2);
    assert_eq!(
        rows[0]["cells"],
        serde_json::json!(["web-0", "500m", "128Mi", "15s"])
    );
    assert_eq!(
        rows[1]["cells"],
        serde_json::json!(["coredns-0", "250m", "64Mi", "15s"])
    );
    // kubectl -A takes NAMESPACE from each row's metadata.
    assert_eq!(rows[1]["object"]["metadata"]["namespace"], "kube-system");
}

#[test]
fn table_rows_with_the_whole_object_match_the_json_form() {
    let items = pods();
    let mut out = Vec::new();
    table::pod_metrics_table(
        &mut out,
        TableVersion::V1,
        IncludeObject::from_query(Some("Object")).unwrap(),
        items.iter().map(|(m, l)| (m, l)),
        NOW,
    );
    let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
    for ((metrics, labels), row) in items.iter().zip(v["rows"].as_array().unwrap()) {
        let mut json = Vec::new();
        render::pod_metrics(&mut json, metrics, labels, NOW);
        let object: serde_json::Value = serde_json::from_slice(&json).unwrap();
        assert_eq!(row["object"], object);
    }
}

#[test]
fn a_single_node_is_a_one_row_table() {
    let node = NodeMetrics {
        name: Name::from("node-1"),
        timestamp: NOW - S,
        window: 20 * S,
        usage: Usage {
            cpu_nanocores: 1_500_000_000,
            memory_bytes: 3 << 30,
        },
    };
    let labels = Labels::default();
    let mut out = Vec::new();
    table::node_metrics_table(
        &mut out,
        TableVersion::V1beta1,
        IncludeObject::Metadata,
        std::iter::once((&node, &labels)),
        NOW,
    );
    let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(v["apiVersion"], "meta.k8s.io/v1beta1");
    assert_eq!(
        v["rows"][0]["cells"],
        serde_json::json!(["node-1", "1500m", "3Gi", "20s"])
    );
    assert!(v["rows"][0]["object"]["metadata"]
        .get("namespace")
        .is_none());
}

#[test]
fn openapi_documents_are_valid_json_naming_the_metrics_kinds() {
    for doc in [openapi::v2(), openapi::v3_group()] {
        let v: serde_json::Value = serde_json::from_slice(doc).unwrap();
        let text = v.to_string();
        for kind in [
            "NodeMetrics",
            "NodeMetricsList",
            "PodMetrics",
            "PodMetricsList",
            "ContainerMetrics",
        ] {
            assert!(
                text.contains(&format!("io.k8s.metrics.pkg.apis.metrics.v1beta1.{kind}")),
                "{kind}"
            );
        }
    }
    let index: serde_json::Value = serde_json::from_slice(openapi::v3_index()).unwrap();
    assert!(index["paths"]["apis/metrics.k8s.io/v1beta1"]["serverRelativeURL"].is_string());
}
