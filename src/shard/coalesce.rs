//! Coalescing: when a turn's output may wait for the next, so that broadcasts to big rooms
//! leave in fewer `writev`s.
//!
//! Output waits only if the broadcasts delivered since the last flush reached at least
//! [`COALESCE_MIN_ROOM`] local members on average, the window (`--coalesce-us`) is not zero,
//! the server is not draining, and the last flush was less than a window ago; then the flush
//! is due at the window's end, and broadcasts arriving meanwhile leave in the same `writev`
//! (fewer syscalls and packets per delivery, on both ends of every connection). Output for
//! small rooms (a chat message to 20 people, a pong) never waits: its latency is worth more
//! than the few syscalls saved.
//!
//! Only a flush that carried broadcasts starts a new window. A flush with none (a pong, a
//! socket that became writable, the turn in which a member's message left for its room's
//! home shard to be numbered) must not push back the window of the broadcasts that arrive
//! just after it: the numbered copy of that very message would wait a whole window more.

use std::time::{Duration, Instant};

/// Broadcasts reaching at least this many local members on average may wait for the
/// coalescing window; smaller rooms are flushed at once.
pub const COALESCE_MIN_ROOM: u64 = 64;

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
}

impl Coalescer {
    /// A coalescer with this window (zero: never wait).
    pub fn new(window: Duration, now: Instant) -> Self {
        Coalescer {
            window,
            last_flush: now,
            broadcasts: 0,
            deliveries: 0,
            due: None,
        }
    }

    /// One broadcast reached `deliveries` local members.
    #[inline]
    pub fn delivered(&mut self, deliveries: u64) {
        self.broadcasts += 1;
        self.deliveries += deliveries;
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
        if !self.window.is_zero() && big_rooms && !draining {
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
        let mut c = Coalescer::new(10 * MS, t0);
        c.delivered(COALESCE_MIN_ROOM - 1);
        assert_eq!(c.decide(t0 + MS, false), Decision::FlushNow);
        assert_eq!(c.due(), None);
    }

    #[test]
    fn big_rooms_wait_for_the_window_then_flush() {
        let t0 = Instant::now();
        let mut c = Coalescer::new(10 * MS, t0);
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
        let mut c = Coalescer::new(10 * MS, t0);
        c.delivered(100);
        for _ in 0..9 {
            c.delivered(1); // nine small-room messages pull the average to 10.9
        }
        assert_eq!(c.decide(t0 + MS, false), Decision::FlushNow);
    }

    #[test]
    fn a_zero_window_or_a_drain_never_waits() {
        let t0 = Instant::now();
        let mut off = Coalescer::new(Duration::ZERO, t0);
        off.delivered(1000);
        assert_eq!(off.decide(t0 + MS, false), Decision::FlushNow);
        let mut draining = Coalescer::new(10 * MS, t0);
        draining.delivered(1000);
        assert_eq!(draining.decide(t0 + MS, true), Decision::FlushNow);
    }

    #[test]
    fn output_that_is_not_a_broadcast_flushes_at_once() {
        let t0 = Instant::now();
        let mut c = Coalescer::new(10 * MS, t0);
        // A pong or a welcome: no broadcast was counted.
        assert_eq!(c.decide(t0 + MS, false), Decision::FlushNow);
    }

    #[test]
    fn a_flush_without_broadcasts_keeps_the_window() {
        let t0 = Instant::now();
        let mut c = Coalescer::new(10 * MS, t0);
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
}
