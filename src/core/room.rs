//! A room: its description, history, members and who is typing.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::log::MemoryLog;
use super::session::Session;
use super::sorted_set::SortedSet;
use super::types::{ConnId, RoomId, Timestamp, UserId};
use crate::protocol::RoomKind;
use crate::protocol::server::{RoomInfo, StoredMessage, UserRef};

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
    pub(super) created_by: String,
    pub(super) log: MemoryLog,
    pub(super) members: BTreeMap<UserId, Member>,
    /// Users typing now, with the moment their indicator lapses.
    pub(super) typing: BTreeMap<UserId, Timestamp>,
    /// `(user, clientMessageId)` → `seq`, for messages still in history.
    pub(super) client_ids: BTreeMap<(UserId, String), u64>,
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
            created_by: self.created_by.clone(),
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

    pub(super) fn may_join(&self, session: &Session) -> bool {
        self.kind == RoomKind::Public
            || *self.created_by == *session.user_id.0
            || session.rooms_claim.contains(&*self.id.0)
            || self.members.contains_key(&session.user_id)
    }
}

/// An evicted message can no longer be found by a retry of its
/// `clientMessageId`.
pub(super) fn forget_client_id(
    client_ids: &mut BTreeMap<(UserId, String), u64>,
    evicted: &StoredMessage,
) {
    if let Some(cmid) = &evicted.message.client_message_id {
        let owner = UserId(Arc::from(evicted.message.user_id.as_str()));
        client_ids.remove(&(owner, cmid.clone()));
    }
}
