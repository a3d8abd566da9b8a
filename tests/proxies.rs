//! The client address over real sockets: behind a proxy in
//! `TRUSTED_PROXIES` the per-address cap counts the address its
//! `X-Forwarded-For` names (IPv6 by its /64), every other peer is counted
//! as itself whatever it writes, connections still in HTTP are counted by
//! TCP peer with no per-address cap for a trusted proxy, the logs show the
//! client address, and a reload changes the trusted proxies live.
//!
//! The test's sockets all come from loopback: 127.0.0.1 plays the proxy
//! (bound as the local address, like `Client::try_connect_from`), 127.0.0.2
//! and up play clients that connect directly. Loopback has one IPv6
//! address (`::1`), so IPv6 clients arrive here as forwarded addresses; the
//! /64 grouping of IPv6 TCP peers is a unit test of `server::admission`.

mod common;

use chat_flow::config::Cidr;
use common::*;
use serde_json::Value;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

const PROXY: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

fn loopback(n: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 0, 0, n))
}

fn networks(list: &[&str]) -> Vec<Cidr> {
    list.iter()
        .map(|n| Cidr::parse(n).expect("a network"))
        .collect()
}

/// A TCP connection from local address `from`.
async fn tcp_from(addr: SocketAddr, from: IpAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().expect("socket");
    socket.bind(SocketAddr::new(from, 0)).expect("bind");
    socket.connect(addr).await.expect("connect")
}

/// A WebSocket upgrade from `from` with these extra header lines (a name
/// may repeat); returns the status and, on 101, the open connection.
async fn upgrade(
    addr: SocketAddr,
    from: IpAddr,
    headers: &[(&str, &str)],
) -> (u16, Option<TcpStream>) {
    let mut stream = tcp_from(addr, from).await;
    let mut request = format!(
        "GET /ws HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
    );
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    stream
        .write_all(request.as_bytes())
        .await
        .expect("write upgrade");
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    tokio::time::timeout(TIMEOUT, async {
        while !head.ends_with(b"\r\n\r\n") {
            let n = stream.read(&mut byte).await.expect("read the answer");
            assert_eq!(n, 1, "closed before answering: {head:?}");
            head.push(byte[0]);
        }
    })
    .await
    .expect("an answer");
    let text = String::from_utf8_lossy(&head);
    let status: u16 = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP answer: {text}"));
    (status, (status == 101).then_some(stream))
}

/// Upgrades that must succeed; returns the connections to hold.
async fn admitted(addr: SocketAddr, from: IpAddr, forwarded: &[&str]) -> TcpStream {
    let headers: Vec<(&str, &str)> = forwarded.iter().map(|f| ("X-Forwarded-For", *f)).collect();
    match upgrade(addr, from, &headers).await {
        (101, Some(stream)) => stream,
        (status, _) => panic!("from {from} forwarding {forwarded:?}: {status}, not 101"),
    }
}

/// An upgrade from `from` forwarding `client`, retried while it gets 503
/// (a slot frees, or a reload lands, a moment after the test asks).
async fn admitted_once_free(addr: SocketAddr, from: IpAddr, client: &str) -> TcpStream {
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    loop {
        match upgrade(addr, from, &[("X-Forwarded-For", client)]).await {
            (101, Some(stream)) => return stream,
            (503, _) if tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
            (status, _) => panic!("{client} via {from}: {status}"),
        }
    }
}

/// The status of an upgrade from `from` forwarding `forwarded`.
async fn status(addr: SocketAddr, from: IpAddr, forwarded: &[&str]) -> u16 {
    let headers: Vec<(&str, &str)> = forwarded.iter().map(|f| ("X-Forwarded-For", *f)).collect();
    upgrade(addr, from, &headers).await.0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn behind_a_trusted_proxy_the_cap_counts_each_forwarded_client() {
    let server = start_with(|c| {
        c.max_connections_per_ip = 2;
        c.trusted_proxies = networks(&["127.0.0.1/32"]);
    })
    .await;
    let addr = server.addr;
    let mut held = Vec::new();
    // Two clients behind the proxy, two connections each.
    for client in ["198.51.100.1", "198.51.100.2"] {
        for _ in 0..2 {
            held.push(admitted(addr, PROXY, &[client]).await);
        }
        assert_eq!(
            status(addr, PROXY, &[client]).await,
            503,
            "{client}'s third"
        );
    }
    // The rightmost untrusted entry counts: what the client wrote itself
    // (left of it) does not move it to a fresh address.
    assert_eq!(
        status(addr, PROXY, &["203.0.113.50, 198.51.100.1"]).await,
        503
    );
    // Lines a proxy appended are one list: the last line names the client.
    assert_eq!(
        status(addr, PROXY, &["203.0.113.51", "198.51.100.2"]).await,
        503
    );
    held.push(admitted(addr, PROXY, &["198.51.100.2", "198.51.100.3"]).await);
    // With no header, or an unparsable one, the proxy itself is the client.
    held.push(admitted(addr, PROXY, &[]).await);
    held.push(admitted(addr, PROXY, &["unknown"]).await);
    assert_eq!(status(addr, PROXY, &["not-an-address"]).await, 503);
    // The proxy's own connections did not use up its clients' allowance.
    held.push(admitted(addr, PROXY, &["198.51.100.4"]).await);
    // A slot freed by a client comes back to that client.
    drop(held.remove(0));
    held.push(admitted_once_free(addr, PROXY, "198.51.100.1").await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarded_ipv6_clients_share_a_cap_per_64() {
    let server = start_with(|c| {
        c.max_connections_per_ip = 2;
        c.trusted_proxies = networks(&["127.0.0.1/32"]);
    })
    .await;
    let addr = server.addr;
    let _a = admitted(addr, PROXY, &["2001:db8:aa:1::1"]).await;
    let _b = admitted(addr, PROXY, &["[2001:db8:aa:1:ffff::2]:443"]).await;
    assert_eq!(status(addr, PROXY, &["2001:db8:aa:1::3"]).await, 503);
    assert_eq!(status(addr, PROXY, &["2001:db8:aa:1:abcd::"]).await, 503);
    let _c = admitted(addr, PROXY, &["2001:db8:aa:2::1"]).await;
    // An IPv4-mapped IPv6 client is its IPv4 address.
    let _d = admitted(addr, PROXY, &["198.51.100.9"]).await;
    let _e = admitted(addr, PROXY, &["::ffff:198.51.100.9"]).await;
    assert_eq!(status(addr, PROXY, &["198.51.100.9"]).await, 503);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_untrusted_peers_forwarded_header_is_ignored() {
    let server = start_with(|c| {
        c.max_connections_per_ip = 2;
        c.trusted_proxies = networks(&["127.0.0.1/32"]);
    })
    .await;
    let addr = server.addr;
    let client = loopback(2);
    let _a = admitted(addr, client, &["198.51.100.1"]).await;
    let _b = admitted(addr, client, &["198.51.100.2"]).await;
    for spoofed in [
        &["198.51.100.3"][..],
        &["127.0.0.1"],
        &["198.51.100.4", "198.51.100.5"],
        &[],
    ] {
        assert_eq!(status(addr, client, spoofed).await, 503, "{spoofed:?}");
    }
    // The addresses it named were not charged: they are free.
    let _c = admitted(addr, PROXY, &["198.51.100.1"]).await;
    let _d = admitted(addr, PROXY, &["198.51.100.1"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trusted_proxies_change_live_on_reload() {
    let server = start_with(|c| c.max_connections_per_ip = 1).await;
    let addr = server.addr;
    let _proxy = admitted(addr, PROXY, &["198.51.100.1"]).await;
    assert_eq!(
        status(addr, PROXY, &["198.51.100.2"]).await,
        503,
        "no proxy is trusted yet: the header is ignored"
    );
    let mut config = test_config();
    config.max_connections_per_ip = 1;
    config.trusted_proxies = networks(&["127.0.0.0/30"]);
    server.reload(config).await;
    let _client = admitted_once_free(addr, PROXY, "198.51.100.2").await;
    let _other = admitted(addr, loopback(2), &["198.51.100.3"]).await;
    assert_eq!(status(addr, PROXY, &["198.51.100.2"]).await, 503);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_in_http_are_capped_per_tcp_peer_except_a_trusted_proxy() {
    // With MAX_CONNECTIONS_PER_IP=1 a peer may have 64 connections in HTTP
    // at once. A trusted proxy's connections carry many clients: it may
    // have more (only the total caps it); any other peer is closed on
    // accept past 64.
    let server = start_with(|c| {
        c.max_connections_per_ip = 1;
        c.trusted_proxies = networks(&["127.0.0.1/32"]);
    })
    .await;
    let addr = server.addr;
    let mut idle = Vec::new();
    for _ in 0..80 {
        idle.push(tcp_from(addr, PROXY).await);
    }
    // The last of them is served: it was not closed on accept.
    let last = idle.last_mut().expect("a connection");
    last.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .expect("write");
    let mut answer = [0u8; 12];
    tokio::time::timeout(TIMEOUT, last.read_exact(&mut answer))
        .await
        .expect("answered in time")
        .expect("answered");
    assert_eq!(&answer, b"HTTP/1.1 200");
    // An untrusted peer gets 64, and the next is closed unanswered.
    let client = loopback(3);
    for _ in 0..64 {
        idle.push(tcp_from(addr, client).await);
    }
    let mut refused = tcp_from(addr, client).await;
    let mut buf = [0u8; 16];
    let read = tokio::time::timeout(TIMEOUT, refused.read(&mut buf))
        .await
        .expect("closed long before the header timeout");
    assert!(
        matches!(read, Ok(0) | Err(_)),
        "closed unanswered: {read:?}"
    );
}

/// The `span` of the first log line in a connection span whose `peer` is
/// `peer`.
fn conn_span_of(peer: &str) -> Option<Value> {
    logs()
        .lines()
        .into_iter()
        .map(|l| l["span"].clone())
        .find(|span| span["name"] == "conn" && span["peer"] == peer)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_show_the_client_address_and_the_tcp_peer() {
    logs();
    let server = start_with(|c| c.trusted_proxies = networks(&["127.0.0.1/32"])).await;
    let addr = server.addr;
    let forwarded = admitted(addr, PROXY, &["198.51.100.77"]).await;
    let direct = admitted(addr, loopback(4), &["198.51.100.78"]).await;
    // Their ends are logged in their spans.
    drop((forwarded, direct));
    let mut spans = None;
    eventually("both connections' ends are logged", || {
        spans = conn_span_of("198.51.100.77").zip(conn_span_of("127.0.0.4"));
        std::future::ready(spans.is_some())
    })
    .await;
    let (forwarded, direct) = spans.expect("both");
    let tcp_peer = |span: &Value| -> SocketAddr {
        span["tcp_peer"]
            .as_str()
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| panic!("tcp_peer: {span}"))
    };
    assert_eq!(tcp_peer(&forwarded).ip(), PROXY, "{forwarded}");
    assert_eq!(tcp_peer(&direct).ip(), loopback(4), "{direct}");
    assert!(
        conn_span_of("198.51.100.78").is_none(),
        "a spoofed header is not logged as the client"
    );
}
