//! Any body: decoding must not panic, counts must add up, and every kept point must be complete.

#![no_main]

use libfuzzer_sys::fuzz_target;
use metrics_server::parse::decode_resource_metrics;

fuzz_target!(|body: &[u8]| {
    let Ok(decoded) = decode_resource_metrics(body, 1) else {
        return;
    };
    let stats = &decoded.stats;
    assert_eq!(stats.skipped_lines, stats.skipped_by_reason.iter().sum::<u64>());
    if let Some(node) = decoded.scrape.node {
        assert!(node.cumulative_cpu_used > 0 && node.memory_usage > 0 && node.timestamp != 0);
    }
    for pod in &decoded.scrape.pods {
        assert!(!pod.namespace.is_empty() && !pod.name.is_empty() && !pod.containers.is_empty());
        for container in &pod.containers {
            assert!(!container.name.is_empty());
            assert!(container.point.cumulative_cpu_used > 0 && container.point.memory_usage > 0);
        }
    }
});
