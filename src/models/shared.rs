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
//! **One order per room** (history on): the registry also holds every room's history. A
//! thread numbers a message and copies the room's member list under the registry lock, then
//! queues it for every member — its own thread's included — in the room's order: a room's
//! [`Turnstile`] lets each numbered message be queued only after the one before it, so every
//! member's queue takes the room's messages in the same order. Then each thread writes its
//! own members' sockets (it is handed the keys and woken), rather than the sender writing
//! them all: with one order, two senders would otherwise take turns on the same session
//! locks, one message at a time. A joining member is placed,
//! welcomed and added under the registry lock, so it gets every message numbered after its
//! place and none before. The price is this model's classic one: one room's messages are
//! queued one after the other, whichever thread numbered them (a thread may wait its turn).
//!
//! Lock order: the registry, then one session at a time, never the other way round; no
//! thread holds a session's lock while it fans out, nor the registry lock while it waits
//! for a turnstile.
//!
//! Bounds: a member is on the registry once per room it is in; the attention lists get at
//! most one entry per cut-off and per failed write of a session, and a cut-off session takes
//! no further broadcasts, so they hold at most about two entries per session.

use std::collections::HashMap;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Instant;

use mio::Waker;

use crate::chat::post::Needs;
use crate::chat::{Dialect, Outgoing, Post};
use crate::close::CloseReason;
use crate::control::Placed;
use crate::frame::SharedFrame;
use crate::history::{Ask, Batch, Epoch, History, Start, Waiter};
use crate::ids::{SessionKey, ShardId};
use crate::metrics::Counters;
use crate::models::{Joiner, Placing, Reach, count_history};
use crate::room::{Census, Room, RoomId, RoomTable, Share};
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
    /// Whose turn it is to queue the room's next message (history on).
    turnstile: Arc<Turnstile>,
}

/// Lets the threads that numbered a room's messages queue them in offset order: each waits
/// until the message before its own is queued everywhere. A short lock numbers a message
/// and copies the member list; the queueing itself happens outside the registry lock, one
/// room's messages one after the other, in the order of their tickets (so no thread can
/// barge ahead of another and starve it, as it could on the registry mutex).
#[derive(Default)]
struct Turnstile {
    /// The offset of the last message queued for every member.
    done: Mutex<u64>,
    turn: Condvar,
}

impl Turnstile {
    /// A turnstile for a room whose messages up to `done` need no queueing any more.
    fn after(done: u64) -> Arc<Turnstile> {
        Arc::new(Turnstile {
            done: Mutex::new(done),
            turn: Condvar::new(),
        })
    }

    /// Waits until every message before `offset` is queued.
    fn wait_for(&self, offset: u64) {
        let mut done = lock(&self.done);
        while *done + 1 < offset {
            done = self
                .turn
                .wait(done)
                .unwrap_or_else(std::sync::PoisonError::into_inner);
        }
    }

    /// Message `offset` is queued for every member: the next may go.
    fn finish(&self, offset: u64) {
        let mut done = lock(&self.done);
        *done = (*done).max(offset);
        self.turn.notify_all();
    }
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

/// What the registry lock guards.
#[derive(Default)]
struct State {
    rooms: HashMap<RoomId, SharedRoom>,
    /// Every room's history (`None`: history off).
    history: Option<History>,
}

/// What every thread of the model shares.
pub struct Registry {
    state: Mutex<State>,
    attention: Vec<Attention>,
    /// Per thread: its sessions another thread queued a room's message for (history on),
    /// for it to flush.
    queued: Vec<Mutex<Vec<SessionKey>>>,
    /// Per thread: its joins whose room a sync made ready (a cluster's follower history).
    ready: Vec<Mutex<Vec<(RoomId, Waiter)>>>,
}

impl Registry {
    /// A registry for threads with these wakers (thread `i` has `wakers[i]`), keeping
    /// `history` for every room.
    pub fn new(wakers: Vec<Arc<Waker>>, history: Option<History>) -> Arc<Self> {
        Arc::new(Registry {
            state: Mutex::new(State {
                rooms: HashMap::new(),
                history,
            }),
            queued: wakers.iter().map(|_| Mutex::new(Vec::new())).collect(),
            ready: wakers.iter().map(|_| Mutex::new(Vec::new())).collect(),
            attention: wakers
                .into_iter()
                .map(|w| (Mutex::new(Vec::new()), w))
                .collect(),
        })
    }

    /// Hands thread `owner` sessions of its that were queued a message, and wakes it (once,
    /// if its list was empty).
    fn hand_over(&self, owner: ShardId, keys: &mut Vec<SessionKey>) {
        let (Some(list), Some((_, waker))) =
            (self.queued.get(owner.0), self.attention.get(owner.0))
        else {
            return;
        };
        let mut list = lock(list);
        let was_empty = list.is_empty();
        list.append(keys);
        drop(list);
        if was_empty {
            let _ = waker.wake();
        }
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
    /// History is on: rooms have one order, made under the registry lock.
    ordered: bool,
    /// This thread's members that an ordered fan-out queued a message for.
    queued_here: Vec<SessionKey>,
    /// This thread's joins a sync it applied made ready.
    ready_here: Vec<(RoomId, Waiter)>,
    /// The registry's history follows Redis (a cluster with history on): joins may wait.
    follower: bool,
}

impl Shared {
    /// Thread `me`'s reach.
    pub fn new(me: ShardId, registry: Arc<Registry>) -> Self {
        let (ordered, follower) = {
            let state = lock(&registry.state);
            let history = state.history.as_ref();
            (history.is_some(), history.is_some_and(History::is_follower))
        };
        Shared {
            me,
            registry,
            ordered,
            queued_here: Vec::new(),
            ready_here: Vec::new(),
            follower,
        }
    }

    /// Which renderings `room` needs (its members on every thread), and its plain and v1
    /// members on other threads.
    fn others(&self, room: &RoomId) -> (Needs, Vec<Member>, Vec<Member>) {
        let state = lock(&self.registry.state);
        let Some(entry) = state.rooms.get(room) else {
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
            if let Some(queued) = self.queue(member, frame, cx) {
                delivered += u64::from(queued);
                self.write(member, cx);
            }
        }
        delivered
    }

    /// Queues `frame` for `member`: `None` if it takes no more messages, else whether it was
    /// queued (false: the member was cut off, and its owner told).
    fn queue(&self, member: &Member, frame: &SharedFrame, cx: &mut Ctx) -> Option<bool> {
        let delivery = lock(&member.session).push_broadcast(frame, cx);
        match delivery {
            Delivery::Refused => None,
            Delivery::Queued => Some(true),
            Delivery::SlowConsumer | Delivery::Failed => {
                self.registry.call_attention(member);
                Some(false)
            }
        }
    }

    /// Writes what waits for `member` to its socket; a socket that failed goes to its owner.
    fn write(&self, member: &Member, cx: &mut Ctx) {
        if lock(&member.session).flush(cx.counters) == Progress::Finished {
            self.registry.call_attention(member);
        }
    }

    /// History on: numbers `post` and copies the room's member list under the registry
    /// lock; then, in the room's order ([`Turnstile`]), queues it for every member. Each
    /// thread writes its own members' sockets (in its loop's flush, coalesced as in every
    /// model): a sender writing to other threads' members at once would hold their session
    /// locks while the next message's sender waits its turn on them.
    /// `want_place` (the server API's publish): also returns where the message was placed.
    fn fan_out_in_order(
        &mut self,
        room: &RoomId,
        post: Post,
        cx: &mut Ctx,
        want_place: bool,
    ) -> Option<Placed> {
        let (out, plain, v1, turnstile, placed) = {
            let mut state = lock(&self.registry.state);
            let State { rooms, history } = &mut *state;
            let history = history.as_mut()?;
            let entry = rooms.get(room);
            let needs = entry.map_or_else(Needs::default, SharedRoom::needs);
            let out = history.append(room, post, needs, cx.now);
            let placed = if want_place {
                history.epoch(room).map(|epoch| Placed {
                    epoch,
                    offset: out.offset,
                })
            } else {
                None
            };
            let Some(entry) = entry else {
                return placed; // nobody to queue it for: it is only kept
            };
            (
                out,
                entry.plain.clone(),
                entry.v1.clone(),
                entry.turnstile.clone(),
                placed,
            )
        };
        let mut theirs: Vec<Vec<SessionKey>> = vec![Vec::new(); self.registry.queued.len()];
        let mut delivered = 0;
        turnstile.wait_for(out.offset);
        for (members, dialect) in [(&plain, Dialect::Plain), (&v1, Dialect::V1)] {
            if members.is_empty() {
                continue;
            }
            let frame = out.frame(dialect);
            for member in members {
                if self.queue(member, &frame, cx) == Some(true) {
                    delivered += 1;
                    if member.owner == self.me {
                        self.queued_here.push(member.key);
                    } else if let Some(keys) = theirs.get_mut(member.owner.0) {
                        keys.push(member.key);
                    }
                }
            }
        }
        turnstile.finish(out.offset);
        for (owner, keys) in theirs.iter_mut().enumerate() {
            if !keys.is_empty() {
                self.registry.hand_over(ShardId(owner), keys);
            }
        }
        cx.counters
            .add(crate::metrics::Counter::Deliveries, delivered);
        placed
    }
}

fn cluster_others(local: Option<&Room>) -> u64 {
    local.map_or(0, |r| r.others)
}

impl Reach for Shared {
    type Cell = Locked<Conn>;

    const THREAD: &'static str = "worker";

    fn defer_join(&mut self, room: &RoomId, key: SessionKey, generation: u64, ask: &Ask) -> bool {
        if !self.follower {
            return false; // joins are placed under the registry lock, at once
        }
        let mut state = lock(&self.registry.state);
        match &mut state.history {
            // A follower history answers once Redis's state of the room is here.
            Some(history) if !history.is_synced(room) => {
                let (owner, ask) = (self.me, *ask);
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

    /// Only the room's home thread applies its batches (the bridge sends them there), one
    /// after the other: the room's order needs no turnstile here. Other threads' members
    /// get the live messages queued under their locks (their owners flush them), and are
    /// closed the same way when they missed messages, before anything later is queued.
    fn follow(
        &mut self,
        room: &RoomId,
        batch: Batch,
        _: Option<&Room>,
        cx: &mut Ctx,
    ) -> (Vec<Arc<Outgoing>>, bool) {
        let (followed, plain, v1) = {
            let mut state = lock(&self.registry.state);
            let State { rooms, history } = &mut *state;
            let Some(history) = history.as_mut() else {
                return (Vec::new(), false);
            };
            let entry = rooms.get(room);
            let needs = entry.map_or_else(Needs::default, SharedRoom::needs);
            let followed = history.follow(room, batch, needs, cx.now);
            let (plain, v1) =
                entry.map_or_else(Default::default, |e| (e.plain.clone(), e.v1.clone()));
            (followed, plain, v1)
        };
        let theirs = |list: &[Member]| -> Vec<Member> {
            list.iter()
                .filter(|m| m.owner != self.me)
                .cloned()
                .collect()
        };
        let (their_plain, their_v1) = (theirs(&plain), theirs(&v1));
        if followed.missed {
            for member in their_plain.iter().chain(&their_v1) {
                lock(&member.session).close_for(CloseReason::MissedMessages, cx);
                self.registry.call_attention(member);
            }
        }
        let mut handed: Vec<Vec<SessionKey>> = vec![Vec::new(); self.registry.queued.len()];
        let mut delivered = 0;
        for out in &followed.live {
            for (members, dialect) in [(&their_plain, Dialect::Plain), (&their_v1, Dialect::V1)] {
                if members.is_empty() {
                    continue;
                }
                let frame = out.frame(dialect);
                for member in members {
                    if self.queue(member, &frame, cx) == Some(true) {
                        delivered += 1;
                        if let Some(keys) = handed.get_mut(member.owner.0) {
                            keys.push(member.key);
                        }
                    }
                }
            }
        }
        for (owner, keys) in handed.iter_mut().enumerate() {
            if !keys.is_empty() {
                self.registry.hand_over(ShardId(owner), keys);
            }
        }
        cx.counters
            .add(crate::metrics::Counter::Deliveries, delivered);
        for waiter in followed.ready {
            if waiter.owner == self.me {
                self.ready_here.push((room.clone(), waiter));
            } else if let Some((list, waker)) = self
                .registry
                .ready
                .get(waiter.owner.0)
                .zip(self.registry.attention.get(waiter.owner.0))
            {
                lock(list).push((room.clone(), waiter));
                let _ = waker.1.wake();
            }
        }
        // This thread's own members: the loop delivers (and closes) them.
        (followed.live, followed.missed)
    }

    fn unfollow(&mut self, room: &RoomId) {
        if let Some(history) = &mut lock(&self.registry.state).history {
            history.unfollow(room);
        }
    }

    fn take_ready(&mut self, into: &mut Vec<(RoomId, Waiter)>) {
        into.append(&mut self.ready_here);
        if let Some(list) = self.registry.ready.get(self.me.0) {
            into.append(&mut lock(list));
        }
    }

    fn take_to_sync(&mut self, into: &mut Vec<RoomId>) {
        if let Some(history) = &mut lock(&self.registry.state).history {
            into.extend(history.take_to_sync());
        }
    }

    fn admit(
        &mut self,
        room: &RoomId,
        joiner: Joiner<Locked<Conn>>,
        placing: Placing,
        local: &Room,
        now: Instant,
        welcome: impl FnOnce(u64, Option<&Start>),
    ) -> u64 {
        // The welcome is queued under the registry lock, so that no other thread's broadcast
        // can reach the member before it (and, history on, none numbered before its place).
        let mut state = lock(&self.registry.state);
        let start = placing.start(room, state.history.as_mut(), now);
        let entry = state
            .rooms
            .entry(room.clone())
            .or_insert_with(|| SharedRoom {
                turnstile: Turnstile::after(start.as_ref().map_or(0, |s| s.offset)),
                ..SharedRoom::default()
            });
        entry.list_mut(joiner.v1).push(Member {
            session: joiner.handle,
            owner: self.me,
            key: joiner.key,
            generation: joiner.generation,
        });
        let online = entry.online() + local.others;
        welcome(online, start.as_ref());
        online
    }

    fn dismiss(
        &mut self,
        room: &RoomId,
        key: SessionKey,
        local: Option<&Room>,
        now: Instant,
    ) -> u64 {
        let mut state = lock(&self.registry.state);
        if let Some(history) = &mut state.history {
            history.leave(room, now);
        }
        let rooms = &mut state.rooms;
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

    /// The registry sees every room whole: thread 0 counts them all, the others none.
    fn census(&self, _: &RoomTable, me: ShardId, _: usize) -> Census {
        let mut census = Census::default();
        if me.0 == 0 {
            let state = lock(&self.registry.state);
            for room in state.rooms.values() {
                if room.online() > 0 {
                    census.count(room.online());
                }
            }
        }
        census
    }

    fn online(&self, room: &RoomId, local: Option<&Room>) -> u64 {
        let state = lock(&self.registry.state);
        state.rooms.get(room).map_or(0, SharedRoom::online) + cluster_others(local)
    }

    fn needs(&self, room: &RoomId, _: Option<&Room>) -> Needs {
        let state = lock(&self.registry.state);
        state
            .rooms
            .get(room)
            .map_or_else(Needs::default, SharedRoom::needs)
    }

    fn fan_out(
        &mut self,
        room: &RoomId,
        post: Post,
        _: Option<&Room>,
        cx: &mut Ctx,
    ) -> Option<Arc<Outgoing>> {
        if self.ordered {
            self.fan_out_in_order(room, post, cx, false);
            return None;
        }
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
        Some(out)
    }

    fn fan_out_placed(
        &mut self,
        room: &RoomId,
        post: Post,
        local: Option<&Room>,
        cx: &mut Ctx,
    ) -> (Option<Arc<Outgoing>>, Option<Placed>) {
        if self.ordered {
            return (None, self.fan_out_in_order(room, post, cx, true));
        }
        (self.fan_out(room, post, local, cx), None)
    }

    fn epoch(&self, room: &RoomId) -> Option<Epoch> {
        lock(&self.registry.state).history.as_ref()?.epoch(room)
    }

    fn peek_history(&self, room: &RoomId, ask: &Ask, now: Instant) -> Option<Start> {
        lock(&self.registry.state)
            .history
            .as_ref()?
            .peek(room, ask, now)
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

    fn take_queued(&mut self, into: &mut Vec<SessionKey>) {
        into.append(&mut self.queued_here);
        if let Some(list) = self.registry.queued.get(self.me.0) {
            into.append(&mut lock(list));
        }
    }

    fn sweep(&mut self, now: Instant) {
        if let Some(history) = &mut lock(&self.registry.state).history {
            history.sweep(now);
        }
    }

    fn end_turn(&mut self, counters: &mut Counters) -> bool {
        if self.ordered
            && let Some(history) = &mut lock(&self.registry.state).history
        {
            count_history(history, counters);
        }
        false
    }
}
