//! Same seed, same trace: a sample of seeds runs twice (in separate worker
//! processes, so that a seed that hangs cannot hang the test) and every
//! fingerprint must repeat.

use std::path::Path;

use sim::sweep::sweep_processes;

fn hashes(seeds: std::ops::Range<u64>) -> Vec<(u64, u64)> {
    let exe = Path::new(env!("CARGO_BIN_EXE_sim"));
    sweep_processes(exe, seeds, 2, &|_| {})
        .reports
        .iter()
        .map(|r| (r.seed, r.hash))
        .collect()
}

#[test]
fn same_seed_same_trace() {
    let first = hashes(0..4);
    let second = hashes(0..4);
    assert_eq!(first.len(), 4);
    assert_eq!(first, second, "fingerprints differ");
}

#[test]
fn different_seeds_different_traces() {
    let h = hashes(100..104);
    for (i, a) in h.iter().enumerate() {
        for b in &h[i + 1..] {
            assert_ne!(a.1, b.1, "seeds {} and {} share a fingerprint", a.0, b.0);
        }
    }
}
