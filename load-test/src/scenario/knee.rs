//! Knee: the largest room whose broadcast round trip stays under a bound.
//!
//! The websocket-shootout metric: with C clients in one room, one of them keeps a few
//! broadcasts in flight; a broadcast's round trip lasts until *all* C clients have it. C grows
//! by a step until the p95 round trip exceeds the bound. Each step is a fresh run (new
//! connections), so one step's backlog cannot spill into the next.

use std::fmt::Write as _;

use serde::Serialize;

use crate::cli::KneeArgs;
use crate::engine::run_plan;
use crate::error::LoadError;
use crate::plan::{Role, Room};
use crate::report::TrafficReport;
use crate::scenario::{Base, add_room};

#[derive(Debug, Clone, Serialize)]
pub struct KneeStep {
    pub clients: usize,
    /// p95 broadcast round trip, ms.
    pub p95_ms: f64,
    pub passed: bool,
    pub verdict: String,
    pub report: TrafficReport,
}

#[derive(Debug, Clone, Serialize)]
pub struct KneeReport {
    pub bound_ms: f64,
    pub in_flight: u32,
    pub steps: Vec<KneeStep>,
    /// The largest client count whose p95 round trip stayed within the bound.
    pub best_clients: Option<usize>,
}

pub fn run(args: &KneeArgs) -> Result<KneeReport, LoadError> {
    if args.step == 0 || args.max_clients < args.step.max(2) || args.in_flight == 0 {
        return Err(LoadError::InvalidOptions(
            "need --step >= 1, --max-clients >= max(--step, 2), --in-flight >= 1".into(),
        ));
    }
    let base = Base::new(&args.common)?;
    let mut steps = Vec::new();
    let mut clients = args.step.max(2);
    while clients <= args.max_clients {
        let targets = base.room_targets(args.room.as_deref());
        let label = format!(
            "knee: {clients} clients in {}, {} broadcasts in flight, {} B",
            targets[0].url(),
            args.in_flight,
            args.size
        );
        let mut plan = base.plan(label, args.size, clients)?;
        let roles = std::iter::once(Role::ClosedLoop {
            publisher: 0,
            in_flight: args.in_flight,
        })
        .chain((1..clients).map(|_| Role::Subscriber));
        add_room(
            &mut plan,
            targets,
            Room {
                first_publisher: 0,
                publishers: 1,
            },
            roles,
        );
        let report = run_plan(plan, &base.options())?;
        let round_trip =
            report
                .round_trip
                .clone()
                .unwrap_or_else(|| crate::report::RoundTripReport {
                    completed: 0,
                    incomplete: 0,
                    ms: Default::default(),
                });
        let p95_ms = round_trip.ms.p95;
        let (passed, verdict) = if report.connect_failures > 0 {
            (
                false,
                format!("{} connections failed", report.connect_failures),
            )
        } else if round_trip.completed == 0 {
            (false, "no broadcast completed".to_string())
        } else if p95_ms > args.bound_ms {
            (
                false,
                format!("p95 {p95_ms:.1} ms over {} ms", args.bound_ms),
            )
        } else {
            (true, "ok".to_string())
        };
        if !args.common.output.quiet {
            eprintln!(
                "knee: {clients} clients: {verdict} ({} round trips, p95 {p95_ms:.1} ms)",
                round_trip.completed
            );
        }
        steps.push(KneeStep {
            clients,
            p95_ms,
            passed,
            verdict,
            report,
        });
        if !passed {
            break;
        }
        clients += args.step;
    }
    let best_clients = steps.iter().filter(|s| s.passed).map(|s| s.clients).max();
    Ok(KneeReport {
        bound_ms: args.bound_ms,
        in_flight: args.in_flight,
        steps,
        best_clients,
    })
}

impl KneeReport {
    pub fn summary(&self) -> String {
        let mut s = String::new();
        for step in &self.steps {
            let rt = step.report.round_trip.as_ref();
            let _ = writeln!(
                s,
                "{:>7} clients  p50 {:>8.2}  p95 {:>8.2}  max {:>8.2} ms  {:>6} round trips ({} incomplete), {:.0} deliveries/s  {}",
                step.clients,
                rt.map_or(0.0, |r| r.ms.p50),
                step.p95_ms,
                rt.map_or(0.0, |r| r.ms.max),
                rt.map_or(0, |r| r.completed),
                rt.map_or(0, |r| r.incomplete),
                step.report.deliveries_per_sec,
                step.verdict
            );
        }
        match self.best_clients {
            Some(c) => {
                let _ = writeln!(
                    s,
                    "largest room with p95 round trip <= {} ms: {c} clients",
                    self.bound_ms
                );
            }
            None => {
                let _ = writeln!(s, "no step kept the p95 round trip <= {} ms", self.bound_ms);
            }
        }
        s
    }

    pub fn step_columns(&self) -> Vec<Vec<(&'static str, String)>> {
        self.steps
            .iter()
            .map(|step| {
                let rt = step.report.round_trip.as_ref();
                vec![
                    ("clients", step.clients.to_string()),
                    ("passed", step.passed.to_string()),
                    ("round_trips", rt.map_or(0, |r| r.completed).to_string()),
                    ("incomplete", rt.map_or(0, |r| r.incomplete).to_string()),
                    ("rt_p50_ms", format!("{:.3}", rt.map_or(0.0, |r| r.ms.p50))),
                    ("rt_p95_ms", format!("{:.3}", step.p95_ms)),
                    ("rt_max_ms", format!("{:.3}", rt.map_or(0.0, |r| r.ms.max))),
                    (
                        "deliveries_per_sec",
                        format!("{:.0}", step.report.deliveries_per_sec),
                    ),
                    ("loss", step.report.loss.to_string()),
                ]
            })
            .collect()
    }

    pub fn headline(&self) -> Vec<(&'static str, String)> {
        let best = self.steps.iter().rfind(|s| s.passed);
        vec![
            (
                "best_clients",
                self.best_clients.map_or(String::new(), |c| c.to_string()),
            ),
            (
                "rt_p95_ms",
                best.map_or(String::new(), |s| format!("{:.3}", s.p95_ms)),
            ),
        ]
    }

    pub fn plot_metrics(&self) -> [(&'static str, f64); 2] {
        let best = self.steps.iter().rfind(|s| s.passed);
        [
            (
                "largest room within the bound (clients)",
                self.best_clients.unwrap_or(0) as f64,
            ),
            ("p95 round trip there (ms)", best.map_or(0.0, |s| s.p95_ms)),
        ]
    }
}
