//! Many requests in flight on one HTTP/2 connection, through the real TLS server and router:
//! each stream gets its own whole answer, whether it finished in its first poll (and left in a
//! gathered write with others) or waited as a task of its own.

#[path = "common/tls_api.rs"]
mod tls_api;

use http::Method;
use tls_api::{send, serve_generated};

const NODES: usize = 40;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_stream_of_a_busy_connection_gets_its_own_answer() {
    let (running, sender, dir) = serve_generated("concurrent-streams", NODES).await;

    // Every node, every namespace's pods, and a missing node, four times over, all at once.
    let mut asked = Vec::new();
    for round in 0..4 {
        for n in 0..NODES {
            asked.push((
                format!("/apis/metrics.k8s.io/v1beta1/nodes/node-{n}"),
                round,
            ));
        }
        for ns in 0..2 {
            asked.push((
                format!(
                    "/apis/metrics.k8s.io/v1beta1/namespaces/ns-{ns}/pods?labelSelector=app%3Dweb"
                ),
                round,
            ));
        }
        asked.push((
            "/apis/metrics.k8s.io/v1beta1/nodes/absent".to_owned(),
            round,
        ));
    }
    let requests = asked.iter().map(|(path, _)| {
        let mut sender = sender.clone();
        let path = path.clone();
        tokio::spawn(async move { send(&mut sender, Method::GET, &path, &[]).await })
    });
    let replies = futures::future::join_all(requests).await;

    for ((path, _), reply) in asked.iter().zip(replies) {
        let reply = reply.unwrap();
        if path.ends_with("/absent") {
            assert_eq!(reply.code, 404, "{path}");
            continue;
        }
        assert_eq!(reply.code, 200, "{path}");
        let json = reply.json();
        if let Some(node) = path.strip_prefix("/apis/metrics.k8s.io/v1beta1/nodes/") {
            assert_eq!(json["kind"], "NodeMetrics", "{path}");
            assert_eq!(json["metadata"]["name"], node, "{path}");
        } else {
            // Namespace `ns-k` holds the pods of the nodes with `n % 2 == k`, two each.
            let namespace = if path.contains("/ns-0/") {
                "ns-0"
            } else {
                "ns-1"
            };
            let items = json["items"].as_array().unwrap();
            assert_eq!(items.len(), NODES, "{path}");
            assert!(items
                .iter()
                .all(|item| item["metadata"]["namespace"] == namespace));
        }
    }
    running.stop.send(true).unwrap();
    let _ = std::fs::remove_dir_all(dir);
}
