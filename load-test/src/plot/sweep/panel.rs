//! One plotted panel of the sweep chart: its frame, ticks and axis labels; for each
//! configuration a group with one line per figure (points carry their figures as tooltips);
//! and the configurations' knees as diamonds.

use super::{COLOURS, Line, RATE_LABEL, Step};
use crate::plot::axis::{Axis, short_number};
use crate::plot::svg::{Svg, points, px};

/// Inside a panel: room for the panel title, tick labels and axis labels.
const MARGIN_LEFT: f64 = 82.0;
const MARGIN_RIGHT: f64 = 24.0;
const MARGIN_TOP: f64 = 34.0;
const MARGIN_BOTTOM: f64 = 58.0;

/// A panel of the grid, in pixels.
#[derive(Debug, Clone, Copy)]
pub(super) struct Rect {
    pub left: f64,
    pub top: f64,
    pub width: f64,
    pub height: f64,
}

/// One of the three plotted panels.
pub(super) struct Panel {
    /// `data-panel` of its group.
    pub key: &'static str,
    pub title: &'static str,
    pub y_label: &'static str,
    pub y: Axis,
    pub series: Vec<SeriesSpec>,
    /// Where on the y axis a knee's diamond sits.
    pub knee_value: fn(&Step) -> Option<f64>,
    pub knee_labels: bool,
    /// A horizontal reference line (the p99 limit).
    pub limit: Option<f64>,
}

/// One figure of every step, drawn as one line per configuration.
pub(super) struct SeriesSpec {
    pub class: &'static str,
    pub dashed: bool,
    pub value: fn(&Step) -> Option<f64>,
    /// How the tooltip names the value.
    pub unit: &'static str,
}

/// Draws `panel` in `cell`: its frame, ticks and labels, one group per configuration with
/// a line per figure, and the knees.
pub(super) fn draw(svg: &mut Svg, lines: &[Line], panel: &Panel, x: &Axis, cell: Rect) {
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
    for (index, line) in lines.iter().enumerate() {
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
    draw_knees(svg, lines, panel, &to_x, &to_y, &plot);
    if panel.key == "loss"
        && lines
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
    svg: &mut Svg,
    lines: &[Line],
    panel: &Panel,
    to_x: &dyn Fn(f64) -> Option<f64>,
    to_y: &dyn Fn(f64) -> Option<f64>,
    plot: &Rect,
) {
    let right_edge = plot.left + plot.width;
    let top_edge = plot.top;
    let mut label_row = 0.0;
    for (index, line) in lines.iter().enumerate() {
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
