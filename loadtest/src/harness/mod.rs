//! The load-test harness: runs a [`case::Case`] (a TOML file) against the metrics server binary
//! and a simulated kubelet fleet, measures every process, and writes a report directory.
//!
//! Data flows one way: `case` (what to run) -> `runner` (children, load, samplers, deadline) ->
//! `report` (figures vs budgets, `summary.md`) and `plot` (SVG time series). `procstat` reads
//! `/proc`, `apiload` drives the API (over HTTP/2 through `h2_pipeline`), `freshness` measures how old what the API serves is. The
//! harness never talks to anything but loopback.

pub mod apiload;
pub mod case;
pub mod fleetctl;
pub mod freshness;
pub mod h2_pipeline;
pub mod peers;
pub mod plot;
pub mod procstat;
pub mod report;
pub mod runner;
