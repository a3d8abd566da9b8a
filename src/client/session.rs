//! The client's loop: connect, authenticate, resume every room, resend what
//! was not acknowledged, and on any loss wait out a backoff (still taking
//! commands) and start again.

use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::api::{ClientOptions, Command, Connector, Event, TokenSource};
use super::backoff::backoff_delay_ms;
use super::requests;
use super::state::Session;
use super::transport::{self, Incoming};
use crate::protocol::server::{ServerFrame, ServerMessage};
use crate::rng::Rng;

/// How a connection ended.
enum Outcome {
    Stopped,
    Lost {
        code: Option<u16>,
        authenticated: bool,
    },
}

/// Everything the client keeps from one connection to the next.
struct Client<T> {
    tokens: T,
    options: ClientOptions,
    rng: Rng,
    session: Session,
    commands: mpsc::Receiver<Command>,
    events: mpsc::Sender<Event>,
}

/// Runs the client until it is closed or the application drops its events.
pub(super) async fn run<C: Connector, T: TokenSource>(
    mut connector: C,
    tokens: T,
    options: ClientOptions,
    commands: mpsc::Receiver<Command>,
    events: mpsc::Sender<Event>,
) {
    let mut rng = Rng::new(options.seed);
    let session = Session::new(&mut rng, options.pending_max);
    let mut client = Client {
        tokens,
        options,
        rng,
        session,
        commands,
        events,
    };
    let mut attempt: u32 = 0;
    loop {
        let outcome = match connector.connect().await {
            Ok(io) => client.connected(io, attempt).await,
            Err(_) => Outcome::Lost {
                code: None,
                authenticated: false,
            },
        };
        match outcome {
            Outcome::Stopped => {
                let _ = client.events.send(Event::Stopped).await;
                return;
            }
            Outcome::Lost {
                code,
                authenticated,
            } => {
                if authenticated {
                    attempt = 0;
                }
                if client
                    .events
                    .send(Event::Disconnected { code })
                    .await
                    .is_err()
                {
                    return;
                }
            }
        }
        let delay = backoff_delay_ms(
            &mut client.rng,
            attempt,
            client.options.backoff_base_ms,
            client.options.backoff_max_ms,
        );
        attempt = attempt.saturating_add(1);
        let wake = Instant::now() + Duration::from_millis(delay);
        // While waiting, keep taking commands: sends queue up for the next
        // connection.
        loop {
            tokio::select! {
                biased;
                () = tokio::time::sleep_until(wake) => break,
                command = client.commands.recv() => match command {
                    None | Some(Command::Close) => {
                        let _ = client.events.send(Event::Stopped).await;
                        return;
                    }
                    Some(c) => {
                        apply::<T>(&mut client.session, c, &client.events, None).await;
                    }
                },
            }
        }
    }
}

impl<T: TokenSource> Client<T> {
    /// Runs one connection over `io` (attempt number `attempt`) until it is
    /// lost or the client is closed.
    async fn connected<Io>(&mut self, io: Io, attempt: u32) -> Outcome
    where
        Io: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let Client {
            tokens,
            options,
            rng,
            session,
            commands,
            events,
        } = self;
        let lost = |authenticated| Outcome::Lost {
            code: None,
            authenticated,
        };
        // The upgrade is bounded too.
        let upgrade_timeout = Duration::from_millis(options.idle_timeout_ms);
        let ws = match tokio::time::timeout(upgrade_timeout, transport::handshake(io, options, rng))
            .await
        {
            Ok(Ok(ws)) => ws,
            _ => return lost(false),
        };
        if events.send(Event::Connected { attempt }).await.is_err() {
            return Outcome::Stopped;
        }
        let (reader, mut frames, mut tx) = transport::split(ws);
        tokio::pin!(reader);
        // The reader ends after forwarding the connection's end; a finished
        // future must not be polled again.
        let mut reader_done = false;

        let idle = Duration::from_millis(options.idle_timeout_ms);
        let mut authenticated = false;
        let auth = requests::authenticate(tokens.token(), options.username.as_deref());
        // Every write is bounded by the idle deadline.
        let write_deadline = Instant::now() + idle;
        if !matches!(
            tokio::time::timeout_at(write_deadline, transport::write_text(&mut tx, rng, auth))
                .await,
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
                            let pong = transport::write_pong(&mut tx, rng, &payload);
                            if !matches!(tokio::time::timeout_at(idle_deadline, pong).await, Ok(Ok(()))) {
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
                        let _ = transport::write_close(&mut tx).await;
                        return Outcome::Stopped;
                    }
                    Some(Command::Drop) => return lost(authenticated),
                    Some(command) => {
                        // Before the token is accepted only a fresh token
                        // goes out; rooms and sends follow authentication.
                        let may_write = authenticated || matches!(command, Command::RefreshToken);
                        if let Some(text) = apply(session, command, events, Some((&mut *tokens, &*options))).await
                            && may_write
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
                let write = tokio::time::timeout_at(
                    idle_deadline,
                    transport::write_text(&mut tx, rng, text),
                );
                if !matches!(write.await, Ok(Ok(()))) {
                    return lost(authenticated);
                }
            }
            if let Some(outcome) = closing {
                return outcome;
            }
        }
    }
}

/// Applies a command. Rooms and sends are remembered across connections;
/// on a live connection (`live`: the token source and options, for a fresh
/// `AUTHENTICATE`) the request to write is returned. While disconnected,
/// typing, history and token refreshes are dropped.
async fn apply<T: TokenSource>(
    session: &mut Session,
    command: Command,
    events: &mpsc::Sender<Event>,
    live: Option<(&mut T, &ClientOptions)>,
) -> Option<String> {
    match command {
        Command::Join(room) => {
            session.join(&room);
            live.map(|_| session.join_request(&room))
        }
        Command::Leave(room) => {
            session.leave(&room);
            live.map(|_| requests::leave(&room))
        }
        Command::Send {
            room,
            content,
            kind,
            client_message_id,
        } => {
            // Queued; the connection loop sends it through the window.
            if let Some(failed) = session.queue_send(room, content, kind, client_message_id) {
                let _ = events.send(failed).await;
            }
            None
        }
        Command::Typing { room, is_typing } => live.map(|_| requests::typing(&room, is_typing)),
        Command::History {
            room,
            before_seq,
            limit,
        } => live.map(|_| requests::history(&room, before_seq, limit)),
        Command::RefreshToken => live.map(|(tokens, options)| {
            requests::authenticate(tokens.token(), options.username.as_deref())
        }),
        Command::Drop | Command::Close => None,
    }
}
