//! The OpenAPI documents of the metrics API: Swagger 2.0 at `/openapi/v2`, and OpenAPI 3.0 at
//! `/openapi/v3` (an index) and `/openapi/v3/apis/metrics.k8s.io/v1beta1` (the group version).
//!
//! kube-apiserver's aggregator fetches these to merge into the cluster's documents, and
//! `kubectl explain nodemetrics` reads the v3 group document. They describe what upstream's
//! generated definitions describe: the five read paths (list and get of `nodes`, list of `pods`
//! in all and in one namespace, get of a pod), their `x-kubernetes-action` and
//! `x-kubernetes-group-version-kind`, and the definitions `NodeMetrics`, `NodeMetricsList`,
//! `PodMetrics`, `PodMetricsList`, `ContainerMetrics` (package
//! `io.k8s.metrics.pkg.apis.metrics.v1beta1`) with the apimachinery types they reference
//! (`ObjectMeta`, `ListMeta`, `Time`, `Duration`, `Quantity` and what `ObjectMeta` needs). The
//! descriptions are written here. Only the encodings this server produces are listed (JSON and
//! protobuf), and no watch parameters: the resources are not watchable here.
//!
//! Each document is built once, on first use, and kept as bytes for the life of the process.
//! The index names the group document with `?hash=` and the upper-case hex SHA-512 of its bytes,
//! as kube-openapi does, so clients may cache it as immutable.

use std::sync::OnceLock;

use serde_json::{json, Map, Value};

const GROUP: &str = "metrics.k8s.io";
const VERSION: &str = "v1beta1";
const METRICS: &str = "io.k8s.metrics.pkg.apis.metrics.v1beta1";
const META: &str = "io.k8s.apimachinery.pkg.apis.meta.v1";
const QUANTITY: &str = "io.k8s.apimachinery.pkg.api.resource.Quantity";

/// The group version's path in the v3 index.
pub const V3_GROUP_PATH: &str = "apis/metrics.k8s.io/v1beta1";

/// The Swagger 2.0 document served at `/openapi/v2`.
pub fn v2() -> &'static [u8] {
    static DOC: OnceLock<Vec<u8>> = OnceLock::new();
    DOC.get_or_init(|| to_bytes(&document(Spec::V2)))
}

/// The OpenAPI 3.0 document of `metrics.k8s.io/v1beta1`, served at
/// `/openapi/v3/apis/metrics.k8s.io/v1beta1`.
pub fn v3_group() -> &'static [u8] {
    static DOC: OnceLock<Vec<u8>> = OnceLock::new();
    DOC.get_or_init(|| to_bytes(&document(Spec::V3)))
}

/// The index served at `/openapi/v3`: each group version with the URL of its document.
pub fn v3_index() -> &'static [u8] {
    static DOC: OnceLock<Vec<u8>> = OnceLock::new();
    DOC.get_or_init(|| {
        let url = format!("/openapi/v3/{V3_GROUP_PATH}?hash={}", v3_group_hash());
        to_bytes(&json!({ "paths": { V3_GROUP_PATH: { "serverRelativeURL": url } } }))
    })
}

/// The upper-case hex SHA-512 of [`v3_group`], the value of its `hash` query parameter and the
/// basis of its `ETag`.
pub fn v3_group_hash() -> &'static str {
    static HASH: OnceLock<String> = OnceLock::new();
    HASH.get_or_init(|| sha512_hex(v3_group()))
}

/// The upper-case hex SHA-512 of [`v2`], its `ETag` as kube-openapi computes it.
pub fn v2_hash() -> &'static str {
    static HASH: OnceLock<String> = OnceLock::new();
    HASH.get_or_init(|| sha512_hex(v2()))
}

/// The upper-case hex SHA-512 of [`v3_index`], its `ETag`.
pub fn v3_index_hash() -> &'static str {
    static HASH: OnceLock<String> = OnceLock::new();
    HASH.get_or_init(|| sha512_hex(v3_index()))
}

/// When the documents were first asked for, unix seconds: their `Last-Modified`. They never
/// change while the process runs, so the first use is when they came to be.
pub fn built_at() -> i64 {
    static AT: OnceLock<i64> = OnceLock::new();
    *AT.get_or_init(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
            .unwrap_or(0)
    })
}

fn sha512_hex(bytes: &[u8]) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA512, bytes);
    digest.as_ref().iter().map(|b| format!("{b:02X}")).collect()
}

/// Serialises a document. A `Value` holds only strings, numbers, booleans, arrays and
/// string-keyed objects, none of which can fail to serialise, so the empty fallback is never
/// taken.
fn to_bytes(value: &Value) -> Vec<u8> {
    serde_json::to_vec(value).unwrap_or_default()
}

// === document ===

/// Which OpenAPI dialect is being written: they differ in where definitions live, how a
/// reference with a description is spelled, and how parameters and responses carry schemas.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Spec {
    V2,
    V3,
}

impl Spec {
    /// A bare reference to a named definition.
    fn reference(self, name: &str) -> Value {
        match self {
            Spec::V2 => json!({ "$ref": format!("#/definitions/{name}") }),
            Spec::V3 => json!({ "$ref": format!("#/components/schemas/{name}") }),
        }
    }

    /// A reference with a description and a default: v2 writes them beside `$ref`, v3 wraps the
    /// reference in `allOf` because siblings of `$ref` are ignored there.
    fn described_reference(self, name: &str, description: &str, default: Option<Value>) -> Value {
        let mut schema = Map::new();
        match self {
            Spec::V2 => {
                schema.insert("$ref".into(), json!(format!("#/definitions/{name}")));
            }
            Spec::V3 => {
                schema.insert("allOf".into(), json!([self.reference(name)]));
            }
        }
        if !description.is_empty() {
            schema.insert("description".into(), json!(description));
        }
        if let Some(default) = default {
            schema.insert("default".into(), default);
        }
        Value::Object(schema)
    }

    /// A string query or path parameter.
    fn parameter(self, name: &str, location: &str, description: &str) -> Value {
        let mut parameter = match self {
            Spec::V2 => json!({
                "name": name, "in": location, "description": description,
                "type": "string", "uniqueItems": true,
            }),
            Spec::V3 => json!({
                "name": name, "in": location, "description": description,
                "schema": { "type": "string", "uniqueItems": true },
            }),
        };
        if location == "path" {
            parameter["required"] = json!(true);
        }
        parameter
    }

    /// An integer query parameter.
    fn integer_parameter(self, name: &str, description: &str) -> Value {
        match self {
            Spec::V2 => json!({
                "name": name, "in": "query", "description": description,
                "type": "integer", "uniqueItems": true,
            }),
            Spec::V3 => json!({
                "name": name, "in": "query", "description": description,
                "schema": { "type": "integer", "uniqueItems": true },
            }),
        }
    }
}

/// The media types a read answers with.
const PRODUCES: &[&str] = &["application/json", "application/vnd.kubernetes.protobuf"];

fn document(spec: Spec) -> Value {
    let info = json!({ "title": "Kubernetes metrics-server", "version": concat!("v", env!("CARGO_PKG_VERSION")) });
    let security_scheme = json!({
        "type": "apiKey", "name": "authorization", "in": "header",
        "description": "Bearer Token authentication",
    });
    let mut paths = Map::new();
    for path in PATHS {
        paths.insert(path.url(), path_item(spec, path));
    }
    match spec {
        Spec::V2 => json!({
            "swagger": "2.0",
            "info": info,
            "paths": paths,
            "definitions": definitions(spec),
            "securityDefinitions": { "BearerToken": security_scheme },
            "security": [{ "BearerToken": [] }],
        }),
        Spec::V3 => json!({
            "openapi": "3.0.0",
            "info": info,
            "paths": paths,
            "components": {
                "schemas": definitions(spec),
                "securitySchemes": { "BearerToken": security_scheme },
            },
            "security": [{ "BearerToken": [] }],
        }),
    }
}

// === paths ===

/// One read path of the API.
struct Path {
    /// The path after `/apis/metrics.k8s.io/v1beta1/`.
    suffix: &'static str,
    kind: &'static str,
    /// `list` or `get`.
    action: &'static str,
    operation_id: &'static str,
    namespaced: bool,
}

impl Path {
    fn url(&self) -> String {
        format!("/apis/{GROUP}/{VERSION}/{}", self.suffix)
    }

    fn response_definition(&self) -> String {
        if self.action == "list" {
            format!("{METRICS}.{}List", self.kind)
        } else {
            format!("{METRICS}.{}", self.kind)
        }
    }
}

const PATHS: &[Path] = &[
    Path {
        suffix: "namespaces/{namespace}/pods",
        kind: "PodMetrics",
        action: "list",
        operation_id: "listMetricsV1beta1NamespacedPodMetrics",
        namespaced: true,
    },
    Path {
        suffix: "namespaces/{namespace}/pods/{name}",
        kind: "PodMetrics",
        action: "get",
        operation_id: "readMetricsV1beta1NamespacedPodMetrics",
        namespaced: true,
    },
    Path {
        suffix: "nodes",
        kind: "NodeMetrics",
        action: "list",
        operation_id: "listMetricsV1beta1NodeMetrics",
        namespaced: false,
    },
    Path {
        suffix: "nodes/{name}",
        kind: "NodeMetrics",
        action: "get",
        operation_id: "readMetricsV1beta1NodeMetrics",
        namespaced: false,
    },
    Path {
        suffix: "pods",
        kind: "PodMetrics",
        action: "list",
        operation_id: "listMetricsV1beta1PodMetricsForAllNamespaces",
        namespaced: false,
    },
];

fn path_item(spec: Spec, path: &Path) -> Value {
    let description = if path.action == "list" {
        format!("list objects of kind {}", path.kind)
    } else {
        format!("read the specified {}", path.kind)
    };
    let query = if path.action == "list" {
        list_parameters(spec)
    } else {
        Vec::new()
    };
    let schema = spec.reference(&path.response_definition());
    let ok = match spec {
        Spec::V2 => json!({ "description": "OK", "schema": schema }),
        Spec::V3 => {
            let content: Map<String, Value> = PRODUCES
                .iter()
                .map(|media| ((*media).to_owned(), json!({ "schema": schema })))
                .collect();
            json!({ "description": "OK", "content": content })
        }
    };
    let mut operation = json!({
        "description": description,
        "operationId": path.operation_id,
        "tags": [format!("metrics_{VERSION}")],
        "responses": { "200": ok, "401": { "description": "Unauthorized" } },
        "x-kubernetes-action": path.action,
        "x-kubernetes-group-version-kind": { "group": GROUP, "version": VERSION, "kind": path.kind },
    });
    if !query.is_empty() {
        operation["parameters"] = Value::Array(query);
    }
    if spec == Spec::V2 {
        operation["consumes"] = json!(["*/*"]);
        operation["produces"] = json!(PRODUCES);
        operation["schemes"] = json!(["https"]);
    }

    let mut shared = Vec::new();
    if path.suffix.ends_with("{name}") {
        shared.push(spec.parameter("name", "path", &format!("name of the {}", path.kind)));
    }
    if path.namespaced {
        shared.push(spec.parameter(
            "namespace",
            "path",
            "object name and auth scope, such as for teams and projects",
        ));
    }
    shared.push(spec.parameter(
        "pretty",
        "query",
        "If 'true', then the output is pretty printed.",
    ));
    json!({ "get": operation, "parameters": shared })
}

fn list_parameters(spec: Spec) -> Vec<Value> {
    vec![
        spec.parameter(
            "continue",
            "query",
            "The continue token of a previous page. Lists are served whole, so it is never needed.",
        ),
        spec.parameter(
            "fieldSelector",
            "query",
            "Restricts the list to objects whose fields match: metadata.name, and for pods \
             metadata.namespace. Defaults to everything.",
        ),
        spec.parameter(
            "labelSelector",
            "query",
            "Restricts the list to objects whose node or pod labels match this selector. \
             Defaults to everything.",
        ),
        spec.integer_parameter(
            "limit",
            "The most items a client wants in one response. Lists are served whole.",
        ),
        spec.parameter(
            "resourceVersion",
            "query",
            "Metrics are not versioned: every read returns the latest values.",
        ),
        spec.parameter(
            "resourceVersionMatch",
            "query",
            "How resourceVersion applies to a list; metrics are not versioned.",
        ),
    ]
}

// === definitions ===

fn definitions(spec: Spec) -> Value {
    let mut defs = Map::new();
    let usage = json!({
        "description": "Resource usage: cpu in cores (a rate over the window), memory as the working set in bytes.",
        "type": "object",
        "additionalProperties": spec.reference(QUANTITY),
    });
    let kind_field = json!({
        "description": "The REST resource this object represents, in CamelCase.",
        "type": "string",
    });
    let api_version_field = json!({
        "description": "The versioned schema of this representation of an object.",
        "type": "string",
    });
    let object_meta = spec.described_reference(
        &format!("{META}.ObjectMeta"),
        "Standard object metadata: the node's or pod's name, namespace and labels.",
        Some(json!({})),
    );
    let list_meta = spec.described_reference(
        &format!("{META}.ListMeta"),
        "Standard list metadata.",
        Some(json!({})),
    );
    let timestamp = spec.described_reference(
        &format!("{META}.Time"),
        "When the newest sample used was taken. Usage covers [timestamp - window, timestamp].",
        None,
    );
    let window = spec.described_reference(
        &format!("{META}.Duration"),
        "The time between the two samples the usage was computed from.",
        None,
    );

    defs.insert(
        format!("{METRICS}.ContainerMetrics"),
        json!({
            "description": "Resource usage of one container of a pod.",
            "type": "object",
            "required": ["name", "usage"],
            "properties": {
                "name": {
                    "description": "The container's name, as in the pod's spec.containers.",
                    "type": "string",
                    "default": "",
                },
                "usage": usage,
            },
        }),
    );
    defs.insert(
        format!("{METRICS}.NodeMetrics"),
        json!({
            "description": "Resource usage of a node.",
            "type": "object",
            "required": ["timestamp", "window", "usage"],
            "properties": {
                "apiVersion": api_version_field,
                "kind": kind_field,
                "metadata": object_meta,
                "timestamp": timestamp,
                "window": window,
                "usage": usage,
            },
            "x-kubernetes-group-version-kind": [gvk("NodeMetrics")],
        }),
    );
    defs.insert(
        format!("{METRICS}.NodeMetricsList"),
        json!({
            "description": "A list of NodeMetrics.",
            "type": "object",
            "required": ["items"],
            "properties": {
                "apiVersion": api_version_field,
                "kind": kind_field,
                "metadata": list_meta,
                "items": {
                    "description": "The nodes' metrics.",
                    "type": "array",
                    "items": spec.reference(&format!("{METRICS}.NodeMetrics")),
                },
            },
            "x-kubernetes-group-version-kind": [gvk("NodeMetricsList")],
        }),
    );
    defs.insert(
        format!("{METRICS}.PodMetrics"),
        json!({
            "description": "Resource usage of a pod, container by container.",
            "type": "object",
            "required": ["timestamp", "window", "containers"],
            "properties": {
                "apiVersion": api_version_field,
                "kind": kind_field,
                "metadata": object_meta,
                "timestamp": timestamp,
                "window": window,
                "containers": {
                    "description": "Usage of each container, all over the same window.",
                    "type": "array",
                    "items": spec.reference(&format!("{METRICS}.ContainerMetrics")),
                    "x-kubernetes-list-type": "atomic",
                },
            },
            "x-kubernetes-group-version-kind": [gvk("PodMetrics")],
        }),
    );
    defs.insert(
        format!("{METRICS}.PodMetricsList"),
        json!({
            "description": "A list of PodMetrics.",
            "type": "object",
            "required": ["items"],
            "properties": {
                "apiVersion": api_version_field,
                "kind": kind_field,
                "metadata": list_meta,
                "items": {
                    "description": "The pods' metrics.",
                    "type": "array",
                    "items": spec.reference(&format!("{METRICS}.PodMetrics")),
                },
            },
            "x-kubernetes-group-version-kind": [gvk("PodMetricsList")],
        }),
    );
    apimachinery_definitions(spec, &mut defs);
    Value::Object(defs)
}

fn gvk(kind: &str) -> Value {
    json!({ "group": GROUP, "version": VERSION, "kind": kind })
}

/// The apimachinery types the metrics definitions reference, directly or through `ObjectMeta`.
fn apimachinery_definitions(spec: Spec, defs: &mut Map<String, Value>) {
    let quantity_description = "A fixed-point number with an optional suffix: a decimal SI \
        suffix (n, u, m, k, M, G, T, P, E), a binary one (Ki, Mi, Gi, Ti, Pi, Ei) or a decimal \
        exponent (e3). Served in canonical form: the largest suffix that keeps an integer.";
    defs.insert(
        QUANTITY.to_owned(),
        match spec {
            Spec::V2 => json!({ "description": quantity_description, "type": "string" }),
            Spec::V3 => json!({
                "description": quantity_description,
                "oneOf": [{ "type": "string" }, { "type": "number" }],
            }),
        },
    );
    defs.insert(
        format!("{META}.Time"),
        json!({
            "description": "A point in time, serialised as RFC 3339 in UTC with whole seconds.",
            "type": "string",
            "format": "date-time",
        }),
    );
    defs.insert(
        format!("{META}.Duration"),
        json!({
            "description": "A length of time in Go's duration syntax, such as 15.012s or 1m0.5s.",
            "type": "string",
        }),
    );
    defs.insert(
        format!("{META}.FieldsV1"),
        json!({
            "description": "A set of fields in the JSON-encoded fields-set format.",
            "type": "object",
        }),
    );
    let string = |description: &str| json!({ "description": description, "type": "string" });
    defs.insert(
        format!("{META}.ListMeta"),
        json!({
            "description": "Metadata of a list.",
            "type": "object",
            "properties": {
                "continue": string("Set when more items are available; never set here."),
                "remainingItemCount": {
                    "description": "How many items a paged list has left; never set here.",
                    "type": "integer",
                    "format": "int64",
                },
                "resourceVersion": string("The list's version; empty, as metrics are not versioned."),
                "selfLink": string("Deprecated and never set."),
            },
        }),
    );
    defs.insert(
        format!("{META}.OwnerReference"),
        json!({
            "description": "An object that owns this one.",
            "type": "object",
            "required": ["apiVersion", "kind", "name", "uid"],
            "properties": {
                "apiVersion": { "description": "The owner's API version.", "type": "string", "default": "" },
                "blockOwnerDeletion": {
                    "description": "Whether the owner cannot be deleted from storage before this object.",
                    "type": "boolean",
                },
                "controller": { "description": "Whether the owner is the managing controller.", "type": "boolean" },
                "kind": { "description": "The owner's kind.", "type": "string", "default": "" },
                "name": { "description": "The owner's name.", "type": "string", "default": "" },
                "uid": { "description": "The owner's UID.", "type": "string", "default": "" },
            },
            "x-kubernetes-map-type": "atomic",
        }),
    );
    defs.insert(
        format!("{META}.ManagedFieldsEntry"),
        json!({
            "description": "Which fields a workflow manages.",
            "type": "object",
            "properties": {
                "apiVersion": string("The version of the resource the fields are for."),
                "fieldsType": string("The format of fieldsV1; only FieldsV1."),
                "fieldsV1": spec.described_reference(&format!("{META}.FieldsV1"), "The managed fields.", None),
                "manager": string("The workflow managing the fields."),
                "operation": string("Apply or Update."),
                "subresource": string("The subresource used to change the object."),
                "time": spec.described_reference(&format!("{META}.Time"), "When the fields were last changed.", None),
            },
        }),
    );
    let string_map = |description: &str| {
        json!({
            "description": description,
            "type": "object",
            "additionalProperties": { "type": "string", "default": "" },
        })
    };
    defs.insert(
        format!("{META}.ObjectMeta"),
        json!({
            "description": "Metadata every persisted resource has.",
            "type": "object",
            "properties": {
                "annotations": string_map("Unstructured key-value data; not set on metrics."),
                "creationTimestamp": spec.described_reference(
                    &format!("{META}.Time"),
                    "When this object was created; for metrics, the time of the request.",
                    None,
                ),
                "deletionGracePeriodSeconds": {
                    "description": "Seconds allowed for graceful termination; not set on metrics.",
                    "type": "integer",
                    "format": "int64",
                },
                "deletionTimestamp": spec.described_reference(
                    &format!("{META}.Time"),
                    "When this object will be deleted; not set on metrics.",
                    None,
                ),
                "finalizers": {
                    "description": "Conditions to meet before deletion; not set on metrics.",
                    "type": "array",
                    "items": { "type": "string", "default": "" },
                    "x-kubernetes-list-type": "set",
                    "x-kubernetes-patch-strategy": "merge",
                },
                "generateName": string("A prefix for a server-generated name; not set on metrics."),
                "generation": {
                    "description": "A sequence number of the desired state; not set on metrics.",
                    "type": "integer",
                    "format": "int64",
                },
                "labels": string_map("The labels of the node or pod the metrics are for."),
                "managedFields": {
                    "description": "Which fields each workflow manages; not set on metrics.",
                    "type": "array",
                    "items": spec.reference(&format!("{META}.ManagedFieldsEntry")),
                    "x-kubernetes-list-type": "atomic",
                },
                "name": string("The name of the node or pod the metrics are for."),
                "namespace": string("The namespace of the pod the metrics are for; empty for nodes."),
                "ownerReferences": {
                    "description": "Objects this one depends on; not set on metrics.",
                    "type": "array",
                    "items": spec.reference(&format!("{META}.OwnerReference")),
                    "x-kubernetes-list-map-keys": ["uid"],
                    "x-kubernetes-list-type": "map",
                    "x-kubernetes-patch-merge-key": "uid",
                    "x-kubernetes-patch-strategy": "merge",
                },
                "resourceVersion": string("The object's version; empty, as metrics are not versioned."),
                "selfLink": string("Deprecated and never set."),
                "uid": string("The object's unique id; not set on metrics."),
            },
        }),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(bytes: &[u8]) -> Value {
        serde_json::from_slice(bytes).unwrap()
    }

    /// Every `$ref` in `value`, recursively.
    fn refs(value: &Value, found: &mut Vec<String>) {
        match value {
            Value::Object(map) => {
                for (key, value) in map {
                    if key == "$ref" {
                        found.push(value.as_str().unwrap().to_owned());
                    } else {
                        refs(value, found);
                    }
                }
            }
            Value::Array(items) => items.iter().for_each(|v| refs(v, found)),
            _ => {}
        }
    }

    #[test]
    fn every_v2_reference_resolves_to_a_definition() {
        let doc = parse(v2());
        assert_eq!(doc["swagger"], "2.0");
        let mut found = Vec::new();
        refs(&doc, &mut found);
        assert!(found.len() > 10);
        for reference in found {
            let name = reference.strip_prefix("#/definitions/").unwrap();
            assert!(doc["definitions"][name].is_object(), "{reference}");
        }
    }

    #[test]
    fn every_v3_reference_resolves_to_a_schema() {
        let doc = parse(v3_group());
        assert_eq!(doc["openapi"], "3.0.0");
        let mut found = Vec::new();
        refs(&doc, &mut found);
        assert!(found.len() > 10);
        for reference in found {
            let name = reference.strip_prefix("#/components/schemas/").unwrap();
            assert!(
                doc["components"]["schemas"][name].is_object(),
                "{reference}"
            );
        }
    }

    #[test]
    fn v3_never_puts_siblings_beside_a_reference() {
        fn check(value: &Value) {
            match value {
                Value::Object(map) => {
                    if map.contains_key("$ref") {
                        assert_eq!(map.len(), 1, "{value}");
                    }
                    map.values().for_each(check);
                }
                Value::Array(items) => items.iter().for_each(check),
                _ => {}
            }
        }
        check(&parse(v3_group()));
    }

    #[test]
    fn metrics_definitions_carry_their_group_version_kind() {
        for doc in [parse(v2()), parse(v3_group())] {
            let defs = if doc["definitions"].is_object() {
                &doc["definitions"]
            } else {
                &doc["components"]["schemas"]
            };
            for kind in [
                "NodeMetrics",
                "NodeMetricsList",
                "PodMetrics",
                "PodMetricsList",
            ] {
                let def = &defs[format!("{METRICS}.{kind}")];
                assert_eq!(
                    def["x-kubernetes-group-version-kind"],
                    json!([{ "group": "metrics.k8s.io", "version": "v1beta1", "kind": kind }])
                );
            }
            assert!(
                defs[format!("{METRICS}.ContainerMetrics")]["x-kubernetes-group-version-kind"]
                    .is_null()
            );
        }
    }

    #[test]
    fn the_five_read_paths_are_described() {
        let doc = parse(v2());
        let paths = doc["paths"].as_object().unwrap();
        assert_eq!(paths.len(), 5);
        let nodes = &doc["paths"]["/apis/metrics.k8s.io/v1beta1/nodes"]["get"];
        assert_eq!(nodes["x-kubernetes-action"], "list");
        assert_eq!(
            nodes["responses"]["200"]["schema"]["$ref"],
            format!("#/definitions/{METRICS}.NodeMetricsList")
        );
        let pod = &doc["paths"]["/apis/metrics.k8s.io/v1beta1/namespaces/{namespace}/pods/{name}"];
        assert_eq!(pod["get"]["x-kubernetes-action"], "get");
        assert_eq!(
            pod["get"]["x-kubernetes-group-version-kind"]["kind"],
            "PodMetrics"
        );
        let names: Vec<&str> = pod["parameters"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["name", "namespace", "pretty"]);
    }

    #[test]
    fn v3_index_links_the_group_document_by_its_hash() {
        let index = parse(v3_index());
        let url = index["paths"][V3_GROUP_PATH]["serverRelativeURL"]
            .as_str()
            .unwrap();
        let hash = url
            .strip_prefix("/openapi/v3/apis/metrics.k8s.io/v1beta1?hash=")
            .unwrap();
        assert_eq!(hash.len(), 128);
        assert!(hash
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'A'..=b'F').contains(&b)));
        assert_eq!(hash, v3_group_hash());
    }

    #[test]
    fn documents_are_built_once() {
        assert!(std::ptr::eq(v2(), v2()));
        assert!(std::ptr::eq(v3_group(), v3_group()));
    }
}
