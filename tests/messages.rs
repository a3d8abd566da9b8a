//! Messages: fan-out, acknowledgements, seq, ids, safe retries.

mod common;

use std::collections::HashSet;

use common::*;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_reaches_every_member_and_only_the_senders_copy_has_the_request_id() {
    let server = start().await;
    let addr = server.addr;
    let mut alice1 = Client::authed(addr, "alice").await;
    let mut alice2 = Client::authed(addr, "alice").await;
    let mut bob = Client::authed(addr, "bob").await;
    let mut outsider = Client::authed(addr, "carol").await;
    alice1.join("general").await;
    bob.join("general").await;
    alice1.expect_type("USER_JOINED").await;
    alice2.join("general").await;

    alice1
        .send(json!({
            "type": "SEND_MESSAGE",
            "payload": {"roomId": "general", "content": "Hello, world!", "type": "text"},
            "requestId": "m1"
        }))
        .await;
    let ack = alice1.expect_type("NEW_MESSAGE").await;
    assert_eq!(ack["requestId"], "m1");
    let p = &ack["payload"];
    assert_eq!(p["seq"], 1);
    assert_eq!(p["roomId"], "general");
    assert_eq!(p["userId"], "alice");
    assert_eq!(p["username"], "alice");
    assert_eq!(p["content"], "Hello, world!");
    assert_eq!(p["type"], "text");
    assert!(p["id"].as_str().is_some_and(|id| !id.is_empty()));
    assert!(
        p["timestamp"]
            .as_str()
            .is_some_and(|t| t.ends_with('Z') && t.len() == 24)
    );
    assert!(p.get("clientMessageId").is_none());
    let mut keys: Vec<&str> = p.as_object().unwrap().keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        [
            "content",
            "id",
            "roomId",
            "seq",
            "timestamp",
            "type",
            "userId",
            "username"
        ]
    );

    for other in [&mut alice2, &mut bob] {
        let v = other.expect_type("NEW_MESSAGE").await;
        assert!(
            v.get("requestId").is_none(),
            "broadcast with requestId: {v}"
        );
        assert_eq!(v["payload"], ack["payload"]);
    }
    outsider.expect_silence(150).await;
    alice1.expect_silence(10).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_without_request_id_is_still_acknowledged_to_the_sender() {
    let server = start().await;
    let mut alice = Client::authed(server.addr, "alice").await;
    alice.join("general").await;
    alice
        .send(json!({"type": "SEND_MESSAGE", "payload": {"roomId": "general", "content": "x", "type": "emote"}}))
        .await;
    let v = alice.expect_type("NEW_MESSAGE").await;
    assert!(v.get("requestId").is_none());
    assert_eq!(v["payload"]["type"], "emote");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seq_is_per_room_and_ids_are_unique() {
    let server = start().await;
    let addr = server.addr;
    let mut alice = Client::connect(addr).await;
    alice.auth_token(&token_rooms("alice", &["other"])).await;
    let mut bob = Client::authed(addr, "bob").await;
    alice.join("general").await;
    alice
        .ok(
            "CREATE_ROOM",
            json!({"name": "Other", "id": "other"}),
            "ROOM_CREATED",
        )
        .await;
    bob.join("general").await;
    alice.expect_type("USER_JOINED").await;
    let mut ids = HashSet::new();
    for i in 1..=3u64 {
        let v = alice.say("general", &format!("g{i}")).await;
        assert_eq!(v["payload"]["seq"], i);
        assert!(ids.insert(v["payload"]["id"].as_str().unwrap().to_owned()));
        let b = bob.expect_type("NEW_MESSAGE").await;
        assert_eq!(b["payload"]["seq"], i);
    }
    // Another room counts from 1.
    for i in 1..=2u64 {
        let v = alice.say("other", &format!("o{i}")).await;
        assert_eq!(v["payload"]["seq"], i);
        assert_eq!(v["payload"]["roomId"], "other");
        assert!(ids.insert(v["payload"]["id"].as_str().unwrap().to_owned()));
    }
    // Bob's messages continue general's sequence.
    let v = bob.say("general", "from bob").await;
    assert_eq!(v["payload"]["seq"], 4);
    let a = alice.expect_type("NEW_MESSAGE").await;
    assert_eq!(a["payload"]["userId"], "bob");
    assert!(ids.insert(v["payload"]["id"].as_str().unwrap().to_owned()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_member_receives_every_message_in_seq_order_without_gaps() {
    let server = start_with(|c| c.rate_limit_messages = 1000).await;
    let addr = server.addr;
    let mut senders = Vec::new();
    let mut receivers = Vec::new();
    for name in ["s1", "s2", "s3"] {
        let mut c = Client::authed(addr, name).await;
        c.join("general").await;
        senders.push(c);
    }
    for name in ["r1", "r2"] {
        let mut c = Client::authed(addr, name).await;
        c.join("general").await;
        receivers.push(c);
    }
    // Drain presence noise.
    for (i, c) in senders.iter_mut().enumerate() {
        for _ in 0..(4 - i) {
            c.expect_type("USER_JOINED").await;
        }
    }
    receivers[0].expect_type("USER_JOINED").await;

    // Three senders pipeline 20 messages each, concurrently.
    const EACH: usize = 20;
    let tasks: Vec<_> = senders
        .into_iter()
        .map(|mut c| {
            tokio::spawn(async move {
                for i in 0..EACH {
                    c.send(json!({"type": "SEND_MESSAGE", "payload": {"roomId": "general", "content": format!("m{i}")}, "requestId": format!("q{i}")}))
                        .await;
                }
                let mut seqs = Vec::new();
                let mut own = 0;
                while seqs.len() < 3 * EACH {
                    let v = c.expect_type("NEW_MESSAGE").await;
                    if v.get("requestId").is_some() {
                        assert_eq!(v["requestId"], format!("q{own}"), "acks in order");
                        own += 1;
                    }
                    seqs.push(v["payload"]["seq"].as_u64().unwrap());
                }
                seqs
            })
        })
        .collect();
    for c in &mut receivers {
        let mut seqs = Vec::new();
        while seqs.len() < 3 * EACH {
            seqs.push(
                c.expect_type("NEW_MESSAGE").await["payload"]["seq"]
                    .as_u64()
                    .unwrap(),
            );
        }
        assert_eq!(seqs, (1..=(3 * EACH) as u64).collect::<Vec<_>>());
    }
    for t in tasks {
        let seqs = t.await.expect("sender task");
        assert_eq!(seqs, (1..=(3 * EACH) as u64).collect::<Vec<_>>());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn content_rules() {
    let server = start_with(|c| c.max_content_length = 20).await;
    let mut c = Client::authed(server.addr, "alice").await;
    c.join("general").await;
    for content in [json!(""), json!(" "), json!("\n\t "), json!("x".repeat(21))] {
        c.fails(
            "SEND_MESSAGE",
            json!({"roomId": "general", "content": content}),
            "INVALID_MESSAGE",
        )
        .await;
    }
    let v = c.say("general", &"x".repeat(20)).await;
    assert_eq!(v["payload"]["seq"], 1, "rejected messages take no seq");
    // Surrounding whitespace and newlines are kept as sent.
    let v = c.say("general", "  two\nlines ").await;
    assert_eq!(v["payload"]["content"], "  two\nlines ");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_with_the_same_client_message_id_returns_the_original_without_a_broadcast() {
    let server = start().await;
    let addr = server.addr;
    let mut bob = Client::authed(addr, "bob").await;
    bob.join("general").await;
    let mut alice = Client::authed(addr, "alice").await;
    alice.join("general").await;
    bob.expect_type("USER_JOINED").await;

    let original = alice
        .ok(
            "SEND_MESSAGE",
            json!({"roomId": "general", "content": "pay 10", "clientMessageId": "c-1"}),
            "NEW_MESSAGE",
        )
        .await;
    assert_eq!(original["payload"]["clientMessageId"], "c-1");
    let seen = bob.expect_type("NEW_MESSAGE").await;
    assert_eq!(seen["payload"]["clientMessageId"], "c-1");

    // Alice loses her connection before (as far as she knows) the ack, and
    // resends from a new connection.
    drop(alice);
    bob.expect_type("USER_LEFT").await;
    let mut alice = Client::authed(addr, "alice").await;
    alice.join("general").await;
    bob.expect_type("USER_JOINED").await;
    alice
        .send(json!({
            "type": "SEND_MESSAGE",
            "payload": {"roomId": "general", "content": "pay 10", "clientMessageId": "c-1"},
            "requestId": "retry"
        }))
        .await;
    let again = alice.expect_type("NEW_MESSAGE").await;
    assert_eq!(again["requestId"], "retry");
    assert_eq!(
        again["payload"], original["payload"],
        "the original, unchanged"
    );
    bob.expect_silence(200).await;

    // Nothing new was stored.
    let h = alice
        .ok("GET_HISTORY", json!({"roomId": "general"}), "HISTORY")
        .await;
    assert_eq!(h["payload"]["messages"].as_array().map(Vec::len), Some(1));
    let next = alice.say("general", "next").await;
    assert_eq!(next["payload"]["seq"], 2);
    bob.expect_type("NEW_MESSAGE").await;

    // The same clientMessageId from another user, or to another room, is a
    // new message.
    let v = bob
        .ok(
            "SEND_MESSAGE",
            json!({"roomId": "general", "content": "mine", "clientMessageId": "c-1"}),
            "NEW_MESSAGE",
        )
        .await;
    assert_eq!(v["payload"]["seq"], 3);
    assert_eq!(alice.expect_type("NEW_MESSAGE").await["payload"]["seq"], 3);
    let created = alice
        .ok("CREATE_ROOM", json!({"name": "x"}), "ROOM_CREATED")
        .await;
    let x = created["payload"]["room"]["id"].as_str().expect("id");
    let v = alice
        .ok(
            "SEND_MESSAGE",
            json!({"roomId": x, "content": "pay 10", "clientMessageId": "c-1"}),
            "NEW_MESSAGE",
        )
        .await;
    assert_eq!(v["payload"]["roomId"], x);
    assert_eq!(v["payload"]["seq"], 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_after_the_original_was_evicted_is_a_new_message() {
    let server = start_with(|c| c.history_limit = 2).await;
    let mut alice = Client::authed(server.addr, "alice").await;
    alice.join("general").await;
    let first = alice
        .ok(
            "SEND_MESSAGE",
            json!({"roomId": "general", "content": "a", "clientMessageId": "k"}),
            "NEW_MESSAGE",
        )
        .await;
    assert_eq!(first["payload"]["seq"], 1);
    alice.say("general", "b").await;
    alice.say("general", "c").await; // evicts seq 1
    let v = alice
        .ok(
            "SEND_MESSAGE",
            json!({"roomId": "general", "content": "a", "clientMessageId": "k"}),
            "NEW_MESSAGE",
        )
        .await;
    assert_eq!(v["payload"]["seq"], 4);
    assert_ne!(v["payload"]["id"], first["payload"]["id"]);
}

/// A room large enough that each message's deliveries are written by the
/// flush lanes on both worker threads: every member still gets every
/// message once, in order, with nothing between them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_room_fed_back_to_back_gets_every_message_in_order() {
    const MESSAGES: u64 = 60;
    let members = chat_flow::server::outbox::flushes::PARALLEL_FLUSH_MIN + 8;
    let server = start_with(|c| c.rate_limit_messages = 1_000).await;
    let mut sender = Client::authed(server.addr, "sender").await;
    sender.join("general").await;
    let mut room = Vec::new();
    for i in 0..members {
        let mut c = Client::authed(server.addr, &format!("member{i}")).await;
        c.join("general").await;
        room.push(c);
    }
    // Back to back, without waiting for acknowledgements: the hub takes
    // many per batch, and each batch is flushed to every member at once.
    let content = "x".repeat(180);
    for n in 0..MESSAGES {
        sender
            .send(json!({
                "type": "SEND_MESSAGE",
                "payload": {"roomId": "general", "content": content, "type": "text"},
                "requestId": format!("m{n}")
            }))
            .await;
    }
    for (i, member) in room.iter_mut().enumerate() {
        let mut next_seq = None;
        let mut got = 0;
        while got < MESSAGES {
            let v = member.recv().await;
            match v["type"].as_str() {
                // Later members joining.
                Some("USER_JOINED") => continue,
                Some("NEW_MESSAGE") => {}
                _ => panic!("member{i}: unexpected {v}"),
            }
            let seq = v["payload"]["seq"].as_u64().expect("seq");
            if let Some(expected) = next_seq {
                assert_eq!(seq, expected, "member{i}: gap or reorder");
            }
            next_seq = Some(seq + 1);
            got += 1;
        }
        member.expect_silence(10).await;
    }
}
