//! When subscribers drop: random moments, a given mean apart.
//!
//! Drops are a Poisson process per subscriber (exponential gaps), so they fall at every phase
//! of a connection's life — while joining, while catching up, while live — rather than in
//! lockstep. The generator is splitmix64, seeded from `--seed`, so a run can be repeated.

/// Draws the gaps between one run's drops.
#[derive(Debug, Clone)]
pub struct DropClock {
    state: u64,
    mean_ns: f64,
}

impl DropClock {
    pub fn new(seed: u64, mean_ns: u64) -> DropClock {
        DropClock {
            state: seed,
            mean_ns: mean_ns as f64,
        }
    }

    /// The next gap, in nanoseconds: exponential with the configured mean, capped at 20
    /// means (a practically-never that still fits in the run's arithmetic).
    pub fn next_gap_ns(&mut self) -> u64 {
        // A uniform in (0, 1]: 53 random bits, never 0, so the logarithm is finite.
        let uniform = ((self.next_u64() >> 11) + 1) as f64 / (1u64 << 53) as f64;
        let gap = -uniform.ln() * self.mean_ns;
        gap.min(20.0 * self.mean_ns) as u64
    }

    fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gaps_average_the_mean_and_repeat_with_the_seed() {
        let mut clock = DropClock::new(7, 1_000_000);
        let gaps: Vec<u64> = (0..20_000).map(|_| clock.next_gap_ns()).collect();
        let mean = gaps.iter().sum::<u64>() as f64 / gaps.len() as f64;
        assert!((mean - 1e6).abs() < 0.05e6, "mean {mean}");
        assert!(gaps.iter().all(|&g| g <= 20_000_000));
        let mut again = DropClock::new(7, 1_000_000);
        assert_eq!(again.next_gap_ns(), gaps[0]);
    }
}
