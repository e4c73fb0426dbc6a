//! What the server API asks of an event loop, and what the loop answers (docs/api.md).
//!
//! The loops own every room and session, so the API service (`crate::api`) never reads their
//! state: it sends each loop concerned a [`Control`] through the loop's inbox (as a
//! [`crate::mesh::ShardMsg::Control`], and wakes it), and the loop answers with a [`Reply`] on
//! the channel the request carries. Each request has its own reply channel, with room for
//! every answer it waits for, so a loop never blocks on it (`try_send`; an answer nobody
//! waits for any more is dropped).
//!
//! Nothing here is on the message path: a member's message never sees these types.

use std::sync::Arc;
use std::time::Duration;

use crossbeam_channel::Sender;

use crate::chat::{Nick, Post};
use crate::frame::SharedFrame;
use crate::history::{Ask, Epoch, Start};
use crate::ids::{SessionId, SessionKey};
use crate::room::RoomId;

/// How long the API service waits for the loops' answers to one request (then 504).
pub const API_TIMEOUT: Duration = Duration::from_secs(5);

/// How long a session that read an API request on the main port waits for the answer before
/// it answers 504 itself: the service answers within [`API_TIMEOUT`] (plus, for a presence
/// list in a cluster, 2 s for the other nodes), so only a service that is gone (or an inbox
/// that stayed full) leaves it waiting this long.
pub const API_ANSWER_WITHIN: Duration = Duration::from_secs(10);

/// A request of the server API to one event loop.
#[derive(Debug)]
pub enum Control {
    /// Send `post` (from the server) to `room` as if a member had sent it: this loop is the
    /// room's sequencer (or, history off, any loop). Answered with [`Reply::Published`].
    Publish {
        /// The room.
        room: RoomId,
        /// The message.
        post: Post,
        /// Its place in the API request (a broadcast names several rooms).
        index: usize,
        /// Where the answer goes.
        reply: Sender<Reply>,
    },
    /// Count your members of every room. Answered with [`Reply::Rooms`].
    Rooms {
        /// Where the answer goes.
        reply: Sender<Reply>,
    },
    /// List your members of `room` (at most `limit` of them, v1 members first, when it is
    /// set). Answered with [`Reply::Members`].
    Presence {
        /// The room.
        room: RoomId,
        /// Most members to list (the count covers them all).
        limit: Option<usize>,
        /// Where the answer goes.
        reply: Sender<Reply>,
    },
    /// Another node's server API asks for your members of `room`: answer node `target`'s
    /// question `request` through the Redis bridge (`ClusterLink::answer_presence`).
    PresenceFor {
        /// The room.
        room: RoomId,
        /// The asking node.
        target: Arc<str>,
        /// Its question's id.
        request: u64,
    },
    /// Read `room`'s history as `ask` says, if you keep it. Answered with [`Reply::History`].
    History {
        /// The room.
        room: RoomId,
        /// The last messages wanted, or those after a position.
        ask: Ask,
        /// Where the answer goes.
        reply: Sender<Reply>,
    },
    /// Close every session of yours that `target` names. Answered with
    /// [`Reply::Disconnected`].
    Disconnect {
        /// Whom to close.
        target: Target,
        /// The close frame's code (1000, 1008 or 4000–4999).
        code: u16,
        /// The close frame's text (at most 123 bytes).
        text: Arc<str>,
        /// Where the answer goes.
        reply: Sender<Reply>,
    },
    /// The answer to a v1 `who` of your session `key` (`crate::roster`): queue `frame` (a
    /// `members` envelope, or an `error`) for it, if it is still the one that asked.
    Roster {
        /// The session.
        key: SessionKey,
        /// Its generation when it asked.
        generation: u64,
        /// What it gets.
        frame: SharedFrame,
    },
    /// The answer to an API request your session `key` read on the main port: send it, then
    /// close the connection.
    Answer {
        /// The session.
        key: SessionKey,
        /// Its generation when it asked (a newer session in the slot is not it).
        generation: u64,
        /// The whole HTTP response.
        response: Vec<u8>,
    },
}

/// A loop's answer to a [`Control`].
#[derive(Debug)]
pub enum Reply {
    /// The message of [`Control::Publish`] number `index` went out; `placed` when history is on.
    Published {
        /// The request's index.
        index: usize,
        /// Its place in the room.
        placed: Option<Placed>,
    },
    /// This loop's members per room.
    Rooms(Vec<RoomCount>),
    /// This loop's members of the room (up to the limit asked for), and how many it has.
    Members {
        /// The members listed.
        members: Vec<MemberInfo>,
        /// All this loop's members of the room.
        total: u64,
    },
    /// The room's history, if this loop keeps it and the room has one.
    History(Option<Start>),
    /// How many sessions this loop closed.
    Disconnected(u64),
}

/// Where a room's sequencer placed a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Placed {
    /// The room's history epoch.
    pub epoch: Epoch,
    /// The message's offset.
    pub offset: u64,
}

/// One loop's count of a room.
#[derive(Debug, Clone)]
pub struct RoomCount {
    /// The room.
    pub room: RoomId,
    /// This loop's members there.
    pub here: u64,
    /// Members on other nodes, as the Redis bridge told this loop (0 alone).
    pub others: u64,
}

/// A member of a room, as the API shows it.
#[derive(Debug, Clone)]
pub struct MemberInfo {
    /// Its session id as clients see it.
    pub id: Arc<str>,
    /// Its nickname (v1), or `None` (plain).
    pub nick: Option<Nick>,
    /// Whether it speaks `shardcast.v1`.
    pub v1: bool,
    /// The authenticated user (`sub` of its token), if it has one.
    pub user: Option<Arc<str>>,
}

/// Whom a [`Control::Disconnect`] closes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// The session with this id (on this node).
    Session(SessionId),
    /// Every session of this authenticated user (`sub` of its token, docs/auth.md).
    User(Arc<str>),
}

/// What a loop knows of a session when it checks a [`Target`].
#[derive(Debug, Clone, Copy)]
pub struct Who<'a> {
    /// The session's id.
    pub id: SessionId,
    /// Its authenticated user, if it has one.
    pub user: Option<&'a str>,
}

impl Target {
    /// Whether `who` is meant.
    pub fn matches(&self, who: &Who) -> bool {
        match self {
            Target::Session(id) => who.id == *id,
            Target::User(user) => who.user == Some(&**user),
        }
    }
}
