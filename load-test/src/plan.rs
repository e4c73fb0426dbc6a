//! A run's plan: every connection, its room and its role, decided before the first connect.
//!
//! Scenarios only build plans; the engine runs any plan. Publisher ids are run-wide and each
//! room's publishers have consecutive ids, so a recipient maps a token's publisher to its
//! tracker with one subtraction.

use crate::target::{SourceIps, Target};

/// What a connection does besides receiving its room's messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Only receives.
    Subscriber,
    /// Sends on a fixed schedule, whatever the server does (open loop): message `i` is due at
    /// `start + offset_ns + i * interval_ns` and carries that time, not the time it left.
    OpenLoop {
        publisher: u32,
        interval_ns: u64,
        offset_ns: u64,
    },
    /// Keeps `in_flight` broadcasts outstanding: a new one leaves when one has reached every
    /// member of the room (see [`crate::roundtrip`]).
    ClosedLoop { publisher: u32, in_flight: u32 },
    /// Floods its room on a fixed schedule, like an open-loop publisher, with filler that
    /// carries no token (recipients see it, but count nothing), to measure what the others'
    /// traffic looks like while a server limits and cuts off a flooder. Not a member: its
    /// receipts, and its end if the server closes it, are kept apart ([`crate::stats::FloodStats`]).
    Flooder { interval_ns: u64, offset_ns: u64 },
}

impl Role {
    /// Counted as a member of its room (expected deliveries, the order check).
    pub fn is_member(&self) -> bool {
        !matches!(self, Role::Flooder { .. })
    }

    pub fn publisher(&self) -> Option<u32> {
        match *self {
            Role::Subscriber | Role::Flooder { .. } => None,
            Role::OpenLoop { publisher, .. } | Role::ClosedLoop { publisher, .. } => {
                Some(publisher)
            }
        }
    }
}

/// A room: which publisher ids speak in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Room {
    pub first_publisher: u32,
    pub publishers: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnSpec {
    /// Index into [`Plan::targets`].
    pub target: u32,
    /// Index into [`Plan::rooms`].
    pub room: u32,
    pub role: Role,
}

/// Phase lengths of a run, in nanoseconds.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    /// Most time the connect phase may take; connections not open by then count as failed.
    pub connect_timeout_ns: u64,
    /// Pause between the last handshake and the first message, so that room joins have
    /// propagated (between the shards of a server, or the nodes of a cluster).
    pub settle_ns: u64,
    /// Traffic before measuring: latency and throughput ignore it, loss does not.
    pub warmup_ns: u64,
    /// The measured window.
    pub duration_ns: u64,
    /// Most time to wait after the last send for deliveries still on their way.
    pub drain_ns: u64,
}

#[derive(Debug, Clone)]
pub struct Plan {
    /// Human description, e.g. `fanout 1000 subscribers x 4 publishers @ 400/s`.
    pub label: String,
    pub targets: Vec<Target>,
    pub rooms: Vec<Room>,
    pub connections: Vec<ConnSpec>,
    /// Payload bytes per message (at least the token's length).
    pub payload_size: usize,
    pub timing: Timing,
    pub threads: usize,
    pub source_ips: SourceIps,
    /// Most connects in progress at once, over all threads.
    pub connect_concurrency: usize,
    /// Largest server frame accepted; bigger ones close the connection as a protocol error.
    pub max_frame: u64,
}

impl Plan {
    /// The room of every publisher id, indexed by id.
    pub fn publisher_rooms(&self) -> Vec<u32> {
        let mut rooms = Vec::new();
        for (index, room) in self.rooms.iter().enumerate() {
            let end = (room.first_publisher + room.publishers) as usize;
            if rooms.len() < end {
                rooms.resize(end, u32::MAX);
            }
            for id in room.first_publisher..room.first_publisher + room.publishers {
                rooms[id as usize] = index as u32;
            }
        }
        rooms
    }

    pub fn publisher_count(&self) -> usize {
        self.rooms
            .iter()
            .map(|r| (r.first_publisher + r.publishers) as usize)
            .max()
            .unwrap_or(0)
    }

    pub fn flooders(&self) -> usize {
        self.connections
            .iter()
            .filter(|c| matches!(c.role, Role::Flooder { .. }))
            .count()
    }

    pub fn has_closed_loop(&self) -> bool {
        self.connections
            .iter()
            .any(|c| matches!(c.role, Role::ClosedLoop { .. }))
    }
}
