//! A small in-process relay that keeps the history contract of shardcast.v1 (offsets, a
//! welcome with `epoch`, `offset`, `replay` and `recovered`, `since` and `history` in the
//! URL), one room, tungstenite on std threads — and can break it on purpose.
//!
//! A hub thread owns the room: offsets, history and members, so a join (welcome, replay,
//! membership) and every message happen in one order. Reader threads only forward.

use std::collections::VecDeque;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::mpsc;
use std::thread;

use tungstenite::handshake::server::{Request, Response};
use tungstenite::http::HeaderValue;
use tungstenite::protocol::Role;
use tungstenite::{Message, WebSocket};

const EPOCH: &str = "00000000000000aa";

/// How the relay breaks its promise on a resume it calls recovered.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Breach {
    #[default]
    None,
    /// Replays the client's own last message again: a duplicate.
    ReplayOneTooMany,
    /// Leaves out the first message the client missed: a hole.
    SkipFirstMissed,
}

/// What a joining client asked for in its URL.
#[derive(Debug, Default)]
struct Join {
    v1: bool,
    since: Option<(String, u64)>,
    history: usize,
}

enum Event {
    Join(Box<WebSocket<TcpStream>>, Join),
    Text(String),
}

/// Starts the relay on an ephemeral loopback port; its history keeps the last `history`
/// messages (a resume from further back is not recovered).
pub fn start_history_relay(breach: Breach, history: usize) -> SocketAddr {
    start_history_relay_nodes(breach, history, 1)[0]
}

/// The relay behind `nodes` listeners, each on its own port: to a client, the nodes of a
/// cluster whose rooms have one sequencer (one room, one history, one epoch).
pub fn start_history_relay_nodes(breach: Breach, history: usize, nodes: usize) -> Vec<SocketAddr> {
    let (hub_tx, hub_rx) = mpsc::channel::<Event>();
    thread::spawn(move || hub(hub_rx, breach, history));
    (0..nodes)
        .map(|_| {
            let listener = TcpListener::bind("127.0.0.1:0").expect("bind history relay");
            let addr = listener.local_addr().expect("relay address");
            let hub_tx = hub_tx.clone();
            thread::spawn(move || {
                for stream in listener.incoming() {
                    let Ok(stream) = stream else { continue };
                    let hub_tx = hub_tx.clone();
                    thread::spawn(move || serve(stream, hub_tx));
                }
            });
            addr
        })
        .collect()
}

// The handshake callback's error type is tungstenite's (an HTTP response), large or not.
#[allow(clippy::result_large_err)]
fn serve(stream: TcpStream, hub_tx: mpsc::Sender<Event>) {
    let _ = stream.set_nodelay(true);
    let mut join = Join::default();
    let callback = |request: &Request, mut response: Response| {
        join = parse_join(request);
        if join.v1 {
            response.headers_mut().insert(
                "Sec-WebSocket-Protocol",
                HeaderValue::from_static("shardcast.v1"),
            );
        }
        Ok(response)
    };
    let Ok(mut reader) = tungstenite::accept_hdr(stream, callback) else {
        return;
    };
    let v1 = join.v1;
    let Ok(write_half) = reader.get_ref().try_clone() else {
        return;
    };
    let writer = WebSocket::from_raw_socket(write_half, Role::Server, None);
    if hub_tx.send(Event::Join(Box::new(writer), join)).is_err() {
        return;
    }
    while let Ok(message) = reader.read() {
        let Message::Text(text) = message else {
            continue;
        };
        let text = if v1 {
            // A v1 client's text is the `text` of its message envelope.
            match serde_json::from_str::<serde_json::Value>(text.as_str()) {
                Ok(v) => match v["text"].as_str() {
                    Some(t) => t.to_string(),
                    None => continue,
                },
                Err(_) => continue,
            }
        } else {
            text.as_str().to_string()
        };
        if hub_tx.send(Event::Text(text)).is_err() {
            return;
        }
    }
}

fn parse_join(request: &Request) -> Join {
    let v1 = request
        .headers()
        .get_all("Sec-WebSocket-Protocol")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.split(',').any(|p| p.trim() == "shardcast.v1"));
    let mut join = Join {
        v1,
        ..Join::default()
    };
    let query = request.uri().query().unwrap_or("");
    for pair in query.split('&') {
        match pair.split_once('=') {
            Some(("since", value)) => {
                join.since = value
                    .split_once(':')
                    .and_then(|(e, o)| Some((e.to_string(), o.parse().ok()?)));
            }
            Some(("history", value)) => join.history = value.parse().unwrap_or(0),
            _ => {}
        }
    }
    join
}

struct Member {
    ws: Box<WebSocket<TcpStream>>,
    v1: bool,
}

fn hub(events: mpsc::Receiver<Event>, breach: Breach, keep: usize) {
    let mut members: Vec<Member> = Vec::new();
    // (offset, text) of the latest messages.
    let mut history: VecDeque<(u64, String)> = VecDeque::new();
    let mut latest = 0u64;
    for event in events {
        match event {
            Event::Join(mut ws, join) => {
                if !join.v1 {
                    members.push(Member { ws, v1: false });
                    continue;
                }
                let oldest = history.front().map_or(latest + 1, |(o, _)| *o);
                let recovered = join.since.as_ref().map(|(epoch, offset)| {
                    epoch == EPOCH && *offset + 1 >= oldest && *offset <= latest
                });
                let mut replay: Vec<(u64, String, bool)> = match (&join.since, recovered) {
                    (Some((_, since)), Some(true)) => history
                        .iter()
                        .filter(|(o, _)| o > since)
                        .map(|(o, t)| (*o, t.clone(), true))
                        .collect(),
                    _ => {
                        let skip = history.len().saturating_sub(join.history);
                        history
                            .iter()
                            .skip(skip)
                            .map(|(o, t)| (*o, t.clone(), true))
                            .collect()
                    }
                };
                if let (Some((_, since)), Some(true)) = (&join.since, recovered) {
                    match breach {
                        Breach::None => {}
                        Breach::ReplayOneTooMany => {
                            if let Some((o, t)) = history.iter().find(|(o, _)| o == since) {
                                replay.insert(0, (*o, t.clone(), true));
                            }
                        }
                        Breach::SkipFirstMissed => {
                            if !replay.is_empty() {
                                replay.remove(0);
                            }
                        }
                    }
                }
                let mut welcome = serde_json::json!({
                    "type": "welcome", "id": "0.1", "room": "r", "nick": "n", "online": 1,
                    "epoch": EPOCH, "offset": latest, "replay": replay.len(),
                });
                if let Some(recovered) = recovered {
                    welcome["recovered"] = recovered.into();
                }
                let mut ok = ws.send(Message::text(welcome.to_string())).is_ok();
                for (offset, text, _) in &replay {
                    ok = ok
                        && ws
                            .send(Message::text(envelope(text, *offset, true)))
                            .is_ok();
                }
                if ok {
                    members.push(Member { ws, v1: true });
                }
            }
            Event::Text(text) => {
                latest += 1;
                history.push_back((latest, text.clone()));
                if history.len() > keep {
                    history.pop_front();
                }
                let v1_text = envelope(&text, latest, false);
                members.retain_mut(|m| {
                    let out = if m.v1 { v1_text.clone() } else { text.clone() };
                    m.ws.send(Message::text(out)).is_ok()
                });
            }
        }
    }
}

fn envelope(text: &str, offset: u64, history: bool) -> String {
    let mut message = serde_json::json!({
        "type": "message", "id": "0.2", "nick": null, "text": text, "ts": 1, "offset": offset,
    });
    if history {
        message["history"] = true.into();
    }
    message.to_string()
}
