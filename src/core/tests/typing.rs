//! `TYPING_STATUS`: who is told, the timeout, and what ends typing.

use serde_json::json;

use super::harness::{TestHub, broadcasts, small_limits, typing_update, user_left};
use crate::core::ConnId;
use crate::protocol::ErrorCode;
use crate::protocol::server::ServerMessage;

/// alice on two joined connections, bob and carol on one each.
fn typing_room(t: &mut TestHub) -> (ConnId, ConnId, ConnId, ConnId) {
    let a1 = t.user("alice");
    let a2 = t.user("alice");
    let b = t.user("bob");
    let c = t.user("carol");
    for conn in [a1, a2, b, c] {
        t.join(conn, "general");
    }
    for conn in [a1, a2, b, c] {
        t.frames(conn);
    }
    (a1, a2, b, c)
}

#[test]
fn typing_goes_to_other_users_never_to_the_typist() {
    let mut t = TestHub::new(small_limits());
    let (a1, a2, b, c) = typing_room(&mut t);
    let outsider = t.user("dave");
    t.typing(a1, "general", true);
    t.silent(a1);
    t.silent(a2);
    t.silent(outsider);
    for other in [b, c] {
        assert_eq!(
            broadcasts(t.frames(other)),
            [typing_update("general", "alice", true)]
        );
    }
    // Stopping from the other connection of the same user.
    t.typing(a2, "general", false);
    t.silent(a1);
    t.silent(a2);
    for other in [b, c] {
        assert_eq!(
            broadcasts(t.frames(other)),
            [typing_update("general", "alice", false)]
        );
    }
}

#[test]
fn repeated_typing_true_is_not_rebroadcast_but_extends_the_timeout() {
    let mut t = TestHub::new(small_limits()); // typing 1000 ms
    let (a1, _, b, _) = typing_room(&mut t);
    t.typing(a1, "general", true);
    t.frames(b);
    t.advance(600);
    t.typing(a1, "general", true);
    t.silent(b);
    t.advance(999);
    t.silent(b);
    t.advance(1);
    assert_eq!(
        broadcasts(t.frames(b)),
        [typing_update("general", "alice", false)]
    );
}

#[test]
fn typing_false_while_not_typing_is_silent() {
    let mut t = TestHub::new(small_limits());
    let (a1, a2, b, c) = typing_room(&mut t);
    t.typing(a1, "general", false);
    for conn in [a1, a2, b, c] {
        t.silent(conn);
    }
    // Twice false after true: only one broadcast.
    t.typing(a1, "general", true);
    t.typing(a1, "general", false);
    t.typing(a1, "general", false);
    assert_eq!(
        broadcasts(t.frames(b)),
        [
            typing_update("general", "alice", true),
            typing_update("general", "alice", false)
        ]
    );
}

#[test]
fn typing_times_out_at_exactly_the_timeout() {
    let mut t = TestHub::new(small_limits()); // typing 1000 ms
    let (a1, a2, b, c) = typing_room(&mut t);
    t.typing(a1, "general", true);
    t.frames(b);
    t.frames(c);
    t.advance(999);
    t.silent(b);
    t.advance(1);
    for other in [b, c] {
        assert_eq!(
            broadcasts(t.frames(other)),
            [typing_update("general", "alice", false)]
        );
    }
    t.silent(a1);
    t.silent(a2);
    // Typing again is news again.
    t.typing(a1, "general", true);
    assert_eq!(
        broadcasts(t.frames(b)),
        [typing_update("general", "alice", true)]
    );
}

#[test]
fn sending_a_message_ends_typing() {
    let mut t = TestHub::new(small_limits());
    let (a1, a2, b, _) = typing_room(&mut t);
    t.typing(a1, "general", true);
    t.frames(b);
    let sent = t.say(a2, "general", "done typing");
    let got = broadcasts(t.frames(b));
    assert_eq!(got.len(), 2, "{got:?}");
    assert!(
        got.contains(&ServerMessage::NewMessage(sent.clone())),
        "{got:?}"
    );
    assert!(
        got.contains(&typing_update("general", "alice", false)),
        "{got:?}"
    );
    assert_eq!(broadcasts(t.frames(a1)), [ServerMessage::NewMessage(sent)]);
    // And the timeout does not fire later.
    t.advance(5_000);
    t.silent(b);
}

#[test]
fn leaving_ends_typing() {
    let mut t = TestHub::new(small_limits());
    let (a1, a2, b, _) = typing_room(&mut t);
    t.disconnect(a2);
    t.typing(a1, "general", true);
    t.frames(b);
    t.call(a1, "LEAVE_ROOM", json!({"roomId": "general"}), "l");
    t.one(a1);
    assert_eq!(
        broadcasts(t.frames(b)),
        [
            typing_update("general", "alice", false),
            user_left("general", "alice")
        ]
    );
    t.advance(5_000);
    t.silent(b);
}

#[test]
fn disconnecting_ends_typing() {
    let mut t = TestHub::new(small_limits());
    let (a1, a2, b, _) = typing_room(&mut t);
    t.disconnect(a2);
    t.typing(a1, "general", true);
    t.frames(b);
    t.disconnect(a1);
    assert_eq!(
        broadcasts(t.frames(b)),
        [
            typing_update("general", "alice", false),
            user_left("general", "alice")
        ]
    );
    t.advance(5_000);
    t.silent(b);
}

#[test]
fn typing_requires_membership() {
    let mut t = TestHub::new(small_limits());
    let (_, _, b, _) = typing_room(&mut t);
    let d = t.user("dave");
    t.typing(d, "general", true);
    t.error(d, ErrorCode::NotAMember, Some("typing"));
    t.silent(b);
}
