//! Who of this node is in which room: connections put in a room once the
//! store said so, taken out at once (the store told afterwards), and
//! connections forgotten.

use std::sync::Arc;

use super::hub::{Hub, Timer};
use super::output::Output;
use super::pending::{Pending, Wait};
use super::room::{Room, Shown};
use super::session::ConnState;
use super::types::{ConnId, RoomId, UserId};
use crate::store::{Op, Present, RoomRecord};

impl Hub {
    /// Puts `conn` in the room the store just joined it to: this node holds
    /// the room from now on if it did not (its deliveries start after
    /// `last_seq`), with the users present as the store listed them.
    pub(super) fn add_member(
        &mut self,
        conn: ConnId,
        record: &RoomRecord,
        users: &[Present],
        last_seq: u64,
        presence_seq: u64,
    ) {
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        let Some(session) = c.session() else {
            return;
        };
        let (user, username) = (session.user_id.clone(), session.username.clone());
        let room_id = RoomId(Arc::from(record.id.as_str()));
        let fresh = c.rooms.insert(room_id.clone());
        if fresh {
            self.memberships += 1;
        }
        self.not_emptied(&room_id);
        let created = !self.rooms.contains_key(&room_id);
        let room = self.rooms.entry(room_id.clone()).or_insert_with(|| {
            self.outputs.push_back(Output::Subscribe {
                room: record.id.clone(),
            });
            Room::new(record.clone(), last_seq)
        });
        // A room this node already holds keeps its presence: it follows the
        // room's changes in their order, and the ones up to this join's
        // list are not shown to the joiner again.
        if !created {
            if presence_seq > room.presence_seen {
                room.presence_after.insert(
                    conn,
                    Shown {
                        pseq: presence_seq,
                        users: users.to_vec(),
                    },
                );
            }
            room.local.entry(user).or_default().insert(conn);
            return self.deliveries_from(conn, &room_id, last_seq);
        }
        // A room new here takes the store's list as it is; the joiner's
        // entry shares its session's strings.
        room.presence_seen = presence_seq;
        for p in users {
            let (id, name) = if p.user == *user.0 {
                let name = if p.username == *username {
                    username.clone()
                } else {
                    Arc::from(p.username.as_str())
                };
                (user.clone(), name)
            } else {
                (
                    UserId(Arc::from(p.user.as_str())),
                    Arc::from(p.username.as_str()),
                )
            };
            room.present.insert(id, name);
        }
        room.local.entry(user).or_default().insert(conn);
        self.deliveries_from(conn, &room_id, last_seq);
    }

    /// Where `conn`'s deliveries of a room start: its `ROOM_JOINED` carried
    /// the messages up to `last_seq`.
    fn deliveries_from(&mut self, conn: ConnId, room_id: &RoomId, last_seq: u64) {
        let Some(room) = self.rooms.get_mut(room_id) else {
            return;
        };
        // Messages up to `last_seq` are in its ROOM_JOINED; only when this
        // node has not delivered them all yet must it skip them for it.
        if last_seq > room.delivered {
            room.joined_after.insert(conn, last_seq);
        } else if last_seq < room.delivered {
            // The store joined it before this node delivered the messages
            // after `last_seq` (their events overtook the join's reply):
            // they are read back and delivered to it alone, the others
            // having had them.
            let delivered = room.delivered;
            for (c, after) in room.local.values().flatten().map(|c| (*c, delivered)) {
                if c != conn {
                    let entry = room.joined_after.entry(c).or_insert(after);
                    *entry = (*entry).max(after);
                }
            }
            room.delivered = last_seq;
            self.backfill(room_id);
        }
    }

    /// Takes `conn` out of the room at once (nothing more reaches it from
    /// there), and tells the store: its typing there ends first, then it
    /// leaves.
    pub(super) fn leave(&mut self, conn: ConnId, room_id: &RoomId) {
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        if c.rooms.remove(room_id) {
            self.left(conn, room_id);
        }
    }

    /// The rest of [`leave`](Hub::leave), once the room is off the
    /// connection's list.
    fn left(&mut self, conn: ConnId, room_id: &RoomId) {
        let Some(c) = self.conns.get(&conn) else {
            return;
        };
        self.memberships -= 1;
        let session = c.session().expect("only authenticated connections join");
        let (user, username) = (session.user_id.clone(), session.username.to_string());
        let Some(room) = self.rooms.get_mut(room_id) else {
            return;
        };
        if room.typing.contains_key(&user) {
            let holder = self.holder(conn);
            self.store(
                Pending::quiet(),
                Op::Typing {
                    room: room_id.0.to_string(),
                    user: user.0.to_string(),
                    username,
                    is_typing: false,
                    holder,
                },
            );
        }
        let room = self.rooms.get_mut(room_id).expect("checked above");
        if let Some(conns) = room.local.get_mut(&user) {
            conns.remove(&conn);
            if conns.is_empty() {
                room.local.remove(&user);
            }
        }
        room.joined_after.remove(&conn);
        if room.is_unused() {
            self.drop_room(room_id);
        }
        let op = Op::Leave {
            room: room_id.0.to_string(),
            user: user.0.to_string(),
            holder: self.holder(conn),
            now_ms: self.now.0,
        };
        self.store(Pending::leave(conn, room_id.clone()), op);
    }

    /// This node no longer holds the room (no connection of it is there).
    pub(super) fn drop_room(&mut self, room_id: &RoomId) {
        let Some(room) = self.rooms.remove(room_id) else {
            return;
        };
        for (user, deadline) in room.typing {
            self.timers
                .remove(&(deadline, Timer::Typing(room_id.clone(), user)));
        }
        self.outputs.push_back(Output::Unsubscribe {
            room: room_id.0.to_string(),
        });
    }

    /// Forgets a connection entirely: its rooms, its timers, its user entry,
    /// what waited behind it.
    pub(super) fn forget(&mut self, conn: ConnId) {
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        // Taken whole (removing each from the front would be quadratic in
        // the rooms joined), left in the same order.
        let rooms = std::mem::take(&mut c.rooms);
        for room in &rooms {
            self.left(conn, room);
        }
        let c = self.conns.remove(&conn).expect("checked above");
        match c.state {
            ConnState::ExpectAuthenticate { deadline } => {
                self.timers.remove(&(deadline, Timer::AuthDeadline(conn)));
            }
            ConnState::Authenticated(session) => {
                self.authenticated -= 1;
                self.timers
                    .remove(&(session.expires_at, Timer::TokenExpiry(conn)));
                if let Some(user) = self.users.get_mut(&session.user_id) {
                    user.conns.remove(&conn);
                    if user.conns.is_empty() {
                        self.users.remove(&session.user_id);
                    }
                }
            }
        }
    }

    /// The id of a room `conn` is in (the id this node holds it by: shared,
    /// not allocated).
    pub(super) fn joined(&self, conn: ConnId, room_id: &str) -> Option<RoomId> {
        let (id, _) = self.rooms.get_key_value(room_id)?;
        self.conns
            .get(&conn)
            .is_some_and(|c| c.rooms.contains(room_id))
            .then(|| id.clone())
    }

    /// Resolves a room the connection must have joined. Otherwise the store
    /// is asked whether the room exists, and the request is answered
    /// `NOT_A_MEMBER` or `ROOM_NOT_FOUND`.
    pub(super) fn member_room(
        &mut self,
        conn: ConnId,
        room_id: &str,
        rid: Option<&str>,
    ) -> Option<RoomId> {
        if let Some(room) = self.joined(conn, room_id) {
            return Some(room);
        }
        let wait = Wait::Lookup {
            room_id: room_id.to_owned(),
        };
        let op = Op::Lookup {
            room: room_id.to_owned(),
        };
        self.store(Pending::answer(conn, rid, wait), op);
        None
    }
}
