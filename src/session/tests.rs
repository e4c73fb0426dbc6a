//! The session driven without sockets: every read yields one byte and then `WouldBlock`, every
//! write takes at most three bytes and every other write blocks. Handshake, framing, control
//! replies and flushing must come out exactly once and in order.

use std::io::{self, Read, Write};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::*;
use crate::chat::Body;
use crate::frame;
use crate::http::assets::Assets;
use crate::metrics::Counter;
use crate::stats::ServerStats;

/// An in-memory peer that is as unhelpful as a socket may legally be.
#[derive(Default)]
struct Stingy {
    input: Vec<u8>,
    read_pos: usize,
    eof: bool,
    /// Alternates so that every byte boundary is also a WouldBlock boundary.
    read_blocks_next: bool,
    written: Vec<u8>,
    write_blocks_next: bool,
    /// Takes every write whole (a socket with room), for tests about what happens then.
    roomy: bool,
    shut_write: std::cell::Cell<bool>,
}

impl Read for Stingy {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.read_blocks_next = !self.read_blocks_next;
        if self.read_pos == self.input.len() {
            return if self.eof {
                Ok(0)
            } else {
                Err(io::ErrorKind::WouldBlock.into())
            };
        }
        if !self.read_blocks_next {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        buf[0] = self.input[self.read_pos];
        self.read_pos += 1;
        Ok(1)
    }
}

impl Write for Stingy {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        assert!(!self.shut_write.get(), "write after shutdown");
        if self.roomy {
            self.written.extend_from_slice(buf);
            return Ok(buf.len());
        }
        self.write_blocks_next = !self.write_blocks_next;
        if self.write_blocks_next {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        let n = buf.len().min(3);
        self.written.extend_from_slice(&buf[..n]);
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Transport for Stingy {
    fn shutdown_write(&mut self) -> io::Result<()> {
        self.shut_write.set(true);
        Ok(())
    }
}

struct Harness {
    session: Session<Stingy>,
    config: Config,
    site: Site,
    scratch: Vec<u8>,
    events: Vec<Event>,
    counters: Counters,
}

impl Harness {
    fn new() -> Self {
        Harness::with_config(Config::default())
    }

    fn with_config(config: Config) -> Self {
        let site = Site::new(
            Assets::default(),
            Arc::new(config.clone()),
            Arc::new(ServerStats::new(1)),
        );
        let session = Session::new(Stingy::default(), &config, Instant::now());
        Harness {
            session,
            config,
            site,
            scratch: vec![0; 4096],
            events: Vec::new(),
            counters: Counters::default(),
        }
    }

    fn send(&mut self, bytes: &[u8]) {
        self.session.stream.input.extend_from_slice(bytes);
    }

    /// Runs the session like a shard would until it has read all input; returns the last
    /// progress report.
    fn pump_reads(&mut self) -> Progress {
        self.pump_reads_at(Instant::now())
    }

    /// [`Harness::pump_reads`] in loop turns that all began at `now`.
    fn pump_reads_at(&mut self, now: Instant) -> Progress {
        let mut cx = Ctx {
            config: &self.config,
            site: &self.site,
            now,
            counters: &mut self.counters,
        };
        for _ in 0..100_000 {
            let last = self
                .session
                .on_readable(&mut self.scratch, &mut cx, &mut self.events);
            let stream = &self.session.stream;
            if last == Progress::Finished
                || (stream.read_pos == stream.input.len() && last == Progress::Idle)
            {
                return last;
            }
        }
        panic!("the session never consumed its input");
    }

    /// Runs `f` on the session with a context at time `now`.
    fn at<R>(&mut self, now: Instant, f: impl FnOnce(&mut Session<Stingy>, &mut Ctx) -> R) -> R {
        let mut cx = Ctx {
            config: &self.config,
            site: &self.site,
            now,
            counters: &mut self.counters,
        };
        f(&mut self.session, &mut cx)
    }

    fn push(&mut self, frame: &SharedFrame) -> Delivery {
        self.at(Instant::now(), |s, cx| s.push_broadcast(frame, cx))
    }

    /// Flushes until the queue is empty (each call is one loop turn); returns what was written.
    fn pump_writes(&mut self) -> Vec<u8> {
        for _ in 0..100_000 {
            let progress = self.session.flush(&mut self.counters);
            if !self.session.has_output() || progress == Progress::Finished {
                return std::mem::take(&mut self.session.stream.written);
            }
        }
        panic!("the session never flushed");
    }
}

/// A masked client frame.
fn client_frame(fin: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
    let mask = [0x37, 0xfa, 0x21, 0x3d];
    let mut f = vec![(u8::from(fin) << 7) | opcode];
    match payload.len() {
        n if n < 126 => f.push(0x80 | n as u8),
        n if n <= 0xffff => {
            f.push(0x80 | 126);
            f.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            f.push(0x80 | 127);
            f.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    f.extend_from_slice(&mask);
    f.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    f
}

const UPGRADE: &[u8] = b"GET /chat HTTP/1.1\r\nHost: example\r\nUpgrade: websocket\r\n\
Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";

fn upgraded() -> Harness {
    let mut h = Harness::new();
    h.send(UPGRADE);
    assert_eq!(h.pump_reads(), Progress::Idle);
    let room = match h.events.as_slice() {
        [Event::Upgraded, Event::Joined(room, _)] => room.clone(),
        other => panic!("expected an upgrade and a join, got {other:?}"),
    };
    assert_eq!(room.as_str(), "chat");
    h.events.clear();
    let answer = String::from_utf8(h.pump_writes()).unwrap();
    assert!(answer.starts_with("HTTP/1.1 101 Switching Protocols\r\n"));
    assert!(answer.contains("Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"));
    assert_eq!(
        answer.matches("HTTP/1.1").count(),
        1,
        "the 101 was sent once"
    );
    h
}

#[test]
fn handshake_and_messages_survive_byte_by_byte_input() {
    let mut h = upgraded();
    // A fragmented text message with a ping between its fragments, then a binary message.
    let mut input = client_frame(false, 0x1, b"hel");
    input.extend(client_frame(true, 0x9, b"p1"));
    input.extend(client_frame(true, 0x0, "lo ☃".as_bytes()));
    input.extend(client_frame(true, 0x2, &[0, 1, 2, 255]));
    h.send(&input);
    assert_eq!(h.pump_reads(), Progress::Idle);

    let plain_only = crate::chat::post::Needs {
        plain: true,
        v1: false,
    };
    let frames: Vec<SharedFrame> = h
        .events
        .drain(..)
        .map(|e| match e {
            Event::Message(post) => {
                crate::chat::Outgoing::new(post, plain_only).frame(Dialect::Plain)
            }
            other => panic!("unexpected {other:?}"),
        })
        .collect();
    assert_eq!(frames.len(), 2);
    assert_eq!(
        &frames[0][..],
        &frame::encode_shared(frame::OP_TEXT, "hello ☃".as_bytes())[..]
    );
    assert_eq!(&frames[1][..], &[0x82, 4, 0, 1, 2, 255]);

    // The pong was queued while reading; broadcasts queue behind it, in order, exactly once.
    for frame in &frames {
        assert_eq!(h.push(frame), Delivery::Queued);
    }
    let mut expected = vec![0x8a, 2, b'p', b'1'];
    expected.extend_from_slice(&frames[0]);
    expected.extend_from_slice(&frames[1]);
    assert_eq!(h.pump_writes(), expected);
}

#[test]
fn close_handshake_replies_then_shuts_down_and_finishes_on_eof() {
    let mut h = upgraded();
    let mut payload = 1000u16.to_be_bytes().to_vec();
    payload.extend_from_slice(b"bye");
    h.send(&client_frame(true, 0x8, &payload));
    assert_eq!(h.pump_reads(), Progress::Idle);
    assert!(h.events.is_empty());
    assert_eq!(h.pump_writes(), frame::encode_close(1000, "bye"));
    assert!(
        h.session.stream.shut_write.get(),
        "FIN after the close reply"
    );
    let frame = frame::encode_shared(frame::OP_TEXT, b"late");
    assert_eq!(h.push(&frame), Delivery::Refused);
    h.session.stream.eof = true;
    assert_eq!(h.pump_reads(), Progress::Finished);
}

#[test]
fn protocol_violations_get_their_close_codes() {
    let oversize = vec![b'a'; Config::default().max_message + 1];
    let cases: Vec<(Vec<u8>, u16)> = vec![
        (client_frame(true, 0x1, b"\xff\xfe"), 1007),
        (client_frame(true, 0x8, b"\x03\xe8\xff"), 1007), // close reason not UTF-8
        (client_frame(true, 0x3, b"x"), 1002),
        (client_frame(true, 0x0, b"x"), 1002),
        (client_frame(false, 0x9, b"x"), 1002),
        (client_frame(true, 0x9, &[0; 126]), 1002),
        (client_frame(true, 0x1, &oversize), 1009),
        (
            {
                let mut f = client_frame(true, 0x1, b"x");
                f[0] |= 0x40; // RSV1 without an extension
                f
            },
            1002,
        ),
        (vec![0x81, 0x01, b'x'], 1002), // unmasked
        (
            vec![0x82, 0xff, 0x80, 0, 0, 0, 0, 0, 0, 0, 1, 2, 3, 4],
            1009,
        ), // 2^63 bytes announced
    ];
    for (input, code) in cases {
        let mut h = upgraded();
        h.send(&input);
        h.pump_reads();
        assert!(h.events.is_empty());
        let out = h.pump_writes();
        assert_eq!(out[0], 0x88, "a close frame for expected code {code}");
        assert_eq!(u16::from_be_bytes([out[2], out[3]]), code);
    }
}

#[test]
fn a_slow_consumer_is_cut_off_at_the_bound() {
    let mut h = upgraded();
    h.config.max_buffered = 1000;
    let frame = frame::encode_shared(frame::OP_BINARY, &[7; 300]);
    for _ in 0..3 {
        assert_eq!(h.push(&frame), Delivery::Queued);
    }
    assert_eq!(h.push(&frame), Delivery::SlowConsumer);
    assert!(h.session.queued_bytes() < 100, "queued frames were dropped");
    assert_eq!(h.counters.0[Counter::SlowConsumer as usize], 1);
    let out = h.pump_writes();
    assert_eq!(out, frame::encode_close(1008, "slow consumer"));
}

#[test]
fn a_burst_past_the_bound_is_written_out_before_anyone_is_called_slow() {
    let mut h = upgraded();
    h.config.max_buffered = 1000;
    // A socket with room: the loop queued a burst in one turn, before its flush phase.
    h.session.stream.roomy = true;
    let frame = frame::encode_shared(frame::OP_BINARY, &[7; 300]);
    for _ in 0..10 {
        assert_eq!(h.push(&frame), Delivery::Queued);
    }
    assert_eq!(h.counters.0[Counter::SlowConsumer as usize], 0);
    let out = h.pump_writes();
    assert_eq!(out, frame.repeat(10), "every frame, in order");
}

#[test]
fn http_keep_alive_and_pipelining_answer_each_request_once() {
    let mut h = Harness::new();
    h.send(b"GET /health HTTP/1.1\r\nHost: a\r\n\r\nGET /nope.js HTTP/1.1\r\nHost: a\r\n\r\n");
    assert_eq!(h.pump_reads(), Progress::Idle);
    let out = String::from_utf8(h.pump_writes()).unwrap();
    assert_eq!(out.matches("HTTP/1.1 200 OK").count(), 1);
    assert_eq!(out.matches("HTTP/1.1 404 Not Found").count(), 1);
    assert!(!h.session.stream.shut_write.get());
    h.send(b"POST / HTTP/1.1\r\nHost: a\r\n\r\n");
    h.pump_reads();
    let out = String::from_utf8(h.pump_writes()).unwrap();
    assert!(out.starts_with("HTTP/1.1 405 "));
    assert!(
        h.session.stream.shut_write.get(),
        "closed after an error answer"
    );
}

#[test]
fn pongs_to_a_peer_that_never_reads_are_bounded() {
    let mut h = upgraded();
    h.config.max_buffered = 1000;
    let mut input = Vec::new();
    for _ in 0..200 {
        input.extend(client_frame(true, 0x9, &[b'p'; 100]));
    }
    h.send(&input);
    h.pump_reads();
    assert!(
        h.session.queued_bytes() <= 1000 + 200,
        "{}",
        h.session.queued_bytes()
    );
    let out = h.pump_writes();
    let close = frame::encode_close(1008, "slow consumer");
    assert!(out.ends_with(&close));
}

#[test]
fn pipelining_far_ahead_of_reading_is_cut_off() {
    let mut h = Harness::new();
    h.config.max_buffered = 10_000;
    h.send(&b"GET / HTTP/1.1\r\nHost: a\r\n\r\n".repeat(100));
    h.pump_reads();
    assert!(h.session.queued_bytes() <= 10_000 + 4096);
    h.pump_writes();
    assert!(
        h.session.stream.shut_write.get(),
        "the connection is being closed"
    );
}

#[test]
fn a_quiet_peer_is_pinged_and_dropped_when_it_stays_silent() {
    let mut h = Harness::new();
    h.config.ping_interval = Some(std::time::Duration::from_secs(30));
    h.config.pong_timeout = std::time::Duration::from_secs(10);
    h.send(UPGRADE);
    h.pump_reads();
    h.pump_writes();
    let due = h
        .session
        .deadline()
        .expect("an open session has a ping deadline");
    assert_eq!(h.at(due, |s, cx| s.on_deadline(cx)), Progress::Idle);
    assert_eq!(h.pump_writes(), PING_FRAME, "one empty ping");
    let dead = h.session.deadline().expect("a pong deadline");
    assert!(dead > due);
    assert_eq!(h.at(dead, |s, cx| s.on_deadline(cx)), Progress::Finished);
    assert_eq!(h.counters.0[Counter::TimerPong as usize], 1);
}

#[test]
fn shutdown_sends_1001_and_waits_for_the_reply() {
    let mut h = upgraded();
    assert_eq!(
        h.at(Instant::now(), |s, cx| s.begin_shutdown(cx)),
        Progress::Idle
    );
    assert_eq!(
        h.pump_writes(),
        frame::encode_close(1001, "server shutting down")
    );
    let frame = frame::encode_shared(frame::OP_TEXT, b"late");
    assert_eq!(h.push(&frame), Delivery::Refused);
    // The client answers the close; the server then ends its side and finishes on EOF.
    h.send(&client_frame(true, 0x8, &1001u16.to_be_bytes()));
    h.pump_reads();
    assert!(
        h.pump_writes().is_empty(),
        "nothing more after our close frame"
    );
    assert!(h.session.stream.shut_write.get());
    h.session.stream.eof = true;
    assert_eq!(h.pump_reads(), Progress::Finished);
    assert_eq!(h.counters.0[Counter::Close1001 as usize], 1);
}

/// The server frames in `bytes` (unmasked, unfragmented), as (opcode, payload).
fn server_frames(mut bytes: &[u8]) -> Vec<(u8, Vec<u8>)> {
    let mut frames = Vec::new();
    while !bytes.is_empty() {
        let opcode = bytes[0] & 0x0f;
        let (len, start) = match bytes[1] & 0x7f {
            126 => (u16::from_be_bytes([bytes[2], bytes[3]]) as usize, 4),
            127 => (
                u64::from_be_bytes(bytes[2..10].try_into().unwrap()) as usize,
                10,
            ),
            n => (n as usize, 2),
        };
        frames.push((opcode, bytes[start..start + len].to_vec()));
        bytes = &bytes[start + len..];
    }
    frames
}

fn json(payload: &[u8]) -> serde_json::Value {
    serde_json::from_slice(payload).unwrap()
}

/// A v1 session upgraded with `query` after the room path; returns the harness and what was
/// written after the 101.
fn v1_upgraded(query: &str) -> (Harness, Vec<(u8, Vec<u8>)>) {
    v1_upgraded_with(Config::default(), query)
}

/// [`v1_upgraded`] on a server with `config`.
fn v1_upgraded_with(config: Config, query: &str) -> (Harness, Vec<(u8, Vec<u8>)>) {
    let mut h = Harness::with_config(config);
    let request = format!(
        "GET /chat{query} HTTP/1.1\r\nHost: example\r\nUpgrade: websocket\r\n\
         Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
         Sec-WebSocket-Protocol: chat, shardcast.v1\r\nSec-WebSocket-Version: 13\r\n\r\n"
    );
    h.send(request.as_bytes());
    assert_eq!(h.pump_reads(), Progress::Idle);
    let written = h.pump_writes();
    let end = written.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    let answer = std::str::from_utf8(&written[..end]).unwrap();
    assert!(answer.contains("\r\nSec-WebSocket-Protocol: shardcast.v1\r\n"));
    assert_eq!(h.session.dialect(), Dialect::V1);
    (h, server_frames(&written[end..]))
}

#[test]
fn v1_with_a_nick_in_the_query_joins_at_once() {
    let (mut h, after) = v1_upgraded("?nick=Jos%C3%A9");
    assert!(
        after.is_empty(),
        "the shard sends the welcome, not the session"
    );
    assert!(matches!(
        h.events.as_slice(),
        [Event::Upgraded, Event::Joined(..)]
    ));
    assert_eq!(h.session.nick().map(Nick::as_str), Some("José"));
    h.events.clear();
    h.send(&client_frame(
        true,
        0x1,
        br#"{"type":"message","text":"hi"}"#,
    ));
    h.pump_reads();
    match h.events.as_slice() {
        [Event::Message(post)] => {
            assert_eq!(post.nick.as_ref().map(Nick::as_str), Some("José"));
            assert!(matches!(&post.body, Body::Text(t) if t.as_str() == "hi"));
        }
        other => panic!("expected one message, got {other:?}"),
    }
}

#[test]
fn v1_without_a_nick_must_say_hello_first() {
    let (mut h, after) = v1_upgraded("?nick=bad%20nick");
    assert_eq!(json(&after[0].1)["code"], "bad_nick");
    assert!(matches!(h.events.as_slice(), [Event::Upgraded]));
    h.events.clear();
    let say = |h: &mut Harness, text: &[u8]| {
        h.send(&client_frame(true, 0x1, text));
        h.pump_reads();
        server_frames(&h.pump_writes())
    };
    let replies = say(&mut h, br#"{"type":"message","text":"too soon"}"#);
    assert_eq!(json(&replies[0].1)["code"], "hello_required");
    let replies = say(&mut h, b"not json");
    assert_eq!(json(&replies[0].1)["code"], "bad_envelope");
    assert!(h.events.is_empty());
    let replies = say(&mut h, br#"{"type":"hello","nick":"ann","extra":true}"#);
    assert!(replies.is_empty());
    assert!(matches!(h.events.as_slice(), [Event::Joined(..)]));
    let replies = say(&mut h, br#"{"type":"hello","nick":"bob"}"#);
    assert_eq!(json(&replies[0].1)["code"], "already_joined");
    let replies = say(&mut h, br#"{"type":"message","text":""}"#);
    assert_eq!(json(&replies[0].1)["code"], "empty_message");
    assert_eq!(h.counters.0[Counter::EnvelopeErrors as usize], 5);
    assert!(h.session.receives());
}

#[test]
fn v1_hello_has_the_handshake_timeout() {
    let (mut h, _) = v1_upgraded("");
    let due = h.session.deadline().expect("a hello deadline");
    assert!(due <= Instant::now() + h.config.handshake_timeout);
    h.at(due, |s, cx| s.on_deadline(cx));
    let frames = server_frames(&h.pump_writes());
    assert_eq!(frames[0].0, 0x8);
    assert_eq!(&frames[0].1[..2], &1008u16.to_be_bytes());
    assert_eq!(&frames[0].1[2..], b"hello expected");
    assert!(!h.session.receives());
}

#[test]
fn v1_binary_frames_close_with_1003() {
    let (mut h, _) = v1_upgraded("?nick=ann");
    h.send(&client_frame(true, 0x2, b"\x00\x01"));
    h.pump_reads();
    let frames = server_frames(&h.pump_writes());
    assert_eq!(frames[0].0, 0x8);
    assert_eq!(&frames[0].1[..2], &1003u16.to_be_bytes());
    assert_eq!(h.counters.0[Counter::Close1003 as usize], 1);
}

#[test]
fn over_the_publish_rate_v1_messages_are_refused_and_a_flood_is_closed() {
    use crate::limits::Rate;
    let config = Config {
        // 1 a second, 1 more at once: 2 at once. Flooding: 50 beyond 10 a second.
        max_publish_rate: Some(Rate::new(1, Some(1))),
        ..Config::default()
    };
    let (mut h, _) = v1_upgraded_with(config, "?nick=ann");
    h.events.clear();
    let message = client_frame(true, 0x1, br#"{"type":"message","text":"hi"}"#);
    let say = |h: &mut Harness, count: usize, now: Instant| {
        h.send(&message.repeat(count));
        h.pump_reads_at(now);
        let messages = h
            .events
            .drain(..)
            .filter(|e| matches!(e, Event::Message(_)));
        (messages.count(), server_frames(&h.pump_writes()))
    };
    let codes = |frames: &[(u8, Vec<u8>)]| -> Vec<String> {
        let errors = frames.iter().filter(|(op, _)| *op == 0x1);
        errors
            .map(|(_, p)| json(p)["code"].as_str().unwrap().to_owned())
            .collect()
    };
    // Three at once: two go out, the third is refused.
    let t0 = Instant::now();
    let (sent, frames) = say(&mut h, 3, t0);
    assert_eq!(sent, 2);
    assert_eq!(codes(&frames), ["rate_limited"]);
    // A second later, one token is back.
    let t1 = t0 + Duration::from_secs(1);
    let (sent, frames) = say(&mut h, 1, t1);
    assert_eq!((sent, frames.len()), (1, 0));
    // A flood at once: the flood bucket (50 tokens, 10 more a second: full again, less the
    // one just taken) takes 49 more, all over the rate; the 50th ends the connection.
    let (sent, frames) = say(&mut h, 80, t1);
    assert_eq!(sent, 0);
    assert_eq!(codes(&frames), vec!["rate_limited"; 49]);
    let (op, close) = frames.last().unwrap();
    assert_eq!(*op, 0x8);
    assert_eq!(&close[..2], &1008u16.to_be_bytes());
    assert_eq!(&close[2..], b"rate limit");
    assert!(!h.session.receives());
    assert_eq!(
        h.session.close_reason(),
        Some((CloseReason::RateLimit, 1008))
    );
    let count = |c: Counter| h.counters.0[c as usize];
    assert_eq!(count(Counter::MessagesIn), 54);
    assert_eq!(count(Counter::RateLimited), 51);
    assert_eq!(count(Counter::EnvelopeErrors), 50);
    assert_eq!(count(Counter::ClosedRateLimit), 1);
    assert_eq!(count(Counter::Close1008), 1);
}

#[test]
fn without_a_publish_rate_nothing_is_metered() {
    let mut h = upgraded();
    h.send(&client_frame(true, 0x1, b"x").repeat(1000));
    let now = Instant::now();
    assert_eq!(h.pump_reads_at(now), Progress::Idle);
    assert_eq!(h.events.len(), 1000);
    assert_eq!(h.counters.0[Counter::RateLimited as usize], 0);
    assert!(h.session.receives());
}

/// An idle connection holds no reader: the upgrade makes none, and a client that only
/// answers pings gives it back as soon as the pong is read, even one cut at every byte.
#[test]
fn an_idle_session_holds_no_reader_and_a_pong_leaves_none() {
    let mut h = upgraded();
    assert!(!h.session.has_reader());
    let pong = client_frame(true, 0xA, b"");
    h.send(&pong[..3]);
    h.pump_reads();
    assert!(h.session.has_reader(), "part of a frame is held");
    h.send(&pong[3..]);
    h.pump_reads();
    assert!(!h.session.has_reader());
}

/// A client that sends messages keeps its reader (no allocation per message) until its next
/// deadline finds it at rest; a message cut in fragments keeps it in any case.
#[test]
fn a_sender_keeps_its_reader_until_its_deadline() {
    let mut h = upgraded();
    h.send(&client_frame(false, 0x1, b"he"));
    h.send(&client_frame(true, 0xA, b""));
    h.pump_reads();
    let due = h.session.deadline().expect("a ping deadline");
    h.at(due, |s, cx| s.on_deadline(cx));
    assert!(h.session.has_reader(), "inside a fragmented message");
    h.send(&client_frame(true, 0x0, b"llo"));
    h.pump_reads();
    assert_eq!(h.events.len(), 1, "{:?}", h.events);
    assert!(h.session.has_reader());
    let due = h.session.deadline().expect("a ping deadline");
    h.at(due, |s, cx| s.on_deadline(cx));
    assert!(!h.session.has_reader());
    // A fresh reader takes the next message as the old one would have.
    h.send(&client_frame(true, 0x1, b"again"));
    h.pump_reads();
    assert_eq!(h.events.len(), 2);
}

/// A burst grows the outbound queue's buffer; after the next deadline (which queues a ping
/// here), the flush that empties the queue gives it back: a connection that was busy once and
/// went quiet, or that is pinged, costs what an idle one does.
#[test]
fn a_quiet_session_gives_back_its_queue_buffer_at_its_deadline() {
    let mut h = upgraded();
    assert_eq!(h.session.queue_capacity(), 0, "given back after the 101");
    let frame = frame::encode_shared(frame::OP_TEXT, b"burst");
    for _ in 0..50 {
        assert_eq!(h.push(&frame), Delivery::Queued);
    }
    assert!(h.session.queue_capacity() >= 50);
    h.pump_writes();
    let due = h.session.deadline().expect("a ping deadline");
    h.at(due, |s, cx| s.on_deadline(cx));
    assert_eq!(h.pump_writes(), PING_FRAME);
    assert_eq!(h.session.queue_capacity(), 0);
}

/// With a publish limit, a reader whose buckets are not full again is kept: a fresh one would
/// forget what the client spent.
#[test]
fn a_reader_with_spent_publish_buckets_is_kept() {
    let mut h = upgraded();
    h.config.max_publish_rate = Some(crate::limits::Rate::new(1, Some(0)));
    let now = Instant::now();
    h.send(&client_frame(true, 0x1, b"x"));
    h.pump_reads_at(now);
    h.at(now, |s, cx| s.on_deadline(cx));
    assert!(h.session.has_reader(), "the bucket is not full yet");
    h.at(now + Duration::from_secs(10), |s, cx| s.on_deadline(cx));
    assert!(!h.session.has_reader());
}

/// A session of a server whose API is on the main port.
fn with_api() -> Harness {
    let mut h = Harness::new();
    h.config.api_key = crate::config::ApiKey::new("k");
    h.site = Site::new(
        Assets::default(),
        Arc::new(h.config.clone()),
        Arc::new(ServerStats::new(1)),
    );
    h
}

#[test]
fn an_api_request_is_read_whole_then_answered_once_and_closed() {
    let mut h = with_api();
    h.send(
        b"POST /api/publish HTTP/1.1\r\nHost: x\r\nAuthorization: apikey k\r\n\
          Content-Length: 11\r\n\r\n{\"room\":\"a\"}",
    );
    assert_eq!(h.pump_reads(), Progress::Idle);
    let request = match h.events.as_slice() {
        [Event::Api(request)] => request.clone(),
        other => panic!("expected one API request, got {other:?}"),
    };
    assert_eq!(request.method, "POST");
    assert_eq!(request.path(), "/api/publish");
    assert_eq!(request.authorization.as_deref(), Some("apikey k"));
    assert_eq!(request.body, b"{\"room\":\"a\"");
    assert!(!h.session.has_output(), "nothing before the answer");
    assert!(!h.session.receives(), "never a member");
    h.at(Instant::now(), |s, cx| {
        s.api_answer(b"HTTP/1.1 200 OK\r\n\r\n".to_vec(), cx);
        s.api_answer(b"twice".to_vec(), cx);
    });
    assert_eq!(h.pump_writes(), b"HTTP/1.1 200 OK\r\n\r\n");
    assert!(h.session.stream.shut_write.get(), "closed after the answer");
}

#[test]
fn an_api_request_without_its_answer_times_out_with_504() {
    let mut h = with_api();
    h.send(b"GET /api/rooms HTTP/1.1\r\nHost: x\r\n\r\n");
    h.pump_reads();
    assert!(matches!(h.events.as_slice(), [Event::Api(_)]));
    let due = h.session.deadline().expect("the wait has a deadline");
    assert_eq!(h.at(due, |s, cx| s.on_deadline(cx)), Progress::Idle);
    let answer = String::from_utf8(h.pump_writes()).unwrap();
    assert!(answer.starts_with("HTTP/1.1 504 "), "{answer}");
}

#[test]
fn an_api_body_over_the_limit_is_refused_from_the_head() {
    let mut h = with_api();
    h.send(b"POST /api/publish HTTP/1.1\r\nHost: x\r\nContent-Length: 65537\r\n\r\n");
    h.pump_reads();
    assert!(h.events.is_empty());
    let answer = String::from_utf8(h.pump_writes()).unwrap();
    assert!(answer.starts_with("HTTP/1.1 413 "), "{answer}");
    assert!(
        answer.ends_with("{\"error\":\"the body is over 65536 bytes\"}\n"),
        "{answer}"
    );
}

#[test]
fn without_an_api_key_the_api_path_is_an_unknown_path() {
    for request in [
        &b"GET /api/rooms HTTP/1.1\r\nHost: x\r\n\r\n"[..],
        b"POST /api/publish HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}",
    ] {
        let mut h = Harness::new();
        h.send(request);
        h.pump_reads();
        assert!(h.events.is_empty());
        let answer = String::from_utf8(h.pump_writes()).unwrap();
        assert!(answer.starts_with("HTTP/1.1 404 "), "{answer}");
    }
}

/// A harness whose site checks HS256 tokens (docs/auth.md), and a token of `claims` for it.
fn with_tokens(claims: serde_json::Value) -> (Harness, String) {
    const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";
    let mut h = Harness::new();
    let verifier = crate::auth::Verifier::new(
        crate::config::AuthMode::Optional,
        jsonwebtoken::DecodingKey::from_secret(SECRET),
        jsonwebtoken::Algorithm::HS256,
    );
    h.site = h.site.clone().with_verifier(Some(Arc::new(verifier)));
    let token = jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(SECRET),
    )
    .unwrap();
    (h, token)
}

fn upgrade_with_token(token: &str) -> Vec<u8> {
    let upgrade = std::str::from_utf8(UPGRADE).unwrap();
    upgrade
        .replacen("GET /chat ", &format!("GET /chat?token={token} "), 1)
        .into_bytes()
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

#[test]
fn a_token_grants_its_user_and_its_expiry_closes_the_session_with_1008() {
    let (mut h, token) = with_tokens(serde_json::json!({"sub": "u-7", "exp": unix_now() + 100}));
    h.send(&upgrade_with_token(&token));
    assert_eq!(h.pump_reads(), Progress::Idle);
    assert!(matches!(
        h.events.as_slice(),
        [Event::Upgraded, Event::Joined(..)]
    ));
    assert_eq!(h.session.user(), Some("u-7"));
    h.pump_writes();
    // Before the expiry only the usual deadlines (pings); past it, the close.
    let deadline = h
        .session
        .deadline()
        .expect("an open session has a deadline");
    assert!(deadline <= Instant::now() + std::time::Duration::from_secs(31));
    let later = Instant::now() + std::time::Duration::from_secs(200);
    assert_eq!(h.at(later, |s, cx| s.on_deadline(cx)), Progress::Idle);
    assert!(!h.session.receives());
    let written = h.pump_writes();
    let close = frame::encode_close(1008, "token expired");
    assert!(written.ends_with(&close), "{written:?}");
    assert_eq!(
        h.session.close_reason(),
        Some((CloseReason::TokenExpired, 1008))
    );
    assert_eq!(h.counters.0[Counter::TimerToken as usize], 1);
}

#[test]
fn a_read_only_plain_member_is_closed_at_its_first_message() {
    let (mut h, token) = with_tokens(serde_json::json!({"sub": "u-8", "publish": false}));
    h.send(&upgrade_with_token(&token));
    h.pump_reads();
    h.events.clear();
    h.pump_writes();
    assert_eq!(h.session.deadline().map(|d| d > Instant::now()), Some(true));
    h.send(&client_frame(true, 0x1, b"let me speak"));
    h.pump_reads();
    assert!(
        h.events.is_empty(),
        "nothing reaches the room: {:?}",
        h.events
    );
    let written = h.pump_writes();
    assert_eq!(written, frame::encode_close(1008, "read-only"));
    assert_eq!(
        h.session.close_reason(),
        Some((CloseReason::ReadOnly, 1008))
    );
}

#[test]
fn a_bad_token_is_refused_at_the_upgrade_with_401_and_counted() {
    let (mut h, _) = with_tokens(serde_json::json!({"sub": "u"}));
    h.send(&upgrade_with_token("not-a-token"));
    assert_eq!(h.pump_reads(), Progress::Idle);
    assert!(h.events.is_empty());
    let answer = String::from_utf8(h.pump_writes()).unwrap();
    assert!(
        answer.starts_with("HTTP/1.1 401 Unauthorized\r\n"),
        "{answer}"
    );
    assert!(answer.ends_with("\r\n\r\n401 Unauthorized: malformed token\n"));
    assert_eq!(h.counters.0[Counter::TokenMalformed as usize], 1);
    assert_eq!(h.counters.0[Counter::HandshakeUnauthorized as usize], 1);
}
