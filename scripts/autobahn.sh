#!/usr/bin/env bash
# WebSocket conformance: the Autobahn TestSuite (wstest -m fuzzingclient,
# cases 1-10; 12 and 13 are permessage-deflate, which the server does not
# offer) against examples/autobahn_echo.rs, the server's own connection layer
# with an echo handler. Two runs:
#
#   conformance  MAX_MESSAGE_BYTES=16777216 (Autobahn's largest message), so
#                that nothing is refused: every case must pass;
#   production   MAX_MESSAGE_BYTES=65536, the production default: every 9.x
#                message above it must close with 1009.
#
# Every other case must be OK, NON-STRICT, INFORMATIONAL or UNIMPLEMENTED
# (scripts/autobahn_check.py reads the reports; wstest itself exits 0
# whatever happens). Reports: target/autobahn/<run>/index.html.
#
#   scripts/autobahn.sh                 # both runs
#   scripts/autobahn.sh production      # one of them
#
# Needs Python 2.7 (autobahntestsuite runs on nothing newer): PYTHON2, else
# python2.7 / python2 on PATH, else pyenv's 2.7. Without one it says so and
# exits 0 without testing anything. The virtualenv is cached in
# target/autobahn-venv.
set -euo pipefail

cd "$(dirname "$0")/.."
root="$PWD"

runs=("$@")
if [ "${#runs[@]}" -eq 0 ]; then
    runs=(conformance production)
fi
for run in "${runs[@]}"; do
    case "$run" in
        conformance | production) ;;
        *) echo "usage: scripts/autobahn.sh [conformance] [production]" >&2; exit 2 ;;
    esac
done

# --- Python 2.7 --------------------------------------------------------------
python2=""
for candidate in "${PYTHON2:-}" python2.7 python2 \
    "${PYENV_ROOT:-$HOME/.pyenv}"/versions/2.7*/bin/python; do
    [ -n "$candidate" ] || continue
    if command -v "$candidate" >/dev/null 2>&1 &&
        "$candidate" -c 'import sys; sys.exit(sys.version_info[:2] != (2, 7))' 2>/dev/null; then
        python2="$(command -v "$candidate")"
        break
    fi
done
if [ -z "$python2" ]; then
    echo "autobahn.sh: SKIPPED: no Python 2.7 found (set PYTHON2=/path/to/python2.7)."
    echo "autobahn.sh: autobahntestsuite needs Python 2.7; nothing was tested."
    exit 0
fi
if ! command -v python3 >/dev/null 2>&1; then
    echo "autobahn.sh: python3 is needed to read the reports" >&2
    exit 1
fi

venv="$root/target/autobahn-venv"
requirements="$root/scripts/autobahn-requirements.txt"
stamp="$venv/.requirements"
if [ ! -x "$venv/bin/wstest" ] || ! cmp -s "$requirements" "$stamp"; then
    echo "autobahn.sh: creating $venv with $python2"
    if ! "$python2" -m virtualenv --version >/dev/null 2>&1; then
        # The last virtualenv releases that run on Python 2.7.
        "$python2" -m pip install --disable-pip-version-check --quiet 'virtualenv<20.22'
    fi
    rm -rf "$venv"
    "$python2" -m virtualenv --quiet "$venv"
    "$venv/bin/pip" install --disable-pip-version-check --quiet -r "$requirements"
    cp "$requirements" "$stamp"
fi

# --- The echo server -----------------------------------------------------------
cargo build --release --example autobahn_echo
echo_bin="$root/target/release/examples/autobahn_echo"

out="$root/target/autobahn"
mkdir -p "$out"
server_pid=""
stop_server() {
    if [ -n "$server_pid" ]; then
        kill "$server_pid" 2>/dev/null || true
        wait "$server_pid" 2>/dev/null || true
        server_pid=""
    fi
}
trap stop_server EXIT

status=0
for run in "${runs[@]}"; do
    case "$run" in
        conformance) max_bytes=16777216 ;;
        production) max_bytes=65536 ;;
    esac
    dir="$out/$run"
    rm -rf "$dir"
    mkdir -p "$dir"

    "$echo_bin" --port 0 --max-message-bytes "$max_bytes" >"$dir/server.log" 2>&1 &
    server_pid=$!
    url=""
    for _ in $(seq 100); do
        url="$(sed -n 's/^autobahn_echo listening on \(ws:[^ ]*\).*/\1/p' "$dir/server.log")"
        [ -n "$url" ] && break
        if ! kill -0 "$server_pid" 2>/dev/null; then
            break
        fi
        sleep 0.1
    done
    if [ -z "$url" ]; then
        echo "autobahn.sh: the echo server did not start:" >&2
        cat "$dir/server.log" >&2
        exit 1
    fi

    cat >"$dir/spec.json" <<EOF
{
  "outdir": "$dir/reports",
  "servers": [{ "agent": "chat-flow-$run", "url": "$url" }],
  "cases": ["1.*", "2.*", "3.*", "4.*", "5.*", "6.*", "7.*", "8.*", "9.*", "10.*"],
  "exclude-cases": ["12.*", "13.*"],
  "exclude-agent-cases": {}
}
EOF
    echo "=== $run: MAX_MESSAGE_BYTES=$max_bytes, $url"
    started=$SECONDS
    (cd "$dir" && "$venv/bin/wstest" -m fuzzingclient -s "$dir/spec.json") >"$dir/wstest.log" 2>&1 || {
        echo "autobahn.sh: wstest failed:" >&2
        tail -n 20 "$dir/wstest.log" >&2
        exit 1
    }
    echo "    wstest took $((SECONDS - started)) s"
    stop_server

    if ! python3 "$root/scripts/autobahn_check.py" "$dir/reports/index.json" \
        --max-message-bytes "$max_bytes"; then
        status=1
    fi
    echo "    report: $dir/reports/index.html"
done
exit "$status"
