//! The mesh: how shards talk to each other.
//!
//! Every shard has one bounded inbox (a crossbeam channel) and one `mio::Waker`. Another shard
//! that wants to reach it sends a [`ShardMsg`] with `try_send` — never a blocking send, since two
//! shards blocking on each other's full inbox would deadlock — and wakes it once per loop turn,
//! not once per message (a wake is an `eventfd` write, a syscall).
//!
//! When an inbox is full, messages wait in the sender's per-peer backlog and are retried next
//! turn. The backlog is bounded too: past [`MAX_BACKLOG`] messages, further *broadcasts* to that
//! peer are dropped and counted (a shard that cannot keep up must not grow memory without
//! bound); *presence* changes are never dropped, since losing one would silence a room or
//! leave its online count wrong.
//!
//! Only immutable data crosses: room names and frames are refcounted, never copied.

use std::collections::VecDeque;
use std::sync::Arc;

use crossbeam_channel::{Receiver, Sender, TryRecvError, TrySendError};
use mio::Waker;

use crate::chat::{MemberChange, Outgoing};
use crate::frame::SharedFrame;
pub use crate::ids::ShardId;
use crate::room::{RoomId, Share};

/// Most messages that may wait for one peer when its inbox is full (see the module docs).
pub const MAX_BACKLOG: usize = 64 * 1024;

/// What one shard tells another.
#[derive(Debug)]
pub enum ShardMsg {
    /// Deliver this message to your members of `room`.
    Broadcast {
        /// The room.
        room: RoomId,
        /// The message with its encoded renderings.
        post: Arc<Outgoing>,
    },
    /// Shard `from` now has `share` members in `room` (after a join or a leave).
    Presence {
        /// The room.
        room: RoomId,
        /// The shard whose membership changed.
        from: ShardId,
        /// Its members there now.
        share: Share,
        /// The `join`/`leave` envelope for v1 members, unless presence notices are off.
        notice: Option<SharedFrame>,
    },
    /// From the Redis bridge: `room` has `others` members on other nodes now.
    Cluster {
        /// The room.
        room: RoomId,
        /// Its members on every other node.
        others: u64,
        /// What the shard's v1 members are to be told (when presence is on). The shard renders
        /// the notice itself, with its own `online` count, which also covers members that
        /// joined it a moment ago (the bridge's view of this node may lag behind).
        news: Option<ClusterNews>,
    },
}

/// What the Redis bridge tells shards about a room on other nodes, for their v1 members.
#[derive(Debug, Clone)]
pub enum ClusterNews {
    /// A member of another node joined or left: a `join` or `leave` notice.
    Member(MemberChange),
    /// The count changed with no member to name (a node lost, a heartbeat correction): an
    /// `online` notice.
    Count,
}

/// The sending side of one shard's inbox, as held by its peers.
#[derive(Clone)]
pub struct PeerHandle {
    /// The peer's inbox.
    pub tx: Sender<ShardMsg>,
    /// The peer's poll waker.
    pub waker: Arc<Waker>,
}

/// A shard's links to every other shard, with the per-peer backlog and wake bookkeeping.
pub struct MeshLinks {
    me: ShardId,
    peers: Vec<PeerLink>,
    /// Broadcasts dropped because a peer's backlog was full (see the module docs).
    pub dropped: u64,
}

struct PeerLink {
    handle: PeerHandle,
    backlog: VecDeque<ShardMsg>,
    wake_pending: bool,
}

impl MeshLinks {
    /// Links for shard `me`, given every shard's handle (its own included, ignored).
    pub fn new(me: ShardId, handles: Vec<PeerHandle>) -> Self {
        let peers = handles
            .into_iter()
            .map(|handle| PeerLink {
                handle,
                backlog: VecDeque::new(),
                wake_pending: false,
            })
            .collect();
        MeshLinks {
            me,
            peers,
            dropped: 0,
        }
    }

    /// How many shards there are (this one included).
    pub fn shards(&self) -> usize {
        self.peers.len()
    }

    /// Every other shard's id.
    pub fn others(&self) -> impl Iterator<Item = ShardId> + '_ {
        (0..self.peers.len())
            .map(ShardId)
            .filter(move |s| *s != self.me)
    }

    /// Queues `msg` for `to`. The wake happens in [`MeshLinks::flush`].
    pub fn send(&mut self, to: ShardId, msg: ShardMsg) {
        let Some(link) = self.peers.get_mut(to.0) else {
            debug_assert!(false, "send to unknown shard {to:?}");
            return;
        };
        link.wake_pending = true;
        if link.backlog.is_empty() {
            match link.handle.tx.try_send(msg) {
                Ok(()) => {}
                Err(TrySendError::Full(msg)) => link.backlog.push_back(msg),
                // The peer is gone (shutting down): nothing to deliver to.
                Err(TrySendError::Disconnected(_)) => {}
            }
        } else if link.backlog.len() >= MAX_BACKLOG && matches!(msg, ShardMsg::Broadcast { .. }) {
            self.dropped += 1;
        } else {
            link.backlog.push_back(msg);
        }
    }

    /// Retries backlogs and wakes every peer that was sent something since the last flush.
    /// Returns true while some backlog is still waiting (the caller should poll again soon).
    pub fn flush(&mut self) -> bool {
        let mut waiting = false;
        for link in &mut self.peers {
            while let Some(msg) = link.backlog.pop_front() {
                match link.handle.tx.try_send(msg) {
                    Ok(()) => link.wake_pending = true,
                    Err(TrySendError::Full(msg)) => {
                        link.backlog.push_front(msg);
                        break;
                    }
                    Err(TrySendError::Disconnected(_)) => link.backlog.clear(),
                }
            }
            waiting |= !link.backlog.is_empty();
            if link.wake_pending {
                link.wake_pending = false;
                // A failed wake means the peer's poll is gone: it is shutting down.
                let _ = link.handle.waker.wake();
            }
        }
        waiting
    }
}

/// Takes up to `budget` messages from an inbox; returns how many were taken and whether the
/// inbox may hold more.
pub fn drain_inbox(
    rx: &Receiver<ShardMsg>,
    budget: usize,
    mut handle: impl FnMut(ShardMsg),
) -> (usize, bool) {
    for taken in 0..budget {
        match rx.try_recv() {
            Ok(msg) => handle(msg),
            Err(TryRecvError::Empty | TryRecvError::Disconnected) => return (taken, false),
        }
    }
    (budget, true)
}
