//! `AUTHENTICATE`: failed attempts, the username a session shows, refreshing a
//! token, and tokens the driver did not verify.

use serde_json::json;

use super::harness::{
    T0, TestHub, assert_error, frame_then_close_1008, refused_token, small_limits, token,
};
use crate::core::{Inbound, Timestamp};
use crate::protocol::server::ServerMessage;
use crate::protocol::{Authenticate, ClientRequest, ErrorCode};

#[test]
fn third_failed_authenticate_is_answered_then_closes() {
    let mut t = TestHub::new(small_limits());
    let a = t.connect();
    t.auth_with(a, Err(refused_token()), None, Some("a1"));
    t.error(a, ErrorCode::Unauthorized, Some("a1"));
    let mut expired = token("alice");
    expired.expires_at_unix_ms = T0 - 1;
    t.auth_with(a, Ok(expired), None, Some("a2"));
    t.error(a, ErrorCode::Unauthorized, Some("a2"));
    // A payload username breaking the rules is INVALID_MESSAGE and does not
    // count as a failed attempt.
    t.call(
        a,
        "AUTHENTICATE",
        json!({"token": "alice", "username": ""}),
        "bad",
    );
    t.error(a, ErrorCode::InvalidMessage, Some("bad"));
    assert_eq!(t.closed(a), None);
    t.auth_with(a, Err(refused_token()), None, Some("a3"));
    let f = frame_then_close_1008(&mut t, a);
    assert_error(&f, ErrorCode::Unauthorized, Some("a3"));
    // The core has forgotten it.
    t.gone.remove(&a);
    t.hub.handle(Timestamp(t.now), a, Inbound::Binary);
    assert!(t.hub.poll_output().is_none());
}

#[test]
fn a_failed_authenticate_can_be_followed_by_a_good_one() {
    let mut t = TestHub::new(small_limits());
    let a = t.connect();
    t.auth_with(a, Err(refused_token()), None, Some("a1"));
    t.error(a, ErrorCode::Unauthorized, Some("a1"));
    t.call(a, "PING", json!({}), "p");
    t.error(a, ErrorCode::Unauthorized, Some("p"));
    t.auth(a, "alice");
    t.ping_ok(a);
    // A token whose expiry instant has come is a failure, not a session.
    let b = t.connect();
    let mut expired = token("bob");
    expired.expires_at_unix_ms = t.now;
    t.auth_with(b, Ok(expired), None, Some("b1"));
    let message = t.error(b, ErrorCode::Unauthorized, Some("b1"));
    assert!(message.contains("expired"), "{message}");
    t.call(b, "PING", json!({}), "p");
    t.error(b, ErrorCode::Unauthorized, Some("p"));
    let mut fresh = token("bob");
    fresh.expires_at_unix_ms = t.now + 1;
    t.auth_with(b, Ok(fresh), None, Some("b2"));
    assert!(matches!(
        t.one(b).message,
        ServerMessage::AuthSuccess { .. }
    ));
}

#[test]
fn username_precedence_claim_then_payload_then_user_id() {
    let mut t = TestHub::new(small_limits());
    let cases = [
        (Some("Claimed"), Some("Proposed"), "Claimed"),
        (Some("Claimed"), None, "Claimed"),
        (None, Some("Proposed"), "Proposed"),
        (None, None, "u1"),
    ];
    for (i, (claim, payload, expected)) in cases.into_iter().enumerate() {
        let c = t.connect();
        let mut tok = token("u1");
        tok.username = claim.map(str::to_owned);
        let rid = format!("a{i}");
        t.auth_with(c, Ok(tok), payload, Some(&rid));
        assert_eq!(
            t.one_value(c),
            json!({"type": "AUTH_SUCCESS",
                   "payload": {"userId": "u1", "username": expected, "status": "online"},
                   "requestId": rid})
        );
        // Messages carry that name.
        t.join(c, "general");
        let m = t.say(c, "general", "hi");
        assert_eq!((m.user_id.as_str(), m.username.as_str()), ("u1", expected));
        t.disconnect(c);
    }
}

#[test]
fn token_refresh_for_the_same_sub_postpones_expiry() {
    let mut t = TestHub::new(small_limits());
    let a = t.connect();
    let mut tok = token("alice");
    tok.username = Some("Alice".into());
    tok.expires_at_unix_ms = T0 + 5_000;
    t.auth_with(a, Ok(tok.clone()), None, Some("a"));
    t.one(a);
    t.advance(3_000);
    tok.expires_at_unix_ms = T0 + 10_000;
    t.auth_with(a, Ok(tok), None, Some("refresh"));
    assert_eq!(
        t.one_value(a),
        json!({"type": "AUTH_SUCCESS",
               "payload": {"userId": "alice", "username": "Alice", "status": "online"},
               "requestId": "refresh"})
    );
    t.advance_to(T0 + 5_000);
    t.silent(a);
    t.advance_to(T0 + 9_999);
    t.silent(a);
    assert_eq!(t.closed(a), None);
    t.advance(1);
    assert_eq!(t.closed(a), Some(1008));
    let frames = t.frames(a);
    assert_eq!(frames.len(), 1);
    assert_eq!(
        assert_error(&frames[0], ErrorCode::Unauthorized, None),
        "token expired"
    );
}

#[test]
fn token_refresh_for_another_sub_is_refused_and_identity_kept() {
    let mut t = TestHub::new(small_limits());
    let a = t.connect();
    let mut tok = token("alice");
    tok.expires_at_unix_ms = T0 + 5_000;
    t.auth_with(a, Ok(tok), None, Some("a"));
    t.one(a);
    t.join(a, "general");
    let mut other = token("mallory");
    other.expires_at_unix_ms = T0 + 50_000;
    t.auth_with(a, Ok(other), None, Some("swap"));
    t.error(a, ErrorCode::Unauthorized, Some("swap"));
    assert_eq!(t.closed(a), None);
    let m = t.say(a, "general", "still me");
    assert_eq!(m.user_id, "alice");
    // The other token's later exp does not apply either.
    t.advance_to(T0 + 4_999);
    assert_eq!(t.closed(a), None);
    t.advance(1);
    assert_eq!(t.closed(a), Some(1008));
}

#[test]
fn an_unverified_token_is_never_trusted() {
    let mut t = TestHub::new(small_limits());
    // What a driver that forgot to verify would hand over.
    let raw = |sub: &str| {
        ClientRequest::Authenticate(Authenticate {
            token: sub.to_owned(),
            username: None,
        })
    };
    // Before authentication: a failed attempt; the connection stays anonymous.
    let a = t.connect();
    t.request(a, raw("alice"), Some("a1"));
    assert_eq!(
        t.error(a, ErrorCode::Unauthorized, Some("a1")),
        "token was not verified"
    );
    t.call(a, "PING", json!({}), "p");
    t.error(a, ErrorCode::Unauthorized, Some("p"));
    // It counts towards the failed attempts: the third closes.
    t.request(a, raw("alice"), Some("a2"));
    t.error(a, ErrorCode::Unauthorized, Some("a2"));
    t.request(a, raw("alice"), Some("a3"));
    let f = frame_then_close_1008(&mut t, a);
    assert_error(&f, ErrorCode::Unauthorized, Some("a3"));
    // After authentication: neither another identity nor a refresh.
    let b = t.connect();
    let mut tok = token("bob");
    tok.expires_at_unix_ms = T0 + 5_000;
    t.auth_with(b, Ok(tok), None, Some("b"));
    t.one(b);
    t.join(b, "general");
    t.request(b, raw("mallory"), Some("swap"));
    t.error(b, ErrorCode::Unauthorized, Some("swap"));
    assert_eq!(t.say(b, "general", "still me").user_id, "bob");
    assert_eq!(t.hub.stats().token_refreshes, 0);
    t.advance_to(T0 + 4_999);
    assert_eq!(t.closed(b), None);
    t.advance(1);
    assert_eq!(t.closed(b), Some(1008));
}
