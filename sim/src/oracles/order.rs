//! `seq-order`: each room epoch has one total order — a `seq` always names
//! the same message wherever it is seen, a message id always has the same
//! `seq` — and every connection joined to a room receives its new messages
//! exactly once, in `seq` order, with no gaps.
//!
//! `no-dup-retry`: a resend with the same `(user, clientMessageId)` never
//! creates a second message while the first is still in history.

use chat_flow::protocol::server::ChatMessage;

use super::model::{ConnRoom, Model, Msg, Req};
use super::rate::Rate;
use super::{Out, Place};
use crate::obs::ConnNo;

/// Notes `msg` (seen on `conn`, in `epoch`) as accepted; checks that it
/// agrees with every other sighting of the same `seq` and id.
pub fn register(
    m: &mut Model,
    rate: &mut Rate,
    out: &mut Out,
    at: u64,
    conn: ConnNo,
    epoch: &str,
    msg: &ChatMessage,
) {
    let place = m.place_room(conn, &msg.room_id, Some(msg.seq));
    let slack = m.cfg.timestamp_slack_ms;
    let run = m.conns.get(&conn).map_or(0, |c| c.run);
    let ts = match m.sim_ms(&msg.timestamp) {
        Some(ts) => ts,
        None => {
            out.fail(
                "protocol",
                at,
                place,
                format!("bad timestamp {:?}", msg.timestamp),
            );
            return;
        }
    };
    if msg.seq == 0 {
        out.fail("seq-order", at, place, "seq 0 (seqs start at 1)".into());
        return;
    }
    let key = (msg.room_id.clone(), epoch.to_owned());
    if let Some((room, e, seq)) = m.ids.get(&msg.id)
        && (room != &msg.room_id || e != epoch || *seq != msg.seq)
    {
        out.fail(
            "seq-order",
            at,
            place.clone(),
            format!(
                "message id {} seen before as room {room} epoch {e} seq {seq}",
                msg.id
            ),
        );
    }
    let history_limit = m.cfg.history_limit as u64;
    let log = m.log_entry(&key.0, &key.1, run);
    if log.run != run {
        out.fail(
            "seq-order",
            at,
            place.clone(),
            format!("epoch {epoch} seen in server runs {} and {run}", log.run),
        );
    }
    if let Some(known) = log.msgs.get(&msg.seq) {
        if known.message != *msg {
            out.fail(
                "seq-order",
                at,
                place,
                format!(
                    "two messages with one seq: {:?} and {:?}",
                    known.message, msg
                ),
            );
        }
        return;
    }
    // A new accepted message: stamped no later than it was seen, and in
    // `seq` order (the server accepts a room's messages one after another).
    if ts > at {
        out.fail(
            "seq-order",
            at,
            place.clone(),
            format!("timestamp {} is in the future", msg.timestamp),
        );
    }
    let before = log.msgs.range(..msg.seq).next_back();
    let after = log.msgs.range(msg.seq + 1..).next();
    for (seq, other) in before.into_iter().chain(after) {
        if (*seq < msg.seq && other.ts > ts + slack) || (*seq > msg.seq && other.ts + slack < ts) {
            out.fail(
                "seq-order",
                at,
                place.clone(),
                format!(
                    "timestamp {} of seq {} out of order with seq {seq}'s {}",
                    msg.timestamp, msg.seq, other.message.timestamp
                ),
            );
        }
    }
    if let Some(cmid) = &msg.client_message_id {
        let seqs = log
            .by_client_id
            .entry((msg.user_id.clone(), cmid.clone()))
            .or_default();
        for &other in seqs.iter() {
            if other.abs_diff(msg.seq) <= history_limit {
                out.fail(
                    "no-dup-retry",
                    at,
                    place.clone(),
                    format!(
                        "clientMessageId {cmid} of {} stored twice: seq {other} and {} (history holds {history_limit})",
                        msg.user_id, msg.seq
                    ),
                );
            }
        }
        seqs.push(msg.seq);
    }
    log.msgs.insert(
        msg.seq,
        Msg {
            message: msg.clone(),
            ts,
        },
    );
    m.ids.insert(
        msg.id.clone(),
        (msg.room_id.clone(), epoch.to_owned(), msg.seq),
    );
    rate.on_accepted(out, at, place, run, &msg.user_id, ts);
}

/// `ROOM_JOINED` on `conn`: the connection now follows `room` from the last
/// `seq` it was given (or from the `sinceSeq` it asked for, when recovery
/// was complete and nothing is new: `recovered_since`).
#[allow(clippy::too_many_arguments)]
pub fn on_joined(
    m: &mut Model,
    out: &mut Out,
    at: u64,
    conn: ConnNo,
    room: &str,
    epoch: &str,
    messages: &[ChatMessage],
    last_before: Option<u64>,
    recovered_since: Option<u64>,
) {
    let last_listed = messages.last().map(|x| x.seq);
    let place = m.place_room(conn, room, last_listed);
    let Some(c) = m.conns.get_mut(&conn) else {
        return;
    };
    match c.rooms.get_mut(room) {
        Some(r) => {
            // Joined again while joined: what is listed ends where the
            // connection already is.
            if r.epoch != epoch {
                out.fail(
                    "seq-order",
                    at,
                    place,
                    format!(
                        "epoch changed from {} to {epoch} on one connection",
                        r.epoch
                    ),
                );
            } else if let Some(last) = last_listed
                && Some(last) != last_before
            {
                out.fail(
                    "seq-order",
                    at,
                    place,
                    format!(
                        "re-join lists up to seq {last}, the connection had received up to {:?}",
                        last_before
                    ),
                );
            }
        }
        None => {
            let last = last_listed.or(recovered_since).unwrap_or(0);
            c.rooms.insert(
                room.to_owned(),
                ConnRoom {
                    epoch: epoch.to_owned(),
                    last,
                    joined_at: at,
                    ..ConnRoom::default()
                },
            );
        }
    }
}

/// `NEW_MESSAGE` on `conn` (already registered).
pub fn on_new_message(
    m: &mut Model,
    out: &mut Out,
    at: u64,
    conn: ConnNo,
    msg: &ChatMessage,
    req: Option<&Req>,
) {
    let place = m.place_room(conn, &msg.room_id, Some(msg.seq));
    let user = m.user_of(conn).map(str::to_owned);
    let name = m.conns.get(&conn).and_then(|c| c.username.clone());
    let ts = m.sim_ms(&msg.timestamp);
    let Some(r) = m
        .conns
        .get_mut(&conn)
        .and_then(|c| c.rooms.get_mut(&msg.room_id))
    else {
        return;
    };
    if let Some(req) = req {
        // The sender's copy: it answers its SEND_MESSAGE.
        let ok = req.kind == "SEND_MESSAGE"
            && req.room.as_deref() == Some(msg.room_id.as_str())
            && req.client_message_id == msg.client_message_id
            && user.as_deref() == Some(msg.user_id.as_str());
        if !ok {
            out.fail(
                "seq-order",
                at,
                place.clone(),
                format!(
                    "acknowledgement {:?}/{:?} of {} does not match the request {:?} {:?}/{:?}",
                    msg.room_id,
                    msg.client_message_id,
                    msg.user_id,
                    req.kind,
                    req.room,
                    req.client_message_id
                ),
            );
        }
    }
    if let Some(req) = req
        && msg.seq > r.last
    {
        // A new message: it is what the request sent, by the connection's
        // user under its name, stamped while the request was handled.
        let kind = serde_json::to_value(msg.kind).unwrap_or_default();
        let mut wrong = Vec::new();
        if req.content.as_deref().is_some_and(|c| c != msg.content) {
            wrong.push(format!(
                "content {:?} (sent {:?})",
                msg.content, req.content
            ));
        }
        if kind.as_str() != Some(req.payload_type.as_deref().unwrap_or("text")) {
            wrong.push(format!("type {kind} (sent {:?})", req.payload_type));
        }
        if name.as_deref().is_some_and(|n| n != msg.username) {
            wrong.push(format!(
                "username {:?} (the connection's: {name:?})",
                msg.username
            ));
        }
        if ts.is_some_and(|ts| ts < req.at || ts > at) {
            wrong.push(format!(
                "timestamp {} outside the request's {}..={at} ms",
                msg.timestamp, req.at
            ));
        }
        if !wrong.is_empty() {
            out.fail(
                "seq-order",
                at,
                place.clone(),
                format!("acknowledgement of a new message: {}", wrong.join(", ")),
            );
        }
    }
    if msg.seq > r.last {
        if msg.seq != r.last + 1 {
            out.fail(
                "seq-order",
                at,
                place,
                format!(
                    "gap: after seq {} the connection received seq {}",
                    r.last, msg.seq
                ),
            );
        }
        r.last = msg.seq;
        if !r.users.contains(&msg.user_id) {
            out.fail(
                "presence",
                at,
                m.place_room(conn, &msg.room_id, Some(msg.seq)),
                format!("new message from {} who is not present", msg.user_id),
            );
        }
    } else if req.is_some() {
        // A resend answered from history: the original, again, to the
        // sender alone.
        out.coverage.hit("retry_deduplicated");
    } else {
        out.fail(
            "seq-order",
            at,
            place,
            format!(
                "broadcast of seq {} after the connection had seq {}",
                msg.seq, r.last
            ),
        );
    }
}

/// Place of a message in its room, for reporting.
pub fn msg_place(client: Option<u32>, msg: &ChatMessage) -> Place {
    Place {
        client,
        conn: None,
        room: Some(msg.room_id.clone()),
        seq: Some(msg.seq),
    }
}
