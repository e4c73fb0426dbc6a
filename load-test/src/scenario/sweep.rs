//! Sweep: fanout at increasing rates until p99 latency passes the limit or anything is lost
//! (at the `--max-failures`th such step).

use std::fmt::Write as _;

use serde::Serialize;

use crate::cli::SweepArgs;
use crate::engine::run_plan;
use crate::error::LoadError;
use crate::report::TrafficReport;
use crate::scenario::{Base, fanout, positive_rate};

#[derive(Debug, Clone, Serialize)]
pub struct SweepStep {
    /// Total publish rate of this step, messages/s.
    pub rate: f64,
    pub passed: bool,
    /// Why the step passed or failed.
    pub verdict: String,
    pub report: TrafficReport,
}

#[derive(Debug, Clone, Serialize)]
pub struct SweepReport {
    pub p99_limit_ms: f64,
    pub steps: Vec<SweepStep>,
    /// The highest rate that met the limit without loss.
    pub best_rate: Option<f64>,
}

pub fn run(args: &SweepArgs) -> Result<SweepReport, LoadError> {
    positive_rate("--start-rate", args.start_rate)?;
    let next_rate = rate_progression(args)?;
    let base = Base::new(&args.common)?;
    let mut steps = Vec::new();
    let mut rate = args.start_rate;
    let mut failures = 0;
    while rate <= args.max_rate {
        let report = run_plan(fanout::plan(&base, &args.shape, rate)?, &base.options())?;
        let (passed, verdict) = judge(&report, args.p99_limit_ms);
        if !args.common.output.quiet {
            eprintln!(
                "sweep: {rate:.0} msg/s: {verdict} ({:.0} deliveries/s, p99 {:.3} ms)",
                report.deliveries_per_sec, report.latency_ms.p99
            );
        }
        steps.push(SweepStep {
            rate,
            passed,
            verdict,
            report,
        });
        if !passed {
            failures += 1;
            if failures >= args.max_failures {
                break;
            }
        }
        rate = next_rate(rate);
    }
    let best_rate = steps
        .iter()
        .filter(|s| s.passed)
        .map(|s| s.rate)
        .reduce(f64::max);
    Ok(SweepReport {
        p99_limit_ms: args.p99_limit_ms,
        steps,
        best_rate,
    })
}

fn rate_progression(args: &SweepArgs) -> Result<Box<dyn Fn(f64) -> f64>, LoadError> {
    match (args.factor, args.step) {
        (_, Some(step)) if step > 0.0 && step.is_finite() => Ok(Box::new(move |r| r + step)),
        (Some(factor), None) if factor > 1.0 && factor.is_finite() => {
            Ok(Box::new(move |r| r * factor))
        }
        (None, None) => Ok(Box::new(|r| r * 2.0)),
        _ => Err(LoadError::InvalidOptions(
            "--factor must be > 1 and --step > 0".into(),
        )),
    }
}

/// A step passes when everything arrived, once, in order, with p99 within the limit.
pub(crate) fn judge(report: &TrafficReport, p99_limit_ms: f64) -> (bool, String) {
    if report.connect_failures > 0 {
        return (
            false,
            format!("{} connections failed", report.connect_failures),
        );
    }
    if report.loss > 0 {
        return (false, format!("lost {} deliveries", report.loss));
    }
    if report.server_closed() + report.dropped > 0 {
        return (
            false,
            format!(
                "{} connections closed early",
                report.server_closed() + report.dropped
            ),
        );
    }
    if report.latency_ms.p99 > p99_limit_ms {
        return (
            false,
            format!("p99 {:.3} ms over {p99_limit_ms} ms", report.latency_ms.p99),
        );
    }
    (true, "ok".into())
}

impl SweepReport {
    pub fn summary(&self) -> String {
        let mut s = String::new();
        for step in &self.steps {
            let r = &step.report;
            let _ = writeln!(
                s,
                "{:>10.0} msg/s  {:>12.0} deliveries/s  p50 {:>8.3}  p99 {:>8.3}  p99.9 {:>8.3} ms  loss {}  {}",
                step.rate,
                r.deliveries_per_sec,
                r.latency_ms.p50,
                r.latency_ms.p99,
                r.latency_ms.p999,
                r.loss,
                step.verdict
            );
        }
        match self.best_rate {
            Some(rate) => {
                let _ = writeln!(
                    s,
                    "highest rate within p99 <= {} ms and no loss: {rate:.0} msg/s",
                    self.p99_limit_ms
                );
            }
            None => {
                let _ = writeln!(
                    s,
                    "no rate met p99 <= {} ms without loss",
                    self.p99_limit_ms
                );
            }
        }
        s
    }

    fn best(&self) -> Option<&SweepStep> {
        self.steps.iter().rfind(|s| s.passed)
    }

    pub fn step_columns(&self) -> Vec<Vec<(&'static str, String)>> {
        self.steps
            .iter()
            .map(|step| {
                let mut row = vec![
                    ("rate", format!("{:.0}", step.rate)),
                    ("passed", step.passed.to_string()),
                ];
                row.extend(step.report.columns());
                row
            })
            .collect()
    }

    pub fn headline(&self) -> Vec<(&'static str, String)> {
        let best = self.best();
        vec![
            (
                "best_rate",
                self.best_rate.map_or(String::new(), |r| format!("{r:.0}")),
            ),
            (
                "deliveries_per_sec",
                best.map_or(String::new(), |s| {
                    format!("{:.0}", s.report.deliveries_per_sec)
                }),
            ),
            (
                "p99_ms",
                best.map_or(String::new(), |s| format!("{:.3}", s.report.latency_ms.p99)),
            ),
        ]
    }

    pub fn plot_metrics(&self) -> [(&'static str, f64); 2] {
        let best = self.best();
        [
            (
                "highest rate meeting the limit (msg/s)",
                self.best_rate.unwrap_or(0.0),
            ),
            (
                "deliveries/s at that rate",
                best.map_or(0.0, |s| s.report.deliveries_per_sec),
            ),
        ]
    }
}
