//! The authentication and authorization hook every API request passes through.
//!
//! The server runs with [`Authenticator::Delegated`] (front-proxy request headers verified against
//! the request-header CA, client certificates, `TokenReview`; see [`super::authn`]) and
//! [`Authorizer::Delegated`] (`SubjectAccessReview`; see [`super::authz`]).
//! [`Authenticator::Anonymous`], [`Authorizer::AlwaysAllow`] and [`Authorizer::AllowPaths`] serve
//! tests and embeddings without a cluster. The router calls [`Auth::check`] on every request and
//! turns its refusals into `401`/`403`/`500` `Status` responses. Paths in
//! `--authorization-always-allow-paths` (the health endpoints by default) skip authorization, as
//! upstream does.
//!
//! Identity headers (`X-Remote-User` and friends) are never read here: only the delegated
//! authenticator reads them, and only after the TLS peer's chain verified against the
//! request-header CA. They are not stripped either, because no handler reads request headers
//! after [`Auth::check`]; a handler that starts to must strip them first. A request that fails authorization review (the API server unreachable, say)
//! is answered `500 InternalError`, as upstream does, rather than `403`: the request may well be
//! allowed, and a `403` would tell the client otherwise.
//!
//! The hook must not wait on anything the scrape side holds.

use std::sync::{Arc, LazyLock};

use http::request::Parts;

use super::authn::{AuthenticatedUser, DelegatedAuthenticator};
use super::authz::{Decision, DelegatedAuthorizer};

/// Who made a request: the user as authentication established it, shared rather than copied,
/// since one identity is read by every later step of the request and, for a cached token or
/// certificate, by every request that presents it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity(Arc<AuthenticatedUser>);

/// The one anonymous identity, built once.
static ANONYMOUS: LazyLock<Arc<AuthenticatedUser>> =
    LazyLock::new(|| Arc::new(AuthenticatedUser::anonymous()));

impl Identity {
    /// The identity of a request that presented no credentials, as Kubernetes names it.
    pub fn anonymous() -> Self {
        Identity(Arc::clone(&ANONYMOUS))
    }
}

impl std::ops::Deref for Identity {
    type Target = AuthenticatedUser;

    fn deref(&self) -> &AuthenticatedUser {
        &self.0
    }
}

impl From<AuthenticatedUser> for Identity {
    fn from(user: AuthenticatedUser) -> Self {
        Identity(Arc::new(user))
    }
}

impl From<Arc<AuthenticatedUser>> for Identity {
    fn from(user: Arc<AuthenticatedUser>) -> Self {
        Identity(user)
    }
}

/// Why a request was refused; the router renders these as `Status` objects.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AuthError {
    /// Credentials were presented and rejected: `401 Unauthorized`.
    #[error("Unauthorized")]
    Unauthenticated,
    /// The identity may not do this: `403 Forbidden`.
    #[error("{0}")]
    Forbidden(String),
    /// No decision could be made (the authorization review failed): `500 InternalError`.
    #[error("{0}")]
    Internal(String),
}

/// Establishes who made a request.
#[derive(Clone, Debug, Default)]
pub enum Authenticator {
    /// Every request is `system:anonymous`. The placeholder until delegated authentication lands.
    #[default]
    Anonymous,
    /// Front-proxy headers, client certificates and bearer tokens, as [`super::authn`] checks
    /// them; a request without credentials is `system:anonymous`.
    Delegated(Arc<DelegatedAuthenticator>),
}

impl Authenticator {
    pub async fn authenticate(&self, request: &Parts) -> Result<Identity, AuthError> {
        match self {
            Authenticator::Anonymous => Ok(Identity::anonymous()),
            Authenticator::Delegated(authenticator) => {
                match authenticator.authenticate_parts(request).await {
                    Ok(Some(user)) => Ok(Identity::from(user)),
                    Ok(None) => Ok(Identity::anonymous()),
                    Err(error) => {
                        tracing::debug!(
                            path = %request.uri.path(),
                            %error,
                            "Authentication failed."
                        );
                        Err(AuthError::Unauthenticated)
                    }
                }
            }
        }
    }
}

/// Decides whether an identity may make a request.
#[derive(Clone, Debug, Default)]
pub enum Authorizer {
    /// Allows everything. The placeholder until delegated authorization lands.
    #[default]
    AlwaysAllow,
    /// Allows only the listed paths (`--authorization-always-allow-paths`) and denies the rest;
    /// used where nothing else may be exposed.
    AllowPaths(AlwaysAllowPaths),
    /// Asks the API server through `SubjectAccessReview` (members of `system:masters` are allowed
    /// without asking, as Kubernetes does).
    Delegated(Arc<DelegatedAuthorizer>),
}

impl Authorizer {
    pub async fn authorize(&self, identity: &Identity, request: &Parts) -> Result<(), AuthError> {
        match self {
            Authorizer::AlwaysAllow => Ok(()),
            Authorizer::AllowPaths(paths) if paths.allows(request.uri.path()) => Ok(()),
            Authorizer::AllowPaths(_) => Err(AuthError::Forbidden(format!(
                "User \"{}\" cannot {} path \"{}\"",
                identity.name,
                request.method.as_str().to_ascii_lowercase(),
                request.uri.path()
            ))),
            Authorizer::Delegated(authorizer) => {
                match authorizer.authorize_parts(identity, request).await {
                    Ok(Decision::Allow) => Ok(()),
                    Ok(Decision::Deny { message, .. }) => Err(AuthError::Forbidden(message)),
                    Err(error) => Err(AuthError::Internal(format!(
                        "Internal error occurred: {error}"
                    ))),
                }
            }
        }
    }
}

/// Paths served without authorization, with upstream's `/prefix*` wildcard form.
#[derive(Clone, Debug, Default)]
pub struct AlwaysAllowPaths {
    exact: Vec<String>,
    prefixes: Vec<String>,
}

impl AlwaysAllowPaths {
    pub fn new<I: IntoIterator<Item = S>, S: AsRef<str>>(paths: I) -> Self {
        let mut allowed = AlwaysAllowPaths::default();
        for path in paths {
            let path = path.as_ref();
            match path.strip_suffix('*') {
                Some(prefix) => allowed.prefixes.push(prefix.to_owned()),
                None => allowed.exact.push(path.to_owned()),
            }
        }
        allowed
    }

    pub fn allows(&self, path: &str) -> bool {
        self.exact.iter().any(|p| p == path) || self.prefixes.iter().any(|p| path.starts_with(p))
    }
}

/// Both halves of the hook, as the router holds them.
#[derive(Clone, Debug, Default)]
pub struct Auth {
    pub authenticator: Authenticator,
    pub authorizer: Authorizer,
    pub always_allow: AlwaysAllowPaths,
}

impl Auth {
    /// Authenticates, then authorizes unless the path is always allowed.
    pub async fn check(&self, request: &Parts) -> Result<Identity, AuthError> {
        let identity = self.authenticator.authenticate(request).await?;
        if !self.always_allow.allows(request.uri.path()) {
            self.authorizer.authorize(&identity, request).await?;
        }
        Ok(identity)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(path: &str) -> Parts {
        http::Request::get(path).body(()).unwrap().into_parts().0
    }

    fn block_on<F: std::future::Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(f)
    }

    #[test]
    fn allow_all_lets_metrics_requests_through_as_anonymous() {
        let auth = Auth::default();
        let identity = block_on(auth.check(&parts("/apis/metrics.k8s.io/v1beta1/nodes"))).unwrap();
        assert_eq!(identity, Identity::anonymous());
    }

    #[test]
    fn health_paths_bypass_a_denying_authorizer() {
        let auth = Auth {
            authenticator: Authenticator::Anonymous,
            authorizer: Authorizer::AllowPaths(AlwaysAllowPaths::new(["/version"])),
            always_allow: AlwaysAllowPaths::new(["/healthz", "/readyz", "/livez"]),
        };
        assert!(block_on(auth.check(&parts("/livez"))).is_ok());
        assert!(block_on(auth.check(&parts("/version"))).is_ok());
        let denied = block_on(auth.check(&parts("/apis/metrics.k8s.io/v1beta1/pods")));
        assert!(matches!(denied, Err(AuthError::Forbidden(m)) if m.contains("system:anonymous")));
    }

    #[test]
    fn an_authenticated_user_keeps_uid_and_extra_for_the_review() {
        let mut extra = std::collections::BTreeMap::new();
        extra.insert("scopes".to_owned(), vec!["read".to_owned()]);
        let user = AuthenticatedUser {
            name: "jane".to_owned(),
            uid: "42".to_owned(),
            groups: vec!["readers".to_owned(), "system:authenticated".to_owned()],
            extra,
        };
        let identity = Identity::from(user.clone());
        assert_eq!(identity.name, "jane");
        assert_eq!(*identity, user);
        assert_eq!(Identity::anonymous().name, "system:anonymous");
        assert_eq!(Identity::anonymous().groups, ["system:unauthenticated"]);
    }

    #[test]
    fn wildcard_paths_match_by_prefix() {
        let paths = AlwaysAllowPaths::new(["/readyz*", "/healthz"]);
        assert!(paths.allows("/readyz/ping"));
        assert!(paths.allows("/healthz"));
        assert!(!paths.allows("/healthz/ping"));
        assert!(!paths.allows("/metrics"));
    }
}
