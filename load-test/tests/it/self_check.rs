//! Against a server that drops nothing, the tool must count nothing lost, duplicated or
//! reordered, and every expected delivery.

use shardcast_load::ScenarioReport;
use shardcast_load::run_scenario;

use crate::util::{scenario, start_shardcast};

#[test]
fn fanout_against_shardcast_is_lossless() {
    let server = start_shardcast(2);
    let url = format!("ws://{}/self-check", server.addr());
    let pid = server.pid().to_string();
    let args = [
        "fanout",
        "--url",
        &url,
        "--subscribers",
        "50",
        "--publishers",
        "2",
        "--rate",
        "200",
        "--duration",
        "2",
        "--warmup",
        "0.5",
        "--server-pid",
        &pid,
    ];
    let ScenarioReport::Fanout(report) = run_scenario(&scenario(&args)).expect("fanout runs")
    else {
        panic!("not a fanout report");
    };
    server.stop().expect("server stops");

    assert_eq!(report.opened, 52, "{}", report.summary());
    assert_eq!(report.connect_failures, 0);
    // 2.5 s at 200 msg/s.
    assert_eq!(report.sent, 500, "{}", report.summary());
    assert_eq!(report.expected_deliveries, 500 * 52);
    assert_eq!(
        report.delivered,
        report.expected_deliveries,
        "{}",
        report.summary()
    );
    assert_eq!(report.loss, 0);
    assert_eq!(report.duplicates, 0);
    assert_eq!(report.reordered, 0);
    assert_eq!(report.foreign_tokens + report.malformed_tokens, 0);
    assert!(report.drained);
    // One order per room, across the two shards (issue 11).
    let order = report.order.expect("an order check");
    assert_eq!(
        (order.compared, order.differ),
        (52, 0),
        "{}",
        report.summary()
    );
    assert!(report.latency_ms.count > 0);
    // Messages scheduled in the 2 s window: 400, each to 52 members.
    assert_eq!(report.latency_ms.count, 400 * 52);
    let server = report.server.expect("server figures with --server-pid");
    assert!(server.cpu_secs > 0.0 && server.rss_after_connect > 0);
}
