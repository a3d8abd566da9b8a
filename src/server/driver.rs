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

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, DefaultHasher};
use std::sync::Arc;

use tokio::sync::mpsc;
use tokio::time::Instant;
use tracing::debug;

use super::metrics::Metrics;
use super::outbox::flushes::Flushes;
use super::outbox::{Outbox, PushError};
use crate::core::{ConnId, Hub, Inbound, Limits, Output, Stats, Timestamp};
use crate::protocol::CloseCode;

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
    /// Close every connection with 1001 and refuse new ones.
    Shutdown,
    /// The configuration was reloaded: apply the core's new limits, and hold
    /// notices for `presence_delay` from now on.
    Reconfigure {
        /// The core's limits.
        limits: Limits,
        /// How long presence and typing notices may be held.
        presence_delay: std::time::Duration,
    },
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

struct Driver {
    core: Hub,
    clock: Clock,
    metrics: Arc<Metrics>,
    /// Each connection's queue (and socket write half). A fixed hasher: the
    /// order in which a crashed driver drops them (closing their sockets) is
    /// the same in every run of a simulation seed.
    outboxes: HashMap<ConnId, Arc<Outbox>, BuildHasherDefault<DefaultHasher>>,
    /// The core's counters as last published.
    published: Stats,
    shutting_down: bool,
    /// Messages accepted in this batch, with when they arrived.
    sends: Vec<Instant>,
    /// What the batch owes the connections, and the notice holds.
    flushes: Flushes,
}

/// Runs the driver until every sender of `commands` is gone.
pub async fn run(
    hub: Hub,
    mut commands: mpsc::Receiver<Command>,
    clock: Clock,
    metrics: Arc<Metrics>,
    presence_delay: std::time::Duration,
) {
    let published = hub.stats().clone();
    let mut d = Driver {
        core: hub,
        clock,
        metrics,
        outboxes: HashMap::default(),
        published,
        shutting_down: false,
        sends: Vec::new(),
        flushes: Flushes::new(
            presence_delay,
            tokio::runtime::Handle::current().metrics().num_workers(),
        ),
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
                Some(c) => Some(c),
                None => break,
            },
            () = sleep_until_opt(deadline) => None,
        };
        let mut applied = 0;
        if let Some(command) = first {
            d.apply(command);
            applied = 1;
            while applied < BATCH_COMMANDS_MAX {
                match commands.try_recv() {
                    Ok(command) => d.apply(command),
                    Err(_) => break,
                }
                applied += 1;
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
    fn apply(&mut self, command: Command) {
        let now = self.clock.now();
        match command {
            Command::Connect { conn, outbox } => {
                if self.shutting_down {
                    outbox.close(CloseCode::GoingAway, "server shutting down");
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
                // Only messages the core accepts count for the fan-out time.
                let accepted = self.core.stats().messages_accepted;
                self.core.handle(now, conn, inbound);
                if self.core.stats().messages_accepted > accepted {
                    self.sends.push(received);
                }
            }
            Command::Disconnect { conn } => {
                self.outboxes.remove(&conn);
                self.core.disconnect(now, conn);
            }
            Command::Shutdown => {
                self.shutting_down = true;
                // In connection order, so that a run replays exactly.
                let mut open: Vec<_> = self.outboxes.drain().collect();
                open.sort_by_key(|(conn, _)| *conn);
                for (conn, outbox) in open {
                    outbox.close(CloseCode::GoingAway, "server shutting down");
                    self.core.disconnect(now, conn);
                }
            }
            Command::Reconfigure {
                limits,
                presence_delay,
            } => {
                self.core.set_limits(now, limits);
                self.flushes.set_presence_delay(presence_delay);
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
            while let Some(output) = self.core.poll_output() {
                match output {
                    Output::Frame {
                        conn,
                        frame,
                        notice,
                    } => {
                        let Some(outbox) = self.outboxes.get(&conn) else {
                            continue;
                        };
                        match self.flushes.queue(outbox, frame, notice) {
                            Ok(()) | Err(PushError::Closed) => {}
                            Err(PushError::Full) => {
                                debug!(
                                    conn = conn.0,
                                    "slow consumer: outbound queue full, closing with 1013"
                                );
                                outbox.close_discarding(CloseCode::TryAgainLater, "slow consumer");
                                self.outboxes.remove(&conn);
                                self.metrics.slow_consumers.inc();
                                slow.push(conn);
                            }
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
                self.core.disconnect(now, conn);
            }
        }
    }

    fn finish_batch(&mut self) {
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
