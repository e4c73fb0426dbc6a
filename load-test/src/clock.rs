//! One monotonic clock for the whole process.
//!
//! Tokens carry send times as nanoseconds since this process's epoch, so every thread must read
//! the same clock from the same epoch. It is `CLOCK_MONOTONIC` read directly (not `Instant`)
//! because the worker's alarm (`timerfd`) is armed in absolute `CLOCK_MONOTONIC` time.

use std::sync::OnceLock;

/// Nanoseconds since the process epoch, readable from any thread.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    epoch_ns: u64,
}

static PROCESS_CLOCK: OnceLock<Clock> = OnceLock::new();

impl Clock {
    /// The process-wide clock (its epoch is the first call).
    pub fn process() -> Clock {
        *PROCESS_CLOCK.get_or_init(|| Clock {
            epoch_ns: monotonic_ns(),
        })
    }

    /// Nanoseconds since the process epoch.
    #[inline]
    pub fn now_ns(&self) -> u64 {
        monotonic_ns().saturating_sub(self.epoch_ns)
    }

    /// The absolute `CLOCK_MONOTONIC` reading of process time `ns` (for `timerfd`).
    pub fn to_monotonic_ns(&self, ns: u64) -> u64 {
        self.epoch_ns + ns
    }
}

fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; CLOCK_MONOTONIC always exists on Linux.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Seconds (possibly fractional) as nanoseconds.
pub fn secs_to_ns(secs: f64) -> u64 {
    (secs.max(0.0) * 1e9) as u64
}

/// Nanoseconds as fractional seconds.
pub fn ns_to_secs(ns: u64) -> f64 {
    ns as f64 / 1e9
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clock_is_monotonic_and_shared() {
        let a = Clock::process().now_ns();
        let b = Clock::process().now_ns();
        assert!(b >= a);
        assert_eq!(
            Clock::process().to_monotonic_ns(0),
            Clock::process().epoch_ns
        );
    }
}
