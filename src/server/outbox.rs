//! A connection's bounded outbound queue.
//!
//! The hub pushes frames without ever waiting: when a connection's queue is
//! full the push fails and the hub closes that connection with 1013, so a
//! slow reader never slows the room down and never grows the server's
//! memory. The connection's writer takes everything queued in one go and
//! writes it as one batch (one flush, so frames queued back to back leave in
//! as few syscalls as the socket allows).
//!
//! The lock is per connection and held only to push or to swap the queue out:
//! no lock is shared by all connections on the delivery path.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::protocol::CloseCode;

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

/// A queued data frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OutFrame {
    /// A text frame (every frame of the chat protocol).
    Text(Bytes),
    /// A binary frame (test tools such as the Autobahn echo server).
    Binary(Bytes),
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
    /// Control frames first.
    pub control: Vec<Control>,
    /// Then these data frames, in order.
    pub frames: VecDeque<OutFrame>,
    /// Then, once both are written, this close frame, and the writer stops.
    pub close: Option<CloseRequest>,
}

#[derive(Debug, Default)]
struct State {
    frames: VecDeque<OutFrame>,
    control: Vec<Control>,
    /// Frames taken by the writer and not yet written: they still count
    /// against the limit, so the bound holds for what the server holds.
    in_flight: usize,
    close: Option<CloseRequest>,
    /// When the close was requested: the connection's last moment is
    /// [`CLOSE_GRACE`] after it.
    close_requested_at: Option<Instant>,
    /// The close was handed to the writer.
    close_taken: bool,
}

/// One connection's outbound queue. Shared by the hub (pushing), the
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

    /// Queues a text frame.
    pub fn push(&self, frame: Bytes) -> Result<(), PushError> {
        self.push_frame(OutFrame::Text(frame))
    }

    /// Queues a data frame of either kind.
    pub fn push_frame(&self, frame: OutFrame) -> Result<(), PushError> {
        let mut s = self.lock();
        if s.close.is_some() {
            return Err(PushError::Closed);
        }
        if s.frames.len() + s.in_flight >= self.limit {
            return Err(PushError::Full);
        }
        let was_empty = s.frames.is_empty();
        s.frames.push_back(frame);
        drop(s);
        if was_empty {
            self.ready.notify_one();
        }
        Ok(())
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
        if discard {
            s.frames = VecDeque::new();
        }
        drop(s);
        self.ready.notify_one();
        self.closing.notify_one();
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

    /// Waits for work and takes all of it.
    pub async fn next_batch(&self) -> Batch {
        loop {
            {
                let mut s = self.lock();
                let close = if s.close.is_some() && !s.close_taken {
                    s.close_taken = true;
                    s.close
                } else {
                    None
                };
                if close.is_some() || !s.frames.is_empty() || !s.control.is_empty() {
                    let frames = std::mem::take(&mut s.frames);
                    s.in_flight = frames.len();
                    return Batch {
                        control: std::mem::take(&mut s.control),
                        frames,
                        close,
                    };
                }
            }
            self.ready.notified().await;
        }
    }

    /// The writer finished writing the last batch's frames.
    pub fn batch_written(&self) {
        self.lock().in_flight = 0;
    }

    /// Frames queued or being written.
    pub fn len(&self) -> usize {
        let s = self.lock();
        s.frames.len() + s.in_flight
    }

    /// Whether nothing is queued or being written.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn bounded_and_batched() {
        let o = Outbox::new(3);
        for i in 0..3 {
            o.push(Bytes::from(vec![i])).unwrap();
        }
        assert_eq!(o.push(Bytes::from_static(b"x")), Err(PushError::Full));
        let b = o.next_batch().await;
        assert_eq!(b.frames.len(), 3);
        // Still in flight: the limit counts them.
        assert_eq!(o.len(), 3);
        assert_eq!(o.push(Bytes::from_static(b"x")), Err(PushError::Full));
        o.batch_written();
        assert_eq!(o.push(Bytes::from_static(b"x")), Ok(()));
        assert_eq!(o.len(), 1);
    }

    #[tokio::test]
    async fn pending_pongs_are_capped() {
        let o = Outbox::new(8);
        for i in 0..PENDING_CONTROL_MAX + 5 {
            o.push_control(Control::Pong(Bytes::from(vec![i as u8])));
        }
        let b = o.next_batch().await;
        assert_eq!(b.control.len(), PENDING_CONTROL_MAX);
        // The oldest are kept, in order.
        assert_eq!(b.control[0], Control::Pong(Bytes::from(vec![0])));
        o.batch_written();
        o.push_control(Control::Pong(Bytes::from_static(b"again")));
        assert_eq!(o.next_batch().await.control.len(), 1);
    }

    #[tokio::test]
    async fn close_follows_queue_unless_discarding() {
        let o = Outbox::new(8);
        o.push(Bytes::from_static(b"a")).unwrap();
        o.close(CloseCode::Policy, "bye");
        assert_eq!(o.push(Bytes::from_static(b"b")), Err(PushError::Closed));
        let b = o.next_batch().await;
        assert_eq!(b.frames.len(), 1);
        assert_eq!(b.close.unwrap().code, CloseCode::Policy);

        let o = Outbox::new(8);
        o.push(Bytes::from_static(b"a")).unwrap();
        o.close_discarding(CloseCode::TryAgainLater, "slow");
        o.close(CloseCode::Policy, "ignored: first close wins");
        let b = o.next_batch().await;
        assert!(b.frames.is_empty());
        assert_eq!(b.close.unwrap().code, CloseCode::TryAgainLater);
        o.closing().await;
    }
}
