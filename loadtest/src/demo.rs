//! The embedded default: a simulated cluster with the metrics server running on it, and a live
//! `kubectl top`-like view of what the server serves through the API stand-in's aggregation.
//!
//! Owns nothing the other parts rely on: it starts the fleet, the stand-in and the server exactly as
//! an admin would (the server gets the same flags it would get on the command line) and reads the
//! API as a client. It runs until SIGINT or SIGTERM.

use std::io::{IsTerminal as _, Write as _};
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use http_body_util::{BodyExt as _, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use crate::apiserver::{self, ApiServerConfig};
use crate::fleet::Fleet;

/// What the demo runs.
#[derive(Clone, Debug)]
pub struct DemoConfig {
    pub nodes: u64,
    pub pods_per_node: u64,
    /// Where certificates and kubeconfigs go.
    pub state_dir: PathBuf,
    /// The metrics server's `--metric-resolution`.
    pub resolution: Duration,
    /// The metrics server's `--secure-port` (0: any free port).
    pub server_port: u16,
    /// How many nodes the live view lists.
    pub top: usize,
}

/// Runs the demo until SIGINT or SIGTERM.
pub async fn run(config: DemoConfig) -> anyhow::Result<()> {
    std::fs::create_dir_all(&config.state_dir)
        .with_context(|| format!("creating {}", config.state_dir.display()))?;
    let fleet = Fleet::builder()
        .nodes(config.nodes)
        .pods_per_node(config.pods_per_node)
        .port(0)
        .start(&config.state_dir)
        .await
        .context("starting the kubelet fleet")?;

    let server_port = match config.server_port {
        0 => free_port().context("finding a free port for the metrics server")?,
        port => port,
    };
    let server_url = format!("https://127.0.0.1:{server_port}");
    let mut api_config = ApiServerConfig::new(&config.state_dir);
    api_config.aggregate_to = Some(server_url.clone());
    let api = apiserver::start(api_config, fleet.cluster())
        .await
        .context("starting the API stand-in")?;

    let server_args = server_args(&config.state_dir, server_port, config.resolution);
    let server_config = metrics_server::config::Config::try_parse_args(&server_args)
        .map_err(|e| anyhow::anyhow!("metrics-server flags: {e}"))?;
    // The server runs its own actix System on its own threads, as it does in its own binary.
    let server = std::thread::Builder::new()
        .name("metrics-server".to_owned())
        .spawn(move || metrics_server::app::run(server_config))
        .context("starting the metrics server")?;

    let dir = config.state_dir.display();
    println!(
        "ready: {} simulated nodes x {} pods, API stand-in at {}, metrics server at {}",
        fleet.node_count(),
        config.pods_per_node,
        api.url(),
        server_url
    );
    println!(
        "The metrics server runs as:\n  metrics-server {}",
        server_args[1..].join(" ")
    );
    println!("Query it as a cluster user would (through the stand-in's aggregation):");
    println!("  kubectl --kubeconfig {dir}/kubeconfig top nodes");
    println!("  kubectl --kubeconfig {dir}/kubeconfig top pods -A");
    println!(
        "  kubectl --kubeconfig {dir}/kubeconfig get --raw /apis/metrics.k8s.io/v1beta1/nodes"
    );
    println!("Press Ctrl-C to stop.\n");

    let token = api
        .token(apiserver::auth::METRICS_READER)
        .context("the stand-in has no metrics reader")?
        .to_owned();
    let view = LiveView::new(api.url(), api.ca_pem(), token)?;
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("installing the SIGTERM handler")?;
    let mut tick = tokio::time::interval(config.resolution.max(Duration::from_secs(1)));
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => break,
            _ = term.recv() => break,
            _ = tick.tick() => {
                if server.is_finished() {
                    break;
                }
                view.refresh(config.top).await;
            }
        }
    }
    // The server stops on the same signal; its thread ends once it has drained, and only then do
    // the stand-in and the kubelets go, so it does not log their disappearance as failures.
    let joined = tokio::task::spawn_blocking(move || server.join()).await;
    api.shutdown().await;
    fleet.shutdown().await;
    match joined {
        Ok(Ok(Ok(()))) => Ok(()),
        Ok(Ok(Err(error))) => Err(anyhow::Error::new(error).context("metrics server")),
        Ok(Err(_)) | Err(_) => Err(anyhow::anyhow!("the metrics server thread panicked")),
    }
}

/// The flags an admin would give the server for this simulated cluster.
fn server_args(state_dir: &Path, port: u16, resolution: Duration) -> Vec<String> {
    let file = |name: &str| state_dir.join(name).display().to_string();
    vec![
        "metrics-server".to_owned(),
        format!("--kubeconfig={}", file("server.kubeconfig")),
        format!("--kubelet-certificate-authority={}", file("kubelet-ca.crt")),
        format!(
            "--kubelet-client-certificate={}",
            file("kubelet-client.crt")
        ),
        format!("--kubelet-client-key={}", file("kubelet-client.key")),
        "--kubelet-use-node-status-port".to_owned(),
        "--bind-address=127.0.0.1".to_owned(),
        format!("--secure-port={port}"),
        format!("--cert-dir={}", file("serving-certs")),
        format!("--metric-resolution={}ms", resolution.as_millis()),
    ]
}

fn free_port() -> std::io::Result<u16> {
    let listener = TcpListener::bind(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))?;
    Ok(listener.local_addr()?.port())
}

type HttpsClient = Client<
    hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>,
    Empty<bytes::Bytes>,
>;

/// Reads `NodeMetricsList` through the stand-in and prints the busiest nodes.
struct LiveView {
    client: HttpsClient,
    url: String,
    authorization: String,
    clear_screen: bool,
}

impl LiveView {
    fn new(api_url: &str, ca_pem: &str, token: String) -> anyhow::Result<Self> {
        let mut roots = rustls::RootCertStore::empty();
        for cert in rustls_pki_types::pem::PemObject::pem_slice_iter(ca_pem.as_bytes()) {
            roots
                .add(cert.context("parsing the stand-in CA")?)
                .context("trusting the stand-in CA")?;
        }
        let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .context("TLS versions")?
        .with_root_certificates(roots)
        .with_no_client_auth();
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_only()
            .enable_http1()
            .enable_http2()
            .build();
        Ok(LiveView {
            client: Client::builder(TokioExecutor::new()).build(connector),
            url: format!("{api_url}/apis/metrics.k8s.io/v1beta1/nodes"),
            authorization: format!("Bearer {token}"),
            clear_screen: std::io::stdout().is_terminal(),
        })
    }

    async fn fetch(&self) -> anyhow::Result<Vec<NodeRow>> {
        let request = http::Request::get(&self.url)
            .header(http::header::AUTHORIZATION, &self.authorization)
            .body(Empty::new())
            .context("building the request")?;
        let response = self.client.request(request).await.context("requesting")?;
        let status = response.status();
        let body = response
            .into_body()
            .collect()
            .await
            .context("reading")?
            .to_bytes();
        if !status.is_success() {
            let text = String::from_utf8_lossy(&body);
            anyhow::bail!("{status}: {}", text.trim());
        }
        let list: serde_json::Value = serde_json::from_slice(&body).context("decoding")?;
        let items = list["items"].as_array().cloned().unwrap_or_default();
        Ok(items.iter().filter_map(NodeRow::from_item).collect())
    }

    async fn refresh(&self, top: usize) {
        let mut out = String::new();
        if self.clear_screen {
            out.push_str("\x1b[2J\x1b[H");
        }
        match self.fetch().await {
            Ok(mut rows) => {
                let total_cpu: f64 = rows.iter().map(|r| r.cpu_cores).sum();
                rows.sort_by(|a, b| b.cpu_cores.total_cmp(&a.cpu_cores));
                out.push_str(&format!(
                    "{} nodes served, {:.2} cores in use; busiest {}:\n",
                    rows.len(),
                    total_cpu,
                    top.min(rows.len())
                ));
                out.push_str(&format!(
                    "{:<14} {:>12} {:>14} {:>10}  {}\n",
                    "NAME", "CPU(cores)", "MEMORY(bytes)", "WINDOW", "TIMESTAMP"
                ));
                for row in rows.iter().take(top) {
                    out.push_str(&format!(
                        "{:<14} {:>11.0}m {:>12.0}Mi {:>10}  {}\n",
                        row.name,
                        row.cpu_cores * 1000.0,
                        row.memory_bytes / (1024.0 * 1024.0),
                        row.window,
                        row.timestamp
                    ));
                }
            }
            // Expected for the first two scrapes: a rate needs two points.
            Err(error) => out.push_str(&format!("waiting for metrics: {error:#}\n")),
        }
        let mut stdout = std::io::stdout().lock();
        let _ = stdout.write_all(out.as_bytes());
        let _ = stdout.flush();
    }
}

struct NodeRow {
    name: String,
    cpu_cores: f64,
    memory_bytes: f64,
    window: String,
    timestamp: String,
}

impl NodeRow {
    fn from_item(item: &serde_json::Value) -> Option<Self> {
        Some(NodeRow {
            name: item["metadata"]["name"].as_str()?.to_owned(),
            cpu_cores: quantity(item["usage"]["cpu"].as_str()?)?,
            memory_bytes: quantity(item["usage"]["memory"].as_str()?)?,
            window: item["window"].as_str().unwrap_or("").to_owned(),
            timestamp: item["timestamp"].as_str().unwrap_or("").to_owned(),
        })
    }
}

/// A Kubernetes quantity as a float, for display only.
fn quantity(text: &str) -> Option<f64> {
    let split = text
        .find(|c: char| c.is_ascii_alphabetic())
        .unwrap_or(text.len());
    let (number, suffix) = text.split_at(split);
    let scale = match suffix {
        "" => 1.0,
        "n" => 1e-9,
        "u" => 1e-6,
        "m" => 1e-3,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "Ki" => 1024.0,
        "Mi" => 1024.0 * 1024.0,
        "Gi" => 1024.0 * 1024.0 * 1024.0,
        "Ti" => 1024.0f64.powi(4),
        _ => return None,
    };
    number.parse::<f64>().ok().map(|n| n * scale)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantities_read_as_served() {
        assert_eq!(quantity("1500m"), Some(1.5));
        assert_eq!(quantity("2Mi"), Some(2.0 * 1024.0 * 1024.0));
        assert_eq!(quantity("250000000n"), Some(0.25));
        assert_eq!(quantity("12"), Some(12.0));
        assert_eq!(quantity("1Zi"), None);
    }

    #[test]
    fn server_gets_the_flags_an_admin_would_give() {
        let args = server_args(Path::new("/state"), 8443, Duration::from_secs(2));
        let config = metrics_server::config::Config::try_parse_args(&args);
        assert!(config.is_ok(), "{args:?}");
        assert!(args.contains(&"--kubeconfig=/state/server.kubeconfig".to_owned()));
        assert!(args.contains(&"--secure-port=8443".to_owned()));
    }
}
