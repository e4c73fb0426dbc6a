//! A shard: one thread, one `mio::Poll`, one slab of sessions, one room table.
//!
//! Each loop turn runs the same phases, in this order:
//!
//! 1. **poll** for readiness (the timeout comes from the next deadline, or zero if work waits);
//! 2. **adopt** connections the acceptor handed over;
//! 3. **drain the inbox** of messages from other shards — before reading sockets, so that an
//!    presence notice sent before a client's `101` is applied before that client's peers'
//!    messages are routed (no lost first message across shards);
//! 4. **dispatch** readiness events to sessions; complete messages fan out at once;
//! 5. **resume** sessions that stopped for fairness last turn;
//! 6. **expire** deadlines (pings are queued here, so they leave in this turn's flush);
//! 7. **flush** every session with queued output: one `writev` each;
//! 8. **reap** finished sessions (their rooms may lose their last local member);
//! 9. **send** to other shards: retry full inboxes, wake each peer once (last, so that what
//!    reaping said goes out this turn too); publish the counters.
//!
//! On shutdown the shard sends every session a close (1001) and keeps turning until all are
//! gone or the drain deadline passes.
//!
//! Nothing here locks on the message path. Only the inbox receiver, peer senders and wakers,
//! the published stats and immutable frames cross threads.

pub(crate) mod timers;

use std::io;
use std::net::{IpAddr, TcpStream as StdTcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::Receiver;
use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};
use slab::Slab;

use crate::acceptor::{Accepted, RESOURCE_BACKOFF, accept_ready};
use crate::chat::envelope::{self, Change};
use crate::chat::{Dialect, Outgoing, Post, SessionId};
use crate::cluster::{ClusterLink, ClusterNews, MemberChange};
use crate::config::Config;
use crate::http::Site;
use crate::limits::PerIpLimit;
use crate::mesh::{MeshLinks, ShardId, ShardMsg, SharedFrame, drain_inbox};
use crate::metrics::{Counter, Counters};
use crate::room::{RoomId, RoomTable, SessionKey, Share};
use crate::session::{Ctx, Delivery, Event, Progress, Session};
use crate::stats::ServerStats;
use crate::tls::Conn;
use timers::Timers;

/// The token of the shard's waker (session tokens are slab keys, far below it).
pub const WAKER: Token = Token(usize::MAX);

/// The token of the listener, in the `single` model where the shard accepts by itself.
const LISTENER: Token = Token(usize::MAX - 1);

/// Size of the shard's read buffer, shared by all its sessions.
const SCRATCH_SIZE: usize = 64 * 1024;

/// Most inbox messages handled per turn before sockets get their turn again.
const INBOX_BUDGET: usize = 4096;

/// Broadcasts reaching at least this many local members on average may wait for the
/// coalescing window (`Config::coalesce`); smaller rooms are flushed at once.
const COALESCE_MIN_ROOM: u64 = 64;

/// Most readiness events taken from one poll.
const EVENTS_CAPACITY: usize = 1024;

/// A connection handed over by the acceptor, with the address a per-IP limit counted.
pub struct Handoff {
    /// The accepted socket.
    pub stream: StdTcpStream,
    /// Set when the per-address limit holds a place for this connection.
    pub counted_ip: Option<IpAddr>,
}

/// Everything a shard thread is started with.
pub struct ShardParts {
    /// This shard's id.
    pub id: ShardId,
    /// Its poll (its waker is already registered as [`WAKER`]).
    pub poll: Poll,
    /// Connections from the acceptor (`None` in the `single` model, which accepts itself).
    pub connections: Option<Receiver<Handoff>>,
    /// The listener, in the `single` model: one thread accepts and serves everything.
    pub listener: Option<mio::net::TcpListener>,
    /// Messages from other shards.
    pub inbox: Receiver<ShardMsg>,
    /// Links to the other shards.
    pub mesh: MeshLinks,
    /// What every event-loop thread is given.
    pub common: LoopCommon,
    /// The Redis bridge, when this node is a cluster member.
    pub cluster: Option<ClusterLink>,
}

/// What every event-loop thread (a shard, or a worker of the `shared` model) is given: all
/// read-only or internally synchronised, cloned once per thread at start.
#[derive(Clone)]
pub struct LoopCommon {
    /// The configuration.
    pub config: Arc<Config>,
    /// The HTTP side.
    pub site: Site,
    /// Published figures and the draining flag.
    pub stats: Arc<ServerStats>,
    /// TLS settings, when serving TLS.
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// The per-address limit, when configured.
    pub per_ip: Option<Arc<PerIpLimit>>,
}

impl LoopCommon {
    /// What a session call works with: this thread's limits and HTTP side, the time `now`,
    /// and `counters` to count into.
    pub fn ctx<'a>(&'a self, now: Instant, counters: &'a mut Counters) -> Ctx<'a> {
        Ctx {
            config: &self.config,
            site: &self.site,
            now,
            counters,
        }
    }
}

/// A running shard.
pub struct Shard {
    id: ShardId,
    poll: Poll,
    connections: Option<Receiver<Handoff>>,
    listener: Option<mio::net::TcpListener>,
    /// Accepting paused for lack of descriptors until then (`single` model).
    accept_paused_until: Option<Instant>,
    inbox: Receiver<ShardMsg>,
    inbox_more: bool,
    mesh: MeshLinks,
    mesh_backlog: bool,
    cluster: Option<ClusterLink>,
    /// Configuration, HTTP side, stats, TLS and per-address limit.
    common: LoopCommon,
    sessions: Slab<Session<Conn>>,
    websockets: usize,
    rooms: RoomTable,
    timers: Timers,
    next_generation: u64,
    scratch: Vec<u8>,
    events: Vec<Event>,
    counters: Counters,
    /// Sessions with output to flush at the end of this turn.
    flush_list: Vec<SessionKey>,
    /// Sessions that stopped for fairness and must run again.
    ready: Vec<SessionKey>,
    /// Sessions to remove at the end of this turn.
    finished: Vec<SessionKey>,
    /// Members that stopped taking messages (closing, cut off) and must leave their room.
    departures: Vec<SessionKey>,
    /// Set once shutdown began: the moment the shard stops regardless.
    drain_until: Option<Instant>,
    /// When the last flush ran, and when a flush held back for coalescing is due.
    last_flush: Instant,
    flush_due: Option<Instant>,
    /// Broadcasts delivered locally since the last flush, and their deliveries.
    pending_broadcasts: u64,
    pending_deliveries: u64,
    now: Instant,
}

impl Shard {
    /// Builds the shard from its parts.
    pub fn new(parts: ShardParts) -> Self {
        Shard {
            id: parts.id,
            poll: parts.poll,
            connections: parts.connections,
            listener: parts.listener,
            accept_paused_until: None,
            inbox: parts.inbox,
            inbox_more: false,
            mesh: parts.mesh,
            mesh_backlog: false,
            cluster: parts.cluster,
            common: parts.common,
            sessions: Slab::new(),
            websockets: 0,
            rooms: RoomTable::default(),
            timers: Timers::default(),
            next_generation: 0,
            scratch: vec![0; SCRATCH_SIZE],
            events: Vec::new(),
            counters: Counters::default(),
            flush_list: Vec::new(),
            ready: Vec::new(),
            finished: Vec::new(),
            departures: Vec::new(),
            drain_until: None,
            last_flush: Instant::now(),
            flush_due: None,
            pending_broadcasts: 0,
            pending_deliveries: 0,
            now: Instant::now(),
        }
    }

    /// Runs the loop until shutdown has drained every session (or its deadline passed), or
    /// the acceptor is gone and no session is left.
    pub fn run(mut self) -> io::Result<()> {
        let mut events = Events::with_capacity(EVENTS_CAPACITY);
        if let Some(listener) = &mut self.listener {
            self.poll
                .registry()
                .register(listener, LISTENER, Interest::READABLE)?;
        }
        loop {
            let timeout = self.poll_timeout();
            match self.poll.poll(&mut events, timeout) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
            self.now = Instant::now();
            self.counters.bump(Counter::LoopTurns);
            let acceptor_alive = self.adopt_connections();
            if self.drain_until.is_none() && self.common.stats.is_draining() {
                self.begin_drain();
            }
            self.drain_inbox();
            if self.accept_paused_until.is_some_and(|t| t <= self.now) {
                self.accept_all()?;
            }
            self.dispatch(&events)?;
            self.resume_ready();
            self.expire_timers();
            self.flush_or_coalesce();
            self.reap_finished();
            self.mesh_backlog = self.mesh.flush();
            if let Some(cluster) = &mut self.cluster {
                // Presence the bridge's queue had no room for: poll again soon, as for a backlog.
                self.mesh_backlog |= cluster.retry_pending();
            }
            self.counters
                .add(Counter::MeshDropped, std::mem::take(&mut self.mesh.dropped));
            self.common.stats.shard(self.id.0).publish(&self.counters);
            let drained = match self.drain_until {
                Some(until) => self.sessions.is_empty() || self.now >= until,
                None => !acceptor_alive && self.sessions.is_empty(),
            };
            if drained {
                tracing::debug!(
                    "shard {} stops with {} session(s) left",
                    self.id.0,
                    self.sessions.len()
                );
                return Ok(());
            }
        }
    }

    fn poll_timeout(&self) -> Option<Duration> {
        if !self.ready.is_empty() || self.inbox_more {
            return Some(Duration::ZERO);
        }
        let now = Instant::now();
        let mut timeout = self.timers.next_in(now);
        let deadlines = [self.drain_until, self.accept_paused_until, self.flush_due];
        for until in deadlines.into_iter().flatten() {
            let left = until.saturating_duration_since(now);
            timeout = Some(timeout.map_or(left, |t| t.min(left)));
        }
        if self.mesh_backlog {
            // A peer's inbox is full: give it a moment rather than spinning on it.
            let retry = Duration::from_millis(1);
            timeout = Some(timeout.map_or(retry, |t| t.min(retry)));
        }
        // Rounded up to a whole millisecond, as epoll would truncate it and wake early.
        timeout.map(|d| d + Duration::from_micros(999))
    }

    /// Registers connections handed over by the acceptor. False once the acceptor is gone.
    fn adopt_connections(&mut self) -> bool {
        loop {
            let next = match &self.connections {
                Some(connections) => connections.try_recv(),
                None => return true, // the `single` model: this shard is its own acceptor
            };
            match next {
                Ok(handoff) => self.adopt(handoff),
                Err(crossbeam_channel::TryRecvError::Empty) => return true,
                Err(crossbeam_channel::TryRecvError::Disconnected) => return false,
            }
        }
    }

    fn adopt(&mut self, handoff: Handoff) {
        if self.drain_until.is_some() {
            // Accepted just before shutdown: refuse it like the closed listener would.
            self.release_ip(handoff.counted_ip);
            return;
        }
        let stream = TcpStream::from_std(handoff.stream);
        let conn = match Conn::new(stream, self.common.tls.as_ref()) {
            Ok(conn) => conn,
            Err(e) => {
                tracing::warn!("shard {}: cannot start TLS: {e}", self.id.0);
                self.release_ip(handoff.counted_ip);
                return;
            }
        };
        let mut session = Session::new(conn, handoff.counted_ip, &self.common.config, self.now);
        let entry = self.sessions.vacant_entry();
        let key = entry.key();
        let registered = self.poll.registry().register(
            session.stream_mut().socket_mut(),
            Token(key),
            Interest::READABLE | Interest::WRITABLE,
        );
        if let Err(e) = registered {
            tracing::warn!("shard {}: cannot register a connection: {e}", self.id.0);
            self.release_ip(handoff.counted_ip);
            return;
        }
        self.next_generation += 1;
        session.generation = self.next_generation;
        session.id = SessionId {
            worker: self.id.0 as u16,
            seq: self.next_generation,
        };
        entry.insert(session);
        self.arm_timer(key);
        self.publish_gauges();
    }

    /// Accepts whatever waits on the listener (`single` model only).
    fn accept_all(&mut self) -> io::Result<()> {
        let Some(listener) = self.listener.take() else {
            return Ok(());
        };
        let stats = self.common.stats.clone();
        let per_ip = self.common.per_ip.clone();
        let outcome = accept_ready(&listener, per_ip.as_deref(), &stats, |handoff| {
            self.adopt(handoff);
            true
        });
        self.listener = Some(listener);
        self.accept_paused_until =
            (outcome? == Accepted::Backoff).then(|| self.now + RESOURCE_BACKOFF);
        Ok(())
    }

    fn begin_drain(&mut self) {
        if let Some(mut listener) = self.listener.take() {
            // Stop accepting: closing the listener refuses new connections at once.
            let _ = self.poll.registry().deregister(&mut listener);
            self.accept_paused_until = None;
        }
        self.drain_until = Some(self.now + self.common.config.drain_timeout);
        let keys: Vec<SessionKey> = self.sessions.iter().map(|(key, _)| key).collect();
        for key in keys {
            let mut cx = self.common.ctx(self.now, &mut self.counters);
            let Some(session) = self.sessions.get_mut(key) else {
                continue;
            };
            if session.begin_shutdown(&mut cx) == Progress::Finished {
                self.finished.push(key);
            }
            self.departures.push(key);
            self.list_for_flush(key);
            self.arm_timer(key);
        }
        self.settle_departures();
    }

    fn drain_inbox(&mut self) {
        let inbox = self.inbox.clone();
        let (_, more) = drain_inbox(&inbox, INBOX_BUDGET, |msg| match msg {
            ShardMsg::Broadcast { room, post } => self.deliver_local(&room, &post),
            ShardMsg::Presence {
                room,
                from,
                share,
                notice,
            } => {
                self.rooms.set_remote_share(&room, from, share);
                if let Some(notice) = notice {
                    self.push_to_members(&room, Dialect::V1, &notice, None);
                }
            }
            ShardMsg::Cluster { room, others, news } => {
                self.rooms.set_others(&room, others);
                if let Some(news) = news {
                    self.tell_cluster_news(&room, news);
                }
            }
        });
        self.inbox_more = more;
        self.settle_departures();
    }

    fn dispatch(&mut self, events: &Events) -> io::Result<()> {
        for event in events.iter() {
            let token = event.token();
            if token == WAKER {
                continue;
            }
            if token == LISTENER {
                // During a pause for lack of descriptors, new connections still wake us:
                // accepting resumes when the pause ends (phase 3b), not before.
                if self.accept_paused_until.is_none() {
                    self.accept_all()?;
                }
                continue;
            }
            let listed = self.sessions.get(token.0).is_some_and(|s| s.ready_listed);
            // A session already waiting to resume reads in that phase, once per turn.
            if (event.is_readable() || event.is_read_closed() || event.is_error()) && !listed {
                self.read_session(token.0);
            }
            if event.is_writable() {
                self.list_for_flush(token.0);
            }
        }
        Ok(())
    }

    fn resume_ready(&mut self) {
        for key in std::mem::take(&mut self.ready) {
            if let Some(session) = self.sessions.get_mut(key) {
                session.ready_listed = false;
                self.read_session(key);
            }
        }
    }

    /// Lets session `key` read, then acts on what it reported.
    fn read_session(&mut self, key: SessionKey) {
        let mut cx = self.common.ctx(self.now, &mut self.counters);
        let Some(session) = self.sessions.get_mut(key) else {
            return;
        };
        let progress = session.on_readable(&mut self.scratch, &mut cx, &mut self.events);
        let has_output = session.has_output();
        if progress == Progress::MoreReady {
            session.ready_listed = true;
        }
        let mut events = std::mem::take(&mut self.events);
        for event in events.drain(..) {
            match event {
                Event::Upgraded => {
                    self.websockets += 1;
                    self.publish_gauges();
                }
                Event::Joined(room) => self.join(key, room),
                Event::Message(post) => self.fan_out(key, post),
            }
        }
        self.events = events;
        self.departures.push(key);
        self.settle_departures();
        if has_output {
            self.list_for_flush(key);
        }
        match progress {
            Progress::Idle => {}
            Progress::MoreReady => self.ready.push(key),
            Progress::Finished => self.finished.push(key),
        }
        self.arm_timer(key);
    }

    /// Session `key` becomes a member of `room`: it is welcomed (v1), the others are told.
    fn join(&mut self, key: SessionKey, room: RoomId) {
        let Some(session) = self.sessions.get_mut(key) else {
            return;
        };
        let dialect = session.dialect();
        let slot = self.rooms.join(&room, dialect, key);
        session.room_slot = Some(slot);
        let online = self.rooms.get(&room).map_or(0, |r| r.online());
        if dialect == Dialect::V1 {
            let id = session.id_text(&self.common.config);
            let nick = session.nick().map_or("", |n| n.as_str());
            session.push_own(envelope::welcome(&id, room.as_str(), nick, online));
            self.list_for_flush(key);
        }
        self.announce(&room, Change::Join, key, online);
    }

    /// Members that stopped taking messages leave their rooms (which may cut off others as
    /// slow consumers, who then leave in turn).
    fn settle_departures(&mut self) {
        while let Some(key) = self.departures.pop() {
            let gone = self
                .sessions
                .get(key)
                .is_some_and(|s| s.room_slot.is_some() && !s.receives());
            if gone {
                self.depart(key);
            }
        }
    }

    /// Session `key` leaves its room; the others are told.
    fn depart(&mut self, key: SessionKey) {
        let Some(session) = self.sessions.get_mut(key) else {
            return;
        };
        let (Some(slot), Some(room)) = (session.room_slot.take(), session.room().cloned()) else {
            return;
        };
        let dialect = session.dialect();
        if let Some(moved) = self.rooms.leave(&room, dialect, slot)
            && let Some(other) = self.sessions.get_mut(moved)
        {
            other.room_slot = Some(slot);
        }
        let online = self.rooms.get(&room).map_or(0, |r| r.online());
        self.announce(&room, Change::Leave, key, online);
    }

    /// Tells the room (local v1 members, other than `key`, get a notice unless presence is
    /// off or the server is shutting down) and every other shard (this shard's new share,
    /// with the notice for theirs) that `key` joined or left.
    fn announce(&mut self, room: &RoomId, change: Change, key: SessionKey, online: u64) {
        let (share, needs) = match self.rooms.get(room) {
            Some(entry) => (entry.local_share(), entry.needs()),
            None => (Share::default(), Default::default()),
        };
        let wants_notice = self.common.config.presence && self.drain_until.is_none() && needs.v1;
        // Only made when someone will hear of it: most sessions never need their id text.
        let member = match self.sessions.get_mut(key) {
            Some(session) if wants_notice || self.cluster.is_some() => Some(MemberChange {
                change,
                id: session.id_text(&self.common.config),
                nick: session.nick().cloned(),
            }),
            _ => None,
        };
        let notice = member.as_ref().filter(|_| wants_notice).map(|m| {
            self.counters.bump(Counter::PresenceNotices);
            let nick = m.nick.as_ref().map(|n| n.as_str());
            envelope::presence(change, &m.id, nick, online)
        });
        if let Some(cluster) = &mut self.cluster {
            cluster.presence(room, self.id, share, member);
        }
        if let Some(notice) = &notice {
            self.push_to_members(room, Dialect::V1, notice, Some(key));
        }
        let me = self.id;
        let others: Vec<ShardId> = self.mesh.others().collect();
        for to in others {
            self.mesh.send(
                to,
                ShardMsg::Presence {
                    room: room.clone(),
                    from: me,
                    share,
                    notice: notice.clone(),
                },
            );
        }
    }

    /// Renders a change on other nodes for this shard's v1 members of `room` (with this
    /// shard's `online`, which counts its own newest members) and queues it.
    fn tell_cluster_news(&mut self, room: &RoomId, news: ClusterNews) {
        let online = match self.rooms.get(room) {
            Some(entry) if !entry.v1.is_empty() && self.drain_until.is_none() => entry.online(),
            _ => return,
        };
        let notice = match news {
            ClusterNews::Member(m) => {
                envelope::presence(m.change, &m.id, m.nick.as_ref().map(|n| n.as_str()), online)
            }
            ClusterNews::Count => envelope::online(online),
        };
        self.counters.bump(Counter::PresenceNotices);
        self.push_to_members(room, Dialect::V1, &notice, None);
    }

    /// Sends `post` from session `from` to its room: local members now, other shards that
    /// have members through the mesh. Each rendering is encoded once, here.
    fn fan_out(&mut self, from: SessionKey, post: Post) {
        let Some(session) = self.sessions.get(from) else {
            return;
        };
        let (Some(room), Some(_)) = (session.room().cloned(), session.room_slot) else {
            return;
        };
        let Some(entry) = self.rooms.get(&room) else {
            return;
        };
        let out = Outgoing::new(post, entry.needs());
        if let Some(cluster) = &self.cluster {
            cluster.publish(&room, &out.post);
        }
        for remote in &entry.remote {
            self.mesh.send(
                remote.shard,
                ShardMsg::Broadcast {
                    room: room.clone(),
                    post: out.clone(),
                },
            );
        }
        self.deliver_local(&room, &out);
    }

    /// Queues `out` for this shard's members of `room`, each in its dialect.
    fn deliver_local(&mut self, room: &RoomId, out: &Outgoing) {
        let Some(entry) = self.rooms.get(room) else {
            return;
        };
        let plain = (!entry.plain.is_empty()).then(|| out.frame(Dialect::Plain));
        let v1 = (!entry.v1.is_empty()).then(|| out.frame(Dialect::V1));
        let mut delivered = 0;
        if let Some(frame) = plain {
            delivered += self.push_to_members(room, Dialect::Plain, &frame, None);
        }
        if let Some(frame) = v1 {
            delivered += self.push_to_members(room, Dialect::V1, &frame, None);
        }
        self.counters.add(Counter::Deliveries, delivered);
        self.pending_broadcasts += 1;
        self.pending_deliveries += delivered;
    }

    /// Queues `frame` for this shard's `dialect` members of `room` (but `except`); returns
    /// how many took it. Members cut off as slow consumers are listed for departure.
    fn push_to_members(
        &mut self,
        room: &RoomId,
        dialect: Dialect,
        frame: &SharedFrame,
        except: Option<SessionKey>,
    ) -> u64 {
        let Some(entry) = self.rooms.get(room) else {
            return 0;
        };
        let members = match dialect {
            Dialect::Plain => &entry.plain,
            Dialect::V1 => &entry.v1,
        };
        let mut cx = self.common.ctx(self.now, &mut self.counters);
        let mut delivered = 0;
        for &key in members {
            if Some(key) == except {
                continue;
            }
            let Some(session) = self.sessions.get_mut(key) else {
                debug_assert!(false, "room member {key} has no session");
                continue;
            };
            match session.push_broadcast(frame, &mut cx) {
                Delivery::Queued => delivered += 1,
                Delivery::Refused => continue,
                Delivery::SlowConsumer => {
                    tracing::debug!(
                        "shard {}: session {key} closed as a slow consumer",
                        self.id.0
                    );
                    self.departures.push(key);
                    if let Some(when) = session.deadline() {
                        session.timer_armed = Some(when);
                        self.timers.arm(when, key, session.generation);
                    }
                }
            }
            if !session.flush_listed {
                session.flush_listed = true;
                self.flush_list.push(key);
            }
        }
        delivered
    }

    fn list_for_flush(&mut self, key: SessionKey) {
        if let Some(session) = self.sessions.get_mut(key)
            && !session.flush_listed
        {
            session.flush_listed = true;
            self.flush_list.push(key);
        }
    }

    /// Flushes now, unless the waiting output is a broadcast to a big room and the last flush
    /// was less than the coalescing window ago: then the flush waits for the window's end, so
    /// that broadcasts arriving meanwhile leave in the same `writev` (fewer syscalls and
    /// packets per delivery, on both ends of every connection). Output for small rooms (a
    /// chat message to 20 people, a pong) never waits: their latency is worth more than the
    /// few syscalls saved.
    fn flush_or_coalesce(&mut self) {
        if self.flush_list.is_empty() {
            self.flush_due = None;
            return;
        }
        let window = self.common.config.coalesce;
        let big_rooms =
            self.pending_deliveries >= COALESCE_MIN_ROOM * self.pending_broadcasts.max(1);
        if !window.is_zero() && big_rooms && self.drain_until.is_none() {
            let due = self.last_flush + window;
            if self.now < due {
                self.flush_due = Some(due);
                return;
            }
        }
        self.flush_due = None;
        self.last_flush = self.now;
        self.pending_broadcasts = 0;
        self.pending_deliveries = 0;
        self.flush_output();
    }

    fn flush_output(&mut self) {
        for key in std::mem::take(&mut self.flush_list) {
            let Some(session) = self.sessions.get_mut(key) else {
                continue;
            };
            session.flush_listed = false;
            if session.flush(&mut self.counters) == Progress::Finished {
                self.finished.push(key);
            }
        }
    }

    fn reap_finished(&mut self) {
        if self.finished.is_empty() {
            return;
        }
        for key in std::mem::take(&mut self.finished) {
            if self
                .sessions
                .get(key)
                .is_some_and(|s| s.room_slot.is_some())
            {
                self.depart(key);
            }
            let Some(mut session) = self.sessions.try_remove(key) else {
                continue; // listed twice in one turn
            };
            // Closing the socket would deregister it too; saying so keeps mio's view exact.
            let _ = self
                .poll
                .registry()
                .deregister(session.stream_mut().socket_mut());
            if session.room().is_some() {
                // It held a WebSocket place since its upgrade.
                self.websockets -= 1;
                self.common.site.release();
            }
            self.release_ip(session.peer_ip());
        }
        self.ready.retain(|key| self.sessions.contains(*key));
        self.publish_gauges();
    }

    fn release_ip(&self, ip: Option<IpAddr>) {
        if let (Some(limit), Some(ip)) = (&self.common.per_ip, ip) {
            limit.release(ip);
        }
    }

    fn expire_timers(&mut self) {
        let now = Instant::now();
        while let Some((key, generation)) = self.timers.pop_due(now) {
            let mut cx = self.common.ctx(now, &mut self.counters);
            let Some(session) = self.sessions.get_mut(key) else {
                continue;
            };
            if session.generation != generation {
                continue;
            }
            session.timer_armed = None;
            if session.on_deadline(&mut cx) == Progress::Finished {
                self.finished.push(key);
                continue;
            }
            if session.has_output() {
                self.list_for_flush(key);
            }
            self.departures.push(key);
            self.arm_timer(key);
        }
        self.settle_departures();
    }

    fn arm_timer(&mut self, key: SessionKey) {
        let Some(session) = self.sessions.get_mut(key) else {
            return;
        };
        if let Some(when) = session.deadline()
            && session.timer_armed.is_none_or(|armed| when < armed)
        {
            session.timer_armed = Some(when);
            self.timers.arm(when, key, session.generation);
        }
    }

    fn publish_gauges(&self) {
        self.common
            .stats
            .shard(self.id.0)
            .set_connections(self.sessions.len(), self.websockets);
    }
}
