//! Running a scenario: each operation is applied to the hub and to the
//! model, and the outputs are compared with the prediction and checked
//! against the invariants.
//!
//! Over 700 lines as one file because [`Runner::request`] is one match with
//! an arm per request type that sends it and predicts its outcome in the
//! model side by side; split by request type, each piece would be read
//! without the shared charging and membership rules it relies on.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::json;

use super::limits::{
    AUTH_TIMEOUT_MS, CLIENT_IDS, DISCONNECT_AFTER, REQUEST_CAPACITY, ROOMS, SEND_CAPACITY,
    TYPING_TIMEOUT_MS, WINDOW_MS, limits,
};
use super::model::{ConnModel, Expected, Model, name, try_charge, user_ref};
use super::ops::{EpochChoice, Op, Target};
use crate::core::tests::harness::{TestHub, refused_token};
use crate::core::{AUTH_FAILURES_MAX, ConnId, Output};
use crate::protocol::server::{ChatMessage, ServerFrame, ServerMessage, UserRef};
use crate::protocol::time::rfc3339_ms;
use crate::protocol::{ErrorCode, MessageKind};

/// A request as sent, for the model.
pub(super) enum Req {
    Auth(usize),
    AuthRefused,
    Join {
        room: usize,
        since: Option<u64>,
        epoch: EpochChoice,
    },
    Leave(usize),
    Send {
        room: usize,
        client_id: Option<usize>,
        content: String,
    },
    Typing(usize, bool),
    History {
        room: usize,
        before: Option<u64>,
        limit: usize,
    },
}

pub(super) struct Runner {
    pub(super) t: TestHub,
    pub(super) m: Model,
    pub(super) step: usize,
    /// Per room, the newest `seq` seen in a fresh `NEW_MESSAGE` (invariant
    /// check independent of the model's prediction).
    pub(super) seen_seq: [u64; 3],
    /// Per user, when a `SEND_MESSAGE` was not refused by the rate limit.
    pub(super) sends_charged: BTreeMap<String, Vec<u64>>,
}

pub(super) type Check = Result<(), String>;

macro_rules! ensure {
    ($cond:expr, $($fmt:tt)+) => {
        if !$cond {
            return Err(format!($($fmt)+));
        }
    };
}

/// Error texts are free; everything else is compared.
pub(super) fn normalized(mut f: ServerFrame) -> ServerFrame {
    if let ServerMessage::Error { message, .. } = &mut f.message {
        message.clear();
    }
    f
}

impl Runner {
    pub(super) fn new(history_limit: usize, returning: bool) -> Runner {
        let rooms: Vec<(&str, String)> = ROOMS
            .iter()
            .enumerate()
            .map(|(i, id)| (*id, format!("Room {i}")))
            .collect();
        let rooms: Vec<(&str, &str)> = rooms.iter().map(|(id, n)| (*id, n.as_str())).collect();
        Runner {
            t: TestHub::with(limits(history_limit), &rooms, 3),
            m: Model::new(history_limit, returning),
            step: 0,
            seen_seq: [0; 3],
            sends_charged: BTreeMap::new(),
        }
    }

    /// The `index`-th live connection (modulo), among those for which
    /// `prefer` holds when there are any.
    pub(super) fn live(&self, index: u8, prefer: impl Fn(&ConnModel) -> bool) -> Option<ConnId> {
        let live: Vec<ConnId> = self.m.conns.keys().copied().collect();
        let preferred: Vec<ConnId> = live
            .iter()
            .copied()
            .filter(|c| prefer(&self.m.conns[c]))
            .collect();
        let pool = if preferred.is_empty() {
            live
        } else {
            preferred
        };
        (!pool.is_empty()).then(|| pool[usize::from(index) % pool.len()])
    }

    /// The connection and room a request goes to.
    pub(super) fn target(&self, to: Target) -> Option<(ConnId, usize)> {
        if to.stray {
            return Some((self.live(to.conn, |_| true)?, usize::from(to.room)));
        }
        let conn = self
            .live(to.conn, |c| c.user.is_some() && !c.rooms.is_empty())
            .or_else(|| self.live(to.conn, |c| c.user.is_some()))?;
        let joined: Vec<usize> = self.m.conns[&conn].rooms.iter().copied().collect();
        let room = if joined.is_empty() {
            usize::from(to.room)
        } else {
            joined[usize::from(to.room) % joined.len()]
        };
        Some((conn, room))
    }

    pub(super) fn run(&mut self, ops: &[Op]) -> Check {
        let setup = [
            Op::Connect { auth: Some(0) },
            Op::Connect { auth: Some(1) },
            Op::Connect { auth: Some(2) },
        ];
        for op in setup.iter().chain(ops) {
            self.step += 1;
            self.apply(op)
                .map_err(|e| format!("step {} ({op:?}): {e}", self.step))?;
        }
        Ok(())
    }

    pub(super) fn apply(&mut self, op: &Op) -> Check {
        let mut exp = Expected::default();
        let rid = format!("q{}", self.step);
        let (conn, req) = match *op {
            Op::Connect { auth } => {
                let conn = self.t.connect();
                self.m.conns.insert(
                    conn,
                    ConnModel {
                        user: None,
                        auth_deadline: self.m.now + AUTH_TIMEOUT_MS,
                        rooms: BTreeSet::new(),
                        failed_auths: 0,
                        rejected_in_row: 0,
                        charges: Vec::new(),
                    },
                );
                self.compare(std::mem::take(&mut exp))?;
                match auth {
                    None => return Ok(()),
                    Some(slot) => (conn, Req::Auth(self.m.current_user(usize::from(slot)))),
                }
            }
            Op::Advance(ms) => {
                self.t.advance(u64::from(ms));
                self.m.advance(self.t.now, &mut exp);
                return self.compare(exp);
            }
            Op::Disconnect { conn } => {
                let Some(conn) = self.live(conn, |_| true) else {
                    return self.compare(exp);
                };
                self.t.disconnect(conn);
                self.m.forget(conn, &mut exp);
                return self.compare(exp);
            }
            Op::Auth { conn, slot } => {
                let Some(conn) = self.live(conn, |c| c.user.is_none()) else {
                    return self.compare(exp);
                };
                (conn, Req::Auth(self.m.current_user(usize::from(slot))))
            }
            Op::AuthRefused { conn } => {
                let Some(conn) = self.live(conn, |_| true) else {
                    return self.compare(exp);
                };
                (conn, Req::AuthRefused)
            }
            Op::Join { to, since, epoch } => {
                // Any room, not only those already joined.
                let conn = if to.stray {
                    self.live(to.conn, |_| true)
                } else {
                    self.live(to.conn, |c| c.user.is_some())
                };
                let Some(conn) = conn else {
                    return self.compare(exp);
                };
                let room = usize::from(to.room);
                // Around the interesting values: 0 ..= last + 2.
                let since = since.map(|s| u64::from(s) % (self.m.last_seq(room) + 3));
                (conn, Req::Join { room, since, epoch })
            }
            Op::Leave { to } => {
                let Some((conn, room)) = self.target(to) else {
                    return self.compare(exp);
                };
                (conn, Req::Leave(room))
            }
            Op::Send { to, client_id } => {
                let Some((conn, room)) = self.target(to) else {
                    return self.compare(exp);
                };
                let content = format!("m{}", self.step);
                let client_id = client_id.map(usize::from);
                (
                    conn,
                    Req::Send {
                        room,
                        client_id,
                        content,
                    },
                )
            }
            Op::Typing { to, on } => {
                let Some((conn, room)) = self.target(to) else {
                    return self.compare(exp);
                };
                (conn, Req::Typing(room, on))
            }
            Op::History { to, before, limit } => {
                let Some((conn, room)) = self.target(to) else {
                    return self.compare(exp);
                };
                let before = before.map(|b| u64::from(b) % (self.m.last_seq(room) + 3));
                let limit = usize::from(limit);
                (
                    conn,
                    Req::History {
                        room,
                        before,
                        limit,
                    },
                )
            }
        };
        self.request(conn, &req, &rid, &mut exp)
    }

    pub(super) fn send_request(&mut self, conn: ConnId, req: &Req, rid: &str) {
        match req {
            Req::Auth(user) => {
                self.t
                    .call(conn, "AUTHENTICATE", json!({"token": name(*user)}), rid)
            }
            Req::AuthRefused => self
                .t
                .auth_with(conn, Err(refused_token()), None, Some(rid)),
            Req::Join { room, since, epoch } => {
                let mut payload = json!({"roomId": ROOMS[*room]});
                if let Some(since) = since {
                    payload["sinceSeq"] = json!(since);
                }
                match (epoch, &self.m.rooms[*room].epoch) {
                    (EpochChoice::Current, Some(e)) => payload["epoch"] = json!(e),
                    (EpochChoice::Stale, _) => payload["epoch"] = json!("stale-epoch"),
                    _ => {}
                }
                self.t.call(conn, "JOIN_ROOM", payload, rid);
            }
            Req::Leave(room) => {
                self.t
                    .call(conn, "LEAVE_ROOM", json!({"roomId": ROOMS[*room]}), rid)
            }
            Req::Send {
                room,
                client_id,
                content,
            } => {
                let mut payload = json!({"roomId": ROOMS[*room], "content": content});
                if let Some(k) = client_id {
                    payload["clientMessageId"] = json!(CLIENT_IDS[*k]);
                }
                self.t.call(conn, "SEND_MESSAGE", payload, rid);
            }
            Req::Typing(room, on) => self.t.call(
                conn,
                "TYPING_STATUS",
                json!({"roomId": ROOMS[*room], "isTyping": on}),
                rid,
            ),
            Req::History {
                room,
                before,
                limit,
            } => {
                let mut payload = json!({"roomId": ROOMS[*room], "limit": limit});
                if let Some(b) = before {
                    payload["beforeSeq"] = json!(b);
                }
                self.t.call(conn, "GET_HISTORY", payload, rid);
            }
        }
    }

    pub(super) fn request(
        &mut self,
        conn: ConnId,
        req: &Req,
        rid: &str,
        exp: &mut Expected,
    ) -> Check {
        self.send_request(conn, req, rid);
        let now = self.t.now;
        // For the rate invariant, from the outputs: was this send charged?
        if let (Req::Send { .. }, Some(user)) = (req, self.m.conns[&conn].user) {
            let refused = self.peek(conn).iter().any(|f| {
                f.request_id.as_deref() == Some(rid)
                    && matches!(
                        f.message,
                        ServerMessage::Error {
                            code: ErrorCode::RateLimitExceeded,
                            ..
                        }
                    )
            });
            if !refused {
                self.sends_charged.entry(name(user)).or_default().push(now);
            }
        }
        let m = &mut self.m;
        let c = m.conns.get_mut(&conn).expect("live");
        let user = c.user;

        // Charged first: an authenticated SEND_MESSAGE to the user's bucket,
        // everything else to the connection's.
        let user_send = matches!(req, Req::Send { .. }) && user.is_some();
        let charge = match user {
            Some(u) if user_send => {
                try_charge(m.user_charges.entry(u).or_default(), now, SEND_CAPACITY)
            }
            _ => try_charge(&mut c.charges, now, REQUEST_CAPACITY),
        };
        let c = m.conns.get_mut(&conn).expect("live");
        if let Err(retry) = charge {
            c.rejected_in_row += 1;
            exp.push(
                conn,
                ServerMessage::Error {
                    code: ErrorCode::RateLimitExceeded,
                    message: String::new(),
                    retry_after_ms: Some(retry),
                },
                Some(rid),
            );
            if c.rejected_in_row >= DISCONNECT_AFTER {
                m.close(conn, exp);
            }
            return self.compare(std::mem::take(exp));
        }
        c.rejected_in_row = 0;

        let rid_str = rid;
        let rid = Some(rid);
        match req {
            Req::Auth(u) => match user {
                None => {
                    c.user = Some(*u);
                    exp.push(conn, auth_success(*u), rid);
                }
                Some(current) if current == *u => exp.push(conn, auth_success(*u), rid),
                Some(_) => {
                    c.failed_auths += 1;
                    exp.error(conn, ErrorCode::Unauthorized, rid);
                    if c.failed_auths >= AUTH_FAILURES_MAX {
                        m.close(conn, exp);
                    }
                }
            },
            Req::AuthRefused => {
                c.failed_auths += 1;
                exp.error(conn, ErrorCode::Unauthorized, rid);
                if c.failed_auths >= AUTH_FAILURES_MAX {
                    m.close(conn, exp);
                }
            }
            _ if user.is_none() => exp.error(conn, ErrorCode::Unauthorized, rid),
            Req::Join { room, since, epoch } => {
                let (room, user) = (*room, user.expect("checked"));
                if !c.rooms.contains(&room) {
                    let first = !m.users_in(room).contains(&user);
                    if first {
                        for other in m.members(room) {
                            exp.push(
                                other,
                                ServerMessage::UserJoined {
                                    room_id: ROOMS[room].to_owned(),
                                    user: user_ref(user),
                                },
                                None,
                            );
                        }
                    }
                    m.conns.get_mut(&conn).expect("live").rooms.insert(room);
                }
                let retained = m.retained(room).to_vec();
                let (messages, recovered) = match since {
                    None => (retained, None),
                    Some(n) => {
                        let last = m.last_seq(room);
                        let first_retained = retained.first().map_or(last + 1, |msg| msg.seq);
                        let nothing_missing = *n <= last && n + 1 >= first_retained;
                        let same_epoch = *epoch != EpochChoice::Stale;
                        if nothing_missing && same_epoch {
                            let newer = retained.into_iter().filter(|msg| msg.seq > *n).collect();
                            (newer, Some(true))
                        } else {
                            (retained, Some(false))
                        }
                    }
                };
                // The epoch is opaque: learn it from the first ROOM_JOINED.
                let epoch = match &m.rooms[room].epoch {
                    Some(e) => e.clone(),
                    None => {
                        let e = self.observed_epoch(conn)?;
                        self.m.rooms[room].epoch = Some(e.clone());
                        e
                    }
                };
                let m = &self.m;
                let mut users: Vec<UserRef> = m.users_in(room).into_iter().map(user_ref).collect();
                users.sort_by(|a, b| a.user_id.cmp(&b.user_id));
                exp.push(
                    conn,
                    ServerMessage::RoomJoined {
                        room: m.room_info(room),
                        epoch,
                        messages,
                        users,
                        recovered,
                    },
                    rid,
                );
            }
            Req::Leave(room) => {
                if c.rooms.contains(room) {
                    exp.push(
                        conn,
                        ServerMessage::RoomLeft {
                            room_id: ROOMS[*room].to_owned(),
                        },
                        rid,
                    );
                    m.leave(conn, *room, exp);
                } else {
                    exp.error(conn, ErrorCode::NotAMember, rid);
                }
            }
            Req::Typing(room, on) => {
                let (room, user) = (*room, user.expect("checked"));
                if !c.rooms.contains(&room) {
                    exp.error(conn, ErrorCode::NotAMember, rid);
                } else if *on {
                    let was = m.rooms[room].typing.insert(user, now + TYPING_TIMEOUT_MS);
                    if was.is_none() {
                        m.typing_update(room, user, true, exp);
                    }
                } else if m.rooms[room].typing.remove(&user).is_some() {
                    m.typing_update(room, user, false, exp);
                }
            }
            Req::History {
                room,
                before,
                limit,
            } => {
                if !c.rooms.contains(room) {
                    exp.error(conn, ErrorCode::NotAMember, rid);
                } else {
                    let older: Vec<ChatMessage> = m
                        .retained(*room)
                        .iter()
                        .filter(|msg| before.is_none_or(|b| msg.seq < b))
                        .cloned()
                        .collect();
                    let start = older.len().saturating_sub(*limit);
                    exp.push(
                        conn,
                        ServerMessage::History {
                            room_id: ROOMS[*room].to_owned(),
                            messages: older[start..].to_vec(),
                            has_more: start > 0,
                        },
                        rid,
                    );
                }
            }
            Req::Send {
                room,
                client_id,
                content,
            } => {
                let (room, user) = (*room, user.expect("checked"));
                if !c.rooms.contains(&room) {
                    exp.error(conn, ErrorCode::NotAMember, rid);
                } else {
                    let cmid = client_id.map(|k| CLIENT_IDS[k].to_owned());
                    let original = cmid.as_ref().and_then(|k| {
                        m.retained(room).iter().find(|msg| {
                            msg.user_id == name(user) && msg.client_message_id.as_ref() == Some(k)
                        })
                    });
                    if let Some(original) = original {
                        // A retry: the sender alone gets the original again.
                        exp.push(conn, ServerMessage::NewMessage(original.clone()), rid);
                    } else {
                        let message = self.observed_new_message(conn, rid_str)?;
                        let m = &mut self.m;
                        ensure!(
                            message.seq == m.last_seq(room) + 1,
                            "seq {} after {}",
                            message.seq,
                            m.last_seq(room)
                        );
                        ensure!(
                            m.message_ids.insert(message.id.clone()),
                            "message id {} reused",
                            message.id
                        );
                        let expected = ChatMessage {
                            id: message.id.clone(),
                            seq: message.seq,
                            room_id: ROOMS[room].to_owned(),
                            user_id: name(user),
                            username: name(user),
                            content: content.clone(),
                            kind: MessageKind::Text,
                            timestamp: rfc3339_ms(now),
                            client_message_id: cmid,
                        };
                        ensure!(
                            message == expected,
                            "accepted {message:?}, expected {expected:?}"
                        );
                        for member in m.members(room) {
                            let rid = if member == conn { rid } else { None };
                            exp.push(member, ServerMessage::NewMessage(expected.clone()), rid);
                        }
                        m.rooms[room].accepted.push(expected);
                        if m.rooms[room].typing.remove(&user).is_some() {
                            m.typing_update(room, user, false, exp);
                        }
                    }
                }
            }
        }
        self.compare(std::mem::take(exp))
    }

    /// The epoch of the `ROOM_JOINED` this step sent to `conn`.
    pub(super) fn observed_epoch(&self, conn: ConnId) -> Result<String, String> {
        self.peek(conn)
            .into_iter()
            .find_map(|f| match f.message {
                ServerMessage::RoomJoined { epoch, .. } => Some(epoch),
                _ => None,
            })
            .ok_or_else(|| "no ROOM_JOINED to learn the epoch from".to_owned())
    }

    /// The acknowledgement this step sent to `conn` for `rid`.
    pub(super) fn observed_new_message(
        &self,
        conn: ConnId,
        rid: &str,
    ) -> Result<ChatMessage, String> {
        self.peek(conn)
            .into_iter()
            .find_map(|f| match f.message {
                ServerMessage::NewMessage(m) if f.request_id.as_deref() == Some(rid) => Some(m),
                _ => None,
            })
            .ok_or_else(|| format!("no NEW_MESSAGE acknowledging {rid}"))
    }

    /// The frames of the current step for `conn`, without consuming them.
    pub(super) fn peek(&self, conn: ConnId) -> Vec<ServerFrame> {
        self.t
            .step_outputs()
            .iter()
            .filter_map(|o| match o {
                Output::Frame { conn: c, frame, .. } if *c == conn => {
                    ServerFrame::decode(frame).ok()
                }
                _ => None,
            })
            .collect()
    }

    /// Checks the step's outputs: invariants first, then the model.
    pub(super) fn compare(&mut self, exp: Expected) -> Check {
        let step = self.t.take_step();
        let mut frames: BTreeMap<ConnId, Vec<ServerFrame>> = BTreeMap::new();
        let mut closes: BTreeMap<ConnId, u16> = BTreeMap::new();
        for out in &step {
            match out {
                Output::Frame { conn, frame, .. } => {
                    let f = ServerFrame::decode(frame).map_err(|e| e.to_string())?;
                    frames.entry(*conn).or_default().push(f);
                }
                Output::Close { conn, code, .. } => {
                    ensure!(closes.insert(*conn, code.code()).is_none(), "closed twice");
                }
                Output::Store { .. } | Output::Subscribe { .. } | Output::Unsubscribe { .. } => {
                    return Err(format!("Local handed out {out:?}"));
                }
            }
        }
        self.invariants(&frames)?;
        ensure!(
            closes == exp.closes,
            "closes {closes:?}, expected {:?}",
            exp.closes
        );
        let conns: BTreeSet<ConnId> = frames.keys().chain(exp.frames.keys()).copied().collect();
        for conn in conns {
            let mut got: Vec<ServerFrame> = frames
                .remove(&conn)
                .unwrap_or_default()
                .into_iter()
                .map(normalized)
                .collect();
            let want = exp.frames.get(&conn).cloned().unwrap_or_default();
            let all_got = got.clone();
            for w in &want {
                let Some(i) = got.iter().position(|g| g == w) else {
                    return Err(format!(
                        "{conn:?} did not get {w:?}\n  got: {all_got:?}\n  expected: {want:?}"
                    ));
                };
                got.remove(i);
            }
            ensure!(
                got.is_empty(),
                "{conn:?} got unexpected {got:?}\n  expected: {want:?}"
            );
        }
        Ok(())
    }

    /// The properties, from the outputs alone (with the accepted messages
    /// as acknowledged earlier).
    pub(super) fn invariants(&mut self, frames: &BTreeMap<ConnId, Vec<ServerFrame>>) -> Check {
        let h = self.m.history_limit;
        for (conn, list) in frames {
            for f in list {
                match &f.message {
                    ServerMessage::NewMessage(msg) => {
                        let room = room_index(&msg.room_id)?;
                        if msg.seq > self.seen_seq[room] {
                            ensure!(
                                msg.seq == self.seen_seq[room] + 1,
                                "seq jumped from {} to {} in {}",
                                self.seen_seq[room],
                                msg.seq,
                                msg.room_id
                            );
                            self.seen_seq[room] = msg.seq;
                        }
                        // No two retained messages of one user share a clientMessageId.
                        if let Some(k) = &msg.client_message_id {
                            let dup = self.m.retained(room).iter().any(|old| {
                                old.id != msg.id
                                    && old.user_id == msg.user_id
                                    && old.client_message_id.as_ref() == Some(k)
                            });
                            ensure!(!dup, "second message with clientMessageId {k}: {msg:?}");
                        }
                    }
                    ServerMessage::RoomJoined {
                        room,
                        messages,
                        recovered,
                        ..
                    } => {
                        let r = room_index(&room.id)?;
                        ensure!(
                            messages.len() <= h,
                            "ROOM_JOINED with {} > {h} messages",
                            messages.len()
                        );
                        let retained = self.m.retained(r);
                        match recovered {
                            None | Some(false) => ensure!(
                                messages.as_slice() == retained,
                                "ROOM_JOINED (recovered {recovered:?}) is not the retained history"
                            ),
                            Some(true) => {
                                ensure!(
                                    messages.len() <= retained.len(),
                                    "recovered more messages than retained"
                                );
                                let newer = &retained[retained.len() - messages.len()..];
                                ensure!(
                                    messages.as_slice() == newer,
                                    "recovered messages are not the newest ones"
                                );
                            }
                        }
                    }
                    ServerMessage::History {
                        room_id, messages, ..
                    } => {
                        let r = room_index(room_id)?;
                        ensure!(
                            messages.len() <= h,
                            "HISTORY with {} > {h} messages",
                            messages.len()
                        );
                        let retained = self.m.retained(r);
                        ensure!(
                            messages.is_empty()
                                || retained
                                    .windows(messages.len())
                                    .any(|w| w == messages.as_slice()),
                            "HISTORY page is not a run of the retained history"
                        );
                    }
                    ServerMessage::TypingUpdate { user_id, .. } => {
                        let recipient = self.m.conns.get(conn).and_then(|c| c.user);
                        ensure!(
                            recipient.is_none_or(|u| name(u) != *user_id),
                            "typing update of {user_id} sent to its own connection {conn:?}"
                        );
                    }
                    _ => {}
                }
            }
        }
        // No user has more sends charged in any window [t, t+W] than
        // C + floor(len * C / W).
        for (user, times) in &self.sends_charged {
            let Some(&last) = times.last() else { continue };
            for (i, &start) in times.iter().enumerate() {
                let count = (times.len() - i) as u64;
                let allowed = SEND_CAPACITY + (last - start) * SEND_CAPACITY / WINDOW_MS;
                ensure!(
                    count <= allowed,
                    "{user} had {count} sends charged in [{start}, {last}] (allowed {allowed})"
                );
            }
        }
        Ok(())
    }
}

pub(super) fn auth_success(user: usize) -> ServerMessage {
    ServerMessage::AuthSuccess {
        user_id: name(user),
        username: name(user),
        status: "online".to_owned(),
    }
}

pub(super) fn room_index(id: &str) -> Result<usize, String> {
    ROOMS
        .iter()
        .position(|r| *r == id)
        .ok_or_else(|| format!("unknown room {id}"))
}
