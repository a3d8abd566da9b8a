//! The production shell: hyper 1 serves HTTP/1.1 and upgrades `/ws` with
//! fastwebsockets; connection tasks feed the sans-IO core through the
//! driver task, and the outbound path writes what the core says.
//!
//! Everything here is written over a [`Listener`] seam and generic
//! `AsyncRead + AsyncWrite` streams, so that the same code runs over real TCP
//! and over a simulated network. The data path, file by file:
//!
//! 1. [`run`] (this file) accepts a TCP connection, counted by
//!    [`admission`], and hands it to [`http`], which routes it and answers
//!    an upgrade of `/ws`.
//! 2. [`chat`] gives the upgraded connection an [`outbox::Outbox`] and
//!    registers it with the driver; [`conn`] runs its reader and writer.
//! 3. The reader: [`frame_reader`] reads frames (holding no buffer while idle),
//!    [`message_reader`] reassembles them into messages and applies the
//!    frame rules, [`chat`] parses each message, verifies tokens and sends
//!    it to the driver as a [`driver::Command`].
//! 4. [`driver`] owns the core: it applies a batch of commands, routing the
//!    core's outputs frame by frame to [`outbox::flushes::Flushes`].
//! 5. [`outbox`] queues each frame on its connection's outbox and, at the
//!    end of the batch, writes it straight to the idle socket, or leaves it
//!    to the connection's writer task ([`outbox::writer`]).
//!
//! With `REDIS_URL` set, the driver's core is a node of a cluster: its store
//! operations go to Redis through [`cluster`]'s link, whose replies and
//! events come back to the driver as inputs (without it, an in-process
//! store answers them within the same call).
//!
//! [`shared`] is what the tasks share (the settings in force, swapped as one
//! on a reload); [`clock`] is the core's time; [`metrics`] is `GET /metrics`;
//! [`demo`] is the demo page (`GET /`, `DEMO_PAGE`).

pub mod admission;
pub mod chat;
pub mod clock;
pub mod cluster;
pub mod conn;
pub mod demo;
pub mod driver;
pub mod frame_reader;
pub mod http;
pub mod message_reader;
pub mod metrics;
pub mod outbox;
mod shared;

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::mpsc;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

use crate::auth::Verifier;
use crate::config::{Config, ConfigError};
use crate::core::{Hub, Instance};
use crate::store::local::Local;
use crate::store::redis::RedisConfig;
use crate::store::redis::RedisStore;
use admission::Admission;
use clock::Clock;
use cluster::{Backend, Link, LinkConfig};
use driver::{Command, Node};
use metrics::Metrics;
use shared::{Live, Shared};

pub use admission::{HANDSHAKE_CAP_FACTOR, HANDSHAKES_MIN, HANDSHAKES_PER_IP_MIN};
pub use chat::{core_limits, default_rooms};
pub use http::{HEAD_BYTES_MAX, HEADER_READ_TIMEOUT, HEADERS_MAX};

/// Commands that may wait for the driver before readers are held back.
const DRIVER_QUEUE_CAPACITY: usize = 8192;

/// Where connections come from: a TCP listener, or a simulated one.
pub trait Listener: Send + 'static {
    /// A connection's byte stream.
    type Io: AsyncRead + AsyncWrite + Unpin + Send + 'static;
    /// Waits for the next connection.
    fn accept(&mut self) -> impl Future<Output = io::Result<(Self::Io, SocketAddr)>> + Send;
}

impl Listener for tokio::net::TcpListener {
    type Io = tokio::net::TcpStream;

    async fn accept(&mut self) -> io::Result<(Self::Io, SocketAddr)> {
        let (stream, peer) = tokio::net::TcpListener::accept(self).await?;
        // Chat frames are small and latency matters more than packing.
        stream.set_nodelay(true)?;
        Ok((stream, peer))
    }
}

/// What the server takes from its surroundings rather than from
/// configuration: where time starts and what makes this run's ids unique.
#[derive(Debug, Clone, Copy)]
pub struct RuntimeEnv {
    /// Unix milliseconds at start-up (the core's clock starts here and then
    /// follows the runtime's monotonic clock).
    pub start_unix_ms: u64,
    /// Distinguishes this run's room epochs and message ids from any other's.
    pub instance: u64,
    /// Seeds the core's generator of room ids; never shown to anyone (see
    /// [`Instance::secret`](crate::core::Instance)).
    pub secret: u64,
    /// Whether HTTP responses carry a `Date` header (off in the simulation,
    /// where it would read the wall clock).
    pub http_date_header: bool,
}

impl RuntimeEnv {
    /// Start time from the system clock; an instance number from the clock
    /// and the process id (unique across restarts, which is what epochs need);
    /// a secret from the operating system's randomness (the keys of std's
    /// `RandomState`, drawn from it), which nothing else reveals.
    pub fn from_system() -> RuntimeEnv {
        use std::hash::BuildHasher as _;
        let since_epoch = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        let nanos = since_epoch.as_nanos() as u64;
        RuntimeEnv {
            start_unix_ms: since_epoch.as_millis() as u64,
            instance: nanos ^ (u64::from(std::process::id()) << 48),
            secret: std::collections::hash_map::RandomState::new().hash_one(nanos),
            http_date_header: true,
        }
    }
}

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServerError {
    /// The configuration is unusable.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// Binding the listen address failed.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: io::Error,
    },
}

/// Runs the server on `listener` until `shutdown` completes, then drains:
/// upgrades are refused (503) and `/readyz` answers 503 while every client
/// is sent a close frame 1001 and given up to `SHUTDOWN_GRACE_MS` to go.
pub async fn run<L: Listener>(
    listener: L,
    config: Config,
    env: RuntimeEnv,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ServerError> {
    let (_keep_open, reloads) = mpsc::channel(1);
    run_with_reloads(listener, config, env, shutdown, reloads).await
}

/// [`run`], also putting in force each configuration received on `reloads`.
///
/// Live at once: origins, connection caps, message and content size limits,
/// JWT settings, the demo page (`DEMO_PAGE`, and whether it gives
/// development tokens), the auth timeout, history limit, typing timeout, presence
/// delay, rate limits (buckets keep their level, capped at the new
/// capacity) and the server-wide outbound memory cap (a lower one closes
/// the largest queues at once). For new connections only: the outbound
/// queue limits (frames and bytes), write timeout, ping interval and idle
/// timeout. `HOST`, `PORT`, `DEFAULT_ROOMS`, `LOG_LEVEL`,
/// `LOG_FORMAT`, `WORKER_THREADS` and the cluster's `REDIS_URL`,
/// `REDIS_KEY_PREFIX`, `NODE_TTL_MS` and `REDIS_TIMEOUT_MS` take a restart (a change is logged and
/// otherwise ignored).
pub async fn run_with_reloads<L: Listener>(
    listener: L,
    config: Config,
    env: RuntimeEnv,
    shutdown: impl Future<Output = ()>,
    reloads: mpsc::Receiver<Config>,
) -> Result<(), ServerError> {
    run_node(listener, config, env, shutdown, reloads, None).await
}

/// [`run_with_reloads`] as a node of a cluster on `store` (`None`: on Redis
/// when `REDIS_URL` is set, else alone): what the simulation runs its nodes
/// with, on its simulated store.
pub async fn run_node<L: Listener>(
    mut listener: L,
    config: Config,
    env: RuntimeEnv,
    shutdown: impl Future<Output = ()>,
    mut reloads: mpsc::Receiver<Config>,
    store: Option<Arc<dyn Backend>>,
) -> Result<(), ServerError> {
    let verifier = Verifier::from_config(&config)?;
    let clock = Clock::new(env.start_unix_ms);
    let metrics = Arc::new(Metrics::new());
    let instance = Instance {
        number: env.instance,
        secret: env.secret,
    };
    let backend: Option<Arc<dyn Backend>> = match (store, &config.redis_url) {
        (Some(store), _) => Some(store),
        (None, None) => None,
        (None, Some(url)) => {
            let redis = RedisConfig {
                url: url.clone(),
                key_prefix: config.redis_key_prefix.clone(),
                timeout: Duration::from_millis(config.redis_timeout_ms),
            };
            let store = RedisStore::new(&redis)
                .map_err(|e| ConfigError::invalid("REDIS_URL", "(hidden)", e.to_string()))?;
            Some(Arc::new(store))
        }
    };
    let hub = match backend {
        None => Node::Local(Local::new(
            core_limits(&config),
            &default_rooms(&config),
            instance,
            clock.now(),
        )),
        Some(store) => {
            let hub = Hub::new(
                core_limits(&config),
                &default_rooms(&config),
                instance,
                clock.now(),
            );
            let link = Link::start(
                store,
                LinkConfig {
                    node: hub.node().clone(),
                    node_ttl_ms: config.node_ttl_ms,
                },
                clock,
                metrics.clone(),
            );
            info!(
                node = &*hub.node().0,
                prefix = config.redis_key_prefix,
                "cluster mode: rooms, history and presence are in the shared store"
            );
            Node::Cluster { hub, link }
        }
    };
    let (driver_tx, driver_rx) = mpsc::channel(DRIVER_QUEUE_CAPACITY);
    tokio::spawn(driver::run(
        hub,
        driver_rx,
        clock,
        metrics.clone(),
        Duration::from_millis(config.presence_delay_ms),
        config.outbound_memory_max_bytes,
    ));
    let shared = Arc::new(Shared {
        live: ArcSwap::from_pointee(Live { config, verifier }),
        admission: Arc::new(Admission::new(metrics.clone())),
        metrics,
        clock,
        driver: driver_tx,
        draining: AtomicBool::new(false),
        next_conn: AtomicU64::new(1),
        connections: TaskTracker::new(),
        http_date_header: env.http_date_header,
    });

    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            biased;
            () = &mut shutdown => break,
            Some(config) = reloads.recv() => apply_reload(&shared, config).await,
            accepted = listener.accept() => accept(accepted, &shared).await,
        }
    }

    info!("shutting down: refusing new connections and closing open ones");
    shared.draining.store(true, Ordering::SeqCst);
    let grace = Duration::from_millis(shared.live.load().config.shutdown_grace_ms);
    // One moment for everyone: each connection keeps receiving what is
    // queued for it until then (its writer's last moment), and the drain
    // stops waiting then.
    let grace_ends = tokio::time::Instant::now() + grace;
    let _ = shared
        .driver
        .send(Command::Shutdown { until: grace_ends })
        .await;
    // Upgrades are refused from now on, so no connection task starts after
    // the tracker is closed but one answered just before.
    shared.connections.close();
    let drained = shared.connections.wait();
    tokio::pin!(drained);
    let deadline = tokio::time::sleep_until(grace_ends);
    tokio::pin!(deadline);
    loop {
        tokio::select! {
            biased;
            () = &mut drained => break,
            () = &mut deadline => {
                warn!(
                    open = shared.admission.open(),
                    "shutdown grace period over; dropping remaining connections"
                );
                break;
            }
            // Still answered while draining: `/readyz` says 503, upgrades 503.
            accepted = listener.accept() => accept(accepted, &shared).await,
        }
    }
    // What the drain asked of the store (every connection leaving its
    // rooms) is done before the process goes: with Redis, the others see
    // these users leave now rather than when this node's lease runs out.
    let (done, settled) = tokio::sync::oneshot::channel();
    if shared.driver.send(Command::Settle { done }).await.is_ok() {
        let limit = Duration::from_millis(2 * shared.live.load().config.redis_timeout_ms);
        if tokio::time::timeout(limit, settled).await.is_err() {
            warn!("the store did not answer everything before the stop");
        }
    }
    info!("stopped");
    Ok(())
}

/// Puts a reloaded configuration in force (see [`run_with_reloads`]).
async fn apply_reload(shared: &Shared, config: Config) {
    let verifier = match Verifier::from_config(&config) {
        Ok(v) => v,
        Err(e) => {
            warn!(error = %e, "configuration reload refused; keeping the running configuration");
            return;
        }
    };
    let live = shared.live.load_full();
    let old = &live.config;
    let restart_only = [
        ("HOST", old.host != config.host),
        ("PORT", old.port != config.port),
        ("DEFAULT_ROOMS", old.default_rooms != config.default_rooms),
        ("LOG_LEVEL", old.log_level != config.log_level),
        ("LOG_FORMAT", old.log_format != config.log_format),
        (
            "WORKER_THREADS",
            old.worker_threads != config.worker_threads,
        ),
        ("REDIS_URL", old.redis_url != config.redis_url),
        (
            "REDIS_KEY_PREFIX",
            old.redis_key_prefix != config.redis_key_prefix,
        ),
        ("NODE_TTL_MS", old.node_ttl_ms != config.node_ttl_ms),
        (
            "REDIS_TIMEOUT_MS",
            old.redis_timeout_ms != config.redis_timeout_ms,
        ),
    ];
    for (var, changed) in restart_only {
        if changed {
            warn!(
                variable = var,
                "changing this setting takes a restart; ignored until then"
            );
        }
    }
    // The driver's part is queued first: once the new settings are visible
    // to connections, anything they send reaches the driver after it.
    let reconfigure = Command::Reconfigure {
        limits: core_limits(&config),
        presence_delay: Duration::from_millis(config.presence_delay_ms),
        memory_max_bytes: config.outbound_memory_max_bytes,
    };
    let _ = shared.driver.send(reconfigure).await;
    shared.live.store(Arc::new(Live { config, verifier }));
    info!("configuration reloaded");
}

async fn accept<I>(accepted: io::Result<(I, SocketAddr)>, shared: &Arc<Shared>)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    match accepted {
        Ok((io, peer)) => {
            // Past the caps, a TCP connection is closed at once, before a
            // byte of HTTP is read (an upgrade would get 503 anyway).
            let guard = shared
                .admission
                .try_handshake(peer.ip(), &shared.live.load().config);
            let Some(guard) = guard else {
                shared.metrics.refused_handshakes.inc();
                return;
            };
            let shared = shared.clone();
            tokio::spawn(async move {
                http::serve(io, peer, shared).await;
                drop(guard);
            });
        }
        Err(e) => {
            // Out of file descriptors and the like: back off briefly rather
            // than spin; the listener itself is still good.
            warn!(error = %e, "accept failed");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// A server running in the background of the current runtime (tests,
/// benchmarks, embedding).
pub struct RunningServer {
    /// The address it listens on.
    pub addr: SocketAddr,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    reloads: mpsc::Sender<Config>,
    task: tokio::task::JoinHandle<Result<(), ServerError>>,
}

impl RunningServer {
    /// Binds `config`'s address (port 0 picks a free one) and starts serving.
    pub async fn start(config: Config) -> Result<RunningServer, ServerError> {
        // A key that does not parse is an error here, not when the server
        // stops.
        Verifier::from_config(&config)?;
        let addr = config.listen_addr();
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|source| ServerError::Bind { addr, source })?;
        let addr = listener
            .local_addr()
            .map_err(|source| ServerError::Bind { addr, source })?;
        let (tx, rx) = tokio::sync::oneshot::channel();
        let (reloads, reload_rx) = mpsc::channel(4);
        let task = tokio::spawn(run_with_reloads(
            listener,
            config,
            RuntimeEnv::from_system(),
            async {
                let _ = rx.await;
            },
            reload_rx,
        ));
        Ok(RunningServer {
            addr,
            shutdown: Some(tx),
            reloads,
            task,
        })
    }

    /// Puts a new configuration in force (as SIGHUP does), returning once
    /// it is queued; see [`run_with_reloads`] for what changes live.
    pub async fn reload(&self, config: Config) {
        let _ = self.reloads.send(config).await;
    }

    /// Starts the drain (as SIGTERM does) without waiting for it.
    pub fn begin_shutdown(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }

    /// Shuts down and waits for the drain to finish.
    pub async fn shutdown(mut self) -> Result<(), ServerError> {
        self.begin_shutdown();
        self.task
            .await
            .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()))
    }
}
