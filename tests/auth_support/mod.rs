//! A fake API server on 127.0.0.1 (plain HTTP/1.1) answering `TokenReview`,
//! `SubjectAccessReview` and the `extension-apiserver-authentication` ConfigMap (get, list,
//! watch), counting what it is asked; and test certificates made with rcgen.

#![allow(dead_code)]

use std::collections::{HashMap, HashSet};
use std::convert::Infallible;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{combinators::BoxBody, BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, IsCa, KeyPair,
};
use rustls::pki_types::CertificateDer;
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::sync::broadcast;

use metrics_server::api::authn::PeerCertificates;

type Body = BoxBody<Bytes, Infallible>;

/// What the fake API server knows and has seen.
#[derive(Default)]
pub struct FakeApi {
    /// token -> user info (`username`, `groups`, ...).
    pub tokens: Mutex<HashMap<String, Value>>,
    pub token_reviews: AtomicUsize,
    pub fail_token_reviews: AtomicBool,
    /// Users whose access reviews are allowed.
    pub allowed_users: Mutex<HashSet<String>>,
    pub access_reviews: AtomicUsize,
    pub fail_access_reviews: AtomicBool,
    /// Every access review body received.
    pub access_review_bodies: Mutex<Vec<Value>>,
    /// The ConfigMap's `data`, `None` when it does not exist.
    pub configmap: Mutex<Option<Value>>,
    pub configmap_reads: AtomicUsize,
    pub forbid_configmap: AtomicBool,
    pub watches_open: AtomicUsize,
    resource_version: AtomicUsize,
    events: Mutex<Option<broadcast::Sender<Bytes>>>,
}

impl FakeApi {
    /// Starts serving on an ephemeral loopback port; returns the server and a client for it.
    pub async fn start() -> (Arc<FakeApi>, kube::Client) {
        let api = Arc::new(FakeApi::default());
        let (sender, _) = broadcast::channel(64);
        *api.events.lock().unwrap() = Some(sender);
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let serving = Arc::clone(&api);
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let api = Arc::clone(&serving);
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |request| {
                        let api = Arc::clone(&api);
                        async move { Ok::<_, Infallible>(api.handle(request).await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        let url = format!("http://127.0.0.1:{port}").parse().unwrap();
        let client = kube::Client::try_from(kube::Config::new(url)).unwrap();
        (api, client)
    }

    pub fn add_token(&self, token: &str, user: &str, groups: &[&str]) {
        self.tokens.lock().unwrap().insert(
            token.to_owned(),
            json!({"username": user, "uid": format!("uid-{user}"), "groups": groups}),
        );
    }

    pub fn revoke_token(&self, token: &str) {
        self.tokens.lock().unwrap().remove(token);
    }

    pub fn allow(&self, user: &str) {
        self.allowed_users.lock().unwrap().insert(user.to_owned());
    }

    pub fn disallow(&self, user: &str) {
        self.allowed_users.lock().unwrap().remove(user);
    }

    /// Sets the ConfigMap's data and tells open watches (`MODIFIED`, or `ADDED` if it was absent).
    pub fn set_configmap(&self, data: Value) {
        let existed = self.configmap.lock().unwrap().replace(data).is_some();
        self.resource_version.fetch_add(1, Ordering::SeqCst);
        let kind = if existed { "MODIFIED" } else { "ADDED" };
        self.broadcast(kind);
    }

    /// Deletes the ConfigMap and tells open watches.
    pub fn delete_configmap(&self) {
        self.resource_version.fetch_add(1, Ordering::SeqCst);
        let object = self.configmap_object();
        *self.configmap.lock().unwrap() = None;
        if let Some(object) = object {
            self.send(json!({"type": "DELETED", "object": object}));
        }
    }

    fn broadcast(&self, kind: &str) {
        if let Some(object) = self.configmap_object() {
            self.send(json!({"type": kind, "object": object}));
        }
    }

    fn send(&self, event: Value) {
        let mut line = serde_json::to_vec(&event).unwrap();
        line.push(b'\n');
        if let Some(sender) = self.events.lock().unwrap().as_ref() {
            let _ = sender.send(Bytes::from(line));
        }
    }

    fn configmap_object(&self) -> Option<Value> {
        let data = self.configmap.lock().unwrap().clone()?;
        Some(json!({
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {
                "name": "extension-apiserver-authentication",
                "namespace": "kube-system",
                "resourceVersion": self.resource_version.load(Ordering::SeqCst).to_string(),
            },
            "data": data,
        }))
    }

    async fn handle(self: Arc<Self>, request: Request<Incoming>) -> Response<Body> {
        let method = request.method().clone();
        let path = request.uri().path().to_owned();
        let query = request.uri().query().unwrap_or("").to_owned();
        let body = request.into_body().collect().await.unwrap().to_bytes();
        let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        match (method.as_str(), path.as_str()) {
            ("POST", "/apis/authentication.k8s.io/v1/tokenreviews") => self.token_review(body),
            ("POST", "/apis/authorization.k8s.io/v1/subjectaccessreviews") => {
                self.access_review(body)
            }
            (
                "GET",
                "/api/v1/namespaces/kube-system/configmaps/extension-apiserver-authentication",
            ) => {
                self.configmap_reads.fetch_add(1, Ordering::SeqCst);
                if self.forbid_configmap.load(Ordering::SeqCst) {
                    return status(403, "Forbidden");
                }
                match self.configmap_object() {
                    Some(object) => respond(200, &object),
                    None => status(404, "NotFound"),
                }
            }
            ("GET", "/api/v1/namespaces/kube-system/configmaps")
                if query.contains("watch=true") =>
            {
                self.watch()
            }
            ("GET", "/api/v1/namespaces/kube-system/configmaps") => {
                self.configmap_reads.fetch_add(1, Ordering::SeqCst);
                if self.forbid_configmap.load(Ordering::SeqCst) {
                    return status(403, "Forbidden");
                }
                let items: Vec<Value> = self.configmap_object().into_iter().collect();
                respond(
                    200,
                    &json!({
                        "apiVersion": "v1",
                        "kind": "ConfigMapList",
                        "metadata": {
                            "resourceVersion":
                                self.resource_version.load(Ordering::SeqCst).to_string()
                        },
                        "items": items,
                    }),
                )
            }
            _ => status(404, "NotFound"),
        }
    }

    fn token_review(&self, body: Value) -> Response<Body> {
        self.token_reviews.fetch_add(1, Ordering::SeqCst);
        if self.fail_token_reviews.load(Ordering::SeqCst) {
            return status(500, "InternalError");
        }
        let token = body["spec"]["token"].as_str().unwrap_or("");
        let user = self.tokens.lock().unwrap().get(token).cloned();
        let status = match user {
            Some(user) => json!({"authenticated": true, "user": user}),
            None => json!({"authenticated": false, "error": "token not recognised"}),
        };
        respond(
            201,
            &json!({
                "apiVersion": "authentication.k8s.io/v1",
                "kind": "TokenReview",
                "spec": {},
                "status": status,
            }),
        )
    }

    fn access_review(&self, body: Value) -> Response<Body> {
        self.access_reviews.fetch_add(1, Ordering::SeqCst);
        if self.fail_access_reviews.load(Ordering::SeqCst) {
            return status(500, "InternalError");
        }
        let user = body["spec"]["user"].as_str().unwrap_or("").to_owned();
        self.access_review_bodies.lock().unwrap().push(body.clone());
        let allowed = self.allowed_users.lock().unwrap().contains(&user);
        let status = if allowed {
            json!({"allowed": true, "reason": "RBAC: allowed"})
        } else {
            json!({"allowed": false, "reason": "no RBAC policy matched"})
        };
        respond(
            201,
            &json!({
                "apiVersion": "authorization.k8s.io/v1",
                "kind": "SubjectAccessReview",
                "spec": body["spec"],
                "status": status,
            }),
        )
    }

    fn watch(self: Arc<Self>) -> Response<Body> {
        let receiver = self
            .events
            .lock()
            .unwrap()
            .as_ref()
            .map(|s| s.subscribe())
            .unwrap();
        self.watches_open.fetch_add(1, Ordering::SeqCst);
        let stream = futures::stream::unfold(receiver, |mut receiver| async move {
            loop {
                match receiver.recv().await {
                    Ok(line) => return Some((Ok(Frame::data(line)), receiver)),
                    Err(broadcast::error::RecvError::Lagged(_)) => continue,
                    Err(broadcast::error::RecvError::Closed) => return None,
                }
            }
        });
        Response::builder()
            .status(200)
            .header("content-type", "application/json")
            .body(StreamBody::new(stream).boxed())
            .unwrap()
    }
}

fn respond(code: u16, value: &Value) -> Response<Body> {
    Response::builder()
        .status(code)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(serde_json::to_vec(value).unwrap())).boxed())
        .unwrap()
}

fn status(code: u16, reason: &str) -> Response<Body> {
    respond(
        code,
        &json!({
            "apiVersion": "v1", "kind": "Status", "metadata": {}, "status": "Failure",
            "message": reason, "reason": reason, "code": code,
        }),
    )
}

/// Polls `condition` every 10 ms until it holds; panics after 10 s.
pub async fn eventually<F, Fut>(what: &str, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !condition().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting until {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

// === certificates ===

/// A test CA.
pub struct Ca {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

/// Validity of a client certificate.
#[derive(Clone, Copy)]
pub enum Validity {
    Current,
    Expired,
}

impl Ca {
    pub fn new(name: &str) -> Ca {
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        Ca {
            issuer: CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap(),
        }
    }

    /// An intermediate CA signed by this one.
    pub fn intermediate(&self, name: &str) -> (Ca, CertificateDer<'static>) {
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let issuer =
            CertifiedIssuer::signed_by(params, KeyPair::generate().unwrap(), &self.issuer).unwrap();
        let der = issuer.der().clone();
        (Ca { issuer }, der)
    }

    pub fn pem(&self) -> String {
        self.issuer.pem()
    }

    /// A client certificate for `cn` with its key, as a TLS client presents them.
    pub fn client_identity(
        &self,
        cn: &str,
    ) -> (
        Vec<CertificateDer<'static>>,
        rustls::pki_types::PrivateKeyDer<'static>,
    ) {
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        params.distinguished_name.push(DnType::CommonName, cn);
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        let key = rustls::pki_types::PrivatePkcs8KeyDer::from(key.serialize_der());
        (vec![cert.der().clone()], key.into())
    }

    /// A serving certificate for `name` with its key.
    pub fn serving_identity(
        &self,
        name: &str,
    ) -> (
        Vec<CertificateDer<'static>>,
        rustls::pki_types::PrivateKeyDer<'static>,
    ) {
        let params = CertificateParams::new(vec![name.to_owned()]).unwrap();
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        let key = rustls::pki_types::PrivatePkcs8KeyDer::from(key.serialize_der());
        (vec![cert.der().clone()], key.into())
    }

    /// The CA's own certificate.
    pub fn der(&self) -> CertificateDer<'static> {
        self.issuer.der().clone()
    }

    /// A client certificate with this CN and organization (if any).
    pub fn client(&self, cn: &str, org: Option<&str>, validity: Validity) -> PeerCertificates {
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        params.distinguished_name.push(DnType::CommonName, cn);
        if let Some(org) = org {
            params
                .distinguished_name
                .push(DnType::OrganizationName, org);
        }
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        if let Validity::Expired = validity {
            params.not_before = rcgen::date_time_ymd(2000, 1, 1);
            params.not_after = rcgen::date_time_ymd(2001, 1, 1);
        }
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        PeerCertificates(vec![cert.der().clone()].into())
    }
}

/// The ConfigMap data kube-apiserver publishes, with the list values as JSON strings.
pub fn configmap_data(
    client_ca: Option<&Ca>,
    request_header_ca: Option<&Ca>,
    allowed: &[&str],
) -> Value {
    let mut data = serde_json::Map::new();
    if let Some(ca) = client_ca {
        data.insert("client-ca-file".into(), ca.pem().into());
    }
    if let Some(ca) = request_header_ca {
        data.insert("requestheader-client-ca-file".into(), ca.pem().into());
        data.insert(
            "requestheader-allowed-names".into(),
            serde_json::to_string(allowed).unwrap().into(),
        );
        data.insert(
            "requestheader-username-headers".into(),
            r#"["X-Remote-User"]"#.into(),
        );
        data.insert(
            "requestheader-group-headers".into(),
            r#"["X-Remote-Group"]"#.into(),
        );
        data.insert(
            "requestheader-extra-headers-prefix".into(),
            r#"["X-Remote-Extra-"]"#.into(),
        );
    }
    Value::Object(data)
}

/// Request parts for `GET path` with these headers.
pub fn request(path: &str, headers: &[(&str, &str)]) -> http::request::Parts {
    let mut builder = http::Request::get(path);
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    builder.body(()).unwrap().into_parts().0
}
