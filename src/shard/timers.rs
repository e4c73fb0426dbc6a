//! Deadlines of one shard's sessions.
//!
//! A min-heap of `(when, key, generation)`. Entries are never removed when a session's deadline
//! moves or the session ends: the shard checks each due entry against the live session and
//! skips stale ones. That keeps arming a timer O(log n) with no bookkeeping per session.
//!
//! Every idle connection has an entry, so an entry is kept to 24 bytes: the key and the low 32
//! bits of the generation. A stale entry whose generation matches in those bits (a slot reused
//! 2³² times while it waited) costs at most one early look at the session, which the shard's
//! check of the armed deadline makes harmless.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::{Duration, Instant};

/// A due timer: the session key and the low 32 bits of the generation it was armed for.
pub type Due = (usize, u32);

/// One armed timer: when, the session's key, the low bits of its generation.
pub(crate) type Entry = Reverse<(Instant, u32, u32)>;

/// The heap of deadlines.
#[derive(Debug, Default)]
pub struct Timers {
    heap: BinaryHeap<Entry>,
}

impl Timers {
    /// Arms a timer for session `key` (of `generation`) at `when`.
    pub fn arm(&mut self, when: Instant, key: usize, generation: u64) {
        debug_assert!(u32::try_from(key).is_ok(), "a slab key past u32");
        self.heap
            .push(Reverse((when, key as u32, low_bits(generation))));
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
                .map(|Reverse((_, key, generation))| (key as usize, generation)),
            _ => None,
        }
    }
}

/// The bits of a generation a timer entry keeps.
#[inline]
pub fn low_bits(generation: u64) -> u32 {
    generation as u32
}
