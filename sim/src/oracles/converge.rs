//! `presence-converges`: after the last fault of a run, within a bound,
//! every member's view of who is in a room (its `ROOM_JOINED.users` and
//! the `USER_JOINED`/`USER_LEFT` since, kept by `presence`) is the set of
//! users who truly have an authenticated connection joined to that room —
//! on any node. The users of a crashed node leave every view.
//!
//! `presence` checks that the notices agree with each other as they come,
//! and (in the liveness phase) the library clients' lists at the very end;
//! this oracle puts a time on it, for every connection and all along the
//! run after its last fault, with the crashed nodes known.
//!
//! The truth, per user, is judged from its connections, and only where it
//! is certain:
//!
//! - **present**: a connection of the user (whose client reads promptly)
//!   is up, joined to the room in the observer's epoch, not joining or
//!   leaving, on a node that has not crashed since — and it is shown to
//!   have still been in at the sample by a frame it gets that the server
//!   wrote after it (arrival − the delivery slack ≥ the sample): only then
//!   is a sample that missed the user a violation;
//! - **absent**: every connection of the user that tried the room is out of
//!   it — `ROOM_LEFT` arrived, the server closed it (a close frame, the
//!   stream's end from the server's side), or its node crashed at least
//!   `NODE_TTL_MS + NODE_TTL_MS / 3 + REDIS_TIMEOUT_MS` ago (its lease runs
//!   out, the next heartbeat of a live node clears it, in one store call);
//!   or it never joined;
//! - anything else (a join or leave on its way, a stream the client dropped,
//!   a slow reader, a connection in another epoch) is unknown and not
//!   judged.
//!
//! An observer (up, authenticated, reading promptly, on a live node) is
//! sampled at each frame it receives (every 100 ms at most), from `last
//! fault + bound` on, where `bound` = `NODE_TTL_MS + NODE_TTL_MS / 3 +
//! REDIS_TIMEOUT_MS` + the notice lag (0 + the notice lag on one node),
//! and the notice lag = `PRESENCE_DELAY_MS` + the delivery slack + (in a
//! cluster) `REDIS_TIMEOUT_MS` for the store's event. A user certainly
//! present but missing from its list, or certainly absent but listed, is a
//! violation when the truth has not changed, the observer's own list was
//! not reset (`ROOM_JOINED`), and no notice about that user reached the
//! observer, for at least the notice lag (a notice may come before the
//! close frame that explains it). A fault drops what was found before it.

use std::collections::{BTreeMap, BTreeSet};

use super::model::{Conn, Model};
use super::{Out, Place, RosterEntry};
use crate::obs::ConnNo;

/// What a user is in a room, as far as can be known, and since when
/// without a break.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Truth {
    Present(u64),
    Absent(u64),
    Unknown,
}

impl Truth {
    /// The user's truth from two of its connections': present if either
    /// is (since the earlier: that connection has been in all along),
    /// else unknown if either is, else absent (since the later end).
    fn and(self, other: Truth) -> Truth {
        match (self, other) {
            (Truth::Present(a), Truth::Present(b)) => Truth::Present(a.min(b)),
            (Truth::Present(a), _) | (_, Truth::Present(a)) => Truth::Present(a),
            (Truth::Unknown, _) | (_, Truth::Unknown) => Truth::Unknown,
            (Truth::Absent(a), Truth::Absent(b)) => Truth::Absent(a.max(b)),
        }
    }
}

/// A violation waiting for the end of the run (a later fault drops it).
#[derive(Debug, Clone)]
struct Candidate {
    at: u64,
    place: Place,
    detail: String,
}

/// A user missing from an observer's list at a sample, while a connection
/// of the user was in the room: a violation once that connection is shown
/// to have still been in at the sample (a frame it receives that the
/// server sent after the sample).
#[derive(Debug, Clone)]
struct Missing {
    observer: ConnNo,
    at: u64,
    epoch: String,
    /// The candidate connection's `joined_at` must be at most this.
    joined_by: u64,
    place: Place,
    detail: String,
}

/// The state of `presence-converges`.
#[derive(Debug, Default)]
pub struct Converge {
    /// Clients that do not read their socket promptly (their frames arrive
    /// late, so their arrival proves nothing of when they were sent).
    slow: BTreeSet<u32>,
    /// Room → every connection that asked to join it or was put in it.
    room_conns: BTreeMap<String, BTreeSet<ConnNo>>,
    /// `(conn, room)` → when its `ROOM_LEFT` arrived (while it is out).
    left_at: BTreeMap<(ConnNo, String), u64>,
    /// `(observer, room, user)` → when a notice about the user last changed
    /// the observer's list.
    noticed: BTreeMap<(ConnNo, String, String), u64>,
    /// `(user, room)` → missing users waiting for their proof (one per
    /// observer).
    missing: BTreeMap<(String, String), Vec<Missing>>,
    /// Reported already (since the last fault).
    reported: BTreeSet<(ConnNo, String, String, bool)>,
    /// Violations found since the last fault.
    candidates: Vec<Candidate>,
    /// Observer → its last sample.
    sampled: BTreeMap<ConnNo, u64>,
    /// The last fault.
    last_fault: u64,
}

/// Least time between two samples of one observer.
const SAMPLE_EVERY_MS: u64 = 100;

/// How long a presence change may take to reach a member: the notice may be
/// held `PRESENCE_DELAY_MS`, travels within the delivery slack, and in a
/// cluster comes from the store's event (within a store call's time).
fn notice_lag(m: &Model) -> u64 {
    m.cfg.notice_delay_ms + m.cfg.delivery_slack_ms + m.topology.store_timeout_ms()
}

/// After the last fault, how long the views have to be right.
pub fn bound_ms(m: &Model) -> u64 {
    m.topology.crash_removal_ms() + notice_lag(m)
}

/// When the server certainly had `c` out of every room: its node crashed
/// (plus the time the other nodes take to clear it), or the server closed
/// it.
fn certain_end(m: &Model, c: &Conn) -> Option<u64> {
    if let Some(crash) = m.topology.crashed_after(c.node, c.dial_at) {
        return Some(crash + m.topology.crash_removal_ms());
    }
    let by_server = c
        .ended_at
        .filter(|_| matches!(c.end_how, Some("eof" | "error")));
    match (c.closed_at, by_server) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

impl Converge {
    /// The oracle for clients `roster`.
    pub fn new(roster: &[RosterEntry]) -> Converge {
        Converge {
            slow: roster
                .iter()
                .enumerate()
                .filter(|(_, r)| {
                    matches!(
                        r,
                        RosterEntry::Raw {
                            reads_promptly: false
                        }
                    )
                })
                .map(|(i, _)| i as u32)
                .collect(),
            ..Converge::default()
        }
    }

    /// A fault: what was seen before it does not count.
    pub fn on_fault(&mut self, at: u64) {
        self.last_fault = at;
        self.reported.clear();
        self.candidates.clear();
        self.missing.clear();
    }

    /// `conn` asked to join (or create) `room`.
    pub fn on_join_sent(&mut self, conn: ConnNo, room: &str) {
        self.room_conns
            .entry(room.to_owned())
            .or_default()
            .insert(conn);
    }

    /// `conn` is in `room` (`ROOM_JOINED`, `ROOM_CREATED`).
    pub fn on_joined(&mut self, conn: ConnNo, room: &str) {
        self.on_join_sent(conn, room);
        self.left_at.remove(&(conn, room.to_owned()));
    }

    /// A `USER_JOINED`/`USER_LEFT` about `user` arrived on `conn`.
    pub fn on_notice(&mut self, at: u64, conn: ConnNo, room: &str, user: &str) {
        self.noticed
            .insert((conn, room.to_owned(), user.to_owned()), at);
    }

    /// `ROOM_LEFT` for `room` arrived on `conn`.
    pub fn on_left(&mut self, at: u64, conn: ConnNo, room: &str) {
        self.left_at.insert((conn, room.to_owned()), at);
    }

    fn prompt(&self, c: &Conn) -> bool {
        !self.slow.contains(&c.client)
    }

    /// What connection `d` says of its user in `room` at `t`, for an
    /// observer in `epoch`: present (since its join) when it is in the
    /// room as far as its client knows (to be proven by a later frame).
    fn conn_truth(&self, m: &Model, d: ConnNo, room: &str, epoch: &str, t: u64) -> Truth {
        let Some(c) = m.conns.get(&d) else {
            return Truth::Absent(0);
        };
        if let Some(end) = certain_end(m, c) {
            return if end <= t {
                Truth::Absent(end)
            } else {
                Truth::Unknown
            };
        }
        if c.ended_at.is_some() || c.closed || !self.prompt(c) {
            // The client dropped it (the server may not know yet), or its
            // frames arrive late.
            return Truth::Unknown;
        }
        if c.open_at.is_none() {
            return Truth::Absent(0);
        }
        let on_its_way = c.pending.iter().any(|r| {
            matches!(r.kind.as_str(), "JOIN_ROOM" | "CREATE_ROOM" | "LEAVE_ROOM")
                && r.room.as_deref() == Some(room)
        });
        if on_its_way {
            return Truth::Unknown;
        }
        match c.rooms.get(room) {
            Some(r) if r.epoch == epoch => Truth::Present(r.joined_at),
            Some(_) => Truth::Unknown,
            None => Truth::Absent(
                self.left_at
                    .get(&(d, room.to_owned()))
                    .copied()
                    .unwrap_or(0),
            ),
        }
    }

    /// A frame from the server (text or control) arrived on `conn` at `at`:
    /// it proves `conn` was still open, hence in its rooms, when the server
    /// sent it (at least `at` − the delivery slack), which confirms the
    /// samples that missed its user before then; then `conn` samples its
    /// own views.
    pub fn on_frame(&mut self, m: &Model, at: u64, conn: ConnNo) {
        let Some(c) = m.conns.get(&conn) else {
            return;
        };
        if let Some(user) = c.user.as_deref()
            && self.prompt(c)
            && !c.closed
        {
            let sent_by = at.saturating_sub(m.cfg.delivery_slack_ms);
            for (room, r) in &c.rooms {
                let Some(waiting) = self.missing.get_mut(&(user.to_owned(), room.clone())) else {
                    continue;
                };
                let (proven, rest): (Vec<Missing>, Vec<Missing>) =
                    waiting.drain(..).partition(|w| {
                        w.epoch == r.epoch && r.joined_at <= w.joined_by && w.at < sent_by
                    });
                *waiting = rest;
                for w in proven {
                    if self
                        .reported
                        .insert((w.observer, room.clone(), user.to_owned(), true))
                    {
                        self.candidates.push(Candidate {
                            at,
                            place: w.place,
                            detail: format!(
                                "{} (conn #{conn} of {user} is still in the room: a frame sent after it arrived at {at} ms)",
                                w.detail
                            ),
                        });
                    }
                }
            }
        }
        self.sample(m, at, conn, false);
    }

    /// Samples `observer`'s views at `at`. `force`: even if sampled less
    /// than [`SAMPLE_EVERY_MS`] ago.
    fn sample(&mut self, m: &Model, at: u64, observer: ConnNo, force: bool) {
        if !force
            && self
                .sampled
                .get(&observer)
                .is_some_and(|&last| last + SAMPLE_EVERY_MS > at)
        {
            return;
        }
        self.sampled.insert(observer, at);
        let Some(o) = m.conns.get(&observer) else {
            return;
        };
        let Some(me) = o.user.as_deref() else {
            return;
        };
        if !o.live() || !self.prompt(o) || m.topology.crashed_after(o.node, o.dial_at).is_some() {
            return;
        }
        let lag = notice_lag(m);
        let due = self.last_fault + bound_ms(m);
        if at < due {
            return;
        }
        for (room, r) in &o.rooms {
            // Per user: its truth, from every connection of it that tried
            // the room.
            let mut truths: BTreeMap<&str, Truth> = BTreeMap::new();
            for &d in self.room_conns.get(room).into_iter().flatten() {
                let Some(user) = m.conns.get(&d).and_then(|c| c.user.as_deref()) else {
                    continue;
                };
                let t = self.conn_truth(m, d, room, &r.epoch, at);
                let e = truths.entry(user).or_insert(Truth::Absent(0));
                *e = e.and(t);
            }
            // The observer's own user is there through the observer.
            truths.insert(me, Truth::Present(r.joined_at));
            let users: BTreeSet<&str> = truths
                .keys()
                .copied()
                .chain(r.users.iter().map(String::as_str))
                .collect();
            for user in users {
                let truth = truths.get(user).copied().unwrap_or(Truth::Absent(0));
                let listed = r.users.contains(user);
                // The list has had the notice lag to catch up with a truth
                // that has not changed since `first`; and the truth, as
                // far as the records show it, as long to catch up with a
                // notice that came first (a close frame may come after the
                // USER_LEFT it caused).
                let (missing, since) = match truth {
                    Truth::Present(since) if !listed => (true, since),
                    Truth::Absent(since) if listed => (false, since),
                    _ => continue,
                };
                let noticed = self
                    .noticed
                    .get(&(observer, room.clone(), user.to_owned()))
                    .copied()
                    .unwrap_or(0);
                let first = since.max(r.joined_at).max(noticed);
                let key = (observer, room.clone(), user.to_owned(), missing);
                // Strictly later: what happens in one millisecond may be
                // recorded in any order.
                if at <= first + lag || self.reported.contains(&key) {
                    continue;
                }
                let place = m.place_room(observer, room, None);
                let head = format!(
                    "at {at} ms (last fault at {} ms, bound {} ms, notice lag {lag} ms) this member's list {:?}",
                    self.last_fault,
                    bound_ms(m),
                    r.users
                );
                if missing {
                    // To be proven by a frame the user's connection gets.
                    let waiting = self
                        .missing
                        .entry((user.to_owned(), room.clone()))
                        .or_default();
                    if !waiting.iter().any(|w| w.observer == observer) {
                        waiting.push(Missing {
                            observer,
                            at,
                            epoch: r.epoch.clone(),
                            joined_by: at - lag,
                            place,
                            detail: format!("{head} lacks {user}, in the room since {since} ms"),
                        });
                    }
                } else {
                    self.reported.insert(key);
                    self.candidates.push(Candidate {
                        at,
                        place,
                        detail: format!(
                            "{head} still has {user}, whose connections are all out of the room (left, closed by the server, or on a crashed node) since {since} ms"
                        ),
                    });
                }
            }
        }
    }

    /// Reports what the last fault left standing.
    pub fn finish(self, out: &mut Out) {
        for c in self.candidates {
            out.fail("presence-converges", c.at, c.place, c.detail);
        }
    }
}
