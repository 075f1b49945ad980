//! `/livez`, `/readyz` and `/healthz`: named checks, answered in kube-apiserver's text format.
//!
//! The checks are pure functions of [`HealthInputs`], which the router gathers without waiting on
//! anything (an atomic, a snapshot load, a flag). Output follows kube-apiserver: `ok` when every check
//! passes; with `?verbose`, or on failure, one `[+]name ok` / `[-]name failed: reason` line per check
//! and a closing `livez check passed` / `livez check failed` line; `/livez/<check>` runs one check.
//! Unlike kube-apiserver, failure reasons are shown rather than withheld: none of them is secret and
//! they are what an operator debugging a probe needs.

use std::fmt::Write as _;
use std::time::Duration;

use crate::model::UnixNanos;

/// Which health endpoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Endpoint {
    Livez,
    Readyz,
    Healthz,
}

impl Endpoint {
    pub fn name(self) -> &'static str {
        match self {
            Endpoint::Livez => "livez",
            Endpoint::Readyz => "readyz",
            Endpoint::Healthz => "healthz",
        }
    }

    /// Splits `/livez`, `/livez/<check>` and the like; `None` for any other path.
    pub fn parse(path: &str) -> Option<(Endpoint, Option<&str>)> {
        let trimmed = path.strip_prefix('/')?;
        let (head, check) = match trimmed.split_once('/') {
            Some((head, check)) => (head, Some(check)),
            None => (trimmed, None),
        };
        let endpoint = match head {
            "livez" => Endpoint::Livez,
            "readyz" => Endpoint::Readyz,
            "healthz" => Endpoint::Healthz,
            _ => return None,
        };
        Some((endpoint, check))
    }

    fn checks(self) -> &'static [CheckName] {
        use CheckName::*;
        match self {
            Endpoint::Livez => &[Ping, Log, MetricCollectionTimely],
            Endpoint::Readyz => &[Ping, Log, InformerSync, MetricStorageReady, Shutdown],
            Endpoint::Healthz => &[
                Ping,
                Log,
                InformerSync,
                MetricCollectionTimely,
                MetricStorageReady,
            ],
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum CheckName {
    Ping,
    Log,
    InformerSync,
    MetricCollectionTimely,
    MetricStorageReady,
    Shutdown,
}

impl CheckName {
    fn as_str(self) -> &'static str {
        match self {
            CheckName::Ping => "ping",
            CheckName::Log => "log",
            CheckName::InformerSync => "informer-sync",
            CheckName::MetricCollectionTimely => "metric-collection-timely",
            CheckName::MetricStorageReady => "metric-storage-ready",
            CheckName::Shutdown => "shutdown",
        }
    }
}

/// Settings of the liveness check.
#[derive(Clone, Copy, Debug)]
pub struct HealthConfig {
    /// `--metric-resolution`; collection is stalled after 1.5 x this without progress.
    pub resolution: Duration,
    /// After start, how long collection may take before its first progress counts as late (the
    /// first scrape of every node also has to connect and handshake).
    pub startup_grace: Duration,
    /// When the process started, unix nanoseconds.
    pub started: UnixNanos,
}

/// Everything the checks look at, gathered without blocking.
#[derive(Clone, Copy, Debug)]
pub struct HealthInputs {
    pub now: UnixNanos,
    /// Unix nanoseconds of the last collection progress; 0 = never.
    pub last_collection: UnixNanos,
    /// Storage has at least one node and one pod servable.
    pub storage_ready: bool,
    /// The node and pod caches have completed their first list.
    pub informers_synced: bool,
    pub shutting_down: bool,
}

/// A health answer: status code and `text/plain` body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HealthResponse {
    pub code: u16,
    pub body: String,
}

fn run(check: CheckName, config: &HealthConfig, inputs: &HealthInputs) -> Result<(), String> {
    match check {
        CheckName::Ping | CheckName::Log => Ok(()),
        CheckName::InformerSync => {
            if inputs.informers_synced {
                Ok(())
            } else {
                Err("node and pod caches have not synced".to_owned())
            }
        }
        CheckName::MetricStorageReady => {
            if inputs.storage_ready {
                Ok(())
            } else {
                Err("no metrics to serve".to_owned())
            }
        }
        CheckName::Shutdown => {
            if inputs.shutting_down {
                Err("process is shutting down".to_owned())
            } else {
                Ok(())
            }
        }
        CheckName::MetricCollectionTimely => collection_timely(config, inputs),
    }
}

/// Collection is timely when it progressed within 1.5 x resolution, counting from the end of the
/// start-up grace when it has not progressed since.
fn collection_timely(config: &HealthConfig, inputs: &HealthInputs) -> Result<(), String> {
    let grace_end = config
        .started
        .saturating_add(i64::try_from(config.startup_grace.as_nanos()).unwrap_or(i64::MAX));
    let reference = inputs.last_collection.max(grace_end);
    let allowed =
        i64::try_from(config.resolution.as_nanos().saturating_mul(3) / 2).unwrap_or(i64::MAX);
    let late_by = inputs.now.saturating_sub(reference);
    if late_by > allowed {
        let age = if inputs.last_collection == 0 {
            "never".to_owned()
        } else {
            format!(
                "{:.1}s ago",
                inputs.now.saturating_sub(inputs.last_collection) as f64 / 1e9
            )
        };
        Err(format!(
            "metric collection stalled: last progress {age}, allowed {:.1}s",
            allowed as f64 / 1e9
        ))
    } else {
        Ok(())
    }
}

/// Answers `/<endpoint>` or `/<endpoint>/<check>`. `verbose` is whether `?verbose` was given;
/// `exclude` lists checks skipped by `?exclude=`.
pub fn respond(
    endpoint: Endpoint,
    check: Option<&str>,
    verbose: bool,
    exclude: &[String],
    config: &HealthConfig,
    inputs: &HealthInputs,
) -> HealthResponse {
    if let Some(wanted) = check {
        let Some(found) = endpoint.checks().iter().find(|c| c.as_str() == wanted) else {
            return HealthResponse {
                code: 404,
                body: "404 page not found\n".to_owned(),
            };
        };
        return match run(*found, config, inputs) {
            Ok(()) => HealthResponse {
                code: 200,
                body: "ok".to_owned(),
            },
            Err(reason) => HealthResponse {
                code: 500,
                body: format!("internal server error: {reason}\n"),
            },
        };
    }

    let mut lines = String::new();
    let mut failed = false;
    for name in endpoint.checks() {
        if exclude.iter().any(|e| e == name.as_str()) {
            let _ = writeln!(lines, "[+]{} excluded: ok", name.as_str());
            continue;
        }
        match run(*name, config, inputs) {
            Ok(()) => {
                let _ = writeln!(lines, "[+]{} ok", name.as_str());
            }
            Err(reason) => {
                failed = true;
                let _ = writeln!(lines, "[-]{} failed: {reason}", name.as_str());
            }
        }
    }
    if failed {
        let _ = writeln!(lines, "{} check failed", endpoint.name());
        HealthResponse {
            code: 500,
            body: lines,
        }
    } else if verbose {
        let _ = writeln!(lines, "{} check passed", endpoint.name());
        HealthResponse {
            code: 200,
            body: lines,
        }
    } else {
        HealthResponse {
            code: 200,
            body: "ok".to_owned(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECOND: i64 = 1_000_000_000;

    fn config() -> HealthConfig {
        HealthConfig {
            resolution: Duration::from_secs(10),
            startup_grace: Duration::from_secs(20),
            started: 1_000 * SECOND,
        }
    }

    fn healthy(now: i64) -> HealthInputs {
        HealthInputs {
            now,
            last_collection: now - SECOND,
            storage_ready: true,
            informers_synced: true,
            shutting_down: false,
        }
    }

    #[test]
    fn healthy_endpoints_answer_ok() {
        for endpoint in [Endpoint::Livez, Endpoint::Readyz, Endpoint::Healthz] {
            let answer = respond(
                endpoint,
                None,
                false,
                &[],
                &config(),
                &healthy(2_000 * SECOND),
            );
            assert_eq!(
                answer,
                HealthResponse {
                    code: 200,
                    body: "ok".into()
                }
            );
        }
    }

    #[test]
    fn verbose_lists_every_check_and_the_verdict() {
        let answer = respond(
            Endpoint::Livez,
            None,
            true,
            &[],
            &config(),
            &healthy(2_000 * SECOND),
        );
        assert_eq!(answer.code, 200);
        assert_eq!(
            answer.body,
            "[+]ping ok\n[+]log ok\n[+]metric-collection-timely ok\nlivez check passed\n"
        );
    }

    #[test]
    fn readyz_fails_with_no_metrics_to_serve_until_storage_is_ready() {
        let mut inputs = healthy(2_000 * SECOND);
        inputs.storage_ready = false;
        let answer = respond(Endpoint::Readyz, None, false, &[], &config(), &inputs);
        assert_eq!(answer.code, 500);
        assert!(answer
            .body
            .contains("[-]metric-storage-ready failed: no metrics to serve\n"));
        assert!(answer.body.contains("[+]informer-sync ok\n"));
        assert!(answer.body.ends_with("readyz check failed\n"));
    }

    #[test]
    fn readyz_fails_until_discovery_has_synced() {
        let mut inputs = healthy(2_000 * SECOND);
        inputs.informers_synced = false;
        let answer = respond(Endpoint::Readyz, None, false, &[], &config(), &inputs);
        assert_eq!(answer.code, 500);
        assert!(answer.body.contains("[-]informer-sync failed"));
        // Liveness does not depend on discovery.
        let answer = respond(Endpoint::Livez, None, false, &[], &config(), &inputs);
        assert_eq!(answer.code, 200);
    }

    #[test]
    fn livez_fails_when_collection_stalls_past_one_and_a_half_resolutions() {
        let now = 2_000 * SECOND;
        let mut inputs = healthy(now);
        inputs.last_collection = now - 14 * SECOND;
        assert_eq!(
            respond(Endpoint::Livez, None, false, &[], &config(), &inputs).code,
            200
        );
        inputs.last_collection = now - 16 * SECOND;
        let answer = respond(Endpoint::Livez, None, false, &[], &config(), &inputs);
        assert_eq!(answer.code, 500);
        assert!(answer.body.contains("[-]metric-collection-timely failed"));
    }

    #[test]
    fn livez_tolerates_no_collection_during_the_startup_grace() {
        let started = config().started;
        let mut inputs = healthy(started + 30 * SECOND);
        inputs.last_collection = 0;
        // Grace ends at +20 s; 1.5 x 10 s more is allowed.
        assert_eq!(
            respond(Endpoint::Livez, None, false, &[], &config(), &inputs).code,
            200
        );
        inputs.now = started + 36 * SECOND;
        let answer = respond(Endpoint::Livez, None, false, &[], &config(), &inputs);
        assert_eq!(answer.code, 500);
        assert!(answer.body.contains("last progress never"));
    }

    #[test]
    fn a_single_check_can_be_queried_by_path() {
        let mut inputs = healthy(2_000 * SECOND);
        inputs.storage_ready = false;
        let ok = respond(
            Endpoint::Readyz,
            Some("ping"),
            false,
            &[],
            &config(),
            &inputs,
        );
        assert_eq!(
            ok,
            HealthResponse {
                code: 200,
                body: "ok".into()
            }
        );
        let failed = respond(
            Endpoint::Readyz,
            Some("metric-storage-ready"),
            false,
            &[],
            &config(),
            &inputs,
        );
        assert_eq!(failed.code, 500);
        assert_eq!(failed.body, "internal server error: no metrics to serve\n");
        let missing = respond(
            Endpoint::Livez,
            Some("nope"),
            false,
            &[],
            &config(),
            &inputs,
        );
        assert_eq!(missing.code, 404);
    }

    #[test]
    fn excluded_checks_do_not_fail_the_endpoint() {
        let mut inputs = healthy(2_000 * SECOND);
        inputs.storage_ready = false;
        let answer = respond(
            Endpoint::Readyz,
            None,
            true,
            &["metric-storage-ready".to_owned()],
            &config(),
            &inputs,
        );
        assert_eq!(answer.code, 200);
        assert!(answer
            .body
            .contains("[+]metric-storage-ready excluded: ok\n"));
    }

    #[test]
    fn shutting_down_fails_readiness_only() {
        let mut inputs = healthy(2_000 * SECOND);
        inputs.shutting_down = true;
        assert_eq!(
            respond(Endpoint::Readyz, None, false, &[], &config(), &inputs).code,
            500
        );
        assert_eq!(
            respond(Endpoint::Livez, None, false, &[], &config(), &inputs).code,
            200
        );
    }

    #[test]
    fn health_paths_are_recognised() {
        assert_eq!(Endpoint::parse("/livez"), Some((Endpoint::Livez, None)));
        assert_eq!(
            Endpoint::parse("/readyz/ping"),
            Some((Endpoint::Readyz, Some("ping")))
        );
        assert_eq!(Endpoint::parse("/metrics"), None);
    }
}
