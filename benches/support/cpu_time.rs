//! A criterion measurement of CPU time, not wall time: on a shared machine wall time mostly
//! measures how long other processes held the cores. The calling thread's CPU time for work done
//! where it is measured; the whole process's for work handed to other threads (a list rendered on
//! the blocking pool and streamed to the caller).

use std::time::Duration;

use criterion::measurement::{Measurement, ValueFormatter, WallTime};

/// CPU time consumed by the calling thread, or by the whole process.
pub struct CpuTime {
    clock: libc::clockid_t,
    /// Only lends its duration and throughput formatter.
    wall: WallTime,
}

impl CpuTime {
    pub fn thread() -> Self {
        CpuTime {
            clock: libc::CLOCK_THREAD_CPUTIME_ID,
            wall: WallTime,
        }
    }

    // The store bench measures only on its own thread.
    #[allow(dead_code)]
    pub fn process() -> Self {
        CpuTime {
            clock: libc::CLOCK_PROCESS_CPUTIME_ID,
            wall: WallTime,
        }
    }

    fn now(&self) -> Duration {
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: `ts` is a valid, writable timespec; both CPU-time clocks exist on Linux.
        let rc = unsafe { libc::clock_gettime(self.clock, &mut ts) };
        assert_eq!(rc, 0, "clock_gettime({})", self.clock);
        Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
    }
}

impl Measurement for CpuTime {
    type Intermediate = Duration;
    type Value = Duration;

    fn start(&self) -> Duration {
        self.now()
    }
    fn end(&self, start: Duration) -> Duration {
        self.now().saturating_sub(start)
    }
    fn add(&self, a: &Duration, b: &Duration) -> Duration {
        *a + *b
    }
    fn zero(&self) -> Duration {
        Duration::ZERO
    }
    fn to_f64(&self, value: &Duration) -> f64 {
        value.as_nanos() as f64
    }
    fn formatter(&self) -> &dyn ValueFormatter {
        self.wall.formatter()
    }
}
