//! A large simulated cluster for the list benches: a store filled by two scrapes of every node, and
//! the discovery view built by the real reflector from pod and node objects, so label lookups cost
//! what they cost in production.

use std::borrow::Cow;
use std::sync::Arc;
use std::time::Duration;

use kube::runtime::watcher::Event;
use metrics_server::api::auth::Auth;
use metrics_server::api::health::HealthConfig;
use metrics_server::api::routes::{ClusterLookup, ClusterSource, Router};
use metrics_server::discovery::internals::{
    NodeObject, PodObject, Reflector, Shared, TargetRules, Update,
};
use metrics_server::model::{ContainerScrape, MetricsPoint, Name, NodeScrape, PodNames, PodScrape};
use metrics_server::store::{Store, StoreConfig};
use metrics_server::telemetry::Telemetry;

pub const SECOND: i64 = 1_000_000_000;
pub const T0: i64 = 1_780_000_000 * SECOND;
/// Request time: five seconds after the second scrape.
#[allow(dead_code)] // Not every bench including this module asks at a fixed time.
pub const NOW: i64 = T0 + 20 * SECOND;
const NAMESPACES: usize = 50;
/// Pods per Deployment (they share their label set, as replicas do).
const REPLICAS: usize = 10;

pub struct Cluster {
    shared: Arc<Shared>,
}

impl ClusterSource for Cluster {
    fn view(&self) -> Arc<dyn ClusterLookup> {
        self.shared.view.load_full()
    }
    fn is_synced(&self) -> bool {
        true
    }
}

fn namespace(node: usize, pod: usize, pods_per_node: usize) -> String {
    format!("team-{:02}", (node * pods_per_node + pod) % NAMESPACES)
}

fn pod_name(node: usize, pod: usize) -> String {
    format!("web-{:05}-7d9f8b6c5-{node:05}{pod:02}", pod / REPLICAS)
}

fn scrape(node: usize, pods: usize, at: i64, cpu: u64) -> NodeScrape<'static> {
    NodeScrape {
        node: Some(MetricsPoint {
            start_time: 0,
            timestamp: at,
            cumulative_cpu_used: cpu * 8,
            memory_usage: 8 << 30,
        }),
        pods: (0..pods)
            .map(|p| PodScrape {
                namespace: Cow::Owned(namespace(node, p, pods)),
                name: Cow::Owned(pod_name(node, p)),
                containers: ["app", "istio-proxy"]
                    .iter()
                    .enumerate()
                    .map(|(c, name)| ContainerScrape {
                        name: Cow::Borrowed(name),
                        point: MetricsPoint {
                            start_time: T0 - 3600 * SECOND,
                            timestamp: at + c as i64 * 1_000_000,
                            cumulative_cpu_used: cpu + (node * 131 + p * 7 + c) as u64 * 1_000_003,
                            memory_usage: (100 << 20) + (node * 4096 + p * 512) as u64,
                        },
                    })
                    .collect(),
            })
            .collect(),
    }
}

/// A router over `nodes` nodes of `pods` two-container pods each, every pod Running and labelled.
pub fn router(nodes: usize, pods: usize) -> Router {
    // Discovery first, then the scrapes, as in a running server: the store takes each new pod's
    // names from the published view.
    let mut reflector = Reflector::new(TargetRules {
        preferred_address_types: vec!["InternalIP".into()],
        kubelet_port: 10250,
        use_node_status_port: false,
    });
    reflector.handle(Update::Node(Ok(Event::Init)));
    reflector.handle(Update::Pod(Ok(Event::Init)));
    for n in 0..nodes {
        let name = format!("node-{n:05}");
        let mut node = NodeObject::new(&name);
        node.labels
            .insert("kubernetes.io/hostname".into(), name.clone());
        node.labels.insert(
            "topology.kubernetes.io/zone".into(),
            format!("zone-{}", n % 3),
        );
        reflector.handle(Update::Node(Ok(Event::InitApply(node))));
        for p in 0..pods {
            let mut pod = PodObject::new(&namespace(n, p, pods), &pod_name(n, p));
            pod.labels
                .insert("app".into(), format!("web-{}", p / REPLICAS));
            pod.labels
                .insert("pod-template-hash".into(), "7d9f8b6c5".into());
            pod.labels
                .insert("security.istio.io/tlsMode".into(), "istio".into());
            pod.node_name = Some(name.clone());
            pod.phase = Some("Running".into());
            reflector.handle(Update::Pod(Ok(Event::InitApply(pod))));
        }
    }
    reflector.handle(Update::Node(Ok(Event::InitDone)));
    reflector.handle(Update::Pod(Ok(Event::InitDone)));
    let shared = Arc::new(Shared::default());
    let (targets, _) = tokio::sync::watch::channel(Default::default());
    reflector.publish(&shared, &targets);

    let store = Arc::new(
        Store::new(StoreConfig::from_resolution(Duration::from_secs(15)))
            .with_pod_names(Arc::clone(&shared) as Arc<dyn PodNames>),
    );
    for n in 0..nodes {
        let name = Name::from(format!("node-{n:05}"));
        store.write_node(&name, &scrape(n, pods, T0, 1_000_000_000), T0);
        let later = T0 + 15 * SECOND;
        store.write_node(&name, &scrape(n, pods, later, 2_000_000_000), later);
    }
    Router::new(
        store,
        Arc::new(Cluster { shared }),
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
