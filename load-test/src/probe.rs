//! Reading CPU time and memory of the server under test (and of this process) from /proc.
//!
//! Client and server share the machine's cores, so throughput per wall-second says little on
//! its own; throughput per *server CPU-second* compares servers fairly.

use std::fs;

/// A running server process, by pid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServerProbe {
    pub pid: u32,
}

/// A sample of a process's resource use.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Usage {
    /// User + system CPU seconds since the process started.
    pub cpu_secs: f64,
    pub rss_bytes: u64,
}

impl ServerProbe {
    /// `None` if the process is gone or /proc is unreadable.
    pub fn sample(&self) -> Option<Usage> {
        let stat = fs::read_to_string(format!("/proc/{}/stat", self.pid)).ok()?;
        let status = fs::read_to_string(format!("/proc/{}/status", self.pid)).ok()?;
        Some(Usage {
            cpu_secs: cpu_secs_from_stat(&stat)?,
            rss_bytes: rss_from_status(&status)?,
        })
    }
}

/// utime + stime (fields 14 and 15 of /proc/PID/stat) in seconds. The command name (field 2)
/// may contain spaces and parentheses, so fields are counted from the last `)`.
pub fn cpu_secs_from_stat(stat: &str) -> Option<f64> {
    let after_name = &stat[stat.rfind(')')? + 1..];
    let mut fields = after_name.split_whitespace();
    // After the name: field 3 (state) is index 0, so utime (14) is index 11.
    let utime: u64 = fields.nth(11)?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some((utime + stime) as f64 / clock_ticks_per_sec())
}

/// VmRSS of /proc/PID/status, in bytes.
pub fn rss_from_status(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

fn clock_ticks_per_sec() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if ticks > 0 { ticks as f64 } else { 100.0 }
}

/// CPU seconds (user + system) this process has used so far.
pub fn own_cpu_secs() -> f64 {
    // SAFETY: zeroed rusage is a valid out-parameter.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: RUSAGE_SELF with a valid pointer.
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) } != 0 {
        return 0.0;
    }
    let secs = |tv: libc::timeval| tv.tv_sec as f64 + tv.tv_usec as f64 / 1e6;
    secs(usage.ru_utime) + secs(usage.ru_stime)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_stat_with_awkward_names() {
        let stat = "1234 (a) b (c) S 1 1 1 0 -1 4194304 100 0 0 0 250 50 0 0 20 0 4 0 1 2 3";
        let secs = cpu_secs_from_stat(stat).unwrap();
        assert!((secs - 300.0 / clock_ticks_per_sec()).abs() < 1e-9);
    }

    #[test]
    fn parses_rss() {
        let status = "Name:\tshardcast\nVmRSS:\t   2048 kB\nThreads:\t3\n";
        assert_eq!(rss_from_status(status), Some(2048 * 1024));
    }

    #[test]
    fn samples_this_process() {
        let usage = ServerProbe {
            pid: std::process::id(),
        }
        .sample()
        .unwrap();
        assert!(usage.rss_bytes > 0);
    }
}
