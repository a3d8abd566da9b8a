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

# shellcheck source=../../scripts/node-env.sh
source ../../scripts/node-env.sh "clients/js/test.sh"

echo "== npm ci"
npm ci --no-audit --no-fund --loglevel=error

echo "== type check of src/index.d.ts"
npm run --silent typecheck

echo "== node --test (server: $CHAT_FLOW_BIN)"
npm test --silent
