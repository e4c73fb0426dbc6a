//! The session table: one event-loop thread's sessions and the books it keeps on them.
//!
//! The table owns the slab (whose keys are the sessions' `mio::Token`s), each slot's
//! generation, the deadline a timer is armed for, the session's place in its room's member
//! list, and this turn's flush and resume lists. [`Session`] knows none of this: it is a
//! connection's state machine, and the table is the thread's ledger of them.
//!
//! How a session is held is the threading model's choice ([`Cell`]): the shards own theirs
//! outright; the `shared` model keeps each behind a mutex so other threads can write to it.
//!
//! Invariants: a key is on the flush list at most once per turn, and on the resume list at
//! most once; a timer entry whose generation is not the slot's, or whose deadline is not the
//! one armed, is stale and skipped when it comes due.

use std::time::{Duration, Instant};

use slab::Slab;

use crate::frame::SharedFrame;
use crate::ids::SessionKey;
pub use crate::session::cell::{Cell, Locked, lock};
use crate::session::{Ctx, Delivery, Progress, Session};
use crate::shard::timers::{self, Timers};

/// Marks a slot that is in no room's member list.
const NO_ROOM_SLOT: u32 = u32::MAX;

struct Slot<C> {
    cell: C,
    generation: u64,
    /// The deadline a timer is armed for.
    armed: Option<Instant>,
    /// Position in its room's member list for its dialect (the room table keeps it current).
    room_slot: u32,
    flush_listed: bool,
    ready_listed: bool,
}

/// One thread's sessions (see the module docs).
pub struct SessionTable<C> {
    slots: Slab<Slot<C>>,
    timers: Timers,
    flush_list: Vec<SessionKey>,
    ready: Vec<SessionKey>,
    last_generation: u64,
}

impl<C> Default for SessionTable<C> {
    fn default() -> Self {
        SessionTable {
            slots: Slab::new(),
            timers: Timers::default(),
            flush_list: Vec::new(),
            ready: Vec::new(),
            last_generation: 0,
        }
    }
}

impl<C: Cell> SessionTable<C> {
    /// The key and generation the next inserted session will get.
    pub fn next_slot(&self) -> (SessionKey, u64) {
        (
            SessionKey(self.slots.vacant_key()),
            self.last_generation + 1,
        )
    }

    /// Adds a session (at [`SessionTable::next_slot`]) and arms its first deadline.
    pub fn insert(&mut self, session: Session<C::Stream>) -> SessionKey {
        self.last_generation += 1;
        let key = SessionKey(self.slots.insert(Slot {
            cell: C::wrap(session),
            generation: self.last_generation,
            armed: None,
            room_slot: NO_ROOM_SLOT,
            flush_listed: false,
            ready_listed: false,
        }));
        self.arm(key);
        key
    }

    /// Takes the session out. Its timer entries go stale; it leaves the resume list.
    pub fn remove(&mut self, key: SessionKey) -> Option<C> {
        let slot = self.slots.try_remove(key.0)?;
        if slot.ready_listed {
            self.ready.retain(|k| *k != key);
        }
        Some(slot.cell)
    }

    /// Sessions in the table.
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// Whether the table is empty.
    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// Every key, for walking the table while changing it.
    pub fn keys(&self) -> Vec<SessionKey> {
        self.slots.iter().map(|(k, _)| SessionKey(k)).collect()
    }

    /// Whether `key` holds the session of `generation` (not a later one in the same slot).
    pub fn is_current(&self, key: SessionKey, generation: u64) -> bool {
        self.slots
            .get(key.0)
            .is_some_and(|s| s.generation == generation)
    }

    /// The generation of the session at `key`.
    pub fn generation(&self, key: SessionKey) -> Option<u64> {
        self.slots.get(key.0).map(|s| s.generation)
    }

    /// Runs `f` on the session at `key`, if there is one.
    #[inline]
    pub fn with<R>(
        &mut self,
        key: SessionKey,
        f: impl FnOnce(&mut Session<C::Stream>) -> R,
    ) -> Option<R> {
        self.slots.get_mut(key.0).map(|s| s.cell.with(f))
    }

    /// Offers a broadcast frame to the session at `key` and, unless it refused (closing),
    /// lists it for flushing: one lookup for what the broadcast path does for every member.
    #[inline]
    pub fn offer(
        &mut self,
        key: SessionKey,
        frame: &SharedFrame,
        cx: &mut Ctx,
    ) -> Option<Delivery> {
        let slot = self.slots.get_mut(key.0)?;
        let delivery = slot.cell.with(|s| s.push_broadcast(frame, cx));
        if delivery != Delivery::Refused {
            list_slot(&mut self.flush_list, slot, key);
        }
        Some(delivery)
    }

    /// A handle on the session at `key` for other threads.
    pub fn handle(&self, key: SessionKey) -> Option<C::Handle> {
        self.slots.get(key.0).map(|s| s.cell.handle())
    }

    /// Puts the session on this turn's flush list (once).
    #[inline]
    pub fn list_for_flush(&mut self, key: SessionKey) {
        if let Some(slot) = self.slots.get_mut(key.0) {
            list_slot(&mut self.flush_list, slot, key);
        }
    }

    /// Whether any session waits for a flush.
    pub fn has_flush_work(&self) -> bool {
        !self.flush_list.is_empty()
    }

    /// Takes the flush list (give it back with [`SessionTable::give_back_flush_list`]).
    /// Sessions listed while it is out go on a new list.
    pub fn take_flush_list(&mut self) -> Vec<SessionKey> {
        std::mem::take(&mut self.flush_list)
    }

    /// Runs `flush` once on each of `keys` (taken from the flush list) that is still listed;
    /// the keys of those that report `Finished` go to `finished`. One lookup per session:
    /// this runs for every session with output, every turn.
    pub fn flush_listed(
        &mut self,
        keys: &[SessionKey],
        mut flush: impl FnMut(&mut Session<C::Stream>) -> Progress,
        finished: &mut Vec<SessionKey>,
    ) {
        for &key in keys {
            if let Some(slot) = self.slots.get_mut(key.0)
                && slot.flush_listed
            {
                slot.flush_listed = false;
                if slot.cell.with(&mut flush) == Progress::Finished {
                    finished.push(key);
                }
            }
        }
    }

    /// Gives back a flush list that was taken, emptied, so that its buffer serves again.
    pub fn give_back_flush_list(&mut self, mut list: Vec<SessionKey>) {
        if self.flush_list.is_empty() {
            list.clear();
            self.flush_list = list;
        }
    }

    /// Runs `flush` once on every session on the flush list and empties the list (each may
    /// be listed again); the keys of those that report `Finished` go to `finished`.
    pub fn flush_each(
        &mut self,
        flush: impl FnMut(&mut Session<C::Stream>) -> Progress,
        finished: &mut Vec<SessionKey>,
    ) {
        let list = self.take_flush_list();
        self.flush_listed(&list, flush, finished);
        self.give_back_flush_list(list);
    }

    /// The session stopped for fairness: it reads again next turn (once).
    pub fn mark_ready(&mut self, key: SessionKey) {
        if let Some(slot) = self.slots.get_mut(key.0)
            && !slot.ready_listed
        {
            slot.ready_listed = true;
            self.ready.push(key);
        }
    }

    /// Whether the session waits to resume (it reads in that phase, not on readiness).
    pub fn is_ready_listed(&self, key: SessionKey) -> bool {
        self.slots.get(key.0).is_some_and(|s| s.ready_listed)
    }

    /// Whether any session waits to resume.
    pub fn has_ready(&self) -> bool {
        !self.ready.is_empty()
    }

    /// Takes the resume list.
    pub fn take_ready(&mut self) -> Vec<SessionKey> {
        let list = std::mem::take(&mut self.ready);
        for key in &list {
            if let Some(slot) = self.slots.get_mut(key.0) {
                slot.ready_listed = false;
            }
        }
        list
    }

    /// Arms a timer for the session's deadline, unless one as early is armed already.
    pub fn arm(&mut self, key: SessionKey) {
        let Some(slot) = self.slots.get_mut(key.0) else {
            return;
        };
        if let Some(when) = slot.cell.with(|s| s.deadline())
            && slot.armed.is_none_or(|armed| when < armed)
        {
            slot.armed = Some(when);
            self.timers.arm(when, key.0, slot.generation);
        }
    }

    /// How long until the earliest armed deadline.
    pub fn next_deadline_in(&self, now: Instant) -> Option<Duration> {
        self.timers.next_in(now)
    }

    /// The next session whose armed deadline has passed at `now` (stale entries skipped). Its
    /// timer is disarmed: arm it again after handling it.
    pub fn pop_due(&mut self, now: Instant) -> Option<SessionKey> {
        while let Some((key, generation)) = self.timers.pop_due(now) {
            if let Some(slot) = self.slots.get_mut(key)
                && timers::low_bits(slot.generation) == generation
                && slot.armed.is_some_and(|armed| armed <= now)
            {
                slot.armed = None;
                return Some(SessionKey(key));
            }
        }
        None
    }

    /// The session's place in its room's member list, while it is a member.
    pub fn room_slot(&self, key: SessionKey) -> Option<usize> {
        self.slots
            .get(key.0)
            .and_then(|s| (s.room_slot != NO_ROOM_SLOT).then_some(s.room_slot as usize))
    }

    /// Records the session's place in its room's member list (`None`: no longer a member).
    pub fn set_room_slot(&mut self, key: SessionKey, place: Option<usize>) {
        if let Some(slot) = self.slots.get_mut(key.0) {
            slot.room_slot = place.map_or(NO_ROOM_SLOT, |p| {
                debug_assert!(p < NO_ROOM_SLOT as usize, "room list too long");
                p as u32
            });
        }
    }
}

/// Puts a slot on the flush list unless it is there already.
#[inline]
fn list_slot<C>(list: &mut Vec<SessionKey>, slot: &mut Slot<C>, key: SessionKey) {
    if !slot.flush_listed {
        slot.flush_listed = true;
        list.push(key);
    }
}

#[cfg(test)]
mod budget;
