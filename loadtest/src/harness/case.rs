//! Load-test cases as data: one TOML file per case, read into a [`Case`].
//!
//! A case says what cluster to simulate (`[fleet]`), how the metrics server runs (`[server]`),
//! what API load to apply (`[[api.shapes]]`), how long to run (`[run]`) and what the run must
//! achieve (`[budgets]`). Parsing does no I/O beyond reading the one file; checks that need the
//! machine (binaries, ports) belong to the runner.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Deserializer};

use crate::kubelet::fault::FaultKind;

/// Why a case could not be read.
#[derive(Debug, thiserror::Error)]
pub enum CaseError {
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("parsing {path}: {source}")]
    Parse {
        path: PathBuf,
        source: Box<toml::de::Error>,
    },
    #[error("case {case:?}: {reason}")]
    Invalid { case: String, reason: String },
}

/// A load-test case.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Case {
    pub name: String,
    #[serde(default)]
    pub description: String,
    pub fleet: FleetSpec,
    #[serde(default)]
    pub server: ServerSpec,
    #[serde(default)]
    pub api: ApiSpec,
    pub run: RunSpec,
    #[serde(default)]
    pub budgets: Budgets,
    /// Peers run side by side with the server in the same run (`[peers]`).
    #[serde(default)]
    pub peers: PeersSpec,
}

/// The simulated cluster.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FleetSpec {
    pub nodes: u64,
    pub pods_per_node: u64,
    /// The mean containers per pod the case is sized for. The fleet draws each pod's containers
    /// from its workload mix (one to three, about 1.6 on average); this figure is reported next
    /// to the measured one, it does not steer the fleet.
    #[serde(default)]
    pub containers_per_pod: Option<f64>,
    #[serde(default = "one")]
    pub seed: u64,
    /// cAdvisor-like sampling grid of each container; zero samples at request time.
    #[serde(default, deserialize_with = "duration")]
    pub sample_period: Duration,
    #[serde(default)]
    pub churn: ChurnSpec,
    /// Fraction of nodes per fault: `hang`, `slow`, `reset`, `server_error`, `unauthorized`,
    /// `garbage`, `truncated`, `huge`, `stale`, `future`, `wrong_san`, `wrong_ca`.
    #[serde(default)]
    pub faults: BTreeMap<String, f64>,
}

fn one() -> u64 {
    1
}

/// Churn, in events per second.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ChurnSpec {
    #[serde(default)]
    pub pod_create: f64,
    #[serde(default)]
    pub pod_delete: f64,
    #[serde(default)]
    pub container_restart: f64,
    #[serde(default)]
    pub node_add: f64,
    #[serde(default)]
    pub node_remove: f64,
}

/// How the metrics server runs.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerSpec {
    /// `--metric-resolution`: each node is scraped once per resolution.
    #[serde(default = "fifteen_seconds", deserialize_with = "duration")]
    pub resolution: Duration,
    /// Replaces the default command line; `{state_dir}`, `{port}`, `{cert_dir}` and
    /// `{resolution}` are substituted.
    #[serde(default)]
    pub args: Option<Vec<String>>,
    /// Appended to the command line.
    #[serde(default)]
    pub extra_args: Vec<String>,
}

impl Default for ServerSpec {
    fn default() -> Self {
        ServerSpec {
            resolution: fifteen_seconds(),
            args: None,
            extra_args: Vec::new(),
        }
    }
}

/// The API load: independent streams, each with its own connections and pace.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiSpec {
    #[serde(default)]
    pub shapes: Vec<ShapeSpec>,
    /// Nodes whose freshness is probed by polling the API (0: none).
    #[serde(default)]
    pub freshness_nodes: usize,
}

/// What a stream requests.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum ShapeKind {
    /// Like the HPA controller: one namespace's pods with a label selector, round-robin over
    /// every workload of the fleet.
    Hpa,
    /// `kubectl top pods -A`: every pod.
    TopPodsAll,
    /// Like the VPA recommender: every pod, on a slow period (`every`, default one minute).
    Vpa,
    /// `kubectl top nodes`: every node.
    Nodes,
    /// A fixed path (`path`).
    Path,
}

/// The HTTP version a stream speaks.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    #[default]
    H2,
    Http1,
}

/// One stream of API requests.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ShapeSpec {
    pub kind: ShapeKind,
    /// The request path for `kind = "path"`.
    #[serde(default)]
    pub path: Option<String>,
    #[serde(default)]
    pub protocol: Protocol,
    /// Requests in flight at once.
    #[serde(default = "one_u32")]
    pub concurrency: u32,
    /// Connections shared by the workers (HTTP/2 multiplexes; HTTP/1.1 always uses one per
    /// worker). Default one.
    #[serde(default)]
    pub connections: Option<u32>,
    /// Requests per second over all workers; absent: closed loop (each worker sends its next
    /// request when the previous answer arrives).
    #[serde(default)]
    pub rate: Option<f64>,
    /// Period between requests per worker (shorthand for a slow rate, as the VPA uses).
    #[serde(default, deserialize_with = "optional_duration")]
    pub every: Option<Duration>,
}

fn one_u32() -> u32 {
    1
}

impl ShapeSpec {
    /// Requests per second, or `None` for a closed loop.
    pub fn target_rate(&self) -> Option<f64> {
        if let Some(rate) = self.rate {
            return Some(rate);
        }
        if let Some(every) = self.every {
            return Some(f64::from(self.concurrency) / every.as_secs_f64().max(1e-3));
        }
        if self.kind == ShapeKind::Vpa {
            return Some(f64::from(self.concurrency) / 60.0);
        }
        None
    }

    /// A short name for tables and plots.
    pub fn label(&self) -> String {
        let kind = match self.kind {
            ShapeKind::Hpa => "hpa",
            ShapeKind::TopPodsAll => "top-pods-all",
            ShapeKind::Vpa => "vpa",
            ShapeKind::Nodes => "nodes",
            ShapeKind::Path => "path",
        };
        let proto = match self.protocol {
            Protocol::H2 => "h2",
            Protocol::Http1 => "http1",
        };
        format!("{kind}-{proto}")
    }
}

/// Timing of a run.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunSpec {
    /// The measured window.
    #[serde(deserialize_with = "duration")]
    pub duration: Duration,
    /// Load runs but is not measured: connections open, caches fill, rates have two points.
    #[serde(default, deserialize_with = "duration")]
    pub warmup: Duration,
    /// Extra time allowed for start-up and shutdown before children are killed.
    #[serde(default = "default_margin", deserialize_with = "duration")]
    pub margin: Duration,
    /// Spacing of process samples.
    #[serde(default = "one_second", deserialize_with = "duration")]
    pub sample_interval: Duration,
    /// Spacing of reads of the server's own `/metrics` (scrape counts and latencies): a
    /// Prometheus's scrape interval, so the server's measured CPU includes what monitoring costs
    /// it in a cluster, not a read per second (`/metrics` holds a histogram per node).
    #[serde(default = "fifteen_seconds", deserialize_with = "duration")]
    pub metrics_interval: Duration,
}

fn fifteen_seconds() -> Duration {
    Duration::from_secs(15)
}

fn default_margin() -> Duration {
    Duration::from_secs(60)
}

fn one_second() -> Duration {
    Duration::from_secs(1)
}

impl RunSpec {
    /// After this, every child is killed and the run reports what it has.
    pub fn hard_deadline(&self) -> Duration {
        self.warmup + self.duration + self.margin
    }
}

/// Side-by-side comparisons on the same fleet and machine, in the same run.
///
/// - `prometheus`: Prometheus scrapes the same kubelets at the server's resolution during the
///   warm-up and the window; CPU per 1,000 scrapes is compared.
/// - `nginx`: after the window, nginx serves the response bytes the server gave for the load's
///   paths, and the same load shapes (closed loop) run against the server and nginx in turn.
/// - `memchr`: a few kubelet bodies are decoded by the server's parser and scanned for newlines
///   with `memchr`, timed on this process's CPU clock.
///
/// A peer whose binary is missing is reported as skipped, with the reason; the run goes on.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PeersSpec {
    #[serde(default)]
    pub prometheus: bool,
    #[serde(default)]
    pub nginx: bool,
    #[serde(default)]
    pub memchr: bool,
    /// The Prometheus binary: a path, or a name looked up in `PATH`.
    #[serde(default = "default_prometheus_bin")]
    pub prometheus_bin: String,
    /// The nginx binary: a path, or a name looked up in `PATH`.
    #[serde(default = "default_nginx_bin")]
    pub nginx_bin: String,
    /// nginx `worker_processes`.
    #[serde(default = "one_u32")]
    pub nginx_workers: u32,
    /// Measured length of each leg (one shape against one target).
    #[serde(default = "twenty_seconds", deserialize_with = "duration")]
    pub leg: Duration,
    /// Unmeasured start of each leg: connections open, the closed loop settles.
    #[serde(default = "two_seconds", deserialize_with = "duration")]
    pub leg_warmup: Duration,
    /// How many times each shape alternates between the server and nginx.
    #[serde(default = "one_u32")]
    pub rounds: u32,
    /// The shapes compared against nginx; absent: the case's `api.shapes`. Each runs closed
    /// loop (any rate or period is dropped) so both sides are driven at their maximum rate.
    #[serde(default)]
    pub shapes: Vec<ShapeSpec>,
    /// Kubelet bodies decoded and scanned by the `memchr` comparison.
    #[serde(default = "four")]
    pub memchr_bodies: usize,
}

fn default_prometheus_bin() -> String {
    "prometheus".to_owned()
}

fn default_nginx_bin() -> String {
    "nginx".to_owned()
}

fn twenty_seconds() -> Duration {
    Duration::from_secs(20)
}

fn two_seconds() -> Duration {
    Duration::from_secs(2)
}

fn four() -> usize {
    4
}

impl Default for PeersSpec {
    fn default() -> Self {
        PeersSpec {
            prometheus: false,
            nginx: false,
            memchr: false,
            prometheus_bin: default_prometheus_bin(),
            nginx_bin: default_nginx_bin(),
            nginx_workers: 1,
            leg: twenty_seconds(),
            leg_warmup: two_seconds(),
            rounds: 1,
            shapes: Vec::new(),
            memchr_bodies: four(),
        }
    }
}

impl PeersSpec {
    /// Whether any peer is asked for.
    pub fn any(&self) -> bool {
        self.prometheus || self.nginx || self.memchr
    }
}

/// What the run must achieve; absent budgets are reported without a verdict.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Budgets {
    /// Server CPU over the measured window, cores.
    pub server_cpu_cores_max: Option<f64>,
    /// Server peak resident memory, MiB.
    pub server_rss_mib_max: Option<f64>,
    /// Lag from a kubelet serving a sample to the API serving it, 99th percentile, ms.
    pub freshness_p99_ms_max: Option<f64>,
    /// API latency, 99th percentile over every stream, ms.
    pub api_p99_ms_max: Option<f64>,
    /// API requests per second over every stream.
    pub api_rps_min: Option<f64>,
    /// API response bytes per second over every stream, MB/s (10^6).
    pub api_mb_per_s_min: Option<f64>,
    /// Budgets judged on one shape's streams alone, keyed by the shape's label (`hpa-h2`,
    /// `top-pods-all-http1`, ...): a target stated for one kind of query is not diluted, or
    /// failed, by other shapes in the same run (a 30 MB all-pods list is not an HPA query).
    #[serde(default)]
    pub shapes: BTreeMap<String, ShapeBudgets>,
}

/// What the streams of one shape must achieve, merged over the streams with that label.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ShapeBudgets {
    /// Latency, 99th percentile, ms.
    pub p99_ms_max: Option<f64>,
    /// Requests per second.
    pub rps_min: Option<f64>,
    /// Response bytes per second, MB/s (10^6).
    pub mb_per_s_min: Option<f64>,
}

impl Case {
    /// Reads and checks a case file.
    pub fn load(path: impl AsRef<Path>) -> Result<Case, CaseError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|source| CaseError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Case::parse(&text).map_err(|e| match e {
            CaseError::Parse { source, .. } => CaseError::Parse {
                path: path.to_path_buf(),
                source,
            },
            other => other,
        })
    }

    /// Parses and checks a case from TOML text.
    pub fn parse(text: &str) -> Result<Case, CaseError> {
        let case: Case = toml::from_str(text).map_err(|source| CaseError::Parse {
            path: PathBuf::new(),
            source: Box::new(source),
        })?;
        case.validate()?;
        Ok(case)
    }

    fn invalid(&self, reason: impl Into<String>) -> CaseError {
        CaseError::Invalid {
            case: self.name.clone(),
            reason: reason.into(),
        }
    }

    fn validate(&self) -> Result<(), CaseError> {
        if self.name.trim().is_empty() {
            return Err(self.invalid("name is empty"));
        }
        if self.fleet.nodes == 0 {
            return Err(self.invalid("fleet.nodes must be at least 1"));
        }
        if self.fleet.pods_per_node > 110 {
            return Err(self.invalid("fleet.pods_per_node is above the kubelet's 110"));
        }
        if self.run.duration.is_zero() {
            return Err(self.invalid("run.duration must be positive"));
        }
        if self.run.sample_interval < Duration::from_millis(100) {
            return Err(self.invalid("run.sample_interval must be at least 100ms"));
        }
        if self.run.metrics_interval < Duration::from_millis(100) {
            return Err(self.invalid("run.metrics_interval must be at least 100ms"));
        }
        if self.server.resolution.is_zero() {
            return Err(self.invalid("server.resolution must be positive"));
        }
        let mut total = 0.0;
        for (name, fraction) in &self.fleet.faults {
            fault_kind(name).ok_or_else(|| self.invalid(format!("unknown fault {name:?}")))?;
            if !(0.0..=1.0).contains(fraction) {
                return Err(self.invalid(format!("fault {name} fraction {fraction} not in 0..=1")));
            }
            total += fraction;
        }
        if total > 1.0 + 1e-9 {
            return Err(self.invalid("fault fractions add up to more than 1"));
        }
        let churn = &self.fleet.churn;
        for rate in [
            churn.pod_create,
            churn.pod_delete,
            churn.container_restart,
            churn.node_add,
            churn.node_remove,
        ] {
            if !(rate.is_finite() && rate >= 0.0) {
                return Err(self.invalid("churn rates must be finite and not negative"));
            }
        }
        let peers = &self.peers;
        if peers.nginx_workers == 0 || peers.rounds == 0 || peers.leg.is_zero() {
            return Err(self.invalid("peers: nginx_workers, rounds and leg must be positive"));
        }
        if peers.memchr && peers.memchr_bodies == 0 {
            return Err(self.invalid("peers: memchr_bodies must be at least 1"));
        }
        if peers.nginx && self.nginx_shapes().is_empty() {
            return Err(self.invalid("peers: nginx needs api.shapes or peers.shapes"));
        }
        for shape in self.api.shapes.iter().chain(peers.shapes.iter()) {
            if shape.concurrency == 0 {
                return Err(
                    self.invalid(format!("{}: concurrency must be at least 1", shape.label()))
                );
            }
            if shape.connections == Some(0) {
                return Err(
                    self.invalid(format!("{}: connections must be at least 1", shape.label()))
                );
            }
            if let Some(rate) = shape.rate {
                if !(rate.is_finite() && rate > 0.0) {
                    return Err(self.invalid(format!("{}: rate must be positive", shape.label())));
                }
            }
            match (shape.kind, &shape.path) {
                (ShapeKind::Path, None) => {
                    return Err(self.invalid("a shape of kind \"path\" needs a path"))
                }
                (ShapeKind::Path, Some(p)) if !p.starts_with('/') => {
                    return Err(self.invalid(format!("path {p:?} must start with /")))
                }
                (kind, Some(_)) if kind != ShapeKind::Path => {
                    return Err(self.invalid("only shapes of kind \"path\" take a path"))
                }
                _ => {}
            }
        }
        for label in self.budgets.shapes.keys() {
            if !self.api.shapes.iter().any(|s| &s.label() == label) {
                return Err(self.invalid(format!(
                    "budgets.shapes.{label}: no api shape has that label"
                )));
            }
        }
        Ok(())
    }

    /// The shapes compared against nginx, closed loop.
    pub fn nginx_shapes(&self) -> Vec<ShapeSpec> {
        let shapes = if self.peers.shapes.is_empty() {
            &self.api.shapes
        } else {
            &self.peers.shapes
        };
        shapes
            .iter()
            .map(|s| {
                let mut s = s.clone();
                s.rate = None;
                s.every = None;
                // The VPA is only a slow all-pods list: closed loop it is that list.
                if s.kind == ShapeKind::Vpa {
                    s.kind = ShapeKind::TopPodsAll;
                }
                s
            })
            .collect()
    }

    /// Time the peers add after the measured window, beyond the run's own hard deadline.
    pub fn peers_time(&self) -> Duration {
        let mut t = Duration::ZERO;
        if self.peers.nginx {
            let legs = 2 * self.peers.rounds * self.nginx_shapes().len() as u32;
            // Start-up, capturing bodies, and each leg's stop.
            t += Duration::from_secs(30)
                + (self.peers.leg + self.peers.leg_warmup + Duration::from_secs(5)) * legs;
        }
        if self.peers.memchr {
            t += Duration::from_secs(30);
        }
        if self.peers.prometheus {
            t += Duration::from_secs(30);
        }
        t
    }

    /// After this, every child is killed and the run reports what it has.
    pub fn hard_deadline(&self) -> Duration {
        self.run.hard_deadline() + self.peers_time()
    }

    /// The fault fractions as the fleet's kinds.
    pub fn fault_kinds(&self) -> Vec<(FaultKind, f64)> {
        self.fleet
            .faults
            .iter()
            .filter_map(|(name, f)| fault_kind(name).map(|k| (k, *f)))
            .collect()
    }
}

/// The fleet's fault kind for a case's fault name.
pub fn fault_kind(name: &str) -> Option<FaultKind> {
    Some(match name {
        "slow" => FaultKind::Slow,
        "hang" => FaultKind::Hang,
        "reset" => FaultKind::Reset,
        "server_error" => FaultKind::ServerError,
        "unauthorized" => FaultKind::Unauthorized,
        "garbage" => FaultKind::Garbage,
        "truncated" => FaultKind::Truncated,
        "huge" => FaultKind::Huge,
        "stale" => FaultKind::Stale,
        "future" => FaultKind::Future,
        "wrong_san" => FaultKind::WrongSan,
        "wrong_ca" => FaultKind::WrongCa,
        _ => return None,
    })
}

/// Parses `500ms`, `15s`, `2m`, `1h` (a bare number is seconds).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (number, unit) = s.split_at(split);
    let value: f64 = number
        .parse()
        .map_err(|_| format!("{s:?} is not a duration like 15s"))?;
    let seconds = match unit {
        "ms" => value / 1000.0,
        "" | "s" => value,
        "m" => value * 60.0,
        "h" => value * 3600.0,
        _ => return Err(format!("{s:?}: unknown unit {unit:?} (ms, s, m, h)")),
    };
    Duration::try_from_secs_f64(seconds).map_err(|e| format!("{s:?}: {e}"))
}

fn duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let s = String::deserialize(d)?;
    parse_duration(&s).map_err(serde::de::Error::custom)
}

fn optional_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    let s = Option::<String>::deserialize(d)?;
    s.map(|s| parse_duration(&s).map_err(serde::de::Error::custom))
        .transpose()
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
        name = "t"
        [fleet]
        nodes = 2
        pods_per_node = 3
        [run]
        duration = "5s"
    "#;

    #[test]
    fn a_minimal_case_takes_defaults() {
        let case = Case::parse(MINIMAL).expect("parses");
        assert_eq!(case.fleet.seed, 1);
        assert_eq!(case.server.resolution, Duration::from_secs(15));
        assert_eq!(case.run.warmup, Duration::ZERO);
        assert_eq!(case.run.hard_deadline(), Duration::from_secs(65));
        assert!(case.api.shapes.is_empty());
        assert_eq!(case.budgets, Budgets::default());
    }

    #[test]
    fn an_unknown_fault_is_rejected() {
        let text = MINIMAL.replace("[run]", "[fleet.faults]\nmelt = 0.1\n[run]");
        let err = Case::parse(&text).expect_err("rejected");
        assert!(err.to_string().contains("melt"), "{err}");
    }

    #[test]
    fn fault_fractions_above_one_in_total_are_rejected() {
        let text = MINIMAL.replace("[run]", "[fleet.faults]\nhang = 0.6\nslow = 0.5\n[run]");
        let err = Case::parse(&text).expect_err("rejected");
        assert!(err.to_string().contains("more than 1"), "{err}");
    }

    #[test]
    fn an_unknown_key_is_rejected_rather_than_ignored() {
        let text = MINIMAL.replace("pods_per_node = 3", "pods_per_node = 3\nnodez = 4");
        assert!(matches!(Case::parse(&text), Err(CaseError::Parse { .. })));
    }

    #[test]
    fn a_vpa_shape_defaults_to_one_request_per_minute_per_worker() {
        let text = format!("{MINIMAL}\n[[api.shapes]]\nkind = \"vpa\"\nconcurrency = 2\n");
        let case = Case::parse(&text).expect("parses");
        let rate = case.api.shapes[0].target_rate().expect("open loop");
        assert!((rate - 2.0 / 60.0).abs() < 1e-9);
        assert_eq!(case.api.shapes[0].label(), "vpa-h2");
    }

    #[test]
    fn a_path_shape_without_a_path_is_rejected() {
        let text = format!("{MINIMAL}\n[[api.shapes]]\nkind = \"path\"\n");
        assert!(matches!(Case::parse(&text), Err(CaseError::Invalid { .. })));
    }

    #[test]
    fn peers_compare_the_load_shapes_closed_loop_and_extend_the_deadline() {
        let text = format!(
            "{MINIMAL}\n[[api.shapes]]\nkind = \"vpa\"\n[[api.shapes]]\nkind = \"hpa\"\nrate = 100.0\n[peers]\nnginx = true\nprometheus = true\nleg = \"10s\"\nrounds = 2\n"
        );
        let case = Case::parse(&text).expect("parses");
        let shapes = case.nginx_shapes();
        assert_eq!(shapes.len(), 2);
        assert!(shapes.iter().all(|s| s.target_rate().is_none()));
        assert_eq!(shapes[0].kind, ShapeKind::TopPodsAll);
        assert!(case.peers.any());
        // 2 shapes x 2 rounds x 2 targets = 8 legs of at least 10 s each.
        assert!(case.hard_deadline() >= case.run.hard_deadline() + Duration::from_secs(80));
        assert_eq!(
            Case::parse(MINIMAL).expect("parses").peers,
            PeersSpec::default()
        );
    }

    #[test]
    fn a_shape_budget_must_name_a_shape_of_the_case() {
        let shape = "[[api.shapes]]\nkind = \"hpa\"\nrate = 100.0\n";
        let text = format!(
            "{MINIMAL}\n{shape}[budgets.shapes.hpa-h2]\np99_ms_max = 10.0\nrps_min = 90.0\n"
        );
        let case = Case::parse(&text).expect("parses");
        assert_eq!(case.budgets.shapes["hpa-h2"].p99_ms_max, Some(10.0));
        assert_eq!(case.budgets.shapes["hpa-h2"].rps_min, Some(90.0));
        let text = format!("{MINIMAL}\n{shape}[budgets.shapes.hpa-http1]\np99_ms_max = 10.0\n");
        let err = Case::parse(&text).expect_err("rejected");
        assert!(err.to_string().contains("hpa-http1"), "{err}");
    }

    #[test]
    fn nginx_without_any_shape_is_rejected() {
        let text = format!("{MINIMAL}\n[peers]\nnginx = true\n");
        let err = Case::parse(&text).expect_err("rejected");
        assert!(err.to_string().contains("nginx"), "{err}");
    }

    #[test]
    fn durations_read_like_the_command_line() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("3"), Ok(Duration::from_secs(3)));
        assert!(parse_duration("3 fortnights").is_err());
    }

    #[test]
    fn every_shipped_case_parses() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("cases");
        let mut seen = 0;
        for entry in std::fs::read_dir(&dir).expect("cases dir") {
            let path = entry.expect("entry").path();
            if path.extension().is_some_and(|e| e == "toml") {
                let case = Case::load(&path).unwrap_or_else(|e| panic!("{e}"));
                assert_eq!(
                    Some(case.name.as_str()),
                    path.file_stem().and_then(|s| s.to_str()),
                    "a case is named like its file"
                );
                seen += 1;
            }
        }
        assert!(seen >= 6, "only {seen} cases");
    }
}
