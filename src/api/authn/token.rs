//! Bearer tokens checked with a `TokenReview` (`authentication.k8s.io/v1`), answers cached.
//!
//! Both answers (authenticated or not) are cached for `--authentication-token-webhook-cache-ttl`,
//! so a revoked token keeps working for at most that long; a review that could not be made is not
//! cached. The cache is keyed by the token's SHA-256, never by the token.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};
use kube::api::{Api, PostParams};

use super::cache::{bounded, digest, CacheLimits, ReviewCache, ReviewError};
use super::AuthenticatedUser;

/// Reviews bearer tokens through the API server.
#[derive(Clone)]
pub struct TokenAuthenticator {
    client: kube::Client,
    /// `None` answers are tokens the API server did not authenticate. A user is kept with the
    /// authenticated group added, and shared by every request that presents its token.
    cache: ReviewCache<Option<Arc<AuthenticatedUser>>>,
}

impl std::fmt::Debug for TokenAuthenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenAuthenticator")
            .field("cache", &self.cache)
            .finish_non_exhaustive()
    }
}

impl TokenAuthenticator {
    pub fn new(client: kube::Client, ttl: Duration, limits: CacheLimits) -> Self {
        TokenAuthenticator {
            client,
            cache: ReviewCache::new(limits, move |_| ttl),
        }
    }

    /// The user the token belongs to, `None` if the API server does not authenticate it.
    pub async fn review(&self, token: &str) -> Result<Option<Arc<AuthenticatedUser>>, ReviewError> {
        // The review is set up only when the cache has no answer.
        self.cache
            .get_or_review(digest(token.as_bytes()), || {
                bounded(review(self.client.clone(), token.to_owned()))
            })
            .await
    }

    /// How many answers are cached.
    pub fn cached(&self) -> usize {
        self.cache.len()
    }
}

async fn review(
    client: kube::Client,
    token: String,
) -> Result<Option<Arc<AuthenticatedUser>>, ReviewError> {
    let request = TokenReview {
        spec: TokenReviewSpec {
            token: Some(token),
            audiences: None,
        },
        ..TokenReview::default()
    };
    let answer = Api::<TokenReview>::all(client)
        .create(&PostParams::default(), &request)
        .await
        .map_err(|e| ReviewError::Api(e.to_string().into()))?;
    let Some(status) = answer.status else {
        return Ok(None);
    };
    if status.authenticated != Some(true) {
        if let Some(reason) = status.error.as_deref().filter(|e| !e.is_empty()) {
            tracing::debug!(reason, "Token review did not authenticate the token.");
        }
        return Ok(None);
    }
    let Some(user) = status.user else {
        return Ok(None);
    };
    let name = user.username.unwrap_or_default();
    if name.is_empty() {
        return Ok(None);
    }
    let user = AuthenticatedUser {
        name,
        uid: user.uid.unwrap_or_default(),
        groups: user.groups.unwrap_or_default(),
        extra: user.extra.unwrap_or_default(),
    };
    Ok(Some(Arc::new(user.with_authenticated_group())))
}
