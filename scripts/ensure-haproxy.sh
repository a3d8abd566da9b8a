#!/usr/bin/env bash
# Makes sure `haproxy` is on PATH: tests/deploy_files.rs checks
# deploy/haproxy.cfg with `haproxy -c` and runs it in front of two real
# servers, since CI cannot pull the compose file's haproxy image. On a
# machine without it, installs Debian's `haproxy` package (apt-get update
# once, then apt-get install; through sudo unless root). The package's own
# service is not needed by the tests; it is left as the package sets it up.
set -euo pipefail

if command -v haproxy >/dev/null 2>&1; then
    exit 0
fi

if [ "$(id -u)" -eq 0 ]; then
    SUDO=()
else
    SUDO=(sudo)
fi

echo "haproxy is missing: installing Debian's haproxy"
"${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update
"${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends haproxy

command -v haproxy >/dev/null 2>&1 || {
    echo "haproxy is still missing after the install" >&2
    exit 1
}
haproxy -v | head -n 1
