//! The load client scrapes every node of a fleet over persistent connections.

use std::time::Duration;

use kubelet_fleet::fleet::Fleet;
use kubelet_fleet::scrape_all::{self, ScrapeConfig};

#[tokio::test]
async fn load_client_scrapes_every_node_each_interval_over_one_connection() {
    let dir = tempfile::tempdir().expect("dir");
    let fleet = Fleet::builder()
        .nodes(4)
        .pods_per_node(5)
        .port(0)
        .start(dir.path())
        .await
        .expect("starts");
    fleet.write_node_list().expect("node list");
    let summary = scrape_all::run(ScrapeConfig {
        state_dir: dir.path().to_path_buf(),
        interval: Duration::from_millis(200),
        duration: Duration::from_millis(600),
        timeout: Duration::from_secs(10),
        fleet_pid: None,
    })
    .await
    .expect("runs");
    assert_eq!(summary.nodes, 4);
    assert_eq!(summary.connect_failed, 0);
    assert_eq!(summary.scrapes_failed, 0);
    assert_eq!(summary.scrapes_ok, 12);
    assert!(summary.fleet_rss_kib.is_some());
    let totals = fleet.total_counts();
    assert_eq!(totals.connections, 4, "one connection per node, reused");
    assert_eq!(totals.bodies, 12);
    fleet.shutdown().await;
}
