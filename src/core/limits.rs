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
    /// `ROOMS_PER_USER_MAX`: rooms one user may have created at once (a
    /// room that is deleted no longer counts).
    pub rooms_per_user_max: u32,
    /// `MAX_ROOMS`: rooms that may exist at once, default rooms included.
    pub max_rooms: usize,
    /// `ROOM_IDLE_TTL_MS`: a room created by a user is deleted once it has
    /// had no member connection for this long; `0`: never.
    pub room_idle_ttl_ms: u64,
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
            max_rooms: 100_000,
            room_idle_ttl_ms: 86_400_000,
        }
    }
}

impl Limits {
    pub(super) fn send_bucket(&self) -> crate::store::BucketShape {
        crate::store::BucketShape {
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
