//! The virtual-clock harness: [`TestHub`] and the helpers every topic uses.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use serde_json::{Value, json};

use crate::auth::{AuthError, VerifiedToken};
use crate::core::{AuthOutcome, ConnId, DefaultRoom, Inbound, Instance, Limits, Output, Timestamp};
use crate::protocol::parse::{ParseLimits, parse_once};
use crate::protocol::server::{ChatMessage, RoomInfo, ServerFrame, ServerMessage, UserRef};
use crate::protocol::{ClientMessage, ClientRequest, ErrorCode};
use crate::store::local::Local;

// ----- the places that know the shape of `crate::auth` -----------------------

/// A token the driver refused (bad signature or the like).
pub(crate) fn refused_token() -> AuthError {
    AuthError::BadSignature
}

/// A verified token for `user`, valid for a long time, without claims.
pub(crate) fn token(user: &str) -> VerifiedToken {
    VerifiedToken {
        user_id: user.to_owned(),
        username: None,
        rooms: Vec::new(),
        expires_at_unix_ms: FAR_FUTURE,
    }
}

/// A long-lived token for `user` whose `rooms` claim lists `rooms`.
pub(crate) fn claiming(user: &str, rooms: &[&str]) -> VerifiedToken {
    VerifiedToken {
        rooms: rooms.iter().map(|r| (*r).to_owned()).collect(),
        ..token(user)
    }
}

// ----- harness ----------------------------------------------------------------

/// 2023-10-01T12:00:00.000Z: when every test hub starts.
pub(crate) const T0: u64 = 1_696_161_600_000;
/// An expiry no test reaches.
pub(crate) const FAR_FUTURE: u64 = T0 + 365 * 24 * 3600 * 1000;

/// Small limits that keep the tests short.
pub(crate) fn small_limits() -> Limits {
    Limits {
        history_limit: 5,
        typing_timeout_ms: 1_000,
        ..Limits::default()
    }
}

/// What a connection received, in order.
#[derive(Debug, Clone, PartialEq)]
#[allow(clippy::large_enum_variant, reason = "short-lived test values")]
pub(crate) enum Ev {
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
pub(crate) struct TestHub {
    pub(crate) hub: Local,
    /// The virtual clock (Unix ms).
    pub(crate) now: u64,
    next_conn: u64,
    inbox: BTreeMap<ConnId, VecDeque<Received>>,
    closed: BTreeMap<ConnId, u16>,
    /// Connections closed by the hub or disconnected by the test.
    pub(crate) gone: BTreeSet<ConnId>,
    /// Every output of the hub, in order.
    pub(crate) log: Vec<Output>,
    /// Outputs since the last [`TestHub::take_step`].
    step: Vec<Output>,
}

impl TestHub {
    /// A hub with the default room `general` ("General Chat"), instance 1.
    pub(crate) fn new(limits: Limits) -> TestHub {
        TestHub::with(limits, &[("general", "General Chat")], 1)
    }

    /// A hub with these default rooms and instance number, started at `T0`.
    pub(crate) fn with(limits: Limits, rooms: &[(&str, &str)], instance: u64) -> TestHub {
        let rooms: Vec<DefaultRoom> = rooms
            .iter()
            .map(|(id, name)| DefaultRoom {
                id: (*id).to_owned(),
                name: (*name).to_owned(),
            })
            .collect();
        TestHub {
            hub: Local::new(
                limits,
                &rooms,
                Instance {
                    number: instance,
                    secret: instance ^ 0x5eed,
                },
                Timestamp(T0),
            ),
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
                Output::Store { .. } | Output::Subscribe { .. } | Output::Unsubscribe { .. } => {
                    unreachable!("Local answers its store itself: {out:?}")
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
    pub(crate) fn take_step(&mut self) -> Vec<Output> {
        self.inbox.clear();
        std::mem::take(&mut self.step)
    }

    /// The outputs since the last [`TestHub::take_step`], left in place.
    pub(crate) fn step_outputs(&self) -> &[Output] {
        &self.step
    }

    /// Opens a new connection.
    pub(crate) fn connect(&mut self) -> ConnId {
        let conn = ConnId(self.next_conn);
        self.next_conn += 1;
        self.hub.connect(Timestamp(self.now), conn);
        self.pump();
        conn
    }

    /// The connection goes away (closed by the peer, or dropped).
    pub(crate) fn disconnect(&mut self, conn: ConnId) {
        self.hub.disconnect(Timestamp(self.now), conn);
        self.gone.insert(conn);
        self.pump();
    }

    /// Hands one inbound message to the hub.
    pub(crate) fn handle(&mut self, conn: ConnId, inbound: Inbound) {
        self.hub.handle(Timestamp(self.now), conn, inbound);
        self.pump();
    }

    /// A typed request, handed over as it is (an `AUTHENTICATE` among them
    /// carries an unverified token).
    pub(crate) fn request(
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
    pub(crate) fn text(&mut self, conn: ConnId, text: &str) {
        let mut bytes = text.as_bytes().to_vec();
        let inbound = match parse_once(&mut bytes, ParseLimits::default()) {
            Ok(m) => Inbound::from_message(m, |sub| Ok(token(sub))),
            Err(e) => Inbound::Invalid(e),
        };
        self.handle(conn, inbound);
    }

    /// A JSON message (a whole envelope).
    pub(crate) fn send(&mut self, conn: ConnId, message: Value) {
        self.text(conn, &message.to_string());
    }

    /// `{"type": kind, "payload": payload, "requestId": rid}`.
    pub(crate) fn call(&mut self, conn: ConnId, kind: &str, payload: Value, rid: &str) {
        self.send(
            conn,
            json!({"type": kind, "payload": payload, "requestId": rid}),
        );
    }

    /// A binary frame.
    pub(crate) fn binary(&mut self, conn: ConnId) {
        self.handle(conn, Inbound::Binary);
    }

    /// `AUTHENTICATE` with a verification outcome.
    pub(crate) fn auth_with(
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
    pub(crate) fn auth(&mut self, conn: ConnId, user: &str) {
        self.auth_with(conn, Ok(token(user)), None, Some("auth"));
        let f = self.one(conn);
        assert_eq!(f.request_id.as_deref(), Some("auth"));
        match f.message {
            ServerMessage::AuthSuccess { user_id, .. } => assert_eq!(user_id, user),
            other => panic!("expected AUTH_SUCCESS, got {other:?}"),
        }
    }

    /// A new authenticated connection of `user`.
    pub(crate) fn user(&mut self, user: &str) -> ConnId {
        let c = self.connect();
        self.auth(c, user);
        c
    }

    /// A new connection of `user` whose token's `rooms` claim lists `rooms`.
    pub(crate) fn user_claiming(&mut self, user: &str, rooms: &[&str]) -> ConnId {
        let c = self.connect();
        self.auth_with(c, Ok(claiming(user, rooms)), None, Some("auth"));
        let f = self.one(c);
        assert!(
            matches!(f.message, ServerMessage::AuthSuccess { .. }),
            "{f:?}"
        );
        c
    }

    /// `CREATE_ROOM` that must succeed; returns the room and its epoch.
    #[track_caller]
    pub(crate) fn create(&mut self, conn: ConnId, payload: Value) -> (RoomInfo, String) {
        self.call(conn, "CREATE_ROOM", payload, "create");
        let f = self.one(conn);
        assert_eq!(f.request_id.as_deref(), Some("create"), "{f:?}");
        match f.message {
            ServerMessage::RoomCreated { room, epoch } => (room, epoch),
            other => panic!("expected ROOM_CREATED, got {other:?}"),
        }
    }

    /// Moves the clock forward, ticking the hub at every deadline passed.
    pub(crate) fn advance(&mut self, ms: u64) {
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
    pub(crate) fn advance_to(&mut self, at: u64) {
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
    pub(crate) fn events(&mut self, conn: ConnId) -> Vec<Ev> {
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
    pub(crate) fn frames(&mut self, conn: ConnId) -> Vec<ServerFrame> {
        self.drain(conn)
            .into_iter()
            .filter_map(|r| match r {
                Received::Frame(_, f) => Some(f),
                Received::Close(_) => None,
            })
            .collect()
    }

    /// The frames `conn` received since the last look, as raw JSON.
    pub(crate) fn values(&mut self, conn: ConnId) -> Vec<Value> {
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
    pub(crate) fn one(&mut self, conn: ConnId) -> ServerFrame {
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
    pub(crate) fn one_value(&mut self, conn: ConnId) -> Value {
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
    pub(crate) fn silent(&mut self, conn: ConnId) {
        let events = self.events(conn);
        assert!(
            events.is_empty(),
            "expected nothing for {conn:?}, got {events:?}"
        );
    }

    /// The close code the hub gave `conn`, if it closed it.
    pub(crate) fn closed(&self, conn: ConnId) -> Option<u16> {
        self.closed.get(&conn).copied()
    }

    /// Asserts that the one frame `conn` received is this `ERROR`; returns
    /// its message.
    #[track_caller]
    pub(crate) fn error(&mut self, conn: ConnId, code: ErrorCode, rid: Option<&str>) -> String {
        let f = self.one(conn);
        assert_error(&f, code, rid)
    }

    /// `JOIN_ROOM` without recovery; the reply must be the only frame.
    #[track_caller]
    pub(crate) fn join(&mut self, conn: ConnId, room: &str) -> Joined {
        self.call(conn, "JOIN_ROOM", json!({"roomId": room}), "join");
        self.joined(conn, "join")
    }

    /// The one frame `conn` received must be `ROOM_JOINED` answering `rid`.
    #[track_caller]
    pub(crate) fn joined(&mut self, conn: ConnId, rid: &str) -> Joined {
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
    pub(crate) fn say(&mut self, conn: ConnId, room: &str, content: &str) -> ChatMessage {
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
    pub(crate) fn list(&mut self, conn: ConnId) -> Vec<RoomInfo> {
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
    pub(crate) fn history(&mut self, conn: ConnId, room: &str, payload: Value) -> (Vec<u64>, bool) {
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
    pub(crate) fn typing(&mut self, conn: ConnId, room: &str, is_typing: bool) {
        self.call(
            conn,
            "TYPING_STATUS",
            json!({"roomId": room, "isTyping": is_typing}),
            "typing",
        );
    }

    /// `PING`; asserts the `PONG`.
    #[track_caller]
    pub(crate) fn ping_ok(&mut self, conn: ConnId) {
        self.call(conn, "PING", json!({}), "ping");
        let f = self.one(conn);
        assert_eq!(f.message, ServerMessage::Pong {});
        assert_eq!(f.request_id.as_deref(), Some("ping"));
    }
}

/// A decoded `ROOM_JOINED`.
#[derive(Debug)]
pub(crate) struct Joined {
    pub(crate) room: RoomInfo,
    pub(crate) epoch: String,
    pub(crate) messages: Vec<ChatMessage>,
    pub(crate) users: Vec<UserRef>,
    pub(crate) recovered: Option<bool>,
}

/// Asserts that `f` is `ERROR code` answering `rid`; returns its message.
#[track_caller]
pub(crate) fn assert_error(f: &ServerFrame, code: ErrorCode, rid: Option<&str>) -> String {
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
pub(crate) fn new_message(f: ServerFrame) -> ChatMessage {
    match f.message {
        ServerMessage::NewMessage(m) => m,
        other => panic!("expected NEW_MESSAGE, got {other:?}"),
    }
}

/// The `retryAfterMs` of a `RATE_LIMIT_EXCEEDED` error.
#[track_caller]
pub(crate) fn retry_after(f: &ServerFrame, rid: Option<&str>) -> u64 {
    assert_error(f, ErrorCode::RateLimitExceeded, rid);
    match &f.message {
        ServerMessage::Error { retry_after_ms, .. } => {
            retry_after_ms.expect("RATE_LIMIT_EXCEEDED carries retryAfterMs")
        }
        _ => unreachable!(),
    }
}

pub(crate) fn seqs(messages: &[ChatMessage]) -> Vec<u64> {
    messages.iter().map(|m| m.seq).collect()
}

pub(crate) fn user_ids(users: &[UserRef]) -> Vec<String> {
    let mut ids: Vec<String> = users.iter().map(|u| u.user_id.clone()).collect();
    ids.sort();
    ids
}

pub(crate) fn typing_update(room: &str, user: &str, is_typing: bool) -> ServerMessage {
    ServerMessage::TypingUpdate {
        room_id: room.to_owned(),
        user_id: user.to_owned(),
        username: user.to_owned(),
        is_typing,
    }
}

pub(crate) fn user_joined(room: &str, user: &str) -> ServerMessage {
    ServerMessage::UserJoined {
        room_id: room.to_owned(),
        user: UserRef {
            user_id: user.to_owned(),
            username: user.to_owned(),
        },
    }
}

pub(crate) fn user_left(room: &str, user: &str) -> ServerMessage {
    ServerMessage::UserLeft {
        room_id: room.to_owned(),
        user_id: user.to_owned(),
        username: user.to_owned(),
    }
}

/// The messages of a list of frames, asserting none carries a `requestId`.
#[track_caller]
pub(crate) fn broadcasts(frames: Vec<ServerFrame>) -> Vec<ServerMessage> {
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

/// What `conn` got since the last look: one frame, then the close 1008,
/// and nothing else. Returns the frame.
pub(crate) fn frame_then_close_1008(t: &mut TestHub, conn: ConnId) -> ServerFrame {
    let mut events = t.events(conn);
    assert_eq!(events.len(), 2, "{events:?}");
    assert_eq!(events[1], Ev::Close(1008));
    match events.swap_remove(0) {
        Ev::Frame(f) => f,
        other => panic!("a frame before the close, got {other:?}"),
    }
}
