//! Encoding one broadcast: `MessageFrame::encode` (the message serialized
//! once, into its `NEW_MESSAGE` frame: all the server keeps of it),
//! `broadcast` (what each other member gets: a reference-counted clone) and
//! `ack` (the sender's copy with its `requestId`), with allocations counted.
//! Run:
//! `cargo bench -p chat-flow-bench --bench encode`.

use std::hint::black_box;

use chat_flow::protocol::MessageKind;
use chat_flow::protocol::server::{ChatMessage, MessageFrame};
use chat_flow_bench::alloc::CountingAlloc;
use criterion::{BatchSize, Criterion, criterion_group, criterion_main};

#[global_allocator]
static ALLOC: CountingAlloc = CountingAlloc::new();

fn message(seq: u64) -> ChatMessage {
    ChatMessage {
        id: format!("msg_18f3a2b4c5d6e7f8_{seq}"),
        seq,
        room_id: "general".into(),
        user_id: "user_123".into(),
        username: "alice".into(),
        content: "Hello everyone, this is a chat message of typical length. "
            .chars()
            .cycle()
            .take(150)
            .collect(),
        kind: MessageKind::Text,
        timestamp: "2026-11-25T21:30:02.120Z".into(),
        client_message_id: Some("c-42".into()),
    }
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("encode");
    g.bench_function("message_frame_encode", |b| {
        b.iter_batched(
            || message(17),
            |m| MessageFrame::encode(&black_box(&m).as_new()),
            BatchSize::SmallInput,
        )
    });
    let stored = MessageFrame::encode(&message(17).as_new());
    g.bench_function("broadcast", |b| b.iter(|| black_box(&stored).broadcast()));
    g.bench_function("ack", |b| {
        b.iter(|| black_box(&stored).ack(Some(black_box("m-42"))))
    });
    g.finish();

    let frame_len = stored.len();
    let count = |f: &dyn Fn()| {
        let before = ALLOC.count();
        f();
        ALLOC.count() - before
    };
    let m = message(18);
    let new = count(&|| drop(black_box(MessageFrame::encode(&m.as_new()))));
    let bcast = count(&|| drop(black_box(stored.broadcast())));
    let ack = count(&|| drop(black_box(stored.ack(Some("m-42")))));
    println!();
    println!("encode allocations (NEW_MESSAGE frame of {frame_len} bytes):");
    println!(
        "  MessageFrame::encode: {} allocs, {} bytes",
        new.allocs, new.bytes
    );
    println!("  broadcast:            {} allocs", bcast.allocs);
    println!(
        "  ack:                  {} allocs, {} bytes",
        ack.allocs, ack.bytes
    );
}

criterion_group!(benches, bench);
criterion_main!(benches);
