use std::sync::Arc;
use std::time::{Duration, Instant};

use super::*;
use crate::chat::Body;

fn limits(size: usize, memory: usize) -> Limits {
    Limits {
        size,
        ttl: Duration::from_secs(10),
        memory,
    }
}

fn post(text: &str) -> Post {
    Post {
        sender: Arc::from("0.1"),
        nick: None,
        user: None,
        body: Body::Text(text.into()),
        ts: 0,
    }
}

fn room(name: &str) -> RoomId {
    RoomId::parse(name).unwrap()
}

fn texts(start: &Start) -> Vec<u64> {
    start.replay.iter().map(|o| o.offset).collect()
}

fn since(epoch: Epoch, offset: u64) -> Ask {
    Ask {
        history: 0,
        since: Some(Since {
            epoch: Some(epoch),
            offset,
        }),
    }
}

#[test]
fn offsets_count_from_one_and_a_join_starts_at_the_latest() {
    let (mut h, now, r) = (
        History::new(limits(100, 1 << 20)),
        Instant::now(),
        room("r"),
    );
    let first = h.join(&r, &Ask::default(), now);
    assert_eq!((first.offset, first.recovered), (0, None));
    assert!(first.replay.is_empty());
    for i in 1..=5 {
        assert_eq!(h.append(&r, post("x"), Needs::default(), now).offset, i);
    }
    let later = h.join(
        &r,
        &Ask {
            history: 2,
            since: None,
        },
        now,
    );
    assert_eq!((later.epoch, later.offset), (first.epoch, 5));
    assert_eq!(texts(&later), [4, 5]);
}

#[test]
fn a_resume_inside_the_history_gets_exactly_what_followed() {
    let (mut h, now, r) = (History::new(limits(10, 1 << 20)), Instant::now(), room("r"));
    let epoch = h.join(&r, &Ask::default(), now).epoch;
    for _ in 0..25 {
        h.append(&r, post("x"), Needs::default(), now);
    }
    // The history holds 16..=25: a client that has 15 misses nothing it cannot get.
    let start = h.join(&r, &since(epoch, 15), now);
    assert_eq!(start.recovered, Some(true));
    assert_eq!(texts(&start), (16..=25).collect::<Vec<_>>());
    let start = h.join(&r, &since(epoch, 25), now);
    assert_eq!((start.recovered, start.replay.len()), (Some(true), 0));
    assert_eq!(h.tally().recovered, 2);
}

#[test]
fn no_resume_is_claimed_that_was_not_made() {
    let (mut h, now, r) = (History::new(limits(10, 1 << 20)), Instant::now(), room("r"));
    let epoch = h.join(&r, &Ask::default(), now).epoch;
    for _ in 0..25 {
        h.append(&r, post("x"), Needs::default(), now);
    }
    let other = Epoch(epoch.0 ^ 1);
    for (ask, why) in [
        (since(epoch, 14), "older than the history"),
        (since(epoch, 26), "a future offset"),
        (since(other, 20), "another epoch"),
    ] {
        let start = h.join(&r, &Ask { history: 3, ..ask }, now);
        assert_eq!(start.recovered, Some(false), "{why}");
        assert_eq!(
            texts(&start),
            [23, 24, 25],
            "{why}: the history it asked for"
        );
    }
    assert_eq!(h.tally().not_recovered, 3);
}

#[test]
fn an_empty_room_expires_into_a_new_epoch_and_a_busy_one_keeps_its_offsets() {
    let mut h = History::new(limits(10, 1 << 20));
    let (now, quiet, busy) = (Instant::now(), room("quiet"), room("busy"));
    let old = h.join(&quiet, &Ask::default(), now).epoch;
    h.append(&quiet, post("x"), Needs::default(), now);
    h.leave(&quiet, now);
    let kept = h.join(&busy, &Ask::default(), now).epoch;
    h.append(&busy, post("x"), Needs::default(), now);

    let later = now + Duration::from_secs(11);
    h.sweep(later);
    assert_eq!(h.tally().expired, 1);
    let again = h.join(&quiet, &since(old, 1), later);
    assert_ne!(again.epoch, old);
    assert_eq!((again.offset, again.recovered), (0, Some(false)));

    // The busy room lost its messages, not its place: its member is still exact.
    let start = h.join(&busy, &since(kept, 1), later);
    assert_eq!((start.epoch, start.offset), (kept, 1));
    assert_eq!((start.recovered, start.replay.len()), (Some(true), 0));
    assert_eq!(
        h.append(&busy, post("y"), Needs::default(), later).offset,
        2
    );
}

#[test]
fn the_last_leave_starts_the_time_to_live() {
    let mut h = History::new(limits(10, 1 << 20));
    let (now, r) = (Instant::now(), room("r"));
    let epoch = h.join(&r, &Ask::default(), now).epoch;
    h.append(&r, post("x"), Needs::default(), now);
    let leave = now + Duration::from_secs(8);
    h.leave(&r, leave);
    // Ten seconds after the message, but not after the leave: the log is kept whole.
    h.sweep(now + Duration::from_secs(12));
    let start = h.join(&r, &since(epoch, 0), now + Duration::from_secs(12));
    assert_eq!(start.recovered, Some(true));
    assert_eq!(texts(&start), [1]);
}

#[test]
fn memory_is_bounded_and_the_least_recently_used_give_way() {
    let memory = 64 * 1024;
    let mut h = History::new(limits(100, memory));
    let now = Instant::now();
    let body = "x".repeat(200);
    let mut epochs = Vec::new();
    for i in 0..500 {
        let r = room(&format!("r{i}"));
        epochs.push(h.join(&r, &Ask::default(), now).epoch);
        for _ in 0..3 {
            h.append(&r, post(&body), Needs::default(), now);
        }
        h.leave(&r, now);
        assert!(h.bytes() <= memory, "{} bytes after room {i}", h.bytes());
    }
    assert!(h.tally().evicted > 0);
    // The first rooms were evicted: a new epoch, no claim of recovery.
    let start = h.join(&room("r0"), &since(epochs[0], 3), now);
    assert_ne!(start.epoch, epochs[0]);
    assert_eq!(start.recovered, Some(false));
    // The last one is whole.
    let start = h.join(&room("r499"), &since(epochs[499], 0), now);
    assert_eq!((start.recovered, start.replay.len()), (Some(true), 3));
}

#[test]
fn a_room_with_members_keeps_its_epoch_under_memory_pressure() {
    let mut h = History::new(limits(100, 16 * 1024));
    let now = Instant::now();
    let (busy, body) = (room("busy"), "x".repeat(500));
    let epoch = h.join(&busy, &Ask::default(), now).epoch;
    h.append(&busy, post(&body), Needs::default(), now);
    for i in 0..100 {
        let r = room(&format!("r{i}"));
        h.join(&r, &Ask::default(), now);
        h.append(&r, post(&body), Needs::default(), now);
        h.leave(&r, now);
    }
    let start = h.join(&busy, &since(epoch, 1), now);
    assert_eq!((start.epoch, start.recovered), (epoch, Some(true)));
    assert!(h.bytes() <= 16 * 1024);
}

#[test]
fn replaying_a_message_never_changes_what_the_history_counts() {
    let (mut h, now, r) = (History::new(limits(3, 1 << 20)), Instant::now(), room("r"));
    h.join(&r, &Ask::default(), now);
    for round in 0..20 {
        h.append(&r, post("some text"), Needs::default(), now);
        // A resume renders the kept messages for v1 (made once, kept with the message).
        let start = h.join(
            &r,
            &Ask {
                history: 3,
                since: None,
            },
            now,
        );
        for out in &start.replay {
            out.replay_frame(crate::chat::Dialect::V1);
        }
        let kept: usize = start.replay.iter().map(|o| entry_bytes(o)).sum();
        let overhead = LOG_OVERHEAD + 1;
        assert_eq!(h.bytes(), kept + overhead, "round {round}");
    }
}

#[test]
fn one_room_alone_over_the_bound_keeps_its_newest_messages() {
    let mut h = History::new(limits(100, 4 * 1024));
    let (now, r) = (Instant::now(), room("r"));
    h.join(&r, &Ask::default(), now);
    for _ in 0..50 {
        h.append(&r, post(&"y".repeat(300)), Needs::default(), now);
    }
    assert!(h.bytes() <= 4 * 1024);
    let start = h.join(
        &r,
        &Ask {
            history: 100,
            since: None,
        },
        now,
    );
    assert_eq!(start.replay.last().map(|o| o.offset), Some(50));
    assert!(start.replay.len() < 50);
}

#[test]
fn a_peek_reads_the_log_without_joining_or_making_one() {
    let (mut h, now, r) = (
        History::new(limits(100, 1 << 20)),
        Instant::now(),
        room("r"),
    );
    assert!(h.peek(&r, &Ask::default(), now).is_none(), "no log is made");
    assert!(h.epoch(&r).is_none());
    for _ in 0..5 {
        h.append(&r, post("x"), Needs::default(), now);
    }
    let epoch = h.epoch(&r).unwrap();
    let last_two = Ask {
        history: 2,
        since: None,
    };
    let start = h.peek(&r, &last_two, now).unwrap();
    assert_eq!((start.epoch, start.offset), (epoch, 5));
    assert_eq!(texts(&start), [4, 5]);
    let after_three = h.peek(&r, &since(epoch, 3), now).unwrap();
    assert_eq!(after_three.recovered, Some(true));
    assert_eq!(texts(&after_three), [4, 5]);
    assert_eq!(h.tally(), Tally::default(), "a peek is no resume");
    // Expired and nobody in the room: as good as gone.
    assert!(
        h.peek(&r, &last_two, now + Duration::from_secs(11))
            .is_none()
    );
}

/// A batch of Redis's state: epoch `epoch`, messages `from..=to`.
fn batch(epoch: u64, from: u64, to: u64) -> Batch {
    Batch {
        epoch: Epoch(epoch),
        offset: to,
        entries: (from..=to).map(|o| (o, post(&o.to_string()))).collect(),
    }
}

fn waiter(key: usize, ask: Ask) -> Waiter {
    Waiter {
        owner: crate::ids::ShardId(0),
        key: crate::ids::SessionKey(key),
        generation: 1,
        ask,
    }
}

#[test]
fn a_follower_answers_joins_only_once_synced_and_then_as_one_node_would() {
    let (mut h, now, r) = (
        History::follower(limits(100, 1 << 20)),
        Instant::now(),
        room("r"),
    );
    assert!(
        !h.is_synced(&r),
        "nothing is known of a room before Redis says"
    );
    h.wait(&r, waiter(1, since(Epoch(7), 3)));
    h.wait(&r, waiter(2, Ask::default()));
    assert_eq!(h.take_to_sync(), vec![r.clone()], "asked once");
    assert!(h.take_to_sync().is_empty());
    h.sweep(now);
    assert_eq!(
        h.take_to_sync(),
        vec![r.clone()],
        "asked again while joins wait"
    );
    let synced = h.follow(&r, batch(7, 1, 5), Needs::default(), now);
    assert!(
        synced.live.is_empty() && !synced.missed,
        "a sync is history, not news"
    );
    assert_eq!(synced.ready.len(), 2);
    assert!(h.is_synced(&r));
    let start = h.join(&r, &synced.ready[0].ask, now);
    assert_eq!(
        (start.epoch, start.offset, start.recovered),
        (Epoch(7), 5, Some(true))
    );
    assert_eq!(texts(&start), vec![4, 5]);
    h.leave(&r, now);
    // The bridge stopped following: joins wait for a new sync.
    h.unfollow(&r);
    assert!(!h.is_synced(&r));
}

#[test]
fn a_follower_continues_fills_gaps_and_resets_loudly_on_a_new_epoch() {
    let (mut h, now, r) = (
        History::follower(limits(100, 1 << 20)),
        Instant::now(),
        room("r"),
    );
    h.follow(&r, batch(7, 1, 2), Needs::default(), now);
    h.join(&r, &Ask::default(), now);
    let live = h.follow(&r, batch(7, 3, 3), Needs::default(), now);
    assert_eq!(
        live.live.iter().map(|o| o.offset).collect::<Vec<_>>(),
        vec![3]
    );
    // A read covering a gap (and what came already): only the new ones, in order.
    let filled = h.follow(&r, batch(7, 1, 6), Needs::default(), now);
    let offsets: Vec<u64> = filled.live.iter().map(|o| o.offset).collect();
    assert_eq!((offsets, filled.missed), (vec![4, 5, 6], false));
    // A stream that no longer reaches back: the members here missed messages.
    let gap = h.follow(&r, batch(7, 9, 10), Needs::default(), now);
    assert!(gap.live.is_empty() && gap.missed);
    // Another epoch (Redis lost the room): missed too, and old positions are not recovered.
    let reset = h.follow(&r, batch(9, 1, 1), Needs::default(), now);
    assert!(reset.missed);
    let old = h.join(&r, &since(Epoch(7), 10), now);
    assert_eq!(
        (old.epoch, old.offset, old.recovered),
        (Epoch(9), 1, Some(false))
    );
    // A new epoch before anyone said anything: nothing was missed.
    let (mut quiet, q) = (History::follower(limits(100, 1 << 20)), room("q"));
    quiet.follow(&q, batch(1, 1, 0), Needs::default(), now);
    quiet.join(&q, &Ask::default(), now);
    assert!(
        !quiet
            .follow(&q, batch(2, 1, 0), Needs::default(), now)
            .missed
    );
    assert!(
        quiet
            .follow(&q, batch(3, 1, 1), Needs::default(), now)
            .missed
    );
    // Nobody here: a reset tells nobody.
    let (mut empty, e) = (History::follower(limits(100, 1 << 20)), room("e"));
    empty.follow(&e, batch(1, 1, 1), Needs::default(), now);
    assert!(
        !empty
            .follow(&e, batch(2, 1, 1), Needs::default(), now)
            .missed
    );
}
