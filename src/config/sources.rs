//! Where setting values come from, in order of precedence: a command-line
//! flag, the real environment, then the `.env` file in the working directory.
//!
//! Clap applies the first two ([`ServeArgs`]); [`ServeArgs::fill_unset`]
//! then takes what is still unset from the `.env` file ([`DotEnv`]). The
//! process environment is never written: a reload ([`ConfigSource`]) fills
//! the same flags and environment from `.env` as it reads then.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::dotenv;
use super::error::ConfigError;
use super::settings::Config;

/// Declares [`ServeArgs`] (one `Option<String>` flag per variable, with its
/// `env`) and the variable → value lookup over it, from a single list so the
/// two can never disagree.
macro_rules! serve_args {
    ($( $(#[$attr:meta])* $field:ident = $var:tt; )*) => {
        /// The server's command-line flags, one per environment variable
        /// (`--port` / `PORT`, `--max-message-bytes` / `MAX_MESSAGE_BYTES`, …).
        ///
        /// Clap fills each field from the flag or else the real environment
        /// variable; [`ServeArgs::fill_unset`] adds `.env`'s values.
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

            /// Sets every variable that neither a flag nor the environment
            /// set from `dotenv`, which comes last in precedence.
            pub fn fill_unset(&mut self, dotenv: &DotEnv) {
                $(
                    if self.$field.is_none() {
                        self.$field = dotenv.get($var).map(str::to_owned);
                    }
                )*
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
    /// WebSocket connections per client address; an IPv6 /64 counts as one [default: 1000]
    max_connections_per_ip = "MAX_CONNECTIONS_PER_IP";
    /// Comma-separated CIDRs of reverse proxies whose X-Forwarded-For names the client [default: none]
    trusted_proxies = "TRUSTED_PROXIES";
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
    /// Rooms that may exist at once, default rooms included [default: 100000]
    max_rooms = "MAX_ROOMS";
    /// Delete a user's room without members for this long, in milliseconds; 0 for never [default: 86400000]
    room_idle_ttl_ms = "ROOM_IDLE_TTL_MS";
    /// WebSocket ping period in milliseconds [default: 30000]
    ping_interval_ms = "PING_INTERVAL_MS";
    /// Drop a connection silent this long, in milliseconds [default: 75000]
    idle_timeout_ms = "IDLE_TIMEOUT_MS";
    /// Queued outbound messages per connection [default: 1024]
    outbound_queue_limit = "OUTBOUND_QUEUE_LIMIT";
    /// Bytes queued per connection, not yet accepted by its socket [default: 4194304]
    outbound_queue_bytes = "OUTBOUND_QUEUE_BYTES";
    /// Drop a socket that accepts no bytes this long while frames wait, in milliseconds [default: 30000]
    write_timeout_ms = "WRITE_TIMEOUT_MS";
    /// All connections' queued bytes together [default: 1073741824]
    outbound_memory_max_bytes = "OUTBOUND_MEMORY_MAX_BYTES";
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
    /// Serve the demo chat page at / (true or false) [default: true, false when APP_ENV=production]
    demo_page = "DEMO_PAGE";
    /// Redis of a cluster, redis://[user:pass@]host:port[/db] or rediss:// for TLS; unset: one node, all in memory [default: unset]
    #[arg(hide_env_values = true)]
    redis_url = "REDIS_URL";
    /// Prefix of every Redis key and channel; nodes with the same REDIS_URL and prefix are one service [default: chatflow]
    redis_key_prefix = "REDIS_KEY_PREFIX";
    /// A node that stops renewing its lease is gone after this long, its users leaving every room, in milliseconds [default: 15000]
    node_ttl_ms = "NODE_TTL_MS";
    /// Longest wait for a Redis answer before a request gets SERVER_ERROR, in milliseconds [default: 2000]
    redis_timeout_ms = "REDIS_TIMEOUT_MS";
}

/// The variables a `.env` file sets, the last assignment of a key winning.
/// Keys the server does not read are kept but never asked for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DotEnv {
    vars: BTreeMap<String, String>,
}

impl DotEnv {
    /// Reads and parses `path` (see [`dotenv`] for the syntax). A missing
    /// file sets nothing; an unreadable or malformed one is an error naming
    /// the file and, for syntax, the line (never a value: it may be a
    /// secret).
    pub fn read(path: &Path) -> Result<DotEnv, ConfigError> {
        let bytes = match std::fs::read(path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(DotEnv::default()),
            Err(e) => {
                return Err(ConfigError::DotEnv {
                    file: path.to_owned(),
                    line: None,
                    reason: e.to_string(),
                });
            }
        };
        Self::parse(path, &bytes)
    }

    /// Parses the contents of `.env` file `path`.
    pub fn parse(path: &Path, contents: &[u8]) -> Result<DotEnv, ConfigError> {
        let assignments = dotenv::parse(contents).map_err(|e| ConfigError::DotEnv {
            file: path.to_owned(),
            line: Some(e.line),
            reason: match e.key {
                Some(key) => format!("{key}: {}", e.problem),
                None => e.problem.to_string(),
            },
        })?;
        Ok(DotEnv {
            vars: assignments.into_iter().map(|a| (a.key, a.value)).collect(),
        })
    }

    /// The value the file gives `var`, if any.
    pub fn get(&self, var: &str) -> Option<&str> {
        self.vars.get(var).map(String::as_str)
    }
}

/// The configuration as the binary reads it, at start-up and again on each
/// reload (SIGHUP): the flags and real environment clap parsed, then the
/// `.env` file as it is at that moment.
#[derive(Debug, Clone)]
pub struct ConfigSource {
    args: ServeArgs,
    dotenv_path: PathBuf,
}

impl ConfigSource {
    /// A source for the server started with `args` (flags and the real
    /// environment, as clap parsed them), reading `.env` from the working
    /// directory (not from a parent: the contract says the working
    /// directory).
    pub fn new(args: ServeArgs) -> Self {
        ConfigSource {
            args,
            dotenv_path: ".env".into(),
        }
    }

    /// The same, reading another file instead of `./.env` (tests).
    pub fn with_dotenv_path(mut self, path: impl Into<PathBuf>) -> Self {
        self.dotenv_path = path.into();
        self
    }

    /// The configuration as it reads now. Like [`Config::from_lookup`], it
    /// leaves the JWT key file to `auth`: the caller builds a verifier to
    /// check it.
    pub fn load(&self) -> Result<Config, ConfigError> {
        let mut args = self.args.clone();
        args.fill_unset(&DotEnv::read(&self.dotenv_path)?);
        Config::from_args(&args)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A directory of its own under the system's temporary directory.
    fn temp_dir(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("chat-flow-sources-{}-{name}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        dir
    }

    #[test]
    fn dotenv_errors_name_the_file_and_line_and_not_the_value() {
        let dir = temp_dir("errors");
        let path = dir.join(".env");
        std::fs::write(&path, "PORT=1\nJWT_SECRET='unterminated-s3cret\n").expect("write");
        let message = DotEnv::read(&path).expect_err("malformed").to_string();
        assert!(
            message.contains(&path.display().to_string())
                && message.contains("line 2")
                && message.contains("JWT_SECRET"),
            "{message}"
        );
        assert!(!message.contains("s3cret"), "{message}");
        assert_eq!(
            DotEnv::read(&dir.join("missing.env")),
            Ok(DotEnv::default())
        );
        // A directory is not a file: an error, not "missing".
        let message = DotEnv::read(&dir).expect_err("a directory").to_string();
        assert!(message.contains(&dir.display().to_string()), "{message}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn dotenv_fills_only_what_flags_and_the_environment_left_unset() {
        let dotenv = DotEnv::parse(
            Path::new(".env"),
            b"PORT=1\nHISTORY_LIMIT=2\nHISTORY_LIMIT=3\nUNKNOWN=4\n",
        )
        .expect("parses");
        let mut args = ServeArgs {
            port: Some("9".to_owned()),
            ..ServeArgs::default()
        };
        args.fill_unset(&dotenv);
        assert_eq!(args.port.as_deref(), Some("9"), "set before .env");
        assert_eq!(args.history_limit.as_deref(), Some("3"), "the last wins");
        assert_eq!(args.max_connections, None);
        assert_eq!(dotenv.get("UNKNOWN"), Some("4"));
    }

    #[test]
    fn a_source_reads_the_file_as_it_is_now() {
        let dir = temp_dir("source");
        let path = dir.join(".env");
        let source = ConfigSource::new(ServeArgs {
            max_content_length: Some("7".to_owned()),
            ..ServeArgs::default()
        })
        .with_dotenv_path(&path);
        assert_eq!(source.load().expect("no file").history_limit, 100);
        std::fs::write(&path, "HISTORY_LIMIT=5\nMAX_CONTENT_LENGTH=1\n").expect("write");
        let config = source.load().expect("valid");
        assert_eq!((config.history_limit, config.max_content_length), (5, 7));
        std::fs::write(&path, "HISTORY_LIMIT=0\n").expect("write");
        assert_eq!(
            source.load().expect_err("zero").variable(),
            Some("HISTORY_LIMIT")
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
