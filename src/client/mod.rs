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
//! `clientMessageId` prefix — comes from one seeded [`Rng`](crate::rng::Rng)
//! ([`ClientOptions::seed`]), so that a simulation replays exactly.
//!
//! The module is split by concern: `api` holds the public types, `state`
//! what the client remembers across connections (no I/O), `requests` the
//! requests it writes (through [`protocol::client_encode`]), `transport` the
//! WebSocket upgrade and frames, `backoff` the reconnect delays, and
//! `session` the loop that ties them together.
//!
//! [`protocol::client_encode`]: crate::protocol::client_encode

mod api;
mod backoff;
mod requests;
mod session;
mod state;
mod transport;

pub use api::{ClientOptions, Command, Connector, Event, TcpConnector, TokenSource};
pub use backoff::backoff_delay_ms;

use tokio::sync::mpsc;

use crate::protocol::MessageKind;

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
    let task = tokio::spawn(session::run(connector, tokens, options, cmd_rx, ev_tx));
    (ClientHandle { tx: cmd_tx }, ev_rx, task)
}
