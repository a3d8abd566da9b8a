//! How many rooms may exist (`MAX_ROOMS`) and when a user's room goes away
//! (`ROOM_IDLE_TTL_MS` without a member connection), over real sockets,
//! with both settings changed by a reload.

mod common;

use std::time::Duration;

use common::*;
use serde_json::{Value, json};

fn room_ids(list: &Value) -> Vec<String> {
    list["payload"]["rooms"]
        .as_array()
        .expect("rooms array")
        .iter()
        .map(|r| r["id"].as_str().expect("id").to_owned())
        .collect()
}

async fn listed(c: &mut Client) -> Vec<String> {
    room_ids(&c.ok("LIST_ROOMS", json!({}), "ROOM_LIST").await)
}

/// Polls `LIST_ROOMS` on `c` until `room` is no longer listed.
async fn until_deleted(c: &mut Client, room: &str) {
    let deadline = std::time::Instant::now() + TIMEOUT;
    while listed(c).await.iter().any(|r| r == room) {
        assert!(
            std::time::Instant::now() < deadline,
            "{room} was never deleted"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_rooms_counts_the_default_rooms_and_refuses_with_forbidden() {
    let server = start_with(|c| c.max_rooms = 2).await;
    let mut c = Client::authed(server.addr, "alice").await;
    c.ok("CREATE_ROOM", json!({"name": "one"}), "ROOM_CREATED")
        .await;
    let e = c
        .fails("CREATE_ROOM", json!({"name": "two"}), "FORBIDDEN")
        .await;
    assert_eq!(e["payload"]["message"], "room limit reached");
    // For every user.
    let mut bob = Client::authed(server.addr, "bob").await;
    bob.fails("CREATE_ROOM", json!({"name": "bob's"}), "FORBIDDEN")
        .await;
    assert_eq!(listed(&mut bob).await.len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_room_is_deleted_with_its_history_and_its_id_may_be_created_again() {
    let server = start_with(|c| c.room_idle_ttl_ms = 300).await;
    let addr = server.addr;
    let mut alice = Client::connect(addr).await;
    alice.auth_token(&token_rooms("alice", &["club"])).await;
    let created = alice
        .ok(
            "CREATE_ROOM",
            json!({"name": "Club", "id": "club"}),
            "ROOM_CREATED",
        )
        .await;
    let epoch = created["payload"]["epoch"].as_str().unwrap().to_owned();
    alice.say("club", "one").await;
    alice.say("club", "two").await;
    // While a member is there, it stays, however long.
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert!(listed(&mut alice).await.contains(&"club".to_owned()));
    alice
        .ok("LEAVE_ROOM", json!({"roomId": "club"}), "ROOM_LEFT")
        .await;
    until_deleted(&mut alice, "club").await;
    wait_metric(server.addr, "chatflow_rooms_deleted_total", |n| n == 1.0).await;
    // The default room stays, member or not.
    assert_eq!(listed(&mut alice).await, ["general"]);
    alice
        .fails("JOIN_ROOM", json!({"roomId": "club"}), "ROOM_NOT_FOUND")
        .await;
    alice
        .fails(
            "JOIN_ROOM",
            json!({"roomId": "club", "sinceSeq": 2, "epoch": epoch}),
            "ROOM_NOT_FOUND",
        )
        .await;
    // Created again: a new room, a new epoch, seq from 1.
    let again = alice
        .ok(
            "CREATE_ROOM",
            json!({"name": "Club again", "id": "club"}),
            "ROOM_CREATED",
        )
        .await;
    assert_ne!(again["payload"]["epoch"], epoch.as_str());
    assert_eq!(alice.say("club", "fresh").await["payload"]["seq"], 1);
    // A client resuming the old epoch is told it has a gap.
    let mut bob = Client::authed(addr, "bob").await;
    let joined = bob
        .ok(
            "JOIN_ROOM",
            json!({"roomId": "club", "sinceSeq": 2, "epoch": epoch}),
            "ROOM_JOINED",
        )
        .await;
    assert_eq!(joined["payload"]["recovered"], false);
    assert_eq!(joined["payload"]["epoch"], again["payload"]["epoch"]);
    let contents: Vec<&str> = joined["payload"]["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["content"].as_str().unwrap())
        .collect();
    assert_eq!(contents, ["fresh"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_room_frees_its_creators_rooms_per_user_max() {
    let server = start_with(|c| {
        c.room_idle_ttl_ms = 200;
        c.rooms_per_user_max = 1;
    })
    .await;
    let mut alice = Client::authed(server.addr, "alice").await;
    let first = alice
        .ok("CREATE_ROOM", json!({"name": "one"}), "ROOM_CREATED")
        .await;
    alice
        .fails("CREATE_ROOM", json!({"name": "two"}), "FORBIDDEN")
        .await;
    // Her disconnect empties it.
    drop(alice);
    let id = first["payload"]["room"]["id"].as_str().unwrap().to_owned();
    let mut alice = Client::authed(server.addr, "alice").await;
    until_deleted(&mut alice, &id).await;
    alice
        .ok("CREATE_ROOM", json!({"name": "two"}), "ROOM_CREATED")
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_settings_change_live_on_a_reload() {
    let server = start().await;
    let mut alice = Client::authed(server.addr, "alice").await;
    let room = alice
        .ok("CREATE_ROOM", json!({"name": "idle"}), "ROOM_CREATED")
        .await;
    let id = room["payload"]["room"]["id"].as_str().unwrap().to_owned();
    alice
        .ok("LEAVE_ROOM", json!({"roomId": id}), "ROOM_LEFT")
        .await;
    let mut config = test_config();
    config.room_idle_ttl_ms = 100;
    config.max_rooms = 2;
    server.reload(config).await;
    // The room empty for a day's TTL goes within the new one.
    until_deleted(&mut alice, &id).await;
    alice
        .ok("CREATE_ROOM", json!({"name": "two"}), "ROOM_CREATED")
        .await;
    let e = alice
        .fails("CREATE_ROOM", json!({"name": "three"}), "FORBIDDEN")
        .await;
    assert_eq!(e["payload"]["message"], "room limit reached");
}
