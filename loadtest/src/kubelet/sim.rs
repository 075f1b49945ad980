//! What one simulated kubelet reports: its pods and containers, their usage profiles, and the
//! values they show at a given instant.
//!
//! Everything here is a pure function of a [`NodeLayout`] and a time, so the values a response
//! carried can be recomputed exactly afterwards (that is how the fleet answers "what did node X
//! serve last"). Nothing here does I/O, reads a clock or holds a lock.

use std::f64::consts::TAU;

/// A deterministic 64-bit mix (splitmix64 finaliser) of a seed and a few discriminators.
pub fn mix(seed: u64, parts: &[u64]) -> u64 {
    let mut z = seed ^ 0x9E37_79B9_7F4A_7C15;
    for part in parts {
        z = z.wrapping_add(*part).wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
    }
    z
}

/// A uniform number in `[0, 1)` from a mixed value.
pub fn unit(x: u64) -> f64 {
    (x >> 11) as f64 / (1u64 << 53) as f64
}

/// How a container uses CPU over time, in cores.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Profile {
    /// A near-constant trickle (sidecars, idle daemons).
    Idle { cores: f64 },
    /// A constant load.
    Steady { cores: f64 },
    /// A baseline with a smooth periodic burst up to `peak` cores every `period` seconds.
    Spiky { base: f64, peak: f64, period: f64 },
}

impl Profile {
    /// Core-seconds consumed during the first `elapsed` seconds after the container started.
    ///
    /// The integrand is never negative, so the result never decreases as `elapsed` grows.
    pub fn integral(self, elapsed: f64) -> f64 {
        let t = elapsed.max(0.0);
        match self {
            Profile::Idle { cores } | Profile::Steady { cores } => cores * t,
            Profile::Spiky { base, peak, period } => {
                // usage(t) = base + (peak - base) * (1 - cos(2 pi t / period)) / 2
                let amp = (peak - base).max(0.0);
                base * t + amp / 2.0 * (t - period / TAU * (TAU * t / period).sin())
            }
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Profile::Idle { .. } => "idle",
            Profile::Steady { .. } => "steady",
            Profile::Spiky { .. } => "spiky",
        }
    }
}

/// CPU a container burns while starting, so a fresh counter is small but never zero (a zero
/// counter makes a metrics server drop the whole pod).
pub const STARTUP_CPU_NS: u64 = 20_000_000;

/// One simulated container.
#[derive(Clone, Debug)]
pub struct ContainerSim {
    pub name: String,
    /// Start time, unix nanoseconds.
    pub start_ns: i64,
    pub profile: Profile,
    /// Working-set baseline, bytes.
    pub memory_base: u64,
    /// Amplitude of the slow working-set wave, bytes.
    pub memory_wobble: u64,
    /// Period of the working-set wave, seconds.
    pub memory_period: f64,
    /// Offset of this container's sampling grid, milliseconds.
    pub phase_ms: i64,
}

impl ContainerSim {
    /// Cumulative CPU, nanocore-seconds, at unix time `t_ms`.
    pub fn cpu_ns(&self, t_ms: i64) -> u64 {
        let elapsed = (t_ms as f64 * 1e6 - self.start_ns as f64) / 1e9;
        STARTUP_CPU_NS + (self.profile.integral(elapsed) * 1e9) as u64
    }

    /// Working set, bytes, at unix time `t_ms`; whole pages, never below one page.
    pub fn memory(&self, t_ms: i64) -> u64 {
        let phase = (self.phase_ms as f64) / 1000.0;
        let wave = (TAU * (t_ms as f64 / 1000.0 + phase) / self.memory_period).sin();
        let bytes = self.memory_base as f64 + self.memory_wobble as f64 * wave;
        ((bytes.max(4096.0) as u64) / 4096) * 4096
    }
}

/// One simulated pod.
#[derive(Clone, Debug)]
pub struct PodSim {
    pub namespace: String,
    pub name: String,
    pub containers: Vec<ContainerSim>,
}

/// Everything one kubelet reports, frozen: churn replaces the whole layout.
#[derive(Clone, Debug)]
pub struct NodeLayout {
    pub pods: Vec<PodSim>,
    /// Node boot time, unix nanoseconds.
    pub boot_ns: i64,
    /// CPU used outside the listed containers (system daemons, kubelet), cores.
    pub overhead_cores: f64,
    /// Working set outside the listed containers, bytes.
    pub system_memory: u64,
    /// CPU of containers that were deleted or restarted, nanocore-seconds: keeps the node counter
    /// monotonic when a container's own counter goes away.
    pub retired_cpu_ns: u64,
    /// Offset of the node's sampling grid, milliseconds.
    pub phase_ms: i64,
    /// Spacing of the sampling grid (cAdvisor housekeeping), milliseconds; 0 samples at the
    /// request instant.
    pub sample_period_ms: i64,
}

/// One sample: a cumulative CPU counter, a working set and the sample's time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Point {
    /// Cumulative CPU, nanocore-seconds.
    pub cpu_ns: u64,
    /// Working set, bytes.
    pub memory: u64,
    /// Sample time, unix milliseconds.
    pub timestamp_ms: i64,
}

/// The values of a layout at one instant, in layout order (pods, then their containers).
#[derive(Clone, Debug)]
pub struct Evaluated {
    pub node: Point,
    pub pods: Vec<Point>,
    pub containers: Vec<Point>,
}

/// The last grid instant at or before `t_ms` on a grid of `period_ms` shifted by `phase_ms`.
fn on_grid(t_ms: i64, period_ms: i64, phase_ms: i64) -> i64 {
    if period_ms <= 0 {
        return t_ms;
    }
    t_ms - (t_ms - phase_ms).rem_euclid(period_ms)
}

impl NodeLayout {
    pub fn container_count(&self) -> usize {
        self.pods.iter().map(|p| p.containers.len()).sum()
    }

    /// The values every series shows at unix time `t_ms`.
    pub fn evaluate(&self, t_ms: i64) -> Evaluated {
        let mut containers = Vec::with_capacity(self.container_count());
        let mut pods = Vec::with_capacity(self.pods.len());
        let mut sum_cpu = 0u64;
        let mut sum_memory = 0u64;
        for pod in &self.pods {
            let mut pod_point = Point {
                cpu_ns: 0,
                memory: 0,
                timestamp_ms: 0,
            };
            for c in &pod.containers {
                // A sample is never older than the container itself.
                let start_ms = c.start_ns.div_euclid(1_000_000);
                let ts = on_grid(t_ms, self.sample_period_ms, c.phase_ms).max(start_ms);
                let point = Point {
                    cpu_ns: c.cpu_ns(ts),
                    memory: c.memory(ts),
                    timestamp_ms: ts,
                };
                pod_point.cpu_ns += point.cpu_ns;
                pod_point.memory += point.memory;
                pod_point.timestamp_ms = pod_point.timestamp_ms.max(ts);
                containers.push(point);
            }
            sum_cpu += pod_point.cpu_ns;
            sum_memory += pod_point.memory;
            pods.push(pod_point);
        }
        let ts = on_grid(t_ms, self.sample_period_ms, self.phase_ms);
        let uptime = ((ts as f64 * 1e6 - self.boot_ns as f64) / 1e9).max(0.0);
        let node = Point {
            cpu_ns: (self.overhead_cores * uptime * 1e9) as u64 + self.retired_cpu_ns + sum_cpu,
            memory: self.system_memory + sum_memory,
            timestamp_ms: ts,
        };
        Evaluated {
            node,
            pods,
            containers,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn container(profile: Profile) -> ContainerSim {
        ContainerSim {
            name: "c".into(),
            start_ns: 1_700_000_000_000_000_000,
            profile,
            memory_base: 50 << 20,
            memory_wobble: 5 << 20,
            memory_period: 120.0,
            phase_ms: 123,
        }
    }

    #[test]
    fn spiky_counter_never_decreases_and_averages_between_base_and_peak() {
        let c = container(Profile::Spiky {
            base: 0.05,
            peak: 1.5,
            period: 60.0,
        });
        let start_ms = 1_700_000_000_000i64;
        let mut last = 0;
        for step in 0..2_000 {
            let v = c.cpu_ns(start_ms + step * 97);
            assert!(v >= last, "counter went back at step {step}");
            last = v;
        }
        let over_period = (c.cpu_ns(start_ms + 60_000) - STARTUP_CPU_NS) as f64 / 1e9 / 60.0;
        assert!(
            (over_period - (0.05 + 1.45 / 2.0)).abs() < 1e-6,
            "{over_period}"
        );
    }

    #[test]
    fn node_counter_covers_its_containers() {
        let layout = NodeLayout {
            pods: vec![PodSim {
                namespace: "ns".into(),
                name: "p".into(),
                containers: vec![
                    container(Profile::Steady { cores: 0.2 }),
                    container(Profile::Idle { cores: 0.001 }),
                ],
            }],
            boot_ns: 1_699_000_000_000_000_000,
            overhead_cores: 0.1,
            system_memory: 500 << 20,
            retired_cpu_ns: 7,
            phase_ms: 0,
            sample_period_ms: 10_000,
        };
        let e = layout.evaluate(1_700_000_100_000);
        let sum_cpu: u64 = e.containers.iter().map(|c| c.cpu_ns).sum();
        let sum_mem: u64 = e.containers.iter().map(|c| c.memory).sum();
        assert!(e.node.cpu_ns > sum_cpu);
        assert!(e.node.memory > sum_mem);
        assert_eq!(e.pods[0].cpu_ns, sum_cpu);
        assert_eq!(e.node.timestamp_ms % 10_000, 0);
        assert_eq!(e.containers[0].timestamp_ms % 10_000, 123);
    }
}
