//! Floods of requests: messages, typing, joins and leaves, room creation.

use serde_json::json;

use crate::common::*;
use crate::harness::*;

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
