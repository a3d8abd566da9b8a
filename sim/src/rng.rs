//! The scenario's random numbers: [`chat_flow::rng::Rng`] (SplitMix64, the
//! generator the library client seeds itself with), never the thread's RNG.

/// A seeded generator with the helpers scenario generation needs.
#[derive(Debug, Clone)]
pub struct SimRng(chat_flow::rng::Rng);

impl SimRng {
    /// A generator for `seed`.
    pub fn new(seed: u64) -> SimRng {
        SimRng(chat_flow::rng::Rng::new(seed))
    }

    /// A generator for a sub-stream of `seed` (so that adding draws to one
    /// part of the scenario does not shift every other part).
    pub fn stream(seed: u64, stream: u64) -> SimRng {
        SimRng::new(mix(seed, stream))
    }

    /// 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0.next_u64()
    }

    /// Uniform in `lo..=hi`.
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        debug_assert!(lo <= hi);
        lo + self.0.below_or_eq(hi - lo)
    }

    /// Uniform index in `0..len` (`len > 0`).
    pub fn index(&mut self, len: usize) -> usize {
        debug_assert!(len > 0);
        self.0.below_or_eq(len as u64 - 1) as usize
    }

    /// True with probability `percent / 100`.
    pub fn chance(&mut self, percent: u64) -> bool {
        self.0.below_or_eq(99) < percent
    }

    /// One element of `items` (non-empty).
    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.index(items.len())]
    }
}

/// Mixes two numbers into one well-spread seed.
pub fn mix(a: u64, b: u64) -> u64 {
    let mut r = chat_flow::rng::Rng::new(a ^ b.wrapping_mul(0x9E37_79B9_7F4A_7C15));
    r.next_u64()
}
