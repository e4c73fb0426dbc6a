//! The fourth panel of the sweep chart: the key of line styles, then per configuration its
//! colour, its name and its knee in words (or why it has none).

use super::panel::Rect;
use super::{COLOURS, Line};
use crate::plot::axis::short_number;
use crate::plot::svg::{Svg, points, px};

/// From the cell's left edge to the legend's text.
const LEFT_INSET: f64 = 42.0;

/// The legend in `cell`: which colour is which configuration, and its knee in words (text
/// is cut to fit the cell).
pub(super) fn draw(svg: &mut Svg, lines: &[Line], cell: Rect) {
    let left = cell.left + LEFT_INSET;
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
            let attrs: Vec<(&str, &str)> = attrs.iter().map(|(n, v)| (*n, v.as_str())).collect();
            svg.element("line", &attrs);
        }
        svg.text(
            &[("x", &px(key_x + 32.0)), ("y", &px(y)), ("font-size", "13")],
            text,
        );
        key_x += 90.0;
    }
    y += 14.0;
    for (index, line) in lines.iter().enumerate() {
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
            &knee_in_words(line),
        );
        svg.close_group();
    }
    svg.close_group();
}

fn knee_in_words(line: &Line) -> String {
    if let Some(error) = &line.error {
        return format!("failed: {}", truncate(error, 72));
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

fn truncate(text: &str, chars: usize) -> String {
    if text.chars().count() <= chars {
        return text.to_string();
    }
    let mut cut: String = text.chars().take(chars).collect();
    cut.push('\u{2026}');
    cut
}
