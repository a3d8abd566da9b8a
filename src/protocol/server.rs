//! Server → client messages: typed for decoding (the Rust client, tests, the
//! simulation) and encoded once into shared [`Bytes`] for sending.
//!
//! Every frame is `{"type":…,"payload":…}` with `"requestId"` appended when
//! it answers a request. A chat message is serialized once when accepted
//! ([`StoredMessage`]) and those bytes are reused by the broadcast, by the
//! sender's acknowledgement, and by every later `ROOM_JOINED` and `HISTORY`
//! that includes it.

use std::sync::Arc;

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use super::codes::ErrorCode;
use super::request::{MessageKind, RoomKind};

/// A room as it appears on the wire.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RoomInfo {
    /// The room's id.
    pub id: String,
    /// Display name.
    pub name: String,
    /// Free text, possibly empty.
    pub description: String,
    /// `public` or `private`.
    #[serde(rename = "type")]
    pub kind: RoomKind,
    /// Distinct users joined now.
    pub member_count: u64,
    /// RFC 3339 UTC with milliseconds.
    pub created_at: String,
    /// The creating user's id, or `system`.
    pub created_by: String,
}

/// A user as presence shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UserRef {
    /// The token's `sub`.
    pub user_id: String,
    /// The display name.
    pub username: String,
}

/// One chat message (`NEW_MESSAGE` payload and history entries).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ChatMessage {
    /// Unique across the server.
    pub id: String,
    /// Position in the room: 1, 2, 3, … never reused.
    pub seq: u64,
    /// The room.
    pub room_id: String,
    /// The sender.
    pub user_id: String,
    /// The sender's display name.
    pub username: String,
    /// The text.
    pub content: String,
    /// `text` or `emote`.
    #[serde(rename = "type")]
    pub kind: MessageKind,
    /// When the server accepted it (RFC 3339 UTC with milliseconds).
    pub timestamp: String,
    /// The sender's retry key, echoed when it was given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_message_id: Option<String>,
}

/// Every server → client message, for decoding.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(
    tag = "type",
    content = "payload",
    rename_all = "SCREAMING_SNAKE_CASE",
    rename_all_fields = "camelCase"
)]
pub enum ServerMessage {
    /// Reply to `AUTHENTICATE`.
    AuthSuccess {
        /// The token's `sub`.
        user_id: String,
        /// The name the connection goes by.
        username: String,
        /// Always `online`.
        status: String,
    },
    /// Reply to `CREATE_ROOM`.
    RoomCreated {
        /// The new room.
        room: RoomInfo,
        /// Its epoch.
        epoch: String,
    },
    /// Reply to `LIST_ROOMS`.
    RoomList {
        /// Public rooms and the private rooms the user may join.
        rooms: Vec<RoomInfo>,
    },
    /// Reply to `JOIN_ROOM`.
    RoomJoined {
        /// The room.
        room: RoomInfo,
        /// The room's epoch.
        epoch: String,
        /// Retained messages (or those after `sinceSeq`), oldest first.
        messages: Vec<ChatMessage>,
        /// Distinct users present, the joiner included.
        users: Vec<UserRef>,
        /// Present when `sinceSeq` was sent: whether nothing was missed.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        recovered: Option<bool>,
    },
    /// Reply to `LEAVE_ROOM`.
    RoomLeft {
        /// The room left.
        room_id: String,
    },
    /// Reply to `GET_HISTORY`.
    History {
        /// The room.
        room_id: String,
        /// The page, oldest first.
        messages: Vec<ChatMessage>,
        /// Whether older retained messages exist.
        has_more: bool,
    },
    /// Reply to `PING`.
    Pong {},
    /// A message in a joined room.
    NewMessage(ChatMessage),
    /// A user's first connection joined a room.
    UserJoined {
        /// The room.
        room_id: String,
        /// Who joined.
        user: UserRef,
    },
    /// A user's last connection left a room.
    UserLeft {
        /// The room.
        room_id: String,
        /// Who left.
        user_id: String,
        /// Their display name.
        username: String,
    },
    /// Someone else started or stopped typing.
    TypingUpdate {
        /// The room.
        room_id: String,
        /// Who.
        user_id: String,
        /// Their display name.
        username: String,
        /// Typing now or not.
        is_typing: bool,
    },
    /// A request failed, or the server is about to close the connection.
    Error {
        /// What went wrong.
        code: ErrorCode,
        /// Human-readable detail; never internal.
        message: String,
        /// For `RATE_LIMIT_EXCEEDED`: when a retry can succeed.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        retry_after_ms: Option<u64>,
    },
}

/// A decoded server frame: the message and the `requestId` it answers.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct ServerFrame {
    /// The message.
    #[serde(flatten)]
    pub message: ServerMessage,
    /// Set on replies to a request that carried one.
    #[serde(rename = "requestId", default)]
    pub request_id: Option<String>,
}

impl ServerFrame {
    /// Decodes one text frame sent by the server.
    pub fn decode(text: &[u8]) -> Result<ServerFrame, serde_json::Error> {
        serde_json::from_slice(text)
    }
}

/// A chat message as kept in history: the typed value and its JSON, encoded
/// once and shared by every frame that includes it.
#[derive(Debug)]
pub struct StoredMessage {
    /// The message.
    pub message: ChatMessage,
    /// `message` as a JSON object.
    json: Box<RawValue>,
    /// The `NEW_MESSAGE` frame without a `requestId` (what other members get).
    broadcast: Bytes,
}

impl StoredMessage {
    /// Encodes `message` once.
    pub fn new(message: ChatMessage) -> Arc<StoredMessage> {
        let json = serde_json::value::to_raw_value(&message)
            .expect("a ChatMessage always serializes: it holds only strings and integers");
        let mut frame = Vec::with_capacity(json.get().len() + 40);
        frame.extend_from_slice(br#"{"type":"NEW_MESSAGE","payload":"#);
        frame.extend_from_slice(json.get().as_bytes());
        frame.push(b'}');
        Arc::new(StoredMessage {
            message,
            json,
            broadcast: Bytes::from(frame),
        })
    }

    /// The `NEW_MESSAGE` frame other members receive.
    pub fn broadcast_frame(&self) -> Bytes {
        self.broadcast.clone()
    }

    /// The `NEW_MESSAGE` frame for the sender: the broadcast with `requestId`.
    pub fn ack_frame(&self, request_id: Option<&str>) -> Bytes {
        with_request_id(&self.broadcast, request_id)
    }
}

impl Serialize for StoredMessage {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.json.serialize(s)
    }
}

/// Appends `"requestId"` to an encoded frame (which ends with `}`).
fn with_request_id(frame: &Bytes, request_id: Option<&str>) -> Bytes {
    let Some(id) = request_id else {
        return frame.clone();
    };
    let mut out = Vec::with_capacity(frame.len() + id.len() + 16);
    out.extend_from_slice(&frame[..frame.len() - 1]);
    out.extend_from_slice(br#","requestId":"#);
    serde_json::to_writer(&mut out, id).expect("writing a string into a Vec cannot fail");
    out.push(b'}');
    Bytes::from(out)
}

#[derive(Serialize)]
struct Envelope<'a, P: Serialize> {
    #[serde(rename = "type")]
    kind: &'a str,
    payload: &'a P,
    #[serde(rename = "requestId", skip_serializing_if = "Option::is_none")]
    request_id: Option<&'a str>,
}

/// Encodes `{"type":kind,"payload":payload,"requestId":…}` once.
pub fn encode_payload<P: Serialize>(kind: &str, payload: &P, request_id: Option<&str>) -> Bytes {
    let envelope = Envelope {
        kind,
        payload,
        request_id,
    };
    Bytes::from(
        serde_json::to_vec(&envelope)
            .expect("server payloads hold only strings, integers, booleans and arrays of them"),
    )
}

/// Encodes a typed message (for everything but the history-carrying replies).
pub fn encode(message: &ServerMessage, request_id: Option<&str>) -> Bytes {
    let frame = Bytes::from(
        serde_json::to_vec(message)
            .expect("server payloads hold only strings, integers, booleans and arrays of them"),
    );
    with_request_id(&frame, request_id)
}

/// `ROOM_JOINED`, with the stored messages' JSON reused.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RoomJoinedPayload<'a> {
    /// The room.
    pub room: &'a RoomInfo,
    /// The room's epoch.
    pub epoch: &'a str,
    /// Oldest first.
    pub messages: &'a [Arc<StoredMessage>],
    /// Distinct users present.
    pub users: &'a [UserRef],
    /// Only when `sinceSeq` was sent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub recovered: Option<bool>,
}

/// `HISTORY`, with the stored messages' JSON reused.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct HistoryPayload<'a> {
    /// The room.
    pub room_id: &'a str,
    /// Oldest first.
    pub messages: &'a [Arc<StoredMessage>],
    /// Whether older retained messages exist.
    pub has_more: bool,
}

/// An `ERROR` frame.
pub fn error(
    code: ErrorCode,
    message: impl Into<String>,
    retry_after_ms: Option<u64>,
    request_id: Option<&str>,
) -> Bytes {
    encode(
        &ServerMessage::Error {
            code,
            message: message.into(),
            retry_after_ms,
        },
        request_id,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(seq: u64) -> ChatMessage {
        ChatMessage {
            id: format!("msg_{seq}"),
            seq,
            room_id: "general".into(),
            user_id: "u1".into(),
            username: "alice".into(),
            content: "hi \"there\"".into(),
            kind: MessageKind::Text,
            timestamp: "2023-10-01T12:00:00.000Z".into(),
            client_message_id: Some("c1".into()),
        }
    }

    #[test]
    fn new_message_frames_round_trip() {
        let stored = StoredMessage::new(message(3));
        let f = ServerFrame::decode(&stored.broadcast_frame()).unwrap();
        assert_eq!(f.message, ServerMessage::NewMessage(message(3)));
        assert_eq!(f.request_id, None);
        let f = ServerFrame::decode(&stored.ack_frame(Some("m\"1"))).unwrap();
        assert_eq!(f.message, ServerMessage::NewMessage(message(3)));
        assert_eq!(f.request_id.as_deref(), Some("m\"1"));
    }

    #[test]
    fn room_joined_reuses_stored_json() {
        let room = RoomInfo {
            id: "general".into(),
            name: "General".into(),
            description: String::new(),
            kind: RoomKind::Public,
            member_count: 1,
            created_at: "2023-10-01T12:00:00.000Z".into(),
            created_by: "system".into(),
        };
        let users = vec![UserRef {
            user_id: "u1".into(),
            username: "alice".into(),
        }];
        let stored = vec![
            StoredMessage::new(message(1)),
            StoredMessage::new(message(2)),
        ];
        let bytes = encode_payload(
            "ROOM_JOINED",
            &RoomJoinedPayload {
                room: &room,
                epoch: "e1",
                messages: &stored,
                users: &users,
                recovered: Some(true),
            },
            Some("j1"),
        );
        let f = ServerFrame::decode(&bytes).unwrap();
        assert_eq!(f.request_id.as_deref(), Some("j1"));
        assert_eq!(
            f.message,
            ServerMessage::RoomJoined {
                room,
                epoch: "e1".into(),
                messages: vec![message(1), message(2)],
                users,
                recovered: Some(true)
            }
        );
    }

    #[test]
    fn error_frame_shape() {
        let bytes = error(
            ErrorCode::RateLimitExceeded,
            "slow down",
            Some(500),
            Some("r"),
        );
        let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"type":"ERROR","payload":{"code":"RATE_LIMIT_EXCEEDED","message":"slow down","retryAfterMs":500},"requestId":"r"})
        );
        let v: serde_json::Value =
            serde_json::from_slice(&encode(&ServerMessage::Pong {}, None)).unwrap();
        assert_eq!(v, serde_json::json!({"type":"PONG","payload":{}}));
    }
}
