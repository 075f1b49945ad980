//! Encoding cost of the non-JSON list forms for a 10,000-node cluster and one namespace of 100
//! pods: protobuf and the `Table` kubectl asks for, beside plain JSON for comparison.
//!
//! Throughput is bytes written per second. The output buffer is reused (cleared, capacity kept)
//! so the numbers measure encoding, not the allocator.

/// The allocator the server binary runs with, so the figures are the server's.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use metrics_server::api::negotiate::TableVersion;
use metrics_server::api::table::IncludeObject;
use metrics_server::api::{protobuf, render, table};
use metrics_server::model::{ContainerMetrics, Labels, Name, NodeMetrics, PodMetrics, Usage};

const NOW: i64 = 1_769_539_713_000_000_000;

fn nodes(n: usize) -> Vec<(NodeMetrics, Labels)> {
    (0..n)
        .map(|i| {
            let metrics = NodeMetrics {
                name: Name::from(format!("node-{i:05}")),
                timestamp: NOW - 3_000_000_000 - i as i64 * 1_000_000,
                window: 15_012_000_000,
                usage: Usage {
                    cpu_nanocores: 487_558_164 + i as u64 * 7919,
                    memory_bytes: (732_212 + i as u64) * 1024,
                },
            };
            let labels = Labels::from_pairs([
                ("kubernetes.io/arch".to_owned(), "amd64".to_owned()),
                ("kubernetes.io/hostname".to_owned(), format!("node-{i:05}")),
                ("kubernetes.io/os".to_owned(), "linux".to_owned()),
                (
                    "topology.kubernetes.io/zone".to_owned(),
                    format!("eu-west-1{}", ["a", "b", "c"][i % 3]),
                ),
            ]);
            (metrics, labels)
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
                        memory_bytes: (22_244 + i as u64) * 1024,
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
            (
                metrics,
                Labels::from_pairs([("app", "web"), ("version", "v2")]),
            )
        })
        .collect()
}

fn node_lists(c: &mut Criterion) {
    let items = nodes(10_000);
    let mut group = c.benchmark_group("node list, 10000 nodes");
    let mut out = Vec::with_capacity(8 << 20);
    type Encode = fn(&mut Vec<u8>, &[(NodeMetrics, Labels)]);
    let encoders: [(&str, Encode); 3] = [
        ("json", |out, items| {
            render::node_metrics_list(out, items.iter().map(|(m, l)| (m, l)), NOW)
        }),
        ("protobuf", |out, items| {
            protobuf::node_metrics_list(out, items.iter().map(|(m, l)| (m, l)), NOW)
        }),
        ("table", |out, items| {
            table::node_metrics_table(
                out,
                TableVersion::V1,
                IncludeObject::Metadata,
                items.iter().map(|(m, l)| (m, l)),
                NOW,
            )
        }),
    ];
    for (name, encode) in encoders {
        out.clear();
        encode(&mut out, &items);
        group.throughput(Throughput::Bytes(out.len() as u64));
        group.bench_function(BenchmarkId::from_parameter(name), |b| {
            b.iter(|| {
                out.clear();
                encode(&mut out, black_box(&items));
                black_box(out.len())
            })
        });
    }
    group.finish();
}

fn pod_lists(c: &mut Criterion) {
    let items = pods(100);
    let mut group = c.benchmark_group("pod list, 1 namespace x 100 pods");
    let mut out = Vec::with_capacity(1 << 20);
    type Encode = fn(&mut Vec<u8>, &[(PodMetrics, Labels)]);
    let encoders: [(&str, Encode); 3] = [
        ("json", |out, items| {
            render::pod_metrics_list(out, items.iter().map(|(m, l)| (m, l)), NOW)
        }),
        ("protobuf", |out, items| {
            protobuf::pod_metrics_list(out, items.iter().map(|(m, l)| (m, l)), NOW)
        }),
        ("table", |out, items| {
            table::pod_metrics_table(
                out,
                TableVersion::V1,
                IncludeObject::Metadata,
                items.iter().map(|(m, l)| (m, l)),
                NOW,
            )
        }),
    ];
    for (name, encode) in encoders {
        out.clear();
        encode(&mut out, &items);
        group.throughput(Throughput::Bytes(out.len() as u64));
        group.bench_function(BenchmarkId::from_parameter(name), |b| {
            b.iter(|| {
                out.clear();
                encode(&mut out, black_box(&items));
                black_box(out.len())
            })
        });
    }
    group.finish();
}

criterion_group!(benches, node_lists, pod_lists);
criterion_main!(benches);
