//! Throughput of the `/metrics/resource` parser on a realistic kubelet body, against a floor of
//! raw `memchr` line scanning over the same bytes.
//!
//! Three measurements per scenario: the full decode (what a scrape pays), the lexer alone (every
//! line classified, every sample's value, timestamp and labels parsed), and counting lines with
//! `memchr` (no parser can beat it; the gap says what parsing costs).

/// The allocator the server binary runs with, so the figures are the server's.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use metrics_server::parse::decode_resource_metrics;
use metrics_server::parse::fixtures::realistic_body;
use metrics_server::parse::text::{Entry, Lexer};

/// 2026-01-01T00:00:00Z in nanoseconds; any value works, it only stamps samples without timestamps.
const REQUEST_TIME: i64 = 1_767_225_600_000_000_000;

/// Scenarios named by size: the kubelet's default pod limit, and a small node.
const SCENARIOS: [(usize, usize); 2] = [(110, 3), (30, 2)];

fn lex_everything(body: &[u8]) -> (usize, f64) {
    let mut lexer = Lexer::new(body);
    let mut labels = 0;
    let mut sum = 0.0;
    while let Some(entry) = lexer.next_entry() {
        if let Entry::Series(line) = entry {
            if let Ok(sample) = line.sample() {
                sum += sample.value;
                labels += sample.labels.iter().filter(Result::is_ok).count();
            }
        }
    }
    (labels, sum)
}

fn count_lines(body: &[u8]) -> usize {
    memchr::memchr_iter(b'\n', body).count()
}

fn parse(c: &mut Criterion) {
    for (pods, containers) in SCENARIOS {
        let body = realistic_body(pods, containers);
        let mut group = c.benchmark_group(format!("{pods} pods x {containers} containers"));
        group.throughput(Throughput::Bytes(body.len() as u64));
        group.bench_function("decode_resource_metrics", |b| {
            b.iter(|| decode_resource_metrics(black_box(&body), REQUEST_TIME))
        });
        group.bench_function("lexer only", |b| {
            b.iter(|| lex_everything(black_box(&body)))
        });
        group.bench_function("memchr line count", |b| {
            b.iter(|| count_lines(black_box(&body)))
        });
        group.finish();
    }
}

criterion_group!(benches, parse);
criterion_main!(benches);
