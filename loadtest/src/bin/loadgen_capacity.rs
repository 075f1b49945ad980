//! What the API load generator can send, and what sending costs it: one HPA-shaped stream (HTTP/2
//! over TLS, open loop at a fixed rate, many requests in flight over a few connections) against
//! nginx serving a fixed body per path, then `h2load` against the same paths at the same rate
//! when it is installed. For each client it prints the rate reached, latency, and its own CPU
//! per 1,000 requests, so the generator can be checked not to be what limits a run.
//!
//! ```sh
//! cargo build --release --workspace
//! target/release/loadgen-capacity [RATE] [SECONDS] [BODY_BYTES]
//! ```
//!
//! Defaults: 20,000 req/s for 10 s, 10,000-byte bodies (about an HPA answer of 30 pods), 256 in
//! flight over 8 connections, 64 distinct paths. Everything runs on loopback.

use std::io::Write as _;
use std::path::Path;
use std::time::{Duration, Instant};

use bytes::Bytes;
use kubelet_fleet::harness::apiload::{run_stream, Stream, Target};
use kubelet_fleet::harness::case::ShapeSpec;
use kubelet_fleet::harness::peers::{find_binary, nginx_target, tree_reading, Nginx};
use kubelet_fleet::harness::procstat;
use tokio_util::sync::CancellationToken;

const CONCURRENCY: u32 = 256;
const CONNECTIONS: u32 = 8;
const PATHS: usize = 64;

fn arg<T: std::str::FromStr>(n: usize, default: T) -> T {
    std::env::args()
        .nth(n)
        .and_then(|a| a.parse().ok())
        .unwrap_or(default)
}

/// CPU seconds of every child this process has waited for (`RUSAGE_CHILDREN`).
fn children_cpu_seconds() -> f64 {
    // SAFETY: an all-zero rusage is a valid value; getrusage only writes into it.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `usage` is a valid, exclusively borrowed rusage for the duration of the call.
    if unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut usage) } != 0 {
        return 0.0;
    }
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    secs(usage.ru_utime) + secs(usage.ru_stime)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let rate: f64 = arg(1, 20_000.0);
    let seconds: u64 = arg(2, 10);
    let body_bytes: usize = arg(3, 10_000);
    let Some(nginx_bin) = find_binary("nginx") else {
        anyhow::bail!("nginx is not installed: nothing to aim at");
    };
    // nginx's files (bodies, certificate, configuration), removed at the end.
    let dir = std::env::temp_dir().join(format!("loadgen-capacity-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let pattern = b"{\"metadata\":{\"name\":\"payments-api-6f895b7f8f-px6zk\"}},";
    let body = Bytes::from(
        pattern
            .iter()
            .cycle()
            .take(body_bytes)
            .copied()
            .collect::<Vec<u8>>(),
    );
    let paths: Vec<String> = (0..PATHS)
        .map(|i| {
            format!(
                "/apis/metrics.k8s.io/v1beta1/namespaces/team-{i:03}/pods?labelSelector=app.kubernetes.io%2Fname%3Dpayments-api"
            )
        })
        .collect();
    let bodies: Vec<(String, Bytes)> = paths.iter().map(|p| (p.clone(), body.clone())).collect();
    let nginx = Nginx::start(&nginx_bin, &dir.join("nginx"), 1, &bodies).await?;
    println!(
        "target: {} (1 worker) at {}, {} paths, {} bytes each",
        nginx.version, nginx.addr, PATHS, body_bytes
    );

    // Ours.
    let spec: ShapeSpec = toml::from_str(&format!(
        "kind = \"path\"\npath = \"/\"\nprotocol = \"h2\"\nconcurrency = {CONCURRENCY}\nconnections = {CONNECTIONS}\nrate = {rate:.1}\n"
    ))?;
    let stream = Stream {
        label: "hpa-like".to_owned(),
        spec,
        paths: paths.clone(),
        schedule_restart: None,
    };
    let target: Target = nginx_target(nginx.addr, None);
    let began = Instant::now();
    let stop = CancellationToken::new();
    let task = tokio::spawn(run_stream(
        target,
        stream,
        Duration::from_secs(10),
        began,
        stop.clone(),
    ));
    // One second to open the connections and settle, then the measured seconds.
    tokio::time::sleep_until((began + Duration::from_secs(1)).into()).await;
    let self0 = procstat::read(std::process::id())?;
    let nginx0 = tree_reading(nginx.pid);
    tokio::time::sleep_until((began + Duration::from_secs(1 + seconds)).into()).await;
    let self1 = procstat::read(std::process::id())?;
    let nginx1 = tree_reading(nginx.pid);
    stop.cancel();
    let result = task.await??;
    let w = result.window(1, 1 + seconds as usize);
    let ours_cpu = self1.cpu_seconds - self0.cpu_seconds;
    let nginx_cpu = match (nginx0, nginx1) {
        (Some(a), Some(b)) => format!(
            "{:.2} cores",
            (b.cpu_seconds - a.cpu_seconds) / seconds as f64
        ),
        _ => "n/a".to_owned(),
    };
    println!(
        "ours:   asked {rate:.0} req/s; got {:.0} req/s, {} errors, p50 {:.2} ms, p99 {:.2} ms, max {:.1} ms; \
         generator CPU {:.2} cores = {:.1} ms per 1,000 requests; nginx {nginx_cpu}",
        w.rps,
        w.errors,
        w.p50_ms,
        w.p99_ms,
        w.max_ms,
        ours_cpu / seconds as f64,
        ours_cpu * 1e6 / w.ok.max(1) as f64,
    );
    if !result.sample_errors.is_empty() {
        println!("        errors seen: {:?}", result.sample_errors);
    }

    // h2load on the same paths, at the same rate per connection.
    match find_binary("h2load") {
        Some(h2load) => run_h2load(&h2load, &dir, &nginx, &paths, rate, seconds).await?,
        None => println!("h2load: not installed, skipped"),
    }
    nginx.stop(Duration::from_secs(5)).await;
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}

async fn run_h2load(
    h2load: &Path,
    dir: &Path,
    nginx: &Nginx,
    paths: &[String],
    rate: f64,
    seconds: u64,
) -> anyhow::Result<()> {
    let uris = dir.join("uris.txt");
    let mut file = std::fs::File::create(&uris)?;
    for p in paths {
        writeln!(file, "https://{}{p}", nginx.addr)?;
    }
    drop(file);
    let per_client = (rate / f64::from(CONNECTIONS)).round().max(1.0) as u64;
    let args = [
        "-c".to_owned(),
        CONNECTIONS.to_string(),
        "-m".to_owned(),
        (CONCURRENCY / CONNECTIONS).to_string(),
        "--rps".to_owned(),
        per_client.to_string(),
        "--warm-up-time=1".to_owned(),
        "-D".to_owned(),
        seconds.to_string(),
        "-H".to_owned(),
        "accept: application/json".to_owned(),
        "-i".to_owned(),
        uris.display().to_string(),
    ];
    println!("h2load {}", args.join(" "));
    let cpu0 = children_cpu_seconds();
    let out = tokio::process::Command::new(h2load)
        .args(&args)
        .output()
        .await?;
    let cpu = children_cpu_seconds() - cpu0;
    let text = String::from_utf8_lossy(&out.stdout);
    let mut succeeded = 0u64;
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with("finished in")
            || line.starts_with("requests:")
            || line.starts_with("time for request")
        {
            println!("        {line}");
        }
        if let Some(rest) = line.strip_prefix("requests:") {
            succeeded = rest
                .split(',')
                .find(|f| f.contains("succeeded"))
                .and_then(|f| f.split_whitespace().next())
                .and_then(|n| n.parse().ok())
                .unwrap_or(0);
        }
    }
    println!(
        "h2load: CPU {cpu:.2} s over the run = {:.1} ms per 1,000 requests ({succeeded} succeeded)",
        cpu * 1e6 / succeeded.max(1) as f64
    );
    Ok(())
}
