//! The API's formats over the wire, through the real TLS server and router: the `Table` kubectl
//! asks for, protobuf decoding back to the values the JSON form carries, `406` for a type not
//! served, protobuf errors for protobuf clients, and the OpenAPI documents' validators.

#[path = "common/tls_api.rs"]
mod tls_api;

use http::Method;
use metrics_server::api::openapi;
use tls_api::{send, serve_generated, Running};

const KUBECTL_GET: &str = "application/json;as=Table;v=v1;g=meta.k8s.io,application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json";
const CLIENT_GO_PROTOBUF: &str = "application/vnd.kubernetes.protobuf, */*";
const NODES: &str = "/apis/metrics.k8s.io/v1beta1/nodes";
const PODS: &str = "/apis/metrics.k8s.io/v1beta1/pods";

async fn start(
    name: &str,
) -> (
    Running,
    hyper::client::conn::http2::SendRequest<http_body_util::Empty<bytes::Bytes>>,
    std::path::PathBuf,
) {
    serve_generated(name, 3).await
}

// === a minimal protobuf reader ===

#[derive(Debug)]
enum Wire<'a> {
    Varint(u64),
    Bytes(&'a [u8]),
}

fn varint(buf: &mut &[u8]) -> u64 {
    let mut value = 0u64;
    for shift in (0..70).step_by(7) {
        let (byte, rest) = buf.split_first().expect("truncated varint");
        *buf = rest;
        value |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return value;
        }
    }
    panic!("varint longer than ten bytes");
}

/// (field, value) pairs of one message in wire order.
fn fields(mut buf: &[u8]) -> Vec<(u64, Wire<'_>)> {
    let mut out = Vec::new();
    while !buf.is_empty() {
        let key = varint(&mut buf);
        match key & 7 {
            0 => out.push((key >> 3, Wire::Varint(varint(&mut buf)))),
            2 => {
                let len = varint(&mut buf) as usize;
                let (body, rest) = buf.split_at(len);
                buf = rest;
                out.push((key >> 3, Wire::Bytes(body)));
            }
            other => panic!("unexpected wire type {other}"),
        }
    }
    out
}

fn all<'a>(message: &[(u64, Wire<'a>)], field: u64) -> Vec<&'a [u8]> {
    message
        .iter()
        .filter_map(|(f, w)| match w {
            Wire::Bytes(b) if *f == field => Some(*b),
            _ => None,
        })
        .collect()
}

fn text<'a>(message: &[(u64, Wire<'a>)], field: u64) -> &'a str {
    std::str::from_utf8(all(message, field)[0]).unwrap()
}

fn int(message: &[(u64, Wire<'_>)], field: u64) -> u64 {
    message
        .iter()
        .find_map(|(f, w)| match w {
            Wire::Varint(v) if *f == field => Some(*v),
            _ => None,
        })
        .unwrap()
}

/// Strips the magic and `runtime.Unknown`: (apiVersion, kind, raw).
fn envelope(body: &[u8]) -> (String, String, &[u8]) {
    let rest = body.strip_prefix(b"k8s\0").expect("protobuf magic");
    let unknown = fields(rest);
    let type_meta = fields(all(&unknown, 1)[0]);
    (
        text(&type_meta, 1).to_owned(),
        text(&type_meta, 2).to_owned(),
        all(&unknown, 2)[0],
    )
}

/// A `ResourceList` of map entries: (name, quantity) in wire order.
fn usage(entries: Vec<&[u8]>) -> Vec<(String, String)> {
    entries
        .into_iter()
        .map(|entry| {
            let entry = fields(entry);
            let quantity = fields(all(&entry, 2)[0]);
            (text(&entry, 1).to_owned(), text(&quantity, 1).to_owned())
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_get_receives_a_table_with_upstream_columns_over_tls() {
    let (running, mut client, dir) = start("wire-table").await;
    let reply = send(&mut client, Method::GET, PODS, &[("accept", KUBECTL_GET)]).await;
    assert_eq!(reply.code, 200);
    assert_eq!(reply.header("content-type"), "application/json");
    let table = reply.json();
    assert_eq!(table["kind"], "Table");
    assert_eq!(table["apiVersion"], "meta.k8s.io/v1");
    let columns: Vec<&str> = table["columnDefinitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(columns, ["Name", "cpu", "memory", "Window"]);
    let rows = table["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 6);
    // 1 core-second over 10 s per pod, 64Mi, a 10 s window; rows in namespace-then-name order.
    assert_eq!(
        rows[0]["cells"],
        serde_json::json!(["pod-0-0", "100m", "64Mi", "10s"])
    );
    assert_eq!(rows[0]["object"]["metadata"]["namespace"], "ns-0");

    let reply = send(
        &mut client,
        Method::GET,
        &format!("{NODES}?includeObject=Bogus"),
        &[("accept", KUBECTL_GET)],
    )
    .await;
    assert_eq!(reply.code, 400);
    assert_eq!(reply.json()["reason"], "BadRequest");

    running.stop.send(true).unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn protobuf_lists_decode_to_the_values_the_json_form_serves() {
    let (running, mut client, dir) = start("wire-protobuf").await;
    let json = send(&mut client, Method::GET, NODES, &[]).await.json();
    let reply = send(
        &mut client,
        Method::GET,
        NODES,
        &[("accept", CLIENT_GO_PROTOBUF)],
    )
    .await;
    assert_eq!(reply.code, 200);
    assert_eq!(
        reply.header("content-type"),
        "application/vnd.kubernetes.protobuf"
    );
    let (api_version, kind, raw) = envelope(&reply.body);
    assert_eq!(
        (api_version.as_str(), kind.as_str()),
        ("metrics.k8s.io/v1beta1", "NodeMetricsList")
    );
    let list = fields(raw);
    let items = all(&list, 2);
    let expected = json["items"].as_array().unwrap();
    assert_eq!(items.len(), expected.len());
    for (item, want) in items.into_iter().zip(expected) {
        let item = fields(item);
        let meta = fields(all(&item, 1)[0]);
        assert_eq!(text(&meta, 1), want["metadata"]["name"]);
        let labels: Vec<(String, String)> = all(&meta, 11)
            .into_iter()
            .map(|entry| {
                let entry = fields(entry);
                (text(&entry, 1).to_owned(), text(&entry, 2).to_owned())
            })
            .collect();
        assert_eq!(labels, [("zone".to_owned(), "a".to_owned())]);
        let window = fields(all(&item, 3)[0]);
        assert_eq!(int(&window, 1), 10_000_000_000, "{}", want["window"]);
        let served = usage(all(&item, 4));
        assert_eq!(
            served,
            [
                (
                    "cpu".to_owned(),
                    want["usage"]["cpu"].as_str().unwrap().to_owned()
                ),
                (
                    "memory".to_owned(),
                    want["usage"]["memory"].as_str().unwrap().to_owned()
                ),
            ]
        );
    }

    // A protobuf client's error is a protobuf Status.
    let reply = send(
        &mut client,
        Method::GET,
        &format!("{NODES}/missing"),
        &[("accept", CLIENT_GO_PROTOBUF)],
    )
    .await;
    assert_eq!(reply.code, 404);
    let (api_version, kind, raw) = envelope(&reply.body);
    assert_eq!((api_version.as_str(), kind.as_str()), ("v1", "Status"));
    let status = fields(raw);
    assert_eq!(text(&status, 2), "Failure");
    assert_eq!(text(&status, 3), "node \"missing\" not found");
    assert_eq!(text(&status, 4), "NotFound");
    assert_eq!(int(&status, 6), 404);

    running.stop.send(true).unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_type_not_served_is_not_acceptable_with_upstreams_status() {
    let (running, mut client, dir) = start("wire-406").await;
    for accept in [
        "application/yaml",
        "text/html",
        "application/vnd.kubernetes.protobuf;as=Table;v=v1;g=meta.k8s.io",
    ] {
        let reply = send(&mut client, Method::GET, PODS, &[("accept", accept)]).await;
        assert_eq!(reply.code, 406, "{accept}");
        let status = reply.json();
        assert_eq!(status["kind"], "Status");
        assert_eq!(status["reason"], "NotAcceptable");
        assert_eq!(
            status["message"],
            "only the following media types are accepted: application/json, application/vnd.kubernetes.protobuf"
        );
    }
    running.stop.send(true).unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openapi_documents_carry_etags_and_answer_not_modified() {
    let (running, mut client, dir) = start("wire-openapi").await;
    let reply = send(
        &mut client,
        Method::GET,
        "/openapi/v2",
        &[("accept", "application/json")],
    )
    .await;
    assert_eq!(reply.code, 200);
    assert_eq!(&reply.body[..], openapi::v2());
    let etag = reply.header("etag").to_owned();
    assert_eq!(etag, format!("\"{}\"", openapi::v2_hash()));
    let reply = send(
        &mut client,
        Method::GET,
        "/openapi/v2",
        &[("accept", "application/json"), ("if-none-match", &etag)],
    )
    .await;
    assert_eq!(reply.code, 304);
    assert!(reply.body.is_empty());
    assert_eq!(reply.header("etag"), etag);

    let index = send(&mut client, Method::GET, "/openapi/v3", &[])
        .await
        .json();
    let url = index["paths"]["apis/metrics.k8s.io/v1beta1"]["serverRelativeURL"]
        .as_str()
        .unwrap()
        .to_owned();
    let reply = send(&mut client, Method::GET, &url, &[]).await;
    assert_eq!(reply.code, 200);
    assert_eq!(reply.header("cache-control"), "public, immutable");
    assert_eq!(reply.header("vary"), "Accept");
    let group: serde_json::Value = reply.json();
    assert!(
        group["components"]["schemas"]["io.k8s.metrics.pkg.apis.metrics.v1beta1.PodMetrics"]
            .is_object()
    );
    let etag = reply.header("etag").to_owned();
    let reply = send(&mut client, Method::GET, &url, &[("if-none-match", &etag)]).await;
    assert_eq!(reply.code, 304);

    // HEAD answers like GET without a body; the metrics resources refuse it as upstream does.
    let reply = send(&mut client, Method::HEAD, "/openapi/v2", &[]).await;
    assert_eq!((reply.code, reply.body.len()), (200, 0));
    let reply = send(&mut client, Method::HEAD, NODES, &[]).await;
    assert_eq!(reply.code, 405);

    running.stop.send(true).unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}
