//! Room histories: each room's offsets, epoch and last messages, kept by the room's
//! sequencer (docs/architecture.md, "One order per room").
//!
//! A [`History`] belongs to one sequencer — a home shard, the one `single` loop, the `shared`
//! registry — and is used by one thread at a time. For each room it keeps a log: the epoch,
//! the latest offset, the last `--history-size` messages, and how many members the room has.
//!
//! * **Offsets** grow by one per message, from 1, for as long as the log lives.
//! * **Expiry.** A log's messages are dropped `--history-ttl` after the room's last message.
//!   The log itself (epoch and offset) goes too unless members are in the room, and then
//!   `--history-ttl` after the last one leaves. A room that has members never loses its log,
//!   so its members' offsets never restart under them.
//! * **Memory.** All logs together hold at most `--history-memory` bytes (this store's share
//!   of it). Past that, the least recently used logs (by their last message, or their last
//!   member's leave) give way first: a log with members loses its messages and keeps its
//!   offset, any other is dropped whole.
//! * **Epochs.** A dropped log's room starts over with a new random epoch and offset 0. A
//!   client that resumes across that is told `recovered: false`: the server never claims a
//!   continuity it cannot see.
//!
//! Logs are kept in least-recently-used order (the `lru` crate) and every change of that
//! order also sets the log's expiry to `now + ttl`, so the LRU end is also the next to expire:
//! [`History::sweep`] stops at the first log that has not.

pub mod follow;
pub mod resume;

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use lru::LruCache;

use crate::chat::post::Needs;
use crate::chat::{Outgoing, Post};
use crate::room::RoomId;
pub use follow::{Batch, Followed, Waiter};
pub use resume::{Ask, Epoch, Since, Start};

/// Bytes a log costs besides its messages: the log, its name and its LRU entry (estimated).
const LOG_OVERHEAD: usize = std::mem::size_of::<Log>() + 96;

/// What a history keeps.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Messages per room (at least 1: a size of 0 means no history at all, and no store).
    pub size: usize,
    /// How long messages outlive the room's last message.
    pub ttl: Duration,
    /// Bytes for all logs of this store.
    pub memory: usize,
}

/// What a store did, for the metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Tally {
    /// Logs dropped whole for memory (their rooms start a new epoch).
    pub evicted: u64,
    /// Logs dropped whole by expiry.
    pub expired: u64,
    /// Resumes that were exact.
    pub recovered: u64,
    /// Resumes that were not.
    pub not_recovered: u64,
}

/// A kept message and the bytes it was counted for (given back exactly when it goes).
struct Kept {
    out: Arc<Outgoing>,
    bytes: usize,
}

struct Log {
    epoch: Epoch,
    /// The latest message's offset (0 before the first).
    offset: u64,
    /// The last messages, oldest first; they hold offsets `offset - len + 1 ..= offset`.
    entries: VecDeque<Kept>,
    /// Bytes of `entries`.
    bytes: usize,
    /// Members in the room (this store's sequencer counts every one of them).
    members: u32,
    /// When its messages expire (and, with no members, the log).
    expires: Instant,
    /// A follower's log mirrors Redis's order now (always true for a log that numbers its
    /// own messages): joins are answered from it only while it does ([`follow`]).
    synced: bool,
    /// Its epoch and offsets came from Redis (a follower's log that was synced once).
    from_redis: bool,
}

impl Log {
    /// The start of a member asking `ask` now.
    fn start(&self, ask: &Ask) -> Start {
        // Offsets after `covered` are all in `entries`.
        let covered = self.offset - self.entries.len() as u64;
        let recovered = ask
            .since
            .map(|s| s.epoch == Some(self.epoch) && (covered..=self.offset).contains(&s.offset));
        let skip = match (recovered, ask.since) {
            (Some(true), Some(since)) => (since.offset - covered) as usize,
            _ => self.entries.len().saturating_sub(ask.history as usize),
        };
        Start {
            epoch: self.epoch,
            offset: self.offset,
            recovered,
            replay: self
                .entries
                .iter()
                .skip(skip)
                .map(|kept| kept.out.clone())
                .collect(),
        }
    }
}

/// The logs of the rooms one sequencer orders.
pub struct History {
    limits: Limits,
    logs: LruCache<RoomId, Log>,
    /// Bytes of every log, overhead included.
    bytes: usize,
    /// The state of the epoch generator (seeded from the OS).
    seed: u64,
    tally: Tally,
    /// Redis numbers the rooms' messages and this store follows (`--redis` with history):
    /// see [`follow`].
    follower: bool,
    /// A follower's joins waiting for their room to be synced, by room.
    waiting: std::collections::HashMap<RoomId, Vec<Waiter>>,
    /// Rooms a follower needs (re)synced: taken by the loop, which asks the bridge.
    to_sync: Vec<RoomId>,
}

impl History {
    /// An empty store; `limits.size` must be at least 1.
    pub fn new(limits: Limits) -> History {
        let mut seed = [0u8; 8];
        if getrandom::getrandom(&mut seed).is_err() {
            // No OS randomness: the clock still differs between restarts, which is what an
            // epoch must tell apart.
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as u64);
            seed = (now ^ (&seed as *const _ as u64)).to_le_bytes();
        }
        History {
            limits,
            logs: LruCache::unbounded(),
            bytes: 0,
            seed: u64::from_le_bytes(seed),
            tally: Tally::default(),
            follower: false,
            waiting: std::collections::HashMap::new(),
            to_sync: Vec::new(),
        }
    }

    /// A store that follows Redis's order instead of numbering messages itself ([`follow`]).
    pub fn follower(limits: Limits) -> History {
        History {
            follower: true,
            ..History::new(limits)
        }
    }

    /// Whether this store follows Redis's order.
    pub fn is_follower(&self) -> bool {
        self.follower
    }

    /// What the store did so far.
    pub fn tally(&self) -> Tally {
        self.tally
    }

    /// What the store did since the last call.
    pub fn take_tally(&mut self) -> Tally {
        std::mem::take(&mut self.tally)
    }

    /// Bytes held by every log.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Rooms with a log.
    pub fn rooms(&self) -> usize {
        self.logs.len()
    }

    /// A new epoch (splitmix64: distinct for every log of this store, unpredictable across
    /// restarts through the seed).
    fn next_epoch(&mut self) -> Epoch {
        self.seed = self.seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.seed;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        Epoch(z ^ (z >> 31))
    }

    /// The room's log, fresh (a new epoch) if it had none or its time ran out; `used` moves
    /// it to the recently used end (a message). One lookup when the log is live, as it is
    /// for every message of a busy room.
    fn log(&mut self, room: &RoomId, now: Instant, used: bool) -> &mut Log {
        let live = self.logs.peek(room).map(|log| log.expires > now);
        if live != Some(true) {
            if live == Some(false) {
                self.expire_one(room, now);
            }
            if !self.logs.contains(room) {
                let epoch = self.next_epoch();
                self.bytes += LOG_OVERHEAD + room.as_str().len();
                self.logs.put(
                    room.clone(),
                    Log {
                        epoch,
                        offset: 0,
                        entries: VecDeque::new(),
                        bytes: 0,
                        members: 0,
                        expires: now + self.limits.ttl,
                        synced: !self.follower,
                        from_redis: false,
                    },
                );
            }
        }
        // Present: live, or just kept or put.
        let log = if used {
            self.logs.get_mut(room)
        } else {
            self.logs.peek_mut(room)
        };
        log.expect("the log was just made if it was missing")
    }

    /// A member joins `room` asking `ask`: where it starts.
    pub fn join(&mut self, room: &RoomId, ask: &Ask, now: Instant) -> Start {
        let log = self.log(room, now, false);
        log.members += 1;
        let start = log.start(ask);
        match start.recovered {
            Some(true) => self.tally.recovered += 1,
            Some(false) => self.tally.not_recovered += 1,
            None => {}
        }
        start
    }

    /// Where `room` stands now and what `ask` would replay, without joining it (the server
    /// API's history read, docs/api.md); `None` when the room has no live log.
    pub fn peek(&self, room: &RoomId, ask: &Ask, now: Instant) -> Option<Start> {
        let log = self.logs.peek(room).filter(|log| log.synced)?;
        if log.expires > now {
            return Some(log.start(ask));
        }
        // Expired but not swept yet: its messages are gone; with members, its offsets stay.
        (log.members > 0).then(|| Start {
            epoch: log.epoch,
            offset: log.offset,
            recovered: ask
                .since
                .map(|s| s.epoch == Some(log.epoch) && s.offset == log.offset),
            replay: Vec::new(),
        })
    }

    /// The epoch of `room`'s log, if it has one.
    pub fn epoch(&self, room: &RoomId) -> Option<Epoch> {
        self.logs.peek(room).map(|log| log.epoch)
    }

    /// A member leaves `room`. The last one to leave starts the log's time to live.
    pub fn leave(&mut self, room: &RoomId, now: Instant) {
        let ttl = self.limits.ttl;
        let Some(log) = self.logs.peek_mut(room) else {
            return;
        };
        log.members = log.members.saturating_sub(1);
        if log.members == 0 {
            log.expires = log.expires.max(now + ttl);
            self.logs.promote(room);
        }
    }

    /// `post` becomes `room`'s next message: numbered, encoded for `needs`, kept.
    pub fn append(
        &mut self,
        room: &RoomId,
        post: Post,
        needs: Needs,
        now: Instant,
    ) -> Arc<Outgoing> {
        let (size, ttl) = (self.limits.size, self.limits.ttl);
        let log = self.log(room, now, true);
        log.offset += 1;
        let out = Outgoing::sequenced(post, needs, log.offset);
        let mut freed = 0;
        if log.entries.len() == size
            && let Some(old) = log.entries.pop_front()
        {
            freed = old.bytes;
        }
        let added = entry_bytes(&out);
        log.entries.push_back(Kept {
            out: out.clone(),
            bytes: added,
        });
        log.bytes = log.bytes + added - freed;
        log.expires = now + ttl;
        self.bytes = self.bytes + added - freed;
        self.fit_memory(room, now);
        out
    }

    /// Drops what has expired by `now`.
    pub fn sweep(&mut self, now: Instant) {
        self.remind();
        // Each log is looked at once at most: one with members is kept and moved up.
        for _ in 0..self.logs.len() {
            match self.logs.peek_lru() {
                Some((room, log)) if log.expires <= now => {
                    let room = room.clone();
                    self.expire_one(&room, now);
                }
                _ => return,
            }
        }
    }

    /// `room`'s time ran out: its messages go, and the log too unless it has members.
    fn expire_one(&mut self, room: &RoomId, now: Instant) {
        if self.thin(room, now) {
            self.tally.expired += 1;
        }
    }

    /// Frees `room`'s messages; drops the whole log unless it has members (true then).
    fn thin(&mut self, room: &RoomId, now: Instant) -> bool {
        let ttl = self.limits.ttl;
        let Some(log) = self.logs.peek_mut(room) else {
            return false;
        };
        if log.members > 0 {
            self.bytes -= log.bytes;
            log.entries = VecDeque::new();
            log.bytes = 0;
            log.expires = now + ttl;
            self.logs.promote(room);
            false
        } else {
            if let Some(log) = self.logs.pop(room) {
                self.bytes -= log.bytes + LOG_OVERHEAD + room.as_str().len();
            }
            true
        }
    }

    /// Gives way, least recently used first, until the logs fit the memory bound; `fresh`
    /// (the room just written to) gives its oldest messages last.
    fn fit_memory(&mut self, fresh: &RoomId, now: Instant) {
        for _ in 0..self.logs.len() {
            if self.bytes <= self.limits.memory {
                return;
            }
            let Some((room, _)) = self.logs.peek_lru() else {
                return;
            };
            if room == fresh {
                // Every other log has given what it can (a thinned one moved above it).
                break;
            }
            let room = room.clone();
            if self.thin(&room, now) {
                self.tally.evicted += 1;
            }
        }
        // The fresh room alone passes the bound: its oldest messages go, its newest stays.
        let Some(log) = self.logs.peek_mut(fresh) else {
            return;
        };
        while self.bytes > self.limits.memory && log.entries.len() > 1 {
            if let Some(old) = log.entries.pop_front() {
                log.bytes -= old.bytes;
                self.bytes -= old.bytes;
            }
        }
    }
}

/// Bytes one kept message costs: the message and its slot.
fn entry_bytes(out: &Outgoing) -> usize {
    out.footprint() + std::mem::size_of::<Kept>()
}

#[cfg(test)]
mod tests;
