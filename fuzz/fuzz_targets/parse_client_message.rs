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
//!    JSON with serde_json (by `protocol::client_encode`, independent of the
//!    parser) and parses again to the same value — in both the shortest form
//!    and a form that spells every optional field, `null` for absent ones.
//! 5. Accepted requests respect the contract's limits (lengths in
//!    characters, ranges), whatever the input spelled.

#![no_main]

use std::cell::RefCell;

use chat_flow::protocol::client_encode::encode;
use chat_flow::protocol::parse::{ParseLimits, parse_once};
use chat_flow::protocol::{
    Authenticate, ClientMessage, ClientRequest, CreateRoom, GetHistory, JoinRoom, LeaveRoom,
    Parser, SendMessage, TypingStatus,
};
use libfuzzer_sys::fuzz_target;

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
        ClientRequest::Authenticate(Authenticate { username, .. }) => {
            // The token's length is the verifier's to judge.
            if let Some(name) = username {
                assert!((1..=32).contains(&chars(name)));
                assert!(!name.chars().any(char::is_control));
            }
        }
        ClientRequest::CreateRoom(CreateRoom {
            name,
            description,
            id,
            ..
        }) => {
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
        ClientRequest::GetHistory(GetHistory { room_id, limit, .. }) => {
            assert!(!room_id.is_empty());
            assert!((1..=100).contains(limit));
        }
        ClientRequest::SendMessage(SendMessage {
            room_id,
            content,
            client_message_id,
            ..
        }) => {
            assert!(!room_id.is_empty());
            assert!((1..=limits.content_chars_max).contains(&chars(content)));
            assert!(!content.trim().is_empty());
            if let Some(id) = client_message_id {
                assert!((1..=64).contains(&chars(id)));
            }
        }
        ClientRequest::JoinRoom(JoinRoom { room_id, .. })
        | ClientRequest::LeaveRoom(LeaveRoom { room_id })
        | ClientRequest::TypingStatus(TypingStatus { room_id, .. }) => assert!(!room_id.is_empty()),
        ClientRequest::ListRooms | ClientRequest::Ping => {}
    }
}
