//! `history`: what a room retains is bounded by `HISTORY_LIMIT`, contiguous,
//! and equal to the newest accepted messages; `GET_HISTORY` pages agree.
//!
//! `recovery`: `recovered: true` means nothing is missing — the listed
//! messages continue exactly after `sinceSeq`, in the epoch the client
//! named — and `recovered: false` is only said when something was.

use chat_flow::protocol::server::ChatMessage;

use super::Out;
use super::model::{Model, Req};
use crate::obs::ConnNo;

/// Checks that `messages` are consecutive `seq`s; returns false (after
/// reporting) if not.
fn contiguous(
    m: &Model,
    out: &mut Out,
    at: u64,
    conn: ConnNo,
    room: &str,
    what: &str,
    messages: &[ChatMessage],
) -> bool {
    for w in messages.windows(2) {
        if w[1].seq != w[0].seq + 1 {
            out.fail(
                "history",
                at,
                m.place_room(conn, room, Some(w[1].seq)),
                format!("{what} lists seq {} right after seq {}", w[1].seq, w[0].seq),
            );
            return false;
        }
    }
    true
}

/// The answer reflects at least everything observed before the request was
/// written (the server accepted those before it read the request).
#[allow(clippy::too_many_arguments)]
fn not_stale(
    oracle: &'static str,
    m: &Model,
    out: &mut Out,
    at: u64,
    conn: ConnNo,
    room: &str,
    epoch: &str,
    what: &str,
    newest: u64,
    req: Option<&Req>,
) {
    let Some(known) = req.and_then(|r| r.known_max.get(epoch)).copied() else {
        return;
    };
    if newest < known {
        out.fail(
            oracle,
            at,
            m.place_room(conn, room, Some(newest)),
            format!(
                "{what} ends at seq {newest}, but seq {known} was delivered before the request"
            ),
        );
    }
}

/// `ROOM_JOINED` (its messages already registered).
#[allow(clippy::too_many_arguments)]
pub fn on_joined(
    m: &Model,
    out: &mut Out,
    at: u64,
    conn: ConnNo,
    room: &str,
    epoch: &str,
    messages: &[ChatMessage],
    recovered: Option<bool>,
    req: Option<&Req>,
) {
    let limit = m.cfg.history_limit;
    let first = messages.first().map(|x| x.seq);
    let last = messages.last().map(|x| x.seq);
    if let Some(req) = req
        && (req.kind != "JOIN_ROOM" || req.room.as_deref() != Some(room))
    {
        out.fail(
            "request-order",
            at,
            m.place_room(conn, room, None),
            format!("ROOM_JOINED answers a {} for {:?}", req.kind, req.room),
        );
        return;
    }
    if messages.len() > limit {
        out.fail(
            "history",
            at,
            m.place_room(conn, room, last),
            format!(
                "ROOM_JOINED lists {} messages, more than HISTORY_LIMIT {limit}",
                messages.len()
            ),
        );
    }
    if !contiguous(m, out, at, conn, room, "ROOM_JOINED", messages) {
        return;
    }
    let since = req.and_then(|r| r.since_seq);
    match (since, recovered) {
        (None, None) => {}
        (None, Some(_)) => out.fail(
            "recovery",
            at,
            m.place_room(conn, room, None),
            "recovered given although no sinceSeq was sent".into(),
        ),
        (Some(_), None) => out.fail(
            "recovery",
            at,
            m.place_room(conn, room, None),
            "no recovered flag although sinceSeq was sent".into(),
        ),
        (Some(n), Some(true)) => {
            if let Some(e) = req.and_then(|r| r.epoch.as_deref())
                && e != epoch
            {
                out.fail(
                    "recovery",
                    at,
                    m.place_room(conn, room, None),
                    format!("recovered: true across epochs (asked {e}, room is {epoch})"),
                );
            }
            if let Some(f) = first
                && f != n + 1
            {
                out.fail(
                    "recovery",
                    at,
                    m.place_room(conn, room, Some(f)),
                    format!("recovered: true after sinceSeq {n}, but the first message is seq {f}"),
                );
            }
            not_stale(
                "recovery",
                m,
                out,
                at,
                conn,
                room,
                epoch,
                "recovered ROOM_JOINED",
                last.unwrap_or(n),
                req,
            );
        }
        (Some(n), Some(false)) => {
            out.coverage.hit("recovered_false");
            let same_epoch = req
                .and_then(|r| r.epoch.as_deref())
                .is_none_or(|e| e == epoch);
            if same_epoch
                && let (Some(f), Some(l)) = (first, last)
                && n + 1 >= f
                && n <= l
            {
                out.fail(
                    "recovery",
                    at,
                    m.place_room(conn, room, Some(f)),
                    format!(
                        "recovered: false although seqs {f}..={l} of the same epoch cover everything after sinceSeq {n}"
                    ),
                );
            }
        }
    }
    if recovered != Some(true) {
        // Every retained message is listed: only a full history evicts.
        if let Some(f) = first
            && f > 1
        {
            out.coverage.hit("history_eviction");
            if messages.len() != limit {
                out.fail(
                    "history",
                    at,
                    m.place_room(conn, room, Some(f)),
                    format!(
                        "ROOM_JOINED starts at seq {f} (older ones evicted) but lists only {} of HISTORY_LIMIT {limit}",
                        messages.len()
                    ),
                );
            }
        }
        not_stale(
            "history",
            m,
            out,
            at,
            conn,
            room,
            epoch,
            "ROOM_JOINED",
            last.unwrap_or(0),
            req,
        );
    }
}

/// `HISTORY` (its messages already registered).
#[allow(clippy::too_many_arguments)]
pub fn on_history(
    m: &Model,
    out: &mut Out,
    at: u64,
    conn: ConnNo,
    room: &str,
    epoch: &str,
    messages: &[ChatMessage],
    has_more: bool,
    req: Option<&Req>,
) {
    let Some(req) = req else {
        out.fail(
            "request-order",
            at,
            m.place_room(conn, room, None),
            "HISTORY without a requestId".into(),
        );
        return;
    };
    if req.kind != "GET_HISTORY" || req.room.as_deref() != Some(room) {
        out.fail(
            "request-order",
            at,
            m.place_room(conn, room, None),
            format!("HISTORY answers a {} for {:?}", req.kind, req.room),
        );
        return;
    }
    let page = req.limit.unwrap_or(50) as usize;
    let bound = page.min(m.cfg.history_limit);
    let first = messages.first().map(|x| x.seq);
    let last = messages.last().map(|x| x.seq);
    if messages.len() > bound {
        out.fail(
            "history",
            at,
            m.place_room(conn, room, last),
            format!(
                "HISTORY lists {} messages (limit {page}, HISTORY_LIMIT {})",
                messages.len(),
                m.cfg.history_limit
            ),
        );
    }
    if !contiguous(m, out, at, conn, room, "HISTORY", messages) {
        return;
    }
    if let (Some(before), Some(l)) = (req.before_seq, last)
        && l >= before
    {
        out.fail(
            "history",
            at,
            m.place_room(conn, room, Some(l)),
            format!("HISTORY before seq {before} lists seq {l}"),
        );
    }
    if has_more && first.is_none_or(|f| f <= 1) {
        out.fail(
            "history",
            at,
            m.place_room(conn, room, first),
            "hasMore although nothing older can exist".into(),
        );
    }
    if has_more && messages.len() < page {
        out.fail(
            "history",
            at,
            m.place_room(conn, room, first),
            format!("hasMore with only {} of {page} messages", messages.len()),
        );
    }
    if !has_more
        && let Some(f) = first
        && f > 1
    {
        out.coverage.hit("history_eviction");
    }
    if req.before_seq.is_none() {
        not_stale(
            "history",
            m,
            out,
            at,
            conn,
            room,
            epoch,
            "HISTORY",
            last.unwrap_or(0),
            Some(req),
        );
    }
}
