//! The server's own Prometheus metrics, named as upstream metrics-server names them.
//!
//! Owns the registry and every metric family. Stages record through the typed methods here and never
//! touch `prometheus_client` themselves; the API only encodes. Per-node series are removed when the
//! node goes away, so node churn does not grow the registry.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct NodeLabel {
    node: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SuccessLabel {
    success: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TypeLabel {
    r#type: &'static str,
}

fn request_duration_histogram() -> Histogram {
    // 5 ms .. ~20 s, as kubelet latencies range from loopback to overloaded nodes.
    Histogram::new(exponential_buckets(0.005, 2.0, 13))
}

fn freshness_histogram() -> Histogram {
    // Upstream's freshness buckets span one to a few resolutions; these cover 0.5 s .. ~128 s.
    Histogram::new(exponential_buckets(0.5, 2.0, 9))
}

/// Every self-metric, registered once at start.
pub struct Telemetry {
    registry: Registry,
    kubelet_request_duration: Family<NodeLabel, Histogram, fn() -> Histogram>,
    kubelet_last_request_time: Family<NodeLabel, Gauge<f64, AtomicU64>>,
    kubelet_request_total: Family<SuccessLabel, Counter>,
    manager_tick_duration: Histogram,
    api_metric_freshness: Histogram,
    storage_points: Family<TypeLabel, Gauge>,
    /// Unix nanoseconds when collection last made progress, for `/livez`.
    last_collection: AtomicI64,
}

impl Default for Telemetry {
    fn default() -> Self {
        Self::new()
    }
}

impl Telemetry {
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let kubelet_request_duration =
            Family::<NodeLabel, Histogram, fn() -> Histogram>::new_with_constructor(
                request_duration_histogram as fn() -> Histogram,
            );
        let kubelet_last_request_time = Family::<NodeLabel, Gauge<f64, AtomicU64>>::default();
        let kubelet_request_total = Family::<SuccessLabel, Counter>::default();
        let manager_tick_duration = request_duration_histogram();
        let api_metric_freshness = freshness_histogram();
        let storage_points = Family::<TypeLabel, Gauge>::default();
        registry.register(
            "metrics_server_kubelet_request_duration_seconds",
            "Duration of requests to the kubelet's resource metrics endpoint, by node",
            kubelet_request_duration.clone(),
        );
        registry.register(
            "metrics_server_kubelet_last_request_time_seconds",
            "Time of the last request to the kubelet, by node, as unix seconds",
            kubelet_last_request_time.clone(),
        );
        registry.register(
            "metrics_server_kubelet_request",
            "Requests to kubelets, by success",
            kubelet_request_total.clone(),
        );
        registry.register(
            "metrics_server_manager_tick_duration_seconds",
            "Duration of a scrape supervision tick",
            manager_tick_duration.clone(),
        );
        registry.register(
            "metrics_server_api_metric_freshness_seconds",
            "Age of the metrics served by the API (request time minus sample time)",
            api_metric_freshness.clone(),
        );
        registry.register(
            "metrics_server_storage_points",
            "Points held in storage, by type",
            storage_points.clone(),
        );
        Telemetry {
            registry,
            kubelet_request_duration,
            kubelet_last_request_time,
            kubelet_request_total,
            manager_tick_duration,
            api_metric_freshness,
            storage_points,
            last_collection: AtomicI64::new(0),
        }
    }

    /// Records one kubelet request: its duration, when it started (unix seconds) and its outcome.
    pub fn kubelet_request(&self, node: &str, started_unix_seconds: f64, seconds: f64, ok: bool) {
        let label = NodeLabel {
            node: node.to_owned(),
        };
        self.kubelet_request_duration
            .get_or_create(&label)
            .observe(seconds);
        self.kubelet_last_request_time
            .get_or_create(&label)
            .set(started_unix_seconds);
        self.kubelet_request_total
            .get_or_create(&SuccessLabel {
                success: if ok { "true" } else { "false" }.to_owned(),
            })
            .inc();
    }

    /// Drops a node's per-node series (the node left the cluster).
    pub fn forget_node(&self, node: &str) {
        let label = NodeLabel {
            node: node.to_owned(),
        };
        self.kubelet_request_duration.remove(&label);
        self.kubelet_last_request_time.remove(&label);
    }

    pub fn manager_tick(&self, seconds: f64) {
        self.manager_tick_duration.observe(seconds);
    }

    /// Records how old a served sample is.
    pub fn metric_freshness(&self, seconds: f64) {
        self.api_metric_freshness.observe(seconds);
    }

    pub fn storage_points(&self, nodes: u64, containers: u64) {
        let set = |kind: &'static str, value: u64| {
            self.storage_points
                .get_or_create(&TypeLabel { r#type: kind })
                .set(i64::try_from(value).unwrap_or(i64::MAX));
        };
        set("node", nodes);
        set("container", containers);
    }

    /// Marks that collection made progress at `now` (unix nanoseconds).
    pub fn collection_progressed(&self, now: i64) {
        self.last_collection.fetch_max(now, Ordering::Relaxed);
    }

    /// When collection last made progress (unix nanoseconds; 0 = never).
    pub fn last_collection(&self) -> i64 {
        self.last_collection.load(Ordering::Relaxed)
    }

    /// The Prometheus text exposition of every metric.
    pub fn encode(&self) -> String {
        let mut out = String::with_capacity(4096);
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forgotten_node_leaves_no_series() {
        let telemetry = Telemetry::new();
        telemetry.kubelet_request("node-a", 1.0, 0.01, true);
        telemetry.kubelet_request("node-b", 1.0, 0.01, false);
        let text = telemetry.encode();
        assert!(text.contains("node=\"node-a\""));
        assert!(text.contains("metrics_server_kubelet_request_total{success=\"false\"} 1"));
        telemetry.forget_node("node-a");
        let text = telemetry.encode();
        assert!(!text.contains("node=\"node-a\""));
        assert!(text.contains("node=\"node-b\""));
    }
}
