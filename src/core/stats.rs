//! What the core counts and measures, for the driver to export.

use std::collections::BTreeMap;

use crate::protocol::ErrorCode;

/// Counters the driver exports as metrics. Only ever increase.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    /// `SEND_MESSAGE`s accepted (stored and broadcast).
    pub messages_accepted: u64,
    /// `NEW_MESSAGE` frames handed to recipients, acknowledgements included.
    pub messages_delivered: u64,
    /// `ERROR` frames sent, by code (in [`ErrorCode::ALL`] order).
    pub errors: [u64; ErrorCode::ALL.len()],
    /// Requests refused by a rate limit.
    pub rate_limited: u64,
    /// Retries answered from history instead of storing a duplicate.
    pub retries_deduplicated: u64,
    /// Messages evicted from a room's history.
    pub history_evictions: u64,
    /// Connections closed by the core, by close code number.
    pub closes: BTreeMap<u16, u64>,
    /// Successful refreshes of an authenticated connection's token.
    pub token_refreshes: u64,
    /// Private rooms a connection was taken out of because a refreshed
    /// token no longer grants them.
    pub rooms_revoked: u64,
    /// Rooms deleted after `ROOM_IDLE_TTL_MS` without a member.
    pub rooms_deleted: u64,
}

/// Gauges the driver exports as metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Gauges {
    /// Connections known to the core.
    pub connections: u64,
    /// Of those, authenticated.
    pub authenticated: u64,
    /// Rooms.
    pub rooms: u64,
    /// (connection, room) memberships.
    pub memberships: u64,
}
