//! The driver's side of the write protocol: which connections are owed a
//! flush, which hold notices and until when, and who does the writing.
//!
//! The driver queues every frame the core outputs through
//! [`Flushes::queue`], which asks the connection's [`Outbox`] what it owes
//! ([`Owed`]) and keeps the list that says so: a flush at the end of this
//! batch, or one when the connection's notice hold ends. Each connection is
//! listed once per batch and once per hold (the outbox's own flags say
//! whether it is listed already), so a batch costs no set and no lookup per
//! frame. At the end of its batch the driver calls [`Flushes::flush`]:
//! holds that are over join the batch's flushes, and every listed outbox is
//! flushed — from the driver's task, or, when there are many, from one
//! flush lane per worker thread.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::{Outbox, Owed, PushError, Pushed};

/// Connections a batch must have queued frames for before their writes are
/// spread over the runtime's worker threads; fewer are written by the
/// driver itself.
pub const PARALLEL_FLUSH_MIN: usize = 32;

/// Chunks of flushes that may wait for one lane; beyond, the driver writes
/// them itself (so a lane that falls behind slows the driver, and nothing
/// piles up).
const LANE_CHUNKS_MAX: usize = 16;

/// Tasks that write a batch's deliveries in parallel, one per worker thread
/// of a multi-threaded runtime (none on a single thread). A delivery's cost
/// is mostly the kernel's work behind one `write`, so this is what lets the
/// fan-out use more than one core while the core itself stays on one task.
struct FlushLanes {
    lanes: Vec<mpsc::Sender<Vec<Arc<Outbox>>>>,
}

impl FlushLanes {
    fn start(workers: usize) -> FlushLanes {
        let lanes = if workers > 1 {
            (0..workers)
                .map(|_| {
                    let (tx, mut rx) = mpsc::channel::<Vec<Arc<Outbox>>>(LANE_CHUNKS_MAX);
                    tokio::spawn(async move {
                        while let Some(chunk) = rx.recv().await {
                            for outbox in chunk {
                                outbox.flush();
                            }
                        }
                    });
                    tx
                })
                .collect()
        } else {
            Vec::new()
        };
        FlushLanes { lanes }
    }

    /// Whether `n` flushes are worth spreading over the lanes.
    fn spread_worth(&self, n: usize) -> bool {
        !self.lanes.is_empty() && n >= PARALLEL_FLUSH_MIN
    }

    /// Splits the flushes of `outboxes` over the lanes (a chunk whose lane is
    /// backed up is flushed here).
    fn spread(&self, outboxes: Vec<Arc<Outbox>>) {
        let per_lane = outboxes.len().div_ceil(self.lanes.len());
        let mut rest = outboxes;
        for lane in &self.lanes {
            let tail = rest.split_off(per_lane.min(rest.len()));
            let chunk = std::mem::replace(&mut rest, tail);
            if let Err(e) = lane.try_send(chunk) {
                let (mpsc::error::TrySendError::Full(chunk)
                | mpsc::error::TrySendError::Closed(chunk)) = e;
                chunk.iter().for_each(|o| o.flush());
            }
        }
    }
}

/// The flushes the driver owes, and the holds it keeps. Owned by the
/// driver's task.
pub struct Flushes {
    /// Owed a flush at the end of this batch.
    owed: Vec<Arc<Outbox>>,
    /// Holding notices, with when the hold ends, oldest first.
    held: VecDeque<(Instant, Arc<Outbox>)>,
    /// How long notices are held (zero: not at all).
    presence_delay: Duration,
    lanes: FlushLanes,
}

impl Flushes {
    /// Holds notices for `presence_delay`; spreads large batches over
    /// `workers` flush lanes when there is more than one worker thread
    /// (lanes are tasks of the current runtime).
    pub fn new(presence_delay: Duration, workers: usize) -> Flushes {
        Flushes {
            owed: Vec::new(),
            held: VecDeque::new(),
            presence_delay,
            lanes: FlushLanes::start(workers),
        }
    }

    /// Queues `frame` to `outbox` without writing it yet. A `notice`
    /// (presence or typing) may be held until the connection's hold ends;
    /// anything else is written at the end of this batch, and takes held
    /// notices along, ahead of it. An error means nothing was queued: the
    /// queue is full (the caller closes the slow consumer) or closing.
    /// Success says what the caller needs for the server-wide cap.
    pub fn queue(
        &mut self,
        outbox: &Arc<Outbox>,
        frame: Bytes,
        notice: bool,
    ) -> Result<Pushed, PushError> {
        let hold = notice && !self.presence_delay.is_zero();
        let (owed, pushed) = outbox.queue(frame, hold)?;
        match owed {
            Owed::Flush => self.owed.push(outbox.clone()),
            Owed::FlushLater => self
                .held
                .push_back((Instant::now() + self.presence_delay, outbox.clone())),
            Owed::Nothing => {}
        }
        Ok(pushed)
    }

    /// Holds notices this long from now on; holds already running end by
    /// the new delay at the latest.
    pub fn set_presence_delay(&mut self, delay: Duration) {
        // The list stays in order: a cap on ordered deadlines keeps their
        // order.
        let latest = Instant::now() + delay;
        for (at, _) in &mut self.held {
            *at = (*at).min(latest);
        }
        self.presence_delay = delay;
    }

    /// When the oldest hold ends, if any is running.
    pub fn next_hold_end(&self) -> Option<Instant> {
        self.held.front().map(|&(at, _)| at)
    }

    /// Ends the holds that are over, then sends what is owed: one write per
    /// connection when its socket is idle and takes it all (see
    /// [`Outbox::flush`]), from here or from the flush lanes.
    pub fn flush(&mut self) {
        if !self.held.is_empty() {
            self.end_holds(Instant::now());
        }
        self.send_owed();
    }

    /// The connections whose hold is over at `now` are owed a flush (if
    /// anything is queued and none is owed already).
    pub(super) fn end_holds(&mut self, now: Instant) {
        while let Some((at, _)) = self.held.front() {
            if *at > now {
                break;
            }
            if let Some((_, outbox)) = self.held.pop_front()
                && outbox.end_hold()
            {
                self.owed.push(outbox);
            }
        }
    }

    /// Flushes every connection owed one.
    pub(super) fn send_owed(&mut self) {
        if self.lanes.spread_worth(self.owed.len()) {
            self.lanes.spread(std::mem::take(&mut self.owed));
        } else {
            self.owed.drain(..).for_each(|o| o.flush());
        }
    }

    /// Whether a flush is owed at the end of this batch.
    #[cfg(test)]
    pub(super) fn owes_a_flush(&self) -> bool {
        !self.owed.is_empty()
    }

    /// Whether no flush is owed and no hold is running.
    #[cfg(test)]
    pub(super) fn is_idle(&self) -> bool {
        self.owed.is_empty() && self.held.is_empty()
    }
}
