//! The chart of a compared sweep: what decides between models.
//!
//! One line per configuration (model x workers) against the offered rate, in three panels
//! that share the rate axis: latency (p99 solid, p50 dashed, log scale), deliveries per
//! server CPU-second, and loss. Each configuration's knee — the highest rate whose p99 met
//! the limit with nothing lost, the rule of `sweep` — is a diamond; the fourth panel is the
//! legend with every knee in words.
//!
//! Every part is a group whose `class` says what it is (`panel`, `series`, `knee`,
//! `legend-entry`, `axis-label`) and `data-panel` / `data-config` say which, so the chart can
//! be checked by structure and each point carries its figures as a tooltip.

mod legend;
mod panel;

use panel::{Panel, Rect, SeriesSpec};

use crate::plot::axis::{Axis, short_number};
use crate::plot::svg::{Svg, px};
use crate::scenario::compare::CompareReport;

const WIDTH: u32 = 1200;
const HEIGHT: u32 = 900;
/// Top of the panel grid (below the title and subtitle).
const GRID_TOP: f64 = 72.0;
/// One colour per configuration (a colour-blind-safe palette), in run order.
const COLOURS: [&str; 8] = [
    "#0072b2", "#d55e00", "#009e73", "#cc79a7", "#e69f00", "#56b4e9", "#000000", "#f0e442",
];

/// The axis labels: one format, "quantity (unit)".
pub const RATE_LABEL: &str = "offered rate (msg/s)";
pub const LATENCY_LABEL: &str = "latency (ms)";
pub const EFFICIENCY_LABEL: &str = "server efficiency (deliveries per CPU-second)";
pub const LOSS_LABEL: &str = "loss (% of expected deliveries)";

/// One configuration's sweep, reduced to what the chart draws.
#[derive(Debug, Clone)]
pub struct Line {
    pub label: String,
    pub steps: Vec<Step>,
    /// The highest rate that passed.
    pub knee: Option<f64>,
    /// Why there is no sweep (the server did not start, the run failed).
    pub error: Option<String>,
}

#[derive(Debug, Clone)]
pub struct Step {
    pub rate: f64,
    /// Latency quantiles, ms; `None` when no message of the window arrived.
    pub p50: Option<f64>,
    pub p99: Option<f64>,
    pub per_cpu_sec: Option<f64>,
    pub loss_percent: f64,
    pub verdict: String,
}

/// Everything the chart shows.
#[derive(Debug, Clone)]
pub struct SweepChart {
    pub title: String,
    pub p99_limit_ms: f64,
    pub lines: Vec<Line>,
}

impl SweepChart {
    /// The chart of a comparison of sweeps; `None` for other scenarios.
    pub fn of(report: &CompareReport) -> Option<SweepChart> {
        let sweeps = report.sweeps()?;
        let p99_limit_ms = sweeps
            .iter()
            .find_map(|(_, s)| s.map(|s| s.p99_limit_ms))
            .unwrap_or(0.0);
        let lines = sweeps
            .iter()
            .map(|(run, sweep)| Line {
                label: run.label(),
                steps: sweep.map_or(Vec::new(), |s| {
                    s.steps
                        .iter()
                        .map(|step| {
                            let r = &step.report;
                            let measured = r.latency_ms.count > 0;
                            Step {
                                rate: step.rate,
                                p50: measured.then_some(r.latency_ms.p50),
                                p99: measured.then_some(r.latency_ms.p99),
                                // No CPU time measured (a window shorter than the kernel's
                                // tick) is no figure, not zero deliveries.
                                per_cpu_sec: r
                                    .server
                                    .as_ref()
                                    .filter(|s| s.cpu_secs > 0.0)
                                    .map(|s| s.deliveries_per_cpu_sec),
                                loss_percent: r.loss_percent(),
                                verdict: step.verdict.clone(),
                            }
                        })
                        .collect()
                }),
                knee: sweep.and_then(|s| s.best_rate),
                error: match sweep {
                    Some(_) => None,
                    None => Some(run.error.clone().unwrap_or_else(|| "no sweep".into())),
                },
            })
            .collect();
        Some(SweepChart {
            title: super::title(report),
            p99_limit_ms,
            lines,
        })
    }

    /// The chart as an SVG document.
    pub fn render(&self) -> String {
        let mut svg = Svg::new(WIDTH, HEIGHT);
        svg.element(
            "rect",
            &[("width", "100%"), ("height", "100%"), ("fill", "white")],
        );
        svg.text(
            &[
                ("class", "title"),
                ("x", &px(WIDTH as f64 / 2.0)),
                ("y", "28"),
                ("text-anchor", "middle"),
                ("font-size", "19"),
                ("font-weight", "bold"),
            ],
            &self.title,
        );
        svg.text(
            &[
                ("class", "subtitle"),
                ("x", &px(WIDTH as f64 / 2.0)),
                ("y", "52"),
                ("text-anchor", "middle"),
                ("font-size", "13"),
                ("fill", "#444"),
            ],
            &format!(
                "p99 solid, p50 dashed; \u{25c6} knee: the highest offered rate with p99 \u{2264} {} ms and nothing lost",
                short_number(self.p99_limit_ms)
            ),
        );
        let rates: Vec<f64> = self
            .lines
            .iter()
            .flat_map(|l| l.steps.iter().map(|s| s.rate))
            .collect();
        let x = Axis::at_points(&rates);
        let cell_w = WIDTH as f64 / 2.0;
        let cell_h = (HEIGHT as f64 - GRID_TOP) / 2.0;
        let cell = |col: f64, row: f64| Rect {
            left: col * cell_w,
            top: GRID_TOP + row * cell_h,
            width: cell_w,
            height: cell_h,
        };
        panel::draw(
            &mut svg,
            &self.lines,
            &self.latency_panel(),
            &x,
            cell(0.0, 0.0),
        );
        panel::draw(
            &mut svg,
            &self.lines,
            &self.efficiency_panel(),
            &x,
            cell(1.0, 0.0),
        );
        panel::draw(
            &mut svg,
            &self.lines,
            &self.loss_panel(),
            &x,
            cell(0.0, 1.0),
        );
        legend::draw(&mut svg, &self.lines, cell(1.0, 1.0));
        svg.finish()
    }

    fn latency_panel(&self) -> Panel {
        let values = self
            .lines
            .iter()
            .flat_map(|l| l.steps.iter().flat_map(|s| [s.p50, s.p99]).flatten())
            .chain([self.p99_limit_ms]);
        Panel {
            key: "latency",
            title: "latency against offered rate",
            y_label: LATENCY_LABEL,
            y: Axis::log_decades(values),
            series: vec![
                SeriesSpec {
                    class: "p99",
                    dashed: false,
                    value: |s| s.p99,
                    unit: "ms p99",
                },
                SeriesSpec {
                    class: "p50",
                    dashed: true,
                    value: |s| s.p50,
                    unit: "ms p50",
                },
            ],
            knee_value: |s| s.p99,
            knee_labels: true,
            limit: Some(self.p99_limit_ms),
        }
    }

    fn efficiency_panel(&self) -> Panel {
        let values = self
            .lines
            .iter()
            .flat_map(|l| l.steps.iter().filter_map(|s| s.per_cpu_sec));
        Panel {
            key: "efficiency",
            title: "server efficiency against offered rate",
            y_label: EFFICIENCY_LABEL,
            y: Axis::linear_from_zero(values),
            series: vec![SeriesSpec {
                class: "per-cpu-second",
                dashed: false,
                value: |s| s.per_cpu_sec,
                unit: "deliveries per server CPU-second",
            }],
            knee_value: |s| s.per_cpu_sec,
            knee_labels: false,
            limit: None,
        }
    }

    fn loss_panel(&self) -> Panel {
        let values = self
            .lines
            .iter()
            .flat_map(|l| l.steps.iter().map(|s| s.loss_percent));
        Panel {
            key: "loss",
            title: "loss against offered rate",
            y_label: LOSS_LABEL,
            y: Axis::linear_from_zero(values),
            series: vec![SeriesSpec {
                class: "loss",
                dashed: false,
                value: |s| Some(s.loss_percent),
                unit: "% lost",
            }],
            knee_value: |s| Some(s.loss_percent),
            knee_labels: false,
            limit: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn step(rate: f64, p99: f64, loss_percent: f64) -> Step {
        Step {
            rate,
            p50: Some(p99 / 3.0),
            p99: Some(p99),
            per_cpu_sec: Some(rate * 300.0),
            loss_percent,
            verdict: if p99 <= 50.0 && loss_percent == 0.0 {
                "ok".into()
            } else {
                "over".into()
            },
        }
    }

    fn chart() -> SweepChart {
        SweepChart {
            title: "shardcast-load compare: sweep of 10 subscribers, 2 cores".into(),
            p99_limit_ms: 50.0,
            lines: vec![
                Line {
                    label: "sharded, 1 worker".into(),
                    steps: vec![
                        step(100.0, 2.0, 0.0),
                        step(200.0, 5.0, 0.0),
                        step(400.0, 90.0, 3.5),
                    ],
                    knee: Some(200.0),
                    error: None,
                },
                Line {
                    label: "single, 1 worker".into(),
                    steps: vec![step(100.0, 3.0, 0.0), step(200.0, 800.0, 40.0)],
                    knee: Some(100.0),
                    error: None,
                },
                Line {
                    label: "shared, 2 workers".into(),
                    steps: Vec::new(),
                    knee: None,
                    error: Some("server did not start".into()),
                },
            ],
        }
    }

    /// `<g class="CLASS" data-config="...">` openings in `svg`.
    fn groups<'a>(svg: &'a str, class: &str) -> Vec<&'a str> {
        let opening = format!(r#"<g class="{class}" data-config=""#);
        svg.match_indices(&opening)
            .map(|(at, _)| {
                let rest = &svg[at + opening.len()..];
                &rest[..rest.find('"').unwrap_or(0)]
            })
            .collect()
    }

    #[test]
    fn every_panel_has_one_series_per_configuration_that_ran_and_its_knee() {
        let svg = chart().render();
        for panel in ["latency", "efficiency", "loss"] {
            let start = svg
                .find(&format!(r#"data-panel="{panel}""#))
                .expect("the panel is drawn");
            let end = svg[start..]
                .find(r#"class="panel""#)
                .map_or(svg.len(), |e| start + e);
            let body = &svg[start..end];
            assert_eq!(
                groups(body, "series"),
                ["sharded, 1 worker", "single, 1 worker"],
                "{panel}"
            );
            assert_eq!(
                groups(body, "knee"),
                ["sharded, 1 worker", "single, 1 worker"],
                "{panel}"
            );
            assert!(body.contains(RATE_LABEL), "{panel}");
        }
        for label in [LATENCY_LABEL, EFFICIENCY_LABEL, LOSS_LABEL] {
            assert!(svg.contains(label), "{label}");
        }
        assert_eq!(
            groups(&svg, "legend-entry"),
            ["sharded, 1 worker", "single, 1 worker", "shared, 2 workers"]
        );
        assert!(svg.contains("failed: server did not start"));
        assert!(svg.contains("knee 200 msg/s: p99 5 ms, 60k deliveries per server CPU-second"));
        // The latency panel draws p99 and p50 for each configuration.
        assert_eq!(svg.matches(r#"class="p50""#).count(), 2);
        assert!(svg.contains("p99 limit 50 ms"));
    }
}
