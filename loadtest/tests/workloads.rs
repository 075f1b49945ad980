//! The fleet's workload model as the API stand-in and the kubelets show it, and as the harness
//! aims its HPA queries at it: every HPA path selects exactly one workload's pods, tens of them,
//! and every kubelet serves the pods the cluster says it runs.

use std::collections::{BTreeMap, BTreeSet};

use kubelet_fleet::fleet::Fleet;
use kubelet_fleet::harness::apiload::Stream;
use kubelet_fleet::harness::case::ShapeSpec;
use kubelet_fleet::kubelet::workload::{Catalogue, DEPLOYMENT_REPLICAS, STATEFULSET_REPLICAS};

const NODES: u64 = 80;
const PODS_PER_NODE: u64 = 20;
const SEED: u64 = 11;

/// `(namespace, key, value)` of an HPA path `.../namespaces/NS/pods?labelSelector=K%3DV`.
fn selection(path: &str) -> (String, String, String) {
    let (before, query) = path.split_once('?').expect("a query");
    let namespace = before
        .strip_prefix("/apis/metrics.k8s.io/v1beta1/namespaces/")
        .and_then(|r| r.strip_suffix("/pods"))
        .expect("a namespaced pod list");
    let selector = form_urlencoded::parse(query.as_bytes())
        .find(|(k, _)| k == "labelSelector")
        .map(|(_, v)| v.into_owned())
        .expect("a label selector");
    let (key, value) = selector.split_once('=').expect("an equality selector");
    (namespace.to_owned(), key.to_owned(), value.to_owned())
}

#[tokio::test]
async fn every_hpa_path_selects_one_workloads_pods_as_the_cluster_and_kubelets_show_them() {
    let dir = tempfile::tempdir().expect("dir");
    let fleet = Fleet::builder()
        .nodes(NODES)
        .pods_per_node(PODS_PER_NODE)
        .seed(SEED)
        .port(0)
        .start(dir.path())
        .await
        .expect("fleet starts");
    let pods = fleet.cluster().list_pods().items;
    assert_eq!(pods.len() as u64, NODES * PODS_PER_NODE);

    // The harness rebuilds the catalogue from the case's seed and size alone.
    let catalogue = Catalogue::new(SEED, NODES, PODS_PER_NODE);
    let spec: ShapeSpec = toml::from_str("kind = \"hpa\"").expect("spec");
    let stream = Stream::for_shape(&spec, &catalogue);
    assert_eq!(stream.paths.len(), catalogue.hpa_targets().count());
    let mut covered = 0;
    for (path, workload) in stream.paths.iter().zip(catalogue.hpa_targets()) {
        let (namespace, key, value) = selection(path);
        let selected: Vec<_> = pods
            .iter()
            .filter(|p| p.namespace == namespace && p.labels.get(&key) == Some(&value))
            .collect();
        assert_eq!(
            selected.len() as u64,
            workload.replicas,
            "{path} selects {} pods",
            selected.len()
        );
        let (lo, hi) = if selected
            .iter()
            .all(|p| p.labels.contains_key("pod-template-hash"))
        {
            DEPLOYMENT_REPLICAS
        } else {
            STATEFULSET_REPLICAS
        };
        assert!(
            (lo..=hi + 1).contains(&(selected.len() as u64)),
            "{path}: {} pods",
            selected.len()
        );
        // Replicas spread over distinct nodes.
        let nodes: BTreeSet<_> = selected.iter().map(|p| p.node.as_str()).collect();
        assert_eq!(nodes.len(), selected.len(), "{path}");
        covered += selected.len();
    }
    let daemon_pods = NODES as usize * catalogue.daemonsets().len();
    assert_eq!(
        covered + daemon_pods,
        pods.len(),
        "every pod is some HPA's or a DaemonSet's"
    );

    // Every kubelet serves exactly the pods the API stand-in places on its node.
    for (node, _) in fleet.addresses() {
        let served: BTreeMap<(String, String), Vec<String>> = fleet
            .pods_on(&node)
            .into_iter()
            .map(|(ns, name, containers)| ((ns, name), containers))
            .collect();
        let listed: BTreeMap<(String, String), Vec<String>> = fleet
            .cluster()
            .pods_on_node(&node)
            .iter()
            .map(|p| ((p.namespace.clone(), p.name.clone()), p.containers.clone()))
            .collect();
        assert_eq!(served, listed, "{node}");
    }
    fleet.shutdown().await;
}
