//! The result of one traffic run, and how it reads as text and as table columns.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Serialize;

use crate::order::OrderReport;
use crate::sockstat::KernelTcpReport;
use crate::stats::Quantiles;

/// The server's resource use during a run (with `--server-pid`).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ServerReport {
    pub pid: u32,
    /// CPU seconds the server used during the measured window.
    pub cpu_secs: f64,
    /// Deliveries in the window per server CPU-second.
    pub deliveries_per_cpu_sec: f64,
    pub rss_before_connect: u64,
    pub rss_after_connect: u64,
    pub rss_end: u64,
    /// (RSS after connect - before) / connections opened.
    pub rss_per_connection: f64,
}

/// Round trips of closed-loop broadcasts (the knee scenario).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct RoundTripReport {
    pub completed: u64,
    /// Still in flight at the end; counted in the quantiles with their age then.
    pub incomplete: u64,
    pub ms: Quantiles,
}

/// What the flooders did (`--flooders`): kept apart from the traffic they disturb.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct FloodReport {
    /// Flooding connections planned.
    pub flooders: u64,
    /// Filler messages they queued, and those not queued because the server stopped
    /// reading them.
    pub sent: u64,
    pub skipped: u64,
    /// How many the server closed (by close code: 1008 at shardcast's rate limit), or that
    /// dropped without a close, before the run ended; the rest were still open.
    pub server_close_codes: BTreeMap<u16, u64>,
    pub dropped: u64,
    pub protocol_errors: u64,
}

/// Everything measured in one run of a plan.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct TrafficReport {
    pub label: String,
    /// Connections planned, opened, and failed to open.
    pub connections: u64,
    pub opened: u64,
    pub connect_failures: u64,
    pub first_failure: Option<String>,
    /// From the first connect to the last completed upgrade.
    pub connect_secs: f64,
    pub handshakes_per_sec: f64,
    pub connect_ms: Quantiles,
    pub publishers: u64,
    pub payload_bytes: usize,
    pub warmup_secs: f64,
    pub duration_secs: f64,
    /// Messages published (warm-up included).
    pub sent: u64,
    /// Messages not sent because the server stopped reading a publisher.
    pub send_skipped: u64,
    /// How late messages left compared with their schedule (client-side lag).
    pub send_lag_ms: Quantiles,
    /// Each message times the members of its room when traffic started.
    pub expected_deliveries: u64,
    /// First arrivals (duplicates excluded).
    pub delivered: u64,
    /// Deliveries received inside the measured window, and per second of it.
    pub deliveries_in_window: u64,
    pub deliveries_per_sec: f64,
    /// From the scheduled send time to receipt, messages scheduled in the window.
    pub latency_ms: Quantiles,
    /// `expected_deliveries - delivered`: never arrived before the drain ended.
    pub loss: u64,
    pub duplicates: u64,
    pub reordered: u64,
    /// Holes still open at the end (part of the loss; the rest is missing at the tail).
    pub open_holes: u64,
    pub foreign_tokens: u64,
    pub malformed_tokens: u64,
    /// Data frames and payload bytes received (warm-up and drain included).
    pub frames_received: u64,
    pub bytes_received: u64,
    /// Connections the server closed (by close code) or that dropped without a close.
    pub server_close_codes: BTreeMap<u16, u64>,
    pub dropped: u64,
    pub protocol_errors: u64,
    /// Every expected delivery arrived before the drain timeout.
    pub drained: bool,
    pub client_cpu_secs: f64,
    pub server: Option<ServerReport>,
    /// The kernel's TCP figures before connecting and with the connections open (the whole
    /// network namespace's: see [`crate::sockstat`]).
    pub kernel: Option<KernelTcpReport>,
    pub round_trip: Option<RoundTripReport>,
    /// Whether every member of a room saw one order (see [`crate::order`]); `None` without
    /// publishers.
    pub order: Option<OrderReport>,
    /// The flooders, if the plan had any (`--flooders`).
    pub flood: Option<FloodReport>,
}

impl TrafficReport {
    pub fn server_closed(&self) -> u64 {
        self.server_close_codes.values().sum()
    }

    /// Loss as a percentage of the expected deliveries (0 when none were expected).
    pub fn loss_percent(&self) -> f64 {
        if self.expected_deliveries == 0 {
            return 0.0;
        }
        self.loss as f64 * 100.0 / self.expected_deliveries as f64
    }

    /// True when nothing was lost, duplicated, reordered, refused or closed early.
    pub fn is_clean(&self) -> bool {
        self.loss == 0
            && self.duplicates == 0
            && self.reordered == 0
            && self.connect_failures == 0
            && self.server_closed() == 0
            && self.dropped == 0
            && self.protocol_errors == 0
    }

    /// Makes a difference in order fail the run (`--expect-one-order`).
    pub fn require_one_order(&mut self, required: bool) {
        if let Some(order) = &mut self.order {
            order.required = required;
        }
    }

    /// The human-readable summary.
    pub fn summary(&self) -> String {
        let mut s = String::new();
        let l = &self.latency_ms;
        let _ = writeln!(s, "{}", self.label);
        write_connections(
            &mut s,
            self.opened,
            self.connect_failures,
            self.connect_secs,
            self.handshakes_per_sec,
            &self.connect_ms,
            self.first_failure.as_deref(),
        );
        if self.publishers > 0 {
            let _ = writeln!(
                s,
                "  messages     {} sent by {} publishers ({} skipped; send lag p99 {:.3} ms, max {:.3} ms)",
                self.sent,
                self.publishers,
                self.send_skipped,
                self.send_lag_ms.p99,
                self.send_lag_ms.max
            );
            let _ = writeln!(
                s,
                "  deliveries   {} of {} expected; {:.0}/s over the {:.1} s window{}",
                self.delivered,
                self.expected_deliveries,
                self.deliveries_per_sec,
                self.duration_secs,
                if self.drained {
                    ""
                } else {
                    " (drain timed out)"
                }
            );
            let _ = writeln!(
                s,
                "  latency ms   p50 {:.3}  p90 {:.3}  p99 {:.3}  p99.9 {:.3}  max {:.3}  (n={})",
                l.p50, l.p90, l.p99, l.p999, l.max, l.count
            );
            let _ = writeln!(
                s,
                "  integrity    loss {}, duplicates {}, reordered {} (open holes {}, foreign tokens {}, malformed {})",
                self.loss,
                self.duplicates,
                self.reordered,
                self.open_holes,
                self.foreign_tokens,
                self.malformed_tokens
            );
        }
        if let Some(order) = &self.order {
            let _ = writeln!(s, "  order        {}", order.describe());
        }
        if let Some(flood) = &self.flood {
            let closed: u64 = flood.server_close_codes.values().sum();
            let _ = writeln!(
                s,
                "  flooders     {} sent {} filler messages ({} skipped); closed by the server {} {:?}, dropped {}, still open {}",
                flood.flooders,
                flood.sent,
                flood.skipped,
                closed,
                flood.server_close_codes,
                flood.dropped + flood.protocol_errors,
                flood
                    .flooders
                    .saturating_sub(closed + flood.dropped + flood.protocol_errors)
            );
        }
        if let Some(rt) = &self.round_trip {
            let _ = writeln!(
                s,
                "  round trip   {} complete, {} incomplete; p50 {:.2} ms, p95 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
                rt.completed, rt.incomplete, rt.ms.p50, rt.ms.p95, rt.ms.p99, rt.ms.max
            );
        }
        if self.server_closed() + self.dropped + self.protocol_errors > 0 {
            let _ = writeln!(
                s,
                "  closed early by server {} {:?}, dropped {}, protocol errors {}",
                self.server_closed(),
                self.server_close_codes,
                self.dropped,
                self.protocol_errors
            );
        }
        if let Some(server) = &self.server {
            let _ = writeln!(
                s,
                "  server       pid {}: {:.2} CPU-s in the window, {:.0} deliveries per CPU-s; RSS {:.1} MiB before connect, {:.1} MiB after, {:.1} MiB at the end",
                server.pid,
                server.cpu_secs,
                server.deliveries_per_cpu_sec,
                mib(server.rss_before_connect),
                mib(server.rss_after_connect),
                mib(server.rss_end)
            );
        }
        let _ = writeln!(
            s,
            "  client       {:.2} CPU-s in the window",
            self.client_cpu_secs
        );
        s
    }

    /// The figures as (column, value) pairs, for CSV and comparison tables.
    pub fn columns(&self) -> Vec<(&'static str, String)> {
        let server = self.server.as_ref();
        let l = &self.latency_ms;
        vec![
            ("connections", self.opened.to_string()),
            ("connect_failures", self.connect_failures.to_string()),
            (
                "handshakes_per_sec",
                format!("{:.0}", self.handshakes_per_sec),
            ),
            ("sent", self.sent.to_string()),
            ("expected", self.expected_deliveries.to_string()),
            ("delivered", self.delivered.to_string()),
            (
                "deliveries_per_sec",
                format!("{:.0}", self.deliveries_per_sec),
            ),
            ("p50_ms", format!("{:.3}", l.p50)),
            ("p90_ms", format!("{:.3}", l.p90)),
            ("p99_ms", format!("{:.3}", l.p99)),
            ("p999_ms", format!("{:.3}", l.p999)),
            ("max_ms", format!("{:.3}", l.max)),
            ("loss", self.loss.to_string()),
            ("duplicates", self.duplicates.to_string()),
            ("reordered", self.reordered.to_string()),
            (
                "order_differ",
                self.order.map_or(String::new(), |o| o.differ.to_string()),
            ),
            ("server_closed", self.server_closed().to_string()),
            (
                "server_cpu_secs",
                server.map_or(String::new(), |s| format!("{:.2}", s.cpu_secs)),
            ),
            (
                "deliveries_per_cpu_sec",
                server.map_or(String::new(), |s| {
                    format!("{:.0}", s.deliveries_per_cpu_sec)
                }),
            ),
            ("client_cpu_secs", format!("{:.2}", self.client_cpu_secs)),
        ]
    }
}

/// The summary lines about opening connections, shared by every scenario's report.
pub fn write_connections(
    s: &mut String,
    opened: u64,
    failed: u64,
    secs: f64,
    handshakes_per_sec: f64,
    connect_ms: &Quantiles,
    first_failure: Option<&str>,
) {
    let _ = writeln!(
        s,
        "  connections  {opened} opened, {failed} failed in {secs:.2} s ({handshakes_per_sec:.0} handshakes/s; connect p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms)",
        connect_ms.p50, connect_ms.p99, connect_ms.max
    );
    if let Some(reason) = first_failure {
        let _ = writeln!(s, "  first failure  {reason}");
    }
}

pub fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}
