//! Histograms and counters: recorded per thread without sharing, merged at the end.

use std::collections::BTreeMap;

use hdrhistogram::Histogram;
use serde::Serialize;

/// Latency values are nanoseconds; an hour is far beyond any run, 3 digits keep p99.9 honest.
const HIGHEST_NS: u64 = 3_600 * 1_000_000_000;

/// A nanosecond histogram with 3 significant digits (values saturate at an hour).
pub fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, HIGHEST_NS, 3).expect("constant bounds are valid")
}

/// A latency distribution in milliseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Quantiles {
    pub count: u64,
    pub mean: f64,
    pub p50: f64,
    pub p90: f64,
    pub p95: f64,
    pub p99: f64,
    pub p999: f64,
    pub max: f64,
}

impl Quantiles {
    pub fn of(histogram: &Histogram<u64>) -> Quantiles {
        if histogram.is_empty() {
            return Quantiles::default();
        }
        let ms = |ns: u64| ns as f64 / 1e6;
        Quantiles {
            count: histogram.len(),
            mean: histogram.mean() / 1e6,
            p50: ms(histogram.value_at_quantile(0.50)),
            p90: ms(histogram.value_at_quantile(0.90)),
            p95: ms(histogram.value_at_quantile(0.95)),
            p99: ms(histogram.value_at_quantile(0.99)),
            p999: ms(histogram.value_at_quantile(0.999)),
            max: ms(histogram.max()),
        }
    }
}

/// What one thread's recipients saw. Plain counters: one thread owns them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReceiveStats {
    /// Data frames (text, binary, continuation) and their payload bytes.
    pub frames: u64,
    pub bytes: u64,
    /// First arrivals of a (recipient, publisher, seq): the deliveries that count.
    pub delivered: u64,
    /// Of those, the ones received inside the measured window.
    pub delivered_in_window: u64,
    pub duplicates: u64,
    pub reordered: u64,
    /// Arrivals ahead of the expected number (a gap opened; it may be filled later).
    pub gaps: u64,
    /// Tokens from a publisher outside the recipient's room.
    pub foreign: u64,
    /// Magic found, but the token did not parse.
    pub malformed: u64,
    pub pings: u64,
}

impl ReceiveStats {
    pub fn merge(&mut self, other: &ReceiveStats) {
        self.frames += other.frames;
        self.bytes += other.bytes;
        self.delivered += other.delivered;
        self.delivered_in_window += other.delivered_in_window;
        self.duplicates += other.duplicates;
        self.reordered += other.reordered;
        self.gaps += other.gaps;
        self.foreign += other.foreign;
        self.malformed += other.malformed;
        self.pings += other.pings;
    }
}

/// How connections ended before the run did, by cause.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Endings {
    /// Close frames from the server, by close code (1008: slow consumer at shardcast).
    pub server_close_codes: BTreeMap<u16, u64>,
    /// EOF or socket errors without a close frame.
    pub dropped: u64,
    /// Frames that were not valid server frames.
    pub protocol_errors: u64,
}

impl Endings {
    pub fn merge(&mut self, other: &Endings) {
        for (code, n) in &other.server_close_codes {
            *self.server_close_codes.entry(*code).or_default() += n;
        }
        self.dropped += other.dropped;
        self.protocol_errors += other.protocol_errors;
    }

    pub fn server_closed(&self) -> u64 {
        self.server_close_codes.values().sum()
    }
}

/// What the flooders did ([`crate::plan::Role::Flooder`]), apart from everyone else's figures.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FloodStats {
    /// Filler messages queued.
    pub sent: u64,
    /// Not queued because the server stopped reading the flooder.
    pub skipped: u64,
    /// How flooders ended before the run did: close frames by code, and drops.
    pub endings: Endings,
}

impl FloodStats {
    pub fn merge(&mut self, other: &FloodStats) {
        self.sent += other.sent;
        self.skipped += other.skipped;
        self.endings.merge(&other.endings);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_are_in_milliseconds() {
        let mut h = new_histogram();
        for ms in 1..=100u64 {
            h.record(ms * 1_000_000).unwrap();
        }
        let q = Quantiles::of(&h);
        assert_eq!(q.count, 100);
        assert!((q.p50 - 50.0).abs() < 0.1, "{q:?}");
        assert!((q.max - 100.0).abs() < 0.1, "{q:?}");
        assert_eq!(Quantiles::of(&new_histogram()), Quantiles::default());
    }
}
