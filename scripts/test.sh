#!/usr/bin/env bash
# Every test of the project, in the order a failure is cheapest to find:
#
#   1. cargo test --workspace: unit tests, quickcheck properties, the
#      integration tests against the real server, the simulation's tests;
#   2. the JavaScript client's tests (Node's test runner) against the server
#      binary that step 1 built;
#   3. the demo page's browser test: that binary serves the page, Debian's
#      Chromium runs it (never skipped: no browser is a failure);
#   4. the deterministic simulation over SIM_SEEDS (default 0..1000) seeds,
#      one node each, then over SIM_CLUSTER_SEEDS (default 0..300) seeds run
#      as clusters of 2-4 nodes on the simulated Redis (SIM_CLUSTER=1);
#   5. the Autobahn TestSuite against the production connection layer;
#   6. every fuzz target for FUZZ_SECONDS (default 60) seconds.
#
# Needs a Rust toolchain and Node.js 20+ with npm; installs everything else
# itself (Debian's redis-server and Chromium with apt-get, cargo-fuzz, the
# Autobahn virtualenv, the JavaScript client's dev dependencies,
# playwright-core). This is what CI runs (.ci/run).
set -euo pipefail
cd "$(dirname "$0")/.."

# The build needs a few GB; when it runs out, this line says why.
df -h . | tail -n 1

echo "== redis-server (the Redis store's tests start their own)"
bash scripts/ensure-redis.sh

echo "== cargo test --workspace"
cargo test --workspace --locked

echo "== JavaScript client"
bash clients/js/test.sh

echo "== demo page in Chromium"
bash clients/demo/test.sh

echo "== simulation, seeds ${SIM_SEEDS:-0..1000}"
cargo run -p sim --release --locked -- --seeds "${SIM_SEEDS:-0..1000}"

echo "== simulation as a cluster, seeds ${SIM_CLUSTER_SEEDS:-0..300}"
SIM_CLUSTER=1 cargo run -p sim --release --locked -- --seeds "${SIM_CLUSTER_SEEDS:-0..300}"

echo "== Autobahn TestSuite"
bash scripts/autobahn.sh

echo "== fuzzing, ${FUZZ_SECONDS:-60} s per target"
bash fuzz/run.sh "${FUZZ_SECONDS:-60}"
