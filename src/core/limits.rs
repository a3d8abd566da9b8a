//! The configurable limits the core enforces, and the rooms it starts with.

use super::bucket::BucketLimit;

/// Failed `AUTHENTICATE` attempts after which the contract closes a
/// connection.
pub const AUTH_FAILURES_MAX: u32 = 3;

/// The limits of the contract that the core enforces.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// `AUTH_TIMEOUT_MS`: time to authenticate after connecting.
    pub auth_timeout_ms: u64,
    /// Failed `AUTHENTICATE` attempts after which a connection is closed.
    pub auth_failures_max: u32,
    /// `HISTORY_LIMIT`: messages kept per room (≥ 1).
    pub history_limit: usize,
    /// `TYPING_TIMEOUT_MS`: how long `isTyping: true` lasts without renewal.
    pub typing_timeout_ms: u64,
    /// `RATE_LIMIT_MESSAGES`: the per-user send bucket's capacity.
    pub rate_limit_messages: u64,
    /// `RATE_LIMIT_REQUESTS`: the per-connection bucket's capacity.
    pub rate_limit_requests: u64,
    /// `RATE_LIMIT_WINDOW_MS`: refill time of both buckets.
    pub rate_limit_window_ms: u64,
    /// `RATE_LIMIT_DISCONNECT_AFTER`: rejections in a row before closing.
    pub rate_limit_disconnect_after: u32,
    /// `ROOMS_PER_USER_MAX`: rooms one user may create.
    pub rooms_per_user_max: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            auth_timeout_ms: 10_000,
            auth_failures_max: AUTH_FAILURES_MAX,
            history_limit: 100,
            typing_timeout_ms: 5_000,
            rate_limit_messages: 20,
            rate_limit_requests: 100,
            rate_limit_window_ms: 10_000,
            rate_limit_disconnect_after: 50,
            rooms_per_user_max: 100,
        }
    }
}

impl Limits {
    pub(super) fn send_bucket(&self) -> BucketLimit {
        BucketLimit {
            capacity: self.rate_limit_messages.max(1),
            window_ms: self.rate_limit_window_ms.max(1),
        }
    }

    pub(super) fn request_bucket(&self) -> BucketLimit {
        BucketLimit {
            capacity: self.rate_limit_requests.max(1),
            window_ms: self.rate_limit_window_ms.max(1),
        }
    }
}

/// A room that exists from start-up (`DEFAULT_ROOMS`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DefaultRoom {
    /// Its id.
    pub id: String,
    /// Its display name.
    pub name: String,
}
