//! A targeted scenario: a client is cut off from the server while the room
//! it is in empties, is deleted after `ROOM_IDLE_TTL_MS`, and is created
//! again by its owner; when the link heals, the client resumes with its
//! `sinceSeq` and old `epoch`, is told the new epoch (`recovered: false`,
//! a gap), and ends caught up in it. A second client, away the same way from
//! a room nobody creates again, gets `ROOM_NOT_FOUND` on resuming and
//! forgets the room. Every oracle holds, liveness included.

use std::collections::BTreeSet;

use sim::run_scenario;
use sim::scenario::{Action, ClientSpec, Fault, Features, Knobs, RawSpec, Scenario};

fn client(user: &str, room: &str) -> ClientSpec {
    ClientSpec {
        user: user.into(),
        seed: 7,
        token_ttl_s: 3_600,
        backoff_base_ms: 50,
        backoff_max_ms: 500,
        idle_timeout_ms: 2_500,
        actions: vec![
            (0, Action::Join("general".into())),
            (1_500, Action::Join(room.into())),
            (
                2_000,
                Action::Send {
                    room: room.into(),
                    count: 1,
                },
            ),
        ],
        final_rooms: BTreeSet::from(["general".to_owned(), room.to_owned()]),
        claims: vec![(0, vec![room.to_owned()])],
    }
}

fn scenario() -> Scenario {
    let knobs = Knobs {
        history_limit: 10,
        typing_timeout_ms: 2_000,
        presence_delay_ms: 0,
        ping_interval_ms: 1_000,
        idle_timeout_ms: 2_500,
        auth_timeout_ms: 2_000,
        outbound_queue_limit: 64,
        outbound_queue_bytes: 4 * 1024 * 1024,
        write_timeout_ms: 30_000,
        outbound_memory_max_bytes: 1 << 30,
        rate_limit_messages: 10,
        rate_limit_window_ms: 10_000,
        rate_limit_requests: 50,
        rate_limit_disconnect_after: 50,
        jwt_leeway_seconds: 0,
        room_idle_ttl_ms: 1_000,
        min_latency_ms: 1,
        max_latency_ms: 1,
        tcp_capacity: 64,
    };
    let owner = |user: &str, room: &str, visits: Vec<(u64, u64)>| RawSpec::Owner {
        user: user.into(),
        claim: vec![room.into()],
        rooms: vec![(room.into(), true)],
        squat: "nobody".into(),
        visits,
    };
    Scenario {
        seed: 1,
        features: Features {
            owned_rooms: true,
            partitions: true,
            ..Features::default()
        },
        knobs,
        rooms: vec!["general".into()],
        owned_rooms: vec![("again".into(), true), ("gone".into(), true)],
        // Both on host h0, which is cut off from 3 s to 12 s: the server
        // drops them (idle) at about 5.5 s, the rooms are deleted at about
        // 6.5 s, and `again` is created anew at 9 s (its owner stays until
        // 14 s, so it is there when the link heals).
        clients: vec![client("u0", "again"), client("u1", "gone")],
        raws: vec![
            owner("own0", "again", vec![(500, 1_500), (9_000, 5_000)]),
            owner("own1", "gone", vec![(500, 1_500)]),
        ],
        faults: vec![
            (3_000, Fault::Partition("h0".into())),
            (12_000, Fault::Repair("h0".into())),
        ],
        quiet_ms: 14_000,
        end_ms: 30_000,
        fault_delay_max_ms: 0,
        nodes: 1,
        client_hosts: 1,
    }
}

#[test]
fn a_client_away_while_its_room_is_deleted_resumes_into_what_is_there() {
    let r = run_scenario(&scenario(), false);
    let shown: Vec<String> = r.violations.iter().map(ToString::to_string).collect();
    assert!(r.passed(), "{shown:#?}");
    for edge in ["resume_room_recreated", "resume_room_gone", "gap_reported"] {
        assert!(r.coverage.get(edge) > 0, "{edge}: {:?}", r.coverage.0);
    }
}
