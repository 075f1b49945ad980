//! Names, shapes and usage profiles of the simulated workloads, drawn deterministically from a seed.
//!
//! Produces pods the way a real cluster names them: DaemonSet pods (`kube-proxy-x7k2p`), Deployment
//! pods with a ReplicaSet hash (`frontend-6f895b7f8f-px6zk`) and StatefulSet pods with ordinals
//! (`postgres-3`). Owns no state but the StatefulSet ordinal counters; does no I/O.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use super::sim::{mix, unit, ContainerSim, NodeLayout, PodSim, Profile};

/// How a pod is owned, which decides its name and labels.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    DaemonSet,
    Deployment,
    StatefulSet,
}

/// A workload pods are drawn from.
#[derive(Clone, Copy, Debug)]
pub struct Workload {
    pub namespace: &'static str,
    pub name: &'static str,
    pub kind: Kind,
    pub containers: &'static [&'static str],
}

/// DaemonSets run once on every node, in this order, before any other pod.
pub const DAEMONSETS: &[Workload] = &[
    Workload {
        namespace: "kube-system",
        name: "kube-proxy",
        kind: Kind::DaemonSet,
        containers: &["kube-proxy"],
    },
    Workload {
        namespace: "kube-system",
        name: "ebs-csi-node",
        kind: Kind::DaemonSet,
        containers: &["ebs-plugin", "node-driver-registrar", "liveness-probe"],
    },
    Workload {
        namespace: "logging",
        name: "fluent-bit",
        kind: Kind::DaemonSet,
        containers: &["fluent-bit"],
    },
];

/// Everything else, spread over the nodes.
pub const WORKLOADS: &[Workload] = &[
    w("kube-system", "coredns", Kind::Deployment, &["coredns"]),
    w("default", "nginx", Kind::Deployment, &["nginx"]),
    w(
        "shop",
        "frontend",
        Kind::Deployment,
        &["frontend", "istio-proxy"],
    ),
    w("shop", "cart", Kind::Deployment, &["cart", "istio-proxy"]),
    w(
        "shop",
        "checkout",
        Kind::Deployment,
        &["checkout", "istio-proxy"],
    ),
    w(
        "shop",
        "payments",
        Kind::Deployment,
        &["payments", "istio-proxy", "log-shipper"],
    ),
    w("shop", "catalog", Kind::Deployment, &["catalog"]),
    w(
        "api",
        "gateway",
        Kind::Deployment,
        &["gateway", "istio-proxy"],
    ),
    w("api", "auth", Kind::Deployment, &["auth"]),
    w("api", "users", Kind::Deployment, &["users", "istio-proxy"]),
    w(
        "data",
        "postgres",
        Kind::StatefulSet,
        &["postgres", "metrics-exporter"],
    ),
    w("data", "redis", Kind::StatefulSet, &["redis"]),
    w(
        "data",
        "kafka",
        Kind::StatefulSet,
        &["kafka", "jmx-exporter"],
    ),
    w(
        "search",
        "elasticsearch",
        Kind::StatefulSet,
        &["elasticsearch"],
    ),
    w(
        "monitoring",
        "prometheus",
        Kind::StatefulSet,
        &["prometheus", "config-reloader"],
    ),
    w("monitoring", "grafana", Kind::Deployment, &["grafana"]),
    w(
        "ingress-nginx",
        "ingress-nginx-controller",
        Kind::Deployment,
        &["controller"],
    ),
    w(
        "cert-manager",
        "cert-manager",
        Kind::Deployment,
        &["cert-manager-controller"],
    ),
    w("batch", "report-worker", Kind::Deployment, &["worker"]),
];

const fn w(
    namespace: &'static str,
    name: &'static str,
    kind: Kind,
    containers: &'static [&'static str],
) -> Workload {
    Workload {
        namespace,
        name,
        kind,
        containers,
    }
}

/// The alphabet Kubernetes uses for generated name suffixes (no vowels, no look-alikes).
const ALPHANUMS: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";

fn suffix(mut x: u64, len: usize) -> String {
    let mut s = String::with_capacity(len);
    for _ in 0..len {
        s.push(ALPHANUMS[(x % ALPHANUMS.len() as u64) as usize] as char);
        x /= ALPHANUMS.len() as u64;
    }
    s
}

/// A pod drawn for a node, with what the API stand-in needs to present it.
#[derive(Clone, Debug)]
pub struct DrawnPod {
    pub sim: PodSim,
    pub labels: BTreeMap<String, String>,
    pub kind: Kind,
}

/// Draws nodes and pods from a seed.
pub struct Generator {
    seed: u64,
    /// The fleet's reference instant, unix nanoseconds: boot and start times lie before it.
    epoch_ns: i64,
    sample_period_ms: i64,
    /// Next ordinal per StatefulSet; std Mutex: held for one increment, never across an await.
    ordinals: Mutex<HashMap<&'static str, u32>>,
}

const NS_PER_S: i64 = 1_000_000_000;

impl Generator {
    pub fn new(seed: u64, epoch_ns: i64, sample_period_ms: i64) -> Self {
        Generator {
            seed,
            epoch_ns,
            sample_period_ms,
            ordinals: Mutex::new(HashMap::new()),
        }
    }

    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// A node's layout without pods: boot time 1-30 days before the epoch, its own overhead.
    pub fn node_base(&self, index: u64) -> NodeLayout {
        let h = |k: u64| mix(self.seed, &[1, index, k]);
        let days = 1.0 + 29.0 * unit(h(1));
        NodeLayout {
            pods: Vec::new(),
            boot_ns: self.epoch_ns - (days * 86_400.0 * 1e9) as i64,
            overhead_cores: 0.05 + 0.15 * unit(h(2)),
            system_memory: ((600.0 + 600.0 * unit(h(3))) as u64) << 20,
            retired_cpu_ns: 0,
            phase_ms: (h(4) % 10_000) as i64,
            sample_period_ms: self.sample_period_ms,
        }
    }

    /// The workload for pod slot `slot` of node `index`; `salt` redraws after a name collision.
    fn workload(&self, index: u64, slot: u64, salt: u64) -> &'static Workload {
        if (slot as usize) < DAEMONSETS.len() && salt == 0 {
            return &DAEMONSETS[slot as usize];
        }
        let pick = mix(self.seed, &[2, index, slot, salt]) % WORKLOADS.len() as u64;
        &WORKLOADS[pick as usize]
    }

    /// Draws pod `slot` of node `index`, started at `start_ns` or, when `None`,
    /// some time between the node's boot and the epoch.
    pub fn pod(
        &self,
        index: u64,
        node: &NodeLayout,
        slot: u64,
        salt: u64,
        start_ns: Option<i64>,
    ) -> DrawnPod {
        let wl = self.workload(index, slot, salt);
        let h = |k: u64| mix(self.seed, &[3, index, slot, salt, k]);
        let mut labels = BTreeMap::new();
        labels.insert("app.kubernetes.io/name".to_owned(), wl.name.to_owned());
        let name = match wl.kind {
            Kind::DaemonSet => {
                labels.insert(
                    "controller-revision-hash".to_owned(),
                    suffix(mix(self.seed, &[4, wl.name.len() as u64]), 10),
                );
                format!("{}-{}", wl.name, suffix(h(1), 5))
            }
            Kind::Deployment => {
                // Every replica of a Deployment shares its ReplicaSet's hash.
                let rs = suffix(mix(self.seed, &[5, fnv(wl.name)]), 10);
                labels.insert("pod-template-hash".to_owned(), rs.clone());
                format!("{}-{}-{}", wl.name, rs, suffix(h(1), 5))
            }
            Kind::StatefulSet => {
                let ordinal = {
                    let mut ordinals = self.ordinals.lock().unwrap_or_else(|e| e.into_inner());
                    let next = ordinals.entry(wl.name).or_insert(0);
                    *next += 1;
                    *next - 1
                };
                let name = format!("{}-{}", wl.name, ordinal);
                labels.insert(
                    "statefulset.kubernetes.io/pod-name".to_owned(),
                    name.clone(),
                );
                name
            }
        };
        let start_ns = start_ns.unwrap_or_else(|| {
            let span = (self.epoch_ns - node.boot_ns - 60 * NS_PER_S).max(NS_PER_S);
            node.boot_ns + 30 * NS_PER_S + (h(2) % span as u64) as i64
        });
        let containers = wl
            .containers
            .iter()
            .enumerate()
            .map(|(ci, cname)| {
                // Containers of one pod start within a second of each other.
                let skew = (h(10 + ci as u64) % 900_000_000) as i64;
                self.container(index, &name, cname, ci as u64, start_ns + skew)
            })
            .collect();
        DrawnPod {
            sim: PodSim {
                namespace: wl.namespace.to_owned(),
                name,
                containers,
            },
            labels,
            kind: wl.kind,
        }
    }

    /// Draws a container's profile and memory; `start_ns` is its start time.
    pub fn container(
        &self,
        index: u64,
        pod: &str,
        name: &str,
        ci: u64,
        start_ns: i64,
    ) -> ContainerSim {
        let key = fnv(pod) ^ fnv(name).rotate_left(17);
        let h = |k: u64| mix(self.seed, &[6, index, key, ci, k]);
        let roll = unit(h(1));
        let (profile, memory_base) = if roll < 0.5 {
            (
                Profile::Idle {
                    cores: 0.001 + 0.004 * unit(h(2)),
                },
                (5.0 + 35.0 * unit(h(3))) * 1048576.0,
            )
        } else if roll < 0.85 {
            (
                Profile::Steady {
                    cores: 0.005 + 0.245 * unit(h(2)),
                },
                (50.0 + 750.0 * unit(h(3))) * 1048576.0,
            )
        } else {
            let base = 0.01 + 0.04 * unit(h(2));
            (
                Profile::Spiky {
                    base,
                    peak: 0.2 + 0.8 * unit(h(4)),
                    period: 30.0 + 270.0 * unit(h(5)),
                },
                (100.0 + 400.0 * unit(h(3))) * 1048576.0,
            )
        };
        ContainerSim {
            name: name.to_owned(),
            start_ns,
            profile,
            memory_base: memory_base as u64,
            memory_wobble: (memory_base * 0.05) as u64,
            memory_period: 60.0 + 540.0 * unit(h(6)),
            phase_ms: (h(7) % 10_000) as i64,
        }
    }
}

/// FNV-1a, to turn names into seed parts.
pub fn fnv(s: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in s.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// A UUID-shaped identifier drawn from a seed.
pub fn uid(seed: u64, parts: &[u64]) -> String {
    let a = mix(seed, parts);
    let b = mix(a, parts);
    format!(
        "{:08x}-{:04x}-4{:03x}-{:04x}-{:012x}",
        a >> 32,
        (a >> 16) & 0xffff,
        a & 0xfff,
        0x8000 | (b >> 48 & 0x3fff),
        b & 0xffff_ffff_ffff
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_draws_the_same_pods_and_another_seed_does_not() {
        let epoch = 1_750_000_000 * NS_PER_S;
        let names = |seed| {
            let g = Generator::new(seed, epoch, 0);
            let base = g.node_base(3);
            (0..30)
                .map(|slot| g.pod(3, &base, slot, 0, None).sim.name)
                .collect::<Vec<_>>()
        };
        assert_eq!(names(7), names(7));
        assert_ne!(names(7), names(8));
    }

    #[test]
    fn deployment_pods_look_like_real_ones() {
        let g = Generator::new(1, 1_750_000_000 * NS_PER_S, 0);
        let base = g.node_base(0);
        let first = g.pod(0, &base, 0, 0, None);
        assert!(first.sim.name.starts_with("kube-proxy-"));
        assert_eq!(first.sim.namespace, "kube-system");
        let pods: Vec<_> = (3..40).map(|s| g.pod(0, &base, s, 0, None)).collect();
        let dep = pods
            .iter()
            .find(|p| p.kind == Kind::Deployment)
            .expect("some deployment pod");
        let parts: Vec<&str> = dep.sim.name.rsplitn(3, '-').collect();
        assert_eq!(parts[0].len(), 5);
        assert_eq!(parts[1].len(), 10);
        assert_eq!(dep.labels["pod-template-hash"], parts[1]);
        for p in &pods {
            assert!((1..=3).contains(&p.sim.containers.len()));
            for c in &p.sim.containers {
                assert!(c.start_ns > base.boot_ns);
            }
        }
    }
}
