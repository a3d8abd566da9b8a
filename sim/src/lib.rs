//! Deterministic simulation of Chat Flow.
//!
//! One `u64` seed generates a scenario ([`scenario`]): the server's limits,
//! 2–50 library clients with schedules of joins, leaves, sends, bursts,
//! typing, history reads, token refreshes and drops, a few misbehaving raw
//! clients, and faults (partitions, held links, latency spikes, server
//! crashes and restarts). [`run`] executes it on turmoil — the production
//! `server::run` over turmoil's TCP, the library client over a tapped
//! turmoil stream — and records every observation ([`obs`]). The oracles
//! ([`oracles`]) then check the contract's invariants over the record, and
//! a liveness phase checks that everything converges once faults stop.
//!
//! Same seed, same trace: the trace's hash is the seed's fingerprint.

pub mod core_ops;
pub mod obs;
pub mod oracles;
pub mod raw;
pub mod rng;
pub mod run;
pub mod scenario;
pub mod store_host;
pub mod sweep;
pub mod tap;
pub mod watchdog;

use std::time::{Duration, Instant};

use oracles::{Checker, Coverage, OracleConfig, Place, RosterEntry, Violation};
use scenario::{EPOCH_UNIX_S, Scenario};

/// Everything known about one seed after running it.
#[derive(Debug, Clone)]
pub struct SeedReport {
    /// The seed.
    pub seed: u64,
    /// FNV-1a of the trace.
    pub hash: u64,
    /// Violations (at most a few per oracle).
    pub violations: Vec<Violation>,
    /// All violations, counting those not kept.
    pub violation_count: u64,
    /// Edges reached.
    pub coverage: Coverage,
    /// Simulated milliseconds.
    pub sim_ms: u64,
    /// Wall-clock time of the run and the checks.
    pub wall: Duration,
    /// Observations recorded.
    pub records: usize,
    /// The scenario in one line.
    pub summary: String,
    /// The full trace, when asked for.
    pub trace: Option<String>,
}

impl SeedReport {
    /// Whether every oracle held.
    pub fn passed(&self) -> bool {
        self.violation_count == 0
    }

    /// One line of JSON (how worker processes report to a sweep).
    pub fn to_json(&self) -> String {
        let violations: Vec<serde_json::Value> = self
            .violations
            .iter()
            .map(|v| {
                serde_json::json!({
                    "oracle": v.oracle,
                    "at_ms": v.at_ms,
                    "client": v.place.client,
                    "conn": v.place.conn,
                    "room": v.place.room,
                    "seq": v.place.seq,
                    "detail": v.detail,
                })
            })
            .collect();
        serde_json::json!({
            "seed": self.seed,
            "hash": self.hash,
            "violation_count": self.violation_count,
            "violations": violations,
            "coverage": self.coverage.0,
            "sim_ms": self.sim_ms,
            "wall_ms": self.wall.as_millis() as u64,
            "records": self.records,
            "summary": self.summary,
        })
        .to_string()
    }

    /// Parses [`SeedReport::to_json`]'s output.
    pub fn from_json(line: &str) -> Option<SeedReport> {
        let v: serde_json::Value = serde_json::from_str(line).ok()?;
        let u = |k: &str| v.get(k).and_then(serde_json::Value::as_u64);
        let violations = v
            .get("violations")?
            .as_array()?
            .iter()
            .map(|x| {
                let opt = |k: &str| x.get(k).and_then(serde_json::Value::as_u64);
                Violation {
                    oracle: x["oracle"].as_str().unwrap_or("?").to_owned(),
                    at_ms: opt("at_ms").unwrap_or(0),
                    place: Place {
                        client: opt("client").map(|c| c as u32),
                        conn: opt("conn"),
                        room: x.get("room").and_then(|r| r.as_str()).map(str::to_owned),
                        seq: opt("seq"),
                    },
                    detail: x["detail"].as_str().unwrap_or("").to_owned(),
                }
            })
            .collect();
        let coverage = Coverage(
            v.get("coverage")?
                .as_object()?
                .iter()
                .map(|(k, n)| (k.clone(), n.as_u64().unwrap_or(0)))
                .collect(),
        );
        Some(SeedReport {
            seed: u("seed")?,
            hash: u("hash")?,
            violation_count: u("violation_count")?,
            violations,
            coverage,
            sim_ms: u("sim_ms")?,
            wall: Duration::from_millis(u("wall_ms")?),
            records: u("records")? as usize,
            summary: v.get("summary")?.as_str()?.to_owned(),
            trace: None,
        })
    }

    /// The report of a seed whose worker died without answering.
    pub fn crashed(seed: u64, why: &str) -> SeedReport {
        SeedReport {
            seed,
            hash: 0,
            violations: vec![Violation {
                oracle: "no-panic".into(),
                at_ms: 0,
                place: Place::default(),
                detail: format!("the worker process died: {why}"),
            }],
            violation_count: 1,
            coverage: Coverage::default(),
            sim_ms: 0,
            wall: Duration::ZERO,
            records: 0,
            summary: Scenario::generate(seed).summary(),
            trace: None,
        }
    }
}

/// The report of a hung seed (see [`watchdog`]).
pub fn hang_report(hang: &watchdog::Hang, keep_trace: bool) -> SeedReport {
    let records = hang
        .recorder
        .as_ref()
        .map(|r| r.snapshot())
        .unwrap_or_default();
    SeedReport {
        seed: hang.seed,
        hash: obs::fingerprint(&records),
        violations: vec![Violation {
            oracle: "hang".into(),
            at_ms: hang.sim_ms,
            place: Place::default(),
            detail: format!(
                "no simulation step completed for {:.1?} of wall-clock time: a task spins without ever waiting",
                hang.stuck
            ),
        }],
        violation_count: 1,
        coverage: Coverage::default(),
        sim_ms: hang.sim_ms,
        wall: hang.stuck,
        records: records.len(),
        summary: Scenario::generate(hang.seed).summary(),
        trace: keep_trace.then(|| obs::trace_text(&records)),
    }
}

/// Wall-clock time without a simulation step after which a seed is hung.
pub const HANG_LIMIT: Duration = Duration::from_secs(5);

/// The command that replays `seed` with its full trace.
pub fn replay_command(seed: u64) -> String {
    let cluster = if scenario::cluster_requested() {
        "SIM_CLUSTER=1 "
    } else {
        ""
    };
    format!("{cluster}cargo run -p sim --release -- --seed {seed} --trace")
}

/// What the oracles need of `scenario`.
pub fn oracle_config(scenario: &Scenario) -> OracleConfig {
    let k = &scenario.knobs;
    OracleConfig {
        history_limit: k.history_limit,
        typing_timeout_ms: k.typing_timeout_ms,
        rate_limit_messages: u64::from(k.rate_limit_messages),
        rate_limit_window_ms: k.rate_limit_window_ms,
        rate_limit_requests: u64::from(k.rate_limit_requests),
        jwt_leeway_seconds: k.jwt_leeway_seconds,
        auth_timeout_ms: k.auth_timeout_ms,
        ping_interval_ms: k.ping_interval_ms,
        epoch_unix_ms: EPOCH_UNIX_S * 1000,
        // There and back (a request, then the frame it causes), each way
        // possibly delayed by a fault, plus the server's own batching.
        delivery_slack_ms: 2 * (k.max_latency_ms + scenario.fault_delay_max_ms) + 100,
        notice_delay_ms: k.presence_delay_ms,
        room_idle_ttl_ms: k.room_idle_ttl_ms,
        max_content_chars: chat_flow::config::DEFAULT_MAX_CONTENT_LENGTH,
        // A message's timestamp is its node's clock when the node took it;
        // its seq, when it reached the store. On one node the two orders
        // agree. In a cluster a send can reach the store late: its own
        // round trip (up to the store timeout), and a send the node gave up
        // on (its link cut and made again) can still land afterwards, up to
        // another timeout and the link's reconnect backoff (1 s at most).
        timestamp_slack_ms: if scenario.nodes > 1 {
            2 * run::CLUSTER_STORE_TIMEOUT_MS
                + 1_000
                + 2 * (k.max_latency_ms + scenario.fault_delay_max_ms)
        } else {
            0
        },
    }
}

/// Who must converge in the liveness phase.
pub fn roster(scenario: &Scenario) -> Vec<RosterEntry> {
    let mut r: Vec<RosterEntry> = scenario
        .clients
        .iter()
        .map(|c| RosterEntry::Library {
            user: c.user.clone(),
            final_rooms: c.final_rooms.clone(),
        })
        .collect();
    r.extend(scenario.raws.iter().map(|raw| RosterEntry::Raw {
        reads_promptly: !matches!(raw, scenario::RawSpec::SlowReader { .. }),
    }));
    r
}

/// Runs and checks one seed.
pub fn run_seed(seed: u64, keep_trace: bool) -> SeedReport {
    run_scenario(&Scenario::generate(seed), keep_trace)
}

/// Runs and checks one scenario (generated from a seed, or written by hand
/// for a targeted test).
pub fn run_scenario(scenario: &Scenario, keep_trace: bool) -> SeedReport {
    let seed = scenario.seed;
    let started = Instant::now();
    let output = run::simulate(scenario);
    let hash = obs::fingerprint(&output.records);
    let mut checker = Checker::new(oracle_config(scenario), roster(scenario));
    // What happens at the end instant is the teardown (clients stop and
    // drop their connections), not part of the run.
    for r in output
        .records
        .iter()
        .take_while(|r| r.at_ms < scenario.end_ms)
    {
        checker.observe(r);
    }
    let mut out = checker.finish(scenario.end_ms);
    if let Some(e) = &output.sim_error {
        out.fail("no-panic", output.sim_ms, Place::default(), e.clone());
    }
    for p in &output.panics {
        out.fail(
            "no-panic",
            output.sim_ms,
            Place::default(),
            format!("panic: {p}"),
        );
    }
    SeedReport {
        seed,
        hash,
        violation_count: out.total(),
        violations: out.violations,
        coverage: out.coverage,
        sim_ms: output.sim_ms,
        wall: started.elapsed(),
        records: output.records.len(),
        summary: scenario.summary(),
        trace: keep_trace.then(|| obs::trace_text(&output.records)),
    }
}
