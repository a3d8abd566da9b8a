//! The one seeded random generator of the crate and its simulation.
//!
//! Whatever must replay exactly — the client's WebSocket keys, frame masks,
//! backoff jitter and message-id prefixes, and every draw of a simulated
//! scenario — comes from here. It reads no clock, does no I/O and never
//! touches the thread's RNG, so that the sans-IO core can draw from it too.

/// SplitMix64: small, fast, and the same sequence on every platform.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator starting from `seed`.
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..=max`.
    pub fn below_or_eq(&mut self, max: u64) -> u64 {
        if max == u64::MAX {
            return self.next_u64();
        }
        self.next_u64() % (max + 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Recorded seeds replay only while the sequence stays SplitMix64's.
    #[test]
    fn is_splitmix64() {
        let mut r = Rng::new(0);
        assert_eq!(r.next_u64(), 0xE220_A839_7B1D_CDAF);
        assert_eq!(r.next_u64(), 0x6E78_9E6A_A1B9_65F4);
        assert_eq!(r.next_u64(), 0x06C4_5D18_8009_454F);
    }

    #[test]
    fn below_or_eq_stays_in_range() {
        let mut r = Rng::new(42);
        for max in [0, 1, 7, 99, u64::MAX] {
            for _ in 0..100 {
                assert!(r.below_or_eq(max) <= max);
            }
        }
        assert_eq!(Rng::new(3).below_or_eq(0), 0);
    }
}
