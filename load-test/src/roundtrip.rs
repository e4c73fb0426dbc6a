//! Broadcast round trips for the knee scenario (the websocket-shootout metric).
//!
//! One closed-loop sender keeps a few broadcasts in flight; a broadcast's round trip ends
//! when the *last* member of the room has received it. Members live on every client thread,
//! so the board counts arrivals with atomics (one increment per delivery of a tracked
//! broadcast), and the thread whose arrival completes a broadcast records the round trip and
//! wakes the sender's thread so it can send the next one.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use hdrhistogram::Histogram;
use mio::Waker;

use crate::stats::new_histogram;

const FREE: u64 = u64::MAX;

#[derive(Debug)]
struct Slot {
    seq: AtomicU64,
    sent_ns: AtomicU64,
    arrived: AtomicU64,
}

/// Broadcasts in flight and the round trips of finished ones.
#[derive(Debug)]
pub struct RoundTripBoard {
    publisher: u32,
    members: AtomicU64,
    slots: Box<[Slot]>,
    round_trips: Mutex<Histogram<u64>>,
    completed: AtomicU64,
    incomplete: AtomicU64,
    sender_waker: OnceLock<Arc<Waker>>,
}

impl RoundTripBoard {
    pub fn new(publisher: u32, in_flight: u32) -> RoundTripBoard {
        RoundTripBoard {
            publisher,
            members: AtomicU64::new(u64::MAX),
            slots: (0..in_flight.max(1))
                .map(|_| Slot {
                    seq: AtomicU64::new(FREE),
                    sent_ns: AtomicU64::new(0),
                    arrived: AtomicU64::new(0),
                })
                .collect(),
            round_trips: Mutex::new(new_histogram()),
            completed: AtomicU64::new(0),
            incomplete: AtomicU64::new(0),
            sender_waker: OnceLock::new(),
        }
    }

    pub fn publisher(&self) -> u32 {
        self.publisher
    }

    /// How many members must receive a broadcast (set before traffic starts).
    pub fn set_members(&self, members: u64) {
        self.members.store(members, Ordering::Release);
    }

    pub fn set_sender_waker(&self, waker: Arc<Waker>) {
        let _ = self.sender_waker.set(waker);
    }

    /// Takes a free slot for broadcast `seq`; `false` when `in_flight` are already out.
    pub fn launch(&self, seq: u64, sent_ns: u64) -> bool {
        for slot in self.slots.iter() {
            if slot.seq.load(Ordering::Acquire) == FREE {
                slot.arrived.store(0, Ordering::Relaxed);
                slot.sent_ns.store(sent_ns, Ordering::Relaxed);
                slot.seq.store(seq, Ordering::Release);
                return true;
            }
        }
        false
    }

    /// Frees the slot of a broadcast that could not be sent after all.
    pub fn cancel(&self, seq: u64) {
        for slot in self.slots.iter() {
            if slot
                .seq
                .compare_exchange(seq, FREE, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
            {
                return;
            }
        }
    }

    /// One member received broadcast `seq` at `now_ns`.
    #[inline]
    pub fn arrive(&self, seq: u64, now_ns: u64) {
        let members = self.members.load(Ordering::Acquire);
        for slot in self.slots.iter() {
            if slot.seq.load(Ordering::Acquire) != seq {
                continue;
            }
            if slot.arrived.fetch_add(1, Ordering::AcqRel) + 1 == members {
                let sent = slot.sent_ns.load(Ordering::Relaxed);
                self.record(now_ns.saturating_sub(sent));
                self.completed.fetch_add(1, Ordering::Release);
                slot.seq.store(FREE, Ordering::Release);
                if let Some(waker) = self.sender_waker.get() {
                    // A failed wake only delays the next send to the sender's next loop turn.
                    let _ = waker.wake();
                }
            }
            return;
        }
    }

    fn record(&self, round_trip_ns: u64) {
        if let Ok(mut histogram) = self.round_trips.lock() {
            histogram.saturating_record(round_trip_ns.max(1));
        }
    }

    /// At the end of the run: broadcasts still out count with their age so far (a lower
    /// bound of their round trip), so a stalled step cannot look fast.
    pub fn finish(&self, now_ns: u64) {
        for slot in self.slots.iter() {
            if slot.seq.swap(FREE, Ordering::AcqRel) != FREE {
                let sent = slot.sent_ns.load(Ordering::Relaxed);
                self.record(now_ns.saturating_sub(sent));
                self.incomplete.fetch_add(1, Ordering::Release);
            }
        }
    }

    /// Broadcasts sent and not yet received by every member.
    pub fn in_flight(&self) -> usize {
        self.slots
            .iter()
            .filter(|s| s.seq.load(Ordering::Acquire) != FREE)
            .count()
    }

    pub fn completed(&self) -> u64 {
        self.completed.load(Ordering::Acquire)
    }

    pub fn incomplete(&self) -> u64 {
        self.incomplete.load(Ordering::Acquire)
    }

    pub fn round_trips(&self) -> Histogram<u64> {
        match self.round_trips.lock() {
            Ok(h) => h.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_broadcast_completes_when_every_member_has_it() {
        let board = RoundTripBoard::new(0, 2);
        board.set_members(3);
        assert!(board.launch(0, 100));
        assert!(board.launch(1, 200));
        assert!(!board.launch(2, 300), "two in flight already");
        board.arrive(1, 250);
        board.arrive(1, 260);
        assert_eq!(board.completed(), 0);
        board.arrive(1, 1_200);
        assert_eq!(board.completed(), 1);
        assert!(
            board.launch(2, 1_300),
            "the finished broadcast freed its slot"
        );
        board.finish(10_000);
        assert_eq!(board.incomplete(), 2);
        let h = board.round_trips();
        assert_eq!(h.len(), 3);
        assert!(h.max() >= 9_900);
    }
}
