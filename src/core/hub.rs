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
use super::pending::Pending;
use super::room::Room;
use super::session::{Conn, ConnState, User};
use super::sorted_set::SortedSet;
use super::stats::{Gauges, Stats};
use super::types::{ConnId, Instance, OpId, RoomId, Timestamp, UserId};
use crate::protocol::{CloseCode, ErrorCode, RoomKind};
use crate::rng::Rng;
use crate::store::{Holder, NodeId, Op, RoomRecord};

/// A timer: what happens at a deadline.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum Timer {
    /// The connection must have authenticated by now.
    AuthDeadline(ConnId),
    /// The connection's token has expired.
    TokenExpiry(ConnId),
    /// A user's typing indicator in a room lapses.
    Typing(RoomId, UserId),
    /// A user's room this node saw emptied may be deleted.
    RoomIdle(RoomId),
}

/// A user's room this node saw become empty, and when its idle timer fires.
#[derive(Debug, Clone, Copy)]
pub(super) struct Emptied {
    pub(super) since: Timestamp,
    pub(super) deadline: Option<Timestamp>,
}

/// All state of one node: its connections, and the rooms it has
/// connections in. What the whole service shares is the store's (see
/// `crate::store`); the hub asks for it with [`Output::Store`].
#[derive(Debug)]
pub struct Hub {
    pub(super) limits: Limits,
    /// Distinguishes this hub's epochs and message ids from those of any
    /// earlier run (the driver picks it: wall-clock based in production,
    /// seeded in the simulation).
    pub(super) instance: u64,
    /// This node, as presence counts it.
    pub(super) node: NodeId,
    /// Draws generated room ids (seeded with [`Instance::secret`]).
    pub(super) rng: Rng,
    pub(super) now: Timestamp,
    pub(super) conns: BTreeMap<ConnId, Conn>,
    pub(super) users: BTreeMap<UserId, User>,
    pub(super) rooms: BTreeMap<RoomId, Room>,
    /// Users' rooms this node saw emptied, until their idle timer asks the
    /// store to delete them.
    pub(super) emptied: BTreeMap<RoomId, Emptied>,
    pub(super) timers: BTreeSet<(Timestamp, Timer)>,
    pub(super) outputs: VecDeque<Output>,
    /// Store operations handed out and not answered yet.
    pub(super) pending: BTreeMap<OpId, Pending>,
    pub(super) next_op: u64,
    pub(super) next_message: u64,
    /// The number in the next room's epoch: never reused, so that a room
    /// deleted and created again starts a new epoch.
    pub(super) next_epoch: u64,
    pub(super) authenticated: u64,
    pub(super) memberships: u64,
    pub(super) stats: Stats,
    /// Connections whose last `SEND_MESSAGE` is stored but whose
    /// acknowledgement waits for its turn in the room: their next messages
    /// wait for it, so that replies keep the order of requests.
    pub(super) awaiting_ack: BTreeSet<ConnId>,
    /// Of those, the ones whose acknowledgement went out: to go on with.
    pub(super) acked: Vec<ConnId>,
    /// Joins whose outcome was unknown, being undone (their `Leave` not
    /// answered yet): a join of the same connection to the same room would
    /// be taken back by it, so it is answered `SERVER_ERROR` meanwhile.
    pub(super) undoing: BTreeSet<(ConnId, String)>,
}

impl Hub {
    /// A hub whose default rooms are asked of the store at `now` (created
    /// there unless they exist).
    pub fn new(
        limits: Limits,
        default_rooms: &[DefaultRoom],
        instance: Instance,
        now: Timestamp,
    ) -> Hub {
        let mut hub = Hub {
            limits,
            instance: instance.number,
            node: NodeId(format!("{:x}", instance.number).into()),
            rng: Rng::new(instance.secret),
            now,
            conns: BTreeMap::new(),
            users: BTreeMap::new(),
            rooms: BTreeMap::new(),
            emptied: BTreeMap::new(),
            timers: BTreeSet::new(),
            outputs: VecDeque::new(),
            pending: BTreeMap::new(),
            next_op: 0,
            next_message: 0,
            next_epoch: 0,
            authenticated: 0,
            memberships: 0,
            stats: Stats::default(),
            awaiting_ack: BTreeSet::new(),
            acked: Vec::new(),
            undoing: BTreeSet::new(),
        };
        let mut seen = BTreeSet::new();
        for room in default_rooms {
            if !seen.insert(room.id.clone()) {
                continue;
            }
            let record = hub.record(
                room.id.clone(),
                room.name.clone(),
                String::new(),
                RoomKind::Public,
                None,
            );
            hub.store(Pending::quiet(), Op::EnsureRoom { record });
        }
        hub
    }

    /// A new room's record, with a fresh epoch.
    pub(super) fn record(
        &mut self,
        id: String,
        name: String,
        description: String,
        kind: RoomKind,
        created_by: Option<&UserId>,
    ) -> RoomRecord {
        self.next_epoch += 1;
        RoomRecord {
            id,
            name,
            description,
            kind,
            created_at_ms: self.now.0,
            created_by: created_by.map(|u| u.0.to_string()),
            epoch: format!("{:x}-{}", self.instance, self.next_epoch),
        }
    }

    /// A connection of this node, as presence counts it.
    pub(super) fn holder(&self, conn: ConnId) -> Holder {
        Holder {
            node: self.node.clone(),
            conn: conn.0,
        }
    }

    /// Hands `op` to the driver; its reply finishes `pending`. When
    /// `pending` blocks its connection, the connection's next messages wait
    /// for that reply.
    pub(super) fn store(&mut self, pending: Pending, op: Op) {
        self.next_op += 1;
        let id = OpId(self.next_op);
        if pending.blocks
            && let Some(conn) = pending.conn
            && let Some(c) = self.conns.get_mut(&conn)
        {
            c.busy = true;
        }
        self.pending.insert(id, pending);
        self.outputs.push_back(Output::Store { id, op });
    }

    /// Store operations handed out and not answered yet.
    pub fn waiting_on_store(&self) -> usize {
        self.pending.len()
    }

    /// This node, as presence and the cluster's leases name it.
    pub fn node(&self) -> &NodeId {
        &self.node
    }

    /// The present time, as the last call gave it.
    pub fn now(&self) -> Timestamp {
        self.now
    }

    /// The limits in force.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Cumulative counters.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// Current gauges (`rooms`: the rooms this node has connections in).
    pub fn gauges(&self) -> Gauges {
        Gauges {
            connections: self.conns.len() as u64,
            authenticated: self.authenticated,
            rooms: self.rooms.len() as u64,
            memberships: self.memberships,
        }
    }

    /// Applies new limits (a configuration reload). A smaller history limit
    /// applies from the next read or send of each room (the store cuts the
    /// history to it first); buckets keep their level, capped at the new
    /// capacity; running auth and typing timers keep their deadlines. A new
    /// `ROOM_IDLE_TTL_MS` counts from when each empty room emptied (a room
    /// empty for longer than the new value goes at once); a smaller
    /// `MAX_ROOMS` deletes nothing, it only refuses creation until fewer
    /// rooms exist.
    pub fn set_limits(&mut self, now: Timestamp, limits: Limits) {
        self.tick(now);
        let ttl_changed = limits.room_idle_ttl_ms != self.limits.room_idle_ttl_ms;
        self.limits = limits;
        if ttl_changed {
            let empty: Vec<RoomId> = self.emptied.keys().cloned().collect();
            for room in &empty {
                self.arm_idle_timer(room);
            }
            self.tick(now);
        }
    }

    /// (Re)arms the idle timer of a room this node saw emptied, from when
    /// it emptied, or disarms it when `ROOM_IDLE_TTL_MS` is 0.
    pub(super) fn arm_idle_timer(&mut self, room_id: &RoomId) {
        let ttl = self.limits.room_idle_ttl_ms;
        let Some(e) = self.emptied.get_mut(room_id) else {
            return;
        };
        if let Some(old) = e.deadline.take() {
            self.timers.remove(&(old, Timer::RoomIdle(room_id.clone())));
        }
        if ttl > 0 {
            let deadline = e.since.plus_ms(ttl);
            e.deadline = Some(deadline);
            self.timers
                .insert((deadline, Timer::RoomIdle(room_id.clone())));
        }
    }

    /// A user's room this node saw empty since `since`: its idle timer runs.
    pub(super) fn emptied_since(&mut self, room_id: RoomId, since: Timestamp) {
        self.emptied.insert(
            room_id.clone(),
            Emptied {
                since,
                deadline: None,
            },
        );
        self.arm_idle_timer(&room_id);
    }

    /// The user `conn` is authenticated as, if it is.
    pub(super) fn user_of(&self, conn: ConnId) -> Option<UserId> {
        self.conns
            .get(&conn)
            .and_then(|c| c.session())
            .map(|s| s.user_id.clone())
    }

    /// A request of `conn` was paid for: its run of rate-limit rejections
    /// ends.
    pub(super) fn accepted(&mut self, conn: ConnId) {
        if let Some(c) = self.conns.get_mut(&conn) {
            c.rejected_in_row = 0;
        }
    }

    /// The room is not (or no longer) one this node waits on to go idle.
    pub(super) fn not_emptied(&mut self, room_id: &RoomId) {
        if let Some(e) = self.emptied.remove(room_id)
            && let Some(deadline) = e.deadline
        {
            self.timers
                .remove(&(deadline, Timer::RoomIdle(room_id.clone())));
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
                busy: false,
                waiting: None,
            },
        );
        self.timers.insert((deadline, Timer::AuthDeadline(conn)));
    }

    /// The connection is gone (closed by either side, or dropped). Leaves
    /// every room it had joined.
    pub fn disconnect(&mut self, now: Timestamp, conn: ConnId) {
        self.tick(now);
        self.awaiting_ack.remove(&conn);
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
                        .emptied
                        .get(&room)
                        .is_some_and(|e| e.deadline == Some(at))
                    {
                        self.emptied.remove(&room);
                        let op = Op::DeleteIfIdle {
                            room: room.0.to_string(),
                            idle_ttl_ms: self.limits.room_idle_ttl_ms,
                            now_ms: self.now.0,
                        };
                        self.store(Pending::deleting(), op);
                    }
                }
            }
        }
    }
}
