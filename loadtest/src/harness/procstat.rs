//! Per-process CPU and memory, sampled from `/proc/PID/stat` (utime + stime, in clock ticks) and
//! `/proc/PID/status` (VmRSS).
//!
//! Server, fleet and load generator share the machine's cores, so each is measured on its own
//! PID. CPU is reported in cores: CPU seconds spent per wall second over an interval.

use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

/// Why a process could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ProcError {
    #[error("reading /proc/{pid}/{file}: {source}")]
    Read {
        pid: u32,
        file: &'static str,
        source: std::io::Error,
    },
    #[error("/proc/{pid}/{file} has no {field}")]
    Field {
        pid: u32,
        file: &'static str,
        field: &'static str,
    },
}

/// One reading of a process.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ProcReading {
    /// User plus system CPU time since the process started, seconds.
    pub cpu_seconds: f64,
    /// Resident memory, bytes.
    pub rss_bytes: u64,
}

/// Clock ticks per second (`sysconf(_SC_CLK_TCK)`), 100 if the call fails.
pub fn clock_ticks() -> f64 {
    // SAFETY: sysconf only reads a configuration value.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if ticks > 0 {
        ticks as f64
    } else {
        100.0
    }
}

/// utime + stime, in ticks, from the text of `/proc/PID/stat`.
pub fn parse_stat_ticks(stat: &str) -> Option<u64> {
    // The command name may hold spaces and parentheses: fields resume after the last ')'.
    let rest = stat.get(stat.rfind(')')? + 1..)?;
    let mut fields = rest.split_ascii_whitespace();
    // After the name: state(3) ppid pgrp session tty_nr tpgid flags minflt cminflt majflt
    // cmajflt utime(14) stime(15); `rest` starts at field 3.
    let utime: u64 = fields.nth(11)?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

/// VmRSS in bytes, from the text of `/proc/PID/status`.
pub fn parse_status_rss(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let mut parts = line.split_whitespace().skip(1);
    let value: u64 = parts.next()?.parse().ok()?;
    let scale = match parts.next() {
        Some("kB") | None => 1024,
        Some("mB") | Some("MB") => 1024 * 1024,
        Some(_) => return None,
    };
    Some(value * scale)
}

/// Reads a process's CPU time and resident memory now.
pub fn read(pid: u32) -> Result<ProcReading, ProcError> {
    let stat =
        std::fs::read_to_string(format!("/proc/{pid}/stat")).map_err(|source| ProcError::Read {
            pid,
            file: "stat",
            source,
        })?;
    let ticks = parse_stat_ticks(&stat).ok_or(ProcError::Field {
        pid,
        file: "stat",
        field: "utime and stime",
    })?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).map_err(|source| {
        ProcError::Read {
            pid,
            file: "status",
            source,
        }
    })?;
    // Kernel threads have no VmRSS line; a user process always does.
    let rss_bytes = parse_status_rss(&status).ok_or(ProcError::Field {
        pid,
        file: "status",
        field: "VmRSS",
    })?;
    Ok(ProcReading {
        cpu_seconds: ticks as f64 / clock_ticks(),
        rss_bytes,
    })
}

/// One point of a process's series.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ProcPoint {
    /// Seconds since the run began.
    pub t: f64,
    /// CPU since the previous point, cores.
    pub cpu_cores: f64,
    pub rss_bytes: u64,
    /// Cumulative CPU seconds at this point, for exact window averages.
    pub cpu_seconds: f64,
}

/// What a process did over a run.
#[derive(Clone, Debug, Default)]
pub struct ProcSeries {
    /// `server`, `fleet` or `loadgen`.
    pub role: String,
    pub pid: u32,
    pub points: Vec<ProcPoint>,
}

impl ProcSeries {
    /// Mean CPU in cores between two run times (seconds), from the cumulative counter at the
    /// points nearest inside the window; `None` with fewer than two points there.
    pub fn mean_cpu_cores(&self, from: f64, to: f64) -> Option<f64> {
        let inside: Vec<&ProcPoint> = self
            .points
            .iter()
            .filter(|p| p.t >= from - 1e-6 && p.t <= to + 1e-6)
            .collect();
        let (first, last) = (inside.first()?, inside.last()?);
        let span = last.t - first.t;
        (span > 0.0).then(|| (last.cpu_seconds - first.cpu_seconds) / span)
    }

    /// Peak resident memory between two run times, bytes.
    pub fn max_rss_bytes(&self, from: f64, to: f64) -> Option<u64> {
        self.points
            .iter()
            .filter(|p| p.t >= from - 1e-6 && p.t <= to + 1e-6)
            .map(|p| p.rss_bytes)
            .max()
    }
}

/// Samples processes every `interval` until `stop`, then returns their series. A process that
/// exits stops getting points; the others go on.
pub async fn sample(
    processes: Vec<(String, u32)>,
    interval: Duration,
    began: Instant,
    stop: CancellationToken,
) -> Vec<ProcSeries> {
    let mut series: Vec<ProcSeries> = processes
        .into_iter()
        .map(|(role, pid)| ProcSeries {
            role,
            pid,
            points: Vec::new(),
        })
        .collect();
    let mut last: Vec<Option<(f64, f64)>> = vec![None; series.len()];
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = stop.cancelled() => break,
        }
        let t = began.elapsed().as_secs_f64();
        for (s, prev) in series.iter_mut().zip(last.iter_mut()) {
            let Ok(reading) = read(s.pid) else {
                continue;
            };
            let cpu_cores = match *prev {
                Some((pt, pc)) if t > pt => (reading.cpu_seconds - pc) / (t - pt),
                _ => 0.0,
            };
            // The first reading only anchors the CPU counter: a point with a made-up rate would
            // lie about the start.
            if prev.is_some() {
                s.points.push(ProcPoint {
                    t,
                    cpu_cores,
                    rss_bytes: reading.rss_bytes,
                    cpu_seconds: reading.cpu_seconds,
                });
            }
            *prev = Some((t, reading.cpu_seconds));
        }
    }
    series
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_ticks_are_utime_plus_stime_even_with_a_strange_command_name() {
        let stat = "1234 (a) b (c)) S 1 1234 1234 0 -1 4194560 500 0 0 0 170 30 0 0 20 0 8 0 \
                    100 1000000 200 18446744073709551615";
        assert_eq!(parse_stat_ticks(stat), Some(200));
    }

    #[test]
    fn rss_is_read_in_bytes() {
        let status = "Name:\tx\nVmPeak:\t 9999 kB\nVmRSS:\t    2048 kB\nThreads:\t3\n";
        assert_eq!(parse_status_rss(status), Some(2048 * 1024));
        assert_eq!(parse_status_rss("Name:\tkthreadd\n"), None);
    }

    #[test]
    fn this_process_can_be_read() {
        let r = read(std::process::id()).expect("reads itself");
        assert!(r.rss_bytes > 0);
        assert!(r.cpu_seconds >= 0.0);
    }

    #[test]
    fn a_missing_process_is_an_error() {
        // PIDs are at most 2^22 on Linux.
        assert!(matches!(read(u32::MAX - 1), Err(ProcError::Read { .. })));
    }

    #[test]
    fn window_cpu_uses_the_cumulative_counter() {
        let p = |t: f64, cpu_seconds: f64| ProcPoint {
            t,
            cpu_cores: 0.0,
            rss_bytes: (t as u64 + 1) * 10,
            cpu_seconds,
        };
        let s = ProcSeries {
            role: "server".into(),
            pid: 1,
            points: vec![p(0.0, 1.0), p(1.0, 1.5), p(2.0, 2.0), p(3.0, 4.0)],
        };
        assert_eq!(s.mean_cpu_cores(1.0, 3.0), Some(1.25));
        assert_eq!(s.mean_cpu_cores(2.5, 3.0), None);
        assert_eq!(s.max_rss_bytes(0.0, 2.0), Some(30));
    }
}
