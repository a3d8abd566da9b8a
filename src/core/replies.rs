//! What comes back from the store: the reply to each operation the hub
//! handed out (finishing the request it was for), and the events of the
//! rooms this node has connections in, delivered in `seq` order.

use bytes::Bytes;
use std::sync::Arc;

use super::hub::{Hub, Timer};
use super::pending::{Pending, Wait};
use super::room::{Arrival, Held, info, may_join};
use super::types::{ConnId, OpId, RoomId, Timestamp, UserId};
use crate::protocol::server::{self, MessageFrame, ServerMessage, UserRef};
use crate::protocol::{CloseCode, ErrorCode};
use crate::store::{Event, Op, Present, Refusal, Reply, Since, StoredMessage};

impl Hub {
    /// The store's reply to the operation `id` (see [`Output::Store`]).
    ///
    /// [`Output::Store`]: super::Output::Store
    pub fn store_reply(&mut self, now: Timestamp, id: OpId, reply: Reply) {
        self.tick(now);
        let Some(p) = self.take_pending(id) else {
            return;
        };
        let blocked = self.unblock(&p);
        self.finish(p, reply);
        self.resume_unless_busy(blocked);
        self.resume_acked();
    }

    /// Goes on with the connections whose awaited acknowledgement went out.
    fn resume_acked(&mut self) {
        while let Some(conn) = self.acked.pop() {
            if let Some(c) = self.conns.get_mut(&conn) {
                c.busy = false;
            }
            self.resume_unless_busy(Some(conn));
        }
    }

    /// The connection `p` blocked, free again until what finishes `p` asks
    /// the store for more on its behalf.
    fn unblock(&mut self, p: &Pending) -> Option<ConnId> {
        let conn = p.blocks.then_some(p.conn).flatten()?;
        if let Some(c) = self.conns.get_mut(&conn) {
            c.busy = false;
        }
        Some(conn)
    }

    /// Goes on with the connection's waiting messages, unless finishing
    /// its request asked the store for more (a created room's creator
    /// joining it): they wait for that too.
    fn resume_unless_busy(&mut self, conn: Option<ConnId>) {
        if let Some(conn) = conn
            && self.conns.get(&conn).is_some_and(|c| !c.busy)
        {
            self.resume(conn);
        }
    }

    fn finish(&mut self, p: Pending, reply: Reply) {
        let rid = p.rid.as_deref();
        let conn = p.conn;
        let live = |hub: &Hub| conn.filter(|c| hub.conns.contains_key(c));
        match (p.wait, reply) {
            (Wait::Nothing, _) => {}
            (Wait::ListRooms, Reply::Rooms(rooms)) => {
                let Some(conn) = live(self) else { return };
                let session = self.conns[&conn].session().expect("authenticated");
                let rooms = rooms
                    .iter()
                    .filter(|v| may_join(&v.record, session))
                    .map(|v| info(&v.record, v.member_count))
                    .collect();
                self.reply(conn, &ServerMessage::RoomList { rooms }, rid);
            }
            (Wait::Create { .. }, Reply::Created(record)) => {
                // Nobody is in it yet: if its creator never gets there, it
                // ages like any empty room.
                let room = RoomId(Arc::from(record.id.as_str()));
                self.emptied_since(room, Timestamp(record.created_at_ms));
                let Some(conn) = live(self) else { return };
                self.ask_join(conn, record.id, None, true, rid);
            }
            (Wait::Create { record, generated }, Reply::Refused(why)) => {
                let Some(conn) = live(self) else { return };
                match why {
                    Refusal::UserLimit => {
                        let max = self.limits.rooms_per_user_max;
                        self.error(
                            conn,
                            ErrorCode::Forbidden,
                            format!("a user may create at most {max} rooms"),
                            rid,
                        );
                    }
                    // A drawn id someone else drew first: draw again.
                    Refusal::Exists if generated => {
                        let id = self.generate_room_id().0.to_string();
                        let again = self.record(
                            id,
                            record.name,
                            record.description,
                            record.kind,
                            self.user_of(conn).as_ref(),
                        );
                        self.ask_create(conn, again, true, rid);
                    }
                    Refusal::Exists => {
                        let id = record.id;
                        self.error(
                            conn,
                            ErrorCode::RoomExists,
                            format!("room {id} already exists"),
                            rid,
                        );
                    }
                    Refusal::RoomLimit => {
                        self.error(conn, ErrorCode::Forbidden, "room limit reached", rid);
                    }
                }
            }
            (
                Wait::Join { user, creating, .. },
                Reply::Joined {
                    room,
                    users,
                    first_of_user: _,
                    messages,
                    recovered,
                    last_seq,
                    presence_seq,
                },
            ) => {
                let Some(conn) = live(self) else {
                    // Gone meanwhile: the store holds it in the room.
                    if let Some(conn) = conn {
                        self.undo_join(conn, &user, &room.record.id);
                    }
                    return;
                };
                self.add_member(conn, &room.record, &users, last_seq, presence_seq);
                // The users as of the later of the join's list and what
                // this node has shown its members already.
                let (users, member_count) = match self.rooms.get(room.record.id.as_str()) {
                    Some(r) if r.presence_seen > presence_seq => {
                        let present = r.present_list();
                        let count = present.len() as u64;
                        (present, count)
                    }
                    _ => (users, room.member_count),
                };
                let shown = info(&room.record, member_count);
                let epoch = room.record.epoch.clone();
                if creating {
                    self.reply(
                        conn,
                        &ServerMessage::RoomCreated { room: shown, epoch },
                        rid,
                    );
                    return;
                }
                let frames = stored_frames(&messages);
                let users: Vec<UserRef> = users
                    .into_iter()
                    .map(|p| UserRef {
                        user_id: p.user,
                        username: p.username,
                    })
                    .collect();
                let frame =
                    server::room_joined(&shown, &epoch, frames.iter(), &users, recovered, rid);
                self.send(conn, frame);
            }
            (Wait::Join { room_id, .. }, Reply::Forbidden) => {
                let Some(conn) = live(self) else { return };
                self.error(
                    conn,
                    ErrorCode::Forbidden,
                    format!("no access to private room {room_id}"),
                    rid,
                );
            }
            (Wait::Join { room_id, .. } | Wait::History { room_id }, Reply::NotFound) => {
                let Some(conn) = live(self) else { return };
                self.room_not_found(conn, &room_id, rid);
            }
            (
                Wait::Leave { room },
                Reply::Left {
                    member_count: 0, ..
                },
            ) => {
                // A user's room left empty starts counting its idle time
                // here (a default room never goes: the store knows which).
                if !self.rooms.contains_key(&room) {
                    self.emptied_since(room, self.now);
                }
            }
            (Wait::Leave { .. }, _) => {}
            (Wait::History { room_id }, Reply::History { messages, has_more }) => {
                let Some(conn) = live(self) else { return };
                let frames = stored_frames(&messages);
                let frame = server::history(&room_id, frames.iter(), has_more, rid);
                self.send(conn, frame);
            }
            (Wait::Publish { room }, reply) => self.published(conn, rid, &room, reply),
            (Wait::Charge { .. }, Reply::RateLimited { retry_after_ms }) => {
                let Some(conn) = live(self) else { return };
                self.rate_limited(conn, retry_after_ms, rid);
            }
            (Wait::Charge { room_id }, _) => {
                let Some(conn) = live(self) else { return };
                self.accepted(conn);
                self.member_room(conn, &room_id, rid);
            }
            (Wait::Lookup { room_id }, Reply::NotFound) => {
                let Some(conn) = live(self) else { return };
                self.room_not_found(conn, &room_id, rid);
            }
            (Wait::Lookup { room_id }, _) => {
                let Some(conn) = live(self) else { return };
                self.error(
                    conn,
                    ErrorCode::NotAMember,
                    format!("not a member of {room_id}"),
                    rid,
                );
            }
            (Wait::Delete, Reply::Deleted(true)) => self.stats.rooms_deleted += 1,
            (Wait::Delete, _) => {}
            (
                Wait::Backfill { room },
                Reply::Recovery {
                    epoch,
                    users,
                    messages,
                    recovered,
                    presence_seq,
                    last_seq,
                },
            ) => {
                if self
                    .rooms
                    .get(&room)
                    .is_some_and(|r| r.record.epoch == epoch)
                {
                    let departures =
                        self.reconcile_presence(&room, &users, &messages, presence_seq);
                    // Shown after the messages read back with the list,
                    // before the changes that came after it.
                    if !departures.is_empty()
                        && let Some(r) = self.rooms.get_mut(&room)
                    {
                        r.held_notices
                            .push_front((last_seq, Held::Frames(departures)));
                    }
                }
                self.backfilled(&room, &epoch, messages, recovered);
            }
            (Wait::Backfill { room }, _) => {
                if let Some(r) = self.rooms.get_mut(&room) {
                    r.backfilling = r.backfilling.saturating_sub(1);
                }
                self.lost_track(&room);
            }
            _ => self.unexpected(conn, rid),
        }
    }

    /// The store could not answer the operation `id` (it timed out, or the
    /// connection to it failed): its outcome is unknown. The request it was
    /// for gets `SERVER_ERROR` with `retry_after_ms`, and what it may have
    /// done is undone where that matters (a join of a connection that is
    /// not in the room takes it out again). The connection stays open.
    pub fn store_failed(&mut self, now: Timestamp, id: OpId, retry_after_ms: u64) {
        self.tick(now);
        let Some(p) = self.take_pending(id) else {
            return;
        };
        let blocked = self.unblock(&p);
        let rid = p.rid.as_deref();
        let live = p.conn.filter(|c| self.conns.contains_key(c));
        let answer = match p.wait {
            Wait::Nothing | Wait::Leave { .. } | Wait::Delete => false,
            Wait::Backfill { room } => {
                // The driver retries a read while the store does not
                // answer; one that fails all the same (data it cannot read)
                // would fail again: the room's connections resume instead.
                if let Some(r) = self.rooms.get_mut(&room) {
                    r.backfilling = r.backfilling.saturating_sub(1);
                }
                self.lost_track(&room);
                false
            }
            Wait::Publish { room } => {
                if let Some(r) = self.rooms.get_mut(&room) {
                    r.publishing = r.publishing.saturating_sub(1);
                }
                self.flush(&room);
                true
            }
            Wait::Join { room_id, user, .. } => {
                let member = live.is_some_and(|c| self.conns[&c].rooms.contains(room_id.as_str()));
                if let Some(conn) = p.conn
                    && !member
                {
                    self.undo_join(conn, &user, &room_id);
                }
                true
            }
            Wait::ListRooms
            | Wait::Create { .. }
            | Wait::History { .. }
            | Wait::Charge { .. }
            | Wait::Lookup { .. } => true,
        };
        if answer && let Some(conn) = live {
            self.error_with_retry(
                conn,
                ErrorCode::ServerError,
                "the service is unavailable, try again",
                Some(retry_after_ms),
                rid,
            );
        }
        self.resume_unless_busy(blocked);
        self.resume_acked();
    }

    /// The events of `room` (of every room this node holds, with `None`)
    /// reach this node from now on, but some published before may have been
    /// missed (a subscription just made, or the node's event stream cut
    /// and restored): each such room reads back what it has after the
    /// `seq` delivered here before it delivers anything newer.
    pub fn store_resync(&mut self, now: Timestamp, room: Option<&str>) {
        self.tick(now);
        let rooms: Vec<RoomId> = match room {
            Some(id) => self
                .rooms
                .get_key_value(id)
                .map(|(k, _)| k.clone())
                .into_iter()
                .collect(),
            None => self.rooms.keys().cloned().collect(),
        };
        for room in &rooms {
            self.backfill(room);
        }
        self.resume_acked();
    }

    /// The request of operation `id`, which the store answered or failed:
    /// a `Leave` that undid a join is over either way, and the join may be
    /// asked again.
    fn take_pending(&mut self, id: OpId) -> Option<Pending> {
        let p = self.pending.remove(&id)?;
        if let (Wait::Leave { room }, Some(conn)) = (&p.wait, p.conn)
            && !self.undoing.is_empty()
        {
            self.undoing.remove(&(conn, room.0.to_string()));
        }
        Some(p)
    }

    /// The store put a connection that is gone in a room, or may have (its
    /// join's outcome unknown): take it out.
    fn undo_join(&mut self, conn: ConnId, user: &UserId, room: &str) {
        self.undoing.insert((conn, room.to_owned()));
        let op = Op::Leave {
            room: room.to_owned(),
            user: user.0.to_string(),
            holder: self.holder(conn),
            now_ms: self.now.0,
        };
        let room = RoomId(Arc::from(room));
        self.store(Pending::leave(conn, room), op);
    }

    fn published(&mut self, conn: Option<ConnId>, rid: Option<&str>, room: &RoomId, reply: Reply) {
        if let Some(r) = self.rooms.get_mut(room) {
            r.publishing = r.publishing.saturating_sub(1);
        }
        let conn = conn.filter(|c| self.conns.contains_key(c));
        match reply {
            Reply::Published(message, presence_seq) => {
                self.stats.messages_accepted += 1;
                // With a constant HISTORY_LIMIT, every message past the
                // limit evicts one.
                if message.seq > self.limits.history_limit as u64 {
                    self.stats.history_evictions += 1;
                }
                let Some(frame) = MessageFrame::from_stored(message.frame) else {
                    self.flush(room);
                    return self.unexpected(conn, rid);
                };
                let mut sender = None;
                if let Some(c) = conn {
                    self.accepted(c);
                    sender = self.user_of(c);
                }
                let arrival = Arrival {
                    frame,
                    sender,
                    ack: conn.map(|c| (c, rid.map(str::to_owned))),
                    presence_seq,
                };
                let seq = message.seq;
                self.arrive(room, seq, arrival, false);
                // Its turn has not come (earlier messages of the room are
                // still on their way here): the sender's next request waits
                // for this acknowledgement, or it could be answered first.
                if let Some(c) = conn
                    && self
                        .rooms
                        .get(room)
                        .is_some_and(|r| r.ahead.contains_key(&seq))
                    && let Some(cs) = self.conns.get_mut(&c)
                {
                    cs.busy = true;
                    self.awaiting_ack.insert(c);
                }
            }
            Reply::Duplicate(message) => {
                if let Some(c) = conn {
                    self.accepted(c);
                    match MessageFrame::from_stored(message.frame) {
                        Some(frame) => {
                            self.stats.retries_deduplicated += 1;
                            self.stats.messages_delivered += 1;
                            self.send(c, frame.ack(rid));
                        }
                        None => self.unexpected(conn, rid),
                    }
                }
                self.flush(room);
            }
            Reply::RateLimited { retry_after_ms } => {
                if let Some(c) = conn {
                    self.rate_limited(c, retry_after_ms, rid);
                }
                self.flush(room);
            }
            Reply::NotFound => {
                if let Some(c) = conn {
                    self.room_not_found(c, &room.0, rid);
                }
                self.flush(room);
            }
            Reply::Unheld => {
                // The store took the connection out of the room (this
                // node's lease ran out): nothing was stored, and the
                // connection resumes to join again and retry the send.
                if let Some(c) = conn {
                    self.close(c, CloseCode::TryAgainLater, "no longer in the room");
                }
                self.flush(room);
            }
            _ => {
                self.unexpected(conn, rid);
                self.flush(room);
            }
        }
    }

    /// A reply the store should not have given (its contract broken, or its
    /// data unreadable): the request is answered, not lost.
    fn unexpected(&mut self, conn: Option<ConnId>, rid: Option<&str>) {
        if let Some(conn) = conn.filter(|c| self.conns.contains_key(c)) {
            self.error(conn, ErrorCode::ServerError, "unexpected store reply", rid);
        }
    }

    /// What the store published about a room this node may hold.
    pub fn store_event(&mut self, now: Timestamp, event: Event) {
        self.tick(now);
        self.apply_event(event);
        self.resume_acked();
    }

    fn apply_event(&mut self, event: Event) {
        // The room's own id (shared, not allocated), if it is held here.
        let Some((room_id, room)) = self.rooms.get_key_value(event.room()) else {
            return;
        };
        let room_id = room_id.clone();
        match event {
            Event::Message {
                epoch,
                user,
                message,
                ..
            } => {
                // Seen already (this node's own publish, answered first) or
                // of an earlier incarnation of the room: nothing to do.
                if message.seq <= room.delivered || epoch != room.record.epoch {
                    return;
                }
                let Some(frame) = MessageFrame::from_stored(message.frame) else {
                    return;
                };
                let arrival = Arrival {
                    frame,
                    sender: Some(UserId(Arc::from(user.as_str()))),
                    ack: None,
                    presence_seq: 0,
                };
                self.arrive(&room_id, message.seq, arrival, true);
            }
            Event::Presence { .. } | Event::Typing { .. } => {
                // After the messages that came before it: a presence change
                // names the last; typing, not stored, comes after those
                // whose events reached this node before it (not after a
                // reply's message from later in the room's order: that one
                // may wait for a presence change whose event is still on
                // its way, and would wait behind this). While some of those
                // wait their turn here, it waits behind them.
                let after = match &event {
                    Event::Presence { last_seq, .. } => *last_seq,
                    _ => room.heard.max(room.delivered),
                };
                // A read back under way may bring the room's presence as of
                // an earlier change: changes wait for it to apply in order.
                if after > room.delivered || !room.held_notices.is_empty() || room.backfilling > 0 {
                    let room = self.rooms.get_mut(&room_id).expect("held");
                    room.held_notices.push_back((after, Held::Event(event)));
                    return;
                }
                self.notice(&room_id, event);
                // Messages that waited for this change go on.
                self.flush(&room_id);
            }
            Event::RoomDeleted { .. } => {}
        }
    }

    /// A presence or typing event of a room held here, in its turn.
    fn notice(&mut self, room_id: &RoomId, event: Event) {
        match event {
            Event::Presence {
                who, joined, pseq, ..
            } => {
                // A change this node's members were all shown (by a list
                // that came after it) is not shown again.
                let Some(room) = self.rooms.get(room_id) else {
                    return;
                };
                if pseq <= room.presence_seen {
                    return;
                }
                self.presence(room_id, who, joined, pseq);
                self.presence_shown(room_id, pseq);
            }
            Event::Typing {
                user, is_typing, ..
            } => {
                let user = UserId(Arc::from(user.as_str()));
                self.typing(room_id, &user, is_typing);
            }
            Event::Message { .. } | Event::RoomDeleted { .. } => {}
        }
    }

    /// The held presence and typing events whose messages have all been
    /// delivered here.
    fn release_notices(&mut self, room_id: &RoomId) {
        loop {
            let Some(room) = self.rooms.get_mut(room_id) else {
                return;
            };
            if room.backfilling > 0 {
                return;
            }
            match room.held_notices.front() {
                Some((after, _)) if *after <= room.delivered => {
                    let (_, held) = room.held_notices.pop_front().expect("a front");
                    self.release(room_id, held);
                }
                _ => return,
            }
        }
    }

    /// A held notice whose turn came.
    fn release(&mut self, room_id: &RoomId, held: Held) {
        match held {
            Held::Event(event) => self.notice(room_id, event),
            Held::Frames(outputs) => {
                // To the members still there.
                for output in outputs {
                    if let super::Output::Frame { conn, .. } = &output
                        && !self
                            .conns
                            .get(conn)
                            .is_some_and(|c| c.rooms.contains(room_id))
                    {
                        continue;
                    }
                    self.outputs.push_back(output);
                }
            }
        }
    }

    /// A user became present in a room held here, or absent (the room's
    /// presence change `pseq`): the replica follows, and the local members
    /// other than the user are told, but those whose `ROOM_JOINED` already
    /// showed the room as of this change or later.
    fn presence(&mut self, room_id: &RoomId, who: Present, joined: bool, pseq: u64) {
        let user = UserId(Arc::from(who.user.as_str()));
        let who = if joined {
            let Some(room) = self.rooms.get_mut(room_id) else {
                return;
            };
            room.present
                .entry(user.clone())
                .or_insert_with(|| Arc::from(who.username.as_str()));
            who
        } else {
            // Typing ends first, while the user is still listed.
            self.end_typing(room_id, &user);
            let Some(room) = self.rooms.get_mut(room_id) else {
                return;
            };
            let username = room
                .present
                .remove(&user)
                .map_or(who.username, |n| n.to_string());
            Present {
                user: who.user,
                username,
            }
        };
        let frame = presence_frame(room_id, who, joined);
        let room = &self.rooms[room_id];
        for (u, conns) in &room.local {
            if *u == user {
                continue;
            }
            for &c in conns {
                if room
                    .presence_after
                    .get(&c)
                    .is_some_and(|after| after.pseq >= pseq)
                {
                    continue;
                }
                self.outputs.push_back(super::Output::Frame {
                    conn: c,
                    frame: frame.clone(),
                    notice: true,
                });
            }
        }
    }

    /// Every local member of the room has been shown its presence up to
    /// change `pseq`.
    fn presence_shown(&mut self, room_id: &RoomId, pseq: u64) {
        if let Some(room) = self.rooms.get_mut(room_id) {
            room.presence_seen = room.presence_seen.max(pseq);
            if !room.presence_after.is_empty() {
                let seen = room.presence_seen;
                room.presence_after.retain(|_, after| after.pseq > seen);
            }
        }
    }

    /// The users present in a room held here as of its presence change
    /// `presence_seq`, read back after this node's events may have been cut:
    /// what the replica missed is shown as the events would have shown it
    /// (a user with a connection of this node's in the room stays). A
    /// member whose `ROOM_JOINED` listed the users as of a change between
    /// the replica's and this one is told what differs from its own list.
    /// The senders of `messages` (read back with the list) that neither the
    /// replica nor the list shows came, spoke and went meanwhile: shown as
    /// come, then gone. Arrivals are shown at once; departures are
    /// returned, to be shown after the messages (a user's messages come
    /// before it left).
    fn reconcile_presence(
        &mut self,
        room_id: &RoomId,
        users: &[Present],
        messages: &[StoredMessage],
        presence_seq: u64,
    ) -> Vec<super::Output> {
        let Some(room) = self.rooms.get_mut(room_id) else {
            return Vec::new();
        };
        if presence_seq <= room.presence_seen {
            return Vec::new();
        }
        let passers = passers(room, users, messages);
        // What every member is shown from now on (passers until they go).
        let mut target: Vec<Present> = users.iter().chain(&passers).cloned().collect();
        for p in room.present_list() {
            if room.local.contains_key(p.user.as_str()) && !users.iter().any(|u| u.user == p.user) {
                target.push(p);
            }
        }
        let diff = |from: &[Present]| -> (Vec<Present>, Vec<Present>) {
            let came = target
                .iter()
                .filter(|t| !from.iter().any(|f| f.user == t.user))
                .cloned()
                .collect();
            let went = from
                .iter()
                .filter(|f| !target.iter().any(|t| t.user == f.user))
                .cloned()
                .collect();
            (came, went)
        };
        // Members listed between the replica's change and this one: told
        // from their own lists, and no longer by the replica's changes.
        let mut own = Vec::new();
        for (conn, shown) in &mut room.presence_after {
            if shown.pseq < presence_seq {
                own.push((*conn, diff(&shown.users)));
                shown.pseq = presence_seq;
            }
        }
        let (came, went) = diff(&room.present_list());
        for who in came {
            self.presence(room_id, who, true, presence_seq);
        }
        for (conn, (came, _)) in &mut own {
            self.presence_to(*conn, room_id, std::mem::take(came), true);
        }
        let later = self.outputs.len();
        for who in went {
            self.presence(room_id, who, false, presence_seq);
        }
        for (conn, (_, went)) in own {
            self.presence_to(conn, room_id, went, false);
        }
        self.presence_shown(room_id, presence_seq);
        // Every member has now been shown the passers, and is told they went.
        for who in passers {
            self.presence(room_id, who, false, presence_seq);
        }
        self.outputs.drain(later..).collect()
    }

    /// `USER_JOINED` (or `USER_LEFT`) of `users` to one member of a room,
    /// but of its own user.
    fn presence_to(&mut self, conn: ConnId, room_id: &RoomId, users: Vec<Present>, joined: bool) {
        let Some(user) = self.user_of(conn) else {
            return;
        };
        for who in users {
            if who.user != *user.0 {
                let frame = presence_frame(room_id, who, joined);
                self.outputs.push_back(super::Output::Frame {
                    conn,
                    frame,
                    notice: true,
                });
            }
        }
    }

    /// Ends `user`'s typing indicator in a room held here, if it is on:
    /// `TYPING_UPDATE false` to the others.
    pub(super) fn end_typing(&mut self, room_id: &RoomId, user: &UserId) {
        if let Some(room) = self.rooms.get_mut(room_id)
            && let Some(deadline) = room.typing.remove(user)
        {
            self.timers
                .remove(&(deadline, Timer::Typing(room_id.clone(), user.clone())));
            self.broadcast_typing(room_id, user, false);
        }
    }

    /// A user started (or renewed) or stopped typing in a room held here.
    fn typing(&mut self, room_id: &RoomId, user: &UserId, is_typing: bool) {
        let timeout = self.limits.typing_timeout_ms;
        let now = self.now;
        let Some(room) = self.rooms.get_mut(room_id) else {
            return;
        };
        let previous = room.typing.get(user).copied();
        if is_typing {
            let deadline = now.plus_ms(timeout);
            room.typing.insert(user.clone(), deadline);
            if let Some(old) = previous {
                self.timers
                    .remove(&(old, Timer::Typing(room_id.clone(), user.clone())));
            }
            self.timers
                .insert((deadline, Timer::Typing(room_id.clone(), user.clone())));
            if previous.is_none() {
                self.broadcast_typing(room_id, user, true);
            }
        } else {
            self.end_typing(room_id, user);
        }
    }

    /// Message `seq` of a room held here came (from the reply to this
    /// node's own publish, or the room's events): delivered in turn.
    /// `heard`: it came as the room's event (not as a reply to this node's
    /// own send), so what came before it in the room's order came first.
    fn arrive(&mut self, room_id: &RoomId, seq: u64, arrival: Arrival, heard: bool) {
        let Some(room) = self.rooms.get_mut(room_id) else {
            // Nobody here is in the room any more; the sender still gets
            // its acknowledgement.
            if let Some((conn, rid)) = arrival.ack {
                self.stats.messages_delivered += 1;
                self.send(conn, arrival.frame.ack(rid.as_deref()));
            }
            return;
        };
        if heard {
            room.heard = room.heard.max(seq);
        }
        if seq <= room.delivered {
            return;
        }
        // Its turn, nothing held: straight out (every message, on one node).
        if seq == room.delivered + 1
            && room.ahead.is_empty()
            && room.publishing == 0
            && room.backfilling == 0
            && arrival.presence_seq <= room.presence_seen
        {
            room.delivered = seq;
            return self.deliver(room_id, seq, arrival);
        }
        match room.ahead.get_mut(&seq) {
            // The event came first; the reply brings the sender's ack.
            Some(held) if arrival.ack.is_some() => held.ack = arrival.ack,
            Some(_) => {}
            None => {
                room.ahead.insert(seq, arrival);
            }
        }
        self.flush(room_id);
    }

    /// Delivers a room's messages that are next in turn, unless a publish
    /// of this node's is still unanswered there; a gap is read back.
    fn flush(&mut self, room_id: &RoomId) {
        loop {
            let Some(room) = self.rooms.get_mut(room_id) else {
                return;
            };
            if room.publishing > 0 || room.backfilling > 0 {
                return;
            }
            let next = room.delivered + 1;
            // Its presence change not shown here yet: it waits for it.
            if room
                .ahead
                .get(&next)
                .is_some_and(|a| a.presence_seq > room.presence_seen)
            {
                return;
            }
            let Some(arrival) = room.ahead.remove(&next) else {
                if !room.ahead.is_empty() {
                    self.backfill(room_id);
                }
                return;
            };
            room.delivered = next;
            self.deliver(room_id, next, arrival);
        }
    }

    /// Reads back what a room held here has after the `seq` delivered
    /// last; deliveries wait for it.
    pub(super) fn backfill(&mut self, room_id: &RoomId) {
        let Some(room) = self.rooms.get_mut(room_id) else {
            return;
        };
        room.backfilling += 1;
        let op = Op::Since {
            room: room_id.0.to_string(),
            since: Since {
                seq: room.delivered,
                epoch: Some(room.record.epoch.clone()),
            },
            history_limit: self.history_limit(),
        };
        self.store(Pending::backfill(room_id.clone()), op);
    }

    fn deliver(&mut self, room_id: &RoomId, seq: u64, arrival: Arrival) {
        if let Some((sender, _)) = &arrival.ack
            && self.awaiting_ack.remove(sender)
        {
            self.acked.push(*sender);
        }
        let room = &self.rooms[room_id];
        let notices_held = !room.held_notices.is_empty();
        let broadcast = arrival.frame.broadcast();
        let sender = arrival.ack.as_ref().map(|(c, _)| *c);
        let mut acked = false;
        let mut delivered = 0;
        for conns in room.local.values() {
            for &c in conns {
                // Joined with this message already in its ROOM_JOINED.
                if !room.joined_after.is_empty()
                    && room.joined_after.get(&c).is_some_and(|after| *after >= seq)
                {
                    continue;
                }
                let frame = if sender == Some(c) {
                    acked = true;
                    arrival
                        .frame
                        .ack(arrival.ack.as_ref().and_then(|(_, rid)| rid.as_deref()))
                } else {
                    broadcast.clone()
                };
                self.outputs.push_back(super::Output::Frame {
                    conn: c,
                    frame,
                    notice: false,
                });
                delivered += 1;
            }
        }
        // The acknowledgement is owed to a sender that left the room since.
        if let Some((sender, rid)) = &arrival.ack
            && !acked
            && self.conns.contains_key(sender)
        {
            let frame = arrival.frame.ack(rid.as_deref());
            self.send(*sender, frame);
            delivered += 1;
        }
        self.stats.messages_delivered += delivered;
        if let Some(room) = self.rooms.get_mut(room_id)
            && !room.joined_after.is_empty()
        {
            room.joined_after.retain(|_, after| *after > seq);
        }
        if let Some(sender) = &arrival.sender {
            self.end_typing(room_id, sender);
        }
        if notices_held {
            self.release_notices(room_id);
        }
    }

    /// The messages a gap hid, read back.
    fn backfilled(
        &mut self,
        room_id: &RoomId,
        epoch: &str,
        messages: Vec<StoredMessage>,
        recovered: bool,
    ) {
        let Some(room) = self.rooms.get_mut(room_id) else {
            return;
        };
        room.backfilling = room.backfilling.saturating_sub(1);
        if !recovered || epoch != room.record.epoch {
            return self.lost_track(room_id);
        }
        for m in messages {
            if m.seq > room.delivered
                && !room.ahead.contains_key(&m.seq)
                && let Some(frame) = MessageFrame::from_stored(m.frame)
            {
                room.ahead.insert(
                    m.seq,
                    Arrival {
                        frame,
                        sender: None,
                        ack: None,
                        presence_seq: 0,
                    },
                );
            }
        }
        // The last read under way decides. What was read back must close
        // any gap: asking again would get the same answer, for ever.
        if room.backfilling > 0 {
            return;
        }
        if !room.ahead.is_empty() && !room.ahead.contains_key(&(room.delivered + 1)) {
            return self.lost_track(room_id);
        }
        self.flush(room_id);
        // What waited for the read back, and no message, goes now.
        self.release_notices(room_id);
        self.flush(room_id);
    }

    /// This node missed messages of a room that the store no longer has:
    /// its connections there cannot get them in order, so they are closed
    /// to resume (and be told `recovered: false`).
    fn lost_track(&mut self, room_id: &RoomId) {
        // What waited behind the missed messages is shown now.
        if let Some(room) = self.rooms.get_mut(room_id) {
            let held = std::mem::take(&mut room.held_notices);
            for (_, held) in held {
                self.release(room_id, held);
            }
        }
        let Some(room) = self.rooms.get(room_id) else {
            return;
        };
        // Acknowledgements that will not come: their senders go on (a
        // client retries an unacknowledged send by its clientMessageId).
        for (sender, _) in room.ahead.values().filter_map(|a| a.ack.as_ref()) {
            if self.awaiting_ack.remove(sender) {
                self.acked.push(*sender);
            }
        }
        let conns: Vec<ConnId> = room.local.values().flatten().copied().collect();
        for conn in conns {
            self.close(conn, CloseCode::TryAgainLater, "missed messages");
        }
    }
}

/// Stored frames as the encoders of `ROOM_JOINED` and `HISTORY` take them
/// (a frame that is not a message's is left out).
fn stored_frames(messages: &[StoredMessage]) -> Vec<MessageFrame> {
    messages
        .iter()
        .filter_map(|m| MessageFrame::from_stored(m.frame.clone()))
        .collect()
}

/// A `USER_JOINED` or `USER_LEFT` frame of a room.
fn presence_frame(room_id: &RoomId, who: Present, joined: bool) -> Bytes {
    let message = if joined {
        ServerMessage::UserJoined {
            room_id: room_id.0.to_string(),
            user: UserRef {
                user_id: who.user,
                username: who.username,
            },
        }
    } else {
        ServerMessage::UserLeft {
            room_id: room_id.0.to_string(),
            user_id: who.user,
            username: who.username,
        }
    };
    server::encode(&message, None)
}

/// The senders of messages read back that neither the replica nor the
/// room's list now shows: they joined and left while this node's events
/// were cut.
fn passers(
    room: &super::room::Room,
    users: &[Present],
    messages: &[StoredMessage],
) -> Vec<Present> {
    #[derive(serde::Deserialize)]
    struct Frame {
        payload: Sender,
    }
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Sender {
        user_id: String,
        username: String,
    }
    let mut out: Vec<Present> = Vec::new();
    for m in messages {
        let Ok(Frame { payload }) = serde_json::from_slice::<Frame>(&m.frame) else {
            continue;
        };
        let known = room.present.contains_key(payload.user_id.as_str())
            || users.iter().any(|u| u.user == payload.user_id)
            || out.iter().any(|u| u.user == payload.user_id);
        if !known {
            out.push(Present {
                user: payload.user_id,
                username: payload.username,
            });
        }
    }
    out
}
