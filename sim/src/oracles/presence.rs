//! `presence`: what a connection is told about who is in a room agrees with
//! itself and with membership — `ROOM_JOINED.users` includes the joiner and
//! matches `memberCount`; `USER_JOINED` only for someone absent and
//! `USER_LEFT` only for someone present, never about the observer's own
//! user while it is there; messages and typing come from present users.
//! The liveness phase compares the final lists with the connections that
//! are really joined.

use chat_flow::protocol::server::{RoomInfo, ServerFrame, ServerMessage, UserRef};

use super::Out;
use super::model::Model;
use crate::obs::ConnNo;

/// `ROOM_JOINED.users`.
pub fn on_joined(
    m: &Model,
    out: &mut Out,
    at: u64,
    conn: ConnNo,
    room: &RoomInfo,
    users: &[UserRef],
) {
    let place = m.place_room(conn, &room.id, None);
    let mut ids: Vec<&str> = users.iter().map(|u| u.user_id.as_str()).collect();
    ids.sort_unstable();
    let n = ids.len();
    ids.dedup();
    if ids.len() != n {
        out.fail(
            "presence",
            at,
            place.clone(),
            format!("ROOM_JOINED lists a user twice: {ids:?}"),
        );
    }
    if room.member_count != ids.len() as u64 {
        out.fail(
            "presence",
            at,
            place.clone(),
            format!(
                "memberCount {} but {} users listed",
                room.member_count,
                ids.len()
            ),
        );
    }
    if let Some(me) = m.user_of(conn)
        && !ids.contains(&me)
    {
        out.fail(
            "presence",
            at,
            place,
            format!("ROOM_JOINED.users {ids:?} lacks the joiner {me}"),
        );
    }
}

/// `USER_JOINED` (`joined`) or `USER_LEFT` about `user` on `conn`: only
/// for a room the connection is in, never about its own user, and only for
/// someone absent (joined) or present (left).
pub fn on_user_event(
    m: &mut Model,
    out: &mut Out,
    at: u64,
    conn: ConnNo,
    room: &str,
    user: &str,
    joined: bool,
) {
    let kind = if joined { "USER_JOINED" } else { "USER_LEFT" };
    let place = m.place_room(conn, room, None);
    let me = m.user_of(conn).map(str::to_owned);
    let Some(r) = m.conns.get_mut(&conn).and_then(|c| c.rooms.get_mut(room)) else {
        out.fail(
            "presence",
            at,
            place,
            format!("{kind} {user} for a room the connection has not joined"),
        );
        return;
    };
    let problem = if me.as_deref() == Some(user) {
        Some(format!(
            "{kind} about the observer's own user while it is joined"
        ))
    } else if joined && !r.users.insert(user.to_owned()) {
        Some(format!("{kind} {user}, who was already present"))
    } else if !joined && !r.users.remove(user) {
        Some(format!("{kind} {user}, who was not present"))
    } else {
        None
    };
    if let Some(detail) = problem {
        out.fail("presence", at, place, detail);
    }
}

/// `TYPING_UPDATE`: only about others, only from present users.
#[allow(clippy::too_many_arguments)]
pub fn on_typing(
    m: &Model,
    out: &mut Out,
    at: u64,
    conn: ConnNo,
    room: &str,
    user: &str,
    is_typing: bool,
) {
    let place = m.place_room(conn, room, None);
    if m.user_of(conn) == Some(user) {
        out.fail(
            "typing",
            at,
            place.clone(),
            "TYPING_UPDATE about the observer's own user".into(),
        );
    }
    let Some(r) = m.conns.get(&conn).and_then(|c| c.rooms.get(room)) else {
        out.fail(
            "typing",
            at,
            place,
            "TYPING_UPDATE for a room the connection has not joined".into(),
        );
        return;
    };
    if is_typing && !r.users.contains(user) {
        out.fail(
            "presence",
            at,
            place,
            format!("{user} is typing but not present"),
        );
    }
}

/// Every `(userId, username)` a frame shows (messages, users, presence and
/// typing notices): a user goes by a name one of its `AUTHENTICATE`s gave
/// (the token's `username` claim, else the payload's, else the user id).
pub fn on_names(m: &Model, out: &mut Out, at: u64, conn: ConnNo, frame: &ServerFrame) {
    let mut shown: Vec<(&str, &str, &str)> = Vec::new();
    match &frame.message {
        ServerMessage::NewMessage(msg) => shown.push(("NEW_MESSAGE", &msg.user_id, &msg.username)),
        ServerMessage::RoomJoined {
            messages, users, ..
        } => {
            shown.extend(messages.iter().map(|x| {
                (
                    "ROOM_JOINED.messages",
                    x.user_id.as_str(),
                    x.username.as_str(),
                )
            }));
            shown.extend(
                users
                    .iter()
                    .map(|u| ("ROOM_JOINED.users", u.user_id.as_str(), u.username.as_str())),
            );
        }
        ServerMessage::History { messages, .. } => shown.extend(
            messages
                .iter()
                .map(|x| ("HISTORY.messages", x.user_id.as_str(), x.username.as_str())),
        ),
        ServerMessage::UserJoined { user, .. } => {
            shown.push(("USER_JOINED", &user.user_id, &user.username));
        }
        ServerMessage::UserLeft {
            user_id, username, ..
        } => shown.push(("USER_LEFT", user_id, username)),
        ServerMessage::TypingUpdate {
            user_id, username, ..
        } => shown.push(("TYPING_UPDATE", user_id, username)),
        _ => {}
    }
    for (what, user, name) in shown {
        if m.name_ok(user, name) == Some(false) {
            out.fail(
                "presence",
                at,
                m.place(conn),
                format!(
                    "{what} shows {user} as {name:?}, a name none of its authentications gave (those: {:?})",
                    m.user_names.get(user)
                ),
            );
        }
    }
}
