//! Compare: run one scenario against the server started once per model x workers.
//!
//! The default scenario is `sweep`: one latency-against-offered-rate curve per
//! configuration, which is what tells the models apart (at one fixed rate they all deliver
//! the same). The server is started fresh for each configuration, so one's backlog or
//! memory cannot leak into the next.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::cli::{CompareArgs, FanoutShape, Scenario};
use crate::error::LoadError;
use crate::scenario::{ScenarioReport, SweepReport, run_scenario};
use crate::server_process::ServerProcess;
use crate::target::Target;

#[derive(Debug, Clone, Serialize)]
pub struct CompareRun {
    pub model: String,
    pub workers: usize,
    /// The server's command line (after the binary).
    pub server_args: Vec<String>,
    pub report: Option<ScenarioReport>,
    /// Why this combination has no report.
    pub error: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct CompareReport {
    pub scenario: String,
    /// What every configuration was asked to do, in words (room shape, message size, step
    /// length); empty for scenarios that have no one shape.
    pub setup: String,
    /// CPUs this process could use: client and server share them.
    pub cores: usize,
    pub runs: Vec<CompareRun>,
}

impl CompareRun {
    /// How charts and tables name this configuration.
    pub fn label(&self) -> String {
        let plural = if self.workers == 1 { "" } else { "s" };
        format!("{}, {} worker{plural}", self.model, self.workers)
    }
}

pub fn run(args: &CompareArgs) -> Result<CompareReport, LoadError> {
    if args.models.is_empty() || args.workers.is_empty() || args.workers.contains(&0) {
        return Err(LoadError::InvalidOptions(
            "--models and --workers need at least one value each; workers >= 1".into(),
        ));
    }
    let server_bin = server_bin(args.server_bin.as_deref())?;
    let mut base_scenario = args.scenario();
    // Validate the scenario's URLs once; only their paths are kept (rebased on each server).
    let paths: Vec<String> = base_scenario
        .common()
        .urls
        .iter()
        .map(|u| Target::parse(u).map(|t| t.path))
        .collect::<Result<_, _>>()?;
    let quiet = base_scenario.common().output.quiet || args.output.quiet;
    base_scenario.common_mut().output.quiet = quiet;
    let mut runs = Vec::new();
    for (model, workers) in configurations(&args.models, &args.workers) {
        if !quiet {
            eprintln!(
                "compare: {} with --model {model} --workers {workers}",
                base_scenario.name()
            );
        }
        let (server, server_args) =
            match start_server(&server_bin, &model, workers, &args.server_args, quiet) {
                Ok(started) => started,
                Err(e) => {
                    runs.push(CompareRun {
                        model,
                        workers,
                        server_args: Vec::new(),
                        report: None,
                        error: Some(e.to_string()),
                    });
                    continue;
                }
            };
        let mut scenario = base_scenario.clone();
        let common = scenario.common_mut();
        common.urls = paths
            .iter()
            .map(|p| format!("ws://{}{p}", server.addr()))
            .collect();
        common.server_pid = Some(server.pid());
        let result = run_scenario(&scenario);
        let stopped = server.stop();
        let (report, error) = match (result, stopped) {
            (Ok(report), Ok(())) => (Some(report), None),
            (Ok(report), Err(stop)) => (Some(report), Some(stop.to_string())),
            (Err(e), _) => (None, Some(e.to_string())),
        };
        runs.push(CompareRun {
            model,
            workers,
            server_args,
            report,
            error,
        });
    }
    Ok(CompareReport {
        scenario: base_scenario.name().to_string(),
        setup: describe(&base_scenario),
        cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
        runs,
    })
}

/// The server binary: the one given, else the `shardcast` in this executable's directory
/// (where `cargo build` puts both). Checked once here rather than failing every run.
fn server_bin(given: Option<&Path>) -> Result<PathBuf, LoadError> {
    let bin = match given {
        Some(path) => path.to_path_buf(),
        None => std::env::current_exe()
            .map_err(|e| LoadError::InvalidOptions(format!("cannot find --server-bin: {e}")))?
            .with_file_name("shardcast"),
    };
    if bin.is_file() {
        return Ok(bin);
    }
    let hint = match given {
        Some(_) => "check --server-bin",
        None => {
            "no --server-bin given and none beside shardcast-load: build it \
             (cargo build --release -p shardcast) or pass --server-bin PATH"
        }
    };
    Err(LoadError::Server {
        bin,
        reason: format!("not found ({hint})"),
    })
}

/// Every model x workers, except that `single` (one loop whatever --workers) runs once,
/// with the first worker count: its other runs would repeat it.
fn configurations(models: &[String], workers: &[usize]) -> Vec<(String, usize)> {
    models
        .iter()
        .flat_map(|model| {
            let counts = if model == "single" {
                &workers[..1]
            } else {
                workers
            };
            counts.iter().map(move |&w| (model.clone(), w))
        })
        .collect()
}

/// The scenario's shape in words, for chart titles: "100 subscribers, 1 publisher, 64 B
/// messages, 5 s per step".
fn describe(scenario: &Scenario) -> String {
    let shape = |shape: &FanoutShape| {
        let plural = |n: usize, word: &str| format!("{n} {word}{}", if n == 1 { "" } else { "s" });
        format!(
            "{}, {}, {} B messages",
            plural(shape.subscribers, "subscriber"),
            plural(shape.publishers, "publisher"),
            shape.size
        )
    };
    match scenario {
        Scenario::Sweep(a) => format!("{}, {} s per step", shape(&a.shape), a.common.duration),
        Scenario::Fanout(a) => format!(
            "{}, {} msg/s, {} s",
            shape(&a.shape),
            a.rate,
            a.common.duration
        ),
        _ => String::new(),
    }
}

/// Starts the server for one combination. A server that predates `--model` rejects the flag;
/// for the default model (`sharded`) it is then started without it, with a warning.
fn start_server(
    bin: &Path,
    model: &str,
    workers: usize,
    extra: &[String],
    quiet: bool,
) -> Result<(ServerProcess, Vec<String>), LoadError> {
    let args = |with_model: bool| {
        let mut args: Vec<String> = ["--listen", "127.0.0.1:0", "--no-pin"]
            .map(String::from)
            .to_vec();
        if with_model {
            args.extend(["--model".to_string(), model.to_string()]);
        }
        args.extend(["--workers".to_string(), workers.to_string()]);
        args.extend(extra.iter().cloned());
        args
    };
    let with_model = args(true);
    match ServerProcess::start(bin, &with_model) {
        Ok(server) => Ok((server, with_model)),
        Err(LoadError::Server { reason, .. })
            if model == "sharded" && reason.contains("--model") =>
        {
            if !quiet {
                eprintln!(
                    "compare: the server does not know --model; running its default (sharded)"
                );
            }
            let without = args(false);
            ServerProcess::start(bin, &without).map(|s| (s, without))
        }
        Err(e) => Err(e),
    }
}

impl CompareReport {
    /// Combinations that produced no report or failed to stop cleanly.
    pub fn failures(&self) -> usize {
        self.runs.iter().filter(|r| r.error.is_some()).count()
    }

    /// CSV header and rows: one row per configuration with its headline figures, or, for a
    /// sweep, one row per step of every configuration (the chart's data).
    pub fn table(&self) -> (Vec<&'static str>, Vec<Vec<String>>) {
        if let Some(table) = self.sweep_steps_csv() {
            return table;
        }
        self.headline_table()
    }

    fn headline_table(&self) -> (Vec<&'static str>, Vec<Vec<String>>) {
        let names: Vec<&'static str> = self
            .runs
            .iter()
            .find_map(|r| r.report.as_ref())
            .map(|r| r.headline().into_iter().map(|(n, _)| n).collect())
            .unwrap_or_default();
        let mut header = vec!["model", "workers"];
        header.extend(&names);
        header.push("error");
        let rows = self
            .runs
            .iter()
            .map(|run| {
                let mut row = vec![run.model.clone(), run.workers.to_string()];
                match &run.report {
                    Some(report) => row.extend(report.headline().into_iter().map(|(_, v)| v)),
                    None => row.extend(names.iter().map(|_| String::new())),
                }
                row.push(run.error.clone().unwrap_or_default());
                row
            })
            .collect();
        (header, rows)
    }

    /// The sweeps, in run order, with their configuration; `None` unless this compared sweeps.
    pub fn sweeps(&self) -> Option<Vec<(&CompareRun, Option<&SweepReport>)>> {
        if self.scenario != "sweep" {
            return None;
        }
        Some(
            self.runs
                .iter()
                .map(|run| match &run.report {
                    Some(ScenarioReport::Sweep(sweep)) => (run, Some(sweep)),
                    _ => (run, None),
                })
                .collect(),
        )
    }

    fn sweep_steps_csv(&self) -> Option<(Vec<&'static str>, Vec<Vec<String>>)> {
        let sweeps = self.sweeps()?;
        let mut header = vec!["model", "workers", "knee"];
        let mut rows = Vec::new();
        for (run, sweep) in sweeps {
            let Some(sweep) = sweep else { continue };
            for (step, columns) in sweep.steps.iter().zip(sweep.step_columns()) {
                if header.len() == 3 {
                    header.extend(columns.iter().map(|(name, _)| *name));
                }
                let knee = sweep.best_rate == Some(step.rate);
                let mut row = vec![run.model.clone(), run.workers.to_string(), knee.to_string()];
                row.extend(columns.into_iter().map(|(_, value)| value));
                rows.push(row);
            }
        }
        Some((header, rows))
    }

    /// Every step of every sweep in one table: what the chart draws, as text.
    fn sweep_steps_text(&self) -> Option<String> {
        let sweeps = self.sweeps()?;
        let header = vec![
            "model",
            "workers",
            "rate msg/s",
            "p50 ms",
            "p99 ms",
            "loss %",
            "deliveries/s",
            "per server CPU-s",
            "verdict",
        ];
        let mut rows = Vec::new();
        for (run, sweep) in sweeps {
            let Some(sweep) = sweep else { continue };
            for step in &sweep.steps {
                let r = &step.report;
                let knee = sweep.best_rate == Some(step.rate);
                rows.push(vec![
                    run.model.clone(),
                    run.workers.to_string(),
                    format!("{:.0}", step.rate),
                    format!("{:.3}", r.latency_ms.p50),
                    format!("{:.3}", r.latency_ms.p99),
                    format!("{:.2}", r.loss_percent()),
                    format!("{:.0}", r.deliveries_per_sec),
                    r.server.as_ref().map_or(String::new(), |s| {
                        format!("{:.0}", s.deliveries_per_cpu_sec)
                    }),
                    if knee {
                        "knee".to_string()
                    } else {
                        step.verdict.clone()
                    },
                ]);
            }
        }
        Some(aligned(&header, &rows))
    }

    pub fn summary(&self) -> String {
        let mut s = String::new();
        for run in &self.runs {
            if let Some(report) = &run.report {
                let _ = writeln!(s, "== --model {} --workers {}", run.model, run.workers);
                s.push_str(&report.summary());
            }
        }
        if let Some(steps) = self.sweep_steps_text() {
            let _ = writeln!(s, "== every step ({}; {} cores)", self.setup, self.cores);
            s.push_str(&steps);
        }
        let (header, rows) = self.headline_table();
        let _ = writeln!(s, "== comparison ({})", self.scenario);
        s.push_str(&aligned(&header, &rows));
        s
    }
}

/// A text table, one line per row: numbers right-aligned, the last column (words) left.
fn aligned(header: &[&str], rows: &[Vec<String>]) -> String {
    let widths: Vec<usize> = (0..header.len())
        .map(|i| {
            rows.iter()
                .map(|r| r[i].len())
                .chain([header[i].len()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let last = header.len().saturating_sub(1);
    let line = |cells: Vec<&str>| {
        cells
            .iter()
            .zip(&widths)
            .enumerate()
            .map(|(i, (c, w))| {
                if i == last {
                    format!("{c:<w$}")
                } else {
                    format!("{c:>w$}")
                }
            })
            .collect::<Vec<_>>()
            .join("  ")
            .trim_end()
            .to_string()
    };
    let mut s = String::new();
    let _ = writeln!(s, "{}", line(header.to_vec()));
    for row in rows {
        let _ = writeln!(s, "{}", line(row.iter().map(String::as_str).collect()));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn single_runs_once_whatever_the_worker_counts() {
        let models = ["sharded", "single", "shared"].map(String::from);
        assert_eq!(
            configurations(&models, &[1, 2]),
            [
                ("sharded".to_string(), 1),
                ("sharded".to_string(), 2),
                ("single".to_string(), 1),
                ("shared".to_string(), 1),
                ("shared".to_string(), 2),
            ]
        );
    }

    #[test]
    fn a_missing_server_binary_is_refused_up_front() {
        let missing = Path::new("/nonexistent/shardcast");
        let err = server_bin(Some(missing)).unwrap_err();
        assert!(err.to_string().contains("not found"), "{err}");
    }
}
