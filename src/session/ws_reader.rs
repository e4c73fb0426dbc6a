//! An open session's reading state, kept out of line and only while it is needed: tungstenite's
//! context, the `--max-publish-rate` buckets, input left over by a turn's budget, and where the
//! client's stream stands between frames (and, for its messages, the client's id as text).
//!
//! Most connections of a big broadcast are idle: they read and never send. So the reader is
//! made when the first bytes come (a message, a pong) and given back once the session is at
//! rest again (no part of a frame held, no fragmented message, no frame unread, full publish
//! buckets): an idle connection holds none of it. Its whole allocation (about 350 bytes with
//! tungstenite's 64-byte read buffer) was half of an idle connection's memory.

use std::sync::Arc;
use std::time::Duration;

use tungstenite::protocol::{Role, WebSocketConfig, WebSocketContext};

use super::boundary::Boundary;
use crate::config::Config;
use crate::limits::PublishMeter;

/// tungstenite's own read buffer, allocated with the context. Small on purpose: bytes arrive
/// through the shard's scratch buffer, so this only holds the part of a frame that has not
/// completed; 64 bytes take a chat message in one or two copies.
const WS_READ_CHUNK: usize = 64;

/// An open session's reading state (see the module docs).
pub(crate) struct WsReader {
    pub ctx: WebSocketContext,
    /// Untouched when no limit is set; its clock is `Liveness`'s last data message.
    pub publish: PublishMeter,
    /// Follows the bytes handed to `ctx`.
    pub boundary: Boundary,
    /// Input not handed to tungstenite yet (left over when a turn's budget ran out).
    pub stash: Vec<u8>,
    /// tungstenite may hold complete frames it has not returned yet.
    pub buffered: bool,
    /// The session's id as clients see it, made at its first message and kept for the next.
    pub id_text: Option<Arc<str>>,
}

impl WsReader {
    /// A fresh reader for a server session under `config`'s limits.
    pub fn new(config: &Config) -> Box<WsReader> {
        let ws_config = WebSocketConfig::default()
            .read_buffer_size(WS_READ_CHUNK)
            .write_buffer_size(0)
            .max_message_size(Some(config.max_message))
            .max_frame_size(Some(config.max_message));
        Box::new(WsReader {
            ctx: WebSocketContext::new(Role::Server, Some(ws_config)),
            publish: PublishMeter::default(),
            boundary: Boundary::default(),
            stash: Vec::new(),
            buffered: false,
            id_text: None,
        })
    }

    /// Whether input waits to be read without a readiness event.
    pub fn has_pending_input(&self) -> bool {
        self.buffered || !self.stash.is_empty()
    }

    /// Whether a fresh reader would do exactly what this one does from here on, so this one
    /// may be given back: tungstenite holds nothing (every frame it was handed is whole and
    /// returned, no fragmented message is open) and the publish buckets are full again
    /// `since_message` after the last data message. The close handshake is the session's to
    /// check: a closing session keeps its reader.
    pub fn at_rest(&self, config: &Config, since_message: Duration) -> bool {
        !self.has_pending_input()
            && self.boundary.at_rest()
            && config
                .max_publish_rate
                .is_none_or(|rate| self.publish.is_full(since_message, rate))
    }
}
