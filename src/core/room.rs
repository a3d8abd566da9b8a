//! A room: its description, history, members and who is typing.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::log::{MemoryLog, RetryKey, Stored};
use super::session::Session;
use super::sorted_set::SortedSet;
use super::types::{ConnId, RoomId, Timestamp, UserId};
use crate::protocol::RoomKind;
use crate::protocol::server::{RoomInfo, UserRef};

/// What `createdBy` says of a default room.
pub(super) const SYSTEM: &str = "system";

/// A user in a room, with the connections through which it joined.
#[derive(Debug)]
pub(super) struct Member {
    /// The name presence shows: that of the user's first connection to join.
    pub(super) username: Arc<str>,
    pub(super) conns: SortedSet<ConnId>,
}

/// One room.
#[derive(Debug)]
pub(super) struct Room {
    pub(super) id: RoomId,
    pub(super) name: String,
    pub(super) description: String,
    pub(super) kind: RoomKind,
    pub(super) created_at: Timestamp,
    /// The user who created it; `None` for a default room (`system`), which
    /// is never deleted.
    pub(super) creator: Option<UserId>,
    pub(super) log: MemoryLog,
    pub(super) members: BTreeMap<UserId, Member>,
    /// Users typing now, with the moment their indicator lapses.
    pub(super) typing: BTreeMap<UserId, Timestamp>,
    /// `(user, clientMessageId)` → `seq`, for messages still in history.
    pub(super) client_ids: BTreeMap<RetryKey, u64>,
    /// Since when a user's room has had no member connection.
    pub(super) empty_since: Option<Timestamp>,
    /// When its idle timer deletes it (set while `empty_since` is and
    /// `ROOM_IDLE_TTL_MS` is not 0).
    pub(super) idle_deadline: Option<Timestamp>,
}

impl Room {
    pub(super) fn info(&self) -> RoomInfo {
        RoomInfo {
            id: self.id.0.to_string(),
            name: self.name.clone(),
            description: self.description.clone(),
            kind: self.kind,
            member_count: self.members.len() as u64,
            created_at: crate::protocol::time::rfc3339_ms(self.created_at.0),
            created_by: self
                .creator
                .as_ref()
                .map_or_else(|| SYSTEM.to_owned(), |u| u.0.to_string()),
        }
    }

    pub(super) fn users(&self) -> Vec<UserRef> {
        self.members
            .iter()
            .map(|(id, m)| UserRef {
                user_id: id.0.to_string(),
                username: m.username.to_string(),
            })
            .collect()
    }

    /// Whether the session's own token grants the room: it is public, the
    /// session's user created it, or the token's `rooms` claim lists it.
    /// (Another connection of the same user being in the room grants
    /// nothing: each connection has its own token's authority.)
    pub(super) fn may_join(&self, session: &Session) -> bool {
        self.kind == RoomKind::Public
            || self.creator.as_ref() == Some(&session.user_id)
            || session.rooms_claim.contains(&*self.id.0)
    }
}

/// An evicted message can no longer be found by a retry of its
/// `clientMessageId`.
pub(super) fn forget_client_id(client_ids: &mut BTreeMap<RetryKey, u64>, evicted: &Stored) {
    if let Some(key) = &evicted.retry {
        client_ids.remove(key);
    }
}
