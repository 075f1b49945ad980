//! End to end against a simulated cluster: kubelets and an API-server stand-in run in this process,
//! the metrics server runs as its own process, and the tests read its API over HTTPS the way a
//! client would.
//!
//! The simulated kubelets remember exactly what they served last, so the tests compute what the
//! server must show (rates, memory, timestamps, windows) and compare without tolerance. Everything
//! listens and dials on loopback; every wait polls a real condition against one deadline per test.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::client::conn::http2::SendRequest;
use hyper_util::rt::{TokioExecutor, TokioIo};
use kubelet_fleet::apiserver::{self, ApiServerConfig, ApiServerHandle};
use kubelet_fleet::cluster::PodPhase;
use kubelet_fleet::fleet::{Fleet, FleetHandle};
use kubelet_fleet::kubelet::fault::Fault;
use kubelet_fleet::kubelet::sim::Point;
use kubelet_fleet::kubelet::{ServedHistory, ServedSample};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use serde_json::Value;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

const BINARY: &str = env!("CARGO_BIN_EXE_metrics-server");
/// The kubectl build used when `KUBECTL` does not name one (Debian's Google Cloud SDK package
/// installs one per minor version here); `kubectl` on `PATH` otherwise.
const DEFAULT_KUBECTL: &str = "/usr/lib/google-cloud-sdk/bin/kubectl.1.33";

const NODES: u64 = 12;
const PODS_PER_NODE: u64 = 4;
/// The scrape period given to the server.
const RESOLUTION: &str = "1s";
/// Everything one test waits for must happen within this long after it starts.
const BUDGET: Duration = Duration::from_secs(50);
/// Bound on one HTTP request to the server.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Spacing of polls: how often a condition is re-checked, never a wait for something to happen.
const POLL: Duration = Duration::from_millis(100);
/// No simulated container or node uses more than this many nanocores; a counter reset misread
/// as usage shows up far above it.
const SANE_NANOCORES: i128 = 64 * 1_000_000_000;

const NODES_PATH: &str = "/apis/metrics.k8s.io/v1beta1/nodes";
const PODS_PATH: &str = "/apis/metrics.k8s.io/v1beta1/pods";

// === The environment: a fleet, the API stand-in, and the server process ===

/// A directory removed when the test ends.
struct ScratchDir(PathBuf);

impl ScratchDir {
    fn new(test: &str) -> Self {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let dir = std::env::temp_dir().join(format!(
            "metrics-server-e2e-{test}-{}-{nanos}",
            std::process::id()
        ));
        std::fs::create_dir_all(&dir).expect("create the state directory");
        ScratchDir(dir)
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The metrics server process; killed when the test ends, passed or not.
struct ServerProcess {
    child: std::process::Child,
    log: PathBuf,
}

impl ServerProcess {
    fn spawn(dir: &Path, port: u16, extra: &[&str]) -> Self {
        let log = dir.join("metrics-server.log");
        let stderr = std::fs::File::create(&log).expect("create the server log");
        let path = |name: &str| dir.join(name).display().to_string();
        let child = Command::new(BINARY)
            .arg(format!("--kubeconfig={}", path("server.kubeconfig")))
            .arg(format!(
                "--kubelet-certificate-authority={}",
                path("kubelet-ca.crt")
            ))
            .arg(format!(
                "--kubelet-client-certificate={}",
                path("kubelet-client.crt")
            ))
            .arg(format!(
                "--kubelet-client-key={}",
                path("kubelet-client.key")
            ))
            .arg("--kubelet-use-node-status-port")
            .arg("--bind-address=127.0.0.1")
            .arg(format!("--secure-port={port}"))
            .arg(format!("--cert-dir={}", path("certs")))
            .arg(format!("--metric-resolution={RESOLUTION}"))
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .expect("start the metrics server");
        ServerProcess { child, log }
    }

    /// The end of the server's log, for failure messages.
    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let start = text.len().saturating_sub(4000);
        let start = (start..text.len())
            .find(|&i| text.is_char_boundary(i))
            .unwrap_or(text.len());
        text[start..].to_owned()
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An HTTP/2 connection to the server's API.
struct ApiClient {
    sender: SendRequest<Empty<Bytes>>,
}

impl ApiClient {
    async fn get(&self, path: &str) -> (u16, String) {
        self.get_with(path, &[]).await
    }

    /// A GET with extra request headers.
    async fn get_with(&self, path: &str, headers: &[(&str, &str)]) -> (u16, String) {
        let mut request = http::Request::get(path).header("host", "localhost");
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let request = request.body(Empty::new()).expect("request");
        let mut sender = self.sender.clone();
        let response = tokio::time::timeout(REQUEST_TIMEOUT, sender.send_request(request))
            .await
            .unwrap_or_else(|_| panic!("GET {path} timed out"))
            .unwrap_or_else(|e| panic!("GET {path}: {e}"));
        let status = response.status().as_u16();
        let body = tokio::time::timeout(REQUEST_TIMEOUT, response.into_body().collect())
            .await
            .unwrap_or_else(|_| panic!("body of GET {path} timed out"))
            .unwrap_or_else(|e| panic!("body of GET {path}: {e}"))
            .to_bytes();
        (status, String::from_utf8_lossy(&body).into_owned())
    }
}

/// One simulated cluster with a metrics server scraping it. Fields drop in order: the server is
/// killed before the cluster it scrapes goes away, and the directory is removed last.
struct Env {
    server: ServerProcess,
    client: ApiClient,
    api: ApiServerHandle,
    fleet: FleetHandle,
    dir: ScratchDir,
    deadline: Instant,
    /// The server's HTTPS port.
    port: u16,
}

/// A port that was free a moment ago.
fn free_port() -> u16 {
    let probe = std::net::TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
    probe.local_addr().expect("local address").port()
}

impl Env {
    /// Starts a fleet of [`NODES`] nodes, the API stand-in (forwarding `metrics.k8s.io` to the
    /// server) and the server with `extra` flags, and connects to the server.
    async fn start(test: &str, seed: u64, extra: &[&str]) -> Env {
        let deadline = Instant::now() + BUDGET;
        let dir = ScratchDir::new(test);
        let fleet = Fleet::builder()
            .nodes(NODES)
            .pods_per_node(PODS_PER_NODE)
            .seed(seed)
            .port(0)
            .start(&dir.0)
            .await
            .expect("the fleet starts");
        let port = free_port();
        let mut config = ApiServerConfig::new(&dir.0);
        config.aggregate_to = Some(format!("https://127.0.0.1:{port}"));
        let api = apiserver::start(config, fleet.cluster())
            .await
            .expect("the API stand-in starts");
        let mut server = ServerProcess::spawn(&dir.0, port, extra);
        // The server authenticates and authorizes every request: read as a `system:masters`
        // member, whom it allows without a review.
        let admin = api
            .issue_client_cert(apiserver::ADMIN_USER, &[apiserver::MASTERS_GROUP])
            .expect("issue the admin certificate");
        let client = connect(
            &mut server,
            &dir.0,
            port,
            deadline,
            Some((&admin.cert_pem, &admin.key_pem)),
        )
        .await;
        Env {
            server,
            client,
            api,
            fleet,
            dir,
            deadline,
            port,
        }
    }

    /// Panics with the server's log if the test's deadline has passed.
    fn check_deadline(&self, waiting_for: impl FnOnce() -> String) {
        if Instant::now() > self.deadline {
            panic!(
                "timed out waiting for {}\n--- server log ---\n{}",
                waiting_for(),
                self.server.log_tail()
            );
        }
    }

    async fn get_json(&self, path: &str) -> Value {
        let (status, body) = self.client.get(path).await;
        assert_eq!(status, 200, "GET {path}: {body}");
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("GET {path}: {e}: {body}"))
    }

    async fn nodes(&self) -> BTreeMap<String, Served> {
        parse_node_list(&self.get_json(NODES_PATH).await)
    }

    async fn pods(&self) -> BTreeMap<PodKey, ServedPod> {
        parse_pod_list(&self.get_json(PODS_PATH).await)
    }

    fn node_names(&self) -> Vec<String> {
        self.fleet
            .cluster()
            .list_nodes()
            .items
            .iter()
            .map(|n| n.name.clone())
            .collect()
    }

    fn running_pods(&self) -> BTreeSet<PodKey> {
        self.fleet
            .cluster()
            .list_pods()
            .items
            .iter()
            .filter(|p| p.phase == PodPhase::Running)
            .map(|p| (p.namespace.clone(), p.name.clone()))
            .collect()
    }

    fn histories(&self) -> BTreeMap<String, Option<ServedHistory>> {
        self.node_names()
            .into_iter()
            .map(|n| {
                let h = self.fleet.served(&n);
                (n, h)
            })
            .collect()
    }

    /// Reads every node's history, then both lists, then the histories again; the nodes whose
    /// history did not move in between are returned with it, the others are left out.
    async fn consistent_read(&self) -> ConsistentRead {
        let before = self.histories();
        let nodes = self.nodes().await;
        let pods = self.pods().await;
        let after = self.histories();
        let stable = before
            .into_iter()
            .filter_map(|(name, h)| match (h, after.get(&name)) {
                (Some(h), Some(Some(again))) if h == *again => Some((name, h)),
                _ => None,
            })
            .collect();
        ConsistentRead {
            nodes,
            pods,
            stable,
        }
    }

    /// Polls until every node and every pod of `nodes` has been served with exactly the usage
    /// its kubelet's last two bodies imply (each at least once). A read whose history stayed put
    /// may only differ from that because the server has not stored the last body yet; any other
    /// difference seen on the way fails the test.
    async fn wait_exact(&self, nodes: &[String]) {
        let mut pending_nodes: BTreeSet<String> = nodes.iter().cloned().collect();
        let mut pending_pods: BTreeSet<PodKey> = self
            .fleet
            .cluster()
            .list_pods()
            .items
            .iter()
            .filter(|p| p.phase == PodPhase::Running && nodes.contains(&p.node))
            .map(|p| (p.namespace.clone(), p.name.clone()))
            .collect();
        let mut last_mismatch = String::new();
        // Values that are neither the current rate nor the previous body's (a server one scrape
        // behind the history just read): wrong whenever they are seen.
        let mut unexplained: Vec<String> = Vec::new();
        while !pending_nodes.is_empty() || !pending_pods.is_empty() {
            self.check_deadline(|| {
                format!(
                    "exact usage of nodes {pending_nodes:?} and pods {pending_pods:?}; last \
                     mismatch: {last_mismatch}"
                )
            });
            let read = self.consistent_read().await;
            for (node, history) in &read.stable {
                if pending_nodes.contains(node) {
                    match compare_node(node, history, &read.nodes) {
                        Ok(()) => {
                            pending_nodes.remove(node);
                        }
                        Err(why) => {
                            if !node_lags(node, history, &read.nodes) {
                                unexplained.push(why.clone());
                            }
                            last_mismatch = why;
                        }
                    }
                }
                for (key, expected) in expected_pods(&history.last, history.previous.as_ref()) {
                    if !pending_pods.contains(&key) {
                        continue;
                    }
                    match compare_pod(&key, expected.as_ref(), read.pods.get(&key)) {
                        Ok(()) => {
                            pending_pods.remove(&key);
                        }
                        Err(why) => {
                            if expected.is_some() && !pod_lags(&key, history, read.pods.get(&key)) {
                                unexplained.push(why.clone());
                            }
                            last_mismatch = why;
                        }
                    }
                }
            }
            tokio::time::sleep(POLL).await;
        }
        assert!(
            unexplained.is_empty(),
            "served values matching no body the kubelets sent: {unexplained:#?}"
        );
    }

    /// Polls until one pair of lists shows every node and every Running pod.
    async fn wait_all_listed(&self) {
        let mut missing = String::new();
        loop {
            self.check_deadline(|| format!("every node and pod to be listed; missing {missing}"));
            let nodes = self.nodes().await;
            let pods = self.pods().await;
            let want_nodes: BTreeSet<String> = self.node_names().into_iter().collect();
            let want_pods = self.running_pods();
            let missing_nodes: Vec<_> = want_nodes
                .iter()
                .filter(|n| !nodes.contains_key(*n))
                .collect();
            let missing_pods: Vec<_> = want_pods
                .iter()
                .filter(|p| !pods.contains_key(*p))
                .collect();
            if missing_nodes.is_empty() && missing_pods.is_empty() {
                // Nothing is listed that the cluster does not have.
                for name in nodes.keys() {
                    assert!(want_nodes.contains(name), "unknown node {name} listed");
                }
                for key in pods.keys() {
                    assert!(want_pods.contains(key), "unknown pod {key:?} listed");
                }
                return;
            }
            missing = format!("nodes {missing_nodes:?}, pods {missing_pods:?}");
            tokio::time::sleep(POLL).await;
        }
    }
}

/// Waits for the server to listen and present its certificate, then opens one HTTP/2 connection,
/// presenting `client_cert` (certificate and key PEM) if given.
async fn connect(
    server: &mut ServerProcess,
    dir: &Path,
    port: u16,
    deadline: Instant,
    client_cert: Option<(&str, &str)>,
) -> ApiClient {
    let cert_file = dir.join("certs").join("apiserver.crt");
    // The server writes its certificate before it binds, so a successful connect means the file
    // is complete.
    let stream = loop {
        if let Ok(stream) = TcpStream::connect(("127.0.0.1", port)).await {
            if cert_file.is_file() {
                break stream;
            }
        }
        if let Ok(Some(status)) = server.child.try_wait() {
            panic!("the server exited early ({status})\n{}", server.log_tail());
        }
        assert!(
            Instant::now() < deadline,
            "the server did not start listening\n{}",
            server.log_tail()
        );
        tokio::time::sleep(POLL).await;
    };
    let mut roots = rustls::RootCertStore::empty();
    let pem = std::fs::read(&cert_file).expect("read the serving certificate");
    for cert in CertificateDer::pem_slice_iter(&pem) {
        roots.add(cert.expect("certificate PEM")).expect("trust it");
    }
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("TLS versions")
    .with_root_certificates(roots);
    let mut config = match client_cert {
        Some((cert_pem, key_pem)) => builder
            .with_client_auth_cert(
                CertificateDer::pem_slice_iter(cert_pem.as_bytes())
                    .collect::<Result<Vec<_>, _>>()
                    .expect("client certificate PEM"),
                PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).expect("client key PEM"),
            )
            .expect("client certificate"),
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"h2".to_vec()];
    let tls = tokio::time::timeout(
        REQUEST_TIMEOUT,
        TlsConnector::from(Arc::new(config))
            .connect(ServerName::try_from("localhost").expect("name"), stream),
    )
    .await
    .expect("TLS handshake in time")
    .expect("TLS handshake");
    let (sender, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
            .await
            .expect("HTTP/2 handshake");
    tokio::spawn(connection);
    ApiClient { sender }
}

// === What the server shows ===

type PodKey = (String, String);

/// One node's (or container's) usage as served.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Served {
    timestamp_s: i64,
    window_ns: i128,
    cpu_nanocores: i128,
    memory_bytes: i128,
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct ServedPod {
    timestamp_s: i64,
    window_ns: i128,
    /// (container name, nanocores, bytes), sorted by name.
    containers: Vec<(String, i128, i128)>,
}

fn text<'a>(v: &'a Value, pointer: &str) -> &'a str {
    v.pointer(pointer)
        .and_then(Value::as_str)
        .unwrap_or_else(|| panic!("{pointer} missing in {v}"))
}

fn parse_node_list(list: &Value) -> BTreeMap<String, Served> {
    assert_eq!(text(list, "/kind"), "NodeMetricsList");
    let items = list["items"].as_array().expect("items");
    items
        .iter()
        .map(|item| {
            let name = text(item, "/metadata/name").to_owned();
            let served = Served {
                timestamp_s: parse_rfc3339(text(item, "/timestamp")),
                window_ns: parse_go_duration(text(item, "/window")),
                cpu_nanocores: parse_quantity(text(item, "/usage/cpu"), 9),
                memory_bytes: parse_quantity(text(item, "/usage/memory"), 0),
            };
            (name, served)
        })
        .collect()
}

fn parse_pod_list(list: &Value) -> BTreeMap<PodKey, ServedPod> {
    assert_eq!(text(list, "/kind"), "PodMetricsList");
    let items = list["items"].as_array().expect("items");
    items
        .iter()
        .map(|item| {
            let key = (
                text(item, "/metadata/namespace").to_owned(),
                text(item, "/metadata/name").to_owned(),
            );
            let mut containers: Vec<_> = item["containers"]
                .as_array()
                .expect("containers")
                .iter()
                .map(|c| {
                    (
                        text(c, "/name").to_owned(),
                        parse_quantity(text(c, "/usage/cpu"), 9),
                        parse_quantity(text(c, "/usage/memory"), 0),
                    )
                })
                .collect();
            containers.sort();
            let pod = ServedPod {
                timestamp_s: parse_rfc3339(text(item, "/timestamp")),
                window_ns: parse_go_duration(text(item, "/window")),
                containers,
            };
            (key, pod)
        })
        .collect()
}

/// A Kubernetes quantity (`123n`, `5m`, `2`, `1536`, `1024Ki`, `2Mi`, `1e3`) times 10^`scale`,
/// which must come out whole: CPU with scale 9 gives nanocores, memory with scale 0 gives bytes.
fn parse_quantity(q: &str, scale: i32) -> i128 {
    let (negative, body) = match q.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, q.strip_prefix('+').unwrap_or(q)),
    };
    let number_len = body
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(body.len());
    let (number, suffix) = body.split_at(number_len);
    let (int_part, frac_part) = number.split_once('.').unwrap_or((number, ""));
    assert!(
        !int_part.is_empty() || !frac_part.is_empty(),
        "quantity {q:?} has no digits"
    );
    let digits = format!("{int_part}{frac_part}");
    let mut mantissa: i128 = digits.parse().unwrap_or_else(|_| panic!("quantity {q:?}"));
    let mut pow10: i32 = -(frac_part.len() as i32);
    let mut pow2: u32 = 0;
    match suffix {
        "" => {}
        "n" => pow10 -= 9,
        "u" => pow10 -= 6,
        "m" => pow10 -= 3,
        "k" => pow10 += 3,
        "M" => pow10 += 6,
        "G" => pow10 += 9,
        "T" => pow10 += 12,
        "P" => pow10 += 15,
        "E" => pow10 += 18,
        "Ki" => pow2 = 10,
        "Mi" => pow2 = 20,
        "Gi" => pow2 = 30,
        "Ti" => pow2 = 40,
        "Pi" => pow2 = 50,
        "Ei" => pow2 = 60,
        exp if exp.starts_with(['e', 'E']) => {
            pow10 += exp[1..]
                .parse::<i32>()
                .unwrap_or_else(|_| panic!("quantity {q:?}: bad exponent"));
        }
        other => panic!("quantity {q:?}: unknown suffix {other:?}"),
    }
    mantissa <<= pow2;
    pow10 += scale;
    while pow10 > 0 {
        mantissa *= 10;
        pow10 -= 1;
    }
    while pow10 < 0 {
        assert_eq!(
            mantissa % 10,
            0,
            "quantity {q:?} is not a whole number at scale 10^{scale}"
        );
        mantissa /= 10;
        pow10 += 1;
    }
    if negative {
        -mantissa
    } else {
        mantissa
    }
}

/// A Go duration (`1.001s`, `999.5ms`, `1m0.5s`, `2h3m4s`, `0s`) in nanoseconds.
fn parse_go_duration(s: &str) -> i128 {
    if s == "0s" || s == "0" {
        return 0;
    }
    let mut rest = s;
    let mut total: i128 = 0;
    while !rest.is_empty() {
        let number_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or_else(|| panic!("duration {s:?} lacks a unit"));
        let (number, tail) = rest.split_at(number_len);
        let unit_len = tail
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(tail.len());
        let (unit, tail) = tail.split_at(unit_len);
        let unit_ns: i128 = match unit {
            "ns" => 1,
            "us" | "µs" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60_000_000_000,
            "h" => 3_600_000_000_000,
            other => panic!("duration {s:?}: unknown unit {other:?}"),
        };
        let (int_part, frac_part) = number.split_once('.').unwrap_or((number, ""));
        let int: i128 = if int_part.is_empty() {
            0
        } else {
            int_part.parse().expect("digits")
        };
        total += int * unit_ns;
        if !frac_part.is_empty() {
            let frac: i128 = frac_part.parse().expect("digits");
            let denominator = 10i128.pow(frac_part.len() as u32);
            assert_eq!(
                frac * unit_ns % denominator,
                0,
                "duration {s:?} is finer than a nanosecond"
            );
            total += frac * unit_ns / denominator;
        }
        rest = tail;
    }
    total
}

/// `2026-01-27T18:48:20Z` as unix seconds (the form Kubernetes serialises times in).
fn parse_rfc3339(s: &str) -> i64 {
    let b = s.as_bytes();
    assert!(
        b.len() == 20
            && b[4] == b'-'
            && b[7] == b'-'
            && b[10] == b'T'
            && b[13] == b':'
            && b[16] == b':'
            && b[19] == b'Z',
        "not an RFC 3339 UTC time in seconds: {s:?}"
    );
    let field = |range: std::ops::Range<usize>| -> i64 {
        s[range]
            .parse()
            .unwrap_or_else(|_| panic!("bad time {s:?}"))
    };
    let (year, month, day) = (field(0..4), field(5..7), field(8..10));
    let (hour, minute, second) = (field(11..13), field(14..16), field(17..19));
    days_from_civil(year, month, day) * 86_400 + hour * 3600 + minute * 60 + second
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

// === What the kubelets' served bodies imply ===

struct ConsistentRead {
    nodes: BTreeMap<String, Served>,
    pods: BTreeMap<PodKey, ServedPod>,
    /// Nodes whose served history was the same before and after the lists were read.
    stable: BTreeMap<String, ServedHistory>,
}

/// The CPU counter as it reached the server: the kubelet prints `cpu_ns / 1e9` core-seconds in
/// the shortest form that reads back as the same double, and the reader multiplies by 1e9 and
/// truncates, as upstream metrics-server does. That can land a nanosecond below `cpu_ns`.
fn wire_counter(cpu_ns: u64) -> i128 {
    ((cpu_ns as f64 / 1e9) * 1e9) as u64 as i128
}

/// The usage two samples imply; `None` when no time passed between them.
fn expected_rate(prev: &Point, last: &Point) -> Option<Served> {
    let window_ns = i128::from(last.timestamp_ms - prev.timestamp_ms) * 1_000_000;
    if window_ns <= 0 {
        return None;
    }
    let used = wire_counter(last.cpu_ns) - wire_counter(prev.cpu_ns);
    Some(Served {
        timestamp_s: last.timestamp_ms.div_euclid(1000),
        window_ns,
        cpu_nanocores: used * 1_000_000_000 / window_ns,
        memory_bytes: i128::from(last.memory),
    })
}

/// Checks a node's served usage against its history.
fn compare_node(
    node: &str,
    history: &ServedHistory,
    served: &BTreeMap<String, Served>,
) -> Result<(), String> {
    let prev = history
        .previous
        .as_ref()
        .ok_or_else(|| format!("{node}: only one body served yet"))?;
    let expected = expected_rate(&prev.node, &history.last.node)
        .ok_or_else(|| format!("{node}: empty window"))?;
    match served.get(node) {
        Some(got) if *got == expected => Ok(()),
        got => Err(format!("{node}: served {got:?}, expected {expected:?}")),
    }
}

/// Whether a node's served usage is absent or comes from the body before the last one (the
/// server had not stored the last body yet): its time and memory are that body's.
fn node_lags(node: &str, history: &ServedHistory, served: &BTreeMap<String, Served>) -> bool {
    let (Some(prev), Some(got)) = (history.previous.as_ref(), served.get(node)) else {
        return true;
    };
    got.timestamp_s == prev.node.timestamp_ms.div_euclid(1000)
        && got.memory_bytes == i128::from(prev.node.memory)
}

/// Like [`node_lags`], for a pod: absent, or every container shows the previous body's memory
/// at the previous body's time.
fn pod_lags(key: &PodKey, history: &ServedHistory, served: Option<&ServedPod>) -> bool {
    let (Some(prev), Some(got)) = (history.previous.as_ref(), served) else {
        return true;
    };
    got.containers.iter().all(|(name, _, memory)| {
        prev.container(&key.0, &key.1, name).is_some_and(|c| {
            got.timestamp_s <= c.point.timestamp_ms.div_euclid(1000)
                && *memory == i128::from(c.point.memory)
        })
    })
}

/// Every pod of the last body, with the usage the server must show for it, or `None` where it
/// must not show it yet (a container without a previous sample of the same run).
fn expected_pods(
    last: &ServedSample,
    previous: Option<&ServedSample>,
) -> Vec<(PodKey, Option<ServedPod>)> {
    let mut pods: Vec<(PodKey, Option<ServedPod>)> = Vec::new();
    let mut earliest: BTreeMap<PodKey, (i64, i128)> = BTreeMap::new();
    for c in &last.containers {
        let key = (c.namespace.clone(), c.pod.clone());
        if pods.last().is_none_or(|(k, _)| *k != key) {
            pods.push((
                key.clone(),
                Some(ServedPod {
                    timestamp_s: 0,
                    window_ns: 0,
                    containers: Vec::new(),
                }),
            ));
        }
        let Some((_, slot)) = pods.last_mut() else {
            unreachable!("pushed above")
        };
        let rate = previous
            .and_then(|p| p.container(&c.namespace, &c.pod, &c.container))
            .filter(|p| p.start_ns == c.start_ns)
            .and_then(|p| expected_rate(&p.point, &c.point));
        match (slot.as_mut(), rate) {
            (Some(pod), Some(rate)) => {
                pod.containers
                    .push((c.container.clone(), rate.cpu_nanocores, rate.memory_bytes));
                // The pod takes the time and window of its container with the earliest sample.
                let sample_ms = c.point.timestamp_ms;
                let entry = earliest.entry(key).or_insert((sample_ms, rate.window_ns));
                if sample_ms < entry.0 {
                    *entry = (sample_ms, rate.window_ns);
                }
            }
            _ => *slot = None,
        }
    }
    for (key, pod) in &mut pods {
        if let (Some(pod), Some((ms, window))) = (pod.as_mut(), earliest.get(key)) {
            pod.timestamp_s = ms.div_euclid(1000);
            pod.window_ns = *window;
            pod.containers.sort();
        }
    }
    pods
}

fn compare_pod(
    key: &PodKey,
    expected: Option<&ServedPod>,
    served: Option<&ServedPod>,
) -> Result<(), String> {
    match (expected, served) {
        (Some(e), Some(s)) if e == s => Ok(()),
        (e, s) => Err(format!("{key:?}: served {s:?}, expected {e:?}")),
    }
}

// === Tests ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_node_and_running_pod_is_served_with_exactly_the_usage_the_kubelets_reported() {
    let env = Env::start("exact", 11, &[]).await;
    env.wait_all_listed().await;
    let all = env.node_names();
    assert_eq!(all.len() as u64, NODES);
    env.wait_exact(&all).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_kubelet_is_scraped_over_a_single_reused_connection() {
    let env = Env::start("reuse", 12, &[]).await;
    // Six bodies per node: at least five scrape periods after the first.
    let names = env.node_names();
    loop {
        let behind: Vec<_> = names
            .iter()
            .filter(|n| env.fleet.counts(n).map_or(0, |c| c.bodies) < 6)
            .collect();
        if behind.is_empty() {
            break;
        }
        env.check_deadline(|| format!("six scrapes of {behind:?}"));
        tokio::time::sleep(POLL).await;
    }
    for name in &names {
        let counts = env.fleet.counts(name).expect("node exists");
        assert_eq!(
            counts.connections, 1,
            "{name} accepted {} connections over {} requests",
            counts.connections, counts.requests
        );
    }
    assert_eq!(env.fleet.total_counts().connections, NODES);
    // Still serving everything on those connections.
    env.wait_all_listed().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_container_never_shows_a_negative_or_huge_rate_and_returns_exact() {
    let env = Env::start("restart", 13, &[]).await;
    let node = env.node_names()[3].clone();
    env.wait_exact(std::slice::from_ref(&node)).await;

    let (namespace, pod, containers) = env.fleet.pods_on(&node)[1].clone();
    let container = containers[0].clone();
    let key = (namespace.clone(), pod.clone());
    let start_before = env
        .fleet
        .served(&node)
        .and_then(|h| {
            h.last
                .container(&namespace, &pod, &container)
                .map(|c| c.start_ns)
        })
        .expect("the container was served");
    let bodies_at_restart = env.fleet.counts(&node).expect("node").bodies;
    env.fleet
        .restart_container(&namespace, &pod, &container)
        .expect("restart");

    // Until the pod is back with exact values and at least four bodies went out after the restart,
    // every served value of the pod and of its node stays sane.
    let mut observations = 0;
    let mut returned = false;
    loop {
        let read = env.consistent_read().await;
        for (name, usage) in &read.nodes {
            assert!(
                (0..SANE_NANOCORES).contains(&usage.cpu_nanocores),
                "{name} served {usage:?} after a container restart"
            );
        }
        if let Some(served) = read.pods.get(&key) {
            observations += 1;
            for (c, cpu, memory) in &served.containers {
                assert!(
                    (0..SANE_NANOCORES).contains(cpu) && *memory > 0,
                    "{key:?}/{c} served {cpu} nanocores, {memory} bytes after a restart"
                );
            }
        }
        if let Some(history) = read.stable.get(&node) {
            let restarted = history
                .last
                .container(&namespace, &pod, &container)
                .is_some_and(|c| c.start_ns != start_before);
            let expected = expected_pods(&history.last, history.previous.as_ref())
                .into_iter()
                .find(|(k, _)| *k == key)
                .and_then(|(_, e)| e);
            if restarted
                && expected.is_some()
                && compare_pod(&key, expected.as_ref(), read.pods.get(&key)).is_ok()
            {
                returned = true;
            }
        }
        let bodies = env.fleet.counts(&node).expect("node").bodies;
        if returned && bodies >= bodies_at_restart + 4 {
            break;
        }
        env.check_deadline(|| {
            format!(
                "{key:?} to return after its restart (returned: {returned}, bodies since: {})",
                bodies - bodies_at_restart
            )
        });
        tokio::time::sleep(POLL).await;
    }
    assert!(observations > 0, "the pod was never observed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_kubelet_does_not_delay_any_other_node() {
    // A request timeout longer than the whole test: the hung request stays outstanding throughout.
    let env = Env::start("hang", 14, &["--kubelet-request-timeout=60s"]).await;
    env.wait_all_listed().await;
    let names = env.node_names();
    let hung = names[5].clone();

    env.fleet
        .set_fault(&hung, Some(Fault::Hang))
        .expect("set the fault");
    let requests_at_fault = env.fleet.counts(&hung).expect("node").requests;
    // A request that arrives after the fault is set hangs.
    let bodies_while_hung = loop {
        let counts = env.fleet.counts(&hung).expect("node");
        if counts.requests > requests_at_fault {
            break counts.bodies;
        }
        env.check_deadline(|| format!("a request to the hung node {hung}"));
        tokio::time::sleep(POLL).await;
    };

    // Every other node's timestamp moves forward three times while that request hangs.
    let mut last_seen: BTreeMap<String, i64> = env
        .nodes()
        .await
        .into_iter()
        .map(|(n, s)| (n, s.timestamp_s))
        .collect();
    let mut advances: BTreeMap<String, u32> = BTreeMap::new();
    loop {
        let nodes = env.nodes().await;
        for (name, served) in &nodes {
            let previous = last_seen.entry(name.clone()).or_insert(served.timestamp_s);
            assert!(
                served.timestamp_s >= *previous,
                "{name}'s timestamp went back"
            );
            if served.timestamp_s > *previous {
                *previous = served.timestamp_s;
                *advances.entry(name.clone()).or_default() += 1;
            }
        }
        let slow: Vec<_> = names
            .iter()
            .filter(|n| **n != hung && advances.get(*n).copied().unwrap_or(0) < 3)
            .collect();
        if slow.is_empty() {
            break;
        }
        env.check_deadline(|| format!("other nodes to stay fresh; still behind: {slow:?}"));
        tokio::time::sleep(POLL).await;
    }
    let counts = env.fleet.counts(&hung).expect("node");
    assert_eq!(
        counts.bodies, bodies_while_hung,
        "the hung node answered during the observation"
    );
    // The server still shows the last body the hung node answered with.
    let last_answer = env.fleet.served(&hung).expect("served before the fault");
    let shown = env.nodes().await;
    assert_eq!(
        shown.get(&hung).map(|s| s.timestamp_s),
        Some(last_answer.last.t_ms.div_euclid(1000)),
        "the hung node shows a sample it never answered with"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_node_disappears_from_the_api_and_from_the_server_metrics() {
    let env = Env::start("remove", 15, &[]).await;
    env.wait_all_listed().await;
    let removed = env.node_names()[7].clone();
    let node_path = format!("{NODES_PATH}/{removed}");
    let series = format!("node=\"{removed}\"");
    let its_pods: Vec<PodKey> = env
        .fleet
        .cluster()
        .pods_on_node(&removed)
        .iter()
        .map(|p| (p.namespace.clone(), p.name.clone()))
        .collect();
    assert!(!its_pods.is_empty());

    // Present everywhere first, so the disappearance below is the removal's doing.
    let (status, body) = env.client.get(&node_path).await;
    assert_eq!(status, 200, "{body}");
    loop {
        let (status, metrics) = env.client.get("/metrics").await;
        assert_eq!(status, 200);
        if metrics.contains(&series) {
            break;
        }
        env.check_deadline(|| format!("a {series} series in /metrics"));
        tokio::time::sleep(POLL).await;
    }

    env.fleet.remove_node(&removed).expect("remove the node");
    loop {
        let (status, _) = env.client.get(&node_path).await;
        let (_, metrics) = env.client.get("/metrics").await;
        let pods = env.pods().await;
        let lingering_pods: Vec<_> = its_pods.iter().filter(|p| pods.contains_key(*p)).collect();
        let lingering_series: Vec<_> = metrics
            .lines()
            .filter(|l| !l.starts_with('#') && l.contains(&series))
            .collect();
        if status == 404 && lingering_series.is_empty() && lingering_pods.is_empty() {
            break;
        }
        env.check_deadline(|| {
            format!(
                "{removed} to disappear: GET {node_path} -> {status}, series \
                 {lingering_series:?}, pods {lingering_pods:?}"
            )
        });
        tokio::time::sleep(POLL).await;
    }
    // The rest of the cluster is still served.
    env.wait_all_listed().await;
    assert!(!env.nodes().await.contains_key(&removed));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_top_through_the_aggregation_proxy_lists_every_node_and_pod() {
    let Some(kubectl_binary) = find_kubectl() else {
        eprintln!("skipped: no kubectl (set KUBECTL to one)");
        return;
    };
    let env = Env::start("kubectl", 16, &[]).await;
    let kubeconfig = env.api.files().kubeconfig.clone();
    let cache = env.dir.0.join("kube-cache");
    let nodes = env.node_names();
    let pods = env.running_pods();

    kubectl_until(
        &env,
        &kubectl_binary,
        &kubeconfig,
        &cache,
        &["top", "nodes"],
        &|out| {
            let rows = rows_of(
                out,
                &["NAME", "CPU(cores)", "CPU(%)", "MEMORY(bytes)", "MEMORY(%)"],
            )?;
            every_listed(&rows, &nodes, |row| row[0].clone())?;
            for row in &rows {
                quantity(&row[1], 9)?;
                quantity(&row[3], 0)?;
                percent(&row[2])?;
                percent(&row[4])?;
            }
            Ok(())
        },
    )
    .await;

    let pod_names: Vec<PodKey> = pods.iter().cloned().collect();
    kubectl_until(
        &env,
        &kubectl_binary,
        &kubeconfig,
        &cache,
        &["top", "pods", "-A"],
        &|out| {
            let rows = rows_of(out, &["NAMESPACE", "NAME", "CPU(cores)", "MEMORY(bytes)"])?;
            every_listed(&rows, &pod_names, |row| (row[0].clone(), row[1].clone()))?;
            for row in &rows {
                quantity(&row[2], 9)?;
                quantity(&row[3], 0)?;
            }
            Ok(())
        },
    )
    .await;

    kubectl_until(
        &env,
        &kubectl_binary,
        &kubeconfig,
        &cache,
        &["get", "--raw", PODS_PATH],
        &|out| {
            let list: Value = serde_json::from_str(out).map_err(|e| format!("not JSON: {e}"))?;
            if list["kind"] != "PodMetricsList" {
                return Err(format!("kind {}", list["kind"]));
            }
            let served = parse_pod_list(&list);
            let missing: Vec<_> = pods.iter().filter(|p| !served.contains_key(*p)).collect();
            if missing.is_empty() {
                Ok(())
            } else {
                Err(format!("missing {missing:?}"))
            }
        },
    )
    .await;

    // `kubectl get` asks for a Table and prints upstream's columns, upper-cased.
    kubectl_until(
        &env,
        &kubectl_binary,
        &kubeconfig,
        &cache,
        &["get", "podmetrics", "-A"],
        &|out| {
            let rows = rows_of(out, &["NAMESPACE", "NAME", "CPU", "MEMORY", "WINDOW"])?;
            every_listed(&rows, &pod_names, |row| (row[0].clone(), row[1].clone()))?;
            for row in &rows {
                quantity(&row[2], 9)?;
                quantity(&row[3], 0)?;
                duration(&row[4])?;
            }
            Ok(())
        },
    )
    .await;

    kubectl_until(
        &env,
        &kubectl_binary,
        &kubeconfig,
        &cache,
        &["get", "nodemetrics"],
        &|out| {
            let rows = rows_of(out, &["NAME", "CPU", "MEMORY", "WINDOW"])?;
            every_listed(&rows, &nodes, |row| row[0].clone())?;
            for row in &rows {
                quantity(&row[1], 9)?;
                quantity(&row[2], 0)?;
                duration(&row[3])?;
            }
            Ok(())
        },
    )
    .await;

    let (namespace, name) = pods.iter().next().expect("a running pod").clone();
    let args = ["get", "podmetrics", "-n", &namespace, &name, "-o", "yaml"];
    kubectl_until(&env, &kubectl_binary, &kubeconfig, &cache, &args, &|out| {
        for wanted in [
            "kind: PodMetrics".to_owned(),
            "apiVersion: metrics.k8s.io/v1beta1".to_owned(),
            format!("name: {name}"),
            format!("namespace: {namespace}"),
            "containers:".to_owned(),
            "window:".to_owned(),
        ] {
            if !out.contains(&wanted) {
                return Err(format!("no {wanted:?}"));
            }
        }
        Ok(())
    })
    .await;

    // `kubectl explain` reads the metrics group's OpenAPI v3 document through the proxy.
    kubectl_until(
        &env,
        &kubectl_binary,
        &kubeconfig,
        &cache,
        &["explain", "podmetrics"],
        &|out| {
            for wanted in [
                "PodMetrics",
                "metrics.k8s.io",
                "containers",
                "window",
                "timestamp",
            ] {
                if !out.contains(wanted) {
                    return Err(format!("no {wanted:?}"));
                }
            }
            Ok(())
        },
    )
    .await;
}

/// Runs kubectl until it succeeds with output `check` accepts, or the test's deadline passes.
async fn kubectl_until(
    env: &Env,
    binary: &Path,
    kubeconfig: &Path,
    cache: &Path,
    args: &[&str],
    check: &dyn Fn(&str) -> Result<(), String>,
) {
    loop {
        let output = kubectl(binary, kubeconfig, cache, args).await;
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        let last = if output.status.success() {
            match check(&stdout) {
                Ok(()) => return,
                Err(why) => format!("{why} in\n{stdout}"),
            }
        } else {
            String::from_utf8_lossy(&output.stderr).into_owned()
        };
        env.check_deadline(|| format!("kubectl {args:?}: {last}"));
        tokio::time::sleep(POLL).await;
    }
}

/// The rows of kubectl's table output, after checking its header is exactly `header`.
fn rows_of(out: &str, header: &[&str]) -> Result<Vec<Vec<String>>, String> {
    let mut lines = out.lines().filter(|l| !l.trim().is_empty());
    let first: Vec<&str> = lines
        .next()
        .ok_or("no output")?
        .split_whitespace()
        .collect();
    if first != header {
        return Err(format!("header {first:?}, expected {header:?}"));
    }
    let rows: Vec<Vec<String>> = lines
        .map(|l| l.split_whitespace().map(str::to_owned).collect())
        .collect();
    match rows.iter().find(|row| row.len() != header.len()) {
        Some(row) => Err(format!("row {row:?} does not have {} cells", header.len())),
        None => Ok(rows),
    }
}

/// Every wanted key appears in some row, and no row is listed twice.
fn every_listed<K: Ord + std::fmt::Debug + Clone>(
    rows: &[Vec<String>],
    wanted: &[K],
    key: impl Fn(&Vec<String>) -> K,
) -> Result<(), String> {
    let listed: BTreeSet<K> = rows.iter().map(&key).collect();
    if listed.len() != rows.len() {
        return Err("a row is listed twice".to_owned());
    }
    let missing: Vec<&K> = wanted.iter().filter(|k| !listed.contains(*k)).collect();
    if missing.is_empty() {
        Ok(())
    } else {
        Err(format!("missing {missing:?}"))
    }
}

/// A non-negative Kubernetes quantity, as the test's own parser reads it.
fn quantity(cell: &str, scale: i32) -> Result<i128, String> {
    let valid = !cell.is_empty()
        && cell.starts_with(|c: char| c.is_ascii_digit())
        && cell
            .trim_end_matches(|c: char| c.is_ascii_alphabetic())
            .parse::<f64>()
            .is_ok();
    if !valid {
        return Err(format!("{cell:?} is not a quantity"));
    }
    Ok(parse_quantity(cell, scale))
}

fn percent(cell: &str) -> Result<u64, String> {
    cell.strip_suffix('%')
        .and_then(|n| n.parse().ok())
        .ok_or_else(|| format!("{cell:?} is not a percentage"))
}

/// A positive Go duration, such as `1.001s`.
fn duration(cell: &str) -> Result<i128, String> {
    let valid = cell.starts_with(|c: char| c.is_ascii_digit())
        && cell.ends_with('s')
        && cell
            .chars()
            .all(|c| c.is_ascii_digit() || ".hmsuµn".contains(c));
    match valid.then(|| parse_go_duration(cell)) {
        Some(nanos) if nanos > 0 => Ok(nanos),
        _ => Err(format!("{cell:?} is not a positive duration")),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_top_is_refused_for_a_user_the_cluster_does_not_allow_to_read_metrics() {
    let Some(kubectl_binary) = find_kubectl() else {
        eprintln!("skipped: no kubectl (set KUBECTL to one)");
        return;
    };
    let env = Env::start("kubectl-denied", 18, &[]).await;
    let allowed = env.api.files().kubeconfig.clone();
    let denied = env.api.files().denied_kubeconfig.clone();
    let cache = env.dir.0.join("kube-cache");
    let names = env.node_names();

    // The allowed user gets every node once the first scrapes are in.
    loop {
        let output = kubectl(&kubectl_binary, &allowed, &cache, &["top", "nodes"]).await;
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        if output.status.success() && names.iter().all(|n| stdout.contains(n)) {
            break;
        }
        let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
        env.check_deadline(|| format!("kubectl top nodes as the reader: {stdout}{stderr}"));
        tokio::time::sleep(POLL).await;
    }

    // The stand-in forwards metrics requests of any authenticated user; the refusal is the
    // server's own, after its SubjectAccessReview.
    let output = kubectl(&kubectl_binary, &denied, &cache, &["top", "nodes"]).await;
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(!output.status.success(), "denied user was served: {stdout}");
    assert!(
        stderr.contains("Forbidden") && stderr.contains(apiserver::DENIED_USER),
        "expected a Forbidden naming {}: {stderr}",
        apiserver::DENIED_USER
    );
    for name in &names {
        assert!(!stdout.contains(name), "denied user saw node {name}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_identity_headers_without_a_front_proxy_certificate_are_not_trusted() {
    let mut env = Env::start("forged-headers", 19, &[]).await;
    // Wait until the server serves metrics to the admin, so a refusal below is not a startup race.
    env.wait_all_listed().await;

    // A second connection, straight to the server and without a client certificate.
    let direct = connect(&mut env.server, &env.dir.0, env.port, env.deadline, None).await;
    let forged = [
        ("X-Remote-User", "system:admin"),
        ("X-Remote-Group", "system:masters"),
    ];
    let (status, body) = direct.get_with(NODES_PATH, &forged).await;
    assert_eq!(status, 403, "forged headers were trusted: {body}");
    assert!(
        body.contains("system:anonymous") && !body.contains("system:admin"),
        "expected the refusal to name the anonymous user: {body}"
    );
    let (status, body) = direct.get_with("/livez", &forged).await;
    assert_eq!(status, 200, "/livez: {body}");
}

/// `KUBECTL`, else [`DEFAULT_KUBECTL`], else `kubectl` on `PATH`, whichever exists first.
fn find_kubectl() -> Option<PathBuf> {
    if let Some(named) = std::env::var_os("KUBECTL") {
        return Some(PathBuf::from(named)).filter(|p| p.is_file());
    }
    if Path::new(DEFAULT_KUBECTL).is_file() {
        return Some(PathBuf::from(DEFAULT_KUBECTL));
    }
    std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .map(|dir| dir.join("kubectl"))
            .find(|p| p.is_file())
    })
}

/// Runs kubectl with a bounded request time; its own discovery cache stays in the test directory.
async fn kubectl(
    binary: &Path,
    kubeconfig: &Path,
    cache: &Path,
    args: &[&str],
) -> std::process::Output {
    let mut command = Command::new(binary);
    command
        .arg(format!("--kubeconfig={}", kubeconfig.display()))
        .arg(format!("--cache-dir={}", cache.display()))
        .arg("--request-timeout=10s")
        .args(args)
        .stdin(Stdio::null());
    let run = tokio::task::spawn_blocking(move || command.output());
    tokio::time::timeout(REQUEST_TIMEOUT * 2, run)
        .await
        .expect("kubectl finished in time")
        .expect("kubectl task")
        .expect("kubectl runs")
}

// === The test's own parsers ===

#[test]
fn quantities_parse_to_exact_values() {
    assert_eq!(parse_quantity("123n", 9), 123);
    assert_eq!(parse_quantity("5m", 9), 5_000_000);
    assert_eq!(parse_quantity("1500u", 9), 1_500_000);
    assert_eq!(parse_quantity("2", 9), 2_000_000_000);
    assert_eq!(parse_quantity("1536", 0), 1536);
    assert_eq!(parse_quantity("1k", 0), 1000);
    assert_eq!(parse_quantity("1024Ki", 0), 1 << 20);
    assert_eq!(parse_quantity("2Mi", 0), 2 << 20);
    assert_eq!(parse_quantity("1.5Gi", 0), 3 << 29);
    assert_eq!(parse_quantity("1e3", 0), 1000);
    assert_eq!(parse_quantity("-7m", 9), -7_000_000);
    assert_eq!(parse_quantity("0", 9), 0);
}

#[test]
fn go_durations_and_times_parse() {
    assert_eq!(parse_go_duration("1.001s"), 1_001_000_000);
    assert_eq!(parse_go_duration("999.5ms"), 999_500_000);
    assert_eq!(parse_go_duration("1m0.5s"), 60_500_000_000);
    assert_eq!(parse_go_duration("2h3m4s"), 7_384_000_000_000);
    assert_eq!(parse_go_duration("1.5µs"), 1_500);
    assert_eq!(parse_go_duration("0s"), 0);
    assert_eq!(parse_rfc3339("1970-01-01T00:00:00Z"), 0);
    assert_eq!(parse_rfc3339("2026-01-27T18:48:20Z"), 1_769_539_700);
    assert_eq!(parse_rfc3339("2000-03-01T00:00:01Z"), 951_868_801);
}

#[test]
fn wire_counter_differs_from_the_counter_by_at_most_a_nanosecond() {
    for cpu_ns in [1u64, 20_000_000, 123_456_789_012_345, 999_999_999_999_999] {
        let wire = wire_counter(cpu_ns);
        assert!((i128::from(cpu_ns) - wire).abs() <= 1, "{cpu_ns} -> {wire}");
    }
}
