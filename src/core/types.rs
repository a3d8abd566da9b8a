//! The values the core is keyed by: time, connections, users, rooms.

use std::sync::Arc;

/// Milliseconds since the Unix epoch, as passed in by the driver.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Timestamp(pub u64);

impl Timestamp {
    /// `self + ms`, saturating.
    pub fn plus_ms(self, ms: u64) -> Timestamp {
        Timestamp(self.0.saturating_add(ms))
    }
}

/// One WebSocket connection, numbered by the driver.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ConnId(pub u64);

/// One store operation the core handed out, matched with its reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct OpId(pub u64);

/// A user: the token's `sub`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct UserId(pub Arc<str>);

impl std::borrow::Borrow<str> for UserId {
    fn borrow(&self) -> &str {
        &self.0
    }
}

/// A room's id.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RoomId(pub Arc<str>);

impl std::borrow::Borrow<str> for RoomId {
    fn borrow(&self) -> &str {
        &self.0
    }
}

/// What makes one hub's ids its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Instance {
    /// Distinguishes this hub's room epochs and message ids from those of
    /// any other run. It is shown to clients: it is part of every epoch.
    pub number: u64,
    /// Seeds the generator of room ids. It is never shown, and what is shown
    /// of each draw is a one-way hash of it, so that nobody can work out the
    /// ids of rooms others create next from the epochs or ids they see. The
    /// production server draws it from the operating system; the simulation
    /// and the tests pick it, so that their runs replay.
    pub secret: u64,
}
