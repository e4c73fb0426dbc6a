//! What interactive mode knows about one connection: state, handshake facts, counts, close
//! frames and a bounded message history; and how `show` and `list` render it.
//!
//! The connection's thread writes it as things happen; the prompt reads it for `show`,
//! `list` and to refuse `send` on a closed connection.

use std::collections::VecDeque;
use std::fmt;

use tungstenite::Message;

use crate::client::connect::Handshake;
use crate::client::mailbox::CloseNote;
use crate::client::pump::{Ending, Side};
use crate::client::render;

/// Messages kept per connection for `show`; older ones are dropped (the counts go on).
pub const HISTORY_LIMIT: usize = 1000;

/// Bytes of a binary message shown (as hex) before eliding the rest.
const BINARY_PREVIEW: usize = 32;

/// Where a connection is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Resolving, connecting, TLS or HTTP upgrade under way.
    Connecting,
    /// Messages flow.
    Open,
    /// A close frame was sent or received; waiting for the handshake to finish.
    Closing,
    /// The close handshake happened.
    Closed,
    /// Could not connect, or broke without a close handshake.
    Failed,
}

impl State {
    /// Requests (send, close) still make sense: they are queued until the connection opens.
    pub fn accepts_requests(self) -> bool {
        matches!(self, State::Connecting | State::Open)
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            State::Connecting => "connecting",
            State::Open => "open",
            State::Closing => "closing",
            State::Closed => "closed",
            State::Failed => "failed",
        })
    }
}

/// Which way a message went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Direction {
    Sent,
    Received,
}

/// One connection's record.
#[derive(Debug, Clone)]
pub struct Record {
    url: String,
    state: State,
    handshake: Option<Handshake>,
    sent: u64,
    received: u64,
    history: VecDeque<(Direction, String)>,
    close_sent: Option<CloseNote>,
    close_received: Option<CloseNote>,
    error: Option<String>,
    /// Our session id on the server, from a `shardcast.v1` welcome: how the room's other
    /// members see us (their `join`, `leave` and `message` envelopes carry it).
    session: Option<String>,
}

impl Record {
    /// A connection to `url`, connecting.
    pub fn new(url: String) -> Record {
        Record {
            url,
            state: State::Connecting,
            handshake: None,
            sent: 0,
            received: 0,
            history: VecDeque::new(),
            close_sent: None,
            close_received: None,
            error: None,
            session: None,
        }
    }

    /// The current state.
    pub fn state(&self) -> State {
        self.state
    }

    /// The handshake succeeded.
    pub fn opened(&mut self, handshake: Handshake) {
        self.handshake = Some(handshake);
        self.state = State::Open;
    }

    /// Opening failed.
    pub fn failed(&mut self, error: String) {
        self.error = Some(error);
        self.state = State::Failed;
    }

    /// A message left.
    pub fn sent(&mut self, message: &Message) {
        self.sent += 1;
        self.remember(Direction::Sent, message);
    }

    /// A message arrived.
    pub fn received(&mut self, message: &Message) {
        self.received += 1;
        if let (None, Message::Text(text)) = (&self.session, message) {
            self.session = render::welcome_id(text);
        }
        self.remember(Direction::Received, message);
    }

    /// The close handshake started.
    pub fn closing(&mut self, initiator: Side, note: &CloseNote) {
        match initiator {
            Side::Us => self.close_sent = Some(note.clone()),
            Side::Peer => self.close_received = Some(note.clone()),
        }
        self.state = State::Closing;
    }

    /// The connection ended.
    pub fn ended(&mut self, ending: &Ending) {
        match ending {
            Ending::Closed {
                initiator, theirs, ..
            } => {
                self.close_received = Some(theirs.clone());
                if *initiator == Side::Peer {
                    // Tungstenite echoes the peer's frame.
                    self.close_sent = Some(theirs.clone());
                }
                self.state = State::Closed;
            }
            Ending::Lost { reason, .. } => {
                self.error = Some(reason.clone());
                self.state = State::Failed;
            }
        }
    }

    fn remember(&mut self, direction: Direction, message: &Message) {
        if self.history.len() == HISTORY_LIMIT {
            self.history.pop_front();
        }
        self.history.push_back((direction, describe(message)));
    }

    /// `show`: every fact, one per line (the prompt adds its `> ` prefix).
    pub fn show(&self) -> Vec<String> {
        let mut lines = vec![
            format!("URL: {}", self.url),
            format!("State: {}", self.state),
        ];
        let handshake = self.handshake.as_ref();
        let header = |value: Option<&String>| match (handshake, value) {
            (None, _) => "(not connected)".to_string(),
            (Some(_), None) => "(none)".to_string(),
            (Some(_), Some(v)) => v.clone(),
        };
        lines.push(format!(
            "Server: {}",
            header(handshake.and_then(|h| h.server.as_ref()))
        ));
        lines.push(format!(
            "Subprotocol: {}",
            header(handshake.and_then(|h| h.subprotocol.as_ref()))
        ));
        if let Some(peer) = handshake.and_then(|h| h.peer) {
            lines.push(format!("Peer: {peer}"));
        }
        if let Some(session) = &self.session {
            lines.push(format!("Session id: {session}"));
        }
        if let Some(note) = &self.close_sent {
            lines.push(format!("Close sent: {note}"));
        }
        if let Some(note) = &self.close_received {
            lines.push(format!("Close received: {note}"));
        }
        if let Some(error) = &self.error {
            lines.push(format!("Error: {error}"));
        }
        lines.push(format!(
            "Messages: {} sent, {} received",
            self.sent, self.received
        ));
        let total = self.sent + self.received;
        let kept = self.history.len() as u64;
        lines.push(match (kept, total - kept) {
            (0, _) => "History: (empty)".to_string(),
            (_, 0) => "History:".to_string(),
            (_, dropped) => format!("History (the first {dropped} dropped):"),
        });
        for (direction, text) in &self.history {
            let arrow = match direction {
                Direction::Sent => ">>",
                Direction::Received => "<<",
            };
            lines.push(format!("  {arrow} {text}"));
        }
        lines
    }

    /// `list`: one line.
    pub fn summary(&self) -> String {
        let session = self
            .session
            .as_ref()
            .map_or(String::new(), |id| format!("id {id}, "));
        format!(
            "{} {} ({session}{} sent, {} received)",
            self.state, self.url, self.sent, self.received
        )
    }
}

/// A message as one line of text: text as it is, binary as its length and leading hex.
pub fn describe(message: &Message) -> String {
    match message {
        Message::Text(text) => text.to_string(),
        Message::Binary(bytes) => {
            let hex: String = bytes
                .iter()
                .take(BINARY_PREVIEW)
                .map(|b| format!("{b:02x}"))
                .collect();
            let more = if bytes.len() > BINARY_PREVIEW {
                "…"
            } else {
                ""
            };
            format!("(binary, {} bytes) {hex}{more}", bytes.len())
        }
        other => format!("({other:?})"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn handshake() -> Handshake {
        Handshake {
            peer: None,
            server: Some("shardcast/0.1.0".into()),
            subprotocol: None,
        }
    }

    #[test]
    fn show_lists_the_facts_and_the_history_in_order() {
        let mut r = Record::new("ws://h/room".into());
        assert!(r.show().contains(&"Server: (not connected)".to_string()));
        r.opened(handshake());
        r.sent(&Message::text("hello"));
        r.received(&Message::text("hello"));
        r.received(&Message::binary(vec![1, 2, 255]));
        let shown = r.show();
        for expected in [
            "URL: ws://h/room",
            "State: open",
            "Server: shardcast/0.1.0",
            "Subprotocol: (none)",
            "Messages: 1 sent, 2 received",
            "History:",
            "  >> hello",
            "  << hello",
            "  << (binary, 3 bytes) 0102ff",
        ] {
            assert!(
                shown.contains(&expected.to_string()),
                "{expected:?} in {shown:#?}"
            );
        }
        assert_eq!(r.summary(), "open ws://h/room (1 sent, 2 received)");
    }

    #[test]
    fn a_welcome_gives_the_session_id() {
        let mut r = Record::new("ws://h/room".into());
        r.opened(handshake());
        r.received(&Message::text(
            r#"{"type":"welcome","id":"0.12","room":"room","nick":"a","online":1}"#,
        ));
        r.received(&Message::text(
            r#"{"type":"welcome","id":"9.9","room":"room","nick":"a","online":1}"#,
        ));
        assert!(r.show().contains(&"Session id: 0.12".to_string()));
        assert_eq!(
            r.summary(),
            "open ws://h/room (id 0.12, 0 sent, 2 received)"
        );
    }

    #[test]
    fn closing_and_ending_record_both_frames() {
        let mut r = Record::new("ws://h/".into());
        r.opened(handshake());
        let bye = CloseNote {
            code: 4000,
            reason: "bye".into(),
        };
        r.closing(Side::Us, &bye);
        assert_eq!(r.state(), State::Closing);
        assert!(!r.state().accepts_requests());
        r.ended(&Ending::Closed {
            initiator: Side::Us,
            ours: Some(bye.clone()),
            theirs: bye,
        });
        let shown = r.show();
        assert!(shown.contains(&"State: closed".to_string()), "{shown:#?}");
        assert!(shown.contains(&"Close sent: 4000 \"bye\"".to_string()));
        assert!(shown.contains(&"Close received: 4000 \"bye\"".to_string()));
    }

    #[test]
    fn failures_show_their_error() {
        let mut r = Record::new("ws://h/".into());
        r.failed("cannot connect to 127.0.0.1:1: refused".into());
        let shown = r.show();
        assert!(shown.contains(&"State: failed".to_string()));
        assert!(shown.contains(&"Error: cannot connect to 127.0.0.1:1: refused".to_string()));
        assert!(shown.contains(&"History: (empty)".to_string()));
    }

    #[test]
    fn history_is_bounded_but_counts_are_not() {
        let mut r = Record::new("ws://h/".into());
        r.opened(handshake());
        for i in 0..HISTORY_LIMIT + 5 {
            r.received(&Message::text(i.to_string()));
        }
        let shown = r.show();
        assert!(shown.contains(&format!("Messages: 0 sent, {} received", HISTORY_LIMIT + 5)));
        assert!(shown.contains(&"History (the first 5 dropped):".to_string()));
        assert!(shown.contains(&"  << 5".to_string()));
        assert!(!shown.contains(&"  << 4".to_string()));
    }
}
