//! The `single` model: one thread, one loop, no acceptor, no mesh — Beast's one-`io_context`
//! chat server. Its loop accepts on the listener itself ([`Listener`]), and every member of
//! every room is its own, so nothing has to reach anyone else ([`Alone`]).

use std::io;
use std::sync::Arc;
use std::time::Instant;

use mio::net::TcpListener;
use mio::{Interest, Registry, Token};

use crate::acceptor::{Accepted, Handoff, RESOURCE_BACKOFF, accept_ready};
use crate::chat::{Outgoing, Post};
use crate::frame::SharedFrame;
use crate::history::{Ask, Batch, Epoch, History, Start, Waiter};
use crate::ids::SessionKey;
use crate::ids::ShardId;
use crate::limits::{ConnectionRate, PerIpLimit};
use crate::metrics::Counters;
use crate::models::{Joiner, Placing, Reach, count_history};
use crate::room::{Room, RoomId, Share};
use crate::session::{Ctx, Session};
use crate::stats::ServerStats;
use crate::tls::Conn;

/// The token of the listener in a loop that accepts by itself (session tokens are slab
/// keys, far below it).
pub const LISTENER: Token = Token(usize::MAX - 1);

/// A listener owned by an event loop.
pub struct Listener {
    listener: TcpListener,
    /// Accepting paused for lack of descriptors until then.
    paused_until: Option<Instant>,
    /// The per-address connection rate, when configured (the loop's alone).
    rate: Option<ConnectionRate>,
}

impl Listener {
    /// Wraps the bound listener, with the connection `rate` limit if configured.
    pub fn new(listener: TcpListener, rate: Option<ConnectionRate>) -> Self {
        Listener {
            listener,
            paused_until: None,
            rate,
        }
    }

    /// Registers the listener with the loop's poll as [`LISTENER`].
    pub fn register(&mut self, registry: &Registry) -> io::Result<()> {
        registry.register(&mut self.listener, LISTENER, Interest::READABLE)
    }

    /// Stops listening: closing the listener refuses new connections at once.
    pub fn close(mut self, registry: &Registry) {
        let _ = registry.deregister(&mut self.listener);
    }

    /// When a pause for lack of descriptors ends, if one is on.
    pub fn paused_until(&self) -> Option<Instant> {
        self.paused_until
    }

    /// Accepts whatever waits (unless paused) into `fresh`. During a pause new connections
    /// still wake the loop; accepting resumes when the pause ends, not before.
    pub fn accept(
        &mut self,
        now: Instant,
        per_ip: Option<&PerIpLimit>,
        stats: &ServerStats,
        fresh: &mut Vec<Handoff>,
    ) -> io::Result<()> {
        if self.paused_until.is_some_and(|until| now < until) {
            return Ok(());
        }
        let rate = self.rate.as_mut();
        let outcome = accept_ready(&self.listener, per_ip, rate, now, stats, |handoff| {
            fresh.push(handoff);
            true
        })?;
        self.paused_until = (outcome == Accepted::Backoff).then(|| now + RESOURCE_BACKOFF);
        Ok(())
    }
}

/// The `single` model's reach: there is no other thread, so the loop is every room's
/// sequencer and keeps every history (history on).
pub struct Alone {
    history: Option<History>,
    /// Joins placed by a sync of their room (a cluster's follower history).
    ready: Vec<(RoomId, Waiter)>,
}

impl Alone {
    /// The reach, keeping `history` (`None`: history off).
    pub fn new(history: Option<History>) -> Self {
        Alone {
            history,
            ready: Vec::new(),
        }
    }
}

impl Reach for Alone {
    type Cell = Session<Conn>;

    fn defer_join(&mut self, room: &RoomId, key: SessionKey, generation: u64, ask: &Ask) -> bool {
        match &mut self.history {
            // A follower history answers once Redis's state of the room is here.
            Some(history) if !history.is_synced(room) => {
                let owner = ShardId(0);
                let ask = *ask;
                history.wait(
                    room,
                    Waiter {
                        owner,
                        key,
                        generation,
                        ask,
                    },
                );
                true
            }
            _ => false,
        }
    }

    fn follow(
        &mut self,
        room: &RoomId,
        batch: Batch,
        local: Option<&Room>,
        cx: &mut Ctx,
    ) -> (Vec<Arc<Outgoing>>, bool) {
        let Some(history) = &mut self.history else {
            return (Vec::new(), false);
        };
        let needs = local.map(Room::needs).unwrap_or_default();
        let followed = history.follow(room, batch, needs, cx.now);
        let ready = followed.ready.into_iter();
        self.ready
            .extend(ready.map(|waiter| (room.clone(), waiter)));
        (followed.live, followed.missed)
    }

    fn unfollow(&mut self, room: &RoomId) {
        if let Some(history) = &mut self.history {
            history.unfollow(room);
        }
    }

    fn take_ready(&mut self, into: &mut Vec<(RoomId, Waiter)>) {
        into.append(&mut self.ready);
    }

    fn take_to_sync(&mut self, into: &mut Vec<RoomId>) {
        if let Some(history) = &mut self.history {
            into.extend(history.take_to_sync());
        }
    }

    fn admit(
        &mut self,
        room: &RoomId,
        _: Joiner<()>,
        placing: Placing,
        local: &Room,
        now: Instant,
        welcome: impl FnOnce(u64, Option<&Start>),
    ) -> u64 {
        let start = placing.start(room, self.history.as_mut(), now);
        welcome(local.online(), start.as_ref());
        local.online()
    }

    fn dismiss(&mut self, room: &RoomId, _: SessionKey, local: Option<&Room>, now: Instant) -> u64 {
        if let Some(history) = &mut self.history {
            history.leave(room, now);
        }
        local.map_or(0, Room::online)
    }

    fn fan_out(
        &mut self,
        room: &RoomId,
        post: Post,
        local: Option<&Room>,
        cx: &mut Ctx,
    ) -> Option<Arc<Outgoing>> {
        let needs = local.map(Room::needs).unwrap_or_default();
        Some(match &mut self.history {
            Some(history) => history.append(room, post, needs, cx.now),
            None => Outgoing::new(post, needs),
        })
    }

    fn epoch(&self, room: &RoomId) -> Option<Epoch> {
        self.history.as_ref()?.epoch(room)
    }

    fn peek_history(&self, room: &RoomId, ask: &Ask, now: Instant) -> Option<Start> {
        self.history.as_ref()?.peek(room, ask, now)
    }

    fn sweep(&mut self, now: Instant) {
        if let Some(history) = &mut self.history {
            history.sweep(now);
        }
    }

    fn tell_presence(&mut self, _: &RoomId, _: Share, _: Option<&SharedFrame>, _: &mut Ctx) {}

    fn end_turn(&mut self, counters: &mut Counters) -> bool {
        if let Some(history) = &mut self.history {
            count_history(history, counters);
        }
        false
    }
}
