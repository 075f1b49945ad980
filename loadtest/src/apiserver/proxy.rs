//! Aggregation: forwards `/apis/metrics.k8s.io/...` to the backend as kube-aggregator does.
//!
//! The caller has been authenticated already; the backend receives the front-proxy client
//! certificate and the caller's identity in `X-Remote-User` / `X-Remote-Group`, never the caller's
//! own credentials. Authorization is the backend's business (it asks `SubjectAccessReview`).

use http::header::{HeaderName, HeaderValue, AUTHORIZATION, CONTENT_TYPE, HOST};
use http::{Request, Response, StatusCode, Uri};
use hyper::body::Incoming;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tracing::{debug, warn};

use super::auth::UserInfo;
use super::body::Body;
use super::routes::status_response;
use super::tls::{self, Pki, TlsError};

/// Headers a proxy must not forward (hop-by-hop) or must not let a caller forge.
fn is_stripped(name: &HeaderName) -> bool {
    let name = name.as_str();
    matches!(
        name,
        "connection"
            | "keep-alive"
            | "proxy-connection"
            | "proxy-authenticate"
            | "proxy-authorization"
            | "te"
            | "trailer"
            | "transfer-encoding"
            | "upgrade"
            | "host"
            | "authorization"
    ) || name.starts_with("x-remote-")
        || name.starts_with("impersonate-")
}

/// A pooled HTTPS client to the backend.
pub(crate) struct BackendClient {
    client: Client<HttpsConnector<HttpConnector>, Incoming>,
}

impl BackendClient {
    pub(crate) fn new(pki: &Pki, backend_ca_pem: Option<&str>) -> Result<Self, TlsError> {
        let config = tls::backend_client_config(pki, backend_ca_pem)?;
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(config)
            .https_only()
            .enable_http1()
            .enable_http2()
            .build();
        Ok(BackendClient {
            client: Client::builder(TokioExecutor::new()).build(connector),
        })
    }
}

/// Forwards `req` for `user` to `backend` (a base URL); 503 when there is no backend or it
/// cannot be reached.
pub(crate) async fn forward(
    client: &BackendClient,
    backend: Option<String>,
    user: &UserInfo,
    req: Request<Incoming>,
) -> Response<Body> {
    let Some(base) = backend else {
        return status_response(
            StatusCode::SERVICE_UNAVAILABLE,
            "ServiceUnavailable",
            "the server is currently unable to handle the request",
        );
    };
    let path_and_query = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/");
    let uri: Uri = match format!("{base}{path_and_query}").parse() {
        Ok(uri) => uri,
        Err(error) => {
            warn!(%base, %error, "The aggregated backend URL is not valid.");
            return status_response(
                StatusCode::SERVICE_UNAVAILABLE,
                "ServiceUnavailable",
                "the aggregated API backend address is not valid",
            );
        }
    };
    let (parts, body) = req.into_parts();
    let mut upstream = Request::builder().method(parts.method).uri(uri);
    for (name, value) in parts.headers.iter() {
        if !is_stripped(name) && name != HOST && name != AUTHORIZATION {
            upstream = upstream.header(name, value);
        }
    }
    if let Ok(value) = HeaderValue::from_str(&user.name) {
        upstream = upstream.header("x-remote-user", value);
    }
    for group in &user.groups {
        if let Ok(value) = HeaderValue::from_str(group) {
            upstream = upstream.header("x-remote-group", value);
        }
    }
    if !user.uid.is_empty() {
        if let Ok(value) = HeaderValue::from_str(&user.uid) {
            upstream = upstream.header("x-remote-uid", value);
        }
    }
    let upstream = match upstream.body(body) {
        Ok(r) => r,
        Err(error) => {
            warn!(%error, "Building the proxied request failed.");
            return status_response(
                StatusCode::INTERNAL_SERVER_ERROR,
                "InternalError",
                "building the proxied request failed",
            );
        }
    };
    match client.client.request(upstream).await {
        Ok(response) => {
            let (parts, body) = response.into_parts();
            let mut out = Response::builder().status(parts.status);
            for (name, value) in parts.headers.iter() {
                if !is_stripped(name) {
                    out = out.header(name, value);
                }
            }
            if !parts.headers.contains_key(CONTENT_TYPE) {
                out = out.header(CONTENT_TYPE, "application/json");
            }
            out.body(Body::Upstream(body)).unwrap_or_else(|error| {
                warn!(%error, "Relaying the backend response failed.");
                status_response(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "InternalError",
                    "relaying the backend response failed",
                )
            })
        }
        Err(error) => {
            debug!(%base, %error, "The aggregated backend is unreachable.");
            status_response(
                StatusCode::SERVICE_UNAVAILABLE,
                "ServiceUnavailable",
                &format!("error trying to reach service: {error}"),
            )
        }
    }
}
