//! Properties of the core over random operation sequences (quickcheck).
//!
//! A scenario is a random list of client operations (connect, authenticate as
//! one of three users, join or leave one of three rooms, send with an
//! optional `clientMessageId` from a small set, typing, history, time passing,
//! disconnect) run against a [`Hub`](super::Hub) with small limits. After
//! every step two things are checked:
//!
//! * **invariants**, from the outputs alone: history never exceeds
//!   `HISTORY_LIMIT` and equals the newest accepted messages; `seq` grows by
//!   exactly one per accepted message in each room; no user has more accepted
//!   sends in any window `[t, t+W]` than `C + floor(len*C/W)`; recovery
//!   returns exactly the missing messages when `recovered: true` and every
//!   retained one when `false`; a `clientMessageId` retry never creates a
//!   second message; typing updates never reach the typist.
//! * **the reference model**: a plain re-statement of the contract predicts,
//!   for every connection, exactly the frames (and closes) that step must
//!   produce; the hub's outputs must match it (per connection, in any order
//!   within the step; error message texts are not compared).
//!
//! The accepted messages the model knows are those the hub acknowledged, so
//! the checks need nothing but the frames.
//!
//! In the properties run by default, a user whose connections are all gone
//! never comes back: the next user of its slot (`ann0` → `ann1`) takes its
//! place. [`prop_returning_users_keep_their_send_bucket`] lifts that
//! restriction; it is ignored while the core forgets the send bucket of a
//! user who returns (see
//! `core::tests::rate_limits::a_stale_forget_timer_does_not_reset_the_send_bucket`).
//! Once that is fixed, it can run by default and the restriction can go.

use std::collections::{BTreeMap, BTreeSet};

use quickcheck::{Arbitrary, Gen, QuickCheck, TestResult};
use serde_json::json;

use super::tests::harness::{T0, TestHub, refused_token};
use super::{AUTH_FAILURES_MAX, ConnId, Limits, Output};
use crate::protocol::server::{ChatMessage, RoomInfo, ServerFrame, ServerMessage, UserRef};
use crate::protocol::time::rfc3339_ms;
use crate::protocol::{ErrorCode, MessageKind, RoomKind};

/// Users come in three slots; the `g`-th user of slot `s` is `{SLOTS[s]}{g}`.
const SLOTS: [&str; 3] = ["ann", "ben", "cat"];
const ROOMS: [&str; 3] = ["r0", "r1", "r2"];
const CLIENT_IDS: [&str; 3] = ["k0", "k1", "k2"];
/// `RATE_LIMIT_MESSAGES`.
const SEND_CAPACITY: u64 = 5;
/// `RATE_LIMIT_REQUESTS`.
const REQUEST_CAPACITY: u64 = 12;
/// `RATE_LIMIT_WINDOW_MS`.
const WINDOW_MS: u64 = 2_000;
const DISCONNECT_AFTER: u32 = 4;
const AUTH_TIMEOUT_MS: u64 = 4_000;
const TYPING_TIMEOUT_MS: u64 = 1_500;

fn limits(history_limit: usize) -> Limits {
    Limits {
        auth_timeout_ms: AUTH_TIMEOUT_MS,
        auth_failures_max: AUTH_FAILURES_MAX,
        history_limit,
        typing_timeout_ms: TYPING_TIMEOUT_MS,
        rate_limit_messages: SEND_CAPACITY,
        rate_limit_requests: REQUEST_CAPACITY,
        rate_limit_window_ms: WINDOW_MS,
        rate_limit_disconnect_after: DISCONNECT_AFTER,
        rooms_per_user_max: 10,
    }
}

// ----- operations -------------------------------------------------------------

/// Which epoch a recovering `JOIN_ROOM` sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum EpochChoice {
    Absent,
    Current,
    Stale,
}

/// Who does something where. Connections are picked among the live ones by
/// index (modulo their number), so that any sub-sequence of a scenario is
/// still a valid scenario. Unless `stray`, the pick prefers authenticated
/// connections and rooms the connection has joined, so that most requests
/// do something; a stray one may hit an unauthenticated connection or a room
/// it has not joined.
#[derive(Debug, Clone, Copy)]
struct Target {
    conn: u8,
    room: u8,
    stray: bool,
}

/// One step.
#[derive(Debug, Clone)]
enum Op {
    /// A new connection, authenticating at once as that user if given.
    Connect {
        auth: Option<u8>,
    },
    /// `AUTHENTICATE` as the current user of a slot (preferably on a
    /// connection that has not authenticated yet).
    Auth {
        conn: u8,
        slot: u8,
    },
    AuthRefused {
        conn: u8,
    },
    Join {
        to: Target,
        since: Option<u8>,
        epoch: EpochChoice,
    },
    Leave {
        to: Target,
    },
    Send {
        to: Target,
        client_id: Option<u8>,
    },
    Typing {
        to: Target,
        on: bool,
    },
    History {
        to: Target,
        before: Option<u8>,
        limit: u8,
    },
    Advance(u16),
    Disconnect {
        conn: u8,
    },
}

/// Relative weights of each kind of operation, and the longest time step.
struct Mix {
    connect: u32,
    auth: u32,
    auth_refused: u32,
    join: u32,
    leave: u32,
    send: u32,
    typing: u32,
    history: u32,
    advance: u32,
    disconnect: u32,
    /// Percentage of joins that try to recover (`sinceSeq`).
    recover_percent: u8,
    advance_max_ms: u16,
}

const MIXES: [Mix; 4] = [
    // Everything.
    Mix {
        connect: 6,
        auth: 10,
        auth_refused: 2,
        join: 14,
        leave: 5,
        send: 28,
        typing: 10,
        history: 8,
        advance: 12,
        disconnect: 5,
        recover_percent: 50,
        advance_max_ms: 3_000,
    },
    // Bursts of sends: rate limits, eviction, retries.
    Mix {
        connect: 3,
        auth: 5,
        auth_refused: 0,
        join: 6,
        leave: 1,
        send: 60,
        typing: 5,
        history: 5,
        advance: 13,
        disconnect: 2,
        recover_percent: 50,
        advance_max_ms: 700,
    },
    // Connections coming and going, recovering as they rejoin.
    Mix {
        connect: 12,
        auth: 14,
        auth_refused: 1,
        join: 20,
        leave: 6,
        send: 20,
        typing: 4,
        history: 6,
        advance: 8,
        disconnect: 12,
        recover_percent: 85,
        advance_max_ms: 3_000,
    },
    // Users leaving altogether and coming back, sending in bursts.
    Mix {
        connect: 15,
        auth: 2,
        auth_refused: 0,
        join: 12,
        leave: 0,
        send: 45,
        typing: 0,
        history: 0,
        advance: 12,
        disconnect: 14,
        recover_percent: 20,
        advance_max_ms: 1_000,
    },
];

fn small(g: &mut Gen, n: u8) -> u8 {
    u8::arbitrary(g) % n
}

impl Op {
    fn arbitrary_in(g: &mut Gen, mix: &Mix) -> Op {
        let weights = [
            mix.connect,
            mix.auth,
            mix.auth_refused,
            mix.join,
            mix.leave,
            mix.send,
            mix.typing,
            mix.history,
            mix.advance,
            mix.disconnect,
        ];
        let total: u32 = weights.iter().sum();
        let mut pick = u32::arbitrary(g) % total;
        let mut kind = 0;
        while pick >= weights[kind] {
            pick -= weights[kind];
            kind += 1;
        }
        let conn = u8::arbitrary(g);
        let to = Target {
            conn,
            room: small(g, 3),
            stray: small(g, 100) < 12,
        };
        match kind {
            0 => Op::Connect {
                auth: (small(g, 100) < 85).then(|| small(g, 3)),
            },
            1 => Op::Auth {
                conn,
                slot: small(g, 3),
            },
            2 => Op::AuthRefused { conn },
            3 => Op::Join {
                to,
                since: (small(g, 100) < mix.recover_percent).then(|| u8::arbitrary(g)),
                epoch: *g
                    .choose(&[
                        EpochChoice::Absent,
                        EpochChoice::Current,
                        EpochChoice::Current,
                        EpochChoice::Stale,
                    ])
                    .expect("non-empty"),
            },
            4 => Op::Leave { to },
            5 => Op::Send {
                to,
                client_id: bool::arbitrary(g).then(|| small(g, 3)),
            },
            6 => Op::Typing {
                to,
                on: small(g, 4) != 0,
            },
            7 => Op::History {
                to,
                before: bool::arbitrary(g).then(|| u8::arbitrary(g)),
                limit: 1 + small(g, 8),
            },
            8 => Op::Advance(u16::arbitrary(g) % (mix.advance_max_ms + 1)),
            _ => Op::Disconnect { conn },
        }
    }
}

impl Arbitrary for Op {
    fn arbitrary(g: &mut Gen) -> Op {
        Op::arbitrary_in(g, &MIXES[0])
    }
}

/// A history limit and a list of operations, drawn with mix number `MIX`.
#[derive(Debug, Clone)]
struct Scenario<const MIX: usize> {
    history_limit: usize,
    ops: Vec<Op>,
}

impl<const MIX: usize> Arbitrary for Scenario<MIX> {
    fn arbitrary(g: &mut Gen) -> Self {
        let len = usize::arbitrary(g) % (g.size() + 1);
        Scenario {
            history_limit: 3 + usize::from(small(g, 5)),
            ops: (0..len).map(|_| Op::arbitrary_in(g, &MIXES[MIX])).collect(),
        }
    }

    fn shrink(&self) -> Box<dyn Iterator<Item = Self>> {
        let history_limit = self.history_limit;
        Box::new(
            self.ops
                .shrink()
                .map(move |ops| Scenario { history_limit, ops }),
        )
    }
}

// ----- the reference model -------------------------------------------------------

#[derive(Debug)]
struct ConnModel {
    user: Option<usize>,
    auth_deadline: u64,
    rooms: BTreeSet<usize>,
    failed_auths: u32,
    rejected_in_row: u32,
    /// When this connection's bucket was charged.
    charges: Vec<u64>,
}

#[derive(Debug, Default)]
struct RoomModel {
    /// Every message the hub accepted, learned from its acknowledgements.
    accepted: Vec<ChatMessage>,
    /// Learned from the first `ROOM_JOINED`.
    epoch: Option<String>,
    /// Typing users and when their indicator lapses.
    typing: BTreeMap<usize, u64>,
}

/// The contract, re-stated plainly; plus the facts learned from outputs.
struct Model {
    history_limit: usize,
    now: u64,
    conns: BTreeMap<ConnId, ConnModel>,
    rooms: [RoomModel; 3],
    /// When each user's send bucket was charged.
    user_charges: BTreeMap<usize, Vec<u64>>,
    message_ids: BTreeSet<String>,
    /// Whether a user whose connections are all gone may come back. When
    /// not, the next user of its slot takes its place.
    returning: bool,
    /// Per slot, the number of the user who authenticates now.
    generation: [usize; 3],
}

/// What one step must produce.
#[derive(Default)]
struct Expected {
    frames: BTreeMap<ConnId, Vec<ServerFrame>>,
    closes: BTreeMap<ConnId, u16>,
}

impl Expected {
    fn push(&mut self, conn: ConnId, message: ServerMessage, rid: Option<&str>) {
        self.frames.entry(conn).or_default().push(ServerFrame {
            message,
            request_id: rid.map(str::to_owned),
        });
    }

    fn error(&mut self, conn: ConnId, code: ErrorCode, rid: Option<&str>) {
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
fn try_charge(charges: &mut Vec<u64>, now: u64, capacity: u64) -> Result<(), u64> {
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
fn name(user: usize) -> String {
    format!("{}{}", SLOTS[user % SLOTS.len()], user / SLOTS.len())
}

fn user_ref(user: usize) -> UserRef {
    UserRef {
        user_id: name(user),
        username: name(user),
    }
}

impl Model {
    fn new(history_limit: usize, returning: bool) -> Model {
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
    fn current_user(&self, slot: usize) -> usize {
        slot + SLOTS.len() * self.generation[slot]
    }

    fn retained(&self, room: usize) -> &[ChatMessage] {
        let all = &self.rooms[room].accepted;
        &all[all.len().saturating_sub(self.history_limit)..]
    }

    fn last_seq(&self, room: usize) -> u64 {
        self.rooms[room].accepted.len() as u64
    }

    /// Live connections joined to `room`.
    fn members(&self, room: usize) -> Vec<ConnId> {
        self.conns
            .iter()
            .filter(|(_, c)| c.rooms.contains(&room))
            .map(|(id, _)| *id)
            .collect()
    }

    /// Connections joined to `room` of users other than `user`.
    fn others(&self, room: usize, user: usize) -> Vec<ConnId> {
        self.conns
            .iter()
            .filter(|(_, c)| c.rooms.contains(&room) && c.user != Some(user))
            .map(|(id, _)| *id)
            .collect()
    }

    fn users_in(&self, room: usize) -> BTreeSet<usize> {
        self.conns
            .values()
            .filter(|c| c.rooms.contains(&room))
            .filter_map(|c| c.user)
            .collect()
    }

    fn room_info(&self, room: usize) -> RoomInfo {
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

    fn typing_update(&self, room: usize, user: usize, is_typing: bool, exp: &mut Expected) {
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
    fn leave(&mut self, conn: ConnId, room: usize, exp: &mut Expected) {
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
    fn forget(&mut self, conn: ConnId, exp: &mut Expected) {
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

    fn close(&mut self, conn: ConnId, exp: &mut Expected) {
        self.forget(conn, exp);
        exp.closes.insert(conn, 1008);
    }

    /// Time passes to `now`: auth timeouts and typing timeouts.
    fn advance(&mut self, now: u64, exp: &mut Expected) {
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

// ----- running a scenario ----------------------------------------------------------

/// A request as sent, for the model.
enum Req {
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

struct Runner {
    t: TestHub,
    m: Model,
    step: usize,
    /// Per room, the newest `seq` seen in a fresh `NEW_MESSAGE` (invariant
    /// check independent of the model's prediction).
    seen_seq: [u64; 3],
    /// Per user, when a `SEND_MESSAGE` was not refused by the rate limit.
    sends_charged: BTreeMap<String, Vec<u64>>,
}

type Check = Result<(), String>;

macro_rules! ensure {
    ($cond:expr, $($fmt:tt)+) => {
        if !$cond {
            return Err(format!($($fmt)+));
        }
    };
}

/// Error texts are free; everything else is compared.
fn normalized(mut f: ServerFrame) -> ServerFrame {
    if let ServerMessage::Error { message, .. } = &mut f.message {
        message.clear();
    }
    f
}

impl Runner {
    fn new(history_limit: usize, returning: bool) -> Runner {
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
    fn live(&self, index: u8, prefer: impl Fn(&ConnModel) -> bool) -> Option<ConnId> {
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
    fn target(&self, to: Target) -> Option<(ConnId, usize)> {
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

    fn run(&mut self, ops: &[Op]) -> Check {
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

    fn apply(&mut self, op: &Op) -> Check {
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

    fn send_request(&mut self, conn: ConnId, req: &Req, rid: &str) {
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

    fn request(&mut self, conn: ConnId, req: &Req, rid: &str, exp: &mut Expected) -> Check {
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
    fn observed_epoch(&self, conn: ConnId) -> Result<String, String> {
        self.peek(conn)
            .into_iter()
            .find_map(|f| match f.message {
                ServerMessage::RoomJoined { epoch, .. } => Some(epoch),
                _ => None,
            })
            .ok_or_else(|| "no ROOM_JOINED to learn the epoch from".to_owned())
    }

    /// The acknowledgement this step sent to `conn` for `rid`.
    fn observed_new_message(&self, conn: ConnId, rid: &str) -> Result<ChatMessage, String> {
        self.peek(conn)
            .into_iter()
            .find_map(|f| match f.message {
                ServerMessage::NewMessage(m) if f.request_id.as_deref() == Some(rid) => Some(m),
                _ => None,
            })
            .ok_or_else(|| format!("no NEW_MESSAGE acknowledging {rid}"))
    }

    /// The frames of the current step for `conn`, without consuming them.
    fn peek(&self, conn: ConnId) -> Vec<ServerFrame> {
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
    fn compare(&mut self, exp: Expected) -> Check {
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
    fn invariants(&mut self, frames: &BTreeMap<ConnId, Vec<ServerFrame>>) -> Check {
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

fn auth_success(user: usize) -> ServerMessage {
    ServerMessage::AuthSuccess {
        user_id: name(user),
        username: name(user),
        status: "online".to_owned(),
    }
}

fn room_index(id: &str) -> Result<usize, String> {
    ROOMS
        .iter()
        .position(|r| *r == id)
        .ok_or_else(|| format!("unknown room {id}"))
}

fn check<const MIX: usize, const RETURNING: bool>(scenario: Scenario<MIX>) -> TestResult {
    let mut runner = Runner::new(scenario.history_limit, RETURNING);
    match runner.run(&scenario.ops) {
        Ok(()) => TestResult::passed(),
        Err(e) => TestResult::error(format!("history limit {}: {e}", scenario.history_limit)),
    }
}

fn quickcheck<const MIX: usize, const RETURNING: bool>(tests: u64, size: usize) {
    QuickCheck::new()
        .tests(tests)
        .max_tests(tests * 2)
        .rng(Gen::new(size))
        .quickcheck(check::<MIX, RETURNING> as fn(Scenario<MIX>) -> TestResult);
}

#[test]
fn prop_mixed_operations_match_the_contract() {
    quickcheck::<0, false>(300, 120);
}

#[test]
fn prop_send_bursts_respect_rate_limits_history_and_retries() {
    quickcheck::<1, false>(300, 150);
}

#[test]
fn prop_reconnects_recover_exactly_what_was_missed() {
    quickcheck::<2, false>(300, 120);
}

/// The same as the properties above, except that a user whose connections
/// are all gone comes back (same `sub`) later in the scenario.
#[test]
fn prop_returning_users_keep_their_send_bucket() {
    quickcheck::<3, true>(1_000, 120);
}

#[test]
fn rate_model_agrees_with_the_contract_examples() {
    // The model's bucket, on the contract's own numbers scaled: capacity 5
    // per 2000 ms is one token per 400 ms.
    let mut charges = Vec::new();
    for _ in 0..5 {
        assert_eq!(try_charge(&mut charges, 0, SEND_CAPACITY), Ok(()));
    }
    assert_eq!(try_charge(&mut charges, 0, SEND_CAPACITY), Err(400));
    assert_eq!(try_charge(&mut charges, 399, SEND_CAPACITY), Err(1));
    assert_eq!(try_charge(&mut charges, 400, SEND_CAPACITY), Ok(()));
    assert_eq!(try_charge(&mut charges, 400, SEND_CAPACITY), Err(400));
    // Long idle: full again, never above capacity.
    for _ in 0..5 {
        assert_eq!(try_charge(&mut charges, 100_000, SEND_CAPACITY), Ok(()));
    }
    assert!(try_charge(&mut charges, 100_000, SEND_CAPACITY).is_err());
}

#[test]
fn a_scenario_that_breaks_a_rule_is_caught() {
    // The checker itself can fail: a model that expects a different seq
    // would reject the hub's output. Here: an unexpected extra frame.
    let mut runner = Runner::new(3, false);
    runner.run(&[]).expect("setup passes");
    runner.t.call(ConnId(1), "PING", json!({}), "extra");
    let result = runner.compare(Expected::default());
    assert!(result.is_err(), "an unexpected PONG must be reported");
}
