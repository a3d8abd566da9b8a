//! The sans-IO core on its in-process store (`store::local::Local`, the
//! server without `REDIS_URL`) handling a stream of `SEND_MESSAGE`s into a
//! room of N members (N = 10, 100, 1000): operations (messages) per second
//! through `handle` + draining `poll_output` (one `Output::Frame` per member;
//! the store's operation answered on the way), and allocations per message,
//! counted by a wrapper around the system allocator.
//!
//! The request is built outside the timed region (in the server the parser
//! builds it on the connection's task); what is timed and counted is the
//! hub task's share: charging the bucket, storing and encoding the message
//! once, and one output per recipient.
//!
//! It also measures what one stored message costs in memory: a room of
//! `HISTORY_LIMIT` 1000 is filled with 200-character messages and the live
//! heap's growth is divided by the number of messages. Allocation sizes do
//! not depend on the optimization level, so the figure is the same from
//! `cargo test -p chat-flow-bench --bench core` (a debug build). Run:
//! `cargo bench -p chat-flow-bench --bench core`.

use std::hint::black_box;

use chat_flow::auth::VerifiedToken;
use chat_flow::core::{ConnId, DefaultRoom, Inbound, Instance, Limits, Output, Timestamp};
use chat_flow::protocol::{ClientMessage, ClientRequest, JoinRoom, MessageKind, SendMessage};
use chat_flow::store::local::Local;
use chat_flow_bench::alloc::CountingAlloc;
use criterion::{BatchSize, BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};

#[global_allocator]
static ALLOC: CountingAlloc = CountingAlloc::new();

const NOW: Timestamp = Timestamp(1_700_000_000_000);
const SIZES: [u64; 3] = [10, 100, 1000];

fn limits() -> Limits {
    Limits {
        rate_limit_messages: 1_000_000_000_000,
        rate_limit_requests: 1_000_000_000_000,
        ..Limits::default()
    }
}

/// The history this many messages deep, for the memory measurement.
const STORED: u64 = 1_000;
/// Characters of content per message in the memory measurement.
const STORED_CONTENT_CHARS: usize = 200;

fn drain(hub: &mut Local) -> usize {
    let mut n = 0;
    while let Some(o) = hub.poll_output() {
        if let Output::Frame { frame, .. } = o {
            black_box(frame);
        }
        n += 1;
    }
    n
}

/// A hub with `members` authenticated connections (one user each) joined to
/// `general`; connection 0 is the sender.
fn room_of(members: u64) -> Local {
    room_with(members, limits())
}

/// [`room_of`] with these limits.
fn room_with(members: u64, limits: Limits) -> Local {
    let mut hub = Local::new(
        limits,
        &[DefaultRoom {
            id: "general".into(),
            name: "General".into(),
        }],
        Instance {
            number: 0x5eed,
            secret: 0x5eed,
        },
        NOW,
    );
    for i in 0..members {
        let conn = ConnId(i);
        hub.connect(NOW, conn);
        let token = VerifiedToken {
            user_id: format!("user_{i}"),
            username: Some(format!("user {i}")),
            rooms: Vec::new(),
            expires_at_unix_ms: NOW.0 + 86_400_000,
        };
        hub.handle(
            NOW,
            conn,
            Inbound::Authenticate {
                request_id: Some("a".into()),
                token: Ok(token),
                username: None,
            },
        );
        hub.handle(
            NOW,
            conn,
            Inbound::Request(ClientMessage {
                request_id: Some("j".into()),
                request: ClientRequest::JoinRoom(JoinRoom {
                    room_id: "general".into(),
                    since_seq: None,
                    epoch: None,
                }),
            }),
        );
        drain(&mut hub);
    }
    hub
}

/// A 200-byte-class `SEND_MESSAGE` as the parser would hand it over
/// (150 characters of content, a clientMessageId and a requestId).
fn send(i: u64) -> Inbound {
    Inbound::Request(ClientMessage {
        request_id: Some(format!("m-{i}")),
        request: ClientRequest::SendMessage(SendMessage {
            room_id: "general".into(),
            content: "Hello everyone, this is a chat message of typical length. "
                .chars()
                .cycle()
                .take(150)
                .collect(),
            kind: MessageKind::Text,
            client_message_id: Some(format!("c-{i}")),
        }),
    })
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("core/send_message");
    for members in SIZES {
        let mut hub = room_of(members);
        // Fill the history so that every message also evicts one.
        for i in 0..200 {
            hub.handle(NOW, ConnId(0), send(i));
            drain(&mut hub);
        }
        let mut i = 1_000u64;
        g.throughput(Throughput::Elements(1));
        g.bench_with_input(BenchmarkId::new("members", members), &members, |b, &m| {
            b.iter_batched(
                || {
                    i += 1;
                    send(i)
                },
                |msg| {
                    hub.handle(NOW, ConnId(0), msg);
                    let n = drain(&mut hub);
                    debug_assert_eq!(n as u64, m);
                    n
                },
                BatchSize::SmallInput,
            )
        });
    }
    g.finish();
}

/// Allocations per message (and per delivery) in `handle` + drain, counted
/// over 10,000 messages after a warm-up.
fn allocations(_: &mut Criterion) {
    println!();
    println!("core/send_message allocations (handle + drain, request built outside):");
    for members in SIZES {
        let mut hub = room_of(members);
        for i in 0..1_000 {
            hub.handle(NOW, ConnId(0), send(i));
            drain(&mut hub);
        }
        const N: u64 = 10_000;
        let mut total = chat_flow_bench::alloc::AllocCount::default();
        let mut outputs = 0;
        let started = std::time::Instant::now();
        for i in 0..N {
            let msg = send(1_000_000 + i);
            let before = ALLOC.count();
            hub.handle(NOW, ConnId(0), msg);
            outputs += drain(&mut hub);
            let d = ALLOC.count() - before;
            total.allocs += d.allocs;
            total.reallocs += d.reallocs;
            total.frees += d.frees;
            total.bytes += d.bytes;
        }
        let elapsed = started.elapsed();
        println!(
            "  members={members:>5}: {:.2} allocs/msg, {:.2} reallocs/msg, {:.0} bytes/msg, \
             {:.4} allocs/delivery, {} outputs/msg; {:.0} msgs/s, {:.0} deliveries/s (this loop, incl. request construction)",
            total.allocs as f64 / N as f64,
            total.reallocs as f64 / N as f64,
            total.bytes as f64 / N as f64,
            total.allocs as f64 / outputs as f64,
            outputs as u64 / N,
            N as f64 / elapsed.as_secs_f64(),
            outputs as f64 / elapsed.as_secs_f64(),
        );
    }
    let before = ALLOC.count();
    black_box(send(7));
    let d = ALLOC.count() - before;
    println!(
        "  (building one request, done by the parser in the server: {} allocs, {} bytes)",
        d.allocs, d.bytes
    );
}

/// Bytes of heap one stored message holds: a room of `HISTORY_LIMIT`
/// [`STORED`] with one member is filled with [`STORED`] messages of
/// [`STORED_CONTENT_CHARS`] characters (each with a `clientMessageId`, as the
/// library client sends them), and the growth of the live heap (allocated
/// minus freed, outputs drained and dropped) is divided by [`STORED`]. Ring
/// and index growth is included: it is what a full history costs.
fn history_memory(_: &mut Criterion) {
    let mut hub = room_with(
        1,
        Limits {
            history_limit: STORED as usize,
            ..limits()
        },
    );
    let content: String = "Hello everyone, this is a chat message of typical length. "
        .chars()
        .cycle()
        .take(STORED_CONTENT_CHARS)
        .collect();
    let request = |i: u64| {
        Inbound::Request(ClientMessage {
            request_id: Some(format!("m-{i}")),
            request: ClientRequest::SendMessage(SendMessage {
                room_id: "general".into(),
                content: content.clone(),
                kind: MessageKind::Text,
                client_message_id: Some(format!("c-{i}")),
            }),
        })
    };
    let mut frame_len = 0;
    let before = ALLOC.count();
    for i in 0..STORED {
        // The request is built here as the parser would; it is consumed
        // by `handle` and freed, so it does not count towards the growth.
        hub.handle(NOW, ConnId(0), request(i));
        while let Some(o) = hub.poll_output() {
            if let Output::Frame { frame, .. } = o {
                frame_len = frame.len();
            }
        }
    }
    let d = ALLOC.count() - before;
    let per_message = (d.bytes - d.freed) as f64 / STORED as f64;
    println!();
    println!(
        "history memory: {per_message:.0} bytes of heap per stored message \
         ({STORED} messages of {STORED_CONTENT_CHARS} characters, NEW_MESSAGE frame of {frame_len} bytes)"
    );
    black_box(&hub);
}

criterion_group!(benches, history_memory, bench, allocations);
criterion_main!(benches);
