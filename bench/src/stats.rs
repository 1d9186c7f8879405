//! Latency summaries, CPU accounting from `/proc`, and what the machine is.

use std::{collections::BTreeMap, time::Instant};

use serde::{Deserialize, Serialize};

/// Percentiles of a set of latencies, in milliseconds (nearest rank).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Summary {
    pub n: usize,
    pub mean_ms: f64,
    pub min_ms: f64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

impl Summary {
    /// Summarises `samples` (milliseconds); all zero when empty.
    pub fn of(samples: &[f64]) -> Self {
        if samples.is_empty() {
            return Self::default();
        }
        let mut sorted = samples.to_vec();
        sorted.sort_by(f64::total_cmp);
        let n = sorted.len();
        Self {
            n,
            mean_ms: round3(sorted.iter().sum::<f64>() / n as f64),
            min_ms: round3(sorted[0]),
            p50_ms: round3(percentile(&sorted, 0.50)),
            p90_ms: round3(percentile(&sorted, 0.90)),
            p99_ms: round3(percentile(&sorted, 0.99)),
            max_ms: round3(sorted[n - 1]),
        }
    }
}

/// Nearest-rank percentile of sorted values: the smallest value with at least `q` of all at or
/// below it.
pub fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Rounds to three decimals (microseconds, for milliseconds) for readable JSON.
pub fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// Milliseconds since `start`.
pub fn ms_since(start: Instant) -> f64 {
    start.elapsed().as_secs_f64() * 1000.0
}

/// CPU time (user + system, all threads) of a process, in seconds; `None` once it is gone.
pub fn process_cpu_secs(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces: fields are counted after its closing parenthesis.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line, 12 and 13 after the name.
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / clock_ticks())
}

fn clock_ticks() -> f64 {
    // USER_HZ is 100 on every Linux architecture Tandem builds for.
    100.0
}

/// Busy and total CPU time of the whole machine (all cores), in seconds, from `/proc/stat`.
fn machine_cpu_secs() -> Option<(f64, f64)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let line = stat.lines().next()?;
    let values: Vec<f64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|v| v.parse().ok())
        .collect();
    let total: f64 = values.iter().take(8).sum();
    // idle and iowait are fields 4 and 5.
    let idle = values.get(3).copied().unwrap_or(0.0) + values.get(4).copied().unwrap_or(0.0);
    Some(((total - idle) / clock_ticks(), total / clock_ticks()))
}

/// Where the CPU went during one measurement: each named process, everything else.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct CpuSplit {
    pub wall_secs: f64,
    /// CPU seconds per process name (`bench` is the load generator itself).
    pub processes: BTreeMap<String, f64>,
    /// CPU seconds used by processes that are not part of the benchmark (other users' builds).
    pub others: f64,
    /// Cores' worth of time available in the window (wall time x cores).
    pub capacity: f64,
}

/// Snapshots CPU counters of the named processes and the machine; [`CpuMeter::stop`] gives the
/// difference.
#[derive(Debug)]
pub struct CpuMeter {
    started: Instant,
    pids: Vec<(String, u32, f64)>,
    machine: (f64, f64),
}

impl CpuMeter {
    /// Starts measuring `pids` (name, pid); the benchmark's own process is added as `bench`.
    pub fn start(pids: &[(&str, u32)]) -> Self {
        let mut all: Vec<(String, u32)> = pids.iter().map(|(n, p)| ((*n).to_owned(), *p)).collect();
        all.push(("bench".to_owned(), std::process::id()));
        Self {
            started: Instant::now(),
            pids: all
                .into_iter()
                .map(|(name, pid)| {
                    let cpu = process_cpu_secs(pid).unwrap_or(0.0);
                    (name, pid, cpu)
                })
                .collect(),
            machine: machine_cpu_secs().unwrap_or((0.0, 0.0)),
        }
    }

    /// CPU seconds per process since the start, and the rest of the machine's busy time.
    pub fn stop(&self) -> CpuSplit {
        let mut processes = BTreeMap::new();
        for (name, pid, before) in &self.pids {
            let used = process_cpu_secs(*pid).map_or(0.0, |now| now - before);
            *processes.entry(name.clone()).or_insert(0.0) += used;
        }
        let (busy, total) = machine_cpu_secs().unwrap_or(self.machine);
        let ours: f64 = processes.values().sum();
        CpuSplit {
            wall_secs: round3(self.started.elapsed().as_secs_f64()),
            others: round3((busy - self.machine.0 - ours).max(0.0)),
            capacity: round3(total - self.machine.1),
            processes: processes.into_iter().map(|(k, v)| (k, round3(v))).collect(),
        }
    }
}

/// The machine the numbers come from.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Machine {
    pub cores: usize,
    pub cpu_model: String,
    pub memory_gib: f64,
    pub kernel: String,
    /// 1, 5 and 15 minute load averages.
    pub load_before: [f64; 3],
    pub load_after: [f64; 3],
    /// Share of all cores' time used by processes outside the benchmark over the whole run.
    pub others_cpu_share: f64,
}

impl Machine {
    /// Reads `/proc` now; `load_after` and `others_cpu_share` are filled in at the end.
    pub fn read() -> Self {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu_model = cpuinfo
            .lines()
            .find_map(|l| l.strip_prefix("model name"))
            .and_then(|l| l.split_once(':'))
            .map(|(_, v)| v.trim().to_owned())
            .unwrap_or_else(|| "unknown".into());
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        let memory_kib: f64 = meminfo
            .lines()
            .find_map(|l| l.strip_prefix("MemTotal:"))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0);
        Self {
            cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
            cpu_model,
            memory_gib: round3(memory_kib / 1024.0 / 1024.0),
            kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
                .unwrap_or_default()
                .trim()
                .to_owned(),
            load_before: load_average(),
            load_after: [0.0; 3],
            others_cpu_share: 0.0,
        }
    }
}

/// The 1, 5 and 15 minute load averages.
pub fn load_average() -> [f64; 3] {
    let text = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let mut values = text.split_whitespace().filter_map(|v| v.parse().ok());
    [(); 3].map(|()| values.next().unwrap_or(0.0))
}

/// A process's resident memory (`VmRSS`) and its peak (`VmHWM`), in MiB.
pub fn rss_mib(pid: u32) -> Option<(f64, f64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| -> Option<f64> {
        let kib: f64 = status
            .lines()
            .find_map(|l| l.strip_prefix(name))?
            .split_whitespace()
            .next()?
            .parse()
            .ok()?;
        Some(round3(kib / 1024.0))
    };
    Some((field("VmRSS:")?, field("VmHWM:")?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_nearest_rank() {
        let samples: Vec<f64> = (1..=100).map(f64::from).collect();
        let s = Summary::of(&samples);
        assert_eq!((s.n, s.p50_ms, s.p90_ms, s.p99_ms), (100, 50.0, 90.0, 99.0));
        assert_eq!((s.min_ms, s.max_ms, s.mean_ms), (1.0, 100.0, 50.5));
        let one = Summary::of(&[7.0]);
        assert_eq!((one.p50_ms, one.p99_ms), (7.0, 7.0));
        assert_eq!(Summary::of(&[]).n, 0);
    }

    #[test]
    fn this_process_has_cpu_time_and_memory() {
        let pid = std::process::id();
        let spin = Instant::now();
        while spin.elapsed().as_millis() < 30 {
            std::hint::black_box(0);
        }
        assert!(process_cpu_secs(pid).is_some());
        let (rss, peak) = rss_mib(pid).unwrap();
        assert!(rss > 0.0 && peak >= rss, "{rss} {peak}");
        assert!(Machine::read().cores >= 1);
        assert!(process_cpu_secs(u32::MAX).is_none());
    }
}
