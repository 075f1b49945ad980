//! Churn (restarts, pods and nodes coming and going) and every fault mode, seen over the wire.

mod common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use common::{connect, parse, Conn, Credentials, Line};
use kubelet_fleet::churn::{self, ChurnRates};
use kubelet_fleet::cluster::EventType;
use kubelet_fleet::fleet::{Fleet, FleetHandle};
use kubelet_fleet::kubelet::body::start_seconds;
use kubelet_fleet::kubelet::fault::{Fault, FaultKind, FaultParams};
use kubelet_fleet::kubelet::now_ms;
use tokio_util::sync::CancellationToken;

const H2: &[&[u8]] = &[b"h2", b"http/1.1"];

fn series<'a>(lines: &'a [Line], name: &str) -> Vec<&'a Line> {
    lines.iter().filter(|l| l.name == name).collect()
}

async fn open(fleet: &FleetHandle, dir: &std::path::Path, node: &str) -> Conn {
    let addr = fleet.address(node).expect("node address");
    connect(
        dir,
        addr,
        addr.ip(),
        Credentials::Token(fleet.token().to_owned()),
        H2,
    )
    .await
    .expect("connects")
}

async fn scrape(conn: &mut Conn) -> Vec<Line> {
    let (status, body) = conn.get("/metrics/resource").await.expect("scrape");
    assert_eq!(status, 200);
    parse(&body).expect("parses")
}

fn find<'a>(lines: &'a [Line], family: &str, pod: &str, container: &str) -> Option<&'a Line> {
    lines.iter().find(|l| {
        l.name == family && l.label("pod") == Some(pod) && l.label("container") == Some(container)
    })
}

#[tokio::test]
async fn restarting_a_container_resets_its_counter_and_moves_its_start_time() {
    let dir = tempfile::tempdir().expect("dir");
    let fleet = Fleet::builder()
        .nodes(2)
        .pods_per_node(6)
        .port(0)
        .start(dir.path())
        .await
        .expect("starts");
    let node = fleet.addresses()[0].0.clone();
    let (ns, pod, containers) = fleet.pods_on(&node)[4].clone();
    let container = containers[0].clone();
    let mut conn = open(&fleet, dir.path(), &node).await;
    let before = scrape(&mut conn).await;
    let cpu_before = find(
        &before,
        "container_cpu_usage_seconds_total",
        &pod,
        &container,
    )
    .expect("present")
    .value;
    let start_before = find(&before, "container_start_time_seconds", &pod, &container)
        .expect("present")
        .value;
    let node_before = series(&before, "node_cpu_usage_seconds_total")[0].value;

    let (_, mut events) = fleet
        .cluster()
        .watch_from(fleet.cluster().resource_version())
        .expect("watch");
    fleet
        .restart_container(&ns, &pod, &container)
        .expect("restart");
    let event = events.try_recv().expect("a pod event");
    assert_eq!(event.event, EventType::Modified);

    let after = scrape(&mut conn).await;
    let cpu_after = find(
        &after,
        "container_cpu_usage_seconds_total",
        &pod,
        &container,
    )
    .expect("present")
    .value;
    let start_after = find(&after, "container_start_time_seconds", &pod, &container)
        .expect("present")
        .value;
    assert!(start_after > start_before);
    assert!((start_after - now_ms() as f64 / 1000.0).abs() < 60.0);
    assert!(cpu_after < 0.1, "counter starts over: {cpu_after}");
    assert!(cpu_after < cpu_before);
    assert!(cpu_after > 0.0, "never exactly zero");
    let node_after = series(&after, "node_cpu_usage_seconds_total")[0].value;
    assert!(node_after >= node_before, "node counter stays monotonic");

    let served = fleet.served(&node).expect("history");
    let prev = served.previous.as_ref().expect("two bodies");
    let last_c = served.last.container(&ns, &pod, &container).expect("there");
    assert_ne!(
        prev.container(&ns, &pod, &container)
            .expect("there")
            .start_ns,
        last_c.start_ns
    );
    assert_eq!(start_seconds(last_c.start_ns), start_after);
    assert_eq!(served.container_cpu_nanocores(&ns, &pod, &container), None);
    fleet.shutdown().await;
}

#[tokio::test]
async fn pods_and_nodes_coming_and_going_change_bodies_and_cluster() {
    let dir = tempfile::tempdir().expect("dir");
    let fleet = Fleet::builder()
        .nodes(3)
        .pods_per_node(4)
        .port(0)
        .start(dir.path())
        .await
        .expect("starts");
    let node = fleet.addresses()[2].0.clone();
    let mut conn = open(&fleet, dir.path(), &node).await;
    let pods_in = |lines: &[Line]| -> BTreeSet<String> {
        series(lines, "pod_cpu_usage_seconds_total")
            .iter()
            .map(|l| l.label("pod").unwrap_or("").to_owned())
            .collect()
    };
    let before = pods_in(&scrape(&mut conn).await);
    assert_eq!(before.len(), 4);

    let (ns, added) = fleet.add_pod(&node).expect("add pod");
    assert_eq!(
        fleet.cluster().pod(&ns, &added).expect("in cluster").node,
        node
    );
    let with_new = pods_in(&scrape(&mut conn).await);
    assert!(with_new.contains(&added));
    assert_eq!(with_new.len(), 5);

    let (old_ns, old, _) = fleet.pods_on(&node)[0].clone();
    fleet.remove_pod(&old_ns, &old).expect("remove pod");
    assert!(fleet.cluster().pod(&old_ns, &old).is_none());
    let without = pods_in(&scrape(&mut conn).await);
    assert!(!without.contains(&old));
    assert_eq!(without.len(), 4);

    let new_node = fleet.add_node().await.expect("add node");
    assert_eq!(fleet.node_count(), 4);
    assert_eq!(fleet.cluster().pods_on_node(&new_node).len(), 4);
    let mut fresh = open(&fleet, dir.path(), &new_node).await;
    assert_eq!(pods_in(&scrape(&mut fresh).await).len(), 4);

    fleet.remove_node(&node).expect("remove node");
    assert!(fleet.cluster().node(&node).is_none());
    assert!(fleet.cluster().pods_on_node(&node).is_empty());
    assert!(
        conn.get("/metrics/resource").await.is_err(),
        "removed node's connection closes"
    );
    fleet.shutdown().await;
}

#[tokio::test]
async fn churn_at_configured_rates_changes_the_cluster() {
    let dir = tempfile::tempdir().expect("dir");
    let fleet = Fleet::builder()
        .nodes(4)
        .pods_per_node(5)
        .port(0)
        .start(dir.path())
        .await
        .expect("starts");
    let stop = CancellationToken::new();
    let rates = ChurnRates {
        pod_create: 200.0,
        pod_delete: 100.0,
        container_restart: 100.0,
        node_add: 20.0,
        node_remove: 10.0,
    };
    let task = tokio::spawn(churn::run(
        fleet.clone(),
        rates,
        Duration::from_millis(20),
        stop.clone(),
    ));
    // Wait for a condition, bounded: enough pods created.
    let deadline = Instant::now() + Duration::from_secs(20);
    while fleet.cluster().list_pods().items.len() < 40 && Instant::now() < deadline {
        tokio::task::yield_now().await;
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    stop.cancel();
    let tally = task.await.expect("churn task");
    assert!(
        tally.pods_created > 0 && tally.pods_deleted > 0,
        "{tally:?}"
    );
    assert!(
        tally.containers_restarted > 0 && tally.nodes_added > 0,
        "{tally:?}"
    );
    // The cluster and the kubelets agree on which pods exist.
    for (name, _) in fleet.addresses() {
        let mut fleet_pods: Vec<_> = fleet
            .pods_on(&name)
            .into_iter()
            .map(|(ns, p, _)| (ns, p))
            .collect();
        fleet_pods.sort();
        let cluster_pods: Vec<_> = fleet
            .cluster()
            .pods_on_node(&name)
            .iter()
            .map(|p| (p.namespace.clone(), p.name.clone()))
            .collect();
        assert_eq!(fleet_pods, cluster_pods, "{name}");
    }
    fleet.shutdown().await;
}

#[tokio::test]
async fn every_fault_mode_misbehaves_as_described() {
    let dir = tempfile::tempdir().expect("dir");
    let params = FaultParams {
        slow_delay: Duration::from_millis(300),
        huge_bytes: 3 << 20,
        skew_ms: 600_000,
    };
    let fleet = Fleet::builder()
        .nodes(12)
        .pods_per_node(3)
        .port(0)
        .fault_params(params)
        .start(dir.path())
        .await
        .expect("starts");
    let nodes: Vec<String> = fleet.addresses().into_iter().map(|(n, _)| n).collect();
    let faults = [
        Fault::Slow(params.slow_delay),
        Fault::Hang,
        Fault::ResetMidBody,
        Fault::ServerError,
        Fault::Unauthorized,
        Fault::Garbage,
        Fault::Truncated,
        Fault::Huge(params.huge_bytes),
        Fault::Skewed(-params.skew_ms),
        Fault::Skewed(params.skew_ms),
        Fault::WrongSan,
        Fault::WrongCa,
    ];
    for (node, fault) in nodes.iter().zip(faults) {
        fleet.set_fault(node, Some(fault)).expect("set fault");
    }
    let get = |i: usize| {
        let fleet = fleet.clone();
        let dir = dir.path().to_path_buf();
        let node = nodes[i].clone();
        async move {
            let mut conn = open(&fleet, &dir, &node).await;
            conn.get("/metrics/resource").await
        }
    };

    let began = Instant::now();
    let (status, _) = get(0).await.expect("slow answer");
    assert_eq!(status, 200);
    assert!(began.elapsed() >= params.slow_delay);

    let hang = tokio::time::timeout(Duration::from_millis(500), get(1)).await;
    assert!(hang.is_err(), "hung node answered: {hang:?}");

    assert!(get(2).await.is_err(), "reset mid-body must fail the read");
    assert!(fleet.served(&nodes[2]).is_none());

    assert_eq!(get(3).await.expect("answer").0, 500);
    assert_eq!(get(4).await.expect("answer").0, 401);

    let (status, garbage) = get(5).await.expect("answer");
    assert_eq!(status, 200);
    assert!(parse(&garbage).is_err() || parse(&garbage).map(|l| l.is_empty()).unwrap_or(false));

    let (status, truncated) = get(6).await.expect("answer");
    assert_eq!(status, 200);
    assert!(!truncated.ends_with(b"scrape_error 0\n"));
    assert!(!truncated.is_empty());
    assert!(fleet.served(&nodes[6]).is_none());

    let (status, huge) = get(7).await.expect("answer");
    assert_eq!(status, 200);
    assert!(huge.len() >= params.huge_bytes);
    let lines = parse(&huge).expect("huge body still parses");
    assert_eq!(series(&lines, "node_cpu_usage_seconds_total").len(), 1);

    for (i, sign) in [(8, -1i64), (9, 1)] {
        let (status, body) = get(i).await.expect("answer");
        assert_eq!(status, 200);
        let lines = parse(&body).expect("parses");
        let ts = series(&lines, "node_cpu_usage_seconds_total")[0]
            .timestamp
            .expect("timestamp");
        let off = ts - now_ms();
        assert!(
            (off - sign * params.skew_ms).abs() < 30_000,
            "node {i}: timestamp off by {off} ms"
        );
        let served = fleet.served(&nodes[i]).expect("recorded");
        assert_eq!(Some(served.last.node.timestamp_ms), Some(ts));
    }

    for i in [10, 11] {
        let addr = fleet.address(&nodes[i]).expect("addr");
        let attempt = connect(dir.path(), addr, addr.ip(), Credentials::None, H2).await;
        assert!(
            attempt.is_err(),
            "certificate fault on node {i} went unnoticed"
        );
    }
    // Clearing the fault restores a verifiable certificate.
    fleet.set_fault(&nodes[10], None).expect("clear");
    let addr = fleet.address(&nodes[10]).expect("addr");
    assert!(connect(dir.path(), addr, addr.ip(), Credentials::None, H2)
        .await
        .is_ok());
    fleet.shutdown().await;
}

#[tokio::test]
async fn fault_fractions_pick_the_same_nodes_for_the_same_seed() {
    let (d1, d2) = (
        tempfile::tempdir().expect("dir"),
        tempfile::tempdir().expect("dir"),
    );
    let build = |dir: std::path::PathBuf| async move {
        Fleet::builder()
            .nodes(40)
            .pods_per_node(1)
            .seed(5)
            .port(0)
            .fault(FaultKind::Hang, 0.25)
            .expect("fraction")
            .fault(FaultKind::ServerError, 0.25)
            .expect("fraction")
            .start(dir)
            .await
            .expect("starts")
    };
    let a = build(d1.path().to_path_buf()).await;
    let b = build(d2.path().to_path_buf()).await;
    let fa = a.faulty_nodes();
    assert_eq!(fa, b.faulty_nodes());
    let hung = fa.iter().filter(|(_, f)| *f == Fault::Hang).count();
    let errors = fa.iter().filter(|(_, f)| *f == Fault::ServerError).count();
    assert!((3..=17).contains(&hung), "{hung}");
    assert!((3..=17).contains(&errors), "{errors}");
    a.shutdown().await;
    b.shutdown().await;
}
