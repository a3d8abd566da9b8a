//! [`Clock`]: the core's time, read from the runtime's monotonic clock.

use tokio::time::Instant;

use crate::core::Timestamp;

/// Converts between the runtime's monotonic clock and the core's
/// [`Timestamp`]s (Unix milliseconds).
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    start: Instant,
    start_unix_ms: u64,
}

impl Clock {
    /// A clock reading `start_unix_ms` now.
    pub fn new(start_unix_ms: u64) -> Clock {
        Clock {
            start: Instant::now(),
            start_unix_ms,
        }
    }

    /// Now, as the core counts time. Never goes backwards.
    pub fn now(&self) -> Timestamp {
        let elapsed = Instant::now().saturating_duration_since(self.start);
        Timestamp(self.start_unix_ms + elapsed.as_millis() as u64)
    }

    /// The runtime instant at which the core's `at` falls.
    pub fn instant_of(&self, at: Timestamp) -> Instant {
        self.start + std::time::Duration::from_millis(at.0.saturating_sub(self.start_unix_ms))
    }
}
