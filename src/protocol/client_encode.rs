//! Client requests written back as the contract's JSON (the inverse of
//! [`parse`](super::parse)), independent of the parser: serde_json builds
//! the text. Used by the fuzz targets (what parses must re-encode and parse
//! to the same value) and by drivers that record what a client sent.

use serde_json::{Map, Value, json};

use super::request::{
    Authenticate, ClientMessage, ClientRequest, CreateRoom, GetHistory, JoinRoom, LeaveRoom,
    MessageKind, RoomKind, SendMessage, TypingStatus,
};
use super::rules::HISTORY_PAGE_DEFAULT;

/// Writes `message` as the contract's JSON envelope. With
/// `spell_absent_as_null`, every optional field that is absent is written as
/// `null` (which the contract says counts as absent) and every defaulted
/// field is written out; otherwise the shortest form is written.
pub fn encode(message: &ClientMessage, spell_absent_as_null: bool) -> Value {
    let full = spell_absent_as_null;
    let mut payload = Map::new();
    let mut put = |key: &str, value: Option<Value>| match value {
        Some(v) => {
            payload.insert(key.to_owned(), v);
        }
        None if full => {
            payload.insert(key.to_owned(), Value::Null);
        }
        None => {}
    };
    match &message.request {
        ClientRequest::Authenticate(Authenticate { token, username }) => {
            put("token", Some(json!(token)));
            put("username", username.as_ref().map(|u| json!(u)));
        }
        ClientRequest::CreateRoom(CreateRoom {
            name,
            description,
            kind,
            id,
        }) => {
            put("name", Some(json!(name)));
            put(
                "description",
                (full || !description.is_empty()).then(|| json!(description)),
            );
            put(
                "type",
                (full || *kind != RoomKind::default()).then(|| json!(kind)),
            );
            put("id", id.as_ref().map(|id| json!(id)));
        }
        ClientRequest::ListRooms | ClientRequest::Ping => {}
        ClientRequest::JoinRoom(JoinRoom {
            room_id,
            since_seq,
            epoch,
        }) => {
            put("roomId", Some(json!(room_id)));
            put("sinceSeq", since_seq.map(|s| json!(s)));
            put("epoch", epoch.as_ref().map(|e| json!(e)));
        }
        ClientRequest::LeaveRoom(LeaveRoom { room_id }) => put("roomId", Some(json!(room_id))),
        ClientRequest::GetHistory(GetHistory {
            room_id,
            before_seq,
            limit,
        }) => {
            put("roomId", Some(json!(room_id)));
            put("beforeSeq", before_seq.map(|s| json!(s)));
            put(
                "limit",
                (full || *limit != HISTORY_PAGE_DEFAULT).then(|| json!(limit)),
            );
        }
        ClientRequest::SendMessage(SendMessage {
            room_id,
            content,
            kind,
            client_message_id,
        }) => {
            put("roomId", Some(json!(room_id)));
            put("content", Some(json!(content)));
            put(
                "type",
                (full || *kind != MessageKind::default()).then(|| json!(kind)),
            );
            put(
                "clientMessageId",
                client_message_id.as_ref().map(|c| json!(c)),
            );
        }
        ClientRequest::TypingStatus(TypingStatus { room_id, is_typing }) => {
            put("roomId", Some(json!(room_id)));
            put("isTyping", Some(json!(is_typing)));
        }
    }
    let mut envelope = Map::new();
    envelope.insert("type".to_owned(), json!(message.request.type_name()));
    // A request without fields may omit its payload; the full form sends `{}`.
    if full || !payload.is_empty() {
        envelope.insert("payload".to_owned(), Value::Object(payload));
    }
    match &message.request_id {
        Some(id) => {
            envelope.insert("requestId".to_owned(), json!(id));
        }
        None if full => {
            envelope.insert("requestId".to_owned(), Value::Null);
        }
        None => {}
    }
    Value::Object(envelope)
}
