//! What a request asks to do, in the terms authorization speaks: resource attributes (verb, API
//! group, version, resource, subresource, namespace, name) for API paths, non-resource attributes
//! (path, verb) for everything else, derived from the method and path as Kubernetes derives them.

use std::borrow::Cow;

use http::Method;

/// A request's attributes for authorization, borrowed from its path where they can be: a request
/// whose decision is cached allocates nothing here.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum RequestAttributes<'a> {
    Resource(ResourceAttributes<'a>),
    NonResource(NonResourceAttributes<'a>),
}

/// An API request on a resource (`/apis/<group>/<version>/...` or `/api/<version>/...`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct ResourceAttributes<'a> {
    /// `get`, `list`, `watch`, `create`, `update`, `patch`, `delete` or `deletecollection`.
    pub verb: Cow<'a, str>,
    /// Empty for the core group (`/api`).
    pub group: Cow<'a, str>,
    pub version: Cow<'a, str>,
    pub resource: Cow<'a, str>,
    pub subresource: Cow<'a, str>,
    /// Empty for cluster-scoped requests.
    pub namespace: Cow<'a, str>,
    /// Empty for collections.
    pub name: Cow<'a, str>,
}

/// Any other request (discovery, `/metrics`, `/healthz`, ...).
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct NonResourceAttributes<'a> {
    pub path: Cow<'a, str>,
    /// The lower-cased HTTP method.
    pub verb: Cow<'a, str>,
}

/// Subresources of a namespace itself, so `/namespaces/<ns>/status` is the namespace's status
/// rather than a resource named `status`.
const NAMESPACE_SUBRESOURCES: [&str; 3] = ["status", "finalize", "binding"];

/// Path segments read: the most a resource path uses (`apis`, group, version, `watch`,
/// `namespaces`, namespace, resource, name, subresource) and one more; later ones never change the
/// attributes.
const SEGMENTS_READ: usize = 10;

// === impl RequestAttributes ===

impl<'a> RequestAttributes<'a> {
    /// The attributes of a request with `method` on `path_and_query` (a query, if present, is
    /// read for `watch` and a `metadata.name` field selector).
    pub fn from_request(method: &Method, path_and_query: &'a str) -> Self {
        let (path, query) = match path_and_query.split_once('?') {
            Some((path, query)) => (path, query),
            None => (path_and_query, ""),
        };
        resource_attributes(method, path, query).map_or_else(
            || {
                RequestAttributes::NonResource(NonResourceAttributes {
                    path: Cow::Borrowed(path),
                    verb: method_verb(method),
                })
            },
            RequestAttributes::Resource,
        )
    }

    /// The attributes of a request as the router holds it.
    pub fn from_parts(parts: &'a http::request::Parts) -> Self {
        let path = parts
            .uri
            .path_and_query()
            .map_or_else(|| parts.uri.path(), |p| p.as_str());
        Self::from_request(&parts.method, path)
    }

    /// The same attributes, owning their strings.
    pub fn into_owned(self) -> RequestAttributes<'static> {
        let own = |text: Cow<'_, str>| Cow::Owned(text.into_owned());
        match self {
            RequestAttributes::Resource(r) => RequestAttributes::Resource(ResourceAttributes {
                verb: own(r.verb),
                group: own(r.group),
                version: own(r.version),
                resource: own(r.resource),
                subresource: own(r.subresource),
                namespace: own(r.namespace),
                name: own(r.name),
            }),
            RequestAttributes::NonResource(n) => {
                RequestAttributes::NonResource(NonResourceAttributes {
                    path: own(n.path),
                    verb: own(n.verb),
                })
            }
        }
    }

    /// The verb, for either kind.
    pub fn verb(&self) -> &str {
        match self {
            RequestAttributes::Resource(r) => &r.verb,
            RequestAttributes::NonResource(n) => &n.verb,
        }
    }
}

/// The lower-cased method, without allocating for the standard ones.
fn method_verb(method: &Method) -> Cow<'static, str> {
    Cow::Borrowed(match *method {
        Method::GET => "get",
        Method::HEAD => "head",
        Method::POST => "post",
        Method::PUT => "put",
        Method::PATCH => "patch",
        Method::DELETE => "delete",
        Method::OPTIONS => "options",
        Method::CONNECT => "connect",
        Method::TRACE => "trace",
        _ => return Cow::Owned(method.as_str().to_ascii_lowercase()),
    })
}

fn resource_attributes<'a>(
    method: &Method,
    path: &'a str,
    query: &'a str,
) -> Option<ResourceAttributes<'a>> {
    let trimmed = path.trim_matches('/');
    let mut segments = [""; SEGMENTS_READ];
    let mut count = 0;
    for (slot, segment) in segments.iter_mut().zip(trimmed.split('/')) {
        *slot = segment;
        count += 1;
    }
    let mut parts = &segments[..count];
    let mut attributes = ResourceAttributes {
        verb: Cow::Borrowed(match *method {
            Method::GET | Method::HEAD => "get",
            Method::POST => "create",
            Method::PUT => "update",
            Method::PATCH => "patch",
            Method::DELETE => "delete",
            _ => "",
        }),
        ..ResourceAttributes::default()
    };
    // `/apis/<group>/<version>/<resource...>` or `/api/<version>/<resource...>`; shorter paths are
    // discovery, which is not a resource request.
    match parts.first().copied() {
        Some("apis") if parts.len() >= 4 => {
            attributes.group = Cow::Borrowed(parts[1]);
            attributes.version = Cow::Borrowed(parts[2]);
            parts = &parts[3..];
        }
        Some("api") if parts.len() >= 3 => {
            attributes.version = Cow::Borrowed(parts[1]);
            parts = &parts[2..];
        }
        _ => return None,
    }
    if attributes.verb.is_empty() {
        return None;
    }
    // The deprecated `/watch/` and `/proxy/` prefixes name the verb in the path.
    if matches!(parts.first(), Some(&"watch") | Some(&"proxy")) {
        attributes.verb = Cow::Borrowed(if parts[0] == "watch" {
            "watch"
        } else {
            "proxy"
        });
        parts = &parts[1..];
        if parts.is_empty() {
            return None;
        }
    }
    if parts[0] == "namespaces" && parts.len() > 1 {
        attributes.namespace = Cow::Borrowed(parts[1]);
        if parts.len() > 2 && !NAMESPACE_SUBRESOURCES.contains(&parts[2]) {
            parts = &parts[2..];
        }
    }
    if parts.len() >= 3 {
        attributes.subresource = Cow::Borrowed(parts[2]);
    }
    if parts.len() >= 2 {
        attributes.name = Cow::Borrowed(parts[1]);
    }
    attributes.resource = Cow::Borrowed(parts[0]);

    if attributes.name.is_empty() && attributes.verb == "get" {
        let watch = query_values(query, "watch").any(|v| parse_bool(&v));
        attributes.verb = Cow::Borrowed(if watch { "watch" } else { "list" });
        // A list narrowed to one name by `metadata.name=<name>` is about that object.
        if let Some(name) = query_values(query, "fieldSelector")
            .filter_map(|s| exact_name(&s))
            .next()
        {
            attributes.name = name;
        }
    }
    if attributes.name.is_empty() && attributes.verb == "delete" {
        attributes.verb = Cow::Borrowed("deletecollection");
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
fn exact_name<'a>(selector: &Cow<'a, str>) -> Option<Cow<'a, str>> {
    if selector.contains(',') {
        return None;
    }
    let value = selector
        .strip_prefix("metadata.name==")
        .or_else(|| selector.strip_prefix("metadata.name="))?;
    let valid = !value.is_empty() && value != "." && value != ".." && !value.contains(['/', '%']);
    if !valid {
        return None;
    }
    Some(match selector {
        // Borrowed from the query itself when the selector needed no decoding.
        Cow::Borrowed(text) => Cow::Borrowed(&text[text.len() - value.len()..]),
        Cow::Owned(_) => Cow::Owned(value.to_owned()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resource(method: Method, path: &str) -> ResourceAttributes<'_> {
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
                subresource: "".into(),
                namespace: "ns".into(),
                name: "p".into(),
            }
        );
    }

    #[test]
    fn collections_are_lists_and_watch_true_makes_a_watch() {
        let r = resource(Method::GET, "/apis/metrics.k8s.io/v1beta1/nodes");
        assert_eq!((&*r.verb, &*r.resource), ("list", "nodes"));
        assert_eq!(r.namespace, "");
        let r = resource(
            Method::GET,
            "/apis/metrics.k8s.io/v1beta1/namespaces/kube-system/pods?watch=true",
        );
        assert_eq!((&*r.verb, &*r.namespace), ("watch", "kube-system"));
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
        assert_eq!((&*r.verb, &*r.name), ("list", "node-1"));
        let r = resource(
            Method::GET,
            "/apis/metrics.k8s.io/v1beta1/nodes?fieldSelector=metadata.name%3Da,spec.x%3Db",
        );
        assert_eq!(r.name, "");
        // Read in place when nothing needed decoding.
        let r = resource(
            Method::GET,
            "/apis/metrics.k8s.io/v1beta1/nodes?fieldSelector=metadata.name==node-2",
        );
        assert_eq!(r.name, "node-2");
        assert!(matches!(r.name, Cow::Borrowed(_)));
    }

    #[test]
    fn subresources_and_the_core_group_are_recognised() {
        let r = resource(Method::GET, "/api/v1/namespaces/default/pods/web/log");
        assert_eq!(
            (
                &*r.group,
                &*r.version,
                &*r.resource,
                &*r.name,
                &*r.subresource
            ),
            ("", "v1", "pods", "web", "log")
        );
        let r = resource(Method::GET, "/api/v1/namespaces/default");
        assert_eq!(
            (&*r.resource, &*r.name, &*r.namespace),
            ("namespaces", "default", "default")
        );
        let r = resource(Method::PUT, "/api/v1/namespaces/default/status");
        assert_eq!(
            (&*r.verb, &*r.resource, &*r.subresource),
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
                    path: path.into(),
                    verb: "get".into(),
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
