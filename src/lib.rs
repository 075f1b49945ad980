//! A Kubernetes resource-metrics server: discovers nodes and pods, scrapes every kubelet's
//! `/metrics/resource`, keeps the last two points per node and container, and serves
//! `metrics.k8s.io/v1beta1` as an aggregated API server.
//!
//! The modules follow the data flow: [`discovery`] -> [`scrape`] -> [`parse`] -> [`store`] -> [`api`].
//! Types they share live in [`model`]; flags in [`config`]; the wiring in [`app`].

pub mod api;
pub mod app;
pub mod config;
pub mod discovery;
pub mod model;
pub mod parse;
pub mod priority;
pub mod scrape;
pub mod store;
pub mod telemetry;
