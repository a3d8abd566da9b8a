//! The [`Config`] type, the default of every setting next to it, and the
//! log and deployment settings.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use super::cidr::Cidr;
use super::jwt::{JwtAlgorithm, JwtKeySource};

/// Default for `HOST`: listen on every IPv4 interface.
pub const DEFAULT_HOST: IpAddr = IpAddr::V4(Ipv4Addr::UNSPECIFIED);
/// Default for `PORT`.
pub const DEFAULT_PORT: u16 = 3001;
/// Default for `MAX_MESSAGE_BYTES`: the largest WebSocket message accepted.
pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 65_536;
/// Upper bound for `MAX_MESSAGE_BYTES` (64 MiB): a message is buffered whole
/// before it is parsed, so this bounds per-connection memory.
pub const MAX_MESSAGE_BYTES_LIMIT: usize = 64 * 1024 * 1024;
/// Default for `MAX_CONNECTIONS`: WebSocket connections in total.
pub const DEFAULT_MAX_CONNECTIONS: usize = 100_000;
/// Default for `MAX_CONNECTIONS_PER_IP`: WebSocket connections per client
/// address (an IPv6 /64 counts as one address).
pub const DEFAULT_MAX_CONNECTIONS_PER_IP: usize = 1_000;
/// Default for `TRUSTED_PROXIES`: no proxy is trusted, so the client address
/// is always the TCP peer's.
pub const DEFAULT_TRUSTED_PROXIES: &str = "";
/// Default for `JWT_ALGORITHM`.
pub const DEFAULT_JWT_ALGORITHM: JwtAlgorithm = JwtAlgorithm::Hs256;
/// Default for `JWT_LEEWAY_SECONDS`: tolerated clock skew for `exp`/`nbf`.
pub const DEFAULT_JWT_LEEWAY_SECONDS: u64 = 5;
/// Upper bound for `JWT_LEEWAY_SECONDS` (one day); more would make `exp`
/// meaningless.
pub const JWT_LEEWAY_MAX_SECONDS: u64 = 86_400;
/// Default for `AUTH_TIMEOUT_MS`: time a connection has to authenticate.
pub const DEFAULT_AUTH_TIMEOUT_MS: u64 = 10_000;
/// Default for `DEFAULT_ROOMS` (comma-separated `id:name` pairs).
pub const DEFAULT_DEFAULT_ROOMS: &str = "general:General Chat";
/// Default for `MAX_CONTENT_LENGTH`: message content length in code points.
pub const DEFAULT_MAX_CONTENT_LENGTH: usize = 4_000;
/// Default for `HISTORY_LIMIT`: messages retained per room.
pub const DEFAULT_HISTORY_LIMIT: usize = 100;
/// Default for `TYPING_TIMEOUT_MS`: how long a typing indicator lives.
pub const DEFAULT_TYPING_TIMEOUT_MS: u64 = 5_000;
/// Default for `REDIS_KEY_PREFIX`.
pub const DEFAULT_REDIS_KEY_PREFIX: &str = "chatflow";
/// Default for `NODE_TTL_MS`.
pub const DEFAULT_NODE_TTL_MS: u64 = 15_000;
/// Smallest `NODE_TTL_MS`: a lease renewed every third of it must outlast
/// a few Redis round trips.
pub const NODE_TTL_MIN_MS: u64 = 300;
/// Default for `REDIS_TIMEOUT_MS`.
pub const DEFAULT_REDIS_TIMEOUT_MS: u64 = 2_000;
/// Default for `PRESENCE_DELAY_MS`: how long presence and typing notices may
/// be held so that several to one connection share one write.
pub const DEFAULT_PRESENCE_DELAY_MS: u64 = 200;
/// Largest `PRESENCE_DELAY_MS`.
pub const PRESENCE_DELAY_MAX_MS: u64 = 10_000;
/// Default for `RATE_LIMIT_MESSAGES`: `SEND_MESSAGE`s per user per window.
pub const DEFAULT_RATE_LIMIT_MESSAGES: u32 = 20;
/// Default for `RATE_LIMIT_WINDOW_MS`: the rate-limit refill window.
pub const DEFAULT_RATE_LIMIT_WINDOW_MS: u64 = 10_000;
/// Default for `RATE_LIMIT_REQUESTS`: other requests per connection per window.
pub const DEFAULT_RATE_LIMIT_REQUESTS: u32 = 100;
/// Default for `RATE_LIMIT_DISCONNECT_AFTER`: rejected requests in a row
/// before the connection is closed.
pub const DEFAULT_RATE_LIMIT_DISCONNECT_AFTER: u32 = 50;
/// Default for `ROOMS_PER_USER_MAX`: rooms one user may create.
pub const DEFAULT_ROOMS_PER_USER_MAX: usize = 100;
/// Default for `MAX_ROOMS`: rooms that may exist at once, default rooms
/// included.
pub const DEFAULT_MAX_ROOMS: usize = 100_000;
/// Default for `ROOM_IDLE_TTL_MS` (one day): how long a room created by a
/// user is kept without a member connection.
pub const DEFAULT_ROOM_IDLE_TTL_MS: u64 = 86_400_000;
/// Default for `WORKER_THREADS`: `0`, one runtime worker thread per core.
pub const DEFAULT_WORKER_THREADS: usize = 0;
/// Most runtime worker threads `WORKER_THREADS` may ask for.
pub const WORKER_THREADS_MAX: u64 = 1024;

/// Default for `PING_INTERVAL_MS`: WebSocket ping period.
pub const DEFAULT_PING_INTERVAL_MS: u64 = 30_000;
/// Default for `IDLE_TIMEOUT_MS`: silence after which a connection is dropped.
pub const DEFAULT_IDLE_TIMEOUT_MS: u64 = 75_000;
/// Default for `OUTBOUND_QUEUE_LIMIT`: queued outbound messages per connection.
pub const DEFAULT_OUTBOUND_QUEUE_LIMIT: usize = 1_024;
/// Default for `OUTBOUND_QUEUE_BYTES`: bytes of frames a connection's socket
/// has not yet accepted, queued or being written, before it is closed as a
/// slow consumer (4 MiB).
pub const DEFAULT_OUTBOUND_QUEUE_BYTES: usize = 4 * 1024 * 1024;
/// Default for `WRITE_TIMEOUT_MS`: how long a socket may accept no bytes
/// while frames wait for it before it is dropped.
pub const DEFAULT_WRITE_TIMEOUT_MS: u64 = 30_000;
/// Default for `OUTBOUND_MEMORY_MAX_BYTES`: all open connections' queued
/// bytes together (1 GiB).
pub const DEFAULT_OUTBOUND_MEMORY_MAX_BYTES: usize = 1024 * 1024 * 1024;
/// Default for `SHUTDOWN_GRACE_MS`: how long shutdown waits for clients.
pub const DEFAULT_SHUTDOWN_GRACE_MS: u64 = 10_000;
/// Default for `LOG_LEVEL` (a `tracing` `EnvFilter` directive string).
pub const DEFAULT_LOG_LEVEL: &str = "info";
/// Default for `LOG_FORMAT`.
pub const DEFAULT_LOG_FORMAT: LogFormat = LogFormat::Json;
/// Default for `APP_ENV`.
pub const DEFAULT_APP_ENV: AppEnv = AppEnv::Development;

/// Default for `DEMO_PAGE`: on, except under `APP_ENV=production` (see
/// [`Config::demo_page`]).
pub fn default_demo_page(app_env: AppEnv) -> bool {
    !app_env.is_production()
}

/// Upper bound for every `…_MS` duration setting (30 days). Keeps
/// `now_ms + duration_ms` far from overflow in the core and the timers.
pub const DURATION_MAX_MS: u64 = 30 * 24 * 60 * 60 * 1_000;
/// Log output format (`LOG_FORMAT`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LogFormat {
    /// One JSON object per line, for log shippers (`json`).
    Json,
    /// Human-readable multi-line output, for a terminal (`pretty`).
    Pretty,
}

impl LogFormat {
    /// The `LOG_FORMAT` spelling (`json` or `pretty`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Json => "json",
            Self::Pretty => "pretty",
        }
    }

    /// Parses a `LOG_FORMAT` value (whitespace and ASCII case ignored).
    pub fn from_name(name: &str) -> Option<Self> {
        let name = name.trim();
        [Self::Json, Self::Pretty]
            .into_iter()
            .find(|format| format.as_str().eq_ignore_ascii_case(name))
    }
}

impl fmt::Display for LogFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Deployment environment (`APP_ENV`). Production turns insecure
/// conveniences (the development JWT secret, short secrets) into start-up
/// errors.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AppEnv {
    /// `development`: the built-in development JWT secret is allowed.
    Development,
    /// `production`: a real `JWT_SECRET` of at least 32 bytes is required
    /// under HS256.
    Production,
}

impl AppEnv {
    /// The `APP_ENV` spelling (`development` or `production`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Development => "development",
            Self::Production => "production",
        }
    }

    /// Parses an `APP_ENV` value (whitespace and ASCII case ignored).
    pub fn from_name(name: &str) -> Option<Self> {
        let name = name.trim();
        [Self::Development, Self::Production]
            .into_iter()
            .find(|env| env.as_str().eq_ignore_ascii_case(name))
    }

    /// Whether this is `production`.
    pub fn is_production(self) -> bool {
        self == Self::Production
    }
}

impl fmt::Display for AppEnv {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The validated server configuration: one typed field per setting of the
/// wire contract. Build it with [`Config::from_args`] (the binary),
/// [`Config::from_lookup`] (tests, simulations) or [`Config::default`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// `HOST`: the IP address to listen on.
    pub host: IpAddr,
    /// `PORT`: the TCP port to listen on; `0` asks the OS for a free one.
    pub port: u16,
    /// `MAX_MESSAGE_BYTES`: a larger WebSocket message closes the connection
    /// with `1009`.
    pub max_message_bytes: usize,
    /// `ALLOWED_ORIGINS`: when `Some`, an upgrade whose `Origin` header is
    /// present and not in this list is refused with `403`; `None` allows any
    /// origin. Entries are `scheme://host[:port]`, ASCII-lowercased (browsers
    /// send the origin lowercased), without duplicates.
    pub allowed_origins: Option<Vec<String>>,
    /// `MAX_CONNECTIONS`: WebSocket connections in total before upgrades are
    /// refused with `503`.
    pub max_connections: usize,
    /// `MAX_CONNECTIONS_PER_IP`: WebSocket connections from one client
    /// address (an IPv6 /64 counts as one) before upgrades are refused with
    /// `503`.
    pub max_connections_per_ip: usize,
    /// `TRUSTED_PROXIES`: the networks of the reverse proxies whose
    /// `X-Forwarded-For` names the client address; empty trusts none.
    pub trusted_proxies: Vec<Cidr>,
    /// `JWT_ALGORITHM`: the only `alg` accepted in tokens.
    pub jwt_algorithm: JwtAlgorithm,
    /// `JWT_SECRET` / `JWT_PUBLIC_KEY_FILE`: where the verification key
    /// comes from (the key itself is read and parsed by `auth`).
    pub jwt_key: JwtKeySource,
    /// `JWT_ISSUER`: when set, tokens must carry exactly this `iss`.
    pub jwt_issuer: Option<String>,
    /// `JWT_AUDIENCE`: when set, tokens must carry this value in `aud`.
    pub jwt_audience: Option<String>,
    /// `JWT_LEEWAY_SECONDS`: clock skew tolerated on `exp` and `nbf`.
    pub jwt_leeway_seconds: u64,
    /// `AUTH_TIMEOUT_MS`: an unauthenticated connection is closed with `1008`
    /// after this long.
    pub auth_timeout_ms: u64,
    /// `DEFAULT_ROOMS`: `(id, name)` of the public rooms that exist from
    /// start-up, created by `system`, in the configured order.
    pub default_rooms: Vec<(String, String)>,
    /// `MAX_CONTENT_LENGTH`: longest message `content`, in code points.
    pub max_content_length: usize,
    /// `HISTORY_LIMIT`: messages retained per room (at least 1).
    pub history_limit: usize,
    /// `TYPING_TIMEOUT_MS`: a typing indicator not refreshed for this long is
    /// cleared with a broadcast `isTyping: false`.
    pub typing_timeout_ms: u64,
    /// `PRESENCE_DELAY_MS`: presence and typing notices (`USER_JOINED`,
    /// `USER_LEFT`, `TYPING_UPDATE`) may wait this long before they are
    /// written, so that those a connection gets meanwhile share one write;
    /// any other frame to the connection takes them along at once. `0`
    /// writes them at once.
    pub presence_delay_ms: u64,
    /// `RATE_LIMIT_MESSAGES`: `SEND_MESSAGE` bucket capacity per user.
    pub rate_limit_messages: u32,
    /// `RATE_LIMIT_WINDOW_MS`: both buckets refill fully over this window.
    pub rate_limit_window_ms: u64,
    /// `RATE_LIMIT_REQUESTS`: bucket capacity for every other request, per
    /// connection.
    pub rate_limit_requests: u32,
    /// `RATE_LIMIT_DISCONNECT_AFTER`: rejected requests in a row after which
    /// the connection is closed with `1008`.
    pub rate_limit_disconnect_after: u32,
    /// `ROOMS_PER_USER_MAX`: rooms one user may create (`0` disables
    /// `CREATE_ROOM`). Bounds the memory one account can claim.
    pub rooms_per_user_max: usize,
    /// `MAX_ROOMS`: rooms that may exist at once, default rooms included;
    /// beyond it `CREATE_ROOM` is `FORBIDDEN`. At least the number of
    /// `DEFAULT_ROOMS`.
    pub max_rooms: usize,
    /// `ROOM_IDLE_TTL_MS`: a room created by a user is deleted, with its
    /// history, once it has had no member connection for this long; `0`
    /// keeps rooms for ever. Default rooms are never deleted.
    pub room_idle_ttl_ms: u64,
    /// `PING_INTERVAL_MS`: period of server WebSocket pings.
    pub ping_interval_ms: u64,
    /// `IDLE_TIMEOUT_MS`: a connection silent for this long is dropped;
    /// always greater than `ping_interval_ms`.
    pub idle_timeout_ms: u64,
    /// `OUTBOUND_QUEUE_LIMIT`: queued outbound messages per connection before
    /// it is closed as a slow consumer (`1013`).
    pub outbound_queue_limit: usize,
    /// `OUTBOUND_QUEUE_BYTES`: bytes of frames not yet accepted by a
    /// connection's socket (queued, or taken by its writer) before it is
    /// closed as a slow consumer (`1013`); one frame is always accepted into
    /// an empty queue.
    pub outbound_queue_bytes: usize,
    /// `WRITE_TIMEOUT_MS`: a socket that accepts no bytes for this long while
    /// frames wait for it is dropped (a `1013` close frame is tried).
    pub write_timeout_ms: u64,
    /// `OUTBOUND_MEMORY_MAX_BYTES`: all open connections' queued bytes
    /// together; past it the connections with the largest queues are closed
    /// with `1013`. At least `outbound_queue_bytes`.
    pub outbound_memory_max_bytes: usize,
    /// `SHUTDOWN_GRACE_MS`: how long shutdown waits for clients to go after
    /// the `1001` close frames (`0`: do not wait).
    pub shutdown_grace_ms: u64,
    /// `WORKER_THREADS`: runtime worker threads; `0` for one per core.
    pub worker_threads: usize,
    /// `LOG_LEVEL`: a `tracing_subscriber::EnvFilter` directive string,
    /// checked to parse.
    pub log_level: String,
    /// `LOG_FORMAT`: structured log output format.
    pub log_format: LogFormat,
    /// `APP_ENV`: deployment environment.
    pub app_env: AppEnv,
    /// `DEMO_PAGE`: whether the server serves its demo chat page (`GET /`
    /// and `/demo/…`; see `server/demo.rs`). Unset, it is on outside
    /// production ([`default_demo_page`]). The page's development-token
    /// endpoint exists only while the page is on *and* tokens are verified
    /// with the public development secret ([`Config::demo_tokens`]).
    pub demo_page: bool,
    /// `REDIS_URL`: the Redis every node of a cluster shares
    /// (`redis://[user:pass@]host:port[/db]`, `rediss://` for TLS), checked
    /// to parse; `None` (the default): one node, everything in memory.
    pub redis_url: Option<String>,
    /// `REDIS_KEY_PREFIX`: the first part of every key and channel name.
    pub redis_key_prefix: String,
    /// `NODE_TTL_MS`: how long a node's lease lasts; it renews it every
    /// third of that.
    pub node_ttl_ms: u64,
    /// `REDIS_TIMEOUT_MS`: the longest wait for any Redis answer.
    pub redis_timeout_ms: u64,
}

impl Default for Config {
    /// Every default of the contract, with the development JWT secret.
    fn default() -> Self {
        Self {
            host: DEFAULT_HOST,
            port: DEFAULT_PORT,
            max_message_bytes: DEFAULT_MAX_MESSAGE_BYTES,
            allowed_origins: None,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            max_connections_per_ip: DEFAULT_MAX_CONNECTIONS_PER_IP,
            trusted_proxies: Vec::new(),
            jwt_algorithm: DEFAULT_JWT_ALGORITHM,
            jwt_key: JwtKeySource::DevSecret,
            jwt_issuer: None,
            jwt_audience: None,
            jwt_leeway_seconds: DEFAULT_JWT_LEEWAY_SECONDS,
            auth_timeout_ms: DEFAULT_AUTH_TIMEOUT_MS,
            default_rooms: vec![("general".to_owned(), "General Chat".to_owned())],
            max_content_length: DEFAULT_MAX_CONTENT_LENGTH,
            history_limit: DEFAULT_HISTORY_LIMIT,
            typing_timeout_ms: DEFAULT_TYPING_TIMEOUT_MS,
            presence_delay_ms: DEFAULT_PRESENCE_DELAY_MS,
            rate_limit_messages: DEFAULT_RATE_LIMIT_MESSAGES,
            rate_limit_window_ms: DEFAULT_RATE_LIMIT_WINDOW_MS,
            rate_limit_requests: DEFAULT_RATE_LIMIT_REQUESTS,
            rate_limit_disconnect_after: DEFAULT_RATE_LIMIT_DISCONNECT_AFTER,
            rooms_per_user_max: DEFAULT_ROOMS_PER_USER_MAX,
            max_rooms: DEFAULT_MAX_ROOMS,
            room_idle_ttl_ms: DEFAULT_ROOM_IDLE_TTL_MS,
            ping_interval_ms: DEFAULT_PING_INTERVAL_MS,
            idle_timeout_ms: DEFAULT_IDLE_TIMEOUT_MS,
            outbound_queue_limit: DEFAULT_OUTBOUND_QUEUE_LIMIT,
            outbound_queue_bytes: DEFAULT_OUTBOUND_QUEUE_BYTES,
            write_timeout_ms: DEFAULT_WRITE_TIMEOUT_MS,
            outbound_memory_max_bytes: DEFAULT_OUTBOUND_MEMORY_MAX_BYTES,
            shutdown_grace_ms: DEFAULT_SHUTDOWN_GRACE_MS,
            worker_threads: DEFAULT_WORKER_THREADS,
            log_level: DEFAULT_LOG_LEVEL.to_owned(),
            log_format: DEFAULT_LOG_FORMAT,
            app_env: DEFAULT_APP_ENV,
            demo_page: default_demo_page(DEFAULT_APP_ENV),
            redis_url: None,
            redis_key_prefix: DEFAULT_REDIS_KEY_PREFIX.to_owned(),
            node_ttl_ms: DEFAULT_NODE_TTL_MS,
            redis_timeout_ms: DEFAULT_REDIS_TIMEOUT_MS,
        }
    }
}

impl Config {
    /// Whether tokens are verified with the public
    /// [`DEV_JWT_SECRET`](super::jwt::DEV_JWT_SECRET); the
    /// server logs a warning at start-up when this is true.
    pub fn uses_dev_secret(&self) -> bool {
        self.jwt_key == JwtKeySource::DevSecret
    }

    /// Whether the demo page may hand out development tokens
    /// (`POST /demo/token`): only while it is on and tokens are verified with
    /// the public [`DEV_JWT_SECRET`](super::jwt::DEV_JWT_SECRET), which anyone
    /// can sign with anyway (so never under `APP_ENV=production`, which
    /// refuses that secret, nor with a `JWT_SECRET` or a public key).
    pub fn demo_tokens(&self) -> bool {
        self.demo_page && self.uses_dev_secret()
    }

    /// Whether `ip` is in one of the `TRUSTED_PROXIES` networks.
    pub fn is_trusted_proxy(&self, ip: IpAddr) -> bool {
        self.trusted_proxies.iter().any(|net| net.contains(ip))
    }

    /// The socket address to bind (`HOST`:`PORT`).
    pub fn listen_addr(&self) -> SocketAddr {
        SocketAddr::new(self.host, self.port)
    }
}
