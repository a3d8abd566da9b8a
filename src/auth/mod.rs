//! JWT verification for `AUTHENTICATE`, and HS256 minting for the `token`
//! command and tests.
//!
//! * `mod.rs`: the [`Verifier`] and what it grants, [`VerifiedToken`].
//! * `keys.rs`: the key cryptography, from the JWT settings to a key.
//! * `claims.rs`: the rules on a token's content shared with minting.
//! * `inspect.rs`: a token's header and claims decoded without trusting
//!   them (for `chat-flow checktoken`), and the base64url decoding the
//!   verifier's header check uses.
//! * `mint.rs`: [`mint_hs256`].
//! * `error.rs`: [`AuthError`].
//!
//! [`Verifier::verify`] takes the current time as a parameter instead of
//! reading the clock, so the deterministic core (and its simulation) decides
//! what "now" is. `jsonwebtoken` therefore only checks the signature and the
//! algorithm; every claim is checked here against `now_unix_ms`:
//!
//! | claim | rule |
//! | --- | --- |
//! | header `alg` | exactly `JWT_ALGORITHM`; anything else (`none`, `HS256` against an RSA key, …) is rejected |
//! | header `crit` | rejected when present: no extension is understood |
//! | `sub` | required, a non-empty string; becomes the `userId` |
//! | `exp` | required NumericDate; rejected from `(exp + leeway)` seconds on |
//! | `nbf` | optional NumericDate; rejected before `(nbf - leeway)` seconds |
//! | `iss` | when `JWT_ISSUER` is set: required, equal to it |
//! | `aud` | when `JWT_AUDIENCE` is set: required, a string equal to it or an array of strings containing it |
//! | `username` | optional; when present it must satisfy [`valid_username`](crate::protocol::valid_username) |
//! | `rooms` | optional; when present an array of strings (private rooms the user may join) |
//!
//! A claim that is `null` counts as absent, like optional fields on the wire.
//! Tokens longer than [`TOKEN_MAX_BYTES`] are rejected before any decoding.
//! Error texts ([`AuthError`]) are safe to send to the client: they never
//! echo the token or a claim.

mod claims;
mod error;
mod inspect;
mod keys;
mod mint;
#[cfg(test)]
mod tests;

pub use claims::TOKEN_MAX_BYTES;
pub use error::AuthError;
pub use inspect::{SegmentProblem, Unverified, decode_unverified};
pub use mint::{TokenSpec, mint_hs256};

use std::collections::HashSet;

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{DecodingKey, Validation};
use serde_json::{Map, Value};

use crate::config::{Config, ConfigError, JwtAlgorithm};
use crate::protocol::valid_username;
use claims::{Rounding, numeric_date};
use inspect::decode_segment;

/// What a successfully verified token says about the connection's user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedToken {
    /// The `sub` claim: the `userId`.
    pub user_id: String,
    /// The `username` claim, already validated; when `Some` it overrides any
    /// username the client sends.
    pub username: Option<String>,
    /// The `rooms` claim: ids of private rooms the user may join (empty when
    /// absent).
    pub rooms: Vec<String>,
    /// `(exp + leeway) * 1000`: the first Unix millisecond at which the token
    /// is no longer accepted. The server closes the connection then unless
    /// the token was refreshed.
    pub expires_at_unix_ms: u64,
}

/// Verifies tokens for the one configured algorithm and key. Build it once at
/// start-up with [`Verifier::from_config`]; it is cheap to clone and share.
#[derive(Debug, Clone)]
pub struct Verifier {
    algorithm: JwtAlgorithm,
    key: DecodingKey,
    validation: Validation,
    issuer: Option<String>,
    audience: Option<String>,
    leeway_seconds: u64,
}

impl Verifier {
    /// Builds the verifier from the validated configuration (algorithm, key,
    /// issuer, audience, leeway), reading and parsing the public key file for
    /// RS256, ES256 and EdDSA. Fails when that key file is unreadable or
    /// holds no usable key for the algorithm, or for a configuration that did
    /// not come from [`Config::from_lookup`] (e.g. a public key with HS256);
    /// the error names `JWT_PUBLIC_KEY_FILE`.
    pub fn from_config(config: &Config) -> Result<Verifier, ConfigError> {
        let key = keys::decoding_key(config.jwt_algorithm, &config.jwt_key)?;
        let mut validation = Validation::new(keys::jsonwebtoken_algorithm(config.jwt_algorithm));
        // Time and registered claims are checked by `check_claims` against
        // the caller's clock, not by jsonwebtoken against the system clock.
        validation.required_spec_claims = HashSet::new();
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.validate_aud = false;
        validation.leeway = 0;
        Ok(Verifier {
            algorithm: config.jwt_algorithm,
            key,
            validation,
            issuer: config.jwt_issuer.clone(),
            audience: config.jwt_audience.clone(),
            leeway_seconds: config.jwt_leeway_seconds,
        })
    }

    /// The algorithm this verifier accepts.
    pub fn algorithm(&self) -> JwtAlgorithm {
        self.algorithm
    }

    /// Verifies `token` at time `now_unix_ms` and returns what it grants.
    pub fn verify(&self, token: &str, now_unix_ms: u64) -> Result<VerifiedToken, AuthError> {
        if token.len() > TOKEN_MAX_BYTES {
            return Err(AuthError::TooLong);
        }
        self.check_header(token)?;
        let claims = jsonwebtoken::decode::<Map<String, Value>>(token, &self.key, &self.validation)
            .map_err(|e| match e.kind() {
                ErrorKind::InvalidSignature
                | ErrorKind::InvalidEcdsaKey
                | ErrorKind::InvalidEddsaKey
                | ErrorKind::InvalidRsaKey(_)
                | ErrorKind::InvalidKeyFormat => AuthError::BadSignature,
                ErrorKind::InvalidAlgorithm
                | ErrorKind::MissingAlgorithm
                | ErrorKind::UnsupportedAlgorithm => AuthError::WrongAlgorithm,
                _ => AuthError::Malformed,
            })?
            .claims;
        self.check_claims(&claims, now_unix_ms)
    }

    /// Checks the header before any signature work: three segments, a JSON
    /// object header, exactly the configured `alg`, no `crit`.
    fn check_header(&self, token: &str) -> Result<(), AuthError> {
        let mut segments = token.split('.');
        let (Some(header), Some(_claims), Some(_signature), None) = (
            segments.next(),
            segments.next(),
            segments.next(),
            segments.next(),
        ) else {
            return Err(AuthError::Malformed);
        };
        let header = decode_segment(header).ok_or(AuthError::Malformed)?;
        let header: Map<String, Value> =
            serde_json::from_slice(&header).map_err(|_| AuthError::Malformed)?;
        match header.get("alg") {
            Some(Value::String(alg)) if alg == self.algorithm.as_str() => {}
            Some(Value::String(_)) => return Err(AuthError::WrongAlgorithm),
            _ => return Err(AuthError::Malformed),
        }
        if header.contains_key("crit") {
            return Err(AuthError::CriticalHeader);
        }
        Ok(())
    }

    /// Checks the claims of a token whose signature verified.
    fn check_claims(
        &self,
        claims: &Map<String, Value>,
        now_unix_ms: u64,
    ) -> Result<VerifiedToken, AuthError> {
        let claim = |name: &str| claims.get(name).filter(|value| !value.is_null());
        let leeway_ms = self.leeway_seconds.saturating_mul(1000);

        let user_id = match claim("sub") {
            Some(Value::String(sub)) if !sub.is_empty() => sub.clone(),
            _ => return Err(AuthError::MissingSubject),
        };

        let exp = claim("exp")
            .and_then(|exp| numeric_date(exp, Rounding::Down))
            .ok_or(AuthError::MissingExpiry)?;
        let expires_at_unix_ms = exp.saturating_add(self.leeway_seconds).saturating_mul(1000);
        if now_unix_ms >= expires_at_unix_ms {
            return Err(AuthError::Expired);
        }

        if let Some(nbf) = claim("nbf") {
            let nbf = numeric_date(nbf, Rounding::Up).ok_or(AuthError::InvalidNotBefore)?;
            if now_unix_ms.saturating_add(leeway_ms) < nbf.saturating_mul(1000) {
                return Err(AuthError::NotYetValid);
            }
        }

        if let Some(issuer) = &self.issuer {
            match claim("iss") {
                Some(Value::String(iss)) if iss == issuer => {}
                _ => return Err(AuthError::WrongIssuer),
            }
        }

        if let Some(audience) = &self.audience {
            let accepted = match claim("aud") {
                Some(Value::String(aud)) => aud == audience,
                Some(Value::Array(auds)) => {
                    auds.iter().all(Value::is_string)
                        && auds.iter().any(|aud| aud.as_str() == Some(audience))
                }
                _ => false,
            };
            if !accepted {
                return Err(AuthError::WrongAudience);
            }
        }

        let username = match claim("username") {
            None => None,
            Some(Value::String(name)) if valid_username(name) => Some(name.clone()),
            Some(_) => return Err(AuthError::InvalidUsername),
        };

        let rooms = match claim("rooms") {
            None => Vec::new(),
            Some(Value::Array(rooms)) => rooms
                .iter()
                .map(|room| room.as_str().map(str::to_owned))
                .collect::<Option<Vec<_>>>()
                .ok_or(AuthError::InvalidRooms)?,
            Some(_) => return Err(AuthError::InvalidRooms),
        };

        Ok(VerifiedToken {
            user_id,
            username,
            rooms,
            expires_at_unix_ms,
        })
    }
}
