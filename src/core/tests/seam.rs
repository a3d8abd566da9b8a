//! The store seam with the store's answers in the test's hands: two nodes
//! (two hubs) on one `MemoryStore`, whose replies and events the test hands
//! back when it chooses, late, out of order, or not at all. This is what a
//! store across a network does to a node; `Local`, which answers within the
//! same call, never does.

use std::collections::{BTreeMap, VecDeque};

use serde_json::{Value, json};

use super::harness::{T0, small_limits, token};
use crate::core::{
    ConnId, DefaultRoom, Hub, Inbound, Instance, OpId, Output, Timestamp, WAITING_MAX,
};
use crate::protocol::parse::{ParseLimits, parse_once};
use crate::store::memory::MemoryStore;
use crate::store::{Event, Op, Reply};

/// Two nodes and their store.
struct Cluster {
    nodes: Vec<Hub>,
    store: MemoryStore,
    /// Each node's operations not executed yet, in order.
    ops: Vec<VecDeque<(OpId, Op)>>,
    /// Frames received, by node and connection, as JSON.
    inbox: BTreeMap<(usize, ConnId), Vec<Value>>,
    closes: BTreeMap<(usize, ConnId), u16>,
    now: u64,
}

impl Cluster {
    fn new() -> Cluster {
        Cluster::with_secrets([1, 2])
    }

    /// Two nodes whose room-id generators are seeded with `secrets`.
    fn with_secrets(secrets: [u64; 2]) -> Cluster {
        let rooms = [DefaultRoom {
            id: "general".into(),
            name: "General".into(),
        }];
        let nodes = (1..=2)
            .zip(secrets)
            .map(|(n, secret)| {
                Hub::new(
                    small_limits(),
                    &rooms,
                    Instance { number: n, secret },
                    Timestamp(T0),
                )
            })
            .collect();
        let mut c = Cluster {
            nodes,
            store: MemoryStore::new(),
            ops: vec![VecDeque::new(), VecDeque::new()],
            inbox: BTreeMap::new(),
            closes: BTreeMap::new(),
            now: T0,
        };
        c.settle();
        c
    }

    /// Moves every node's outputs out: frames to the inboxes, operations to
    /// the queues.
    fn collect(&mut self) {
        for (n, hub) in self.nodes.iter_mut().enumerate() {
            while let Some(out) = hub.poll_output() {
                match out {
                    Output::Frame { conn, frame, .. } => {
                        let v: Value = serde_json::from_slice(&frame).expect("JSON frame");
                        self.inbox.entry((n, conn)).or_default().push(v);
                    }
                    Output::Close { conn, code, .. } => {
                        self.closes.insert((n, conn), code.code());
                    }
                    Output::Store { id, op } => self.ops[n].push_back((id, op)),
                    Output::Subscribe { .. } | Output::Unsubscribe { .. } => {}
                }
            }
        }
    }

    /// Executes node `n`'s next operation: its reply goes back to `n`
    /// (unless `hold_reply`), and its events to every node, except the
    /// node `drop_event_for` names. Returns the held reply's delivery.
    fn execute(
        &mut self,
        n: usize,
        drop_event_for: Option<usize>,
        hold_reply: bool,
    ) -> Option<(OpId, Reply)> {
        self.collect();
        let (id, op) = self.ops[n].pop_front().expect("an operation is waiting");
        let (reply, events) = self.store.apply(&op);
        let now = Timestamp(self.now);
        let held = if hold_reply {
            Some((id, reply))
        } else {
            self.nodes[n].store_reply(now, id, reply);
            None
        };
        self.publish(events, drop_event_for);
        self.collect();
        held
    }

    fn publish(&mut self, events: Vec<Event>, drop_event_for: Option<usize>) {
        let now = Timestamp(self.now);
        for event in events {
            for (m, hub) in self.nodes.iter_mut().enumerate() {
                if drop_event_for != Some(m) {
                    hub.store_event(now, event.clone());
                }
            }
        }
    }

    /// Executes every waiting operation of every node until none is left.
    fn settle(&mut self) {
        loop {
            self.collect();
            let Some(n) = (0..self.nodes.len()).find(|&n| !self.ops[n].is_empty()) else {
                return;
            };
            self.execute(n, None, false);
        }
    }

    fn handle(&mut self, n: usize, conn: ConnId, message: Value) {
        let mut bytes = message.to_string().into_bytes();
        let parsed = parse_once(&mut bytes, ParseLimits::default()).expect("a valid request");
        let inbound = Inbound::from_message(parsed, |sub| Ok(token(sub)));
        self.nodes[n].handle(Timestamp(self.now), conn, inbound);
        self.collect();
    }

    /// A connection of `user` on node `n`, authenticated (all settled).
    fn user(&mut self, n: usize, conn: u64, user: &str) -> ConnId {
        let conn = ConnId(conn);
        self.nodes[n].connect(Timestamp(self.now), conn);
        self.handle(
            n,
            conn,
            json!({"type": "AUTHENTICATE", "payload": {"token": user}}),
        );
        self.settle();
        self.take(n, conn);
        conn
    }

    fn take(&mut self, n: usize, conn: ConnId) -> Vec<Value> {
        self.inbox.remove(&(n, conn)).unwrap_or_default()
    }

    fn types(&mut self, n: usize, conn: ConnId) -> Vec<String> {
        self.take(n, conn)
            .iter()
            .map(|v| v["type"].as_str().unwrap_or("").to_owned())
            .collect()
    }
}

fn join(room: &str, rid: &str) -> Value {
    json!({"type": "JOIN_ROOM", "payload": {"roomId": room}, "requestId": rid})
}

fn say(room: &str, content: &str, rid: &str) -> Value {
    json!({"type": "SEND_MESSAGE", "payload": {"roomId": room, "content": content}, "requestId": rid})
}

/// `(seq, requestId)` of each `NEW_MESSAGE`.
fn messages(frames: &[Value]) -> Vec<(u64, Option<String>)> {
    frames
        .iter()
        .filter(|v| v["type"] == "NEW_MESSAGE")
        .map(|v| {
            (
                v["payload"]["seq"].as_u64().unwrap_or(0),
                v["requestId"].as_str().map(str::to_owned),
            )
        })
        .collect()
}

#[test]
fn a_connections_messages_wait_for_the_store_and_are_answered_in_order() {
    let mut c = Cluster::new();
    let alice = c.user(0, 1, "alice");
    c.handle(0, alice, join("general", "j"));
    c.handle(0, alice, say("general", "hi", "s"));
    c.handle(0, alice, json!({"type": "PING", "requestId": "p"}));
    // Only the join has gone to the store: the send and the ping wait.
    assert_eq!(c.ops[0].len(), 1);
    assert!(matches!(c.ops[0][0].1, Op::Join { .. }));
    assert_eq!(c.types(0, alice), Vec::<String>::new());
    c.execute(0, None, false);
    // The join is answered; the send went to the store; the ping waits
    // behind it.
    assert_eq!(c.types(0, alice), ["ROOM_JOINED"]);
    assert!(matches!(c.ops[0][0].1, Op::Publish { .. }));
    c.execute(0, None, false);
    let frames = c.take(0, alice);
    assert_eq!(messages(&frames), [(1, Some("s".to_owned()))]);
    assert_eq!(frames[1]["type"], "PONG");
    assert_eq!(frames.len(), 2);
}

#[test]
fn two_nodes_on_one_store_are_one_service() {
    let mut c = Cluster::new();
    let alice = c.user(0, 1, "alice");
    let bob = c.user(1, 1, "bob");
    c.handle(0, alice, join("general", "j"));
    c.settle();
    c.take(0, alice);
    c.handle(1, bob, join("general", "j"));
    c.settle();
    let joined = c.take(1, bob);
    let users: Vec<&str> = joined[0]["payload"]["users"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["userId"].as_str().unwrap())
        .collect();
    assert_eq!(users, ["alice", "bob"], "presence is the service's");
    assert_eq!(joined[0]["payload"]["room"]["memberCount"], 2);
    assert_eq!(c.types(0, alice), ["USER_JOINED"]);
    c.handle(1, bob, say("general", "from b", "s1"));
    c.settle();
    c.handle(0, alice, say("general", "from a", "s2"));
    c.settle();
    assert_eq!(
        messages(&c.take(0, alice)),
        [(1, None), (2, Some("s2".to_owned()))]
    );
    assert_eq!(
        messages(&c.take(1, bob)),
        [(1, Some("s1".to_owned())), (2, None)]
    );
    // Typing crosses nodes, and a message ends it.
    c.handle(
        1,
        bob,
        json!({"type": "TYPING_STATUS", "payload": {"roomId": "general", "isTyping": true}}),
    );
    c.settle();
    let typing = c.take(0, alice);
    assert_eq!(typing[0]["type"], "TYPING_UPDATE");
    assert_eq!(typing[0]["payload"]["isTyping"], true);
    // Bob's node goes: its connection leaves, and alice is told.
    c.nodes[1].disconnect(Timestamp(c.now), bob);
    c.settle();
    let left = c.take(0, alice);
    let kinds: Vec<&str> = left.iter().map(|v| v["type"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["TYPING_UPDATE", "USER_LEFT"]);
}

#[test]
fn a_message_whose_event_comes_before_the_senders_reply_is_delivered_once_in_order() {
    let mut c = Cluster::new();
    let alice = c.user(0, 1, "alice");
    let carol = c.user(0, 2, "carol");
    let bob = c.user(1, 1, "bob");
    for (n, conn) in [(0, alice), (0, carol), (1, bob)] {
        c.handle(n, conn, join("general", "j"));
        c.settle();
    }
    for (n, conn) in [(0, alice), (0, carol), (1, bob)] {
        c.take(n, conn);
    }
    // Alice's publish is stored and published; its reply is late.
    c.handle(0, alice, say("general", "a1", "s"));
    let (id, reply) = c.execute(0, None, true).expect("held");
    // Bob, on the other node, already has it; alice's node waits.
    assert_eq!(messages(&c.take(1, bob)), [(1, None)]);
    assert_eq!(messages(&c.take(0, carol)), []);
    assert_eq!(messages(&c.take(0, alice)), []);
    // Bob sends seq 2 meanwhile: alice's node holds it behind seq 1.
    c.handle(1, bob, say("general", "b2", "t"));
    c.execute(1, None, false);
    assert_eq!(messages(&c.take(0, carol)), []);
    c.nodes[0].store_reply(Timestamp(c.now), id, reply);
    c.collect();
    assert_eq!(
        messages(&c.take(0, alice)),
        [(1, Some("s".to_owned())), (2, None)]
    );
    assert_eq!(messages(&c.take(0, carol)), [(1, None), (2, None)]);
}

#[test]
fn a_lost_event_is_read_back_before_anything_newer_is_delivered() {
    let mut c = Cluster::new();
    let alice = c.user(0, 1, "alice");
    let bob = c.user(1, 1, "bob");
    for (n, conn) in [(0, alice), (1, bob)] {
        c.handle(n, conn, join("general", "j"));
        c.settle();
        c.take(n, conn);
    }
    c.take(0, alice);
    // Seq 1's event never reaches alice's node; seq 2's does.
    c.handle(1, bob, say("general", "one", "s1"));
    c.execute(1, Some(0), false);
    c.handle(1, bob, say("general", "two", "s2"));
    c.execute(1, None, false);
    assert_eq!(messages(&c.take(0, alice)), [], "seq 2 waits for seq 1");
    // Alice's node reads the gap back from the store.
    assert!(matches!(c.ops[0].front(), Some((_, Op::Since { .. }))));
    c.settle();
    assert_eq!(messages(&c.take(0, alice)), [(1, None), (2, None)]);
}

#[test]
fn too_many_messages_waiting_for_the_store_close_the_connection_1013() {
    let mut c = Cluster::new();
    let alice = c.user(0, 1, "alice");
    c.handle(0, alice, join("general", "j"));
    for i in 0..WAITING_MAX {
        c.handle(
            0,
            alice,
            json!({"type": "PING", "requestId": i.to_string()}),
        );
    }
    assert_eq!(c.closes.get(&(0, alice)), None);
    c.handle(0, alice, json!({"type": "PING"}));
    assert_eq!(c.closes.get(&(0, alice)), Some(&1013));
    // The store still holds the join it was asked for: the node takes the
    // connection out again when the reply comes.
    c.settle();
    let Reply::Rooms(rooms) = c.store.apply(&Op::ListRooms).0 else {
        panic!("ListRooms answers Rooms");
    };
    assert_eq!(rooms[0].record.id, "general");
    assert_eq!(rooms[0].member_count, 0, "nobody is left in the room");
}

#[test]
fn a_drawn_room_id_another_node_drew_first_is_drawn_again() {
    // Both nodes draw the same ids, in the same order.
    let mut c = Cluster::with_secrets([7, 7]);
    let alice = c.user(0, 1, "alice");
    let bob = c.user(1, 1, "bob");
    let create = json!({"type": "CREATE_ROOM", "payload": {"name": "Ours"}, "requestId": "c"});
    c.handle(0, alice, create.clone());
    c.settle();
    let first = c.take(0, alice);
    assert_eq!(first[0]["type"], "ROOM_CREATED", "{first:?}");
    c.handle(1, bob, create);
    // The store refuses bob's first draw (alice's room has it) and the
    // node asks again with the next one.
    c.execute(1, None, false);
    assert!(
        matches!(c.ops[1].front(), Some((_, Op::CreateRoom { .. }))),
        "{:?}",
        c.ops[1]
    );
    c.settle();
    let second = c.take(1, bob);
    assert_eq!(second[0]["type"], "ROOM_CREATED", "{second:?}");
    assert_eq!(second[0]["requestId"], "c");
    assert_ne!(
        first[0]["payload"]["room"]["id"],
        second[0]["payload"]["room"]["id"]
    );
    assert_eq!(second[0]["payload"]["room"]["createdBy"], "bob");
}

/// Alice on node 0 and bob on node 1 in `general`, all frames so far taken.
fn alice_and_bob() -> (Cluster, ConnId, ConnId) {
    let mut c = Cluster::new();
    let alice = c.user(0, 1, "alice");
    let bob = c.user(1, 1, "bob");
    for (n, conn) in [(0, alice), (1, bob)] {
        c.handle(n, conn, join("general", "j"));
        c.settle();
    }
    c.take(0, alice);
    c.take(1, bob);
    (c, alice, bob)
}

#[test]
fn a_gap_the_store_no_longer_holds_closes_the_rooms_connections_1013() {
    let (mut c, alice, bob) = alice_and_bob();
    // Seq 1 never reaches alice's node; seq 2 does, and the node asks for
    // what it missed, but the store answers only after seq 1 was evicted
    // (HISTORY_LIMIT 5, then 7 messages).
    c.handle(1, bob, say("general", "m1", "s1"));
    c.execute(1, Some(0), false);
    for i in 2..=7 {
        c.handle(1, bob, say("general", &format!("m{i}"), &format!("s{i}")));
        c.execute(1, None, false);
    }
    assert!(matches!(c.ops[0].front(), Some((_, Op::Since { .. }))));
    assert_eq!(messages(&c.take(0, alice)), []);
    c.settle();
    assert_eq!(c.closes.get(&(0, alice)), Some(&1013));
    assert_eq!(messages(&c.take(0, alice)), [], "nothing out of order");
}

/// Alice and bob as [`alice_and_bob`]; bob's seq 1 never reached alice's
/// node, his seq 2 did, and the node's read of the gap is taken out of its
/// queue, unanswered.
/// Node 0 does not read the gap back again: alice's connection was closed
/// with 1013, to resume.
fn resumes_without_asking_again(c: &Cluster, alice: ConnId) {
    assert!(
        !c.ops[0]
            .iter()
            .any(|(_, op)| matches!(op, Op::Since { .. })),
        "asked again: {:?}",
        c.ops[0]
    );
    assert_eq!(c.closes.get(&(0, alice)), Some(&1013));
}

fn gap_on_node_0() -> (Cluster, ConnId, OpId, Op) {
    let (mut c, alice, bob) = alice_and_bob();
    c.handle(1, bob, say("general", "m1", "s1"));
    c.execute(1, Some(0), false);
    c.handle(1, bob, say("general", "m2", "s2"));
    c.execute(1, None, false);
    let (id, op) = c.ops[0].pop_front().expect("the read of the gap");
    assert!(matches!(op, Op::Since { .. }), "{op:?}");
    (c, alice, id, op)
}

#[test]
fn a_read_back_that_cannot_close_the_gap_is_not_asked_again() {
    let (mut c, alice, id, op) = gap_on_node_0();
    // The store answers the read with seq 1 in a form that is not a
    // message's frame (its data damaged).
    let Reply::Recovery {
        epoch,
        last_seq,
        users,
        presence_seq,
        ..
    } = c.store.apply(&op).0
    else {
        panic!("Since answers Recovery");
    };
    let damaged = crate::store::StoredMessage {
        seq: 1,
        frame: bytes::Bytes::from_static(b"not a frame"),
    };
    let reply = Reply::Recovery {
        epoch,
        users,
        messages: vec![damaged],
        recovered: true,
        last_seq,
        presence_seq,
    };
    c.nodes[0].store_reply(Timestamp(c.now), id, reply);
    c.collect();
    resumes_without_asking_again(&c, alice);
}

#[test]
fn a_store_that_does_not_answer_is_a_server_error_with_retry_after_and_the_connection_goes_on() {
    let (mut c, alice, bob) = alice_and_bob();
    c.handle(0, alice, say("general", "lost?", "s"));
    let (id, op) = c.ops[0].pop_front().expect("the publish");
    assert!(matches!(op, Op::Publish { .. }), "{op:?}");
    c.handle(0, alice, json!({"type": "PING", "requestId": "p"}));
    c.nodes[0].store_failed(Timestamp(c.now), id, 1500);
    c.collect();
    let frames = c.take(0, alice);
    assert_eq!(frames[0]["type"], "ERROR", "{frames:?}");
    assert_eq!(frames[0]["payload"]["code"], "SERVER_ERROR");
    assert_eq!(frames[0]["payload"]["retryAfterMs"], 1500);
    assert_eq!(frames[0]["requestId"], "s");
    // The message waiting behind it is answered; nothing is closed.
    assert_eq!(frames[1]["type"], "PONG");
    assert_eq!(c.closes.get(&(0, alice)), None);
    // The room is not held for the failed publish: bob's next message
    // reaches alice.
    c.handle(1, bob, say("general", "next", "t"));
    c.settle();
    assert_eq!(messages(&c.take(0, alice)), [(1, None)]);

    // A join whose outcome is unknown is answered, and undone in the store.
    let carol = c.user(1, 2, "carol");
    c.handle(1, carol, join("general", "j"));
    let (id, op) = c.ops[1].pop_front().expect("the join");
    let (reply, events) = c.store.apply(&op);
    assert!(matches!(reply, Reply::Joined { .. }), "{reply:?}");
    c.publish(events, None);
    c.nodes[1].store_failed(Timestamp(c.now), id, 1500);
    c.collect();
    let frames = c.take(1, carol);
    assert_eq!(frames[0]["payload"]["code"], "SERVER_ERROR", "{frames:?}");
    assert!(
        matches!(c.ops[1].front(), Some((_, Op::Leave { .. }))),
        "{:?}",
        c.ops[1]
    );
    c.settle();
    let Reply::Rooms(rooms) = c.store.apply(&Op::ListRooms).0 else {
        panic!("ListRooms answers Rooms");
    };
    assert_eq!(rooms[0].member_count, 2, "carol is not left in the room");
    let kinds: Vec<String> = c
        .take(0, alice)
        .iter()
        .map(|v| v["type"].as_str().unwrap_or("").to_owned())
        .collect();
    assert_eq!(kinds, ["USER_JOINED", "USER_LEFT"]);
}

#[test]
fn a_join_answered_after_newer_messages_were_delivered_gets_them_read_back() {
    let (mut c, alice, bob) = alice_and_bob();
    let carol = c.user(0, 2, "carol");
    // Carol's join is done in the store before bob's messages, but its
    // reply reaches her node after their events.
    c.handle(0, carol, join("general", "j"));
    let (id, reply) = c.execute(0, None, true).expect("held");
    for i in 1..=2 {
        c.handle(1, bob, say("general", &format!("m{i}"), &format!("s{i}")));
        c.execute(1, None, false);
    }
    assert_eq!(messages(&c.take(0, alice)), [(1, None), (2, None)]);
    c.nodes[0].store_reply(Timestamp(c.now), id, reply);
    c.settle();
    let frames = c.take(0, carol);
    assert_eq!(frames[0]["type"], "ROOM_JOINED");
    assert_eq!(frames[0]["payload"]["messages"], json!([]));
    assert_eq!(messages(&frames), [(1, None), (2, None)]);
    assert_eq!(messages(&c.take(0, alice)), [], "nothing twice");
    // And the room goes on for both.
    c.handle(1, bob, say("general", "m3", "s3"));
    c.settle();
    assert_eq!(messages(&c.take(0, carol)), [(3, None)]);
    assert_eq!(messages(&c.take(0, alice)), [(3, None)]);
}

#[test]
fn after_a_resubscription_what_was_published_meanwhile_is_read_back() {
    let (mut c, alice, bob) = alice_and_bob();
    // Node 0's event stream is cut while bob sends: the event is lost, and
    // nothing newer comes to show the gap.
    c.handle(1, bob, say("general", "m1", "s1"));
    c.execute(1, Some(0), false);
    assert_eq!(messages(&c.take(0, alice)), []);
    c.nodes[0].store_resync(Timestamp(c.now), None);
    c.collect();
    assert!(matches!(c.ops[0].front(), Some((_, Op::Since { .. }))));
    c.settle();
    assert_eq!(messages(&c.take(0, alice)), [(1, None)]);
    // Nothing was missed this time: the read changes nothing.
    c.nodes[0].store_resync(Timestamp(c.now), Some("general"));
    c.settle();
    assert_eq!(c.take(0, alice), Vec::<Value>::new());
    assert_eq!(c.closes.get(&(0, alice)), None);
}

#[test]
fn a_request_waiting_behind_a_room_creation_waits_for_the_creators_join_too() {
    let mut c = Cluster::new();
    let alice = c.user(0, 1, "alice");
    c.handle(
        0,
        alice,
        json!({"type": "CREATE_ROOM", "payload": {"name": "Ours"}, "requestId": "c"}),
    );
    c.handle(0, alice, json!({"type": "PING", "requestId": "p"}));
    // The room is created; its creator's join goes to the store, and the
    // ping still waits (it was sent after the creation).
    c.execute(0, None, false);
    assert_eq!(c.ops[0].len(), 1, "{:?}", c.ops[0]);
    assert!(matches!(c.ops[0][0].1, Op::Join { .. }), "{:?}", c.ops[0]);
    assert_eq!(c.types(0, alice), Vec::<String>::new());
    c.settle();
    assert_eq!(c.types(0, alice), ["ROOM_CREATED", "PONG"]);
}

#[test]
fn a_senders_acknowledgements_keep_the_order_of_its_requests_across_rooms() {
    let (mut c, alice, bob) = alice_and_bob();
    c.handle(
        0,
        alice,
        json!({"type": "CREATE_ROOM", "payload": {"name": "Side"}, "requestId": "c"}),
    );
    c.settle();
    let created = c.take(0, alice);
    let side = created[0]["payload"]["room"]["id"]
        .as_str()
        .expect("an id")
        .to_owned();
    // `general` is held on alice's node: seq 1's event was lost, seq 2's
    // came, and the read of the gap is not answered yet.
    c.handle(1, bob, say("general", "m1", "b1"));
    c.execute(1, Some(0), false);
    c.handle(1, bob, say("general", "m2", "b2"));
    c.execute(1, None, false);
    assert!(matches!(c.ops[0].front(), Some((_, Op::Since { .. }))));
    let since = c.ops[0].pop_front().expect("the read");
    // Alice's message in `general` is stored (seq 3) but waits its turn;
    // her next one, in the other room, must not be answered before it.
    c.handle(0, alice, say("general", "a3", "s1"));
    c.execute(0, None, false);
    c.handle(0, alice, say(&side, "side", "s2"));
    assert!(
        c.ops[0].is_empty(),
        "sent before the first was acknowledged: {:?}",
        c.ops[0]
    );
    assert_eq!(messages(&c.take(0, alice)), []);
    c.ops[0].push_front(since);
    c.settle();
    let acks: Vec<Option<String>> = messages(&c.take(0, alice))
        .into_iter()
        .map(|(_, rid)| rid)
        .filter(Option::is_some)
        .collect();
    assert_eq!(acks, [Some("s1".to_owned()), Some("s2".to_owned())]);
}

/// Alice in `general` on node 0; bob's join on node 1 stored and answered,
/// its events held back (returned); carol connected on node 0.
fn bobs_arrival_unheard_on_node_0() -> (Cluster, ConnId, ConnId, Vec<Event>) {
    let mut c = Cluster::new();
    let alice = c.user(0, 1, "alice");
    c.handle(0, alice, join("general", "j"));
    c.settle();
    c.take(0, alice);
    let bob = c.user(1, 1, "bob");
    let carol = c.user(0, 2, "carol");
    c.handle(1, bob, join("general", "j"));
    let (id, op) = c.ops[1].pop_front().expect("bob's join");
    let (reply, bob_joined) = c.store.apply(&op);
    c.nodes[1].store_reply(Timestamp(c.now), id, reply);
    (c, alice, carol, bob_joined)
}

#[test]
fn a_presence_change_a_joiners_list_already_shows_is_not_shown_to_it_again() {
    // Bob joins on node 1; node 0 gets that change late.
    let (mut c, alice, carol, bob_joined) = bobs_arrival_unheard_on_node_0();
    // Carol joins on node 0 after it, and her reply comes before the
    // room's events of both joins (which come in their order).
    c.handle(0, carol, join("general", "j"));
    let (id, op) = c.ops[0].pop_front().expect("carol's join");
    let (reply, carol_joined) = c.store.apply(&op);
    c.nodes[0].store_reply(Timestamp(c.now), id, reply);
    c.settle();
    let joined = c.take(0, carol);
    let users: Vec<&str> = joined[0]["payload"]["users"]
        .as_array()
        .expect("users")
        .iter()
        .map(|u| u["userId"].as_str().expect("userId"))
        .collect();
    assert_eq!(users, ["alice", "bob", "carol"]);
    assert_eq!(c.types(0, alice), Vec::<String>::new());
    c.publish(bob_joined, Some(1));
    c.publish(carol_joined, None);
    c.collect();
    // Alice is told of both; carol's list already had them.
    let told: Vec<Value> = c
        .take(0, alice)
        .iter()
        .map(|v| v["payload"]["user"]["userId"].clone())
        .collect();
    assert_eq!(told, [json!("bob"), json!("carol")]);
    assert_eq!(c.take(0, carol), Vec::<Value>::new());
}

#[test]
fn a_read_back_the_store_fails_for_good_is_not_asked_again() {
    let (mut c, alice, id, _) = gap_on_node_0();
    // The driver retries while the store does not answer; what reaches the
    // node is a read that cannot succeed: its connections resume instead.
    c.nodes[0].store_failed(Timestamp(c.now), id, 1000);
    c.collect();
    resumes_without_asking_again(&c, alice);
}

#[test]
fn typing_heard_before_a_presence_change_does_not_hold_it_behind_a_reply_from_after_it() {
    let (mut c, alice, bob) = alice_and_bob();
    let dave = c.user(1, 2, "dave");
    // In the room's order: bob types, dave comes, alice sends. Node 0 gets
    // the reply to alice's send first, then the events in their order.
    let run = |c: &mut Cluster, n: usize, reply: bool| {
        let (id, op) = c.ops[n].pop_front().expect("an operation");
        let (r, events) = c.store.apply(&op);
        if reply {
            c.nodes[n].store_reply(Timestamp(c.now), id, r);
        }
        c.publish(events.clone(), Some(0));
        events
    };
    c.handle(
        1,
        bob,
        json!({"type": "TYPING_STATUS", "payload": {"roomId": "general", "isTyping": true}}),
    );
    let typing = run(&mut c, 1, false);
    c.handle(1, dave, join("general", "j"));
    let came = run(&mut c, 1, true);
    c.handle(0, alice, say("general", "hi", "s"));
    let sent = run(&mut c, 0, true);
    c.collect();
    assert_eq!(messages(&c.take(0, alice)), [], "waits for dave's arrival");
    for events in [typing, came, sent] {
        c.publish(events, None);
    }
    c.collect();
    let frames = c.take(0, alice);
    let types: Vec<&str> = frames.iter().map(|v| v["type"].as_str().unwrap()).collect();
    assert_eq!(
        types,
        ["TYPING_UPDATE", "USER_JOINED", "NEW_MESSAGE"],
        "{frames:?}"
    );
    assert_eq!(messages(&frames), [(1, Some("s".to_owned()))]);
}

/// `USER_JOINED`/`USER_LEFT` user ids and `NEW_MESSAGE` contents, in order.
fn story(frames: &[Value]) -> Vec<String> {
    frames
        .iter()
        .filter_map(|v| match v["type"].as_str()? {
            "USER_JOINED" => Some(format!("+{}", v["payload"]["user"]["userId"].as_str()?)),
            "USER_LEFT" => Some(format!("-{}", v["payload"]["userId"].as_str()?)),
            "NEW_MESSAGE" => Some(v["payload"]["content"].as_str()?.to_owned()),
            _ => None,
        })
        .collect()
}

#[test]
fn a_read_back_lists_each_member_what_its_own_list_did_not_show() {
    // Bob's arrival reaches node 0 late; carol's list shows it already.
    let (mut c, alice, carol, bob_came) = bobs_arrival_unheard_on_node_0();
    let dave = c.user(1, 2, "dave");
    c.handle(0, carol, join("general", "j"));
    c.execute(0, Some(0), false);
    let users: Vec<String> = c.take(0, carol)[0]["payload"]["users"]
        .as_array()
        .expect("users")
        .iter()
        .map(|u| u["userId"].as_str().expect("id").to_owned())
        .collect();
    assert_eq!(users, ["alice", "bob", "carol"]);
    // Dave's arrival never reaches node 0: it reads the room back.
    c.handle(1, dave, join("general", "j"));
    c.execute(1, Some(0), false);
    c.settle();
    c.nodes[0].store_resync(Timestamp(c.now), Some("general"));
    c.settle();
    c.publish(bob_came, Some(1));
    c.collect();
    assert_eq!(story(&c.take(0, alice)), ["+bob", "+carol", "+dave"]);
    assert_eq!(story(&c.take(0, carol)), ["+dave"]);
}

#[test]
fn a_read_back_shows_arrivals_before_the_messages_and_departures_after() {
    let (mut c, alice, bob) = alice_and_bob();
    let dave = c.user(1, 2, "dave");
    // While node 0's events are cut: dave comes, speaks and goes; bob
    // speaks and goes.
    c.handle(1, dave, join("general", "j"));
    c.execute(1, Some(0), false);
    c.handle(1, dave, say("general", "from dave", "s"));
    c.execute(1, Some(0), false);
    c.handle(
        1,
        dave,
        json!({"type": "LEAVE_ROOM", "payload": {"roomId": "general"}}),
    );
    c.execute(1, Some(0), false);
    c.handle(1, bob, say("general", "from bob", "s"));
    c.execute(1, Some(0), false);
    c.handle(
        1,
        bob,
        json!({"type": "LEAVE_ROOM", "payload": {"roomId": "general"}}),
    );
    c.execute(1, Some(0), false);
    c.settle();
    assert_eq!(story(&c.take(0, alice)), Vec::<String>::new());
    c.nodes[0].store_resync(Timestamp(c.now), Some("general"));
    c.settle();
    assert_eq!(
        story(&c.take(0, alice)),
        ["+dave", "from dave", "from bob", "-bob", "-dave"]
    );
}

#[test]
fn a_join_asked_again_while_the_last_one_is_undone_waits_for_the_undo() {
    let mut c = Cluster::new();
    let alice = c.user(0, 1, "alice");
    // The join reaches the store, but its answer is lost: it is undone.
    c.handle(0, alice, join("general", "j1"));
    let (id, op) = c.ops[0].pop_front().expect("the join");
    c.store.apply(&op);
    c.nodes[0].store_failed(Timestamp(c.now), id, 1000);
    c.collect();
    assert_eq!(c.types(0, alice), ["ERROR"]);
    assert!(matches!(c.ops[0].front(), Some((_, Op::Leave { .. }))));
    // Asked again before the undo is stored: it would be taken back by it.
    c.handle(0, alice, join("general", "j2"));
    let refused = c.take(0, alice);
    assert_eq!(refused[0]["payload"]["code"], "SERVER_ERROR", "{refused:?}");
    assert_eq!(refused[0]["payload"]["retryAfterMs"], 1000);
    c.settle();
    // Once undone, a join holds.
    c.handle(0, alice, join("general", "j3"));
    c.settle();
    assert_eq!(c.types(0, alice), ["ROOM_JOINED"]);
    let Reply::Rooms(rooms) = c.store.apply(&Op::ListRooms).0 else {
        panic!("rooms");
    };
    assert_eq!(rooms[0].member_count, 1);
}

#[test]
fn a_join_whose_undo_failed_for_good_may_be_asked_again() {
    let mut c = Cluster::new();
    let alice = c.user(0, 1, "alice");
    c.handle(0, alice, join("general", "j1"));
    let (id, _) = c.ops[0].pop_front().expect("the join");
    c.nodes[0].store_failed(Timestamp(c.now), id, 1000);
    c.collect();
    c.take(0, alice);
    // The undo fails as well (the driver gives up only on an error that
    // will not pass): the connection is not kept waiting for ever.
    let (leave, op) = c.ops[0].pop_front().expect("the undo");
    assert!(matches!(op, Op::Leave { .. }), "{op:?}");
    c.nodes[0].store_failed(Timestamp(c.now), leave, 1000);
    c.handle(0, alice, join("general", "j2"));
    c.settle();
    assert_eq!(c.types(0, alice), ["ROOM_JOINED"]);
}

#[test]
fn a_send_from_a_connection_the_store_took_out_closes_it_1013_and_stores_nothing() {
    let (mut c, alice, bob) = alice_and_bob();
    // The store took alice's connection out (its node's lease ran out and
    // another node swept it); node 0 does not know yet.
    let holder = c.nodes[0].holder(alice);
    let (_, events) = c.store.apply(&Op::Leave {
        room: "general".into(),
        user: "alice".into(),
        holder,
        now_ms: c.now,
    });
    c.publish(events, Some(0));
    c.take(1, bob);
    c.handle(0, alice, say("general", "late", "s"));
    c.settle();
    assert_eq!(c.closes.get(&(0, alice)), Some(&1013));
    assert_eq!(messages(&c.take(0, alice)), []);
    assert_eq!(messages(&c.take(1, bob)), []);
    let Reply::History { messages, .. } = c
        .store
        .apply(&Op::History {
            room: "general".into(),
            before_seq: None,
            limit: 10,
            history_limit: 100,
        })
        .0
    else {
        panic!("history");
    };
    assert!(messages.is_empty(), "{messages:?}");
}
