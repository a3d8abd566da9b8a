//! How many rooms may exist (`MAX_ROOMS`) and when a user's room goes away
//! (`ROOM_IDLE_TTL_MS` without a member connection).

use serde_json::json;

use super::harness::{TestHub, broadcasts, seqs, small_limits, user_joined};
use crate::core::{ConnId, Limits, Timestamp};
use crate::protocol::ErrorCode;

const TTL: u64 = 10_000;

fn limits() -> Limits {
    Limits {
        room_idle_ttl_ms: TTL,
        ..small_limits()
    }
}

fn room_ids(t: &mut TestHub, conn: ConnId) -> Vec<String> {
    t.list(conn).into_iter().map(|r| r.id).collect()
}

#[test]
fn max_rooms_counts_the_default_rooms() {
    let mut t = TestHub::new(Limits {
        max_rooms: 3,
        ..limits()
    });
    let a = t.user_claiming("alice", &["x", "y"]);
    t.create(a, json!({"name": "X", "id": "x"}));
    t.create(a, json!({"name": "Z"}));
    t.call(a, "CREATE_ROOM", json!({"name": "Y", "id": "y"}), "c1");
    assert_eq!(
        t.error(a, ErrorCode::Forbidden, Some("c1")),
        "room limit reached"
    );
    t.call(a, "CREATE_ROOM", json!({"name": "Y"}), "c2");
    t.error(a, ErrorCode::Forbidden, Some("c2"));
    // A taken id is still ROOM_EXISTS: nothing would be created anyway.
    t.call(a, "CREATE_ROOM", json!({"name": "X", "id": "x"}), "c3");
    t.error(a, ErrorCode::RoomExists, Some("c3"));
    assert_eq!(t.hub.gauges().rooms, 3);
    // Once one goes, there is room for another.
    t.call(a, "LEAVE_ROOM", json!({"roomId": "x"}), "l");
    t.one(a);
    t.advance(TTL);
    t.create(a, json!({"name": "Y", "id": "y"}));
}

#[test]
fn a_users_room_without_members_for_the_ttl_is_deleted_with_its_history() {
    let mut t = TestHub::new(limits());
    let a = t.user_claiming("alice", &["club"]);
    let b = t.user("bob");
    let (_, epoch) = t.create(a, json!({"name": "Club", "id": "club"}));
    t.join(b, "club");
    t.frames(a);
    t.say(a, "club", "one");
    t.say(a, "club", "two");
    t.frames(b);
    t.call(a, "LEAVE_ROOM", json!({"roomId": "club"}), "l");
    t.one(a);
    t.frames(b);
    t.advance(5_000);
    // The clock starts at the last member's going: here, bob disconnecting.
    t.disconnect(b);
    let emptied = t.now;
    t.advance(TTL - 1);
    assert!(room_ids(&mut t, a).contains(&"club".to_owned()));
    t.advance_to(emptied + TTL);
    assert_eq!(room_ids(&mut t, a), ["general"]);
    assert_eq!(t.hub.stats().rooms_deleted, 1);
    for (kind, payload) in [
        ("JOIN_ROOM", json!({"roomId": "club"})),
        (
            "JOIN_ROOM",
            json!({"roomId": "club", "sinceSeq": 1, "epoch": epoch}),
        ),
        ("GET_HISTORY", json!({"roomId": "club"})),
        ("SEND_MESSAGE", json!({"roomId": "club", "content": "x"})),
    ] {
        t.call(a, kind, payload, "r");
        t.error(a, ErrorCode::RoomNotFound, Some("r"));
    }
    // Its id may be created again: a new room, in a new epoch, from seq 1.
    let (room, again) = t.create(a, json!({"name": "Club 2", "id": "club"}));
    assert_ne!(again, epoch);
    assert_eq!((room.name.as_str(), room.member_count), ("Club 2", 1));
    assert_eq!(t.say(a, "club", "fresh").seq, 1);
    // A client resuming the old epoch learns it has a gap.
    let b = t.user("bob");
    t.call(
        b,
        "JOIN_ROOM",
        json!({"roomId": "club", "sinceSeq": 2, "epoch": epoch}),
        "resume",
    );
    let joined = t.joined(b, "resume");
    assert_eq!(
        (
            joined.epoch.as_str(),
            joined.recovered,
            seqs(&joined.messages)
        ),
        (again.as_str(), Some(false), vec![1])
    );
}

#[test]
fn a_member_coming_back_restarts_the_clock() {
    let mut t = TestHub::new(limits());
    let a = t.user("alice");
    let (room, _) = t.create(a, json!({"name": "R"}));
    t.disconnect(a);
    t.advance(TTL - 1);
    let b = t.user("bob");
    t.join(b, &room.id);
    // A member keeps it for ever.
    t.advance(3 * TTL);
    assert!(room_ids(&mut t, b).contains(&room.id));
    t.call(b, "LEAVE_ROOM", json!({"roomId": room.id}), "l");
    t.one(b);
    t.advance(TTL - 1);
    assert!(room_ids(&mut t, b).contains(&room.id));
    t.advance(1);
    assert!(!room_ids(&mut t, b).contains(&room.id));
}

#[test]
fn default_rooms_are_never_deleted_and_a_ttl_of_zero_deletes_nothing() {
    let mut t = TestHub::new(limits());
    let a = t.user("alice");
    t.join(a, "general");
    t.call(a, "LEAVE_ROOM", json!({"roomId": "general"}), "l");
    t.one(a);
    t.advance(10 * TTL);
    assert_eq!(room_ids(&mut t, a), ["general"]);

    let mut t = TestHub::new(Limits {
        room_idle_ttl_ms: 0,
        ..small_limits()
    });
    let a = t.user("alice");
    let (room, _) = t.create(a, json!({"name": "R"}));
    t.disconnect(a);
    // No timer is armed for it (the one left forgets alice's send bucket).
    t.advance(1);
    assert_eq!(t.hub.next_deadline(), None);
    t.advance(300 * 24 * 3_600_000);
    let b = t.user("bob");
    t.join(b, &room.id);
}

#[test]
fn a_deleted_room_no_longer_counts_towards_rooms_per_user_max() {
    let mut t = TestHub::new(Limits {
        rooms_per_user_max: 1,
        ..limits()
    });
    let a = t.user("alice");
    let (first, _) = t.create(a, json!({"name": "R"}));
    t.call(a, "CREATE_ROOM", json!({"name": "R"}), "c");
    t.error(a, ErrorCode::Forbidden, Some("c"));
    t.call(a, "LEAVE_ROOM", json!({"roomId": first.id}), "l");
    t.one(a);
    t.advance(TTL);
    let (second, _) = t.create(a, json!({"name": "R"}));
    assert_ne!(second.id, first.id);
    // Other users' rooms going frees nothing of hers.
    let b = t.user("bob");
    let (theirs, _) = t.create(b, json!({"name": "B"}));
    t.call(b, "LEAVE_ROOM", json!({"roomId": theirs.id}), "l");
    t.one(b);
    t.advance(TTL);
    t.call(a, "CREATE_ROOM", json!({"name": "R"}), "c2");
    t.error(a, ErrorCode::Forbidden, Some("c2"));
}

#[test]
fn a_reload_applies_a_new_ttl_from_when_each_room_emptied() {
    let mut t = TestHub::new(limits());
    let a = t.user("alice");
    let (old, _) = t.create(a, json!({"name": "Old"}));
    t.call(a, "LEAVE_ROOM", json!({"roomId": old.id}), "l");
    t.one(a);
    t.advance(4_000);
    let (young, _) = t.create(a, json!({"name": "Young"}));
    t.call(a, "LEAVE_ROOM", json!({"roomId": young.id}), "l");
    t.one(a);
    t.advance(1_000);
    // Empty for 5 s and 1 s; a TTL of 3 s deletes the first at once and
    // the second 2 s from now.
    let three = Limits {
        room_idle_ttl_ms: 3_000,
        ..limits()
    };
    t.hub.set_limits(Timestamp(t.now), three.clone());
    assert_eq!(room_ids(&mut t, a), ["general", young.id.as_str()]);
    t.advance(1_999);
    assert!(room_ids(&mut t, a).contains(&young.id));
    // A longer TTL postpones it; 0 stops the clock.
    t.hub.set_limits(Timestamp(t.now), limits());
    t.advance(5_000);
    assert!(room_ids(&mut t, a).contains(&young.id));
    t.hub.set_limits(
        Timestamp(t.now),
        Limits {
            room_idle_ttl_ms: 0,
            ..limits()
        },
    );
    t.advance(10 * TTL);
    assert!(room_ids(&mut t, a).contains(&young.id));
    t.hub.set_limits(Timestamp(t.now), three);
    assert_eq!(room_ids(&mut t, a), ["general"]);
}

#[test]
fn presence_and_retries_start_afresh_in_a_room_created_again() {
    let mut t = TestHub::new(limits());
    let a = t.user_claiming("alice", &["club"]);
    t.create(a, json!({"name": "Club", "id": "club"}));
    t.call(
        a,
        "SEND_MESSAGE",
        json!({"roomId": "club", "content": "x", "clientMessageId": "k"}),
        "s1",
    );
    t.one(a);
    t.disconnect(a);
    t.advance(TTL);
    let a = t.user_claiming("alice", &["club"]);
    let (room, _) = t.create(a, json!({"name": "Club", "id": "club"}));
    assert_eq!(room.member_count, 1);
    // The retry key died with the old room: the same one is a new message.
    t.call(
        a,
        "SEND_MESSAGE",
        json!({"roomId": "club", "content": "x", "clientMessageId": "k"}),
        "s2",
    );
    assert_eq!(super::harness::new_message(t.one(a)).seq, 1);
    let b = t.user("bob");
    let joined = t.join(b, "club");
    assert_eq!(super::harness::user_ids(&joined.users), ["alice", "bob"]);
    assert_eq!(broadcasts(t.frames(a)), [user_joined("club", "bob")]);
}
