//! The sans-IO core: every decision of the wire contract, as a deterministic
//! state machine.
//!
//! The core never opens a socket, never spawns a task, never reads a clock
//! and never draws a random number. Time is a value passed into every call;
//! ids come from counters and an `instance` number chosen by the caller;
//! every map is ordered (`BTreeMap`), so the same inputs give the same
//! outputs, byte for byte. That is what lets the production server, the
//! deterministic simulation and the fuzzers all run this same code.
//!
//! # Run loop
//!
//! The driver (the production server or the simulation) owns a [`Hub`] and:
//!
//! 1. calls [`Hub::connect`] when a WebSocket connection is established,
//!    [`Hub::handle`] for every message received on it (in order), and
//!    [`Hub::disconnect`] when it is gone;
//! 2. calls [`Hub::tick`] when [`Hub::next_deadline`] has passed (auth
//!    timeouts, token expiry, typing timeouts);
//! 3. after each call, drains [`Hub::poll_output`] until it returns `None`,
//!    queuing each [`Output::Frame`] to its connection and acting on each
//!    [`Output::Close`]. A connection whose queue is full is closed by the
//!    driver (1013) and reported with [`Hub::disconnect`].
//!
//! `now` must never go backwards between calls. Every call first fires the
//! timers due at its `now`, so an input never overtakes a deadline that has
//! passed (a message sent at the instant a token expires is not accepted,
//! however late the driver gets round to [`Hub::tick`]).

mod bucket;
pub mod log;
mod sorted_set;

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;

use bytes::Bytes;

pub use bucket::{Bucket, BucketLimit};
use log::MemoryLog;
use sorted_set::SortedSet;

use crate::auth::{AuthError, VerifiedToken};
use crate::protocol::server::{
    self, ChatMessage, HistoryPayload, RoomInfo, RoomJoinedPayload, ServerMessage, UserRef,
};
use crate::protocol::{
    ClientMessage, ClientRequest, CloseCode, ErrorCode, MessageKind, ParseError, RoomKind,
};

/// Milliseconds since the Unix epoch, as passed in by the driver.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Timestamp(pub u64);

impl Timestamp {
    /// `self + ms`, saturating.
    pub fn plus_ms(self, ms: u64) -> Timestamp {
        Timestamp(self.0.saturating_add(ms))
    }
}

/// One WebSocket connection, numbered by the driver.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ConnId(pub u64);

/// A user: the token's `sub`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct UserId(pub Arc<str>);

/// A room's id.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RoomId(pub Arc<str>);

impl std::borrow::Borrow<str> for RoomId {
    fn borrow(&self) -> &str {
        &self.0
    }
}

/// What `AUTHENTICATE` carries once the driver has verified the token.
pub type AuthOutcome = Result<VerifiedToken, AuthError>;

/// One input from a connection.
#[derive(Debug)]
pub enum Inbound {
    /// A well-formed request.
    Request(ClientMessage<AuthOutcome>),
    /// A text frame that is not a valid request.
    Invalid(ParseError),
    /// A binary frame (the contract speaks text only).
    Binary,
}

/// What the driver must do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// Queue this text frame to the connection.
    Frame {
        /// The recipient.
        conn: ConnId,
        /// One encoded JSON message, shared by every recipient of a broadcast.
        frame: Bytes,
        /// A presence or typing notice (`USER_JOINED`, `USER_LEFT`,
        /// `TYPING_UPDATE`): the driver may hold it for a short while so that
        /// several to one connection share one write. It is never reordered:
        /// any other frame queued after it takes it along.
        notice: bool,
    },
    /// Close the connection with this code once what is queued before it is
    /// sent. The core has already forgotten the connection.
    Close {
        /// The connection.
        conn: ConnId,
        /// The close code.
        code: CloseCode,
        /// A short reason for the close frame.
        reason: &'static str,
    },
}

/// Failed `AUTHENTICATE` attempts after which the contract closes a
/// connection.
pub const AUTH_FAILURES_MAX: u32 = 3;

/// The limits of the contract that the core enforces.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// `AUTH_TIMEOUT_MS`: time to authenticate after connecting.
    pub auth_timeout_ms: u64,
    /// Failed `AUTHENTICATE` attempts after which a connection is closed.
    pub auth_failures_max: u32,
    /// `HISTORY_LIMIT`: messages kept per room (≥ 1).
    pub history_limit: usize,
    /// `TYPING_TIMEOUT_MS`: how long `isTyping: true` lasts without renewal.
    pub typing_timeout_ms: u64,
    /// `RATE_LIMIT_MESSAGES`: the per-user send bucket's capacity.
    pub rate_limit_messages: u64,
    /// `RATE_LIMIT_REQUESTS`: the per-connection bucket's capacity.
    pub rate_limit_requests: u64,
    /// `RATE_LIMIT_WINDOW_MS`: refill time of both buckets.
    pub rate_limit_window_ms: u64,
    /// `RATE_LIMIT_DISCONNECT_AFTER`: rejections in a row before closing.
    pub rate_limit_disconnect_after: u32,
    /// `ROOMS_PER_USER_MAX`: rooms one user may create.
    pub rooms_per_user_max: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            auth_timeout_ms: 10_000,
            auth_failures_max: AUTH_FAILURES_MAX,
            history_limit: 100,
            typing_timeout_ms: 5_000,
            rate_limit_messages: 20,
            rate_limit_requests: 100,
            rate_limit_window_ms: 10_000,
            rate_limit_disconnect_after: 50,
            rooms_per_user_max: 100,
        }
    }
}

impl Limits {
    fn send_bucket(&self) -> BucketLimit {
        BucketLimit {
            capacity: self.rate_limit_messages.max(1),
            window_ms: self.rate_limit_window_ms.max(1),
        }
    }

    fn request_bucket(&self) -> BucketLimit {
        BucketLimit {
            capacity: self.rate_limit_requests.max(1),
            window_ms: self.rate_limit_window_ms.max(1),
        }
    }
}

/// A room that exists from start-up (`DEFAULT_ROOMS`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DefaultRoom {
    /// Its id.
    pub id: String,
    /// Its display name.
    pub name: String,
}

/// Counters the driver exports as metrics. Only ever increase.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    /// `SEND_MESSAGE`s accepted (stored and broadcast).
    pub messages_accepted: u64,
    /// `NEW_MESSAGE` frames handed to recipients, acknowledgements included.
    pub messages_delivered: u64,
    /// `ERROR` frames sent, by code (in [`ErrorCode::ALL`] order).
    pub errors: [u64; ErrorCode::ALL.len()],
    /// Requests refused by a rate limit.
    pub rate_limited: u64,
    /// Retries answered from history instead of storing a duplicate.
    pub retries_deduplicated: u64,
    /// Messages evicted from a room's history.
    pub history_evictions: u64,
    /// Connections closed by the core, by close code number.
    pub closes: BTreeMap<u16, u64>,
    /// Successful refreshes of an authenticated connection's token.
    pub token_refreshes: u64,
}

/// Gauges the driver exports as metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Gauges {
    /// Connections known to the core.
    pub connections: u64,
    /// Of those, authenticated.
    pub authenticated: u64,
    /// Rooms.
    pub rooms: u64,
    /// (connection, room) memberships.
    pub memberships: u64,
}

#[derive(Debug)]
struct Session {
    user_id: UserId,
    username: Arc<str>,
    /// Private rooms the token grants.
    rooms_claim: BTreeSet<String>,
    /// The moment the token stops being accepted.
    expires_at: Timestamp,
}

#[derive(Debug)]
enum ConnState {
    /// Waiting for `AUTHENTICATE` until `deadline`.
    ExpectAuthenticate { deadline: Timestamp },
    /// Authenticated.
    Authenticated(Session),
}

#[derive(Debug)]
struct Conn {
    state: ConnState,
    /// Every request but an authenticated `SEND_MESSAGE` is charged here.
    requests: Bucket,
    /// Rate-limit rejections since the last accepted request.
    rejected_in_row: u32,
    /// Failed `AUTHENTICATE` attempts on this connection.
    failed_auths: u32,
    /// Rooms this connection has joined.
    rooms: SortedSet<RoomId>,
}

impl Conn {
    fn session(&self) -> Option<&Session> {
        match &self.state {
            ConnState::Authenticated(s) => Some(s),
            ConnState::ExpectAuthenticate { .. } => None,
        }
    }
}

#[derive(Debug)]
struct User {
    /// Live connections of this user.
    conns: SortedSet<ConnId>,
    /// The per-user `SEND_MESSAGE` bucket, kept after the last connection
    /// goes until it is full again, so reconnecting never resets it.
    sends: Bucket,
}

#[derive(Debug)]
struct Member {
    /// The name presence shows: that of the user's first connection to join.
    username: Arc<str>,
    conns: SortedSet<ConnId>,
}

#[derive(Debug)]
struct Room {
    id: RoomId,
    name: String,
    description: String,
    kind: RoomKind,
    created_at: Timestamp,
    created_by: String,
    log: MemoryLog,
    members: BTreeMap<UserId, Member>,
    /// Users typing now, with the moment their indicator lapses.
    typing: BTreeMap<UserId, Timestamp>,
    /// `(user, clientMessageId)` → `seq`, for messages still in history.
    client_ids: BTreeMap<(UserId, String), u64>,
}

impl Room {
    fn info(&self) -> RoomInfo {
        RoomInfo {
            id: self.id.0.to_string(),
            name: self.name.clone(),
            description: self.description.clone(),
            kind: self.kind,
            member_count: self.members.len() as u64,
            created_at: crate::protocol::time::rfc3339_ms(self.created_at.0),
            created_by: self.created_by.clone(),
        }
    }

    fn users(&self) -> Vec<UserRef> {
        self.members
            .iter()
            .map(|(id, m)| UserRef {
                user_id: id.0.to_string(),
                username: m.username.to_string(),
            })
            .collect()
    }

    fn may_join(&self, session: &Session) -> bool {
        self.kind == RoomKind::Public
            || *self.created_by == *session.user_id.0
            || session.rooms_claim.contains(&*self.id.0)
            || self.members.contains_key(&session.user_id)
    }
}

/// An evicted message can no longer be found by a retry of its
/// `clientMessageId`.
fn forget_client_id(
    client_ids: &mut BTreeMap<(UserId, String), u64>,
    evicted: &crate::protocol::server::StoredMessage,
) {
    if let Some(cmid) = &evicted.message.client_message_id {
        let owner = UserId(Arc::from(evicted.message.user_id.as_str()));
        client_ids.remove(&(owner, cmid.clone()));
    }
}

/// A timer: what happens at a deadline.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Timer {
    /// The connection must have authenticated by now.
    AuthDeadline(ConnId),
    /// The connection's token has expired.
    TokenExpiry(ConnId),
    /// A user's typing indicator in a room lapses.
    Typing(RoomId, UserId),
    /// A user without connections may be forgotten (its bucket is full).
    ForgetUser(UserId),
}

/// All room state of one server.
#[derive(Debug)]
pub struct Hub {
    limits: Limits,
    /// Distinguishes this hub's epochs and message ids from those of any
    /// earlier run (the driver picks it: wall-clock based in production,
    /// seeded in the simulation).
    instance: u64,
    now: Timestamp,
    conns: BTreeMap<ConnId, Conn>,
    users: BTreeMap<UserId, User>,
    rooms: BTreeMap<RoomId, Room>,
    /// Rooms created per user, for `ROOMS_PER_USER_MAX`.
    rooms_created: BTreeMap<UserId, u32>,
    timers: BTreeSet<(Timestamp, Timer)>,
    outputs: VecDeque<Output>,
    next_message: u64,
    next_room: u64,
    authenticated: u64,
    memberships: u64,
    stats: Stats,
}

/// Who in a room does not get a broadcast.
#[derive(Clone, Copy)]
enum Except<'a> {
    Conn(ConnId),
    User(&'a UserId),
}

impl Hub {
    /// A hub whose default rooms exist from `now`.
    pub fn new(
        limits: Limits,
        default_rooms: &[DefaultRoom],
        instance: u64,
        now: Timestamp,
    ) -> Hub {
        let mut hub = Hub {
            limits,
            instance,
            now,
            conns: BTreeMap::new(),
            users: BTreeMap::new(),
            rooms: BTreeMap::new(),
            rooms_created: BTreeMap::new(),
            timers: BTreeSet::new(),
            outputs: VecDeque::new(),
            next_message: 0,
            next_room: 0,
            authenticated: 0,
            memberships: 0,
            stats: Stats::default(),
        };
        for room in default_rooms {
            let id = RoomId(Arc::from(room.id.as_str()));
            if !hub.rooms.contains_key(&id) {
                hub.insert_room(
                    id,
                    room.name.clone(),
                    String::new(),
                    RoomKind::Public,
                    "system".to_owned(),
                );
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
    /// running auth and typing timers keep their deadlines.
    pub fn set_limits(&mut self, now: Timestamp, limits: Limits) {
        self.tick(now);
        let history_limit = limits.history_limit;
        self.limits = limits;
        for room in self.rooms.values_mut() {
            for old in room.log.set_limit(history_limit) {
                self.stats.history_evictions += 1;
                forget_client_id(&mut room.client_ids, &old);
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

    /// Handles one message received on `conn`.
    pub fn handle(&mut self, now: Timestamp, conn: ConnId, inbound: Inbound) {
        self.tick(now);
        let Some(c) = self.conns.get(&conn) else {
            return;
        };
        let request_id = match &inbound {
            Inbound::Request(m) => m.request_id.clone(),
            Inbound::Invalid(e) => e.request_id.clone(),
            Inbound::Binary => None,
        };
        let rid = request_id.as_deref();

        // Charge first: nothing has any effect before it is paid for.
        let user_send = match (&inbound, c.session()) {
            (
                Inbound::Request(ClientMessage {
                    request: ClientRequest::SendMessage { .. },
                    ..
                }),
                Some(s),
            ) => Some(s.user_id.clone()),
            _ => None,
        };
        let charge = match &user_send {
            Some(user) => {
                let limit = self.limits.send_bucket();
                let u = self
                    .users
                    .get_mut(user)
                    .expect("authenticated user is registered");
                u.sends.try_take(limit, self.now)
            }
            None => {
                let limit = self.limits.request_bucket();
                let c = self.conns.get_mut(&conn).expect("checked above");
                c.requests.try_take(limit, self.now)
            }
        };
        let c = self.conns.get_mut(&conn).expect("checked above");
        if let Err(retry_after_ms) = charge {
            c.rejected_in_row += 1;
            let abuse = c.rejected_in_row >= self.limits.rate_limit_disconnect_after;
            self.stats.rate_limited += 1;
            self.error_with_retry(
                conn,
                ErrorCode::RateLimitExceeded,
                "rate limit exceeded",
                Some(retry_after_ms),
                rid,
            );
            if abuse {
                self.close(conn, CloseCode::Policy, "rate limit abuse");
            }
            return;
        }
        c.rejected_in_row = 0;

        let message = match inbound {
            Inbound::Binary => {
                self.error(
                    conn,
                    ErrorCode::InvalidMessage,
                    "binary frames are not supported",
                    None,
                );
                return;
            }
            Inbound::Invalid(e) => {
                self.error(conn, ErrorCode::InvalidMessage, e.reason, rid);
                return;
            }
            Inbound::Request(m) => m,
        };

        if let ClientRequest::Authenticate { token, username } = message.request {
            self.authenticate(conn, token, username, rid);
            return;
        }
        let Some(session) = self.conns[&conn].session() else {
            self.error(conn, ErrorCode::Unauthorized, "authenticate first", rid);
            return;
        };
        let user = session.user_id.clone();
        match message.request {
            ClientRequest::Authenticate { .. } => unreachable!("handled above"),
            ClientRequest::Ping => self.reply(conn, &ServerMessage::Pong {}, rid),
            ClientRequest::ListRooms => self.list_rooms(conn, rid),
            ClientRequest::CreateRoom {
                name,
                description,
                kind,
                id,
            } => self.create_room(conn, &user, name, description, kind, id, rid),
            ClientRequest::JoinRoom {
                room_id,
                since_seq,
                epoch,
            } => self.join_room(conn, &room_id, since_seq, epoch.as_deref(), rid),
            ClientRequest::LeaveRoom { room_id } => {
                if let Some(room) = self.member_room(conn, &room_id, rid) {
                    self.reply(
                        conn,
                        &ServerMessage::RoomLeft {
                            room_id: room_id.clone(),
                        },
                        rid,
                    );
                    self.leave(conn, &room);
                }
            }
            ClientRequest::GetHistory {
                room_id,
                before_seq,
                limit,
            } => {
                if let Some(room) = self.member_room(conn, &room_id, rid) {
                    let room = &self.rooms[&room];
                    let (messages, has_more) = room.log.page(before_seq, limit as usize);
                    let frame = server::encode_payload(
                        "HISTORY",
                        &HistoryPayload {
                            room_id: &room_id,
                            messages: &messages,
                            has_more,
                        },
                        rid,
                    );
                    self.send(conn, frame);
                }
            }
            ClientRequest::SendMessage {
                room_id,
                content,
                kind,
                client_message_id,
            } => {
                if let Some(room) = self.member_room(conn, &room_id, rid) {
                    self.send_message(conn, &user, &room, content, kind, client_message_id, rid);
                }
            }
            ClientRequest::TypingStatus { room_id, is_typing } => {
                if let Some(room) = self.member_room(conn, &room_id, rid) {
                    self.typing(&room, &user, is_typing);
                }
            }
        }
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

    // ----- requests -------------------------------------------------------

    fn authenticate(
        &mut self,
        conn: ConnId,
        outcome: AuthOutcome,
        username: Option<String>,
        rid: Option<&str>,
    ) {
        let token = match outcome {
            // `expires_at_unix_ms` is the first moment the token is no longer accepted.
            Ok(t) if Timestamp(t.expires_at_unix_ms) > self.now => Ok(t),
            Ok(_) => Err("token expired".to_owned()),
            Err(e) => Err(e.to_string()),
        };
        let token = match token {
            Ok(t) => t,
            Err(reason) => return self.auth_failed(conn, reason, rid),
        };
        let expires_at = Timestamp(token.expires_at_unix_ms);
        let c = self.conns.get_mut(&conn).expect("caller checked");
        match &mut c.state {
            ConnState::ExpectAuthenticate { deadline } => {
                let deadline = *deadline;
                let user_id = UserId(Arc::from(token.user_id.as_str()));
                let username: Arc<str> = Arc::from(
                    token
                        .username
                        .or(username)
                        .unwrap_or_else(|| token.user_id.clone()),
                );
                c.state = ConnState::Authenticated(Session {
                    user_id: user_id.clone(),
                    username: username.clone(),
                    rooms_claim: token.rooms.into_iter().collect(),
                    expires_at,
                });
                self.authenticated += 1;
                self.timers.remove(&(deadline, Timer::AuthDeadline(conn)));
                self.timers.insert((expires_at, Timer::TokenExpiry(conn)));
                let send_limit = self.limits.send_bucket();
                let now = self.now;
                let user = self.users.entry(user_id.clone()).or_insert_with(|| User {
                    conns: SortedSet::default(),
                    sends: Bucket::full(send_limit, now),
                });
                user.conns.insert(conn);
                self.auth_success(conn, &user_id, &username, rid);
            }
            ConnState::Authenticated(session) => {
                if *session.user_id.0 != *token.user_id {
                    return self.auth_failed(conn, "token is for a different user".to_owned(), rid);
                }
                let old = session.expires_at;
                session.expires_at = old.max(expires_at);
                session.rooms_claim = token.rooms.into_iter().collect();
                let (new, user_id, username) = (
                    session.expires_at,
                    session.user_id.clone(),
                    session.username.clone(),
                );
                self.timers.remove(&(old, Timer::TokenExpiry(conn)));
                self.timers.insert((new, Timer::TokenExpiry(conn)));
                self.stats.token_refreshes += 1;
                self.auth_success(conn, &user_id, &username, rid);
            }
        }
    }

    fn auth_success(&mut self, conn: ConnId, user_id: &UserId, username: &str, rid: Option<&str>) {
        let message = ServerMessage::AuthSuccess {
            user_id: user_id.0.to_string(),
            username: username.to_owned(),
            status: "online".to_owned(),
        };
        self.reply(conn, &message, rid);
    }

    fn auth_failed(&mut self, conn: ConnId, reason: String, rid: Option<&str>) {
        let c = self.conns.get_mut(&conn).expect("caller checked");
        c.failed_auths += 1;
        let close = c.failed_auths >= self.limits.auth_failures_max;
        self.error(conn, ErrorCode::Unauthorized, reason, rid);
        if close {
            self.close(conn, CloseCode::Policy, "too many failed authentications");
        }
    }

    fn list_rooms(&mut self, conn: ConnId, rid: Option<&str>) {
        let session = self.conns[&conn].session().expect("caller checked");
        let rooms = self
            .rooms
            .values()
            .filter(|r| r.may_join(session))
            .map(Room::info)
            .collect();
        self.reply(conn, &ServerMessage::RoomList { rooms }, rid);
    }

    #[allow(clippy::too_many_arguments)]
    fn create_room(
        &mut self,
        conn: ConnId,
        user: &UserId,
        name: String,
        description: String,
        kind: RoomKind,
        id: Option<String>,
        rid: Option<&str>,
    ) {
        let created = self.rooms_created.get(user).copied().unwrap_or(0);
        if created >= self.limits.rooms_per_user_max {
            let max = self.limits.rooms_per_user_max;
            return self.error(
                conn,
                ErrorCode::Forbidden,
                format!("a user may create at most {max} rooms"),
                rid,
            );
        }
        let id = match id {
            Some(id) => {
                let id = RoomId(Arc::from(id));
                if self.rooms.contains_key(&id) {
                    return self.error(
                        conn,
                        ErrorCode::RoomExists,
                        format!("room {} already exists", id.0),
                        rid,
                    );
                }
                id
            }
            None => loop {
                self.next_room += 1;
                let id = RoomId(Arc::from(format!("room_{}", self.next_room)));
                if !self.rooms.contains_key(&id) {
                    break id;
                }
            },
        };
        *self.rooms_created.entry(user.clone()).or_insert(0) += 1;
        self.insert_room(id.clone(), name, description, kind, user.0.to_string());
        self.add_member(conn, &id);
        let room = &self.rooms[&id];
        let message = ServerMessage::RoomCreated {
            room: room.info(),
            epoch: room.log.epoch().to_owned(),
        };
        self.reply(conn, &message, rid);
    }

    fn join_room(
        &mut self,
        conn: ConnId,
        room_id: &str,
        since_seq: Option<u64>,
        epoch: Option<&str>,
        rid: Option<&str>,
    ) {
        let Some(room) = self.rooms.get(room_id) else {
            return self.room_not_found(conn, room_id, rid);
        };
        let session = self.conns[&conn].session().expect("caller checked");
        if !room.may_join(session) && !self.conns[&conn].rooms.contains(&room.id) {
            return self.error(
                conn,
                ErrorCode::Forbidden,
                format!("no access to private room {room_id}"),
                rid,
            );
        }
        let id = room.id.clone();
        self.add_member(conn, &id);
        let room = &self.rooms[&id];
        let (messages, recovered) = match since_seq {
            None => (room.log.retained(), None),
            Some(n) => {
                let r = room.log.since(n, epoch);
                (r.messages, Some(r.recovered))
            }
        };
        let frame = server::encode_payload(
            "ROOM_JOINED",
            &RoomJoinedPayload {
                room: &room.info(),
                epoch: room.log.epoch(),
                messages: &messages,
                users: &room.users(),
                recovered,
            },
            rid,
        );
        self.send(conn, frame);
    }

    #[allow(clippy::too_many_arguments)]
    fn send_message(
        &mut self,
        conn: ConnId,
        user: &UserId,
        room_id: &RoomId,
        content: String,
        kind: MessageKind,
        client_message_id: Option<String>,
        rid: Option<&str>,
    ) {
        let username = self.conns[&conn]
            .session()
            .expect("caller checked")
            .username
            .clone();
        let room = self.rooms.get_mut(room_id).expect("caller checked");
        if let Some(cmid) = &client_message_id {
            let key = (user.clone(), cmid.clone());
            if let Some(seq) = room.client_ids.get(&key) {
                let original = room
                    .log
                    .get(*seq)
                    .expect("client ids are pruned with history")
                    .clone();
                self.stats.retries_deduplicated += 1;
                self.stats.messages_delivered += 1;
                self.send(conn, original.ack_frame(rid));
                return;
            }
        }
        self.next_message += 1;
        let message = ChatMessage {
            id: format!("msg_{:x}_{}", self.instance, self.next_message),
            seq: room.log.next_seq(),
            room_id: room_id.0.to_string(),
            user_id: user.0.to_string(),
            username: username.to_string(),
            content,
            kind,
            timestamp: crate::protocol::time::rfc3339_ms(self.now.0),
            client_message_id,
        };
        let (stored, evicted) = room.log.append(message);
        if let Some(cmid) = &stored.message.client_message_id {
            room.client_ids
                .insert((user.clone(), cmid.clone()), stored.message.seq);
        }
        if let Some(old) = evicted {
            self.stats.history_evictions += 1;
            forget_client_id(&mut room.client_ids, &old);
        }
        self.stats.messages_accepted += 1;
        let broadcast = stored.broadcast_frame();
        let mut delivered = 0;
        for member in room.members.values() {
            for &c in &member.conns {
                let frame = if c == conn {
                    stored.ack_frame(rid)
                } else {
                    broadcast.clone()
                };
                self.outputs.push_back(Output::Frame {
                    conn: c,
                    frame,
                    notice: false,
                });
                delivered += 1;
            }
        }
        self.stats.messages_delivered += delivered;
        if room.typing.remove(user).is_some() {
            self.broadcast_typing(room_id, user, false);
        }
    }

    fn typing(&mut self, room_id: &RoomId, user: &UserId, is_typing: bool) {
        let timeout = self.limits.typing_timeout_ms;
        let now = self.now;
        let room = self.rooms.get_mut(room_id).expect("caller checked");
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
        } else if let Some(old) = previous {
            room.typing.remove(user);
            self.timers
                .remove(&(old, Timer::Typing(room_id.clone(), user.clone())));
            self.broadcast_typing(room_id, user, false);
        }
    }

    // ----- membership ------------------------------------------------------

    fn insert_room(
        &mut self,
        id: RoomId,
        name: String,
        description: String,
        kind: RoomKind,
        created_by: String,
    ) {
        let epoch = format!("{:x}-{}", self.instance, self.rooms.len() + 1);
        self.rooms.insert(
            id.clone(),
            Room {
                id,
                name,
                description,
                kind,
                created_at: self.now,
                created_by,
                log: MemoryLog::new(epoch, self.limits.history_limit),
                members: BTreeMap::new(),
                typing: BTreeMap::new(),
                client_ids: BTreeMap::new(),
            },
        );
    }

    /// Joins `conn` to the room (idempotent); tells the others when this is
    /// the user's first connection there.
    fn add_member(&mut self, conn: ConnId, room_id: &RoomId) {
        let c = self.conns.get_mut(&conn).expect("caller checked");
        if !c.rooms.insert(room_id.clone()) {
            return;
        }
        self.memberships += 1;
        let session = c.session().expect("only authenticated connections join");
        let (user, username) = (session.user_id.clone(), session.username.clone());
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
    fn leave(&mut self, conn: ConnId, room_id: &RoomId) {
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
    fn forget(&mut self, conn: ConnId) {
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
    fn member_room(&mut self, conn: ConnId, room_id: &str, rid: Option<&str>) -> Option<RoomId> {
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

    // ----- output ----------------------------------------------------------

    fn close(&mut self, conn: ConnId, code: CloseCode, reason: &'static str) {
        if !self.conns.contains_key(&conn) {
            return;
        }
        self.forget(conn);
        *self.stats.closes.entry(code.code()).or_insert(0) += 1;
        self.outputs.push_back(Output::Close { conn, code, reason });
    }

    fn send(&mut self, conn: ConnId, frame: Bytes) {
        self.outputs.push_back(Output::Frame {
            conn,
            frame,
            notice: false,
        });
    }

    fn reply(&mut self, conn: ConnId, message: &ServerMessage, rid: Option<&str>) {
        self.send(conn, server::encode(message, rid));
    }

    fn error(
        &mut self,
        conn: ConnId,
        code: ErrorCode,
        message: impl Into<String>,
        rid: Option<&str>,
    ) {
        self.error_with_retry(conn, code, message, None, rid);
    }

    fn error_with_retry(
        &mut self,
        conn: ConnId,
        code: ErrorCode,
        message: impl Into<String>,
        retry_after_ms: Option<u64>,
        rid: Option<&str>,
    ) {
        if !self.conns.contains_key(&conn) {
            return;
        }
        let index = ErrorCode::ALL
            .iter()
            .position(|c| *c == code)
            .expect("ALL lists every code");
        self.stats.errors[index] += 1;
        self.send(conn, server::error(code, message, retry_after_ms, rid));
    }

    fn room_not_found(&mut self, conn: ConnId, room_id: &str, rid: Option<&str>) {
        let shown: String = room_id.chars().take(64).collect();
        self.error(
            conn,
            ErrorCode::RoomNotFound,
            format!("room {shown} does not exist"),
            rid,
        );
    }

    /// A presence or typing notice to the room's connections.
    fn broadcast(&mut self, room_id: &RoomId, frame: &Bytes, except: Except<'_>) {
        let Some(room) = self.rooms.get(room_id) else {
            return;
        };
        for (user, member) in &room.members {
            if matches!(except, Except::User(u) if u == user) {
                continue;
            }
            for &c in &member.conns {
                if matches!(except, Except::Conn(x) if x == c) {
                    continue;
                }
                self.outputs.push_back(Output::Frame {
                    conn: c,
                    frame: frame.clone(),
                    notice: true,
                });
            }
        }
    }

    fn broadcast_typing(&mut self, room_id: &RoomId, user: &UserId, is_typing: bool) {
        let Some(room) = self.rooms.get(room_id) else {
            return;
        };
        let username = room
            .members
            .get(user)
            .map_or_else(|| user.0.to_string(), |m| m.username.to_string());
        let frame = server::encode(
            &ServerMessage::TypingUpdate {
                room_id: room_id.0.to_string(),
                user_id: user.0.to_string(),
                username,
                is_typing,
            },
            None,
        );
        self.broadcast(room_id, &frame, Except::User(user));
    }
}

#[cfg(test)]
mod properties;
#[cfg(test)]
mod tests;
