//! Typing indicators: who gets them, dedupe, timeout, and what ends typing.

mod common;

use std::time::Duration;

use chat_flow::server::RunningServer;
use common::*;
use serde_json::{Value, json};

fn typing(room: &str, is_typing: bool) -> Value {
    // The requestId must never reach the other users' TYPING_UPDATE.
    json!({"type": "TYPING_STATUS", "payload": {"roomId": room, "isTyping": is_typing}, "requestId": "t"})
}

fn update(user: &str, is_typing: bool) -> Value {
    json!({"type": "TYPING_UPDATE", "payload": {"roomId": "general", "userId": user, "username": user, "isTyping": is_typing}})
}

/// alice (two connections) and bob in general, presence noise drained.
async fn setup(typing_timeout_ms: u64) -> (RunningServer, Client, Client, Client) {
    let server = start_with(|c| c.typing_timeout_ms = typing_timeout_ms).await;
    let mut alice = Client::authed(server.addr, "alice").await;
    let mut alice2 = Client::authed(server.addr, "alice").await;
    let mut bob = Client::authed(server.addr, "bob").await;
    alice.join("general").await;
    alice2.join("general").await;
    bob.join("general").await;
    alice.expect_type("USER_JOINED").await;
    alice2.expect_type("USER_JOINED").await;
    (server, alice, alice2, bob)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn typing_goes_to_other_users_only_and_is_deduplicated() {
    let (_server, mut alice, mut alice2, mut bob) = setup(60_000).await;
    alice.send(typing("general", true)).await;
    assert_eq!(bob.recv().await, update("alice", true));
    // A repeat (from either of alice's connections) is not broadcast again.
    alice.send(typing("general", true)).await;
    alice2.send(typing("general", true)).await;
    bob.expect_silence(150).await;
    // Never to any connection of the typing user, and no reply to the sender.
    alice.expect_silence(50).await;
    alice2.expect_silence(50).await;

    alice.send(typing("general", false)).await;
    assert_eq!(bob.recv().await, update("alice", false));
    // false while not typing: nothing.
    alice.send(typing("general", false)).await;
    bob.expect_silence(150).await;

    // Bob typing goes to both of alice's connections.
    bob.send(typing("general", true)).await;
    assert_eq!(alice.recv().await, update("bob", true));
    assert_eq!(alice2.recv().await, update("bob", true));
    bob.expect_silence(50).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn typing_times_out_with_a_broadcast_false() {
    let (_server, mut alice, _alice2, mut bob) = setup(300).await;
    alice.send(typing("general", true)).await;
    assert_eq!(bob.recv().await, update("alice", true));
    match bob.next_event(Duration::from_secs(3)).await {
        Some(Event::Text(v)) => assert_eq!(v, update("alice", false)),
        other => panic!("expected the typing timeout, got {other:?}"),
    }
    alice.expect_silence(50).await;
    // After the timeout, true is news again.
    alice.send(typing("general", true)).await;
    assert_eq!(bob.recv().await, update("alice", true));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repeated_true_keeps_the_indicator_alive() {
    let (_server, mut alice, _alice2, mut bob) = setup(600).await;
    alice.send(typing("general", true)).await;
    assert_eq!(bob.recv().await, update("alice", true));
    // Renew every 150 ms for 900 ms (1.5 timeouts): no false meanwhile.
    for _ in 0..6 {
        bob.expect_silence(150).await;
        alice.send(typing("general", true)).await;
    }
    // Then it lapses.
    match bob.next_event(Duration::from_secs(3)).await {
        Some(Event::Text(v)) => assert_eq!(v, update("alice", false)),
        other => panic!("expected the typing timeout, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sending_a_message_ends_typing() {
    let (_server, mut alice, mut alice2, mut bob) = setup(60_000).await;
    alice.send(typing("general", true)).await;
    assert_eq!(bob.recv().await, update("alice", true));
    // From her other connection: typing is per user.
    alice2.say("general", "done").await;
    let m = bob.expect_type("NEW_MESSAGE").await;
    assert_eq!(m["payload"]["content"], "done");
    assert_eq!(bob.recv().await, update("alice", false));
    let m = alice.expect_type("NEW_MESSAGE").await;
    assert_eq!(m["payload"]["content"], "done");
    alice.expect_silence(100).await;
    // A message while not typing broadcasts no typing update.
    alice.say("general", "again").await;
    bob.expect_type("NEW_MESSAGE").await;
    alice2.expect_type("NEW_MESSAGE").await;
    bob.expect_silence(150).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leaving_or_disconnecting_ends_typing() {
    let server = start_with(|c| c.typing_timeout_ms = 60_000).await;
    let mut alice = Client::authed(server.addr, "alice").await;
    let mut bob = Client::authed(server.addr, "bob").await;
    alice.join("general").await;
    bob.join("general").await;
    alice.expect_type("USER_JOINED").await;

    alice.send(typing("general", true)).await;
    assert_eq!(bob.recv().await, update("alice", true));
    alice
        .ok("LEAVE_ROOM", json!({"roomId": "general"}), "ROOM_LEFT")
        .await;
    assert_eq!(bob.recv().await, update("alice", false));
    bob.expect_type("USER_LEFT").await;

    alice.join("general").await;
    bob.expect_type("USER_JOINED").await;
    alice.send(typing("general", true)).await;
    assert_eq!(bob.recv().await, update("alice", true));
    drop(alice);
    assert_eq!(bob.recv().await, update("alice", false));
    bob.expect_type("USER_LEFT").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn typing_is_per_room() {
    let (_server, mut alice, _alice2, mut bob) = setup(60_000).await;
    let created = alice
        .ok("CREATE_ROOM", json!({"name": "side"}), "ROOM_CREATED")
        .await;
    let side = created["payload"]["room"]["id"].as_str().expect("id");
    alice.send(typing(side, true)).await;
    bob.expect_silence(150).await;
    alice.send(typing("general", true)).await;
    assert_eq!(bob.recv().await, update("alice", true));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn typing_errors() {
    let server = start().await;
    let mut c = Client::authed(server.addr, "alice").await;
    c.fails(
        "TYPING_STATUS",
        json!({"roomId": "general", "isTyping": true}),
        "NOT_A_MEMBER",
    )
    .await;
    c.fails(
        "TYPING_STATUS",
        json!({"roomId": "nowhere", "isTyping": true}),
        "ROOM_NOT_FOUND",
    )
    .await;
    c.join("general").await;
    c.fails(
        "TYPING_STATUS",
        json!({"roomId": "general"}),
        "INVALID_MESSAGE",
    )
    .await;
}
