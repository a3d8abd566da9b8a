//! The attack suite: every case plays a known attack against a real server
//! and asserts (1) the exact outcome the contract (or, where it is silent,
//! the server) defines — HTTP status, close code, `ERROR` code — and (2) that
//! nobody else noticed: each case runs in an [`Arena`] with two bystanders,
//! authenticated and joined to `general`, who still exchange a message both
//! ways after the attack ([`Arena::assert_bystanders_fine`]).
//!
//! Bystanders are strict: the next frame each of them reads must be the
//! other's message, so a case whose attack is visible in the room (presence,
//! typing, flooded messages) asserts exactly what the bystanders saw first.
//!
//! No assertion is about speed: timeouts only detect hangs.

mod common;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::LazyLock;
use std::time::Duration;

use chat_flow::auth::TokenSpec;
use chat_flow::config::{Config, DEV_JWT_SECRET};
use chat_flow::frame::{self, OpCode};
use chat_flow::server::{HEADER_READ_TIMEOUT, HEADERS_MAX, RunningServer};
use common::*;
use futures_util::future::join_all;
use jsonwebtoken::{Algorithm, EncodingKey};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};
use tokio::time::Instant;

/// The bystanders' room.
const ROOM: &str = "general";

/// Every case holds this shared; the memory case holds it exclusively, so
/// that the process's RSS it measures is its own doing (the tests of this
/// file share one process).
static EXCLUSIVE: LazyLock<RwLock<()>> = LazyLock::new(|| RwLock::new(()));

/// Mints a valid token for a user id on the arena's server.
type Mint = Box<dyn Fn(&str) -> String + Send + Sync>;

#[allow(dead_code)] // held for its Drop
enum Guard {
    Shared(RwLockReadGuard<'static, ()>),
    Exclusive(RwLockWriteGuard<'static, ()>),
}

/// A server under attack, and two bystanders in `general` who must not
/// notice.
struct Arena {
    addr: SocketAddr,
    /// `bystander-a`.
    a: Client,
    /// `bystander-b`.
    b: Client,
    mint: Mint,
    exchanges: u32,
    _server: RunningServer,
    _guard: Guard,
}

/// An arena on the defaults changed by `f`, with dev-secret tokens.
async fn arena(f: impl FnOnce(&mut Config)) -> Arena {
    let mut config = test_config();
    f(&mut config);
    Arena::start(config, Box::new(token), false).await
}

impl Arena {
    async fn start(config: Config, mint: Mint, exclusive: bool) -> Arena {
        let guard = if exclusive {
            Guard::Exclusive(EXCLUSIVE.write().await)
        } else {
            Guard::Shared(EXCLUSIVE.read().await)
        };
        let server = RunningServer::start(config).await.expect("server starts");
        let addr = server.addr;
        let mut a = Client::connect(addr).await;
        a.auth_token(&mint("bystander-a")).await;
        a.join(ROOM).await;
        let mut b = Client::connect(addr).await;
        b.auth_token(&mint("bystander-b")).await;
        b.join(ROOM).await;
        let joined = a.expect_type("USER_JOINED").await;
        assert_eq!(joined["payload"]["user"]["userId"], "bystander-b");
        Arena {
            addr,
            a,
            b,
            mint,
            exchanges: 0,
            _server: server,
            _guard: guard,
        }
    }

    /// A connection authenticated as `user` with a valid token.
    async fn attacker(&self, user: &str) -> Client {
        let mut c = Client::connect(self.addr).await;
        c.auth_token(&(self.mint)(user)).await;
        c
    }

    /// The bystanders still talk: a message each way, each the very next
    /// frame the other reads (within the usual 5 s), in `seq` order.
    async fn assert_bystanders_fine(&mut self) {
        self.exchanges += 1;
        let n = self.exchanges;
        let there = format!("a to b after the attack ({n})");
        let sent = self.a.say(ROOM, &there).await;
        let got = self.b.expect_type("NEW_MESSAGE").await;
        assert_eq!(
            got["payload"]["content"],
            there.as_str(),
            "bystander b: {got}"
        );
        assert_eq!(got["payload"]["userId"], "bystander-a");
        assert!(got.get("requestId").is_none(), "{got}");
        let back = format!("b to a after the attack ({n})");
        let answer = self.b.say(ROOM, &back).await;
        let got = self.a.expect_type("NEW_MESSAGE").await;
        assert_eq!(
            got["payload"]["content"],
            back.as_str(),
            "bystander a: {got}"
        );
        let seq = |v: &Value| v["payload"]["seq"].as_u64().expect("seq");
        assert_eq!(seq(&answer), seq(&sent) + 1, "no gap, no foreign message");
    }

    /// Both bystanders' next frame is `expected` (presence, typing, ...).
    async fn bystanders_see(&mut self, expected: &Value) {
        assert_eq!(&self.a.recv().await, expected, "bystander a");
        assert_eq!(&self.b.recv().await, expected, "bystander b");
    }
}

fn user_joined(user: &str) -> Value {
    json!({"type": "USER_JOINED", "payload": {"roomId": ROOM, "user": {"userId": user, "username": user}}})
}

fn user_left(user: &str) -> Value {
    json!({"type": "USER_LEFT", "payload": {"roomId": ROOM, "userId": user, "username": user}})
}

fn typing_update(user: &str, is_typing: bool) -> Value {
    json!({"type": "TYPING_UPDATE", "payload": {"roomId": ROOM, "userId": user, "username": user, "isTyping": is_typing}})
}

// ----- HTTP --------------------------------------------------------------

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

// ----- tokens ------------------------------------------------------------

/// `AUTHENTICATE` with `token` on a fresh connection must fail with
/// `UNAUTHORIZED` (and leave the connection usable: a valid token works
/// afterwards).
async fn refused_token(arena: &Arena, what: &str, token: &str) {
    let mut c = Client::connect(arena.addr).await;
    let v = c.request("AUTHENTICATE", json!({"token": token})).await;
    assert_eq!(v["type"], "ERROR", "{what}: {v}");
    assert_eq!(v["payload"]["code"], "UNAUTHORIZED", "{what}: {v}");
    let message = v["payload"]["message"].as_str().expect("message");
    assert!(
        token.len() < 8 || !message.contains(token),
        "{what}: the error echoes the token"
    );
    c.auth_token(&(arena.mint)("after-refusal")).await;
}

/// `AUTHENTICATE` with `token` on a fresh connection must succeed as `sub`.
async fn accepted_token(arena: &Arena, what: &str, token: &str, sub: &str) -> Client {
    let mut c = Client::connect(arena.addr).await;
    let v = c.request("AUTHENTICATE", json!({"token": token})).await;
    assert_eq!(v["type"], "AUTH_SUCCESS", "{what}: {v}");
    assert_eq!(v["payload"]["userId"], sub, "{what}");
    c
}

fn dev_key() -> EncodingKey {
    EncodingKey::from_secret(DEV_JWT_SECRET.as_bytes())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_forged_or_malformed_are_unauthorized() {
    let mut arena = arena(|_| {}).await;
    let now = now_s();
    let good = json!({"sub": "u", "exp": now + 600});
    let hs256 = json!({"alg": "HS256", "typ": "JWT"});
    let valid = jws(&hs256, &good, Algorithm::HS256, &dev_key());
    let [h, _, s] = <[&str; 3]>::try_from(valid.split('.').collect::<Vec<_>>()).expect("3 parts");
    let passwd = std::fs::read("/etc/passwd").unwrap_or_else(|_| b"root:x:0:0:root".to_vec());
    let cases: Vec<(&str, String)> = vec![
        (
            "alg none",
            unsigned(&json!({"alg": "none", "typ": "JWT"}), &good),
        ),
        ("alg None", unsigned(&json!({"alg": "None"}), &good)),
        ("alg NONE", unsigned(&json!({"alg": "NONE"}), &good)),
        (
            "alg none with an HS256 signature",
            format!(
                "{}.{}",
                b64url(json!({"alg": "none"}).to_string().as_bytes()),
                valid.split_once('.').unwrap().1
            ),
        ),
        (
            "no alg",
            jws(&json!({"typ": "JWT"}), &good, Algorithm::HS256, &dev_key()),
        ),
        (
            "wrong key",
            jws(
                &hs256,
                &good,
                Algorithm::HS256,
                &EncodingKey::from_secret(b"an-attacker-chosen-secret-of-32+bytes"),
            ),
        ),
        ("HS384 with the right secret", hs(Algorithm::HS384, &good)),
        ("HS512 with the right secret", hs(Algorithm::HS512, &good)),
        (
            "claims swapped under a valid signature",
            format!(
                "{h}.{}.{s}",
                b64url(
                    json!({"sub": "admin", "exp": now + 600})
                        .to_string()
                        .as_bytes()
                )
            ),
        ),
        (
            "signature stripped",
            format!("{h}.{}.", valid.split('.').nth(1).unwrap()),
        ),
        (
            "expired beyond the leeway",
            hs(Algorithm::HS256, &json!({"sub": "u", "exp": now - 60})),
        ),
        (
            "nbf in the future",
            hs(
                Algorithm::HS256,
                &json!({"sub": "u", "exp": now + 600, "nbf": now + 60}),
            ),
        ),
        ("no sub", hs(Algorithm::HS256, &json!({"exp": now + 600}))),
        (
            "numeric sub",
            hs(Algorithm::HS256, &json!({"sub": 42, "exp": now + 600})),
        ),
        ("no exp", hs(Algorithm::HS256, &json!({"sub": "u"}))),
        (
            "exp as a string",
            hs(
                Algorithm::HS256,
                &json!({"sub": "u", "exp": (now + 600).to_string()}),
            ),
        ),
        (
            "crit header, valid signature",
            jws(
                &json!({"alg": "HS256", "crit": ["exp"], "exp": now}),
                &good,
                Algorithm::HS256,
                &dev_key(),
            ),
        ),
        (
            "kid path, signed with /etc/passwd",
            jws(
                &json!({"alg": "HS256", "kid": "../../../../../../etc/passwd"}),
                &good,
                Algorithm::HS256,
                &EncodingKey::from_secret(&passwd),
            ),
        ),
        (
            "kid /dev/null, signed with an empty key",
            jws(
                &json!({"alg": "HS256", "kid": "../../../../../../dev/null"}),
                &good,
                Algorithm::HS256,
                &EncodingKey::from_secret(b""),
            ),
        ),
        (
            "kid SQL injection, signed with an empty key",
            jws(
                &json!({"alg": "HS256", "kid": "1' OR '1'='1"}),
                &good,
                Algorithm::HS256,
                &EncodingKey::from_secret(b""),
            ),
        ),
        (
            "kid SQL union, signed with the selected 'key'",
            jws(
                &json!({"alg": "HS256", "kid": "x' UNION SELECT 'attacker"}),
                &good,
                Algorithm::HS256,
                &EncodingKey::from_secret(b"attacker"),
            ),
        ),
        (
            "jku pointing elsewhere, signed with another key",
            jws(
                &json!({"alg": "HS256", "jku": "https://evil.example/jwks.json", "kid": "evil"}),
                &good,
                Algorithm::HS256,
                &EncodingKey::from_secret(b"evil"),
            ),
        ),
        ("garbage base64", "!!!.@@@.###".to_owned()),
        (
            "base64 of non-JSON",
            format!("{}.{}.{s}", b64url(b"{\"alg"), b64url(b"nope")),
        ),
        (
            "header not an object",
            format!("{}.{}.{s}", b64url(b"[\"HS256\"]"), b64url(b"{}")),
        ),
        ("two segments", format!("{h}.{s}")),
        ("four segments", format!("{valid}.{s}")),
        (
            "padded base64",
            format!("{h}==.{}.{s}", valid.split('.').nth(1).unwrap()),
        ),
        ("empty", String::new()),
        ("whitespace", " ".to_owned()),
    ];
    for (what, bad) in &cases {
        refused_token(&arena, what, bad).await;
    }
    arena.assert_bystanders_fine().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_kid_is_ignored_not_used_to_pick_a_key() {
    let mut arena = arena(|_| {}).await;
    let good = json!({"sub": "kid-user", "exp": now_s() + 600});
    // A valid signature with a hostile kid: accepted, because kid selects
    // nothing (the one configured key verifies every token).
    for kid in ["../../../../../../etc/passwd", "1' OR '1'='1", "", "\u{0}"] {
        let t = jws(
            &json!({"alg": "HS256", "kid": kid}),
            &good,
            Algorithm::HS256,
            &dev_key(),
        );
        accepted_token(&arena, &format!("kid {kid:?}"), &t, "kid-user").await;
    }
    // A kid that is not even a string (the header no longer parses as a
    // JWS header): refused, not a crash.
    for kid in [json!({"$ne": null}), json!(["a"]), json!(7)] {
        let t = jws(
            &json!({"alg": "HS256", "kid": kid}),
            &good,
            Algorithm::HS256,
            &dev_key(),
        );
        refused_token(&arena, &format!("kid {kid}"), &t).await;
    }
    arena.assert_bystanders_fine().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_leeway_accepts_a_few_seconds_and_no_more() {
    // A leeway of 20 s, so that a loaded machine's pauses cannot move a
    // token across its edge while the test looks.
    let mut arena = arena(|c| c.jwt_leeway_seconds = 20).await;
    let now = now_s();
    refused_token(
        &arena,
        "expired 40 s ago",
        &mint(&TokenSpec::new("late", now - 100, 60)),
    )
    .await;
    accepted_token(
        &arena,
        "nbf 10 s ahead",
        &hs(
            Algorithm::HS256,
            &json!({"sub": "early", "exp": now + 600, "nbf": now + 10}),
        ),
        "early",
    )
    .await;
    // Expired 12 s ago: accepted, but only until exp + leeway, then closed.
    let mut c = accepted_token(
        &arena,
        "expired 12 s ago",
        &mint(&TokenSpec::new("late", now - 72, 60)),
        "late",
    )
    .await;
    match c.next_event(Duration::from_secs(15)).await {
        Some(Event::Text(v)) => {
            assert_eq!(v["payload"]["code"], "UNAUTHORIZED", "{v}");
            assert_eq!(v["payload"]["message"], "token expired", "{v}");
        }
        other => panic!("expected ERROR token expired, got {other:?}"),
    }
    c.expect_close(1008).await;
    arena.assert_bystanders_fine().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_for_another_issuer_or_audience_are_unauthorized() {
    const ISS: &str = "https://auth.example";
    let mut config = test_config();
    config.jwt_issuer = Some(ISS.to_owned());
    config.jwt_audience = Some("chat".to_owned());
    let mint_for = |sub: &str| {
        mint(&TokenSpec {
            issuer: Some(ISS),
            audience: Some("chat"),
            ..TokenSpec::new(sub, now_s(), 3600)
        })
    };
    let mut arena = Arena::start(config, Box::new(mint_for), false).await;
    let exp = now_s() + 600;
    for (what, claims) in [
        ("no iss", json!({"sub": "u", "exp": exp, "aud": "chat"})),
        (
            "another iss",
            json!({"sub": "u", "exp": exp, "iss": "https://evil.example", "aud": "chat"}),
        ),
        (
            "iss in other case",
            json!({"sub": "u", "exp": exp, "iss": "HTTPS://AUTH.EXAMPLE", "aud": "chat"}),
        ),
        ("no aud", json!({"sub": "u", "exp": exp, "iss": ISS})),
        (
            "another aud",
            json!({"sub": "u", "exp": exp, "iss": ISS, "aud": "admin"}),
        ),
        (
            "aud list without ours",
            json!({"sub": "u", "exp": exp, "iss": ISS, "aud": ["admin", "billing"]}),
        ),
        (
            "aud list with a non-string",
            json!({"sub": "u", "exp": exp, "iss": ISS, "aud": ["chat", 1]}),
        ),
    ] {
        refused_token(&arena, what, &hs(Algorithm::HS256, &claims)).await;
    }
    let listed = hs(
        Algorithm::HS256,
        &json!({"sub": "u", "exp": exp, "iss": ISS, "aud": ["admin", "chat"]}),
    );
    accepted_token(&arena, "aud list with ours", &listed, "u").await;
    arena.assert_bystanders_fine().await;
}

/// An RS256 token for `sub` with `header`, signed with the fixture key.
fn rs256(header: &Value, sub: &str) -> String {
    let private = EncodingKey::from_rsa_pem(&std::fs::read(fixture("rsa_private.pem")).unwrap())
        .expect("RSA key");
    let claims = json!({"sub": sub, "exp": now_s() + 3600});
    jws(header, &claims, Algorithm::RS256, &private)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_hs_rs_confusion_is_unauthorized() {
    let config = public_key_config("RS256", "rsa_public.pem");
    let mint_rs = |sub: &str| rs256(&json!({"alg": "RS256", "typ": "JWT"}), sub);
    let mut arena = Arena::start(config, Box::new(mint_rs), false).await;
    let public_pem = std::fs::read(fixture("rsa_public.pem")).expect("public key");
    let claims = json!({"sub": "u", "exp": now_s() + 600});
    // The classic: the server's public key (which is public) as an HMAC secret.
    let pem_as_secret = EncodingKey::from_secret(&public_pem);
    let confused = [
        (
            "HS256 signed with the RSA public key PEM",
            jws(
                &json!({"alg": "HS256", "typ": "JWT"}),
                &claims,
                Algorithm::HS256,
                &pem_as_secret,
            ),
        ),
        (
            "alg RS256 but an HMAC signature with the PEM",
            jws(
                &json!({"alg": "RS256", "typ": "JWT"}),
                &claims,
                Algorithm::HS256,
                &pem_as_secret,
            ),
        ),
        (
            "HS256 signed with the PEM without its trailing newline",
            jws(
                &json!({"alg": "HS256"}),
                &claims,
                Algorithm::HS256,
                &EncodingKey::from_secret(public_pem.trim_ascii_end()),
            ),
        ),
        ("HS256 with the dev secret", token("u")),
        ("alg none", unsigned(&json!({"alg": "none"}), &claims)),
    ];
    for (what, t) in &confused {
        refused_token(&arena, what, t).await;
    }
    // A hostile kid on a genuine RS256 token changes nothing: kid selects no
    // key, the configured public key verifies it.
    for kid in ["../../../../../../etc/passwd", "1' OR '1'='1"] {
        let t = rs256(&json!({"alg": "RS256", "kid": kid}), "rs-user");
        accepted_token(&arena, &format!("RS256 with kid {kid:?}"), &t, "rs-user").await;
    }
    arena.assert_bystanders_fine().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_oversized_are_refused_by_the_token_cap_or_the_message_limit() {
    let mut arena = arena(|_| {}).await;
    // 60 KB: the message fits MAX_MESSAGE_BYTES (64 KiB), the token is over
    // the verifier's 8 KiB cap: a bad token (refused before any decoding),
    // UNAUTHORIZED and a failed attempt; the third closes the connection.
    let mut c = Client::connect(arena.addr).await;
    let big = "a".repeat(60_000);
    for _ in 0..3 {
        let v = c
            .fails("AUTHENTICATE", json!({"token": big}), "UNAUTHORIZED")
            .await;
        assert_eq!(v["payload"]["message"], "token is too long");
    }
    c.expect_close(1008).await;
    // At the cap exactly, the token is decoded (and refused: not a JWT);
    // one byte over, it is refused for its length.
    let mut c = Client::connect(arena.addr).await;
    let at_cap = format!(
        "{}.{}.{}",
        "a".repeat(4000),
        "b".repeat(4000),
        "c".repeat(190)
    );
    assert_eq!(at_cap.len(), 8192);
    let v = c
        .fails("AUTHENTICATE", json!({"token": at_cap}), "UNAUTHORIZED")
        .await;
    assert_ne!(v["payload"]["message"], "token is too long");
    let v = c
        .fails(
            "AUTHENTICATE",
            json!({"token": format!("{at_cap}c")}),
            "UNAUTHORIZED",
        )
        .await;
    assert_eq!(v["payload"]["message"], "token is too long");
    // Two failures so far: a good token still gets in.
    c.auth("big-token").await;
    // 1 MB: over MAX_MESSAGE_BYTES, the connection is closed with 1009.
    let mut c = Client::connect(arena.addr).await;
    c.send(json!({"type": "AUTHENTICATE", "payload": {"token": "a".repeat(1 << 20)}}))
        .await;
    c.expect_close(1009).await;
    arena.assert_bystanders_fine().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_brute_force_is_closed_with_1008_after_three_failures() {
    let mut arena = arena(|_| {}).await;
    let mut c = Client::connect(arena.addr).await;
    for guess in ["guess-1", "guess-2"] {
        c.fails("AUTHENTICATE", json!({"token": guess}), "UNAUTHORIZED")
            .await;
    }
    c.send(json!({"type": "AUTHENTICATE", "payload": {"token": "guess-3"}, "requestId": "third"}))
        .await;
    assert_eq!(c.expect_error("UNAUTHORIZED").await["requestId"], "third");
    c.expect_close(1008).await;
    arena.assert_bystanders_fine().await;
}

// ----- frames ------------------------------------------------------------

/// Reads (skipping pings and pongs) until a close frame; returns its code
/// and reason.
async fn close_of(raw: &mut RawWs) -> (u16, String) {
    loop {
        let frame = raw.read_frame().await.expect("a close frame, not EOF");
        match frame.opcode {
            op::PING | op::PONG => continue,
            op::CLOSE => {
                let code = frame.close_code().expect("a close code");
                let reason = String::from_utf8(frame.payload[2..].to_vec()).expect("UTF-8 reason");
                return (code, reason);
            }
            _ => panic!("expected a close frame, got {frame:?}"),
        }
    }
}

/// Writes `bytes` on a fresh raw WebSocket (tolerating a server that closes
/// early) and returns the close frame's code and reason.
async fn closed_by(addr: SocketAddr, bytes: &[u8]) -> (u16, String) {
    let mut raw = RawWs::connect(addr).await;
    raw.try_write_frame_bytes(bytes).await;
    close_of(&mut raw).await
}

/// Masked client frames, back to back.
fn frames(list: &[(bool, OpCode, &[u8])]) -> Vec<u8> {
    list.iter()
        .flat_map(|(fin, opcode, payload)| encode_frame(*fin, *opcode, payload))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frames_over_max_message_bytes_close_with_1009() {
    let mut arena = arena(|_| {}).await; // MAX_MESSAGE_BYTES 65536
    let addr = arena.addr;
    let too_big = (1009, "message too big".to_owned());
    // One frame, one byte over.
    let one = frames(&[(true, op::TEXT, &[b' '; 65_537])]);
    assert_eq!(closed_by(addr, &one).await, too_big);
    // Fragments, each small, together over.
    let chunk = [b' '; 16_384];
    let mut many = encode_frame(false, op::TEXT, &chunk);
    for _ in 0..4 {
        many.extend(encode_frame(false, op::CONTINUATION, &chunk));
    }
    assert_eq!(closed_by(addr, &many).await, too_big);
    // A header announcing 2^62 bytes: refused at the header, nothing reserved.
    let mut bomb = Vec::new();
    frame::put_head(&mut bomb, true, op::TEXT, Some([1, 2, 3, 4]), 1 << 62);
    assert_eq!(closed_by(addr, &bomb).await, too_big);
    arena.assert_bystanders_fine().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frames_a_flood_of_empty_continuations_is_capped_with_1009() {
    let mut arena = arena(|_| {}).await;
    let addr = arena.addr;
    // MAX_MESSAGE_BYTES / FRAGMENT_BYTES_MIN fragments per message.
    let cap = 65_536 / chat_flow::server::conn::FRAGMENT_BYTES_MIN;
    let message = br#"{"type":"PING","requestId":"many-fragments"}"#;
    let fragmented = |fragments: usize| {
        let mut bytes = encode_frame(false, op::TEXT, message);
        for _ in 1..fragments - 1 {
            bytes.extend(encode_frame(false, op::CONTINUATION, b""));
        }
        bytes.extend(encode_frame(true, op::CONTINUATION, b""));
        bytes
    };
    // At the cap: an ordinary message.
    let mut raw = RawWs::connect(addr).await;
    raw.try_write_frame_bytes(&fragmented(cap)).await;
    let v = raw.recv().await;
    assert_eq!(
        (&v["payload"]["code"], &v["requestId"]),
        (&json!("UNAUTHORIZED"), &json!("many-fragments"))
    );
    // One past it.
    assert_eq!(
        closed_by(addr, &fragmented(cap + 1)).await,
        (1009, "too many fragments".to_owned())
    );
    // A flood of 100,000 empty continuations that never ends the message.
    let mut flood = encode_frame(false, op::TEXT, b"{");
    for _ in 0..100_000 {
        flood.extend(encode_frame(false, op::CONTINUATION, b""));
    }
    assert_eq!(
        closed_by(addr, &flood).await,
        (1009, "too many fragments".to_owned())
    );
    arena.assert_bystanders_fine().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frames_invalid_utf8_closes_with_1007() {
    let mut arena = arena(|_| {}).await;
    let addr = arena.addr;
    let invalid = (1007, "invalid UTF-8".to_owned());
    for bytes in [
        &b"{\"type\":\"PING\",\"x\":\"\xff\"}"[..],
        b"{\"type\":\"PING\",\"x\":\"\xc0\xaf\"}", // overlong '/'
        b"{\"type\":\"PING\",\"x\":\"\xed\xa0\x80\"}", // UTF-8-encoded surrogate
        b"{\"type\":\"PING\",\"x\":\"\xf4\x90\x80\x80\"}", // beyond U+10FFFF
        b"{\"type\":\"PING\",\"x\":\"\xe2\x82\"}", // truncated
    ] {
        assert_eq!(
            closed_by(addr, &frames(&[(true, op::TEXT, bytes)])).await,
            invalid
        );
    }
    // Fragments that are each fine but whose whole is not.
    let split = frames(&[
        (false, op::TEXT, b"{\"type\":\"PING\",\"x\":\"\xc3"),
        (true, op::CONTINUATION, b"(\"}"),
    ]);
    assert_eq!(closed_by(addr, &split).await, invalid);
    arena.assert_bystanders_fine().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frames_binary_gets_invalid_message_and_the_connection_stays_open() {
    let mut arena = arena(|_| {}).await;
    let mut c = arena.attacker("binary").await;
    for payload in [
        &b""[..],
        b"\x00\xff",
        br#"{"type":"PING","requestId":"b"}"#,
        &[0u8; 60_000],
    ] {
        c.send_binary(payload).await;
        let v = c.expect_error("INVALID_MESSAGE").await;
        assert!(v.get("requestId").is_none(), "{v}");
    }
    c.ok("PING", json!({}), "PONG").await;
    arena.assert_bystanders_fine().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frames_control_frame_abuse_closes_with_1002() {
    let mut arena = arena(|_| {}).await;
    let addr = arena.addr;
    let protocol = |reason: &str| (1002, reason.to_owned());
    for (what, bytes, expected) in [
        (
            "ping of 126 bytes",
            frames(&[(true, op::PING, &[b'p'; 126])]),
            protocol("control frame too long"),
        ),
        (
            "fragmented ping",
            frames(&[(false, op::PING, b"a"), (true, op::CONTINUATION, b"b")]),
            protocol("fragmented control frame"),
        ),
        (
            "pong of 126 bytes",
            frames(&[(true, op::PONG, &[b'p'; 126])]),
            protocol("control frame too long"),
        ),
        (
            "close of 126 bytes",
            frames(&[(true, op::CLOSE, &[0x03, 0xe8].repeat(63))]),
            protocol("control frame too long"),
        ),
        (
            "close with a one-byte payload",
            frames(&[(true, op::CLOSE, b"\x03")]),
            protocol("invalid close frame"),
        ),
        (
            "close with a reserved code (1005)",
            frames(&[(true, op::CLOSE, &1005u16.to_be_bytes())]),
            protocol("invalid close code"),
        ),
        (
            "close with an invalid UTF-8 reason",
            frames(&[(true, op::CLOSE, b"\x03\xe8\xff")]),
            (1007, "invalid close reason".to_owned()),
        ),
    ] {
        assert_eq!(closed_by(addr, &bytes).await, expected, "{what}");
    }
    // A ping flood from a client that never reads: the connection stays up
    // and keeps answering.
    let mut raw = RawWs::connect(addr).await;
    let pings: Vec<u8> = (0..20_000)
        .flat_map(|_| encode_frame(true, op::PING, &[b'x'; 125]))
        .collect();
    raw.try_write_frame_bytes(&pings).await;
    raw.text(r#"{"type":"PING","requestId":"after-pings"}"#)
        .await;
    let mut pongs = 0;
    let v = loop {
        let frame = raw.read_frame().await.expect("not closed");
        match frame.opcode {
            op::PONG => pongs += 1,
            op::TEXT => break serde_json::from_slice::<Value>(&frame.payload).expect("JSON"),
            _ => panic!("unexpected {frame:?}"),
        }
    };
    assert_eq!(v["requestId"], "after-pings", "{v}");
    // How many pongs get through depends on the socket buffers; the cap on
    // pending ones is unit-tested (outbox::pending_pongs_are_capped). What
    // matters here: pings are still answered and the connection still serves.
    assert!(pongs >= 1, "no pong at all");
    arena.assert_bystanders_fine().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frames_broken_fragmentation_closes_with_1002() {
    let mut arena = arena(|_| {}).await;
    let addr = arena.addr;
    for (what, bytes, reason) in [
        (
            "continuation with no message started",
            frames(&[(true, op::CONTINUATION, br#"{"type":"PING"}"#)]),
            "unexpected continuation frame",
        ),
        (
            "a new text frame inside a fragmented message",
            frames(&[
                (false, op::TEXT, b"{\"type\":"),
                (true, op::TEXT, br#"{"type":"PING"}"#),
            ]),
            "expected a continuation frame",
        ),
        (
            "a new fragmented binary frame inside a fragmented text message",
            frames(&[(false, op::TEXT, b"{"), (false, op::BINARY, b"x")]),
            "expected a continuation frame",
        ),
    ] {
        assert_eq!(
            closed_by(addr, &bytes).await,
            (1002, reason.to_owned()),
            "{what}"
        );
    }
    arena.assert_bystanders_fine().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frames_reserved_bits_and_opcodes_close_with_1002() {
    let mut arena = arena(|_| {}).await;
    let addr = arena.addr;
    let ping = br#"{"type":"PING"}"#;
    for rsv in [0x40u8, 0x20, 0x10] {
        // The codec writes no reserved bit: set one in a valid frame.
        let mut bytes = encode_frame(true, op::TEXT, ping);
        bytes[0] |= rsv;
        assert_eq!(
            closed_by(addr, &bytes).await,
            (1002, "reserved bits set".to_owned()),
            "RSV bit {rsv:#x}"
        );
    }
    for opcode in (0x3u8..=0x7).chain(0xB..=0xF) {
        // No `OpCode` is unknown: put the opcode in a valid text frame's
        // first byte (FIN stays set).
        let mut bytes = encode_frame(true, op::TEXT, ping);
        bytes[0] = (bytes[0] & 0xf0) | opcode;
        assert_eq!(
            closed_by(addr, &bytes).await,
            (1002, "unknown opcode".to_owned()),
            "opcode {opcode:#x}"
        );
    }
    arena.assert_bystanders_fine().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frames_unmasked_client_frames_close_with_1002() {
    // RFC 6455 5.1: a client must mask every frame; the server closes on
    // one that is not (data or control), and reads nothing after it.
    let mut arena = arena(|_| {}).await;
    let unmasked = |opcode: OpCode, payload: &[u8]| {
        let mut bytes = Vec::new();
        frame::put_frame(&mut bytes, true, opcode, None, payload);
        bytes
    };
    for first in [
        unmasked(op::TEXT, br#"{"type":"PING","requestId":"unmasked"}"#),
        unmasked(op::PING, b"hello"),
    ] {
        let mut bytes = first;
        bytes.extend(encode_frame(
            true,
            op::TEXT,
            br#"{"type":"PING","requestId":"after"}"#,
        ));
        let mut raw = RawWs::connect(arena.addr).await;
        assert!(raw.try_write_frame_bytes(&bytes).await);
        let frame = raw.read_frame().await.expect("a close frame, not EOF");
        assert_eq!(frame.opcode, op::CLOSE, "nothing answered first: {frame:?}");
        assert_eq!(frame.close_code(), Some(1002));
        assert_eq!(&frame.payload[2..], b"unmasked frame");
    }
    arena.assert_bystanders_fine().await;
}

// ----- JSON --------------------------------------------------------------

/// Sends `text` and expects `ERROR INVALID_MESSAGE` with `request_id` (or
/// none).
async fn invalid(c: &mut Client, what: &str, text: &str, request_id: Option<&str>) {
    c.send_text(text).await;
    let v = c.recv().await;
    assert_eq!(v["type"], "ERROR", "{what}: {v}");
    assert_eq!(v["payload"]["code"], "INVALID_MESSAGE", "{what}: {v}");
    assert_eq!(
        v.get("requestId").and_then(Value::as_str),
        request_id,
        "{what}: {v}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_bombs_get_invalid_message_and_the_connection_stays_usable() {
    // Raised so that 100,000 brackets and 10,000 fields fit in one message.
    let mut arena = arena(|c| c.max_message_bytes = 256 * 1024).await;
    let mut c = arena.attacker("json").await;
    c.join(ROOM).await;
    arena.bystanders_see(&user_joined("json")).await;

    // Deep nesting: simd-json stops at depth 1024 (malformed JSON, so no
    // requestId); below that an unknown field is ignored like any other.
    let nested = |depth: usize| {
        format!(
            r#"{{"type":"PING","requestId":"deep","x":{}{}}}"#,
            "[".repeat(depth),
            "]".repeat(depth)
        )
    };
    c.send_text(&nested(1_000)).await;
    assert_eq!(c.expect_type("PONG").await["requestId"], "deep");
    invalid(&mut c, "1,100 nested arrays", &nested(1_100), None).await;
    invalid(&mut c, "100,000 [", &"[".repeat(100_000), None).await;
    invalid(
        &mut c,
        "100,000 balanced [] in an unknown field",
        &nested(100_000),
        None,
    )
    .await;
    let deep_objects = format!(
        r#"{{"type":"PING","requestId":"deep","x":{}1{}}}"#,
        r#"{"a":"#.repeat(20_000),
        "}".repeat(20_000)
    );
    invalid(&mut c, "20,000 nested objects", &deep_objects, None).await;

    // Huge numbers: simd-json refuses integers beyond 64 bits and floats
    // beyond f64 as malformed JSON (so no requestId can be read); a number
    // in range but not a valid value is refused with the requestId.
    for (what, text, request_id) in [
        (
            "1e999999",
            r#"{"type":"GET_HISTORY","payload":{"roomId":"general","beforeSeq":1e999999},"requestId":"n"}"#,
            None,
        ),
        (
            "-1e999999",
            r#"{"type":"JOIN_ROOM","payload":{"roomId":"general","sinceSeq":-1e999999},"requestId":"n"}"#,
            None,
        ),
        (
            "20-digit limit",
            r#"{"type":"GET_HISTORY","payload":{"roomId":"general","limit":99999999999999999999},"requestId":"n"}"#,
            None,
        ),
        (
            "u64::MAX + 1 sinceSeq",
            r#"{"type":"JOIN_ROOM","payload":{"roomId":"general","sinceSeq":18446744073709551616},"requestId":"n"}"#,
            None,
        ),
        (
            "u64::MAX limit",
            r#"{"type":"GET_HISTORY","payload":{"roomId":"general","limit":18446744073709551615},"requestId":"n"}"#,
            Some("n"),
        ),
        (
            "fractional limit",
            r#"{"type":"GET_HISTORY","payload":{"roomId":"general","limit":1.5},"requestId":"n"}"#,
            Some("n"),
        ),
    ] {
        invalid(&mut c, what, text, request_id).await;
    }
    // u64::MAX is a well-formed seq: beyond the room's last, so nothing is
    // recovered and every retained message comes back.
    let v = c
        .ok(
            "JOIN_ROOM",
            json!({"roomId": ROOM, "sinceSeq": u64::MAX}),
            "ROOM_JOINED",
        )
        .await;
    assert_eq!(v["payload"]["recovered"], false, "{v}");
    let v = c
        .ok(
            "GET_HISTORY",
            json!({"roomId": ROOM, "beforeSeq": u64::MAX}),
            "HISTORY",
        )
        .await;
    assert_eq!(v["payload"]["hasMore"], false, "{v}");

    // Duplicate keys: the first one counts.
    c.send_text(r#"{"type":"PING","type":"LIST_ROOMS","requestId":"dup"}"#)
        .await;
    let v = c.recv().await;
    assert_eq!(
        (&v["type"], &v["requestId"]),
        (&json!("PONG"), &json!("dup")),
        "{v}"
    );
    c.send_text(r#"{"type":"SEND_MESSAGE","payload":{"roomId":"general","content":"first","content":"second"},"requestId":"dup2"}"#)
        .await;
    let v = c.expect_type("NEW_MESSAGE").await;
    assert_eq!(v["payload"]["content"], "first", "{v}");
    for by in [&mut arena.a, &mut arena.b] {
        assert_eq!(
            by.expect_type("NEW_MESSAGE").await["payload"]["content"],
            "first"
        );
    }

    // Not an object.
    invalid(
        &mut c,
        "top-level array",
        r#"[{"type":"PING","requestId":"arr"}]"#,
        None,
    )
    .await;
    invalid(&mut c, "top-level string", r#""PING""#, None).await;

    // 10,000 unknown fields, at the top and in the payload: ignored.
    let fields: String = (0..10_000).map(|i| format!(r#""f{i}":{i},"#)).collect();
    let text =
        format!(r#"{{{fields}"type":"PING","payload":{{{fields}"x":0}},"requestId":"fields"}}"#);
    assert!(text.len() < 256 * 1024);
    c.send_text(&text).await;
    let v = c.recv().await;
    assert_eq!(
        (&v["type"], &v["requestId"]),
        (&json!("PONG"), &json!("fields")),
        "{v}"
    );

    // Escapes.
    invalid(
        &mut c,
        "lone surrogate",
        r#"{"type":"SEND_MESSAGE","payload":{"roomId":"general","content":"\ud800"},"requestId":"s"}"#,
        None,
    )
    .await;
    invalid(
        &mut c,
        "only escaped newlines",
        &format!(
            r#"{{"type":"SEND_MESSAGE","payload":{{"roomId":"general","content":"{}"}},"requestId":"nl"}}"#,
            "\\n".repeat(3_000)
        ),
        Some("nl"),
    )
    .await;
    invalid(
        &mut c,
        "4001 escaped NULs",
        &format!(
            r#"{{"type":"SEND_MESSAGE","payload":{{"roomId":"general","content":"{}"}},"requestId":"nul"}}"#,
            "\\u0000".repeat(4_001)
        ),
        Some("nul"),
    )
    .await;
    // Within the rules, escapes are just characters: stored and delivered
    // exactly (the contract has no rule against control characters in
    // content).
    for content in [
        "\u{0}",
        &format!("x{}", "\n".repeat(3_999)),
        "\u{fffd}\u{10ffff}",
    ] {
        let sent = c.say(ROOM, content).await;
        assert_eq!(sent["payload"]["content"], content);
        for by in [&mut arena.a, &mut arena.b] {
            assert_eq!(
                by.expect_type("NEW_MESSAGE").await["payload"]["content"],
                content
            );
        }
    }
    // Still usable after all of it.
    c.ok("PING", json!({}), "PONG").await;

    // Invalid UTF-8 inside a string is a frame-level error: 1007.
    let mut raw = RawWs::connect(arena.addr).await;
    raw.text(&json!({"type": "AUTHENTICATE", "payload": {"token": token("raw")}}).to_string())
        .await;
    assert_eq!(raw.recv().await["type"], "AUTH_SUCCESS");
    raw.write_frame(
        true,
        op::TEXT,
        b"{\"type\":\"SEND_MESSAGE\",\"payload\":{\"roomId\":\"general\",\"content\":\"\xc3\x28\"}}",
    )
    .await;
    assert_eq!(close_of(&mut raw).await, (1007, "invalid UTF-8".to_owned()));

    drop(c);
    arena.bystanders_see(&user_left("json")).await;
    arena.assert_bystanders_fine().await;
}

// ----- floods ------------------------------------------------------------

/// A rate-limit window so long that nothing refills during a test: every
/// count below is exact.
const NO_REFILL_MS: u64 = 3_600_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flood_of_messages_is_rate_limited_then_closed_with_1008() {
    let mut arena = arena(|c| {
        c.rate_limit_messages = 5;
        c.rate_limit_window_ms = NO_REFILL_MS;
        c.rate_limit_disconnect_after = 10;
    })
    .await;
    let mut flooder = arena.attacker("flooder").await;
    flooder.join(ROOM).await;
    arena.bystanders_see(&user_joined("flooder")).await;
    for i in 1..=40 {
        flooder
            .send(json!({"type": "SEND_MESSAGE", "payload": {"roomId": ROOM, "content": format!("spam {i}")}, "requestId": format!("m{i}")}))
            .await;
    }
    let (replies, code) = flooder.drain_until_close(TIMEOUT).await;
    assert_eq!(code, Some(1008));
    assert_eq!(replies.len(), 15, "{replies:?}");
    for (i, v) in replies.iter().enumerate() {
        assert_eq!(v["requestId"], format!("m{}", i + 1));
        if i < 5 {
            assert_eq!(v["type"], "NEW_MESSAGE", "{v}");
        } else {
            assert_eq!(v["payload"]["code"], "RATE_LIMIT_EXCEEDED", "{v}");
            assert!(retry_after(v) > 0, "{v}");
        }
    }
    // The room saw exactly the five accepted, in order, then the flooder go.
    for i in 1..=5 {
        for by in [&mut arena.a, &mut arena.b] {
            let v = by.expect_type("NEW_MESSAGE").await;
            assert_eq!(v["payload"]["content"], format!("spam {i}"));
            assert_eq!(v["payload"]["seq"], i);
        }
    }
    arena.bystanders_see(&user_left("flooder")).await;
    assert_eq!(
        metric(
            &metrics(arena.addr).await,
            "chatflow_rate_limit_rejections_total"
        ),
        Some(10.0)
    );
    arena.assert_bystanders_fine().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flood_of_typing_is_deduplicated_then_rate_limited() {
    let mut arena = arena(|c| {
        c.rate_limit_requests = 100;
        c.rate_limit_window_ms = NO_REFILL_MS;
        c.rate_limit_disconnect_after = 50;
        c.typing_timeout_ms = 60_000;
    })
    .await;
    let mut typist = arena.attacker("typist").await; // request 1
    typist.join(ROOM).await; // request 2
    arena.bystanders_see(&user_joined("typist")).await;
    for _ in 0..500 {
        typist
            .send(json!({"type": "TYPING_STATUS", "payload": {"roomId": ROOM, "isTyping": true}, "requestId": "t"}))
            .await;
    }
    // 98 accepted (no reply), then 50 rejected in a row, then 1008.
    let (replies, code) = typist.drain_until_close(TIMEOUT).await;
    assert_eq!(code, Some(1008));
    assert_eq!(replies.len(), 50, "{replies:?}");
    assert!(
        replies
            .iter()
            .all(|v| v["payload"]["code"] == "RATE_LIMIT_EXCEEDED" && v["requestId"] == "t")
    );
    // The room saw one indicator, its end when the typist went, and the
    // typist leaving.
    arena.bystanders_see(&typing_update("typist", true)).await;
    arena.bystanders_see(&typing_update("typist", false)).await;
    arena.bystanders_see(&user_left("typist")).await;
    arena.assert_bystanders_fine().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flood_of_joins_and_leaves_is_bounded_by_the_request_limit() {
    let mut arena = arena(|c| {
        c.rate_limit_requests = 21;
        c.rate_limit_window_ms = NO_REFILL_MS;
        c.rate_limit_disconnect_after = 10;
    })
    .await;
    let mut churn = arena.attacker("churn").await; // request 1 of 21
    for i in 0..100 {
        let kind = if i % 2 == 0 {
            "JOIN_ROOM"
        } else {
            "LEAVE_ROOM"
        };
        churn
            .send(json!({"type": kind, "payload": {"roomId": ROOM}, "requestId": format!("j{i}")}))
            .await;
    }
    let (replies, code) = churn.drain_until_close(TIMEOUT).await;
    assert_eq!(code, Some(1008));
    assert_eq!(replies.len(), 30, "{replies:?}");
    for (i, v) in replies.iter().enumerate() {
        assert_eq!(v["requestId"], format!("j{i}"));
        let expected = match i {
            0..20 if i % 2 == 0 => "ROOM_JOINED",
            0..20 => "ROOM_LEFT",
            _ => "ERROR",
        };
        assert_eq!(v["type"], expected, "{v}");
    }
    // Each accepted join and leave was news to the room, and nothing else.
    for _ in 0..10 {
        arena.bystanders_see(&user_joined("churn")).await;
        arena.bystanders_see(&user_left("churn")).await;
    }
    arena.assert_bystanders_fine().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flood_of_create_room_is_capped_by_rooms_per_user_max() {
    let mut arena = arena(|c| c.rooms_per_user_max = 5).await;
    let mut spammer = arena.attacker("spammer").await;
    for i in 0..50 {
        spammer
            .send(json!({"type": "CREATE_ROOM", "payload": {"name": format!("spam {i}")}, "requestId": format!("c{i}")}))
            .await;
    }
    for i in 0..50 {
        let v = spammer.recv().await;
        assert_eq!(v["requestId"], format!("c{i}"));
        if i < 5 {
            assert_eq!(v["type"], "ROOM_CREATED", "{v}");
        } else {
            assert_eq!(v["payload"]["code"], "FORBIDDEN", "{v}");
        }
    }
    // Per user, not per connection.
    let mut again = arena.attacker("spammer").await;
    again
        .fails("CREATE_ROOM", json!({"name": "one more"}), "FORBIDDEN")
        .await;
    assert_eq!(
        metric(&metrics(arena.addr).await, "chatflow_rooms"),
        Some(6.0)
    );
    let list = arena.a.ok("LIST_ROOMS", json!({}), "ROOM_LIST").await;
    assert_eq!(list["payload"]["rooms"].as_array().expect("rooms").len(), 6);
    arena.assert_bystanders_fine().await;
}

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
