//! Where setting values come from, in order of precedence: a command-line
//! flag, the real environment, then the `.env` file in the working directory.
//!
//! Clap applies the first two ([`ServeArgs`]); [`load_dotenv`] puts `.env`
//! into the environment before clap reads it, and since `.env` never
//! overrides a variable that is already set, the precedence falls out. A
//! reload cannot rely on the environment alone (start-up copied `.env` into
//! it), so [`ConfigSource`] layers the three sources again itself.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

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
        /// Clap fills each field from the flag or else the variable (after
        /// [`load_dotenv`] has put `.env` into the environment).
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

/// Loads `.env` from the working directory into the process environment,
/// without overriding variables that are already set. A missing file is
/// fine; an unreadable or malformed one is an error (which never quotes a
/// value from the file, since it may hold secrets).
///
/// Call it first thing in `main`, before `Cli::parse` (clap reads the
/// environment) and before any thread is started (it sets environment
/// variables).
pub fn load_dotenv() -> Result<(), ConfigError> {
    load_dotenv_from(Path::new(".env"))
}

/// Reads the configuration again, the way start-up did, for a reload
/// (SIGHUP): flags first, then the real environment, then the `.env` file as
/// it is now.
///
/// Start-up copies `.env` into the process environment, so a reload cannot
/// tell from the environment alone which values came from the file; the
/// source remembers which variables the real environment set before `.env`
/// was read ([`ConfigSource::snapshot_env`]). A flag whose value equals one
/// taken from `.env` at start-up is taken for that `.env` value.
#[derive(Debug, Clone)]
pub struct ConfigSource {
    args: ServeArgs,
    from_real_env: BTreeSet<&'static str>,
    dotenv_path: PathBuf,
}

impl ConfigSource {
    /// The variables the real environment sets now. Call it before
    /// [`load_dotenv`].
    pub fn snapshot_env() -> BTreeSet<&'static str> {
        ServeArgs::VARIABLES
            .iter()
            .copied()
            .filter(|var| std::env::var_os(var).is_some())
            .collect()
    }

    /// A source for the server started with `args`, whose real environment
    /// set `from_real_env`, reading `.env` from the working directory.
    pub fn new(args: ServeArgs, from_real_env: BTreeSet<&'static str>) -> Self {
        ConfigSource {
            args,
            from_real_env,
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
        let dotenv = read_dotenv(&self.dotenv_path)?;
        Config::from_lookup(|var| {
            let env_now = std::env::var(var).ok();
            if let Some(flag) = self.args.value(var)
                && env_now.as_deref() != Some(flag)
            {
                return Some(flag.to_owned());
            }
            if self.from_real_env.contains(var) {
                return env_now;
            }
            dotenv.get(var).cloned()
        })
    }
}

/// The variables a `.env` file sets (none when it does not exist).
fn read_dotenv(path: &Path) -> Result<BTreeMap<String, String>, ConfigError> {
    let iter = match dotenvy::from_path_iter(path) {
        Ok(iter) => iter,
        Err(e) if e.not_found() => return Ok(Default::default()),
        Err(e) => {
            return Err(ConfigError::DotEnv {
                reason: e.to_string(),
            });
        }
    };
    iter.map(|item| {
        item.map_err(|e| ConfigError::DotEnv {
            reason: match e {
                dotenvy::Error::LineParse(_, position) => {
                    format!("cannot parse a line (at character {position})")
                }
                other => other.to_string(),
            },
        })
    })
    .collect()
}

/// [`load_dotenv`] for an explicit path.
fn load_dotenv_from(path: &Path) -> Result<(), ConfigError> {
    // `from_path`, not `dotenv()`: the contract says the working directory,
    // and `dotenv()` would also search every parent directory.
    match dotenvy::from_path(path) {
        Ok(()) => Ok(()),
        Err(e) if e.not_found() => Ok(()),
        Err(dotenvy::Error::LineParse(line, position)) => {
            let name: String = line
                .trim_start()
                .trim_start_matches("export ")
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == '.')
                .collect();
            let what = if name.is_empty() {
                "a line".to_owned()
            } else {
                format!("the line setting {name}")
            };
            Err(ConfigError::DotEnv {
                reason: format!("cannot parse {what} (at character {position})"),
            })
        }
        Err(e) => Err(ConfigError::DotEnv {
            reason: e.to_string(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dotenv_errors_do_not_leak_values() {
        let dir = std::env::temp_dir().join(format!("chat-flow-dotenv-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let path = dir.join(".env");
        std::fs::write(&path, "JWT_SECRET='unterminated-s3cret\n").expect("write");
        let e = load_dotenv_from(&path).expect_err("malformed");
        let message = e.to_string();
        assert!(
            message.contains(".env") && message.contains("JWT_SECRET"),
            "{message}"
        );
        assert!(!message.contains("s3cret"), "{message}");
        assert_eq!(load_dotenv_from(&dir.join("missing.env")), Ok(()));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
