//! Names, shapes and usage profiles of the simulated workloads, drawn deterministically from a seed.
//!
//! The cluster looks like a large real one: a few DaemonSets on every node, the well-known system
//! and shared workloads (`coredns`, an ingress controller, a shop, databases), and a generated
//! catalogue of many small workloads: one namespace per team (`team-042`), each with a handful of
//! Deployments and the odd StatefulSet (`payments-api`, `orders-postgres`). The catalogue is sized
//! with the cluster ([`Catalogue::new`]: nodes x pods per node), so one Deployment has tens of pods
//! whatever the node count, and an HPA's selection (one namespace, one
//! `app.kubernetes.io/name`) returns tens of pods.
//!
//! Pods are named the way a real cluster names them: DaemonSet pods (`kube-proxy-x7k2p`),
//! Deployment pods with a ReplicaSet hash (`payments-api-6f895b7f8f-px6zk`) and StatefulSet pods
//! with ordinals (`orders-postgres-3`). The initial pods of a cluster are laid out so that every
//! catalogue workload has exactly its replica count; pods added later (churn, new nodes) pick a
//! workload at random. Both the kubelets' bodies and the API stand-in's pods come from the same
//! drawn pod ([`Generator::pod`]), and the harness rebuilds the same catalogue from the case to
//! aim its HPA queries. Owns no state but the StatefulSet ordinal counters of late pods; does no
//! I/O.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Mutex;

use super::sim::{mix, unit, ContainerSim, NodeLayout, PodSim, Profile};

/// How a pod is owned, which decides its name and labels.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    DaemonSet,
    Deployment,
    StatefulSet,
}

/// A fixed workload definition (the DaemonSets and the well-known workloads).
#[derive(Clone, Copy, Debug)]
pub struct WorkloadDef {
    pub namespace: &'static str,
    pub name: &'static str,
    pub kind: Kind,
    pub containers: &'static [&'static str],
}

/// DaemonSets run once on every node, in this order, before any other pod.
pub const DAEMONSETS: &[WorkloadDef] = &[
    w(
        "kube-system",
        "kube-proxy",
        Kind::DaemonSet,
        &["kube-proxy"],
    ),
    w(
        "kube-system",
        "ebs-csi-node",
        Kind::DaemonSet,
        &["ebs-plugin", "node-driver-registrar", "liveness-probe"],
    ),
    w("logging", "fluent-bit", Kind::DaemonSet, &["fluent-bit"]),
];

/// The system and shared workloads every cluster of this kind runs; first in the catalogue.
pub const WELL_KNOWN: &[WorkloadDef] = &[
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
) -> WorkloadDef {
    WorkloadDef {
        namespace,
        name,
        kind,
        containers,
    }
}

/// Business domains the generated workloads are named after.
const DOMAINS: &[&str] = &[
    "payments",
    "orders",
    "checkout",
    "inventory",
    "search",
    "catalog",
    "billing",
    "accounts",
    "notifications",
    "shipping",
    "pricing",
    "reviews",
    "recommendations",
    "identity",
    "ledger",
    "fraud",
    "media",
    "reports",
    "analytics",
    "messaging",
    "loyalty",
    "returns",
    "invoices",
    "quotes",
    "warehouse",
    "fulfillment",
    "profiles",
    "sessions",
    "ads",
    "geo",
];

/// What a generated Deployment does: the second half of its name.
const DEPLOYMENT_ROLES: &[&str] = &[
    "api",
    "worker",
    "web",
    "grpc",
    "consumer",
    "scheduler",
    "gateway",
    "sync",
    "indexer",
    "importer",
    "exporter",
    "webhook",
];

/// What a generated StatefulSet stores: the second half of its name.
const STATEFUL_ROLES: &[&str] = &[
    "postgres",
    "redis",
    "kafka",
    "zookeeper",
    "etcd",
    "rabbitmq",
];

/// Fewest and most pods of a generated or well-known Deployment in the initial layout, before
/// the remainder of the cluster's slots (less than the minimum) is spread one pod each over the
/// last workloads: with at least as many workloads as that, it adds at most one.
pub const DEPLOYMENT_REPLICAS: (u64, u64) = (10, 60);
/// Fewest and most pods of a StatefulSet in the initial layout (likewise).
pub const STATEFULSET_REPLICAS: (u64, u64) = (3, 15);
/// Fewest and most workloads in a generated namespace.
const WORKLOADS_PER_NAMESPACE: (u64, u64) = (2, 12);
/// Share of generated workloads that are StatefulSets.
const STATEFUL_SHARE: f64 = 0.12;

/// A workload of the cluster, with the pods it has in the initial layout.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Workload {
    pub namespace: String,
    pub name: String,
    pub kind: Kind,
    pub containers: Vec<String>,
    /// Pods in the initial layout (DaemonSets: one per node, counted as 0 here).
    pub replicas: u64,
}

impl Workload {
    fn from_def(def: &WorkloadDef, replicas: u64) -> Workload {
        Workload {
            namespace: def.namespace.to_owned(),
            name: def.name.to_owned(),
            kind: def.kind,
            containers: def.containers.iter().map(|c| (*c).to_owned()).collect(),
            replicas,
        }
    }

    /// The label selector its controller (and an HPA aimed at it) selects its pods with.
    pub fn selector(&self) -> String {
        format!("app.kubernetes.io/name={}", self.name)
    }
}

/// Every workload of a cluster sized `nodes x pods_per_node`, and where its initial pods go.
///
/// Pod slot `slot` of node `index` (past the DaemonSets) is the cluster-wide position
/// `(slot - daemonsets) * nodes + index`: consecutive positions are on different nodes, so a
/// workload's replicas spread over as many nodes as it has pods (up to the node count), the way
/// a scheduler with topology spreading places them. Workloads take consecutive positions.
#[derive(Clone, Debug)]
pub struct Catalogue {
    daemonsets: Vec<Workload>,
    /// Deployments and StatefulSets, in layout order: well-known first, then the generated.
    scalable: Vec<Workload>,
    /// `starts[i]`: the first position of `scalable[i]`; ascending.
    starts: Vec<u64>,
    nodes: u64,
    pods_per_node: u64,
}

impl Catalogue {
    /// The catalogue of a cluster of `nodes` nodes with `pods_per_node` pods each, from `seed`.
    pub fn new(seed: u64, nodes: u64, pods_per_node: u64) -> Catalogue {
        let ds = DAEMONSETS.len() as u64;
        let slots = nodes.saturating_mul(pods_per_node.saturating_sub(ds));
        let mut scalable: Vec<Workload> = Vec::new();
        let mut remaining = slots;
        let mut spread_remainder = false;
        // Well-known workloads first; none is left out, even with no slot for it, so a tiny
        // cluster still has something for late pods and HPA queries to aim at.
        for (i, def) in WELL_KNOWN.iter().enumerate() {
            let want = replicas(seed, def.kind, &[10, i as u64]);
            let take = fit(want, def.kind, &mut remaining, scalable.is_empty());
            if take.is_none() && remaining > 0 {
                spread_remainder = true;
            }
            scalable.push(Workload::from_def(def, take.unwrap_or(0)));
        }
        let mut team = 0u64;
        while remaining > 0 && !spread_remainder {
            team += 1;
            let namespace = format!("team-{team:03}");
            let h = |k: u64| mix(seed, &[11, team, k]);
            let (lo, hi) = WORKLOADS_PER_NAMESPACE;
            let count = lo + h(0) % (hi - lo + 1);
            let mut taken = HashSet::new();
            for j in 0..count {
                let hj = |k: u64| mix(seed, &[12, team, j, k]);
                let kind = if unit(hj(0)) < STATEFUL_SHARE {
                    Kind::StatefulSet
                } else {
                    Kind::Deployment
                };
                let name = workload_name(kind, &mut taken, hj);
                let want = replicas(seed, kind, &[13, team, j]);
                match fit(want, kind, &mut remaining, false) {
                    Some(take) => {
                        let containers = generated_containers(kind, &name, hj);
                        scalable.push(Workload {
                            namespace: namespace.clone(),
                            name,
                            kind,
                            containers,
                            replicas: take,
                        });
                    }
                    None => {
                        spread_remainder = true;
                        break;
                    }
                }
                if remaining == 0 {
                    break;
                }
            }
        }
        // What is left is smaller than the next workload's minimum: one more pod each for the
        // last workloads with pods (the remainder is below that minimum, so none gets two).
        let placed: Vec<usize> = (0..scalable.len())
            .filter(|&i| scalable[i].replicas > 0)
            .collect();
        let mut turn = placed.iter().rev().cycle();
        while remaining > 0 {
            match turn.next() {
                Some(&i) => scalable[i].replicas += 1,
                None => break,
            }
            remaining -= 1;
        }
        let mut starts = Vec::with_capacity(scalable.len());
        let mut at = 0u64;
        for wl in &scalable {
            starts.push(at);
            at += wl.replicas;
        }
        Catalogue {
            daemonsets: DAEMONSETS
                .iter()
                .map(|d| Workload::from_def(d, 0))
                .collect(),
            scalable,
            starts,
            nodes,
            pods_per_node,
        }
    }

    /// The DaemonSets, in slot order.
    pub fn daemonsets(&self) -> &[Workload] {
        &self.daemonsets
    }

    /// Every Deployment and StatefulSet, well-known first. Only a cluster too small for every
    /// well-known workload has some with no initial pod.
    pub fn scalable(&self) -> &[Workload] {
        &self.scalable
    }

    /// The workloads an HPA may target: every Deployment and StatefulSet with pods.
    pub fn hpa_targets(&self) -> impl Iterator<Item = &Workload> {
        self.scalable.iter().filter(|w| w.replicas > 0)
    }

    /// Distinct namespaces of the scalable workloads.
    pub fn namespace_count(&self) -> usize {
        self.scalable
            .iter()
            .map(|w| w.namespace.as_str())
            .collect::<HashSet<_>>()
            .len()
    }

    /// The workload and replica ordinal of an initial pod slot; `None` for DaemonSet slots, late
    /// pods and nodes beyond the initial count.
    fn placed(&self, index: u64, slot: u64) -> Option<(usize, u64)> {
        let ds = DAEMONSETS.len() as u64;
        if index >= self.nodes || slot < ds || slot >= self.pods_per_node {
            return None;
        }
        let position = (slot - ds) * self.nodes + index;
        let i = self
            .starts
            .partition_point(|&s| s <= position)
            .checked_sub(1)?;
        let wl = self.scalable.get(i)?;
        let ordinal = position - self.starts[i];
        (ordinal < wl.replicas).then_some((i, ordinal))
    }
}

/// Replicas drawn for a workload: Deployments skewed toward the small end of their range.
fn replicas(seed: u64, kind: Kind, parts: &[u64]) -> u64 {
    let u = unit(mix(seed, parts));
    match kind {
        Kind::Deployment => {
            let (lo, hi) = DEPLOYMENT_REPLICAS;
            (lo + ((hi - lo + 1) as f64 * u * u) as u64).min(hi)
        }
        Kind::StatefulSet => {
            let (lo, hi) = STATEFULSET_REPLICAS;
            (lo + ((hi - lo + 1) as f64 * u) as u64).min(hi)
        }
        Kind::DaemonSet => 0,
    }
}

/// Takes `want` pods from `remaining`, or what is left when that is at least the kind's minimum
/// (or `first`: the only workload of a tiny cluster takes whatever there is); `None` when the
/// rest is too small for this workload.
fn fit(want: u64, kind: Kind, remaining: &mut u64, first: bool) -> Option<u64> {
    let min = match kind {
        Kind::Deployment => DEPLOYMENT_REPLICAS.0,
        Kind::StatefulSet => STATEFULSET_REPLICAS.0,
        Kind::DaemonSet => 1,
    };
    let take = if want <= *remaining {
        want
    } else if *remaining >= min || (first && *remaining > 0) {
        *remaining
    } else {
        return None;
    };
    *remaining -= take;
    Some(take)
}

/// A generated workload's name, distinct within its namespace.
fn workload_name(kind: Kind, taken: &mut HashSet<String>, h: impl Fn(u64) -> u64) -> String {
    let roles = match kind {
        Kind::StatefulSet => STATEFUL_ROLES,
        _ => DEPLOYMENT_ROLES,
    };
    for attempt in 0..8 {
        let domain = DOMAINS[(h(1 + 2 * attempt) % DOMAINS.len() as u64) as usize];
        let role = roles[(h(2 + 2 * attempt) % roles.len() as u64) as usize];
        let name = format!("{domain}-{role}");
        if taken.insert(name.clone()) {
            return name;
        }
    }
    // Eight draws all taken (a namespace has at most a dozen workloads): number it.
    let base = format!(
        "{}-{}",
        DOMAINS[(h(1) % DOMAINS.len() as u64) as usize],
        roles[(h(2) % roles.len() as u64) as usize]
    );
    let mut n = 2;
    loop {
        let name = format!("{base}-{n}");
        if taken.insert(name.clone()) {
            return name;
        }
        n += 1;
    }
}

/// A generated workload's containers: its own, plus the sidecars its team runs.
fn generated_containers(kind: Kind, name: &str, h: impl Fn(u64) -> u64) -> Vec<String> {
    let mut containers = vec![name.to_owned()];
    match kind {
        Kind::StatefulSet => {
            if unit(h(30)) < 0.5 {
                containers.push("metrics-exporter".to_owned());
            }
        }
        _ => {
            if unit(h(31)) < 0.45 {
                containers.push("istio-proxy".to_owned());
            }
            if unit(h(32)) < 0.15 {
                containers.push("log-shipper".to_owned());
            }
        }
    }
    containers
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

/// Which workload a pod slot belongs to.
#[derive(Clone, Copy)]
enum Pick<'a> {
    DaemonSet(&'a Workload),
    /// An initial pod: the replica's ordinal.
    Placed(&'a Workload, u64),
    /// A pod added later (or redrawn after a name collision): the scalable workload's index.
    Late(&'a Workload, usize),
}

/// Draws nodes and pods from a seed.
pub struct Generator {
    seed: u64,
    /// The fleet's reference instant, unix nanoseconds: boot and start times lie before it.
    epoch_ns: i64,
    sample_period_ms: i64,
    catalogue: Catalogue,
    /// Next ordinal of late pods per StatefulSet (index into the catalogue's scalable
    /// workloads), starting past the initial replicas; std Mutex: held for one increment, never
    /// across an await.
    ordinals: Mutex<HashMap<usize, u64>>,
}

const NS_PER_S: i64 = 1_000_000_000;

impl Generator {
    /// A generator whose catalogue holds only the well-known workloads, with no initial layout:
    /// every pod picks a workload at random. [`Generator::for_cluster`] sizes it.
    pub fn new(seed: u64, epoch_ns: i64, sample_period_ms: i64) -> Self {
        Generator {
            seed,
            epoch_ns,
            sample_period_ms,
            catalogue: Catalogue::new(seed, 0, 0),
            ordinals: Mutex::new(HashMap::new()),
        }
    }

    /// Sizes the catalogue for `nodes` nodes of `pods_per_node` pods: nodes `0..nodes` and
    /// slots `0..pods_per_node` are then laid out as [`Catalogue`] says.
    pub fn for_cluster(mut self, nodes: u64, pods_per_node: u64) -> Self {
        self.catalogue = Catalogue::new(self.seed, nodes, pods_per_node);
        self
    }

    pub fn seed(&self) -> u64 {
        self.seed
    }

    pub fn catalogue(&self) -> &Catalogue {
        &self.catalogue
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

    /// The workload for pod slot `slot` of node `index`; `salt` (a redraw after a name
    /// collision) changes only which workload a late pod joins.
    fn pick(&self, index: u64, slot: u64, salt: u64) -> Pick<'_> {
        let c = &self.catalogue;
        // A redraw after a name collision keeps the slot's workload (only the random part of
        // the name changes), so every workload keeps exactly its replicas.
        if let Some(ds) = c.daemonsets.get(slot as usize) {
            return Pick::DaemonSet(ds);
        }
        if let Some((i, ordinal)) = c.placed(index, slot) {
            return Pick::Placed(&c.scalable[i], ordinal);
        }
        // A late pod joins a workload with a chance proportional to its size, like a
        // rollout or a scale-up would; a cluster with no initial layout picks uniformly.
        let x = mix(self.seed, &[2, index, slot, salt]);
        let total: u64 = c.scalable.iter().map(|w| w.replicas).sum();
        let i = if total > 0 {
            let position = x % total;
            c.starts
                .partition_point(|&s| s <= position)
                .saturating_sub(1)
        } else {
            (x % c.scalable.len().max(1) as u64) as usize
        };
        match c.scalable.get(i) {
            Some(wl) => Pick::Late(wl, i),
            // The catalogue always holds the well-known workloads; a DaemonSet pod is the
            // harmless answer should it ever be empty.
            None => Pick::DaemonSet(&c.daemonsets[(slot as usize) % c.daemonsets.len()]),
        }
    }

    /// The next ordinal of a late pod of StatefulSet `i`, past its `replicas` initial pods.
    fn late_ordinal(&self, i: usize, replicas: u64) -> u64 {
        let mut ordinals = self.ordinals.lock().unwrap_or_else(|e| e.into_inner());
        let next = ordinals.entry(i).or_insert(replicas);
        *next += 1;
        *next - 1
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
        let pick = self.pick(index, slot, salt);
        let wl = match pick {
            Pick::DaemonSet(wl) | Pick::Placed(wl, ..) | Pick::Late(wl, _) => wl,
        };
        let h = |k: u64| mix(self.seed, &[3, index, slot, salt, k]);
        let owner = mix(self.seed, &[fnv(&wl.namespace), fnv(&wl.name)]);
        let mut labels = BTreeMap::new();
        labels.insert("app.kubernetes.io/name".to_owned(), wl.name.clone());
        let name = match wl.kind {
            Kind::DaemonSet => {
                labels.insert(
                    "controller-revision-hash".to_owned(),
                    suffix(mix(owner, &[4]), 10),
                );
                format!("{}-{}", wl.name, suffix(h(1), 5))
            }
            Kind::Deployment => {
                // Every replica of a Deployment shares its ReplicaSet's hash.
                let rs = suffix(mix(owner, &[5]), 10);
                labels.insert("pod-template-hash".to_owned(), rs.clone());
                format!("{}-{}-{}", wl.name, rs, suffix(h(1), 5))
            }
            Kind::StatefulSet => {
                let ordinal = match pick {
                    Pick::Placed(_, ordinal) => ordinal,
                    Pick::Late(_, i) => self.late_ordinal(i, wl.replicas),
                    // A DaemonSet pick never has this kind.
                    Pick::DaemonSet(_) => 0,
                };
                let name = format!("{}-{}", wl.name, ordinal);
                labels.insert(
                    "controller-revision-hash".to_owned(),
                    format!("{}-{}", wl.name, suffix(mix(owner, &[4]), 10)),
                );
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
                namespace: wl.namespace.clone(),
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
            let g = Generator::new(seed, epoch, 0).for_cluster(10, 30);
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
        let g = Generator::new(1, 1_750_000_000 * NS_PER_S, 0).for_cluster(100, 40);
        let base = g.node_base(0);
        let first = g.pod(0, &base, 0, 0, None);
        assert!(first.sim.name.starts_with("kube-proxy-"));
        assert_eq!(first.sim.namespace, "kube-system");
        let pods: Vec<_> = (3..40).map(|s| g.pod(0, &base, s, 0, None)).collect();
        let dep = pods
            .iter()
            .find(|p| p.kind == Kind::Deployment && p.sim.namespace.starts_with("team-"))
            .expect("some generated deployment pod");
        let parts: Vec<&str> = dep.sim.name.rsplitn(3, '-').collect();
        assert_eq!(parts[0].len(), 5);
        assert_eq!(parts[1].len(), 10);
        assert_eq!(dep.labels["pod-template-hash"], parts[1]);
        assert_eq!(dep.labels["app.kubernetes.io/name"], parts[2]);
        for p in &pods {
            assert!((1..=3).contains(&p.sim.containers.len()));
            for c in &p.sim.containers {
                assert!(c.start_ns > base.boot_ns);
            }
        }
    }

    /// Counts the initial pods of a cluster per (namespace, app name), drawn as the fleet does.
    fn initial_pods(
        g: &Generator,
        nodes: u64,
        pods_per_node: u64,
    ) -> HashMap<(String, String), Vec<u64>> {
        let mut by_workload: HashMap<(String, String), Vec<u64>> = HashMap::new();
        for index in 0..nodes {
            let base = g.node_base(index);
            for slot in 0..pods_per_node {
                let pod = g.pod(index, &base, slot, 0, None);
                let app = pod.labels["app.kubernetes.io/name"].clone();
                by_workload
                    .entry((pod.sim.namespace, app))
                    .or_default()
                    .push(index);
            }
        }
        by_workload
    }

    #[test]
    fn every_initial_pod_belongs_to_its_catalogue_workload_spread_over_distinct_nodes() {
        let (nodes, per_node) = (200, 30);
        let g = Generator::new(3, 1_750_000_000 * NS_PER_S, 0).for_cluster(nodes, per_node);
        let pods = initial_pods(&g, nodes, per_node);
        for wl in g.catalogue().hpa_targets() {
            let on = &pods[&(wl.namespace.clone(), wl.name.clone())];
            assert_eq!(on.len() as u64, wl.replicas, "{}/{}", wl.namespace, wl.name);
            let distinct: HashSet<_> = on.iter().collect();
            assert_eq!(
                distinct.len(),
                on.len(),
                "{}/{} shares a node",
                wl.namespace,
                wl.name
            );
        }
        for ds in g.catalogue().daemonsets() {
            assert_eq!(
                pods[&(ds.namespace.clone(), ds.name.clone())].len() as u64,
                nodes
            );
        }
        let scalable: u64 = g.catalogue().hpa_targets().map(|w| w.replicas).sum();
        assert_eq!(scalable, nodes * (per_node - DAEMONSETS.len() as u64));
    }

    #[test]
    fn every_hpa_selection_holds_tens_of_pods_at_any_cluster_size() {
        for nodes in [1_000, 5_000, 10_000] {
            let c = Catalogue::new(1, nodes, 30);
            let slots = nodes * 27;
            assert_eq!(c.hpa_targets().map(|w| w.replicas).sum::<u64>(), slots);
            let mut names = HashSet::new();
            for wl in c.hpa_targets() {
                let (lo, hi) = match wl.kind {
                    Kind::Deployment => DEPLOYMENT_REPLICAS,
                    _ => STATEFULSET_REPLICAS,
                };
                assert!(
                    (lo..=hi + 1).contains(&wl.replicas),
                    "{nodes}: {}/{} has {}",
                    wl.namespace,
                    wl.name,
                    wl.replicas
                );
                assert!(
                    names.insert((wl.namespace.as_str(), wl.name.as_str())),
                    "{} twice",
                    wl.name
                );
            }
            let targets = c.hpa_targets().count() as u64;
            // Tens of pods each on average, so the count of workloads grows with the cluster.
            assert!(
                (slots / 40..=slots / 15).contains(&targets),
                "{nodes}: {targets} workloads"
            );
            assert!(
                c.namespace_count() as u64 >= targets / 12,
                "{nodes}: {} namespaces",
                c.namespace_count()
            );
            let deployments = c
                .hpa_targets()
                .filter(|w| w.kind == Kind::Deployment)
                .count() as u64;
            assert!(
                deployments * 10 >= targets * 8,
                "mostly Deployments: {deployments} of {targets}"
            );
        }
    }

    #[test]
    fn the_catalogue_depends_on_the_seed_and_size_only() {
        let a = Catalogue::new(5, 300, 30);
        assert_eq!(a.scalable(), Catalogue::new(5, 300, 30).scalable());
        assert_ne!(a.scalable(), Catalogue::new(6, 300, 30).scalable());
        assert_eq!(a.scalable()[0].name, "coredns");
        assert!(a.scalable().iter().any(|w| w.namespace == "team-001"));
    }

    #[test]
    fn a_tiny_cluster_still_has_a_workload_for_every_pod() {
        let g = Generator::new(1, 1_750_000_000 * NS_PER_S, 0).for_cluster(5, 4);
        let targets: Vec<_> = g.catalogue().hpa_targets().collect();
        assert_eq!(targets.len(), 1);
        assert_eq!(targets[0].replicas, 5);
        let pods = initial_pods(&g, 5, 4);
        assert_eq!(
            pods[&(targets[0].namespace.clone(), targets[0].name.clone())].len(),
            5
        );
        // No slot for scalable pods at all: late pods still find a workload.
        let g = Generator::new(1, 1_750_000_000 * NS_PER_S, 0).for_cluster(2, 2);
        let base = g.node_base(0);
        assert_ne!(g.pod(0, &base, 5, 0, None).kind, Kind::DaemonSet);
    }

    #[test]
    fn late_statefulset_pods_take_ordinals_past_the_initial_replicas() {
        let g = Generator::new(2, 1_750_000_000 * NS_PER_S, 0).for_cluster(100, 30);
        let base = g.node_base(0);
        let mut seen = HashSet::new();
        for slot in 30..2_000 {
            let p = g.pod(0, &base, slot, 0, None);
            if p.kind == Kind::StatefulSet {
                let app = &p.labels["app.kubernetes.io/name"];
                let wl = g
                    .catalogue()
                    .scalable()
                    .iter()
                    .find(|w| &w.name == app && w.namespace == p.sim.namespace)
                    .expect("from the catalogue");
                let ordinal: u64 = p
                    .sim
                    .name
                    .rsplit('-')
                    .next()
                    .and_then(|o| o.parse().ok())
                    .expect("ordinal");
                assert!(ordinal >= wl.replicas, "{}", p.sim.name);
                assert!(seen.insert(p.sim.name.clone()), "{} twice", p.sim.name);
            }
        }
        assert!(!seen.is_empty());
    }
}
