//! The all-pods list of a 150,000-pod cluster (5,000 nodes x 30 two-container pods) through the
//! whole in-process handler: routing, snapshot walk, discovery label lookups against the real
//! reflector's view, freshness accounting and rendering. Throughput is bytes of JSON per second of
//! the measuring thread's CPU time; for the streamed list (rendered on a runtime's blocking pool
//! and handed over in chunks, as the server serves it), of the whole process's CPU time.

/// The allocator the server binary runs with, so the figures are the server's.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use http::Method;
use http_body_util::BodyExt;

#[path = "support/cluster.rs"]
mod cluster;
#[path = "support/cpu_time.rs"]
mod cpu_time;

use cpu_time::CpuTime;

const NODES: usize = 5_000;
const PODS_PER_NODE: usize = 30;
const PATH: &str = "/apis/metrics.k8s.io/v1beta1/pods";

fn body_len(router: &metrics_server::api::routes::Router) -> usize {
    let response = router.respond(&Method::GET, PATH, "", cluster::NOW);
    assert_eq!(response.status(), 200);
    let body = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("a runtime")
        .block_on(response.into_body().collect())
        .expect("a full body cannot fail")
        .to_bytes();
    let list: serde_json::Value = serde_json::from_slice(&body).expect("valid JSON");
    assert_eq!(
        list["items"].as_array().map(Vec::len),
        Some(NODES * PODS_PER_NODE),
        "every pod is listed"
    );
    body.len()
}

fn list_pods(c: &mut Criterion<CpuTime>) {
    let router = cluster::router(NODES, PODS_PER_NODE);
    let len = body_len(&router);
    let mut group = c.benchmark_group("5000 nodes x 30 pods");
    group.throughput(Throughput::Bytes(len as u64));
    group.sample_size(10);
    group.bench_function("all pods, handler", |b| {
        b.iter(|| black_box(router.respond(&Method::GET, PATH, "", cluster::NOW)))
    });
    group.bench_function("one namespace, handler", |b| {
        b.iter(|| {
            black_box(router.respond(
                &Method::GET,
                "/apis/metrics.k8s.io/v1beta1/namespaces/team-07/pods",
                "",
                cluster::NOW,
            ))
        })
    });
    group.finish();
}

/// The all-pods list as the server produces it: on a two-worker runtime like the API's, rendered
/// on the blocking pool and streamed, every chunk taken by the caller.
fn list_pods_streamed(c: &mut Criterion<CpuTime>) {
    let router = cluster::router(NODES, PODS_PER_NODE);
    let len = body_len(&router);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .build()
        .expect("a runtime");
    let mut group = c.benchmark_group("5000 nodes x 30 pods");
    group.throughput(Throughput::Bytes(len as u64));
    group.sample_size(10);
    group.bench_function("all pods, streamed", |b| {
        b.iter(|| {
            runtime.block_on(async {
                let response = router.respond(&Method::GET, PATH, "", cluster::NOW);
                let mut body = response.into_body();
                let mut received = 0;
                while let Some(frame) = body.frame().await {
                    if let Ok(data) = frame.expect("a streamed body cannot fail").into_data() {
                        received += data.len();
                    }
                }
                assert_eq!(received, len, "the whole list arrives");
            })
        })
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .with_measurement(CpuTime::thread());
    targets = list_pods
}
criterion_group! {
    name = streamed;
    config = Criterion::default()
        .with_measurement(CpuTime::process());
    targets = list_pods_streamed
}
criterion_main!(benches, streamed);
