//! The API discovery documents (`/apis`, `/apis/metrics.k8s.io`, `/apis/metrics.k8s.io/v1beta1`) and
//! `/version`, byte for byte in the shape a Kubernetes API server serves them.
//!
//! The discovery documents never change while the process runs, so they are constants.

/// `GET /apis`: the one group this server serves.
pub const API_GROUP_LIST: &str = concat!(
    r#"{"kind":"APIGroupList","apiVersion":"v1","groups":[{"name":"metrics.k8s.io","#,
    r#""versions":[{"groupVersion":"metrics.k8s.io/v1beta1","version":"v1beta1"}],"#,
    r#""preferredVersion":{"groupVersion":"metrics.k8s.io/v1beta1","version":"v1beta1"}}]}"#
);

/// `GET /apis/metrics.k8s.io`.
pub const API_GROUP: &str = concat!(
    r#"{"kind":"APIGroup","apiVersion":"v1","name":"metrics.k8s.io","#,
    r#""versions":[{"groupVersion":"metrics.k8s.io/v1beta1","version":"v1beta1"}],"#,
    r#""preferredVersion":{"groupVersion":"metrics.k8s.io/v1beta1","version":"v1beta1"}}"#
);

/// `GET /apis/metrics.k8s.io/v1beta1`: nodes are cluster-scoped `NodeMetrics`, pods namespaced
/// `PodMetrics`, both get/list, with the empty `singularName` upstream serves.
pub const API_RESOURCE_LIST: &str = concat!(
    r#"{"kind":"APIResourceList","apiVersion":"v1","groupVersion":"metrics.k8s.io/v1beta1","#,
    r#""resources":[{"name":"nodes","singularName":"","namespaced":false,"kind":"NodeMetrics","#,
    r#""verbs":["get","list"]},{"name":"pods","singularName":"","namespaced":true,"#,
    r#""kind":"PodMetrics","verbs":["get","list"]}]}"#
);

/// `GET /version`: the build, in the fields of Kubernetes' `version.Info`, indented as Kubernetes
/// servers indent it.
pub fn version() -> String {
    let info = serde_json::json!({
        "major": env!("CARGO_PKG_VERSION_MAJOR"),
        "minor": env!("CARGO_PKG_VERSION_MINOR"),
        "gitVersion": concat!("v", env!("CARGO_PKG_VERSION")),
        "gitCommit": "",
        "gitTreeState": "",
        "buildDate": "",
        "goVersion": "",
        "compiler": "rustc",
        "platform": format!("{}/{}", std::env::consts::OS, go_arch()),
    });
    // Serialising a `Value` built from strings cannot fail; fall back to compact just in case.
    serde_json::to_string_pretty(&info).unwrap_or_else(|_| info.to_string())
}

/// Architecture names as Go spells them, which is what `platform` carries.
fn go_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "powerpc64" => "ppc64le",
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn discovery_documents_are_valid_json_with_the_served_resources() {
        let list: serde_json::Value = serde_json::from_str(API_GROUP_LIST).unwrap();
        assert_eq!(list["groups"][0]["name"], "metrics.k8s.io");
        let group: serde_json::Value = serde_json::from_str(API_GROUP).unwrap();
        assert_eq!(
            group["preferredVersion"]["groupVersion"],
            "metrics.k8s.io/v1beta1"
        );
        let resources: serde_json::Value = serde_json::from_str(API_RESOURCE_LIST).unwrap();
        let resources = resources["resources"].as_array().unwrap();
        assert_eq!(resources.len(), 2);
        assert_eq!(resources[0]["kind"], "NodeMetrics");
        assert_eq!(resources[0]["namespaced"], false);
        assert_eq!(resources[1]["kind"], "PodMetrics");
        assert_eq!(resources[1]["namespaced"], true);
        assert_eq!(resources[1]["singularName"], "");
        assert_eq!(resources[1]["verbs"], serde_json::json!(["get", "list"]));
    }

    #[test]
    fn version_names_this_build() {
        let info: serde_json::Value = serde_json::from_str(&version()).unwrap();
        assert_eq!(
            info["gitVersion"],
            format!("v{}", env!("CARGO_PKG_VERSION"))
        );
        assert!(info["platform"].as_str().unwrap().contains('/'));
    }
}
