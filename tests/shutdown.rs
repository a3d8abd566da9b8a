//! Shutdown: drain with 1001 close frames, 503 for new upgrades and
//! /readyz while /healthz stays 200, and a clean return.

mod common;

use std::time::Duration;

use common::*;
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
