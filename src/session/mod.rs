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
//!   frame for the room ([`Event::Message`]).
//! * `Discard` is every way out: the last bytes (an error answer, a close frame) are flushed,
//!   the write side is shut (`FIN`), and input is read and thrown away until the peer closes or
//!   `close_timeout` passes. Reading on instead of closing at once keeps the kernel from
//!   answering unread input with a reset that could destroy the close frame in flight.
//!
//! The session never touches other sessions or rooms: it reports [`Event`]s and the shard acts
//! on them. It is generic over its [`Transport`] so tests can drive it through an in-memory
//! stream that blocks and writes partially at will.

pub mod frame;
pub mod outbound;
mod wsio;

use std::io::{self, Read, Write};
use std::time::Instant;

use tungstenite::protocol::{Message, Role, WebSocketConfig, WebSocketContext};

use crate::config::Config;
use crate::http::request::{self, Parsed};
use crate::http::{Dispatch, Site, error_response};
use crate::mesh::SharedFrame;
use crate::room::RoomId;
use outbound::{Chunk, Flushed, OutQueue};
use wsio::WsIo;

/// Most bytes one session may read per loop turn before yielding to the others.
const READ_BYTES_PER_TURN: usize = 256 * 1024;

/// tungstenite's own read buffer per session. Small on purpose: bytes arrive through the
/// shard's scratch buffer, so this only holds the part of a frame that has not completed.
const WS_READ_CHUNK: usize = 256;

/// Close code for a slow consumer (RFC 6455 "policy violation"), with reason "slow consumer".
pub const CLOSE_SLOW_CONSUMER: u16 = 1008;

/// A byte stream the session can run on: a socket, or a test double.
pub trait Transport: Read + Write {
    /// Sends FIN: no more bytes from us, while the peer's bytes may still arrive.
    fn shutdown_write(&self) -> io::Result<()>;
}

impl Transport for mio::net::TcpStream {
    fn shutdown_write(&self) -> io::Result<()> {
        self.shutdown(std::net::Shutdown::Write)
    }
}

/// Something the shard must act on.
#[derive(Debug)]
pub enum Event {
    /// The session completed its upgrade into `RoomId`.
    Joined(RoomId),
    /// The session sent a message: deliver this frame to its room (the sender included).
    Message(SharedFrame),
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
}

enum Phase {
    Http {
        head: Vec<u8>,
    },
    Open {
        ws: Box<WebSocketContext>,
        /// We sent a close frame and wait for the peer's.
        closing: bool,
    },
    Discard {
        write_shut: bool,
    },
}

/// The per-turn environment a session reads in.
pub struct Env<'a> {
    /// Limits and deadlines.
    pub config: &'a Config,
    /// The HTTP side.
    pub site: &'a Site,
    /// The time at the start of this loop turn.
    pub now: Instant,
}

/// One connection.
pub struct Session<S> {
    stream: S,
    phase: Phase,
    out: OutQueue,
    deadline: Option<Instant>,
    /// Input read from the socket but not yet handed on (left over when a turn's budget ran out).
    stash: Vec<u8>,
    /// tungstenite may hold complete frames it has not returned yet.
    ws_buffered: bool,
    peer_eof: bool,
    room: Option<RoomId>,
    /// Position in the shard's member list of `room` (the shard keeps it current).
    pub room_slot: usize,
    /// The shard's bookkeeping: already on this turn's flush list.
    pub flush_listed: bool,
    /// The shard's bookkeeping: on the list of sessions to resume next turn.
    pub ready_listed: bool,
    /// The shard's bookkeeping: the deadline a timer is already set for.
    pub timer_armed: Option<Instant>,
    /// The shard's bookkeeping: distinguishes this session from earlier ones with its key.
    pub generation: u64,
}

impl<S: Transport> Session<S> {
    /// A new connection that must send a request head by `now + handshake_timeout`.
    pub fn new(stream: S, config: &Config, now: Instant) -> Self {
        Session {
            stream,
            phase: Phase::Http { head: Vec::new() },
            out: OutQueue::default(),
            deadline: Some(now + config.handshake_timeout),
            stash: Vec::new(),
            ws_buffered: false,
            peer_eof: false,
            room: None,
            room_slot: 0,
            flush_listed: false,
            ready_listed: false,
            timer_armed: None,
            generation: 0,
        }
    }

    /// The socket (for registering with a poll).
    pub fn stream_mut(&mut self) -> &mut S {
        &mut self.stream
    }

    /// The room, once upgraded.
    pub fn room(&self) -> Option<&RoomId> {
        self.room.as_ref()
    }

    /// When the session must be looked at even if nothing happens.
    pub fn deadline(&self) -> Option<Instant> {
        self.deadline
    }

    /// Whether output is waiting.
    pub fn has_output(&self) -> bool {
        !self.out.is_empty()
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
        env: &Env,
        events: &mut Vec<Event>,
    ) -> Progress {
        let mut budget = env.config.messages_per_turn;
        if !self.stash.is_empty() || self.ws_buffered {
            let stash = std::mem::take(&mut self.stash);
            if !self.consume(&stash, env, events, &mut budget) {
                return Progress::MoreReady;
            }
        }
        let mut read_this_turn = 0;
        while !self.peer_eof {
            if read_this_turn >= READ_BYTES_PER_TURN {
                return Progress::MoreReady;
            }
            match self.stream.read(scratch) {
                Ok(0) => return self.on_eof(env),
                Ok(n) => {
                    read_this_turn += n;
                    if !self.consume(&scratch[..n], env, events, &mut budget) {
                        return Progress::MoreReady;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Progress::Idle,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    log::debug!("read failed: {e}");
                    return Progress::Finished;
                }
            }
        }
        Progress::Idle
    }

    /// Writes queued output. Returns `Finished` once a closing session has nothing left to do.
    pub fn flush(&mut self) -> Progress {
        match self.out.write_to(&mut self.stream) {
            Err(e) => {
                log::debug!("write failed: {e}");
                Progress::Finished
            }
            Ok(Flushed::Blocked) => Progress::Idle,
            Ok(Flushed::All) => {
                if let Phase::Discard { write_shut } = &mut self.phase {
                    if !*write_shut {
                        *write_shut = true;
                        // Failing to send FIN only matters if the peer is gone already.
                        let _ = self.stream.shutdown_write();
                    }
                    if self.peer_eof {
                        return Progress::Finished;
                    }
                }
                Progress::Idle
            }
        }
    }

    /// Called when the deadline has passed.
    pub fn on_deadline(&mut self, now: Instant) -> Progress {
        match self.deadline {
            Some(deadline) if deadline <= now => {
                let phase = match self.phase {
                    Phase::Http { .. } => "request head",
                    Phase::Open { .. } => "close handshake",
                    Phase::Discard { .. } => "closing drain",
                };
                log::debug!("deadline passed waiting for the {phase}");
                Progress::Finished
            }
            _ => Progress::Idle,
        }
    }

    /// Offers a broadcast frame. A session whose queue would pass `max_buffered` is cut off as
    /// a slow consumer: its unsent frames are dropped and a close frame (1008) is queued.
    pub fn push_broadcast(
        &mut self,
        frame: &SharedFrame,
        config: &Config,
        now: Instant,
    ) -> Delivery {
        if !matches!(self.phase, Phase::Open { closing: false, .. }) {
            return Delivery::Refused;
        }
        if self.out.queued_bytes() + frame.len() > config.max_buffered {
            self.out.discard_unstarted();
            self.fail(CLOSE_SLOW_CONSUMER, "slow consumer", config, now);
            return Delivery::SlowConsumer;
        }
        self.out.push(Chunk::Shared(frame.clone()));
        Delivery::Queued
    }

    /// Handles `input`; false when the message budget ran out (the rest is stashed).
    fn consume(
        &mut self,
        input: &[u8],
        env: &Env,
        events: &mut Vec<Event>,
        budget: &mut usize,
    ) -> bool {
        match self.phase {
            Phase::Http { .. } => self.consume_http(input, env, events, budget),
            Phase::Open { .. } => self.consume_ws(input, env, events, budget),
            Phase::Discard { .. } => true,
        }
    }

    fn consume_http(
        &mut self,
        input: &[u8],
        env: &Env,
        events: &mut Vec<Event>,
        budget: &mut usize,
    ) -> bool {
        let Phase::Http { head } = &mut self.phase else {
            return true;
        };
        head.extend_from_slice(input);
        loop {
            let Phase::Http { head } = &mut self.phase else {
                return true;
            };
            if head.is_empty() {
                return true;
            }
            let cfg = env.config;
            let (request, len) = match request::parse(head, cfg.max_request_head, cfg.max_headers) {
                Parsed::Partial => return true,
                Parsed::Reject(status) => {
                    let response = error_response(status, &[]);
                    self.out.push(Chunk::Owned(response.bytes));
                    self.enter_discard(env.config, env.now);
                    return true;
                }
                Parsed::Complete(request, len) => (request, len),
            };
            let rest = head.split_off(len);
            match env.site.dispatch(&request) {
                Dispatch::Answer(response) => {
                    self.out.push(Chunk::Owned(response.bytes));
                    if !response.keep_alive {
                        self.enter_discard(env.config, env.now);
                        return true;
                    }
                    // Pipelined requests wait in `rest`; the next one gets a fresh deadline.
                    *head = rest;
                    self.deadline = Some(env.now + cfg.handshake_timeout);
                    if self.out.queued_bytes() > cfg.max_buffered {
                        // Pipelining far ahead of reading the answers: cut it off.
                        log::debug!("pipelined answers passed max-buffered; closing");
                        self.out.discard_unstarted();
                        self.enter_discard(cfg, env.now);
                        return true;
                    }
                }
                Dispatch::Upgrade { room, response } => {
                    self.out.push(Chunk::Owned(response));
                    let ws_config = WebSocketConfig::default()
                        .read_buffer_size(WS_READ_CHUNK)
                        .write_buffer_size(0)
                        .max_message_size(Some(cfg.max_message))
                        .max_frame_size(Some(cfg.max_message));
                    self.phase = Phase::Open {
                        ws: Box::new(WebSocketContext::new(Role::Server, Some(ws_config))),
                        closing: false,
                    };
                    self.deadline = None;
                    self.room = Some(room.clone());
                    events.push(Event::Joined(room));
                    return self.consume_ws(&rest, env, events, budget);
                }
            }
        }
    }

    fn consume_ws(
        &mut self,
        input: &[u8],
        env: &Env,
        events: &mut Vec<Event>,
        budget: &mut usize,
    ) -> bool {
        let Phase::Open { ws, closing } = &mut self.phase else {
            return true;
        };
        let mut io = WsIo::new(input, &mut self.out);
        loop {
            if *budget == 0 {
                self.stash.extend_from_slice(io.rest());
                self.ws_buffered = true;
                return false;
            }
            let failure = match ws.read(&mut io) {
                Ok(message) => {
                    *budget -= 1;
                    match message {
                        Message::Text(text) if !*closing => {
                            let frame = frame::encode_shared(frame::OP_TEXT, text.as_bytes());
                            events.push(Event::Message(frame));
                            continue;
                        }
                        Message::Binary(data) if !*closing => {
                            let frame = frame::encode_shared(frame::OP_BINARY, &data);
                            events.push(Event::Message(frame));
                            continue;
                        }
                        Message::Close(_) => {
                            // Queue tungstenite's reply (or nothing, if this answers our own
                            // close); it reports the exchange complete with ConnectionClosed.
                            let _ = ws.flush(&mut io);
                            None
                        }
                        // Pings are answered by tungstenite (the pong is already queued), but
                        // pongs to a peer that never reads must not pile up without bound.
                        Message::Ping(_) if io.out().queued_bytes() > env.config.max_buffered => {
                            io.out().discard_unstarted();
                            Some((CLOSE_SLOW_CONSUMER, "slow consumer"))
                        }
                        // Pongs and data after our close frame need nothing.
                        _ => continue,
                    }
                }
                Err(tungstenite::Error::Io(e)) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.ws_buffered = false;
                    return true;
                }
                Err(tungstenite::Error::ConnectionClosed | tungstenite::Error::AlreadyClosed) => {
                    None
                }
                Err(e) => Some(close_code_for(&e)),
            };
            if let Some((code, reason)) = failure {
                log::debug!("closing with {code}: {reason}");
                self.out
                    .push(Chunk::Owned(frame::encode_close(code, reason)));
            }
            self.enter_discard(env.config, env.now);
            return true;
        }
    }

    /// Queues a close frame and stops taking input and broadcasts.
    fn fail(&mut self, code: u16, reason: &str, config: &Config, now: Instant) {
        log::debug!("closing with {code}: {reason}");
        self.out
            .push(Chunk::Owned(frame::encode_close(code, reason)));
        self.enter_discard(config, now);
    }

    fn enter_discard(&mut self, config: &Config, now: Instant) {
        self.phase = Phase::Discard { write_shut: false };
        self.stash = Vec::new();
        self.ws_buffered = false;
        self.deadline = Some(now + config.close_timeout);
    }

    fn on_eof(&mut self, env: &Env) -> Progress {
        self.peer_eof = true;
        if let Phase::Open { closing: false, .. } = self.phase {
            log::debug!("peer closed the connection without a close frame");
        }
        if self.out.is_empty() {
            return Progress::Finished;
        }
        // The peer may have only shut its write side: deliver what is queued (within the
        // close deadline), then finish.
        if !matches!(self.phase, Phase::Discard { .. }) {
            self.enter_discard(env.config, env.now);
        }
        Progress::Idle
    }
}

/// The close code (and a short reason) for an error tungstenite reported on input.
fn close_code_for(error: &tungstenite::Error) -> (u16, &'static str) {
    match error {
        tungstenite::Error::Capacity(_) => (1009, "message too big"),
        tungstenite::Error::Utf8(_) => (1007, "invalid UTF-8"),
        tungstenite::Error::Protocol(_) => (1002, "protocol error"),
        _ => (1011, "internal error"),
    }
}

#[cfg(test)]
mod tests;
