#!/usr/bin/env bash
# The demo page's browser test: the server binary serves the page, and
# Debian's Chromium (driven by playwright-core) signs in two users, chats,
# drops one user's network, restarts the server, and checks that every
# message is shown exactly once, in order.
#
#   clients/demo/test.sh                          # after `cargo build -p chat-flow` (or cargo test)
#   CHAT_FLOW_BIN=/path/to/chat-flow clients/demo/test.sh
#   clients/demo/test.sh --update-screenshots     # also rewrite docs/screenshots/*.png
#
# Needs node >= 20 and npm; installs playwright-core with `npm ci` and
# Chromium with scripts/ensure-chromium.sh. It never skips: without a
# browser that starts, it fails.
set -euo pipefail
cd "$(dirname "$0")"

case "${1:-}" in
  "") ;;
  --update-screenshots) export SCREENSHOT_DIR="$(cd ../.. && pwd)/docs/screenshots" ;;
  *)
    echo "usage: clients/demo/test.sh [--update-screenshots]" >&2
    exit 2
    ;;
esac

# shellcheck source=../../scripts/node-env.sh
source ../../scripts/node-env.sh "clients/demo/test.sh"

echo "== Chromium"
bash ../../scripts/ensure-chromium.sh

echo "== npm ci"
(cd test && npm ci --no-audit --no-fund --loglevel=error)

echo "== node --test (server: $CHAT_FLOW_BIN)"
(cd test && npm test --silent)
