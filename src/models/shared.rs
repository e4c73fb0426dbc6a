//! The `shared` model: N threads over one registry of rooms and sessions guarded by locks.
//!
//! Like Beast's `chat-multi` (one `io_context`, N threads, a mutex-guarded `shared_state`),
//! and unlike the shards: every session sits behind its own mutex, every room's member list
//! behind one registry mutex, and the thread that reads a message writes it to every member's
//! socket itself. Each thread still has its own `mio::Poll` for the connections the acceptor
//! dealt it (reads, timers, writes that could not finish); other threads reach it only
//! through its attention list and waker.
//!
//! Lock order: the registry, then one session at a time, never the other way round, and no
//! thread holds its own session's lock while fanning out.

use std::collections::HashMap;
use std::io;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use crossbeam_channel::Receiver;
use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token, Waker};
use slab::Slab;

use crate::chat::envelope::{self, Change};
use crate::chat::post::Needs;
use crate::chat::{Dialect, Outgoing, Post, SessionId};
use crate::mesh::SharedFrame;
use crate::metrics::{Counter, Counters};
use crate::room::RoomId;
use crate::session::{Delivery, Event, Progress, Session};
use crate::shard::timers::Timers;
use crate::shard::{Handoff, LoopCommon, WAKER};
use crate::tls::Conn;

/// Size of each thread's read buffer.
const SCRATCH_SIZE: usize = 64 * 1024;

type SharedSession = Arc<Mutex<Session<Conn>>>;

/// Locks, carrying on after a panic elsewhere (the data is still consistent: every critical
/// section here only pushes, pops or swaps).
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A member of a room, as any thread may reach it.
#[derive(Clone)]
struct Member {
    session: SharedSession,
    owner: usize,
    key: usize,
    generation: u64,
}

/// One thread's list of `(session key, generation)` to look at, and its waker.
type Attention = (Mutex<Vec<(usize, u64)>>, Arc<Waker>);

/// A room's members, plain and v1 apart (they get different renderings).
#[derive(Default)]
struct SharedRoom {
    plain: Vec<Member>,
    v1: Vec<Member>,
}

impl SharedRoom {
    fn list_mut(&mut self, dialect: Dialect) -> &mut Vec<Member> {
        match dialect {
            Dialect::Plain => &mut self.plain,
            Dialect::V1 => &mut self.v1,
        }
    }

    fn online(&self) -> u64 {
        (self.plain.len() + self.v1.len()) as u64
    }
}

/// What every thread shares.
pub struct Registry {
    rooms: Mutex<HashMap<RoomId, SharedRoom>>,
    /// Per thread: sessions another thread changed (a slow-consumer close, a failed write)
    /// that the owner must look at, and the owner's waker.
    attention: Vec<Attention>,
}

impl Registry {
    /// A registry for threads with these wakers.
    pub fn new(wakers: Vec<Arc<Waker>>) -> Self {
        Registry {
            rooms: Mutex::new(HashMap::new()),
            attention: wakers
                .into_iter()
                .map(|w| (Mutex::new(Vec::new()), w))
                .collect(),
        }
    }

    fn call_attention(&self, member: &Member) {
        if let Some((list, waker)) = self.attention.get(member.owner) {
            lock(list).push((member.key, member.generation));
            let _ = waker.wake();
        }
    }
}

/// Everything one worker thread is started with.
pub struct WorkerParts {
    /// The thread's index.
    pub id: usize,
    /// Its poll (its waker is registered as [`WAKER`]).
    pub poll: Poll,
    /// Connections from the acceptor.
    pub connections: Receiver<Handoff>,
    /// The shared registry.
    pub registry: Arc<Registry>,
    /// What every event-loop thread is given.
    pub common: LoopCommon,
}

/// One worker thread of the shared model.
pub struct Worker {
    parts: WorkerParts,
    sessions: Slab<SharedSession>,
    generations: Slab<u64>,
    websockets: usize,
    timers: Timers,
    next_generation: u64,
    scratch: Vec<u8>,
    counters: Counters,
    flush_list: Vec<usize>,
    /// Sessions that stopped for fairness and read again next turn.
    ready: Vec<usize>,
    finished: Vec<usize>,
    /// Members to look at for leaving their room, and whether that list is being worked.
    departing: Vec<(usize, bool)>,
    settling: bool,
    drain_until: Option<Instant>,
    now: Instant,
}

impl Worker {
    /// A worker from its parts.
    pub fn new(parts: WorkerParts) -> Self {
        Worker {
            parts,
            sessions: Slab::new(),
            generations: Slab::new(),
            websockets: 0,
            timers: Timers::default(),
            next_generation: 0,
            scratch: vec![0; SCRATCH_SIZE],
            counters: Counters::default(),
            flush_list: Vec::new(),
            ready: Vec::new(),
            finished: Vec::new(),
            departing: Vec::new(),
            settling: false,
            drain_until: None,
            now: Instant::now(),
        }
    }

    /// Runs until shutdown has drained its sessions, or the acceptor is gone and none is left.
    pub fn run(mut self) -> io::Result<()> {
        let mut events = Events::with_capacity(1024);
        loop {
            let timeout = self.poll_timeout();
            match self.parts.poll.poll(&mut events, timeout) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
            self.now = Instant::now();
            self.counters.bump(Counter::LoopTurns);
            let acceptor_alive = self.adopt_connections();
            if self.drain_until.is_none() && self.parts.common.stats.is_draining() {
                self.begin_drain();
            }
            self.attend();
            let resume = std::mem::take(&mut self.ready);
            for event in events.iter() {
                let key = event.token().0;
                if event.token() == WAKER {
                    continue;
                }
                let readable = event.is_readable() || event.is_read_closed() || event.is_error();
                if readable && !resume.contains(&key) {
                    self.read_session(key);
                }
                if event.is_writable() {
                    self.flush_list.push(key);
                }
            }
            for key in resume {
                self.read_session(key);
            }
            self.expire_timers();
            for key in std::mem::take(&mut self.flush_list) {
                self.flush(key);
            }
            self.reap_finished();
            self.parts
                .common
                .stats
                .shard(self.parts.id)
                .publish(&self.counters);
            let done = match self.drain_until {
                Some(until) => self.sessions.is_empty() || self.now >= until,
                None => !acceptor_alive && self.sessions.is_empty(),
            };
            if done {
                return Ok(());
            }
        }
    }

    fn poll_timeout(&self) -> Option<Duration> {
        if !self.ready.is_empty() {
            return Some(Duration::ZERO);
        }
        let now = Instant::now();
        let mut timeout = self.timers.next_in(now);
        if let Some(until) = self.drain_until {
            let left = until.saturating_duration_since(now);
            timeout = Some(timeout.map_or(left, |t| t.min(left)));
        }
        timeout.map(|d| d + Duration::from_micros(999))
    }

    fn adopt_connections(&mut self) -> bool {
        loop {
            match self.parts.connections.try_recv() {
                Ok(handoff) => self.adopt(handoff),
                Err(crossbeam_channel::TryRecvError::Empty) => return true,
                Err(crossbeam_channel::TryRecvError::Disconnected) => return false,
            }
        }
    }

    fn adopt(&mut self, handoff: Handoff) {
        let release = |parts: &WorkerParts| {
            if let (Some(limit), Some(ip)) = (&parts.common.per_ip, handoff.counted_ip) {
                limit.release(ip);
            }
        };
        if self.drain_until.is_some() {
            // Accepted just before shutdown: refuse it like the closed listener would.
            release(&self.parts);
            return;
        }
        let stream = TcpStream::from_std(handoff.stream);
        let conn = match Conn::new(stream, self.parts.common.tls.as_ref()) {
            Ok(conn) => conn,
            Err(e) => {
                tracing::warn!("worker {}: cannot start TLS: {e}", self.parts.id);
                release(&self.parts);
                return;
            }
        };
        let mut session = Session::new(
            conn,
            handoff.counted_ip,
            &self.parts.common.config,
            self.now,
        );
        let key = self.sessions.vacant_key();
        let registered = self.parts.poll.registry().register(
            session.stream_mut().socket_mut(),
            Token(key),
            Interest::READABLE | Interest::WRITABLE,
        );
        if let Err(e) = registered {
            tracing::warn!(
                "worker {}: cannot register a connection: {e}",
                self.parts.id
            );
            release(&self.parts);
            return;
        }
        self.next_generation += 1;
        session.generation = self.next_generation;
        session.id = SessionId {
            worker: self.parts.id as u16,
            seq: self.next_generation,
        };
        self.sessions.insert(Arc::new(Mutex::new(session)));
        self.generations.insert(self.next_generation);
        self.arm_timer(key);
        self.publish_gauges();
    }

    fn begin_drain(&mut self) {
        self.drain_until = Some(self.now + self.parts.common.config.drain_timeout);
        let keys: Vec<usize> = self.sessions.iter().map(|(k, _)| k).collect();
        for key in keys {
            let progress = {
                let mut cx = self.parts.common.ctx(self.now, &mut self.counters);
                lock(&self.sessions[key]).begin_shutdown(&mut cx)
            };
            if progress == Progress::Finished {
                self.finished.push(key);
            }
            self.flush_list.push(key);
            self.arm_timer(key);
            self.depart_if_gone(key);
        }
    }

    /// Looks at sessions other threads changed.
    fn attend(&mut self) {
        let flagged = std::mem::take(&mut *lock(&self.parts.registry.attention[self.parts.id].0));
        for (key, generation) in flagged {
            if self.generations.get(key) == Some(&generation) {
                self.flush_list.push(key);
                self.arm_timer(key);
                self.depart_if_gone(key);
            }
        }
    }

    fn read_session(&mut self, key: usize) {
        // A session that stopped for its budget reads again next turn, after this turn's
        // flush, as in the sharded model.
        if self.read_once(key) == Progress::MoreReady && !self.ready.contains(&key) {
            self.ready.push(key);
        }
        self.arm_timer(key);
        self.depart_if_gone(key);
    }

    fn read_once(&mut self, key: usize) -> Progress {
        let Some(session) = self.sessions.get(key).cloned() else {
            return Progress::Idle;
        };
        let mut events = Vec::new();
        let (progress, room) = {
            let mut cx = self.parts.common.ctx(self.now, &mut self.counters);
            let mut s = lock(&session);
            let progress = s.on_readable(&mut self.scratch, &mut cx, &mut events);
            if s.has_output() {
                self.flush_list.push(key);
            }
            (progress, s.room().cloned())
        };
        // Our own lock is released: fanning out locks each member in turn, us included.
        for event in events {
            match event {
                Event::Upgraded => {
                    self.websockets += 1;
                    self.publish_gauges();
                }
                Event::Joined(room) => self.join(key, &session, room),
                Event::Message(post) => {
                    if let Some(room) = &room {
                        self.fan_out(room, post);
                    }
                }
            }
        }
        if progress == Progress::Finished {
            self.finished.push(key);
        }
        progress
    }

    fn member(&self, key: usize, session: &SharedSession) -> Member {
        Member {
            session: session.clone(),
            owner: self.parts.id,
            key,
            generation: self.generations.get(key).copied().unwrap_or(0),
        }
    }

    /// The session joins `room`: it is welcomed (v1) and the room's v1 members are told.
    fn join(&mut self, key: usize, session: &SharedSession, room: RoomId) {
        let dialect = lock(session).dialect();
        let member = self.member(key, session);
        // The welcome is queued under the registry lock (registry, then session: the lock
        // order), so that no broadcast from another thread can reach the client before it.
        let (online, v1_members, id, nick) = {
            let mut rooms = lock(&self.parts.registry.rooms);
            let entry = rooms.entry(room.clone()).or_default();
            entry.list_mut(dialect).push(member);
            let online = entry.online();
            let mut s = lock(session);
            s.room_slot = Some(0); // a member (the registry's lists need no slots)
            let id = s.id_text(&self.parts.common.config);
            let nick = s.nick().map(|n| n.as_str().to_owned());
            if dialect == Dialect::V1 {
                let nick = nick.as_deref().unwrap_or("");
                s.push_own(envelope::welcome(&id, room.as_str(), nick, online));
            }
            (online, entry.v1.clone(), id, nick)
        };
        self.flush_list.push(key);
        self.announce(
            Change::Join,
            &id,
            nick.as_deref(),
            online,
            &v1_members,
            Some(session),
        );
    }

    /// A member that stopped taking messages (closing, cut off, gone) leaves its room. Its
    /// leave notice may cut off others, who leave in turn (a work list, not recursion).
    fn depart_if_gone(&mut self, key: usize) {
        self.depart(key, false);
    }

    /// Takes `key` out of its room now, or — with `ended` false — only if it stopped taking
    /// messages.
    fn depart(&mut self, key: usize, ended: bool) {
        self.departing.push((key, ended));
        if self.settling {
            return;
        }
        self.settling = true;
        while let Some((key, ended)) = self.departing.pop() {
            self.depart_now(key, ended);
        }
        self.settling = false;
    }

    fn depart_now(&mut self, key: usize, ended: bool) {
        let Some(session) = self.sessions.get(key).cloned() else {
            return;
        };
        let (room, id, nick) = {
            let mut s = lock(&session);
            if s.room_slot.is_none() || (s.receives() && !ended) {
                return;
            }
            s.room_slot = None;
            let id = s.id_text(&self.parts.common.config);
            (
                s.room().cloned(),
                id,
                s.nick().map(|n| n.as_str().to_owned()),
            )
        };
        let Some(room) = room else {
            return;
        };
        let (online, v1_members) = {
            let mut rooms = lock(&self.parts.registry.rooms);
            let Some(entry) = rooms.get_mut(&room) else {
                return;
            };
            entry.plain.retain(|m| !Arc::ptr_eq(&m.session, &session));
            entry.v1.retain(|m| !Arc::ptr_eq(&m.session, &session));
            let result = (entry.online(), entry.v1.clone());
            if entry.online() == 0 {
                rooms.remove(&room);
            }
            result
        };
        self.announce(
            Change::Leave,
            &id,
            nick.as_deref(),
            online,
            &v1_members,
            None,
        );
    }

    /// Sends a `join`/`leave` notice to `v1_members` (but `except`), unless presence is off or
    /// the server is shutting down.
    fn announce(
        &mut self,
        change: Change,
        id: &str,
        nick: Option<&str>,
        online: u64,
        v1_members: &[Member],
        except: Option<&SharedSession>,
    ) {
        let others = v1_members
            .iter()
            .any(|m| except.is_none_or(|e| !Arc::ptr_eq(&m.session, e)));
        if !self.parts.common.config.presence || self.drain_until.is_some() || !others {
            return;
        }
        self.counters.bump(Counter::PresenceNotices);
        let notice = envelope::presence(change, id, nick, online);
        self.deliver(v1_members, &notice, except);
    }

    /// The sending thread writes to every member itself (the point of this model).
    fn fan_out(&mut self, room: &RoomId, post: Post) {
        let (plain, v1) = match lock(&self.parts.registry.rooms).get(room) {
            Some(entry) => (entry.plain.clone(), entry.v1.clone()),
            None => return,
        };
        let needs = Needs {
            plain: !plain.is_empty(),
            v1: !v1.is_empty(),
        };
        let out = Outgoing::new(post, needs);
        let mut delivered = 0;
        if needs.plain {
            delivered += self.deliver(&plain, &out.frame(Dialect::Plain), None);
        }
        if needs.v1 {
            delivered += self.deliver(&v1, &out.frame(Dialect::V1), None);
        }
        self.counters.add(Counter::Deliveries, delivered);
    }

    /// Queues and writes `frame` to each of `members` (but `except`); returns how many took
    /// it. Members this cuts off are looked at by their owner.
    fn deliver(
        &mut self,
        members: &[Member],
        frame: &SharedFrame,
        except: Option<&SharedSession>,
    ) -> u64 {
        let mut delivered = 0;
        for member in members {
            if except.is_some_and(|e| Arc::ptr_eq(&member.session, e)) {
                continue;
            }
            let mut cx = self.parts.common.ctx(self.now, &mut self.counters);
            let mut s = lock(&member.session);
            let delivery = s.push_broadcast(frame, &mut cx);
            if delivery == Delivery::Refused {
                continue;
            }
            delivered += u64::from(delivery == Delivery::Queued);
            let flushed = s.flush(cx.counters);
            drop(s);
            if delivery == Delivery::SlowConsumer || flushed == Progress::Finished {
                if member.owner == self.parts.id {
                    self.flush_list.push(member.key);
                    self.arm_timer(member.key);
                    self.departing.push((member.key, false));
                } else {
                    self.parts.registry.call_attention(member);
                }
            }
        }
        delivered
    }

    fn flush(&mut self, key: usize) {
        let Some(session) = self.sessions.get(key) else {
            return;
        };
        if lock(session).flush(&mut self.counters) == Progress::Finished {
            self.finished.push(key);
        }
    }

    fn expire_timers(&mut self) {
        let now = Instant::now();
        while let Some((key, generation)) = self.timers.pop_due(now) {
            let Some(session) = self.sessions.get(key).cloned() else {
                continue;
            };
            let mut s = lock(&session);
            if s.generation != generation {
                continue;
            }
            s.timer_armed = None;
            let mut cx = self.parts.common.ctx(now, &mut self.counters);
            if s.on_deadline(&mut cx) == Progress::Finished {
                self.finished.push(key);
                continue;
            }
            let has_output = s.has_output();
            drop(s);
            if has_output {
                self.flush_list.push(key);
            }
            self.arm_timer(key);
            self.depart_if_gone(key);
        }
    }

    fn arm_timer(&mut self, key: usize) {
        let Some(session) = self.sessions.get(key) else {
            return;
        };
        let mut s = lock(session);
        if let Some(when) = s.deadline()
            && s.timer_armed.is_none_or(|armed| when < armed)
        {
            s.timer_armed = Some(when);
            self.timers.arm(when, key, s.generation);
        }
    }

    fn reap_finished(&mut self) {
        if self.finished.is_empty() {
            return;
        }
        for key in std::mem::take(&mut self.finished) {
            self.depart(key, true);
            let Some(session) = self.sessions.try_remove(key) else {
                continue;
            };
            self.ready.retain(|k| *k != key);
            self.generations.try_remove(key);
            let (room, ip) = {
                let mut s = lock(&session);
                let _ = self
                    .parts
                    .poll
                    .registry()
                    .deregister(s.stream_mut().socket_mut());
                (s.room().cloned(), s.peer_ip())
            };
            if room.is_some() {
                // It held a WebSocket place since its upgrade.
                self.websockets -= 1;
                self.parts.common.site.release();
            }
            if let (Some(limit), Some(ip)) = (&self.parts.common.per_ip, ip) {
                limit.release(ip);
            }
        }
        self.publish_gauges();
    }

    fn publish_gauges(&self) {
        self.parts
            .common
            .stats
            .shard(self.parts.id)
            .set_connections(self.sessions.len(), self.websockets);
    }
}
