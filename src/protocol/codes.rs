//! The codes the server speaks: `ERROR` codes and WebSocket close codes.

use serde::{Deserialize, Serialize};

/// The `ERROR` codes of the contract.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ErrorCode {
    /// Not authenticated, or a bad, expired or not-yet-valid token.
    Unauthorized,
    /// Malformed JSON, unknown `type`, missing or ill-typed fields, binary frames.
    InvalidMessage,
    /// A `roomId` that does not exist.
    RoomNotFound,
    /// The connection has not joined the room.
    NotAMember,
    /// A private room without access, or a limit on what a user may own.
    Forbidden,
    /// `CREATE_ROOM` with an `id` already taken.
    RoomExists,
    /// Over a rate limit.
    RateLimitExceeded,
    /// An internal failure.
    ServerError,
}

impl ErrorCode {
    /// Every code, in a fixed order (for metrics).
    pub const ALL: [ErrorCode; 8] = [
        ErrorCode::Unauthorized,
        ErrorCode::InvalidMessage,
        ErrorCode::RoomNotFound,
        ErrorCode::NotAMember,
        ErrorCode::Forbidden,
        ErrorCode::RoomExists,
        ErrorCode::RateLimitExceeded,
        ErrorCode::ServerError,
    ];

    /// The code as it appears on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::Unauthorized => "UNAUTHORIZED",
            ErrorCode::InvalidMessage => "INVALID_MESSAGE",
            ErrorCode::RoomNotFound => "ROOM_NOT_FOUND",
            ErrorCode::NotAMember => "NOT_A_MEMBER",
            ErrorCode::Forbidden => "FORBIDDEN",
            ErrorCode::RoomExists => "ROOM_EXISTS",
            ErrorCode::RateLimitExceeded => "RATE_LIMIT_EXCEEDED",
            ErrorCode::ServerError => "SERVER_ERROR",
        }
    }
}

/// WebSocket close codes the server uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum CloseCode {
    /// 1000: normal closure.
    Normal,
    /// 1001: the server is shutting down, or the peer went idle.
    GoingAway,
    /// 1008: policy (auth timeout, failed authentications, token expired, rate-limit abuse).
    Policy,
    /// 1009: a message larger than `MAX_MESSAGE_BYTES`.
    TooBig,
    /// 1011: internal error.
    Internal,
    /// 1013: slow consumer (outbound queue full).
    TryAgainLater,
    /// 1002: a WebSocket protocol violation by the peer.
    ProtocolError,
    /// 1007: a text message that is not UTF-8.
    InvalidPayload,
}

impl CloseCode {
    /// The numeric code.
    pub fn code(self) -> u16 {
        match self {
            CloseCode::Normal => 1000,
            CloseCode::GoingAway => 1001,
            CloseCode::ProtocolError => 1002,
            CloseCode::InvalidPayload => 1007,
            CloseCode::Policy => 1008,
            CloseCode::TooBig => 1009,
            CloseCode::Internal => 1011,
            CloseCode::TryAgainLater => 1013,
        }
    }
}
