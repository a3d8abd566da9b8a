//! A Rust client for Chat Flow that survives disconnects.
//!
//! It connects, authenticates, joins rooms and sends messages; and when the
//! connection drops, for any reason, it reconnects with exponential backoff
//! and full jitter, authenticates again (asking its [`TokenSource`] for a
//! fresh token), resumes every room with `sinceSeq` + `epoch` so that it
//! receives exactly what it missed, and resends every message the server has
//! not acknowledged — with the same `clientMessageId`, so a resend never
//! creates a duplicate.
//!
//! ```no_run
//! use chat_flow::client::{self, ClientOptions, Event, TcpConnector};
//!
//! # async fn demo(token: String) {
//! let connector = TcpConnector("127.0.0.1:3001".parse().unwrap());
//! let options = ClientOptions::new("127.0.0.1:3001");
//! let (handle, mut events, _task) = client::spawn(connector, move || token.clone(), options);
//! handle.join("general").await;
//! handle.send("general", "Hello, world!").await;
//! while let Some(event) = events.recv().await {
//!     if let Event::Message(m) = event {
//!         println!("#{} {}: {}", m.seq, m.username, m.content);
//!     }
//! }
//! # }
//! ```
//!
//! Messages reach the application exactly once per room and in `seq` order:
//! the client drops anything at or below the last `seq` it delivered, and
//! reports [`Event::Gap`] when the server says recovery was incomplete
//! (`recovered: false`: history was evicted, or the server restarted).
//!
//! Everything random — the WebSocket key, frame masks, backoff jitter, the
//! `clientMessageId` prefix — comes from one seeded [`Rng`]
//! ([`ClientOptions::seed`]), so that a simulation replays exactly.

use std::collections::{BTreeMap, VecDeque};
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use fastwebsockets::{Frame, OpCode, Payload, WebSocket, WebSocketError};
use http_body_util::Empty;
use hyper_util::rt::TokioIo;
use serde_json::json;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::protocol::server::{ChatMessage, ServerFrame, ServerMessage, UserRef};
use crate::protocol::{ErrorCode, MessageKind};
use crate::rng::Rng;

/// Opens byte streams to the server: TCP, or a simulated network.
pub trait Connector: Send + 'static {
    /// The stream.
    type Io: AsyncRead + AsyncWrite + Unpin + Send + 'static;
    /// Opens one connection.
    fn connect(&mut self) -> impl Future<Output = io::Result<Self::Io>> + Send;
}

/// Connects over TCP.
#[derive(Debug, Clone, Copy)]
pub struct TcpConnector(pub SocketAddr);

impl Connector for TcpConnector {
    type Io = tokio::net::TcpStream;

    async fn connect(&mut self) -> io::Result<Self::Io> {
        let stream = tokio::net::TcpStream::connect(self.0).await?;
        stream.set_nodelay(true)?;
        Ok(stream)
    }
}

/// Gives the client a token each time it (re)authenticates.
pub trait TokenSource: Send + 'static {
    /// A currently valid token.
    fn token(&mut self) -> String;
}

impl<F: FnMut() -> String + Send + 'static> TokenSource for F {
    fn token(&mut self) -> String {
        self()
    }
}

/// How the client behaves.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// The `Host` header (`host:port`).
    pub host: String,
    /// The WebSocket path.
    pub path: String,
    /// Sent with `AUTHENTICATE` (the token's own `username` claim wins).
    pub username: Option<String>,
    /// An `Origin` header, if the server checks it.
    pub origin: Option<String>,
    /// First reconnect delay bound; doubled each failed attempt.
    pub backoff_base_ms: u64,
    /// Largest reconnect delay bound.
    pub backoff_max_ms: u64,
    /// Reconnect when nothing (not even a ping) arrived for this long.
    pub idle_timeout_ms: u64,
    /// Seeds every random choice of the client.
    pub seed: u64,
    /// Most unacknowledged messages kept for resending.
    pub pending_max: usize,
}

impl ClientOptions {
    /// Defaults for a server at `host` (`host:port`), seeded from the clock.
    pub fn new(host: impl Into<String>) -> ClientOptions {
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64)
            ^ u64::from(std::process::id()).rotate_left(32);
        ClientOptions {
            host: host.into(),
            path: "/ws".to_owned(),
            username: None,
            origin: None,
            backoff_base_ms: 100,
            backoff_max_ms: 10_000,
            idle_timeout_ms: 75_000,
            seed,
            pending_max: 1024,
        }
    }
}

/// What the client tells the application.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A connection (attempt number `attempt`, from 0) is open.
    Connected {
        /// Attempts since the last successful authentication.
        attempt: u32,
    },
    /// The server accepted the token.
    Authenticated {
        /// The user id.
        user_id: String,
        /// The name the connection goes by.
        username: String,
    },
    /// A room was joined (or re-joined after a reconnect).
    Joined {
        /// The room.
        room: String,
        /// Its epoch.
        epoch: String,
        /// Whether recovery was complete (absent on a first join).
        recovered: Option<bool>,
        /// Users present.
        users: Vec<UserRef>,
    },
    /// The server could not give back everything missed in `room`.
    Gap {
        /// The room.
        room: String,
    },
    /// A new message in a joined room, exactly once, in `seq` order.
    Message(ChatMessage),
    /// One of our messages is stored (its `NEW_MESSAGE` came back).
    Acked {
        /// The message's retry key.
        client_message_id: String,
        /// The room.
        room: String,
        /// Its `seq`.
        seq: u64,
    },
    /// A message could not be sent and will not be retried.
    SendFailed {
        /// The message's retry key.
        client_message_id: String,
        /// The server's reason.
        code: ErrorCode,
    },
    /// Any other server message (presence, typing, history, errors…).
    Server(ServerFrame),
    /// The connection ended; the client will reconnect unless stopped.
    Disconnected {
        /// The server's close code, when it sent one.
        code: Option<u16>,
    },
    /// The client stopped (closed by the application).
    Stopped,
}

/// What the application asks of the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// Join a room and stay joined across reconnects.
    Join(String),
    /// Leave a room.
    Leave(String),
    /// Send a message (resent until acknowledged).
    Send {
        /// The room.
        room: String,
        /// The text.
        content: String,
        /// `text` or `emote`.
        kind: MessageKind,
        /// The retry key; the client picks one when `None`.
        client_message_id: Option<String>,
    },
    /// Typing indicator (not queued while disconnected).
    Typing {
        /// The room.
        room: String,
        /// Typing or not.
        is_typing: bool,
    },
    /// `GET_HISTORY` (the reply arrives as [`Event::Server`]).
    History {
        /// The room.
        room: String,
        /// Only messages before this `seq`.
        before_seq: Option<u64>,
        /// Page size.
        limit: Option<u32>,
    },
    /// Authenticate again on the open connection with a fresh token.
    RefreshToken,
    /// Drop the current connection (the client reconnects): for tests and
    /// the simulation.
    Drop,
    /// Close and stop.
    Close,
}

/// Sends commands to a running client.
#[derive(Debug, Clone)]
pub struct ClientHandle {
    tx: mpsc::Sender<Command>,
}

impl ClientHandle {
    /// Queues a command; false when the client has stopped.
    pub async fn command(&self, command: Command) -> bool {
        self.tx.send(command).await.is_ok()
    }

    /// Joins `room`.
    pub async fn join(&self, room: &str) -> bool {
        self.command(Command::Join(room.to_owned())).await
    }

    /// Sends a text message to `room`.
    pub async fn send(&self, room: &str, content: &str) -> bool {
        self.command(Command::Send {
            room: room.to_owned(),
            content: content.to_owned(),
            kind: MessageKind::Text,
            client_message_id: None,
        })
        .await
    }

    /// Closes the client.
    pub async fn close(&self) -> bool {
        self.command(Command::Close).await
    }
}

/// Starts a client on the current runtime.
pub fn spawn<C: Connector, T: TokenSource>(
    connector: C,
    tokens: T,
    options: ClientOptions,
) -> (
    ClientHandle,
    mpsc::Receiver<Event>,
    tokio::task::JoinHandle<()>,
) {
    let (cmd_tx, cmd_rx) = mpsc::channel(1024);
    let (ev_tx, ev_rx) = mpsc::channel(4096);
    let task = tokio::spawn(run(connector, tokens, options, cmd_rx, ev_tx));
    (ClientHandle { tx: cmd_tx }, ev_rx, task)
}

/// Full-jitter backoff: a uniform delay in `[0, min(max, base·2^attempt)]`.
pub fn backoff_delay_ms(rng: &mut Rng, attempt: u32, base_ms: u64, max_ms: u64) -> u64 {
    let bound = base_ms.saturating_mul(1u64 << attempt.min(30)).min(max_ms);
    rng.below_or_eq(bound)
}

// ----- session state (no I/O) -------------------------------------------------

/// Where the client is in a room's sequence.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Cursor {
    epoch: Option<String>,
    /// Highest `seq` delivered in `epoch`.
    last_seq: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct PendingSend {
    room: String,
    content: String,
    kind: MessageKind,
    client_message_id: String,
    /// Not before this instant (after a rate-limit rejection).
    not_before: Option<Instant>,
    /// Written on this connection and not answered yet.
    in_flight: bool,
}

/// Most sends unanswered at once (fewer than any sensible
/// `RATE_LIMIT_DISCONNECT_AFTER`).
const SEND_WINDOW: usize = 4;

/// What the client remembers across connections.
#[derive(Debug)]
struct Session {
    rooms: BTreeMap<String, Cursor>,
    pending: VecDeque<PendingSend>,
    id_prefix: String,
    next_id: u64,
    pending_max: usize,
    /// A send was rate-limited and none accepted since: one at
    /// a time.
    careful: bool,
}

impl Session {
    fn new(rng: &mut Rng, pending_max: usize) -> Session {
        Session {
            rooms: BTreeMap::new(),
            pending: VecDeque::new(),
            id_prefix: format!("{:08x}", rng.next_u64() as u32),
            next_id: 0,
            pending_max,
            careful: false,
        }
    }

    fn new_client_message_id(&mut self) -> String {
        self.next_id += 1;
        format!("{}-{}", self.id_prefix, self.next_id)
    }

    /// Requests that resume the session on a fresh, authenticated connection.
    fn resume_requests(&mut self, now: Instant) -> Vec<String> {
        let mut out = Vec::new();
        for (room, cursor) in &self.rooms {
            out.push(join_request(room, cursor));
        }
        // Nothing is in flight on a new connection; sends go
        // out through the window, each once.
        for p in &mut self.pending {
            p.in_flight = false;
        }
        out.extend(self.sendable(now));
        out
    }

    /// The sends that may go now: due, not in flight, within
    /// the window (one at a time while `careful`).
    fn sendable(&mut self, now: Instant) -> Vec<String> {
        let window = if self.careful { 1 } else { SEND_WINDOW };
        let mut in_flight = self.pending.iter().filter(|p| p.in_flight).count();
        let mut out = Vec::new();
        for p in &mut self.pending {
            if in_flight >= window {
                break;
            }
            if !p.in_flight && p.not_before.is_none_or(|t| t <= now) {
                p.in_flight = true;
                p.not_before = None;
                out.push(send_request(p));
                in_flight += 1;
            }
        }
        out
    }

    /// When a waiting send becomes due (never while the
    /// window is full: a reply frees it, and a timer in the past would
    /// spin the loop).
    fn next_due(&self) -> Option<Instant> {
        let window = if self.careful { 1 } else { SEND_WINDOW };
        if self.pending.iter().filter(|p| p.in_flight).count() >= window {
            return None;
        }
        self.pending
            .iter()
            .filter(|p| !p.in_flight)
            .filter_map(|p| p.not_before)
            .min()
    }

    /// Applies a server frame; returns the events for the application.
    fn on_frame(&mut self, frame: ServerFrame, events: &mut Vec<Event>, now: Instant) {
        let request_id = frame.request_id.clone();
        match frame.message {
            ServerMessage::RoomJoined {
                room,
                epoch,
                messages,
                users,
                recovered,
            } => {
                let room_id = room.id.clone();
                let Some(cursor) = self.rooms.get_mut(&room_id) else {
                    return;
                };
                if cursor.epoch.as_deref() != Some(epoch.as_str()) {
                    // A new sequence: nothing of it was delivered yet.
                    cursor.epoch = Some(epoch.clone());
                    cursor.last_seq = None;
                }
                events.push(Event::Joined {
                    room: room_id.clone(),
                    epoch,
                    recovered,
                    users,
                });
                if recovered == Some(false) {
                    events.push(Event::Gap {
                        room: room_id.clone(),
                    });
                }
                for m in messages {
                    self.deliver(m, events);
                }
            }
            ServerMessage::NewMessage(m) => self.deliver(m, events),
            message => {
                if let ServerMessage::Error {
                    code,
                    retry_after_ms,
                    ..
                } = &message
                {
                    self.on_error(request_id.as_deref(), *code, *retry_after_ms, events, now);
                }
                events.push(Event::Server(ServerFrame {
                    message,
                    request_id,
                }));
            }
        }
    }

    /// A request failed: a rate-limited send waits and goes again; any
    /// other failed send is given up; a room that cannot be joined is
    /// forgotten.
    fn on_error(
        &mut self,
        request_id: Option<&str>,
        code: ErrorCode,
        retry_after_ms: Option<u64>,
        events: &mut Vec<Event>,
        now: Instant,
    ) {
        if let Some(cmid) = request_id.and_then(|r| r.strip_prefix("s:")) {
            let Some(i) = self
                .pending
                .iter()
                .position(|p| p.client_message_id == cmid)
            else {
                return;
            };
            if code == ErrorCode::RateLimitExceeded {
                let wait = Duration::from_millis(retry_after_ms.unwrap_or(100));
                self.pending[i].not_before = Some(now + wait);
                self.pending[i].in_flight = false;
                self.careful = true;
            } else {
                let p = self.pending.remove(i).expect("index from position");
                events.push(Event::SendFailed {
                    client_message_id: p.client_message_id,
                    code,
                });
            }
        } else if let Some(room) = request_id.and_then(|r| r.strip_prefix("j:"))
            && matches!(code, ErrorCode::RoomNotFound | ErrorCode::Forbidden)
        {
            self.rooms.remove(room);
        }
    }

    /// Delivers `m` unless already delivered; acknowledges our own sends.
    fn deliver(&mut self, m: ChatMessage, events: &mut Vec<Event>) {
        if let Some(cmid) = &m.client_message_id
            && let Some(i) = self
                .pending
                .iter()
                .position(|p| p.client_message_id == *cmid && p.room == m.room_id)
        {
            self.pending.remove(i);
            self.careful = false;
            events.push(Event::Acked {
                client_message_id: cmid.clone(),
                room: m.room_id.clone(),
                seq: m.seq,
            });
        }
        let Some(cursor) = self.rooms.get_mut(&m.room_id) else {
            return;
        };
        if cursor.last_seq.is_some_and(|last| m.seq <= last) {
            return;
        }
        cursor.last_seq = Some(m.seq);
        events.push(Event::Message(m));
    }
}

fn join_request(room: &str, cursor: &Cursor) -> String {
    let mut payload = json!({ "roomId": room });
    if let (Some(epoch), Some(seq)) = (&cursor.epoch, cursor.last_seq) {
        payload["sinceSeq"] = json!(seq);
        payload["epoch"] = json!(epoch);
    } else if let Some(epoch) = &cursor.epoch {
        payload["sinceSeq"] = json!(0);
        payload["epoch"] = json!(epoch);
    }
    json!({"type": "JOIN_ROOM", "payload": payload, "requestId": format!("j:{room}")}).to_string()
}

fn send_request(p: &PendingSend) -> String {
    json!({
        "type": "SEND_MESSAGE",
        "payload": {
            "roomId": p.room,
            "content": p.content,
            "type": p.kind,
            "clientMessageId": p.client_message_id,
        },
        "requestId": format!("s:{}", p.client_message_id),
    })
    .to_string()
}

// ----- the connection loop -------------------------------------------------------

enum Outcome {
    Stopped,
    Lost {
        code: Option<u16>,
        authenticated: bool,
    },
}

async fn run<C: Connector, T: TokenSource>(
    mut connector: C,
    mut tokens: T,
    options: ClientOptions,
    mut commands: mpsc::Receiver<Command>,
    events: mpsc::Sender<Event>,
) {
    let mut rng = Rng::new(options.seed);
    let mut session = Session::new(&mut rng, options.pending_max);
    let mut attempt: u32 = 0;
    loop {
        let outcome = match connector.connect().await {
            Ok(io) => {
                connected(
                    io,
                    &mut tokens,
                    &options,
                    &mut rng,
                    &mut session,
                    &mut commands,
                    &events,
                    attempt,
                )
                .await
            }
            Err(_) => Outcome::Lost {
                code: None,
                authenticated: false,
            },
        };
        match outcome {
            Outcome::Stopped => {
                let _ = events.send(Event::Stopped).await;
                return;
            }
            Outcome::Lost {
                code,
                authenticated,
            } => {
                if authenticated {
                    attempt = 0;
                }
                if events.send(Event::Disconnected { code }).await.is_err() {
                    return;
                }
            }
        }
        let delay = backoff_delay_ms(
            &mut rng,
            attempt,
            options.backoff_base_ms,
            options.backoff_max_ms,
        );
        attempt = attempt.saturating_add(1);
        let wake = Instant::now() + Duration::from_millis(delay);
        // While waiting, keep taking commands: sends queue up for the next
        // connection.
        loop {
            tokio::select! {
                biased;
                () = tokio::time::sleep_until(wake) => break,
                command = commands.recv() => match command {
                    None | Some(Command::Close) => {
                        let _ = events.send(Event::Stopped).await;
                        return;
                    }
                    Some(c) => offline(&mut session, c, &events).await,
                },
            }
        }
    }
}

/// Applies a command while disconnected.
async fn offline(session: &mut Session, command: Command, events: &mpsc::Sender<Event>) {
    match command {
        Command::Join(room) => {
            session.rooms.entry(room).or_default();
        }
        Command::Leave(room) => {
            session.rooms.remove(&room);
        }
        Command::Send {
            room,
            content,
            kind,
            client_message_id,
        } => {
            let _ = queue_send(session, room, content, kind, client_message_id, events).await;
        }
        Command::Typing { .. }
        | Command::History { .. }
        | Command::RefreshToken
        | Command::Drop
        | Command::Close => {}
    }
}

#[allow(clippy::needless_pass_by_value)]
async fn queue_send(
    session: &mut Session,
    room: String,
    content: String,
    kind: MessageKind,
    client_message_id: Option<String>,
    events: &mpsc::Sender<Event>,
) -> Option<PendingSend> {
    let client_message_id = client_message_id.unwrap_or_else(|| session.new_client_message_id());
    if session.pending.len() >= session.pending_max {
        let _ = events
            .send(Event::SendFailed {
                client_message_id,
                code: ErrorCode::RateLimitExceeded,
            })
            .await;
        return None;
    }
    let p = PendingSend {
        room,
        content,
        kind,
        client_message_id,
        not_before: None,
        in_flight: false,
    };
    session.pending.push_back(p.clone());
    Some(p)
}

type ClientWs = WebSocket<TokioIo<hyper::upgrade::Upgraded>>;

/// Writes a text frame with a seeded mask.
async fn write_text<S>(
    ws: &mut fastwebsockets::WebSocketWrite<S>,
    rng: &mut Rng,
    text: String,
) -> Result<(), WebSocketError>
where
    S: AsyncWrite + Unpin,
{
    let mask = (rng.next_u64() as u32).to_be_bytes();
    ws.write_frame(Frame::new(
        true,
        OpCode::Text,
        Some(mask),
        Payload::Owned(text.into_bytes()),
    ))
    .await
}

#[allow(clippy::too_many_arguments)]
async fn connected<Io, T>(
    io: Io,
    tokens: &mut T,
    options: &ClientOptions,
    rng: &mut Rng,
    session: &mut Session,
    commands: &mut mpsc::Receiver<Command>,
    events: &mpsc::Sender<Event>,
    attempt: u32,
) -> Outcome
where
    Io: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    T: TokenSource,
{
    let lost = |authenticated| Outcome::Lost {
        code: None,
        authenticated,
    };
    // The upgrade is bounded too.
    let upgrade_timeout = Duration::from_millis(options.idle_timeout_ms);
    let ws: ClientWs =
        match tokio::time::timeout(upgrade_timeout, handshake(io, options, rng)).await {
            Ok(Ok(ws)) => ws,
            _ => return lost(false),
        };
    if events.send(Event::Connected { attempt }).await.is_err() {
        return Outcome::Stopped;
    }
    let (mut rx, mut tx) = ws.split(tokio::io::split);
    rx.set_auto_close(false);
    rx.set_auto_pong(false);
    let (frames_tx, mut frames) = mpsc::channel::<Incoming>(256);
    let reader = async move {
        let mut rx = fastwebsockets::FragmentCollectorRead::new(rx);
        loop {
            let mut no_obligated_sends = |_: Frame<'_>| async { Ok::<(), io::Error>(()) };
            let item = match rx.read_frame(&mut no_obligated_sends).await {
                Ok(frame) => match frame.opcode {
                    OpCode::Text => Incoming::Text(Bytes::copy_from_slice(&frame.payload)),
                    OpCode::Ping => Incoming::Ping(Bytes::copy_from_slice(&frame.payload)),
                    OpCode::Close => Incoming::Close(close_code(&frame.payload)),
                    _ => Incoming::Other,
                },
                Err(_) => Incoming::Close(None),
            };
            let end = matches!(item, Incoming::Close(_));
            if frames_tx.send(item).await.is_err() || end {
                return;
            }
        }
    };
    tokio::pin!(reader);
    // The reader ends after forwarding the connection's end; a finished
    // future must not be polled again.
    let mut reader_done = false;

    let idle = Duration::from_millis(options.idle_timeout_ms);
    let mut authenticated = false;
    let token = tokens.token();
    let auth = auth_request(&token, options.username.as_deref());
    // Every write is bounded by the idle deadline.
    let write_deadline = Instant::now() + idle;
    if !matches!(
        tokio::time::timeout_at(write_deadline, write_text(&mut tx, rng, auth)).await,
        Ok(Ok(()))
    ) {
        return lost(false);
    }
    let mut idle_deadline = Instant::now() + idle;
    let mut retry_timer = Instant::now() + Duration::from_secs(3600);
    let mut out = Vec::new();
    loop {
        out.clear();
        let mut batch: Vec<String> = Vec::new();
        let mut closing: Option<Outcome> = None;
        tokio::select! {
            biased;
            () = &mut reader, if !reader_done => reader_done = true,
            item = frames.recv() => {
                idle_deadline = Instant::now() + idle;
                match item {
                    None | Some(Incoming::Close(_)) => {
                        let code = match item { Some(Incoming::Close(c)) => c, _ => None };
                        closing = Some(Outcome::Lost { code, authenticated });
                    }
                    Some(Incoming::Ping(payload)) => {
                        let mask = (rng.next_u64() as u32).to_be_bytes();
                        let pong = Frame::new(true, OpCode::Pong, Some(mask), Payload::Owned(payload.to_vec()));
                        if !matches!(tokio::time::timeout_at(idle_deadline, tx.write_frame(pong)).await, Ok(Ok(()))) {
                            return lost(authenticated);
                        }
                    }
                    Some(Incoming::Other) => {}
                    Some(Incoming::Text(text)) => {
                        let Ok(frame) = ServerFrame::decode(&text) else { continue };
                        if let ServerMessage::AuthSuccess { user_id, username, .. } = &frame.message {
                            out.push(Event::Authenticated { user_id: user_id.clone(), username: username.clone() });
                            if !authenticated {
                                authenticated = true;
                                batch.extend(session.resume_requests(Instant::now()));
                            }
                        } else {
                            session.on_frame(frame, &mut out, Instant::now());
                        }
                    }
                }
            }
            command = commands.recv() => match command {
                None | Some(Command::Close) => {
                    let _ = tx.write_frame(Frame::close(1000, b"")).await;
                    return Outcome::Stopped;
                }
                Some(Command::Drop) => return lost(authenticated),
                Some(command) => {
                    if let Some(text) = online(session, command, events, tokens, options).await
                        && (authenticated || text.contains("\"AUTHENTICATE\""))
                    {
                        batch.push(text);
                    }
                }
            },
            () = tokio::time::sleep_until(idle_deadline) => return lost(authenticated),
            () = tokio::time::sleep_until(retry_timer) => {}
        }
        // Sends go out through the window (rate-limited ones
        // once their wait is over).
        let now = Instant::now();
        if authenticated {
            batch.extend(session.sendable(now));
        }
        // Armed only when authenticated; a due send cannot go
        // before that, and a timer in the past would spin the loop.
        retry_timer = if authenticated {
            session.next_due()
        } else {
            None
        }
        .unwrap_or(now + Duration::from_secs(3600));
        for event in out.drain(..) {
            if events.send(event).await.is_err() {
                return Outcome::Stopped;
            }
        }
        for text in batch {
            let write = tokio::time::timeout_at(idle_deadline, write_text(&mut tx, rng, text));
            if !matches!(write.await, Ok(Ok(()))) {
                return lost(authenticated);
            }
        }
        if let Some(outcome) = closing {
            return outcome;
        }
    }
}

/// Applies a command on a live connection; returns the request to write.
async fn online<T: TokenSource>(
    session: &mut Session,
    command: Command,
    events: &mpsc::Sender<Event>,
    tokens: &mut T,
    options: &ClientOptions,
) -> Option<String> {
    match command {
        Command::Join(room) => {
            let cursor = session.rooms.entry(room.clone()).or_default();
            Some(join_request(&room, cursor))
        }
        Command::Leave(room) => {
            session.rooms.remove(&room);
            Some(json!({"type": "LEAVE_ROOM", "payload": {"roomId": room}, "requestId": format!("l:{room}")}).to_string())
        }
        Command::Send {
            room,
            content,
            kind,
            client_message_id,
        } => {
            // queued; the connection loop sends it through the
            // window.
            queue_send(session, room, content, kind, client_message_id, events).await;
            None
        }
        Command::Typing { room, is_typing } => Some(
            json!({"type": "TYPING_STATUS", "payload": {"roomId": room, "isTyping": is_typing}})
                .to_string(),
        ),
        Command::History {
            room,
            before_seq,
            limit,
        } => {
            let mut payload = json!({ "roomId": room });
            if let Some(b) = before_seq {
                payload["beforeSeq"] = json!(b);
            }
            if let Some(l) = limit {
                payload["limit"] = json!(l);
            }
            Some(json!({"type": "GET_HISTORY", "payload": payload, "requestId": format!("h:{room}")}).to_string())
        }
        Command::RefreshToken => Some(auth_request(&tokens.token(), options.username.as_deref())),
        Command::Drop | Command::Close => None,
    }
}

fn auth_request(token: &str, username: Option<&str>) -> String {
    let mut payload = json!({ "token": token });
    if let Some(name) = username {
        payload["username"] = json!(name);
    }
    json!({"type": "AUTHENTICATE", "payload": payload, "requestId": "auth"}).to_string()
}

enum Incoming {
    Text(Bytes),
    Ping(Bytes),
    Close(Option<u16>),
    Other,
}

fn close_code(payload: &[u8]) -> Option<u16> {
    (payload.len() >= 2).then(|| u16::from_be_bytes([payload[0], payload[1]]))
}

/// The HTTP upgrade, with a key from the seeded generator.
async fn handshake<Io>(
    io: Io,
    options: &ClientOptions,
    rng: &mut Rng,
) -> Result<WebSocket<TokioIo<hyper::upgrade::Upgraded>>, WebSocketError>
where
    Io: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let mut key = [0u8; 16];
    key[..8].copy_from_slice(&rng.next_u64().to_le_bytes());
    key[8..].copy_from_slice(&rng.next_u64().to_le_bytes());
    let key = base64::engine::general_purpose::STANDARD.encode(key);
    let mut request = hyper::Request::builder()
        .method("GET")
        .uri(&options.path)
        .header(hyper::header::HOST, &options.host)
        .header(hyper::header::UPGRADE, "websocket")
        .header(hyper::header::CONNECTION, "upgrade")
        .header("Sec-WebSocket-Key", key)
        .header("Sec-WebSocket-Version", "13");
    if let Some(origin) = &options.origin {
        request = request.header(hyper::header::ORIGIN, origin);
    }
    let request = request
        .body(Empty::<Bytes>::new())
        .map_err(|_| WebSocketError::InvalidValue)?;
    let (ws, _) = fastwebsockets::handshake::client(&SpawnExecutor, request, io).await?;
    Ok(ws)
}

struct SpawnExecutor;

impl<F> hyper::rt::Executor<F> for SpawnExecutor
where
    F: Future<Output = ()> + Send + 'static,
{
    fn execute(&self, future: F) {
        tokio::spawn(future);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(room: &str, seq: u64, cmid: Option<&str>) -> ChatMessage {
        ChatMessage {
            id: format!("m{seq}"),
            seq,
            room_id: room.into(),
            user_id: "u".into(),
            username: "u".into(),
            content: "x".into(),
            kind: MessageKind::Text,
            timestamp: String::new(),
            client_message_id: cmid.map(str::to_owned),
        }
    }

    #[test]
    fn backoff_is_bounded_and_seeded() {
        let mut a = Rng::new(7);
        let mut b = Rng::new(7);
        for attempt in 0..40 {
            let x = backoff_delay_ms(&mut a, attempt, 100, 10_000);
            assert_eq!(x, backoff_delay_ms(&mut b, attempt, 100, 10_000));
            assert!(x <= (100u64 << attempt.min(30)).min(10_000));
        }
    }

    #[test]
    fn delivers_once_in_order_and_acks_own_messages() {
        let mut rng = Rng::new(1);
        let mut s = Session::new(&mut rng, 16);
        s.rooms.insert("r".into(), Cursor::default());
        s.pending.push_back(PendingSend {
            room: "r".into(),
            content: "x".into(),
            kind: MessageKind::Text,
            client_message_id: "c1".into(),
            not_before: None,
            in_flight: false,
        });
        let mut ev = Vec::new();
        let now = Instant::now();
        for seq in [1, 2, 2, 1, 3] {
            let cmid = (seq == 2).then_some("c1");
            s.on_frame(
                ServerFrame {
                    message: ServerMessage::NewMessage(message("r", seq, cmid)),
                    request_id: None,
                },
                &mut ev,
                now,
            );
        }
        let seqs: Vec<u64> = ev
            .iter()
            .filter_map(|e| match e {
                Event::Message(m) => Some(m.seq),
                _ => None,
            })
            .collect();
        assert_eq!(seqs, vec![1, 2, 3]);
        assert!(s.pending.is_empty());
        assert_eq!(
            ev.iter()
                .filter(|e| matches!(e, Event::Acked { .. }))
                .count(),
            1
        );
        // The resume request carries the cursor.
        s.rooms.get_mut("r").unwrap().epoch = Some("e".into());
        let r = s.resume_requests(now);
        assert!(
            r[0].contains("\"sinceSeq\":3") && r[0].contains("\"epoch\":\"e\""),
            "{r:?}"
        );
    }
}
