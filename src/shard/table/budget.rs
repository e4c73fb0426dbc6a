//! What every idle connection owns, in bytes: the budget of issue 15 (≤ 450 B of server memory
//! per idle WebSocket, docs/benchmarks.md). A field added to any of these structures costs that
//! much on every connection, so it must show up here, in review, rather than in production.
//! docs/architecture.md ("What an idle connection holds") has the same table.

use std::mem::size_of;

use super::Slot;
use crate::ids::SessionKey;
use crate::session::Session;
use crate::session::liveness::Liveness;
use crate::session::outbound::OutQueue;
use crate::session::ws_reader::WsReader;
use crate::shard::timers;

type Conn = mio::net::TcpStream;

/// Each structure against its budget; raise a budget only with a reason in the commit.
#[test]
fn an_idle_connection_stays_within_its_budget() {
    let owned = [
        // Inline in the session table, per connection.
        (
            "slab slot (session + the table's books)",
            size_of::<Slot<Session<Conn>>>(),
            320,
        ),
        ("session", size_of::<Session<Conn>>(), 288),
        (
            "outbound queue (empty: no buffer)",
            size_of::<OutQueue>(),
            48,
        ),
        ("liveness (ping and idle timers)", size_of::<Liveness>(), 56),
        // Elsewhere in the shard, per connection.
        ("timer heap entry", size_of::<timers::Entry>(), 24),
        ("room member list entry", size_of::<SessionKey>(), 8),
    ];
    let over: Vec<String> = owned
        .iter()
        .filter(|(_, size, budget)| size > budget)
        .map(|(what, size, budget)| format!("{what}: {size} B > {budget} B"))
        .collect();
    assert!(over.is_empty(), "over budget: {over:?}");
    let fixed = size_of::<Slot<Session<Conn>>>() + size_of::<timers::Entry>() + 8;
    assert!(
        fixed <= 352,
        "an idle connection's fixed part grew to {fixed} B"
    );
}

/// What a connection holds only while its client sends (made at its first bytes, given back at
/// rest; `session::ws_reader`): tungstenite's context (with its 64-byte read buffer, allocated
/// apart) and the reader's own state. Not part of an idle connection's cost, but bounded too.
#[test]
fn a_sending_connection_s_reader_stays_within_its_budget() {
    let reader = size_of::<WsReader>();
    let context = size_of::<tungstenite::protocol::WebSocketContext>();
    assert!(context <= 256, "tungstenite's context grew to {context} B");
    assert!(reader <= context + 96, "the reader grew to {reader} B");
}
