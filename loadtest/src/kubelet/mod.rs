//! The simulated kubelets: one [`KubeletNode`] per node, all served by a few sockets.
//!
//! Owns what each kubelet reports (`sim`, `workload`), how it prints it (`body`), how it
//! misbehaves (`fault`), its TLS identity (`tls`) and the HTTP serving (`server`). It records what
//! every node served last so tests can compute exactly what a metrics server must show. It does not
//! decide which nodes exist: the fleet does, and tells the cluster.

pub mod addr;
pub mod body;
pub mod fault;
pub mod server;
pub mod sim;
pub mod tls;
pub mod workload;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};

use rustls::ServerConfig;
use tokio_util::sync::CancellationToken;

use body::Template;
use fault::Fault;
use sim::{NodeLayout, Point};

/// A layout with its rendered template: what a node serves until the next churn.
#[derive(Debug)]
pub struct Rendered {
    pub layout: NodeLayout,
    pub template: Template,
}

impl Rendered {
    pub fn new(layout: NodeLayout) -> Arc<Self> {
        let template = Template::new(&layout);
        Arc::new(Rendered { layout, template })
    }
}

/// A served body, kept as the layout and instant it was rendered from (a few words, not the values).
#[derive(Clone, Debug)]
struct Record {
    rendered: Arc<Rendered>,
    t_ms: i64,
}

/// Per-node traffic counters.
#[derive(Debug, Default)]
pub struct NodeCounters {
    /// TLS handshakes completed.
    pub connections: AtomicU64,
    /// Requests received, whatever the answer.
    pub requests: AtomicU64,
    /// Complete, valid `/metrics/resource` bodies sent.
    pub bodies: AtomicU64,
}

/// A snapshot of a node's counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    pub connections: u64,
    pub requests: u64,
    pub bodies: u64,
}

/// One container's sample as a served body showed it.
#[derive(Clone, Debug, PartialEq)]
pub struct ServedContainer {
    pub namespace: String,
    pub pod: String,
    pub container: String,
    /// Cumulative CPU in nanocore-seconds; the body printed `cpu_ns / 1e9` core-seconds.
    pub point: Point,
    /// Start time, unix nanoseconds; the body printed `start_ns / 1e9` seconds.
    pub start_ns: i64,
}

/// Everything one served body showed.
#[derive(Clone, Debug, PartialEq)]
pub struct ServedSample {
    /// The instant the samples were taken for, unix milliseconds (request time plus any skew).
    pub t_ms: i64,
    pub node: Point,
    pub containers: Vec<ServedContainer>,
}

impl ServedSample {
    pub fn container(
        &self,
        namespace: &str,
        pod: &str,
        container: &str,
    ) -> Option<&ServedContainer> {
        self.containers
            .iter()
            .find(|c| c.namespace == namespace && c.pod == pod && c.container == container)
    }
}

/// The last two bodies a node served.
#[derive(Clone, Debug, PartialEq)]
pub struct ServedHistory {
    pub previous: Option<ServedSample>,
    pub last: ServedSample,
}

impl ServedHistory {
    /// The node's CPU rate between the two bodies, nanocores, as `(last - prev) / window`.
    pub fn node_cpu_nanocores(&self) -> Option<u64> {
        let prev = self.previous.as_ref()?;
        rate(&prev.node, &self.last.node)
    }

    /// A container's CPU rate between the two bodies, nanocores; `None` if it was not in both,
    /// restarted in between, or no time passed between its samples.
    pub fn container_cpu_nanocores(
        &self,
        namespace: &str,
        pod: &str,
        container: &str,
    ) -> Option<u64> {
        let prev = self
            .previous
            .as_ref()?
            .container(namespace, pod, container)?;
        let last = self.last.container(namespace, pod, container)?;
        if prev.start_ns != last.start_ns {
            return None;
        }
        rate(&prev.point, &last.point)
    }
}

fn rate(prev: &Point, last: &Point) -> Option<u64> {
    let window_ms = last.timestamp_ms.checked_sub(prev.timestamp_ms)?;
    if window_ms <= 0 || last.cpu_ns < prev.cpu_ns {
        return None;
    }
    Some(((last.cpu_ns - prev.cpu_ns) as u128 * 1000 / window_ms as u128) as u64)
}

fn sample_of(record: &Record) -> ServedSample {
    let layout = &record.rendered.layout;
    let e = layout.evaluate(record.t_ms);
    let mut containers = Vec::with_capacity(e.containers.len());
    let mut flat = 0;
    for pod in &layout.pods {
        for c in &pod.containers {
            if let Some(point) = e.containers.get(flat) {
                containers.push(ServedContainer {
                    namespace: pod.namespace.clone(),
                    pod: pod.name.clone(),
                    container: c.name.clone(),
                    point: *point,
                    start_ns: c.start_ns,
                });
            }
            flat += 1;
        }
    }
    ServedSample {
        t_ms: record.t_ms,
        node: e.node,
        containers,
    }
}

/// One simulated kubelet.
#[derive(Debug)]
pub struct KubeletNode {
    pub index: u64,
    pub name: String,
    /// Where it listens (address and port the metrics server dials).
    pub addr: SocketAddr,
    /// std Mutex, not tokio's: each section swaps or clones an `Arc` and never awaits.
    rendered: Mutex<Arc<Rendered>>,
    tls: Mutex<Arc<ServerConfig>>,
    fault: Mutex<Option<Fault>>,
    /// The last two served bodies, newest last.
    history: Mutex<(Option<Record>, Option<Record>)>,
    /// Next pod slot for drawing new pods.
    next_slot: AtomicU64,
    pub counters: NodeCounters,
    /// Cancelled when the node is removed: its connections close and hung requests end.
    pub gone: CancellationToken,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Sections only swap values; a panic in one leaves a usable value behind.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Unix time now, milliseconds.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Unix time now, nanoseconds.
pub fn now_ns() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0)
}

impl KubeletNode {
    pub fn new(
        index: u64,
        name: String,
        addr: SocketAddr,
        rendered: Arc<Rendered>,
        tls: Arc<ServerConfig>,
        fault: Option<Fault>,
        next_slot: u64,
    ) -> Self {
        KubeletNode {
            index,
            name,
            addr,
            rendered: Mutex::new(rendered),
            tls: Mutex::new(tls),
            fault: Mutex::new(fault),
            history: Mutex::new((None, None)),
            next_slot: AtomicU64::new(next_slot),
            counters: NodeCounters::default(),
            gone: CancellationToken::new(),
        }
    }

    pub fn rendered(&self) -> Arc<Rendered> {
        lock(&self.rendered).clone()
    }

    /// Replaces what the node serves; `change` edits a copy of the current layout.
    pub fn update_layout<R>(&self, change: impl FnOnce(&mut NodeLayout) -> R) -> R {
        let mut guard = lock(&self.rendered);
        let mut layout = guard.layout.clone();
        let out = change(&mut layout);
        *guard = Rendered::new(layout);
        out
    }

    pub fn tls_config(&self) -> Arc<ServerConfig> {
        lock(&self.tls).clone()
    }

    pub fn set_tls_config(&self, config: Arc<ServerConfig>) {
        *lock(&self.tls) = config;
    }

    pub fn fault(&self) -> Option<Fault> {
        *lock(&self.fault)
    }

    pub fn set_fault(&self, fault: Option<Fault>) {
        *lock(&self.fault) = fault;
    }

    pub fn take_slot(&self) -> u64 {
        self.next_slot.fetch_add(1, Ordering::Relaxed)
    }

    /// Notes that a complete body rendered from `rendered` at `t_ms` went out.
    fn record(&self, rendered: Arc<Rendered>, t_ms: i64) {
        let mut h = lock(&self.history);
        let prev = h.1.take();
        *h = (prev, Some(Record { rendered, t_ms }));
        self.counters.bodies.fetch_add(1, Ordering::Relaxed);
    }

    /// The last two bodies this node served, recomputed exactly from their layouts and instants.
    pub fn served(&self) -> Option<ServedHistory> {
        let (prev, last) = lock(&self.history).clone();
        let last = last?;
        Some(ServedHistory {
            previous: prev.as_ref().map(sample_of),
            last: sample_of(&last),
        })
    }

    pub fn counts(&self) -> Counts {
        Counts {
            connections: self.counters.connections.load(Ordering::Relaxed),
            requests: self.counters.requests.load(Ordering::Relaxed),
            bodies: self.counters.bodies.load(Ordering::Relaxed),
        }
    }
}
