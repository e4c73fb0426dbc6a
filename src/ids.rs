//! Identifiers every layer uses: which thread, which slot, which session.
//!
//! A leaf module (it depends on nothing in the crate), so that rooms, the mesh, the cluster
//! bridge and the event loop can all name sessions and shards without importing each other;
//! and the rule for a cluster node's name, which prefixes session ids.

use std::fmt;

/// The index of an event-loop thread (a shard, or a worker of the `shared` model),
/// `0..workers`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ShardId(pub usize);

/// A session's place in its thread's session table (the slab key, also its `mio::Token`).
/// Only meaningful on the thread that owns the session, and reused after the session ends:
/// pair it with the table's generation where it may outlive the session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SessionKey(pub usize);

impl fmt::Display for SessionKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// A session's id, unique on the server: its event-loop thread and its sequence number there.
/// Written `"<worker>.<seq>"`, or `"<node>.<worker>.<seq>"` in a cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct SessionId {
    /// The thread that owns the session.
    pub worker: u16,
    /// Its sequence number on that thread (the table's generation of its slot).
    pub seq: u64,
}

impl fmt::Display for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.worker, self.seq)
    }
}

impl SessionId {
    /// Reads `"<worker>.<seq>"` (decimal digits only; no node prefix).
    pub fn parse(text: &str) -> Option<SessionId> {
        let (worker, seq) = text.split_once('.')?;
        let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
        if !digits(worker) || !digits(seq) {
            return None;
        }
        Some(SessionId {
            worker: worker.parse().ok()?,
            seq: seq.parse().ok()?,
        })
    }
}

/// A valid node id: 1–32 of `A-Z a-z 0-9 - _` (it prefixes session ids seen by clients).
pub fn valid_node_id(id: &str) -> bool {
    (1..=32).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}
