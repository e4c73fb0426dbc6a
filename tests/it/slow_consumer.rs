//! A client that stops reading is cut off; memory stays bounded; the others get everything.

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread;
use std::time::Duration;

use socket2::{Domain, Socket, Type};
use tungstenite::Message;

use crate::util::{IO_TIMEOUT, ServerProcess, read_response, recv_data};

const MESSAGES: usize = 8000;
const SIZE: usize = 4096;

/// Connects with a tiny receive buffer, upgrades into `room`, and then never reads.
fn stalled_member(addr: SocketAddr, room: &str) -> std::net::TcpStream {
    let socket = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    socket.connect(&addr.into()).unwrap();
    let mut s: std::net::TcpStream = socket.into();
    s.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    write!(
        s,
        "GET /{room} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    .unwrap();
    assert!(read_response(&mut s).starts_with("HTTP/1.1 101 "));
    s
}

/// Splits a server byte stream into `(opcode, payload)` frames.
fn frames(mut bytes: &[u8]) -> Vec<(u8, Vec<u8>)> {
    let mut out = Vec::new();
    while bytes.len() >= 2 {
        let (len, at) = match bytes[1] & 0x7f {
            126 => (u16::from_be_bytes([bytes[2], bytes[3]]) as usize, 4),
            127 => (
                u64::from_be_bytes(bytes[2..10].try_into().unwrap()) as usize,
                10,
            ),
            n => (n as usize, 2),
        };
        assert!(bytes.len() >= at + len, "the stream ends inside a frame");
        out.push((bytes[0] & 0x0f, bytes[at..at + len].to_vec()));
        bytes = &bytes[at + len..];
    }
    assert!(bytes.is_empty());
    out
}

#[test]
fn a_stalled_reader_is_closed_and_memory_stays_bounded() {
    let server = ServerProcess::start(&["--workers", "2", "--max-buffered", "1048576"]);
    let mut stalled = stalled_member(server.addr, "busy");
    let mut reader = server.client("busy");
    let mut publisher = server.client("busy");
    let baseline = server.rss_bytes();

    let done = Arc::new(AtomicBool::new(false));
    let peak = Arc::new(AtomicU64::new(baseline));
    let sampler = {
        let (done, peak, pid) = (done.clone(), peak.clone(), server.pid());
        thread::spawn(move || {
            while !done.load(Ordering::Relaxed) {
                if let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status"))
                    && let Some(kib) = status
                        .lines()
                        .find_map(|l| l.strip_prefix("VmRSS:"))
                        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
                {
                    peak.fetch_max(kib * 1024, Ordering::Relaxed);
                }
                thread::sleep(Duration::from_millis(20));
            }
        })
    };

    let reading = thread::spawn(move || {
        for seq in 0..MESSAGES {
            match recv_data(&mut reader) {
                Message::Binary(b) => {
                    assert_eq!(b.len(), SIZE);
                    assert_eq!(u64::from_be_bytes(b[..8].try_into().unwrap()), seq as u64);
                }
                other => panic!("unexpected {other:?}"),
            }
        }
    });
    // The publisher reads its own echo before sending on, so it is never slow itself.
    for seq in 0..MESSAGES {
        let mut payload = vec![0u8; SIZE];
        payload[..8].copy_from_slice(&(seq as u64).to_be_bytes());
        publisher.send(Message::binary(payload)).unwrap();
        recv_data(&mut publisher);
    }
    reading
        .join()
        .expect("the normal member received every message in order");
    done.store(true, Ordering::Relaxed);
    sampler.join().unwrap();

    // 32 MB went to the room; the stalled member may cost at most its 1 MiB queue plus slack.
    let growth = peak.load(Ordering::Relaxed).saturating_sub(baseline);
    eprintln!("slow consumer: server RSS {baseline} B before, peak growth {growth} B");
    assert!(growth < 16 << 20, "server RSS grew by {growth} bytes");

    // What reached the stalled member: whole frames, then the slow-consumer close, then EOF.
    let mut got = Vec::new();
    stalled
        .read_to_end(&mut got)
        .expect("the server closes the stalled member");
    let frames = frames(&got);
    let (last_op, last) = frames.last().expect("some frames arrived");
    assert_eq!(*last_op, 0x8, "the last frame is a close frame");
    assert_eq!(u16::from_be_bytes([last[0], last[1]]), 1008);
    assert_eq!(&last[2..], b"slow consumer");
    let delivered = frames.len() - 1;
    eprintln!("slow consumer: {delivered} of {MESSAGES} frames reached the stalled member");
    assert!(
        delivered < MESSAGES,
        "it was cut off before the end ({delivered} delivered)"
    );
}
