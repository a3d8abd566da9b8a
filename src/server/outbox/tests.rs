//! The write protocol's tests: the outbox alone, the two ways of writing,
//! and a property over the driver's and the writer's side together.

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use fastwebsockets::OpCode;
use tokio::io::{AsyncReadExt, AsyncWrite, DuplexStream};
use tokio::time::Instant;

use super::flushes::Flushes;
use super::wire::{self, write_batch};
use super::*;
use crate::protocol::CloseCode;

/// An outbox bounded in frames only, counting on its own.
fn outbox(limit: usize) -> Outbox {
    Outbox::new(QueueLimits::frames(limit), QueuedBytes::default())
}

/// What queuing a frame owes.
fn owed(o: &Outbox, frame: Bytes, hold: bool) -> Result<Owed, PushError> {
    o.queue(frame, hold).map(|(owed, _)| owed)
}

fn idle_sink() -> Sink {
    Box::new(tokio::io::sink())
}

/// An outbox whose socket takes at most `room` bytes until they are
/// read from the returned end.
fn attached(limit: usize, room: usize) -> (Outbox, DuplexStream) {
    let (ours, theirs) = tokio::io::duplex(room);
    let o = outbox(limit);
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

fn laid_out(frames: &[OutFrame]) -> Vec<u8> {
    let mut buf = Vec::new();
    for f in frames {
        wire::put_out_frame(&mut buf, f);
    }
    buf
}

#[tokio::test]
async fn bounded_and_batched() {
    let o = outbox(3);
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
    let o = outbox(8);
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
    let o = outbox(8);
    o.push_frame(OutFrame::Text(Bytes::from_static(b"a")))
        .unwrap();
    o.close(Cause::Policy, CloseCode::Policy, "bye");
    assert_eq!(
        o.push_frame(OutFrame::Text(Bytes::from_static(b"b"))),
        Err(PushError::Closed)
    );
    let (b, _) = o.next_batch().await;
    assert_eq!(b.frames.len(), 1);
    assert_eq!(b.close.unwrap().code, CloseCode::Policy);

    let o = outbox(8);
    o.push_frame(OutFrame::Text(Bytes::from_static(b"a")))
        .unwrap();
    o.close_discarding(Cause::SlowConsumer, CloseCode::TryAgainLater, "slow");
    o.close(
        Cause::Policy,
        CloseCode::Policy,
        "ignored: first close wins",
    );
    let (b, _) = o.next_batch().await;
    assert!(b.frames.is_empty());
    assert_eq!(b.close.unwrap().code, CloseCode::TryAgainLater);
    o.closing().await;
}

#[test]
fn held_notices_are_owed_one_flush_and_any_other_frame_takes_them_along() {
    let o = outbox(8);
    let f = || Bytes::from_static(b"n");
    // The first held notice is owed a flush when the hold ends; the
    // ones after it ride on that flush.
    assert_eq!(owed(&o, f(), true), Ok(Owed::FlushLater));
    assert_eq!(owed(&o, f(), true), Ok(Owed::Nothing));
    // Any other frame is owed a flush now, which takes the notices too.
    assert_eq!(owed(&o, f(), false), Ok(Owed::Flush));
    assert_eq!(owed(&o, f(), false), Ok(Owed::Nothing));
    assert_eq!(owed(&o, f(), true), Ok(Owed::Nothing));
    // That flush is owed until it happens (nothing is attached: the
    // frames stay queued for the writer).
    assert!(!o.end_hold(), "a flush is owed already");
    o.flush();
    assert_eq!(owed(&o, f(), false), Ok(Owed::Flush));
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
    assert_eq!(received(&mut peer).await, laid_out(&sent), "all, in order");
    // A socket that takes nothing: refused once the queue is full.
    let o = outbox(2);
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
    assert_eq!(received(&mut peer).await, laid_out(&frames));
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
    assert_eq!(received(&mut peer).await, laid_out(&frames));
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
    // The driver must not write past the writer while it holds the socket.
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
        wire::put_out_frame(&mut rest, f);
    }
    let (_, written) = tokio::join!(
        async {
            tokio::io::AsyncWriteExt::write_all(&mut sink, &rest)
                .await
                .expect("write")
        },
        async {
            while got.len() < laid_out(&frames).len() {
                got.extend(received(&mut peer).await);
            }
        }
    );
    let () = written;
    o.batch_written(sink);
    assert_eq!(got, laid_out(&frames));
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
    o.close_discarding(Cause::SlowConsumer, CloseCode::TryAgainLater, "slow");
    let (batch, _) = o.next_batch().await;
    // The partly written frame is finished; the unwritten one is dropped.
    assert_eq!(batch.frames.len(), 1);
    assert_eq!(batch.frames[0].bytes().len(), 2 * 102 - 150);
    assert!(matches!(batch.frames[0], OutFrame::Rest(_)));
}

#[tokio::test]
async fn a_detached_outbox_writes_nothing() {
    let (o, _peer) = attached(8, 4096);
    o.queue(Bytes::from_static(b"before"), false)
        .expect("queued");
    assert!(o.detach().is_some());
    // What was queued is dropped, and nothing more is taken.
    assert!(o.is_empty());
    assert_eq!(
        o.queue(Bytes::from_static(b"x"), false).map(|_| ()),
        Err(PushError::Closed)
    );
    o.flush();
    o.request_ping();
    let (_, sink) = o.next_batch().await;
    assert!(sink.is_none());
}

/// What a peer reads: the frames in `wire`, as (opcode, payload).
fn frames_on(mut wire: &[u8]) -> Vec<(OpCode, Vec<u8>)> {
    let mut out = Vec::new();
    while !wire.is_empty() {
        let head = crate::frame::parse_head(wire, usize::MAX)
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
    let outbox = self::outbox(8);
    outbox.attach(Box::new(ours));
    let texts: Vec<Bytes> = (0..3u8).map(|i| Bytes::from(vec![b'a' + i; 100])).collect();
    for t in &texts {
        outbox.queue(t.clone(), false).expect("queued");
    }
    // The socket takes the first frame and half of the second ...
    outbox.flush();
    // ... and a ping arrives before the writer runs.
    outbox.push_control(Control::Pong(Bytes::from_static(b"pp")));
    let (mut batch, sink) = outbox.next_batch().await;
    let mut sink = sink.expect("sink");
    let mut wire = Vec::new();
    let read_all = async {
        let mut chunk = vec![0; 4096];
        while wire.len() < 3 * 102 + 4 {
            let n = peer.read(&mut chunk).await.expect("read");
            wire.extend_from_slice(&chunk[..n]);
        }
    };
    let (written, ()) = tokio::join!(
        write_batch(&mut sink, &mut batch, |f, b| outbox.written(f, b)),
        read_all
    );
    written.expect("write");
    assert!(outbox.is_empty(), "every frame was reported written");
    assert_eq!(outbox.held_bytes(), 0);
    let got = frames_on(&wire);
    let expected: Vec<(OpCode, Vec<u8>)> = vec![
        (OpCode::Text, texts[0].to_vec()),
        (OpCode::Text, texts[1].to_vec()),
        (OpCode::Pong, b"pp".to_vec()),
        (OpCode::Text, texts[2].to_vec()),
    ];
    assert_eq!(got, expected);
}

/// What the driver, the writer and the peer do to one outbox.
#[derive(Debug, Clone)]
enum Op {
    /// The driver queues a frame of `size` payload bytes (a notice it may
    /// hold, or not).
    Queue { hold: bool, size: usize },
    /// The driver's batch ends: it flushes what it owes.
    EndBatch,
    /// The holds the driver keeps for this connection end.
    EndHolds,
    /// A ping falls due (the writer must run before anything else is
    /// written).
    Ping,
    /// The writer runs once, if it has work (the peer reads all it writes).
    Writer,
    /// The peer reads: the socket has room for this many more bytes.
    Read(usize),
}

impl quickcheck::Arbitrary for Op {
    fn arbitrary(g: &mut quickcheck::Gen) -> Op {
        match u8::arbitrary(g) % 12 {
            0..=4 => Op::Queue {
                hold: bool::arbitrary(g),
                // Small frames mostly; some over the size the driver's
                // flush leaves to the writer.
                size: match u8::arbitrary(g) % 10 {
                    0..=5 => usize::from(u8::arbitrary(g)),
                    6..=8 => 300 + usize::from(u16::arbitrary(g)) % 5_000,
                    _ => wire::LARGE_PAYLOAD_BYTES + usize::from(u16::arbitrary(g)) % 30_000,
                },
            },
            5 | 6 => Op::EndBatch,
            7 => Op::EndHolds,
            8 => Op::Ping,
            9 => Op::Writer,
            _ => Op::Read(usize::from(u16::arbitrary(g))),
        }
    }
}

/// A frame of `size` bytes, numbered `n` in its first bytes.
fn numbered(n: usize, size: usize) -> OutFrame {
    let mut payload = format!("frame {n} ").into_bytes();
    payload.resize(payload.len().max(size), b'.');
    OutFrame::Text(Bytes::from(payload))
}

/// A socket with room for `room` more bytes until the peer reads again.
#[derive(Clone, Default)]
struct Pipe {
    got: Arc<Mutex<Vec<u8>>>,
    room: Arc<Mutex<usize>>,
}

impl Pipe {
    fn room(&self) -> std::sync::MutexGuard<'_, usize> {
        self.room.lock().expect("pipe")
    }
}

impl AsyncWrite for Pipe {
    fn poll_write(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let mut room = self.room();
        let n = (*room).min(buf.len());
        if n == 0 {
            return Poll::Pending;
        }
        *room -= n;
        self.got.lock().expect("pipe").extend_from_slice(&buf[..n]);
        Poll::Ready(Ok(n))
    }
    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

/// Plays the write protocol — [`Flushes`] on the driver's side, the
/// [`Outbox`] and its writer on the connection's, a peer that reads when
/// it likes — over any interleaving, with frames of every size and both
/// bounds. Always: the queue holds at most `OUTBOUND_QUEUE_BYTES` (or one
/// frame that came into an empty queue), every byte is accounted for (what
/// the outbox and the server-wide total say it holds is exactly what was
/// queued less what the peer got), and a frame is refused only when the
/// socket did not take what was queued. While the socket takes everything,
/// a frame is never stranded (something queued always has a flush owed, a
/// hold pending or the writer woken). At the end, once the peer reads and
/// the driver pays what it owes and the writer has run, every frame has
/// been written exactly once, in order.
#[test]
fn prop_the_write_protocol_keeps_both_bounds_strands_nothing_and_keeps_order() {
    use futures_util::FutureExt;
    fn run(frames_limit: u8, kib_limit: u8, ops: Vec<Op>) -> quickcheck::TestResult {
        let limits = QueueLimits {
            frames: usize::from(frames_limit % 8) + 1,
            bytes: (usize::from(kib_limit % 64) + 1) * 1024,
        };
        let total = QueuedBytes::default();
        let o = Arc::new(Outbox::new(limits, total.clone()));
        let pipe = Pipe::default();
        *pipe.room() = usize::MAX / 2;
        o.attach(Box::new(pipe.clone()));
        // Holds end only when the test says so.
        let mut flushes = Flushes::new(Duration::from_secs(3600), 1);
        let hold_over = || Instant::now() + Duration::from_secs(7200);
        let mut ping = false;
        // The peer read everything so far, and had room for more.
        let mut bottomless = true;
        let mut sent = Vec::new();
        let mut pings = 0;
        let writer = |o: &Outbox, ping: &mut bool, pings: &mut usize| {
            if let Some((mut batch, sink)) = o.next_batch().now_or_never() {
                let Some(mut sink) = sink else {
                    return Err("no sink for the writer".to_owned());
                };
                // The peer reads all the writer writes.
                let room = std::mem::replace(&mut *pipe.room(), usize::MAX / 2);
                *pings += usize::from(batch.ping);
                let done =
                    write_batch(&mut sink, &mut batch, |f, b| o.written(f, b)).now_or_never();
                *pipe.room() = room;
                if !matches!(done, Some(Ok(()))) {
                    return Err(format!("the writer could not write: {done:?}"));
                }
                *ping = false;
                o.batch_written(sink);
            }
            Ok(())
        };
        for op in ops {
            match op {
                Op::Queue { hold, size } => {
                    let f = numbered(sent.len(), size);
                    if let Err(e) = flushes.queue(&o, f.bytes().clone(), hold) {
                        // Only a socket that did not take what was queued
                        // (the writer holds it, or it is full) leaves a
                        // queue full.
                        if !ping && *pipe.room() > 0 {
                            return quickcheck::TestResult::error(format!(
                                "{e:?} though the socket had room"
                            ));
                        }
                        continue;
                    }
                    if !hold && !flushes.owes_a_flush() {
                        return quickcheck::TestResult::error("a frame not held, no flush owed");
                    }
                    sent.push(f);
                }
                Op::EndBatch => flushes.send_owed(),
                Op::EndHolds => flushes.end_holds(hold_over()),
                Op::Ping => {
                    o.request_ping();
                    ping = true;
                }
                Op::Writer => {
                    if let Err(e) = writer(&o, &mut ping, &mut pings) {
                        return quickcheck::TestResult::error(e);
                    }
                }
                Op::Read(n) => {
                    bottomless = false;
                    *pipe.room() = n;
                }
            }
            let held = o.held_bytes();
            if held > limits.bytes && o.len() > 1 {
                return quickcheck::TestResult::error(format!(
                    "{held} bytes in {} frames held, the bound is {}",
                    o.len(),
                    limits.bytes
                ));
            }
            let got = pipe.got.lock().expect("pipe").len() - 2 * pings;
            if held != laid_out(&sent).len() - got || total.get() != held {
                return quickcheck::TestResult::error(format!(
                    "held {held}, total {}, queued {} less received {got}",
                    total.get(),
                    laid_out(&sent).len()
                ));
            }
            if bottomless && !ping && !o.is_empty() && flushes.is_idle() && !o.writer_woken() {
                return quickcheck::TestResult::error(format!(
                    "{} frame(s) queued with no flush owed, no hold pending, the writer asleep",
                    o.len()
                ));
            }
        }
        *pipe.room() = usize::MAX / 2;
        flushes.send_owed();
        flushes.end_holds(hold_over());
        flushes.send_owed();
        if bottomless && !ping && !o.is_empty() && !o.writer_woken() {
            return quickcheck::TestResult::error(
                "the driver paid all it owed; frames remain and the writer sleeps",
            );
        }
        if let Err(e) = writer(&o, &mut ping, &mut pings) {
            return quickcheck::TestResult::error(e);
        }
        if !o.is_empty() || o.held_bytes() != 0 || total.get() != 0 {
            return quickcheck::TestResult::error("frames remain after the writer ran");
        }
        let got = pipe.got.lock().expect("pipe").clone();
        let data: Vec<(OpCode, Vec<u8>)> = frames_on(&got)
            .into_iter()
            .filter(|(op, _)| *op != OpCode::Ping)
            .collect();
        let expected: Vec<(OpCode, Vec<u8>)> = sent
            .iter()
            .map(|f| (OpCode::Text, f.bytes().to_vec()))
            .collect();
        quickcheck::TestResult::from_bool(data == expected)
    }
    quickcheck::QuickCheck::new()
        .tests(2_000)
        .quickcheck(run as fn(u8, u8, Vec<Op>) -> quickcheck::TestResult);
}

#[test]
fn the_bytes_queued_when_a_close_is_asked_for_are_kept_for_the_log() {
    let frame = || Bytes::from(vec![b'x'; 100]);
    let o = outbox(8);
    for _ in 0..3 {
        o.push_frame(OutFrame::Text(frame())).expect("queued");
    }
    assert_eq!(o.queued_bytes(), 300);
    // A slow consumer's close drops them; the log still says how many.
    o.close_discarding(
        Cause::SlowConsumer,
        CloseCode::TryAgainLater,
        "slow consumer",
    );
    assert_eq!(o.queued_bytes(), 300);
    let o = outbox(8);
    o.push_frame(OutFrame::Text(frame())).expect("queued");
    o.close(Cause::Client, CloseCode::Normal, "");
    // A later push is refused and does not count.
    assert_eq!(
        o.push_frame(OutFrame::Text(frame())),
        Err(PushError::Closed)
    );
    assert_eq!(o.queued_bytes(), 100);
}
