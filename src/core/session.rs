//! Connections and users: who is authenticated as whom, and what each may
//! still spend.

use std::collections::BTreeSet;
use std::sync::Arc;

use super::bucket::Bucket;
use super::sorted_set::SortedSet;
use super::types::{ConnId, RoomId, Timestamp, UserId};

/// What an authenticated connection's token says.
#[derive(Debug)]
pub(super) struct Session {
    pub(super) user_id: UserId,
    pub(super) username: Arc<str>,
    /// Private rooms the token grants.
    pub(super) rooms_claim: BTreeSet<String>,
    /// The moment the token stops being accepted.
    pub(super) expires_at: Timestamp,
}

/// Where a connection is in the contract.
#[derive(Debug)]
pub(super) enum ConnState {
    /// Waiting for `AUTHENTICATE` until `deadline`.
    ExpectAuthenticate { deadline: Timestamp },
    /// Authenticated.
    Authenticated(Session),
}

/// One connection the core knows.
#[derive(Debug)]
pub(super) struct Conn {
    pub(super) state: ConnState,
    /// Every request but an authenticated `SEND_MESSAGE` is charged here.
    pub(super) requests: Bucket,
    /// Rate-limit rejections since the last accepted request.
    pub(super) rejected_in_row: u32,
    /// Failed `AUTHENTICATE` attempts on this connection.
    pub(super) failed_auths: u32,
    /// Rooms this connection has joined.
    pub(super) rooms: SortedSet<RoomId>,
}

impl Conn {
    pub(super) fn session(&self) -> Option<&Session> {
        match &self.state {
            ConnState::Authenticated(s) => Some(s),
            ConnState::ExpectAuthenticate { .. } => None,
        }
    }
}

/// A user with live connections (or a send bucket still refilling).
#[derive(Debug)]
pub(super) struct User {
    /// Live connections of this user.
    pub(super) conns: SortedSet<ConnId>,
    /// The per-user `SEND_MESSAGE` bucket, kept after the last connection
    /// goes until it is full again, so reconnecting never resets it.
    pub(super) sends: Bucket,
}
