//! The harness runs the smoke case end to end on loopback in seconds and writes a report with
//! data in it. Without a server binary (the release build is not needed here) it measures the
//! fleet's process and this process scraping the kubelets and loading one of them over h2 and
//! HTTP/1.1.

use std::path::Path;
use std::time::Duration;

use kubelet_fleet::harness::case::Case;
use kubelet_fleet::harness::runner::{self, RunOptions};

fn svg_with_lines(dir: &Path, name: &str) -> String {
    let svg = std::fs::read_to_string(dir.join(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
    assert!(svg.starts_with("<svg"), "{name} is an SVG");
    assert!(
        svg.contains("<polyline"),
        "{name} draws a line from data points"
    );
    svg
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_smoke_case_writes_a_summary_and_plots_with_data() {
    let case_path = Path::new(env!("CARGO_MANIFEST_DIR")).join("cases/smoke.toml");
    let case_text = std::fs::read_to_string(&case_path).expect("smoke case");
    let mut case = Case::load(&case_path).expect("parses");
    // Shorter than the shipped case, and a generous margin for a loaded machine; the budgets
    // are the case's own.
    case.run.warmup = Duration::from_secs(1);
    case.run.duration = Duration::from_secs(3);
    case.run.margin = Duration::from_secs(30);
    let out = tempfile::tempdir().expect("dir");
    let outcome = tokio::time::timeout(
        Duration::from_secs(60),
        runner::run(RunOptions {
            case,
            case_text,
            out: out.path().to_path_buf(),
            fleet_exe: env!("CARGO_BIN_EXE_loadtest").into(),
            server_bin: None,
            progress: false,
        }),
    )
    .await
    .expect("stops by itself")
    .expect("runs");

    let summary = std::fs::read_to_string(out.path().join("summary.md")).expect("summary.md");
    assert!(!summary.is_empty());
    assert_eq!(summary, outcome.summary);
    assert!(summary.contains("# Load test `smoke`"), "{summary}");
    assert!(
        summary.contains("| fleet |"),
        "the fleet's process is measured: {summary}"
    );
    assert!(summary.contains("| loadgen |"), "{summary}");
    assert!(summary.contains("| hpa-h2 |"), "{summary}");
    assert!(summary.contains("| nodes-http1 |"), "{summary}");
    svg_with_lines(out.path(), "cpu.svg");
    svg_with_lines(out.path(), "rss.svg");
    svg_with_lines(out.path(), "api_latency.svg");

    let figures: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(out.path().join("figures.json")).expect("figures.json"),
    )
    .expect("json");
    let value = |name: &str| {
        figures["figures"]
            .as_array()
            .and_then(|all| all.iter().find(|f| f["name"] == name))
            .and_then(|f| f["value"].as_f64())
    };
    assert!(
        value("API requests per second").is_some_and(|r| r > 0.0),
        "{figures}"
    );
    assert_eq!(value("API errors"), Some(0.0), "{summary}");
    assert!(
        value("fleet RSS (peak)").is_some_and(|m| m > 1.0),
        "{figures}"
    );
    assert!(value("fleet CPU").is_some(), "{figures}");
    assert!(outcome.passed, "{summary}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_server_the_peers_case_skips_prometheus_and_nginx_and_still_times_the_parser() {
    let case_path = Path::new(env!("CARGO_MANIFEST_DIR")).join("cases/peers-smoke.toml");
    let case_text = std::fs::read_to_string(&case_path).expect("peers-smoke case");
    let mut case = Case::load(&case_path).expect("parses");
    case.run.warmup = Duration::from_secs(1);
    case.run.duration = Duration::from_secs(2);
    case.run.margin = Duration::from_secs(30);
    case.peers.memchr_bodies = 2;
    let out = tempfile::tempdir().expect("dir");
    let outcome = tokio::time::timeout(
        Duration::from_secs(90),
        runner::run(RunOptions {
            case,
            case_text,
            out: out.path().to_path_buf(),
            fleet_exe: env!("CARGO_BIN_EXE_loadtest").into(),
            server_bin: None,
            progress: false,
        }),
    )
    .await
    .expect("stops by itself")
    .expect("runs");
    let summary = outcome.summary;
    assert!(summary.contains("**prometheus skipped**"), "{summary}");
    assert!(summary.contains("**nginx skipped**"), "{summary}");
    assert!(summary.contains("### Parser vs memchr"), "{summary}");
    let figures: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(out.path().join("figures.json")).expect("figures.json"),
    )
    .expect("json");
    let scan = &figures["peers"]["scan"];
    assert_eq!(scan["bodies"], 2, "{figures}");
    assert!(
        scan["memchr_gb_per_s"].as_f64().is_some_and(|g| g > 0.0),
        "{figures}"
    );
    assert!(
        scan["decode_gb_per_s"].as_f64().is_some_and(|g| g > 0.0),
        "{figures}"
    );
    let rows = figures["side_by_side"].as_array().expect("rows");
    assert!(
        rows.iter().any(|r| r["peer"] == "memchr newline count"),
        "{figures}"
    );
}
