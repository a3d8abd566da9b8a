//! [`AuthError`]: why a token was refused, in words safe to send to the
//! client.

/// Why a token was refused (or could not be minted). `Display` texts are
/// meant for the client's `ERROR UNAUTHORIZED` message: they say what is
/// wrong without echoing the token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
#[non_exhaustive]
pub enum AuthError {
    /// The token exceeds [`TOKEN_MAX_BYTES`](super::TOKEN_MAX_BYTES).
    #[error("token is too long")]
    TooLong,
    /// Not a compact JWS with a JSON header and claims object.
    #[error("token is malformed")]
    Malformed,
    /// The header's `alg` is not the configured algorithm.
    #[error("token algorithm is not accepted")]
    WrongAlgorithm,
    /// The header lists `crit` extensions, none of which are understood.
    #[error("token has unsupported critical header parameters")]
    CriticalHeader,
    /// The signature does not verify with the configured key.
    #[error("token signature is invalid")]
    BadSignature,
    /// `sub` is absent, not a string, or empty.
    #[error("token has no valid sub claim")]
    MissingSubject,
    /// `exp` is absent or not a number (or cannot be computed when minting).
    #[error("token has no valid exp claim")]
    MissingExpiry,
    /// `nbf` is present but not a number.
    #[error("token nbf claim is not a number")]
    InvalidNotBefore,
    /// `exp` plus the leeway has passed.
    #[error("token expired")]
    Expired,
    /// `nbf` minus the leeway is still in the future.
    #[error("token is not yet valid")]
    NotYetValid,
    /// `JWT_ISSUER` is set and `iss` is absent or different.
    #[error("token issuer is not accepted")]
    WrongIssuer,
    /// `JWT_AUDIENCE` is set and `aud` is absent or does not contain it.
    #[error("token audience is not accepted")]
    WrongAudience,
    /// The `username` claim breaks the username rule (see
    /// [`valid_username`](crate::protocol::valid_username)).
    #[error("token username claim is invalid")]
    InvalidUsername,
    /// The `rooms` claim is not an array of strings.
    #[error("token rooms claim must be an array of strings")]
    InvalidRooms,
    /// Minting only: the signing library failed.
    #[error("token could not be signed")]
    Signing,
}
