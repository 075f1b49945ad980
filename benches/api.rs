//! Cost of serving list requests end to end inside the process: routing, the snapshot/view join,
//! selectors, freshness accounting and rendering. Scenarios: "1000 nodes x 30 pods" (all pods, one
//! namespace, a label-selected subset, all nodes).

/// The allocator the server binary runs with, so the figures are the server's.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use http::Method;
use metrics_server::api::auth::Auth;
use metrics_server::api::health::HealthConfig;
use metrics_server::api::routes::{ClusterLookup, ClusterSource, Router};
use metrics_server::model::{ContainerScrape, Labels, MetricsPoint, Name, NodeScrape, PodScrape};
use metrics_server::store::{Store, StoreConfig};
use metrics_server::telemetry::Telemetry;

const SECOND: i64 = 1_000_000_000;
const T0: i64 = 1_780_000_000 * SECOND;
const NODES: usize = 1000;
const PODS_PER_NODE: usize = 30;
const NAMESPACES: usize = 50;

struct Cluster {
    nodes: BTreeMap<String, Labels>,
    /// Pods by namespace, then name, so a lookup borrows its keys and allocates nothing (as the
    /// real view's lookups do).
    pods: HashMap<String, HashMap<String, Labels>>,
}

impl ClusterLookup for Cluster {
    fn node_labels(&self, name: &str) -> Option<&Labels> {
        self.nodes.get(name)
    }
    fn running_pod_labels(&self, namespace: &str, name: &str) -> Option<&Labels> {
        self.pods.get(namespace)?.get(name)
    }
}

struct Source(Arc<Cluster>);

impl ClusterSource for Source {
    fn view(&self) -> Arc<dyn ClusterLookup> {
        Arc::clone(&self.0) as Arc<dyn ClusterLookup>
    }
    fn is_synced(&self) -> bool {
        true
    }
}

fn scrape(node: usize, at: i64, cpu: u64) -> NodeScrape<'static> {
    NodeScrape {
        node: Some(MetricsPoint {
            start_time: 0,
            timestamp: at,
            cumulative_cpu_used: cpu * 8,
            memory_usage: 8 << 30,
        }),
        pods: (0..PODS_PER_NODE)
            .map(|p| PodScrape {
                namespace: Cow::Owned(format!("ns-{:02}", (node * PODS_PER_NODE + p) % NAMESPACES)),
                name: Cow::Owned(format!("pod-{node:04}-{p:02}")),
                containers: smallvec::smallvec![ContainerScrape {
                    name: Cow::Borrowed("app"),
                    point: MetricsPoint {
                        start_time: T0 - 3600 * SECOND,
                        timestamp: at,
                        cumulative_cpu_used: cpu,
                        memory_usage: 100 << 20,
                    },
                }],
            })
            .collect(),
    }
}

fn router() -> Router {
    let store = Arc::new(Store::new(StoreConfig::from_resolution(
        Duration::from_secs(15),
    )));
    let mut cluster = Cluster {
        nodes: BTreeMap::new(),
        pods: HashMap::new(),
    };
    for n in 0..NODES {
        let name = Name::from(format!("node-{n:04}"));
        store.write_node(&name, &scrape(n, T0, 1_000_000_000), T0);
        let later = T0 + 15 * SECOND;
        store.write_node(&name, &scrape(n, later, 2_000_000_000), later);
        cluster.nodes.insert(
            name.to_string(),
            Labels::from_pairs([("kubernetes.io/hostname", name.to_string())]),
        );
        for p in 0..PODS_PER_NODE {
            cluster
                .pods
                .entry(format!("ns-{:02}", (n * PODS_PER_NODE + p) % NAMESPACES))
                .or_default()
                .insert(
                    format!("pod-{n:04}-{p:02}"),
                    Labels::from_pairs([("app", format!("app-{}", p % 10))]),
                );
        }
    }
    Router::new(
        store,
        Arc::new(Source(Arc::new(cluster))),
        Arc::new(Telemetry::new()),
        None,
        Auth::default(),
        HealthConfig {
            resolution: Duration::from_secs(15),
            startup_grace: Duration::from_secs(30),
            started: T0,
        },
    )
}

fn lists(c: &mut Criterion) {
    let router = router();
    let now = T0 + 20 * SECOND;
    let mut group = c.benchmark_group("1000 nodes x 30 pods");
    for (name, path, query) in [
        ("all pods", "/apis/metrics.k8s.io/v1beta1/pods", ""),
        (
            "one namespace",
            "/apis/metrics.k8s.io/v1beta1/namespaces/ns-07/pods",
            "",
        ),
        (
            "pods by label",
            "/apis/metrics.k8s.io/v1beta1/pods",
            "labelSelector=app%3Dapp-3",
        ),
        ("all nodes", "/apis/metrics.k8s.io/v1beta1/nodes", ""),
    ] {
        group.bench_function(name, |b| {
            b.iter(|| black_box(router.respond(&Method::GET, path, query, now)))
        });
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20);
    targets = lists
}
criterion_main!(benches);
