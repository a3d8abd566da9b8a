//! The outbound path: everything between the core's output and a client's
//! socket, in one module.
//!
//! * [`Outbox`] (this file) is one connection's bounded queue and the state
//!   of its write protocol: what is queued, whether a flush is owed or a
//!   hold pending, where the socket's write half is, whether a close was
//!   asked for. Its lock is per connection and held only to push, to swap
//!   the queue out, or for one non-blocking write.
//! * [`Flushes`](flushes::Flushes) (`flushes.rs`) is the driver's side of the same protocol:
//!   the connections owed a flush at the end of the driver's batch of
//!   commands, the connections whose presence notices are held (with when
//!   each hold ends), and the flush lanes that spread a large batch's
//!   writes over the worker threads. The driver only routes a frame to
//!   `Flushes::queue` and calls `Flushes::flush` at the end of a batch.
//! * `wire.rs` lays frames out as the server sends them, in buffers from a
//!   per-worker-thread pool, and writes them in one of two ways: without
//!   waiting, straight to an idle socket (from [`Outbox::flush`], so a
//!   delivery costs one `write` and no task wake-up), or as the writer
//!   task's whole batch, waiting for the socket as long as it must.
//! * `writer.rs` is the connection's writer task ([`writer::write_loop`]):
//!   it takes whatever the socket did not take at once, every ping, pong
//!   and close, and gives the write half back when done.
//!
//! The files depend on each other in one direction only: `wire` (bytes)
//! ← this file (the queue) ← `flushes` (the driver's lists) and `writer`
//! (the task).
//!
//! A push never waits: when a connection's queue is full the push fails
//! and the driver closes that connection with 1013, so a slow reader never
//! slows the room down and never grows the server's memory. Presence and
//! typing notices may be held for up to `PRESENCE_DELAY_MS` so that the
//! notices a connection gets in that time share one write; any other frame
//! queued to the connection takes them along at once, so nothing is
//! reordered and nothing else waits.

pub mod flushes;
pub mod wire;
pub mod writer;

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::protocol::CloseCode;
pub use wire::{Batch, CloseRequest, Control, OutFrame, Sink};

/// Time a closing connection gets to take its close frame (and what was
/// queued before it) and to answer with its own; then it is dropped.
pub const CLOSE_GRACE: Duration = Duration::from_secs(5);

/// Control frames (pongs) that may wait to be written; a ping flood from a
/// client that does not read gets no more answers than this until the
/// writer catches up.
pub const PENDING_CONTROL_MAX: usize = 16;

/// Why a push was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PushError {
    /// The queue holds `OUTBOUND_QUEUE_LIMIT` frames: the reader is too slow.
    Full,
    /// The connection is closing; nothing more is sent.
    Closed,
}

/// What the driver owes a connection once it has queued a frame to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Owed {
    /// A flush at the end of this batch.
    Flush,
    /// A flush when the hold on its notices ends.
    FlushLater,
    /// Nothing new: a flush it already owes takes this frame along.
    Nothing,
}

/// Where the write half is.
#[derive(Default)]
enum SinkSlot {
    /// Not attached yet, or detached for good.
    #[default]
    None,
    /// Idle: the driver may write to it without waiting.
    Parked(Sink),
    /// Taken by the writer task.
    Taken,
}

impl std::fmt::Debug for SinkSlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            SinkSlot::None => "None",
            SinkSlot::Parked(_) => "Parked",
            SinkSlot::Taken => "Taken",
        })
    }
}

#[derive(Debug, Default)]
struct State {
    sink: SinkSlot,
    /// A ping is due.
    ping: bool,
    /// Bytes were written straight to the sink and its flush did not
    /// complete: the writer must flush it.
    unflushed: bool,
    frames: VecDeque<OutFrame>,
    control: Vec<Control>,
    /// Frames taken by the writer and not yet written: they still count
    /// against the limit, so the bound holds for what the server holds.
    in_flight: usize,
    close: Option<CloseRequest>,
    /// When the close was requested: the connection's last moment is
    /// [`CLOSE_GRACE`] after it.
    close_requested_at: Option<Instant>,
    /// Payload bytes queued (not yet taken by the writer) when the close
    /// was asked for: what a slow consumer's close dropped, or what the
    /// close frame had to wait behind. For the close log.
    queued_at_close: usize,
    /// The close was handed to the writer.
    close_taken: bool,
    /// The driver owes this connection a [`flush`](Outbox::flush): it is
    /// on the driver's list ([`flushes`]) for the end of the batch.
    flush_owed: bool,
    /// The driver holds notices for this connection and will flush it when the
    /// hold ends (see [`Outbox::end_hold`]).
    held: bool,
}

/// One connection's outbound queue. Shared by the driver (pushing), the
/// connection's reader (control frames, closes) and its writer (draining).
#[derive(Debug)]
pub struct Outbox {
    limit: usize,
    state: Mutex<State>,
    /// Wakes the writer.
    ready: Notify,
    /// Fires once when a close is requested (starts the close grace period).
    closing: Notify,
}

impl Outbox {
    /// An empty queue holding at most `limit` frames.
    pub fn new(limit: usize) -> Outbox {
        Outbox {
            limit: limit.max(1),
            state: Mutex::new(State::default()),
            ready: Notify::new(),
            closing: Notify::new(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding this lock cannot leave the queue inconsistent
        // (every update is a single push or swap), so poisoning is ignored.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Gives the outbox the socket's write half. Until then, and after
    /// [`detach`](Outbox::detach), nothing can be written.
    pub fn attach(&self, sink: Sink) {
        self.lock().sink = SinkSlot::Parked(sink);
    }

    /// Takes the write half back for good (once the writer is done with it),
    /// so that the socket closes when its owner drops it, however long the
    /// driver keeps this outbox.
    pub fn detach(&self) -> Option<Sink> {
        match std::mem::take(&mut self.lock().sink) {
            SinkSlot::Parked(sink) => Some(sink),
            SinkSlot::None | SinkSlot::Taken => None,
        }
    }

    /// Queues a data frame of either kind and wakes the writer.
    pub fn push_frame(&self, frame: OutFrame) -> Result<(), PushError> {
        let mut s = self.lock();
        let was_empty = s.frames.is_empty();
        Self::append(&mut s, self.limit, frame)?;
        drop(s);
        if was_empty {
            self.ready.notify_one();
        }
        Ok(())
    }

    /// Queues a text frame without sending it yet, and says what the caller
    /// owes the connection: a [`flush`](Outbox::flush) once its batch of
    /// pushes is done, or, for a notice that may be `hold`, a flush when the
    /// hold ends ([`end_hold`](Outbox::end_hold)) — unless a flush already
    /// owed takes it along. A full queue whose frames were never offered to
    /// the socket (held, or queued in this batch) offers them before the
    /// frame is refused: only a socket that does not take them makes the
    /// connection a slow consumer, so holding never does.
    fn queue(&self, frame: Bytes, hold: bool) -> Result<Owed, PushError> {
        let mut s = self.lock();
        if s.frames.len() + s.in_flight >= self.limit {
            Self::write_if_idle(&mut s);
        }
        Self::append(&mut s, self.limit, OutFrame::Text(frame))?;
        Ok(if s.flush_owed || (hold && s.held) {
            Owed::Nothing
        } else if hold {
            s.held = true;
            Owed::FlushLater
        } else {
            s.flush_owed = true;
            Owed::Flush
        })
    }

    /// The hold on this connection's notices ended: `true` when the caller
    /// now owes it a [`flush`](Outbox::flush) (something is queued and no
    /// flush is owed already).
    fn end_hold(&self) -> bool {
        let mut s = self.lock();
        s.held = false;
        if s.flush_owed || s.frames.is_empty() {
            return false;
        }
        s.flush_owed = true;
        true
    }

    fn append(s: &mut State, limit: usize, frame: OutFrame) -> Result<(), PushError> {
        if s.close.is_some() {
            return Err(PushError::Closed);
        }
        if s.frames.len() + s.in_flight >= limit {
            return Err(PushError::Full);
        }
        s.frames.push_back(frame);
        Ok(())
    }

    /// Sends what is queued. When no writer is using the socket (and no
    /// control frame or close is pending), everything queued is laid out in
    /// one buffer and written without waiting; what the socket does not take
    /// stays queued, in order, and the writer is woken for it.
    fn flush(&self) {
        let mut s = self.lock();
        s.flush_owed = false;
        if s.frames.is_empty() {
            return;
        }
        Self::write_if_idle(&mut s);
        let wake = !s.frames.is_empty() || s.unflushed;
        drop(s);
        if wake {
            self.ready.notify_one();
        }
    }

    /// Writes what is queued when no writer is using the socket and nothing
    /// must go before it (see [`flush`](Outbox::flush)).
    fn write_if_idle(s: &mut State) {
        if s.close.is_none() && s.control.is_empty() && !s.ping && !s.unflushed {
            let State {
                sink,
                frames,
                unflushed,
                ..
            } = s;
            if let SinkSlot::Parked(sink) = sink {
                *unflushed = wire::write_now(sink, frames);
            }
        }
    }

    /// Asks the writer to send a ping.
    pub fn request_ping(&self) {
        self.lock().ping = true;
        self.ready.notify_one();
    }

    /// Queues a control frame (not counted against the limit: at most one
    /// per frame received, and the reader is bounded by the rate limits).
    pub fn push_control(&self, control: Control) {
        let mut s = self.lock();
        if s.close.is_some() || s.control.len() >= PENDING_CONTROL_MAX {
            return;
        }
        s.control.push(control);
        drop(s);
        self.ready.notify_one();
    }

    /// Asks for the connection to be closed after what is already queued.
    /// The first request wins.
    pub fn close(&self, code: CloseCode, reason: &'static str) {
        self.request_close(CloseRequest { code, reason }, false);
    }

    /// Closes a slow consumer: what is queued but not yet written is dropped,
    /// and the close frame follows what the socket already accepted.
    pub fn close_discarding(&self, code: CloseCode, reason: &'static str) {
        self.request_close(CloseRequest { code, reason }, true);
    }

    fn request_close(&self, request: CloseRequest, discard: bool) {
        let mut s = self.lock();
        if s.close.is_some() {
            return;
        }
        s.close = Some(request);
        s.close_requested_at = Some(Instant::now());
        s.queued_at_close = payload_bytes(&s.frames);
        if discard {
            // Only the rest of a frame the socket took part of stays: the
            // close frame must not land in the middle of it.
            let rest = match s.frames.pop_front() {
                Some(rest @ OutFrame::Rest(_)) => Some(rest),
                _ => None,
            };
            s.frames = rest.into_iter().collect();
        }
        drop(s);
        self.ready.notify_one();
        self.closing.notify_one();
    }

    /// The close asked for, if any (the first request wins).
    pub fn close_request(&self) -> Option<CloseRequest> {
        self.lock().close
    }

    /// Payload bytes queued and not yet taken by the writer: when the close
    /// was asked for, once it was (for the close log).
    pub fn queued_bytes(&self) -> usize {
        let s = self.lock();
        match s.close {
            Some(_) => s.queued_at_close,
            None => payload_bytes(&s.frames),
        }
    }

    /// Whether a close was requested.
    pub fn is_closing(&self) -> bool {
        self.lock().close.is_some()
    }

    /// Waits until a close is requested; returns the moment by which the
    /// connection must be gone ([`CLOSE_GRACE`] after the request), whether
    /// the peer has read its close frame or not.
    pub async fn closing(&self) -> Instant {
        loop {
            if let Some(at) = self.lock().close_requested_at {
                return at + CLOSE_GRACE;
            }
            self.closing.notified().await;
        }
    }

    /// Waits for work and takes all of it, with the write half (`None` once
    /// it is detached).
    pub async fn next_batch(&self) -> (Batch, Option<Sink>) {
        loop {
            {
                let mut s = self.lock();
                let close = if s.close.is_some() && !s.close_taken {
                    s.close_taken = true;
                    s.close
                } else {
                    None
                };
                if close.is_some()
                    || !s.frames.is_empty()
                    || !s.control.is_empty()
                    || s.ping
                    || s.unflushed
                {
                    let frames = std::mem::take(&mut s.frames);
                    s.in_flight = frames.len();
                    s.unflushed = false;
                    let sink = match std::mem::replace(&mut s.sink, SinkSlot::Taken) {
                        SinkSlot::Parked(sink) => Some(sink),
                        other => {
                            s.sink = other;
                            None
                        }
                    };
                    let batch = Batch {
                        ping: std::mem::take(&mut s.ping),
                        control: std::mem::take(&mut s.control),
                        frames,
                        close,
                    };
                    return (batch, sink);
                }
            }
            self.ready.notified().await;
        }
    }

    /// The writer finished writing the last batch's frames and gives the
    /// write half back.
    pub fn batch_written(&self, sink: Sink) {
        let mut s = self.lock();
        s.in_flight = 0;
        s.sink = SinkSlot::Parked(sink);
    }

    /// Frames queued or being written.
    #[cfg(test)]
    fn len(&self) -> usize {
        let s = self.lock();
        s.frames.len() + s.in_flight
    }

    /// Whether nothing is queued or being written.
    #[cfg(test)]
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The payload bytes of `frames`.
fn payload_bytes(frames: &VecDeque<OutFrame>) -> usize {
    frames.iter().map(|f| f.bytes().len()).sum()
}

#[cfg(test)]
mod tests;
