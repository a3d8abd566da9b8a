//! Rooms: default rooms, `CREATE_ROOM`, `LIST_ROOMS`, `JOIN_ROOM`,
//! `LEAVE_ROOM`, private rooms and presence (`USER_JOINED`, `USER_LEFT`).

use serde_json::json;

use super::harness::{
    TestHub, broadcasts, seqs, small_limits, token, user_ids, user_joined, user_left,
};
use crate::core::Limits;
use crate::protocol::server::{RoomInfo, ServerMessage, UserRef};
use crate::protocol::{ErrorCode, RoomKind};

#[test]
fn default_rooms_exist_from_start_created_by_system() {
    let mut t = TestHub::with(
        small_limits(),
        &[("general", "General Chat"), ("random", "Random")],
        1,
    );
    t.advance(5_000);
    let a = t.user("alice");
    let rooms = t.list(a);
    let expected = |id: &str, name: &str| RoomInfo {
        id: id.into(),
        name: name.into(),
        description: String::new(),
        kind: RoomKind::Public,
        member_count: 0,
        created_at: "2023-10-01T12:00:00.000Z".into(),
        created_by: "system".into(),
    };
    assert_eq!(
        rooms,
        [
            expected("general", "General Chat"),
            expected("random", "Random")
        ]
    );
}

#[test]
fn create_room_generates_an_id_and_joins_the_creator() {
    let mut t = TestHub::new(small_limits());
    t.advance(1_234);
    let a = t.user("alice");
    let a2 = t.user("alice");
    t.call(
        a,
        "CREATE_ROOM",
        json!({"name": "Book Club", "description": "Books"}),
        "c1",
    );
    let f = t.one(a);
    assert_eq!(f.request_id.as_deref(), Some("c1"));
    let ServerMessage::RoomCreated { room, epoch } = f.message else {
        panic!("{f:?}")
    };
    assert!(room.id.starts_with("room_"), "{}", room.id);
    assert!(!epoch.is_empty());
    assert_eq!(
        room,
        RoomInfo {
            id: room.id.clone(),
            name: "Book Club".into(),
            description: "Books".into(),
            kind: RoomKind::Public,
            member_count: 1,
            created_at: "2023-10-01T12:00:01.234Z".into(),
            created_by: "alice".into(),
        }
    );
    // Joined at once, without a ROOM_JOINED: it can send there.
    let m = t.say(a, &room.id, "first");
    assert_eq!(m.seq, 1);
    // The creator's other connection has not joined.
    t.silent(a2);
    // A second room gets another id.
    t.call(a, "CREATE_ROOM", json!({"name": "Other"}), "c2");
    let ServerMessage::RoomCreated { room: second, .. } = t.one(a).message else {
        panic!()
    };
    assert!(second.id.starts_with("room_") && second.id != room.id);
    // Others see the creator present.
    let b = t.user("bob");
    let joined = t.join(b, &room.id);
    assert_eq!(user_ids(&joined.users), ["alice", "bob"]);
    assert_eq!(joined.room.member_count, 2);
    assert_eq!(joined.epoch, epoch);
    assert_eq!(seqs(&joined.messages), [1]);
    assert_eq!(broadcasts(t.frames(a)), [user_joined(&room.id, "bob")]);
}

#[test]
fn create_room_with_a_given_id_and_room_exists() {
    let mut t = TestHub::new(small_limits());
    let a = t.user_claiming("alice", &["lobby"]);
    let b = t.user_claiming("bob", &["lobby", "general"]);
    let (room, _) = t.create(a, json!({"name": "Lobby", "id": "lobby", "type": "public"}));
    assert_eq!(room.id, "lobby");
    for (id, rid) in [("lobby", "c2"), ("general", "c3")] {
        t.call(b, "CREATE_ROOM", json!({"name": "Again", "id": id}), rid);
        t.error(b, ErrorCode::RoomExists, Some(rid));
    }
    // Nothing changed: the lobby is still alice's, with alice alone in it.
    let joined = t.join(b, "lobby");
    assert_eq!(joined.room.name, "Lobby");
    assert_eq!(joined.room.created_by, "alice");
    assert_eq!(user_ids(&joined.users), ["alice", "bob"]);
}

#[test]
fn a_chosen_id_must_be_in_the_creators_claim_before_anything_else() {
    let mut t = TestHub::new(small_limits());
    // Mallory's token grants nothing: she cannot take `vip` before the users
    // whose tokens grant it, whether it exists yet or not, and learns
    // nothing about which ids exist.
    let m = t.user("mallory");
    for (id, rid) in [
        ("vip", "c1"),
        ("general", "c2"),
        ("room_AAAAAAAAAAAAAAAA", "c3"),
    ] {
        t.call(
            m,
            "CREATE_ROOM",
            json!({"name": "Mine", "id": id, "type": "private"}),
            rid,
        );
        let message = t.error(m, ErrorCode::Forbidden, Some(rid));
        assert!(message.contains("rooms claim"), "{message}");
    }
    // A claim for another id grants nothing for this one.
    let m2 = t.user_claiming("mallory", &["vip2"]);
    t.call(
        m2,
        "CREATE_ROOM",
        json!({"name": "Mine", "id": "vip"}),
        "c4",
    );
    t.error(m2, ErrorCode::Forbidden, Some("c4"));
    let ids: Vec<String> = t.list(m).into_iter().map(|r| r.id).collect();
    assert_eq!(ids, ["general"]);
    // Refusals do not count towards ROOMS_PER_USER_MAX, and a generated id
    // needs no claim.
    let (room, _) = t.create(m, json!({"name": "Mine"}));
    assert!(room.id.starts_with("room_"));
    // The holders of the claim create it, and its first member is theirs.
    let v = t.user_claiming("vera", &["vip"]);
    let (room, _) = t.create(v, json!({"name": "VIP", "id": "vip", "type": "private"}));
    assert_eq!(
        (room.id.as_str(), room.created_by.as_str()),
        ("vip", "vera")
    );
    t.call(m, "JOIN_ROOM", json!({"roomId": "vip"}), "j");
    t.error(m, ErrorCode::Forbidden, Some("j"));
    t.silent(v);
}

#[test]
fn generated_ids_carry_96_random_bits_and_replay_with_the_seed() {
    let ids = |instance: u64| {
        let mut t = TestHub::with(small_limits(), &[("general", "General Chat")], instance);
        let a = t.user("alice");
        (0..20)
            .map(|_| t.create(a, json!({"name": "R"})).0.id)
            .collect::<Vec<String>>()
    };
    let first = ids(1);
    for id in &first {
        let bits = id.strip_prefix("room_").expect("room_ prefix");
        assert_eq!(bits.len(), 16, "{id}");
        assert!(
            bits.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'),
            "{id}"
        );
    }
    let distinct: std::collections::BTreeSet<&String> = first.iter().collect();
    assert_eq!(distinct.len(), first.len());
    // No counter shows through: consecutive ids share no prefix to speak of.
    for pair in first.windows(2) {
        assert_ne!(pair[0][5..9], pair[1][5..9], "{pair:?}");
    }
    // The same seed gives the same ids (the simulation replays); another
    // gives others.
    assert_eq!(ids(1), first);
    assert!(ids(2).iter().all(|id| !first.contains(id)));
}

#[test]
fn private_rooms_are_forbidden_without_access() {
    let mut t = TestHub::new(small_limits());
    let a = t.user_claiming("alice", &["secret"]);
    t.call(
        a,
        "CREATE_ROOM",
        json!({"name": "Secret", "id": "secret", "type": "private"}),
        "c",
    );
    let ServerMessage::RoomCreated { room, .. } = t.one(a).message else {
        panic!()
    };
    assert_eq!(room.kind, RoomKind::Private);
    let b = t.user("bob");
    t.call(b, "JOIN_ROOM", json!({"roomId": "secret"}), "j");
    t.error(b, ErrorCode::Forbidden, Some("j"));
    t.silent(a);
    // Private or not, history is for members only.
    t.call(b, "GET_HISTORY", json!({"roomId": "secret"}), "h");
    t.error(b, ErrorCode::NotAMember, Some("h"));
    // The `rooms` claim grants access.
    let c = t.connect();
    let mut tok = token("carol");
    tok.rooms = vec!["secret".into()];
    t.auth_with(c, Ok(tok), None, None);
    t.one(c);
    let joined = t.join(c, "secret");
    assert_eq!(user_ids(&joined.users), ["alice", "carol"]);
    // The creator may always join, from any connection.
    let a2 = t.user("alice");
    t.join(a2, "secret");
}

#[test]
fn rooms_per_user_max_is_forbidden() {
    let limits = Limits {
        rooms_per_user_max: 2,
        ..small_limits()
    };
    let mut t = TestHub::new(limits);
    let a = t.user_claiming("alice", &["r0", "r1", "r2"]);
    for i in 0..2 {
        t.call(
            a,
            "CREATE_ROOM",
            json!({"name": "R", "id": format!("r{i}")}),
            "c",
        );
        assert!(matches!(
            t.one(a).message,
            ServerMessage::RoomCreated { .. }
        ));
    }
    t.call(a, "CREATE_ROOM", json!({"name": "R", "id": "r2"}), "c3");
    t.error(a, ErrorCode::Forbidden, Some("c3"));
    // Per user, across connections; others are not limited by it.
    let a2 = t.user("alice");
    t.call(a2, "CREATE_ROOM", json!({"name": "R"}), "c4");
    t.error(a2, ErrorCode::Forbidden, Some("c4"));
    let b = t.user_claiming("bob", &["r2"]);
    t.call(b, "CREATE_ROOM", json!({"name": "R", "id": "r2"}), "c5");
    assert!(matches!(
        t.one(b).message,
        ServerMessage::RoomCreated { .. }
    ));
    let ids: Vec<String> = t.list(b).into_iter().map(|r| r.id).collect();
    assert_eq!(ids, ["general", "r0", "r1", "r2"]);
}

#[test]
fn list_rooms_shows_public_and_accessible_private_rooms_only() {
    let mut t = TestHub::new(small_limits());
    let a = t.user_claiming("alice", &["a-private"]);
    let b = t.user_claiming("bob", &["b-public", "b-private"]);
    t.call(
        a,
        "CREATE_ROOM",
        json!({"name": "A", "id": "a-private", "type": "private"}),
        "c",
    );
    t.one(a);
    t.call(
        b,
        "CREATE_ROOM",
        json!({"name": "B", "id": "b-public"}),
        "c",
    );
    t.one(b);
    t.call(
        b,
        "CREATE_ROOM",
        json!({"name": "B", "id": "b-private", "type": "private"}),
        "c",
    );
    t.one(b);
    let c = t.connect();
    let mut tok = token("carol");
    tok.rooms = vec!["a-private".into(), "no-such-room".into()];
    t.auth_with(c, Ok(tok), None, None);
    t.one(c);
    let d = t.user("dave");
    let ids = |rooms: Vec<RoomInfo>| rooms.into_iter().map(|r| r.id).collect::<Vec<_>>();
    assert_eq!(ids(t.list(a)), ["a-private", "b-public", "general"]);
    assert_eq!(ids(t.list(b)), ["b-private", "b-public", "general"]);
    assert_eq!(ids(t.list(c)), ["a-private", "b-public", "general"]);
    assert_eq!(ids(t.list(d)), ["b-public", "general"]);
}

#[test]
fn join_room_not_found() {
    let mut t = TestHub::new(small_limits());
    let a = t.user("alice");
    t.call(a, "JOIN_ROOM", json!({"roomId": "nowhere"}), "j");
    t.error(a, ErrorCode::RoomNotFound, Some("j"));
    t.call(
        a,
        "SEND_MESSAGE",
        json!({"roomId": "nowhere", "content": "x"}),
        "s",
    );
    t.error(a, ErrorCode::RoomNotFound, Some("s"));
}

#[test]
fn joining_again_is_idempotent() {
    let mut t = TestHub::new(small_limits());
    let b = t.user("bob");
    t.join(b, "general");
    let a = t.user("alice");
    let first = t.join(a, "general");
    assert_eq!(broadcasts(t.frames(b)), [user_joined("general", "alice")]);
    let second = t.join(a, "general");
    t.silent(b);
    assert_eq!(user_ids(&second.users), user_ids(&first.users));
    assert_eq!(second.room.member_count, 2);
    // Still joined once: one copy of each message.
    t.say(b, "general", "hello");
    let got = t.frames(a);
    assert_eq!(got.len(), 1, "{got:?}");
}

#[test]
fn users_and_member_count_count_distinct_users() {
    let mut t = TestHub::new(small_limits());
    let a1 = t.user("alice");
    let a2 = t.user("alice");
    t.join(a1, "general");
    let joined = t.join(a2, "general");
    assert_eq!(
        joined.users,
        [UserRef {
            user_id: "alice".into(),
            username: "alice".into()
        }]
    );
    assert_eq!(joined.room.member_count, 1);
    let b = t.user("bob");
    let joined = t.join(b, "general");
    assert_eq!(user_ids(&joined.users), ["alice", "bob"]);
    assert_eq!(joined.room.member_count, 2);
    assert_eq!(t.list(b)[0].member_count, 2);
}

#[test]
fn recovered_is_absent_without_since_seq() {
    let mut t = TestHub::new(small_limits());
    let a = t.user("alice");
    t.call(a, "JOIN_ROOM", json!({"roomId": "general"}), "j");
    let v = t.one_value(a);
    assert_eq!(v["type"], "ROOM_JOINED");
    assert_eq!(v["requestId"], "j");
    let payload = v["payload"].as_object().expect("object");
    assert!(!payload.contains_key("recovered"), "{v}");
    for key in ["room", "epoch", "messages", "users"] {
        assert!(payload.contains_key(key), "{key} missing: {v}");
    }
    // With sinceSeq it is there.
    t.call(
        a,
        "JOIN_ROOM",
        json!({"roomId": "general", "sinceSeq": 0}),
        "j2",
    );
    assert_eq!(t.one_value(a)["payload"]["recovered"], json!(true));
}

#[test]
fn user_joined_goes_to_others_on_a_users_first_connection_only() {
    let mut t = TestHub::new(small_limits());
    let b = t.user("bob");
    t.join(b, "general");
    let a1 = t.user("alice");
    let a2 = t.user("alice");
    t.join(a1, "general");
    assert_eq!(broadcasts(t.frames(b)), [user_joined("general", "alice")]);
    t.silent(a2);
    t.join(a2, "general");
    t.silent(b);
    t.silent(a1);
}

#[test]
fn user_left_goes_to_others_on_a_users_last_leave() {
    let mut t = TestHub::new(small_limits());
    let b = t.user("bob");
    t.join(b, "general");
    let a1 = t.user("alice");
    let a2 = t.user("alice");
    t.join(a1, "general");
    t.join(a2, "general");
    t.frames(b);
    t.frames(a1);
    t.call(a1, "LEAVE_ROOM", json!({"roomId": "general"}), "l1");
    assert_eq!(
        t.one_value(a1),
        json!({"type": "ROOM_LEFT", "payload": {"roomId": "general"}, "requestId": "l1"})
    );
    t.silent(b);
    t.silent(a2);
    // a1 gets no more of the room's messages; a2 still does.
    t.say(b, "general", "one");
    t.silent(a1);
    assert_eq!(t.frames(a2).len(), 1);
    t.call(a2, "LEAVE_ROOM", json!({"roomId": "general"}), "l2");
    t.one(a2);
    assert_eq!(broadcasts(t.frames(b)), [user_left("general", "alice")]);
    t.silent(a1);
}

#[test]
fn user_left_goes_to_others_on_a_users_last_disconnect() {
    let mut t = TestHub::new(small_limits());
    let b = t.user("bob");
    t.join(b, "general");
    let a1 = t.user("alice");
    let a2 = t.user("alice");
    t.join(a1, "general");
    t.join(a2, "general");
    t.frames(b);
    t.disconnect(a1);
    t.silent(b);
    t.silent(a2);
    t.disconnect(a2);
    assert_eq!(broadcasts(t.frames(b)), [user_left("general", "alice")]);
    let joined = t.join(b, "general");
    assert_eq!(user_ids(&joined.users), ["bob"]);
}

#[test]
fn leave_room_requires_membership() {
    let mut t = TestHub::new(small_limits());
    let a = t.user("alice");
    t.call(a, "LEAVE_ROOM", json!({"roomId": "general"}), "l");
    t.error(a, ErrorCode::NotAMember, Some("l"));
    t.call(a, "LEAVE_ROOM", json!({"roomId": "nowhere"}), "l2");
    t.error(a, ErrorCode::RoomNotFound, Some("l2"));
    t.join(a, "general");
    t.call(a, "LEAVE_ROOM", json!({"roomId": "general"}), "l3");
    t.one(a);
    t.call(a, "LEAVE_ROOM", json!({"roomId": "general"}), "l4");
    t.error(a, ErrorCode::NotAMember, Some("l4"));
}
