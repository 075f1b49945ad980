//! Tests of the lexer and the decoder together: every decoding rule and format corner, then
//! property tests that render generated payloads, parse them back, and feed garbage.

use std::borrow::Cow;

use proptest::prelude::*;

use super::fixtures::{self, realistic_body, SAMPLE_TIME_MS};
use super::text::{Entry, Label, LexError, Lexer, Lines};
use super::*;
use crate::model::{ContainerScrape, MetricsPoint, PodScrape};

/// The time a test request was "sent": 2023-11-14T22:13:20Z, in nanoseconds.
const REQUEST_TIME: UnixNanos = 1_700_000_000_000_000_000;

fn decode(body: &str) -> Decoded<'_> {
    match decode_resource_metrics(body.as_bytes(), REQUEST_TIME) {
        Ok(decoded) => decoded,
        Err(error) => panic!("body failed to decode: {error}"),
    }
}

fn point(start_time: UnixNanos, timestamp: UnixNanos, cpu: u64, memory: u64) -> MetricsPoint {
    MetricsPoint {
        start_time,
        timestamp,
        cumulative_cpu_used: cpu,
        memory_usage: memory,
    }
}

/// A complete container: CPU 1 s at ts 1000 ms, memory 1000 bytes.
fn container_lines(namespace: &str, pod: &str, container: &str) -> String {
    format!(
        "container_cpu_usage_seconds_total{{container=\"{container}\",namespace=\"{namespace}\",pod=\"{pod}\"}} 1 1000\n\
         container_memory_working_set_bytes{{container=\"{container}\",namespace=\"{namespace}\",pod=\"{pod}\"}} 1000 1000\n"
    )
}

fn pod_names<'a>(decoded: &'a Decoded<'_>) -> Vec<(&'a str, &'a str)> {
    decoded
        .scrape
        .pods
        .iter()
        .map(|p| (p.namespace.as_ref(), p.name.as_ref()))
        .collect()
}

/// A lexed line: value, timestamp, and owned label pairs.
type Lexed = (f64, Option<i64>, Vec<(String, String)>);

fn lex_one(line: &str) -> Result<Lexed, LexError> {
    let mut lexer = Lexer::new(line.as_bytes());
    let sample = lexer.next().ok_or(LexError::MissingValue)??;
    let labels = sample
        .labels
        .iter()
        .map(|label| label.map(|l| (l.name.to_string(), l.value.into_owned())))
        .collect::<Result<Vec<_>, _>>()?;
    Ok((sample.value, sample.timestamp_ms, labels))
}

// === decoding rules ===

#[test]
fn realistic_body_decodes_every_pod_container_and_the_node() {
    let body = realistic_body(110, 3);
    let decoded = decode_resource_metrics(&body, REQUEST_TIME).unwrap();
    assert_eq!(decoded.scrape.pods.len(), 110);
    assert!(decoded.scrape.pods.iter().all(|p| p.containers.len() == 3));
    let node = decoded.scrape.node.unwrap();
    assert_eq!(node.timestamp, (SAMPLE_TIME_MS - 2_403) * 1_000_000);
    assert_eq!(node.cumulative_cpu_used, (357_354.912_345_f64 * 1e9) as u64);
    assert_eq!(node.memory_usage, 1_616_273_408);
    assert_eq!(decoded.stats.skipped_lines, 0);
    // 330 containers x (cpu, memory, start time), the two node series and the scrape error.
    assert_eq!(decoded.stats.samples, 330 * 3 + 3);
    // Swap series (330 + 1) and pod totals (2 x 110) are ignored, not skipped.
    assert_eq!(decoded.stats.ignored_series, 331 + 220);
    for fixture in fixtures::containers(110, 3) {
        let pod = decoded
            .scrape
            .pods
            .iter()
            .find(|p| p.namespace == fixture.namespace && p.name == fixture.pod)
            .unwrap();
        let container = pod
            .containers
            .iter()
            .find(|c| c.name == fixture.container)
            .unwrap();
        assert_eq!(
            container.point.cumulative_cpu_used,
            (fixture.cpu_seconds * 1e9) as u64
        );
        assert_eq!(container.point.memory_usage, fixture.memory_bytes);
        assert_eq!(
            container.point.start_time,
            (fixture.start_time_seconds * 1e9) as i64
        );
        assert_eq!(container.point.timestamp, SAMPLE_TIME_MS * 1_000_000);
    }
}

#[test]
fn upstream_example_line_becomes_nanocore_seconds_and_a_nanosecond_timestamp() {
    let body = "container_cpu_usage_seconds_total{container=\"coredns\",namespace=\"kube-system\",pod=\"coredns-558bd4d5db-4dpjz\"} 4.710169 1633253812125\n\
                container_memory_working_set_bytes{container=\"coredns\",namespace=\"kube-system\",pod=\"coredns-558bd4d5db-4dpjz\"} 1.253376e+07 1633253812125\n\
                container_start_time_seconds{container=\"coredns\",namespace=\"kube-system\",pod=\"coredns-558bd4d5db-4dpjz\"} 1.6332537806635373e+09\n";
    let decoded = decode(body);
    assert_eq!(
        decoded.scrape.pods,
        vec![PodScrape {
            namespace: Cow::Borrowed("kube-system"),
            name: Cow::Borrowed("coredns-558bd4d5db-4dpjz"),
            containers: smallvec::smallvec![ContainerScrape {
                name: Cow::Borrowed("coredns"),
                point: point(
                    (1.633_253_780_663_537_3e9_f64 * 1e9) as i64,
                    1_633_253_812_125_000_000,
                    (4.710169_f64 * 1e9) as u64,
                    12_533_760,
                ),
            }],
        }]
    );
}

#[test]
fn names_without_escapes_borrow_from_the_body() {
    let body = container_lines("ns", "pod", "c");
    let decoded = decode(&body);
    let pod = &decoded.scrape.pods[0];
    assert!(matches!(pod.namespace, Cow::Borrowed(_)));
    assert!(matches!(pod.name, Cow::Borrowed(_)));
    assert!(matches!(pod.containers[0].name, Cow::Borrowed(_)));
}

#[test]
fn sample_without_timestamp_takes_the_request_time() {
    let body = "node_cpu_usage_seconds_total 10\nnode_memory_working_set_bytes 2048\n";
    let node = decode(body).scrape.node.unwrap();
    assert_eq!(node.timestamp, REQUEST_TIME);
    assert_eq!(node.cumulative_cpu_used, 10_000_000_000);
    assert_eq!(node.memory_usage, 2048);
}

#[test]
fn memory_is_truncated_to_integer_bytes_and_cpu_to_integer_nanocore_seconds() {
    let body =
        "node_cpu_usage_seconds_total 1.0000000019 5\nnode_memory_working_set_bytes 2048.9 5\n";
    let node = decode(body).scrape.node.unwrap();
    assert_eq!(node.cumulative_cpu_used, 1_000_000_001);
    assert_eq!(node.memory_usage, 2048);
}

#[test]
fn node_point_takes_the_cpu_sample_timestamp_not_the_memory_one() {
    let body = "node_cpu_usage_seconds_total 10 1000\nnode_memory_working_set_bytes 2048 2000\n";
    assert_eq!(decode(body).scrape.node.unwrap().timestamp, 1_000_000_000);
    let reversed =
        "node_memory_working_set_bytes 2048 2000\nnode_cpu_usage_seconds_total 10 1000\n";
    assert_eq!(
        decode(reversed).scrape.node.unwrap().timestamp,
        1_000_000_000
    );
}

#[test]
fn container_point_takes_the_cpu_sample_timestamp_not_the_memory_one() {
    let body = "container_cpu_usage_seconds_total{container=\"c\",namespace=\"n\",pod=\"p\"} 1 1000\n\
                container_memory_working_set_bytes{container=\"c\",namespace=\"n\",pod=\"p\"} 5 3000\n";
    assert_eq!(
        decode(body).scrape.pods[0].containers[0].point.timestamp,
        1_000_000_000
    );
}

#[test]
fn node_point_with_zero_cpu_is_dropped() {
    assert_eq!(
        decode("node_cpu_usage_seconds_total 0 5\nnode_memory_working_set_bytes 1 5\n")
            .scrape
            .node,
        None
    );
}

#[test]
fn node_point_with_zero_memory_is_dropped() {
    assert_eq!(
        decode("node_cpu_usage_seconds_total 1 5\nnode_memory_working_set_bytes 0 5\n")
            .scrape
            .node,
        None
    );
}

#[test]
fn node_point_with_zero_timestamp_is_dropped() {
    assert_eq!(
        decode("node_cpu_usage_seconds_total 1 0\nnode_memory_working_set_bytes 1 5\n")
            .scrape
            .node,
        None
    );
}

#[test]
fn node_point_missing_a_series_is_dropped() {
    assert_eq!(
        decode("node_cpu_usage_seconds_total 1 5\n").scrape.node,
        None
    );
    assert_eq!(
        decode("node_memory_working_set_bytes 1 5\n").scrape.node,
        None
    );
}

#[test]
fn cpu_below_one_nanocore_second_counts_as_zero() {
    assert_eq!(
        decode("node_cpu_usage_seconds_total 1e-10 5\nnode_memory_working_set_bytes 1 5\n")
            .scrape
            .node,
        None
    );
}

#[test]
fn container_missing_a_label_is_skipped_and_counted() {
    for labels in [
        "container=\"c\",namespace=\"n\"",
        "container=\"c\",pod=\"p\"",
        "namespace=\"n\",pod=\"p\"",
        "",
    ] {
        let body = format!("container_cpu_usage_seconds_total{{{labels}}} 1 5\n");
        let decoded = decode(&body);
        assert!(decoded.scrape.pods.is_empty(), "{labels}");
        assert_eq!(
            decoded.stats.skipped(SkipReason::MissingLabels),
            1,
            "{labels}"
        );
        assert_eq!(decoded.stats.skipped_lines, 1);
    }
}

#[test]
fn container_with_an_empty_label_value_counts_as_missing_labels() {
    let body = "container_cpu_usage_seconds_total{container=\"\",namespace=\"n\",pod=\"p\"} 1 5\n";
    assert_eq!(decode(body).stats.skipped(SkipReason::MissingLabels), 1);
}

#[test]
fn a_container_missing_labels_does_not_affect_other_pods() {
    let body = format!(
        "{}container_memory_working_set_bytes{{container=\"c\",pod=\"p\"}} 1 5\n",
        container_lines("n", "p", "c")
    );
    let decoded = decode(&body);
    assert_eq!(decoded.scrape.pods.len(), 1);
    assert_eq!(decoded.stats.skipped(SkipReason::MissingLabels), 1);
}

#[test]
fn nan_infinite_and_negative_values_are_skipped_as_unusable() {
    for value in ["NaN", "+Inf", "-Inf", "-1", "-1e-9"] {
        let body =
            format!("node_cpu_usage_seconds_total {value} 5\nnode_memory_working_set_bytes 1 5\n");
        let decoded = decode(&body);
        assert_eq!(decoded.scrape.node, None, "{value}");
        assert_eq!(
            decoded.stats.skipped(SkipReason::UnusableValue),
            1,
            "{value}"
        );
    }
}

#[test]
fn a_container_with_an_unusable_value_drops_its_pod() {
    let body = "container_cpu_usage_seconds_total{container=\"c\",namespace=\"n\",pod=\"p\"} NaN 5\n\
                container_memory_working_set_bytes{container=\"c\",namespace=\"n\",pod=\"p\"} 5 5\n";
    let decoded = decode(body);
    assert!(decoded.scrape.pods.is_empty());
    assert_eq!(decoded.stats.skipped(SkipReason::UnusableValue), 1);
}

#[test]
fn pod_is_dropped_when_any_container_reports_zero_cpu() {
    let body = format!(
        "{}container_cpu_usage_seconds_total{{container=\"b\",namespace=\"n\",pod=\"p\"}} 0 5\n\
         container_memory_working_set_bytes{{container=\"b\",namespace=\"n\",pod=\"p\"}} 5 5\n{}",
        container_lines("n", "p", "a"),
        container_lines("n", "other", "a"),
    );
    assert_eq!(pod_names(&decode(&body)), vec![("n", "other")]);
}

#[test]
fn pod_is_dropped_when_any_container_reports_zero_memory() {
    let body = format!(
        "{}container_cpu_usage_seconds_total{{container=\"b\",namespace=\"n\",pod=\"p\"}} 1 5\n\
         container_memory_working_set_bytes{{container=\"b\",namespace=\"n\",pod=\"p\"}} 0 5\n",
        container_lines("n", "p", "a"),
    );
    assert!(decode(&body).scrape.pods.is_empty());
}

#[test]
fn pod_is_dropped_when_a_container_lacks_memory() {
    let body = format!(
        "{}container_cpu_usage_seconds_total{{container=\"b\",namespace=\"n\",pod=\"p\"}} 1 5\n",
        container_lines("n", "p", "a"),
    );
    assert!(decode(&body).scrape.pods.is_empty());
}

#[test]
fn pod_is_dropped_when_a_container_has_only_a_start_time() {
    let body = format!(
        "{}container_start_time_seconds{{container=\"b\",namespace=\"n\",pod=\"p\"}} 1.7e9\n",
        container_lines("n", "p", "a"),
    );
    assert!(decode(&body).scrape.pods.is_empty());
}

#[test]
fn container_start_time_becomes_unix_nanoseconds() {
    let body = format!(
        "{}container_start_time_seconds{{container=\"a\",namespace=\"n\",pod=\"p\"}} 1.5e9\n",
        container_lines("n", "p", "a"),
    );
    assert_eq!(
        decode(&body).scrape.pods[0].containers[0].point.start_time,
        1_500_000_000_000_000_000
    );
}

#[test]
fn a_repeated_container_sample_keeps_the_last_value() {
    let body = format!(
        "{}container_cpu_usage_seconds_total{{container=\"a\",namespace=\"n\",pod=\"p\"}} 2 7\n",
        container_lines("n", "p", "a"),
    );
    let point = decode(&body).scrape.pods[0].containers[0].point;
    assert_eq!(point.cumulative_cpu_used, 2_000_000_000);
    assert_eq!(point.timestamp, 7_000_000);
}

#[test]
fn scrape_error_of_one_is_a_kubelet_scrape_error() {
    let body = format!("{}scrape_error 1\n", container_lines("n", "p", "a"));
    assert_eq!(
        decode_resource_metrics(body.as_bytes(), REQUEST_TIME),
        Err(DecodeError::KubeletScrapeError)
    );
}

#[test]
fn resource_scrape_error_of_one_is_a_kubelet_scrape_error() {
    let body = "# TYPE resource_scrape_error gauge\nresource_scrape_error 1\n";
    assert_eq!(
        decode_resource_metrics(body.as_bytes(), REQUEST_TIME),
        Err(DecodeError::KubeletScrapeError)
    );
}

#[test]
fn scrape_error_of_zero_is_not_an_error() {
    let body = format!(
        "{}resource_scrape_error 0\nscrape_error 0\n",
        container_lines("n", "p", "a")
    );
    assert_eq!(decode(&body).scrape.pods.len(), 1);
}

#[test]
fn pods_and_containers_keep_the_order_of_first_appearance() {
    // Sorted by container name first, as the kubelet writes: pods interleave.
    let body = "container_cpu_usage_seconds_total{container=\"a\",namespace=\"n\",pod=\"p2\"} 1 5\n\
                container_cpu_usage_seconds_total{container=\"a\",namespace=\"n\",pod=\"p1\"} 1 5\n\
                container_cpu_usage_seconds_total{container=\"b\",namespace=\"n\",pod=\"p1\"} 1 5\n\
                container_cpu_usage_seconds_total{container=\"c\",namespace=\"n\",pod=\"p2\"} 1 5\n\
                container_memory_working_set_bytes{container=\"c\",namespace=\"n\",pod=\"p2\"} 1 5\n\
                container_memory_working_set_bytes{container=\"a\",namespace=\"n\",pod=\"p1\"} 1 5\n\
                container_memory_working_set_bytes{container=\"b\",namespace=\"n\",pod=\"p1\"} 1 5\n\
                container_memory_working_set_bytes{container=\"a\",namespace=\"n\",pod=\"p2\"} 1 5\n";
    let decoded = decode(body);
    assert_eq!(pod_names(&decoded), vec![("n", "p2"), ("n", "p1")]);
    let containers = |i: usize| -> Vec<&str> {
        decoded.scrape.pods[i]
            .containers
            .iter()
            .map(|c| c.name.as_ref())
            .collect()
    };
    assert_eq!(containers(0), vec!["a", "c"]);
    assert_eq!(containers(1), vec!["a", "b"]);
}

#[test]
fn same_pod_name_in_two_namespaces_is_two_pods() {
    let body = format!(
        "{}{}",
        container_lines("a", "p", "c"),
        container_lines("b", "p", "c")
    );
    assert_eq!(pod_names(&decode(&body)), vec![("a", "p"), ("b", "p")]);
}

#[test]
fn a_body_without_usable_points_is_ok_and_empty() {
    for body in [
        "",
        "\n",
        "# HELP x y\n",
        "unknown_series 1\n",
        "container_cpu_usage_seconds_total{",
    ] {
        let decoded = decode(body);
        assert_eq!(decoded.scrape.node, None);
        assert!(decoded.scrape.pods.is_empty());
    }
}

#[test]
fn unknown_series_are_ignored_before_their_labels_are_parsed() {
    // Broken labels on a series we do not use are never looked at, so nothing is skipped.
    let body =
        "machine_cpu_cores{a=\"unterminated} 4\ncontainer_swap_usage_bytes{container=\"c\"} 0\n";
    let decoded = decode(body);
    assert_eq!(decoded.stats.ignored_series, 2);
    assert_eq!(decoded.stats.skipped_lines, 0);
}

#[test]
fn pod_total_series_are_known_and_ignored() {
    let body = "pod_cpu_usage_seconds_total{namespace=\"n\",pod=\"p\"} 1 5\npod_memory_working_set_bytes{namespace=\"n\",pod=\"p\"} 1 5\n";
    let decoded = decode(body);
    assert!(decoded.scrape.pods.is_empty());
    assert_eq!(decoded.stats.ignored_series, 2);
    assert_eq!(decoded.stats.samples, 0);
}

#[test]
fn metric_name_must_match_exactly_not_by_prefix() {
    let body = "node_cpu_usage_seconds_total_extra 1 5\nnode_cpu_usage_seconds_totalx 1 5\nnode_memory_working_set_bytes 1 5\n";
    let decoded = decode(body);
    assert_eq!(decoded.scrape.node, None);
    assert_eq!(decoded.stats.ignored_series, 2);
}

// === format corners ===

#[test]
fn help_type_and_other_comments_are_skipped() {
    let body = format!(
        "# HELP node_cpu_usage_seconds_total [STABLE] text with {{braces}} and \"quotes\"\n\
         # TYPE node_cpu_usage_seconds_total counter\n\
         #just a comment\n  # indented comment\n#\n{}",
        container_lines("n", "p", "a")
    );
    let decoded = decode(&body);
    assert_eq!(decoded.stats.comments, 5);
    assert_eq!(decoded.stats.skipped_lines, 0);
    assert_eq!(decoded.scrape.pods.len(), 1);
}

#[test]
fn escaped_label_values_are_unescaped_into_owned_strings() {
    let body = "container_cpu_usage_seconds_total{container=\"a\\\\b\",namespace=\"q\\\"t\\\"\",pod=\"line\\nbreak\"} 1 5\n\
                container_memory_working_set_bytes{container=\"a\\\\b\",namespace=\"q\\\"t\\\"\",pod=\"line\\nbreak\"} 1 5\n";
    let decoded = decode(body);
    let pod = &decoded.scrape.pods[0];
    assert_eq!(pod.namespace, "q\"t\"");
    assert_eq!(pod.name, "line\nbreak");
    assert_eq!(pod.containers[0].name, "a\\b");
    assert!(matches!(pod.namespace, Cow::Owned(_)));
    assert!(matches!(pod.containers[0].name, Cow::Owned(_)));
}

#[test]
fn an_unknown_escape_is_kept_as_written() {
    let (_, _, labels) = lex_one("m{a=\"x\\ty\"} 1").unwrap();
    assert_eq!(labels, vec![("a".to_string(), "x\\ty".to_string())]);
}

#[test]
fn braces_commas_and_equals_inside_label_values_are_data() {
    let (value, ts, labels) = lex_one("m{a=\"}{,=\",b=\"x}\"} 2 3").unwrap();
    assert_eq!((value, ts), (2.0, Some(3)));
    assert_eq!(
        labels,
        vec![("a".into(), "}{,=".into()), ("b".into(), "x}".into())]
    );
}

#[test]
fn labels_are_read_in_any_order() {
    let body = "container_cpu_usage_seconds_total{pod=\"p\",container=\"c\",namespace=\"n\"} 1 5\n\
                container_memory_working_set_bytes{namespace=\"n\",extra=\"x\",pod=\"p\",container=\"c\"} 1 5\n";
    let decoded = decode(body);
    assert_eq!(pod_names(&decoded), vec![("n", "p")]);
    assert_eq!(decoded.scrape.pods[0].containers.len(), 1);
}

#[test]
fn special_and_exponent_floats_are_lexed() {
    assert!(lex_one("m NaN").unwrap().0.is_nan());
    assert_eq!(lex_one("m +Inf").unwrap().0, f64::INFINITY);
    assert_eq!(lex_one("m -Inf").unwrap().0, f64::NEG_INFINITY);
    assert_eq!(lex_one("m 1.5e+07").unwrap().0, 1.5e7);
    assert_eq!(lex_one("m 2E-3").unwrap().0, 2e-3);
    assert_eq!(lex_one("m -0.25 -7").unwrap(), (-0.25, Some(-7), vec![]));
}

#[test]
fn blank_lines_crlf_and_a_last_line_without_newline_are_accepted() {
    let body =
        "\r\n\n  \t\r\nnode_cpu_usage_seconds_total 1 5\r\n\r\nnode_memory_working_set_bytes 7 5";
    let decoded = decode(body);
    assert_eq!(
        decoded.scrape.node,
        Some(point(0, 5_000_000, 1_000_000_000, 7))
    );
    assert_eq!(decoded.stats.comments, 4);
    assert_eq!(decoded.stats.skipped_lines, 0);
}

#[test]
fn lines_split_on_newlines_and_drop_one_carriage_return() {
    let lines: Vec<&[u8]> = Lines::new(b"a\r\nb\n\nc\r\r\nd").collect();
    assert_eq!(lines, vec![&b"a"[..], b"b", b"", b"c\r", b"d"]);
    assert_eq!(Lines::new(b"").count(), 0);
    assert_eq!(Lines::new(b"x\n").count(), 1);
}

#[test]
fn an_empty_label_set_is_accepted() {
    assert_eq!(lex_one("m{} 1 2").unwrap(), (1.0, Some(2), vec![]));
    let decoded =
        decode("node_cpu_usage_seconds_total{} 1 5\nnode_memory_working_set_bytes{ } 1 5\n");
    assert!(decoded.scrape.node.is_some());
}

#[test]
fn whitespace_the_format_allows_is_accepted() {
    let expected = (
        1.0,
        Some(2),
        vec![
            ("a".to_string(), "x".to_string()),
            ("b".to_string(), "y".to_string()),
        ],
    );
    for line in [
        "m{a=\"x\",b=\"y\"} 1 2",
        "  m{a=\"x\",b=\"y\"} 1 2",
        "\tm\t{a=\"x\",b=\"y\"}\t1\t2\t",
        "m { a = \"x\" , b = \"y\" } 1 2   ",
        "m{a=\"x\",b=\"y\"}1 2",
        "m{a=\"x\",b=\"y\",} 1 2",
        "m{ a=\"x\", b=\"y\" , } 1  2",
    ] {
        assert_eq!(lex_one(line), Ok(expected.clone()), "{line:?}");
    }
}

#[test]
fn a_lone_comma_or_a_double_comma_in_the_label_set_is_rejected() {
    assert_eq!(lex_one("m{,} 1"), Err(LexError::InvalidLabelName));
    assert_eq!(lex_one("m{a=\"x\",,} 1"), Err(LexError::InvalidLabelName));
}

#[test]
fn trailing_comma_is_accepted_by_the_decoder() {
    let body = "container_cpu_usage_seconds_total{container=\"c\",namespace=\"n\",pod=\"p\",} 1 5\n\
                container_memory_working_set_bytes{container=\"c\",namespace=\"n\",pod=\"p\",} 1 5\n";
    assert_eq!(decode(body).scrape.pods.len(), 1);
}

// === bad input ===

#[test]
fn each_malformed_line_is_skipped_with_its_reason() {
    let cases: &[(&str, SkipReason)] = &[
        ("node_cpu_usage_seconds_total", SkipReason::MissingValue),
        ("node_cpu_usage_seconds_total   ", SkipReason::MissingValue),
        ("node_cpu_usage_seconds_total{} ", SkipReason::MissingValue),
        ("node_cpu_usage_seconds_total one", SkipReason::InvalidValue),
        (
            "node_cpu_usage_seconds_total 1.2.3 5",
            SkipReason::InvalidValue,
        ),
        (
            "node_cpu_usage_seconds_total 1 5.5",
            SkipReason::InvalidTimestamp,
        ),
        (
            "node_cpu_usage_seconds_total 1 99999999999999999999",
            SkipReason::InvalidTimestamp,
        ),
        (
            "node_cpu_usage_seconds_total 1 9223372036854775",
            SkipReason::TimestampOutOfRange,
        ),
        (
            "node_cpu_usage_seconds_total 1 5 extra",
            SkipReason::TrailingData,
        ),
        (
            "node_cpu_usage_seconds_total{a=\"b\" 1 5",
            SkipReason::UnclosedLabels,
        ),
        (
            "container_cpu_usage_seconds_total{container=\"c} 1 5",
            SkipReason::UnterminatedQuote,
        ),
        (
            "container_cpu_usage_seconds_total{container=\"c\\\"} 1 5",
            SkipReason::UnterminatedQuote,
        ),
        (
            "container_cpu_usage_seconds_total{container} 1 5",
            SkipReason::MissingLabelValue,
        ),
        (
            "container_cpu_usage_seconds_total{container=c} 1 5",
            SkipReason::MissingLabelValue,
        ),
        (
            "container_cpu_usage_seconds_total{container=\"c\" pod=\"p\"} 1 5",
            SkipReason::MissingSeparator,
        ),
        (
            "container_cpu_usage_seconds_total{1abc=\"c\"} 1 5",
            SkipReason::InvalidLabelName,
        ),
        (
            "container_cpu_usage_seconds_total{-ab=\"c\"} 1 5",
            SkipReason::InvalidLabelName,
        ),
        (
            "container_cpu_usage_seconds_total{a-b=\"c\"} 1 5",
            SkipReason::MissingLabelValue,
        ),
        ("9node 1 5", SkipReason::InvalidName),
        ("{a=\"b\"} 1 5", SkipReason::InvalidName),
        ("node-cpu 1 5", SkipReason::InvalidName),
    ];
    for (line, reason) in cases {
        let decoded = decode(line);
        assert_eq!(
            decoded.stats.skipped(*reason),
            1,
            "{line:?}: {:?}",
            decoded.stats
        );
        assert_eq!(decoded.stats.skipped_lines, 1, "{line:?}");
        assert_eq!(decoded.stats.samples, 0, "{line:?}");
    }
}

#[test]
fn invalid_utf8_in_a_label_value_is_skipped() {
    let mut body = b"container_cpu_usage_seconds_total{container=\"".to_vec();
    body.extend_from_slice(&[0xff, 0xfe]);
    body.extend_from_slice(b"\",namespace=\"n\",pod=\"p\"} 1 5\n");
    let decoded = decode_resource_metrics(&body, REQUEST_TIME).unwrap();
    assert_eq!(decoded.stats.skipped(SkipReason::InvalidUtf8), 1);
    // Also after an escape, where the value is copied.
    let mut body = b"container_cpu_usage_seconds_total{container=\"\\\\".to_vec();
    body.extend_from_slice(&[0xc3]);
    body.extend_from_slice(b"\",namespace=\"n\",pod=\"p\"} 1 5\n");
    let decoded = decode_resource_metrics(&body, REQUEST_TIME).unwrap();
    assert_eq!(decoded.stats.skipped(SkipReason::InvalidUtf8), 1);
}

#[test]
fn invalid_utf8_in_a_metric_name_is_an_invalid_name() {
    let decoded = decode_resource_metrics(b"node_\xffcpu 1 5\n", REQUEST_TIME).unwrap();
    assert_eq!(decoded.stats.skipped(SkipReason::InvalidName), 1);
}

#[test]
fn a_bad_line_does_not_disturb_the_lines_around_it() {
    let body = format!(
        "node_cpu_usage_seconds_total 1 5\ncontainer_cpu_usage_seconds_total{{container=\"x\n{}node_memory_working_set_bytes 1 5\n",
        container_lines("n", "p", "a")
    );
    let decoded = decode(&body);
    assert!(decoded.scrape.node.is_some());
    assert_eq!(decoded.scrape.pods.len(), 1);
    assert_eq!(decoded.stats.skipped_lines, 1);
}

#[test]
fn a_multi_megabyte_line_is_skipped_and_the_rest_decodes() {
    let long_value = "x".repeat(4 << 20);
    let body = format!(
        "container_cpu_usage_seconds_total{{container=\"{long_value}\n\
         container_cpu_usage_seconds_total{{container=\"{long_value}}} 1 5\n{}",
        container_lines("n", "p", "a")
    );
    let decoded = decode(&body);
    assert_eq!(decoded.stats.skipped(SkipReason::UnclosedLabels), 1);
    assert_eq!(decoded.stats.skipped(SkipReason::UnterminatedQuote), 1);
    assert_eq!(decoded.scrape.pods.len(), 1);
    // A long but valid value is simply data.
    let body = format!(
        "container_cpu_usage_seconds_total{{container=\"{long_value}\",namespace=\"n\",pod=\"p\"}} 1 5\n\
         container_memory_working_set_bytes{{container=\"{long_value}\",namespace=\"n\",pod=\"p\"}} 1 5\n"
    );
    assert_eq!(
        decode(&body).scrape.pods[0].containers[0].name.len(),
        4 << 20
    );
}

#[test]
fn a_line_of_opening_braces_and_quotes_is_handled_without_panicking() {
    let body = format!(
        "container_cpu_usage_seconds_total{}\n",
        "{\"\\".repeat(100_000)
    );
    let decoded = decode(&body);
    assert_eq!(decoded.stats.skipped_lines, 1);
}

#[test]
fn the_lexer_iterator_yields_every_sample_of_the_realistic_body() {
    let body = realistic_body(10, 2);
    let samples: Vec<_> = Lexer::new(&body).collect::<Result<_, _>>().unwrap();
    // Per container: cpu, memory, start time, swap; per pod: two totals; node: three; one error.
    assert_eq!(samples.len(), 20 * 4 + 10 * 2 + 3 + 1);
    let first = &samples[0];
    assert_eq!(first.name, "container_cpu_usage_seconds_total");
    let labels: Vec<Label<'_>> = first.labels.iter().collect::<Result<_, _>>().unwrap();
    assert_eq!(
        labels.iter().map(|l| l.name).collect::<Vec<_>>(),
        vec!["container", "namespace", "pod"]
    );
    assert!(labels.iter().all(|l| matches!(l.value, Cow::Borrowed(_))));
}

#[test]
fn entries_classify_blank_comment_series_and_invalid_lines() {
    let mut lexer = Lexer::new(b"\n# HELP x\nname{a=\"b\"} 1\n!bad\n");
    assert_eq!(lexer.next_entry(), Some(Entry::Blank));
    assert_eq!(lexer.next_entry(), Some(Entry::Comment(b" HELP x")));
    assert!(matches!(lexer.next_entry(), Some(Entry::Series(line)) if line.name == "name"));
    assert_eq!(
        lexer.next_entry(),
        Some(Entry::Invalid(LexError::InvalidName))
    );
    assert_eq!(lexer.next_entry(), None);
}

#[test]
fn skip_reasons_have_distinct_names_and_indices() {
    for (index, reason) in SkipReason::ALL.iter().enumerate() {
        assert_eq!(*reason as usize, index);
    }
    let mut names: Vec<_> = SkipReason::ALL.iter().map(|r| r.as_str()).collect();
    names.sort_unstable();
    names.dedup();
    assert_eq!(names.len(), SkipReason::COUNT);
}

#[test]
fn go_float_formats_like_go() {
    assert_eq!(fixtures::go_float(12_533_760.0), "1.253376e+07");
    assert_eq!(fixtures::go_float(1e6), "1e+06");
    assert_eq!(fixtures::go_float(357.35491), "357.35491");
    assert_eq!(fixtures::go_float(123_456.0), "123456");
    assert_eq!(fixtures::go_float(0.0001), "0.0001");
    assert_eq!(fixtures::go_float(0.00001), "1e-05");
    assert_eq!(fixtures::go_float(0.0), "0");
}

// === property tests ===

#[derive(Clone, Debug)]
struct ModelContainer {
    name: String,
    cpu_seconds: f64,
    memory_bytes: u64,
    start_seconds: Option<f64>,
    timestamp_ms: Option<i64>,
}

#[derive(Clone, Debug)]
struct ModelPod {
    namespace: String,
    name: String,
    containers: Vec<ModelContainer>,
}

#[derive(Clone, Debug)]
struct ModelNode {
    cpu_seconds: f64,
    memory_bytes: u64,
    timestamp_ms: Option<i64>,
}

/// How to write a model out: each knob is a format freedom the decoder must not care about.
#[derive(Clone, Debug)]
struct Style {
    crlf: bool,
    final_newline: bool,
    comments: bool,
    blank_lines: bool,
    /// Index of a permutation of (container, namespace, pod).
    label_order: usize,
    extra_label: bool,
    /// 0 compact, 1 blanks and tabs everywhere allowed, 2 trailing comma.
    spacing: u8,
    /// 0 Display, 1 exponent, 2 Go-style.
    float_form: u8,
    reverse_later_families: bool,
    node_first: bool,
}

fn name_strategy() -> impl Strategy<Value = String> {
    // Mostly plain names, sometimes with every byte that needs escaping or looks like syntax.
    prop_oneof![
        4 => "[a-z][a-z0-9-]{0,12}",
        1 => "[a-z\"\\\\\n{}=, #é\t]{1,8}",
    ]
}

fn container_strategy() -> impl Strategy<Value = ModelContainer> {
    (
        name_strategy(),
        1e-6f64..1e7,
        1u64..(1 << 50),
        proptest::option::of(1.0e9f64..2.0e9),
        proptest::option::of(1i64..4_000_000_000_000),
    )
        .prop_map(
            |(name, cpu_seconds, memory_bytes, start_seconds, timestamp_ms)| ModelContainer {
                name,
                cpu_seconds,
                memory_bytes,
                start_seconds,
                timestamp_ms,
            },
        )
}

fn model_strategy() -> impl Strategy<Value = (Option<ModelNode>, Vec<ModelPod>)> {
    let node = proptest::option::of(
        (
            1e-6f64..1e9,
            1u64..(1 << 50),
            proptest::option::of(1i64..4_000_000_000_000),
        )
            .prop_map(|(cpu_seconds, memory_bytes, timestamp_ms)| ModelNode {
                cpu_seconds,
                memory_bytes,
                timestamp_ms,
            }),
    );
    let pod = (
        name_strategy(),
        name_strategy(),
        proptest::collection::vec(container_strategy(), 1..4),
    );
    let pods = proptest::collection::vec(pod, 0..8).prop_map(|pods| {
        pods.into_iter()
            .enumerate()
            .map(|(i, (namespace, name, containers))| ModelPod {
                namespace,
                // Suffixes make pods and containers unique whatever the random parts are.
                name: format!("{name}{i}"),
                containers: containers
                    .into_iter()
                    .enumerate()
                    .map(|(j, c)| ModelContainer {
                        name: format!("{}{j}", c.name),
                        ..c
                    })
                    .collect(),
            })
            .collect()
    });
    (node, pods)
}

fn style_strategy() -> impl Strategy<Value = Style> {
    (
        any::<bool>(),
        any::<bool>(),
        any::<bool>(),
        any::<bool>(),
        0usize..6,
        any::<bool>(),
        0u8..3,
        0u8..3,
        any::<bool>(),
        any::<bool>(),
    )
        .prop_map(
            |(
                crlf,
                final_newline,
                comments,
                blank_lines,
                label_order,
                extra_label,
                spacing,
                float_form,
                reverse,
                node_first,
            )| Style {
                crlf,
                final_newline,
                comments,
                blank_lines,
                label_order,
                extra_label,
                spacing,
                float_form,
                reverse_later_families: reverse,
                node_first,
            },
        )
}

fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn float(value: f64, style: &Style) -> String {
    match style.float_form {
        0 => format!("{value}"),
        1 => format!("{value:e}"),
        _ => fixtures::go_float(value),
    }
}

fn render(node: &Option<ModelNode>, pods: &[ModelPod], style: &Style) -> String {
    let mut lines: Vec<String> = Vec::new();
    let (sep, open_pad, eq, close_pad, gap) = match style.spacing {
        0 => (",", "", "=", "", " "),
        1 => (" ,\t", " ", " = ", "\t", " \t "),
        _ => (",", "", "=", ",", " "),
    };
    let labels = |pod: &ModelPod, c: &ModelContainer| -> String {
        let pairs = [
            format!("container{eq}\"{}\"", escape(&c.name)),
            format!("namespace{eq}\"{}\"", escape(&pod.namespace)),
            format!("pod{eq}\"{}\"", escape(&pod.name)),
        ];
        let permutation = [
            [0, 1, 2],
            [0, 2, 1],
            [1, 0, 2],
            [1, 2, 0],
            [2, 0, 1],
            [2, 1, 0],
        ][style.label_order];
        let mut ordered: Vec<String> = permutation.iter().map(|&i| pairs[i].clone()).collect();
        if style.extra_label {
            ordered.insert(1, format!("image{eq}\"registry/x:1 \\\"q\\\"\""));
        }
        format!("{{{open_pad}{}{close_pad}}}", ordered.join(sep))
    };
    let timestamp = |ts: Option<i64>| ts.map(|ts| format!("{gap}{ts}")).unwrap_or_default();
    let node_lines = |lines: &mut Vec<String>| {
        if let Some(node) = node {
            if style.comments {
                lines.push("# TYPE node_cpu_usage_seconds_total counter".into());
            }
            lines.push(format!(
                "node_cpu_usage_seconds_total{gap}{}{}",
                float(node.cpu_seconds, style),
                timestamp(node.timestamp_ms)
            ));
            lines.push(format!(
                "node_memory_working_set_bytes{gap}{}{}",
                float(node.memory_bytes as f64, style),
                timestamp(node.timestamp_ms)
            ));
        }
    };
    if style.node_first {
        node_lines(&mut lines);
    }
    let all: Vec<(&ModelPod, &ModelContainer)> = pods
        .iter()
        .flat_map(|p| p.containers.iter().map(move |c| (p, c)))
        .collect();
    if style.comments {
        lines.push("# HELP container_cpu_usage_seconds_total [STABLE] Cumulative cpu time".into());
        lines.push("# TYPE container_cpu_usage_seconds_total counter".into());
    }
    for (pod, c) in &all {
        lines.push(format!(
            "container_cpu_usage_seconds_total{}{gap}{}{}",
            labels(pod, c),
            float(c.cpu_seconds, style),
            timestamp(c.timestamp_ms)
        ));
    }
    let mut later: Vec<&(&ModelPod, &ModelContainer)> = all.iter().collect();
    if style.reverse_later_families {
        later.reverse();
    }
    if style.blank_lines {
        lines.push(String::new());
    }
    if style.comments {
        lines.push("# TYPE container_memory_working_set_bytes gauge".into());
    }
    for (pod, c) in &later {
        lines.push(format!(
            "container_memory_working_set_bytes{}{gap}{}{}",
            labels(pod, c),
            float(c.memory_bytes as f64, style),
            timestamp(c.timestamp_ms)
        ));
        lines.push(format!(
            "container_swap_usage_bytes{}{gap}0",
            labels(pod, c)
        ));
    }
    for (pod, c) in &later {
        if let Some(start) = c.start_seconds {
            lines.push(format!(
                "container_start_time_seconds{}{gap}{}",
                labels(pod, c),
                float(start, style)
            ));
        }
    }
    if style.blank_lines {
        lines.push("  \t".into());
    }
    if !style.node_first {
        node_lines(&mut lines);
    }
    lines.push("resource_scrape_error 0".into());
    let newline = if style.crlf { "\r\n" } else { "\n" };
    let mut body = lines.join(newline);
    if style.final_newline {
        body.push_str(newline);
    }
    body
}

fn expected<'a>(node: &Option<ModelNode>, pods: &[ModelPod]) -> NodeScrape<'a> {
    let stamp = |ts: Option<i64>| ts.map_or(REQUEST_TIME, |ms| ms * 1_000_000);
    NodeScrape {
        node: node.as_ref().map(|n| MetricsPoint {
            start_time: 0,
            timestamp: stamp(n.timestamp_ms),
            cumulative_cpu_used: (n.cpu_seconds * 1e9) as u64,
            memory_usage: n.memory_bytes,
        }),
        pods: pods
            .iter()
            .map(|p| PodScrape {
                namespace: Cow::Owned(p.namespace.clone()),
                name: Cow::Owned(p.name.clone()),
                containers: p
                    .containers
                    .iter()
                    .map(|c| ContainerScrape {
                        name: Cow::Owned(c.name.clone()),
                        point: MetricsPoint {
                            start_time: c.start_seconds.map_or(0, |s| (s * 1e9) as i64),
                            timestamp: stamp(c.timestamp_ms),
                            cumulative_cpu_used: (c.cpu_seconds * 1e9) as u64,
                            memory_usage: c.memory_bytes,
                        },
                    })
                    .collect(),
            })
            .collect(),
    }
}

/// Bytes that steer the lexer into its interesting states.
fn syntax_bytes() -> impl Strategy<Value = Vec<u8>> {
    let alphabet = b"{}\"\\=, \t\n\r#eE0123456789.+-_:aNnIf\xff\xc3".to_vec();
    proptest::collection::vec(proptest::sample::select(alphabet), 0..200)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn rendered_payloads_round_trip((node, pods) in model_strategy(), style in style_strategy()) {
        let body = render(&node, &pods, &style);
        let decoded = decode_resource_metrics(body.as_bytes(), REQUEST_TIME);
        let decoded = decoded.map_err(|e| TestCaseError::fail(format!("{e}\n{body}")))?;
        prop_assert_eq!(&decoded.scrape, &expected(&node, &pods), "body:\n{}", body);
        prop_assert_eq!(decoded.stats.skipped_lines, 0, "body:\n{}", body);
    }

    #[test]
    fn any_label_value_survives_escaping(value in any::<String>()) {
        let line = format!("m{{k=\"{}\"}} 1", escape(&value));
        let (_, _, labels) = lex_one(&line).map_err(|e| TestCaseError::fail(format!("{e}")))?;
        prop_assert_eq!(labels, vec![("k".to_string(), value)]);
    }

    #[test]
    fn arbitrary_bytes_never_panic_and_counts_add_up(body in proptest::collection::vec(any::<u8>(), 0..2048)) {
        if let Ok(decoded) = decode_resource_metrics(&body, REQUEST_TIME) {
            prop_assert_eq!(decoded.stats.skipped_lines, decoded.stats.skipped_by_reason.iter().sum::<u64>());
        }
        for sample in Lexer::new(&body).flatten() {
            for label in sample.labels.iter().flatten() {
                prop_assert!(!label.name.is_empty());
            }
        }
    }

    #[test]
    fn known_series_with_syntax_noise_never_panic(
        lines in proptest::collection::vec(
            (proptest::sample::select(vec![
                "container_cpu_usage_seconds_total",
                "container_memory_working_set_bytes",
                "container_start_time_seconds",
                "node_cpu_usage_seconds_total",
                "node_memory_working_set_bytes",
                "scrape_error",
                "container_cpu_usage_seconds_total{container=\"c\",namespace=\"n\",pod=\"p\"",
            ]), syntax_bytes()),
            0..20,
        )
    ) {
        let mut body = Vec::new();
        for (name, tail) in &lines {
            body.extend_from_slice(name.as_bytes());
            body.extend_from_slice(tail);
            body.push(b'\n');
        }
        if let Ok(decoded) = decode_resource_metrics(&body, REQUEST_TIME) {
            let lines = Lines::new(&body).count() as u64;
            let stats = &decoded.stats;
            prop_assert!(stats.samples + stats.skipped_lines + stats.ignored_series + stats.comments <= lines);
            for pod in &decoded.scrape.pods {
                for container in &pod.containers {
                    prop_assert!(container.point.cumulative_cpu_used > 0 && container.point.memory_usage > 0);
                }
            }
        };
    }

    #[test]
    fn truncated_or_corrupted_realistic_bodies_never_panic(cut in 0usize..20_000, flips in proptest::collection::vec((0usize..20_000, any::<u8>()), 0..8)) {
        let mut body = realistic_body(20, 2);
        for (at, byte) in flips {
            let len = body.len();
            body[at % len] = byte;
        }
        body.truncate(cut.min(body.len()));
        let _ = decode_resource_metrics(&body, REQUEST_TIME);
    }
}

/// A container's key in [`container_lines_strategy`]: container, namespace and pod letters.
type Key = (u8, u8, u8);

/// One container line of [`container_lines_strategy`]: its key and whether it is a CPU line.
type KeyedLine = (Key, bool);

/// Container lines over a small key space (3 containers x 2 namespaces x 2 pods), so keys repeat;
/// each family's lines sorted, with repeats, or in any order, so the decoder's guesses (the next
/// slot, the first slot, a sorted append) and its index all take turns.
fn container_lines_strategy() -> impl Strategy<Value = Vec<KeyedLine>> {
    let key = (0u8..3, 0u8..2, 0u8..2);
    let family = |cpu: bool| {
        (proptest::collection::vec(key.clone(), 0..14), 0u8..3).prop_map(
            move |(mut keys, arrangement)| {
                match arrangement {
                    0 => {
                        keys.sort_unstable();
                        keys.dedup();
                    }
                    1 => keys.sort_unstable(),
                    _ => {}
                }
                keys.into_iter().map(|k| (k, cpu)).collect::<Vec<_>>()
            },
        )
    };
    (family(true), family(false), family(true)).prop_map(|(mut a, b, c)| {
        a.extend(b);
        a.extend(c);
        a
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    /// Whatever order container lines come in, the decoder finds each container again: the
    /// last value of each series wins, pods and containers keep the order they first appeared
    /// in, and a pod lacking a series is left out.
    #[test]
    fn containers_are_found_again_in_any_line_order(lines in container_lines_strategy()) {
        let names = |(c, n, p): Key| {
            (["app", "istio-proxy", "sidecar"][c as usize], ["default", "kube-system"][n as usize], ["web-1", "web-0"][p as usize])
        };
        let mut body = String::new();
        // The model: containers in first-seen order with their last CPU and memory values.
        let mut containers: Vec<(Key, Option<u64>, Option<u64>)> = Vec::new();
        for (i, &(key, cpu)) in lines.iter().enumerate() {
            let (container, namespace, pod) = names(key);
            let value = i as u64 + 1;
            let family = if cpu { "container_cpu_usage_seconds_total" } else { "container_memory_working_set_bytes" };
            body.push_str(&format!("{family}{{container=\"{container}\",namespace=\"{namespace}\",pod=\"{pod}\"}} {value} 1000\n"));
            let at = match containers.iter().position(|(k, _, _)| *k == key) {
                Some(at) => at,
                None => {
                    containers.push((key, None, None));
                    containers.len() - 1
                }
            };
            if cpu {
                containers[at].1 = Some(value * 1_000_000_000);
            } else {
                containers[at].2 = Some(value);
            }
        }
        let mut pods: Vec<(u8, u8)> = Vec::new();
        for ((_, n, p), _, _) in &containers {
            if !pods.contains(&(*n, *p)) {
                pods.push((*n, *p));
            }
        }
        let expected: Vec<PodScrape<'_>> = pods
            .iter()
            .filter_map(|&(n, p)| {
                let mut scraped = PodScrape {
                    namespace: Cow::Borrowed(names((0, n, p)).1),
                    name: Cow::Borrowed(names((0, n, p)).2),
                    containers: Default::default(),
                };
                for &((c, cn, cp), cpu, memory) in &containers {
                    if (cn, cp) != (n, p) {
                        continue;
                    }
                    scraped.containers.push(ContainerScrape {
                        name: Cow::Borrowed(names((c, n, p)).0),
                        point: point(0, 1_000_000_000, cpu?, memory?),
                    });
                }
                Some(scraped)
            })
            .collect();
        let decoded = decode(&body);
        prop_assert_eq!(&decoded.scrape.pods, &expected, "body:\n{}", body);
    }
}
