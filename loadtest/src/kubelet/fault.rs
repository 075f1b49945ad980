//! Ways a simulated kubelet misbehaves, and which nodes misbehave.
//!
//! A node has at most one fault. Selection is a pure function of the seed and the node's index, so
//! the same seed and fractions fault the same nodes in every run.

use std::time::Duration;

use super::sim::{mix, unit};

/// One way to misbehave.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// Answer after this delay.
    Slow(Duration),
    /// Accept the request and never answer.
    Hang,
    /// Send the headers and part of the body, then reset.
    ResetMidBody,
    /// `500 Internal Server Error`.
    ServerError,
    /// `401 Unauthorized` whatever the credentials.
    Unauthorized,
    /// `200` with bytes that are not the exposition format.
    Garbage,
    /// `200` with the body cut in the middle of a line.
    Truncated,
    /// A valid body followed by this many bytes of unrelated series.
    Huge(usize),
    /// Samples taken this many milliseconds away from now (negative: stale, positive: future).
    Skewed(i64),
    /// A serving certificate whose SAN names another address.
    WrongSan,
    /// A serving certificate issued by a CA the clients do not trust.
    WrongCa,
}

/// The kinds of fault, for fractions and command-line names.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum FaultKind {
    Slow,
    Hang,
    Reset,
    ServerError,
    Unauthorized,
    Garbage,
    Truncated,
    Huge,
    Stale,
    Future,
    WrongSan,
    WrongCa,
}

impl Fault {
    pub fn kind(self) -> FaultKind {
        match self {
            Fault::Slow(_) => FaultKind::Slow,
            Fault::Hang => FaultKind::Hang,
            Fault::ResetMidBody => FaultKind::Reset,
            Fault::ServerError => FaultKind::ServerError,
            Fault::Unauthorized => FaultKind::Unauthorized,
            Fault::Garbage => FaultKind::Garbage,
            Fault::Truncated => FaultKind::Truncated,
            Fault::Huge(_) => FaultKind::Huge,
            Fault::Skewed(ms) if ms < 0 => FaultKind::Stale,
            Fault::Skewed(_) => FaultKind::Future,
            Fault::WrongSan => FaultKind::WrongSan,
            Fault::WrongCa => FaultKind::WrongCa,
        }
    }

    /// Whether the fault lives in the certificate (changing it means reissuing one).
    pub fn is_certificate(self) -> bool {
        matches!(self, Fault::WrongSan | Fault::WrongCa)
    }
}

/// Parameters of the faults that have one.
#[derive(Clone, Copy, Debug)]
pub struct FaultParams {
    pub slow_delay: Duration,
    pub huge_bytes: usize,
    /// How far stale and future samples are off, milliseconds.
    pub skew_ms: i64,
}

impl Default for FaultParams {
    fn default() -> Self {
        FaultParams {
            slow_delay: Duration::from_secs(5),
            huge_bytes: 8 << 20,
            skew_ms: 10 * 60 * 1000,
        }
    }
}

impl FaultKind {
    pub fn with(self, p: &FaultParams) -> Fault {
        match self {
            FaultKind::Slow => Fault::Slow(p.slow_delay),
            FaultKind::Hang => Fault::Hang,
            FaultKind::Reset => Fault::ResetMidBody,
            FaultKind::ServerError => Fault::ServerError,
            FaultKind::Unauthorized => Fault::Unauthorized,
            FaultKind::Garbage => Fault::Garbage,
            FaultKind::Truncated => Fault::Truncated,
            FaultKind::Huge => Fault::Huge(p.huge_bytes),
            FaultKind::Stale => Fault::Skewed(-p.skew_ms),
            FaultKind::Future => Fault::Skewed(p.skew_ms),
            FaultKind::WrongSan => Fault::WrongSan,
            FaultKind::WrongCa => Fault::WrongCa,
        }
    }
}

/// Why a fault plan was rejected.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum FaultError {
    #[error("fault fraction for {kind:?} is {value}, outside [0, 1]")]
    OutOfRange { kind: FaultKind, value: f64 },
    #[error("fault fractions add up to {0}, more than 1")]
    TooMuch(f64),
}

/// Which fraction of nodes gets which fault.
#[derive(Clone, Debug, Default)]
pub struct FaultPlan {
    fractions: Vec<(FaultKind, f64)>,
    pub params: FaultParams,
}

impl FaultPlan {
    /// Sets the fraction of nodes with `kind` (replacing an earlier setting).
    pub fn set(&mut self, kind: FaultKind, fraction: f64) -> Result<(), FaultError> {
        if !(0.0..=1.0).contains(&fraction) {
            return Err(FaultError::OutOfRange {
                kind,
                value: fraction,
            });
        }
        let mut next: Vec<(FaultKind, f64)> = self
            .fractions
            .iter()
            .copied()
            .filter(|(k, _)| *k != kind)
            .collect();
        if fraction > 0.0 {
            next.push((kind, fraction));
            next.sort_by_key(|a| a.0);
        }
        let total: f64 = next.iter().map(|(_, f)| f).sum();
        if total > 1.0 + 1e-9 {
            return Err(FaultError::TooMuch(total));
        }
        self.fractions = next;
        Ok(())
    }

    /// The fault of node `index`, drawn from the seed.
    pub fn pick(&self, seed: u64, index: u64) -> Option<Fault> {
        let roll = unit(mix(seed, &[0xFA17, index]));
        let mut acc = 0.0;
        for (kind, fraction) in &self.fractions {
            acc += fraction;
            if roll < acc {
                return Some(kind.with(&self.params));
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fractions_select_about_that_many_nodes_and_the_same_ones_each_time() {
        let mut plan = FaultPlan::default();
        plan.set(FaultKind::Hang, 0.1).expect("valid");
        plan.set(FaultKind::Garbage, 0.2).expect("valid");
        let picks: Vec<_> = (0..10_000).map(|i| plan.pick(42, i)).collect();
        let hang = picks.iter().filter(|p| **p == Some(Fault::Hang)).count();
        let garbage = picks.iter().filter(|p| **p == Some(Fault::Garbage)).count();
        assert!((800..1200).contains(&hang), "{hang}");
        assert!((1700..2300).contains(&garbage), "{garbage}");
        let again: Vec<_> = (0..10_000).map(|i| plan.pick(42, i)).collect();
        assert_eq!(picks, again);
    }

    #[test]
    fn fractions_above_one_are_rejected() {
        let mut plan = FaultPlan::default();
        plan.set(FaultKind::Hang, 0.7).expect("valid");
        assert_eq!(
            plan.set(FaultKind::Slow, 0.5),
            Err(FaultError::TooMuch(1.2))
        );
        assert!(plan.set(FaultKind::Slow, 1.5).is_err());
        assert!(
            plan.set(FaultKind::Slow, 0.3).is_ok(),
            "a rejected setting leaves no trace"
        );
    }
}
