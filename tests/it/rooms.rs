//! Room broadcast across shards, with Rust (tungstenite) clients.

use std::collections::HashMap;
use std::thread;

use tungstenite::Message;

use crate::util::{ServerProcess, recv_data};

const ROOMS: usize = 3;
const MEMBERS: usize = 4;
const PER_SENDER: usize = 50;

#[test]
fn every_member_gets_exactly_its_rooms_messages_in_sender_order() {
    let server = ServerProcess::start(&["--workers", "4"]);
    // Connect interleaved (room 0, 1, 2, 0, 1, 2, ...) so each room spans all four shards.
    let mut clients = Vec::new();
    for m in 0..MEMBERS {
        for r in 0..ROOMS {
            clients.push((r, m, server.client(&format!("room-{r}"))));
        }
    }
    // Every client sends its messages, then reads everything its room sent.
    let handles: Vec<_> = clients
        .into_iter()
        .map(|(room, member, mut ws)| {
            thread::spawn(move || {
                for seq in 0..PER_SENDER {
                    ws.send(Message::text(format!("{room}:{member}:{seq}")))
                        .unwrap();
                }
                let mut next_seq: HashMap<usize, usize> = HashMap::new();
                for _ in 0..MEMBERS * PER_SENDER {
                    let text = match recv_data(&mut ws) {
                        Message::Text(t) => t.to_string(),
                        other => panic!("expected text, got {other:?}"),
                    };
                    let parts: Vec<usize> = text.split(':').map(|p| p.parse().unwrap()).collect();
                    assert_eq!(parts[0], room, "a message from another room: {text}");
                    let expected = next_seq.entry(parts[1]).or_default();
                    assert_eq!(parts[2], *expected, "out of order or lost: {text}");
                    *expected += 1;
                }
                assert!(next_seq.values().all(|n| *n == PER_SENDER));
                ws
            })
        })
        .collect();
    let mut clients: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    // Nothing more arrives: a marker sent now is the very next message everyone sees.
    for (r, ws) in clients.iter_mut().take(ROOMS).enumerate() {
        ws.send(Message::text(format!("end-{r}"))).unwrap();
    }
    for (i, ws) in clients.iter_mut().enumerate() {
        assert_eq!(recv_data(ws), Message::text(format!("end-{}", i % ROOMS)));
    }
}

#[test]
fn binary_stays_binary_and_bytes_are_exact() {
    let server = ServerProcess::start(&["--workers", "2"]);
    let mut a = server.client("bin");
    let mut b = server.client("bin");
    let all_bytes: Vec<u8> = (0..=255).collect();
    a.send(Message::binary(all_bytes.clone())).unwrap();
    a.send(Message::text("text ☃")).unwrap();
    for ws in [&mut a, &mut b] {
        assert_eq!(recv_data(ws), Message::binary(all_bytes.clone()));
        assert_eq!(recv_data(ws), Message::text("text ☃"));
    }
}
