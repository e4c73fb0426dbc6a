//! Drives one open WebSocket until it ends: the client's event loop.
//!
//! The connection's thread owns the socket; the user reaches it only through its
//! [`Inbox`](super::mailbox::Inbox). A turn reads like its phases:
//!
//! `take requests (budget) → read messages (budget) → timers → flush → poll`
//!
//! There are only two event sources (the socket and the mailbox's waker), so every phase
//! runs after any wake-up and each stops at `WouldBlock`; the poll is edge-triggered, so a
//! phase that stopped on its budget instead makes the next poll return at once.
//!
//! Writable invariant: whatever tungstenite could not write (a flush that would block, a
//! message refused because its buffer is full) arms WRITABLE interest, and nothing more is
//! taken from the mailbox until it has left. That bounds memory at the write buffer plus the
//! mailbox's capacity, and slows a fast producer to the speed of the socket.
//!
//! The pump ends when the close handshake completes (`Closed`), or when the connection breaks,
//! a close reply does not come within `close_timeout`, or a ping goes unanswered (`Lost`).

use std::fmt;
use std::io;
use std::ops::ControlFlow::{self, Break, Continue};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token};
use tungstenite::protocol::CloseFrame;
use tungstenite::protocol::frame::coding::CloseCode;
use tungstenite::{Bytes, Error as WsError, Message, WebSocket};

use super::mailbox::{CloseNote, Inbox, Request, Taken};
use super::options::LinkSettings;
use super::stream::Stream;

/// The connection's socket in the poll.
pub const SOCKET: Token = Token(0);
/// The mailbox's waker in the poll.
pub const WAKER: Token = Token(1);

/// Requests taken per turn, so that a flood of input cannot starve reading.
const REQUESTS_PER_TURN: usize = 64;
/// Messages read per turn, so that a flood of output cannot starve sending.
const MESSAGES_PER_TURN: usize = 256;

/// Who started the close handshake.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// This client.
    Us,
    /// The server.
    Peer,
}

/// How a connection ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ending {
    /// The peer's close frame arrived: the close handshake happened.
    Closed {
        /// Who sent the first close frame.
        initiator: Side,
        /// The close frame we sent first, if we started.
        ours: Option<CloseNote>,
        /// The peer's close frame (its first, or its reply to ours).
        theirs: CloseNote,
    },
    /// The connection ended without the peer's close frame.
    Lost {
        /// What happened.
        reason: String,
        /// The close frame we had sent, if any (its reply never came).
        ours: Option<CloseNote>,
    },
}

impl fmt::Display for Ending {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Ending::Closed {
                initiator: Side::Us,
                ours,
                theirs,
            } => {
                let ours = ours
                    .as_ref()
                    .map_or(String::new(), |n| format!(" with {n}"));
                write!(f, "closed by us{ours}; the server answered {theirs}")
            }
            Ending::Closed { theirs, .. } => write!(f, "closed by the server with {theirs}"),
            Ending::Lost { reason, .. } => write!(f, "connection lost: {reason}"),
        }
    }
}

/// What the pump tells its owner as things happen.
pub trait Observer {
    /// A text or binary message was handed to the socket.
    fn sent(&mut self, message: &Message);
    /// A text or binary message arrived. `Err` means the output is gone: the pump closes
    /// the connection (1001).
    fn received(&mut self, message: &Message) -> io::Result<()>;
    /// The close handshake started; `note` is the first close frame.
    fn closing(&mut self, initiator: Side, note: &CloseNote);
}

/// The event loop for one connection. Built per connection; the poll and inbox outlive it
/// (pipe mode keeps them across reconnections).
pub struct Pump<'a, O: Observer> {
    ws: WebSocket<Stream>,
    poll: &'a mut Poll,
    inbox: &'a mut Inbox,
    observer: &'a mut O,
    settings: LinkSettings,
    events: Events,
    /// WRITABLE is armed (something waits in tungstenite's buffer).
    writable_armed: bool,
    /// A message refused because the write buffer was full; sent before any other request.
    held: Option<Message>,
    /// A phase stopped on its budget: the next poll must not sleep.
    more_requests: bool,
    more_reads: bool,
    initiator: Option<Side>,
    sent_close: Option<CloseNote>,
    received_close: Option<CloseNote>,
    close_deadline: Option<Instant>,
    next_ping: Option<Instant>,
    /// A ping went out and nothing has come back since.
    awaiting_pong: bool,
    /// A message sent before any request (chat mode's `hello`).
    greeting: Option<Message>,
}

impl<'a, O: Observer> Pump<'a, O> {
    /// A pump for `ws` (non-blocking), woken by `inbox`'s mailbox through `poll`.
    pub fn new(
        ws: WebSocket<Stream>,
        poll: &'a mut Poll,
        inbox: &'a mut Inbox,
        observer: &'a mut O,
        settings: LinkSettings,
    ) -> Self {
        let next_ping = settings.ping_interval.map(|i| Instant::now() + i);
        Pump {
            ws,
            poll,
            inbox,
            observer,
            settings,
            events: Events::with_capacity(8),
            writable_armed: false,
            held: None,
            more_requests: false,
            more_reads: false,
            initiator: None,
            sent_close: None,
            received_close: None,
            close_deadline: None,
            next_ping,
            awaiting_pong: false,
            greeting: None,
        }
    }

    /// Sends `greeting` first, before anything taken from the mailbox: on every connection,
    /// a `shardcast.v1` chat client must introduce itself before it says anything.
    pub fn greeting(mut self, greeting: Option<Message>) -> Self {
        self.greeting = greeting;
        self
    }

    /// Runs until the connection ends, then shuts the socket down.
    pub fn run(mut self) -> Ending {
        let fd = self.ws.get_ref().socket().as_raw_fd();
        if let Err(e) =
            self.poll
                .registry()
                .register(&mut SourceFd(&fd), SOCKET, Interest::READABLE)
        {
            return self.ended(format!("cannot poll the socket: {e}"));
        }
        let ending = loop {
            if let Break(ending) = self.turn() {
                break ending;
            }
        };
        let _ = self.poll.registry().deregister(&mut SourceFd(&fd));
        self.ws.get_mut().finish();
        ending
    }

    fn turn(&mut self) -> ControlFlow<Ending> {
        if let Some(greeting) = self.greeting.take() {
            self.send(greeting)?;
        }
        self.take_requests()?;
        self.read_messages()?;
        self.check_timers()?;
        self.flush()?;
        self.wait()
    }

    fn take_requests(&mut self) -> ControlFlow<Ending> {
        self.more_requests = false;
        for _ in 0..REQUESTS_PER_TURN {
            if self.held.is_some() {
                // Wait for the socket to drain (writable invariant).
                return Continue(());
            }
            match self.inbox.take() {
                Taken::Request(Request::Send(message)) => self.send(message)?,
                Taken::Request(Request::Close(note)) => self.start_close(note)?,
                Taken::Empty => return Continue(()),
                // No more input: say goodbye (a no-op once closing).
                Taken::Finished => return self.start_close(CloseNote::normal()),
            }
        }
        self.more_requests = true;
        Continue(())
    }

    fn send(&mut self, message: Message) -> ControlFlow<Ending> {
        if self.initiator.is_some() {
            // Tungstenite refuses data after a close frame; the close decides.
            tracing::debug!("not sending a message: the connection is closing");
            return Continue(());
        }
        match self.ws.write(message.clone()) {
            Ok(()) => {}
            // Buffered; the flush phase arms WRITABLE.
            Err(WsError::Io(e)) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(WsError::WriteBufferFull(_)) => {
                self.held = Some(message);
                return Continue(());
            }
            Err(e) => return Break(self.ended(describe(&e))),
        }
        if is_data(&message) {
            self.observer.sent(&message);
        }
        Continue(())
    }

    fn start_close(&mut self, note: CloseNote) -> ControlFlow<Ending> {
        if self.initiator.is_some() {
            return Continue(());
        }
        self.initiator = Some(Side::Us);
        self.close_deadline = Some(Instant::now() + self.settings.close_timeout);
        self.held = None;
        self.observer.closing(Side::Us, &note);
        let frame = CloseFrame {
            code: CloseCode::from(note.code),
            reason: note.reason.clone().into(),
        };
        self.sent_close = Some(note);
        match self.ws.close(Some(frame)) {
            Ok(()) => Continue(()),
            Err(WsError::Io(e)) if e.kind() == io::ErrorKind::WouldBlock => Continue(()),
            Err(e) => Break(self.ended(describe(&e))),
        }
    }

    fn read_messages(&mut self) -> ControlFlow<Ending> {
        self.more_reads = false;
        for _ in 0..MESSAGES_PER_TURN {
            match self.ws.read() {
                Ok(message) => self.on_message(message)?,
                Err(WsError::Io(e)) if e.kind() == io::ErrorKind::WouldBlock => {
                    return Continue(());
                }
                Err(WsError::Io(e)) if e.kind() == io::ErrorKind::Interrupted => {}
                // The server closed TCP after the close handshake: the normal end.
                Err(WsError::ConnectionClosed) => {
                    return Break(self.ended("closed without a close frame".into()));
                }
                Err(e) => return Break(self.ended(describe(&e))),
            }
        }
        self.more_reads = true;
        Continue(())
    }

    fn on_message(&mut self, message: Message) -> ControlFlow<Ending> {
        // Anything from the peer shows it is alive.
        self.awaiting_pong = false;
        match &message {
            Message::Text(_) | Message::Binary(_) => {
                if let Err(e) = self.observer.received(&message) {
                    tracing::debug!("output failed ({e}): closing");
                    return self.start_close(CloseNote::going_away("output closed"));
                }
            }
            Message::Close(frame) => {
                let note = frame.as_ref().map_or(
                    CloseNote {
                        code: CloseNote::NO_STATUS,
                        reason: String::new(),
                    },
                    |f| CloseNote {
                        code: f.code.into(),
                        reason: f.reason.to_string(),
                    },
                );
                if self.initiator.is_none() {
                    // Tungstenite has queued the echo; the flush phase sends it.
                    self.initiator = Some(Side::Peer);
                    self.close_deadline = Some(Instant::now() + self.settings.close_timeout);
                    self.observer.closing(Side::Peer, &note);
                }
                self.received_close = Some(note);
            }
            // Pongs to the server's pings are queued by tungstenite itself.
            Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => {}
        }
        Continue(())
    }

    fn check_timers(&mut self) -> ControlFlow<Ending> {
        let now = Instant::now();
        if self.close_deadline.is_some_and(|at| now >= at) {
            let timeout = self.settings.close_timeout.as_secs_f64();
            return Break(self.ended(format!("no close reply within {timeout} s")));
        }
        if let (Some(interval), Some(due)) = (self.settings.ping_interval, self.next_ping)
            && now >= due
            && self.initiator.is_none()
        {
            if self.awaiting_pong {
                let secs = interval.as_secs_f64();
                return Break(self.ended(format!("no answer to a ping within {secs} s")));
            }
            self.awaiting_pong = true;
            self.next_ping = Some(now + interval);
            self.send(Message::Ping(Bytes::new()))?;
        }
        Continue(())
    }

    fn flush(&mut self) -> ControlFlow<Ending> {
        loop {
            match self.ws.flush() {
                Ok(()) => {}
                Err(WsError::Io(e)) if e.kind() == io::ErrorKind::WouldBlock => {
                    return self.arm_writable(true);
                }
                Err(e) => return Break(self.ended(describe(&e))),
            }
            let Some(message) = self.held.take() else {
                return self.arm_writable(false);
            };
            // The buffer is empty now: a message that still does not fit never will.
            match self.ws.write(message.clone()) {
                Ok(()) => self.observer.sent(&message),
                Err(WsError::Io(e)) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.observer.sent(&message)
                }
                Err(WsError::WriteBufferFull(_)) => {
                    tracing::warn!("dropping a message larger than the write buffer")
                }
                Err(e) => return Break(self.ended(describe(&e))),
            }
            // Requests waited behind the held message.
            self.more_requests = true;
        }
    }

    fn arm_writable(&mut self, arm: bool) -> ControlFlow<Ending> {
        if arm == self.writable_armed {
            return Continue(());
        }
        let interest = if arm {
            Interest::READABLE | Interest::WRITABLE
        } else {
            Interest::READABLE
        };
        let fd = self.ws.get_ref().socket().as_raw_fd();
        match self
            .poll
            .registry()
            .reregister(&mut SourceFd(&fd), SOCKET, interest)
        {
            Ok(()) => {
                self.writable_armed = arm;
                Continue(())
            }
            Err(e) => Break(self.ended(format!("cannot poll the socket: {e}"))),
        }
    }

    fn wait(&mut self) -> ControlFlow<Ending> {
        let timeout = if self.more_requests || self.more_reads {
            Some(Duration::ZERO)
        } else {
            [self.close_deadline, self.next_ping]
                .into_iter()
                .flatten()
                .min()
                .map(|at| at.saturating_duration_since(Instant::now()))
        };
        match self.poll.poll(&mut self.events, timeout) {
            Ok(()) => Continue(()),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => Continue(()),
            Err(e) => Break(self.ended(format!("poll failed: {e}"))),
        }
    }

    /// The ending, from what was exchanged; `reason` explains a loss.
    fn ended(&self, reason: String) -> Ending {
        match &self.received_close {
            Some(theirs) => Ending::Closed {
                initiator: self.initiator.unwrap_or(Side::Peer),
                ours: self.sent_close.clone(),
                theirs: theirs.clone(),
            },
            None => Ending::Lost {
                reason,
                ours: self.sent_close.clone(),
            },
        }
    }
}

fn is_data(message: &Message) -> bool {
    matches!(message, Message::Text(_) | Message::Binary(_))
}

/// A user-facing description of how the connection failed.
fn describe(error: &WsError) -> String {
    match error {
        WsError::Protocol(tungstenite::error::ProtocolError::ResetWithoutClosingHandshake) => {
            "the server closed the connection without a close frame".into()
        }
        other => other.to_string(),
    }
}
