//! Start-up configuration: every setting of the wire contract
//! (`PROTOCOL.md`), read once, validated once, and handed to the rest of the
//! server as typed values so that nothing downstream re-parses strings.
//!
//! # Sources and precedence
//!
//! A setting comes from, in order of precedence, a command-line flag
//! (`--port 4000`), a real environment variable (`PORT=4000`), or a `.env`
//! file in the working directory. Clap applies the first two
//! ([`ServeArgs`] declares every flag with its `env = "…"`); then
//! [`ServeArgs::fill_unset`] takes what is still unset from the `.env` file
//! ([`DotEnv`], whose syntax is [`dotenv`]'s). [`ConfigSource`] does both, at
//! start-up and again on a reload. The process environment is never written.
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
//! * An unset variable takes the default (the `DEFAULT_…` constants).
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
//! `JWT_PUBLIC_KEY_FILE`. This module only holds those setting values: the
//! `auth` module reads the key file and parses the key (the binary does it
//! right after validation, so a bad key is still a start-up error naming
//! `JWT_PUBLIC_KEY_FILE`), which keeps key cryptography out of configuration.
//!
//! # Files
//!
//! * `settings.rs`: [`Config`], its defaults and the log and deployment
//!   settings.
//! * `jwt.rs`: the JWT settings ([`JwtAlgorithm`], [`JwtKeySource`]).
//! * `sources.rs`: where values come from ([`ServeArgs`], [`DotEnv`],
//!   [`ConfigSource`]).
//! * `dotenv.rs`: the `.env` syntax (a parser of our own, without IO).
//! * `cidr.rs`: [`Cidr`], the networks of `TRUSTED_PROXIES`.
//! * `validate.rs`: [`Config::from_lookup`], one rule per variable.
//! * `error.rs`: [`ConfigError`].

// `mod.rs` only declares and re-exports: every file below imports the files
// it needs directly, and none imports this one, so no two files import each
// other.
mod cidr;
pub mod dotenv;
mod error;
mod jwt;
mod settings;
mod sources;
#[cfg(test)]
mod tests;
mod validate;

pub use cidr::Cidr;
pub use error::ConfigError;
pub use jwt::{DEV_JWT_SECRET, JWT_SECRET_MIN_BYTES, JwtAlgorithm, JwtKeySource};
pub use settings::*;
pub use sources::{ConfigSource, DotEnv, ServeArgs};
