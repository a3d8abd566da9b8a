//! The semantics of the parent module's vocabulary, on [`MemoryStore`].

use bytes::Bytes;

use super::MemoryStore;
use crate::protocol::RoomKind;
use crate::store::{
    BucketShape, Draft, Event, Holder, NodeId, Op, Present, Refusal, Reply, RoomRecord, Since,
    StoredMessage,
};

const BUCKET: BucketShape = BucketShape {
    capacity: 3,
    window_ms: 3_000,
};

fn record(id: &str, by: Option<&str>, kind: RoomKind, epoch: &str) -> RoomRecord {
    RoomRecord {
        id: id.into(),
        name: id.into(),
        description: String::new(),
        kind,
        created_at_ms: 1_000,
        created_by: by.map(Into::into),
        epoch: epoch.into(),
    }
}

fn create(store: &mut MemoryStore, id: &str, by: &str, per_user: u32, max: u64) -> Reply {
    store
        .apply(&Op::CreateRoom {
            record: record(id, Some(by), RoomKind::Public, &format!("e-{id}")),
            rooms_per_user_max: per_user,
            max_rooms: max,
        })
        .0
}

fn holder(node: &str, conn: u64) -> Holder {
    Holder {
        node: NodeId(node.into()),
        conn,
    }
}

fn join(store: &mut MemoryStore, room: &str, user: &str, h: Holder) -> (Reply, Vec<Event>) {
    store.apply(&Op::Join {
        room: room.into(),
        user: user.into(),
        username: format!("{user}-name"),
        holder: h,
        granted: false,
        since: None,
        history_limit: 100,
        now_ms: 2_000,
    })
}

fn leave(store: &mut MemoryStore, room: &str, user: &str, h: Holder, now_ms: u64) -> Reply {
    store
        .apply(&Op::Leave {
            room: room.into(),
            user: user.into(),
            holder: h,
            now_ms,
        })
        .0
}

/// The connection a test's user `u<n>` publishes from: `n` on node `n`.
fn holder_of(user: &str) -> Holder {
    holder("n", user.trim_start_matches('u').parse().unwrap_or(0))
}

/// `node` renews its lease for 1,000 ms at `now_ms`.
fn beat(s: &mut MemoryStore, node: &str, now_ms: u64) -> (Reply, Vec<Event>) {
    s.apply(&Op::Heartbeat {
        node: NodeId(node.into()),
        now_ms,
        ttl_ms: 1_000,
    })
}

fn draft(text: &str) -> Draft {
    Draft {
        head: Bytes::from(format!("{{\"text\":\"{text}\",\"seq\":")),
        tail: Bytes::from_static(b"}"),
    }
}

fn publish(
    store: &mut MemoryStore,
    room: &str,
    user: &str,
    cmid: Option<&str>,
    text: &str,
    history: u32,
    now_ms: u64,
) -> (Reply, Vec<Event>) {
    store.apply(&Op::Publish {
        room: room.into(),
        user: user.into(),
        holder: holder_of(user),
        client_message_id: cmid.map(Into::into),
        draft: draft(text),
        bucket: BucketShape {
            capacity: 1_000,
            window_ms: 1_000,
        },
        history_limit: history,
        now_ms,
    })
}

/// `u1` (shown as `u1-name`) no longer present in `r`.
fn u1_left_r(member_count: u64, pseq: u64) -> Event {
    u1_left_r_after(member_count, pseq, 0)
}

/// The same, after message `last_seq`.
fn u1_left_r_after(member_count: u64, pseq: u64, last_seq: u64) -> Event {
    Event::Presence {
        room: "r".into(),
        who: Present {
            user: "u1".into(),
            username: "u1-name".into(),
        },
        joined: false,
        member_count,
        pseq,
        last_seq,
    }
}

fn seqs(messages: &[StoredMessage]) -> Vec<u64> {
    messages.iter().map(|m| m.seq).collect()
}

#[test]
fn creation_is_refused_for_the_user_limit_then_an_existing_id_then_the_room_limit() {
    let mut s = MemoryStore::new();
    assert!(matches!(create(&mut s, "a", "u1", 1, 2), Reply::Created(_)));
    // u1 is at its limit: that comes first, even for an existing id.
    assert_eq!(
        create(&mut s, "a", "u1", 1, 2),
        Reply::Refused(Refusal::UserLimit)
    );
    assert_eq!(
        create(&mut s, "a", "u2", 1, 2),
        Reply::Refused(Refusal::Exists)
    );
    assert!(matches!(create(&mut s, "b", "u2", 1, 2), Reply::Created(_)));
    assert_eq!(
        create(&mut s, "c", "u3", 1, 2),
        Reply::Refused(Refusal::RoomLimit)
    );
    // Default rooms count against MAX_ROOMS but against no user.
    let (reply, events) = s.apply(&Op::EnsureRoom {
        record: record("general", None, RoomKind::Public, "e-g"),
    });
    assert!(matches!(reply, Reply::Room(r) if r.epoch == "e-g"));
    assert!(events.is_empty());
    let again = s.apply(&Op::EnsureRoom {
        record: record("general", None, RoomKind::Public, "e-other"),
    });
    assert!(
        matches!(again.0, Reply::Room(r) if r.epoch == "e-g"),
        "the stored room wins"
    );
    assert_eq!(s.room_count(), 3);
    let Reply::Rooms(rooms) = s.apply(&Op::ListRooms).0 else {
        panic!("ListRooms answers Rooms");
    };
    let ids: Vec<&str> = rooms.iter().map(|r| r.record.id.as_str()).collect();
    // a and b: their creators have not joined them yet.
    assert_eq!(ids, ["general"]);
}

#[test]
fn presence_counts_users_not_connections_across_nodes() {
    let mut s = MemoryStore::new();
    create(&mut s, "r", "u1", 9, 9);
    let (reply, events) = join(&mut s, "r", "u1", holder("n1", 1));
    let Reply::Joined {
        room,
        users,
        first_of_user,
        ..
    } = reply
    else {
        panic!("joined");
    };
    assert!(first_of_user);
    assert_eq!(room.member_count, 1);
    assert_eq!(
        users,
        [Present {
            user: "u1".into(),
            username: "u1-name".into()
        }]
    );
    assert_eq!(events.len(), 1);
    // The same user on another node: no second USER_JOINED.
    let (reply, events) = join(&mut s, "r", "u1", holder("n2", 7));
    assert!(matches!(
        reply,
        Reply::Joined {
            first_of_user: false,
            ..
        }
    ));
    assert!(events.is_empty());
    assert_eq!(
        leave(&mut s, "r", "u1", holder("n1", 1), 3_000),
        Reply::Left {
            last_of_user: false,
            member_count: 1
        }
    );
    let (_, events) = s.apply(&Op::Leave {
        room: "r".into(),
        user: "u1".into(),
        holder: holder("n2", 7),
        now_ms: 3_000,
    });
    assert_eq!(events, [u1_left_r(0, 2)]);
    // A holder that is not in leaves nothing.
    assert_eq!(
        leave(&mut s, "r", "u1", holder("n2", 7), 3_000),
        Reply::Left {
            last_of_user: false,
            member_count: 0
        }
    );
    assert_eq!(
        leave(&mut s, "nope", "u1", holder("n2", 7), 3_000),
        Reply::NotFound
    );
}

#[test]
fn a_private_room_is_joined_only_when_granted_or_by_its_creator() {
    let mut s = MemoryStore::new();
    s.apply(&Op::CreateRoom {
        record: record("p", Some("owner"), RoomKind::Private, "e-p"),
        rooms_per_user_max: 9,
        max_rooms: 9,
    });
    join(&mut s, "p", "owner", holder("n", 9));
    assert_eq!(
        join(&mut s, "p", "guest", holder("n", 1)).0,
        Reply::Forbidden
    );
    assert!(matches!(
        join(&mut s, "p", "owner", holder("n", 2)).0,
        Reply::Joined { .. }
    ));
    let granted = s.apply(&Op::Join {
        room: "p".into(),
        user: "guest".into(),
        username: "g".into(),
        holder: holder("n", 1),
        granted: true,
        since: None,
        history_limit: 100,
        now_ms: 2_000,
    });
    assert!(matches!(granted.0, Reply::Joined { .. }));
    assert_eq!(
        join(&mut s, "missing", "guest", holder("n", 1)).0,
        Reply::NotFound
    );
}

#[test]
fn publish_numbers_without_gaps_evicts_and_forgets_evicted_retry_keys() {
    let mut s = MemoryStore::new();
    create(&mut s, "r", "u1", 9, 9);
    join(&mut s, "r", "u1", holder_of("u1"));
    join(&mut s, "r", "u2", holder_of("u2"));
    for (i, text) in ["a", "b", "c"].iter().enumerate() {
        let (reply, events) = publish(&mut s, "r", "u1", Some(text), text, 2, 5_000);
        let Reply::Published(m, _) = reply else {
            panic!("published");
        };
        assert_eq!(m.seq, i as u64 + 1);
        assert_eq!(
            m.frame,
            Bytes::from(format!("{{\"text\":\"{text}\",\"seq\":{}}}", i + 1))
        );
        assert_eq!(
            events,
            [Event::Message {
                room: "r".into(),
                epoch: "e-r".into(),
                user: "u1".into(),
                message: m
            }]
        );
    }
    // "c" is retained: its retry is the stored message, nothing published.
    let (reply, events) = publish(&mut s, "r", "u1", Some("c"), "other", 2, 5_000);
    assert!(matches!(reply, Reply::Duplicate(m) if m.seq == 3));
    assert!(events.is_empty());
    // The same id from another user is another message.
    assert!(
        matches!(publish(&mut s, "r", "u2", Some("c"), "x", 2, 5_000).0, Reply::Published(m, _) if m.seq == 4)
    );
    // "a" was evicted: sent again, it is new.
    assert!(
        matches!(publish(&mut s, "r", "u1", Some("a"), "a", 2, 5_000).0, Reply::Published(m, _) if m.seq == 5)
    );
    let Reply::History { messages, has_more } = s
        .apply(&Op::History {
            room: "r".into(),
            before_seq: None,
            limit: 10,
            history_limit: 100,
        })
        .0
    else {
        panic!("history");
    };
    assert_eq!((seqs(&messages), has_more), (vec![4, 5], false));
    assert!(matches!(
        publish(&mut s, "gone", "u1", None, "x", 2, 5_000).0,
        Reply::NotFound
    ));
}

#[test]
fn history_pages_backwards() {
    let mut s = MemoryStore::new();
    create(&mut s, "r", "u1", 9, 9);
    join(&mut s, "r", "u1", holder_of("u1"));
    for n in 0..10 {
        publish(&mut s, "r", "u1", None, &n.to_string(), 8, 5_000);
    }
    let page = |s: &mut MemoryStore, before: Option<u64>, limit: u32| match s
        .apply(&Op::History {
            room: "r".into(),
            before_seq: before,
            limit,
            history_limit: 100,
        })
        .0
    {
        Reply::History { messages, has_more } => (seqs(&messages), has_more),
        other => panic!("{other:?}"),
    };
    assert_eq!(page(&mut s, None, 3), (vec![8, 9, 10], true));
    assert_eq!(page(&mut s, Some(8), 3), (vec![5, 6, 7], true));
    assert_eq!(page(&mut s, Some(5), 3), (vec![3, 4], false));
    assert_eq!(page(&mut s, Some(1), 3), (vec![], false));
}

#[test]
fn recovery_is_complete_only_in_the_same_epoch_with_nothing_evicted() {
    let mut s = MemoryStore::new();
    create(&mut s, "r", "u1", 9, 9);
    join(&mut s, "r", "u1", holder_of("u1"));
    for n in 0..7 {
        publish(&mut s, "r", "u1", None, &n.to_string(), 5, 5_000);
    }
    let mut recover = |seq: u64, epoch: Option<&str>| match s
        .apply(&Op::Join {
            room: "r".into(),
            user: "u1".into(),
            username: "u1".into(),
            holder: holder("n", 1),
            granted: false,
            since: Some(Since {
                seq,
                epoch: epoch.map(Into::into),
            }),
            history_limit: 100,
            now_ms: 6_000,
        })
        .0
    {
        Reply::Joined {
            messages,
            recovered,
            ..
        } => (seqs(&messages), recovered),
        other => panic!("{other:?}"),
    };
    assert_eq!(recover(2, Some("e-r")), (vec![3, 4, 5, 6, 7], Some(true)));
    assert_eq!(recover(1, None), (vec![3, 4, 5, 6, 7], Some(false)));
    assert_eq!(recover(7, None), (vec![], Some(true)));
    assert_eq!(recover(8, None), (vec![3, 4, 5, 6, 7], Some(false)));
    assert_eq!(recover(5, Some("old")), (vec![3, 4, 5, 6, 7], Some(false)));
    // A node's backfill reads the same way, without joining anyone.
    let backfill = s.apply(&Op::Since {
        room: "r".into(),
        since: Since {
            seq: 4,
            epoch: Some("e-r".into()),
        },
        history_limit: 100,
    });
    assert_eq!(backfill.1, []);
    let Reply::Recovery {
        epoch,
        users,
        messages,
        recovered,
        last_seq,
        presence_seq,
    } = backfill.0
    else {
        panic!("Since answers Recovery");
    };
    assert_eq!(
        (epoch.as_str(), seqs(&messages), recovered, last_seq),
        ("e-r", vec![5, 6, 7], true, 7)
    );
    let present: Vec<&str> = users.iter().map(|p| p.user.as_str()).collect();
    assert_eq!(present, ["u1"], "the users present come with it");
    assert_eq!(
        presence_seq, 1,
        "u1's arrival is the room's one presence change"
    );
    let gone = s.apply(&Op::Since {
        room: "gone".into(),
        since: Since {
            seq: 0,
            epoch: None,
        },
        history_limit: 100,
    });
    assert_eq!(gone.0, Reply::NotFound);
    // A smaller limit on a read evicts at once, and the next reads see it.
    let cut = s.apply(&Op::History {
        room: "r".into(),
        before_seq: None,
        limit: 10,
        history_limit: 2,
    });
    assert!(
        matches!(cut.0, Reply::History { ref messages, has_more: false } if seqs(messages) == [6, 7])
    );
    assert_eq!(
        s.apply(&Op::Lookup { room: "r".into() }).0,
        Reply::Room(record("r", Some("u1"), RoomKind::Public, "e-r"))
    );
    let gone = s.apply(&Op::Lookup {
        room: "gone".into(),
    });
    assert_eq!(gone.0, Reply::NotFound);
}

#[test]
fn the_send_bucket_refills_by_the_cores_arithmetic() {
    let mut s = MemoryStore::new();
    let charge = |s: &mut MemoryStore, now_ms: u64| {
        s.apply(&Op::Charge {
            user: "u".into(),
            bucket: BUCKET,
            now_ms,
        })
        .0
    };
    for _ in 0..3 {
        assert_eq!(charge(&mut s, 0), Reply::Charged);
    }
    // One token per 1,000 ms.
    assert_eq!(
        charge(&mut s, 0),
        Reply::RateLimited {
            retry_after_ms: 1_000
        }
    );
    assert_eq!(
        charge(&mut s, 999),
        Reply::RateLimited { retry_after_ms: 1 }
    );
    assert_eq!(charge(&mut s, 1_000), Reply::Charged);
    // A refused publish stores nothing.
    create(&mut s, "r", "u", 9, 9);
    join(&mut s, "r", "u", holder("n", 1));
    let (reply, events) = s.apply(&Op::Publish {
        room: "r".into(),
        user: "u".into(),
        holder: holder("n", 1),
        client_message_id: None,
        draft: draft("x"),
        bucket: BUCKET,
        history_limit: 5,
        now_ms: 1_000,
    });
    assert_eq!(
        reply,
        Reply::RateLimited {
            retry_after_ms: 1_000
        }
    );
    assert!(events.is_empty());
}

#[test]
fn a_dead_nodes_users_leave_when_a_live_node_heartbeats_past_its_lease() {
    let mut s = MemoryStore::new();
    create(&mut s, "r", "u1", 9, 9);
    beat(&mut s, "n1", 0);
    beat(&mut s, "n2", 0);
    join(&mut s, "r", "u1", holder("n1", 1));
    join(&mut s, "r", "u2", holder("n1", 2));
    join(&mut s, "r", "u2", holder("n2", 1));
    // n1's lease runs to 1,000: still alive at 1,000.
    assert_eq!(
        beat(&mut s, "n2", 1_000).0,
        Reply::Swept {
            gone: vec![],
            lapsed: false
        }
    );
    let (reply, events) = beat(&mut s, "n2", 1_001);
    assert_eq!(
        reply,
        Reply::Swept {
            gone: vec![NodeId("n1".into())],
            lapsed: false
        }
    );
    // u1 is gone; u2 is still on n2.
    assert_eq!(events, [u1_left_r(1, 3)]);
    let Reply::Rooms(rooms) = s.apply(&Op::ListRooms).0 else {
        panic!("rooms");
    };
    assert_eq!(rooms[0].member_count, 1);
}

#[test]
fn only_a_users_room_empty_for_the_ttl_is_deleted() {
    let mut s = MemoryStore::new();
    create(&mut s, "r", "u1", 1, 9);
    s.apply(&Op::EnsureRoom {
        record: record("general", None, RoomKind::Public, "e-g"),
    });
    let idle = |s: &mut MemoryStore, room: &str, now_ms: u64| {
        s.apply(&Op::DeleteIfIdle {
            room: room.into(),
            idle_ttl_ms: 500,
            now_ms,
        })
    };
    join(&mut s, "r", "u1", holder("n", 1));
    assert_eq!(
        idle(&mut s, "r", 10_000).0,
        Reply::Deleted(false),
        "it has a member"
    );
    leave(&mut s, "r", "u1", holder("n", 1), 4_000);
    assert_eq!(idle(&mut s, "r", 4_499).0, Reply::Deleted(false));
    let (reply, events) = idle(&mut s, "r", 4_500);
    assert_eq!(reply, Reply::Deleted(true));
    assert_eq!(events, [Event::RoomDeleted { room: "r".into() }]);
    assert_eq!(idle(&mut s, "general", 99_999).0, Reply::Deleted(false));
    // The creator's count went down with it.
    assert!(matches!(
        create(&mut s, "r2", "u1", 1, 9),
        Reply::Created(_)
    ));
    // A room created and never joined ages from its creation.
    assert_eq!(idle(&mut s, "r2", 1_499).0, Reply::Deleted(false));
    assert_eq!(idle(&mut s, "r2", 1_500).0, Reply::Deleted(true));
}

#[test]
fn typing_is_published_and_nothing_else() {
    let mut s = MemoryStore::new();
    create(&mut s, "r", "u", 9, 9);
    join(&mut s, "r", "u", holder("n", 1));
    let (reply, events) = s.apply(&Op::Typing {
        room: "r".into(),
        user: "u".into(),
        username: "U".into(),
        is_typing: true,
        holder: holder("n", 1),
    });
    assert_eq!(reply, Reply::Done);
    assert_eq!(
        events,
        [Event::Typing {
            room: "r".into(),
            user: "u".into(),
            username: "U".into(),
            is_typing: true
        }]
    );
    assert_eq!(events[0].room(), "r");
}

#[test]
fn a_room_ensured_with_a_creator_never_counts_against_it() {
    let mut s = MemoryStore::new();
    s.apply(&Op::EnsureRoom {
        record: record("ensured", Some("u1"), RoomKind::Public, "e-x"),
    });
    assert!(matches!(
        create(&mut s, "mine", "u1", 1, 9),
        Reply::Created(_)
    ));
    // The ensured room ages out; u1's own room still counts.
    let idle = s.apply(&Op::DeleteIfIdle {
        room: "ensured".into(),
        idle_ttl_ms: 1,
        now_ms: 10_000,
    });
    assert_eq!(idle.0, Reply::Deleted(true));
    assert_eq!(
        create(&mut s, "more", "u1", 1, 9),
        Reply::Refused(Refusal::UserLimit)
    );
}

#[test]
fn a_connection_swept_with_its_node_can_neither_publish_nor_type() {
    let mut s = MemoryStore::new();
    create(&mut s, "r", "u1", 9, 9);
    // A first renewal finds no lease of its own.
    assert_eq!(
        beat(&mut s, "n", 0).0,
        Reply::Swept {
            gone: vec![],
            lapsed: true
        }
    );
    beat(&mut s, "m", 0);
    join(&mut s, "r", "u1", holder_of("u1"));
    assert!(matches!(
        publish(&mut s, "r", "u1", Some("a"), "a", 9, 500).0,
        Reply::Published(m, _) if m.seq == 1
    ));
    beat(&mut s, "m", 600);
    // Another node sweeps n, whose renewal came too late.
    assert_eq!(
        beat(&mut s, "m", 1_001).0,
        Reply::Swept {
            gone: vec![NodeId("n".into())],
            lapsed: false
        }
    );
    let (reply, events) = publish(&mut s, "r", "u1", Some("b"), "b", 9, 1_002);
    assert_eq!((reply, events), (Reply::Unheld, vec![]));
    let typing = Op::Typing {
        room: "r".into(),
        user: "u1".into(),
        username: "u1".into(),
        is_typing: true,
        holder: holder_of("u1"),
    };
    assert_eq!(s.apply(&typing), (Reply::Unheld, vec![]));
    // Another user's connection is not the sender's either.
    join(&mut s, "r", "u2", holder_of("u2"));
    let mut as_other = typing.clone();
    as_other = match as_other {
        Op::Typing {
            room,
            username,
            is_typing,
            holder,
            ..
        } => Op::Typing {
            room,
            user: "u2".into(),
            username,
            is_typing,
            holder: Holder { conn: 1, ..holder },
        },
        other => other,
    };
    assert_eq!(s.apply(&as_other).0, Reply::Unheld);
    // The renewal tells n that its lease had lapsed.
    assert_eq!(
        beat(&mut s, "n", 1_003).0,
        Reply::Swept {
            gone: vec![],
            lapsed: true
        }
    );
    // A node that renews too late sweeps itself with the others.
    join(&mut s, "r", "u1", holder_of("u1"));
    let (reply, events) = s.apply(&Op::Heartbeat {
        node: NodeId("n".into()),
        now_ms: 2_004,
        ttl_ms: 1_000,
    });
    assert_eq!(
        reply,
        Reply::Swept {
            gone: vec![NodeId("m".into()), NodeId("n".into())],
            lapsed: true
        }
    );
    assert!(
        events
            .iter()
            .any(|e| matches!(e, Event::Presence { who, joined: false, .. } if who.user == "u1")),
        "{events:?}"
    );
}

#[test]
fn a_created_room_is_not_there_to_others_until_its_creator_joined() {
    let mut s = MemoryStore::new();
    create(&mut s, "r", "u1", 9, 9);
    assert_eq!(join(&mut s, "r", "u2", holder_of("u2")).0, Reply::NotFound);
    assert_eq!(s.apply(&Op::Lookup { room: "r".into() }).0, Reply::NotFound);
    assert_eq!(s.apply(&Op::ListRooms).0, Reply::Rooms(vec![]));
    assert!(matches!(
        join(&mut s, "r", "u1", holder_of("u1")).0,
        Reply::Joined { ref room, .. } if room.member_count == 1
    ));
    assert!(matches!(
        join(&mut s, "r", "u2", holder_of("u2")).0,
        Reply::Joined { ref room, .. } if room.member_count == 2
    ));
    assert!(matches!(
        s.apply(&Op::Lookup { room: "r".into() }).0,
        Reply::Room(_)
    ));
}
