//! Deadlines of one shard's sessions.
//!
//! A min-heap of `(when, key, generation)`. Entries are never removed when a session's deadline
//! moves or the session ends: the shard checks each due entry against the live session and
//! skips stale ones. That keeps arming a timer O(log n) with no bookkeeping per session.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::{Duration, Instant};

/// A due timer: the session key and the generation it was armed for.
pub type Due = (usize, u64);

/// The heap of deadlines.
#[derive(Debug, Default)]
pub struct Timers {
    heap: BinaryHeap<Reverse<(Instant, usize, u64)>>,
}

impl Timers {
    /// Arms a timer for session `key` (of `generation`) at `when`.
    pub fn arm(&mut self, when: Instant, key: usize, generation: u64) {
        self.heap.push(Reverse((when, key, generation)));
    }

    /// How long until the earliest timer (zero if one is due).
    pub fn next_in(&self, now: Instant) -> Option<Duration> {
        self.heap
            .peek()
            .map(|Reverse((when, _, _))| when.saturating_duration_since(now))
    }

    /// Takes the next timer due at `now`.
    pub fn pop_due(&mut self, now: Instant) -> Option<Due> {
        match self.heap.peek() {
            Some(Reverse((when, _, _))) if *when <= now => self
                .heap
                .pop()
                .map(|Reverse((_, key, generation))| (key, generation)),
            _ => None,
        }
    }
}
