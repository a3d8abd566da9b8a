//! Who is in which room: rooms made, joined and left, and connections
//! forgotten.

use std::collections::BTreeMap;

use super::emit::Except;
use super::hub::{Hub, Timer};
use super::log::MemoryLog;
use super::room::{Member, Room};
use super::session::ConnState;
use super::sorted_set::SortedSet;
use super::types::{ConnId, RoomId, UserId};
use crate::protocol::server::{self, ServerMessage, UserRef};
use crate::protocol::{ErrorCode, RoomKind};

impl Hub {
    pub(super) fn insert_room(
        &mut self,
        id: RoomId,
        name: String,
        description: String,
        kind: RoomKind,
        creator: Option<UserId>,
    ) {
        self.next_epoch += 1;
        let epoch = format!("{:x}-{}", self.instance, self.next_epoch);
        if let Some(user) = &creator {
            *self.rooms_created.entry(user.clone()).or_insert(0) += 1;
        }
        self.rooms.insert(
            id.clone(),
            Room {
                id,
                name,
                description,
                kind,
                created_at: self.now,
                creator,
                log: MemoryLog::new(epoch, self.limits.history_limit),
                members: BTreeMap::new(),
                typing: BTreeMap::new(),
                client_ids: BTreeMap::new(),
                empty_since: None,
                idle_deadline: None,
            },
        );
    }

    /// Deletes a user's room with its history (its idle time is over): its
    /// id is free again, and it no longer counts towards its creator's
    /// `ROOMS_PER_USER_MAX`.
    pub(super) fn delete_room(&mut self, room_id: &RoomId) {
        let Some(room) = self.rooms.remove(room_id) else {
            return;
        };
        debug_assert!(room.members.is_empty() && room.typing.is_empty());
        if let Some(deadline) = room.idle_deadline {
            self.timers
                .remove(&(deadline, Timer::RoomIdle(room_id.clone())));
        }
        if let Some(creator) = room.creator
            && let Some(n) = self.rooms_created.get_mut(&creator)
        {
            *n -= 1;
            if *n == 0 {
                self.rooms_created.remove(&creator);
            }
        }
        self.stats.rooms_deleted += 1;
    }

    /// Joins `conn` to the room (idempotent); tells the others when this is
    /// the user's first connection there.
    pub(super) fn add_member(&mut self, conn: ConnId, room_id: &RoomId) {
        let c = self.conns.get_mut(&conn).expect("caller checked");
        if !c.rooms.insert(room_id.clone()) {
            return;
        }
        self.memberships += 1;
        let session = c.session().expect("only authenticated connections join");
        let (user, username) = (session.user_id.clone(), session.username.clone());
        let room = self.rooms.get_mut(room_id).expect("caller checked");
        if room.empty_since.take().is_some() {
            // Someone is back: the room is not idle any more.
            self.arm_idle_timer(room_id);
        }
        let room = self.rooms.get_mut(room_id).expect("caller checked");
        let first = !room.members.contains_key(&user);
        room.members
            .entry(user.clone())
            .or_insert_with(|| Member {
                username: username.clone(),
                conns: SortedSet::default(),
            })
            .conns
            .insert(conn);
        if first {
            let frame = server::encode(
                &ServerMessage::UserJoined {
                    room_id: room_id.0.to_string(),
                    user: UserRef {
                        user_id: user.0.to_string(),
                        username: username.to_string(),
                    },
                },
                None,
            );
            self.broadcast(room_id, &frame, Except::Conn(conn));
        }
    }

    /// Removes `conn` from the room: ends the user's typing there, and tells
    /// the others when it was the user's last connection there.
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
        let user = c
            .session()
            .expect("only authenticated connections join")
            .user_id
            .clone();
        let room = self.rooms.get_mut(room_id).expect("joined rooms exist");
        // Typing ends first, while the user is still listed as a member.
        if let Some(deadline) = room.typing.remove(&user) {
            self.timers
                .remove(&(deadline, Timer::Typing(room_id.clone(), user.clone())));
            self.broadcast_typing(room_id, &user, false);
        }
        let room = self.rooms.get_mut(room_id).expect("joined rooms exist");
        let member = room
            .members
            .get_mut(&user)
            .expect("membership is two-sided");
        member.conns.remove(&conn);
        let last = member.conns.is_empty();
        let username = member.username.clone();
        if last {
            room.members.remove(&user);
            if room.members.is_empty() && room.creator.is_some() {
                // A user's room without members starts counting its idle
                // time (default rooms never go).
                room.empty_since = Some(self.now);
                self.arm_idle_timer(room_id);
            }
        }
        if last {
            let frame = server::encode(
                &ServerMessage::UserLeft {
                    room_id: room_id.0.to_string(),
                    user_id: user.0.to_string(),
                    username: username.to_string(),
                },
                None,
            );
            self.broadcast(room_id, &frame, Except::Conn(conn));
        }
    }

    /// Forgets a connection entirely: its rooms, its timers, its user entry.
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
                let limit = self.limits.send_bucket();
                if let Some(user) = self.users.get_mut(&session.user_id) {
                    user.conns.remove(&conn);
                    if user.conns.is_empty() {
                        let at = user.sends.full_at(limit).max(self.now);
                        self.timers
                            .insert((at, Timer::ForgetUser(session.user_id.clone())));
                    }
                }
            }
        }
    }

    /// Resolves a room the connection must have joined, answering
    /// `ROOM_NOT_FOUND` or `NOT_A_MEMBER` otherwise.
    pub(super) fn member_room(
        &mut self,
        conn: ConnId,
        room_id: &str,
        rid: Option<&str>,
    ) -> Option<RoomId> {
        let Some(room) = self.rooms.get(room_id) else {
            self.room_not_found(conn, room_id, rid);
            return None;
        };
        if !self.conns[&conn].rooms.contains(&room.id) {
            self.error(
                conn,
                ErrorCode::NotAMember,
                format!("not a member of {room_id}"),
                rid,
            );
            return None;
        }
        Some(room.id.clone())
    }
}
