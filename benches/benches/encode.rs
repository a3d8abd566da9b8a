//! Encoding one broadcast: `StoredMessage::new` (the message serialized
//! once, and its `NEW_MESSAGE` frame built), `broadcast_frame` (what each
//! other member gets: a reference-counted clone) and `ack_frame` (the
//! sender's copy with its `requestId`), with allocations counted. Run:
//! `cargo bench -p chat-flow-bench --bench encode`.

use std::hint::black_box;

use chat_flow::protocol::MessageKind;
use chat_flow::protocol::server::{ChatMessage, StoredMessage};
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
    g.bench_function("stored_message_new", |b| {
        b.iter_batched(
            || message(17),
            |m| StoredMessage::new(black_box(m)),
            BatchSize::SmallInput,
        )
    });
    let stored = StoredMessage::new(message(17));
    g.bench_function("broadcast_frame", |b| {
        b.iter(|| black_box(&stored).broadcast_frame())
    });
    g.bench_function("ack_frame", |b| {
        b.iter(|| black_box(&stored).ack_frame(Some(black_box("m-42"))))
    });
    g.finish();

    let frame_len = stored.broadcast_frame().len();
    let count = |f: &dyn Fn()| {
        let before = ALLOC.count();
        f();
        ALLOC.count() - before
    };
    let m = message(18);
    let new = count(&|| drop(black_box(StoredMessage::new(m.clone()))));
    let clone_only = count(&|| drop(black_box(m.clone())));
    let bcast = count(&|| drop(black_box(stored.broadcast_frame())));
    let ack = count(&|| drop(black_box(stored.ack_frame(Some("m-42")))));
    println!();
    println!("encode allocations (NEW_MESSAGE frame of {frame_len} bytes):");
    println!(
        "  StoredMessage::new: {} allocs, {} bytes (excluding the ChatMessage itself)",
        new.allocs - clone_only.allocs,
        new.bytes - clone_only.bytes
    );
    println!("  broadcast_frame:    {} allocs", bcast.allocs);
    println!(
        "  ack_frame:          {} allocs, {} bytes",
        ack.allocs, ack.bytes
    );
}

criterion_group!(benches, bench);
criterion_main!(benches);
