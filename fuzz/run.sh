#!/usr/bin/env bash
# Runs every fuzz target for SECONDS seconds each (default 60), one after
# the other, and exits non-zero as soon as one finds a crash.
#
#   fuzz/run.sh 60                 # every target, 60 s each
#   fuzz/run.sh 300 verify_token   # only the targets named
#
# Needs a nightly toolchain (`rustup toolchain install nightly`); installs
# cargo-fuzz when it is missing. New inputs go to fuzz/target/corpus/TARGET
# (not committed); the committed seeds in fuzz/corpus/TARGET are read only.
# A crash leaves its input in fuzz/artifacts/TARGET/: turn it into a
# regression test (tests/fuzz_regressions.rs) before fixing it.
set -euo pipefail

cd "$(dirname "$0")"
here="$PWD"

seconds="${1:-60}"
shift || true
if ! [[ "$seconds" =~ ^[0-9]+$ ]] || [ "$seconds" -eq 0 ]; then
    echo "usage: fuzz/run.sh SECONDS [TARGET...]" >&2
    exit 2
fi

if ! cargo +nightly --version >/dev/null 2>&1; then
    echo "fuzz/run.sh: a nightly toolchain is needed: rustup toolchain install nightly" >&2
    exit 1
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "fuzz/run.sh: installing cargo-fuzz" >&2
    cargo install cargo-fuzz --locked
fi

# Every target, with its dictionary.
declare -A dict=(
    [parse_client_message]=dict/protocol.dict
    [verify_token]=dict/jwt.dict
    [core_operations]=
    [read_frames]=
    [dotenv]=
)
if [ "$#" -gt 0 ]; then
    targets=("$@")
else
    targets=(parse_client_message verify_token core_operations read_frames dotenv)
fi
for target in "${targets[@]}"; do
    if [ -z "${dict[$target]+set}" ]; then
        echo "fuzz/run.sh: unknown target $target (known: ${!dict[*]})" >&2
        exit 2
    fi
done

# One build for all targets (release, with debug assertions and overflow
# checks: cargo-fuzz's default).
cargo +nightly fuzz build

status=0
for target in "${targets[@]}"; do
    work="$here/target/corpus/$target"
    seeds="$here/corpus/$target"
    mkdir -p "$work" "$seeds" "$here/artifacts/$target"
    echo "=== $target: ${seconds}s"
    # -max_len: a WebSocket message may be up to 64 KiB, but the interesting
    # structure is small; 16 KiB keeps the run fast and still reaches the
    # 4000-character content limit in 4-byte characters.
    # A structured input (core_operations) has no dictionary.
    dict_flag=()
    if [ -n "${dict[$target]}" ]; then
        dict_flag=(-dict="$here/${dict[$target]}")
    fi
    if ! cargo +nightly fuzz run "$target" "$work" "$seeds" -- \
        -max_total_time="$seconds" \
        "${dict_flag[@]}" \
        -max_len=16384 \
        -timeout=10 \
        -rss_limit_mb=2048 \
        -print_final_stats=1; then
        echo "fuzz/run.sh: $target FAILED: see fuzz/artifacts/$target/" >&2
        status=1
        break
    fi
done
exit "$status"
