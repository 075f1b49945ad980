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
        let mut out = Vec::with_capacity(512 * 16);
        let pods: Box<dyn Iterator<Item = _>> = match namespace {
            Some(ns) => Box::new(snapshot.pods_in_namespace(ns)),
            None => Box::new(snapshot.pods()),
        };
        let items = pods.filter_map(|metrics| {
            let pod_labels = view.running_pod_labels(&metrics.namespace, &metrics.name)?;
            let selected = labels.as_ref().is_none_or(|s| s.matches(pod_labels))
                && fields
                    .as_ref()
                    .is_none_or(|s| s.matches(Some(&metrics.namespace), &metrics.name));
            if !selected {
                return None;
            }
            self.freshness(now, metrics.timestamp);
            Some((metrics, pod_labels))
        });
        render::pod_metrics_list(&mut out, items, now);
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
            tracing::info!(endpoint = endpoint.name(), body = %answer.body.trim_end(), "Health check failed.");
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
}
