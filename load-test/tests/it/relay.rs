//! Against a relay that misbehaves on purpose, the report shows exactly that misbehaviour,
//! and tokens are found inside rewritten text.

use shardcast_load::{ScenarioReport, TrafficReport, run_scenario};

use crate::util::{Mischief, Wrap, scenario, start_relay};

const SUBSCRIBERS: u64 = 20;
const PUBLISHERS: u64 = 2;
const MEMBERS: u64 = SUBSCRIBERS + PUBLISHERS;

fn fanout_through(mischief: Mischief) -> TrafficReport {
    let addr = start_relay(mischief);
    let url = format!("ws://{addr}/");
    let args = [
        "fanout",
        "--url",
        &url,
        "--subscribers",
        "20",
        "--publishers",
        "2",
        "--rate",
        "100",
        "--duration",
        "1",
        "--warmup",
        "0.5",
    ];
    match run_scenario(&scenario(&args)).expect("fanout runs") {
        ScenarioReport::Fanout(report) => report,
        _ => panic!("not a fanout report"),
    }
}

#[test]
fn counts_exactly_the_dropped_duplicated_and_reordered_messages() {
    let report = fanout_through(Mischief {
        drop: Some((0, 10)),
        duplicate: Some((0, 20)),
        delay: Some((1, 30)),
        wrap: Wrap::Nick,
    });
    // 1.5 s at 100 msg/s over 2 publishers: 75 each.
    assert_eq!(report.sent, 150, "{}", report.summary());
    assert_eq!(report.expected_deliveries, 150 * MEMBERS);
    // Publisher 0's seq 10 reached nobody: one loss per member, still an open hole.
    assert_eq!(report.loss, MEMBERS, "{}", report.summary());
    assert_eq!(report.open_holes, MEMBERS);
    assert_eq!(report.delivered, 149 * MEMBERS);
    // Seq 20 reached everybody twice.
    assert_eq!(report.duplicates, MEMBERS, "{}", report.summary());
    // Publisher 1's seq 30 arrived after its seq 31 everywhere.
    assert_eq!(report.reordered, MEMBERS, "{}", report.summary());
    assert_eq!(report.foreign_tokens + report.malformed_tokens, 0);
    assert!(!report.is_clean());
    // Every member lost a message: nobody's order is comparable.
    let order = report.order.expect("an order check");
    assert_eq!((order.members, order.compared), (MEMBERS, 0));
}

#[test]
fn finds_tokens_inside_json_wrapped_messages() {
    let report = fanout_through(Mischief {
        wrap: Wrap::Json,
        ..Mischief::default()
    });
    assert_eq!(report.sent, 150, "{}", report.summary());
    assert_eq!(report.delivered, 150 * MEMBERS, "{}", report.summary());
    assert_eq!(report.loss + report.duplicates + report.reordered, 0);
    assert_eq!(report.malformed_tokens, 0);
    assert!(report.latency_ms.count > 0);
    // One hub relays every message to everyone in turn: one order for the room.
    let order = report.order.expect("an order check");
    assert_eq!(
        (order.compared, order.differ),
        (MEMBERS, 0),
        "{}",
        report.summary()
    );
}
