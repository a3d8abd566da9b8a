//! Rooms: default rooms, CREATE_ROOM, private rooms, LIST_ROOMS, JOIN and
//! LEAVE, presence (USER_JOINED / USER_LEFT), and the room errors.

mod common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::{Value, json};

/// RFC 3339 UTC with exactly three fractional digits, e.g.
/// `2023-10-01T12:00:00.000Z`.
fn assert_rfc3339_ms(s: &Value) {
    let s = s
        .as_str()
        .unwrap_or_else(|| panic!("timestamp not a string: {s}"));
    let b = s.as_bytes();
    let digits = |r: std::ops::Range<usize>| r.into_iter().all(|i| b[i].is_ascii_digit());
    assert!(
        b.len() == 24
            && digits(0..4)
            && b[4] == b'-'
            && digits(5..7)
            && b[7] == b'-'
            && digits(8..10)
            && b[10] == b'T'
            && digits(11..13)
            && b[13] == b':'
            && digits(14..16)
            && b[16] == b':'
            && digits(17..19)
            && b[19] == b'.'
            && digits(20..23)
            && b[23] == b'Z',
        "not RFC 3339 UTC with milliseconds: {s}"
    );
}

fn room_ids(list: &Value) -> Vec<String> {
    list["payload"]["rooms"]
        .as_array()
        .expect("rooms array")
        .iter()
        .map(|r| r["id"].as_str().expect("id").to_owned())
        .collect()
}

fn find_room<'a>(list: &'a Value, id: &str) -> &'a Value {
    list["payload"]["rooms"]
        .as_array()
        .expect("rooms")
        .iter()
        .find(|r| r["id"] == id)
        .unwrap_or_else(|| panic!("room {id} not listed: {list}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_default_room_exists_from_start_up() {
    let server = start().await;
    let mut c = Client::authed(server.addr, "alice").await;
    let list = c.ok("LIST_ROOMS", json!({}), "ROOM_LIST").await;
    assert_eq!(room_ids(&list), ["general"]);
    let room = find_room(&list, "general");
    assert_eq!(room["name"], "General Chat");
    assert_eq!(room["description"], "");
    assert_eq!(room["type"], "public");
    assert_eq!(room["memberCount"], 0);
    assert_eq!(room["createdBy"], "system");
    assert_rfc3339_ms(&room["createdAt"]);
    let mut keys: Vec<&str> = room
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        [
            "createdAt",
            "createdBy",
            "description",
            "id",
            "memberCount",
            "name",
            "type"
        ]
    );
    // LIST_ROOMS without a payload at all.
    c.send(json!({"type": "LIST_ROOMS", "requestId": "l"}))
        .await;
    let v = c.expect_type("ROOM_LIST").await;
    assert_eq!(v["requestId"], "l");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn configured_default_rooms_exist_in_order() {
    let server = start_with(|c| {
        c.default_rooms = vec![
            ("lobby".to_owned(), "The Lobby".to_owned()),
            ("random".to_owned(), "Random".to_owned()),
        ];
    })
    .await;
    let mut c = Client::authed(server.addr, "alice").await;
    let list = c.ok("LIST_ROOMS", json!({}), "ROOM_LIST").await;
    let mut ids = room_ids(&list);
    ids.sort();
    assert_eq!(ids, ["lobby", "random"]);
    assert_eq!(find_room(&list, "lobby")["name"], "The Lobby");
    assert_eq!(find_room(&list, "random")["createdBy"], "system");
    c.fails("JOIN_ROOM", json!({"roomId": "general"}), "ROOM_NOT_FOUND")
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_room_replies_with_room_and_epoch_and_joins_the_creator() {
    let server = start().await;
    let mut alice = Client::authed(server.addr, "alice").await;
    let v = alice
        .ok(
            "CREATE_ROOM",
            json!({"name": "Rust Talk", "description": "All things Rust"}),
            "ROOM_CREATED",
        )
        .await;
    let room = &v["payload"]["room"];
    let id = room["id"].as_str().expect("id").to_owned();
    // `room_` and 96 random bits in base64url.
    let bits = id.strip_prefix("room_").expect("room_ prefix");
    assert!(
        bits.len() == 16
            && bits
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'),
        "generated id {id}"
    );
    assert_eq!(room["name"], "Rust Talk");
    assert_eq!(room["description"], "All things Rust");
    assert_eq!(room["type"], "public");
    assert_eq!(room["createdBy"], "alice");
    assert_eq!(room["memberCount"], 1);
    assert_rfc3339_ms(&room["createdAt"]);
    let epoch = v["payload"]["epoch"].as_str().expect("epoch").to_owned();
    assert!(!epoch.is_empty());

    // Joined at once, without a separate ROOM_JOINED.
    alice.expect_silence(100).await;
    let m = alice.say(&id, "first").await;
    assert_eq!(m["payload"]["seq"], 1);

    // A second generated id is different.
    let v2 = alice
        .ok("CREATE_ROOM", json!({"name": "Other"}), "ROOM_CREATED")
        .await;
    assert_ne!(v2["payload"]["room"]["id"], id.as_str());

    // Others can see, join and get the same epoch.
    let mut bob = Client::authed(server.addr, "bob").await;
    let list = bob.ok("LIST_ROOMS", json!({}), "ROOM_LIST").await;
    assert_eq!(find_room(&list, &id)["memberCount"], 1);
    let joined = bob.join(&id).await;
    assert_eq!(joined["payload"]["epoch"], epoch.as_str());
    assert_eq!(joined["payload"]["room"]["memberCount"], 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_room_with_an_id_and_room_exists() {
    let server = start().await;
    let long = "a".repeat(64);
    let mut c = Client::connect(server.addr).await;
    c.auth_token(&token_rooms("alice", &["my-room_1", "general", &long]))
        .await;
    let v = c
        .ok(
            "CREATE_ROOM",
            json!({"name": "Mine", "id": "my-room_1"}),
            "ROOM_CREATED",
        )
        .await;
    assert_eq!(v["payload"]["room"]["id"], "my-room_1");
    c.fails(
        "CREATE_ROOM",
        json!({"name": "Again", "id": "my-room_1"}),
        "ROOM_EXISTS",
    )
    .await;
    c.fails(
        "CREATE_ROOM",
        json!({"name": "General", "id": "general"}),
        "ROOM_EXISTS",
    )
    .await;
    let mut bob = Client::connect(server.addr).await;
    bob.auth_token(&token_rooms("bob", &["my-room_1"])).await;
    bob.fails(
        "CREATE_ROOM",
        json!({"name": "Mine too", "id": "my-room_1"}),
        "ROOM_EXISTS",
    )
    .await;
    // A 64-character id is fine.
    c.ok(
        "CREATE_ROOM",
        json!({"name": "Long", "id": long}),
        "ROOM_CREATED",
    )
    .await;
}

/// A chosen id must be in the creator's `rooms` claim, checked before
/// whether it exists: nobody takes an id that tokens grant to others first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chosen_id_needs_the_rooms_claim_before_any_existence_check() {
    let server = start().await;
    let mut mallory = Client::authed(server.addr, "mallory").await;
    for id in ["vip", "general", "room_AAAAAAAAAAAAAAAA"] {
        let e = mallory
            .fails(
                "CREATE_ROOM",
                json!({"name": "Mine", "id": id, "type": "private"}),
                "FORBIDDEN",
            )
            .await;
        assert!(
            e["payload"]["message"]
                .as_str()
                .unwrap()
                .contains("rooms claim"),
            "{e}"
        );
    }
    let list = mallory.ok("LIST_ROOMS", json!({}), "ROOM_LIST").await;
    assert_eq!(room_ids(&list), ["general"]);
    let mut vera = Client::connect(server.addr).await;
    vera.auth_token(&token_rooms("vera", &["vip"])).await;
    let v = vera
        .ok(
            "CREATE_ROOM",
            json!({"name": "VIP", "id": "vip", "type": "private"}),
            "ROOM_CREATED",
        )
        .await;
    assert_eq!(v["payload"]["room"]["createdBy"], "vera");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_room_validates_its_fields() {
    let server = start().await;
    let mut c = Client::authed(server.addr, "alice").await;
    for payload in [
        json!({"name": ""}),
        json!({"name": "   "}),
        json!({"name": "\t\n"}),
        json!({"name": "a".repeat(65)}),
        json!({"name": "bad\u{1}name"}),
        json!({"name": "bad\nname"}),
        json!({"name": "ok", "description": "d".repeat(257)}),
        json!({"name": "ok", "description": 5}),
        json!({"name": "ok", "type": "secret"}),
        json!({"name": "ok", "type": "Public"}),
        json!({"name": "ok", "id": ""}),
        json!({"name": "ok", "id": "a b"}),
        json!({"name": "ok", "id": "a/b"}),
        json!({"name": "ok", "id": "é"}),
        json!({"name": "ok", "id": "a".repeat(65)}),
        json!({"name": "ok", "id": 5}),
    ] {
        c.fails("CREATE_ROOM", payload, "INVALID_MESSAGE").await;
    }
    // Boundaries that are fine.
    let v = c
        .ok(
            "CREATE_ROOM",
            json!({"name": "n".repeat(64), "description": "d".repeat(256), "type": "private"}),
            "ROOM_CREATED",
        )
        .await;
    assert_eq!(v["payload"]["room"]["type"], "private");
    c.ok(
        "CREATE_ROOM",
        json!({"name": " padded name ", "description": ""}),
        "ROOM_CREATED",
    )
    .await;
    // Nothing invalid was created.
    let list = c.ok("LIST_ROOMS", json!({}), "ROOM_LIST").await;
    assert_eq!(room_ids(&list).len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn private_rooms_need_the_rooms_claim() {
    let server = start().await;
    let addr = server.addr;
    let mut owner = Client::connect(addr).await;
    owner.auth_token(&token_rooms("owner", &["vip"])).await;
    owner
        .ok(
            "CREATE_ROOM",
            json!({"name": "VIP", "id": "vip", "type": "private"}),
            "ROOM_CREATED",
        )
        .await;
    // A stranger: FORBIDDEN, not listed, no history.
    let mut stranger = Client::authed(addr, "stranger").await;
    stranger
        .fails("JOIN_ROOM", json!({"roomId": "vip"}), "FORBIDDEN")
        .await;
    let list = stranger.ok("LIST_ROOMS", json!({}), "ROOM_LIST").await;
    assert_eq!(room_ids(&list), ["general"]);
    stranger
        .fails("GET_HISTORY", json!({"roomId": "vip"}), "NOT_A_MEMBER")
        .await;
    stranger
        .fails(
            "SEND_MESSAGE",
            json!({"roomId": "vip", "content": "let me in"}),
            "NOT_A_MEMBER",
        )
        .await;
    // A claim for another room does not help.
    let mut other = Client::connect(addr).await;
    other
        .auth_token(&token_rooms("other", &["elsewhere"]))
        .await;
    other
        .fails("JOIN_ROOM", json!({"roomId": "vip"}), "FORBIDDEN")
        .await;
    // The claim grants access and visibility.
    let mut guest = Client::connect(addr).await;
    guest.auth_token(&token_rooms("guest", &["vip"])).await;
    let list = guest.ok("LIST_ROOMS", json!({}), "ROOM_LIST").await;
    let mut ids = room_ids(&list);
    ids.sort();
    assert_eq!(ids, ["general", "vip"]);
    assert_eq!(find_room(&list, "vip")["type"], "private");
    let joined = guest.join("vip").await;
    assert_eq!(joined["payload"]["room"]["id"], "vip");
    // The owner sees the guest arrive; the stranger does not.
    let j = owner.expect_type("USER_JOINED").await;
    assert_eq!(j["payload"]["user"]["userId"], "guest");
    stranger.expect_silence(100).await;
    // The creator lists it too.
    let list = owner.ok("LIST_ROOMS", json!({}), "ROOM_LIST").await;
    assert!(room_ids(&list).contains(&"vip".to_owned()));
    // A private room's GET_HISTORY works for members.
    guest
        .ok("GET_HISTORY", json!({"roomId": "vip"}), "HISTORY")
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn join_room_reply_and_idempotence() {
    let server = start().await;
    let mut alice = Client::authed(server.addr, "alice").await;
    let mut bob = Client::authed(server.addr, "bob").await;
    bob.join("general").await;
    let v = alice.join("general").await;
    let p = &v["payload"];
    assert_eq!(p["room"]["id"], "general");
    assert_eq!(p["room"]["memberCount"], 2);
    assert!(p["epoch"].is_string());
    assert_eq!(p["messages"], json!([]));
    assert!(p.get("recovered").is_none());
    let mut users = p["users"].as_array().expect("users").clone();
    users.sort_by_key(|u| u["userId"].as_str().unwrap().to_owned());
    assert_eq!(
        users,
        [
            json!({"userId": "alice", "username": "alice"}),
            json!({"userId": "bob", "username": "bob"})
        ]
    );
    let j = bob.expect_type("USER_JOINED").await;
    assert_eq!(
        j,
        json!({"type": "USER_JOINED", "payload": {"roomId": "general", "user": {"userId": "alice", "username": "alice"}}})
    );

    // Again: same answer, no second USER_JOINED, still one membership.
    let again = alice.join("general").await;
    assert_eq!(again["payload"]["room"]["memberCount"], 2);
    assert_eq!(again["payload"]["users"].as_array().map(Vec::len), Some(2));
    bob.expect_silence(150).await;
    // One message is delivered once.
    alice.say("general", "once").await;
    alice.expect_silence(150).await;
    let m = bob.expect_type("NEW_MESSAGE").await;
    assert_eq!(m["payload"]["content"], "once");
    bob.expect_silence(100).await;
    // Leaving once is enough.
    alice
        .ok("LEAVE_ROOM", json!({"roomId": "general"}), "ROOM_LEFT")
        .await;
    bob.expect_type("USER_LEFT").await;
    alice
        .fails(
            "SEND_MESSAGE",
            json!({"roomId": "general", "content": "x"}),
            "NOT_A_MEMBER",
        )
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_follows_the_first_and_last_connection_of_a_user() {
    let server = start().await;
    let addr = server.addr;
    let mut bob = Client::authed(addr, "bob").await;
    bob.join("general").await;
    let mut alice1 = Client::authed(addr, "alice").await;
    let mut alice2 = Client::authed(addr, "alice").await;

    alice1.join("general").await;
    let v = bob.expect_type("USER_JOINED").await;
    assert_eq!(v["payload"]["user"]["userId"], "alice");

    // Alice's second connection: no USER_JOINED for anyone.
    let joined = alice2.join("general").await;
    assert_eq!(
        joined["payload"]["room"]["memberCount"], 2,
        "distinct users"
    );
    let users = joined["payload"]["users"].as_array().unwrap();
    assert_eq!(users.len(), 2, "alice listed once: {users:?}");
    bob.expect_silence(150).await;
    alice1.expect_silence(50).await;

    // Her first connection leaves: she is still present through the second.
    alice1
        .ok("LEAVE_ROOM", json!({"roomId": "general"}), "ROOM_LEFT")
        .await;
    bob.expect_silence(150).await;
    alice2.expect_silence(50).await;

    // Her last connection disconnects: USER_LEFT.
    drop(alice2);
    let v = bob.expect_type("USER_LEFT").await;
    assert_eq!(
        v,
        json!({"type": "USER_LEFT", "payload": {"roomId": "general", "userId": "alice", "username": "alice"}})
    );
    alice1.expect_silence(50).await;
    let list = bob.ok("LIST_ROOMS", json!({}), "ROOM_LIST").await;
    assert_eq!(find_room(&list, "general")["memberCount"], 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_disconnect_leaves_every_room() {
    let server = start().await;
    let addr = server.addr;
    let mut alice = Client::connect(addr).await;
    alice.auth_token(&token_rooms("alice", &["side"])).await;
    let room = alice
        .ok(
            "CREATE_ROOM",
            json!({"name": "Side", "id": "side"}),
            "ROOM_CREATED",
        )
        .await;
    assert_eq!(room["payload"]["room"]["id"], "side");
    alice.join("general").await;
    let mut bob = Client::authed(addr, "bob").await;
    bob.join("general").await;
    bob.join("side").await;
    alice.expect_type("USER_JOINED").await;
    alice.expect_type("USER_JOINED").await;

    alice.close(1000).await;
    alice.expect_close(1000).await;
    let mut left = Vec::new();
    for _ in 0..2 {
        let v = bob.expect_type("USER_LEFT").await;
        assert_eq!(v["payload"]["userId"], "alice");
        left.push(v["payload"]["roomId"].as_str().unwrap().to_owned());
    }
    left.sort();
    assert_eq!(left, ["general", "side"]);
    let list = bob.ok("LIST_ROOMS", json!({}), "ROOM_LIST").await;
    assert_eq!(find_room(&list, "general")["memberCount"], 1);
    assert_eq!(find_room(&list, "side")["memberCount"], 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leave_room_replies_and_not_a_member() {
    let server = start().await;
    let mut c = Client::authed(server.addr, "alice").await;
    c.fails("LEAVE_ROOM", json!({"roomId": "general"}), "NOT_A_MEMBER")
        .await;
    c.join("general").await;
    let v = c
        .ok("LEAVE_ROOM", json!({"roomId": "general"}), "ROOM_LEFT")
        .await;
    assert_eq!(v["payload"], json!({"roomId": "general"}));
    c.fails("LEAVE_ROOM", json!({"roomId": "general"}), "NOT_A_MEMBER")
        .await;
    // After leaving: no messages from the room, and room requests fail.
    let mut bob = Client::authed(server.addr, "bob").await;
    bob.join("general").await;
    bob.say("general", "anyone?").await;
    c.expect_silence(150).await;
    c.fails("GET_HISTORY", json!({"roomId": "general"}), "NOT_A_MEMBER")
        .await;
    c.fails(
        "TYPING_STATUS",
        json!({"roomId": "general", "isTyping": true}),
        "NOT_A_MEMBER",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_rooms_are_room_not_found() {
    let server = start().await;
    let mut c = Client::authed(server.addr, "alice").await;
    for (kind, payload) in [
        ("JOIN_ROOM", json!({"roomId": "nowhere"})),
        ("LEAVE_ROOM", json!({"roomId": "nowhere"})),
        ("GET_HISTORY", json!({"roomId": "nowhere"})),
        (
            "SEND_MESSAGE",
            json!({"roomId": "nowhere", "content": "hello"}),
        ),
        (
            "TYPING_STATUS",
            json!({"roomId": "nowhere", "isTyping": true}),
        ),
        // Ids are case-sensitive.
        ("JOIN_ROOM", json!({"roomId": "General"})),
    ] {
        c.fails(kind, payload, "ROOM_NOT_FOUND").await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rooms_per_user_max_caps_creation_with_forbidden() {
    let server = start_with(|c| c.rooms_per_user_max = 2).await;
    let mut c = Client::authed(server.addr, "alice").await;
    c.ok("CREATE_ROOM", json!({"name": "one"}), "ROOM_CREATED")
        .await;
    c.ok("CREATE_ROOM", json!({"name": "two"}), "ROOM_CREATED")
        .await;
    c.fails("CREATE_ROOM", json!({"name": "three"}), "FORBIDDEN")
        .await;
    let mut bob = Client::authed(server.addr, "bob").await;
    bob.ok("CREATE_ROOM", json!({"name": "bob's"}), "ROOM_CREATED")
        .await;
}

/// `PRESENCE_DELAY_MS`: presence notices wait that long (so that those a
/// connection gets meanwhile share one write), in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_notices_are_held_for_the_presence_delay() {
    const DELAY: Duration = Duration::from_millis(400);
    let server = start_with(|c| c.presence_delay_ms = DELAY.as_millis() as u64).await;
    let mut alice = Client::authed(server.addr, "alice").await;
    alice.join("general").await;
    let mut bob = Client::authed(server.addr, "bob").await;
    let mut carol = Client::authed(server.addr, "carol").await;
    let asked = Instant::now();
    bob.join("general").await;
    carol.join("general").await;
    // The hold starts when the hub queues the notice, after bob asked.
    let first = alice.expect_type("USER_JOINED").await;
    let waited = asked.elapsed();
    assert!(
        waited >= DELAY,
        "USER_JOINED after {waited:?}, before the delay"
    );
    assert_eq!(first["payload"]["user"]["userId"], "bob");
    let second = alice.expect_type("USER_JOINED").await;
    assert_eq!(second["payload"]["user"]["userId"], "carol");
    let to_bob = bob.expect_type("USER_JOINED").await;
    assert_eq!(to_bob["payload"]["user"]["userId"], "carol");
    // Leaving is a notice too.
    let asked = Instant::now();
    drop(carol);
    let left = alice.expect_type("USER_LEFT").await;
    assert_eq!(left["payload"]["userId"], "carol");
    assert!(asked.elapsed() >= DELAY, "USER_LEFT before the delay");
}

/// A held notice never makes anything else wait, and never comes after a
/// frame that was sent after it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_takes_held_notices_along_at_once() {
    // Held longer than any expected frame may take (TIMEOUT).
    let server = start_with(|c| c.presence_delay_ms = 10_000).await;
    let mut alice = Client::authed(server.addr, "alice").await;
    alice.join("general").await;
    let mut bob = Client::authed(server.addr, "bob").await;
    bob.join("general").await;
    bob.say("general", "hi").await;
    let joined = alice.expect_type("USER_JOINED").await;
    assert_eq!(joined["payload"]["user"]["userId"], "bob");
    let m = alice.expect_type("NEW_MESSAGE").await;
    assert_eq!(m["payload"]["content"], "hi");
    // A reply to alice herself takes them along too, behind them.
    let mut carol = Client::authed(server.addr, "carol").await;
    carol.join("general").await;
    alice
        .send(json!({"type": "PING", "payload": {}, "requestId": "p1"}))
        .await;
    let joined = alice.expect_type("USER_JOINED").await;
    assert_eq!(joined["payload"]["user"]["userId"], "carol");
    let pong = alice.expect_type("PONG").await;
    assert_eq!(pong["requestId"], "p1");
}
