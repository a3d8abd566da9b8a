//! JSON: deep nesting, huge numbers, duplicate keys, non-objects, thousands
//! of fields, escapes, invalid UTF-8 inside a string.

use serde_json::{Value, json};

use crate::common::*;
use crate::harness::*;

/// Sends `text` and expects `ERROR INVALID_MESSAGE` with `request_id` (or
/// none).
async fn invalid(c: &mut Client, what: &str, text: &str, request_id: Option<&str>) {
    c.send_text(text).await;
    let v = c.recv().await;
    assert_eq!(v["type"], "ERROR", "{what}: {v}");
    assert_eq!(v["payload"]["code"], "INVALID_MESSAGE", "{what}: {v}");
    assert_eq!(
        v.get("requestId").and_then(Value::as_str),
        request_id,
        "{what}: {v}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_bombs_get_invalid_message_and_the_connection_stays_usable() {
    // Raised so that 100,000 brackets and 10,000 fields fit in one message.
    let mut arena = arena(|c| c.max_message_bytes = 256 * 1024).await;
    let mut c = arena.attacker("json").await;
    c.join(ROOM).await;
    arena.bystanders_see(&user_joined("json")).await;

    // Deep nesting: simd-json stops at depth 1024 (malformed JSON, so no
    // requestId); below that an unknown field is ignored like any other.
    let nested = |depth: usize| {
        format!(
            r#"{{"type":"PING","requestId":"deep","x":{}{}}}"#,
            "[".repeat(depth),
            "]".repeat(depth)
        )
    };
    c.send_text(&nested(1_000)).await;
    assert_eq!(c.expect_type("PONG").await["requestId"], "deep");
    invalid(&mut c, "1,100 nested arrays", &nested(1_100), None).await;
    invalid(&mut c, "100,000 [", &"[".repeat(100_000), None).await;
    invalid(
        &mut c,
        "100,000 balanced [] in an unknown field",
        &nested(100_000),
        None,
    )
    .await;
    let deep_objects = format!(
        r#"{{"type":"PING","requestId":"deep","x":{}1{}}}"#,
        r#"{"a":"#.repeat(20_000),
        "}".repeat(20_000)
    );
    invalid(&mut c, "20,000 nested objects", &deep_objects, None).await;

    // Huge numbers: simd-json refuses integers beyond 64 bits and floats
    // beyond f64 as malformed JSON (so no requestId can be read); a number
    // in range but not a valid value is refused with the requestId.
    for (what, text, request_id) in [
        (
            "1e999999",
            r#"{"type":"GET_HISTORY","payload":{"roomId":"general","beforeSeq":1e999999},"requestId":"n"}"#,
            None,
        ),
        (
            "-1e999999",
            r#"{"type":"JOIN_ROOM","payload":{"roomId":"general","sinceSeq":-1e999999},"requestId":"n"}"#,
            None,
        ),
        (
            "20-digit limit",
            r#"{"type":"GET_HISTORY","payload":{"roomId":"general","limit":99999999999999999999},"requestId":"n"}"#,
            None,
        ),
        (
            "u64::MAX + 1 sinceSeq",
            r#"{"type":"JOIN_ROOM","payload":{"roomId":"general","sinceSeq":18446744073709551616},"requestId":"n"}"#,
            None,
        ),
        (
            "u64::MAX limit",
            r#"{"type":"GET_HISTORY","payload":{"roomId":"general","limit":18446744073709551615},"requestId":"n"}"#,
            Some("n"),
        ),
        (
            "fractional limit",
            r#"{"type":"GET_HISTORY","payload":{"roomId":"general","limit":1.5},"requestId":"n"}"#,
            Some("n"),
        ),
    ] {
        invalid(&mut c, what, text, request_id).await;
    }
    // u64::MAX is a well-formed seq: beyond the room's last, so nothing is
    // recovered and every retained message comes back.
    let v = c
        .ok(
            "JOIN_ROOM",
            json!({"roomId": ROOM, "sinceSeq": u64::MAX}),
            "ROOM_JOINED",
        )
        .await;
    assert_eq!(v["payload"]["recovered"], false, "{v}");
    let v = c
        .ok(
            "GET_HISTORY",
            json!({"roomId": ROOM, "beforeSeq": u64::MAX}),
            "HISTORY",
        )
        .await;
    assert_eq!(v["payload"]["hasMore"], false, "{v}");

    // Duplicate keys: the first one counts.
    c.send_text(r#"{"type":"PING","type":"LIST_ROOMS","requestId":"dup"}"#)
        .await;
    let v = c.recv().await;
    assert_eq!(
        (&v["type"], &v["requestId"]),
        (&json!("PONG"), &json!("dup")),
        "{v}"
    );
    c.send_text(r#"{"type":"SEND_MESSAGE","payload":{"roomId":"general","content":"first","content":"second"},"requestId":"dup2"}"#)
        .await;
    let v = c.expect_type("NEW_MESSAGE").await;
    assert_eq!(v["payload"]["content"], "first", "{v}");
    for by in [&mut arena.a, &mut arena.b] {
        assert_eq!(
            by.expect_type("NEW_MESSAGE").await["payload"]["content"],
            "first"
        );
    }

    // Not an object.
    invalid(
        &mut c,
        "top-level array",
        r#"[{"type":"PING","requestId":"arr"}]"#,
        None,
    )
    .await;
    invalid(&mut c, "top-level string", r#""PING""#, None).await;

    // 10,000 unknown fields, at the top and in the payload: ignored.
    let fields: String = (0..10_000).map(|i| format!(r#""f{i}":{i},"#)).collect();
    let text =
        format!(r#"{{{fields}"type":"PING","payload":{{{fields}"x":0}},"requestId":"fields"}}"#);
    assert!(text.len() < 256 * 1024);
    c.send_text(&text).await;
    let v = c.recv().await;
    assert_eq!(
        (&v["type"], &v["requestId"]),
        (&json!("PONG"), &json!("fields")),
        "{v}"
    );

    // Escapes.
    invalid(
        &mut c,
        "lone surrogate",
        r#"{"type":"SEND_MESSAGE","payload":{"roomId":"general","content":"\ud800"},"requestId":"s"}"#,
        None,
    )
    .await;
    invalid(
        &mut c,
        "only escaped newlines",
        &format!(
            r#"{{"type":"SEND_MESSAGE","payload":{{"roomId":"general","content":"{}"}},"requestId":"nl"}}"#,
            "\\n".repeat(3_000)
        ),
        Some("nl"),
    )
    .await;
    invalid(
        &mut c,
        "4001 escaped NULs",
        &format!(
            r#"{{"type":"SEND_MESSAGE","payload":{{"roomId":"general","content":"{}"}},"requestId":"nul"}}"#,
            "\\u0000".repeat(4_001)
        ),
        Some("nul"),
    )
    .await;
    // Within the rules, escapes are just characters: stored and delivered
    // exactly (the contract has no rule against control characters in
    // content).
    for content in [
        "\u{0}",
        &format!("x{}", "\n".repeat(3_999)),
        "\u{fffd}\u{10ffff}",
    ] {
        let sent = c.say(ROOM, content).await;
        assert_eq!(sent["payload"]["content"], content);
        for by in [&mut arena.a, &mut arena.b] {
            assert_eq!(
                by.expect_type("NEW_MESSAGE").await["payload"]["content"],
                content
            );
        }
    }
    // Still usable after all of it.
    c.ok("PING", json!({}), "PONG").await;

    // Invalid UTF-8 inside a string is a frame-level error: 1007.
    let mut raw = RawWs::connect(arena.addr).await;
    raw.text(&json!({"type": "AUTHENTICATE", "payload": {"token": token("raw")}}).to_string())
        .await;
    assert_eq!(raw.recv().await["type"], "AUTH_SUCCESS");
    raw.write_frame(
        true,
        op::TEXT,
        b"{\"type\":\"SEND_MESSAGE\",\"payload\":{\"roomId\":\"general\",\"content\":\"\xc3\x28\"}}",
    )
    .await;
    assert_eq!(close_of(&mut raw).await, (1007, "invalid UTF-8".to_owned()));

    drop(c);
    arena.bystanders_see(&user_left("json")).await;
    arena.assert_bystanders_fine().await;
}
