//! The loop's parts driven directly: the session table with an in-memory stream, and whole
//! loops of each model turned by hand over real loopback sockets, so that fan-out, presence
//! and each model's reach are checked turn by turn, without threads or timing.

use std::io::{self, Read, Write};
use std::net::{TcpListener as StdListener, TcpStream as StdStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::Sender;
use mio::{Events, Poll, Waker};

use super::*;
use crate::acceptor::Handoff;
use crate::http::assets::Assets;
use crate::mesh::{MeshLinks, PeerHandle};
use crate::models::sharded::Mesh;
use crate::models::shared::{Registry, Shared};
use crate::models::single::Alone;
use crate::room::RoomId;
use crate::shard::table::{Cell, Locked};

// ---------------------------------------------------------------------------------------
// The session table, with a stream that never has anything to say.

#[derive(Default)]
struct Quiet;

impl Read for Quiet {
    fn read(&mut self, _: &mut [u8]) -> io::Result<usize> {
        Err(io::ErrorKind::WouldBlock.into())
    }
}

impl Write for Quiet {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl crate::session::Transport for Quiet {
    fn shutdown_write(&mut self) -> io::Result<()> {
        Ok(())
    }
}

fn quiet_session(config: &Config, now: Instant) -> Session<Quiet> {
    Session::new(Quiet, config, now)
}

#[test]
fn table_keys_and_generations_tell_a_reused_slot_from_its_old_session() {
    let config = Config::default();
    let now = Instant::now();
    let mut table: SessionTable<Session<Quiet>> = SessionTable::default();
    assert_eq!(table.next_slot(), (SessionKey(0), 1));
    let a = table.insert(quiet_session(&config, now));
    let b = table.insert(quiet_session(&config, now));
    assert_eq!((a, b), (SessionKey(0), SessionKey(1)));
    let old = table.generation(a).unwrap();
    assert!(table.remove(a).is_some());
    assert!(table.remove(a).is_none(), "removed once");
    let c = table.insert(quiet_session(&config, now));
    assert_eq!(c, a, "the slab reuses the slot");
    assert!(!table.is_current(c, old));
    assert!(table.is_current(c, table.generation(c).unwrap()));
    assert_eq!(table.len(), 2);
}

#[test]
fn table_lists_each_session_once_per_turn() {
    let config = Config::default();
    let now = Instant::now();
    let mut table: SessionTable<Session<Quiet>> = SessionTable::default();
    let a = table.insert(quiet_session(&config, now));
    let b = table.insert(quiet_session(&config, now));
    for (key, seq) in [(a, 1), (b, 2)] {
        table.with(key, |s| {
            s.identify(SessionId { worker: 0, seq }, None, false)
        });
    }
    // Which sessions a flush reaches, in order; the last one reports it is finished.
    let flushed = |table: &mut SessionTable<Session<Quiet>>| {
        let (mut order, mut finished) = (Vec::new(), Vec::new());
        table.flush_each(
            |s| {
                order.push(s.id().seq);
                if s.id().seq == 2 {
                    Progress::Finished
                } else {
                    Progress::Idle
                }
            },
            &mut finished,
        );
        (order, finished)
    };
    table.list_for_flush(a);
    table.list_for_flush(b);
    table.list_for_flush(a);
    assert_eq!(flushed(&mut table), (vec![1, 2], vec![b]));
    assert!(!table.has_flush_work());
    table.list_for_flush(a);
    assert_eq!(
        flushed(&mut table),
        (vec![1], vec![]),
        "listed again after the flush"
    );

    table.mark_ready(b);
    table.mark_ready(b);
    assert!(table.is_ready_listed(b) && !table.is_ready_listed(a));
    assert_eq!(table.take_ready(), vec![b]);
    table.mark_ready(a);
    table.remove(a);
    assert!(
        !table.has_ready(),
        "a removed session leaves the resume list"
    );
}

#[test]
fn table_timers_fire_once_for_the_current_session_only() {
    let config = Config {
        handshake_timeout: Duration::from_secs(1),
        ..Config::default()
    };
    let t0 = Instant::now();
    let mut table: SessionTable<Session<Quiet>> = SessionTable::default();
    let a = table.insert(quiet_session(&config, t0));
    assert_eq!(table.next_deadline_in(t0), Some(Duration::from_secs(1)));
    table.arm(a); // already armed for that deadline: no second entry
    assert_eq!(table.pop_due(t0), None, "not due yet");
    let later = t0 + Duration::from_secs(2);
    assert_eq!(table.pop_due(later), Some(a));
    assert_eq!(table.pop_due(later), None, "fires once");

    // A session that ended leaves only stale entries behind, even when its slot is reused.
    let b = table.insert(quiet_session(&config, later));
    table.remove(b);
    let c = table.insert(quiet_session(&config, later + Duration::from_secs(5)));
    assert_eq!(b, c);
    assert_eq!(table.pop_due(later + Duration::from_secs(2)), None);
    assert_eq!(table.pop_due(later + Duration::from_secs(7)), Some(c));
}

#[test]
fn table_keeps_room_slots_and_locked_cells_share_their_session() {
    let config = Config::default();
    let now = Instant::now();
    let mut table: SessionTable<Locked<Quiet>> = SessionTable::default();
    let a = table.insert(quiet_session(&config, now));
    assert_eq!(table.room_slot(a), None);
    table.set_room_slot(a, Some(3));
    assert_eq!(table.room_slot(a), Some(3));
    table.set_room_slot(a, None);
    assert_eq!(table.room_slot(a), None);

    // Another thread's handle reaches the same session.
    let mut handle = table.handle(a).unwrap();
    handle.with(|s| s.push_own(Arc::from(&b"x"[..])));
    assert_eq!(table.with(a, |s| s.queued_bytes()), Some(1));
}

// ---------------------------------------------------------------------------------------
// Whole loops, turned by hand.

/// Loops of one model, each with its hand-off channel, and a listener for clients.
struct Rig<R: Reach> {
    loops: Vec<(Shard<R>, Events)>,
    doors: Vec<Sender<Handoff>>,
    listener: StdListener,
}

fn common(workers: usize) -> LoopCommon {
    let config = Arc::new(Config::default());
    let stats = Arc::new(ServerStats::new(workers));
    LoopCommon {
        site: Site::new(Assets::new(None), config.clone(), stats.clone()),
        config,
        stats,
        tls: None,
        per_ip: None,
        api: None,
        roster: None,
    }
}

/// `workers` polls with their wakers, inboxes and doors, and each loop's reach from
/// `reach(i, &peers, &wakers)`.
fn rig<R: Reach>(
    workers: usize,
    reach: impl Fn(usize, &[PeerHandle], &[Arc<Waker>]) -> R,
) -> Rig<R> {
    let common = common(workers);
    let mut polls = Vec::new();
    let mut peers = Vec::new();
    let mut wakers = Vec::new();
    let mut inboxes = Vec::new();
    for _ in 0..workers {
        let poll = Poll::new().unwrap();
        let waker = Arc::new(Waker::new(poll.registry(), WAKER).unwrap());
        let (tx, rx) = crossbeam_channel::bounded(1024);
        peers.push(PeerHandle {
            tx,
            waker: waker.clone(),
        });
        wakers.push(waker);
        polls.push(poll);
        inboxes.push(rx);
    }
    let mut loops = Vec::new();
    let mut doors = Vec::new();
    for (i, (poll, inbox)) in polls.into_iter().zip(inboxes).enumerate() {
        let (door, connections) = crossbeam_channel::bounded(16);
        doors.push(door);
        let parts = ShardParts {
            id: ShardId(i),
            poll,
            entry: Entry::Handoff(connections),
            inbox,
            reach: reach(i, &peers, &wakers),
            common: common.clone(),
            cluster: None,
        };
        loops.push((Shard::new(parts), Events::with_capacity(64)));
    }
    Rig {
        loops,
        doors,
        listener: StdListener::bind("127.0.0.1:0").unwrap(),
    }
}

impl<R: Reach> Rig<R> {
    /// Turns loop `i` once (polling for at most a few milliseconds).
    fn turn(&mut self, i: usize) {
        let (shard, events) = &mut self.loops[i];
        shard
            .poll
            .poll(events, Some(Duration::from_millis(5)))
            .unwrap();
        let done = shard.turn(events).unwrap();
        assert!(!done, "a loop with its acceptor alive goes on");
    }

    /// Turns every loop a few times, so that what one sends the others have acted on.
    fn settle(&mut self) {
        for _ in 0..6 {
            for i in 0..self.loops.len() {
                self.turn(i);
            }
        }
    }

    /// A client connected to loop `i`, upgraded into `/room` (`v1`: as `nick`).
    fn client(&mut self, i: usize, room: &str, v1: Option<&str>) -> Client {
        let stream = StdStream::connect(self.listener.local_addr().unwrap()).unwrap();
        let (accepted, peer) = self.listener.accept().unwrap();
        accepted.set_nonblocking(true).unwrap();
        self.doors[i]
            .send(Handoff {
                stream: accepted,
                peer,
                counted_ip: None,
            })
            .unwrap();
        let (path, protocol) = match v1 {
            Some(nick) => (
                format!("/{room}?nick={nick}"),
                "Sec-WebSocket-Protocol: shardcast.v1\r\n",
            ),
            None => (format!("/{room}"), ""),
        };
        let mut client = Client {
            stream,
            input: Vec::new(),
        };
        client.send_raw(
            format!(
                "GET {path} HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
                 Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\
                 {protocol}\r\n"
            )
            .as_bytes(),
        );
        self.settle();
        client.take_input();
        let head_end = client
            .input
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .expect("an answer to the upgrade");
        assert!(client.input.starts_with(b"HTTP/1.1 101"));
        client.input.drain(..head_end + 4);
        client
    }
}

struct Client {
    stream: StdStream,
    input: Vec<u8>,
}

impl Client {
    fn send_raw(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).unwrap();
    }

    /// Sends one masked text frame.
    fn send_text(&mut self, text: &str) {
        let mask = [1u8, 2, 3, 4];
        assert!(text.len() < 126);
        let mut frame = vec![0x81, 0x80 | text.len() as u8];
        frame.extend_from_slice(&mask);
        frame.extend(text.bytes().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        self.send_raw(&frame);
    }

    /// Moves whatever the socket holds into `input`, without blocking.
    fn take_input(&mut self) {
        self.stream.set_nonblocking(true).unwrap();
        let mut buf = [0u8; 4096];
        loop {
            match self.stream.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => self.input.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => panic!("read failed: {e}"),
            }
        }
    }

    /// The text frames received so far (server frames are unmasked; texts are short here).
    fn texts(&mut self) -> Vec<String> {
        self.take_input();
        let mut texts = Vec::new();
        let mut at = 0;
        while at + 2 <= self.input.len() {
            let (opcode, mut len, mut head) =
                (self.input[at] & 0x0f, self.input[at + 1] as usize, 2);
            if len == 126 {
                len = u16::from_be_bytes([self.input[at + 2], self.input[at + 3]]) as usize;
                head = 4;
            }
            if at + head + len > self.input.len() {
                break;
            }
            if opcode == 0x1 {
                let payload = &self.input[at + head..at + head + len];
                texts.push(String::from_utf8(payload.to_vec()).unwrap());
            }
            at += head + len;
        }
        self.input.drain(..at);
        texts
    }
}

fn field(text: &str, name: &str) -> serde_json::Value {
    serde_json::from_str::<serde_json::Value>(text).unwrap()[name].clone()
}

/// A history as the default configuration keeps it.
fn history() -> Option<crate::history::History> {
    crate::models::history_for(&Config::default(), 2)
}

/// Shard `i` of a two-shard mesh over `peers`, keeping `history` for its rooms.
fn two_shard_mesh(
    i: usize,
    peers: &[PeerHandle],
    history: Option<crate::history::History>,
) -> Mesh {
    Mesh::new(
        ShardId(i),
        2,
        MeshLinks::new(ShardId(i), peers.to_vec()),
        history,
    )
}

/// A room whose home, among two shards, is shard `home`.
fn room_at_home(home: usize) -> String {
    (0..)
        .map(|i| format!("r{i}"))
        .find(|name| RoomId::parse(name).unwrap().home(2) == ShardId(home))
        .unwrap()
}

/// Turns the loops until clients `a` and `b` have `n` texts each (or a bounded number of
/// rounds passed: messages cross shards over a few turns); what each got.
fn both_receive<R: Reach>(
    rig: &mut Rig<R>,
    a: &mut Client,
    b: &mut Client,
    n: usize,
) -> (Vec<String>, Vec<String>) {
    let (mut seen_a, mut seen_b) = (Vec::new(), Vec::new());
    for _ in 0..20 {
        rig.settle();
        seen_a.extend(a.texts());
        seen_b.extend(b.texts());
        if seen_a.len() >= n && seen_b.len() >= n {
            break;
        }
    }
    (seen_a, seen_b)
}

fn offsets(texts: &[String]) -> Vec<u64> {
    texts
        .iter()
        .filter(|t| field(t, "type") == "message")
        .map(|t| field(t, "offset").as_u64().unwrap())
        .collect()
}

#[test]
fn mesh_gives_every_member_of_a_room_one_order() {
    let mut rig = rig(2, |i, peers, _| two_shard_mesh(i, peers, history()));
    for home in [0, 1] {
        let room = room_at_home(home);
        let mut a = rig.client(0, &room, None);
        let mut b = rig.client(1, &room, None);
        let mut c = rig.client(1, &room, Some("cy"));
        c.texts();
        // Both send before either loop turns: the home numbers one message from the other
        // shard after its own, whatever each shard saw first.
        for i in 0..3 {
            a.send_text(&format!("a{i}"));
            b.send_text(&format!("b{i}"));
        }
        let (seen_a, seen_b) = both_receive(&mut rig, &mut a, &mut b, 6);
        assert_eq!(seen_a.len(), 6, "{seen_a:?}");
        assert_eq!(seen_a, seen_b, "home {home}: one order for all");
        let v1 = c.texts();
        let first = offsets(&v1)[0];
        assert_eq!(offsets(&v1), (first..first + 6).collect::<Vec<_>>());
        let texts: Vec<_> = v1.iter().map(|t| field(t, "text")).collect();
        assert_eq!(texts, seen_a, "v1 members see the same sequence");
    }
}

#[test]
fn mesh_places_a_member_of_another_shard_where_its_replay_ends() {
    let mut rig = rig(2, |i, peers, _| two_shard_mesh(i, peers, history()));
    let room = room_at_home(0);
    let mut ann = rig.client(0, &room, Some("ann"));
    let welcome = ann.texts();
    let epoch = field(&welcome[0], "epoch");
    assert_eq!(field(&welcome[0], "offset"), 0);
    for i in 0..3 {
        ann.send_text(&format!(r#"{{"type":"message","text":"m{i}"}}"#));
    }
    rig.settle();
    // Bob joins on the other shard asking for two, while ann sends a fourth.
    ann.send_text(r#"{"type":"message","text":"m3"}"#);
    let mut bob = rig.client(1, &room, Some("bob&history=2"));
    rig.settle();
    let got = bob.texts();
    assert_eq!(field(&got[0], "type"), "welcome");
    assert_eq!(field(&got[0], "epoch"), epoch);
    let at = field(&got[0], "offset").as_u64().unwrap();
    assert_eq!(field(&got[0], "replay"), 2);
    let replayed: Vec<_> = got[1..3].iter().map(|t| field(t, "history")).collect();
    assert_eq!(replayed, [true, true]);
    // Two replayed up to its place, then live from there: contiguous, nothing twice.
    assert_eq!(offsets(&got), (at - 1..=4).collect::<Vec<_>>(), "{got:?}");

    // Dropped and back with `since`: exactly what it missed.
    drop(bob);
    rig.settle();
    ann.send_text(r#"{"type":"message","text":"m4"}"#);
    ann.send_text(r#"{"type":"message","text":"m5"}"#);
    rig.settle();
    let since = format!("bob&since={}:4", epoch.as_str().unwrap());
    let mut bob = rig.client(1, &room, Some(&since));
    rig.settle();
    let got = bob.texts();
    assert_eq!(field(&got[0], "recovered"), true);
    assert_eq!(offsets(&got), [5, 6]);
}

#[test]
fn mesh_closes_members_that_missed_messages_rather_than_leave_a_gap() {
    let peers = std::cell::RefCell::new(Vec::new());
    let mut rig = rig(2, |i, all, _| {
        *peers.borrow_mut() = all.to_vec();
        two_shard_mesh(i, all, history())
    });
    let room = room_at_home(0);
    let mut ann = rig.client(0, &room, None);
    let mut bob = rig.client(1, &room, None);
    ann.send_text("one");
    rig.settle();
    assert_eq!(bob.texts(), ["one"]);
    // As if the home's backlog to shard 1 had overflowed: message 2 never arrives there.
    let post = crate::chat::Post {
        sender: Arc::from("0.1"),
        nick: None,
        user: None,
        body: crate::chat::Body::Text("three".into()),
        ts: 0,
    };
    let peer = peers.borrow()[1].clone();
    peer.tx
        .send(ShardMsg::Broadcast {
            room: RoomId::parse(&room).unwrap(),
            post: crate::chat::Outgoing::sequenced(post, Default::default(), 3),
        })
        .unwrap();
    rig.settle();
    bob.take_input();
    // A close frame, 1013, and not the message after the gap.
    let close = [0x88u8, 0x02 + 34, 0x03, 0xf5];
    assert!(bob.input.starts_with(&close), "{:?}", bob.input);
    assert!(!bob.input.windows(5).any(|w| w == b"three"));
}

#[test]
fn shared_gives_every_member_of_a_room_one_order() {
    let registry = std::sync::OnceLock::new();
    let mut rig = rig(2, |i, _, wakers| {
        let registry = registry.get_or_init(|| Registry::new(wakers.to_vec(), history()));
        Shared::new(ShardId(i), registry.clone())
    });
    let mut a = rig.client(0, "r", None);
    let mut b = rig.client(1, "r", None);
    let mut c = rig.client(0, "r", Some("cy"));
    c.texts();
    for i in 0..3 {
        a.send_text(&format!("a{i}"));
        b.send_text(&format!("b{i}"));
    }
    let (seen_a, seen_b) = both_receive(&mut rig, &mut a, &mut b, 6);
    assert_eq!(seen_a.len(), 6, "{seen_a:?}");
    assert_eq!(seen_a, seen_b);
    assert_eq!(offsets(&c.texts()), [1, 2, 3, 4, 5, 6]);
}

#[test]
fn mesh_delivers_one_encoding_to_every_shard_in_each_senders_order() {
    let mut rig = rig(2, |i, peers, _| two_shard_mesh(i, peers, None));
    let mut a = rig.client(0, "r", None);
    let mut b = rig.client(1, "r", None);
    let mut elsewhere = rig.client(1, "other", None);
    a.send_text("one");
    a.send_text("two");
    b.send_text("three");
    rig.settle();
    for got in [a.texts(), b.texts()] {
        // Each sender's order holds; no order between two senders is promised.
        let from_a: Vec<_> = got.iter().filter(|t| *t != "three").collect();
        assert_eq!(from_a, ["one", "two"], "{got:?}");
        assert_eq!(got.len(), 3, "{got:?}");
    }
    assert!(elsewhere.texts().is_empty(), "rooms are apart");
}

#[test]
fn mesh_counts_members_on_every_shard_and_tells_them_of_joins() {
    let mut rig = rig(2, |i, peers, _| two_shard_mesh(i, peers, history()));
    let mut ann = rig.client(0, "r", Some("ann"));
    let welcome = ann.texts();
    assert_eq!(field(&welcome[0], "type"), "welcome");
    assert_eq!(field(&welcome[0], "online"), 1);
    let mut bob = rig.client(1, "r", Some("bob"));
    assert_eq!(
        field(&bob.texts()[0], "online"),
        2,
        "bob's welcome counts ann"
    );
    let join = ann.texts();
    assert_eq!(field(&join[0], "type"), "join");
    assert_eq!(field(&join[0], "nick"), "bob");
    assert_eq!(field(&join[0], "online"), 2);
    drop(bob);
    rig.settle();
    let leave = ann.texts();
    assert_eq!(field(&leave[0], "type"), "leave");
    assert_eq!(field(&leave[0], "online"), 1);
}

#[test]
fn alone_serves_a_room_on_one_loop() {
    let mut rig = rig(1, |_, _, _| Alone::new(history()));
    let mut ann = rig.client(0, "r", Some("ann"));
    let mut plain = rig.client(0, "r", None);
    ann.texts();
    plain.send_text("hi");
    rig.settle();
    assert_eq!(plain.texts(), ["hi"]);
    let got = ann.texts();
    let message = got.iter().find(|t| field(t, "type") == "message").unwrap();
    assert_eq!(field(message, "text"), "hi");
    assert_eq!(field(message, "nick"), serde_json::Value::Null);
}

#[test]
fn shared_sender_writes_to_other_threads_members_itself() {
    let registry = std::sync::OnceLock::new();
    let mut rig = rig(2, |i, _, wakers| {
        let registry = registry.get_or_init(|| Registry::new(wakers.to_vec(), None));
        Shared::new(ShardId(i), registry.clone())
    });
    let mut ann = rig.client(0, "r", Some("ann"));
    let mut bob = rig.client(1, "r", Some("bob"));
    let got = ann.texts();
    assert_eq!(field(&got[0], "online"), 1);
    assert_eq!(field(&got[1], "type"), "join", "written by bob's thread");
    assert_eq!(field(&got[1], "online"), 2);
    let online = field(&bob.texts()[0], "online");
    assert_eq!(online, 2, "the registry counts every thread");
    ann.send_text(r#"{"type":"message","text":"hi"}"#);
    // Only ann's thread turns: it writes to bob's socket itself.
    for _ in 0..6 {
        rig.turn(0);
    }
    let got = bob.texts();
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(field(&got[0], "text"), "hi");
    assert_eq!(field(&ann.texts()[0], "text"), "hi", "and ann gets her own");
}

#[test]
fn shared_members_of_a_closed_connection_leave_the_registry() {
    let registry = std::sync::OnceLock::new();
    let mut rig = rig(2, |i, _, wakers| {
        let registry = registry.get_or_init(|| Registry::new(wakers.to_vec(), history()));
        Shared::new(ShardId(i), registry.clone())
    });
    let mut ann = rig.client(0, "r", Some("ann"));
    let bob = rig.client(1, "r", Some("bob"));
    ann.texts();
    drop(bob);
    rig.settle();
    let leave = ann.texts();
    assert_eq!(field(&leave[0], "type"), "leave");
    assert_eq!(field(&leave[0], "online"), 1);
    let mut cat = rig.client(1, "r", Some("cat"));
    assert_eq!(field(&cat.texts()[0], "online"), 2);
}

// ---------------------------------------------------------------------------------------
// The server API's requests, as a loop acts on them.

/// A publish of the server API, handed to loop `i` as its inbox would; where it was placed.
fn api_publish<R: Reach>(
    rig: &mut Rig<R>,
    i: usize,
    room: &str,
    text: &str,
) -> Option<crate::control::Placed> {
    let (reply, replies) = crossbeam_channel::bounded(1);
    let post = crate::chat::Post::from_server(crate::chat::Body::Text(text.into()));
    rig.loops[i].0.on_control(crate::control::Control::Publish {
        room: RoomId::parse(room).unwrap(),
        post,
        index: 0,
        reply,
    });
    match replies.try_recv() {
        Ok(crate::control::Reply::Published { index: 0, placed }) => placed,
        other => panic!("expected the publish's answer, got {other:?}"),
    }
}

#[test]
fn mesh_an_api_publish_on_the_home_is_numbered_among_the_members_messages() {
    let mut rig = rig(2, |i, peers, _| two_shard_mesh(i, peers, history()));
    let room = room_at_home(1);
    let mut ann = rig.client(0, &room, Some("ann"));
    let mut plain = rig.client(1, &room, None);
    ann.texts();
    plain.send_text("first");
    let (seen_ann, seen_plain) = both_receive(&mut rig, &mut ann, &mut plain, 1);
    assert_eq!(seen_plain, ["first"]);
    assert_eq!(offsets(&seen_ann), [1]);
    let placed = api_publish(&mut rig, 1, &room, "from the app").expect("history is on");
    assert_eq!(placed.offset, 2);
    let (seen_ann, seen_plain) = both_receive(&mut rig, &mut ann, &mut plain, 1);
    assert_eq!(seen_plain, ["from the app"], "plain members get the text");
    let message = seen_ann
        .iter()
        .find(|t| field(t, "type") == "message")
        .expect("ann got it");
    assert_eq!(field(message, "from"), "server");
    assert_eq!(field(message, "id"), "server");
    assert_eq!(field(message, "offset"), 2);
}

#[test]
fn shared_an_api_publish_learns_its_place_under_the_registry_lock() {
    let registry = std::sync::OnceLock::new();
    let mut rig = rig(2, |i, _, wakers| {
        let registry = registry.get_or_init(|| Registry::new(wakers.to_vec(), history()));
        Shared::new(ShardId(i), registry.clone())
    });
    let mut a = rig.client(0, "r", None);
    let mut b = rig.client(1, "r", None);
    a.send_text("one");
    assert_eq!(
        both_receive(&mut rig, &mut a, &mut b, 1),
        (vec!["one".to_owned()], vec!["one".to_owned()])
    );
    let placed = api_publish(&mut rig, 0, "r", "two").expect("history is on");
    assert_eq!(placed.offset, 2);
    assert_eq!(
        both_receive(&mut rig, &mut a, &mut b, 1),
        (vec!["two".to_owned()], vec!["two".to_owned()])
    );
}

#[test]
fn a_disconnect_closes_the_named_session_with_the_asked_code() {
    let mut rig = rig(1, |_, _, _| Alone::new(history()));
    let mut ann = rig.client(0, "r", Some("ann"));
    let mut bob = rig.client(0, "r", Some("bob"));
    let id = field(&ann.texts()[0], "id");
    bob.texts();
    let id = crate::ids::SessionId::parse(id.as_str().unwrap()).unwrap();
    let (reply, replies) = crossbeam_channel::bounded(1);
    rig.loops[0]
        .0
        .on_control(crate::control::Control::Disconnect {
            target: crate::control::Target::Session(id),
            code: 4001,
            text: Arc::from("bye"),
            reply,
        });
    assert!(matches!(
        replies.try_recv(),
        Ok(crate::control::Reply::Disconnected(1))
    ));
    rig.settle();
    ann.take_input();
    // A close frame: 0x88, length 5, code 4001, "bye".
    assert_eq!(ann.input, [0x88, 5, 0x0f, 0xa1, b'b', b'y', b'e']);
    let notices = bob.texts();
    assert_eq!(field(&notices[0], "type"), "leave");
}
