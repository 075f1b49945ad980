//! The authentication and authorization hook every API request passes through.
//!
//! This is the slot delegated authentication and authorization plug into (front-proxy request
//! headers verified against the request-header CA, client certificates, `TokenReview`,
//! `SubjectAccessReview`). Until they arrive, [`Authenticator::Anonymous`] and
//! [`Authorizer::AlwaysAllow`] let every request through; the routing code already calls both on
//! every request and already turns their refusals into `401`/`403` `Status` responses, so adding a
//! delegated variant changes no handler. Paths in `--authorization-always-allow-paths` (the health
//! endpoints by default) skip authorization, as upstream does.
//!
//! The hook must not wait on anything the scrape side holds.

use http::request::Parts;

/// Who made a request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    pub user: String,
    pub groups: Vec<String>,
}

impl Identity {
    /// The identity of a request that presented no credentials, as Kubernetes names it.
    pub fn anonymous() -> Self {
        Identity {
            user: "system:anonymous".to_owned(),
            groups: vec!["system:unauthenticated".to_owned()],
        }
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
}

/// Establishes who made a request.
#[derive(Clone, Debug, Default)]
pub enum Authenticator {
    /// Every request is `system:anonymous`. The placeholder until delegated authentication lands.
    #[default]
    Anonymous,
}

impl Authenticator {
    pub async fn authenticate(&self, _request: &Parts) -> Result<Identity, AuthError> {
        match self {
            Authenticator::Anonymous => Ok(Identity::anonymous()),
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
}

impl Authorizer {
    pub async fn authorize(&self, identity: &Identity, request: &Parts) -> Result<(), AuthError> {
        match self {
            Authorizer::AlwaysAllow => Ok(()),
            Authorizer::AllowPaths(paths) if paths.allows(request.uri.path()) => Ok(()),
            Authorizer::AllowPaths(_) => Err(AuthError::Forbidden(format!(
                "User \"{}\" cannot {} path \"{}\"",
                identity.user,
                request.method.as_str().to_ascii_lowercase(),
                request.uri.path()
            ))),
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
    fn wildcard_paths_match_by_prefix() {
        let paths = AlwaysAllowPaths::new(["/readyz*", "/healthz"]);
        assert!(paths.allows("/readyz/ping"));
        assert!(paths.allows("/healthz"));
        assert!(!paths.allows("/healthz/ping"));
        assert!(!paths.allows("/metrics"));
    }
}
