//! JSON rendering of the metrics.k8s.io objects, byte for byte as upstream serves them.

use crate::model::{Labels, NodeMetrics, PodMetrics, UnixNanos};

/// Writes one `NodeMetrics` object. `now` is the object's `creationTimestamp` (upstream stamps the
/// time of the request).
pub fn node_metrics(_out: &mut Vec<u8>, _metrics: &NodeMetrics, _labels: &Labels, _now: UnixNanos) {
    todo!("render helper")
}

/// Writes one `PodMetrics` object.
pub fn pod_metrics(_out: &mut Vec<u8>, _metrics: &PodMetrics, _labels: &Labels, _now: UnixNanos) {
    todo!("render helper")
}

/// Writes a `NodeMetricsList` of the given items, in the order given.
pub fn node_metrics_list<'a>(
    _out: &mut Vec<u8>,
    _items: impl Iterator<Item = (&'a NodeMetrics, &'a Labels)>,
    _now: UnixNanos,
) {
    todo!("render helper")
}

/// Writes a `PodMetricsList` of the given items, in the order given.
pub fn pod_metrics_list<'a>(
    _out: &mut Vec<u8>,
    _items: impl Iterator<Item = (&'a PodMetrics, &'a Labels)>,
    _now: UnixNanos,
) {
    todo!("render helper")
}

/// Writes a Kubernetes `Status` failure object (`reason` such as `NotFound`, `BadRequest`).
pub fn status(_out: &mut Vec<u8>, _code: u16, _reason: &str, _message: &str) {
    todo!("render helper")
}
