//! The core driven by operation lists (what the `core_operations` fuzz
//! target does), on stable Rust: seeded random programs, every oracle over
//! each. Also shows that the programs reach the edges the oracles are
//! about, and that the checker catches a corrupted record.

use arbitrary::{Arbitrary, Unstructured};
use sim::core_ops::{self, Content, EpochChoice, Operation, Program, Request, Setup};
use sim::obs::Obs;
use sim::oracles::Coverage;
use sim::rng::SimRng;

/// A program of `len` operations drawn from `seed`, weighted towards
/// authenticated traffic (arbitrary bytes mostly make short programs of
/// garbage; the fuzzer finds structure by itself, this test has to ask).
fn program(seed: u64, len: usize) -> Program {
    let mut r = SimRng::new(seed);
    let bytes: Vec<u8> = (0..64).map(|_| r.next_u64() as u8).collect();
    let setup = Setup::arbitrary(&mut Unstructured::new(&bytes)).expect("setup");
    let mut ops = Vec::with_capacity(len);
    for _ in 0..len {
        let conn = r.next_u64() as u8;
        let room = r.range(0, 5) as u8;
        let op = match r.range(0, 100) {
            0..8 => Operation::Connect,
            8..10 => Operation::Disconnect { conn },
            10..22 => Operation::Advance {
                ms: r.range(0, 700) as u16,
            },
            22 => {
                if r.chance(50) {
                    Operation::Restart
                } else {
                    Operation::Reload {
                        max_rooms: r.next_u64() as u8,
                        room_idle_ttl: r.next_u64() as u8,
                    }
                }
            }
            23..25 => Operation::Raw {
                conn,
                text: r
                    .pick(&[
                        "{",
                        "[]",
                        "{\"type\":\"PING\",\"requestId\":7}",
                        "{\"type\":\"NOPE\"}",
                    ])
                    .to_string(),
            },
            25 => Operation::Binary { conn },
            n => Operation::Request {
                conn,
                request: match n {
                    26..40 => Request::Authenticate {
                        // Mostly two users, so that many are refreshes.
                        user: if r.chance(80) {
                            r.range(0, 2)
                        } else {
                            r.range(0, 4)
                        } as u8,
                        // Claims over r1-r3 that grant and narrow.
                        rooms: *r.pick(&[0b0000, 0b0010, 0b0110, 0b1110, 0b1100]),
                        age_s: r.range(0, 3) as u8,
                        ttl_s: r.range(1, 8) as u8,
                        wrong_key: r.chance(10),
                        username: r.chance(30).then(|| r.range(0, 3) as u8),
                    },
                    40..44 => Request::CreateRoom {
                        room: r.chance(80).then_some(room),
                        name: "Room".into(),
                        private: r.chance(50),
                    },
                    44..46 => Request::ListRooms,
                    46..58 => Request::JoinRoom {
                        room,
                        since_seq: r.chance(50).then(|| r.range(0, 20) as u8),
                        epoch: match r.range(0, 4) {
                            0 => EpochChoice::Absent,
                            1 => EpochChoice::First,
                            2 => EpochChoice::Other(1),
                            _ => EpochChoice::Latest,
                        },
                    },
                    58..62 => Request::LeaveRoom { room },
                    62..67 => Request::GetHistory {
                        room,
                        before_seq: r.chance(50).then(|| r.range(0, 20) as u8),
                        limit: r.chance(50).then(|| r.range(0, 10) as u8),
                    },
                    67..90 => Request::SendMessage {
                        room,
                        content: if r.chance(95) {
                            Content::Word(r.next_u64() as u8)
                        } else {
                            Content::Text(" ".into())
                        },
                        emote: r.chance(10),
                        client_message_id: r.chance(50).then(|| r.range(0, 8) as u8),
                    },
                    90..97 => Request::TypingStatus {
                        room,
                        is_typing: r.chance(70),
                    },
                    _ => Request::Ping,
                },
            },
        };
        ops.push(op);
    }
    Program { setup, ops }
}

fn describe(out: &sim::oracles::Out) -> String {
    out.violations
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn random_programs_break_no_oracle() {
    let mut coverage = Coverage::default();
    for seed in 0..200 {
        let p = program(seed, 400);
        let out = core_ops::check(&p);
        assert!(out.violations.is_empty(), "seed {seed}: {}", describe(&out));
        coverage.merge(&out.coverage);
    }
    eprintln!("coverage over 200 programs: {:?}", coverage.0);
    for edge in [
        "auth_failures_close",
        "auth_timeout_close",
        "history_eviction",
        "rate_limited",
        "recovered_false",
        "retry_deduplicated",
        "room_deleted",
        "room_recreated",
        "squat_refused",
        "token_expiry_close",
        "token_refresh",
        "typing_ended",
    ] {
        assert!(
            coverage.get(edge) > 0,
            "no program reached {edge}: {:?}",
            coverage.0
        );
    }
}

#[test]
fn the_same_program_gives_the_same_records() {
    let p = program(7, 400);
    let (a, _) = core_ops::run(&p);
    let (b, _) = core_ops::run(&p);
    assert_eq!(sim::obs::trace_text(&a), sim::obs::trace_text(&b));
}

#[test]
fn a_duplicated_delivery_is_caught() {
    // Find a program in which some connection receives a chat message,
    // deliver that frame twice, and expect the checker to object.
    for seed in 0..50 {
        let p = program(seed, 400);
        let (mut records, end) = core_ops::run(&p);
        let Some(i) = records.iter().position(
            |r| matches!(&r.obs, Obs::Recv { text, .. } if text.contains("\"NEW_MESSAGE\"")),
        ) else {
            continue;
        };
        let copy = records[i].clone();
        records.insert(i + 1, copy);
        let out = core_ops::check_records(&p, &records, end);
        assert!(
            !out.violations.is_empty(),
            "seed {seed}: a message delivered twice went unnoticed"
        );
        return;
    }
    panic!("no program delivered a chat message");
}

#[test]
fn arbitrary_bytes_make_programs_that_run() {
    // What the fuzzer starts from: any bytes are a program, and it runs.
    let mut r = SimRng::new(1);
    for _ in 0..200 {
        let bytes: Vec<u8> = (0..2048).map(|_| r.next_u64() as u8).collect();
        let p = Program::arbitrary_take_rest(Unstructured::new(&bytes)).expect("a program");
        let out = core_ops::check(&p);
        assert!(out.violations.is_empty(), "{}", describe(&out));
    }
}
