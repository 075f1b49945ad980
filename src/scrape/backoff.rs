//! Exponential backoff with jitter between attempts to reconnect to one kubelet.
//!
//! A pure unit: it owns no clock and does no I/O. The caller asks for the delay after a failure and
//! resets it after a success; randomness comes in as a number in `[0, 1)` so the rules are testable.

use std::time::Duration;

/// Delays grow as `base * 2^(failures - 1)` up to `max`; each delay is jittered into the upper half
/// of that ceiling ("equal jitter"), so nodes that failed together do not retry together, yet no
/// delay is ever shorter than half the ceiling.
#[derive(Clone, Debug)]
pub struct Backoff {
    base: Duration,
    max: Duration,
    /// Consecutive failures since the last success.
    failures: u32,
}

// === impl Backoff ===

impl Backoff {
    /// A backoff starting at `base` and never exceeding `max` (`max` is raised to `base` if smaller).
    pub fn new(base: Duration, max: Duration) -> Self {
        Backoff {
            base,
            max: max.max(base),
            failures: 0,
        }
    }

    /// Consecutive failures since the last success.
    pub fn failures(&self) -> u32 {
        self.failures
    }

    /// The largest delay the next failure can yield.
    pub fn ceiling(&self) -> Duration {
        // Past 2^31 the product saturates long before; capping the exponent keeps the shift defined.
        let exponent = self.failures.min(31);
        self.base
            .checked_mul(1u32 << exponent)
            .unwrap_or(self.max)
            .min(self.max)
    }

    /// Records a failure and returns how long to wait before the next attempt. `unit` is a random
    /// number in `[0, 1)`; values outside are clamped.
    pub fn failed_with(&mut self, unit: f64) -> Duration {
        let ceiling = self.ceiling();
        self.failures = self.failures.saturating_add(1);
        let unit = if unit.is_nan() {
            0.0
        } else {
            unit.clamp(0.0, 1.0)
        };
        let half = ceiling / 2;
        half + (ceiling - half).mul_f64(unit)
    }

    /// Records a failure with thread-local randomness.
    pub fn failed(&mut self) -> Duration {
        self.failed_with(rand::random::<f64>())
    }

    /// Records a success: the next failure starts again from `base`.
    pub fn reset(&mut self) {
        self.failures = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn backoff(base_ms: u64, max_ms: u64) -> Backoff {
        Backoff::new(
            Duration::from_millis(base_ms),
            Duration::from_millis(max_ms),
        )
    }

    #[test]
    fn first_delay_is_within_half_base_and_base() {
        let mut b = backoff(100, 10_000);
        assert_eq!(b.failed_with(0.0), Duration::from_millis(50));
        b.reset();
        assert_eq!(b.failed_with(1.0), Duration::from_millis(100));
    }

    #[test]
    fn ceiling_doubles_until_max() {
        let mut b = backoff(100, 1_000);
        let mut ceilings = Vec::new();
        for _ in 0..6 {
            ceilings.push(b.ceiling().as_millis());
            b.failed_with(0.5);
        }
        assert_eq!(ceilings, vec![100, 200, 400, 800, 1000, 1000]);
    }

    proptest! {
        #[test]
        fn every_delay_stays_within_half_ceiling_and_max(
            base in 1u64..5_000,
            max in 1u64..600_000,
            units in proptest::collection::vec(any::<f64>(), 1..80),
        ) {
            let mut b = backoff(base, max);
            let cap = Duration::from_millis(max.max(base));
            for unit in units {
                let ceiling = b.ceiling();
                let delay = b.failed_with(unit);
                prop_assert!(delay <= ceiling);
                prop_assert!(delay >= ceiling / 2);
                prop_assert!(delay <= cap);
            }
        }

        #[test]
        fn ceiling_never_shrinks_while_failing(
            base in 1u64..5_000,
            max in 1u64..600_000,
            failures in 1usize..100,
        ) {
            let mut b = backoff(base, max);
            let mut previous = b.ceiling();
            for _ in 0..failures {
                b.failed_with(0.5);
                let ceiling = b.ceiling();
                prop_assert!(ceiling >= previous);
                prop_assert!(ceiling == previous * 2 || ceiling == Duration::from_millis(max.max(base)));
                previous = ceiling;
            }
        }

        #[test]
        fn success_resets_to_base(
            base in 1u64..5_000,
            max in 1u64..600_000,
            failures in 0usize..64,
            unit in 0.0f64..1.0,
        ) {
            let mut b = backoff(base, max);
            for _ in 0..failures {
                b.failed();
            }
            b.reset();
            prop_assert_eq!(b.failures(), 0);
            prop_assert!(b.failed_with(unit) <= Duration::from_millis(base));
        }
    }
}
