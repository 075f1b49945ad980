//! Churn: pods created and deleted, containers restarted, nodes added and removed, at configured
//! rates, so a metrics server sees a living cluster.
//!
//! Every change goes through the [`FleetHandle`], which updates both what the kubelets report and
//! the cluster the API stand-in watches. Choices are drawn from the seed, so a run repeats.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::fleet::FleetHandle;
use crate::kubelet::sim::mix;

/// Events per second of each kind; fractions accumulate across ticks.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct ChurnRates {
    pub pod_create: f64,
    pub pod_delete: f64,
    pub container_restart: f64,
    pub node_add: f64,
    pub node_remove: f64,
}

impl ChurnRates {
    pub fn is_idle(&self) -> bool {
        self.pod_create <= 0.0
            && self.pod_delete <= 0.0
            && self.container_restart <= 0.0
            && self.node_add <= 0.0
            && self.node_remove <= 0.0
    }
}

/// What a churn run did so far.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ChurnTally {
    pub pods_created: u64,
    pub pods_deleted: u64,
    pub containers_restarted: u64,
    pub nodes_added: u64,
    pub nodes_removed: u64,
    /// Changes that could not be applied (nothing left to delete, a name exhausted...).
    pub failed: u64,
}

/// Applies churn at `rates` every `tick` until `stop` is cancelled; returns what it did.
pub async fn run(
    fleet: FleetHandle,
    rates: ChurnRates,
    tick: Duration,
    stop: CancellationToken,
) -> ChurnTally {
    let mut tally = ChurnTally::default();
    let mut budget = [0.0f64; 5];
    let mut draw = 0u64;
    let seed = fleet.seed() ^ 0xC4A2;
    let mut interval = tokio::time::interval(tick);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = interval.tick() => {}
            _ = stop.cancelled() => return tally,
        }
        let secs = tick.as_secs_f64();
        let per_kind = [
            rates.pod_create,
            rates.pod_delete,
            rates.container_restart,
            rates.node_add,
            rates.node_remove,
        ];
        for (kind, rate) in per_kind.iter().enumerate() {
            budget[kind] += rate.max(0.0) * secs;
            while budget[kind] >= 1.0 {
                budget[kind] -= 1.0;
                draw += 1;
                let ok = apply(&fleet, kind, mix(seed, &[draw]), &mut tally).await;
                if !ok {
                    tally.failed += 1;
                }
            }
        }
    }
}

async fn apply(fleet: &FleetHandle, kind: usize, roll: u64, tally: &mut ChurnTally) -> bool {
    let nodes = fleet.addresses();
    let pick_node = |r: u64| -> Option<String> {
        if nodes.is_empty() {
            return None;
        }
        Some(nodes[(r % nodes.len() as u64) as usize].0.clone())
    };
    match kind {
        0 => {
            let Some(node) = pick_node(roll) else {
                return false;
            };
            match fleet.add_pod(&node) {
                Ok(_) => {
                    tally.pods_created += 1;
                    true
                }
                Err(error) => {
                    tracing::debug!(%node, %error, "Churn could not add a pod.");
                    false
                }
            }
        }
        1 | 2 => {
            let Some(node) = pick_node(roll) else {
                return false;
            };
            let pods = fleet.pods_on(&node);
            if pods.is_empty() {
                return false;
            }
            let (ns, pod, containers) = &pods[(mix(roll, &[1]) % pods.len() as u64) as usize];
            if kind == 1 {
                let ok = fleet.remove_pod(ns, pod).is_ok();
                tally.pods_deleted += u64::from(ok);
                ok
            } else {
                if containers.is_empty() {
                    return false;
                }
                let c = &containers[(mix(roll, &[2]) % containers.len() as u64) as usize];
                let ok = fleet.restart_container(ns, pod, c).is_ok();
                tally.containers_restarted += u64::from(ok);
                ok
            }
        }
        3 => match fleet.add_node().await {
            Ok(_) => {
                tally.nodes_added += 1;
                true
            }
            Err(error) => {
                tracing::warn!(%error, "Churn could not add a node.");
                false
            }
        },
        _ => {
            let Some(node) = pick_node(roll) else {
                return false;
            };
            let ok = fleet.remove_node(&node).is_ok();
            tally.nodes_removed += u64::from(ok);
            ok
        }
    }
}
