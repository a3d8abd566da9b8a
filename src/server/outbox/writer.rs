//! The connection's writer task: it owns the socket's write half while it
//! writes what the driver's non-blocking flush could not (the rest of a
//! frame the socket took part of, and what came after it), every ping, pong
//! and the close frame, waiting for the socket as long as it must — but
//! never past the connection's last moment once a close was asked for
//! (the close grace, or the shutdown grace), and never while the socket
//! accepts no bytes at all for the write timeout.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::AsyncWrite;
use tokio::time::{Instant, Sleep};

use super::wire::{try_close_now, write_batch};
use super::{Cause, Outbox};
use crate::protocol::CloseCode;

/// Why the writer stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteEnd {
    /// The close frame was written; the connection must be gone by then.
    CloseSent(Instant),
    /// The socket failed, accepted nothing for the write timeout, or the
    /// close grace ran out before the close frame was written.
    Abandoned,
}

/// The writer's clocks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WriteTimers {
    /// A ping this often (`PING_INTERVAL_MS`).
    pub ping_interval: Duration,
    /// Give up on a socket that accepts no bytes for this long while frames
    /// wait for it (`WRITE_TIMEOUT_MS`).
    pub write_timeout: Duration,
}

/// Writes what `outbox` gives it, and a ping every `ping_interval`, until
/// the close frame is out or the connection must be abandoned.
pub async fn write_loop(outbox: &Outbox, timers: WriteTimers) -> WriteEnd {
    let kill = async {
        let last_moment = outbox.closing().await;
        tokio::time::sleep_until(last_moment).await;
    };
    tokio::pin!(kill);
    let mut ping =
        tokio::time::interval_at(Instant::now() + timers.ping_interval, timers.ping_interval);
    ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut stall = StallClock::new(timers.write_timeout);
    loop {
        let (mut batch, sink) = tokio::select! {
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
        let mut watched = Watched {
            inner: &mut sink,
            clock: &mut stall,
        };
        let progress = |frames, bytes| outbox.written(frames, bytes);
        let written = tokio::select! {
            biased;
            () = &mut kill => return WriteEnd::Abandoned,
            r = write_batch(&mut watched, &mut batch, progress) => r,
        };
        if let Err(cut) = written {
            if stall.fired {
                // A socket that takes nothing is dropped, whatever the
                // client sends meanwhile. The close frame is tried where it
                // would not land inside a frame: a close already asked for
                // (a shutdown's 1001) keeps its code, otherwise 1013.
                outbox.close_discarding(
                    Cause::WriteTimeout,
                    CloseCode::TryAgainLater,
                    "write timeout",
                );
                if cut.at_boundary
                    && let Some(close) = outbox.close_request()
                {
                    try_close_now(&mut sink, close);
                }
            }
            outbox.batch_written(sink);
            return WriteEnd::Abandoned;
        }
        outbox.batch_written(sink);
        if batch.close.is_some() {
            return WriteEnd::CloseSent(outbox.closing().await);
        }
    }
}

/// Measures how long the socket has accepted nothing while the writer had
/// bytes for it: armed by the first write the socket refuses, disarmed by
/// any byte it accepts. Its timer is allocated the first time the socket
/// makes the writer wait, so a connection that never stalls pays nothing.
struct StallClock {
    timeout: Duration,
    sleep: Option<Pin<Box<Sleep>>>,
    armed: bool,
    /// The socket accepted nothing for `timeout`.
    fired: bool,
}

impl StallClock {
    fn new(timeout: Duration) -> StallClock {
        StallClock {
            timeout,
            sleep: None,
            armed: false,
            fired: false,
        }
    }

    /// The socket is not ready: `Ready` once it has not been for the whole
    /// timeout.
    fn poll_stalled(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let deadline = Instant::now() + self.timeout;
        let sleep = self
            .sleep
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        if !self.armed {
            sleep.as_mut().reset(deadline);
            self.armed = true;
        }
        let stalled = sleep.as_mut().poll(cx);
        if stalled.is_ready() {
            self.fired = true;
        }
        stalled
    }

    /// The socket took bytes (or failed on its own).
    fn progressed(&mut self) {
        self.armed = false;
    }
}

/// The socket's write half, watched by a [`StallClock`]: a write or flush
/// the socket keeps refusing for the clock's timeout fails with
/// `TimedOut`.
struct Watched<'a, W: ?Sized> {
    inner: &'a mut W,
    clock: &'a mut StallClock,
}

impl<W: ?Sized> Watched<'_, W> {
    fn watch<T>(
        &mut self,
        cx: &mut Context<'_>,
        polled: Poll<std::io::Result<T>>,
    ) -> Poll<std::io::Result<T>> {
        match polled {
            Poll::Pending => match self.clock.poll_stalled(cx) {
                Poll::Ready(()) => Poll::Ready(Err(std::io::ErrorKind::TimedOut.into())),
                Poll::Pending => Poll::Pending,
            },
            ready => {
                self.clock.progressed();
                ready
            }
        }
    }
}

impl<W: AsyncWrite + Unpin + ?Sized> AsyncWrite for Watched<'_, W> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let polled = Pin::new(&mut *self.inner).poll_write(cx, buf);
        self.watch(cx, polled)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let polled = Pin::new(&mut *self.inner).poll_flush(cx);
        self.watch(cx, polled)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut *self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    #[tokio::test]
    async fn a_write_the_socket_refuses_for_the_timeout_fails() {
        // A pipe with room for 4 bytes, never read.
        let (mut ours, _theirs) = tokio::io::duplex(4);
        let mut clock = StallClock::new(Duration::from_millis(200));
        let mut w = Watched {
            inner: &mut ours,
            clock: &mut clock,
        };
        let started = Instant::now();
        let e = w.write_all(b"12345678").await.expect_err("times out");
        assert_eq!(e.kind(), std::io::ErrorKind::TimedOut);
        assert!(started.elapsed() >= Duration::from_millis(200));
        assert!(clock.fired);
    }

    #[tokio::test]
    async fn any_byte_accepted_restarts_the_clock() {
        // The peer reads one byte every 100 ms: 400 ms for the four, longer
        // than the timeout, but never stalled for it.
        let (mut ours, mut theirs) = tokio::io::duplex(1);
        let reader = tokio::spawn(async move {
            use tokio::io::AsyncReadExt;
            let mut got = Vec::new();
            let mut byte = [0];
            while got.len() < 5 {
                tokio::time::sleep(Duration::from_millis(100)).await;
                theirs.read_exact(&mut byte).await.expect("read");
                got.push(byte[0]);
            }
            got
        });
        let mut clock = StallClock::new(Duration::from_millis(350));
        let mut w = Watched {
            inner: &mut ours,
            clock: &mut clock,
        };
        w.write_all(b"abcde").await.expect("slow, not stalled");
        assert!(!clock.fired);
        assert_eq!(reader.await.expect("reader"), b"abcde");
    }
}
