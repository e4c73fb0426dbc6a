//! A history that follows Redis's order (`--redis` with history on; docs/cluster.md, "One
//! order across nodes").
//!
//! In a cluster, Redis numbers every room's messages (its publish script), so a node's store
//! does not number anything: it is a **follower cache** of the room's stream. The bridge hands
//! the room's sequencer a [`Batch`] — the room's epoch and latest offset in Redis, with the
//! messages up to it that it has — when it starts following the room, after every
//! reconnection, to fill a gap, and for every live message (a batch of one).
//!
//! * A batch that **continues** the log (same epoch, and its messages cover every offset after
//!   the log's) is appended: its new messages are delivered live, in offset order.
//! * Any other batch **resets** the log to Redis's state: epoch, offset and messages. If the
//!   room had members here, they missed something ([`Followed::missed`]): the loop closes
//!   them (1013, "missed messages") so that they resume, never leaving a silent gap. Their
//!   resume with the old epoch then gets `recovered: false`.
//! * Joins are answered only from a **synced** log: a log is synced by its first batch, and
//!   unsynced again when the bridge stops following the room ([`History::unfollow`]), since
//!   nothing tells it of what is said meanwhile. A join of an unsynced room waits
//!   ([`History::wait`]); the room is put on [`History::take_to_sync`] for the loop to ask the
//!   bridge, and the join is placed once the batch is applied ([`Followed::ready`]), before
//!   anything later reaches the room.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Instant;

use crate::chat::post::Needs;
use crate::chat::{Outgoing, Post};
use crate::history::{Ask, Epoch, History, Kept, entry_bytes};
use crate::ids::{SessionKey, ShardId};
use crate::room::RoomId;

/// A room's state in Redis, as the bridge read or received it.
#[derive(Debug, Clone)]
pub struct Batch {
    /// The room's epoch in Redis.
    pub epoch: Epoch,
    /// The room's latest offset in Redis.
    pub offset: u64,
    /// Messages up to `offset`, oldest first, with their offsets (contiguous, the last at
    /// `offset`; possibly fewer than the history keeps, or none).
    pub entries: Vec<(u64, Post)>,
}

/// A member waiting for its room to be synced before it is placed.
#[derive(Debug, Clone, Copy)]
pub struct Waiter {
    /// The thread the member is on.
    pub owner: ShardId,
    /// The member there.
    pub key: SessionKey,
    /// Its generation when it asked.
    pub generation: u64,
    /// What it asks of the history.
    pub ask: Ask,
}

/// What applying a batch means for the room's members.
#[derive(Debug, Default)]
pub struct Followed {
    /// Messages to deliver live to the room's members now, in offset order.
    pub live: Vec<Arc<Outgoing>>,
    /// The room's members here missed messages (the batch did not continue the log).
    pub missed: bool,
    /// Joins that waited for this sync: they can be placed now.
    pub ready: Vec<Waiter>,
}

impl History {
    /// Whether joins of `room` can be answered now (always, unless this store follows Redis
    /// and has not synced the room since it started following it).
    pub fn is_synced(&self, room: &RoomId) -> bool {
        !self.follower || self.logs.peek(room).is_some_and(|log| log.synced)
    }

    /// `waiter` joins `room`, which is not synced: it waits for the room's next batch.
    pub fn wait(&mut self, room: &RoomId, waiter: Waiter) {
        let list = self.waiting.entry(room.clone()).or_default();
        if list.is_empty() {
            self.to_sync.push(room.clone());
        }
        list.push(waiter);
    }

    /// The rooms whose joins wait for a sync (once, and again at every sweep while they
    /// wait: a request the bridge could not take is asked again).
    pub fn take_to_sync(&mut self) -> Vec<RoomId> {
        std::mem::take(&mut self.to_sync)
    }

    /// Asks again for every room whose joins still wait (called at each sweep).
    pub(super) fn remind(&mut self) {
        self.to_sync.extend(self.waiting.keys().cloned());
    }

    /// The bridge stopped following `room`: what is said there now does not reach this log,
    /// so later joins wait for a new sync.
    pub fn unfollow(&mut self, room: &RoomId) {
        if let Some(log) = self.logs.peek_mut(room) {
            log.synced = false;
        }
    }

    /// Applies `batch` to `room`'s log (module docs); messages are rendered for `needs`.
    pub fn follow(&mut self, room: &RoomId, batch: Batch, needs: Needs, now: Instant) -> Followed {
        let (ttl, size) = (self.limits.ttl, self.limits.size);
        let log = self.log(room, now, true);
        let mut followed = Followed::default();
        let continues = log.from_redis
            && batch.epoch == log.epoch
            && (batch.offset <= log.offset
                || batch
                    .entries
                    .iter()
                    .any(|(offset, _)| *offset == log.offset + 1));
        let mut added = 0usize;
        let mut freed = 0usize;
        if continues {
            for (offset, post) in batch.entries {
                if offset != log.offset + 1 {
                    continue; // already here (at or below), or beyond a gap we checked for
                }
                log.offset = offset;
                let out = Outgoing::sequenced(post, needs, offset);
                let bytes = entry_bytes(&out);
                if log.entries.len() == size
                    && let Some(old) = log.entries.pop_front()
                {
                    freed += old.bytes;
                }
                log.entries.push_back(Kept {
                    out: out.clone(),
                    bytes,
                });
                added += bytes;
                followed.live.push(out);
            }
        } else {
            // Members here received the old log's messages: from now on they cannot know
            // what they missed. A log never synced had none; and when neither order has any
            // message yet, nothing was missed and the offsets go on from 0 as they expect.
            let untouched = log.offset == 0 && batch.offset == 0;
            followed.missed = log.from_redis && log.members > 0 && !untouched;
            freed = log.bytes;
            log.entries = VecDeque::new();
            log.epoch = batch.epoch;
            log.offset = batch.offset;
            let skip = batch.entries.len().saturating_sub(size);
            let first = (batch.offset + 1).saturating_sub((batch.entries.len() - skip) as u64);
            let tail = batch.entries.into_iter().skip(skip);
            for (expected, (offset, post)) in (first..).zip(tail) {
                if offset != expected {
                    // Not the contiguous tail up to `offset` (never from our scripts): keep
                    // no messages rather than a wrong sequence.
                    log.entries.clear();
                    added = 0;
                    break;
                }
                // History only: rendered when first replayed.
                let out = Outgoing::sequenced(post, Needs::default(), offset);
                let bytes = entry_bytes(&out);
                log.entries.push_back(Kept { out, bytes });
                added += bytes;
            }
            if log.entries.back().map(|k| k.out.offset) != Some(batch.offset) {
                log.entries.clear();
                added = 0;
            }
        }
        log.bytes = log.bytes + added - freed;
        log.synced = true;
        log.from_redis = true;
        log.expires = now + ttl;
        self.bytes = self.bytes + added - freed;
        self.fit_memory(room, now);
        followed.ready = self.waiting.remove(room).unwrap_or_default();
        followed
    }
}
