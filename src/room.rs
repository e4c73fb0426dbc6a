//! Rooms: names, and each shard's table of who is in them.
//!
//! A [`RoomTable`] belongs to one shard. It knows the shard's own members of each room and
//! which *other* shards have members there (their interest), so a broadcast is sent only to
//! shards that will deliver it. Interest changes travel as `ShardMsg::Interest` on the mesh;
//! every shard applies them in the order a peer sent them, so the latest state wins.

use std::collections::HashMap;
use std::sync::Arc;

use crate::mesh::ShardId;

/// Longest room name, in bytes (all of them ASCII).
pub const MAX_ROOM_NAME: usize = 64;

/// The room a bare `/` leads to.
pub const DEFAULT_ROOM: &str = "lobby";

/// A validated room name: 1 to 64 ASCII letters, digits, `-` or `_`.
///
/// Cheap to clone (shared string), since it travels with every cross-shard broadcast.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RoomId(Arc<str>);

impl RoomId {
    /// Validates `name`; `None` when it is not a legal room name.
    pub fn parse(name: &str) -> Option<RoomId> {
        let legal = !name.is_empty()
            && name.len() <= MAX_ROOM_NAME
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        legal.then(|| RoomId(Arc::from(name)))
    }

    /// The room's name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A slab key of a session on this shard.
pub type SessionKey = usize;

/// One room as one shard sees it.
#[derive(Debug, Default)]
pub struct Room {
    /// This shard's members, in join order until someone leaves (swap-remove).
    pub members: Vec<SessionKey>,
    /// Other shards that currently have members in this room.
    pub remote: Vec<ShardId>,
}

impl Room {
    fn is_unused(&self) -> bool {
        self.members.is_empty() && self.remote.is_empty()
    }
}

/// What a join or leave changed, so the shard can tell its peers.
#[derive(Debug, PartialEq, Eq)]
pub enum LocalPresence {
    /// The first local member arrived: peers must learn of this shard's interest.
    Became,
    /// The last local member left: peers may stop sending.
    Ended,
    /// Nothing the peers need to hear about.
    Unchanged,
}

/// One shard's rooms.
#[derive(Debug, Default)]
pub struct RoomTable {
    rooms: HashMap<RoomId, Room>,
}

impl RoomTable {
    /// Adds `key` to `room`; returns its slot (for O(1) removal) and whether peers must hear.
    pub fn join(&mut self, room: &RoomId, key: SessionKey) -> (usize, LocalPresence) {
        let entry = self.rooms.entry(room.clone()).or_default();
        entry.members.push(key);
        let presence = if entry.members.len() == 1 {
            LocalPresence::Became
        } else {
            LocalPresence::Unchanged
        };
        (entry.members.len() - 1, presence)
    }

    /// Removes the member at `slot`. Returns the key of the member that moved into `slot`
    /// (its stored slot must be updated) and whether peers must hear.
    pub fn leave(&mut self, room: &RoomId, slot: usize) -> (Option<SessionKey>, LocalPresence) {
        let Some(entry) = self.rooms.get_mut(room) else {
            debug_assert!(false, "leave from unknown room {room:?}");
            return (None, LocalPresence::Unchanged);
        };
        if slot >= entry.members.len() {
            debug_assert!(false, "leave with a stale slot");
            return (None, LocalPresence::Unchanged);
        }
        entry.members.swap_remove(slot);
        let moved = entry.members.get(slot).copied();
        let presence = if entry.members.is_empty() {
            LocalPresence::Ended
        } else {
            LocalPresence::Unchanged
        };
        if entry.is_unused() {
            self.rooms.remove(room);
        }
        (moved, presence)
    }

    /// Records that `shard` does (or no longer does) have members in `room`.
    pub fn set_remote_interest(&mut self, room: &RoomId, shard: ShardId, present: bool) {
        if present {
            let entry = self.rooms.entry(room.clone()).or_default();
            if !entry.remote.contains(&shard) {
                entry.remote.push(shard);
            }
        } else if let Some(entry) = self.rooms.get_mut(room) {
            entry.remote.retain(|s| *s != shard);
            if entry.is_unused() {
                self.rooms.remove(room);
            }
        }
    }

    /// The room, if anyone anywhere is known to be in it.
    pub fn get(&self, room: &RoomId) -> Option<&Room> {
        self.rooms.get(room)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn room_names_follow_the_documented_rule() {
        assert!(RoomId::parse("lobby").is_some());
        assert!(RoomId::parse("a-b_C9").is_some());
        assert!(RoomId::parse(&"x".repeat(64)).is_some());
        assert!(RoomId::parse(&"x".repeat(65)).is_none());
        assert!(RoomId::parse("").is_none());
        assert!(RoomId::parse("a.b").is_none());
        assert!(RoomId::parse("a/b").is_none());
        assert!(RoomId::parse("é").is_none());
    }

    #[test]
    fn join_and_leave_report_presence_and_moved_slots() {
        let mut t = RoomTable::default();
        let r = RoomId::parse("r").unwrap();
        assert_eq!(t.join(&r, 10), (0, LocalPresence::Became));
        assert_eq!(t.join(&r, 11), (1, LocalPresence::Unchanged));
        assert_eq!(t.join(&r, 12), (2, LocalPresence::Unchanged));
        // Removing slot 0 moves the last member (12) into it.
        assert_eq!(t.leave(&r, 0), (Some(12), LocalPresence::Unchanged));
        assert_eq!(t.get(&r).unwrap().members, vec![12, 11]);
        assert_eq!(t.leave(&r, 1), (None, LocalPresence::Unchanged));
        assert_eq!(t.leave(&r, 0), (None, LocalPresence::Ended));
        assert!(t.get(&r).is_none());
    }

    #[test]
    fn remote_interest_keeps_a_room_alive() {
        let mut t = RoomTable::default();
        let r = RoomId::parse("r").unwrap();
        t.set_remote_interest(&r, ShardId(1), true);
        t.set_remote_interest(&r, ShardId(1), true);
        assert_eq!(t.get(&r).unwrap().remote, vec![ShardId(1)]);
        t.join(&r, 1);
        assert_eq!(t.leave(&r, 0).1, LocalPresence::Ended);
        assert!(t.get(&r).is_some());
        t.set_remote_interest(&r, ShardId(1), false);
        assert!(t.get(&r).is_none());
    }
}
