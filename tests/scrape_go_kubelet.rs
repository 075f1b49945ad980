//! The kubelet HTTP/2 client against Go's own HTTP/2 server, the one real kubelets run
//! (`tests/go_kubelet`): bodies of many DATA frames arrive intact, with and without a declared
//! length; one connection serves every scrape; and a kubelet that closes idle connections (GOAWAY
//! after its idle timeout) costs a reconnect, never a failed scrape.
//!
//! Needs a Go toolchain (`go` on PATH, or `GO`); without one the test says so and passes, as the
//! kubectl tests do without kubectl. Everything listens on 127.0.0.1 and stops with the test.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair, KeyUsagePurpose};
use tokio::sync::watch;

use metrics_server::discovery::Targets;
use metrics_server::model::{Name, ScrapeTarget, UnixNanos};
use metrics_server::scrape::{
    self, EngineOptions, KubeletTlsConfig, Protocol, ScrapeConfig, ScrapeFailure, ScrapeSink,
};
use metrics_server::telemetry::Telemetry;

/// The stand-in's n-th answer, as `tests/go_kubelet/main.go` writes it.
fn expected_body(n: usize) -> String {
    let mut body = format!("# answer {n}\n");
    let mut i = 0;
    while body.len() < 60_000 {
        body.push_str(&format!(
            "container_cpu_usage_seconds_total{{container=\"c{i}\",namespace=\"ns\",pod=\"p{n}\"}} {i}.5 1633253812125\n"
        ));
        i += 1;
    }
    body
}

/// Checks every body against what the stand-in sent for its number.
#[derive(Default)]
struct CheckingSink {
    /// Per node: bodies that matched, and the first mismatch seen.
    seen: Mutex<BTreeMap<String, (usize, Option<String>)>>,
}

impl ScrapeSink for CheckingSink {
    fn accept(
        &self,
        node: &Name,
        body: &[u8],
        _: UnixNanos,
        _: UnixNanos,
    ) -> Result<(), ScrapeFailure> {
        let text = String::from_utf8_lossy(body);
        let number = text
            .strip_prefix("# answer ")
            .and_then(|rest| rest.split('\n').next())
            .and_then(|n| n.parse::<usize>().ok());
        let mut seen = self.seen.lock().expect("sink lock");
        let entry = seen.entry(node.to_string()).or_default();
        match number {
            Some(n) if text == expected_body(n) => entry.0 += 1,
            _ => {
                entry.1.get_or_insert_with(|| {
                    format!(
                        "{} bytes starting {:?}",
                        body.len(),
                        &text[..text.len().min(40)]
                    )
                });
            }
        }
        Ok(())
    }

    fn remove(&self, _: &str) {}
}

/// The built stand-in, running; killed when dropped.
struct GoKubelet {
    child: Child,
    steady: String,
    idle: String,
}

impl Drop for GoKubelet {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn scratch_dir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("go-kubelet-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("scratch dir");
    dir
}

/// Builds and starts the stand-in with a serving certificate for 127.0.0.1 from a new CA; returns
/// it and the CA (PEM). `None` when there is no Go toolchain.
fn start_go_kubelet(idle_timeout: Duration) -> Option<(GoKubelet, Vec<u8>)> {
    let go = std::env::var("GO").unwrap_or_else(|_| "go".to_string());
    if Command::new(&go).arg("version").output().is_err() {
        eprintln!("no Go toolchain ({go}); the Go kubelet compatibility check is skipped");
        return None;
    }
    let dir = scratch_dir();
    let source = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/go_kubelet/main.go");
    let binary = dir.join("go_kubelet");
    let built = Command::new(&go)
        .args(["build", "-o"])
        .arg(&binary)
        .arg(&source)
        .env("GO111MODULE", "off")
        .env("GOCACHE", dir.join("cache"))
        .env("GOPATH", dir.join("gopath"))
        .status()
        .expect("go build runs");
    assert!(built.success(), "go build of the kubelet stand-in failed");

    let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca = CertifiedIssuer::self_signed(params, KeyPair::generate().expect("CA key"))
        .expect("CA certificate");
    let key = KeyPair::generate().expect("serving key");
    let cert = CertificateParams::new(vec!["127.0.0.1".to_string()])
        .expect("serving params")
        .signed_by(&key, &ca)
        .expect("serving certificate");
    std::fs::write(dir.join("cert.pem"), cert.pem()).expect("write cert");
    std::fs::write(dir.join("key.pem"), key.serialize_pem()).expect("write key");

    let mut child = Command::new(&binary)
        .arg(dir.join("cert.pem"))
        .arg(dir.join("key.pem"))
        .arg(idle_timeout.as_millis().to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("stand-in starts");
    let stdout = child.stdout.take().expect("stdout");
    let mut line = String::new();
    BufReader::new(stdout)
        .read_line(&mut line)
        .expect("stand-in prints its addresses");
    let address = |key: &str| {
        line.split_whitespace()
            .find_map(|field| field.strip_prefix(key))
            .map(str::to_string)
            .unwrap_or_else(|| panic!("no {key} in {line:?}"))
    };
    let kubelet = GoKubelet {
        steady: address("steady="),
        idle: address("idle="),
        child,
    };
    Some((kubelet, ca.pem().into_bytes()))
}

fn target(node: &str, address: &str) -> ScrapeTarget {
    let (host, port) = address.rsplit_once(':').expect("host:port");
    ScrapeTarget {
        node: Name::from(node),
        host: host.to_string(),
        port: port.parse().expect("port"),
        path: "/metrics/resource".into(),
    }
}

#[actix_rt::test]
async fn go_kubelet_bodies_arrive_intact_and_idle_closes_cost_no_scrape() {
    let idle_timeout = Duration::from_millis(100);
    let Some((kubelet, ca_pem)) = start_go_kubelet(idle_timeout) else {
        return;
    };
    let targets = [
        target("node-steady", &kubelet.steady),
        target("node-idle", &kubelet.idle),
    ];
    let sink = Arc::new(CheckingSink::default());
    let (_targets_tx, targets_rx) = watch::channel::<Targets>(Arc::new(
        targets
            .iter()
            .map(|t| (t.node.clone(), t.clone()))
            .collect::<BTreeMap<_, _>>(),
    ));
    let config = ScrapeConfig {
        // Longer than the idle kubelet's timeout: it closes every connection between scrapes.
        resolution: idle_timeout * 3,
        request_timeout: Duration::from_secs(5),
        max_body_bytes: 1 << 20,
        tls: KubeletTlsConfig {
            cluster_ca_pem: Some(ca_pem),
            bearer_token: Some("sa-token".into()),
            ..Default::default()
        },
    };
    let handle = scrape::start_with(
        sink.clone(),
        targets_rx,
        config,
        Arc::new(Telemetry::new()),
        EngineOptions {
            arbiters: 1,
            ..Default::default()
        },
    )
    .expect("scraping starts");

    let wanted = 6;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let done = {
            let seen = sink.seen.lock().expect("sink lock");
            ["node-steady", "node-idle"]
                .iter()
                .all(|node| seen.get(*node).is_some_and(|(ok, _)| *ok >= wanted))
        };
        let failed = ["node-steady", "node-idle"].iter().any(|node| {
            handle
                .node_stats(node)
                .is_some_and(|s| s.scrapes_failed > 0)
        });
        if done || failed || Instant::now() > deadline {
            break;
        }
        actix_rt::time::sleep(Duration::from_millis(20)).await;
    }

    let seen = sink.seen.lock().expect("sink lock").clone();
    for node in ["node-steady", "node-idle"] {
        let stats = handle.node_stats(node).unwrap_or_default();
        let (ok, mismatch) = seen.get(node).cloned().unwrap_or_default();
        assert_eq!(mismatch, None, "{node}: a body differs from what was sent");
        assert!(ok >= wanted, "{node}: {ok} intact bodies, stats {stats:?}");
        assert_eq!(stats.scrapes_failed, 0, "{node}: {stats:?}");
        assert_eq!(stats.protocol, Some(Protocol::Http2), "{node}");
    }
    let steady = handle.node_stats("node-steady").unwrap_or_default();
    assert_eq!(
        steady.connections_opened, 1,
        "one connection serves every scrape"
    );
    let idle = handle.node_stats("node-idle").unwrap_or_default();
    assert!(
        idle.connections_opened >= 3,
        "the idle kubelet's closes were reconnected: {idle:?}"
    );
    handle.stop();
    drop(kubelet);
    let _ = std::fs::remove_dir_all(scratch_dir());
}
