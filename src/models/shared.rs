//! The `shared` model's reach: one registry of every room's members behind a lock, and the
//! sending thread writes to every member's socket itself.
//!
//! Like Beast's `chat-multi` (one `io_context`, N threads, a mutex-guarded `shared_state`),
//! and unlike the shards: every session sits behind its own mutex ([`Locked`]), every room's
//! member list behind the one registry mutex, and a thread that reads a message queues and
//! writes it to the members of other threads at once. Its own members get it through the
//! loop like in every model. A member cut off (or failing) under another thread's write is
//! put on its owner's attention list, and the owner is woken to settle it.
//!
//! Lock order: the registry, then one session at a time, never the other way round; no
//! thread holds a session's lock while it fans out.
//!
//! Bounds: a member is on the registry once per room it is in; the attention lists get at
//! most one entry per cut-off and per failed write of a session, and a cut-off session takes
//! no further broadcasts, so they hold at most about two entries per session.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use mio::Waker;

use crate::chat::post::Needs;
use crate::chat::{Dialect, Outgoing, Post};
use crate::frame::SharedFrame;
use crate::ids::{SessionKey, ShardId};
use crate::models::{Joiner, Reach};
use crate::room::{Room, RoomId, Share};
use crate::session::cell::{Locked, lock};
use crate::session::{Ctx, Delivery, Progress};
use crate::tls::Conn;

/// A member of a room, as any thread may reach it.
#[derive(Clone)]
struct Member {
    session: Locked<Conn>,
    owner: ShardId,
    key: SessionKey,
    generation: u64,
}

/// A room's members on every thread, plain and v1 apart (they get different renderings).
#[derive(Default)]
struct SharedRoom {
    plain: Vec<Member>,
    v1: Vec<Member>,
}

impl SharedRoom {
    fn list_mut(&mut self, v1: bool) -> &mut Vec<Member> {
        if v1 { &mut self.v1 } else { &mut self.plain }
    }

    fn online(&self) -> u64 {
        (self.plain.len() + self.v1.len()) as u64
    }

    fn needs(&self) -> Needs {
        Needs {
            plain: !self.plain.is_empty(),
            v1: !self.v1.is_empty(),
        }
    }
}

/// One thread's list of sessions another thread changed, and its waker.
type Attention = (Mutex<Vec<(SessionKey, u64)>>, Arc<Waker>);

/// What every thread of the model shares.
pub struct Registry {
    rooms: Mutex<HashMap<RoomId, SharedRoom>>,
    attention: Vec<Attention>,
}

impl Registry {
    /// A registry for threads with these wakers (thread `i` has `wakers[i]`).
    pub fn new(wakers: Vec<Arc<Waker>>) -> Arc<Self> {
        Arc::new(Registry {
            rooms: Mutex::new(HashMap::new()),
            attention: wakers
                .into_iter()
                .map(|w| (Mutex::new(Vec::new()), w))
                .collect(),
        })
    }

    fn call_attention(&self, member: &Member) {
        if let Some((list, waker)) = self.attention.get(member.owner.0) {
            lock(list).push((member.key, member.generation));
            let _ = waker.wake();
        }
    }
}

/// One thread's reach over the registry.
pub struct Shared {
    me: ShardId,
    registry: Arc<Registry>,
}

impl Shared {
    /// Thread `me`'s reach.
    pub fn new(me: ShardId, registry: Arc<Registry>) -> Self {
        Shared { me, registry }
    }

    /// Which renderings `room` needs (its members on every thread), and its plain and v1
    /// members on other threads.
    fn others(&self, room: &RoomId) -> (Needs, Vec<Member>, Vec<Member>) {
        let rooms = lock(&self.registry.rooms);
        let Some(entry) = rooms.get(room) else {
            return Default::default();
        };
        let theirs = |list: &[Member]| {
            list.iter()
                .filter(|m| m.owner != self.me)
                .cloned()
                .collect::<Vec<_>>()
        };
        (entry.needs(), theirs(&entry.plain), theirs(&entry.v1))
    }

    /// Queues `frame` for each of `members` and writes it to their sockets; returns how many
    /// took it. Members this cuts off, or whose socket failed, go to their owner's attention.
    fn deliver(&self, members: &[Member], frame: &SharedFrame, cx: &mut Ctx) -> u64 {
        let mut delivered = 0;
        for member in members {
            let mut session = lock(&member.session);
            let delivery = session.push_broadcast(frame, cx);
            if delivery == Delivery::Refused {
                continue;
            }
            delivered += u64::from(delivery == Delivery::Queued);
            let flushed = session.flush(cx.counters);
            drop(session);
            let ended = matches!(delivery, Delivery::SlowConsumer | Delivery::Failed);
            if ended || flushed == Progress::Finished {
                self.registry.call_attention(member);
            }
        }
        delivered
    }
}

fn cluster_others(local: Option<&Room>) -> u64 {
    local.map_or(0, |r| r.others)
}

impl Reach for Shared {
    type Cell = Locked<Conn>;

    const THREAD: &'static str = "worker";

    fn admit(
        &mut self,
        room: &RoomId,
        joiner: Joiner<Locked<Conn>>,
        local: &Room,
        welcome: impl FnOnce(u64),
    ) -> u64 {
        // The welcome is queued under the registry lock, so that no other thread's broadcast
        // can reach the member before it.
        let mut rooms = lock(&self.registry.rooms);
        let entry = rooms.entry(room.clone()).or_default();
        entry.list_mut(joiner.v1).push(Member {
            session: joiner.handle,
            owner: self.me,
            key: joiner.key,
            generation: joiner.generation,
        });
        let online = entry.online() + local.others;
        welcome(online);
        online
    }

    fn dismiss(&mut self, room: &RoomId, key: SessionKey, local: Option<&Room>) -> u64 {
        let mut rooms = lock(&self.registry.rooms);
        let Some(entry) = rooms.get_mut(room) else {
            return cluster_others(local);
        };
        let mine = |m: &Member| m.owner == self.me && m.key == key;
        entry.plain.retain(|m| !mine(m));
        entry.v1.retain(|m| !mine(m));
        let online = entry.online();
        if online == 0 {
            rooms.remove(room);
        }
        online + cluster_others(local)
    }

    fn online(&self, room: &RoomId, local: Option<&Room>) -> u64 {
        let rooms = lock(&self.registry.rooms);
        rooms.get(room).map_or(0, SharedRoom::online) + cluster_others(local)
    }

    fn needs(&self, room: &RoomId, _: Option<&Room>) -> Needs {
        let rooms = lock(&self.registry.rooms);
        rooms
            .get(room)
            .map_or_else(Needs::default, SharedRoom::needs)
    }

    fn fan_out(&mut self, room: &RoomId, post: Post, _: &Room, cx: &mut Ctx) -> Arc<Outgoing> {
        let (needs, plain, v1) = self.others(room);
        let out = Outgoing::new(post, needs);
        let mut delivered = 0;
        if !plain.is_empty() {
            delivered += self.deliver(&plain, &out.frame(Dialect::Plain), cx);
        }
        if !v1.is_empty() {
            delivered += self.deliver(&v1, &out.frame(Dialect::V1), cx);
        }
        cx.counters
            .add(crate::metrics::Counter::Deliveries, delivered);
        out
    }

    fn tell_presence(
        &mut self,
        room: &RoomId,
        _: Share,
        notice: Option<&SharedFrame>,
        cx: &mut Ctx,
    ) {
        if let Some(notice) = notice {
            let (_, _, v1) = self.others(room);
            self.deliver(&v1, notice, cx);
        }
    }

    fn take_attention(&mut self, into: &mut Vec<(SessionKey, u64)>) {
        if let Some((list, _)) = self.registry.attention.get(self.me.0) {
            into.append(&mut lock(list));
        }
    }
}
