//! Model checks of the publish protocol: every interleaving of node writers, a remover and a reader.
//!
//! The code under test is the store's own (`write_locked`, `unpublish_node`, `publish`,
//! `Snapshot::with_node`); only the shard lock and the snapshot cell are loom models of what
//! dashmap and arc-swap provide. Run with
//! `RUSTFLAGS="--cfg store_loom" cargo test --release --lib store::loom_tests`.

use std::borrow::Cow;

use loom::sync::Arc;
use loom::thread;

use super::snapshot::{Snapshot, SnapshotCell};
use super::state::NodeState;
use super::sync::{ModelCell, Mutex};
use super::{unpublish_node, write_locked};
use crate::model::{ContainerScrape, MetricsPoint, Name, NodeScrape, PodScrape, UnixNanos};

const S: i64 = 1_000_000_000;
const RESOLUTION: i64 = 15 * S;

/// A scrape of `node` at `t` seconds: the node and two pods, every point sampled at `t`.
fn scrape(node: &str, t: i64) -> NodeScrape<'static> {
    let point = MetricsPoint {
        start_time: 0,
        timestamp: t * S,
        cumulative_cpu_used: (t * S) as u64,
        memory_usage: 1,
    };
    NodeScrape {
        node: Some(point),
        pods: ["a", "b"]
            .into_iter()
            .map(|p| PodScrape {
                namespace: Cow::Borrowed("ns"),
                name: Cow::Owned(format!("{node}-{p}")),
                containers: smallvec::smallvec![ContainerScrape {
                    name: Cow::Borrowed("c"),
                    point,
                }],
            })
            .collect(),
    }
}

/// No torn node: each node's own time equals the time of every pod it serves (all points of one
/// scrape share a sample time), every indexed pod resolves, and the counts match the contents.
fn assert_consistent(snapshot: &Snapshot) {
    let pods: Vec<_> = snapshot.pods().collect();
    assert_eq!(pods.len(), snapshot.pod_count());
    assert_eq!(snapshot.nodes().count(), snapshot.node_count());
    for node in snapshot.nodes() {
        let owned: Vec<_> = pods.iter().filter(|p| p.node == node.name).collect();
        assert_eq!(owned.len(), 2, "a node is published with all its pods");
        for pod in owned {
            assert_eq!(pod.timestamp, node.timestamp, "node {} is torn", node.name);
        }
    }
}

fn write(cell: &ModelCell, state: &Mutex<Option<NodeState>>, node: &Name, t: i64) {
    let now: UnixNanos = t * S;
    let mut guard = state.lock().expect("node lock");
    let state = guard.get_or_insert_with(|| NodeState::new(now));
    write_locked(state, node, &scrape(node, t), now, RESOLUTION, None, cell);
}

#[test]
fn concurrent_node_writes_are_all_published_and_never_torn() {
    loom::model(|| {
        let cell = Arc::new(ModelCell::new(Snapshot::default()));
        let names = [Name::from("n1"), Name::from("n2")];
        let states: Vec<Arc<Mutex<Option<NodeState>>>> =
            names.iter().map(|_| Arc::new(Mutex::new(None))).collect();
        for (name, state) in names.iter().zip(&states) {
            write(&cell, state, name, 100);
            write(&cell, state, name, 115);
        }

        let writers: Vec<_> = names
            .iter()
            .zip(&states)
            .map(|(name, state)| {
                let (cell, state, name) = (Arc::clone(&cell), Arc::clone(state), name.clone());
                thread::spawn(move || write(&cell, &state, &name, 130))
            })
            .collect();
        let reader = {
            let cell = Arc::clone(&cell);
            thread::spawn(move || assert_consistent(&cell.load()))
        };
        for writer in writers {
            writer.join().expect("writer");
        }
        reader.join().expect("reader");

        let last = cell.load();
        assert_consistent(&last);
        for name in &names {
            assert_eq!(
                last.node(name).map(|n| n.timestamp),
                Some(130 * S),
                "no write is lost"
            );
        }
    });
}

#[test]
fn write_racing_removal_leaves_snapshot_matching_state() {
    loom::model(|| {
        let cell = Arc::new(ModelCell::new(Snapshot::default()));
        let name = Name::from("n1");
        let state = Arc::new(Mutex::new(None));
        write(&cell, &state, &name, 100);
        write(&cell, &state, &name, 115);

        let writer = {
            let (cell, state, name) = (Arc::clone(&cell), Arc::clone(&state), name.clone());
            thread::spawn(move || write(&cell, &state, &name, 130))
        };
        let remover = {
            let (cell, state, name) = (Arc::clone(&cell), Arc::clone(&state), name.clone());
            thread::spawn(move || {
                let mut guard = state.lock().expect("node lock");
                if guard.take().is_some() {
                    unpublish_node(&name, &*cell);
                }
            })
        };
        let reader = {
            let cell = Arc::clone(&cell);
            thread::spawn(move || assert_consistent(&cell.load()))
        };
        writer.join().expect("writer");
        remover.join().expect("remover");
        reader.join().expect("reader");

        let last = cell.load();
        assert_consistent(&last);
        let guard = state.lock().expect("node lock");
        let expected = guard.as_ref().and_then(|s| s.entry(&name));
        match expected {
            // Removed last, or written last from scratch (one point: nothing servable).
            None => {
                assert!(last.node(&name).is_none());
                assert_eq!(last.pod_count(), 0);
            }
            Some(entry) => {
                assert_eq!(last.node(&name), entry.node.as_ref());
                assert_eq!(last.pod_count(), entry.pods.len());
            }
        }
    });
}
