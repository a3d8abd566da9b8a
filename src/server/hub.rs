//! The task that owns the core: feeds it inputs in arrival order, fires its
//! timers, and routes its outputs to the connections' queues.
//!
//! Presence and typing notices may be held for up to `PRESENCE_DELAY_MS`
//! before they are written, so that the notices a connection gets in that
//! time (a join storm into a big room) share one write instead of one
//! each; any other frame queued to the connection takes them along at once,
//! so nothing is reordered and nothing else waits.
//!
//! One task owns the one [`Hub`]; connections talk to it through a bounded
//! channel, so a burst of input waits in the channel (back-pressure on the
//! readers) rather than growing memory.

use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasherDefault, DefaultHasher};
use std::sync::Arc;

use tokio::sync::mpsc;
use tokio::time::Instant;

use super::metrics::Metrics;
use super::outbox::{Outbox, Owed, PushError};
use crate::core::{ConnId, Hub, Inbound, Limits, Output, Stats, Timestamp};
use crate::protocol::CloseCode;

/// Commands from the connections (and the server) to the hub.
#[derive(Debug)]
pub enum HubCommand {
    /// A WebSocket connection was established; frames for it go to `outbox`.
    Connect {
        /// Its number.
        conn: ConnId,
        /// Its outbound queue.
        outbox: Arc<Outbox>,
    },
    /// A message arrived on a connection.
    Inbound {
        /// From where.
        conn: ConnId,
        /// What.
        inbound: Inbound,
        /// When it was read off the socket (for the fan-out histogram).
        received: Instant,
    },
    /// The connection is gone.
    Disconnect {
        /// Which.
        conn: ConnId,
    },
    /// Close every connection with 1001 and refuse new ones.
    Shutdown,
    /// The configuration was reloaded: apply the core's new limits.
    SetLimits(Limits),
    /// The configuration was reloaded: hold notices this long from now on.
    SetPresenceDelay(std::time::Duration),
}

/// Converts between the runtime's monotonic clock and the core's
/// [`Timestamp`]s (Unix milliseconds).
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    start: Instant,
    start_unix_ms: u64,
}

impl Clock {
    /// A clock reading `start_unix_ms` now.
    pub fn new(start_unix_ms: u64) -> Clock {
        Clock {
            start: Instant::now(),
            start_unix_ms,
        }
    }

    /// Now, as the core counts time. Never goes backwards.
    pub fn now(&self) -> Timestamp {
        let elapsed = Instant::now().saturating_duration_since(self.start);
        Timestamp(self.start_unix_ms + elapsed.as_millis() as u64)
    }

    /// The runtime instant at which the core's `at` falls.
    pub fn instant_of(&self, at: Timestamp) -> Instant {
        self.start + std::time::Duration::from_millis(at.0.saturating_sub(self.start_unix_ms))
    }
}

/// Most commands handled before outputs are routed and metrics published.
const BATCH_COMMANDS_MAX: usize = 256;

/// Connections a batch must have queued frames for before their writes are
/// spread over the runtime's worker threads; fewer are written by the hub
/// itself.
pub const PARALLEL_FLUSH_MIN: usize = 32;

/// Chunks of flushes that may wait for one lane; beyond, the hub writes
/// them itself (so a lane that falls behind slows the hub, and nothing
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

struct Driver {
    hub: Hub,
    clock: Clock,
    metrics: Arc<Metrics>,
    /// Each connection's queue (and socket write half). A fixed hasher: the
    /// order in which a crashed hub drops them (closing their sockets) is
    /// the same in every run of a simulation seed.
    outboxes: HashMap<ConnId, Arc<Outbox>, BuildHasherDefault<DefaultHasher>>,
    published: Stats,
    shutting_down: bool,
    /// Messages accepted in this batch, with when they arrived.
    sends: Vec<Instant>,
    /// Connections owed a flush at the end of this batch.
    dirty: Vec<ConnId>,
    /// Connections holding notices, with when the hold ends, oldest first.
    held: VecDeque<(Instant, ConnId)>,
    /// How long notices are held (zero: not at all).
    presence_delay: std::time::Duration,
    lanes: FlushLanes,
}

/// Runs the hub until every sender of `commands` is gone.
pub async fn run(
    hub: Hub,
    mut commands: mpsc::Receiver<HubCommand>,
    clock: Clock,
    metrics: Arc<Metrics>,
    presence_delay: std::time::Duration,
) {
    let published = hub.stats().clone();
    let mut d = Driver {
        hub,
        clock,
        metrics,
        outboxes: HashMap::default(),
        published,
        shutting_down: false,
        sends: Vec::new(),
        dirty: Vec::new(),
        held: VecDeque::new(),
        presence_delay,
        lanes: FlushLanes::start(tokio::runtime::Handle::current().metrics().num_workers()),
    };
    d.finish_batch();
    loop {
        let timer = d.hub.next_deadline().map(|t| d.clock.instant_of(t));
        let hold_ends = d.held.front().map(|&(at, _)| at);
        let deadline = match (timer, hold_ends) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let first = tokio::select! {
            biased;
            command = commands.recv() => match command {
                Some(c) => Some(c),
                None => break,
            },
            () = sleep_until_opt(deadline) => None,
        };
        if let Some(command) = first {
            d.apply(command);
            for _ in 1..BATCH_COMMANDS_MAX {
                match commands.try_recv() {
                    Ok(command) => d.apply(command),
                    Err(_) => break,
                }
            }
        }
        d.hub.tick(d.clock.now());
        d.route();
        d.end_holds();
        d.flush();
        d.finish_batch();
    }
}

async fn sleep_until_opt(deadline: Option<Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

impl Driver {
    fn apply(&mut self, command: HubCommand) {
        let now = self.clock.now();
        match command {
            HubCommand::Connect { conn, outbox } => {
                if self.shutting_down {
                    outbox.close(CloseCode::GoingAway, "server shutting down");
                    return;
                }
                self.outboxes.insert(conn, outbox);
                self.hub.connect(now, conn);
            }
            HubCommand::Inbound {
                conn,
                inbound,
                received,
            } => {
                // Only messages the core accepts count for the fan-out time.
                let accepted = self.hub.stats().messages_accepted;
                self.hub.handle(now, conn, inbound);
                if self.hub.stats().messages_accepted > accepted {
                    self.sends.push(received);
                }
            }
            HubCommand::Disconnect { conn } => {
                self.outboxes.remove(&conn);
                self.hub.disconnect(now, conn);
            }
            HubCommand::Shutdown => {
                self.shutting_down = true;
                // In connection order, so that a run replays exactly.
                let mut open: Vec<_> = self.outboxes.drain().collect();
                open.sort_by_key(|(conn, _)| *conn);
                for (conn, outbox) in open {
                    outbox.close(CloseCode::GoingAway, "server shutting down");
                    self.hub.disconnect(now, conn);
                }
            }
            HubCommand::SetLimits(limits) => self.hub.set_limits(now, limits),
            HubCommand::SetPresenceDelay(delay) => {
                // Holds end by the new delay at the latest; the list stays
                // in order (a cap on ordered deadlines keeps their order).
                let latest = Instant::now() + delay;
                for (at, _) in &mut self.held {
                    *at = (*at).min(latest);
                }
                self.presence_delay = delay;
            }
        }
        // Route after every command so that outputs leave in the order the
        // core produced them, and a slow consumer is forgotten at once.
        self.route();
    }

    /// Hands every output to its connection; closes slow consumers.
    fn route(&mut self) {
        loop {
            let mut slow = Vec::new();
            while let Some(output) = self.hub.poll_output() {
                match output {
                    Output::Frame {
                        conn,
                        frame,
                        notice,
                    } => {
                        let Some(outbox) = self.outboxes.get(&conn) else {
                            continue;
                        };
                        let hold = notice && !self.presence_delay.is_zero();
                        match outbox.queue(frame, hold) {
                            Ok(Owed::Flush) => self.dirty.push(conn),
                            Ok(Owed::FlushLater) => self
                                .held
                                .push_back((Instant::now() + self.presence_delay, conn)),
                            Ok(Owed::Nothing) => {}
                            Err(PushError::Full) => {
                                outbox.close_discarding(CloseCode::TryAgainLater, "slow consumer");
                                self.outboxes.remove(&conn);
                                self.metrics.slow_consumers.inc();
                                slow.push(conn);
                            }
                            Err(PushError::Closed) => {}
                        }
                    }
                    Output::Close { conn, code, reason } => {
                        if let Some(outbox) = self.outboxes.remove(&conn) {
                            outbox.close(code, reason);
                        }
                    }
                }
            }
            if slow.is_empty() {
                return;
            }
            let now = self.clock.now();
            for conn in slow {
                self.hub.disconnect(now, conn);
            }
        }
    }

    /// Connections whose hold has ended join this batch's flushes.
    fn end_holds(&mut self) {
        if self.held.is_empty() {
            return;
        }
        let now = Instant::now();
        while let Some(&(at, conn)) = self.held.front() {
            if at > now {
                break;
            }
            self.held.pop_front();
            if let Some(outbox) = self.outboxes.get(&conn)
                && outbox.end_hold()
            {
                self.dirty.push(conn);
            }
        }
    }

    /// Sends what the batch queued: one write per connection when its
    /// socket is idle and takes it all (see [`Outbox::flush`]), from here or
    /// from the flush lanes.
    fn flush(&mut self) {
        // A connection closed since has its writer woken by the close.
        let spread = self.lanes.spread_worth(self.dirty.len());
        let open = self.dirty.drain(..).filter_map(|c| self.outboxes.get(&c));
        if spread {
            self.lanes.spread(open.cloned().collect());
        } else {
            open.for_each(|o| o.flush());
        }
    }

    fn finish_batch(&mut self) {
        let done = Instant::now();
        for received in self.sends.drain(..) {
            self.metrics
                .fanout_seconds
                .observe(done.saturating_duration_since(received).as_secs_f64());
        }
        let stats = self.hub.stats();
        self.metrics
            .publish(stats, &self.published, self.hub.gauges());
        self.published.clone_from(stats);
    }
}
