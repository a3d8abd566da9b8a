//! Monitoring: /metrics exposes the contract's metrics, and they follow
//! the traffic.

mod common;

use common::*;
use serde_json::json;

const CODES: [&str; 8] = [
    "UNAUTHORIZED",
    "INVALID_MESSAGE",
    "ROOM_NOT_FOUND",
    "NOT_A_MEMBER",
    "FORBIDDEN",
    "ROOM_EXISTS",
    "RATE_LIMIT_EXCEEDED",
    "SERVER_ERROR",
];

fn errors(code: &str) -> String {
    format!("chatflow_errors_total{{code=\"{code}\"}}")
}

fn value(text: &str, series: &str) -> f64 {
    metric(text, series).unwrap_or_else(|| panic!("{series} missing from:\n{text}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_are_exposed_in_prometheus_text_format() {
    let server = start().await;
    let (status, text) = raw_http(
        server.addr,
        "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(status, 200);
    let head = text.split("\r\n\r\n").next().unwrap().to_ascii_lowercase();
    assert!(
        head.contains("content-type: application/openmetrics-text")
            || head.contains("content-type: text/plain"),
        "{head}"
    );
    let body = metrics(server.addr).await;
    for (name, kind) in [
        ("chatflow_connections", "gauge"),
        ("chatflow_authenticated_connections", "gauge"),
        ("chatflow_rooms", "gauge"),
        ("chatflow_room_memberships", "gauge"),
        ("chatflow_messages_received", "counter"),
        ("chatflow_messages_delivered", "counter"),
        ("chatflow_errors", "counter"),
        ("chatflow_rate_limit_rejections", "counter"),
        ("chatflow_message_fanout_seconds", "histogram"),
        ("chatflow_outbound_queued_bytes", "gauge"),
        ("chatflow_connection_closes", "counter"),
        ("chatflow_slow_consumer_closes", "counter"),
    ] {
        assert!(
            body.contains(&format!("# TYPE {name} {kind}\n")),
            "{name} ({kind}) missing:\n{body}"
        );
    }
    // A fresh server.
    assert_eq!(value(&body, "chatflow_connections"), 0.0);
    assert_eq!(value(&body, "chatflow_authenticated_connections"), 0.0);
    assert_eq!(value(&body, "chatflow_rooms"), 1.0);
    assert_eq!(value(&body, "chatflow_room_memberships"), 0.0);
    assert_eq!(value(&body, "chatflow_messages_received_total"), 0.0);
    assert_eq!(value(&body, "chatflow_messages_delivered_total"), 0.0);
    assert_eq!(value(&body, "chatflow_rate_limit_rejections_total"), 0.0);
    assert_eq!(value(&body, "chatflow_message_fanout_seconds_count"), 0.0);
    assert!(body.contains("chatflow_message_fanout_seconds_bucket{le=\"+Inf\"} 0"));
    for code in CODES {
        assert_eq!(value(&body, &errors(code)), 0.0, "{code}");
    }
    assert_eq!(value(&body, "chatflow_outbound_queued_bytes"), 0.0);
    for reason in REASONS {
        assert_eq!(value(&body, &closes(reason)), 0.0, "{reason}");
    }
}

/// Every `reason` of `chatflow_connection_closes_total`.
const REASONS: [&str; 10] = [
    "client",
    "network",
    "idle_timeout",
    "protocol",
    "policy",
    "slow_consumer",
    "write_timeout",
    "memory_cap",
    "shutdown",
    "server_error",
];

fn closes(reason: &str) -> String {
    format!("chatflow_connection_closes_total{{reason=\"{reason}\"}}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_closes_are_counted_by_reason() {
    let mut server = start_with(|c| {
        c.auth_timeout_ms = 300;
        c.max_message_bytes = 1024;
    })
    .await;
    let addr = server.addr;
    // The client closes.
    let mut alice = Client::authed(addr, "alice").await;
    alice.close(1000).await;
    // The client goes away without a close frame.
    drop(Client::authed(addr, "bob").await);
    // The core's rules: no authentication in time (1008).
    let mut lurker = Client::connect(addr).await;
    lurker.expect_error("UNAUTHORIZED").await;
    lurker.expect_close(1008).await;
    // A message over the limit (1009).
    let mut big = Client::authed(addr, "big").await;
    big.send_text(&"x".repeat(2_000)).await;
    big.expect_close(1009).await;
    drop((lurker, big));
    for (reason, n) in [
        ("client", 1.0),
        ("network", 1.0),
        ("policy", 1.0),
        ("protocol", 1.0),
    ] {
        wait_metric(addr, &closes(reason), |v| v == n).await;
    }
    // The drain closes the rest (a client that never answers its close
    // keeps the server up meanwhile).
    let mut last = Client::authed(addr, "last").await;
    let _stubborn = RawWs::connect(addr).await;
    server.begin_shutdown();
    last.expect_close(1001).await;
    wait_metric(addr, &closes("shutdown"), |v| v == 1.0).await;
    let text = metrics(addr).await;
    for reason in [
        "idle_timeout",
        "slow_consumer",
        "write_timeout",
        "memory_cap",
        "server_error",
    ] {
        assert_eq!(value(&text, &closes(reason)), 0.0, "{reason}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_follow_the_traffic() {
    let server = start_with(|c| {
        c.rate_limit_messages = 2;
        c.rate_limit_window_ms = 60_000;
    })
    .await;
    let addr = server.addr;
    let mut frames_sent = 0.0;

    let mut alice1 = Client::authed(addr, "alice").await;
    let mut alice2 = Client::authed(addr, "alice").await;
    let mut bob = Client::authed(addr, "bob").await;
    let mut anonymous = Client::connect(addr).await;
    frames_sent += 3.0;
    alice1.join("general").await;
    alice2.join("general").await;
    bob.join("general").await;
    frames_sent += 3.0;
    alice1.expect_type("USER_JOINED").await;
    alice2.expect_type("USER_JOINED").await;
    wait_metric(addr, "chatflow_connections", |v| v == 4.0).await;
    wait_metric(addr, "chatflow_authenticated_connections", |v| v == 3.0).await;
    wait_metric(addr, "chatflow_room_memberships", |v| v == 3.0).await;

    alice1.say("general", "one").await;
    alice1.say("general", "two").await;
    frames_sent += 2.0;
    for c in [&mut alice2, &mut bob] {
        c.expect_type("NEW_MESSAGE").await;
        c.expect_type("NEW_MESSAGE").await;
    }
    // Two messages to three connections (acknowledgements included).
    wait_metric(addr, "chatflow_messages_delivered_total", |v| v == 6.0).await;
    wait_metric(addr, "chatflow_message_fanout_seconds_count", |v| v == 2.0).await;

    // Errors by code.
    alice1
        .fails(
            "SEND_MESSAGE",
            json!({"roomId": "general", "content": "three"}),
            "RATE_LIMIT_EXCEEDED",
        )
        .await;
    bob.fails("LEAVE_ROOM", json!({"roomId": "nope"}), "ROOM_NOT_FOUND")
        .await;
    bob.fails(
        "GET_HISTORY",
        json!({"roomId": "general", "limit": 0}),
        "INVALID_MESSAGE",
    )
    .await;
    bob.send_text("{").await;
    bob.expect_error("INVALID_MESSAGE").await;
    anonymous.fails("PING", json!({}), "UNAUTHORIZED").await;
    frames_sent += 5.0;
    wait_metric(addr, "chatflow_rate_limit_rejections_total", |v| v == 1.0).await;
    wait_metric(addr, &errors("RATE_LIMIT_EXCEEDED"), |v| v == 1.0).await;
    wait_metric(addr, &errors("ROOM_NOT_FOUND"), |v| v == 1.0).await;
    wait_metric(addr, &errors("INVALID_MESSAGE"), |v| v == 2.0).await;
    wait_metric(addr, &errors("UNAUTHORIZED"), |v| v == 1.0).await;
    let text = metrics(addr).await;
    for code in ["NOT_A_MEMBER", "FORBIDDEN", "ROOM_EXISTS", "SERVER_ERROR"] {
        assert_eq!(value(&text, &errors(code)), 0.0, "{code}");
    }
    // Every message received from a client is counted.
    let received = value(&text, "chatflow_messages_received_total");
    assert!(
        (3.0..=frames_sent).contains(&received),
        "messages received {received}, frames sent {frames_sent}"
    );
    assert_eq!(value(&text, "chatflow_messages_delivered_total"), 6.0);

    // Rooms.
    bob.ok("CREATE_ROOM", json!({"name": "new"}), "ROOM_CREATED")
        .await;
    wait_metric(addr, "chatflow_rooms", |v| v == 2.0).await;
    wait_metric(addr, "chatflow_room_memberships", |v| v == 4.0).await;

    // Gauges come back down as connections go.
    drop(alice1);
    drop(bob);
    wait_metric(addr, "chatflow_connections", |v| v == 2.0).await;
    wait_metric(addr, "chatflow_authenticated_connections", |v| v == 1.0).await;
    wait_metric(addr, "chatflow_room_memberships", |v| v == 1.0).await;
    drop(alice2);
    drop(anonymous);
    wait_metric(addr, "chatflow_connections", |v| v == 0.0).await;
    wait_metric(addr, "chatflow_authenticated_connections", |v| v == 0.0).await;
    wait_metric(addr, "chatflow_room_memberships", |v| v == 0.0).await;
    // Counters never go down.
    let text = metrics(addr).await;
    assert_eq!(value(&text, "chatflow_messages_delivered_total"), 6.0);
    assert_eq!(value(&text, &errors("INVALID_MESSAGE")), 2.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_fanout_histogram_observes_only_accepted_messages() {
    let server = start_with(|c| {
        c.rate_limit_messages = 2;
        c.rate_limit_window_ms = 60_000;
    })
    .await;
    let addr = server.addr;
    let mut alice = Client::authed(addr, "alice").await;
    // Not a member: refused (but charged), nothing accepted.
    alice
        .fails(
            "SEND_MESSAGE",
            json!({"roomId": "general", "content": "x"}),
            "NOT_A_MEMBER",
        )
        .await;
    alice.join("general").await;
    alice.say("general", "accepted").await;
    alice
        .fails(
            "SEND_MESSAGE",
            json!({"roomId": "general", "content": "y"}),
            "RATE_LIMIT_EXCEEDED",
        )
        .await;
    // Give the hub time to publish everything it will publish.
    wait_metric(addr, &errors("RATE_LIMIT_EXCEEDED"), |v| v == 1.0).await;
    let text = metrics(addr).await;
    assert_eq!(
        value(&text, "chatflow_message_fanout_seconds_count"),
        1.0,
        "one message was accepted and fanned out"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cores_other_counters_follow_the_traffic() {
    let server = start_with(|c| c.history_limit = 1).await;
    let addr = server.addr;
    let closes = "chatflow_closes_total{code=\"1008\"}";
    let body = metrics(addr).await;
    for name in [
        "chatflow_retries_deduplicated",
        "chatflow_history_evictions",
        "chatflow_closes",
        "chatflow_token_refreshes",
    ] {
        assert!(
            body.contains(&format!("# TYPE {name} counter\n")),
            "{name} missing:\n{body}"
        );
        if name != "chatflow_closes" {
            assert_eq!(value(&body, &format!("{name}_total")), 0.0, "{name}");
        }
    }
    assert_eq!(value(&body, closes), 0.0);

    let mut alice = Client::authed(addr, "alice").await;
    alice.join("general").await;
    // A resend of a clientMessageId is answered with the original.
    let send = json!({"roomId": "general", "content": "one", "clientMessageId": "k"});
    let first = alice.ok("SEND_MESSAGE", send.clone(), "NEW_MESSAGE").await;
    let again = alice.ok("SEND_MESSAGE", send, "NEW_MESSAGE").await;
    assert_eq!(again["payload"]["id"], first["payload"]["id"]);
    wait_metric(addr, "chatflow_retries_deduplicated_total", |v| v == 1.0).await;
    // A second message evicts the first from a history of one.
    alice.say("general", "two").await;
    wait_metric(addr, "chatflow_history_evictions_total", |v| v == 1.0).await;
    // Authenticating again on the same connection refreshes the token.
    alice.auth("alice").await;
    wait_metric(addr, "chatflow_token_refreshes_total", |v| v == 1.0).await;
    // The third failed authentication closes the connection (1008).
    let mut mallory = Client::connect(addr).await;
    for _ in 0..3 {
        mallory
            .fails("AUTHENTICATE", json!({"token": "nope"}), "UNAUTHORIZED")
            .await;
    }
    mallory.expect_close(1008).await;
    wait_metric(addr, closes, |v| v == 1.0).await;
}
