//! Delegated authorization: whether an authenticated user may make a request, decided by the API
//! server through `SubjectAccessReview` (`authorization.k8s.io/v1`), as every aggregated API
//! server decides it.
//!
//! Members of `system:masters` are always allowed without asking. Everything else is one review,
//! with resource attributes for API paths and non-resource attributes otherwise
//! ([`RequestAttributes`]). Answers are cached (allowed and denied each with its own TTL, upstream
//! default 10 s both), the cache is bounded and identical concurrent reviews are coalesced
//! ([`crate::api::authn::cache`]). A denial carries the `403` message in Kubernetes' words.
//!
//! Paths in `--authorization-always-allow-paths` never reach this module: the hook skips them.

pub mod attributes;

use std::time::Duration;

use k8s_openapi::api::authorization::v1::{
    NonResourceAttributes as SarNonResource, ResourceAttributes as SarResource,
    SubjectAccessReview, SubjectAccessReviewSpec,
};
use kube::api::{Api, PostParams};

pub use self::attributes::{NonResourceAttributes, RequestAttributes, ResourceAttributes};
use super::authn::cache::{bounded, CacheLimits, ReviewCache, ReviewError};
use super::authn::AuthenticatedUser;

/// The group whose members are always allowed.
pub const PRIVILEGED_GROUP: &str = "system:masters";

/// Why no decision could be made; the caller answers `500`-like and logs it, as Kubernetes does
/// when its authorizer fails.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AuthzError {
    #[error("authorization review failed: {0}")]
    Review(#[from] ReviewError),
}

/// The answer for one request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    Allow,
    Deny {
        /// The reviewer's reason, possibly empty.
        reason: String,
        /// The full `403` message, in Kubernetes' form.
        message: String,
    },
}

impl Decision {
    pub fn is_allowed(&self) -> bool {
        matches!(self, Decision::Allow)
    }
}

/// Authorization settings from the command line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AuthorizationConfig {
    /// `--authorization-webhook-cache-authorized-ttl` (upstream default 10 s).
    pub allowed_ttl: Duration,
    /// `--authorization-webhook-cache-unauthorized-ttl` (upstream default 10 s).
    pub denied_ttl: Duration,
    /// Size of the decision cache and bound on reviews in flight.
    pub cache: CacheLimits,
}

impl Default for AuthorizationConfig {
    fn default() -> Self {
        AuthorizationConfig {
            allowed_ttl: Duration::from_secs(10),
            denied_ttl: Duration::from_secs(10),
            cache: CacheLimits::default(),
        }
    }
}

/// A review's cached outcome: allowed or not, and the reviewer's reason.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Verdict {
    allowed: bool,
    reason: String,
}

/// Authorizes requests through `SubjectAccessReview`; cheap to clone.
#[derive(Clone)]
pub struct DelegatedAuthorizer {
    client: kube::Client,
    cache: ReviewCache<Verdict>,
}

// === impl DelegatedAuthorizer ===

impl std::fmt::Debug for DelegatedAuthorizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DelegatedAuthorizer")
            .field("cache", &self.cache)
            .finish_non_exhaustive()
    }
}

impl DelegatedAuthorizer {
    pub fn new(client: kube::Client, config: AuthorizationConfig) -> Self {
        let AuthorizationConfig {
            allowed_ttl,
            denied_ttl,
            cache,
        } = config;
        DelegatedAuthorizer {
            client,
            cache: ReviewCache::new(
                cache,
                move |v: &Verdict| {
                    if v.allowed {
                        allowed_ttl
                    } else {
                        denied_ttl
                    }
                },
            ),
        }
    }

    /// Whether `user` may do what `attrs` describe.
    pub async fn authorize(
        &self,
        user: &AuthenticatedUser,
        attrs: &RequestAttributes<'_>,
    ) -> Result<Decision, AuthzError> {
        if user.groups.iter().any(|g| g == PRIVILEGED_GROUP) {
            return Ok(Decision::Allow);
        }
        let key = cache_key(user, attrs);
        // The review is set up only when the cache has no answer.
        let verdict = self
            .cache
            .get_or_review(key, || {
                bounded(ask(self.client.clone(), review_for(user, attrs)))
            })
            .await
            .inspect_err(|error| {
                tracing::error!(user = %user.name, error = %error, "Unable to review access.");
            })?;
        if verdict.allowed {
            return Ok(Decision::Allow);
        }
        Ok(Decision::Deny {
            message: forbidden_message(&user.name, attrs, &verdict.reason),
            reason: verdict.reason,
        })
    }

    /// [`DelegatedAuthorizer::authorize`] for the request as the router holds it.
    pub async fn authorize_parts(
        &self,
        user: &AuthenticatedUser,
        parts: &http::request::Parts,
    ) -> Result<Decision, AuthzError> {
        self.authorize(user, &RequestAttributes::from_parts(parts))
            .await
    }

    /// How many decisions are cached.
    pub fn cached(&self) -> usize {
        self.cache.len()
    }
}

/// The SHA-256 of everything the review's answer depends on: the user's name, uid, groups and
/// extra, and the request's attributes. Each string is hashed after its length and each list
/// after its count, so two different keys never feed the hash the same bytes.
fn cache_key(user: &AuthenticatedUser, attrs: &RequestAttributes<'_>) -> [u8; 32] {
    let mut hash = KeyHasher(ring::digest::Context::new(&ring::digest::SHA256));
    hash.text(&user.name);
    hash.text(&user.uid);
    hash.count(user.groups.len());
    for group in &user.groups {
        hash.text(group);
    }
    hash.count(user.extra.len());
    for (key, values) in &user.extra {
        hash.text(key);
        hash.count(values.len());
        for value in values {
            hash.text(value);
        }
    }
    match attrs {
        RequestAttributes::Resource(r) => {
            hash.0.update(b"R");
            for field in [
                &r.verb,
                &r.group,
                &r.version,
                &r.resource,
                &r.subresource,
                &r.namespace,
                &r.name,
            ] {
                hash.text(field);
            }
        }
        RequestAttributes::NonResource(n) => {
            hash.0.update(b"N");
            hash.text(&n.path);
            hash.text(&n.verb);
        }
    }
    let mut key = [0u8; 32];
    key.copy_from_slice(hash.0.finish().as_ref());
    key
}

/// Feeds [`cache_key`]'s fields to the hash, each after its length.
struct KeyHasher(ring::digest::Context);

impl KeyHasher {
    fn count(&mut self, n: usize) {
        self.0.update(&(n as u64).to_le_bytes());
    }

    fn text(&mut self, text: &str) {
        self.count(text.len());
        self.0.update(text.as_bytes());
    }
}

fn review_for(user: &AuthenticatedUser, attrs: &RequestAttributes<'_>) -> SubjectAccessReview {
    let non_empty = |s: &str| (!s.is_empty()).then(|| s.to_owned());
    let mut spec = SubjectAccessReviewSpec {
        user: Some(user.name.clone()),
        uid: non_empty(&user.uid),
        groups: Some(user.groups.clone()),
        extra: (!user.extra.is_empty()).then(|| user.extra.clone()),
        ..SubjectAccessReviewSpec::default()
    };
    match attrs {
        RequestAttributes::Resource(r) => {
            spec.resource_attributes = Some(SarResource {
                verb: non_empty(&r.verb),
                group: Some(r.group.to_string()),
                version: non_empty(&r.version),
                resource: non_empty(&r.resource),
                subresource: non_empty(&r.subresource),
                namespace: non_empty(&r.namespace),
                name: non_empty(&r.name),
                ..SarResource::default()
            });
        }
        RequestAttributes::NonResource(n) => {
            spec.non_resource_attributes = Some(SarNonResource {
                path: Some(n.path.to_string()),
                verb: Some(n.verb.to_string()),
            });
        }
    }
    SubjectAccessReview {
        spec,
        ..SubjectAccessReview::default()
    }
}

async fn ask(client: kube::Client, review: SubjectAccessReview) -> Result<Verdict, ReviewError> {
    let answer = Api::<SubjectAccessReview>::all(client)
        .create(&PostParams::default(), &review)
        .await
        .map_err(|e| ReviewError::Api(e.to_string().into()))?;
    let status = answer.status.unwrap_or_default();
    // `denied` only matters with several authorizers; here anything not allowed is refused.
    Ok(Verdict {
        allowed: status.allowed && status.denied != Some(true),
        reason: status.reason.unwrap_or_default(),
    })
}

/// The `403` message Kubernetes gives, e.g. `pods.metrics.k8s.io "p" is forbidden: User "x"
/// cannot get resource "pods" in API group "metrics.k8s.io" in the namespace "ns"`, with the
/// reviewer's reason appended after `": "` when there is one.
pub fn forbidden_message(user: &str, attrs: &RequestAttributes<'_>, reason: &str) -> String {
    let mut detail = match attrs {
        RequestAttributes::NonResource(n) => {
            format!("User {user:?} cannot {} path {:?}", n.verb, n.path)
        }
        RequestAttributes::Resource(r) => {
            let resource = if r.subresource.is_empty() {
                r.resource.to_string()
            } else {
                format!("{}/{}", r.resource, r.subresource)
            };
            let scope = if r.namespace.is_empty() {
                "at the cluster scope".to_owned()
            } else {
                format!("in the namespace {:?}", r.namespace)
            };
            format!(
                "User {user:?} cannot {} resource {resource:?} in API group {:?} {scope}",
                r.verb, r.group
            )
        }
    };
    if !reason.is_empty() {
        detail.push_str(": ");
        detail.push_str(reason);
    }
    match attrs {
        RequestAttributes::NonResource(_) => format!("forbidden: {detail}"),
        RequestAttributes::Resource(r) => {
            let qualified = if r.group.is_empty() {
                r.resource.to_string()
            } else {
                format!("{}.{}", r.resource, r.group)
            };
            if qualified.is_empty() {
                format!("forbidden: {detail}")
            } else if r.name.is_empty() {
                format!("{qualified} is forbidden: {detail}")
            } else {
                format!("{qualified} {:?} is forbidden: {detail}", r.name)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    use http::Method;

    #[test]
    fn forbidden_messages_read_as_kubernetes_writes_them() {
        let list = RequestAttributes::from_request(
            &Method::GET,
            "/apis/metrics.k8s.io/v1beta1/namespaces/ns/pods",
        );
        assert_eq!(
            forbidden_message("x", &list, ""),
            "pods.metrics.k8s.io is forbidden: User \"x\" cannot list resource \"pods\" \
             in API group \"metrics.k8s.io\" in the namespace \"ns\""
        );
        let node =
            RequestAttributes::from_request(&Method::GET, "/apis/metrics.k8s.io/v1beta1/nodes/n1");
        assert_eq!(
            forbidden_message("x", &node, "no RBAC policy matched"),
            "nodes.metrics.k8s.io \"n1\" is forbidden: User \"x\" cannot get resource \"nodes\" \
             in API group \"metrics.k8s.io\" at the cluster scope: no RBAC policy matched"
        );
        let path = RequestAttributes::from_request(&Method::GET, "/metrics");
        assert_eq!(
            forbidden_message("system:anonymous", &path, ""),
            "forbidden: User \"system:anonymous\" cannot get path \"/metrics\""
        );
    }

    #[test]
    fn cache_keys_differ_by_user_groups_and_attributes() {
        let alice = AuthenticatedUser {
            name: "alice".into(),
            groups: vec!["a".into()],
            ..Default::default()
        };
        let mut alice_b = alice.clone();
        alice_b.groups = vec!["b".into()];
        let pods =
            RequestAttributes::from_request(&Method::GET, "/apis/metrics.k8s.io/v1beta1/pods");
        let nodes =
            RequestAttributes::from_request(&Method::GET, "/apis/metrics.k8s.io/v1beta1/nodes");
        assert_eq!(cache_key(&alice, &pods), cache_key(&alice.clone(), &pods));
        assert_ne!(cache_key(&alice, &pods), cache_key(&alice_b, &pods));
        assert_ne!(cache_key(&alice, &pods), cache_key(&alice, &nodes));
    }

    #[test]
    fn cache_keys_differ_wherever_field_boundaries_move() {
        let user =
            |name: &str, uid: &str, groups: &[&str], extra: &[(&str, &[&str])]| AuthenticatedUser {
                name: name.into(),
                uid: uid.into(),
                groups: groups.iter().map(|g| (*g).to_owned()).collect(),
                extra: extra
                    .iter()
                    .map(|(k, vs)| {
                        (
                            (*k).to_owned(),
                            vs.iter().map(|v| (*v).to_owned()).collect(),
                        )
                    })
                    .collect(),
            };
        let pods =
            RequestAttributes::from_request(&Method::GET, "/apis/metrics.k8s.io/v1beta1/pods");
        let users = [
            user("ab", "", &[], &[]),
            user("a", "b", &[], &[]),
            user("a", "", &["b"], &[]),
            user("a", "", &["", "b"], &[]),
            user("a", "", &[], &[("b", &[])]),
            user("a", "", &[], &[("", &["b"])]),
            user("a", "", &["b"], &[("c", &["d", "e"])]),
            user("a", "", &["b"], &[("c", &["de"])]),
            user("a", "", &["b"], &[("c", &["d"]), ("e", &[])]),
        ];
        let keys: std::collections::HashSet<_> =
            users.iter().map(|u| cache_key(u, &pods)).collect();
        assert_eq!(keys.len(), users.len());

        let alice = user("alice", "", &[], &[]);
        let in_ns = RequestAttributes::from_request(
            &Method::GET,
            "/apis/metrics.k8s.io/v1beta1/namespaces/ab/pods",
        );
        let non_resource = RequestAttributes::from_request(&Method::GET, "/healthz");
        let other_path = RequestAttributes::from_request(&Method::GET, "/livez");
        let keys: std::collections::HashSet<_> = [&pods, &in_ns, &non_resource, &other_path]
            .into_iter()
            .map(|attrs| cache_key(&alice, attrs))
            .collect();
        assert_eq!(keys.len(), 4);
    }

    #[test]
    fn reviews_carry_resource_or_non_resource_attributes() {
        let user = AuthenticatedUser {
            name: "bob".into(),
            groups: vec!["g".into()],
            extra: BTreeMap::from([("scopes".to_owned(), vec!["s".to_owned()])]),
            ..Default::default()
        };
        let attrs = RequestAttributes::from_request(
            &Method::GET,
            "/apis/metrics.k8s.io/v1beta1/namespaces/ns/pods/p",
        );
        let json = serde_json::to_value(review_for(&user, &attrs)).unwrap();
        assert_eq!(json["apiVersion"], "authorization.k8s.io/v1");
        assert_eq!(json["kind"], "SubjectAccessReview");
        assert_eq!(json["spec"]["user"], "bob");
        assert_eq!(json["spec"]["extra"]["scopes"][0], "s");
        assert_eq!(
            json["spec"]["resourceAttributes"],
            serde_json::json!({"verb": "get", "group": "metrics.k8s.io", "version": "v1beta1",
                "resource": "pods", "namespace": "ns", "name": "p"})
        );
        let path = RequestAttributes::from_request(&Method::GET, "/metrics");
        let json = serde_json::to_value(review_for(&user, &path)).unwrap();
        assert_eq!(
            json["spec"]["nonResourceAttributes"],
            serde_json::json!({"path": "/metrics", "verb": "get"})
        );
        assert!(json["spec"].get("resourceAttributes").is_none());
    }
}
