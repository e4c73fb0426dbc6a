//! `--max-publish-rate`: each connection's messages against its [`Rate`], and flooding.
//!
//! A session keeps a [`PublishMeter`] (8 bytes) and asks it about every data message it
//! reads. The time between two messages comes from the session's liveness, which records
//! the loop turn's `now` for every data message anyway: the meter keeps no clock of its own
//! and the check reads none.
//!
//! **Flooding** is sending at more than [`FLOOD_FACTOR`] times the rate for a sustained
//! time. A second, looser bucket measures it: it holds `FLOOD_FACTOR × FLOOD_SECONDS × N`
//! tokens (five seconds' worth of ten times the rate `N`) and gains `FLOOD_FACTOR × N` a
//! second; every data message takes one from it, delivered or dropped. The message that finds
//! it empty ends the connection ([`Publish::Flood`]). A client sending at `20 N` a second is
//! closed after 5 s, one at `100 N` after about 0.6 s; one that stays at or under `10 N` a
//! second never is: its excess is only dropped.

use std::time::Duration;

use super::rate::{Rate, Spent};

/// Flooding is sending at more than this many times the rate...
pub const FLOOD_FACTOR: f32 = 10.0;

/// ...for this long (seconds' worth of the flood rate a client may send beyond it).
pub const FLOOD_SECONDS: f32 = 5.0;

/// What becomes of a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Publish {
    /// Within the rate: deliver it.
    Accept,
    /// Over the rate: drop it (and tell a v1 client so).
    Drop,
    /// Flooding: close the connection.
    Flood,
}

/// One connection's publish buckets: the rate's and the flood's. `Default` is both full.
#[derive(Debug, Clone, Copy, Default)]
pub struct PublishMeter {
    rate: Spent,
    flood: Spent,
}

impl PublishMeter {
    /// A data message arrived `since_last` after the previous one (or after the upgrade).
    #[inline]
    pub fn on_message(&mut self, since_last: Duration, rate: Rate) -> Publish {
        let flood = FLOOD_FACTOR * rate.refill();
        if !self.flood.take(since_last, flood, flood * FLOOD_SECONDS) {
            return Publish::Flood;
        }
        if self.rate.take(since_last, rate.refill(), rate.capacity()) {
            Publish::Accept
        } else {
            Publish::Drop
        }
    }

    /// Whether both buckets are full `since_last` after the last message: the meter is then
    /// as good as a new one (a session may give it back and start afresh).
    pub fn is_full(&self, since_last: Duration, rate: Rate) -> bool {
        let flood = FLOOD_FACTOR * rate.refill();
        self.flood.after(since_last, flood) == 0.0
            && self.rate.after(since_last, rate.refill()) == 0.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    /// Sends `count` messages `gap` apart from `start` (the first one `gap` after it);
    /// returns how many of each verdict, stopping at the first flood.
    fn send(meter: &mut PublishMeter, rate: Rate, count: u32, gap: Duration) -> [u32; 3] {
        let start = Instant::now();
        let mut last = start;
        let mut seen = [0; 3];
        for i in 1..=count {
            let now = start + gap * i;
            let verdict = meter.on_message(now - last, rate);
            last = now;
            seen[verdict as usize] += 1;
            if verdict == Publish::Flood {
                break;
            }
        }
        seen
    }

    #[test]
    fn a_meter_is_full_again_once_both_buckets_have_refilled() {
        let rate = Rate::new(2, Some(2));
        let mut meter = PublishMeter::default();
        assert!(meter.is_full(Duration::ZERO, rate));
        meter.on_message(Duration::ZERO, rate);
        assert!(!meter.is_full(Duration::from_millis(400), rate));
        // One token back at 2 a second takes 0.5 s (the flood bucket refills faster).
        assert!(meter.is_full(Duration::from_millis(500), rate));
    }

    #[test]
    fn within_the_rate_everything_is_accepted_however_long() {
        let mut meter = PublishMeter::default();
        // 5 a second, for an hour, sent at 4 a second.
        let rate = Rate::new(5, None);
        let [accepted, dropped, flood] =
            send(&mut meter, rate, 4 * 3600, Duration::from_millis(250));
        assert_eq!((accepted, dropped, flood), (4 * 3600, 0, 0));
    }

    #[test]
    fn a_burst_over_the_bucket_is_dropped_past_rate_plus_burst() {
        let mut meter = PublishMeter::default();
        let rate = Rate::new(5, Some(3));
        let [accepted, dropped, flood] = send(&mut meter, rate, 30, Duration::ZERO);
        assert_eq!((accepted, dropped, flood), (8, 22, 0));
    }

    #[test]
    fn twice_the_rate_is_dropped_by_half_and_never_closed() {
        let mut meter = PublishMeter::default();
        let rate = Rate::new(4, Some(0));
        // 8 a second (every 125 ms) for 10 minutes: 4 at once, then 4 a second get through.
        let [accepted, dropped, flood] =
            send(&mut meter, rate, 8 * 600, Duration::from_millis(125));
        assert_eq!(flood, 0);
        assert!((2400..=2404).contains(&accepted), "{accepted}");
        assert_eq!(accepted + dropped, 8 * 600);
    }

    #[test]
    fn ten_times_the_rate_is_not_a_flood_but_twenty_is_closed_after_five_seconds() {
        let rate = Rate::new(4, None);
        // 40 a second (every 25 ms) for a minute: the flood bucket never runs dry.
        let mut meter = PublishMeter::default();
        let [_, _, flood] = send(&mut meter, rate, 40 * 60, Duration::from_millis(25));
        assert_eq!(flood, 0);
        // 80 a second (every 12.5 ms): the flood bucket (200) drains by 40 a second: 5 s.
        let mut meter = PublishMeter::default();
        let gap = Duration::from_micros(12_500);
        let [accepted, dropped, flood] = send(&mut meter, rate, 80 * 60, gap);
        assert_eq!(flood, 1);
        let seconds = (accepted + dropped + 1) as f32 / 80.0;
        assert!((4.9..=5.1).contains(&seconds), "closed after {seconds} s");
    }

    #[test]
    fn a_flood_at_once_is_closed_at_fifty_times_the_rate() {
        let mut meter = PublishMeter::default();
        let rate = Rate::new(2, Some(1));
        let [accepted, dropped, flood] = send(&mut meter, rate, 1000, Duration::ZERO);
        assert_eq!((accepted, dropped, flood), (3, 97, 1));
    }
}
