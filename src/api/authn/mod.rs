//! Delegated authentication, as every Kubernetes aggregated API server does it: who sent a
//! request, established from the front proxy's identity headers, a client certificate or a bearer
//! token, in that order.
//!
//! - **Request headers**: `X-Remote-User`, `X-Remote-Group`, `X-Remote-Extra-<key>` (names
//!   configurable) are trusted only when the TLS peer's chain verifies against the request-header
//!   CA *and* the leaf's CN is an allowed name (any CN when the list is empty). Otherwise they are
//!   ignored, never trusted; [`DelegatedAuthenticator::strip_identity_headers`] removes them.
//! - **Client certificates**: a chain verified by the client CA names the user (CN) and groups (O).
//! - **Bearer tokens**: a `TokenReview`, cached ([`token`]).
//! - Nothing presented: anonymous (`Ok(None)`). Something presented and rejected (a chain no CA
//!   verifies, a disallowed front-proxy CN, an unknown token): [`AuthnError::Unauthenticated`],
//!   which the caller answers with `401`.
//!
//! The CAs and header names come from flags or, where a flag is not given, from the
//! `kube-system/extension-apiserver-authentication` ConfigMap, which is followed for changes
//! ([`configmap`]); chains are verified per request against the settings current at that moment.
//! The TLS layer only collects the chain ([`tls::AcceptAnyClientCert`]).
//!
//! This module never authorizes: that is [`super::authz`].
//!
//! ## Wiring
//! The listener builds its `ServerConfig` with [`tls::AcceptAnyClientCert::shared`], and for
//! each connection stores `peer_certificates()` as a [`PeerCertificates`] in every request's
//! extensions. The hook calls [`DelegatedAuthenticator::authenticate_parts`] (`Ok(None)` is
//! anonymous, `Err` is `401`), then [`DelegatedAuthenticator::strip_identity_headers`], then
//! `authz::DelegatedAuthorizer::authorize_parts` unless the path is always allowed.

pub mod cache;
pub mod configmap;
pub mod headers;
pub mod tls;
pub mod token;
pub mod x509;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use http::header::{HeaderMap, AUTHORIZATION};
use http::request::Parts;
use rustls::pki_types::{CertificateDer, UnixTime};

use self::cache::CacheLimits;
use self::configmap::PublishedAuthentication;
use self::headers::HeaderNames;
use self::token::TokenAuthenticator;
use self::x509::CaPool;

/// The group every authenticated user is in.
pub const ALL_AUTHENTICATED: &str = "system:authenticated";
/// The user of a request without credentials.
pub const ANONYMOUS_USER: &str = "system:anonymous";
/// The group of a request without credentials.
pub const ALL_UNAUTHENTICATED: &str = "system:unauthenticated";

/// The certificate chain (leaf first) a client presented during the TLS handshake. The server
/// puts it in the request's extensions; its CA is checked only by
/// [`DelegatedAuthenticator::authenticate`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PeerCertificates(pub Arc<[CertificateDer<'static>]>);

/// Who a request comes from, as authentication established it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AuthenticatedUser {
    pub name: String,
    /// Empty unless a `TokenReview` gave one.
    pub uid: String,
    pub groups: Vec<String>,
    /// Extra attributes (scopes, the front proxy's `X-Remote-Extra-*`), passed on to
    /// `SubjectAccessReview`.
    pub extra: BTreeMap<String, Vec<String>>,
}

impl AuthenticatedUser {
    /// The identity of a request that presented no credentials.
    pub fn anonymous() -> Self {
        AuthenticatedUser {
            name: ANONYMOUS_USER.to_owned(),
            groups: vec![ALL_UNAUTHENTICATED.to_owned()],
            ..AuthenticatedUser::default()
        }
    }

    /// Adds `system:authenticated` unless the user is anonymous or already in either
    /// `system:authenticated` or `system:unauthenticated`, as Kubernetes does.
    fn with_authenticated_group(mut self) -> Self {
        let marked = self
            .groups
            .iter()
            .any(|g| g == ALL_AUTHENTICATED || g == ALL_UNAUTHENTICATED);
        if self.name != ANONYMOUS_USER && !marked {
            self.groups.push(ALL_AUTHENTICATED.to_owned());
        }
        self
    }
}

/// Why authentication failed. [`AuthnError::Unauthenticated`] is a verdict on one request (answer
/// `401`); the others are configuration problems, returned by [`start`].
#[derive(Debug, thiserror::Error)]
pub enum AuthnError {
    #[error("Unauthorized: {0}")]
    Unauthenticated(String),
    #[error("invalid CA bundle in {origin}: {reason}")]
    InvalidCaBundle { origin: String, reason: String },
    #[error("invalid certificate: {0}")]
    InvalidCertificate(String),
    #[error("invalid value of {key} in the authentication ConfigMap: {reason}")]
    InvalidConfigMap { key: String, reason: String },
    #[error("unable to read {path}: {error}")]
    ReadFile {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error(
        "unable to load configmap based request-header-client-ca-file: {0}; \
         pass --authentication-tolerate-lookup-failure=true to start without it"
    )]
    Lookup(String),
}

/// Authentication settings from the command line.
#[derive(Clone, Debug)]
pub struct AuthenticationConfig {
    /// `--client-ca-file`: overrides the ConfigMap's `client-ca-file`.
    pub client_ca_file: Option<PathBuf>,
    /// `--requestheader-client-ca-file`: when given, all `requestheader_*` settings come from
    /// flags instead of the ConfigMap.
    pub requestheader_client_ca_file: Option<PathBuf>,
    /// `--requestheader-allowed-names`: allowed front-proxy CNs; any when empty.
    pub requestheader_allowed_names: Vec<String>,
    /// `--requestheader-username-headers`.
    pub requestheader_username_headers: Vec<String>,
    /// `--requestheader-group-headers`.
    pub requestheader_group_headers: Vec<String>,
    /// `--requestheader-extra-headers-prefix`.
    pub requestheader_extra_headers_prefix: Vec<String>,
    /// `--authentication-skip-lookup`: do not read the ConfigMap.
    pub skip_lookup: bool,
    /// `--authentication-tolerate-lookup-failure`: start without the ConfigMap if it cannot be
    /// read (with a warning; it is still followed, so it applies once readable).
    pub tolerate_lookup_failure: bool,
    /// `--authentication-token-webhook-cache-ttl` (upstream default 10 s).
    pub token_cache_ttl: Duration,
    /// Size of the token cache and bound on reviews in flight.
    pub token_cache: CacheLimits,
}

impl Default for AuthenticationConfig {
    fn default() -> Self {
        AuthenticationConfig {
            client_ca_file: None,
            requestheader_client_ca_file: None,
            requestheader_allowed_names: Vec::new(),
            requestheader_username_headers: vec!["X-Remote-User".to_owned()],
            requestheader_group_headers: vec!["X-Remote-Group".to_owned()],
            requestheader_extra_headers_prefix: vec!["X-Remote-Extra-".to_owned()],
            skip_lookup: false,
            tolerate_lookup_failure: false,
            token_cache_ttl: Duration::from_secs(10),
            token_cache: CacheLimits::default(),
        }
    }
}

/// What the front proxy must present for its identity headers to be trusted.
#[derive(Clone, Debug)]
pub struct RequestHeaderAuth {
    ca: CaPool,
    allowed_names: Vec<String>,
    headers: HeaderNames,
}

impl RequestHeaderAuth {
    pub fn new(
        ca: CaPool,
        allowed_names: Vec<String>,
        username_headers: &[String],
        group_headers: &[String],
        extra_headers_prefix: &[String],
    ) -> Self {
        RequestHeaderAuth {
            ca,
            allowed_names: allowed_names
                .into_iter()
                .map(|n| n.trim().to_owned())
                .filter(|n| !n.is_empty())
                .collect(),
            headers: HeaderNames::new(username_headers, group_headers, extra_headers_prefix),
        }
    }

    /// The user named by the headers if `chain` is a trusted front proxy; `Ok(None)` if it is
    /// trusted but names nobody; `Err` (a reason) if the chain is not trusted.
    fn authenticate(
        &self,
        chain: &PeerCertificates,
        headers: &HeaderMap,
        now: UnixTime,
    ) -> Result<Option<AuthenticatedUser>, String> {
        self.ca
            .verify(chain, now)
            .map_err(|e| format!("request-header client certificate: {e}"))?;
        if !self.allowed_names.is_empty() {
            let leaf = chain.0.first().ok_or("empty certificate chain")?;
            let subject = x509::subject(leaf).map_err(|e| e.to_string())?;
            if !self.allowed_names.contains(&subject.common_name) {
                return Err(format!(
                    "request-header client certificate CN {:?} is not an allowed name",
                    subject.common_name
                ));
            }
        }
        Ok(self.headers.user(headers))
    }
}

/// The settings from flags, and the current combination of flags over the ConfigMap.
#[derive(Debug)]
pub struct Shared {
    flags: PublishedAuthentication,
    /// Many readers (every request), one rare writer (the ConfigMap follower): arc-swap.
    current: ArcSwap<PublishedAuthentication>,
    /// ConfigMap versions refused as invalid (the previous settings stayed).
    rejected_updates: AtomicU64,
}

impl Shared {
    fn new(flags: PublishedAuthentication) -> Self {
        Shared {
            current: ArcSwap::from_pointee(flags.clone()),
            flags,
            rejected_updates: AtomicU64::new(0),
        }
    }

    fn reject_update(&self) {
        self.rejected_updates.fetch_add(1, Ordering::Relaxed);
    }

    /// Makes `published` current, except where a flag overrides it.
    fn publish(&self, published: PublishedAuthentication) {
        self.current.store(Arc::new(PublishedAuthentication {
            client_ca: self.flags.client_ca.clone().or(published.client_ca),
            request_header: self
                .flags
                .request_header
                .clone()
                .or(published.request_header),
        }));
    }
}

/// Authenticates requests; cheap to clone.
#[derive(Clone)]
pub struct DelegatedAuthenticator {
    inner: Arc<Inner>,
}

struct Inner {
    shared: Arc<Shared>,
    tokens: TokenAuthenticator,
    /// Header names stripped whatever the current settings: the flags' (or defaults).
    flag_headers: HeaderNames,
    follower: Option<tokio::task::AbortHandle>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        // The ConfigMap follower only feeds this authenticator.
        if let Some(follower) = &self.follower {
            follower.abort();
        }
    }
}

impl std::fmt::Debug for DelegatedAuthenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let current = self.inner.shared.current.load();
        f.debug_struct("DelegatedAuthenticator")
            .field("client_ca", &current.client_ca.is_some())
            .field("request_header", &current.request_header.is_some())
            .field("follows_configmap", &self.inner.follower.is_some())
            .finish()
    }
}

/// Builds the authenticator: reads the CA files given by flags, reads the ConfigMap (unless both
/// CAs come from flags or the lookup is skipped) and starts following it.
pub async fn start(
    client: kube::Client,
    config: AuthenticationConfig,
) -> Result<DelegatedAuthenticator, AuthnError> {
    let flags = PublishedAuthentication {
        client_ca: config
            .client_ca_file
            .as_deref()
            .map(|path| CaPool::from_pem(&path.display().to_string(), &read(path)?))
            .transpose()?,
        request_header: config
            .requestheader_client_ca_file
            .as_deref()
            .map(|path| {
                Ok::<_, AuthnError>(RequestHeaderAuth::new(
                    CaPool::from_pem(&path.display().to_string(), &read(path)?)?,
                    config.requestheader_allowed_names.clone(),
                    &config.requestheader_username_headers,
                    &config.requestheader_group_headers,
                    &config.requestheader_extra_headers_prefix,
                ))
            })
            .transpose()?,
    };
    let shared = Arc::new(Shared::new(flags));
    let needs_configmap = shared.flags.client_ca.is_none() || shared.flags.request_header.is_none();
    let mut follower = None;
    if needs_configmap && !config.skip_lookup {
        let loaded = configmap::lookup(client.clone()).await.and_then(|found| {
            let data = found.and_then(|c| c.data).unwrap_or_default();
            configmap::parse(&data)
        });
        match loaded {
            Ok(published) => shared.publish(published),
            Err(error) if config.tolerate_lookup_failure => tracing::warn!(
                namespace = configmap::NAMESPACE,
                name = configmap::NAME,
                error = %error,
                "Unable to read the authentication ConfigMap; continuing without it."
            ),
            Err(error) => return Err(error),
        }
        let task = tokio::spawn(configmap::follow(client.clone(), Arc::clone(&shared)));
        follower = Some(task.abort_handle());
    }
    Ok(DelegatedAuthenticator {
        inner: Arc::new(Inner {
            shared,
            tokens: TokenAuthenticator::new(client, config.token_cache_ttl, config.token_cache),
            flag_headers: HeaderNames::new(
                &config.requestheader_username_headers,
                &config.requestheader_group_headers,
                &config.requestheader_extra_headers_prefix,
            ),
            follower,
        }),
    })
}

fn read(path: &Path) -> Result<Vec<u8>, AuthnError> {
    std::fs::read(path).map_err(|error| AuthnError::ReadFile {
        path: path.to_owned(),
        error,
    })
}

// === impl DelegatedAuthenticator ===

impl DelegatedAuthenticator {
    /// Who sent the request: `Ok(Some(user))`, `Ok(None)` for anonymous, or
    /// [`AuthnError::Unauthenticated`] when presented credentials were rejected and none accepted.
    pub async fn authenticate(
        &self,
        parts: &Parts,
        peer: Option<&PeerCertificates>,
    ) -> Result<Option<Arc<AuthenticatedUser>>, AuthnError> {
        let mut rejections = Vec::new();
        if let Some(chain) = peer.filter(|chain| !chain.0.is_empty()) {
            if let Some(user) = self.authenticate_certificate(parts, chain, &mut rejections) {
                return Ok(Some(Arc::new(user.with_authenticated_group())));
            }
        }
        if let Some(token) = bearer_token(&parts.headers) {
            // The token cache holds users with the authenticated group already added.
            match self.inner.tokens.review(token).await {
                Ok(Some(user)) => return Ok(Some(user)),
                Ok(None) => rejections.push("invalid bearer token".to_owned()),
                Err(error) => {
                    tracing::error!(error = %error, "Unable to review a bearer token.");
                    rejections.push(format!("token review failed: {error}"));
                }
            }
        }
        if rejections.is_empty() {
            Ok(None)
        } else {
            tracing::debug!(
                path = parts.uri.path(),
                reasons = %rejections.join("; "),
                "Request credentials rejected."
            );
            Err(AuthnError::Unauthenticated(rejections.join("; ")))
        }
    }

    /// [`DelegatedAuthenticator::authenticate`] with the chain the server stored in the request's
    /// extensions (as a [`PeerCertificates`]), if any.
    pub async fn authenticate_parts(
        &self,
        parts: &Parts,
    ) -> Result<Option<Arc<AuthenticatedUser>>, AuthnError> {
        self.authenticate(parts, parts.extensions.get::<PeerCertificates>())
            .await
    }

    /// The front proxy's identity headers, then the client CA; rejections are collected.
    fn authenticate_certificate(
        &self,
        parts: &Parts,
        chain: &PeerCertificates,
        rejections: &mut Vec<String>,
    ) -> Option<AuthenticatedUser> {
        let current = self.inner.shared.current.load();
        let now = UnixTime::now();
        if let Some(request_header) = &current.request_header {
            match request_header.authenticate(chain, &parts.headers, now) {
                Ok(Some(user)) => return Some(user),
                Ok(None) => {}
                Err(reason) => rejections.push(reason),
            }
        }
        if let Some(client_ca) = &current.client_ca {
            match client_ca
                .verify(chain, now)
                .map_err(|e| e.to_string())
                .and_then(|()| {
                    let leaf = chain.0.first().ok_or("empty certificate chain")?;
                    x509::subject(leaf).map_err(|e| e.to_string())
                }) {
                Ok(subject) if !subject.common_name.is_empty() => {
                    return Some(AuthenticatedUser {
                        name: subject.common_name,
                        groups: subject.organizations,
                        ..AuthenticatedUser::default()
                    });
                }
                Ok(_) => {}
                Err(reason) => rejections.push(format!("client certificate: {reason}")),
            }
        }
        None
    }

    /// Removes the identity headers (current and configured names), so nothing after
    /// authentication reads a client's own `X-Remote-*` headers.
    pub fn strip_identity_headers(&self, headers: &mut HeaderMap) {
        self.inner.flag_headers.strip(headers);
        if let Some(request_header) = &self.inner.shared.current.load().request_header {
            request_header.headers.strip(headers);
        }
    }

    /// Whether a request-header CA and a client CA are currently configured.
    pub fn has_certificate_authorities(&self) -> (bool, bool) {
        let current = self.inner.shared.current.load();
        (
            current.request_header.is_some(),
            current.client_ca.is_some(),
        )
    }

    /// How many ConfigMap versions were refused as invalid since start.
    pub fn rejected_configmap_updates(&self) -> u64 {
        self.inner.shared.rejected_updates.load(Ordering::Relaxed)
    }

    /// How many token answers are cached.
    pub fn cached_tokens(&self) -> usize {
        self.inner.tokens.cached()
    }
}

/// The token of an `Authorization: Bearer <token>` header.
fn bearer_token(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(AUTHORIZATION)?.to_str().ok()?.trim();
    let mut words = value.splitn(3, ' ');
    let scheme = words.next()?;
    let token = words.next()?;
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(value: &str) -> HeaderMap {
        let mut map = HeaderMap::new();
        map.insert(AUTHORIZATION, value.parse().unwrap());
        map
    }

    #[test]
    fn bearer_tokens_are_read_from_the_authorization_header() {
        assert_eq!(bearer_token(&headers("Bearer abc")), Some("abc"));
        assert_eq!(bearer_token(&headers("bearer abc")), Some("abc"));
        assert_eq!(bearer_token(&headers("  Bearer abc  ")), Some("abc"));
        assert_eq!(bearer_token(&headers("Basic abc")), None);
        assert_eq!(bearer_token(&headers("Bearer")), None);
        assert_eq!(bearer_token(&headers("Bearer  abc")), None);
        assert_eq!(bearer_token(&HeaderMap::new()), None);
    }

    #[test]
    fn authenticated_users_join_system_authenticated_once() {
        let user = AuthenticatedUser {
            name: "alice".into(),
            groups: vec!["devs".into()],
            ..Default::default()
        }
        .with_authenticated_group();
        assert_eq!(user.groups, ["devs", ALL_AUTHENTICATED]);
        assert_eq!(user.clone().with_authenticated_group(), user);
        let anonymous = AuthenticatedUser::anonymous().with_authenticated_group();
        assert_eq!(anonymous.groups, [ALL_UNAUTHENTICATED]);
    }
}
