//! A node of a cluster (`REDIS_URL` set): the hub's store operations run
//! against Redis, and what Redis publishes comes back as events.
//!
//! One task, the *link*, owns the node's two Redis connections (the
//! multiplexed one of [`RedisStore`] and the [`Subscriber`]). The driver
//! hands it the hub's outputs ([`Link::submit`]) and takes back what the
//! hub must hear ([`Back`]) in its select loop. The link:
//!
//! - starts operations in the order the hub handed them out: each call is
//!   polled once as soon as it arrives, which writes it to the multiplexed
//!   connection, so Redis runs one node's operations in that order while
//!   many are in flight;
//! - retries, with backoff, the operations no request waits for and that
//!   must happen in the end (a `Leave`, a read of missed messages, an idle
//!   room's deletion, a default room's creation); every other failure goes
//!   back to the hub ([`Back::Failed`]), which answers `SERVER_ERROR` with
//!   `retryAfterMs`;
//! - subscribes to a room before anything after the `Subscribe` starts, and
//!   then has the hub read back what the room got before the subscription
//!   ([`Back::Resync`]); after the pub/sub connection was lost and is back,
//!   every room is read back;
//! - renews the node's lease (`Heartbeat`) every third of `NODE_TTL_MS`, which
//!   also clears the users of nodes whose lease ran out. A node that could
//!   not renew its lease in time was cleared by the others: its connections
//!   are closed with `1013` to resume elsewhere or here ([`Back::LeaseLost`]);
//! - keeps `chatflow_redis_up` (and with it `/readyz`): 0 from a call that
//!   failed for want of an answer until one is answered; while it is 0 it
//!   pings Redis every [`PROBE_EVERY`].

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tracing::{debug, info, warn};

use super::clock::Clock;
use super::metrics::Metrics;
use crate::core::OpId;
use crate::store::redis::{Notice, RedisStore, StoreError, Subscriber};
use crate::store::{Event, NodeId, Op, Reply};

/// A boxed, sendable future.
pub type Boxed<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// The store a cluster node's link talks to: Redis ([`RedisStore`]), or in
/// the simulation a store host over its simulated network. Whatever it is,
/// it answers every [`Op`] as `crate::store` says, or fails with a
/// [`StoreError`] when it cannot be asked.
pub trait Backend: Send + Sync + 'static {
    /// Runs one operation. The call is written to the store at the future's
    /// first poll, so that calls polled in a row reach it in that order.
    fn apply(&self, op: Op) -> Boxed<'static, Result<Reply, StoreError>>;
    /// Whether the store answers now.
    fn ping(&self) -> Boxed<'static, Result<(), StoreError>>;
    /// The node's event stream: a connection of its own, made (and made
    /// again after it is lost) in the background.
    fn events(&self) -> Box<dyn Events>;
}

/// A node's event stream (see [`Subscriber`]).
pub trait Events: Send {
    /// Events of `room` from now on (once this is `Ok`).
    fn subscribe<'a>(&'a self, room: &'a str) -> Boxed<'a, Result<(), StoreError>>;
    /// No more events of `room`.
    fn unsubscribe<'a>(&'a self, room: &'a str) -> Boxed<'a, Result<(), StoreError>>;
    /// The next notice; `None` once the stream is gone for good.
    fn next(&mut self) -> Boxed<'_, Option<Notice>>;
}

impl Backend for RedisStore {
    fn apply(&self, op: Op) -> Boxed<'static, Result<Reply, StoreError>> {
        let store = self.clone();
        Box::pin(async move { store.apply(&op).await })
    }

    fn ping(&self) -> Boxed<'static, Result<(), StoreError>> {
        let store = self.clone();
        Box::pin(async move { RedisStore::ping(&store).await })
    }

    fn events(&self) -> Box<dyn Events> {
        Box::new(self.subscriber_in_background())
    }
}

impl Events for Subscriber {
    fn subscribe<'a>(&'a self, room: &'a str) -> Boxed<'a, Result<(), StoreError>> {
        Box::pin(Subscriber::subscribe(self, room))
    }

    fn unsubscribe<'a>(&'a self, room: &'a str) -> Boxed<'a, Result<(), StoreError>> {
        Box::pin(Subscriber::unsubscribe(self, room))
    }

    fn next(&mut self) -> Boxed<'_, Option<Notice>> {
        Box::pin(Subscriber::next(self))
    }
}

/// While Redis does not answer, how often it is asked again.
pub const PROBE_EVERY: Duration = Duration::from_millis(250);

/// The longest pause between two tries of an operation that is retried.
const RETRY_MAX: Duration = Duration::from_secs(2);

/// What the driver hands the link.
#[derive(Debug)]
enum Job {
    Op(OpId, Op),
    Subscribe(String),
    Unsubscribe(String),
}

/// What the link hands back to the driver, for the hub.
#[derive(Debug)]
pub enum Back {
    /// The reply to an operation ([`Hub::store_reply`](crate::core::Hub::store_reply)).
    Reply(OpId, Reply),
    /// No reply came ([`Hub::store_failed`](crate::core::Hub::store_failed)).
    Failed(OpId),
    /// An event of a subscribed room ([`Hub::store_event`](crate::core::Hub::store_event)).
    Event(Event),
    /// Events of this room (every room: `None`) may have been missed
    /// ([`Hub::store_resync`](crate::core::Hub::store_resync)).
    Resync(Option<String>),
    /// The node's lease ran out before it could renew it: the other nodes
    /// took its users out of every room.
    LeaseLost,
}

/// The driver's end of the link.
#[derive(Debug)]
pub struct Link {
    jobs: mpsc::UnboundedSender<Job>,
    back: mpsc::UnboundedReceiver<Back>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Link {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// How the link runs.
#[derive(Debug, Clone)]
pub struct LinkConfig {
    /// This node, as its lease and presence name it.
    pub node: NodeId,
    /// `NODE_TTL_MS`.
    pub node_ttl_ms: u64,
}

impl Link {
    /// Starts the link to `store`.
    pub fn start(
        store: Arc<dyn Backend>,
        config: LinkConfig,
        clock: Clock,
        metrics: Arc<Metrics>,
    ) -> Link {
        let subscriber = store.events();
        let (jobs, job_rx) = mpsc::unbounded_channel();
        let (back_tx, back) = mpsc::unbounded_channel();
        // Not ready before Redis first answered.
        metrics.redis_up.set(0);
        let task = tokio::spawn(
            Task {
                store,
                subscriber,
                jobs: job_rx,
                back: back_tx,
                metrics,
                clock,
                node: config.node,
                node_ttl_ms: config.node_ttl_ms,
                lease_until: None,
                healthy: false,
            }
            .run(),
        );
        Link { jobs, back, task }
    }

    /// Hands over one of the hub's store outputs, in the order the hub gave
    /// them.
    pub fn store(&self, id: OpId, op: Op) {
        let _ = self.jobs.send(Job::Op(id, op));
    }

    /// The hub wants the events of `room`.
    pub fn subscribe(&self, room: String) {
        let _ = self.jobs.send(Job::Subscribe(room));
    }

    /// The hub no longer wants the events of `room`.
    pub fn unsubscribe(&self, room: String) {
        let _ = self.jobs.send(Job::Unsubscribe(room));
    }

    /// The next thing for the hub; pending for ever once the link is gone.
    pub async fn next(&mut self) -> Back {
        match self.back.recv().await {
            Some(back) => back,
            None => std::future::pending().await,
        }
    }

    /// What is ready for the hub now, without waiting.
    pub fn try_next(&mut self) -> Option<Back> {
        self.back.try_recv().ok()
    }
}

/// What a call in flight finishes.
enum Done {
    /// An operation of the hub's.
    Op(OpId, Result<Reply, StoreError>),
    /// A lease renewal begun at `at_ms`.
    Heartbeat(u64, Result<Reply, StoreError>),
    /// A probe of a Redis that did not answer.
    Probe(Result<(), StoreError>),
}

type Call = Pin<Box<dyn Future<Output = Done> + Send>>;

struct Task {
    store: Arc<dyn Backend>,
    subscriber: Box<dyn Events>,
    jobs: mpsc::UnboundedReceiver<Job>,
    back: mpsc::UnboundedSender<Back>,
    metrics: Arc<Metrics>,
    clock: Clock,
    node: NodeId,
    node_ttl_ms: u64,
    /// Until when the last renewed lease holds (Unix ms).
    lease_until: Option<u64>,
    /// Whether the last call that could tell was answered.
    healthy: bool,
}

impl Task {
    async fn run(mut self) {
        let mut calls: FuturesUnordered<Call> = FuturesUnordered::new();
        let mut heartbeat = tokio::time::interval(Duration::from_millis(self.node_ttl_ms / 3));
        heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut probe = tokio::time::interval(PROBE_EVERY);
        let mut probing = false;
        let mut renewing = false;
        loop {
            tokio::select! {
                biased;
                // First: a steady stream of jobs must not starve the lease.
                _ = heartbeat.tick(), if !renewing => {
                    renewing = true;
                    calls.push(started(self.renewal()));
                }
                job = self.jobs.recv() => {
                    let Some(job) = job else { return };
                    match job {
                        // A node whose lease ran out by its own clock does not
                        // act for its connections until it has renewed it
                        // (and learnt whether the others cleared it).
                        Job::Op(id, op) if self.fenced(&op) => {
                            self.send(Back::Failed(id));
                            if !renewing {
                                renewing = true;
                                calls.push(started(self.renewal()));
                            }
                        }
                        Job::Op(id, op) => calls.push(started(self.op(id, op))),
                        Job::Subscribe(room) => {
                            // Nothing after it starts before Redis confirmed
                            // it; then the hub reads back what came before.
                            match self.subscriber.subscribe(&room).await {
                                Ok(()) => self.send(Back::Resync(Some(room))),
                                // Subscribed with the others once the
                                // connection is back (a `Resubscribed`).
                                Err(e) => debug!(error = %e, room, "subscribe failed"),
                            }
                        }
                        Job::Unsubscribe(room) => {
                            if let Err(e) = self.subscriber.unsubscribe(&room).await {
                                debug!(error = %e, room, "unsubscribe failed");
                            }
                        }
                    }
                }
                Some(done) = calls.next() => match done {
                    Done::Op(id, result) => match result {
                        Ok(reply) => {
                            self.answered();
                            self.send(Back::Reply(id, reply));
                        }
                        Err(e) => {
                            self.failed(&e);
                            self.send(Back::Failed(id));
                        }
                    },
                    Done::Heartbeat(at_ms, result) => {
                        renewing = false;
                        self.renewed(at_ms, result);
                    }
                    Done::Probe(result) => {
                        probing = false;
                        match result {
                            Ok(()) => self.answered(),
                            Err(e) => self.failed(&e),
                        }
                    }
                },
                notice = self.subscriber.next() => match notice {
                    Some(Notice::Event(event)) => self.send(Back::Event(event)),
                    Some(Notice::Resubscribed) => {
                        info!("redis pub/sub connected: reading back what every room missed");
                        self.send(Back::Resync(None));
                    }
                    Some(Notice::Undecodable(e)) => {
                        self.metrics.redis_errors.inc();
                        warn!(error = %e, "an unreadable message on a room's channel was skipped");
                    }
                    None => return,
                },
                _ = probe.tick(), if !self.healthy && !probing => {
                    probing = true;
                    let store = self.store.clone();
                    let metrics = self.metrics.clone();
                    calls.push(started(Box::pin(async move {
                        let begun = Instant::now();
                        let result = store.ping().await;
                        metrics.redis_seconds.observe(begun.elapsed().as_secs_f64());
                        Done::Probe(result)
                    })));
                }
            }
        }
    }

    /// A renewal of this node's lease.
    fn renewal(&self) -> Call {
        let at_ms = self.clock.now().0;
        let op = Op::Heartbeat {
            node: self.node.clone(),
            now_ms: at_ms,
            ttl_ms: self.node_ttl_ms,
        };
        let call = self.timed(op);
        Box::pin(async move { Done::Heartbeat(at_ms, call.await) })
    }

    /// Whether `op` acts for a connection while this node's lease has run
    /// out by its clock: the other nodes may have cleared its users, and a
    /// message or a presence of theirs now would contradict that.
    fn fenced(&self, op: &Op) -> bool {
        matches!(op, Op::Publish { .. } | Op::Join { .. } | Op::Typing { .. })
            && self
                .lease_until
                .is_some_and(|until| self.clock.now().0 > until)
    }

    fn send(&self, back: Back) {
        let _ = self.back.send(back);
    }

    /// A call was answered: Redis is up.
    fn answered(&mut self) {
        if !self.healthy {
            info!("redis answers");
            self.healthy = true;
            self.metrics.redis_up.set(1);
        }
    }

    /// A call failed: counted, and Redis is down unless Redis itself
    /// answered (with an error of the script's).
    fn failed(&mut self, e: &StoreError) {
        self.metrics.redis_errors.inc();
        if e.is_unanswered() {
            if self.healthy {
                warn!(error = %e, "redis does not answer: requests that need it get SERVER_ERROR");
                self.healthy = false;
                self.metrics.redis_up.set(0);
            }
        } else {
            warn!(error = %e, "a redis call failed");
        }
    }

    /// One call of `op`, timed.
    fn timed(&self, op: Op) -> impl Future<Output = Result<Reply, StoreError>> + Send + 'static {
        let call = self.store.apply(op);
        let metrics = self.metrics.clone();
        async move {
            let begun = Instant::now();
            let result = call.await;
            metrics.redis_seconds.observe(begun.elapsed().as_secs_f64());
            result
        }
    }

    /// The call for the hub's operation `id`: retried until answered when
    /// nothing waits for it and it must happen.
    fn op(&self, id: OpId, op: Op) -> Call {
        let retried = matches!(
            op,
            Op::Leave { .. } | Op::Since { .. } | Op::DeleteIfIdle { .. } | Op::EnsureRoom { .. }
        );
        if !retried {
            let call = self.timed(op);
            return Box::pin(async move { Done::Op(id, call.await) });
        }
        let store = self.store.clone();
        let metrics = self.metrics.clone();
        Box::pin(async move {
            let mut pause = Duration::from_millis(50);
            loop {
                let begun = Instant::now();
                let result = store.apply(op.clone()).await;
                metrics.redis_seconds.observe(begun.elapsed().as_secs_f64());
                match result {
                    Ok(reply) => return Done::Op(id, Ok(reply)),
                    // Data Redis cannot read will not get better.
                    Err(e) if !e.is_unanswered() => return Done::Op(id, Err(e)),
                    Err(e) => {
                        metrics.redis_errors.inc();
                        debug!(error = %e, ?pause, "retrying a store operation");
                        tokio::time::sleep(pause).await;
                        pause = (pause * 2).min(RETRY_MAX);
                    }
                }
            }
        })
    }

    /// A lease renewal begun at `at_ms` came back.
    fn renewed(&mut self, at_ms: u64, result: Result<Reply, StoreError>) {
        match result {
            Ok(reply) => {
                self.answered();
                let Reply::Swept { gone, lapsed } = reply else {
                    return self.failed(&StoreError::decode(
                        "a heartbeat answered with another reply",
                    ));
                };
                // Not renewed in time: the store took this node's
                // connections out of their rooms, or may have (the lease ran
                // out by this node's clock, and the renewal that found it
                // lapsed may have been the one whose answer was lost). A
                // first renewal has nothing to lose.
                if let Some(until) = self.lease_until
                    && (lapsed || at_ms > until)
                {
                    warn!(
                        "this node's lease ran out: its users were taken out of their rooms; \
                         closing its connections with 1013 so that they join again"
                    );
                    self.send(Back::LeaseLost);
                }
                self.lease_until = Some(at_ms + self.node_ttl_ms);
                if !gone.is_empty() {
                    let gone: Vec<&str> = gone.iter().map(|n| &*n.0).collect();
                    info!(
                        ?gone,
                        "nodes whose lease ran out: their users left every room"
                    );
                }
            }
            Err(e) => self.failed(&e),
        }
    }
}

/// `call`, polled once at once: a Redis call is written to the connection
/// at its first poll, so calls started in a row reach Redis in that order.
/// Whatever it registered to be woken by is registered again when the set
/// polls it.
fn started(mut call: Call) -> Call {
    let mut cx = Context::from_waker(Waker::noop());
    match call.as_mut().poll(&mut cx) {
        Poll::Ready(done) => Box::pin(std::future::ready(done)),
        Poll::Pending => call,
    }
}
