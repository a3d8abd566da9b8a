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
    m: &mut Model,
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
    // What older retained messages exist depends on the room's last seq
    // when the server read it, which later observations bound best: judged
    // at the end.
    m.pages.push(Page {
        at,
        written: req.at,
        conn,
        room: room.to_owned(),
        epoch: epoch.to_owned(),
        first,
        last,
        len: messages.len(),
        page,
        has_more,
        before_seq: req.before_seq,
        known: req.known_max.get(epoch).copied().unwrap_or(0),
    });
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

/// A `HISTORY` reply, kept for the end of the run.
#[derive(Debug, Clone)]
pub struct Page {
    /// When it arrived.
    pub at: u64,
    /// When its `GET_HISTORY` was written.
    pub written: u64,
    /// The connection.
    pub conn: ConnNo,
    /// The room.
    pub room: String,
    /// The epoch the connection was in.
    pub epoch: String,
    /// The first and last `seq` listed.
    pub first: Option<u64>,
    /// The last `seq` listed.
    pub last: Option<u64>,
    /// How many messages were listed.
    pub len: usize,
    /// The page size asked for (`limit`, default 50).
    pub page: usize,
    /// `hasMore`.
    pub has_more: bool,
    /// `beforeSeq`.
    pub before_seq: Option<u64>,
    /// The highest `seq` of the epoch observed before the request.
    pub known: u64,
}

/// The pages against everything observed: the room's last `seq` `L` when
/// the server read it is at least what was observed before the request (and
/// what the page lists), and below every `seq` stamped after the reply
/// arrived (a message accepted before the read is stamped before it); with
/// no `beforeSeq` the page ends at `L` itself. The room then retains
/// `max(1, L - HISTORY_LIMIT + 1)..=L`, so: a page lists nothing evicted;
/// when the `seq` before its first is certainly retained, the page is full
/// and `hasMore` is true; when its first is certainly the oldest retained,
/// `hasMore` is false; an empty page leaves nothing retained before
/// `beforeSeq` unlisted.
pub fn finish(m: &Model, out: &mut Out) {
    let h = m.cfg.history_limit as u64;
    for p in &m.pages {
        let log = m.logs.get(&(p.room.clone(), p.epoch.clone()));
        // Bounds on L.
        let mut low = p.known.max(p.last.unwrap_or(0));
        let mut high = log
            .and_then(|log| log.msgs.iter().find(|(_, x)| x.ts > p.at))
            .map(|(seq, _)| seq - 1);
        let exact = match (p.before_seq, p.last) {
            (None, Some(l)) => Some(l),
            (Some(b), Some(l)) if l + 1 < b => Some(l),
            _ => None,
        };
        if let Some(l) = exact {
            low = low.max(l);
            high = Some(high.map_or(l, |x| x.min(l)));
        }
        // Seqs retained for certain: from the latest possible oldest one
        // (after the most messages) to what was observed before.
        let oldest_low = low.saturating_sub(h) + 1;
        let oldest_high = high.map(|x| x.saturating_sub(h) + 1);
        let place = m.place_room(p.conn, &p.room, p.first);
        let mut fail = |detail: String| out.fail("history", p.at, place.clone(), detail);
        match p.first {
            Some(f) => {
                if f < oldest_low {
                    fail(format!(
                        "HISTORY lists seq {f}, evicted once the room reached seq {low} (HISTORY_LIMIT {h})"
                    ));
                }
                let older_retained = f >= 2 && oldest_high.is_some_and(|o| f > o);
                if older_retained && p.len < p.page {
                    fail(format!(
                        "HISTORY lists {} of {} messages from seq {f}, but seq {} was retained",
                        p.len,
                        p.page,
                        f - 1
                    ));
                }
                if older_retained && !p.has_more {
                    fail(format!(
                        "hasMore false, but seq {} (before the first listed, {f}) was retained (the room was at seq {}..={}, HISTORY_LIMIT {h})",
                        f - 1,
                        low,
                        high.unwrap_or(low)
                    ));
                }
                if p.has_more && f <= oldest_low {
                    fail(format!(
                        "hasMore true, but seq {f} was the oldest retained (the room was at seq {low} or more, HISTORY_LIMIT {h})"
                    ));
                }
                // The page ends at min(beforeSeq - 1, L).
                let must_reach = p.before_seq.map_or(low, |b| low.min(b.saturating_sub(1)));
                if let Some(l) = p.last
                    && l < must_reach
                {
                    fail(format!(
                        "HISTORY ends at seq {l}, but seq {must_reach} existed{}",
                        p.before_seq
                            .map_or(String::new(), |b| format!(" (beforeSeq {b})"))
                    ));
                }
            }
            None => {
                // Nothing listed: nothing retained before beforeSeq.
                if let (Some(b), Some(o)) = (p.before_seq, oldest_high)
                    && b >= 2
                    && b > o
                    && b - 1 <= low
                {
                    fail(format!(
                        "an empty HISTORY before seq {b}, but seq {} was retained",
                        b - 1
                    ));
                }
            }
        }
    }
}
