//! Rendering cost of the list responses: one namespace of 100 pods, and a 10,000-node cluster.
//!
//! Throughput is bytes of JSON written per second. The output buffer is reused (cleared, capacity
//! kept) so the numbers measure rendering, not the allocator.

/// The allocator the server binary runs with, so the figures are the server's.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use metrics_server::api::render;
use metrics_server::model::{ContainerMetrics, Labels, Name, NodeMetrics, PodMetrics, Usage};

const NOW: i64 = 1_769_539_713_000_000_000;

fn node_labels(i: usize) -> Labels {
    Labels::from_pairs([
        ("beta.kubernetes.io/arch".to_owned(), "amd64".to_owned()),
        ("beta.kubernetes.io/os".to_owned(), "linux".to_owned()),
        ("kubernetes.io/arch".to_owned(), "amd64".to_owned()),
        ("kubernetes.io/hostname".to_owned(), format!("node-{i:05}")),
        ("kubernetes.io/os".to_owned(), "linux".to_owned()),
        (
            "node.kubernetes.io/instance-type".to_owned(),
            "m5.xlarge".to_owned(),
        ),
        (
            "topology.kubernetes.io/region".to_owned(),
            "eu-west-1".to_owned(),
        ),
        (
            "topology.kubernetes.io/zone".to_owned(),
            format!("eu-west-1{}", ["a", "b", "c"][i % 3]),
        ),
    ])
}

fn nodes(n: usize) -> Vec<(NodeMetrics, Labels)> {
    (0..n)
        .map(|i| {
            let metrics = NodeMetrics {
                name: Name::from(format!("node-{i:05}")),
                timestamp: NOW - 3_000_000_000 - i as i64 * 1_000_000,
                window: 15_012_000_000 + i as i64 % 1000 * 1_000_000,
                usage: Usage {
                    cpu_nanocores: 487_558_164 + i as u64 * 7919,
                    memory_bytes: (732_212 + i as u64) * 1024,
                },
            };
            (metrics, node_labels(i))
        })
        .collect()
}

fn pods(n: usize) -> Vec<(PodMetrics, Labels)> {
    (0..n)
        .map(|i| {
            let containers = (0..2)
                .map(|c| ContainerMetrics {
                    name: Name::from(if c == 0 { "app" } else { "istio-proxy" }),
                    usage: Usage {
                        cpu_nanocores: 9_559_630 + (i * 2 + c) as u64 * 104_729,
                        memory_bytes: (22_244 + i as u64) * 1024 + c as u64 * 4096,
                    },
                })
                .collect();
            let metrics = PodMetrics {
                namespace: Name::from("production"),
                name: Name::from(format!("web-7d4b9c8f6d-{i:05}")),
                node: Name::from(format!("node-{:05}", i % 50)),
                timestamp: NOW - 5_000_000_000,
                window: 15_000_000_000,
                containers,
            };
            let labels = Labels::from_pairs([
                ("app", "web"),
                ("pod-template-hash", "7d4b9c8f6d"),
                ("security.istio.io/tlsMode", "istio"),
                ("version", "v2"),
            ]);
            (metrics, labels)
        })
        .collect()
}

fn bench_render(c: &mut Criterion) {
    let mut group = c.benchmark_group("render");

    let pod_items = pods(100);
    let mut out = Vec::new();
    render::pod_metrics_list(&mut out, pod_items.iter().map(|(m, l)| (m, l)), NOW);
    group.throughput(Throughput::BytesDecimal(out.len() as u64));
    group.bench_function(
        BenchmarkId::new("pod_metrics_list", "100 pods x 2 containers"),
        |b| {
            b.iter(|| {
                out.clear();
                render::pod_metrics_list(&mut out, pod_items.iter().map(|(m, l)| (m, l)), NOW);
                black_box(out.len())
            })
        },
    );

    let node_items = nodes(10_000);
    let mut out = Vec::new();
    render::node_metrics_list(&mut out, node_items.iter().map(|(m, l)| (m, l)), NOW);
    group.throughput(Throughput::BytesDecimal(out.len() as u64));
    group.bench_function(
        BenchmarkId::new("node_metrics_list", "10000 nodes x 8 labels"),
        |b| {
            b.iter(|| {
                out.clear();
                render::node_metrics_list(&mut out, node_items.iter().map(|(m, l)| (m, l)), NOW);
                black_box(out.len())
            })
        },
    );

    group.finish();
}

criterion_group!(benches, bench_render);
criterion_main!(benches);
