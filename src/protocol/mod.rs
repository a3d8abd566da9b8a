//! The wire contract (`PROTOCOL.md`) as types.
//!
//! * [`parse`] turns one received text frame into a validated [`ClientMessage`]
//!   with simd-json, reading straight from the frame's own mutable buffer and
//!   reusing its scratch buffers between messages.
//! * [`server`] holds the server → client messages: typed (serde) so that the
//!   Rust client can decode them, and encoded once into shared [`bytes::Bytes`]
//!   so that a broadcast is serialized once for every recipient.
//!
//! Validation that depends only on the contract (lengths, character classes,
//! ranges) happens here, before any state is touched, so the core only ever
//! sees well-formed requests ("parse, don't validate").

pub mod client_encode;
pub mod parse;
pub mod server;
pub mod time;

pub use parse::{ParseError, Parser};

use serde::{Deserialize, Serialize};

/// Most characters a `requestId` may have.
pub const REQUEST_ID_CHARS_MAX: usize = 128;
/// Most characters a room `name` may have.
pub const ROOM_NAME_CHARS_MAX: usize = 64;
/// Most characters a room `description` may have.
pub const ROOM_DESCRIPTION_CHARS_MAX: usize = 256;
/// Most characters a room `id` may have.
pub const ROOM_ID_CHARS_MAX: usize = 64;
/// Most characters a `clientMessageId` may have.
pub const CLIENT_MESSAGE_ID_CHARS_MAX: usize = 64;
/// Largest `limit` a `GET_HISTORY` may ask for.
pub const HISTORY_PAGE_MAX: u32 = 100;
/// `limit` of a `GET_HISTORY` that does not give one.
pub const HISTORY_PAGE_DEFAULT: u32 = 50;

/// One parsed client request with the `requestId` it carried.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientMessage {
    /// Echoed on every reply to this request.
    pub request_id: Option<String>,
    /// What the client asked for.
    pub request: ClientRequest,
}

/// The client → server requests of the contract, each with its payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientRequest {
    /// `AUTHENTICATE {token, username?}`.
    Authenticate(Authenticate),
    /// `CREATE_ROOM {name, description?, type?, id?}`.
    CreateRoom(CreateRoom),
    /// `LIST_ROOMS {}`.
    ListRooms,
    /// `JOIN_ROOM {roomId, sinceSeq?, epoch?}`.
    JoinRoom(JoinRoom),
    /// `LEAVE_ROOM {roomId}`.
    LeaveRoom(LeaveRoom),
    /// `GET_HISTORY {roomId, beforeSeq?, limit?}`.
    GetHistory(GetHistory),
    /// `SEND_MESSAGE {roomId, content, type?, clientMessageId?}`.
    SendMessage(SendMessage),
    /// `TYPING_STATUS {roomId, isTyping}`.
    TypingStatus(TypingStatus),
    /// `PING {}`.
    Ping,
}

impl ClientRequest {
    /// The wire name of this request's `type`.
    pub fn type_name(&self) -> &'static str {
        match self {
            ClientRequest::Authenticate(_) => "AUTHENTICATE",
            ClientRequest::CreateRoom(_) => "CREATE_ROOM",
            ClientRequest::ListRooms => "LIST_ROOMS",
            ClientRequest::JoinRoom(_) => "JOIN_ROOM",
            ClientRequest::LeaveRoom(_) => "LEAVE_ROOM",
            ClientRequest::GetHistory(_) => "GET_HISTORY",
            ClientRequest::SendMessage(_) => "SEND_MESSAGE",
            ClientRequest::TypingStatus(_) => "TYPING_STATUS",
            ClientRequest::Ping => "PING",
        }
    }
}

/// The payload of `AUTHENTICATE`, as received: the token is not yet verified
/// (the shell verifies it; the core accepts only the outcome).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Authenticate {
    /// The raw token.
    pub token: String,
    /// The username the client proposes (used only when the token has none).
    pub username: Option<String>,
}

/// The payload of `CREATE_ROOM`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreateRoom {
    /// Display name, 1–64 characters.
    pub name: String,
    /// 0–256 characters; `""` when absent.
    pub description: String,
    /// Public unless `"private"`.
    pub kind: RoomKind,
    /// The id the client wants, or `None` to let the server pick.
    pub id: Option<String>,
}

/// The payload of `JOIN_ROOM`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinRoom {
    /// The room.
    pub room_id: String,
    /// The last `seq` the client has, to recover only what it missed.
    pub since_seq: Option<u64>,
    /// The room epoch that `since_seq` belongs to.
    pub epoch: Option<String>,
}

/// The payload of `LEAVE_ROOM`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaveRoom {
    /// The room.
    pub room_id: String,
}

/// The payload of `GET_HISTORY`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GetHistory {
    /// The room.
    pub room_id: String,
    /// Only messages with `seq < before_seq`.
    pub before_seq: Option<u64>,
    /// 1–100, default 50.
    pub limit: u32,
}

/// The payload of `SEND_MESSAGE`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SendMessage {
    /// The room.
    pub room_id: String,
    /// The text, 1–`MAX_CONTENT_LENGTH` characters, not only whitespace.
    pub content: String,
    /// `text` (default) or `emote`.
    pub kind: MessageKind,
    /// Makes a resend after a lost acknowledgement safe.
    pub client_message_id: Option<String>,
}

/// The payload of `TYPING_STATUS`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TypingStatus {
    /// The room.
    pub room_id: String,
    /// Whether the user is typing now.
    pub is_typing: bool,
}

/// Whether anyone may join a room or only those the token names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum RoomKind {
    /// Anyone authenticated may join.
    #[default]
    Public,
    /// Only the creator and users whose token's `rooms` claim lists the room.
    Private,
}

/// The `type` of a chat message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum MessageKind {
    /// A plain message.
    #[default]
    Text,
    /// An action ("/me waves").
    Emote,
}

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

/// Number of Unicode code points in `s`: every length in the contract counts these.
pub fn char_len(s: &str) -> usize {
    s.chars().count()
}

/// At most 128 characters: a `requestId`.
pub fn valid_request_id(id: &str) -> bool {
    char_len(id) <= REQUEST_ID_CHARS_MAX
}

/// `[A-Za-z0-9_-]{1,64}`: the shape of a room id (one a room may be given).
pub fn valid_room_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= ROOM_ID_CHARS_MAX
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// A `roomId` a request may name: any non-empty string of at most four times
/// [`ROOM_ID_CHARS_MAX`] characters. Looser than [`valid_room_id`] on
/// purpose: a room id that cannot exist is still a well-formed request
/// (answered `ROOM_NOT_FOUND`), unless it is absurdly long.
pub fn valid_room_reference(id: &str) -> bool {
    !id.is_empty() && char_len(id) <= ROOM_ID_CHARS_MAX * 4
}

/// 1–`max` characters, no control characters, not only whitespace: a room
/// name (`max` = [`ROOM_NAME_CHARS_MAX`]).
pub fn valid_display_text(s: &str, max: usize) -> bool {
    valid_message_content(s, max) && !s.chars().any(char::is_control)
}

/// At most [`ROOM_DESCRIPTION_CHARS_MAX`] characters: a room `description`.
pub fn valid_room_description(s: &str) -> bool {
    char_len(s) <= ROOM_DESCRIPTION_CHARS_MAX
}

/// 1–`max` characters, not only whitespace: a message's `content` (`max` is
/// `MAX_CONTENT_LENGTH`). Unlike a name, content may hold line breaks.
pub fn valid_message_content(s: &str, max: usize) -> bool {
    (1..=max).contains(&char_len(s)) && !s.trim().is_empty()
}

/// 1–[`CLIENT_MESSAGE_ID_CHARS_MAX`] characters: a `clientMessageId`.
pub fn valid_client_message_id(id: &str) -> bool {
    (1..=CLIENT_MESSAGE_ID_CHARS_MAX).contains(&char_len(id))
}
