//! The connection's writer task: it owns the socket's write half while it
//! writes what the driver's non-blocking flush could not (the rest of a
//! frame the socket took part of, and what came after it), every ping, pong
//! and the close frame, waiting for the socket as long as it must — but
//! never past the close grace once a close was asked for.

use std::time::Duration;

use tokio::time::Instant;

use super::Outbox;
use super::wire::write_batch;

/// Why the writer stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteEnd {
    /// The close frame was written; the connection must be gone by then.
    CloseSent(Instant),
    /// The socket failed, or the close grace ran out before the close frame
    /// was written.
    Abandoned,
}

/// Writes what `outbox` gives it, and a ping every `ping_interval`, until
/// the close frame is out or the connection must be abandoned.
pub async fn write_loop(outbox: &Outbox, ping_interval: Duration) -> WriteEnd {
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
