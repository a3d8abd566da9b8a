//! Parsing representative client messages: the production simd-json
//! [`Parser`] (in place, scratch buffers reused) against serde_json into an
//! equivalent typed struct with the same validation
//! ([`chat_flow_bench::serde_ref`]).
//!
//! Each iteration copies the message into a reused buffer first (simd-json
//! parses in place and leaves the buffer scrambled; in the server the frame's
//! own buffer is parsed); the copy of ≤ 300 bytes costs a few ns. Run:
//! `cargo bench -p chat-flow-bench --bench parse`.

use std::hint::black_box;

use chat_flow::auth::{TokenSpec, mint_hs256};
use chat_flow::config::DEV_JWT_SECRET;
use chat_flow::protocol::Parser;
use chat_flow::protocol::parse::ParseLimits;
use chat_flow_bench::serde_ref;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

/// A `SEND_MESSAGE` of exactly `bytes` bytes.
fn send_message(bytes: usize) -> String {
    let head = r#"{"type":"SEND_MESSAGE","payload":{"roomId":"general","content":""#;
    let tail = r#"","clientMessageId":"c-42"},"requestId":"m-42"}"#;
    let pad = bytes - head.len() - tail.len();
    let words = "Hello everyone, this is a chat message of typical length. ";
    let content: String = words.chars().cycle().take(pad).collect();
    let m = format!("{head}{content}{tail}");
    assert_eq!(m.len(), bytes);
    m
}

fn messages() -> Vec<(&'static str, String)> {
    let token = mint_hs256(
        DEV_JWT_SECRET.as_bytes(),
        &TokenSpec::new("user_123", 1_700_000_000, 3600),
    )
    .unwrap();
    vec![
        ("send_message_200B", send_message(200)),
        ("send_message_1000B", send_message(1000)),
        (
            "authenticate",
            format!(
                r#"{{"type":"AUTHENTICATE","payload":{{"token":"{token}","username":"alice"}},"requestId":"a1"}}"#
            ),
        ),
        (
            "join_room",
            r#"{"type":"JOIN_ROOM","payload":{"roomId":"general","sinceSeq":17,"epoch":"18f3a-1"},"requestId":"j1"}"#
                .to_owned(),
        ),
        (
            "typing_status",
            r#"{"type":"TYPING_STATUS","payload":{"roomId":"general","isTyping":true}}"#.to_owned(),
        ),
        ("ping", r#"{"type":"PING","requestId":"p1"}"#.to_owned()),
    ]
}

fn bench(c: &mut Criterion) {
    let limits = ParseLimits::default();
    for (name, msg) in messages() {
        // Both parsers agree on the result before anything is timed.
        let mut check = msg.clone().into_bytes();
        let simd = Parser::new(limits).parse(&mut check).expect("valid");
        assert_eq!(
            serde_ref::parse(msg.as_bytes(), limits.content_chars_max).expect("valid"),
            simd,
            "{name}"
        );

        let mut g = c.benchmark_group(format!("parse/{name}"));
        g.throughput(Throughput::Bytes(msg.len() as u64));
        let mut parser = Parser::new(limits);
        let mut buf: Vec<u8> = Vec::with_capacity(msg.len());
        g.bench_function("simd_json_parser_reused", |b| {
            b.iter(|| {
                buf.clear();
                buf.extend_from_slice(msg.as_bytes());
                black_box(parser.parse(black_box(&mut buf[..])).is_ok())
            })
        });
        g.bench_function("simd_json_parser_fresh", |b| {
            b.iter(|| {
                buf.clear();
                buf.extend_from_slice(msg.as_bytes());
                black_box(Parser::new(limits).parse(black_box(&mut buf[..])).is_ok())
            })
        });
        g.bench_function("serde_json_typed", |b| {
            b.iter(|| {
                black_box(
                    serde_ref::parse(black_box(msg.as_bytes()), limits.content_chars_max).is_ok(),
                )
            })
        });
        g.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
