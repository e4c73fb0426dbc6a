//! Is the peer still there? Server pings, the pong deadline, and the idle timeout.
//!
//! Any input counts as a sign of life (a pong is only the cheapest one), so a chatty peer is
//! never pinged. Reading only records a timestamp; the decisions happen when the deadline
//! passes, so a busy connection costs no timer work per message.

use std::time::{Duration, Instant};

use crate::config::Config;

/// What the deadline check decided.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Nothing to do yet.
    Alive,
    /// Send a ping now.
    Ping,
    /// Nothing arrived within the pong timeout after a ping: the peer is gone.
    Dead,
    /// No message for the idle timeout: close the session.
    Idle,
}

/// The deadlines every session of a server shares (from its [`Config`]). Passed in on each
/// call rather than kept per session: 48 bytes less for every idle connection.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    /// How long without input before a ping (`None`: never ping).
    pub ping_interval: Option<Duration>,
    /// How long a ping may go unanswered.
    pub pong_timeout: Duration,
    /// How long without a data message before the session is closed (`None`: never).
    pub idle_timeout: Option<Duration>,
}

impl Timing {
    /// The server's deadlines.
    pub fn of(config: &Config) -> Timing {
        Timing {
            ping_interval: config.ping_interval,
            pong_timeout: config.pong_timeout,
            idle_timeout: config.idle_timeout,
        }
    }
}

/// Liveness state of an open WebSocket.
#[derive(Debug, Clone)]
pub struct Liveness {
    last_input: Instant,
    last_message: Instant,
    /// When a ping is due (if no input arrives before), or, while `ping_out`, when the ping in
    /// flight was sent: one instant serves both (8 bytes less for every idle connection).
    ping: Option<Instant>,
    /// A ping is in flight.
    ping_out: bool,
}

impl Liveness {
    /// Starts watching at `now`.
    pub fn new(timing: &Timing, now: Instant) -> Self {
        Liveness {
            last_input: now,
            last_message: now,
            ping: timing.ping_interval.map(|i| now + i),
            ping_out: false,
        }
    }

    /// Bytes arrived. An outstanding ping is answered by them, so the next one is due one
    /// interval from now (not when the old pong deadline would have passed).
    #[inline]
    pub fn saw_input(&mut self, now: Instant, timing: &Timing) {
        self.last_input = now;
        if self.ping_out && self.ping.is_some_and(|sent| now > sent) {
            self.ping_out = false;
            self.ping = timing.ping_interval.map(|i| now + i);
        }
    }

    /// A data message arrived.
    #[inline]
    pub fn saw_message(&mut self, now: Instant) {
        self.last_message = now;
    }

    /// Time since the last data message (since the upgrade, before the first): the publish
    /// meter's clock (`limits::PublishMeter`), so that it needs none of its own.
    #[inline]
    pub fn since_last_message(&self, now: Instant) -> Duration {
        now.saturating_duration_since(self.last_message)
    }

    /// The earliest moment [`Liveness::check`] may have something to do.
    pub fn next_due(&self, timing: &Timing) -> Option<Instant> {
        let ping = match (self.ping_out, self.ping) {
            (true, Some(sent)) => Some(sent + timing.pong_timeout),
            _ => self.ping,
        };
        let idle = timing.idle_timeout.map(|t| self.last_message + t);
        match (ping, idle) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Decides what is due at `now`. After `Ping`, the caller sends the ping.
    pub fn check(&mut self, now: Instant, timing: &Timing) -> Verdict {
        if let (true, Some(sent)) = (self.ping_out, self.ping) {
            if self.last_input > sent {
                self.ping_out = false;
                self.ping = timing.ping_interval.map(|i| self.last_input + i);
            } else if sent + timing.pong_timeout <= now {
                return Verdict::Dead;
            }
        }
        if let Some(idle) = timing.idle_timeout
            && self.last_message + idle <= now
        {
            return Verdict::Idle;
        }
        if !self.ping_out
            && let (Some(due), Some(interval)) = (self.ping, timing.ping_interval)
            && due <= now
        {
            if self.last_input + interval > now {
                // Heard from recently: no need to ask.
                self.ping = Some(self.last_input + interval);
            } else {
                self.ping = Some(now);
                self.ping_out = true;
                return Verdict::Ping;
            }
        }
        Verdict::Alive
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    /// A watch with these deadlines, and the deadlines.
    fn watch(
        ping: Option<Duration>,
        pong: Duration,
        idle: Option<Duration>,
        now: Instant,
    ) -> (Liveness, Timing) {
        let timing = Timing {
            ping_interval: ping,
            pong_timeout: pong,
            idle_timeout: idle,
        };
        (Liveness::new(&timing, now), timing)
    }

    #[test]
    fn a_silent_peer_is_pinged_then_declared_dead() {
        let t0 = Instant::now();
        let (mut l, t) = watch(Some(10 * S), 3 * S, None, t0);
        assert_eq!(l.next_due(&t), Some(t0 + 10 * S));
        assert_eq!(l.check(t0 + 5 * S, &t), Verdict::Alive);
        assert_eq!(l.check(t0 + 10 * S, &t), Verdict::Ping);
        assert_eq!(l.next_due(&t), Some(t0 + 13 * S));
        assert_eq!(l.check(t0 + 12 * S, &t), Verdict::Alive);
        assert_eq!(l.check(t0 + 13 * S, &t), Verdict::Dead);
    }

    #[test]
    fn any_input_answers_a_ping_and_postpones_the_next() {
        let t0 = Instant::now();
        let (mut l, t) = watch(Some(10 * S), 3 * S, None, t0);
        assert_eq!(l.check(t0 + 10 * S, &t), Verdict::Ping);
        l.saw_input(t0 + 11 * S, &t);
        assert_eq!(l.check(t0 + 13 * S, &t), Verdict::Alive);
        assert_eq!(l.next_due(&t), Some(t0 + 21 * S));
        // A chatty peer is never pinged.
        l.saw_input(t0 + 20 * S, &t);
        assert_eq!(l.check(t0 + 21 * S, &t), Verdict::Alive);
        assert_eq!(l.next_due(&t), Some(t0 + 30 * S));
    }

    #[test]
    fn the_next_ping_is_one_interval_after_the_answer() {
        let t0 = Instant::now();
        let (mut l, t) = watch(Some(S), 5 * S, None, t0);
        assert_eq!(l.check(t0 + S, &t), Verdict::Ping);
        l.saw_input(t0 + S + S / 10, &t);
        // Due one interval after the pong, well before the old pong deadline (t0 + 6 s).
        assert_eq!(l.next_due(&t), Some(t0 + 2 * S + S / 10));
        assert_eq!(l.check(t0 + 2 * S + S / 10, &t), Verdict::Ping);
    }

    #[test]
    fn idle_counts_messages_not_pongs() {
        let t0 = Instant::now();
        let (mut l, t) = watch(Some(2 * S), 1 * S, Some(5 * S), t0);
        l.saw_message(t0 + S);
        for secs in [2, 3, 4, 5] {
            l.saw_input(t0 + secs * S, &t); // pongs
            assert_eq!(l.check(t0 + secs * S, &t), Verdict::Alive);
        }
        assert_eq!(l.check(t0 + 6 * S, &t), Verdict::Idle);
    }

    #[test]
    fn no_pings_when_disabled() {
        let t0 = Instant::now();
        let (mut l, t) = watch(None, 3 * S, None, t0);
        assert_eq!(l.next_due(&t), None);
        assert_eq!(l.check(t0 + 1000 * S, &t), Verdict::Alive);
    }
}
