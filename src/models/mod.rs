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
use std::time::Instant;

use crossbeam_channel::Receiver;

use crate::acceptor::Handoff;
use crate::chat::post::Needs;
use crate::chat::{Outgoing, Post};
use crate::config::Config;
use crate::control::Placed;
use crate::frame::SharedFrame;
use crate::history::{Ask, Batch, Epoch, History, Limits, Start, Waiter};
use crate::ids::{SessionKey, ShardId};
use crate::metrics::{Counter, Counters};
use crate::room::{Census, Room, RoomId, RoomTable, Share};
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

/// Where a joining member goes in its room's history.
#[derive(Debug)]
pub enum Placing<'a> {
    /// The reach places it (when history is on), as it asks.
    Here(&'a Ask),
    /// The room's sequencer on another thread placed it there.
    Placed(Start),
}

impl Placing<'_> {
    /// The place: the one given, or, when the reach places it, what `history` says (none when
    /// history is off).
    pub fn start(
        self,
        room: &RoomId,
        history: Option<&mut History>,
        now: Instant,
    ) -> Option<Start> {
        match (self, history) {
            (Placing::Placed(start), _) => Some(start),
            (Placing::Here(ask), Some(history)) => Some(history.join(room, ask, now)),
            (Placing::Here(_), None) => None,
        }
    }
}

/// How a room's messages and presence reach the members this thread does not own — and,
/// with history on, who gives a room its one order (its sequencer: a home shard, the one
/// loop, or the registry) and how a joining member is placed in it.
///
/// `local` is always this thread's view of the room ([`Room`]): its own members, and what it
/// was told of the others (the mesh's shares, the cluster's count). The default methods are
/// right for a model whose local view is complete, as the mesh keeps it.
pub trait Reach {
    /// How the loop holds its sessions in this model.
    type Cell: Cell<Stream = Conn>;

    /// What the model calls its event-loop threads (`shard-2`, `worker-0`; the log span).
    const THREAD: &'static str = "shard";

    /// A member of this thread is about to join `room` asking `ask`. True when the room's
    /// sequencer is another thread, which was asked to place it: the loop then admits the
    /// member when the answer comes ([`crate::mesh::ShardMsg::Joined`]).
    fn defer_join(&mut self, room: &RoomId, key: SessionKey, generation: u64, ask: &Ask) -> bool {
        let _ = (room, key, generation, ask);
        false
    }

    /// A member of this thread joined `room` (it is in `local` already). The reach places it
    /// in the room's history (history on), or takes the place another thread's sequencer
    /// gave it ([`Placing`]). `welcome(online, start)` queues its welcome
    /// and replay, and must be called so that no message from another thread can reach the
    /// member before it. Returns the room's online count.
    fn admit(
        &mut self,
        room: &RoomId,
        joiner: Joiner<<Self::Cell as Cell>::Handle>,
        placing: Placing,
        local: &Room,
        now: Instant,
        welcome: impl FnOnce(u64, Option<&Start>),
    ) -> u64;

    /// Member `key` of this thread left `room` (it is out of `local` already, which is
    /// `None` once nobody anywhere is known to be there). Returns the online count.
    fn dismiss(
        &mut self,
        room: &RoomId,
        key: SessionKey,
        local: Option<&Room>,
        now: Instant,
    ) -> u64;

    /// The rooms this thread accounts for in `/metrics` (thread `me` of `threads`): the
    /// threads' censuses add up to the node's.
    fn census(&self, local: &RoomTable, me: ShardId, threads: usize) -> Census {
        local.census_homed(me, threads)
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

    /// Sends `post` to the room's members everywhere, in the room's one order (history on).
    /// Returns what this thread's own members get now; `None` when they get it later, in
    /// order, through the inbox (the sequencer is another thread), or got it already.
    fn fan_out(
        &mut self,
        room: &RoomId,
        post: Post,
        local: Option<&Room>,
        cx: &mut Ctx,
    ) -> Option<Arc<Outgoing>>;

    /// [`Reach::fan_out`] for a message of the server API, which also answers where the
    /// room's sequencer — this thread, as the API asks it — placed it (history on).
    fn fan_out_placed(
        &mut self,
        room: &RoomId,
        post: Post,
        local: Option<&Room>,
        cx: &mut Ctx,
    ) -> (Option<Arc<Outgoing>>, Option<Placed>) {
        let out = self.fan_out(room, post, local, cx);
        let placed = out.as_ref().filter(|out| out.offset > 0).and_then(|out| {
            Some(Placed {
                epoch: self.epoch(room)?,
                offset: out.offset,
            })
        });
        (out, placed)
    }

    /// The epoch of `room`'s history, if this thread keeps it.
    fn epoch(&self, room: &RoomId) -> Option<Epoch> {
        let _ = room;
        None
    }

    /// `room`'s history as `ask` reads it, without joining (the server API), if this thread
    /// keeps it (it is the room's sequencer) and the room has a live log.
    fn peek_history(&self, room: &RoomId, ask: &Ask, now: Instant) -> Option<Start> {
        let _ = (room, ask, now);
        None
    }

    /// The mesh only: a member of shard `from` joins `room`, whose sequencer this is.
    fn on_subscribe(
        &mut self,
        room: &RoomId,
        from: ShardId,
        key: SessionKey,
        generation: u64,
        ask: &Ask,
        now: Instant,
    ) {
        let _ = (room, from, key, generation, ask, now);
    }

    /// The mesh only: a member of shard `from` left `room`, whose sequencer this is.
    fn on_unsubscribe(&mut self, room: &RoomId, from: ShardId, now: Instant) {
        let _ = (room, from, now);
    }

    /// Members of this thread that the reach queued a message for itself (the `shared`
    /// model's ordered fan-out) since the last call: the loop lists them for its flush.
    fn take_queued(&mut self, into: &mut Vec<SessionKey>) {
        let _ = into;
    }

    /// A cluster's follower history (`--redis` with history): this thread is `room`'s
    /// sequencer and applies Redis's `batch` to it (`crate::history::follow`). Returns the
    /// messages this thread's members get live now, in order, and whether they missed some
    /// (they are then closed to resume). Joins that waited for the sync are handed out by
    /// [`Reach::take_ready`] (other threads' through their inboxes or the registry).
    fn follow(
        &mut self,
        room: &RoomId,
        batch: Batch,
        local: Option<&Room>,
        cx: &mut Ctx,
    ) -> (Vec<Arc<Outgoing>>, bool) {
        let _ = (room, batch, local, cx);
        (Vec::new(), false)
    }

    /// The bridge no longer follows `room`: its follower history must sync again.
    fn unfollow(&mut self, room: &RoomId) {
        let _ = room;
    }

    /// Joins of this thread whose room was synced since the last call: each is admitted now
    /// and placed as it asks ([`Placing::Here`]), the room's history being current.
    fn take_ready(&mut self, into: &mut Vec<(RoomId, Waiter)>) {
        let _ = into;
    }

    /// Rooms whose joins wait for a sync: the loop asks the bridge to follow them.
    fn take_to_sync(&mut self, into: &mut Vec<RoomId>) {
        let _ = into;
    }

    /// Lets histories this thread keeps drop what expired by `now`.
    fn sweep(&mut self, now: Instant) {
        let _ = now;
    }

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

    /// The turn's reading is done, its writing to sockets comes next: hand the other threads
    /// what it produced now (wake them), so that they deliver while this thread writes.
    fn send_now(&mut self) {}

    /// The end of a loop turn: send what waits, count what was dropped (and what the
    /// histories did). True while something still waits (poll again soon).
    fn end_turn(&mut self, counters: &mut Counters) -> bool {
        let _ = counters;
        false
    }
}

/// A history for one sequencer's share of `--history-memory` (one of `sequencers`), or none
/// when history is off.
pub fn history_for(config: &Config, sequencers: usize) -> Option<History> {
    config.history_on().then(|| {
        let limits = Limits {
            size: config.history_size,
            ttl: config.history_ttl,
            memory: config.history_memory / sequencers.max(1),
        };
        // In a cluster, Redis numbers the messages and the store follows it.
        match config.redis {
            Some(_) => History::follower(limits),
            None => History::new(limits),
        }
    })
}

/// Adds what `history` did since the last call to `counters`.
pub fn count_history(history: &mut History, counters: &mut Counters) {
    let tally = history.take_tally();
    counters.add(Counter::HistoryEvicted, tally.evicted);
    counters.add(Counter::HistoryExpired, tally.expired);
    counters.add(Counter::ResumeRecovered, tally.recovered);
    counters.add(Counter::ResumeNotRecovered, tally.not_recovered);
}
