//! A configuration reload (SIGHUP, or `RunningServer::reload`) takes effect
//! on the running server without dropping anyone.

mod common;

use chat_flow::config::JwtKeySource;
use common::*;
use serde_json::json;

#[tokio::test]
async fn limits_and_the_jwt_secret_change_live() {
    let server = start_with(|c| c.history_limit = 10).await;
    let mut alice = Client::authed(server.addr, "alice").await;
    alice.join("general").await;
    for i in 0..6 {
        alice.say("general", &format!("m{i}")).await;
    }

    let mut config = test_config();
    config.history_limit = 2;
    config.max_content_length = 3;
    config.jwt_key = JwtKeySource::Secret(b"a-brand-new-secret-of-32-bytes!!".to_vec());
    server.reload(config).await;

    // Once tokens signed with the old secret are refused, the reload is in
    // force.
    eventually("tokens with the old secret are refused", || async {
        let mut probe = Client::connect(server.addr).await;
        probe
            .send(json!({"type": "AUTHENTICATE", "payload": {"token": token("bob")}}))
            .await;
        probe.recv().await["type"] == "ERROR"
    })
    .await;
    // The content limit applies (a 4-character message is refused)...
    let refused = alice
        .fails(
            "SEND_MESSAGE",
            json!({"roomId": "general", "content": "four"}),
            "INVALID_MESSAGE",
        )
        .await;
    assert_eq!(refused["type"], "ERROR");
    // ...history shrinks to the new limit, keeping the newest...
    let history = alice
        .ok("GET_HISTORY", json!({"roomId": "general"}), "HISTORY")
        .await;
    let seqs: Vec<u64> = history["payload"]["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(seqs, vec![5, 6]);
    // ...the connection that was open stays authenticated...
    alice.say("general", "ok").await;
    drop(alice);
    server.shutdown().await.unwrap();
}

/// `PRESENCE_DELAY_MS` changes live: a notice held for 10 s before the
/// reload to 0 goes out at once after it, and so do new ones.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_presence_delay_changes_live() {
    let server = start_with(|c| c.presence_delay_ms = 10_000).await;
    let mut alice = Client::authed(server.addr, "alice").await;
    alice.join("general").await;
    let mut bob = Client::authed(server.addr, "bob").await;
    bob.join("general").await;

    let mut config = test_config();
    config.presence_delay_ms = 0;
    config.max_content_length = 3;
    server.reload(config).await;
    // The hub gets the new delay before connections see the new limits.
    eventually("the reload is in force", || async {
        let mut probe = Client::authed(server.addr, "probe").await;
        let created = probe
            .ok("CREATE_ROOM", json!({"name": "probe"}), "ROOM_CREATED")
            .await;
        let room = created["payload"]["room"]["id"].clone();
        let sent = probe
            .request("SEND_MESSAGE", json!({"roomId": room, "content": "four"}))
            .await;
        sent["payload"]["code"] == "INVALID_MESSAGE"
    })
    .await;
    // Nothing else goes to alice, so only an ended hold can bring these
    // within TIMEOUT (half the old delay).
    let joined = alice.expect_type("USER_JOINED").await;
    assert_eq!(joined["payload"]["user"]["userId"], "bob");
    let mut carol = Client::authed(server.addr, "carol").await;
    carol.join("general").await;
    let joined = alice.expect_type("USER_JOINED").await;
    assert_eq!(joined["payload"]["user"]["userId"], "carol");
}
