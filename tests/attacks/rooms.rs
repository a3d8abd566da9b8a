//! Rooms taken from their owners: an id squatted before the users its
//! tokens are for create it, and a refresh with an older token that brings
//! back a revoked room or keeps a later expiry.

use std::time::Duration;

use chat_flow::auth::TokenSpec;
use serde_json::json;

use crate::common::*;
use crate::harness::arena;

/// A dev-secret token for `sub` granting `rooms`, valid `ttl_s` seconds.
fn granting(sub: &str, rooms: &[&str], ttl_s: u64) -> String {
    let rooms: Vec<String> = rooms.iter().map(|r| (*r).to_owned()).collect();
    mint(&TokenSpec {
        rooms: &rooms,
        ..TokenSpec::new(sub, now_s(), ttl_s)
    })
}

/// Mallory creates `vip` (private) before the users whose tokens grant it:
/// she would be its creator, and read everything said there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn squatting_a_room_id_granted_to_others_is_forbidden() {
    let mut arena = arena(|_| {}).await;
    let mut mallory = arena.attacker("mallory").await;
    let e = mallory
        .fails(
            "CREATE_ROOM",
            json!({"name": "VIP", "id": "vip", "type": "private"}),
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
    // The room's real users create it and talk there; mallory is kept out.
    let mut vera = Client::connect(arena.addr).await;
    vera.auth_token(&granting("vera", &["vip"], 3600)).await;
    let created = vera
        .ok(
            "CREATE_ROOM",
            json!({"name": "VIP", "id": "vip", "type": "private"}),
            "ROOM_CREATED",
        )
        .await;
    assert_eq!(created["payload"]["room"]["createdBy"], "vera");
    mallory
        .fails("JOIN_ROOM", json!({"roomId": "vip"}), "FORBIDDEN")
        .await;
    vera.say("vip", "the plan").await;
    mallory.expect_silence(200).await;
    arena.assert_bystanders_fine().await;
}

/// Revoked from `vip` by a newer token, the user refreshes with the older
/// one (which still grants it, and expires sooner): the older token's
/// authority is all the connection gets, expiry included. It is taken out
/// of `vip` by the newer token, and after refreshing with the older one it
/// ends when that one expires, not at the newer token's `exp`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refreshing_with_an_older_token_keeps_neither_a_revoked_room_nor_a_later_expiry() {
    let mut arena = arena(|c| c.jwt_leeway_seconds = 0).await;
    let mut owner = Client::connect(arena.addr).await;
    owner.auth_token(&granting("owner", &["vip"], 3600)).await;
    owner
        .ok(
            "CREATE_ROOM",
            json!({"name": "VIP", "id": "vip", "type": "private"}),
            "ROOM_CREATED",
        )
        .await;
    // exp 1-2 s away (whole seconds), leeway 0.
    let older = granting("alice", &["vip"], 2);
    let newer = granting("alice", &[], 3600);
    let mut alice = Client::connect(arena.addr).await;
    alice.auth_token(&older).await;
    alice.join("vip").await;
    owner.expect_type("USER_JOINED").await;
    // The newer token revokes `vip`: she is out at once.
    alice.auth_token(&newer).await;
    assert_eq!(
        alice.recv().await,
        json!({"type": "ROOM_LEFT", "payload": {"roomId": "vip"}})
    );
    owner.expect_type("USER_LEFT").await;
    owner.say("vip", "after her revocation").await;
    alice.expect_silence(200).await;
    // Back to the older token: its grant comes with its own expiry.
    alice.auth_token(&older).await;
    alice.join("vip").await;
    let v = match alice.next_event(Duration::from_secs(4)).await {
        Some(Event::Text(v)) if v["type"] == "USER_JOINED" || v["type"] == "NEW_MESSAGE" => {
            panic!("unexpected {v}")
        }
        Some(Event::Text(v)) => v,
        other => panic!("expected ERROR token expired, got {other:?}"),
    };
    assert_eq!(v["payload"]["message"], "token expired", "{v}");
    alice.expect_close(1008).await;
    owner.expect_type("USER_JOINED").await;
    owner.expect_type("USER_LEFT").await;
    arena.assert_bystanders_fine().await;
}
