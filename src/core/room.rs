//! A room as this node sees it: the stored record, who is present in the
//! whole service, this node's connections in it, who is typing, and how far
//! its messages have been delivered here.
//!
//! A node holds a room only while it has connections in it; the store holds
//! everything else (see `crate::store`).

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

use super::session::Session;
use super::sorted_set::SortedSet;
use super::types::{ConnId, Timestamp, UserId};
use crate::protocol::RoomKind;
use crate::protocol::server::{MessageFrame, RoomInfo};
use crate::store::{Event, Present, RoomRecord};

/// What `createdBy` says of a default room.
pub(super) const SYSTEM: &str = "system";

/// A message waiting for its turn to be delivered here.
#[derive(Debug, Clone)]
pub(super) struct Arrival {
    pub(super) frame: MessageFrame,
    /// The sender, whose typing indicator it ends (unknown for a message
    /// read back after a gap).
    pub(super) sender: Option<UserId>,
    /// The sender's connection here and its `requestId`: it gets the
    /// acknowledgement instead of the broadcast.
    pub(super) ack: Option<(ConnId, Option<String>)>,
    /// The room's presence change it came after (known from the reply to
    /// this node's own publish; one that came as an event is in the
    /// events' order already: 0): it is not shown before that change.
    pub(super) presence_seq: u64,
}

/// A notice waiting for the messages before it.
#[derive(Debug)]
pub(super) enum Held {
    /// A presence or typing event of the store's.
    Event(Event),
    /// Departures a read-back found, as their frames to members.
    Frames(Vec<super::output::Output>),
}

/// The users a connection's `ROOM_JOINED` listed, as of the room's
/// presence change `pseq`.
#[derive(Debug)]
pub(super) struct Shown {
    pub(super) pseq: u64,
    pub(super) users: Vec<Present>,
}

/// One room this node has connections in.
#[derive(Debug)]
pub(super) struct Room {
    pub(super) record: RoomRecord,
    /// Users present in the whole service, with the name presence shows.
    pub(super) present: BTreeMap<UserId, Arc<str>>,
    /// This node's connections in the room, by user.
    pub(super) local: BTreeMap<UserId, SortedSet<ConnId>>,
    /// Users typing now, with the moment their indicator lapses here.
    pub(super) typing: BTreeMap<UserId, Timestamp>,
    /// The `seq` of the last message delivered here.
    pub(super) delivered: u64,
    /// Each connection joined after this `seq` (its `ROOM_JOINED` carried
    /// the messages up to it).
    pub(super) joined_after: BTreeMap<ConnId, u64>,
    /// Messages that came before their turn, by `seq`.
    pub(super) ahead: BTreeMap<u64, Arrival>,
    /// The last `seq` the room's events brought here (a reply to this
    /// node's own publish may bring a later one before the events of the
    /// changes it came after).
    pub(super) heard: u64,
    /// `Publish`es of this node's connections in the room not answered
    /// yet: deliveries wait for them, so that each sender's acknowledgement
    /// keeps its place in `seq` order on its connection.
    pub(super) publishing: u32,
    /// Reads of missed messages (`Since`) under way: deliveries wait for
    /// the last of them.
    pub(super) backfilling: u32,
    /// The number of the room's last presence change that `present`
    /// reflects and every local member has been shown.
    pub(super) presence_seen: u64,
    /// Connections whose `ROOM_JOINED` showed the room's users as of a
    /// later change than `presence_seen`, with that list: the changes up to
    /// it are not shown to them again, and a read-back of a later change
    /// tells them what differs from their list.
    pub(super) presence_after: BTreeMap<ConnId, Shown>,
    /// Presence and typing events that came after messages still waiting
    /// their turn here, with the `seq` they wait for.
    pub(super) held_notices: VecDeque<(u64, Held)>,
}

impl Room {
    pub(super) fn new(record: RoomRecord, delivered: u64) -> Room {
        Room {
            record,
            present: BTreeMap::new(),
            local: BTreeMap::new(),
            typing: BTreeMap::new(),
            delivered,
            joined_after: BTreeMap::new(),
            ahead: BTreeMap::new(),
            heard: delivered,
            publishing: 0,
            backfilling: 0,
            presence_seen: 0,
            presence_after: BTreeMap::new(),
            held_notices: VecDeque::new(),
        }
    }

    /// The users present as this node has shown them, in user id order.
    pub(super) fn present_list(&self) -> Vec<Present> {
        self.present
            .iter()
            .map(|(u, name)| Present {
                user: u.0.to_string(),
                username: name.to_string(),
            })
            .collect()
    }

    /// Whether this node has no connection left in it.
    pub(super) fn is_unused(&self) -> bool {
        self.local.is_empty()
    }
}

/// `RoomInfo` of a stored room with `member_count` users present.
pub(super) fn info(record: &RoomRecord, member_count: u64) -> RoomInfo {
    RoomInfo {
        id: record.id.clone(),
        name: record.name.clone(),
        description: record.description.clone(),
        kind: record.kind,
        member_count,
        created_at: crate::protocol::time::rfc3339_ms(record.created_at_ms),
        created_by: record
            .created_by
            .clone()
            .unwrap_or_else(|| SYSTEM.to_owned()),
    }
}

/// Whether the session's own token grants the room: it is public, the
/// session's user created it, or the token's `rooms` claim lists it.
/// (Another connection of the same user being in the room grants nothing:
/// each connection has its own token's authority.)
pub(super) fn may_join(record: &RoomRecord, session: &Session) -> bool {
    record.kind == RoomKind::Public
        || record.created_by.as_deref() == Some(&*session.user_id.0)
        || session.rooms_claim.contains(&record.id)
}
