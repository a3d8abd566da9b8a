//! The [`Hub`]: all state of one server, and the calls a driver makes.
//!
//! The handling of a message ([`Hub::handle`]) is in `requests`; this file
//! holds the hub's state, its lifecycle calls and the timers.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;

use base64::Engine as _;

use super::bucket::Bucket;
use super::limits::{DefaultRoom, Limits};
use super::output::Output;
use super::room::{Room, forget_client_id};
use super::session::{Conn, ConnState, User};
use super::sorted_set::SortedSet;
use super::stats::{Gauges, Stats};
use super::types::{ConnId, Instance, RoomId, Timestamp, UserId};
use crate::protocol::{CloseCode, ErrorCode, RoomKind};
use crate::rng::Rng;

/// A timer: what happens at a deadline.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum Timer {
    /// The connection must have authenticated by now.
    AuthDeadline(ConnId),
    /// The connection's token has expired.
    TokenExpiry(ConnId),
    /// A user's typing indicator in a room lapses.
    Typing(RoomId, UserId),
    /// A user without connections may be forgotten (its bucket is full).
    ForgetUser(UserId),
    /// A user's room without members may be deleted.
    RoomIdle(RoomId),
}

/// All room state of one server.
#[derive(Debug)]
pub struct Hub {
    pub(super) limits: Limits,
    /// Distinguishes this hub's epochs and message ids from those of any
    /// earlier run (the driver picks it: wall-clock based in production,
    /// seeded in the simulation).
    pub(super) instance: u64,
    /// Draws generated room ids (seeded with [`Instance::secret`]).
    pub(super) rng: Rng,
    pub(super) now: Timestamp,
    pub(super) conns: BTreeMap<ConnId, Conn>,
    pub(super) users: BTreeMap<UserId, User>,
    pub(super) rooms: BTreeMap<RoomId, Room>,
    /// Rooms each user has created that still exist, for
    /// `ROOMS_PER_USER_MAX`.
    pub(super) rooms_created: BTreeMap<UserId, u32>,
    pub(super) timers: BTreeSet<(Timestamp, Timer)>,
    pub(super) outputs: VecDeque<Output>,
    pub(super) next_message: u64,
    /// The number in the next room's epoch: never reused, so that a room
    /// deleted and created again starts a new epoch.
    pub(super) next_epoch: u64,
    pub(super) authenticated: u64,
    pub(super) memberships: u64,
    pub(super) stats: Stats,
}

impl Hub {
    /// A hub whose default rooms exist from `now`.
    pub fn new(
        limits: Limits,
        default_rooms: &[DefaultRoom],
        instance: Instance,
        now: Timestamp,
    ) -> Hub {
        let mut hub = Hub {
            limits,
            instance: instance.number,
            rng: Rng::new(instance.secret),
            now,
            conns: BTreeMap::new(),
            users: BTreeMap::new(),
            rooms: BTreeMap::new(),
            rooms_created: BTreeMap::new(),
            timers: BTreeSet::new(),
            outputs: VecDeque::new(),
            next_message: 0,
            next_epoch: 0,
            authenticated: 0,
            memberships: 0,
            stats: Stats::default(),
        };
        for room in default_rooms {
            let id = RoomId(Arc::from(room.id.as_str()));
            if !hub.rooms.contains_key(&id) {
                hub.insert_room(id, room.name.clone(), String::new(), RoomKind::Public, None);
            }
        }
        hub
    }

    /// The limits in force.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Cumulative counters.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// Current gauges.
    pub fn gauges(&self) -> Gauges {
        Gauges {
            connections: self.conns.len() as u64,
            authenticated: self.authenticated,
            rooms: self.rooms.len() as u64,
            memberships: self.memberships,
        }
    }

    /// Applies new limits (a configuration reload). A smaller history limit
    /// evicts at once; buckets keep their level, capped at the new capacity;
    /// running auth and typing timers keep their deadlines. A new
    /// `ROOM_IDLE_TTL_MS` counts from when each empty room emptied (a room
    /// empty for longer than the new value goes at once); a smaller
    /// `MAX_ROOMS` deletes nothing, it only refuses creation until fewer
    /// rooms exist.
    pub fn set_limits(&mut self, now: Timestamp, limits: Limits) {
        self.tick(now);
        let history_limit = limits.history_limit;
        let ttl_changed = limits.room_idle_ttl_ms != self.limits.room_idle_ttl_ms;
        self.limits = limits;
        for room in self.rooms.values_mut() {
            for old in room.log.set_limit(history_limit) {
                self.stats.history_evictions += 1;
                forget_client_id(&mut room.client_ids, &old);
            }
        }
        if ttl_changed {
            let empty: Vec<RoomId> = self
                .rooms
                .values()
                .filter(|r| r.empty_since.is_some())
                .map(|r| r.id.clone())
                .collect();
            for room in &empty {
                self.arm_idle_timer(room);
            }
            self.tick(now);
        }
    }

    /// (Re)arms the idle timer of an empty room from when it emptied, or
    /// disarms it when `ROOM_IDLE_TTL_MS` is 0.
    pub(super) fn arm_idle_timer(&mut self, room_id: &RoomId) {
        let ttl = self.limits.room_idle_ttl_ms;
        let Some(room) = self.rooms.get_mut(room_id) else {
            return;
        };
        if let Some(old) = room.idle_deadline.take() {
            self.timers.remove(&(old, Timer::RoomIdle(room_id.clone())));
        }
        if let Some(since) = room.empty_since
            && ttl > 0
        {
            let deadline = since.plus_ms(ttl);
            room.idle_deadline = Some(deadline);
            self.timers
                .insert((deadline, Timer::RoomIdle(room_id.clone())));
        }
    }

    /// A new room id: `room_` and 96 random bits in base64url (16
    /// characters). Two draws of the hub's generator, each through a one-way
    /// hash, so that an id reveals nothing that predicts the next one.
    pub(super) fn generate_room_id(&mut self) -> RoomId {
        fn one_way(x: u64) -> u64 {
            use std::hash::{BuildHasher as _, BuildHasherDefault, DefaultHasher};
            BuildHasherDefault::<DefaultHasher>::default().hash_one(x)
        }
        loop {
            let high = one_way(self.rng.next_u64());
            let low = one_way(self.rng.next_u64()) as u32;
            let mut bits = [0u8; 12];
            bits[..8].copy_from_slice(&high.to_be_bytes());
            bits[8..].copy_from_slice(&low.to_be_bytes());
            let id = format!(
                "room_{}",
                base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bits)
            );
            let id = RoomId(Arc::from(id));
            if !self.rooms.contains_key(&id) {
                return id;
            }
        }
    }

    /// The next moment [`Hub::tick`] has something to do.
    pub fn next_deadline(&self) -> Option<Timestamp> {
        self.timers.first().map(|(at, _)| *at)
    }

    /// The next thing the driver must do, if any.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.outputs.pop_front()
    }

    /// Whether the core knows this connection (it forgets closed ones).
    pub fn is_connected(&self, conn: ConnId) -> bool {
        self.conns.contains_key(&conn)
    }

    fn advance(&mut self, now: Timestamp) {
        debug_assert!(
            now >= self.now,
            "time went backwards: {now:?} < {:?}",
            self.now
        );
        self.now = self.now.max(now);
    }

    /// A WebSocket connection was established.
    pub fn connect(&mut self, now: Timestamp, conn: ConnId) {
        self.tick(now);
        if self.conns.contains_key(&conn) {
            return;
        }
        let deadline = self.now.plus_ms(self.limits.auth_timeout_ms);
        self.conns.insert(
            conn,
            Conn {
                state: ConnState::ExpectAuthenticate { deadline },
                requests: Bucket::full(self.limits.request_bucket(), self.now),
                rejected_in_row: 0,
                failed_auths: 0,
                rooms: SortedSet::default(),
            },
        );
        self.timers.insert((deadline, Timer::AuthDeadline(conn)));
    }

    /// The connection is gone (closed by either side, or dropped). Leaves
    /// every room it had joined.
    pub fn disconnect(&mut self, now: Timestamp, conn: ConnId) {
        self.tick(now);
        self.forget(conn);
    }

    /// Fires every timer due at `now`.
    pub fn tick(&mut self, now: Timestamp) {
        self.advance(now);
        while let Some((at, _)) = self.timers.first() {
            if *at > self.now {
                break;
            }
            let (at, timer) = self.timers.pop_first().expect("checked non-empty");
            match timer {
                Timer::AuthDeadline(conn) => {
                    self.error(
                        conn,
                        ErrorCode::Unauthorized,
                        "authentication timeout",
                        None,
                    );
                    self.close(conn, CloseCode::Policy, "authentication timeout");
                }
                Timer::TokenExpiry(conn) => {
                    self.error(conn, ErrorCode::Unauthorized, "token expired", None);
                    self.close(conn, CloseCode::Policy, "token expired");
                }
                Timer::Typing(room, user) => {
                    let Some(r) = self.rooms.get_mut(&room) else {
                        continue;
                    };
                    if r.typing.get(&user) == Some(&at) {
                        r.typing.remove(&user);
                        self.broadcast_typing(&room, &user, false);
                    }
                }
                Timer::RoomIdle(room) => {
                    if self
                        .rooms
                        .get(&room)
                        .is_some_and(|r| r.idle_deadline == Some(at) && r.members.is_empty())
                    {
                        self.delete_room(&room);
                    }
                }
                Timer::ForgetUser(user) => {
                    // The user may have come back, sent, and gone again since
                    // this timer was set: forget it only if its bucket is
                    // really full now (a later timer covers the other case).
                    let limit = self.limits.send_bucket();
                    if self
                        .users
                        .get(&user)
                        .is_some_and(|u| u.conns.is_empty() && u.sends.full_at(limit) <= self.now)
                    {
                        self.users.remove(&user);
                    }
                }
            }
        }
    }
}
