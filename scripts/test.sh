#!/usr/bin/env bash
# Every test of the project, in the order a failure is cheapest to find:
#
#   1. cargo test --workspace: unit tests, quickcheck properties, the
#      integration tests against the real server, the simulation's tests;
#   2. the deterministic simulation over SIM_SEEDS (default 0..1000) seeds;
#   3. the Autobahn TestSuite against the production connection layer;
#   4. every fuzz target for FUZZ_SECONDS (default 60) seconds.
#
# Needs a Rust toolchain; installs everything else itself (cargo-fuzz, the
# Autobahn virtualenv). This is what CI runs (.ci/run).
set -euo pipefail
cd "$(dirname "$0")/.."

# The build needs a few GB; when it runs out, this line says why.
df -h . | tail -n 1

echo "== cargo test --workspace"
cargo test --workspace --locked

echo "== simulation, seeds ${SIM_SEEDS:-0..1000}"
cargo run -p sim --release --locked -- --seeds "${SIM_SEEDS:-0..1000}"

echo "== Autobahn TestSuite"
bash scripts/autobahn.sh

echo "== fuzzing, ${FUZZ_SECONDS:-60} s per target"
bash fuzz/run.sh "${FUZZ_SECONDS:-60}"
