//! Watches: replay the retained change log from the requested resource version, then follow the
//! cluster's broadcast until the timeout, shutdown, or the client leaves. A receiver that lags
//! ends the watch so the client resumes (or relists after a 410) instead of missing events.

use std::sync::Arc;
use std::time::Duration;

use http::{Response, StatusCode};
use tokio::sync::broadcast;
use tracing::debug;

use super::body::Body;
use super::objects::{push_json_str, push_node, push_pod};
use super::routes::{
    auth_configmap_json, expired, status_response, stream_response, Chunker, Filter, Kind, Query,
    CHUNK, MAX_WATCH,
};
use super::{stopped, Shared};
use crate::cluster::{Change, ClusterError, EventType, Object};

/// Where a watch starts.
enum Start {
    /// Send the current objects as ADDED first (`resourceVersion` unset or 0, or
    /// `sendInitialEvents=true`).
    Initial,
    /// Resume after this version.
    After(u64),
}

pub(super) fn watch(
    shared: Arc<Shared>,
    kind: Kind,
    filter: Filter,
    requested_rv: Option<u64>,
    query: &Query,
) -> Response<Body> {
    let start = match requested_rv {
        Some(rv) if !query.send_initial_events => Start::After(rv),
        _ => Start::Initial,
    };
    let timeout = query
        .timeout_seconds
        .map(Duration::from_secs)
        .unwrap_or(shared.default_watch_timeout)
        .min(MAX_WATCH);
    let bookmarks = query.allow_bookmarks;
    let initial_events_end = query.send_initial_events && bookmarks;

    // Subscribe before answering so a too-old version is a 410 response, not a broken stream,
    // and before listing so no change falls between the initial objects and the follow-up.
    let (initial, since) = match start {
        Start::Initial => (true, shared.cluster.resource_version()),
        Start::After(rv) => (false, rv),
    };
    let subscription = if kind == Kind::ConfigMaps {
        // The ConfigMap never changes: follow nothing, only the clock and shutdown.
        None
    } else {
        match shared.cluster.watch_from(since) {
            Ok(s) => Some(s),
            Err(ClusterError::Gone { requested, oldest }) => {
                debug!(
                    requested,
                    oldest, "Watch asked for an expired resource version."
                );
                return expired(requested);
            }
            Err(error) => {
                return status_response(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "InternalError",
                    &error.to_string(),
                )
            }
        }
    };
    let (tx, body) = Body::channel();
    let mut shutdown = shared.shutdown.clone();
    tokio::spawn(async move {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut out = Chunker::new(tx);
        let stream = async {
            let mut last_rv = since;
            if initial {
                last_rv = send_initial(&shared, kind, &filter, &mut out)
                    .await?
                    .max(since);
            }
            let receiver = match subscription {
                Some((replay, rx)) => {
                    for change in &replay {
                        if change.resource_version <= last_rv {
                            continue;
                        }
                        emit_change(&shared, kind, &filter, change, &mut out);
                        last_rv = change.resource_version;
                        out.maybe_flush().await?;
                    }
                    Some(rx)
                }
                None => None,
            };
            if initial_events_end {
                push_bookmark(&mut out.buf, kind, last_rv, true);
            }
            out.flush().await?;
            follow(
                &shared, kind, &filter, receiver, last_rv, bookmarks, &mut out,
            )
            .await
        };
        tokio::select! {
            _ = stream => {}
            _ = tokio::time::sleep_until(deadline) => {}
            _ = stopped(&mut shutdown) => {}
        }
    });
    stream_response(body)
}

/// Sends the current objects as ADDED; returns the version they are current at. Changes recorded
/// after that version reach the watch through the receiver subscribed before (skipped up to it).
async fn send_initial(
    shared: &Shared,
    kind: Kind,
    filter: &Filter,
    out: &mut Chunker,
) -> Result<u64, ()> {
    let rv = match kind {
        Kind::Nodes => {
            let listing = shared.cluster.list_nodes();
            for node in listing.items.iter().filter(|n| filter.node(n)) {
                out.buf.push_str(r#"{"type":"ADDED","object":"#);
                push_node(&mut out.buf, node, &shared.node_resources);
                out.buf.push_str("}\n");
                out.maybe_flush().await?;
            }
            listing.resource_version
        }
        Kind::Pods => {
            let listing = shared.cluster.list_pods();
            for pod in listing.items.iter().filter(|p| filter.pod(p)) {
                out.buf.push_str(r#"{"type":"ADDED","object":"#);
                push_pod(&mut out.buf, pod);
                out.buf.push_str("}\n");
                out.maybe_flush().await?;
            }
            listing.resource_version
        }
        Kind::ConfigMaps => {
            if filter.auth_configmap() {
                out.buf.push_str(r#"{"type":"ADDED","object":"#);
                out.buf.push_str(&auth_configmap_json(shared));
                out.buf.push_str("}\n");
            }
            shared.cluster.resource_version()
        }
    };
    Ok(rv)
}

/// Appends the watch event for `change` if this watch sees it.
///
/// Objects leaving the selection: without the object's previous state, a MODIFIED object that no
/// longer matches a selective watch is sent as DELETED (a pod leaving `status.phase=Running`), as
/// the real server does for objects moving out of a selector, unless it fails on a field that
/// never changes. A client may thus see a DELETED for an object it never had (say, a Pending pod
/// whose labels changed), which reflectors ignore.
fn emit_change(shared: &Shared, kind: Kind, filter: &Filter, change: &Change, out: &mut Chunker) {
    let (matched, may_have_matched) = match (&change.object, kind) {
        (Object::Node(node), Kind::Nodes) => {
            (filter.node(node), filter.node_may_have_matched(node))
        }
        (Object::Pod(pod), Kind::Pods) => (filter.pod(pod), filter.pod_may_have_matched(pod)),
        _ => return,
    };
    let event = match (change.event, matched) {
        (event, true) => event.as_str(),
        (EventType::Modified, false) if may_have_matched => EventType::Deleted.as_str(),
        _ => return,
    };
    out.buf.push_str(r#"{"type":""#);
    out.buf.push_str(event);
    out.buf.push_str(r#"","object":"#);
    match &change.object {
        Object::Node(node) => push_node(&mut out.buf, node, &shared.node_resources),
        Object::Pod(pod) => push_pod(&mut out.buf, pod),
    }
    out.buf.push_str("}\n");
}

fn push_bookmark(buf: &mut String, kind: Kind, rv: u64, initial_events_end: bool) {
    buf.push_str(r#"{"type":"BOOKMARK","object":{"kind":"#);
    push_json_str(buf, kind.object_kind());
    buf.push_str(&format!(
        r#","apiVersion":"v1","metadata":{{"resourceVersion":"{rv}""#
    ));
    if initial_events_end {
        buf.push_str(r#","annotations":{"k8s.io/initial-events-end":"true"}"#);
    }
    buf.push_str("}}}\n");
}

/// Streams changes until the client leaves or the receiver lags or closes.
async fn follow(
    shared: &Shared,
    kind: Kind,
    filter: &Filter,
    receiver: Option<broadcast::Receiver<Change>>,
    mut last_rv: u64,
    bookmarks: bool,
    out: &mut Chunker,
) -> Result<(), ()> {
    let interval = shared.bookmark_interval.max(Duration::from_millis(10));
    let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
    let Some(mut rx) = receiver else {
        // Nothing to follow: keep the stream open for bookmarks until timeout or shutdown.
        loop {
            tokio::select! {
                _ = ticker.tick(), if bookmarks => {
                    push_bookmark(&mut out.buf, kind, last_rv, false);
                    out.flush().await?;
                }
                _ = out.tx.closed() => return Err(()),
            }
        }
    };
    loop {
        tokio::select! {
            received = rx.recv() => {
                let change = match received {
                    Ok(change) => change,
                    Err(broadcast::error::RecvError::Lagged(missed)) => {
                        debug!(missed, "Watch fell behind the change broadcast; ending it.");
                        return Err(());
                    }
                    Err(broadcast::error::RecvError::Closed) => return Err(()),
                };
                let mut next = Some(change);
                // Drain what is already queued into one chunk.
                while let Some(change) = next.take() {
                    if change.resource_version > last_rv {
                        emit_change(shared, kind, filter, &change, out);
                        last_rv = change.resource_version;
                    }
                    if out.buf.len() >= CHUNK {
                        break;
                    }
                    match rx.try_recv() {
                        Ok(change) => next = Some(change),
                        Err(broadcast::error::TryRecvError::Lagged(_)) => return Err(()),
                        Err(_) => {}
                    }
                }
                out.flush().await?;
            }
            _ = ticker.tick(), if bookmarks => {
                push_bookmark(&mut out.buf, kind, last_rv, false);
                out.flush().await?;
            }
            _ = out.tx.closed() => return Err(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    #[test]
    fn bookmark_marks_the_end_of_initial_events() {
        let mut buf = String::new();
        push_bookmark(&mut buf, Kind::Pods, 9, true);
        let v: Value = serde_json::from_str(buf.trim_end()).expect("json");
        assert_eq!(v["type"], "BOOKMARK");
        assert_eq!(v["object"]["kind"], "Pod");
        assert_eq!(v["object"]["metadata"]["resourceVersion"], "9");
        assert_eq!(
            v["object"]["metadata"]["annotations"]["k8s.io/initial-events-end"],
            "true"
        );
    }
}
