//! Addresses: the per-address cap behind a reverse proxy. The arena trusts
//! 127.0.0.1 as a proxy (`TRUSTED_PROXIES`); its bystanders connect from
//! there without `X-Forwarded-For`, so they count as the proxy itself.
//!
//! The configuration is built from variables, as the binary builds it.
//! Loopback has one IPv6 address, so IPv6 clients arrive as forwarded
//! addresses; the /64 grouping of IPv6 TCP peers is unit tested in
//! `server::admission`.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use chat_flow::config::Config;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

use crate::common::*;
use crate::harness::*;

const PROXY: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

/// An arena behind a proxy at 127.0.0.1, `per_ip` connections per client.
async fn behind_proxy(per_ip: usize) -> Arena {
    let per_ip = per_ip.to_string();
    let config = Config::from_lookup(|var| {
        let value = match var {
            "HOST" => "127.0.0.1",
            "PORT" => "0",
            "PRESENCE_DELAY_MS" => "0",
            "TRUSTED_PROXIES" => "127.0.0.1/32",
            "MAX_CONNECTIONS_PER_IP" => &per_ip,
            _ => return None,
        };
        Some(value.to_owned())
    })
    .expect("valid");
    Arena::start(config, Box::new(token), false).await
}

/// A WebSocket upgrade from local address `from` with one
/// `X-Forwarded-For` line per entry of `forwarded`: the status, and on 101
/// the connection to hold.
async fn upgrade(addr: SocketAddr, from: IpAddr, forwarded: &[&str]) -> (u16, Option<TcpStream>) {
    let socket = TcpSocket::new_v4().expect("socket");
    socket.bind(SocketAddr::new(from, 0)).expect("bind");
    let mut stream = socket.connect(addr).await.expect("connect");
    let mut request = format!(
        "GET /ws HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
    );
    for value in forwarded {
        request.push_str(&format!("X-Forwarded-For: {value}\r\n"));
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes()).await.expect("write");
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    tokio::time::timeout(TIMEOUT, async {
        while !head.ends_with(b"\r\n\r\n") {
            let n = stream.read(&mut byte).await.expect("read");
            assert_eq!(n, 1, "closed unanswered: {head:?}");
            head.push(byte[0]);
        }
    })
    .await
    .expect("an answer in time");
    let status = String::from_utf8_lossy(&head)
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("a status");
    (status, (status == 101).then_some(stream))
}

/// Upgrades that must be admitted; the connections, to hold.
async fn admit(addr: SocketAddr, from: IpAddr, forwarded: &[&str], n: usize) -> Vec<TcpStream> {
    let mut held = Vec::new();
    for i in 0..n {
        match upgrade(addr, from, forwarded).await {
            (101, Some(stream)) => held.push(stream),
            (status, _) => panic!("{forwarded:?} from {from}, #{}: {status}", i + 1),
        }
    }
    held
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn addresses_behind_a_trusted_proxy_one_client_cannot_take_everyones_cap() {
    // Every user comes through the proxy. One of them opens connections up
    // to the cap: it is refused past it, and the others still get in.
    let mut arena = behind_proxy(3).await;
    let addr = arena.addr;
    let _attacker = admit(addr, PROXY, &["198.51.100.66"], 3).await;
    for lie in [&["198.51.100.66"][..], &["10.0.0.1, 198.51.100.66"]] {
        assert_eq!(upgrade(addr, PROXY, lie).await.0, 503, "{lie:?}");
    }
    let mut others = Vec::new();
    for n in 1..=10 {
        let client = format!("203.0.113.{n}");
        others.extend(admit(addr, PROXY, &[&client], 3).await);
    }
    assert_eq!(others.len(), 30);
    arena.assert_bystanders_fine().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn addresses_an_untrusted_clients_forwarded_for_does_not_dodge_the_cap() {
    // A client that is not a trusted proxy names a fresh address in every
    // request: it is counted as itself, and the addresses it names are not
    // charged either.
    let mut arena = behind_proxy(3).await;
    let addr = arena.addr;
    let attacker = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 9));
    let mut held = Vec::new();
    let mut refused = 0;
    for n in 0..20 {
        let fresh = format!("198.51.100.{n}");
        match upgrade(addr, attacker, &[&fresh, "127.0.0.1"]).await {
            (101, Some(stream)) => held.push(stream),
            (503, _) => refused += 1,
            (status, _) => panic!("{status}"),
        }
    }
    assert_eq!((held.len(), refused), (3, 17));
    let _named = admit(addr, PROXY, &["198.51.100.0"], 3).await;
    arena.assert_bystanders_fine().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn addresses_of_one_ipv6_64_share_a_cap() {
    // A client given a /64 rotates through its addresses: they count as
    // one. Clients of other /64s are not affected.
    let mut arena = behind_proxy(4).await;
    let addr = arena.addr;
    let mut held = Vec::new();
    let mut refused = 0;
    for n in 1..=12 {
        let rotated = format!("2001:db8:66:1:{n:x}::{n:x}");
        match upgrade(addr, PROXY, &[&rotated]).await {
            (101, Some(stream)) => held.push(stream),
            (503, _) => refused += 1,
            (status, _) => panic!("{status}"),
        }
    }
    assert_eq!((held.len(), refused), (4, 8));
    for n in 2..=5 {
        let neighbour = format!("2001:db8:66:{n}::1");
        held.extend(admit(addr, PROXY, &[&neighbour], 4).await);
    }
    arena.assert_bystanders_fine().await;
}
