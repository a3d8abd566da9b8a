//! Readers that never read while they ask for large replies: the server's
//! memory stays bounded in bytes per connection (`OUTBOUND_QUEUE_BYTES`),
//! in time (`WRITE_TIMEOUT_MS`) and in total (`OUTBOUND_MEMORY_MAX_BYTES`).
//!
//! The large replies are the issue's: a room whose 100 stored messages are
//! 4,000 control characters each, which JSON escapes to six bytes apiece, so
//! that every `ROOM_JOINED` for it is about 2.4 MB.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use chat_flow::config::Config;
use serde_json::json;
use tokio::time::Instant;

use crate::common::*;
use crate::harness::*;

/// Messages stored in the archive room (the default `HISTORY_LIMIT`).
const STORED: u64 = 100;

/// A room filled with [`STORED`] messages whose JSON is ~24 KB each; the
/// archivist who filled it stays connected. Returns the room's id.
async fn archive(arena: &Arena) -> (String, Client) {
    let mut archivist = arena.attacker("archivist").await;
    let created = archivist
        .ok("CREATE_ROOM", json!({"name": "archive"}), "ROOM_CREATED")
        .await;
    let room = created["payload"]["room"]["id"]
        .as_str()
        .expect("room id")
        .to_owned();
    let content = "\u{1}".repeat(4_000);
    for _ in 0..STORED {
        archivist
            .ok(
                "SEND_MESSAGE",
                json!({"roomId": room, "content": content}),
                "NEW_MESSAGE",
            )
            .await;
    }
    (room, archivist)
}

/// Limits that let the archive be filled at once.
fn archive_config(c: &mut Config) {
    c.rate_limit_messages = 100_000;
    c.rate_limit_requests = 100_000;
}

/// A raw client with a small receive buffer, authenticated as `user`,
/// that reads nothing from now on.
async fn never_reading(arena: &Arena, user: &str) -> RawWs {
    let mut raw = RawWs::connect_small_buffer(arena.addr).await;
    raw.text(
        &json!({"type": "AUTHENTICATE", "payload": {"token": (arena.mint)(user)}}).to_string(),
    )
    .await;
    assert_eq!(raw.recv().await["type"], "AUTH_SUCCESS");
    raw
}

/// `JOIN_ROOM` for `room`, with the messages after `since` (all of them
/// without).
fn join(room: &str, since: Option<u64>) -> String {
    match since {
        None => json!({"type": "JOIN_ROOM", "payload": {"roomId": room}}),
        Some(seq) => json!({"type": "JOIN_ROOM", "payload": {"roomId": room, "sinceSeq": seq}}),
    }
    .to_string()
}

/// Reads what the server sent until its close frame: its code (`None`: the
/// stream ended without one).
async fn close_code_after_the_frames(raw: &mut RawWs, within: Duration) -> Option<u16> {
    let deadline = Instant::now() + within;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match raw.read_frame_within(left).await {
            Err(()) => panic!("neither a close frame nor the end within {within:?}"),
            Ok(None) => return None,
            Ok(Some(f)) if f.opcode == op::CLOSE => return f.close_code(),
            Ok(Some(_)) => {}
        }
    }
}

/// The largest RSS seen until `sampling` is cleared.
fn sample_peak_rss(sampling: Arc<AtomicBool>) -> tokio::task::JoinHandle<u64> {
    tokio::spawn(async move {
        let mut peak = 0;
        while sampling.load(Ordering::Relaxed) {
            peak = peak.max(vm_rss_bytes());
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        peak
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn joins_that_ask_for_large_replies_without_reading_pin_at_most_the_queue_bound() {
    // The attack: 60 JOIN_ROOMs (1.5 KB sent) for a joined room
    // whose ROOM_JOINED is 2.4 MB, from a client that never reads. With a
    // queue bounded only in frames the server's RSS grew by 138 MiB.
    const JOINS: usize = 60;
    let mut config = test_config();
    archive_config(&mut config);
    let mut arena = Arena::start(config.clone(), Box::new(token), true).await;
    let (room, _archivist) = archive(&arena).await;
    let mut attacker = never_reading(&arena, "hoarder").await;
    let before = vm_rss_bytes();
    let sampling = Arc::new(AtomicBool::new(true));
    let sampler = sample_peak_rss(sampling.clone());
    for _ in 0..JOINS {
        let join = join(&room, None);
        if !attacker
            .try_write_frame_bytes(&encode_frame(true, op::TEXT, join.as_bytes()))
            .await
        {
            break;
        }
        // A ping now and then: the client is alive, it just does not read.
        let _ = attacker.try_write_frame(true, op::PING, b"alive").await;
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Time for the server to answer every request it took.
    tokio::time::sleep(Duration::from_secs(1)).await;
    sampling.store(false, Ordering::Relaxed);
    let peak = sampler.await.expect("sampler");
    let growth = peak.saturating_sub(before);
    eprintln!(
        "{JOINS} joins of a 2.4 MB history, never read: peak RSS grew by {} KiB",
        growth / 1024
    );
    // The queue bound, and room for a reply being encoded and one being
    // dropped; 60 replies would be 144 MB.
    let bound = config.outbound_queue_bytes + (8 << 20);
    assert!(
        growth < bound as u64,
        "peak RSS grew by {} KiB, over {} KiB",
        growth / 1024,
        bound / 1024
    );
    // Closed as a slow consumer, after what its socket had taken.
    assert_eq!(
        close_code_after_the_frames(&mut attacker, TIMEOUT).await,
        Some(1013)
    );
    arena.assert_bystanders_fine().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_that_pings_but_never_reads_is_dropped_after_the_write_timeout() {
    // Its queue stays under every bound (one 2.4 MB reply), and it keeps
    // the connection busy with pings and PINGs, so neither the slow
    // consumer rule nor the idle timeout ever drops it: only the socket
    // that has accepted nothing for WRITE_TIMEOUT_MS can.
    const WRITE_TIMEOUT_MS: u64 = 1_000;
    let mut arena = arena(|c| {
        archive_config(c);
        c.write_timeout_ms = WRITE_TIMEOUT_MS;
        c.outbound_queue_bytes = 16 << 20;
    })
    .await;
    let addr = arena.addr;
    let (room, _archivist) = archive(&arena).await;
    let mut attacker = never_reading(&arena, "pinger").await;
    // Three replies: more than the kernel's socket buffers take (a few
    // MB on loopback), well under the queue's bound.
    for _ in 0..3 {
        attacker.text(&join(&room, None)).await;
    }
    let started = Instant::now();
    let keep_busy = async {
        let ping = json!({"type": "PING"}).to_string();
        for _ in 0..200 {
            let alive = attacker.try_write_frame(true, op::PING, b"alive").await
                && attacker
                    .try_write_frame(true, op::TEXT, ping.as_bytes())
                    .await;
            if !alive {
                // Dropped: the metric says why (it may be scraped a moment
                // after the socket fails, so do not race it).
                std::future::pending::<()>().await;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    let dropped = wait_metric_within(
        addr,
        "chatflow_connection_closes_total{reason=\"write_timeout\"}",
        Duration::from_millis(WRITE_TIMEOUT_MS) + TIMEOUT,
        |v| v == 1.0,
    );
    tokio::select! {
        _ = dropped => {}
        () = keep_busy => panic!("the client pinged for 10 s and was never dropped"),
    }
    let took = started.elapsed();
    eprintln!("a client that never reads was dropped {took:?} after its request");
    assert!(took >= Duration::from_millis(WRITE_TIMEOUT_MS), "{took:?}");
    // Bystanders and the archivist are all that is left.
    wait_metric(addr, "chatflow_connections", |v| v == 3.0).await;
    arena.assert_bystanders_fine().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn never_reading_clients_together_cannot_pass_the_memory_cap() {
    // Each stays within its own bound; together they pass the server's
    // (the same): the largest queue is closed with 1013 and the other
    // kept. The sizes leave room for the kernel's socket buffers, which
    // take up to ~4 MB of what is written to a reader on loopback.
    const CAP: usize = 24 << 20;
    let mut arena = arena(|c| {
        archive_config(c);
        c.outbound_queue_bytes = CAP;
        c.outbound_memory_max_bytes = CAP;
    })
    .await;
    let addr = arena.addr;
    let (room, mut archivist) = archive(&arena).await;
    // The large one: the whole history ten times, 24 MB.
    let mut large = never_reading(&arena, "large").await;
    for _ in 0..10 {
        large.text(&join(&room, None)).await;
    }
    eventually("the large replies are queued", || async {
        metric(&metrics(addr).await, "chatflow_outbound_queued_bytes").unwrap_or(0.0) > 15e6
    })
    .await;
    // The smaller one asks 15 times for the last 40 messages (~1 MB
    // each): 14.4 MB, under its bound, and with the large one's over the
    // cap.
    const SMALL_JOINS: usize = 15;
    let mut small = never_reading(&arena, "small").await;
    for _ in 0..SMALL_JOINS {
        small.text(&join(&room, Some(STORED - 40))).await;
    }
    // The room sees the large reader go as soon as it is closed.
    let left =
        |v: &serde_json::Value| v["type"] == "USER_LEFT" && v["payload"]["userId"] == "large";
    loop {
        let v = archivist.recv().await;
        if left(&v) {
            break;
        }
        assert_eq!(v["type"], "USER_JOINED", "{v}");
    }
    let queued = metric(&metrics(addr).await, "chatflow_outbound_queued_bytes").expect("gauge");
    assert!(
        queued <= CAP as f64,
        "{queued} bytes queued after the close"
    );
    // The large reader gets what its socket took, then 1013 ...
    assert_eq!(
        close_code_after_the_frames(&mut large, TIMEOUT).await,
        Some(1013)
    );
    // ... the smaller one everything it asked for.
    let mut joined = 0;
    while joined < SMALL_JOINS {
        let v = small.recv().await;
        if v["type"] == "ROOM_JOINED" {
            assert_eq!(
                v["payload"]["messages"].as_array().expect("messages").len(),
                40
            );
            joined += 1;
        }
    }
    wait_metric_within(
        addr,
        "chatflow_connection_closes_total{reason=\"memory_cap\"}",
        chat_flow::server::outbox::CLOSE_GRACE + TIMEOUT,
        |v| v == 1.0,
    )
    .await;
    arena.assert_bystanders_fine().await;
}
