//! Store-level rules: what a sequence of scrapes, removals and expiries makes servable.

use std::borrow::Cow;
use std::sync::Arc;
use std::time::Duration;

use proptest::prelude::*;

use super::*;
use crate::model::{ContainerScrape, MetricsPoint, PodScrape};

const S: i64 = 1_000_000_000;

fn config() -> StoreConfig {
    StoreConfig {
        resolution: Duration::from_secs(15),
        staleness: Duration::from_secs(60),
    }
}

fn point(start: i64, ts: i64, cpu: u64, mem: u64) -> MetricsPoint {
    MetricsPoint {
        start_time: start,
        timestamp: ts,
        cumulative_cpu_used: cpu,
        memory_usage: mem,
    }
}

fn name(s: &str) -> Name {
    Name::from(s)
}

fn pod<'a>(
    namespace: &'a str,
    pod: &'a str,
    containers: &[(&'a str, MetricsPoint)],
) -> PodScrape<'a> {
    PodScrape {
        namespace: Cow::Borrowed(namespace),
        name: Cow::Borrowed(pod),
        containers: containers
            .iter()
            .map(|(c, p)| ContainerScrape {
                name: Cow::Borrowed(c),
                point: *p,
            })
            .collect(),
    }
}

/// A scrape at `t` seconds where everything used `t` core-seconds (a rate of one core).
fn steady<'a>(t: i64, pods: &[(&'a str, &'a str)]) -> NodeScrape<'a> {
    let p = point(0, t * S, (t * S) as u64, 1000 + t as u64);
    NodeScrape {
        node: Some(p),
        pods: pods.iter().map(|(ns, n)| pod(ns, n, &[("c", p)])).collect(),
    }
}

fn pod_names(snapshot: &Snapshot) -> Vec<(String, String)> {
    snapshot
        .pods()
        .map(|p| (p.namespace.to_string(), p.name.to_string()))
        .collect()
}

#[test]
fn first_scrape_serves_nothing() {
    let store = Store::new(config());
    let node = name("n1");
    store.write_node(&node, &steady(100, &[("ns", "p")]), 100 * S);
    let snapshot = store.snapshot();
    assert!(snapshot.node("n1").is_none());
    assert!(snapshot.pod("ns", "p").is_none());
    assert!(!snapshot.is_ready());
}

#[test]
fn node_and_pod_are_served_after_two_scrapes() {
    let store = Store::new(config());
    let node = name("n1");
    store.write_node(&node, &steady(100, &[("ns", "p")]), 100 * S);
    store.write_node(&node, &steady(115, &[("ns", "p")]), 115 * S);
    let snapshot = store.snapshot();
    let n = snapshot.node("n1").expect("node served");
    assert_eq!(n.timestamp, 115 * S);
    assert_eq!(n.window, 15 * S);
    assert_eq!(n.usage.cpu_nanocores, 1_000_000_000);
    assert_eq!(n.usage.memory_bytes, 1115);
    let p = snapshot.pod("ns", "p").expect("pod served");
    assert_eq!(&*p.node, "n1");
    assert_eq!(p.containers.len(), 1);
    assert_eq!(p.containers[0].usage.cpu_nanocores, 1_000_000_000);
    assert!(snapshot.is_ready());
}

#[test]
fn new_data_is_visible_as_soon_as_write_returns() {
    let store = Store::new(config());
    let node = name("n1");
    store.write_node(&node, &steady(100, &[]), 100 * S);
    store.write_node(&node, &steady(115, &[]), 115 * S);
    store.write_node(&node, &steady(130, &[]), 130 * S);
    assert_eq!(store.snapshot().node("n1").unwrap().timestamp, 130 * S);
}

#[test]
fn pod_with_container_missing_prev_is_omitted() {
    let store = Store::new(config());
    let node = name("n1");
    let old = |t: i64| point(0, t * S, (t * S) as u64, 1);
    store.write_node(
        &node,
        &NodeScrape {
            node: None,
            pods: vec![pod("ns", "p", &[("a", old(100))])],
        },
        100 * S,
    );
    // Container "b" appears, started long ago: first sighting, no prev.
    store.write_node(
        &node,
        &NodeScrape {
            node: None,
            pods: vec![pod("ns", "p", &[("a", old(115)), ("b", old(115))])],
        },
        115 * S,
    );
    assert!(store.snapshot().pod("ns", "p").is_none());
}

#[test]
fn container_whose_rate_errors_is_skipped_and_pod_still_served() {
    let store = Store::new(config());
    let node = name("n1");
    store.write_node(
        &node,
        &NodeScrape {
            node: None,
            pods: vec![pod(
                "ns",
                "p",
                &[
                    ("a", point(0, 100 * S, 10, 1)),
                    ("b", point(0, 100 * S, 10, 1)),
                ],
            )],
        },
        100 * S,
    );
    store.write_node(
        &node,
        &NodeScrape {
            node: None,
            pods: vec![pod(
                "ns",
                "p",
                &[
                    ("a", point(0, 115 * S, 20, 1)),
                    ("b", point(0, 115 * S, 5, 1)),
                ],
            )],
        },
        115 * S,
    );
    let snapshot = store.snapshot();
    let p = snapshot.pod("ns", "p").expect("pod served");
    let names: Vec<&str> = p.containers.iter().map(|c| &*c.name).collect();
    assert_eq!(names, vec!["a"]);
}

#[test]
fn pod_takes_time_and_window_of_its_earliest_container() {
    let store = Store::new(config());
    let node = name("n1");
    let first = NodeScrape {
        node: None,
        pods: vec![pod(
            "ns",
            "p",
            &[
                ("a", point(0, 100 * S, 0, 1)),
                ("b", point(0, 101 * S, 0, 1)),
            ],
        )],
    };
    let second = NodeScrape {
        node: None,
        pods: vec![pod(
            "ns",
            "p",
            &[
                ("a", point(0, 117 * S, 0, 1)),
                ("b", point(0, 114 * S, 0, 1)),
            ],
        )],
    };
    store.write_node(&node, &first, 100 * S);
    store.write_node(&node, &second, 117 * S);
    let snapshot = store.snapshot();
    let p = snapshot.pod("ns", "p").unwrap();
    assert_eq!(p.timestamp, 114 * S);
    assert_eq!(p.window, 13 * S);
    // Containers stay in the kubelet's order.
    assert_eq!(&*p.containers[0].name, "a");
    assert_eq!(&*p.containers[1].name, "b");
}

#[test]
fn fresh_container_is_served_after_one_scrape() {
    let store = Store::new(config());
    let node = name("n1");
    store.write_node(
        &node,
        &NodeScrape {
            node: None,
            pods: vec![pod(
                "ns",
                "p",
                &[("c", point(100 * S, 112 * S, 6 * S as u64, 9))],
            )],
        },
        112 * S,
    );
    let snapshot = store.snapshot();
    let p = snapshot.pod("ns", "p").expect("fresh pod served at once");
    assert_eq!(p.window, 12 * S);
    assert_eq!(p.containers[0].usage.cpu_nanocores, 500_000_000);
}

#[test]
fn restarted_container_hides_its_pod_for_one_scrape() {
    let store = Store::new(config());
    let node = name("n1");
    let scrape = |start: i64, t: i64| NodeScrape {
        node: None,
        pods: vec![pod("ns", "p", &[("c", point(start, t * S, 1_000, 1))])],
    };
    store.write_node(&node, &scrape(0, 100), 100 * S);
    store.write_node(&node, &scrape(0, 115), 115 * S);
    // Served with a zero rate before the restart.
    assert!(store.snapshot().pod("ns", "p").is_some());
    store.write_node(&node, &scrape(125 * S, 130), 130 * S);
    assert!(store.snapshot().pod("ns", "p").is_none());
    store.write_node(&node, &scrape(125 * S, 145), 145 * S);
    assert!(store.snapshot().pod("ns", "p").is_some());
}

#[test]
fn pods_absent_from_a_scrape_are_dropped() {
    let store = Store::new(config());
    let node = name("n1");
    store.write_node(&node, &steady(100, &[("ns", "a"), ("ns", "b")]), 100 * S);
    store.write_node(&node, &steady(115, &[("ns", "a"), ("ns", "b")]), 115 * S);
    assert_eq!(store.snapshot().pod_count(), 2);
    store.write_node(&node, &steady(130, &[("ns", "a")]), 130 * S);
    let snapshot = store.snapshot();
    assert!(snapshot.pod("ns", "b").is_none());
    assert_eq!(pod_names(&snapshot), vec![("ns".into(), "a".into())]);
    // And it comes back only after two points again.
    store.write_node(&node, &steady(145, &[("ns", "a"), ("ns", "b")]), 145 * S);
    assert!(store.snapshot().pod("ns", "b").is_none());
}

#[test]
fn scrape_without_node_point_forgets_node_points() {
    let store = Store::new(config());
    let node = name("n1");
    store.write_node(&node, &steady(100, &[("ns", "p")]), 100 * S);
    store.write_node(&node, &steady(115, &[("ns", "p")]), 115 * S);
    let mut scrape = steady(130, &[("ns", "p")]);
    scrape.node = None;
    store.write_node(&node, &scrape, 130 * S);
    let snapshot = store.snapshot();
    assert!(snapshot.node("n1").is_none());
    assert!(snapshot.pod("ns", "p").is_some(), "pods keep being served");
    assert_eq!(snapshot.node_count(), 0);
}

#[test]
fn duplicate_pod_in_a_scrape_keeps_the_first() {
    let store = Store::new(config());
    let node = name("n1");
    let scrape = |t: i64, dup_cpu: u64| NodeScrape {
        node: None,
        pods: vec![
            pod("ns", "p", &[("first", point(0, t * S, (t * S) as u64, 1))]),
            pod("ns", "p", &[("second", point(0, t * S, dup_cpu, 1))]),
        ],
    };
    store.write_node(&node, &scrape(100, 0), 100 * S);
    store.write_node(&node, &scrape(115, 0), 115 * S);
    let snapshot = store.snapshot();
    let p = snapshot.pod("ns", "p").unwrap();
    assert_eq!(&*p.containers[0].name, "first");
    assert_eq!(snapshot.pod_count(), 1);
}

#[test]
fn stale_node_expires() {
    let store = Store::new(config());
    let node = name("n1");
    store.write_node(&node, &steady(100, &[("ns", "p")]), 100 * S);
    store.write_node(&node, &steady(115, &[("ns", "p")]), 115 * S);
    store.expire(175 * S);
    assert!(
        store.snapshot().node("n1").is_some(),
        "exactly at the bound it stays"
    );
    store.expire(176 * S);
    let snapshot = store.snapshot();
    assert!(snapshot.node("n1").is_none());
    assert!(snapshot.pod("ns", "p").is_none());
    assert_eq!(store.tracked_nodes(), 0);
}

#[test]
fn node_repeating_an_old_sample_expires() {
    let store = Store::new(config());
    let node = name("n1");
    store.write_node(&node, &steady(100, &[]), 100 * S);
    store.write_node(&node, &steady(115, &[]), 115 * S);
    // The kubelet keeps answering with the same sample: scrapes succeed, nothing moves forward.
    for now in [130, 145, 160, 175, 190] {
        store.write_node(&node, &steady(115, &[]), now * S);
    }
    store.expire(190 * S);
    assert!(store.snapshot().node("n1").is_none());
}

#[test]
fn kubelet_clock_behind_ours_does_not_expire_its_node() {
    let store = Store::new(config());
    let node = name("n1");
    // Samples an hour behind our clock, but moving forward.
    store.write_node(&node, &steady(100, &[]), 3700 * S);
    store.write_node(&node, &steady(115, &[]), 3715 * S);
    store.expire(3720 * S);
    assert!(store.snapshot().node("n1").is_some());
}

#[test]
fn removed_node_disappears_with_its_pods() {
    let store = Store::new(config());
    let (n1, n2) = (name("n1"), name("n2"));
    for t in [100, 115] {
        store.write_node(&n1, &steady(t, &[("ns", "a")]), t * S);
        store.write_node(&n2, &steady(t, &[("ns", "b")]), t * S);
    }
    store.remove_node("n1");
    let snapshot = store.snapshot();
    assert!(snapshot.node("n1").is_none());
    assert!(snapshot.pod("ns", "a").is_none());
    assert!(snapshot.node("n2").is_some());
    assert_eq!(pod_names(&snapshot), vec![("ns".into(), "b".into())]);
    assert_eq!(snapshot.node_count(), 1);
    assert_eq!(snapshot.container_count(), 1);
    // Its points are gone too: a new scrape starts from scratch.
    store.write_node(&n1, &steady(130, &[("ns", "a")]), 130 * S);
    assert!(store.snapshot().node("n1").is_none());
}

#[test]
fn removed_pod_disappears_until_reported_again() {
    let store = Store::new(config());
    let node = name("n1");
    for t in [100, 115] {
        store.write_node(&node, &steady(t, &[("ns", "a"), ("ns", "b")]), t * S);
    }
    store.remove_pod("ns", "a");
    let snapshot = store.snapshot();
    assert!(snapshot.pod("ns", "a").is_none());
    assert!(snapshot.pod("ns", "b").is_some());
    assert_eq!(snapshot.pod_count(), 1);
    assert_eq!(snapshot.container_count(), 1);
    // Its points went with it: a kubelet still reporting it needs two scrapes again.
    store.write_node(&node, &steady(130, &[("ns", "a"), ("ns", "b")]), 130 * S);
    assert!(store.snapshot().pod("ns", "a").is_none());
}

#[test]
fn namespace_query_does_not_see_other_namespaces() {
    let store = Store::new(config());
    let (n1, n2) = (name("n1"), name("n2"));
    for t in [100, 115] {
        store.write_node(
            &n1,
            &steady(t, &[("a", "z"), ("b", "y"), ("bb", "x")]),
            t * S,
        );
        store.write_node(
            &n2,
            &steady(t, &[("b", "a"), ("c", "w"), ("a", "q")]),
            t * S,
        );
    }
    let snapshot = store.snapshot();
    let in_b: Vec<&str> = snapshot.pods_in_namespace("b").map(|p| &*p.name).collect();
    assert_eq!(in_b, vec!["a", "y"]);
    assert_eq!(snapshot.pods_in_namespace("missing").count(), 0);
    assert_eq!(snapshot.pods_in_namespace("").count(), 0);
}

#[test]
fn lists_are_sorted_across_nodes() {
    let store = Store::new(config());
    let nodes = [name("n3"), name("n1"), name("n2")];
    let pods = [
        vec![("kube-system", "dns"), ("default", "web-1")],
        vec![("default", "web-0"), ("apps", "x")],
        vec![("kube-system", "proxy")],
    ];
    for t in [100, 115] {
        for (node, pods) in nodes.iter().zip(&pods) {
            store.write_node(node, &steady(t, pods), t * S);
        }
    }
    let snapshot = store.snapshot();
    let node_names: Vec<&str> = snapshot.nodes().map(|n| &*n.name).collect();
    assert_eq!(node_names, vec!["n1", "n2", "n3"]);
    let pod_list: Vec<(&str, &str)> = snapshot.pods().map(|p| (&*p.namespace, &*p.name)).collect();
    assert_eq!(
        pod_list,
        vec![
            ("apps", "x"),
            ("default", "web-0"),
            ("default", "web-1"),
            ("kube-system", "dns"),
            ("kube-system", "proxy"),
        ]
    );
}

#[test]
fn names_are_interned_across_scrapes() {
    let store = Store::new(config());
    let node = name("n1");
    // Separately allocated strings each time, as a parser unescaping names would produce.
    let scrape = |t: i64| {
        let p = point(0, t * S, (t * S) as u64, 1);
        NodeScrape {
            node: Some(p),
            pods: vec![PodScrape {
                namespace: Cow::Owned("ns".to_string()),
                name: Cow::Owned("p".to_string()),
                containers: smallvec::smallvec![ContainerScrape {
                    name: Cow::Owned("c".to_string()),
                    point: p,
                }],
            }],
        }
    };
    for t in [100, 115] {
        store.write_node(&node, &scrape(t), t * S);
    }
    let first = store.snapshot();
    store.write_node(&node, &scrape(130), 130 * S);
    let second = store.snapshot();
    let (a, b) = (
        first.pod("ns", "p").unwrap(),
        second.pod("ns", "p").unwrap(),
    );
    assert!(Arc::ptr_eq(&a.namespace, &b.namespace));
    assert!(Arc::ptr_eq(&a.name, &b.name));
    assert!(Arc::ptr_eq(&a.containers[0].name, &b.containers[0].name));
    assert!(Arc::ptr_eq(&a.node, &node));
    assert_ne!(a.timestamp, b.timestamp);
}

#[test]
fn new_pod_reuses_a_known_namespace_name() {
    let store = Store::new(config());
    let node = name("n1");
    store.write_node(&node, &steady(100, &[("ns", "a")]), 100 * S);
    store.write_node(&node, &steady(115, &[("ns", "a"), ("ns", "b")]), 115 * S);
    let state = store.nodes.get("n1").unwrap();
    let (ns_a, _, _) = state.pod_names("ns", "a").unwrap();
    let (ns_b, _, _) = state.pod_names("ns", "b").unwrap();
    assert!(Arc::ptr_eq(&ns_a, &ns_b));
}

#[test]
fn snapshot_held_by_a_reader_is_unchanged_by_later_writes() {
    let store = Store::new(config());
    let node = name("n1");
    for t in [100, 115] {
        store.write_node(&node, &steady(t, &[("ns", "p")]), t * S);
    }
    let held = store.snapshot();
    store.write_node(&node, &steady(130, &[("ns", "q")]), 130 * S);
    store.remove_node("n1");
    assert_eq!(held.node("n1").unwrap().timestamp, 115 * S);
    assert_eq!(held.pod("ns", "p").unwrap().timestamp, 115 * S);
    assert!(store.snapshot().node("n1").is_none());
}

#[test]
fn readiness_needs_a_servable_node_and_a_servable_pod() {
    let store = Store::new(config());
    let node = name("n1");
    for t in [100, 115] {
        store.write_node(&node, &steady(t, &[]), t * S);
    }
    assert!(!store.snapshot().is_ready(), "no pod yet");
    store.write_node(&node, &steady(130, &[("ns", "p")]), 130 * S);
    assert!(!store.snapshot().is_ready(), "pod has one point");
    store.write_node(&node, &steady(145, &[("ns", "p")]), 145 * S);
    assert!(store.snapshot().is_ready());
}

#[test]
fn pod_recreated_on_another_node_is_served_by_its_newest_reporter() {
    let store = Store::new(config());
    let (old, new) = (name("old"), name("new"));
    for t in [100, 115] {
        store.write_node(&old, &steady(t, &[("ns", "web-0")]), t * S);
    }
    for t in [120, 135] {
        store.write_node(&new, &steady(t, &[("ns", "web-0")]), t * S);
    }
    assert_eq!(&*store.snapshot().pod("ns", "web-0").unwrap().node, "new");
    // The old node still reports its copy for a while, then stops.
    store.write_node(&old, &steady(130, &[("ns", "web-0")]), 130 * S);
    assert_eq!(&*store.snapshot().pod("ns", "web-0").unwrap().node, "new");
    store.write_node(&old, &steady(145, &[]), 145 * S);
    let snapshot = store.snapshot();
    assert_eq!(&*snapshot.pod("ns", "web-0").unwrap().node, "new");
    assert_eq!(snapshot.pod_count(), 1);
}

#[test]
fn counts_follow_what_is_served() {
    let store = Store::new(config());
    let node = name("n1");
    let p = |t: i64| point(0, t * S, (t * S) as u64, 1);
    let scrape = |t: i64| NodeScrape {
        node: Some(p(t)),
        pods: vec![
            pod("ns", "a", &[("x", p(t)), ("y", p(t))]),
            pod("ns", "b", &[("x", p(t))]),
        ],
    };
    for t in [100, 115] {
        store.write_node(&node, &scrape(t), t * S);
    }
    let snapshot = store.snapshot();
    assert_eq!(
        (
            snapshot.node_count(),
            snapshot.pod_count(),
            snapshot.container_count()
        ),
        (1, 2, 3)
    );
}

#[test]
fn concurrent_writers_all_publish() {
    let store = Arc::new(Store::new(config()));
    let threads: Vec<_> = (0..4)
        .map(|i| {
            let store = Arc::clone(&store);
            std::thread::spawn(move || {
                for n in 0..25 {
                    let node = name(&format!("node-{i}-{n}"));
                    let pod_name = format!("pod-{i}-{n}");
                    for t in [100, 115] {
                        store.write_node(&node, &steady(t, &[("ns", &pod_name)]), t * S);
                    }
                }
            })
        })
        .collect();
    for thread in threads {
        thread.join().expect("writer thread");
    }
    let snapshot = store.snapshot();
    assert_eq!(snapshot.nodes().count(), 100);
    assert_eq!(snapshot.pods().count(), 100);
    assert_eq!(snapshot.node_count(), 100);
}

// The model cell's atomics are loom's under `--cfg store_loom`, usable only inside a model.
#[cfg(not(store_loom))]
#[test]
fn model_cell_publishes_like_arc_swap() {
    let cell = sync::ModelCell::new(Snapshot::default());
    let mut state = NodeState::new(100 * S);
    let node = name("n1");
    for t in [100, 115] {
        write_locked(
            &mut state,
            &node,
            &steady(t, &[("ns", "p")]),
            t * S,
            15 * S,
            None,
            &cell,
        );
    }
    let snapshot = cell.load();
    assert_eq!(snapshot.node("n1").unwrap().timestamp, 115 * S);
    assert!(snapshot.pod("ns", "p").is_some());
    unpublish_node(&node, &cell);
    assert!(!cell.load().has_node("n1"));
}

#[test]
fn default_config_derives_staleness_from_resolution() {
    let config = StoreConfig::from_resolution(Duration::from_secs(30));
    assert_eq!(config.staleness, Duration::from_secs(120));
    assert_eq!(
        StoreConfig::from_resolution(Duration::from_secs(10)).staleness,
        Duration::from_secs(60)
    );
    assert_eq!(StoreConfig::default().resolution, Duration::from_secs(60));
}

// === properties ===

#[derive(Clone, Debug)]
enum Op {
    Write {
        node: usize,
        pods: Vec<(usize, usize)>,
    },
    RemoveNode(usize),
    RemovePod(usize, usize),
    Expire,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0..4usize, proptest::collection::vec((0..3usize, 0..4usize), 0..5))
            .prop_map(|(node, pods)| Op::Write { node, pods }),
        1 => (0..4usize).prop_map(Op::RemoveNode),
        1 => (0..3usize, 0..4usize).prop_map(|(ns, p)| Op::RemovePod(ns, p)),
        1 => Just(Op::Expire),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    /// Whatever happens, the snapshot's index, entries and counts agree, and lists stay sorted.
    #[test]
    fn snapshot_stays_self_consistent(ops in proptest::collection::vec(op(), 1..40)) {
        let store = Store::new(config());
        let mut t = 100;
        for op in ops {
            t += 15;
            match op {
                Op::Write { node, pods } => {
                    let names: Vec<(String, String)> =
                        pods.iter().map(|(ns, p)| (format!("ns{ns}"), format!("p{p}"))).collect();
                    let refs: Vec<(&str, &str)> =
                        names.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
                    store.write_node(&name(&format!("n{node}")), &steady(t, &refs), t * S);
                }
                Op::RemoveNode(node) => store.remove_node(&format!("n{node}")),
                Op::RemovePod(ns, p) => store.remove_pod(&format!("ns{ns}"), &format!("p{p}")),
                Op::Expire => store.expire(t * S),
            }
            let snapshot = store.snapshot();
            let listed: Vec<_> = snapshot.pods().collect();
            prop_assert_eq!(listed.len(), snapshot.pod_count(), "every indexed pod resolves");
            prop_assert!(snapshot.slots_are_current());
            for pair in listed.windows(2) {
                prop_assert!((&*pair[0].namespace, &*pair[0].name) < (&*pair[1].namespace, &*pair[1].name));
            }
            for p in &listed {
                prop_assert_eq!(snapshot.pod(&p.namespace, &p.name), Some(*p));
                prop_assert!(p.timestamp <= t * S);
            }
            let containers: usize = listed.iter().map(|p| p.containers.len()).sum();
            prop_assert!(containers <= snapshot.container_count());
            prop_assert_eq!(snapshot.nodes().count(), snapshot.node_count());
            let by_ns: usize = (0..3).map(|ns| snapshot.pods_in_namespace(&format!("ns{ns}")).count()).sum();
            prop_assert_eq!(by_ns, snapshot.pod_count());
            // The cached JSON parts are those of the very pod they come with, however the entry
            // they were cached in has been shared or replaced since.
            let with_json: Vec<_> = snapshot.pods_json().collect();
            prop_assert_eq!(with_json.len(), listed.len());
            for ((p, parts), q) in with_json.iter().zip(&listed) {
                prop_assert_eq!(*p, *q);
                let mut fresh = Vec::new();
                let head = crate::api::render::pod_item_parts(&mut fresh, p);
                prop_assert_eq!(parts.head, &fresh[..head]);
                prop_assert_eq!(parts.tail, &fresh[head..]);
            }
            let by_ns_json: usize = (0..3).map(|ns| snapshot.pods_in_namespace_json(&format!("ns{ns}")).count()).sum();
            prop_assert_eq!(by_ns_json, snapshot.pod_count());
        }
    }
}

#[test]
fn reordered_containers_keep_their_points() {
    let store = Store::new(config());
    let node = name("n1");
    let p = |t: i64, cpu: u64| point(0, t * S, cpu, 1);
    store.write_node(
        &node,
        &NodeScrape {
            node: None,
            pods: vec![pod("ns", "p", &[("a", p(100, 0)), ("b", p(100, 0))])],
        },
        100 * S,
    );
    store.write_node(
        &node,
        &NodeScrape {
            node: None,
            pods: vec![pod(
                "ns",
                "p",
                &[("b", p(110, 10 * S as u64)), ("a", p(110, 5 * S as u64))],
            )],
        },
        110 * S,
    );
    let snapshot = store.snapshot();
    let served = snapshot.pod("ns", "p").unwrap();
    let usage: Vec<(&str, u64)> = served
        .containers
        .iter()
        .map(|c| (&*c.name, c.usage.cpu_nanocores))
        .collect();
    assert_eq!(usage, vec![("b", 1_000_000_000), ("a", 500_000_000)]);
}

#[test]
fn entries_refilled_in_place_serve_what_fresh_entries_would() {
    // `held` keeps every snapshot alive, so its node's entries are never free to refill; `free`
    // drops them, so from the third write on each publish refills the spare entry in place.
    let held = Store::new(config());
    let free = Store::new(config());
    let mut kept = Vec::new();
    let node = name("n1");
    let pod_sets: [&[(&str, &str)]; 7] = [
        &[("a", "p1"), ("a", "p2"), ("b", "p1")],
        &[("a", "p1"), ("a", "p2"), ("b", "p1")],
        &[("a", "p1"), ("a", "p2"), ("b", "p1")],
        &[("a", "p2"), ("b", "p1"), ("b", "p2"), ("c", "p9")],
        &[("a", "p1")],
        &[],
        &[("a", "p1"), ("z", "p1")],
    ];
    let mut t = 100;
    for pods in pod_sets.iter().chain(pod_sets.iter()) {
        t += 15;
        held.write_node(&node, &steady(t, pods), t * S);
        kept.push(held.snapshot());
        free.write_node(&node, &steady(t, pods), t * S);
        let (a, b) = (held.snapshot(), free.snapshot());
        assert_eq!(a.pods().collect::<Vec<_>>(), b.pods().collect::<Vec<_>>());
        assert_eq!(a.node("n1"), b.node("n1"));
        assert_eq!(a.container_count(), b.container_count());
        assert!(b.slots_are_current());
        let json = |s: &Snapshot| -> Vec<Vec<u8>> {
            s.pods_json()
                .map(|(_, parts)| [parts.head, parts.tail].concat())
                .collect()
        };
        assert_eq!(json(&a), json(&b));
    }
    // The earliest snapshots a reader held still show their own time.
    assert_eq!(kept[1].node("n1").unwrap().timestamp, 130 * S);
}

/// A discovery cache standing in: knows one pod, by its own strings.
struct KnownPods {
    namespace: Name,
    name: Name,
}

impl PodNames for KnownPods {
    fn pod_names(&self, namespace: &str, name: &str) -> Option<(Name, Name)> {
        (namespace == &*self.namespace && name == &*self.name)
            .then(|| (Arc::clone(&self.namespace), Arc::clone(&self.name)))
    }
}

#[test]
fn pods_new_to_the_store_take_their_names_from_the_source_that_knows_them() {
    let source = Arc::new(KnownPods {
        namespace: name("ns"),
        name: name("known"),
    });
    let store = Store::new(config()).with_pod_names(Arc::clone(&source) as Arc<dyn PodNames>);
    let node = name("n1");
    let scrape = |t: i64| {
        let p = point(0, t * S, (t * S) as u64, 1);
        let pod = |pod: &'static str| PodScrape {
            namespace: Cow::Owned("ns".to_string()),
            name: Cow::Borrowed(pod),
            containers: smallvec::smallvec![ContainerScrape {
                name: Cow::Borrowed("c"),
                point: p,
            }],
        };
        NodeScrape {
            node: Some(p),
            pods: vec![pod("known"), pod("unknown")],
        }
    };
    store.write_node(&node, &scrape(100), 100 * S);
    for t in [115, 130] {
        store.write_node(&node, &scrape(t), t * S);
        let snapshot = store.snapshot();
        let known = snapshot.pod("ns", "known").expect("served");
        assert!(Arc::ptr_eq(&known.namespace, &source.namespace));
        assert!(Arc::ptr_eq(&known.name, &source.name));
        // A pod the source does not know keeps the scrape's name, with the same content.
        let unknown = snapshot.pod("ns", "unknown").expect("served");
        assert!(!Arc::ptr_eq(&unknown.name, &source.name));
        assert_eq!(&*unknown.name, "unknown");
        assert_eq!(&*unknown.namespace, "ns");
    }
    assert!(store.snapshot().slots_are_current());
}
