//! Scenarios: each turns its options into [`Plan`]s, runs them, and returns a report.

pub mod chat;
pub mod compare;
pub mod fanout;
pub mod idle;
pub mod knee;
pub mod resume;
pub mod sweep;

use serde::Serialize;

use crate::cli::{CommonArgs, Scenario};
use crate::clock::secs_to_ns;
use crate::engine::RunOptions;
use crate::error::LoadError;
use crate::plan::{ConnSpec, Plan, Role, Room, Timing};
use crate::probe::ServerProbe;
use crate::report::TrafficReport;
use crate::resume::report::ResumeReport;
use crate::target::{SourceIps, Target};

pub use idle::IdleReport;
pub use knee::KneeReport;
pub use sweep::SweepReport;

/// What any scenario produces.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "scenario", rename_all = "lowercase")]
pub enum ScenarioReport {
    Fanout(TrafficReport),
    Chat(TrafficReport),
    Sweep(SweepReport),
    Idle(IdleReport),
    Knee(KneeReport),
    Resume(ResumeReport),
}

/// Runs any scenario.
pub fn run_scenario(scenario: &Scenario) -> Result<ScenarioReport, LoadError> {
    Ok(match scenario {
        Scenario::Fanout(args) => ScenarioReport::Fanout(fanout::run(args)?),
        Scenario::Chat(args) => ScenarioReport::Chat(chat::run(args)?),
        Scenario::Sweep(args) => ScenarioReport::Sweep(sweep::run(args)?),
        Scenario::Idle(args) => ScenarioReport::Idle(idle::run(args)?),
        Scenario::Knee(args) => ScenarioReport::Knee(knee::run(args)?),
        Scenario::Resume(args) => ScenarioReport::Resume(resume::run(args)?),
    })
}

impl ScenarioReport {
    pub fn summary(&self) -> String {
        match self {
            ScenarioReport::Fanout(r) | ScenarioReport::Chat(r) => r.summary(),
            ScenarioReport::Sweep(r) => r.summary(),
            ScenarioReport::Idle(r) => r.summary(),
            ScenarioReport::Knee(r) => r.summary(),
            ScenarioReport::Resume(r) => r.summary(),
        }
    }

    /// The checks the run was asked to pass and did not, each as a sentence; empty when the
    /// run passed (or asked for nothing). The binary exits non-zero when there are any.
    pub fn failed_checks(&self) -> Vec<String> {
        match self {
            ScenarioReport::Fanout(r) | ScenarioReport::Chat(r) => r
                .order
                .filter(|o| o.failed())
                .map(|o| format!("--expect-one-order: {}", o.describe()))
                .into_iter()
                .collect(),
            ScenarioReport::Resume(r) => r.failed_checks(),
            ScenarioReport::Sweep(_) | ScenarioReport::Idle(_) | ScenarioReport::Knee(_) => {
                Vec::new()
            }
        }
    }

    /// CSV header and rows (several rows for stepped scenarios).
    pub fn rows(&self) -> (Vec<&'static str>, Vec<Vec<String>>) {
        match self {
            ScenarioReport::Fanout(r) | ScenarioReport::Chat(r) => split(vec![r.columns()]),
            ScenarioReport::Sweep(r) => split(r.step_columns()),
            ScenarioReport::Idle(r) => split(vec![r.columns()]),
            ScenarioReport::Knee(r) => split(r.step_columns()),
            ScenarioReport::Resume(r) => split(vec![r.columns()]),
        }
    }

    /// The few figures that compare servers, as (column, value).
    pub fn headline(&self) -> Vec<(&'static str, String)> {
        let keep = |r: &TrafficReport, names: &[&str]| {
            r.columns()
                .into_iter()
                .filter(|(n, _)| names.contains(n))
                .collect::<Vec<_>>()
        };
        match self {
            ScenarioReport::Fanout(r) | ScenarioReport::Chat(r) => keep(
                r,
                &[
                    "deliveries_per_sec",
                    "p50_ms",
                    "p99_ms",
                    "p999_ms",
                    "loss",
                    "server_cpu_secs",
                    "deliveries_per_cpu_sec",
                ],
            ),
            ScenarioReport::Sweep(r) => r.headline(),
            ScenarioReport::Idle(r) => r.headline(),
            ScenarioReport::Knee(r) => r.headline(),
            ScenarioReport::Resume(r) => r
                .columns()
                .into_iter()
                .filter(|(n, _)| {
                    [
                        "recovered",
                        "not_recovered",
                        "catch_up_p99_ms",
                        "lost",
                        "duplicates",
                        "server_cpu_secs",
                    ]
                    .contains(n)
                })
                .collect(),
        }
    }

    /// Two figures worth a bar chart: (title, value) each.
    pub fn plot_metrics(&self) -> [(&'static str, f64); 2] {
        match self {
            ScenarioReport::Fanout(r) | ScenarioReport::Chat(r) => [
                ("deliveries/s", r.deliveries_per_sec),
                ("p99 latency (ms)", r.latency_ms.p99),
            ],
            ScenarioReport::Sweep(r) => r.plot_metrics(),
            ScenarioReport::Idle(r) => r.plot_metrics(),
            ScenarioReport::Knee(r) => r.plot_metrics(),
            ScenarioReport::Resume(r) => [
                ("catch-up p99 (ms)", r.catch_up_ms.p99),
                ("latency p99 (ms)", r.latency_ms.p99),
            ],
        }
    }
}

fn split(rows: Vec<Vec<(&'static str, String)>>) -> (Vec<&'static str>, Vec<Vec<String>>) {
    let header = rows
        .first()
        .map(|r| r.iter().map(|(n, _)| *n).collect())
        .unwrap_or_default();
    let values = rows
        .into_iter()
        .map(|r| r.into_iter().map(|(_, v)| v).collect())
        .collect();
    (header, values)
}

/// The parts of a plan every scenario fills the same way from [`CommonArgs`].
pub(crate) struct Base {
    pub urls: Vec<Target>,
    pub common: CommonArgs,
}

impl Base {
    pub fn new(common: &CommonArgs) -> Result<Base, LoadError> {
        if common.urls.is_empty() {
            return Err(LoadError::InvalidOptions(
                "at least one --url is needed".into(),
            ));
        }
        if common.threads == 0 {
            return Err(LoadError::InvalidOptions(
                "--threads must be at least 1".into(),
            ));
        }
        for (name, value) in [
            ("--duration", common.duration),
            ("--warmup", common.warmup),
            ("--drain", common.drain),
            ("--connect-timeout", common.connect_timeout),
            ("--settle", common.settle),
        ] {
            if !value.is_finite() || value < 0.0 {
                return Err(LoadError::InvalidOptions(format!(
                    "{name} must be a non-negative number of seconds"
                )));
            }
        }
        let urls = common
            .urls
            .iter()
            .map(|u| Target::parse(u))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Base {
            urls,
            common: common.clone(),
        })
    }

    pub fn options(&self) -> RunOptions {
        RunOptions {
            server: self.common.server_pid.map(|pid| ServerProbe { pid }),
            progress: !self.common.output.quiet,
        }
    }

    pub fn timing(&self) -> Timing {
        Timing {
            connect_timeout_ns: secs_to_ns(self.common.connect_timeout),
            settle_ns: secs_to_ns(self.common.settle),
            warmup_ns: secs_to_ns(self.common.warmup),
            duration_ns: secs_to_ns(self.common.duration),
            drain_ns: secs_to_ns(self.common.drain),
        }
    }

    /// The targets of one room: every URL, with the room as path when one is named.
    pub fn room_targets(&self, room: Option<&str>) -> Vec<Target> {
        self.urls
            .iter()
            .map(|u| match room {
                Some(room) => u.with_room(room),
                None => u.clone(),
            })
            .collect()
    }

    /// A plan skeleton with no connections yet.
    pub fn plan(
        &self,
        label: String,
        payload_size: usize,
        connections: usize,
    ) -> Result<Plan, LoadError> {
        let source_ips = match self.common.source_ips {
            Some(k) => SourceIps::new(k)?,
            None => SourceIps::enough_for(connections),
        };
        Ok(Plan {
            label,
            targets: Vec::new(),
            rooms: Vec::new(),
            connections: Vec::with_capacity(connections),
            payload_size: payload_size.max(1),
            timing: self.timing(),
            threads: self.common.threads,
            source_ips,
            connect_concurrency: self.common.connect_concurrency.max(1),
            max_frame: self.common.max_frame,
        })
    }
}

/// Adds a room to `plan` whose members are spread round-robin over `targets`; `roles` lists
/// each member's role (publishers must use ids `first_publisher..first_publisher + count`).
pub(crate) fn add_room(
    plan: &mut Plan,
    targets: Vec<Target>,
    publishers: Room,
    roles: impl IntoIterator<Item = Role>,
) {
    let room = plan.rooms.len() as u32;
    plan.rooms.push(publishers);
    let first_target = plan.targets.len();
    let count = targets.len();
    plan.targets.extend(targets);
    for (i, role) in roles.into_iter().enumerate() {
        plan.connections.push(ConnSpec {
            target: (first_target + i % count) as u32,
            room,
            role,
        });
    }
}

/// Checks a messages-per-second option.
pub(crate) fn positive_rate(name: &str, rate: f64) -> Result<(), LoadError> {
    if rate.is_finite() && rate > 0.0 {
        Ok(())
    } else {
        Err(LoadError::InvalidOptions(format!(
            "{name} must be a positive rate"
        )))
    }
}
