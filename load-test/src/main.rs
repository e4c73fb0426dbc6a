//! `shardcast-load`: parse the command line, run the scenario, write the report.

use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use shardcast_load::cli::{Cli, Command};
use shardcast_load::output::emit;
use shardcast_load::scenario::compare;
use shardcast_load::{plot, run_scenario};

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("shardcast-load: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Scenario(scenario) => {
            let report = run_scenario(&scenario)
                .with_context(|| format!("{} scenario failed", scenario.name()))?;
            emit(&report, &scenario.common().output)?;
            let failed = report.failed_checks();
            for check in &failed {
                eprintln!("shardcast-load: check failed: {check}");
            }
            Ok(if failed.is_empty() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        Command::Compare(args) => {
            let report = compare::run(&args).context("compare failed")?;
            let output = args.scenario().common().output.or(&args.output);
            emit(&report, &output)?;
            if let Some(path) = &args.plot {
                plot::draw(&report, path)?;
            }
            if report.failures() > 0 {
                eprintln!(
                    "shardcast-load: {} combination(s) failed",
                    report.failures()
                );
                return Ok(ExitCode::FAILURE);
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}
