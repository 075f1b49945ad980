//! Request dispatch and the core API: discovery, nodes, pods, the authentication ConfigMap, and
//! the two review endpoints.
//!
//! Lists are rendered by a task into a bounded channel so a 300,000-pod list is never held as one
//! buffer and a slow client slows only its own producer. Watches live in `watches`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{HeaderValue, ACCEPT, AUTHORIZATION, CONTENT_TYPE};
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use serde_json::{json, Value};
use tokio::sync::mpsc;
use tracing::debug;

use super::auth::{authorize, Attributes, UserInfo};
use super::body::Body;
use super::objects::{push_node, push_pod, rfc3339, status_failure};
use super::selector::{FieldSelector, LabelSelector};
use super::table::{self, TableKind};
use super::{proxy, Shared};
use crate::cluster::{Node, Pod};

/// The largest review body accepted.
const MAX_REVIEW_BODY: usize = 1 << 20;
/// Rendered output is sent in chunks of about this size.
pub(super) const CHUNK: usize = 64 * 1024;
/// The longest watch a client may ask for.
pub(super) const MAX_WATCH: Duration = Duration::from_secs(2 * 3600);

const AUTH_CONFIGMAP_NAMESPACE: &str = "kube-system";
const AUTH_CONFIGMAP_NAME: &str = "extension-apiserver-authentication";

/// A JSON response.
fn json_response(status: StatusCode, body: impl Into<Bytes>) -> Response<Body> {
    let mut response = Response::new(Body::full(body));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

/// A `Status` failure response.
pub(crate) fn status_response(status: StatusCode, reason: &str, message: &str) -> Response<Body> {
    json_response(status, status_failure(status.as_u16(), reason, message))
}

fn unauthorized() -> Response<Body> {
    status_response(StatusCode::UNAUTHORIZED, "Unauthorized", "Unauthorized")
}

fn not_found() -> Response<Body> {
    status_response(
        StatusCode::NOT_FOUND,
        "NotFound",
        "the server could not find the requested resource",
    )
}

fn bad_request(message: &str) -> Response<Body> {
    status_response(StatusCode::BAD_REQUEST, "BadRequest", message)
}

/// The kinds served from the cluster.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Kind {
    Nodes,
    Pods,
    ConfigMaps,
}

impl Kind {
    fn resource(self) -> &'static str {
        match self {
            Kind::Nodes => "nodes",
            Kind::Pods => "pods",
            Kind::ConfigMaps => "configmaps",
        }
    }

    pub(super) fn object_kind(self) -> &'static str {
        match self {
            Kind::Nodes => "Node",
            Kind::Pods => "Pod",
            Kind::ConfigMaps => "ConfigMap",
        }
    }

    fn fields(self) -> &'static [&'static str] {
        match self {
            Kind::Nodes => &["metadata.name"],
            Kind::Pods => &[
                "metadata.name",
                "metadata.namespace",
                "spec.nodeName",
                "status.phase",
            ],
            Kind::ConfigMaps => &["metadata.name", "metadata.namespace"],
        }
    }
}

/// A recognised request.
#[derive(Debug)]
enum Route {
    Version,
    Health,
    Api,
    ApiV1,
    Apis,
    Group(&'static str),
    GroupVersion(&'static str),
    Resource {
        kind: Kind,
        namespace: Option<String>,
        name: Option<String>,
    },
    TokenReview,
    SubjectAccessReview,
    Metrics,
    NotFound,
}

fn route(method: &Method, path: &str) -> Route {
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    let get = method == Method::GET || method == Method::HEAD;
    let post = method == Method::POST;
    let resource = |kind, namespace: Option<&str>, name: Option<&str>| Route::Resource {
        kind,
        namespace: namespace.map(str::to_owned),
        name: name.map(str::to_owned),
    };
    let kind_of = |s: &str| match s {
        "nodes" => Some(Kind::Nodes),
        "pods" => Some(Kind::Pods),
        "configmaps" => Some(Kind::ConfigMaps),
        _ => None,
    };
    match segments.as_slice() {
        ["apis", "metrics.k8s.io", _, ..] => Route::Metrics,
        // No OpenAPI of its own: the v3 index and the metrics group's document are the
        // aggregated server's, which is what `kubectl explain` of a metrics kind reads.
        ["openapi", "v3"] | ["openapi", "v3", "apis", "metrics.k8s.io", ..] if get => {
            Route::Metrics
        }
        _ if !get && !post => Route::NotFound,
        ["version"] if get => Route::Version,
        ["healthz" | "livez" | "readyz", ..] if get => Route::Health,
        ["api"] if get => Route::Api,
        ["api", "v1"] if get => Route::ApiV1,
        ["apis"] if get => Route::Apis,
        ["apis", group] if get => match *group {
            "authentication.k8s.io" => Route::Group("authentication.k8s.io"),
            "authorization.k8s.io" => Route::Group("authorization.k8s.io"),
            "metrics.k8s.io" => Route::Group("metrics.k8s.io"),
            _ => Route::NotFound,
        },
        ["apis", "authentication.k8s.io", "v1"] if get => {
            Route::GroupVersion("authentication.k8s.io")
        }
        ["apis", "authorization.k8s.io", "v1"] if get => {
            Route::GroupVersion("authorization.k8s.io")
        }
        ["apis", "authentication.k8s.io", "v1", "tokenreviews"] if post => Route::TokenReview,
        ["apis", "authorization.k8s.io", "v1", "subjectaccessreviews"] if post => {
            Route::SubjectAccessReview
        }
        ["api", "v1", "nodes"] if get => resource(Kind::Nodes, None, None),
        ["api", "v1", "nodes", name] if get => resource(Kind::Nodes, None, Some(name)),
        ["api", "v1", plural] if get && matches!(*plural, "pods" | "configmaps") => {
            kind_of(plural).map_or(Route::NotFound, |k| resource(k, None, None))
        }
        ["api", "v1", "namespaces", ns, plural] if get => {
            match kind_of(plural).filter(|k| *k != Kind::Nodes) {
                Some(kind) => resource(kind, Some(ns), None),
                None => Route::NotFound,
            }
        }
        ["api", "v1", "namespaces", ns, plural, name] if get => {
            match kind_of(plural).filter(|k| *k != Kind::Nodes) {
                Some(kind) => resource(kind, Some(ns), Some(name)),
                None => Route::NotFound,
            }
        }
        _ => Route::NotFound,
    }
}

/// The query parameters the list and watch endpoints read.
#[derive(Debug, Default)]
pub(super) struct Query {
    label_selector: String,
    field_selector: String,
    resource_version: String,
    resource_version_match: String,
    watch: bool,
    pub(super) timeout_seconds: Option<u64>,
    pub(super) allow_bookmarks: bool,
    pub(super) send_initial_events: bool,
}

impl Query {
    fn parse(raw: Option<&str>) -> Result<Self, String> {
        let mut q = Query::default();
        let truthy = |v: &str| v == "true" || v == "1";
        for (key, value) in form_urlencoded::parse(raw.unwrap_or("").as_bytes()) {
            match key.as_ref() {
                "labelSelector" => q.label_selector = value.into_owned(),
                "fieldSelector" => q.field_selector = value.into_owned(),
                "resourceVersion" => q.resource_version = value.into_owned(),
                "resourceVersionMatch" => q.resource_version_match = value.into_owned(),
                "watch" => q.watch = truthy(&value),
                "allowWatchBookmarks" => q.allow_bookmarks = truthy(&value),
                "sendInitialEvents" => q.send_initial_events = truthy(&value),
                "timeoutSeconds" => {
                    q.timeout_seconds = Some(
                        value
                            .parse()
                            .map_err(|_| format!("invalid timeoutSeconds {value:?}"))?,
                    )
                }
                _ => {}
            }
        }
        Ok(q)
    }

    /// `None` for "any" / "most recent" (`""` or `"0"`).
    fn resource_version(&self) -> Result<Option<u64>, String> {
        match self.resource_version.as_str() {
            "" | "0" => Ok(None),
            v => v
                .parse()
                .map(Some)
                .map_err(|_| format!("invalid resourceVersion {v:?}")),
        }
    }
}

/// Who the caller is: certificate first, then bearer token; `Err` for a token nobody issued.
fn authenticate<'a>(
    shared: &'a Shared,
    cert_user: Option<&'a UserInfo>,
    req: &Request<Incoming>,
) -> Result<Option<&'a UserInfo>, ()> {
    if let Some(user) = cert_user {
        return Ok(Some(user));
    }
    match req.headers().get(AUTHORIZATION) {
        None => Ok(None),
        Some(value) => {
            let token = value
                .to_str()
                .ok()
                .and_then(|v| v.strip_prefix("Bearer "))
                .map(str::trim)
                .ok_or(())?;
            shared.users.by_token(token).map(Some).ok_or(())
        }
    }
}

fn attributes(route: &Route, method: &Method, path: &str, query: &Query) -> Attributes {
    let verb = if method == Method::HEAD {
        "get"
    } else {
        &method.as_str().to_ascii_lowercase()
    };
    let review = |group: &str, resource: &str| Attributes::Resource {
        verb: "create".to_owned(),
        group: group.to_owned(),
        resource: resource.to_owned(),
        subresource: String::new(),
        namespace: String::new(),
        name: String::new(),
    };
    match route {
        Route::Resource {
            kind,
            namespace,
            name,
        } => Attributes::Resource {
            verb: match (name, query.watch) {
                (_, true) => "watch",
                (Some(_), false) => "get",
                (None, false) => "list",
            }
            .to_owned(),
            group: String::new(),
            resource: kind.resource().to_owned(),
            subresource: String::new(),
            namespace: namespace.clone().unwrap_or_default(),
            name: name.clone().unwrap_or_default(),
        },
        Route::TokenReview => review("authentication.k8s.io", "tokenreviews"),
        Route::SubjectAccessReview => review("authorization.k8s.io", "subjectaccessreviews"),
        _ => Attributes::NonResource {
            verb: verb.to_owned(),
            path: path.to_owned(),
        },
    }
}

fn forbidden(user: &UserInfo, attributes: &Attributes) -> Response<Body> {
    let message = match attributes {
        Attributes::Resource {
            verb,
            group,
            resource,
            namespace,
            ..
        } => {
            let scope = if namespace.is_empty() {
                "at the cluster scope".to_owned()
            } else {
                format!("in the namespace \"{namespace}\"")
            };
            format!(
                "{resource} is forbidden: User \"{}\" cannot {verb} resource \"{resource}\" in API group \"{group}\" {scope}",
                user.name
            )
        }
        Attributes::NonResource { verb, path } => format!(
            "forbidden: User \"{}\" cannot {verb} path \"{path}\"",
            user.name
        ),
    };
    status_response(StatusCode::FORBIDDEN, "Forbidden", &message)
}

/// Serves one request.
pub(crate) async fn handle(
    shared: Arc<Shared>,
    cert_user: Option<&UserInfo>,
    req: Request<Incoming>,
) -> Response<Body> {
    let Ok(user) = authenticate(&shared, cert_user, &req) else {
        return unauthorized();
    };
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let route = route(&method, &path);
    debug!(%method, %path, user = user.map(|u| u.name.as_str()).unwrap_or("system:anonymous"), "Request.");

    if let Route::Metrics = route {
        let Some(user) = user else {
            return unauthorized();
        };
        let backend = shared
            .aggregate_to
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        return proxy::forward(&shared.backend, backend, user, req).await;
    }
    let query = match Query::parse(req.uri().query()) {
        Ok(q) => q,
        Err(message) => return bad_request(&message),
    };
    let attrs = attributes(&route, &method, &path, &query);
    let as_table = req
        .headers()
        .get(ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(table::wants_table);
    match user {
        None if !(matches!(route, Route::Version | Route::Health)) => return unauthorized(),
        Some(user) if !authorize(user, &attrs).0 => return forbidden(user, &attrs),
        None | Some(_) => {}
    }

    match route {
        Route::Version => json_response(StatusCode::OK, version_json()),
        Route::Health => {
            let mut r = Response::new(Body::full("ok"));
            r.headers_mut().insert(
                CONTENT_TYPE,
                HeaderValue::from_static("text/plain; charset=utf-8"),
            );
            r
        }
        Route::Api => json_response(StatusCode::OK, api_versions_json(&shared.server_url)),
        Route::ApiV1 => json_response(StatusCode::OK, CORE_V1_RESOURCES),
        Route::Apis => json_response(StatusCode::OK, api_group_list_json()),
        Route::Group(group) => json_response(StatusCode::OK, api_group_json(group).to_string()),
        Route::GroupVersion(group) => json_response(StatusCode::OK, group_resources_json(group)),
        Route::TokenReview => token_review(&shared, req).await,
        Route::SubjectAccessReview => subject_access_review(req).await,
        Route::Resource {
            kind,
            namespace,
            name,
        } => serve_resource(shared, kind, namespace, name, query, as_table),
        Route::Metrics | Route::NotFound => not_found(),
    }
}

// === discovery ===

fn version_json() -> &'static str {
    concat!(
        r#"{"major":"1","minor":"33","emulationMajor":"1","emulationMinor":"33","#,
        r#""minCompatibilityMajor":"1","minCompatibilityMinor":"32","gitVersion":"v1.33.0","#,
        r#""gitCommit":"0000000000000000000000000000000000000000","gitTreeState":"clean","#,
        r#""buildDate":"2025-04-23T00:00:00Z","goVersion":"go1.24.2","compiler":"gc","#,
        r#""platform":"linux/amd64"}"#
    )
}

fn api_versions_json(server_url: &str) -> String {
    let address = server_url.trim_start_matches("https://");
    json!({
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": address}],
    })
    .to_string()
}

const CORE_V1_RESOURCES: &str = concat!(
    r#"{"kind":"APIResourceList","groupVersion":"v1","resources":["#,
    r#"{"name":"configmaps","singularName":"configmap","namespaced":true,"kind":"ConfigMap","#,
    r#""verbs":["get","list","watch"],"shortNames":["cm"]},"#,
    r#"{"name":"nodes","singularName":"node","namespaced":false,"kind":"Node","#,
    r#""verbs":["get","list","watch"],"shortNames":["no"]},"#,
    r#"{"name":"pods","singularName":"pod","namespaced":true,"kind":"Pod","#,
    r#""verbs":["get","list","watch"],"shortNames":["po"],"categories":["all"]}]}"#
);

const GROUPS: [(&str, &str); 3] = [
    ("authentication.k8s.io", "v1"),
    ("authorization.k8s.io", "v1"),
    ("metrics.k8s.io", "v1beta1"),
];

fn api_group_json(group: &str) -> Value {
    let version = GROUPS
        .iter()
        .find(|(g, _)| *g == group)
        .map(|(_, v)| *v)
        .unwrap_or("v1");
    let gv = json!({"groupVersion": format!("{group}/{version}"), "version": version});
    json!({
        "kind": "APIGroup",
        "apiVersion": "v1",
        "name": group,
        "versions": [gv.clone()],
        "preferredVersion": gv,
    })
}

fn api_group_list_json() -> String {
    let groups: Vec<Value> = GROUPS
        .iter()
        .map(|(g, _)| {
            let mut v = api_group_json(g);
            if let Some(map) = v.as_object_mut() {
                map.remove("kind");
                map.remove("apiVersion");
            }
            v
        })
        .collect();
    json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups}).to_string()
}

fn group_resources_json(group: &str) -> String {
    let (name, singular, kind) = if group == "authentication.k8s.io" {
        ("tokenreviews", "tokenreview", "TokenReview")
    } else {
        (
            "subjectaccessreviews",
            "subjectaccessreview",
            "SubjectAccessReview",
        )
    };
    json!({
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": format!("{group}/v1"),
        "resources": [{"name": name, "singularName": singular, "namespaced": false, "kind": kind, "verbs": ["create"]}],
    })
    .to_string()
}

// === reviews ===

async fn read_json(req: Request<Incoming>) -> Result<Value, Response<Body>> {
    let body = Limited::new(req.into_body(), MAX_REVIEW_BODY)
        .collect()
        .await
        .map_err(|_| bad_request("the request body could not be read"))?
        .to_bytes();
    serde_json::from_slice(&body).map_err(|e| bad_request(&format!("invalid JSON body: {e}")))
}

async fn token_review(shared: &Shared, req: Request<Incoming>) -> Response<Body> {
    let review = match read_json(req).await {
        Ok(v) => v,
        Err(response) => return response,
    };
    let spec = review.get("spec").cloned().unwrap_or_else(|| json!({}));
    let token = spec.get("token").and_then(Value::as_str).unwrap_or("");
    let mut status = match shared.users.by_token(token) {
        Some(user) => json!({
            "authenticated": true,
            "user": {"username": user.name, "uid": user.uid, "groups": user.groups},
        }),
        None => json!({"authenticated": false, "user": {}}),
    };
    if let Some(audiences) = spec.get("audiences").filter(|a| a.is_array()) {
        status["audiences"] = audiences.clone();
    }
    let answer = json!({
        "kind": "TokenReview",
        "apiVersion": "authentication.k8s.io/v1",
        "metadata": {"creationTimestamp": null},
        "spec": spec,
        "status": status,
    });
    json_response(StatusCode::CREATED, answer.to_string())
}

async fn subject_access_review(req: Request<Incoming>) -> Response<Body> {
    let review = match read_json(req).await {
        Ok(v) => v,
        Err(response) => return response,
    };
    let spec = review.get("spec").cloned().unwrap_or_else(|| json!({}));
    let text = |v: &Value, key: &str| v.get(key).and_then(Value::as_str).unwrap_or("").to_owned();
    let user = UserInfo {
        name: text(&spec, "user"),
        uid: text(&spec, "uid"),
        groups: spec
            .get("groups")
            .and_then(Value::as_array)
            .map(|gs| {
                gs.iter()
                    .filter_map(Value::as_str)
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default(),
    };
    let attributes = if let Some(r) = spec.get("resourceAttributes") {
        Attributes::Resource {
            verb: text(r, "verb"),
            group: text(r, "group"),
            resource: text(r, "resource"),
            subresource: text(r, "subresource"),
            namespace: text(r, "namespace"),
            name: text(r, "name"),
        }
    } else if let Some(n) = spec.get("nonResourceAttributes") {
        Attributes::NonResource {
            verb: text(n, "verb"),
            path: text(n, "path"),
        }
    } else {
        return bad_request("spec.resourceAttributes or spec.nonResourceAttributes is required");
    };
    let (allowed, reason) = authorize(&user, &attributes);
    let status = if allowed {
        json!({"allowed": true, "reason": reason})
    } else {
        json!({"allowed": false})
    };
    let answer = json!({
        "kind": "SubjectAccessReview",
        "apiVersion": "authorization.k8s.io/v1",
        "metadata": {"creationTimestamp": null},
        "spec": spec,
        "status": status,
    });
    json_response(StatusCode::CREATED, answer.to_string())
}

// === nodes, pods, configmaps ===

/// The selection a list or watch applies.
pub(super) struct Filter {
    namespace: Option<String>,
    labels: LabelSelector,
    fields: FieldSelector,
}

impl Filter {
    pub(super) fn node(&self, node: &Node) -> bool {
        self.labels.matches(&node.labels)
            && self.fields.matches(|f| match f {
                "metadata.name" => node.name.as_str(),
                _ => "",
            })
    }

    pub(super) fn pod_in_scope(&self, pod: &Pod) -> bool {
        self.namespace
            .as_deref()
            .is_none_or(|ns| ns == pod.namespace)
    }

    pub(super) fn pod(&self, pod: &Pod) -> bool {
        self.pod_in_scope(pod)
            && self.labels.matches(&pod.labels)
            && self.fields.matches(|f| match f {
                "metadata.name" => pod.name.as_str(),
                "metadata.namespace" => pod.namespace.as_str(),
                "spec.nodeName" => pod.node.as_str(),
                "status.phase" => pod.phase.as_str(),
                _ => "",
            })
    }

    pub(super) fn auth_configmap(&self) -> bool {
        self.namespace
            .as_deref()
            .is_none_or(|ns| ns == AUTH_CONFIGMAP_NAMESPACE)
            && self.labels.matches(&BTreeMap::new())
            && self.fields.matches(|f| match f {
                "metadata.name" => AUTH_CONFIGMAP_NAME,
                "metadata.namespace" => AUTH_CONFIGMAP_NAMESPACE,
                _ => "",
            })
    }

    /// Whether a change could have moved the object out of the selection: false when it fails a
    /// requirement on a field that never changes (name, namespace, node binding), so a watch on
    /// one node or one name does not hear about every other object's updates.
    pub(super) fn node_may_have_matched(&self, node: &Node) -> bool {
        self.fields.matches_only(&["metadata.name"], |f| match f {
            "metadata.name" => node.name.as_str(),
            _ => "",
        })
    }

    /// As [`Filter::node_may_have_matched`], for pods.
    pub(super) fn pod_may_have_matched(&self, pod: &Pod) -> bool {
        self.pod_in_scope(pod)
            && self.fields.matches_only(
                &["metadata.name", "metadata.namespace", "spec.nodeName"],
                |f| match f {
                    "metadata.name" => pod.name.as_str(),
                    "metadata.namespace" => pod.namespace.as_str(),
                    "spec.nodeName" => pod.node.as_str(),
                    _ => "",
                },
            )
    }
}

fn serve_resource(
    shared: Arc<Shared>,
    kind: Kind,
    namespace: Option<String>,
    name: Option<String>,
    query: Query,
    as_table: bool,
) -> Response<Body> {
    if let Some(name) = name {
        return get_one(&shared, kind, namespace.as_deref(), &name, as_table);
    }
    let labels = match LabelSelector::parse(&query.label_selector) {
        Ok(s) => s,
        Err(e) => return bad_request(&e.to_string()),
    };
    let fields = match FieldSelector::parse(&query.field_selector, kind.fields()) {
        Ok(s) => s,
        Err(e) => return bad_request(&e.to_string()),
    };
    let requested_rv = match query.resource_version() {
        Ok(rv) => rv,
        Err(message) => return bad_request(&message),
    };
    let filter = Filter {
        namespace,
        labels,
        fields,
    };
    if query.watch {
        super::watches::watch(shared, kind, filter, requested_rv, &query)
    } else {
        if query.resource_version_match == "Exact" {
            if let Some(rv) = requested_rv {
                if rv != shared.cluster.resource_version() {
                    return expired(rv);
                }
            }
        }
        list(shared, kind, filter, as_table)
    }
}

pub(super) fn expired(rv: u64) -> Response<Body> {
    status_response(
        StatusCode::GONE,
        "Expired",
        &format!("too old resource version: {rv}"),
    )
}

fn get_one(
    shared: &Shared,
    kind: Kind,
    namespace: Option<&str>,
    name: &str,
    as_table: bool,
) -> Response<Body> {
    let mut out = String::with_capacity(1024);
    let now = std::time::SystemTime::now();
    let rv = shared.cluster.resource_version();
    let found = match kind {
        Kind::Nodes => shared.cluster.node(name).map(|node| {
            if as_table {
                table::push_head(&mut out, TableKind::Nodes, rv);
                table::push_node_row(&mut out, &node, now);
                out.push_str(table::TABLE_TAIL);
            } else {
                push_node(&mut out, &node, &shared.node_resources);
            }
        }),
        Kind::Pods => namespace
            .and_then(|ns| shared.cluster.pod(ns, name))
            .map(|pod| {
                if as_table {
                    table::push_head(&mut out, TableKind::Pods, rv);
                    table::push_pod_row(&mut out, &pod, now);
                    out.push_str(table::TABLE_TAIL);
                } else {
                    push_pod(&mut out, &pod);
                }
            }),
        Kind::ConfigMaps => (namespace == Some(AUTH_CONFIGMAP_NAMESPACE)
            && name == AUTH_CONFIGMAP_NAME)
            .then(|| {
                if as_table {
                    table::push_head(&mut out, TableKind::ConfigMaps, rv);
                    push_auth_configmap_row(&mut out);
                    out.push_str(table::TABLE_TAIL);
                } else {
                    out.push_str(&auth_configmap_json(shared));
                }
            }),
    };
    match found {
        Some(()) => json_response(StatusCode::OK, out),
        None => status_response(
            StatusCode::NOT_FOUND,
            "NotFound",
            &format!("{} \"{name}\" not found", kind.resource()),
        ),
    }
}

pub(super) fn auth_configmap_json(shared: &Shared) -> String {
    let strings = |v: &[&str]| serde_json::to_string(v).unwrap_or_else(|_| "[]".to_owned());
    json!({
        "kind": "ConfigMap",
        "apiVersion": "v1",
        "metadata": {
            "name": AUTH_CONFIGMAP_NAME,
            "namespace": AUTH_CONFIGMAP_NAMESPACE,
            "uid": "extension-apiserver-authentication",
            "resourceVersion": "1",
            "creationTimestamp": rfc3339(std::time::SystemTime::UNIX_EPOCH),
        },
        "data": {
            "client-ca-file": shared.client_ca_pem,
            "requestheader-client-ca-file": shared.front_proxy_ca_pem,
            "requestheader-allowed-names": strings(&[super::FRONT_PROXY_CLIENT_CN]),
            "requestheader-username-headers": strings(&["X-Remote-User"]),
            "requestheader-group-headers": strings(&["X-Remote-Group"]),
            "requestheader-extra-headers-prefix": strings(&["X-Remote-Extra-"]),
            "requestheader-uid-headers": strings(&["X-Remote-Uid"]),
        },
    })
    .to_string()
}

/// How many data keys the authentication ConfigMap has (its Table row shows the count).
const AUTH_CONFIGMAP_KEYS: usize = 7;

fn push_auth_configmap_row(out: &mut String) {
    table::push_configmap_row(
        out,
        AUTH_CONFIGMAP_NAME,
        AUTH_CONFIGMAP_NAMESPACE,
        AUTH_CONFIGMAP_KEYS,
    );
}

/// Accumulates rendered output and sends it in chunks.
pub(super) struct Chunker {
    pub(super) buf: String,
    pub(super) tx: mpsc::Sender<Bytes>,
}

impl Chunker {
    pub(super) fn new(tx: mpsc::Sender<Bytes>) -> Self {
        Chunker {
            buf: String::with_capacity(CHUNK + 4096),
            tx,
        }
    }

    /// Sends when the buffer is full; `Err` once the client is gone.
    pub(super) async fn maybe_flush(&mut self) -> Result<(), ()> {
        if self.buf.len() >= CHUNK {
            self.flush().await
        } else {
            Ok(())
        }
    }

    pub(super) async fn flush(&mut self) -> Result<(), ()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = std::mem::replace(&mut self.buf, String::with_capacity(CHUNK + 4096));
        self.tx.send(Bytes::from(chunk)).await.map_err(|_| ())
    }
}

pub(super) fn stream_response(body: Body) -> Response<Body> {
    let mut response = Response::new(body);
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

fn list(shared: Arc<Shared>, kind: Kind, filter: Filter, as_table: bool) -> Response<Body> {
    let (tx, body) = Body::channel();
    tokio::spawn(async move {
        let mut out = Chunker::new(tx);
        let _ = if as_table {
            render_table(&shared, kind, &filter, &mut out).await
        } else {
            render_list(&shared, kind, &filter, &mut out).await
        };
    });
    stream_response(body)
}

async fn render_table(
    shared: &Shared,
    kind: Kind,
    filter: &Filter,
    out: &mut Chunker,
) -> Result<(), ()> {
    let now = std::time::SystemTime::now();
    match kind {
        Kind::Nodes => {
            let listing = shared.cluster.list_nodes();
            table::push_head(&mut out.buf, TableKind::Nodes, listing.resource_version);
            for (i, node) in listing.items.iter().filter(|n| filter.node(n)).enumerate() {
                if i > 0 {
                    out.buf.push(',');
                }
                table::push_node_row(&mut out.buf, node, now);
                out.maybe_flush().await?;
            }
        }
        Kind::Pods => {
            let listing = shared.cluster.list_pods();
            table::push_head(&mut out.buf, TableKind::Pods, listing.resource_version);
            for (i, pod) in listing.items.iter().filter(|p| filter.pod(p)).enumerate() {
                if i > 0 {
                    out.buf.push(',');
                }
                table::push_pod_row(&mut out.buf, pod, now);
                out.maybe_flush().await?;
            }
        }
        Kind::ConfigMaps => {
            table::push_head(
                &mut out.buf,
                TableKind::ConfigMaps,
                shared.cluster.resource_version(),
            );
            if filter.auth_configmap() {
                push_auth_configmap_row(&mut out.buf);
            }
        }
    }
    out.buf.push_str(table::TABLE_TAIL);
    out.flush().await
}

async fn render_list(
    shared: &Shared,
    kind: Kind,
    filter: &Filter,
    out: &mut Chunker,
) -> Result<(), ()> {
    let list_head = |out: &mut Chunker, list_kind: &str, rv: u64| {
        out.buf.push_str(&format!(
            r#"{{"kind":"{list_kind}","apiVersion":"v1","metadata":{{"resourceVersion":"{rv}"}},"items":["#
        ));
    };
    match kind {
        Kind::Nodes => {
            let listing = shared.cluster.list_nodes();
            list_head(out, "NodeList", listing.resource_version);
            let mut first = true;
            for node in listing.items.iter().filter(|n| filter.node(n)) {
                if !first {
                    out.buf.push(',');
                }
                first = false;
                push_node(&mut out.buf, node, &shared.node_resources);
                out.maybe_flush().await?;
            }
        }
        Kind::Pods => {
            let listing = shared.cluster.list_pods();
            list_head(out, "PodList", listing.resource_version);
            let mut first = true;
            for pod in listing.items.iter().filter(|p| filter.pod(p)) {
                if !first {
                    out.buf.push(',');
                }
                first = false;
                push_pod(&mut out.buf, pod);
                out.maybe_flush().await?;
            }
        }
        Kind::ConfigMaps => {
            list_head(out, "ConfigMapList", shared.cluster.resource_version());
            if filter.auth_configmap() {
                out.buf.push_str(&auth_configmap_json(shared));
            }
        }
    }
    out.buf.push_str("]}");
    out.flush().await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_map_to_routes() {
        let get = Method::GET;
        assert!(matches!(
            route(&get, "/api/v1/nodes"),
            Route::Resource {
                kind: Kind::Nodes,
                name: None,
                ..
            }
        ));
        assert!(matches!(
            route(&get, "/api/v1/namespaces/ns/pods/p"),
            Route::Resource { kind: Kind::Pods, name: Some(ref n), namespace: Some(ref ns) } if n == "p" && ns == "ns"
        ));
        assert!(matches!(
            route(&get, "/apis/metrics.k8s.io/v1beta1/nodes"),
            Route::Metrics
        ));
        assert!(matches!(
            route(&get, "/apis/metrics.k8s.io"),
            Route::Group("metrics.k8s.io")
        ));
        assert!(matches!(
            route(&get, "/api/v1/namespaces/ns/nodes"),
            Route::NotFound
        ));
        assert!(matches!(
            route(&Method::DELETE, "/api/v1/nodes"),
            Route::NotFound
        ));
        assert!(matches!(
            route(
                &Method::POST,
                "/apis/authorization.k8s.io/v1/subjectaccessreviews"
            ),
            Route::SubjectAccessReview
        ));
    }

    #[test]
    fn resource_version_zero_and_empty_mean_any() {
        let q = Query::parse(Some("resourceVersion=0&watch=1&timeoutSeconds=5")).expect("query");
        assert_eq!(q.resource_version(), Ok(None));
        assert!(q.watch);
        assert_eq!(q.timeout_seconds, Some(5));
        let q = Query::parse(Some("resourceVersion=12")).expect("query");
        assert_eq!(q.resource_version(), Ok(Some(12)));
        assert!(Query::parse(Some("resourceVersion=x"))
            .expect("query")
            .resource_version()
            .is_err());
        assert!(Query::parse(Some("timeoutSeconds=x")).is_err());
    }
}
