//! A bounded, expiring cache of review answers (`TokenReview`, `SubjectAccessReview`) that
//! coalesces concurrent identical reviews into one request.
//!
//! Keys are SHA-256 digests of what was reviewed, so a cache of token reviews never holds a
//! bearer token. The cache never grows past its capacity: when full, expired answers are dropped
//! first, then the answer closest to expiry. Reviews in flight are bounded too (a flood of distinct
//! credentials gets [`ReviewError::Busy`] instead of an unbounded queue), and at most
//! `max_concurrent` of them talk to the API server at once.
//!
//! Failed reviews (the API server could not be asked) are never cached: the next request asks
//! again.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use futures::future::{BoxFuture, FutureExt, Shared};
use tokio::sync::Semaphore;
use tokio::time::Instant;

/// A SHA-256 digest identifying one review.
pub type Digest = [u8; 32];

/// SHA-256 of `bytes`.
pub fn digest(bytes: &[u8]) -> Digest {
    let mut out = [0u8; 32];
    out.copy_from_slice(ring::digest::digest(&ring::digest::SHA256, bytes).as_ref());
    out
}

/// Why a review produced no answer. Callers treat every variant as "not authenticated" or "not
/// authorized" for this request and log it.
#[derive(Clone, Debug, thiserror::Error, PartialEq, Eq)]
pub enum ReviewError {
    /// The API server could not be asked or answered with an error.
    #[error("review request failed: {0}")]
    Api(Arc<str>),
    /// Too many distinct reviews are already waiting.
    #[error("too many reviews in flight")]
    Busy,
    /// The task running the review ended without an answer (the runtime is shutting down).
    #[error("review task ended without an answer")]
    Aborted,
}

/// How long one review may take, as Kubernetes bounds its authentication and authorization
/// webhooks; a review that takes longer fails (and is not cached).
pub const REVIEW_TIMEOUT: Duration = Duration::from_secs(10);

/// Runs `review` bounded by [`REVIEW_TIMEOUT`].
pub async fn bounded<V>(
    review: impl Future<Output = Result<V, ReviewError>>,
) -> Result<V, ReviewError> {
    tokio::time::timeout(REVIEW_TIMEOUT, review)
        .await
        .unwrap_or_else(|_| Err(ReviewError::Api("the review timed out".into())))
}

/// Sizes of a [`ReviewCache`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CacheLimits {
    /// Most answers kept; also the most distinct reviews waiting at once.
    pub capacity: usize,
    /// Most reviews sent to the API server at once.
    pub max_concurrent: usize,
}

impl Default for CacheLimits {
    fn default() -> Self {
        CacheLimits {
            capacity: 10_000,
            max_concurrent: 64,
        }
    }
}

type Pending<V> = Shared<BoxFuture<'static, Result<V, ReviewError>>>;

struct Entry<V> {
    value: V,
    expires: Instant,
}

struct Inner<V> {
    /// std Mutex, not tokio's: nothing awaits while it is held. Lock order: `in_flight`, then
    /// `entries`.
    entries: Mutex<HashMap<Digest, Entry<V>>>,
    in_flight: Mutex<HashMap<Digest, Pending<V>>>,
    permits: Arc<Semaphore>,
    limits: CacheLimits,
    ttl: Box<dyn Fn(&V) -> Duration + Send + Sync>,
}

/// The cache; cheap to clone (clones share the answers).
pub struct ReviewCache<V> {
    inner: Arc<Inner<V>>,
}

impl<V> Clone for ReviewCache<V> {
    fn clone(&self) -> Self {
        ReviewCache {
            inner: Arc::clone(&self.inner),
        }
    }
}

impl<V> std::fmt::Debug for ReviewCache<V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReviewCache")
            .field("entries", &lock(&self.inner.entries).len())
            .field("limits", &self.inner.limits)
            .finish()
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding the lock leaves the maps consistent (every update is a single insert
    // or remove), so a poisoned lock is still safe to use.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

// === impl ReviewCache ===

impl<V: Clone + Send + Sync + 'static> ReviewCache<V> {
    /// A cache whose answers live for `ttl(answer)`.
    pub fn new(limits: CacheLimits, ttl: impl Fn(&V) -> Duration + Send + Sync + 'static) -> Self {
        let limits = CacheLimits {
            capacity: limits.capacity.max(1),
            max_concurrent: limits.max_concurrent.max(1),
        };
        ReviewCache {
            inner: Arc::new(Inner {
                entries: Mutex::new(HashMap::new()),
                in_flight: Mutex::new(HashMap::new()),
                permits: Arc::new(Semaphore::new(limits.max_concurrent)),
                limits,
                ttl: Box::new(ttl),
            }),
        }
    }

    /// The cached answer for `key`, else the answer of a review already in flight for it, else
    /// the answer of `review` (started on its own task, so a caller going away does not cancel it
    /// for the others).
    pub async fn get_or_review<F, Fut>(&self, key: Digest, review: F) -> Result<V, ReviewError>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<V, ReviewError>> + Send + 'static,
    {
        if let Some(value) = self.fresh(&key) {
            return Ok(value);
        }
        let pending = {
            let mut in_flight = lock(&self.inner.in_flight);
            // Checked again under the in-flight lock: a review finishing between the first look
            // and here has stored its answer and left the in-flight map.
            if let Some(value) = self.fresh(&key) {
                return Ok(value);
            }
            match in_flight.get(&key) {
                Some(pending) => pending.clone(),
                None => {
                    if in_flight.len() >= self.inner.limits.capacity {
                        return Err(ReviewError::Busy);
                    }
                    let pending = self.spawn(key, review());
                    in_flight.insert(key, pending.clone());
                    pending
                }
            }
        };
        pending.await
    }

    /// How many answers are stored (expired ones included until they are evicted).
    pub fn len(&self) -> usize {
        lock(&self.inner.entries).len()
    }

    /// Whether no answer is stored.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn fresh(&self, key: &Digest) -> Option<V> {
        let entries = lock(&self.inner.entries);
        entries
            .get(key)
            .filter(|entry| entry.expires > Instant::now())
            .map(|entry| entry.value.clone())
    }

    fn spawn<Fut>(&self, key: Digest, review: Fut) -> Pending<V>
    where
        Fut: Future<Output = Result<V, ReviewError>> + Send + 'static,
    {
        let inner = Arc::clone(&self.inner);
        let task = tokio::spawn(async move {
            let result = match Arc::clone(&inner.permits).acquire_owned().await {
                Ok(_permit) => review.await,
                // The semaphore is never closed; if it were, no review could run.
                Err(_) => Err(ReviewError::Aborted),
            };
            let mut in_flight = lock(&inner.in_flight);
            if let Ok(value) = &result {
                let ttl = (inner.ttl)(value);
                if !ttl.is_zero() {
                    insert(&inner, key, value.clone(), Instant::now() + ttl);
                }
            }
            in_flight.remove(&key);
            result
        });
        async move { task.await.unwrap_or(Err(ReviewError::Aborted)) }
            .boxed()
            .shared()
    }
}

fn insert<V>(inner: &Inner<V>, key: Digest, value: V, expires: Instant) {
    let mut entries = lock(&inner.entries);
    if entries.len() >= inner.limits.capacity && !entries.contains_key(&key) {
        let now = Instant::now();
        entries.retain(|_, entry| entry.expires > now);
        if entries.len() >= inner.limits.capacity {
            let soonest = entries
                .iter()
                .min_by_key(|(_, entry)| entry.expires)
                .map(|(key, _)| *key);
            if let Some(soonest) = soonest {
                entries.remove(&soonest);
            }
        }
    }
    entries.insert(key, Entry { value, expires });
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn counting_review(
        calls: &Arc<AtomicUsize>,
        answer: u32,
    ) -> impl FnOnce() -> BoxFuture<'static, Result<u32, ReviewError>> {
        let calls = Arc::clone(calls);
        move || {
            async move {
                calls.fetch_add(1, Ordering::SeqCst);
                Ok(answer)
            }
            .boxed()
        }
    }

    fn cache(capacity: usize, ttl: Duration) -> ReviewCache<u32> {
        ReviewCache::new(
            CacheLimits {
                capacity,
                max_concurrent: 4,
            },
            move |_| ttl,
        )
    }

    #[tokio::test(start_paused = true)]
    async fn an_answer_is_reused_until_its_ttl_passes() {
        let cache = cache(10, Duration::from_secs(10));
        let calls = Arc::new(AtomicUsize::new(0));
        let key = digest(b"token");
        assert_eq!(
            cache.get_or_review(key, counting_review(&calls, 1)).await,
            Ok(1)
        );
        assert_eq!(
            cache.get_or_review(key, counting_review(&calls, 2)).await,
            Ok(1)
        );
        assert_eq!(calls.load(Ordering::SeqCst), 1);

        tokio::time::advance(Duration::from_secs(9)).await;
        assert_eq!(
            cache.get_or_review(key, counting_review(&calls, 3)).await,
            Ok(1)
        );
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(
            cache.get_or_review(key, counting_review(&calls, 4)).await,
            Ok(4)
        );
        assert_eq!(calls.load(Ordering::SeqCst), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn the_ttl_can_depend_on_the_answer() {
        let cache = ReviewCache::new(CacheLimits::default(), |allowed: &bool| {
            if *allowed {
                Duration::from_secs(300)
            } else {
                Duration::from_secs(30)
            }
        });
        let (yes, no) = (digest(b"yes"), digest(b"no"));
        cache
            .get_or_review(yes, || async { Ok(true) })
            .await
            .unwrap();
        cache
            .get_or_review(no, || async { Ok(false) })
            .await
            .unwrap();
        tokio::time::advance(Duration::from_secs(31)).await;
        assert_eq!(
            cache.get_or_review(yes, || async { Ok(false) }).await,
            Ok(true)
        );
        assert_eq!(
            cache.get_or_review(no, || async { Ok(true) }).await,
            Ok(true)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_review_that_never_answers_fails_after_the_timeout_and_is_retried() {
        let cache = cache(10, Duration::from_secs(10));
        let key = digest(b"slow");
        let started = Instant::now();
        let result = cache
            .get_or_review(key, || bounded(std::future::pending::<Result<u32, _>>()))
            .await;
        assert!(matches!(result, Err(ReviewError::Api(_))), "{result:?}");
        assert_eq!(started.elapsed(), REVIEW_TIMEOUT);
        assert_eq!(cache.get_or_review(key, || async { Ok(3) }).await, Ok(3));
    }

    #[tokio::test]
    async fn failed_reviews_are_not_cached() {
        let cache = cache(10, Duration::from_secs(10));
        let key = digest(b"k");
        let failed = cache
            .get_or_review(key, || async { Err(ReviewError::Api("down".into())) })
            .await;
        assert_eq!(failed, Err(ReviewError::Api("down".into())));
        assert!(cache.is_empty());
        assert_eq!(cache.get_or_review(key, || async { Ok(7) }).await, Ok(7));
    }

    #[tokio::test]
    async fn concurrent_identical_reviews_are_coalesced_into_one() {
        let cache = cache(10, Duration::from_secs(10));
        let calls = Arc::new(AtomicUsize::new(0));
        let (release, released) = tokio::sync::watch::channel(false);
        let lookups = (0..50).map(|_| {
            let calls = Arc::clone(&calls);
            let mut released = released.clone();
            let cache = cache.clone();
            async move {
                cache
                    .get_or_review(digest(b"same"), move || async move {
                        calls.fetch_add(1, Ordering::SeqCst);
                        released
                            .wait_for(|r| *r)
                            .await
                            .map_err(|_| ReviewError::Aborted)?;
                        Ok(5)
                    })
                    .await
            }
        });
        let all = tokio::spawn(futures::future::join_all(lookups));
        // The review only answers once released, so every lookup has joined it by then.
        tokio::time::timeout(Duration::from_secs(5), async {
            while calls.load(Ordering::SeqCst) == 0 {
                tokio::task::yield_now().await;
            }
        })
        .await
        .unwrap();
        release.send(true).unwrap();
        let answers = all.await.unwrap();
        assert!(answers.iter().all(|a| *a == Ok(5)));
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn the_cache_never_holds_more_than_its_capacity() {
        let cache = cache(100, Duration::from_secs(60));
        for i in 0..1_000u32 {
            let key = digest(&i.to_le_bytes());
            assert_eq!(
                cache.get_or_review(key, move || async move { Ok(i) }).await,
                Ok(i)
            );
            assert!(cache.len() <= 100);
        }
        assert_eq!(cache.len(), 100);
        // The newest answer survived the evictions.
        let last = digest(&999u32.to_le_bytes());
        assert_eq!(cache.get_or_review(last, || async { Ok(0) }).await, Ok(999));
    }

    #[tokio::test(start_paused = true)]
    async fn a_full_cache_evicts_expired_answers_before_live_ones() {
        let cache = ReviewCache::new(
            CacheLimits {
                capacity: 2,
                max_concurrent: 1,
            },
            |v: &u32| Duration::from_secs(u64::from(*v)),
        );
        let (short, long, new) = (digest(b"short"), digest(b"long"), digest(b"new"));
        cache
            .get_or_review(long, || async { Ok(100) })
            .await
            .unwrap();
        cache
            .get_or_review(short, || async { Ok(1) })
            .await
            .unwrap();
        tokio::time::advance(Duration::from_secs(2)).await;
        cache.get_or_review(new, || async { Ok(50) }).await.unwrap();
        assert_eq!(cache.len(), 2);
        assert_eq!(cache.get_or_review(long, || async { Ok(0) }).await, Ok(100));
    }

    #[tokio::test]
    async fn distinct_reviews_beyond_the_capacity_are_refused_while_pending() {
        let cache = cache(3, Duration::from_secs(10));
        let (release, released) = tokio::sync::watch::channel(false);
        let mut pending = Vec::new();
        for i in 0..3u32 {
            let c = cache.clone();
            let mut released = released.clone();
            pending.push(tokio::spawn(async move {
                c.get_or_review(digest(&i.to_le_bytes()), move || async move {
                    let _ = released.wait_for(|r| *r).await;
                    Ok(i)
                })
                .await
            }));
        }
        tokio::time::timeout(Duration::from_secs(5), async {
            while lock(&cache.inner.in_flight).len() < 3 {
                tokio::task::yield_now().await;
            }
        })
        .await
        .unwrap();
        let refused = cache
            .get_or_review(digest(b"one more"), || async { Ok(9) })
            .await;
        assert_eq!(refused, Err(ReviewError::Busy));
        release.send(true).unwrap();
        for (i, task) in pending.into_iter().enumerate() {
            assert_eq!(task.await.unwrap(), Ok(i as u32));
        }
    }
}
