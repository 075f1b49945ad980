//! Protobuf bodies decode, with a small wire decoder written here, into the same objects the JSON
//! renderer describes: every field where `generated.proto` puts it, every value as JSON has it.

use metrics_server::api::{protobuf, render};
use metrics_server::model::{ContainerMetrics, Labels, Name, NodeMetrics, PodMetrics, Usage};

const S: i64 = 1_000_000_000;
const NOW: i64 = 1_769_539_713 * S + 123;

// === a minimal protobuf wire decoder ===

#[derive(Debug, Clone, PartialEq)]
enum Wire<'a> {
    Varint(u64),
    Bytes(&'a [u8]),
}

/// Decodes one message into (field, value) pairs in wire order; panics on malformed input, which
/// in a test is a failure.
fn fields(mut buf: &[u8]) -> Vec<(u32, Wire<'_>)> {
    fn varint(buf: &mut &[u8]) -> u64 {
        let mut value = 0u64;
        for shift in (0..70).step_by(7) {
            let (byte, rest) = buf.split_first().expect("truncated varint");
            *buf = rest;
            value |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return value;
            }
        }
        panic!("varint longer than ten bytes");
    }
    let mut out = Vec::new();
    while !buf.is_empty() {
        let key = varint(&mut buf);
        let field = u32::try_from(key >> 3).unwrap();
        match key & 7 {
            0 => out.push((field, Wire::Varint(varint(&mut buf)))),
            2 => {
                let len = usize::try_from(varint(&mut buf)).unwrap();
                let (body, rest) = buf.split_at(len);
                buf = rest;
                out.push((field, Wire::Bytes(body)));
            }
            other => panic!("unexpected wire type {other}"),
        }
    }
    out
}

fn bytes<'a>(fields: &[(u32, Wire<'a>)], field: u32) -> Vec<&'a [u8]> {
    fields
        .iter()
        .filter(|(f, _)| *f == field)
        .map(|(_, w)| match w {
            Wire::Bytes(b) => *b,
            Wire::Varint(_) => panic!("field {field} is a varint"),
        })
        .collect()
}

fn one<'a>(fields: &[(u32, Wire<'a>)], field: u32) -> &'a [u8] {
    let all = bytes(fields, field);
    assert_eq!(all.len(), 1, "field {field} once");
    all[0]
}

fn text<'a>(fields: &[(u32, Wire<'a>)], field: u32) -> &'a str {
    std::str::from_utf8(one(fields, field)).unwrap()
}

fn int(fields: &[(u32, Wire<'_>)], field: u32) -> u64 {
    let all: Vec<u64> = fields
        .iter()
        .filter(|(f, _)| *f == field)
        .map(|(_, w)| match w {
            Wire::Varint(v) => *v,
            Wire::Bytes(_) => panic!("field {field} is bytes"),
        })
        .collect();
    assert_eq!(all.len(), 1, "field {field} once");
    all[0]
}

/// Field numbers of a message, in wire order.
fn numbers(fields: &[(u32, Wire<'_>)]) -> Vec<u32> {
    fields.iter().map(|(f, _)| *f).collect()
}

/// Strips the magic and the `runtime.Unknown` envelope: (apiVersion, kind, raw).
fn unwrap(body: &[u8]) -> (String, String, Vec<u8>) {
    let rest = body.strip_prefix(b"k8s\0").expect("magic");
    let unknown = fields(rest);
    assert_eq!(numbers(&unknown), [1, 2, 3, 4]);
    assert_eq!(text(&unknown, 3), "");
    assert_eq!(text(&unknown, 4), "");
    let type_meta = fields(one(&unknown, 1));
    (
        text(&type_meta, 1).to_owned(),
        text(&type_meta, 2).to_owned(),
        one(&unknown, 2).to_vec(),
    )
}

/// Decodes `Time` to (seconds, nanos).
fn time(buf: &[u8]) -> (i64, u64) {
    let f = fields(buf);
    assert_eq!(numbers(&f), [1, 2]);
    (int(&f, 1) as i64, int(&f, 2))
}

/// Decodes repeated map entries of string keys into (key, value-bytes) pairs, in wire order.
fn entries(all: Vec<&[u8]>) -> Vec<(&str, &[u8])> {
    all.into_iter()
        .map(|entry| {
            let f = fields(entry);
            assert_eq!(numbers(&f), [1, 2]);
            (text(&f, 1), one(&f, 2))
        })
        .collect()
}

/// Decodes a usage map to (key, quantity) pairs.
fn usage(all: Vec<&[u8]>) -> Vec<(String, String)> {
    entries(all)
        .into_iter()
        .map(|(k, v)| (k.to_owned(), text(&fields(v), 1).to_owned()))
        .collect()
}

/// Checks an `ObjectMeta` against the JSON renderer's metadata for the same object.
fn check_meta(buf: &[u8], json: &serde_json::Value) {
    let meta = fields(buf);
    let mut expected_numbers = vec![1, 2, 3, 4, 5, 6, 7, 8];
    let labels = json["labels"].as_object().map(|m| m.len()).unwrap_or(0);
    expected_numbers.extend(std::iter::repeat_n(11, labels));
    assert_eq!(numbers(&meta), expected_numbers);
    assert_eq!(text(&meta, 1), json["name"].as_str().unwrap());
    assert_eq!(text(&meta, 3), json["namespace"].as_str().unwrap_or(""));
    for empty in [2, 4, 5, 6] {
        assert_eq!(text(&meta, empty), "");
    }
    assert_eq!(int(&meta, 7), 0);
    let (seconds, nanos) = time(one(&meta, 8));
    assert_eq!(seconds, NOW / S);
    assert_eq!(nanos, 0);
    let decoded: Vec<(String, String)> = entries(bytes(&meta, 11))
        .into_iter()
        .map(|(k, v)| (k.to_owned(), std::str::from_utf8(v).unwrap().to_owned()))
        .collect();
    let from_json: Vec<(String, String)> = json["labels"]
        .as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_owned()))
                .collect()
        })
        .unwrap_or_default();
    assert_eq!(decoded, from_json, "labels sorted by key, as JSON has them");
}

fn check_usage(all: Vec<&[u8]>, json: &serde_json::Value) {
    assert_eq!(
        usage(all),
        vec![
            ("cpu".to_owned(), json["cpu"].as_str().unwrap().to_owned()),
            (
                "memory".to_owned(),
                json["memory"].as_str().unwrap().to_owned()
            ),
        ]
    );
}

fn check_node(raw: &[u8], json: &serde_json::Value, metrics: &NodeMetrics) {
    let node = fields(raw);
    assert_eq!(numbers(&node), [1, 2, 3, 4, 4]);
    check_meta(one(&node, 1), &json["metadata"]);
    assert_eq!(time(one(&node, 2)), (metrics.timestamp.div_euclid(S), 0));
    assert_eq!(int(&fields(one(&node, 3)), 1) as i64, metrics.window);
    check_usage(bytes(&node, 4), &json["usage"]);
}

fn check_pod(raw: &[u8], json: &serde_json::Value, metrics: &PodMetrics) {
    let pod = fields(raw);
    let mut expected = vec![1, 2, 3];
    expected.extend(std::iter::repeat_n(4, metrics.containers.len()));
    assert_eq!(numbers(&pod), expected);
    check_meta(one(&pod, 1), &json["metadata"]);
    assert_eq!(time(one(&pod, 2)), (metrics.timestamp.div_euclid(S), 0));
    assert_eq!(int(&fields(one(&pod, 3)), 1) as i64, metrics.window);
    for (container, json) in bytes(&pod, 4)
        .into_iter()
        .zip(json["containers"].as_array().unwrap())
    {
        let c = fields(container);
        assert_eq!(numbers(&c), [1, 2, 2]);
        assert_eq!(text(&c, 1), json["name"].as_str().unwrap());
        check_usage(bytes(&c, 2), &json["usage"]);
    }
}

fn empty_list_meta(raw_list: &[(u32, Wire<'_>)]) {
    let meta = fields(one(raw_list, 1));
    assert_eq!(numbers(&meta), [1, 2, 3]);
    for f in [1, 2, 3] {
        assert_eq!(text(&meta, f), "");
    }
}

// === fixtures ===

fn nodes() -> Vec<(NodeMetrics, Labels)> {
    (0..3)
        .map(|i| {
            (
                NodeMetrics {
                    name: Name::from(format!("node-{i}")),
                    timestamp: NOW - 3 * S - i * 250_000_000,
                    window: 15_012_000_000 + i,
                    usage: Usage {
                        cpu_nanocores: 487_558_164 * (i as u64 + 1),
                        memory_bytes: 732_212 * 1024 + i as u64,
                    },
                },
                Labels::from_pairs([
                    ("kubernetes.io/hostname".to_owned(), format!("node-{i}")),
                    ("a-first".to_owned(), "x".repeat(200 * i as usize)),
                ]),
            )
        })
        .collect()
}

fn pods() -> Vec<(PodMetrics, Labels)> {
    (0..3)
        .map(|i| {
            (
                PodMetrics {
                    namespace: Name::from("kube-system"),
                    name: Name::from(format!("coredns-{i}")),
                    node: Name::from("node-0"),
                    timestamp: NOW - 5 * S,
                    window: 60 * S + 500_000_000,
                    containers: (0..i)
                        .map(|c| ContainerMetrics {
                            name: Name::from(format!("c{c}")),
                            usage: Usage {
                                cpu_nanocores: 9_559_630 + c as u64,
                                memory_bytes: 22_244 * 1024,
                            },
                        })
                        .collect(),
                },
                if i == 0 {
                    Labels::default()
                } else {
                    Labels::from_pairs([("app", "dns"), ("tier", "<ctl>")])
                },
            )
        })
        .collect()
}

// === tests ===

#[test]
fn a_node_decodes_to_the_values_its_json_carries() {
    for (metrics, labels) in nodes() {
        let mut body = Vec::new();
        protobuf::node_metrics(&mut body, &metrics, &labels, NOW);
        let mut json = Vec::new();
        render::node_metrics(&mut json, &metrics, &labels, NOW);
        let json: serde_json::Value = serde_json::from_slice(&json).unwrap();

        let (api_version, kind, raw) = unwrap(&body);
        assert_eq!(api_version, "metrics.k8s.io/v1beta1");
        assert_eq!(kind, "NodeMetrics");
        check_node(&raw, &json, &metrics);
    }
}

#[test]
fn a_pod_decodes_to_the_values_its_json_carries() {
    for (metrics, labels) in pods() {
        let mut body = Vec::new();
        protobuf::pod_metrics(&mut body, &metrics, &labels, NOW);
        let mut json = Vec::new();
        render::pod_metrics(&mut json, &metrics, &labels, NOW);
        let json: serde_json::Value = serde_json::from_slice(&json).unwrap();

        let (api_version, kind, raw) = unwrap(&body);
        assert_eq!(api_version, "metrics.k8s.io/v1beta1");
        assert_eq!(kind, "PodMetrics");
        check_pod(&raw, &json, &metrics);
    }
}

#[test]
fn a_node_list_decodes_item_by_item_in_order() {
    let items = nodes();
    let mut body = Vec::new();
    protobuf::node_metrics_list(&mut body, items.iter().map(|(m, l)| (m, l)), NOW);
    let mut json = Vec::new();
    render::node_metrics_list(&mut json, items.iter().map(|(m, l)| (m, l)), NOW);
    let json: serde_json::Value = serde_json::from_slice(&json).unwrap();

    let (_, kind, raw) = unwrap(&body);
    assert_eq!(kind, "NodeMetricsList");
    let list = fields(&raw);
    assert_eq!(numbers(&list), [1, 2, 2, 2]);
    empty_list_meta(&list);
    for ((item, json), (metrics, _)) in bytes(&list, 2)
        .into_iter()
        .zip(json["items"].as_array().unwrap())
        .zip(&items)
    {
        check_node(item, json, metrics);
    }
}

#[test]
fn a_pod_list_decodes_item_by_item_in_order() {
    let items = pods();
    let mut body = Vec::new();
    protobuf::pod_metrics_list(&mut body, items.iter().map(|(m, l)| (m, l)), NOW);
    let mut json = Vec::new();
    render::pod_metrics_list(&mut json, items.iter().map(|(m, l)| (m, l)), NOW);
    let json: serde_json::Value = serde_json::from_slice(&json).unwrap();

    let (_, kind, raw) = unwrap(&body);
    assert_eq!(kind, "PodMetricsList");
    let list = fields(&raw);
    assert_eq!(numbers(&list), [1, 2, 2, 2]);
    empty_list_meta(&list);
    for ((item, json), (metrics, _)) in bytes(&list, 2)
        .into_iter()
        .zip(json["items"].as_array().unwrap())
        .zip(&items)
    {
        check_pod(item, json, metrics);
    }
}

#[test]
fn a_large_list_keeps_every_length_prefix_consistent() {
    // Enough items that the outer length needs three varint bytes.
    let items: Vec<(NodeMetrics, Labels)> = (0..2000)
        .map(|i| {
            let (mut m, l) = nodes().remove(1);
            m.name = Name::from(format!("node-{i:05}"));
            (m, l)
        })
        .collect();
    let mut body = Vec::new();
    protobuf::node_metrics_list(&mut body, items.iter().map(|(m, l)| (m, l)), NOW);
    assert!(body.len() > 1 << 14);
    let (_, _, raw) = unwrap(&body);
    let list = fields(&raw);
    let decoded = bytes(&list, 2);
    assert_eq!(decoded.len(), items.len());
    assert_eq!(
        text(&fields(one(&fields(decoded[1999]), 1)), 1),
        "node-01999"
    );
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]

    #[test]
    fn any_pod_round_trips_through_the_wire_decoder(
        namespace in "\\PC{0,20}",
        name in "\\PC{0,300}",
        labels in proptest::collection::vec(("\\PC{1,12}", "\\PC{0,140}"), 0..4),
        containers in proptest::collection::vec(("\\PC{0,20}", proptest::prelude::any::<u64>(), proptest::prelude::any::<u64>()), 0..4),
        timestamp in proptest::prelude::any::<i64>(),
        window in proptest::prelude::any::<i64>(),
    ) {
        let metrics = PodMetrics {
            namespace: Name::from(namespace.as_str()),
            name: Name::from(name.as_str()),
            node: Name::from("n"),
            timestamp,
            window,
            containers: containers
                .iter()
                .map(|(n, cpu, memory)| ContainerMetrics {
                    name: Name::from(n.as_str()),
                    usage: Usage { cpu_nanocores: *cpu, memory_bytes: *memory },
                })
                .collect(),
        };
        let labels = Labels::from_pairs(labels);
        let mut body = Vec::new();
        protobuf::pod_metrics(&mut body, &metrics, &labels, NOW);
        let mut json = Vec::new();
        render::pod_metrics(&mut json, &metrics, &labels, NOW);
        let json: serde_json::Value = serde_json::from_slice(&json).unwrap();
        let (_, _, raw) = unwrap(&body);
        check_pod(&raw, &json, &metrics);
    }
}
