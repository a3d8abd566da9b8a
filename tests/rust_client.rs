//! The library's reconnecting client against the real server: it delivers
//! every message exactly once in order, resumes rooms with `sinceSeq` after a
//! dropped connection, and resends unacknowledged messages without creating
//! duplicates.

mod common;

use std::time::Duration;

use chat_flow::client::{self, ClientOptions, Command, Event, TcpConnector};
use chat_flow::protocol::MessageKind;
use tokio::sync::mpsc::Receiver;

async fn next_matching(events: &mut Receiver<Event>, mut f: impl FnMut(&Event) -> bool) -> Event {
    tokio::time::timeout(common::TIMEOUT, async {
        loop {
            let e = events.recv().await.expect("client running");
            if f(&e) {
                return e;
            }
        }
    })
    .await
    .expect("event within the timeout")
}

fn options(addr: std::net::SocketAddr, seed: u64) -> ClientOptions {
    ClientOptions {
        seed,
        backoff_base_ms: 10,
        backoff_max_ms: 50,
        ..ClientOptions::new(addr.to_string())
    }
}

#[tokio::test]
async fn messages_arrive_once_in_order_across_a_dropped_connection() {
    let server = common::start().await;
    let addr = server.addr;
    let (alice, mut alice_events, _a) = client::spawn(
        TcpConnector(addr),
        || common::token("alice"),
        options(addr, 1),
    );
    let (bob, mut bob_events, _b) = client::spawn(
        TcpConnector(addr),
        || common::token("bob"),
        options(addr, 2),
    );
    alice.join("general").await;
    bob.join("general").await;
    next_matching(&mut alice_events, |e| matches!(e, Event::Joined { .. })).await;
    next_matching(&mut bob_events, |e| matches!(e, Event::Joined { .. })).await;

    for i in 0..3 {
        alice.send("general", &format!("before {i}")).await;
    }
    for _ in 0..3 {
        next_matching(&mut bob_events, |e| matches!(e, Event::Message(_))).await;
    }
    // Bob loses his connection; Alice keeps talking meanwhile.
    bob.command(Command::Drop).await;
    next_matching(&mut bob_events, |e| matches!(e, Event::Disconnected { .. })).await;
    for i in 0..3 {
        alice.send("general", &format!("after {i}")).await;
    }
    let joined = next_matching(&mut bob_events, |e| matches!(e, Event::Joined { .. })).await;
    assert!(
        matches!(
            joined,
            Event::Joined {
                recovered: Some(true),
                ..
            }
        ),
        "{joined:?}"
    );
    let mut seqs = Vec::new();
    while seqs.len() < 3 {
        if let Event::Message(m) =
            next_matching(&mut bob_events, |e| matches!(e, Event::Message(_))).await
        {
            seqs.push(m.seq);
        }
    }
    assert_eq!(seqs, vec![4, 5, 6]);
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_send_while_disconnected_is_delivered_once_after_reconnecting() {
    let server = common::start().await;
    let addr = server.addr;
    let (alice, mut events, _a) = client::spawn(
        TcpConnector(addr),
        || common::token("alice"),
        options(addr, 3),
    );
    alice.join("general").await;
    next_matching(&mut events, |e| matches!(e, Event::Joined { .. })).await;
    alice.command(Command::Drop).await;
    alice
        .command(Command::Send {
            room: "general".into(),
            content: "queued".into(),
            kind: MessageKind::Text,
            client_message_id: Some("fixed-1".into()),
        })
        .await;
    let acked = next_matching(&mut events, |e| matches!(e, Event::Acked { .. })).await;
    assert!(
        matches!(&acked, Event::Acked { client_message_id, seq: 1, .. } if client_message_id == "fixed-1"),
        "{acked:?}"
    );
    // Resending the same clientMessageId stores nothing new.
    alice
        .command(Command::Send {
            room: "general".into(),
            content: "queued".into(),
            kind: MessageKind::Text,
            client_message_id: Some("fixed-1".into()),
        })
        .await;
    let again = next_matching(&mut events, |e| matches!(e, Event::Acked { .. })).await;
    assert!(matches!(again, Event::Acked { seq: 1, .. }), "{again:?}");
    alice.send("general", "next").await;
    let next = next_matching(&mut events, |e| matches!(e, Event::Acked { .. })).await;
    assert!(matches!(next, Event::Acked { seq: 2, .. }), "{next:?}");
    tokio::time::sleep(Duration::from_millis(10)).await;
    alice.close().await;
    next_matching(&mut events, |e| matches!(e, Event::Stopped)).await;
    server.shutdown().await.unwrap();
}
