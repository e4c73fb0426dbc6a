//! Counters and their Prometheus text rendering.
//!
//! Each shard counts into its own plain [`Counters`] (no atomics on the hot path) and
//! publishes a copy into its [`crate::stats::ShardStats`] slot once per loop turn, with
//! relaxed stores. `GET /metrics` sums the published copies. A scrape can therefore lag a
//! shard by one loop turn, which no scraper can tell from network delay.

use std::fmt::Write;

use crate::close::CloseReason;

/// Everything counted. The order is the index into [`Counters`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(usize)]
pub enum Counter {
    /// A WebSocket upgrade answered 101.
    HandshakeOk,
    /// An upgrade refused 400.
    HandshakeBadRequest,
    /// An upgrade refused 403 (origin).
    HandshakeForbidden,
    /// An upgrade refused 404 (not a room path).
    HandshakeNotFound,
    /// An upgrade refused 405.
    HandshakeMethod,
    /// An upgrade refused 426 (version).
    HandshakeVersion,
    /// An upgrade refused 503 (connection limit or shutting down).
    HandshakeUnavailable,
    /// A connection that sent no complete request head in time.
    HandshakeTimeout,
    /// An upgrade refused 401 (no valid token, docs/auth.md).
    HandshakeUnauthorized,
    /// Plain HTTP answers, by status.
    Http200,
    /// See [`Counter::Http200`].
    Http400,
    /// See [`Counter::Http200`].
    Http404,
    /// See [`Counter::Http200`].
    Http405,
    /// See [`Counter::Http200`].
    Http431,
    /// See [`Counter::Http200`].
    Http500,
    /// See [`Counter::Http200`].
    Http503,
    /// Data messages received from clients.
    MessagesIn,
    /// Bytes read from sockets (after TLS, if any).
    BytesIn,
    /// Bytes written to sockets (before TLS, if any).
    BytesOut,
    /// Broadcast frames queued to recipients (one per recipient).
    Deliveries,
    /// Vectored writes to client sockets (deliveries / writes = frames per syscall).
    SocketWrites,
    /// Sessions closed as slow consumers.
    SlowConsumer,
    /// Close frames sent, by code.
    Close1000,
    /// See [`Counter::Close1000`].
    Close1001,
    /// See [`Counter::Close1000`].
    Close1002,
    /// See [`Counter::Close1000`].
    Close1003,
    /// See [`Counter::Close1000`].
    Close1007,
    /// See [`Counter::Close1000`].
    Close1008,
    /// See [`Counter::Close1000`].
    Close1009,
    /// See [`Counter::Close1000`].
    Close1011,
    /// See [`Counter::Close1000`].
    Close1013,
    /// Connections dropped because a deadline passed, by deadline.
    TimerHandshake,
    /// See [`Counter::TimerHandshake`].
    TimerPong,
    /// See [`Counter::TimerHandshake`].
    TimerIdle,
    /// See [`Counter::TimerHandshake`].
    TimerClose,
    /// See [`Counter::TimerHandshake`] (a v1 client that sent no valid `hello`).
    TimerHello,
    /// See [`Counter::TimerHandshake`] (a token that expired while connected).
    TimerToken,
    /// `error` envelopes sent to v1 clients.
    EnvelopeErrors,
    /// `join`/`leave` envelopes built (each shared by every v1 member of its room).
    PresenceNotices,
    /// Broadcasts dropped because another shard's inbox and backlog were full.
    MeshDropped,
    /// Join/leave notices dropped because their membership change waited (`mesh` docs).
    PresenceNoticesDropped,
    /// WebSocket sessions ended, by [`CloseReason`] (in [`CloseReason::ALL`] order).
    ClosedClientClose,
    /// See [`Counter::ClosedClientClose`].
    ClosedPeerGone,
    /// See [`Counter::ClosedClientClose`].
    ClosedIoError,
    /// See [`Counter::ClosedClientClose`].
    ClosedSlowConsumer,
    /// See [`Counter::ClosedClientClose`].
    ClosedNoHello,
    /// See [`Counter::ClosedClientClose`].
    ClosedUnsupportedData,
    /// See [`Counter::ClosedClientClose`].
    ClosedMessageTooBig,
    /// See [`Counter::ClosedClientClose`].
    ClosedInvalidUtf8,
    /// See [`Counter::ClosedClientClose`].
    ClosedProtocolError,
    /// See [`Counter::ClosedClientClose`].
    ClosedInternalError,
    /// See [`Counter::ClosedClientClose`].
    ClosedIdleTimeout,
    /// See [`Counter::ClosedClientClose`].
    ClosedPongTimeout,
    /// See [`Counter::ClosedClientClose`].
    ClosedShutdown,
    /// See [`Counter::ClosedClientClose`].
    ClosedMissedMessages,
    /// See [`Counter::ClosedClientClose`].
    ClosedRateLimit,
    /// See [`Counter::ClosedClientClose`].
    ClosedDisconnected,
    /// See [`Counter::ClosedClientClose`].
    ClosedUnauthorized,
    /// See [`Counter::ClosedClientClose`].
    ClosedRoomForbidden,
    /// See [`Counter::ClosedClientClose`].
    ClosedTokenExpired,
    /// See [`Counter::ClosedClientClose`].
    ClosedReadOnly,
    /// Data messages dropped by `--max-publish-rate`.
    RateLimited,
    /// Room histories dropped whole to stay within `--history-memory` (new epochs).
    HistoryEvicted,
    /// Room histories dropped whole by `--history-ttl` (new epochs).
    HistoryExpired,
    /// Resumes (`since`) answered `recovered: true`.
    ResumeRecovered,
    /// Resumes answered `recovered: false`.
    ResumeNotRecovered,
    /// Tokens accepted (docs/auth.md).
    TokenOk,
    /// Tokens (or their absence) refused, by `auth::Refusal` (in `Refusal::ALL` order).
    TokenMissing,
    /// See [`Counter::TokenMissing`].
    TokenTooLarge,
    /// See [`Counter::TokenMissing`].
    TokenMalformed,
    /// See [`Counter::TokenMissing`].
    TokenAlgorithm,
    /// See [`Counter::TokenMissing`].
    TokenSignature,
    /// See [`Counter::TokenMissing`].
    TokenExpired,
    /// See [`Counter::TokenMissing`].
    TokenNotYetValid,
    /// See [`Counter::TokenMissing`].
    TokenClaims,
    /// See [`Counter::TokenMissing`].
    TokenRoom,
    /// Loop turns (published per shard).
    LoopTurns,
}

/// Number of counters.
pub const COUNTERS: usize = Counter::LoopTurns as usize + 1;

/// `(family, label, help)` per counter, in [`Counter`] order. Counters of one family are
/// adjacent and share the help text of the first.
const DESCRIPTIONS: [(&str, &str, &str); COUNTERS] = [
    (
        "shardcast_handshakes_total",
        "result=\"ok\"",
        "WebSocket upgrades by result",
    ),
    ("shardcast_handshakes_total", "result=\"bad_request\"", ""),
    ("shardcast_handshakes_total", "result=\"forbidden\"", ""),
    ("shardcast_handshakes_total", "result=\"not_found\"", ""),
    ("shardcast_handshakes_total", "result=\"method\"", ""),
    ("shardcast_handshakes_total", "result=\"version\"", ""),
    ("shardcast_handshakes_total", "result=\"unavailable\"", ""),
    ("shardcast_handshakes_total", "result=\"timeout\"", ""),
    ("shardcast_handshakes_total", "result=\"unauthorized\"", ""),
    (
        "shardcast_http_responses_total",
        "status=\"200\"",
        "Plain HTTP answers by status",
    ),
    ("shardcast_http_responses_total", "status=\"400\"", ""),
    ("shardcast_http_responses_total", "status=\"404\"", ""),
    ("shardcast_http_responses_total", "status=\"405\"", ""),
    ("shardcast_http_responses_total", "status=\"431\"", ""),
    ("shardcast_http_responses_total", "status=\"500\"", ""),
    ("shardcast_http_responses_total", "status=\"503\"", ""),
    (
        "shardcast_messages_received_total",
        "",
        "Data messages received from clients",
    ),
    (
        "shardcast_bytes_received_total",
        "",
        "Bytes read from client connections",
    ),
    (
        "shardcast_bytes_sent_total",
        "",
        "Bytes written to client connections",
    ),
    (
        "shardcast_broadcast_deliveries_total",
        "",
        "Broadcast frames queued, one per recipient",
    ),
    (
        "shardcast_socket_writes_total",
        "",
        "Vectored writes to client sockets",
    ),
    (
        "shardcast_slow_consumer_closes_total",
        "",
        "Sessions closed for exceeding max-buffered",
    ),
    (
        "shardcast_close_frames_sent_total",
        "code=\"1000\"",
        "Close frames sent by code",
    ),
    ("shardcast_close_frames_sent_total", "code=\"1001\"", ""),
    ("shardcast_close_frames_sent_total", "code=\"1002\"", ""),
    ("shardcast_close_frames_sent_total", "code=\"1003\"", ""),
    ("shardcast_close_frames_sent_total", "code=\"1007\"", ""),
    ("shardcast_close_frames_sent_total", "code=\"1008\"", ""),
    ("shardcast_close_frames_sent_total", "code=\"1009\"", ""),
    ("shardcast_close_frames_sent_total", "code=\"1011\"", ""),
    ("shardcast_close_frames_sent_total", "code=\"1013\"", ""),
    (
        "shardcast_timer_closes_total",
        "timer=\"handshake\"",
        "Connections ended by a deadline",
    ),
    ("shardcast_timer_closes_total", "timer=\"pong\"", ""),
    ("shardcast_timer_closes_total", "timer=\"idle\"", ""),
    ("shardcast_timer_closes_total", "timer=\"close\"", ""),
    ("shardcast_timer_closes_total", "timer=\"hello\"", ""),
    ("shardcast_timer_closes_total", "timer=\"token\"", ""),
    (
        "shardcast_envelope_errors_total",
        "",
        "error envelopes sent to shardcast.v1 clients",
    ),
    (
        "shardcast_presence_notices_total",
        "",
        "join and leave envelopes built, each shared by a room's v1 members",
    ),
    (
        "shardcast_mesh_dropped_total",
        "",
        "Broadcasts dropped: a shard's inbox and backlog were full",
    ),
    (
        "shardcast_presence_notices_dropped_total",
        "",
        "join and leave notices dropped: another shard's backlog was full, the count still travelled",
    ),
    (
        "shardcast_closes_total",
        "reason=\"client_close\"",
        "WebSocket sessions ended, by reason (docs/operations.md)",
    ),
    ("shardcast_closes_total", "reason=\"peer_gone\"", ""),
    ("shardcast_closes_total", "reason=\"io_error\"", ""),
    ("shardcast_closes_total", "reason=\"slow_consumer\"", ""),
    ("shardcast_closes_total", "reason=\"no_hello\"", ""),
    ("shardcast_closes_total", "reason=\"unsupported_data\"", ""),
    ("shardcast_closes_total", "reason=\"message_too_big\"", ""),
    ("shardcast_closes_total", "reason=\"invalid_utf8\"", ""),
    ("shardcast_closes_total", "reason=\"protocol_error\"", ""),
    ("shardcast_closes_total", "reason=\"internal_error\"", ""),
    ("shardcast_closes_total", "reason=\"idle_timeout\"", ""),
    ("shardcast_closes_total", "reason=\"pong_timeout\"", ""),
    ("shardcast_closes_total", "reason=\"shutdown\"", ""),
    ("shardcast_closes_total", "reason=\"missed_messages\"", ""),
    ("shardcast_closes_total", "reason=\"rate_limit\"", ""),
    ("shardcast_closes_total", "reason=\"disconnected\"", ""),
    ("shardcast_closes_total", "reason=\"unauthorized\"", ""),
    ("shardcast_closes_total", "reason=\"room_forbidden\"", ""),
    ("shardcast_closes_total", "reason=\"token_expired\"", ""),
    ("shardcast_closes_total", "reason=\"read_only\"", ""),
    (
        "shardcast_rate_limited_messages_total",
        "",
        "Data messages dropped by max-publish-rate",
    ),
    (
        "shardcast_history_dropped_total",
        "cause=\"memory\"",
        "Room histories dropped whole (their rooms start a new epoch)",
    ),
    ("shardcast_history_dropped_total", "cause=\"ttl\"", ""),
    (
        "shardcast_resumes_total",
        "recovered=\"true\"",
        "Resumes with since, by whether they were exact",
    ),
    ("shardcast_resumes_total", "recovered=\"false\"", ""),
    (
        "shardcast_tokens_total",
        "result=\"ok\"",
        "Connection tokens checked, by result (docs/auth.md)",
    ),
    ("shardcast_tokens_total", "result=\"missing\"", ""),
    ("shardcast_tokens_total", "result=\"too_large\"", ""),
    ("shardcast_tokens_total", "result=\"malformed\"", ""),
    ("shardcast_tokens_total", "result=\"algorithm\"", ""),
    ("shardcast_tokens_total", "result=\"signature\"", ""),
    ("shardcast_tokens_total", "result=\"expired\"", ""),
    ("shardcast_tokens_total", "result=\"not_yet_valid\"", ""),
    ("shardcast_tokens_total", "result=\"claims\"", ""),
    ("shardcast_tokens_total", "result=\"room\"", ""),
    (
        "shardcast_loop_iterations_total",
        "",
        "Shard event-loop turns",
    ),
];

impl Counter {
    /// The counter of sessions that ended for `reason`.
    pub fn closed_by(reason: CloseReason) -> Counter {
        match reason {
            CloseReason::ClientClose => Counter::ClosedClientClose,
            CloseReason::PeerGone => Counter::ClosedPeerGone,
            CloseReason::IoError => Counter::ClosedIoError,
            CloseReason::SlowConsumer => Counter::ClosedSlowConsumer,
            CloseReason::NoHello => Counter::ClosedNoHello,
            CloseReason::UnsupportedData => Counter::ClosedUnsupportedData,
            CloseReason::MessageTooBig => Counter::ClosedMessageTooBig,
            CloseReason::InvalidUtf8 => Counter::ClosedInvalidUtf8,
            CloseReason::ProtocolError => Counter::ClosedProtocolError,
            CloseReason::InternalError => Counter::ClosedInternalError,
            CloseReason::IdleTimeout => Counter::ClosedIdleTimeout,
            CloseReason::PongTimeout => Counter::ClosedPongTimeout,
            CloseReason::Shutdown => Counter::ClosedShutdown,
            CloseReason::MissedMessages => Counter::ClosedMissedMessages,
            CloseReason::RateLimit => Counter::ClosedRateLimit,
            CloseReason::Disconnected => Counter::ClosedDisconnected,
            CloseReason::Unauthorized => Counter::ClosedUnauthorized,
            CloseReason::RoomForbidden => Counter::ClosedRoomForbidden,
            CloseReason::TokenExpired => Counter::ClosedTokenExpired,
            CloseReason::ReadOnly => Counter::ClosedReadOnly,
        }
    }

    /// The label of this counter within its family (e.g. `result="ok"`; empty for none).
    pub fn label(self) -> &'static str {
        DESCRIPTIONS[self as usize].1
    }
}

/// One shard's counts.
#[derive(Debug, Clone)]
pub struct Counters(pub [u64; COUNTERS]);

impl Default for Counters {
    fn default() -> Self {
        Counters([0; COUNTERS])
    }
}

impl Counters {
    /// Adds `n` to `counter`.
    #[inline]
    pub fn add(&mut self, counter: Counter, n: u64) {
        self.0[counter as usize] += n;
    }

    /// Adds one to `counter`.
    #[inline]
    pub fn bump(&mut self, counter: Counter) {
        self.add(counter, 1);
    }

    /// The close-frame counter for `code`, if it is one we count.
    pub fn close_code(&mut self, code: u16) {
        let counter = match code {
            1000 => Counter::Close1000,
            1001 => Counter::Close1001,
            1002 => Counter::Close1002,
            1003 => Counter::Close1003,
            1007 => Counter::Close1007,
            1008 => Counter::Close1008,
            1009 => Counter::Close1009,
            1011 => Counter::Close1011,
            1013 => Counter::Close1013,
            _ => return,
        };
        self.bump(counter);
    }
}

/// Rooms open on this node and the largest one's members (`/metrics`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Census {
    /// Rooms with at least one member on this node.
    pub rooms: u64,
    /// The members on this node of the room with the most.
    pub largest: u64,
}

impl Census {
    /// Counts a room with `members` on this node.
    pub fn count(&mut self, members: u64) {
        self.rooms += 1;
        self.largest = self.largest.max(members);
    }
}

/// Per-shard gauges and counters, as read back from the published slots.
#[derive(Debug, Default)]
pub struct ShardSnapshot {
    /// Open TCP connections.
    pub connections: u64,
    /// Open WebSocket sessions.
    pub websockets: u64,
    /// The rooms it accounts for.
    pub census: Census,
    /// The counters.
    pub counters: Counters,
}

#[cfg(test)]
mod reason_tests {
    use super::*;

    #[test]
    fn every_close_reason_has_its_own_counter_in_order() {
        for (i, reason) in CloseReason::ALL.iter().enumerate() {
            assert_eq!(
                Counter::closed_by(*reason) as usize,
                Counter::ClosedClientClose as usize + i
            );
        }
        let at = Counter::closed_by(CloseReason::SlowConsumer) as usize;
        assert_eq!(DESCRIPTIONS[at].1, "reason=\"slow_consumer\"");
    }
}

/// What the accepting thread counts, outside any shard's counters.
#[derive(Debug, Default, Clone, Copy)]
pub struct AcceptFigures {
    /// Connections refused by `--max-connections-per-ip`.
    pub per_ip_refused: u64,
    /// Connections refused by `--max-connection-rate-per-ip`.
    pub rate_refused: u64,
    /// Addresses the connection rate limit tracks now.
    pub rate_addresses: u64,
}

/// Renders the Prometheus text format (version 0.0.4), with the acceptor's figures.
pub fn render(shards: &[ShardSnapshot], accept: &AcceptFigures) -> String {
    let mut out = String::with_capacity(4096);
    gauge(
        &mut out,
        "shardcast_shards",
        "Number of shards",
        [(None, shards.len() as u64)],
    );
    let per_shard = |pick: fn(&ShardSnapshot) -> u64| {
        shards
            .iter()
            .enumerate()
            .map(move |(i, s)| (Some(i), pick(s)))
            .collect::<Vec<_>>()
    };
    gauge(
        &mut out,
        "shardcast_connections",
        "Open connections per shard",
        per_shard(|s| s.connections),
    );
    gauge(
        &mut out,
        "shardcast_connections_all",
        "Open connections over all shards",
        [(None, shards.iter().map(|s| s.connections).sum())],
    );
    gauge(
        &mut out,
        "shardcast_websocket_sessions",
        "Open WebSocket sessions per shard",
        per_shard(|s| s.websockets),
    );
    gauge(
        &mut out,
        "shardcast_websocket_sessions_all",
        "Open WebSocket sessions over all shards",
        [(None, shards.iter().map(|s| s.websockets).sum())],
    );
    gauge(
        &mut out,
        "shardcast_rooms",
        "Rooms with members on this node",
        [(None, shards.iter().map(|s| s.census.rooms).sum())],
    );
    gauge(
        &mut out,
        "shardcast_room_members_max",
        "Members on this node of its largest room",
        [(
            None,
            shards.iter().map(|s| s.census.largest).max().unwrap_or(0),
        )],
    );

    let mut family = "";
    for (index, (name, label, help)) in DESCRIPTIONS.iter().enumerate() {
        if *name != family {
            family = name;
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
        }
        if index == Counter::LoopTurns as usize {
            for (shard, s) in shards.iter().enumerate() {
                let _ = writeln!(out, "{name}{{shard=\"{shard}\"}} {}", s.counters.0[index]);
            }
            continue;
        }
        let total: u64 = shards.iter().map(|s| s.counters.0[index]).sum();
        // (Each family's lines follow its HELP/TYPE header.)
        if label.is_empty() {
            let _ = writeln!(out, "{name} {total}");
        } else {
            let _ = writeln!(out, "{name}{{{label}}} {total}");
        }
    }
    single(
        &mut out,
        "shardcast_per_ip_refused_total",
        "counter",
        "Connections refused by max-connections-per-ip",
        accept.per_ip_refused,
    );
    single(
        &mut out,
        "shardcast_connection_rate_refused_total",
        "counter",
        "Connections refused by max-connection-rate-per-ip (429)",
        accept.rate_refused,
    );
    single(
        &mut out,
        "shardcast_connection_rate_addresses",
        "gauge",
        "Addresses tracked by max-connection-rate-per-ip",
        accept.rate_addresses,
    );
    out
}

/// Appends a family of one unlabelled sample: its HELP and TYPE lines, then the value.
pub fn single(out: &mut String, name: &str, kind: &str, help: &str, value: impl std::fmt::Display) {
    let _ = writeln!(
        out,
        "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
    );
}

fn gauge(
    out: &mut String,
    name: &str,
    help: &str,
    values: impl IntoIterator<Item = (Option<usize>, u64)>,
) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge");
    for (shard, value) in values {
        match shard {
            Some(shard) => {
                let _ = writeln!(out, "{name}{{shard=\"{shard}\"}} {value}");
            }
            None => {
                let _ = writeln!(out, "{name} {value}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families_are_contiguous_and_each_has_help() {
        let mut seen = Vec::new();
        let mut last = "";
        for (name, _, help) in DESCRIPTIONS {
            if name != last {
                assert!(!seen.contains(&name), "{name} is split");
                assert!(!help.is_empty(), "{name} has no help");
                seen.push(name);
                last = name;
            }
        }
    }

    #[test]
    fn totals_sum_over_shards() {
        let mut a = ShardSnapshot::default();
        let mut b = ShardSnapshot::default();
        a.counters.add(Counter::MessagesIn, 2);
        b.counters.add(Counter::MessagesIn, 3);
        a.connections = 4;
        let accept = AcceptFigures {
            per_ip_refused: 7,
            rate_refused: 8,
            rate_addresses: 9,
        };
        let text = render(&[a, b], &accept);
        assert!(text.contains("\nshardcast_per_ip_refused_total 7\n"));
        assert!(text.contains("\nshardcast_connection_rate_refused_total 8\n"));
        assert!(text.contains("\nshardcast_connection_rate_addresses 9\n"));
        assert!(text.contains("\nshardcast_messages_received_total 5\n"));
        assert!(text.contains("\nshardcast_connections{shard=\"0\"} 4\n"));
        assert!(text.contains("\nshardcast_connections_all 4\n"));
        assert!(text.contains("shardcast_loop_iterations_total{shard=\"1\"} 0\n"));
    }
}
