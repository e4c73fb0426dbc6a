//! A message on its way to a room, and its renderings for each dialect.

use std::sync::{Arc, OnceLock};
use std::time::{SystemTime, UNIX_EPOCH};

use tungstenite::{Bytes, Utf8Bytes};

use crate::chat::envelope;
use crate::chat::{Dialect, Nick};
use crate::frame::{OP_BINARY, OP_TEXT, SharedFrame, encode_shared};

/// What a message carries.
#[derive(Debug, Clone)]
pub enum Body {
    /// A text message (tungstenite's bytes, shared, not copied).
    Text(Utf8Bytes),
    /// A binary message (plain clients only).
    Binary(Bytes),
}

/// A message a member sent to its room.
#[derive(Debug, Clone)]
pub struct Post {
    /// The sender's id as v1 clients see it (with the node prefix in a cluster).
    pub sender: Arc<str>,
    /// The sender's nickname; `None` for a plain client.
    pub nick: Option<Nick>,
    /// The sender's user id, when it came with a token (docs/auth.md).
    pub user: Option<Arc<str>>,
    /// The content.
    pub body: Body,
    /// When the server received it, in milliseconds since the Unix epoch.
    pub ts: u64,
}

/// The sender id of a message the server API sent (`POST /api/publish`): never a session's
/// id, which always has a dot (`"<worker>.<seq>"`).
pub const SERVER_SENDER: &str = "server";

impl Post {
    /// A message from the server API, received now.
    pub fn from_server(body: Body) -> Post {
        Post {
            sender: Arc::from(SERVER_SENDER),
            nick: None,
            user: None,
            body,
            ts: now_millis(),
        }
    }

    /// Whether the server API sent it (v1 members see `"from":"server"`).
    pub fn is_from_server(&self) -> bool {
        &*self.sender == SERVER_SENDER
    }
}

/// Milliseconds since the Unix epoch, now (0 if the clock is before 1970).
pub fn now_millis() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Which renderings a room's members need, as far as the sending shard knows.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Needs {
    /// Some plain member somewhere.
    pub plain: bool,
    /// Some v1 member somewhere.
    pub v1: bool,
}

/// A post with the frames its recipients need, encoded once and shared by every shard.
///
/// The sending shard encodes the renderings its view of the room calls for. A shard whose
/// members need one that is missing (a v1 member joined there while the post was in flight)
/// encodes it for itself: correct, merely not shared.
#[derive(Debug)]
pub struct Outgoing {
    /// The message.
    pub post: Post,
    /// Its offset in its room (1, 2, …), or 0 when history and offsets are off.
    pub offset: u64,
    plain: Option<SharedFrame>,
    v1: Option<SharedFrame>,
    /// The v1 rendering marked as history, made the first time a resume replays it.
    replayed_v1: OnceLock<SharedFrame>,
}

impl Outgoing {
    /// Encodes `post` for the dialects in `needs`, without an offset (history off).
    pub fn new(post: Post, needs: Needs) -> Arc<Outgoing> {
        Outgoing::sequenced(post, needs, 0)
    }

    /// Encodes `post`, the room's message number `offset` (0: none), for the dialects in
    /// `needs`.
    pub fn sequenced(post: Post, needs: Needs, offset: u64) -> Arc<Outgoing> {
        let plain = needs
            .plain
            .then(|| render(&post, Dialect::Plain, offset, false));
        // A binary frame is the same for both dialects.
        let v1 = match (&post.body, needs.v1) {
            (Body::Binary(_), true) => plain
                .clone()
                .or_else(|| Some(render(&post, Dialect::V1, offset, false))),
            (Body::Text(_), true) => Some(render(&post, Dialect::V1, offset, false)),
            (_, false) => None,
        };
        Arc::new(Outgoing {
            post,
            offset,
            plain,
            v1,
            replayed_v1: OnceLock::new(),
        })
    }

    /// The frame for members speaking `dialect`.
    pub fn frame(&self, dialect: Dialect) -> SharedFrame {
        let cached = match dialect {
            Dialect::Plain => &self.plain,
            Dialect::V1 => &self.v1,
        };
        match cached {
            Some(frame) => frame.clone(),
            None => render(&self.post, dialect, self.offset, false),
        }
    }

    /// The frame for a `dialect` member that gets this message replayed from history:
    /// v1 text is marked `"history":true`; plain clients get the same bytes as live.
    pub fn replay_frame(&self, dialect: Dialect) -> SharedFrame {
        match (&self.post.body, dialect) {
            (Body::Text(_), Dialect::V1) => self
                .replayed_v1
                .get_or_init(|| render(&self.post, Dialect::V1, self.offset, true))
                .clone(),
            _ => self.frame(dialect),
        }
    }

    /// Bytes this message may hold while a history keeps it: the message, the frames it
    /// has made, and room for the v1 rendering a resume may make later (so that the figure
    /// does not change while the message is kept, and the memory bound holds afterwards).
    pub fn footprint(&self) -> usize {
        let body = match &self.post.body {
            Body::Text(text) => text.len(),
            Body::Binary(data) => data.len(),
        };
        // An `Arc`'s two counts come before each shared allocation.
        let shared = |len: usize| len + 2 * std::mem::size_of::<usize>();
        let frame = |f: Option<&SharedFrame>| f.map_or(0, |f| shared(f.len()));
        let nick = self.post.nick.as_ref().map_or(0, |n| n.as_str().len());
        let user = self.post.user.as_ref().map_or(0, |u| u.len());
        let replayed = match (&self.post.body, &self.v1) {
            (Body::Binary(_), _) => 0,
            // `"history":true` and its comma.
            (Body::Text(_), Some(v1)) => shared(v1.len() + 16),
            // The envelope's fixed part, with the id, nick, ts and offset at their longest.
            (Body::Text(_), None) => shared(body + self.post.sender.len() + nick + user + 128),
        };
        shared(std::mem::size_of::<Outgoing>())
            + body
            + shared(self.post.sender.len())
            + self.post.nick.as_ref().map_or(0, |_| shared(nick))
            + self.post.user.as_ref().map_or(0, |_| shared(user))
            + frame(self.plain.as_ref())
            + frame(self.v1.as_ref())
            + replayed
    }
}

/// One rendering of `post`, the room's message `offset` (0: none), `replayed` from history
/// or live (docs/protocol.md, "Between dialects").
fn render(post: &Post, dialect: Dialect, offset: u64, replayed: bool) -> SharedFrame {
    match (&post.body, dialect) {
        (Body::Binary(data), _) => encode_shared(OP_BINARY, data),
        (Body::Text(text), Dialect::Plain) => match &post.nick {
            None => encode_shared(OP_TEXT, text.as_bytes()),
            Some(nick) => {
                let mut line = String::with_capacity(nick.as_str().len() + 2 + text.len());
                line.push_str(nick.as_str());
                line.push_str(": ");
                line.push_str(text);
                encode_shared(OP_TEXT, line.as_bytes())
            }
        },
        (Body::Text(text), Dialect::V1) => envelope::message(
            envelope::Who {
                id: &post.sender,
                nick: post.nick.as_ref().map(Nick::as_str),
                user: post.user.as_deref(),
            },
            text,
            post.ts,
            envelope::Place {
                offset,
                replayed,
                from_server: post.is_from_server(),
            },
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn post(nick: Option<&str>, body: Body) -> Post {
        Post {
            sender: Arc::from("0.7"),
            nick: nick.and_then(Nick::parse),
            user: None,
            body,
            ts: 42,
        }
    }

    #[test]
    fn plain_text_from_plain_is_byte_exact_and_v1_gets_an_envelope() {
        let out = Outgoing::new(
            post(None, Body::Text("hi".into())),
            Needs {
                plain: true,
                v1: true,
            },
        );
        assert_eq!(&out.frame(Dialect::Plain)[..], b"\x81\x02hi");
        let v1 = out.frame(Dialect::V1);
        assert_eq!(
            std::str::from_utf8(&v1[2..]).unwrap(),
            r#"{"type":"message","id":"0.7","nick":null,"text":"hi","ts":42}"#
        );
    }

    #[test]
    fn v1_text_reaches_plain_clients_as_nick_colon_text() {
        let out = Outgoing::new(post(Some("ann"), Body::Text("hi".into())), Needs::default());
        assert_eq!(&out.frame(Dialect::Plain)[..], b"\x81\x07ann: hi");
    }

    #[test]
    fn renderings_are_shared_when_needed_and_made_late_when_not() {
        let out = Outgoing::new(
            post(None, Body::Text("x".into())),
            Needs {
                plain: true,
                v1: false,
            },
        );
        assert!(Arc::ptr_eq(
            &out.frame(Dialect::Plain),
            &out.frame(Dialect::Plain)
        ));
        // Not encoded up front: each late call encodes afresh.
        assert!(!Arc::ptr_eq(
            &out.frame(Dialect::V1),
            &out.frame(Dialect::V1)
        ));
    }

    #[test]
    fn binary_is_one_frame_for_both_dialects() {
        let out = Outgoing::new(
            post(None, Body::Binary(Bytes::from_static(b"\x00\x01"))),
            Needs {
                plain: true,
                v1: true,
            },
        );
        assert_eq!(&out.frame(Dialect::V1)[..], b"\x82\x02\x00\x01");
        assert!(Arc::ptr_eq(
            &out.frame(Dialect::V1),
            &out.frame(Dialect::Plain)
        ));
    }
}
