//! The report of a run: figures measured over the window compared with the case's budgets,
//! written as `summary.md` (and `figures.json` for tools) next to the SVG plots.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use serde::Serialize;

use super::apiload::{window_all, StreamResult, WindowSummary};
use super::case::{Budgets, Case};
use super::freshness::{ProbeResult, PromHistogram};
use super::peers::PeersReport;
use super::plot::{line_chart, Line, PlotError};
use super::procstat::ProcSeries;

/// Why a report could not be written.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error("writing {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Plot(#[from] PlotError),
    #[error("encoding figures: {0}")]
    Json(#[from] serde_json::Error),
}

/// Where the run happened.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Environment {
    pub started_utc: String,
    pub cpus: usize,
    pub kernel: String,
    pub open_file_limit: Option<u64>,
    pub server_bin: Option<String>,
    pub harness_version: String,
}

impl Environment {
    /// Reads what can be read about this machine.
    pub fn detect(server_bin: Option<&Path>) -> Environment {
        let started_utc = time::OffsetDateTime::now_utc()
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default();
        let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .map(|s| s.trim().to_owned())
            .unwrap_or_default();
        let mut limit = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: `limit` is a valid, exclusively borrowed rlimit for the duration of the call.
        let open_file_limit = (unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } == 0)
            .then_some(limit.rlim_cur);
        Environment {
            started_utc,
            cpus: std::thread::available_parallelism().map_or(0, |n| n.get()),
            kernel,
            open_file_limit,
            server_bin: server_bin.map(|p| p.display().to_string()),
            harness_version: env!("CARGO_PKG_VERSION").to_owned(),
        }
    }
}

/// The server's `/metrics` histograms at one instant.
#[derive(Clone, Debug)]
pub struct MetricsScrape {
    /// Seconds since the run began.
    pub t: f64,
    pub kubelet_request_duration: Option<PromHistogram>,
    pub api_metric_freshness: Option<PromHistogram>,
    /// `metrics_server_kubelet_request_total{success="true"}`: completed scrapes so far.
    pub kubelet_requests_ok: Option<f64>,
}

/// One figure against a peer run side by side (Prometheus, nginx, ...), when one was measured.
#[derive(Clone, Debug, Serialize)]
pub struct SideBySide {
    pub figure: String,
    pub ours: f64,
    pub peer: String,
    pub theirs: f64,
    /// The goal, as "ours / theirs at most" or "at least".
    pub want: String,
}

/// Everything a run measured.
#[derive(Clone, Debug, Default)]
pub struct RunData {
    pub mode: String,
    pub env: Environment,
    /// The measured window, seconds since the run began.
    pub window: (f64, f64),
    pub nodes: u64,
    pub pods: u64,
    pub containers: u64,
    pub faulty_nodes: u64,
    pub procs: Vec<ProcSeries>,
    pub streams: Vec<StreamResult>,
    pub probe: Option<ProbeResult>,
    pub metrics: Vec<MetricsScrape>,
    pub side_by_side: Vec<SideBySide>,
    /// What the peers (Prometheus, nginx, memchr) measured, or why they were skipped.
    pub peers: PeersReport,
    pub notes: Vec<String>,
    pub deadline_hit: bool,
}

/// Pass, fail, or no budget.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    Pass,
    Fail,
    /// Measured without a budget, or a budget whose figure could not be measured.
    None,
}

/// A measured figure and its budget.
#[derive(Clone, Debug, Serialize)]
pub struct Figure {
    pub name: String,
    pub unit: String,
    pub value: Option<f64>,
    /// `("<=", x)` or `(">=", x)`.
    pub budget: Option<(String, f64)>,
    pub verdict: Verdict,
}

fn figure(
    name: &str,
    unit: &str,
    value: Option<f64>,
    max: Option<f64>,
    min: Option<f64>,
) -> Figure {
    let budget = max
        .map(|m| ("<=".to_owned(), m))
        .or_else(|| min.map(|m| (">=".to_owned(), m)));
    let verdict = match (&budget, value) {
        (Some((op, b)), Some(v)) => {
            let ok = if op == "<=" { v <= *b } else { v >= *b };
            if ok {
                Verdict::Pass
            } else {
                Verdict::Fail
            }
        }
        // A budget that could not be checked does not pass.
        (Some(_), None) => Verdict::Fail,
        (None, _) => Verdict::None,
    };
    Figure {
        name: name.to_owned(),
        unit: unit.to_owned(),
        value,
        budget,
        verdict,
    }
}

fn percentile(values: &mut [f64], q: f64) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    values.sort_by(f64::total_cmp);
    let rank = ((values.len() as f64) * q).ceil().max(1.0) as usize - 1;
    values.get(rank.min(values.len() - 1)).copied()
}

impl RunData {
    fn proc(&self, role: &str) -> Option<&ProcSeries> {
        self.procs.iter().find(|p| p.role == role)
    }

    fn window_seconds(&self) -> (usize, usize) {
        (
            self.window.0.floor() as usize,
            self.window.1.floor() as usize,
        )
    }

    /// The API figures over the window, every stream merged.
    pub fn api_window(&self) -> WindowSummary {
        let (from, to) = self.window_seconds();
        window_all(&self.streams, from, to)
    }

    /// The API figures over the window of the streams labelled `label`, merged.
    pub fn api_window_of(&self, label: &str) -> WindowSummary {
        let (from, to) = self.window_seconds();
        window_all(self.streams.iter().filter(|s| s.label == label), from, to)
    }

    /// Freshness lags measured by the probe inside the window, ms.
    pub fn probe_lags(&self) -> Vec<f64> {
        self.probe
            .iter()
            .flat_map(|p| p.points.iter())
            .filter(|p| p.t >= self.window.0 && p.t <= self.window.1)
            .map(|p| p.lag_ms)
            .collect()
    }

    /// The server's completed scrapes over the window, from its counter (or, without one, its
    /// request histogram's count).
    pub fn server_scrapes_in_window(&self) -> Option<f64> {
        let inside: Vec<&MetricsScrape> = self
            .metrics
            .iter()
            .filter(|m| m.t >= self.window.0 - 1e-6 && m.t <= self.window.1 + 1e-6)
            .collect();
        let (first, last) = (inside.first()?, inside.last()?);
        match (first.kubelet_requests_ok, last.kubelet_requests_ok) {
            (Some(a), Some(b)) => Some(b - a),
            _ => self
                .metrics_window(|m| m.kubelet_request_duration.as_ref())
                .map(|h| h.count),
        }
    }

    /// CPU seconds a process spent over the window and the span they cover.
    pub fn cpu_seconds_in_window(&self, role: &str) -> Option<f64> {
        let p = self.proc(role)?;
        let inside: Vec<_> = p
            .points
            .iter()
            .filter(|q| q.t >= self.window.0 - 1e-6 && q.t <= self.window.1 + 1e-6)
            .collect();
        let (first, last) = (inside.first()?, inside.last()?);
        (last.t > first.t).then_some(last.cpu_seconds - first.cpu_seconds)
    }

    /// Peak resident memory of a process over the window, MiB.
    pub fn rss_peak_mib(&self, role: &str) -> Option<f64> {
        self.proc(role)?
            .max_rss_bytes(self.window.0, self.window.1)
            .map(|b| b as f64 / (1024.0 * 1024.0))
    }

    /// Every side-by-side row: the ones set directly and the peers'.
    pub fn all_side_by_side(&self) -> Vec<SideBySide> {
        let mut rows = self.side_by_side.clone();
        rows.extend(self.peers.side_by_side());
        rows
    }

    /// The server's own histogram change over the window.
    fn metrics_window(
        &self,
        pick: fn(&MetricsScrape) -> Option<&PromHistogram>,
    ) -> Option<PromHistogram> {
        self.metrics_window_span(pick).map(|(h, _)| h)
    }

    /// [`Self::metrics_window`] with the seconds between the two reads it spans (the window's
    /// edges, where the runner reads at each; shorter for a run cut short).
    fn metrics_window_span(
        &self,
        pick: fn(&MetricsScrape) -> Option<&PromHistogram>,
    ) -> Option<(PromHistogram, f64)> {
        let inside: Vec<&MetricsScrape> = self
            .metrics
            .iter()
            .filter(|m| m.t >= self.window.0 - 1e-6 && m.t <= self.window.1 + 1e-6)
            .collect();
        let (first, last) = (inside.first()?, inside.last()?);
        Some((pick(last)?.since(pick(first)?), last.t - first.t))
    }

    /// Every figure with its verdict.
    pub fn figures(&self, budgets: &Budgets) -> Vec<Figure> {
        let (from, to) = self.window;
        let cpu = |role: &str| self.proc(role).and_then(|p| p.mean_cpu_cores(from, to));
        let rss = |role: &str| {
            self.proc(role)
                .and_then(|p| p.max_rss_bytes(from, to))
                .map(|b| b as f64 / (1024.0 * 1024.0))
        };
        let mut out = vec![
            figure(
                "server CPU",
                "cores",
                cpu("server"),
                budgets.server_cpu_cores_max,
                None,
            ),
            figure(
                "server RSS (peak)",
                "MiB",
                rss("server"),
                budgets.server_rss_mib_max,
                None,
            ),
        ];
        let mut lags = self.probe_lags();
        out.push(figure(
            "freshness p99 (probe)",
            "ms",
            percentile(&mut lags, 0.99),
            budgets.freshness_p99_ms_max,
            None,
        ));
        out.push(figure(
            "freshness p50 (probe)",
            "ms",
            percentile(&mut lags, 0.5),
            None,
            None,
        ));
        if let Some(h) = self.metrics_window(|m| m.api_metric_freshness.as_ref()) {
            out.push(figure(
                "freshness p99 (server's histogram, includes sample age)",
                "ms",
                h.quantile(0.99).map(|s| s * 1000.0),
                None,
                None,
            ));
        }
        if let Some((h, span)) = self.metrics_window_span(|m| m.kubelet_request_duration.as_ref()) {
            out.push(figure(
                "scrape latency p99 (server)",
                "ms",
                h.quantile(0.99).map(|s| s * 1000.0),
                None,
                None,
            ));
            // Over the reads' own span: the counts are the change between them.
            let secs = span.max(1e-9);
            out.push(figure(
                "scrapes per second (server)",
                "1/s",
                Some(h.count / secs),
                None,
                None,
            ));
            if let (Some(c), true) = (cpu("server"), h.count > 0.0) {
                out.push(figure(
                    "server CPU per scrape",
                    "µs",
                    Some(c * secs / h.count * 1e6),
                    None,
                    None,
                ));
            }
        }
        if !self.streams.is_empty() {
            let api = self.api_window();
            let has = api.ok > 0;
            out.push(figure(
                "API p99",
                "ms",
                has.then_some(api.p99_ms),
                budgets.api_p99_ms_max,
                None,
            ));
            out.push(figure(
                "API requests per second",
                "1/s",
                Some(api.rps),
                None,
                budgets.api_rps_min,
            ));
            out.push(figure(
                "API throughput",
                "MB/s",
                Some(api.mb_per_s),
                None,
                budgets.api_mb_per_s_min,
            ));
            out.push(figure(
                "API errors",
                "",
                Some(api.errors as f64),
                None,
                None,
            ));
            for (label, b) in &budgets.shapes {
                let api = self.api_window_of(label);
                let has = api.ok > 0;
                out.push(figure(
                    &format!("API p99 ({label})"),
                    "ms",
                    has.then_some(api.p99_ms),
                    b.p99_ms_max,
                    None,
                ));
                out.push(figure(
                    &format!("API requests per second ({label})"),
                    "1/s",
                    Some(api.rps),
                    None,
                    b.rps_min,
                ));
                out.push(figure(
                    &format!("API throughput ({label})"),
                    "MB/s",
                    Some(api.mb_per_s),
                    None,
                    b.mb_per_s_min,
                ));
            }
        }
        if self.proc("prometheus").is_some() {
            out.push(figure(
                "Prometheus CPU (peer)",
                "cores",
                cpu("prometheus"),
                None,
                None,
            ));
            out.push(figure(
                "Prometheus RSS (peak, peer)",
                "MiB",
                rss("prometheus"),
                None,
                None,
            ));
        }
        out.push(figure("fleet CPU", "cores", cpu("fleet"), None, None));
        out.push(figure("fleet RSS (peak)", "MiB", rss("fleet"), None, None));
        out.push(figure(
            "load generator CPU",
            "cores",
            cpu("loadgen"),
            None,
            None,
        ));
        out
    }

    /// Whether every budget passed.
    pub fn passed(&self, budgets: &Budgets) -> bool {
        !self.deadline_hit
            && self
                .figures(budgets)
                .iter()
                .all(|f| f.verdict != Verdict::Fail)
    }
}

fn fmt_value(v: Option<f64>) -> String {
    match v {
        None => "n/a".to_owned(),
        Some(v) if v == v.trunc() && v.abs() < 1e15 => format!("{v:.0}"),
        Some(v) if v.abs() >= 100.0 => format!("{v:.0}"),
        Some(v) if v.abs() >= 1.0 => format!("{v:.2}"),
        Some(v) => format!("{v:.4}"),
    }
}

fn write_file(path: &Path, contents: &str) -> Result<(), ReportError> {
    std::fs::write(path, contents).map_err(|source| ReportError::Write {
        path: path.to_path_buf(),
        source,
    })
}

/// The plots written, as (file name, points).
pub type Plots = Vec<(String, usize)>;

/// Draws every plot the data has into `dir`.
pub fn write_plots(dir: &Path, data: &RunData) -> Result<Plots, ReportError> {
    let window = Some(data.window);
    let mut written = Vec::new();
    let mut chart =
        |file: &str, title: &str, unit: &str, lines: Vec<Line>| -> Result<(), ReportError> {
            let n = line_chart(&dir.join(file), title, unit, &lines, window)?;
            if n > 0 {
                written.push((file.to_owned(), n));
            }
            Ok(())
        };
    let per_proc = |f: fn(&super::procstat::ProcPoint) -> f64| -> Vec<Line> {
        data.procs
            .iter()
            .map(|p| Line {
                name: p.role.clone(),
                points: p.points.iter().map(|q| (q.t, f(q))).collect(),
            })
            .collect()
    };
    chart(
        "cpu.svg",
        "CPU by process",
        "cores",
        per_proc(|p| p.cpu_cores),
    )?;
    chart(
        "rss.svg",
        "Resident memory by process",
        "MiB",
        per_proc(|p| p.rss_bytes as f64 / (1024.0 * 1024.0)),
    )?;

    // The server's histograms, per interval between two scrapes of /metrics.
    let per_interval =
        |pick: fn(&MetricsScrape) -> Option<&PromHistogram>, q: f64| -> Vec<(f64, f64)> {
            data.metrics
                .windows(2)
                .filter_map(|w| {
                    let d = pick(&w[1])?.since(pick(&w[0])?);
                    Some((w[1].t, d.quantile(q)? * 1000.0))
                })
                .collect()
        };
    chart(
        "scrape_latency.svg",
        "Kubelet scrape latency (server's histogram)",
        "ms",
        vec![
            Line {
                name: "p50".into(),
                points: per_interval(|m| m.kubelet_request_duration.as_ref(), 0.5),
            },
            Line {
                name: "p99".into(),
                points: per_interval(|m| m.kubelet_request_duration.as_ref(), 0.99),
            },
        ],
    )?;
    // Scrapes per second: the server's completed scrapes and, beside it, Prometheus's.
    let rate = |points: Vec<(f64, f64)>| -> Vec<(f64, f64)> {
        points
            .windows(2)
            .filter(|w| w[1].0 > w[0].0)
            .map(|w| (w[1].0, (w[1].1 - w[0].1) / (w[1].0 - w[0].0)))
            .collect()
    };
    let mut scrape_rate = vec![Line {
        name: "ours".into(),
        points: rate(
            data.metrics
                .iter()
                .filter_map(|m| Some((m.t, m.kubelet_requests_ok?)))
                .collect(),
        ),
    }];
    if !data.peers.prometheus_counts.is_empty() {
        scrape_rate.push(Line {
            name: "prometheus".into(),
            points: rate(data.peers.prometheus_counts.clone()),
        });
    }
    chart(
        "scrape_rate.svg",
        "Kubelet scrapes per second",
        "1/s",
        scrape_rate,
    )?;

    let mut freshness = Vec::new();
    if let Some(probe) = &data.probe {
        freshness.push(Line {
            name: "lag (probe)".into(),
            points: probe.points.iter().map(|p| (p.t, p.lag_ms)).collect(),
        });
    }
    freshness.push(Line {
        name: "server histogram p99".into(),
        points: per_interval(|m| m.api_metric_freshness.as_ref(), 0.99),
    });
    chart(
        "freshness.svg",
        "Freshness: kubelet sample to API",
        "ms",
        freshness,
    )?;

    let mut latency = Vec::new();
    let mut rate = Vec::new();
    for s in &data.streams {
        let p99 = s
            .seconds
            .iter()
            .enumerate()
            .filter(|(_, sec)| sec.ok > 0)
            .map(|(i, sec)| {
                (
                    i as f64 + 1.0,
                    sec.latency.value_at_quantile(0.99) as f64 / 1000.0,
                )
            })
            .collect();
        latency.push(Line {
            name: format!("{} p99", s.label),
            points: p99,
        });
        rate.push(Line {
            name: s.label.clone(),
            points: s
                .seconds
                .iter()
                .enumerate()
                .map(|(i, sec)| (i as f64 + 1.0, sec.ok as f64))
                .collect(),
        });
    }
    chart("api_latency.svg", "API latency", "ms", latency)?;
    chart("api_rate.svg", "API requests", "per second", rate)?;
    Ok(written)
}

/// Writes `summary.md`, `figures.json` and the plots into `dir`; returns the summary's text.
pub fn write_report(dir: &Path, case: &Case, data: &RunData) -> Result<String, ReportError> {
    let plots = write_plots(dir, data)?;
    let figures = data.figures(&case.budgets);
    let passed = data.passed(&case.budgets);
    let mut md = String::new();
    // Writing to a String cannot fail; the results are ignored for that reason.
    let _ = writeln!(
        md,
        "# Load test `{}`: {}\n",
        case.name,
        if passed { "PASS" } else { "FAIL" }
    );
    if !case.description.is_empty() {
        let _ = writeln!(md, "{}\n", case.description);
    }
    let _ = writeln!(md, "## Case\n");
    let _ = writeln!(md, "| | |\n|---|---|");
    let _ = writeln!(md, "| mode | {} |", data.mode);
    let _ = writeln!(
        md,
        "| nodes | {} (requested {}, faulty {}) |",
        data.nodes, case.fleet.nodes, data.faulty_nodes
    );
    let _ = writeln!(
        md,
        "| pods | {} ({} per node requested) |",
        data.pods, case.fleet.pods_per_node
    );
    let measured = if data.pods > 0 {
        format!("{:.2}", data.containers as f64 / data.pods as f64)
    } else {
        "n/a".to_owned()
    };
    let sized = case
        .fleet
        .containers_per_pod
        .map(|c| format!(" (case sized for {c})"))
        .unwrap_or_default();
    let _ = writeln!(md, "| containers per pod | {measured}{sized} |");
    let _ = writeln!(md, "| resolution | {:?} |", case.server.resolution);
    let _ = writeln!(
        md,
        "| warm-up, measured | {:?}, {:?} |",
        case.run.warmup, case.run.duration
    );
    let _ = writeln!(
        md,
        "| window (s since start) | {:.1} .. {:.1} |",
        data.window.0, data.window.1
    );
    let churn = &case.fleet.churn;
    let _ = writeln!(
        md,
        "| churn (/s) | pods +{} -{}, restarts {}, nodes +{} -{} |",
        churn.pod_create,
        churn.pod_delete,
        churn.container_restart,
        churn.node_add,
        churn.node_remove
    );
    if !case.fleet.faults.is_empty() {
        let faults: Vec<String> = case
            .fleet
            .faults
            .iter()
            .map(|(k, v)| format!("{k} {v}"))
            .collect();
        let _ = writeln!(md, "| faults | {} |", faults.join(", "));
    }

    let _ = writeln!(md, "\n## Environment\n");
    let _ = writeln!(md, "| | |\n|---|---|");
    let env = &data.env;
    let _ = writeln!(md, "| started (UTC) | {} |", env.started_utc);
    let _ = writeln!(md, "| CPUs | {} |", env.cpus);
    let _ = writeln!(md, "| kernel | {} |", env.kernel);
    if let Some(l) = env.open_file_limit {
        let _ = writeln!(md, "| open-file limit | {l} |");
    }
    let _ = writeln!(
        md,
        "| server binary | {} |",
        env.server_bin.as_deref().unwrap_or("none")
    );
    let _ = writeln!(md, "| harness | {} |", env.harness_version);

    let _ = writeln!(md, "\n## Figures vs budgets\n");
    let _ = writeln!(
        md,
        "| figure | measured | budget | verdict |\n|---|---|---|---|"
    );
    for f in &figures {
        let budget = f
            .budget
            .as_ref()
            .map(|(op, b)| format!("{op} {} {}", fmt_value(Some(*b)), f.unit))
            .unwrap_or_default();
        let verdict = match f.verdict {
            Verdict::Pass => "pass",
            Verdict::Fail => "**FAIL**",
            Verdict::None => "",
        };
        let _ = writeln!(
            md,
            "| {} | {} {} | {budget} | {verdict} |",
            f.name,
            fmt_value(f.value),
            f.unit
        );
    }

    let _ = writeln!(md, "\n## Processes (over the window)\n");
    let _ = writeln!(
        md,
        "| role | pid | CPU (cores) | peak RSS (MiB) | samples |\n|---|---|---|---|---|"
    );
    for p in &data.procs {
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} | {} |",
            p.role,
            p.pid,
            fmt_value(p.mean_cpu_cores(data.window.0, data.window.1)),
            fmt_value(
                p.max_rss_bytes(data.window.0, data.window.1)
                    .map(|b| b as f64 / 1048576.0)
            ),
            p.points.len()
        );
    }

    if !data.streams.is_empty() {
        let (from, to) = data.window_seconds();
        let _ = writeln!(md, "\n## API streams (over the window)\n");
        let _ = writeln!(
            md,
            "| stream | ok | errors | req/s | MB/s | p50 ms | p99 ms | p99.9 ms | max ms |\n|---|---|---|---|---|---|---|---|---|"
        );
        for s in &data.streams {
            let w = s.window(from, to);
            let _ = writeln!(
                md,
                "| {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                s.label,
                w.ok,
                w.errors,
                fmt_value(Some(w.rps)),
                fmt_value(Some(w.mb_per_s)),
                fmt_value(Some(w.p50_ms)),
                fmt_value(Some(w.p99_ms)),
                fmt_value(Some(w.p999_ms)),
                fmt_value(Some(w.max_ms))
            );
            for e in &s.sample_errors {
                let _ = writeln!(md, "\n- `{}` error: {}", s.label, e.replace('|', "/"));
            }
            if s.dropped_at_window > 0 {
                let _ = writeln!(
                    md,
                    "\n- `{}`: {} requests fell due during warm-up and were still unsent when the window opened; the schedule started over without them.",
                    s.label, s.dropped_at_window
                );
            }
        }
    }

    if let Some(probe) = &data.probe {
        let _ = writeln!(md, "\n## Freshness probe\n");
        let lags = data.probe_lags();
        let _ = writeln!(
            md,
            "{} changes measured in the window ({} in all), {} unmatched, {} errors, polling every {:?} (the measurement's own error).",
            lags.len(),
            probe.points.len(),
            probe.unmatched,
            probe.errors,
            probe.poll
        );
    }

    let side_by_side = data.all_side_by_side();
    if !side_by_side.is_empty() {
        let _ = writeln!(md, "\n## Side by side\n");
        let _ = writeln!(
            md,
            "| figure | ours | peer | theirs | ratio | goal |\n|---|---|---|---|---|---|"
        );
        for s in &side_by_side {
            let ratio = if s.theirs != 0.0 {
                Some(s.ours / s.theirs)
            } else {
                None
            };
            let _ = writeln!(
                md,
                "| {} | {} | {} | {} | {} | {} |",
                s.figure,
                fmt_value(Some(s.ours)),
                s.peer,
                fmt_value(Some(s.theirs)),
                fmt_value(ratio),
                s.want
            );
        }
    }

    md.push_str(&data.peers.markdown(fmt_value));

    if !plots.is_empty() {
        let _ = writeln!(
            md,
            "\n## Plots\n\nThe shaded band is the measured window.\n"
        );
        for (file, n) in &plots {
            let _ = writeln!(md, "![{file}]({file}) ({n} points)\n");
        }
    }
    if data.deadline_hit || !data.notes.is_empty() {
        let _ = writeln!(md, "\n## Notes\n");
        if data.deadline_hit {
            let _ = writeln!(
                md,
                "- The hard deadline was hit: children were killed and figures are partial."
            );
        }
        for n in &data.notes {
            let _ = writeln!(md, "- {n}");
        }
    }
    write_file(&dir.join("summary.md"), &md)?;
    if let Some(probe) = &data.probe {
        let mut csv = String::from("t_seconds,node,lag_ms\n");
        for p in &probe.points {
            let _ = writeln!(csv, "{:.3},{},{}", p.t, p.node, p.lag_ms);
        }
        write_file(&dir.join("freshness.csv"), &csv)?;
    }
    if !data.streams.is_empty() {
        // Each stream's seconds, for a look at what happened when (the plots show the p99).
        let mut csv = String::from("stream,second,ok,errors,bytes,p50_ms,p99_ms,max_ms\n");
        for stream in &data.streams {
            for (i, sec) in stream.seconds.iter().enumerate() {
                let ms = |q: f64| sec.latency.value_at_quantile(q) as f64 / 1000.0;
                let _ = writeln!(
                    csv,
                    "{},{},{},{},{},{:.3},{:.3},{:.3}",
                    stream.label,
                    i + 1,
                    sec.ok,
                    sec.errors,
                    sec.bytes,
                    ms(0.5),
                    ms(0.99),
                    sec.latency.max() as f64 / 1000.0
                );
            }
        }
        write_file(&dir.join("api_seconds.csv"), &csv)?;
    }
    if !data.procs.is_empty() {
        let mut csv = String::from("role,t_seconds,cpu_cores,rss_mib\n");
        for proc in &data.procs {
            for q in &proc.points {
                let _ = writeln!(
                    csv,
                    "{},{:.3},{:.4},{:.1}",
                    proc.role,
                    q.t,
                    q.cpu_cores,
                    q.rss_bytes as f64 / (1024.0 * 1024.0)
                );
            }
        }
        write_file(&dir.join("processes.csv"), &csv)?;
    }

    #[derive(Serialize)]
    struct Json<'a> {
        case: &'a str,
        passed: bool,
        mode: &'a str,
        environment: &'a Environment,
        window: (f64, f64),
        figures: &'a [Figure],
        side_by_side: &'a [SideBySide],
        peers: &'a PeersReport,
    }
    let json = serde_json::to_string_pretty(&Json {
        case: &case.name,
        passed,
        mode: &data.mode,
        environment: &data.env,
        window: data.window,
        figures: &figures,
        side_by_side: &side_by_side,
        peers: &data.peers,
    })?;
    write_file(&dir.join("figures.json"), &json)?;
    Ok(md)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::harness::procstat::ProcPoint;

    #[test]
    fn a_budget_that_is_exceeded_fails_and_one_that_is_met_passes() {
        assert_eq!(
            figure("x", "", Some(2.0), Some(1.0), None).verdict,
            Verdict::Fail
        );
        assert_eq!(
            figure("x", "", Some(0.5), Some(1.0), None).verdict,
            Verdict::Pass
        );
        assert_eq!(
            figure("x", "", Some(0.5), None, Some(1.0)).verdict,
            Verdict::Fail
        );
        assert_eq!(
            figure("x", "", None, Some(1.0), None).verdict,
            Verdict::Fail
        );
        assert_eq!(figure("x", "", None, None, None).verdict, Verdict::None);
    }

    #[test]
    fn server_cpu_over_budget_makes_the_run_fail() {
        let case = Case::parse(
            "name = \"t\"\n[fleet]\nnodes = 1\npods_per_node = 1\n[run]\nduration = \"2s\"\n[budgets]\nserver_cpu_cores_max = 0.25\n",
        )
        .expect("case");
        let p = |t: f64, c: f64| ProcPoint {
            t,
            cpu_cores: 0.5,
            rss_bytes: 1 << 20,
            cpu_seconds: c,
        };
        let data = RunData {
            window: (1.0, 3.0),
            procs: vec![ProcSeries {
                role: "server".into(),
                pid: 1,
                points: vec![p(1.0, 0.0), p(2.0, 0.5), p(3.0, 1.0)],
            }],
            ..RunData::default()
        };
        assert!(!data.passed(&case.budgets));
        let dir = tempfile::tempdir().expect("dir");
        let md = write_report(dir.path(), &case, &data).expect("writes");
        assert!(
            md.contains("| server CPU | 0.5000 cores | <= 0.2500 cores | **FAIL** |"),
            "{md}"
        );
        assert!(dir.path().join("cpu.svg").exists());
        assert!(dir.path().join("figures.json").exists());
    }

    fn stream(label: &str, latency_us: u64, per_second: u64, seconds: usize) -> StreamResult {
        let mut out = Vec::new();
        for _ in 0..seconds {
            let mut s = crate::harness::apiload::Second::new().expect("histogram");
            for _ in 0..per_second {
                s.latency.record(latency_us).expect("in range");
                s.ok += 1;
                s.bytes += 10_000;
            }
            out.push(s);
        }
        StreamResult {
            label: label.into(),
            seconds: out,
            sample_errors: vec![],
            dropped_at_window: 0,
        }
    }

    #[test]
    fn a_shape_budget_is_judged_on_that_shape_alone() {
        let text = "name = \"t\"\n[fleet]\nnodes = 1\npods_per_node = 1\n[[api.shapes]]\nkind = \"hpa\"\n[[api.shapes]]\nkind = \"top-pods-all\"\n[run]\nduration = \"2s\"\n[budgets.shapes.hpa-h2]\np99_ms_max = 10.0\nrps_min = 900.0\n";
        let case = Case::parse(text).expect("case");
        // HPA answers in 2 ms, 1,000 a second; the all-pods list takes 3 s, 20 a second: merged,
        // the p99 would be the list's.
        let data = RunData {
            window: (1.0, 3.0),
            streams: vec![
                stream("hpa-h2", 2_000, 1_000, 4),
                stream("top-pods-all-h2", 3_000_000, 20, 4),
            ],
            ..RunData::default()
        };
        assert!(data.api_window().p99_ms > 1_000.0);
        let figures = data.figures(&case.budgets);
        let p99 = figures
            .iter()
            .find(|f| f.name == "API p99 (hpa-h2)")
            .expect("per-shape p99");
        assert_eq!(p99.verdict, Verdict::Pass, "{p99:?}");
        let rps = figures
            .iter()
            .find(|f| f.name == "API requests per second (hpa-h2)")
            .expect("per-shape rate");
        assert!((rps.value.expect("measured") - 1_000.0).abs() < 1e-9);
        assert!(data.passed(&case.budgets));

        let slow = RunData {
            streams: vec![stream("hpa-h2", 20_000, 1_000, 4)],
            ..data
        };
        assert!(!slow.passed(&case.budgets));
    }
}
