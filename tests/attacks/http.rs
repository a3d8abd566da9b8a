//! HTTP: origins, slow and oversized requests, caps on connections and
//! addresses, pipelined frames, churn.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use chat_flow::server::{HEADER_READ_TIMEOUT, HEADERS_MAX};
use futures_util::future::join_all;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::common::*;
use crate::harness::*;

/// A WebSocket upgrade request for `/ws` with `extra` header lines (each
/// ending in CRLF).
fn upgrade_request(addr: SocketAddr, extra: &str) -> String {
    format!(
        "GET /ws HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{extra}\r\n"
    )
}

/// Writes `request` while reading the answer; returns what arrived before
/// the server closed (or reset) the connection.
async fn send_and_read(addr: SocketAddr, request: &[u8]) -> Vec<u8> {
    let stream = TcpStream::connect(addr).await.expect("tcp connect");
    let (mut rd, mut wr) = stream.into_split();
    let write = async {
        // The server may stop reading and close: a failed write is fine.
        let _ = wr.write_all(request).await;
        wr
    };
    let read = async {
        let mut got = Vec::new();
        let mut buf = [0u8; 8192];
        loop {
            match rd.read(&mut buf).await {
                Ok(0) | Err(_) => return got,
                Ok(n) => {
                    got.extend_from_slice(&buf[..n]);
                    if got.starts_with(b"HTTP/1.1 101") {
                        return got;
                    }
                }
            }
        }
    };
    let (_wr, got) = tokio::time::timeout(TIMEOUT, async { tokio::join!(write, read) })
        .await
        .expect("the server answers or closes in time");
    got
}

fn status_line(response: &[u8]) -> String {
    String::from_utf8_lossy(response)
        .lines()
        .next()
        .unwrap_or_default()
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_cross_site_upgrade_from_a_foreign_origin_is_refused_with_403() {
    let mut arena = arena(|c| {
        c.allowed_origins = Some(vec!["https://chat.example.com".to_owned()]);
    })
    .await;
    for origin in [
        "https://evil.example",
        "https://chat.example.com.evil.example",
        "http://chat.example.com",
        "null",
    ] {
        match Client::try_connect(arena.addr, &[("Origin", origin)]).await {
            Err(ConnectError::Status(403)) => {}
            other => panic!("origin {origin}: expected 403, got {:?}", other.err()),
        }
    }
    // Refused before counting: no connection was admitted.
    assert_eq!(
        metric(&metrics(arena.addr).await, "chatflow_connections"),
        Some(2.0)
    );
    arena.assert_bystanders_fine().await;
}

/// Sends `request` one byte every `every` while reading; returns the bytes
/// sent, the bytes received, and when the server closed the connection.
async fn dribble(addr: SocketAddr, request: &[u8], every: Duration) -> (usize, Vec<u8>, Duration) {
    let started = Instant::now();
    let stream = TcpStream::connect(addr).await.expect("tcp connect");
    stream.set_nodelay(true).expect("nodelay");
    let (mut rd, mut wr) = stream.into_split();
    let mut sent = 0;
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    let mut tick = tokio::time::interval(every);
    let cut = async {
        loop {
            tokio::select! {
                r = rd.read(&mut buf) => match r {
                    Ok(0) | Err(_) => return,
                    Ok(n) => got.extend_from_slice(&buf[..n]),
                },
                _ = tick.tick(), if sent < request.len() => {
                    if wr.write_all(&request[sent..=sent]).await.is_err() {
                        return;
                    }
                    sent += 1;
                }
            }
        }
    };
    tokio::time::timeout(HEADER_READ_TIMEOUT + Duration::from_secs(10), cut)
        .await
        .expect("the server must cut a slowloris connection at its header read timeout");
    (sent, got, started.elapsed())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_slowloris_upgrades_are_cut_at_the_header_read_timeout() {
    // HEADER_READ_TIMEOUT is a constant (10 s), not a setting: this case
    // takes that long. hyper closes without an answer (no 408).
    let mut arena = arena(|_| {}).await;
    let addr = arena.addr;
    let request = upgrade_request(addr, "").into_bytes();
    let every = Duration::from_millis(100);
    // At one byte per 100 ms the request would take this long to finish.
    assert!(every * request.len() as u32 > HEADER_READ_TIMEOUT + Duration::from_secs(3));
    let dribblers: Vec<_> = (0..20)
        .map(|_| {
            let request = request.clone();
            tokio::spawn(async move { dribble(addr, &request, every).await })
        })
        .collect();
    // And connections that never send a byte.
    let silent: Vec<_> = (0..10)
        .map(|_| tokio::spawn(async move { dribble(addr, b"", every).await }))
        .collect();
    // While they dribble, the bystanders talk.
    tokio::time::sleep(Duration::from_secs(1)).await;
    arena.assert_bystanders_fine().await;
    for d in dribblers {
        let (sent, got, after) = d.await.expect("dribbler");
        assert!(
            sent < request.len(),
            "the whole request went through ({sent} bytes)"
        );
        assert!(
            got.is_empty(),
            "no answer to an incomplete request, got {:?}",
            String::from_utf8_lossy(&got)
        );
        // Cut by the header read timeout, not by anything earlier.
        assert!(
            after >= HEADER_READ_TIMEOUT - Duration::from_millis(500),
            "cut after {after:?}"
        );
    }
    for s in silent {
        let (_, got, after) = s.await.expect("silent connection");
        assert!(got.is_empty(), "{:?}", String::from_utf8_lossy(&got));
        assert!(after >= HEADER_READ_TIMEOUT - Duration::from_millis(500));
    }
    // Never upgraded, never counted.
    assert_eq!(
        metric(&metrics(addr).await, "chatflow_connections"),
        Some(2.0)
    );
    arena.assert_bystanders_fine().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_too_many_headers_are_refused_with_431() {
    let mut arena = arena(|_| {}).await;
    let addr = arena.addr;
    // The upgrade request itself has five header lines.
    let extra = |n: usize| -> String { (0..n).map(|i| format!("X-Pad-{i}: {i}\r\n")).collect() };
    // Exactly HEADERS_MAX lines: upgraded.
    let ok = send_and_read(
        addr,
        upgrade_request(addr, &extra(HEADERS_MAX - 5)).as_bytes(),
    )
    .await;
    assert_eq!(status_line(&ok), "HTTP/1.1 101 Switching Protocols");
    // One more: refused by hyper with 431, the connection closed.
    for n in [HEADERS_MAX - 4, 10_000] {
        let refused = send_and_read(addr, upgrade_request(addr, &extra(n)).as_bytes()).await;
        assert_eq!(
            status_line(&refused),
            "HTTP/1.1 431 Request Header Fields Too Large",
            "{n} extra headers"
        );
    }
    arena.assert_bystanders_fine().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_a_huge_header_value_is_refused_with_431() {
    let mut arena = arena(|_| {}).await;
    let addr = arena.addr;
    // Over the 16 KiB request head limit: refused without a route.
    for size in [20 * 1024, 512 * 1024, 4 << 20] {
        let junk = format!("X-Junk: {}\r\n", "a".repeat(size));
        let refused = send_and_read(addr, upgrade_request(addr, &junk).as_bytes()).await;
        assert_eq!(
            status_line(&refused),
            "HTTP/1.1 431 Request Header Fields Too Large",
            "{size} bytes of header"
        );
    }
    arena.assert_bystanders_fine().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_a_huge_request_line_is_refused_with_431() {
    let mut arena = arena(|_| {}).await;
    let addr = arena.addr;
    // A request head over 16 KiB is refused before the URI is even parsed.
    for (size, status) in [
        (20_000, "HTTP/1.1 431 Request Header Fields Too Large"),
        (600_000, "HTTP/1.1 431 Request Header Fields Too Large"),
    ] {
        let request = format!(
            "GET /ws?{} HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
            "q".repeat(size)
        );
        let refused = send_and_read(addr, request.as_bytes()).await;
        assert_eq!(status_line(&refused), status, "{size} bytes of URI");
    }
    arena.assert_bystanders_fine().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_forwarded_headers_do_not_dodge_the_per_ip_cap() {
    // The cap counts the TCP peer address; headers a client writes itself
    // do not move it to another address.
    let mut arena = arena(|c| c.max_connections_per_ip = 3).await;
    let _third = Client::connect(arena.addr).await;
    for (name, value) in [
        ("X-Forwarded-For", "10.1.2.3"),
        ("X-Real-IP", "10.1.2.4"),
        ("Forwarded", "for=10.1.2.5"),
        ("True-Client-IP", "10.1.2.6"),
    ] {
        match Client::try_connect(arena.addr, &[(name, value)]).await {
            Err(ConnectError::Status(503)) => {}
            other => panic!("{name}: expected 503, got {:?}", other.err()),
        }
    }
    arena.assert_bystanders_fine().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_frames_sent_with_the_upgrade_request_are_read_once() {
    // Frames pipelined behind the upgrade request, in the same write (before
    // the 101): hyper hands its buffered bytes over with the upgrade, so
    // they are read as frames, in order, not lost or taken as HTTP.
    let mut arena = arena(|_| {}).await;
    let addr = arena.addr;
    let mut bytes = upgrade_request(addr, "").into_bytes();
    for id in ["early-1", "early-2"] {
        bytes.extend(encode_frame(
            true,
            op::TEXT,
            json!({"type": "PING", "requestId": id})
                .to_string()
                .as_bytes(),
        ));
    }
    let mut stream = TcpStream::connect(addr).await.expect("tcp connect");
    stream.write_all(&bytes).await.expect("write");
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let replies = tokio::time::timeout(TIMEOUT, async {
        loop {
            let n = stream.read(&mut buf).await.expect("read");
            assert!(n > 0, "closed: {:?}", String::from_utf8_lossy(&got));
            got.extend_from_slice(&buf[..n]);
            let text = String::from_utf8_lossy(&got);
            if text.matches("UNAUTHORIZED").count() >= 2 {
                return text.into_owned();
            }
        }
    })
    .await
    .expect("both replies");
    assert!(replies.starts_with("HTTP/1.1 101"), "{replies}");
    let first = replies.find("early-1").expect("early-1 answered");
    let second = replies.find("early-2").expect("early-2 answered");
    assert!(first < second);
    arena.assert_bystanders_fine().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_connection_storms_past_the_caps_get_503() {
    const PER_IP: usize = 25;
    const TOTAL: usize = 60;
    let mut arena = arena(|c| {
        c.max_connections_per_ip = PER_IP;
        c.max_connections = TOTAL;
    })
    .await;
    let addr = arena.addr;
    let ip = |n: u8| IpAddr::V4(Ipv4Addr::new(127, 0, 0, n));
    let storm = |from: Vec<IpAddr>| async move {
        let results = join_all(
            from.into_iter()
                .map(|ip| Client::try_connect_from(addr, ip)),
        )
        .await;
        let mut admitted = Vec::new();
        let mut refused = 0;
        for r in results {
            match r {
                Ok(c) => admitted.push(c),
                Err(ConnectError::Status(503)) => refused += 1,
                Err(e) => panic!("expected 101 or 503, got {e:?}"),
            }
        }
        (admitted, refused)
    };
    // 40 concurrent upgrades from one address: exactly the per-IP cap gets in.
    let (mut held, refused) = storm(vec![ip(2); 40]).await;
    assert_eq!((held.len(), refused), (PER_IP, 40 - PER_IP));
    // 48 concurrent upgrades from four more addresses: exactly what is left
    // of the total (the bystanders hold two).
    let from: Vec<IpAddr> = (3..=6).flat_map(|n| vec![ip(n); 12]).collect();
    let (more, refused) = storm(from).await;
    let left = TOTAL - 2 - PER_IP;
    assert_eq!((more.len(), refused), (left, 48 - left));
    held.extend(more);
    // And it stays shut, for anyone.
    let (none, refused) = storm(vec![ip(7); 20]).await;
    assert_eq!((none.len(), refused), (0, 20));
    assert_eq!(
        metric(&metrics(addr).await, "chatflow_connections"),
        Some(TOTAL as f64)
    );
    // Plain HTTP still gets through (connections in HTTP have caps of their
    // own, twice as large).
    assert_eq!(http_get(addr, "/healthz").await.0, 200);
    assert_eq!(http_get(addr, "/readyz").await.0, 200);
    arena.assert_bystanders_fine().await;
    // The attacker lets go: slots come back.
    drop(held);
    connect_when_slot_frees(addr).await;
    arena.assert_bystanders_fine().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_connections_that_never_upgrade_are_capped_per_address() {
    // Each address may hold twice MAX_CONNECTIONS_PER_IP connections in HTTP
    // at once, and never fewer than 64; the next is closed at once,
    // unanswered, while other addresses are served.
    const PER_IP: usize = 40;
    let mut arena = arena(|c| c.max_connections_per_ip = PER_IP).await;
    let addr = arena.addr;
    let attacker = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 3));
    let mut idle = Vec::new();
    for _ in 0..2 * PER_IP {
        let socket = tokio::net::TcpSocket::new_v4().expect("socket");
        socket.bind(SocketAddr::new(attacker, 0)).expect("bind");
        let stream = socket.connect(addr).await.expect("connect");
        idle.push(stream);
    }
    // One accept loop takes connections in order: these are all counted
    // before the next one is looked at.
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket.bind(SocketAddr::new(attacker, 0)).expect("bind");
    let mut refused = socket.connect(addr).await.expect("connect");
    let mut buf = [0u8; 64];
    let read = tokio::time::timeout(Duration::from_secs(5), refused.read(&mut buf))
        .await
        .expect("closed long before the header timeout");
    assert!(
        matches!(read, Ok(0) | Err(_)),
        "closed without an answer: {read:?}"
    );
    assert_eq!(
        metric(&metrics(addr).await, "chatflow_refused_handshakes_total"),
        Some(1.0)
    );
    // Another address is served as usual.
    let other = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 4));
    Client::try_connect_from(addr, other)
        .await
        .expect("another address upgrades");
    arena.assert_bystanders_fine().await;
    // Once the idle connections go, the address is served again.
    drop(idle);
    eventually("the address is served again", || async {
        Client::try_connect_from(addr, attacker).await.is_ok()
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_connection_churn_keeps_memory_flat() {
    const ROUNDS: usize = 8;
    /// Rounds before the measurement starts: the allocator's arenas and
    /// caches grow over the first rounds (by up to a few MiB, differently
    /// from run to run) and then level off; a leak keeps growing.
    const WARM_UP: usize = 4;
    const PER_ROUND: usize = 300;
    let mut config = test_config();
    config
        .default_rooms
        .push(("lobby".to_owned(), "Lobby".to_owned()));
    let mut arena = Arena::start(config, Box::new(token), true).await;
    let addr = arena.addr;
    let mut rss = Vec::new();
    for round in 0..ROUNDS {
        // Hand-written clients (their own memory is a few hundred bytes, so
        // what is measured is the server's), each a new user who joins a
        // room and is charged a message (NOT_A_MEMBER: it is not in general).
        let mut conns = Vec::with_capacity(PER_ROUND);
        for _ in 0..PER_ROUND {
            conns.push(RawWs::connect(addr).await);
        }
        for (i, c) in conns.iter_mut().enumerate() {
            let user = format!("churn-{round}-{i}");
            for request in [
                json!({"type": "AUTHENTICATE", "payload": {"token": token(&user)}}),
                json!({"type": "JOIN_ROOM", "payload": {"roomId": "lobby"}}),
                json!({"type": "SEND_MESSAGE", "payload": {"roomId": ROOM, "content": "hi"}, "requestId": "last"}),
            ] {
                c.text(&request.to_string()).await;
            }
        }
        for c in &mut conns {
            // Presence of later joiners may come between the replies.
            loop {
                let v = c.recv().await;
                if v["requestId"] == "last" {
                    assert_eq!(v["payload"]["code"], "NOT_A_MEMBER", "{v}");
                    break;
                }
            }
        }
        drop(conns);
        wait_metric(addr, "chatflow_connections", |v| v == 2.0).await;
        wait_metric(addr, "chatflow_room_memberships", |v| v == 2.0).await;
        rss.push(vm_rss_bytes());
        eprintln!("round {}: VmRSS {} KiB", round + 1, rss[round] / 1024);
    }
    let growth = rss[ROUNDS - 1].saturating_sub(rss[WARM_UP - 1]);
    // Under what one idle connection holds (about 5 KB), per connection
    // churned: a connection that leaked whole would fail this.
    let churned = (ROUNDS - WARM_UP) * PER_ROUND;
    assert!(
        growth < (churned * 4096) as u64,
        "RSS grew by {} KiB between round {WARM_UP} and round {ROUNDS} ({rss:?})",
        growth / 1024
    );
    arena.assert_bystanders_fine().await;
}
