//! The client's WebSocket over fastwebsockets: the HTTP upgrade, a reader
//! that forwards whole frames to the session loop, and masked writes.
//!
//! Every key and mask is drawn from the client's seeded [`Rng`], so that a
//! simulation replays byte for byte.

use std::future::Future;
use std::io;

use base64::Engine as _;
use bytes::Bytes;
use fastwebsockets::{Frame, OpCode, Payload, WebSocket, WebSocketError, WebSocketWrite};
use http_body_util::Empty;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, WriteHalf};
use tokio::sync::mpsc;

use super::api::ClientOptions;
use crate::rng::Rng;

type Upgraded = TokioIo<hyper::upgrade::Upgraded>;

/// The write half of an open connection.
pub(super) type Writer = WebSocketWrite<WriteHalf<Upgraded>>;

/// What the reader forwards to the session loop.
pub(super) enum Incoming {
    /// A whole text message.
    Text(Bytes),
    /// A ping, to be answered with its payload.
    Ping(Bytes),
    /// The connection's end: a close frame (with its code, if any) or an
    /// error. Nothing follows it.
    Close(Option<u16>),
    /// Anything else (binary, pong), which the client ignores.
    Other,
}

/// The HTTP upgrade, with a key from the seeded generator.
pub(super) async fn handshake<Io>(
    io: Io,
    options: &ClientOptions,
    rng: &mut Rng,
) -> Result<WebSocket<Upgraded>, WebSocketError>
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

/// Splits an open connection into a reader, the frames it forwards, and
/// the write half. The session loop answers pings and closes itself, so the
/// reader does neither; it ends after forwarding [`Incoming::Close`].
pub(super) fn split(
    ws: WebSocket<Upgraded>,
) -> (impl Future<Output = ()>, mpsc::Receiver<Incoming>, Writer) {
    let (mut rx, tx) = ws.split(tokio::io::split);
    rx.set_auto_close(false);
    rx.set_auto_pong(false);
    let (frames_tx, frames) = mpsc::channel::<Incoming>(256);
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
    (reader, frames, tx)
}

fn close_code(payload: &[u8]) -> Option<u16> {
    (payload.len() >= 2).then(|| u16::from_be_bytes([payload[0], payload[1]]))
}

/// Writes a text frame with a seeded mask.
pub(super) async fn write_text(
    tx: &mut Writer,
    rng: &mut Rng,
    text: String,
) -> Result<(), WebSocketError> {
    write_masked(tx, rng, OpCode::Text, text.into_bytes()).await
}

/// Answers a ping, with a seeded mask.
pub(super) async fn write_pong(
    tx: &mut Writer,
    rng: &mut Rng,
    payload: &[u8],
) -> Result<(), WebSocketError> {
    write_masked(tx, rng, OpCode::Pong, payload.to_vec()).await
}

async fn write_masked(
    tx: &mut Writer,
    rng: &mut Rng,
    opcode: OpCode,
    payload: Vec<u8>,
) -> Result<(), WebSocketError> {
    let mask = (rng.next_u64() as u32).to_be_bytes();
    tx.write_frame(Frame::new(
        true,
        opcode,
        Some(mask),
        Payload::Owned(payload),
    ))
    .await
}

/// Closes with 1000 (normal closure).
pub(super) async fn write_close(tx: &mut Writer) -> Result<(), WebSocketError> {
    tx.write_frame(Frame::close(1000, b"")).await
}
