//! The `kube-system/extension-apiserver-authentication` ConfigMap: where kube-apiserver publishes
//! the CAs and header names an aggregated API server must trust, read at start and then followed.
//!
//! List values (`requestheader-allowed-names`, the header names) are JSON arrays inside strings,
//! as kube-apiserver writes them.

use std::collections::BTreeMap;

use futures::StreamExt;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::Api;
use kube::runtime::{watcher, WatchStreamExt};

use super::x509::CaPool;
use super::{AuthnError, RequestHeaderAuth, Shared};

/// The ConfigMap's namespace.
pub const NAMESPACE: &str = "kube-system";
/// The ConfigMap's name.
pub const NAME: &str = "extension-apiserver-authentication";

/// What the ConfigMap says; `None` where it has no value.
#[derive(Clone, Debug, Default)]
pub struct PublishedAuthentication {
    pub client_ca: Option<CaPool>,
    pub request_header: Option<RequestHeaderAuth>,
}

/// Reads the authentication settings out of the ConfigMap's data.
pub fn parse(data: &BTreeMap<String, String>) -> Result<PublishedAuthentication, AuthnError> {
    let value = |key: &str| data.get(key).map(String::as_str).filter(|v| !v.is_empty());
    let client_ca = value("client-ca-file")
        .map(|pem| CaPool::from_pem("client-ca-file", pem.as_bytes()))
        .transpose()?;
    let request_header = match value("requestheader-client-ca-file") {
        None => None,
        Some(pem) => Some(RequestHeaderAuth::new(
            CaPool::from_pem("requestheader-client-ca-file", pem.as_bytes())?,
            strings(data, "requestheader-allowed-names")?,
            &strings(data, "requestheader-username-headers")?,
            &strings(data, "requestheader-group-headers")?,
            &strings(data, "requestheader-extra-headers-prefix")?,
        )),
    };
    Ok(PublishedAuthentication {
        client_ca,
        request_header,
    })
}

/// A JSON array of strings held in a string value; absent or empty means no strings.
fn strings(data: &BTreeMap<String, String>, key: &str) -> Result<Vec<String>, AuthnError> {
    match data.get(key).map(|v| v.trim()).filter(|v| !v.is_empty()) {
        None => Ok(Vec::new()),
        Some(json) => serde_json::from_str(json).map_err(|e| AuthnError::InvalidConfigMap {
            key: key.to_owned(),
            reason: e.to_string(),
        }),
    }
}

/// Reads the ConfigMap once; `Ok(None)` when it does not exist.
pub async fn lookup(client: kube::Client) -> Result<Option<ConfigMap>, AuthnError> {
    Api::<ConfigMap>::namespaced(client, NAMESPACE)
        .get_opt(NAME)
        .await
        .map_err(|e| AuthnError::Lookup(e.to_string()))
}

/// Follows the ConfigMap until the task is aborted, publishing each valid version into `shared`.
/// A version that does not parse is logged and the previous settings stay.
pub async fn follow(client: kube::Client, shared: std::sync::Arc<Shared>) {
    let api = Api::<ConfigMap>::namespaced(client, NAMESPACE);
    let config = watcher::Config::default().fields(&format!("metadata.name={NAME}"));
    let mut events = std::pin::pin!(watcher(api, config).default_backoff());
    // Whether the current (re)list has shown the ConfigMap; a list without it means it is gone.
    let mut listed = false;
    while let Some(event) = events.next().await {
        match event {
            Ok(watcher::Event::Init) => listed = false,
            Ok(watcher::Event::InitApply(configmap)) => {
                listed = true;
                apply(&shared, Some(&configmap));
            }
            Ok(watcher::Event::InitDone) => {
                if !listed {
                    apply(&shared, None);
                }
            }
            Ok(watcher::Event::Apply(configmap)) => apply(&shared, Some(&configmap)),
            Ok(watcher::Event::Delete(_)) => apply(&shared, None),
            Err(error) => tracing::warn!(
                namespace = NAMESPACE,
                name = NAME,
                error = %error,
                "Watching the authentication ConfigMap failed; retrying."
            ),
        }
    }
}

fn apply(shared: &Shared, configmap: Option<&ConfigMap>) {
    let empty = BTreeMap::new();
    let data = configmap.and_then(|c| c.data.as_ref()).unwrap_or(&empty);
    match parse(data) {
        Ok(published) => {
            tracing::info!(
                client_ca = published.client_ca.is_some(),
                request_header_ca = published.request_header.is_some(),
                "Authentication ConfigMap loaded."
            );
            shared.publish(published);
        }
        Err(error) => {
            tracing::error!(
                namespace = NAMESPACE,
                name = NAME,
                error = %error,
                "Authentication ConfigMap is invalid; keeping the previous settings."
            );
            shared.reject_update();
        }
    }
}
