//! Deadlines: the authentication timeout and token expiry, fired at exactly
//! their instant and never overtaken by an input.

use serde_json::json;

use super::harness::{
    T0, TestHub, assert_error, broadcasts, frame_then_close_1008, small_limits, token, user_left,
};
use crate::core::{ConnId, Limits};
use crate::protocol::ErrorCode;

/// Alice (token expiring at `T0 + 5 s`) and bob, both in `general`, with
/// every frame so far read.
fn alice_expiring_with_bob(t: &mut TestHub) -> (ConnId, ConnId) {
    let a = t.connect();
    let mut tok = token("alice");
    tok.expires_at_unix_ms = T0 + 5_000;
    t.auth_with(a, Ok(tok), None, Some("a"));
    t.one(a);
    t.join(a, "general");
    let b = t.user("bob");
    t.join(b, "general");
    t.frames(a);
    (a, b)
}

/// `conn` got `ERROR UNAUTHORIZED` (`message`, no `requestId`), then the
/// close 1008, and nothing else.
fn assert_unauthorized_then_closed(t: &mut TestHub, conn: ConnId, message: &str) {
    let f = frame_then_close_1008(t, conn);
    assert_eq!(assert_error(&f, ErrorCode::Unauthorized, None), message);
}

#[test]
fn auth_timeout_closes_at_exactly_the_deadline() {
    let limits = Limits {
        auth_timeout_ms: 3_000,
        ..small_limits()
    };
    let mut t = TestHub::new(limits);
    let a = t.connect();
    let b = t.connect();
    t.auth(b, "bob");
    t.advance(1_000);
    let late = t.connect();
    t.advance(1_999);
    t.silent(a);
    assert_eq!(t.closed(a), None);
    assert!(t.hub.is_connected(a));
    t.advance(1);
    assert_unauthorized_then_closed(&mut t, a, "authentication timeout");
    // The authenticated connection stays; the later one has its own deadline.
    t.silent(b);
    assert_eq!(t.closed(b), None);
    assert_eq!(t.closed(late), None);
    t.advance(999);
    assert_eq!(t.closed(late), None);
    t.advance(1);
    assert_eq!(t.closed(late), Some(1008));
    t.ping_ok(b);
}

/// `expires_at_unix_ms` is `(exp + leeway) * 1000`, the first millisecond at
/// which the token is no longer accepted (see `crate::auth::VerifiedToken`).
#[test]
fn token_expiry_closes_when_exp_plus_leeway_passes() {
    let mut t = TestHub::new(small_limits());
    let (a, b) = alice_expiring_with_bob(&mut t);
    t.advance_to(T0 + 4_999);
    t.silent(a);
    assert_eq!(t.closed(a), None);
    t.ping_ok(a);
    t.advance(1);
    assert_unauthorized_then_closed(&mut t, a, "token expired");
    // Leaving with the close: bob sees alice go.
    assert_eq!(broadcasts(t.frames(b)), [user_left("general", "alice")]);
}

/// A driver may be late to call `tick` (a batch of input is handled first):
/// an input at or after a deadline still sees the deadline fire first.
#[test]
fn an_input_after_a_deadline_fires_the_deadline_first() {
    let mut t = TestHub::new(small_limits());
    let (a, b) = alice_expiring_with_bob(&mut t);
    // No tick between: the send arrives 1 ms after the token expired.
    t.now = T0 + 5_001;
    t.call(
        a,
        "SEND_MESSAGE",
        json!({"roomId": "general", "content": "too late"}),
        "late",
    );
    assert_unauthorized_then_closed(&mut t, a, "token expired");
    // Bob sees alice leave, and no message.
    assert_eq!(broadcasts(t.frames(b)), [user_left("general", "alice")]);
    // The same for a connection that never authenticated: its AUTHENTICATE
    // comes after the auth deadline and is not answered.
    let c = t.connect();
    t.now += small_limits().auth_timeout_ms;
    t.auth_with(c, Ok(token("carol")), None, Some("late"));
    assert_unauthorized_then_closed(&mut t, c, "authentication timeout");
}
