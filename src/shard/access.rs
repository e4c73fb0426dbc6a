//! What the event loop writes to the log about sessions: the access lines (one per upgrade,
//! one per close of an upgraded session, target [`ACCESS`]) and the span that gives a
//! session's debug lines its id, peer and room. docs/operations.md, "Logs", lists the fields.
//! A member with a token adds its `user` id (absent for anonymous ones); a token itself never
//! appears, nor does the request target (whose query may hold one).

use std::net::SocketAddr;
use std::time::Instant;

use crate::chat::Dialect;
use crate::ids::{SessionId, SessionKey};
use crate::logging::ACCESS;
use crate::models::Reach;
use crate::session::{CloseReason, Session, Transport};
use crate::shard::Shard;

impl<R: Reach> Shard<R> {
    /// A span naming session `key` for its debug lines; a no-op unless debug is on.
    pub(super) fn session_span(&mut self, key: SessionKey) -> tracing::Span {
        if !tracing::enabled!(tracing::Level::DEBUG) {
            return tracing::Span::none();
        }
        let node = self.common.config.node_id.as_deref();
        self.table
            .with(key, |s| {
                tracing::debug_span!(
                    "session",
                    id = %Label(node, s.id()),
                    peer = %Peer(s.peer()),
                    room = s.room().map_or("", |r| r.as_str()),
                )
            })
            .unwrap_or_else(tracing::Span::none)
    }
}

/// The access line of a session that just upgraded.
pub(super) fn log_upgrade<S: Transport>(s: &Session<S>, node: Option<&str>) {
    tracing::info!(
        target: ACCESS,
        session = %Label(node, s.id()),
        peer = %Peer(s.peer()),
        room = s.room().map_or("", |r| r.as_str()),
        subprotocol = subprotocol(s.dialect()),
        user = s.user(),
        "upgrade"
    );
}

/// The access line of an upgraded session that ended (docs/operations.md, "Logs").
pub(super) fn log_close<S: Transport>(s: &Session<S>, node: Option<&str>, now: Instant) {
    let (reason, code) = s.close_reason().unwrap_or((CloseReason::PeerGone, 0));
    let (duration, bytes_in, bytes_out) = s.traffic(now);
    tracing::info!(
        target: ACCESS,
        session = %Label(node, s.id()),
        peer = %Peer(s.peer()),
        room = s.room().map_or("", |r| r.as_str()),
        subprotocol = subprotocol(s.dialect()),
        user = s.user(),
        reason = reason.name(),
        code,
        duration_ms = duration.as_millis() as u64,
        bytes_in,
        bytes_out,
        "close"
    );
}

/// The subprotocol as the access lines name it.
fn subprotocol(dialect: Dialect) -> &'static str {
    match dialect {
        Dialect::Plain => "none",
        Dialect::V1 => crate::chat::SUBPROTOCOL,
    }
}

/// A session id as clients see it, written without allocating (`"<node>.<worker>.<seq>"`).
struct Label<'a>(Option<&'a str>, SessionId);

impl std::fmt::Display for Label<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            Some(node) => write!(f, "{node}.{}", self.1),
            None => write!(f, "{}", self.1),
        }
    }
}

/// A peer address for a log line (`-` when unknown).
struct Peer(Option<SocketAddr>);

impl std::fmt::Display for Peer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            Some(addr) => addr.fmt(f),
            None => f.write_str("-"),
        }
    }
}
