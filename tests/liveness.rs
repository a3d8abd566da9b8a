//! Liveness and back-pressure: server pings, the idle timeout, and slow
//! consumers (1013).

mod common;

use std::time::Duration;

use common::*;
use serde_json::{Value, json};
use tokio::time::Instant;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_pings_and_a_client_that_answers_stays_connected() {
    let server = start_with(|c| {
        c.ping_interval_ms = 100;
        c.idle_timeout_ms = 400;
    })
    .await;
    let mut c = Client::authed(server.addr, "alice").await;
    // tungstenite answers every ping while reading; nothing else arrives.
    c.expect_silence(1_200).await;
    assert!(
        c.pings >= 3,
        "expected a ping every 100 ms, got {} in 1.2 s",
        c.pings
    );
    // Three idle timeouts later, the connection is still usable.
    c.ok("PING", json!({}), "PONG").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_sends_nothing_is_dropped_after_the_idle_timeout() {
    let server = start_with(|c| {
        c.ping_interval_ms = 100;
        c.idle_timeout_ms = 400;
    })
    .await;
    let mut raw = RawWs::connect(server.addr).await;
    raw.text(&json!({"type": "AUTHENTICATE", "payload": {"token": token("mute")}}).to_string())
        .await;
    assert_eq!(raw.recv().await["type"], "AUTH_SUCCESS");
    // Never answer pings, never send anything.
    let started = Instant::now();
    let mut pings = 0;
    let end = loop {
        let left = Duration::from_secs(5).saturating_sub(started.elapsed());
        let frame = raw
            .read_frame_within(left)
            .await
            .expect("the idle connection must be dropped within 5 s");
        match frame {
            None => break None,
            Some(f) if f.opcode == op::PING => pings += 1,
            Some(f) if f.opcode == op::CLOSE => break Some(f.close_code()),
            Some(f) => panic!("unexpected frame {f:?}"),
        }
    };
    assert!(pings >= 1, "pings were sent before giving up");
    if let Some(code) = end {
        assert_eq!(code, Some(1001), "an idle drop tries close 1001 first");
    }
    assert!(started.elapsed() < Duration::from_secs(5));
    // Gone from the server's view too. After its close frame the server
    // waits up to the close grace for the client's own close (draining what
    // it sends); this client never closes, so the server drops it then.
    wait_metric_within(
        server.addr,
        "chatflow_connections",
        chat_flow::server::outbox::CLOSE_GRACE + TIMEOUT,
        |v| v == 0.0,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn application_ping_counts_as_activity() {
    let server = start_with(|c| {
        c.ping_interval_ms = 100;
        c.idle_timeout_ms = 400;
    })
    .await;
    let mut raw = RawWs::connect(server.addr).await;
    raw.text(&json!({"type": "AUTHENTICATE", "payload": {"token": token("app")}}).to_string())
        .await;
    assert_eq!(raw.recv().await["type"], "AUTH_SUCCESS");
    // Application-level PINGs every 150 ms for 1.2 s (three idle timeouts)
    // keep it alive even though WebSocket pings go unanswered.
    for i in 0..8 {
        raw.text(&json!({"type": "PING", "requestId": format!("p{i}")}).to_string())
            .await;
        let v = raw.recv().await;
        assert_eq!(v["type"], "PONG");
        assert_eq!(v["requestId"], format!("p{i}"));
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
}

fn slow_consumer_config(c: &mut chat_flow::config::Config, chars: usize) {
    c.outbound_queue_limit = 8;
    c.max_message_bytes = 256 * 1024;
    c.max_content_length = chars;
    c.rate_limit_messages = 100_000;
    c.history_limit = 10;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_consumer_that_never_reads_is_dropped_after_the_close_grace() {
    const CONTENT_CHARS: usize = 100_000;
    let server = start_with(|c| slow_consumer_config(c, CONTENT_CHARS)).await;
    let addr = server.addr;
    let mut slow = Client::connect_small_buffer(addr).await;
    slow.auth("slow").await;
    slow.join("general").await;
    let mut flooder = Client::authed(addr, "flooder").await;
    flooder.join("general").await;
    flood_until_gone(&mut flooder, "slow", CONTENT_CHARS).await;
    let closed = Instant::now();
    // The slow client never reads again; the server must let go of it
    // (PROTOCOL.md: "a client that does not read it within 5 seconds is
    // dropped").
    let deadline = closed + Duration::from_secs(15);
    loop {
        let text = metrics(addr).await;
        if metric(&text, "chatflow_connections") == Some(1.0) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the slow consumer was never dropped"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let took = closed.elapsed();
    eprintln!("slow consumer dropped {took:?} after its close");
    assert!(
        took < Duration::from_millis(7_500),
        "dropped {took:?} after the close, the contract says 5 s"
    );
    drop(slow);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_that_does_not_read_is_closed_with_1013_without_slowing_the_room() {
    const CONTENT_CHARS: usize = 100_000;
    let server = start_with(|c| slow_consumer_config(c, CONTENT_CHARS)).await;
    let addr = server.addr;
    let mut slow = Client::connect_small_buffer(addr).await;
    slow.auth("slow").await;
    slow.join("general").await;
    let mut observer = Client::authed(addr, "observer").await;
    observer.join("general").await;
    let mut flooder = Client::authed(addr, "flooder").await;
    flooder.join("general").await;
    observer.expect_type("USER_JOINED").await;

    // The observer reads everything, concurrently, until told how many
    // messages there were.
    let (total_tx, mut total_rx) = tokio::sync::watch::channel(None::<u64>);
    let observer_task = tokio::spawn(async move {
        let mut seqs = Vec::new();
        loop {
            if let Some(total) = *total_rx.borrow_and_update()
                && seqs.len() as u64 >= total
            {
                return seqs;
            }
            let v: Value = tokio::select! {
                v = observer.recv() => v,
                _ = total_rx.changed() => continue,
            };
            if v["type"] == "NEW_MESSAGE" {
                seqs.push(v["payload"]["seq"].as_u64().expect("seq"));
            }
        }
    });

    let flood_started = Instant::now();
    let sent = flood_until_gone(&mut flooder, "slow", CONTENT_CHARS).await;
    let flood_time = flood_started.elapsed();

    // The observer got every message, in order, exactly once.
    total_tx.send(Some(sent)).expect("observer alive");
    let seqs = tokio::time::timeout(Duration::from_secs(10), observer_task)
        .await
        .expect("observer finishes")
        .expect("observer task");
    assert_eq!(seqs, (1..=sent).collect::<Vec<_>>());

    // The slow consumer now reads: what the socket had accepted, in order
    // and without gaps, then the close frame 1013.
    let (frames, code) = slow.drain_until_close(Duration::from_secs(10)).await;
    assert_eq!(
        code,
        Some(1013),
        "slow consumer close code (after {} frames)",
        frames.len()
    );
    let got: Vec<u64> = frames
        .iter()
        .filter(|v| v["type"] == "NEW_MESSAGE")
        .map(|v| v["payload"]["seq"].as_u64().unwrap())
        .collect();
    assert!(
        (got.len() as u64) < sent,
        "the slow consumer cannot have received everything"
    );
    assert_eq!(
        got,
        (1..=got.len() as u64).collect::<Vec<_>>(),
        "a prefix of the room's messages, in order"
    );
    // The room is still fine for the others.
    flooder
        .send(json!({"type": "SEND_MESSAGE", "payload": {"roomId": "general", "content": "after"}, "requestId": "after"}))
        .await;
    read_until_ack(&mut flooder, "after", "slow").await;
    eprintln!(
        "slow consumer closed after {sent} messages ({} delivered to it) in {flood_time:?}",
        got.len()
    );
}
