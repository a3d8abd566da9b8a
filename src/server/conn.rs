//! One WebSocket connection: a reader and a writer, polled concurrently.
//!
//! The reader owns the read half: it reads frames with a [`MessageReader`]
//! (no buffer held while idle; fragments reassembled, counting the
//! reassembled bytes since a frame is limited on its own), answers pings,
//! enforces the idle timeout, and hands each complete message to a
//! [`Handler`] (the chat glue, or a test tool such as the Autobahn echo
//! server). Reading a frame is not cancel-safe, so it is never raced
//! against anything but the end of the connection.
//!
//! The write half lives in the connection's [`Outbox`]: the driver writes
//! deliveries straight to it while it is idle, and the writer task
//! ([`write_loop`]) takes it for everything else. Once a close is
//! requested, it has [`CLOSE_GRACE`](super::outbox::CLOSE_GRACE) (a
//! shutdown: the shutdown grace) to get everything out; a client that does
//! not read by then is dropped, and so is a socket that accepts no bytes
//! for the write timeout. When both sides are done, one line is logged: who
//! closed, why, with what code and reason, and how many bytes were still
//! queued; the caller is told why ([`Cause`]) for the metrics.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use fastwebsockets::WebSocket;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadHalf};
use tokio::time::Instant;
use tracing::{info, warn};

use super::message_reader::{DataKind, MessageReader, Received};
use super::outbox::writer::{WriteEnd, WriteTimers, write_loop};
use super::outbox::{Cause, Control, Outbox};
use crate::frame::FrameError;
use crate::protocol::CloseCode;

/// Why the reader stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ReadEnd {
    /// The peer sent a close frame with this code (echoed back).
    PeerClosed(u16),
    /// The server must close with this code.
    Close(CloseCode, &'static str),
    /// The socket is gone (EOF, reset); nothing can be sent.
    Gone,
    /// The server asked to close; the reader has nothing more to forward.
    Stopped,
}

/// What the reader enforces; asked again for every frame, so that a
/// configuration reload applies to the very next message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadLimits {
    /// Largest message, reassembled; larger closes with 1009.
    pub max_message_bytes: usize,
    /// Drop the connection when nothing arrived for this long.
    pub idle_timeout: Duration,
}

/// Where the connection layer hands complete messages: the chat glue
/// ([`chat`](super::chat)), or a test tool such as the Autobahn echo server.
pub trait Handler: Send {
    /// The limits in force now.
    fn limits(&self) -> ReadLimits;
    /// A complete message arrived at `received`. `payload` may be used as
    /// scratch space. An error closes the connection with that code.
    fn message(
        &mut self,
        kind: DataKind,
        payload: &mut [u8],
        received: Instant,
    ) -> impl Future<Output = Result<(), (CloseCode, &'static str)>> + Send;
    /// Reading has ended (the peer closed or went away, or the server closes
    /// the connection); called once, before the writer finishes.
    fn reading_ended(&mut self) -> impl Future<Output = ()> + Send;
}

/// Serves one upgraded connection until it is closed: complete messages go
/// to `handler`, frames queued in `outbox` go to the peer, a ping every
/// `timers.ping_interval`. The socket is split at once, before the returned
/// future runs. Returns how the connection ended.
pub fn serve_with<S, H>(
    ws: WebSocket<S>,
    outbox: Arc<Outbox>,
    timers: WriteTimers,
    handler: H,
) -> impl Future<Output = Cause> + Send
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    H: Handler,
{
    let read_half = split(ws, &outbox);
    serve_split(read_half, outbox, timers, handler)
}

/// Splits the socket before any future holds it (an async fn keeps its
/// arguments for its whole life: a connection would carry the handshake's
/// `WebSocket` for as long as it is open). The read half stays with the
/// reader and the write half goes to the outbox until the end, so that after
/// a close the socket can still be drained: see [`linger`]. Frames are laid
/// out by the outbound path ([`outbox`](super::outbox)).
pub(crate) fn split<S>(ws: WebSocket<S>, outbox: &Outbox) -> ReadHalf<S>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (read_half, write_half) = tokio::io::split(ws.into_inner());
    outbox.attach(Box::new(write_half));
    read_half
}

/// [`serve_with`] once the socket is split: `read_half` is the socket's
/// read half, and its write half is attached to `outbox`.
pub(crate) async fn serve_split<R, H>(
    mut read_half: R,
    outbox: Arc<Outbox>,
    timers: WriteTimers,
    mut handler: H,
) -> Cause
where
    R: AsyncRead + Unpin + Send,
    H: Handler,
{
    let mut messages = MessageReader::default();

    // Boxed, so that the reader (which borrows the handler) can be dropped
    // before the handler is told that reading ended.
    let mut reader = Box::pin(read_loop(
        &mut messages,
        &mut read_half,
        &outbox,
        &mut handler,
    ));
    let mut writer = Box::pin(write_loop(&outbox, timers));
    // How reading ended (if it did), and how writing ended (if it did).
    let (read_end, mut write_end) = tokio::select! {
        biased;
        sent = &mut writer => {
            // The close frame is out: the peer may answer with its own close
            // until the connection's last moment. Otherwise (the socket
            // failed, or the peer never read its close) drop it now.
            let read = match sent {
                WriteEnd::CloseSent(last_moment) => {
                    tokio::time::timeout_at(last_moment, &mut reader).await.ok()
                }
                WriteEnd::Abandoned => None,
            };
            (read, Some(sent))
        }
        end = &mut reader => (Some(end), None),
    };
    drop(reader);
    // The handler hears of it at once (the chat core sees the connection
    // leave now), while the writer finishes.
    handler.reading_ended().await;
    if write_end.is_none()
        && let Some(end) = read_end
    {
        match end {
            ReadEnd::PeerClosed(code) => outbox.close(Cause::Client, peer_close_echo(code), ""),
            ReadEnd::Close(code, reason) => outbox.close(cause_of(code), code, reason),
            ReadEnd::Gone | ReadEnd::Stopped => {}
        }
        if end != ReadEnd::Gone {
            write_end = Some((&mut writer).await);
        }
    }
    drop(writer);
    let cause = log_close(read_end, &outbox);
    // The socket closes when this function returns, whoever keeps the outbox.
    let write_half = outbox.detach();
    // The reader stopped in the middle of the peer's input and the close
    // frame went out: drain until the connection's last moment.
    if let (Some(ReadEnd::Close(..)), Some(WriteEnd::CloseSent(until)), Some(mut write_half)) =
        (read_end, write_end, write_half)
    {
        // Boxed: only a connection that lingers pays for the state.
        Box::pin(linger(&mut read_half, &mut write_half, until)).await;
    }
    cause
}

/// Bytes read (and discarded) at a time while lingering.
const LINGER_READ_BYTES: usize = 4 * 1024;

/// A lingering close. The reader stopped with the peer's input unread (a
/// message over the limit, a protocol error, an idle timeout) and the close
/// frame is out. Dropping the socket now would answer the unread bytes with
/// a TCP reset, and a peer that is still sending gets that reset instead of
/// reading the close frame and its code. So the write side is shut down
/// (FIN after the close frame) and whatever arrives is read and thrown away
/// until the peer closes, or until `until` (the close grace), whichever
/// comes first. Memory stays at one small buffer however much is sent.
async fn linger<R, W>(read: &mut R, write: &mut W, until: Instant)
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let drain = async {
        let _ = write.shutdown().await;
        let mut scratch = vec![0u8; LINGER_READ_BYTES];
        while let Ok(1..) = read.read(&mut scratch).await {}
    };
    let _ = tokio::time::timeout_at(until, drain).await;
}

/// Logs how the connection ended: who closed it, why, the code and reason,
/// and the bytes still queued (dropped). A close for a reader that falls
/// behind (1013) is a warning. Returns why it ended.
fn log_close(read_end: Option<ReadEnd>, outbox: &Outbox) -> Cause {
    let queued_bytes = outbox.queued_bytes();
    match (read_end, outbox.close_request(), outbox.close_cause()) {
        (Some(ReadEnd::PeerClosed(code)), _, _) => {
            info!(by = "client", code, queued_bytes, "connection closed");
            Cause::Client
        }
        (_, Some(close), Some(cause)) => {
            let why = cause.as_str();
            let (code, reason) = (close.code.code(), close.reason);
            if close.code == CloseCode::TryAgainLater {
                warn!(
                    by = "server",
                    why, code, reason, queued_bytes, "connection closed: reader too slow"
                );
            } else {
                info!(
                    by = "server",
                    why, code, reason, queued_bytes, "connection closed"
                );
            }
            cause
        }
        _ => {
            info!(by = "network", queued_bytes, "connection lost");
            Cause::Network
        }
    }
}

/// Why the server closes a connection whose reader stopped with `code`.
fn cause_of(code: CloseCode) -> Cause {
    match code {
        // The only 1001 a reader closes with.
        CloseCode::GoingAway => Cause::IdleTimeout,
        CloseCode::Normal => Cause::Client,
        CloseCode::Policy => Cause::Policy,
        CloseCode::TooBig | CloseCode::ProtocolError | CloseCode::InvalidPayload => Cause::Protocol,
        CloseCode::TryAgainLater => Cause::SlowConsumer,
        CloseCode::Internal => Cause::ServerError,
    }
}

/// The code a close frame from the peer is answered with.
fn peer_close_echo(code: u16) -> CloseCode {
    match code {
        1001 => CloseCode::GoingAway,
        _ => CloseCode::Normal,
    }
}

async fn read_loop<R, H>(
    messages: &mut MessageReader,
    stream: &mut R,
    outbox: &Outbox,
    handler: &mut H,
) -> ReadEnd
where
    R: AsyncRead + Unpin,
    H: Handler,
{
    loop {
        let limits = handler.limits();
        let read = messages.read_frame(stream, limits.max_message_bytes);
        let frame = match tokio::time::timeout(limits.idle_timeout, read).await {
            Err(_) => return ReadEnd::Close(CloseCode::GoingAway, "idle timeout"),
            Ok(Err(FrameError::Gone)) => return ReadEnd::Gone,
            Ok(Err(FrameError::TooBig)) => {
                return ReadEnd::Close(CloseCode::TooBig, "message too big");
            }
            Ok(Err(FrameError::Protocol(reason))) => {
                return ReadEnd::Close(CloseCode::ProtocolError, reason);
            }
            Ok(Ok(frame)) => frame,
        };
        let received = Instant::now();
        match messages.on_frame(frame, limits.max_message_bytes, outbox.is_closing()) {
            Err((code, reason)) => return ReadEnd::Close(code, reason),
            Ok(Received::Nothing) => {}
            Ok(Received::Ping(payload)) => outbox.push_control(Control::Pong(Bytes::from(payload))),
            Ok(Received::PeerClosed(code)) => return ReadEnd::PeerClosed(code),
            Ok(Received::CloseAnswered) => return ReadEnd::Stopped,
            Ok(Received::Message(kind, mut payload)) => {
                if let Err((code, reason)) = handler.message(kind, &mut payload, received).await {
                    return ReadEnd::Close(code, reason);
                }
            }
        }
    }
}
