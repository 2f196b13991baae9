//! Per-process numbers from `/proc` (Linux): resident memory (`VmRSS` in `/proc/<pid>/status`)
//! and CPU time (`utime` + `stime` in `/proc/<pid>/stat`).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::{Context as _, Result};

fn field_kb(status: &str, name: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
}

/// `VmRSS` of `pid`, KiB.
pub fn rss_kb(pid: u32) -> Result<u64> {
    let path = format!("/proc/{pid}/status");
    let status = std::fs::read_to_string(&path).with_context(|| format!("cannot read {path}"))?;
    field_kb(&status, "VmRSS").with_context(|| format!("{path} has no VmRSS"))
}

/// Clock ticks per second of `/proc/<pid>/stat` times (`USER_HZ`, 100 on every Linux
/// architecture this runs on; `getconf CLK_TCK`).
const USER_HZ: f64 = 100.0;

/// CPU time (user + system, all threads) `pid` has used so far, in milliseconds.
pub fn cpu_ms(pid: u32) -> Result<f64> {
    let path = format!("/proc/{pid}/stat");
    let stat = std::fs::read_to_string(&path).with_context(|| format!("cannot read {path}"))?;
    cpu_ms_of(&stat).with_context(|| format!("{path}: unexpected format"))
}

/// CPU time the whole machine has spent busy so far (user, nice, system, irq, softirq over all
/// CPUs, from the first line of `/proc/stat`), in milliseconds.
pub fn machine_busy_ms() -> Result<f64> {
    let stat = std::fs::read_to_string("/proc/stat").context("cannot read /proc/stat")?;
    machine_busy_ms_of(&stat).context("/proc/stat: unexpected format")
}

fn machine_busy_ms_of(stat: &str) -> Option<f64> {
    let line = stat.lines().next()?.strip_prefix("cpu ")?;
    let fields: Vec<u64> = line
        .split_whitespace()
        .map(str::parse)
        .collect::<Result<_, _>>()
        .ok()?;
    // user nice system idle iowait irq softirq steal guest guest_nice
    let busy: u64 = [0, 1, 2, 5, 6]
        .iter()
        .map(|&i| fields.get(i).copied().unwrap_or(0))
        .sum();
    Some(busy as f64 * 1000.0 / USER_HZ)
}

fn cpu_ms_of(stat: &str) -> Option<f64> {
    // `pid (comm) state ppid …`: comm may contain spaces and parentheses, so split after the
    // last `)`. utime and stime are fields 14 and 15, i.e. the 12th and 13th after `)`.
    let (_, rest) = stat.rsplit_once(')')?;
    let mut fields = rest.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some((utime + stime) as f64 * 1000.0 / USER_HZ)
}

/// Samples the RSS of some processes every `every` on a thread of its own and keeps the largest
/// value seen for each.
pub struct PeakSampler {
    stop: Arc<AtomicBool>,
    handle: JoinHandle<Vec<u64>>,
}

impl PeakSampler {
    pub fn start(pids: Vec<u32>, every: Duration) -> PeakSampler {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let handle = std::thread::spawn(move || {
            let mut peaks = vec![0u64; pids.len()];
            loop {
                for (peak, pid) in peaks.iter_mut().zip(&pids) {
                    if let Ok(rss) = rss_kb(*pid) {
                        *peak = (*peak).max(rss);
                    }
                }
                if flag.load(Ordering::Relaxed) {
                    return peaks;
                }
                std::thread::sleep(every);
            }
        });
        PeakSampler { stop, handle }
    }

    /// Stops sampling; the peak RSS (KiB) of each pid, in the order given to `start`.
    pub fn finish(self) -> Vec<u64> {
        self.stop.store(true, Ordering::Relaxed);
        self.handle.join().unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_status_fields() {
        let s = "Name:\tx\nVmHWM:\t   20480 kB\nVmRSS:\t   10240 kB\n";
        assert_eq!(field_kb(s, "VmRSS"), Some(10240));
        assert_eq!(field_kb(s, "VmHWM"), Some(20480));
        assert_eq!(field_kb(s, "VmSwap"), None);
    }

    #[test]
    fn parses_stat_times() {
        let stat = "42 (a b) c) S 1 42 42 0 -1 4194560 100 0 0 0 250 30 0 0 20 0 3 0 9 0 0";
        assert_eq!(cpu_ms_of(stat), Some(2800.0));
        assert_eq!(cpu_ms_of("garbage"), None);
        assert!(cpu_ms(std::process::id()).unwrap() >= 0.0);
    }

    #[test]
    fn parses_machine_busy() {
        let stat = "cpu  100 1 20 5000 7 2 3 4 0 0\ncpu0 1 2 3 4 5 6 7 8 9 10\n";
        assert_eq!(machine_busy_ms_of(stat), Some(1260.0));
        assert_eq!(machine_busy_ms_of("intr 1 2"), None);
        assert!(machine_busy_ms().unwrap() > 0.0);
    }

    #[test]
    fn reads_own_status() {
        assert!(rss_kb(std::process::id()).unwrap() > 0);
    }
}
