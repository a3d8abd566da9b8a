//! Readers that read slowly or never, under a flood into their room.

use std::time::Duration;

use serde_json::json;

use crate::common::*;
use crate::harness::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flood_into_a_reader_that_never_reads_closes_it_with_1013_and_spares_the_room() {
    const CHARS: usize = 100_000;
    let mut arena = arena(|c| {
        c.outbound_queue_limit = 8;
        c.max_message_bytes = 256 * 1024;
        c.max_content_length = CHARS;
        c.rate_limit_messages = 100_000;
        c.history_limit = 10;
    })
    .await;
    let addr = arena.addr;
    let mut slow = Client::connect_small_buffer(addr).await;
    slow.auth("slow").await;
    slow.join(ROOM).await;
    arena.bystanders_see(&user_joined("slow")).await;
    let mut flooder = arena.attacker("flooder").await;
    flooder.join(ROOM).await;
    arena.bystanders_see(&user_joined("flooder")).await;

    // Both bystanders read everything while the flood goes on.
    async fn read_all(by: &mut Client) -> (Vec<u64>, usize) {
        let mut seqs = Vec::new();
        let mut slow_left = 0;
        loop {
            let v = by.recv().await;
            match v["type"].as_str() {
                Some("NEW_MESSAGE") if v["payload"]["content"] == "end" => {
                    return (seqs, slow_left);
                }
                Some("NEW_MESSAGE") => seqs.push(v["payload"]["seq"].as_u64().expect("seq")),
                _ if v == user_left("slow") => slow_left += 1,
                _ => panic!("unexpected frame: {v}"),
            }
        }
    }
    let flood = async {
        let sent = flood_until_gone(&mut flooder, "slow", CHARS).await;
        flooder.say(ROOM, "end").await;
        sent
    };
    let (sent, (seen_a, left_a), (seen_b, left_b)) =
        tokio::join!(flood, read_all(&mut arena.a), read_all(&mut arena.b));
    let all: Vec<u64> = (1..=sent).collect();
    assert_eq!(seen_a, all, "bystander a: every message, in order, once");
    assert_eq!(seen_b, all, "bystander b: every message, in order, once");
    assert_eq!((left_a, left_b), (1, 1));

    // The slow reader got a prefix, then 1013; what it missed was dropped,
    // not queued.
    let (got, code) = slow.drain_until_close(Duration::from_secs(10)).await;
    assert_eq!(code, Some(1013));
    let seqs: Vec<u64> = got
        .iter()
        .filter(|v| v["type"] == "NEW_MESSAGE")
        .map(|v| v["payload"]["seq"].as_u64().unwrap())
        .collect();
    assert!((seqs.len() as u64) < sent);
    assert_eq!(seqs, (1..=seqs.len() as u64).collect::<Vec<_>>());
    assert_eq!(
        metric(&metrics(addr).await, "chatflow_slow_consumer_closes_total"),
        Some(1.0)
    );
    arena.assert_bystanders_fine().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flood_into_many_slow_readers_does_not_multiply_memory() {
    // Many members read slowly (a frame every 200 ms) or not at all, staying
    // under OUTBOUND_QUEUE_LIMIT so that nobody is closed, while big
    // messages go to their room. A broadcast frame is one shared buffer:
    // the members' queues must not turn it into a copy each.
    const READERS: usize = 40;
    const MESSAGES: usize = 100;
    const CHARS: usize = 100_000;
    let mut config = test_config();
    config.outbound_queue_limit = 128;
    // Every message fits in every queue, in bytes too (10 MB each).
    config.outbound_queue_bytes = 16 << 20;
    config.max_message_bytes = 256 * 1024;
    config.max_content_length = CHARS;
    config.rate_limit_messages = 100_000;
    config.rate_limit_requests = 100_000;
    config.history_limit = 1;
    let mut arena = Arena::start(config, Box::new(token), true).await;
    let addr = arena.addr;
    let mut readers = Vec::new();
    for i in 0..READERS {
        let user = format!("slow-{i}");
        let mut raw = RawWs::connect_small_buffer(addr).await;
        raw.text(&json!({"type": "AUTHENTICATE", "payload": {"token": token(&user)}}).to_string())
            .await;
        raw.text(&json!({"type": "JOIN_ROOM", "payload": {"roomId": ROOM}}).to_string())
            .await;
        assert_eq!(raw.recv().await["type"], "AUTH_SUCCESS");
        assert_eq!(raw.recv().await["type"], "ROOM_JOINED");
        readers.push(raw);
        arena.bystanders_see(&user_joined(&user)).await;
    }
    let mut flooder = arena.attacker("flooder").await;
    flooder.join(ROOM).await;
    arena.bystanders_see(&user_joined("flooder")).await;
    let before = vm_rss_bytes();
    // Half of them read a frame every 200 ms, the other half never.
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut slow = Vec::new();
    for mut raw in readers.drain(..READERS / 2) {
        let stop = stop_rx.clone();
        slow.push(tokio::spawn(async move {
            while !*stop.borrow() {
                let _ = raw.read_frame_within(Duration::from_millis(50)).await;
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            raw
        }));
    }
    let sampling = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let sampler = {
        let sampling = sampling.clone();
        tokio::spawn(async move {
            let mut peak = 0;
            while sampling.load(std::sync::atomic::Ordering::Relaxed) {
                peak = peak.max(vm_rss_bytes());
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            peak
        })
    };
    let content = "x".repeat(CHARS);
    let flood = async {
        for _ in 0..MESSAGES {
            flooder
                .ok(
                    "SEND_MESSAGE",
                    json!({"roomId": ROOM, "content": content}),
                    "NEW_MESSAGE",
                )
                .await;
        }
    };
    async fn read_n(by: &mut Client, n: usize) {
        for _ in 0..n {
            by.expect_type("NEW_MESSAGE").await;
        }
    }
    tokio::join!(
        flood,
        read_n(&mut arena.a, MESSAGES),
        read_n(&mut arena.b, MESSAGES)
    );
    // The slow readers keep taking frames for a while.
    tokio::time::sleep(Duration::from_secs(1)).await;
    sampling.store(false, std::sync::atomic::Ordering::Relaxed);
    let peak = sampler.await.expect("sampler");
    let growth = peak.saturating_sub(before);
    eprintln!(
        "{READERS} slow readers, {MESSAGES} messages of {CHARS} B: peak RSS grew by {} KiB",
        growth / 1024
    );
    assert_eq!(
        metric(&metrics(addr).await, "chatflow_slow_consumer_closes_total"),
        Some(0.0),
        "nobody was over the queue limit"
    );
    // The frames themselves are 10 MB; one copy per reader would be 400 MB.
    assert!(growth < 64 << 20, "peak RSS grew by {} KiB", growth / 1024);
    stop_tx.send(true).expect("readers");
    for s in slow {
        drop(s.await.expect("reader"));
    }
    drop(readers);
    for _ in 0..READERS {
        let a = arena.a.expect_type("USER_LEFT").await;
        assert_eq!(arena.b.recv().await, a);
    }
    arena.assert_bystanders_fine().await;
}
