//! How old what the API serves is, two ways:
//!
//! - the server's own view, from its `/metrics` histograms
//!   (`metrics_server_api_metric_freshness_seconds`, request time minus sample time, and
//!   `metrics_server_kubelet_request_duration_seconds`): [`PromHistogram`] reads them from the
//!   text exposition and gives quantiles of the change between two scrapes;
//! - the lag measured from outside ([`probe`]): poll a node's `NodeMetrics` until its
//!   `timestamp` changes, and subtract the instant the fleet says that kubelet served the sample.
//!   The probe polls fast only around the instant the next sample is due, so it adds a few
//!   requests per resolution, not a steady load.

use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use super::apiload::Client;
use super::fleetctl::ControlClient;

/// A histogram summed over every label set, from the Prometheus text format.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PromHistogram {
    /// Cumulative counts by upper bound, ascending, `+Inf` last.
    pub buckets: Vec<(f64, f64)>,
    pub sum: f64,
    pub count: f64,
}

/// The value of label `name` in a `{a="x",b="y"}` label set.
fn label<'a>(labels: &'a str, name: &str) -> Option<&'a str> {
    let mut rest = labels;
    loop {
        let eq = rest.find('=')?;
        let key = rest[..eq].trim().trim_start_matches(',').trim();
        let after = rest.get(eq + 1..)?.strip_prefix('"')?;
        // Label values escape quotes as \" ; find the closing quote that is not escaped.
        let mut end = None;
        let mut escaped = false;
        for (i, c) in after.char_indices() {
            match c {
                '\\' if !escaped => escaped = true,
                '"' if !escaped => {
                    end = Some(i);
                    break;
                }
                _ => escaped = false,
            }
        }
        let end = end?;
        if key == name {
            return Some(&after[..end]);
        }
        rest = &after[end + 1..];
    }
}

fn parse_value(s: &str) -> Option<f64> {
    match s {
        "+Inf" => Some(f64::INFINITY),
        "-Inf" => Some(f64::NEG_INFINITY),
        "NaN" => Some(f64::NAN),
        _ => s.parse().ok(),
    }
}

impl PromHistogram {
    /// Reads histogram `name` from exposition `text`, summing every label set; `None` if absent.
    pub fn parse(text: &str, name: &str) -> Option<PromHistogram> {
        let bucket = format!("{name}_bucket");
        let sum = format!("{name}_sum");
        let count = format!("{name}_count");
        let mut h = PromHistogram::default();
        let mut seen = false;
        for line in text.lines() {
            if line.starts_with('#') || line.is_empty() {
                continue;
            }
            let (series, rest) = match line.find(['{', ' ']) {
                Some(i) => line.split_at(i),
                None => continue,
            };
            let (labels, value) = if let Some(inner) = rest.strip_prefix('{') {
                match inner.rfind('}') {
                    Some(close) => (&inner[..close], inner[close + 1..].trim()),
                    None => continue,
                }
            } else {
                ("", rest.trim())
            };
            // A sample may carry a timestamp after the value.
            let Some(value) = value.split_whitespace().next().and_then(parse_value) else {
                continue;
            };
            if series == bucket {
                let Some(le) = label(labels, "le").and_then(parse_value) else {
                    continue;
                };
                seen = true;
                match h.buckets.iter_mut().find(|(b, _)| *b == le) {
                    Some((_, c)) => *c += value,
                    None => h.buckets.push((le, value)),
                }
            } else if series == sum {
                seen = true;
                h.sum += value;
            } else if series == count {
                seen = true;
                h.count += value;
            }
        }
        h.buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
        seen.then_some(h)
    }

    /// What was observed since `earlier` (same buckets); counts never go below zero.
    pub fn since(&self, earlier: &PromHistogram) -> PromHistogram {
        let buckets = self
            .buckets
            .iter()
            .map(|(le, c)| {
                let before = earlier
                    .buckets
                    .iter()
                    .find(|(l, _)| l == le)
                    .map_or(0.0, |(_, c)| *c);
                (*le, (c - before).max(0.0))
            })
            .collect();
        PromHistogram {
            buckets,
            sum: (self.sum - earlier.sum).max(0.0),
            count: (self.count - earlier.count).max(0.0),
        }
    }

    /// The `q` quantile, interpolated linearly inside its bucket like PromQL's
    /// `histogram_quantile`; `None` without observations. A quantile in the `+Inf` bucket is the
    /// highest finite bound.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        let total = self.buckets.last()?.1;
        if total <= 0.0 {
            return None;
        }
        let rank = q.clamp(0.0, 1.0) * total;
        let mut lower = 0.0;
        let mut below = 0.0;
        for &(le, count) in &self.buckets {
            if count >= rank {
                if le.is_infinite() {
                    return Some(lower);
                }
                let inside = count - below;
                if inside <= 0.0 {
                    return Some(le);
                }
                return Some(lower + (le - lower) * (rank - below) / inside);
            }
            lower = le;
            below = count;
        }
        Some(lower)
    }
}

/// One freshness measurement.
#[derive(Clone, Debug, PartialEq)]
pub struct LagPoint {
    /// Seconds since the run began, when the new sample was first seen.
    pub t: f64,
    pub node: String,
    /// From the kubelet serving the sample to the API serving it, milliseconds.
    pub lag_ms: f64,
}

/// What a probe saw.
#[derive(Clone, Debug, Default)]
pub struct ProbeResult {
    pub points: Vec<LagPoint>,
    /// Changes whose timestamp matched neither of the kubelet's last two samples.
    pub unmatched: u64,
    pub errors: u64,
    /// The polling step, which bounds the measurement's own error.
    pub poll: Duration,
}

/// Unix milliseconds of an RFC 3339 timestamp, and whether it had sub-second digits.
pub fn parse_timestamp(s: &str) -> Option<(i64, bool)> {
    let t = time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).ok()?;
    let ms = (t.unix_timestamp_nanos() / 1_000_000) as i64;
    Some((ms, s.contains('.')))
}

/// The `timestamp` of a `NodeMetrics` JSON body.
pub fn node_timestamp(body: &[u8]) -> Option<(i64, bool)> {
    let v: serde_json::Value = serde_json::from_slice(body).ok()?;
    parse_timestamp(v.get("timestamp")?.as_str()?)
}

/// Which served instant an API timestamp shows: the API may print whole seconds only.
pub fn matching_sample(api_ms: i64, precise: bool, served: &[Option<i64>]) -> Option<i64> {
    served.iter().flatten().copied().find(|&t| {
        if precise {
            t == api_ms
        } else {
            t.div_euclid(1000) == api_ms.div_euclid(1000)
        }
    })
}

/// When to start polling for a node's next sample: `lead` before one `resolution` after the
/// instant the kubelet served the last one (wall clock, unix ms), as an [`Instant`].
fn next_due(served_ms: Option<i64>, resolution: Duration, lead: Duration) -> Instant {
    let now = Instant::now();
    let Some(served_ms) = served_ms else {
        return now + resolution / 2;
    };
    let due_ms = served_ms + resolution.as_millis() as i64 - lead.as_millis() as i64;
    let wait_ms = due_ms - crate::kubelet::now_ms();
    now + Duration::from_millis(wait_ms.clamp(0, (resolution * 2).as_millis() as i64) as u64)
}

/// Probes `nodes` until `stop`. Each node is polled every `poll` from shortly before its next
/// sample is due (one `resolution` after the kubelet served the last one) until the API's
/// `timestamp` changes. A change counts only if the burst saw the old timestamp first, so a
/// late start can never pass for lag.
pub async fn probe(
    mut api: Client,
    mut fleet: ControlClient,
    nodes: Vec<String>,
    resolution: Duration,
    poll: Duration,
    began: Instant,
    stop: CancellationToken,
) -> ProbeResult {
    let mut result = ProbeResult {
        poll,
        ..ProbeResult::default()
    };
    if nodes.is_empty() {
        return result;
    }
    let lead = Duration::from_millis(100).min(resolution / 4);
    // Per node: the timestamp last seen, and when to start polling next.
    let mut state: Vec<(Option<i64>, Instant)> = vec![(None, Instant::now()); nodes.len()];
    // The node due soonest is polled next.
    'outer: while let Some((i, due)) = state
        .iter()
        .enumerate()
        .map(|(i, s)| (i, s.1))
        .min_by_key(|(_, due)| *due)
    {
        tokio::select! {
            _ = tokio::time::sleep_until(due.into()) => {}
            _ = stop.cancelled() => break,
        }
        let give_up = Instant::now() + resolution * 3;
        let path = format!("/apis/metrics.k8s.io/v1beta1/nodes/{}", nodes[i]);
        let mut saw_old = false;
        loop {
            if stop.is_cancelled() {
                break 'outer;
            }
            let asked = Instant::now();
            let got = api.get(&path).await;
            let seen = Instant::now();
            let Some((api_ms, precise)) = got.ok().and_then(|b| node_timestamp(&b)) else {
                // Not served yet (first scrape pending) or an error: try again later.
                result.errors += 1;
                state[i].1 = seen + resolution / 2;
                break;
            };
            if state[i].0 == Some(api_ms) {
                saw_old = true;
                if Instant::now() > give_up {
                    state[i].1 = Instant::now();
                    break;
                }
                tokio::select! {
                    _ = tokio::time::sleep(poll) => {}
                    _ = stop.cancelled() => break 'outer,
                }
                continue;
            }
            // A new timestamp (or the first): when did the kubelet serve it?
            let served = match fleet.served(&nodes[i]).await {
                Ok(s) => s,
                Err(error) => {
                    result.errors += 1;
                    tracing::debug!(%error, "Asking the fleet what it served failed.");
                    state[i] = (Some(api_ms), seen + resolution / 2);
                    break;
                }
            };
            let matched = matching_sample(api_ms, precise, &[served.last_ms, served.previous_ms]);
            if saw_old {
                match matched {
                    Some(served_ms) => {
                        // The answer left the server between `asked` and `seen`; its midpoint
                        // is the best guess of when the new sample became visible.
                        let visible = asked + (seen - asked) / 2;
                        let visible_ms = crate::kubelet::now_ms()
                            - Instant::now()
                                .saturating_duration_since(visible)
                                .as_millis() as i64;
                        result.points.push(LagPoint {
                            t: visible.saturating_duration_since(began).as_secs_f64(),
                            node: nodes[i].clone(),
                            lag_ms: (visible_ms - served_ms) as f64,
                        });
                    }
                    None => result.unmatched += 1,
                }
            }
            state[i] = (
                Some(api_ms),
                next_due(matched.or(served.last_ms), resolution, lead),
            );
            break;
        }
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = r#"# HELP metrics_server_kubelet_request_duration_seconds Duration
# TYPE metrics_server_kubelet_request_duration_seconds histogram
metrics_server_kubelet_request_duration_seconds_bucket{node="a",le="0.005"} 1
metrics_server_kubelet_request_duration_seconds_bucket{node="a",le="0.01"} 3
metrics_server_kubelet_request_duration_seconds_bucket{node="a",le="+Inf"} 4
metrics_server_kubelet_request_duration_seconds_sum{node="a"} 0.05
metrics_server_kubelet_request_duration_seconds_count{node="a"} 4
metrics_server_kubelet_request_duration_seconds_bucket{le="0.005",node="b,\"x\""} 5
metrics_server_kubelet_request_duration_seconds_bucket{node="b,\"x\"",le="0.01"} 6
metrics_server_kubelet_request_duration_seconds_bucket{node="b,\"x\"",le="+Inf"} 6
metrics_server_kubelet_request_duration_seconds_sum{node="b,\"x\""} 0.02
metrics_server_kubelet_request_duration_seconds_count{node="b,\"x\""} 6
metrics_server_api_metric_freshness_seconds_bucket{le="0.5"} 0
"#;

    #[test]
    fn a_histogram_is_summed_over_its_label_sets() {
        let h = PromHistogram::parse(TEXT, "metrics_server_kubelet_request_duration_seconds")
            .expect("present");
        assert_eq!(
            h.buckets,
            vec![(0.005, 6.0), (0.01, 9.0), (f64::INFINITY, 10.0)]
        );
        assert_eq!(h.count, 10.0);
        assert!((h.sum - 0.07).abs() < 1e-12);
        assert!(PromHistogram::parse(TEXT, "absent_seconds").is_none());
    }

    #[test]
    fn quantiles_interpolate_inside_the_bucket() {
        let h = PromHistogram {
            buckets: vec![(1.0, 10.0), (2.0, 20.0), (f64::INFINITY, 20.0)],
            sum: 0.0,
            count: 20.0,
        };
        assert_eq!(h.quantile(0.5), Some(1.0));
        assert_eq!(h.quantile(0.75), Some(1.5));
        assert_eq!(PromHistogram::default().quantile(0.5), None);
    }

    #[test]
    fn the_change_between_scrapes_is_what_a_window_observed() {
        let a = PromHistogram {
            buckets: vec![(1.0, 10.0), (f64::INFINITY, 12.0)],
            sum: 5.0,
            count: 12.0,
        };
        let b = PromHistogram {
            buckets: vec![(1.0, 10.0), (f64::INFINITY, 22.0)],
            sum: 25.0,
            count: 22.0,
        };
        let d = b.since(&a);
        assert_eq!(d.buckets, vec![(1.0, 0.0), (f64::INFINITY, 10.0)]);
        assert_eq!(d.quantile(0.5), Some(1.0), "beyond the last finite bound");
    }

    #[test]
    fn a_whole_second_timestamp_matches_the_sample_of_that_second() {
        let (ms, precise) = parse_timestamp("2026-11-26T07:55:01Z").expect("parses");
        assert!(!precise);
        assert_eq!(ms % 1000, 0);
        let served = [Some(ms + 420), Some(ms - 580)];
        assert_eq!(matching_sample(ms, precise, &served), Some(ms + 420));
        assert_eq!(matching_sample(ms + 5000, precise, &served), None);
        let (fine, precise) = parse_timestamp("2026-11-26T07:55:01.420Z").expect("parses");
        assert!(precise);
        assert_eq!(matching_sample(fine, precise, &served), Some(ms + 420));
    }

    #[test]
    fn the_node_timestamp_is_read_from_node_metrics() {
        let body = br#"{"kind":"NodeMetrics","metadata":{"name":"node-00000"},"timestamp":"2026-11-26T07:55:01Z","window":"1.001s","usage":{"cpu":"1m","memory":"1Ki"}}"#;
        assert!(node_timestamp(body).is_some());
        assert!(node_timestamp(b"{}").is_none());
    }
}
