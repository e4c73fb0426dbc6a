//! One client connection, as a state machine driven by its shard.
//!
//! ```text
//!  Http ──upgrade──▶ Open ──close frame / error / slow consumer──▶ Discard ──▶ gone
//!   │  ╰─keep-alive answer─╮                                          ▲
//!   │◀─────────────────────╯                                          │
//!   ╰──error answer / Connection: close───────────────────────────────╯
//! ```
//!
//! * `Http` reads a request head (bounded by `max_request_head` and `handshake_timeout`) and
//!   answers it, or validates an upgrade and answers `101`.
//! * `Open` feeds socket bytes to tungstenite; each complete data message becomes one shared
//!   frame for the room ([`Event::Message`]). tungstenite's context lives in a reader
//!   (`ws_reader`) made when the client sends and given back at rest, so an idle connection
//!   holds none (docs/architecture.md, "What an idle connection holds").
//! * `Discard` is every way out: the last bytes (an error answer, a close frame) are flushed,
//!   the write side is shut (`FIN`), and input is read and thrown away until the peer closes or
//!   `close_timeout` passes. Reading on instead of closing at once keeps the kernel from
//!   answering unread input with a reset that could destroy the close frame in flight.
//!
//! The session never touches other sessions or rooms: it reports [`Event`]s and the shard acts
//! on them. It is generic over its [`Transport`] so tests can drive it through an in-memory
//! stream that blocks and writes partially at will. What a `shardcast.v1` client's text means
//! is decided in [`v1`]; why a session ended is one [`CloseReason`]. A session that came with
//! a valid token (docs/auth.md) keeps what it granted (`auth::Grant`, boxed: an anonymous
//! session pays one null pointer): its user id, whether it may publish, and its expiry, one
//! more deadline of the `Open` phase.

mod boundary;
pub mod cell;
mod closing;
mod http_phase;
pub mod liveness;
pub mod outbound;
pub mod transport;
pub mod v1;
mod ws_phase;
pub(crate) mod ws_reader;
mod wsio;

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, LazyLock};
use std::time::{Duration, Instant};

use crate::auth::Grant;
use crate::chat::{Dialect, Nick, Post};
pub use crate::close::CloseReason;
use crate::config::Config;
use crate::frame::SharedFrame;
use crate::history::Ask;
use crate::http::Site;
use crate::http::request::FullRequest;
use crate::ids::SessionId;
use crate::metrics::{Counter, Counters};
use crate::room::RoomId;
use liveness::{Liveness, Timing, Verdict};
use outbound::{Chunk, Flushed, OutQueue};
pub use transport::Transport;
use ws_reader::WsReader;

/// Most bytes one session may read per loop turn before yielding to the others.
const READ_BYTES_PER_TURN: usize = 256 * 1024;

/// An empty ping frame (server frames are unmasked).
const PING_FRAME: [u8; 2] = [0x89, 0x00];

/// Something the shard must act on.
#[derive(Debug)]
pub enum Event {
    /// The session completed its upgrade: it holds a WebSocket place from now on.
    Upgraded,
    /// The session is now a member of `RoomId` (a plain client at once, a v1 client once it
    /// has a nickname), asking `Ask` of its history: add it, welcome it, announce it.
    Joined(RoomId, Ask),
    /// The session sent a message: deliver it to its room (the sender included).
    Message(Post),
    /// A v1 member asked who is in its room (`crate::roster`).
    Who,
    /// The session took its nickname back from its own earlier connection, this one, with a
    /// reclaim token: close it (`crate::names`).
    Replaced(SessionId),
    /// The session read a server API request (`/api/` on the main port): hand it to the API
    /// service, whose answer comes back through the loop's inbox ([`Session::api_answer`]).
    Api(Box<FullRequest>),
}

/// What the shard should do with the session next.
#[derive(Debug, PartialEq, Eq)]
pub enum Progress {
    /// Wait for the next readiness event.
    Idle,
    /// It stopped for fairness with input left: run it again next turn.
    MoreReady,
    /// It is over: remove it.
    Finished,
}

/// What became of a broadcast frame offered to the session.
#[derive(Debug, PartialEq, Eq)]
pub enum Delivery {
    /// Queued for sending.
    Queued,
    /// The session is closing and takes no more messages.
    Refused,
    /// The queue would pass `max_buffered`: the session is now closing as a slow consumer.
    SlowConsumer,
    /// Writing to make room failed: the session is over (its next flush reports it).
    Failed,
}

enum Phase {
    Http {
        head: Vec<u8>,
        /// A request was answered on this connection already (an expiry is then an idle
        /// keep-alive, not a failed handshake).
        answered: bool,
    },
    Open {
        /// tungstenite's context and the rest of the reading state, only while the client is
        /// sending (`ws_reader`): an idle connection holds none.
        ws: Option<Box<WsReader>>,
        liveness: Liveness,
        /// We sent a close frame and wait for the peer's, until this moment.
        closing_until: Option<Instant>,
        /// A v1 client without a nickname: when its `hello` is due (boxed: rare, and every
        /// idle connection carries this phase).
        hello: Option<Box<v1::AwaitingHello>>,
    },
    Discard {
        write_shut: bool,
    },
    /// A server API request on the main port: its body being read, then its answer awaited
    /// (boxed: rare).
    Api(Box<ApiCall>),
}

/// A server API request read by a session (`http_phase`).
struct ApiCall {
    request: Box<FullRequest>,
    /// The body's length.
    need: usize,
    /// The request went to the API service; its answer is awaited.
    waiting: bool,
}

/// What a session works with during one call: limits, the HTTP side, the time, the counters.
pub struct Ctx<'a> {
    /// Limits and deadlines.
    pub config: &'a Config,
    /// The HTTP side.
    pub site: &'a Site,
    /// The time at the start of this loop turn.
    pub now: Instant,
    /// The shard's counters.
    pub counters: &'a mut Counters,
}

/// A peer's address, kept in 20 bytes rather than `SocketAddr`'s 32 (no IPv6 flow or scope:
/// nothing here needs them), since every idle connection carries one.
#[derive(Debug, Clone, Copy)]
struct PeerAddr {
    ip: IpAddr,
    port: u16,
}

/// One connection.
pub struct Session<S> {
    stream: S,
    phase: Phase,
    out: OutQueue,
    deadline: Option<Instant>,
    peer_eof: bool,
    /// The queue's buffer is given back at the next flush of an open session that empties it:
    /// after the `101`, and after each deadline (a ping, or a burst long past, need not keep
    /// it; a busy session regrows it and pays one allocation per deadline).
    trim_queue: bool,
    /// A per-address limit holds a place for `peer`'s address (given back at the end).
    ip_counted: bool,
    dialect: Dialect,
    /// Why the WebSocket ended (the first reason only), and the close code exchanged.
    close: Option<CloseReason>,
    close_code: u16,
    room: Option<RoomId>,
    nick: Option<Nick>,
    /// What a valid token granted (docs/auth.md): boxed, one null pointer when anonymous.
    grant: Option<Box<Grant>>,
    /// The peer's address, when the transport has one (for the access log and the per-IP limit).
    peer: Option<PeerAddr>,
    id: SessionId,
    /// When the connection was adopted, and its bytes in and out (for the access log).
    opened: Instant,
    bytes_in: u64,
    bytes_out: u64,
}

impl<S: Transport> Session<S> {
    /// A new connection that must send a request head by `now + handshake_timeout`.
    pub fn new(stream: S, config: &Config, now: Instant) -> Self {
        Session {
            stream,
            phase: Phase::Http {
                head: Vec::new(),
                answered: false,
            },
            out: OutQueue::default(),
            deadline: Some(now + config.handshake_timeout),
            peer_eof: false,
            trim_queue: true,
            ip_counted: false,
            dialect: Dialect::Plain,
            close: None,
            close_code: 0,
            room: None,
            nick: None,
            grant: None,
            peer: None,
            id: SessionId::default(),
            opened: now,
            bytes_in: 0,
            bytes_out: 0,
        }
    }

    /// Names the session (its event loop does, when it adopts the connection) and its peer;
    /// `ip_counted` when a per-address limit holds a place for the peer's address.
    pub fn identify(&mut self, id: SessionId, peer: Option<SocketAddr>, ip_counted: bool) {
        self.id = id;
        self.peer = peer.map(|p| PeerAddr {
            ip: p.ip(),
            port: p.port(),
        });
        self.ip_counted = ip_counted && peer.is_some();
    }

    /// The session's id.
    pub fn id(&self) -> SessionId {
        self.id
    }

    /// The peer's address, when known.
    pub fn peer(&self) -> Option<SocketAddr> {
        self.peer.map(|p| SocketAddr::new(p.ip, p.port))
    }

    /// Why the WebSocket ended, and the close code sent or received (0 if none), once it has.
    pub fn close_reason(&self) -> Option<(CloseReason, u16)> {
        self.close.map(|reason| (reason, self.close_code))
    }

    /// How long the connection has been open, and its bytes in and out so far.
    pub fn traffic(&self, now: Instant) -> (Duration, u64, u64) {
        (
            now.saturating_duration_since(self.opened),
            self.bytes_in,
            self.bytes_out,
        )
    }

    /// The socket (for registering with a poll).
    pub fn stream_mut(&mut self) -> &mut S {
        &mut self.stream
    }

    /// The room, once upgraded (an upgraded session also holds a `max_connections` place).
    pub fn room(&self) -> Option<&RoomId> {
        self.room.as_ref()
    }

    /// Keeps `room`, another copy of the session's room name, instead of its own.
    pub fn share_room_name(&mut self, room: RoomId) {
        debug_assert_eq!(self.room.as_ref(), Some(&room));
        self.room = Some(room);
    }

    /// The dialect the session speaks (plain until an upgrade negotiates v1).
    pub fn dialect(&self) -> Dialect {
        self.dialect
    }

    /// The nickname of a v1 member.
    pub fn nick(&self) -> Option<&Nick> {
        self.nick.as_ref()
    }

    /// The user id of a member with a token (docs/auth.md).
    pub fn user(&self) -> Option<&str> {
        self.grant.as_deref().map(|g| &*g.user)
    }

    /// The user id, shared (for notices and the cluster).
    pub fn user_arc(&self) -> Option<Arc<str>> {
        self.grant.as_ref().map(|g| g.user.clone())
    }

    /// The id as clients see it: `"<worker>.<seq>"`, after `"<node>."` in a cluster.
    /// A sending client's reader keeps it for its messages; otherwise it is made afresh (for
    /// a join or a `who`, rare next to messages).
    pub fn id_text(&mut self, config: &Config) -> Arc<str> {
        match &mut self.phase {
            Phase::Open { ws: Some(ws), .. } => id_text(&mut ws.id_text, self.id, config),
            _ => id_text(&mut None, self.id, config),
        }
    }

    /// Whether the session still takes messages (open, and not closing). A member that no
    /// longer does has left its room, whatever remains of its connection.
    pub fn receives(&self) -> bool {
        matches!(
            self.phase,
            Phase::Open {
                closing_until: None,
                ..
            }
        )
    }

    /// Queues a frame meant for this session alone (a `welcome`).
    pub fn push_own(&mut self, frame: SharedFrame) {
        self.out.push(Chunk::Shared(frame));
    }

    /// The peer's address, if a per-address limit counts it.
    pub fn peer_ip(&self) -> Option<IpAddr> {
        self.peer.filter(|_| self.ip_counted).map(|p| p.ip)
    }

    /// When the session must be looked at even if nothing happens.
    pub fn deadline(&self) -> Option<Instant> {
        self.deadline
    }

    /// Whether output is waiting (in the queue or inside the transport).
    pub fn has_output(&self) -> bool {
        !self.out.is_empty() || self.stream.has_pending_output()
    }

    /// Bytes waiting in the outbound queue.
    pub fn queued_bytes(&self) -> usize {
        self.out.queued_bytes()
    }

    /// Reads what the socket has (up to this turn's budget) and acts on it. `scratch` is the
    /// shard's read buffer; events for the shard are appended to `events`.
    pub fn on_readable(
        &mut self,
        scratch: &mut [u8],
        cx: &mut Ctx,
        events: &mut Vec<Event>,
    ) -> Progress {
        let progress = self.read_input(scratch, cx, events);
        self.refresh_deadline(cx.config);
        progress
    }

    fn read_input(
        &mut self,
        scratch: &mut [u8],
        cx: &mut Ctx,
        events: &mut Vec<Event>,
    ) -> Progress {
        let mut budget = cx.config.messages_per_turn;
        if let Phase::Open { ws: Some(ws), .. } = &mut self.phase
            && ws.has_pending_input()
        {
            let stash = std::mem::take(&mut ws.stash);
            if !self.consume(&stash, cx, events, &mut budget) {
                return Progress::MoreReady;
            }
        }
        let mut read_this_turn = 0;
        while !self.peer_eof {
            if read_this_turn >= READ_BYTES_PER_TURN {
                return Progress::MoreReady;
            }
            match self.stream.read(scratch) {
                Ok(0) => return self.on_eof(cx),
                Ok(n) => {
                    read_this_turn += n;
                    self.bytes_in += n as u64;
                    cx.counters.add(Counter::BytesIn, n as u64);
                    if let Phase::Open { liveness, .. } = &mut self.phase {
                        liveness.saw_input(cx.now, &Timing::of(cx.config));
                    }
                    if !self.consume(&scratch[..n], cx, events, &mut budget) {
                        return Progress::MoreReady;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Progress::Idle,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    tracing::debug!("read failed: {e}");
                    self.ended(CloseReason::IoError, 0, cx.counters);
                    return Progress::Finished;
                }
            }
        }
        Progress::Idle
    }

    /// Writes queued output. Returns `Finished` once a closing session has nothing left to do.
    pub fn flush(&mut self, counters: &mut Counters) -> Progress {
        let before = self.out.queued_bytes();
        let mut write_calls = 0;
        let result = self.out.write_to(&mut self.stream, &mut write_calls);
        let written = (before - self.out.queued_bytes()) as u64;
        self.bytes_out += written;
        counters.add(Counter::BytesOut, written);
        counters.add(Counter::SocketWrites, write_calls);
        let drained =
            match result.and_then(|f| Ok(f == Flushed::All && self.stream.flush_pending()?)) {
                Ok(drained) => drained,
                Err(e) => {
                    tracing::debug!("write failed: {e}");
                    self.ended(CloseReason::IoError, 0, counters);
                    return Progress::Finished;
                }
            };
        if !drained {
            return Progress::Idle;
        }
        if self.trim_queue && matches!(self.phase, Phase::Open { .. }) {
            // The queue held the 101 (or a ping); most sessions then idle for a long time, so
            // give its buffer back (busy ones regrow it and keep it until their next deadline).
            self.trim_queue = false;
            self.out.release_memory();
        }
        if let Phase::Discard { write_shut } = &mut self.phase {
            if !*write_shut {
                *write_shut = true;
                // Failing to end our side only matters if the peer is gone already.
                let _ = self.stream.shutdown_write();
                let _ = self.stream.flush_pending();
            }
            if self.peer_eof && !self.stream.has_pending_output() {
                return Progress::Finished;
            }
        }
        Progress::Idle
    }

    /// Called when the deadline has passed: expires the phase, or sends a ping.
    pub fn on_deadline(&mut self, cx: &mut Ctx) -> Progress {
        let progress = self.expire(cx);
        self.rest_reader(cx);
        self.trim_queue = true;
        self.refresh_deadline(cx.config);
        progress
    }

    /// Gives back the reading state of an open session that is at rest (`ws_reader`): a
    /// client that sent messages keeps it until its next deadline, one that only answered a
    /// ping gives it back at once (`ws_phase`).
    fn rest_reader(&mut self, cx: &Ctx) {
        if let Phase::Open {
            ws: ws @ Some(_),
            liveness,
            closing_until: None,
            ..
        } = &mut self.phase
            && ws
                .as_ref()
                .is_some_and(|w| w.at_rest(cx.config, liveness.since_last_message(cx.now)))
        {
            *ws = None;
        }
    }

    fn expire(&mut self, cx: &mut Ctx) -> Progress {
        let now = cx.now;
        if let Phase::Open {
            closing_until: None,
            ..
        } = &self.phase
            && self.token_ends().is_some_and(|ends| ends <= now)
        {
            cx.counters.bump(Counter::TimerToken);
            tracing::debug!("the token expired");
            self.close_politely(CloseReason::TokenExpired, cx);
            return Progress::Idle;
        }
        if let Phase::Open {
            hello: Some(hello),
            closing_until: None,
            ..
        } = &self.phase
            && hello.until <= now
        {
            cx.counters.bump(Counter::TimerHello);
            self.fail(CloseReason::NoHello, cx);
            return Progress::Idle;
        }
        match &mut self.phase {
            Phase::Http { head, answered } => {
                if self.deadline.is_some_and(|d| d <= now) {
                    if !head.is_empty() || !*answered {
                        cx.counters.bump(Counter::HandshakeTimeout);
                    }
                    cx.counters.bump(Counter::TimerHandshake);
                    tracing::debug!("no complete request head in time");
                    return Progress::Finished;
                }
            }
            Phase::Api(call) => {
                if self.deadline.is_some_and(|d| d <= now) {
                    if !call.waiting {
                        tracing::debug!("no complete API request body in time");
                        return Progress::Finished;
                    }
                    self.api_timed_out(cx);
                }
            }
            Phase::Discard { .. } => {
                if self.deadline.is_some_and(|d| d <= now) {
                    cx.counters.bump(Counter::TimerClose);
                    tracing::debug!("closing connection did not finish in time");
                    return Progress::Finished;
                }
            }
            Phase::Open {
                closing_until: Some(until),
                ..
            } => {
                if *until <= now {
                    cx.counters.bump(Counter::TimerClose);
                    tracing::debug!("no close reply in time");
                    return Progress::Finished;
                }
            }
            Phase::Open { liveness, .. } => match liveness.check(now, &Timing::of(cx.config)) {
                Verdict::Alive => {}
                Verdict::Ping => self.out.push(Chunk::Shared(ping_frame())),
                Verdict::Dead => {
                    cx.counters.bump(Counter::TimerPong);
                    tracing::debug!("no answer to a ping in time");
                    self.ended(CloseReason::PongTimeout, 0, cx.counters);
                    return Progress::Finished;
                }
                Verdict::Idle => {
                    cx.counters.bump(Counter::TimerIdle);
                    self.close_politely(CloseReason::IdleTimeout, cx);
                }
            },
        }
        Progress::Idle
    }

    /// Starts an orderly close with `code` (e.g. 1001 on shutdown): the close frame is queued
    /// and the peer has `close_timeout` to answer. HTTP sessions that are between requests end
    /// at once; one in the middle of a request is answered first.
    pub fn begin_shutdown(&mut self, cx: &mut Ctx) -> Progress {
        let progress = match &self.phase {
            Phase::Http { head, .. } if head.is_empty() && self.out.is_empty() => {
                Progress::Finished
            }
            // Between requests with an answer still queued: deliver it, then close.
            Phase::Http { head, .. } if head.is_empty() => {
                self.enter_discard(cx);
                Progress::Idle
            }
            Phase::Open { .. } => {
                self.close_politely(CloseReason::Shutdown, cx);
                Progress::Idle
            }
            _ => Progress::Idle,
        };
        self.refresh_deadline(cx.config);
        progress
    }

    /// Closes an open WebSocket for `reason`, which the loop decided (not the peer): a close
    /// frame, then its reply awaited. It takes no more messages from now on.
    pub fn close_for(&mut self, reason: CloseReason, cx: &mut Ctx) {
        self.close_politely(reason, cx);
        self.refresh_deadline(cx.config);
    }

    /// Closes an open WebSocket because the server API said so (docs/api.md): a close frame
    /// with `code` and `text`, then its reply awaited. False if it was not open, or closing
    /// already.
    pub fn disconnect(&mut self, code: u16, text: &str, cx: &mut Ctx) -> bool {
        if !self.receives() {
            return false;
        }
        self.close_politely_with(CloseReason::Disconnected, code, text, cx);
        self.refresh_deadline(cx.config);
        true
    }

    /// Offers a broadcast frame. A session whose queue would pass `max_buffered` first gives
    /// its socket what it will take; if the queue would still pass it, the session is cut off
    /// as a slow consumer: its unsent frames are dropped and a close frame (1008) is queued.
    ///
    /// The write comes first because a loop may queue a burst in one turn (a full inbox, many
    /// messages read at once) before its flush phase: only a client whose socket is full as
    /// well is slow. It costs a syscall only on this path, which a reading client rarely takes.
    pub fn push_broadcast(&mut self, frame: &SharedFrame, cx: &mut Ctx) -> Delivery {
        if !matches!(
            self.phase,
            Phase::Open {
                closing_until: None,
                ..
            }
        ) {
            return Delivery::Refused;
        }
        let over = |s: &Self| s.out.queued_bytes() + frame.len() > cx.config.max_buffered;
        if over(self) && self.flush(cx.counters) == Progress::Finished {
            // The socket failed: the session takes nothing more and ends at its next flush.
            self.enter_discard(cx);
            return Delivery::Failed;
        }
        if over(self) {
            self.out.discard_unstarted();
            cx.counters.bump(Counter::SlowConsumer);
            self.fail(CloseReason::SlowConsumer, cx);
            self.refresh_deadline(cx.config);
            return Delivery::SlowConsumer;
        }
        self.out.push(Chunk::Shared(frame.clone()));
        Delivery::Queued
    }

    /// An open session's deadline follows its liveness and close timers; the other phases
    /// set theirs when they begin.
    fn refresh_deadline(&mut self, config: &Config) {
        if let Phase::Open {
            liveness,
            closing_until,
            hello,
            ..
        } = &self.phase
        {
            let timing = Timing::of(config);
            let earliest = |a: Option<Instant>, b: Option<Instant>| match (a, b) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            self.deadline = match (closing_until, hello) {
                (Some(until), _) => Some(*until),
                (None, hello) => earliest(
                    earliest(liveness.next_due(&timing), hello.as_ref().map(|h| h.until)),
                    self.token_ends(),
                ),
            };
        }
    }

    /// Whether the session holds tungstenite's reading state now (`ws_reader`).
    #[cfg(test)]
    fn has_reader(&self) -> bool {
        matches!(self.phase, Phase::Open { ws: Some(_), .. })
    }

    /// Chunks the outbound queue has room for without growing.
    #[cfg(test)]
    fn queue_capacity(&self) -> usize {
        self.out.capacity()
    }

    /// When the session's token expires (plus the leeway), if it has one that does.
    fn token_ends(&self) -> Option<Instant> {
        self.grant.as_ref().and_then(|g| g.ends)
    }
}

/// The ping, shared: every ping of the process is the same two bytes, so sending one allocates
/// nothing (pings come to every quiet connection at once, and each allocation would stay in the
/// allocator's high-water mark).
fn ping_frame() -> SharedFrame {
    static PING: LazyLock<SharedFrame> = LazyLock::new(|| Arc::from(&PING_FRAME[..]));
    PING.clone()
}

/// The session's id as clients see it, made once (see [`Session::id_text`]).
fn id_text(slot: &mut Option<Arc<str>>, id: SessionId, config: &Config) -> Arc<str> {
    slot.get_or_insert_with(|| match &config.node_id {
        Some(node) => Arc::from(format!("{node}.{id}")),
        None => Arc::from(id.to_string()),
    })
    .clone()
}

#[cfg(test)]
mod tests;
