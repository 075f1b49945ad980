//! Wire-level tests of the kube-apiserver stand-in: every request goes over loopback HTTPS, through
//! kube-rs clients built from the kubeconfigs the stand-in writes, or through a raw TLS client.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use futures_util::{StreamExt, TryStreamExt};
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use k8s_openapi::api::core::v1::{ConfigMap, Node, Pod};
use kube::api::{ListParams, WatchEvent, WatchParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Api, Client, Config};
use kubelet_fleet::apiserver::{self, ApiServerConfig, ApiServerHandle};
use kubelet_fleet::cluster::{self, Cluster, PodPhase};
use kubelet_fleet::pki::{Authority, LeafSpec};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use serde_json::{json, Value};
use tokio::net::TcpListener;

/// Every wait in these tests is bounded by this.
const BOUND: Duration = Duration::from_secs(30);

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

fn node(name: &str, octet: u8, node_labels: &[(&str, &str)]) -> cluster::Node {
    cluster::Node {
        name: name.to_owned(),
        ip: IpAddr::from([127, 0, 0, octet]),
        port: 10250,
        labels: labels(node_labels),
        created: SystemTime::now(),
        uid: format!("uid-{name}"),
        resource_version: 0,
    }
}

fn pod(
    ns: &str,
    name: &str,
    on: &str,
    pod_labels: &[(&str, &str)],
    phase: PodPhase,
) -> cluster::Pod {
    cluster::Pod {
        namespace: ns.to_owned(),
        name: name.to_owned(),
        node: on.to_owned(),
        labels: labels(pod_labels),
        containers: vec!["app".to_owned()],
        phase,
        created: SystemTime::now(),
        uid: format!("uid-{ns}-{name}"),
        resource_version: 0,
    }
}

struct Fixture {
    _dir: tempfile::TempDir,
    cluster: Arc<Cluster>,
    server: ApiServerHandle,
}

/// A stand-in over two nodes and four pods.
async fn fixture() -> Fixture {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let dir = tempfile::tempdir().expect("tempdir");
    let cluster = Cluster::new();
    cluster
        .add_node(node("node-1", 1, &[("zone", "a")]))
        .expect("node");
    cluster
        .add_node(node("node-2", 2, &[("zone", "b")]))
        .expect("node");
    let pods = [
        ("default", "web-1", "node-1", "web", PodPhase::Running),
        ("default", "web-2", "node-2", "web", PodPhase::Running),
        ("default", "db-1", "node-1", "db", PodPhase::Pending),
        ("other", "web-3", "node-2", "web", PodPhase::Running),
    ];
    for (ns, name, on, app, phase) in pods {
        cluster
            .add_pod(pod(ns, name, on, &[("app", app)], phase))
            .expect("pod");
    }
    let server = apiserver::start(ApiServerConfig::new(dir.path()), cluster.clone())
        .await
        .expect("start");
    Fixture {
        _dir: dir,
        cluster,
        server,
    }
}

async fn client_from(path: &std::path::Path) -> Client {
    let kubeconfig = Kubeconfig::read_from(path).expect("kubeconfig parses");
    let mut config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .expect("kubeconfig loads");
    // kube retries 503 with backoff; these tests look at the first answer.
    config.default_retry = false;
    Client::try_from(config).expect("client")
}

/// A client that trusts the stand-in but presents no credentials.
fn anonymous_client(server: &ApiServerHandle) -> Client {
    let mut config = Config::new(server.url().parse().expect("url"));
    let der = CertificateDer::from_pem_slice(server.ca_pem().as_bytes()).expect("ca");
    config.root_cert = Some(vec![der.to_vec()]);
    config.default_retry = false;
    Client::try_from(config).expect("client")
}

/// Sends a request and returns the status and the body parsed as JSON (Null if not JSON).
async fn call(
    client: &Client,
    method: &str,
    path: &str,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let bytes = body.map(|b| b.to_string().into_bytes()).unwrap_or_default();
    let request = Request::builder()
        .method(method)
        .uri(path)
        .header("content-type", "application/json")
        .body(kube::client::Body::from(bytes))
        .expect("request");
    let response = tokio::time::timeout(BOUND, client.send(request))
        .await
        .expect("answered in time")
        .expect("response");
    let status = response.status();
    let body = tokio::time::timeout(BOUND, response.into_body().collect())
        .await
        .expect("body in time")
        .expect("body")
        .to_bytes();
    (status, serde_json::from_slice(&body).unwrap_or(Value::Null))
}

fn names(list: &Value) -> Vec<String> {
    list["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|i| i["metadata"]["name"].as_str().expect("name").to_owned())
        .collect()
}

#[tokio::test]
async fn node_list_carries_addresses_port_capacity_and_a_resource_version() {
    let f = fixture().await;
    let client = client_from(&f.server.files().server_kubeconfig).await;
    let nodes: Api<Node> = Api::all(client);
    let list = nodes.list(&ListParams::default()).await.expect("list");
    assert_eq!(
        list.metadata.resource_version.as_deref(),
        Some(f.cluster.resource_version().to_string().as_str())
    );
    let names: Vec<_> = list
        .items
        .iter()
        .map(|n| n.metadata.name.clone().unwrap_or_default())
        .collect();
    assert_eq!(names, ["node-1", "node-2"]);
    let status = list.items[0].status.as_ref().expect("status");
    let addresses = status.addresses.as_ref().expect("addresses");
    assert_eq!(addresses[0].type_, "InternalIP");
    assert_eq!(addresses[0].address, "127.0.0.1");
    assert_eq!(addresses[1].type_, "Hostname");
    assert_eq!(
        status
            .daemon_endpoints
            .as_ref()
            .and_then(|d| d.kubelet_endpoint.as_ref())
            .map(|e| e.port),
        Some(10250)
    );
    assert!(status
        .allocatable
        .as_ref()
        .expect("allocatable")
        .contains_key("cpu"));
    assert!(status
        .capacity
        .as_ref()
        .expect("capacity")
        .contains_key("memory"));
    let one = nodes.get("node-2").await.expect("get");
    assert_eq!(one.metadata.labels.expect("labels")["zone"], "b");
    assert!(nodes.get("node-9").await.is_err());
}

#[tokio::test]
async fn selectors_filter_lists_and_bad_selectors_are_rejected() {
    let f = fixture().await;
    let client = client_from(&f.server.files().server_kubeconfig).await;
    let (status, all) = call(&client, "GET", "/api/v1/pods", None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(names(&all), ["db-1", "web-1", "web-2", "web-3"]);
    let cases = [
        (
            "/api/v1/pods?labelSelector=app%3Dweb",
            vec!["web-1", "web-2", "web-3"],
        ),
        (
            "/api/v1/pods?labelSelector=app%20notin%20(web)",
            vec!["db-1"],
        ),
        ("/api/v1/pods?labelSelector=app%21%3Dweb", vec!["db-1"]),
        (
            "/api/v1/pods?labelSelector=app%20in%20(db,web),app",
            vec!["db-1", "web-1", "web-2", "web-3"],
        ),
        ("/api/v1/pods?labelSelector=%21app", vec![]),
        (
            "/api/v1/pods?fieldSelector=spec.nodeName%3Dnode-1",
            vec!["db-1", "web-1"],
        ),
        (
            "/api/v1/pods?fieldSelector=status.phase%3DRunning",
            vec!["web-1", "web-2", "web-3"],
        ),
        (
            "/api/v1/pods?fieldSelector=status.phase%21%3DRunning",
            vec!["db-1"],
        ),
        (
            "/api/v1/pods?fieldSelector=metadata.namespace%3Dother",
            vec!["web-3"],
        ),
        (
            "/api/v1/namespaces/default/pods?labelSelector=app%3Dweb",
            vec!["web-1", "web-2"],
        ),
        (
            "/api/v1/namespaces/default/pods?fieldSelector=metadata.name%3Dweb-2",
            vec!["web-2"],
        ),
        ("/api/v1/nodes?labelSelector=zone%3Db", vec!["node-2"]),
        (
            "/api/v1/nodes?fieldSelector=metadata.name%3Dnode-1",
            vec!["node-1"],
        ),
    ];
    for (path, want) in cases {
        let (status, list) = call(&client, "GET", path, None).await;
        assert_eq!(status, StatusCode::OK, "{path}");
        assert_eq!(names(&list), want, "{path}");
    }
    let (status, body) = call(
        &client,
        "GET",
        "/api/v1/pods?fieldSelector=spec.foo%3Dx",
        None,
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["kind"], "Status");
    let (status, _) = call(
        &client,
        "GET",
        "/api/v1/pods?labelSelector=app%20in%20web",
        None,
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, pod) = call(&client, "GET", "/api/v1/namespaces/other/pods/web-3", None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(pod["spec"]["nodeName"], "node-2");
    assert_eq!(pod["spec"]["containers"][0]["name"], "app");
    assert_eq!(pod["status"]["phase"], "Running");
    let (status, missing) = call(
        &client,
        "GET",
        "/api/v1/namespaces/default/pods/web-3",
        None,
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(missing["reason"], "NotFound");
}

#[tokio::test]
async fn watch_resumes_from_a_resource_version_and_filters_by_selector() {
    let f = fixture().await;
    let client = client_from(&f.server.files().server_kubeconfig).await;
    let pods: Api<Pod> = Api::all(client);
    let list = pods
        .list(&ListParams::default().fields("status.phase=Running"))
        .await
        .expect("list");
    let rv = list.metadata.resource_version.expect("rv");
    // Changes after the list: one new Running pod, one Pending pod that becomes Running, and a
    // Running pod that finishes (leaves the selection).
    f.cluster
        .add_pod(pod("default", "web-4", "node-1", &[], PodPhase::Running))
        .expect("add");
    f.cluster
        .update_pod(pod("default", "db-1", "node-1", &[], PodPhase::Running))
        .expect("update");
    f.cluster
        .update_pod(pod("default", "web-1", "node-1", &[], PodPhase::Succeeded))
        .expect("update");
    f.cluster
        .add_pod(pod("default", "job-1", "node-1", &[], PodPhase::Pending))
        .expect("add");
    let params = WatchParams::default()
        .fields("status.phase=Running")
        .timeout(20);
    let mut stream = pods.watch(&params, &rv).await.expect("watch").boxed();
    let mut seen = Vec::new();
    while seen.len() < 3 {
        let event = tokio::time::timeout(BOUND, stream.try_next())
            .await
            .expect("event in time")
            .expect("event")
            .expect("stream open");
        let (kind, p) = match event {
            WatchEvent::Added(p) => ("ADDED", p),
            WatchEvent::Modified(p) => ("MODIFIED", p),
            WatchEvent::Deleted(p) => ("DELETED", p),
            WatchEvent::Bookmark(_) => continue,
            WatchEvent::Error(e) => panic!("watch error {e:?}"),
        };
        seen.push((kind, p.metadata.name.unwrap_or_default()));
    }
    assert_eq!(
        seen,
        [
            ("ADDED", "web-4".to_owned()),
            ("MODIFIED", "db-1".to_owned()),
            ("DELETED", "web-1".to_owned())
        ]
    );
    // A change after the watch started streams live.
    f.cluster.remove_pod("default", "web-2").expect("remove");
    let live = tokio::time::timeout(BOUND, stream.try_next())
        .await
        .expect("event in time")
        .expect("event")
        .expect("stream open");
    assert!(matches!(live, WatchEvent::Deleted(p) if p.metadata.name.as_deref() == Some("web-2")));
}

#[tokio::test]
async fn watch_from_an_expired_version_is_410_gone_and_a_timeout_ends_the_stream() {
    let f = fixture().await;
    let client = client_from(&f.server.files().server_kubeconfig).await;
    let old = f.cluster.resource_version();
    // Push the old version out of the retained change log.
    for i in 0..100_001u32 {
        let mut n = node("node-1", 1, &[]);
        n.labels.insert("gen".to_owned(), i.to_string());
        f.cluster.update_node(n).expect("update");
    }
    let (status, body) = call(
        &client,
        "GET",
        &format!("/api/v1/nodes?watch=true&resourceVersion={old}"),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::GONE);
    assert_eq!(body["kind"], "Status");
    assert_eq!(body["code"], 410);
    assert_eq!(body["reason"], "Expired");
    assert!(body["message"]
        .as_str()
        .unwrap_or("")
        .contains("too old resource version"));

    // From "0", the current objects arrive as ADDED and the stream ends at its timeout.
    let nodes: Api<Node> = Api::all(client);
    let params = WatchParams::default().timeout(1);
    let stream = nodes.watch(&params, "0").await.expect("watch");
    let events: Vec<_> = tokio::time::timeout(BOUND, stream.collect::<Vec<_>>())
        .await
        .expect("the watch ends by its timeout");
    let added: Vec<String> = events
        .into_iter()
        .filter_map(|e| match e {
            Ok(WatchEvent::Added(n)) => n.metadata.name,
            _ => None,
        })
        .collect();
    assert_eq!(added, ["node-1", "node-2"]);
}

#[tokio::test]
async fn a_kube_reflector_follows_churn_into_its_store() {
    use kube::runtime::{reflector, watcher};
    let f = fixture().await;
    let client = client_from(&f.server.files().server_kubeconfig).await;
    let pods: Api<Pod> = Api::all(client);
    let (reader, writer) = reflector::store();
    let config = watcher::Config::default().fields("spec.nodeName=node-2");
    let mut stream = reflector(writer, watcher(pods, config)).boxed();
    let store_names = || {
        let mut names: Vec<String> = reader
            .state()
            .iter()
            .map(|p| p.metadata.name.clone().unwrap_or_default())
            .collect();
        names.sort();
        names
    };
    tokio::time::timeout(BOUND, async {
        while let Some(event) = stream.try_next().await.expect("watch event") {
            if matches!(event, watcher::Event::InitDone) {
                break;
            }
        }
    })
    .await
    .expect("initial list in time");
    assert_eq!(store_names(), ["web-2", "web-3"]);

    f.cluster
        .add_pod(pod("x", "late", "node-2", &[], PodPhase::Running))
        .expect("add");
    f.cluster
        .add_pod(pod("x", "elsewhere", "node-1", &[], PodPhase::Running))
        .expect("add");
    tokio::time::timeout(BOUND, async {
        while store_names() != ["late", "web-2", "web-3"] {
            stream
                .try_next()
                .await
                .expect("watch event")
                .expect("stream open");
        }
    })
    .await
    .expect("the new pod on node-2 arrives, the one elsewhere does not");
    f.cluster.remove_node("node-2").expect("remove");
    tokio::time::timeout(BOUND, async {
        while !store_names().is_empty() {
            stream
                .try_next()
                .await
                .expect("watch event")
                .expect("stream open");
        }
    })
    .await
    .expect("the store empties once node-2 and its pods are gone");
}

#[tokio::test]
async fn token_and_access_reviews_answer_for_known_users() {
    let f = fixture().await;
    let client = client_from(&f.server.files().server_kubeconfig).await;
    let token = f
        .server
        .token(apiserver::METRICS_READER)
        .expect("token")
        .to_owned();
    let review = |token: &str| json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview", "spec": {"token": token}});
    let (status, known) = call(
        &client,
        "POST",
        "/apis/authentication.k8s.io/v1/tokenreviews",
        Some(review(&token)),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(known["status"]["authenticated"], true);
    assert_eq!(
        known["status"]["user"]["username"],
        apiserver::METRICS_READER
    );
    assert!(known["status"]["user"]["groups"]
        .as_array()
        .expect("groups")
        .contains(&json!("system:authenticated")));
    let (_, unknown) = call(
        &client,
        "POST",
        "/apis/authentication.k8s.io/v1/tokenreviews",
        Some(review("nope")),
    )
    .await;
    assert_eq!(unknown["status"]["authenticated"], false);

    let sar = |user: &str, groups: &[&str], verb: &str, group: &str, resource: &str| {
        json!({"apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview", "spec": {
            "user": user, "groups": groups,
            "resourceAttributes": {"verb": verb, "group": group, "version": "v1beta1", "resource": resource}}})
    };
    let cases = [
        (
            sar(
                apiserver::METRICS_READER,
                &[],
                "list",
                "metrics.k8s.io",
                "pods",
            ),
            true,
        ),
        (
            sar(
                apiserver::METRICS_READER,
                &[],
                "get",
                "metrics.k8s.io",
                "nodes",
            ),
            true,
        ),
        (
            sar(
                apiserver::DENIED_USER,
                &[],
                "list",
                "metrics.k8s.io",
                "pods",
            ),
            false,
        ),
        (
            sar(
                "someone",
                &["system:masters"],
                "list",
                "metrics.k8s.io",
                "nodes",
            ),
            true,
        ),
        (
            sar(
                "someone",
                &["system:authenticated"],
                "list",
                "metrics.k8s.io",
                "nodes",
            ),
            false,
        ),
        (
            json!({"spec": {"user": "someone", "groups": [], "nonResourceAttributes": {"path": "/healthz", "verb": "get"}}}),
            true,
        ),
    ];
    for (body, allowed) in cases {
        let (status, answer) = call(
            &client,
            "POST",
            "/apis/authorization.k8s.io/v1/subjectaccessreviews",
            Some(body.clone()),
        )
        .await;
        assert_eq!(status, StatusCode::CREATED);
        assert_eq!(answer["status"]["allowed"], allowed, "{body}");
    }

    // A user without the grant may not ask.
    let denied = client_from(&f.server.files().denied_kubeconfig).await;
    let (status, body) = call(
        &denied,
        "POST",
        "/apis/authentication.k8s.io/v1/tokenreviews",
        Some(review(&token)),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(body["reason"], "Forbidden");
}

#[tokio::test]
async fn authentication_configmap_names_the_front_proxy_ca_and_headers() {
    let f = fixture().await;
    let client = client_from(&f.server.files().server_kubeconfig).await;
    let configmaps: Api<ConfigMap> = Api::namespaced(client.clone(), "kube-system");
    let cm = configmaps
        .get("extension-apiserver-authentication")
        .await
        .expect("get");
    let data = cm.data.expect("data");
    assert_eq!(data["client-ca-file"], f.server.client_ca_pem());
    assert_eq!(
        data["requestheader-client-ca-file"],
        f.server.front_proxy_ca_pem()
    );
    let parsed =
        |key: &str| serde_json::from_str::<Vec<String>>(&data[key]).expect("JSON string array");
    assert_eq!(
        parsed("requestheader-allowed-names"),
        ["front-proxy-client"]
    );
    assert_eq!(parsed("requestheader-username-headers"), ["X-Remote-User"]);
    assert_eq!(parsed("requestheader-group-headers"), ["X-Remote-Group"]);
    assert_eq!(
        parsed("requestheader-extra-headers-prefix"),
        ["X-Remote-Extra-"]
    );
    let on_disk =
        std::fs::read_to_string(&f.server.files().front_proxy_ca).expect("front-proxy-ca.crt");
    assert_eq!(on_disk, f.server.front_proxy_ca_pem());

    let list = configmaps
        .list(&ListParams::default().fields("metadata.name=extension-apiserver-authentication"))
        .await
        .expect("list");
    assert_eq!(list.items.len(), 1);
    let none = configmaps
        .list(&ListParams::default().fields("metadata.name=other"))
        .await
        .expect("list");
    assert!(none.items.is_empty());
    let mut stream = configmaps
        .watch(
            &WatchParams::default()
                .fields("metadata.name=extension-apiserver-authentication")
                .timeout(5),
            "0",
        )
        .await
        .expect("watch")
        .boxed();
    let first = tokio::time::timeout(BOUND, stream.try_next())
        .await
        .expect("in time")
        .expect("event")
        .expect("open");
    assert!(
        matches!(first, WatchEvent::Added(cm) if cm.metadata.name.as_deref() == Some("extension-apiserver-authentication"))
    );
}

#[tokio::test]
async fn written_kubeconfigs_authenticate_and_anonymous_callers_get_401() {
    let f = fixture().await;
    let files = f.server.files().clone();
    for path in [
        &files.kubeconfig,
        &files.denied_kubeconfig,
        &files.server_kubeconfig,
        &files.admin_kubeconfig,
    ] {
        let client = client_from(path).await;
        let nodes: Api<Node> = Api::all(client);
        assert_eq!(
            nodes
                .list(&ListParams::default())
                .await
                .expect("list")
                .items
                .len(),
            2,
            "{path:?}"
        );
    }
    assert!(std::fs::read_to_string(&files.ca)
        .expect("ca.crt")
        .contains("BEGIN CERTIFICATE"));
    let anonymous = anonymous_client(&f.server);
    let (status, body) = call(&anonymous, "GET", "/api/v1/nodes", None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(body["code"], 401);
    let (status, _) = call(
        &anonymous,
        "GET",
        "/apis/metrics.k8s.io/v1beta1/nodes",
        None,
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, version) = call(&anonymous, "GET", "/version", None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(version["major"], "1");
    // A wrong token is refused, not downgraded to anonymous.
    let mut config = Config::new(f.server.url().parse().expect("url"));
    config.root_cert = Some(vec![CertificateDer::from_pem_slice(
        f.server.ca_pem().as_bytes(),
    )
    .expect("ca")
    .to_vec()]);
    config.auth_info.token = Some("wrong".to_owned().into());
    let wrong = Client::try_from(config).expect("client");
    let (status, _) = call(&wrong, "GET", "/version", None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn discovery_lists_core_resources_and_the_metrics_group() {
    let f = fixture().await;
    let client = client_from(&f.server.files().kubeconfig).await;
    let (_, api) = call(&client, "GET", "/api", None).await;
    assert_eq!(api["versions"][0], "v1");
    let (_, v1) = call(&client, "GET", "/api/v1", None).await;
    let resources: Vec<&str> = v1["resources"]
        .as_array()
        .expect("resources")
        .iter()
        .filter_map(|r| r["name"].as_str())
        .collect();
    assert!(resources.contains(&"nodes") && resources.contains(&"pods"));
    let (_, apis) = call(&client, "GET", "/apis", None).await;
    let groups: Vec<&str> = apis["groups"]
        .as_array()
        .expect("groups")
        .iter()
        .filter_map(|g| g["name"].as_str())
        .collect();
    assert!(groups.contains(&"metrics.k8s.io"));
    let (_, metrics) = call(&client, "GET", "/apis/metrics.k8s.io", None).await;
    assert_eq!(
        metrics["preferredVersion"]["groupVersion"],
        "metrics.k8s.io/v1beta1"
    );
    let (status, _) = call(&client, "GET", "/openapi/v2", None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn serving_negotiates_http2_by_alpn() {
    let f = fixture().await;
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(f.server.ca_pem().as_bytes()).expect("ca"))
        .expect("root");
    let mut config = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let tcp = tokio::net::TcpStream::connect(f.server.addr())
        .await
        .expect("connect");
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect("127.0.0.1".try_into().expect("name"), tcp)
        .await
        .expect("handshake verifies the serving certificate for 127.0.0.1");
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
}

// === aggregation ===

/// A metrics backend that requires a front-proxy client certificate, and echoes what it received.
async fn fake_backend(front_proxy_ca_pem: &str) -> (String, tokio::task::JoinHandle<()>) {
    let ca = Authority::new("backend-ca").expect("ca");
    let leaf = ca
        .issue(&LeafSpec::server(
            "backend",
            &["localhost"],
            &[IpAddr::from([127, 0, 0, 1])],
        ))
        .expect("leaf");
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(front_proxy_ca_pem.as_bytes()).expect("ca"))
        .expect("root");
    let verifier =
        rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
            .build()
            .expect("verifier");
    let mut config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_client_cert_verifier(verifier)
        .with_single_cert(
            vec![CertificateDer::from_pem_slice(leaf.cert_pem.as_bytes()).expect("cert")],
            PrivateKeyDer::from_pem_slice(leaf.key_pem.as_bytes()).expect("key"),
        )
        .expect("config");
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!(
        "https://127.0.0.1:{}",
        listener.local_addr().expect("addr").port()
    );
    let task = tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let cn = tls
                    .get_ref()
                    .1
                    .peer_certificates()
                    .and_then(|c| c.first())
                    .and_then(|c| {
                        let (_, cert) = x509_parser::parse_x509_certificate(c.as_ref()).ok()?;
                        let cn = cert
                            .subject()
                            .iter_common_name()
                            .next()?
                            .as_str()
                            .ok()?
                            .to_owned();
                        Some(cn)
                    })
                    .unwrap_or_default();
                let service = service_fn(move |req: Request<hyper::body::Incoming>| {
                    let cn = cn.clone();
                    async move { Ok::<_, std::convert::Infallible>(backend_answer(&cn, &req)) }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tls), service)
                    .await;
            });
        }
    });
    (url, task)
}

fn backend_answer(cn: &str, req: &Request<hyper::body::Incoming>) -> http::Response<Full<Bytes>> {
    let header = |name: &str| {
        req.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let user = header("x-remote-user").unwrap_or_default();
    let respond = |status: u16, body: Value| {
        http::Response::builder()
            .status(status)
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body.to_string())))
            .expect("response")
    };
    if user == apiserver::DENIED_USER {
        return respond(
            403,
            json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "Forbidden", "code": 403,
            "message": format!("nodes.metrics.k8s.io is forbidden: User \"{user}\" cannot list resource")}),
        );
    }
    match req.uri().path() {
        "/apis/metrics.k8s.io/v1beta1" => respond(
            200,
            json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": "metrics.k8s.io/v1beta1",
            "resources": [
                {"name": "nodes", "singularName": "", "namespaced": false, "kind": "NodeMetrics", "verbs": ["get", "list"]},
                {"name": "pods", "singularName": "", "namespaced": true, "kind": "PodMetrics", "verbs": ["get", "list"]}]}),
        ),
        "/apis/metrics.k8s.io/v1beta1/nodes" => respond(
            200,
            json!({"kind": "NodeMetricsList", "apiVersion": "metrics.k8s.io/v1beta1", "metadata": {},
            "items": [{"metadata": {"name": "node-1", "creationTimestamp": "2026-01-27T18:48:33Z"}, "timestamp": "2026-01-27T18:48:33Z",
                "window": "15s", "usage": {"cpu": "487558164n", "memory": "732212Ki"}}]}),
        ),
        _ => respond(
            200,
            json!({
                "cn": cn,
                "user": user,
                "groups": req.headers().get_all("x-remote-group").iter().filter_map(|v| v.to_str().ok()).collect::<Vec<_>>(),
                "authorization": header("authorization"),
                "path": req.uri().path_and_query().map(|p| p.as_str().to_owned()),
                "forged": header("x-remote-extra-forged"),
            }),
        ),
    }
}

#[tokio::test]
async fn metrics_requests_are_proxied_with_the_front_proxy_certificate_and_caller_identity() {
    let f = fixture().await;
    let reader = client_from(&f.server.files().kubeconfig).await;
    let (status, body) = call(
        &reader,
        "GET",
        "/apis/metrics.k8s.io/v1beta1/echo?labelSelector=a%3Db",
        None,
    )
    .await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "no backend yet");
    assert_eq!(body["reason"], "ServiceUnavailable");

    let (backend, task) = fake_backend(f.server.front_proxy_ca_pem()).await;
    f.server.set_aggregate_to(Some(backend));
    // A caller's attempt to forge identity headers is dropped.
    let request = Request::builder()
        .uri("/apis/metrics.k8s.io/v1beta1/echo?labelSelector=a%3Db")
        .header("x-remote-user", "mallory")
        .header("x-remote-extra-forged", "yes")
        .body(kube::client::Body::from(Vec::new()))
        .expect("request");
    let response = reader.send(request).await.expect("response");
    assert_eq!(response.status(), StatusCode::OK);
    let echo: Value = serde_json::from_slice(
        &response
            .into_body()
            .collect()
            .await
            .expect("body")
            .to_bytes(),
    )
    .expect("json");
    assert_eq!(echo["cn"], "front-proxy-client");
    assert_eq!(echo["user"], apiserver::METRICS_READER);
    assert!(echo["groups"]
        .as_array()
        .expect("groups")
        .contains(&json!("system:authenticated")));
    assert_eq!(
        echo["authorization"],
        Value::Null,
        "the caller's token is not forwarded"
    );
    assert_eq!(echo["forged"], Value::Null);
    assert_eq!(
        echo["path"],
        "/apis/metrics.k8s.io/v1beta1/echo?labelSelector=a%3Db"
    );

    // A certificate user is forwarded with its organisations as groups.
    let admin = client_from(&f.server.files().admin_kubeconfig).await;
    let (_, echo) = call(&admin, "GET", "/apis/metrics.k8s.io/v1beta1/echo", None).await;
    assert_eq!(echo["user"], apiserver::ADMIN_USER);
    assert!(echo["groups"]
        .as_array()
        .expect("groups")
        .contains(&json!("system:masters")));

    let denied = client_from(&f.server.files().denied_kubeconfig).await;
    let (status, body) = call(&denied, "GET", "/apis/metrics.k8s.io/v1beta1/nodes", None).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(body["reason"], "Forbidden");

    let (status, _) = call(
        &anonymous_client(&f.server),
        "GET",
        "/apis/metrics.k8s.io/v1beta1/nodes",
        None,
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    task.abort();
    let _ = task.await;
    f.server.set_aggregate_to(None);
    let (status, _) = call(&reader, "GET", "/apis/metrics.k8s.io/v1beta1/nodes", None).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
}

// === kubectl ===

const KUBECTL: &str = "/usr/lib/google-cloud-sdk/bin/kubectl.1.33";

async fn kubectl(
    kubeconfig: &std::path::Path,
    cache: &std::path::Path,
    args: &[&str],
) -> std::process::Output {
    let mut command = tokio::process::Command::new(KUBECTL);
    command
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .arg("--cache-dir")
        .arg(cache)
        .args(args)
        .kill_on_drop(true);
    tokio::time::timeout(Duration::from_secs(120), command.output())
        .await
        .expect("kubectl finishes")
        .expect("kubectl runs")
}

#[tokio::test]
async fn kubectl_gets_nodes_and_tops_them_through_the_aggregator() {
    if !std::path::Path::new(KUBECTL).exists() {
        eprintln!("kubectl 1.33 not installed; skipping");
        return;
    }
    let f = fixture().await;
    let cache = tempfile::tempdir().expect("cache dir");
    let files = f.server.files().clone();
    let out = kubectl(
        &files.kubeconfig,
        cache.path(),
        &["get", "nodes", "-o", "name"],
    )
    .await;
    assert!(
        out.status.success(),
        "get nodes: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "node/node-1\nnode/node-2\n"
    );
    // The Table form: the usual columns, namespaces from the row objects.
    let out = kubectl(
        &files.kubeconfig,
        cache.path(),
        &["get", "nodes", "-o", "wide"],
    )
    .await;
    assert!(
        out.status.success(),
        "get nodes: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let header: Vec<&str> = stdout
        .lines()
        .next()
        .unwrap_or("")
        .split_whitespace()
        .collect();
    assert_eq!(
        header,
        ["NAME", "STATUS", "ROLES", "AGE", "VERSION", "INTERNAL-IP"]
    );
    let row: Vec<&str> = stdout
        .lines()
        .nth(1)
        .unwrap_or("")
        .split_whitespace()
        .collect();
    assert_eq!(
        (row[0], row[1], row[5]),
        ("node-1", "Ready", "127.0.0.1"),
        "{stdout}"
    );
    let out = kubectl(&files.kubeconfig, cache.path(), &["get", "pods", "-A"]).await;
    assert!(
        out.status.success(),
        "get pods: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let rows: Vec<Vec<&str>> = stdout
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(rows[0][..4], ["NAMESPACE", "NAME", "READY", "STATUS"]);
    assert_eq!(
        rows[4][..4],
        ["other", "web-3", "1/1", "Running"],
        "{stdout}"
    );

    let (backend, task) = fake_backend(f.server.front_proxy_ca_pem()).await;
    f.server.set_aggregate_to(Some(backend));
    let out = kubectl(
        &files.kubeconfig,
        cache.path(),
        &["top", "nodes", "--no-headers"],
    )
    .await;
    assert!(
        out.status.success(),
        "top nodes: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.starts_with("node-1"), "{stdout}");
    assert!(stdout.contains("488m"), "{stdout}");
    let out = kubectl(&files.denied_kubeconfig, cache.path(), &["top", "nodes"]).await;
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("forbidden"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    task.abort();
}

#[tokio::test]
async fn shutdown_ends_open_watches() {
    let f = fixture().await;
    let client = client_from(&f.server.files().server_kubeconfig).await;
    let nodes: Api<Node> = Api::all(client);
    let rv = f.cluster.resource_version().to_string();
    let stream = nodes
        .watch(&WatchParams::default().timeout(3600), &rv)
        .await
        .expect("watch");
    let ended = tokio::spawn(async move { stream.collect::<Vec<_>>().await });
    f.server.shutdown().await;
    tokio::time::timeout(BOUND, ended)
        .await
        .expect("the watch ends with the server")
        .expect("join");
}

#[tokio::test]
async fn a_watch_that_falls_behind_the_broadcast_ends_instead_of_skipping_events() {
    let f = fixture().await;
    let client = client_from(&f.server.files().server_kubeconfig).await;
    let nodes: Api<Node> = Api::all(client);
    let rv = f.cluster.resource_version().to_string();
    let mut stream = nodes
        .watch(&WatchParams::default().timeout(3600), &rv)
        .await
        .expect("watch")
        .boxed();
    // Far more changes than the broadcast holds, while nobody reads the stream.
    let changes = 100_000u32;
    for i in 0..changes {
        let mut n = node("node-1", 1, &[]);
        n.labels.insert("gen".to_owned(), i.to_string());
        f.cluster.update_node(n).expect("update");
    }
    let mut received = 0u32;
    let mut last_gen = None;
    tokio::time::timeout(BOUND, async {
        while let Some(event) = stream.try_next().await.expect("event") {
            if let WatchEvent::Modified(n) = event {
                let generation: u32 = n.metadata.labels.expect("labels")["gen"]
                    .parse()
                    .expect("gen");
                // Whatever arrives arrives in order and without gaps.
                assert_eq!(generation, last_gen.map_or(0, |g: u32| g + 1));
                last_gen = Some(generation);
                received += 1;
            }
        }
    })
    .await
    .expect("the lagging watch ends by itself");
    assert!(received < changes, "received {received} of {changes}");
}

#[tokio::test]
async fn a_watch_on_one_node_hears_nothing_about_the_others() {
    let f = fixture().await;
    let client = client_from(&f.server.files().server_kubeconfig).await;
    let nodes: Api<Node> = Api::all(client);
    let rv = f.cluster.resource_version().to_string();
    let mut stream = nodes
        .watch(
            &WatchParams::default()
                .fields("metadata.name=node-1")
                .timeout(20),
            &rv,
        )
        .await
        .expect("watch")
        .boxed();
    f.cluster
        .update_node(node("node-2", 2, &[("zone", "c")]))
        .expect("update");
    f.cluster
        .update_node(node("node-1", 1, &[("zone", "c")]))
        .expect("update");
    let first = tokio::time::timeout(BOUND, stream.try_next())
        .await
        .expect("event in time")
        .expect("event")
        .expect("stream open");
    assert!(
        matches!(&first, WatchEvent::Modified(n) if n.metadata.name.as_deref() == Some("node-1")),
        "{first:?}"
    );
}
