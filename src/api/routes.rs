//! Routing and the request handlers of the metrics API, discovery, health and self-metrics.
//!
//! A handler loads the store [`Snapshot`] and the discovery [`ClusterView`] once, each a lock-free
//! pointer load, and joins them: the view says which objects exist, are running and what labels they
//! carry; the snapshot says what they use. Nothing here waits on a lock or a channel the scrape side
//! holds, so a slow kubelet never delays a read.
//!
//! A metrics read is encoded as its `Accept` header negotiates (JSON, a `meta.k8s.io` `Table`, or
//! protobuf; `406` otherwise), and its errors as upstream's error writer negotiates them. The
//! OpenAPI documents are served with kube-openapi's validators and caching headers.
//!
//! Handlers run on the I/O workers, so a handler's work must stay small. A list longer than
//! [`OFF_THREAD_ITEMS`] is rendered on the blocking pool from the snapshot it loaded and
//! streamed (see [`crate::api::body`]); whether a filtered list is long is found by selecting
//! its items here, within a bounded walk. A namespace list with a label selector (an HPA's
//! query) walks the view's pods of that namespace and looks up metrics only for the selected;
//! its JSON answer is kept and served again while it is current (see [`crate::api::answers`]).

use std::iter::Peekable;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::header::{
    HeaderName, HeaderValue, ACCEPT, ALLOW, CACHE_CONTROL, CONTENT_TYPE, ETAG, EXPIRES,
    IF_NONE_MATCH, LAST_MODIFIED, LOCATION, VARY,
};
use http::{Method, Request, Response, StatusCode};

use crate::api::answers::{self, AnswerCache};
use crate::api::auth::{Auth, AuthError};
use crate::api::body::{self, Chunks};
use crate::api::discovery_docs;
use crate::api::gofmt::CivilTime;
use crate::api::health::{self, Endpoint, HealthConfig, HealthInputs};
use crate::api::negotiate::{self, Format, TableVersion};
use crate::api::openapi;
use crate::api::protobuf;
use crate::api::render::{self, StatusDetails};
use crate::api::selector::{FieldSelector, LabelSelector, SelectorError};
use crate::api::table::{self, IncludeObject};
use crate::discovery::{ClusterView, DiscoveryHandle, PodInfo};
use crate::model::{pod_key_order, Labels, NodeMetrics, PodMetrics, UnixNanos};
use crate::store::{IndexedPod, Snapshot, Store};
use crate::telemetry::Telemetry;

/// The response body type every handler returns.
pub use crate::api::body::Body;

/// A list expected to hold more items than this is rendered off the I/O workers (see
/// [`body::render_off_thread`]): at ~0.5 KiB an item and ~250 MiB/s, about 2 ms of rendering, the
/// most a worker may spend on one request without delaying the requests queued behind it.
pub const OFF_THREAD_ITEMS: usize = 1_000;
/// A filtered list is also rendered off the I/O workers when finding out whether it is short
/// would mean examining more than this many pods per item allowed: the walk itself (a label
/// lookup and match per pod) then costs what rendering a long list does.
const EXAMINED_PER_SELECTED: usize = 4;

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
    /// Every Running pod (or one namespace's) sorted by namespace, then name, with its labels,
    /// if this view can walk them in order. A list then joins this walk with the snapshot's, in
    /// the same order, instead of looking up each listed pod's labels; a filtered namespace list
    /// matches labels along it and looks up only the selected pods' metrics.
    fn running_pods_sorted<'s>(
        &'s self,
        _namespace: Option<&str>,
    ) -> Option<Box<dyn Iterator<Item = ViewPod<'s>> + 's>> {
        None
    }
    /// A number no other view of this source shares, if it has one: answers derived from this
    /// view are kept under it (see [`AnswerCache`]).
    fn generation(&self) -> Option<u64> {
        None
    }
}

/// A Running pod as a sorted walk of the view yields it: namespace, name, labels.
pub type ViewPod<'s> = (&'s str, &'s str, &'s Labels);

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
    fn running_pods_sorted<'s>(
        &'s self,
        namespace: Option<&str>,
    ) -> Option<Box<dyn Iterator<Item = ViewPod<'s>> + 's>> {
        let pods: Box<dyn Iterator<Item = &PodInfo> + 's> = match namespace {
            Some(namespace) => Box::new(self.pods_in_namespace(namespace)),
            None => Box::new(self.pods()),
        };
        Some(Box::new(
            pods.filter(|info| info.running)
                .map(|info| (&*info.namespace, &*info.name, &info.labels)),
        ))
    }
    fn generation(&self) -> Option<u64> {
        Some(ClusterView::generation(self))
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
    /// Lists expected to be longer than this are rendered off the I/O workers.
    off_thread_items: usize,
    /// JSON answers to namespaced label selections and to the whole pod list, served again
    /// while still current.
    answers: Arc<AnswerCache>,
}

/// The request headers the handlers read.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RequestHeaders<'a> {
    /// `Accept`, if sent: picks JSON, a `Table` or protobuf.
    pub accept: Option<&'a str>,
    /// `If-None-Match`, if sent: the OpenAPI documents answer `304` when it names their `ETag`.
    pub if_none_match: Option<&'a str>,
}

/// How a metrics response body is encoded, once negotiated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Encoding {
    Json,
    Table(TableVersion, IncludeObject),
    Protobuf,
}

/// A metrics request's negotiated encoding, and the `Accept` header its errors are negotiated
/// from (only when one happens: most requests never pay for it).
#[derive(Clone, Copy, Debug)]
struct Negotiated<'a> {
    encoding: Encoding,
    accept: Option<&'a str>,
}

impl Negotiated<'_> {
    /// The success response carrying `body`.
    fn ok(self, body: impl Into<Body>) -> Response<Body> {
        let content_type = match self.encoding {
            Encoding::Json | Encoding::Table(..) => JSON,
            Encoding::Protobuf => negotiate::PROTOBUF_MEDIA_TYPE,
        };
        response(200, content_type, body)
    }

    fn status(self, code: u16, reason: &str, message: &str) -> Response<Body> {
        status_for(self.accept, code, reason, message, None)
    }

    /// The `404` for a missing object, as upstream words it.
    fn not_found(self, group: &str, resource: &str, name: &str) -> Response<Body> {
        not_found_for(self.accept, group, resource, name)
    }
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
    OpenApiV2,
    OpenApiV3,
    OpenApiV3Group,
    Nodes,
    Node(String),
    Pods(Option<String>),
    Pod(String, String),
}

impl Route<'_> {
    /// Whether `HEAD` is answered like `GET` without a body. Upstream serves these paths with
    /// plain Go handlers, which answer `HEAD`; its REST routes (metrics, discovery, version)
    /// answer `405`.
    fn serves_head(&self) -> bool {
        matches!(
            self,
            Route::Metrics
                | Route::Health(..)
                | Route::OpenApiV2
                | Route::OpenApiV3
                | Route::OpenApiV3Group
        )
    }
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
            off_thread_items: OFF_THREAD_ITEMS,
            answers: Arc::new(AnswerCache::default()),
        }
    }

    /// Renders lists expected to be longer than `items` off the I/O workers, instead of
    /// [`OFF_THREAD_ITEMS`]. Tests use it to take that path with small data sets.
    pub fn with_off_thread_items(mut self, items: usize) -> Self {
        self.off_thread_items = items;
        self
    }

    /// Keeps up to `bytes` of rendered answers between requests (`--kept-answers-max-bytes`)
    /// instead of [`answers::DEFAULT_BUDGET_BYTES`].
    pub fn with_answer_budget(mut self, bytes: usize) -> Self {
        self.answers = Arc::new(AnswerCache::with_budget(bytes));
        self
    }

    /// The flag shutdown sets; `/readyz` fails from then on.
    pub fn shutting_down(&self) -> Arc<AtomicBool> {
        Arc::clone(&self.shutting_down)
    }

    /// Serves one request: authentication and authorization, then the route.
    pub async fn handle<B>(&self, request: Request<B>) -> Response<Body> {
        let (parts, _body) = request.into_parts();
        let header = |name: &HeaderName| parts.headers.get(name).and_then(|v| v.to_str().ok());
        let headers = RequestHeaders {
            accept: header(&ACCEPT),
            if_none_match: header(&IF_NONE_MATCH),
        };
        if let Err(refused) = self.auth.check(&parts).await {
            let (code, reason) = match refused {
                AuthError::Unauthenticated => (401, "Unauthorized"),
                AuthError::Forbidden(_) => (403, "Forbidden"),
                AuthError::Internal(_) => (500, "InternalError"),
            };
            tracing::debug!(path = %parts.uri.path(), error = %refused, "Request refused.");
            let refused = status_for(headers.accept, code, reason, &refused.to_string(), None);
            return if parts.method == Method::HEAD {
                without_body(refused)
            } else {
                refused
            };
        }
        self.respond_to(
            &parts.method,
            parts.uri.path(),
            parts.uri.query().unwrap_or(""),
            headers,
            now(),
        )
    }

    /// Routes an authorized request without request headers (JSON, no conditions). `now` is the
    /// request time, unix nanoseconds.
    pub fn respond(
        &self,
        method: &Method,
        path: &str,
        query: &str,
        now: UnixNanos,
    ) -> Response<Body> {
        self.respond_to(method, path, query, RequestHeaders::default(), now)
    }

    /// Routes an authorized request: the path, then the method, then (for the metrics
    /// resources) the `Accept` header, before any work is done, in upstream's order.
    pub fn respond_to(
        &self,
        method: &Method,
        path: &str,
        query: &str,
        headers: RequestHeaders<'_>,
        now: UnixNanos,
    ) -> Response<Body> {
        let accept = headers.accept;
        let route = match route(path) {
            Ok(route) => route,
            Err(RouteError::NotFound) => {
                return status_for(
                    accept,
                    404,
                    "NotFound",
                    "the server could not find the requested resource",
                    None,
                )
            }
        };
        let head = method == Method::HEAD;
        if method != Method::GET && !(head && route.serves_head()) {
            let mut refused = status_for(
                accept,
                405,
                "MethodNotAllowed",
                "the server does not allow this method on the requested resource",
                None,
            );
            let allowed = if route.serves_head() {
                "GET, HEAD"
            } else {
                "GET"
            };
            set(&mut refused, ALLOW, allowed);
            return if head { without_body(refused) } else { refused };
        }
        let response = match route {
            Route::ApiGroupList => json(discovery_docs::API_GROUP_LIST.into()),
            Route::ApiGroup => json(discovery_docs::API_GROUP.into()),
            Route::ApiResourceList => json(discovery_docs::API_RESOURCE_LIST.into()),
            Route::Version => json(discovery_docs::version().into()),
            Route::Metrics => self.metrics(),
            Route::Health(endpoint, check) => self.health(endpoint, check, query, now),
            Route::OpenApiV2 => openapi_v2(headers),
            Route::OpenApiV3 => openapi_v3_index(headers),
            Route::OpenApiV3Group => openapi_v3_group(headers, query, now),
            Route::Nodes | Route::Node(_) | Route::Pods(_) | Route::Pod(..) => {
                self.metrics_resource(route, query, accept, now)
            }
        };
        if head {
            return without_body(response);
        }
        response
    }

    /// A metrics read in the negotiated encoding. An `Accept` header naming nothing served is
    /// `406` before anything is read, and a bad `includeObject` is a `400` only once the read
    /// itself succeeded, as upstream orders them.
    fn metrics_resource(
        &self,
        route: Route<'_>,
        query: &str,
        accept: Option<&str>,
        now: UnixNanos,
    ) -> Response<Body> {
        let format = match negotiate::negotiate(accept) {
            Ok(format) => format,
            Err(refused) => {
                return status_for(
                    accept,
                    406,
                    negotiate::NotAcceptable::REASON,
                    &refused.message(),
                    None,
                )
            }
        };
        let mut bad_include = None;
        let encoding = match format {
            Format::Json => Encoding::Json,
            Format::Protobuf => Encoding::Protobuf,
            Format::Table(version) => {
                let include = query_values(query, "includeObject").next();
                match include.map(|value| value.unwrap_or_default()) {
                    None => Encoding::Table(version, IncludeObject::Metadata),
                    Some(value) => match IncludeObject::from_query(Some(&value)) {
                        Ok(include) => Encoding::Table(version, include),
                        Err(invalid) => {
                            bad_include = Some(invalid);
                            Encoding::Json
                        }
                    },
                }
            }
        };
        let wire = Negotiated { encoding, accept };
        let response = match route {
            Route::Nodes => self.list_nodes(query, now, wire),
            Route::Node(name) => self.get_node(&name, now, wire),
            Route::Pods(namespace) => self.list_pods(namespace.as_deref(), query, now, wire),
            Route::Pod(namespace, name) => self.get_pod(&namespace, &name, now, wire),
            _ => wire.status(
                404,
                "NotFound",
                "the server could not find the requested resource",
            ),
        };
        match bad_include {
            Some(invalid) if response.status().is_success() => {
                wire.status(400, "BadRequest", &invalid.to_string())
            }
            _ => response,
        }
    }

    fn list_nodes(&self, query: &str, now: UnixNanos, wire: Negotiated<'_>) -> Response<Body> {
        let (labels, fields) = match selectors(query) {
            Ok(selectors) => selectors,
            Err(e) => return wire.status(400, "BadRequest", &e.to_string()),
        };
        let list = NodeList {
            snapshot: self.store.snapshot(),
            view: self.cluster.view(),
            telemetry: Arc::clone(&self.telemetry),
            node_selector: self.node_selector.clone(),
            labels,
            fields,
            encoding: wire.encoding,
            now,
        };
        const ITEM_BYTES: usize = 256;
        let expected = list.snapshot.node_count().saturating_mul(ITEM_BYTES);
        if list.snapshot.node_count() > self.off_thread_items {
            return wire.ok(body::render_off_thread(expected, move |chunks| {
                list.render(chunks.buffer());
            }));
        }
        let mut out = Vec::with_capacity(expected.clamp(4096, 1 << 20));
        list.render(&mut out);
        wire.ok(out)
    }

    fn get_node(&self, name: &str, now: UnixNanos, wire: Negotiated<'_>) -> Response<Body> {
        let snapshot = self.store.snapshot();
        let view = self.cluster.view();
        // As upstream: an unknown (or unselected) node is `node "x" not found`; a known node
        // without metrics is `nodemetrics.metrics.k8s.io "x" not found`.
        let Some(node_labels) = view
            .node_labels(name)
            .filter(|labels| self.node_selected(labels))
        else {
            return wire.not_found("", "node", name);
        };
        let Some(metrics) = snapshot.node(name) else {
            return wire.not_found(GROUP, "nodemetrics", name);
        };
        self.freshness(now, metrics.timestamp);
        let mut out = Vec::with_capacity(512);
        match wire.encoding {
            Encoding::Json => render::node_metrics(&mut out, metrics, node_labels, now),
            Encoding::Protobuf => protobuf::node_metrics(&mut out, metrics, node_labels, now),
            Encoding::Table(..) => node_list(
                &mut out,
                wire.encoding,
                [(metrics, node_labels)].into_iter(),
                now,
            ),
        }
        wire.ok(out)
    }

    fn list_pods(
        &self,
        namespace: Option<&str>,
        query: &str,
        now: UnixNanos,
        wire: Negotiated<'_>,
    ) -> Response<Body> {
        let snapshot = self.store.snapshot();
        let view = self.cluster.view();
        // An HPA's query, a label selector in a namespace, is answered from the answer kept for
        // it while that is current (its query parsed, and selected a short list, when it was
        // kept), and kept when a walk finds it short.
        let answer_key = match (namespace, wire.encoding, view.generation()) {
            (Some(namespace), Encoding::Json, Some(generation)) => {
                let key = AnswerCache::key(namespace, query);
                if let Some(answer) = self.answers.current(&key, generation, &snapshot, now) {
                    record_freshness(&self.telemetry, now, answer.timestamps());
                    return wire.ok(answer.body());
                }
                Some((key, generation))
            }
            _ => None,
        };
        let (labels, fields) = match selectors(query) {
            Ok(selectors) => selectors,
            Err(e) => return wire.status(400, "BadRequest", &e.to_string()),
        };
        let list = PodList {
            snapshot,
            view,
            telemetry: Arc::clone(&self.telemetry),
            namespace: namespace.map(str::to_owned),
            labels,
            fields,
            encoding: wire.encoding,
            now,
        };
        let examined = self.off_thread_items.saturating_mul(EXAMINED_PER_SELECTED);
        let whole = list.namespace.is_none() && list.labels.is_none() && list.fields.is_none();
        if whole && list.encoding == Encoding::Json {
            if let Some(generation) = list.view.generation() {
                if self.answers.may_keep(list.whole_bytes()) {
                    return list.whole_kept(Arc::clone(&self.answers), generation, wire);
                }
            }
        }
        let answer_key = answer_key.filter(|_| list.labels.is_some());
        if let Some((key, generation)) = answer_key {
            match list.select_by_view(examined, self.off_thread_items) {
                Some(Some(selected)) => {
                    let answer =
                        self.answers
                            .insert(key, generation, &list.snapshot, selected, now);
                    record_freshness(&list.telemetry, now, answer.timestamps());
                    return wire.ok(answer.body());
                }
                Some(None) => return list.off_thread(wire),
                None => {}
            }
        }
        // Whether the list is short is known from the snapshot's count when nothing narrows it;
        // otherwise from a walk that selects here, and gives up (the list is long) once it has
        // examined too many pods or selected too many.
        let short = if whole {
            (list.snapshot.pod_count() <= self.off_thread_items).then(Vec::new)
        } else {
            list.select_short(examined, self.off_thread_items)
        };
        match short {
            Some(selected) if !whole => {
                let mut out = Vec::with_capacity((selected.len() + 1) * PodList::ITEM_BYTES);
                list.render_items(&mut out, selected.into_iter());
                wire.ok(out)
            }
            Some(_) => {
                let mut out =
                    Vec::with_capacity((list.snapshot.pod_count() + 1) * PodList::ITEM_BYTES);
                list.render(&mut out);
                wire.ok(out)
            }
            None => list.off_thread(wire),
        }
    }

    fn get_pod(
        &self,
        namespace: &str,
        name: &str,
        now: UnixNanos,
        wire: Negotiated<'_>,
    ) -> Response<Body> {
        let snapshot = self.store.snapshot();
        let view = self.cluster.view();
        // Upstream's pod lister only holds running pods, so a pod in another phase is unknown.
        let Some(pod_labels) = view.running_pod_labels(namespace, name) else {
            return wire.not_found("", "pod", name);
        };
        let Some(metrics) = snapshot.pod(namespace, name) else {
            // Upstream names a pod without metrics by `namespace/name`.
            return wire.not_found(GROUP, "podmetrics", &format!("{namespace}/{name}"));
        };
        self.freshness(now, metrics.timestamp);
        let mut out = Vec::with_capacity(1024);
        match wire.encoding {
            Encoding::Json => render::pod_metrics(&mut out, metrics, pod_labels, now),
            Encoding::Protobuf => protobuf::pod_metrics(&mut out, metrics, pod_labels, now),
            Encoding::Table(..) => pod_list(
                &mut out,
                wire.encoding,
                [(metrics, pod_labels)].into_iter(),
                now,
            ),
        }
        wire.ok(out)
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
        response(answer.code, TEXT, Bytes::from(answer.body))
    }

    fn metrics(&self) -> Response<Body> {
        // Counted when the snapshot was built: a walk of every pod per scrape of `/metrics` would
        // cost a large cluster more than serving it.
        let snapshot = self.store.snapshot();
        self.telemetry.storage_points(
            snapshot.node_count() as u64,
            snapshot.container_count() as u64,
        );
        self.telemetry
            .kept_answers(self.answers.len(), self.answers.held_bytes());
        // Encoded on the blocking pool: with a histogram per node it takes a large cluster's
        // server tens of milliseconds (~0.1 s at 10,000 nodes), which an API worker must not
        // spend while small requests wait behind it.
        let telemetry = Arc::clone(&self.telemetry);
        let expected = METRICS_BYTES_PER_NODE.saturating_mul(snapshot.node_count() + 1);
        response(
            200,
            OPENMETRICS,
            body::render_off_thread(expected, move |chunks| {
                // The encoding becomes the body as it is, without a copy.
                let encoded = telemetry.encode().into_bytes();
                let buffer = chunks.buffer();
                if buffer.is_empty() {
                    *buffer = encoded;
                } else {
                    buffer.extend_from_slice(&encoded);
                }
            }),
        )
    }

    fn node_selected(&self, labels: &Labels) -> bool {
        self.node_selector
            .as_ref()
            .is_none_or(|s| s.matches(labels))
    }

    fn freshness(&self, now: UnixNanos, timestamp: UnixNanos) {
        self.telemetry.metric_freshness(age_seconds(now, timestamp));
    }
}

/// A node list request, owning what it reads so it can be rendered on another thread.
struct NodeList {
    snapshot: Arc<Snapshot>,
    view: Arc<dyn ClusterLookup>,
    telemetry: Arc<Telemetry>,
    node_selector: Option<LabelSelector>,
    labels: Option<LabelSelector>,
    fields: Option<FieldSelector>,
    encoding: Encoding,
    now: UnixNanos,
}

// === impl NodeList ===

impl NodeList {
    fn render(&self, out: &mut Vec<u8>) {
        let mut freshness = self.telemetry.freshness_batch();
        let items = self.snapshot.nodes().filter_map(|metrics| {
            let node_labels = self.view.node_labels(&metrics.name)?;
            let selected = self
                .node_selector
                .as_ref()
                .is_none_or(|s| s.matches(node_labels))
                && self.labels.as_ref().is_none_or(|s| s.matches(node_labels))
                && self
                    .fields
                    .as_ref()
                    .is_none_or(|s| s.matches(None, &metrics.name));
            if !selected {
                return None;
            }
            freshness.observe(age_seconds(self.now, metrics.timestamp));
            Some((metrics, node_labels))
        });
        node_list(out, self.encoding, items, self.now);
        self.telemetry.record_freshness(&freshness);
    }
}

/// A pod list request, owning what it reads so it can be rendered on another thread.
struct PodList {
    snapshot: Arc<Snapshot>,
    view: Arc<dyn ClusterLookup>,
    telemetry: Arc<Telemetry>,
    namespace: Option<String>,
    labels: Option<LabelSelector>,
    fields: Option<FieldSelector>,
    encoding: Encoding,
    now: UnixNanos,
}

// === impl PodList ===

impl PodList {
    /// A JSON list item's usual size, to size buffers.
    const ITEM_BYTES: usize = 512;

    /// The usual size of a JSON list of every pod the snapshot serves, to size buffers and to
    /// tell whether its answer may be kept.
    fn whole_bytes(&self) -> usize {
        self.snapshot.pod_count().saturating_mul(Self::ITEM_BYTES)
    }

    /// The pods the walk visits: the namespace's, or all, with their cached JSON parts.
    fn candidates(&self) -> Box<dyn Iterator<Item = (&PodMetrics, render::PodItemParts<'_>)> + '_> {
        match &self.namespace {
            Some(ns) => Box::new(self.snapshot.pods_in_namespace_json(ns)),
            None => Box::new(self.snapshot.pods_json()),
        }
    }

    /// A pod's labels if it is served (known and Running) and the selectors select it.
    fn selected(&self, metrics: &PodMetrics) -> Option<&Labels> {
        let pod_labels = self
            .view
            .running_pod_labels(&metrics.namespace, &metrics.name)?;
        self.matches(metrics, pod_labels).then_some(pod_labels)
    }

    /// The selected pods, each with its cached JSON parts and labels.
    ///
    /// The snapshot's pods and the view's Running pods are both sorted by namespace, then name,
    /// so when the view can walk in order the two walks are joined: a pod's labels cost a
    /// comparison or two instead of a search of the view (a few dozen string comparisons in a
    /// large cluster).
    fn items(&self) -> Box<dyn Iterator<Item = PodItem<'_>> + '_> {
        let Some(view_pods) = self.view.running_pods_sorted(self.namespace.as_deref()) else {
            return Box::new(self.candidates().filter_map(|(metrics, parts)| {
                self.selected(metrics)
                    .map(|pod_labels| (metrics, parts, pod_labels))
            }));
        };
        let mut view_pods = view_pods.peekable();
        Box::new(self.candidates().filter_map(move |(metrics, parts)| {
            let key = (&*metrics.namespace, &*metrics.name);
            // Not Running, or unknown to the view: not listed.
            let (_, _, pod_labels) = join_step(&mut view_pods, key, |&(namespace, name, _)| {
                (namespace, name)
            })??;
            self.matches(metrics, pod_labels)
                .then_some((metrics, parts, pod_labels))
        }))
    }

    /// The whole JSON list, served from the answer kept for it while that is current, and kept
    /// when walked. Found (and refreshed, or walked) on the blocking pool; the answer's
    /// segments are then handed over as they are, without a copy.
    fn whole_kept(
        self,
        answers: Arc<AnswerCache>,
        generation: u64,
        wire: Negotiated<'_>,
    ) -> Response<Body> {
        let expected = self.whole_bytes();
        wire.ok(body::render_off_thread(expected, move |chunks| {
            let key = AnswerCache::whole_list_key();
            let found = {
                let _turn = answers.whole_list_turn();
                match answers.current(key, generation, &self.snapshot, self.now) {
                    Some(answer) => Some(answer),
                    None => match self.select_by_view(usize::MAX, usize::MAX) {
                        Some(Some(selected)) => Some(answers.insert(
                            key.to_owned(),
                            generation,
                            &self.snapshot,
                            selected,
                            self.now,
                        )),
                        _ => None,
                    },
                }
            };
            // The view cannot walk in order: rendered (and streamed) as any long list is.
            let Some(answer) = found else {
                return self.render_chunked(chunks);
            };
            record_freshness(&self.telemetry, self.now, answer.timestamps());
            chunks.hand_over(answer.segments());
        }))
    }

    /// The list rendered on the blocking pool and streamed.
    fn off_thread(self, wire: Negotiated<'_>) -> Response<Body> {
        let expected = self.whole_bytes();
        wire.ok(body::render_off_thread(expected, move |chunks| {
            self.render_chunked(chunks)
        }))
    }

    /// Whether the selectors select a served pod with these labels.
    fn matches(&self, metrics: &PodMetrics, pod_labels: &Labels) -> bool {
        self.matches_names(&metrics.namespace, &metrics.name, pod_labels)
    }

    /// Whether the selectors select the pod so named, with these labels.
    fn matches_names(&self, namespace: &str, name: &str, pod_labels: &Labels) -> bool {
        self.labels.as_ref().is_none_or(|s| s.matches(pod_labels))
            && self
                .fields
                .as_ref()
                .is_none_or(|s| s.matches(Some(namespace), name))
    }

    /// The selected pods, if the walk ends having examined at most `examined` pods and
    /// selected at most `selected`.
    fn select_short(&self, examined: usize, selected: usize) -> Option<Vec<PodItem<'_>>> {
        let by_view = (self.namespace.is_some() && self.labels.is_some())
            .then(|| self.select_by_view(examined, selected))
            .flatten();
        if let Some(by_view) = by_view {
            return by_view.map(|items| {
                items
                    .into_iter()
                    .map(|(served, labels, _)| (served.metrics, served.parts, labels))
                    .collect()
            });
        }
        let mut items = Vec::new();
        for (seen, (metrics, parts)) in self.candidates().enumerate() {
            if seen >= examined {
                return None;
            }
            if let Some(pod_labels) = self.selected(metrics) {
                if items.len() == selected {
                    return None;
                }
                items.push((metrics, parts, pod_labels));
            }
        }
        Some(items)
    }

    /// As [`PodList::select_short`], walking the view's Running pods (of the namespace, or of all
    /// namespaces) joined, in order, with the snapshot's index: labels are matched along the
    /// way, and only the selected pods are looked up in their nodes' entries. Both walks hold
    /// the very same name strings (see [`crate::model::PodNames`]), so the join compares
    /// pointers, where a lookup per selected pod would compare strings down the whole index.
    /// Each item comes with where it is served from, for [`AnswerCache`]. `None` when the view
    /// cannot walk in order.
    #[allow(clippy::option_option)]
    fn select_by_view(
        &self,
        examined: usize,
        selected: usize,
    ) -> Option<Option<Vec<answers::Selected<'_>>>> {
        let view_pods = self.view.running_pods_sorted(self.namespace.as_deref())?;
        let indexed: Box<dyn Iterator<Item = IndexedPod<'_>> + '_> = match &self.namespace {
            Some(namespace) => Box::new(self.snapshot.indexed_pods_in_namespace(namespace)),
            None => Box::new(self.snapshot.indexed_pods()),
        };
        let mut indexed = indexed.peekable();
        let mut items = Vec::new();
        for (seen, (namespace, name, pod_labels)) in view_pods.enumerate() {
            if seen >= examined {
                return Some(None);
            }
            // The index's pods ordered before this one are not Running or not known to the
            // view: not listed. Past the index's last pod, nothing more can be.
            let Some(served) = join_step(&mut indexed, (namespace, name), |pod| {
                (pod.namespace(), pod.name())
            }) else {
                return Some(Some(items));
            };
            // A Running pod without metrics yet is not listed.
            let Some(pod) = served else {
                continue;
            };
            if !self.matches_names(namespace, name, pod_labels) {
                continue;
            }
            let Some((served, source)) = pod.json_with_source() else {
                continue;
            };
            if items.len() == selected {
                return Some(None);
            }
            items.push((served, pod_labels, source));
        }
        Some(Some(items))
    }

    /// The whole list into `out`.
    fn render(&self, out: &mut Vec<u8>) {
        self.render_items(out, self.items());
    }

    /// A list of `items` into `out`, recording their freshness. JSON comes from the cached
    /// parts; Table and protobuf are rendered from the metrics.
    fn render_items<'s>(&self, out: &mut Vec<u8>, items: impl Iterator<Item = PodItem<'s>>) {
        // One histogram update per request, with the same result as one per item.
        let mut freshness = self.telemetry.freshness_batch();
        let items = items.inspect(|(metrics, _, _)| {
            freshness.observe(age_seconds(self.now, metrics.timestamp));
        });
        match self.encoding {
            Encoding::Json => render::pod_metrics_list_from_parts(
                out,
                items.map(|(_, parts, pod_labels)| (parts, pod_labels)),
                self.now,
            ),
            encoding => pod_list(
                out,
                encoding,
                items.map(|(metrics, _, pod_labels)| (metrics, pod_labels)),
                self.now,
            ),
        }
        self.telemetry.record_freshness(&freshness);
    }

    /// As [`PodList::render`], handing JSON over a chunk at a time as it is written; the other
    /// encodings are rendered whole, then handed over.
    fn render_chunked(&self, chunks: &mut Chunks) {
        if self.encoding != Encoding::Json {
            self.render(chunks.buffer());
            return;
        }
        let mut freshness = self.telemetry.freshness_batch();
        let now = crate::api::gofmt::rfc3339(self.now);
        chunks
            .buffer()
            .extend_from_slice(render::POD_LIST_JSON_HEAD);
        let mut first = true;
        for (metrics, parts, labels) in self.items() {
            freshness.observe(age_seconds(self.now, metrics.timestamp));
            let out = chunks.buffer();
            if !first {
                out.push(b',');
            }
            first = false;
            out.extend_from_slice(parts.head);
            render::creation_and_labels(out, labels, &now);
            out.extend_from_slice(parts.tail);
            if !chunks.flush_full() {
                // The client went away; what was rendered is not recorded as served.
                return;
            }
        }
        chunks.buffer().extend_from_slice(render::LIST_JSON_TAIL);
        self.telemetry.record_freshness(&freshness);
    }
}

/// One step of a join of two walks sorted by (namespace, name): skips `walk`'s items ordered
/// before `key` and takes the one equal to it, so the next step starts past it (each pod is
/// once in each walk). `Some(None)` when `walk` is already past `key`, which then has no
/// partner; `None` once `walk` is exhausted.
fn join_step<I, K>(walk: &mut Peekable<I>, key: (&str, &str), key_of: K) -> Option<Option<I::Item>>
where
    I: Iterator,
    K: Fn(&I::Item) -> (&str, &str),
{
    loop {
        match pod_key_order(key_of(walk.peek()?), key) {
            std::cmp::Ordering::Less => {
                walk.next();
            }
            std::cmp::Ordering::Equal => return Some(walk.next()),
            std::cmp::Ordering::Greater => return Some(None),
        }
    }
}

/// One selected pod of a list: its metrics, cached JSON parts and labels.
type PodItem<'s> = (&'s PodMetrics, render::PodItemParts<'s>, &'s Labels);

/// Records the freshness at `now` of served items with these metrics timestamps.
fn record_freshness(
    telemetry: &Telemetry,
    now: UnixNanos,
    timestamps: impl Iterator<Item = UnixNanos>,
) {
    let mut freshness = telemetry.freshness_batch();
    for timestamp in timestamps {
        freshness.observe(age_seconds(now, timestamp));
    }
    telemetry.record_freshness(&freshness);
}

/// How old a point is at `now`, in seconds, as the freshness histogram takes it.
fn age_seconds(now: UnixNanos, timestamp: UnixNanos) -> f64 {
    now.saturating_sub(timestamp).max(0) as f64 / 1e9
}

/// A response to `HEAD`: its status and headers with an empty body. The length is then that of
/// the empty body (HTTP/2 clients reset a stream that ends at once while announcing a length).
fn without_body(response: Response<Body>) -> Response<Body> {
    let (parts, _) = response.into_parts();
    Response::from_parts(parts, Body::default())
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
        "/openapi/v2" => return Ok(Route::OpenApiV2),
        "/openapi/v3" => return Ok(Route::OpenApiV3),
        _ => {}
    }
    if path
        .strip_prefix("/openapi/v3/")
        .is_some_and(|group_version| group_version == openapi::V3_GROUP_PATH)
    {
        return Ok(Route::OpenApiV3Group);
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

/// About what `/metrics` holds per node (its request-duration histogram and last request time).
const METRICS_BYTES_PER_NODE: usize = 1_600;

fn response(code: u16, content_type: &'static str, body: impl Into<Body>) -> Response<Body> {
    let mut response = Response::new(body.into());
    *response.status_mut() =
        StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

/// The `404` for a missing object, as upstream words it, in the encoding `accept` asks errors in.
fn not_found_for(accept: Option<&str>, group: &str, resource: &str, name: &str) -> Response<Body> {
    if negotiate::negotiate_status(accept) == Format::Protobuf {
        // Built in a small local string: this is the rare error path.
        let mut message = String::with_capacity(resource.len() + group.len() + name.len() + 16);
        message.push_str(resource);
        if !group.is_empty() {
            message.push('.');
            message.push_str(group);
        }
        message.push(' ');
        crate::api::gofmt::push_go_quoted(&mut message, name);
        message.push_str(" not found");
        let details = StatusDetails {
            name,
            group,
            kind: resource,
        };
        return status_for(accept, 404, "NotFound", &message, Some(details));
    }
    let mut out = Vec::with_capacity(256);
    render::status_not_found(&mut out, group, resource, name);
    response(404, JSON, out)
}

fn json(body: Bytes) -> Response<Body> {
    response(200, JSON, body)
}

/// A Kubernetes `Status` failure response: protobuf when the `Accept` header negotiates errors to
/// protobuf, as upstream's error writer does, else JSON.
fn status_for(
    accept: Option<&str>,
    code: u16,
    reason: &str,
    message: &str,
    details: Option<StatusDetails<'_>>,
) -> Response<Body> {
    let mut out = Vec::with_capacity(160);
    if negotiate::negotiate_status(accept) == Format::Protobuf {
        protobuf::status(&mut out, code, reason, message, details);
        return response(code, negotiate::PROTOBUF_MEDIA_TYPE, out);
    }
    render::status_with_details(&mut out, code, reason, message, details);
    response(code, JSON, out)
}

/// A list (or a one-row table) of nodes in `encoding`.
fn node_list<'a>(
    out: &mut Vec<u8>,
    encoding: Encoding,
    items: impl Iterator<Item = (&'a NodeMetrics, &'a Labels)>,
    now: UnixNanos,
) {
    match encoding {
        Encoding::Json => render::node_metrics_list(out, items, now),
        Encoding::Table(version, include) => {
            table::node_metrics_table(out, version, include, items, now)
        }
        Encoding::Protobuf => protobuf::node_metrics_list(out, items, now),
    }
}

/// A list (or a one-row table) of pods in `encoding`.
fn pod_list<'a>(
    out: &mut Vec<u8>,
    encoding: Encoding,
    items: impl Iterator<Item = (&'a PodMetrics, &'a Labels)>,
    now: UnixNanos,
) {
    match encoding {
        Encoding::Json => render::pod_metrics_list(out, items, now),
        Encoding::Table(version, include) => {
            table::pod_metrics_table(out, version, include, items, now)
        }
        Encoding::Protobuf => protobuf::pod_metrics_list(out, items, now),
    }
}

// === OpenAPI ===
//
// As kube-openapi serves them: `ETag` is the quoted upper-case hex SHA-512 of the JSON document,
// an `If-None-Match` naming it (or `*`) is `304` without a body, and `Last-Modified` is when the
// document was built. The group document varies on `Accept` (`406` with an empty body when the
// header admits no JSON) and, asked for with the `hash` its index gives, is `public, immutable`
// and expires in a year; a stale `hash` is redirected (`301`) to the current one.

fn openapi_v2(headers: RequestHeaders<'_>) -> Response<Body> {
    let mut response = negotiated_document(openapi::v2(), openapi::v2_hash(), headers);
    set(&mut response, VARY, "Accept");
    response
}

fn openapi_v3_index(headers: RequestHeaders<'_>) -> Response<Body> {
    document(openapi::v3_index(), openapi::v3_index_hash(), headers)
}

fn openapi_v3_group(headers: RequestHeaders<'_>, query: &str, now: UnixNanos) -> Response<Body> {
    let hash = openapi::v3_group_hash();
    if !negotiate::accepts_json_document(headers.accept) {
        let mut refused = response(406, JSON, Bytes::new());
        refused.headers_mut().remove(CONTENT_TYPE);
        set(&mut refused, VARY, "Accept");
        return refused;
    }
    let asked = query_values(query, "hash")
        .next()
        .flatten()
        .filter(|h| !h.is_empty());
    if let Some(asked) = &asked {
        if asked != hash {
            let mut moved = response(301, JSON, Bytes::new());
            set_owned(&mut moved, ETAG, format!("\"{hash}\""));
            set(&mut moved, VARY, "Accept");
            set_owned(
                &mut moved,
                LOCATION,
                format!("/openapi/v3/{}?hash={hash}", openapi::V3_GROUP_PATH),
            );
            return moved;
        }
    }
    let mut response = document(openapi::v3_group(), hash, headers);
    set(&mut response, VARY, "Accept");
    if asked.is_some() {
        set(&mut response, CACHE_CONTROL, "public, immutable");
        // A year from now, in Go's RFC 1123 layout with the zone named as in a UTC process.
        let year = 365 * 24 * 3600;
        let expires = now.div_euclid(1_000_000_000).saturating_add(year);
        set_owned(&mut response, EXPIRES, http_date(expires, "UTC"));
    }
    response
}

/// A document with upstream's v2 negotiation: any clause admitting JSON gets it, else `406`.
fn negotiated_document(
    body: &'static [u8],
    hash: &str,
    headers: RequestHeaders<'_>,
) -> Response<Body> {
    if !negotiate::accepts_json_document(headers.accept) {
        let mut refused = response(406, JSON, Bytes::new());
        refused.headers_mut().remove(CONTENT_TYPE);
        return refused;
    }
    document(body, hash, headers)
}

/// A static JSON document with its validators, or `304` when the client already has it.
fn document(body: &'static [u8], hash: &str, headers: RequestHeaders<'_>) -> Response<Body> {
    let etag = format!("\"{hash}\"");
    if headers
        .if_none_match
        .is_some_and(|header| etag_matches(header, &etag))
    {
        let mut unchanged = response(304, JSON, Bytes::new());
        unchanged.headers_mut().remove(CONTENT_TYPE);
        set_owned(&mut unchanged, ETAG, etag);
        return unchanged;
    }
    let mut response = response(200, JSON, Bytes::from_static(body));
    set_owned(&mut response, ETAG, etag);
    set_owned(
        &mut response,
        LAST_MODIFIED,
        http_date(openapi::built_at(), "GMT"),
    );
    response
}

/// Whether an `If-None-Match` header names `etag` (a quoted tag), compared weakly as HTTP says
/// for this header: a `W/` prefix is ignored, and `*` matches anything.
fn etag_matches(header: &str, etag: &str) -> bool {
    header.split(',').any(|candidate| {
        let candidate = candidate.trim_matches(|c| c == ' ' || c == '\t');
        candidate == "*" || candidate.strip_prefix("W/").unwrap_or(candidate) == etag
    })
}

/// `seconds` since the epoch as an HTTP date, `Mon, 02 Jan 2006 15:04:05 GMT` (with `zone` as
/// the last word: `GMT` in `Last-Modified`, Go's `UTC` in upstream's `Expires`).
fn http_date(seconds: i64, zone: &str) -> String {
    const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let t = CivilTime::from_unix_seconds(seconds);
    // 1970-01-01 was a Thursday; `rem_euclid` keeps the index in 0..7.
    let weekday = DAYS[seconds.div_euclid(86_400).rem_euclid(7) as usize];
    let month = MONTHS[(t.month.clamp(1, 12) - 1) as usize];
    format!(
        "{weekday}, {:02} {month} {:04} {:02}:{:02}:{:02} {zone}",
        t.day, t.year, t.hour, t.minute, t.second
    )
}

fn set(response: &mut Response<Body>, name: HeaderName, value: &'static str) {
    response
        .headers_mut()
        .insert(name, HeaderValue::from_static(value));
}

fn set_owned(response: &mut Response<Body>, name: HeaderName, value: String) {
    // Every value set here is ASCII built from hex digits, digits and fixed words.
    if let Ok(value) = HeaderValue::try_from(value) {
        response.headers_mut().insert(name, value);
    }
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
    #[derive(Clone, Default)]
    struct Fixture {
        nodes: BTreeMap<String, Labels>,
        /// (labels, running) by (namespace, name).
        pods: BTreeMap<(String, String), (Labels, bool)>,
        synced: bool,
        /// Offer no sorted walk of the pods, so lists look each pod's labels up instead.
        lookups_only: bool,
        /// The view's generation; without one, no answer is kept.
        generation: Option<u64>,
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
        fn running_pods_sorted<'s>(
            &'s self,
            namespace: Option<&str>,
        ) -> Option<Box<dyn Iterator<Item = ViewPod<'s>> + 's>> {
            if self.lookups_only {
                return None;
            }
            let namespace = namespace.map(str::to_owned);
            Some(Box::new(
                self.pods
                    .iter()
                    .filter(move |((ns, _), (_, running))| {
                        *running && namespace.as_ref().is_none_or(|n| n == ns)
                    })
                    .map(|((ns, name), (labels, _))| (ns.as_str(), name.as_str(), labels)),
            ))
        }
        fn generation(&self) -> Option<u64> {
            self.generation
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
                    containers: smallvec::smallvec![ContainerScrape {
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
        // Lossy: protobuf bodies are binary; the tests look for the ASCII strings inside.
        (code, String::from_utf8_lossy(&bytes).into_owned())
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

        fn request(
            &self,
            method: Method,
            path_and_query: &str,
            headers: RequestHeaders<'_>,
        ) -> Response<Body> {
            let (path, query) = path_and_query
                .split_once('?')
                .unwrap_or((path_and_query, ""));
            self.router
                .respond_to(&method, path, query, headers, T0 + 12 * SECOND)
        }

        fn get_accepting(&self, path_and_query: &str, accept: &str) -> (u16, String, String) {
            let response = self.request(
                Method::GET,
                path_and_query,
                RequestHeaders {
                    accept: Some(accept),
                    if_none_match: None,
                },
            );
            let content_type = header_of(&response, CONTENT_TYPE);
            let (code, body) = body_of(response);
            (code, content_type, body)
        }

        fn get_json(&self, path_and_query: &str) -> (u16, serde_json::Value) {
            let (code, body) = self.get(path_and_query);
            let value = serde_json::from_str(&body)
                .unwrap_or_else(|e| panic!("invalid JSON ({e}) for {path_and_query}: {body}"));
            (code, value)
        }
    }

    fn header_of(response: &Response<Body>, name: HeaderName) -> String {
        response
            .headers()
            .get(name)
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default()
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
            ("web", "front-2", "front", true),
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

    /// One router keeping HPA answers (its view has a generation) and one walking every time,
    /// over the same store and pods.
    fn keeping_and_walking() -> (Arc<Store>, Harness, Harness) {
        let (store, fixture) = cluster();
        let walking = harness(Arc::clone(&store), fixture.clone(), None);
        let keeping = with_generation(&fixture, 7);
        (Arc::clone(&store), harness(store, keeping, None), walking)
    }

    /// `fixture` with a generation: answers derived from its view are kept.
    fn with_generation(fixture: &Fixture, generation: u64) -> Fixture {
        Fixture {
            generation: Some(generation),
            ..fixture.clone()
        }
    }

    /// node-a's next point, at 20 s: back-1's usage changes, which pods are served does not.
    fn node_a_publishes_again(store: &Store) {
        store.write_node(
            &Name::from("node-a"),
            &scrape(
                T0 + 20 * SECOND,
                130,
                &[("web", "back-1"), ("web", "pending-1")],
            ),
            T0 + 20 * SECOND,
        );
    }

    /// node-b's points at 20 s and 30 s with front-2 among its pods: a Running pod gains
    /// metrics, so the pod index changes.
    fn front_2_gains_metrics(store: &Store) {
        for (at, cpu) in [(20, 120), (30, 130)] {
            store.write_node(
                &Name::from("node-b"),
                &scrape(
                    T0 + at * SECOND,
                    cpu,
                    &[
                        ("web", "front-1"),
                        ("web", "front-2"),
                        ("kube-system", "dns-1"),
                    ],
                ),
                T0 + at * SECOND,
            );
        }
    }

    const WEB_PODS: &str = "/apis/metrics.k8s.io/v1beta1/namespaces/web/pods";
    const WITH_APP: &str = "labelSelector=app";

    impl Harness {
        fn get_at(&self, path: &str, query: &str, now: UnixNanos) -> (u16, String) {
            body_of(self.router.respond(&Method::GET, path, query, now))
        }

        /// The kept answer to `web` pods with an `app` label, as the view of `generation`
        /// would see it now.
        fn kept_web_apps(
            &self,
            generation: u64,
            store: &Store,
            now: UnixNanos,
        ) -> Option<Arc<answers::Answer>> {
            let key = AnswerCache::key("web", WITH_APP);
            self.router
                .answers
                .current(&key, generation, &store.snapshot(), now)
        }
    }

    #[test]
    fn kept_answers_match_a_fresh_walk_through_scrapes_removals_and_seconds() {
        let (store, keeping, walking) = keeping_and_walking();
        let both = |now: UnixNanos| {
            let kept = keeping.get_at(WEB_PODS, WITH_APP, now);
            assert_eq!(kept, walking.get_at(WEB_PODS, WITH_APP, now));
            assert_eq!(kept.0, 200);
            serde_json::from_str::<serde_json::Value>(&kept.1).unwrap()
        };
        let now = T0 + 10 * SECOND;
        let first = both(now);
        assert_eq!(names(&first), ["web/back-1", "web/front-1"]);
        assert_eq!(keeping.router.answers.len(), 1);
        assert!(walking.router.answers.is_empty());

        // Nothing changed: the very answer kept is served.
        let again = keeping.kept_web_apps(7, &store, now).unwrap();
        let once_more = keeping.kept_web_apps(7, &store, now + SECOND / 2).unwrap();
        assert!(Arc::ptr_eq(&again, &once_more));
        // Another view may have other pods or labels: not current.
        assert!(keeping.kept_web_apps(8, &store, now).is_none());

        // The next second: the same pods, stamped with the new request time.
        let later = both(now + 3 * SECOND / 2);
        assert_ne!(later, first);
        assert_eq!(
            later["items"][0]["metadata"]["creationTimestamp"],
            crate::api::gofmt::rfc3339(now + SECOND)
                .iter()
                .map(|&b| char::from(b))
                .collect::<String>()
        );

        // node-a publishes a new point: back-1 is fetched again, front-1 kept.
        node_a_publishes_again(&store);
        let now = T0 + 21 * SECOND;
        assert!(keeping.kept_web_apps(7, &store, now).is_some());
        let refreshed = both(now);
        assert_ne!(
            refreshed["items"][0]["containers"],
            later["items"][0]["containers"]
        );
        assert_eq!(
            refreshed["items"][1]["containers"],
            later["items"][1]["containers"]
        );
        assert_eq!(refreshed["items"][0]["timestamp"], "2026-05-28T20:27:00Z");

        // A Running pod the view selects gains metrics on node-b: the walk decides again.
        front_2_gains_metrics(&store);
        let now = T0 + 31 * SECOND;
        assert!(keeping.kept_web_apps(7, &store, now).is_none());
        assert_eq!(
            names(&both(now)),
            ["web/back-1", "web/front-1", "web/front-2"]
        );

        // back-1 leaves the index: the walk decides again.
        store.remove_pod("web", "back-1");
        assert!(keeping.kept_web_apps(7, &store, now).is_none());
        assert_eq!(names(&both(now)), ["web/front-1", "web/front-2"]);

        // node-b goes: front-1 with it.
        store.remove_node("node-b");
        assert!(keeping.kept_web_apps(7, &store, now).is_none());
        assert_eq!(names(&both(now)), Vec::<String>::new());
    }

    const ALL_PODS: &str = "/apis/metrics.k8s.io/v1beta1/pods";

    #[test]
    fn the_kept_whole_list_matches_a_fresh_walk_through_scrapes_removals_and_seconds() {
        let (store, keeping, walking) = keeping_and_walking();
        let both = |now: UnixNanos| {
            let kept = keeping.get_at(ALL_PODS, "", now);
            assert_eq!(kept, walking.get_at(ALL_PODS, "", now));
            assert_eq!(kept.0, 200);
            serde_json::from_str::<serde_json::Value>(&kept.1).unwrap()
        };
        let kept_whole = |now: UnixNanos| {
            keeping
                .router
                .answers
                .current(AnswerCache::whole_list_key(), 7, &store.snapshot(), now)
        };
        let now = T0 + 10 * SECOND;
        let first = both(now);
        assert_eq!(
            names(&first),
            ["kube-system/dns-1", "web/back-1", "web/front-1"]
        );
        assert_eq!(keeping.router.answers.len(), 1);
        assert!(walking.router.answers.is_empty());
        let again = kept_whole(now).unwrap();
        assert!(Arc::ptr_eq(&again, &kept_whole(now + SECOND / 2).unwrap()));
        // Queries without selectors share the one answer.
        assert_eq!(both(now), first);
        assert_eq!(
            keeping.get_at(ALL_PODS, "labelSelector=&limit=5", now),
            walking.get_at(ALL_PODS, "labelSelector=&limit=5", now)
        );
        assert_eq!(keeping.router.answers.len(), 1);

        // The next second, then a new point of node-a's.
        assert_ne!(both(now + SECOND), first);
        node_a_publishes_again(&store);
        let now = T0 + 21 * SECOND;
        assert!(kept_whole(now).is_some());
        let refreshed = both(now);
        assert_eq!(refreshed["items"][1]["timestamp"], "2026-05-28T20:27:00Z");
        assert_eq!(
            refreshed["items"][0]["containers"],
            first["items"][0]["containers"]
        );

        // Pods gaining metrics, leaving the index, a node going: walked again each time.
        front_2_gains_metrics(&store);
        let now = T0 + 31 * SECOND;
        assert!(kept_whole(now).is_none());
        assert_eq!(
            names(&both(now)),
            [
                "kube-system/dns-1",
                "web/back-1",
                "web/front-1",
                "web/front-2"
            ]
        );
        store.remove_pod("web", "back-1");
        assert!(kept_whole(now).is_none());
        both(now);
        store.remove_node("node-b");
        assert!(kept_whole(now).is_none());
        assert_eq!(names(&both(now)), Vec::<String>::new());
    }

    #[test]
    fn a_long_kept_answer_is_refreshed_segment_by_segment() {
        let (store, fixture) = wide_cluster(300);
        let keeping = harness(Arc::clone(&store), with_generation(&fixture, 1), None);
        let walking = harness(Arc::clone(&store), fixture, None);
        let kept = |now: UnixNanos| {
            keeping
                .router
                .answers
                .current(AnswerCache::whole_list_key(), 1, &store.snapshot(), now)
                .unwrap()
        };
        let both = |now: UnixNanos| {
            let got = keeping.get_at(ALL_PODS, "", now);
            assert_eq!(got.0, 200);
            assert!(got == walking.get_at(ALL_PODS, "", now));
            got
        };
        let now = T0 + 12 * SECOND;
        let first = both(now);
        let before = kept(now);
        assert!(before.segments().len() > 10, "{}", before.segments().len());
        assert!(before
            .segments()
            .iter()
            .all(|segment| segment.len() <= 16 * 1024));

        // node-0007's pods (one in each of three namespaces) get a new point: at most the
        // three segments holding them are rebuilt, the others shared.
        let node = Name::from("node-0007");
        let pods = [
            ("ns-0", "pod-7-0"),
            ("ns-1", "pod-7-1"),
            ("ns-2", "pod-7-2"),
        ];
        store.write_node(
            &node,
            &scrape(T0 + 20 * SECOND, 150, &pods),
            T0 + 20 * SECOND,
        );
        let refreshed = both(now);
        assert_ne!(refreshed, first);
        let after = kept(now);
        assert_eq!(after.segments().len(), before.segments().len());
        let rebuilt = after
            .segments()
            .iter()
            .zip(before.segments().iter())
            .filter(|(a, b)| a.as_ptr() != b.as_ptr())
            .count();
        assert!((1..=3).contains(&rebuilt), "{rebuilt} segments rebuilt");

        // The next second: every segment carries the new request time.
        both(now + SECOND);
        let restamped = kept(now + SECOND);
        assert!(restamped
            .segments()
            .iter()
            .zip(after.segments().iter())
            .all(|(a, b)| a.as_ptr() != b.as_ptr()));
    }

    #[test]
    fn a_whole_list_too_large_for_its_share_of_the_budget_is_walked_each_time() {
        let (store, fixture) = cluster();
        let mut h = harness(store, with_generation(&fixture, 1), None);
        let (_, whole) = h.get_at(ALL_PODS, "", T0 + 10 * SECOND);
        assert_eq!(h.router.answers.held_bytes(), whole.len());
        // Budgets whose share is a little less than the list's estimate.
        let estimate = h.router.store.snapshot().pod_count() * PodList::ITEM_BYTES;
        h.router.answers = Arc::new(AnswerCache::with_budget(answers::MAX_SHARE * estimate - 1));
        assert_eq!(h.get_at(ALL_PODS, "", T0 + 10 * SECOND).1, whole);
        assert!(h.router.answers.is_empty());
    }

    #[test]
    fn only_json_namespaced_selections_are_kept() {
        let (_store, keeping, _walking) = keeping_and_walking();
        let now = T0 + 10 * SECOND;
        for (path, query) in [
            (WEB_PODS, ""),
            ("/apis/metrics.k8s.io/v1beta1/pods", WITH_APP),
            (
                "/apis/metrics.k8s.io/v1beta1/namespaces/web/pods/front-1",
                "",
            ),
            (WEB_PODS, "fieldSelector=metadata.name%3Dfront-1"),
        ] {
            assert_eq!(keeping.get_at(path, query, now).0, 200, "{path}?{query}");
        }
        let protobuf = keeping.router.respond_to(
            &Method::GET,
            WEB_PODS,
            WITH_APP,
            RequestHeaders {
                accept: Some(negotiate::PROTOBUF_MEDIA_TYPE),
                if_none_match: None,
            },
            now,
        );
        assert_eq!(protobuf.status(), 200);
        assert!(keeping.router.answers.is_empty());
    }

    #[test]
    fn self_metrics_count_the_kept_answers_and_their_bytes() {
        let (_store, keeping, _walking) = keeping_and_walking();
        let (_, before) = keeping.get("/metrics");
        assert!(
            before.contains("metrics_server_api_kept_answers 0"),
            "{before}"
        );
        let (_, answer) = keeping.get_at(WEB_PODS, WITH_APP, T0 + 10 * SECOND);
        let (_, after) = keeping.get("/metrics");
        assert!(
            after.contains("metrics_server_api_kept_answers 1"),
            "{after}"
        );
        assert!(
            after.contains(&format!(
                "metrics_server_api_kept_answer_bytes {}",
                answer.len()
            )),
            "{after}"
        );
    }

    #[test]
    fn kept_answers_stay_within_their_budget() {
        let (store, fixture) = cluster();
        let one = {
            let h = harness(Arc::clone(&store), with_generation(&fixture, 1), None);
            h.get_at(WEB_PODS, WITH_APP, T0 + 10 * SECOND);
            h.router.answers.held_bytes()
        };
        let mut h = harness(store, with_generation(&fixture, 1), None);
        h.router.answers = Arc::new(AnswerCache::with_budget(answers::MAX_SHARE * one));
        for i in 0..10 {
            let query = format!("{WITH_APP}&limit={i}");
            assert_eq!(h.get_at(WEB_PODS, &query, T0 + 10 * SECOND).0, 200);
            assert!(h.router.answers.held_bytes() <= answers::MAX_SHARE * one);
        }
        assert!((1..=answers::MAX_SHARE).contains(&h.router.answers.len()));
        assert_eq!(h.router.answers.held_bytes(), h.router.answers.len() * one);
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

    const KUBECTL_GET: &str = "application/json;as=Table;v=v1;g=meta.k8s.io,application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json";

    #[test]
    fn kubectl_get_receives_a_table_of_the_selected_items() {
        let (store, fixture) = cluster();
        let h = harness(store, fixture, None);
        let (code, content_type, body) = h.get_accepting(
            "/apis/metrics.k8s.io/v1beta1/namespaces/web/pods",
            KUBECTL_GET,
        );
        assert_eq!((code, content_type.as_str()), (200, "application/json"));
        let table: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(table["kind"], "Table");
        let columns: Vec<&str> = table["columnDefinitions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["name"].as_str().unwrap())
            .collect();
        assert_eq!(columns, ["Name", "cpu", "memory", "Window"]);
        let rows = table["rows"].as_array().unwrap();
        let names: Vec<&str> = rows
            .iter()
            .map(|r| r["cells"][0].as_str().unwrap())
            .collect();
        assert_eq!(names, ["back-1", "front-1"]);
        // 1 core-second over 10 s, 64Mi, window 10s.
        assert_eq!(
            rows[0]["cells"],
            serde_json::json!(["back-1", "100m", "64Mi", "10s"])
        );
        assert_eq!(rows[0]["object"]["kind"], "PartialObjectMetadata");
        assert_eq!(rows[0]["object"]["metadata"]["namespace"], "web");

        let (code, _, body) = h.get_accepting(
            "/apis/metrics.k8s.io/v1beta1/nodes/node-a?includeObject=None",
            KUBECTL_GET,
        );
        assert_eq!(code, 200);
        let table: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(table["rows"].as_array().unwrap().len(), 1);
        assert_eq!(table["rows"][0]["cells"][0], "node-a");
        assert!(table["rows"][0]["object"].is_null());

        let (_, _, body) = h.get_accepting(
            "/apis/metrics.k8s.io/v1beta1/nodes?includeObject=Object",
            KUBECTL_GET,
        );
        let table: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(table["rows"][1]["object"]["kind"], "NodeMetrics");
    }

    /// A store of `nodes` nodes with three pods each in namespaces `ns-0..3`, and its view.
    fn wide_cluster(nodes: usize) -> (Arc<Store>, Fixture) {
        let names: Vec<(String, Vec<(String, String)>)> = (0..nodes)
            .map(|n| {
                let pods = (0..3)
                    .map(|p| (format!("ns-{p}"), format!("pod-{n}-{p}")))
                    .collect();
                (format!("node-{n:04}"), pods)
            })
            .collect();
        let borrowed: Vec<(&str, Vec<(&str, &str)>)> = names
            .iter()
            .map(|(node, pods)| {
                let pods = pods
                    .iter()
                    .map(|(ns, p)| (ns.as_str(), p.as_str()))
                    .collect();
                (node.as_str(), pods)
            })
            .collect();
        let nodes_and_pods: Vec<(&str, &[(&str, &str)])> = borrowed
            .iter()
            .map(|(node, pods)| (*node, pods.as_slice()))
            .collect();
        let store = store_with(&nodes_and_pods);
        let mut fixture = Fixture {
            synced: true,
            ..Fixture::default()
        };
        for (i, (node, pods)) in names.iter().enumerate() {
            fixture.nodes.insert(node.clone(), labels(&[("zone", "a")]));
            for (ns, pod) in pods {
                let app = if i % 2 == 0 { "even" } else { "odd" };
                fixture
                    .pods
                    .insert((ns.clone(), pod.clone()), (labels(&[("app", app)]), true));
            }
        }
        (store, fixture)
    }

    async fn collected(response: Response<Body>) -> (u16, Option<String>, Vec<u8>) {
        let code = response.status().as_u16();
        let content_type = response
            .headers()
            .get(CONTENT_TYPE)
            .map(|v| v.to_str().unwrap().to_owned());
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        (code, content_type, bytes.to_vec())
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn long_lists_rendered_off_thread_carry_the_bytes_of_a_buffered_render() {
        // 1,200 nodes x 3 pods: the all-pods JSON list spans several chunks.
        let (store, fixture) = wide_cluster(1_200);
        let router_over = |fixture: Fixture, threshold: usize| {
            Router::new(
                Arc::clone(&store),
                Arc::new(FixedSource(Arc::new(fixture))),
                Arc::new(Telemetry::new()),
                None,
                Auth::default(),
                HealthConfig {
                    resolution: Duration::from_secs(10),
                    startup_grace: Duration::from_secs(20),
                    started: T0,
                },
            )
            .with_off_thread_items(threshold)
        };
        let buffered = router_over(fixture.clone(), usize::MAX);
        let streamed = router_over(fixture.clone(), 10);
        let now = T0 + 12 * SECOND;
        let mut streamed_bodies = 0;
        for (path, query) in [
            ("/apis/metrics.k8s.io/v1beta1/pods", ""),
            (
                "/apis/metrics.k8s.io/v1beta1/pods",
                "labelSelector=app%3Deven",
            ),
            ("/apis/metrics.k8s.io/v1beta1/namespaces/ns-1/pods", ""),
            (
                "/apis/metrics.k8s.io/v1beta1/namespaces/ns-1/pods",
                "labelSelector=app%3Deven",
            ),
            (
                "/apis/metrics.k8s.io/v1beta1/namespaces/ns-2/pods",
                "labelSelector=app%3Dodd&fieldSelector=metadata.name!%3Dpod-7-2",
            ),
            ("/apis/metrics.k8s.io/v1beta1/nodes", ""),
            (
                "/apis/metrics.k8s.io/v1beta1/nodes",
                "fieldSelector=metadata.name%3Dnode-0007",
            ),
        ] {
            for accept in [
                None,
                Some(KUBECTL_GET),
                Some("application/vnd.kubernetes.protobuf"),
            ] {
                let headers = RequestHeaders {
                    accept,
                    if_none_match: None,
                };
                let expected =
                    collected(buffered.respond_to(&Method::GET, path, query, headers, now)).await;
                let response = streamed.respond_to(&Method::GET, path, query, headers, now);
                assert!(!buffered
                    .respond_to(&Method::GET, path, query, headers, now)
                    .body()
                    .is_streamed());
                if response.body().is_streamed() {
                    streamed_bodies += 1;
                }
                let got = collected(response).await;
                assert_eq!(got.0, 200, "{path}?{query} {accept:?}");
                assert_eq!(
                    (got.0, &got.1),
                    (expected.0, &expected.1),
                    "{path}?{query} {accept:?}"
                );
                assert!(
                    got.2 == expected.2,
                    "{path}?{query} {accept:?}: {} bytes streamed, {} buffered",
                    got.2.len(),
                    expected.2.len()
                );
            }
        }
        assert_eq!(streamed_bodies, 21, "every list here is long");
        // The JSON list really spans several chunks.
        let (_, _, all) =
            collected(streamed.respond(&Method::GET, "/apis/metrics.k8s.io/v1beta1/pods", "", now))
                .await;
        assert!(all.len() > 2 * body::CHUNK_BYTES, "{}", all.len());

        // A view with a generation: the whole list is kept, found on the blocking pool and
        // handed over in one piece, the same bytes the first time and from the kept answer.
        let kept = router_over(with_generation(&fixture, 3), 10);
        for _ in 0..2 {
            let response = kept.respond(&Method::GET, "/apis/metrics.k8s.io/v1beta1/pods", "", now);
            assert!(response.body().is_streamed());
            let (code, _, bytes) = collected(response).await;
            assert_eq!(code, 200);
            assert!(
                bytes == all,
                "{} bytes kept, {} walked",
                bytes.len(),
                all.len()
            );
            assert_eq!(kept.answers.len(), 1);
        }
    }

    #[test]
    fn the_chunked_json_list_opens_and_closes_as_the_renderer_does() {
        let mut empty = Vec::new();
        render::pod_metrics_list_from_parts(&mut empty, std::iter::empty(), T0);
        assert_eq!(
            empty,
            [render::POD_LIST_JSON_HEAD, render::LIST_JSON_TAIL].concat()
        );
    }

    #[test]
    fn a_selector_picking_few_pods_of_a_namespace_is_answered_here_and_many_off_thread() {
        let (store, fixture) = cluster();
        let h = harness(store, fixture, None);
        // At most one item here: `web` holds four pods, two of them served.
        let router = h.router.with_off_thread_items(1);
        let get =
            |path: &str, query: &str| router.respond(&Method::GET, path, query, T0 + 12 * SECOND);
        let web = "/apis/metrics.k8s.io/v1beta1/namespaces/web/pods";
        let picked = get(web, "labelSelector=app%3Dfront");
        assert!(!picked.body().is_streamed());
        let (code, body) = body_of(picked);
        assert_eq!(code, 200);
        let list: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(names(&list), ["web/front-1"]);
        // Outside a runtime the long list is rendered here too, but it took the other path:
        // its body still has the same items.
        let (code, body) = body_of(get(web, ""));
        assert_eq!(code, 200);
        let list: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(names(&list), ["web/back-1", "web/front-1"]);
        let telemetry = h.telemetry.encode();
        assert!(
            telemetry.contains("metrics_server_api_metric_freshness_seconds_count 3"),
            "{telemetry}"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn in_a_runtime_a_list_selecting_many_pods_is_streamed() {
        let (store, fixture) = cluster();
        let h = harness(store, fixture, None);
        let router = h.router.with_off_thread_items(1);
        let web = "/apis/metrics.k8s.io/v1beta1/namespaces/web/pods";
        let now = T0 + 12 * SECOND;
        let picked = router.respond(&Method::GET, web, "labelSelector=app%3Dfront", now);
        assert!(!picked.body().is_streamed());
        let many = router.respond(&Method::GET, web, "", now);
        assert!(many.body().is_streamed());
        let (code, _, body) = collected(many).await;
        assert_eq!(code, 200);
        let list: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(names(&list), ["web/back-1", "web/front-1"]);
    }

    #[test]
    fn short_lists_are_answered_whole_with_their_length() {
        let (store, fixture) = cluster();
        let h = harness(store, fixture, None);
        let response = h.router.respond(
            &Method::GET,
            "/apis/metrics.k8s.io/v1beta1/namespaces/web/pods",
            "",
            T0 + 12 * SECOND,
        );
        assert!(!response.body().is_streamed());
        assert!(hyper::body::Body::size_hint(response.body())
            .exact()
            .is_some_and(|n| n > 0));
    }

    #[test]
    fn a_bad_include_object_is_a_bad_request_after_the_read_succeeds() {
        let (store, fixture) = cluster();
        let h = harness(store, fixture, None);
        let (code, content_type, body) = h.get_accepting(
            "/apis/metrics.k8s.io/v1beta1/nodes?includeObject=Everything",
            KUBECTL_GET,
        );
        assert_eq!((code, content_type.as_str()), (400, "application/json"));
        let status: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(status["reason"], "BadRequest");
        assert_eq!(
            status["message"],
            "Unable to convert to Table as requested: includeObject: Invalid value: \"Everything\": must be 'Metadata', 'Object', 'None', or empty"
        );
        // The read's own failure comes first.
        let (code, _, _) = h.get_accepting(
            "/apis/metrics.k8s.io/v1beta1/nodes/missing?includeObject=Everything",
            KUBECTL_GET,
        );
        assert_eq!(code, 404);
        // Without a table the parameter means nothing.
        let (code, _, _) = h.get_accepting(
            "/apis/metrics.k8s.io/v1beta1/nodes?includeObject=Everything",
            "application/json",
        );
        assert_eq!(code, 200);
    }

    #[test]
    fn protobuf_is_served_to_clients_preferring_it_and_so_are_their_errors() {
        let (store, fixture) = cluster();
        let h = harness(store, fixture, None);
        let accept = "application/vnd.kubernetes.protobuf, */*";
        let (code, content_type, body) =
            h.get_accepting("/apis/metrics.k8s.io/v1beta1/pods", accept);
        assert_eq!(code, 200);
        assert_eq!(content_type, "application/vnd.kubernetes.protobuf");
        assert!(body.starts_with("k8s\0"));
        assert!(body.contains("PodMetricsList"));
        assert!(body.contains("front-1") && body.contains("dns-1"));

        let (code, content_type, body) =
            h.get_accepting("/apis/metrics.k8s.io/v1beta1/nodes/nope", accept);
        assert_eq!(
            (code, content_type.as_str()),
            (404, "application/vnd.kubernetes.protobuf")
        );
        assert!(body.starts_with("k8s\0"));
        assert!(body.contains("Status") && body.contains("node \"nope\" not found"));
    }

    #[test]
    fn an_unservable_accept_header_is_not_acceptable_before_anything_is_read() {
        let (store, fixture) = cluster();
        let h = harness(store, fixture, None);
        for path in [
            "/apis/metrics.k8s.io/v1beta1/nodes",
            "/apis/metrics.k8s.io/v1beta1/nodes/missing",
            "/apis/metrics.k8s.io/v1beta1/pods?labelSelector=a%20in%20(b",
        ] {
            let (code, content_type, body) = h.get_accepting(path, "application/yaml");
            assert_eq!(
                (code, content_type.as_str()),
                (406, "application/json"),
                "{path}"
            );
            let status: serde_json::Value = serde_json::from_str(&body).unwrap();
            assert_eq!(status["reason"], "NotAcceptable");
            assert_eq!(status["code"], 406);
            assert_eq!(
                status["message"],
                "only the following media types are accepted: application/json, application/vnd.kubernetes.protobuf"
            );
        }
    }

    #[test]
    fn head_is_served_without_a_body_only_where_upstream_serves_it() {
        let (store, fixture) = cluster();
        let h = harness(store, fixture, None);
        let head = |path: &str| body_of(h.request(Method::HEAD, path, RequestHeaders::default()));
        assert_eq!(head("/apis/metrics.k8s.io/v1beta1/nodes").0, 405);
        let refused = h.request(
            Method::POST,
            "/apis/metrics.k8s.io/v1beta1/nodes",
            RequestHeaders::default(),
        );
        assert_eq!(header_of(&refused, ALLOW), "GET");
        let refused = h.request(Method::DELETE, "/openapi/v2", RequestHeaders::default());
        assert_eq!(header_of(&refused, ALLOW), "GET, HEAD");
        assert_eq!(head("/version").0, 405);
        for path in ["/openapi/v2", "/openapi/v3", "/livez"] {
            let (code, body) = head(path);
            assert_eq!((code, body.as_str()), (200, ""), "{path}");
        }
        let response = h.request(Method::HEAD, "/openapi/v2", RequestHeaders::default());
        assert_eq!(
            header_of(&response, ETAG),
            format!("\"{}\"", openapi::v2_hash())
        );
    }

    #[test]
    fn openapi_v2_is_json_with_an_etag_and_not_modified_when_it_matches() {
        let h = harness(store_with(&[]), Fixture::default(), None);
        // What the aggregator sends.
        let response = h.request(
            Method::GET,
            "/openapi/v2",
            RequestHeaders {
                accept: Some("application/json"),
                if_none_match: None,
            },
        );
        let etag = header_of(&response, ETAG);
        assert_eq!(etag, format!("\"{}\"", openapi::v2_hash()));
        assert_eq!(header_of(&response, VARY), "Accept");
        assert!(header_of(&response, LAST_MODIFIED).ends_with(" GMT"));
        let (code, body) = body_of(response);
        assert_eq!(code, 200);
        assert_eq!(body.as_bytes(), openapi::v2());

        for if_none_match in [etag.as_str(), "*", &format!("\"x\", W/{etag}")] {
            let response = h.request(
                Method::GET,
                "/openapi/v2",
                RequestHeaders {
                    accept: Some("application/json"),
                    if_none_match: Some(if_none_match),
                },
            );
            assert_eq!(header_of(&response, ETAG), etag);
            assert_eq!(body_of(response), (304, String::new()), "{if_none_match}");
        }
        let response = h.request(
            Method::GET,
            "/openapi/v2",
            RequestHeaders {
                accept: None,
                if_none_match: Some("\"stale\""),
            },
        );
        assert_eq!(response.status(), 200);

        let response = h.request(
            Method::GET,
            "/openapi/v2",
            RequestHeaders {
                accept: Some("application/com.github.proto-openapi.spec.v2@v1.0+protobuf"),
                if_none_match: None,
            },
        );
        assert_eq!(body_of(response), (406, String::new()));
    }

    #[test]
    fn openapi_v3_group_is_immutable_under_its_hash_and_redirects_a_stale_one() {
        let h = harness(store_with(&[]), Fixture::default(), None);
        let (code, index) = h.get_json("/openapi/v3");
        assert_eq!(code, 200);
        let url = index["paths"]["apis/metrics.k8s.io/v1beta1"]["serverRelativeURL"]
            .as_str()
            .unwrap()
            .to_owned();
        let hash = openapi::v3_group_hash();
        assert_eq!(
            url,
            format!("/openapi/v3/apis/metrics.k8s.io/v1beta1?hash={hash}")
        );

        let response = h.request(Method::GET, &url, RequestHeaders::default());
        assert_eq!(header_of(&response, CACHE_CONTROL), "public, immutable");
        assert!(header_of(&response, EXPIRES).ends_with(" UTC"));
        assert_eq!(header_of(&response, ETAG), format!("\"{hash}\""));
        let (code, body) = body_of(response);
        assert_eq!(code, 200);
        assert_eq!(body.as_bytes(), openapi::v3_group());

        let response = h.request(
            Method::GET,
            "/openapi/v3/apis/metrics.k8s.io/v1beta1",
            RequestHeaders::default(),
        );
        assert_eq!(header_of(&response, CACHE_CONTROL), "");
        assert_eq!(response.status(), 200);

        let response = h.request(
            Method::GET,
            "/openapi/v3/apis/metrics.k8s.io/v1beta1?hash=0123",
            RequestHeaders::default(),
        );
        assert_eq!(response.status(), 301);
        assert_eq!(header_of(&response, LOCATION), url);

        let etag = format!("\"{hash}\"");
        let response = h.request(
            Method::GET,
            &url,
            RequestHeaders {
                accept: Some("application/json"),
                if_none_match: Some(&etag),
            },
        );
        assert_eq!(header_of(&response, CACHE_CONTROL), "public, immutable");
        assert_eq!(body_of(response), (304, String::new()));

        let response = h.request(
            Method::GET,
            &url,
            RequestHeaders {
                accept: Some("application/com.github.proto-openapi.spec.v3.v1.0+protobuf"),
                if_none_match: None,
            },
        );
        assert_eq!(body_of(response), (406, String::new()));
        let (code, _) = h.get("/openapi/v3/apis/other.k8s.io/v1");
        assert_eq!(code, 404);
    }

    fn borrowed(pods: &[(String, String)]) -> Vec<(&str, &str)> {
        pods.iter()
            .map(|(ns, n)| (ns.as_str(), n.as_str()))
            .collect()
    }

    #[test]
    fn a_namespaced_selection_lists_exactly_the_served_running_matching_pods() {
        // Every mix of: scraped or not, known to the view or not, Running or not, matching or
        // not, spread over two nodes and between pods of neighbouring namespaces.
        let mut on_a: Vec<(String, String)> = Vec::new();
        let mut on_b: Vec<(String, String)> = Vec::new();
        let mut fixture = Fixture {
            synced: true,
            ..Fixture::default()
        };
        let mut expected = Vec::new();
        for ns in ["app", "apps", "ap"] {
            for case in 0..48u32 {
                let name = format!("pod-{case:02}");
                let (scraped, known, running, matching) =
                    (case & 1 != 0, case & 2 != 0, case & 4 != 0, case & 8 != 0);
                if scraped {
                    let node = if case % 3 == 0 { &mut on_a } else { &mut on_b };
                    node.push((ns.to_owned(), name.clone()));
                }
                if known {
                    let app = if matching { "web" } else { "db" };
                    fixture.pods.insert(
                        (ns.into(), name.as_str().into()),
                        (labels(&[("app", app)]), running),
                    );
                }
                if ns == "apps" && scraped && known && running && matching {
                    expected.push(format!("apps/{name}"));
                }
            }
        }
        let (a, b) = (borrowed(&on_a), borrowed(&on_b));
        let store = store_with(&[("node-a", &a), ("node-b", &b)]);
        let h = harness(store, fixture, None);
        let (code, list) =
            h.get_json("/apis/metrics.k8s.io/v1beta1/namespaces/apps/pods?labelSelector=app%3Dweb");
        assert_eq!(code, 200);
        assert_eq!(names(&list), expected);
        // Scraped, known, Running and matching: one case in 16, on both nodes.
        assert_eq!(expected, ["apps/pod-15", "apps/pod-31", "apps/pod-47"]);
    }

    #[test]
    fn http_dates_name_the_weekday_and_month() {
        assert_eq!(http_date(0, "GMT"), "Thu, 01 Jan 1970 00:00:00 GMT");
        assert_eq!(
            http_date(1_769_539_713, "UTC"),
            "Tue, 27 Jan 2026 18:48:33 UTC"
        );
        assert_eq!(http_date(-1, "GMT"), "Wed, 31 Dec 1969 23:59:59 GMT");
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig { cases: 64, ..Default::default() })]

        /// Joining the snapshot's sorted walk with the view's gives every list exactly what
        /// looking up each pod's labels gives, whatever pods either side knows and whichever
        /// are Running.
        #[test]
        fn joined_walks_list_what_label_lookups_list(
            served in proptest::collection::vec((0..3usize, 0..6usize, 0..3usize), 0..24),
            known in proptest::collection::vec((0..3usize, 0..6usize, proptest::bool::ANY, 0..2usize), 0..24),
        ) {
            let names: Vec<(String, String, String)> = served
                .iter()
                .map(|(ns, pod, node)| (format!("ns{ns}"), format!("p{pod}"), format!("n{node}")))
                .collect();
            let mut by_node: BTreeMap<&str, Vec<(&str, &str)>> = BTreeMap::new();
            for (ns, pod, node) in &names {
                by_node.entry(node.as_str()).or_default().push((ns.as_str(), pod.as_str()));
            }
            let nodes: Vec<(&str, &[(&str, &str)])> =
                by_node.iter().map(|(node, pods)| (*node, pods.as_slice())).collect();
            let store = store_with(&nodes);
            let fixture = |lookups_only| {
                let mut fixture = Fixture { synced: true, lookups_only, ..Fixture::default() };
                for (ns, pod, running, app) in &known {
                    fixture.pods.insert(
                        (format!("ns{ns}"), format!("p{pod}")),
                        (labels(&[("app", if *app == 0 { "a" } else { "b" })]), *running),
                    );
                }
                fixture
            };
            // Every list long, so filtered lists take the full walk too (rendered inline here,
            // outside a runtime), not only the short walks that select before rendering.
            let long = |harness: Harness| Harness {
                router: harness.router.with_off_thread_items(0),
                telemetry: harness.telemetry,
            };
            let joined = long(harness(Arc::clone(&store), fixture(false), None));
            let looked_up = long(harness(store, fixture(true), None));
            for path in [
                "/apis/metrics.k8s.io/v1beta1/pods",
                "/apis/metrics.k8s.io/v1beta1/pods?labelSelector=app%3Da",
                "/apis/metrics.k8s.io/v1beta1/pods?fieldSelector=metadata.name%3Dp1",
                "/apis/metrics.k8s.io/v1beta1/namespaces/ns1/pods",
                "/apis/metrics.k8s.io/v1beta1/namespaces/ns2/pods?labelSelector=app%21%3Db",
            ] {
                let (code, body) = joined.get(path);
                proptest::prop_assert_eq!(code, 200);
                proptest::prop_assert_eq!((code, body), looked_up.get(path), "{}", path);
            }
        }
    }
}
