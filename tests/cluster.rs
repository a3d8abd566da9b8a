//! Several nodes on one real `redis-server` (started by the test on a free
//! port; `scripts/ensure-redis.sh` installs it when missing) are one
//! service: the contract's "Cluster" section, over real sockets.
//!
//! Most nodes run in this process (each its own server, with its own node
//! id and Redis connections); the node that must die without a goodbye is
//! the real binary, killed with `SIGKILL`.

mod common;
#[path = "common/redis.rs"]
mod redis_server;

use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::process::Child;
use std::time::{Duration, Instant};

use chat_flow::server::RunningServer;
use common::{Client, Event, http_get, metric, metrics, start_with, token_rooms};
use redis_server::RedisServer;
use serde_json::{Value, json};

/// A short lease, so that a dead node is noticed within the test.
const NODE_TTL_MS: u64 = 1_500;
/// A short Redis timeout, so that a stall is noticed within the test.
const REDIS_TIMEOUT_MS: u64 = 500;

async fn node(redis: &RedisServer) -> RunningServer {
    node_with(redis, |c| c.rate_limit_messages = 1_000).await
}

/// A node of the cluster on `redis`, its configuration changed by `f`.
async fn node_with(
    redis: &RedisServer,
    f: impl FnOnce(&mut chat_flow::config::Config),
) -> RunningServer {
    let url = redis.url();
    start_with(move |c| {
        c.redis_url = Some(url);
        c.node_ttl_ms = NODE_TTL_MS;
        c.redis_timeout_ms = REDIS_TIMEOUT_MS;
        f(c);
    })
    .await
}

async fn authed(server: &RunningServer, user: &str) -> Client {
    Client::authed(server.addr, user).await
}

/// The next frame of `kind`, skipping presence and typing notices.
async fn next_of(client: &mut Client, kind: &str) -> Value {
    loop {
        let v = client.recv().await;
        if v["type"] == kind {
            return v;
        }
        let noise = ["USER_JOINED", "USER_LEFT", "TYPING_UPDATE"];
        assert!(
            noise.contains(&v["type"].as_str().unwrap_or("")),
            "expected {kind}, got {v}"
        );
    }
}

/// `(seq, content)` of the next `n` messages, skipping notices.
async fn messages(client: &mut Client, n: usize) -> Vec<(u64, String)> {
    let mut out = Vec::new();
    while out.len() < n {
        let v = next_of(client, "NEW_MESSAGE").await;
        out.push((
            v["payload"]["seq"].as_u64().expect("seq"),
            v["payload"]["content"]
                .as_str()
                .expect("content")
                .to_owned(),
        ));
    }
    out
}

/// Sends a request and returns its reply, with the frames that came
/// before it (broadcasts).
async fn reply_to(client: &mut Client, kind: &str, payload: Value) -> (Value, Vec<Value>) {
    let id = client.next_id();
    client
        .send(json!({"type": kind, "payload": payload, "requestId": id}))
        .await;
    let mut before = Vec::new();
    loop {
        let v = client.recv().await;
        if v["requestId"] == id.as_str() {
            return (v, before);
        }
        before.push(v);
    }
}

/// The reply to `SEND_MESSAGE` of `m<n>` in `general`.
async fn send_text(client: &mut Client, n: u32) -> Value {
    let payload = json!({"roomId": "general", "content": format!("m{n}")});
    reply_to(client, "SEND_MESSAGE", payload).await.0
}

fn user_ids(joined: &Value) -> Vec<String> {
    joined["payload"]["users"]
        .as_array()
        .expect("users")
        .iter()
        .map(|u| u["userId"].as_str().expect("userId").to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_on_one_redis_are_one_service() {
    let redis = RedisServer::start();
    let a = node(&redis).await;
    let b = node(&redis).await;
    let mut alice = Client::connect(a.addr).await;
    alice.auth_token(&token_rooms("alice", &["team"])).await;
    let mut bob = Client::connect(b.addr).await;
    bob.auth_token(&token_rooms("bob", &["team"])).await;

    // Presence is the service's.
    alice.join("general").await;
    let joined = bob.join("general").await;
    assert_eq!(user_ids(&joined), ["alice", "bob"]);
    assert_eq!(joined["payload"]["room"]["memberCount"], 2);
    let seen = alice.expect_type("USER_JOINED").await;
    assert_eq!(seen["payload"]["user"]["userId"], "bob");

    // Messages cross nodes, once each, in one seq order; each sender's
    // own order is kept.
    let (a_sends, b_sends) = (25, 25);
    let send_a = async {
        for i in 0..a_sends {
            alice
                .send(json!({"type": "SEND_MESSAGE", "payload": {"roomId": "general", "content": format!("a{i}")}}))
                .await;
        }
        messages(&mut alice, a_sends + b_sends).await
    };
    let send_b = async {
        for i in 0..b_sends {
            bob.send(json!({"type": "SEND_MESSAGE", "payload": {"roomId": "general", "content": format!("b{i}")}}))
                .await;
        }
        messages(&mut bob, a_sends + b_sends).await
    };
    let (seen_a, seen_b) = tokio::join!(send_a, send_b);
    let seqs: Vec<u64> = seen_a.iter().map(|(s, _)| *s).collect();
    assert_eq!(seqs, (1..=50).collect::<Vec<_>>(), "gap-free, in order");
    assert_eq!(seen_a, seen_b, "both nodes deliver the same sequence");
    for who in ["a", "b"] {
        let own: Vec<&str> = seen_a
            .iter()
            .map(|(_, c)| c.as_str())
            .filter(|c| c.starts_with(who))
            .collect();
        let sent: Vec<String> = (0..25).map(|i| format!("{who}{i}")).collect();
        assert_eq!(own, sent, "{who}'s messages in the order sent");
    }

    // Typing crosses nodes.
    bob.send(json!({"type": "TYPING_STATUS", "payload": {"roomId": "general", "isTyping": true}}))
        .await;
    let typing = alice.expect_type("TYPING_UPDATE").await;
    assert_eq!(typing["payload"]["userId"], "bob");
    assert_eq!(typing["payload"]["isTyping"], true);

    // History is the service's.
    let history = bob
        .ok(
            "GET_HISTORY",
            json!({"roomId": "general", "limit": 3}),
            "HISTORY",
        )
        .await;
    let seqs: Vec<u64> = history["payload"]["messages"]
        .as_array()
        .expect("messages")
        .iter()
        .map(|m| m["seq"].as_u64().expect("seq"))
        .collect();
    assert_eq!(seqs, [48, 49, 50]);
    assert_eq!(history["payload"]["hasMore"], true);

    // A room created on one node exists on the other; its id is taken.
    let created = alice
        .ok(
            "CREATE_ROOM",
            json!({"id": "team", "name": "Team"}),
            "ROOM_CREATED",
        )
        .await;
    let listed = bob.ok("LIST_ROOMS", json!({}), "ROOM_LIST").await;
    let ids: Vec<&str> = listed["payload"]["rooms"]
        .as_array()
        .expect("rooms")
        .iter()
        .map(|r| r["id"].as_str().expect("id"))
        .collect();
    assert_eq!(ids, ["general", "team"]);
    bob.fails(
        "CREATE_ROOM",
        json!({"id": "team", "name": "Mine"}),
        "ROOM_EXISTS",
    )
    .await;
    let joined = bob.join("team").await;
    assert_eq!(joined["payload"]["epoch"], created["payload"]["epoch"]);

    // A client leaving on one node is gone for the other.
    bob.ok("LEAVE_ROOM", json!({"roomId": "general"}), "ROOM_LEFT")
        .await;
    let left = next_of(&mut alice, "USER_LEFT").await;
    assert_eq!(left["payload"]["userId"], "bob");
    assert_eq!(left["payload"]["roomId"], "general");

    // A node that stops cleanly takes its users out before it goes: well
    // before its lease would run out.
    let stopped = Instant::now();
    let mut b = b;
    b.begin_shutdown();
    let left = next_of(&mut alice, "USER_LEFT").await;
    assert_eq!(left["payload"]["userId"], "bob");
    assert_eq!(left["payload"]["roomId"], "team");
    assert!(
        stopped.elapsed() < Duration::from_millis(NODE_TTL_MS / 2),
        "USER_LEFT {:?} after the stop",
        stopped.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rooms_history_and_retries_survive_every_node_restarting() {
    let redis = RedisServer::start();
    let a = node(&redis).await;
    let mut alice = Client::connect(a.addr).await;
    alice.auth_token(&token_rooms("alice", &["keep"])).await;
    let created = alice
        .ok(
            "CREATE_ROOM",
            json!({"id": "keep", "name": "Kept"}),
            "ROOM_CREATED",
        )
        .await;
    let epoch = created["payload"]["epoch"].clone();
    for i in 1..=3 {
        let ack = alice
            .ok(
                "SEND_MESSAGE",
                json!({"roomId": "keep", "content": format!("m{i}"), "clientMessageId": format!("c{i}")}),
                "NEW_MESSAGE",
            )
            .await;
        assert_eq!(ack["payload"]["seq"], i);
    }
    drop(alice);
    a.shutdown().await.expect("clean stop");

    // Every node is new; Redis kept everything.
    let b = node(&redis).await;
    let mut alice = authed(&b, "alice").await;
    let joined = alice
        .ok(
            "JOIN_ROOM",
            json!({"roomId": "keep", "sinceSeq": 1, "epoch": epoch}),
            "ROOM_JOINED",
        )
        .await;
    assert_eq!(
        joined["payload"]["epoch"], epoch,
        "same epoch after restart"
    );
    assert_eq!(joined["payload"]["recovered"], true);
    let seqs: Vec<u64> = joined["payload"]["messages"]
        .as_array()
        .expect("messages")
        .iter()
        .map(|m| m["seq"].as_u64().expect("seq"))
        .collect();
    assert_eq!(seqs, [2, 3]);
    // A retry of an acknowledged message is answered with it, not stored
    // again.
    let again = alice
        .ok(
            "SEND_MESSAGE",
            json!({"roomId": "keep", "content": "m2", "clientMessageId": "c2"}),
            "NEW_MESSAGE",
        )
        .await;
    assert_eq!(again["payload"]["seq"], 2);
    let next = alice.say("keep", "m4").await;
    assert_eq!(next["payload"]["seq"], 4);
}

/// A free port on 127.0.0.1.
fn free_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// The real binary as a node of the cluster on `port`.
fn node_process(redis: &RedisServer, port: u16, dir: &std::path::Path) -> Child {
    let (port, ttl, timeout) = (
        port.to_string(),
        NODE_TTL_MS.to_string(),
        REDIS_TIMEOUT_MS.to_string(),
    );
    let env = [
        ("HOST", "127.0.0.1"),
        ("PORT", port.as_str()),
        ("REDIS_URL", &redis.url()),
        ("NODE_TTL_MS", ttl.as_str()),
        ("REDIS_TIMEOUT_MS", timeout.as_str()),
        ("PRESENCE_DELAY_MS", "0"),
        ("LOG_LEVEL", "warn"),
    ];
    common::process::chat_flow(dir, &[], &env)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("chat-flow starts")
}

async fn wait_ready(addr: SocketAddr) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if tokio::net::TcpStream::connect(addr).await.is_ok()
            && http_get(addr, "/readyz").await.0 == 200
        {
            return;
        }
        assert!(Instant::now() < deadline, "{addr} never became ready");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_nodes_users_leave_within_node_ttl_and_its_clients_resume_elsewhere() {
    let redis = RedisServer::start();
    let a = node(&redis).await;
    let dir = common::process::TempDir::new("cluster-kill");
    let port = free_port();
    let mut b = node_process(&redis, port, &dir.0);
    let b_addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    wait_ready(b_addr).await;

    let mut alice = authed(&a, "alice").await;
    alice.join("general").await;
    let mut bob = Client::authed(b_addr, "bob").await;
    let joined = bob.join("general").await;
    let epoch = joined["payload"]["epoch"].clone();
    next_of(&mut alice, "USER_JOINED").await;
    let ack = bob.say("general", "before").await;
    assert_eq!(ack["payload"]["seq"], 1);
    assert_eq!(messages(&mut alice, 1).await, [(1, "before".to_owned())]);

    // Node B dies without a word.
    b.kill().expect("SIGKILL");
    b.wait().expect("reaped");
    let killed = Instant::now();
    // Alice keeps talking meanwhile: bob misses it.
    alice.say("general", "while away").await;
    let left = next_of(&mut alice, "USER_LEFT").await;
    let took = killed.elapsed();
    assert_eq!(left["payload"]["userId"], "bob");
    // The lease runs out NODE_TTL_MS after its last renewal (at most a
    // third of it before the kill), and the survivor sweeps within a third
    // of it after that.
    assert!(
        took <= Duration::from_millis(NODE_TTL_MS + NODE_TTL_MS / 3 + 500),
        "USER_LEFT after {took:?}"
    );
    eprintln!("USER_LEFT {took:?} after SIGKILL (NODE_TTL_MS {NODE_TTL_MS})");
    let listed = alice.ok("LIST_ROOMS", json!({}), "ROOM_LIST").await;
    assert_eq!(listed["payload"]["rooms"][0]["memberCount"], 1);

    // Bob's client reconnects to the other node and resumes: the message
    // acknowledged before the death and the one sent while it was away.
    let mut bob = authed(&a, "bob").await;
    let resumed = bob
        .ok(
            "JOIN_ROOM",
            json!({"roomId": "general", "sinceSeq": 1, "epoch": epoch}),
            "ROOM_JOINED",
        )
        .await;
    assert_eq!(resumed["payload"]["recovered"], true);
    let missed: Vec<&str> = resumed["payload"]["messages"]
        .as_array()
        .expect("messages")
        .iter()
        .map(|m| m["content"].as_str().expect("content"))
        .collect();
    assert_eq!(missed, ["while away"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_stall_is_server_error_with_retry_after_and_drops_nobody() {
    let redis = RedisServer::start();
    let a = node(&redis).await;
    let b = node(&redis).await;
    let mut alice = authed(&a, "alice").await;
    let mut bob = authed(&b, "bob").await;
    alice.join("general").await;
    bob.join("general").await;
    next_of(&mut alice, "USER_JOINED").await;
    assert_eq!(http_get(a.addr, "/readyz").await.0, 200);

    redis.signal("STOP");
    let send = json!({"roomId": "general", "content": "maybe", "clientMessageId": "once"});
    let stalled = Instant::now();
    let refused = alice.request("SEND_MESSAGE", send.clone()).await;
    assert_eq!(refused["type"], "ERROR", "{refused}");
    assert_eq!(refused["payload"]["code"], "SERVER_ERROR");
    let retry = refused["payload"]["retryAfterMs"]
        .as_u64()
        .expect("retryAfterMs");
    assert!(retry >= 1, "{refused}");
    assert!(
        stalled.elapsed() >= Duration::from_millis(REDIS_TIMEOUT_MS - 50),
        "answered before the timeout: {:?}",
        stalled.elapsed()
    );
    let (status, body) = http_get(a.addr, "/readyz").await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(
        metric(&metrics(a.addr).await, "chatflow_redis_up"),
        Some(0.0)
    );
    assert!(metric(&metrics(a.addr).await, "chatflow_redis_errors_total").unwrap_or(0.0) >= 1.0);
    // A request that needs no Redis is still answered.
    alice.ok("PING", json!({}), "PONG").await;

    // Longer than the timeout, shorter than the lease: nobody is dropped.
    tokio::time::sleep(Duration::from_millis(REDIS_TIMEOUT_MS)).await;
    redis.signal("CONT");
    let deadline = Instant::now() + Duration::from_secs(10);
    while http_get(a.addr, "/readyz").await.0 != 200 {
        assert!(
            Instant::now() < deadline,
            "the node never became ready again"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // The retry with the same clientMessageId is stored once, whether or
    // not the stalled attempt was (then it reaches alice like any message,
    // and the retry is answered with it).
    let (first, seen) = reply_to(&mut alice, "SEND_MESSAGE", send.clone()).await;
    assert_eq!(first["type"], "NEW_MESSAGE", "{first}");
    let seq = first["payload"]["seq"].as_u64().expect("seq");
    let (again, seen_again) = reply_to(&mut alice, "SEND_MESSAGE", send).await;
    assert_eq!(again["payload"]["seq"], seq);
    let broadcasts: Vec<&Value> = seen.iter().chain(&seen_again).collect();
    assert!(broadcasts.len() <= 1, "{broadcasts:?}");
    for b in broadcasts {
        assert_eq!(
            (b["type"].as_str(), b["payload"]["seq"].as_u64()),
            (Some("NEW_MESSAGE"), Some(seq))
        );
    }
    // Bob got it once, it is stored once, and both connections are open.
    let got = messages(&mut bob, 1).await;
    assert_eq!(got, [(seq, "maybe".to_owned())]);
    bob.expect_silence(300).await;
    let history = bob
        .ok("GET_HISTORY", json!({"roomId": "general"}), "HISTORY")
        .await;
    let stored: Vec<&str> = history["payload"]["messages"]
        .as_array()
        .expect("messages")
        .iter()
        .map(|m| m["content"].as_str().expect("content"))
        .collect();
    assert_eq!(stored, ["maybe"], "stored exactly once");
    for client in [&mut alice, &mut bob] {
        client.ok("PING", json!({}), "PONG").await;
        if let Some(Event::Close(code)) = client.next_event(Duration::from_millis(10)).await {
            panic!("closed with {code:?}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_send_bucket_is_the_users_across_nodes() {
    let redis = RedisServer::start();
    let limit = |c: &mut chat_flow::config::Config| {
        c.rate_limit_messages = 3;
        c.rate_limit_window_ms = 60_000;
    };
    let a = node_with(&redis, limit).await;
    let b = node_with(&redis, limit).await;
    let mut on_a = authed(&a, "alice").await;
    let mut on_b = authed(&b, "alice").await;
    on_a.join("general").await;
    on_b.join("general").await;
    for n in 0..2 {
        let ack = send_text(&mut on_a, n).await;
        assert_eq!(ack["type"], "NEW_MESSAGE", "{ack}");
    }
    let third = send_text(&mut on_b, 2).await;
    assert_eq!(third["type"], "NEW_MESSAGE", "{third}");
    // Three from one user on two nodes: the fourth is over the user's one
    // bucket, whichever node it reaches.
    let refused = send_text(&mut on_b, 3).await;
    assert_eq!(
        refused["payload"]["code"], "RATE_LIMIT_EXCEEDED",
        "{refused}"
    );
    assert!(
        refused["payload"]["retryAfterMs"]
            .as_u64()
            .is_some_and(|ms| ms >= 1),
        "{refused}"
    );
    let refused = send_text(&mut on_a, 4).await;
    assert_eq!(
        refused["payload"]["code"], "RATE_LIMIT_EXCEEDED",
        "{refused}"
    );
}
