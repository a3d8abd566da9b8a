#!/usr/bin/env bash
# Makes sure `redis-server` is on PATH: the Redis store's tests start their
# own server on a free port (tests/common/redis.rs) and never assume one is
# running. On a machine without it, installs Debian's `redis-server` package
# (apt-get update once, then apt-get install; through sudo unless root).
# The package's own service is not needed by the tests; it is left as the
# package sets it up.
set -euo pipefail

if command -v redis-server >/dev/null 2>&1; then
    exit 0
fi

if [ "$(id -u)" -eq 0 ]; then
    SUDO=()
else
    SUDO=(sudo)
fi

echo "redis-server is missing: installing Debian's redis-server"
"${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update
"${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends redis-server

command -v redis-server >/dev/null 2>&1 || {
    echo "redis-server is still missing after the install" >&2
    exit 1
}
redis-server --version
