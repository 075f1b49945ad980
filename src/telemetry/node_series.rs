//! The per-node series of `/metrics`: each node's kubelet request duration histogram and the time
//! of its last request.
//!
//! Owns these two families and writes their text itself. A cluster of thousands of nodes gives
//! thousands of histograms; written through the generic encoder each bucket line re-formatted its
//! bound and re-encoded its labels, and at 1,000 nodes a monitoring read every 15 s cost about as
//! much as 30 scrapes. Here the invariant part of every line is rendered once and a node's lines
//! are a few copies and integer formats. The text is the OpenMetrics text `prometheus_client`
//! writes for the other families, so the exposition reads as one. Knows nothing of scraping: a scraper records
//! through the [`NodeCells`] handle it was given.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock};

/// Upper bounds of the request duration buckets: 5 ms doubling to ~20 s, as kubelet latencies
/// range from loopback to overloaded nodes.
pub(super) const DURATION_BOUNDS: [f64; 13] = [
    0.005, 0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48,
];

const DURATION_NAME: &str = "metrics_server_kubelet_request_duration_seconds";
const DURATION_HELP: &str =
    "Duration of requests to the kubelet's resource metrics endpoint, by node.";
const LAST_REQUEST_NAME: &str = "metrics_server_kubelet_last_request_time_seconds";
const LAST_REQUEST_HELP: &str =
    "Time of the last request to the kubelet, by node, as unix seconds.";

/// One node's cells. Recording is a few relaxed atomic operations, with no lock.
#[derive(Debug, Default)]
pub struct NodeCells {
    /// The node's name as a label value, escaped once when the cells are made.
    label: Box<str>,
    /// Observations per bucket of [`DURATION_BOUNDS`] (not cumulative); the last is `+Inf`.
    buckets: [AtomicU64; DURATION_BOUNDS.len() + 1],
    /// Sum of the observed durations, as `f64` bits.
    sum_bits: AtomicU64,
    /// Unix seconds of the last request, as `f64` bits.
    last_request_bits: AtomicU64,
}

/// Every node's cells, by node name (so the text lists nodes in name order).
#[derive(Debug, Default)]
pub struct NodeSeriesTable {
    nodes: RwLock<BTreeMap<Box<str>, Arc<NodeCells>>>,
}

// === impl NodeCells ===

impl NodeCells {
    /// Records one request: its duration in seconds and when it started (unix seconds).
    pub fn record(&self, started_unix_seconds: f64, seconds: f64) {
        // A bucket counts observations up to and including its bound.
        let bucket = DURATION_BOUNDS
            .iter()
            .position(|&bound| seconds <= bound)
            .unwrap_or(DURATION_BOUNDS.len());
        self.buckets[bucket].fetch_add(1, Ordering::Relaxed);
        let _ = self
            .sum_bits
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |bits| {
                Some((f64::from_bits(bits) + seconds).to_bits())
            });
        self.last_request_bits
            .store(started_unix_seconds.to_bits(), Ordering::Relaxed);
    }
}

// === impl NodeSeriesTable ===

impl NodeSeriesTable {
    /// `node`'s cells, created (all zero) if new.
    pub fn get_or_create(&self, node: &str) -> Arc<NodeCells> {
        // Cells hold only counters: whatever a panicking writer left is still worth using.
        if let Some(cells) = self
            .nodes
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(node)
        {
            return Arc::clone(cells);
        }
        let mut nodes = self.nodes.write().unwrap_or_else(PoisonError::into_inner);
        let cells = nodes.entry(node.into()).or_insert_with(|| {
            let mut label = String::new();
            escape_label_value(node, &mut label);
            Arc::new(NodeCells {
                label: label.into(),
                ..NodeCells::default()
            })
        });
        Arc::clone(cells)
    }

    /// Drops `node`'s series; a handle still held records into cells no longer shown.
    pub fn remove(&self, node: &str) {
        self.nodes
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(node);
    }

    /// Appends both families, each with its `HELP` and `TYPE` lines (none when no node is known,
    /// as a family without series is not written).
    pub fn encode(&self, out: &mut String) {
        let nodes = self.nodes.read().unwrap_or_else(PoisonError::into_inner);
        if nodes.is_empty() {
            return;
        }
        let bucket_labels: Vec<String> = DURATION_BOUNDS
            .iter()
            .map(|bound| {
                let mut prefix = format!("{DURATION_NAME}_bucket{{le=\"");
                push_float(&mut prefix, *bound);
                prefix.push_str("\",node=\"");
                prefix
            })
            .chain([format!("{DURATION_NAME}_bucket{{le=\"+Inf\",node=\"")])
            .collect();
        let mut integers = itoa::Buffer::new();
        write_descriptor(out, DURATION_NAME, DURATION_HELP, "histogram");
        for cells in nodes.values() {
            let label = &cells.label;
            let counts = cells.buckets.each_ref().map(|c| c.load(Ordering::Relaxed));
            // The count is the buckets' total, so it always equals the `+Inf` bucket even while
            // requests are being recorded.
            let count: u64 = counts.iter().sum();
            let sum = f64::from_bits(cells.sum_bits.load(Ordering::Relaxed));
            let _ = write!(out, "{DURATION_NAME}_sum{{node=\"{label}\"}} ");
            push_float(out, sum);
            let _ = writeln!(out, "\n{DURATION_NAME}_count{{node=\"{label}\"}} {count}");
            let mut cumulative = 0;
            for (prefix, n) in bucket_labels.iter().zip(counts) {
                cumulative += n;
                out.push_str(prefix);
                out.push_str(label);
                out.push_str("\"} ");
                out.push_str(integers.format(cumulative));
                out.push('\n');
            }
        }
        write_descriptor(out, LAST_REQUEST_NAME, LAST_REQUEST_HELP, "gauge");
        for cells in nodes.values() {
            let last = f64::from_bits(cells.last_request_bits.load(Ordering::Relaxed));
            let _ = write!(out, "{LAST_REQUEST_NAME}{{node=\"{}\"}} ", cells.label);
            push_float(out, last);
            out.push('\n');
        }
    }
}

fn write_descriptor(out: &mut String, name: &str, help: &str, kind: &str) {
    let _ = write!(out, "# HELP {name} {help}\n# TYPE {name} {kind}\n");
}

/// Appends a float as the text format writes one: shortest round-trip digits, `NaN`, `+Inf`,
/// `-Inf`.
fn push_float(out: &mut String, value: f64) {
    if value.is_nan() {
        out.push_str("NaN");
    } else if value.is_infinite() {
        out.push_str(if value > 0.0 { "+Inf" } else { "-Inf" });
    } else {
        out.push_str(ryu::Buffer::new().format_finite(value));
    }
}

/// A label value with `\`, `"` and newlines escaped, as the text format requires.
fn escape_label_value(value: &str, out: &mut String) {
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus_client::encoding::EncodeLabelSet;
    use prometheus_client::metrics::family::Family;
    use prometheus_client::metrics::gauge::Gauge;
    use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
    use prometheus_client::registry::Registry;

    #[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
    struct NodeLabel {
        node: String,
    }

    #[test]
    fn bounds_are_the_exponential_series() {
        let series: Vec<f64> = exponential_buckets(0.005, 2.0, 13).collect();
        assert_eq!(series, DURATION_BOUNDS);
    }

    /// The same requests recorded here and in `prometheus_client`'s own families give the same
    /// lines (the library lists a family's series in hash order, so lines are compared sorted).
    #[test]
    fn text_matches_the_generic_encoders() {
        let durations = [0.001, 0.005, 0.0051, 0.3, 0.64, 3.0, 25.0, 0.02];
        let table = NodeSeriesTable::default();
        let mut registry = Registry::default();
        let histograms =
            Family::<NodeLabel, Histogram, fn() -> Histogram>::new_with_constructor(|| {
                Histogram::new(DURATION_BOUNDS)
            });
        let gauges = Family::<NodeLabel, Gauge<f64, AtomicU64>>::default();
        registry.register(
            DURATION_NAME,
            DURATION_HELP.trim_end_matches('.'),
            histograms.clone(),
        );
        registry.register(
            LAST_REQUEST_NAME,
            LAST_REQUEST_HELP.trim_end_matches('.'),
            gauges.clone(),
        );
        for (n, node) in ["node-b", "node-a", "ip-10-0-3-7.ec2.internal"]
            .iter()
            .enumerate()
        {
            let cells = table.get_or_create(node);
            let label = NodeLabel {
                node: (*node).to_owned(),
            };
            for (i, seconds) in durations.iter().enumerate().skip(n) {
                let started = 1_700_000_000.0 + i as f64 * 15.0 + 0.25;
                cells.record(started, *seconds);
                histograms.get_or_create(&label).observe(*seconds);
                gauges.get_or_create(&label).set(started);
            }
        }
        let mut ours = String::new();
        table.encode(&mut ours);
        let mut theirs = String::new();
        prometheus_client::encoding::text::encode(&mut theirs, &registry).unwrap();
        let sorted = |text: &str| {
            let mut lines: Vec<String> = text
                .lines()
                .filter(|line| *line != "# EOF")
                .map(str::to_owned)
                .collect();
            lines.sort();
            lines
        };
        assert_eq!(sorted(&ours), sorted(&theirs));
        assert!(ours.lines().count() > 3 * 16, "{ours}");
    }

    #[test]
    fn buckets_are_cumulative_and_the_count_is_their_total() {
        let table = NodeSeriesTable::default();
        let cells = table.get_or_create("n");
        for seconds in [0.004, 0.005, 0.006, 30.0, f64::NAN] {
            cells.record(1.0, seconds);
        }
        let mut text = String::new();
        table.encode(&mut text);
        let value = |prefix: &str| -> String {
            let line = text.lines().find(|l| l.starts_with(prefix)).unwrap();
            line.rsplit(' ').next().unwrap().to_owned()
        };
        assert_eq!(value(&format!("{DURATION_NAME}_bucket{{le=\"0.005\"")), "2");
        assert_eq!(value(&format!("{DURATION_NAME}_bucket{{le=\"0.01\"")), "3");
        assert_eq!(value(&format!("{DURATION_NAME}_bucket{{le=\"20.48\"")), "3");
        assert_eq!(value(&format!("{DURATION_NAME}_bucket{{le=\"+Inf\"")), "5");
        assert_eq!(value(&format!("{DURATION_NAME}_count")), "5");
        // A NaN observation poisons the sum, as it does in any Prometheus client.
        assert_eq!(value(&format!("{DURATION_NAME}_sum")), "NaN");
    }

    #[test]
    fn label_values_are_escaped_and_removed_nodes_leave() {
        let table = NodeSeriesTable::default();
        let kept = table.get_or_create("a\"b\\c\nd");
        table.get_or_create("gone").record(2.0, 0.1);
        kept.record(3.0, 0.1);
        table.remove("gone");
        // A handle of a removed node records into cells nobody shows.
        table.get_or_create("kept-too");
        let mut text = String::new();
        table.encode(&mut text);
        assert!(text.contains(&format!(
            "{LAST_REQUEST_NAME}{{node=\"a\\\"b\\\\c\\nd\"}} 3.0"
        )));
        assert!(!text.contains("gone"), "{text}");
        assert!(text.contains("node=\"kept-too\""));
        let empty = NodeSeriesTable::default();
        let mut nothing = String::new();
        empty.encode(&mut nothing);
        assert_eq!(nothing, "");
    }
}
