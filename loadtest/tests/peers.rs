//! The side-by-side peers start on loopback and do what the comparison relies on: nginx serves the
//! captured bytes for each request URI (query included) over HTTP/2 and HTTP/1.1, and Prometheus
//! scrapes every kubelet of a fleet with the fleet's credentials. Each test returns early, saying
//! so, when the peer's binary is not installed.

use std::time::{Duration, Instant};

use bytes::Bytes;
use kubelet_fleet::harness::apiload::Client;
use kubelet_fleet::harness::case::Protocol;
use kubelet_fleet::harness::peers::{self, Nginx, Prometheus};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nginx_serves_each_captured_body_for_its_exact_uri_over_both_protocols() {
    let Some(bin) = peers::find_binary("nginx") else {
        eprintln!("nginx is not installed: skipped");
        return;
    };
    let dir = tempfile::tempdir().expect("dir");
    let bodies = vec![
        (
            "/apis/metrics.k8s.io/v1beta1/namespaces/shop/pods?labelSelector=app.kubernetes.io%2Fname%3Dcart".to_owned(),
            Bytes::from_static(b"{\"kind\":\"PodMetricsList\",\"items\":[1]}"),
        ),
        (
            "/apis/metrics.k8s.io/v1beta1/namespaces/shop/pods?labelSelector=app.kubernetes.io%2Fname%3Dweb".to_owned(),
            Bytes::from_static(b"{\"kind\":\"PodMetricsList\",\"items\":[2]}"),
        ),
    ];
    let nginx = tokio::time::timeout(
        Duration::from_secs(30),
        Nginx::start(&bin, dir.path(), 1, &bodies),
    )
    .await
    .expect("starts in time")
    .expect("starts");
    assert!(nginx.addr.ip().is_loopback());
    for protocol in [Protocol::H2, Protocol::Http1] {
        let mut client = Client::new(
            peers::nginx_target(nginx.addr, None),
            protocol,
            Duration::from_secs(5),
        )
        .expect("client");
        for (uri, body) in &bodies {
            let got = client.get(uri).await.expect("served");
            assert_eq!(&got, body, "{protocol:?} {uri}");
        }
        let missing = client
            .get("/apis/metrics.k8s.io/v1beta1/namespaces/shop/pods?labelSelector=other")
            .await;
        assert!(missing.is_err(), "an unknown URI is not served");
    }
    let pid = nginx.pid;
    nginx.stop(Duration::from_secs(5)).await;
    assert!(
        peers::tree_reading(pid).is_none(),
        "the master is gone after stop"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_scrapes_every_kubelet_of_the_fleet_with_its_credentials() {
    let Some(bin) = peers::find_binary("prometheus") else {
        eprintln!("prometheus is not installed: skipped");
        return;
    };
    let dir = tempfile::tempdir().expect("dir");
    let fleet = kubelet_fleet::fleet::Fleet::builder()
        .nodes(2)
        .pods_per_node(2)
        .port(0)
        .start(dir.path())
        .await
        .expect("fleet starts");
    fleet.write_node_list().expect("node list");
    let log = dir.path().join("prometheus.log");
    let prometheus = tokio::time::timeout(
        Duration::from_secs(40),
        Prometheus::start(&bin, dir.path(), Duration::from_secs(1), &log),
    )
    .await
    .expect("starts in time")
    .expect("starts");
    assert_eq!(prometheus.targets, 2);
    assert!(prometheus.addr.ip().is_loopback());
    // Both targets up, as Prometheus's own data says; each is scraped once a second.
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut up = 0.0;
    while Instant::now() < deadline {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock")
            .as_secs_f64();
        up = prometheus.query("sum(up)", now).await.unwrap_or(0.0);
        if up >= 2.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let served = fleet.total_counts().bodies;
    prometheus.stop(Duration::from_secs(5)).await;
    fleet.shutdown().await;
    assert_eq!(up, 2.0, "see {}", log.display());
    assert!(served >= 2, "the kubelets served Prometheus");
}
