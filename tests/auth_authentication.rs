//! Delegated authentication against a fake API server on 127.0.0.1: every way a request can be
//! authenticated, and the ways an attacker would try to be someone else.

mod auth_support;

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use metrics_server::api::authn::cache::CacheLimits;
use metrics_server::api::authn::{
    self, AuthenticatedUser, AuthenticationConfig, AuthnError, DelegatedAuthenticator,
    PeerCertificates, ALL_AUTHENTICATED,
};

use auth_support::{configmap_data, eventually, request, Ca, FakeApi, Validity};

const PODS: &str = "/apis/metrics.k8s.io/v1beta1/pods";
const PROXY: &str = "front-proxy-client";

/// An authenticator over a fake API server publishing these CAs in the ConfigMap.
async fn published(
    client_ca: Option<&Ca>,
    request_header_ca: Option<&Ca>,
    allowed: &[&str],
) -> (std::sync::Arc<FakeApi>, DelegatedAuthenticator) {
    let (api, client) = FakeApi::start().await;
    api.set_configmap(configmap_data(client_ca, request_header_ca, allowed));
    let authenticator = authn::start(client, AuthenticationConfig::default())
        .await
        .unwrap();
    (api, authenticator)
}

fn proxied(user: &str, group: &str) -> http::request::Parts {
    request(
        PODS,
        &[
            ("X-Remote-User", user),
            ("X-Remote-Group", group),
            ("X-Remote-Extra-Scopes", "view"),
        ],
    )
}

fn is_unauthenticated(result: &Result<Option<Arc<AuthenticatedUser>>, AuthnError>) -> bool {
    matches!(result, Err(AuthnError::Unauthenticated(_)))
}

#[tokio::test]
async fn a_trusted_front_proxy_passes_on_the_user_groups_and_extras() {
    let proxy_ca = Ca::new("front-proxy-ca");
    let (_api, authenticator) = published(None, Some(&proxy_ca), &[PROXY]).await;
    let cert = proxy_ca.client(PROXY, None, Validity::Current);
    let user = authenticator
        .authenticate(&proxied("alice", "devs"), Some(&cert))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(user.name, "alice");
    assert_eq!(user.groups, ["devs", ALL_AUTHENTICATED]);
    assert_eq!(user.extra["scopes"], ["view"]);
}

#[tokio::test]
async fn identity_headers_without_a_client_certificate_are_ignored() {
    let proxy_ca = Ca::new("front-proxy-ca");
    let (api, authenticator) = published(None, Some(&proxy_ca), &[PROXY]).await;
    let forged = proxied("admin", "system:masters");
    assert_eq!(
        authenticator.authenticate(&forged, None).await.unwrap(),
        None
    );

    // With a valid token as well, the token's user is who the request is from.
    api.add_token("bob-token", "bob", &["staff"]);
    let forged = request(
        PODS,
        &[
            ("X-Remote-User", "admin"),
            ("X-Remote-Group", "system:masters"),
            ("Authorization", "Bearer bob-token"),
        ],
    );
    let user = authenticator
        .authenticate(&forged, None)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(user.name, "bob");
    assert_eq!(user.groups, ["staff", ALL_AUTHENTICATED]);
}

#[tokio::test]
async fn identity_headers_with_a_certificate_from_another_ca_are_rejected() {
    let proxy_ca = Ca::new("front-proxy-ca");
    let (_api, authenticator) = published(None, Some(&proxy_ca), &[PROXY]).await;
    let rogue = Ca::new("front-proxy-ca").client(PROXY, None, Validity::Current);
    let result = authenticator
        .authenticate(&proxied("admin", "system:masters"), Some(&rogue))
        .await;
    assert!(is_unauthenticated(&result), "{result:?}");
}

#[tokio::test]
async fn identity_headers_from_a_certificate_with_a_disallowed_name_are_rejected() {
    let proxy_ca = Ca::new("front-proxy-ca");
    let (_api, authenticator) = published(None, Some(&proxy_ca), &[PROXY]).await;
    let other = proxy_ca.client("someone-else", None, Validity::Current);
    let result = authenticator
        .authenticate(&proxied("admin", "system:masters"), Some(&other))
        .await;
    assert!(is_unauthenticated(&result), "{result:?}");
}

#[tokio::test]
async fn any_front_proxy_name_is_allowed_when_the_allowed_list_is_empty() {
    let proxy_ca = Ca::new("front-proxy-ca");
    let (_api, authenticator) = published(None, Some(&proxy_ca), &[]).await;
    let cert = proxy_ca.client("any-proxy", None, Validity::Current);
    let user = authenticator
        .authenticate(&proxied("carol", "devs"), Some(&cert))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(user.name, "carol");
}

#[tokio::test]
async fn an_expired_front_proxy_certificate_is_rejected() {
    let proxy_ca = Ca::new("front-proxy-ca");
    let (_api, authenticator) = published(None, Some(&proxy_ca), &[PROXY]).await;
    let expired = proxy_ca.client(PROXY, None, Validity::Expired);
    let result = authenticator
        .authenticate(&proxied("admin", "system:masters"), Some(&expired))
        .await;
    assert!(is_unauthenticated(&result), "{result:?}");
}

#[tokio::test]
async fn a_client_ca_certificate_names_the_user_by_cn_and_the_groups_by_o() {
    let client_ca = Ca::new("client-ca");
    let proxy_ca = Ca::new("front-proxy-ca");
    let (_api, authenticator) = published(Some(&client_ca), Some(&proxy_ca), &[PROXY]).await;
    let cert = client_ca.client("dave", Some("ops"), Validity::Current);
    // Identity headers beside a client certificate that is not the front proxy's are ignored.
    let user = authenticator
        .authenticate(&proxied("admin", "system:masters"), Some(&cert))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(user.name, "dave");
    assert_eq!(user.groups, ["ops", ALL_AUTHENTICATED]);
    assert!(user.extra.is_empty());
}

#[tokio::test]
async fn an_expired_client_certificate_is_rejected() {
    let client_ca = Ca::new("client-ca");
    let (_api, authenticator) = published(Some(&client_ca), None, &[]).await;
    let expired = client_ca.client("dave", Some("ops"), Validity::Expired);
    let result = authenticator
        .authenticate(&request(PODS, &[]), Some(&expired))
        .await;
    assert!(is_unauthenticated(&result), "{result:?}");
}

#[tokio::test]
async fn a_chain_through_an_intermediate_ca_is_verified() {
    let root = Ca::new("client-root");
    let (intermediate, intermediate_der) = root.intermediate("client-intermediate");
    let (_api, authenticator) = published(Some(&root), None, &[]).await;
    let leaf = intermediate.client("erin", None, Validity::Current);
    let chain = PeerCertificates(vec![leaf.0[0].clone(), intermediate_der].into());
    let user = authenticator
        .authenticate(&request(PODS, &[]), Some(&chain))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(user.name, "erin");
    // The leaf alone does not reach the root.
    let result = authenticator
        .authenticate(&request(PODS, &[]), Some(&leaf))
        .await;
    assert!(is_unauthenticated(&result), "{result:?}");
}

#[tokio::test]
async fn a_request_without_credentials_is_anonymous() {
    let client_ca = Ca::new("client-ca");
    let (api, authenticator) = published(Some(&client_ca), None, &[]).await;
    let result = authenticator.authenticate(&request(PODS, &[]), None).await;
    assert_eq!(result.unwrap(), None);
    let empty = PeerCertificates::default();
    let result = authenticator
        .authenticate(&request(PODS, &[]), Some(&empty))
        .await;
    assert_eq!(result.unwrap(), None);
    assert_eq!(api.token_reviews.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn an_unknown_bearer_token_is_unauthenticated() {
    let (_api, authenticator) = published(None, None, &[]).await;
    let parts = request(PODS, &[("Authorization", "Bearer nobody-has-this")]);
    let result = authenticator.authenticate(&parts, None).await;
    assert!(is_unauthenticated(&result), "{result:?}");
}

#[tokio::test]
async fn a_failed_token_review_is_unauthenticated_and_not_cached() {
    let (api, authenticator) = published(None, None, &[]).await;
    api.add_token("t", "frank", &[]);
    api.fail_token_reviews.store(true, Ordering::SeqCst);
    let parts = request(PODS, &[("Authorization", "Bearer t")]);
    let result = authenticator.authenticate(&parts, None).await;
    assert!(is_unauthenticated(&result), "{result:?}");
    assert_eq!(authenticator.cached_tokens(), 0);

    api.fail_token_reviews.store(false, Ordering::SeqCst);
    let user = authenticator.authenticate(&parts, None).await.unwrap();
    assert_eq!(user.map(|u| u.name.clone()).as_deref(), Some("frank"));
}

#[tokio::test]
async fn a_revoked_token_stops_working_after_the_cache_ttl() {
    let (api, client) = FakeApi::start().await;
    // Long enough that a stalled test machine does not expire the answer before the cached check.
    let ttl = Duration::from_secs(1);
    let authenticator = authn::start(
        client,
        AuthenticationConfig {
            skip_lookup: true,
            token_cache_ttl: ttl,
            ..AuthenticationConfig::default()
        },
    )
    .await
    .unwrap();
    api.add_token("soon-revoked", "grace", &["devs"]);
    let parts = request(PODS, &[("Authorization", "Bearer soon-revoked")]);
    // The answer is cached after this instant, so it cannot expire before `before + ttl`.
    let before = tokio::time::Instant::now();
    let user = authenticator.authenticate(&parts, None).await.unwrap();
    assert_eq!(user.unwrap().uid, "uid-grace");

    api.revoke_token("soon-revoked");
    // Still cached: no second review.
    assert!(authenticator
        .authenticate(&parts, None)
        .await
        .unwrap()
        .is_some());
    assert_eq!(api.token_reviews.load(Ordering::SeqCst), 1);

    eventually("the revoked token is rejected", || async {
        authenticator.authenticate(&parts, None).await.is_err()
    })
    .await;
    assert!(before.elapsed() >= ttl);
    assert_eq!(api.token_reviews.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn concurrent_requests_with_the_same_token_are_reviewed_once() {
    let (api, authenticator) = published(None, None, &[]).await;
    api.add_token("shared", "heidi", &[]);
    let parts = request(PODS, &[("Authorization", "Bearer shared")]);
    let all = futures::future::join_all((0..32).map(|_| authenticator.authenticate(&parts, None)));
    for result in all.await {
        assert_eq!(result.unwrap().unwrap().name, "heidi");
    }
    assert_eq!(api.token_reviews.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn the_token_cache_stays_within_its_bound() {
    let (api, client) = FakeApi::start().await;
    let authenticator = authn::start(
        client,
        AuthenticationConfig {
            skip_lookup: true,
            token_cache: CacheLimits {
                capacity: 8,
                max_concurrent: 2,
            },
            ..AuthenticationConfig::default()
        },
    )
    .await
    .unwrap();
    for i in 0..40 {
        let token = format!("token-{i}");
        api.add_token(&token, &format!("user-{i}"), &[]);
        let header = format!("Bearer {token}");
        let parts = request(PODS, &[("Authorization", &header)]);
        let user = authenticator.authenticate(&parts, None).await.unwrap();
        assert_eq!(user.unwrap().name, format!("user-{i}"));
        assert!(authenticator.cached_tokens() <= 8);
    }
    assert_eq!(authenticator.cached_tokens(), 8);
}

#[tokio::test]
async fn configmap_changes_are_picked_up_by_the_next_request() {
    let first_ca = Ca::new("client-ca-1");
    let second_ca = Ca::new("client-ca-2");
    let (api, authenticator) = published(Some(&first_ca), None, &[]).await;
    let first = first_ca.client("ivan", None, Validity::Current);
    let second = second_ca.client("judy", None, Validity::Current);
    let parts = request(PODS, &[]);
    assert_eq!(
        authenticator
            .authenticate(&parts, Some(&first))
            .await
            .unwrap()
            .unwrap()
            .name,
        "ivan"
    );
    assert!(is_unauthenticated(
        &authenticator.authenticate(&parts, Some(&second)).await
    ));

    eventually("the ConfigMap is watched", || async {
        api.watches_open.load(Ordering::SeqCst) > 0
    })
    .await;
    let proxy_ca = Ca::new("front-proxy-ca");
    api.set_configmap(configmap_data(Some(&second_ca), Some(&proxy_ca), &[PROXY]));
    eventually("the new client CA is used", || async {
        authenticator
            .authenticate(&parts, Some(&second))
            .await
            .is_ok()
    })
    .await;
    assert!(is_unauthenticated(
        &authenticator.authenticate(&parts, Some(&first)).await
    ));
    // The request-header settings arrived with the same change.
    let proxy = proxy_ca.client(PROXY, None, Validity::Current);
    let user = authenticator
        .authenticate(&proxied("mallory", "devs"), Some(&proxy))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(user.name, "mallory");

    // Deleting the ConfigMap withdraws the CAs it published: certificates are then ignored.
    api.delete_configmap();
    eventually("the CAs are withdrawn", || async {
        authenticator.has_certificate_authorities() == (false, false)
    })
    .await;
    assert_eq!(
        authenticator
            .authenticate(&parts, Some(&second))
            .await
            .unwrap(),
        None
    );
}

#[tokio::test]
async fn an_invalid_configmap_update_keeps_the_previous_settings() {
    let client_ca = Ca::new("client-ca");
    let (api, authenticator) = published(Some(&client_ca), None, &[]).await;
    eventually("the ConfigMap is watched", || async {
        api.watches_open.load(Ordering::SeqCst) > 0
    })
    .await;
    api.set_configmap(serde_json::json!({"client-ca-file": "not a certificate"}));
    let proxy_ca = Ca::new("front-proxy-ca");
    let mut data = configmap_data(Some(&client_ca), Some(&proxy_ca), &[]);
    data["requestheader-allowed-names"] = "[not json".into();
    api.set_configmap(data);
    eventually("both invalid versions are refused", || async {
        authenticator.rejected_configmap_updates() == 2
    })
    .await;
    assert_eq!(authenticator.has_certificate_authorities(), (false, true));
    let cert = client_ca.client("kim", None, Validity::Current);
    let user = authenticator
        .authenticate(&request(PODS, &[]), Some(&cert))
        .await
        .unwrap();
    assert_eq!(user.unwrap().name, "kim");
}

#[tokio::test]
async fn flags_override_the_configmap() {
    let published_ca = Ca::new("published-ca");
    let flag_ca = Ca::new("flag-ca");
    let dir = std::env::temp_dir().join(format!("auth-flags-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("client-ca.crt");
    std::fs::write(&path, flag_ca.pem()).unwrap();

    let (api, client) = FakeApi::start().await;
    api.set_configmap(configmap_data(Some(&published_ca), None, &[]));
    let authenticator = authn::start(
        client,
        AuthenticationConfig {
            client_ca_file: Some(path),
            ..AuthenticationConfig::default()
        },
    )
    .await
    .unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    let parts = request(PODS, &[]);
    let from_flag = flag_ca.client("leo", None, Validity::Current);
    let from_configmap = published_ca.client("mia", None, Validity::Current);
    let user = authenticator
        .authenticate(&parts, Some(&from_flag))
        .await
        .unwrap();
    assert_eq!(user.unwrap().name, "leo");
    assert!(is_unauthenticated(
        &authenticator
            .authenticate(&parts, Some(&from_configmap))
            .await
    ));
}

#[tokio::test]
async fn a_failed_configmap_lookup_stops_the_start_unless_tolerated() {
    let (api, client) = FakeApi::start().await;
    api.forbid_configmap.store(true, Ordering::SeqCst);
    let refused = authn::start(client.clone(), AuthenticationConfig::default()).await;
    assert!(matches!(refused, Err(AuthnError::Lookup(_))), "{refused:?}");

    let tolerated = authn::start(
        client,
        AuthenticationConfig {
            tolerate_lookup_failure: true,
            ..AuthenticationConfig::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(tolerated.has_certificate_authorities(), (false, false));
}

#[tokio::test]
async fn skipping_the_lookup_never_reads_the_configmap() {
    let client_ca = Ca::new("client-ca");
    let (api, client) = FakeApi::start().await;
    api.set_configmap(configmap_data(Some(&client_ca), None, &[]));
    let authenticator = authn::start(
        client,
        AuthenticationConfig {
            skip_lookup: true,
            ..AuthenticationConfig::default()
        },
    )
    .await
    .unwrap();
    // With no CA configured a certificate proves nothing, so the request is anonymous.
    let cert = client_ca.client("nina", None, Validity::Current);
    let result = authenticator
        .authenticate(&request(PODS, &[]), Some(&cert))
        .await;
    assert_eq!(result.unwrap(), None);
    assert_eq!(api.configmap_reads.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn identity_headers_are_stripped() {
    let (_api, authenticator) = published(None, None, &[]).await;
    let mut parts = proxied("admin", "system:masters");
    parts
        .headers
        .insert("accept", "application/json".parse().unwrap());
    authenticator.strip_identity_headers(&mut parts.headers);
    let left: Vec<&str> = parts.headers.keys().map(|k| k.as_str()).collect();
    assert_eq!(left, ["accept"]);
}

#[tokio::test]
async fn the_chain_stored_in_the_request_extensions_is_used() {
    let client_ca = Ca::new("client-ca");
    let (_api, authenticator) = published(Some(&client_ca), None, &[]).await;
    let mut parts = request(PODS, &[]);
    assert_eq!(
        authenticator.authenticate_parts(&parts).await.unwrap(),
        None
    );
    parts
        .extensions
        .insert(client_ca.client("olga", Some("ops"), Validity::Current));
    let user = authenticator.authenticate_parts(&parts).await.unwrap();
    assert_eq!(user.unwrap().name, "olga");
}
