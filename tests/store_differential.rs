//! The differential test: seeded operation sequences run against
//! `MemoryStore` (the model) and `RedisStore` on a real `redis-server`
//! (started here, see tests/common/redis.rs), comparing every reply and,
//! room by room, the events each operation published.
//!
//! Each seed draws 200 operations (`DIFF_SEEDS`, default 200 seeds from 0;
//! `DIFF_OPS`, default 200) over a few rooms, users and nodes, with small
//! history limits so that eviction happens, a small send bucket so that
//! rate limits do, time going forward (and sometimes a little back: another
//! node's clock), nodes whose heartbeats stop, rooms deleted and created
//! again. Redis is emptied (`FLUSHDB`) before each seed; two `RedisStore`s
//! (two nodes' connections) take the operations in turn.
//!
//! Sends and typing come mostly from connections the sequence joined to
//! the room (the store refuses the others: `Unheld`), sometimes from any.
//!
//! Events: one subscriber connection is subscribed to every room first.
//! After each operation a `Typing` on a room of its own (`~sync`, unknown
//! to the model; its one holder is written into Redis directly, so that no
//! room of that name is listed) is published through the same Redis; Redis delivers the
//! messages of one connection's channels in the order it published them, so
//! what arrives before that marker is exactly what the operation published.
//!
//! On a mismatch: the seed, the operation's index, the operation, and both
//! answers.

#[path = "common/redis.rs"]
mod redis_server;

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;
use chat_flow::protocol::RoomKind;
use chat_flow::store::memory::MemoryStore;
use chat_flow::store::redis::{Notice, RedisConfig, RedisStore, Subscriber};
use chat_flow::store::{BucketShape, Draft, Event, Holder, NodeId, Op, RoomRecord, Since};
use redis_server::RedisServer;

const ROOMS: [&str; 5] = ["general", "r0", "r1", "r2", "r3"];
const USERS: [&str; 4] = ["u0", "u1", "u2", "u3"];
const NODES: [&str; 3] = ["A", "B", "C"];
const CMIDS: [&str; 3] = ["a", "b", "c"];
const SYNC: &str = "~sync";
const BUCKET: BucketShape = BucketShape {
    capacity: 2,
    window_ms: 5_000,
};
const NODE_TTL_MS: u64 = 3_000;

/// splitmix64: a small deterministic generator per seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len() as u64) as usize]
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

/// One seed's operations, drawn as the model's state goes (so that seqs
/// asked for are near the real ones).
struct Gen {
    rng: Rng,
    now: u64,
    epochs: u64,
    texts: u64,
    /// The connections each room was joined from (the join may have been
    /// refused, or the holder swept since: the store decides).
    joined: BTreeMap<String, Vec<(Holder, &'static str)>>,
}

impl Gen {
    fn new(seed: u64) -> Gen {
        Gen {
            rng: Rng(seed.wrapping_mul(0x2545_f491_4f6c_dd1d) ^ 0x5eed),
            now: 1_700_000_000_000,
            epochs: 0,
            texts: 0,
            joined: BTreeMap::new(),
        }
    }

    fn epoch(&mut self) -> String {
        self.epochs += 1;
        format!("ep{}", self.epochs)
    }

    /// A connection: node and number; its user is fixed by them (a
    /// connection is one user's), its name varies with the connection.
    fn holder(&mut self) -> (Holder, &'static str, String) {
        let n = self.rng.below(NODES.len() as u64) as usize;
        let conn = self.rng.below(5);
        let user = USERS[(n + conn as usize) % USERS.len()];
        let holder = Holder {
            node: NodeId(NODES[n].into()),
            conn,
        };
        let username = format!("{user} on {}{conn}", NODES[n]);
        (holder, user, username)
    }

    /// A connection that joined `room`, mostly; else any.
    fn sender(&mut self, room: &str) -> (Holder, &'static str) {
        let joined = self.joined.get(room).map_or(&[][..], Vec::as_slice);
        if !joined.is_empty() && self.rng.chance(85) {
            let i = self.rng.below(joined.len() as u64) as usize;
            return joined[i].clone();
        }
        let (holder, user, _) = self.holder();
        (holder, user)
    }

    fn history_limit(&mut self) -> u32 {
        2 + self.rng.below(3) as u32
    }

    fn since(&mut self) -> Since {
        let seq = self.rng.below(14);
        let epoch = match self.rng.below(4) {
            0 => None,
            1 => Some("bogus".to_owned()),
            // An epoch of this seed (current or not).
            _ => Some(format!("ep{}", 1 + self.rng.below(self.epochs.max(1)))),
        };
        Since { seq, epoch }
    }

    fn op(&mut self) -> Op {
        // Time: mostly forward in small steps, sometimes a leap (nodes'
        // leases and rooms' idle times run out), sometimes back.
        self.now = match self.rng.below(20) {
            0 => self.now + 2_000 + self.rng.below(6_000),
            1 => self.now.saturating_sub(self.rng.below(500)),
            _ => self.now + self.rng.below(150),
        };
        let now = self.now;
        let room = self.rng.pick(&ROOMS).to_owned();
        match self.rng.below(100) {
            0..=3 => Op::EnsureRoom {
                record: RoomRecord {
                    id: "general".into(),
                    name: "General".into(),
                    description: String::new(),
                    kind: RoomKind::Public,
                    created_at_ms: now,
                    created_by: None,
                    epoch: self.epoch(),
                },
            },
            4..=15 => {
                let kind = if self.rng.chance(30) {
                    RoomKind::Private
                } else {
                    RoomKind::Public
                };
                Op::CreateRoom {
                    record: RoomRecord {
                        id: room.clone(),
                        name: format!("Room {room}"),
                        description: format!("about {room}"),
                        kind,
                        created_at_ms: now,
                        created_by: Some(self.rng.pick(&USERS).into()),
                        epoch: self.epoch(),
                    },
                    rooms_per_user_max: 1 + self.rng.below(3) as u32,
                    max_rooms: 3 + self.rng.below(4),
                }
            }
            16..=17 => Op::ListRooms,
            18..=32 => {
                let (holder, user, username) = self.holder();
                let since = if self.rng.chance(40) {
                    Some(self.since())
                } else {
                    None
                };
                let joined = self.joined.entry(room.clone()).or_default();
                if !joined.iter().any(|(h, _)| *h == holder) {
                    joined.push((holder.clone(), user));
                }
                Op::Join {
                    room,
                    user: user.into(),
                    username,
                    holder,
                    granted: self.rng.chance(30),
                    since,
                    history_limit: self.history_limit(),
                    now_ms: now,
                }
            }
            33..=44 => {
                let (holder, user, _) = self.holder();
                if let Some(joined) = self.joined.get_mut(&room) {
                    joined.retain(|(h, _)| *h != holder);
                }
                Op::Leave {
                    room,
                    user: user.into(),
                    holder,
                    now_ms: now,
                }
            }
            45..=48 => Op::History {
                room,
                before_seq: if self.rng.chance(50) {
                    Some(self.rng.below(14))
                } else {
                    None
                },
                limit: self.rng.below(5) as u32,
                history_limit: self.history_limit(),
            },
            49..=72 => {
                self.texts += 1;
                let text = format!("m{} \"quoted\" é", self.texts);
                let (holder, user) = self.sender(&room);
                Op::Publish {
                    room,
                    user: user.into(),
                    holder,
                    client_message_id: if self.rng.chance(60) {
                        Some(self.rng.pick(&CMIDS).into())
                    } else {
                        None
                    },
                    draft: Draft {
                        head: Bytes::from(format!(
                            "{{\"type\":\"NEW_MESSAGE\",\"payload\":{{\"content\":\"{}\",\"seq\":",
                            text.replace('"', "\\\"")
                        )),
                        tail: Bytes::from_static(b"}}"),
                    },
                    bucket: BUCKET,
                    history_limit: self.history_limit(),
                    now_ms: now,
                }
            }
            73..=76 => Op::Since {
                room,
                since: self.since(),
                history_limit: self.history_limit(),
            },
            77..=79 => Op::Lookup { room },
            80..=82 => Op::Charge {
                user: self.rng.pick(&USERS).into(),
                bucket: BUCKET,
                now_ms: now,
            },
            83..=86 => {
                let (holder, user) = self.sender(&room);
                Op::Typing {
                    room,
                    user: user.into(),
                    username: "typist".into(),
                    is_typing: self.rng.chance(50),
                    holder,
                }
            }
            87..=93 => Op::Heartbeat {
                // Node C beats rarely: it is the one found dead most.
                node: NodeId(
                    if self.rng.chance(85) {
                        self.rng.pick(&NODES[..2])
                    } else {
                        "C"
                    }
                    .into(),
                ),
                now_ms: now,
                ttl_ms: NODE_TTL_MS,
            },
            _ => Op::DeleteIfIdle {
                room,
                idle_ttl_ms: 1 + self.rng.below(5_000),
                now_ms: now,
            },
        }
    }
}

/// Events by room, in order.
fn by_room(events: &[Event]) -> BTreeMap<String, Vec<Event>> {
    let mut out: BTreeMap<String, Vec<Event>> = BTreeMap::new();
    for e in events {
        out.entry(e.room().to_owned()).or_default().push(e.clone());
    }
    out
}

/// What the subscriber received up to the marker.
async fn until_marker(sub: &mut Subscriber) -> Vec<Event> {
    let mut out = Vec::new();
    loop {
        match tokio::time::timeout(Duration::from_secs(5), sub.next()).await {
            Ok(Some(Notice::Event(e))) if e.room() == SYNC => return out,
            Ok(Some(Notice::Event(e))) => out.push(e),
            other => panic!("the subscriber: {other:?} (events so far {out:?})"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_answers_as_the_memory_store_does() {
    let seeds: u64 = std::env::var("DIFF_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(200);
    let ops: usize = std::env::var("DIFF_OPS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(200);
    let server = RedisServer::start();
    let config = RedisConfig {
        url: server.url(),
        key_prefix: "chatflow".into(),
        timeout: Duration::from_secs(5),
    };
    let nodes = [
        RedisStore::connect(&config).await.expect("connects"),
        RedisStore::connect(&config).await.expect("connects"),
    ];
    let mut sub = nodes[0].subscriber().await.expect("pub/sub connects");
    for room in ROOMS.iter().chain([&SYNC]) {
        sub.subscribe(room).await.expect("subscribed");
    }
    let marker = Op::Typing {
        room: SYNC.into(),
        user: "sync".into(),
        username: "sync".into(),
        is_typing: true,
        holder: Holder {
            node: NodeId("sync".into()),
            conn: 0,
        },
    };
    let mut counts: BTreeMap<&'static str, u64> = BTreeMap::new();
    for seed in 0..seeds {
        assert_eq!(server.command(&["FLUSHDB"]).as_deref(), Some("+OK\r\n"));
        // The marker's connection, in a room no listing shows.
        assert_eq!(
            server
                .command(&["HSET", "chatflow:room:{~sync}:holders", "0:sync", "sync"])
                .as_deref(),
            Some(":1\r\n")
        );
        let mut model = MemoryStore::new();
        let mut generator = Gen::new(seed);
        for index in 0..ops {
            let op = generator.op();
            let node = &nodes[index % 2];
            let (expected, expected_events) = model.apply(&op);
            let got = match node.apply(&op).await {
                Ok(reply) => reply,
                Err(e) => panic!("seed {seed}, op {index}: {op:?}\nredis failed: {e}"),
            };
            node.apply(&marker).await.expect("the marker");
            let got_events = until_marker(&mut sub).await;
            assert!(
                got == expected,
                "seed {seed}, op {index}: {op:?}\nmemory: {expected:?}\nredis:  {got:?}"
            );
            assert!(
                by_room(&got_events) == by_room(&expected_events),
                "seed {seed}, op {index}: {op:?}\nmemory's events: {expected_events:?}\nredis's events:  {got_events:?}"
            );
            *counts.entry(reply_kind(&expected)).or_default() += 1;
            match &expected {
                chat_flow::store::Reply::Joined {
                    recovered: Some(r), ..
                }
                | chat_flow::store::Reply::Recovery { recovered: r, .. } => {
                    *counts
                        .entry(if *r { "recovered" } else { "not recovered" })
                        .or_default() += 1;
                }
                _ => {}
            }
            *counts.entry("events").or_default() += expected_events.len() as u64;
        }
    }
    // What the sequences covered (printed with --nocapture).
    eprintln!("{seeds} seeds x {ops} ops, replies and events compared: {counts:?}");
    for kind in [
        "Published",
        "Duplicate",
        "RateLimited",
        "Refused",
        "Created",
        "Swept(some)",
        "Unheld",
        "Deleted(true)",
        "Joined",
        "Recovery",
        "Forbidden",
        "recovered",
        "not recovered",
    ] {
        assert!(
            counts.get(kind).is_some_and(|&n| n > 0),
            "no {kind} in the sequences: {counts:?}"
        );
    }
}

fn reply_kind(r: &chat_flow::store::Reply) -> &'static str {
    use chat_flow::store::Reply::*;
    match r {
        Room(_) => "Room",
        Created(_) => "Created",
        Refused(_) => "Refused",
        Rooms(_) => "Rooms",
        Joined { .. } => "Joined",
        Forbidden => "Forbidden",
        Left { .. } => "Left",
        History { .. } => "History",
        Published(..) => "Published",
        Duplicate(_) => "Duplicate",
        RateLimited { .. } => "RateLimited",
        Charged => "Charged",
        Done => "Done",
        Swept { gone, .. } if gone.is_empty() => "Swept(none)",
        Swept { .. } => "Swept(some)",
        Unheld => "Unheld",
        Deleted(true) => "Deleted(true)",
        Deleted(false) => "Deleted(false)",
        Recovery { .. } => "Recovery",
        NotFound => "NotFound",
    }
}
