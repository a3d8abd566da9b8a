//! The wire contract (`PROTOCOL.md`) rule by rule, against the sans-IO core.
//!
//! [`TestHub`] drives a [`Hub`] on a virtual clock the way the production
//! server does: it numbers connections, ticks the hub whenever time passes a
//! deadline, decodes every frame the hub emits (each must be a valid
//! `{"type","payload"}` envelope that [`ServerFrame::decode`] understands) into
//! per-connection inboxes, and records closes. It refuses any frame addressed
//! to a connection that was already closed or disconnected.
//!
//! Each test asserts exact outcomes: codes, payload fields, `requestId` echo,
//! who receives what, and who receives nothing.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use serde_json::{Value, json};

use super::{AuthOutcome, ConnId, DefaultRoom, Hub, Inbound, Limits, Output, Timestamp};
use crate::auth::{AuthError, VerifiedToken};
use crate::protocol::parse::{ParseLimits, parse_once};
use crate::protocol::server::{ChatMessage, RoomInfo, ServerFrame, ServerMessage, UserRef};
use crate::protocol::{
    Authenticate, ClientMessage, ClientRequest, ErrorCode, MessageKind, RoomKind,
};

// ----- the two places that know the shape of `crate::auth` -------------------

/// A token the driver refused (bad signature or the like).
pub(super) fn refused_token() -> AuthError {
    AuthError::BadSignature
}

/// A verified token for `user`, valid for a long time, without claims.
pub(super) fn token(user: &str) -> VerifiedToken {
    VerifiedToken {
        user_id: user.to_owned(),
        username: None,
        rooms: Vec::new(),
        expires_at_unix_ms: FAR_FUTURE,
    }
}

// ----- harness ----------------------------------------------------------------

/// 2023-10-01T12:00:00.000Z: when every test hub starts.
pub(super) const T0: u64 = 1_696_161_600_000;
/// An expiry no test reaches.
pub(super) const FAR_FUTURE: u64 = T0 + 365 * 24 * 3600 * 1000;

/// Small limits that keep the tests short.
pub(super) fn small_limits() -> Limits {
    Limits {
        history_limit: 5,
        typing_timeout_ms: 1_000,
        ..Limits::default()
    }
}

/// What a connection received, in order.
#[derive(Debug, Clone, PartialEq)]
#[allow(clippy::large_enum_variant, reason = "short-lived test values")]
pub(super) enum Ev {
    /// A text frame, decoded.
    Frame(ServerFrame),
    /// A close with this code.
    Close(u16),
}

#[derive(Debug)]
#[allow(clippy::large_enum_variant, reason = "short-lived test values")]
enum Received {
    Frame(Value, ServerFrame),
    Close(u16),
}

/// A [`Hub`] on a virtual clock, with decoded per-connection inboxes.
pub(super) struct TestHub {
    pub(super) hub: Hub,
    /// The virtual clock (Unix ms).
    pub(super) now: u64,
    next_conn: u64,
    inbox: BTreeMap<ConnId, VecDeque<Received>>,
    closed: BTreeMap<ConnId, u16>,
    /// Connections closed by the hub or disconnected by the test.
    gone: BTreeSet<ConnId>,
    /// Every output of the hub, in order.
    pub(super) log: Vec<Output>,
    /// Outputs since the last [`TestHub::take_step`].
    step: Vec<Output>,
}

impl TestHub {
    /// A hub with the default room `general` ("General Chat"), instance 1.
    pub(super) fn new(limits: Limits) -> TestHub {
        TestHub::with(limits, &[("general", "General Chat")], 1)
    }

    /// A hub with these default rooms and instance number, started at `T0`.
    pub(super) fn with(limits: Limits, rooms: &[(&str, &str)], instance: u64) -> TestHub {
        let rooms: Vec<DefaultRoom> = rooms
            .iter()
            .map(|(id, name)| DefaultRoom {
                id: (*id).to_owned(),
                name: (*name).to_owned(),
            })
            .collect();
        TestHub {
            hub: Hub::new(limits, &rooms, instance, Timestamp(T0)),
            now: T0,
            next_conn: 1,
            inbox: BTreeMap::new(),
            closed: BTreeMap::new(),
            gone: BTreeSet::new(),
            log: Vec::new(),
            step: Vec::new(),
        }
    }

    fn pump(&mut self) {
        while let Some(out) = self.hub.poll_output() {
            match &out {
                Output::Frame {
                    conn,
                    frame,
                    notice,
                } => {
                    let text = String::from_utf8_lossy(frame).into_owned();
                    assert!(
                        !self.gone.contains(conn),
                        "frame to closed connection {conn:?}: {text}"
                    );
                    let value: Value = serde_json::from_slice(frame)
                        .unwrap_or_else(|e| panic!("frame is not JSON ({e}): {text}"));
                    assert!(
                        value["type"].is_string() && value["payload"].is_object(),
                        "not an envelope: {text}"
                    );
                    // Only presence and typing may be held by the driver.
                    let is_notice = matches!(
                        value["type"].as_str(),
                        Some("USER_JOINED" | "USER_LEFT" | "TYPING_UPDATE")
                    );
                    assert_eq!(*notice, is_notice, "notice flag of {text}");
                    let decoded = ServerFrame::decode(frame)
                        .unwrap_or_else(|e| panic!("frame does not decode ({e}): {text}"));
                    self.inbox
                        .entry(*conn)
                        .or_default()
                        .push_back(Received::Frame(value, decoded));
                }
                Output::Close { conn, code, .. } => {
                    assert!(!self.gone.contains(conn), "second close of {conn:?}");
                    assert!(!self.hub.is_connected(*conn), "closed but still known");
                    self.gone.insert(*conn);
                    self.closed.insert(*conn, code.code());
                    self.inbox
                        .entry(*conn)
                        .or_default()
                        .push_back(Received::Close(code.code()));
                }
            }
            self.log.push(out.clone());
            self.step.push(out);
        }
    }

    /// The outputs since the last call; the inboxes are emptied too.
    pub(super) fn take_step(&mut self) -> Vec<Output> {
        self.inbox.clear();
        std::mem::take(&mut self.step)
    }

    /// The outputs since the last [`TestHub::take_step`], left in place.
    pub(super) fn step_outputs(&self) -> &[Output] {
        &self.step
    }

    /// Opens a new connection.
    pub(super) fn connect(&mut self) -> ConnId {
        let conn = ConnId(self.next_conn);
        self.next_conn += 1;
        self.hub.connect(Timestamp(self.now), conn);
        self.pump();
        conn
    }

    /// The connection goes away (closed by the peer, or dropped).
    pub(super) fn disconnect(&mut self, conn: ConnId) {
        self.hub.disconnect(Timestamp(self.now), conn);
        self.gone.insert(conn);
        self.pump();
    }

    /// Hands one inbound message to the hub.
    pub(super) fn handle(&mut self, conn: ConnId, inbound: Inbound) {
        self.hub.handle(Timestamp(self.now), conn, inbound);
        self.pump();
    }

    /// A typed request, handed over as it is (an `AUTHENTICATE` among them
    /// carries an unverified token).
    pub(super) fn request(
        &mut self,
        conn: ConnId,
        request: ClientRequest,
        request_id: Option<&str>,
    ) {
        self.handle(
            conn,
            Inbound::Request(ClientMessage {
                request_id: request_id.map(str::to_owned),
                request,
            }),
        );
    }

    /// A text frame, parsed by the real parser. The token of an
    /// `AUTHENTICATE` is taken as the `sub` of a valid token.
    pub(super) fn text(&mut self, conn: ConnId, text: &str) {
        let mut bytes = text.as_bytes().to_vec();
        let inbound = match parse_once(&mut bytes, ParseLimits::default()) {
            Ok(m) => Inbound::from_message(m, |sub| Ok(token(sub))),
            Err(e) => Inbound::Invalid(e),
        };
        self.handle(conn, inbound);
    }

    /// A JSON message (a whole envelope).
    pub(super) fn send(&mut self, conn: ConnId, message: Value) {
        self.text(conn, &message.to_string());
    }

    /// `{"type": kind, "payload": payload, "requestId": rid}`.
    pub(super) fn call(&mut self, conn: ConnId, kind: &str, payload: Value, rid: &str) {
        self.send(
            conn,
            json!({"type": kind, "payload": payload, "requestId": rid}),
        );
    }

    /// A binary frame.
    pub(super) fn binary(&mut self, conn: ConnId) {
        self.handle(conn, Inbound::Binary);
    }

    /// `AUTHENTICATE` with a verification outcome.
    pub(super) fn auth_with(
        &mut self,
        conn: ConnId,
        outcome: AuthOutcome,
        username: Option<&str>,
        rid: Option<&str>,
    ) {
        self.handle(
            conn,
            Inbound::Authenticate {
                request_id: rid.map(str::to_owned),
                token: outcome,
                username: username.map(str::to_owned),
            },
        );
    }

    /// Authenticates `conn` as `user` (a long-lived token) and consumes the
    /// `AUTH_SUCCESS`.
    pub(super) fn auth(&mut self, conn: ConnId, user: &str) {
        self.auth_with(conn, Ok(token(user)), None, Some("auth"));
        let f = self.one(conn);
        assert_eq!(f.request_id.as_deref(), Some("auth"));
        match f.message {
            ServerMessage::AuthSuccess { user_id, .. } => assert_eq!(user_id, user),
            other => panic!("expected AUTH_SUCCESS, got {other:?}"),
        }
    }

    /// A new authenticated connection of `user`.
    pub(super) fn user(&mut self, user: &str) -> ConnId {
        let c = self.connect();
        self.auth(c, user);
        c
    }

    /// Moves the clock forward, ticking the hub at every deadline passed.
    pub(super) fn advance(&mut self, ms: u64) {
        let target = self.now + ms;
        while let Some(at) = self.hub.next_deadline() {
            if at.0 > target {
                break;
            }
            self.now = self.now.max(at.0);
            self.hub.tick(Timestamp(self.now));
            self.pump();
        }
        self.now = target;
    }

    /// Moves the clock to `at`.
    pub(super) fn advance_to(&mut self, at: u64) {
        assert!(at >= self.now, "time goes forward only");
        self.advance(at - self.now);
    }

    fn drain(&mut self, conn: ConnId) -> Vec<Received> {
        self.inbox
            .get_mut(&conn)
            .map(|q| q.drain(..).collect())
            .unwrap_or_default()
    }

    /// Everything `conn` received since the last look, closes included.
    pub(super) fn events(&mut self, conn: ConnId) -> Vec<Ev> {
        self.drain(conn)
            .into_iter()
            .map(|r| match r {
                Received::Frame(_, f) => Ev::Frame(f),
                Received::Close(code) => Ev::Close(code),
            })
            .collect()
    }

    /// The frames `conn` received since the last look (closes are recorded
    /// separately, see [`TestHub::closed`]).
    pub(super) fn frames(&mut self, conn: ConnId) -> Vec<ServerFrame> {
        self.drain(conn)
            .into_iter()
            .filter_map(|r| match r {
                Received::Frame(_, f) => Some(f),
                Received::Close(_) => None,
            })
            .collect()
    }

    /// The frames `conn` received since the last look, as raw JSON.
    pub(super) fn values(&mut self, conn: ConnId) -> Vec<Value> {
        self.drain(conn)
            .into_iter()
            .filter_map(|r| match r {
                Received::Frame(v, _) => Some(v),
                Received::Close(_) => None,
            })
            .collect()
    }

    /// The one frame `conn` received since the last look.
    #[track_caller]
    pub(super) fn one(&mut self, conn: ConnId) -> ServerFrame {
        let mut frames = self.frames(conn);
        assert_eq!(
            frames.len(),
            1,
            "expected exactly one frame for {conn:?}: {frames:?}"
        );
        frames.pop().expect("one")
    }

    /// The one frame `conn` received since the last look, as raw JSON.
    #[track_caller]
    pub(super) fn one_value(&mut self, conn: ConnId) -> Value {
        let mut values = self.values(conn);
        assert_eq!(
            values.len(),
            1,
            "expected exactly one frame for {conn:?}: {values:?}"
        );
        values.pop().expect("one")
    }

    /// Asserts that `conn` received nothing since the last look.
    #[track_caller]
    pub(super) fn silent(&mut self, conn: ConnId) {
        let events = self.events(conn);
        assert!(
            events.is_empty(),
            "expected nothing for {conn:?}, got {events:?}"
        );
    }

    /// The close code the hub gave `conn`, if it closed it.
    pub(super) fn closed(&self, conn: ConnId) -> Option<u16> {
        self.closed.get(&conn).copied()
    }

    /// Asserts that the one frame `conn` received is this `ERROR`; returns
    /// its message.
    #[track_caller]
    pub(super) fn error(&mut self, conn: ConnId, code: ErrorCode, rid: Option<&str>) -> String {
        let f = self.one(conn);
        assert_error(&f, code, rid)
    }

    /// `JOIN_ROOM` without recovery; the reply must be the only frame.
    #[track_caller]
    pub(super) fn join(&mut self, conn: ConnId, room: &str) -> Joined {
        self.call(conn, "JOIN_ROOM", json!({"roomId": room}), "join");
        self.joined(conn, "join")
    }

    /// The one frame `conn` received must be `ROOM_JOINED` answering `rid`.
    #[track_caller]
    pub(super) fn joined(&mut self, conn: ConnId, rid: &str) -> Joined {
        let f = self.one(conn);
        assert_eq!(f.request_id.as_deref(), Some(rid), "{f:?}");
        match f.message {
            ServerMessage::RoomJoined {
                room,
                epoch,
                messages,
                users,
                recovered,
            } => Joined {
                room,
                epoch,
                messages,
                users,
                recovered,
            },
            other => panic!("expected ROOM_JOINED, got {other:?}"),
        }
    }

    /// `SEND_MESSAGE` of `content`; returns the acknowledgement, which must be
    /// the only frame `conn` received.
    #[track_caller]
    pub(super) fn say(&mut self, conn: ConnId, room: &str, content: &str) -> ChatMessage {
        self.call(
            conn,
            "SEND_MESSAGE",
            json!({"roomId": room, "content": content}),
            "say",
        );
        let f = self.one(conn);
        assert_eq!(f.request_id.as_deref(), Some("say"), "{f:?}");
        new_message(f)
    }

    /// `LIST_ROOMS`, sorted by id.
    #[track_caller]
    pub(super) fn list(&mut self, conn: ConnId) -> Vec<RoomInfo> {
        self.call(conn, "LIST_ROOMS", json!({}), "list");
        let f = self.one(conn);
        assert_eq!(f.request_id.as_deref(), Some("list"));
        match f.message {
            ServerMessage::RoomList { mut rooms } => {
                rooms.sort_by(|a, b| a.id.cmp(&b.id));
                rooms
            }
            other => panic!("expected ROOM_LIST, got {other:?}"),
        }
    }

    /// `GET_HISTORY`: the page's seqs and `hasMore`.
    #[track_caller]
    pub(super) fn history(&mut self, conn: ConnId, room: &str, payload: Value) -> (Vec<u64>, bool) {
        let mut payload = payload;
        payload["roomId"] = json!(room);
        self.call(conn, "GET_HISTORY", payload, "hist");
        let f = self.one(conn);
        assert_eq!(f.request_id.as_deref(), Some("hist"));
        match f.message {
            ServerMessage::History {
                room_id,
                messages,
                has_more,
            } => {
                assert_eq!(room_id, room);
                (seqs(&messages), has_more)
            }
            other => panic!("expected HISTORY, got {other:?}"),
        }
    }

    /// `TYPING_STATUS` (no reply expected on success).
    pub(super) fn typing(&mut self, conn: ConnId, room: &str, is_typing: bool) {
        self.call(
            conn,
            "TYPING_STATUS",
            json!({"roomId": room, "isTyping": is_typing}),
            "typing",
        );
    }

    /// `PING`; asserts the `PONG`.
    #[track_caller]
    pub(super) fn ping_ok(&mut self, conn: ConnId) {
        self.call(conn, "PING", json!({}), "ping");
        let f = self.one(conn);
        assert_eq!(f.message, ServerMessage::Pong {});
        assert_eq!(f.request_id.as_deref(), Some("ping"));
    }
}

/// A decoded `ROOM_JOINED`.
#[derive(Debug)]
pub(super) struct Joined {
    pub(super) room: RoomInfo,
    pub(super) epoch: String,
    pub(super) messages: Vec<ChatMessage>,
    pub(super) users: Vec<UserRef>,
    pub(super) recovered: Option<bool>,
}

/// Asserts that `f` is `ERROR code` answering `rid`; returns its message.
#[track_caller]
pub(super) fn assert_error(f: &ServerFrame, code: ErrorCode, rid: Option<&str>) -> String {
    let ServerMessage::Error {
        code: got, message, ..
    } = &f.message
    else {
        panic!("expected ERROR {code:?}, got {f:?}");
    };
    assert_eq!(*got, code, "{f:?}");
    assert_eq!(f.request_id.as_deref(), rid, "requestId of {f:?}");
    message.clone()
}

/// The chat message of a `NEW_MESSAGE` frame.
#[track_caller]
pub(super) fn new_message(f: ServerFrame) -> ChatMessage {
    match f.message {
        ServerMessage::NewMessage(m) => m,
        other => panic!("expected NEW_MESSAGE, got {other:?}"),
    }
}

/// The `retryAfterMs` of a `RATE_LIMIT_EXCEEDED` error.
#[track_caller]
fn retry_after(f: &ServerFrame, rid: Option<&str>) -> u64 {
    assert_error(f, ErrorCode::RateLimitExceeded, rid);
    match &f.message {
        ServerMessage::Error { retry_after_ms, .. } => {
            retry_after_ms.expect("RATE_LIMIT_EXCEEDED carries retryAfterMs")
        }
        _ => unreachable!(),
    }
}

pub(super) fn seqs(messages: &[ChatMessage]) -> Vec<u64> {
    messages.iter().map(|m| m.seq).collect()
}

fn user_ids(users: &[UserRef]) -> Vec<String> {
    let mut ids: Vec<String> = users.iter().map(|u| u.user_id.clone()).collect();
    ids.sort();
    ids
}

fn typing_update(room: &str, user: &str, is_typing: bool) -> ServerMessage {
    ServerMessage::TypingUpdate {
        room_id: room.to_owned(),
        user_id: user.to_owned(),
        username: user.to_owned(),
        is_typing,
    }
}

fn user_joined(room: &str, user: &str) -> ServerMessage {
    ServerMessage::UserJoined {
        room_id: room.to_owned(),
        user: UserRef {
            user_id: user.to_owned(),
            username: user.to_owned(),
        },
    }
}

fn user_left(room: &str, user: &str) -> ServerMessage {
    ServerMessage::UserLeft {
        room_id: room.to_owned(),
        user_id: user.to_owned(),
        username: user.to_owned(),
    }
}

/// The messages of a list of frames, asserting none carries a `requestId`.
#[track_caller]
fn broadcasts(frames: Vec<ServerFrame>) -> Vec<ServerMessage> {
    frames
        .into_iter()
        .map(|f| {
            assert_eq!(
                f.request_id, None,
                "a broadcast carries no requestId: {f:?}"
            );
            f.message
        })
        .collect()
}

// ----- envelope ---------------------------------------------------------------

#[test]
fn malformed_messages_are_invalid_message_with_request_id_when_readable() {
    let mut t = TestHub::new(small_limits());
    let a = t.connect();
    let other = t.user("bob");
    t.join(other, "general");

    for authenticated in [false, true] {
        t.text(a, "not json");
        t.error(a, ErrorCode::InvalidMessage, None);
        t.text(a, "[1,2]");
        t.error(a, ErrorCode::InvalidMessage, None);
        t.send(a, json!({"type": "NOPE", "requestId": "x1"}));
        t.error(a, ErrorCode::InvalidMessage, Some("x1"));
        t.send(a, json!({"payload": {}, "requestId": "x2"}));
        t.error(a, ErrorCode::InvalidMessage, Some("x2"));
        t.send(a, json!({"type": "PING", "payload": 5, "requestId": "x3"}));
        t.error(a, ErrorCode::InvalidMessage, Some("x3"));
        // A requestId that is not a string of at most 128 characters.
        t.send(a, json!({"type": "PING", "requestId": 5}));
        t.error(a, ErrorCode::InvalidMessage, None);
        t.send(a, json!({"type": "PING", "requestId": "r".repeat(129)}));
        t.error(a, ErrorCode::InvalidMessage, None);
        // Missing or ill-typed fields.
        t.call(a, "JOIN_ROOM", json!({}), "x4");
        t.error(a, ErrorCode::InvalidMessage, Some("x4"));
        t.call(
            a,
            "TYPING_STATUS",
            json!({"roomId": "general", "isTyping": "yes"}),
            "x5",
        );
        t.error(a, ErrorCode::InvalidMessage, Some("x5"));
        // Field validation comes before room checks.
        t.call(
            a,
            "SEND_MESSAGE",
            json!({"roomId": "nowhere", "content": "   "}),
            "x6",
        );
        t.error(a, ErrorCode::InvalidMessage, Some("x6"));
        assert_eq!(
            t.closed(a),
            None,
            "a bad message never closes the connection"
        );
        t.silent(other);
        if !authenticated {
            t.auth(a, "alice");
        }
    }
    t.ping_ok(a);
}

#[test]
fn binary_frames_are_invalid_message_and_keep_the_connection() {
    let mut t = TestHub::new(small_limits());
    let a = t.connect();
    t.binary(a);
    t.error(a, ErrorCode::InvalidMessage, None);
    t.auth(a, "alice");
    t.binary(a);
    t.error(a, ErrorCode::InvalidMessage, None);
    assert_eq!(t.closed(a), None);
    t.ping_ok(a);
}

#[test]
fn requests_before_authentication_are_unauthorized() {
    let mut t = TestHub::new(small_limits());
    let a = t.connect();
    let requests = [
        ("PING", json!({})),
        ("LIST_ROOMS", json!({})),
        ("JOIN_ROOM", json!({"roomId": "general"})),
        ("CREATE_ROOM", json!({"name": "Mine", "id": "mine"})),
        (
            "SEND_MESSAGE",
            json!({"roomId": "general", "content": "hi"}),
        ),
        ("GET_HISTORY", json!({"roomId": "general"})),
        (
            "TYPING_STATUS",
            json!({"roomId": "general", "isTyping": true}),
        ),
        ("LEAVE_ROOM", json!({"roomId": "general"})),
    ];
    for (i, (kind, payload)) in requests.into_iter().enumerate() {
        let rid = format!("u{i}");
        t.call(a, kind, payload, &rid);
        t.error(a, ErrorCode::Unauthorized, Some(&rid));
    }
    assert_eq!(t.closed(a), None);
    // None of them had an effect.
    let b = t.user("bob");
    let joined = t.join(b, "general");
    assert_eq!(user_ids(&joined.users), ["bob"]);
    assert!(joined.messages.is_empty());
    assert_eq!(
        t.list(b).iter().map(|r| r.id.as_str()).collect::<Vec<_>>(),
        ["general"]
    );
}

#[test]
fn ping_answers_pong_echoing_the_request_id() {
    let mut t = TestHub::new(small_limits());
    let a = t.user("alice");
    t.call(a, "PING", json!({}), "p-1");
    assert_eq!(
        t.one_value(a),
        json!({"type": "PONG", "payload": {}, "requestId": "p-1"})
    );
    t.send(a, json!({"type": "PING"}));
    assert_eq!(t.one_value(a), json!({"type": "PONG", "payload": {}}));
}

// ----- authentication -----------------------------------------------------------

#[test]
fn auth_timeout_closes_at_exactly_the_deadline() {
    let limits = Limits {
        auth_timeout_ms: 3_000,
        ..small_limits()
    };
    let mut t = TestHub::new(limits);
    let a = t.connect();
    let b = t.connect();
    t.auth(b, "bob");
    t.advance(1_000);
    let late = t.connect();
    t.advance(1_999);
    t.silent(a);
    assert_eq!(t.closed(a), None);
    assert!(t.hub.is_connected(a));
    t.advance(1);
    assert_unauthorized_then_closed(&mut t, a, "authentication timeout");
    // The authenticated connection stays; the later one has its own deadline.
    t.silent(b);
    assert_eq!(t.closed(b), None);
    assert_eq!(t.closed(late), None);
    t.advance(999);
    assert_eq!(t.closed(late), None);
    t.advance(1);
    assert_eq!(t.closed(late), Some(1008));
    t.ping_ok(b);
}

#[test]
fn third_failed_authenticate_is_answered_then_closes() {
    let mut t = TestHub::new(small_limits());
    let a = t.connect();
    t.auth_with(a, Err(refused_token()), None, Some("a1"));
    t.error(a, ErrorCode::Unauthorized, Some("a1"));
    let mut expired = token("alice");
    expired.expires_at_unix_ms = T0 - 1;
    t.auth_with(a, Ok(expired), None, Some("a2"));
    t.error(a, ErrorCode::Unauthorized, Some("a2"));
    // A payload username breaking the rules is INVALID_MESSAGE and does not
    // count as a failed attempt.
    t.call(
        a,
        "AUTHENTICATE",
        json!({"token": "alice", "username": ""}),
        "bad",
    );
    t.error(a, ErrorCode::InvalidMessage, Some("bad"));
    assert_eq!(t.closed(a), None);
    t.auth_with(a, Err(refused_token()), None, Some("a3"));
    let f = frame_then_close_1008(&mut t, a);
    assert_error(&f, ErrorCode::Unauthorized, Some("a3"));
    // The core has forgotten it.
    t.gone.remove(&a);
    t.hub.handle(Timestamp(t.now), a, Inbound::Binary);
    assert!(t.hub.poll_output().is_none());
}

#[test]
fn a_failed_authenticate_can_be_followed_by_a_good_one() {
    let mut t = TestHub::new(small_limits());
    let a = t.connect();
    t.auth_with(a, Err(refused_token()), None, Some("a1"));
    t.error(a, ErrorCode::Unauthorized, Some("a1"));
    t.call(a, "PING", json!({}), "p");
    t.error(a, ErrorCode::Unauthorized, Some("p"));
    t.auth(a, "alice");
    t.ping_ok(a);
    // A token whose expiry instant has come is a failure, not a session.
    let b = t.connect();
    let mut expired = token("bob");
    expired.expires_at_unix_ms = t.now;
    t.auth_with(b, Ok(expired), None, Some("b1"));
    let message = t.error(b, ErrorCode::Unauthorized, Some("b1"));
    assert!(message.contains("expired"), "{message}");
    t.call(b, "PING", json!({}), "p");
    t.error(b, ErrorCode::Unauthorized, Some("p"));
    let mut fresh = token("bob");
    fresh.expires_at_unix_ms = t.now + 1;
    t.auth_with(b, Ok(fresh), None, Some("b2"));
    assert!(matches!(
        t.one(b).message,
        ServerMessage::AuthSuccess { .. }
    ));
}

#[test]
fn username_precedence_claim_then_payload_then_user_id() {
    let mut t = TestHub::new(small_limits());
    let cases = [
        (Some("Claimed"), Some("Proposed"), "Claimed"),
        (Some("Claimed"), None, "Claimed"),
        (None, Some("Proposed"), "Proposed"),
        (None, None, "u1"),
    ];
    for (i, (claim, payload, expected)) in cases.into_iter().enumerate() {
        let c = t.connect();
        let mut tok = token("u1");
        tok.username = claim.map(str::to_owned);
        let rid = format!("a{i}");
        t.auth_with(c, Ok(tok), payload, Some(&rid));
        assert_eq!(
            t.one_value(c),
            json!({"type": "AUTH_SUCCESS",
                   "payload": {"userId": "u1", "username": expected, "status": "online"},
                   "requestId": rid})
        );
        // Messages carry that name.
        t.join(c, "general");
        let m = t.say(c, "general", "hi");
        assert_eq!((m.user_id.as_str(), m.username.as_str()), ("u1", expected));
        t.disconnect(c);
    }
}

/// Alice (token expiring at `T0 + 5 s`) and bob, both in `general`, with
/// every frame so far read.
fn alice_expiring_with_bob(t: &mut TestHub) -> (ConnId, ConnId) {
    let a = t.connect();
    let mut tok = token("alice");
    tok.expires_at_unix_ms = T0 + 5_000;
    t.auth_with(a, Ok(tok), None, Some("a"));
    t.one(a);
    t.join(a, "general");
    let b = t.user("bob");
    t.join(b, "general");
    t.frames(a);
    (a, b)
}

/// What `conn` got since the last look: one frame, then the close 1008,
/// and nothing else. Returns the frame.
fn frame_then_close_1008(t: &mut TestHub, conn: ConnId) -> ServerFrame {
    let mut events = t.events(conn);
    assert_eq!(events.len(), 2, "{events:?}");
    assert_eq!(events[1], Ev::Close(1008));
    match events.swap_remove(0) {
        Ev::Frame(f) => f,
        other => panic!("a frame before the close, got {other:?}"),
    }
}

/// `conn` got `ERROR UNAUTHORIZED` (`message`, no `requestId`), then the
/// close 1008, and nothing else.
fn assert_unauthorized_then_closed(t: &mut TestHub, conn: ConnId, message: &str) {
    let f = frame_then_close_1008(t, conn);
    assert_eq!(assert_error(&f, ErrorCode::Unauthorized, None), message);
}

/// `expires_at_unix_ms` is `(exp + leeway) * 1000`, the first millisecond at
/// which the token is no longer accepted (see `crate::auth::VerifiedToken`).
#[test]
fn token_expiry_closes_when_exp_plus_leeway_passes() {
    let mut t = TestHub::new(small_limits());
    let (a, b) = alice_expiring_with_bob(&mut t);
    t.advance_to(T0 + 4_999);
    t.silent(a);
    assert_eq!(t.closed(a), None);
    t.ping_ok(a);
    t.advance(1);
    assert_unauthorized_then_closed(&mut t, a, "token expired");
    // Leaving with the close: bob sees alice go.
    assert_eq!(broadcasts(t.frames(b)), [user_left("general", "alice")]);
}

/// A driver may be late to call `tick` (a batch of input is handled first):
/// an input at or after a deadline still sees the deadline fire first.
#[test]
fn an_input_after_a_deadline_fires_the_deadline_first() {
    let mut t = TestHub::new(small_limits());
    let (a, b) = alice_expiring_with_bob(&mut t);
    // No tick between: the send arrives 1 ms after the token expired.
    t.now = T0 + 5_001;
    t.call(
        a,
        "SEND_MESSAGE",
        json!({"roomId": "general", "content": "too late"}),
        "late",
    );
    assert_unauthorized_then_closed(&mut t, a, "token expired");
    // Bob sees alice leave, and no message.
    assert_eq!(broadcasts(t.frames(b)), [user_left("general", "alice")]);
    // The same for a connection that never authenticated: its AUTHENTICATE
    // comes after the auth deadline and is not answered.
    let c = t.connect();
    t.now += small_limits().auth_timeout_ms;
    t.auth_with(c, Ok(token("carol")), None, Some("late"));
    assert_unauthorized_then_closed(&mut t, c, "authentication timeout");
}

#[test]
fn token_refresh_for_the_same_sub_postpones_expiry() {
    let mut t = TestHub::new(small_limits());
    let a = t.connect();
    let mut tok = token("alice");
    tok.username = Some("Alice".into());
    tok.expires_at_unix_ms = T0 + 5_000;
    t.auth_with(a, Ok(tok.clone()), None, Some("a"));
    t.one(a);
    t.advance(3_000);
    tok.expires_at_unix_ms = T0 + 10_000;
    t.auth_with(a, Ok(tok), None, Some("refresh"));
    assert_eq!(
        t.one_value(a),
        json!({"type": "AUTH_SUCCESS",
               "payload": {"userId": "alice", "username": "Alice", "status": "online"},
               "requestId": "refresh"})
    );
    t.advance_to(T0 + 5_000);
    t.silent(a);
    t.advance_to(T0 + 9_999);
    t.silent(a);
    assert_eq!(t.closed(a), None);
    t.advance(1);
    assert_eq!(t.closed(a), Some(1008));
    let frames = t.frames(a);
    assert_eq!(frames.len(), 1);
    assert_eq!(
        assert_error(&frames[0], ErrorCode::Unauthorized, None),
        "token expired"
    );
}

#[test]
fn token_refresh_for_another_sub_is_refused_and_identity_kept() {
    let mut t = TestHub::new(small_limits());
    let a = t.connect();
    let mut tok = token("alice");
    tok.expires_at_unix_ms = T0 + 5_000;
    t.auth_with(a, Ok(tok), None, Some("a"));
    t.one(a);
    t.join(a, "general");
    let mut other = token("mallory");
    other.expires_at_unix_ms = T0 + 50_000;
    t.auth_with(a, Ok(other), None, Some("swap"));
    t.error(a, ErrorCode::Unauthorized, Some("swap"));
    assert_eq!(t.closed(a), None);
    let m = t.say(a, "general", "still me");
    assert_eq!(m.user_id, "alice");
    // The other token's later exp does not apply either.
    t.advance_to(T0 + 4_999);
    assert_eq!(t.closed(a), None);
    t.advance(1);
    assert_eq!(t.closed(a), Some(1008));
}

#[test]
fn an_unverified_token_is_never_trusted() {
    let mut t = TestHub::new(small_limits());
    // What a driver that forgot to verify would hand over.
    let raw = |sub: &str| {
        ClientRequest::Authenticate(Authenticate {
            token: sub.to_owned(),
            username: None,
        })
    };
    // Before authentication: a failed attempt; the connection stays anonymous.
    let a = t.connect();
    t.request(a, raw("alice"), Some("a1"));
    assert_eq!(
        t.error(a, ErrorCode::Unauthorized, Some("a1")),
        "token was not verified"
    );
    t.call(a, "PING", json!({}), "p");
    t.error(a, ErrorCode::Unauthorized, Some("p"));
    // It counts towards the failed attempts: the third closes.
    t.request(a, raw("alice"), Some("a2"));
    t.error(a, ErrorCode::Unauthorized, Some("a2"));
    t.request(a, raw("alice"), Some("a3"));
    let f = frame_then_close_1008(&mut t, a);
    assert_error(&f, ErrorCode::Unauthorized, Some("a3"));
    // After authentication: neither another identity nor a refresh.
    let b = t.connect();
    let mut tok = token("bob");
    tok.expires_at_unix_ms = T0 + 5_000;
    t.auth_with(b, Ok(tok), None, Some("b"));
    t.one(b);
    t.join(b, "general");
    t.request(b, raw("mallory"), Some("swap"));
    t.error(b, ErrorCode::Unauthorized, Some("swap"));
    assert_eq!(t.say(b, "general", "still me").user_id, "bob");
    assert_eq!(t.hub.stats().token_refreshes, 0);
    t.advance_to(T0 + 4_999);
    assert_eq!(t.closed(b), None);
    t.advance(1);
    assert_eq!(t.closed(b), Some(1008));
}

// ----- rooms ----------------------------------------------------------------------

#[test]
fn default_rooms_exist_from_start_created_by_system() {
    let mut t = TestHub::with(
        small_limits(),
        &[("general", "General Chat"), ("random", "Random")],
        1,
    );
    t.advance(5_000);
    let a = t.user("alice");
    let rooms = t.list(a);
    let expected = |id: &str, name: &str| RoomInfo {
        id: id.into(),
        name: name.into(),
        description: String::new(),
        kind: RoomKind::Public,
        member_count: 0,
        created_at: "2023-10-01T12:00:00.000Z".into(),
        created_by: "system".into(),
    };
    assert_eq!(
        rooms,
        [
            expected("general", "General Chat"),
            expected("random", "Random")
        ]
    );
}

#[test]
fn create_room_generates_an_id_and_joins_the_creator() {
    let mut t = TestHub::new(small_limits());
    t.advance(1_234);
    let a = t.user("alice");
    let a2 = t.user("alice");
    t.call(
        a,
        "CREATE_ROOM",
        json!({"name": "Book Club", "description": "Books"}),
        "c1",
    );
    let f = t.one(a);
    assert_eq!(f.request_id.as_deref(), Some("c1"));
    let ServerMessage::RoomCreated { room, epoch } = f.message else {
        panic!("{f:?}")
    };
    assert!(room.id.starts_with("room_"), "{}", room.id);
    assert!(!epoch.is_empty());
    assert_eq!(
        room,
        RoomInfo {
            id: room.id.clone(),
            name: "Book Club".into(),
            description: "Books".into(),
            kind: RoomKind::Public,
            member_count: 1,
            created_at: "2023-10-01T12:00:01.234Z".into(),
            created_by: "alice".into(),
        }
    );
    // Joined at once, without a ROOM_JOINED: it can send there.
    let m = t.say(a, &room.id, "first");
    assert_eq!(m.seq, 1);
    // The creator's other connection has not joined.
    t.silent(a2);
    // A second room gets another id.
    t.call(a, "CREATE_ROOM", json!({"name": "Other"}), "c2");
    let ServerMessage::RoomCreated { room: second, .. } = t.one(a).message else {
        panic!()
    };
    assert!(second.id.starts_with("room_") && second.id != room.id);
    // Others see the creator present.
    let b = t.user("bob");
    let joined = t.join(b, &room.id);
    assert_eq!(user_ids(&joined.users), ["alice", "bob"]);
    assert_eq!(joined.room.member_count, 2);
    assert_eq!(joined.epoch, epoch);
    assert_eq!(seqs(&joined.messages), [1]);
    assert_eq!(broadcasts(t.frames(a)), [user_joined(&room.id, "bob")]);
}

#[test]
fn create_room_with_a_given_id_and_room_exists() {
    let mut t = TestHub::new(small_limits());
    let a = t.user("alice");
    let b = t.user("bob");
    t.call(
        a,
        "CREATE_ROOM",
        json!({"name": "Lobby", "id": "lobby", "type": "public"}),
        "c1",
    );
    let ServerMessage::RoomCreated { room, .. } = t.one(a).message else {
        panic!()
    };
    assert_eq!(room.id, "lobby");
    for (id, rid) in [("lobby", "c2"), ("general", "c3")] {
        t.call(b, "CREATE_ROOM", json!({"name": "Again", "id": id}), rid);
        t.error(b, ErrorCode::RoomExists, Some(rid));
    }
    // Nothing changed: the lobby is still alice's, with alice alone in it.
    let joined = t.join(b, "lobby");
    assert_eq!(joined.room.name, "Lobby");
    assert_eq!(joined.room.created_by, "alice");
    assert_eq!(user_ids(&joined.users), ["alice", "bob"]);
}

#[test]
fn private_rooms_are_forbidden_without_access() {
    let mut t = TestHub::new(small_limits());
    let a = t.user("alice");
    t.call(
        a,
        "CREATE_ROOM",
        json!({"name": "Secret", "id": "secret", "type": "private"}),
        "c",
    );
    let ServerMessage::RoomCreated { room, .. } = t.one(a).message else {
        panic!()
    };
    assert_eq!(room.kind, RoomKind::Private);
    let b = t.user("bob");
    t.call(b, "JOIN_ROOM", json!({"roomId": "secret"}), "j");
    t.error(b, ErrorCode::Forbidden, Some("j"));
    t.silent(a);
    // Private or not, history is for members only.
    t.call(b, "GET_HISTORY", json!({"roomId": "secret"}), "h");
    t.error(b, ErrorCode::NotAMember, Some("h"));
    // The `rooms` claim grants access.
    let c = t.connect();
    let mut tok = token("carol");
    tok.rooms = vec!["secret".into()];
    t.auth_with(c, Ok(tok), None, None);
    t.one(c);
    let joined = t.join(c, "secret");
    assert_eq!(user_ids(&joined.users), ["alice", "carol"]);
    // The creator may always join, from any connection.
    let a2 = t.user("alice");
    t.join(a2, "secret");
}

#[test]
fn rooms_per_user_max_is_forbidden() {
    let limits = Limits {
        rooms_per_user_max: 2,
        ..small_limits()
    };
    let mut t = TestHub::new(limits);
    let a = t.user("alice");
    for i in 0..2 {
        t.call(
            a,
            "CREATE_ROOM",
            json!({"name": "R", "id": format!("r{i}")}),
            "c",
        );
        assert!(matches!(
            t.one(a).message,
            ServerMessage::RoomCreated { .. }
        ));
    }
    t.call(a, "CREATE_ROOM", json!({"name": "R", "id": "r2"}), "c3");
    t.error(a, ErrorCode::Forbidden, Some("c3"));
    // Per user, across connections; others are not limited by it.
    let a2 = t.user("alice");
    t.call(a2, "CREATE_ROOM", json!({"name": "R"}), "c4");
    t.error(a2, ErrorCode::Forbidden, Some("c4"));
    let b = t.user("bob");
    t.call(b, "CREATE_ROOM", json!({"name": "R", "id": "r2"}), "c5");
    assert!(matches!(
        t.one(b).message,
        ServerMessage::RoomCreated { .. }
    ));
    let ids: Vec<String> = t.list(b).into_iter().map(|r| r.id).collect();
    assert_eq!(ids, ["general", "r0", "r1", "r2"]);
}

#[test]
fn list_rooms_shows_public_and_accessible_private_rooms_only() {
    let mut t = TestHub::new(small_limits());
    let a = t.user("alice");
    let b = t.user("bob");
    t.call(
        a,
        "CREATE_ROOM",
        json!({"name": "A", "id": "a-private", "type": "private"}),
        "c",
    );
    t.one(a);
    t.call(
        b,
        "CREATE_ROOM",
        json!({"name": "B", "id": "b-public"}),
        "c",
    );
    t.one(b);
    t.call(
        b,
        "CREATE_ROOM",
        json!({"name": "B", "id": "b-private", "type": "private"}),
        "c",
    );
    t.one(b);
    let c = t.connect();
    let mut tok = token("carol");
    tok.rooms = vec!["a-private".into(), "no-such-room".into()];
    t.auth_with(c, Ok(tok), None, None);
    t.one(c);
    let d = t.user("dave");
    let ids = |rooms: Vec<RoomInfo>| rooms.into_iter().map(|r| r.id).collect::<Vec<_>>();
    assert_eq!(ids(t.list(a)), ["a-private", "b-public", "general"]);
    assert_eq!(ids(t.list(b)), ["b-private", "b-public", "general"]);
    assert_eq!(ids(t.list(c)), ["a-private", "b-public", "general"]);
    assert_eq!(ids(t.list(d)), ["b-public", "general"]);
}

#[test]
fn join_room_not_found() {
    let mut t = TestHub::new(small_limits());
    let a = t.user("alice");
    t.call(a, "JOIN_ROOM", json!({"roomId": "nowhere"}), "j");
    t.error(a, ErrorCode::RoomNotFound, Some("j"));
    t.call(
        a,
        "SEND_MESSAGE",
        json!({"roomId": "nowhere", "content": "x"}),
        "s",
    );
    t.error(a, ErrorCode::RoomNotFound, Some("s"));
}

#[test]
fn joining_again_is_idempotent() {
    let mut t = TestHub::new(small_limits());
    let b = t.user("bob");
    t.join(b, "general");
    let a = t.user("alice");
    let first = t.join(a, "general");
    assert_eq!(broadcasts(t.frames(b)), [user_joined("general", "alice")]);
    let second = t.join(a, "general");
    t.silent(b);
    assert_eq!(user_ids(&second.users), user_ids(&first.users));
    assert_eq!(second.room.member_count, 2);
    // Still joined once: one copy of each message.
    t.say(b, "general", "hello");
    let got = t.frames(a);
    assert_eq!(got.len(), 1, "{got:?}");
}

#[test]
fn users_and_member_count_count_distinct_users() {
    let mut t = TestHub::new(small_limits());
    let a1 = t.user("alice");
    let a2 = t.user("alice");
    t.join(a1, "general");
    let joined = t.join(a2, "general");
    assert_eq!(
        joined.users,
        [UserRef {
            user_id: "alice".into(),
            username: "alice".into()
        }]
    );
    assert_eq!(joined.room.member_count, 1);
    let b = t.user("bob");
    let joined = t.join(b, "general");
    assert_eq!(user_ids(&joined.users), ["alice", "bob"]);
    assert_eq!(joined.room.member_count, 2);
    assert_eq!(t.list(b)[0].member_count, 2);
}

#[test]
fn recovered_is_absent_without_since_seq() {
    let mut t = TestHub::new(small_limits());
    let a = t.user("alice");
    t.call(a, "JOIN_ROOM", json!({"roomId": "general"}), "j");
    let v = t.one_value(a);
    assert_eq!(v["type"], "ROOM_JOINED");
    assert_eq!(v["requestId"], "j");
    let payload = v["payload"].as_object().expect("object");
    assert!(!payload.contains_key("recovered"), "{v}");
    for key in ["room", "epoch", "messages", "users"] {
        assert!(payload.contains_key(key), "{key} missing: {v}");
    }
    // With sinceSeq it is there.
    t.call(
        a,
        "JOIN_ROOM",
        json!({"roomId": "general", "sinceSeq": 0}),
        "j2",
    );
    assert_eq!(t.one_value(a)["payload"]["recovered"], json!(true));
}

#[test]
fn user_joined_goes_to_others_on_a_users_first_connection_only() {
    let mut t = TestHub::new(small_limits());
    let b = t.user("bob");
    t.join(b, "general");
    let a1 = t.user("alice");
    let a2 = t.user("alice");
    t.join(a1, "general");
    assert_eq!(broadcasts(t.frames(b)), [user_joined("general", "alice")]);
    t.silent(a2);
    t.join(a2, "general");
    t.silent(b);
    t.silent(a1);
}

#[test]
fn user_left_goes_to_others_on_a_users_last_leave() {
    let mut t = TestHub::new(small_limits());
    let b = t.user("bob");
    t.join(b, "general");
    let a1 = t.user("alice");
    let a2 = t.user("alice");
    t.join(a1, "general");
    t.join(a2, "general");
    t.frames(b);
    t.frames(a1);
    t.call(a1, "LEAVE_ROOM", json!({"roomId": "general"}), "l1");
    assert_eq!(
        t.one_value(a1),
        json!({"type": "ROOM_LEFT", "payload": {"roomId": "general"}, "requestId": "l1"})
    );
    t.silent(b);
    t.silent(a2);
    // a1 gets no more of the room's messages; a2 still does.
    t.say(b, "general", "one");
    t.silent(a1);
    assert_eq!(t.frames(a2).len(), 1);
    t.call(a2, "LEAVE_ROOM", json!({"roomId": "general"}), "l2");
    t.one(a2);
    assert_eq!(broadcasts(t.frames(b)), [user_left("general", "alice")]);
    t.silent(a1);
}

#[test]
fn user_left_goes_to_others_on_a_users_last_disconnect() {
    let mut t = TestHub::new(small_limits());
    let b = t.user("bob");
    t.join(b, "general");
    let a1 = t.user("alice");
    let a2 = t.user("alice");
    t.join(a1, "general");
    t.join(a2, "general");
    t.frames(b);
    t.disconnect(a1);
    t.silent(b);
    t.silent(a2);
    t.disconnect(a2);
    assert_eq!(broadcasts(t.frames(b)), [user_left("general", "alice")]);
    let joined = t.join(b, "general");
    assert_eq!(user_ids(&joined.users), ["bob"]);
}

#[test]
fn leave_room_requires_membership() {
    let mut t = TestHub::new(small_limits());
    let a = t.user("alice");
    t.call(a, "LEAVE_ROOM", json!({"roomId": "general"}), "l");
    t.error(a, ErrorCode::NotAMember, Some("l"));
    t.call(a, "LEAVE_ROOM", json!({"roomId": "nowhere"}), "l2");
    t.error(a, ErrorCode::RoomNotFound, Some("l2"));
    t.join(a, "general");
    t.call(a, "LEAVE_ROOM", json!({"roomId": "general"}), "l3");
    t.one(a);
    t.call(a, "LEAVE_ROOM", json!({"roomId": "general"}), "l4");
    t.error(a, ErrorCode::NotAMember, Some("l4"));
}

// ----- messages ---------------------------------------------------------------------

#[test]
fn send_message_reaches_every_member_connection_and_only_them() {
    let mut t = TestHub::new(small_limits());
    let a1 = t.user("alice");
    let a2 = t.user("alice");
    let a3 = t.user("alice"); // not joined
    let b = t.user("bob");
    let c = t.user("carol"); // not joined
    for conn in [a1, a2, b] {
        t.join(conn, "general");
    }
    t.frames(a1);
    t.frames(a2);
    t.advance(42);
    t.call(
        a1,
        "SEND_MESSAGE",
        json!({"roomId": "general", "content": "Hello, world!", "type": "text"}),
        "m1",
    );
    let ack = t.one_value(a1);
    assert_eq!(ack["requestId"], "m1");
    assert_eq!(ack["type"], "NEW_MESSAGE");
    let p = &ack["payload"];
    assert!(p["id"].as_str().is_some_and(|id| !id.is_empty()), "{ack}");
    assert_eq!(
        *p,
        json!({"id": p["id"], "seq": 1, "roomId": "general", "userId": "alice",
               "username": "alice", "content": "Hello, world!", "type": "text",
               "timestamp": "2023-10-01T12:00:00.042Z"})
    );
    let mut copy = ack.clone();
    copy.as_object_mut().expect("object").remove("requestId");
    for other in [a2, b] {
        assert_eq!(t.one_value(other), copy, "same message, no requestId");
    }
    t.silent(a3);
    t.silent(c);
    // Emotes keep their type.
    t.call(
        b,
        "SEND_MESSAGE",
        json!({"roomId": "general", "content": "waves", "type": "emote"}),
        "m2",
    );
    let m = new_message(t.one(b));
    assert_eq!((m.kind, m.seq), (MessageKind::Emote, 2));
    for other in [a1, a2] {
        assert_eq!(new_message(t.one(other)), m);
    }
}

#[test]
fn seq_counts_per_room_and_ids_are_unique() {
    let mut t = TestHub::with(small_limits(), &[("general", "G"), ("random", "R")], 1);
    let a = t.user("alice");
    t.join(a, "general");
    t.join(a, "random");
    let mut ids = BTreeSet::new();
    let mut general = Vec::new();
    let mut random = Vec::new();
    for i in 0..4 {
        let m = t.say(a, "general", &format!("g{i}"));
        general.push(m.seq);
        assert!(ids.insert(m.id));
        let m = t.say(a, "random", &format!("r{i}"));
        random.push(m.seq);
        assert!(ids.insert(m.id));
    }
    assert_eq!(general, [1, 2, 3, 4]);
    assert_eq!(random, [1, 2, 3, 4]);
}

#[test]
fn send_message_requires_membership() {
    let mut t = TestHub::new(small_limits());
    let a = t.user("alice");
    let b = t.user("bob");
    t.join(b, "general");
    t.call(
        a,
        "SEND_MESSAGE",
        json!({"roomId": "general", "content": "x"}),
        "s",
    );
    t.error(a, ErrorCode::NotAMember, Some("s"));
    t.silent(b);
    // Nothing stored.
    assert_eq!(t.say(b, "general", "first").seq, 1);
}

#[test]
fn client_message_id_retry_returns_the_original_to_the_sender_only() {
    let mut t = TestHub::with(small_limits(), &[("general", "G"), ("random", "R")], 1);
    let b = t.user("bob");
    t.join(b, "general");
    let a1 = t.user("alice");
    t.join(a1, "general");
    t.frames(b);
    let send =
        |cmid: &str, room: &str| json!({"roomId": room, "content": "hi", "clientMessageId": cmid});
    t.call(a1, "SEND_MESSAGE", send("c-1", "general"), "m1");
    let ack = t.one_value(a1);
    assert_eq!(ack["payload"]["clientMessageId"], "c-1");
    let original = new_message(ServerFrame::decode(ack.to_string().as_bytes()).expect("decodes"));
    assert_eq!(new_message(t.one(b)), original);
    // The ack was lost with the connection; the client resends on a new one.
    t.disconnect(a1);
    t.frames(b);
    t.advance(100);
    let a2 = t.user("alice");
    t.join(a2, "general");
    t.frames(b);
    t.call(a2, "SEND_MESSAGE", send("c-1", "general"), "m2");
    let f = t.one(a2);
    assert_eq!(f.request_id.as_deref(), Some("m2"));
    assert_eq!(new_message(f), original, "the original, timestamp and all");
    t.silent(b);
    // Nothing was stored.
    let joined = t.join(b, "general");
    assert_eq!(seqs(&joined.messages), [1]);
    assert_eq!(t.say(b, "general", "next").seq, 2);
    t.frames(a2);
    // The key is per user and per room.
    t.call(b, "SEND_MESSAGE", send("c-1", "general"), "m3");
    assert_eq!(new_message(t.one(b)).seq, 3);
    assert_eq!(new_message(t.one(a2)).seq, 3);
    t.join(a2, "random");
    t.call(a2, "SEND_MESSAGE", send("c-1", "random"), "m4");
    let m = new_message(t.one(a2));
    assert_eq!((m.room_id.as_str(), m.seq), ("random", 1));
}

#[test]
fn client_message_id_retry_after_eviction_creates_a_new_message() {
    let limits = Limits {
        history_limit: 2,
        ..small_limits()
    };
    let mut t = TestHub::new(limits);
    let a = t.user("alice");
    let b = t.user("bob");
    t.join(a, "general");
    t.join(b, "general");
    t.frames(a);
    let send = json!({"roomId": "general", "content": "hi", "clientMessageId": "c-1"});
    t.call(a, "SEND_MESSAGE", send.clone(), "m1");
    let first = new_message(t.one(a));
    t.say(a, "general", "two");
    // Still retained: a retry.
    t.call(a, "SEND_MESSAGE", send.clone(), "m2");
    assert_eq!(new_message(t.one(a)), first);
    t.say(a, "general", "three"); // evicts seq 1
    t.frames(b);
    t.call(a, "SEND_MESSAGE", send, "m3");
    let again = new_message(t.one(a));
    assert_eq!(again.seq, 4);
    assert_ne!(again.id, first.id);
    assert_eq!(again.client_message_id.as_deref(), Some("c-1"));
    assert_eq!(new_message(t.one(b)), again);
}

#[test]
fn history_is_bounded_oldest_evicted_and_seq_never_reused() {
    let mut t = TestHub::new(small_limits()); // history 5
    let a = t.user("alice");
    t.join(a, "general");
    for i in 1..=7 {
        assert_eq!(t.say(a, "general", &format!("m{i}")).seq, i);
    }
    let b = t.user("bob");
    let joined = t.join(b, "general");
    assert_eq!(seqs(&joined.messages), [3, 4, 5, 6, 7]);
    assert_eq!(
        joined
            .messages
            .iter()
            .map(|m| m.content.as_str())
            .collect::<Vec<_>>(),
        ["m3", "m4", "m5", "m6", "m7"]
    );
    assert_eq!(
        t.history(b, "general", json!({})),
        (vec![3, 4, 5, 6, 7], false)
    );
    t.frames(a);
    assert_eq!(t.say(a, "general", "m8").seq, 8);
    t.frames(b);
    assert_eq!(t.history(b, "general", json!({})).0, [4, 5, 6, 7, 8]);
}

// ----- recovery -------------------------------------------------------------------

fn room_with_messages(t: &mut TestHub, n: u64) -> (ConnId, String) {
    let a = t.user("alice");
    let epoch = t.join(a, "general").epoch;
    for i in 1..=n {
        t.say(a, "general", &format!("m{i}"));
    }
    (a, epoch)
}

#[test]
fn recovery_within_history_returns_only_newer_messages() {
    let mut t = TestHub::new(small_limits());
    let (_, epoch) = room_with_messages(&mut t, 7); // retained 3..=7
    let b = t.user("bob");
    for (since, expected) in [(2u64, vec![3, 4, 5, 6, 7]), (5, vec![6, 7]), (7, vec![])] {
        for with_epoch in [true, false] {
            let mut payload = json!({"roomId": "general", "sinceSeq": since});
            if with_epoch {
                payload["epoch"] = json!(epoch);
            }
            t.call(b, "JOIN_ROOM", payload, "r");
            let joined = t.joined(b, "r");
            assert_eq!(joined.recovered, Some(true), "since {since}");
            assert_eq!(seqs(&joined.messages), expected, "since {since}");
            assert_eq!(joined.epoch, epoch);
        }
    }
}

#[test]
fn recovery_after_eviction_is_not_recovered_and_returns_all_retained() {
    let mut t = TestHub::new(small_limits());
    let (_, epoch) = room_with_messages(&mut t, 7); // 1 and 2 evicted
    let b = t.user("bob");
    for since in [0u64, 1] {
        t.call(
            b,
            "JOIN_ROOM",
            json!({"roomId": "general", "sinceSeq": since, "epoch": epoch}),
            "r",
        );
        let joined = t.joined(b, "r");
        assert_eq!(joined.recovered, Some(false), "since {since}");
        assert_eq!(seqs(&joined.messages), [3, 4, 5, 6, 7]);
    }
}

#[test]
fn recovery_from_another_epoch_is_not_recovered() {
    let mut t = TestHub::new(small_limits());
    let (_, epoch) = room_with_messages(&mut t, 3);
    let b = t.user("bob");
    let stale = format!("{epoch}-old");
    t.call(
        b,
        "JOIN_ROOM",
        json!({"roomId": "general", "sinceSeq": 2, "epoch": stale}),
        "r",
    );
    let joined = t.joined(b, "r");
    assert_eq!(joined.recovered, Some(false));
    assert_eq!(seqs(&joined.messages), [1, 2, 3]);
    assert_eq!(joined.epoch, epoch);
}

#[test]
fn recovery_beyond_the_last_seq_is_not_recovered() {
    let mut t = TestHub::new(small_limits());
    let (_, epoch) = room_with_messages(&mut t, 3);
    let b = t.user("bob");
    t.call(
        b,
        "JOIN_ROOM",
        json!({"roomId": "general", "sinceSeq": 4, "epoch": epoch}),
        "r",
    );
    let joined = t.joined(b, "r");
    assert_eq!(joined.recovered, Some(false));
    assert_eq!(seqs(&joined.messages), [1, 2, 3]);
}

#[test]
fn negative_since_seq_is_invalid_message() {
    let mut t = TestHub::new(small_limits());
    let a = t.user("alice");
    t.call(
        a,
        "JOIN_ROOM",
        json!({"roomId": "general", "sinceSeq": -1}),
        "r",
    );
    t.error(a, ErrorCode::InvalidMessage, Some("r"));
    t.call(
        a,
        "GET_HISTORY",
        json!({"roomId": "general", "beforeSeq": -1}),
        "h",
    );
    t.error(a, ErrorCode::InvalidMessage, Some("h"));
    // Nothing joined.
    t.call(a, "GET_HISTORY", json!({"roomId": "general"}), "h2");
    t.error(a, ErrorCode::NotAMember, Some("h2"));
}

#[test]
fn restart_changes_the_epoch_so_recovery_is_not_recovered() {
    let mut before = TestHub::with(small_limits(), &[("general", "General Chat")], 1);
    let a = before.user("alice");
    let old_epoch = before.join(a, "general").epoch;
    let old_first = before.say(a, "general", "one");
    before.say(a, "general", "two");
    before.say(a, "general", "three");

    let mut after = TestHub::with(small_limits(), &[("general", "General Chat")], 2);
    let a = after.user("alice");
    after.call(
        a,
        "JOIN_ROOM",
        json!({"roomId": "general", "sinceSeq": 3, "epoch": old_epoch}),
        "r",
    );
    let joined = after.joined(a, "r");
    assert_ne!(joined.epoch, old_epoch);
    assert_eq!(joined.recovered, Some(false));
    assert!(joined.messages.is_empty());
    // Message ids stay unique across the restart.
    let new_first = after.say(a, "general", "one again");
    assert_eq!(new_first.seq, 1);
    assert_ne!(new_first.id, old_first.id);
    // A client that reconnects with the new epoch recovers.
    after.call(
        a,
        "JOIN_ROOM",
        json!({"roomId": "general", "sinceSeq": 0, "epoch": joined.epoch}),
        "r2",
    );
    let again = after.joined(a, "r2");
    assert_eq!(again.recovered, Some(true));
    assert_eq!(seqs(&again.messages), [1]);
}

// ----- history ----------------------------------------------------------------------

#[test]
fn get_history_pages_backwards() {
    let limits = Limits {
        history_limit: 10,
        ..small_limits()
    };
    let mut t = TestHub::new(limits);
    let (a, _) = room_with_messages(&mut t, 7);
    assert_eq!(
        t.history(a, "general", json!({})),
        ((1..=7).collect(), false)
    );
    assert_eq!(
        t.history(a, "general", json!({"limit": 3})),
        (vec![5, 6, 7], true)
    );
    assert_eq!(
        t.history(a, "general", json!({"beforeSeq": 5, "limit": 3})),
        (vec![2, 3, 4], true)
    );
    assert_eq!(
        t.history(a, "general", json!({"beforeSeq": 2, "limit": 3})),
        (vec![1], false)
    );
    assert_eq!(
        t.history(a, "general", json!({"beforeSeq": 4, "limit": 3})),
        (vec![1, 2, 3], false)
    );
    assert_eq!(
        t.history(a, "general", json!({"beforeSeq": 1})),
        (vec![], false)
    );
    assert_eq!(
        t.history(a, "general", json!({"beforeSeq": 100, "limit": 1})),
        (vec![7], true)
    );
    // Out-of-range limits are INVALID_MESSAGE.
    for limit in [0, 101] {
        t.call(
            a,
            "GET_HISTORY",
            json!({"roomId": "general", "limit": limit}),
            "bad",
        );
        t.error(a, ErrorCode::InvalidMessage, Some("bad"));
    }
}

#[test]
fn get_history_has_more_counts_retained_messages_only() {
    let mut t = TestHub::new(small_limits()); // history 5
    let (a, _) = room_with_messages(&mut t, 9); // retained 5..=9
    assert_eq!(
        t.history(a, "general", json!({"beforeSeq": 7, "limit": 2})),
        (vec![5, 6], false)
    );
    assert_eq!(
        t.history(a, "general", json!({"beforeSeq": 5})),
        (vec![], false)
    );
}

#[test]
fn get_history_requires_membership() {
    let mut t = TestHub::new(small_limits());
    room_with_messages(&mut t, 2);
    let b = t.user("bob");
    t.call(b, "GET_HISTORY", json!({"roomId": "general"}), "h");
    t.error(b, ErrorCode::NotAMember, Some("h"));
    t.call(b, "GET_HISTORY", json!({"roomId": "nowhere"}), "h2");
    t.error(b, ErrorCode::RoomNotFound, Some("h2"));
}

// ----- typing -------------------------------------------------------------------------

/// alice on two joined connections, bob and carol on one each.
fn typing_room(t: &mut TestHub) -> (ConnId, ConnId, ConnId, ConnId) {
    let a1 = t.user("alice");
    let a2 = t.user("alice");
    let b = t.user("bob");
    let c = t.user("carol");
    for conn in [a1, a2, b, c] {
        t.join(conn, "general");
    }
    for conn in [a1, a2, b, c] {
        t.frames(conn);
    }
    (a1, a2, b, c)
}

#[test]
fn typing_goes_to_other_users_never_to_the_typist() {
    let mut t = TestHub::new(small_limits());
    let (a1, a2, b, c) = typing_room(&mut t);
    let outsider = t.user("dave");
    t.typing(a1, "general", true);
    t.silent(a1);
    t.silent(a2);
    t.silent(outsider);
    for other in [b, c] {
        assert_eq!(
            broadcasts(t.frames(other)),
            [typing_update("general", "alice", true)]
        );
    }
    // Stopping from the other connection of the same user.
    t.typing(a2, "general", false);
    t.silent(a1);
    t.silent(a2);
    for other in [b, c] {
        assert_eq!(
            broadcasts(t.frames(other)),
            [typing_update("general", "alice", false)]
        );
    }
}

#[test]
fn repeated_typing_true_is_not_rebroadcast_but_extends_the_timeout() {
    let mut t = TestHub::new(small_limits()); // typing 1000 ms
    let (a1, _, b, _) = typing_room(&mut t);
    t.typing(a1, "general", true);
    t.frames(b);
    t.advance(600);
    t.typing(a1, "general", true);
    t.silent(b);
    t.advance(999);
    t.silent(b);
    t.advance(1);
    assert_eq!(
        broadcasts(t.frames(b)),
        [typing_update("general", "alice", false)]
    );
}

#[test]
fn typing_false_while_not_typing_is_silent() {
    let mut t = TestHub::new(small_limits());
    let (a1, a2, b, c) = typing_room(&mut t);
    t.typing(a1, "general", false);
    for conn in [a1, a2, b, c] {
        t.silent(conn);
    }
    // Twice false after true: only one broadcast.
    t.typing(a1, "general", true);
    t.typing(a1, "general", false);
    t.typing(a1, "general", false);
    assert_eq!(
        broadcasts(t.frames(b)),
        [
            typing_update("general", "alice", true),
            typing_update("general", "alice", false)
        ]
    );
}

#[test]
fn typing_times_out_at_exactly_the_timeout() {
    let mut t = TestHub::new(small_limits()); // typing 1000 ms
    let (a1, a2, b, c) = typing_room(&mut t);
    t.typing(a1, "general", true);
    t.frames(b);
    t.frames(c);
    t.advance(999);
    t.silent(b);
    t.advance(1);
    for other in [b, c] {
        assert_eq!(
            broadcasts(t.frames(other)),
            [typing_update("general", "alice", false)]
        );
    }
    t.silent(a1);
    t.silent(a2);
    // Typing again is news again.
    t.typing(a1, "general", true);
    assert_eq!(
        broadcasts(t.frames(b)),
        [typing_update("general", "alice", true)]
    );
}

#[test]
fn sending_a_message_ends_typing() {
    let mut t = TestHub::new(small_limits());
    let (a1, a2, b, _) = typing_room(&mut t);
    t.typing(a1, "general", true);
    t.frames(b);
    let sent = t.say(a2, "general", "done typing");
    let got = broadcasts(t.frames(b));
    assert_eq!(got.len(), 2, "{got:?}");
    assert!(
        got.contains(&ServerMessage::NewMessage(sent.clone())),
        "{got:?}"
    );
    assert!(
        got.contains(&typing_update("general", "alice", false)),
        "{got:?}"
    );
    assert_eq!(broadcasts(t.frames(a1)), [ServerMessage::NewMessage(sent)]);
    // And the timeout does not fire later.
    t.advance(5_000);
    t.silent(b);
}

#[test]
fn leaving_ends_typing() {
    let mut t = TestHub::new(small_limits());
    let (a1, a2, b, _) = typing_room(&mut t);
    t.disconnect(a2);
    t.typing(a1, "general", true);
    t.frames(b);
    t.call(a1, "LEAVE_ROOM", json!({"roomId": "general"}), "l");
    t.one(a1);
    assert_eq!(
        broadcasts(t.frames(b)),
        [
            typing_update("general", "alice", false),
            user_left("general", "alice")
        ]
    );
    t.advance(5_000);
    t.silent(b);
}

#[test]
fn disconnecting_ends_typing() {
    let mut t = TestHub::new(small_limits());
    let (a1, a2, b, _) = typing_room(&mut t);
    t.disconnect(a2);
    t.typing(a1, "general", true);
    t.frames(b);
    t.disconnect(a1);
    assert_eq!(
        broadcasts(t.frames(b)),
        [
            typing_update("general", "alice", false),
            user_left("general", "alice")
        ]
    );
    t.advance(5_000);
    t.silent(b);
}

#[test]
fn typing_requires_membership() {
    let mut t = TestHub::new(small_limits());
    let (_, _, b, _) = typing_room(&mut t);
    let d = t.user("dave");
    t.typing(d, "general", true);
    t.error(d, ErrorCode::NotAMember, Some("typing"));
    t.silent(b);
}

// ----- rate limits ----------------------------------------------------------------------

#[test]
fn the_21st_send_within_the_window_is_rejected_without_effect() {
    let mut t = TestHub::new(Limits::default());
    let a = t.user("alice");
    let b = t.user("bob");
    t.join(a, "general");
    t.join(b, "general");
    t.frames(a);
    for i in 1..=20 {
        assert_eq!(t.say(a, "general", &format!("m{i}")).seq, i);
    }
    assert_eq!(t.frames(b).len(), 20);
    t.typing(a, "general", true);
    t.frames(b);
    t.call(
        a,
        "SEND_MESSAGE",
        json!({"roomId": "general", "content": "21"}),
        "m21",
    );
    let v = t.one_value(a);
    assert_eq!(
        v,
        json!({"type": "ERROR",
               "payload": {"code": "RATE_LIMIT_EXCEEDED", "message": v["payload"]["message"], "retryAfterMs": 500},
               "requestId": "m21"})
    );
    // No effect: nothing broadcast, nothing stored, typing not ended.
    t.silent(b);
    assert_eq!(t.history(a, "general", json!({"limit": 1})).0, [20]);
    // Another user's bucket is its own.
    assert_eq!(t.say(b, "general", "mine").seq, 21);
}

#[test]
fn the_send_bucket_is_shared_across_a_users_connections() {
    let mut t = TestHub::new(Limits::default());
    let a1 = t.user("alice");
    let a2 = t.user("alice");
    t.join(a1, "general");
    t.join(a2, "general");
    t.frames(a1);
    for i in 0..10 {
        t.say(a1, "general", &format!("x{i}"));
        t.frames(a2);
        t.say(a2, "general", &format!("y{i}"));
        t.frames(a1);
    }
    t.call(
        a1,
        "SEND_MESSAGE",
        json!({"roomId": "general", "content": "no"}),
        "n",
    );
    assert_eq!(retry_after(&t.one(a1), Some("n")), 500);
    t.call(
        a2,
        "SEND_MESSAGE",
        json!({"roomId": "general", "content": "no"}),
        "n",
    );
    assert_eq!(retry_after(&t.one(a2), Some("n")), 500);
    // A new connection does not bring a new bucket.
    let a3 = t.user("alice");
    t.join(a3, "general");
    t.call(
        a3,
        "SEND_MESSAGE",
        json!({"roomId": "general", "content": "no"}),
        "n",
    );
    assert_eq!(retry_after(&t.one(a3), Some("n")), 500);
}

#[test]
fn the_send_bucket_refills_evenly() {
    let mut t = TestHub::new(Limits::default()); // 20 per 10 s: one per 500 ms
    let a = t.user("alice");
    t.join(a, "general");
    for i in 0..20 {
        t.say(a, "general", &format!("m{i}"));
    }
    let attempt = |t: &mut TestHub| -> Result<u64, u64> {
        t.call(
            a,
            "SEND_MESSAGE",
            json!({"roomId": "general", "content": "x"}),
            "s",
        );
        let f = t.one(a);
        match &f.message {
            ServerMessage::NewMessage(m) => Ok(m.seq),
            _ => Err(retry_after(&f, Some("s"))),
        }
    };
    assert_eq!(attempt(&mut t), Err(500));
    t.advance(499);
    assert_eq!(attempt(&mut t), Err(1));
    t.advance(1);
    assert_eq!(attempt(&mut t), Ok(21));
    assert_eq!(attempt(&mut t), Err(500));
    t.advance(1_000);
    assert_eq!(attempt(&mut t), Ok(22));
    assert_eq!(attempt(&mut t), Ok(23));
    assert_eq!(attempt(&mut t), Err(500));
    // Idle for longer than the window: full again, but never above capacity.
    t.advance(60_000);
    for seq in 24..44 {
        assert_eq!(attempt(&mut t), Ok(seq));
    }
    assert_eq!(attempt(&mut t), Err(500));
}

#[test]
fn reconnecting_does_not_reset_the_send_bucket() {
    let mut t = TestHub::new(Limits::default());
    let a = t.user("alice");
    t.join(a, "general");
    for i in 0..20 {
        t.say(a, "general", &format!("m{i}"));
    }
    t.disconnect(a);
    t.advance(100);
    let a = t.user("alice");
    t.join(a, "general");
    t.call(
        a,
        "SEND_MESSAGE",
        json!({"roomId": "general", "content": "x"}),
        "s",
    );
    assert_eq!(retry_after(&t.one(a), Some("s")), 400);
}

#[test]
fn a_stale_forget_timer_does_not_reset_the_send_bucket() {
    // 5 sends per 2000 ms: one token per 400 ms.
    let limits = Limits {
        rate_limit_messages: 5,
        rate_limit_window_ms: 2_000,
        ..small_limits()
    };
    let mut t = TestHub::new(limits);
    let accepted = |t: &mut TestHub, conn: ConnId| -> usize {
        let mut n = 0;
        loop {
            t.call(
                conn,
                "SEND_MESSAGE",
                json!({"roomId": "general", "content": "x"}),
                "s",
            );
            let f = t.one(conn);
            if matches!(f.message, ServerMessage::NewMessage(_)) {
                n += 1;
            } else {
                retry_after(&f, Some("s"));
                return n;
            }
        }
    };
    let a = t.user("alice");
    t.join(a, "general");
    assert_eq!(accepted(&mut t, a), 5);
    // Empty bucket at T0: full again at T0 + 2000 if nothing is taken.
    t.disconnect(a);
    t.advance(1_999);
    let a = t.user("alice");
    t.join(a, "general");
    assert_eq!(accepted(&mut t, a), 4);
    t.disconnect(a);
    // 1 ms later the bucket holds 2000 of its 10000 units: one token.
    t.advance(1);
    let a = t.user("alice");
    t.join(a, "general");
    assert_eq!(
        accepted(&mut t, a),
        1,
        "per user, a bucket must not refill faster than capacity per window"
    );
}

#[test]
fn other_requests_are_limited_per_connection() {
    let mut t = TestHub::new(Limits::default()); // 100 per 10 s
    let a1 = t.user("alice"); // AUTHENTICATE is the first request
    let a2 = t.user("alice");
    for _ in 0..99 {
        t.ping_ok(a1);
    }
    t.call(a1, "PING", json!({}), "p101");
    assert_eq!(retry_after(&t.one(a1), Some("p101")), 100);
    // The user's other connection has its own bucket.
    t.ping_ok(a2);
    // A rejected request has no effect.
    let b = t.user("bob");
    t.join(b, "general");
    t.call(a1, "JOIN_ROOM", json!({"roomId": "general"}), "j");
    retry_after(&t.one(a1), Some("j"));
    t.silent(b);
    t.advance(100);
    t.ping_ok(a1);
}

#[test]
fn malformed_and_unauthenticated_messages_charge_the_connection_bucket() {
    let limits = Limits {
        rate_limit_requests: 3,
        rate_limit_window_ms: 3_000,
        ..small_limits()
    };
    let mut t = TestHub::new(limits);
    let a = t.connect();
    t.text(a, "garbage");
    t.error(a, ErrorCode::InvalidMessage, None);
    t.binary(a);
    t.error(a, ErrorCode::InvalidMessage, None);
    t.call(
        a,
        "SEND_MESSAGE",
        json!({"roomId": "general", "content": "x"}),
        "s",
    );
    t.error(a, ErrorCode::Unauthorized, Some("s"));
    t.call(a, "AUTHENTICATE", json!({"token": "alice"}), "a");
    assert_eq!(retry_after(&t.one(a), Some("a")), 1_000);
    t.text(a, "garbage");
    assert_eq!(retry_after(&t.one(a), None), 1_000);
    // The rejected AUTHENTICATE had no effect (and was no failed attempt).
    t.advance(1_000);
    t.call(a, "PING", json!({}), "p");
    t.error(a, ErrorCode::Unauthorized, Some("p"));
    t.advance(1_000);
    t.auth(a, "alice");
}

#[test]
fn authenticated_sends_charge_the_user_bucket_only() {
    let limits = Limits {
        rate_limit_requests: 3,
        rate_limit_window_ms: 3_000,
        ..Limits::default()
    };
    let mut t = TestHub::new(limits);
    let a = t.user("alice"); // 1
    t.join(a, "general"); // 2
    for i in 0..10 {
        t.say(a, "general", &format!("m{i}"));
    }
    t.ping_ok(a); // 3
    t.call(a, "PING", json!({}), "p");
    retry_after(&t.one(a), Some("p"));
    // A malformed SEND_MESSAGE is charged to the connection: rejected.
    t.call(a, "SEND_MESSAGE", json!({"roomId": "general"}), "bad");
    retry_after(&t.one(a), Some("bad"));
    // A well-formed one still goes through.
    assert_eq!(t.say(a, "general", "ok").seq, 11);
}

#[test]
fn persistent_rate_limit_abuse_closes_the_connection() {
    let limits = Limits {
        rate_limit_requests: 3,
        rate_limit_disconnect_after: 3,
        ..small_limits()
    };
    let mut t = TestHub::new(limits);
    let a = t.user("alice");
    let b = t.user("bob");
    t.join(a, "general");
    t.join(b, "general");
    t.frames(a);
    t.ping_ok(a);
    for rid in ["r1", "r2"] {
        t.call(a, "PING", json!({}), rid);
        retry_after(&t.one(a), Some(rid));
    }
    assert_eq!(t.closed(a), None);
    t.call(a, "PING", json!({}), "r3");
    retry_after(&frame_then_close_1008(&mut t, a), Some("r3"));
    assert_eq!(broadcasts(t.frames(b)), [user_left("general", "alice")]);
    // Another connection of the same user is not affected.
    let a2 = t.user("alice");
    t.ping_ok(a2);
}

#[test]
fn rejected_sends_count_towards_the_row_too() {
    let limits = Limits {
        rate_limit_messages: 1,
        rate_limit_disconnect_after: 2,
        ..small_limits()
    };
    let mut t = TestHub::new(limits);
    let a = t.user("alice");
    t.join(a, "general");
    t.say(a, "general", "one");
    t.call(
        a,
        "SEND_MESSAGE",
        json!({"roomId": "general", "content": "x"}),
        "s1",
    );
    retry_after(&t.one(a), Some("s1"));
    assert_eq!(t.closed(a), None);
    t.call(
        a,
        "SEND_MESSAGE",
        json!({"roomId": "general", "content": "x"}),
        "s2",
    );
    assert_eq!(t.frames(a).len(), 1);
    assert_eq!(t.closed(a), Some(1008));
}

#[test]
fn an_accepted_request_ends_the_row() {
    let limits = Limits {
        rate_limit_requests: 3,
        rate_limit_window_ms: 3_000, // one request per 1000 ms
        rate_limit_disconnect_after: 3,
        ..small_limits()
    };
    let mut t = TestHub::new(limits);
    let a = t.user("alice"); // 1
    t.join(a, "general"); // 2
    t.ping_ok(a); // 3
    let reject = |t: &mut TestHub| {
        t.call(a, "PING", json!({}), "r");
        retry_after(&t.one(a), Some("r"));
    };
    reject(&mut t);
    reject(&mut t);
    t.advance(1_000);
    t.ping_ok(a);
    reject(&mut t);
    reject(&mut t);
    // A send accepted from the user's bucket ends the row as well.
    t.say(a, "general", "accepted");
    reject(&mut t);
    reject(&mut t);
    assert_eq!(t.closed(a), None);
    t.call(a, "PING", json!({}), "r");
    assert_eq!(t.frames(a).len(), 1);
    assert_eq!(t.closed(a), Some(1008));
}

// ----- determinism ----------------------------------------------------------------------

fn script(t: &mut TestHub) {
    let a = t.user("alice");
    let b = t.user("bob");
    let c = t.connect();
    t.join(a, "general");
    t.join(b, "general");
    t.call(a, "CREATE_ROOM", json!({"name": "Side"}), "c");
    t.typing(b, "general", true);
    for i in 0..8 {
        t.call(
            a,
            "SEND_MESSAGE",
            json!({"roomId": "general", "content": format!("m{i}"), "clientMessageId": format!("k{}", i % 3)}),
            &format!("m{i}"),
        );
        t.advance(37);
    }
    t.call(
        b,
        "JOIN_ROOM",
        json!({"roomId": "general", "sinceSeq": 2}),
        "r",
    );
    t.text(c, "nonsense");
    t.advance(20_000);
    t.frames(b);
    t.say(b, "general", "late");
    t.disconnect(a);
}

#[test]
fn the_same_script_gives_identical_outputs() {
    let mut one = TestHub::new(small_limits());
    let mut two = TestHub::new(small_limits());
    script(&mut one);
    script(&mut two);
    assert!(one.log.len() > 20, "the script does something");
    assert!(
        one.log.iter().any(|o| matches!(o, Output::Close { .. })),
        "the script closes the unauthenticated connection"
    );
    assert_eq!(one.log, two.log);
    // And the instance number is part of the outputs (ids, epochs).
    let mut three = TestHub::with(small_limits(), &[("general", "General Chat")], 7);
    script(&mut three);
    assert_eq!(one.log.len(), three.log.len());
    assert_ne!(one.log, three.log);
}

#[test]
fn set_limits_shrinks_history_and_forgets_evicted_retry_keys() {
    let mut t = TestHub::new(small_limits()); // history 5
    let a = t.user("alice");
    t.join(a, "general");
    let send = json!({"roomId": "general", "content": "first", "clientMessageId": "k"});
    t.call(a, "SEND_MESSAGE", send.clone(), "m1");
    let first = new_message(t.one(a));
    for i in 2..=4 {
        t.say(a, "general", &format!("m{i}"));
    }
    let now = Timestamp(t.now);
    t.hub.set_limits(
        now,
        Limits {
            history_limit: 2,
            ..small_limits()
        },
    );
    t.call(a, "GET_HISTORY", json!({"roomId": "general"}), "h");
    let history = t.one(a);
    let ServerMessage::History { messages, .. } = history.message else {
        panic!("expected HISTORY, got {history:?}");
    };
    assert_eq!(seqs(&messages), [3, 4]);
    // The original of "k" was evicted by the new limit: a retry is new.
    t.call(a, "SEND_MESSAGE", send, "m2");
    let again = new_message(t.one(a));
    assert_eq!(again.seq, 5);
    assert_ne!(again.id, first.id);
}
