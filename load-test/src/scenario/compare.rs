//! Compare: run one scenario against the server started once per model x workers.

use std::fmt::Write as _;
use std::path::Path;

use serde::Serialize;

use crate::cli::CompareArgs;
use crate::error::LoadError;
use crate::scenario::{ScenarioReport, run_scenario};
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
    pub runs: Vec<CompareRun>,
}

pub fn run(args: &CompareArgs) -> Result<CompareReport, LoadError> {
    if args.models.is_empty() || args.workers.is_empty() || args.workers.contains(&0) {
        return Err(LoadError::InvalidOptions(
            "--models and --workers need at least one value each; workers >= 1".into(),
        ));
    }
    // Validate the scenario's URLs once; only their paths are kept (rebased on each server).
    let paths: Vec<String> = args
        .scenario
        .common()
        .urls
        .iter()
        .map(|u| Target::parse(u).map(|t| t.path))
        .collect::<Result<_, _>>()?;
    let quiet = args.scenario.common().output.quiet || args.output.quiet;
    let mut runs = Vec::new();
    for model in &args.models {
        for &workers in &args.workers {
            if !quiet {
                eprintln!(
                    "compare: {} with --model {model} --workers {workers}",
                    args.scenario.name()
                );
            }
            let (server, server_args) =
                match start_server(&args.server_bin, model, workers, &args.server_args, quiet) {
                    Ok(started) => started,
                    Err(e) => {
                        runs.push(CompareRun {
                            model: model.clone(),
                            workers,
                            server_args: Vec::new(),
                            report: None,
                            error: Some(e.to_string()),
                        });
                        continue;
                    }
                };
            let mut scenario = args.scenario.clone();
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
                model: model.clone(),
                workers,
                server_args,
                report,
                error,
            });
        }
    }
    Ok(CompareReport {
        scenario: args.scenario.name().to_string(),
        runs,
    })
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

    pub fn table(&self) -> (Vec<&'static str>, Vec<Vec<String>>) {
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

    pub fn summary(&self) -> String {
        let mut s = String::new();
        for run in &self.runs {
            if let Some(report) = &run.report {
                let _ = writeln!(s, "== --model {} --workers {}", run.model, run.workers);
                s.push_str(&report.summary());
            }
        }
        let (header, rows) = self.table();
        let widths: Vec<usize> = (0..header.len())
            .map(|i| {
                rows.iter()
                    .map(|r| r[i].len())
                    .chain([header[i].len()])
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        let _ = writeln!(s, "== comparison ({})", self.scenario);
        let line = |cells: Vec<&str>| {
            cells
                .iter()
                .zip(&widths)
                .map(|(c, w)| format!("{c:>w$}"))
                .collect::<Vec<_>>()
                .join("  ")
                .trim_end()
                .to_string()
        };
        let _ = writeln!(s, "{}", line(header.clone()));
        for row in &rows {
            let _ = writeln!(s, "{}", line(row.iter().map(String::as_str).collect()));
        }
        s
    }
}
