//! `typing`: a `TYPING_UPDATE isTyping: true` is followed, on the same
//! connection, by `isTyping: false` within `TYPING_TIMEOUT_MS` of the last
//! `isTyping: true` the typing user sent (plus delivery slack and the
//! server's hold on notices, `PRESENCE_DELAY_MS`) — unless the
//! observer left the room or the connection ended first.
//!
//! A repeated `true` keeps the indicator alive without a broadcast, so the
//! deadline follows what the typing user *sent*, which the observations
//! include. "Late" is only proven by the server: a frame that reaches the
//! observer after the deadline (a ping, anything) was sent after it, and the
//! `false` would have come before it. A stalled stream proves nothing.

use std::collections::BTreeMap;

use super::Out;
use super::model::Model;
use crate::obs::ConnNo;

/// Open typing indicators per observer, and what typing users sent.
#[derive(Debug, Default)]
pub struct Typing {
    /// `(user, room)` → when it last sent `isTyping: true`.
    last_true_sent: BTreeMap<(String, String), u64>,
    /// `(observer, room, user)` → when the `true` arrived.
    open: BTreeMap<(ConnNo, String, String), u64>,
}

impl Typing {
    /// The typing user sent `isTyping: true`.
    pub fn on_true_sent(&mut self, user: &str, room: &str, at: u64) {
        self.last_true_sent
            .insert((user.to_owned(), room.to_owned()), at);
    }

    fn deadline(&self, m: &Model, room: &str, user: &str, shown_at: u64) -> u64 {
        let sent = self
            .last_true_sent
            .get(&(user.to_owned(), room.to_owned()))
            .copied()
            .unwrap_or(0);
        shown_at.max(sent)
            + m.cfg.typing_timeout_ms
            + m.cfg.delivery_slack_ms
            + m.cfg.notice_delay_ms
    }

    /// `TYPING_UPDATE` on `conn`.
    #[allow(clippy::too_many_arguments)]
    pub fn on_update(
        &mut self,
        m: &Model,
        out: &mut Out,
        at: u64,
        conn: ConnNo,
        room: &str,
        user: &str,
        is_typing: bool,
    ) {
        let key = (conn, room.to_owned(), user.to_owned());
        if is_typing
            && !self
                .last_true_sent
                .contains_key(&(user.to_owned(), room.to_owned()))
        {
            out.fail(
                "typing",
                at,
                m.place_room(conn, room, None),
                format!(
                    "TYPING_UPDATE {user} isTyping true, but {user} never sent isTyping true there"
                ),
            );
        }
        if is_typing {
            if self.open.contains_key(&key) {
                out.fail(
                    "typing",
                    at,
                    m.place_room(conn, room, None),
                    format!("{user}'s typing: true broadcast again while already typing"),
                );
            }
            self.open.insert(key, at);
        } else {
            // A `false` without a `true` before it is fine: the observer
            // joined while the user was already typing.
            if self.open.remove(&key).is_some() {
                out.coverage.hit("typing_ended");
            }
        }
    }

    /// Anything arrived on `conn` at `at`: indicators past their deadline
    /// should have ended before it.
    pub fn on_activity(&mut self, m: &Model, out: &mut Out, at: u64, conn: ConnNo) {
        let overdue: Vec<(String, String, u64)> = self
            .open
            .range((conn, String::new(), String::new())..)
            .take_while(|((c, _, _), _)| *c == conn)
            .filter_map(|((_, room, user), shown)| {
                let deadline = self.deadline(m, room, user, *shown);
                (at > deadline).then(|| (room.clone(), user.clone(), deadline))
            })
            .collect();
        for (room, user, deadline) in overdue {
            out.fail(
                "typing",
                at,
                m.place_room(conn, &room, None),
                format!(
                    "{user}'s typing indicator still on: no isTyping false by {}.{:03}s",
                    deadline / 1000,
                    deadline % 1000
                ),
            );
            self.open.remove(&(conn, room, user));
        }
    }

    /// The observer left `room`.
    pub fn forget_room(&mut self, conn: ConnNo, room: &str) {
        self.open.retain(|(c, r, _), _| !(*c == conn && r == room));
    }

    /// `USER_LEFT`: leaving ends typing with a broadcast `false`, which
    /// comes first.
    pub fn on_user_left(
        &mut self,
        m: &Model,
        out: &mut Out,
        at: u64,
        conn: ConnNo,
        room: &str,
        user: &str,
    ) {
        if self
            .open
            .remove(&(conn, room.to_owned(), user.to_owned()))
            .is_some()
        {
            out.fail(
                "typing",
                at,
                m.place_room(conn, room, None),
                format!("USER_LEFT {user} while its typing indicator was still on"),
            );
        }
    }

    /// The observer's connection ended.
    pub fn forget_observer(&mut self, conn: ConnNo) {
        self.open.retain(|(c, _, _), _| *c != conn);
    }

    /// End of the run: nothing more to prove (a live connection receives
    /// pings, which [`Typing::on_activity`] already checked against).
    pub fn finish(&mut self, _m: &Model, _out: &mut Out, _end_ms: u64) {}
}
