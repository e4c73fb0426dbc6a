//! Delays between reconnection attempts: exponential, capped, with jitter, bounded in count.
//!
//! Attempt `n` (from 0) waits a random time in `[d/2, d]` where `d = min(cap, first * 2^n)`
//! ("equal jitter"): clients dropped together by a restarting server spread their returns
//! instead of arriving as one wave, and each still waits at least half the nominal delay.

use std::hash::{BuildHasher, RandomState};
use std::time::Duration;

/// The first nominal delay.
pub const FIRST_DELAY: Duration = Duration::from_millis(500);
/// No delay is longer than this.
pub const MAX_DELAY: Duration = Duration::from_secs(30);

/// The reconnection schedule of one run.
#[derive(Debug, Clone)]
pub struct Backoff {
    first: Duration,
    cap: Duration,
    max_retries: u32,
    /// Attempts made since the last success.
    retries: u32,
    /// xorshift64* state (never 0). Jitter needs spread, not cryptographic quality.
    rng: u64,
}

impl Backoff {
    /// The default schedule with at most `max_retries` attempts in a row, randomly seeded.
    pub fn new(max_retries: u32) -> Backoff {
        Backoff::with(FIRST_DELAY, MAX_DELAY, max_retries, random_seed())
    }

    /// A schedule with explicit parameters and seed (for tests).
    pub fn with(first: Duration, cap: Duration, max_retries: u32, seed: u64) -> Backoff {
        Backoff {
            first,
            cap,
            max_retries,
            retries: 0,
            rng: mix(seed).max(1),
        }
    }

    /// The delay before the next attempt, or `None` once `max_retries` attempts were made.
    pub fn next_delay(&mut self) -> Option<Duration> {
        if self.retries >= self.max_retries {
            return None;
        }
        let doubling = 2u32.saturating_pow(self.retries);
        let nominal = self.first.saturating_mul(doubling).min(self.cap);
        self.retries += 1;
        let half = nominal / 2;
        Some(half + half.mul_f64(self.unit()))
    }

    /// Attempts made since the last [`reset`](Self::reset).
    pub fn retries(&self) -> u32 {
        self.retries
    }

    /// A connection succeeded: the next failure starts the schedule over.
    pub fn reset(&mut self) {
        self.retries = 0;
    }

    /// A uniform number in `[0, 1)`.
    fn unit(&mut self) -> f64 {
        self.rng ^= self.rng >> 12;
        self.rng ^= self.rng << 25;
        self.rng ^= self.rng >> 27;
        let x = self.rng.wrapping_mul(0x2545_F491_4F6C_DD1D);
        (x >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// A seed that differs between processes and between calls (jitter, random names): no
/// cryptographic quality, no dependency. RandomState's keys are random per process and per
/// instance, and the time makes two calls differ even where they are not.
pub fn random_seed() -> u64 {
    RandomState::new().hash_one((std::process::id(), std::time::Instant::now()))
}

/// SplitMix64's finaliser: nearby seeds give unrelated states.
fn mix(seed: u64) -> u64 {
    let mut z = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_double_within_their_jitter_band_up_to_the_cap() {
        let first = Duration::from_millis(100);
        let cap = Duration::from_millis(1000);
        for seed in 0..50 {
            let mut b = Backoff::with(first, cap, 8, seed);
            for n in 0..8 {
                let nominal = (first * 2u32.pow(n)).min(cap);
                let d = b.next_delay().expect("within max_retries");
                assert!(
                    d >= nominal / 2 && d <= nominal,
                    "seed {seed} attempt {n}: {d:?}"
                );
            }
        }
    }

    #[test]
    fn jitter_spreads_the_delays() {
        let delays: Vec<_> = (0..20)
            .map(|seed| Backoff::with(FIRST_DELAY, MAX_DELAY, 1, seed).next_delay())
            .collect();
        let distinct: std::collections::HashSet<_> = delays.iter().collect();
        assert!(distinct.len() > 10, "{delays:?}");
    }

    #[test]
    fn attempts_are_bounded_and_reset_after_a_success() {
        let mut b = Backoff::with(FIRST_DELAY, MAX_DELAY, 2, 7);
        assert!(b.next_delay().is_some());
        assert!(b.next_delay().is_some());
        assert_eq!(b.next_delay(), None);
        assert_eq!(b.retries(), 2);
        b.reset();
        let d = b.next_delay().expect("a fresh schedule");
        assert!(d <= FIRST_DELAY);
    }

    #[test]
    fn huge_attempt_counts_do_not_overflow() {
        let mut b = Backoff::with(FIRST_DELAY, MAX_DELAY, u32::MAX, 3);
        for _ in 0..100 {
            assert!(b.next_delay().expect("unbounded") <= MAX_DELAY);
        }
    }
}
