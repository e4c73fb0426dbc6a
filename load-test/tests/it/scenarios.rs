//! The other scenarios and `compare`, briefly, against the real server.

use shardcast_load::cli::{Cli, Command};
use shardcast_load::scenario::compare;
use shardcast_load::{ScenarioReport, run_scenario};

use clap::Parser;

use crate::util::{scenario, shardcast_bin, start_shardcast, start_shardcast_with};

#[test]
fn chat_rooms_are_lossless_and_isolated() {
    let server = start_shardcast(2);
    let url = format!("ws://{}/", server.addr());
    let args = [
        "chat",
        "--url",
        &url,
        "--rooms",
        "3",
        "--members",
        "4",
        "--rate-per-member",
        "20",
        "--duration",
        "1",
        "--warmup",
        "0.2",
        "--expect-one-order",
    ];
    let ScenarioReport::Chat(report) = run_scenario(&scenario(&args)).expect("chat runs") else {
        panic!("not a chat report");
    };
    server.stop().expect("server stops");
    assert_eq!(report.opened, 12);
    assert_eq!(report.sent, 12 * 24, "{}", report.summary());
    // Each message reaches the 4 members of its own room and nobody else.
    assert_eq!(report.expected_deliveries, report.sent * 4);
    assert!(report.is_clean(), "{}", report.summary());
    assert_eq!(report.foreign_tokens, 0);
    // Each room has one order for its 4 members, whose shards differ.
    let order = report.order.expect("an order check");
    assert_eq!(
        (order.compared, order.differ),
        (12, 0),
        "{}",
        report.summary()
    );
    assert_eq!(order.rooms_compared, 3);
}

#[test]
fn a_flooder_is_closed_by_the_publish_rate_and_the_others_lose_nothing() {
    // The publisher (20 a second) stays within the rate (50, 100 at once); the flooder
    // (5000 a second) sends ten times over it and is closed after a second or so.
    let server = start_shardcast_with(2, &["--max-publish-rate", "50"]);
    let url = format!("ws://{}/flood", server.addr());
    let args = [
        "fanout",
        "--url",
        &url,
        "--subscribers",
        "10",
        "--rate",
        "20",
        "--flooders",
        "1",
        "--flood-rate",
        "5000",
        "--duration",
        "1.5",
        "--warmup",
        "0.5",
        "--expect-one-order",
    ];
    let ScenarioReport::Fanout(report) = run_scenario(&scenario(&args)).expect("fanout runs")
    else {
        panic!("not a fanout report");
    };
    server.stop().expect("server stops");
    let flood = report.flood.as_ref().expect("a flooders report");
    assert_eq!(flood.flooders, 1);
    assert!(flood.sent > 0);
    assert_eq!(
        flood.server_close_codes,
        [(1008, 1)].into(),
        "{}",
        report.summary()
    );
    // The flooder is no member: 10 subscribers and the publisher got everything, in one order.
    assert_eq!(report.opened, 12);
    assert_eq!(report.sent, 40, "{}", report.summary());
    assert_eq!(report.expected_deliveries, 40 * 11);
    assert!(report.is_clean(), "{}", report.summary());
    let order = report.order.expect("an order check");
    assert_eq!(
        (order.compared, order.differ),
        (11, 0),
        "{}",
        report.summary()
    );
}

#[test]
fn idle_reports_handshakes_and_memory() {
    let server = start_shardcast(1);
    let url = format!("ws://{}/idle", server.addr());
    let pid = server.pid().to_string();
    let args = [
        "idle",
        "--url",
        &url,
        "--connections",
        "300",
        "--hold",
        "0.3",
        "--source-ips",
        "3",
        "--server-pid",
        &pid,
    ];
    let ScenarioReport::Idle(report) = run_scenario(&scenario(&args)).expect("idle runs") else {
        panic!("not an idle report");
    };
    server.stop().expect("server stops");
    assert_eq!(report.opened, 300, "{}", report.summary());
    assert!(report.handshakes_per_sec > 0.0);
    assert_eq!(report.closed_during_hold, 0);
    let kernel = report.kernel.clone().expect("Linux has /proc/net/sockstat");
    // Both ends of every loopback connection were open when the kernel was sampled.
    assert!(kernel.after.inuse >= 2 * 300, "{}", report.summary());
    assert!(report.summary().contains("both ends"));
    let server = report.server.expect("server figures");
    assert!(server.rss_after >= server.rss_before);
}

#[test]
fn knee_finds_a_passing_room_size() {
    let server = start_shardcast(1);
    let url = format!("ws://{}/knee", server.addr());
    let args = [
        "knee",
        "--url",
        &url,
        "--step",
        "25",
        "--max-clients",
        "50",
        "--duration",
        "0.5",
        "--warmup",
        "0.1",
    ];
    let ScenarioReport::Knee(report) = run_scenario(&scenario(&args)).expect("knee runs") else {
        panic!("not a knee report");
    };
    server.stop().expect("server stops");
    assert_eq!(report.best_clients, Some(50), "{}", report.summary());
    let last = &report.steps[1].report;
    let round_trip = last.round_trip.as_ref().expect("round trips measured");
    assert!(round_trip.completed > 0);
    assert_eq!(round_trip.incomplete, 0);
    assert!(last.is_clean(), "{}", last.summary());
}

#[test]
fn sweep_stops_at_the_failing_step_asked_for() {
    let server = start_shardcast(1);
    let url = format!("ws://{}/sweep", server.addr());
    // No delivery takes under a nanosecond: every step fails on p99.
    let sweep = |max_failures: &str| {
        let args = [
            "sweep",
            "--url",
            &url,
            "--subscribers",
            "3",
            "--start-rate",
            "20",
            "--factor",
            "2",
            "--max-rate",
            "1000",
            "--p99-limit-ms",
            "0.000001",
            "--max-failures",
            max_failures,
            "--duration",
            "0.3",
            "--warmup",
            "0",
        ];
        let ScenarioReport::Sweep(report) = run_scenario(&scenario(&args)).expect("sweep runs")
        else {
            panic!("not a sweep report");
        };
        report
    };
    let stops = sweep("1");
    let goes_on = sweep("3");
    server.stop().expect("server stops");
    assert_eq!(stops.steps.len(), 1, "{}", stops.summary());
    let rates: Vec<f64> = goes_on.steps.iter().map(|s| s.rate).collect();
    assert_eq!(rates, [20.0, 40.0, 80.0], "{}", goes_on.summary());
    assert!(goes_on.steps.iter().all(|s| !s.passed));
    assert_eq!(goes_on.best_rate, None);
}

#[test]
fn compare_runs_each_combination_and_plots() {
    let dir = std::env::temp_dir().join(format!("shardcast-load-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let plot = dir.join("compare.svg");
    let bin = shardcast_bin();
    let cli = Cli::try_parse_from([
        "shardcast-load",
        "compare",
        "--server-bin",
        bin.to_str().expect("utf-8 path"),
        "--models",
        "sharded",
        "--workers",
        "1,2",
        "--server-arg=--max-buffered=1048576",
        "fanout",
        "--subscribers",
        "10",
        "--rate",
        "50",
        "--duration",
        "0.5",
        "--warmup",
        "0.1",
        "--quiet",
    ])
    .expect("valid command line");
    let Command::Compare(args) = cli.command else {
        panic!("not compare");
    };
    let report = compare::run(&args).expect("compare runs");
    assert_eq!(report.runs.len(), 2);
    assert_eq!(report.failures(), 0, "{}", report.summary());
    for run in &report.runs {
        let Some(ScenarioReport::Fanout(r)) = &run.report else {
            panic!("no fanout report");
        };
        assert!(r.is_clean(), "{}", r.summary());
        assert!(r.server.as_ref().is_some_and(|s| s.cpu_secs >= 0.0));
    }
    shardcast_load::plot::draw(&report, &plot).expect("plot");
    let svg = std::fs::read_to_string(&plot).expect("svg written");
    assert!(svg.contains("<svg") && svg.contains("sharded, 2 workers"));
    let _ = std::fs::remove_dir_all(&dir);
}
