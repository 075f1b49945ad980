//! The `metrics.k8s.io/v1beta1` API: routes, rendering, selectors, authentication hooks and health.
//!
//! Reads store snapshots and discovery caches; never writes either, and never waits on a lock or a
//! channel the scrape side holds.

pub mod gofmt;
pub mod json;
pub mod negotiate;
pub mod openapi;
pub mod protobuf;
pub mod quantity;
pub mod render;
pub mod selector;
pub mod table;
