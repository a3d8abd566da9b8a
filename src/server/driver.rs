//! The driver: the one task that owns the core. It feeds the core inputs in
//! arrival order, fires its timers, and routes its outputs to the
//! connections' queues; how and when those are written is the outbound
//! path's business ([`Flushes`], [`Outbox`]).
//!
//! Its run loop, in the style of str0m's and quinn-proto's: wait for a
//! command or the next deadline (the core's next timer, or the end of the
//! oldest notice hold); apply up to [`BATCH_COMMANDS_MAX`] commands, routing
//! the core's outputs after each; tick the core's timers; flush what the
//! batch owes; publish metrics. Connections talk to it through a bounded
//! channel, so a burst of input waits in the channel (back-pressure on the
//! readers) rather than growing memory.
//!
//! It also keeps the outbound bounds: a connection whose queue is full is
//! closed with 1013 (a slow consumer), and when a push takes every queue
//! together past `OUTBOUND_MEMORY_MAX_BYTES` the connections with the
//! largest queues are closed with 1013 until the total is under it again,
//! found through [`LargestQueues`].

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, DefaultHasher};
use std::sync::Arc;

use tokio::sync::mpsc;
use tokio::time::Instant;
use tracing::{debug, warn};

use super::clock::Clock;
use super::cluster::{Back, Link};
use super::metrics::Metrics;
use super::outbox::flushes::Flushes;
use super::outbox::largest::LargestQueues;
use super::outbox::{Cause, Outbox, PushError};
use crate::core::{ConnId, Gauges, Hub, Inbound, Limits, Output, STORE_RETRY_AFTER_MS, Stats};
use crate::protocol::CloseCode;
use crate::store::local::Local;

/// The core and its store: in this process, or Redis through a [`Link`].
#[derive(Debug)]
pub enum Node {
    /// One node: its store answers within the same call.
    Local(Local),
    /// A node of a cluster.
    Cluster {
        /// The core.
        hub: Hub,
        /// The way to Redis.
        link: Link,
    },
}

impl Node {
    /// The next frame or close: store operations on the way go to the
    /// store (answered at once by a local one, handed to the link by a
    /// cluster node).
    fn poll_output(&mut self) -> Option<Output> {
        match self {
            Node::Local(local) => local.poll_output(),
            Node::Cluster { hub, link } => loop {
                match hub.poll_output()? {
                    Output::Store { id, op } => link.store(id, op),
                    Output::Subscribe { room } => link.subscribe(room),
                    Output::Unsubscribe { room } => link.unsubscribe(room),
                    other => return Some(other),
                }
            },
        }
    }

    /// Current gauges (`rooms`: every room with one node, the rooms this
    /// node has connections in with a cluster).
    fn gauges(&self) -> Gauges {
        match self {
            Node::Local(local) => local.gauges(),
            Node::Cluster { hub, .. } => hub.gauges(),
        }
    }

    /// What the link has for the hub; never, with one node.
    async fn back(&mut self) -> Back {
        match self {
            Node::Local(_) => std::future::pending().await,
            Node::Cluster { link, .. } => link.next().await,
        }
    }

    /// What the link has for the hub now, without waiting.
    fn try_back(&mut self) -> Option<Back> {
        match self {
            Node::Local(_) => None,
            Node::Cluster { link, .. } => link.try_next(),
        }
    }
}

impl std::ops::Deref for Node {
    type Target = Hub;

    fn deref(&self) -> &Hub {
        match self {
            Node::Local(local) => local,
            Node::Cluster { hub, .. } => hub,
        }
    }
}

impl std::ops::DerefMut for Node {
    fn deref_mut(&mut self) -> &mut Hub {
        match self {
            Node::Local(local) => local,
            Node::Cluster { hub, .. } => hub,
        }
    }
}

/// Commands from the connections (and the server) to the driver.
#[derive(Debug)]
pub enum Command {
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
    /// Close every connection with 1001 after what is queued for it, and
    /// refuse new ones; each may take until `until` (the end of the
    /// shutdown grace) to get its frames.
    Shutdown {
        /// The end of the shutdown grace.
        until: Instant,
    },
    /// Answer `done` once no store operation is waiting (at once with one
    /// node): the last thing before the process exits, so that what the
    /// drain asked of Redis (every connection leaving its rooms) is done.
    Settle {
        /// Answered when nothing waits.
        done: tokio::sync::oneshot::Sender<()>,
    },
    /// The configuration was reloaded: apply the core's new limits, hold
    /// notices for `presence_delay` and cap all queues together at
    /// `memory_max_bytes` from now on.
    Reconfigure {
        /// The core's limits.
        limits: Limits,
        /// How long presence and typing notices may be held.
        presence_delay: std::time::Duration,
        /// `OUTBOUND_MEMORY_MAX_BYTES`.
        memory_max_bytes: usize,
    },
}

/// Most commands handled before outputs are routed and metrics published.
const BATCH_COMMANDS_MAX: usize = 256;

struct Driver {
    core: Node,
    clock: Clock,
    metrics: Arc<Metrics>,
    /// Each connection's queue (and socket write half). A fixed hasher: the
    /// order in which a crashed driver drops them (closing their sockets) is
    /// the same in every run of a simulation seed.
    outboxes: HashMap<ConnId, Arc<Outbox>, BuildHasherDefault<DefaultHasher>>,
    /// The core's counters as last published.
    published: Stats,
    /// The end of the shutdown grace, once shutdown began.
    shutting_down: Option<Instant>,
    /// `OUTBOUND_MEMORY_MAX_BYTES`.
    memory_max_bytes: usize,
    /// Who may hold the largest queues.
    largest: LargestQueues<ConnId>,
    /// Messages accepted in this batch, with when they arrived.
    sends: Vec<Instant>,
    /// What the batch owes the connections, and the notice holds.
    flushes: Flushes,
    /// Who waits for the store to have answered everything.
    settling: Vec<tokio::sync::oneshot::Sender<()>>,
}

/// Runs the driver until every sender of `commands` is gone.
pub async fn run(
    hub: Node,
    mut commands: mpsc::Receiver<Command>,
    clock: Clock,
    metrics: Arc<Metrics>,
    presence_delay: std::time::Duration,
    memory_max_bytes: usize,
) {
    let published = hub.stats().clone();
    let mut d = Driver {
        core: hub,
        clock,
        metrics,
        outboxes: HashMap::default(),
        published,
        shutting_down: None,
        memory_max_bytes,
        largest: LargestQueues::default(),
        sends: Vec::new(),
        flushes: Flushes::new(
            presence_delay,
            tokio::runtime::Handle::current().metrics().num_workers(),
        ),
        settling: Vec::new(),
    };
    d.finish_batch();
    loop {
        let timer = d.core.next_deadline().map(|t| d.clock.instant_of(t));
        let hold_ends = d.flushes.next_hold_end();
        let deadline = match (timer, hold_ends) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let first = tokio::select! {
            biased;
            command = commands.recv() => match command {
                Some(c) => Some(Ok(c)),
                None => break,
            },
            back = d.core.back() => Some(Err(back)),
            () = sleep_until_opt(deadline) => None,
        };
        let mut applied = 0;
        let woken = first.is_some();
        match first {
            Some(Ok(command)) => {
                d.apply(command);
                applied = 1;
            }
            Some(Err(back)) => d.hear(back),
            None => {}
        }
        if woken {
            while applied < BATCH_COMMANDS_MAX {
                match commands.try_recv() {
                    Ok(command) => d.apply(command),
                    Err(_) => break,
                }
                applied += 1;
            }
            for _ in 0..BATCH_COMMANDS_MAX {
                let Some(back) = d.core.try_back() else { break };
                d.hear(back);
            }
        }
        debug!(commands = applied, "batch");
        d.core.tick(d.clock.now());
        d.route();
        d.flushes.flush();
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
    /// What the store said (a cluster node's).
    fn hear(&mut self, back: Back) {
        let now = self.clock.now();
        match back {
            Back::Reply(id, reply) => self.core.store_reply(now, id, reply),
            Back::Failed(id) => self.core.store_failed(now, id, STORE_RETRY_AFTER_MS),
            Back::Event(event) => self.core.store_event(now, event),
            Back::Resync(room) => self.core.store_resync(now, room.as_deref()),
            Back::LeaseLost => {
                let mut open: Vec<_> = self.outboxes.drain().collect();
                open.sort_by_key(|(conn, _)| *conn);
                for (conn, outbox) in open {
                    outbox.close(Cause::LeaseLost, CloseCode::TryAgainLater, "node rejoining");
                    self.core.disconnect(now, conn);
                }
            }
        }
        // A send accepted here is not timed: `message_fanout_seconds`
        // counts single-node sends; a cluster's Redis calls are timed by
        // the link.
        self.route();
    }

    fn apply(&mut self, command: Command) {
        let now = self.clock.now();
        // Only messages the core accepts count for the fan-out time; it
        // knows once the store has answered, when the outputs are routed.
        let accepted = self.core.stats().messages_accepted;
        let mut received_send = None;
        match command {
            Command::Connect { conn, outbox } => {
                if let Some(until) = self.shutting_down {
                    outbox.close_until(
                        Cause::Shutdown,
                        CloseCode::GoingAway,
                        "server shutting down",
                        until,
                    );
                    return;
                }
                self.outboxes.insert(conn, outbox);
                self.core.connect(now, conn);
            }
            Command::Inbound {
                conn,
                inbound,
                received,
            } => {
                self.core.handle(now, conn, inbound);
                received_send = Some(received);
            }
            Command::Disconnect { conn } => {
                self.outboxes.remove(&conn);
                self.core.disconnect(now, conn);
            }
            Command::Shutdown { until } => {
                self.shutting_down = Some(until);
                // In connection order, so that a run replays exactly.
                let mut open: Vec<_> = self.outboxes.drain().collect();
                open.sort_by_key(|(conn, _)| *conn);
                for (conn, outbox) in open {
                    // What is queued goes first, for the whole grace: a
                    // slow reader keeps receiving until its end.
                    outbox.close_until(
                        Cause::Shutdown,
                        CloseCode::GoingAway,
                        "server shutting down",
                        until,
                    );
                    self.core.disconnect(now, conn);
                }
            }
            Command::Settle { done } => self.settling.push(done),
            Command::Reconfigure {
                limits,
                presence_delay,
                memory_max_bytes,
            } => {
                self.core.set_limits(now, limits);
                self.flushes.set_presence_delay(presence_delay);
                self.memory_max_bytes = memory_max_bytes;
                // A lower cap applies at once.
                let mut closed = Vec::new();
                self.keep_memory_cap(&mut closed);
                for conn in closed {
                    self.core.disconnect(now, conn);
                }
            }
        }
        // Route after every command so that outputs leave in the order the
        // core produced them, and a slow consumer is forgotten at once.
        self.route();
        if let Some(received) = received_send
            && self.core.stats().messages_accepted > accepted
        {
            self.sends.push(received);
        }
    }

    /// Hands every output to its connection; closes slow consumers, and
    /// the largest queues while all of them together are over the cap.
    fn route(&mut self) {
        loop {
            let mut closed = Vec::new();
            let mut over_cap = false;
            while let Some(output) = self.core.poll_output() {
                match output {
                    // `Local` answers its store's operations itself and
                    // hands every event to the hub: none reaches here.
                    Output::Store { .. }
                    | Output::Subscribe { .. }
                    | Output::Unsubscribe { .. } => {}
                    Output::Frame {
                        conn,
                        frame,
                        notice,
                    } => {
                        let Some(outbox) = self.outboxes.get(&conn) else {
                            continue;
                        };
                        match self.flushes.queue(outbox, frame, notice) {
                            Ok(pushed) => {
                                if let Some(level) = pushed.level {
                                    let outboxes = &self.outboxes;
                                    self.largest.note(conn, level, outboxes.len(), |c| {
                                        outboxes.get(&c).map(|o| &**o)
                                    });
                                }
                                over_cap |= pushed.total > self.memory_max_bytes;
                            }
                            Err(PushError::Closed) => {}
                            Err(PushError::Full) => {
                                debug!(
                                    conn = conn.0,
                                    "slow consumer: outbound queue full, closing with 1013"
                                );
                                outbox.close_discarding(
                                    Cause::SlowConsumer,
                                    CloseCode::TryAgainLater,
                                    "slow consumer",
                                );
                                self.outboxes.remove(&conn);
                                self.metrics.slow_consumers.inc();
                                closed.push(conn);
                            }
                        }
                    }
                    Output::Close { conn, code, reason } => {
                        if let Some(outbox) = self.outboxes.remove(&conn) {
                            outbox.close(Cause::Policy, code, reason);
                        }
                    }
                }
            }
            if over_cap {
                self.keep_memory_cap(&mut closed);
            }
            if closed.is_empty() {
                return;
            }
            let now = self.clock.now();
            for conn in closed {
                self.core.disconnect(now, conn);
            }
        }
    }

    /// While all queues together hold more than `OUTBOUND_MEMORY_MAX_BYTES`,
    /// closes the connection with the largest queue with 1013 (its queue is
    /// dropped, and a closing connection no longer counts), adding it to
    /// `closed` for the core to forget.
    fn keep_memory_cap(&mut self, closed: &mut Vec<ConnId>) {
        while self.metrics.outbound_queued_bytes.get() > self.memory_max_bytes as i64 {
            let outboxes = &self.outboxes;
            let listed = self
                .largest
                .take_largest(|c| outboxes.get(&c).map(|o| &**o));
            // Every listed queue is gone or small: look at all of them.
            let Some(conn) = listed.or_else(|| self.largest_unlisted()) else {
                return;
            };
            let Some(outbox) = self.outboxes.remove(&conn) else {
                continue;
            };
            warn!(
                conn = conn.0,
                queued_bytes = outbox.held_bytes(),
                total = self.metrics.outbound_queued_bytes.get(),
                "outbound memory cap reached: closing the largest queue with 1013"
            );
            outbox.close_discarding(
                Cause::MemoryCap,
                CloseCode::TryAgainLater,
                "server memory cap",
            );
            closed.push(conn);
        }
    }

    /// The open connection holding the most bytes, if any holds some: one
    /// look at every connection, for when the index has none to offer.
    fn largest_unlisted(&self) -> Option<ConnId> {
        self.outboxes
            .iter()
            .map(|(conn, o)| (o.held_bytes(), *conn))
            .filter(|&(held, _)| held > 0)
            .max()
            .map(|(_, conn)| conn)
    }

    fn finish_batch(&mut self) {
        if !self.settling.is_empty() && self.core.waiting_on_store() == 0 {
            for done in self.settling.drain(..) {
                let _ = done.send(());
            }
        }
        let done = Instant::now();
        for received in self.sends.drain(..) {
            self.metrics
                .fanout_seconds
                .observe(done.saturating_duration_since(received).as_secs_f64());
        }
        let stats = self.core.stats();
        self.metrics
            .publish(stats, &self.published, self.core.gauges());
        self.published.clone_from(stats);
    }
}
