//! The oracles: named invariant checks over a stream of observations.
//!
//! [`Checker`] reads [`Record`]s in order — what every connection sent and
//! received, when it opened and closed, the library clients' events — and
//! builds a small model of what must be true ([`model`]); each oracle in its
//! own file checks one promise of the contract against it. A failure names
//! the oracle, the simulated time, the client, the connection, the room and
//! the `seq` where it applies.
//!
//! Nothing here knows about turmoil: a fuzz target that drives the core
//! directly can encode its outputs as the same records and reuse it all —
//! `Hub::connect(conn)` as [`Obs::Dial`] then [`Obs::Open`], each request
//! handed to `Hub::handle` as [`Obs::Sent`] (its JSON), each
//! `Output::Frame` as [`Obs::Recv`], each `Output::Close` as
//! [`Obs::CloseRecv`], `Hub::disconnect` as [`Obs::Ended`], with the core's
//! `now` (minus [`OracleConfig::epoch_unix_ms`]) as the time, and an empty
//! roster (no liveness phase) — then [`Checker::finish`].
//!
//! This file is longer than most because [`Checker`]'s handling of a
//! received frame is the one place that routes each server message to the
//! oracles that care, in the order they must see it.

pub mod acked;
pub mod auth;
pub mod client;
pub mod converge;
pub mod history;
pub mod liveness;
pub mod model;
pub mod nodes;
pub mod order;
pub mod presence;
pub mod rate;
pub mod replies;
pub mod rooms;
pub mod schema;
pub mod typing;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use chat_flow::protocol::RoomKind;
use chat_flow::protocol::server::{ServerFrame, ServerMessage};

use crate::obs::{ConnNo, Obs, Record};
use model::{Conn, Model, Req};

/// What the oracles need to know about the server's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OracleConfig {
    /// `HISTORY_LIMIT`.
    pub history_limit: usize,
    /// `TYPING_TIMEOUT_MS`.
    pub typing_timeout_ms: u64,
    /// `RATE_LIMIT_MESSAGES`.
    pub rate_limit_messages: u64,
    /// `RATE_LIMIT_WINDOW_MS`.
    pub rate_limit_window_ms: u64,
    /// `RATE_LIMIT_REQUESTS`: the per-connection bucket's capacity.
    pub rate_limit_requests: u64,
    /// `JWT_LEEWAY_SECONDS`.
    pub jwt_leeway_seconds: u64,
    /// `AUTH_TIMEOUT_MS`.
    pub auth_timeout_ms: u64,
    /// `PING_INTERVAL_MS`: a healthy connection hears from the server at
    /// least this often.
    pub ping_interval_ms: u64,
    /// Unix milliseconds at simulated time 0 (server timestamps are Unix).
    pub epoch_unix_ms: u64,
    /// Longest a frame may take from a decision of the server to its
    /// observer (latency, held links, latency spikes, batching).
    pub delivery_slack_ms: u64,
    /// `PRESENCE_DELAY_MS`: presence and typing notices may be held this
    /// much longer than other frames.
    pub notice_delay_ms: u64,
    /// `ROOM_IDLE_TTL_MS` (`0`: rooms are never deleted).
    pub room_idle_ttl_ms: u64,
    /// `MAX_CONTENT_LENGTH` (characters).
    pub max_content_chars: usize,
    /// How far a message's timestamp may be behind the one before it in
    /// `seq` order: 0 on one node; in a cluster each node stamps a message
    /// when it takes it, and another node's later message may reach the
    /// store first (by at most the store's timeout and the network's
    /// latency).
    pub timestamp_slack_ms: u64,
}

/// Where a violation happened.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Place {
    /// The simulated client.
    pub client: Option<u32>,
    /// The connection.
    pub conn: Option<ConnNo>,
    /// The room.
    pub room: Option<String>,
    /// The message's `seq`.
    pub seq: Option<u64>,
}

/// A broken invariant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// The oracle's name.
    pub oracle: String,
    /// Simulated milliseconds.
    pub at_ms: u64,
    /// Where.
    pub place: Place,
    /// What.
    pub detail: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "[{}] t={}.{:03}s",
            self.oracle,
            self.at_ms / 1000,
            self.at_ms % 1000
        )?;
        if let Some(c) = self.place.client {
            write!(f, " client c{c}")?;
        }
        if let Some(c) = self.place.conn {
            write!(f, " conn #{c}")?;
        }
        if let Some(r) = &self.place.room {
            write!(f, " room {r}")?;
        }
        if let Some(s) = self.place.seq {
            write!(f, " seq {s}")?;
        }
        write!(f, ": {}", self.detail)
    }
}

/// The edges a sweep must reach ("sometimes" assertions): a sweep in which
/// one of these never happened fails.
pub const REQUIRED_COVERAGE: [&str; 13] = [
    "history_eviction",
    "close_1013",
    "rate_limited",
    "recovered_false",
    "token_expiry_close",
    "token_refresh",
    "retry_deduplicated",
    "restart_new_epoch",
    "squat_refused",
    "room_revoked",
    "room_deleted",
    "room_recreated",
    "resume_room_gone",
];

/// Counts of edge cases reached.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Coverage(pub BTreeMap<String, u64>);

impl Coverage {
    /// Counts one `name`.
    pub fn hit(&mut self, name: &str) {
        match self.0.get_mut(name) {
            Some(n) => *n += 1,
            None => {
                self.0.insert(name.to_owned(), 1);
            }
        }
    }

    /// How many `name`.
    pub fn get(&self, name: &str) -> u64 {
        self.0.get(name).copied().unwrap_or(0)
    }

    /// Adds `other` into `self`.
    pub fn merge(&mut self, other: &Coverage) {
        for (k, v) in &other.0 {
            *self.0.entry(k.clone()).or_insert(0) += v;
        }
    }
}

/// Most violations kept per oracle (the rest are counted).
const KEEP_PER_ORACLE: usize = 10;

/// Violations and coverage, collected while checking.
#[derive(Debug, Default)]
pub struct Out {
    /// The violations kept.
    pub violations: Vec<Violation>,
    /// Violations not kept, per oracle.
    pub dropped: BTreeMap<&'static str, u64>,
    /// Edges reached.
    pub coverage: Coverage,
    kept: BTreeMap<&'static str, usize>,
}

impl Out {
    /// Records a violation of `oracle`.
    pub fn fail(&mut self, oracle: &'static str, at_ms: u64, place: Place, detail: String) {
        let kept = self.kept.entry(oracle).or_insert(0);
        if *kept >= KEEP_PER_ORACLE {
            *self.dropped.entry(oracle).or_insert(0) += 1;
            return;
        }
        *kept += 1;
        self.violations.push(Violation {
            oracle: oracle.to_owned(),
            at_ms,
            place,
            detail,
        });
    }

    /// Every violation, counting those not kept.
    pub fn total(&self) -> u64 {
        self.violations.len() as u64 + self.dropped.values().sum::<u64>()
    }
}

/// Which clients the liveness phase expects to converge, and how.
#[derive(Debug, Clone)]
pub enum RosterEntry {
    /// A library client: must end connected, joined to `final_rooms` and
    /// caught up, with every send resolved.
    Library {
        /// Its user.
        user: String,
        /// The rooms it means to be in.
        final_rooms: BTreeSet<String>,
    },
    /// A raw client (no liveness promise).
    Raw {
        /// Whether it reads its socket as data arrives. A client that stops
        /// reading sees frames late, so their arrival times prove nothing
        /// about when the server sent them.
        reads_promptly: bool,
    },
}

/// Checks a run's observations, one record at a time.
#[derive(Debug)]
pub struct Checker {
    roster: Vec<RosterEntry>,
    model: Model,
    typing: typing::Typing,
    rate: rate::Rate,
    requests: rate::RequestRate,
    clients: client::Clients,
    acked: acked::Acked,
    converge: converge::Converge,
    out: Out,
    last_at: u64,
}

impl Checker {
    /// A checker for a server configured as `cfg`, observed by the clients
    /// of `roster` (indexed by client number; clients not listed are
    /// treated as prompt readers without liveness promises).
    pub fn new(cfg: OracleConfig, roster: Vec<RosterEntry>) -> Checker {
        let mut rate = rate::Rate::default();
        rate.configure(cfg.rate_limit_messages, cfg.rate_limit_window_ms);
        let requests = rate::RequestRate::new(cfg.rate_limit_requests, cfg.rate_limit_window_ms);
        Checker {
            converge: converge::Converge::new(&roster),
            roster,
            model: Model::new(cfg),
            typing: typing::Typing::default(),
            rate,
            requests,
            clients: client::Clients::default(),
            acked: acked::Acked::default(),
            out: Out::default(),
            last_at: 0,
        }
    }

    /// Feeds one record (records must come in the order they happened).
    pub fn observe(&mut self, r: &Record) {
        let at = r.at_ms;
        if at < self.last_at {
            self.out.fail(
                "trace",
                at,
                Place::default(),
                format!("time went backwards from {}", self.last_at),
            );
        }
        self.last_at = at;
        match &r.obs {
            Obs::Dial { conn, client } => {
                let run = self.model.current_run();
                let raw = self.is_raw(*client);
                let mut c = Conn::new(*client, run, at);
                c.node = self.model.topology.on_attempt(*client, raw);
                self.model.conns.insert(*conn, c);
            }
            Obs::DialFailed { client } => {
                let raw = self.is_raw(*client);
                self.model.topology.on_attempt(*client, raw);
            }
            Obs::Open { conn } => {
                if let Some(c) = self.model.conns.get_mut(conn) {
                    c.open_at = Some(at);
                }
            }
            Obs::Refused { conn, status } => {
                if let Some(c) = self.model.conns.get_mut(conn) {
                    c.closed = true;
                    c.ended_at.get_or_insert(at);
                    // Only a draining server refuses upgrades, and this one
                    // never drains; caps are far above the simulation's size.
                    let place = self.model.place(*conn);
                    self.out.fail(
                        "transport",
                        at,
                        place,
                        format!("upgrade refused with HTTP {status}"),
                    );
                }
            }
            Obs::Malformed {
                conn,
                from_server,
                reason,
            } => {
                let place = self.model.place(*conn);
                let who = if *from_server { "server" } else { "client" };
                self.out.fail(
                    "transport",
                    at,
                    place,
                    format!("the {who} wrote a malformed frame: {reason}"),
                );
            }
            Obs::Sent { conn, text } => self.on_sent(at, *conn, text),
            Obs::Recv { conn, text } => self.on_recv(at, *conn, text),
            Obs::Control {
                conn,
                from_server,
                opcode,
            } => {
                if *from_server {
                    self.on_activity(at, *conn, false);
                    if *opcode == 9 && self.prompt(*conn) {
                        self.acked.on_ping(&self.model, &mut self.out, at, *conn);
                    }
                    self.converge.on_frame(&self.model, at, *conn);
                }
            }
            Obs::CloseRecv { conn, code } => {
                self.on_activity(at, *conn, true);
                auth::on_close(&mut self.model, &mut self.out, at, *conn, *code);
                if *code == Some(1013) {
                    self.out.coverage.hit("close_1013");
                }
                if let Some(c) = self.model.conns.get_mut(conn) {
                    c.closed = true;
                    c.close_code = *code;
                    c.closed_at.get_or_insert(at);
                }
                self.typing.forget_observer(*conn);
            }
            Obs::Ended { conn, how } => {
                if let Some(c) = self.model.conns.get_mut(conn)
                    && c.ended_at.is_none()
                {
                    c.ended_at = Some(at);
                    c.end_how = Some(how);
                }
                self.typing.forget_observer(*conn);
            }
            Obs::Client { client, event } => {
                self.clients
                    .on_event(&self.model, &mut self.out, at, *client, event);
            }
            Obs::Command { client, what } => self.clients.on_command(*client, what),
            Obs::ServerStart { run, .. } => {
                self.model.runs.push(at);
                if *run as usize + 1 != self.model.runs.len() {
                    self.out.fail(
                        "trace",
                        at,
                        Place::default(),
                        format!("server run {run} out of order"),
                    );
                }
            }
            Obs::NodeStart { node, .. } => self.model.topology.on_node_start(*node),
            Obs::Fault { what } => {
                self.model.topology.on_fault(at, what);
                self.converge.on_fault(at);
            }
        }
    }

    fn on_sent(&mut self, at: u64, conn: ConnNo, text: &str) {
        let req = Req::parse(at, text, &self.model, conn);
        // A message whose requestId cannot be read is answered without one.
        let readable = req.as_ref().is_some_and(|r| {
            r.request_id
                .as_deref()
                .is_some_and(chat_flow::protocol::valid_request_id)
        });
        if let Some(c) = self.model.conns.get_mut(&conn)
            && !readable
        {
            c.anon_sent += 1;
            if req.as_ref().is_none_or(|r| r.kind != "TYPING_STATUS") {
                c.anon_requests += 1;
            }
        }
        let Some(req) = req else {
            return;
        };
        if req.kind == "AUTHENTICATE"
            && let (Some((sub, _)), Some(name)) = (&req.token, req.auth_name())
        {
            self.model
                .user_names
                .entry(sub.clone())
                .or_default()
                .insert(name);
        }
        if matches!(req.kind.as_str(), "JOIN_ROOM" | "CREATE_ROOM")
            && let Some(room) = req.room.as_deref()
        {
            self.converge.on_join_sent(conn, room);
        }
        if req.kind == "TYPING_STATUS"
            && req.is_typing == Some(true)
            && let (Some(user), Some(room)) = (self.model.user_of(conn), req.room.as_deref())
        {
            self.typing.on_true_sent(user, room, at);
        }
        if let Some(c) = self.model.conns.get_mut(&conn)
            && req.request_id.is_some()
        {
            c.pending.push_back(req);
        }
    }

    /// Something arrived from the server on `conn` at `at`: deadlines that
    /// should have closed something before now are checked here (a frame
    /// sent after a deadline proves the server missed it).
    fn on_activity(&mut self, at: u64, conn: ConnNo, close: bool) {
        let timed = self.prompt(conn);
        if let Some(c) = self.model.conns.get_mut(&conn) {
            c.last_recv_at = at;
        }
        auth::on_activity(&mut self.model, &mut self.out, at, conn, close, timed);
        if timed {
            self.typing
                .on_activity(&self.model, &mut self.out, at, conn);
        }
        if self.model.conns.get(&conn).is_some_and(|c| c.closed) {
            let place = self.model.place(conn);
            self.out
                .fail("transport", at, place, "frame after the close frame".into());
        }
    }

    /// Whether `client` is a raw client (it always dials node 0).
    fn is_raw(&self, client: u32) -> bool {
        matches!(
            self.roster.get(client as usize),
            Some(RosterEntry::Raw { .. })
        )
    }

    /// Whether `conn`'s client reads its socket as data arrives (arrival
    /// times prove when the server sent something).
    fn prompt(&self, conn: ConnNo) -> bool {
        prompt_reader(&self.roster, &self.model, conn)
    }

    fn on_recv(&mut self, at: u64, conn: ConnNo, text: &str) {
        if !self.model.conns.contains_key(&conn) {
            return;
        }
        self.on_activity(at, conn, false);
        let shape = schema::problems(text, self.model.cfg.max_content_chars);
        if !shape.is_empty() {
            let place = self.model.place(conn);
            let shown: String = text.chars().take(300).collect();
            self.out.fail(
                "protocol",
                at,
                place,
                format!("{} in {shown}", shape.join("; ")),
            );
        }
        let frame = match ServerFrame::decode(text.as_bytes()) {
            Ok(f) => f,
            Err(e) => {
                let place = self.model.place(conn);
                self.out.fail(
                    "protocol",
                    at,
                    place,
                    format!("undecodable frame ({e}): {text}"),
                );
                return;
            }
        };
        if self.prompt(conn) {
            let new_message_room = match &frame.message {
                ServerMessage::NewMessage(msg) => Some(msg.room_id.as_str()),
                _ => None,
            };
            self.acked
                .before_frame(&self.model, &mut self.out, at, conn, new_message_room);
        }
        self.on_frame(at, conn, &frame);
        self.converge.on_frame(&self.model, at, conn);
    }

    /// Routes a decoded frame to the oracles.
    fn on_frame(&mut self, at: u64, conn: ConnNo, frame: &ServerFrame) {
        rooms::on_frame(&mut self.model, &mut self.out, at, conn, frame);
        let req = self.reply_to(at, conn, frame);
        let m = &mut self.model;
        let out = &mut self.out;
        replies::on_frame(m, out, at, conn, req.as_ref(), frame);
        rooms::on_room_objects(m, out, at, conn, frame);
        presence::on_names(m, out, at, conn, frame);
        if let Some(req) = &req {
            rooms::on_reply(m, out, at, conn, req, frame);
        }
        match &frame.message {
            ServerMessage::AuthSuccess {
                user_id, username, ..
            } => {
                let refresh = m.user_of(conn).is_some();
                auth::on_auth_success(m, out, at, conn, user_id, username, req.as_ref());
                rooms::on_auth_success(m, conn, req.as_ref(), refresh);
            }
            ServerMessage::RoomJoined {
                room,
                epoch,
                messages,
                users,
                recovered,
            } => {
                let last_before = m.conns[&conn].rooms.get(&room.id).map(|r| r.last);
                m.open_epoch(conn, room, epoch);
                for msg in messages {
                    order::register(m, &mut self.rate, out, at, conn, epoch, msg);
                }
                history::on_joined(
                    m,
                    out,
                    at,
                    conn,
                    &room.id,
                    epoch,
                    messages,
                    *recovered,
                    req.as_ref(),
                );
                presence::on_joined(m, out, at, conn, room, users);
                let recovered_since = req
                    .as_ref()
                    .and_then(|r| r.since_seq)
                    .filter(|_| *recovered == Some(true));
                order::on_joined(
                    m,
                    out,
                    at,
                    conn,
                    &room.id,
                    epoch,
                    messages,
                    last_before,
                    recovered_since,
                );
                if let Some(r) = m
                    .conns
                    .get_mut(&conn)
                    .and_then(|c| c.rooms.get_mut(&room.id))
                {
                    r.users = users.iter().map(|u| u.user_id.clone()).collect();
                    r.private = room.kind == RoomKind::Private;
                    r.created_by = room.created_by.clone();
                }
                if room.created_by == rooms::SYSTEM {
                    m.system_rooms.insert(room.id.clone());
                }
                self.converge.on_joined(conn, &room.id);
                let default_room = room.created_by == rooms::SYSTEM;
                self.acked
                    .on_joined(m, out, at, conn, &room.id, epoch, default_room);
            }
            ServerMessage::RoomLeft { room_id } => {
                self.converge.on_left(at, conn, room_id);
                let c = m.conns.get_mut(&conn).expect("checked above");
                if c.rooms.remove(room_id).is_none() {
                    let place = m.place_room(conn, room_id, None);
                    out.fail(
                        "presence",
                        at,
                        place,
                        "ROOM_LEFT for a room the connection had not joined".into(),
                    );
                }
                self.typing.forget_room(conn, room_id);
            }
            ServerMessage::History {
                room_id,
                messages,
                has_more,
            } => {
                let Some(epoch) = m.conns[&conn].rooms.get(room_id).map(|r| r.epoch.clone()) else {
                    let place = m.place_room(conn, room_id, None);
                    out.fail(
                        "history",
                        at,
                        place,
                        "HISTORY for a room the connection has not joined".into(),
                    );
                    return;
                };
                for msg in messages {
                    order::register(m, &mut self.rate, out, at, conn, &epoch, msg);
                }
                history::on_history(
                    m,
                    out,
                    at,
                    conn,
                    room_id,
                    &epoch,
                    messages,
                    *has_more,
                    req.as_ref(),
                );
            }
            ServerMessage::NewMessage(msg) => {
                let Some(epoch) = m.conns[&conn]
                    .rooms
                    .get(&msg.room_id)
                    .map(|r| r.epoch.clone())
                else {
                    let place = m.place_room(conn, &msg.room_id, Some(msg.seq));
                    out.fail(
                        "seq-order",
                        at,
                        place,
                        "NEW_MESSAGE for a room the connection has not joined".into(),
                    );
                    return;
                };
                order::register(m, &mut self.rate, out, at, conn, &epoch, msg);
                auth::on_new_message(m, out, at, conn, msg, req.as_ref());
                order::on_new_message(m, out, at, conn, msg, req.as_ref());
                // The sender's acknowledgement: the message is stored.
                if let Some(r) = &req
                    && r.kind == "SEND_MESSAGE"
                    && r.room.as_deref() == Some(msg.room_id.as_str())
                    && r.client_message_id == msg.client_message_id
                {
                    self.acked.on_ack(at, &msg.room_id, &epoch, msg.seq);
                }
            }
            ServerMessage::UserJoined { room_id, user } => {
                presence::on_user_event(m, out, at, conn, room_id, &user.user_id, true);
                self.converge.on_notice(at, conn, room_id, &user.user_id);
            }
            ServerMessage::UserLeft {
                room_id, user_id, ..
            } => {
                presence::on_user_event(m, out, at, conn, room_id, user_id, false);
                self.converge.on_notice(at, conn, room_id, user_id);
                self.typing.on_user_left(m, out, at, conn, room_id, user_id);
            }
            ServerMessage::TypingUpdate {
                room_id,
                user_id,
                is_typing,
                ..
            } => {
                presence::on_typing(m, out, at, conn, room_id, user_id, *is_typing);
                self.typing
                    .on_update(m, out, at, conn, room_id, user_id, *is_typing);
            }
            ServerMessage::Error {
                code,
                message,
                retry_after_ms,
            } => {
                auth::on_error(m, out, at, conn, *code, message, frame.request_id.is_some());
                if *code == chat_flow::protocol::ErrorCode::Unauthorized
                    && req.as_ref().is_some_and(|r| r.kind == "AUTHENTICATE")
                {
                    auth::on_failed_authentication(m, at, conn);
                }
                if *code == chat_flow::protocol::ErrorCode::RateLimitExceeded {
                    out.coverage.hit("rate_limited");
                    let place = m.place(conn);
                    let c = &m.conns[&conn];
                    let (run, user) = (c.run, c.user.clone());
                    match (*retry_after_ms, &req, user) {
                        (None, _, _) => out.fail(
                            "rate-limit",
                            at,
                            place,
                            "RATE_LIMIT_EXCEEDED without retryAfterMs".into(),
                        ),
                        // An authenticated connection's send: its user's bucket.
                        (Some(retry), Some(r), Some(user)) if r.kind == "SEND_MESSAGE" => {
                            self.rate
                                .on_refused(out, at, place, run, &user, r.at, retry);
                        }
                        (Some(retry), Some(r), _) => {
                            self.requests
                                .on_refused(out, at, place, run, conn, r.at, retry);
                        }
                        (Some(retry), None, _) => self.requests.on_refused_unknown(
                            out,
                            at,
                            place,
                            retry,
                            rate::longest_wait(
                                m.cfg.rate_limit_messages,
                                m.cfg.rate_limit_window_ms,
                            ),
                        ),
                    }
                }
            }
            ServerMessage::RoomCreated { room, epoch } => {
                // CREATE_ROOM makes a new, empty room and joins the creator.
                let place = m.place_room(conn, &room.id, None);
                let answers = req.as_ref().is_some_and(|r| {
                    r.kind == "CREATE_ROOM" && r.room.as_deref().is_none_or(|id| id == room.id)
                });
                if !answers {
                    out.fail(
                        "request-order",
                        at,
                        place.clone(),
                        format!(
                            "ROOM_CREATED answers {:?}",
                            req.as_ref().map(|r| (&r.kind, &r.room))
                        ),
                    );
                }
                if room.member_count != 1 {
                    out.fail(
                        "presence",
                        at,
                        place,
                        format!("a new room with memberCount {}", room.member_count),
                    );
                }
                m.open_epoch(conn, room, epoch);
                order::on_joined(m, out, at, conn, &room.id, epoch, &[], None, None);
                let me = m.user_of(conn).map(str::to_owned);
                if let Some(r) = m
                    .conns
                    .get_mut(&conn)
                    .and_then(|c| c.rooms.get_mut(&room.id))
                {
                    r.users = me.into_iter().collect();
                    r.private = room.kind == RoomKind::Private;
                    r.created_by = room.created_by.clone();
                }
                self.converge.on_joined(conn, &room.id);
            }
            ServerMessage::RoomList { rooms } => {
                for room in rooms.iter().filter(|r| r.created_by == rooms::SYSTEM) {
                    m.system_rooms.insert(room.id.clone());
                }
            }
            ServerMessage::Pong {} => out.coverage.hit("pong"),
        }
        if let Some(c) = m.conns.get_mut(&conn) {
            c.last_error = match &frame.message {
                ServerMessage::Error { code, .. } => Some(*code),
                _ => None,
            };
        }
    }

    /// Pairs a reply with the request it answers: replies come in request
    /// order and echo the request's `requestId` (a `TYPING_STATUS` that
    /// succeeds has no reply, so one that is skipped over was accepted).
    fn reply_to(&mut self, at: u64, conn: ConnNo, frame: &ServerFrame) -> Option<Req> {
        let rid = frame.request_id.as_deref()?;
        let place = self.model.place(conn);
        let refused = matches!(
            &frame.message,
            ServerMessage::Error {
                code: chat_flow::protocol::ErrorCode::RateLimitExceeded,
                ..
            }
        );
        let c = self.model.conns.get_mut(&conn)?;
        // What the connection's request bucket let through (a SEND_MESSAGE
        // of an authenticated connection is charged to its user instead).
        let run = c.run;
        // When each request that passed was written.
        let mut passed = Vec::new();
        let charged_to_conn =
            |req: &Req, c: &model::Conn| req.kind != "SEND_MESSAGE" || c.user.is_none();
        let next = loop {
            match c.pending.pop_front() {
                // A TYPING_STATUS is answered only when it fails, so one
                // skipped over was accepted: it must have been acceptable
                // (its connection authenticated and in the room).
                Some(req)
                    if req.kind == "TYPING_STATUS" && req.request_id.as_deref() != Some(rid) =>
                {
                    passed.push(req.at);
                    let member = req.room.as_ref().is_some_and(|r| c.rooms.contains_key(r));
                    if c.user.is_none() || !member {
                        self.out.fail(
                            "request-order",
                            at,
                            place.clone(),
                            format!(
                                "TYPING_STATUS {:?} for room {:?} got no error, but the connection is {}",
                                req.request_id,
                                req.room,
                                if c.user.is_none() { "not authenticated" } else { "not in that room" }
                            ),
                        );
                    }
                }
                next => break next,
            }
        };
        if let Some(req) = &next
            && req.request_id.as_deref() == Some(rid)
            && !refused
            && charged_to_conn(req, c)
        {
            passed.push(req.at);
        }
        for written in passed {
            self.requests
                .on_passed(&mut self.out, at, place.clone(), run, conn, written);
        }
        match next {
            Some(req) if req.request_id.as_deref() == Some(rid) => Some(req),
            other => {
                let expected = other.as_ref().and_then(|r| r.request_id.clone());
                self.out.fail(
                    "request-order",
                    at,
                    place,
                    format!("reply with requestId {rid:?} while {expected:?} was next to answer"),
                );
                None
            }
        }
    }

    /// Ends the run at `end_ms`: checks what must have happened by then and
    /// the liveness of the roster's library clients. Returns violations and
    /// coverage.
    pub fn finish(mut self, end_ms: u64) -> Out {
        self.converge.finish(&mut self.out);
        self.typing.finish(&self.model, &mut self.out, end_ms);
        rooms::finish(&self.model, &mut self.out, end_ms);
        history::finish(&self.model, &mut self.out);
        liveness::check(
            &self.model,
            &self.clients,
            &mut self.out,
            end_ms,
            &self.roster,
        );
        self.out
    }
}

/// Whether `conn`'s client reads its socket as data arrives: every client
/// but the raw ones that stop reading (their frames arrive late, so their
/// arrival times prove nothing about when the server sent them).
fn prompt_reader(roster: &[RosterEntry], m: &Model, conn: ConnNo) -> bool {
    let client = m.conns.get(&conn).map(|c| c.client);
    !client.is_some_and(|c| {
        matches!(
            roster.get(c as usize),
            Some(RosterEntry::Raw {
                reads_promptly: false
            })
        )
    })
}
