//! The client → server requests: one struct per request type, carried by
//! [`ClientRequest`], as the parser produces them.

use serde::{Deserialize, Serialize};

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
