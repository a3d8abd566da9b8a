//! What the accept loop, the HTTP service and the connection tasks share:
//! the settings in force, the way to the driver, the caps, and the metrics.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64};

use arc_swap::ArcSwap;
use tokio::sync::mpsc;
use tokio::sync::mpsc::error::TrySendError;
use tokio_util::task::TaskTracker;

use super::admission::Admission;
use super::clock::Clock;
use super::driver::Command;
use super::metrics::Metrics;
use crate::auth::Verifier;
use crate::config::Config;

/// Everything a reload changes, swapped as one: a request never sees the
/// new configuration with the old token verifier, or the other way round.
pub(crate) struct Live {
    /// The configuration in force.
    pub config: Config,
    /// The token verifier built from it.
    pub verifier: Verifier,
}

/// State shared by the accept loop, the HTTP service and the connections.
pub(crate) struct Shared {
    /// The settings in force (see [`Live`]).
    pub live: ArcSwap<Live>,
    pub metrics: Arc<Metrics>,
    /// The core's clock, for verifying tokens at the time the core will see.
    pub clock: Clock,
    /// Commands to the driver.
    pub driver: mpsc::Sender<Command>,
    /// Set once shutdown begins: upgrades get 503 and `/readyz` 503.
    pub draining: AtomicBool,
    pub admission: Arc<Admission>,
    /// Numbers connections for the core and the logs.
    pub next_conn: AtomicU64,
    /// Every WebSocket connection's task: the drain waits for them.
    pub connections: TaskTracker,
    /// Whether HTTP responses carry a `Date` header (off in the simulation,
    /// where it would read the wall clock).
    pub http_date_header: bool,
}

impl Shared {
    /// Hands a command to the driver, waiting while its channel is full;
    /// an error means the driver is gone. The command is handed over at
    /// once when there is room; only a wait is boxed: `Sender::send`'s
    /// future (several hundred bytes, with the command in it) would
    /// otherwise be part of every connection's task for its whole life.
    pub fn send(&self, command: Command) -> impl Future<Output = Result<(), ()>> + Send + '_ {
        let waiting = match self.driver.try_send(command) {
            Ok(()) => Ok(None),
            Err(TrySendError::Full(command)) => Ok(Some(Box::pin(self.driver.send(command)))),
            Err(TrySendError::Closed(_)) => Err(()),
        };
        async move {
            match waiting? {
                None => Ok(()),
                Some(send) => send.await.map_err(|_| ()),
            }
        }
    }
}
