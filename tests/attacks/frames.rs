//! Frames: oversized, fragmented without end, invalid UTF-8, binary,
//! control-frame abuse, broken fragmentation, reserved bits and opcodes,
//! unmasked frames.

use std::net::SocketAddr;

use chat_flow::frame::{self, OpCode};
use serde_json::{Value, json};

use crate::common::*;
use crate::harness::*;

/// Writes `bytes` on a fresh raw WebSocket (tolerating a server that closes
/// early) and returns the close frame's code and reason.
async fn closed_by(addr: SocketAddr, bytes: &[u8]) -> (u16, String) {
    let mut raw = RawWs::connect(addr).await;
    raw.try_write_frame_bytes(bytes).await;
    close_of(&mut raw).await
}

/// Masked client frames, back to back.
fn frames(list: &[(bool, OpCode, &[u8])]) -> Vec<u8> {
    list.iter()
        .flat_map(|(fin, opcode, payload)| encode_frame(*fin, *opcode, payload))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frames_over_max_message_bytes_close_with_1009() {
    let mut arena = arena(|_| {}).await; // MAX_MESSAGE_BYTES 65536
    let addr = arena.addr;
    let too_big = (1009, "message too big".to_owned());
    // One frame, one byte over.
    let one = frames(&[(true, op::TEXT, &[b' '; 65_537])]);
    assert_eq!(closed_by(addr, &one).await, too_big);
    // Fragments, each small, together over.
    let chunk = [b' '; 16_384];
    let mut many = encode_frame(false, op::TEXT, &chunk);
    for _ in 0..4 {
        many.extend(encode_frame(false, op::CONTINUATION, &chunk));
    }
    assert_eq!(closed_by(addr, &many).await, too_big);
    // A header announcing 2^62 bytes: refused at the header, nothing reserved.
    let mut bomb = Vec::new();
    frame::put_head(&mut bomb, true, op::TEXT, Some([1, 2, 3, 4]), 1 << 62);
    assert_eq!(closed_by(addr, &bomb).await, too_big);
    arena.assert_bystanders_fine().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frames_a_flood_of_empty_continuations_is_capped_with_1009() {
    let mut arena = arena(|_| {}).await;
    let addr = arena.addr;
    // MAX_MESSAGE_BYTES / FRAGMENT_BYTES_MIN fragments per message.
    let cap = 65_536 / chat_flow::server::message_reader::FRAGMENT_BYTES_MIN;
    let message = br#"{"type":"PING","requestId":"many-fragments"}"#;
    let fragmented = |fragments: usize| {
        let mut bytes = encode_frame(false, op::TEXT, message);
        for _ in 1..fragments - 1 {
            bytes.extend(encode_frame(false, op::CONTINUATION, b""));
        }
        bytes.extend(encode_frame(true, op::CONTINUATION, b""));
        bytes
    };
    // At the cap: an ordinary message.
    let mut raw = RawWs::connect(addr).await;
    raw.try_write_frame_bytes(&fragmented(cap)).await;
    let v = raw.recv().await;
    assert_eq!(
        (&v["payload"]["code"], &v["requestId"]),
        (&json!("UNAUTHORIZED"), &json!("many-fragments"))
    );
    // One past it.
    assert_eq!(
        closed_by(addr, &fragmented(cap + 1)).await,
        (1009, "too many fragments".to_owned())
    );
    // A flood of 100,000 empty continuations that never ends the message.
    let mut flood = encode_frame(false, op::TEXT, b"{");
    for _ in 0..100_000 {
        flood.extend(encode_frame(false, op::CONTINUATION, b""));
    }
    assert_eq!(
        closed_by(addr, &flood).await,
        (1009, "too many fragments".to_owned())
    );
    arena.assert_bystanders_fine().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frames_invalid_utf8_closes_with_1007() {
    let mut arena = arena(|_| {}).await;
    let addr = arena.addr;
    let invalid = (1007, "invalid UTF-8".to_owned());
    for bytes in [
        &b"{\"type\":\"PING\",\"x\":\"\xff\"}"[..],
        b"{\"type\":\"PING\",\"x\":\"\xc0\xaf\"}", // overlong '/'
        b"{\"type\":\"PING\",\"x\":\"\xed\xa0\x80\"}", // UTF-8-encoded surrogate
        b"{\"type\":\"PING\",\"x\":\"\xf4\x90\x80\x80\"}", // beyond U+10FFFF
        b"{\"type\":\"PING\",\"x\":\"\xe2\x82\"}", // truncated
    ] {
        assert_eq!(
            closed_by(addr, &frames(&[(true, op::TEXT, bytes)])).await,
            invalid
        );
    }
    // Fragments that are each fine but whose whole is not.
    let split = frames(&[
        (false, op::TEXT, b"{\"type\":\"PING\",\"x\":\"\xc3"),
        (true, op::CONTINUATION, b"(\"}"),
    ]);
    assert_eq!(closed_by(addr, &split).await, invalid);
    arena.assert_bystanders_fine().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frames_binary_gets_invalid_message_and_the_connection_stays_open() {
    let mut arena = arena(|_| {}).await;
    let mut c = arena.attacker("binary").await;
    for payload in [
        &b""[..],
        b"\x00\xff",
        br#"{"type":"PING","requestId":"b"}"#,
        &[0u8; 60_000],
    ] {
        c.send_binary(payload).await;
        let v = c.expect_error("INVALID_MESSAGE").await;
        assert!(v.get("requestId").is_none(), "{v}");
    }
    c.ok("PING", json!({}), "PONG").await;
    arena.assert_bystanders_fine().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frames_control_frame_abuse_closes_with_1002() {
    let mut arena = arena(|_| {}).await;
    let addr = arena.addr;
    let protocol = |reason: &str| (1002, reason.to_owned());
    for (what, bytes, expected) in [
        (
            "ping of 126 bytes",
            frames(&[(true, op::PING, &[b'p'; 126])]),
            protocol("control frame too long"),
        ),
        (
            "fragmented ping",
            frames(&[(false, op::PING, b"a"), (true, op::CONTINUATION, b"b")]),
            protocol("fragmented control frame"),
        ),
        (
            "pong of 126 bytes",
            frames(&[(true, op::PONG, &[b'p'; 126])]),
            protocol("control frame too long"),
        ),
        (
            "close of 126 bytes",
            frames(&[(true, op::CLOSE, &[0x03, 0xe8].repeat(63))]),
            protocol("control frame too long"),
        ),
        (
            "close with a one-byte payload",
            frames(&[(true, op::CLOSE, b"\x03")]),
            protocol("invalid close frame"),
        ),
        (
            "close with a reserved code (1005)",
            frames(&[(true, op::CLOSE, &1005u16.to_be_bytes())]),
            protocol("invalid close code"),
        ),
        (
            "close with an invalid UTF-8 reason",
            frames(&[(true, op::CLOSE, b"\x03\xe8\xff")]),
            (1007, "invalid close reason".to_owned()),
        ),
    ] {
        assert_eq!(closed_by(addr, &bytes).await, expected, "{what}");
    }
    // A ping flood from a client that never reads: the connection stays up
    // and keeps answering.
    let mut raw = RawWs::connect(addr).await;
    let pings: Vec<u8> = (0..20_000)
        .flat_map(|_| encode_frame(true, op::PING, &[b'x'; 125]))
        .collect();
    raw.try_write_frame_bytes(&pings).await;
    raw.text(r#"{"type":"PING","requestId":"after-pings"}"#)
        .await;
    let mut pongs = 0;
    let v = loop {
        let frame = raw.read_frame().await.expect("not closed");
        match frame.opcode {
            op::PONG => pongs += 1,
            op::TEXT => break serde_json::from_slice::<Value>(&frame.payload).expect("JSON"),
            _ => panic!("unexpected {frame:?}"),
        }
    };
    assert_eq!(v["requestId"], "after-pings", "{v}");
    // How many pongs get through depends on the socket buffers; the cap on
    // pending ones is unit-tested (outbox::pending_pongs_are_capped). What
    // matters here: pings are still answered and the connection still serves.
    assert!(pongs >= 1, "no pong at all");
    arena.assert_bystanders_fine().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frames_broken_fragmentation_closes_with_1002() {
    let mut arena = arena(|_| {}).await;
    let addr = arena.addr;
    for (what, bytes, reason) in [
        (
            "continuation with no message started",
            frames(&[(true, op::CONTINUATION, br#"{"type":"PING"}"#)]),
            "unexpected continuation frame",
        ),
        (
            "a new text frame inside a fragmented message",
            frames(&[
                (false, op::TEXT, b"{\"type\":"),
                (true, op::TEXT, br#"{"type":"PING"}"#),
            ]),
            "expected a continuation frame",
        ),
        (
            "a new fragmented binary frame inside a fragmented text message",
            frames(&[(false, op::TEXT, b"{"), (false, op::BINARY, b"x")]),
            "expected a continuation frame",
        ),
    ] {
        assert_eq!(
            closed_by(addr, &bytes).await,
            (1002, reason.to_owned()),
            "{what}"
        );
    }
    arena.assert_bystanders_fine().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frames_reserved_bits_and_opcodes_close_with_1002() {
    let mut arena = arena(|_| {}).await;
    let addr = arena.addr;
    let ping = br#"{"type":"PING"}"#;
    for rsv in [0x40u8, 0x20, 0x10] {
        // The codec writes no reserved bit: set one in a valid frame.
        let mut bytes = encode_frame(true, op::TEXT, ping);
        bytes[0] |= rsv;
        assert_eq!(
            closed_by(addr, &bytes).await,
            (1002, "reserved bits set".to_owned()),
            "RSV bit {rsv:#x}"
        );
    }
    for opcode in (0x3u8..=0x7).chain(0xB..=0xF) {
        // No `OpCode` is unknown: put the opcode in a valid text frame's
        // first byte (FIN stays set).
        let mut bytes = encode_frame(true, op::TEXT, ping);
        bytes[0] = (bytes[0] & 0xf0) | opcode;
        assert_eq!(
            closed_by(addr, &bytes).await,
            (1002, "unknown opcode".to_owned()),
            "opcode {opcode:#x}"
        );
    }
    arena.assert_bystanders_fine().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frames_unmasked_client_frames_close_with_1002() {
    // RFC 6455 5.1: a client must mask every frame; the server closes on
    // one that is not (data or control), and reads nothing after it.
    let mut arena = arena(|_| {}).await;
    let unmasked = |opcode: OpCode, payload: &[u8]| {
        let mut bytes = Vec::new();
        frame::put_frame(&mut bytes, true, opcode, None, payload);
        bytes
    };
    for first in [
        unmasked(op::TEXT, br#"{"type":"PING","requestId":"unmasked"}"#),
        unmasked(op::PING, b"hello"),
    ] {
        let mut bytes = first;
        bytes.extend(encode_frame(
            true,
            op::TEXT,
            br#"{"type":"PING","requestId":"after"}"#,
        ));
        let mut raw = RawWs::connect(arena.addr).await;
        assert!(raw.try_write_frame_bytes(&bytes).await);
        let frame = raw.read_frame().await.expect("a close frame, not EOF");
        assert_eq!(frame.opcode, op::CLOSE, "nothing answered first: {frame:?}");
        assert_eq!(frame.close_code(), Some(1002));
        assert_eq!(&frame.payload[2..], b"unmasked frame");
    }
    arena.assert_bystanders_fine().await;
}
