//! Requests from the user (prompt or stdin) to the thread that owns a connection.
//!
//! A bounded channel plus a mio [`Waker`]: posting wakes the owner's poll at once. The
//! channel is bounded so that a fast producer (a big file piped to stdin) is slowed to the
//! speed of the socket instead of growing memory; interactive mode uses [`Mailbox::try_post`]
//! and reports a full queue instead of freezing the prompt.
//!
//! Dropping every [`Mailbox`] is itself a request: "no more input, close".

use std::io;
use std::sync::Arc;

use crossbeam_channel::{Receiver, Sender, TryRecvError, TrySendError};
use mio::{Poll, Token, Waker};
use tungstenite::Message;

/// Requests one connection can hold before posting blocks (or `try_post` fails).
pub const CAPACITY: usize = 1024;

/// What the user asks of a connection.
#[derive(Debug, Clone, PartialEq)]
pub enum Request {
    /// Send a text or binary message.
    Send(Message),
    /// Start the close handshake with this code and reason.
    Close(CloseNote),
}

/// A close frame's status code and reason, as sent or received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CloseNote {
    /// The status code; 1005 ("no status received") stands for a close frame without one.
    pub code: u16,
    /// The reason (possibly empty).
    pub reason: String,
}

impl CloseNote {
    /// The code reported for a close frame that carries no status (RFC 6455 §7.1.5).
    pub const NO_STATUS: u16 = 1005;

    /// A normal close (1000) without a reason.
    pub fn normal() -> CloseNote {
        CloseNote {
            code: 1000,
            reason: String::new(),
        }
    }

    /// "Going away" (1001): we stop because our side of the pipe ended.
    pub fn going_away(reason: &str) -> CloseNote {
        CloseNote {
            code: 1001,
            reason: reason.to_string(),
        }
    }
}

impl std::fmt::Display for CloseNote {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {:?}", self.code, self.reason)
    }
}

/// Why a request could not be posted.
#[derive(Debug, PartialEq)]
pub enum PostError {
    /// The queue is full (only from [`Mailbox::try_post`]).
    Full,
    /// The connection's thread is gone.
    Gone,
}

/// The sending side, held by the prompt or the stdin thread.
#[derive(Debug)]
pub struct Mailbox {
    // Field order matters: fields drop in order, so the channel is disconnected before the
    // last wake, and the woken owner sees the end of input.
    requests: Sender<Request>,
    waker: WakeOnDrop,
}

/// The mailbox's waker, which wakes the owner once more when dropped: it may be asleep in
/// its poll and must see that input has ended.
#[derive(Debug)]
struct WakeOnDrop(Arc<Waker>);

impl Drop for WakeOnDrop {
    fn drop(&mut self) {
        let _ = self.0.wake();
    }
}

/// The receiving side, held by the connection's thread across reconnections.
#[derive(Debug)]
pub struct Inbox {
    requests: Receiver<Request>,
    /// A request taken from the channel while only checking for the end of input.
    peeked: Option<Request>,
    /// Keeps the waker's eventfd open as long as the owner polls: closing it would discard
    /// a wake still pending in the poll, such as the last mailbox's farewell.
    _waker: Arc<Waker>,
}

/// What [`Inbox::take`] found.
#[derive(Debug, PartialEq)]
pub enum Taken {
    /// The next request.
    Request(Request),
    /// Nothing now.
    Empty,
    /// Nothing, ever again: every mailbox was dropped.
    Finished,
}

/// A mailbox whose posts wake `poll` through `token`.
pub fn mailbox(poll: &Poll, token: Token) -> io::Result<(Mailbox, Inbox)> {
    let waker = Arc::new(Waker::new(poll.registry(), token)?);
    let (tx, rx) = crossbeam_channel::bounded(CAPACITY);
    Ok((
        Mailbox {
            requests: tx,
            waker: WakeOnDrop(waker.clone()),
        },
        Inbox {
            requests: rx,
            peeked: None,
            _waker: waker,
        },
    ))
}

impl Mailbox {
    /// Posts a request, waiting while the queue is full. `Err` gives it back if the
    /// connection's thread is gone.
    pub fn post(&self, request: Request) -> Result<(), Request> {
        self.requests.send(request).map_err(|e| e.into_inner())?;
        self.wake();
        Ok(())
    }

    /// Posts a request if there is room.
    pub fn try_post(&self, request: Request) -> Result<(), PostError> {
        self.requests.try_send(request).map_err(|e| match e {
            TrySendError::Full(_) => PostError::Full,
            TrySendError::Disconnected(_) => PostError::Gone,
        })?;
        self.wake();
        Ok(())
    }

    fn wake(&self) {
        // A failed wake means the poll is gone, and with it the thread: nothing to tell.
        if let Err(e) = self.waker.0.wake() {
            tracing::debug!("cannot wake a connection thread: {e}");
        }
    }
}

impl Inbox {
    /// Takes the next request, if any.
    pub fn take(&mut self) -> Taken {
        if let Some(request) = self.peeked.take() {
            return Taken::Request(request);
        }
        match self.requests.try_recv() {
            Ok(request) => Taken::Request(request),
            Err(TryRecvError::Empty) => Taken::Empty,
            Err(TryRecvError::Disconnected) => Taken::Finished,
        }
    }

    /// `true` once every mailbox is dropped and every request taken: nothing is left to send.
    pub fn is_finished(&mut self) -> bool {
        match self.take() {
            Taken::Request(request) => {
                self.peeked = Some(request);
                false
            }
            Taken::Empty => false,
            Taken::Finished => true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_arrive_in_order_then_the_inbox_finishes() {
        let poll = Poll::new().unwrap();
        let (mailbox, mut inbox) = mailbox(&poll, Token(1)).unwrap();
        mailbox.post(Request::Send(Message::text("a"))).unwrap();
        mailbox
            .try_post(Request::Close(CloseNote::normal()))
            .unwrap();
        assert!(!inbox.is_finished(), "a request is waiting");
        assert_eq!(
            inbox.take(),
            Taken::Request(Request::Send(Message::text("a")))
        );
        drop(mailbox);
        assert_eq!(
            inbox.take(),
            Taken::Request(Request::Close(CloseNote::normal()))
        );
        assert!(inbox.is_finished());
        assert_eq!(inbox.take(), Taken::Finished);
    }

    #[test]
    fn a_full_queue_refuses_without_blocking() {
        let poll = Poll::new().unwrap();
        let (mailbox, inbox) = mailbox(&poll, Token(1)).unwrap();
        for _ in 0..CAPACITY {
            mailbox.try_post(Request::Send(Message::text("x"))).unwrap();
        }
        let full = mailbox.try_post(Request::Send(Message::text("x")));
        assert_eq!(full, Err(PostError::Full));
        drop(inbox);
        let gone = mailbox.try_post(Request::Send(Message::text("x")));
        assert_eq!(gone, Err(PostError::Gone));
    }
}
