//! Coalescing: when a turn's output may wait for the next, so that broadcasts to big rooms
//! leave in fewer `writev`s.
//!
//! Output waits only if the broadcasts delivered since the last flush reached at least
//! [`COALESCE_MIN_ROOM`] local members on average, the window (`--coalesce-us`) is not zero,
//! the server is not draining, batching pays (below), and the last flush was less than a window
//! ago; then the flush is due at the window's end, and broadcasts arriving meanwhile leave in
//! the same `writev` (fewer syscalls and packets per delivery, on both ends of every
//! connection). Output for small rooms (a chat message to 20 people, a pong) never waits: its
//! latency is worth more than the few syscalls saved.
//!
//! **When batching pays** (`--coalesce-rule adaptive`, the default). Waiting saves writes, and
//! writes only matter when there are many. Every [`LOAD_PERIOD`] the coalescer estimates what
//! writing every delivery at once would cost: the deliveries of the period times the time one
//! socket write took in its flushes, as a share of the period. Below [`BATCHING_SHARE`] of the
//! thread's time it flushes at the end of every turn, as `--coalesce-us 0` does, so a quiet
//! server adds no delay; above it, the window applies, as with `--coalesce-rule fixed`.
//! Batching starts as soon as a period's deliveries so far pass the share (a burst is batched
//! from its first milliseconds) and stops only after a whole period below it. The estimate
//! needs no tuning per machine (it is measured) and does not oscillate: while batching, a
//! socket write carries several frames and costs more, so the estimate only overstates the
//! cost of writing at once, and batching stops only once the load has clearly dropped.
//!
//! Only a flush that carried broadcasts starts a new window. A flush with none (a pong, a
//! socket that became writable, the turn in which a member's message left for its room's
//! home shard to be numbered) must not push back the window of the broadcasts that arrive
//! just after it: the numbered copy of that very message would wait a whole window more.

use std::time::{Duration, Instant};

pub use crate::config::CoalesceRule as Rule;

/// Broadcasts reaching at least this many local members on average may wait for the
/// coalescing window; smaller rooms are flushed at once.
pub const COALESCE_MIN_ROOM: u64 = 64;

/// How often the adaptive rule re-estimates the cost of writing every delivery at once.
pub const LOAD_PERIOD: Duration = Duration::from_millis(100);

/// The share of a thread's time that writing every delivery at once may take before batching
/// starts. A quarter: below it, the writes saved by waiting are worth less than the latency
/// the wait adds.
pub const BATCHING_SHARE: f64 = 0.25;

/// What to do with this turn's output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Write it now.
    FlushNow,
    /// Hold it until this moment (poll no longer than that).
    Wait(Instant),
}

/// The coalescing state of one event-loop thread.
#[derive(Debug)]
pub struct Coalescer {
    window: Duration,
    last_flush: Instant,
    /// Broadcasts delivered locally since the last flush, and their deliveries.
    broadcasts: u64,
    deliveries: u64,
    /// When held output is due.
    due: Option<Instant>,
    rule: Rule,
    load: WriteLoad,
}

/// The adaptive rule's estimate: deliveries and socket writes over the current period.
#[derive(Debug)]
struct WriteLoad {
    since: Instant,
    deliveries: u64,
    writes: u64,
    writing: Duration,
    /// Seconds one socket write took, as last measured (kept through periods without writes).
    per_write: f64,
    /// Whether the last full period said batching pays.
    batching: bool,
}

impl WriteLoad {
    fn new(now: Instant) -> Self {
        WriteLoad {
            since: now,
            deliveries: 0,
            writes: 0,
            writing: Duration::ZERO,
            per_write: 0.0,
            batching: false,
        }
    }

    /// Whether batching pays: re-estimated at the end of every period, and sooner when a
    /// burst begins (batching starts as soon as the period's deliveries so far would cost the
    /// share; it stops only after a whole period below it).
    fn batching(&mut self, now: Instant) -> bool {
        if self.writes > 0 {
            self.per_write = self.writing.as_secs_f64() / self.writes as f64;
        }
        let cost = self.deliveries as f64 * self.per_write;
        let elapsed = now.saturating_duration_since(self.since);
        if elapsed >= LOAD_PERIOD {
            self.batching = cost / elapsed.as_secs_f64() > BATCHING_SHARE;
            self.since = now;
            self.deliveries = 0;
            self.writes = 0;
            self.writing = Duration::ZERO;
        } else if cost / LOAD_PERIOD.as_secs_f64() > BATCHING_SHARE {
            self.batching = true;
        }
        self.batching
    }
}

impl Coalescer {
    /// A coalescer with this window (zero: never wait).
    pub fn new(window: Duration, rule: Rule, now: Instant) -> Self {
        Coalescer {
            window,
            last_flush: now,
            broadcasts: 0,
            deliveries: 0,
            due: None,
            rule,
            load: WriteLoad::new(now),
        }
    }

    /// One broadcast reached `deliveries` local members.
    #[inline]
    pub fn delivered(&mut self, deliveries: u64) {
        self.broadcasts += 1;
        self.deliveries += deliveries;
        self.load.deliveries += deliveries;
    }

    /// A flush wrote `sockets` sessions' output in `took`: what a socket write costs here.
    pub fn flushed(&mut self, sockets: usize, took: Duration) {
        self.load.writes += sockets as u64;
        self.load.writing += took;
    }

    /// When held output is due, if some is held.
    pub fn due(&self) -> Option<Instant> {
        self.due
    }

    /// Decides for a turn with output waiting (`draining`: the server is shutting down, and
    /// nothing waits). After `FlushNow` the caller flushes, and a new window begins if the
    /// flush carries broadcasts.
    pub fn decide(&mut self, now: Instant, draining: bool) -> Decision {
        let big_rooms = self.deliveries >= COALESCE_MIN_ROOM * self.broadcasts.max(1);
        if !self.window.is_zero() && big_rooms && !draining && self.pays(now) {
            let due = self.last_flush + self.window;
            if now < due {
                self.due = Some(due);
                return Decision::Wait(due);
            }
        }
        self.due = None;
        if self.broadcasts > 0 {
            self.last_flush = now;
        }
        self.broadcasts = 0;
        self.deliveries = 0;
        Decision::FlushNow
    }

    /// Whether waiting is worth it under this coalescer's rule.
    fn pays(&mut self, now: Instant) -> bool {
        match self.rule {
            Rule::Fixed => true,
            Rule::Adaptive => self.load.batching(now),
        }
    }

    /// A turn with no output waiting: nothing is held.
    pub fn idle(&mut self) {
        self.due = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn small_rooms_never_wait() {
        let t0 = Instant::now();
        let mut c = Coalescer::new(10 * MS, Rule::Fixed, t0);
        c.delivered(COALESCE_MIN_ROOM - 1);
        assert_eq!(c.decide(t0 + MS, false), Decision::FlushNow);
        assert_eq!(c.due(), None);
    }

    #[test]
    fn big_rooms_wait_for_the_window_then_flush() {
        let t0 = Instant::now();
        let mut c = Coalescer::new(10 * MS, Rule::Fixed, t0);
        c.delivered(1000);
        assert_eq!(c.decide(t0 + MS, false), Decision::Wait(t0 + 10 * MS));
        assert_eq!(c.due(), Some(t0 + 10 * MS));
        // More broadcasts during the window join the same flush.
        c.delivered(1000);
        assert_eq!(c.decide(t0 + 5 * MS, false), Decision::Wait(t0 + 10 * MS));
        assert_eq!(c.decide(t0 + 10 * MS, false), Decision::FlushNow);
        // A new window starts at the flush.
        c.delivered(1000);
        assert_eq!(c.decide(t0 + 11 * MS, false), Decision::Wait(t0 + 20 * MS));
    }

    #[test]
    fn the_average_decides_not_one_big_room() {
        let t0 = Instant::now();
        let mut c = Coalescer::new(10 * MS, Rule::Fixed, t0);
        c.delivered(100);
        for _ in 0..9 {
            c.delivered(1); // nine small-room messages pull the average to 10.9
        }
        assert_eq!(c.decide(t0 + MS, false), Decision::FlushNow);
    }

    #[test]
    fn a_zero_window_or_a_drain_never_waits() {
        let t0 = Instant::now();
        let mut off = Coalescer::new(Duration::ZERO, Rule::Fixed, t0);
        off.delivered(1000);
        assert_eq!(off.decide(t0 + MS, false), Decision::FlushNow);
        let mut draining = Coalescer::new(10 * MS, Rule::Fixed, t0);
        draining.delivered(1000);
        assert_eq!(draining.decide(t0 + MS, true), Decision::FlushNow);
    }

    #[test]
    fn output_that_is_not_a_broadcast_flushes_at_once() {
        let t0 = Instant::now();
        let mut c = Coalescer::new(10 * MS, Rule::Fixed, t0);
        // A pong or a welcome: no broadcast was counted.
        assert_eq!(c.decide(t0 + MS, false), Decision::FlushNow);
    }

    #[test]
    fn a_flush_without_broadcasts_keeps_the_window() {
        let t0 = Instant::now();
        let mut c = Coalescer::new(10 * MS, Rule::Fixed, t0);
        c.delivered(1000);
        assert_eq!(c.decide(t0 + MS, false), Decision::Wait(t0 + 10 * MS));
        assert_eq!(c.decide(t0 + 10 * MS, false), Decision::FlushNow);
        // Output with no broadcast (a pong) leaves at once, and the window stays where it was:
        // a broadcast just after it waits until t0 + 20 ms, not until t0 + 22 ms.
        assert_eq!(c.decide(t0 + 12 * MS, false), Decision::FlushNow);
        c.delivered(1000);
        assert_eq!(c.decide(t0 + 13 * MS, false), Decision::Wait(t0 + 20 * MS));
        assert_eq!(c.decide(t0 + 20 * MS, false), Decision::FlushNow);
        // A flush with a small room's broadcast does start a window.
        c.delivered(1);
        assert_eq!(c.decide(t0 + 21 * MS, false), Decision::FlushNow);
        c.delivered(1000);
        assert_eq!(c.decide(t0 + 22 * MS, false), Decision::Wait(t0 + 31 * MS));
    }

    /// A coalescer that has seen one period: `deliveries` big-room deliveries, written by
    /// `writes` socket writes that took `writing` in all.
    fn adaptive_after(deliveries: u64, writes: usize, writing: Duration) -> (Coalescer, Instant) {
        let t0 = Instant::now();
        let mut c = Coalescer::new(10 * MS, Rule::Adaptive, t0);
        c.delivered(deliveries);
        c.flushed(writes, writing);
        (c, t0 + LOAD_PERIOD)
    }

    #[test]
    fn adaptive_flushes_at_once_while_writes_are_cheap() {
        // 100 deliveries in 100 ms at 10 µs a write: 1 % of the thread.
        let (mut c, t) = adaptive_after(100, 100, 1000 * Duration::from_micros(1));
        c.delivered(1000);
        assert_eq!(c.decide(t, false), Decision::FlushNow);
        // The very first big broadcast never waits either: nothing is known yet.
        let mut fresh = Coalescer::new(10 * MS, Rule::Adaptive, t);
        fresh.delivered(1000);
        assert_eq!(fresh.decide(t + MS, false), Decision::FlushNow);
    }

    #[test]
    fn adaptive_batches_once_writing_everything_at_once_would_cost_a_quarter() {
        // 50,000 deliveries in 100 ms at 2 µs a write: the whole thread.
        let (mut c, t) = adaptive_after(50_000, 1000, 2 * MS);
        c.delivered(1000);
        // The window since the last flush is long over: this flush starts a new one...
        assert_eq!(c.decide(t, false), Decision::FlushNow);
        // ...which the next broadcast waits for.
        c.delivered(1000);
        assert_eq!(c.decide(t + MS, false), Decision::Wait(t + 10 * MS));
        // Just under the share: 11,000 + 1,000 deliveries at 2 µs = 24 ms of 100.
        let (mut c, t) = adaptive_after(11_000, 1000, 2 * MS);
        c.delivered(1000);
        assert_eq!(c.decide(t, false), Decision::FlushNow);
        c.delivered(1000);
        assert_eq!(c.decide(t + MS, false), Decision::FlushNow);
    }

    #[test]
    fn adaptive_stops_batching_when_the_load_drops() {
        let (mut c, t) = adaptive_after(50_000, 1000, 2 * MS);
        c.delivered(1000);
        assert_eq!(c.decide(t, false), Decision::FlushNow);
        c.delivered(1000);
        assert!(matches!(c.decide(t + MS, false), Decision::Wait(_)));
        assert_eq!(c.decide(t + 10 * MS, false), Decision::FlushNow);
        c.flushed(1000, 2 * MS);
        // The next period: ten broadcasts to 100 members, cheap.
        for _ in 0..10 {
            c.delivered(100);
        }
        let later = t + LOAD_PERIOD + MS;
        assert_eq!(c.decide(later, false), Decision::FlushNow);
        c.delivered(100);
        assert_eq!(c.decide(later + MS, false), Decision::FlushNow);
    }

    #[test]
    fn a_burst_is_batched_before_its_period_ends() {
        // Writes were measured at 2 µs each; then 1,000-member broadcasts come fast.
        let (mut c, t) = adaptive_after(100, 100, 200 * Duration::from_micros(1));
        assert_eq!(c.decide(t, false), Decision::FlushNow); // rolls the period: quiet
        c.flushed(1000, 2 * MS);
        for i in 1..=12 {
            c.delivered(1000);
            let now = t + i * Duration::from_micros(500);
            // 12,000 deliveries × 2 µs = 24 ms: a quarter of a period, not yet more.
            assert_eq!(c.decide(now, false), Decision::FlushNow, "broadcast {i}");
        }
        // The 13th passes it: it waits for the window the 12th's flush began.
        c.delivered(1000);
        let last_flush = t + 12 * Duration::from_micros(500);
        let now = t + 13 * Duration::from_micros(500);
        assert_eq!(c.decide(now, false), Decision::Wait(last_flush + 10 * MS));
    }

    #[test]
    fn an_idle_period_resets_to_flushing_at_once() {
        let (mut c, t) = adaptive_after(50_000, 1000, 2 * MS);
        c.delivered(1000);
        assert_eq!(c.decide(t, false), Decision::FlushNow);
        c.delivered(1000);
        assert!(matches!(c.decide(t + MS, false), Decision::Wait(_)));
        assert_eq!(c.decide(t + 10 * MS, false), Decision::FlushNow);
        // Two quiet periods, then a broadcast: its 1,000 deliveries over 200 ms are cheap to
        // write at once.
        c.delivered(1000);
        assert_eq!(
            c.decide(t + 2 * LOAD_PERIOD + MS, false),
            Decision::FlushNow
        );
    }
}
