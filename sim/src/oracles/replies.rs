//! `request-order`, the rules of the envelope: which frame answers which
//! request, and where a `requestId` goes.
//!
//! - A reply is of the type its request's success has (`AUTHENTICATE` →
//!   `AUTH_SUCCESS`, `CREATE_ROOM` → `ROOM_CREATED`, `LIST_ROOMS` →
//!   `ROOM_LIST`, `JOIN_ROOM` → `ROOM_JOINED`, `LEAVE_ROOM` → `ROOM_LEFT`
//!   of that room, `GET_HISTORY` → `HISTORY`, `PING` → `PONG`,
//!   `SEND_MESSAGE` → `NEW_MESSAGE`; `TYPING_STATUS` has none) or `ERROR`
//!   with a code the contract gives for that request.
//! - Only `AUTHENTICATE` (and errors) may answer a connection that has not
//!   authenticated.
//! - Broadcasts (`USER_JOINED`, `USER_LEFT`, `TYPING_UPDATE`) never carry a
//!   `requestId`. (A `NEW_MESSAGE` that carries one must answer the
//!   connection's own `SEND_MESSAGE`: `seq-order`.)
//! - A reply to a request that carried a `requestId` echoes it: on a
//!   connection whose every request carried a readable one, a reply type
//!   (`AUTH_SUCCESS`, `ROOM_CREATED`, `ROOM_LIST`, `ROOM_JOINED`, `HISTORY`,
//!   `PONG`) never comes without one, nor an `ERROR` other than the
//!   unsolicited `UNAUTHORIZED` (authentication timeout, token expiry).
//!   (A binary frame is such a message: `core_ops` records it as a `Sent`
//!   of type `(binary)`; the simulation's clients send none.)
//!   That the echoed id is the one of the request next in line is checked
//!   where replies are paired with requests (`Checker::reply_to`).

use chat_flow::protocol::ErrorCode;
use chat_flow::protocol::server::{ServerFrame, ServerMessage};

use super::Out;
use super::model::{Model, Req};
use crate::obs::ConnNo;

/// The wire name of a message's type.
pub fn kind(message: &ServerMessage) -> &'static str {
    match message {
        ServerMessage::AuthSuccess { .. } => "AUTH_SUCCESS",
        ServerMessage::RoomCreated { .. } => "ROOM_CREATED",
        ServerMessage::RoomList { .. } => "ROOM_LIST",
        ServerMessage::RoomJoined { .. } => "ROOM_JOINED",
        ServerMessage::RoomLeft { .. } => "ROOM_LEFT",
        ServerMessage::History { .. } => "HISTORY",
        ServerMessage::Pong {} => "PONG",
        ServerMessage::NewMessage(_) => "NEW_MESSAGE",
        ServerMessage::UserJoined { .. } => "USER_JOINED",
        ServerMessage::UserLeft { .. } => "USER_LEFT",
        ServerMessage::TypingUpdate { .. } => "TYPING_UPDATE",
        ServerMessage::Error { .. } => "ERROR",
    }
}

/// The success reply of a request type.
fn success(request: &str) -> Option<&'static str> {
    Some(match request {
        "AUTHENTICATE" => "AUTH_SUCCESS",
        "CREATE_ROOM" => "ROOM_CREATED",
        "LIST_ROOMS" => "ROOM_LIST",
        "JOIN_ROOM" => "ROOM_JOINED",
        "LEAVE_ROOM" => "ROOM_LEFT",
        "GET_HISTORY" => "HISTORY",
        "PING" => "PONG",
        "SEND_MESSAGE" => "NEW_MESSAGE",
        _ => return None,
    })
}

/// Whether the contract gives `code` as an answer to a `request`.
fn code_fits(request: &str, code: ErrorCode) -> bool {
    let room_request = matches!(
        request,
        "LEAVE_ROOM" | "GET_HISTORY" | "SEND_MESSAGE" | "TYPING_STATUS"
    );
    match code {
        // Anything may be malformed, over a limit, unauthenticated (or a
        // refused token) or hit an internal failure.
        ErrorCode::InvalidMessage
        | ErrorCode::RateLimitExceeded
        | ErrorCode::ServerError
        | ErrorCode::Unauthorized => true,
        ErrorCode::RoomNotFound => room_request || request == "JOIN_ROOM",
        ErrorCode::NotAMember => room_request,
        ErrorCode::Forbidden => matches!(request, "JOIN_ROOM" | "CREATE_ROOM"),
        ErrorCode::RoomExists => request == "CREATE_ROOM",
    }
}

/// Every decoded frame on `conn`, with the request it answers (if its
/// `requestId` paired it with one).
pub fn on_frame(
    m: &Model,
    out: &mut Out,
    at: u64,
    conn: ConnNo,
    req: Option<&Req>,
    frame: &ServerFrame,
) {
    let Some(c) = m.conns.get(&conn) else {
        return;
    };
    let got = kind(&frame.message);
    let place = m.place(conn);
    let mut fail = |detail: String| out.fail("request-order", at, place.clone(), detail);
    let broadcast = matches!(got, "USER_JOINED" | "USER_LEFT" | "TYPING_UPDATE");
    let reply_only = matches!(
        got,
        "AUTH_SUCCESS" | "ROOM_CREATED" | "ROOM_LIST" | "ROOM_JOINED" | "HISTORY" | "PONG"
    );
    match (&frame.request_id, req) {
        (Some(rid), _) if broadcast => fail(format!("{got} carries requestId {rid:?}")),
        (Some(_), Some(req)) => {
            if let ServerMessage::Error { code, .. } = &frame.message {
                if !code_fits(&req.kind, *code) {
                    fail(format!("{} answered {}", req.kind, code.as_str()));
                }
                return;
            }
            // ROOM_JOINED, HISTORY, ROOM_CREATED and NEW_MESSAGE are
            // matched to their requests where they are modelled.
            let checked_elsewhere = matches!(
                got,
                "ROOM_JOINED" | "HISTORY" | "ROOM_CREATED" | "NEW_MESSAGE"
            );
            if !checked_elsewhere && success(&req.kind) != Some(got) {
                fail(format!("{} answered {got}", req.kind));
            }
            if c.user.is_none() && req.kind != "AUTHENTICATE" {
                fail(format!(
                    "{} served ({got}) before the connection authenticated",
                    req.kind
                ));
            }
            if let ServerMessage::RoomLeft { room_id } = &frame.message
                && req.room.as_deref() != Some(room_id.as_str())
            {
                fail(format!(
                    "ROOM_LEFT {room_id} answers LEAVE_ROOM {:?}",
                    req.room
                ));
            }
        }
        (Some(_), None) => {}
        (None, _) => {
            if reply_only && c.anon_requests == 0 {
                fail(format!(
                    "{got} without a requestId, but every request of the connection carried one"
                ));
            }
            if let ServerMessage::Error { code, message, .. } = &frame.message
                && *code != ErrorCode::Unauthorized
                && c.anon_sent == 0
            {
                fail(format!(
                    "ERROR {} ({message}) without a requestId, but every message of the connection carried one",
                    code.as_str()
                ));
            }
        }
    }
}
