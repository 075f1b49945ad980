//! Discovery against a fake kube-apiserver on loopback, over plain HTTP/1.1.
//!
//! The fake serves `GET /api/v1/nodes` and `/api/v1/pods` as lists and as chunked watch streams
//! of newline-separated events, keeps a resource version counter, and can answer a watch with
//! `410 Gone` (an `ERROR` event with an `Expired` status) to force a relist. Everything a test
//! waits for is a real condition with a bounded timeout.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use metrics_server::discovery::{self, DiscoveryConfig, DiscoveryHandle, Targets};
use serde_json::{json, Value};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

const WAIT: Duration = Duration::from_secs(20);

// === Fake API server ===

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    Nodes,
    Pods,
}

#[derive(Default)]
struct State {
    resource_version: u64,
    nodes: BTreeMap<String, Value>,
    pods: BTreeMap<(String, String), Value>,
    /// (resource version, kind, event type, object), in order.
    events: Vec<(u64, Kind, &'static str, Value)>,
    /// Kinds whose open watches must end with `410 Gone`.
    expire: Vec<Kind>,
    /// Query strings of list requests, by kind.
    lists: Vec<(Kind, String)>,
    /// How many list requests still get `500 Internal Server Error`.
    failing_lists: usize,
}

struct FakeApiServer {
    state: Mutex<State>,
    /// Bumped after every change so open watches wake up.
    changed: watch::Sender<u64>,
}

impl FakeApiServer {
    async fn start() -> (Arc<FakeApiServer>, u16) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = Arc::new(FakeApiServer {
            state: Mutex::new(State::default()),
            changed: watch::channel(0).0,
        });
        let accepting = Arc::clone(&server);
        // Ends with the test's runtime.
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(Arc::clone(&accepting).serve(stream));
            }
        });
        (server, port)
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap()
    }

    fn notify(&self) {
        self.changed.send_modify(|n| *n += 1);
    }

    /// Stores an object and, unless `silently`, records the watch event for it.
    fn put(&self, kind: Kind, mut object: Value, silently: bool) {
        let mut state = self.state();
        state.resource_version += 1;
        let rv = state.resource_version;
        object["metadata"]["resourceVersion"] = json!(rv.to_string());
        let name = object["metadata"]["name"].as_str().unwrap().to_owned();
        let existed = match kind {
            Kind::Nodes => state.nodes.insert(name, object.clone()).is_some(),
            Kind::Pods => {
                let ns = object["metadata"]["namespace"].as_str().unwrap().to_owned();
                state.pods.insert((ns, name), object.clone()).is_some()
            }
        };
        if !silently {
            let kind_of_event = if existed { "MODIFIED" } else { "ADDED" };
            state.events.push((rv, kind, kind_of_event, object));
        }
        drop(state);
        self.notify();
    }

    fn delete(&self, kind: Kind, namespace: &str, name: &str, silently: bool) {
        let mut state = self.state();
        state.resource_version += 1;
        let rv = state.resource_version;
        let removed = match kind {
            Kind::Nodes => state.nodes.remove(name),
            Kind::Pods => state.pods.remove(&(namespace.to_owned(), name.to_owned())),
        };
        let mut object = removed.expect("deleting an object that exists");
        object["metadata"]["resourceVersion"] = json!(rv.to_string());
        if !silently {
            state.events.push((rv, kind, "DELETED", object));
        }
        drop(state);
        self.notify();
    }

    /// Ends the open watches of `kind` with `410 Gone`; the next watch proceeds normally.
    fn expire(&self, kind: Kind) {
        self.state().expire.push(kind);
        self.notify();
    }

    fn lists(&self, kind: Kind) -> Vec<String> {
        self.state()
            .lists
            .iter()
            .filter(|(k, _)| *k == kind)
            .map(|(_, q)| q.clone())
            .collect()
    }

    async fn serve(self: Arc<Self>, mut stream: TcpStream) {
        let mut buffer = Vec::new();
        loop {
            let Some(head) = read_head(&mut stream, &mut buffer).await else {
                return;
            };
            let target = head.split(' ').nth(1).unwrap_or("").to_owned();
            let (path, query) = target.split_once('?').unwrap_or((&target, ""));
            let kind = match path {
                "/api/v1/nodes" => Kind::Nodes,
                "/api/v1/pods" => Kind::Pods,
                _ => {
                    let body = r#"{"kind":"Status","apiVersion":"v1","status":"Failure","reason":"NotFound","code":404}"#;
                    if respond(&mut stream, "404 Not Found", body).await.is_err() {
                        return;
                    }
                    continue;
                }
            };
            let params = parse_query(query);
            let served = if params.get("watch").map(String::as_str) == Some("true") {
                let since = params
                    .get("resourceVersion")
                    .and_then(|rv| rv.parse().ok())
                    .unwrap_or(0);
                self.watch(&mut stream, kind, since).await
            } else {
                match self.list(kind, query) {
                    Some(body) => respond(&mut stream, "200 OK", &body).await,
                    None => {
                        let body = r#"{"kind":"Status","apiVersion":"v1","status":"Failure","reason":"InternalError","code":500}"#;
                        respond(&mut stream, "500 Internal Server Error", body).await
                    }
                }
            };
            if served.is_err() {
                return;
            }
        }
    }

    /// The list body, or `None` while lists are set to fail.
    fn list(&self, kind: Kind, query: &str) -> Option<String> {
        let mut state = self.state();
        state.lists.push((kind, query.to_owned()));
        if state.failing_lists > 0 {
            state.failing_lists -= 1;
            return None;
        }
        let (list_kind, items): (&str, Vec<Value>) = match kind {
            Kind::Nodes => ("NodeList", state.nodes.values().cloned().collect()),
            Kind::Pods => ("PodList", state.pods.values().cloned().collect()),
        };
        let body = json!({
            "kind": list_kind,
            "apiVersion": "v1",
            "metadata": {"resourceVersion": state.resource_version.to_string()},
            "items": items,
        });
        Some(body.to_string())
    }

    /// Streams events of `kind` newer than `since` until expired or the client goes away.
    async fn watch(&self, stream: &mut TcpStream, kind: Kind, since: u64) -> std::io::Result<()> {
        let mut changed = self.changed.subscribe();
        write_all(
            stream,
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n",
        )
        .await?;
        let mut cursor = since;
        loop {
            changed.borrow_and_update();
            let (lines, expired) = {
                let mut state = self.state();
                let mut lines = String::new();
                for (rv, k, event_type, object) in &state.events {
                    if *k == kind && *rv > cursor {
                        lines.push_str(&json!({"type": event_type, "object": object}).to_string());
                        lines.push('\n');
                        cursor = *rv;
                    }
                }
                let expired = state.expire.contains(&kind);
                state.expire.retain(|k| *k != kind);
                (lines, expired)
            };
            if !lines.is_empty() {
                write_chunk(stream, lines.as_bytes()).await?;
            }
            if expired {
                let gone = json!({"type": "ERROR", "object": {
                    "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                    "message": "too old resource version", "reason": "Expired", "code": 410}});
                write_chunk(stream, format!("{gone}\n").as_bytes()).await?;
                return write_all(stream, b"0\r\n\r\n").await;
            }
            if changed.changed().await.is_err() {
                return write_all(stream, b"0\r\n\r\n").await;
            }
        }
    }
}

/// Reads one request head; `None` when the client closed the connection.
async fn read_head(stream: &mut TcpStream, buffer: &mut Vec<u8>) -> Option<String> {
    loop {
        if let Some(end) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buffer[..end]).into_owned();
            buffer.drain(..end + 4);
            return Some(head);
        }
        stream.readable().await.ok()?;
        let mut chunk = [0u8; 4096];
        match stream.try_read(&mut chunk) {
            Ok(0) => return None,
            Ok(n) => buffer.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(_) => return None,
        }
    }
}

async fn write_all(stream: &mut TcpStream, mut bytes: &[u8]) -> std::io::Result<()> {
    while !bytes.is_empty() {
        stream.writable().await?;
        match stream.try_write(bytes) {
            Ok(n) => bytes = &bytes[n..],
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

async fn write_chunk(stream: &mut TcpStream, data: &[u8]) -> std::io::Result<()> {
    let mut chunk = format!("{:x}\r\n", data.len()).into_bytes();
    chunk.extend_from_slice(data);
    chunk.extend_from_slice(b"\r\n");
    write_all(stream, &chunk).await
}

async fn respond(stream: &mut TcpStream, status: &str, body: &str) -> std::io::Result<()> {
    let response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    write_all(stream, response.as_bytes()).await
}

fn parse_query(query: &str) -> BTreeMap<String, String> {
    query
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .map(|(k, v)| (k.to_owned(), percent_decode(v)))
        .collect()
}

fn percent_decode(value: &str) -> String {
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("");
                match u8::from_str_radix(hex, 16) {
                    Ok(b) => {
                        out.push(b);
                        i += 3;
                    }
                    Err(_) => {
                        out.push(b'%');
                        i += 1;
                    }
                }
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

// === Objects ===

fn node(name: &str, ip: &str, status_port: u16, path: Option<&str>, heartbeat: &str) -> Value {
    let mut annotations = json!({"node.alpha.kubernetes.io/ttl": "0"});
    if let Some(path) = path {
        annotations["metrics.k8s.io/resource-metrics-path"] = json!(path);
    }
    json!({
        "kind": "Node", "apiVersion": "v1",
        "metadata": {"name": name, "uid": format!("uid-{name}"),
                     "labels": {"role": "worker", "kubernetes.io/hostname": name},
                     "annotations": annotations,
                     "managedFields": [{"manager": "kubelet", "operation": "Update", "fieldsV1": {"f:status": {}}}]},
        "spec": {"podCIDR": "10.244.0.0/24"},
        "status": {
            "addresses": [{"type": "Hostname", "address": name}, {"type": "InternalIP", "address": ip}],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": status_port}},
            "conditions": [{"type": "Ready", "status": "True", "lastHeartbeatTime": heartbeat}],
            "capacity": {"cpu": "4", "memory": "16Gi"}
        }
    })
}

fn pod(namespace: &str, name: &str, node: &str, phase: &str) -> Value {
    json!({
        "kind": "Pod", "apiVersion": "v1",
        "metadata": {"name": name, "namespace": namespace, "uid": format!("uid-{namespace}-{name}"),
                     "labels": {"app": "web"}},
        "spec": {"nodeName": node, "containers": [{"name": "c", "image": "registry/web:1"}]},
        "status": {"phase": phase, "podIP": "10.244.0.9"}
    })
}

// === Waiting ===

/// Polls `condition` on fresh views until it holds, failing after [`WAIT`].
async fn view_until(
    handle: &DiscoveryHandle,
    what: &str,
    condition: impl Fn(&discovery::ClusterView) -> bool,
) {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        if condition(&handle.view()) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Waits on the targets channel until `condition` holds for the latest value.
async fn targets_until(
    targets: &mut watch::Receiver<Targets>,
    what: &str,
    condition: impl Fn(&Targets) -> bool,
) -> Targets {
    let waiting = async {
        loop {
            let current = targets.borrow_and_update().clone();
            if condition(&current) {
                return current;
            }
            targets.changed().await.expect("discovery stopped");
        }
    };
    tokio::time::timeout(WAIT, waiting)
        .await
        .unwrap_or_else(|_| panic!("timed out waiting for {what}"))
}

fn host_port_path(targets: &Targets, node: &str) -> Option<(String, u16, String)> {
    targets
        .get(node)
        .map(|t| (t.host.clone(), t.port, t.path.clone()))
}

// === Tests ===

#[tokio::test(flavor = "current_thread")]
async fn discovery_follows_the_api_server_through_watch_and_relist() {
    let (server, port) = FakeApiServer::start().await;
    server.put(
        Kind::Nodes,
        node("node-1", "127.0.0.11", 10255, None, "t0"),
        false,
    );
    server.put(
        Kind::Nodes,
        node(
            "node-2",
            "127.0.0.12",
            0,
            Some("/metrics/nodes/node-2/metrics/resource"),
            "t0",
        ),
        false,
    );
    server.put(Kind::Pods, pod("ns-b", "p3", "node-2", "Running"), false);
    server.put(Kind::Pods, pod("ns-a", "p2", "node-1", "Pending"), false);
    server.put(Kind::Pods, pod("ns-a", "p1", "node-1", "Running"), false);

    let client = discovery::client_for(kube::Config::new(
        format!("http://127.0.0.1:{port}").parse().unwrap(),
    ))
    .unwrap();
    let handle = discovery::start(
        client,
        DiscoveryConfig {
            preferred_address_types: vec!["InternalIP".into(), "Hostname".into()],
            kubelet_port: 10250,
            use_node_status_port: true,
            node_selector: Some("role=worker".into()),
        },
    )
    .unwrap();
    let mut targets = handle.targets();

    // Initial lists converge.
    view_until(&handle, "the initial sync", |_| handle.is_synced()).await;
    let view = handle.view();
    assert_eq!(
        view.nodes().map(|n| &*n.name).collect::<Vec<_>>(),
        vec!["node-1", "node-2"]
    );
    let pods: Vec<(String, String, bool)> = view
        .pods()
        .map(|p| (p.namespace.to_string(), p.name.to_string(), p.running))
        .collect();
    assert_eq!(
        pods,
        vec![
            ("ns-a".into(), "p1".into(), true),
            ("ns-a".into(), "p2".into(), false),
            ("ns-b".into(), "p3".into(), true),
        ]
    );
    assert_eq!(
        view.pods_in_namespace("ns-a")
            .map(|p| &*p.name)
            .collect::<Vec<_>>(),
        vec!["p1", "p2"]
    );
    assert_eq!(
        view.pod("ns-b", "p3").unwrap().node.as_deref(),
        Some("node-2")
    );
    assert_eq!(
        view.node("node-1").unwrap().labels.get("role"),
        Some("worker")
    );
    let node_lists = server.lists(Kind::Nodes);
    assert!(
        node_lists[0].contains("labelSelector=role%3Dworker"),
        "node list without the node selector: {node_lists:?}"
    );

    let current = targets_until(&mut targets, "the initial targets", |t| t.len() == 2).await;
    assert_eq!(
        host_port_path(&current, "node-1"),
        Some(("127.0.0.11".into(), 10255, "/metrics/resource".into()))
    );
    // node-2 reports no status port, so --kubelet-port applies.
    assert_eq!(
        host_port_path(&current, "node-2"),
        Some((
            "127.0.0.12".into(),
            10250,
            "/metrics/nodes/node-2/metrics/resource".into()
        ))
    );

    // An address change reaches the targets.
    server.put(
        Kind::Nodes,
        node("node-1", "127.0.0.21", 10255, None, "t0"),
        false,
    );
    targets_until(&mut targets, "node-1's new address", |t| {
        host_port_path(t, "node-1").is_some_and(|(host, _, _)| host == "127.0.0.21")
    })
    .await;

    // A heartbeat-only update of node-2, then a label change of node-1 on the same watch: once
    // the label is visible the heartbeat has been applied too, and the targets did not fire.
    server.put(
        Kind::Nodes,
        node(
            "node-2",
            "127.0.0.12",
            0,
            Some("/metrics/nodes/node-2/metrics/resource"),
            "t1",
        ),
        false,
    );
    let mut relabelled = node("node-1", "127.0.0.21", 10255, None, "t1");
    relabelled["metadata"]["labels"]["zone"] = json!("b");
    server.put(Kind::Nodes, relabelled, false);
    view_until(&handle, "node-1's new label", |v| {
        v.node("node-1")
            .is_some_and(|n| n.labels.get("zone") == Some("b"))
    })
    .await;
    assert!(
        !targets.has_changed().unwrap(),
        "a heartbeat or label change fired the targets"
    );

    // A deleted pod disappears.
    server.delete(Kind::Pods, "ns-a", "p1", false);
    view_until(&handle, "p1's deletion", |v| v.pod("ns-a", "p1").is_none()).await;
    assert!(handle.view().pod("ns-a", "p2").is_some());

    // While the watches are down, a pod and a node vanish and a pod appears without events;
    // `410 Gone` forces relists, and the relisted state replaces the old one.
    server.delete(Kind::Pods, "ns-b", "p3", true);
    server.put(Kind::Pods, pod("ns-c", "p5", "node-1", "Running"), true);
    server.delete(Kind::Nodes, "", "node-2", true);
    let pod_lists_before = server.lists(Kind::Pods).len();
    let node_lists_before = server.lists(Kind::Nodes).len();
    server.expire(Kind::Pods);
    server.expire(Kind::Nodes);
    view_until(&handle, "the relisted pods", |v| {
        v.pod("ns-b", "p3").is_none() && v.pod("ns-c", "p5").is_some()
    })
    .await;
    assert!(server.lists(Kind::Pods).len() > pod_lists_before);
    let current = targets_until(&mut targets, "node-2 gone after the relist", |t| {
        !t.contains_key("node-2")
    })
    .await;
    assert_eq!(
        current.keys().map(|k| &**k).collect::<Vec<_>>(),
        vec!["node-1"]
    );
    assert!(server.lists(Kind::Nodes).len() > node_lists_before);
    assert_eq!(
        handle.view().pods().map(|p| &*p.name).collect::<Vec<_>>(),
        vec!["p2", "p5"]
    );

    // After the relist the watch resumes: a new pod shows up through it.
    server.put(Kind::Pods, pod("ns-a", "p6", "node-1", "Running"), false);
    view_until(&handle, "p6 through the resumed watch", |v| {
        v.pod("ns-a", "p6").is_some()
    })
    .await;
}

#[tokio::test(flavor = "current_thread")]
async fn failing_lists_are_retried_until_the_api_server_recovers() {
    let (server, port) = FakeApiServer::start().await;
    server.put(
        Kind::Nodes,
        node("node-1", "127.0.0.11", 0, None, "t0"),
        false,
    );
    server.state().failing_lists = 2;
    let client = discovery::client_for(kube::Config::new(
        format!("http://127.0.0.1:{port}").parse().unwrap(),
    ))
    .unwrap();
    let handle = discovery::start(
        client,
        DiscoveryConfig {
            preferred_address_types: vec!["InternalIP".into()],
            kubelet_port: 10250,
            use_node_status_port: false,
            node_selector: None,
        },
    )
    .unwrap();
    let mut targets = handle.targets();
    targets_until(&mut targets, "node-1 after the failures", |t| {
        t.contains_key("node-1")
    })
    .await;
    view_until(&handle, "the sync after the failures", |_| {
        handle.is_synced()
    })
    .await;
    // Two refused lists plus the successful ones for nodes and pods.
    let lists = server.lists(Kind::Nodes).len() + server.lists(Kind::Pods).len();
    assert!(lists >= 4, "only {lists} list requests");
}
