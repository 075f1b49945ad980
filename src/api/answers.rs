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
//! [`MAX_SHARE`]th of the budget is kept, so no one answer crowds the others out. The default
//! budget (512 MiB) keeps the whole pod list up to ~250,000 pods (~100 MB of JSON): a refresh
//! then copies a sequential body and fetches only the changed pods, where a walk goes from pod
//! to pod across every node's entry. A larger list is walked each time.
//!
//! Reads only snapshots and views handed to it; never the store's writer side.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;
use dashmap::DashMap;

use crate::api::body::Body;
use crate::api::gofmt;
use crate::api::render::{self, LIST_JSON_TAIL, POD_LIST_JSON_HEAD};
use crate::model::{Labels, UnixNanos};
use crate::store::{PodSource, ServedPod, Snapshot};

/// The bytes of answer bodies kept at most.
pub const DEFAULT_BUDGET_BYTES: usize = 512 << 20;

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
    /// Held while the whole list is refreshed or walked (see [`AnswerCache::whole_list_turn`]).
    whole_list: Mutex<()>,
}

/// One rendered answer and what it was rendered from.
///
/// The body is held in segments of about [`SEGMENT_BYTES`], each ending after an item: a
/// refresh rebuilds only the segments holding a pod whose node published since and shares the
/// rest with the answer before it, so a long list (the whole pod list), refreshed at nearly
/// every read while its nodes publish, costs neither a copy of its body per read nor a body's
/// worth of memory per response in flight.
pub struct Answer {
    view_generation: u64,
    index_generation: u64,
    /// The second `segments`' timestamps show.
    second: i64,
    /// The body, in order.
    segments: Arc<[Bytes]>,
    /// The body's length.
    bytes: usize,
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
    /// The segment holding the item.
    segment: usize,
    /// The item's bytes in its segment, and its head's length (the timestamp follows the head).
    start: usize,
    end: usize,
    head: usize,
    /// The length of the creation timestamp and labels part, after the head.
    middle: usize,
}

/// A segment is closed after the item that brings it to this many bytes: a segment then goes
/// out in one HTTP/2 frame of the usual 16 KiB at most.
pub const SEGMENT_BYTES: usize = 15 * 1024;
/// Room for the item that crosses [`SEGMENT_BYTES`].
const SEGMENT_SLACK: usize = 2 * 1024;
/// Room for a rebuilt segment to grow (new values may take more digits).
const REBUILT_SLACK: usize = 256;

/// Builds an answer's body segment by segment, recording each item's place.
struct SegmentWriter {
    segments: Vec<Bytes>,
    current: Vec<u8>,
    bytes: usize,
    items: Vec<Item>,
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
            whole_list: Mutex::new(()),
        }
    }

    /// Waits for the whole list's turn: one reader at a time refreshes or walks it, on the
    /// blocking pool. Lists asked for together then cost one rebuild and a small refresh each
    /// after it, instead of one rebuild each, and hold one version of the body between them
    /// instead of one each. Hold the turn only to find the answer, not to send it.
    pub fn whole_list_turn(&self) -> MutexGuard<'_, ()> {
        // Nothing the lock guards can be left half-done by a panic.
        self.whole_list.lock().unwrap_or_else(|e| e.into_inner())
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
        let stale = kept
            .items
            .iter()
            .zip(kept.sources.iter())
            .any(|(item, source)| !source.is_current(item.publish));
        if !stale && kept.second == second_of(now) {
            return Some(kept);
        }
        let next = Arc::new(kept.refreshed(snapshot, now)?);
        self.keep(key.into(), Arc::clone(&next));
        Some(next)
    }

    /// Renders the answer of `selected` (in list order) at `now` and keeps it under `key`.
    pub fn insert<'s>(
        &self,
        key: String,
        view_generation: u64,
        snapshot: &Snapshot,
        selected: Vec<Selected<'s>>,
        now: UnixNanos,
    ) -> Arc<Answer> {
        let now_text = gofmt::rfc3339(now);
        // The body's exact size, so a segment holding the rest of it is allocated to fit.
        let mut left = POD_LIST_JSON_HEAD.len()
            + LIST_JSON_TAIL.len()
            + selected
                .iter()
                .map(|(served, labels, _)| {
                    1 + served.parts.head.len()
                        + render::creation_and_labels_len(labels)
                        + served.parts.tail.len()
                })
                .sum::<usize>();
        let mut out = SegmentWriter::new(selected.len());
        out.open(left.min(SEGMENT_BYTES + SEGMENT_SLACK));
        out.current.extend_from_slice(POD_LIST_JSON_HEAD);
        left -= POD_LIST_JSON_HEAD.len();
        let mut sources = Vec::with_capacity(selected.len());
        for (i, (served, labels, source)) in selected.into_iter().enumerate() {
            out.open(left.min(SEGMENT_BYTES + SEGMENT_SLACK));
            if i > 0 {
                out.current.push(b',');
            }
            let start = out.current.len();
            out.current.extend_from_slice(served.parts.head);
            render::creation_and_labels(&mut out.current, labels, &now_text);
            let middle = out.current.len() - start - served.parts.head.len();
            out.current.extend_from_slice(served.parts.tail);
            left = left.saturating_sub(out.current.len() - start + 1);
            out.item(
                served.publish,
                served.metrics.timestamp,
                start,
                served.parts.head.len(),
                middle,
            );
            sources.push(source);
        }
        out.current.extend_from_slice(LIST_JSON_TAIL);
        let answer = Arc::new(out.finish(
            view_generation,
            snapshot.index_generation(),
            second_of(now),
            sources.into(),
        ));
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
        let bytes = answer.bytes;
        if !self.may_keep(bytes) {
            return;
        }
        if self.held.load(Ordering::Relaxed) + bytes > self.budget {
            self.evict_half();
        }
        self.held.fetch_add(bytes, Ordering::Relaxed);
        if let Some(old) = self.answers.insert(key, answer) {
            self.held.fetch_sub(old.bytes, Ordering::Relaxed);
        }
    }

    /// Drops every other answer, in the map's (arbitrary) order.
    fn evict_half(&self) {
        let mut keep = false;
        self.answers.retain(|_, answer| {
            keep = !keep;
            if !keep {
                self.held.fetch_sub(answer.bytes, Ordering::Relaxed);
            }
            keep
        });
    }
}

// === impl Answer ===

impl Answer {
    /// The JSON body, as a response body.
    pub fn body(&self) -> Body {
        match &*self.segments {
            [one] => Body::from(one.clone()),
            _ => Body::segments(Arc::clone(&self.segments)),
        }
    }

    /// The JSON body's segments, in order.
    pub fn segments(&self) -> Arc<[Bytes]> {
        Arc::clone(&self.segments)
    }

    /// The served pods' metrics timestamps, in list order.
    pub fn timestamps(&self) -> impl Iterator<Item = UnixNanos> + '_ {
        self.items.iter().map(|item| item.timestamp)
    }

    /// This answer at `now`'s second, with the pods whose nodes published since fetched again
    /// from `snapshot`. Segments holding none of those are shared when the second is the same
    /// and copied with their timestamps rewritten when it is not. `None` if a pod is no longer
    /// where it was.
    fn refreshed(&self, snapshot: &Snapshot, now: UnixNanos) -> Option<Answer> {
        let now_text = gofmt::rfc3339(now);
        let restamp = second_of(now) != self.second;
        let mut lookup = snapshot.source_lookup();
        let mut out = SegmentWriter::new(self.items.len());
        let mut first = 0;
        for (index, old) in self.segments.iter().enumerate() {
            // The segment's items: the next ones in list order.
            let count = self.items[first..]
                .iter()
                .take_while(|item| item.segment == index)
                .count();
            let segment = self
                .items
                .get(first..first + count)?
                .iter()
                .zip(self.sources.get(first..first + count)?);
            first += count;
            if segment
                .clone()
                .all(|(item, source)| source.is_current(item.publish))
            {
                let items = segment.map(|(item, _)| *item);
                if restamp {
                    // Only the second changed: one copy, the timestamps rewritten where they lie.
                    out.restamped(old, items, &now_text);
                } else {
                    out.share(old.clone(), items);
                }
                continue;
            }
            // Rebuilt: what lies between items (the list's head, commas, its tail) is copied,
            // each item rewritten.
            out.open(old.len() + REBUILT_SLACK);
            let mut copied = 0;
            for (item, source) in segment {
                out.current.extend_from_slice(&old[copied..item.start]);
                let start = out.current.len();
                let old_item = &old[item.start..item.end];
                let (old_head, rest) = old_item.split_at(item.head);
                let (middle, old_tail) = rest.split_at(item.middle);
                let (head, tail, publish, timestamp) = if source.is_current(item.publish) {
                    (old_head, old_tail, item.publish, item.timestamp)
                } else {
                    let served = lookup.pod(source)?;
                    (
                        served.parts.head,
                        served.parts.tail,
                        served.publish,
                        served.metrics.timestamp,
                    )
                };
                out.current.extend_from_slice(head);
                let at = out.current.len() + TIMESTAMP_OFFSET;
                out.current.extend_from_slice(middle);
                out.current[at..at + TIMESTAMP_BYTES].copy_from_slice(&now_text);
                out.current.extend_from_slice(tail);
                out.item(publish, timestamp, start, head.len(), item.middle);
                copied = item.end;
            }
            out.current.extend_from_slice(&old[copied..]);
            out.cut();
        }
        Some(out.finish(
            self.view_generation,
            self.index_generation,
            second_of(now),
            Arc::clone(&self.sources),
        ))
    }
}

// === impl SegmentWriter ===

impl SegmentWriter {
    fn new(items: usize) -> Self {
        SegmentWriter {
            segments: Vec::new(),
            current: Vec::new(),
            bytes: 0,
            items: Vec::with_capacity(items),
        }
    }

    /// Records an item just written to the current segment from `start`, and closes the
    /// segment if it is full.
    fn item(
        &mut self,
        publish: u64,
        timestamp: UnixNanos,
        start: usize,
        head: usize,
        middle: usize,
    ) {
        self.items.push(Item {
            publish,
            timestamp,
            segment: self.segments.len(),
            start,
            end: self.current.len(),
            head,
            middle,
        });
        if self.current.len() >= SEGMENT_BYTES {
            self.cut();
        }
    }

    /// Makes room for a segment of about `bytes`, if none is being written.
    fn open(&mut self, bytes: usize) {
        if self.current.is_empty() {
            self.current.reserve_exact(bytes);
        }
    }

    /// Closes the current segment, unless it is empty.
    fn cut(&mut self) {
        if self.current.is_empty() {
            return;
        }
        let len = self.current.len();
        let segment = if self.current.capacity() - len <= len / 8 {
            // Sized about right (see `open`): kept as it is.
            Bytes::from(std::mem::take(&mut self.current))
        } else {
            // Copied out at its size, so that no answer holds spare capacity; the buffer is
            // reused for the next segment.
            let segment = Bytes::copy_from_slice(&self.current);
            self.current.clear();
            segment
        };
        self.bytes += segment.len();
        self.segments.push(segment);
    }

    /// Appends a finished segment as it is, with its items.
    fn share(&mut self, segment: Bytes, items: impl Iterator<Item = Item>) {
        self.cut();
        let index = self.segments.len();
        self.items.extend(items.map(|item| Item {
            segment: index,
            ..item
        }));
        self.bytes += segment.len();
        self.segments.push(segment);
    }

    /// Appends a copy of a finished segment whose items are unchanged but for their
    /// request-time field, rewritten to `now_text`.
    fn restamped(
        &mut self,
        segment: &Bytes,
        items: impl Iterator<Item = Item>,
        now_text: &[u8; TIMESTAMP_BYTES],
    ) {
        self.cut();
        let index = self.segments.len();
        let mut copy = segment.to_vec();
        for item in items {
            let at = item.start + item.head + TIMESTAMP_OFFSET;
            if let Some(field) = copy.get_mut(at..at + TIMESTAMP_BYTES) {
                field.copy_from_slice(now_text);
            }
            self.items.push(Item {
                segment: index,
                ..item
            });
        }
        self.bytes += copy.len();
        self.segments.push(Bytes::from(copy));
    }

    fn finish(
        mut self,
        view_generation: u64,
        index_generation: u64,
        second: i64,
        sources: Arc<[PodSource]>,
    ) -> Answer {
        self.cut();
        Answer {
            view_generation,
            index_generation,
            second,
            segments: self.segments.into(),
            bytes: self.bytes,
            sources,
            items: self.items.into(),
        }
    }
}

/// The whole second of `now`, which an answer's `creationTimestamp` shows.
fn second_of(now: UnixNanos) -> i64 {
    now.div_euclid(1_000_000_000)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_whole_list_is_found_by_one_reader_at_a_time() {
        let cache = AnswerCache::default();
        let turn = cache.whole_list_turn();
        assert!(
            cache.whole_list.try_lock().is_err(),
            "a second reader waits"
        );
        drop(turn);
        assert!(
            cache.whole_list.try_lock().is_ok(),
            "the turn is given back"
        );
    }
}
