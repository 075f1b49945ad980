//! The fleet: builds the simulated kubelets, registers their nodes and pods in the [`Cluster`],
//! writes the credentials a metrics server needs, serves, and applies churn.
//!
//! The fleet is the only writer of nodes and pods in the cluster; the API stand-in only reads it.
//! Files written to the state directory:
//! - `kubelet-ca.crt`: the CA of every kubelet's serving certificate;
//! - `kubelet-client-ca.crt`: the CA kubelets accept client certificates from;
//! - `kubelet-client.crt`, `kubelet-client.key`: a client certificate for the metrics server;
//! - `kubelet-token`: a bearer token kubelets accept.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::cluster::{Cluster, ClusterError, Node, Pod, PodPhase};
use crate::kubelet::addr::node_ip;
use crate::kubelet::fault::{Fault, FaultError, FaultKind, FaultParams, FaultPlan};
use crate::kubelet::server::{accept_loop, AuthPolicy, NodeTable, ServeContext};
use crate::kubelet::sim::mix;
use crate::kubelet::tls::{TlsError, TlsFactory};
use crate::kubelet::workload::{fnv, uid, Generator};
use crate::kubelet::{now_ms, now_ns, Counts, KubeletNode, Rendered, ServedHistory};
use crate::pki::{Authority, LeafSpec, PkiError};

/// Why the fleet could not start or apply a change.
#[derive(Debug, thiserror::Error)]
pub enum FleetError {
    #[error("writing {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("listening on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error(transparent)]
    Pki(#[from] PkiError),
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error(transparent)]
    Cluster(#[from] ClusterError),
    #[error(transparent)]
    Fault(#[from] FaultError),
    #[error("no loopback address left for node index {0}")]
    NoAddress(u64),
    #[error("node {0:?} not found")]
    NoNode(String),
    #[error("container {container:?} of pod {namespace}/{pod} not found")]
    NoContainer {
        namespace: String,
        pod: String,
        container: String,
    },
    #[error("could not find a free name for a new pod on {0}")]
    NameExhausted(String),
}

/// Configures and starts a [`FleetHandle`].
#[derive(Clone, Debug)]
pub struct FleetBuilder {
    nodes: u64,
    pods_per_node: u64,
    seed: u64,
    port: u16,
    single_address: bool,
    bind: IpAddr,
    auth_required: bool,
    token: Option<String>,
    faults: FaultPlan,
    sample_period: Duration,
    idle_timeout: Option<Duration>,
}

/// A simulated cluster's kubelets.
pub struct Fleet;

impl Fleet {
    pub fn builder() -> FleetBuilder {
        FleetBuilder {
            nodes: 3,
            pods_per_node: 30,
            seed: 1,
            port: 10250,
            single_address: false,
            bind: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            auth_required: true,
            token: None,
            faults: FaultPlan::default(),
            sample_period: Duration::ZERO,
            idle_timeout: Some(Duration::from_secs(90)),
        }
    }
}

impl FleetBuilder {
    pub fn nodes(mut self, n: u64) -> Self {
        self.nodes = n;
        self
    }

    /// Pods per node (the kubelet's default maximum is 110).
    pub fn pods_per_node(mut self, p: u64) -> Self {
        self.pods_per_node = p;
        self
    }

    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }

    /// The kubelet port; 0 picks a free one (for tests running in parallel).
    pub fn port(mut self, port: u16) -> Self {
        self.port = port;
        self
    }

    /// Every node on 127.0.0.1 with its own port (`port + index`, or free ports when `port` is
    /// 0) and its own listener, instead of one address per node.
    pub fn single_address(mut self, yes: bool) -> Self {
        self.single_address = yes;
        self
    }

    /// The address of the shared listener (default `0.0.0.0`, which covers all of 127.0.0.0/8).
    pub fn bind(mut self, ip: IpAddr) -> Self {
        self.bind = ip;
        self
    }

    /// Whether requests must present the client certificate or the token (default: yes, like a
    /// kubelet with anonymous auth disabled).
    pub fn auth_required(mut self, yes: bool) -> Self {
        self.auth_required = yes;
        self
    }

    /// The bearer token kubelets accept (default: one drawn at start).
    pub fn token(mut self, token: impl Into<String>) -> Self {
        self.token = Some(token.into());
        self
    }

    /// Puts `kind` on this fraction of nodes, chosen by seed.
    pub fn fault(mut self, kind: FaultKind, fraction: f64) -> Result<Self, FaultError> {
        self.faults.set(kind, fraction)?;
        Ok(self)
    }

    pub fn fault_params(mut self, params: FaultParams) -> Self {
        self.faults.params = params;
        self
    }

    /// Spacing of each container's sampling grid, like cAdvisor housekeeping; zero (the default)
    /// samples everything at the request instant.
    pub fn sample_period(mut self, period: Duration) -> Self {
        self.sample_period = period;
        self
    }

    /// Closes connections idle this long (default 90 s, as the kubelet does); `None`: never.
    pub fn idle_timeout(mut self, idle: Option<Duration>) -> Self {
        self.idle_timeout = idle;
        self
    }

    /// Writes the credentials into `state_dir`, registers every node and pod in a new cluster,
    /// and starts serving.
    pub async fn start(self, state_dir: impl AsRef<Path>) -> Result<FleetHandle, FleetError> {
        let dir = state_dir.as_ref().to_path_buf();
        std::fs::create_dir_all(&dir).map_err(|source| FleetError::Write {
            path: dir.clone(),
            source,
        })?;
        let ca = Authority::new("kubelet-ca")?;
        let client_ca = Authority::new("kubelet-client-ca")?;
        let client = client_ca.issue(&LeafSpec::client("metrics-server", &[]))?;
        let token = self.token.clone().unwrap_or_else(|| {
            let salt = now_ns() as u64 ^ u64::from(std::process::id());
            format!(
                "{:016x}{:016x}",
                mix(self.seed, &[salt, 1]),
                mix(self.seed, &[salt, 2])
            )
        });
        write(&dir.join("kubelet-ca.crt"), ca.cert_pem())?;
        write(&dir.join("kubelet-client-ca.crt"), client_ca.cert_pem())?;
        write(&dir.join("kubelet-client.crt"), &client.cert_pem)?;
        write(&dir.join("kubelet-client.key"), &client.key_pem)?;
        write(&dir.join("kubelet-token"), &token)?;
        let tls = TlsFactory::new(ca, client_ca.cert_pem())?;

        let shutdown = CancellationToken::new();
        let tracker = TaskTracker::new();
        let nodes = Arc::new(NodeTable::default());
        let ctx = Arc::new(ServeContext {
            nodes: nodes.clone(),
            auth: AuthPolicy {
                required: self.auth_required,
                token,
            },
            padding: std::sync::OnceLock::new(),
            padding_limit: self.faults.params.huge_bytes.min(64 << 20),
            idle_timeout: self.idle_timeout,
            shutdown: shutdown.clone(),
            tracker: tracker.clone(),
        });
        let shared_port = if self.single_address {
            None
        } else {
            let addr = SocketAddr::new(self.bind, self.port);
            let listener = TcpListener::bind(addr)
                .await
                .map_err(|source| FleetError::Bind { addr, source })?;
            let port = listener
                .local_addr()
                .map_err(|source| FleetError::Bind { addr, source })?
                .port();
            tracker.spawn(accept_loop(listener, ctx.clone(), None));
            Some(port)
        };
        let inner = Arc::new(Inner {
            cluster: Cluster::new(),
            // The initial nodes are laid out from the catalogue; later ones draw at random.
            generator: Generator::new(self.seed, now_ns(), self.sample_period.as_millis() as i64)
                .for_cluster(self.nodes, self.pods_per_node),
            tls,
            ctx,
            shared_port,
            next_index: AtomicU64::new(0),
            dir,
            config: self,
        });
        let handle = FleetHandle { inner };
        for _ in 0..handle.inner.config.nodes {
            handle.add_node().await?;
        }
        Ok(handle)
    }
}

fn write(path: &Path, contents: &str) -> Result<(), FleetError> {
    std::fs::write(path, contents).map_err(|source| FleetError::Write {
        path: path.to_path_buf(),
        source,
    })
}

struct Inner {
    cluster: Arc<Cluster>,
    generator: Generator,
    tls: TlsFactory,
    ctx: Arc<ServeContext>,
    /// The shared listener's port; `None` in single-address mode.
    shared_port: Option<u16>,
    next_index: AtomicU64,
    dir: PathBuf,
    config: FleetBuilder,
}

/// A running fleet. Cloning shares it.
#[derive(Clone)]
pub struct FleetHandle {
    inner: Arc<Inner>,
}

/// How many times a new pod is redrawn when its name is taken.
const NAME_ATTEMPTS: u64 = 16;

fn system_time(unix_ns: i64) -> SystemTime {
    UNIX_EPOCH + Duration::from_nanos(unix_ns.max(0) as u64)
}

impl FleetHandle {
    pub fn cluster(&self) -> Arc<Cluster> {
        self.inner.cluster.clone()
    }

    pub fn state_dir(&self) -> &Path {
        &self.inner.dir
    }

    pub fn ca_path(&self) -> PathBuf {
        self.inner.dir.join("kubelet-ca.crt")
    }

    pub fn token(&self) -> &str {
        &self.inner.ctx.auth.token
    }

    pub fn seed(&self) -> u64 {
        self.inner.generator.seed()
    }

    /// The shared listener's port (single-address mode: `None`, every node has its own).
    pub fn port(&self) -> Option<u16> {
        self.inner.shared_port
    }

    fn node(&self, name: &str) -> Result<Arc<KubeletNode>, FleetError> {
        let node = self
            .inner
            .cluster
            .node(name)
            .ok_or_else(|| FleetError::NoNode(name.to_owned()))?;
        self.inner
            .ctx
            .nodes
            .get(&SocketAddr::new(node.ip, node.port))
            .ok_or_else(|| FleetError::NoNode(name.to_owned()))
    }

    /// Every node's name and address, sorted by name.
    pub fn addresses(&self) -> Vec<(String, SocketAddr)> {
        let mut all: Vec<_> = self
            .inner
            .ctx
            .nodes
            .all()
            .iter()
            .map(|n| (n.name.clone(), n.addr))
            .collect();
        all.sort();
        all
    }

    pub fn address(&self, node: &str) -> Option<SocketAddr> {
        self.node(node).ok().map(|n| n.addr)
    }

    pub fn node_count(&self) -> usize {
        self.inner.ctx.nodes.len()
    }

    /// The last two bodies `node` served, or `None` before its first.
    pub fn served(&self, node: &str) -> Option<ServedHistory> {
        self.node(node).ok()?.served()
    }

    /// Connections, requests and bodies served by `node`.
    pub fn counts(&self, node: &str) -> Option<Counts> {
        self.node(node).ok().map(|n| n.counts())
    }

    /// Counters summed over every node.
    pub fn total_counts(&self) -> Counts {
        self.inner
            .ctx
            .nodes
            .all()
            .iter()
            .map(|n| n.counts())
            .fold(Counts::default(), |a, b| Counts {
                connections: a.connections + b.connections,
                requests: a.requests + b.requests,
                bodies: a.bodies + b.bodies,
            })
    }

    pub fn fault(&self, node: &str) -> Option<Fault> {
        self.node(node).ok()?.fault()
    }

    /// Nodes with a fault, with the fault, sorted by name.
    pub fn faulty_nodes(&self) -> Vec<(String, Fault)> {
        let mut out: Vec<_> = self
            .inner
            .ctx
            .nodes
            .all()
            .iter()
            .filter_map(|n| n.fault().map(|f| (n.name.clone(), f)))
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }

    /// Gives `node` a fault (or none); certificate faults take effect on new connections.
    pub fn set_fault(&self, node: &str, fault: Option<Fault>) -> Result<(), FleetError> {
        let n = self.node(node)?;
        let was_cert = n.fault().is_some_and(Fault::is_certificate);
        let is_cert = fault.is_some_and(Fault::is_certificate);
        if was_cert || is_cert {
            n.set_tls_config(self.inner.tls.server_config(&n.name, n.addr.ip(), fault)?);
        }
        n.set_fault(fault);
        Ok(())
    }

    /// Adds a node with its pods; returns its name.
    pub async fn add_node(&self) -> Result<String, FleetError> {
        let inner = &self.inner;
        let index = inner.next_index.fetch_add(1, Ordering::Relaxed);
        let name = format!("node-{index:05}");
        let (addr, own_listener) = match inner.shared_port {
            Some(port) => {
                let ip = node_ip(index).ok_or(FleetError::NoAddress(index))?;
                (SocketAddr::new(IpAddr::V4(ip), port), None)
            }
            None => {
                let port = if inner.config.port == 0 {
                    0
                } else {
                    inner.config.port.wrapping_add(index as u16)
                };
                let want = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port);
                let listener = TcpListener::bind(want)
                    .await
                    .map_err(|source| FleetError::Bind { addr: want, source })?;
                let addr = listener
                    .local_addr()
                    .map_err(|source| FleetError::Bind { addr: want, source })?;
                (addr, Some(listener))
            }
        };
        let mut layout = inner.generator.node_base(index);
        let mut labels = BTreeMap::new();
        labels.insert("kubernetes.io/hostname".to_owned(), name.clone());
        labels.insert("kubernetes.io/os".to_owned(), "linux".to_owned());
        labels.insert("kubernetes.io/arch".to_owned(), "amd64".to_owned());
        labels.insert(
            "node.kubernetes.io/instance-type".to_owned(),
            "m5.2xlarge".to_owned(),
        );
        labels.insert(
            "topology.kubernetes.io/zone".to_owned(),
            format!("zone-{}", ["a", "b", "c"][(index % 3) as usize]),
        );
        inner.cluster.add_node(Node {
            name: name.clone(),
            ip: addr.ip(),
            port: addr.port(),
            labels,
            created: system_time(layout.boot_ns),
            uid: uid(inner.generator.seed(), &[7, index]),
            resource_version: 0,
        })?;
        let mut slot = 0;
        for _ in 0..inner.config.pods_per_node {
            let pod = self.draw_and_register(index, &name, &layout, &mut slot, None)?;
            layout.pods.push(pod);
        }
        let fault = inner.config.faults.pick(inner.generator.seed(), index);
        let tls = inner.tls.server_config(&name, addr.ip(), fault)?;
        let node = Arc::new(KubeletNode::new(
            index,
            name.clone(),
            addr,
            Rendered::new(layout),
            tls,
            fault,
            slot,
        ));
        inner.ctx.nodes.insert(node.clone());
        if let Some(listener) = own_listener {
            inner
                .ctx
                .tracker
                .spawn(accept_loop(listener, inner.ctx.clone(), Some(node)));
        }
        tracing::debug!(node = %name, %addr, "Node added.");
        Ok(name)
    }

    /// Draws a pod for node `index` whose name is free, and adds it to the cluster.
    fn draw_and_register(
        &self,
        index: u64,
        node_name: &str,
        layout: &crate::kubelet::sim::NodeLayout,
        slot: &mut u64,
        start_ns: Option<i64>,
    ) -> Result<crate::kubelet::sim::PodSim, FleetError> {
        let inner = &self.inner;
        for salt in 0..NAME_ATTEMPTS {
            let drawn = inner.generator.pod(index, layout, *slot, salt, start_ns);
            let start = drawn
                .sim
                .containers
                .iter()
                .map(|c| c.start_ns)
                .min()
                .unwrap_or(layout.boot_ns);
            let pod = Pod {
                namespace: drawn.sim.namespace.clone(),
                name: drawn.sim.name.clone(),
                node: node_name.to_owned(),
                labels: drawn.labels.clone(),
                containers: drawn
                    .sim
                    .containers
                    .iter()
                    .map(|c| c.name.clone())
                    .collect(),
                phase: PodPhase::Running,
                created: system_time(start),
                uid: uid(
                    inner.generator.seed(),
                    &[8, fnv(&drawn.sim.namespace), fnv(&drawn.sim.name)],
                ),
                resource_version: 0,
            };
            match inner.cluster.add_pod(pod) {
                Ok(_) => {
                    *slot += 1;
                    return Ok(drawn.sim);
                }
                Err(ClusterError::AlreadyExists { .. }) => continue,
                Err(other) => return Err(other.into()),
            }
        }
        Err(FleetError::NameExhausted(node_name.to_owned()))
    }

    /// Removes a node: its pods leave the cluster and its connections close.
    pub fn remove_node(&self, name: &str) -> Result<(), FleetError> {
        let node = self.node(name)?;
        self.inner.cluster.remove_node(name)?;
        self.inner.ctx.nodes.remove(&node.addr);
        node.gone.cancel();
        tracing::debug!(node = %name, "Node removed.");
        Ok(())
    }

    /// Starts a new pod on `node`, now; returns its namespace and name.
    pub fn add_pod(&self, node: &str) -> Result<(String, String), FleetError> {
        let n = self.node(node)?;
        let now = now_ns();
        let layout = n.rendered().layout.clone();
        let mut slot = n.take_slot();
        let pod = self.draw_and_register(n.index, node, &layout, &mut slot, Some(now))?;
        let key = (pod.namespace.clone(), pod.name.clone());
        n.update_layout(|l| l.pods.push(pod));
        Ok(key)
    }

    /// Deletes a pod; its CPU stays in the node's counter.
    pub fn remove_pod(&self, namespace: &str, name: &str) -> Result<(), FleetError> {
        let pod = self.inner.cluster.pod(namespace, name).ok_or_else(|| {
            FleetError::Cluster(ClusterError::NotFound {
                kind: "pod",
                name: format!("{namespace}/{name}"),
            })
        })?;
        let n = self.node(&pod.node)?;
        self.inner.cluster.remove_pod(namespace, name)?;
        let now = now_ms();
        n.update_layout(|l| {
            if let Some(at) = l
                .pods
                .iter()
                .position(|p| p.namespace == namespace && p.name == name)
            {
                let gone = l.pods.remove(at);
                l.retired_cpu_ns += gone.containers.iter().map(|c| c.cpu_ns(now)).sum::<u64>();
            }
        });
        Ok(())
    }

    /// Restarts a container: its start time becomes now and its CPU counter starts over.
    pub fn restart_container(
        &self,
        namespace: &str,
        pod: &str,
        container: &str,
    ) -> Result<(), FleetError> {
        let missing = || FleetError::NoContainer {
            namespace: namespace.to_owned(),
            pod: pod.to_owned(),
            container: container.to_owned(),
        };
        let object = self.inner.cluster.pod(namespace, pod).ok_or_else(missing)?;
        let n = self.node(&object.node)?;
        let now = now_ns();
        let found = n.update_layout(|l| {
            let c = l
                .pods
                .iter_mut()
                .filter(|p| p.namespace == namespace && p.name == pod)
                .flat_map(|p| p.containers.iter_mut())
                .find(|c| c.name == container)?;
            let retired = c.cpu_ns(now.div_euclid(1_000_000));
            c.start_ns = now;
            l.retired_cpu_ns += retired;
            Some(())
        });
        found.ok_or_else(missing)?;
        // The pod's status changes (restart count) on a real cluster: tell watchers.
        self.inner.cluster.update_pod((*object).clone())?;
        Ok(())
    }

    /// Pods on `node` as (namespace, name, containers), in layout order.
    pub fn pods_on(&self, node: &str) -> Vec<(String, String, Vec<String>)> {
        self.node(node)
            .map(|n| {
                n.rendered()
                    .layout
                    .pods
                    .iter()
                    .map(|p| {
                        (
                            p.namespace.clone(),
                            p.name.clone(),
                            p.containers.iter().map(|c| c.name.clone()).collect(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Writes `kubelet-nodes.txt` (one `name address:port` per line) and `kubelet-fleet.pid` into
    /// the state directory, for out-of-process load clients.
    pub fn write_node_list(&self) -> Result<(), FleetError> {
        let list: String = self
            .addresses()
            .iter()
            .map(|(name, addr)| format!("{name} {addr}\n"))
            .collect();
        write(&self.inner.dir.join(crate::scrape_all::NODES_FILE), &list)?;
        write(
            &self.inner.dir.join(crate::scrape_all::PID_FILE),
            &std::process::id().to_string(),
        )
    }

    /// Stops serving and waits for every connection task to end.
    pub async fn shutdown(&self) {
        self.inner.ctx.shutdown.cancel();
        self.inner.ctx.tracker.close();
        self.inner.ctx.tracker.wait().await;
    }
}

/// Raises the open-file soft limit to the hard limit; returns the new soft limit.
pub fn raise_open_file_limit() -> std::io::Result<u64> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `limit` is a valid, exclusively borrowed rlimit for the duration of the call.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    if limit.rlim_cur < limit.rlim_max {
        limit.rlim_cur = limit.rlim_max;
        // SAFETY: as above; the kernel only reads the struct.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(limit.rlim_cur)
}
