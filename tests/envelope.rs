//! Envelope rules: parsing before authentication, `requestId` handling,
//! `null` as absent, unknown fields, field validation before room checks,
//! ordering, and errors that never close the connection.

mod common;

use common::*;
use serde_json::{Value, json};

/// The reply to `text` (sent raw) must be `ERROR INVALID_MESSAGE` with
/// `request_id` (or none).
async fn invalid(c: &mut Client, text: &str, request_id: Option<&str>) {
    c.send_text(text).await;
    let v = c.expect_error("INVALID_MESSAGE").await;
    match request_id {
        Some(id) => assert_eq!(v["requestId"], id, "for {text}: {v}"),
        None => assert!(v.get("requestId").is_none(), "for {text}: {v}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_messages_get_invalid_message_even_before_authentication() {
    let server = start().await;
    let mut c = Client::connect(server.addr).await;
    for text in [
        "",
        "not json",
        "{\"type\":",
        "{\"type\":\"PING\"}}",
        "[]",
        "[{\"type\":\"PING\"}]",
        "\"PING\"",
        "42",
        "null",
        "{}",
        "{\"type\":42}",
        "{\"type\":null}",
        "{\"payload\":{}}",
    ] {
        invalid(&mut c, text, None).await;
    }
    // Still open, still unauthenticated, and the errors did not count as
    // failed authentications.
    c.auth("alice").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_well_formed_request_before_authentication_is_unauthorized() {
    let server = start().await;
    let mut c = Client::connect(server.addr).await;
    for (kind, payload) in [
        ("PING", json!({})),
        ("LIST_ROOMS", json!({})),
        ("JOIN_ROOM", json!({"roomId": "general"})),
        ("LEAVE_ROOM", json!({"roomId": "general"})),
        ("CREATE_ROOM", json!({"name": "x"})),
        ("GET_HISTORY", json!({"roomId": "general"})),
        (
            "SEND_MESSAGE",
            json!({"roomId": "general", "content": "hi"}),
        ),
        (
            "TYPING_STATUS",
            json!({"roomId": "general", "isTyping": true}),
        ),
    ] {
        let v = c.fails(kind, payload, "UNAUTHORIZED").await;
        assert!(v["payload"]["message"].is_string());
    }
    // A malformed request before authentication is INVALID_MESSAGE, not
    // UNAUTHORIZED (parsing comes first), with its requestId.
    invalid(
        &mut c,
        r#"{"type":"JOIN_ROOM","payload":{"roomId":5},"requestId":"j"}"#,
        Some("j"),
    )
    .await;
    invalid(
        &mut c,
        r#"{"type":"SEND_MESSAGE","payload":{"roomId":"general"},"requestId":"s"}"#,
        Some("s"),
    )
    .await;
    c.auth("alice").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_type_is_invalid_message_with_its_request_id() {
    let server = start().await;
    let mut c = Client::authed(server.addr, "alice").await;
    invalid(&mut c, r#"{"type":"FOO","requestId":"r1"}"#, Some("r1")).await;
    invalid(&mut c, r#"{"type":"ping","requestId":"r2"}"#, Some("r2")).await;
    invalid(
        &mut c,
        r#"{"type":"AUTH_SUCCESS","requestId":"r3"}"#,
        Some("r3"),
    )
    .await;
    // Before authentication as well.
    let mut c = Client::connect(server.addr).await;
    invalid(&mut c, r#"{"type":"HELLO","requestId":"x"}"#, Some("x")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_id_that_is_not_a_short_string_is_invalid_and_not_echoed() {
    let server = start().await;
    let mut c = Client::authed(server.addr, "alice").await;
    let long = "x".repeat(129);
    for request_id in [
        json!(42),
        json!(1.5),
        json!(true),
        json!({"id": "a"}),
        json!(["a"]),
        json!(long),
    ] {
        let text = json!({"type": "PING", "requestId": request_id}).to_string();
        invalid(&mut c, &text, None).await;
    }
    // 128 characters (code points, here 256 bytes) is fine and echoed.
    let max = "é".repeat(128);
    c.send(json!({"type": "PING", "requestId": max})).await;
    let v = c.expect_type("PONG").await;
    assert_eq!(v["requestId"], max.as_str());
    // An empty string is a string.
    c.send(json!({"type": "PING", "requestId": ""})).await;
    let v = c.expect_type("PONG").await;
    assert_eq!(v["requestId"], "");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_id_is_echoed_on_success_and_on_error_and_omitted_when_absent() {
    let server = start().await;
    let mut c = Client::connect(server.addr).await;
    c.send(json!({"type": "PING", "requestId": "before"})).await;
    let v = c.expect_error("UNAUTHORIZED").await;
    assert_eq!(v["requestId"], "before");

    c.send(
        json!({"type": "AUTHENTICATE", "payload": {"token": token("alice")}, "requestId": "a1"}),
    )
    .await;
    let v = c.expect_type("AUTH_SUCCESS").await;
    assert_eq!(v["requestId"], "a1");

    c.send(json!({"type": "PING", "requestId": "p1"})).await;
    let v = c.expect_type("PONG").await;
    assert_eq!(v, json!({"type": "PONG", "payload": {}, "requestId": "p1"}));

    c.send(json!({"type": "PING"})).await;
    let v = c.expect_type("PONG").await;
    assert_eq!(v, json!({"type": "PONG", "payload": {}}));

    c.send(json!({"type": "LEAVE_ROOM", "payload": {"roomId": "general"}, "requestId": "l1"}))
        .await;
    let v = c.expect_error("NOT_A_MEMBER").await;
    assert_eq!(v["requestId"], "l1");

    c.send(json!({"type": "LEAVE_ROOM", "payload": {"roomId": "general"}}))
        .await;
    let v = c.expect_error("NOT_A_MEMBER").await;
    assert!(v.get("requestId").is_none(), "{v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn null_counts_as_absent() {
    let server = start().await;
    let mut c = Client::connect(server.addr).await;
    // payload null, requestId null: a request without payload and id.
    c.send_text(&format!(
        r#"{{"type":"AUTHENTICATE","payload":{{"token":"{}","username":null}},"requestId":null}}"#,
        token("alice")
    ))
    .await;
    let v = c.expect_type("AUTH_SUCCESS").await;
    assert!(v.get("requestId").is_none(), "{v}");
    assert_eq!(v["payload"]["username"], "alice");

    c.send_text(r#"{"type":"PING","payload":null,"requestId":null}"#)
        .await;
    let v = c.expect_type("PONG").await;
    assert!(v.get("requestId").is_none());

    let v = c
        .ok(
            "JOIN_ROOM",
            json!({"roomId": "general", "sinceSeq": null, "epoch": null}),
            "ROOM_JOINED",
        )
        .await;
    assert!(
        v["payload"].get("recovered").is_none(),
        "recovered must be absent without sinceSeq: {v}"
    );

    let v = c
        .ok(
            "SEND_MESSAGE",
            json!({"roomId": "general", "content": "hi", "type": null, "clientMessageId": null}),
            "NEW_MESSAGE",
        )
        .await;
    assert_eq!(v["payload"]["type"], "text");
    assert!(v["payload"].get("clientMessageId").is_none(), "{v}");

    let v = c
        .ok(
            "CREATE_ROOM",
            json!({"name": "N", "description": null, "type": null, "id": null}),
            "ROOM_CREATED",
        )
        .await;
    assert_eq!(v["payload"]["room"]["type"], "public");
    assert_eq!(v["payload"]["room"]["description"], "");

    let v = c
        .ok(
            "GET_HISTORY",
            json!({"roomId": "general", "beforeSeq": null, "limit": null}),
            "HISTORY",
        )
        .await;
    assert_eq!(v["payload"]["messages"].as_array().map(Vec::len), Some(1));

    // A required field sent as null is missing.
    c.fails("JOIN_ROOM", json!({"roomId": null}), "INVALID_MESSAGE")
        .await;
    c.fails(
        "TYPING_STATUS",
        json!({"roomId": "general", "isTyping": null}),
        "INVALID_MESSAGE",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_fields_are_ignored() {
    let server = start().await;
    let mut c = Client::connect(server.addr).await;
    c.send(json!({
        "type": "AUTHENTICATE",
        "payload": {"token": token("alice"), "extra": [1, 2, {"deep": null}]},
        "requestId": "a",
        "version": 2,
        "meta": {"x": "y"}
    }))
    .await;
    c.expect_type("AUTH_SUCCESS").await;
    c.send(json!({"type": "PING", "payload": {"x": 1}, "extra": true, "requestId": "p"}))
        .await;
    let v = c.expect_type("PONG").await;
    assert_eq!(v["requestId"], "p");
    let v = c
        .ok(
            "JOIN_ROOM",
            json!({"roomId": "general", "color": "blue"}),
            "ROOM_JOINED",
        )
        .await;
    assert_eq!(v["payload"]["room"]["id"], "general");
    let v = c
        .ok(
            "SEND_MESSAGE",
            json!({"roomId": "general", "content": "hi", "priority": 9}),
            "NEW_MESSAGE",
        )
        .await;
    assert!(v["payload"].get("priority").is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_types_and_missing_fields_are_invalid_message() {
    let server = start().await;
    let mut c = Client::authed(server.addr, "alice").await;
    c.join("general").await;
    let cases: Vec<(&str, Value)> = vec![
        ("JOIN_ROOM", json!({})),
        ("JOIN_ROOM", json!({"roomId": 5})),
        ("JOIN_ROOM", json!({"roomId": ""})),
        ("JOIN_ROOM", json!({"roomId": "general", "sinceSeq": "3"})),
        ("JOIN_ROOM", json!({"roomId": "general", "sinceSeq": -1})),
        ("JOIN_ROOM", json!({"roomId": "general", "sinceSeq": 1.5})),
        ("JOIN_ROOM", json!({"roomId": "general", "epoch": 7})),
        ("LEAVE_ROOM", json!({"roomId": ["general"]})),
        ("SEND_MESSAGE", json!({"roomId": "general"})),
        ("SEND_MESSAGE", json!({"roomId": "general", "content": 5})),
        ("SEND_MESSAGE", json!({"content": "hi"})),
        (
            "SEND_MESSAGE",
            json!({"roomId": "general", "content": "hi", "type": "shout"}),
        ),
        (
            "SEND_MESSAGE",
            json!({"roomId": "general", "content": "hi", "clientMessageId": 3}),
        ),
        (
            "SEND_MESSAGE",
            json!({"roomId": "general", "content": "hi", "clientMessageId": ""}),
        ),
        (
            "SEND_MESSAGE",
            json!({"roomId": "general", "content": "hi", "clientMessageId": "c".repeat(65)}),
        ),
        ("TYPING_STATUS", json!({"roomId": "general"})),
        (
            "TYPING_STATUS",
            json!({"roomId": "general", "isTyping": "yes"}),
        ),
        ("TYPING_STATUS", json!({"roomId": "general", "isTyping": 1})),
        ("GET_HISTORY", json!({"roomId": "general", "limit": 0})),
        ("GET_HISTORY", json!({"roomId": "general", "limit": 101})),
        ("GET_HISTORY", json!({"roomId": "general", "limit": "5"})),
        ("GET_HISTORY", json!({"roomId": "general", "beforeSeq": -1})),
        ("CREATE_ROOM", json!({})),
        ("CREATE_ROOM", json!({"name": 5})),
        ("AUTHENTICATE", json!({})),
        ("AUTHENTICATE", json!({"token": 5})),
    ];
    for (kind, payload) in cases {
        let v = c.request(kind, payload.clone()).await;
        assert_eq!(v["type"], "ERROR", "{kind} {payload}: {v}");
        assert_eq!(
            v["payload"]["code"], "INVALID_MESSAGE",
            "{kind} {payload}: {v}"
        );
    }
    // A payload that is not an object.
    for payload in [json!("x"), json!([]), json!(1), json!(true)] {
        c.fails("PING", payload, "INVALID_MESSAGE").await;
    }
    // Still open and still a member: nothing above had an effect.
    let v = c.say("general", "after all that").await;
    assert_eq!(v["payload"]["seq"], 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn field_validation_comes_before_room_and_membership_checks() {
    let server = start_with(|c| c.max_content_length = 10).await;
    let mut c = Client::authed(server.addr, "alice").await;
    // Not a member of general, and "nowhere" does not exist: still
    // INVALID_MESSAGE for bad fields.
    for room in ["general", "nowhere"] {
        c.fails(
            "SEND_MESSAGE",
            json!({"roomId": room, "content": "   "}),
            "INVALID_MESSAGE",
        )
        .await;
        c.fails(
            "SEND_MESSAGE",
            json!({"roomId": room, "content": "x".repeat(11)}),
            "INVALID_MESSAGE",
        )
        .await;
        c.fails(
            "GET_HISTORY",
            json!({"roomId": room, "limit": 1000}),
            "INVALID_MESSAGE",
        )
        .await;
        c.fails("TYPING_STATUS", json!({"roomId": room}), "INVALID_MESSAGE")
            .await;
        c.fails(
            "JOIN_ROOM",
            json!({"roomId": room, "sinceSeq": -5}),
            "INVALID_MESSAGE",
        )
        .await;
    }
    c.fails(
        "SEND_MESSAGE",
        json!({"roomId": "general", "content": "ok"}),
        "NOT_A_MEMBER",
    )
    .await;
    c.fails(
        "SEND_MESSAGE",
        json!({"roomId": "nowhere", "content": "ok"}),
        "ROOM_NOT_FOUND",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lengths_count_code_points_not_bytes() {
    let server = start_with(|c| c.max_content_length = 10).await;
    let mut c = Client::authed(server.addr, "alice").await;
    c.join("general").await;
    // 10 four-byte characters: 40 bytes, 10 code points.
    let v = c.say("general", &"😀".repeat(10)).await;
    assert_eq!(v["payload"]["content"], "😀".repeat(10));
    c.fails(
        "SEND_MESSAGE",
        json!({"roomId": "general", "content": "😀".repeat(11)}),
        "INVALID_MESSAGE",
    )
    .await;
    // Room names: 64 code points of two bytes each.
    let v = c
        .ok(
            "CREATE_ROOM",
            json!({"name": "é".repeat(64)}),
            "ROOM_CREATED",
        )
        .await;
    assert_eq!(v["payload"]["room"]["name"], "é".repeat(64));
    c.fails(
        "CREATE_ROOM",
        json!({"name": "é".repeat(65)}),
        "INVALID_MESSAGE",
    )
    .await;
    // clientMessageId: 64 code points.
    c.ok(
        "SEND_MESSAGE",
        json!({"roomId": "general", "content": "x", "clientMessageId": "ü".repeat(64)}),
        "NEW_MESSAGE",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_are_answered_in_the_order_they_were_sent() {
    let server = start().await;
    let mut c = Client::authed(server.addr, "alice").await;
    let mut expected = Vec::new();
    for i in 0..30 {
        let (frame, reply) = match i % 3 {
            0 => (
                json!({"type": "PING", "requestId": format!("q{i}")}),
                "PONG",
            ),
            1 => (
                json!({"type": "JOIN_ROOM", "payload": {"roomId": "general"}, "requestId": format!("q{i}")}),
                "ROOM_JOINED",
            ),
            _ => (
                json!({"type": "LEAVE_ROOM", "payload": {"roomId": "nowhere"}, "requestId": format!("q{i}")}),
                "ERROR",
            ),
        };
        c.send(frame).await;
        expected.push((format!("q{i}"), reply));
    }
    for (id, reply) in expected {
        let v = c.recv().await;
        assert_eq!(
            (v["requestId"].as_str(), v["type"].as_str()),
            (Some(id.as_str()), Some(reply))
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_error_code_has_its_shape() {
    // One test per code elsewhere; here the ERROR frame's exact shape.
    let server = start().await;
    let mut c = Client::authed(server.addr, "alice").await;
    let v = c
        .fails("LEAVE_ROOM", json!({"roomId": "nowhere"}), "ROOM_NOT_FOUND")
        .await;
    let payload = v["payload"].as_object().expect("payload object");
    let mut keys: Vec<&str> = payload.keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(keys, ["code", "message"]);
    let mut top: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
    top.sort_unstable();
    assert_eq!(top, ["payload", "requestId", "type"]);
}
