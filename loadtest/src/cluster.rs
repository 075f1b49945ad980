//! The simulated cluster's objects: which nodes and pods exist, and the ordered log of changes.
//!
//! Owns membership only. The kubelets read it to know what to report; the API stand-in serves it as
//! Kubernetes objects with resource versions and watch events. Nothing here does I/O or knows
//! about metrics values.

use std::collections::{BTreeMap, VecDeque};
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::SystemTime;

use tokio::sync::broadcast;

/// A simulated node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Node {
    pub name: String,
    /// The kubelet's address (`InternalIP`).
    pub ip: IpAddr,
    /// The kubelet's port (`status.daemonEndpoints.kubeletEndpoint.Port`).
    pub port: u16,
    pub labels: BTreeMap<String, String>,
    pub created: SystemTime,
    pub uid: String,
    /// The resource version of the object's last change.
    pub resource_version: u64,
}

/// `status.phase` of a pod.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PodPhase {
    Pending,
    Running,
    Succeeded,
}

impl PodPhase {
    pub fn as_str(self) -> &'static str {
        match self {
            PodPhase::Pending => "Pending",
            PodPhase::Running => "Running",
            PodPhase::Succeeded => "Succeeded",
        }
    }
}

/// A simulated pod.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pod {
    pub namespace: String,
    pub name: String,
    /// `spec.nodeName`.
    pub node: String,
    pub labels: BTreeMap<String, String>,
    pub containers: Vec<String>,
    pub phase: PodPhase,
    pub created: SystemTime,
    pub uid: String,
    pub resource_version: u64,
}

/// The kind of a change, as a watch event names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventType {
    Added,
    Modified,
    Deleted,
}

impl EventType {
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Added => "ADDED",
            EventType::Modified => "MODIFIED",
            EventType::Deleted => "DELETED",
        }
    }
}

/// One object's change; the object is its state after the change (before it, for a deletion).
#[derive(Clone, Debug)]
pub enum Object {
    Node(Arc<Node>),
    Pod(Arc<Pod>),
}

/// An entry of the change log.
#[derive(Clone, Debug)]
pub struct Change {
    pub resource_version: u64,
    pub event: EventType,
    pub object: Object,
}

/// Why a change could not be applied or replayed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ClusterError {
    #[error("{kind} {name:?} already exists")]
    AlreadyExists { kind: &'static str, name: String },
    #[error("{kind} {name:?} not found")]
    NotFound { kind: &'static str, name: String },
    /// The requested resource version is older than the retained log (watch answers 410 Gone).
    #[error("too old resource version: {requested} (oldest retained {oldest})")]
    Gone { requested: u64, oldest: u64 },
}

/// How many changes are kept for watches that resume from a resource version.
const CHANGE_LOG_CAPACITY: usize = 100_000;

struct State {
    nodes: BTreeMap<String, Arc<Node>>,
    pods: BTreeMap<(String, String), Arc<Pod>>,
    resource_version: u64,
    log: VecDeque<Change>,
}

/// The cluster: a current state, a bounded change log and a broadcast of new changes.
pub struct Cluster {
    /// std Mutex, not tokio's: nothing awaits while it is held, and every section is short.
    state: Mutex<State>,
    changes: broadcast::Sender<Change>,
}

/// A consistent list of one kind at one resource version.
pub struct Listing<T> {
    pub resource_version: u64,
    pub items: Vec<Arc<T>>,
}

impl Cluster {
    pub fn new() -> Arc<Self> {
        let (changes, _) = broadcast::channel(65_536);
        Arc::new(Cluster {
            state: Mutex::new(State {
                nodes: BTreeMap::new(),
                pods: BTreeMap::new(),
                resource_version: 1,
                log: VecDeque::new(),
            }),
            changes,
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves plain maps behind; they stay usable.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn record(&self, state: &mut State, event: EventType, object: Object) -> u64 {
        let change = Change {
            resource_version: state.resource_version,
            event,
            object,
        };
        if state.log.len() == CHANGE_LOG_CAPACITY {
            state.log.pop_front();
        }
        state.log.push_back(change.clone());
        // No receiver is not an error: nobody watches yet.
        let _ = self.changes.send(change);
        state.resource_version
    }

    /// Adds a node; its `resource_version` is assigned here.
    pub fn add_node(&self, mut node: Node) -> Result<u64, ClusterError> {
        let mut state = self.lock();
        if state.nodes.contains_key(&node.name) {
            return Err(ClusterError::AlreadyExists {
                kind: "node",
                name: node.name,
            });
        }
        state.resource_version += 1;
        node.resource_version = state.resource_version;
        let node = Arc::new(node);
        state.nodes.insert(node.name.clone(), node.clone());
        Ok(self.record(&mut state, EventType::Added, Object::Node(node)))
    }

    /// Replaces a node's object (labels, address, port changed).
    pub fn update_node(&self, mut node: Node) -> Result<u64, ClusterError> {
        let mut state = self.lock();
        if !state.nodes.contains_key(&node.name) {
            return Err(ClusterError::NotFound {
                kind: "node",
                name: node.name,
            });
        }
        state.resource_version += 1;
        node.resource_version = state.resource_version;
        let node = Arc::new(node);
        state.nodes.insert(node.name.clone(), node.clone());
        Ok(self.record(&mut state, EventType::Modified, Object::Node(node)))
    }

    /// Removes a node and every pod bound to it.
    pub fn remove_node(&self, name: &str) -> Result<u64, ClusterError> {
        let mut state = self.lock();
        let Some(node) = state.nodes.remove(name) else {
            return Err(ClusterError::NotFound {
                kind: "node",
                name: name.to_owned(),
            });
        };
        let bound: Vec<(String, String)> = state
            .pods
            .iter()
            .filter(|(_, pod)| pod.node == name)
            .map(|(key, _)| key.clone())
            .collect();
        for key in bound {
            if let Some(pod) = state.pods.remove(&key) {
                state.resource_version += 1;
                self.record(&mut state, EventType::Deleted, Object::Pod(pod));
            }
        }
        state.resource_version += 1;
        Ok(self.record(&mut state, EventType::Deleted, Object::Node(node)))
    }

    /// Adds a pod.
    pub fn add_pod(&self, mut pod: Pod) -> Result<u64, ClusterError> {
        let mut state = self.lock();
        let key = (pod.namespace.clone(), pod.name.clone());
        if state.pods.contains_key(&key) {
            return Err(ClusterError::AlreadyExists {
                kind: "pod",
                name: format!("{}/{}", pod.namespace, pod.name),
            });
        }
        state.resource_version += 1;
        pod.resource_version = state.resource_version;
        let pod = Arc::new(pod);
        state.pods.insert(key, pod.clone());
        Ok(self.record(&mut state, EventType::Added, Object::Pod(pod)))
    }

    /// Replaces a pod's object (phase or labels changed).
    pub fn update_pod(&self, mut pod: Pod) -> Result<u64, ClusterError> {
        let mut state = self.lock();
        let key = (pod.namespace.clone(), pod.name.clone());
        if !state.pods.contains_key(&key) {
            return Err(ClusterError::NotFound {
                kind: "pod",
                name: format!("{}/{}", pod.namespace, pod.name),
            });
        }
        state.resource_version += 1;
        pod.resource_version = state.resource_version;
        let pod = Arc::new(pod);
        state.pods.insert(key, pod.clone());
        Ok(self.record(&mut state, EventType::Modified, Object::Pod(pod)))
    }

    /// Removes a pod.
    pub fn remove_pod(&self, namespace: &str, name: &str) -> Result<u64, ClusterError> {
        let mut state = self.lock();
        let Some(pod) = state.pods.remove(&(namespace.to_owned(), name.to_owned())) else {
            return Err(ClusterError::NotFound {
                kind: "pod",
                name: format!("{namespace}/{name}"),
            });
        };
        state.resource_version += 1;
        Ok(self.record(&mut state, EventType::Deleted, Object::Pod(pod)))
    }

    pub fn node(&self, name: &str) -> Option<Arc<Node>> {
        self.lock().nodes.get(name).cloned()
    }

    pub fn pod(&self, namespace: &str, name: &str) -> Option<Arc<Pod>> {
        self.lock()
            .pods
            .get(&(namespace.to_owned(), name.to_owned()))
            .cloned()
    }

    /// Every node, sorted by name, with the resource version of the listing.
    pub fn list_nodes(&self) -> Listing<Node> {
        let state = self.lock();
        Listing {
            resource_version: state.resource_version,
            items: state.nodes.values().cloned().collect(),
        }
    }

    /// Every pod, sorted by namespace then name.
    pub fn list_pods(&self) -> Listing<Pod> {
        let state = self.lock();
        Listing {
            resource_version: state.resource_version,
            items: state.pods.values().cloned().collect(),
        }
    }

    /// Pods bound to one node.
    pub fn pods_on_node(&self, node: &str) -> Vec<Arc<Pod>> {
        self.lock()
            .pods
            .values()
            .filter(|pod| pod.node == node)
            .cloned()
            .collect()
    }

    /// The current resource version.
    pub fn resource_version(&self) -> u64 {
        self.lock().resource_version
    }

    /// Subscribes to changes after `since`: returns the retained changes newer than `since` and a
    /// receiver for the ones to come, with no gap and no duplicate between the two.
    pub fn watch_from(
        &self,
        since: u64,
    ) -> Result<(Vec<Change>, broadcast::Receiver<Change>), ClusterError> {
        let state = self.lock();
        // Subscribing while holding the lock: no change can be recorded between the replay and
        // the subscription.
        let receiver = self.changes.subscribe();
        let oldest = state
            .log
            .front()
            .map(|c| c.resource_version)
            .unwrap_or(state.resource_version + 1);
        if since + 1 < oldest && since < state.resource_version {
            return Err(ClusterError::Gone {
                requested: since,
                oldest,
            });
        }
        let replay = state
            .log
            .iter()
            .filter(|c| c.resource_version > since)
            .cloned()
            .collect();
        Ok((replay, receiver))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str, last_octet: u8) -> Node {
        Node {
            name: name.to_owned(),
            ip: IpAddr::from([127, 0, 0, last_octet]),
            port: 10250,
            labels: BTreeMap::new(),
            created: SystemTime::now(),
            uid: format!("uid-{name}"),
            resource_version: 0,
        }
    }

    fn pod(namespace: &str, name: &str, node: &str) -> Pod {
        Pod {
            namespace: namespace.to_owned(),
            name: name.to_owned(),
            node: node.to_owned(),
            labels: BTreeMap::new(),
            containers: vec!["app".to_owned()],
            phase: PodPhase::Running,
            created: SystemTime::now(),
            uid: format!("uid-{namespace}-{name}"),
            resource_version: 0,
        }
    }

    #[test]
    fn removing_a_node_deletes_its_pods_with_events() {
        let cluster = Cluster::new();
        cluster.add_node(node("n1", 1)).expect("add n1");
        cluster.add_node(node("n2", 2)).expect("add n2");
        cluster.add_pod(pod("ns", "a", "n1")).expect("add a");
        cluster.add_pod(pod("ns", "b", "n2")).expect("add b");
        let before = cluster.resource_version();
        cluster.remove_node("n1").expect("remove");
        let (replay, _rx) = cluster.watch_from(before).expect("watch");
        let events: Vec<(EventType, String)> = replay
            .iter()
            .map(|c| match &c.object {
                Object::Node(n) => (c.event, n.name.clone()),
                Object::Pod(p) => (c.event, p.name.clone()),
            })
            .collect();
        assert_eq!(
            events,
            vec![
                (EventType::Deleted, "a".to_owned()),
                (EventType::Deleted, "n1".to_owned())
            ]
        );
        assert_eq!(cluster.list_pods().items.len(), 1);
    }

    #[test]
    fn watch_replays_then_streams_without_gap() {
        let cluster = Cluster::new();
        let start = cluster.resource_version();
        cluster.add_node(node("n1", 1)).expect("add");
        let (replay, mut rx) = cluster.watch_from(start).expect("watch");
        assert_eq!(replay.len(), 1);
        let rv = cluster.add_node(node("n2", 2)).expect("add");
        let next = rx.try_recv().expect("streamed change");
        assert_eq!(next.resource_version, rv);
        assert!(replay[0].resource_version < rv);
    }

    #[test]
    fn duplicate_node_is_rejected() {
        let cluster = Cluster::new();
        cluster.add_node(node("n1", 1)).expect("add");
        assert!(matches!(
            cluster.add_node(node("n1", 1)),
            Err(ClusterError::AlreadyExists { .. })
        ));
    }
}
