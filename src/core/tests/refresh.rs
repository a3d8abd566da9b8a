//! Token refresh replaces a connection's authority: the new token's expiry
//! (earlier or later) and its `rooms` claim, leaving at once the private
//! rooms the new claim no longer grants.

use serde_json::json;

use super::harness::{
    T0, TestHub, broadcasts, claiming, refused_token, small_limits, token, typing_update, user_left,
};
use crate::core::ConnId;
use crate::protocol::ErrorCode;
use crate::protocol::server::{ServerFrame, ServerMessage};

/// `ROOM_LEFT {room}` without a `requestId`.
fn room_left(room: &str) -> ServerFrame {
    ServerFrame {
        message: ServerMessage::RoomLeft {
            room_id: room.to_owned(),
        },
        request_id: None,
    }
}

/// The `AUTH_SUCCESS` answering a refresh sent with `rid`.
#[track_caller]
fn assert_refreshed(f: &ServerFrame, user: &str, rid: &str) {
    assert_eq!(f.request_id.as_deref(), Some(rid), "{f:?}");
    match &f.message {
        ServerMessage::AuthSuccess { user_id, .. } => assert_eq!(user_id, user),
        other => panic!("expected AUTH_SUCCESS, got {other:?}"),
    }
}

/// Alice, whose token grants `a` and `b`, created `own` (private) and is in
/// `a`, `b`, `own` and `general`; bob (granted `a` and `b`) is in `a` and `b`.
fn alice_in_private_rooms(t: &mut TestHub) -> (ConnId, ConnId) {
    let o = t.user_claiming("owner", &["a", "b"]);
    for id in ["a", "b"] {
        t.create(o, json!({"name": id, "id": id, "type": "private"}));
    }
    t.disconnect(o);
    let alice = t.user_claiming("alice", &["a", "b"]);
    let bob = t.user_claiming("bob", &["a", "b"]);
    for room in ["a", "b"] {
        t.join(bob, room);
        t.join(alice, room);
        t.frames(bob);
    }
    t.create(alice, json!({"name": "Own", "type": "private", "id": null}));
    t.join(alice, "general");
    t.frames(bob);
    (alice, bob)
}

#[test]
fn a_narrower_claim_leaves_the_private_rooms_it_no_longer_grants() {
    let mut t = TestHub::new(small_limits());
    let (alice, bob) = alice_in_private_rooms(&mut t);
    t.typing(alice, "b", true);
    assert_eq!(
        broadcasts(t.frames(bob)),
        [typing_update("b", "alice", true)]
    );
    // The new token grants `a` only.
    t.auth_with(alice, Ok(claiming("alice", &["a"])), None, Some("refresh"));
    let frames = t.frames(alice);
    assert_eq!(frames.len(), 2, "{frames:?}");
    assert_refreshed(&frames[0], "alice", "refresh");
    assert_eq!(frames[1], room_left("b"));
    // Bob sees alice stop typing, then leave: what any leave tells him.
    assert_eq!(
        broadcasts(t.frames(bob)),
        [typing_update("b", "alice", false), user_left("b", "alice")]
    );
    // `a` (granted), her own room, and the public room are untouched.
    t.say(bob, "a", "still here");
    assert_eq!(t.frames(alice).len(), 1);
    t.say(bob, "b", "gone");
    t.silent(alice);
    t.say(alice, "general", "public stays");
    // She cannot join `b` again, nor read or write there.
    t.call(alice, "JOIN_ROOM", json!({"roomId": "b"}), "j");
    t.error(alice, ErrorCode::Forbidden, Some("j"));
    t.call(alice, "GET_HISTORY", json!({"roomId": "b"}), "h");
    t.error(alice, ErrorCode::NotAMember, Some("h"));
    let ids: Vec<String> = t.list(alice).into_iter().map(|r| r.id).collect();
    assert!(
        ids.contains(&"a".to_owned()) && !ids.contains(&"b".to_owned()),
        "{ids:?}"
    );
    assert_eq!(t.hub.stats().rooms_revoked, 1);
    assert_eq!(t.hub.stats().token_refreshes, 1);
}

#[test]
fn rooms_the_user_created_and_public_rooms_are_never_revoked() {
    let mut t = TestHub::new(small_limits());
    let alice = t.user_claiming("alice", &["mine"]);
    t.create(
        alice,
        json!({"name": "Mine", "id": "mine", "type": "private"}),
    );
    t.join(alice, "general");
    // A token without any claim: she created `mine`, so she keeps it.
    t.auth_with(alice, Ok(token("alice")), None, Some("refresh"));
    assert_refreshed(&t.one(alice), "alice", "refresh");
    t.say(alice, "mine", "still mine");
    t.say(alice, "general", "still here");
}

#[test]
fn the_others_get_user_left_only_when_it_was_the_users_last_connection() {
    let mut t = TestHub::new(small_limits());
    let (alice, bob) = alice_in_private_rooms(&mut t);
    // Her second connection, with the old grant, stays in `b`.
    let alice2 = t.user_claiming("alice", &["a", "b"]);
    t.join(alice2, "b");
    t.silent(bob);
    t.auth_with(alice, Ok(claiming("alice", &["a"])), None, Some("r"));
    assert_eq!(t.frames(alice)[1], room_left("b"));
    t.silent(bob);
    t.silent(alice2);
    // Each connection has its own token's authority: the first cannot get
    // back in through the second's.
    t.call(alice, "JOIN_ROOM", json!({"roomId": "b"}), "j");
    t.error(alice, ErrorCode::Forbidden, Some("j"));
    t.say(bob, "b", "to alice2 only");
    t.silent(alice);
    assert_eq!(t.frames(alice2).len(), 1);
    // When the second refreshes too, bob learns she left.
    t.auth_with(alice2, Ok(claiming("alice", &[])), None, Some("r2"));
    assert_eq!(t.frames(alice2)[1], room_left("b"));
    assert_eq!(broadcasts(t.frames(bob)), [user_left("b", "alice")]);
}

#[test]
fn an_earlier_expiry_replaces_a_later_one() {
    let mut t = TestHub::new(small_limits());
    let a = t.connect();
    let mut tok = token("alice");
    tok.expires_at_unix_ms = T0 + 10_000;
    t.auth_with(a, Ok(tok.clone()), None, Some("a"));
    t.one(a);
    // An older token, expiring sooner: the connection now ends with it.
    tok.expires_at_unix_ms = T0 + 4_000;
    t.auth_with(a, Ok(tok), None, Some("old"));
    assert_refreshed(&t.one(a), "alice", "old");
    t.advance_to(T0 + 3_999);
    assert_eq!(t.closed(a), None);
    t.advance(1);
    assert_eq!(t.closed(a), Some(1008));
}

#[test]
fn a_failed_refresh_keeps_identity_authority_and_expiry() {
    let mut t = TestHub::new(small_limits());
    let (alice, bob) = alice_in_private_rooms(&mut t);
    let mut tok = claiming("alice", &["a", "b"]);
    tok.expires_at_unix_ms = T0 + 50_000;
    t.auth_with(alice, Ok(tok), None, Some("r"));
    t.frames(alice);
    // Another user's token (granting nothing, expiring later), and a token
    // of hers that has expired (granting nothing): both are failed
    // attempts, and neither changes anything.
    let mut expired = claiming("alice", &[]);
    expired.expires_at_unix_ms = t.now;
    let failures = [
        ("other", Ok(claiming("mallory", &[]))),
        ("expired", Ok(expired)),
    ];
    for (rid, outcome) in failures {
        t.auth_with(alice, outcome, None, Some(rid));
        t.error(alice, ErrorCode::Unauthorized, Some(rid));
    }
    t.silent(bob);
    assert_eq!(t.say(alice, "b", "still granted").user_id, "alice");
    t.advance_to(T0 + 49_999);
    assert_eq!(t.closed(alice), None);
    t.advance(1);
    assert_eq!(t.closed(alice), Some(1008));
    // The third failure on a connection closes it, refresh or not.
    let c = t.user("carol");
    for rid in ["1", "2", "3"] {
        t.auth_with(c, Err(refused_token()), None, Some(rid));
    }
    assert_eq!(t.closed(c), Some(1008));
}

#[test]
fn the_username_stays_across_a_refresh() {
    let mut t = TestHub::new(small_limits());
    let a = t.connect();
    let mut tok = token("alice");
    tok.username = Some("Alice".into());
    t.auth_with(a, Ok(tok), None, Some("a"));
    t.one(a);
    let mut renamed = token("alice");
    renamed.username = Some("Mallory".into());
    t.auth_with(a, Ok(renamed), Some("Eve"), Some("r"));
    assert_eq!(
        t.one_value(a),
        json!({"type": "AUTH_SUCCESS",
               "payload": {"userId": "alice", "username": "Alice", "status": "online"},
               "requestId": "r"})
    );
    t.join(a, "general");
    assert_eq!(t.say(a, "general", "hi").username, "Alice");
}
