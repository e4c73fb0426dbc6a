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

use crate::plot::axis::{Axis, short_number};
use crate::plot::svg::{Svg, points, px};
use crate::scenario::compare::CompareReport;

const WIDTH: u32 = 1200;
const HEIGHT: u32 = 900;
/// Top of the panel grid (below the title and subtitle).
const GRID_TOP: f64 = 72.0;
/// Inside a panel: room for the panel title, tick labels and axis labels.
const MARGIN_LEFT: f64 = 82.0;
const MARGIN_RIGHT: f64 = 24.0;
const MARGIN_TOP: f64 = 34.0;
const MARGIN_BOTTOM: f64 = 58.0;
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
        self.draw_panel(&mut svg, &self.latency_panel(), &x, cell(0.0, 0.0));
        self.draw_panel(&mut svg, &self.efficiency_panel(), &x, cell(1.0, 0.0));
        self.draw_panel(&mut svg, &self.loss_panel(), &x, cell(0.0, 1.0));
        self.draw_legend(&mut svg, cell(1.0, 1.0));
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

    fn draw_panel(&self, svg: &mut Svg, panel: &Panel, x: &Axis, cell: Rect) {
        let plot = Rect {
            left: cell.left + MARGIN_LEFT,
            top: cell.top + MARGIN_TOP,
            width: cell.width - MARGIN_LEFT - MARGIN_RIGHT,
            height: cell.height - MARGIN_TOP - MARGIN_BOTTOM,
        };
        let to_x = |v: f64| x.fraction(v).map(|f| plot.left + f * plot.width);
        let to_y = |v: f64| {
            panel
                .y
                .fraction(v)
                .map(|f| plot.top + (1.0 - f) * plot.height)
        };
        svg.open_group(&[("class", "panel"), ("data-panel", panel.key)]);
        svg.text(
            &[
                ("class", "panel-title"),
                ("x", &px(plot.left + plot.width / 2.0)),
                ("y", &px(cell.top + 20.0)),
                ("text-anchor", "middle"),
                ("font-size", "15"),
                ("font-weight", "bold"),
            ],
            panel.title,
        );
        draw_frame_and_ticks(svg, &plot, x, &panel.y, &to_x, &to_y);
        svg.text(
            &[
                ("class", "axis-label x"),
                ("x", &px(plot.left + plot.width / 2.0)),
                ("y", &px(plot.top + plot.height + 44.0)),
                ("text-anchor", "middle"),
                ("font-size", "13"),
            ],
            RATE_LABEL,
        );
        let y_mid = plot.top + plot.height / 2.0;
        let y_label_x = cell.left + 18.0;
        svg.text(
            &[
                ("class", "axis-label y"),
                ("x", &px(y_label_x)),
                ("y", &px(y_mid)),
                ("text-anchor", "middle"),
                ("font-size", "13"),
                (
                    "transform",
                    &format!("rotate(-90 {} {})", px(y_label_x), px(y_mid)),
                ),
            ],
            panel.y_label,
        );
        if let Some((limit, y)) = panel.limit.and_then(|l| Some((l, to_y(l)?))) {
            svg.element(
                "line",
                &[
                    ("class", "limit"),
                    ("x1", &px(plot.left)),
                    ("x2", &px(plot.left + plot.width)),
                    ("y1", &px(y)),
                    ("y2", &px(y)),
                    ("stroke", "#888"),
                    ("stroke-dasharray", "2 3"),
                ],
            );
            svg.text(
                &[
                    ("x", &px(plot.left + 4.0)),
                    ("y", &px(y - 4.0)),
                    ("font-size", "11"),
                    ("fill", "#666"),
                ],
                &format!("p99 limit {} ms", short_number(limit)),
            );
        }
        for (index, line) in self.lines.iter().enumerate() {
            if line.steps.is_empty() {
                continue;
            }
            let colour = COLOURS[index % COLOURS.len()];
            svg.open_group(&[("class", "series"), ("data-config", &line.label)]);
            for spec in &panel.series {
                let placed: Vec<(f64, f64, &Step)> = line
                    .steps
                    .iter()
                    .filter_map(|s| Some((to_x(s.rate)?, to_y((spec.value)(s)?)?, s)))
                    .collect();
                // A figure no step has (no CPU time measured) leaves the group without it.
                if placed.is_empty() {
                    continue;
                }
                let xy: Vec<(f64, f64)> = placed.iter().map(|(x, y, _)| (*x, *y)).collect();
                let mut attrs = vec![
                    ("class", spec.class),
                    ("fill", "none"),
                    ("stroke", colour),
                    ("stroke-width", "2"),
                ];
                if spec.dashed {
                    attrs.push(("stroke-dasharray", "6 4"));
                }
                let xy_text = points(&xy);
                attrs.push(("points", &xy_text));
                svg.element("polyline", &attrs);
                for (px_x, px_y, step) in &placed {
                    let value = (spec.value)(step).map_or(String::new(), short_number);
                    svg.element_with_title(
                        "circle",
                        &[
                            ("class", "point"),
                            ("cx", &px(*px_x)),
                            ("cy", &px(*px_y)),
                            ("r", "3"),
                            ("fill", colour),
                        ],
                        &format!(
                            "{}: {} msg/s offered, {value} {} ({})",
                            line.label,
                            short_number(step.rate),
                            spec.unit,
                            step.verdict
                        ),
                    );
                }
            }
            svg.close_group();
        }
        self.draw_knees(svg, panel, &to_x, &to_y, &plot);
        if panel.key == "loss"
            && self
                .lines
                .iter()
                .all(|l| l.steps.iter().all(|s| s.loss_percent == 0.0))
        {
            svg.text(
                &[
                    ("class", "note"),
                    ("x", &px(plot.left + plot.width / 2.0)),
                    ("y", &px(plot.top + plot.height / 2.0)),
                    ("text-anchor", "middle"),
                    ("font-size", "13"),
                    ("fill", "#666"),
                ],
                "nothing lost at any step",
            );
        }
        svg.close_group();
    }

    /// A diamond at each configuration's knee; in the latency panel also its rate in words.
    fn draw_knees(
        &self,
        svg: &mut Svg,
        panel: &Panel,
        to_x: &dyn Fn(f64) -> Option<f64>,
        to_y: &dyn Fn(f64) -> Option<f64>,
        plot: &Rect,
    ) {
        let right_edge = plot.left + plot.width;
        let top_edge = plot.top;
        let mut label_row = 0.0;
        for (index, line) in self.lines.iter().enumerate() {
            let Some(knee) = line.knee else { continue };
            let Some(step) = line.steps.iter().find(|s| s.rate == knee) else {
                continue;
            };
            let (Some(x), Some(y)) = (to_x(knee), (panel.knee_value)(step).and_then(to_y)) else {
                continue;
            };
            let colour = COLOURS[index % COLOURS.len()];
            svg.open_group(&[
                ("class", "knee"),
                ("data-config", &line.label),
                ("data-rate", &format!("{knee}")),
            ]);
            let r = 7.0;
            svg.element_with_title(
                "polygon",
                &[
                    (
                        "points",
                        &points(&[(x, y - r), (x + r, y), (x, y + r), (x - r, y)]),
                    ),
                    ("fill", colour),
                    ("stroke", "white"),
                    ("stroke-width", "1.5"),
                ],
                &format!("{}: knee at {} msg/s", line.label, short_number(knee)),
            );
            if panel.knee_labels {
                // Labels stack in a band at the top of the panel, above their diamonds, so
                // they neither overprint each other nor sit on the lines at the knee.
                let label_y = top_edge + 14.0 + 14.0 * label_row;
                label_row += 1.0;
                // A faint leader ties the label to its diamond.
                if label_y + 4.0 < y - r {
                    svg.element(
                        "line",
                        &[
                            ("x1", &px(x)),
                            ("x2", &px(x)),
                            ("y1", &px(label_y - 4.0)),
                            ("y2", &px(y - r)),
                            ("stroke", colour),
                            ("stroke-opacity", "0.5"),
                            ("stroke-dasharray", "1 3"),
                        ],
                    );
                }
                let (label_x, anchor) = if x + 70.0 > right_edge {
                    (x - 4.0, "end")
                } else {
                    (x + 4.0, "start")
                };
                svg.text(
                    &[
                        ("x", &px(label_x)),
                        ("text-anchor", anchor),
                        ("y", &px(label_y)),
                        ("font-size", "12"),
                        ("fill", colour),
                        ("font-weight", "bold"),
                    ],
                    &format!("knee {}", short_number(knee)),
                );
            }
            svg.close_group();
        }
    }

    /// The fourth panel: which colour is which configuration, and its knee in words.
    fn draw_legend(&self, svg: &mut Svg, cell: Rect) {
        let left = cell.left + MARGIN_LEFT - 40.0;
        let mut y = cell.top + 20.0;
        svg.open_group(&[("class", "legend")]);
        svg.text(
            &[
                ("x", &px(left)),
                ("y", &px(y)),
                ("font-size", "15"),
                ("font-weight", "bold"),
            ],
            "configurations and their knees",
        );
        y += 26.0;
        // The key of line styles.
        let mut key_x = left;
        for (dash, marker, text) in [
            (None, false, "p99"),
            (Some("6 4"), false, "p50"),
            (None, true, "knee"),
        ] {
            if marker {
                svg.element(
                    "polygon",
                    &[
                        (
                            "points",
                            &points(&[
                                (key_x + 12.0, y - 11.0),
                                (key_x + 18.0, y - 5.0),
                                (key_x + 12.0, y + 1.0),
                                (key_x + 6.0, y - 5.0),
                            ]),
                        ),
                        ("fill", "#444"),
                    ],
                );
            } else {
                let mut attrs = vec![
                    ("x1", px(key_x)),
                    ("x2", px(key_x + 26.0)),
                    ("y1", px(y - 5.0)),
                    ("y2", px(y - 5.0)),
                    ("stroke", "#444".to_string()),
                    ("stroke-width", "2".to_string()),
                ];
                if let Some(dash) = dash {
                    attrs.push(("stroke-dasharray", dash.to_string()));
                }
                let attrs: Vec<(&str, &str)> =
                    attrs.iter().map(|(n, v)| (*n, v.as_str())).collect();
                svg.element("line", &attrs);
            }
            svg.text(
                &[("x", &px(key_x + 32.0)), ("y", &px(y)), ("font-size", "13")],
                text,
            );
            key_x += 90.0;
        }
        y += 14.0;
        for (index, line) in self.lines.iter().enumerate() {
            y += 40.0;
            let colour = COLOURS[index % COLOURS.len()];
            svg.open_group(&[("class", "legend-entry"), ("data-config", &line.label)]);
            svg.element(
                "line",
                &[
                    ("x1", &px(left)),
                    ("x2", &px(left + 26.0)),
                    ("y1", &px(y - 5.0)),
                    ("y2", &px(y - 5.0)),
                    ("stroke", colour),
                    ("stroke-width", "4"),
                ],
            );
            svg.text(
                &[
                    ("class", "legend-label"),
                    ("x", &px(left + 34.0)),
                    ("y", &px(y)),
                    ("font-size", "14"),
                    ("font-weight", "bold"),
                ],
                &line.label,
            );
            svg.text(
                &[
                    ("class", "legend-knee"),
                    ("x", &px(left + 34.0)),
                    ("y", &px(y + 16.0)),
                    ("font-size", "12"),
                    ("fill", "#333"),
                ],
                &self.knee_in_words(line),
            );
            svg.close_group();
        }
        svg.close_group();
    }

    fn knee_in_words(&self, line: &Line) -> String {
        if let Some(error) = &line.error {
            return format!("failed: {}", truncate(error, 90));
        }
        let Some(knee) = line.knee else {
            let first = line
                .steps
                .first()
                .map_or("no step ran", |s| s.verdict.as_str());
            return format!(
                "no rate met the limit (first step: {})",
                truncate(first, 60)
            );
        };
        let Some(step) = line.steps.iter().find(|s| s.rate == knee) else {
            return format!("knee {} msg/s", short_number(knee));
        };
        let mut words = format!(
            "knee {} msg/s: p99 {} ms",
            short_number(knee),
            step.p99.map_or("-".into(), short_number)
        );
        if let Some(per_cpu) = step.per_cpu_sec {
            words.push_str(&format!(
                ", {} deliveries per server CPU-second",
                short_number(per_cpu)
            ));
        }
        if line.steps.last().is_some_and(|s| s.rate == knee) {
            words.push_str(" (passed every step)");
        }
        words
    }
}

/// A panel of the grid, in pixels.
#[derive(Debug, Clone, Copy)]
struct Rect {
    left: f64,
    top: f64,
    width: f64,
    height: f64,
}

/// One of the three plotted panels.
struct Panel {
    /// `data-panel` of its group.
    key: &'static str,
    title: &'static str,
    y_label: &'static str,
    y: Axis,
    series: Vec<SeriesSpec>,
    /// Where on the y axis a knee's diamond sits.
    knee_value: fn(&Step) -> Option<f64>,
    knee_labels: bool,
    /// A horizontal reference line (the p99 limit).
    limit: Option<f64>,
}

/// One figure of every step, drawn as one line per configuration.
struct SeriesSpec {
    class: &'static str,
    dashed: bool,
    value: fn(&Step) -> Option<f64>,
    /// How the tooltip names the value.
    unit: &'static str,
}

/// The frame, grid lines and tick labels of a panel.
fn draw_frame_and_ticks(
    svg: &mut Svg,
    plot: &Rect,
    x: &Axis,
    y: &Axis,
    to_x: &dyn Fn(f64) -> Option<f64>,
    to_y: &dyn Fn(f64) -> Option<f64>,
) {
    let bottom = plot.top + plot.height;
    let right = plot.left + plot.width;
    svg.element(
        "rect",
        &[
            ("class", "frame"),
            ("x", &px(plot.left)),
            ("y", &px(plot.top)),
            ("width", &px(plot.width)),
            ("height", &px(plot.height)),
            ("fill", "none"),
            ("stroke", "#999"),
        ],
    );
    for tick in &x.ticks {
        let Some(tx) = to_x(*tick) else { continue };
        grid_line(svg, (tx, plot.top), (tx, bottom));
        svg.text(
            &[
                ("class", "tick x"),
                ("x", &px(tx)),
                ("y", &px(bottom + 18.0)),
                ("text-anchor", "middle"),
                ("font-size", "12"),
            ],
            &short_number(*tick),
        );
    }
    for tick in &y.ticks {
        let Some(ty) = to_y(*tick) else { continue };
        grid_line(svg, (plot.left, ty), (right, ty));
        svg.text(
            &[
                ("class", "tick y"),
                ("x", &px(plot.left - 6.0)),
                ("y", &px(ty + 4.0)),
                ("text-anchor", "end"),
                ("font-size", "12"),
            ],
            &short_number(*tick),
        );
    }
}

fn grid_line(svg: &mut Svg, from: (f64, f64), to: (f64, f64)) {
    svg.element(
        "line",
        &[
            ("x1", &px(from.0)),
            ("y1", &px(from.1)),
            ("x2", &px(to.0)),
            ("y2", &px(to.1)),
            ("stroke", "#e4e4e4"),
        ],
    );
}

fn truncate(text: &str, chars: usize) -> String {
    if text.chars().count() <= chars {
        return text.to_string();
    }
    let mut cut: String = text.chars().take(chars).collect();
    cut.push('\u{2026}');
    cut
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
