//! Usage maths: which two points a node or container keeps, and the rate between them.
//!
//! Pure functions over [`MetricsPoint`]s: no locks, no clock, no names. The rules are upstream
//! metrics-server's, so a client sees the same windows and rates from either server.

use crate::model::{MetricsPoint, UnixNanos, Usage};

const NANOS_PER_SECOND: i64 = 1_000_000_000;

/// A container younger than this at its first sample gets no synthetic previous point: a rate over a
/// few seconds of a starting process is too noisy to serve.
pub(crate) const FRESH_CONTAINER_MIN_AGE: i64 = 10 * NANOS_PER_SECOND;

/// Why two points give no rate. The point pair is kept; only this cycle's value is not served.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RateError {
    /// Only one point is known (first sighting, restart, or a point older than the one before).
    #[error("only one point is known")]
    MissingPrevious,
    /// The newer point claims an earlier start than the older one.
    #[error("start time decreased from {prev} to {last}")]
    StartTimeDecreased { prev: UnixNanos, last: UnixNanos },
    /// A cumulative counter went backwards without a restart being visible.
    #[error("cumulative CPU decreased from {prev} to {last} nanocore-seconds")]
    CpuDecreased { prev: u64, last: u64 },
    /// The two points share a sample time (the storing rules never keep such a pair; defensive).
    #[error("the two points are not ordered in time")]
    EmptyWindow,
}

/// The last two points of one node or container.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Points {
    /// The point before `last`, with an earlier sample time; `None` until a rate is possible.
    pub prev: Option<MetricsPoint>,
    pub last: MetricsPoint,
}

/// A rate ready to serve.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Rate {
    /// Sample time of the newer point, unix nanoseconds.
    pub timestamp: UnixNanos,
    /// Time between the two samples, nanoseconds (always > 0).
    pub window: i64,
    pub usage: Usage,
}

// === impl Points ===

impl Points {
    /// The pair after a node reports `new`.
    ///
    /// A newer point pushes `last` to `prev`. A point that is not newer replaces `last` and keeps
    /// `prev` only while `prev` is still older than it, so the pair always moves forward in time.
    pub(crate) fn next_node(old: Option<&Points>, new: MetricsPoint) -> Points {
        let prev = old.and_then(|old| Self::carried_prev(old, &new));
        Points { prev, last: new }
    }

    /// The pair after a container reports `new`, given the pod's resolution (scrape period).
    ///
    /// Like [`Points::next_node`], except that a restart (`start_time` at or after the stored
    /// sample) or a first sighting leaves no `prev`, and that a container started between 10 s and
    /// one resolution ago gets a synthetic `prev` at its start time with zero CPU, so it is served
    /// after a single scrape.
    pub(crate) fn next_container(
        old: Option<&Points>,
        new: MetricsPoint,
        resolution: i64,
    ) -> Points {
        let age = new.timestamp.saturating_sub(new.start_time);
        let prev = if new.start_time < new.timestamp
            && age < resolution
            && age >= FRESH_CONTAINER_MIN_AGE
        {
            Some(MetricsPoint {
                timestamp: new.start_time,
                cumulative_cpu_used: 0,
                ..new
            })
        } else {
            match old {
                Some(old) if new.start_time < old.last.timestamp => Self::carried_prev(old, &new),
                _ => None,
            }
        };
        Points { prev, last: new }
    }

    /// The `prev` that survives storing `new` over `self`.
    fn carried_prev(&self, new: &MetricsPoint) -> Option<MetricsPoint> {
        if new.timestamp > self.last.timestamp {
            Some(self.last)
        } else {
            self.prev.filter(|prev| prev.timestamp < new.timestamp)
        }
    }

    /// The rate between `prev` and `last`.
    ///
    /// CPU is `(last - prev) * 1e9 / window_ns` in nanocores, truncated, computed in 128 bits so no
    /// counter or window can overflow it; memory is the last working set.
    pub(crate) fn rate(&self) -> Result<Rate, RateError> {
        let prev = self.prev.ok_or(RateError::MissingPrevious)?;
        let last = self.last;
        if last.start_time < prev.start_time {
            return Err(RateError::StartTimeDecreased {
                prev: prev.start_time,
                last: last.start_time,
            });
        }
        if last.cumulative_cpu_used < prev.cumulative_cpu_used {
            return Err(RateError::CpuDecreased {
                prev: prev.cumulative_cpu_used,
                last: last.cumulative_cpu_used,
            });
        }
        let window = match last.timestamp.checked_sub(prev.timestamp) {
            Some(window) if window > 0 => window,
            _ => return Err(RateError::EmptyWindow),
        };
        let used = u128::from(last.cumulative_cpu_used - prev.cumulative_cpu_used);
        // `window > 0` was checked above, so the cast is lossless and the division is defined.
        let nanocores = used * NANOS_PER_SECOND as u128 / window as u128;
        Ok(Rate {
            timestamp: last.timestamp,
            window,
            usage: Usage {
                cpu_nanocores: u64::try_from(nanocores).unwrap_or(u64::MAX),
                memory_bytes: last.memory_usage,
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: i64 = NANOS_PER_SECOND;
    const RESOLUTION: i64 = 15 * S;

    fn point(start: i64, ts: i64, cpu: u64, mem: u64) -> MetricsPoint {
        MetricsPoint {
            start_time: start,
            timestamp: ts,
            cumulative_cpu_used: cpu,
            memory_usage: mem,
        }
    }

    #[test]
    fn first_node_point_has_no_prev() {
        let p = Points::next_node(None, point(0, 100 * S, 10, 1));
        assert_eq!(p.prev, None);
        assert_eq!(p.rate(), Err(RateError::MissingPrevious));
    }

    #[test]
    fn newer_point_moves_last_to_prev() {
        let first = Points::next_node(None, point(0, 100 * S, 10, 1));
        let second = Points::next_node(Some(&first), point(0, 115 * S, 20, 2));
        assert_eq!(second.prev, Some(first.last));
        assert_eq!(second.last.timestamp, 115 * S);
    }

    #[test]
    fn same_time_point_keeps_older_prev() {
        let a = Points::next_node(None, point(0, 100 * S, 10, 1));
        let b = Points::next_node(Some(&a), point(0, 115 * S, 20, 2));
        let c = Points::next_node(Some(&b), point(0, 115 * S, 21, 3));
        assert_eq!(
            c.prev,
            Some(a.last),
            "prev is older than the new point, so it stays"
        );
        assert_eq!(c.last.cumulative_cpu_used, 21);
    }

    #[test]
    fn point_older_than_prev_drops_prev() {
        let a = Points::next_node(None, point(0, 100 * S, 10, 1));
        let b = Points::next_node(Some(&a), point(0, 115 * S, 20, 2));
        let c = Points::next_node(Some(&b), point(0, 90 * S, 5, 3));
        assert_eq!(c.prev, None);
        assert_eq!(c.last.timestamp, 90 * S);
    }

    #[test]
    fn restarted_container_has_no_prev() {
        let a = Points::next_container(None, point(0, 100 * S, 10, 1), RESOLUTION);
        // Started at the last sample time: the counter restarted from zero.
        let b = Points::next_container(Some(&a), point(100 * S, 200 * S, 5, 1), RESOLUTION);
        assert_eq!(b.prev, None);
    }

    #[test]
    fn running_container_keeps_last_as_prev() {
        let a = Points::next_container(None, point(0, 100 * S, 10, 1), RESOLUTION);
        let b = Points::next_container(Some(&a), point(0, 115 * S, 20, 1), RESOLUTION);
        assert_eq!(b.prev, Some(a.last));
    }

    #[test]
    fn first_sighting_of_old_container_has_no_prev() {
        let p = Points::next_container(None, point(0, 100 * S, 10, 1), RESOLUTION);
        assert_eq!(p.prev, None);
    }

    #[test]
    fn fresh_container_gets_a_synthetic_prev_at_its_start() {
        let p = Points::next_container(None, point(100 * S, 112 * S, 6 * S as u64, 7), RESOLUTION);
        assert_eq!(p.prev, Some(point(100 * S, 100 * S, 0, 7)));
        let rate = p.rate().unwrap();
        assert_eq!(rate.window, 12 * S);
        assert_eq!(rate.usage.cpu_nanocores, 500_000_000);
    }

    #[test]
    fn container_younger_than_ten_seconds_is_not_fresh() {
        let p = Points::next_container(None, point(100 * S, 109 * S, 1, 1), RESOLUTION);
        assert_eq!(p.prev, None);
    }

    #[test]
    fn container_older_than_one_resolution_is_not_fresh() {
        let p = Points::next_container(None, point(100 * S, 115 * S, 1, 1), RESOLUTION);
        assert_eq!(p.prev, None);
    }

    #[test]
    fn window_is_sample_time_delta() {
        let a = Points::next_node(None, point(0, 100 * S, 0, 1));
        let b = Points::next_node(Some(&a), point(0, 100 * S + 15_012_000_000, 0, 1));
        assert_eq!(b.rate().unwrap().window, 15_012_000_000);
        assert_eq!(b.rate().unwrap().timestamp, 100 * S + 15_012_000_000);
    }

    #[test]
    fn cpu_rate_is_truncated_nanocores() {
        let p = Points {
            prev: Some(point(0, 0, 0, 1)),
            last: point(0, 3 * S, 1_000_000_000, 42),
        };
        let rate = p.rate().unwrap();
        assert_eq!(rate.usage.cpu_nanocores, 333_333_333);
        assert_eq!(rate.usage.memory_bytes, 42);
    }

    #[test]
    fn huge_counters_do_not_overflow() {
        let p = Points {
            prev: Some(point(0, 0, 0, 1)),
            last: point(0, 1, u64::MAX, 1),
        };
        assert_eq!(p.rate().unwrap().usage.cpu_nanocores, u64::MAX);
    }

    #[test]
    fn decreasing_counter_is_not_served() {
        let p = Points {
            prev: Some(point(0, 0, 10, 1)),
            last: point(0, S, 9, 1),
        };
        assert_eq!(p.rate(), Err(RateError::CpuDecreased { prev: 10, last: 9 }));
    }

    #[test]
    fn decreasing_start_time_is_not_served() {
        let p = Points {
            prev: Some(point(5, 0, 1, 1)),
            last: point(4, S, 2, 1),
        };
        assert_eq!(
            p.rate(),
            Err(RateError::StartTimeDecreased { prev: 5, last: 4 })
        );
    }

    #[test]
    fn pair_without_time_order_is_not_served() {
        let p = Points {
            prev: Some(point(0, S, 1, 1)),
            last: point(0, S, 2, 1),
        };
        assert_eq!(p.rate(), Err(RateError::EmptyWindow));
    }
}
