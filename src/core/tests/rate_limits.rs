//! Rate limits: the per-user send bucket, the per-connection request bucket,
//! and closing a connection that keeps being refused.

use serde_json::json;

use super::harness::{
    TestHub, broadcasts, frame_then_close_1008, retry_after, small_limits, user_left,
};
use crate::core::{ConnId, Limits};
use crate::protocol::ErrorCode;
use crate::protocol::server::ServerMessage;

#[test]
fn the_21st_send_within_the_window_is_rejected_without_effect() {
    let mut t = TestHub::new(Limits::default());
    let a = t.user("alice");
    let b = t.user("bob");
    t.join(a, "general");
    t.join(b, "general");
    t.frames(a);
    for i in 1..=20 {
        assert_eq!(t.say(a, "general", &format!("m{i}")).seq, i);
    }
    assert_eq!(t.frames(b).len(), 20);
    t.typing(a, "general", true);
    t.frames(b);
    t.call(
        a,
        "SEND_MESSAGE",
        json!({"roomId": "general", "content": "21"}),
        "m21",
    );
    let v = t.one_value(a);
    assert_eq!(
        v,
        json!({"type": "ERROR",
               "payload": {"code": "RATE_LIMIT_EXCEEDED", "message": v["payload"]["message"], "retryAfterMs": 500},
               "requestId": "m21"})
    );
    // No effect: nothing broadcast, nothing stored, typing not ended.
    t.silent(b);
    assert_eq!(t.history(a, "general", json!({"limit": 1})).0, [20]);
    // Another user's bucket is its own.
    assert_eq!(t.say(b, "general", "mine").seq, 21);
}

#[test]
fn the_send_bucket_is_shared_across_a_users_connections() {
    let mut t = TestHub::new(Limits::default());
    let a1 = t.user("alice");
    let a2 = t.user("alice");
    t.join(a1, "general");
    t.join(a2, "general");
    t.frames(a1);
    for i in 0..10 {
        t.say(a1, "general", &format!("x{i}"));
        t.frames(a2);
        t.say(a2, "general", &format!("y{i}"));
        t.frames(a1);
    }
    t.call(
        a1,
        "SEND_MESSAGE",
        json!({"roomId": "general", "content": "no"}),
        "n",
    );
    assert_eq!(retry_after(&t.one(a1), Some("n")), 500);
    t.call(
        a2,
        "SEND_MESSAGE",
        json!({"roomId": "general", "content": "no"}),
        "n",
    );
    assert_eq!(retry_after(&t.one(a2), Some("n")), 500);
    // A new connection does not bring a new bucket.
    let a3 = t.user("alice");
    t.join(a3, "general");
    t.call(
        a3,
        "SEND_MESSAGE",
        json!({"roomId": "general", "content": "no"}),
        "n",
    );
    assert_eq!(retry_after(&t.one(a3), Some("n")), 500);
}

#[test]
fn the_send_bucket_refills_evenly() {
    let mut t = TestHub::new(Limits::default()); // 20 per 10 s: one per 500 ms
    let a = t.user("alice");
    t.join(a, "general");
    for i in 0..20 {
        t.say(a, "general", &format!("m{i}"));
    }
    let attempt = |t: &mut TestHub| -> Result<u64, u64> {
        t.call(
            a,
            "SEND_MESSAGE",
            json!({"roomId": "general", "content": "x"}),
            "s",
        );
        let f = t.one(a);
        match &f.message {
            ServerMessage::NewMessage(m) => Ok(m.seq),
            _ => Err(retry_after(&f, Some("s"))),
        }
    };
    assert_eq!(attempt(&mut t), Err(500));
    t.advance(499);
    assert_eq!(attempt(&mut t), Err(1));
    t.advance(1);
    assert_eq!(attempt(&mut t), Ok(21));
    assert_eq!(attempt(&mut t), Err(500));
    t.advance(1_000);
    assert_eq!(attempt(&mut t), Ok(22));
    assert_eq!(attempt(&mut t), Ok(23));
    assert_eq!(attempt(&mut t), Err(500));
    // Idle for longer than the window: full again, but never above capacity.
    t.advance(60_000);
    for seq in 24..44 {
        assert_eq!(attempt(&mut t), Ok(seq));
    }
    assert_eq!(attempt(&mut t), Err(500));
}

#[test]
fn reconnecting_does_not_reset_the_send_bucket() {
    let mut t = TestHub::new(Limits::default());
    let a = t.user("alice");
    t.join(a, "general");
    for i in 0..20 {
        t.say(a, "general", &format!("m{i}"));
    }
    t.disconnect(a);
    t.advance(100);
    let a = t.user("alice");
    t.join(a, "general");
    t.call(
        a,
        "SEND_MESSAGE",
        json!({"roomId": "general", "content": "x"}),
        "s",
    );
    assert_eq!(retry_after(&t.one(a), Some("s")), 400);
}

#[test]
fn a_stale_forget_timer_does_not_reset_the_send_bucket() {
    // 5 sends per 2000 ms: one token per 400 ms.
    let limits = Limits {
        rate_limit_messages: 5,
        rate_limit_window_ms: 2_000,
        ..small_limits()
    };
    let mut t = TestHub::new(limits);
    let accepted = |t: &mut TestHub, conn: ConnId| -> usize {
        let mut n = 0;
        loop {
            t.call(
                conn,
                "SEND_MESSAGE",
                json!({"roomId": "general", "content": "x"}),
                "s",
            );
            let f = t.one(conn);
            if matches!(f.message, ServerMessage::NewMessage(_)) {
                n += 1;
            } else {
                retry_after(&f, Some("s"));
                return n;
            }
        }
    };
    let a = t.user("alice");
    t.join(a, "general");
    assert_eq!(accepted(&mut t, a), 5);
    // Empty bucket at T0: full again at T0 + 2000 if nothing is taken.
    t.disconnect(a);
    t.advance(1_999);
    let a = t.user("alice");
    t.join(a, "general");
    assert_eq!(accepted(&mut t, a), 4);
    t.disconnect(a);
    // 1 ms later the bucket holds 2000 of its 10000 units: one token.
    t.advance(1);
    let a = t.user("alice");
    t.join(a, "general");
    assert_eq!(
        accepted(&mut t, a),
        1,
        "per user, a bucket must not refill faster than capacity per window"
    );
}

#[test]
fn other_requests_are_limited_per_connection() {
    let mut t = TestHub::new(Limits::default()); // 100 per 10 s
    let a1 = t.user("alice"); // AUTHENTICATE is the first request
    let a2 = t.user("alice");
    for _ in 0..99 {
        t.ping_ok(a1);
    }
    t.call(a1, "PING", json!({}), "p101");
    assert_eq!(retry_after(&t.one(a1), Some("p101")), 100);
    // The user's other connection has its own bucket.
    t.ping_ok(a2);
    // A rejected request has no effect.
    let b = t.user("bob");
    t.join(b, "general");
    t.call(a1, "JOIN_ROOM", json!({"roomId": "general"}), "j");
    retry_after(&t.one(a1), Some("j"));
    t.silent(b);
    t.advance(100);
    t.ping_ok(a1);
}

#[test]
fn malformed_and_unauthenticated_messages_charge_the_connection_bucket() {
    let limits = Limits {
        rate_limit_requests: 3,
        rate_limit_window_ms: 3_000,
        ..small_limits()
    };
    let mut t = TestHub::new(limits);
    let a = t.connect();
    t.text(a, "garbage");
    t.error(a, ErrorCode::InvalidMessage, None);
    t.binary(a);
    t.error(a, ErrorCode::InvalidMessage, None);
    t.call(
        a,
        "SEND_MESSAGE",
        json!({"roomId": "general", "content": "x"}),
        "s",
    );
    t.error(a, ErrorCode::Unauthorized, Some("s"));
    t.call(a, "AUTHENTICATE", json!({"token": "alice"}), "a");
    assert_eq!(retry_after(&t.one(a), Some("a")), 1_000);
    t.text(a, "garbage");
    assert_eq!(retry_after(&t.one(a), None), 1_000);
    // The rejected AUTHENTICATE had no effect (and was no failed attempt).
    t.advance(1_000);
    t.call(a, "PING", json!({}), "p");
    t.error(a, ErrorCode::Unauthorized, Some("p"));
    t.advance(1_000);
    t.auth(a, "alice");
}

#[test]
fn authenticated_sends_charge_the_user_bucket_only() {
    let limits = Limits {
        rate_limit_requests: 3,
        rate_limit_window_ms: 3_000,
        ..Limits::default()
    };
    let mut t = TestHub::new(limits);
    let a = t.user("alice"); // 1
    t.join(a, "general"); // 2
    for i in 0..10 {
        t.say(a, "general", &format!("m{i}"));
    }
    t.ping_ok(a); // 3
    t.call(a, "PING", json!({}), "p");
    retry_after(&t.one(a), Some("p"));
    // A malformed SEND_MESSAGE is charged to the connection: rejected.
    t.call(a, "SEND_MESSAGE", json!({"roomId": "general"}), "bad");
    retry_after(&t.one(a), Some("bad"));
    // A well-formed one still goes through.
    assert_eq!(t.say(a, "general", "ok").seq, 11);
}

#[test]
fn persistent_rate_limit_abuse_closes_the_connection() {
    let limits = Limits {
        rate_limit_requests: 3,
        rate_limit_disconnect_after: 3,
        ..small_limits()
    };
    let mut t = TestHub::new(limits);
    let a = t.user("alice");
    let b = t.user("bob");
    t.join(a, "general");
    t.join(b, "general");
    t.frames(a);
    t.ping_ok(a);
    for rid in ["r1", "r2"] {
        t.call(a, "PING", json!({}), rid);
        retry_after(&t.one(a), Some(rid));
    }
    assert_eq!(t.closed(a), None);
    t.call(a, "PING", json!({}), "r3");
    retry_after(&frame_then_close_1008(&mut t, a), Some("r3"));
    assert_eq!(broadcasts(t.frames(b)), [user_left("general", "alice")]);
    // Another connection of the same user is not affected.
    let a2 = t.user("alice");
    t.ping_ok(a2);
}

#[test]
fn rejected_sends_count_towards_the_row_too() {
    let limits = Limits {
        rate_limit_messages: 1,
        rate_limit_disconnect_after: 2,
        ..small_limits()
    };
    let mut t = TestHub::new(limits);
    let a = t.user("alice");
    t.join(a, "general");
    t.say(a, "general", "one");
    t.call(
        a,
        "SEND_MESSAGE",
        json!({"roomId": "general", "content": "x"}),
        "s1",
    );
    retry_after(&t.one(a), Some("s1"));
    assert_eq!(t.closed(a), None);
    t.call(
        a,
        "SEND_MESSAGE",
        json!({"roomId": "general", "content": "x"}),
        "s2",
    );
    assert_eq!(t.frames(a).len(), 1);
    assert_eq!(t.closed(a), Some(1008));
}

#[test]
fn an_accepted_request_ends_the_row() {
    let limits = Limits {
        rate_limit_requests: 3,
        rate_limit_window_ms: 3_000, // one request per 1000 ms
        rate_limit_disconnect_after: 3,
        ..small_limits()
    };
    let mut t = TestHub::new(limits);
    let a = t.user("alice"); // 1
    t.join(a, "general"); // 2
    t.ping_ok(a); // 3
    let reject = |t: &mut TestHub| {
        t.call(a, "PING", json!({}), "r");
        retry_after(&t.one(a), Some("r"));
    };
    reject(&mut t);
    reject(&mut t);
    t.advance(1_000);
    t.ping_ok(a);
    reject(&mut t);
    reject(&mut t);
    // A send accepted from the user's bucket ends the row as well.
    t.say(a, "general", "accepted");
    reject(&mut t);
    reject(&mut t);
    assert_eq!(t.closed(a), None);
    t.call(a, "PING", json!({}), "r");
    assert_eq!(t.frames(a).len(), 1);
    assert_eq!(t.closed(a), Some(1008));
}
