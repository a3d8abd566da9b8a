//! A small sweep: every oracle holds on every seed.
//!
//! `SIM_TEST_SEEDS` sets the number of seeds (default 10; CI also sweeps
//! 1,000 seeds in release with `cargo run -p sim --release`).

use std::path::Path;

use sim::replay_command;
use sim::sweep::sweep_processes;

fn sweep() {
    let n: u64 = std::env::var("SIM_TEST_SEEDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10);
    let exe = Path::new(env!("CARGO_BIN_EXE_sim"));
    let s = sweep_processes(exe, 0..n, 2, &|_| {});
    let mut failures = String::new();
    for r in s.failed() {
        failures.push_str(&format!("seed {}:\n", r.seed));
        for v in &r.violations {
            failures.push_str(&format!("  {v}\n"));
        }
        failures.push_str(&format!("  replay: {}\n", replay_command(r.seed)));
    }
    assert_eq!(s.reports.len() as u64, n);
    assert!(failures.is_empty(), "failing seeds:\n{failures}");
}

#[test]
fn every_oracle_holds_on_every_seed() {
    sweep();
}
