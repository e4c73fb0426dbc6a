//! The event loop: one thread, one `mio::Poll`, one session table, one room table. Every
//! threading model runs this loop; a model supplies only how connections arrive
//! ([`Entry`]) and how a room's message reaches members this thread does not own
//! ([`Reach`]); see `crate::models`.
//!
//! Each loop turn runs the same phases, in this order:
//!
//! 1. **poll** for readiness (the timeout comes from the next deadline, or zero if work waits);
//! 2. **adopt** connections the acceptor handed over;
//! 3. **drain the inbox** of messages from other shards and the bridge, and look at sessions
//!    other threads changed — before reading sockets, so that a presence notice sent before a
//!    client's `101` is applied before that client's peers' messages are routed;
//! 4. **accept** on an own listener whose pause for lack of descriptors ended (`single`);
//! 5. **dispatch** readiness events to sessions; complete messages fan out at once;
//! 6. **resume** sessions that stopped for fairness last turn;
//! 7. **expire** deadlines (pings are queued here, so they leave in this turn's flush);
//!    then the reach hands the other threads what this turn produced and wakes them, so that
//!    they deliver it while this one writes (a room's home shard, above all);
//! 8. **flush** every session with queued output, one `writev` each — or hold it for the
//!    coalescing window ([`coalesce`]);
//! 9. **reap** finished sessions (their rooms may lose their last local member);
//! 10. **end the turn**: the reach sends what waits (the mesh wakes each peer once), the
//!     cluster link retries presence its queue had no room for, the counters are published.
//!
//! Fan-out, presence and departures are in [`fanout`]; the books on sessions (flush and
//! resume lists, armed timers, generations, room slots) in [`table`].
//!
//! On shutdown the loop sends every session a close (1001) and keeps turning until all are
//! gone or the drain deadline passes.

mod access;
pub mod coalesce;
mod control;
pub mod fanout;
mod roster;
pub mod table;
pub(crate) mod timers;

use std::io;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::Receiver;
use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};

use crate::acceptor::Handoff;
use crate::api::ApiDoor;
use crate::cluster::ClusterLink;
use crate::config::Config;
use crate::http::Site;
use crate::ids::{SessionId, SessionKey, ShardId};
use crate::limits::PerIpLimit;
use crate::mesh::{ShardMsg, drain_inbox};
use crate::metrics::{Counter, Counters};
use crate::models::single::LISTENER;
use crate::models::{Entry, Reach};
use crate::room::RoomTable;
use crate::roster::RosterDoor;
use crate::session::{Ctx, Event, Progress, Session};
use crate::stats::ServerStats;
use crate::tls::Conn;
use coalesce::{Coalescer, Decision};
use table::SessionTable;

/// The token of the loop's waker (session tokens are slab keys, far below it).
pub const WAKER: Token = Token(usize::MAX);

/// Size of the loop's read buffer, shared by all its sessions.
const SCRATCH_SIZE: usize = 64 * 1024;

/// Most inbox messages handled per turn before sockets get their turn again.
const INBOX_BUDGET: usize = 4096;

/// How often expired room histories are looked for. Expiry is also checked whenever a room's
/// history is used, so this only bounds how long expired memory lingers in a quiet loop.
const HISTORY_SWEEP: Duration = Duration::from_secs(1);

/// How often the loop counts its rooms for `/metrics` (a walk over its room table: too
/// dear for every turn, and a gauge a second old is what a scraper expects anyway).
const CENSUS_EVERY: Duration = Duration::from_secs(1);

/// Sessions written to between two looks at the inbox during a flush.
const FLUSH_SLICE: usize = 64;

/// Most readiness events taken from one poll.
const EVENTS_CAPACITY: usize = 1024;

/// Everything an event-loop thread is started with.
pub struct ShardParts<R> {
    /// This thread's id.
    pub id: ShardId,
    /// Its poll (its waker is already registered as [`WAKER`]).
    pub poll: Poll,
    /// How connections reach it.
    pub entry: Entry,
    /// Messages from other shards and from the Redis bridge.
    pub inbox: Receiver<ShardMsg>,
    /// How messages reach members it does not own.
    pub reach: R,
    /// What every event-loop thread is given.
    pub common: LoopCommon,
    /// The Redis bridge, when this node is a cluster member.
    pub cluster: Option<ClusterLink>,
}

impl ShardParts<()> {
    /// The parts, with the model's reach.
    pub fn with_reach<R>(self, reach: R) -> ShardParts<R> {
        ShardParts {
            id: self.id,
            poll: self.poll,
            entry: self.entry,
            inbox: self.inbox,
            reach,
            common: self.common,
            cluster: self.cluster,
        }
    }
}

/// What every event-loop thread is given: all read-only or internally synchronised, cloned
/// once per thread at start.
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
    /// The server API service, when it takes requests from the main port.
    pub api: Option<ApiDoor>,
    /// Where v1 clients' `who` goes (`None`: answered `busy`).
    pub roster: Option<RosterDoor>,
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

/// A running event loop (a shard, or a worker of the `shared` model).
pub struct Shard<R: Reach> {
    id: ShardId,
    poll: Poll,
    entry: Entry,
    inbox: Receiver<ShardMsg>,
    inbox_more: bool,
    reach: R,
    /// The reach or the bridge link has something waiting (a peer's inbox or the bridge's
    /// queue was full): poll again soon.
    reach_backlog: bool,
    cluster: Option<ClusterLink>,
    common: LoopCommon,
    table: SessionTable<R::Cell>,
    rooms: RoomTable,
    /// Members that stopped taking messages (closing, cut off) and must leave their room.
    departures: Vec<SessionKey>,
    coalesce: Coalescer,
    websockets: usize,
    scratch: Vec<u8>,
    events: Vec<Event>,
    counters: Counters,
    /// Sessions to remove at the end of this turn.
    finished: Vec<SessionKey>,
    /// When this loop's sessions last asked `who` (off the message path).
    who_asked: roster::WhoTimes,
    /// Connections accepted on an own listener this turn.
    fresh: Vec<Handoff>,
    /// Sessions another thread changed, as the reach reported them.
    attention: Vec<(SessionKey, u64)>,
    /// Own sessions the reach queued a message for (listed for the flush).
    queued: Vec<SessionKey>,
    /// Set once shutdown began: the moment the loop stops regardless.
    drain_until: Option<Instant>,
    /// When expired histories are next looked for.
    next_sweep: Instant,
    /// When the rooms are next counted for `/metrics`.
    next_census: Instant,
    now: Instant,
}

impl<R: Reach> Shard<R> {
    /// Builds the loop from its parts.
    pub fn new(parts: ShardParts<R>) -> Self {
        let now = Instant::now();
        Shard {
            id: parts.id,
            poll: parts.poll,
            entry: parts.entry,
            inbox: parts.inbox,
            inbox_more: false,
            reach: parts.reach,
            reach_backlog: false,
            cluster: parts.cluster,
            coalesce: Coalescer::new(
                parts.common.config.coalesce,
                parts.common.config.coalesce_rule,
                now,
            ),
            common: parts.common,
            table: SessionTable::default(),
            rooms: RoomTable::default(),
            departures: Vec::new(),
            websockets: 0,
            scratch: vec![0; SCRATCH_SIZE],
            events: Vec::new(),
            counters: Counters::default(),
            finished: Vec::new(),
            who_asked: roster::WhoTimes::default(),
            fresh: Vec::new(),
            attention: Vec::new(),
            queued: Vec::new(),
            drain_until: None,
            next_sweep: now + HISTORY_SWEEP,
            next_census: now,
            now,
        }
    }

    /// Runs the loop until shutdown has drained every session (or its deadline passed), or
    /// no more connections can come and no session is left.
    pub fn run(mut self) -> io::Result<()> {
        // A span's name must be written out where it is made: one per name the models use.
        let _span = match R::THREAD {
            "worker" => tracing::info_span!("worker", id = self.id.0),
            _ => tracing::info_span!("shard", id = self.id.0),
        }
        .entered();
        let mut events = Events::with_capacity(EVENTS_CAPACITY);
        if let Entry::Listener(listener) = &mut self.entry {
            listener.register(self.poll.registry())?;
        }
        loop {
            let timeout = self.poll_timeout();
            match self.poll.poll(&mut events, timeout) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
            if self.turn(&events)? {
                tracing::debug!("stops with {} session(s) left", self.table.len());
                return Ok(());
            }
        }
    }

    /// One loop turn after a poll (phases 2–10); true when the loop is done.
    fn turn(&mut self, events: &Events) -> io::Result<bool> {
        self.now = Instant::now();
        self.counters.bump(Counter::LoopTurns);
        let more_may_come = self.adopt_connections();
        if self.drain_until.is_none() && self.common.stats.is_draining() {
            self.begin_drain();
        }
        self.drain_inbox();
        self.attend();
        self.accept_after_pause()?;
        self.dispatch(events)?;
        self.resume_ready();
        self.expire_timers();
        self.reach.send_now();
        self.flush_or_coalesce();
        self.reap_finished();
        self.end_turn();
        Ok(match self.drain_until {
            Some(until) => self.table.is_empty() || self.now >= until,
            None => !more_may_come && self.table.is_empty(),
        })
    }

    fn poll_timeout(&self) -> Option<Duration> {
        if self.table.has_ready() || self.inbox_more {
            return Some(Duration::ZERO);
        }
        let now = Instant::now();
        let mut timeout = self.table.next_deadline_in(now);
        let paused = match &self.entry {
            Entry::Listener(listener) => listener.paused_until(),
            _ => None,
        };
        // The census wakes an idle loop once a second, so that the gauges follow the last
        // leave.
        let census = Some(self.next_census);
        for until in [self.drain_until, paused, self.coalesce.due(), census]
            .into_iter()
            .flatten()
        {
            let left = until.saturating_duration_since(now);
            timeout = Some(timeout.map_or(left, |t| t.min(left)));
        }
        if self.reach_backlog {
            // A peer's inbox is full: give it a moment rather than spinning on it.
            let retry = Duration::from_millis(1);
            timeout = Some(timeout.map_or(retry, |t| t.min(retry)));
        }
        // Rounded up to a whole millisecond, as epoll would truncate it and wake early.
        timeout.map(|d| d + Duration::from_micros(999))
    }

    /// Registers connections handed over by the acceptor. False once none can come any more.
    fn adopt_connections(&mut self) -> bool {
        loop {
            let next = match &self.entry {
                Entry::Handoff(connections) => connections.try_recv(),
                Entry::Listener(_) => return true,
                Entry::Closed => return false,
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
                tracing::warn!(peer = %handoff.peer, "cannot start TLS: {e}");
                self.release_ip(handoff.counted_ip);
                return;
            }
        };
        let mut session = Session::new(conn, &self.common.config, self.now);
        let (key, generation) = self.table.next_slot();
        let registered = self.poll.registry().register(
            session.stream_mut().socket_mut(),
            Token(key.0),
            Interest::READABLE | Interest::WRITABLE,
        );
        if let Err(e) = registered {
            tracing::warn!(peer = %handoff.peer, "cannot register a connection: {e}");
            self.release_ip(handoff.counted_ip);
            return;
        }
        let id = SessionId {
            worker: self.id.0 as u16,
            seq: generation,
        };
        session.identify(id, Some(handoff.peer), handoff.counted_ip.is_some());
        let inserted = self.table.insert(session);
        debug_assert_eq!(inserted, key);
        self.publish_gauges();
    }

    /// Accepts on an own listener once a pause for lack of descriptors has ended.
    fn accept_after_pause(&mut self) -> io::Result<()> {
        match &self.entry {
            Entry::Listener(listener) if listener.paused_until().is_some_and(|t| t <= self.now) => {
                self.accept_own()
            }
            _ => Ok(()),
        }
    }

    /// Accepts whatever waits on an own listener and adopts it.
    fn accept_own(&mut self) -> io::Result<()> {
        let Entry::Listener(listener) = &mut self.entry else {
            return Ok(());
        };
        let per_ip = self.common.per_ip.as_deref();
        listener.accept(self.now, per_ip, &self.common.stats, &mut self.fresh)?;
        for handoff in std::mem::take(&mut self.fresh) {
            self.adopt(handoff);
        }
        Ok(())
    }

    fn begin_drain(&mut self) {
        // An own listener closes now; a hand-off channel stays, since what the acceptor
        // accepted meanwhile must still be taken (and refused, in `adopt`).
        if matches!(self.entry, Entry::Listener(_))
            && let Entry::Listener(listener) = std::mem::replace(&mut self.entry, Entry::Closed)
        {
            listener.close(self.poll.registry());
        }
        self.drain_until = Some(self.now + self.common.config.drain_timeout);
        for key in self.table.keys() {
            let mut cx = self.common.ctx(self.now, &mut self.counters);
            if self.table.with(key, |s| s.begin_shutdown(&mut cx)) == Some(Progress::Finished) {
                self.finished.push(key);
            }
            self.departures.push(key);
            self.table.list_for_flush(key);
            self.table.arm(key);
        }
        self.settle_departures();
    }

    fn drain_inbox(&mut self) {
        let inbox = self.inbox.clone();
        let (_, more) = drain_inbox(&inbox, INBOX_BUDGET, |msg| self.on_shard_msg(msg));
        self.inbox_more = more;
        self.settle_departures();
    }

    /// Looks at sessions another thread changed (the `shared` model's writes).
    fn attend(&mut self) {
        self.list_queued();
        self.reach.take_attention(&mut self.attention);
        if self.attention.is_empty() {
            return;
        }
        for (key, generation) in std::mem::take(&mut self.attention) {
            if self.table.is_current(key, generation) {
                self.table.list_for_flush(key);
                self.table.arm(key);
                self.departures.push(key);
            }
        }
        self.settle_departures();
    }

    fn dispatch(&mut self, events: &Events) -> io::Result<()> {
        for event in events.iter() {
            let token = event.token();
            if token == WAKER {
                continue;
            }
            if token == LISTENER {
                self.accept_own()?;
                continue;
            }
            let key = SessionKey(token.0);
            // A session already waiting to resume reads in that phase, once per turn.
            let readable = event.is_readable() || event.is_read_closed() || event.is_error();
            if readable && !self.table.is_ready_listed(key) {
                self.read_session(key);
            }
            if event.is_writable() {
                self.table.list_for_flush(key);
            }
        }
        Ok(())
    }

    fn resume_ready(&mut self) {
        for key in self.table.take_ready() {
            self.read_session(key);
        }
    }

    /// Lets session `key` read, then acts on what it reported.
    fn read_session(&mut self, key: SessionKey) {
        let span = self.session_span(key);
        let _entered = span.enter();
        let mut cx = self.common.ctx(self.now, &mut self.counters);
        let (scratch, events) = (&mut self.scratch, &mut self.events);
        let Some((progress, has_output)) = self.table.with(key, |s| {
            let progress = s.on_readable(scratch, &mut cx, events);
            (progress, s.has_output())
        }) else {
            return;
        };
        let mut events = std::mem::take(&mut self.events);
        for event in events.drain(..) {
            match event {
                Event::Upgraded => self.upgraded(key),
                Event::Joined(room, ask) => self.join(key, room, ask),
                Event::Message(post) => self.fan_out(key, post),
                Event::Who => self.who(key),
                Event::Replaced(old) => self.replaced(old),
                Event::Api(request) => self.api_request(key, request),
            }
        }
        self.events = events;
        self.departures.push(key);
        self.settle_departures();
        if has_output {
            self.table.list_for_flush(key);
        }
        match progress {
            Progress::Idle => {}
            Progress::MoreReady => self.table.mark_ready(key),
            Progress::Finished => self.finished.push(key),
        }
        self.table.arm(key);
    }

    /// Session `key` completed its upgrade: it holds a WebSocket place, and is logged.
    fn upgraded(&mut self, key: SessionKey) {
        self.websockets += 1;
        self.publish_gauges();
        let node = self.common.config.node_id.as_deref();
        let rooms = &self.rooms;
        self.table.with(key, |s| {
            access::log_upgrade(s, node);
            // Its room's members here share one copy of its name (one allocation less each).
            if let Some(shared) = s.room().and_then(|room| rooms.shared_name(room)) {
                s.share_room_name(shared.clone());
            }
        });
    }

    fn expire_timers(&mut self) {
        let now = Instant::now();
        if now >= self.next_sweep {
            self.reach.sweep(now);
            self.next_sweep = now + HISTORY_SWEEP;
        }
        if now >= self.next_census {
            let threads = self.common.stats.shard_count();
            let census = self.reach.census(&self.rooms, self.id, threads);
            self.common.stats.shard(self.id.0).set_census(census);
            self.next_census = now + CENSUS_EVERY;
        }
        while let Some(key) = self.table.pop_due(now) {
            let span = self.session_span(key);
            let _entered = span.enter();
            let mut cx = self.common.ctx(now, &mut self.counters);
            let Some((progress, has_output)) = self
                .table
                .with(key, |s| (s.on_deadline(&mut cx), s.has_output()))
            else {
                continue;
            };
            if progress == Progress::Finished {
                self.finished.push(key);
                continue;
            }
            if has_output {
                self.table.list_for_flush(key);
            }
            self.departures.push(key);
            self.table.arm(key);
        }
        self.settle_departures();
    }

    /// Flushes now, or holds the output for the coalescing window ([`coalesce`]).
    fn flush_or_coalesce(&mut self) {
        if !self.table.has_flush_work() {
            self.coalesce.idle();
            return;
        }
        match self.coalesce.decide(self.now, self.drain_until.is_some()) {
            Decision::Wait(_) => {}
            Decision::FlushNow => self.flush_output(),
        }
    }

    /// Writes every listed session's output, a slice at a time. Between slices, messages
    /// that came from other shards meanwhile are taken at once: writing to thousands of
    /// sockets takes milliseconds, and a room's home must not keep the others waiting for
    /// its numbering that long (their deliveries join this pass where still ahead in it).
    fn flush_output(&mut self) {
        let list = self.table.take_flush_list();
        let started = Instant::now();
        for slice in list.chunks(FLUSH_SLICE) {
            if !self.inbox.is_empty() {
                self.drain_inbox();
                self.reach.send_now();
            }
            let counters = &mut self.counters;
            self.table
                .flush_listed(slice, |s| s.flush(counters), &mut self.finished);
        }
        self.coalesce.flushed(list.len(), started.elapsed());
        self.table.give_back_flush_list(list);
    }

    fn reap_finished(&mut self) {
        if self.finished.is_empty() {
            return;
        }
        for key in std::mem::take(&mut self.finished) {
            if self.table.room_slot(key).is_some() {
                self.depart(key);
            }
            // One that never became a member may still hold the name it asked for.
            self.release_name(key);
            let Some(mut cell) = self.table.remove(key) else {
                continue; // listed twice in one turn
            };
            let node = self.common.config.node_id.as_deref();
            let (upgraded, ip) = table::Cell::with(&mut cell, |s| {
                // Closing the socket would deregister it too; saying so keeps mio's view exact.
                let _ = self.poll.registry().deregister(s.stream_mut().socket_mut());
                if s.room().is_some() {
                    access::log_close(s, node, self.now);
                }
                (s.room().is_some(), s.peer_ip())
            });
            if upgraded {
                // It held a WebSocket place since its upgrade.
                self.websockets -= 1;
                self.common.site.release();
            }
            self.release_ip(ip);
        }
        self.publish_gauges();
    }

    /// Phase 10: what the reach and the bridge hold goes out; the counters are published.
    fn end_turn(&mut self) {
        // Only a cluster's follower histories make joins wait for a sync.
        if self.cluster.is_some() && self.common.config.history_on() {
            self.admit_ready();
        }
        self.reach_backlog = self.reach.end_turn(&mut self.counters);
        if let Some(cluster) = &mut self.cluster {
            // Presence the bridge's queue had no room for: poll again soon, as for a backlog.
            self.reach_backlog |= cluster.retry_pending();
        }
        self.common.stats.shard(self.id.0).publish(&self.counters);
    }

    fn release_ip(&self, ip: Option<std::net::IpAddr>) {
        if let (Some(limit), Some(ip)) = (&self.common.per_ip, ip) {
            limit.release(ip);
        }
    }

    fn publish_gauges(&self) {
        self.common
            .stats
            .shard(self.id.0)
            .set_connections(self.table.len(), self.websockets);
    }
}

#[cfg(test)]
mod tests;
