//! This node's members per room and shard, as the bridge threads each keep them.

use std::collections::HashMap;

use crate::ids::ShardId;
use crate::room::{RoomId, Share};

/// Room → the share of each local shard. Rooms with no local member are not kept.
#[derive(Debug)]
pub struct NodeTable {
    workers: usize,
    rooms: HashMap<RoomId, Vec<Share>>,
}

impl NodeTable {
    /// An empty table for a node of `workers` shards.
    pub fn new(workers: usize) -> Self {
        NodeTable {
            workers,
            rooms: HashMap::new(),
        }
    }

    /// Records that `shard` has `share` members in `room` now.
    pub fn set(&mut self, room: &RoomId, shard: ShardId, share: Share) {
        let shares = self
            .rooms
            .entry(room.clone())
            .or_insert_with(|| vec![Share::default(); self.workers]);
        if let Some(slot) = shares.get_mut(shard.0) {
            *slot = share;
        }
        if shares.iter().all(|s| s.total() == 0) {
            self.rooms.remove(room);
        }
    }

    /// The node's members in `room`, all shards together.
    pub fn total(&self, room: &RoomId) -> Share {
        self.rooms
            .get(room)
            .map_or(Share::default(), |shares| Share {
                plain: shares.iter().map(|s| s.plain).sum(),
                v1: shares.iter().map(|s| s.v1).sum(),
            })
    }

    /// Whether the node has members in `room`.
    pub fn contains(&self, room: &RoomId) -> bool {
        self.rooms.contains_key(room)
    }

    /// Rooms with local members.
    pub fn rooms(&self) -> impl Iterator<Item = &RoomId> {
        self.rooms.keys()
    }

    /// Every non-empty `(room, shard, share)`, for a heartbeat.
    pub fn rows(&self) -> Vec<(&str, u16, Share)> {
        self.rooms
            .iter()
            .flat_map(|(room, shares)| {
                shares
                    .iter()
                    .enumerate()
                    .filter(|(_, share)| share.total() > 0)
                    .map(move |(shard, share)| (room.as_str(), shard as u16, *share))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_add_up_and_empty_rooms_go() {
        let mut t = NodeTable::new(2);
        let r = RoomId::parse("r").unwrap();
        t.set(&r, ShardId(0), Share { plain: 2, v1: 1 });
        t.set(&r, ShardId(1), Share { plain: 1, v1: 0 });
        assert_eq!(t.total(&r), Share { plain: 3, v1: 1 });
        assert_eq!(t.rows().len(), 2);
        t.set(&r, ShardId(0), Share::default());
        assert!(t.contains(&r));
        t.set(&r, ShardId(1), Share::default());
        assert!(!t.contains(&r));
        assert!(t.rows().is_empty());
        // A shard index out of range is ignored, not a panic.
        t.set(&r, ShardId(9), Share { plain: 1, v1: 0 });
        assert!(!t.contains(&r));
    }
}
