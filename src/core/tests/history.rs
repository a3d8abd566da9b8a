//! History and recovery: `GET_HISTORY` pages, `JOIN_ROOM` with `sinceSeq`
//! (`recovered`), epochs, and a history limit shrunk by a reload.

use serde_json::json;

use super::harness::{TestHub, new_message, seqs, small_limits};
use crate::core::{ConnId, Limits, Timestamp};
use crate::protocol::ErrorCode;
use crate::protocol::server::ServerMessage;

fn room_with_messages(t: &mut TestHub, n: u64) -> (ConnId, String) {
    let a = t.user("alice");
    let epoch = t.join(a, "general").epoch;
    for i in 1..=n {
        t.say(a, "general", &format!("m{i}"));
    }
    (a, epoch)
}

#[test]
fn recovery_within_history_returns_only_newer_messages() {
    let mut t = TestHub::new(small_limits());
    let (_, epoch) = room_with_messages(&mut t, 7); // retained 3..=7
    let b = t.user("bob");
    for (since, expected) in [(2u64, vec![3, 4, 5, 6, 7]), (5, vec![6, 7]), (7, vec![])] {
        for with_epoch in [true, false] {
            let mut payload = json!({"roomId": "general", "sinceSeq": since});
            if with_epoch {
                payload["epoch"] = json!(epoch);
            }
            t.call(b, "JOIN_ROOM", payload, "r");
            let joined = t.joined(b, "r");
            assert_eq!(joined.recovered, Some(true), "since {since}");
            assert_eq!(seqs(&joined.messages), expected, "since {since}");
            assert_eq!(joined.epoch, epoch);
        }
    }
}

#[test]
fn recovery_after_eviction_is_not_recovered_and_returns_all_retained() {
    let mut t = TestHub::new(small_limits());
    let (_, epoch) = room_with_messages(&mut t, 7); // 1 and 2 evicted
    let b = t.user("bob");
    for since in [0u64, 1] {
        t.call(
            b,
            "JOIN_ROOM",
            json!({"roomId": "general", "sinceSeq": since, "epoch": epoch}),
            "r",
        );
        let joined = t.joined(b, "r");
        assert_eq!(joined.recovered, Some(false), "since {since}");
        assert_eq!(seqs(&joined.messages), [3, 4, 5, 6, 7]);
    }
}

#[test]
fn recovery_from_another_epoch_is_not_recovered() {
    let mut t = TestHub::new(small_limits());
    let (_, epoch) = room_with_messages(&mut t, 3);
    let b = t.user("bob");
    let stale = format!("{epoch}-old");
    t.call(
        b,
        "JOIN_ROOM",
        json!({"roomId": "general", "sinceSeq": 2, "epoch": stale}),
        "r",
    );
    let joined = t.joined(b, "r");
    assert_eq!(joined.recovered, Some(false));
    assert_eq!(seqs(&joined.messages), [1, 2, 3]);
    assert_eq!(joined.epoch, epoch);
}

#[test]
fn recovery_beyond_the_last_seq_is_not_recovered() {
    let mut t = TestHub::new(small_limits());
    let (_, epoch) = room_with_messages(&mut t, 3);
    let b = t.user("bob");
    t.call(
        b,
        "JOIN_ROOM",
        json!({"roomId": "general", "sinceSeq": 4, "epoch": epoch}),
        "r",
    );
    let joined = t.joined(b, "r");
    assert_eq!(joined.recovered, Some(false));
    assert_eq!(seqs(&joined.messages), [1, 2, 3]);
}

#[test]
fn negative_since_seq_is_invalid_message() {
    let mut t = TestHub::new(small_limits());
    let a = t.user("alice");
    t.call(
        a,
        "JOIN_ROOM",
        json!({"roomId": "general", "sinceSeq": -1}),
        "r",
    );
    t.error(a, ErrorCode::InvalidMessage, Some("r"));
    t.call(
        a,
        "GET_HISTORY",
        json!({"roomId": "general", "beforeSeq": -1}),
        "h",
    );
    t.error(a, ErrorCode::InvalidMessage, Some("h"));
    // Nothing joined.
    t.call(a, "GET_HISTORY", json!({"roomId": "general"}), "h2");
    t.error(a, ErrorCode::NotAMember, Some("h2"));
}

#[test]
fn restart_changes_the_epoch_so_recovery_is_not_recovered() {
    let mut before = TestHub::with(small_limits(), &[("general", "General Chat")], 1);
    let a = before.user("alice");
    let old_epoch = before.join(a, "general").epoch;
    let old_first = before.say(a, "general", "one");
    before.say(a, "general", "two");
    before.say(a, "general", "three");

    let mut after = TestHub::with(small_limits(), &[("general", "General Chat")], 2);
    let a = after.user("alice");
    after.call(
        a,
        "JOIN_ROOM",
        json!({"roomId": "general", "sinceSeq": 3, "epoch": old_epoch}),
        "r",
    );
    let joined = after.joined(a, "r");
    assert_ne!(joined.epoch, old_epoch);
    assert_eq!(joined.recovered, Some(false));
    assert!(joined.messages.is_empty());
    // Message ids stay unique across the restart.
    let new_first = after.say(a, "general", "one again");
    assert_eq!(new_first.seq, 1);
    assert_ne!(new_first.id, old_first.id);
    // A client that reconnects with the new epoch recovers.
    after.call(
        a,
        "JOIN_ROOM",
        json!({"roomId": "general", "sinceSeq": 0, "epoch": joined.epoch}),
        "r2",
    );
    let again = after.joined(a, "r2");
    assert_eq!(again.recovered, Some(true));
    assert_eq!(seqs(&again.messages), [1]);
}

#[test]
fn get_history_pages_backwards() {
    let limits = Limits {
        history_limit: 10,
        ..small_limits()
    };
    let mut t = TestHub::new(limits);
    let (a, _) = room_with_messages(&mut t, 7);
    assert_eq!(
        t.history(a, "general", json!({})),
        ((1..=7).collect(), false)
    );
    assert_eq!(
        t.history(a, "general", json!({"limit": 3})),
        (vec![5, 6, 7], true)
    );
    assert_eq!(
        t.history(a, "general", json!({"beforeSeq": 5, "limit": 3})),
        (vec![2, 3, 4], true)
    );
    assert_eq!(
        t.history(a, "general", json!({"beforeSeq": 2, "limit": 3})),
        (vec![1], false)
    );
    assert_eq!(
        t.history(a, "general", json!({"beforeSeq": 4, "limit": 3})),
        (vec![1, 2, 3], false)
    );
    assert_eq!(
        t.history(a, "general", json!({"beforeSeq": 1})),
        (vec![], false)
    );
    assert_eq!(
        t.history(a, "general", json!({"beforeSeq": 100, "limit": 1})),
        (vec![7], true)
    );
    // Out-of-range limits are INVALID_MESSAGE.
    for limit in [0, 101] {
        t.call(
            a,
            "GET_HISTORY",
            json!({"roomId": "general", "limit": limit}),
            "bad",
        );
        t.error(a, ErrorCode::InvalidMessage, Some("bad"));
    }
}

#[test]
fn get_history_has_more_counts_retained_messages_only() {
    let mut t = TestHub::new(small_limits()); // history 5
    let (a, _) = room_with_messages(&mut t, 9); // retained 5..=9
    assert_eq!(
        t.history(a, "general", json!({"beforeSeq": 7, "limit": 2})),
        (vec![5, 6], false)
    );
    assert_eq!(
        t.history(a, "general", json!({"beforeSeq": 5})),
        (vec![], false)
    );
}

#[test]
fn get_history_requires_membership() {
    let mut t = TestHub::new(small_limits());
    room_with_messages(&mut t, 2);
    let b = t.user("bob");
    t.call(b, "GET_HISTORY", json!({"roomId": "general"}), "h");
    t.error(b, ErrorCode::NotAMember, Some("h"));
    t.call(b, "GET_HISTORY", json!({"roomId": "nowhere"}), "h2");
    t.error(b, ErrorCode::RoomNotFound, Some("h2"));
}

#[test]
fn set_limits_shrinks_history_and_forgets_evicted_retry_keys() {
    let mut t = TestHub::new(small_limits()); // history 5
    let a = t.user("alice");
    t.join(a, "general");
    let send = json!({"roomId": "general", "content": "first", "clientMessageId": "k"});
    t.call(a, "SEND_MESSAGE", send.clone(), "m1");
    let first = new_message(t.one(a));
    for i in 2..=4 {
        t.say(a, "general", &format!("m{i}"));
    }
    let now = Timestamp(t.now);
    t.hub.set_limits(
        now,
        Limits {
            history_limit: 2,
            ..small_limits()
        },
    );
    t.call(a, "GET_HISTORY", json!({"roomId": "general"}), "h");
    let history = t.one(a);
    let ServerMessage::History { messages, .. } = history.message else {
        panic!("expected HISTORY, got {history:?}");
    };
    assert_eq!(seqs(&messages), [3, 4]);
    // The original of "k" was evicted by the new limit: a retry is new.
    t.call(a, "SEND_MESSAGE", send, "m2");
    let again = new_message(t.one(a));
    assert_eq!(again.seq, 5);
    assert_ne!(again.id, first.id);
}

/// A message is kept once, as its `NEW_MESSAGE` frame: `ROOM_JOINED` and
/// `HISTORY` carry exactly the JSON that frame carries, escapes and all.
#[test]
fn history_replies_carry_the_broadcast_json_byte_for_byte() {
    let mut t = TestHub::new(small_limits());
    let a = t.user("alice");
    t.join(a, "general");
    let b = t.user("bob");
    t.join(b, "general");
    t.frames(a);
    let contents = [
        "quote \" backslash \\ slash /",
        "\u{1}\u{1f}\u{7f} control",
        "é ✓ 😀 \u{2028}",
    ];
    let mut broadcast = Vec::new();
    for (i, content) in contents.iter().enumerate() {
        t.call(
            a,
            "SEND_MESSAGE",
            json!({"roomId": "general", "content": content, "clientMessageId": format!("k\"{i}")}),
            "s",
        );
        t.values(a);
        let frame = match t.step_outputs().last() {
            Some(crate::core::Output::Frame { frame, .. }) => frame.clone(),
            other => panic!("{other:?}"),
        };
        t.take_step();
        let text = std::str::from_utf8(&frame).unwrap().to_owned();
        let payload = text
            .strip_prefix(r#"{"type":"NEW_MESSAGE","payload":"#)
            .and_then(|p| p.strip_suffix('}'))
            .expect("a broadcast frame")
            .to_owned();
        broadcast.push(payload);
    }
    let listed = format!("[{}]", broadcast.join(","));
    let c = t.user("carol");
    t.take_step();
    t.call(c, "JOIN_ROOM", json!({"roomId": "general"}), "j");
    t.call(c, "GET_HISTORY", json!({"roomId": "general"}), "h");
    let texts: Vec<String> = t
        .step_outputs()
        .iter()
        .filter_map(|o| match o {
            crate::core::Output::Frame { conn, frame, .. } if *conn == c => {
                Some(String::from_utf8(frame.to_vec()).unwrap())
            }
            _ => None,
        })
        .collect();
    assert_eq!(texts.len(), 2, "{texts:?}");
    for text in &texts {
        assert!(
            text.contains(&format!(r#""messages":{listed}"#)),
            "{text}\nlacks {listed}"
        );
    }
}
