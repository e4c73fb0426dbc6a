//! `--max-publish-rate` with Rust (tungstenite) clients: a flooder is cut off with 1008
//! "rate limit", only its messages within the rate reach the room, and the room goes on.

use std::time::{Duration, Instant};

use tungstenite::Message;
use tungstenite::protocol::frame::coding::CloseCode;

use crate::util::{ServerProcess, recv_data};

#[test]
fn a_flooder_is_closed_with_1008_and_only_its_rate_reaches_the_room() {
    // 2 a second, nothing more at once; a flood is 100 beyond 20 a second.
    let server = ServerProcess::start(&[
        "--workers",
        "2",
        "--max-publish-rate",
        "2",
        "--publish-burst",
        "0",
    ]);
    let mut watcher = server.client("flood");
    let mut other = server.client("flood");
    let mut flooder = server.client("flood");
    let start = Instant::now();
    // 300 at once: the server reads them all (after the close it reads and discards).
    for i in 0..300 {
        flooder
            .write(Message::text(format!("f{i}")))
            .expect("the messages fit in the socket buffers");
    }
    flooder.flush().expect("sent");
    // Its messages within the rate come back, then the close.
    let mut echoed = Vec::new();
    let close = loop {
        match flooder.read().expect("the close frame arrives") {
            Message::Text(t) => echoed.push(t.to_string()),
            Message::Close(close) => break close.expect("a close code"),
            _ => {}
        }
    };
    let elapsed = start.elapsed().as_secs_f64();
    assert_eq!(close.code, CloseCode::Policy);
    assert_eq!(close.reason.as_str(), "rate limit");
    // 2 at once, then 2 a second at most.
    assert!(echoed.len() >= 2, "{echoed:?}");
    assert!(
        echoed.len() as f64 <= 2.0 + 2.0 * elapsed,
        "{echoed:?} in {elapsed} s"
    );
    assert_eq!(echoed[..2], ["f0", "f1"]);
    // The room heard exactly those, and then whoever speaks next.
    other.send(Message::text("next")).expect("sent");
    for text in echoed.iter().map(String::as_str).chain(["next"]) {
        assert_eq!(recv_data(&mut watcher), Message::text(text));
    }
    // Counted once, by its own reason.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let metrics = server.http("GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        if metrics.contains("\nshardcast_closes_total{reason=\"rate_limit\"} 1\n") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the close was not counted:\n{metrics}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}
