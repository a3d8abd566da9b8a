//! How long the client waits before reconnecting.

use crate::rng::Rng;

/// Full-jitter backoff: a uniform delay in `[0, min(max, base·2^attempt)]`.
pub fn backoff_delay_ms(rng: &mut Rng, attempt: u32, base_ms: u64, max_ms: u64) -> u64 {
    let bound = base_ms.saturating_mul(1u64 << attempt.min(30)).min(max_ms);
    rng.below_or_eq(bound)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_is_bounded_and_seeded() {
        let mut a = Rng::new(7);
        let mut b = Rng::new(7);
        for attempt in 0..40 {
            let x = backoff_delay_ms(&mut a, attempt, 100, 10_000);
            assert_eq!(x, backoff_delay_ms(&mut b, attempt, 100, 10_000));
            assert!(x <= (100u64 << attempt.min(30)).min(10_000));
        }
    }
}
