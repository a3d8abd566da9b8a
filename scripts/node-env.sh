# Sourced by clients/js/test.sh and clients/demo/test.sh, run from their own
# directory (two levels under the workspace root) with the caller's name as
# $1: checks for node >= 20 and npm, and exports CHAT_FLOW_BIN as the
# absolute path of the server binary (default: the workspace's
# target/debug/chat-flow, built with cargo when missing). Exits the caller
# with 1 when something is missing.

node_env_me="$1"

if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
  echo "$node_env_me: node (>= 20) and npm are required" >&2
  exit 1
fi
if ! node -e 'process.exit(Number(process.versions.node.split(".")[0]) >= 20 ? 0 : 1)'; then
  echo "$node_env_me: node >= 20 is required (found $(node --version))" >&2
  exit 1
fi

bin="${CHAT_FLOW_BIN:-../../target/debug/chat-flow}"
if [ ! -x "$bin" ]; then
  if command -v cargo >/dev/null; then
    echo "== no server binary at $bin: cargo build -p chat-flow"
    (cd ../.. && cargo build -p chat-flow --locked)
  else
    echo "$node_env_me: no server binary at $bin (build it with cargo build -p chat-flow, or set CHAT_FLOW_BIN)" >&2
    exit 1
  fi
fi
CHAT_FLOW_BIN="$(cd "$(dirname "$bin")" && pwd)/$(basename "$bin")"
export CHAT_FLOW_BIN
unset node_env_me bin
