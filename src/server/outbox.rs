//! A connection's bounded outbound queue, and the socket's write half.
//!
//! The hub pushes frames without ever waiting: when a connection's queue is
//! full the push fails and the hub closes that connection with 1013, so a
//! slow reader never slows the room down and never grows the server's
//! memory.
//!
//! Two ways out. After each batch of commands the hub [`flush`]es the
//! connections it queued frames for (or, when all it queued to one are
//! presence and typing notices, when their hold ends): when no writer is using the socket,
//! everything queued is laid out in one buffer and written at once without
//! waiting (a poll with a no-op waker), so a delivery costs one `write` and
//! no task wake-up. Whatever the socket does not take — and every pong,
//! ping and close — goes to the connection's writer task, which takes
//! everything queued in one go, waits for the socket as long as it must,
//! and gives the write half back when done.
//!
//! The lock is per connection and held only to push, to swap the queue out,
//! or for one non-blocking write: no lock is shared by all connections on the
//! delivery path.
//!
//! [`flush`]: Outbox::flush

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::Mutex;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use bytes::Bytes;
use tokio::io::AsyncWrite;
use tokio::sync::Notify;
use tokio::time::Instant;

use super::frames;
use crate::protocol::CloseCode;

/// A connection's write half, shared by the hub (non-blocking writes while
/// the writer is idle) and the connection's writer task.
pub type Sink = Box<dyn AsyncWrite + Send + Unpin>;

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

/// What the hub owes a connection once it has queued a frame to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Owed {
    /// A flush at the end of this batch.
    Flush,
    /// A flush when the hold on its notices ends.
    FlushLater,
    /// Nothing new: a flush it already owes takes this frame along.
    Nothing,
}

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

/// Where the write half is.
#[derive(Default)]
enum SinkSlot {
    /// Not attached yet, or detached for good.
    #[default]
    None,
    /// Idle: the hub may write to it without waiting.
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
    /// The close was handed to the writer.
    close_taken: bool,
    /// The hub owes this connection a [`flush`](Outbox::flush) (it is on
    /// its list for the end of the batch).
    flush_owed: bool,
    /// The hub holds notices for this connection and will flush it when the
    /// hold ends (see [`Outbox::end_hold`]).
    held: bool,
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

    /// Gives the outbox the socket's write half. Until then, and after
    /// [`detach`](Outbox::detach), nothing can be written.
    pub fn attach(&self, sink: Sink) {
        self.lock().sink = SinkSlot::Parked(sink);
    }

    /// Takes the write half back for good (once the writer is done with it),
    /// so that the socket closes when its owner drops it, however long the
    /// hub keeps this outbox.
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
    pub fn queue(&self, frame: Bytes, hold: bool) -> Result<Owed, PushError> {
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
    pub fn end_hold(&self) -> bool {
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
    pub fn flush(&self) {
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
                *unflushed = write_now(sink, frames);
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

/// Writes the queued frames to `sink` without waiting (a poll with a no-op
/// waker: a socket that is not ready is the writer's to wait for). Frames
/// written whole leave the queue; a frame written in part is replaced by its
/// remaining bytes. Returns whether a flush is still owed.
fn write_now(sink: &mut Sink, queue: &mut VecDeque<OutFrame>) -> bool {
    let mut buf = frames::take_buffer();
    for frame in queue.iter() {
        if frame.bytes().len() >= frames::LARGE_PAYLOAD_BYTES
            || buf.len() >= frames::POOLED_BUFFER_BYTES_MAX
        {
            break;
        }
        frames::put_out_frame(&mut buf, frame);
    }
    let mut cx = Context::from_waker(Waker::noop());
    let mut written = 0;
    while written < buf.len() {
        match Pin::new(&mut *sink).poll_write(&mut cx, &buf[written..]) {
            Poll::Ready(Ok(n)) if n > 0 => written += n,
            // Not ready, or failed: the writer waits, or finds the error.
            _ => break,
        }
    }
    let mut start = 0;
    while start < written {
        let Some(front) = queue.front_mut() else {
            break;
        };
        let end = start + frames::wire_len(front);
        if end > written {
            *front = OutFrame::Rest(Bytes::copy_from_slice(&buf[written..end]));
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
    frames::give_back(buf);
    unflushed
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, DuplexStream};

    fn idle_sink() -> Sink {
        Box::new(tokio::io::sink())
    }

    /// An outbox whose socket takes at most `room` bytes until they are
    /// read from the returned end.
    fn attached(limit: usize, room: usize) -> (Outbox, DuplexStream) {
        let (ours, theirs) = tokio::io::duplex(room);
        let o = Outbox::new(limit);
        o.attach(Box::new(ours));
        (o, theirs)
    }

    /// What the peer has received so far.
    async fn received(peer: &mut DuplexStream) -> Vec<u8> {
        let mut got = vec![0; 1 << 16];
        let n = peer.read(&mut got).await.expect("read");
        got.truncate(n);
        got
    }

    fn wire(frames: &[OutFrame]) -> Vec<u8> {
        let mut buf = Vec::new();
        for f in frames {
            frames::put_out_frame(&mut buf, f);
        }
        buf
    }

    #[tokio::test]
    async fn bounded_and_batched() {
        let o = Outbox::new(3);
        o.attach(idle_sink());
        for i in 0..3 {
            o.push_frame(OutFrame::Text(Bytes::from(vec![i]))).unwrap();
        }
        assert_eq!(
            o.push_frame(OutFrame::Text(Bytes::from_static(b"x"))),
            Err(PushError::Full)
        );
        let (b, sink) = o.next_batch().await;
        assert_eq!(b.frames.len(), 3);
        // Still in flight: the limit counts them.
        assert_eq!(o.len(), 3);
        assert_eq!(
            o.push_frame(OutFrame::Text(Bytes::from_static(b"x"))),
            Err(PushError::Full)
        );
        o.batch_written(sink.expect("the sink goes with the batch"));
        assert_eq!(
            o.push_frame(OutFrame::Text(Bytes::from_static(b"x"))),
            Ok(())
        );
        assert_eq!(o.len(), 1);
    }

    #[tokio::test]
    async fn pending_pongs_are_capped() {
        let o = Outbox::new(8);
        o.attach(idle_sink());
        for i in 0..PENDING_CONTROL_MAX + 5 {
            o.push_control(Control::Pong(Bytes::from(vec![i as u8])));
        }
        let (b, sink) = o.next_batch().await;
        assert_eq!(b.control.len(), PENDING_CONTROL_MAX);
        // The oldest are kept, in order.
        assert_eq!(b.control[0], Control::Pong(Bytes::from(vec![0])));
        o.batch_written(sink.expect("sink"));
        o.push_control(Control::Pong(Bytes::from_static(b"again")));
        assert_eq!(o.next_batch().await.0.control.len(), 1);
    }

    #[tokio::test]
    async fn close_follows_queue_unless_discarding() {
        let o = Outbox::new(8);
        o.push_frame(OutFrame::Text(Bytes::from_static(b"a")))
            .unwrap();
        o.close(CloseCode::Policy, "bye");
        assert_eq!(
            o.push_frame(OutFrame::Text(Bytes::from_static(b"b"))),
            Err(PushError::Closed)
        );
        let (b, _) = o.next_batch().await;
        assert_eq!(b.frames.len(), 1);
        assert_eq!(b.close.unwrap().code, CloseCode::Policy);

        let o = Outbox::new(8);
        o.push_frame(OutFrame::Text(Bytes::from_static(b"a")))
            .unwrap();
        o.close_discarding(CloseCode::TryAgainLater, "slow");
        o.close(CloseCode::Policy, "ignored: first close wins");
        let (b, _) = o.next_batch().await;
        assert!(b.frames.is_empty());
        assert_eq!(b.close.unwrap().code, CloseCode::TryAgainLater);
        o.closing().await;
    }

    #[test]
    fn held_notices_are_owed_one_flush_and_any_other_frame_takes_them_along() {
        let o = Outbox::new(8);
        let f = || Bytes::from_static(b"n");
        // The first held notice is owed a flush when the hold ends; the
        // ones after it ride on that flush.
        assert_eq!(o.queue(f(), true), Ok(Owed::FlushLater));
        assert_eq!(o.queue(f(), true), Ok(Owed::Nothing));
        // Any other frame is owed a flush now, which takes the notices too.
        assert_eq!(o.queue(f(), false), Ok(Owed::Flush));
        assert_eq!(o.queue(f(), false), Ok(Owed::Nothing));
        assert_eq!(o.queue(f(), true), Ok(Owed::Nothing));
        // That flush is owed until it happens (nothing is attached: the
        // frames stay queued for the writer).
        assert!(!o.end_hold(), "a flush is owed already");
        o.flush();
        assert_eq!(o.queue(f(), false), Ok(Owed::Flush));
        o.flush();
        // A hold ending with frames still queued and no flush owed: owed one.
        assert!(o.end_hold());
        assert!(!o.end_hold(), "owed once");
    }

    #[tokio::test]
    async fn a_full_queue_is_offered_to_the_socket_before_a_frame_is_refused() {
        let (o, mut peer) = attached(8, 4096);
        let mut sent = Vec::new();
        // Held notices that fill the queue, then frames of a batch: an idle
        // socket takes them, so nothing is refused.
        for i in 0..10 {
            let f = OutFrame::Text(Bytes::from(format!("frame {i}")));
            o.queue(f.bytes().clone(), i < 8)
                .expect("room made by writing");
            sent.push(f);
        }
        o.flush();
        assert!(o.is_empty());
        assert_eq!(received(&mut peer).await, wire(&sent), "all, in order");
        // A socket that takes nothing: refused once the queue is full.
        let o = Outbox::new(2);
        o.queue(Bytes::from_static(b"a"), false).expect("queued");
        o.queue(Bytes::from_static(b"b"), false).expect("queued");
        assert_eq!(
            o.queue(Bytes::from_static(b"c"), false),
            Err(PushError::Full)
        );
    }

    #[tokio::test]
    async fn held_notices_go_out_in_one_write_when_the_hold_ends() {
        let (o, mut peer) = attached(8, 4096);
        let frames = [
            OutFrame::Text(Bytes::from_static(b"joined")),
            OutFrame::Text(Bytes::from_static(b"left")),
        ];
        for f in &frames {
            o.queue(f.bytes().clone(), true).expect("queued");
        }
        assert_eq!(o.len(), 2, "held, not written");
        assert!(o.end_hold());
        o.flush();
        assert!(o.is_empty());
        assert_eq!(received(&mut peer).await, wire(&frames));
    }

    #[tokio::test]
    async fn flush_writes_an_idle_socket_at_once_without_the_writer() {
        let (o, mut peer) = attached(8, 4096);
        let frames = [
            OutFrame::Text(Bytes::from_static(b"one")),
            OutFrame::Text(Bytes::from(vec![b'2'; 300])),
        ];
        for f in &frames {
            o.queue(f.bytes().clone(), false).expect("queued");
        }
        // Queued, not sent, until the flush.
        assert_eq!(o.len(), 2);
        o.flush();
        assert!(o.is_empty(), "everything went out in the flush");
        assert_eq!(received(&mut peer).await, wire(&frames));
        // Nothing was left for the writer: no batch is waiting.
        let idle = tokio::time::timeout(Duration::from_millis(20), o.next_batch()).await;
        assert!(idle.is_err(), "the writer was woken for nothing");
    }

    #[tokio::test]
    async fn what_the_socket_does_not_take_goes_to_the_writer_in_order() {
        // Room for the first frame and half of the second.
        let frames: Vec<OutFrame> = (0..3)
            .map(|i| OutFrame::Text(Bytes::from(vec![b'a' + i; 100])))
            .collect();
        let room = 102 + 51;
        let (o, mut peer) = attached(8, room);
        for f in &frames {
            o.queue(f.bytes().clone(), false).expect("queued");
        }
        o.flush();
        // The second frame's rest, then the third, are the writer's.
        assert_eq!(o.len(), 2);
        let (batch, sink) = o.next_batch().await;
        assert!(matches!(batch.frames[0], OutFrame::Rest(_)));
        let mut got = received(&mut peer).await;
        assert_eq!(got.len(), room);
        // The hub must not write past the writer while it holds the socket.
        o.queue(Bytes::from_static(b"later"), false)
            .expect("queued");
        o.flush();
        assert_eq!(
            o.len(),
            3,
            "the flush wrote while the writer held the socket"
        );
        let mut sink = sink.expect("sink");
        let mut rest = Vec::new();
        for f in &batch.frames {
            frames::put_out_frame(&mut rest, f);
        }
        let (_, written) = tokio::join!(
            async {
                tokio::io::AsyncWriteExt::write_all(&mut sink, &rest)
                    .await
                    .expect("write")
            },
            async {
                while got.len() < wire(&frames).len() {
                    got.extend(received(&mut peer).await);
                }
            }
        );
        let () = written;
        o.batch_written(sink);
        assert_eq!(got, wire(&frames));
        assert_eq!(o.len(), 1);
    }

    #[tokio::test]
    async fn a_slow_consumer_close_never_cuts_a_frame() {
        let frames: Vec<OutFrame> = (0..3)
            .map(|i| OutFrame::Text(Bytes::from(vec![b'a' + i; 100])))
            .collect();
        let (o, _peer) = attached(8, 150);
        for f in &frames {
            o.queue(f.bytes().clone(), false).expect("queued");
        }
        o.flush();
        o.close_discarding(CloseCode::TryAgainLater, "slow");
        let (batch, _) = o.next_batch().await;
        // The partly written frame is finished; the unwritten one is dropped.
        assert_eq!(batch.frames.len(), 1);
        assert_eq!(batch.frames[0].bytes().len(), 2 * 102 - 150);
        assert!(matches!(batch.frames[0], OutFrame::Rest(_)));
    }

    #[tokio::test]
    async fn a_detached_outbox_writes_nothing() {
        let (o, _peer) = attached(8, 4096);
        assert!(o.detach().is_some());
        o.queue(Bytes::from_static(b"x"), false).expect("queued");
        o.flush();
        assert_eq!(o.len(), 1);
        let (_, sink) = o.next_batch().await;
        assert!(sink.is_none());
    }

    /// A socket that takes everything and keeps it.
    struct Recorder(std::sync::Arc<Mutex<Vec<u8>>>);

    impl AsyncWrite for Recorder {
        fn poll_write(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<std::io::Result<usize>> {
            self.0.lock().expect("recorder").extend_from_slice(buf);
            Poll::Ready(Ok(buf.len()))
        }
        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
            Poll::Ready(Ok(()))
        }
        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    /// What the hub and the writer do to one outbox.
    #[derive(Debug, Clone)]
    enum Op {
        /// The hub queues a frame (a notice it may hold, or not).
        Queue { hold: bool },
        /// The hub's batch ends: it flushes what it owes.
        EndBatch,
        /// The holds the hub keeps for this connection end.
        EndHolds,
        /// A ping falls due (the writer must run before anything else is
        /// written).
        Ping,
        /// The writer runs once, if it has work.
        Writer,
    }

    impl quickcheck::Arbitrary for Op {
        fn arbitrary(g: &mut quickcheck::Gen) -> Op {
            match u8::arbitrary(g) % 10 {
                0..=4 => Op::Queue {
                    hold: bool::arbitrary(g),
                },
                5 | 6 => Op::EndBatch,
                7 => Op::EndHolds,
                8 => Op::Ping,
                _ => Op::Writer,
            }
        }
    }

    /// Follows the hub's side of [`Owed`] over any interleaving: a frame is
    /// never stranded (while the socket is idle, something queued always
    /// has a flush owed or a hold pending), and once the hub pays what it
    /// owes and the writer has run, every frame has been written exactly
    /// once, in order, with no 1013 from holding.
    #[test]
    fn prop_the_owed_protocol_strands_nothing_and_keeps_order() {
        use futures_util::FutureExt;
        fn run(limit: u8, ops: Vec<Op>) -> quickcheck::TestResult {
            let limit = usize::from(limit % 8) + 1;
            let o = Outbox::new(limit);
            let written = std::sync::Arc::new(Mutex::new(Vec::new()));
            o.attach(Box::new(Recorder(written.clone())));
            let (mut owed_flushes, mut holds, mut ping) = (0usize, 0usize, false);
            let mut sent = Vec::new();
            let writer = |o: &Outbox, ping: &mut bool| {
                if let Some((batch, sink)) = o.next_batch().now_or_never() {
                    let mut w = written.lock().expect("recorder");
                    for f in &batch.frames {
                        frames::put_out_frame(&mut w, f);
                    }
                    drop(w);
                    *ping = false;
                    if let Some(sink) = sink {
                        o.batch_written(sink);
                    }
                }
            };
            let end_batch = |o: &Outbox, owed: &mut usize| {
                for _ in 0..std::mem::take(owed) {
                    o.flush();
                }
            };
            let end_holds = |o: &Outbox, holds: &mut usize, owed: &mut usize| {
                for _ in 0..std::mem::take(holds) {
                    if o.end_hold() {
                        *owed += 1;
                    }
                }
            };
            for op in ops {
                match op {
                    Op::Queue { hold } => {
                        let f = OutFrame::Text(Bytes::from(format!("frame {}", sent.len())));
                        match o.queue(f.bytes().clone(), hold) {
                            Ok(Owed::Flush) => owed_flushes += 1,
                            Ok(Owed::FlushLater) => holds += 1,
                            Ok(Owed::Nothing) => {}
                            Err(e) => {
                                // Only a socket the writer holds can leave
                                // a queue full: this one takes everything.
                                if !ping {
                                    return quickcheck::TestResult::error(format!(
                                        "{e:?} with an idle socket"
                                    ));
                                }
                                continue;
                            }
                        }
                        if !hold && owed_flushes == 0 {
                            return quickcheck::TestResult::error(
                                "a frame not held, no flush owed",
                            );
                        }
                        sent.push(f);
                    }
                    Op::EndBatch => end_batch(&o, &mut owed_flushes),
                    Op::EndHolds => end_holds(&o, &mut holds, &mut owed_flushes),
                    Op::Ping => {
                        o.request_ping();
                        ping = true;
                    }
                    Op::Writer => writer(&o, &mut ping),
                }
                if !ping && !o.is_empty() && owed_flushes == 0 && holds == 0 {
                    return quickcheck::TestResult::error(format!(
                        "{} frame(s) queued with no flush owed and no hold pending",
                        o.len()
                    ));
                }
            }
            end_batch(&o, &mut owed_flushes);
            end_holds(&o, &mut holds, &mut owed_flushes);
            end_batch(&o, &mut owed_flushes);
            if !ping && !o.is_empty() {
                return quickcheck::TestResult::error("the hub paid all it owed; frames remain");
            }
            writer(&o, &mut ping);
            if !o.is_empty() {
                return quickcheck::TestResult::error("frames remain after the writer ran");
            }
            let got = written.lock().expect("recorder").clone();
            quickcheck::TestResult::from_bool(got == wire(&sent))
        }
        quickcheck::QuickCheck::new()
            .tests(2_000)
            .quickcheck(run as fn(u8, Vec<Op>) -> quickcheck::TestResult);
    }
}
