//! Discovery's hot paths: decoding a list page of pods, and applying a large initial list.
//!
//! Scenarios: "500-pod page" decoded into the slim wire type and, for comparison, into the full
//! `k8s-openapi` Pod; "30,000 pods x 1,000 nodes initial list" applied to the writer.

/// The allocator the server binary runs with, so the figures are the server's.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use k8s_openapi::api::core::v1::Pod;
use kube::core::ObjectList;
use kube::runtime::watcher::Event;
use metrics_server::discovery::internals::{NodeObject, PodObject, Reflector, TargetRules, Update};
use serde_json::json;

const PAGE: usize = 500;

/// A pod as the API server lists it, with the fields discovery never reads.
fn pod_json(i: usize) -> serde_json::Value {
    json!({
        "metadata": {
            "name": format!("web-7d9f8b6c5-{i:05}"), "namespace": format!("team-{}", i % 40),
            "uid": format!("4f1c2a9e-0000-4000-8000-{i:012}"), "resourceVersion": format!("{}", 100000 + i),
            "creationTimestamp": "2026-01-27T18:48:33Z",
            "labels": {"app": "web", "pod-template-hash": "7d9f8b6c5", "tier": "frontend"},
            "annotations": {"kubectl.kubernetes.io/restartedAt": "2026-01-27T18:40:00Z"},
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web-7d9f8b6c5",
                                 "uid": "9d0c", "controller": true, "blockOwnerDeletion": true}],
            "managedFields": [
                {"manager": "kube-controller-manager", "operation": "Update", "apiVersion": "v1",
                 "time": "2026-01-27T18:48:33Z", "fieldsType": "FieldsV1",
                 "fieldsV1": {"f:metadata": {"f:labels": {".": {}, "f:app": {}}}, "f:spec": {"f:containers": {}}}},
                {"manager": "kubelet", "operation": "Update", "apiVersion": "v1", "subresource": "status",
                 "time": "2026-01-27T18:48:40Z", "fieldsType": "FieldsV1",
                 "fieldsV1": {"f:status": {"f:conditions": {}, "f:containerStatuses": {}, "f:phase": {}}}}
            ]
        },
        "spec": {
            "nodeName": format!("node-{:04}", i % 1000),
            "containers": [{
                "name": "web", "image": "registry.example/web:1.2.3",
                "ports": [{"containerPort": 8080, "protocol": "TCP"}],
                "env": [{"name": "MODE", "value": "production"}, {"name": "LOG", "value": "info"}],
                "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}, "limits": {"memory": "256Mi"}},
                "volumeMounts": [{"name": "kube-api-access", "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount", "readOnly": true}],
                "terminationMessagePath": "/dev/termination-log", "imagePullPolicy": "IfNotPresent"
            }],
            "volumes": [{"name": "kube-api-access", "projected": {"sources": [{"serviceAccountToken": {"path": "token", "expirationSeconds": 3607}}]}}],
            "restartPolicy": "Always", "dnsPolicy": "ClusterFirst", "serviceAccountName": "default",
            "tolerations": [{"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300}]
        },
        "status": {
            "phase": "Running", "hostIP": "10.0.0.1", "podIP": "10.244.1.7", "startTime": "2026-01-27T18:48:33Z",
            "conditions": [{"type": "Ready", "status": "True", "lastTransitionTime": "2026-01-27T18:48:40Z"},
                           {"type": "PodScheduled", "status": "True", "lastTransitionTime": "2026-01-27T18:48:33Z"}],
            "containerStatuses": [{"name": "web", "ready": true, "restartCount": 0, "image": "registry.example/web:1.2.3",
                                   "imageID": "registry.example/web@sha256:abc", "containerID": "containerd://def",
                                   "started": true, "state": {"running": {"startedAt": "2026-01-27T18:48:39Z"}}}]
        }
    })
}

fn page() -> Vec<u8> {
    let items: Vec<_> = (0..PAGE).map(pod_json).collect();
    serde_json::to_vec(&json!({
        "kind": "PodList", "apiVersion": "v1",
        "metadata": {"resourceVersion": "123456"},
        "items": items,
    }))
    .expect("a JSON value serialises")
}

fn decode(c: &mut Criterion) {
    let body = page();
    let mut group = c.benchmark_group("decode 500-pod page");
    group.throughput(Throughput::Elements(PAGE as u64));
    group.bench_function("slim wire type", |b| {
        b.iter(|| serde_json::from_slice::<ObjectList<PodObject>>(&body).expect("valid page"))
    });
    group.bench_function("full k8s-openapi Pod", |b| {
        b.iter(|| serde_json::from_slice::<ObjectList<Pod>>(&body).expect("valid page"))
    });
    group.finish();
}

fn initial_list(c: &mut Criterion) {
    const NODES: usize = 1_000;
    const PODS: usize = 30_000;
    let rules = TargetRules {
        preferred_address_types: vec!["InternalIP".into()],
        kubelet_port: 10250,
        use_node_status_port: false,
    };
    let pods: Vec<PodObject> = (0..PODS)
        .map(|i| {
            let mut pod = PodObject::new(&format!("team-{}", i % 40), &format!("web-{i:06}"));
            pod.labels.insert("app".into(), format!("app-{}", i / 30));
            pod.labels
                .insert("pod-template-hash".into(), "7d9f8b6c5".into());
            pod.node_name = Some(format!("node-{:04}", i % NODES));
            pod.phase = Some("Running".into());
            pod
        })
        .collect();
    let nodes: Vec<NodeObject> = (0..NODES)
        .map(|i| NodeObject::new(&format!("node-{i:04}")))
        .collect();

    let mut group = c.benchmark_group("initial list");
    group.throughput(Throughput::Elements((PODS + NODES) as u64));
    group.sample_size(10);
    group.bench_function("30,000 pods x 1,000 nodes", |b| {
        b.iter_batched(
            || (nodes.clone(), pods.clone()),
            |(nodes, pods)| {
                let mut reflector = Reflector::new(rules.clone());
                reflector.handle(Update::Node(Ok(Event::Init)));
                for node in nodes {
                    reflector.handle(Update::Node(Ok(Event::InitApply(node))));
                }
                reflector.handle(Update::Node(Ok(Event::InitDone)));
                reflector.handle(Update::Pod(Ok(Event::Init)));
                for pod in pods {
                    reflector.handle(Update::Pod(Ok(Event::InitApply(pod))));
                }
                reflector.handle(Update::Pod(Ok(Event::InitDone)));
                reflector
            },
            BatchSize::LargeInput,
        )
    });
    group.finish();
}

criterion_group!(benches, decode, initial_list);
criterion_main!(benches);
