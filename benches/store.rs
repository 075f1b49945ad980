//! Cost of one node's update, and of loading and walking a large snapshot.
//!
//! Scenarios are named by size. Node updates run in steady state: the node has been written
//! before, and each scrape is one resolution newer so every container keeps a rate.
//!
//! Time is the measuring thread's CPU time, not wall time: on a shared machine wall time mostly
//! measures how long other processes held the cores.

/// The allocator the server binary runs with, so the figures are the server's.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::borrow::Cow;
use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use metrics_server::model::{ContainerScrape, MetricsPoint, Name, NodeScrape, PodScrape};
use metrics_server::store::{Store, StoreConfig};

#[path = "support/cpu_time.rs"]
mod cpu_time;
use cpu_time::CpuTime;

const S: i64 = 1_000_000_000;

type Bench = Criterion<CpuTime>;

fn config() -> StoreConfig {
    StoreConfig::from_resolution(Duration::from_secs(15))
}

/// Owned names, as the parser's `Cow`s would hold once a scrape is decoded.
struct NodeNames {
    pods: Vec<(String, String, Vec<String>)>,
}

fn node_names(node: usize, pods: usize, containers: usize) -> NodeNames {
    NodeNames {
        pods: (0..pods)
            .map(|p| {
                (
                    format!("namespace-{}", (node * 7 + p) % 40),
                    format!("pod-{node}-{p}-7c9f8d6b5-x2k4q"),
                    (0..containers).map(|c| format!("container-{c}")).collect(),
                )
            })
            .collect(),
    }
}

/// A scrape at `t` seconds borrowing its names, as the parser yields unescaped names.
fn scrape(names: &NodeNames, t: i64) -> NodeScrape<'_> {
    let point = |i: usize| MetricsPoint {
        start_time: S,
        timestamp: t * S + i as i64,
        cumulative_cpu_used: (t as u64) * 250_000_000 + i as u64,
        memory_usage: 50 << 20,
    };
    NodeScrape {
        node: Some(point(0)),
        pods: names
            .pods
            .iter()
            .enumerate()
            .map(|(i, (ns, pod, containers))| PodScrape {
                namespace: Cow::Borrowed(ns),
                name: Cow::Borrowed(pod),
                containers: containers
                    .iter()
                    .map(|c| ContainerScrape {
                        name: Cow::Borrowed(c),
                        point: point(i),
                    })
                    .collect(),
            })
            .collect(),
    }
}

/// A store of `nodes` nodes with `pods` single-container pods each, all servable.
fn filled_store(nodes: usize, pods: usize) -> Store {
    let store = Store::new(config());
    for n in 0..nodes {
        let name = Name::from(format!("node-{n:05}"));
        let names = node_names(n, pods, 1);
        for t in [100, 115] {
            store.write_node(&name, &scrape(&names, t), t * S);
        }
    }
    store
}

fn node_update(c: &mut Bench) {
    let mut group = c.benchmark_group("write_node");
    // (scenario, other nodes in the store, pods on the written node, containers per pod)
    let cases = [
        ("30 pods, alone", 0, 30, 1),
        ("30 pods, in 1000 nodes x 30 pods", 1000, 30, 1),
        ("110 pods x 2 containers, alone", 0, 110, 2),
        (
            "110 pods x 2 containers, in 1000 nodes x 30 pods",
            1000,
            110,
            2,
        ),
    ];
    for (label, others, pods, containers) in cases {
        let store = filled_store(others, 30);
        let node = Name::from("node-under-test");
        let names = node_names(99_999, pods, containers);
        let mut t = 100;
        for _ in 0..4 {
            t += 15;
            store.write_node(&node, &scrape(&names, t), t * S);
        }
        assert!(store.snapshot().node("node-under-test").is_some());
        assert_eq!(
            store
                .snapshot()
                .pods()
                .filter(|p| &*p.node == "node-under-test")
                .count(),
            pods
        );
        group.bench_function(label, |b| {
            // Each scrape is one resolution newer, so every container keeps a rate. (Alternating
            // two fixed sample times would not: a point no newer than `last` drops `prev`.)
            // Building the scrape is the parser's cost and stays outside the measurement.
            b.iter_batched_ref(
                || {
                    t += 15;
                    scrape(&names, t)
                },
                |scrape| store.write_node(&node, scrape, 0),
                BatchSize::SmallInput,
            )
        });
    }
    // Every node in turn, as a scrape round writes them: by a node's next write, what the other
    // nodes' writes touched has pushed its state out of the nearer caches.
    let nodes = 1000;
    let store = Store::new(config());
    let fleet: Vec<(Name, NodeNames)> = (0..nodes)
        .map(|n| (Name::from(format!("node-{n:05}")), node_names(n, 30, 2)))
        .collect();
    let mut t = 100;
    for _ in 0..2 {
        t += 15;
        for (node, names) in &fleet {
            store.write_node(node, &scrape(names, t), t * S);
        }
    }
    assert_eq!(store.snapshot().pods().count(), nodes * 30);
    let mut turn = 0;
    group.bench_function("30 pods x 2 containers, each of 1000 nodes in turn", |b| {
        b.iter_batched_ref(
            || {
                turn = (turn + 1) % nodes;
                if turn == 0 {
                    t += 15;
                }
                let (node, names) = &fleet[turn];
                (node.clone(), scrape(names, t))
            },
            |(node, scrape)| store.write_node(node, scrape, 0),
            BatchSize::SmallInput,
        )
    });
    group.finish();
}

fn snapshot_walk(c: &mut Bench) {
    let mut group = c.benchmark_group("snapshot");
    group.sample_size(10);
    let store = filled_store(10_000, 30);
    group.bench_function("load + iterate 10000 nodes x 30 pods", |b| {
        b.iter(|| {
            let snapshot = store.snapshot();
            let cpu: u64 = snapshot.nodes().map(|n| n.usage.cpu_nanocores).sum();
            let pods = snapshot.pods().map(|p| p.containers.len()).sum::<usize>();
            black_box((cpu, pods))
        })
    });
    group.bench_function("load + one namespace of 10000 nodes x 30 pods", |b| {
        b.iter(|| {
            let snapshot = store.snapshot();
            black_box(snapshot.pods_in_namespace("namespace-17").count())
        })
    });
    group.bench_function("load + 1000 pod lookups in 10000 nodes x 30 pods", |b| {
        let keys: Vec<(String, String)> = (0..1000)
            .map(|i| {
                let n = i * 10;
                let p = i % 30;
                (
                    format!("namespace-{}", (n * 7 + p) % 40),
                    format!("pod-{n}-{p}-7c9f8d6b5-x2k4q"),
                )
            })
            .collect();
        b.iter_batched(
            || store.snapshot(),
            |snapshot| {
                keys.iter()
                    .filter(|(ns, p)| snapshot.pod(ns, p).is_some())
                    .count()
            },
            BatchSize::SmallInput,
        )
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .with_measurement(CpuTime::thread());
    targets = node_update, snapshot_walk
}
criterion_main!(benches);
