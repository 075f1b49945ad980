//! Realistic kubelet `/metrics/resource` bodies, for tests and benches.
//!
//! Mirrors what a kubelet (v1.30-ish) writes: families sorted by name, each with its `# HELP` and
//! `# TYPE` lines; container series labelled `container`, `namespace`, `pod` in that order and
//! sorted by those values (so one pod's containers are not adjacent); memory written the way Go
//! formats floats (`1.253376e+07`); swap and pod-total series the decoder ignores; and a final
//! `resource_scrape_error 0`.

use std::fmt::Write as _;

/// Sample time of every series in the body, milliseconds since the epoch.
pub const SAMPLE_TIME_MS: i64 = 1_700_000_000_123;

/// A container as [`realistic_body`] writes it.
#[derive(Clone, Debug, PartialEq)]
pub struct FixtureContainer {
    pub namespace: String,
    pub pod: String,
    pub container: String,
    /// Core-seconds, as written.
    pub cpu_seconds: f64,
    /// Bytes, as written.
    pub memory_bytes: u64,
    /// Unix seconds, as written.
    pub start_time_seconds: f64,
}

/// The containers of a body of `pods` pods with `containers_per_pod` containers each, in the order
/// the body lists them: sorted by container name, then namespace, then pod, as the kubelet sorts.
pub fn containers(pods: usize, containers_per_pod: usize) -> Vec<FixtureContainer> {
    let namespaces = [
        "default",
        "kube-system",
        "monitoring",
        "payments",
        "search-frontend",
    ];
    let container_names = [
        "app",
        "istio-proxy",
        "log-shipper",
        "metrics-exporter",
        "init-sidecar",
    ];
    let mut out = Vec::with_capacity(pods * containers_per_pod);
    for pod in 0..pods {
        let namespace = namespaces[pod % namespaces.len()];
        let pod_name = format!(
            "workload-{pod:03}-7d9f8b6c5d-{:05x}",
            (pod * 7919) % 0xfffff
        );
        for c in 0..containers_per_pod {
            let container = match container_names.get(c) {
                Some(name) => (*name).to_string(),
                None => format!("sidecar-{c}"),
            };
            let seed = (pod * 31 + c * 17 + 1) as f64;
            out.push(FixtureContainer {
                namespace: namespace.to_string(),
                pod: pod_name.clone(),
                container,
                // The kubelet divides integer nanocore-seconds by 1e9.
                cpu_seconds: ((seed * 41_503_271_113.0) as u64 % 900_000_000_000_000) as f64 / 1e9,
                memory_bytes: 1_000_000
                    + (pod as u64 * 7_340_033 + c as u64 * 1_048_576) % 900_000_000,
                start_time_seconds: 1_699_990_000.0 + seed * 1.618_033_988,
            });
        }
    }
    // The kubelet's registry sorts samples of a family by label values: container, namespace, pod.
    out.sort_by(|a, b| {
        (&a.container, &a.namespace, &a.pod).cmp(&(&b.container, &b.namespace, &b.pod))
    });
    out
}

/// Formats a float the way Go's `strconv.FormatFloat(v, 'g', -1, 64)` does (what the kubelet's
/// Prometheus encoder uses): shortest digits, in exponent form with a signed two-digit exponent when
/// the decimal exponent is below -4 or at least 6.
pub fn go_float(value: f64) -> String {
    let exp = format!("{value:e}");
    let Some((mantissa, exponent)) = exp.split_once('e') else {
        return format!("{value}");
    };
    let Ok(exponent) = exponent.parse::<i32>() else {
        return format!("{value}");
    };
    if value == 0.0 || (-4..6).contains(&exponent) {
        return format!("{value}");
    }
    let sign = if exponent < 0 { '-' } else { '+' };
    format!("{mantissa}e{sign}{:02}", exponent.abs())
}

/// A body like the one a kubelet with `pods` pods of `containers_per_pod` containers returns.
pub fn realistic_body(pods: usize, containers_per_pod: usize) -> Vec<u8> {
    let containers = containers(pods, containers_per_pod);
    let mut body = String::with_capacity(containers.len() * 500 + 4096);
    let ts = SAMPLE_TIME_MS;
    let labels = |c: &FixtureContainer| {
        format!(
            "container=\"{}\",namespace=\"{}\",pod=\"{}\"",
            c.container, c.namespace, c.pod
        )
    };
    // Writing into a String cannot fail; the results are ignored for that reason.
    let _ = writeln!(body, "# HELP container_cpu_usage_seconds_total [STABLE] Cumulative cpu time consumed by the container in core-seconds");
    let _ = writeln!(body, "# TYPE container_cpu_usage_seconds_total counter");
    for c in &containers {
        let _ = writeln!(
            body,
            "container_cpu_usage_seconds_total{{{}}} {} {ts}",
            labels(c),
            go_float(c.cpu_seconds)
        );
    }
    let _ = writeln!(body, "# HELP container_memory_working_set_bytes [STABLE] Current working set of the container in bytes");
    let _ = writeln!(body, "# TYPE container_memory_working_set_bytes gauge");
    for c in &containers {
        let _ = writeln!(
            body,
            "container_memory_working_set_bytes{{{}}} {} {ts}",
            labels(c),
            go_float(c.memory_bytes as f64)
        );
    }
    let _ = writeln!(body, "# HELP container_start_time_seconds [STABLE] Start time of the container since unix epoch in seconds");
    let _ = writeln!(body, "# TYPE container_start_time_seconds gauge");
    for c in &containers {
        let _ = writeln!(
            body,
            "container_start_time_seconds{{{}}} {}",
            labels(c),
            go_float(c.start_time_seconds)
        );
    }
    let _ = writeln!(body, "# HELP container_swap_usage_bytes [ALPHA] Current amount of the container swap usage in bytes. Reported only on non-windows systems");
    let _ = writeln!(body, "# TYPE container_swap_usage_bytes gauge");
    for c in &containers {
        let _ = writeln!(body, "container_swap_usage_bytes{{{}}} 0 {ts}", labels(c));
    }
    let _ = writeln!(body, "# HELP node_cpu_usage_seconds_total [STABLE] Cumulative cpu time consumed by the node in core-seconds");
    let _ = writeln!(body, "# TYPE node_cpu_usage_seconds_total counter");
    let _ = writeln!(
        body,
        "node_cpu_usage_seconds_total 357354.912345 {}",
        ts - 2_403
    );
    let _ = writeln!(
        body,
        "# HELP node_memory_working_set_bytes [STABLE] Current working set of the node in bytes"
    );
    let _ = writeln!(body, "# TYPE node_memory_working_set_bytes gauge");
    let _ = writeln!(
        body,
        "node_memory_working_set_bytes 1.616273408e+09 {}",
        ts - 2_403
    );
    let _ = writeln!(body, "# HELP node_swap_usage_bytes [ALPHA] Current swap usage of the node in bytes. Reported only on non-windows systems");
    let _ = writeln!(body, "# TYPE node_swap_usage_bytes gauge");
    let _ = writeln!(body, "node_swap_usage_bytes 0 {}", ts - 2_403);
    let mut pods_seen: Vec<(&str, &str)> = containers
        .iter()
        .map(|c| (c.namespace.as_str(), c.pod.as_str()))
        .collect();
    pods_seen.sort_unstable();
    pods_seen.dedup();
    let _ = writeln!(body, "# HELP pod_cpu_usage_seconds_total [STABLE] Cumulative cpu time consumed by the pod in core-seconds");
    let _ = writeln!(body, "# TYPE pod_cpu_usage_seconds_total counter");
    for (namespace, pod) in &pods_seen {
        let _ = writeln!(
            body,
            "pod_cpu_usage_seconds_total{{namespace=\"{namespace}\",pod=\"{pod}\"}} 1234.5678 {ts}"
        );
    }
    let _ = writeln!(
        body,
        "# HELP pod_memory_working_set_bytes [STABLE] Current working set of the pod in bytes"
    );
    let _ = writeln!(body, "# TYPE pod_memory_working_set_bytes gauge");
    for (namespace, pod) in &pods_seen {
        let _ = writeln!(body, "pod_memory_working_set_bytes{{namespace=\"{namespace}\",pod=\"{pod}\"}} 4.5056e+07 {ts}");
    }
    let _ = writeln!(body, "# HELP resource_scrape_error [STABLE] 1 if there was an error while getting container metrics, 0 otherwise");
    let _ = writeln!(body, "# TYPE resource_scrape_error gauge");
    let _ = writeln!(body, "resource_scrape_error 0");
    body.into_bytes()
}
