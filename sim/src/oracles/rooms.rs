//! `rooms`: who may create, join and stay in which room, and how long a
//! room lives.
//!
//! - A `CREATE_ROOM` with a chosen `id` outside the creator's `rooms` claim
//!   is `FORBIDDEN`, never `ROOM_CREATED` nor `ROOM_EXISTS` (nobody squats
//!   an id granted to others, nor learns whether it exists). A generated id
//!   is `room_` and at least 16 base64url characters.
//! - `ROOM_CREATED` starts an epoch the room never had (a room deleted and
//!   created again must not resume an old sequence).
//! - `ROOM_JOINED` for a private room comes only when the connection's own
//!   token grants it (its claim, or its user created it); `FORBIDDEN` never
//!   answers a `JOIN_ROOM` for a room the claim lists or a default room.
//! - A refresh that no longer grants private rooms the connection is in
//!   (and its user did not create) is followed at once by one `ROOM_LEFT`
//!   without a `requestId` per such room, in room id order; an unasked
//!   `ROOM_LEFT` comes at no other time.
//! - `ROOM_NOT_FOUND` answering a request written after a member of the room
//!   (in this server run) was sent a frame comes no sooner than
//!   `ROOM_IDLE_TTL_MS` after that frame (minus the delivery slack): a room
//!   is deleted only after that long without members, and never with
//!   `ROOM_IDLE_TTL_MS` 0. (A request written before then may find the room
//!   not created yet.)

use chat_flow::protocol::ErrorCode;
use chat_flow::protocol::server::{RoomInfo, ServerFrame, ServerMessage};

use super::model::{Model, Req};
use super::{Out, Place};
use crate::obs::ConnNo;

/// What `createdBy` says of a default room.
pub const SYSTEM: &str = "system";

/// Every frame `conn` receives, before anything else looks at it: the
/// `ROOM_LEFT`s a refresh owes come first, and no other comes unasked.
/// Also notes that the connection's rooms had a member at `at`.
pub fn on_frame(m: &mut Model, out: &mut Out, at: u64, conn: ConnNo, frame: &ServerFrame) {
    let Some(c) = m.conns.get_mut(&conn) else {
        return;
    };
    for room in c.rooms.keys() {
        m.member_evidence.insert((c.run, room.clone()), at);
    }
    let unasked_left = match (&frame.message, &frame.request_id) {
        (ServerMessage::RoomLeft { room_id }, None) => Some(room_id.as_str()),
        _ => None,
    };
    let expected = c.expect_left.pop_front();
    let problem = match (expected, unasked_left) {
        (Some(want), Some(got)) if want == got => {
            out.coverage.hit("room_revoked");
            None
        }
        (Some(want), _) => Some(format!(
            "a refresh revoked {want}: its ROOM_LEFT must come next, got {}",
            describe(frame)
        )),
        (None, Some(got)) => Some(format!(
            "ROOM_LEFT {got} without a requestId, but no refresh revoked it"
        )),
        (None, None) => None,
    };
    if let Some(detail) = problem {
        c.expect_left.clear();
        let place = m.place(conn);
        out.fail("rooms", at, place, detail);
    }
}

fn describe(frame: &ServerFrame) -> String {
    let text = serde_json::to_string(&frame.message).unwrap_or_default();
    text.chars().take(120).collect()
}

/// `AUTH_SUCCESS` on `conn` answering `req` (a first authentication when
/// `refresh` is false): the token's claim is in force; a refresh owes the
/// `ROOM_LEFT`s of the private rooms it no longer grants.
pub fn on_auth_success(m: &mut Model, conn: ConnNo, req: Option<&Req>, refresh: bool) {
    let Some(c) = m.conns.get_mut(&conn) else {
        return;
    };
    c.claim = req.map(|r| r.claim.clone()).unwrap_or_default();
    if !refresh {
        return;
    }
    let user = c.user.clone().unwrap_or_default();
    // In room id order, as the server leaves them.
    c.expect_left = c
        .rooms
        .iter()
        .filter(|(id, r)| r.private && r.created_by != user && !c.claim.contains(*id))
        .map(|(id, _)| id.clone())
        .collect();
}

/// At the end: a connection still up, that a refresh owed `ROOM_LEFT`s
/// long enough ago, got them.
pub fn finish(m: &Model, out: &mut Out, end_ms: u64) {
    for (&conn, c) in &m.conns {
        if let Some(room) = c.expect_left.front()
            && c.live()
            && c.last_recv_at + m.cfg.delivery_slack_ms < end_ms
        {
            out.fail(
                "rooms",
                end_ms,
                Place {
                    room: Some(room.clone()),
                    ..m.place(conn)
                },
                "a refresh revoked the room, and its ROOM_LEFT never came".into(),
            );
        }
    }
}

/// A generated room id: `room_` and at least 16 base64url characters.
fn unguessable(id: &str) -> bool {
    id.strip_prefix("room_").is_some_and(|bits| {
        bits.len() >= 16
            && bits
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    })
}

/// A reply to `CREATE_ROOM`, `JOIN_ROOM` or a request naming a room.
pub fn on_reply(
    m: &mut Model,
    out: &mut Out,
    at: u64,
    conn: ConnNo,
    req: &Req,
    frame: &ServerFrame,
) {
    let Some(c) = m.conns.get(&conn) else {
        return;
    };
    let user = c.user.clone().unwrap_or_default();
    let place = |room: &str| Place {
        room: Some(room.to_owned()),
        ..m.place(conn)
    };
    let code = match &frame.message {
        ServerMessage::Error { code, .. } => Some(*code),
        _ => None,
    };
    match (req.kind.as_str(), &frame.message) {
        ("CREATE_ROOM", ServerMessage::RoomCreated { room, epoch }) => {
            // The room is what was asked for, with the defaults the
            // contract gives, made by the connection's user while the
            // request was handled.
            let kind = serde_json::to_value(room.kind).unwrap_or_default();
            let created = m.sim_ms(&room.created_at);
            let mut wrong = Vec::new();
            if req.name.as_deref().is_some_and(|n| n != room.name) {
                wrong.push(format!("name {:?} (asked {:?})", room.name, req.name));
            }
            if room.description != req.description.as_deref().unwrap_or("") {
                wrong.push(format!(
                    "description {:?} (asked {:?})",
                    room.description, req.description
                ));
            }
            if kind.as_str() != Some(req.payload_type.as_deref().unwrap_or("public")) {
                wrong.push(format!("type {kind} (asked {:?})", req.payload_type));
            }
            if room.created_by != user {
                wrong.push(format!(
                    "createdBy {} (the creator: {user})",
                    room.created_by
                ));
            }
            if created.is_none_or(|t| t < req.at || t > at) {
                wrong.push(format!(
                    "createdAt {} outside the request's {}..={at} ms",
                    room.created_at, req.at
                ));
            }
            if !wrong.is_empty() {
                out.fail(
                    "rooms",
                    at,
                    place(&room.id),
                    format!("ROOM_CREATED: {}", wrong.join(", ")),
                );
            }
            match req.room.as_deref() {
                Some(id) if !c.claim.contains(id) => out.fail(
                    "rooms",
                    at,
                    place(id),
                    "ROOM_CREATED for a chosen id outside the creator's rooms claim".into(),
                ),
                None if !unguessable(&room.id) => out.fail(
                    "rooms",
                    at,
                    place(&room.id),
                    format!("generated id {} is not room_ and 96 random bits", room.id),
                ),
                _ => {}
            }
            // Frames of other connections may arrive before the creator's
            // ROOM_CREATED, so an epoch already seen is fine as long as it is
            // this incarnation's: nobody saw it created, and it was created
            // at this room's `createdAt`.
            let recreated = m.known_max(&room.id).keys().any(|e| e != epoch);
            let run = c.run;
            let spot = place(&room.id);
            let log = m.log_entry(&room.id, epoch, run);
            let reused = log.created
                || log
                    .created_at
                    .as_ref()
                    .is_some_and(|at| *at != room.created_at);
            log.created = true;
            log.created_at
                .get_or_insert_with(|| room.created_at.clone());
            if reused {
                out.fail(
                    "rooms",
                    at,
                    spot,
                    format!("ROOM_CREATED in epoch {epoch}, which the room had before"),
                );
            } else if recreated {
                out.coverage.hit("room_recreated");
            }
        }
        ("CREATE_ROOM", _) => {
            let Some(id) = req.room.as_deref() else {
                return;
            };
            let granted = c.claim.contains(id);
            match code {
                Some(ErrorCode::RoomExists) if !granted => out.fail(
                    "rooms",
                    at,
                    place(id),
                    "ROOM_EXISTS for a chosen id outside the creator's rooms claim (FORBIDDEN comes first)".into(),
                ),
                Some(ErrorCode::Forbidden) if !granted => out.coverage.hit("squat_refused"),
                _ => {}
            }
        }
        ("JOIN_ROOM", ServerMessage::RoomJoined { room, epoch, .. }) => {
            // A client resuming a room that was deleted and created again
            // since (in this server run) is told the new epoch.
            if let Some(asked) = req.epoch.as_deref()
                && asked != epoch
                && m.logs
                    .get(&(room.id.clone(), asked.to_owned()))
                    .is_some_and(|log| log.run == c.run)
            {
                out.coverage.hit("resume_room_recreated");
            }
            let already = c.rooms.contains_key(&room.id);
            if !already && !grants(&c.claim, &user, room) {
                out.fail(
                    "rooms",
                    at,
                    place(&room.id),
                    format!(
                        "joined private room {} created by {} without a grant (claim {:?})",
                        room.id, room.created_by, c.claim
                    ),
                );
            }
        }
        ("JOIN_ROOM", _) if code == Some(ErrorCode::Forbidden) => {
            let Some(id) = req.room.as_deref() else {
                return;
            };
            if c.claim.contains(id) || m.system_rooms.contains(id) {
                out.fail(
                    "rooms",
                    at,
                    place(id),
                    format!("JOIN_ROOM {id} FORBIDDEN although the claim or the room grants it"),
                );
            }
        }
        _ => {}
    }
    if code == Some(ErrorCode::RoomNotFound) && req.kind == "JOIN_ROOM" && req.since_seq.is_some() {
        out.coverage.hit("resume_room_gone");
    }
    if code == Some(ErrorCode::RoomNotFound)
        && let Some(id) = req.room.as_deref()
        && req.kind != "CREATE_ROOM"
        && let Some(seen) = req.member_seen
    {
        room_not_found(m, out, at, conn, id, seen);
    }
}

/// Every room object a frame shows (`ROOM_CREATED`, `ROOM_JOINED`,
/// `ROOM_LIST`): one incarnation of a room keeps its name, description,
/// type, creator and `createdAt`, which is not in the future; a
/// `ROOM_JOINED` or `ROOM_CREATED` counts at least the connection's user.
/// A `ROOM_LIST` shows public rooms and the private rooms the connection may
/// join: no private room it may not, and every default room and every room
/// the connection is in (a room with a member is not deleted).
pub fn on_room_objects(m: &mut Model, out: &mut Out, at: u64, conn: ConnNo, frame: &ServerFrame) {
    let rooms: Vec<&RoomInfo> = match &frame.message {
        ServerMessage::RoomCreated { room, .. } | ServerMessage::RoomJoined { room, .. } => {
            vec![room]
        }
        ServerMessage::RoomList { rooms } => rooms.iter().collect(),
        _ => return,
    };
    for room in &rooms {
        let place = Place {
            room: Some(room.id.clone()),
            ..m.place(conn)
        };
        if let Some(detail) = m.room_facts(conn, room) {
            out.fail("rooms", at, place.clone(), detail);
        }
        if m.sim_ms(&room.created_at).is_some_and(|t| t > at) {
            out.fail(
                "rooms",
                at,
                place.clone(),
                format!("createdAt {} is in the future", room.created_at),
            );
        }
        if room.member_count == 0 && !matches!(frame.message, ServerMessage::RoomList { .. }) {
            out.fail(
                "presence",
                at,
                place,
                "memberCount 0 for a room the connection is in".into(),
            );
        }
    }
    let ServerMessage::RoomList { .. } = &frame.message else {
        return;
    };
    out.coverage.hit("room_list");
    let Some(c) = m.conns.get(&conn) else {
        return;
    };
    let user = c.user.clone().unwrap_or_default();
    let listed: std::collections::BTreeSet<&str> = rooms.iter().map(|r| r.id.as_str()).collect();
    for room in &rooms {
        if !grants(&c.claim, &user, room) {
            out.fail(
                "rooms",
                at,
                Place {
                    room: Some(room.id.clone()),
                    ..m.place(conn)
                },
                format!(
                    "ROOM_LIST shows private room {} (created by {}) that the claim {:?} does not grant",
                    room.id, room.created_by, c.claim
                ),
            );
        }
        if c.rooms.contains_key(&room.id) && room.member_count == 0 {
            out.fail(
                "presence",
                at,
                m.place_room(conn, &room.id, None),
                "ROOM_LIST counts no member in a room the connection is in".into(),
            );
        }
    }
    for id in m.system_rooms.iter().chain(c.rooms.keys()) {
        if !listed.contains(id.as_str()) {
            out.fail(
                "rooms",
                at,
                m.place_room(conn, id, None),
                format!("ROOM_LIST leaves out {id}, a default room or one the connection is in"),
            );
        }
    }
}

/// Whether a connection of `user` whose claim is `claim` may join `room`.
fn grants(claim: &std::collections::BTreeSet<String>, user: &str, room: &RoomInfo) -> bool {
    room.kind == chat_flow::protocol::RoomKind::Public
        || room.created_by == user
        || claim.contains(&room.id)
}

/// `ROOM_NOT_FOUND` for `room` at `at`, answering a request written after a
/// member was sent a frame that arrived at `seen`: the room had a member
/// then, so it may only be gone `ROOM_IDLE_TTL_MS` later.
fn room_not_found(m: &Model, out: &mut Out, at: u64, conn: ConnNo, room: &str, seen: u64) {
    out.coverage.hit("room_deleted");
    let ttl = m.cfg.room_idle_ttl_ms;
    // The frame that proves a member was sent at most this long before it
    // arrived.
    let slack = m.cfg.delivery_slack_ms + m.cfg.notice_delay_ms;
    let earliest = seen.saturating_sub(slack).saturating_add(ttl);
    if ttl == 0 || at < earliest {
        let when = if ttl == 0 {
            "with ROOM_IDLE_TTL_MS 0".to_owned()
        } else {
            format!("before {earliest} ms")
        };
        out.fail(
            "rooms",
            at,
            Place {
                room: Some(room.to_owned()),
                ..m.place(conn)
            },
            format!(
                "ROOM_NOT_FOUND {when}, but a member of this run was sent a frame at {seen} ms"
            ),
        );
    }
}
