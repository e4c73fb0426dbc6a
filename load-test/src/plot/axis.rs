//! Axes of the line chart: a data range mapped onto pixels (linear or logarithmic), its
//! ticks, and the one number format every tick label uses.

/// How values spread along an axis.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Scale {
    Linear {
        min: f64,
        max: f64,
    },
    /// Both ends positive.
    Log {
        min: f64,
        max: f64,
    },
}

/// A scale and where its labelled ticks go.
#[derive(Debug, Clone, PartialEq)]
pub struct Axis {
    pub scale: Scale,
    pub ticks: Vec<f64>,
}

/// At most this many labelled ticks on a linear axis.
const LINEAR_TICKS: f64 = 6.0;

impl Axis {
    /// From 0 to a round number at or above every value, ticks at round steps.
    pub fn linear_from_zero(values: impl IntoIterator<Item = f64>) -> Axis {
        // An axis with nothing above zero still gets a visible range.
        let highest = finite_max(values).filter(|h| *h > 0.0).unwrap_or(1.0);
        let step = nice_step(highest / LINEAR_TICKS);
        let max = (highest / step).ceil() * step;
        let count = (max / step).round() as usize;
        Axis {
            scale: Scale::Linear { min: 0.0, max },
            ticks: (0..=count).map(|i| i as f64 * step).collect(),
        }
    }

    /// Whole decades around the positive values, ticked at 1 (and 2 and 5 when there are
    /// few decades); linear from zero when there is nothing positive to fit.
    pub fn log_decades(values: impl IntoIterator<Item = f64>) -> Axis {
        let positive: Vec<f64> = values
            .into_iter()
            .filter(|v| v.is_finite() && *v > 0.0)
            .collect();
        let (Some(low), Some(high)) = (
            positive.iter().cloned().reduce(f64::min),
            positive.iter().cloned().reduce(f64::max),
        ) else {
            return Axis::linear_from_zero([]);
        };
        let first = low.log10().floor() as i32;
        let last = (high.log10().ceil() as i32).max(first + 1);
        let minor: &[f64] = if last - first <= 3 {
            &[1.0, 2.0, 5.0]
        } else {
            &[1.0]
        };
        let ticks = (first..=last)
            .flat_map(|decade| minor.iter().map(move |m| m * 10f64.powi(decade)))
            .filter(|t| *t <= 10f64.powi(last) * 1.0001)
            .collect();
        Axis {
            scale: Scale::Log {
                min: 10f64.powi(first),
                max: 10f64.powi(last),
            },
            ticks,
        }
    }

    /// Ticks exactly at `points` (a sweep's offered rates), logarithmic when they span a
    /// factor of 8 or more (a sweep that doubles), with a margin so no point sits on an edge.
    pub fn at_points(points: &[f64]) -> Axis {
        let mut ticks: Vec<f64> = points
            .iter()
            .cloned()
            .filter(|p| p.is_finite() && *p > 0.0)
            .collect();
        ticks.sort_by(f64::total_cmp);
        ticks.dedup();
        let (Some(&low), Some(&high)) = (ticks.first(), ticks.last()) else {
            return Axis::linear_from_zero([]);
        };
        // Too many points would crowd their labels: fall back to round ticks.
        if ticks.len() > 10 {
            return Axis::linear_from_zero(ticks);
        }
        let scale = if high / low >= 8.0 {
            Scale::Log {
                min: low / 1.25,
                max: high * 1.25,
            }
        } else {
            let margin = ((high - low) * 0.08).max(high * 0.05);
            Scale::Linear {
                min: (low - margin).max(0.0),
                max: high + margin,
            }
        };
        Axis { scale, ticks }
    }

    /// Where `value` falls, 0 at the low end and 1 at the high end (outside when out of
    /// range); `None` for a value a log scale cannot place.
    pub fn fraction(&self, value: f64) -> Option<f64> {
        match self.scale {
            Scale::Linear { min, max } => Some((value - min) / (max - min)),
            Scale::Log { min, max } if value > 0.0 => {
                Some((value.ln() - min.ln()) / (max.ln() - min.ln()))
            }
            Scale::Log { .. } => None,
        }
    }
}

fn finite_max(values: impl IntoIterator<Item = f64>) -> Option<f64> {
    values
        .into_iter()
        .filter(|v| v.is_finite())
        .reduce(f64::max)
}

/// The round number (1, 2 or 5 times a power of ten) at or above `raw`.
fn nice_step(raw: f64) -> f64 {
    let power = 10f64.powf(raw.log10().floor());
    let mantissa = raw / power;
    let nice = if mantissa <= 1.0 {
        1.0
    } else if mantissa <= 2.0 {
        2.0
    } else if mantissa <= 5.0 {
        5.0
    } else {
        10.0
    };
    nice * power
}

/// The one format of every number on the chart: 3 significant digits at most, thousands as
/// `k` and millions as `M`, no trailing zeros ("0.25", "50", "1.6k", "1.04M").
pub fn short_number(v: f64) -> String {
    let a = v.abs();
    let (scaled, suffix) = if a >= 1e6 {
        (v / 1e6, "M")
    } else if a >= 1e3 {
        (v / 1e3, "k")
    } else {
        (v, "")
    };
    let s = scaled.abs();
    let decimals = if s == 0.0 || s >= 100.0 {
        0
    } else if s >= 10.0 {
        1
    } else if s >= 1.0 {
        2
    } else {
        // Below 1: enough decimals for 2 significant digits.
        (1 - s.log10().floor() as i32).clamp(2, 6) as usize
    };
    let mut text = format!("{scaled:.decimals$}");
    if text.contains('.') {
        text = text.trim_end_matches('0').trim_end_matches('.').to_string();
    }
    format!("{text}{suffix}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_read_the_same_everywhere() {
        let cases = [
            (0.0, "0"),
            (0.25, "0.25"),
            (0.0123, "0.012"),
            (1.5, "1.5"),
            (50.0, "50"),
            (123.4, "123"),
            (1_600.0, "1.6k"),
            (12_800.0, "12.8k"),
            (1_040_000.0, "1.04M"),
        ];
        for (value, text) in cases {
            assert_eq!(short_number(value), text, "{value}");
        }
    }

    #[test]
    fn a_linear_axis_ends_on_a_round_tick_above_every_value() {
        let axis = Axis::linear_from_zero([0.0, 730_000.0, 1_040_000.0]);
        assert_eq!(
            axis.scale,
            Scale::Linear {
                min: 0.0,
                max: 1.2e6
            }
        );
        assert_eq!(axis.ticks.first(), Some(&0.0));
        assert_eq!(axis.ticks.last(), Some(&1.2e6));
        let empty = Axis::linear_from_zero([]);
        assert_eq!(empty.scale, Scale::Linear { min: 0.0, max: 1.0 });
        assert_eq!(empty.ticks.len(), 6);
    }

    #[test]
    fn a_log_axis_spans_whole_decades() {
        let axis = Axis::log_decades([0.3, 12.0, 4_000.0, 0.0]);
        assert_eq!(
            axis.scale,
            Scale::Log {
                min: 0.1,
                max: 10_000.0
            }
        );
        assert_eq!(axis.ticks.len(), 6, "one tick per decade: {:?}", axis.ticks);
        let few = Axis::log_decades([2.0, 30.0]);
        assert_eq!(few.ticks.len(), 7, "1, 2, 5 per decade: {:?}", few.ticks);
        assert!(axis.fraction(0.1).is_some_and(|f| f.abs() < 1e-9));
        assert_eq!(axis.fraction(0.0), None);
    }

    #[test]
    fn a_doubling_sweep_is_drawn_on_a_log_axis_ticked_at_its_rates() {
        let axis = Axis::at_points(&[800.0, 200.0, 400.0, 1_600.0, 400.0]);
        assert!(matches!(axis.scale, Scale::Log { .. }));
        assert_eq!(axis.ticks, [200.0, 400.0, 800.0, 1_600.0]);
        let stepped = Axis::at_points(&[800.0, 1_600.0, 2_400.0]);
        assert!(matches!(stepped.scale, Scale::Linear { .. }));
        let inside = |v| stepped.fraction(v).is_some_and(|f| f > 0.0 && f < 1.0);
        assert!(inside(800.0) && inside(2_400.0));
    }
}
