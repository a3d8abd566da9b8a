//! One WebSocket connection: a reader and a writer, polled concurrently.
//!
//! The reader owns the read half: it reads frames with a
//! [`FrameReader`] (no buffer held while idle), reassembles fragmented
//! messages (counting the reassembled bytes, since a frame is limited on its
//! own), answers pings, enforces the idle timeout, parses each message,
//! verifies tokens, and hands the result to the hub. Reading a frame is not
//! cancel-safe, so it is never raced against anything but the end of the
//! connection.
//!
//! The write half lives in the connection's [`Outbox`]: the hub writes
//! deliveries straight to it while it is idle, and the writer task takes it
//! for everything else: what the socket did not take at once (one flush per
//! batch), pongs, the periodic ping, and finally the close frame. Once a
//! close is requested, it has [`CLOSE_GRACE`](super::outbox::CLOSE_GRACE) to
//! get everything out; a client that does not read by then is dropped.

use std::cell::RefCell;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use fastwebsockets::{Frame, OpCode, Payload, WebSocket};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadHalf};
use tokio::sync::mpsc::error::TrySendError;
use tokio::time::Instant;
use tracing::{debug, info};

use super::Shared;
use super::frames;
use super::hub::HubCommand;
use super::outbox::{Batch, Control, OutFrame, Outbox};
use super::reader::{FrameError, FrameReader};
use crate::core::{ConnId, Inbound};
use crate::protocol::parse::ParseLimits;
use crate::protocol::{CloseCode, Parser};
use std::future::Future;

/// A fragmented message may span at most one frame per this many bytes of
/// `MAX_MESSAGE_BYTES` (1024 frames at the default 64 KiB), so that a flood
/// of tiny or empty continuation frames is bounded like the bytes are.
pub const FRAGMENT_BYTES_MIN: usize = 64;

thread_local! {
    /// simd-json scratch space, reused by every connection served on this
    /// worker thread.
    static PARSER: RefCell<Parser> = RefCell::new(Parser::new(ParseLimits::default()));
}

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

/// What a complete message is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DataKind {
    /// A text message (valid UTF-8).
    Text,
    /// A binary message.
    Binary,
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

/// Where the connection layer hands complete messages: the chat server
/// ([`serve`]), or a test tool such as the Autobahn echo server.
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
/// `ping_interval`.
pub fn serve_with<S, H>(
    ws: WebSocket<S>,
    outbox: Arc<Outbox>,
    ping_interval: Duration,
    handler: H,
) -> impl Future<Output = ()> + Send
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    H: Handler,
{
    let read_half = split(ws, &outbox);
    serve_split(read_half, outbox, ping_interval, handler)
}

/// Splits the socket before any future holds it (an async fn keeps its
/// arguments for its whole life: a connection would carry the handshake's
/// `WebSocket` for as long as it is open). The read half stays with the
/// reader and the write half goes to the outbox until the end, so that after
/// a close the socket can still be drained: see [`linger`]. Frames are laid
/// out by [`frames`](super::frames) (headers formatted by fastwebsockets).
fn split<S>(ws: WebSocket<S>, outbox: &Outbox) -> ReadHalf<S>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (read_half, write_half) = tokio::io::split(ws.into_inner());
    outbox.attach(Box::new(write_half));
    read_half
}

async fn serve_split<R, H>(
    mut read_half: R,
    outbox: Arc<Outbox>,
    ping_interval: Duration,
    mut handler: H,
) where
    R: AsyncRead + Unpin + Send,
    H: Handler,
{
    let mut frames_in = FrameReader::default();

    // Boxed, so that the reader (which borrows the handler) can be dropped
    // before the handler is told that reading ended.
    let mut reader = Box::pin(read_loop(
        &mut frames_in,
        &mut read_half,
        &outbox,
        &mut handler,
    ));
    let mut writer = Box::pin(write_loop(&outbox, ping_interval));
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
            ReadEnd::PeerClosed(code) => outbox.close(peer_close_echo(code), ""),
            ReadEnd::Close(code, reason) => outbox.close(code, reason),
            ReadEnd::Gone | ReadEnd::Stopped => {}
        }
        if end != ReadEnd::Gone {
            write_end = Some((&mut writer).await);
        }
    }
    drop(writer);
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

/// Serves one upgraded chat connection until it is closed.
pub(crate) fn serve<S>(
    ws: WebSocket<S>,
    conn: ConnId,
    shared: Arc<Shared>,
) -> impl Future<Output = ()> + Send
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let config = shared.config.load_full();
    let outbox = Arc::new(Outbox::new(config.outbound_queue_limit));
    let read_half = split(ws, &outbox);
    let ping_interval = Duration::from_millis(config.ping_interval_ms);
    async move {
        let connect = HubCommand::Connect {
            conn,
            outbox: outbox.clone(),
        };
        if to_hub(&shared, connect).await.is_err() {
            return;
        }
        info!("connected");
        let handler = ChatHandler {
            conn,
            shared: shared.clone(),
            outbox: outbox.clone(),
        };
        serve_split(read_half, outbox, ping_interval, handler).await;
        // Idempotent: the core may already have forgotten the connection.
        let _ = to_hub(&shared, HubCommand::Disconnect { conn }).await;
        info!("disconnected");
    }
}

/// Hands a command to the hub, waiting while its channel is full. The
/// command is handed over at once when there is room; only a wait is
/// boxed: `Sender::send`'s future (several hundred bytes, with the command
/// in it) would otherwise be part of every connection's task for its whole
/// life.
fn to_hub(
    shared: &Shared,
    command: HubCommand,
) -> impl Future<Output = Result<(), ()>> + Send + '_ {
    let waiting = match shared.hub.try_send(command) {
        Ok(()) => Ok(None),
        Err(TrySendError::Full(command)) => Ok(Some(Box::pin(shared.hub.send(command)))),
        Err(TrySendError::Closed(_)) => Err(()),
    };
    async move {
        match waiting? {
            None => Ok(()),
            Some(send) => send.await.map_err(|_| ()),
        }
    }
}

/// Parses each message, verifies tokens, and hands the result to the hub.
struct ChatHandler {
    conn: ConnId,
    shared: Arc<Shared>,
    outbox: Arc<Outbox>,
}

impl Handler for ChatHandler {
    fn limits(&self) -> ReadLimits {
        let config = self.shared.config.load();
        ReadLimits {
            max_message_bytes: config.max_message_bytes,
            idle_timeout: Duration::from_millis(config.idle_timeout_ms),
        }
    }

    async fn message(
        &mut self,
        kind: DataKind,
        payload: &mut [u8],
        received: Instant,
    ) -> Result<(), (CloseCode, &'static str)> {
        if self.outbox.is_closing() {
            // The server is closing this connection: nothing more counts.
            return Ok(());
        }
        let shared = &self.shared;
        shared.metrics.messages_received.inc();
        let inbound = match kind {
            DataKind::Binary => Inbound::Binary,
            DataKind::Text => {
                let limits = ParseLimits {
                    content_chars_max: shared.config.load().max_content_length,
                };
                let parsed = PARSER.with_borrow_mut(|p| {
                    if p.limits() != limits {
                        *p = Parser::new(limits);
                    }
                    p.parse(payload)
                });
                match parsed {
                    Err(e) => Inbound::Invalid(e),
                    Ok(message) => {
                        debug!(request = message.request.type_name(), "request");
                        let now = shared.clock.now();
                        Inbound::from_message(message, |token| {
                            let verified = shared.verifier.load().verify(token, now.0);
                            if let Ok(t) = &verified {
                                tracing::Span::current().record("user", t.user_id.as_str());
                            }
                            verified
                        })
                    }
                }
            }
        };
        let command = HubCommand::Inbound {
            conn: self.conn,
            inbound,
            received,
        };
        to_hub(&self.shared, command)
            .await
            .map_err(|()| (CloseCode::Internal, "server error"))
    }

    async fn reading_ended(&mut self) {
        let _ = to_hub(&self.shared, HubCommand::Disconnect { conn: self.conn }).await;
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
    frames_in: &mut FrameReader,
    stream: &mut R,
    outbox: &Outbox,
    handler: &mut H,
) -> ReadEnd
where
    R: AsyncRead + Unpin,
    H: Handler,
{
    let mut assembling: Option<(OpCode, Vec<u8>, usize)> = None;
    loop {
        let limits = handler.limits();
        // A data frame may only be as long as what is left of its message:
        // the reader refuses a longer one (1009) before reading it.
        let frame_max = match &assembling {
            Some((_, buf, _)) => limits.max_message_bytes.saturating_sub(buf.len()),
            None => limits.max_message_bytes,
        };
        let read = frames_in.read_frame(stream, frame_max);
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
        // RFC 6455 5.1: a server must close the connection on a frame from
        // the client that is not masked.
        if !frame.masked {
            return ReadEnd::Close(CloseCode::ProtocolError, "unmasked frame");
        }
        if outbox.is_closing() {
            // Keep reading only to see the peer's close.
            if frame.opcode == OpCode::Close {
                return ReadEnd::Stopped;
            }
            continue;
        }
        let received = Instant::now();
        let max_bytes = limits.max_message_bytes;
        let message: Option<(OpCode, Vec<u8>)> = match frame.opcode {
            OpCode::Text | OpCode::Binary if frame.fin => {
                if assembling.is_some() {
                    return ReadEnd::Close(
                        CloseCode::ProtocolError,
                        "expected a continuation frame",
                    );
                }
                Some((frame.opcode, frame.payload))
            }
            OpCode::Text | OpCode::Binary => {
                if assembling.is_some() {
                    return ReadEnd::Close(
                        CloseCode::ProtocolError,
                        "expected a continuation frame",
                    );
                }
                assembling = Some((frame.opcode, frame.payload, 1));
                None
            }
            OpCode::Continuation => {
                let Some((_, buf, fragments)) = assembling.as_mut() else {
                    return ReadEnd::Close(
                        CloseCode::ProtocolError,
                        "unexpected continuation frame",
                    );
                };
                *fragments += 1;
                if *fragments > (max_bytes / FRAGMENT_BYTES_MIN).max(16) {
                    return ReadEnd::Close(CloseCode::TooBig, "too many fragments");
                }
                buf.extend_from_slice(&frame.payload);
                if frame.fin {
                    assembling.take().map(|(opcode, buf, _)| (opcode, buf))
                } else {
                    None
                }
            }
            OpCode::Close => return peer_close(&frame.payload),
            OpCode::Ping => {
                outbox.push_control(Control::Pong(Bytes::from(frame.payload)));
                None
            }
            OpCode::Pong => None,
        };
        let Some((opcode, mut payload)) = message else {
            continue;
        };
        let kind = if opcode == OpCode::Binary {
            DataKind::Binary
        } else {
            // A text message is valid UTF-8 as a whole (RFC 6455 8.1);
            // fragments are checked once reassembled.
            if std::str::from_utf8(&payload).is_err() {
                return ReadEnd::Close(CloseCode::InvalidPayload, "invalid UTF-8");
            }
            DataKind::Text
        };
        if let Err((code, reason)) = handler.message(kind, &mut payload, received).await {
            return ReadEnd::Close(code, reason);
        }
    }
}

/// Validates a close frame from the peer (auto-close is off, so this is ours to do).
fn peer_close(payload: &[u8]) -> ReadEnd {
    match payload.len() {
        0 => ReadEnd::PeerClosed(1005),
        1 => ReadEnd::Close(CloseCode::ProtocolError, "invalid close frame"),
        _ => {
            let code = u16::from_be_bytes([payload[0], payload[1]]);
            if !fastwebsockets::CloseCode::from(code).is_allowed() {
                return ReadEnd::Close(CloseCode::ProtocolError, "invalid close code");
            }
            if std::str::from_utf8(&payload[2..]).is_err() {
                return ReadEnd::Close(CloseCode::InvalidPayload, "invalid close reason");
            }
            ReadEnd::PeerClosed(code)
        }
    }
}

/// Why the writer stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum WriteEnd {
    /// The close frame was written; the connection must be gone by then.
    CloseSent(Instant),
    /// The socket failed, or the close grace ran out before the close frame
    /// was written.
    Abandoned,
}

async fn write_loop(outbox: &Outbox, ping_interval: Duration) -> WriteEnd {
    let kill = async {
        let last_moment = outbox.closing().await;
        tokio::time::sleep_until(last_moment).await;
    };
    tokio::pin!(kill);
    let mut ping = tokio::time::interval_at(Instant::now() + ping_interval, ping_interval);
    ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let (batch, sink) = tokio::select! {
            biased;
            () = &mut kill => return WriteEnd::Abandoned,
            batch = outbox.next_batch() => batch,
            _ = ping.tick() => {
                outbox.request_ping();
                continue;
            }
        };
        let Some(mut sink) = sink else {
            return WriteEnd::Abandoned;
        };
        let written = tokio::select! {
            biased;
            () = &mut kill => return WriteEnd::Abandoned,
            r = write_batch(&mut sink, &batch) => r,
        };
        outbox.batch_written(sink);
        if written.is_err() {
            return WriteEnd::Abandoned;
        }
        if batch.close.is_some() {
            return WriteEnd::CloseSent(outbox.closing().await);
        }
    }
}

/// Writes a batch: the ping if due, control frames, data frames, then the
/// close frame. Small frames are laid out in one buffer and leave together
/// (one `write` for what the socket accepts); the buffer is written out
/// whenever it reaches [`frames::POOLED_BUFFER_BYTES_MAX`], and a large
/// payload is written from its own shared bytes, so a long queue of large
/// broadcasts is never copied whole for one reader.
async fn write_batch<W>(tx: &mut W, batch: &Batch) -> std::io::Result<()>
where
    W: AsyncWrite + Unpin + ?Sized,
{
    let mut buf = frames::take_buffer();
    // The rest of a frame the socket took part of comes first: the peer is
    // in the middle of it, so nothing (not even a pong) may come between.
    let rest = match batch.frames.front() {
        Some(rest @ OutFrame::Rest(_)) => {
            frames::put_out_frame(&mut buf, rest);
            1
        }
        _ => 0,
    };
    if batch.ping {
        frames::put_frame(
            &mut buf,
            Frame::new(true, OpCode::Ping, None, Payload::Borrowed(&[])),
        );
    }
    for control in &batch.control {
        match control {
            Control::Pong(payload) => {
                frames::put_frame(&mut buf, Frame::pong(Payload::Borrowed(payload)));
            }
        }
    }
    for frame in batch.frames.iter().skip(rest) {
        let payload = frame.bytes();
        if payload.len() >= frames::LARGE_PAYLOAD_BYTES {
            if let Some(mut out) = frames::data_frame(frame) {
                frames::put_head(&mut buf, &mut out);
            }
            tx.write_all(&buf).await?;
            buf.clear();
            tx.write_all(payload).await?;
            continue;
        }
        frames::put_out_frame(&mut buf, frame);
        if buf.len() >= frames::POOLED_BUFFER_BYTES_MAX {
            tx.write_all(&buf).await?;
            buf.clear();
        }
    }
    if let Some(close) = batch.close {
        frames::put_frame(
            &mut buf,
            Frame::close(close.code.code(), close.reason.as_bytes()),
        );
    }
    tx.write_all(&buf).await?;
    tx.flush().await?;
    frames::give_back(buf);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::frames::put_frame;
    use super::*;

    #[tokio::test]
    async fn a_batch_of_small_and_large_frames_is_written_in_order() {
        let small = Bytes::from_static(b"small");
        let large = Bytes::from(vec![b'L'; frames::LARGE_PAYLOAD_BYTES + 1]);
        let batch = Batch {
            ping: true,
            control: vec![Control::Pong(Bytes::from_static(b"p"))],
            frames: [
                OutFrame::Rest(Bytes::from_static(b"rest of a frame")),
                OutFrame::Text(small.clone()),
                OutFrame::Text(large.clone()),
                OutFrame::Binary(small.clone()),
            ]
            .into(),
            close: Some(super::super::outbox::CloseRequest {
                code: CloseCode::Normal,
                reason: "",
            }),
        };
        let mut sink = Vec::new();
        write_batch(&mut sink, &batch).await.expect("write");
        // The rest of a partly written frame first, then the ping and the
        // pong: nothing may land inside a frame the peer is reading.
        let mut expected = b"rest of a frame".to_vec();
        put_frame(
            &mut expected,
            Frame::new(true, OpCode::Ping, None, Payload::Borrowed(&[])),
        );
        put_frame(&mut expected, Frame::pong(Payload::Borrowed(b"p")));
        put_frame(&mut expected, Frame::text(Payload::Borrowed(&small)));
        put_frame(&mut expected, Frame::text(Payload::Borrowed(&large)));
        put_frame(&mut expected, Frame::binary(Payload::Borrowed(&small)));
        put_frame(&mut expected, Frame::close(1000, b""));
        assert_eq!(sink.len(), expected.len());
        assert!(sink == expected, "frames out of order or malformed");
    }

    /// What a peer reads: the frames in `wire`, as (opcode, payload).
    fn frames_on(mut wire: &[u8]) -> Vec<(OpCode, Vec<u8>)> {
        let mut out = Vec::new();
        while !wire.is_empty() {
            let head = crate::server::reader::parse_head(wire, usize::MAX)
                .expect("a well-formed header")
                .expect("a whole header");
            let end = head.head_len + head.len;
            out.push((head.opcode, wire[head.head_len..end].to_vec()));
            wire = &wire[end..];
        }
        out
    }

    #[tokio::test]
    async fn a_pong_never_lands_inside_a_partly_written_frame() {
        use tokio::io::AsyncReadExt;
        let (ours, mut peer) = tokio::io::duplex(150);
        let outbox = Outbox::new(8);
        outbox.attach(Box::new(ours));
        let texts: Vec<Bytes> = (0..3u8).map(|i| Bytes::from(vec![b'a' + i; 100])).collect();
        for t in &texts {
            outbox.queue(t.clone(), false).expect("queued");
        }
        // The socket takes the first frame and half of the second ...
        outbox.flush();
        // ... and a ping arrives before the writer runs.
        outbox.push_control(Control::Pong(Bytes::from_static(b"pp")));
        let (batch, sink) = outbox.next_batch().await;
        let mut sink = sink.expect("sink");
        let mut wire = Vec::new();
        let read_all = async {
            let mut chunk = vec![0; 4096];
            while wire.len() < 3 * 102 + 4 {
                let n = peer.read(&mut chunk).await.expect("read");
                wire.extend_from_slice(&chunk[..n]);
            }
        };
        let (written, ()) = tokio::join!(write_batch(&mut sink, &batch), read_all);
        written.expect("write");
        let got = frames_on(&wire);
        let expected: Vec<(OpCode, Vec<u8>)> = vec![
            (OpCode::Text, texts[0].to_vec()),
            (OpCode::Text, texts[1].to_vec()),
            (OpCode::Pong, b"pp".to_vec()),
            (OpCode::Text, texts[2].to_vec()),
        ];
        assert_eq!(got, expected);
    }
}
