//! Validation: [`Config::from_lookup`] turns raw values into a [`Config`],
//! one rule per variable, and every error names the variable and the value.

use std::io::Read;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use super::cidr::Cidr;
use super::error::ConfigError;
use super::jwt::{
    DEV_JWT_SECRET, JWT_SECRET_MIN_BYTES, JwtAlgorithm, JwtKeySource, PUBLIC_KEY_FILE_MAX_BYTES,
};
use super::settings::*;
use super::sources::ServeArgs;
use crate::protocol;

impl Config {
    /// Validates the flags/environment/`.env` values clap collected into
    /// `args`. This is what the binary calls.
    pub fn from_args(args: &ServeArgs) -> Result<Config, ConfigError> {
        Self::from_lookup(|var| args.value(var).map(str::to_owned))
    }

    /// Builds the configuration from a variable lookup (`None` = unset),
    /// without touching the process environment or the file system. Tests
    /// and the simulation use it with a map or a closure. The JWT key file is
    /// only named here; `auth` reads and checks it when it builds a verifier.
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
        let trusted_proxies = {
            let raw = vars
                .get("TRUSTED_PROXIES")
                .unwrap_or_else(|| DEFAULT_TRUSTED_PROXIES.to_owned());
            parse_trusted_proxies(&raw)
                .map_err(|e| ConfigError::invalid("TRUSTED_PROXIES", &raw, e))?
        };
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
        let max_rooms = vars.int("MAX_ROOMS", DEFAULT_MAX_ROOMS, 1, usize_max())?;
        if max_rooms < default_rooms.len() {
            return Err(ConfigError::invalid(
                "MAX_ROOMS",
                &max_rooms.to_string(),
                format!(
                    "must be at least the number of DEFAULT_ROOMS ({}), which count towards it",
                    default_rooms.len()
                ),
            ));
        }
        let room_idle_ttl_ms = vars.duration_ms("ROOM_IDLE_TTL_MS", DEFAULT_ROOM_IDLE_TTL_MS, 0)?;
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
        let outbound_queue_bytes = vars.int(
            "OUTBOUND_QUEUE_BYTES",
            DEFAULT_OUTBOUND_QUEUE_BYTES,
            1,
            usize_max(),
        )?;
        let write_timeout_ms = vars.duration_ms("WRITE_TIMEOUT_MS", DEFAULT_WRITE_TIMEOUT_MS, 1)?;
        let outbound_memory_max_bytes = vars.int(
            "OUTBOUND_MEMORY_MAX_BYTES",
            DEFAULT_OUTBOUND_MEMORY_MAX_BYTES,
            1,
            usize_max(),
        )?;
        if outbound_memory_max_bytes < outbound_queue_bytes {
            return Err(ConfigError::invalid(
                "OUTBOUND_MEMORY_MAX_BYTES",
                &outbound_memory_max_bytes.to_string(),
                format!(
                    "must be at least OUTBOUND_QUEUE_BYTES ({outbound_queue_bytes}), \
                     or one connection within its own bound would pass the server's"
                ),
            ));
        }
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
        let demo_page = vars.bool("DEMO_PAGE", default_demo_page(app_env))?;
        let redis_url = match vars.get("REDIS_URL") {
            None => None,
            Some(raw) => Some(parse_redis_url(&raw)?),
        };
        let redis_key_prefix = vars.parse(
            "REDIS_KEY_PREFIX",
            DEFAULT_REDIS_KEY_PREFIX.to_owned(),
            |raw| {
                let ok = raw.chars().count() <= 64
                    && raw
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || "-_.:".contains(c));
                if ok {
                    Ok(raw.to_owned())
                } else {
                    Err("expected 1-64 characters: letters, digits, - _ . :".to_owned())
                }
            },
        )?;
        let node_ttl_ms = vars.duration_ms("NODE_TTL_MS", DEFAULT_NODE_TTL_MS, NODE_TTL_MIN_MS)?;
        let redis_timeout_ms = vars.duration_ms("REDIS_TIMEOUT_MS", DEFAULT_REDIS_TIMEOUT_MS, 1)?;

        Ok(Config {
            host,
            port,
            max_message_bytes,
            allowed_origins,
            max_connections,
            max_connections_per_ip,
            trusted_proxies,
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
            max_rooms,
            room_idle_ttl_ms,
            ping_interval_ms,
            idle_timeout_ms,
            outbound_queue_limit,
            outbound_queue_bytes,
            write_timeout_ms,
            outbound_memory_max_bytes,
            shutdown_grace_ms,
            worker_threads,
            log_level,
            log_format,
            app_env,
            demo_page,
            redis_url,
            redis_key_prefix,
            node_ttl_ms,
            redis_timeout_ms,
        })
    }
}

/// Checks a `REDIS_URL` the way the Redis client will read it. An error
/// shows the URL without its password.
fn parse_redis_url(raw: &str) -> Result<String, ConfigError> {
    let url = raw.trim();
    let shown = without_password(url);
    let expected = "expected redis://[user:pass@]host:port[/db] or rediss://…";
    if !(url.starts_with("redis://") || url.starts_with("rediss://")) {
        return Err(ConfigError::invalid("REDIS_URL", &shown, expected));
    }
    match redis::IntoConnectionInfo::into_connection_info(url) {
        Ok(_) => Ok(url.to_owned()),
        Err(e) => Err(ConfigError::invalid(
            "REDIS_URL",
            &shown,
            format!("{expected} ({})", e.detail().unwrap_or("unreadable")),
        )),
    }
}

/// `url` with any password replaced by `***`.
fn without_password(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) => {
            let userinfo = &rest[..at];
            let user = userinfo.split(':').next().unwrap_or("");
            let masked = if userinfo.contains(':') {
                format!("{user}:***")
            } else {
                "***".to_owned()
            };
            format!("{scheme}://{masked}{}", &rest[at..])
        }
        None => url.to_owned(),
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

    /// A switch: `true`/`false`, also `1`/`0`, `yes`/`no`, `on`/`off`
    /// (whitespace and ASCII case ignored).
    fn bool(&self, var: &'static str, default: bool) -> Result<bool, ConfigError> {
        self.parse(var, default, |raw| {
            let raw = raw.trim();
            let is = |names: [&str; 4]| names.iter().any(|n| n.eq_ignore_ascii_case(raw));
            if is(["true", "1", "yes", "on"]) {
                Ok(true)
            } else if is(["false", "0", "no", "off"]) {
                Ok(false)
            } else {
                Err("expected true or false (or 1/0, yes/no, on/off)".to_owned())
            }
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

/// Resolves where the JWT verification key comes from (see [`JwtKeySource`]).
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
    Ok(JwtKeySource::PublicKeyPem { path, pem })
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
        if !protocol::valid_room_id(id) {
            return Err(format!(
                "room id {id:?} must be 1-64 characters of A-Z, a-z, 0-9, _ and -"
            ));
        }
        if !protocol::valid_display_text(name, protocol::ROOM_NAME_CHARS_MAX) {
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

/// Parses `TRUSTED_PROXIES`: comma-separated CIDRs or addresses; blank =
/// none. Each error names the bad entry.
fn parse_trusted_proxies(raw: &str) -> Result<Vec<Cidr>, String> {
    const SHAPE: &str = "expected comma-separated IP addresses or CIDRs such as \
                         10.0.0.0/8,fd00::/8 (or an empty value to trust no proxy)";
    if raw.trim().is_empty() {
        return Ok(Vec::new());
    }
    let mut networks: Vec<Cidr> = Vec::new();
    for (index, entry) in raw.split(',').enumerate() {
        let position = index + 1;
        let entry = entry.trim();
        if entry.is_empty() {
            return Err(format!("entry {position} is empty; {SHAPE}"));
        }
        let network = Cidr::parse(entry)
            .map_err(|e| format!("entry {position} ({entry:?}) is not a network: {e}"))?;
        if !networks.contains(&network) {
            networks.push(network);
        }
    }
    Ok(networks)
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
