//! What the core asks its driver to do.

use bytes::Bytes;

use super::types::{ConnId, OpId};
use crate::protocol::CloseCode;
use crate::store::Op;

/// What the driver must do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// Queue this text frame to the connection.
    Frame {
        /// The recipient.
        conn: ConnId,
        /// One encoded JSON message, shared by every recipient of a broadcast.
        frame: Bytes,
        /// A presence or typing notice (`USER_JOINED`, `USER_LEFT`,
        /// `TYPING_UPDATE`): the driver may hold it for a short while so that
        /// several to one connection share one write. It is never reordered:
        /// any other frame queued after it takes it along.
        notice: bool,
    },
    /// Close the connection with this code once what is queued before it is
    /// sent. The core has already forgotten the connection.
    Close {
        /// The connection.
        conn: ConnId,
        /// The close code.
        code: CloseCode,
        /// A short reason for the close frame.
        reason: &'static str,
    },
    /// Execute `op` against the store, after every `Store` output before it,
    /// and hand the reply to [`Hub::store_reply`](super::Hub::store_reply)
    /// with this `id`.
    Store {
        /// What the reply answers.
        id: OpId,
        /// The operation.
        op: Op,
    },
    /// This node now has connections in `room`: hand the store's events of
    /// the room to [`Hub::store_event`](super::Hub::store_event) from now on.
    Subscribe {
        /// The room.
        room: String,
    },
    /// This node has no connection left in `room`: its events are no longer
    /// needed.
    Unsubscribe {
        /// The room.
        room: String,
    },
}
