//! Transport rules of the contract: HTTP routes, the upgrade, origins,
//! connection caps, frame handling and message size.

mod common;

use std::net::{IpAddr, Ipv4Addr};

use chat_flow::frame;
use common::*;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthz_readyz_and_unknown_paths() {
    let server = start().await;
    let addr = server.addr;
    assert_eq!(http_get(addr, "/healthz").await.0, 200);
    assert_eq!(http_get(addr, "/readyz").await.0, 200);
    // `/` is the demo page (tests/demo_page.rs).
    for path in ["/nope", "/ws/x", "/wss", "/healthz/x", "/metricsx", "/demo"] {
        assert_eq!(http_get(addr, path).await.0, 404, "{path}");
    }
    server.shutdown().await.expect("clean shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_get_ws_without_upgrade_is_refused() {
    let server = start().await;
    let (status, _) = http_get(server.addr, "/ws").await;
    assert!(
        status == 426 || status == 400,
        "plain GET /ws must be 400 or 426, got {status}"
    );
    // The refusal is HTTP only: the server still upgrades proper requests.
    let mut c = Client::connect(server.addr).await;
    c.send(json!({"type": "PING"})).await;
    c.expect_error("UNAUTHORIZED").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_websocket_needs_no_subprotocol_and_any_origin_is_fine_by_default() {
    let server = start().await;
    let mut c = Client::try_connect(server.addr, &[("Origin", "https://anything.example")])
        .await
        .expect("any origin is allowed when ALLOWED_ORIGINS is unset");
    c.auth("alice").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allowed_origins_refuse_a_foreign_origin_with_403() {
    let server = start_with(|c| {
        c.allowed_origins = Some(vec![
            "https://chat.example.com".to_owned(),
            "http://localhost:5173".to_owned(),
        ]);
    })
    .await;
    let addr = server.addr;
    for foreign in [
        "https://evil.example",
        "https://chat.example.com.evil.example",
        "http://chat.example.com",
        "http://localhost:5174",
        "null",
    ] {
        match Client::try_connect(addr, &[("Origin", foreign)]).await {
            Err(ConnectError::Status(403)) => {}
            Err(e) => panic!("origin {foreign}: expected 403, got {e:?}"),
            Ok(_) => panic!("origin {foreign}: expected 403, got an upgrade"),
        }
    }
    for listed in ["https://chat.example.com", "http://localhost:5173"] {
        let mut c = Client::try_connect(addr, &[("Origin", listed)])
            .await
            .unwrap_or_else(|e| panic!("listed origin {listed} refused: {e:?}"));
        c.auth("alice").await;
    }
    // No Origin header (a non-browser client): allowed.
    let mut c = Client::try_connect(addr, &[]).await.expect("no origin");
    c.auth("bob").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_connections_refuses_with_503_and_frees_a_slot_on_close() {
    let server = start_with(|c| c.max_connections = 2).await;
    let addr = server.addr;
    // Unauthenticated connections count too.
    let mut a = Client::connect(addr).await;
    let _b = Client::connect(addr).await;
    match Client::try_connect(addr, &[]).await {
        Err(ConnectError::Status(503)) => {}
        other => panic!("third connection: expected 503, got {:?}", other.err()),
    }
    // From another address as well: the cap is global.
    match Client::try_connect_from(addr, IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2))).await {
        Err(ConnectError::Status(503)) => {}
        other => panic!("third connection: expected 503, got {:?}", other.err()),
    }
    // Plain HTTP requests do not count and are still served.
    assert_eq!(http_get(addr, "/healthz").await.0, 200);
    assert_eq!(http_get(addr, "/metrics").await.0, 200);

    a.close(1000).await;
    a.expect_close(1000).await;
    drop(a);
    connect_when_slot_frees(addr).await.auth("carol").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_connections_per_ip_refuses_with_503_per_peer_address() {
    let server = start_with(|c| c.max_connections_per_ip = 2).await;
    let addr = server.addr;
    let mut a = Client::connect(addr).await;
    let mut b = Client::connect(addr).await;
    match Client::try_connect(addr, &[]).await {
        Err(ConnectError::Status(503)) => {}
        other => panic!("third connection: expected 503, got {:?}", other.err()),
    }
    // Another peer address has its own allowance.
    let other_ip = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));
    let mut c = Client::try_connect_from(addr, other_ip)
        .await
        .expect("another address is not capped by 127.0.0.1's connections");
    c.auth("carol").await;
    // Both first connections still work.
    a.auth("alice").await;
    b.auth("bob").await;

    drop(b);
    connect_when_slot_frees(addr).await.auth("dave").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_at_the_size_limit_is_accepted() {
    let server = start_with(|c| c.max_message_bytes = 1024).await;
    let mut c = Client::connect(server.addr).await;
    let head = r#"{"type":"PING","requestId":"big","pad":""#;
    let text = format!("{head}{}\"}}", "a".repeat(1024 - head.len() - 2));
    assert_eq!(text.len(), 1024);
    c.send_text(&text).await;
    let v = c.expect_error("UNAUTHORIZED").await;
    assert_eq!(v["requestId"], "big");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_over_the_size_limit_closes_with_1009() {
    let server = start_with(|c| c.max_message_bytes = 1024).await;
    // One byte over.
    let mut c = Client::connect(server.addr).await;
    c.auth("alice").await;
    let head = r#"{"type":"PING","requestId":"big","pad":""#;
    let text = format!("{head}{}\"}}", "a".repeat(1025 - head.len() - 2));
    assert_eq!(text.len(), 1025);
    c.send_text(&text).await;
    c.expect_close(1009).await;
    // Far over (a frame larger than the limit itself).
    let mut c = Client::connect(server.addr).await;
    c.send_text(&format!("{head}{}\"}}", "a".repeat(100_000)))
        .await;
    c.expect_close(1009).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_over_the_size_limit_in_many_small_fragments_closes_with_1009() {
    let server = start_with(|c| c.max_message_bytes = 1024).await;
    let mut raw = RawWs::connect(server.addr).await;
    // Eleven fragments of 100 bytes: the eleventh takes the message past 1024.
    let mut bytes = encode_frame(false, op::TEXT, &[b' '; 100]);
    for _ in 0..10 {
        bytes.extend(encode_frame(false, op::CONTINUATION, &[b' '; 100]));
    }
    for chunk in bytes.chunks(106) {
        if !raw.try_write_frame_bytes(chunk).await {
            break;
        }
    }
    assert_eq!(raw.expect_close().await, Some(1009));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_still_sending_an_oversized_frame_reads_the_1009_close() {
    // The server stops reading at the frame header; if it then dropped the
    // socket with the payload unread, the kernel would answer with a reset
    // and the sender would get an error instead of the close frame (a
    // lingering close drains what keeps arriving until the peer closes).
    let server = start_with(|c| c.max_message_bytes = 1024).await;
    let mut raw = RawWs::connect(server.addr).await;
    const LEN: usize = 16 << 20;
    let mut header = Vec::new();
    frame::put_head(&mut header, true, op::TEXT, Some([1, 2, 3, 4]), LEN);
    assert!(raw.try_write_frame_bytes(&header).await);
    let chunk = vec![b'a'; 64 * 1024];
    for i in 0..LEN / chunk.len() {
        assert!(
            raw.try_write_frame_bytes(&chunk).await,
            "the server reset the connection after {} KiB of the payload",
            i * 64
        );
    }
    assert_eq!(raw.expect_close().await, Some(1009));
    assert_eq!(raw.read_frame().await, None, "EOF after the close frame");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fragmented_message_is_reassembled() {
    let server = start().await;
    let mut raw = RawWs::connect(server.addr).await;
    let text = r#"{"type":"PING","payload":{},"requestId":"fragmented-é"}"#.as_bytes();
    // Split inside the two-byte "é" as well: fragments need not be UTF-8 on
    // their own.
    let cut = text.iter().position(|&b| b == 0xc3).expect("é") + 1;
    raw.write_frame(false, op::TEXT, &text[..10]).await;
    raw.write_frame(false, op::CONTINUATION, &text[10..cut])
        .await;
    // A control frame may come between fragments.
    raw.write_frame(true, op::PING, b"mid").await;
    raw.write_frame(true, op::CONTINUATION, &text[cut..]).await;
    let pong = raw.read_frame().await.expect("pong");
    assert_eq!(
        (pong.opcode, pong.payload.as_slice()),
        (op::PONG, &b"mid"[..])
    );
    let v = raw.recv().await;
    assert_eq!(v["type"], "ERROR");
    assert_eq!(v["payload"]["code"], "UNAUTHORIZED");
    assert_eq!(v["requestId"], "fragmented-é");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fragmented_message_is_reassembled_after_authentication() {
    let server = start().await;
    let mut raw = RawWs::connect(server.addr).await;
    let auth =
        json!({"type": "AUTHENTICATE", "payload": {"token": token("alice")}, "requestId": "a"})
            .to_string();
    let bytes = auth.as_bytes();
    let mut chunks = bytes.chunks(7).peekable();
    let mut first = true;
    while let Some(chunk) = chunks.next() {
        let fin = chunks.peek().is_none();
        let opcode = if first { op::TEXT } else { op::CONTINUATION };
        raw.write_frame(fin, opcode, chunk).await;
        first = false;
    }
    let v = raw.recv().await;
    assert_eq!(v["type"], "AUTH_SUCCESS", "{v}");
    assert_eq!(v["requestId"], "a");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_binary_frame_gets_invalid_message_and_the_connection_stays_open() {
    let server = start().await;
    let mut c = Client::authed(server.addr, "alice").await;
    c.send_binary(br#"{"type":"PING","requestId":"b"}"#).await;
    let v = c.expect_error("INVALID_MESSAGE").await;
    assert!(v.get("requestId").is_none(), "{v}");
    c.ok("PING", json!({}), "PONG").await;
    // Before authentication too.
    let mut c = Client::connect(server.addr).await;
    c.send_binary(&[0, 1, 2]).await;
    c.expect_error("INVALID_MESSAGE").await;
    c.auth("bob").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_utf8_in_a_text_message_closes_with_1007() {
    let server = start().await;
    let mut raw = RawWs::connect(server.addr).await;
    raw.write_frame(true, op::TEXT, b"{\"type\":\"PING\",\"x\":\"\xff\xfe\"}")
        .await;
    assert_eq!(raw.expect_close().await, Some(1007));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unmasked_client_frame_closes_with_1002() {
    let server = start().await;
    // A masked PING is answered...
    let mut raw = RawWs::connect(server.addr).await;
    raw.text(r#"{"type":"PING","requestId":"m"}"#).await;
    assert_eq!(raw.recv().await["type"], "ERROR", "unauthenticated PING");
    // ...the same request without a mask closes the connection (RFC 6455 5.1).
    let text = br#"{"type":"PING","requestId":"u"}"#;
    let mut unmasked = Vec::new();
    frame::put_frame(&mut unmasked, true, op::TEXT, None, text);
    assert!(raw.try_write_frame_bytes(&unmasked).await);
    assert_eq!(raw.expect_close().await, Some(1002));
    // An unmasked control frame too.
    let mut raw = RawWs::connect(server.addr).await;
    let mut unmasked = Vec::new();
    frame::put_frame(&mut unmasked, true, op::PING, None, b"");
    assert!(raw.try_write_frame_bytes(&unmasked).await);
    assert_eq!(raw.expect_close().await, Some(1002));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_websocket_ping_is_answered_with_a_pong_carrying_its_payload() {
    let server = start().await;
    let mut raw = RawWs::connect(server.addr).await;
    raw.write_frame(true, op::PING, b"are you there").await;
    let pong = raw.read_frame().await.expect("pong");
    assert_eq!(pong.opcode, op::PONG);
    assert_eq!(pong.payload, b"are you there");
    assert!(pong.fin);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn control_frames_over_125_bytes_close_with_1002() {
    let server = start().await;
    // A close frame: code 1000 and a 124-byte reason (126 bytes in all).
    let mut close = 1000u16.to_be_bytes().to_vec();
    close.extend_from_slice(&[b'x'; 124]);
    let mut raw = RawWs::connect(server.addr).await;
    raw.write_frame(true, op::CLOSE, &close).await;
    assert_eq!(raw.expect_close().await, Some(1002));
    // An unsolicited pong of 126 bytes.
    let mut raw = RawWs::connect(server.addr).await;
    raw.write_frame(true, op::PONG, &[b'y'; 126]).await;
    assert_eq!(raw.expect_close().await, Some(1002));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_close_is_answered_and_the_connection_ends() {
    let server = start().await;
    let mut c = Client::authed(server.addr, "alice").await;
    c.close(1000).await;
    c.expect_close(1000).await;
    // The connection is gone from the server's count.
    wait_metric(server.addr, "chatflow_connections", |v| v == 0.0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_bad_connection_does_not_affect_another() {
    let server = start_with(|c| c.max_message_bytes = 1024).await;
    let mut good = Client::authed(server.addr, "alice").await;
    good.join("general").await;
    let mut bad = RawWs::connect(server.addr).await;
    bad.write_frame(true, op::TEXT, b"\xff").await;
    assert_eq!(bad.expect_close().await, Some(1007));
    let mut bad = Client::connect(server.addr).await;
    bad.send_text("{{{").await;
    bad.expect_error("INVALID_MESSAGE").await;
    bad.send_text(&"x".repeat(2000)).await;
    bad.expect_close(1009).await;
    good.say("general", "still here").await;
    good.expect_silence(100).await;
}

/// Frames a client sends right behind its upgrade request, before it has
/// read the answer, arrive with the handshake's bytes: they are served,
/// in order, like any others.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frames_sent_with_the_upgrade_request_are_served() {
    let server = start().await;
    let auth =
        json!({"type": "AUTHENTICATE", "payload": {"token": token("early")}, "requestId": "a"});
    let join = json!({"type": "JOIN_ROOM", "payload": {"roomId": "general"}, "requestId": "j"});
    let mut early = encode_frame(true, op::TEXT, auth.to_string().as_bytes());
    early.extend(encode_frame(true, op::TEXT, join.to_string().as_bytes()));
    let mut raw = RawWs::connect_with_early(server.addr, &early).await;
    let first = raw.recv().await;
    assert_eq!(
        (first["type"].as_str(), first["requestId"].as_str()),
        (Some("AUTH_SUCCESS"), Some("a")),
        "{first}"
    );
    let second = raw.recv().await;
    assert_eq!(
        (second["type"].as_str(), second["requestId"].as_str()),
        (Some("ROOM_JOINED"), Some("j")),
        "{second}"
    );
}
