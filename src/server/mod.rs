//! The production shell: hyper 1 serves HTTP/1.1 and upgrades `/ws` with
//! fastwebsockets; connection tasks feed the core through the hub task.
//!
//! Everything here is written over a [`Listener`] seam and generic
//! `AsyncRead + AsyncWrite` streams, so that the same code runs over real TCP
//! and over a simulated network.
//!
//! Routes: `GET /ws` (WebSocket), `GET /healthz`, `GET /readyz`,
//! `GET /metrics`; anything else is 404.

pub mod conn;
mod frames;
pub mod hub;
pub mod metrics;
pub mod outbox;
pub mod reader;

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{HeaderValue, ORIGIN};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{Notify, mpsc};
use tracing::{Instrument, info, info_span, warn};

use crate::auth::Verifier;
use crate::config::{Config, ConfigError};
use crate::core::{ConnId, DefaultRoom, Hub, Limits};
use hub::{Clock, HubCommand};
use metrics::Metrics;

/// Time a client has to send a complete HTTP request head.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Most header lines in one request.
pub const HEADERS_MAX: usize = 64;
/// Longest HTTP request head (request line and headers); a longer one is
/// refused with 431.
pub const HEAD_BYTES_MAX: usize = 16 * 1024;
/// TCP connections that may be in HTTP at once (before an upgrade, or
/// asking for `/healthz` and the like), as a multiple of `MAX_CONNECTIONS`
/// in total and of `MAX_CONNECTIONS_PER_IP` per address, but never fewer
/// than [`HANDSHAKES_MIN`] and [`HANDSHAKES_PER_IP_MIN`] (small caps must
/// not starve health checks). Beyond that a new connection is closed at
/// once, unanswered; below it, an upgrade past the caps is answered 503.
pub const HANDSHAKE_CAP_FACTOR: usize = 2;
/// The least total of connections that may be in HTTP at once.
pub const HANDSHAKES_MIN: usize = 1024;
/// The least number of connections one address may have in HTTP at once.
pub const HANDSHAKES_PER_IP_MIN: usize = 64;
/// Commands that may wait for the hub before readers are held back.
const HUB_QUEUE_CAPACITY: usize = 8192;

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
    /// Whether HTTP responses carry a `Date` header (off in the simulation,
    /// where it would read the wall clock).
    pub http_date_header: bool,
}

impl RuntimeEnv {
    /// Start time from the system clock; an instance number from the clock
    /// and the process id (unique across restarts, which is what epochs need).
    pub fn from_system() -> RuntimeEnv {
        let since_epoch = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        let nanos = since_epoch.as_nanos() as u64;
        RuntimeEnv {
            start_unix_ms: since_epoch.as_millis() as u64,
            instance: nanos ^ (u64::from(std::process::id()) << 48),
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

/// State shared by the accept loop, the HTTP service and the connections.
pub(crate) struct Shared {
    config: ArcSwap<Config>,
    verifier: ArcSwap<Verifier>,
    metrics: Arc<Metrics>,
    clock: Clock,
    hub: mpsc::Sender<HubCommand>,
    draining: AtomicBool,
    caps: Caps,
    next_conn: AtomicU64,
}

/// Connections counted in total and per peer address.
#[derive(Default)]
struct Counter {
    total: AtomicUsize,
    per_ip: Mutex<HashMap<IpAddr, usize>>,
}

impl Counter {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<IpAddr, usize>> {
        self.per_ip.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Counts one more for `ip` unless that would pass either cap.
    fn try_take(&self, ip: IpAddr, max_total: usize, max_per_ip: usize) -> bool {
        let mut per_ip = self.lock();
        let count = per_ip.get(&ip).copied().unwrap_or(0);
        if count >= max_per_ip || self.total.load(Ordering::Relaxed) >= max_total {
            return false;
        }
        per_ip.insert(ip, count + 1);
        self.total.fetch_add(1, Ordering::Relaxed);
        true
    }

    /// Uncounts one taken for `ip`.
    fn give_back(&self, ip: IpAddr) {
        {
            let mut per_ip = self.lock();
            if let Some(n) = per_ip.get_mut(&ip) {
                *n -= 1;
                if *n == 0 {
                    per_ip.remove(&ip);
                }
            }
        }
        self.total.fetch_sub(1, Ordering::Relaxed);
    }

    fn total(&self) -> usize {
        self.total.load(Ordering::SeqCst)
    }
}

/// The connection caps.
#[derive(Default)]
struct Caps {
    /// Open WebSocket connections (`MAX_CONNECTIONS`,
    /// `MAX_CONNECTIONS_PER_IP`).
    open: Counter,
    /// TCP connections still in HTTP (before an upgrade, or serving
    /// `/healthz` and the like), at most [`HANDSHAKE_CAP_FACTOR`] times the
    /// same caps, so that connections that never upgrade cannot take every
    /// file descriptor (each also ends at the header timeout).
    handshaking: Counter,
    /// Signalled whenever a WebSocket connection ends (the drain waits on it).
    released: Notify,
}

/// A counted WebSocket connection; uncounted when dropped.
struct CapGuard {
    shared: Arc<Shared>,
    ip: IpAddr,
}

/// A counted connection still in HTTP; uncounted when dropped.
struct HandshakeGuard {
    shared: Arc<Shared>,
    ip: IpAddr,
}

impl Shared {
    fn try_admit(self: &Arc<Self>, ip: IpAddr) -> Option<CapGuard> {
        let config = self.config.load();
        if !self
            .caps
            .open
            .try_take(ip, config.max_connections, config.max_connections_per_ip)
        {
            return None;
        }
        self.metrics.connections.inc();
        Some(CapGuard {
            shared: self.clone(),
            ip,
        })
    }

    fn try_handshake(self: &Arc<Self>, ip: IpAddr) -> Option<HandshakeGuard> {
        let (total, per_ip) = handshake_caps(&self.config.load());
        self.caps
            .handshaking
            .try_take(ip, total, per_ip)
            .then(|| HandshakeGuard {
                shared: self.clone(),
                ip,
            })
    }
}

/// How many connections may be in HTTP at once: in total, and per address.
fn handshake_caps(config: &Config) -> (usize, usize) {
    let cap = |n: usize, min: usize| n.saturating_mul(HANDSHAKE_CAP_FACTOR).max(min);
    (
        cap(config.max_connections, HANDSHAKES_MIN),
        cap(config.max_connections_per_ip, HANDSHAKES_PER_IP_MIN),
    )
}

impl Drop for CapGuard {
    fn drop(&mut self) {
        let caps = &self.shared.caps;
        caps.open.give_back(self.ip);
        self.shared.metrics.connections.dec();
        caps.released.notify_waiters();
    }
}

impl Drop for HandshakeGuard {
    fn drop(&mut self) {
        self.shared.caps.handshaking.give_back(self.ip);
    }
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
/// JWT settings, the auth timeout, history limit, typing timeout, presence
/// delay and rate limits (buckets keep their level, capped at the new
/// capacity). For new connections only: the outbound queue limit, ping
/// interval and idle timeout. `HOST`, `PORT`, `DEFAULT_ROOMS`, `LOG_LEVEL`,
/// `LOG_FORMAT` and `WORKER_THREADS` take a restart (a change is logged and
/// otherwise ignored).
pub async fn run_with_reloads<L: Listener>(
    mut listener: L,
    config: Config,
    env: RuntimeEnv,
    shutdown: impl Future<Output = ()>,
    mut reloads: mpsc::Receiver<Config>,
) -> Result<(), ServerError> {
    let verifier = Verifier::from_config(&config)?;
    let clock = Clock::new(env.start_unix_ms);
    let metrics = Arc::new(Metrics::new());
    let hub = Hub::new(
        core_limits(&config),
        &default_rooms(&config),
        env.instance,
        clock.now(),
    );
    let (hub_tx, hub_rx) = mpsc::channel(HUB_QUEUE_CAPACITY);
    tokio::spawn(hub::run(
        hub,
        hub_rx,
        clock,
        metrics.clone(),
        Duration::from_millis(config.presence_delay_ms),
    ));
    let shared = Arc::new(Shared {
        config: ArcSwap::from_pointee(config),
        verifier: ArcSwap::from_pointee(verifier),
        metrics,
        clock,
        hub: hub_tx,
        draining: AtomicBool::new(false),
        caps: Caps::default(),
        next_conn: AtomicU64::new(1),
    });

    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            biased;
            () = &mut shutdown => break,
            Some(config) = reloads.recv() => apply_reload(&shared, config).await,
            accepted = listener.accept() => accept(accepted, &shared, env).await,
        }
    }

    info!("shutting down: refusing new connections and closing open ones");
    shared.draining.store(true, Ordering::SeqCst);
    let _ = shared.hub.send(HubCommand::Shutdown).await;
    let grace = Duration::from_millis(shared.config.load().shutdown_grace_ms);
    let drained = async {
        loop {
            // Register for the wake-up before looking, so a release between
            // the look and the wait is not missed.
            let released = shared.caps.released.notified();
            tokio::pin!(released);
            released.as_mut().enable();
            if shared.caps.open.total() == 0 {
                return;
            }
            released.await;
        }
    };
    tokio::pin!(drained);
    let deadline = tokio::time::sleep(grace);
    tokio::pin!(deadline);
    loop {
        tokio::select! {
            biased;
            () = &mut drained => break,
            () = &mut deadline => {
                warn!(
                    open = shared.caps.open.total(),
                    "shutdown grace period over; dropping remaining connections"
                );
                break;
            }
            accepted = listener.accept() => accept(accepted, &shared, env).await,
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
    let old = shared.config.load_full();
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
    ];
    for (var, changed) in restart_only {
        if changed {
            warn!(
                variable = var,
                "changing this setting takes a restart; ignored until then"
            );
        }
    }
    // The core's limits are queued first: once the new configuration is
    // visible to connections, anything they send reaches the hub after it.
    let _ = shared
        .hub
        .send(HubCommand::SetLimits(core_limits(&config)))
        .await;
    let _ = shared
        .hub
        .send(HubCommand::SetPresenceDelay(Duration::from_millis(
            config.presence_delay_ms,
        )))
        .await;
    shared.verifier.store(Arc::new(verifier));
    shared.config.store(Arc::new(config));
    info!("configuration reloaded");
}

async fn accept<I>(accepted: io::Result<(I, SocketAddr)>, shared: &Arc<Shared>, env: RuntimeEnv)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    match accepted {
        Ok((io, peer)) => {
            // Past the caps, a TCP connection is closed at once, before a
            // byte of HTTP is read (an upgrade would get 503 anyway).
            let Some(guard) = shared.try_handshake(peer.ip()) else {
                shared.metrics.refused_handshakes.inc();
                return;
            };
            let shared = shared.clone();
            tokio::spawn(async move {
                serve_http(io, peer, shared, env).await;
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

async fn serve_http<I>(io: I, peer: SocketAddr, shared: Arc<Shared>, env: RuntimeEnv)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = hyper::service::service_fn(move |req| {
        let shared = shared.clone();
        async move { Ok::<_, Infallible>(route(req, peer, &shared)) }
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .max_headers(HEADERS_MAX)
        .max_buf_size(HEAD_BYTES_MAX)
        .auto_date_header(env.http_date_header);
    let connection = builder
        .serve_connection(TokioIo::new(io), service)
        .with_upgrades();
    if let Err(e) = connection.await {
        tracing::debug!(%peer, error = %e, "http connection ended with an error");
    }
}

type Body = Full<Bytes>;

fn respond(status: StatusCode, body: &'static str) -> Response<Body> {
    let mut r = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *r.status_mut() = status;
    r
}

fn route(mut req: Request<Incoming>, peer: SocketAddr, shared: &Arc<Shared>) -> Response<Body> {
    match (req.method(), req.uri().path()) {
        (&Method::GET, "/healthz") => respond(StatusCode::OK, "ok\n"),
        (&Method::GET, "/readyz") => {
            if shared.draining.load(Ordering::SeqCst) {
                respond(StatusCode::SERVICE_UNAVAILABLE, "draining\n")
            } else {
                respond(StatusCode::OK, "ready\n")
            }
        }
        (&Method::GET, "/metrics") => {
            let mut r = Response::new(Full::new(Bytes::from(shared.metrics.encode())));
            r.headers_mut().insert(
                hyper::header::CONTENT_TYPE,
                HeaderValue::from_static(
                    "application/openmetrics-text; version=1.0.0; charset=utf-8",
                ),
            );
            r
        }
        (_, "/ws") => upgrade(&mut req, peer, shared),
        _ => respond(StatusCode::NOT_FOUND, "not found\n"),
    }
}

fn upgrade(req: &mut Request<Incoming>, peer: SocketAddr, shared: &Arc<Shared>) -> Response<Body> {
    if req.method() != Method::GET {
        return respond(
            StatusCode::METHOD_NOT_ALLOWED,
            "use GET with a WebSocket upgrade\n",
        );
    }
    if !fastwebsockets::upgrade::is_upgrade_request(req) {
        let mut r = respond(StatusCode::UPGRADE_REQUIRED, "WebSocket upgrade required\n");
        r.headers_mut().insert(
            hyper::header::UPGRADE,
            HeaderValue::from_static("websocket"),
        );
        return r;
    }
    if shared.draining.load(Ordering::SeqCst) {
        return respond(StatusCode::SERVICE_UNAVAILABLE, "server shutting down\n");
    }
    if let (Some(allowed), Some(origin)) = (
        &shared.config.load().allowed_origins,
        req.headers().get(ORIGIN),
    ) {
        let listed = origin
            .to_str()
            .is_ok_and(|o| allowed.iter().any(|a| a.eq_ignore_ascii_case(o)));
        if !listed {
            return respond(StatusCode::FORBIDDEN, "origin not allowed\n");
        }
    }
    let Some(guard) = shared.try_admit(peer.ip()) else {
        return respond(StatusCode::SERVICE_UNAVAILABLE, "too many connections\n");
    };
    let (response, fut) = match fastwebsockets::upgrade::upgrade(&mut *req) {
        Ok(pair) => pair,
        Err(e) => {
            tracing::debug!(%peer, error = %e, "bad upgrade request");
            return respond(StatusCode::BAD_REQUEST, "bad WebSocket upgrade request\n");
        }
    };
    let conn = ConnId(shared.next_conn.fetch_add(1, Ordering::Relaxed));
    let span = info_span!("conn", id = conn.0, %peer, user = tracing::field::Empty);
    let shared = shared.clone();
    tokio::spawn(
        async move {
            // Written so that nothing is held twice across the awaits (the
            // task's future is part of every connection's memory).
            let serving = match fut.await {
                Ok(ws) => conn::serve(ws, conn, shared),
                Err(e) => {
                    tracing::debug!(error = %e, "upgrade failed");
                    return;
                }
            };
            serving.await;
            drop(guard);
        }
        .instrument(span),
    );
    response.map(|_| Full::new(Bytes::new()))
}

/// The core's limits from the configuration.
pub fn core_limits(config: &Config) -> Limits {
    Limits {
        auth_timeout_ms: config.auth_timeout_ms,
        auth_failures_max: crate::core::AUTH_FAILURES_MAX,
        history_limit: config.history_limit,
        typing_timeout_ms: config.typing_timeout_ms,
        rate_limit_messages: u64::from(config.rate_limit_messages),
        rate_limit_requests: u64::from(config.rate_limit_requests),
        rate_limit_window_ms: config.rate_limit_window_ms,
        rate_limit_disconnect_after: config.rate_limit_disconnect_after,
        rooms_per_user_max: u32::try_from(config.rooms_per_user_max).unwrap_or(u32::MAX),
    }
}

/// `DEFAULT_ROOMS` for the core.
pub fn default_rooms(config: &Config) -> Vec<DefaultRoom> {
    config
        .default_rooms
        .iter()
        .map(|(id, name)| DefaultRoom {
            id: id.clone(),
            name: name.clone(),
        })
        .collect()
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handshake_caps_are_twice_the_connection_caps_with_floors() {
        let caps = |total, per_ip| {
            handshake_caps(&Config {
                max_connections: total,
                max_connections_per_ip: per_ip,
                ..Config::default()
            })
        };
        assert_eq!(caps(10_000, 100), (20_000, 200));
        // Small caps do not starve health checks.
        assert_eq!(caps(2, 1), (HANDSHAKES_MIN, HANDSHAKES_PER_IP_MIN));
        assert_eq!(caps(usize::MAX, usize::MAX), (usize::MAX, usize::MAX));
    }

    #[test]
    fn a_counter_caps_in_total_and_per_address_and_gives_back() {
        let c = Counter::default();
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        assert!(c.try_take(a, 3, 2));
        assert!(c.try_take(a, 3, 2));
        assert!(!c.try_take(a, 3, 2), "per address");
        assert!(c.try_take(b, 3, 2));
        assert!(!c.try_take(b, 3, 2), "in total");
        c.give_back(a);
        assert!(c.try_take(b, 3, 2));
        assert_eq!(c.total(), 3);
        for ip in [a, b, b] {
            c.give_back(ip);
        }
        assert_eq!(c.total(), 0);
        assert!(c.lock().is_empty(), "no address left behind");
    }
}
