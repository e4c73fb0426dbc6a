//! The loop's side of `who` (`crate::roster`): a member's question goes to the `roster`
//! thread, unless the member asked less than [`WHO_INTERVAL`] ago or too many questions wait;
//! the answer comes back through the inbox and is queued for the member if it is still there.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use crate::chat::envelope::{self, ErrorCode};
use crate::control::Target;
use crate::frame::SharedFrame;
use crate::ids::{SessionId, SessionKey};
use crate::metrics::Counter;
use crate::models::Reach;
use crate::roster::WhoJob;
use crate::shard::Shard;

/// Least time between two `who` of one session: a member list is a walk over every loop (and
/// a Redis round trip in a cluster), so one client cannot make the server do it in a loop.
pub const WHO_INTERVAL: Duration = Duration::from_secs(1);

/// The `error` text of a `who` asked too soon.
const TOO_SOON: &str = "one who a second: ask again in a moment";

/// Past this many remembered askers, the ones whose interval is over are forgotten.
const REMEMBERED: usize = 1024;

/// When each session of this loop last asked `who` (with its generation, so that a new
/// session in the slot is not taken for the old one). Kept here rather than in the session, so
/// that an idle connection pays nothing for it.
#[derive(Debug, Default)]
pub(super) struct WhoTimes {
    asked: HashMap<SessionKey, (u64, Instant)>,
    /// Size at which the next sweep runs: twice what the last one kept (at least
    /// [`REMEMBERED`]), so that sweeping costs O(1) per `who` however many ask.
    sweep_at: usize,
}

impl WhoTimes {
    /// Whether session `key` (of `generation`) may ask now; if so, `now` is remembered.
    fn may_ask(&mut self, key: SessionKey, generation: u64, now: Instant) -> bool {
        if let Some(&(asker, at)) = self.asked.get(&key)
            && asker == generation
            && now.saturating_duration_since(at) < WHO_INTERVAL
        {
            return false;
        }
        if self.asked.len() >= self.sweep_at.max(REMEMBERED) {
            self.asked
                .retain(|_, (_, at)| now.saturating_duration_since(*at) < WHO_INTERVAL);
            self.sweep_at = self.asked.len() * 2;
        }
        self.asked.insert(key, (generation, now));
        true
    }
}

impl<R: Reach> Shard<R> {
    /// Member `key` asked who is in its room.
    pub(super) fn who(&mut self, key: SessionKey) {
        let (Some(generation), Some(Some(room))) = (
            self.table.generation(key),
            self.table.with(key, |s| s.room().cloned()),
        ) else {
            return;
        };
        if !self.who_asked.may_ask(key, generation, self.now) {
            self.counters.bump(Counter::EnvelopeErrors);
            let error = envelope::error_saying(ErrorCode::RateLimited, TOO_SOON);
            return self.answer_who(key, generation, error);
        }
        let job = WhoJob {
            room,
            shard: self.id,
            key,
            generation,
        };
        let taken = self.common.roster.as_ref().is_some_and(|r| r.submit(job));
        if !taken {
            self.counters.bump(Counter::EnvelopeErrors);
            self.answer_who(key, generation, envelope::error(ErrorCode::Busy));
        }
    }

    /// Closes session `old`, whose nickname a new connection of the same client took back
    /// (`crate::names`): at once when it is this loop's, through the roster thread otherwise.
    pub(super) fn replaced(&mut self, old: SessionId) {
        if usize::from(old.worker) == self.id.0 {
            self.disconnect(&Target::Session(old), 1000, crate::roster::REPLACED);
        } else if !self.common.roster.as_ref().is_some_and(|r| r.replace(old)) {
            tracing::debug!(session = %old, "could not have the replaced session closed");
        }
    }

    /// Queues `frame` (the answer to a `who`) for session `key`, if it is still the one that
    /// asked and still takes messages.
    pub(super) fn answer_who(&mut self, key: SessionKey, generation: u64, frame: SharedFrame) {
        if !self.table.is_current(key, generation) {
            return;
        }
        let queued = self.table.with(key, |s| {
            let receives = s.receives();
            if receives {
                s.push_own(frame);
            }
            receives
        });
        if queued == Some(true) {
            self.table.list_for_flush(key);
            self.table.arm(key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_session_asks_once_an_interval_and_a_new_one_in_its_slot_at_once() {
        let mut times = WhoTimes::default();
        let (key, t0) = (SessionKey(3), Instant::now());
        assert!(times.may_ask(key, 1, t0));
        assert!(!times.may_ask(key, 1, t0 + WHO_INTERVAL / 2));
        assert!(
            times.may_ask(key, 2, t0 + WHO_INTERVAL / 2),
            "a new session"
        );
        assert!(times.may_ask(key, 2, t0 + WHO_INTERVAL * 2));
    }

    #[test]
    fn askers_whose_interval_is_over_are_forgotten() {
        let mut times = WhoTimes::default();
        let t0 = Instant::now();
        for i in 0..REMEMBERED {
            assert!(times.may_ask(SessionKey(i), 1, t0));
        }
        assert!(times.may_ask(SessionKey(REMEMBERED), 1, t0 + WHO_INTERVAL));
        assert_eq!(times.asked.len(), 1);
    }

    #[test]
    fn many_askers_at_once_are_swept_rarely() {
        let mut times = WhoTimes::default();
        let t0 = Instant::now();
        for i in 0..3 * REMEMBERED {
            assert!(times.may_ask(SessionKey(i), 1, t0));
        }
        // Swept at 1x and 2x REMEMBERED, all recent and kept: each next sweep waits for twice
        // as many, so the sweeps cost O(1) per ask.
        assert_eq!(times.sweep_at, 4 * REMEMBERED);
        assert_eq!(times.asked.len(), 3 * REMEMBERED);
        assert!(
            !times.may_ask(SessionKey(0), 1, t0),
            "none forgotten too soon"
        );
    }
}
