//! Routing and the request handlers of the metrics API, discovery, health and self-metrics.
//!
//! A handler loads the store [`Snapshot`] and the discovery [`ClusterView`] once, each a lock-free
//! pointer load, and joins them: the view says which objects exist, are running and what labels they
//! carry; the snapshot says what they use. Nothing here waits on a lock or a channel the scrape side
//! holds, so a slow kubelet never delays a read.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::header::{HeaderValue, CONTENT_TYPE};
use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;

use crate::api::auth::{Auth, AuthError};
use crate::api::discovery_docs;
use crate::api::health::{self, Endpoint, HealthConfig, HealthInputs};
use crate::api::render;
use crate::api::selector::{FieldSelector, LabelSelector, SelectorError};
use crate::discovery::{ClusterView, DiscoveryHandle};
use crate::model::{Labels, UnixNanos};
use crate::store::{Snapshot, Store};
use crate::telemetry::Telemetry;

/// The response body type every handler returns.
pub type Body = Full<Bytes>;

const JSON: &str = "application/json";
const TEXT: &str = "text/plain; charset=utf-8";
const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

const GROUP: &str = "metrics.k8s.io";
const GROUP_VERSION_PREFIX: &str = "/apis/metrics.k8s.io/v1beta1/";

/// Where the API reads the discovery caches from. [`DiscoveryHandle`] is the real source; tests
/// supply fixed views.
pub trait ClusterSource: Send + Sync + 'static {
    /// The current view; must not block.
    fn view(&self) -> Arc<dyn ClusterLookup>;
    /// Both caches have completed their first list.
    fn is_synced(&self) -> bool;
}

/// The two questions a handler asks of one view of the cluster.
pub trait ClusterLookup: Send + Sync {
    /// A node's labels, if the node is known.
    fn node_labels(&self, name: &str) -> Option<&Labels>;
    /// A pod's labels, if the pod is known and Running (only Running pods are served).
    fn running_pod_labels(&self, namespace: &str, name: &str) -> Option<&Labels>;
}

impl ClusterSource for DiscoveryHandle {
    fn view(&self) -> Arc<dyn ClusterLookup> {
        DiscoveryHandle::view(self)
    }
    fn is_synced(&self) -> bool {
        DiscoveryHandle::is_synced(self)
    }
}

impl ClusterLookup for ClusterView {
    fn node_labels(&self, name: &str) -> Option<&Labels> {
        self.node(name).map(|info| &info.labels)
    }
    fn running_pod_labels(&self, namespace: &str, name: &str) -> Option<&Labels> {
        self.pod(namespace, name)
            .filter(|info| info.running)
            .map(|info| &info.labels)
    }
}

/// What every handler shares.
pub struct Router {
    store: Arc<Store>,
    cluster: Arc<dyn ClusterSource>,
    telemetry: Arc<Telemetry>,
    /// `--node-selector`, ANDed into every node query (discovery filters too; this keeps the API
    /// right even if a node's labels changed after it was listed).
    node_selector: Option<LabelSelector>,
    auth: Auth,
    health: HealthConfig,
    /// Set when shutdown starts, so `/readyz` fails while in-flight requests drain.
    shutting_down: Arc<AtomicBool>,
}

/// A recognised metrics path.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Route<'a> {
    ApiGroupList,
    ApiGroup,
    ApiResourceList,
    Version,
    Metrics,
    Health(Endpoint, Option<&'a str>),
    Nodes,
    Node(String),
    Pods(Option<String>),
    Pod(String, String),
}

/// Why a request could not be routed.
#[derive(Clone, Debug, PartialEq, Eq)]
enum RouteError {
    NotFound,
}

impl Router {
    pub fn new(
        store: Arc<Store>,
        cluster: Arc<dyn ClusterSource>,
        telemetry: Arc<Telemetry>,
        node_selector: Option<LabelSelector>,
        auth: Auth,
        health: HealthConfig,
    ) -> Self {
        Router {
            store,
            cluster,
            telemetry,
            node_selector: node_selector.filter(|s| !s.is_empty()),
            auth,
            health,
            shutting_down: Arc::new(AtomicBool::new(false)),
        }
    }

    /// The flag shutdown sets; `/readyz` fails from then on.
    pub fn shutting_down(&self) -> Arc<AtomicBool> {
        Arc::clone(&self.shutting_down)
    }

    /// Serves one request: authentication and authorization, then the route.
    pub async fn handle<B>(&self, request: Request<B>) -> Response<Body> {
        let (parts, _body) = request.into_parts();
        if let Err(refused) = self.auth.check(&parts).await {
            let (code, reason) = match refused {
                AuthError::Unauthenticated => (401, "Unauthorized"),
                AuthError::Forbidden(_) => (403, "Forbidden"),
                AuthError::Internal(_) => (500, "InternalError"),
            };
            tracing::debug!(path = %parts.uri.path(), error = %refused, "Request refused.");
            return status(code, reason, &refused.to_string());
        }
        self.respond(
            &parts.method,
            parts.uri.path(),
            parts.uri.query().unwrap_or(""),
            now(),
        )
    }

    /// Routes an authorized request. `now` is the request time, unix nanoseconds.
    pub fn respond(
        &self,
        method: &Method,
        path: &str,
        query: &str,
        now: UnixNanos,
    ) -> Response<Body> {
        let route = match route(path) {
            Ok(route) => route,
            Err(RouteError::NotFound) => {
                return status(
                    404,
                    "NotFound",
                    "the server could not find the requested resource",
                )
            }
        };
        if method != Method::GET {
            return status(
                405,
                "MethodNotAllowed",
                "the server does not allow this method on the requested resource",
            );
        }
        match route {
            Route::ApiGroupList => json(discovery_docs::API_GROUP_LIST.into()),
            Route::ApiGroup => json(discovery_docs::API_GROUP.into()),
            Route::ApiResourceList => json(discovery_docs::API_RESOURCE_LIST.into()),
            Route::Version => json(discovery_docs::version().into()),
            Route::Metrics => self.metrics(),
            Route::Health(endpoint, check) => self.health(endpoint, check, query, now),
            Route::Nodes => self.list_nodes(query, now),
            Route::Node(name) => self.get_node(&name, now),
            Route::Pods(namespace) => self.list_pods(namespace.as_deref(), query, now),
            Route::Pod(namespace, name) => self.get_pod(&namespace, &name, now),
        }
    }

    fn list_nodes(&self, query: &str, now: UnixNanos) -> Response<Body> {
        let (labels, fields) = match selectors(query) {
            Ok(selectors) => selectors,
            Err(e) => return status(400, "BadRequest", &e.to_string()),
        };
        let snapshot = self.store.snapshot();
        let view = self.cluster.view();
        let mut out = Vec::with_capacity(256 * 16);
        let items = snapshot.nodes().filter_map(|metrics| {
            let node_labels = view.node_labels(&metrics.name)?;
            let selected = self.node_selected(node_labels)
                && labels.as_ref().is_none_or(|s| s.matches(node_labels))
                && fields
                    .as_ref()
                    .is_none_or(|s| s.matches(None, &metrics.name));
            if !selected {
                return None;
            }
            self.freshness(now, metrics.timestamp);
            Some((metrics, node_labels))
        });
        render::node_metrics_list(&mut out, items, now);
        json(out.into())
    }

    fn get_node(&self, name: &str, now: UnixNanos) -> Response<Body> {
        let snapshot = self.store.snapshot();
        let view = self.cluster.view();
        // As upstream: an unknown (or unselected) node is `node "x" not found`; a known node
        // without metrics is `nodemetrics.metrics.k8s.io "x" not found`.
        let Some(node_labels) = view
            .node_labels(name)
            .filter(|labels| self.node_selected(labels))
        else {
            return not_found("", "node", name);
        };
        let Some(metrics) = snapshot.node(name) else {
            return not_found(GROUP, "nodemetrics", name);
        };
        self.freshness(now, metrics.timestamp);
        let mut out = Vec::with_capacity(512);
        render::node_metrics(&mut out, metrics, node_labels, now);
        json(out.into())
    }

    fn list_pods(&self, namespace: Option<&str>, query: &str, now: UnixNanos) -> Response<Body> {
        let (labels, fields) = match selectors(query) {
            Ok(selectors) => selectors,
            Err(e) => return status(400, "BadRequest", &e.to_string()),
        };
        let snapshot: Arc<Snapshot> = self.store.snapshot();
        let view = self.cluster.view();
        // Items come as JSON parts rendered once per scrape (see `Snapshot::pods_json`); sized
        // for every pod of the snapshot (or a namespace's share) so the buffer rarely grows.
        const ITEM_BYTES: usize = 512;
        let expected = match namespace {
            Some(_) => 64,
            None => snapshot.pod_count(),
        };
        let mut out = Vec::with_capacity(expected.saturating_mul(ITEM_BYTES).max(4096));
        let pods: Box<dyn Iterator<Item = _>> = match namespace {
            Some(ns) => Box::new(snapshot.pods_in_namespace_json(ns)),
            None => Box::new(snapshot.pods_json()),
        };
        // One histogram update per request, with the same result as one per item.
        let mut freshness = self.telemetry.freshness_batch();
        let items = pods.filter_map(|(metrics, parts)| {
            let pod_labels = view.running_pod_labels(&metrics.namespace, &metrics.name)?;
            let selected = labels.as_ref().is_none_or(|s| s.matches(pod_labels))
                && fields
                    .as_ref()
                    .is_none_or(|s| s.matches(Some(&metrics.namespace), &metrics.name));
            if !selected {
                return None;
            }
            // As `freshness` computes it.
            freshness.observe(now.saturating_sub(metrics.timestamp).max(0) as f64 / 1e9);
            Some((parts, pod_labels))
        });
        render::pod_metrics_list_from_parts(&mut out, items, now);
        self.telemetry.record_freshness(&freshness);
        json(out.into())
    }

    fn get_pod(&self, namespace: &str, name: &str, now: UnixNanos) -> Response<Body> {
        let snapshot = self.store.snapshot();
        let view = self.cluster.view();
        // Upstream's pod lister only holds running pods, so a pod in another phase is unknown.
        let Some(pod_labels) = view.running_pod_labels(namespace, name) else {
            return not_found("", "pod", name);
        };
        let Some(metrics) = snapshot.pod(namespace, name) else {
            // Upstream names a pod without metrics by `namespace/name`.
            return not_found(GROUP, "podmetrics", &format!("{namespace}/{name}"));
        };
        self.freshness(now, metrics.timestamp);
        let mut out = Vec::with_capacity(1024);
        render::pod_metrics(&mut out, metrics, pod_labels, now);
        json(out.into())
    }

    fn health(
        &self,
        endpoint: Endpoint,
        check: Option<&str>,
        query: &str,
        now: UnixNanos,
    ) -> Response<Body> {
        let inputs = HealthInputs {
            now,
            last_collection: self.telemetry.last_collection(),
            storage_ready: self.store.snapshot().is_ready(),
            informers_synced: self.cluster.is_synced(),
            shutting_down: self.shutting_down.load(Ordering::Relaxed),
        };
        let verbose = query_values(query, "verbose").next().is_some();
        let exclude: Vec<String> = query_values(query, "exclude").flatten().collect();
        let answer = health::respond(endpoint, check, verbose, &exclude, &self.health, &inputs);
        if answer.code != 200 {
            let failed: Vec<&str> = answer
                .body
                .lines()
                .filter(|line| line.starts_with("[-]") || line.starts_with("internal"))
                .collect();
            tracing::info!(endpoint = endpoint.name(), failed = %failed.join("; "), "Health check failed.");
        }
        response(answer.code, TEXT, answer.body.into())
    }

    fn metrics(&self) -> Response<Body> {
        let snapshot = self.store.snapshot();
        let nodes = snapshot.nodes().count() as u64;
        let containers = snapshot.pods().map(|pod| pod.containers.len() as u64).sum();
        self.telemetry.storage_points(nodes, containers);
        response(200, OPENMETRICS, self.telemetry.encode().into())
    }

    fn node_selected(&self, labels: &Labels) -> bool {
        self.node_selector
            .as_ref()
            .is_none_or(|s| s.matches(labels))
    }

    fn freshness(&self, now: UnixNanos, timestamp: UnixNanos) {
        let age = now.saturating_sub(timestamp).max(0) as f64 / 1e9;
        self.telemetry.metric_freshness(age);
    }
}

/// The current time, unix nanoseconds.
pub fn now() -> UnixNanos {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

fn route(path: &str) -> Result<Route<'_>, RouteError> {
    match path {
        "/apis" => return Ok(Route::ApiGroupList),
        "/apis/metrics.k8s.io" => return Ok(Route::ApiGroup),
        "/apis/metrics.k8s.io/v1beta1" => return Ok(Route::ApiResourceList),
        "/version" => return Ok(Route::Version),
        "/metrics" => return Ok(Route::Metrics),
        _ => {}
    }
    if let Some((endpoint, check)) = Endpoint::parse(path) {
        return Ok(Route::Health(endpoint, check));
    }
    let rest = path
        .strip_prefix(GROUP_VERSION_PREFIX)
        .ok_or(RouteError::NotFound)?;
    let segments: Vec<&str> = rest.split('/').collect();
    let name = |segment: &str| -> Result<String, RouteError> {
        let decoded = percent_encoding::percent_decode_str(segment)
            .decode_utf8()
            .map_err(|_| RouteError::NotFound)?;
        if decoded.is_empty() {
            Err(RouteError::NotFound)
        } else {
            Ok(decoded.into_owned())
        }
    };
    match segments.as_slice() {
        ["nodes"] => Ok(Route::Nodes),
        ["nodes", node] => Ok(Route::Node(name(node)?)),
        ["pods"] => Ok(Route::Pods(None)),
        ["namespaces", ns, "pods"] => Ok(Route::Pods(Some(name(ns)?))),
        ["namespaces", ns, "pods", pod] => Ok(Route::Pod(name(ns)?, name(pod)?)),
        _ => Err(RouteError::NotFound),
    }
}

/// The `labelSelector` and `fieldSelector` query parameters, parsed; `None` where absent or empty.
fn selectors(query: &str) -> Result<(Option<LabelSelector>, Option<FieldSelector>), SelectorError> {
    // The first occurrence counts, as with Go's `url.Values.Get`; an empty value selects everything.
    let param = |key: &str| -> Result<Option<String>, SelectorError> {
        let Some(raw) = raw_values(query, key).next() else {
            return Ok(None);
        };
        let value = decode(raw).ok_or_else(|| SelectorError {
            input: raw.to_owned(),
            reason: "query parameter is not valid UTF-8".to_owned(),
        })?;
        Ok(Some(value).filter(|v| !v.trim().is_empty()))
    };
    let labels = param("labelSelector")?
        .map(|input| LabelSelector::parse(&input))
        .transpose()?;
    let fields = param("fieldSelector")?
        .map(|input| FieldSelector::parse(&input))
        .transpose()?;
    Ok((labels, fields))
}

/// Raw (still encoded) values of `key`, in order.
fn raw_values<'q>(query: &'q str, key: &'q str) -> impl Iterator<Item = &'q str> + 'q {
    query.split('&').filter_map(move |pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (decode(k).as_deref() == Some(key)).then_some(v)
    })
}

/// Decoded values of `key`, in order; `None` for a value that is not valid UTF-8 once decoded.
fn query_values<'q>(query: &'q str, key: &'q str) -> impl Iterator<Item = Option<String>> + 'q {
    raw_values(query, key).map(decode)
}

/// Decodes one query component as Go's `url.ParseQuery` does: `+` is a space, then percent-escapes.
fn decode(raw: &str) -> Option<String> {
    let spaced = raw.replace('+', " ");
    percent_encoding::percent_decode_str(&spaced)
        .decode_utf8()
        .ok()
        .map(|s| s.into_owned())
}

fn response(code: u16, content_type: &'static str, body: Bytes) -> Response<Body> {
    let mut response = Response::new(Full::new(body));
    *response.status_mut() =
        StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

/// The `404` for a missing object, as upstream words it.
fn not_found(group: &str, resource: &str, name: &str) -> Response<Body> {
    let mut out = Vec::with_capacity(256);
    render::status_not_found(&mut out, group, resource, name);
    response(404, JSON, out.into())
}

fn json(body: Bytes) -> Response<Body> {
    response(200, JSON, body)
}

/// A Kubernetes `Status` failure response.
fn status(code: u16, reason: &str, message: &str) -> Response<Body> {
    let mut out = Vec::with_capacity(160);
    render::status(&mut out, code, reason, message);
    response(code, JSON, out.into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::borrow::Cow;
    use std::collections::BTreeMap;
    use std::time::Duration;

    use http_body_util::BodyExt;

    use crate::model::{ContainerScrape, MetricsPoint, Name, NodeScrape, PodScrape};
    use crate::store::StoreConfig;

    const SECOND: i64 = 1_000_000_000;
    /// A sample time in 2026, so rendered timestamps look real.
    const T0: i64 = 1_780_000_000 * SECOND;

    /// A fixed view of the cluster.
    #[derive(Default)]
    struct Fixture {
        nodes: BTreeMap<String, Labels>,
        /// (labels, running) by (namespace, name).
        pods: BTreeMap<(String, String), (Labels, bool)>,
        synced: bool,
    }

    impl ClusterLookup for Fixture {
        fn node_labels(&self, name: &str) -> Option<&Labels> {
            self.nodes.get(name)
        }
        fn running_pod_labels(&self, namespace: &str, name: &str) -> Option<&Labels> {
            self.pods
                .get(&(namespace.to_owned(), name.to_owned()))
                .filter(|(_, running)| *running)
                .map(|(labels, _)| labels)
        }
    }

    struct FixedSource(Arc<Fixture>);

    impl ClusterSource for FixedSource {
        fn view(&self) -> Arc<dyn ClusterLookup> {
            Arc::clone(&self.0) as Arc<dyn ClusterLookup>
        }
        fn is_synced(&self) -> bool {
            self.0.synced
        }
    }

    fn scrape(at: i64, cpu_seconds: u64, pods: &[(&str, &str)]) -> NodeScrape<'static> {
        NodeScrape {
            node: Some(MetricsPoint {
                start_time: 0,
                timestamp: at,
                cumulative_cpu_used: cpu_seconds * 1_000_000_000,
                memory_usage: 1 << 30,
            }),
            pods: pods
                .iter()
                .map(|(namespace, name)| PodScrape {
                    namespace: Cow::Owned((*namespace).to_owned()),
                    name: Cow::Owned((*name).to_owned()),
                    containers: vec![ContainerScrape {
                        name: Cow::Borrowed("app"),
                        point: MetricsPoint {
                            start_time: T0 - 3600 * SECOND,
                            timestamp: at,
                            cumulative_cpu_used: cpu_seconds * 100_000_000,
                            memory_usage: 64 << 20,
                        },
                    }],
                })
                .collect(),
        }
    }

    /// Two scrapes 10 s apart of each node, so every node and pod has a rate.
    fn store_with(nodes: &[(&str, &[(&str, &str)])]) -> Arc<Store> {
        let store = Arc::new(Store::new(StoreConfig::from_resolution(
            Duration::from_secs(10),
        )));
        for (node, pods) in nodes {
            let name = Name::from(*node);
            store.write_node(&name, &scrape(T0, 100, pods), T0);
            store.write_node(
                &name,
                &scrape(T0 + 10 * SECOND, 110, pods),
                T0 + 10 * SECOND,
            );
        }
        store
    }

    fn labels(pairs: &[(&str, &str)]) -> Labels {
        Labels::from_pairs(pairs.iter().copied())
    }

    struct Harness {
        router: Router,
        telemetry: Arc<Telemetry>,
    }

    fn harness(store: Arc<Store>, fixture: Fixture, node_selector: Option<&str>) -> Harness {
        let telemetry = Arc::new(Telemetry::new());
        let router = Router::new(
            store,
            Arc::new(FixedSource(Arc::new(fixture))),
            Arc::clone(&telemetry),
            node_selector.map(|s| LabelSelector::parse(s).unwrap()),
            Auth::default(),
            HealthConfig {
                resolution: Duration::from_secs(10),
                startup_grace: Duration::from_secs(20),
                started: T0,
            },
        );
        Harness { router, telemetry }
    }

    fn body_of(response: Response<Body>) -> (u16, String) {
        let code = response.status().as_u16();
        let bytes = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(response.into_body().collect())
            .unwrap()
            .to_bytes();
        (code, String::from_utf8(bytes.to_vec()).unwrap())
    }

    impl Harness {
        fn get(&self, path_and_query: &str) -> (u16, String) {
            let (path, query) = path_and_query
                .split_once('?')
                .unwrap_or((path_and_query, ""));
            body_of(
                self.router
                    .respond(&Method::GET, path, query, T0 + 12 * SECOND),
            )
        }

        fn get_json(&self, path_and_query: &str) -> (u16, serde_json::Value) {
            let (code, body) = self.get(path_and_query);
            let value = serde_json::from_str(&body)
                .unwrap_or_else(|e| panic!("invalid JSON ({e}) for {path_and_query}: {body}"));
            (code, value)
        }
    }

    fn names(list: &serde_json::Value) -> Vec<String> {
        list["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|item| match item["metadata"]["namespace"].as_str() {
                Some(ns) => format!("{ns}/{}", item["metadata"]["name"].as_str().unwrap()),
                None => item["metadata"]["name"].as_str().unwrap().to_owned(),
            })
            .collect()
    }

    fn cluster() -> (Arc<Store>, Fixture) {
        let store = store_with(&[
            ("node-b", &[("web", "front-1"), ("kube-system", "dns-1")]),
            ("node-a", &[("web", "back-1"), ("web", "pending-1")]),
            ("node-gone", &[("web", "orphan-1")]),
        ]);
        let mut fixture = Fixture {
            synced: true,
            ..Fixture::default()
        };
        fixture.nodes.insert(
            "node-a".into(),
            labels(&[("role", "worker"), ("zone", "a")]),
        );
        fixture
            .nodes
            .insert("node-b".into(), labels(&[("role", "infra")]));
        for (ns, name, app, running) in [
            ("web", "front-1", "front", true),
            ("web", "back-1", "back", true),
            ("web", "pending-1", "back", false),
            ("kube-system", "dns-1", "dns", true),
        ] {
            fixture
                .pods
                .insert((ns.into(), name.into()), (labels(&[("app", app)]), running));
        }
        (store, fixture)
    }

    #[test]
    fn metrics_paths_route_to_their_resources() {
        assert_eq!(
            route("/apis/metrics.k8s.io/v1beta1/nodes"),
            Ok(Route::Nodes)
        );
        assert_eq!(
            route("/apis/metrics.k8s.io/v1beta1/nodes/node-1"),
            Ok(Route::Node("node-1".into()))
        );
        assert_eq!(
            route("/apis/metrics.k8s.io/v1beta1/pods"),
            Ok(Route::Pods(None))
        );
        assert_eq!(
            route("/apis/metrics.k8s.io/v1beta1/namespaces/kube-system/pods"),
            Ok(Route::Pods(Some("kube-system".into())))
        );
        assert_eq!(
            route("/apis/metrics.k8s.io/v1beta1/namespaces/kube-system/pods/coredns-1"),
            Ok(Route::Pod("kube-system".into(), "coredns-1".into()))
        );
        assert_eq!(route("/apis"), Ok(Route::ApiGroupList));
        assert_eq!(route("/apis/metrics.k8s.io"), Ok(Route::ApiGroup));
        assert_eq!(
            route("/apis/metrics.k8s.io/v1beta1"),
            Ok(Route::ApiResourceList)
        );
        assert_eq!(route("/readyz"), Ok(Route::Health(Endpoint::Readyz, None)));
    }

    #[test]
    fn unknown_paths_do_not_route() {
        for path in [
            "/",
            "/api",
            "/apis/metrics.k8s.io/v1beta1/",
            "/apis/metrics.k8s.io/v1beta1/nodes/",
            "/apis/metrics.k8s.io/v1beta1/nodes/a/b",
            "/apis/metrics.k8s.io/v1beta1/namespaces/ns",
            "/apis/metrics.k8s.io/v1beta1/namespaces//pods",
            "/apis/metrics.k8s.io/v1beta1/services",
            "/apis/metrics.k8s.io/v1/nodes",
        ] {
            assert_eq!(route(path), Err(RouteError::NotFound), "{path}");
        }
    }

    #[test]
    fn path_names_are_percent_decoded() {
        assert_eq!(
            route("/apis/metrics.k8s.io/v1beta1/nodes/node%2Da"),
            Ok(Route::Node("node-a".into()))
        );
    }

    #[test]
    fn query_values_decode_plus_and_percent_escapes() {
        let query = "labelSelector=app%3Dweb%2Ctier+in+(a%2Cb)&verbose&x=1";
        assert_eq!(
            query_values(query, "labelSelector").collect::<Vec<_>>(),
            vec![Some("app=web,tier in (a,b)".to_owned())]
        );
        assert_eq!(
            query_values(query, "verbose").collect::<Vec<_>>(),
            vec![Some(String::new())]
        );
        assert_eq!(query_values(query, "missing").count(), 0);
        assert_eq!(query_values("a=%FF", "a").collect::<Vec<_>>(), vec![None]);
    }

    #[test]
    fn node_list_is_sorted_by_name_and_carries_discovery_labels() {
        let (store, fixture) = cluster();
        let h = harness(store, fixture, None);
        let (code, list) = h.get_json("/apis/metrics.k8s.io/v1beta1/nodes");
        assert_eq!(code, 200);
        assert_eq!(list["kind"], "NodeMetricsList");
        // node-gone has metrics but discovery no longer knows it.
        assert_eq!(names(&list), ["node-a", "node-b"]);
        assert_eq!(list["items"][0]["metadata"]["labels"]["zone"], "a");
        // 10 core-seconds over 10 s.
        assert_eq!(list["items"][0]["usage"]["cpu"], "1");
        assert_eq!(list["items"][0]["usage"]["memory"], "1Gi");
    }

    #[test]
    fn label_and_field_selectors_filter_nodes_and_the_node_selector_is_anded() {
        let (store, fixture) = cluster();
        let h = harness(store, fixture, Some("role in (worker,infra)"));
        let (_, list) =
            h.get_json("/apis/metrics.k8s.io/v1beta1/nodes?labelSelector=role%3Dworker");
        assert_eq!(names(&list), ["node-a"]);
        let (_, list) =
            h.get_json("/apis/metrics.k8s.io/v1beta1/nodes?fieldSelector=metadata.name%3Dnode-b");
        assert_eq!(names(&list), ["node-b"]);

        let (store, fixture) = cluster();
        let h = harness(store, fixture, Some("role=worker"));
        let (_, list) = h.get_json("/apis/metrics.k8s.io/v1beta1/nodes");
        assert_eq!(names(&list), ["node-a"]);
        let (code, status) = h.get_json("/apis/metrics.k8s.io/v1beta1/nodes/node-b");
        assert_eq!(code, 404);
        assert_eq!(status["reason"], "NotFound");
    }

    #[test]
    fn a_malformed_selector_is_a_bad_request_status() {
        let (store, fixture) = cluster();
        let h = harness(store, fixture, None);
        for path in [
            "/apis/metrics.k8s.io/v1beta1/nodes?labelSelector=a%20in%20(b",
            "/apis/metrics.k8s.io/v1beta1/pods?fieldSelector=spec.nodeName%3Dx",
            "/apis/metrics.k8s.io/v1beta1/pods?labelSelector=%FF",
        ] {
            let (code, status) = h.get_json(path);
            assert_eq!(code, 400, "{path}");
            assert_eq!(status["kind"], "Status");
            assert_eq!(status["reason"], "BadRequest");
            assert_eq!(status["code"], 400);
        }
    }

    #[test]
    fn single_node_get_and_its_not_found_cases() {
        let (store, mut fixture) = cluster();
        fixture.nodes.insert("node-new".into(), Labels::default());
        let h = harness(store, fixture, None);
        let (code, node) = h.get_json("/apis/metrics.k8s.io/v1beta1/nodes/node-b");
        assert_eq!(code, 200);
        assert_eq!(node["kind"], "NodeMetrics");
        assert_eq!(node["metadata"]["name"], "node-b");
        assert_eq!(node["window"], "10s");

        let (code, status) = h.get_json("/apis/metrics.k8s.io/v1beta1/nodes/node-new");
        assert_eq!(code, 404);
        assert!(status["message"]
            .as_str()
            .unwrap()
            .contains("nodemetrics.metrics.k8s.io"));
        let (code, status) = h.get_json("/apis/metrics.k8s.io/v1beta1/nodes/node-gone");
        assert_eq!(code, 404);
        assert!(status["message"].as_str().unwrap().contains("node-gone"));
    }

    #[test]
    fn pod_lists_show_only_running_known_pods_sorted_by_namespace_then_name() {
        let (store, fixture) = cluster();
        let h = harness(store, fixture, None);
        let (code, list) = h.get_json("/apis/metrics.k8s.io/v1beta1/pods");
        assert_eq!(code, 200);
        assert_eq!(list["kind"], "PodMetricsList");
        assert_eq!(
            names(&list),
            ["kube-system/dns-1", "web/back-1", "web/front-1"]
        );
        assert_eq!(list["items"][0]["metadata"]["labels"]["app"], "dns");
        assert_eq!(list["items"][0]["containers"][0]["name"], "app");

        let (_, list) = h.get_json("/apis/metrics.k8s.io/v1beta1/namespaces/web/pods");
        assert_eq!(names(&list), ["web/back-1", "web/front-1"]);
        let (_, list) = h.get_json(
            "/apis/metrics.k8s.io/v1beta1/namespaces/web/pods?labelSelector=app+%3D+front",
        );
        assert_eq!(names(&list), ["web/front-1"]);
        let (_, list) =
            h.get_json("/apis/metrics.k8s.io/v1beta1/pods?fieldSelector=metadata.namespace!%3Dweb");
        assert_eq!(names(&list), ["kube-system/dns-1"]);
        let (code, list) = h.get_json("/apis/metrics.k8s.io/v1beta1/namespaces/empty/pods");
        assert_eq!(code, 200);
        assert_eq!(names(&list), Vec::<String>::new());
    }

    #[test]
    fn single_pod_get_and_its_not_found_cases() {
        let (store, mut fixture) = cluster();
        fixture
            .pods
            .insert(("web".into(), "new-1".into()), (Labels::default(), true));
        let h = harness(store, fixture, None);
        let (code, pod) = h.get_json("/apis/metrics.k8s.io/v1beta1/namespaces/web/pods/front-1");
        assert_eq!(code, 200);
        assert_eq!(pod["kind"], "PodMetrics");
        assert_eq!(pod["metadata"]["namespace"], "web");

        for missing in ["pending-1", "orphan-1", "nope"] {
            let (code, status) = h.get_json(&format!(
                "/apis/metrics.k8s.io/v1beta1/namespaces/web/pods/{missing}"
            ));
            assert_eq!(code, 404, "{missing}");
            assert_eq!(status["reason"], "NotFound");
        }
        let (code, status) = h.get_json("/apis/metrics.k8s.io/v1beta1/namespaces/web/pods/new-1");
        assert_eq!(code, 404);
        assert!(status["message"]
            .as_str()
            .unwrap()
            .contains("podmetrics.metrics.k8s.io \"web/new-1\""));
    }

    #[test]
    fn served_items_record_their_freshness() {
        let (store, fixture) = cluster();
        let h = harness(store, fixture, None);
        h.get("/apis/metrics.k8s.io/v1beta1/pods");
        let text = h.telemetry.encode();
        assert!(
            text.contains("metrics_server_api_metric_freshness_seconds_count 3"),
            "{text}"
        );
    }

    #[test]
    fn other_verbs_are_method_not_allowed_and_unknown_paths_not_found() {
        let (store, fixture) = cluster();
        let h = harness(store, fixture, None);
        let (code, body) = body_of(h.router.respond(
            &Method::DELETE,
            "/apis/metrics.k8s.io/v1beta1/nodes/node-a",
            "",
            T0,
        ));
        assert_eq!(code, 405);
        let status: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(status["reason"], "MethodNotAllowed");
        let (code, status) = h.get_json("/apis/metrics.k8s.io/v1beta1/services");
        assert_eq!(code, 404);
        assert_eq!(status["reason"], "NotFound");
    }

    #[test]
    fn discovery_documents_and_version_are_served() {
        let h = harness(store_with(&[]), Fixture::default(), None);
        let (code, body) = h.get("/apis/metrics.k8s.io/v1beta1");
        assert_eq!(
            (code, body.as_str()),
            (200, discovery_docs::API_RESOURCE_LIST)
        );
        let (code, list) = h.get_json("/apis");
        assert_eq!(code, 200);
        assert_eq!(list["kind"], "APIGroupList");
        let (code, version) = h.get_json("/version");
        assert_eq!(code, 200);
        assert!(version["gitVersion"].as_str().unwrap().starts_with('v'));
    }

    #[test]
    fn readyz_waits_for_discovery_and_storage() {
        let h = harness(store_with(&[]), Fixture::default(), None);
        let (code, body) = h.get("/readyz?verbose");
        assert_eq!(code, 500);
        assert!(body.contains("[-]informer-sync failed"), "{body}");
        assert!(body.contains("no metrics to serve"), "{body}");

        let (store, fixture) = cluster();
        let h = harness(store, fixture, None);
        let (code, body) = h.get("/readyz");
        assert_eq!((code, body.as_str()), (200, "ok"));
    }

    #[test]
    fn self_metrics_include_storage_point_counts() {
        let (store, fixture) = cluster();
        let h = harness(store, fixture, None);
        let (code, text) = h.get("/metrics");
        assert_eq!(code, 200);
        assert!(
            text.contains("metrics_server_storage_points{type=\"node\"} 3"),
            "{text}"
        );
    }
}
