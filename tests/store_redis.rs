//! The Redis store against a real `redis-server` (started per test on a
//! free port, see tests/common/redis.rs): each operation's semantics as
//! src/store/mod.rs writes them, two nodes on one Redis, data loss, errors.
//!
//! `cargo test --test store_redis -- --nocapture` also prints a few
//! figures (publishes per second, round trips per publish): printed, never
//! asserted.

#[path = "common/redis.rs"]
mod redis_server;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use bytes::Bytes;
use chat_flow::core::{Bucket, BucketLimit, Timestamp};
use chat_flow::protocol::RoomKind;
use chat_flow::store::redis::{Notice, RedisConfig, RedisStore, StoreError, Subscriber};
use chat_flow::store::{
    BucketShape, Draft, Event, Holder, NodeId, Op, Present, Refusal, Reply, RoomRecord, Since,
    StoredMessage,
};
use redis_server::RedisServer;

const TIMEOUT: Duration = Duration::from_secs(2);
const BUCKET: BucketShape = BucketShape {
    capacity: 1000,
    window_ms: 1000,
};

fn config(server: &RedisServer) -> RedisConfig {
    RedisConfig {
        url: server.url(),
        key_prefix: "chatflow".into(),
        timeout: TIMEOUT,
    }
}

async fn store(server: &RedisServer) -> RedisStore {
    RedisStore::connect(&config(server))
        .await
        .expect("the store connects")
}

fn record(id: &str, by: Option<&str>, epoch: &str) -> RoomRecord {
    RoomRecord {
        id: id.into(),
        name: format!("Room {id}"),
        description: "about it".into(),
        kind: RoomKind::Public,
        created_at_ms: 1_700_000_000_000,
        created_by: by.map(str::to_owned),
        epoch: epoch.into(),
    }
}

fn create(id: &str, by: &str, epoch: &str, per_user: u32, max_rooms: u64) -> Op {
    Op::CreateRoom {
        record: record(id, Some(by), epoch),
        rooms_per_user_max: per_user,
        max_rooms,
    }
}

fn holder(node: &str, conn: u64) -> Holder {
    Holder {
        node: NodeId(node.into()),
        conn,
    }
}

fn draft(text: &str) -> Draft {
    Draft {
        head: Bytes::from(format!(
            "{{\"type\":\"NEW_MESSAGE\",\"payload\":{{\"content\":\"{text}\",\"seq\":"
        )),
        tail: Bytes::from_static(b"}}"),
    }
}

fn frame(text: &str, seq: u64) -> Bytes {
    draft(text).frame(seq)
}

fn publish(room: &str, user: &str, cmid: Option<&str>, text: &str, limit: u32, now: u64) -> Op {
    Op::Publish {
        room: room.into(),
        user: user.into(),
        holder: holder_of(user),
        client_message_id: cmid.map(str::to_owned),
        draft: draft(text),
        bucket: BUCKET,
        history_limit: limit,
        now_ms: now,
    }
}

fn join(room: &str, user: &str, h: Holder, since: Option<Since>, now: u64) -> Op {
    Op::Join {
        room: room.into(),
        user: user.into(),
        username: format!("name of {user}"),
        holder: h,
        granted: false,
        since,
        history_limit: 100,
        now_ms: now,
    }
}

fn leave(room: &str, user: &str, h: Holder, now: u64) -> Op {
    Op::Leave {
        room: room.into(),
        user: user.into(),
        holder: h,
        now_ms: now,
    }
}

fn present(user: &str) -> Present {
    Present {
        user: user.into(),
        username: format!("name of {user}"),
    }
}

/// The connection a test's sends and typing of `user` come from.
fn holder_of(user: &str) -> Holder {
    // FNV-1a: one number per user.
    let conn = user.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    holder("pub", conn >> 12)
}

/// `users` in `room`, from the connections their sends come from (the
/// store refuses a send from a connection not in the room).
async fn seat(store: &RedisStore, room: &str, users: &[&str], now: u64) {
    for user in users {
        match apply(store, join(room, user, holder_of(user), None, now)).await {
            Reply::Joined { .. } => {}
            other => panic!("{user} not seated in {room}: {other:?}"),
        }
    }
}

async fn apply(store: &RedisStore, op: Op) -> Reply {
    store.apply(&op).await.expect("redis answers")
}

async fn seq_of(store: &RedisStore, op: Op) -> u64 {
    match apply(store, op).await {
        Reply::Published(m, _) => m.seq,
        other => panic!("not published: {other:?}"),
    }
}

async fn subscriber(store: &RedisStore, rooms: &[&str]) -> Subscriber {
    let sub = store.subscriber().await.expect("pub/sub connects");
    for room in rooms {
        sub.subscribe(room).await.expect("subscribed");
    }
    sub
}

async fn next_event(sub: &mut Subscriber) -> Event {
    match tokio::time::timeout(Duration::from_secs(5), sub.next()).await {
        Ok(Some(Notice::Event(e))) => e,
        other => panic!("expected an event, got {other:?}"),
    }
}

async fn no_event(sub: &mut Subscriber) {
    if let Ok(n) = tokio::time::timeout(Duration::from_millis(200), sub.next()).await {
        panic!("expected no event, got {n:?}");
    }
}

/// Creates a default room (or answers the one there).
async fn ensure(store: &RedisStore, id: &str, epoch: &str) -> Reply {
    apply(
        store,
        Op::EnsureRoom {
            record: record(id, None, epoch),
        },
    )
    .await
}

/// The newest `limit` messages of `room` (HISTORY_LIMIT 100).
fn newest(room: &str, limit: u32) -> Op {
    Op::History {
        room: room.into(),
        before_seq: None,
        limit,
        history_limit: 100,
    }
}

fn heartbeat(node: &str, now_ms: u64, ttl_ms: u64) -> Op {
    Op::Heartbeat {
        node: NodeId(node.into()),
        now_ms,
        ttl_ms,
    }
}

/// The first renewal of a node: it had no lease to keep.
fn first_beat(nodes: &[&str]) -> Reply {
    Reply::Swept {
        gone: nodes.iter().map(|n| NodeId((*n).into())).collect(),
        lapsed: true,
    }
}

fn found_gone(nodes: &[&str]) -> Reply {
    Reply::Swept {
        gone: nodes.iter().map(|n| NodeId((*n).into())).collect(),
        lapsed: false,
    }
}

fn presence(room: &str, user: &str, joined: bool, member_count: u64, pseq: u64) -> Event {
    Event::Presence {
        room: room.into(),
        who: present(user),
        joined,
        member_count,
        pseq,
        last_seq: 0,
    }
}

#[tokio::test]
async fn create_room_caps_are_checked_in_order() {
    let server = RedisServer::start();
    let s = store(&server).await;
    // A default room: no caps, counts against MAX_ROOMS.
    let general = record("general", None, "e-general");
    assert_eq!(
        ensure(&s, "general", "e-general").await,
        Reply::Room(general.clone())
    );
    // EnsureRoom again: the room as stored, not the one proposed.
    assert_eq!(
        ensure(&s, "general", "e-other").await,
        Reply::Room(general.clone())
    );
    let a = create("a", "alice", "e-a", 2, 4);
    assert_eq!(
        apply(&s, a.clone()).await,
        Reply::Created(record("a", Some("alice"), "e-a"))
    );
    // Exists.
    assert_eq!(
        apply(&s, create("a", "bob", "e-a2", 2, 4)).await,
        Reply::Refused(Refusal::Exists)
    );
    assert_eq!(
        apply(&s, create("general", "bob", "x", 2, 4)).await,
        Reply::Refused(Refusal::Exists)
    );
    assert!(matches!(
        apply(&s, create("b", "alice", "e-b", 2, 4)).await,
        Reply::Created(_)
    ));
    // alice is at her limit: UserLimit before Exists and RoomLimit.
    assert_eq!(
        apply(&s, create("a", "alice", "x", 2, 3)).await,
        Reply::Refused(Refusal::UserLimit)
    );
    assert_eq!(
        apply(&s, create("c", "alice", "x", 2, 100)).await,
        Reply::Refused(Refusal::UserLimit)
    );
    // Three rooms exist: RoomLimit at 3, after Exists.
    assert_eq!(
        apply(&s, create("b", "bob", "x", 2, 3)).await,
        Reply::Refused(Refusal::Exists)
    );
    assert_eq!(
        apply(&s, create("c", "bob", "x", 2, 3)).await,
        Reply::Refused(Refusal::RoomLimit)
    );
    // A default room ignores MAX_ROOMS.
    assert!(matches!(ensure(&s, "lobby", "e-l").await, Reply::Room(_)));
    match apply(&s, Op::ListRooms).await {
        Reply::Rooms(rooms) => {
            let ids: Vec<&str> = rooms.iter().map(|r| r.record.id.as_str()).collect();
            // a and b: their creators have not joined them yet.
            assert_eq!(ids, ["general", "lobby"]);
            assert_eq!(rooms[0].record, general);
            assert!(rooms.iter().all(|r| r.member_count == 0));
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn the_epoch_stays_until_the_data_is_lost() {
    let server = RedisServer::start();
    let s = store(&server).await;
    apply(&s, create("r", "alice", "e1", 10, 10)).await;
    seat(&s, "r", &["alice"], 0).await;
    for i in 1..=3 {
        assert_eq!(
            seq_of(&s, publish("r", "alice", None, "hi", 10, i)).await,
            i
        );
    }
    // Proposed again (a node restarting): kept, with its log.
    assert_eq!(
        apply(
            &s,
            Op::EnsureRoom {
                record: record("r", Some("alice"), "e2")
            }
        )
        .await,
        Reply::Room(record("r", Some("alice"), "e1"))
    );
    let since = Some(Since {
        seq: 1,
        epoch: Some("e1".into()),
    });
    match apply(&s, join("r", "bob", holder("n1", 1), since, 5)).await {
        Reply::Joined {
            room,
            messages,
            recovered,
            ..
        } => {
            assert_eq!(room.record.epoch, "e1");
            assert_eq!(messages.iter().map(|m| m.seq).collect::<Vec<_>>(), [2, 3]);
            assert_eq!(recovered, Some(true));
        }
        other => panic!("{other:?}"),
    }
    // Redis loses the room: it is gone, and the next creation has a new
    // epoch whose seq starts at 1 with nothing left of the old log.
    server.command(&["DEL", "chatflow:room:{r}"]).unwrap();
    assert_eq!(apply(&s, newest("r", 10)).await, Reply::NotFound);
    assert_eq!(
        apply(
            &s,
            Op::EnsureRoom {
                record: record("r", Some("alice"), "e3")
            }
        )
        .await,
        Reply::Room(record("r", Some("alice"), "e3"))
    );
    let since = Some(Since {
        seq: 3,
        epoch: Some("e1".into()),
    });
    match apply(&s, join("r", "bob", holder("n1", 2), since, 6)).await {
        Reply::Joined {
            room,
            messages,
            recovered,
            users,
            ..
        } => {
            assert_eq!(room.record.epoch, "e3");
            assert!(messages.is_empty());
            assert_eq!(recovered, Some(false));
            assert_eq!(users, [present("bob")]);
        }
        other => panic!("{other:?}"),
    }
    seat(&s, "r", &["alice"], 7).await;
    assert_eq!(
        seq_of(&s, publish("r", "alice", None, "again", 10, 7)).await,
        1
    );
    // All of it lost.
    server.command(&["FLUSHDB"]).unwrap();
    assert_eq!(
        apply(&s, publish("r", "alice", None, "x", 10, 8)).await,
        Reply::NotFound
    );
    assert_eq!(
        apply(&s, create("r", "alice", "e4", 10, 10)).await,
        Reply::Created(record("r", Some("alice"), "e4"))
    );
    seat(&s, "r", &["alice"], 9).await;
    assert_eq!(seq_of(&s, publish("r", "alice", None, "x", 10, 9)).await, 1);
}

#[tokio::test]
async fn seq_is_gap_free_across_two_nodes_and_events_come_in_seq_order() {
    let server = RedisServer::start();
    let a = store(&server).await;
    let b = store(&server).await;
    ensure(&a, "r", "e").await;
    let senders = 8;
    for k in 0..senders {
        seat(&a, "r", &[&format!("u{k}")], 1).await;
    }
    let mut sub = subscriber(&b, &["r"]).await;
    let each = 50;
    let mut tasks = Vec::new();
    for k in 0..senders {
        let s = if k % 2 == 0 { a.clone() } else { b.clone() };
        tasks.push(tokio::spawn(async move {
            let mut seqs = Vec::new();
            for i in 0..each {
                let op = publish("r", &format!("u{k}"), None, &format!("{k}-{i}"), 1000, 1);
                seqs.push(seq_of(&s, op).await);
            }
            seqs
        }));
    }
    let mut all = BTreeSet::new();
    for t in tasks {
        let seqs = t.await.unwrap();
        // One sender's messages keep the order it sent them in.
        assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{seqs:?}");
        all.extend(seqs);
    }
    let n = senders * each;
    assert_eq!(all, (1..=n).collect::<BTreeSet<u64>>());
    for seq in 1..=n {
        match next_event(&mut sub).await {
            Event::Message {
                room,
                epoch,
                user,
                message,
            } => {
                assert_eq!(
                    (room.as_str(), epoch.as_str(), message.seq),
                    ("r", "e", seq)
                );
                // The sender is the one whose text the frame carries.
                let text = format!("{}-", &user[1..]);
                let frame = String::from_utf8(message.frame.to_vec()).unwrap();
                assert!(frame.contains(&format!("\"{text}")), "{user}: {frame}");
            }
            other => panic!("{other:?}"),
        }
    }
    no_event(&mut sub).await;
}

#[tokio::test]
async fn retries_match_retained_messages_only() {
    let server = RedisServer::start();
    let s = store(&server).await;
    ensure(&s, "r", "e").await;
    seat(&s, "r", &["alice", "bob", "carol"], 1).await;
    let mut sub = subscriber(&s, &["r"]).await;
    let first = apply(&s, publish("r", "alice", Some("m1"), "one", 2, 1)).await;
    assert_eq!(
        first,
        Reply::Published(
            StoredMessage {
                seq: 1,
                frame: frame("one", 1)
            },
            // After the three users came.
            3
        )
    );
    next_event(&mut sub).await;
    // The retry (even with other content) is the stored message; nothing
    // is published.
    assert_eq!(
        apply(&s, publish("r", "alice", Some("m1"), "changed", 2, 2)).await,
        Reply::Duplicate(StoredMessage {
            seq: 1,
            frame: frame("one", 1)
        })
    );
    no_event(&mut sub).await;
    // Another sender's id, and no id at all, are new messages.
    assert_eq!(
        seq_of(&s, publish("r", "bob", Some("m1"), "b", 2, 3)).await,
        2
    );
    // m1 of alice is evicted now (history 2): its retry key goes with it.
    assert_eq!(seq_of(&s, publish("r", "carol", None, "c", 2, 4)).await, 3);
    assert_eq!(
        server
            .command(&["HLEN", "chatflow:room:{r}:retry"])
            .unwrap(),
        ":1\r\n"
    );
    assert_eq!(
        seq_of(&s, publish("r", "alice", Some("m1"), "one again", 2, 5)).await,
        4
    );
    // bob's m1 is evicted too; alice's new m1 is retained.
    assert_eq!(
        apply(&s, publish("r", "alice", Some("m1"), "x", 2, 6)).await,
        Reply::Duplicate(StoredMessage {
            seq: 4,
            frame: frame("one again", 4)
        })
    );
    assert_eq!(
        seq_of(&s, publish("r", "bob", Some("m1"), "b2", 2, 7)).await,
        5
    );
    assert_eq!(
        apply(&s, newest("r", 10)).await,
        Reply::History {
            messages: vec![
                StoredMessage {
                    seq: 4,
                    frame: frame("one again", 4)
                },
                StoredMessage {
                    seq: 5,
                    frame: frame("b2", 5)
                },
            ],
            has_more: false
        }
    );
}

#[tokio::test]
async fn history_pages_backwards() {
    let server = RedisServer::start();
    let s = store(&server).await;
    ensure(&s, "r", "e").await;
    seat(&s, "r", &["u"], 1).await;
    for i in 1..=10 {
        seq_of(&s, publish("r", "u", None, &i.to_string(), 8, i)).await;
    }
    let page = |before: Option<u64>, limit: u32| Op::History {
        room: "r".into(),
        before_seq: before,
        limit,
        history_limit: 8,
    };
    let seqs = |r: Reply| match r {
        Reply::History { messages, has_more } => {
            (messages.iter().map(|m| m.seq).collect::<Vec<_>>(), has_more)
        }
        other => panic!("{other:?}"),
    };
    // The cases of core::log's pages_backwards.
    assert_eq!(seqs(apply(&s, page(None, 3)).await), (vec![8, 9, 10], true));
    assert_eq!(
        seqs(apply(&s, page(Some(8), 3)).await),
        (vec![5, 6, 7], true)
    );
    assert_eq!(seqs(apply(&s, page(Some(5), 3)).await), (vec![3, 4], false));
    assert_eq!(seqs(apply(&s, page(Some(1), 3)).await), (vec![], false));
    assert_eq!(
        seqs(apply(&s, page(Some(100), 50)).await),
        ((3..=10).collect(), false)
    );
    assert_eq!(
        seqs(apply(&s, page(Some(u64::MAX), 2)).await),
        (vec![9, 10], true)
    );
}

#[tokio::test]
async fn the_send_bucket_is_core_bucket_arithmetic() {
    let server = RedisServer::start();
    let s = store(&server).await;
    // The cases of core::bucket's burst_then_even_refill.
    let shape = BucketShape {
        capacity: 20,
        window_ms: 10_000,
    };
    let charge = |now: u64| Op::Charge {
        user: "u".into(),
        bucket: shape,
        now_ms: now,
    };
    for _ in 0..20 {
        assert_eq!(apply(&s, charge(0)).await, Reply::Charged);
    }
    assert_eq!(
        apply(&s, charge(0)).await,
        Reply::RateLimited {
            retry_after_ms: 500
        }
    );
    assert_eq!(
        apply(&s, charge(499)).await,
        Reply::RateLimited { retry_after_ms: 1 }
    );
    assert_eq!(apply(&s, charge(500)).await, Reply::Charged);
    assert_eq!(
        apply(&s, charge(500)).await,
        Reply::RateLimited {
            retry_after_ms: 500
        }
    );
    // A Publish charges the same bucket, before it looks for the room.
    let p = |now: u64| Op::Publish {
        room: "missing".into(),
        user: "u".into(),
        holder: holder_of("u"),
        client_message_id: None,
        draft: draft("x"),
        bucket: shape,
        history_limit: 10,
        now_ms: now,
    };
    assert_eq!(
        apply(&s, p(500)).await,
        Reply::RateLimited {
            retry_after_ms: 500
        }
    );
    assert_eq!(apply(&s, p(1000)).await, Reply::NotFound);
    assert_eq!(
        apply(&s, charge(1000)).await,
        Reply::RateLimited {
            retry_after_ms: 500
        }
    );

    // Seeded sequences against core::Bucket itself: random shapes, times
    // that go forward in steps of any size and sometimes back (another
    // node's clock).
    let mut rng = 0x9e37_79b9_7f4a_7c15_u64;
    let mut next = move |n: u64| {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng % n
    };
    for round in 0..20 {
        let shape = BucketShape {
            capacity: 1 + next(30),
            window_ms: 1 + next(20_000),
        };
        let limit = BucketLimit {
            capacity: shape.capacity,
            window_ms: shape.window_ms,
        };
        let user = format!("r{round}");
        let mut now = 1_700_000_000_000 + next(1_000_000);
        // A bucket never charged is full at its first charge.
        let mut model: Option<Bucket> = None;
        for _ in 0..100 {
            now = match next(10) {
                0 => now.saturating_sub(next(2000)),
                1 => now + next(3 * shape.window_ms),
                _ => now + next(shape.window_ms / 10 + 1),
            };
            let bucket = model.get_or_insert_with(|| Bucket::full(limit, Timestamp(now)));
            let expected = match bucket.try_take(limit, Timestamp(now)) {
                Ok(()) => Reply::Charged,
                Err(ms) => Reply::RateLimited { retry_after_ms: ms },
            };
            let op = Op::Charge {
                user: user.clone(),
                bucket: shape,
                now_ms: now,
            };
            assert_eq!(apply(&s, op).await, expected, "{shape:?} at {now}");
        }
    }
    // Beyond what a double holds exactly: refused, not rounded.
    let huge = Op::Charge {
        user: "u".into(),
        bucket: BucketShape {
            capacity: 1 << 30,
            window_ms: 1 << 30,
        },
        now_ms: 0,
    };
    assert!(matches!(
        s.apply(&huge).await,
        Err(StoreError::OutOfRange(_))
    ));
}

#[tokio::test]
async fn presence_is_per_user_across_nodes() {
    let server = RedisServer::start();
    let a = store(&server).await;
    let b = store(&server).await;
    apply(&a, create("r", "alice", "e", 10, 10)).await;
    let mut sub = subscriber(&b, &["r"]).await;
    // alice on node A: the first of her connections.
    match apply(&a, join("r", "alice", holder("A", 1), None, 10)).await {
        Reply::Joined {
            room,
            users,
            first_of_user,
            ..
        } => {
            assert_eq!(room.member_count, 1);
            assert_eq!(users, [present("alice")]);
            assert!(first_of_user);
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        next_event(&mut sub).await,
        presence("r", "alice", true, 1, 1)
    );
    // alice on node B: already present (her first name kept), no event.
    let op = Op::Join {
        room: "r".into(),
        user: "alice".into(),
        username: "another name".into(),
        holder: holder("B", 1),
        granted: false,
        since: None,
        history_limit: 100,
        now_ms: 11,
    };
    match apply(&b, op).await {
        Reply::Joined {
            users,
            first_of_user,
            ..
        } => {
            assert_eq!(users, [present("alice")]);
            assert!(!first_of_user);
        }
        other => panic!("{other:?}"),
    }
    // The same connection again: nothing changes.
    assert!(matches!(
        apply(&b, join("r", "alice", holder("B", 1), None, 12)).await,
        Reply::Joined {
            first_of_user: false,
            ..
        }
    ));
    // bob on B.
    match apply(&b, join("r", "bob", holder("B", 2), None, 13)).await {
        Reply::Joined {
            room,
            users,
            first_of_user,
            ..
        } => {
            assert_eq!(room.member_count, 2);
            assert_eq!(users, [present("alice"), present("bob")]);
            assert!(first_of_user);
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(next_event(&mut sub).await, presence("r", "bob", true, 2, 2));
    no_event(&mut sub).await;
    // alice leaves on A: still present through B.
    assert_eq!(
        apply(&a, leave("r", "alice", holder("A", 1), 20)).await,
        Reply::Left {
            last_of_user: false,
            member_count: 2
        }
    );
    no_event(&mut sub).await;
    assert_eq!(
        apply(&b, leave("r", "alice", holder("B", 1), 21)).await,
        Reply::Left {
            last_of_user: true,
            member_count: 1
        }
    );
    assert_eq!(
        next_event(&mut sub).await,
        presence("r", "alice", false, 1, 3)
    );
    // Leaving again changes nothing.
    assert_eq!(
        apply(&b, leave("r", "alice", holder("B", 1), 22)).await,
        Reply::Left {
            last_of_user: false,
            member_count: 1
        }
    );
    assert_eq!(
        apply(&b, leave("r", "bob", holder("B", 2), 23)).await,
        Reply::Left {
            last_of_user: true,
            member_count: 0
        }
    );
    assert_eq!(
        next_event(&mut sub).await,
        presence("r", "bob", false, 0, 4)
    );
    no_event(&mut sub).await;
    assert_eq!(
        apply(&a, leave("nowhere", "bob", holder("B", 2), 23)).await,
        Reply::NotFound
    );
    // Private rooms: the creator, or a grant.
    let mut private = record("p", Some("alice"), "e");
    private.kind = RoomKind::Private;
    apply(
        &a,
        Op::CreateRoom {
            record: private,
            rooms_per_user_max: 10,
            max_rooms: 10,
        },
    )
    .await;
    apply(&a, join("p", "alice", holder("A", 9), None, 30)).await;
    assert_eq!(
        apply(&a, join("p", "bob", holder("A", 5), None, 30)).await,
        Reply::Forbidden
    );
    assert!(matches!(
        apply(&a, join("p", "alice", holder("A", 6), None, 30)).await,
        Reply::Joined { .. }
    ));
    let granted = Op::Join {
        room: "p".into(),
        user: "bob".into(),
        username: "name of bob".into(),
        holder: holder("A", 5),
        granted: true,
        since: None,
        history_limit: 100,
        now_ms: 31,
    };
    assert!(matches!(apply(&a, granted).await, Reply::Joined { .. }));
    assert_eq!(
        apply(&a, join("nowhere", "bob", holder("A", 5), None, 30)).await,
        Reply::NotFound
    );
}

#[tokio::test]
async fn recovery_says_whether_nothing_is_missing() {
    let server = RedisServer::start();
    let s = store(&server).await;
    ensure(&s, "r", "e").await;
    seat(&s, "r", &["u"], 1).await;
    for i in 1..=7 {
        seq_of(&s, publish("r", "u", None, "m", 5, i)).await;
    }
    let mut conn = 0;
    let mut since = |seq: u64, epoch: Option<&str>| {
        conn += 1;
        join(
            "r",
            "u",
            holder("n", conn),
            Some(Since {
                seq,
                epoch: epoch.map(str::to_owned),
            }),
            10,
        )
    };
    let got = |r: Reply| match r {
        Reply::Joined {
            messages,
            recovered,
            ..
        } => (
            messages.iter().map(|m| m.seq).collect::<Vec<_>>(),
            recovered,
        ),
        other => panic!("{other:?}"),
    };
    // The cases of core::log's recovery_bounds (3..=7 retained).
    assert_eq!(
        got(apply(&s, since(2, Some("e"))).await),
        (vec![3, 4, 5, 6, 7], Some(true))
    );
    assert_eq!(got(apply(&s, since(7, None)).await), (vec![], Some(true)));
    assert_eq!(got(apply(&s, since(8, None)).await).1, Some(false));
    assert_eq!(got(apply(&s, since(1, None)).await).1, Some(false));
    assert_eq!(got(apply(&s, since(5, Some("other"))).await).1, Some(false));
    assert_eq!(
        got(apply(&s, join("r", "v", holder("m", 1), None, 10)).await),
        (vec![3, 4, 5, 6, 7], None)
    );
    ensure(&s, "empty", "e").await;
    let empty = |seq| {
        join(
            "empty",
            "u",
            holder("n", 100 + seq),
            Some(Since { seq, epoch: None }),
            10,
        )
    };
    assert_eq!(got(apply(&s, empty(0)).await), (vec![], Some(true)));
    assert_eq!(got(apply(&s, empty(1)).await), (vec![], Some(false)));
}

#[tokio::test]
async fn a_heartbeat_sweeps_the_holders_of_dead_nodes() {
    let server = RedisServer::start();
    let a = store(&server).await;
    let b = store(&server).await;
    for r in ["r1", "r2"] {
        apply(&a, create(r, "owner", r, 10, 10)).await;
        // Its creator came and went (presence changes 1 and 2).
        apply(&a, join(r, "owner", holder("O", 1), None, 0)).await;
        apply(&a, leave(r, "owner", holder("O", 1), 0)).await;
    }
    let mut sub = subscriber(&b, &["r1", "r2"]).await;
    let ttl = 1000;
    assert_eq!(apply(&a, heartbeat("A", 0, ttl)).await, first_beat(&[]));
    assert_eq!(apply(&b, heartbeat("B", 0, ttl)).await, first_beat(&[]));
    // alice: on A in r1 and r2, on B in r1. bob: twice on A in r1.
    // carol: on B in r2.
    for (s, room, user, h) in [
        (&a, "r1", "alice", holder("A", 1)),
        (&a, "r2", "alice", holder("A", 1)),
        (&b, "r1", "alice", holder("B", 7)),
        (&a, "r1", "bob", holder("A", 10)),
        (&a, "r1", "bob", holder("A", 2)),
        (&b, "r2", "carol", holder("B", 8)),
    ] {
        apply(s, join(room, user, h, None, 0)).await;
    }
    // USER_JOINED for each user's first connection in a room, in the order
    // of the joins (alice's second connection in r1 is none).
    for expected in [
        presence("r1", "alice", true, 1, 3),
        presence("r2", "alice", true, 1, 3),
        presence("r1", "bob", true, 2, 4),
        presence("r2", "carol", true, 2, 4),
    ] {
        assert_eq!(next_event(&mut sub).await, expected);
    }
    // A goes silent; B's heartbeats go on.
    assert_eq!(apply(&b, heartbeat("B", 900, ttl)).await, found_gone(&[]));
    // At 1000 A's lease has not run out *before* now.
    assert_eq!(apply(&b, heartbeat("B", 1000, ttl)).await, found_gone(&[]));
    assert_eq!(
        apply(&b, heartbeat("B", 1001, ttl)).await,
        found_gone(&["A"])
    );
    // r1: bob leaves (alice stays through B); r2: alice leaves (carol stays).
    let mut swept = vec![next_event(&mut sub).await, next_event(&mut sub).await];
    swept.sort_by(|x, y| x.room().cmp(y.room()));
    assert_eq!(
        swept,
        [
            presence("r1", "bob", false, 1, 5),
            presence("r2", "alice", false, 1, 5)
        ]
    );
    no_event(&mut sub).await;
    match apply(&b, Op::ListRooms).await {
        Reply::Rooms(rooms) => {
            assert_eq!(
                rooms.iter().map(|r| r.member_count).collect::<Vec<_>>(),
                [1, 1]
            );
        }
        other => panic!("{other:?}"),
    }
    // Swept once: the next heartbeat finds nobody gone.
    assert_eq!(apply(&b, heartbeat("B", 1500, ttl)).await, found_gone(&[]));
    // B dies too, swept by a third node: r1 and r2 are empty since then.
    assert_eq!(
        apply(&a, heartbeat("C", 5000, ttl)).await,
        first_beat(&["B"])
    );
    let mut swept = vec![next_event(&mut sub).await, next_event(&mut sub).await];
    swept.sort_by(|x, y| x.room().cmp(y.room()));
    assert_eq!(
        swept,
        [
            presence("r1", "alice", false, 0, 6),
            presence("r2", "carol", false, 0, 6)
        ]
    );
    let idle = |room: &str, now| Op::DeleteIfIdle {
        room: room.into(),
        idle_ttl_ms: 100,
        now_ms: now,
    };
    assert_eq!(apply(&a, idle("r1", 5099)).await, Reply::Deleted(false));
    assert_eq!(apply(&a, idle("r1", 5100)).await, Reply::Deleted(true));
}

/// A node swept while it could not renew (cut off, paused) is fenced by the
/// store: its connections' sends and typing are refused, nothing is
/// published, and its next renewal tells it; one that renews too late
/// sweeps itself.
#[tokio::test]
async fn a_swept_nodes_connections_can_neither_send_nor_type() {
    let server = RedisServer::start();
    let s = store(&server).await;
    ensure(&s, "r", "e").await;
    let ttl = 1000;
    apply(&s, heartbeat("A", 0, ttl)).await;
    apply(&s, heartbeat("B", 600, ttl)).await;
    let alice = holder("A", 1);
    apply(&s, join("r", "alice", alice.clone(), None, 1)).await;
    let send = |now| {
        let mut op = publish("r", "alice", Some("m"), "hi", 10, now);
        if let Op::Publish { holder, .. } = &mut op {
            *holder = alice.clone();
        }
        op
    };
    assert_eq!(seq_of(&s, send(2)).await, 1);
    assert_eq!(
        apply(&s, heartbeat("B", 1001, ttl)).await,
        found_gone(&["A"])
    );
    let mut sub = subscriber(&s, &["r"]).await;
    assert_eq!(apply(&s, send(1002)).await, Reply::Unheld);
    let typing = Op::Typing {
        room: "r".into(),
        user: "alice".into(),
        username: "alice".into(),
        is_typing: true,
        holder: alice.clone(),
    };
    assert_eq!(apply(&s, typing).await, Reply::Unheld);
    // Nothing stored, nothing published.
    no_event(&mut sub).await;
    assert_eq!(
        apply(&s, newest("r", 10)).await,
        Reply::History {
            messages: vec![StoredMessage {
                seq: 1,
                frame: frame("hi", 1)
            }],
            has_more: false
        }
    );
    // A's renewal: its lease had lapsed.
    assert_eq!(apply(&s, heartbeat("A", 1003, ttl)).await, first_beat(&[]));
    // A renews too late and nobody swept it: it sweeps itself.
    apply(&s, join("r", "alice", alice.clone(), None, 1004)).await;
    assert!(matches!(
        next_event(&mut sub).await,
        Event::Presence { joined: true, .. }
    ));
    assert_eq!(
        apply(&s, heartbeat("A", 2004, ttl)).await,
        first_beat(&["A", "B"])
    );
    assert!(matches!(
        next_event(&mut sub).await,
        Event::Presence { joined: false, ref who, .. } if who.user == "alice"
    ));
}

#[tokio::test]
async fn idle_user_rooms_are_deleted() {
    let server = RedisServer::start();
    let s = store(&server).await;
    // Rooms are created at T0 (record's created_at_ms).
    const T0: u64 = 1_700_000_000_000;
    ensure(&s, "general", "g").await;
    apply(&s, create("r", "alice", "e1", 2, 10)).await;
    apply(&s, create("never", "alice", "e1", 2, 10)).await;
    let mut sub = subscriber(&s, &["r", "general", "never"]).await;
    let idle = |room: &str, now| Op::DeleteIfIdle {
        room: room.into(),
        idle_ttl_ms: 1000,
        now_ms: now,
    };
    // Never joined: empty since it was created.
    assert_eq!(
        apply(&s, idle("never", T0 + 999)).await,
        Reply::Deleted(false)
    );
    assert_eq!(
        apply(&s, idle("never", T0 + 1000)).await,
        Reply::Deleted(true)
    );
    assert_eq!(
        next_event(&mut sub).await,
        Event::RoomDeleted {
            room: "never".into()
        }
    );
    apply(&s, join("r", "alice", holder("n", 1), None, T0 + 100)).await;
    apply(&s, join("general", "alice", holder("n", 1), None, T0 + 100)).await;
    assert_eq!(apply(&s, idle("r", T0 + 5000)).await, Reply::Deleted(false));
    apply(&s, leave("r", "alice", holder("n", 1), T0 + 2000)).await;
    apply(&s, leave("general", "alice", holder("n", 1), T0 + 2000)).await;
    for _ in 0..4 {
        next_event(&mut sub).await;
    }
    assert_eq!(apply(&s, idle("r", T0 + 2999)).await, Reply::Deleted(false));
    // Default rooms are never deleted.
    assert_eq!(
        apply(&s, idle("general", T0 + 10_000)).await,
        Reply::Deleted(false)
    );
    // Back within the time: the clock starts again when it empties again.
    apply(&s, join("r", "bob", holder("n", 2), None, T0 + 2500)).await;
    apply(&s, leave("r", "bob", holder("n", 2), T0 + 2600)).await;
    next_event(&mut sub).await;
    next_event(&mut sub).await;
    assert_eq!(apply(&s, idle("r", T0 + 3000)).await, Reply::Deleted(false));
    assert_eq!(apply(&s, idle("r", T0 + 3600)).await, Reply::Deleted(true));
    assert_eq!(
        next_event(&mut sub).await,
        Event::RoomDeleted { room: "r".into() }
    );
    // A room that is not there is not deleted.
    assert_eq!(apply(&s, idle("r", T0 + 3600)).await, Reply::Deleted(false));
    assert_eq!(
        apply(&s, Op::Lookup { room: "r".into() }).await,
        Reply::NotFound
    );
    // Gone with its history; alice may create rooms again (her count went
    // down), with a new epoch.
    assert_eq!(
        apply(&s, publish("r", "alice", None, "x", 5, T0 + 4000)).await,
        Reply::NotFound
    );
    assert_eq!(
        apply(&s, create("r", "alice", "e2", 2, 10)).await,
        Reply::Created(record("r", Some("alice"), "e2"))
    );
    assert_eq!(
        apply(&s, create("r2", "alice", "e3", 2, 10)).await,
        Reply::Created(record("r2", Some("alice"), "e3"))
    );
    assert_eq!(
        apply(&s, create("r3", "alice", "e4", 2, 10)).await,
        Reply::Refused(Refusal::UserLimit)
    );
    seat(&s, "r", &["alice"], T0 + 4000).await;
    assert!(matches!(
        next_event(&mut sub).await,
        Event::Presence { joined: true, .. }
    ));
    assert_eq!(
        apply(&s, publish("r", "alice", None, "x", 5, T0 + 4000)).await,
        Reply::Published(
            StoredMessage {
                seq: 1,
                frame: frame("x", 1)
            },
            1
        )
    );
    // The channel is the id's: a node still subscribed hears the new room.
    assert!(matches!(
        next_event(&mut sub).await,
        Event::Message { ref epoch, .. } if epoch == "e2"
    ));
    no_event(&mut sub).await;
}

#[tokio::test]
async fn reads_cut_history_to_the_limit_they_carry_and_since_reads_a_gap() {
    let server = RedisServer::start();
    let s = store(&server).await;
    ensure(&s, "r", "e").await;
    assert_eq!(
        apply(&s, Op::Lookup { room: "r".into() }).await,
        Reply::Room(record("r", None, "e"))
    );
    seat(&s, "r", &["u"], 1).await;
    for i in 1..=6 {
        let id = i.to_string();
        seq_of(&s, publish("r", "u", Some(&id), &id, 10, i)).await;
    }
    let since = |seq: u64, epoch: Option<&str>, history_limit: u32| Op::Since {
        room: "r".into(),
        since: Since {
            seq,
            epoch: epoch.map(str::to_owned),
        },
        history_limit,
    };
    let got = |r: Reply| match r {
        Reply::Recovery {
            epoch,
            messages,
            recovered,
            last_seq,
            ..
        } => {
            assert_eq!(epoch, "e");
            (
                messages.iter().map(|m| m.seq).collect::<Vec<_>>(),
                recovered,
                last_seq,
            )
        }
        other => panic!("{other:?}"),
    };
    assert_eq!(
        got(apply(&s, since(4, Some("e"), 10)).await),
        (vec![5, 6], true, 6)
    );
    assert_eq!(
        got(apply(&s, since(4, Some("x"), 10)).await),
        ((1..=6).collect(), false, 6)
    );
    // A Since with HISTORY_LIMIT 4 evicts 1 and 2 at once (and their retry
    // keys): after 1 is no longer everything.
    assert_eq!(
        got(apply(&s, since(1, None, 4)).await),
        (vec![3, 4, 5, 6], false, 6)
    );
    assert_eq!(
        seq_of(&s, publish("r", "u", Some("1"), "1 again", 10, 7)).await,
        7
    );
    assert!(matches!(
        apply(&s, publish("r", "u", Some("3"), "3", 10, 8)).await,
        Reply::Duplicate(StoredMessage { seq: 3, .. })
    ));
    // A History with 3 cuts to 5..=7; a Join with 2 to 6..=7.
    let history = Op::History {
        room: "r".into(),
        before_seq: None,
        limit: 0,
        history_limit: 3,
    };
    match apply(&s, history).await {
        Reply::History { messages, has_more } => {
            // A limit of 0 answers one message.
            assert_eq!(messages.iter().map(|m| m.seq).collect::<Vec<_>>(), [7]);
            assert!(has_more);
        }
        other => panic!("{other:?}"),
    }
    let mut op = join("r", "v", holder("n", 1), None, 9);
    if let Op::Join { history_limit, .. } = &mut op {
        *history_limit = 2;
    }
    match apply(&s, op).await {
        Reply::Joined {
            messages, last_seq, ..
        } => {
            assert_eq!(messages.iter().map(|m| m.seq).collect::<Vec<_>>(), [6, 7]);
            assert_eq!(last_seq, 7);
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        server
            .command(&["HLEN", "chatflow:room:{r}:retry"])
            .unwrap(),
        ":2\r\n"
    );
    assert_eq!(
        apply(
            &s,
            Op::Since {
                room: "nowhere".into(),
                since: Since {
                    seq: 0,
                    epoch: None
                },
                history_limit: 5
            }
        )
        .await,
        Reply::NotFound
    );
    assert_eq!(
        apply(
            &s,
            Op::Lookup {
                room: "nowhere".into()
            }
        )
        .await,
        Reply::NotFound
    );
}

#[tokio::test]
async fn typing_is_published_not_stored() {
    let server = RedisServer::start();
    let s = store(&server).await;
    ensure(&s, "r", "e").await;
    seat(&s, "r", &["u:1", "u"], 1).await;
    let mut sub = subscriber(&s, &["r"]).await;
    for is_typing in [true, false] {
        let op = Op::Typing {
            room: "r".into(),
            user: "u:1".into(),
            username: "Ünïcode: \"quoted\"".into(),
            is_typing,
            holder: holder_of("u:1"),
        };
        assert_eq!(apply(&s, op).await, Reply::Done);
        assert_eq!(
            next_event(&mut sub).await,
            Event::Typing {
                room: "r".into(),
                user: "u:1".into(),
                username: "Ünïcode: \"quoted\"".into(),
                is_typing
            }
        );
    }
    // Unsubscribed: nothing more arrives.
    sub.unsubscribe("r").await.unwrap();
    seq_of(&s, publish("r", "u", None, "x", 5, 1)).await;
    no_event(&mut sub).await;
}

#[tokio::test]
async fn data_it_did_not_write_is_an_error_not_a_panic() {
    let server = RedisServer::start();
    let s = store(&server).await;
    ensure(&s, "r", "e").await;
    seat(&s, "r", &["u"], 1).await;
    server
        .command(&["HSET", "chatflow:room:{r}", "kind", "weird"])
        .unwrap();
    let err = s.apply(&Op::ListRooms).await.unwrap_err();
    assert!(matches!(err, StoreError::Decode(_)), "{err}");
    let err = s
        .apply(&join("r", "u", holder("n", 1), None, 1))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Decode(_)), "{err}");
    ensure(&s, "q", "e").await;
    server
        .command(&["RPUSH", "chatflow:room:{q}:log", "garbage"])
        .unwrap();
    let err = s
        .apply(&Op::History {
            room: "q".into(),
            before_seq: Some(3),
            limit: 5,
            history_limit: 100,
        })
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Redis(_)), "{err}");
    server
        .command(&["SET", "chatflow:room:{x}", "a string"])
        .unwrap();
    let err = s
        .apply(&publish("x", "u", None, "m", 5, 1))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Redis(_)), "{err}");
    // A subscriber skips what it cannot read, and goes on.
    let mut sub = subscriber(&s, &["r"]).await;
    server
        .command(&["PUBLISH", "chatflow:ch:r", "Mnonsense"])
        .unwrap();
    match tokio::time::timeout(Duration::from_secs(5), sub.next()).await {
        Ok(Some(Notice::Undecodable(_))) => {}
        other => panic!("{other:?}"),
    }
    apply(
        &s,
        Op::Typing {
            room: "r".into(),
            user: "u".into(),
            username: "U".into(),
            is_typing: true,
            holder: holder_of("u"),
        },
    )
    .await;
    assert!(matches!(next_event(&mut sub).await, Event::Typing { .. }));
}

#[tokio::test]
async fn no_redis_is_an_error_within_the_timeout_and_the_store_recovers() {
    let mut server = RedisServer::start();
    let port = server.port;
    let timeout = Duration::from_millis(300);
    let s = RedisStore::connect(&RedisConfig {
        timeout,
        ..config(&server)
    })
    .await
    .unwrap();
    ensure(&s, "r", "e").await;
    let mut sub = subscriber(&s, &["r"]).await;
    server.kill();
    let started = Instant::now();
    let err = s.apply(&Op::ListRooms).await.unwrap_err();
    assert!(
        started.elapsed() < timeout + Duration::from_millis(500),
        "{:?}",
        started.elapsed()
    );
    eprintln!("with redis down: {err} after {:?}", started.elapsed());
    // Redis is back (empty: its data is gone): the same store and the same
    // subscriber work again by themselves.
    let _server = RedisServer::start_on(port).expect("redis restarts on its port");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match s.apply(&Op::ListRooms).await {
            Ok(reply) => {
                assert_eq!(reply, Reply::Rooms(vec![]));
                break;
            }
            Err(e) => {
                assert!(Instant::now() < deadline, "still failing: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
    match tokio::time::timeout(Duration::from_secs(10), sub.next()).await {
        Ok(Some(Notice::Resubscribed)) => {}
        other => panic!("{other:?}"),
    }
    ensure(&s, "r", "e2").await;
    seat(&s, "r", &["u"], 1).await;
    assert!(matches!(
        next_event(&mut sub).await,
        Event::Presence { joined: true, .. }
    ));
    assert_eq!(seq_of(&s, publish("r", "u", None, "x", 5, 1)).await, 1);
    assert!(matches!(
        next_event(&mut sub).await,
        Event::Message { ref epoch, .. } if epoch == "e2"
    ));
    // A URL that is not one.
    assert!(
        RedisStore::new(&RedisConfig {
            url: "nonsense://".into(),
            ..config(&_server)
        })
        .is_err()
    );
}

/// Figures, printed (with --nocapture), never asserted: publishes per second
/// from one caller and from many over one node's connection, and the
/// commands Redis ran per publish.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn figures() {
    let server = RedisServer::start();
    let s = store(&server).await;
    ensure(&s, "r", "e").await;
    seat(&s, "r", &["u"], 1).await;
    for k in 0..32 {
        seat(&s, "r", &[&format!("u{k}")], 1).await;
    }
    // A bucket that never runs dry at one instant.
    let publish = |room: &str, user: &str, cmid: Option<&str>, text: &str, limit, now| {
        let mut op = publish(room, user, cmid, text, limit, now);
        if let Op::Publish { bucket, .. } = &mut op {
            *bucket = BucketShape {
                capacity: 1 << 40,
                window_ms: 1,
            };
        }
        op
    };
    // (calls, usec) of one command in INFO commandstats.
    let stat = |server: &RedisServer, command: &str| -> (u64, u64) {
        let info = server.command(&["INFO", "commandstats"]).unwrap();
        let line = info
            .lines()
            .find(|l| l.starts_with(&format!("cmdstat_{command}:")))
            .unwrap_or_default()
            .to_owned();
        let field = |name: &str| -> u64 {
            line.split(&format!("{name}="))
                .nth(1)
                .and_then(|v| v.split(',').next())
                .and_then(|v| v.parse().ok())
                .unwrap_or(0)
        };
        (field("calls"), field("usec"))
    };
    let calls = |server: &RedisServer| -> u64 {
        let info = server.command(&["INFO", "commandstats"]).unwrap();
        info.lines()
            .filter(|l| l.starts_with("cmdstat_"))
            .filter_map(|l| {
                l.split("calls=")
                    .nth(1)?
                    .split(',')
                    .next()?
                    .parse::<u64>()
                    .ok()
            })
            .sum()
    };
    let n = 2000u64;
    let before = calls(&server);
    let (evalsha_before, usec_before) = stat(&server, "evalsha");
    let started = Instant::now();
    for i in 0..n {
        seq_of(
            &s,
            publish("r", "u", Some(&i.to_string()), "a message", 100, 1),
        )
        .await;
    }
    let sequential = started.elapsed();
    let (evalsha_after, usec_after) = stat(&server, "evalsha");
    // Every command Redis ran, those inside the script included (the two
    // INFOs count one each).
    let per_publish = (calls(&server) - before - 2) as f64 / n as f64;
    let round_trips = (evalsha_after - evalsha_before) as f64 / n as f64;
    let script_usec = (usec_after - usec_before) as f64 / n as f64;
    let started = Instant::now();
    let mut tasks = Vec::new();
    for k in 0..32 {
        let s = s.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..n / 32 {
                let id = format!("{k}-{i}");
                seq_of(
                    &s,
                    publish("r", &format!("u{k}"), Some(&id), "a message", 100, 1),
                )
                .await;
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let concurrent = started.elapsed();
    eprintln!(
        "FIGURES publish: {round_trips:.2} EVALSHA (round trips) per publish, \
         {per_publish:.2} commands run by Redis per publish (those of the script included), \
         {script_usec:.1} us of Redis time per publish script; \
         {n} sequential publishes in {sequential:?} ({:.0}/s, {:.0} us each); \
         {} publishes from 32 concurrent callers on one connection in {concurrent:?} ({:.0}/s)",
        n as f64 / sequential.as_secs_f64(),
        sequential.as_micros() as f64 / n as f64,
        n / 32 * 32,
        (n / 32 * 32) as f64 / concurrent.as_secs_f64(),
    );
}

#[tokio::test]
async fn an_idle_subscriber_stays_connected() {
    let server = RedisServer::start();
    // Pings every 100 ms: several while nothing is published.
    let s = RedisStore::connect(&RedisConfig {
        timeout: Duration::from_millis(100),
        ..config(&server)
    })
    .await
    .unwrap();
    ensure(&s, "r", "e").await;
    seat(&s, "r", &["u"], 1).await;
    let mut sub = subscriber(&s, &["r"]).await;
    no_event(&mut sub).await;
    no_event(&mut sub).await;
    assert_eq!(seq_of(&s, publish("r", "u", None, "x", 5, 1)).await, 1);
    assert!(matches!(
        next_event(&mut sub).await,
        Event::Message { ref user, .. } if user == "u"
    ));
}

/// The one use of Redis's clock (the store's module doc): a send bucket's
/// key expires `window_ms + 60 s` after its last charge, by `Charge` or
/// `Publish`.
#[tokio::test]
async fn a_send_bucket_key_expires_a_minute_after_its_window() {
    let server = RedisServer::start();
    let s = store(&server).await;
    ensure(&s, "r", "e").await;
    seat(&s, "r", &["v"], 1).await;
    let charge = Op::Charge {
        user: "u".into(),
        bucket: BUCKET,
        now_ms: 1,
    };
    for (op, user) in [(charge, "u"), (publish("r", "v", None, "x", 5, 1), "v")] {
        apply(&s, op).await;
        let pttl = server
            .command(&["PTTL", &format!("chatflow:bucket:{user}")])
            .unwrap();
        // -1: no expiry; -2: no key.
        let ms: i64 = pttl.trim_start_matches(':').trim_end().parse().unwrap();
        let ttl = (BUCKET.window_ms + 60_000) as i64;
        assert!(ttl - 1_000 < ms && ms <= ttl, "{user}: PTTL {pttl:?}");
    }
}

/// Lua numbers are doubles: what could leave their exact range is refused
/// (and nothing happens), or clamped where that changes no answer (the
/// store's module doc).
#[tokio::test]
async fn numbers_beyond_a_double_are_refused_or_clamped() {
    let server = RedisServer::start();
    let s = store(&server).await;
    ensure(&s, "r", "e").await;
    seat(&s, "r", &["u"], 1).await;
    for now in 1..=3 {
        seq_of(&s, publish("r", "u", None, "m", 10, now)).await;
    }
    let beyond = 1 << 53;
    let refused = [
        Op::Charge {
            user: "u".into(),
            bucket: BUCKET,
            now_ms: beyond,
        },
        publish("r", "u", None, "m", 10, beyond),
        heartbeat("A", beyond, 1),
    ];
    for op in refused {
        let got = s.apply(&op).await;
        assert!(
            matches!(got, Err(StoreError::OutOfRange(_))),
            "{op:?}: {got:?}"
        );
    }
    assert_eq!(seq_of(&s, publish("r", "u", None, "m", 10, 4)).await, 4);
    // A since or a lease beyond any double: the same answer as a big one.
    let far = Since {
        seq: u64::MAX,
        epoch: None,
    };
    let since = Op::Since {
        room: "r".into(),
        since: far.clone(),
        history_limit: 10,
    };
    assert!(matches!(
        apply(&s, since).await,
        Reply::Recovery { recovered: false, last_seq: 4, ref messages, .. } if messages.len() == 4
    ));
    assert!(matches!(
        apply(&s, join("r", "u", holder("n", 1), Some(far), 5)).await,
        Reply::Joined {
            recovered: Some(false),
            ..
        }
    ));
    assert_eq!(
        apply(&s, heartbeat("A", 1, u64::MAX)).await,
        first_beat(&[])
    );
    assert_eq!(
        apply(&s, heartbeat("B", beyond - 1, 1)).await,
        first_beat(&[])
    );
}

/// Users present are listed in user id order, and nodes found gone in id
/// order, whatever order Redis keeps them in.
#[tokio::test]
async fn lists_come_in_id_order() {
    let server = RedisServer::start();
    let s = store(&server).await;
    ensure(&s, "r", "e").await;
    for (conn, user) in (1..).zip(["carol", "alice", "bob"]) {
        apply(&s, join("r", user, holder("n", conn), None, 1)).await;
    }
    match apply(&s, join("r", "aaron", holder("n", 4), None, 1)).await {
        Reply::Joined { users, .. } => {
            assert_eq!(users, ["aaron", "alice", "bob", "carol"].map(present));
        }
        other => panic!("{other:?}"),
    }
    // Leases that run out in another order than the ids'.
    for (node, ttl) in [("Z", 5), ("A", 10), ("M", 7)] {
        apply(&s, heartbeat(node, 0, ttl)).await;
    }
    assert_eq!(
        apply(&s, heartbeat("live", 100, 10)).await,
        first_beat(&["A", "M", "Z"])
    );
}

/// A `Leave` that names another user than the holder's changes nothing (as
/// in the memory store): the holder is still swept when its node dies.
#[tokio::test]
async fn a_leave_for_another_user_leaves_the_holder_to_the_sweep() {
    let server = RedisServer::start();
    let s = store(&server).await;
    ensure(&s, "r", "e").await;
    apply(&s, heartbeat("n", 0, 10)).await;
    apply(&s, join("r", "alice", holder("n", 1), None, 1)).await;
    assert_eq!(
        apply(&s, leave("r", "bob", holder("n", 1), 2)).await,
        Reply::Left {
            last_of_user: false,
            member_count: 1
        }
    );
    assert_eq!(apply(&s, heartbeat("m", 100, 10)).await, first_beat(&["n"]));
    assert!(matches!(
        apply(&s, join("r", "carol", holder("m", 1), None, 101)).await,
        Reply::Joined { ref users, .. } if users == &[present("carol")]
    ));
}

/// What Redis holds per room and per message (README "Running several
/// nodes", sizing): `used_memory` before and after 1,000 empty rooms, then
/// 10 messages in each, as the server stores them (a whole `NEW_MESSAGE`
/// frame of a 100-character message, with a `clientMessageId`).
#[tokio::test]
async fn sizing() {
    let server = RedisServer::start();
    let s = store(&server).await;
    let used = |server: &RedisServer| -> u64 {
        let info = server.command(&["INFO", "memory"]).unwrap();
        info.lines()
            .find_map(|l| l.strip_prefix("used_memory:"))
            .and_then(|v| v.trim().parse().ok())
            .expect("used_memory")
    };
    let (rooms, per_room) = (1_000u64, 10u64);
    let before = used(&server);
    for r in 0..rooms {
        ensure(&s, &format!("room-{r}"), &format!("e-{r}")).await;
    }
    let with_rooms = used(&server);
    // The sender is in every room (its presence is not a message's cost).
    for r in 0..rooms {
        seat(&s, &format!("room-{r}"), &["user_4711"], 1).await;
    }
    let seated = used(&server);
    let content = "x".repeat(100);
    let mut frame_bytes = 0;
    for r in 0..rooms {
        let room = format!("room-{r}");
        for i in 0..per_room {
            let draft = Draft {
                head: Bytes::from(format!(
                    "{{\"type\":\"NEW_MESSAGE\",\"payload\":{{\"id\":\"msg_19a3f0c2b7d_{r}{i}\",\
                     \"roomId\":\"{room}\",\"userId\":\"user_4711\",\"username\":\"alice\",\
                     \"content\":\"{content}\",\"type\":\"text\",\
                     \"timestamp\":\"2026-12-06T10:00:00.000Z\",\
                     \"clientMessageId\":\"c-{r}-{i}-5f1e\",\"seq\":"
                )),
                tail: Bytes::from_static(b"}}"),
            };
            frame_bytes = draft.frame(i + 1).len();
            let op = Op::Publish {
                room: room.clone(),
                user: "user_4711".into(),
                holder: holder_of("user_4711"),
                client_message_id: Some(format!("c-{r}-{i}-5f1e")),
                draft,
                bucket: BucketShape {
                    capacity: 1 << 40,
                    window_ms: 1,
                },
                history_limit: 100,
                now_ms: 1,
            };
            seq_of(&s, op).await;
        }
    }
    let with_messages = used(&server);
    let room_bytes = (with_rooms - before) / rooms;
    let message_bytes = (with_messages - seated) / (rooms * per_room);
    assert!(
        room_bytes > 0 && message_bytes > frame_bytes as u64,
        "{room_bytes} {message_bytes}"
    );
    eprintln!(
        "FIGURES sizing: {room_bytes} B of Redis memory per empty room, \
         {message_bytes} B per stored message (its frame {frame_bytes} B, with a clientMessageId)"
    );
}

/// As the memory store: a room a user created is not there to anyone else
/// until its creator joined it (`ROOM_CREATED` counts the creator alone).
#[tokio::test]
async fn a_created_room_is_not_there_to_others_until_its_creator_joined() {
    let server = RedisServer::start();
    let s = store(&server).await;
    apply(&s, create("r", "alice", "e", 10, 10)).await;
    assert_eq!(
        apply(&s, join("r", "bob", holder("n", 2), None, 1)).await,
        Reply::NotFound
    );
    assert_eq!(
        apply(&s, Op::Lookup { room: "r".into() }).await,
        Reply::NotFound
    );
    assert_eq!(apply(&s, Op::ListRooms).await, Reply::Rooms(vec![]));
    match apply(&s, join("r", "alice", holder("n", 1), None, 1)).await {
        Reply::Joined { room, .. } => assert_eq!(room.member_count, 1),
        other => panic!("{other:?}"),
    }
    match apply(&s, join("r", "bob", holder("n", 2), None, 2)).await {
        Reply::Joined { room, .. } => assert_eq!(room.member_count, 2),
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        apply(&s, Op::Lookup { room: "r".into() }).await,
        Reply::Room(_)
    ));
}
