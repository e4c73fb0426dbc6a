//! The token bucket under both rate limits: a [`Rate`] as configured, and [`Spent`], what a
//! bucket has used of it.

use std::time::Duration;

/// A configured rate limit: `per_second` on average, and up to `burst` more at once.
///
/// As a token bucket: it holds `per_second + burst` tokens and gains `per_second` of them
/// each second; every event takes one, and an event that finds less than one whole token is
/// over the limit. A client that has been quiet for a while may therefore do
/// `per_second + burst` things at once, and then `per_second` a second.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    /// Events per second, on average (at least 1; `Config::validate` checks it).
    pub per_second: u32,
    /// Events allowed at once beyond one second's worth.
    pub burst: u32,
}

impl Rate {
    /// A rate of `per_second` with a burst of `burst` (`None`: as many as `per_second`).
    pub fn new(per_second: u32, burst: Option<u32>) -> Rate {
        Rate {
            per_second,
            burst: burst.unwrap_or(per_second),
        }
    }

    /// The tokens a full bucket holds.
    pub fn capacity(self) -> f32 {
        self.per_second as f32 + self.burst as f32
    }

    /// Tokens gained per second.
    pub fn refill(self) -> f32 {
        self.per_second as f32
    }
}

/// How much of a bucket is used up: 0 is a full bucket (so a fresh one costs nothing to make,
/// and `Default` is full), `capacity` an empty one. Four bytes; the time of the last change is
/// kept by whoever owns the bucket, since a session already keeps one.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Spent(f32);

impl Spent {
    /// Refills the bucket for `elapsed` at `refill` tokens a second, then takes one token if
    /// a whole one is there. False when none is: nothing is taken then.
    #[inline]
    pub fn take(&mut self, elapsed: Duration, refill: f32, capacity: f32) -> bool {
        let spent = self.after(elapsed, refill);
        let taken = spent + 1.0 <= capacity;
        self.0 = if taken { spent + 1.0 } else { spent };
        taken
    }

    /// What would be used up after `elapsed` more of refilling.
    pub fn after(self, elapsed: Duration, refill: f32) -> f32 {
        (self.0 - elapsed.as_secs_f32() * refill).max(0.0)
    }

    /// Seconds until a whole token is there again (0 if one is now).
    pub fn wait(self, refill: f32, capacity: f32) -> f32 {
        ((self.0 + 1.0 - capacity) / refill).max(0.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn a_full_bucket_takes_rate_plus_burst_at_once_then_the_rate() {
        let rate = Rate::new(4, Some(2));
        let (refill, capacity) = (rate.refill(), rate.capacity());
        let mut bucket = Spent::default();
        for _ in 0..6 {
            assert!(bucket.take(Duration::ZERO, refill, capacity));
        }
        assert!(!bucket.take(Duration::ZERO, refill, capacity));
        // 4 a second: one token every 250 ms (125 ms is exact in binary: no rounding at the
        // edge).
        assert!(!bucket.take(125 * MS, refill, capacity));
        assert!(bucket.take(125 * MS, refill, capacity));
        assert!(!bucket.take(Duration::ZERO, refill, capacity));
    }

    #[test]
    fn a_refused_event_takes_nothing_and_time_still_counts() {
        let rate = Rate::new(4, Some(0));
        let (refill, capacity) = (rate.refill(), rate.capacity());
        let t0 = Instant::now();
        let mut bucket = Spent::default();
        let mut last = t0;
        let mut taken = 0;
        // 100 events at 100 ms intervals over 10 s: 4 at once, then 4 a second.
        for i in 1..=100u32 {
            let now = t0 + 100 * MS * i;
            taken += u32::from(bucket.take(now - last, refill, capacity));
            last = now;
        }
        assert!((42..=44).contains(&taken), "{taken}");
    }

    #[test]
    fn refilling_stops_at_full_and_the_wait_is_until_one_token() {
        let rate = Rate::new(2, None);
        assert_eq!(rate.burst, 2);
        let (refill, capacity) = (rate.refill(), rate.capacity());
        let mut bucket = Spent::default();
        while bucket.take(Duration::ZERO, refill, capacity) {}
        assert_eq!(bucket.wait(refill, capacity), 0.5);
        // A long silence refills it once, not many times over.
        assert_eq!(bucket.after(Duration::from_secs(3600), refill), 0.0);
        assert!(bucket.take(Duration::from_secs(3600), refill, capacity));
        assert_eq!(bucket.wait(refill, capacity), 0.0);
    }
}
