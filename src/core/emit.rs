//! Outputs: replies, errors, closes and broadcasts, queued for the driver.

use bytes::Bytes;

use super::hub::Hub;
use super::output::Output;
use super::types::{ConnId, RoomId, UserId};
use crate::protocol::server::{self, ServerMessage};
use crate::protocol::{CloseCode, ErrorCode};

/// Who in a room does not get a broadcast.
#[derive(Clone, Copy)]
pub(super) enum Except<'a> {
    /// Every connection but this user's.
    User(&'a UserId),
}

impl Hub {
    pub(super) fn close(&mut self, conn: ConnId, code: CloseCode, reason: &'static str) {
        if !self.conns.contains_key(&conn) {
            return;
        }
        self.forget(conn);
        *self.stats.closes.entry(code.code()).or_insert(0) += 1;
        self.outputs.push_back(Output::Close { conn, code, reason });
    }

    pub(super) fn send(&mut self, conn: ConnId, frame: Bytes) {
        self.outputs.push_back(Output::Frame {
            conn,
            frame,
            notice: false,
        });
    }

    pub(super) fn reply(&mut self, conn: ConnId, message: &ServerMessage, rid: Option<&str>) {
        self.send(conn, server::encode(message, rid));
    }

    pub(super) fn error(
        &mut self,
        conn: ConnId,
        code: ErrorCode,
        message: impl Into<String>,
        rid: Option<&str>,
    ) {
        self.error_with_retry(conn, code, message, None, rid);
    }

    pub(super) fn error_with_retry(
        &mut self,
        conn: ConnId,
        code: ErrorCode,
        message: impl Into<String>,
        retry_after_ms: Option<u64>,
        rid: Option<&str>,
    ) {
        if !self.conns.contains_key(&conn) {
            return;
        }
        let index = ErrorCode::ALL
            .iter()
            .position(|c| *c == code)
            .expect("ALL lists every code");
        self.stats.errors[index] += 1;
        self.send(conn, server::error(code, message, retry_after_ms, rid));
    }

    pub(super) fn room_not_found(&mut self, conn: ConnId, room_id: &str, rid: Option<&str>) {
        let shown: String = room_id.chars().take(64).collect();
        self.error(
            conn,
            ErrorCode::RoomNotFound,
            format!("room {shown} does not exist"),
            rid,
        );
    }

    /// A presence or typing notice to the room's connections on this node.
    pub(super) fn broadcast(&mut self, room_id: &RoomId, frame: &Bytes, except: Except<'_>) {
        let Some(room) = self.rooms.get(room_id) else {
            return;
        };
        for (user, conns) in &room.local {
            if matches!(except, Except::User(u) if u == user) {
                continue;
            }
            for &c in conns {
                self.outputs.push_back(Output::Frame {
                    conn: c,
                    frame: frame.clone(),
                    notice: true,
                });
            }
        }
    }

    pub(super) fn broadcast_typing(&mut self, room_id: &RoomId, user: &UserId, is_typing: bool) {
        let Some(room) = self.rooms.get(room_id) else {
            return;
        };
        let username = room
            .present
            .get(user)
            .map_or_else(|| user.0.to_string(), ToString::to_string);
        let frame = server::encode(
            &ServerMessage::TypingUpdate {
                room_id: room_id.0.to_string(),
                user_id: user.0.to_string(),
                username,
                is_typing,
            },
            None,
        );
        self.broadcast(room_id, &frame, Except::User(user));
    }
}
