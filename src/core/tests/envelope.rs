//! The envelope: malformed and binary frames, requests before authentication, `PING`.

use serde_json::json;

use super::harness::{TestHub, small_limits, user_ids};
use crate::protocol::ErrorCode;

#[test]
fn malformed_messages_are_invalid_message_with_request_id_when_readable() {
    let mut t = TestHub::new(small_limits());
    let a = t.connect();
    let other = t.user("bob");
    t.join(other, "general");

    for authenticated in [false, true] {
        t.text(a, "not json");
        t.error(a, ErrorCode::InvalidMessage, None);
        t.text(a, "[1,2]");
        t.error(a, ErrorCode::InvalidMessage, None);
        t.send(a, json!({"type": "NOPE", "requestId": "x1"}));
        t.error(a, ErrorCode::InvalidMessage, Some("x1"));
        t.send(a, json!({"payload": {}, "requestId": "x2"}));
        t.error(a, ErrorCode::InvalidMessage, Some("x2"));
        t.send(a, json!({"type": "PING", "payload": 5, "requestId": "x3"}));
        t.error(a, ErrorCode::InvalidMessage, Some("x3"));
        // A requestId that is not a string of at most 128 characters.
        t.send(a, json!({"type": "PING", "requestId": 5}));
        t.error(a, ErrorCode::InvalidMessage, None);
        t.send(a, json!({"type": "PING", "requestId": "r".repeat(129)}));
        t.error(a, ErrorCode::InvalidMessage, None);
        // Missing or ill-typed fields.
        t.call(a, "JOIN_ROOM", json!({}), "x4");
        t.error(a, ErrorCode::InvalidMessage, Some("x4"));
        t.call(
            a,
            "TYPING_STATUS",
            json!({"roomId": "general", "isTyping": "yes"}),
            "x5",
        );
        t.error(a, ErrorCode::InvalidMessage, Some("x5"));
        // Field validation comes before room checks.
        t.call(
            a,
            "SEND_MESSAGE",
            json!({"roomId": "nowhere", "content": "   "}),
            "x6",
        );
        t.error(a, ErrorCode::InvalidMessage, Some("x6"));
        assert_eq!(
            t.closed(a),
            None,
            "a bad message never closes the connection"
        );
        t.silent(other);
        if !authenticated {
            t.auth(a, "alice");
        }
    }
    t.ping_ok(a);
}

#[test]
fn binary_frames_are_invalid_message_and_keep_the_connection() {
    let mut t = TestHub::new(small_limits());
    let a = t.connect();
    t.binary(a);
    t.error(a, ErrorCode::InvalidMessage, None);
    t.auth(a, "alice");
    t.binary(a);
    t.error(a, ErrorCode::InvalidMessage, None);
    assert_eq!(t.closed(a), None);
    t.ping_ok(a);
}

#[test]
fn requests_before_authentication_are_unauthorized() {
    let mut t = TestHub::new(small_limits());
    let a = t.connect();
    let requests = [
        ("PING", json!({})),
        ("LIST_ROOMS", json!({})),
        ("JOIN_ROOM", json!({"roomId": "general"})),
        ("CREATE_ROOM", json!({"name": "Mine", "id": "mine"})),
        (
            "SEND_MESSAGE",
            json!({"roomId": "general", "content": "hi"}),
        ),
        ("GET_HISTORY", json!({"roomId": "general"})),
        (
            "TYPING_STATUS",
            json!({"roomId": "general", "isTyping": true}),
        ),
        ("LEAVE_ROOM", json!({"roomId": "general"})),
    ];
    for (i, (kind, payload)) in requests.into_iter().enumerate() {
        let rid = format!("u{i}");
        t.call(a, kind, payload, &rid);
        t.error(a, ErrorCode::Unauthorized, Some(&rid));
    }
    assert_eq!(t.closed(a), None);
    // None of them had an effect.
    let b = t.user("bob");
    let joined = t.join(b, "general");
    assert_eq!(user_ids(&joined.users), ["bob"]);
    assert!(joined.messages.is_empty());
    assert_eq!(
        t.list(b).iter().map(|r| r.id.as_str()).collect::<Vec<_>>(),
        ["general"]
    );
}

#[test]
fn ping_answers_pong_echoing_the_request_id() {
    let mut t = TestHub::new(small_limits());
    let a = t.user("alice");
    t.call(a, "PING", json!({}), "p-1");
    assert_eq!(
        t.one_value(a),
        json!({"type": "PONG", "payload": {}, "requestId": "p-1"})
    );
    t.send(a, json!({"type": "PING"}));
    assert_eq!(t.one_value(a), json!({"type": "PONG", "payload": {}}));
}
