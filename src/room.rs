//! Rooms: names, and each shard's table of who is in them.
//!
//! A [`RoomTable`] belongs to one shard. It knows the shard's own members of each room (plain
//! and v1 apart, since they get different renderings) and how many members each *other* shard
//! has there (its share), so a broadcast is sent only to shards that will deliver it and the
//! room's online count covers the whole server. Shares travel as `ShardMsg::Presence` on the
//! mesh after every join and leave; every shard applies them in the order a peer sent them,
//! so the latest count wins.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use crate::chat::Dialect;
use crate::chat::post::Needs;
use crate::ids::{SessionKey, ShardId};
pub use crate::metrics::Census;

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

    /// The room's home among `threads` event loops: the one that numbers its messages and
    /// keeps its history (docs/architecture.md, "One order per room"). A hash of the name,
    /// the same on every thread of the process.
    pub fn home(&self, threads: usize) -> ShardId {
        let mut hasher = std::hash::DefaultHasher::new();
        self.0.hash(&mut hasher);
        ShardId((hasher.finish() % threads.max(1) as u64) as usize)
    }
}

/// How many members one shard has in a room, by dialect.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Share {
    /// Plain members.
    pub plain: u32,
    /// v1 members.
    pub v1: u32,
}

impl Share {
    /// Members of both dialects.
    pub fn total(self) -> u64 {
        u64::from(self.plain) + u64::from(self.v1)
    }
}

/// Another shard's share of a room, as last reported on the mesh.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RemoteShare {
    /// The shard.
    pub shard: ShardId,
    /// Its members there.
    pub share: Share,
}

/// One room as one shard sees it.
#[derive(Debug, Default)]
pub struct Room {
    /// This shard's plain members, in join order until someone leaves (swap-remove).
    pub plain: Vec<SessionKey>,
    /// This shard's v1 members, likewise.
    pub v1: Vec<SessionKey>,
    /// Other shards that currently have members in this room, with their counts.
    pub remote: Vec<RemoteShare>,
    /// Members on other nodes of a cluster (`--redis`), as the bridge last said.
    pub others: u64,
    /// The offset of the room's latest message this shard's members got from the room's
    /// home shard (while it has members, and the home is another shard).
    pub seq: Option<u64>,
}

impl Room {
    fn is_unused(&self) -> bool {
        self.plain.is_empty() && self.v1.is_empty() && self.remote.is_empty() && self.others == 0
    }

    /// This shard's members.
    pub fn local_share(&self) -> Share {
        Share {
            plain: self.plain.len() as u32,
            v1: self.v1.len() as u32,
        }
    }

    /// Members on every shard (and, in a cluster, every node).
    pub fn online(&self) -> u64 {
        self.local_share().total()
            + self.remote.iter().map(|r| r.share.total()).sum::<u64>()
            + self.others
    }

    /// Which renderings of a message the room's members need, on any shard.
    pub fn needs(&self) -> Needs {
        Needs {
            plain: !self.plain.is_empty() || self.remote.iter().any(|r| r.share.plain > 0),
            v1: !self.v1.is_empty() || self.remote.iter().any(|r| r.share.v1 > 0),
        }
    }

    fn list_mut(&mut self, dialect: Dialect) -> &mut Vec<SessionKey> {
        match dialect {
            Dialect::Plain => &mut self.plain,
            Dialect::V1 => &mut self.v1,
        }
    }
}

/// One shard's rooms.
#[derive(Debug, Default)]
pub struct RoomTable {
    rooms: HashMap<RoomId, Room>,
}

impl RoomTable {
    /// The table's own copy of `room`'s name, if it has members here: a member may keep it
    /// instead of an allocation of its own.
    pub fn shared_name(&self, room: &RoomId) -> Option<&RoomId> {
        self.rooms.get_key_value(room).map(|(name, _)| name)
    }

    /// Adds `key` (speaking `dialect`) to `room`; returns its slot in that dialect's list (for
    /// O(1) removal).
    pub fn join(&mut self, room: &RoomId, dialect: Dialect, key: SessionKey) -> usize {
        let list = self
            .rooms
            .entry(room.clone())
            .or_default()
            .list_mut(dialect);
        list.push(key);
        list.len() - 1
    }

    /// Removes the `dialect` member at `slot`. Returns the key of the member that moved into
    /// `slot` (its stored slot must be updated).
    pub fn leave(&mut self, room: &RoomId, dialect: Dialect, slot: usize) -> Option<SessionKey> {
        let Some(entry) = self.rooms.get_mut(room) else {
            debug_assert!(false, "leave from unknown room {room:?}");
            return None;
        };
        let list = entry.list_mut(dialect);
        if slot >= list.len() {
            debug_assert!(false, "leave with a stale slot");
            return None;
        }
        list.swap_remove(slot);
        let moved = list.get(slot).copied();
        if entry.plain.is_empty() && entry.v1.is_empty() {
            entry.seq = None;
        }
        if entry.is_unused() {
            self.rooms.remove(room);
        }
        moved
    }

    /// Records `shard`'s latest share of `room` (zero: it has no members there now).
    pub fn set_remote_share(&mut self, room: &RoomId, shard: ShardId, share: Share) {
        if share.total() > 0 {
            let entry = self.rooms.entry(room.clone()).or_default();
            match entry.remote.iter_mut().find(|r| r.shard == shard) {
                Some(remote) => remote.share = share,
                None => entry.remote.push(RemoteShare { shard, share }),
            }
        } else if let Some(entry) = self.rooms.get_mut(room) {
            entry.remote.retain(|r| r.shard != shard);
            if entry.is_unused() {
                self.rooms.remove(room);
            }
        }
    }

    /// Records the room's members on other nodes.
    pub fn set_others(&mut self, room: &RoomId, others: u64) {
        if others > 0 {
            self.rooms.entry(room.clone()).or_default().others = others;
        } else if let Some(entry) = self.rooms.get_mut(room) {
            entry.others = 0;
            if entry.is_unused() {
                self.rooms.remove(room);
            }
        }
    }

    /// A member of `room` (added already) starts after message `offset`, as the room's home
    /// said. True when the room's other members here missed messages before it (`offset`
    /// is past the last they got): the mesh dropped some.
    pub fn started(&mut self, room: &RoomId, offset: u64) -> bool {
        let Some(entry) = self.rooms.get_mut(room) else {
            return false;
        };
        let gap = entry.seq.is_some_and(|seq| seq != offset);
        entry.seq = Some(offset);
        gap
    }

    /// Message `offset` of `room` arrived from its home. True when this shard's members
    /// missed the messages before it (it is not the next).
    pub fn advance(&mut self, room: &RoomId, offset: u64) -> bool {
        let Some(entry) = self.rooms.get_mut(room) else {
            return false;
        };
        if entry.plain.is_empty() && entry.v1.is_empty() {
            return false;
        }
        let gap = entry.seq.is_some_and(|seq| seq + 1 != offset);
        entry.seq = Some(offset);
        gap
    }

    /// Every room anyone anywhere is known to be in (the server API's room list).
    pub fn iter(&self) -> impl Iterator<Item = (&RoomId, &Room)> {
        self.rooms.iter()
    }

    /// The room, if anyone anywhere is known to be in it.
    pub fn get(&self, room: &RoomId) -> Option<&Room> {
        self.rooms.get(room)
    }

    /// The rooms homed on shard `me` of `threads` that have members on this node, from this
    /// shard's view (which the mesh keeps complete). Each room has one home, so the shards'
    /// censuses add up to the node's without counting a room twice.
    pub fn census_homed(&self, me: ShardId, threads: usize) -> Census {
        let mut census = Census::default();
        for (room, entry) in &self.rooms {
            let on_node = entry.online() - entry.others;
            if on_node > 0 && room.home(threads) == me {
                census.count(on_node);
            }
        }
        census
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
    fn join_and_leave_keep_slots_and_counts() {
        let mut t = RoomTable::default();
        let r = RoomId::parse("r").unwrap();
        assert_eq!(t.join(&r, Dialect::Plain, SessionKey(10)), 0);
        assert_eq!(t.join(&r, Dialect::Plain, SessionKey(11)), 1);
        assert_eq!(t.join(&r, Dialect::Plain, SessionKey(12)), 2);
        assert_eq!(t.join(&r, Dialect::V1, SessionKey(13)), 0);
        assert_eq!(t.get(&r).unwrap().online(), 4);
        // Removing slot 0 moves the last member (12) into it.
        assert_eq!(t.leave(&r, Dialect::Plain, 0), Some(SessionKey(12)));
        assert_eq!(
            t.get(&r).unwrap().plain,
            vec![SessionKey(12), SessionKey(11)]
        );
        assert_eq!(t.leave(&r, Dialect::Plain, 1), None);
        assert_eq!(t.leave(&r, Dialect::Plain, 0), None);
        assert_eq!(t.get(&r).unwrap().local_share(), Share { plain: 0, v1: 1 });
        assert_eq!(t.leave(&r, Dialect::V1, 0), None);
        assert!(t.get(&r).is_none());
    }

    #[test]
    fn a_skipped_offset_is_a_gap_and_an_empty_room_forgets_its_place() {
        let mut t = RoomTable::default();
        let r = RoomId::parse("r").unwrap();
        assert!(!t.advance(&r, 5), "nobody here: nothing to miss");
        t.join(&r, Dialect::Plain, SessionKey(1));
        assert!(!t.started(&r, 4));
        assert!(!t.advance(&r, 5));
        assert!(
            !t.started(&r, 5),
            "a second member starts where the first is"
        );
        assert!(t.advance(&r, 7), "6 went missing");
        assert!(t.started(&r, 9), "8 and 9 went missing");
        t.leave(&r, Dialect::Plain, 0);
        t.set_remote_share(&r, ShardId(1), Share { plain: 1, v1: 0 });
        t.join(&r, Dialect::Plain, SessionKey(2));
        assert!(!t.started(&r, 20), "a new first member starts afresh");
    }

    #[test]
    fn the_census_counts_each_room_on_its_home_shard_only() {
        // Two shards' views of the same node: shard 0 has 2 members of every room, shard 1
        // has 1; each knows the other's share, and 5 more are on another node.
        let rooms: Vec<RoomId> = (0..16)
            .map(|i| RoomId::parse(&format!("room{i}")).unwrap())
            .collect();
        let mut views = [RoomTable::default(), RoomTable::default()];
        for room in &rooms {
            for (shard, mine, theirs) in [(0, 2, 1), (1, 1, 2)] {
                let view = &mut views[shard];
                for k in 0..mine {
                    view.join(room, Dialect::Plain, SessionKey(k));
                }
                view.set_remote_share(
                    room,
                    ShardId(1 - shard),
                    Share {
                        plain: theirs,
                        v1: 0,
                    },
                );
                view.set_others(room, 5);
            }
        }
        let census = [0, 1].map(|i| views[i].census_homed(ShardId(i), 2));
        assert_eq!(census[0].rooms + census[1].rooms, 16);
        assert!(census.iter().all(|c| c.rooms == 0 || c.largest == 3));
        // A room known only through another node's count has no member here.
        let mut far = RoomTable::default();
        far.set_others(&rooms[0], 9);
        assert_eq!(far.census_homed(rooms[0].home(1), 1), Census::default());
    }

    #[test]
    fn homes_spread_rooms_over_threads_and_never_move() {
        let rooms: Vec<RoomId> = (0..64)
            .map(|i| RoomId::parse(&format!("room{i}")).unwrap())
            .collect();
        for threads in [1, 2, 4] {
            let mut used = vec![0; threads];
            for room in &rooms {
                let home = room.home(threads);
                assert_eq!(home, room.clone().home(threads));
                used[home.0] += 1;
            }
            assert!(used.iter().all(|&n| n > 0), "{threads}: {used:?}");
        }
    }

    #[test]
    fn remote_shares_count_and_keep_a_room_alive() {
        let mut t = RoomTable::default();
        let r = RoomId::parse("r").unwrap();
        t.set_remote_share(&r, ShardId(1), Share { plain: 2, v1: 0 });
        t.set_remote_share(&r, ShardId(1), Share { plain: 2, v1: 1 });
        t.set_remote_share(&r, ShardId(2), Share { plain: 0, v1: 4 });
        let room = t.get(&r).unwrap();
        assert_eq!(room.remote.len(), 2);
        assert_eq!(room.online(), 7);
        assert_eq!(
            room.needs(),
            Needs {
                plain: true,
                v1: true
            }
        );
        t.join(&r, Dialect::Plain, SessionKey(1));
        assert_eq!(t.leave(&r, Dialect::Plain, 0), None);
        assert!(t.get(&r).is_some());
        t.set_remote_share(&r, ShardId(1), Share::default());
        t.set_remote_share(&r, ShardId(2), Share::default());
        assert!(t.get(&r).is_none());
    }
}
