//! Connections and users: who is authenticated as whom, what each may still
//! spend, and what waits for the store.

use std::collections::{BTreeSet, VecDeque};
use std::sync::Arc;

use super::bucket::Bucket;
use super::inbound::Inbound;
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
    /// A request of this connection waits for the store's answer.
    pub(super) busy: bool,
    /// Messages received meanwhile, answered in order once it comes (boxed:
    /// most connections never have any, and each connection pays for the
    /// field).
    #[allow(clippy::box_collection)] // one pointer inline, not a VecDeque's four words
    pub(super) waiting: Option<Box<VecDeque<Inbound>>>,
}

impl Conn {
    pub(super) fn session(&self) -> Option<&Session> {
        match &self.state {
            ConnState::Authenticated(s) => Some(s),
            ConnState::ExpectAuthenticate { .. } => None,
        }
    }
}

/// A user with live connections on this node.
#[derive(Debug, Default)]
pub(super) struct User {
    /// Live connections of this user.
    pub(super) conns: SortedSet<ConnId>,
}
