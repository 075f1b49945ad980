//! Sharded storage of the last two points per node and container, and the snapshots readers load.
//!
//! Only a node's own scraper writes that node's data ([`Store::write_node`]); the API only reads
//! [`Snapshot`]s, loaded without locks. Usage is computed here, exactly as upstream metrics-server does.

use std::sync::Arc;
use std::time::Duration;

use crate::model::{Name, NodeMetrics, NodeScrape, PodMetrics, UnixNanos};

/// Settings the usage rules depend on.
#[derive(Clone, Debug)]
pub struct StoreConfig {
    /// `--metric-resolution`: the scrape period.
    pub resolution: Duration,
    /// Points older than this (by the sample timestamp, against the caller's clock) are dropped.
    pub staleness: Duration,
}

/// The writer side: scrapers write, discovery removes, a periodic tick expires.
pub struct Store {}

/// An immutable view of everything servable at one instant.
pub struct Snapshot {}

impl Store {
    pub fn new(_config: StoreConfig) -> Self {
        todo!("store helper")
    }
    /// Stores one node's scrape and publishes the node's new usage at once.
    pub fn write_node(&self, _node: &Name, _scrape: &NodeScrape<'_>, _now: UnixNanos) {
        todo!("store helper")
    }
    /// Forgets a node and every pod it reported.
    pub fn remove_node(&self, _node: &str) {
        todo!("store helper")
    }
    /// Forgets a pod (deleted from the cluster).
    pub fn remove_pod(&self, _namespace: &str, _name: &str) {
        todo!("store helper")
    }
    /// Drops points older than the staleness bound.
    pub fn expire(&self, _now: UnixNanos) {
        todo!("store helper")
    }
    /// The current snapshot; never blocks.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        todo!("store helper")
    }
}

impl Snapshot {
    pub fn node(&self, _name: &str) -> Option<&NodeMetrics> {
        todo!("store helper")
    }
    /// Nodes sorted by name.
    pub fn nodes(&self) -> impl Iterator<Item = &NodeMetrics> {
        std::iter::empty()
    }
    pub fn pod(&self, _namespace: &str, _name: &str) -> Option<&PodMetrics> {
        todo!("store helper")
    }
    /// All pods sorted by namespace, then name.
    pub fn pods(&self) -> impl Iterator<Item = &PodMetrics> {
        std::iter::empty()
    }
    /// One namespace's pods sorted by name, without walking other namespaces.
    pub fn pods_in_namespace(&self, _namespace: &str) -> impl Iterator<Item = &PodMetrics> {
        std::iter::empty()
    }
    /// At least one node and one pod are servable.
    pub fn is_ready(&self) -> bool {
        todo!("store helper")
    }
}
