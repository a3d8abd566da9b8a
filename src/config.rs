//! Start-up configuration: every setting of the wire contract
//! (`PROTOCOL.md`), read once, validated once, and handed to the rest of the
//! server as typed values so that nothing downstream re-parses strings.
//!
//! # Sources and precedence
//!
//! A setting comes from, in order of precedence, a command-line flag
//! (`--port 4000`), a real environment variable (`PORT=4000`), or a `.env`
//! file in the working directory. Clap applies the first two
//! ([`ServeArgs`] declares every flag with its `env = "…"`); the `.env` file
//! is loaded into the process environment *before* clap parses by
//! [`crate::cli::load_dotenv`], and since `.env` never overrides a variable
//! that is already set, the precedence falls out naturally.
//!
//! [`ServeArgs`] keeps every value as the raw string the operator typed;
//! [`Config::from_args`] (or [`Config::from_lookup`] in tests) validates them
//! so that each error names the *environment variable* and the offending
//! value, whichever of the three sources it came from:
//!
//! ```text
//! invalid value "abc" for PORT: expected an integer 0-65535
//! ```
//!
//! # Value rules
//!
//! * An unset variable takes the default (`DEFAULT_…` constants below).
//! * A variable set to the empty string is an error (unset it to get the
//!   default) — except `DEFAULT_ROOMS`, where the empty string means "no
//!   default rooms".
//! * Numbers, enum names and addresses tolerate surrounding whitespace; enum
//!   names are matched ASCII case-insensitively (`pretty`, `Pretty`).
//! * Limits that make no sense at zero must be at least 1. Durations are
//!   capped at [`DURATION_MAX_MS`] so that `now + timeout` can never overflow.
//!
//! # JWT key resolution
//!
//! See [`JwtKeySource`]: `HS256` uses `JWT_SECRET`, or outside production the
//! public [`DEV_JWT_SECRET`] (and [`Config::uses_dev_secret`] tells the server
//! to warn about it); `RS256`, `ES256` and `EdDSA` use the PEM public key at
//! `JWT_PUBLIC_KEY_FILE`, which is read and checked at start-up.

use std::fmt;
use std::io::Read;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};

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
/// Default for `MAX_CONNECTIONS_PER_IP`: WebSocket connections per peer address.
pub const DEFAULT_MAX_CONNECTIONS_PER_IP: usize = 1_000;
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
/// Default for `SHUTDOWN_GRACE_MS`: how long shutdown waits for clients.
pub const DEFAULT_SHUTDOWN_GRACE_MS: u64 = 10_000;
/// Default for `LOG_LEVEL` (a `tracing` `EnvFilter` directive string).
pub const DEFAULT_LOG_LEVEL: &str = "info";
/// Default for `LOG_FORMAT`.
pub const DEFAULT_LOG_FORMAT: LogFormat = LogFormat::Json;
/// Default for `APP_ENV`.
pub const DEFAULT_APP_ENV: AppEnv = AppEnv::Development;

/// Upper bound for every `…_MS` duration setting (30 days). Keeps
/// `now_ms + duration_ms` far from overflow in the core and the timers.
pub const DURATION_MAX_MS: u64 = 30 * 24 * 60 * 60 * 1_000;

/// Minimum `JWT_SECRET` length under `APP_ENV=production` (256 bits, the
/// HS256 output size; shorter secrets are guessable).
pub const JWT_SECRET_MIN_BYTES: usize = 32;

/// The built-in HS256 secret used when `JWT_SECRET` is unset outside
/// production. DEVELOPMENT ONLY: it is public (it is in this source file), so
/// anyone can mint tokens a server using it accepts. The server warns when it
/// is in use and refuses it under `APP_ENV=production`.
pub const DEV_JWT_SECRET: &str = "chat-flow-DEVELOPMENT-ONLY-jwt-secret-never-use-in-production";

/// Largest public key file read from `JWT_PUBLIC_KEY_FILE` (a PEM public key
/// is a few KiB at most; this stops a misconfigured path from being slurped).
const PUBLIC_KEY_FILE_MAX_BYTES: u64 = 64 * 1024;

/// Smallest accepted RSA modulus for `RS256` (NIST SP 800-131A).
const RSA_MIN_BITS: usize = 2048;

/// Longest part of an offending value quoted back in an error message.
const SHOWN_VALUE_MAX_CHARS: usize = 120;

/// The one JWT signature algorithm the server accepts (`JWT_ALGORITHM`).
///
/// Exactly one algorithm is accepted so that a token can never choose how it
/// is verified (no `alg` confusion).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum JwtAlgorithm {
    /// `HS256`: HMAC-SHA256 with the shared `JWT_SECRET`.
    Hs256,
    /// `RS256`: RSASSA-PKCS1-v1_5 with SHA-256, RSA public key in
    /// `JWT_PUBLIC_KEY_FILE`.
    Rs256,
    /// `ES256`: ECDSA on P-256 with SHA-256, EC public key in
    /// `JWT_PUBLIC_KEY_FILE`.
    Es256,
    /// `EdDSA`: Ed25519, public key in `JWT_PUBLIC_KEY_FILE`.
    EdDsa,
}

impl JwtAlgorithm {
    /// Every accepted value, in the spelling used by `JWT_ALGORITHM` and the
    /// JWT `alg` header.
    pub const ALL: [JwtAlgorithm; 4] = [Self::Hs256, Self::Rs256, Self::Es256, Self::EdDsa];

    /// The `alg` header value (`HS256`, `RS256`, `ES256`, `EdDSA`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Hs256 => "HS256",
            Self::Rs256 => "RS256",
            Self::Es256 => "ES256",
            Self::EdDsa => "EdDSA",
        }
    }

    /// Parses a `JWT_ALGORITHM` value (surrounding whitespace and ASCII case
    /// are ignored); `None` for anything else.
    pub fn from_name(name: &str) -> Option<Self> {
        let name = name.trim();
        Self::ALL
            .into_iter()
            .find(|alg| alg.as_str().eq_ignore_ascii_case(name))
    }

    /// The matching `jsonwebtoken` algorithm.
    pub fn jsonwebtoken(self) -> jsonwebtoken::Algorithm {
        match self {
            Self::Hs256 => jsonwebtoken::Algorithm::HS256,
            Self::Rs256 => jsonwebtoken::Algorithm::RS256,
            Self::Es256 => jsonwebtoken::Algorithm::ES256,
            Self::EdDsa => jsonwebtoken::Algorithm::EdDSA,
        }
    }

    /// Whether the algorithm verifies with a public key file rather than a
    /// shared secret.
    pub fn uses_public_key(self) -> bool {
        self != Self::Hs256
    }
}

impl fmt::Display for JwtAlgorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

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

/// Where the key that verifies JWTs comes from, resolved from
/// `JWT_ALGORITHM`, `JWT_SECRET`, `JWT_PUBLIC_KEY_FILE` and `APP_ENV`.
///
/// One field instead of separate secret/path fields so that an inconsistent
/// combination (a public key under HS256, a secret under RS256) cannot be
/// represented after validation. `Debug` never prints key material.
#[derive(Clone, PartialEq, Eq)]
pub enum JwtKeySource {
    /// HS256 with [`DEV_JWT_SECRET`], because `JWT_SECRET` is unset and
    /// `APP_ENV` is not `production`. The server must log a warning.
    DevSecret,
    /// HS256 with the bytes of `JWT_SECRET`.
    Secret(Vec<u8>),
    /// RS256, ES256 or EdDSA with the PEM public key read from
    /// `JWT_PUBLIC_KEY_FILE` at start-up (already checked to parse).
    PublicKeyPem {
        /// The path it was read from, for logs.
        path: PathBuf,
        /// The file contents.
        pem: Vec<u8>,
    },
}

impl JwtKeySource {
    /// The HMAC secret for HS256 (the development one for
    /// [`JwtKeySource::DevSecret`]); `None` for a public key.
    pub fn hmac_secret(&self) -> Option<&[u8]> {
        match self {
            Self::DevSecret => Some(DEV_JWT_SECRET.as_bytes()),
            Self::Secret(secret) => Some(secret),
            Self::PublicKeyPem { .. } => None,
        }
    }
}

impl fmt::Debug for JwtKeySource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::DevSecret => f.write_str("DevSecret"),
            Self::Secret(secret) => write!(f, "Secret([redacted; {} bytes])", secret.len()),
            Self::PublicKeyPem { path, pem } => f
                .debug_struct("PublicKeyPem")
                .field("path", path)
                .field("pem_bytes", &pem.len())
                .finish(),
        }
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
    /// `MAX_CONNECTIONS_PER_IP`: WebSocket connections from one peer address
    /// before upgrades are refused with `503`.
    pub max_connections_per_ip: usize,
    /// `JWT_ALGORITHM`: the only `alg` accepted in tokens.
    pub jwt_algorithm: JwtAlgorithm,
    /// `JWT_SECRET` / `JWT_PUBLIC_KEY_FILE`: the verification key, resolved
    /// and checked at start-up.
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
    /// `PING_INTERVAL_MS`: period of server WebSocket pings.
    pub ping_interval_ms: u64,
    /// `IDLE_TIMEOUT_MS`: a connection silent for this long is dropped;
    /// always greater than `ping_interval_ms`.
    pub idle_timeout_ms: u64,
    /// `OUTBOUND_QUEUE_LIMIT`: queued outbound messages per connection before
    /// it is closed as a slow consumer (`1013`).
    pub outbound_queue_limit: usize,
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
            ping_interval_ms: DEFAULT_PING_INTERVAL_MS,
            idle_timeout_ms: DEFAULT_IDLE_TIMEOUT_MS,
            outbound_queue_limit: DEFAULT_OUTBOUND_QUEUE_LIMIT,
            shutdown_grace_ms: DEFAULT_SHUTDOWN_GRACE_MS,
            worker_threads: DEFAULT_WORKER_THREADS,
            log_level: DEFAULT_LOG_LEVEL.to_owned(),
            log_format: DEFAULT_LOG_FORMAT,
            app_env: DEFAULT_APP_ENV,
        }
    }
}

/// A configuration value that cannot be used. Start-up aborts with it; the
/// message always names the variable (or the `.env` file) so the operator
/// knows what to fix, and never contains secret material.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// A variable holds a value outside its rules.
    #[error("invalid value {value:?} for {var}: {expected}")]
    Invalid {
        /// The environment variable.
        var: &'static str,
        /// The offending value (shortened when long).
        value: String,
        /// What would have been accepted.
        expected: String,
    },
    /// A variable that the other settings make mandatory is unset.
    #[error("{var} is required {reason}")]
    Missing {
        /// The environment variable.
        var: &'static str,
        /// Why it is required, e.g. "when JWT_ALGORITHM is RS256".
        reason: String,
    },
    /// A secret is unacceptable under `APP_ENV=production` (its value is not
    /// shown).
    #[error("{var} is not acceptable when APP_ENV=production: {reason}")]
    InsecureSecret {
        /// The environment variable.
        var: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// The key file cannot be read.
    #[error("cannot read {var} {path:?}: {reason}")]
    KeyFileUnreadable {
        /// The environment variable naming the file.
        var: &'static str,
        /// The file.
        path: PathBuf,
        /// The I/O problem.
        reason: String,
    },
    /// The key file does not hold a usable public key.
    #[error("invalid key in {var} {path:?}: {reason}")]
    InvalidKey {
        /// The environment variable naming the file.
        var: &'static str,
        /// The file.
        path: PathBuf,
        /// What is wrong with the key.
        reason: String,
    },
    /// The `.env` file exists but cannot be loaded.
    #[error("cannot load .env: {reason}")]
    DotEnv {
        /// The problem (never includes a value from the file).
        reason: String,
    },
}

impl ConfigError {
    /// The environment variable at fault, or `None` for a `.env` problem.
    pub fn variable(&self) -> Option<&'static str> {
        match self {
            Self::Invalid { var, .. }
            | Self::Missing { var, .. }
            | Self::InsecureSecret { var, .. }
            | Self::KeyFileUnreadable { var, .. }
            | Self::InvalidKey { var, .. } => Some(var),
            Self::DotEnv { .. } => None,
        }
    }

    /// Builds [`ConfigError::Invalid`], shortening a long value.
    pub(crate) fn invalid(var: &'static str, value: &str, expected: impl Into<String>) -> Self {
        Self::Invalid {
            var,
            value: shown(value),
            expected: expected.into(),
        }
    }
}

/// Quotes at most [`SHOWN_VALUE_MAX_CHARS`] of a value in an error message.
fn shown(value: &str) -> String {
    match value.char_indices().nth(SHOWN_VALUE_MAX_CHARS) {
        Some((cut, _)) => format!("{}…", &value[..cut]),
        None => value.to_owned(),
    }
}

/// Declares [`ServeArgs`] (one `Option<String>` flag per variable, with its
/// `env`) and the variable → value lookup over it, from a single list so the
/// two can never disagree.
macro_rules! serve_args {
    ($( $(#[$attr:meta])* $field:ident = $var:tt; )*) => {
        /// The server's command-line flags, one per environment variable
        /// (`--port` / `PORT`, `--max-message-bytes` / `MAX_MESSAGE_BYTES`, …).
        ///
        /// Clap fills each field from the flag or else the variable (after
        /// [`crate::cli::load_dotenv`] has put `.env` into the environment).
        /// Values stay raw strings: [`Config::from_args`] validates them so
        /// that every error names the variable, whichever source the value
        /// came from.
        #[derive(Debug, Clone, Default, PartialEq, Eq, clap::Args)]
        pub struct ServeArgs {
            $(
                $(#[$attr])*
                #[arg(long, env = $var)]
                pub $field: Option<String>,
            )*
        }

        impl ServeArgs {
            /// Every environment variable the server reads, in `.env.example`
            /// order.
            pub const VARIABLES: &'static [&'static str] = &[$($var),*];

            /// The raw value given for environment variable `var` (by flag,
            /// environment or `.env`), or `None` when unset or unknown.
            pub fn value(&self, var: &str) -> Option<&str> {
                match var {
                    $($var => self.$field.as_deref(),)*
                    _ => None,
                }
            }
        }
    };
}

serve_args! {
    /// IP address to listen on [default: 0.0.0.0]
    host = "HOST";
    /// TCP port to listen on, 0 for any free port [default: 3001]
    port = "PORT";
    /// Largest WebSocket message in bytes; larger closes with 1009 [default: 65536]
    max_message_bytes = "MAX_MESSAGE_BYTES";
    /// Comma-separated origins allowed to upgrade, each scheme://host or scheme://host:port [default: any]
    allowed_origins = "ALLOWED_ORIGINS";
    /// WebSocket connections in total [default: 100000]
    max_connections = "MAX_CONNECTIONS";
    /// WebSocket connections per peer address [default: 1000]
    max_connections_per_ip = "MAX_CONNECTIONS_PER_IP";
    /// Accepted JWT algorithm: HS256, RS256, ES256 or EdDSA [default: HS256]
    jwt_algorithm = "JWT_ALGORITHM";
    /// HS256 secret (prefer the environment: flags show up in `ps`) [default: built-in development secret]
    #[arg(hide_env_values = true)]
    jwt_secret = "JWT_SECRET";
    /// PEM public key file for RS256, ES256 and EdDSA
    jwt_public_key_file = "JWT_PUBLIC_KEY_FILE";
    /// Required JWT `iss` claim [default: not checked]
    jwt_issuer = "JWT_ISSUER";
    /// Required JWT `aud` value [default: not checked]
    jwt_audience = "JWT_AUDIENCE";
    /// Clock leeway for `exp`/`nbf` in seconds [default: 5]
    jwt_leeway_seconds = "JWT_LEEWAY_SECONDS";
    /// Time allowed to authenticate, in milliseconds [default: 10000]
    auth_timeout_ms = "AUTH_TIMEOUT_MS";
    /// Comma-separated id:name rooms created at start-up; empty for none [default: general:General Chat]
    default_rooms = "DEFAULT_ROOMS";
    /// Longest message content in characters [default: 4000]
    max_content_length = "MAX_CONTENT_LENGTH";
    /// Messages kept per room [default: 100]
    history_limit = "HISTORY_LIMIT";
    /// Typing indicator lifetime in milliseconds [default: 5000]
    typing_timeout_ms = "TYPING_TIMEOUT_MS";
    /// Longest wait of presence and typing notices, so that several share a write, in milliseconds; 0 for none [default: 200]
    presence_delay_ms = "PRESENCE_DELAY_MS";
    /// SEND_MESSAGE per user per window [default: 20]
    rate_limit_messages = "RATE_LIMIT_MESSAGES";
    /// Rate-limit window in milliseconds [default: 10000]
    rate_limit_window_ms = "RATE_LIMIT_WINDOW_MS";
    /// Other requests per connection per window [default: 100]
    rate_limit_requests = "RATE_LIMIT_REQUESTS";
    /// Rejected requests in a row before disconnecting [default: 50]
    rate_limit_disconnect_after = "RATE_LIMIT_DISCONNECT_AFTER";
    /// Rooms one user may create [default: 100]
    rooms_per_user_max = "ROOMS_PER_USER_MAX";
    /// WebSocket ping period in milliseconds [default: 30000]
    ping_interval_ms = "PING_INTERVAL_MS";
    /// Drop a connection silent this long, in milliseconds [default: 75000]
    idle_timeout_ms = "IDLE_TIMEOUT_MS";
    /// Queued outbound messages per connection [default: 1024]
    outbound_queue_limit = "OUTBOUND_QUEUE_LIMIT";
    /// Shutdown wait for clients in milliseconds [default: 10000]
    shutdown_grace_ms = "SHUTDOWN_GRACE_MS";
    /// Runtime worker threads; 0 for one per core [default: 0]
    worker_threads = "WORKER_THREADS";
    /// Log filter directives, e.g. `info` or `chat_flow=debug,info` [default: info]
    log_level = "LOG_LEVEL";
    /// Log format: json or pretty [default: json]
    log_format = "LOG_FORMAT";
    /// Deployment environment: development or production [default: development]
    app_env = "APP_ENV";
}

impl Config {
    /// Validates the flags/environment/`.env` values clap collected into
    /// `args`. This is what the binary calls.
    pub fn from_args(args: &ServeArgs) -> Result<Config, ConfigError> {
        Self::from_lookup(|var| args.value(var).map(str::to_owned))
    }

    /// Builds the configuration from a variable lookup (`None` = unset),
    /// without touching the process environment. Tests and the simulation
    /// use it with a map or a closure. Only `JWT_PUBLIC_KEY_FILE` touches the
    /// file system.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Config, ConfigError> {
        let vars = Vars { lookup: &lookup };

        let host = vars.parse("HOST", DEFAULT_HOST, |raw| {
            raw.trim()
                .parse::<IpAddr>()
                .map_err(|_| "expected an IP address such as 0.0.0.0 or ::".to_owned())
        })?;
        let port = vars.int("PORT", DEFAULT_PORT, 0, u64::from(u16::MAX))?;
        let max_message_bytes = vars.int(
            "MAX_MESSAGE_BYTES",
            DEFAULT_MAX_MESSAGE_BYTES,
            1,
            MAX_MESSAGE_BYTES_LIMIT as u64,
        )?;
        let allowed_origins = match vars.get("ALLOWED_ORIGINS") {
            None => None,
            Some(raw) => Some(
                parse_origins(&raw)
                    .map_err(|e| ConfigError::invalid("ALLOWED_ORIGINS", &raw, e))?,
            ),
        };
        let max_connections =
            vars.int("MAX_CONNECTIONS", DEFAULT_MAX_CONNECTIONS, 1, usize_max())?;
        let max_connections_per_ip = vars.int(
            "MAX_CONNECTIONS_PER_IP",
            DEFAULT_MAX_CONNECTIONS_PER_IP,
            1,
            usize_max(),
        )?;
        let app_env = vars.parse("APP_ENV", DEFAULT_APP_ENV, |raw| {
            AppEnv::from_name(raw).ok_or_else(|| "expected development or production".to_owned())
        })?;
        let jwt_algorithm = vars.parse("JWT_ALGORITHM", DEFAULT_JWT_ALGORITHM, |raw| {
            JwtAlgorithm::from_name(raw)
                .ok_or_else(|| "expected one of HS256, RS256, ES256, EdDSA".to_owned())
        })?;
        let jwt_key = resolve_jwt_key(&vars, jwt_algorithm, app_env)?;
        let jwt_issuer = vars.non_empty("JWT_ISSUER")?;
        let jwt_audience = vars.non_empty("JWT_AUDIENCE")?;
        let jwt_leeway_seconds = vars.int(
            "JWT_LEEWAY_SECONDS",
            DEFAULT_JWT_LEEWAY_SECONDS,
            0,
            JWT_LEEWAY_MAX_SECONDS,
        )?;
        let auth_timeout_ms = vars.duration_ms("AUTH_TIMEOUT_MS", DEFAULT_AUTH_TIMEOUT_MS, 1)?;
        let default_rooms = match vars.get("DEFAULT_ROOMS") {
            None => parse_default_rooms(DEFAULT_DEFAULT_ROOMS)
                .map_err(|e| ConfigError::invalid("DEFAULT_ROOMS", DEFAULT_DEFAULT_ROOMS, e))?,
            Some(raw) => parse_default_rooms(&raw)
                .map_err(|e| ConfigError::invalid("DEFAULT_ROOMS", &raw, e))?,
        };
        let max_content_length = vars.int(
            "MAX_CONTENT_LENGTH",
            DEFAULT_MAX_CONTENT_LENGTH,
            1,
            usize_max(),
        )?;
        let history_limit = vars.int("HISTORY_LIMIT", DEFAULT_HISTORY_LIMIT, 1, usize_max())?;
        let typing_timeout_ms =
            vars.duration_ms("TYPING_TIMEOUT_MS", DEFAULT_TYPING_TIMEOUT_MS, 1)?;
        let presence_delay_ms = vars.int(
            "PRESENCE_DELAY_MS",
            DEFAULT_PRESENCE_DELAY_MS,
            0,
            PRESENCE_DELAY_MAX_MS,
        )?;
        let rate_limit_messages = vars.int(
            "RATE_LIMIT_MESSAGES",
            DEFAULT_RATE_LIMIT_MESSAGES,
            1,
            u64::from(u32::MAX),
        )?;
        let rate_limit_window_ms =
            vars.duration_ms("RATE_LIMIT_WINDOW_MS", DEFAULT_RATE_LIMIT_WINDOW_MS, 1)?;
        let rate_limit_requests = vars.int(
            "RATE_LIMIT_REQUESTS",
            DEFAULT_RATE_LIMIT_REQUESTS,
            1,
            u64::from(u32::MAX),
        )?;
        let rate_limit_disconnect_after = vars.int(
            "RATE_LIMIT_DISCONNECT_AFTER",
            DEFAULT_RATE_LIMIT_DISCONNECT_AFTER,
            1,
            u64::from(u32::MAX),
        )?;
        let rooms_per_user_max = vars.int(
            "ROOMS_PER_USER_MAX",
            DEFAULT_ROOMS_PER_USER_MAX,
            0,
            usize_max(),
        )?;
        let ping_interval_ms = vars.duration_ms("PING_INTERVAL_MS", DEFAULT_PING_INTERVAL_MS, 1)?;
        let idle_timeout_ms = vars.duration_ms("IDLE_TIMEOUT_MS", DEFAULT_IDLE_TIMEOUT_MS, 1)?;
        if idle_timeout_ms <= ping_interval_ms {
            return Err(ConfigError::invalid(
                "IDLE_TIMEOUT_MS",
                &idle_timeout_ms.to_string(),
                format!(
                    "must be greater than PING_INTERVAL_MS ({ping_interval_ms}), \
                     or a live client would be dropped between two pings"
                ),
            ));
        }
        let outbound_queue_limit = vars.int(
            "OUTBOUND_QUEUE_LIMIT",
            DEFAULT_OUTBOUND_QUEUE_LIMIT,
            1,
            usize_max(),
        )?;
        let shutdown_grace_ms =
            vars.duration_ms("SHUTDOWN_GRACE_MS", DEFAULT_SHUTDOWN_GRACE_MS, 0)?;
        let worker_threads = vars.int(
            "WORKER_THREADS",
            DEFAULT_WORKER_THREADS,
            0,
            WORKER_THREADS_MAX,
        )?;
        let log_level = vars.parse("LOG_LEVEL", DEFAULT_LOG_LEVEL.to_owned(), |raw| {
            let directives = raw.trim();
            tracing_subscriber::EnvFilter::try_new(directives)
                .map(|_| directives.to_owned())
                .map_err(|e| {
                    format!(
                        "expected tracing filter directives such as info or chat_flow=debug ({e})"
                    )
                })
        })?;
        let log_format = vars.parse("LOG_FORMAT", DEFAULT_LOG_FORMAT, |raw| {
            LogFormat::from_name(raw).ok_or_else(|| "expected json or pretty".to_owned())
        })?;

        Ok(Config {
            host,
            port,
            max_message_bytes,
            allowed_origins,
            max_connections,
            max_connections_per_ip,
            jwt_algorithm,
            jwt_key,
            jwt_issuer,
            jwt_audience,
            jwt_leeway_seconds,
            auth_timeout_ms,
            default_rooms,
            max_content_length,
            history_limit,
            typing_timeout_ms,
            presence_delay_ms,
            rate_limit_messages,
            rate_limit_window_ms,
            rate_limit_requests,
            rate_limit_disconnect_after,
            rooms_per_user_max,
            ping_interval_ms,
            idle_timeout_ms,
            outbound_queue_limit,
            shutdown_grace_ms,
            worker_threads,
            log_level,
            log_format,
            app_env,
        })
    }

    /// Whether tokens are verified with the public [`DEV_JWT_SECRET`]; the
    /// server logs a warning at start-up when this is true.
    pub fn uses_dev_secret(&self) -> bool {
        self.jwt_key == JwtKeySource::DevSecret
    }

    /// The socket address to bind (`HOST`:`PORT`).
    pub fn listen_addr(&self) -> SocketAddr {
        SocketAddr::new(self.host, self.port)
    }
}

/// `usize::MAX` as a `u64` bound (saturating on exotic >64-bit targets).
fn usize_max() -> u64 {
    u64::try_from(usize::MAX).unwrap_or(u64::MAX)
}

/// Typed access to a variable lookup; every error names the variable.
struct Vars<'a> {
    lookup: &'a dyn Fn(&str) -> Option<String>,
}

impl Vars<'_> {
    /// The raw value, `None` when unset.
    fn get(&self, var: &str) -> Option<String> {
        (self.lookup)(var)
    }

    /// Parses a set, non-empty value with `parse` (whose error says what was
    /// expected), or returns `default` when unset.
    fn parse<T>(
        &self,
        var: &'static str,
        default: T,
        parse: impl FnOnce(&str) -> Result<T, String>,
    ) -> Result<T, ConfigError> {
        match self.get(var) {
            None => Ok(default),
            Some(raw) => {
                if raw.trim().is_empty() {
                    return Err(ConfigError::invalid(
                        var,
                        &raw,
                        "must not be empty (unset it to use the default)",
                    ));
                }
                parse(&raw).map_err(|expected| ConfigError::invalid(var, &raw, expected))
            }
        }
    }

    /// A decimal integer in `min..=max`.
    fn int<T: TryFrom<u64>>(
        &self,
        var: &'static str,
        default: T,
        min: u64,
        max: u64,
    ) -> Result<T, ConfigError> {
        let expected = if max == u64::MAX {
            format!("expected an integer >= {min}")
        } else {
            format!("expected an integer {min}-{max}")
        };
        self.parse(var, default, |raw| {
            raw.trim()
                .parse::<u64>()
                .ok()
                .filter(|n| (min..=max).contains(n))
                .and_then(|n| T::try_from(n).ok())
                .ok_or(expected)
        })
    }

    /// A duration in milliseconds in `min..=DURATION_MAX_MS`.
    fn duration_ms(&self, var: &'static str, default: u64, min: u64) -> Result<u64, ConfigError> {
        self.int(var, default, min, DURATION_MAX_MS)
    }

    /// An optional free-form string that must not be empty when set. Kept
    /// verbatim (no trimming): it is compared byte for byte with token claims.
    fn non_empty(&self, var: &'static str) -> Result<Option<String>, ConfigError> {
        match self.get(var) {
            None => Ok(None),
            Some(raw) if raw.trim().is_empty() => Err(ConfigError::invalid(
                var,
                &raw,
                "must not be empty or blank (unset it to disable the check)",
            )),
            Some(raw) => Ok(Some(raw)),
        }
    }
}

/// Resolves the JWT verification key (see [`JwtKeySource`]).
fn resolve_jwt_key(
    vars: &Vars<'_>,
    algorithm: JwtAlgorithm,
    app_env: AppEnv,
) -> Result<JwtKeySource, ConfigError> {
    let key_file = vars.get("JWT_PUBLIC_KEY_FILE");
    if !algorithm.uses_public_key() {
        if let Some(path) = key_file {
            // Silently ignoring it would fall back to a secret (possibly the
            // development one) while the operator believes keys are in use.
            return Err(ConfigError::invalid(
                "JWT_PUBLIC_KEY_FILE",
                &path,
                "is only used with JWT_ALGORITHM RS256, ES256 or EdDSA, but JWT_ALGORITHM is \
                 HS256; set JWT_ALGORITHM or unset JWT_PUBLIC_KEY_FILE",
            ));
        }
        return match vars.get("JWT_SECRET") {
            None if app_env.is_production() => Err(ConfigError::Missing {
                var: "JWT_SECRET",
                reason: "when APP_ENV=production and JWT_ALGORITHM is HS256".to_owned(),
            }),
            None => Ok(JwtKeySource::DevSecret),
            Some(secret) if app_env.is_production() && secret.len() < JWT_SECRET_MIN_BYTES => {
                Err(ConfigError::InsecureSecret {
                    var: "JWT_SECRET",
                    reason: format!(
                        "it is {} bytes long; at least {JWT_SECRET_MIN_BYTES} bytes are required",
                        secret.len()
                    ),
                })
            }
            Some(secret) if app_env.is_production() && secret == DEV_JWT_SECRET => {
                Err(ConfigError::InsecureSecret {
                    var: "JWT_SECRET",
                    reason: "it is the public built-in development secret".to_owned(),
                })
            }
            Some(secret) if secret.is_empty() => Err(ConfigError::invalid(
                "JWT_SECRET",
                "",
                "must not be empty (unset it to use the development secret)",
            )),
            Some(secret) => Ok(JwtKeySource::Secret(secret.into_bytes())),
        };
    }

    let Some(raw_path) = key_file else {
        return Err(ConfigError::Missing {
            var: "JWT_PUBLIC_KEY_FILE",
            reason: format!("when JWT_ALGORITHM is {algorithm}"),
        });
    };
    if raw_path.trim().is_empty() {
        return Err(ConfigError::invalid(
            "JWT_PUBLIC_KEY_FILE",
            &raw_path,
            format!("expected the path of a PEM public key file for {algorithm}"),
        ));
    }
    let path = PathBuf::from(raw_path);
    let pem = read_key_file(&path)?;
    let source = JwtKeySource::PublicKeyPem { path, pem };
    // Parse now so that a bad key is a start-up error, not a failed login.
    decoding_key(algorithm, &source)?;
    Ok(source)
}

/// Reads at most [`PUBLIC_KEY_FILE_MAX_BYTES`] of the key file.
fn read_key_file(path: &Path) -> Result<Vec<u8>, ConfigError> {
    let unreadable = |reason: String| ConfigError::KeyFileUnreadable {
        var: "JWT_PUBLIC_KEY_FILE",
        path: path.to_owned(),
        reason,
    };
    let file = std::fs::File::open(path).map_err(|e| unreadable(e.to_string()))?;
    let mut pem = Vec::new();
    file.take(PUBLIC_KEY_FILE_MAX_BYTES + 1)
        .read_to_end(&mut pem)
        .map_err(|e| unreadable(e.to_string()))?;
    if pem.len() as u64 > PUBLIC_KEY_FILE_MAX_BYTES {
        return Err(unreadable(format!(
            "larger than {PUBLIC_KEY_FILE_MAX_BYTES} bytes; expected a PEM public key"
        )));
    }
    Ok(pem)
}

/// Builds the `jsonwebtoken` key that verifies `algorithm` from `source`,
/// checking that a public key actually parses for that algorithm (so that a
/// wrong or corrupt key is a start-up error, and no malformed key can reach
/// the verifier at run time).
pub(crate) fn decoding_key(
    algorithm: JwtAlgorithm,
    source: &JwtKeySource,
) -> Result<jsonwebtoken::DecodingKey, ConfigError> {
    use jsonwebtoken::DecodingKey;

    let (path, pem) = match (algorithm.uses_public_key(), source) {
        (false, JwtKeySource::PublicKeyPem { path, .. }) => {
            return Err(ConfigError::invalid(
                "JWT_PUBLIC_KEY_FILE",
                &path.to_string_lossy(),
                "is only used with JWT_ALGORITHM RS256, ES256 or EdDSA, but JWT_ALGORITHM is HS256",
            ));
        }
        (false, key) => {
            let secret = key.hmac_secret().unwrap_or(DEV_JWT_SECRET.as_bytes());
            return Ok(DecodingKey::from_secret(secret));
        }
        (true, JwtKeySource::PublicKeyPem { path, pem }) => (path, pem),
        (true, _) => {
            return Err(ConfigError::Missing {
                var: "JWT_PUBLIC_KEY_FILE",
                reason: format!("when JWT_ALGORITHM is {algorithm}"),
            });
        }
    };
    let invalid = |reason: String| ConfigError::InvalidKey {
        var: "JWT_PUBLIC_KEY_FILE",
        path: path.clone(),
        reason,
    };
    let expected = match algorithm {
        JwtAlgorithm::Rs256 => "an RSA public key in PEM (\"PUBLIC KEY\" or \"RSA PUBLIC KEY\")",
        JwtAlgorithm::Es256 => "a P-256 EC public key in PEM (\"PUBLIC KEY\")",
        _ => "an Ed25519 public key in PEM (\"PUBLIC KEY\")",
    };
    let key = match algorithm {
        JwtAlgorithm::Rs256 => DecodingKey::from_rsa_pem(pem),
        JwtAlgorithm::Es256 => DecodingKey::from_ec_pem(pem),
        _ => DecodingKey::from_ed_pem(pem),
    }
    .map_err(|_| invalid(format!("expected {expected} for {algorithm}")))?;
    let der = key
        .try_get_as_bytes()
        .map_err(|_| invalid(format!("expected {expected} for {algorithm}")))?;

    match algorithm {
        JwtAlgorithm::Rs256 => {
            let utils = &jsonwebtoken::crypto::rust_crypto::DEFAULT_PROVIDER.key_utils;
            let (modulus, _exponent) = (utils.rsa_pub_components_from_public_key)(der)
                .map_err(|_| invalid(format!("expected {expected} for {algorithm}")))?;
            let significant = modulus.iter().skip_while(|byte| **byte == 0).count();
            let bits = significant * 8;
            if bits < RSA_MIN_BITS {
                return Err(invalid(format!(
                    "the RSA key has about {bits} bits; at least {RSA_MIN_BITS} are required"
                )));
            }
        }
        JwtAlgorithm::EdDsa if der.len() != 32 => {
            return Err(invalid(format!("expected {expected} for {algorithm}")));
        }
        _ => {}
    }
    // ES256 and EdDSA keys are decoded into curve points when a verifier is
    // built; do it once now with a dummy signature so a key that is not on
    // the right curve fails here. (`Ok(false)` = key fine, signature not.)
    jsonwebtoken::crypto::verify("AA", b"probe", &key, algorithm.jsonwebtoken())
        .map_err(|_| invalid(format!("expected {expected} for {algorithm}")))?;
    Ok(key)
}

/// Whether `id` is a valid room id: 1–64 characters of `[A-Za-z0-9_-]`.
/// Public so that `CREATE_ROOM` validation and `DEFAULT_ROOMS` share one rule.
pub fn valid_room_id(id: &str) -> bool {
    (1..=64).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// Whether `name` is a valid room name: 1–64 code points, no control
/// characters, not only whitespace. Shared with `CREATE_ROOM` validation.
pub fn valid_room_name(name: &str) -> bool {
    (1..=64).contains(&name.chars().count())
        && !name.chars().any(char::is_control)
        && !name.chars().all(char::is_whitespace)
}

/// Parses `DEFAULT_ROOMS`: comma-separated `id:name` pairs; blank = none.
fn parse_default_rooms(raw: &str) -> Result<Vec<(String, String)>, String> {
    const SHAPE: &str = "expected comma-separated id:name pairs such as general:General Chat \
                         (or an empty value for no default rooms)";
    if raw.trim().is_empty() {
        return Ok(Vec::new());
    }
    let mut rooms: Vec<(String, String)> = Vec::new();
    for (index, entry) in raw.split(',').enumerate() {
        let position = index + 1;
        let entry = entry.trim();
        if entry.is_empty() {
            return Err(format!("entry {position} is empty; {SHAPE}"));
        }
        let Some((id, name)) = entry.split_once(':') else {
            return Err(format!("entry {position} has no ':'; {SHAPE}"));
        };
        let (id, name) = (id.trim(), name.trim());
        if !valid_room_id(id) {
            return Err(format!(
                "room id {id:?} must be 1-64 characters of A-Z, a-z, 0-9, _ and -"
            ));
        }
        if !valid_room_name(name) {
            return Err(format!(
                "room name {name:?} must be 1-64 characters, not only whitespace, \
                 without control characters"
            ));
        }
        if rooms.iter().any(|(existing, _)| existing == id) {
            return Err(format!("room id {id:?} appears more than once"));
        }
        rooms.push((id.to_owned(), name.to_owned()));
    }
    Ok(rooms)
}

/// Parses `ALLOWED_ORIGINS`: comma-separated `scheme://host[:port]`.
fn parse_origins(raw: &str) -> Result<Vec<String>, String> {
    const SHAPE: &str = "expected comma-separated origins such as \
                         https://chat.example.com,http://localhost:3000 \
                         (scheme://host[:port], no path; unset to allow any origin)";
    let mut origins: Vec<String> = Vec::new();
    for (index, entry) in raw.split(',').enumerate() {
        let position = index + 1;
        let entry = entry.trim();
        if entry.is_empty() {
            return Err(format!("entry {position} is empty; {SHAPE}"));
        }
        let well_formed = entry.split_once("://").is_some_and(|(scheme, rest)| {
            scheme.starts_with(|c: char| c.is_ascii_alphabetic())
                && scheme
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
                && !rest.is_empty()
                && !rest.contains(['/', '?', '#', '@', '*'])
                && !rest.chars().any(|c| c.is_whitespace() || c.is_control())
        });
        if !well_formed {
            return Err(format!(
                "entry {position} ({entry:?}) is not an origin; {SHAPE}"
            ));
        }
        let origin = entry.to_ascii_lowercase();
        if !origins.contains(&origin) {
            origins.push(origin);
        }
    }
    Ok(origins)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn fixture(name: &str) -> String {
        format!("{}/tests/fixtures/jwt/{name}", env!("CARGO_MANIFEST_DIR"))
    }

    fn load(vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        Config::from_lookup(|var| map.get(var).cloned())
    }

    fn error_for(var: &str, value: &str) -> ConfigError {
        match load(&[(var, value)]) {
            Ok(config) => panic!("{var}={value:?} was accepted: {config:?}"),
            Err(e) => e,
        }
    }

    #[test]
    fn nothing_set_gives_the_defaults_with_the_dev_secret() {
        let config = load(&[]).expect("defaults are valid");
        assert_eq!(config, Config::default());
        assert!(config.uses_dev_secret());
        assert_eq!(config.listen_addr().to_string(), "0.0.0.0:3001");
        assert_eq!(
            config.default_rooms,
            vec![("general".to_owned(), "General Chat".to_owned())]
        );
        assert_eq!(config.log_format, LogFormat::Json);
        assert_eq!(config.app_env, AppEnv::Development);
    }

    #[test]
    fn every_variable_is_read() {
        let config = load(&[
            ("HOST", "::1"),
            ("PORT", "0"),
            ("MAX_MESSAGE_BYTES", "1024"),
            (
                "ALLOWED_ORIGINS",
                " https://A.example , http://localhost:3000 ",
            ),
            ("MAX_CONNECTIONS", "10"),
            ("MAX_CONNECTIONS_PER_IP", "2"),
            ("JWT_ALGORITHM", "hs256"),
            ("JWT_SECRET", "s3cret"),
            ("JWT_ISSUER", "issuer"),
            ("JWT_AUDIENCE", "aud"),
            ("JWT_LEEWAY_SECONDS", "0"),
            ("AUTH_TIMEOUT_MS", "1"),
            ("DEFAULT_ROOMS", "a:Room A, b-2 : Room: B "),
            ("MAX_CONTENT_LENGTH", "10"),
            ("HISTORY_LIMIT", "1"),
            ("TYPING_TIMEOUT_MS", "2"),
            ("PRESENCE_DELAY_MS", "0"),
            ("RATE_LIMIT_MESSAGES", "3"),
            ("RATE_LIMIT_WINDOW_MS", "4"),
            ("RATE_LIMIT_REQUESTS", "5"),
            ("RATE_LIMIT_DISCONNECT_AFTER", "6"),
            ("ROOMS_PER_USER_MAX", "0"),
            ("PING_INTERVAL_MS", "7"),
            ("IDLE_TIMEOUT_MS", "8"),
            ("OUTBOUND_QUEUE_LIMIT", "9"),
            ("SHUTDOWN_GRACE_MS", "0"),
            ("WORKER_THREADS", "3"),
            ("LOG_LEVEL", "chat_flow=debug,warn"),
            ("LOG_FORMAT", "Pretty"),
            ("APP_ENV", "development"),
        ])
        .expect("valid");
        let expected = Config {
            host: "::1".parse().expect("ip"),
            port: 0,
            max_message_bytes: 1024,
            allowed_origins: Some(vec![
                "https://a.example".to_owned(),
                "http://localhost:3000".to_owned(),
            ]),
            max_connections: 10,
            max_connections_per_ip: 2,
            jwt_algorithm: JwtAlgorithm::Hs256,
            jwt_key: JwtKeySource::Secret(b"s3cret".to_vec()),
            jwt_issuer: Some("issuer".to_owned()),
            jwt_audience: Some("aud".to_owned()),
            jwt_leeway_seconds: 0,
            auth_timeout_ms: 1,
            default_rooms: vec![
                ("a".to_owned(), "Room A".to_owned()),
                ("b-2".to_owned(), "Room: B".to_owned()),
            ],
            max_content_length: 10,
            history_limit: 1,
            typing_timeout_ms: 2,
            presence_delay_ms: 0,
            rate_limit_messages: 3,
            rate_limit_window_ms: 4,
            rate_limit_requests: 5,
            rate_limit_disconnect_after: 6,
            rooms_per_user_max: 0,
            ping_interval_ms: 7,
            idle_timeout_ms: 8,
            outbound_queue_limit: 9,
            shutdown_grace_ms: 0,
            worker_threads: 3,
            log_level: "chat_flow=debug,warn".to_owned(),
            log_format: LogFormat::Pretty,
            app_env: AppEnv::Development,
        };
        assert_eq!(config, expected);
        assert!(!config.uses_dev_secret());
    }

    #[test]
    fn errors_name_the_variable_and_the_value() {
        assert_eq!(
            error_for("PORT", "abc").to_string(),
            r#"invalid value "abc" for PORT: expected an integer 0-65535"#
        );
        assert_eq!(
            error_for("PORT", "65536").to_string(),
            r#"invalid value "65536" for PORT: expected an integer 0-65535"#
        );
        assert_eq!(
            error_for("MAX_CONNECTIONS", "-1").to_string(),
            r#"invalid value "-1" for MAX_CONNECTIONS: expected an integer >= 1"#
        );
        assert_eq!(
            error_for("WORKER_THREADS", "1025").to_string(),
            r#"invalid value "1025" for WORKER_THREADS: expected an integer 0-1024"#
        );
        assert_eq!(
            error_for("PRESENCE_DELAY_MS", "10001").to_string(),
            r#"invalid value "10001" for PRESENCE_DELAY_MS: expected an integer 0-10000"#
        );
        let e = error_for("HOST", "localhost");
        assert_eq!(e.variable(), Some("HOST"));
        assert!(e.to_string().contains(r#""localhost""#), "{e}");
    }

    #[test]
    fn zero_is_rejected_where_it_makes_no_sense() {
        for var in [
            "MAX_MESSAGE_BYTES",
            "MAX_CONNECTIONS",
            "MAX_CONNECTIONS_PER_IP",
            "AUTH_TIMEOUT_MS",
            "MAX_CONTENT_LENGTH",
            "HISTORY_LIMIT",
            "TYPING_TIMEOUT_MS",
            "RATE_LIMIT_MESSAGES",
            "RATE_LIMIT_WINDOW_MS",
            "RATE_LIMIT_REQUESTS",
            "RATE_LIMIT_DISCONNECT_AFTER",
            "PING_INTERVAL_MS",
            "IDLE_TIMEOUT_MS",
            "OUTBOUND_QUEUE_LIMIT",
        ] {
            let e = error_for(var, "0");
            assert_eq!(e.variable(), Some(var));
            assert!(
                e.to_string()
                    .starts_with(&format!("invalid value \"0\" for {var}")),
                "{e}"
            );
        }
        for var in [
            "PORT",
            "JWT_LEEWAY_SECONDS",
            "ROOMS_PER_USER_MAX",
            "SHUTDOWN_GRACE_MS",
            "WORKER_THREADS",
        ] {
            load(&[(var, "0")]).unwrap_or_else(|e| panic!("{var}=0 rejected: {e}"));
        }
    }

    #[test]
    fn out_of_range_and_garbage_numbers_are_rejected() {
        for (var, value) in [
            ("MAX_MESSAGE_BYTES", "67108865"),
            ("RATE_LIMIT_MESSAGES", "4294967296"),
            ("AUTH_TIMEOUT_MS", "2592000001"),
            ("JWT_LEEWAY_SECONDS", "86401"),
            ("HISTORY_LIMIT", "1.5"),
            ("HISTORY_LIMIT", "1e3"),
            ("HISTORY_LIMIT", "99999999999999999999999"),
            ("PORT", ""),
            ("PORT", "   "),
        ] {
            assert_eq!(error_for(var, value).variable(), Some(var), "{var}={value}");
        }
        assert_eq!(load(&[("PORT", " 8080 ")]).expect("trimmed").port, 8080);
    }

    #[test]
    fn idle_timeout_must_exceed_ping_interval() {
        let e = load(&[("PING_INTERVAL_MS", "1000"), ("IDLE_TIMEOUT_MS", "1000")])
            .expect_err("equal is rejected");
        assert_eq!(e.variable(), Some("IDLE_TIMEOUT_MS"));
        assert!(e.to_string().contains("PING_INTERVAL_MS (1000)"), "{e}");
        let e = error_for("PING_INTERVAL_MS", "80000");
        assert_eq!(e.variable(), Some("IDLE_TIMEOUT_MS"));
    }

    #[test]
    fn enums_are_validated() {
        assert_eq!(error_for("APP_ENV", "staging").variable(), Some("APP_ENV"));
        assert_eq!(
            error_for("LOG_FORMAT", "xml").variable(),
            Some("LOG_FORMAT")
        );
        assert_eq!(
            error_for("JWT_ALGORITHM", "none").variable(),
            Some("JWT_ALGORITHM")
        );
        assert_eq!(
            error_for("JWT_ALGORITHM", "HS512").variable(),
            Some("JWT_ALGORITHM")
        );
        for alg in JwtAlgorithm::ALL {
            assert_eq!(JwtAlgorithm::from_name(alg.as_str()), Some(alg));
        }
        assert_eq!(JwtAlgorithm::from_name("eddsa"), Some(JwtAlgorithm::EdDsa));
    }

    #[test]
    fn log_level_must_parse_as_an_env_filter() {
        assert_eq!(
            error_for("LOG_LEVEL", "foo=bogus").variable(),
            Some("LOG_LEVEL")
        );
        assert_eq!(error_for("LOG_LEVEL", "").variable(), Some("LOG_LEVEL"));
        assert_eq!(
            load(&[("LOG_LEVEL", "debug")]).expect("valid").log_level,
            "debug"
        );
    }

    #[test]
    fn allowed_origins_rules() {
        for bad in [
            "",
            ",",
            "https://a.com,",
            "https://a.com/",
            "a.com",
            "*",
            "https://a.com/x",
        ] {
            assert_eq!(
                error_for("ALLOWED_ORIGINS", bad).variable(),
                Some("ALLOWED_ORIGINS")
            );
        }
        let config = load(&[("ALLOWED_ORIGINS", "https://a.com,https://A.com")]).expect("ok");
        assert_eq!(
            config.allowed_origins,
            Some(vec!["https://a.com".to_owned()])
        );
    }

    #[test]
    fn default_rooms_rules() {
        assert_eq!(
            load(&[("DEFAULT_ROOMS", "")]).expect("ok").default_rooms,
            vec![]
        );
        for bad in [
            "general",
            "general:",
            ":General",
            "a:A,,b:B",
            "a:A,",
            "a b:A",
            "a:A,a:Again",
            "a:   ",
            "a:bell\u{7}",
            &format!("{}:x", "i".repeat(65)),
            &format!("a:{}", "n".repeat(65)),
        ] {
            let e = error_for("DEFAULT_ROOMS", bad);
            assert_eq!(e.variable(), Some("DEFAULT_ROOMS"), "{bad:?}");
        }
        let long = format!("{}:{}", "i".repeat(64), "é".repeat(64));
        assert_eq!(
            load(&[("DEFAULT_ROOMS", &long)])
                .expect("ok")
                .default_rooms
                .len(),
            1
        );
    }

    #[test]
    fn production_requires_a_strong_secret() {
        let e = load(&[("APP_ENV", "production")]).expect_err("no secret");
        assert_eq!(e.variable(), Some("JWT_SECRET"));
        let short = "x".repeat(JWT_SECRET_MIN_BYTES - 1);
        let e = load(&[("APP_ENV", "production"), ("JWT_SECRET", &short)]).expect_err("short");
        assert_eq!(e.variable(), Some("JWT_SECRET"));
        assert!(
            !e.to_string().contains(&short),
            "the secret is never shown: {e}"
        );
        let e = load(&[("APP_ENV", "production"), ("JWT_SECRET", DEV_JWT_SECRET)])
            .expect_err("dev secret");
        assert_eq!(e.variable(), Some("JWT_SECRET"));
        let strong = "y".repeat(JWT_SECRET_MIN_BYTES);
        let config = load(&[("APP_ENV", "production"), ("JWT_SECRET", &strong)]).expect("ok");
        assert_eq!(config.jwt_key, JwtKeySource::Secret(strong.into_bytes()));
        assert!(!config.uses_dev_secret());
    }

    #[test]
    fn development_allows_short_secrets_but_not_empty_ones() {
        let config = load(&[("JWT_SECRET", "short")]).expect("ok");
        assert_eq!(config.jwt_key.hmac_secret(), Some(&b"short"[..]));
        assert_eq!(error_for("JWT_SECRET", "").variable(), Some("JWT_SECRET"));
    }

    #[test]
    fn secrets_are_redacted_in_debug_output() {
        let config = load(&[("JWT_SECRET", "hunter2-hunter2")]).expect("ok");
        assert!(!format!("{config:?}").contains("hunter2"));
    }

    #[test]
    fn public_key_algorithms_require_a_readable_valid_key_file() {
        for alg in ["RS256", "ES256", "EdDSA"] {
            let e = load(&[("JWT_ALGORITHM", alg)]).expect_err("no key file");
            assert_eq!(e.variable(), Some("JWT_PUBLIC_KEY_FILE"), "{alg}");
            assert!(e.to_string().contains(alg), "{e}");

            let e = load(&[
                ("JWT_ALGORITHM", alg),
                ("JWT_PUBLIC_KEY_FILE", "/nonexistent/key.pem"),
            ])
            .expect_err("unreadable");
            assert!(matches!(e, ConfigError::KeyFileUnreadable { .. }), "{e}");
            assert_eq!(e.variable(), Some("JWT_PUBLIC_KEY_FILE"));

            let cargo_toml = format!("{}/Cargo.toml", env!("CARGO_MANIFEST_DIR"));
            let e = load(&[("JWT_ALGORITHM", alg), ("JWT_PUBLIC_KEY_FILE", &cargo_toml)])
                .expect_err("not a PEM");
            assert!(matches!(e, ConfigError::InvalidKey { .. }), "{e}");
        }
    }

    #[test]
    fn public_keys_load_for_their_algorithm_only() {
        let cases = [
            ("RS256", "rsa_public.pem"),
            ("ES256", "ec_p256_public.pem"),
            ("EdDSA", "ed25519_public.pem"),
        ];
        for (alg, file) in cases {
            let path = fixture(file);
            let config = load(&[("JWT_ALGORITHM", alg), ("JWT_PUBLIC_KEY_FILE", &path)])
                .unwrap_or_else(|e| panic!("{alg} with {file}: {e}"));
            assert!(matches!(config.jwt_key, JwtKeySource::PublicKeyPem { .. }));
            assert!(!config.uses_dev_secret());
            for (other_alg, _) in cases.iter().filter(|(a, _)| *a != alg) {
                let e = load(&[("JWT_ALGORITHM", other_alg), ("JWT_PUBLIC_KEY_FILE", &path)])
                    .expect_err("key of another algorithm");
                assert!(
                    matches!(e, ConfigError::InvalidKey { .. }),
                    "{other_alg}/{file}: {e}"
                );
            }
        }
        for (alg, file) in [
            ("ES256", "ec_p384_public.pem"),
            ("RS256", "rsa1024_public.pem"),
            ("RS256", "rsa_private.pem"),
            ("ES256", "ec_p256_private.pem"),
            ("EdDSA", "ed25519_private.pem"),
        ] {
            let e = load(&[
                ("JWT_ALGORITHM", alg),
                ("JWT_PUBLIC_KEY_FILE", &fixture(file)),
            ])
            .expect_err("unusable key");
            assert!(
                matches!(e, ConfigError::InvalidKey { .. }),
                "{alg}/{file}: {e}"
            );
        }
    }

    #[test]
    fn a_public_key_file_under_hs256_is_an_error() {
        let e = error_for("JWT_PUBLIC_KEY_FILE", &fixture("rsa_public.pem"));
        assert_eq!(e.variable(), Some("JWT_PUBLIC_KEY_FILE"));
    }

    #[test]
    fn issuer_and_audience_must_not_be_blank() {
        assert_eq!(error_for("JWT_ISSUER", " ").variable(), Some("JWT_ISSUER"));
        assert_eq!(
            error_for("JWT_AUDIENCE", "").variable(),
            Some("JWT_AUDIENCE")
        );
    }

    #[test]
    fn long_values_are_shortened_in_errors() {
        let e = error_for("PORT", &"9".repeat(10_000));
        assert!(e.to_string().len() < 300, "{e}");
    }

    #[test]
    fn serve_args_cover_every_variable_and_feed_from_args() {
        let mut args = ServeArgs::default();
        for var in ServeArgs::VARIABLES {
            assert_eq!(args.value(var), None);
        }
        assert_eq!(ServeArgs::VARIABLES.len(), 31);
        args.port = Some("4000".to_owned());
        args.log_format = Some("pretty".to_owned());
        let config = Config::from_args(&args).expect("valid");
        assert_eq!((config.port, config.log_format), (4000, LogFormat::Pretty));
        args.history_limit = Some("0".to_owned());
        assert_eq!(
            Config::from_args(&args).expect_err("zero").variable(),
            Some("HISTORY_LIMIT")
        );
    }

    #[test]
    fn env_example_documents_every_variable() {
        let example = include_str!("../.env.example");
        for var in ServeArgs::VARIABLES {
            let line = format!("\n#{var}=");
            assert!(example.contains(&line), ".env.example lacks {var}");
        }
    }

    #[test]
    fn env_example_defaults_are_the_defaults() {
        let example = include_str!("../.env.example");
        let vars: HashMap<String, String> = example
            .lines()
            .filter_map(|line| line.strip_prefix('#'))
            .filter_map(|line| line.split_once('='))
            .filter(|(var, _)| ServeArgs::VARIABLES.contains(var))
            .map(|(var, value)| (var.to_owned(), value.to_owned()))
            .filter(|(_, value)| !value.is_empty())
            .collect();
        let config = Config::from_lookup(|var| vars.get(var).cloned()).expect("valid");
        assert_eq!(config, Config::default());
    }
}
