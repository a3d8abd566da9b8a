//! The `chat-flow` command line.
//!
//! ```text
//! chat-flow [FLAGS]                  run the server
//! chat-flow serve [FLAGS]            run the server (same thing)
//! chat-flow token --sub USER [--username NAME] [--ttl 1h] [--rooms a,b]
//!                                    print a signed HS256 token
//! chat-flow checktoken [--json] TOKEN|-
//!                                    show a token and whether the server
//!                                    accepts it now (exit 0 yes, 1 no)
//! chat-flow healthcheck [--timeout 2s]
//!                                    exit 0 when GET /healthz on HOST:PORT
//!                                    answers 200, else 1
//! ```
//!
//! Every server setting is a flag and an environment variable
//! (`--port` / `PORT`, see [`ServeArgs`]); a `.env` file in the working
//! directory fills in variables that are not set (read after clap, and
//! never written into the process environment). Precedence: flag > real
//! environment > `.env`. The `token` command resolves `JWT_SECRET` exactly
//! like the server (flag, environment, `.env`, else the development secret;
//! an error under `APP_ENV=production` without a strong secret) and adds
//! `JWT_ISSUER`/`JWT_AUDIENCE` when set, so its tokens are accepted by a
//! server started from the same environment. `checktoken` resolves the JWT
//! settings the same way (adding `JWT_PUBLIC_KEY_FILE` and
//! `JWT_LEEWAY_SECONDS`) and asks the server's own [`Verifier`]; `healthcheck`
//! resolves `HOST` and `PORT` the same way.
//!
//! # Wiring in `main`
//!
//! ```no_run
//! use std::path::Path;
//!
//! use chat_flow::cli::{self, Action, Cli};
//! use chat_flow::config::{ConfigSource, DotEnv};
//! use clap::Parser;
//!
//! fn main() -> Result<(), Box<dyn std::error::Error>> {
//!     match Cli::parse().into_action() {
//!         Action::Token(mut args) => {
//!             args.jwt.fill_unset(&DotEnv::read(Path::new(".env"))?);
//!             println!("{}", cli::run_token(&args, cli::unix_now_s())?);
//!         }
//!         Action::Serve(args) => {
//!             // Flags, then the environment, then `./.env`; `load` again to reload.
//!             let config = ConfigSource::new(args).load()?;
//!             // Reads and checks a JWT public key file: a bad one is a start-up error too.
//!             chat_flow::auth::Verifier::from_config(&config)?;
//!             // … start the server with `config`
//!         }
//!         Action::CheckToken(mut args) => {
//!             args.jwt.fill_unset(&DotEnv::read(Path::new(".env"))?);
//!             let input = cli::read_token(&args.token, std::io::stdin().lock())?;
//!             let report = cli::run_checktoken(&args, &input, cli::unix_now_ms())?;
//!             print!("{}", report.to_text()); // exit 1 unless report.accepted()
//!         }
//!         Action::Healthcheck(mut args) => {
//!             args.fill_unset(&DotEnv::read(Path::new(".env"))?);
//!             let addr = cli::healthcheck_addr(&args)?;
//!             chat_flow::healthcheck::probe(addr, args.timeout)?; // exit 1 on error
//!         }
//!     }
//!     Ok(())
//! }
//! ```
//!
//! Server flags go either before no subcommand or after `serve`
//! (`chat-flow --port 4000` or `chat-flow serve --port 4000`); mixing them
//! (`chat-flow --port 4000 serve`) is a usage error rather than a silently
//! ignored flag.

use std::ffi::{OsStr, OsString};
use std::io::Read;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use crate::auth::{AuthError, TokenSpec, Verifier, mint_hs256};
use crate::checktoken::{self, Report};
pub use crate::config::ServeArgs;
use crate::config::{Config, ConfigError, DotEnv, JwtAlgorithm};
use crate::protocol::valid_room_id;
use crate::protocol::valid_username;

/// Default lifetime of a token printed by `chat-flow token`.
pub const DEFAULT_TOKEN_TTL: &str = "1h";

/// The parsed command line. Use [`Cli::into_action`] to get what to do.
#[derive(Debug, Parser)]
#[command(
    name = "chat-flow",
    version,
    about = "A chat WebSocket server",
    args_conflicts_with_subcommands = true
)]
pub struct Cli {
    /// `serve` or `token`; absent means `serve`.
    #[command(subcommand)]
    pub command: Option<Command>,
    /// Server flags given without a subcommand (`chat-flow --port 4000`).
    #[command(flatten)]
    pub serve: ServeArgs,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
#[allow(
    clippy::large_enum_variant,
    reason = "parsed once at start-up; boxing would only complicate matching"
)]
pub enum Command {
    /// Run the server (the default when no subcommand is given).
    Serve(ServeArgs),
    /// Print a signed HS256 token for development and testing.
    Token(TokenArgs),
    /// Show a token's header and claims and whether the server's
    /// configuration accepts it now, and if not, why (exit 0 accepted,
    /// 1 rejected, 2 usage or configuration error).
    #[command(name = "checktoken")]
    CheckToken(CheckTokenArgs),
    /// Ask the server on HOST:PORT for GET /healthz: exit 0 on 200, else 1
    /// (for container health checks).
    Healthcheck(HealthcheckArgs),
}

/// What the binary should do, with the arguments it needs.
#[derive(Debug, Clone, PartialEq, Eq)]
#[allow(
    clippy::large_enum_variant,
    reason = "built once at start-up; boxing would only complicate matching"
)]
pub enum Action {
    /// Run the server with these flags (pass them to
    /// [`Config::from_args`]).
    Serve(ServeArgs),
    /// Print a token (pass the arguments to [`run_token`]).
    Token(TokenArgs),
    /// Check a token (see [`read_token`] and [`run_checktoken`]).
    CheckToken(CheckTokenArgs),
    /// Probe a running server (see [`healthcheck_addr`]).
    Healthcheck(HealthcheckArgs),
}

impl Cli {
    /// Collapses "no subcommand" and `serve` into one [`Action::Serve`].
    pub fn into_action(self) -> Action {
        match self.command {
            None => Action::Serve(self.serve),
            Some(Command::Serve(args)) => Action::Serve(args),
            Some(Command::Token(args)) => Action::Token(args),
            Some(Command::CheckToken(args)) => Action::CheckToken(args),
            Some(Command::Healthcheck(args)) => Action::Healthcheck(args),
        }
    }
}

/// Arguments of `chat-flow token`.
#[derive(Debug, Clone, PartialEq, Eq, Args)]
pub struct TokenArgs {
    /// User id, the token's `sub` claim
    #[arg(long, value_name = "USER")]
    pub sub: String,
    /// Display name, the `username` claim (1-32 characters, no control characters)
    #[arg(long, value_name = "NAME")]
    pub username: Option<String>,
    /// Lifetime: 90s, 15m, 1h, 7d, or a number of seconds
    #[arg(long = "ttl", value_name = "DURATION", default_value = DEFAULT_TOKEN_TTL, value_parser = parse_ttl)]
    pub ttl_s: u64,
    /// Comma-separated private room ids the user may join, the `rooms` claim
    #[arg(long, value_name = "ROOMS", value_delimiter = ',')]
    pub rooms: Vec<String>,
    /// Signing settings, read like the server reads them
    #[command(flatten)]
    pub jwt: TokenSigningArgs,
}

/// The settings `chat-flow token` shares with the server: the same flags and
/// environment variables, so a token is signed the way the server verifies.
#[derive(Debug, Clone, Default, PartialEq, Eq, Args)]
pub struct TokenSigningArgs {
    /// Must be HS256 (the default) for the token command
    #[arg(long, env = "JWT_ALGORITHM")]
    pub jwt_algorithm: Option<String>,
    /// HS256 secret (prefer the environment: flags show up in `ps`) [default: built-in development secret]
    #[arg(long, env = "JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: Option<String>,
    /// `iss` claim to include [default: none]
    #[arg(long, env = "JWT_ISSUER")]
    pub jwt_issuer: Option<String>,
    /// `aud` claim to include [default: none]
    #[arg(long, env = "JWT_AUDIENCE")]
    pub jwt_audience: Option<String>,
    /// development or production (production refuses weak or missing secrets)
    #[arg(long, env = "APP_ENV")]
    pub app_env: Option<String>,
}

impl TokenSigningArgs {
    /// The raw value given for environment variable `var`, as
    /// [`ServeArgs::value`] does for the server.
    pub fn value(&self, var: &str) -> Option<&str> {
        match var {
            "JWT_ALGORITHM" => self.jwt_algorithm.as_deref(),
            "JWT_SECRET" => self.jwt_secret.as_deref(),
            "JWT_ISSUER" => self.jwt_issuer.as_deref(),
            "JWT_AUDIENCE" => self.jwt_audience.as_deref(),
            "APP_ENV" => self.app_env.as_deref(),
            _ => None,
        }
    }

    /// Sets what neither a flag nor the environment set from `dotenv`, as
    /// [`ServeArgs::fill_unset`] does for the server.
    pub fn fill_unset(&mut self, dotenv: &DotEnv) {
        for (field, var) in [
            (&mut self.jwt_algorithm, "JWT_ALGORITHM"),
            (&mut self.jwt_secret, "JWT_SECRET"),
            (&mut self.jwt_issuer, "JWT_ISSUER"),
            (&mut self.jwt_audience, "JWT_AUDIENCE"),
            (&mut self.app_env, "APP_ENV"),
        ] {
            if field.is_none() {
                *field = dotenv.get(var).map(str::to_owned);
            }
        }
    }
}

/// Arguments of `chat-flow checktoken`.
#[derive(Debug, Clone, PartialEq, Eq, Args)]
pub struct CheckTokenArgs {
    /// The token, or - to read it from standard input (so that it does not
    /// show in `ps`; surrounding whitespace such as a final newline is
    /// removed)
    #[arg(value_name = "TOKEN", value_parser = clap::value_parser!(OsString))]
    pub token: OsString,
    /// Print one JSON object instead of text
    #[arg(long)]
    pub json: bool,
    /// Verification settings, read like the server reads them
    #[command(flatten)]
    pub jwt: VerifyingArgs,
}

/// The settings the server verifies tokens with: the same flags and
/// environment variables as the server's, so that `checktoken` judges a
/// token as a server started from the same environment would.
#[derive(Debug, Clone, Default, PartialEq, Eq, Args)]
pub struct VerifyingArgs {
    /// Accepted JWT algorithm: HS256, RS256, ES256 or EdDSA [default: HS256]
    #[arg(long, env = "JWT_ALGORITHM")]
    pub jwt_algorithm: Option<String>,
    /// HS256 secret (prefer the environment: flags show up in `ps`) [default: built-in development secret]
    #[arg(long, env = "JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: Option<String>,
    /// PEM public key file for RS256, ES256 and EdDSA
    #[arg(long, env = "JWT_PUBLIC_KEY_FILE")]
    pub jwt_public_key_file: Option<String>,
    /// Required JWT `iss` claim [default: not checked]
    #[arg(long, env = "JWT_ISSUER")]
    pub jwt_issuer: Option<String>,
    /// Required JWT `aud` value [default: not checked]
    #[arg(long, env = "JWT_AUDIENCE")]
    pub jwt_audience: Option<String>,
    /// Clock leeway for `exp`/`nbf` in seconds [default: 5]
    #[arg(long, env = "JWT_LEEWAY_SECONDS")]
    pub jwt_leeway_seconds: Option<String>,
    /// development or production (production refuses weak or missing secrets)
    #[arg(long, env = "APP_ENV")]
    pub app_env: Option<String>,
}

impl VerifyingArgs {
    /// Every variable these settings read.
    pub const VARIABLES: [&'static str; 7] = [
        "JWT_ALGORITHM",
        "JWT_SECRET",
        "JWT_PUBLIC_KEY_FILE",
        "JWT_ISSUER",
        "JWT_AUDIENCE",
        "JWT_LEEWAY_SECONDS",
        "APP_ENV",
    ];

    /// The raw value given for environment variable `var`, as
    /// [`ServeArgs::value`] does for the server.
    pub fn value(&self, var: &str) -> Option<&str> {
        match var {
            "JWT_ALGORITHM" => self.jwt_algorithm.as_deref(),
            "JWT_SECRET" => self.jwt_secret.as_deref(),
            "JWT_PUBLIC_KEY_FILE" => self.jwt_public_key_file.as_deref(),
            "JWT_ISSUER" => self.jwt_issuer.as_deref(),
            "JWT_AUDIENCE" => self.jwt_audience.as_deref(),
            "JWT_LEEWAY_SECONDS" => self.jwt_leeway_seconds.as_deref(),
            "APP_ENV" => self.app_env.as_deref(),
            _ => None,
        }
    }

    /// Sets what neither a flag nor the environment set from `dotenv`, as
    /// [`ServeArgs::fill_unset`] does for the server.
    pub fn fill_unset(&mut self, dotenv: &DotEnv) {
        for (field, var) in [
            (&mut self.jwt_algorithm, "JWT_ALGORITHM"),
            (&mut self.jwt_secret, "JWT_SECRET"),
            (&mut self.jwt_public_key_file, "JWT_PUBLIC_KEY_FILE"),
            (&mut self.jwt_issuer, "JWT_ISSUER"),
            (&mut self.jwt_audience, "JWT_AUDIENCE"),
            (&mut self.jwt_leeway_seconds, "JWT_LEEWAY_SECONDS"),
            (&mut self.app_env, "APP_ENV"),
        ] {
            if field.is_none() {
                *field = dotenv.get(var).map(str::to_owned);
            }
        }
    }
}

/// Default of `chat-flow healthcheck --timeout`.
pub const DEFAULT_HEALTHCHECK_TIMEOUT: &str = "2s";

/// Arguments of `chat-flow healthcheck`.
#[derive(Debug, Clone, PartialEq, Eq, Args)]
pub struct HealthcheckArgs {
    /// Address the server listens on; 0.0.0.0 is asked on 127.0.0.1 and :: on ::1 [default: 0.0.0.0]
    #[arg(long, env = "HOST")]
    pub host: Option<String>,
    /// Port the server listens on [default: 3001]
    #[arg(long, env = "PORT")]
    pub port: Option<String>,
    /// Give up after this long in all: 500ms, 2s, up to 60s
    #[arg(long, value_name = "DURATION", default_value = DEFAULT_HEALTHCHECK_TIMEOUT, value_parser = parse_probe_timeout)]
    pub timeout: Duration,
}

impl HealthcheckArgs {
    /// Sets `HOST` and `PORT` from `dotenv` when neither a flag nor the
    /// environment did, as [`ServeArgs::fill_unset`] does for the server.
    pub fn fill_unset(&mut self, dotenv: &DotEnv) {
        for (field, var) in [(&mut self.host, "HOST"), (&mut self.port, "PORT")] {
            if field.is_none() {
                *field = dotenv.get(var).map(str::to_owned);
            }
        }
    }
}

/// Why the command line could not do its job.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CliError {
    /// A setting is invalid (the message names the variable).
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A `token` flag has an unusable value.
    #[error("invalid value {value:?} for {flag}: {expected}")]
    InvalidArgument {
        /// The flag, e.g. `--username`.
        flag: &'static str,
        /// The value given.
        value: String,
        /// What would be accepted.
        expected: &'static str,
    },
    /// `JWT_ALGORITHM` is not HS256, so a token signed with `JWT_SECRET`
    /// would be refused by the server.
    #[error(
        "chat-flow token signs HS256 tokens only, but JWT_ALGORITHM is {0}; \
         sign {0} tokens with the private key of your identity provider"
    )]
    NotHs256(JwtAlgorithm),
    /// Signing failed.
    #[error("cannot sign the token: {0}")]
    Auth(#[from] AuthError),
    /// `checktoken` was given no token (an empty argument, or nothing but
    /// whitespace on standard input).
    #[error("no token given: {0}")]
    NoToken(&'static str),
    /// `checktoken -` could not read standard input.
    #[error("cannot read the token from standard input: {0}")]
    Stdin(String),
    /// `healthcheck` with `PORT=0`: the server's port is whichever was free.
    #[error(
        "PORT is 0, so the server listens on whichever port was free; \
         give the port with --port or PORT"
    )]
    AnyPort,
}

/// A `--ttl` value that is not a duration.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "expected a duration of at least one second such as 90s, 15m, 1h, 7d, or a number of seconds"
)]
pub struct TtlError;

/// Parses a token lifetime into seconds: `90s`, `15m`, `1h`, `7d` (unit
/// case-insensitive) or a bare number of seconds. Zero and overflowing
/// values are rejected.
pub fn parse_ttl(input: &str) -> Result<u64, TtlError> {
    // humantime reads more than `--ttl` accepts (fractions, several terms
    // such as "1h 30m", spaces, other units) and needs a unit, and its "M" is
    // months: so the shape (digits, then at most one of s/m/h/d in any case)
    // is checked here and humantime gets the unit lowercased.
    let input = input.trim();
    let (digits, unit) = input.split_at(
        input
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(input.len()),
    );
    let unit = match unit {
        "" | "s" | "S" => "s",
        "m" | "M" => "m",
        "h" | "H" => "h",
        "d" | "D" => "d",
        _ => return Err(TtlError),
    };
    if digits.is_empty() {
        return Err(TtlError);
    }
    humantime::parse_duration(&format!("{digits}{unit}"))
        .ok()
        .map(|ttl| ttl.as_secs())
        .filter(|seconds| *seconds > 0)
        .ok_or(TtlError)
}

/// The current Unix time in seconds (0 if the clock is before 1970), for
/// [`run_token`].
pub fn unix_now_s() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_secs())
}

/// A token minted by `chat-flow token`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MintedToken {
    /// The compact JWT.
    pub token: String,
    /// Whether it was signed with the public development secret (so the
    /// binary may warn on stderr).
    pub uses_dev_secret: bool,
}

/// Runs `chat-flow token`: validates the arguments, resolves the secret like
/// the server, and returns the signed token issued at `now_unix_s`.
pub fn run_token(args: &TokenArgs, now_unix_s: u64) -> Result<String, CliError> {
    mint_token(args, now_unix_s).map(|minted| minted.token)
}

/// [`run_token`], also reporting whether the development secret was used.
pub fn mint_token(args: &TokenArgs, now_unix_s: u64) -> Result<MintedToken, CliError> {
    if args.sub.is_empty() {
        return Err(CliError::InvalidArgument {
            flag: "--sub",
            value: String::new(),
            expected: "a non-empty user id",
        });
    }
    if let Some(name) = args
        .username
        .as_deref()
        .filter(|name| !valid_username(name))
    {
        return Err(CliError::InvalidArgument {
            flag: "--username",
            value: name.to_owned(),
            expected: "1-32 characters without control characters",
        });
    }
    if let Some(room) = args.rooms.iter().find(|room| !valid_room_id(room)) {
        return Err(CliError::InvalidArgument {
            flag: "--rooms",
            value: room.clone(),
            expected: "comma-separated room ids of 1-64 characters of A-Z, a-z, 0-9, _ and -",
        });
    }

    // A non-HS256 algorithm is refused before building the configuration,
    // which would otherwise ask for JWT_PUBLIC_KEY_FILE; an unknown name is
    // left to the configuration's usual error.
    if let Some(algorithm) = args
        .jwt
        .value("JWT_ALGORITHM")
        .and_then(JwtAlgorithm::from_name)
        .filter(|algorithm| algorithm.uses_public_key())
    {
        return Err(CliError::NotHs256(algorithm));
    }
    let config = Config::from_lookup(|var| args.jwt.value(var).map(str::to_owned))?;
    let secret = config
        .jwt_key
        .hmac_secret()
        .ok_or(CliError::NotHs256(config.jwt_algorithm))?;

    let spec = TokenSpec {
        username: args.username.as_deref(),
        rooms: &args.rooms,
        issuer: config.jwt_issuer.as_deref(),
        audience: config.jwt_audience.as_deref(),
        ..TokenSpec::new(&args.sub, now_unix_s, args.ttl_s)
    };
    let token = mint_hs256(secret, &spec)?;
    Ok(MintedToken {
        token,
        uses_dev_secret: config.uses_dev_secret(),
    })
}

/// Most bytes `checktoken -` reads from standard input (a token is at most
/// [`TOKEN_MAX_BYTES`](crate::auth::TOKEN_MAX_BYTES); more is read so that a
/// longer one is judged, not cut).
pub const STDIN_TOKEN_MAX_BYTES: u64 = 1024 * 1024;

/// The token `checktoken` is to judge, as given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenInput {
    /// The token (invalid UTF-8 replaced with U+FFFD).
    pub token: String,
    /// Whether the input was not UTF-8 text.
    pub not_utf8: bool,
}

/// Reads `checktoken`'s token: `arg` itself, or for `-` standard input
/// (`stdin`) with surrounding whitespace removed, at most
/// [`STDIN_TOKEN_MAX_BYTES`]. An empty token is an error.
pub fn read_token(arg: &OsStr, stdin: impl Read) -> Result<TokenInput, CliError> {
    let bytes = if arg == "-" {
        let mut bytes = Vec::new();
        stdin
            .take(STDIN_TOKEN_MAX_BYTES + 1)
            .read_to_end(&mut bytes)
            .map_err(|e| CliError::Stdin(e.to_string()))?;
        if bytes.len() as u64 > STDIN_TOKEN_MAX_BYTES {
            return Err(CliError::Stdin(format!(
                "more than {STDIN_TOKEN_MAX_BYTES} bytes; a token is at most {} bytes",
                crate::auth::TOKEN_MAX_BYTES
            )));
        }
        let trimmed = bytes.trim_ascii();
        if trimmed.is_empty() {
            return Err(CliError::NoToken("standard input holds no token"));
        }
        trimmed.to_vec()
    } else {
        if arg.is_empty() {
            return Err(CliError::NoToken("TOKEN is empty"));
        }
        arg.as_encoded_bytes().to_vec()
    };
    let token = String::from_utf8_lossy(&bytes).into_owned();
    Ok(TokenInput {
        not_utf8: std::str::from_utf8(&bytes).is_err(),
        token,
    })
}

/// Runs `chat-flow checktoken`: builds the configuration and the verifier
/// as the server does (an invalid setting or key file is an error naming
/// it) and judges `input` at `now_unix_ms`.
pub fn run_checktoken(
    args: &CheckTokenArgs,
    input: &TokenInput,
    now_unix_ms: u64,
) -> Result<Report, CliError> {
    let config = Config::from_lookup(|var| args.jwt.value(var).map(str::to_owned))?;
    let verifier = Verifier::from_config(&config)?;
    let mut report = checktoken::check(&input.token, &config, &verifier, now_unix_ms);
    if input.not_utf8 {
        report.add_note("the input is not UTF-8 text (shown with U+FFFD in place of bad bytes)");
    }
    Ok(report)
}

/// The address `chat-flow healthcheck` asks: `HOST` and `PORT` validated
/// as the server validates them, an unspecified `HOST` (`0.0.0.0`, `::`)
/// replaced by the loopback address of its family.
pub fn healthcheck_addr(args: &HealthcheckArgs) -> Result<SocketAddr, CliError> {
    let config = Config::from_lookup(|var| match var {
        "HOST" => args.host.clone(),
        "PORT" => args.port.clone(),
        _ => None,
    })?;
    if config.port == 0 {
        return Err(CliError::AnyPort);
    }
    let host = match config.host {
        IpAddr::V4(v4) if v4.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(v6) if v6.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        host => host,
    };
    Ok(SocketAddr::new(host, config.port))
}

/// A `--timeout` for `healthcheck`: a humantime duration from 1 ms to 60 s.
fn parse_probe_timeout(input: &str) -> Result<Duration, String> {
    humantime::parse_duration(input.trim())
        .ok()
        .filter(|d| *d >= Duration::from_millis(1) && *d <= Duration::from_secs(60))
        .ok_or_else(|| "expected a duration from 1ms to 60s, such as 500ms or 2s".to_owned())
}

/// The current Unix time in milliseconds (0 if the clock is before 1970),
/// the server's clock for tokens, for [`run_checktoken`].
pub fn unix_now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| {
            u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX)
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::Verifier;
    use clap::CommandFactory;

    const NOW_S: u64 = 1_700_000_000;

    fn token_args(sub: &str) -> TokenArgs {
        TokenArgs {
            sub: sub.to_owned(),
            username: None,
            ttl_s: 3600,
            rooms: Vec::new(),
            jwt: TokenSigningArgs::default(),
        }
    }

    #[test]
    fn the_command_line_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn ttl_parsing() {
        assert_eq!(parse_ttl("90s"), Ok(90));
        assert_eq!(parse_ttl("15m"), Ok(900));
        assert_eq!(parse_ttl("1h"), Ok(3600));
        assert_eq!(parse_ttl("7d"), Ok(604_800));
        assert_eq!(parse_ttl("7D"), Ok(604_800));
        assert_eq!(parse_ttl("45"), Ok(45));
        assert_eq!(parse_ttl(" 2h "), Ok(7200));
        // Not humantime's months, weeks or milliseconds.
        assert_eq!(parse_ttl("15M"), Ok(900));
        assert_eq!(parse_ttl("007s"), Ok(7));
        assert_eq!(parse_ttl("18446744073709551615"), Ok(u64::MAX));
        for bad in [
            "",
            "0",
            "0s",
            "h",
            "1x",
            "1.5h",
            "-1",
            "+1",
            "1 h",
            "1hh",
            "h1",
            "1h30m",
            "ö",
            "99999999999999999999",
            "999999999999999999d",
            "2w",
            "1ms",
            "1sec",
            "1h 30m",
        ] {
            assert_eq!(parse_ttl(bad), Err(TtlError), "{bad:?}");
        }
    }

    #[test]
    fn subcommands_parse() {
        let action = |argv: &[&str]| Cli::try_parse_from(argv).map(Cli::into_action);
        match action(&["chat-flow"]).expect("bare") {
            Action::Serve(args) => assert_eq!(args.port, None),
            other => panic!("{other:?}"),
        }
        for argv in [
            &["chat-flow", "--port", "4000"][..],
            &["chat-flow", "serve", "--port", "4000"][..],
        ] {
            match action(argv).expect("serve") {
                Action::Serve(args) => assert_eq!(args.port.as_deref(), Some("4000")),
                other => panic!("{other:?}"),
            }
        }
        assert!(action(&["chat-flow", "--port", "4000", "serve"]).is_err());
        match action(&[
            "chat-flow",
            "token",
            "--sub",
            "u1",
            "--username",
            "Al",
            "--ttl",
            "15m",
            "--rooms",
            "a,b",
        ])
        .expect("token")
        {
            Action::Token(args) => {
                assert_eq!(args.sub, "u1");
                assert_eq!(args.username.as_deref(), Some("Al"));
                assert_eq!(args.ttl_s, 900);
                assert_eq!(args.rooms, ["a", "b"]);
            }
            other => panic!("{other:?}"),
        }
        match action(&["chat-flow", "token", "--sub", "u1"]).expect("token") {
            Action::Token(args) => assert_eq!(args.ttl_s, 3600, "default ttl is 1h"),
            other => panic!("{other:?}"),
        }
        assert!(
            action(&["chat-flow", "token"]).is_err(),
            "--sub is required"
        );
        assert!(action(&["chat-flow", "token", "--sub", "u", "--ttl", "soon"]).is_err());
    }

    #[test]
    fn a_minted_token_verifies_with_the_same_configuration() {
        let mut args = token_args("user_7");
        args.username = Some("Zoë".to_owned());
        args.rooms = vec!["vip".to_owned()];
        args.jwt = TokenSigningArgs {
            jwt_secret: Some("a-very-long-production-secret-0123456789".to_owned()),
            jwt_issuer: Some("https://auth.example".to_owned()),
            jwt_audience: Some("chat".to_owned()),
            app_env: Some("production".to_owned()),
            jwt_algorithm: Some("HS256".to_owned()),
        };
        let minted = mint_token(&args, NOW_S).expect("mint");
        assert!(!minted.uses_dev_secret);

        let config = Config::from_lookup(|var| args.jwt.value(var).map(str::to_owned))
            .expect("server config");
        let verified = Verifier::from_config(&config)
            .expect("verifier")
            .verify(&minted.token, NOW_S * 1000)
            .expect("accepted");
        assert_eq!(verified.user_id, "user_7");
        assert_eq!(verified.username.as_deref(), Some("Zoë"));
        assert_eq!(verified.rooms, ["vip"]);
        assert_eq!(verified.expires_at_unix_ms, (NOW_S + 3600 + 5) * 1000);
    }

    #[test]
    fn without_a_secret_the_dev_secret_signs() {
        let minted = mint_token(&token_args("u"), NOW_S).expect("mint");
        assert!(minted.uses_dev_secret);
        let verified = Verifier::from_config(&Config::default())
            .expect("verifier")
            .verify(&minted.token, NOW_S * 1000)
            .expect("accepted by a default server");
        assert_eq!(verified.user_id, "u");
        assert_eq!(run_token(&token_args("u"), NOW_S), Ok(minted.token));
    }

    #[test]
    fn production_rules_apply_to_the_token_command() {
        let mut args = token_args("u");
        args.jwt.app_env = Some("production".to_owned());
        let e = run_token(&args, NOW_S).expect_err("no secret");
        assert!(
            matches!(e, CliError::Config(ref c) if c.variable() == Some("JWT_SECRET")),
            "{e}"
        );
        args.jwt.jwt_secret = Some("short".to_owned());
        assert!(run_token(&args, NOW_S).is_err());
    }

    #[test]
    fn non_hs256_algorithms_are_refused() {
        let mut args = token_args("u");
        args.jwt.jwt_algorithm = Some("RS256".to_owned());
        assert_eq!(
            run_token(&args, NOW_S),
            Err(CliError::NotHs256(JwtAlgorithm::Rs256))
        );
        args.jwt.jwt_algorithm = Some("bogus".to_owned());
        let e = run_token(&args, NOW_S).expect_err("bogus");
        assert!(
            matches!(e, CliError::Config(ref c) if c.variable() == Some("JWT_ALGORITHM")),
            "{e}"
        );
    }

    #[test]
    fn bad_token_arguments_name_the_flag() {
        let mut args = token_args("");
        assert!(
            run_token(&args, NOW_S)
                .expect_err("sub")
                .to_string()
                .contains("--sub")
        );
        args.sub = "u".to_owned();
        args.username = Some("x".repeat(33));
        assert!(
            run_token(&args, NOW_S)
                .expect_err("name")
                .to_string()
                .contains("--username")
        );
        args.username = None;
        args.rooms = vec!["ok".to_owned(), "not ok".to_owned()];
        assert!(
            run_token(&args, NOW_S)
                .expect_err("rooms")
                .to_string()
                .contains("--rooms")
        );
    }

    #[test]
    fn signing_args_cover_the_variables_they_declare() {
        let args = TokenSigningArgs {
            jwt_algorithm: Some("a".to_owned()),
            jwt_secret: Some("b".to_owned()),
            jwt_issuer: Some("c".to_owned()),
            jwt_audience: Some("d".to_owned()),
            app_env: Some("e".to_owned()),
        };
        let values: Vec<_> = [
            "JWT_ALGORITHM",
            "JWT_SECRET",
            "JWT_ISSUER",
            "JWT_AUDIENCE",
            "APP_ENV",
        ]
        .into_iter()
        .map(|var| args.value(var))
        .collect();
        assert_eq!(
            values,
            [Some("a"), Some("b"), Some("c"), Some("d"), Some("e")]
        );
        assert_eq!(args.value("PORT"), None);
    }

    /// `.env` fills each variable the arguments read, and only when unset:
    /// a variable left out of `fill_unset` or `value`, or paired with
    /// another's field, fails here.
    #[test]
    fn dotenv_fills_exactly_the_variables_the_arguments_read() {
        let dotenv_of = |vars: &[&str]| {
            let text: String = vars
                .iter()
                .map(|var| format!("{var}=from-{var}\n"))
                .collect();
            DotEnv::parse(std::path::Path::new(".env"), text.as_bytes()).expect(".env")
        };
        let dotenv = dotenv_of(&VerifyingArgs::VARIABLES);
        let mut verifying = VerifyingArgs::default();
        verifying.fill_unset(&dotenv);
        for var in VerifyingArgs::VARIABLES {
            assert_eq!(verifying.value(var), Some(&*format!("from-{var}")), "{var}");
        }
        let mut set = VerifyingArgs {
            jwt_secret: Some("flag".to_owned()),
            ..VerifyingArgs::default()
        };
        set.fill_unset(&dotenv);
        assert_eq!(set.value("JWT_SECRET"), Some("flag"), "a flag beats .env");

        let signing_vars = [
            "JWT_ALGORITHM",
            "JWT_SECRET",
            "JWT_ISSUER",
            "JWT_AUDIENCE",
            "APP_ENV",
        ];
        let mut signing = TokenSigningArgs::default();
        signing.fill_unset(&dotenv_of(&signing_vars));
        for var in signing_vars {
            assert_eq!(signing.value(var), Some(&*format!("from-{var}")), "{var}");
        }
        assert_eq!(signing.value("JWT_PUBLIC_KEY_FILE"), None);
    }
}
