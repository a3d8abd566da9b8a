#!/usr/bin/env bash
# The JavaScript client's tests (Node's test runner) against the real server
# binary, and the type check of its hand-written declarations.
#
#   clients/js/test.sh            # after `cargo test --workspace` (or `cargo build -p chat-flow`)
#   CHAT_FLOW_BIN=/path/to/chat-flow clients/js/test.sh
#   PROPERTY_SEEDS=0..200 clients/js/test.sh      # more seeds for the property test
#
# Needs node >= 20 and npm; installs the dev dependencies with `npm ci`.
set -euo pipefail
cd "$(dirname "$0")"

if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
  echo "clients/js/test.sh: node (>= 20) and npm are required" >&2
  exit 1
fi
if ! node -e 'process.exit(Number(process.versions.node.split(".")[0]) >= 20 ? 0 : 1)'; then
  echo "clients/js/test.sh: node >= 20 is required (found $(node --version))" >&2
  exit 1
fi

bin="${CHAT_FLOW_BIN:-../../target/debug/chat-flow}"
if [ ! -x "$bin" ]; then
  if command -v cargo >/dev/null; then
    echo "== no server binary at $bin: cargo build -p chat-flow"
    (cd ../.. && cargo build -p chat-flow --locked)
  else
    echo "clients/js/test.sh: no server binary at $bin (build it with cargo build -p chat-flow, or set CHAT_FLOW_BIN)" >&2
    exit 1
  fi
fi
CHAT_FLOW_BIN="$(cd "$(dirname "$bin")" && pwd)/$(basename "$bin")"
export CHAT_FLOW_BIN

echo "== npm ci"
npm ci --no-audit --no-fund --loglevel=error

echo "== type check of src/index.d.ts"
npm run --silent typecheck

echo "== node --test (server: $CHAT_FLOW_BIN)"
npm test --silent
