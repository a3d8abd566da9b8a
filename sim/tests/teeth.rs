//! Teeth for the oracles: take the observations of a real run, break them
//! the way a buggy server or client would (a lost broadcast, a duplicate
//! delivery, a history with a hole, a typing indicator that never ends, …)
//! and check that the right oracle catches it — and that the unbroken run
//! passes.

use std::sync::Arc;

use base64::Engine as _;
use serde_json::Value;
use sim::obs::{Obs, Record};
use sim::oracles::Checker;
use sim::scenario::Scenario;
use sim::{oracle_config, roster, run};

struct Run {
    scenario: Scenario,
    records: Vec<Record>,
}

fn simulate(seed: u64) -> Run {
    let scenario = Scenario::generate(seed);
    let out = run::simulate(&scenario);
    assert!(out.sim_error.is_none(), "{:?}", out.sim_error);
    Run {
        scenario,
        records: out.records,
    }
}

/// The oracles that fire on `records`.
fn fired(run: &Run, records: &[Record]) -> Vec<String> {
    let mut c = Checker::new(oracle_config(&run.scenario), roster(&run.scenario));
    for r in records.iter().take_while(|r| r.at_ms < run.scenario.end_ms) {
        c.observe(r);
    }
    let out = c.finish(run.scenario.end_ms);
    let mut names: Vec<String> = out.violations.iter().map(|v| v.oracle.clone()).collect();
    names.sort();
    names.dedup();
    names
}

fn json(r: &Record) -> Option<Value> {
    match &r.obs {
        Obs::Recv { text, .. } => serde_json::from_str(text).ok(),
        _ => None,
    }
}

fn kind(v: &Value) -> &str {
    v["type"].as_str().unwrap_or("")
}

fn set_text(r: &mut Record, v: &Value) {
    if let Obs::Recv { text, .. } = &mut r.obs {
        *text = Arc::from(v.to_string());
    }
}

fn assert_catches(run: &Run, records: &[Record], oracle: &str, what: &str) {
    let names = fired(run, records);
    assert!(
        names.iter().any(|n| n == oracle),
        "{what}: expected the {oracle} oracle to fire, got {names:?}"
    );
}

/// A broadcast `NEW_MESSAGE` (no requestId), after the first third of the
/// run, followed on its connection by another message of the same room.
fn broadcast_index(run: &Run) -> usize {
    let conn_room = |r: &Record| match (&r.obs, json(r)) {
        (Obs::Recv { conn, .. }, Some(v)) if kind(&v) == "NEW_MESSAGE" => Some((
            *conn,
            v["payload"]["roomId"].as_str().unwrap_or("").to_owned(),
            v.get("requestId").is_none(),
        )),
        _ => None,
    };
    let n = run.records.len();
    (n / 3..n)
        .find(|&i| {
            conn_room(&run.records[i]).is_some_and(|(c, room, broadcast)| {
                broadcast
                    && run.records[i + 1..]
                        .iter()
                        .filter_map(conn_room)
                        .any(|(c2, r2, _)| c2 == c && r2 == room)
            })
        })
        .expect("a broadcast with a successor")
}

#[test]
fn oracles_have_teeth() {
    let a = simulate(12); // typing, expiry, restarts, several devices per user
    let b = simulate(5); // typing, history reads, churn, slow readers

    for run in [&a, &b] {
        let names = fired(run, &run.records);
        assert!(
            names.is_empty(),
            "seed {} fails unbroken: {names:?}",
            run.scenario.seed
        );
    }

    // A lost broadcast: a gap on that connection.
    let mut r = a.records.clone();
    r.remove(broadcast_index(&a));
    assert_catches(&a, &r, "seq-order", "lost broadcast");

    // A broadcast delivered twice.
    let mut r = a.records.clone();
    let i = broadcast_index(&a);
    let dup = r[i].clone();
    r.insert(i + 1, dup);
    assert_catches(&a, &r, "seq-order", "duplicate broadcast");

    // The client delivering a message twice.
    let mut r = a.records.clone();
    let i = r
        .iter()
        .position(|x| {
            matches!(&x.obs, Obs::Client { event, .. }
                if matches!(**event, chat_flow::client::Event::Message(_)))
        })
        .expect("a delivered message");
    let dup = r[i].clone();
    r.insert(i + 1, dup);
    assert_catches(&a, &r, "exactly-once", "message delivered twice");

    // A history with a hole.
    let mut r = b.records.clone();
    let i = r
        .iter()
        .position(|x| {
            json(x).is_some_and(|v| {
                kind(&v) == "ROOM_JOINED"
                    && v["payload"]["messages"]
                        .as_array()
                        .is_some_and(|m| m.len() >= 3)
            })
        })
        .expect("a ROOM_JOINED with 3+ messages");
    let mut v = json(&r[i]).unwrap();
    v["payload"]["messages"].as_array_mut().unwrap().remove(1);
    set_text(&mut r[i], &v);
    assert_catches(&b, &r, "history", "history with a hole");

    // recovered: true that skips what came after sinceSeq.
    let is_recovery = |x: &Record| {
        json(x).is_some_and(|v| {
            kind(&v) == "ROOM_JOINED"
                && v["payload"]["recovered"] == Value::Bool(true)
                && v["payload"]["messages"]
                    .as_array()
                    .is_some_and(|m| !m.is_empty())
        })
    };
    let (run, i) = [&a, &b]
        .into_iter()
        .find_map(|run| run.records.iter().position(is_recovery).map(|i| (run, i)))
        .expect("a recovery with messages");
    let mut r = run.records.clone();
    let mut v = json(&r[i]).unwrap();
    v["payload"]["messages"].as_array_mut().unwrap().remove(0);
    set_text(&mut r[i], &v);
    assert_catches(run, &r, "recovery", "incomplete recovery");

    // A resend stored twice: a message takes the (user, clientMessageId) of
    // the message just before it in its room, everywhere it was seen.
    let mut r = b.records.clone();
    let msgs: Vec<Value> = r
        .iter()
        .filter_map(json)
        .filter(|v| kind(v) == "NEW_MESSAGE")
        .map(|v| v["payload"].clone())
        .collect();
    let (first, second) = msgs
        .iter()
        .enumerate()
        .find_map(|(k, m)| {
            msgs[k + 1..]
                .iter()
                .find(|n| {
                    n["roomId"] == m["roomId"]
                        && n["seq"].as_u64() == m["seq"].as_u64().map(|s| s + 1)
                })
                .map(|n| (m.clone(), n.clone()))
        })
        .expect("two consecutive messages");
    let rewrite = |m: &mut Value| {
        if m["id"] == second["id"] {
            m["userId"] = first["userId"].clone();
            m["clientMessageId"] = first["clientMessageId"].clone();
        }
    };
    for x in r.iter_mut() {
        if let Some(mut v) = json(x) {
            match kind(&v) {
                "NEW_MESSAGE" => rewrite(&mut v["payload"]),
                "ROOM_JOINED" | "HISTORY" => {
                    for m in v["payload"]["messages"].as_array_mut().unwrap() {
                        rewrite(m);
                    }
                }
                _ => continue,
            }
            set_text(x, &v);
        }
    }
    assert_catches(&b, &r, "no-dup-retry", "resend stored twice");

    // More messages of one user than its bucket allows: squeeze all of a
    // user's timestamps into one millisecond, everywhere.
    let mut r = b.records.clone();
    let user = first["userId"].as_str().unwrap().to_owned();
    let squeeze = |m: &mut Value| {
        if m["userId"] == user.as_str() {
            m["timestamp"] = Value::from("2023-11-14T22:13:21.000Z");
        }
    };
    for x in r.iter_mut() {
        if let Some(mut v) = json(x) {
            match kind(&v) {
                "NEW_MESSAGE" => squeeze(&mut v["payload"]),
                "ROOM_JOINED" | "HISTORY" => {
                    for m in v["payload"]["messages"].as_array_mut().unwrap() {
                        squeeze(m);
                    }
                }
                _ => continue,
            }
            set_text(x, &v);
        }
    }
    assert_catches(&b, &r, "rate-limit", "bucket exceeded");

    // Typing indicators that never end.
    let mut r = a.records.clone();
    r.retain(|x| {
        !json(x).is_some_and(|v| {
            kind(&v) == "TYPING_UPDATE" && v["payload"]["isTyping"] == Value::Bool(false)
        })
    });
    assert_catches(&a, &r, "typing", "typing never ends");

    // Presence: users leave without USER_LEFT.
    let mut r = b.records.clone();
    r.retain(|x| json(x).is_none_or(|v| kind(&v) != "USER_LEFT"));
    assert_catches(&b, &r, "presence", "missing USER_LEFT");

    // A connection that outlives its token: pretend every token's exp is
    // 60 s earlier than it was.
    let mut r = a.records.clone();
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    for x in r.iter_mut() {
        if let Obs::Sent { text, .. } = &mut x.obs
            && let Ok(mut v) = serde_json::from_str::<Value>(text)
            && kind(&v) == "AUTHENTICATE"
        {
            let token = v["payload"]["token"].as_str().unwrap().to_owned();
            let parts: Vec<&str> = token.split('.').collect();
            let mut claims: Value = serde_json::from_slice(&b64.decode(parts[1]).unwrap()).unwrap();
            claims["exp"] = Value::from(claims["exp"].as_u64().unwrap() - 60);
            let forged = format!(
                "{}.{}.{}",
                parts[0],
                b64.encode(claims.to_string()),
                parts[2]
            );
            v["payload"]["token"] = Value::from(forged);
            *text = Arc::from(v.to_string());
        }
    }
    assert_catches(&a, &r, "auth", "connection outlives its token");

    // A client that stops hearing anything on its last connection and
    // delivers nothing more: liveness.
    let mut r = a.records.clone();
    let (conn, client) = r
        .iter()
        .rev()
        .find_map(|x| match &x.obs {
            Obs::Dial { conn, client } if (*client as usize) < a.scenario.clients.len() => {
                Some((*conn, *client))
            }
            _ => None,
        })
        .expect("a library client's connection");
    let since = r
        .iter()
        .find(|x| matches!(&x.obs, Obs::Dial { conn: c, .. } if *c == conn))
        .map(|x| x.at_ms)
        .unwrap();
    r.retain(|x| match &x.obs {
        Obs::Recv { conn: c, .. } | Obs::Control { conn: c, .. } => *c != conn,
        Obs::Client { client: c, .. } => *c != client || x.at_ms < since,
        _ => true,
    });
    assert_catches(&a, &r, "liveness", "a client that hears nothing");

    fields_have_teeth(&b);

    // Last, so that the cluster run is the same in every test process (a
    // seed's run depends on what ran before it in the process).
    cluster_oracles_have_teeth();
}

/// Rewrites every received frame of type `kind` with `edit`.
fn rewrite_all(run: &Run, kind_of: &str, edit: impl Fn(&mut Value)) -> Vec<Record> {
    let mut r = run.records.clone();
    let mut n = 0;
    for x in r.iter_mut() {
        if let Some(mut v) = json(x)
            && kind(&v) == kind_of
        {
            let before = v.clone();
            edit(&mut v);
            if v != before {
                n += 1;
                set_text(x, &v);
            }
        }
    }
    assert!(n > 0, "nothing to rewrite in {kind_of}");
    r
}

/// Fields the oracles used to pass over: each broken alone, everywhere it
/// occurs in seed 5 (history reads, rate limits, churn).
fn fields_have_teeth(b: &Run) {
    // HISTORY says there is nothing older although older messages are
    // retained.
    let r = rewrite_all(b, "HISTORY", |v| {
        v["payload"]["hasMore"] = Value::Bool(false);
    });
    assert_catches(b, &r, "history", "hasMore always false");

    // A refusal that says "retry now".
    let r = rewrite_all(b, "ERROR", |v| {
        if v["payload"]["code"] == "RATE_LIMIT_EXCEEDED" {
            v["payload"]["retryAfterMs"] = Value::from(0);
        }
    });
    assert_catches(b, &r, "rate-limit", "retryAfterMs 0");
    assert_catches(b, &r, "protocol", "retryAfterMs 0 (shape)");

    // A refusal that names a wait longer than one token's refill.
    let r = rewrite_all(b, "ERROR", |v| {
        if v["payload"]["code"] == "RATE_LIMIT_EXCEEDED" {
            v["payload"]["retryAfterMs"] = Value::from(b.scenario.knobs.rate_limit_window_ms + 1);
        }
    });
    assert_catches(b, &r, "rate-limit", "retryAfterMs beyond the window");

    // A field left out: AUTH_SUCCESS without its status.
    let r = rewrite_all(b, "AUTH_SUCCESS", |v| {
        v["payload"].as_object_mut().unwrap().remove("status");
    });
    assert_catches(b, &r, "protocol", "AUTH_SUCCESS without status");

    // A broadcast that carries a requestId.
    let r = rewrite_all(b, "USER_JOINED", |v| {
        v["requestId"] = Value::from("j:someone-else");
    });
    assert_catches(b, &r, "request-order", "USER_JOINED with a requestId");

    // A user shown under a name it never authenticated with.
    let r = rewrite_all(b, "USER_LEFT", |v| {
        v["payload"]["username"] = Value::from("mallory");
    });
    assert_catches(b, &r, "presence", "USER_LEFT under another name");
}

/// Seed `seed`, run as a cluster of two nodes (the scenario's crashes are
/// of node 0, to which the raw clients dial; library clients alternate).
fn cluster_run(seed: u64) -> Run {
    let mut scenario = Scenario::generate(seed);
    scenario.nodes = 2;
    scenario.knobs.tcp_capacity = scenario
        .knobs
        .tcp_capacity
        .max(scenario.clients.len() + scenario.raws.len() + 2 + 2 * scenario.nodes);
    let out = run::simulate(&scenario);
    assert!(out.sim_error.is_none(), "{:?}", out.sim_error);
    Run {
        scenario,
        records: out.records,
    }
}

/// The node of every connection: a library client's `n`-th attempt goes to
/// node `(client + n) % nodes`, a raw client always dials node 0.
fn nodes_of(run: &Run) -> std::collections::BTreeMap<u64, usize> {
    let libs = run.scenario.clients.len();
    let mut attempts = std::collections::BTreeMap::<u32, usize>::new();
    let mut nodes = std::collections::BTreeMap::new();
    for r in &run.records {
        match &r.obs {
            Obs::Dial { conn, client } => {
                let n = attempts.entry(*client).or_insert(0);
                let node = if (*client as usize) < libs {
                    (*client as usize + *n) % run.scenario.nodes
                } else {
                    0
                };
                *n += 1;
                nodes.insert(*conn, node);
            }
            Obs::DialFailed { client } => *attempts.entry(*client).or_insert(0) += 1,
            _ => {}
        }
    }
    nodes
}

fn recv_conn(r: &Record) -> Option<u64> {
    match &r.obs {
        Obs::Recv { conn, .. } => Some(*conn),
        _ => None,
    }
}

/// `acked-survives`, `presence-converges` and the cross-node part of
/// `seq-order`, on a cluster run with a node crash.
fn cluster_oracles_have_teeth() {
    // Seed 56 (8 library clients; node 0 crashes at 10.9 s and 19.6 s).
    acked_survives_has_teeth(&cluster_run(56));
    // Seed 35 (restarts, owned rooms, two library clients, three raw
    // ones): node 0 crashes at 21.3 s and restarts at 23.8 s, the run's
    // last fault, taking down the raw clients (they dial node 0).
    presence_converges_has_teeth(&cluster_run(35));
}

/// The first crash of `c` and the node of each connection; checks that
/// the unbroken run passes.
fn crash_and_nodes(c: &Run) -> (u64, std::collections::BTreeMap<u64, usize>) {
    let names = fired(c, &c.records);
    assert!(
        names.is_empty(),
        "cluster seed {} fails unbroken: {names:?}",
        c.scenario.seed
    );
    let crash = c
        .records
        .iter()
        .find(|r| matches!(&r.obs, Obs::Fault { what } if what.starts_with("crash")))
        .map(|r| r.at_ms)
        .expect("a crash");
    (crash, nodes_of(c))
}

fn acked_survives_has_teeth(c: &Run) {
    let (crash, node) = crash_and_nodes(c);

    // An acknowledged message lost for a member on the other node: the
    // last acknowledgement on node 0 before it crashed whose broadcast
    // reached a connection on node 1 that sends nothing more in that room;
    // that connection loses it, and every later broadcast of the room (so
    // that no gap shows it), but goes on hearing other frames.
    let sends_later = |i: usize, conn: u64, room: &Value| {
        c.records[i..].iter().any(|x| match &x.obs {
            Obs::Sent { conn: n, text } => {
                *n == conn
                    && serde_json::from_str::<Value>(text).is_ok_and(|v| {
                        kind(&v) == "SEND_MESSAGE" && v["payload"]["roomId"] == *room
                    })
            }
            _ => false,
        })
    };
    // The connection is still there (hearing from the server) well after
    // the time the server had to deliver (`NODE_TTL_MS` and more).
    let hears_long_after = |i: usize, conn: u64| {
        let from = c.records[i].at_ms + 6_000;
        c.records[i..]
            .iter()
            .filter(|x| x.at_ms >= from)
            .filter(|x| match &x.obs {
                Obs::Recv { conn: n, .. } | Obs::Control { conn: n, .. } => *n == conn,
                _ => false,
            })
            .count()
            >= 4
    };
    let acks: Vec<(usize, Value)> = c
        .records
        .iter()
        .enumerate()
        .filter(|(_, r)| r.at_ms < crash)
        .filter(|(_, r)| recv_conn(r).is_some_and(|n| node[&n] == 0))
        .filter_map(|(i, r)| json(r).map(|v| (i, v)))
        .filter(|(_, v)| kind(v) == "NEW_MESSAGE" && v.get("requestId").is_some())
        .collect();
    let find = |quiet: bool| {
        acks.iter().rev().find_map(|(i, ack)| {
            let id = &ack["payload"]["id"];
            c.records[*i..].iter().enumerate().find_map(|(k, r)| {
                let n = recv_conn(r).filter(|n| node[n] == 1)?;
                let v = json(r)?;
                (kind(&v) == "NEW_MESSAGE"
                    && v["payload"]["id"] == *id
                    && hears_long_after(i + k, n)
                    && !(quiet && sends_later(i + k, n, &v["payload"]["roomId"])))
                .then(|| {
                    (
                        n,
                        ack["payload"]["roomId"].as_str().unwrap().to_owned(),
                        ack["payload"]["seq"].as_u64().unwrap(),
                    )
                })
            })
        })
    };
    // Preferably a member whose own acknowledgements in the room (kept)
    // will not show a gap to `seq-order`.
    let (member, room, seq) = find(true)
        .or_else(|| find(false))
        .expect("an acknowledged message of node 0 delivered on node 1");
    let mut r = c.records.clone();
    r.retain(|x| {
        !(recv_conn(x) == Some(member)
            && json(x).is_some_and(|v| {
                kind(&v) == "NEW_MESSAGE"
                    && v.get("requestId").is_none()
                    && v["payload"]["roomId"] == room.as_str()
                    && v["payload"]["seq"].as_u64() >= Some(seq)
            }))
    });
    assert_catches(
        c,
        &r,
        "acked-survives",
        "acknowledged message lost on the other node",
    );
}

fn presence_converges_has_teeth(c: &Run) {
    let (crash, node) = crash_and_nodes(c);

    // A crashed node's user left in a view: the USER_LEFT that tells a
    // connection on node 1 that a user of node 0 is gone comes 10 s late
    // (still long before the end, so the end-of-run check is satisfied).
    let mut r = c.records.clone();
    // Users with a connection on node 1: not gone with node 0.
    let on_node_1: Vec<String> = r
        .iter()
        .filter(|x| recv_conn(x).is_some_and(|n| node[&n] == 1))
        .filter_map(json)
        .filter(|v| kind(v) == "AUTH_SUCCESS")
        .map(|v| v["payload"]["userId"].as_str().unwrap().to_owned())
        .collect();
    // The observer hears nothing more of the user in that room (no
    // USER_JOINED back, no new ROOM_JOINED list).
    let heard_again = |i: usize, observer: u64, v: &Value| {
        r[i + 1..].iter().any(|x| {
            recv_conn(x) == Some(observer)
                && json(x).is_some_and(|w| {
                    (kind(&w) == "USER_JOINED"
                        && w["payload"]["user"]["userId"] == v["payload"]["userId"]
                        && w["payload"]["roomId"] == v["payload"]["roomId"])
                        || (kind(&w) == "ROOM_JOINED"
                            && w["payload"]["room"]["id"] == v["payload"]["roomId"])
                })
        })
    };
    let (i, user) = r
        .iter()
        .enumerate()
        .filter(|(_, x)| x.at_ms > crash)
        .find_map(|(i, x)| {
            let n = recv_conn(x).filter(|n| node[n] == 1)?;
            let v = json(x)?;
            let user = v["payload"]["userId"].as_str()?.to_owned();
            (kind(&v) == "USER_LEFT" && !on_node_1.contains(&user) && !heard_again(i, n, &v))
                .then_some((i, user))
        })
        .expect("a USER_LEFT on node 1 for a user of node 0, after the crash");
    let mut late = r.remove(i);
    late.at_ms += 10_000;
    assert!(late.at_ms < c.scenario.end_ms);
    let at = r.partition_point(|x| x.at_ms <= late.at_ms);
    r.insert(at, late);
    assert_catches(
        c,
        &r,
        "presence-converges",
        &format!("a crashed node's user ({user}) gone 10 s late"),
    );

    // One seq order across nodes: a connection on node 1 sees two
    // consecutive messages of a room at each other's seq.
    let mut r = c.records.clone();
    let seen: Vec<(usize, Value)> = r
        .iter()
        .enumerate()
        .filter(|(_, x)| recv_conn(x).is_some_and(|n| node[&n] == 1))
        .filter_map(|(i, x)| json(x).map(|v| (i, v)))
        .filter(|(_, v)| kind(v) == "NEW_MESSAGE" && v.get("requestId").is_none())
        .collect();
    let (i, j) = seen
        .windows(2)
        .find(|w| {
            recv_conn(&r[w[0].0]) == recv_conn(&r[w[1].0])
                && w[0].1["payload"]["roomId"] == w[1].1["payload"]["roomId"]
                && w[1].1["payload"]["seq"].as_u64()
                    == w[0].1["payload"]["seq"].as_u64().map(|s| s + 1)
        })
        .map(|w| (w[0].0, w[1].0))
        .expect("two consecutive broadcasts on one node-1 connection");
    let (mut a, mut b) = (json(&r[i]).unwrap(), json(&r[j]).unwrap());
    let seq_a = a["payload"]["seq"].clone();
    a["payload"]["seq"] = b["payload"]["seq"].clone();
    b["payload"]["seq"] = seq_a;
    set_text(&mut r[i], &b);
    set_text(&mut r[j], &a);
    assert_catches(c, &r, "seq-order", "two seqs swapped on one connection");
}
