//! The reference model: the contract re-stated plainly, predicting every
//! frame and close of a step.

use std::collections::{BTreeMap, BTreeSet};

use super::limits::{ROOMS, SLOTS, WINDOW_MS};
use crate::core::ConnId;
use crate::core::tests::harness::T0;
use crate::protocol::server::{ChatMessage, RoomInfo, ServerFrame, ServerMessage, UserRef};
use crate::protocol::time::rfc3339_ms;
use crate::protocol::{ErrorCode, RoomKind};

#[derive(Debug)]
pub(super) struct ConnModel {
    pub(super) user: Option<usize>,
    pub(super) auth_deadline: u64,
    pub(super) rooms: BTreeSet<usize>,
    pub(super) failed_auths: u32,
    pub(super) rejected_in_row: u32,
    /// When this connection's bucket was charged.
    pub(super) charges: Vec<u64>,
}

#[derive(Debug, Default)]
pub(super) struct RoomModel {
    /// Every message the hub accepted, learned from its acknowledgements.
    pub(super) accepted: Vec<ChatMessage>,
    /// Learned from the first `ROOM_JOINED`.
    pub(super) epoch: Option<String>,
    /// Typing users and when their indicator lapses.
    pub(super) typing: BTreeMap<usize, u64>,
}

/// The contract, re-stated plainly; plus the facts learned from outputs.
pub(super) struct Model {
    pub(super) history_limit: usize,
    pub(super) now: u64,
    pub(super) conns: BTreeMap<ConnId, ConnModel>,
    pub(super) rooms: [RoomModel; 3],
    /// When each user's send bucket was charged.
    pub(super) user_charges: BTreeMap<usize, Vec<u64>>,
    pub(super) message_ids: BTreeSet<String>,
    /// Whether a user whose connections are all gone may come back. When
    /// not, the next user of its slot takes its place.
    pub(super) returning: bool,
    /// Per slot, the number of the user who authenticates now.
    pub(super) generation: [usize; 3],
}

/// What one step must produce.
#[derive(Default)]
pub(super) struct Expected {
    pub(super) frames: BTreeMap<ConnId, Vec<ServerFrame>>,
    pub(super) closes: BTreeMap<ConnId, u16>,
}

impl Expected {
    pub(super) fn push(&mut self, conn: ConnId, message: ServerMessage, rid: Option<&str>) {
        self.frames.entry(conn).or_default().push(ServerFrame {
            message,
            request_id: rid.map(str::to_owned),
        });
    }

    pub(super) fn error(&mut self, conn: ConnId, code: ErrorCode, rid: Option<&str>) {
        self.push(
            conn,
            ServerMessage::Error {
                code,
                message: String::new(),
                retry_after_ms: None,
            },
            rid,
        );
    }
}

/// A token bucket of `capacity` per `WINDOW_MS` that was charged at
/// `charges`: takes one token at `now`, or says when one will be there.
///
/// A bucket that started full holds, in units of `1/WINDOW_MS` token,
/// `min(C*W, min_i(C*W + C*(now - s_i) - W*n_i))` where `n_i` counts the
/// charges since the `i`-th.
pub(super) fn try_charge(charges: &mut Vec<u64>, now: u64, capacity: u64) -> Result<(), u64> {
    let full = capacity * WINDOW_MS;
    let total = charges.len() as u64;
    let mut level = full;
    for (i, &at) in charges.iter().enumerate() {
        let since = total - i as u64;
        let candidate = (full + capacity * (now - at)).saturating_sub(WINDOW_MS * since);
        level = level.min(candidate);
    }
    if level >= WINDOW_MS {
        charges.push(now);
        Ok(())
    } else {
        Err((WINDOW_MS - level).div_ceil(capacity))
    }
}

/// The id (and name) of user number `user`.
pub(super) fn name(user: usize) -> String {
    format!("{}{}", SLOTS[user % SLOTS.len()], user / SLOTS.len())
}

pub(super) fn user_ref(user: usize) -> UserRef {
    UserRef {
        user_id: name(user),
        username: name(user),
    }
}

impl Model {
    pub(super) fn new(history_limit: usize, returning: bool) -> Model {
        Model {
            history_limit,
            now: T0,
            conns: BTreeMap::new(),
            rooms: Default::default(),
            user_charges: BTreeMap::new(),
            message_ids: BTreeSet::new(),
            returning,
            generation: [0; 3],
        }
    }

    /// The user who authenticates in `slot` now.
    pub(super) fn current_user(&self, slot: usize) -> usize {
        slot + SLOTS.len() * self.generation[slot]
    }

    pub(super) fn retained(&self, room: usize) -> &[ChatMessage] {
        let all = &self.rooms[room].accepted;
        &all[all.len().saturating_sub(self.history_limit)..]
    }

    pub(super) fn last_seq(&self, room: usize) -> u64 {
        self.rooms[room].accepted.len() as u64
    }

    /// Live connections joined to `room`.
    pub(super) fn members(&self, room: usize) -> Vec<ConnId> {
        self.conns
            .iter()
            .filter(|(_, c)| c.rooms.contains(&room))
            .map(|(id, _)| *id)
            .collect()
    }

    /// Connections joined to `room` of users other than `user`.
    pub(super) fn others(&self, room: usize, user: usize) -> Vec<ConnId> {
        self.conns
            .iter()
            .filter(|(_, c)| c.rooms.contains(&room) && c.user != Some(user))
            .map(|(id, _)| *id)
            .collect()
    }

    pub(super) fn users_in(&self, room: usize) -> BTreeSet<usize> {
        self.conns
            .values()
            .filter(|c| c.rooms.contains(&room))
            .filter_map(|c| c.user)
            .collect()
    }

    pub(super) fn room_info(&self, room: usize) -> RoomInfo {
        RoomInfo {
            id: ROOMS[room].to_owned(),
            name: format!("Room {room}"),
            description: String::new(),
            kind: RoomKind::Public,
            member_count: self.users_in(room).len() as u64,
            created_at: rfc3339_ms(T0),
            created_by: "system".to_owned(),
        }
    }

    pub(super) fn typing_update(
        &self,
        room: usize,
        user: usize,
        is_typing: bool,
        exp: &mut Expected,
    ) {
        for c in self.others(room, user) {
            exp.push(
                c,
                ServerMessage::TypingUpdate {
                    room_id: ROOMS[room].to_owned(),
                    user_id: name(user),
                    username: name(user),
                    is_typing,
                },
                None,
            );
        }
    }

    /// `conn` leaves `room`: typing ends, and the others see the user go
    /// when this was its last connection there.
    pub(super) fn leave(&mut self, conn: ConnId, room: usize, exp: &mut Expected) {
        let c = self.conns.get_mut(&conn).expect("live");
        let user = c.user.expect("members are authenticated");
        c.rooms.remove(&room);
        if self.rooms[room].typing.remove(&user).is_some() {
            self.typing_update(room, user, false, exp);
        }
        if !self.users_in(room).contains(&user) {
            for other in self.members(room) {
                exp.push(
                    other,
                    ServerMessage::UserLeft {
                        room_id: ROOMS[room].to_owned(),
                        user_id: name(user),
                        username: name(user),
                    },
                    None,
                );
            }
        }
    }

    /// The connection is gone: it leaves every room.
    pub(super) fn forget(&mut self, conn: ConnId, exp: &mut Expected) {
        let rooms: Vec<usize> = self.conns[&conn].rooms.iter().copied().collect();
        for room in rooms {
            self.leave(conn, room, exp);
        }
        let user = self.conns.remove(&conn).and_then(|c| c.user);
        if let Some(user) = user {
            let gone = !self.conns.values().any(|c| c.user == Some(user));
            if gone && !self.returning {
                let slot = user % SLOTS.len();
                self.generation[slot] = self.generation[slot].max(user / SLOTS.len() + 1);
            }
        }
    }

    pub(super) fn close(&mut self, conn: ConnId, exp: &mut Expected) {
        self.forget(conn, exp);
        exp.closes.insert(conn, 1008);
    }

    /// Time passes to `now`: auth timeouts and typing timeouts.
    pub(super) fn advance(&mut self, now: u64, exp: &mut Expected) {
        self.now = now;
        let late: Vec<ConnId> = self
            .conns
            .iter()
            .filter(|(_, c)| c.user.is_none() && c.auth_deadline <= now)
            .map(|(id, _)| *id)
            .collect();
        for conn in late {
            exp.error(conn, ErrorCode::Unauthorized, None);
            self.close(conn, exp);
        }
        for room in 0..ROOMS.len() {
            let lapsed: Vec<usize> = self.rooms[room]
                .typing
                .iter()
                .filter(|(_, deadline)| **deadline <= now)
                .map(|(user, _)| *user)
                .collect();
            for user in lapsed {
                self.rooms[room].typing.remove(&user);
                self.typing_update(room, user, false, exp);
            }
        }
    }
}
