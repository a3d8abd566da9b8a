//! Shutdown: drain with 1001 close frames, 503 for new upgrades and
//! /readyz while /healthz stays 200, and a clean return; a slow reader
//! keeps receiving what is queued for it for the whole grace.

mod common;

use std::time::Duration;

use chat_flow::frame::OpCode;
use common::*;
use serde_json::json;
use tokio::time::Instant;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_closes_every_client_with_1001_and_refuses_new_upgrades_while_draining() {
    let mut server = start_with(|c| c.shutdown_grace_ms = 2_000).await;
    let addr = server.addr;
    let mut alice = Client::authed(addr, "alice").await;
    alice.join("general").await;
    let mut bob = Client::authed(addr, "bob").await;
    bob.join("general").await;
    alice.expect_type("USER_JOINED").await;
    let mut anonymous = Client::connect(addr).await;
    // A client that never answers the close keeps the drain open.
    let mut stubborn = RawWs::connect(addr).await;

    server.begin_shutdown();
    alice.expect_close(1001).await;
    bob.expect_close(1001).await;
    anonymous.expect_close(1001).await;
    assert_eq!(stubborn.expect_close().await, Some(1001));

    // Still draining (the stubborn client is connected): HTTP stays up.
    assert_eq!(http_get(addr, "/readyz").await.0, 503);
    assert_eq!(http_get(addr, "/healthz").await.0, 200);
    match Client::try_connect(addr, &[]).await {
        Err(ConnectError::Status(503)) => {}
        other => panic!(
            "upgrade during the drain: expected 503, got {:?}",
            other.err()
        ),
    }

    let started = Instant::now();
    tokio::time::timeout(Duration::from_secs(10), server.shutdown())
        .await
        .expect("shutdown returns within the grace period (plus slack)")
        .expect("shutdown is clean");
    assert!(started.elapsed() < Duration::from_secs(8));
    drop(stubborn);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_returns_as_soon_as_clients_are_gone() {
    // With the default 10 s grace, clients that answer the close let the
    // drain end at once.
    let server = start().await;
    let addr = server.addr;
    let mut clients = Vec::new();
    for i in 0..5 {
        let mut c = Client::authed(addr, &format!("u{i}")).await;
        c.join("general").await;
        clients.push(c);
    }
    let readers: Vec<_> = clients
        .into_iter()
        .map(|mut c| {
            tokio::spawn(async move {
                // Presence noise may precede the close frame.
                let (frames, code) = c.drain_until_close(Duration::from_secs(5)).await;
                assert!(
                    frames.iter().all(|v| v["type"] == "USER_JOINED"),
                    "{frames:?}"
                );
                code
            })
        })
        .collect();
    let started = Instant::now();
    tokio::time::timeout(Duration::from_secs(5), server.shutdown())
        .await
        .expect("no need to wait out the grace period")
        .expect("clean");
    assert!(started.elapsed() < Duration::from_secs(5));
    for r in readers {
        assert_eq!(r.await.expect("reader"), Some(1001));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_without_clients_is_immediate_and_clean() {
    let server = start().await;
    let addr = server.addr;
    assert_eq!(http_get(addr, "/readyz").await.0, 200);
    tokio::time::timeout(Duration::from_secs(5), server.shutdown())
        .await
        .expect("immediate")
        .expect("clean");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_is_bounded_by_the_grace_period() {
    let mut server = start_with(|c| c.shutdown_grace_ms = 300).await;
    let mut stubborn = RawWs::connect(server.addr).await;
    server.begin_shutdown();
    assert_eq!(stubborn.expect_close().await, Some(1001));
    let started = Instant::now();
    tokio::time::timeout(Duration::from_secs(4), server.shutdown())
        .await
        .expect("the grace period bounds the drain")
        .expect("clean");
    assert!(started.elapsed() < Duration::from_secs(4));
    drop(stubborn);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_reader_keeps_receiving_its_frames_for_the_whole_grace_then_gets_1001() {
    // Six 2.4 MB replies queued to a reader that then reads at 2 MB/s:
    // 7 s to take them all, longer than the 5 s any other close gets, and
    // more than the kernel's socket buffers could have taken by then.
    const GRACE_MS: u64 = 10_000;
    const JOINS: usize = 6;
    let mut server = start_with(|c| {
        backlog_config(c);
        c.shutdown_grace_ms = GRACE_MS;
    })
    .await;
    let addr = server.addr;
    let _archivist = fill_general(addr).await;
    let mut slow = Trickle::connect(addr, "slow").await;
    for _ in 0..JOINS {
        slow.send(json!({"type": "JOIN_ROOM", "payload": {"roomId": "general"}}))
            .await;
    }
    queued_over(addr, 8e6).await;
    server.begin_shutdown();
    let started = Instant::now();
    let open = slow
        .read_at(2e6, Duration::from_millis(GRACE_MS + 2_000))
        .await;
    let took = started.elapsed();
    eprintln!("the slow reader took {took:?} for {} bytes", slow.received);
    let joined = slow.types().iter().filter(|t| *t == "ROOM_JOINED").count();
    assert_eq!(
        (joined, slow.close_code()),
        (JOINS, Some(1001)),
        "every queued frame, then the close frame (stream open: {open}, after {took:?})"
    );
    assert!(
        took > Duration::from_secs(5) && took < Duration::from_millis(GRACE_MS),
        "{took:?}"
    );
    tokio::time::timeout(Duration::from_secs(5), server.shutdown())
        .await
        .expect("the drain ends with the grace")
        .expect("clean");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_that_never_reads_keeps_its_connection_until_the_grace_ends_and_no_longer() {
    const GRACE_MS: u64 = 7_000;
    let mut server = start_with(|c| {
        backlog_config(c);
        c.shutdown_grace_ms = GRACE_MS;
    })
    .await;
    let addr = server.addr;
    let _archivist = fill_general(addr).await;
    let mut stuck = Trickle::connect(addr, "stuck").await;
    for _ in 0..3 {
        stuck
            .send(json!({"type": "JOIN_ROOM", "payload": {"roomId": "general"}}))
            .await;
    }
    queued_over(addr, 2e6).await;
    let started = Instant::now();
    server.begin_shutdown();
    tokio::time::timeout(Duration::from_millis(GRACE_MS + 3_000), server.shutdown())
        .await
        .expect("the process exits at the grace's end")
        .expect("clean");
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(GRACE_MS - 100),
        "the drain gave up on a reader after {took:?}, before the grace"
    );
    drop(stuck);
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
