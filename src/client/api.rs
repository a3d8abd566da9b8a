//! The client's public types: how it connects and authenticates, how it is
//! configured, what the application asks of it and what it reports back.
//!
//! They live apart from `mod.rs` so that the connection loop can use them
//! without importing the module that starts it.

use std::future::Future;
use std::io;
use std::net::SocketAddr;

use tokio::io::{AsyncRead, AsyncWrite};

use crate::protocol::server::{ChatMessage, ServerFrame, UserRef};
use crate::protocol::{ErrorCode, MessageKind};

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
    /// The server took the connection out of `room` without being asked (a
    /// refreshed token no longer grants it): the client stops resuming it
    /// and sends there fail. Joining it again is the application's call.
    Left {
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
