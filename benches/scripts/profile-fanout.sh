#!/usr/bin/env bash
# Profiles chat-flow under a load-generator scenario with perf (software
# cpu-clock sampling, so it works where hardware counters do not, e.g. in a VM).
#
#   benches/scripts/profile-fanout.sh [SERVER_BIN] [SECONDS]
#
# Environment: SCENARIO (loadgen arguments, default the fanout scenario),
# DELAY (seconds before perf starts, default 4: after connection set-up),
# CALLGRAPH (fp or dwarf,16384), FREQ (samples/s), PORT.
#
# SERVER_BIN should have frame pointers and line tables for useful stacks:
#   RUSTFLAGS="-C force-frame-pointers=yes" CARGO_PROFILE_RELEASE_DEBUG=line-tables-only \
#     CARGO_TARGET_DIR=target/prof cargo build --release -p chat-flow
# Output: /tmp/chat-flow-fanout.perf.data and two reports beside it.
set -euo pipefail
here="$(cd "$(dirname "$0")/../.." && pwd)"
bin="${1:-$here/target/prof/release/chat-flow}"
secs="${2:-8}"
loadgen="$here/target/release/loadgen"
port="${PORT:-3111}"
out="${OUT:-/tmp/chat-flow-fanout.perf.data}"

ulimit -n "$(ulimit -Hn)"
# The same environment the load generator gives a server it starts itself.
env -i HOST=127.0.0.1 PORT="$port" LOG_LEVEL=warn \
  JWT_SECRET="chat-flow-DEVELOPMENT-ONLY-jwt-secret-never-use-in-production" \
  RATE_LIMIT_MESSAGES=1000000000 RATE_LIMIT_REQUESTS=1000000000 \
  MAX_CONNECTIONS=1000000 MAX_CONNECTIONS_PER_IP=1000000 OUTBOUND_QUEUE_LIMIT=100000 \
  HISTORY_LIMIT=100 ROOMS_PER_USER_MAX=100000 AUTH_TIMEOUT_MS=60000 \
  IDLE_TIMEOUT_MS=600000 SHUTDOWN_GRACE_MS=2000 DEFAULT_ROOMS=general:General \
  "$bin" >/tmp/chat-flow-profiled.log 2>&1 &
pid=$!
trap 'kill -TERM $pid 2>/dev/null || true; wait $pid 2>/dev/null || true' EXIT
sleep 1
# Warm-up 3 s covers connection set-up; perf starts once the senders run.
# shellcheck disable=SC2086
"$loadgen" ${SCENARIO:-fanout --warmup 3 --duration $((secs + 2))} --addr "127.0.0.1:$port" --pid "$pid" &
lg=$!
sleep "${DELAY:-4}"
perf record -e cpu-clock -F "${FREQ:-1999}" --call-graph "${CALLGRAPH:-fp}" -p "$pid" -o "$out" -- sleep "$secs"
wait $lg
perf report -i "$out" --no-children --sort dso,sym --stdio --percent-limit 0.7 2>/dev/null \
  | grep -v '^$' > "$out.self.txt"
perf report -i "$out" --no-children --sort sym,srcline --stdio --percent-limit 0.7 -g none 2>/dev/null \
  | grep -v '^$' > "$out.srcline.txt"
perf report -i "$out" --children --sort sym --stdio --percent-limit 2 -g none 2>/dev/null \
  | grep -v '^$' > "$out.children.txt"
echo "reports: $out.self.txt $out.srcline.txt $out.children.txt"
