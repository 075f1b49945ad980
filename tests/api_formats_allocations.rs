//! Protobuf and `Table` encoding of a list allocate nothing but output buffer growth: with enough
//! capacity reserved, a 1,000-item list is encoded without any allocation.

use metrics_server::api::negotiate::TableVersion;
use metrics_server::api::table::IncludeObject;
use metrics_server::api::{protobuf, table};
use metrics_server::model::{ContainerMetrics, Labels, Name, NodeMetrics, PodMetrics, Usage};

#[path = "common/counting_alloc.rs"]
mod counting_alloc;
use counting_alloc::counted;

#[test]
fn encoding_lists_into_a_reserved_buffer_allocates_nothing() {
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
            containers: vec![
                ContainerMetrics {
                    name: Name::from("c"),
                    usage: Usage {
                        cpu_nanocores: 5_000_000,
                        memory_bytes: 1536,
                    },
                };
                2
            ],
        })
        .collect();

    type Encode<'a> = Box<dyn Fn(&mut Vec<u8>) + 'a>;
    let encoders: Vec<(&str, Encode)> = vec![
        (
            "protobuf nodes",
            Box::new(|out| protobuf::node_metrics_list(out, nodes.iter().map(|n| (n, &labels)), 0)),
        ),
        (
            "protobuf pods",
            Box::new(|out| protobuf::pod_metrics_list(out, pods.iter().map(|p| (p, &labels)), 0)),
        ),
        (
            "table nodes",
            Box::new(|out| {
                table::node_metrics_table(
                    out,
                    TableVersion::V1,
                    IncludeObject::Metadata,
                    nodes.iter().map(|n| (n, &labels)),
                    0,
                )
            }),
        ),
        (
            "table pods with objects",
            Box::new(|out| {
                table::pod_metrics_table(
                    out,
                    TableVersion::V1,
                    IncludeObject::Object,
                    pods.iter().map(|p| (p, &labels)),
                    0,
                )
            }),
        ),
    ];
    for (name, encode) in &encoders {
        let mut out = Vec::new();
        encode(&mut out);
        let needed = out.len();
        out.clear();
        let allocations = counted(|| encode(&mut out));
        assert_eq!(out.len(), needed, "{name}");
        assert_eq!(allocations, 0, "{name} allocated");
    }
}
