//! The `rooms` oracle over a hand-written program of the core: an owner
//! squats nothing, creates a private room; a guest joins it on its claim and
//! loses it to a narrower refresh; the room, left empty, is deleted after
//! `ROOM_IDLE_TTL_MS` and created again in a new epoch. The unbroken run
//! passes every oracle and reaches each edge; each way of breaking the
//! records a buggy server would produce is caught by `rooms`.

use std::sync::Arc;

use chat_flow::auth::{TokenSpec, mint_hs256};
use serde_json::{Value, json};
use sim::core_ops::{self, Content, EpochChoice, Operation, Program, Request, Setup};
use sim::obs::{Obs, Record};

const OWNER: u8 = 0;
const GUEST: u8 = 1;
/// Indices in the program's rooms: `r1`, `r2`.
const R1: u8 = 1;
const R2: u8 = 2;

fn request(conn: u8, request: Request) -> Operation {
    Operation::Request { conn, request }
}

fn auth(conn: u8, user: u8, rooms: u8) -> Operation {
    request(
        conn,
        Request::Authenticate {
            user,
            rooms,
            age_s: 0,
            ttl_s: 200,
            wrong_key: false,
            username: None,
        },
    )
}

fn create(conn: u8, room: u8) -> Operation {
    request(
        conn,
        Request::CreateRoom {
            room: Some(room),
            name: "Room".into(),
            private: true,
        },
    )
}

fn join(conn: u8, room: u8) -> Operation {
    request(
        conn,
        Request::JoinRoom {
            room,
            since_seq: None,
            epoch: EpochChoice::Absent,
        },
    )
}

/// Generous limits, `ROOM_IDLE_TTL_MS` 1 s (`room_idle_ttl` 10).
fn setup(room_idle_ttl: u8) -> Setup {
    Setup {
        history_limit: 4,
        typing_timeout: 10,
        rate_limit_messages: 9,
        rate_limit_requests: 39,
        rate_limit_window: 49,
        disconnect_after: 7,
        auth_timeout: 49,
        rooms_per_user_max: 3,
        leeway_s: 0,
        max_rooms: 5,
        room_idle_ttl,
    }
}

fn program() -> Program {
    Program {
        setup: setup(10),
        ops: vec![
            Operation::Connect,
            Operation::Connect,
            auth(OWNER, 0, 1 << R1),
            // A squat: r2 is not in the owner's claim.
            create(OWNER, R2),
            create(OWNER, R1),
            auth(GUEST, 1, 1 << R1),
            join(GUEST, R1),
            request(
                OWNER,
                Request::SendMessage {
                    room: R1,
                    content: Content::Word(1),
                    emote: false,
                    client_message_id: None,
                },
            ),
            // The guest's claim narrows: out of r1 at once.
            auth(GUEST, 1, 0),
            request(OWNER, Request::LeaveRoom { room: R1 }),
            Operation::Advance { ms: 999 },
            request(OWNER, Request::ListRooms),
            Operation::Advance { ms: 1 },
            // Deleted: not found, then created again.
            join(OWNER, R1),
            create(OWNER, R1),
        ],
    }
}

fn fired(program: &Program, records: &[Record], end: u64) -> Vec<String> {
    let out = core_ops::check_records(program, records, end);
    let mut names: Vec<String> = out.violations.iter().map(|v| v.oracle.clone()).collect();
    names.sort();
    names.dedup();
    names
}

fn value(r: &Record) -> Option<Value> {
    match &r.obs {
        Obs::Recv { text, .. } | Obs::Sent { text, .. } => serde_json::from_str(text).ok(),
        _ => None,
    }
}

fn set_text(r: &mut Record, v: &Value) {
    match &mut r.obs {
        Obs::Recv { text, .. } | Obs::Sent { text, .. } => *text = Arc::from(v.to_string()),
        _ => panic!("not a text record"),
    }
}

/// The index of the first received frame `pred` accepts.
fn find(records: &[Record], pred: impl Fn(&Value) -> bool) -> usize {
    records
        .iter()
        .position(|r| matches!(r.obs, Obs::Recv { .. }) && value(r).is_some_and(|v| pred(&v)))
        .expect("the program produces it")
}

#[track_caller]
fn assert_caught(program: &Program, records: &[Record], end: u64, what: &str) {
    let names = fired(program, records, end);
    assert!(
        names.iter().any(|n| n == "rooms"),
        "{what}: expected the rooms oracle to fire, got {names:?}"
    );
}

#[test]
fn the_program_passes_and_reaches_every_room_edge() {
    let p = program();
    let out = core_ops::check(&p);
    let shown: Vec<String> = out.violations.iter().map(ToString::to_string).collect();
    assert!(out.violations.is_empty(), "{shown:#?}");
    for edge in [
        "squat_refused",
        "room_revoked",
        "room_deleted",
        "room_recreated",
    ] {
        assert!(out.coverage.get(edge) > 0, "{edge}: {:?}", out.coverage.0);
    }
}

#[test]
fn the_rooms_oracle_has_teeth() {
    let p = program();
    let (records, end) = core_ops::run(&p);

    // The squat succeeds.
    let mut broken = records.clone();
    let i = find(&broken, |v| v["payload"]["code"] == "FORBIDDEN");
    let rid = value(&broken[i]).unwrap()["requestId"].clone();
    set_text(
        &mut broken[i],
        &json!({"type": "ROOM_CREATED", "requestId": rid, "payload": {"epoch": "e-99",
            "room": {"id": "r2", "name": "Room", "description": "", "type": "private",
                     "memberCount": 1, "createdAt": "2023-11-14T22:13:20.000Z", "createdBy": "u0"}}}),
    );
    assert_caught(&p, &broken, end, "a squatted id");

    // The narrower refresh leaves the guest in r1.
    let mut broken = records.clone();
    let i = find(&broken, |v| {
        v["type"] == "ROOM_LEFT" && v.get("requestId").is_none()
    });
    broken.remove(i);
    assert_caught(&p, &broken, end, "a missing ROOM_LEFT");

    // A ROOM_LEFT nobody's refresh owed.
    let mut broken = records.clone();
    let i = find(&broken, |v| v["type"] == "ROOM_LIST");
    let mut extra = broken[i].clone();
    set_text(
        &mut extra,
        &json!({"type": "ROOM_LEFT", "payload": {"roomId": "r1"}}),
    );
    broken.insert(i, extra);
    assert_caught(&p, &broken, end, "an unasked ROOM_LEFT");

    // The room created again resumes its old epoch.
    let mut broken = records.clone();
    let first = find(&broken, |v| v["type"] == "ROOM_CREATED");
    let old_epoch = value(&broken[first]).unwrap()["payload"]["epoch"].clone();
    let again = broken.len()
        - 1
        - broken
            .iter()
            .rev()
            .position(|r| value(r).is_some_and(|v| v["type"] == "ROOM_CREATED"))
            .unwrap();
    assert_ne!(again, first);
    let mut v = value(&broken[again]).unwrap();
    v["payload"]["epoch"] = old_epoch;
    set_text(&mut broken[again], &v);
    assert_caught(&p, &broken, end, "a reused epoch");

    // The guest joins the private room without a claim for it.
    let mut broken = records.clone();
    let i = broken
        .iter()
        .position(|r| {
            matches!(r.obs, Obs::Sent { conn: 1, .. })
                && value(r).is_some_and(|v| v["type"] == "AUTHENTICATE")
        })
        .unwrap();
    let mut v = value(&broken[i]).unwrap();
    v["payload"]["token"] =
        json!(mint_hs256(b"any", &TokenSpec::new("u1", 1_700_000_000, 200)).unwrap());
    set_text(&mut broken[i], &v);
    assert_caught(&p, &broken, end, "a private room joined without a grant");

    // The same records under a longer ROOM_IDLE_TTL_MS: deleted too soon.
    let longer = Program {
        setup: setup(20),
        ops: p.ops.clone(),
    };
    assert_caught(&longer, &records, end, "a room deleted too soon");
    let never = Program {
        setup: setup(0),
        ops: p.ops.clone(),
    };
    assert_caught(
        &never,
        &records,
        end,
        "a room deleted with ROOM_IDLE_TTL_MS 0",
    );
}
