//! Rate limits: the per-user message bucket, the per-connection request
//! bucket, retryAfterMs, and disconnecting persistent abusers.

mod common;

use std::time::Duration;

use common::*;
use serde_json::{Value, json};

fn send(room: &str, content: &str) -> Value {
    json!({"roomId": room, "content": content})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_are_limited_per_user_across_connections() {
    let server = start_with(|c| {
        c.rate_limit_messages = 3;
        c.rate_limit_window_ms = 60_000;
    })
    .await;
    let addr = server.addr;
    let mut bob = Client::authed(addr, "bob").await;
    bob.join("general").await;
    let mut alice1 = Client::authed(addr, "alice").await;
    let mut alice2 = Client::authed(addr, "alice").await;
    alice1.join("general").await;
    alice2.join("general").await;
    bob.expect_type("USER_JOINED").await;

    alice1.say("general", "1").await;
    alice1.say("general", "2").await;
    alice2.expect_type("NEW_MESSAGE").await;
    alice2.expect_type("NEW_MESSAGE").await;
    alice2.say("general", "3").await;
    alice1.expect_type("NEW_MESSAGE").await;
    let v = alice2
        .fails("SEND_MESSAGE", send("general", "4"), "RATE_LIMIT_EXCEEDED")
        .await;
    let wait = retry_after(&v);
    assert!(
        wait > 0 && wait <= 20_000,
        "one message refills every 20 s: retryAfterMs {wait}"
    );
    alice1
        .fails("SEND_MESSAGE", send("general", "5"), "RATE_LIMIT_EXCEEDED")
        .await;
    // A new connection of the same user shares the bucket.
    let mut alice3 = Client::authed(addr, "alice").await;
    alice3.join("general").await;
    alice3
        .fails("SEND_MESSAGE", send("general", "6"), "RATE_LIMIT_EXCEEDED")
        .await;

    // Bob saw exactly the three accepted messages.
    let mut seen = Vec::new();
    for _ in 0..3 {
        seen.push(bob.expect_type("NEW_MESSAGE").await["payload"]["content"].clone());
    }
    assert_eq!(seen, [json!("1"), json!("2"), json!("3")]);
    bob.expect_silence(150).await;
    // Another user has their own bucket; the rejected ones took no seq.
    let v = bob.say("general", "bob's").await;
    assert_eq!(v["payload"]["seq"], 4);
    alice1.expect_type("NEW_MESSAGE").await;
    // Other requests are not charged to the message bucket.
    alice1.ok("PING", json!({}), "PONG").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_message_bucket_refills_and_retry_after_is_honest() {
    let server = start_with(|c| {
        c.rate_limit_messages = 2;
        c.rate_limit_window_ms = 400;
    })
    .await;
    let mut alice = Client::authed(server.addr, "alice").await;
    alice.join("general").await;
    alice.say("general", "1").await;
    alice.say("general", "2").await;
    let v = alice
        .fails("SEND_MESSAGE", send("general", "3"), "RATE_LIMIT_EXCEEDED")
        .await;
    let wait = retry_after(&v);
    assert!(wait <= 200, "a token every 200 ms: retryAfterMs {wait}");
    tokio::time::sleep(Duration::from_millis(wait + 30)).await;
    let v = alice.say("general", "3").await;
    assert_eq!(v["payload"]["seq"], 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_requests_are_limited_per_connection() {
    let server = start_with(|c| {
        c.rate_limit_requests = 4;
        c.rate_limit_window_ms = 60_000;
    })
    .await;
    let addr = server.addr;
    let mut c = Client::connect(addr).await;
    c.auth("alice").await; // 1
    c.join("general").await; // 2
    c.ok("PING", json!({}), "PONG").await; // 3
    c.ok("LIST_ROOMS", json!({}), "ROOM_LIST").await; // 4
    let v = c.fails("PING", json!({}), "RATE_LIMIT_EXCEEDED").await;
    let wait = retry_after(&v);
    assert!(wait > 0 && wait <= 15_000, "retryAfterMs {wait}");
    // A rejected request has no effect.
    c.fails(
        "CREATE_ROOM",
        json!({"name": "x", "id": "x"}),
        "RATE_LIMIT_EXCEEDED",
    )
    .await;
    // SEND_MESSAGE is charged to the user's message bucket instead.
    c.say("general", "still allowed").await;

    // Another connection of the same user has its own request bucket.
    let mut other = Client::authed(addr, "alice").await;
    other.ok("PING", json!({}), "PONG").await;
    let list = other.ok("LIST_ROOMS", json!({}), "ROOM_LIST").await;
    let ids: Vec<&str> = list["payload"]["rooms"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["general"], "the rejected CREATE_ROOM created nothing");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn everything_before_authentication_is_charged_to_the_connection() {
    let server = start_with(|c| {
        c.rate_limit_requests = 3;
        c.rate_limit_window_ms = 60_000;
    })
    .await;
    // Malformed messages are charged.
    let mut c = Client::connect(server.addr).await;
    c.send_text("{").await;
    c.expect_error("INVALID_MESSAGE").await;
    c.send_binary(b"x").await;
    c.expect_error("INVALID_MESSAGE").await;
    c.fails("PING", json!({}), "UNAUTHORIZED").await;
    c.send_text("{").await;
    let v = c.expect_error("RATE_LIMIT_EXCEEDED").await;
    retry_after(&v);
    // AUTHENTICATE is charged too, and a rejected one has no effect.
    c.fails(
        "AUTHENTICATE",
        json!({"token": token("alice")}),
        "RATE_LIMIT_EXCEEDED",
    )
    .await;
    c.fails("SEND_MESSAGE", send("general", "x"), "RATE_LIMIT_EXCEEDED")
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn persistent_abuse_is_closed_with_1008_after_the_last_error() {
    let server = start_with(|c| {
        c.rate_limit_requests = 3;
        c.rate_limit_window_ms = 60_000;
        c.rate_limit_disconnect_after = 3;
    })
    .await;
    let mut c = Client::connect(server.addr).await;
    c.auth("alice").await; // 1
    c.join("general").await; // 2
    c.ok("PING", json!({}), "PONG").await; // 3
    c.fails("PING", json!({}), "RATE_LIMIT_EXCEEDED").await; // row 1
    c.fails("PING", json!({}), "RATE_LIMIT_EXCEEDED").await; // row 2
    // An accepted request (a message, from the user's bucket) ends the row.
    c.say("general", "ok").await;
    c.fails("PING", json!({}), "RATE_LIMIT_EXCEEDED").await; // row 1
    c.fails("PING", json!({}), "RATE_LIMIT_EXCEEDED").await; // row 2
    c.send(json!({"type": "PING", "requestId": "last"})).await; // row 3
    let v = c.expect_error("RATE_LIMIT_EXCEEDED").await;
    assert_eq!(v["requestId"], "last");
    retry_after(&v);
    c.expect_close(1008).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejected_messages_count_towards_the_disconnect_row() {
    let server = start_with(|c| {
        c.rate_limit_messages = 1;
        c.rate_limit_window_ms = 60_000;
        c.rate_limit_disconnect_after = 2;
    })
    .await;
    let mut c = Client::authed(server.addr, "alice").await;
    c.join("general").await;
    c.say("general", "1").await;
    c.fails("SEND_MESSAGE", send("general", "2"), "RATE_LIMIT_EXCEEDED")
        .await;
    c.fails("SEND_MESSAGE", send("general", "3"), "RATE_LIMIT_EXCEEDED")
        .await;
    c.expect_close(1008).await;
}
