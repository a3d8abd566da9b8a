//! Server → client messages: typed for decoding (the Rust client, tests, the
//! simulation) and encoded once into shared [`Bytes`] for sending.
//!
//! Every frame is `{"type":…,"payload":…}` with `"requestId"` appended when
//! it answers a request. A chat message is serialized once when accepted,
//! into its `NEW_MESSAGE` frame ([`MessageFrame`]), and that is all the
//! server keeps of it: the broadcast shares those bytes, the sender's
//! acknowledgement adds its `requestId` to them, and every later
//! `ROOM_JOINED` and `HISTORY` copies the message's JSON out of them.

use bytes::Bytes;
use serde::{Deserialize, Serialize};

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

/// The fields of a chat message, borrowed, in the order of [`ChatMessage`]:
/// what the core encodes a new message from without first copying each field
/// into an owned [`ChatMessage`].
#[derive(Debug, Clone, Copy, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NewMessage<'a> {
    /// Unique across the server.
    pub id: &'a str,
    /// Position in the room.
    pub seq: u64,
    /// The room.
    pub room_id: &'a str,
    /// The sender.
    pub user_id: &'a str,
    /// The sender's display name.
    pub username: &'a str,
    /// The text.
    pub content: &'a str,
    /// `text` or `emote`.
    #[serde(rename = "type")]
    pub kind: MessageKind,
    /// RFC 3339 UTC with milliseconds.
    pub timestamp: &'a str,
    /// The sender's retry key, when it gave one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_message_id: Option<&'a str>,
}

impl ChatMessage {
    /// The same message, borrowed, for [`MessageFrame::encode`].
    pub fn as_new(&self) -> NewMessage<'_> {
        NewMessage {
            id: &self.id,
            seq: self.seq,
            room_id: &self.room_id,
            user_id: &self.user_id,
            username: &self.username,
            content: &self.content,
            kind: self.kind,
            timestamp: &self.timestamp,
            client_message_id: self.client_message_id.as_deref(),
        }
    }
}

/// How every `NEW_MESSAGE` frame without a `requestId` starts; the message's
/// JSON follows, then the envelope's closing `}`.
const NEW_MESSAGE_HEAD: &[u8] = br#"{"type":"NEW_MESSAGE","payload":"#;

/// A chat message as the server keeps it: its `NEW_MESSAGE` frame, encoded
/// once, and nothing else. The broadcast is this frame (shared, not copied);
/// the sender's acknowledgement is this frame with a `requestId`; and
/// `ROOM_JOINED` and `HISTORY` copy the message's JSON out of it
/// ([`MessageFrame::payload`]), which sits at a fixed offset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageFrame(Bytes);

impl MessageFrame {
    /// Encodes `message` once.
    pub fn encode(message: &NewMessage<'_>) -> MessageFrame {
        // The fields as they are, plus the envelope and the keys (about 180
        // bytes): enough unless escaping lengthens a string.
        let fields = [
            message.id,
            message.room_id,
            message.user_id,
            message.username,
            message.content,
            message.timestamp,
            message.client_message_id.unwrap_or(""),
        ];
        let mut frame = Vec::with_capacity(fields.iter().map(|f| f.len()).sum::<usize>() + 200);
        frame.extend_from_slice(NEW_MESSAGE_HEAD);
        serde_json::to_writer(&mut frame, message)
            .expect("a message holds only strings and integers");
        frame.push(b'}');
        // Kept for as long as the message is in history: exactly its size.
        MessageFrame(Bytes::from(frame.into_boxed_slice()))
    }

    /// `message` (whose `seq` is ignored) cut where the digits of its `seq`
    /// go: the frame up to and including `"seq":`, and the rest. A store
    /// that gives the message its `seq` joins them around it.
    pub fn draft(message: &NewMessage<'_>) -> (Bytes, Bytes) {
        let frame = MessageFrame::encode(&NewMessage { seq: 0, ..*message });
        // `"seq":0` follows the `id`, a JSON string whose escaping turns any
        // `"` of it into `\"`: the first `"seq":0` outside it is the field.
        const SEQ: &[u8] = br#","seq":0"#;
        let at = frame
            .0
            .windows(SEQ.len())
            .position(|w| w == SEQ)
            .expect("every message has a seq after its id");
        let digits = at + SEQ.len() - 1;
        (frame.0.slice(..digits), frame.0.slice(digits + 1..))
    }

    /// A frame a store kept for this process: it must be what
    /// [`MessageFrame::encode`] (or a [`MessageFrame::draft`] joined around
    /// a `seq`) wrote, which is checked by its envelope only.
    pub fn from_stored(frame: Bytes) -> Option<MessageFrame> {
        (frame.starts_with(NEW_MESSAGE_HEAD)
            && frame.len() > NEW_MESSAGE_HEAD.len() + 1
            && frame.ends_with(b"}}"))
        .then_some(MessageFrame(frame))
    }

    /// The `NEW_MESSAGE` frame other members receive (a shared reference).
    pub fn broadcast(&self) -> Bytes {
        self.0.clone()
    }

    /// The `NEW_MESSAGE` frame for the sender: the broadcast with `requestId`.
    pub fn ack(&self, request_id: Option<&str>) -> Bytes {
        with_request_id(&self.0, request_id)
    }

    /// The message's JSON object, as it appears inside the frame.
    pub fn payload(&self) -> &[u8] {
        &self.0[NEW_MESSAGE_HEAD.len()..self.0.len() - 1]
    }

    /// The frame's length in bytes.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Never true: a frame always holds its envelope.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// Appends `"requestId"` to an encoded frame (which ends with `}`).
fn with_request_id(frame: &Bytes, request_id: Option<&str>) -> Bytes {
    let Some(id) = request_id else {
        return frame.clone();
    };
    let mut out = Vec::with_capacity(frame.len() + id.len() + 16);
    out.extend_from_slice(&frame[..frame.len() - 1]);
    push_request_id(&mut out, Some(id));
    out.push(b'}');
    Bytes::from(out)
}

/// Writes `,"requestId":…` when there is one.
fn push_request_id(out: &mut Vec<u8>, request_id: Option<&str>) {
    if let Some(id) = request_id {
        out.extend_from_slice(br#","requestId":"#);
        serde_json::to_writer(&mut *out, id).expect("writing a string into a Vec cannot fail");
    }
}

/// Writes `value` as JSON.
fn push_json<T: Serialize + ?Sized>(out: &mut Vec<u8>, value: &T) {
    serde_json::to_writer(&mut *out, value)
        .expect("server payloads hold only strings, integers, booleans and arrays of them");
}

/// Writes `[m1,m2,…]` from the messages' stored JSON.
fn push_messages<'a>(out: &mut Vec<u8>, messages: impl Iterator<Item = &'a MessageFrame>) {
    out.push(b'[');
    for (i, m) in messages.enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(m.payload());
    }
    out.push(b']');
}

/// The bytes `messages` will take in a reply, for the reply's capacity.
fn messages_len<'a>(messages: impl Iterator<Item = &'a MessageFrame>) -> usize {
    messages.map(|m| m.payload().len() + 1).sum()
}

/// Encodes a typed message (for everything but the history-carrying replies).
pub fn encode(message: &ServerMessage, request_id: Option<&str>) -> Bytes {
    let mut out = Vec::with_capacity(128);
    push_json(&mut out, message);
    if request_id.is_some() {
        out.pop();
        push_request_id(&mut out, request_id);
        out.push(b'}');
    }
    Bytes::from(out)
}

/// `ROOM_JOINED`, written with the stored messages' JSON as it is (field
/// order as [`ServerMessage::RoomJoined`] has it).
pub fn room_joined<'a, I>(
    room: &RoomInfo,
    epoch: &str,
    messages: I,
    users: &[UserRef],
    recovered: Option<bool>,
    request_id: Option<&str>,
) -> Bytes
where
    I: Iterator<Item = &'a MessageFrame> + Clone,
{
    let mut out = Vec::with_capacity(messages_len(messages.clone()) + 256 + 64 * users.len());
    out.extend_from_slice(br#"{"type":"ROOM_JOINED","payload":{"room":"#);
    push_json(&mut out, room);
    out.extend_from_slice(br#","epoch":"#);
    push_json(&mut out, epoch);
    out.extend_from_slice(br#","messages":"#);
    push_messages(&mut out, messages);
    out.extend_from_slice(br#","users":"#);
    push_json(&mut out, users);
    if let Some(recovered) = recovered {
        out.extend_from_slice(br#","recovered":"#);
        push_json(&mut out, &recovered);
    }
    out.push(b'}');
    push_request_id(&mut out, request_id);
    out.push(b'}');
    Bytes::from(out)
}

/// `HISTORY`, written with the stored messages' JSON as it is.
pub fn history<'a, I>(room_id: &str, messages: I, has_more: bool, request_id: Option<&str>) -> Bytes
where
    I: Iterator<Item = &'a MessageFrame> + Clone,
{
    let mut out = Vec::with_capacity(messages_len(messages.clone()) + 128);
    out.extend_from_slice(br#"{"type":"HISTORY","payload":{"roomId":"#);
    push_json(&mut out, room_id);
    out.extend_from_slice(br#","messages":"#);
    push_messages(&mut out, messages);
    out.extend_from_slice(br#","hasMore":"#);
    push_json(&mut out, &has_more);
    out.push(b'}');
    push_request_id(&mut out, request_id);
    out.push(b'}');
    Bytes::from(out)
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
            content: "hi \"there\" \u{1}\u{2028} é".into(),
            kind: MessageKind::Text,
            timestamp: "2023-10-01T12:00:00.000Z".into(),
            client_message_id: (seq % 2 == 1).then(|| "c\"1".into()),
        }
    }

    #[test]
    fn new_message_frames_round_trip() {
        for seq in [3, 4] {
            let stored = MessageFrame::encode(&message(seq).as_new());
            let f = ServerFrame::decode(&stored.broadcast()).unwrap();
            assert_eq!(f.message, ServerMessage::NewMessage(message(seq)));
            assert_eq!(f.request_id, None);
            let f = ServerFrame::decode(&stored.ack(Some("m\"1"))).unwrap();
            assert_eq!(f.message, ServerMessage::NewMessage(message(seq)));
            assert_eq!(f.request_id.as_deref(), Some("m\"1"));
            // Encoded from borrowed fields, byte for byte what the typed
            // message encodes to.
            assert_eq!(
                stored.broadcast(),
                encode(&ServerMessage::NewMessage(message(seq)), None)
            );
            assert_eq!(
                stored.payload(),
                serde_json::to_vec(&message(seq)).unwrap().as_slice()
            );
            assert_eq!(stored.len(), stored.broadcast().len());
        }
    }

    #[test]
    fn a_draft_joined_around_its_seq_is_the_message_encoded_with_it() {
        let mut m = message(3);
        // The field's spelling in the content and in the id: escaped, it is
        // not the field, and only the field is cut.
        m.content = r#","seq":0,"seq":0"#.into();
        m.id = "msg_\"seq\":0".into();
        for seq in [1, 42, u64::MAX] {
            m.seq = seq;
            let (head, tail) = MessageFrame::draft(&m.as_new());
            let joined = [&head[..], seq.to_string().as_bytes(), &tail[..]].concat();
            assert_eq!(joined, MessageFrame::encode(&m.as_new()).broadcast());
            let stored = MessageFrame::from_stored(Bytes::from(joined)).expect("a message frame");
            let f = ServerFrame::decode(&stored.broadcast()).unwrap();
            assert_eq!(f.message, ServerMessage::NewMessage(m.clone()));
        }
        for damaged in [
            &b"not a frame"[..],
            NEW_MESSAGE_HEAD,
            b"{\"type\":\"NEW_MESSAGE\"}",
        ] {
            assert!(MessageFrame::from_stored(Bytes::copy_from_slice(damaged)).is_none());
        }
    }

    fn room() -> RoomInfo {
        RoomInfo {
            id: "general".into(),
            name: "General".into(),
            description: String::new(),
            kind: RoomKind::Public,
            member_count: 1,
            created_at: "2023-10-01T12:00:00.000Z".into(),
            created_by: "system".into(),
        }
    }

    #[test]
    fn room_joined_is_what_the_typed_message_encodes_to() {
        let users = vec![UserRef {
            user_id: "u1".into(),
            username: "alice".into(),
        }];
        let stored: Vec<MessageFrame> = (1..=3)
            .map(|seq| MessageFrame::encode(&message(seq).as_new()))
            .collect();
        for (n, recovered, rid) in [
            (3, Some(true), Some("j1")),
            (0, None, None),
            (1, Some(false), None),
        ] {
            let bytes = room_joined(&room(), "e1", stored[..n].iter(), &users, recovered, rid);
            let typed = ServerMessage::RoomJoined {
                room: room(),
                epoch: "e1".into(),
                messages: (1..=n as u64).map(message).collect(),
                users: users.clone(),
                recovered,
            };
            assert_eq!(
                bytes,
                encode(&typed, rid),
                "{}",
                String::from_utf8_lossy(&bytes)
            );
            let f = ServerFrame::decode(&bytes).unwrap();
            assert_eq!((f.message, f.request_id.as_deref()), (typed, rid));
        }
    }

    #[test]
    fn history_is_what_the_typed_message_encodes_to() {
        let stored: Vec<MessageFrame> = (1..=2)
            .map(|seq| MessageFrame::encode(&message(seq).as_new()))
            .collect();
        for (n, has_more, rid) in [(2, true, Some("h")), (0, false, None)] {
            let bytes = history("gen\"eral", stored[..n].iter(), has_more, rid);
            let typed = ServerMessage::History {
                room_id: "gen\"eral".into(),
                messages: (1..=n as u64).map(message).collect(),
                has_more,
            };
            assert_eq!(
                bytes,
                encode(&typed, rid),
                "{}",
                String::from_utf8_lossy(&bytes)
            );
        }
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
