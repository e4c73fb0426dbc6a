//! The comparison of a one-figure scenario (fanout, chat, idle, knee, resume) as an SVG bar
//! chart: one panel per figure, one bar per model x workers.

use std::path::Path;

use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use crate::error::LoadError;
use crate::plot::axis::short_number;
use crate::scenario::compare::CompareReport;

const WIDTH: u32 = 1100;
const HEIGHT: u32 = 480;
const BAR_COLORS: [RGBColor; 6] = [
    RGBColor(0x1f, 0x77, 0xb4),
    RGBColor(0xff, 0x7f, 0x0e),
    RGBColor(0x2c, 0xa0, 0x2c),
    RGBColor(0xd6, 0x27, 0x28),
    RGBColor(0x94, 0x67, 0xbd),
    RGBColor(0x8c, 0x56, 0x4b),
];

/// Draws the runs that have a report; runs that failed are left out of the chart.
pub fn draw(report: &CompareReport, path: &Path) -> Result<(), LoadError> {
    let bars: Vec<(String, [(&'static str, f64); 2])> = report
        .runs
        .iter()
        .filter_map(|run| {
            let report = run.report.as_ref()?;
            Some((run.label(), report.plot_metrics()))
        })
        .collect();
    let failed = |reason: String| LoadError::Plot {
        path: path.to_path_buf(),
        reason,
    };
    if bars.is_empty() {
        return Err(failed("no run produced a report".into()));
    }
    let root = SVGBackend::new(path, (WIDTH, HEIGHT)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| failed(e.to_string()))?;
    let root = root
        .titled(&super::title(report), ("sans-serif", 22))
        .map_err(|e| failed(e.to_string()))?;
    let panels = root.split_evenly((1, 2));
    for (panel_index, panel) in panels.iter().enumerate() {
        let title = bars[0].1[panel_index].0;
        let values: Vec<f64> = bars.iter().map(|(_, m)| m[panel_index].1).collect();
        draw_panel(panel, title, &bars, &values).map_err(failed)?;
    }
    root.present().map_err(|e| failed(e.to_string()))?;
    Ok(())
}

fn draw_panel<DB: DrawingBackend>(
    area: &DrawingArea<DB, plotters::coord::Shift>,
    title: &str,
    bars: &[(String, [(&'static str, f64); 2])],
    values: &[f64],
) -> Result<(), String> {
    let highest = values.iter().cloned().fold(0.0f64, f64::max);
    // An all-zero panel still needs a visible axis.
    let top = if highest > 0.0 { highest * 1.15 } else { 1.0 };
    let mut chart = ChartBuilder::on(area)
        .caption(title, ("sans-serif", 16))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d((0..bars.len() - 1).into_segmented(), 0.0..top)
        .map_err(|e| e.to_string())?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(bars.len())
        .x_label_formatter(&|x| match x {
            SegmentValue::CenterOf(i) | SegmentValue::Exact(i) => bars
                .get(*i)
                .map_or(String::new(), |(label, _)| label.clone()),
            SegmentValue::Last => String::new(),
        })
        .y_label_formatter(&|y| short_number(*y))
        .draw()
        .map_err(|e| e.to_string())?;
    chart
        .draw_series(
            Histogram::vertical(&chart)
                .margin(12)
                .style_func(|x, _| match x {
                    SegmentValue::CenterOf(i) | SegmentValue::Exact(i) => {
                        BAR_COLORS[*i % BAR_COLORS.len()].filled()
                    }
                    SegmentValue::Last => BLACK.filled(),
                })
                .data(values.iter().enumerate().map(|(i, v)| (i, *v))),
        )
        .map_err(|e| e.to_string())?;
    let label_style =
        TextStyle::from(("sans-serif", 13).into_font()).pos(Pos::new(HPos::Center, VPos::Bottom));
    chart
        .draw_series(values.iter().enumerate().map(|(i, v)| {
            Text::new(
                short_number(*v),
                (SegmentValue::CenterOf(i), *v + top * 0.01),
                label_style.clone(),
            )
        }))
        .map_err(|e| e.to_string())?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scenario::ScenarioReport;
    use crate::scenario::compare::CompareRun;
    use crate::scenario::idle::IdleReport;

    fn idle(handshakes_per_sec: f64) -> ScenarioReport {
        ScenarioReport::Idle(IdleReport {
            label: "idle".into(),
            connections: 10,
            opened: 10,
            connect_failures: 0,
            first_failure: None,
            connect_secs: 1.0,
            handshakes_per_sec,
            connect_ms: Default::default(),
            hold_secs: 1.0,
            closed_during_hold: 0,
            server: None,
            kernel: None,
        })
    }

    #[test]
    fn draws_one_bar_per_run_that_has_a_report() {
        let runs = [
            ("sharded", 1, 12_000.0),
            ("shared", 2, 9_500.5),
            ("single", 1, 0.0),
        ]
        .into_iter()
        .map(|(model, workers, rate)| CompareRun {
            model: model.into(),
            workers,
            server_args: Vec::new(),
            report: (rate > 0.0).then(|| idle(rate)),
            error: (rate == 0.0).then(|| "refused".to_string()),
        })
        .collect();
        let report = CompareReport {
            scenario: "idle".into(),
            setup: String::new(),
            cores: 2,
            runs,
        };
        let path = std::env::temp_dir().join(format!("plot-test-{}.svg", std::process::id()));
        draw(&report, &path).unwrap();
        let svg = std::fs::read_to_string(&path).unwrap();
        if std::env::var_os("KEEP_PLOT").is_none() {
            let _ = std::fs::remove_file(&path);
        }
        assert!(svg.contains("sharded, 1 worker") && svg.contains("shared, 2 workers"));
        assert!(!svg.contains("single, 1 worker"), "failed runs have no bar");
        assert!(svg.contains("12k"));
        assert!(svg.contains("idle, 2 cores"));
    }
}
