//! What the discovery caches cost for a large cluster, measured by a counting allocator.
//!
//! 2,000 nodes and 60,000 pods in 60 namespaces (a fifth of the 10,000 x 300,000 target, so
//! the unoptimised test build stays quick; the cost per object does not depend on the count),
//! each pod with four labels and the label set shared by its ReplicaSet's 30 replicas, go
//! through the writer as an initial list. The live heap afterwards is the cache's cost; the
//! budget keeps the full-size cluster far from the gigabytes a cache of full objects would
//! take. A second, identical relist while a reader holds the old view must not double it.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, Ordering};

use kube::runtime::watcher::Event;
use metrics_server::discovery::internals::{
    NodeAddress, NodeObject, PodObject, Reflector, Shared, TargetRules, Update,
};
use metrics_server::discovery::Targets;
use tokio::sync::watch;

/// Counts live heap bytes; this test binary holds a single test, so nothing else allocates
/// concurrently.
struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);

// SAFETY: every call is forwarded unchanged to the system allocator; only a counter is added.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE.fetch_add(
            new_size as isize - layout.size() as isize,
            Ordering::Relaxed,
        );
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

const NODES: usize = 2_000;
const PODS: usize = 60_000;
const NAMESPACES: usize = 60;
const REPLICAS: usize = 30;

fn node(i: usize) -> NodeObject {
    let name = format!("node-{i:05}");
    let mut node = NodeObject::new(&name);
    node.labels
        .insert("kubernetes.io/hostname".into(), name.clone());
    node.labels
        .insert("kubernetes.io/os".into(), "linux".into());
    node.labels.insert(
        "topology.kubernetes.io/zone".into(),
        format!("zone-{}", i % 3),
    );
    node.addresses = vec![
        NodeAddress {
            kind: "InternalIP".into(),
            address: format!("10.{}.{}.{}", i / 65536, (i / 256) % 256, i % 256),
        },
        NodeAddress {
            kind: "Hostname".into(),
            address: name,
        },
    ];
    node
}

fn pod(i: usize) -> PodObject {
    let namespace = format!("namespace-{:03}", i % NAMESPACES);
    let replica_set = i / REPLICAS;
    let mut pod = PodObject::new(&namespace, &format!("app-{replica_set}-7d9f8b6c5-{i:06}"));
    pod.labels
        .insert("app".into(), format!("app-{replica_set}"));
    pod.labels
        .insert("pod-template-hash".into(), "7d9f8b6c5".into());
    pod.labels.insert("tier".into(), "backend".into());
    pod.labels
        .insert("version".into(), format!("v{}", replica_set % 5));
    pod.node_name = Some(format!("node-{:05}", i % NODES));
    pod.phase = Some("Running".into());
    pod
}

fn relist(reflector: &mut Reflector) {
    reflector.handle(Update::Node(Ok(Event::Init)));
    for i in 0..NODES {
        reflector.handle(Update::Node(Ok(Event::InitApply(node(i)))));
    }
    reflector.handle(Update::Node(Ok(Event::InitDone)));
    reflector.handle(Update::Pod(Ok(Event::Init)));
    for i in 0..PODS {
        reflector.handle(Update::Pod(Ok(Event::InitApply(pod(i)))));
    }
    reflector.handle(Update::Pod(Ok(Event::InitDone)));
}

fn live_bytes() -> isize {
    LIVE.load(Ordering::Relaxed)
}

#[test]
fn cached_nodes_and_pods_cost_a_few_hundred_bytes_each() {
    let shared = Shared::default();
    let (targets, _receiver) = watch::channel(Targets::default());
    let rules = TargetRules {
        preferred_address_types: vec!["InternalIP".into()],
        kubelet_port: 10250,
        use_node_status_port: false,
    };
    let before = live_bytes();
    let mut reflector = Reflector::new(rules);
    relist(&mut reflector);
    reflector.publish(&shared, &targets);
    let first = live_bytes() - before;

    let view = shared.view.load_full();
    assert_eq!(view.node_count(), NODES);
    assert_eq!(view.pod_count(), PODS);
    assert_eq!(targets.borrow().len(), NODES);

    // The same cluster relisted (as after `410 Gone`) while a reader still holds the old view.
    relist(&mut reflector);
    reflector.publish(&shared, &targets);
    let second = live_bytes() - before;
    drop(view);

    let per_object = first as f64 / (PODS + NODES) as f64;
    eprintln!(
        "discovery cache: {:.1} MiB after the first list ({per_object:.0} B per object, \
         {:.0} MiB at 10,000 nodes x 300,000 pods), {:.1} MiB after an identical relist \
         with the old view held",
        first as f64 / 1048576.0,
        per_object * 310_000.0 / 1048576.0,
        second as f64 / 1048576.0
    );
    // Budget: 300 bytes per cached object, under 90 MiB at full size.
    assert!(per_object < 300.0, "{per_object:.0} bytes per object");
    // Unchanged entries are shared between the old and the new maps, not copied: the relist
    // adds only the new map's tree nodes (copying the entries too would double the heap).
    assert!(
        (second as f64) < first as f64 * 1.75,
        "relist grew the heap from {first} to {second} bytes"
    );
}
