//! The deployment artefacts under `deploy/` render to what an admin of upstream metrics-server
//! expects: the same objects, names, flags, probes and hardening.
//!
//! The kustomize layouts are rendered with `kubectl kustomize` (offline; `$KUBECTL` names the
//! binary, else `kubectl` from `PATH`). Where no kubectl runs, those tests say so and pass: the
//! manifests are data, and a machine without kubectl cannot render them. Each rendered object is
//! also read into its Kubernetes 1.33 type and written back: a field the API does not know is
//! dropped by that trip and reported, which catches what `kubectl apply` would reject (client-side
//! validation needs a live API server; this does not). The Helm chart is checked
//! without Helm: every `.Values` path its templates read must be declared in `values.yaml`, so a
//! renamed or misspelt value cannot silently render as empty.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn kubectl() -> String {
    std::env::var("KUBECTL").unwrap_or_else(|_| "kubectl".to_string())
}

/// `kubectl kustomize <dir>`, or `None` when no kubectl can be run here.
fn kustomize(dir: &str) -> Option<String> {
    let output = match Command::new(kubectl())
        .arg("kustomize")
        .arg(repo_root().join(dir))
        .output()
    {
        Ok(output) => output,
        Err(error) => {
            eprintln!("Skipping: `{} kustomize` cannot run ({error}).", kubectl());
            return None;
        }
    };
    assert!(
        output.status.success(),
        "kubectl kustomize {dir} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    Some(String::from_utf8(output.stdout).expect("kustomize prints UTF-8"))
}

/// One rendered object: its kind, name and its text (kubectl prints keys sorted, two-space
/// indented, so a top-level key is a line without indentation).
struct Object {
    api_version: String,
    kind: String,
    name: String,
    text: String,
}

fn objects(rendered: &str) -> Vec<Object> {
    rendered
        .split("\n---\n")
        .filter(|doc| !doc.trim().is_empty())
        .map(|doc| {
            let top = |key: &str| {
                doc.lines()
                    .find_map(|line| line.strip_prefix(key))
                    .map(str::trim)
                    .unwrap_or_default()
                    .to_string()
            };
            // metadata.name is the first two-space-indented `name:` after `metadata:`.
            let name = doc
                .split("\nmetadata:\n")
                .nth(1)
                .and_then(|meta| {
                    meta.lines()
                        .take_while(|line| line.starts_with("  "))
                        .find_map(|line| line.strip_prefix("  name: "))
                })
                .unwrap_or_default()
                .trim()
                .to_string();
            Object {
                api_version: top("apiVersion: "),
                kind: top("kind: "),
                name,
                text: doc.to_string(),
            }
        })
        .collect()
}

fn find<'a>(objects: &'a [Object], kind: &str, name: &str) -> &'a Object {
    objects
        .iter()
        .find(|object| object.kind == kind && object.name == name)
        .unwrap_or_else(|| panic!("no {kind}/{name} in the rendered manifests"))
}

fn kinds_and_names(objects: &[Object]) -> BTreeSet<(String, String)> {
    objects
        .iter()
        .map(|object| (object.kind.clone(), object.name.clone()))
        .collect()
}

fn assert_contains_all(object: &Object, needles: &[&str]) {
    for needle in needles {
        assert!(
            object.text.contains(needle),
            "{}/{} lacks `{needle}`:\n{}",
            object.kind,
            object.name,
            object.text
        );
    }
}

const BASE_OBJECTS: &[(&str, &str)] = &[
    ("ServiceAccount", "metrics-server"),
    ("ClusterRole", "system:aggregated-metrics-reader"),
    ("ClusterRole", "system:metrics-server"),
    ("RoleBinding", "metrics-server-auth-reader"),
    ("ClusterRoleBinding", "metrics-server:system:auth-delegator"),
    ("ClusterRoleBinding", "system:metrics-server"),
    ("Service", "metrics-server"),
    ("Deployment", "metrics-server"),
    ("APIService", "v1beta1.metrics.k8s.io"),
];

fn expected(extra: &[(&str, &str)]) -> BTreeSet<(String, String)> {
    BASE_OBJECTS
        .iter()
        .chain(extra)
        .map(|(kind, name)| (kind.to_string(), name.to_string()))
        .collect()
}

#[test]
fn default_install_renders_the_upstream_set_of_objects() {
    let Some(rendered) = kustomize("deploy") else {
        return;
    };
    let objects = objects(&rendered);
    assert_eq!(kinds_and_names(&objects), expected(&[]));
    for object in &objects {
        assert!(
            object.text.contains("k8s-app: metrics-server"),
            "{}/{} is not labelled k8s-app: metrics-server",
            object.kind,
            object.name
        );
    }
}

#[test]
fn deployment_runs_hardened_with_upstream_flags_and_probes() {
    let Some(rendered) = kustomize("deploy") else {
        return;
    };
    let objects = objects(&rendered);
    let deployment = find(&objects, "Deployment", "metrics-server");
    assert_contains_all(
        deployment,
        &[
            "namespace: kube-system",
            "replicas: 1",
            "maxUnavailable: 0",
            "priorityClassName: system-cluster-critical",
            "serviceAccountName: metrics-server",
            "- --cert-dir=/tmp",
            "- --secure-port=10250",
            "- --kubelet-preferred-address-types=InternalIP,ExternalIP,Hostname",
            "- --kubelet-use-node-status-port",
            "- --metric-resolution=15s",
            "containerPort: 10250",
            "name: https",
            "path: /livez",
            "path: /readyz",
            "scheme: HTTPS",
            "readOnlyRootFilesystem: true",
            "runAsNonRoot: true",
            "runAsUser: 1000",
            "allowPrivilegeEscalation: false",
            "- ALL",
            "type: RuntimeDefault",
            "mountPath: /tmp",
            "emptyDir: {}",
            "kubernetes.io/os: linux",
            "memory: ",
            "cpu: ",
        ],
    );
    let image = format!("image: metrics-server:{}", env!("CARGO_PKG_VERSION"));
    assert!(
        deployment.text.contains(&image),
        "the default install should run the release being built (`{image}`)"
    );
    assert!(
        !deployment.text.contains("limits:"),
        "a CPU limit throttles scrapes into probe failures; the base sets none"
    );
}

#[test]
fn api_service_and_service_route_metrics_k8s_io_to_the_https_port() {
    let Some(rendered) = kustomize("deploy") else {
        return;
    };
    let objects = objects(&rendered);
    assert_contains_all(
        find(&objects, "APIService", "v1beta1.metrics.k8s.io"),
        &[
            "group: metrics.k8s.io",
            "version: v1beta1",
            "groupPriorityMinimum: 100",
            "versionPriority: 100",
            "insecureSkipTLSVerify: true",
            "name: metrics-server",
            "namespace: kube-system",
        ],
    );
    assert_contains_all(
        find(&objects, "Service", "metrics-server"),
        &["port: 443", "targetPort: https", "k8s-app: metrics-server"],
    );
    assert_contains_all(
        find(&objects, "ClusterRole", "system:aggregated-metrics-reader"),
        &[
            "rbac.authorization.k8s.io/aggregate-to-view: \"true\"",
            "rbac.authorization.k8s.io/aggregate-to-edit: \"true\"",
            "rbac.authorization.k8s.io/aggregate-to-admin: \"true\"",
            "- metrics.k8s.io",
        ],
    );
    assert_contains_all(
        find(&objects, "ClusterRole", "system:metrics-server"),
        &["- nodes/metrics", "- pods", "- nodes", "- watch"],
    );
    assert_contains_all(
        find(&objects, "RoleBinding", "metrics-server-auth-reader"),
        &[
            "name: extension-apiserver-authentication-reader",
            "kind: Role",
        ],
    );
    assert_contains_all(
        find(
            &objects,
            "ClusterRoleBinding",
            "metrics-server:system:auth-delegator",
        ),
        &["name: system:auth-delegator"],
    );
}

#[test]
fn high_availability_spreads_two_replicas_and_budgets_one() {
    let Some(rendered) = kustomize("deploy/high-availability") else {
        return;
    };
    let objects = objects(&rendered);
    assert_eq!(
        kinds_and_names(&objects),
        expected(&[("PodDisruptionBudget", "metrics-server")])
    );
    assert_contains_all(
        find(&objects, "Deployment", "metrics-server"),
        &[
            "replicas: 2",
            "requiredDuringSchedulingIgnoredDuringExecution",
            "topologyKey: kubernetes.io/hostname",
            // The patch must not drop what the base set.
            "- --metric-resolution=15s",
            "readOnlyRootFilesystem: true",
        ],
    );
    let budget = find(&objects, "PodDisruptionBudget", "metrics-server");
    assert_eq!(budget.api_version, "policy/v1");
    assert_contains_all(budget, &["minAvailable: 1", "k8s-app: metrics-server"]);
}

#[test]
fn high_availability_for_1_20_serves_the_budget_as_v1beta1() {
    let Some(rendered) = kustomize("deploy/high-availability-1.20") else {
        return;
    };
    let objects = objects(&rendered);
    assert_eq!(
        find(&objects, "PodDisruptionBudget", "metrics-server").api_version,
        "policy/v1beta1"
    );
    assert!(find(&objects, "Deployment", "metrics-server")
        .text
        .contains("replicas: 2"));
}

/// Dotted key paths declared in a values file, from its indentation (the chart's values.yaml
/// nests maps only; list items are leaves).
fn declared_value_paths(values: &str) -> BTreeSet<String> {
    let mut stack: Vec<(usize, String)> = Vec::new();
    let mut paths = BTreeSet::new();
    for line in values.lines() {
        let trimmed = line.trim_start();
        if trimmed.is_empty() || trimmed.starts_with('#') || trimmed.starts_with('-') {
            continue;
        }
        let indent = line.len() - trimmed.len();
        let Some((key, _)) = trimmed.split_once(':') else {
            continue;
        };
        if !key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        {
            continue;
        }
        while stack.last().is_some_and(|(depth, _)| *depth >= indent) {
            stack.pop();
        }
        stack.push((indent, key.to_string()));
        let path: Vec<&str> = stack.iter().map(|(_, key)| key.as_str()).collect();
        paths.insert(path.join("."));
    }
    paths
}

/// Every `.Values.a.b` a template reads.
fn referenced_value_paths(template: &str) -> BTreeSet<String> {
    let mut paths = BTreeSet::new();
    for (start, _) in template.match_indices(".Values.") {
        let rest = &template[start + ".Values.".len()..];
        let end = rest
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '.' || c == '_'))
            .unwrap_or(rest.len());
        let path = rest[..end].trim_end_matches('.');
        if !path.is_empty() {
            paths.insert(path.to_string());
        }
    }
    paths
}

fn chart_dir() -> PathBuf {
    repo_root().join("deploy/helm/metrics-server")
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

#[test]
fn every_value_a_chart_template_reads_is_declared_in_values_yaml() {
    let declared = declared_value_paths(&read(&chart_dir().join("values.yaml")));
    let mut undeclared = Vec::new();
    let templates = std::fs::read_dir(chart_dir().join("templates")).expect("templates dir");
    let mut read_any = 0;
    for entry in templates {
        let path = entry.expect("template entry").path();
        read_any += 1;
        for used in referenced_value_paths(&read(&path)) {
            if !declared.contains(&used) {
                undeclared.push(format!("{}: .Values.{used}", path.display()));
            }
        }
    }
    assert!(read_any >= 8, "the chart's templates were not found");
    assert!(undeclared.is_empty(), "undeclared values: {undeclared:#?}");
}

#[test]
fn value_path_scanner_sees_nesting_and_misses() {
    let declared = declared_value_paths(
        "image:\n  repository: x\n  tag: \"\"\n# note: y\nargs: []\ntls:\n  helm:\n    lookup: true\n  type: a\n",
    );
    for path in [
        "image.repository",
        "image.tag",
        "args",
        "tls.helm.lookup",
        "tls.type",
    ] {
        assert!(declared.contains(path), "{path} missing from {declared:?}");
    }
    assert!(!declared.contains("note"));
    assert!(!declared.contains("tls.helm.type"));
    let used = referenced_value_paths("{{ .Values.image.tag }} {{- with .Values.tls.helm }}");
    assert_eq!(
        used,
        BTreeSet::from(["image.tag".to_string(), "tls.helm".to_string()])
    );
}

#[test]
fn chart_image_tag_defaults_to_the_app_version_of_the_crate() {
    let chart = read(&chart_dir().join("Chart.yaml"));
    let app_version = format!("appVersion: \"{}\"", env!("CARGO_PKG_VERSION"));
    assert!(
        chart.contains(&app_version),
        "Chart.yaml should carry `{app_version}`"
    );
}

/// Every field of `original` that survives a trip through `T` (the Kubernetes 1.33 type); a
/// field the type does not know is dropped by the trip and named here, so a misspelt or
/// misplaced key cannot hide in a manifest.
fn fields_unknown_to<T>(original: &serde_json::Value) -> Vec<String>
where
    T: serde::de::DeserializeOwned + serde::Serialize,
{
    let typed: T = match serde_json::from_value(original.clone()) {
        Ok(typed) => typed,
        Err(error) => return vec![format!("does not parse: {error}")],
    };
    let back = serde_json::to_value(&typed).expect("a parsed object serialises");
    let mut unknown = Vec::new();
    collect_dropped(original, &back, String::new(), &mut unknown);
    unknown
}

fn collect_dropped(
    original: &serde_json::Value,
    back: &serde_json::Value,
    path: String,
    out: &mut Vec<String>,
) {
    use serde_json::Value;
    match (original, back) {
        (Value::Object(original), Value::Object(back)) => {
            for (key, value) in original {
                let path = format!("{path}.{key}");
                match back.get(key) {
                    Some(returned) => collect_dropped(value, returned, path, out),
                    None => out.push(path),
                }
            }
        }
        (Value::Array(original), Value::Array(back)) => {
            for (index, (value, returned)) in original.iter().zip(back).enumerate() {
                collect_dropped(value, returned, format!("{path}[{index}]"), out);
            }
        }
        (original, back) if original != back => {
            out.push(format!("{path} ({original} read back as {back})"))
        }
        _ => {}
    }
}

/// Checks each object against its Kubernetes type; returns how many were checked.
fn assert_schema_valid(rendered: &str) -> usize {
    use k8s_openapi::api::{
        apps::v1::Deployment,
        core::v1::{Service, ServiceAccount},
        policy::v1::PodDisruptionBudget,
        rbac::v1::{ClusterRole, ClusterRoleBinding, RoleBinding},
    };
    use k8s_openapi::kube_aggregator::pkg::apis::apiregistration::v1::APIService;

    let documents: Vec<serde_json::Value> =
        serde_saphyr::from_multiple(rendered).expect("kustomize output is YAML");
    let mut problems = Vec::new();
    for object in &documents {
        let api_version = object["apiVersion"].as_str().unwrap_or_default();
        let kind = object["kind"].as_str().unwrap_or_default();
        let unknown = match (api_version, kind) {
            ("v1", "ServiceAccount") => fields_unknown_to::<ServiceAccount>(object),
            ("v1", "Service") => fields_unknown_to::<Service>(object),
            ("apps/v1", "Deployment") => fields_unknown_to::<Deployment>(object),
            ("policy/v1", "PodDisruptionBudget") => {
                fields_unknown_to::<PodDisruptionBudget>(object)
            }
            ("rbac.authorization.k8s.io/v1", "ClusterRole") => {
                fields_unknown_to::<ClusterRole>(object)
            }
            ("rbac.authorization.k8s.io/v1", "ClusterRoleBinding") => {
                fields_unknown_to::<ClusterRoleBinding>(object)
            }
            ("rbac.authorization.k8s.io/v1", "RoleBinding") => {
                fields_unknown_to::<RoleBinding>(object)
            }
            ("apiregistration.k8s.io/v1", "APIService") => fields_unknown_to::<APIService>(object),
            _ => vec![format!(
                "{api_version} {kind} is not a kind the install should hold"
            )],
        };
        for field in unknown {
            problems.push(format!("{kind}/{}: {field}", object["metadata"]["name"]));
        }
    }
    assert!(
        problems.is_empty(),
        "not valid Kubernetes 1.33 objects: {problems:#?}"
    );
    documents.len()
}

#[test]
fn every_rendered_object_is_a_valid_kubernetes_object() {
    for (dir, count) in [("deploy", 9), ("deploy/high-availability", 10)] {
        let Some(rendered) = kustomize(dir) else {
            return;
        };
        assert_eq!(assert_schema_valid(&rendered), count, "objects in {dir}");
    }
}

#[test]
fn schema_check_names_a_misspelt_field() {
    let rendered = "apiVersion: v1\nkind: Service\nmetadata:\n  name: x\nspec:\n  selector:\n    a: b\n  prots:\n  - port: 443\n";
    let object: serde_json::Value = serde_saphyr::from_str(rendered).expect("YAML");
    assert_eq!(
        fields_unknown_to::<k8s_openapi::api::core::v1::Service>(&object),
        vec![".spec.prots".to_string()]
    );
}

#[test]
fn deployment_args_are_exactly_the_upstream_defaults_in_order() {
    let Some(rendered) = kustomize("deploy") else {
        return;
    };
    let documents: Vec<serde_json::Value> =
        serde_saphyr::from_multiple(&rendered).expect("kustomize output is YAML");
    let deployment = documents
        .iter()
        .find(|object| object["kind"] == "Deployment")
        .expect("a Deployment");
    let args = &deployment["spec"]["template"]["spec"]["containers"][0]["args"];
    assert_eq!(
        args,
        &serde_json::json!([
            "--cert-dir=/tmp",
            "--secure-port=10250",
            "--kubelet-preferred-address-types=InternalIP,ExternalIP,Hostname",
            "--kubelet-use-node-status-port",
            "--metric-resolution=15s"
        ])
    );
}
