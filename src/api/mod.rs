//! The `metrics.k8s.io/v1beta1` API: routes, rendering, selectors, authentication hooks and health.
//!
//! Reads store snapshots and discovery caches; never writes either, and never waits on a lock or a
//! channel the scrape side holds.

pub mod authn;
pub mod authz;
pub mod gofmt;
pub mod json;
pub mod quantity;
pub mod render;
pub mod selector;
