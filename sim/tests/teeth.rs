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
