//! Protobuf encoding of the metrics.k8s.io objects (`application/vnd.kubernetes.protobuf`), byte
//! for byte as kube-apiserver's protobuf serializer writes them.
//!
//! A body is the four magic bytes `k8s\0` followed by a `runtime.Unknown` message:
//! `typeMeta` (1) {`apiVersion` (1), `kind` (2)}, `raw` (2) holding the object's own message,
//! `contentEncoding` (3) and `contentType` (4), both empty. The object messages follow
//! `k8s.io/metrics` v1beta1 `generated.proto`: `NodeMetrics` {`metadata` 1, `timestamp` 2,
//! `window` 3, `usage` 4}, `PodMetrics` {`metadata` 1, `timestamp` 2, `window` 3,
//! `containers` 4}, `ContainerMetrics` {`name` 1, `usage` 2}, lists {`metadata` 1, `items` 2}.
//! The apimachinery types are those of its `generated.proto`: `ObjectMeta` {`name` 1,
//! `generateName` 2, `namespace` 3, `selfLink` 4, `uid` 5, `resourceVersion` 6, `generation` 7,
//! `creationTimestamp` 8, `labels` 11}, `ListMeta` {`selfLink` 1, `resourceVersion` 2,
//! `continue` 3}, `Time` {`seconds` 1, `nanos` 2}, `Duration` {`duration` 1}, `Quantity`
//! {`string` 1}.
//!
//! What Go's generated (gogo-protobuf) marshallers make observable, and this encoder repeats:
//! - fields appear in field-number order;
//! - proto2 fields that are plain values in Go (every string, integer and embedded message
//!   above) are written even when empty or zero, so an empty `ListMeta` is six bytes;
//! - a `Time` carries whole seconds only: `nanos` is always written as 0, as apimachinery drops
//!   the fraction on the wire (the same truncation its JSON form makes);
//! - map fields (`labels`, `usage`) are repeated entries {`key` 1, `value` 2} sorted by key;
//! - a quantity is its canonical string, the same text the JSON form carries.
//!
//! Each message's length is filled in after its contents are written: in place when it fits one
//! byte, else by sliding the contents along (short moves for everything but the outer `raw`
//! field), so encoding is a single pass over the items and allocates nothing but output growth.

use crate::api::quantity::{write_cpu, write_memory};
use crate::api::render::StatusDetails;
use crate::model::{ContainerMetrics, Labels, NodeMetrics, PodMetrics, UnixNanos, Usage};

pub use crate::api::negotiate::accepts_protobuf;

/// The bytes every Kubernetes protobuf body starts with.
pub const MAGIC: &[u8; 4] = b"k8s\0";

const API_VERSION: &str = "metrics.k8s.io/v1beta1";
const NANOS_PER_SECOND: i64 = 1_000_000_000;

/// Wire types used here.
const VARINT: u8 = 0;
const LEN: u8 = 2;

/// Writes a failure `Status` body (`apiVersion: v1`), what upstream sends a client that accepts
/// protobuf when a request fails: `metadata` (1, an empty `ListMeta`), `status` (2, `Failure`),
/// `message` (3), `reason` (4), `details` (5, only when given: `name` 1, `group` 2, `kind` 3,
/// `retryAfterSeconds` 5 and `uid` 6, with no `causes`) and `code` (6).
pub fn status(
    out: &mut Vec<u8>,
    code: u16,
    reason: &str,
    text: &str,
    details: Option<StatusDetails<'_>>,
) {
    envelope_of(out, "v1", "Status", |out| {
        list_meta(out);
        string(out, 2, "Failure");
        string(out, 3, text);
        string(out, 4, reason);
        if let Some(details) = details {
            message(out, 5, |out| {
                string(out, 1, details.name);
                string(out, 2, details.group);
                string(out, 3, details.kind);
                varint_field(out, 5, 0);
                string(out, 6, "");
            });
        }
        varint_field(out, 6, u64::from(code));
    });
}

/// Writes one `NodeMetrics` body. `now` is the object's `creationTimestamp`.
pub fn node_metrics(out: &mut Vec<u8>, metrics: &NodeMetrics, labels: &Labels, now: UnixNanos) {
    envelope(out, "NodeMetrics", |out| {
        node_body(out, metrics, labels, now)
    });
}

/// Writes one `PodMetrics` body.
pub fn pod_metrics(out: &mut Vec<u8>, metrics: &PodMetrics, labels: &Labels, now: UnixNanos) {
    envelope(out, "PodMetrics", |out| pod_body(out, metrics, labels, now));
}

/// Writes a `NodeMetricsList` body of the given items, in the order given.
pub fn node_metrics_list<'a>(
    out: &mut Vec<u8>,
    items: impl Iterator<Item = (&'a NodeMetrics, &'a Labels)>,
    now: UnixNanos,
) {
    envelope(out, "NodeMetricsList", |out| {
        list_meta(out);
        for (metrics, labels) in items {
            message(out, 2, |out| node_body(out, metrics, labels, now));
        }
    });
}

/// Writes a `PodMetricsList` body of the given items, in the order given.
pub fn pod_metrics_list<'a>(
    out: &mut Vec<u8>,
    items: impl Iterator<Item = (&'a PodMetrics, &'a Labels)>,
    now: UnixNanos,
) {
    envelope(out, "PodMetricsList", |out| {
        list_meta(out);
        for (metrics, labels) in items {
            message(out, 2, |out| pod_body(out, metrics, labels, now));
        }
    });
}

// === messages ===

/// Magic, then `runtime.Unknown` with the object's message as `raw`.
fn envelope(out: &mut Vec<u8>, kind: &str, raw: impl FnOnce(&mut Vec<u8>)) {
    envelope_of(out, API_VERSION, kind, raw);
}

fn envelope_of(out: &mut Vec<u8>, api_version: &str, kind: &str, raw: impl FnOnce(&mut Vec<u8>)) {
    out.extend_from_slice(MAGIC);
    message(out, 1, |out| {
        string(out, 1, api_version);
        string(out, 2, kind);
    });
    message(out, 2, raw);
    string(out, 3, "");
    string(out, 4, "");
}

/// An empty `ListMeta` as field 1 of a list: `selfLink`, `resourceVersion`, `continue`, all empty.
fn list_meta(out: &mut Vec<u8>) {
    message(out, 1, |out| {
        string(out, 1, "");
        string(out, 2, "");
        string(out, 3, "");
    });
}

fn node_body(out: &mut Vec<u8>, metrics: &NodeMetrics, labels: &Labels, now: UnixNanos) {
    message(out, 1, |out| {
        object_meta(out, &metrics.name, "", labels, now)
    });
    message(out, 2, |out| time(out, metrics.timestamp));
    message(out, 3, |out| duration(out, metrics.window));
    usage(out, 4, &metrics.usage);
}

fn pod_body(out: &mut Vec<u8>, metrics: &PodMetrics, labels: &Labels, now: UnixNanos) {
    message(out, 1, |out| {
        object_meta(out, &metrics.name, &metrics.namespace, labels, now)
    });
    message(out, 2, |out| time(out, metrics.timestamp));
    message(out, 3, |out| duration(out, metrics.window));
    for ContainerMetrics { name, usage: u } in &metrics.containers {
        message(out, 4, |out| {
            string(out, 1, name);
            usage(out, 2, u);
        });
    }
}

fn object_meta(out: &mut Vec<u8>, name: &str, namespace: &str, labels: &Labels, now: UnixNanos) {
    string(out, 1, name);
    string(out, 2, ""); // generateName
    string(out, 3, namespace);
    string(out, 4, ""); // selfLink
    string(out, 5, ""); // uid
    string(out, 6, ""); // resourceVersion
    varint_field(out, 7, 0); // generation
    message(out, 8, |out| time(out, now));
    // `Labels` keeps its pairs sorted by key, the order gogo-protobuf writes map entries in.
    for (key, value) in labels.iter() {
        message(out, 11, |out| {
            string(out, 1, key);
            string(out, 2, value);
        });
    }
}

/// `Time` contents: whole seconds (floored, as Go's `Unix()`), nanos always 0.
fn time(out: &mut Vec<u8>, nanos: UnixNanos) {
    let seconds = nanos.div_euclid(NANOS_PER_SECOND);
    // Two's complement, as protobuf writes a negative int64.
    varint_field(out, 1, seconds as u64);
    varint_field(out, 2, 0);
}

/// `Duration` contents: nanoseconds as int64.
fn duration(out: &mut Vec<u8>, nanos: i64) {
    varint_field(out, 1, nanos as u64);
}

/// A `ResourceList` as map entries under `field`: `cpu` then `memory`, keys sorted.
fn usage(out: &mut Vec<u8>, field: u32, usage: &Usage) {
    message(out, field, |out| {
        string(out, 1, "cpu");
        message(out, 2, |out| {
            message(out, 1, |out| write_cpu(out, usage.cpu_nanocores));
        });
    });
    message(out, field, |out| {
        string(out, 1, "memory");
        message(out, 2, |out| {
            message(out, 1, |out| write_memory(out, usage.memory_bytes));
        });
    });
}

// === wire primitives ===

fn tag(out: &mut Vec<u8>, field: u32, wire_type: u8) {
    varint(out, (u64::from(field) << 3) | u64::from(wire_type));
}

fn varint(out: &mut Vec<u8>, value: u64) {
    let mut buf = [0u8; 10];
    let n = encode_varint(&mut buf, value);
    out.extend_from_slice(&buf[..n]);
}

/// Encodes `value` as a base-128 varint into `buf`, returning the length (at most 10).
fn encode_varint(buf: &mut [u8; 10], mut value: u64) -> usize {
    let mut n = 0;
    while value >= 0x80 {
        // Truncation keeps the low seven bits, which is the point.
        buf[n] = (value as u8) | 0x80;
        value >>= 7;
        n += 1;
    }
    buf[n] = value as u8;
    n + 1
}

fn varint_field(out: &mut Vec<u8>, field: u32, value: u64) {
    tag(out, field, VARINT);
    varint(out, value);
}

fn string(out: &mut Vec<u8>, field: u32, value: &str) {
    tag(out, field, LEN);
    varint(out, value.len() as u64);
    out.extend_from_slice(value.as_bytes());
}

/// A length-delimited field whose contents `body` writes. One byte is set aside for the length,
/// which is all most messages here need (quantities, times, usage entries); a longer message has
/// its contents slid along to make room for the extra length bytes.
fn message(out: &mut Vec<u8>, field: u32, body: impl FnOnce(&mut Vec<u8>)) {
    tag(out, field, LEN);
    let prefix = out.len();
    out.push(0);
    let start = out.len();
    body(out);
    let len = out.len() - start;
    if len < 0x80 {
        // A length below 128 is its own one-byte varint.
        out[prefix] = len as u8;
        return;
    }
    let mut buf = [0u8; 10];
    let n = encode_varint(&mut buf, len as u64);
    let extra = n - 1;
    out.resize(out.len() + extra, 0);
    out.copy_within(start..start + len, start + extra);
    out[prefix..prefix + n].copy_from_slice(&buf[..n]);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Name;

    const S: i64 = 1_000_000_000;

    fn node() -> NodeMetrics {
        NodeMetrics {
            name: Name::from("n1"),
            timestamp: 1_700_000_000 * S + 999_999_999,
            window: 15 * S,
            usage: Usage {
                cpu_nanocores: 5_000_000,
                memory_bytes: 1024,
            },
        }
    }

    #[test]
    fn varints_use_seven_bits_per_byte() {
        let mut out = Vec::new();
        varint(&mut out, 0);
        varint(&mut out, 1);
        varint(&mut out, 127);
        varint(&mut out, 128);
        varint(&mut out, 300);
        assert_eq!(out, [0x00, 0x01, 0x7f, 0x80, 0x01, 0xac, 0x02]);
        let mut out = Vec::new();
        varint(&mut out, u64::MAX);
        assert_eq!(out.len(), 10);
        assert_eq!(out[9], 0x01);
    }

    #[test]
    fn long_messages_get_multi_byte_length_prefixes() {
        let mut out = vec![0xEE];
        let body = vec![b'x'; 300];
        message(&mut out, 2, |out| out.extend_from_slice(&body));
        assert_eq!(&out[..4], &[0xEE, 0x12, 0xac, 0x02]);
        assert_eq!(&out[4..], &body[..]);
    }

    #[test]
    fn node_metrics_matches_a_hand_assembled_fixture() {
        // Assembled field by field from the proto definitions, independently of the encoder.
        let labels = Labels::from_pairs([("a", "b")]);
        let now = 1_700_000_100 * S + 5;
        let mut out = Vec::new();
        node_metrics(&mut out, &node(), &labels, now);

        let varint_bytes = |v: u64| {
            let mut b = Vec::new();
            let mut v = v;
            loop {
                let byte = (v & 0x7f) as u8;
                v >>= 7;
                if v == 0 {
                    b.push(byte);
                    break;
                }
                b.push(byte | 0x80);
            }
            b
        };
        let ld = |tag: u8, body: &[u8]| {
            let mut b = vec![tag];
            b.extend(varint_bytes(body.len() as u64));
            b.extend_from_slice(body);
            b
        };
        let time = |secs: u64| {
            let mut b = vec![0x08];
            b.extend(varint_bytes(secs));
            b.extend([0x10, 0x00]);
            b
        };
        let mut meta = Vec::new();
        meta.extend(ld(0x0a, b"n1"));
        for tag in [0x12, 0x1a, 0x22, 0x2a, 0x32] {
            meta.extend([tag, 0x00]);
        }
        meta.extend([0x38, 0x00]);
        meta.extend(ld(0x42, &time(1_700_000_100)));
        meta.extend(ld(0x5a, &[ld(0x0a, b"a"), ld(0x12, b"b")].concat()));
        let entry = |key: &[u8], quantity: &[u8]| {
            ld(
                0x22,
                &[ld(0x0a, key), ld(0x12, &ld(0x0a, quantity))].concat(),
            )
        };
        let mut window = vec![0x08];
        window.extend(varint_bytes(15 * S as u64));
        let raw = [
            ld(0x0a, &meta),
            ld(0x12, &time(1_700_000_000)),
            ld(0x1a, &window),
            entry(b"cpu", b"5m"),
            entry(b"memory", b"1Ki"),
        ]
        .concat();
        let type_meta = [
            ld(0x0a, b"metrics.k8s.io/v1beta1"),
            ld(0x12, b"NodeMetrics"),
        ]
        .concat();
        let expected = [
            b"k8s\0".to_vec(),
            ld(0x0a, &type_meta),
            ld(0x12, &raw),
            vec![0x1a, 0x00, 0x22, 0x00],
        ]
        .concat();
        assert_eq!(out, expected);
    }

    #[test]
    fn an_empty_list_is_an_envelope_around_an_empty_list_meta() {
        let mut out = Vec::new();
        pod_metrics_list(&mut out, std::iter::empty(), 0);
        let mut expected = b"k8s\0".to_vec();
        expected.extend([0x0a, 0x28, 0x0a, 0x16]);
        expected.extend_from_slice(b"metrics.k8s.io/v1beta1");
        expected.extend([0x12, 0x0e]);
        expected.extend_from_slice(b"PodMetricsList");
        expected.extend([0x12, 0x08, 0x0a, 0x06, 0x0a, 0x00, 0x12, 0x00, 0x1a, 0x00]);
        expected.extend([0x1a, 0x00, 0x22, 0x00]);
        assert_eq!(out, expected);
    }

    #[test]
    fn times_before_the_epoch_floor_to_whole_seconds() {
        let mut out = Vec::new();
        time(&mut out, -1);
        // -1 s as a ten-byte two's-complement varint, then nanos 0.
        let mut expected = vec![0x08];
        expected.extend([0xff; 9]);
        expected.push(0x01);
        expected.extend([0x10, 0x00]);
        assert_eq!(out, expected);
    }

    #[test]
    fn a_not_found_status_matches_a_hand_assembled_fixture() {
        let mut out = Vec::new();
        let details = StatusDetails {
            name: "n",
            group: "g",
            kind: "k",
        };
        status(&mut out, 404, "NotFound", "m", Some(details));
        let mut expected = b"k8s\0".to_vec();
        // typeMeta {apiVersion "v1", kind "Status"}
        expected.extend([0x0a, 0x0c, 0x0a, 0x02, b'v', b'1', 0x12, 0x06]);
        expected.extend_from_slice(b"Status");
        let raw: Vec<u8> = [
            &[0x0a, 0x06, 0x0a, 0x00, 0x12, 0x00, 0x1a, 0x00][..],
            &[0x12, 0x07],
            b"Failure",
            &[0x1a, 0x01, b'm', 0x22, 0x08],
            b"NotFound",
            &[
                0x2a, 0x0d, 0x0a, 0x01, b'n', 0x12, 0x01, b'g', 0x1a, 0x01, b'k', 0x28, 0x00, 0x32,
                0x00,
            ],
            &[0x30, 0x94, 0x03],
        ]
        .concat();
        expected.push(0x12);
        expected.push(raw.len() as u8);
        expected.extend(raw);
        expected.extend([0x1a, 0x00, 0x22, 0x00]);
        assert_eq!(out, expected);
    }

    #[test]
    fn encoding_appends_to_existing_buffer_contents() {
        let mut out = b"prefix".to_vec();
        node_metrics(&mut out, &node(), &Labels::default(), 0);
        assert!(out.starts_with(b"prefixk8s\0"));
    }
}
