//! What the core asks its driver to do.

use bytes::Bytes;

use super::types::ConnId;
use crate::protocol::CloseCode;

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
}
