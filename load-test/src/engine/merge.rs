//! Adding up the workers' reports and turning them, with the coordinator's samples, into a
//! [`TrafficReport`].

use hdrhistogram::Histogram;

use crate::clock::ns_to_secs;
use crate::order::MemberOrder;
use crate::plan::Plan;
use crate::probe::{ServerProbe, Usage};
use crate::report::{FloodReport, RoundTripReport, ServerReport, TrafficReport};
use crate::roundtrip::RoundTripBoard;
use crate::sockstat::{KernelTcpReport, TcpSockstat};
use crate::stats::{Endings, FloodStats, Quantiles, ReceiveStats, new_histogram};
use crate::worker::WorkerReport;

/// Server and client samples taken by the coordinator at the phase boundaries.
#[derive(Debug, Default)]
pub(super) struct Samples {
    pub before_connect: Option<Usage>,
    pub after_connect: Option<Usage>,
    pub window_start: Option<Usage>,
    pub window_end: Option<Usage>,
    pub end: Option<Usage>,
    pub client_cpu_secs: f64,
    /// The kernel's TCP figures at the first two of those moments.
    pub kernel_before_connect: Option<TcpSockstat>,
    pub kernel_after_connect: Option<TcpSockstat>,
}

/// The workers' reports, summed.
pub(super) struct Merged {
    receive: ReceiveStats,
    latency: Histogram<u64>,
    connect: Histogram<u64>,
    send_lag: Histogram<u64>,
    opened: u64,
    failed: u64,
    first_failure: Option<String>,
    endings: Endings,
    first_connect_ns: Option<u64>,
    last_open_ns: Option<u64>,
    sent: u64,
    skipped: u64,
    open_holes: u64,
    /// Every worker's members still open at the end, for the order check.
    pub members: Vec<MemberOrder>,
    flood: FloodStats,
}

impl Default for Merged {
    fn default() -> Self {
        Merged {
            receive: ReceiveStats::default(),
            latency: new_histogram(),
            connect: new_histogram(),
            send_lag: new_histogram(),
            opened: 0,
            failed: 0,
            first_failure: None,
            endings: Endings::default(),
            first_connect_ns: None,
            last_open_ns: None,
            sent: 0,
            skipped: 0,
            open_holes: 0,
            members: Vec::new(),
            flood: FloodStats::default(),
        }
    }
}

impl Merged {
    pub fn add(&mut self, r: &WorkerReport) {
        self.receive.merge(&r.receive);
        // Every histogram has the same bounds, so adding cannot fail.
        let _ = self.latency.add(&r.latency);
        let _ = self.connect.add(&r.connect);
        let _ = self.send_lag.add(&r.send_lag);
        self.opened += r.opened;
        self.failed += r.failed;
        if self.first_failure.is_none() {
            self.first_failure = r.first_failure.clone();
        }
        self.endings.merge(&r.endings);
        self.first_connect_ns = match (self.first_connect_ns, r.first_connect_ns) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        self.last_open_ns = self.last_open_ns.max(r.last_open_ns);
        self.sent += r.sent;
        self.skipped += r.skipped;
        self.open_holes += r.open_holes;
        self.members.extend_from_slice(&r.members);
        self.flood.merge(&r.flood);
    }

    pub fn into_report(
        self,
        plan: &Plan,
        expected: u64,
        drained: bool,
        probe: Option<ServerProbe>,
        samples: &Samples,
        board: Option<&RoundTripBoard>,
    ) -> TrafficReport {
        let duration_secs = ns_to_secs(plan.timing.duration_ns);
        let per_sec = |n: u64, secs: f64| if secs > 0.0 { n as f64 / secs } else { 0.0 };
        let connect_secs = match (self.first_connect_ns, self.last_open_ns) {
            (Some(first), Some(last)) => ns_to_secs(last.saturating_sub(first)),
            _ => 0.0,
        };
        let in_window = self.receive.delivered_in_window;
        let server = probe.map(|probe| {
            let cpu_secs = match (samples.window_start, samples.window_end) {
                (Some(a), Some(b)) => b.cpu_secs - a.cpu_secs,
                _ => 0.0,
            };
            let rss = |u: Option<Usage>| u.map_or(0, |u| u.rss_bytes);
            let grown = rss(samples.after_connect) as f64 - rss(samples.before_connect) as f64;
            ServerReport {
                pid: probe.pid,
                cpu_secs,
                deliveries_per_cpu_sec: per_sec(in_window, cpu_secs),
                rss_before_connect: rss(samples.before_connect),
                rss_after_connect: rss(samples.after_connect),
                rss_end: rss(samples.end),
                rss_per_connection: if self.opened > 0 {
                    grown / self.opened as f64
                } else {
                    0.0
                },
            }
        });
        TrafficReport {
            label: plan.label.clone(),
            connections: plan.connections.len() as u64,
            opened: self.opened,
            connect_failures: self.failed,
            first_failure: self.first_failure,
            connect_secs,
            handshakes_per_sec: per_sec(self.opened, connect_secs),
            connect_ms: Quantiles::of(&self.connect),
            publishers: plan.publisher_count() as u64,
            payload_bytes: plan.payload_size,
            warmup_secs: ns_to_secs(plan.timing.warmup_ns),
            duration_secs,
            sent: self.sent,
            send_skipped: self.skipped,
            send_lag_ms: Quantiles::of(&self.send_lag),
            expected_deliveries: expected,
            delivered: self.receive.delivered,
            deliveries_in_window: in_window,
            deliveries_per_sec: per_sec(in_window, duration_secs),
            latency_ms: Quantiles::of(&self.latency),
            loss: expected.saturating_sub(self.receive.delivered),
            duplicates: self.receive.duplicates,
            reordered: self.receive.reordered,
            open_holes: self.open_holes,
            foreign_tokens: self.receive.foreign,
            malformed_tokens: self.receive.malformed,
            frames_received: self.receive.frames,
            bytes_received: self.receive.bytes,
            server_close_codes: self.endings.server_close_codes.clone(),
            dropped: self.endings.dropped,
            protocol_errors: self.endings.protocol_errors,
            drained,
            client_cpu_secs: samples.client_cpu_secs,
            server,
            kernel: match (samples.kernel_before_connect, samples.kernel_after_connect) {
                (Some(before), Some(after)) => {
                    Some(KernelTcpReport::new(before, after, self.opened))
                }
                _ => None,
            },
            round_trip: board.map(|b| RoundTripReport {
                completed: b.completed(),
                incomplete: b.incomplete(),
                ms: Quantiles::of(&b.round_trips()),
            }),
            // Filled in by the coordinator, which knows how much each room was sent.
            order: None,
            flood: (plan.flooders() > 0).then(|| FloodReport {
                flooders: plan.flooders() as u64,
                sent: self.flood.sent,
                skipped: self.flood.skipped,
                server_close_codes: self.flood.endings.server_close_codes.clone(),
                dropped: self.flood.endings.dropped,
                protocol_errors: self.flood.endings.protocol_errors,
            }),
        }
    }
}
