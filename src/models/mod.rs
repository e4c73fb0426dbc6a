//! The threading models (`--model`; docs/architecture.md has the table). There is one event
//! loop ([`crate::shard::Shard`]); a model supplies only two things:
//!
//! * **how connections reach a loop** — an [`Entry`]: the acceptor's hand-off channel
//!   (`sharded`, `shared`), or the loop's own listener (`single`, [`single::Listener`]);
//! * **how a room's message reaches members this thread does not own** — a [`Reach`]:
//!   the mesh to other shards' inboxes ([`sharded::Mesh`]), the locked registry of the
//!   classic multi-threaded design ([`shared::Registry`]), or nobody ([`single::Alone`]).
//!
//! Everything else — polling, adopting, reading, local fan-out, presence, deadlines,
//! coalescing, flushing, reaping, draining — is the loop's, so a feature written there works
//! in every model.

pub mod sharded;
pub mod shared;
pub mod single;

use std::sync::Arc;

use crossbeam_channel::Receiver;

use crate::acceptor::Handoff;
use crate::chat::post::Needs;
use crate::chat::{Outgoing, Post};
use crate::frame::SharedFrame;
use crate::ids::SessionKey;
use crate::metrics::Counters;
use crate::room::{Room, RoomId, Share};
use crate::session::Ctx;
use crate::session::cell::Cell;
use crate::tls::Conn;

/// How connections reach an event loop.
pub enum Entry {
    /// Handed over by the acceptor thread (its channel; the acceptor wakes the loop).
    Handoff(Receiver<Handoff>),
    /// Accepted by the loop itself (`single`).
    Listener(single::Listener),
    /// No more connections come (the listener was closed for shutdown).
    Closed,
}

/// A member that just joined a room on this thread, as a [`Reach`] sees it.
pub struct Joiner<H> {
    /// Its key on this thread.
    pub key: SessionKey,
    /// Its generation there.
    pub generation: u64,
    /// Whether it speaks `shardcast.v1`.
    pub v1: bool,
    /// What other threads may hold of it.
    pub handle: H,
}

/// How a room's messages and presence reach the members this thread does not own.
///
/// `local` is always this thread's view of the room ([`Room`]): its own members, and what it
/// was told of the others (the mesh's shares, the cluster's count). The default methods are
/// right for a model whose local view is complete, as the mesh keeps it.
pub trait Reach {
    /// How the loop holds its sessions in this model.
    type Cell: Cell<Stream = Conn>;

    /// What the model calls its event-loop threads (`shard-2`, `worker-0`; the log span).
    const THREAD: &'static str = "shard";

    /// A member of this thread joined `room` (it is in `local` already). `welcome(online)`
    /// queues its welcome, and must be called so that no message from another thread can
    /// reach the member before it. Returns the room's online count.
    fn admit(
        &mut self,
        room: &RoomId,
        joiner: Joiner<<Self::Cell as Cell>::Handle>,
        local: &Room,
        welcome: impl FnOnce(u64),
    ) -> u64 {
        let _ = (room, joiner);
        let online = local.online();
        welcome(online);
        online
    }

    /// Member `key` of this thread left `room` (it is out of `local` already, which is
    /// `None` once nobody anywhere is known to be there). Returns the online count.
    fn dismiss(&mut self, room: &RoomId, key: SessionKey, local: Option<&Room>) -> u64 {
        let _ = (room, key);
        local.map_or(0, Room::online)
    }

    /// Members of `room` everywhere.
    fn online(&self, room: &RoomId, local: Option<&Room>) -> u64 {
        let _ = room;
        local.map_or(0, Room::online)
    }

    /// Which renderings the room's members need, everywhere.
    fn needs(&self, room: &RoomId, local: Option<&Room>) -> Needs {
        let _ = room;
        local.map_or_else(Needs::default, Room::needs)
    }

    /// Encodes `post` for the room's members everywhere and sends it to those this thread
    /// does not own; returns it for the loop's own members.
    fn fan_out(&mut self, room: &RoomId, post: Post, local: &Room, cx: &mut Ctx) -> Arc<Outgoing>;

    /// This thread's membership of `room` changed to `share`: tell the others, and give their
    /// v1 members `notice` (a join or leave), if any.
    fn tell_presence(
        &mut self,
        room: &RoomId,
        share: Share,
        notice: Option<&SharedFrame>,
        cx: &mut Ctx,
    );

    /// Sessions of this thread that another thread changed (cut off, or failed to write to)
    /// since the last call, with their generations.
    fn take_attention(&mut self, into: &mut Vec<(SessionKey, u64)>) {
        let _ = into;
    }

    /// The end of a loop turn: send what waits, count what was dropped. True while something
    /// still waits (poll again soon).
    fn end_turn(&mut self, counters: &mut Counters) -> bool {
        let _ = counters;
        false
    }
}
