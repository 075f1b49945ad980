//! Rendering a list allocates nothing but output buffer growth: with enough capacity reserved, a
//! 1,000-item render performs no allocation at all.

use metrics_server::api::render;
use metrics_server::model::{ContainerMetrics, Labels, Name, NodeMetrics, PodMetrics, Usage};

#[path = "common/counting_alloc.rs"]
mod counting_alloc;
use counting_alloc::counted;

#[test]
fn rendering_lists_into_a_reserved_buffer_allocates_nothing() {
    // The counter itself works.
    assert!(counted(|| drop(std::hint::black_box(vec![1u8; 16]))) >= 1);

    let labels = Labels::from_pairs([("kubernetes.io/os", "linux"), ("tier", "<escaped&>")]);
    let nodes: Vec<NodeMetrics> = (0..1000)
        .map(|i| NodeMetrics {
            name: Name::from(format!("node-{i}")),
            timestamp: 1_769_539_700_000_000_000 + i,
            window: 15_012_000_000,
            usage: Usage {
                cpu_nanocores: 487_558_164 + i as u64,
                memory_bytes: 732_212 * 1024,
            },
        })
        .collect();
    let pods: Vec<PodMetrics> = (0..1000)
        .map(|i| PodMetrics {
            namespace: Name::from("ns"),
            name: Name::from(format!("pod-{i}")),
            node: Name::from("node-0"),
            timestamp: 1_769_539_700_000_000_000,
            window: 60_500_000_000,
            containers: vec![ContainerMetrics {
                name: Name::from("c"),
                usage: Usage {
                    cpu_nanocores: 5_000_000,
                    memory_bytes: 1536,
                },
            }],
        })
        .collect();

    let mut out = Vec::new();
    render::node_metrics_list(&mut out, nodes.iter().map(|n| (n, &labels)), 0);
    let needed = out.len();
    out.clear();
    let allocations = counted(|| {
        render::node_metrics_list(&mut out, nodes.iter().map(|n| (n, &labels)), 0);
    });
    assert_eq!(out.len(), needed);
    assert_eq!(allocations, 0, "node list render allocated");

    let mut out = Vec::new();
    render::pod_metrics_list(&mut out, pods.iter().map(|p| (p, &labels)), 0);
    out.clear();
    let allocations = counted(|| {
        render::pod_metrics_list(&mut out, pods.iter().map(|p| (p, &labels)), 0);
    });
    assert_eq!(allocations, 0, "pod list render allocated");

    // Without reserved capacity only the buffer grows: far fewer allocations than items.
    let mut fresh = Vec::new();
    let allocations = counted(|| {
        render::pod_metrics_list(&mut fresh, pods.iter().map(|p| (p, &labels)), 0);
    });
    assert!(allocations < 40, "{allocations} allocations for 1000 pods");
}
