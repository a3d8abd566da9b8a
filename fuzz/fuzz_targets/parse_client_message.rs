//! Arbitrary bytes → the client-message parser.
//!
//! Invariants checked on every input:
//!
//! 1. Parsing never panics (libFuzzer reports a panic as a crash).
//! 2. The parser the server actually uses — one reused `Parser` per worker
//!    thread, whose simd-json buffers and tape survive from one message to
//!    the next — gives exactly the result a fresh parser gives, error
//!    included.
//! 3. An error's `requestId` obeys the contract (a string of at most 128
//!    characters).
//! 4. What parses re-encodes: the typed [`ClientMessage`] is written back to
//!    JSON with serde_json (by the small encoder below, independent of the
//!    parser) and parses again to the same value — in both the shortest form
//!    and a form that spells every optional field, `null` for absent ones.
//! 5. Accepted requests respect the contract's limits (lengths in
//!    characters, ranges), whatever the input spelled.

#![no_main]

use std::cell::RefCell;

use chat_flow::protocol::parse::{ParseLimits, parse_once};
use chat_flow::protocol::{ClientMessage, ClientRequest, MessageKind, Parser, RoomKind};
use libfuzzer_sys::fuzz_target;
use serde_json::{Map, Value, json};

thread_local! {
    /// Reused across inputs, as the server reuses one per worker thread.
    static REUSED: RefCell<Parser> = RefCell::new(Parser::new(ParseLimits::default()));
}

fuzz_target!(|data: &[u8]| {
    let limits = ParseLimits::default();
    let fresh = parse_once(&mut data.to_vec(), limits);
    let reused = REUSED.with_borrow_mut(|p| p.parse(&mut data.to_vec()));
    assert_eq!(fresh, reused, "a reused parser disagrees with a fresh one");

    let message = match fresh {
        Err(e) => {
            if let Some(id) = &e.request_id {
                assert!(
                    id.chars().count() <= 128,
                    "error carries an over-long requestId"
                );
            }
            return;
        }
        Ok(message) => message,
    };
    check_limits(&message, limits);

    for spell_absent_as_null in [false, true] {
        let encoded = encode(&message, spell_absent_as_null);
        let mut bytes = serde_json::to_vec(&encoded).expect("a Value always serializes");
        let again = parse_once(&mut bytes, limits).unwrap_or_else(|e| {
            panic!(
                "re-encoded message does not parse: {e:?}\n{}",
                String::from_utf8_lossy(&serde_json::to_vec(&encoded).unwrap())
            )
        });
        assert_eq!(again, message, "re-encoded message parses to another value");
    }
});

/// The contract's limits, checked on what the parser accepted.
fn check_limits(message: &ClientMessage, limits: ParseLimits) {
    let chars = |s: &str| s.chars().count();
    if let Some(id) = &message.request_id {
        assert!(chars(id) <= 128);
    }
    match &message.request {
        ClientRequest::Authenticate { token, username } => {
            assert!(token.len() <= 8 * 1024);
            if let Some(name) = username {
                assert!((1..=32).contains(&chars(name)));
                assert!(!name.chars().any(char::is_control));
            }
        }
        ClientRequest::CreateRoom {
            name,
            description,
            id,
            ..
        } => {
            assert!((1..=64).contains(&chars(name)));
            assert!(!name.trim().is_empty());
            assert!(!name.chars().any(char::is_control));
            assert!(chars(description) <= 256);
            if let Some(id) = id {
                assert!((1..=64).contains(&id.len()));
                assert!(
                    id.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
                );
            }
        }
        ClientRequest::GetHistory { room_id, limit, .. } => {
            assert!(!room_id.is_empty());
            assert!((1..=100).contains(limit));
        }
        ClientRequest::SendMessage {
            room_id,
            content,
            client_message_id,
            ..
        } => {
            assert!(!room_id.is_empty());
            assert!((1..=limits.content_chars_max).contains(&chars(content)));
            assert!(!content.trim().is_empty());
            if let Some(id) = client_message_id {
                assert!((1..=64).contains(&chars(id)));
            }
        }
        ClientRequest::JoinRoom { room_id, .. }
        | ClientRequest::LeaveRoom { room_id }
        | ClientRequest::TypingStatus { room_id, .. } => assert!(!room_id.is_empty()),
        ClientRequest::ListRooms | ClientRequest::Ping => {}
    }
}

/// Writes `message` as the contract's JSON envelope. With
/// `spell_absent_as_null`, every optional field that is absent is written as
/// `null` (which the contract says counts as absent) and every defaulted
/// field is written out; otherwise the shortest form is written.
fn encode(message: &ClientMessage, spell_absent_as_null: bool) -> Value {
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
        ClientRequest::Authenticate { token, username } => {
            put("token", Some(json!(token)));
            put("username", username.as_ref().map(|u| json!(u)));
        }
        ClientRequest::CreateRoom {
            name,
            description,
            kind,
            id,
        } => {
            put("name", Some(json!(name)));
            put(
                "description",
                (full || !description.is_empty()).then(|| json!(description)),
            );
            let kind = match kind {
                RoomKind::Public => "public",
                RoomKind::Private => "private",
            };
            put("type", (full || kind != "public").then(|| json!(kind)));
            put("id", id.as_ref().map(|id| json!(id)));
        }
        ClientRequest::ListRooms | ClientRequest::Ping => {}
        ClientRequest::JoinRoom {
            room_id,
            since_seq,
            epoch,
        } => {
            put("roomId", Some(json!(room_id)));
            put("sinceSeq", since_seq.map(|s| json!(s)));
            put("epoch", epoch.as_ref().map(|e| json!(e)));
        }
        ClientRequest::LeaveRoom { room_id } => put("roomId", Some(json!(room_id))),
        ClientRequest::GetHistory {
            room_id,
            before_seq,
            limit,
        } => {
            put("roomId", Some(json!(room_id)));
            put("beforeSeq", before_seq.map(|s| json!(s)));
            put("limit", (full || *limit != 50).then(|| json!(limit)));
        }
        ClientRequest::SendMessage {
            room_id,
            content,
            kind,
            client_message_id,
        } => {
            put("roomId", Some(json!(room_id)));
            put("content", Some(json!(content)));
            let kind = match kind {
                MessageKind::Text => "text",
                MessageKind::Emote => "emote",
            };
            put("type", (full || kind != "text").then(|| json!(kind)));
            put(
                "clientMessageId",
                client_message_id.as_ref().map(|c| json!(c)),
            );
        }
        ClientRequest::TypingStatus { room_id, is_typing } => {
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
