//! The server's own Prometheus metrics, named as upstream metrics-server names them.
//!
//! Owns the registry and every metric family. Stages record through the typed methods here and never
//! touch `prometheus_client` themselves; the API only encodes. Per-node series are removed when the
//! node goes away, so node churn does not grow the registry; they are kept and written by
//! [`node_series`], the rest by `prometheus_client`.

mod node_series;

use node_series::{NodeCells, NodeSeriesTable, DURATION_BOUNDS};

use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use prometheus_client::encoding::{EncodeLabelSet, EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SuccessLabel {
    success: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TypeLabel {
    r#type: &'static str,
}

fn request_duration_histogram() -> Histogram {
    Histogram::new(DURATION_BOUNDS)
}

/// The last line of an OpenMetrics text exposition.
const EOF_LINE: &str = "# EOF\n";

/// Upstream's freshness buckets: 20 exponential bounds from 1 s by a factor of 1.364 (to ~365 s).
const FRESHNESS_BUCKETS: usize = 20;

fn freshness_bounds() -> [f64; FRESHNESS_BUCKETS] {
    let mut bounds = [0.0; FRESHNESS_BUCKETS];
    for (bound, value) in bounds.iter_mut().zip(exponential_buckets(1.0, 1.364, 20)) {
        *bound = value;
    }
    bounds
}

/// A classic histogram that also takes a whole batch of observations under one lock: a list
/// request observes the age of every item it serves (150,000 for a large cluster's pod list),
/// and one lock per item was a measurable share of the request. The encoded result is what the
/// same observations one at a time would give.
#[derive(Clone, Debug)]
struct BatchHistogram {
    bounds: Arc<[f64; FRESHNESS_BUCKETS]>,
    totals: Arc<Mutex<Observations>>,
}

/// Observations of a [`BatchHistogram`], or a batch of them not yet recorded.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Observations {
    sum: f64,
    count: u64,
    /// Per bucket (not cumulative); the last is the implicit `+Inf` bucket.
    buckets: [u64; FRESHNESS_BUCKETS + 1],
}

/// Ages of the items one request serves, recorded at once with [`Telemetry::record_freshness`].
#[derive(Clone, Debug)]
pub struct FreshnessBatch {
    bounds: Arc<[f64; FRESHNESS_BUCKETS]>,
    observations: Observations,
}

/// One node's kubelet-request series, shared with the registry: what is recorded here is what
/// `/metrics` shows, until [`Telemetry::forget_node`] drops the node's series.
#[derive(Clone, Debug)]
pub struct NodeRequestSeries {
    cells: Arc<NodeCells>,
    requests: Family<SuccessLabel, Counter>,
    /// The outcome counters, taken from `requests` on first use: as upstream, an outcome that
    /// never happened has no series.
    succeeded: OnceLock<Counter>,
    failed: OnceLock<Counter>,
}

// === impl NodeRequestSeries ===

impl NodeRequestSeries {
    /// Records one request: its duration, when it started (unix seconds) and its outcome.
    pub fn record(&self, started_unix_seconds: f64, seconds: f64, ok: bool) {
        self.cells.record(started_unix_seconds, seconds);
        let (counter, success) = if ok {
            (&self.succeeded, "true")
        } else {
            (&self.failed, "false")
        };
        counter
            .get_or_init(|| {
                self.requests
                    .get_or_create(&SuccessLabel {
                        success: success.to_owned(),
                    })
                    .clone()
            })
            .inc();
    }
}

/// Every self-metric, registered once at start.
pub struct Telemetry {
    registry: Registry,
    /// `metrics_server_kubelet_request_duration_seconds` and
    /// `metrics_server_kubelet_last_request_time_seconds`, by node.
    node_series: NodeSeriesTable,
    kubelet_request_total: Family<SuccessLabel, Counter>,
    manager_tick_duration: Histogram,
    api_metric_freshness: BatchHistogram,
    storage_points: Family<TypeLabel, Gauge>,
    kept_answers: Gauge,
    kept_answer_bytes: Gauge,
    /// Unix nanoseconds when collection last made progress, for `/livez`.
    last_collection: AtomicI64,
    /// The length of the last exposition, to size the next one's buffer.
    last_encoded_bytes: AtomicUsize,
}

impl Default for Telemetry {
    fn default() -> Self {
        Self::new()
    }
}

impl Telemetry {
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let kubelet_request_total = Family::<SuccessLabel, Counter>::default();
        let manager_tick_duration = request_duration_histogram();
        let api_metric_freshness = BatchHistogram::new(freshness_bounds());
        let storage_points = Family::<TypeLabel, Gauge>::default();
        let kept_answers = Gauge::default();
        let kept_answer_bytes = Gauge::default();
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
        // Not upstream's: what the kept HPA answers hold (see `api::answers`).
        registry.register(
            "metrics_server_api_kept_answers",
            "JSON answers to namespaced label selections kept to be served again",
            kept_answers.clone(),
        );
        registry.register(
            "metrics_server_api_kept_answer_bytes",
            "Body bytes held by kept answers",
            kept_answer_bytes.clone(),
        );
        Telemetry {
            registry,
            node_series: NodeSeriesTable::default(),
            kubelet_request_total,
            manager_tick_duration,
            api_metric_freshness,
            storage_points,
            kept_answers,
            kept_answer_bytes,
            last_collection: AtomicI64::new(0),
            last_encoded_bytes: AtomicUsize::new(0),
        }
    }

    /// `node`'s kubelet-request series, created if new. Recording through the handle costs no
    /// label allocation and no registry lock: a scraper looks it up once and keeps it.
    pub fn node_request_series(&self, node: &str) -> NodeRequestSeries {
        NodeRequestSeries {
            cells: self.node_series.get_or_create(node),
            requests: self.kubelet_request_total.clone(),
            succeeded: OnceLock::new(),
            failed: OnceLock::new(),
        }
    }

    /// Drops a node's per-node series (the node left the cluster).
    pub fn forget_node(&self, node: &str) {
        self.node_series.remove(node);
    }

    pub fn manager_tick(&self, seconds: f64) {
        self.manager_tick_duration.observe(seconds);
    }

    /// Records how old a served sample is.
    pub fn metric_freshness(&self, seconds: f64) {
        let mut batch = self.freshness_batch();
        batch.observe(seconds);
        self.record_freshness(&batch);
    }

    /// An empty batch of freshness observations, for a request that serves many items.
    pub fn freshness_batch(&self) -> FreshnessBatch {
        FreshnessBatch {
            bounds: Arc::clone(&self.api_metric_freshness.bounds),
            observations: Observations::default(),
        }
    }

    /// Records every age observed in `batch`, as one `metric_freshness` call per age would.
    pub fn record_freshness(&self, batch: &FreshnessBatch) {
        if batch.observations.count > 0 {
            self.api_metric_freshness.record(&batch.observations);
        }
    }

    /// How many answers are kept and the bytes of their bodies.
    pub fn kept_answers(&self, answers: usize, bytes: usize) {
        let gauge = |value: usize| i64::try_from(value).unwrap_or(i64::MAX);
        self.kept_answers.set(gauge(answers));
        self.kept_answer_bytes.set(gauge(bytes));
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
    ///
    /// The text is written into a buffer sized from the last exposition's length: with a
    /// histogram per node it runs to megabytes, and growing a buffer that size by doubling
    /// copied it a dozen times and faulted in fresh (huge) pages at each step.
    pub fn encode(&self) -> String {
        let last = self.last_encoded_bytes.load(Ordering::Relaxed);
        let mut out = String::with_capacity((last + last / 16).max(4096));
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        // The per-node families go before the end marker the library wrote.
        if out.ends_with(EOF_LINE) {
            out.truncate(out.len() - EOF_LINE.len());
        }
        self.node_series.encode(&mut out);
        out.push_str(EOF_LINE);
        self.last_encoded_bytes.store(out.len(), Ordering::Relaxed);
        out
    }
}

// === impl BatchHistogram ===

impl BatchHistogram {
    fn new(bounds: [f64; FRESHNESS_BUCKETS]) -> Self {
        BatchHistogram {
            bounds: Arc::new(bounds),
            totals: Arc::new(Mutex::new(Observations::default())),
        }
    }

    fn record(&self, batch: &Observations) {
        let mut totals = match self.totals.lock() {
            Ok(totals) => totals,
            // A panic elsewhere cannot leave the counts half-updated in a way worth refusing.
            Err(poisoned) => poisoned.into_inner(),
        };
        totals.sum += batch.sum;
        totals.count += batch.count;
        for (total, add) in totals.buckets.iter_mut().zip(&batch.buckets) {
            *total += add;
        }
    }

    fn totals(&self) -> Observations {
        match self.totals.lock() {
            Ok(totals) => totals.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }
}

impl EncodeMetric for BatchHistogram {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        let totals = self.totals();
        let buckets: Vec<(f64, u64)> = self
            .bounds
            .iter()
            .copied()
            .chain([f64::INFINITY])
            .zip(totals.buckets)
            .collect();
        encoder.encode_histogram::<NoLabelSet>(totals.sum, totals.count, &buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Histogram
    }
}

// === impl FreshnessBatch ===

impl FreshnessBatch {
    /// Adds one age, in seconds, to the bucket whose upper bound is the first not below it.
    #[inline]
    pub fn observe(&mut self, seconds: f64) {
        let bucket = self
            .bounds
            .iter()
            .position(|&bound| seconds <= bound)
            .unwrap_or(FRESHNESS_BUCKETS);
        self.observations.buckets[bucket] += 1;
        self.observations.sum += seconds;
        self.observations.count += 1;
    }

    /// Ages observed so far.
    pub fn count(&self) -> u64 {
        self.observations.count
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn freshness_lines(text: &str) -> Vec<&str> {
        text.lines()
            .filter(|line| line.contains("metric_freshness_seconds"))
            .collect()
    }

    #[test]
    fn a_batch_encodes_as_a_classic_histogram_fed_one_age_at_a_time() {
        let ages = [0.2, 1.0, 1.5, 3.7, 14.9, 61.0, 400.0, 1e9];
        let reference = Histogram::new(freshness_bounds());
        for age in ages {
            reference.observe(age);
        }
        let mut registry = Registry::default();
        registry.register(
            "metrics_server_api_metric_freshness_seconds",
            "Age of the metrics served by the API (request time minus sample time)",
            reference,
        );
        let mut expected = String::new();
        prometheus_client::encoding::text::encode(&mut expected, &registry).unwrap();

        let telemetry = Telemetry::new();
        let mut batch = telemetry.freshness_batch();
        for age in &ages[..5] {
            batch.observe(*age);
        }
        assert_eq!(batch.count(), 5);
        telemetry.record_freshness(&batch);
        for age in &ages[5..] {
            telemetry.metric_freshness(*age);
        }
        let text = telemetry.encode();
        assert_eq!(freshness_lines(&text), freshness_lines(&expected));
        // Upstream's first bound is 1 s, inclusive.
        assert!(
            text.contains("metrics_server_api_metric_freshness_seconds_bucket{le=\"1.0\"} 2"),
            "{text}"
        );
        assert!(
            text.contains("metrics_server_api_metric_freshness_seconds_count 8"),
            "{text}"
        );
    }

    #[test]
    fn an_exposition_is_written_into_a_buffer_sized_by_the_last_one() {
        let telemetry = Telemetry::new();
        for n in 0..200 {
            telemetry
                .node_request_series(&format!("node-{n}"))
                .record(1_700_000_000.0, 0.01, true);
        }
        let first = telemetry.encode();
        assert!(
            first.len() > 4096,
            "a histogram per node: {} bytes",
            first.len()
        );
        let second = telemetry.encode();
        assert_eq!(second, first);
        // Sized once from the first, never grown.
        assert_eq!(second.capacity(), first.len() + first.len() / 16);
    }

    #[test]
    fn forgotten_node_leaves_no_series() {
        let telemetry = Telemetry::new();
        telemetry
            .node_request_series("node-a")
            .record(1.0, 0.01, true);
        telemetry
            .node_request_series("node-b")
            .record(1.0, 0.01, false);
        let text = telemetry.encode();
        assert!(text.contains("node=\"node-a\""));
        assert!(text.contains("metrics_server_kubelet_request_total{success=\"false\"} 1"));
        telemetry.forget_node("node-a");
        let text = telemetry.encode();
        assert!(!text.contains("node=\"node-a\""));
        assert!(text.contains("node=\"node-b\""));
    }

    #[test]
    fn a_node_series_handle_records_what_the_registry_shows() {
        let telemetry = Telemetry::new();
        let series = telemetry.node_request_series("node-a");
        series.record(1_700_000_000.0, 0.02, true);
        series.record(1_700_000_015.0, 0.03, true);
        series.record(1_700_000_030.0, 0.5, false);
        let text = telemetry.encode();
        assert!(text
            .contains("metrics_server_kubelet_request_duration_seconds_count{node=\"node-a\"} 3"));
        assert!(text.contains(
            "metrics_server_kubelet_last_request_time_seconds{node=\"node-a\"} 1700000030"
        ));
        assert!(text.contains("metrics_server_kubelet_request_total{success=\"true\"} 2"));
        assert!(text.contains("metrics_server_kubelet_request_total{success=\"false\"} 1"));
        // A node that comes back after being forgotten gets fresh series in the registry.
        telemetry.forget_node("node-a");
        telemetry
            .node_request_series("node-a")
            .record(1.0, 0.01, true);
        let text = telemetry.encode();
        assert!(text
            .contains("metrics_server_kubelet_request_duration_seconds_count{node=\"node-a\"} 1"));
    }
}
