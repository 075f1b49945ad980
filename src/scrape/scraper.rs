//! The per-node actor: scrapes one kubelet every resolution, at the node's own phase.
//!
//! Its scrape loop is a future of its own on the actor's arbiter, so a hanging kubelet holds only
//! that future: other actors on the same thread keep running. It writes only its own node, and
//! only through the sink.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use actix::{Actor, ActorContext, AsyncContext, Context, Handler, Message, WrapFuture};
use tokio::sync::Semaphore;
use tokio::time::{Instant, MissedTickBehavior};
use tracing::Instrument;

use super::backoff::Backoff;
use super::buffer::BodyBuffer;
use super::client::KubeletClient;
use super::tls::KubeletTls;
use super::{unix_now, EngineOptions, NodeCounters, ScrapeFailure, ScrapeSink};
use crate::model::{Name, ScrapeTarget};
use crate::telemetry::{NodeRequestSeries, Telemetry};

/// Everything a scraper needs; moved to the scraper's arbiter when it starts.
pub struct ScraperParts {
    pub target: ScrapeTarget,
    pub tls: KubeletTls,
    pub resolution: Duration,
    pub request_timeout: Duration,
    pub max_body_bytes: usize,
    pub options: EngineOptions,
    pub sink: Arc<dyn ScrapeSink>,
    pub telemetry: Arc<Telemetry>,
    /// Shared by all scrapers; see [`EngineOptions::max_concurrent_connects`].
    pub connect_limit: Option<Arc<Semaphore>>,
    pub(crate) counters: Arc<NodeCounters>,
}

/// The actor. It holds the loop's lifetime: stopping the actor drops the loop, its connection
/// and any scrape in flight.
pub struct Scraper {
    parts: Option<ScraperParts>,
    /// Set by [`Stop`] before the actor answers it. The loop checks it before every scrape and
    /// before every write, on the same thread, so once `Stop` is answered this node is never
    /// written again (its data can then be removed safely).
    stopped: Arc<AtomicBool>,
}

/// Stops a scraper; answered once it will no longer write.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Stop;

// === impl Scraper ===

impl Scraper {
    pub fn new(parts: ScraperParts) -> Self {
        Scraper {
            parts: Some(parts),
            stopped: Arc::new(AtomicBool::new(false)),
        }
    }
}

impl Actor for Scraper {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        let Some(parts) = self.parts.take() else {
            return;
        };
        let span = tracing::info_span!("scraper", node = %parts.target.node);
        let run = ScrapeLoop::new(parts, self.stopped.clone()).run();
        ctx.spawn(run.instrument(span).into_actor(self));
    }
}

impl Handler<Stop> for Scraper {
    type Result = ();

    fn handle(&mut self, _: Stop, ctx: &mut Context<Self>) {
        self.stopped.store(true, Ordering::SeqCst);
        ctx.stop();
    }
}

/// The state the loop owns across scrapes.
struct ScrapeLoop {
    node: Name,
    client: KubeletClient,
    resolution: Duration,
    request_timeout: Duration,
    backoff: Backoff,
    /// No reconnect before this instant (backing off after a lost connection).
    not_before: Option<Instant>,
    sink: Arc<dyn ScrapeSink>,
    telemetry: Arc<Telemetry>,
    /// This node's request series, looked up once.
    request_series: NodeRequestSeries,
    counters: Arc<NodeCounters>,
    stopped: Arc<AtomicBool>,
}

// === impl ScrapeLoop ===

impl ScrapeLoop {
    fn new(parts: ScraperParts, stopped: Arc<AtomicBool>) -> Self {
        let node = parts.target.node.clone();
        let request_series = parts.telemetry.node_request_series(&node);
        ScrapeLoop {
            node,
            client: KubeletClient::new(
                parts.target,
                parts.tls,
                parts.max_body_bytes,
                parts.connect_limit,
                parts.counters.clone(),
            ),
            resolution: parts.resolution,
            request_timeout: parts.request_timeout,
            backoff: Backoff::new(parts.options.reconnect_base, parts.options.reconnect_max),
            not_before: None,
            sink: parts.sink,
            request_series,
            telemetry: parts.telemetry,
            counters: parts.counters,
            stopped,
        }
    }

    async fn run(mut self) {
        let first = Instant::now() + delay_to_phase(&self.node, self.resolution, unix_now());
        let mut ticks = tokio::time::interval_at(first, self.resolution);
        // A scrape that overran (it is bounded by the timeout) skips ticks rather than bunching
        // them, so the node keeps its phase.
        ticks.set_missed_tick_behavior(MissedTickBehavior::Skip);
        loop {
            ticks.tick().await;
            if self.stopped.load(Ordering::SeqCst) {
                return;
            }
            if self.not_before.is_some_and(|t| Instant::now() < t) {
                self.counters.skipped();
                continue;
            }
            self.scrape_once().await;
        }
    }

    async fn scrape_once(&mut self) {
        let started = Instant::now();
        let request_time = unix_now();
        // From this thread's pool: the sink only borrows the body, so the buffer is free again
        // (and goes back to the pool) as soon as this scrape is done.
        let mut body = BodyBuffer::take();
        // A node that must connect first waits for its turn at handshaking (bounded by the
        // request timeout too), and then has the whole request timeout for the handshake and
        // the request: under a start-up storm a turn is not wasted on a handshake that the time
        // left could not have covered.
        let turn =
            match tokio::time::timeout(self.request_timeout, self.client.handshake_turn()).await {
                Ok(turn) => Ok(turn),
                Err(_) => Err(ScrapeFailure::Timeout(self.request_timeout)),
            };
        let result = match turn {
            Ok(turn) => {
                let fetch = self.client.fetch_with_turn(&mut body, turn);
                match tokio::time::timeout(self.request_timeout, fetch).await {
                    Ok(result) => result,
                    Err(_) => {
                        // The exchange was dropped half-way; a connection in an unknown state is
                        // not kept.
                        self.client.disconnect();
                        Err(ScrapeFailure::Timeout(self.request_timeout))
                    }
                }
            }
            Err(waited) => Err(waited),
        };
        let now = unix_now();
        let result = result.and_then(|()| {
            if self.stopped.load(Ordering::SeqCst) {
                return Ok(());
            }
            self.sink.accept(&self.node, &body, request_time, now)
        });
        drop(body);
        self.request_series.record(
            request_time as f64 / 1e9,
            started.elapsed().as_secs_f64(),
            result.is_ok(),
        );
        match result {
            Ok(()) => {
                self.counters.scraped();
                self.telemetry.collection_progressed(now);
                self.backoff.reset();
                self.not_before = None;
            }
            Err(error) => {
                self.counters.failed(&error);
                if self.client.is_connected() {
                    tracing::warn!(error = %error, "Scrape failed.");
                } else {
                    let delay = self.backoff.failed();
                    self.not_before = Some(Instant::now() + delay);
                    tracing::warn!(
                        error = %error,
                        retry_in_ms = delay.as_millis() as u64,
                        failures = self.backoff.failures(),
                        "Scrape failed; reconnecting after a backoff."
                    );
                }
            }
        }
    }
}

/// Scrape slots are rounded down to this grid (or to a tenth of the resolution, if less), so the
/// scrapes of several nodes on a thread start at one wake-up of it and their answers are read in
/// few. Spread one by one, every scrape cost two sleeps and wake-ups of its thread; those were
/// over a third of the CPU per scrape at 1,000 nodes every 15 s (400 µs per scrape with slots
/// spread to the nanosecond, 250 µs with a 100 ms grid, 195 µs with this one, no better with a
/// coarser one). Phases still spread the nodes over the whole period, a grid step apart.
pub const PHASE_GRID: Duration = Duration::from_millis(250);

/// How long until this node's next scrape slot. Slots are `phase + k * resolution` on the wall
/// clock, with the phase taken from a hash of the node name and rounded down to the grid (see
/// [`PHASE_GRID`]), so nodes are spread over the period, several to a slot, and a restarted
/// server keeps each node's slot.
pub fn delay_to_phase(node: &str, resolution: Duration, now: crate::model::UnixNanos) -> Duration {
    let period = resolution.as_nanos().max(1);
    let grid = PHASE_GRID.min(resolution / 10).as_nanos().max(1);
    let phase = u128::from(fnv1a(node.as_bytes())) % period / grid * grid;
    let now = u128::try_from(now.max(0)).unwrap_or(0) % period;
    let delay = (phase + period - now) % period;
    // `delay < period`, which came from a Duration, so it fits back in one.
    Duration::from_nanos(u64::try_from(delay).unwrap_or(u64::MAX))
}

/// FNV-1a: stable across runs and platforms (std's hasher is randomly seeded).
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
        (hash ^ u64::from(*byte)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn phases_spread_over_the_period() {
        let resolution = Duration::from_secs(15);
        let mut buckets = [0u32; 15];
        for i in 0..3000 {
            let delay = delay_to_phase(&format!("node-{i}"), resolution, 0);
            buckets[delay.as_secs() as usize] += 1;
        }
        // 200 expected per one-second bucket; a herd would put most in one.
        assert!(
            buckets.iter().all(|&n| (100..=300).contains(&n)),
            "{buckets:?}"
        );
    }

    /// The distinct slots `nodes` nodes fall in, each checked to lie on `grid`.
    fn slots(
        nodes: usize,
        resolution: Duration,
        grid: Duration,
    ) -> std::collections::BTreeSet<u128> {
        (0..nodes)
            .map(|i| {
                let delay = delay_to_phase(&format!("node-{i}"), resolution, 0).as_nanos();
                assert_eq!(delay % grid.as_nanos(), 0, "{delay} ns is off the grid");
                delay
            })
            .collect()
    }

    #[test]
    fn nodes_share_slots_on_the_grid() {
        // 60 slots of 250 ms in 15 s: 1,000 nodes fill them all, about 17 to a slot.
        let taken = slots(1000, Duration::from_secs(15), PHASE_GRID);
        assert_eq!(taken.len(), 60, "{taken:?}");
        // At one second the grid is a tenth of it: 10 slots.
        let taken = slots(1000, Duration::from_secs(1), Duration::from_millis(100));
        assert_eq!(taken.len(), 10, "{taken:?}");
    }

    proptest! {
        #[test]
        fn next_slot_is_within_one_period_and_on_the_node_phase(
            node in "[a-z0-9-]{1,30}",
            resolution_ms in 1u64..120_000,
            now in 0i64..4_000_000_000_000_000_000,
        ) {
            let resolution = Duration::from_millis(resolution_ms);
            let delay = delay_to_phase(&node, resolution, now);
            prop_assert!(delay < resolution);
            let slot = now as u128 + delay.as_nanos();
            let later = now + 12_345;
            let slot_later = later as u128 + delay_to_phase(&node, resolution, later).as_nanos();
            prop_assert_eq!(slot % resolution.as_nanos(), slot_later % resolution.as_nanos());
        }
    }
}
