//! Wire-level checks of the simulated kubelets: bodies, TLS identities, authentication, counters,
//! served history and connection reuse, through a plain HTTP/2 client on loopback.

mod common;

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr};

use common::{connect, parse, Credentials, Line};
use kubelet_fleet::fleet::{Fleet, FleetHandle};
use kubelet_fleet::kubelet::body::{cpu_seconds, start_seconds};

const H2: &[&[u8]] = &[b"h2", b"http/1.1"];

async fn fleet(nodes: u64, pods: u64, dir: &std::path::Path) -> FleetHandle {
    Fleet::builder()
        .nodes(nodes)
        .pods_per_node(pods)
        .seed(11)
        .port(0)
        .start(dir)
        .await
        .expect("fleet starts")
}

fn tempdir() -> tempfile::TempDir {
    tempfile::tempdir().expect("temp dir")
}

fn series<'a>(lines: &'a [Line], name: &str) -> Vec<&'a Line> {
    lines.iter().filter(|l| l.name == name).collect()
}

#[tokio::test]
async fn every_node_serves_all_series_for_its_pods_over_h2() {
    let dir = tempdir();
    let fleet = fleet(5, 12, dir.path()).await;
    assert_eq!(fleet.node_count(), 5);
    assert_eq!(fleet.cluster().list_pods().items.len(), 60);
    for (name, addr) in fleet.addresses() {
        let mut conn = connect(
            dir.path(),
            addr,
            addr.ip(),
            Credentials::Token(fleet.token().to_owned()),
            H2,
        )
        .await
        .expect("connects");
        assert_eq!(conn.alpn.as_deref(), Some(&b"h2"[..]));
        let (status, body) = conn.get("/metrics/resource").await.expect("scrape");
        assert_eq!(status, 200);
        let lines = parse(&body).expect("parses");
        let pods = fleet.cluster().pods_on_node(&name);
        let containers: usize = pods.iter().map(|p| p.containers.len()).sum();
        assert_eq!(pods.len(), 12);
        for family in [
            "container_cpu_usage_seconds_total",
            "container_memory_working_set_bytes",
            "container_start_time_seconds",
        ] {
            let found = series(&lines, family);
            assert_eq!(found.len(), containers, "{family} on {name}");
            let keys: BTreeSet<_> = found
                .iter()
                .map(|l| (l.label("namespace"), l.label("pod"), l.label("container")))
                .collect();
            let want: BTreeSet<_> = pods
                .iter()
                .flat_map(|p| {
                    p.containers.iter().map(|c| {
                        (
                            Some(p.namespace.as_str()),
                            Some(p.name.as_str()),
                            Some(c.as_str()),
                        )
                    })
                })
                .collect();
            assert_eq!(keys, want);
        }
        assert_eq!(series(&lines, "pod_cpu_usage_seconds_total").len(), 12);
        assert_eq!(series(&lines, "pod_memory_working_set_bytes").len(), 12);
        assert!(series(&lines, "container_start_time_seconds")
            .iter()
            .all(|l| l.timestamp.is_none()));
        let node_cpu = series(&lines, "node_cpu_usage_seconds_total");
        let node_mem = series(&lines, "node_memory_working_set_bytes");
        assert_eq!((node_cpu.len(), node_mem.len()), (1, 1));
        let sum_cpu: f64 = series(&lines, "container_cpu_usage_seconds_total")
            .iter()
            .map(|l| l.value)
            .sum();
        let sum_mem: f64 = series(&lines, "container_memory_working_set_bytes")
            .iter()
            .map(|l| l.value)
            .sum();
        assert!(node_cpu[0].value >= sum_cpu);
        assert!(node_mem[0].value >= sum_mem);
        assert_eq!(series(&lines, "scrape_error")[0].value, 0.0);
        assert_eq!(series(&lines, "resource_scrape_error")[0].value, 0.0);
        assert!(body.starts_with(b"# HELP container_cpu_usage_seconds_total "));

        // What the fleet says it served is exactly what the body showed.
        let served = fleet.served(&name).expect("served history");
        assert!(served.previous.is_none());
        assert_eq!(node_cpu[0].value, cpu_seconds(served.last.node.cpu_ns));
        assert_eq!(node_cpu[0].timestamp, Some(served.last.node.timestamp_ms));
        assert_eq!(node_mem[0].value, served.last.node.memory as f64);
        for l in series(&lines, "container_cpu_usage_seconds_total") {
            let c = served
                .last
                .container(
                    l.label("namespace").unwrap_or(""),
                    l.label("pod").unwrap_or(""),
                    l.label("container").unwrap_or(""),
                )
                .expect("container recorded");
            assert_eq!(l.value, cpu_seconds(c.point.cpu_ns));
            assert_eq!(l.timestamp, Some(c.point.timestamp_ms));
        }
        for l in series(&lines, "container_start_time_seconds") {
            let c = served
                .last
                .container(
                    l.label("namespace").unwrap_or(""),
                    l.label("pod").unwrap_or(""),
                    l.label("container").unwrap_or(""),
                )
                .expect("container recorded");
            assert_eq!(l.value, start_seconds(c.start_ns));
        }
    }
    fleet.shutdown().await;
}

#[tokio::test]
async fn certificates_verify_for_the_node_ip_only() {
    let dir = tempdir();
    let fleet = fleet(3, 2, dir.path()).await;
    let addrs = fleet.addresses();
    let (_, a) = addrs[0];
    let (_, b) = addrs[1];
    assert_ne!(a.ip(), b.ip());
    assert!(connect(dir.path(), a, a.ip(), Credentials::None, H2)
        .await
        .is_ok());
    let wrong_name = connect(dir.path(), a, b.ip(), Credentials::None, H2).await;
    assert!(wrong_name.is_err(), "certificate of {a} accepted for {b}");
    let other = connect(
        dir.path(),
        a,
        IpAddr::V4(Ipv4Addr::new(127, 9, 9, 9)),
        Credentials::None,
        H2,
    )
    .await;
    assert!(other.is_err());
    fleet.shutdown().await;
}

#[tokio::test]
async fn unauthenticated_scrapes_get_401_and_token_or_client_cert_pass() {
    let dir = tempdir();
    let fleet = fleet(2, 3, dir.path()).await;
    let (name, addr) = fleet.addresses()[0].clone();
    let mut anon = connect(dir.path(), addr, addr.ip(), Credentials::None, H2)
        .await
        .expect("connects");
    assert_eq!(anon.get("/metrics/resource").await.expect("answer").0, 401);
    assert_eq!(anon.get("/healthz").await.expect("answer").0, 200);
    let mut bad = connect(
        dir.path(),
        addr,
        addr.ip(),
        Credentials::Token("not-the-token".into()),
        H2,
    )
    .await
    .expect("connects");
    assert_eq!(bad.get("/metrics/resource").await.expect("answer").0, 401);
    let mut cert = connect(dir.path(), addr, addr.ip(), Credentials::ClientCert, H2)
        .await
        .expect("connects");
    assert_eq!(cert.get("/metrics/resource").await.expect("answer").0, 200);
    let token = std::fs::read_to_string(dir.path().join("kubelet-token")).expect("token file");
    let mut tok = connect(dir.path(), addr, addr.ip(), Credentials::Token(token), H2)
        .await
        .expect("connects");
    assert_eq!(tok.get("/metrics/resource").await.expect("answer").0, 200);
    assert_eq!(tok.get("/metrics/cadvisor").await.expect("answer").0, 404);
    let counts = fleet.counts(&name).expect("counts");
    assert_eq!(counts.connections, 4);
    assert_eq!(counts.bodies, 2);
    assert_eq!(counts.requests, 6);
    fleet.shutdown().await;
}

#[tokio::test]
async fn http1_clients_are_served_too() {
    let dir = tempdir();
    let fleet = fleet(1, 2, dir.path()).await;
    let (_, addr) = fleet.addresses()[0].clone();
    let mut conn = connect(
        dir.path(),
        addr,
        addr.ip(),
        Credentials::Token(fleet.token().to_owned()),
        &[b"http/1.1"],
    )
    .await
    .expect("connects");
    assert_eq!(conn.alpn.as_deref(), Some(&b"http/1.1"[..]));
    let (status, body) = conn.get("/metrics/resource").await.expect("scrape");
    assert_eq!(status, 200);
    assert!(parse(&body).expect("parses").len() > 10);
    fleet.shutdown().await;
}

#[tokio::test]
async fn counters_advance_and_history_keeps_the_last_two_bodies_on_one_connection() {
    let dir = tempdir();
    let fleet = fleet(2, 5, dir.path()).await;
    let (name, addr) = fleet.addresses()[1].clone();
    let mut conn = connect(
        dir.path(),
        addr,
        addr.ip(),
        Credentials::Token(fleet.token().to_owned()),
        H2,
    )
    .await
    .expect("connects");
    let (_, first) = conn.get("/metrics/resource").await.expect("scrape");
    let first = parse(&first).expect("parses");
    // Scrape until the sample time moves on (a millisecond or so), bounded.
    let mut second = None;
    for _ in 0..1000 {
        let (_, body) = conn.get("/metrics/resource").await.expect("scrape");
        let lines = parse(&body).expect("parses");
        if series(&lines, "node_cpu_usage_seconds_total")[0].timestamp
            > series(&first, "node_cpu_usage_seconds_total")[0].timestamp
        {
            second = Some(lines);
            break;
        }
    }
    let second = second.expect("sample time advanced");
    for family in [
        "node_cpu_usage_seconds_total",
        "container_cpu_usage_seconds_total",
        "pod_cpu_usage_seconds_total",
    ] {
        for (a, b) in series(&first, family).iter().zip(series(&second, family)) {
            assert_eq!(a.labels, b.labels);
            assert!(b.value >= a.value, "{family} went back: {a:?} -> {b:?}");
            assert!(b.timestamp >= a.timestamp);
        }
    }
    let node_a = series(&first, "node_cpu_usage_seconds_total")[0].value;
    let node_b = series(&second, "node_cpu_usage_seconds_total")[0].value;
    assert!(node_b > node_a);

    let served = fleet.served(&name).expect("history");
    let prev = served.previous.as_ref().expect("two bodies");
    assert_eq!(
        cpu_seconds(served.last.node.cpu_ns),
        series(&second, "node_cpu_usage_seconds_total")[0].value
    );
    let window_ms = served.last.node.timestamp_ms - prev.node.timestamp_ms;
    let rate = served.node_cpu_nanocores().expect("rate");
    let expected = (served.last.node.cpu_ns - prev.node.cpu_ns) as u128 * 1000 / window_ms as u128;
    assert_eq!(rate as u128, expected);
    // A node uses at least its overhead and at most a few dozen cores.
    assert!(rate > 10_000_000 && rate < 64_000_000_000, "{rate}");

    let counts = fleet.counts(&name).expect("counts");
    assert_eq!(
        counts.connections, 1,
        "one connection reused for every scrape"
    );
    assert!(counts.requests >= 2);
    assert_eq!(counts.requests, counts.bodies);
    fleet.shutdown().await;
}

#[tokio::test]
async fn single_address_mode_gives_each_node_its_own_port_on_localhost() {
    let dir = tempdir();
    let fleet = Fleet::builder()
        .nodes(3)
        .pods_per_node(2)
        .port(0)
        .single_address(true)
        .auth_required(false)
        .start(dir.path())
        .await
        .expect("fleet starts");
    let addrs = fleet.addresses();
    let ports: BTreeSet<u16> = addrs.iter().map(|(_, a)| a.port()).collect();
    assert_eq!(ports.len(), 3);
    for (name, addr) in &addrs {
        assert_eq!(addr.ip(), IpAddr::V4(Ipv4Addr::LOCALHOST));
        let node = fleet.cluster().node(name).expect("in cluster");
        assert_eq!((node.ip, node.port), (addr.ip(), addr.port()));
        let mut conn = connect(dir.path(), *addr, addr.ip(), Credentials::None, H2)
            .await
            .expect("connects");
        let (status, body) = conn.get("/metrics/resource").await.expect("scrape");
        assert_eq!(status, 200);
        let lines = parse(&body).expect("parses");
        let pods: BTreeSet<_> = series(&lines, "pod_cpu_usage_seconds_total")
            .iter()
            .map(|l| l.label("pod").unwrap_or("").to_owned())
            .collect();
        let want: BTreeSet<_> = fleet
            .cluster()
            .pods_on_node(name)
            .iter()
            .map(|p| p.name.clone())
            .collect();
        assert_eq!(pods, want);
    }
    fleet.shutdown().await;
}

#[tokio::test]
async fn the_same_seed_builds_the_same_cluster() {
    let (d1, d2) = (tempdir(), tempdir());
    let a = fleet(4, 8, d1.path()).await;
    let b = fleet(4, 8, d2.path()).await;
    let names = |f: &FleetHandle| {
        f.cluster()
            .list_pods()
            .items
            .iter()
            .map(|p| (p.namespace.clone(), p.name.clone(), p.node.clone()))
            .collect::<Vec<_>>()
    };
    assert_eq!(names(&a), names(&b));
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test]
async fn idle_connections_are_closed_and_clients_reconnect() {
    let dir = tempdir();
    let fleet = Fleet::builder()
        .nodes(1)
        .pods_per_node(2)
        .port(0)
        .idle_timeout(Some(std::time::Duration::from_millis(200)))
        .start(dir.path())
        .await
        .expect("fleet starts");
    let (name, addr) = fleet.addresses()[0].clone();
    let creds = || Credentials::Token(fleet.token().to_owned());
    let mut conn = connect(dir.path(), addr, addr.ip(), creds(), H2)
        .await
        .expect("connects");
    assert_eq!(conn.get("/metrics/resource").await.expect("scrape").0, 200);
    // Wait for the server to close the idle connection, bounded.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !conn.is_closed() && std::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(conn.is_closed(), "idle connection still open");
    let mut again = connect(dir.path(), addr, addr.ip(), creds(), H2)
        .await
        .expect("reconnects");
    assert_eq!(again.get("/metrics/resource").await.expect("scrape").0, 200);
    assert_eq!(fleet.counts(&name).expect("counts").connections, 2);
    fleet.shutdown().await;
}
