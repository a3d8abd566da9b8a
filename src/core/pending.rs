//! Store operations handed out and not answered yet: what each reply
//! finishes.

use super::types::{ConnId, RoomId, UserId};
use crate::store::RoomRecord;

/// What a store reply finishes.
#[derive(Debug)]
pub(super) struct Pending {
    /// The connection whose request it answers, if any.
    pub(super) conn: Option<ConnId>,
    /// The request's `requestId`.
    pub(super) rid: Option<String>,
    /// Whether the connection's next messages wait for the reply.
    pub(super) blocks: bool,
    pub(super) wait: Wait,
}

/// What to do with the reply.
#[derive(Debug)]
pub(super) enum Wait {
    /// Nothing (a default room ensured, typing published).
    Nothing,
    /// `LIST_ROOMS`: the rooms this connection may see.
    ListRooms,
    /// `CREATE_ROOM`: created (then the creator joins), or refused.
    Create {
        /// The room asked for (again, with another id and epoch, when a
        /// drawn id was taken).
        record: RoomRecord,
        /// The id was drawn, not chosen.
        generated: bool,
    },
    /// `JOIN_ROOM` (`ROOM_JOINED`), or the creator joining the room it
    /// just created (`ROOM_CREATED`). `user` undoes the join if the
    /// connection is gone when the reply comes.
    Join {
        room_id: String,
        user: UserId,
        creating: bool,
    },
    /// A leave (asked, revoked, or the connection gone): a user's room
    /// left empty starts its idle time.
    Leave { room: RoomId },
    /// `GET_HISTORY`: `HISTORY`.
    History { room_id: String },
    /// `SEND_MESSAGE` by a member: the acknowledgement and the deliveries.
    Publish { room: RoomId },
    /// `SEND_MESSAGE` by a connection not in the room: charged, then why
    /// it cannot send.
    Charge { room_id: String },
    /// A request about a room the connection is not in: `NOT_A_MEMBER` or
    /// `ROOM_NOT_FOUND`.
    Lookup { room_id: String },
    /// An idle room's deletion.
    Delete,
    /// A read of the messages this node missed in a room.
    Backfill { room: RoomId },
}

impl Pending {
    /// A reply nobody waits for.
    pub(super) fn quiet() -> Pending {
        Pending {
            conn: None,
            rid: None,
            blocks: false,
            wait: Wait::Nothing,
        }
    }

    /// A reply `conn`'s request waits for.
    pub(super) fn answer(conn: ConnId, rid: Option<&str>, wait: Wait) -> Pending {
        Pending {
            conn: Some(conn),
            rid: rid.map(str::to_owned),
            blocks: true,
            wait,
        }
    }

    /// A leave of `room` by `conn` (nothing waits for it).
    pub(super) fn leave(conn: ConnId, room: RoomId) -> Pending {
        Pending {
            conn: Some(conn),
            rid: None,
            blocks: false,
            wait: Wait::Leave { room },
        }
    }

    /// The deletion of an idle room.
    pub(super) fn deleting() -> Pending {
        Pending {
            wait: Wait::Delete,
            ..Pending::quiet()
        }
    }

    /// A node's read of what it missed in `room`.
    pub(super) fn backfill(room: RoomId) -> Pending {
        Pending {
            wait: Wait::Backfill { room },
            ..Pending::quiet()
        }
    }
}
