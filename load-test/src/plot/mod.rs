//! Charts of a comparison, written as SVG (no system fonts or image libraries needed).
//!
//! A compared `sweep` gets the line chart of [`sweep`]: latency, deliveries per server
//! CPU-second and loss against the offered rate, one line per configuration, knees marked.
//! Other scenarios have one figure per configuration and get the bar chart of [`bars`].

mod axis;
mod bars;
mod svg;
pub mod sweep;

use std::path::Path;

use crate::error::LoadError;
use crate::scenario::compare::CompareReport;

pub use axis::short_number;

/// Draws the comparison into `path`.
pub fn draw(report: &CompareReport, path: &Path) -> Result<(), LoadError> {
    let Some(chart) = sweep::SweepChart::of(report) else {
        return bars::draw(report, path);
    };
    if chart.lines.iter().all(|l| l.steps.is_empty()) {
        return Err(LoadError::Plot {
            path: path.to_path_buf(),
            reason: "no configuration produced a sweep".into(),
        });
    }
    std::fs::write(path, chart.render()).map_err(|source| LoadError::Output {
        what: format!("the plot to {}", path.display()),
        source,
    })
}

/// The chart's title: the scenario, what it was asked to do, and the machine's cores
/// ("shardcast-load compare: sweep of 100 subscribers, 1 publisher, 64 B messages, 5 s per
/// step, 2 cores").
fn title(report: &CompareReport) -> String {
    let mut title = format!("shardcast-load compare: {}", report.scenario);
    if !report.setup.is_empty() {
        title.push_str(&format!(" of {}", report.setup));
    }
    let plural = if report.cores == 1 { "" } else { "s" };
    title.push_str(&format!(", {} core{plural}", report.cores));
    title
}
