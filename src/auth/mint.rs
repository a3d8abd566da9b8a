//! HS256 minting for `chat-flow token`, tests, the simulation and load
//! generators: a token is refused here for anything the verifier would refuse
//! it for by its content.

use jsonwebtoken::{EncodingKey, Header};
use serde_json::{Map, Value};

use super::claims::TOKEN_MAX_BYTES;
use super::error::AuthError;
use crate::protocol::valid_username;

/// What to put in a token minted by [`mint_hs256`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TokenSpec<'a> {
    /// `sub`: the user id (non-empty).
    pub sub: &'a str,
    /// `username` claim, omitted when `None`; must satisfy
    /// [`valid_username`](crate::protocol::valid_username).
    pub username: Option<&'a str>,
    /// `rooms` claim (private rooms the user may join), omitted when empty.
    pub rooms: &'a [String],
    /// `iat`, in Unix seconds.
    pub issued_at_unix_s: u64,
    /// Lifetime: `exp = iat + ttl_s`.
    pub ttl_s: u64,
    /// `iss` claim, omitted when `None` (set it to `JWT_ISSUER`).
    pub issuer: Option<&'a str>,
    /// `aud` claim, omitted when `None` (set it to `JWT_AUDIENCE`).
    pub audience: Option<&'a str>,
}

impl<'a> TokenSpec<'a> {
    /// A token for `sub` issued at `issued_at_unix_s`, valid for `ttl_s`
    /// seconds, with no optional claims.
    pub fn new(sub: &'a str, issued_at_unix_s: u64, ttl_s: u64) -> Self {
        Self {
            sub,
            username: None,
            rooms: &[],
            issued_at_unix_s,
            ttl_s,
            issuer: None,
            audience: None,
        }
    }
}

/// Signs an HS256 token with `secret` (for `chat-flow token`, tests and load
/// generators). Refuses to mint what the verifier would reject for its
/// content: an empty `sub`, an invalid `username`, an `exp` that overflows,
/// a token longer than [`TOKEN_MAX_BYTES`] (e.g. too many `rooms`).
pub fn mint_hs256(secret: &[u8], spec: &TokenSpec<'_>) -> Result<String, AuthError> {
    if spec.sub.is_empty() {
        return Err(AuthError::MissingSubject);
    }
    if spec.username.is_some_and(|name| !valid_username(name)) {
        return Err(AuthError::InvalidUsername);
    }
    let exp = spec
        .issued_at_unix_s
        .checked_add(spec.ttl_s)
        .ok_or(AuthError::MissingExpiry)?;
    let mut claims = Map::new();
    claims.insert("sub".to_owned(), Value::from(spec.sub));
    claims.insert("iat".to_owned(), Value::from(spec.issued_at_unix_s));
    claims.insert("exp".to_owned(), Value::from(exp));
    if let Some(username) = spec.username {
        claims.insert("username".to_owned(), Value::from(username));
    }
    if !spec.rooms.is_empty() {
        claims.insert("rooms".to_owned(), Value::from(spec.rooms.to_vec()));
    }
    if let Some(issuer) = spec.issuer {
        claims.insert("iss".to_owned(), Value::from(issuer));
    }
    if let Some(audience) = spec.audience {
        claims.insert("aud".to_owned(), Value::from(audience));
    }
    let token = jsonwebtoken::encode(
        &Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(secret),
    )
    .map_err(|_| AuthError::Signing)?;
    if token.len() > TOKEN_MAX_BYTES {
        return Err(AuthError::TooLong);
    }
    Ok(token)
}
