//! The supervisor: one scraper per scrape target, kept in step with discovery.
//!
//! It runs on the arbiter that started scraping and spreads scrapers round-robin over the scrape
//! arbiters. A new target starts a scraper, a changed target restarts it with the new settings,
//! and a target that went away stops it and then forgets the node (store data and per-node
//! self-metrics). It never scrapes and never waits on a scraper except to learn that one stopped.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use actix::{
    Actor, ActorContext, ActorFutureExt, Addr, ArbiterHandle, AsyncContext, Context, Handler,
    Message, WrapFuture,
};
use tokio::sync::{watch, Semaphore};

use super::scraper::{Scraper, ScraperParts, Stop};
use super::tls::KubeletTls;
use super::{EngineOptions, NodeCounters, ScrapeConfig, ScrapeSink, StatsMap};
use crate::discovery::Targets;
use crate::model::{Name, ScrapeTarget};
use crate::telemetry::Telemetry;

/// What the supervisor is built from.
pub struct SupervisorParts {
    pub sink: Arc<dyn ScrapeSink>,
    pub telemetry: Arc<Telemetry>,
    pub tls: KubeletTls,
    pub config: ScrapeConfig,
    pub options: EngineOptions,
    pub arbiters: Vec<ArbiterHandle>,
    /// Shared by every scraper; see [`EngineOptions::max_concurrent_connects`].
    pub connect_limit: Option<Arc<Semaphore>>,
    pub(crate) stats: StatsMap,
}

pub struct Supervisor {
    parts: SupervisorParts,
    /// Taken when the actor starts, by the task that forwards target changes.
    targets: Option<watch::Receiver<Targets>>,
    running: HashMap<Name, Running>,
    next_arbiter: usize,
}

struct Running {
    target: ScrapeTarget,
    addr: Addr<Scraper>,
}

/// The targets changed.
#[derive(Message)]
#[rtype(result = "()")]
struct Sync(Targets);

/// Stops every scraper and the supervisor.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Shutdown;

// === impl Supervisor ===

impl Supervisor {
    pub fn new(parts: SupervisorParts, targets: watch::Receiver<Targets>) -> Self {
        Supervisor {
            parts,
            targets: Some(targets),
            running: HashMap::new(),
            next_arbiter: 0,
        }
    }

    fn sync(&mut self, targets: &Targets, ctx: &mut Context<Self>) {
        let tick = Instant::now();
        let gone: Vec<Name> = self
            .running
            .keys()
            .filter(|name| !targets.contains_key(*name))
            .cloned()
            .collect();
        for name in gone {
            if let Some(running) = self.running.remove(&name) {
                self.retire(name, running, ctx);
            }
        }
        for (name, target) in targets.iter() {
            match self.running.get(name) {
                Some(running) if running.target == *target => {}
                Some(_) => {
                    // Same node, new address or path: the old scraper stops (its data stays, the
                    // node is still there) and a new one takes over with the new settings.
                    if let Some(old) = self.running.remove(name) {
                        old.addr.do_send(Stop);
                    }
                    tracing::info!(node = %name, host = %target.host, port = target.port, "Scrape target changed; restarting its scraper.");
                    self.spawn_scraper(name.clone(), target.clone());
                }
                None => {
                    tracing::debug!(node = %name, host = %target.host, port = target.port, "Starting scraper.");
                    self.spawn_scraper(name.clone(), target.clone());
                }
            }
        }
        self.parts
            .telemetry
            .manager_tick(tick.elapsed().as_secs_f64());
    }

    fn spawn_scraper(&mut self, name: Name, target: ScrapeTarget) {
        let counters = self
            .parts
            .stats
            .entry(name.clone())
            .or_insert_with(|| Arc::new(NodeCounters::default()))
            .clone();
        let parts = ScraperParts {
            target: target.clone(),
            tls: self.parts.tls.clone(),
            resolution: self.parts.config.resolution,
            request_timeout: self.parts.config.request_timeout,
            max_body_bytes: self.parts.config.max_body_bytes,
            options: self.parts.options.clone(),
            sink: self.parts.sink.clone(),
            telemetry: self.parts.telemetry.clone(),
            connect_limit: self.parts.connect_limit.clone(),
            counters,
        };
        let addr = match self
            .parts
            .arbiters
            .get(self.next_arbiter % self.parts.arbiters.len().max(1))
        {
            Some(arbiter) => Scraper::start_in_arbiter(arbiter, move |_| Scraper::new(parts)),
            // No scrape arbiter (never the case through `start`): run on the supervisor's own.
            None => Scraper::new(parts).start(),
        };
        self.next_arbiter = self.next_arbiter.wrapping_add(1);
        self.running.insert(name, Running { target, addr });
    }

    /// Stops a node's scraper; once it has confirmed it will not write again, forgets the node,
    /// unless the node came back as a target in the meantime (its new scraper owns it then).
    fn retire(&mut self, name: Name, running: Running, ctx: &mut Context<Self>) {
        tracing::info!(node = %name, "Node is no longer a scrape target; stopping its scraper.");
        ctx.spawn(
            async move {
                // An error means the scraper is already gone (its arbiter stopped): it cannot
                // write either, so forgetting the node is just as safe.
                let _ = running.addr.send(Stop).await;
            }
            .into_actor(self)
            .map(move |(), supervisor: &mut Supervisor, _| {
                if supervisor.running.contains_key(&name) {
                    return;
                }
                supervisor.parts.sink.remove(&name);
                supervisor.parts.telemetry.forget_node(&name);
                supervisor.parts.stats.remove(&name);
            }),
        );
    }
}

impl Actor for Supervisor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        let Some(mut targets) = self.targets.take() else {
            return;
        };
        let initial = targets.borrow_and_update().clone();
        self.sync(&initial, ctx);
        let me = ctx.address();
        ctx.spawn(
            async move {
                // Work: each change is forwarded as it comes; a burst of changes collapses into
                // the latest. Shutdown: discovery dropped its sender; scrapers keep their targets.
                while targets.changed().await.is_ok() {
                    let latest = targets.borrow_and_update().clone();
                    me.do_send(Sync(latest));
                }
            }
            .into_actor(self),
        );
    }
}

impl Handler<Sync> for Supervisor {
    type Result = ();

    fn handle(&mut self, Sync(targets): Sync, ctx: &mut Context<Self>) {
        self.sync(&targets, ctx);
    }
}

impl Handler<Shutdown> for Supervisor {
    type Result = ();

    fn handle(&mut self, _: Shutdown, ctx: &mut Context<Self>) {
        for (_, running) in self.running.drain() {
            running.addr.do_send(Stop);
        }
        ctx.stop();
    }
}
