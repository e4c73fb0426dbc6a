//! What a resume run found, as text, JSON and table columns, and its exactness check.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Serialize;

use crate::report::mib;
use crate::stats::Quantiles;

/// The server's resource use during a resume run (with `--server-pid`).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ResumeServer {
    pub pid: u32,
    /// CPU seconds used while publishing (warm-up included).
    pub cpu_secs: f64,
    pub rss_end: u64,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ResumeReport {
    pub label: String,
    pub subscribers: u64,
    pub publishers: u64,
    /// Connections (subscribers and publishers) opened at the start, and those that failed.
    pub opened: u64,
    pub connect_failures: u64,
    /// The first thing that went wrong with a connection: at the start, a reconnect, or a
    /// publisher.
    pub first_failure: Option<String>,
    /// Seconds of publishing (warm-up plus the measured window).
    pub publish_secs: f64,
    pub sent: u64,
    /// Messages not sent because a publisher's connection was gone or its outbox full.
    pub send_skipped: u64,
    /// Abrupt drops done by the generator (socket shut, no close frame).
    pub drops: u64,
    /// Connections the server ended: by close code, or without a close frame.
    pub server_close_codes: BTreeMap<u16, u64>,
    pub server_dropped: u64,
    /// Reconnects dialed, and those that failed to connect or upgrade (retried).
    pub reconnects: u64,
    /// Reconnects dialed to another server address than the connection before (with several
    /// `--url`s each reconnect moves on to the next one; with one, 0).
    pub reconnects_to_another_node: u64,
    /// Reconnects that ended (dropped, refused, closed) before their welcome: the rest were
    /// answered (`recovered`, `not_recovered`, `unanswered`), or still joining at the end.
    pub reconnects_unwelcomed: u64,
    pub reconnect_failures: u64,
    /// Resumes answered `recovered: true`, `false`, and without `recovered` at all.
    pub recovered: u64,
    pub not_recovered: u64,
    pub unanswered: u64,
    /// From dialing a reconnect to the last history message its welcome announced.
    pub catch_up_ms: Quantiles,
    /// Reconnects dropped (or ended) before their catch-up completed.
    pub catch_ups_interrupted: u64,
    /// Catch-ups where a live message came before all the announced history.
    pub short_replays: u64,
    /// Distinct offsets received, summed over subscribers.
    pub delivered: u64,
    /// Messages received from history (after a welcome) and live, duplicates included.
    pub replayed: u64,
    pub live: u64,
    /// Offsets received twice by a subscriber (over all its connections).
    pub duplicates: u64,
    /// Holes in a subscriber's offsets, from its first welcome to the highest it saw.
    pub lost: u64,
    /// Messages sent that a subscriber never received, by their token, summed: unlike `lost`
    /// this sees across epochs (a resume on a node with its own numbering, a restarted
    /// server), and it includes the tail still missing at the end.
    pub missed: u64,
    /// Messages a subscriber received more than once, by their token, summed: unlike
    /// `duplicates` this sees across epochs; it includes history asked for with `--history`
    /// that repeats what the subscriber had (allowed after an unrecovered resume).
    pub received_twice: u64,
    /// Offsets a subscriber still lacked at the end, up to the room's last message.
    pub tail_missing: u64,
    /// Subscribers not caught up (connected, live, at the last offset) when the drain ended.
    pub behind_at_end: u64,
    /// The room's last offset, as the generator knows it (the highest over the epochs the
    /// subscribers end in: nodes that number a room each on their own have one each).
    pub final_offset: u64,
    /// Every subscriber caught up before the drain ended.
    pub drained: bool,
    /// Live messages, scheduled send time to receipt.
    pub latency_ms: Quantiles,
    /// Anomalies: envelopes that did not parse, messages and welcomes without offsets, offsets
    /// before a subscriber's start or absurdly far ahead, messages without a token of this run,
    /// and `error` envelopes by code.
    pub unparsable: u64,
    pub messages_without_offset: u64,
    pub welcomes_without_offset: u64,
    pub early_offsets: u64,
    pub out_of_range_offsets: u64,
    pub foreign: u64,
    pub error_codes: BTreeMap<String, u64>,
    pub server: Option<ResumeServer>,
}

impl ResumeReport {
    /// The exactness check: a message duplicated or lost although every resume said
    /// `recovered: true` contradicts the server's promise.
    pub fn contradiction(&self) -> bool {
        (self.duplicates > 0 || self.lost > 0) && self.not_recovered == 0 && self.unanswered == 0
    }

    /// The checks that failed, as sentences (the binary exits non-zero if any).
    pub fn failed_checks(&self) -> Vec<String> {
        let mut failed = Vec::new();
        if self.contradiction() {
            failed.push(format!(
                "{} lost and {} duplicated although all {} resumes were recovered",
                self.lost, self.duplicates, self.recovered
            ));
        }
        if self.welcomes_without_offset > 0 {
            failed.push(format!(
                "{} welcomes carried no epoch/offset: is history on (--history-size > 0)?",
                self.welcomes_without_offset
            ));
        }
        failed
    }

    pub fn summary(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(s, "{}", self.label);
        let _ = writeln!(
            s,
            "  connections  {} opened, {} failed at the start",
            self.opened, self.connect_failures
        );
        if let Some(reason) = &self.first_failure {
            let _ = writeln!(s, "  first failure  {reason}");
        }
        let _ = writeln!(
            s,
            "  messages     {} sent by {} publishers in {:.1} s ({} skipped); room's last offset {}",
            self.sent, self.publishers, self.publish_secs, self.send_skipped, self.final_offset
        );
        let _ = writeln!(
            s,
            "  drops        {} abrupt; server closed {} {:?}, dropped {}; {} reconnects ({} failed{})",
            self.drops,
            self.server_close_codes.values().sum::<u64>(),
            self.server_close_codes,
            self.server_dropped,
            self.reconnects,
            self.reconnect_failures,
            if self.reconnects_to_another_node > 0 {
                format!(", {} to another node", self.reconnects_to_another_node)
            } else {
                String::new()
            }
        );
        let c = &self.catch_up_ms;
        let _ = writeln!(
            s,
            "  resumes      {} recovered, {} not recovered, {} unanswered; catch-up ms p50 {:.2}  p99 {:.2}  max {:.2} (n={}, {} interrupted, {} short)",
            self.recovered,
            self.not_recovered,
            self.unanswered,
            c.p50,
            c.p99,
            c.max,
            c.count,
            self.catch_ups_interrupted,
            self.short_replays
        );
        let _ = writeln!(
            s,
            "  deliveries   {} distinct offsets ({} live, {} from history){}",
            self.delivered,
            self.live,
            self.replayed,
            if self.drained {
                String::new()
            } else {
                format!(
                    "; drain timed out: {} subscribers behind, {} offsets missing at the tail",
                    self.behind_at_end, self.tail_missing
                )
            }
        );
        let l = &self.latency_ms;
        let _ = writeln!(
            s,
            "  latency ms   p50 {:.3}  p90 {:.3}  p99 {:.3}  max {:.3}  (live, n={})",
            l.p50, l.p90, l.p99, l.max, l.count
        );
        let _ = writeln!(
            s,
            "  exactness    lost {}, duplicated {} across reconnects: {}",
            self.lost,
            self.duplicates,
            if self.contradiction() {
                "CONTRADICTS the recovered resumes"
            } else if self.welcomes_without_offset + self.messages_without_offset > 0 {
                "not measurable: the server sent no offsets"
            } else if self.lost + self.duplicates == 0
                && self.missed + self.received_twice > 0
                && self.not_recovered > 0
            {
                "as far as offsets tell; resumes into another epoch (below) are unrecovered"
            } else if self.lost + self.duplicates == 0 && self.drained {
                "exact"
            } else if self.lost + self.duplicates == 0 {
                "exact as far as the subscribers got (the drain timed out)"
            } else {
                "explained by unrecovered resumes"
            }
        );
        let _ = writeln!(
            s,
            "  by token     {} missed, {} received twice (over all epochs and nodes)",
            self.missed, self.received_twice
        );
        let anomalies = self.unparsable
            + self.messages_without_offset
            + self.welcomes_without_offset
            + self.early_offsets
            + self.out_of_range_offsets
            + self.foreign;
        if anomalies > 0 || !self.error_codes.is_empty() {
            let _ = writeln!(
                s,
                "  anomalies    unparsable {}, messages without offset {}, welcomes without offset {}, early offsets {}, out of range {}, foreign {}, errors {:?}",
                self.unparsable,
                self.messages_without_offset,
                self.welcomes_without_offset,
                self.early_offsets,
                self.out_of_range_offsets,
                self.foreign,
                self.error_codes
            );
        }
        if let Some(server) = &self.server {
            let _ = writeln!(
                s,
                "  server       pid {}: {:.2} CPU-s while publishing; RSS {:.1} MiB at the end",
                server.pid,
                server.cpu_secs,
                mib(server.rss_end)
            );
        }
        s
    }

    /// The figures as (column, value) pairs, for CSV and comparison tables.
    pub fn columns(&self) -> Vec<(&'static str, String)> {
        let c = &self.catch_up_ms;
        vec![
            ("subscribers", self.subscribers.to_string()),
            ("sent", self.sent.to_string()),
            ("drops", self.drops.to_string()),
            ("reconnects", self.reconnects.to_string()),
            (
                "reconnects_to_another_node",
                self.reconnects_to_another_node.to_string(),
            ),
            ("recovered", self.recovered.to_string()),
            ("not_recovered", self.not_recovered.to_string()),
            ("catch_up_p50_ms", format!("{:.3}", c.p50)),
            ("catch_up_p99_ms", format!("{:.3}", c.p99)),
            ("catch_up_max_ms", format!("{:.3}", c.max)),
            ("delivered", self.delivered.to_string()),
            ("lost", self.lost.to_string()),
            ("duplicates", self.duplicates.to_string()),
            ("missed", self.missed.to_string()),
            ("received_twice", self.received_twice.to_string()),
            ("tail_missing", self.tail_missing.to_string()),
            ("p99_ms", format!("{:.3}", self.latency_ms.p99)),
            (
                "server_cpu_secs",
                self.server
                    .as_ref()
                    .map_or(String::new(), |s| format!("{:.2}", s.cpu_secs)),
            ),
        ]
    }
}
