//! The mesh: how shards talk to each other.
//!
//! Every shard has one bounded inbox (a crossbeam channel) and one `mio::Waker`. Another shard
//! that wants to reach it sends a [`ShardMsg`] with `try_send` — never a blocking send, since two
//! shards blocking on each other's full inbox would deadlock — and wakes it once per loop turn,
//! not once per message (a wake is an `eventfd` write, a syscall).
//!
//! When an inbox is full, messages wait in the sender's per-peer backlog and are retried next
//! turn. The backlog is bounded too (a shard that cannot keep up must not grow memory without
//! bound): past [`MAX_BACKLOG`] messages, further *messages* to that peer (broadcasts, and
//! publishes to a room's home) are dropped and counted; *membership* (a shard's share of a room, the bridge's count of other nodes'
//! members) is never lost, since a lost share would silence a room or leave its count wrong:
//! it is kept aside as the room's *latest* value, one entry per room, and sent once the backlog
//! has room again. What such a deferred change cannot keep is its `join`/`leave` notice: that
//! is dropped and counted (the peer's v1 members then see the count change with the next
//! notice, not a line for that member).
//!
//! A dropped broadcast leaves a gap in its room's offsets on the receiving shard, which
//! notices it and closes the members concerned (1013, so that they resume), never a silent
//! gap; a dropped publish never got an offset, so no member sees a gap there.
//! A member's way into and out of a room (`Subscribe`, `Joined`, `Unsubscribe`) is never
//! dropped: one of each per session, bounded by the connections.
//!
//! So the memory one peer link holds is at most [`MAX_BACKLOG`] messages plus one deferred
//! share and one deferred cluster count per room, plus the joins and leaves in flight.
//!
//! Only immutable data crosses: room names and frames are refcounted, never copied.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use crossbeam_channel::{Receiver, Sender, TryRecvError, TrySendError};
use mio::Waker;

use crate::chat::{MemberChange, Outgoing, Post};
use crate::control::Control;
use crate::frame::SharedFrame;
use crate::history::{Ask, Batch, Start};
use crate::ids::SessionKey;
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
    /// You are the room's home: number this message and send it to its members (from a
    /// member on another shard, or from the bridge).
    Publish {
        /// The room.
        room: RoomId,
        /// The message.
        post: Post,
    },
    /// You are the room's home: session `key` of shard `from` joins it, asking `ask`.
    /// Answered with [`ShardMsg::Joined`]; from then on `from` gets the room's messages.
    Subscribe {
        /// The room.
        room: RoomId,
        /// The member's shard.
        from: ShardId,
        /// The member there.
        key: SessionKey,
        /// Its generation.
        generation: u64,
        /// What it asks of the history.
        ask: Ask,
    },
    /// You are the room's home: a member of shard `from` left it (or never got to join).
    Unsubscribe {
        /// The room.
        room: RoomId,
        /// The member's shard.
        from: ShardId,
    },
    /// From the room's home: your session `key` starts at `start` (every message after it
    /// comes after this on the mesh, in order).
    Joined {
        /// The room.
        room: RoomId,
        /// The member.
        key: SessionKey,
        /// Its generation when it asked.
        generation: u64,
        /// Where it starts, and what to replay.
        start: Box<Start>,
    },
    /// From the Redis bridge (`--redis` with history): you are the room's sequencer: apply
    /// Redis's state of the room (its next message, a gap filled, or a sync) to its history
    /// ([`crate::history::follow`]).
    Sequenced {
        /// The room.
        room: RoomId,
        /// What Redis has.
        batch: Box<Batch>,
    },
    /// From the Redis bridge: it no longer follows `room` (no members here): your history
    /// of it is no longer kept current, joins must wait for the next sync.
    Unfollow {
        /// The room.
        room: RoomId,
    },
    /// From the room's home (a cluster's follower history): the room's order started over
    /// in Redis, or a gap could not be filled: your members of `room` missed messages.
    Missed {
        /// The room.
        room: RoomId,
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
    /// From the server API (`crate::api`): a request, or the answer for a session of yours
    /// that asked on the main port. Sent straight into the inbox, never through a backlog.
    Control(Box<Control>),
}

/// What the Redis bridge tells shards about a room on other nodes, for their v1 members.
#[derive(Debug, Clone)]
pub enum ClusterNews {
    /// A member of another node joined or left: a `join` or `leave` notice.
    Member(MemberChange),
    /// The count changed with no member to name (a node lost, a heartbeat correction): an
    /// `online` notice.
    Count,
    /// Cross-node delivery stopped (Redis unreachable, or this node's id taken by another
    /// process); the count is this node's own members: a `cluster_down` notice.
    LinkDown,
    /// Cross-node delivery works again: a `cluster_up` notice.
    LinkUp,
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
    /// Join/leave notices dropped because their membership change had to wait (module docs).
    pub notices_dropped: u64,
}

struct PeerLink {
    handle: PeerHandle,
    backlog: VecDeque<ShardMsg>,
    wake_pending: bool,
    /// Membership changes that came while the backlog was full: the latest per room.
    deferred_shares: HashMap<RoomId, (ShardId, Share)>,
    /// The bridge's latest count per room, and whether any deferred change had news.
    deferred_counts: HashMap<RoomId, (u64, bool)>,
}

impl PeerLink {
    fn has_deferred(&self) -> bool {
        !self.deferred_shares.is_empty() || !self.deferred_counts.is_empty()
    }

    /// Keeps a membership change aside (its latest value per room) and says whether its
    /// notice was lost; a message cannot be kept and is `Dropped`.
    fn defer(&mut self, msg: ShardMsg) -> Deferred {
        match msg {
            ShardMsg::Broadcast { .. }
            | ShardMsg::Publish { .. }
            | ShardMsg::Subscribe { .. }
            | ShardMsg::Unsubscribe { .. }
            | ShardMsg::Joined { .. }
            | ShardMsg::Sequenced { .. }
            | ShardMsg::Unfollow { .. }
            | ShardMsg::Missed { .. }
            | ShardMsg::Control(_) => Deferred::Dropped,
            ShardMsg::Presence {
                room,
                from,
                share,
                notice,
            } => {
                self.deferred_shares.insert(room, (from, share));
                Deferred::Kept {
                    lost_notice: notice.is_some(),
                }
            }
            ShardMsg::Cluster { room, others, news } => {
                let had_news = news.is_some();
                let entry = self.deferred_counts.entry(room).or_insert((others, false));
                *entry = (others, entry.1 || had_news);
                // A lost link notice is counted like a lost join: the count still arrives.
                Deferred::Kept {
                    lost_notice: matches!(
                        news,
                        Some(ClusterNews::Member(_) | ClusterNews::LinkDown | ClusterNews::LinkUp)
                    ),
                }
            }
        }
    }

    /// Moves deferred changes into the backlog while it has room; each goes without a
    /// notice, except that a cluster count whose changes had news asks for an `online` notice.
    fn undefer(&mut self) {
        while self.backlog.len() < MAX_BACKLOG {
            let next_share = self.deferred_shares.keys().next().cloned();
            let next_count = self.deferred_counts.keys().next().cloned();
            if let Some((room, (from, share))) =
                next_share.and_then(|room| self.deferred_shares.remove_entry(&room))
            {
                self.backlog.push_back(ShardMsg::Presence {
                    room,
                    from,
                    share,
                    notice: None,
                });
            } else if let Some((room, (others, had_news))) =
                next_count.and_then(|room| self.deferred_counts.remove_entry(&room))
            {
                self.backlog.push_back(ShardMsg::Cluster {
                    room,
                    others,
                    news: had_news.then_some(ClusterNews::Count),
                });
            } else {
                return;
            }
        }
    }
}

/// What became of a message that found its peer's backlog full.
enum Deferred {
    Dropped,
    Kept { lost_notice: bool },
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
                deferred_shares: HashMap::new(),
                deferred_counts: HashMap::new(),
            })
            .collect();
        MeshLinks {
            me,
            peers,
            dropped: 0,
            notices_dropped: 0,
        }
    }

    /// Queues `make()` for every other shard (one message each, no list of peers built).
    pub fn send_to_others(&mut self, mut make: impl FnMut() -> ShardMsg) {
        for to in (0..self.peers.len()).map(ShardId) {
            if to != self.me {
                self.send(to, make());
            }
        }
    }

    /// Queues `msg` for `to`. The wake happens in [`MeshLinks::flush`].
    pub fn send(&mut self, to: ShardId, msg: ShardMsg) {
        let Some(link) = self.peers.get_mut(to.0) else {
            debug_assert!(false, "send to unknown shard {to:?}");
            return;
        };
        link.wake_pending = true;
        let membership = matches!(msg, ShardMsg::Presence { .. } | ShardMsg::Cluster { .. });
        let joining = matches!(
            msg,
            ShardMsg::Subscribe { .. } | ShardMsg::Unsubscribe { .. } | ShardMsg::Joined { .. }
        );
        if link.backlog.is_empty() && !link.has_deferred() {
            match link.handle.tx.try_send(msg) {
                Ok(()) => {}
                Err(TrySendError::Full(msg)) => link.backlog.push_back(msg),
                // The peer is gone (shutting down): nothing to deliver to.
                Err(TrySendError::Disconnected(_)) => {}
            }
        } else if joining {
            // A member's way in and out of a room is never dropped (it would be stuck, or
            // counted forever); there is one of each per session, so they are bounded by the
            // connections.
            link.backlog.push_back(msg);
        } else if link.backlog.len() >= MAX_BACKLOG || (link.has_deferred() && membership) {
            // Full, or membership of a room may be deferred already: a newer change must not
            // overtake it, so it is deferred too (as the room's latest).
            match link.defer(msg) {
                Deferred::Dropped => self.dropped += 1,
                Deferred::Kept { lost_notice } => self.notices_dropped += u64::from(lost_notice),
            }
        } else {
            link.backlog.push_back(msg);
        }
    }

    /// Retries backlogs and wakes every peer that was sent something since the last flush.
    /// Returns true while some backlog is still waiting (the caller should poll again soon).
    pub fn flush(&mut self) -> bool {
        let mut waiting = false;
        for link in &mut self.peers {
            link.undefer();
            while let Some(msg) = link.backlog.pop_front() {
                match link.handle.tx.try_send(msg) {
                    Ok(()) => link.wake_pending = true,
                    Err(TrySendError::Full(msg)) => {
                        link.backlog.push_front(msg);
                        break;
                    }
                    Err(TrySendError::Disconnected(_)) => {
                        link.backlog.clear();
                        link.deferred_shares.clear();
                        link.deferred_counts.clear();
                    }
                }
                if link.backlog.is_empty() {
                    link.undefer();
                }
            }
            waiting |= !link.backlog.is_empty() || link.has_deferred();
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chat::post::Needs;
    use crate::chat::{Body, Post};

    fn link_to_one_peer(capacity: usize) -> (MeshLinks, Receiver<ShardMsg>) {
        let poll = mio::Poll::new().unwrap();
        let waker = Arc::new(Waker::new(poll.registry(), mio::Token(0)).unwrap());
        let (tx, rx) = crossbeam_channel::bounded(capacity);
        let me = PeerHandle {
            tx: crossbeam_channel::bounded(1).0,
            waker: waker.clone(),
        };
        let links = MeshLinks::new(ShardId(0), vec![me, PeerHandle { tx, waker }]);
        (links, rx)
    }

    fn broadcast(room: &RoomId) -> ShardMsg {
        let post = Post {
            sender: Arc::from("0.1"),
            nick: None,
            user: None,
            body: Body::Text("x".into()),
            ts: 0,
        };
        ShardMsg::Broadcast {
            room: room.clone(),
            post: Outgoing::new(post, Needs::default()),
        }
    }

    fn presence(room: &RoomId, plain: u32) -> ShardMsg {
        ShardMsg::Presence {
            room: room.clone(),
            from: ShardId(0),
            share: Share { plain, v1: 0 },
            notice: Some(Arc::from(&b"notice"[..])),
        }
    }

    /// Everything the peer can take, flushing as it reads.
    fn receive_all(links: &mut MeshLinks, rx: &Receiver<ShardMsg>) -> Vec<ShardMsg> {
        let mut got = Vec::new();
        loop {
            let waiting = links.flush();
            let before = got.len();
            got.extend(rx.try_iter());
            if !waiting && got.len() == before {
                return got;
            }
        }
    }

    #[test]
    fn a_full_backlog_drops_broadcasts_and_keeps_the_latest_share_per_room() {
        let (mut links, rx) = link_to_one_peer(1);
        let (r, q) = (RoomId::parse("r").unwrap(), RoomId::parse("q").unwrap());
        // One message fills the inbox, MAX_BACKLOG more fill the backlog.
        for _ in 0..=MAX_BACKLOG {
            links.send(ShardId(1), broadcast(&r));
        }
        links.send(ShardId(1), broadcast(&r));
        assert_eq!(links.dropped, 1);
        for plain in 1..=3 {
            links.send(ShardId(1), presence(&r, plain));
        }
        links.send(ShardId(1), presence(&q, 7));
        assert_eq!(
            links.notices_dropped, 4,
            "their notices are lost, and counted"
        );
        assert_eq!(links.dropped, 1, "no membership change is dropped");

        let got = receive_all(&mut links, &rx);
        let broadcasts = got
            .iter()
            .take_while(|m| matches!(m, ShardMsg::Broadcast { .. }))
            .count();
        assert_eq!(broadcasts, MAX_BACKLOG + 1, "every kept broadcast, first");
        let mut shares: Vec<_> = got[broadcasts..]
            .iter()
            .map(|m| match m {
                ShardMsg::Presence {
                    room,
                    share,
                    notice,
                    ..
                } => (room.as_str().to_owned(), share.plain, notice.is_some()),
                other => panic!("expected presence, got {other:?}"),
            })
            .collect();
        shares.sort();
        assert_eq!(
            shares,
            [("q".to_owned(), 7, false), ("r".to_owned(), 3, false)],
            "one latest share per room, without its notice"
        );
    }

    #[test]
    fn a_deferred_cluster_count_with_news_arrives_as_an_online_notice() {
        let (mut links, rx) = link_to_one_peer(1);
        let r = RoomId::parse("r").unwrap();
        for _ in 0..=MAX_BACKLOG {
            links.send(ShardId(1), broadcast(&r));
        }
        for (others, news) in [(4, Some(ClusterNews::Count)), (5, None)] {
            links.send(
                ShardId(1),
                ShardMsg::Cluster {
                    room: r.clone(),
                    others,
                    news,
                },
            );
        }
        let got = receive_all(&mut links, &rx);
        match got.last() {
            Some(ShardMsg::Cluster {
                others: 5,
                news: Some(ClusterNews::Count),
                ..
            }) => {}
            other => panic!("expected the latest count as news, got {other:?}"),
        }
        assert_eq!(got.len(), MAX_BACKLOG + 2);
    }

    #[test]
    fn with_room_to_spare_nothing_is_deferred() {
        let (mut links, rx) = link_to_one_peer(4);
        let r = RoomId::parse("r").unwrap();
        links.send(ShardId(1), presence(&r, 1));
        links.send(ShardId(1), broadcast(&r));
        links.send(ShardId(1), presence(&r, 0));
        let got = receive_all(&mut links, &rx);
        assert_eq!(got.len(), 3);
        assert!(matches!(
            &got[2],
            ShardMsg::Presence {
                notice: Some(_),
                ..
            }
        ));
        assert_eq!((links.dropped, links.notices_dropped), (0, 0));
    }
}
