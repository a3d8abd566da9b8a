//! The sans-IO core driven directly by a list of operations, checked by the
//! same oracles as the simulation.
//!
//! A [`Program`] (derived [`Arbitrary`], so that a fuzzer can write it) is a
//! setup — small limits, so that eviction, rate limits, typing and token
//! expiry happen within a few operations, rooms deleted after a short idle
//! time — and a list of [`Operation`]s: connect, disconnect, advance time,
//! restart the server (a new instance: every room gets a new epoch), reload
//! the room limits, and requests on a connection, typed with arbitrary
//! fields or as arbitrary text (tokens with `rooms` claims drawn from the
//! program's rooms, so that claims grant, narrow and refuse).
//!
//! Every request carries a `requestId`, as the library client's do: the
//! oracles pair each reply with its request by it (replies to requests
//! without one, which echo nothing, are covered by the core's unit tests
//! and the integration tests). Arbitrary text that parses into a request
//! without one is given one before the core sees it.
//!
//! [`run`] plays it against a node on its own store ([`Local`]) exactly as the production shell does:
//! every request is written as JSON text and goes through the real parser
//! and, for `AUTHENTICATE`, the real token verifier (tokens are minted with
//! the configured secret or a wrong one, with chosen lifetimes); timers fire
//! at their deadlines as time advances. Everything is recorded as the same
//! [`Record`]s the simulation's tap produces, and [`check`] runs every oracle
//! over them. No network, no clock, no randomness: the same program always
//! gives the same records.
//!
//! One file, longer than most: the program's types (what a fuzzer writes)
//! and the driver that plays them change together.

use std::collections::BTreeMap;
use std::sync::Arc;

use arbitrary::Arbitrary;
use chat_flow::auth::{TokenSpec, Verifier, mint_hs256};
use chat_flow::config::{Config, DEV_JWT_SECRET};
use chat_flow::core::{ConnId, Inbound, Instance, Limits, Output, Timestamp};
use chat_flow::protocol::client_encode::encode;
use chat_flow::protocol::parse::ParseLimits;
use chat_flow::protocol::server::{ServerFrame, ServerMessage};
use chat_flow::protocol::{
    Authenticate, ClientMessage, ClientRequest, CreateRoom, GetHistory, JoinRoom, LeaveRoom,
    MessageKind, Parser, RoomKind, SendMessage, TypingStatus,
};
use chat_flow::server::default_rooms;
use chat_flow::store::local::Local;

use crate::obs::{ConnNo, Obs, Record};
use crate::oracles::{Checker, OracleConfig, Out};

/// Unix milliseconds at time 0 of a program.
pub const EPOCH_UNIX_MS: u64 = 1_700_000_000_000;
/// Most connections open at once.
pub const CONNS_MAX: usize = 8;
/// The users a program's tokens are for.
const USERS: [&str; 4] = ["u0", "u1", "u2", "u3"];
/// The rooms a program talks about: the default room, rooms it may create,
/// and one that never exists.
const ROOMS: [&str; 5] = ["general", "r1", "r2", "r3", "missing"];
/// A secret the server does not use.
const WRONG_SECRET: &str = "not-the-configured-secret-0123456789abcdef";
/// Longest raw text passed to the parser.
const RAW_CHARS_MAX: usize = 512;

/// Limits for one program, each mapped into a small range.
#[derive(Arbitrary, Debug, Clone, Default)]
pub struct Setup {
    /// `HISTORY_LIMIT`: 1–12.
    pub history_limit: u8,
    /// `TYPING_TIMEOUT_MS`: 0.1–5 s.
    pub typing_timeout: u8,
    /// `RATE_LIMIT_MESSAGES`: 1–10.
    pub rate_limit_messages: u8,
    /// `RATE_LIMIT_REQUESTS`: 1–40.
    pub rate_limit_requests: u8,
    /// `RATE_LIMIT_WINDOW_MS`: 0.1–5 s.
    pub rate_limit_window: u8,
    /// `RATE_LIMIT_DISCONNECT_AFTER`: 1–8.
    pub disconnect_after: u8,
    /// `AUTH_TIMEOUT_MS`: 0.2–5.1 s.
    pub auth_timeout: u8,
    /// `ROOMS_PER_USER_MAX`: 0–3.
    pub rooms_per_user_max: u8,
    /// `JWT_LEEWAY_SECONDS`: 0–3.
    pub leeway_s: u8,
    /// `MAX_ROOMS`: 1–6.
    pub max_rooms: u8,
    /// `ROOM_IDLE_TTL_MS`: 0 (never) or 0.1–2.4 s.
    pub room_idle_ttl: u8,
}

impl Setup {
    /// The core's limits.
    pub fn limits(&self) -> Limits {
        Limits {
            auth_timeout_ms: 200 + 100 * u64::from(self.auth_timeout % 50),
            auth_failures_max: chat_flow::core::AUTH_FAILURES_MAX,
            history_limit: 1 + usize::from(self.history_limit % 12),
            typing_timeout_ms: 100 + 100 * u64::from(self.typing_timeout % 50),
            rate_limit_messages: 1 + u64::from(self.rate_limit_messages % 10),
            rate_limit_requests: 1 + u64::from(self.rate_limit_requests % 40),
            rate_limit_window_ms: 100 + 100 * u64::from(self.rate_limit_window % 50),
            rate_limit_disconnect_after: 1 + u32::from(self.disconnect_after % 8),
            rooms_per_user_max: u32::from(self.rooms_per_user_max % 4),
            max_rooms: max_rooms(self.max_rooms),
            room_idle_ttl_ms: room_idle_ttl_ms(self.room_idle_ttl),
        }
    }

    fn leeway_s(&self) -> u64 {
        u64::from(self.leeway_s % 4)
    }
}

/// `MAX_ROOMS` from a byte: 1–6 (the default room counts: 1 leaves no room
/// to create).
fn max_rooms(x: u8) -> usize {
    1 + usize::from(x % 6)
}

/// `ROOM_IDLE_TTL_MS` from a byte: 0 (never) one time in 25, else 0.1–2.4 s.
fn room_idle_ttl_ms(x: u8) -> u64 {
    100 * u64::from(x % 25)
}

/// A setup and what happens.
#[derive(Arbitrary, Debug, Clone)]
pub struct Program {
    /// The limits.
    pub setup: Setup,
    /// The operations, in order.
    pub ops: Vec<Operation>,
}

/// One step. `conn` picks among the open connections (modulo their number).
#[derive(Arbitrary, Debug, Clone)]
pub enum Operation {
    /// A new connection (ignored when [`CONNS_MAX`] are open).
    Connect,
    /// The peer drops the connection.
    Disconnect {
        /// Which.
        conn: u8,
    },
    /// Time passes; timers fire at their deadlines.
    Advance {
        /// Milliseconds.
        ms: u16,
    },
    /// The server crashes and restarts: every connection ends, state is
    /// lost, a new instance serves (new epochs).
    Restart,
    /// A well-formed request, written as JSON.
    Request {
        /// Which connection.
        conn: u8,
        /// What.
        request: Request,
    },
    /// Arbitrary text as a text frame.
    Raw {
        /// Which connection.
        conn: u8,
        /// The text.
        text: String,
    },
    /// A binary frame.
    Binary {
        /// Which connection.
        conn: u8,
    },
    /// A configuration reload changing the room limits (`MAX_ROOMS`,
    /// `ROOM_IDLE_TTL_MS`, mapped as in [`Setup`]).
    Reload {
        /// `MAX_ROOMS`.
        max_rooms: u8,
        /// `ROOM_IDLE_TTL_MS`.
        room_idle_ttl: u8,
    },
}

/// A request with fields chosen from small sets (so that they refer to the
/// same users and rooms), plus arbitrary text where the contract allows it.
#[derive(Arbitrary, Debug, Clone)]
pub enum Request {
    /// `AUTHENTICATE` with a freshly minted token.
    Authenticate {
        /// `sub`, from [`USERS`].
        user: u8,
        /// The `rooms` claim: bit `i` grants `ROOMS[i]`.
        rooms: u8,
        /// `iat` this many seconds ago.
        age_s: u8,
        /// Lifetime in seconds (`exp = iat + ttl`).
        ttl_s: u8,
        /// Signed with a secret the server does not know.
        wrong_key: bool,
        /// A `username` in the payload.
        username: Option<u8>,
    },
    /// `CREATE_ROOM`.
    CreateRoom {
        /// `id`, from [`ROOMS`], or none.
        room: Option<u8>,
        /// The name.
        name: String,
        /// Private or public.
        private: bool,
    },
    /// `LIST_ROOMS`.
    ListRooms,
    /// `JOIN_ROOM`.
    JoinRoom {
        /// From [`ROOMS`].
        room: u8,
        /// `sinceSeq`.
        since_seq: Option<u8>,
        /// `epoch`.
        epoch: EpochChoice,
    },
    /// `LEAVE_ROOM`.
    LeaveRoom {
        /// From [`ROOMS`].
        room: u8,
    },
    /// `GET_HISTORY`.
    GetHistory {
        /// From [`ROOMS`].
        room: u8,
        /// `beforeSeq`.
        before_seq: Option<u8>,
        /// `limit` (1–100 after mapping).
        limit: Option<u8>,
    },
    /// `SEND_MESSAGE`.
    SendMessage {
        /// From [`ROOMS`].
        room: u8,
        /// Content.
        content: Content,
        /// `type: emote`.
        emote: bool,
        /// `clientMessageId`, one of a few (so that retries happen).
        client_message_id: Option<u8>,
    },
    /// `TYPING_STATUS`.
    TypingStatus {
        /// From [`ROOMS`].
        room: u8,
        /// `isTyping`.
        is_typing: bool,
    },
    /// `PING`.
    Ping,
}

/// Which `epoch` a `JOIN_ROOM` names.
#[derive(Arbitrary, Debug, Clone)]
pub enum EpochChoice {
    /// None.
    Absent,
    /// The latest epoch of that room any connection was told.
    Latest,
    /// The first epoch of that room any connection was told (an older run's,
    /// after a restart).
    First,
    /// Made up.
    Other(u8),
}

/// A message's content.
#[derive(Arbitrary, Debug, Clone)]
pub enum Content {
    /// `m<n>`: short and valid.
    Word(u8),
    /// Anything (may be empty, blank or too long).
    Text(String),
}

/// Plays `program` against the core; returns the records and the time it
/// ended at (milliseconds since [`EPOCH_UNIX_MS`]).
pub fn run(program: &Program) -> (Vec<Record>, u64) {
    let mut d = Driver::new(&program.setup);
    for op in &program.ops {
        d.step(op);
    }
    // Let every timer that is running fire (typing, auth, token expiry).
    let limits = program.setup.limits();
    let settle = limits.typing_timeout_ms.max(limits.auth_timeout_ms) + 1;
    d.advance(settle);
    let end = d.now_ms - EPOCH_UNIX_MS + 1;
    (d.records, end)
}

/// What the oracles must know about `program`: its setup, and the shortest
/// `ROOM_IDLE_TTL_MS` it ever puts in force (a room is never deleted sooner
/// than that; 0 only when no other was ever in force).
pub fn program_config(program: &Program) -> OracleConfig {
    let mut cfg = oracle_config(&program.setup);
    for op in &program.ops {
        if let Operation::Reload { room_idle_ttl, .. } = op {
            let ttl = room_idle_ttl_ms(*room_idle_ttl);
            cfg.room_idle_ttl_ms = match (cfg.room_idle_ttl_ms, ttl) {
                (0, t) | (t, 0) => t,
                (a, b) => a.min(b),
            };
        }
    }
    cfg
}

/// What the oracles must know about `setup` (with no reloads).
pub fn oracle_config(setup: &Setup) -> OracleConfig {
    let limits = setup.limits();
    OracleConfig {
        history_limit: limits.history_limit,
        typing_timeout_ms: limits.typing_timeout_ms,
        rate_limit_messages: limits.rate_limit_messages,
        rate_limit_window_ms: limits.rate_limit_window_ms,
        rate_limit_requests: limits.rate_limit_requests,
        jwt_leeway_seconds: setup.leeway_s(),
        auth_timeout_ms: limits.auth_timeout_ms,
        // The core has no pings; nothing checks this without a roster.
        ping_interval_ms: u64::MAX / 8,
        epoch_unix_ms: EPOCH_UNIX_MS,
        // Outputs are observed the instant the core makes them.
        delivery_slack_ms: 0,
        notice_delay_ms: 0,
        room_idle_ttl_ms: limits.room_idle_ttl_ms,
        max_content_chars: chat_flow::config::DEFAULT_MAX_CONTENT_LENGTH,
        timestamp_slack_ms: 0,
    }
}

/// Plays `program` and runs every oracle over what happened.
pub fn check(program: &Program) -> Out {
    let (records, end) = run(program);
    check_records(program, &records, end)
}

/// Runs every oracle over `records` of `program` (no liveness phase: nobody
/// is expected to converge).
pub fn check_records(program: &Program, records: &[Record], end: u64) -> Out {
    let mut checker = Checker::new(program_config(program), Vec::new());
    for r in records {
        checker.observe(r);
    }
    checker.finish(end)
}

/// The hub's instance number `n`, with a secret derived from it (a program
/// replays exactly; nothing here needs the ids to be unguessable).
fn instance(n: u64) -> Instance {
    Instance {
        number: n,
        secret: crate::rng::mix(n, 0x1d5),
    }
}

struct Driver {
    limits: Limits,
    config: Config,
    verifier: Verifier,
    parser: Parser,
    hub: Local,
    instance: u64,
    runs: u32,
    now_ms: u64,
    next_conn: ConnNo,
    /// Open connections, oldest first.
    open: Vec<ConnNo>,
    next_request: u64,
    /// Epochs each room was announced with, in order.
    epochs: BTreeMap<String, Vec<String>>,
    records: Vec<Record>,
}

impl Driver {
    fn new(setup: &Setup) -> Driver {
        let limits = setup.limits();
        let config = Config {
            jwt_leeway_seconds: setup.leeway_s(),
            ..Config::default()
        };
        let verifier = Verifier::from_config(&config).expect("the default configuration verifies");
        let now_ms = EPOCH_UNIX_MS;
        let hub = Local::new(
            limits.clone(),
            &default_rooms(&config),
            instance(1),
            Timestamp(now_ms),
        );
        let mut d = Driver {
            limits,
            config,
            verifier,
            parser: Parser::new(ParseLimits::default()),
            hub,
            instance: 1,
            runs: 0,
            now_ms,
            next_conn: 0,
            open: Vec::new(),
            next_request: 0,
            epochs: BTreeMap::new(),
            records: Vec::new(),
        };
        d.record(Obs::ServerStart {
            run: 0,
            instance: 1,
        });
        d
    }

    fn record(&mut self, obs: Obs) {
        self.records.push(Record {
            at_ms: self.now_ms - EPOCH_UNIX_MS,
            obs,
        });
    }

    fn pick(&self, conn: u8) -> Option<ConnNo> {
        (!self.open.is_empty()).then(|| self.open[usize::from(conn) % self.open.len()])
    }

    fn step(&mut self, op: &Operation) {
        match op {
            Operation::Connect => {
                if self.open.len() >= CONNS_MAX {
                    return;
                }
                let conn = self.next_conn;
                self.next_conn += 1;
                self.record(Obs::Dial {
                    conn,
                    client: conn as u32,
                });
                self.record(Obs::Open { conn });
                self.open.push(conn);
                self.hub.connect(Timestamp(self.now_ms), ConnId(conn));
                self.drain();
            }
            Operation::Disconnect { conn } => {
                let Some(conn) = self.pick(*conn) else { return };
                self.open.retain(|c| *c != conn);
                self.record(Obs::Ended {
                    conn,
                    how: "dropped",
                });
                self.hub.disconnect(Timestamp(self.now_ms), ConnId(conn));
                self.drain();
            }
            Operation::Advance { ms } => self.advance(u64::from(*ms)),
            Operation::Restart => self.restart(),
            Operation::Request { conn, request } => {
                let Some(conn) = self.pick(*conn) else { return };
                let message = ClientMessage {
                    request_id: Some(self.request_id()),
                    request: self.request(request),
                };
                let text = encode(&message, false).to_string();
                self.send_text(conn, text);
            }
            Operation::Raw { conn, text } => {
                let Some(conn) = self.pick(*conn) else { return };
                let text: String = text.chars().take(RAW_CHARS_MAX).collect();
                self.send_text(conn, text);
            }
            Operation::Binary { conn } => {
                let Some(conn) = self.pick(*conn) else { return };
                // What the server read of it: a message without a requestId.
                self.record(Obs::Sent {
                    conn,
                    text: Arc::from(r#"{"type":"(binary)"}"#),
                });
                self.hub
                    .handle(Timestamp(self.now_ms), ConnId(conn), Inbound::Binary);
                self.drain();
            }
            Operation::Reload {
                max_rooms: rooms,
                room_idle_ttl,
            } => {
                self.limits.max_rooms = max_rooms(*rooms);
                self.limits.room_idle_ttl_ms = room_idle_ttl_ms(*room_idle_ttl);
                self.hub
                    .set_limits(Timestamp(self.now_ms), self.limits.clone());
                self.drain();
            }
        }
    }

    /// A text frame from `conn`: recorded, parsed, verified and handled as
    /// the production shell does.
    fn send_text(&mut self, conn: ConnNo, text: String) {
        let mut bytes = text.into_bytes();
        let inbound = match self.parser.parse(&mut bytes) {
            Err(e) => {
                // What the server read of it: the `requestId` its error will
                // echo, if any (a JSON reader of the raw text could read
                // another, e.g. from duplicate keys or with no `type`).
                let understood = serde_json::json!({
                    "type": "(invalid)",
                    "requestId": e.request_id,
                });
                self.record(Obs::Sent {
                    conn,
                    text: Arc::from(understood.to_string()),
                });
                Inbound::Invalid(e)
            }
            Ok(mut message) => {
                // Every request carries a requestId (see the module's doc).
                if message.request_id.is_none() {
                    message.request_id = Some(self.request_id());
                }
                // What the server understood, in the contract's own spelling
                // (raw text may spell it in ways the oracles' JSON reader
                // would read differently, e.g. duplicate keys).
                let canonical = encode(&message, false).to_string();
                self.record(Obs::Sent {
                    conn,
                    text: Arc::from(canonical),
                });
                let now = self.now_ms;
                let verifier = &self.verifier;
                Inbound::from_message(message, |token| verifier.verify(token, now))
            }
        };
        self.hub
            .handle(Timestamp(self.now_ms), ConnId(conn), inbound);
        self.drain();
    }

    /// A fresh `requestId`.
    fn request_id(&mut self) -> String {
        self.next_request += 1;
        format!("r{}", self.next_request)
    }

    fn request(&mut self, r: &Request) -> ClientRequest {
        let room = |i: &u8| ROOMS[usize::from(*i) % ROOMS.len()].to_owned();
        match r {
            Request::Authenticate {
                user,
                rooms,
                age_s,
                ttl_s,
                wrong_key,
                username,
            } => {
                let sub = USERS[usize::from(*user) % USERS.len()];
                let now_s = self.now_ms / 1000;
                let claim: Vec<String> = ROOMS
                    .iter()
                    .enumerate()
                    .filter(|(i, _)| rooms & (1 << i) != 0)
                    .map(|(_, r)| (*r).to_owned())
                    .collect();
                let spec = TokenSpec {
                    rooms: &claim,
                    ..TokenSpec::new(
                        sub,
                        now_s.saturating_sub(u64::from(*age_s)),
                        u64::from(*ttl_s),
                    )
                };
                let secret = if *wrong_key {
                    WRONG_SECRET
                } else {
                    DEV_JWT_SECRET
                };
                let token = mint_hs256(secret.as_bytes(), &spec).expect("valid claims");
                ClientRequest::Authenticate(Authenticate {
                    token,
                    username: username.map(|n| format!("name{n}")),
                })
            }
            Request::CreateRoom {
                room: id,
                name,
                private,
            } => ClientRequest::CreateRoom(CreateRoom {
                name: name.clone(),
                description: String::new(),
                kind: if *private {
                    RoomKind::Private
                } else {
                    RoomKind::Public
                },
                id: id.as_ref().map(room),
            }),
            Request::ListRooms => ClientRequest::ListRooms,
            Request::JoinRoom {
                room: r,
                since_seq,
                epoch,
            } => {
                let room_id = room(r);
                let known = self.epochs.get(&room_id);
                let epoch = match epoch {
                    EpochChoice::Absent => None,
                    EpochChoice::Latest => known.and_then(|e| e.last().cloned()),
                    EpochChoice::First => known.and_then(|e| e.first().cloned()),
                    EpochChoice::Other(n) => Some(format!("e{n}")),
                };
                ClientRequest::JoinRoom(JoinRoom {
                    room_id,
                    since_seq: since_seq.map(u64::from),
                    epoch,
                })
            }
            Request::LeaveRoom { room: r } => {
                ClientRequest::LeaveRoom(LeaveRoom { room_id: room(r) })
            }
            Request::GetHistory {
                room: r,
                before_seq,
                limit,
            } => ClientRequest::GetHistory(GetHistory {
                room_id: room(r),
                before_seq: before_seq.map(u64::from),
                limit: limit.map_or(50, |l| 1 + u32::from(l % 100)),
            }),
            Request::SendMessage {
                room: r,
                content,
                emote,
                client_message_id,
            } => ClientRequest::SendMessage(SendMessage {
                room_id: room(r),
                content: match content {
                    Content::Word(n) => format!("m{n}"),
                    Content::Text(t) => t.clone(),
                },
                kind: if *emote {
                    MessageKind::Emote
                } else {
                    MessageKind::Text
                },
                client_message_id: client_message_id.map(|n| format!("c{}", n % 8)),
            }),
            Request::TypingStatus { room: r, is_typing } => {
                ClientRequest::TypingStatus(TypingStatus {
                    room_id: room(r),
                    is_typing: *is_typing,
                })
            }
            Request::Ping => ClientRequest::Ping,
        }
    }

    /// Moves time forward by `ms`, firing every timer at its deadline.
    fn advance(&mut self, ms: u64) {
        let target = self.now_ms + ms;
        while let Some(at) = self.hub.next_deadline() {
            if at.0 > target {
                break;
            }
            self.now_ms = self.now_ms.max(at.0);
            self.hub.tick(Timestamp(self.now_ms));
            self.drain();
        }
        self.now_ms = target;
        self.hub.tick(Timestamp(self.now_ms));
        self.drain();
    }

    fn restart(&mut self) {
        for conn in std::mem::take(&mut self.open) {
            self.record(Obs::Ended { conn, how: "eof" });
        }
        self.instance += 1;
        self.runs += 1;
        self.hub = Local::new(
            self.limits.clone(),
            &default_rooms(&self.config),
            instance(self.instance),
            Timestamp(self.now_ms),
        );
        self.record(Obs::ServerStart {
            run: self.runs,
            instance: self.instance,
        });
    }

    /// Records every output of the core, as its recipient sees it.
    fn drain(&mut self) {
        while let Some(output) = self.hub.poll_output() {
            match output {
                // `Local` answers these itself.
                Output::Store { .. } | Output::Subscribe { .. } | Output::Unsubscribe { .. } => {}
                Output::Frame { conn, frame, .. } => {
                    let text = String::from_utf8(frame.to_vec()).expect("the core writes UTF-8");
                    self.learn_epoch(&text);
                    self.record(Obs::Recv {
                        conn: conn.0,
                        text: Arc::from(text),
                    });
                }
                Output::Close { conn, code, .. } => {
                    self.record(Obs::CloseRecv {
                        conn: conn.0,
                        code: Some(code.code()),
                    });
                    self.record(Obs::Ended {
                        conn: conn.0,
                        how: "eof",
                    });
                    self.open.retain(|c| *c != conn.0);
                }
            }
        }
    }

    /// Remembers the epochs rooms are announced with (for `JOIN_ROOM`s that
    /// resume).
    fn learn_epoch(&mut self, text: &str) {
        let Ok(frame) = ServerFrame::decode(text.as_bytes()) else {
            return;
        };
        let (room, epoch) = match &frame.message {
            ServerMessage::RoomJoined { room, epoch, .. }
            | ServerMessage::RoomCreated { room, epoch } => (room.id.clone(), epoch.clone()),
            _ => return,
        };
        let known = self.epochs.entry(room.to_string()).or_default();
        if !known.contains(&epoch) {
            known.push(epoch);
        }
    }
}
