//! What a request asks to do, in the terms authorization speaks: resource attributes (verb, API
//! group, version, resource, subresource, namespace, name) for API paths, non-resource attributes
//! (path, verb) for everything else, derived from the method and path as Kubernetes derives them.

use std::borrow::Cow;

use http::Method;

/// A request's attributes for authorization.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum RequestAttributes {
    Resource(ResourceAttributes),
    NonResource(NonResourceAttributes),
}

/// An API request on a resource (`/apis/<group>/<version>/...` or `/api/<version>/...`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct ResourceAttributes {
    /// `get`, `list`, `watch`, `create`, `update`, `patch`, `delete` or `deletecollection`.
    pub verb: String,
    /// Empty for the core group (`/api`).
    pub group: String,
    pub version: String,
    pub resource: String,
    pub subresource: String,
    /// Empty for cluster-scoped requests.
    pub namespace: String,
    /// Empty for collections.
    pub name: String,
}

/// Any other request (discovery, `/metrics`, `/healthz`, ...).
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct NonResourceAttributes {
    pub path: String,
    /// The lower-cased HTTP method.
    pub verb: String,
}

/// Subresources of a namespace itself, so `/namespaces/<ns>/status` is the namespace's status
/// rather than a resource named `status`.
const NAMESPACE_SUBRESOURCES: [&str; 3] = ["status", "finalize", "binding"];

// === impl RequestAttributes ===

impl RequestAttributes {
    /// The attributes of a request with `method` on `path_and_query` (a query, if present, is
    /// read for `watch` and a `metadata.name` field selector).
    pub fn from_request(method: &Method, path_and_query: &str) -> Self {
        let (path, query) = match path_and_query.split_once('?') {
            Some((path, query)) => (path, query),
            None => (path_and_query, ""),
        };
        resource_attributes(method, path, query).map_or_else(
            || {
                RequestAttributes::NonResource(NonResourceAttributes {
                    path: path.to_owned(),
                    verb: method.as_str().to_ascii_lowercase(),
                })
            },
            RequestAttributes::Resource,
        )
    }

    /// The attributes of a request as the router holds it.
    pub fn from_parts(parts: &http::request::Parts) -> Self {
        let path = parts
            .uri
            .path_and_query()
            .map_or_else(|| parts.uri.path(), |p| p.as_str());
        Self::from_request(&parts.method, path)
    }

    /// The verb, for either kind.
    pub fn verb(&self) -> &str {
        match self {
            RequestAttributes::Resource(r) => &r.verb,
            RequestAttributes::NonResource(n) => &n.verb,
        }
    }
}

fn resource_attributes(method: &Method, path: &str, query: &str) -> Option<ResourceAttributes> {
    let trimmed = path.trim_matches('/');
    let mut parts: Vec<&str> = trimmed.split('/').collect();
    let mut attributes = ResourceAttributes {
        verb: match *method {
            Method::GET | Method::HEAD => "get",
            Method::POST => "create",
            Method::PUT => "update",
            Method::PATCH => "patch",
            Method::DELETE => "delete",
            _ => "",
        }
        .to_owned(),
        ..ResourceAttributes::default()
    };
    // `/apis/<group>/<version>/<resource...>` or `/api/<version>/<resource...>`; shorter paths are
    // discovery, which is not a resource request.
    match parts.first().copied() {
        Some("apis") if parts.len() >= 4 => {
            attributes.group = parts[1].to_owned();
            attributes.version = parts[2].to_owned();
            parts.drain(..3);
        }
        Some("api") if parts.len() >= 3 => {
            attributes.version = parts[1].to_owned();
            parts.drain(..2);
        }
        _ => return None,
    }
    if attributes.verb.is_empty() {
        return None;
    }
    // The deprecated `/watch/` and `/proxy/` prefixes name the verb in the path.
    if matches!(parts.first(), Some(&"watch") | Some(&"proxy")) {
        if parts[0] == "watch" {
            attributes.verb = "watch".to_owned();
        } else {
            attributes.verb = "proxy".to_owned();
        }
        parts.remove(0);
        if parts.is_empty() {
            return None;
        }
    }
    if parts[0] == "namespaces" && parts.len() > 1 {
        attributes.namespace = parts[1].to_owned();
        if parts.len() > 2 && !NAMESPACE_SUBRESOURCES.contains(&parts[2]) {
            parts.drain(..2);
        }
    }
    if parts.len() >= 3 {
        attributes.subresource = parts[2].to_owned();
    }
    if parts.len() >= 2 {
        attributes.name = parts[1].to_owned();
    }
    attributes.resource = parts[0].to_owned();

    if attributes.name.is_empty() && attributes.verb == "get" {
        let watch = query_values(query, "watch").any(|v| parse_bool(&v));
        attributes.verb = if watch { "watch" } else { "list" }.to_owned();
        // A list narrowed to one name by `metadata.name=<name>` is about that object.
        if let Some(name) = query_values(query, "fieldSelector")
            .filter_map(|s| exact_name(&s))
            .next()
        {
            attributes.name = name;
        }
    }
    if attributes.name.is_empty() && attributes.verb == "delete" {
        attributes.verb = "deletecollection".to_owned();
    }
    Some(attributes)
}

/// The values `query` gives `key`, decoded. Names and values without an escape are read in place.
fn query_values<'a>(query: &'a str, key: &'a str) -> impl Iterator<Item = Cow<'a, str>> + 'a {
    query.split('&').filter_map(move |pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (decode(k) == key).then(|| decode(v))
    })
}

/// A query name or value with `+` read as a space and percent escapes decoded (invalid UTF-8
/// replaced), as Go's `url.ParseQuery` reads it.
fn decode(text: &str) -> Cow<'_, str> {
    if !text.contains(['+', '%']) {
        return Cow::Borrowed(text);
    }
    let text = text.replace('+', " ");
    Cow::Owned(
        percent_encoding::percent_decode_str(&text)
            .decode_utf8_lossy()
            .into_owned(),
    )
}

/// Go's `strconv.ParseBool` truths.
fn parse_bool(value: &str) -> bool {
    matches!(value, "1" | "t" | "T" | "true" | "TRUE" | "True")
}

/// The name a field selector pins with `metadata.name=<name>` (or `==`), if it is the only term.
fn exact_name(selector: &str) -> Option<String> {
    if selector.contains(',') {
        return None;
    }
    let value = selector
        .strip_prefix("metadata.name==")
        .or_else(|| selector.strip_prefix("metadata.name="))?;
    let valid = !value.is_empty() && value != "." && value != ".." && !value.contains(['/', '%']);
    valid.then(|| value.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resource(method: Method, path: &str) -> ResourceAttributes {
        match RequestAttributes::from_request(&method, path) {
            RequestAttributes::Resource(r) => r,
            other => panic!("{path} is not a resource request: {other:?}"),
        }
    }

    #[test]
    fn a_namespaced_pod_is_a_get_of_that_pod() {
        let r = resource(
            Method::GET,
            "/apis/metrics.k8s.io/v1beta1/namespaces/ns/pods/p",
        );
        assert_eq!(
            r,
            ResourceAttributes {
                verb: "get".into(),
                group: "metrics.k8s.io".into(),
                version: "v1beta1".into(),
                resource: "pods".into(),
                subresource: String::new(),
                namespace: "ns".into(),
                name: "p".into(),
            }
        );
    }

    #[test]
    fn collections_are_lists_and_watch_true_makes_a_watch() {
        let r = resource(Method::GET, "/apis/metrics.k8s.io/v1beta1/nodes");
        assert_eq!((r.verb.as_str(), r.resource.as_str()), ("list", "nodes"));
        assert_eq!(r.namespace, "");
        let r = resource(
            Method::GET,
            "/apis/metrics.k8s.io/v1beta1/namespaces/kube-system/pods?watch=true",
        );
        assert_eq!(
            (r.verb.as_str(), r.namespace.as_str()),
            ("watch", "kube-system")
        );
        let r = resource(
            Method::GET,
            "/apis/metrics.k8s.io/v1beta1/pods?labelSelector=a%3Db&watch=false",
        );
        assert_eq!(r.verb, "list");
    }

    #[test]
    fn a_name_field_selector_names_the_object_of_a_list() {
        let r = resource(
            Method::GET,
            "/apis/metrics.k8s.io/v1beta1/nodes?fieldSelector=metadata.name%3Dnode-1",
        );
        assert_eq!((r.verb.as_str(), r.name.as_str()), ("list", "node-1"));
        let r = resource(
            Method::GET,
            "/apis/metrics.k8s.io/v1beta1/nodes?fieldSelector=metadata.name%3Da,spec.x%3Db",
        );
        assert_eq!(r.name, "");
    }

    #[test]
    fn subresources_and_the_core_group_are_recognised() {
        let r = resource(Method::GET, "/api/v1/namespaces/default/pods/web/log");
        assert_eq!(
            (
                r.group.as_str(),
                r.version.as_str(),
                r.resource.as_str(),
                r.name.as_str(),
                r.subresource.as_str()
            ),
            ("", "v1", "pods", "web", "log")
        );
        let r = resource(Method::GET, "/api/v1/namespaces/default");
        assert_eq!(
            (r.resource.as_str(), r.name.as_str(), r.namespace.as_str()),
            ("namespaces", "default", "default")
        );
        let r = resource(Method::PUT, "/api/v1/namespaces/default/status");
        assert_eq!(
            (r.verb.as_str(), r.resource.as_str(), r.subresource.as_str()),
            ("update", "namespaces", "status")
        );
        let r = resource(Method::DELETE, "/api/v1/namespaces/default/pods");
        assert_eq!(r.verb, "deletecollection");
    }

    #[test]
    fn discovery_and_other_paths_are_non_resource_requests() {
        for path in [
            "/apis",
            "/apis/metrics.k8s.io",
            "/apis/metrics.k8s.io/v1beta1",
            "/api/v1",
            "/healthz",
            "/metrics",
            "/openapi/v2",
            "/",
        ] {
            assert_eq!(
                RequestAttributes::from_request(&Method::GET, path),
                RequestAttributes::NonResource(NonResourceAttributes {
                    path: path.to_owned(),
                    verb: "get".to_owned(),
                }),
                "{path}"
            );
        }
        let post = RequestAttributes::from_request(&Method::POST, "/apis?x=1");
        assert_eq!(post.verb(), "post");
    }

    proptest::proptest! {
        #[test]
        fn any_path_gives_attributes_without_panicking(
            segments in proptest::collection::vec("(apis|api|namespaces|watch|proxy|status|[a-z0-9.%=?&]{0,8})", 0..9),
            method in proptest::sample::select(vec![Method::GET, Method::POST, Method::DELETE, Method::OPTIONS]),
        ) {
            let path = format!("/{}", segments.join("/"));
            match RequestAttributes::from_request(&method, &path) {
                RequestAttributes::Resource(r) => {
                    proptest::prop_assert!(!r.verb.is_empty());
                    // Like upstream's request-info parser, leading slashes are trimmed first, so
                    // `//api/...` is a resource request too.
                    proptest::prop_assert!(path.trim_start_matches('/').starts_with("api"));
                }
                RequestAttributes::NonResource(n) => {
                    proptest::prop_assert_eq!(n.verb, method.as_str().to_ascii_lowercase());
                }
            }
        }
    }
}
