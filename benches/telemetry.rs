//! Cost of the server's own `/metrics` exposition with a series set per node, as a monitoring
//! read every 15 s pays it.
//!
//! Time is the measuring thread's CPU time, not wall time (see `support/cpu_time.rs`).

/// The allocator the server binary runs with, so the figures are the server's.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};
use metrics_server::telemetry::Telemetry;

#[path = "support/cpu_time.rs"]
mod cpu_time;
use cpu_time::CpuTime;

type Bench = Criterion<CpuTime>;

fn exposition(c: &mut Bench) {
    for nodes in [1_000, 10_000] {
        let telemetry = Telemetry::new();
        let handles: Vec<_> = (0..nodes)
            .map(|n| {
                telemetry.node_request_series(&format!(
                    "ip-10-{}-{}-7.ec2.internal",
                    n / 250,
                    n % 250
                ))
            })
            .collect();
        for (n, series) in handles.iter().enumerate() {
            for i in 0..40 {
                // Spread over the buckets, as a fleet's latencies are.
                let seconds = 0.002 * f64::from(1 + (n as u32 + i) % 64);
                series.record(1_700_000_000.0 + f64::from(i) * 15.0, seconds, i % 50 != 7);
            }
        }
        let mut group = c.benchmark_group(format!("{nodes} nodes"));
        group.bench_function("encode /metrics", |b| {
            b.iter(|| black_box(telemetry.encode().len()))
        });
        group.bench_function("record one request", |b| {
            b.iter(|| handles[7].record(black_box(1_700_000_000.0), black_box(0.011), true))
        });
        group.finish();
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default().with_measurement(CpuTime::thread());
    targets = exposition
}
criterion_main!(benches);
