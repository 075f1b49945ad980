//! Rendered answers to namespaced pod selections (an HPA's query) and to the whole pod list,
//! kept between requests.
//!
//! An HPA controller asks for the same workload's pods again and again: one namespace, one
//! label selector. Finding them means walking the namespace in the discovery view and in the
//! store's index, and gathering each selected pod's cached JSON from its node's entry: cache
//! misses all along, most of an HPA request's cost in a large cluster. The whole pod list
//! (`kubectl top pods -A`, dashboards, autoscalers' recommenders) is that walk over every pod.
//! This module keeps each such answer's JSON body, with where each pod's part came from, and
//! serves it again while it is provably what a fresh walk would render:
//!
//! - the discovery view is the same one (same generation): same pods, phases and labels;
//! - the store's pod index is unchanged: every pod is served by the same node, at the same slot
//!   (so no selected pod gained or lost metrics);
//! - each pod whose node has published since is fetched again from its slot (one lookup), and
//!   only its part of the body is rewritten. `creationTimestamp`, the request time in seconds, is
//!   rewritten in place when the second changes: it always takes 20 bytes.
//!
//! Only JSON answers are kept. The cache is bounded by the bytes of the bodies it holds; past
//! its budget, about half of the answers are dropped. No answer larger than a
//! [`MAX_SHARE`]th of the budget is kept, so the whole list of a large cluster (tens of MB, most
//! of its pods changed by the time it is asked again) neither crowds the selections out nor
//! holds memory for nothing; it is walked each time, as before.
//!
//! Reads only snapshots and views handed to it; never the store's writer side.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use dashmap::DashMap;

use crate::api::gofmt;
use crate::api::render::{self, LIST_JSON_TAIL, POD_LIST_JSON_HEAD};
use crate::model::{Labels, UnixNanos};
use crate::store::{PodSource, ServedPod, Snapshot};

/// The bytes of answer bodies kept at most.
pub const DEFAULT_BUDGET_BYTES: usize = 64 << 20;

/// No answer larger than this share of the budget is kept (a quarter).
pub const MAX_SHARE: usize = 4;

/// `creationTimestamp`'s bytes: RFC 3339 in UTC, to the second.
const TIMESTAMP_BYTES: usize = 20;
/// Where the timestamp starts after an item's head.
const TIMESTAMP_OFFSET: usize = render::CREATION_TIMESTAMP_KEY.len();

/// Answers by namespace and query.
pub struct AnswerCache {
    answers: DashMap<Box<str>, Arc<Answer>, foldhash::fast::RandomState>,
    /// Body bytes held by `answers`.
    held: AtomicUsize,
    budget: usize,
}

/// One rendered answer and what it was rendered from.
pub struct Answer {
    view_generation: u64,
    index_generation: u64,
    /// The second `body`'s timestamps show.
    second: i64,
    body: Bytes,
    /// Where each pod comes from, in list order; shared by an answer's later renderings.
    sources: Arc<[PodSource]>,
    /// Each pod's part of this rendering, in list order.
    items: Box<[Item]>,
}

/// One pod's part of an answer's rendering.
#[derive(Clone, Copy)]
struct Item {
    /// The node's publish the pod's metrics were taken from.
    publish: u64,
    /// The metrics' timestamp, for the freshness histogram.
    timestamp: UnixNanos,
    /// The item's bytes in the body, and its head's length (the timestamp follows the head).
    start: usize,
    end: usize,
    head: usize,
    /// The length of the creation timestamp and labels part, after the head.
    middle: usize,
}

/// A selected pod, as the list walk gives it: what its node serves, its labels and its source.
pub type Selected<'s> = (ServedPod<'s>, &'s Labels, PodSource);

// === impl AnswerCache ===

impl Default for AnswerCache {
    fn default() -> Self {
        AnswerCache::with_budget(DEFAULT_BUDGET_BYTES)
    }
}

impl AnswerCache {
    pub fn with_budget(budget: usize) -> Self {
        AnswerCache {
            answers: DashMap::default(),
            held: AtomicUsize::new(0),
            budget,
        }
    }

    /// The key of a namespaced list's answer.
    pub fn key(namespace: &str, query: &str) -> String {
        let mut key = String::with_capacity(namespace.len() + 1 + query.len());
        key.push_str(namespace);
        // Not valid in a namespace name, so no two (namespace, query) pairs share a key.
        key.push('?');
        key.push_str(query);
        key
    }

    /// The key of the whole pod list's answer. It holds no namespace (no namespace's key is
    /// empty before its `?`) and no query: without selectors, nothing in the query changes the
    /// list.
    pub fn whole_list_key() -> &'static str {
        "?"
    }

    /// Whether an answer of about `bytes` would be kept.
    pub fn may_keep(&self, bytes: usize) -> bool {
        bytes <= self.budget / MAX_SHARE
    }

    /// The answer kept under `key`, brought up to `snapshot` and `now`, if it is still what a
    /// walk of `view_generation`'s view and `snapshot` would render. `None` when it is not (or
    /// nothing is kept): the caller walks and [`AnswerCache::insert`]s.
    pub fn current(
        &self,
        key: &str,
        view_generation: u64,
        snapshot: &Snapshot,
        now: UnixNanos,
    ) -> Option<Arc<Answer>> {
        let kept = Arc::clone(&*self.answers.get(key)?);
        if kept.view_generation != view_generation
            || kept.index_generation != snapshot.index_generation()
        {
            return None;
        }
        let second = second_of(now);
        let stale = kept
            .items
            .iter()
            .zip(kept.sources.iter())
            .any(|(item, source)| !source.is_current(item.publish));
        if !stale && kept.second == second {
            return Some(kept);
        }
        let next = Arc::new(if stale {
            kept.refreshed(snapshot, now)?
        } else {
            kept.restamped(now)
        });
        self.keep(key.into(), Arc::clone(&next));
        Some(next)
    }

    /// Renders the answer of `selected` (in list order) at `now` and keeps it under `key`.
    pub fn insert<'s>(
        &self,
        key: String,
        view_generation: u64,
        snapshot: &Snapshot,
        selected: impl ExactSizeIterator<Item = Selected<'s>>,
        now: UnixNanos,
    ) -> Arc<Answer> {
        let now_text = gofmt::rfc3339(now);
        let mut body = Vec::with_capacity(POD_LIST_JSON_HEAD.len() + selected.len() * 512);
        body.extend_from_slice(POD_LIST_JSON_HEAD);
        let mut items = Vec::with_capacity(selected.len());
        let mut sources = Vec::with_capacity(selected.len());
        for (i, (served, labels, source)) in selected.enumerate() {
            if i > 0 {
                body.push(b',');
            }
            let start = body.len();
            body.extend_from_slice(served.parts.head);
            render::creation_and_labels(&mut body, labels, &now_text);
            let middle = body.len() - start - served.parts.head.len();
            body.extend_from_slice(served.parts.tail);
            items.push(Item {
                publish: served.publish,
                timestamp: served.metrics.timestamp,
                start,
                end: body.len(),
                head: served.parts.head.len(),
                middle,
            });
            sources.push(source);
        }
        body.extend_from_slice(LIST_JSON_TAIL);
        let answer = Arc::new(Answer {
            view_generation,
            index_generation: snapshot.index_generation(),
            second: second_of(now),
            body: Bytes::from(body),
            sources: sources.into(),
            items: items.into(),
        });
        self.keep(key.into_boxed_str(), Arc::clone(&answer));
        answer
    }

    /// Answers kept.
    pub fn len(&self) -> usize {
        self.answers.len()
    }

    pub fn is_empty(&self) -> bool {
        self.answers.is_empty()
    }

    /// Body bytes kept.
    pub fn held_bytes(&self) -> usize {
        self.held.load(Ordering::Relaxed)
    }

    fn keep(&self, key: Box<str>, answer: Arc<Answer>) {
        let bytes = answer.body.len();
        if !self.may_keep(bytes) {
            return;
        }
        if self.held.load(Ordering::Relaxed) + bytes > self.budget {
            self.evict_half();
        }
        self.held.fetch_add(bytes, Ordering::Relaxed);
        if let Some(old) = self.answers.insert(key, answer) {
            self.held.fetch_sub(old.body.len(), Ordering::Relaxed);
        }
    }

    /// Drops every other answer, in the map's (arbitrary) order.
    fn evict_half(&self) {
        let mut keep = false;
        self.answers.retain(|_, answer| {
            keep = !keep;
            if !keep {
                self.held.fetch_sub(answer.body.len(), Ordering::Relaxed);
            }
            keep
        });
    }
}

// === impl Answer ===

impl Answer {
    /// The JSON body.
    pub fn body(&self) -> Bytes {
        self.body.clone()
    }

    /// The served pods' metrics timestamps, in list order.
    pub fn timestamps(&self) -> impl Iterator<Item = UnixNanos> + '_ {
        self.items.iter().map(|item| item.timestamp)
    }

    /// This answer at `now`'s second: the same bytes with each timestamp rewritten.
    fn restamped(&self, now: UnixNanos) -> Answer {
        let now_text = gofmt::rfc3339(now);
        let mut body = self.body.to_vec();
        for item in self.items.iter() {
            let at = item.start + item.head + TIMESTAMP_OFFSET;
            body[at..at + TIMESTAMP_BYTES].copy_from_slice(&now_text);
        }
        Answer {
            view_generation: self.view_generation,
            index_generation: self.index_generation,
            second: second_of(now),
            body: Bytes::from(body),
            sources: Arc::clone(&self.sources),
            items: self.items.clone(),
        }
    }

    /// This answer with the pods whose nodes published since fetched again from `snapshot`, at
    /// `now`'s second. `None` if one is no longer where it was.
    fn refreshed(&self, snapshot: &Snapshot, now: UnixNanos) -> Option<Answer> {
        let now_text = gofmt::rfc3339(now);
        let mut body = Vec::with_capacity(self.body.len() + 256);
        body.extend_from_slice(POD_LIST_JSON_HEAD);
        let mut items = Vec::with_capacity(self.items.len());
        for (i, (item, source)) in self.items.iter().zip(self.sources.iter()).enumerate() {
            if i > 0 {
                body.push(b',');
            }
            let start = body.len();
            let old = &self.body[item.start..item.end];
            let (old_head, rest) = old.split_at(item.head);
            let (middle, old_tail) = rest.split_at(item.middle);
            let (head, tail, publish, timestamp) = if source.is_current(item.publish) {
                (old_head, old_tail, item.publish, item.timestamp)
            } else {
                let served = snapshot.pod_from_source(source)?;
                (
                    served.parts.head,
                    served.parts.tail,
                    served.publish,
                    served.metrics.timestamp,
                )
            };
            body.extend_from_slice(head);
            let at = body.len() + TIMESTAMP_OFFSET;
            body.extend_from_slice(middle);
            body[at..at + TIMESTAMP_BYTES].copy_from_slice(&now_text);
            body.extend_from_slice(tail);
            items.push(Item {
                publish,
                timestamp,
                start,
                end: body.len(),
                head: head.len(),
                middle: item.middle,
            });
        }
        body.extend_from_slice(LIST_JSON_TAIL);
        Some(Answer {
            view_generation: self.view_generation,
            index_generation: self.index_generation,
            second: second_of(now),
            body: Bytes::from(body),
            sources: Arc::clone(&self.sources),
            items: items.into(),
        })
    }
}

/// The whole second of `now`, which an answer's `creationTimestamp` shows.
fn second_of(now: UnixNanos) -> i64 {
    now.div_euclid(1_000_000_000)
}
