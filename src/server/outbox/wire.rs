//! Frames on the wire: how the server lays them out, the buffers they are
//! laid out in, and the two ways they are written.
//!
//! Headers are laid out by the frame codec ([`crate::frame`]), unmasked;
//! payloads are copied
//! into a buffer taken from a per-worker-thread pool, so that frames queued
//! back to back leave in one `write` and an idle connection holds no buffer
//! at all. [`write_now`] writes to an idle socket without waiting (the
//! driver's flush); [`write_batch`] writes the writer task's batch, waiting
//! for the socket.
//!
//! This file knows nothing of queues or tasks: it turns frames into bytes
//! on a socket.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

use bytes::Bytes;

use tokio::io::{AsyncWrite, AsyncWriteExt};

use crate::frame::{self, OpCode};
use crate::protocol::CloseCode;

/// A connection's write half, shared by the driver (non-blocking writes
/// while the writer is idle) and the connection's writer task.
pub type Sink = Box<dyn AsyncWrite + Send + Unpin>;

/// A queued data frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OutFrame {
    /// A text frame (every frame of the chat protocol).
    Text(Bytes),
    /// A binary frame (test tools such as the Autobahn echo server).
    Binary(Bytes),
    /// The bytes of a frame the socket took only part of: they go out as
    /// they are, before anything else.
    Rest(Bytes),
}

impl OutFrame {
    /// The payload (or, for [`OutFrame::Rest`], the remaining bytes).
    pub fn bytes(&self) -> &Bytes {
        match self {
            OutFrame::Text(b) | OutFrame::Binary(b) | OutFrame::Rest(b) => b,
        }
    }
}

/// A control frame the writer sends ahead of queued data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Control {
    /// Answer a client ping.
    Pong(Bytes),
}

/// How the connection is to be closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CloseRequest {
    /// The close code.
    pub code: CloseCode,
    /// The close frame's reason text.
    pub reason: &'static str,
}

/// What the writer should do next.
#[derive(Debug, Default)]
pub struct Batch {
    /// A ping first, if one is due.
    pub ping: bool,
    /// Then control frames.
    pub control: Vec<Control>,
    /// Then these data frames, in order.
    pub frames: VecDeque<OutFrame>,
    /// Then, once both are written, this close frame, and the writer stops.
    pub close: Option<CloseRequest>,
}

/// Most write buffers a worker thread keeps for reuse.
const POOLED_BUFFERS_MAX: usize = 64;
/// A buffer is written out whenever it holds this much.
pub(super) const POOLED_BUFFER_BYTES_MAX: usize = 64 * 1024;
/// A payload this large is written from its own (shared) bytes rather than
/// copied into a buffer.
pub(super) const LARGE_PAYLOAD_BYTES: usize = 16 * 1024;

thread_local! {
    /// Buffers in which frames are laid out for one write, reused by every
    /// connection served on this worker thread: a connection holds one only
    /// while it writes.
    static WRITE_BUFFERS: RefCell<Vec<Vec<u8>>> = const { RefCell::new(Vec::new()) };
}

/// An empty buffer from this thread's pool (or a new one).
pub(super) fn take_buffer() -> Vec<u8> {
    WRITE_BUFFERS.with_borrow_mut(Vec::pop).unwrap_or_default()
}

/// Returns a buffer to this thread's pool, unless it grew unusually large or
/// the pool is full.
pub(super) fn give_back(mut buf: Vec<u8>) {
    if buf.capacity() <= 2 * POOLED_BUFFER_BYTES_MAX {
        buf.clear();
        WRITE_BUFFERS.with_borrow_mut(|pool| {
            if pool.len() < POOLED_BUFFERS_MAX {
                pool.push(buf);
            }
        });
    }
}

/// Appends a final, unmasked frame (as a server sends it): its header, then
/// `payload`.
fn put_frame(buf: &mut Vec<u8>, opcode: OpCode, payload: &[u8]) {
    frame::put_frame(buf, true, opcode, None, payload);
}

/// Appends a close frame with `code` and `reason`.
fn put_close(buf: &mut Vec<u8>, code: u16, reason: &str) {
    frame::put_head(buf, true, OpCode::Close, None, 2 + reason.len());
    buf.extend_from_slice(&code.to_be_bytes());
    buf.extend_from_slice(reason.as_bytes());
}

/// The opcode of a queued data frame, or `None` for the rest of a frame
/// already partly written (its bytes go out as they are).
fn data_opcode(frame: &OutFrame) -> Option<OpCode> {
    match frame {
        OutFrame::Text(_) => Some(OpCode::Text),
        OutFrame::Binary(_) => Some(OpCode::Binary),
        OutFrame::Rest(_) => None,
    }
}

/// Appends a queued frame: header and payload, or a partly written frame's
/// remaining bytes.
pub(super) fn put_out_frame(buf: &mut Vec<u8>, frame: &OutFrame) {
    match data_opcode(frame) {
        Some(opcode) => put_frame(buf, opcode, frame.bytes()),
        None => buf.extend_from_slice(frame.bytes()),
    }
}

/// How many bytes `frame` takes on the wire (a server frame's header is 2,
/// 4 or 10 bytes long).
pub(super) fn wire_len(frame: &OutFrame) -> usize {
    let payload = frame.bytes().len();
    match frame {
        OutFrame::Rest(_) => payload,
        _ => frame::head_len(payload, false) + payload,
    }
}

/// Writes the queued frames to `sink` without waiting (a poll with a no-op
/// waker: a socket that is not ready is the writer's to wait for). Frames
/// written whole leave the queue; a frame written in part is replaced by its
/// remaining bytes. Small frames are laid out in one buffer; a large
/// payload is left to the writer unless `large` (a full queue offers
/// everything before a frame is refused), and is then written from its own
/// bytes. Returns the wire bytes written (what left the queue), and whether
/// a flush is still owed.
pub(super) fn write_now(
    sink: &mut Sink,
    queue: &mut VecDeque<OutFrame>,
    large: bool,
) -> (usize, bool) {
    let mut cx = Context::from_waker(Waker::noop());
    let mut buf = take_buffer();
    let mut written = 0;
    let mut all_taken = true;
    for frame in queue.iter() {
        let payload = frame.bytes();
        if payload.len() >= LARGE_PAYLOAD_BYTES {
            if !large {
                break;
            }
            if let Some(opcode) = data_opcode(frame) {
                frame::put_head(&mut buf, true, opcode, None, payload.len());
            }
            all_taken = poll_write_all(sink, &mut cx, &buf, &mut written)
                && poll_write_all(sink, &mut cx, payload, &mut written);
            buf.clear();
            if !all_taken {
                break;
            }
            continue;
        }
        if buf.len() >= POOLED_BUFFER_BYTES_MAX {
            if !large {
                break;
            }
            all_taken = poll_write_all(sink, &mut cx, &buf, &mut written);
            buf.clear();
            if !all_taken {
                break;
            }
        }
        put_out_frame(&mut buf, frame);
    }
    if all_taken {
        poll_write_all(sink, &mut cx, &buf, &mut written);
    }
    let mut start = 0;
    while start < written {
        let Some(front) = queue.front_mut() else {
            break;
        };
        let end = start + wire_len(front);
        if end > written {
            *front = rest_of(front, written - start);
            break;
        }
        queue.pop_front();
        start = end;
    }
    if queue.is_empty() {
        // An idle connection keeps no queue storage.
        *queue = VecDeque::new();
    }
    let unflushed = written > 0
        && !matches!(
            Pin::new(&mut *sink).poll_flush(&mut cx),
            Poll::Ready(Ok(()))
        );
    give_back(buf);
    (written, unflushed)
}

/// Writes `bytes` while the socket takes them without waiting, adding what
/// it took to `written`; `true` if it took them all.
fn poll_write_all(
    sink: &mut Sink,
    cx: &mut Context<'_>,
    bytes: &[u8],
    written: &mut usize,
) -> bool {
    let mut done = 0;
    while done < bytes.len() {
        match Pin::new(&mut *sink).poll_write(cx, &bytes[done..]) {
            Poll::Ready(Ok(n)) if n > 0 => done += n,
            // Not ready, or failed: the writer waits, or finds the error.
            _ => break,
        }
    }
    *written += done;
    done == bytes.len()
}

/// What is left of `frame` once its first `taken` wire bytes are written:
/// the payload's own bytes where the header is out (no copy), else the
/// rest of the header and the payload.
fn rest_of(frame: &OutFrame, taken: usize) -> OutFrame {
    let payload = frame.bytes();
    let head = wire_len(frame) - payload.len();
    if taken >= head {
        return OutFrame::Rest(payload.slice(taken - head..));
    }
    let mut rest = Vec::with_capacity(wire_len(frame) - taken);
    put_out_frame(&mut rest, frame);
    rest.drain(..taken);
    OutFrame::Rest(Bytes::from(rest))
}

/// Writes a close frame if the socket takes it at once (a last try on a
/// socket that is being dropped; nothing waits for it).
pub(super) fn try_close_now(sink: &mut Sink, close: CloseRequest) {
    let mut buf = Vec::with_capacity(frame::MAX_HEAD_LEN + 2 + close.reason.len());
    put_close(&mut buf, close.code.code(), close.reason);
    let mut cx = Context::from_waker(Waker::noop());
    if let Poll::Ready(Ok(_)) = Pin::new(&mut *sink).poll_write(&mut cx, &buf) {
        let _ = Pin::new(&mut *sink).poll_flush(&mut cx);
    }
}

/// Why [`write_batch`] stopped short.
#[derive(Debug)]
pub struct Cut {
    /// The write's error.
    pub error: std::io::Error,
    /// Whether the stream stopped between two frames (so a close frame
    /// could still follow what the peer got).
    pub at_boundary: bool,
}

/// Writes all of `bytes`. On an error, says whether the stream is still
/// where it was before them (nothing of them written) and that was between
/// two frames (`starts_clean`).
async fn write_chunk<W>(tx: &mut W, bytes: &[u8], starts_clean: bool) -> Result<(), Cut>
where
    W: AsyncWrite + Unpin + ?Sized,
{
    let mut written = 0;
    while written < bytes.len() {
        match tx.write(&bytes[written..]).await {
            Ok(0) => {
                return Err(Cut {
                    error: std::io::ErrorKind::WriteZero.into(),
                    at_boundary: false,
                });
            }
            Ok(n) => written += n,
            Err(error) => {
                return Err(Cut {
                    error,
                    at_boundary: starts_clean && written == 0,
                });
            }
        }
    }
    Ok(())
}

/// Writes a batch: the ping if due, control frames, data frames, then the
/// close frame. Small frames are laid out in one buffer and leave together
/// (one `write` for what the socket accepts); the buffer is written out
/// whenever it reaches [`POOLED_BUFFER_BYTES_MAX`], and a large
/// payload is written from its own shared bytes, so a long queue of large
/// broadcasts is never copied whole for one reader.
///
/// Frames leave `batch` as they are laid out or written, so that their
/// memory goes as soon as it can; each time the socket has accepted
/// frames, or part of a large one, `written` is told how many frames it
/// finished and how many of their wire bytes it took.
pub(super) async fn write_batch<W>(
    tx: &mut W,
    batch: &mut Batch,
    mut written: impl FnMut(usize, usize),
) -> Result<(), Cut>
where
    W: AsyncWrite + Unpin + ?Sized,
{
    let mut buf = take_buffer();
    // Whether the next chunk written starts between two frames.
    let mut starts_clean = true;
    // The data frames laid out in `buf`, and their wire bytes.
    let (mut frames, mut bytes) = (0, 0);
    // The rest of a frame the socket took part of comes first: the peer is
    // in the middle of it, so nothing (not even a pong) may come between.
    if matches!(batch.frames.front(), Some(OutFrame::Rest(_)))
        && let Some(rest) = batch.frames.pop_front()
    {
        put_out_frame(&mut buf, &rest);
        starts_clean = false;
        (frames, bytes) = (1, wire_len(&rest));
    }
    if batch.ping {
        put_frame(&mut buf, OpCode::Ping, &[]);
    }
    for control in &batch.control {
        match control {
            Control::Pong(payload) => put_frame(&mut buf, OpCode::Pong, payload),
        }
    }
    while let Some(frame) = batch.frames.pop_front() {
        let payload = frame.bytes();
        if payload.len() >= LARGE_PAYLOAD_BYTES {
            if let Some(opcode) = data_opcode(&frame) {
                frame::put_head(&mut buf, true, opcode, None, payload.len());
            }
            // The header goes with what precedes it; the payload follows
            // from its own bytes, in the middle of the frame, each part
            // the socket takes counted at once (a large frame may take the
            // socket a long time).
            write_chunk(tx, &buf, starts_clean).await?;
            written(frames, bytes + wire_len(&frame) - payload.len());
            buf.clear();
            let mut done = 0;
            while done < payload.len() {
                let n = match tx.write(&payload[done..]).await {
                    Ok(0) => Err(std::io::ErrorKind::WriteZero.into()),
                    result => result,
                }
                .map_err(|error| Cut {
                    error,
                    at_boundary: false,
                })?;
                done += n;
                written(0, n);
            }
            written(1, 0);
            (frames, bytes) = (0, 0);
            starts_clean = true;
            continue;
        }
        put_out_frame(&mut buf, &frame);
        frames += 1;
        bytes += wire_len(&frame);
        if buf.len() >= POOLED_BUFFER_BYTES_MAX {
            write_chunk(tx, &buf, starts_clean).await?;
            written(frames, bytes);
            (frames, bytes) = (0, 0);
            starts_clean = true;
            buf.clear();
        }
    }
    if let Some(close) = batch.close {
        put_close(&mut buf, close.code.code(), close.reason);
    }
    write_chunk(tx, &buf, starts_clean).await?;
    written(frames, bytes);
    tx.flush().await.map_err(|error| Cut {
        error,
        at_boundary: true,
    })?;
    give_back(buf);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_frames_are_laid_out_as_a_server_sends_them() {
        let mut buf = Vec::new();
        put_frame(&mut buf, OpCode::Ping, &[]);
        put_close(&mut buf, 1013, "slow");
        let mut expected = vec![0x89, 0, 0x88, 6, 0x03, 0xf5];
        expected.extend_from_slice(b"slow");
        assert_eq!(buf, expected);
    }

    #[test]
    fn wire_len_is_what_is_laid_out() {
        for len in [0, 1, 125, 126, 127, 65_535, 65_536, 70_000] {
            for frame in [
                OutFrame::Text(Bytes::from(vec![b'a'; len])),
                OutFrame::Binary(Bytes::from(vec![0; len])),
                OutFrame::Rest(Bytes::from(vec![1; len])),
            ] {
                let mut buf = Vec::new();
                put_out_frame(&mut buf, &frame);
                assert_eq!(wire_len(&frame), buf.len(), "{len} bytes: {frame:?}");
            }
        }
    }

    #[test]
    fn the_rest_of_a_frame_is_what_follows_the_bytes_taken() {
        for frame in [
            OutFrame::Text(Bytes::from(vec![b'a'; 70_000])),
            OutFrame::Binary(Bytes::from(vec![7; 300])),
            OutFrame::Rest(Bytes::from_static(b"rest")),
        ] {
            let mut whole = Vec::new();
            put_out_frame(&mut whole, &frame);
            for taken in [0, 1, 3, 9, 10, 11, whole.len() - 1] {
                if taken >= whole.len() {
                    continue;
                }
                let rest = rest_of(&frame, taken);
                assert!(matches!(rest, OutFrame::Rest(_)));
                assert_eq!(rest.bytes()[..], whole[taken..], "{taken} taken");
            }
        }
    }

    #[tokio::test]
    async fn a_batch_of_small_and_large_frames_is_written_in_order() {
        let small = Bytes::from_static(b"small");
        let large = Bytes::from(vec![b'L'; LARGE_PAYLOAD_BYTES + 1]);
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
            close: Some(CloseRequest {
                code: CloseCode::Normal,
                reason: "",
            }),
        };
        let mut sink = Vec::new();
        let mut batch = batch;
        let mut reported = (0, 0);
        write_batch(&mut sink, &mut batch, |f, b| {
            reported = (reported.0 + f, reported.1 + b);
        })
        .await
        .expect("write");
        // Every data frame was reported written, with its wire bytes.
        let data_bytes = 15 + 2 * (2 + small.len()) + 4 + large.len();
        assert_eq!(reported, (4, data_bytes));
        assert!(batch.frames.is_empty(), "written frames leave the batch");
        // The rest of a partly written frame first, then the ping and the
        // pong: nothing may land inside a frame the peer is reading.
        let mut expected = b"rest of a frame".to_vec();
        put_frame(&mut expected, OpCode::Ping, &[]);
        put_frame(&mut expected, OpCode::Pong, b"p");
        put_frame(&mut expected, OpCode::Text, &small);
        put_frame(&mut expected, OpCode::Text, &large);
        put_frame(&mut expected, OpCode::Binary, &small);
        put_close(&mut expected, 1000, "");
        assert_eq!(sink.len(), expected.len());
        assert!(sink == expected, "frames out of order or malformed");
    }
}
