//! Delegated authorization against a fake API server on 127.0.0.1: `SubjectAccessReview` answers,
//! their caching and coalescing, and the privileged group.

mod auth_support;

use std::sync::atomic::Ordering;
use std::time::Duration;

use http::Method;
use metrics_server::api::authn::cache::CacheLimits;
use metrics_server::api::authn::AuthenticatedUser;
use metrics_server::api::authz::{
    AuthorizationConfig, AuthzError, Decision, DelegatedAuthorizer, RequestAttributes,
};

use auth_support::{eventually, FakeApi};

fn user(name: &str, groups: &[&str]) -> AuthenticatedUser {
    AuthenticatedUser {
        name: name.to_owned(),
        groups: groups.iter().map(|g| g.to_string()).collect(),
        ..AuthenticatedUser::default()
    }
}

fn pods_in(namespace: &str) -> RequestAttributes<'static> {
    RequestAttributes::from_request(
        &Method::GET,
        &format!("/apis/metrics.k8s.io/v1beta1/namespaces/{namespace}/pods"),
    )
    .into_owned()
}

#[tokio::test]
async fn an_allowed_review_allows_and_a_denied_one_explains_the_refusal() {
    let (api, client) = FakeApi::start().await;
    api.allow("alice");
    let authorizer = DelegatedAuthorizer::new(client, AuthorizationConfig::default());
    let attrs = pods_in("ns");
    let allowed = authorizer
        .authorize(&user("alice", &["devs"]), &attrs)
        .await
        .unwrap();
    assert_eq!(allowed, Decision::Allow);

    let denied = authorizer
        .authorize(&user("x", &["system:authenticated"]), &attrs)
        .await
        .unwrap();
    assert_eq!(
        denied,
        Decision::Deny {
            reason: "no RBAC policy matched".into(),
            message: "pods.metrics.k8s.io is forbidden: User \"x\" cannot list resource \
                      \"pods\" in API group \"metrics.k8s.io\" in the namespace \"ns\": \
                      no RBAC policy matched"
                .into(),
        }
    );

    let bodies = api.access_review_bodies.lock().unwrap().clone();
    assert_eq!(bodies.len(), 2);
    assert_eq!(bodies[0]["spec"]["user"], "alice");
    assert_eq!(bodies[0]["spec"]["groups"], serde_json::json!(["devs"]));
    assert_eq!(
        bodies[0]["spec"]["resourceAttributes"],
        serde_json::json!({"verb": "list", "group": "metrics.k8s.io", "version": "v1beta1",
            "resource": "pods", "namespace": "ns"})
    );
}

#[tokio::test]
async fn non_resource_paths_are_reviewed_by_path_and_verb() {
    let (api, client) = FakeApi::start().await;
    let authorizer = DelegatedAuthorizer::new(client, AuthorizationConfig::default());
    let attrs = RequestAttributes::from_request(&Method::GET, "/metrics");
    let decision = authorizer
        .authorize(
            &user("system:anonymous", &["system:unauthenticated"]),
            &attrs,
        )
        .await
        .unwrap();
    assert!(!decision.is_allowed());
    let bodies = api.access_review_bodies.lock().unwrap().clone();
    assert_eq!(
        bodies[0]["spec"]["nonResourceAttributes"],
        serde_json::json!({"path": "/metrics", "verb": "get"})
    );
}

#[tokio::test]
async fn system_masters_are_allowed_without_a_review() {
    let (api, client) = FakeApi::start().await;
    let authorizer = DelegatedAuthorizer::new(client, AuthorizationConfig::default());
    let decision = authorizer
        .authorize(&user("root", &["system:masters"]), &pods_in("any"))
        .await
        .unwrap();
    assert_eq!(decision, Decision::Allow);
    assert_eq!(api.access_reviews.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn allowed_and_denied_answers_are_cached_for_their_own_ttls() {
    let (api, client) = FakeApi::start().await;
    let authorizer = DelegatedAuthorizer::new(
        client,
        AuthorizationConfig {
            allowed_ttl: Duration::from_secs(1),
            denied_ttl: Duration::from_secs(60),
            cache: CacheLimits::default(),
        },
    );
    let attrs = pods_in("ns");
    let (bob, eve) = (user("bob", &[]), user("eve", &[]));
    api.allow("bob");
    assert!(authorizer
        .authorize(&bob, &attrs)
        .await
        .unwrap()
        .is_allowed());
    assert!(!authorizer
        .authorize(&eve, &attrs)
        .await
        .unwrap()
        .is_allowed());
    assert_eq!(api.access_reviews.load(Ordering::SeqCst), 2);

    // Policy changes: bob loses access, eve gains it. Cached answers hold until they expire.
    api.disallow("bob");
    api.allow("eve");
    assert!(authorizer
        .authorize(&bob, &attrs)
        .await
        .unwrap()
        .is_allowed());
    assert!(!authorizer
        .authorize(&eve, &attrs)
        .await
        .unwrap()
        .is_allowed());
    assert_eq!(api.access_reviews.load(Ordering::SeqCst), 2);

    eventually("bob's allowed answer expires", || async {
        !authorizer
            .authorize(&bob, &attrs)
            .await
            .unwrap()
            .is_allowed()
    })
    .await;
    // Eve's denial is still cached (60 s): the change has not reached her yet.
    assert!(!authorizer
        .authorize(&eve, &attrs)
        .await
        .unwrap()
        .is_allowed());
    assert_eq!(api.access_reviews.load(Ordering::SeqCst), 3);
    // A different request by eve is a different review.
    assert!(authorizer
        .authorize(&eve, &pods_in("other"))
        .await
        .unwrap()
        .is_allowed());
}

#[tokio::test]
async fn concurrent_identical_reviews_are_sent_once() {
    let (api, client) = FakeApi::start().await;
    api.allow("carol");
    let authorizer = DelegatedAuthorizer::new(client, AuthorizationConfig::default());
    let carol = user("carol", &["devs"]);
    let attrs = pods_in("ns");
    let all = futures::future::join_all((0..32).map(|_| authorizer.authorize(&carol, &attrs)));
    for decision in all.await {
        assert_eq!(decision.unwrap(), Decision::Allow);
    }
    assert_eq!(api.access_reviews.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn the_decision_cache_stays_within_its_bound() {
    let (_api, client) = FakeApi::start().await;
    let authorizer = DelegatedAuthorizer::new(
        client,
        AuthorizationConfig {
            cache: CacheLimits {
                capacity: 5,
                max_concurrent: 2,
            },
            ..AuthorizationConfig::default()
        },
    );
    for i in 0..20 {
        authorizer
            .authorize(&user(&format!("u{i}"), &[]), &pods_in("ns"))
            .await
            .unwrap();
        assert!(authorizer.cached() <= 5);
    }
    assert_eq!(authorizer.cached(), 5);
}

#[tokio::test]
async fn a_failed_review_is_an_error_and_is_not_cached() {
    let (api, client) = FakeApi::start().await;
    api.allow("dan");
    api.fail_access_reviews.store(true, Ordering::SeqCst);
    let authorizer = DelegatedAuthorizer::new(client, AuthorizationConfig::default());
    let dan = user("dan", &[]);
    let failed = authorizer.authorize(&dan, &pods_in("ns")).await;
    assert!(matches!(failed, Err(AuthzError::Review(_))), "{failed:?}");
    assert_eq!(authorizer.cached(), 0);
    api.fail_access_reviews.store(false, Ordering::SeqCst);
    let decision = authorizer.authorize(&dan, &pods_in("ns")).await.unwrap();
    assert_eq!(decision, Decision::Allow);
}

#[tokio::test]
async fn a_request_is_reviewed_with_the_attributes_its_method_path_and_query_give() {
    let (api, client) = FakeApi::start().await;
    let authorizer = DelegatedAuthorizer::new(client, AuthorizationConfig::default());
    let parts = auth_support::request(
        "/apis/metrics.k8s.io/v1beta1/namespaces/kube-system/pods?watch=true",
        &[],
    );
    let decision = authorizer
        .authorize_parts(&user("pat", &[]), &parts)
        .await
        .unwrap();
    let Decision::Deny { message, .. } = decision else {
        panic!("pat is not allowed: {decision:?}");
    };
    assert!(
        message.contains("cannot watch resource \"pods\""),
        "{message}"
    );
    let bodies = api.access_review_bodies.lock().unwrap().clone();
    assert_eq!(bodies[0]["spec"]["resourceAttributes"]["verb"], "watch");
    assert_eq!(
        bodies[0]["spec"]["resourceAttributes"]["namespace"],
        "kube-system"
    );
}
