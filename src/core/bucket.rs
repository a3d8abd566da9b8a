//! Token buckets with exact integer arithmetic.

use super::types::Timestamp;

/// A token bucket holding at most `capacity` tokens, refilled evenly so that
/// an empty bucket is full again after `window_ms`.
///
/// The level is kept in units of `1 / window_ms` of a token, so that the
/// refill (`capacity` units per millisecond) is exact: no floating point, no
/// drift, the same answer on every machine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bucket {
    level: u64,
    updated: Timestamp,
}

/// The shape of a bucket: how many tokens, refilled over how long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BucketLimit {
    /// Tokens when full; at least 1.
    pub capacity: u64,
    /// Time for an empty bucket to refill; at least 1 ms.
    pub window_ms: u64,
}

impl BucketLimit {
    fn max_level(self) -> u64 {
        self.capacity.saturating_mul(self.window_ms)
    }
}

impl Bucket {
    /// A full bucket at `now`.
    pub fn full(limit: BucketLimit, now: Timestamp) -> Bucket {
        Bucket {
            level: limit.max_level(),
            updated: now,
        }
    }

    fn refill(&mut self, limit: BucketLimit, now: Timestamp) {
        let elapsed = now.0.saturating_sub(self.updated.0);
        self.level = self
            .level
            .saturating_add(elapsed.saturating_mul(limit.capacity))
            .min(limit.max_level());
        self.updated = Timestamp(self.updated.0.max(now.0));
    }

    /// Takes one token, or says after how many milliseconds one will be there.
    pub fn try_take(&mut self, limit: BucketLimit, now: Timestamp) -> Result<(), u64> {
        self.refill(limit, now);
        let token = limit.window_ms;
        if self.level >= token {
            self.level -= token;
            Ok(())
        } else {
            Err((token - self.level).div_ceil(limit.capacity.max(1)))
        }
    }

    /// When this bucket will be full again if nothing is taken.
    pub fn full_at(&self, limit: BucketLimit) -> Timestamp {
        let missing = limit.max_level().saturating_sub(self.level);
        Timestamp(
            self.updated
                .0
                .saturating_add(missing.div_ceil(limit.capacity.max(1))),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMIT: BucketLimit = BucketLimit {
        capacity: 20,
        window_ms: 10_000,
    };

    #[test]
    fn burst_then_even_refill() {
        let mut b = Bucket::full(LIMIT, Timestamp(0));
        for _ in 0..20 {
            assert!(b.try_take(LIMIT, Timestamp(0)).is_ok());
        }
        assert_eq!(b.try_take(LIMIT, Timestamp(0)), Err(500));
        assert_eq!(b.try_take(LIMIT, Timestamp(499)), Err(1));
        assert!(b.try_take(LIMIT, Timestamp(500)).is_ok());
        assert_eq!(b.try_take(LIMIT, Timestamp(500)), Err(500));
        assert_eq!(b.full_at(LIMIT), Timestamp(10_500));
    }

    #[test]
    fn never_above_capacity() {
        let mut b = Bucket::full(LIMIT, Timestamp(0));
        let later = Timestamp(1_000_000_000);
        let mut taken = 0;
        while b.try_take(LIMIT, later).is_ok() {
            taken += 1;
        }
        assert_eq!(taken, 20);
    }
}
