//! The process's own figures for `/metrics`: memory, CPU time, descriptors, start time —
//! the standard `process_*` families every Prometheus client library exports, so that
//! existing dashboards and alerts work unchanged — and the build's version and revision.
//!
//! They are read from `/proc` (the `procfs` crate) when a scrape asks, never on the loop's
//! hot path. A figure the kernel does not give (no `/proc`) is left out rather than
//! reported as zero.

use std::fmt::Write;

use procfs::WithCurrentSystemInfo;
use procfs::process::{LimitValue, Process};

use crate::metrics::single;

/// The crate's version and the git revision it was built from (`build.rs`).
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
/// See [`VERSION`]; `unknown` when built outside a git checkout.
pub const REVISION: &str = env!("SHARDCAST_GIT_REVISION");

/// Appends `shardcast_build_info` and the `process_*` families to `out`.
pub fn render(out: &mut String) {
    let _ = writeln!(
        out,
        "# HELP shardcast_build_info The version and git revision of this build (always 1)\n\
         # TYPE shardcast_build_info gauge\n\
         shardcast_build_info{{version=\"{VERSION}\",revision=\"{REVISION}\"}} 1"
    );
    let Ok(me) = Process::myself() else {
        return;
    };
    if let Ok(stat) = me.stat() {
        let ticks = procfs::ticks_per_second() as f64;
        let cpu = (stat.utime + stat.stime) as f64 / ticks;
        single(
            out,
            "process_cpu_seconds_total",
            "counter",
            "User and system CPU time spent, in seconds",
            cpu,
        );
        single(
            out,
            "process_resident_memory_bytes",
            "gauge",
            "Resident memory size in bytes",
            stat.rss_bytes().get(),
        );
        single(
            out,
            "process_virtual_memory_bytes",
            "gauge",
            "Virtual memory size in bytes",
            stat.vsize,
        );
        if let Ok(boot) = procfs::boot_time_secs() {
            let start = boot as f64 + stat.starttime as f64 / ticks;
            single(
                out,
                "process_start_time_seconds",
                "gauge",
                "Start time of the process since the Unix epoch, in seconds",
                start,
            );
        }
    }
    if let Ok(open) = me.fd_count() {
        single(
            out,
            "process_open_fds",
            "gauge",
            "Open file descriptors (sockets included)",
            open,
        );
    }
    if let Ok(limits) = me.limits()
        && let LimitValue::Value(max) = limits.max_open_files.soft_limit
    {
        single(
            out,
            "process_max_fds",
            "gauge",
            "The limit on open file descriptors (RLIMIT_NOFILE, soft)",
            max,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_family_is_there_with_a_sane_value() {
        let mut out = String::new();
        render(&mut out);
        let value = |name: &str| -> f64 {
            let line = out
                .lines()
                .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
                .unwrap_or_else(|| panic!("{name} missing in\n{out}"));
            line[name.len() + 1..].parse().expect("a number")
        };
        assert!(value("process_resident_memory_bytes") > 1e5);
        assert!(value("process_open_fds") >= 3.0);
        assert!(value("process_max_fds") >= value("process_open_fds"));
        assert!(value("process_cpu_seconds_total") >= 0.0);
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("after 1970")
            .as_secs_f64();
        let start = value("process_start_time_seconds");
        assert!(
            start <= now + 1.0 && start > now - 86_400.0,
            "start {start}"
        );
        assert!(out.contains(&format!("version=\"{VERSION}\"")));
    }
}
