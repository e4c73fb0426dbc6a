//! Idle: open C connections, hold them, close them. Measures handshakes/s, the kernel's TCP
//! memory per connection (`/proc/net/sockstat`, see [`crate::sockstat`]) and, with
//! `--server-pid`, the server's resident memory per open connection: together, what an idle
//! connection costs in user space and in the kernel.

use std::fmt::Write as _;

use serde::Serialize;

use crate::cli::IdleArgs;
use crate::clock::secs_to_ns;
use crate::engine::run_plan;
use crate::error::LoadError;
use crate::plan::{Role, Room};
use crate::report::{mib, write_connections};
use crate::scenario::{Base, add_room};
use crate::sockstat::KernelTcpReport;
use crate::stats::Quantiles;

#[derive(Debug, Clone, Serialize)]
pub struct IdleServer {
    pub pid: u32,
    pub rss_before: u64,
    pub rss_after: u64,
    /// (after - before) / connections opened, in bytes.
    pub rss_per_connection: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct IdleReport {
    pub label: String,
    pub connections: u64,
    pub opened: u64,
    pub connect_failures: u64,
    pub first_failure: Option<String>,
    pub connect_secs: f64,
    pub handshakes_per_sec: f64,
    pub connect_ms: Quantiles,
    pub hold_secs: f64,
    /// Connections the server closed or dropped while they were held.
    pub closed_during_hold: u64,
    pub server: Option<IdleServer>,
    /// The kernel's TCP figures (the namespace's: both ends of loopback connections counted).
    pub kernel: Option<KernelTcpReport>,
}

pub fn run(args: &IdleArgs) -> Result<IdleReport, LoadError> {
    if args.connections == 0 {
        return Err(LoadError::InvalidOptions(
            "--connections must be at least 1".into(),
        ));
    }
    let base = Base::new(&args.common)?;
    let targets = base.room_targets(args.room.as_deref());
    let label = format!(
        "idle: {} connections to {}",
        args.connections,
        targets[0].url()
    );
    let mut plan = base.plan(label, 1, args.connections)?;
    // Nothing to measure but the connections themselves: no warm-up, no drain.
    plan.timing.warmup_ns = 0;
    plan.timing.drain_ns = 0;
    plan.timing.duration_ns = secs_to_ns(args.hold);
    add_room(
        &mut plan,
        targets,
        Room {
            first_publisher: 0,
            publishers: 0,
        },
        (0..args.connections).map(|_| Role::Subscriber),
    );
    let sources = plan.source_ips.count();
    let mut report = run_plan(plan, &base.options())?;
    report.label = format!("{} from {sources} source addresses", report.label);
    Ok(IdleReport {
        closed_during_hold: report.server_closed() + report.dropped + report.protocol_errors,
        server: report.server.as_ref().map(|s| IdleServer {
            pid: s.pid,
            rss_before: s.rss_before_connect,
            rss_after: s.rss_after_connect,
            rss_per_connection: s.rss_per_connection,
        }),
        kernel: report.kernel,
        label: report.label,
        connections: report.connections,
        opened: report.opened,
        connect_failures: report.connect_failures,
        first_failure: report.first_failure,
        connect_secs: report.connect_secs,
        handshakes_per_sec: report.handshakes_per_sec,
        connect_ms: report.connect_ms,
        hold_secs: args.hold,
    })
}

impl IdleReport {
    pub fn summary(&self) -> String {
        let mut s = String::new();
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
        let _ = writeln!(
            s,
            "  held         {:.1} s; {} closed by the server meanwhile",
            self.hold_secs, self.closed_during_hold
        );
        if let Some(server) = &self.server {
            let _ = writeln!(
                s,
                "  server       pid {}: RSS {:.1} MiB before, {:.1} MiB with the connections open: {:.0} bytes per connection",
                server.pid,
                mib(server.rss_before),
                mib(server.rss_after),
                server.rss_per_connection
            );
        }
        if let Some(kernel) = &self.kernel {
            let _ = writeln!(
                s,
                "  kernel       TCP buffers {:.1} MiB before, {:.1} MiB with the connections open: {:.0} bytes per connection; {:.1} sockets per connection",
                mib(kernel.before.mem_pages * kernel.page_size),
                mib(kernel.after.mem_pages * kernel.page_size),
                kernel.tcp_mem_per_connection,
                kernel.sockets_per_connection,
            );
            let _ = writeln!(
                s,
                "               slab {:.0} bytes per connection (socket structures; machine-wide)",
                kernel.slab_per_connection,
            );
            let _ = writeln!(
                s,
                "               the kernel's figures count both ends of a loopback connection"
            );
        }
        s
    }

    pub fn columns(&self) -> Vec<(&'static str, String)> {
        let server = self.server.as_ref();
        let kernel = self.kernel.as_ref();
        vec![
            ("connections", self.opened.to_string()),
            ("connect_failures", self.connect_failures.to_string()),
            (
                "handshakes_per_sec",
                format!("{:.0}", self.handshakes_per_sec),
            ),
            ("connect_p50_ms", format!("{:.3}", self.connect_ms.p50)),
            ("connect_p99_ms", format!("{:.3}", self.connect_ms.p99)),
            ("closed_during_hold", self.closed_during_hold.to_string()),
            (
                "rss_before",
                server.map_or(String::new(), |s| s.rss_before.to_string()),
            ),
            (
                "rss_after",
                server.map_or(String::new(), |s| s.rss_after.to_string()),
            ),
            (
                "rss_per_connection",
                server.map_or(String::new(), |s| format!("{:.0}", s.rss_per_connection)),
            ),
            (
                "kernel_tcp_mem_per_connection",
                kernel.map_or(String::new(), |k| {
                    format!("{:.0}", k.tcp_mem_per_connection)
                }),
            ),
            (
                "kernel_sockets_per_connection",
                kernel.map_or(String::new(), |k| {
                    format!("{:.2}", k.sockets_per_connection)
                }),
            ),
            (
                "kernel_slab_per_connection",
                kernel.map_or(String::new(), |k| format!("{:.0}", k.slab_per_connection)),
            ),
        ]
    }

    pub fn headline(&self) -> Vec<(&'static str, String)> {
        self.columns()
            .into_iter()
            .filter(|(n, _)| {
                ["handshakes_per_sec", "connect_p99_ms", "rss_per_connection"].contains(n)
            })
            .collect()
    }

    pub fn plot_metrics(&self) -> [(&'static str, f64); 2] {
        [
            ("handshakes/s", self.handshakes_per_sec),
            (
                "server RSS per connection (bytes)",
                self.server.as_ref().map_or(0.0, |s| s.rss_per_connection),
            ),
        ]
    }
}
