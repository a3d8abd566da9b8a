//! The small world every scenario runs in: three user slots, three rooms,
//! three `clientMessageId`s, and limits small enough to be reached.

use crate::core::{AUTH_FAILURES_MAX, Limits};

/// Users come in three slots; the `g`-th user of slot `s` is `{SLOTS[s]}{g}`.
pub(super) const SLOTS: [&str; 3] = ["ann", "ben", "cat"];
pub(super) const ROOMS: [&str; 3] = ["r0", "r1", "r2"];
pub(super) const CLIENT_IDS: [&str; 3] = ["k0", "k1", "k2"];
/// `RATE_LIMIT_MESSAGES`.
pub(super) const SEND_CAPACITY: u64 = 5;
/// `RATE_LIMIT_REQUESTS`.
pub(super) const REQUEST_CAPACITY: u64 = 12;
/// `RATE_LIMIT_WINDOW_MS`.
pub(super) const WINDOW_MS: u64 = 2_000;
pub(super) const DISCONNECT_AFTER: u32 = 4;
pub(super) const AUTH_TIMEOUT_MS: u64 = 4_000;
pub(super) const TYPING_TIMEOUT_MS: u64 = 1_500;

pub(super) fn limits(history_limit: usize) -> Limits {
    Limits {
        auth_timeout_ms: AUTH_TIMEOUT_MS,
        auth_failures_max: AUTH_FAILURES_MAX,
        history_limit,
        typing_timeout_ms: TYPING_TIMEOUT_MS,
        rate_limit_messages: SEND_CAPACITY,
        rate_limit_requests: REQUEST_CAPACITY,
        rate_limit_window_ms: WINDOW_MS,
        rate_limit_disconnect_after: DISCONNECT_AFTER,
        rooms_per_user_max: 10,
        max_rooms: 100,
        room_idle_ttl_ms: 0,
    }
}
