//! History: retention, reconnect recovery with sinceSeq/epoch, GET_HISTORY
//! paging, and epochs across a restart.

mod common;

use chat_flow::server::RunningServer;
use common::*;
use serde_json::{Value, json};

fn seqs(messages: &Value) -> Vec<u64> {
    messages
        .as_array()
        .unwrap_or_else(|| panic!("messages array: {messages}"))
        .iter()
        .map(|m| m["seq"].as_u64().expect("seq"))
        .collect()
}

/// A server with `HISTORY_LIMIT = limit` where alice has sent `n` messages
/// ("m1", "m2", …) to general; returns it with alice's connection.
async fn room_with(limit: usize, n: u64) -> (RunningServer, Client) {
    let server = start_with(|c| {
        c.history_limit = limit;
        c.rate_limit_messages = 1000;
    })
    .await;
    let mut alice = Client::authed(server.addr, "alice").await;
    alice.join("general").await;
    for i in 1..=n {
        let v = alice.say("general", &format!("m{i}")).await;
        assert_eq!(v["payload"]["seq"], i);
    }
    (server, alice)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_room_keeps_its_last_history_limit_messages_oldest_first() {
    let (server, mut alice) = room_with(3, 5).await;
    let mut bob = Client::authed(server.addr, "bob").await;
    let v = bob.join("general").await;
    let messages = &v["payload"]["messages"];
    assert_eq!(seqs(messages), [3, 4, 5]);
    assert_eq!(messages[0]["content"], "m3");
    assert_eq!(messages[2]["content"], "m5");
    assert_eq!(messages[0]["userId"], "alice");
    assert!(v["payload"].get("recovered").is_none());
    // seq is never reused after eviction.
    alice.expect_type("USER_JOINED").await;
    let v = alice.say("general", "m6").await;
    assert_eq!(v["payload"]["seq"], 6);
    assert_eq!(bob.expect_type("NEW_MESSAGE").await["payload"]["seq"], 6);
    let h = bob
        .ok("GET_HISTORY", json!({"roomId": "general"}), "HISTORY")
        .await;
    assert_eq!(seqs(&h["payload"]["messages"]), [4, 5, 6]);
    assert_eq!(h["payload"]["hasMore"], false);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_messages_are_the_messages_as_broadcast() {
    let (server, mut alice) = room_with(10, 0).await;
    let sent = alice
        .ok(
            "SEND_MESSAGE",
            json!({"roomId": "general", "content": "keep me", "type": "emote", "clientMessageId": "c9"}),
            "NEW_MESSAGE",
        )
        .await;
    let mut bob = Client::authed(server.addr, "bob").await;
    let v = bob.join("general").await;
    assert_eq!(v["payload"]["messages"], json!([sent["payload"]]));
    let h = bob
        .ok("GET_HISTORY", json!({"roomId": "general"}), "HISTORY")
        .await;
    assert_eq!(h["payload"]["messages"], json!([sent["payload"]]));
    assert_eq!(h["payload"]["roomId"], "general");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconnect_recovery_with_since_seq_and_epoch() {
    let (server, mut alice) = room_with(3, 5).await;
    let epoch = alice.join("general").await["payload"]["epoch"]
        .as_str()
        .expect("epoch")
        .to_owned();
    let mut bob = Client::authed(server.addr, "bob").await;
    let join = |since: Value, epoch: Value| json!({"roomId": "general", "sinceSeq": since, "epoch": epoch});

    // Everything after 3 is retained (4, 5): recovered.
    let v = bob
        .ok("JOIN_ROOM", join(json!(3), json!(epoch)), "ROOM_JOINED")
        .await;
    assert_eq!(seqs(&v["payload"]["messages"]), [4, 5]);
    assert_eq!(v["payload"]["recovered"], true);
    assert_eq!(v["payload"]["epoch"], epoch.as_str());

    // Right at the oldest retained boundary: 3, 4, 5 are all there.
    let v = bob
        .ok("JOIN_ROOM", join(json!(2), json!(epoch)), "ROOM_JOINED")
        .await;
    assert_eq!(seqs(&v["payload"]["messages"]), [3, 4, 5]);
    assert_eq!(v["payload"]["recovered"], true);

    // Up to date: nothing to send, recovered.
    let v = bob
        .ok("JOIN_ROOM", join(json!(5), json!(epoch)), "ROOM_JOINED")
        .await;
    assert_eq!(seqs(&v["payload"]["messages"]), Vec::<u64>::new());
    assert_eq!(v["payload"]["recovered"], true);

    // No epoch sent: treated as the current one.
    let v = bob
        .ok(
            "JOIN_ROOM",
            json!({"roomId": "general", "sinceSeq": 4}),
            "ROOM_JOINED",
        )
        .await;
    assert_eq!(seqs(&v["payload"]["messages"]), [5]);
    assert_eq!(v["payload"]["recovered"], true);

    // Seq 2 was evicted: not recovered, every retained message.
    let v = bob
        .ok("JOIN_ROOM", join(json!(1), json!(epoch)), "ROOM_JOINED")
        .await;
    assert_eq!(seqs(&v["payload"]["messages"]), [3, 4, 5]);
    assert_eq!(v["payload"]["recovered"], false);
    let v = bob
        .ok("JOIN_ROOM", join(json!(0), json!(epoch)), "ROOM_JOINED")
        .await;
    assert_eq!(v["payload"]["recovered"], false);

    // Another epoch: not recovered, everything retained.
    let v = bob
        .ok(
            "JOIN_ROOM",
            join(json!(4), json!("some-other-epoch")),
            "ROOM_JOINED",
        )
        .await;
    assert_eq!(seqs(&v["payload"]["messages"]), [3, 4, 5]);
    assert_eq!(v["payload"]["recovered"], false);

    // Beyond the last seq: not recovered.
    let v = bob
        .ok("JOIN_ROOM", join(json!(10), json!(epoch)), "ROOM_JOINED")
        .await;
    assert_eq!(seqs(&v["payload"]["messages"]), [3, 4, 5]);
    assert_eq!(v["payload"]["recovered"], false);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recovery_in_an_empty_room() {
    let (_server, mut alice) = room_with(5, 0).await;
    let v = alice
        .ok(
            "JOIN_ROOM",
            json!({"roomId": "general", "sinceSeq": 0}),
            "ROOM_JOINED",
        )
        .await;
    assert_eq!(v["payload"]["messages"], json!([]));
    assert_eq!(v["payload"]["recovered"], true);
    let v = alice
        .ok(
            "JOIN_ROOM",
            json!({"roomId": "general", "sinceSeq": 1}),
            "ROOM_JOINED",
        )
        .await;
    assert_eq!(v["payload"]["recovered"], false);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_history_pages_backwards() {
    let (_server, mut alice) = room_with(10, 7).await;
    let page = |before: Option<u64>, limit: Option<u64>| {
        let mut p = json!({"roomId": "general"});
        if let Some(b) = before {
            p["beforeSeq"] = json!(b);
        }
        if let Some(l) = limit {
            p["limit"] = json!(l);
        }
        p
    };
    let v = alice
        .ok("GET_HISTORY", page(None, Some(3)), "HISTORY")
        .await;
    assert_eq!(seqs(&v["payload"]["messages"]), [5, 6, 7]);
    assert_eq!(v["payload"]["hasMore"], true);
    let v = alice
        .ok("GET_HISTORY", page(Some(5), Some(3)), "HISTORY")
        .await;
    assert_eq!(seqs(&v["payload"]["messages"]), [2, 3, 4]);
    assert_eq!(v["payload"]["hasMore"], true);
    let v = alice
        .ok("GET_HISTORY", page(Some(2), Some(3)), "HISTORY")
        .await;
    assert_eq!(seqs(&v["payload"]["messages"]), [1]);
    assert_eq!(v["payload"]["hasMore"], false);
    let v = alice
        .ok("GET_HISTORY", page(Some(1), None), "HISTORY")
        .await;
    assert_eq!(seqs(&v["payload"]["messages"]), Vec::<u64>::new());
    assert_eq!(v["payload"]["hasMore"], false);
    // Default limit (50) covers everything.
    let v = alice.ok("GET_HISTORY", page(None, None), "HISTORY").await;
    assert_eq!(seqs(&v["payload"]["messages"]), [1, 2, 3, 4, 5, 6, 7]);
    assert_eq!(v["payload"]["hasMore"], false);
    // beforeSeq beyond the end is the newest overall.
    let v = alice
        .ok("GET_HISTORY", page(Some(100), Some(2)), "HISTORY")
        .await;
    assert_eq!(seqs(&v["payload"]["messages"]), [6, 7]);
    assert_eq!(v["payload"]["hasMore"], true);
    // Exactly all of them: no more.
    let v = alice
        .ok("GET_HISTORY", page(None, Some(7)), "HISTORY")
        .await;
    assert_eq!(v["payload"]["hasMore"], false);
    let v = alice
        .ok("GET_HISTORY", page(None, Some(100)), "HISTORY")
        .await;
    assert_eq!(seqs(&v["payload"]["messages"]).len(), 7);
    // Out of range.
    for bad in [
        page(None, Some(0)),
        page(None, Some(101)),
        json!({"roomId": "general", "beforeSeq": -1}),
    ] {
        alice.fails("GET_HISTORY", bad, "INVALID_MESSAGE").await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn has_more_counts_only_retained_messages() {
    let (_server, mut alice) = room_with(3, 6).await;
    let v = alice
        .ok(
            "GET_HISTORY",
            json!({"roomId": "general", "limit": 3}),
            "HISTORY",
        )
        .await;
    assert_eq!(seqs(&v["payload"]["messages"]), [4, 5, 6]);
    assert_eq!(v["payload"]["hasMore"], false, "1-3 were evicted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_history_is_for_members_only() {
    let (server, _alice) = room_with(10, 2).await;
    let mut bob = Client::authed(server.addr, "bob").await;
    bob.fails("GET_HISTORY", json!({"roomId": "general"}), "NOT_A_MEMBER")
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_server_has_a_new_epoch_and_recovery_says_false() {
    let (server, mut alice) = room_with(10, 3).await;
    let v = alice.join("general").await;
    let old_epoch = v["payload"]["epoch"].as_str().unwrap().to_owned();
    drop(alice);
    server.shutdown().await.expect("shutdown");

    let (server, _) = room_with(10, 0).await;
    let mut alice = Client::authed(server.addr, "alice").await;
    let v = alice
        .ok(
            "JOIN_ROOM",
            json!({"roomId": "general", "sinceSeq": 3, "epoch": old_epoch}),
            "ROOM_JOINED",
        )
        .await;
    assert_ne!(v["payload"]["epoch"], old_epoch.as_str());
    assert_eq!(v["payload"]["recovered"], false);
    assert_eq!(v["payload"]["messages"], json!([]));
    // Even with a sinceSeq the new room could satisfy, the old epoch says
    // the client's state belongs to another sequence.
    let new = alice.say("general", "fresh").await;
    assert_eq!(new["payload"]["seq"], 1);
    let v = alice
        .ok(
            "JOIN_ROOM",
            json!({"roomId": "general", "sinceSeq": 0, "epoch": old_epoch}),
            "ROOM_JOINED",
        )
        .await;
    assert_eq!(v["payload"]["recovered"], false);
    assert_eq!(seqs(&v["payload"]["messages"]), [1]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rooms_have_distinct_epochs() {
    let (_server, mut alice) = room_with(10, 0).await;
    let a = alice
        .ok("CREATE_ROOM", json!({"name": "a"}), "ROOM_CREATED")
        .await;
    let b = alice
        .ok("CREATE_ROOM", json!({"name": "b"}), "ROOM_CREATED")
        .await;
    let g = alice.join("general").await;
    let epochs: std::collections::HashSet<String> = [&a, &b, &g]
        .iter()
        .map(|v| v["payload"]["epoch"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(epochs.len(), 3);
}
