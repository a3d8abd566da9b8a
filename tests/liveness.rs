//! Liveness and back-pressure: server pings, the idle timeout, slow
//! consumers (1013) by frames and by bytes, and the write timeout.

mod common;

use std::time::Duration;

use chat_flow::frame::OpCode;
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_whose_queue_passes_outbound_queue_bytes_is_closed_with_1013() {
    // 100 KB messages: the frame bound (1024) is far away, the byte bound
    // (512 KiB, past the few MB the kernel's socket buffers take) is not.
    const CONTENT_CHARS: usize = 100_000;
    let server = start_with(|c| {
        slow_consumer_config(c, CONTENT_CHARS);
        c.outbound_queue_limit = 1_024;
        c.outbound_queue_bytes = 512 * 1024;
    })
    .await;
    let addr = server.addr;
    let mut slow = Client::connect_small_buffer(addr).await;
    slow.auth("slow").await;
    slow.join("general").await;
    let mut flooder = Client::authed(addr, "flooder").await;
    flooder.join("general").await;
    let sent = flood_until_gone(&mut flooder, "slow", CONTENT_CHARS).await;
    eprintln!("closed after {sent} messages of {CONTENT_CHARS} B");
    assert!(sent < 1_024, "closed by its bytes, not its frames");
    let (frames, code) = slow.drain_until_close(Duration::from_secs(10)).await;
    assert_eq!(code, Some(1013));
    let got: Vec<u64> = frames
        .iter()
        .filter(|v| v["type"] == "NEW_MESSAGE")
        .map(|v| v["payload"]["seq"].as_u64().expect("seq"))
        .collect();
    assert_eq!(got, (1..=got.len() as u64).collect::<Vec<_>>(), "a prefix");
    let text = metrics(addr).await;
    assert_eq!(
        metric(&text, "chatflow_slow_consumer_closes_total"),
        Some(1.0)
    );
    assert_eq!(
        metric(
            &text,
            "chatflow_connection_closes_total{reason=\"slow_consumer\"}"
        ),
        Some(1.0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_reader_is_kept_and_one_that_stops_reading_is_dropped_after_the_write_timeout() {
    // The kernel lets the server write again once a third of the socket's
    // send buffer (a few MB on loopback) has drained: at 2 MB/s that is
    // every ~0.7 s, well within the timeout.
    const WRITE_TIMEOUT_MS: u64 = 1_500;
    let server = start_with(|c| {
        backlog_config(c);
        c.write_timeout_ms = WRITE_TIMEOUT_MS;
    })
    .await;
    let addr = server.addr;
    let _archivist = fill_general(addr).await;
    let mut reader = Trickle::connect(addr, "reader").await;
    for _ in 0..6 {
        reader
            .send(json!({"type": "JOIN_ROOM", "payload": {"roomId": "general"}}))
            .await;
    }
    queued_over(addr, 8e6).await;
    // Two write timeouts of slow but steady reading: it is kept.
    assert!(reader.read_at(2e6, Duration::from_secs(3)).await, "kept");
    let timed_out = "chatflow_connection_closes_total{reason=\"write_timeout\"}";
    let text = metrics(addr).await;
    assert_eq!(metric(&text, timed_out), Some(0.0));
    assert_eq!(metric(&text, "chatflow_connections"), Some(2.0));
    // It stops reading and pings instead: dropped within the timeout of
    // the last bytes its socket took.
    let stopped = Instant::now();
    let ping = encode_frame(true, op::PING, b"still here");
    let keep_pinging = async {
        loop {
            use tokio::io::AsyncWriteExt;
            if reader.stream.write_all(&ping).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    tokio::select! {
        _ = wait_metric_within(addr, timed_out, Duration::from_millis(WRITE_TIMEOUT_MS) + TIMEOUT, |v| v == 1.0) => {}
        () = keep_pinging => {}
    }
    wait_metric(addr, timed_out, |v| v == 1.0).await;
    eprintln!("dropped {:?} after it stopped reading", stopped.elapsed());
    wait_metric(addr, "chatflow_connections", |v| v == 1.0).await;
    // What its socket took arrives, then the end: a close frame, if one
    // could be written at all, is 1013.
    while !reader.closed() && reader.read_at(1e9, Duration::from_secs(1)).await {}
    let types = reader.types();
    assert_eq!(types[..2], ["AUTH_SUCCESS", "ROOM_JOINED"], "{types:?}");
    assert!(
        matches!(reader.close_code(), None | Some(1013)),
        "{:?}",
        reader.close_code()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lower_memory_cap_on_reload_closes_the_largest_queue_at_once() {
    let mut config = test_config();
    backlog_config(&mut config);
    let server = chat_flow::server::RunningServer::start(config.clone())
        .await
        .expect("server starts");
    let addr = server.addr;
    let mut archivist = fill_general(addr).await;
    let mut stuck = Trickle::connect(addr, "stuck").await;
    for _ in 0..4 {
        stuck
            .send(json!({"type": "JOIN_ROOM", "payload": {"roomId": "general"}}))
            .await;
    }
    queued_over(addr, 4e6).await;
    archivist.expect_type("USER_JOINED").await;
    // Under what is queued now: the one large queue goes, nobody else.
    config.outbound_queue_bytes = 1 << 20;
    config.outbound_memory_max_bytes = 1 << 20;
    server.reload(config).await;
    let left = archivist.expect_type("USER_LEFT").await;
    assert_eq!(left["payload"]["userId"], "stuck");
    let queued = metric(&metrics(addr).await, "chatflow_outbound_queued_bytes").expect("gauge");
    assert!(queued <= f64::from(1 << 20), "{queued}");
    archivist.ok("PING", json!({}), "PONG").await;
}

// ----- a reader at the test's pace ----------------------------------------

/// A WebSocket client on a raw socket with a small receive buffer that
/// reads only when the test says, at the pace it says, so that the
/// server's queue for it backs up and drains as a slow reader's would.
struct Trickle {
    stream: tokio::net::TcpStream,
    /// Bytes read and not yet parsed into frames.
    unparsed: Vec<u8>,
    /// Bytes read in all.
    received: usize,
    /// The frames read, as (opcode, payload).
    frames: Vec<(OpCode, Vec<u8>)>,
}

impl Trickle {
    /// Upgrades and authenticates as `user` (the reply is read later).
    async fn connect(addr: std::net::SocketAddr, user: &str) -> Trickle {
        use tokio::io::AsyncWriteExt;
        let socket = tokio::net::TcpSocket::new_v4().expect("socket");
        socket.set_recv_buffer_size(16 * 1024).expect("SO_RCVBUF");
        let mut stream = socket.connect(addr).await.expect("tcp connect");
        let request = format!(
            "GET /ws HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        );
        stream.write_all(request.as_bytes()).await.expect("upgrade");
        let mut t = Trickle {
            stream,
            unparsed: Vec::new(),
            received: 0,
            frames: Vec::new(),
        };
        let end = loop {
            if let Some(at) = t.unparsed.windows(4).position(|w| w == b"\r\n\r\n") {
                break at + 4;
            }
            assert!(t.read_some().await, "the upgrade is answered");
        };
        assert!(t.unparsed.starts_with(b"HTTP/1.1 101"), "upgraded");
        t.unparsed.drain(..end);
        t.received = t.unparsed.len();
        t.send(json!({"type": "AUTHENTICATE", "payload": {"token": token(user)}}))
            .await;
        t
    }

    async fn send(&mut self, v: serde_json::Value) {
        use tokio::io::AsyncWriteExt;
        let frame = encode_frame(true, op::TEXT, v.to_string().as_bytes());
        self.stream.write_all(&frame).await.expect("send");
    }

    /// One read of what has arrived (waiting up to a second for it);
    /// `false` once the stream has ended.
    async fn read_some(&mut self) -> bool {
        use tokio::io::AsyncReadExt;
        let mut chunk = [0; 64 * 1024];
        match tokio::time::timeout(Duration::from_secs(1), self.stream.read(&mut chunk)).await {
            Err(_) => true,
            Ok(Ok(0) | Err(_)) => false,
            Ok(Ok(n)) => {
                self.unparsed.extend_from_slice(&chunk[..n]);
                self.received += n;
                true
            }
        }
    }

    /// Reads at about `bytes_per_s` for `period` (or until the stream
    /// ends, or a close frame arrives); `false` if the stream ended.
    async fn read_at(&mut self, bytes_per_s: f64, period: Duration) -> bool {
        let started = Instant::now();
        let from = self.received;
        while started.elapsed() < period && !self.closed() {
            let due = Duration::from_secs_f64((self.received - from) as f64 / bytes_per_s);
            if let Some(early) = due.checked_sub(started.elapsed()) {
                tokio::time::sleep(early.min(period.saturating_sub(started.elapsed()))).await;
                continue;
            }
            if !self.read_some().await {
                self.parse();
                return false;
            }
            self.parse();
        }
        true
    }

    fn parse(&mut self) {
        let mut used = 0;
        while let Ok(Some((head, payload))) =
            chat_flow::frame::parse_frame(&self.unparsed[used..], usize::MAX)
        {
            self.frames.push((head.opcode, payload.to_vec()));
            used += head.head_len + head.len;
        }
        self.unparsed.drain(..used);
    }

    /// Whether a close frame has arrived.
    fn closed(&self) -> bool {
        self.frames.last().is_some_and(|(op, _)| *op == op::CLOSE)
    }

    /// The text frames' `type`s, in order.
    fn types(&self) -> Vec<String> {
        self.frames
            .iter()
            .filter(|(op, _)| *op == op::TEXT)
            .map(|(_, p)| {
                let v: serde_json::Value = serde_json::from_slice(p).expect("JSON");
                v["type"].as_str().expect("type").to_owned()
            })
            .collect()
    }

    /// The close frame's code, if one arrived.
    fn close_code(&self) -> Option<u16> {
        let (_, p) = self.frames.iter().find(|(op, _)| *op == op::CLOSE)?;
        (p.len() >= 2).then(|| u16::from_be_bytes([p[0], p[1]]))
    }
}

/// `general` filled with 100 messages whose JSON is ~24 KB each (4,000
/// control characters, escaped to six bytes apiece), so that a
/// `ROOM_JOINED` for it is ~2.4 MB. The archivist stays connected.
async fn fill_general(addr: std::net::SocketAddr) -> Client {
    let mut archivist = Client::authed(addr, "archivist").await;
    archivist.join("general").await;
    let content = "\u{1}".repeat(4_000);
    for _ in 0..100 {
        archivist
            .ok(
                "SEND_MESSAGE",
                json!({"roomId": "general", "content": content}),
                "NEW_MESSAGE",
            )
            .await;
    }
    archivist
}

/// Limits for a large backlog: the archive filled at once, and queues
/// that hold it.
fn backlog_config(c: &mut chat_flow::config::Config) {
    c.rate_limit_messages = 100_000;
    c.rate_limit_requests = 100_000;
    c.outbound_queue_bytes = 32 << 20;
}

/// Waits until the server holds more than `bytes` in its queues (past what
/// the kernel's socket buffers took).
async fn queued_over(addr: std::net::SocketAddr, bytes: f64) {
    eventually("the backlog is queued", || async {
        metric(&metrics(addr).await, "chatflow_outbound_queued_bytes").unwrap_or(0.0) > bytes
    })
    .await;
}
