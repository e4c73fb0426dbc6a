//! What the coordinating thread and the client threads share during a run.
//!
//! Only atomics and set-once values: the coordinator moves the run through its phases and
//! wakes the workers; workers publish running totals (batched once per loop turn, never per
//! message) so the coordinator can show progress and know when the drain is complete.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU8, AtomicU64, AtomicUsize, Ordering};

/// The run's phases, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
#[repr(u8)]
pub enum Phase {
    /// Workers open their connections.
    Connecting = 0,
    /// Publishers send until the measured window ends; everyone receives.
    Running = 1,
    /// Workers close their connections and hand in their reports.
    Finishing = 2,
}

/// Times of the traffic phases, in process-clock nanoseconds.
#[derive(Debug, Clone, Copy)]
pub struct Schedule {
    pub start_ns: u64,
    pub measure_start_ns: u64,
    pub measure_end_ns: u64,
}

#[derive(Debug)]
pub struct RunControl {
    phase: AtomicU8,
    schedule: OnceLock<Schedule>,
    /// Connections open / failed during the connect phase.
    pub opened: AtomicU64,
    pub failed: AtomicU64,
    /// Unique deliveries so far (progress, and the drain's end condition).
    pub delivered: AtomicU64,
    /// Workers that have counted their room members and scheduled their publishers.
    pub workers_started: AtomicUsize,
    /// Workers whose publishers have all sent their last message.
    pub publishing_done: AtomicUsize,
    /// Members of each room open when traffic started (added by each worker).
    pub room_members: Vec<AtomicU64>,
    /// Messages each publisher sent (written once, when its worker is done publishing).
    pub sent: Vec<AtomicU64>,
}

impl RunControl {
    pub fn new(rooms: usize, publishers: usize) -> RunControl {
        RunControl {
            phase: AtomicU8::new(Phase::Connecting as u8),
            schedule: OnceLock::new(),
            opened: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            delivered: AtomicU64::new(0),
            workers_started: AtomicUsize::new(0),
            publishing_done: AtomicUsize::new(0),
            room_members: (0..rooms).map(|_| AtomicU64::new(0)).collect(),
            sent: (0..publishers).map(|_| AtomicU64::new(0)).collect(),
        }
    }

    pub fn phase(&self) -> Phase {
        match self.phase.load(Ordering::Acquire) {
            0 => Phase::Connecting,
            1 => Phase::Running,
            _ => Phase::Finishing,
        }
    }

    /// Starts traffic on `schedule` (the schedule is visible before the phase is).
    pub fn start_running(&self, schedule: Schedule) {
        let _ = self.schedule.set(schedule);
        self.phase.store(Phase::Running as u8, Ordering::Release);
    }

    pub fn finish(&self) {
        self.phase.store(Phase::Finishing as u8, Ordering::Release);
    }

    pub fn schedule(&self) -> Option<Schedule> {
        self.schedule.get().copied()
    }

    /// Deliveries the publishers' sends call for: each message reaches every member of its
    /// room, the sender included.
    pub fn expected_deliveries(&self, publisher_rooms: &[u32]) -> u64 {
        self.sent
            .iter()
            .zip(publisher_rooms)
            .map(|(sent, &room)| {
                let members = self
                    .room_members
                    .get(room as usize)
                    .map_or(0, |m| m.load(Ordering::Acquire));
                sent.load(Ordering::Acquire) * members
            })
            .sum()
    }
}
