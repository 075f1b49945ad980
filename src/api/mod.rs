//! The `metrics.k8s.io/v1beta1` API: routes, rendering, selectors, authentication hooks and health.
//!
//! Reads store snapshots and discovery caches; never writes either, and never waits on a lock or a
//! channel the scrape side holds.

pub mod answers;
pub mod auth;
pub mod authn;
pub mod authz;
pub mod batched_writes;
pub mod body;
pub mod discovery_docs;
pub mod gofmt;
pub mod health;
pub mod json;
pub mod negotiate;
pub mod openapi;
pub mod protobuf;
pub mod quantity;
pub mod render;
pub mod routes;
pub mod selector;
pub mod server;
pub mod table;
