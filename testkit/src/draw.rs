//! Seeded draws for what must replay from a seed alone (chaos schedules, hostile inputs): a
//! small, fixed generator (SplitMix64) kept here, so that a seed's draws never change with a
//! dependency's version.

#[derive(Debug, Clone)]
pub struct Draw(u64);

impl Draw {
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut mixed = self.0;
        mixed = (mixed ^ (mixed >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        mixed = (mixed ^ (mixed >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        mixed ^ (mixed >> 31)
    }

    /// A number in `0..bound` (0 when `bound` is 0).
    pub fn below(&mut self, bound: u64) -> u64 {
        self.next_u64() % bound.max(1)
    }

    /// A number in `low..=high`.
    pub fn between(&mut self, low: u64, high: u64) -> u64 {
        low + self.below(high - low + 1)
    }

    /// An index below `count` (0 when `count` is 0).
    pub fn index(&mut self, count: usize) -> usize {
        let count = u64::try_from(count).unwrap_or(u64::MAX);
        usize::try_from(self.below(count)).unwrap_or_default()
    }

    /// True with probability `percent` / 100.
    pub fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_seed_draws_the_same_numbers_forever() {
        // SplitMix64's first outputs for seed 0, as published with the algorithm.
        let mut draw = Draw::new(0);
        assert_eq!(draw.next_u64(), 0xE220_A839_7B1D_CDAF);
        assert_eq!(draw.next_u64(), 0x6E78_9E6A_A1B9_65F4);
        let mut bounded = Draw::new(7);
        assert!((0..1_000).all(|_| (3..=9).contains(&bounded.between(3, 9))));
        assert_eq!(Draw::new(7).index(0), 0);
    }
}
