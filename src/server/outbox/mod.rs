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
//! ← this file (the queue) ← `flushes` (the driver's lists), `largest`
//! (the driver's index) and `writer` (the task).
//!
//! * `largest.rs` is the driver's index of the connections whose queues
//!   may be the largest, from which it picks whom to close when all queues
//!   together pass `OUTBOUND_MEMORY_MAX_BYTES`.
//!
//! A push never waits: when a connection's queue is full — in frames
//! (`OUTBOUND_QUEUE_LIMIT`) or in bytes (`OUTBOUND_QUEUE_BYTES`, counting
//! what is queued and what its writer took and has not written) — the push
//! fails and the driver closes that connection with 1013, so a slow reader
//! never slows the room down and never grows the server's memory. Every
//! open connection's bytes also add up in one server-wide counter
//! ([`QueuedBytes`], the `chatflow_outbound_queued_bytes` gauge): one
//! relaxed atomic add per frame queued, one subtraction per write. Presence and
//! typing notices may be held for up to `PRESENCE_DELAY_MS` so that the
//! notices a connection gets in that time share one write; any other frame
//! queued to the connection takes them along at once, so nothing is
//! reordered and nothing else waits.

pub mod flushes;
pub mod largest;
pub mod wire;
pub mod writer;

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::Duration;

use bytes::Bytes;
use prometheus_client::metrics::gauge::Gauge;
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::protocol::CloseCode;
pub use wire::{Batch, CloseRequest, Control, OutFrame, Sink};

/// Time a closing connection gets to take its close frame (and what was
/// queued before it) and to answer with its own; then it is dropped. A
/// shutdown's closes get the shutdown grace instead.
pub const CLOSE_GRACE: Duration = Duration::from_secs(5);

/// Control frames (pongs) that may wait to be written; a ping flood from a
/// client that does not read gets no more answers than this until the
/// writer catches up.
pub const PENDING_CONTROL_MAX: usize = 16;

/// Why a push was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PushError {
    /// The queue holds `OUTBOUND_QUEUE_LIMIT` frames, or the frame would
    /// take it past `OUTBOUND_QUEUE_BYTES`: the reader is too slow.
    Full,
    /// The connection is closing; nothing more is sent.
    Closed,
}

/// Why the server closes a connection, or how it ended: the `reason`
/// label of `chatflow_connection_closes_total` and of the close log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cause {
    /// The peer closed (its close frame is answered).
    Client,
    /// The socket went away without a close frame.
    Network,
    /// Nothing arrived for `IDLE_TIMEOUT_MS` (1001).
    IdleTimeout,
    /// A frame or message broke the rules (1002, 1007, 1009).
    Protocol,
    /// The core's rules: the authentication timeout, failed
    /// authentications, an expired token, rate-limit abuse (1008).
    Policy,
    /// The queue passed `OUTBOUND_QUEUE_LIMIT` or `OUTBOUND_QUEUE_BYTES`
    /// (1013).
    SlowConsumer,
    /// The socket accepted no bytes for `WRITE_TIMEOUT_MS` while frames
    /// waited (1013).
    WriteTimeout,
    /// Among the largest queues when all of them together passed
    /// `OUTBOUND_MEMORY_MAX_BYTES` (1013).
    MemoryCap,
    /// The server is shutting down (1001).
    Shutdown,
    /// The server failed (1011).
    ServerError,
    /// The node's cluster lease ran out while Redis did not answer, and the
    /// other nodes took its users out of their rooms (1013: join again).
    LeaseLost,
}

impl Cause {
    /// Every cause, for metrics present from the start.
    pub const ALL: [Cause; 11] = [
        Cause::Client,
        Cause::Network,
        Cause::IdleTimeout,
        Cause::Protocol,
        Cause::Policy,
        Cause::SlowConsumer,
        Cause::WriteTimeout,
        Cause::MemoryCap,
        Cause::Shutdown,
        Cause::ServerError,
        Cause::LeaseLost,
    ];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Cause::Client => "client",
            Cause::Network => "network",
            Cause::IdleTimeout => "idle_timeout",
            Cause::Protocol => "protocol",
            Cause::Policy => "policy",
            Cause::SlowConsumer => "slow_consumer",
            Cause::WriteTimeout => "write_timeout",
            Cause::MemoryCap => "memory_cap",
            Cause::Shutdown => "shutdown",
            Cause::ServerError => "server_error",
            Cause::LeaseLost => "lease_lost",
        }
    }
}

/// A connection's bounds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueLimits {
    /// Frames queued or being written (`OUTBOUND_QUEUE_LIMIT`).
    pub frames: usize,
    /// Bytes of those frames, as laid out on the wire, that the socket has
    /// not accepted (`OUTBOUND_QUEUE_BYTES`).
    pub bytes: usize,
}

impl QueueLimits {
    /// At most `frames` frames, however large.
    pub fn frames(frames: usize) -> QueueLimits {
        QueueLimits {
            frames,
            bytes: usize::MAX,
        }
    }
}

/// The bytes queued to every open connection together, not yet accepted by
/// their sockets: one relaxed atomic shared by every [`Outbox`] (and
/// exported as a gauge). An outbox adds a frame's bytes when it is queued
/// and takes them off as the socket accepts them; a connection that is
/// closing takes all of its bytes off at once, since it queues nothing more
/// and its rest is gone within its close grace — so the server-wide cap
/// weighs only the connections that can still grow.
#[derive(Debug, Clone, Default)]
pub struct QueuedBytes(Gauge);

impl QueuedBytes {
    /// Counts in `gauge` (a fresh counter: [`QueuedBytes::default`]).
    pub fn new(gauge: Gauge) -> QueuedBytes {
        QueuedBytes(gauge)
    }

    /// The total now.
    pub fn get(&self) -> usize {
        usize::try_from(self.0.get()).unwrap_or(0)
    }

    /// Adds `n`; returns the new total.
    fn add(&self, n: usize) -> usize {
        let n = i64::try_from(n).unwrap_or(i64::MAX);
        usize::try_from(self.0.inc_by(n).saturating_add(n)).unwrap_or(0)
    }

    fn sub(&self, n: usize) {
        if n > 0 {
            self.0.dec_by(i64::try_from(n).unwrap_or(i64::MAX));
        }
    }
}

/// What a successful push tells the driver.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pushed {
    /// The server-wide total after the push ([`QueuedBytes`]).
    pub total: usize,
    /// The connection's queue reached this level of the largest-queue
    /// index for the first time since it was last indexed (see
    /// [`largest`]): the driver notes it there.
    pub level: Option<u8>,
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
    /// The wire bytes of `frames`.
    queued_bytes: usize,
    control: Vec<Control>,
    /// Frames taken by the writer and not yet written: they still count
    /// against the limits, so the bounds hold for what the server holds.
    in_flight: usize,
    /// Their wire bytes not yet accepted by the socket.
    in_flight_bytes: usize,
    /// These bytes no longer count in the server-wide total (the
    /// connection is closing, or its socket is gone).
    uncounted: bool,
    /// The level at which the driver's largest-queue index lists this
    /// connection (0: not listed).
    level: u8,
    close: Option<CloseRequest>,
    /// Why the close was asked for.
    cause: Option<Cause>,
    /// The connection's last moment, once a close was requested:
    /// [`CLOSE_GRACE`] after the request, or the shutdown grace's end.
    close_deadline: Option<Instant>,
    /// Payload bytes queued (not yet taken by the writer) when the close
    /// was asked for: what a slow consumer's close dropped, or what the
    /// close frame had to wait behind. For the close log.
    queued_at_close: usize,
    /// The close was handed to the writer.
    close_taken: bool,
    /// The write half was taken back for good: nothing is queued any more.
    detached: bool,
    /// The driver owes this connection a [`flush`](Outbox::flush): it is
    /// on the driver's list ([`flushes`]) for the end of the batch.
    flush_owed: bool,
    /// The driver holds notices for this connection and will flush it when the
    /// hold ends (see [`Outbox::end_hold`]).
    held: bool,
}

impl State {
    /// Bytes the socket has not accepted: queued, or taken by the writer.
    fn held_bytes(&self) -> usize {
        self.queued_bytes + self.in_flight_bytes
    }

    /// Whether nothing is queued or being written.
    fn is_empty(&self) -> bool {
        self.frames.is_empty() && self.in_flight == 0
    }

    /// Whether a frame of `len` wire bytes fits: one always does into an
    /// empty queue.
    fn fits(&self, limits: QueueLimits, len: usize) -> bool {
        self.is_empty()
            || (self.frames.len() + self.in_flight < limits.frames
                && self.held_bytes().saturating_add(len) <= limits.bytes)
    }

    /// `n` bytes left the server (the socket accepted them, or they were
    /// dropped).
    fn release(&mut self, total: &QueuedBytes, n: usize) {
        if !self.uncounted {
            total.sub(n);
        }
    }

    /// Takes this connection's bytes off the server-wide total for good.
    fn uncount(&mut self, total: &QueuedBytes) {
        if !self.uncounted {
            total.sub(self.held_bytes());
            self.uncounted = true;
        }
    }
}

/// Queues smaller than this are not listed in the driver's largest-queue
/// index ([`largest`]) (16 KiB): when every queue is below it and the cap
/// is still passed, the driver looks at every connection instead.
pub const LISTED_MIN_BYTES: usize = 16 * 1024;

/// The level of a queue holding `bytes` in the driver's largest-queue
/// index: the bit length of `bytes`, or 0 (not listed) below
/// [`LISTED_MIN_BYTES`].
fn level_of(bytes: usize) -> u8 {
    if bytes < LISTED_MIN_BYTES {
        0
    } else {
        (usize::BITS - bytes.leading_zeros()) as u8
    }
}

/// One connection's outbound queue. Shared by the driver (pushing), the
/// connection's reader (control frames, closes) and its writer (draining).
#[derive(Debug)]
pub struct Outbox {
    limits: QueueLimits,
    total: QueuedBytes,
    state: Mutex<State>,
    /// Wakes the writer.
    ready: Notify,
    /// Fires once when a close is requested (starts the close grace period).
    closing: Notify,
}

impl Outbox {
    /// An empty queue within `limits`, whose bytes count in `total`.
    pub fn new(limits: QueueLimits, total: QueuedBytes) -> Outbox {
        Outbox {
            limits: QueueLimits {
                frames: limits.frames.max(1),
                bytes: limits.bytes.max(1),
            },
            total,
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
    /// driver keeps this outbox. What is still queued is dropped, and
    /// nothing is queued from now on.
    pub fn detach(&self) -> Option<Sink> {
        let mut s = self.lock();
        s.uncount(&self.total);
        s.detached = true;
        s.frames = VecDeque::new();
        s.queued_bytes = 0;
        match std::mem::take(&mut s.sink) {
            SinkSlot::Parked(sink) => Some(sink),
            SinkSlot::None | SinkSlot::Taken => None,
        }
    }

    /// Queues a data frame of either kind and wakes the writer.
    pub fn push_frame(&self, frame: OutFrame) -> Result<(), PushError> {
        let mut s = self.lock();
        let was_empty = s.frames.is_empty();
        self.append(&mut s, frame)?;
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
    fn queue(&self, frame: Bytes, hold: bool) -> Result<(Owed, Pushed), PushError> {
        let frame = OutFrame::Text(frame);
        let mut s = self.lock();
        if !s.fits(self.limits, wire::wire_len(&frame)) {
            self.write_if_idle(&mut s, true);
        }
        let total = self.append(&mut s, frame)?;
        let level = level_of(s.held_bytes());
        let pushed = Pushed {
            total,
            level: (level > s.level).then(|| {
                s.level = level;
                level
            }),
        };
        let owed = if s.flush_owed || (hold && s.held) {
            Owed::Nothing
        } else if hold {
            s.held = true;
            Owed::FlushLater
        } else {
            s.flush_owed = true;
            Owed::Flush
        };
        Ok((owed, pushed))
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

    /// Appends `frame` within the bounds; returns the server-wide total.
    fn append(&self, s: &mut State, frame: OutFrame) -> Result<usize, PushError> {
        if s.close.is_some() || s.detached {
            return Err(PushError::Closed);
        }
        let len = wire::wire_len(&frame);
        if !s.fits(self.limits, len) {
            return Err(PushError::Full);
        }
        s.frames.push_back(frame);
        s.queued_bytes += len;
        Ok(self.total.add(len))
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
        self.write_if_idle(&mut s, false);
        let wake = !s.frames.is_empty() || s.unflushed;
        drop(s);
        if wake {
            self.ready.notify_one();
        }
    }

    /// Writes what is queued when no writer is using the socket and nothing
    /// must go before it (see [`flush`](Outbox::flush)); large payloads
    /// too if `large` (see [`wire::write_now`]).
    fn write_if_idle(&self, s: &mut State, large: bool) {
        if s.close.is_none() && s.control.is_empty() && !s.ping && !s.unflushed {
            let State {
                sink,
                frames,
                unflushed,
                ..
            } = &mut *s;
            if let SinkSlot::Parked(sink) = sink {
                let (written, still_unflushed) = wire::write_now(sink, frames, large);
                *unflushed = still_unflushed;
                s.queued_bytes -= written;
                s.release(&self.total, written);
            }
        }
    }

    /// Asks the writer to send a ping.
    pub fn request_ping(&self) {
        self.lock().ping = true;
        self.ready.notify_one();
    }

    /// Queues a control frame (not counted against the limits: at most one
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

    /// Asks for the connection to be closed after what is already queued,
    /// within [`CLOSE_GRACE`]. The first request wins.
    pub fn close(&self, cause: Cause, code: CloseCode, reason: &'static str) {
        let until = Instant::now() + CLOSE_GRACE;
        self.request_close(cause, CloseRequest { code, reason }, until, false);
    }

    /// [`close`](Outbox::close), with `until` as the connection's last
    /// moment instead of the close grace: a shutdown gives every connection
    /// the whole shutdown grace to take what is queued for it.
    pub fn close_until(&self, cause: Cause, code: CloseCode, reason: &'static str, until: Instant) {
        self.request_close(cause, CloseRequest { code, reason }, until, false);
    }

    /// Closes a slow consumer: what is queued but not yet written is dropped,
    /// and the close frame follows what the socket already accepted.
    pub fn close_discarding(&self, cause: Cause, code: CloseCode, reason: &'static str) {
        let until = Instant::now() + CLOSE_GRACE;
        self.request_close(cause, CloseRequest { code, reason }, until, true);
    }

    fn request_close(&self, cause: Cause, request: CloseRequest, until: Instant, discard: bool) {
        let mut s = self.lock();
        if s.close.is_some() {
            return;
        }
        s.close = Some(request);
        s.cause = Some(cause);
        s.close_deadline = Some(until);
        s.queued_at_close = payload_bytes(&s.frames);
        // Nothing more is queued: what is left is gone within the grace.
        s.uncount(&self.total);
        if discard {
            // Only the rest of a frame the socket took part of stays: the
            // close frame must not land in the middle of it.
            let rest = match s.frames.pop_front() {
                Some(rest @ OutFrame::Rest(_)) => Some(rest),
                _ => None,
            };
            s.queued_bytes = rest.as_ref().map_or(0, wire::wire_len);
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

    /// Why the close was asked for, if it was.
    pub fn close_cause(&self) -> Option<Cause> {
        self.lock().cause
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

    /// Wire bytes the socket has not accepted yet: queued, or taken by the
    /// writer and not yet written.
    pub fn held_bytes(&self) -> usize {
        self.lock().held_bytes()
    }

    /// Whether a close was requested.
    pub fn is_closing(&self) -> bool {
        self.lock().close.is_some()
    }

    /// For the largest-queue index: if this connection is listed at
    /// `level` and still open, its held bytes and the level they are at now
    /// (which it is listed at from now on). `None`: the entry is stale.
    fn relist(&self, level: u8) -> Option<(usize, u8)> {
        let mut s = self.lock();
        if s.level != level || s.close.is_some() || s.detached {
            return None;
        }
        let held = s.held_bytes();
        s.level = level_of(held);
        Some((held, s.level))
    }

    /// The level this connection is listed at in the largest-queue index.
    fn level(&self) -> u8 {
        self.lock().level
    }

    /// Waits until a close is requested; returns the moment by which the
    /// connection must be gone ([`CLOSE_GRACE`] after the request, or the
    /// end of the shutdown grace), whether the peer has read its close
    /// frame or not.
    pub async fn closing(&self) -> Instant {
        loop {
            if let Some(at) = self.lock().close_deadline {
                return at;
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
                    s.in_flight += frames.len();
                    s.in_flight_bytes += std::mem::take(&mut s.queued_bytes);
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

    /// The writer wrote `frames` frames of its batch, `bytes` wire bytes in
    /// all: they leave the bounds and the server-wide total.
    pub fn written(&self, frames: usize, bytes: usize) {
        let mut s = self.lock();
        s.in_flight = s.in_flight.saturating_sub(frames);
        let bytes = bytes.min(s.in_flight_bytes);
        s.in_flight_bytes -= bytes;
        s.release(&self.total, bytes);
    }

    /// The writer is done with its batch (written, or given up) and gives
    /// the write half back.
    pub fn batch_written(&self, sink: Sink) {
        let mut s = self.lock();
        s.in_flight = 0;
        let rest = std::mem::take(&mut s.in_flight_bytes);
        s.release(&self.total, rest);
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
        self.lock().is_empty()
    }

    /// Whether the writer has been woken and not yet waited since (the
    /// wake-up is kept for it).
    #[cfg(test)]
    fn writer_woken(&self) -> bool {
        use futures_util::FutureExt;
        let woken = self.ready.notified().now_or_never().is_some();
        if woken {
            self.ready.notify_one();
        }
        woken
    }
}

impl Drop for Outbox {
    fn drop(&mut self) {
        // However the connection ended, its bytes leave the total with it.
        let s = self.state.get_mut().unwrap_or_else(|e| e.into_inner());
        s.uncount(&self.total);
    }
}

/// The payload bytes of `frames`.
fn payload_bytes(frames: &VecDeque<OutFrame>) -> usize {
    frames.iter().map(|f| f.bytes().len()).sum()
}

#[cfg(test)]
mod tests;
