//! The single writer: turns node and pod watch events into published views and target sets.
//!
//! One task owns both caches, so a view always pairs the nodes and pods the writer had at one
//! moment and nothing is locked. Events are applied as they arrive; publishing is coalesced: at
//! most once per [`PUBLISH_INTERVAL`] while events keep arriving, and as soon as the stream goes
//! quiet otherwise, so a 300,000-pod initial list publishes once, not 300,000 times.
//!
//! Watch errors are logged and left to the watcher, which retries with backoff and relists after
//! `410 Gone`; this task never ends on its own.

use std::collections::BTreeMap;
use std::pin::pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use futures::{Stream, StreamExt};
use kube::runtime::watcher::{self, Event};
use tokio::sync::watch;
use tokio::time::Instant;

use super::cache::{Cache, Change};
use super::convert::{self, Interner, TargetRules};
use super::objects::{NodeObject, PodObject};
use super::{ClusterView, NodeInfo, PodInfo, PodKey, Targets};
use crate::model::{Name, ScrapeTarget};

/// Minimum time between two published views while events keep arriving.
pub const PUBLISH_INTERVAL: Duration = Duration::from_millis(5);

/// Events applied back to back before the task yields. A list page from the API server's watch
/// cache can hold every pod of the cluster, all ready at once; yielding now and then keeps the
/// runtime's other tasks (on a current-thread runtime, the API server's) responsive meanwhile.
const EVENTS_PER_YIELD: u32 = 1024;

/// What readers share with the writer.
#[derive(Debug, Default)]
pub struct Shared {
    /// Many readers, one rare writer: readers load without locking.
    pub view: ArcSwap<ClusterView>,
    /// Set once both caches have completed their first list and that view is published.
    pub synced: AtomicBool,
}

/// One item of either watch stream.
#[derive(Debug)]
pub enum Update {
    Node(Result<Event<NodeObject>, watcher::Error>),
    Pod(Result<Event<PodObject>, watcher::Error>),
}

/// Both caches and what the next publish must do.
#[derive(Debug)]
pub struct Reflector {
    nodes: Cache<Name, NodeInfo>,
    pods: Cache<(Name, Name), PodInfo>,
    names: Interner,
    rules: TargetRules,
    generation: u64,
    view_dirty: bool,
    targets_dirty: bool,
}

// === impl Reflector ===

impl Reflector {
    pub fn new(rules: TargetRules) -> Self {
        Reflector {
            nodes: Cache::default(),
            pods: Cache::default(),
            names: Interner::default(),
            rules,
            generation: 0,
            view_dirty: false,
            targets_dirty: false,
        }
    }

    /// Something changed that readers have not seen yet.
    pub fn is_dirty(&self) -> bool {
        self.view_dirty || (self.targets_dirty && self.is_synced())
    }

    pub fn is_synced(&self) -> bool {
        self.nodes.is_synced() && self.pods.is_synced()
    }

    pub fn handle(&mut self, update: Update) {
        match update {
            Update::Node(Ok(event)) => self.node_event(event),
            Update::Pod(Ok(event)) => self.pod_event(event),
            Update::Node(Err(error)) => log_watch_error("nodes", &error),
            Update::Pod(Err(error)) => log_watch_error("pods", &error),
        }
        if self.names.label_sets_full() {
            let nodes = self.nodes.values().map(|info| &info.labels);
            let pods = self.pods.values().map(|info| &info.labels);
            self.names.rebuild_label_sets(nodes.chain(pods));
        }
    }

    fn node_event(&mut self, event: Event<NodeObject>) {
        let change = match event {
            Event::Init => {
                self.nodes.init();
                return;
            }
            Event::InitApply(node) => {
                if let Some(info) = self.node_info(&node) {
                    self.nodes.init_apply(Arc::clone(&info.name), info);
                }
                return;
            }
            Event::InitDone => {
                // Names only the previous lists referenced can go now.
                let change = self.nodes.init_done();
                self.names.prune();
                tracing::info!(kind = "nodes", count = self.nodes.live().len(), "Listed.");
                change
            }
            Event::Apply(node) => match self.node_info(&node) {
                Some(info) => self.nodes.apply(Arc::clone(&info.name), info),
                None => Change::None,
            },
            Event::Delete(node) => match node.name() {
                Some(name) => self.nodes.delete(name),
                None => Change::None,
            },
        };
        match change {
            Change::None => {}
            Change::Relisted => {
                self.view_dirty = true;
                self.targets_dirty = true;
            }
            Change::Entry { before, after } => {
                self.view_dirty = true;
                let target = |info: &Option<Arc<NodeInfo>>| info.as_ref().map(|i| i.target.clone());
                // Status heartbeats change neither labels nor target and never get here;
                // a label change does, but leaves the targets alone.
                if target(&before) != target(&after) {
                    self.targets_dirty = true;
                }
            }
        }
    }

    fn pod_event(&mut self, event: Event<PodObject>) {
        let change = match event {
            Event::Init => {
                self.pods.init();
                return;
            }
            Event::InitApply(pod) => {
                if let Some(info) = self.pod_info(&pod) {
                    self.pods.init_apply(pod_key(&info), info);
                }
                return;
            }
            Event::InitDone => {
                let change = self.pods.init_done();
                self.names.prune();
                tracing::info!(kind = "pods", count = self.pods.live().len(), "Listed.");
                change
            }
            Event::Apply(pod) => match self.pod_info(&pod) {
                Some(info) => self.pods.apply(pod_key(&info), info),
                None => Change::None,
            },
            Event::Delete(pod) => match (pod.namespace(), pod.name()) {
                (Some(namespace), Some(name)) => self.pods.delete(&PodKey(namespace, name)),
                _ => Change::None,
            },
        };
        if change != Change::None {
            self.view_dirty = true;
        }
    }

    fn node_info(&mut self, node: &NodeObject) -> Option<NodeInfo> {
        convert::node_info(node, &self.rules, &mut self.names)
    }

    /// A pod as cached, keeping the name string the pod was first cached with: the store takes
    /// pod names from the view (see [`crate::model::PodNames`]), and a list joins the two by
    /// pointer only while both hold the same string.
    fn pod_info(&mut self, pod: &PodObject) -> Option<PodInfo> {
        let mut info = convert::pod_info(pod, &mut self.names)?;
        if let Some(cached) = self.pods.live().get(&PodKey(&info.namespace, &info.name)) {
            info.name = Arc::clone(&cached.name);
        }
        Some(info)
    }

    /// Makes the current caches visible: a new view if they changed, new targets if the target
    /// set changed, and the synced flag once both caches have listed.
    pub fn publish(&mut self, shared: &Shared, targets: &watch::Sender<Targets>) {
        if self.view_dirty {
            self.generation += 1;
            shared.view.store(Arc::new(ClusterView {
                nodes: self.nodes.live().clone(),
                pods: self.pods.live().clone(),
                generation: self.generation,
            }));
            self.view_dirty = false;
        }
        // Targets wait for both caches, as upstream's scrape loop waits for its informers: a
        // node is scraped once the pods it runs are known, so the store takes their names
        // from the view (see `crate::model::PodNames`).
        if self.targets_dirty && self.is_synced() {
            let next = self.targets();
            // A relist or an add-then-delete can land on the set already published.
            targets.send_if_modified(|current| {
                if **current == next {
                    false
                } else {
                    *current = Arc::new(next);
                    true
                }
            });
            self.targets_dirty = false;
        }
        if self.is_synced() && !shared.synced.load(Ordering::Acquire) {
            shared.synced.store(true, Ordering::Release);
        }
    }

    fn targets(&self) -> BTreeMap<Name, ScrapeTarget> {
        self.nodes
            .live()
            .iter()
            .filter_map(|(name, info)| Some((Arc::clone(name), info.target.clone()?)))
            .collect()
    }
}

fn pod_key(info: &PodInfo) -> (Name, Name) {
    (Arc::clone(&info.namespace), Arc::clone(&info.name))
}

fn log_watch_error(kind: &'static str, error: &watcher::Error) {
    match error {
        // The watch fell too far behind: the watcher relists, which is routine.
        watcher::Error::WatchError(status) if status.code == 410 => {
            tracing::debug!(kind, error = %error, "Watch expired; relisting.");
        }
        _ => tracing::warn!(kind, error = %error, "Watch failed; retrying with backoff."),
    }
}

/// Applies `updates` until the stream ends (the watchers' streams never do), publishing as
/// described in the module documentation.
pub async fn run<S>(
    updates: S,
    mut reflector: Reflector,
    shared: Arc<Shared>,
    targets: watch::Sender<Targets>,
) where
    S: Stream<Item = Update>,
{
    let mut updates = pin!(updates);
    let mut last_publish: Option<Instant> = None;
    let mut since_yield = 0u32;
    loop {
        let next = if reflector.is_dirty() {
            let deadline = last_publish.map_or_else(Instant::now, |at| at + PUBLISH_INTERVAL);
            // `timeout_at` polls the stream before the clock: a ready event is taken even
            // past the deadline, and a quiet stream past it publishes at once.
            match tokio::time::timeout_at(deadline, updates.next()).await {
                Ok(next) => next,
                Err(_quiet) => {
                    reflector.publish(&shared, &targets);
                    last_publish = Some(Instant::now());
                    continue;
                }
            }
        } else {
            updates.next().await
        };
        let Some(update) = next else { break };
        reflector.handle(update);
        since_yield += 1;
        if since_yield >= EVENTS_PER_YIELD {
            since_yield = 0;
            tokio::task::yield_now().await;
        }
        if reflector.is_dirty() {
            let now = Instant::now();
            if last_publish.is_none_or(|at| now >= at + PUBLISH_INTERVAL) {
                reflector.publish(&shared, &targets);
                last_publish = Some(now);
            }
        }
    }
    reflector.publish(&shared, &targets);
}

#[cfg(test)]
mod tests {
    use futures::channel::mpsc;

    use super::*;
    use crate::discovery::convert::DEFAULT_ADDRESS_TYPES;
    use crate::discovery::objects::NodeAddress;
    use crate::model::PodNames;

    fn rules() -> TargetRules {
        TargetRules {
            preferred_address_types: DEFAULT_ADDRESS_TYPES
                .iter()
                .map(|t| t.to_string())
                .collect(),
            kubelet_port: 10250,
            use_node_status_port: false,
        }
    }

    fn node(name: &str, ip: &str) -> NodeObject {
        let mut node = NodeObject::new(name);
        node.addresses = vec![NodeAddress {
            kind: "InternalIP".into(),
            address: ip.into(),
        }];
        node
    }

    fn running_pod(namespace: &str, name: &str) -> PodObject {
        let mut pod = PodObject::new(namespace, name);
        pod.phase = Some("Running".into());
        pod.node_name = Some("node-1".into());
        pod
    }

    fn synced_reflector() -> Reflector {
        let mut r = Reflector::new(rules());
        for event in [Event::Init, Event::InitDone] {
            r.handle(Update::Node(Ok(event)));
        }
        for event in [Event::Init, Event::InitDone] {
            r.handle(Update::Pod(Ok(event)));
        }
        r
    }

    /// A synced reflector with what it publishes to: the shared view and the targets channel.
    fn synced_publisher() -> (
        Reflector,
        Shared,
        watch::Sender<Targets>,
        watch::Receiver<Targets>,
    ) {
        let (tx, rx) = watch::channel(Targets::default());
        (synced_reflector(), Shared::default(), tx, rx)
    }

    #[test]
    fn targets_wait_until_the_pods_are_listed_too() {
        let shared = Shared::default();
        let (tx, rx) = watch::channel(Targets::default());
        let mut r = Reflector::new(rules());
        for event in [
            Event::Init,
            Event::InitApply(node("node-1", "10.0.0.1")),
            Event::InitDone,
        ] {
            r.handle(Update::Node(Ok(event)));
        }
        r.handle(Update::Pod(Ok(Event::Init)));
        r.handle(Update::Pod(Ok(Event::InitApply(running_pod("ns", "a")))));
        // Nothing for the scrapers yet, and nothing pending that a publish could send.
        r.publish(&shared, &tx);
        assert!(rx.borrow().is_empty());
        assert!(!r.is_dirty());

        r.handle(Update::Pod(Ok(Event::InitDone)));
        assert!(r.is_dirty());
        r.publish(&shared, &tx);
        assert!(rx.borrow().contains_key("node-1"));
        // The view the targets follow already holds the pods.
        assert!(shared.pod_names("ns", "a").is_some());
    }

    #[test]
    fn a_pod_keeps_its_name_string_across_updates_and_relists() {
        let (mut r, shared, tx, _rx) = synced_publisher();
        r.handle(Update::Pod(Ok(Event::Apply(running_pod("ns", "a")))));
        r.publish(&shared, &tx);
        let (namespace, first) = shared.pod_names("ns", "a").expect("the pod is known");
        assert_eq!((&*namespace, &*first), ("ns", "a"));

        let mut relabelled = running_pod("ns", "a");
        relabelled.labels.insert("app".into(), "web".into());
        r.handle(Update::Pod(Ok(Event::Apply(relabelled.clone()))));
        r.publish(&shared, &tx);
        let (_, after_update) = shared.pod_names("ns", "a").unwrap();
        assert!(Arc::ptr_eq(&first, &after_update));

        for event in [Event::Init, Event::InitApply(relabelled), Event::InitDone] {
            r.handle(Update::Pod(Ok(event)));
        }
        r.publish(&shared, &tx);
        let (_, after_relist) = shared.pod_names("ns", "a").unwrap();
        assert!(Arc::ptr_eq(&first, &after_relist));
        // Another pod of the namespace shares the namespace string.
        r.handle(Update::Pod(Ok(Event::Apply(running_pod("ns", "b")))));
        r.publish(&shared, &tx);
        let (other_namespace, _) = shared.pod_names("ns", "b").unwrap();
        assert!(Arc::ptr_eq(&namespace, &other_namespace));
    }

    #[test]
    fn synced_only_after_both_initial_lists() {
        let shared = Shared::default();
        let (tx, _rx) = watch::channel(Targets::default());
        let mut r = Reflector::new(rules());
        r.handle(Update::Node(Ok(Event::Init)));
        r.handle(Update::Node(Ok(Event::InitDone)));
        r.publish(&shared, &tx);
        assert!(!shared.synced.load(Ordering::Acquire));
        r.handle(Update::Pod(Ok(Event::Init)));
        r.handle(Update::Pod(Ok(Event::InitDone)));
        r.publish(&shared, &tx);
        assert!(shared.synced.load(Ordering::Acquire));
    }

    #[test]
    fn heartbeat_only_node_update_leaves_targets_and_view_untouched() {
        let (mut r, shared, tx, mut rx) = synced_publisher();
        r.handle(Update::Node(Ok(Event::Apply(node("node-1", "10.0.0.1")))));
        r.publish(&shared, &tx);
        assert!(rx.has_changed().unwrap());
        rx.borrow_and_update();
        let generation = shared.view.load().generation();

        // Same node again, as after a status heartbeat: nothing we keep differs.
        r.handle(Update::Node(Ok(Event::Apply(node("node-1", "10.0.0.1")))));
        assert!(!r.is_dirty());
        r.publish(&shared, &tx);
        assert!(!rx.has_changed().unwrap());
        assert_eq!(shared.view.load().generation(), generation);
    }

    #[test]
    fn label_change_publishes_a_view_but_not_targets() {
        let (mut r, shared, tx, mut rx) = synced_publisher();
        r.handle(Update::Node(Ok(Event::Apply(node("node-1", "10.0.0.1")))));
        r.publish(&shared, &tx);
        rx.borrow_and_update();
        let mut labelled = node("node-1", "10.0.0.1");
        labelled.labels.insert("zone".into(), "b".into());
        r.handle(Update::Node(Ok(Event::Apply(labelled))));
        r.publish(&shared, &tx);
        assert!(!rx.has_changed().unwrap());
        let view = shared.view.load();
        assert_eq!(view.node("node-1").unwrap().labels.get("zone"), Some("b"));
    }

    #[test]
    fn address_change_and_delete_update_targets() {
        let (mut r, shared, tx, mut rx) = synced_publisher();
        r.handle(Update::Node(Ok(Event::Apply(node("node-1", "10.0.0.1")))));
        r.publish(&shared, &tx);
        assert_eq!(rx.borrow_and_update()["node-1"].host, "10.0.0.1");
        r.handle(Update::Node(Ok(Event::Apply(node("node-1", "10.0.0.9")))));
        r.publish(&shared, &tx);
        assert_eq!(rx.borrow_and_update()["node-1"].host, "10.0.0.9");
        r.handle(Update::Node(Ok(Event::Delete(node("node-1", "10.0.0.9")))));
        r.publish(&shared, &tx);
        assert!(rx.borrow_and_update().is_empty());
    }

    #[test]
    fn deleted_pod_disappears_from_the_next_view() {
        let (mut r, shared, tx, _rx) = synced_publisher();
        r.handle(Update::Pod(Ok(Event::Apply(running_pod("ns", "a")))));
        r.handle(Update::Pod(Ok(Event::Apply(running_pod("ns", "b")))));
        r.publish(&shared, &tx);
        assert_eq!(shared.view.load().pods().count(), 2);
        r.handle(Update::Pod(Ok(Event::Delete(PodObject::new("ns", "a")))));
        r.publish(&shared, &tx);
        let view = shared.view.load();
        assert!(view.pod("ns", "a").is_none());
        assert!(view.pod("ns", "b").is_some());
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_large_initial_list_publishes_a_handful_of_views() {
        let shared = Arc::new(Shared::default());
        let (targets_tx, _targets_rx) = watch::channel(Targets::default());
        let (tx, rx) = mpsc::unbounded();
        const PODS: usize = 20_000;
        tx.unbounded_send(Update::Node(Ok(Event::Init))).unwrap();
        tx.unbounded_send(Update::Node(Ok(Event::InitApply(node(
            "node-1", "10.0.0.1",
        )))))
        .unwrap();
        tx.unbounded_send(Update::Node(Ok(Event::InitDone)))
            .unwrap();
        tx.unbounded_send(Update::Pod(Ok(Event::Init))).unwrap();
        for i in 0..PODS {
            let pod = running_pod(&format!("ns-{}", i % 7), &format!("pod-{i}"));
            tx.unbounded_send(Update::Pod(Ok(Event::InitApply(pod))))
                .unwrap();
        }
        tx.unbounded_send(Update::Pod(Ok(Event::InitDone))).unwrap();
        // A following burst of changes, all ready at once.
        for i in 0..PODS {
            let mut pod = running_pod(&format!("ns-{}", i % 7), &format!("pod-{i}"));
            pod.labels.insert("v".into(), "2".into());
            tx.unbounded_send(Update::Pod(Ok(Event::Apply(pod))))
                .unwrap();
        }
        drop(tx);
        run(rx, Reflector::new(rules()), Arc::clone(&shared), targets_tx).await;

        let view = shared.view.load();
        assert_eq!(view.pods().count(), PODS);
        assert!(view.pods().all(|p| p.labels.get("v") == Some("2")));
        assert!(shared.synced.load(Ordering::Acquire));
        // Without coalescing this would be 2 * PODS + 1; the bound allows one view per
        // interval if the machine is very slow, but not one per event.
        assert!(
            view.generation() < 200,
            "published {} views for {} events",
            view.generation(),
            2 * PODS
        );
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_long_ready_burst_lets_other_tasks_on_the_thread_run() {
        let ran = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&ran);
        tokio::spawn(async move { flag.store(true, Ordering::Release) });
        let (tx, rx) = mpsc::unbounded();
        tx.unbounded_send(Update::Pod(Ok(Event::Init))).unwrap();
        for i in 0..3 * EVENTS_PER_YIELD {
            let pod = running_pod("ns", &format!("pod-{i}"));
            tx.unbounded_send(Update::Pod(Ok(Event::InitApply(pod))))
                .unwrap();
        }
        drop(tx);
        let (targets_tx, _targets_rx) = watch::channel(Targets::default());
        run(
            rx,
            Reflector::new(rules()),
            Arc::new(Shared::default()),
            targets_tx,
        )
        .await;
        // Every event was ready at once; the other task ran only if the writer yielded.
        assert!(ran.load(Ordering::Acquire));
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_quiet_stream_publishes_the_pending_change_without_waiting_for_more() {
        let shared = Arc::new(Shared::default());
        let (targets_tx, mut targets_rx) = watch::channel(Targets::default());
        let (tx, rx) = mpsc::unbounded();
        let task = tokio::spawn(run(
            rx,
            Reflector::new(rules()),
            Arc::clone(&shared),
            targets_tx,
        ));
        for event in [
            Event::Init,
            Event::InitApply(node("node-1", "10.0.0.1")),
            Event::InitDone,
        ] {
            tx.unbounded_send(Update::Node(Ok(event))).unwrap();
        }
        for event in [Event::Init, Event::InitDone] {
            tx.unbounded_send(Update::Pod(Ok(event))).unwrap();
        }
        tokio::time::timeout(Duration::from_secs(5), targets_rx.changed())
            .await
            .expect("targets published while the stream is still open")
            .unwrap();
        assert!(targets_rx.borrow().contains_key("node-1"));
        drop(tx);
        task.await.unwrap();
    }
}
