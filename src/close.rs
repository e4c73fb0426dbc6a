//! Why a WebSocket session ended: one [`CloseReason`] per session, with its close code, its
//! text on the wire, and its name in logs and metrics (`metrics::Counter::closed_by`).
//! A leaf module: the session sets it, the metrics count it, the access log names it.
//!
//! A session records the first reason only: a close that times out, or a peer that vanishes
//! while we wait for its close reply, is still counted as what started the close.

/// Why a WebSocket session ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseReason {
    /// The client sent a close frame (its code is the session's close code).
    ClientClose,
    /// The connection ended without a close frame (EOF or reset).
    PeerGone,
    /// Reading or writing the socket failed.
    IoError,
    /// Its outbound queue would have passed `--max-buffered`.
    SlowConsumer,
    /// A `shardcast.v1` client sent no valid `hello` in time.
    NoHello,
    /// A binary frame from a `shardcast.v1` client.
    UnsupportedData,
    /// A message or frame over `--max-message`.
    MessageTooBig,
    /// A text message that is not UTF-8.
    InvalidUtf8,
    /// A frame that breaks RFC 6455.
    ProtocolError,
    /// tungstenite failed in a way no peer should cause.
    InternalError,
    /// No message for `--idle-timeout`.
    IdleTimeout,
    /// No answer to a ping within `--pong-timeout`.
    PongTimeout,
    /// The server is shutting down.
    Shutdown,
    /// Its shard missed some of the room's messages (the mesh had to drop them): the member
    /// is closed rather than left with a silent gap, and may resume with `since`.
    MissedMessages,
    /// It kept sending far over `--max-publish-rate` (flooding, `limits::FLOOD_FACTOR`).
    RateLimit,
    /// The server API disconnected it (`POST /api/disconnect`, docs/api.md); the API call
    /// may choose the code (1000, 1008 or 4000–4999) and the text.
    Disconnected,
    /// A `shardcast.v1` client's `hello` brought no valid token where one was needed
    /// (docs/auth.md).
    Unauthorized,
    /// A `hello` token that does not allow the session's room.
    RoomForbidden,
    /// The session's token expired while it was connected.
    TokenExpired,
    /// A plain client whose token does not allow publishing sent a message.
    ReadOnly,
}

impl CloseReason {
    /// Every reason, in [`Counter`] order.
    pub const ALL: [CloseReason; 20] = [
        CloseReason::ClientClose,
        CloseReason::PeerGone,
        CloseReason::IoError,
        CloseReason::SlowConsumer,
        CloseReason::NoHello,
        CloseReason::UnsupportedData,
        CloseReason::MessageTooBig,
        CloseReason::InvalidUtf8,
        CloseReason::ProtocolError,
        CloseReason::InternalError,
        CloseReason::IdleTimeout,
        CloseReason::PongTimeout,
        CloseReason::Shutdown,
        CloseReason::MissedMessages,
        CloseReason::RateLimit,
        CloseReason::Disconnected,
        CloseReason::Unauthorized,
        CloseReason::RoomForbidden,
        CloseReason::TokenExpired,
        CloseReason::ReadOnly,
    ];

    /// The code of the close frame the server sends for this reason (`None`: it sends none,
    /// or, for [`CloseReason::ClientClose`], it echoes the client's).
    pub fn code(self) -> Option<u16> {
        match self {
            CloseReason::ClientClose
            | CloseReason::PeerGone
            | CloseReason::IoError
            | CloseReason::PongTimeout => None,
            CloseReason::IdleTimeout => Some(1000),
            CloseReason::Shutdown => Some(1001),
            CloseReason::ProtocolError => Some(1002),
            CloseReason::UnsupportedData => Some(1003),
            CloseReason::InvalidUtf8 => Some(1007),
            // "Policy Violation": each its own reason text and counter.
            CloseReason::SlowConsumer | CloseReason::NoHello | CloseReason::RateLimit => Some(1008),
            // Policy violations, like the two above (docs/auth.md).
            CloseReason::Unauthorized
            | CloseReason::RoomForbidden
            | CloseReason::TokenExpired
            | CloseReason::ReadOnly => Some(1008),
            CloseReason::MessageTooBig => Some(1009),
            CloseReason::InternalError => Some(1011),
            // "Try Again Later": nothing is wrong with the client, and a resume repairs it.
            CloseReason::MissedMessages => Some(1013),
            // The first application code: the API's default when it names none.
            CloseReason::Disconnected => Some(4000),
        }
    }

    /// The reason text of the close frame (docs/operations.md lists them).
    pub fn text(self) -> &'static str {
        match self {
            CloseReason::ClientClose | CloseReason::PeerGone => "",
            CloseReason::IoError => "i/o error",
            CloseReason::SlowConsumer => "slow consumer",
            CloseReason::NoHello => "hello expected",
            CloseReason::UnsupportedData => "shardcast.v1 takes text frames only",
            CloseReason::MessageTooBig => "message too big",
            CloseReason::InvalidUtf8 => "invalid UTF-8",
            CloseReason::ProtocolError => "protocol error",
            CloseReason::InternalError => "internal error",
            CloseReason::IdleTimeout => "idle timeout",
            CloseReason::PongTimeout => "no pong",
            CloseReason::Shutdown => "server shutting down",
            CloseReason::MissedMessages => "missed messages: resume with since",
            CloseReason::RateLimit => "rate limit",
            CloseReason::Disconnected => "disconnected by the server",
            CloseReason::Unauthorized => "unauthorized",
            CloseReason::RoomForbidden => "room not allowed",
            CloseReason::TokenExpired => "token expired",
            CloseReason::ReadOnly => "read-only",
        }
    }

    /// The name in access lines and in `shardcast_closes_total{reason=…}`.
    pub fn name(self) -> &'static str {
        match self {
            CloseReason::ClientClose => "client_close",
            CloseReason::PeerGone => "peer_gone",
            CloseReason::IoError => "io_error",
            CloseReason::SlowConsumer => "slow_consumer",
            CloseReason::NoHello => "no_hello",
            CloseReason::UnsupportedData => "unsupported_data",
            CloseReason::MessageTooBig => "message_too_big",
            CloseReason::InvalidUtf8 => "invalid_utf8",
            CloseReason::ProtocolError => "protocol_error",
            CloseReason::InternalError => "internal_error",
            CloseReason::IdleTimeout => "idle_timeout",
            CloseReason::PongTimeout => "pong_timeout",
            CloseReason::Shutdown => "shutdown",
            CloseReason::MissedMessages => "missed_messages",
            CloseReason::RateLimit => "rate_limit",
            CloseReason::Disconnected => "disconnected",
            CloseReason::Unauthorized => "unauthorized",
            CloseReason::RoomForbidden => "room_forbidden",
            CloseReason::TokenExpired => "token_expired",
            CloseReason::ReadOnly => "read_only",
        }
    }

    /// The reason for an error tungstenite reported on input.
    pub fn for_ws_error(error: &tungstenite::Error) -> CloseReason {
        match error {
            tungstenite::Error::Capacity(_) => CloseReason::MessageTooBig,
            tungstenite::Error::Utf8(_) => CloseReason::InvalidUtf8,
            tungstenite::Error::Protocol(_) => CloseReason::ProtocolError,
            _ => CloseReason::InternalError,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_that_share_a_code_have_their_own_names_and_counters() {
        let slow = CloseReason::SlowConsumer;
        let hello = CloseReason::NoHello;
        assert_eq!(slow.code(), hello.code());
        assert_ne!(slow.name(), hello.name());
    }

    #[test]
    fn every_reason_has_a_distinct_name() {
        let mut names: Vec<_> = CloseReason::ALL.iter().map(|r| r.name()).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), CloseReason::ALL.len());
    }

    #[test]
    fn wire_texts_fit_a_control_frame() {
        for reason in CloseReason::ALL {
            assert!(reason.text().len() <= 123);
        }
    }
}
