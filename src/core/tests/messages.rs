//! `SEND_MESSAGE`: who receives it, `seq` and ids, `clientMessageId` retries,
//! and the bounded history it is stored in.

use std::collections::BTreeSet;

use serde_json::json;

use super::harness::{TestHub, new_message, seqs, small_limits};
use crate::core::Limits;
use crate::protocol::server::ServerFrame;
use crate::protocol::{ErrorCode, MessageKind};

#[test]
fn send_message_reaches_every_member_connection_and_only_them() {
    let mut t = TestHub::new(small_limits());
    let a1 = t.user("alice");
    let a2 = t.user("alice");
    let a3 = t.user("alice"); // not joined
    let b = t.user("bob");
    let c = t.user("carol"); // not joined
    for conn in [a1, a2, b] {
        t.join(conn, "general");
    }
    t.frames(a1);
    t.frames(a2);
    t.advance(42);
    t.call(
        a1,
        "SEND_MESSAGE",
        json!({"roomId": "general", "content": "Hello, world!", "type": "text"}),
        "m1",
    );
    let ack = t.one_value(a1);
    assert_eq!(ack["requestId"], "m1");
    assert_eq!(ack["type"], "NEW_MESSAGE");
    let p = &ack["payload"];
    assert!(p["id"].as_str().is_some_and(|id| !id.is_empty()), "{ack}");
    assert_eq!(
        *p,
        json!({"id": p["id"], "seq": 1, "roomId": "general", "userId": "alice",
               "username": "alice", "content": "Hello, world!", "type": "text",
               "timestamp": "2023-10-01T12:00:00.042Z"})
    );
    let mut copy = ack.clone();
    copy.as_object_mut().expect("object").remove("requestId");
    for other in [a2, b] {
        assert_eq!(t.one_value(other), copy, "same message, no requestId");
    }
    t.silent(a3);
    t.silent(c);
    // Emotes keep their type.
    t.call(
        b,
        "SEND_MESSAGE",
        json!({"roomId": "general", "content": "waves", "type": "emote"}),
        "m2",
    );
    let m = new_message(t.one(b));
    assert_eq!((m.kind, m.seq), (MessageKind::Emote, 2));
    for other in [a1, a2] {
        assert_eq!(new_message(t.one(other)), m);
    }
}

#[test]
fn seq_counts_per_room_and_ids_are_unique() {
    let mut t = TestHub::with(small_limits(), &[("general", "G"), ("random", "R")], 1);
    let a = t.user("alice");
    t.join(a, "general");
    t.join(a, "random");
    let mut ids = BTreeSet::new();
    let mut general = Vec::new();
    let mut random = Vec::new();
    for i in 0..4 {
        let m = t.say(a, "general", &format!("g{i}"));
        general.push(m.seq);
        assert!(ids.insert(m.id));
        let m = t.say(a, "random", &format!("r{i}"));
        random.push(m.seq);
        assert!(ids.insert(m.id));
    }
    assert_eq!(general, [1, 2, 3, 4]);
    assert_eq!(random, [1, 2, 3, 4]);
}

#[test]
fn send_message_requires_membership() {
    let mut t = TestHub::new(small_limits());
    let a = t.user("alice");
    let b = t.user("bob");
    t.join(b, "general");
    t.call(
        a,
        "SEND_MESSAGE",
        json!({"roomId": "general", "content": "x"}),
        "s",
    );
    t.error(a, ErrorCode::NotAMember, Some("s"));
    t.silent(b);
    // Nothing stored.
    assert_eq!(t.say(b, "general", "first").seq, 1);
}

#[test]
fn client_message_id_retry_returns_the_original_to_the_sender_only() {
    let mut t = TestHub::with(small_limits(), &[("general", "G"), ("random", "R")], 1);
    let b = t.user("bob");
    t.join(b, "general");
    let a1 = t.user("alice");
    t.join(a1, "general");
    t.frames(b);
    let send =
        |cmid: &str, room: &str| json!({"roomId": room, "content": "hi", "clientMessageId": cmid});
    t.call(a1, "SEND_MESSAGE", send("c-1", "general"), "m1");
    let ack = t.one_value(a1);
    assert_eq!(ack["payload"]["clientMessageId"], "c-1");
    let original = new_message(ServerFrame::decode(ack.to_string().as_bytes()).expect("decodes"));
    assert_eq!(new_message(t.one(b)), original);
    // The ack was lost with the connection; the client resends on a new one.
    t.disconnect(a1);
    t.frames(b);
    t.advance(100);
    let a2 = t.user("alice");
    t.join(a2, "general");
    t.frames(b);
    t.call(a2, "SEND_MESSAGE", send("c-1", "general"), "m2");
    let f = t.one(a2);
    assert_eq!(f.request_id.as_deref(), Some("m2"));
    assert_eq!(new_message(f), original, "the original, timestamp and all");
    t.silent(b);
    // Nothing was stored.
    let joined = t.join(b, "general");
    assert_eq!(seqs(&joined.messages), [1]);
    assert_eq!(t.say(b, "general", "next").seq, 2);
    t.frames(a2);
    // The key is per user and per room.
    t.call(b, "SEND_MESSAGE", send("c-1", "general"), "m3");
    assert_eq!(new_message(t.one(b)).seq, 3);
    assert_eq!(new_message(t.one(a2)).seq, 3);
    t.join(a2, "random");
    t.call(a2, "SEND_MESSAGE", send("c-1", "random"), "m4");
    let m = new_message(t.one(a2));
    assert_eq!((m.room_id.as_str(), m.seq), ("random", 1));
}

#[test]
fn client_message_id_retry_after_eviction_creates_a_new_message() {
    let limits = Limits {
        history_limit: 2,
        ..small_limits()
    };
    let mut t = TestHub::new(limits);
    let a = t.user("alice");
    let b = t.user("bob");
    t.join(a, "general");
    t.join(b, "general");
    t.frames(a);
    let send = json!({"roomId": "general", "content": "hi", "clientMessageId": "c-1"});
    t.call(a, "SEND_MESSAGE", send.clone(), "m1");
    let first = new_message(t.one(a));
    t.say(a, "general", "two");
    // Still retained: a retry.
    t.call(a, "SEND_MESSAGE", send.clone(), "m2");
    assert_eq!(new_message(t.one(a)), first);
    t.say(a, "general", "three"); // evicts seq 1
    t.frames(b);
    t.call(a, "SEND_MESSAGE", send, "m3");
    let again = new_message(t.one(a));
    assert_eq!(again.seq, 4);
    assert_ne!(again.id, first.id);
    assert_eq!(again.client_message_id.as_deref(), Some("c-1"));
    assert_eq!(new_message(t.one(b)), again);
}

#[test]
fn history_is_bounded_oldest_evicted_and_seq_never_reused() {
    let mut t = TestHub::new(small_limits()); // history 5
    let a = t.user("alice");
    t.join(a, "general");
    for i in 1..=7 {
        assert_eq!(t.say(a, "general", &format!("m{i}")).seq, i);
    }
    let b = t.user("bob");
    let joined = t.join(b, "general");
    assert_eq!(seqs(&joined.messages), [3, 4, 5, 6, 7]);
    assert_eq!(
        joined
            .messages
            .iter()
            .map(|m| m.content.as_str())
            .collect::<Vec<_>>(),
        ["m3", "m4", "m5", "m6", "m7"]
    );
    assert_eq!(
        t.history(b, "general", json!({})),
        (vec![3, 4, 5, 6, 7], false)
    );
    t.frames(a);
    assert_eq!(t.say(a, "general", "m8").seq, 8);
    t.frames(b);
    assert_eq!(t.history(b, "general", json!({})).0, [4, 5, 6, 7, 8]);
}
