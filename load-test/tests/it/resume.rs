//! The resume scenario: exact through a relay that keeps the history contract, a failed
//! exactness check through one that breaks it while saying `recovered`, and the real server.

use shardcast_load::resume::report::ResumeReport;
use shardcast_load::{ScenarioReport, run_scenario};

use crate::history_relay::{Breach, start_history_relay, start_history_relay_nodes};
use crate::util::{scenario, start_shardcast};

/// A short run: 10 subscribers, 200 msg/s for 1.7 s, a drop every 0.3 s per subscriber;
/// `extra` adds options (the reconnect delay is 0.05 s unless given).
fn resume(url: &str, extra: &[&str]) -> ResumeReport {
    let mut args = vec![
        "resume",
        "--url",
        url,
        "--subscribers",
        "10",
        "--rate",
        "200",
        "--duration",
        "1.5",
        "--warmup",
        "0.2",
        "--drop-every",
        "0.3",
        "--seed",
        "11",
    ];
    if !extra.contains(&"--reconnect-after") {
        args.extend_from_slice(&["--reconnect-after", "0.05"]);
    }
    args.extend_from_slice(extra);
    match run_scenario(&scenario(&args)).expect("resume runs") {
        ScenarioReport::Resume(report) => report,
        _ => panic!("not a resume report"),
    }
}

fn through(breach: Breach, extra: &[&str]) -> ResumeReport {
    let addr = start_history_relay(breach, 1_000);
    resume(&format!("ws://{addr}/room"), extra)
}

/// What an exact run looks like, whoever the server.
fn assert_exact(r: &ResumeReport) {
    let s = r.summary();
    assert_eq!(r.connect_failures, 0, "{s}");
    assert!(r.drops >= 10, "drops happen: {s}");
    assert!(r.reconnects >= r.drops, "{s}");
    assert!(
        r.recovered > 0 && r.not_recovered + r.unanswered == 0,
        "{s}"
    );
    assert_eq!((r.lost, r.duplicates), (0, 0), "{s}");
    // By token too: every message sent reached every subscriber exactly once.
    assert_eq!((r.missed, r.received_twice), (0, 0), "{s}");
    assert!(r.drained, "{s}");
    assert_eq!(r.tail_missing, 0, "{s}");
    assert!(r.replayed > 0 && r.catch_up_ms.count > 0, "{s}");
    // Every subscriber has every message from its first welcome to the room's last one.
    assert_eq!(r.delivered, r.sent * r.subscribers, "{s}");
    assert_eq!(
        r.foreign + r.unparsable + r.messages_without_offset,
        0,
        "{s}"
    );
    assert!(r.failed_checks().is_empty(), "{s}");
}

#[test]
fn resumes_exactly_through_a_relay_that_keeps_the_contract() {
    assert_exact(&through(Breach::None, &[]));
}

#[test]
fn v1_publishers_and_history_requests_change_nothing_when_recovered() {
    assert_exact(&through(
        Breach::None,
        &["--v1-publishers", "--history", "5"],
    ));
}

#[test]
fn with_several_urls_every_reconnect_goes_to_the_next_node() {
    let nodes = start_history_relay_nodes(Breach::None, 1_000, 2);
    let urls: Vec<String> = nodes.iter().map(|a| format!("ws://{a}/room")).collect();
    let r = resume(&urls[0], &["--url", &urls[1], "--publishers", "2"]);
    let s = r.summary();
    assert_exact(&r);
    // Two nodes: every reconnect alternates, so each one lands on the other node.
    assert_eq!(r.reconnects_to_another_node, r.reconnects, "{s}");
    assert!(s.contains("to another node"), "{s}");
    // Every reconnect is over: answered by a welcome, or ended before one.
    assert_eq!(
        r.recovered + r.not_recovered + r.unanswered + r.reconnects_unwelcomed,
        r.reconnects,
        "{s}"
    );
}

#[test]
fn with_one_url_no_reconnect_changes_node() {
    let r = through(Breach::None, &[]);
    assert!(r.reconnects > 0, "{}", r.summary());
    assert_eq!(r.reconnects_to_another_node, 0, "{}", r.summary());
    assert!(!r.summary().contains("to another node"));
}

#[test]
fn a_duplicate_after_a_recovered_resume_fails_the_exactness_check() {
    let r = through(Breach::ReplayOneTooMany, &[]);
    assert!(r.duplicates > 0, "{}", r.summary());
    assert!(r.received_twice > 0, "{}", r.summary());
    assert_eq!(r.lost, 0, "{}", r.summary());
    assert!(r.contradiction());
    assert_eq!(r.failed_checks().len(), 1, "{}", r.summary());
}

#[test]
fn a_hole_after_a_recovered_resume_fails_the_exactness_check() {
    let r = through(Breach::SkipFirstMissed, &[]);
    assert!(r.lost > 0, "{}", r.summary());
    assert!(r.missed >= r.lost, "{}", r.summary());
    assert!(r.contradiction(), "{}", r.summary());
}

#[test]
fn unrecovered_resumes_explain_the_loss_and_replay_the_history_asked_for() {
    // 5 messages of history; a reconnect 0.1 s later at 200 msg/s misses about 20.
    let addr = start_history_relay(Breach::None, 5);
    let url = format!("ws://{addr}/room");
    let r = resume(&url, &["--reconnect-after", "0.1", "--history", "3"]);
    let s = r.summary();
    assert!(r.not_recovered > 0 && r.unanswered == 0, "{s}");
    assert!(r.lost > 0, "{s}");
    assert!(
        r.missed >= r.lost,
        "the tokens see every hole the offsets see: {s}"
    );
    assert_eq!(r.duplicates, 0, "{s}");
    assert!(!r.contradiction(), "{s}");
    assert!(r.failed_checks().is_empty(), "{s}");
    // Every unrecovered resume replayed the 3 latest messages it asked for, unless its next
    // drop came first: a welcomed catch-up cut short replays fewer (~1 run in 7 has one).
    let cut_short = r
        .catch_ups_interrupted
        .saturating_sub(r.reconnects_unwelcomed);
    let completed = r.not_recovered.saturating_sub(cut_short);
    assert!(completed > 0, "{s}");
    assert!(r.replayed >= 3 * completed, "{s}");
    assert!(r.drained, "{s}");
}

#[test]
fn resumes_exactly_against_shardcast() {
    let server = start_shardcast(2);
    let r = resume(&format!("ws://{}/resume", server.addr()), &[]);
    server.stop().expect("server stops");
    if r.welcomes_without_offset > 0 {
        // A server from before the history contract (issue 11): nothing to check yet.
        eprintln!("skipped: this shardcast sends no offsets\n{}", r.summary());
        return;
    }
    assert_exact(&r);
}

/// Every resume of this run misses ~40 messages, well inside the default 100 of history, so
/// every one must be recovered. It found a defect: the history's byte count wrapped when a
/// message replayed since it was counted left, and the memory bound then emptied the room's
/// log (fixed: a kept message remembers the bytes it was counted for).
#[test]
fn resumes_stay_recovered_through_many_replays_against_shardcast() {
    let server = start_shardcast(2);
    let url = format!("ws://{}/many-replays", server.addr());
    let args = [
        "resume",
        "--url",
        &url,
        "--subscribers",
        "50",
        "--publishers",
        "2",
        "--rate",
        "400",
        "--drop-every",
        "0.5",
        "--reconnect-after",
        "0.1",
        "--duration",
        "5",
        "--seed",
        "1",
    ];
    let ScenarioReport::Resume(r) = run_scenario(&scenario(&args)).expect("resume runs") else {
        panic!("not a resume report");
    };
    server.stop().expect("server stops");
    assert_exact(&r);
}
