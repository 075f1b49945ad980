//! The whole client-certificate path over real TLS on 127.0.0.1: the listener accepts any chain
//! with [`AcceptAnyClientCert`], puts it in the request's extensions as [`PeerCertificates`], and
//! the authenticator decides per request against the ConfigMap's CAs.

mod auth_support;

use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Full};
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::{TlsAcceptor, TlsConnector};

use metrics_server::api::authn::tls::AcceptAnyClientCert;
use metrics_server::api::authn::{
    self, AuthenticationConfig, DelegatedAuthenticator, PeerCertificates,
};

use auth_support::{configmap_data, Ca, FakeApi};

/// A client identity: certificate chain and key.
struct Identity {
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
}

fn identity(ca: &Ca, cn: &str) -> Identity {
    let (chain, key) = ca.client_identity(cn);
    Identity { chain, key }
}

/// Serves `GET` with TLS, answering `200 <user>`, `200 anonymous` or `401`.
async fn serve(authenticator: DelegatedAuthenticator) -> (u16, CertificateDer<'static>) {
    let serving_ca = Ca::new("serving-ca");
    let (chain, key) = serving_ca.serving_identity("localhost");
    let config =
        ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_client_cert_verifier(AcceptAnyClientCert::shared())
            .with_single_cert(chain, key)
            .unwrap();
    let acceptor = TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            let authenticator = authenticator.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(stream).await else {
                    return;
                };
                let peer = tls.get_ref().1.peer_certificates().map(|chain| {
                    PeerCertificates(chain.iter().map(|c| c.clone().into_owned()).collect())
                });
                let service = hyper::service::service_fn(move |request: Request<_>| {
                    let authenticator = authenticator.clone();
                    let peer = peer.clone();
                    async move {
                        let (mut parts, _) = request.into_parts();
                        if let Some(peer) = peer {
                            parts.extensions.insert(peer);
                        }
                        let (status, body) = match authenticator.authenticate_parts(&parts).await {
                            Ok(Some(user)) => (200, user.name.clone()),
                            Ok(None) => (200, "anonymous".to_owned()),
                            Err(_) => (401, "Unauthorized".to_owned()),
                        };
                        Ok::<_, std::convert::Infallible>(
                            Response::builder()
                                .status(status)
                                .body(Full::new(Bytes::from(body)))
                                .unwrap(),
                        )
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tls), service)
                    .await;
            });
        }
    });
    (port, serving_ca.der())
}

/// One `GET` over a new TLS connection; the status and body.
async fn get(
    port: u16,
    server_ca: &CertificateDer<'static>,
    client: Option<Identity>,
) -> (u16, String) {
    let mut roots = RootCertStore::empty();
    roots.add(server_ca.clone()).unwrap();
    let builder =
        ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots);
    let config = match client {
        Some(identity) => builder
            .with_client_auth_cert(identity.chain, identity.key)
            .unwrap(),
        None => builder.with_no_client_auth(),
    };
    let stream = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let tls = TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from("localhost").unwrap(), stream)
        .await
        .unwrap();
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .unwrap();
    tokio::spawn(connection);
    let response = sender
        .send_request(
            Request::get("/apis/metrics.k8s.io/v1beta1/nodes")
                .header("host", "localhost")
                .body(Empty::<Bytes>::new())
                .unwrap(),
        )
        .await
        .unwrap();
    let status = response.status().as_u16();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8(body.to_vec()).unwrap())
}

#[tokio::test]
async fn client_certificates_are_judged_per_request_over_real_tls() {
    let client_ca = Ca::new("client-ca");
    let (api, client) = FakeApi::start().await;
    api.set_configmap(configmap_data(Some(&client_ca), None, &[]));
    let authenticator = authn::start(client, AuthenticationConfig::default())
        .await
        .unwrap();
    let (port, server_ca) = serve(authenticator).await;

    let known = identity(&client_ca, "quinn");
    assert_eq!(
        get(port, &server_ca, Some(known)).await,
        (200, "quinn".to_owned())
    );

    // The handshake accepts an unknown CA's certificate; the request is then refused.
    let stranger = identity(&Ca::new("client-ca"), "quinn");
    assert_eq!(
        get(port, &server_ca, Some(stranger)).await,
        (401, "Unauthorized".to_owned())
    );

    assert_eq!(
        get(port, &server_ca, None).await,
        (200, "anonymous".to_owned())
    );
}
