//! The `/metrics/resource` body: a template rendered once per layout, with numeric slots filled
//! per request.
//!
//! The text follows the kubelet's exposition byte for byte: families in name order, each with its
//! `# HELP`/`# TYPE` lines, series sorted by label values, numbers printed the way Go's
//! `strconv.FormatFloat(v, 'g', -1, 64)` prints them (`2.642427904e+09`, `6197.005020909`) and
//! millisecond timestamps. Because those numbers vary in width, slots are not patched in place:
//! a request copies the static pieces and formats the numbers between them into one buffer, one
//! pass with no per-line allocation. Nothing here does I/O.

use std::io::Write as _;

use bytes::{BufMut, Bytes, BytesMut};

use super::sim::{Evaluated, NodeLayout};

/// What goes into a slot between two static pieces.
#[derive(Clone, Copy, Debug)]
enum Slot {
    ContainerCpu(usize),
    ContainerMemory(usize),
    ContainerTimestamp(usize),
    NodeCpu,
    NodeMemory,
    NodeTimestamp,
    PodCpu(usize),
    PodMemory(usize),
    PodTimestamp(usize),
}

/// A rendered-once body with slots.
///
/// ## Memory
/// One contiguous buffer of static text per node (about 22 KB at 30 pods) plus 8 bytes per slot:
/// per-piece allocations would add ~15 KB of headers per node at 10,000 nodes.
#[derive(Debug)]
pub struct Template {
    /// All static text, slots removed.
    text: Bytes,
    /// `slots[i]` goes at offset `cuts[i]` of `text`, after the text before it.
    cuts: Vec<u32>,
    slots: Vec<Slot>,
}

const HELP_CONTAINER_CPU: &str = "# HELP container_cpu_usage_seconds_total [STABLE] Cumulative cpu time consumed by the container in core-seconds\n# TYPE container_cpu_usage_seconds_total counter\n";
const HELP_CONTAINER_MEMORY: &str = "# HELP container_memory_working_set_bytes [STABLE] Current working set of the container in bytes\n# TYPE container_memory_working_set_bytes gauge\n";
const HELP_CONTAINER_START: &str = "# HELP container_start_time_seconds [STABLE] Start time of the container since unix epoch in seconds\n# TYPE container_start_time_seconds gauge\n";
const HELP_NODE_CPU: &str = "# HELP node_cpu_usage_seconds_total [STABLE] Cumulative cpu time consumed by the node in core-seconds\n# TYPE node_cpu_usage_seconds_total counter\n";
const HELP_NODE_MEMORY: &str = "# HELP node_memory_working_set_bytes [STABLE] Current working set of the node in bytes\n# TYPE node_memory_working_set_bytes gauge\n";
const HELP_POD_CPU: &str = "# HELP pod_cpu_usage_seconds_total [STABLE] Cumulative cpu time consumed by the pod in core-seconds\n# TYPE pod_cpu_usage_seconds_total counter\n";
const HELP_POD_MEMORY: &str = "# HELP pod_memory_working_set_bytes [STABLE] Current working set of the pod in bytes\n# TYPE pod_memory_working_set_bytes gauge\n";
const TAIL: &str = "# HELP resource_scrape_error [STABLE] 1 if there was an error while getting container metrics, 0 otherwise\n# TYPE resource_scrape_error gauge\nresource_scrape_error 0\n# HELP scrape_error [ALPHA] 1 if there was an error while getting container metrics, 0 otherwise\n# TYPE scrape_error gauge\nscrape_error 0\n";

struct Builder {
    text: String,
    cuts: Vec<u32>,
    slots: Vec<Slot>,
}

impl Builder {
    fn text(&mut self, s: &str) {
        self.text.push_str(s);
    }

    fn slot(&mut self, slot: Slot) {
        // Bodies stay far below 4 GiB (110 pods of a few containers make ~100 KB).
        self.cuts.push(self.text.len() as u32);
        self.slots.push(slot);
    }

    fn finish(mut self) -> Template {
        self.text.shrink_to_fit();
        self.cuts.shrink_to_fit();
        self.slots.shrink_to_fit();
        Template {
            text: Bytes::from(self.text),
            cuts: self.cuts,
            slots: self.slots,
        }
    }
}

impl Template {
    /// Renders the static parts of a layout's body.
    pub fn new(layout: &NodeLayout) -> Self {
        // Container series are sorted by (container, namespace, pod), the order of their label
        // values, as the kubelet's registry emits them.
        let mut containers: Vec<(usize, &str, &str, &str, i64)> = Vec::new();
        let mut pods: Vec<(usize, &str, &str)> = Vec::new();
        let mut flat = 0;
        for (pi, pod) in layout.pods.iter().enumerate() {
            pods.push((pi, pod.namespace.as_str(), pod.name.as_str()));
            for c in &pod.containers {
                containers.push((
                    flat,
                    c.name.as_str(),
                    pod.namespace.as_str(),
                    pod.name.as_str(),
                    c.start_ns,
                ));
                flat += 1;
            }
        }
        containers.sort_by(|a, b| (a.1, a.2, a.3).cmp(&(b.1, b.2, b.3)));
        pods.sort_by(|a, b| (a.1, a.2).cmp(&(b.1, b.2)));

        let mut b = Builder {
            text: String::with_capacity(4096),
            cuts: Vec::new(),
            slots: Vec::new(),
        };
        let labels = |c: &(usize, &str, &str, &str, i64)| {
            format!(
                "{{container=\"{}\",namespace=\"{}\",pod=\"{}\"}} ",
                c.1, c.2, c.3
            )
        };
        b.text(HELP_CONTAINER_CPU);
        for c in &containers {
            b.text("container_cpu_usage_seconds_total");
            b.text(&labels(c));
            b.slot(Slot::ContainerCpu(c.0));
            b.text(" ");
            b.slot(Slot::ContainerTimestamp(c.0));
            b.text("\n");
        }
        b.text(HELP_CONTAINER_MEMORY);
        for c in &containers {
            b.text("container_memory_working_set_bytes");
            b.text(&labels(c));
            b.slot(Slot::ContainerMemory(c.0));
            b.text(" ");
            b.slot(Slot::ContainerTimestamp(c.0));
            b.text("\n");
        }
        b.text(HELP_CONTAINER_START);
        for c in &containers {
            b.text("container_start_time_seconds");
            b.text(&labels(c));
            b.text(&go_float(start_seconds(c.4)));
            b.text("\n");
        }
        b.text(HELP_NODE_CPU);
        b.text("node_cpu_usage_seconds_total ");
        b.slot(Slot::NodeCpu);
        b.text(" ");
        b.slot(Slot::NodeTimestamp);
        b.text("\n");
        b.text(HELP_NODE_MEMORY);
        b.text("node_memory_working_set_bytes ");
        b.slot(Slot::NodeMemory);
        b.text(" ");
        b.slot(Slot::NodeTimestamp);
        b.text("\n");
        let pod_labels =
            |p: &(usize, &str, &str)| format!("{{namespace=\"{}\",pod=\"{}\"}} ", p.1, p.2);
        b.text(HELP_POD_CPU);
        for p in &pods {
            b.text("pod_cpu_usage_seconds_total");
            b.text(&pod_labels(p));
            b.slot(Slot::PodCpu(p.0));
            b.text(" ");
            b.slot(Slot::PodTimestamp(p.0));
            b.text("\n");
        }
        b.text(HELP_POD_MEMORY);
        for p in &pods {
            b.text("pod_memory_working_set_bytes");
            b.text(&pod_labels(p));
            b.slot(Slot::PodMemory(p.0));
            b.text(" ");
            b.slot(Slot::PodTimestamp(p.0));
            b.text("\n");
        }
        b.text(TAIL);
        b.finish()
    }

    /// The body for the values `e` (from the layout this template was made of).
    pub fn render(&self, e: &Evaluated) -> Bytes {
        // Numbers add at most ~24 bytes per slot.
        let mut out = BytesMut::with_capacity(self.text.len() + self.slots.len() * 24);
        let mut from = 0;
        for (&cut, slot) in self.cuts.iter().zip(&self.slots) {
            let cut = cut as usize;
            out.put_slice(self.text.get(from..cut).unwrap_or_default());
            from = cut;
            // Indices come from the same layout the values were evaluated from; a missing index
            // would be a bug, and prints nothing rather than panicking.
            match *slot {
                Slot::ContainerCpu(i) => {
                    if let Some(p) = e.containers.get(i) {
                        put_go_float(&mut out, cpu_seconds(p.cpu_ns));
                    }
                }
                Slot::ContainerMemory(i) => {
                    if let Some(p) = e.containers.get(i) {
                        put_go_float(&mut out, p.memory as f64);
                    }
                }
                Slot::ContainerTimestamp(i) => {
                    if let Some(p) = e.containers.get(i) {
                        put_int(&mut out, p.timestamp_ms);
                    }
                }
                Slot::NodeCpu => put_go_float(&mut out, cpu_seconds(e.node.cpu_ns)),
                Slot::NodeMemory => put_go_float(&mut out, e.node.memory as f64),
                Slot::NodeTimestamp => put_int(&mut out, e.node.timestamp_ms),
                Slot::PodCpu(i) => {
                    if let Some(p) = e.pods.get(i) {
                        put_go_float(&mut out, cpu_seconds(p.cpu_ns));
                    }
                }
                Slot::PodMemory(i) => {
                    if let Some(p) = e.pods.get(i) {
                        put_go_float(&mut out, p.memory as f64);
                    }
                }
                Slot::PodTimestamp(i) => {
                    if let Some(p) = e.pods.get(i) {
                        put_int(&mut out, p.timestamp_ms);
                    }
                }
            }
        }
        out.put_slice(self.text.get(from..).unwrap_or_default());
        out.freeze()
    }
}

/// The value a CPU counter is printed as: core-seconds.
pub fn cpu_seconds(cpu_ns: u64) -> f64 {
    cpu_ns as f64 / 1e9
}

/// The value a start time is printed as: unix seconds.
pub fn start_seconds(start_ns: i64) -> f64 {
    start_ns as f64 / 1e9
}

fn put_int(out: &mut BytesMut, v: i64) {
    let mut buf = itoa::Buffer::new();
    out.put_slice(buf.format(v).as_bytes());
}

/// Formats like Go's `strconv.FormatFloat(v, 'g', -1, 64)`, which the Prometheus text encoder uses.
pub fn go_float(v: f64) -> String {
    let mut out = BytesMut::new();
    put_go_float(&mut out, v);
    String::from_utf8_lossy(&out).into_owned()
}

fn put_go_float(out: &mut BytesMut, v: f64) {
    if v == 0.0 {
        out.put_slice(b"0");
        return;
    }
    if !v.is_finite() {
        out.put_slice(if v.is_nan() {
            b"NaN"
        } else if v > 0.0 {
            b"+Inf"
        } else {
            b"-Inf"
        });
        return;
    }
    // Rust's `{:e}` prints the shortest round-tripping digits, like Go's shortest mode, as
    // `d.ddddde<exp>`; only the layout differs.
    let mut buf = [0u8; 40];
    let len = {
        let mut cursor = &mut buf[..];
        if write!(cursor, "{v:e}").is_err() {
            return;
        }
        40 - cursor.len()
    };
    let text = &buf[..len];
    let (negative, text) = match text.split_first() {
        Some((b'-', rest)) => (true, rest),
        _ => (false, text),
    };
    let Some(e_at) = text.iter().position(|&b| b == b'e') else {
        return;
    };
    let mut digits = [0u8; 24];
    let mut nd = 0;
    for &b in &text[..e_at] {
        if b.is_ascii_digit() && nd < digits.len() {
            digits[nd] = b;
            nd += 1;
        }
    }
    let digits = &digits[..nd];
    let exp: i32 = std::str::from_utf8(&text[e_at + 1..])
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    if negative {
        out.put_u8(b'-');
    }
    // Go's shortest 'g' switches to exponent form below 1e-4 and from 1e21... with precision 6
    // for the decision, i.e. from 1e6 on.
    if !(-4..6).contains(&exp) {
        out.put_u8(digits[0]);
        if nd > 1 {
            out.put_u8(b'.');
            out.put_slice(&digits[1..]);
        }
        out.put_u8(b'e');
        out.put_u8(if exp < 0 { b'-' } else { b'+' });
        let abs = exp.unsigned_abs();
        if abs < 10 {
            out.put_u8(b'0');
        }
        let mut b = itoa::Buffer::new();
        out.put_slice(b.format(abs).as_bytes());
    } else if exp >= 0 {
        let int_len = exp as usize + 1;
        if nd <= int_len {
            out.put_slice(digits);
            for _ in nd..int_len {
                out.put_u8(b'0');
            }
        } else {
            out.put_slice(&digits[..int_len]);
            out.put_u8(b'.');
            out.put_slice(&digits[int_len..]);
        }
    } else {
        out.put_slice(b"0.");
        for _ in 0..(-exp - 1) {
            out.put_u8(b'0');
        }
        out.put_slice(digits);
    }
}

#[cfg(test)]
mod tests {
    use super::super::sim::{ContainerSim, PodSim, Profile};
    use super::*;

    #[test]
    fn floats_print_like_go() {
        let cases = [
            (6197.005020909, "6197.005020909"),
            (1.137475584e9, "1.137475584e+09"),
            (7.74144e6, "7.74144e+06"),
            (1.7506078418297591e9, "1.7506078418297591e+09"),
            (0.092544, "0.092544"),
            (1000.0, "1000"),
            (100000.0, "100000"),
            (1e6, "1e+06"),
            (0.0001, "0.0001"),
            (0.00001, "1e-05"),
            (0.0, "0"),
            (-2.5, "-2.5"),
            (1e21, "1e+21"),
        ];
        for (v, want) in cases {
            assert_eq!(go_float(v), want, "{v}");
        }
    }

    #[test]
    fn rendered_body_has_every_family_in_kubelet_order() {
        let c = |name: &str| ContainerSim {
            name: name.into(),
            start_ns: 1_750_607_841_829_759_100,
            profile: Profile::Steady { cores: 0.1 },
            memory_base: 20 << 20,
            memory_wobble: 0,
            memory_period: 60.0,
            phase_ms: 0,
        };
        let layout = NodeLayout {
            pods: vec![
                PodSim {
                    namespace: "kube-system".into(),
                    name: "kube-proxy-abcde".into(),
                    containers: vec![c("kube-proxy")],
                },
                PodSim {
                    namespace: "shop".into(),
                    name: "cart-6f895b7f8f-px6zk".into(),
                    containers: vec![c("cart"), c("istio-proxy")],
                },
            ],
            boot_ns: 1_750_000_000_000_000_000,
            overhead_cores: 0.1,
            system_memory: 1 << 30,
            retired_cpu_ns: 0,
            phase_ms: 0,
            sample_period_ms: 0,
        };
        let t = Template::new(&layout);
        let body = t.render(&layout.evaluate(1_750_705_774_670));
        let text = std::str::from_utf8(&body).expect("utf8");
        let families: Vec<&str> = text
            .lines()
            .filter_map(|l| l.strip_prefix("# TYPE "))
            .map(|l| l.split(' ').next().unwrap_or(""))
            .collect();
        assert_eq!(
            families,
            [
                "container_cpu_usage_seconds_total",
                "container_memory_working_set_bytes",
                "container_start_time_seconds",
                "node_cpu_usage_seconds_total",
                "node_memory_working_set_bytes",
                "pod_cpu_usage_seconds_total",
                "pod_memory_working_set_bytes",
                "resource_scrape_error",
                "scrape_error"
            ]
        );
        let cpu_lines: Vec<&str> = text
            .lines()
            .filter(|l| l.starts_with("container_cpu_usage_seconds_total{"))
            .collect();
        assert_eq!(cpu_lines.len(), 3);
        assert!(cpu_lines[0].starts_with("container_cpu_usage_seconds_total{container=\"cart\""));
        assert!(cpu_lines[0].ends_with(" 1750705774670"));
        let start = go_float(start_seconds(1_750_607_841_829_759_100));
        assert!(start.starts_with("1.75060784182975") && start.ends_with("e+09"));
        assert!(text.contains(&format!(
            "container_start_time_seconds{{container=\"kube-proxy\",namespace=\"kube-system\",pod=\"kube-proxy-abcde\"}} {start}\n"
        )));
        assert!(text.ends_with("scrape_error 0\n"));
    }
}
