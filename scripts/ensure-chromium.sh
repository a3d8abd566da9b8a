#!/usr/bin/env bash
# Makes sure Debian's Chromium is installed at /usr/bin/chromium (the browser
# the demo page's test drives, see clients/demo/test/). Installs the
# `chromium` package when it is missing: `apt-get update` once, then
# `apt-get install -y chromium`, through sudo unless this runs as root.
# Fails (exit 1) when it cannot install it or the browser does not start:
# the browser test never skips.
set -euo pipefail

CHROMIUM=/usr/bin/chromium

if [ ! -x "$CHROMIUM" ]; then
  if ! command -v apt-get >/dev/null; then
    echo "ensure-chromium.sh: $CHROMIUM is missing and there is no apt-get to install it (install Chromium at $CHROMIUM)" >&2
    exit 1
  fi
  if [ "$(id -u)" -eq 0 ]; then
    as_root=()
  elif command -v sudo >/dev/null; then
    as_root=(sudo)
  else
    echo "ensure-chromium.sh: $CHROMIUM is missing; installing it needs root or sudo" >&2
    exit 1
  fi
  echo "== installing Debian's chromium package"
  "${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  "${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium
  if [ ! -x "$CHROMIUM" ]; then
    echo "ensure-chromium.sh: apt-get installed chromium but $CHROMIUM is not there" >&2
    exit 1
  fi
fi

# (Debian's launcher script may print a harmless complaint of its own on
# stderr, so only stdout is the version.)
if ! version="$("$CHROMIUM" --headless=new --no-sandbox --disable-gpu --version 2>/dev/null)"; then
  echo "ensure-chromium.sh: $CHROMIUM does not run:" >&2
  "$CHROMIUM" --headless=new --no-sandbox --disable-gpu --version >&2 || true
  exit 1
fi
echo "== $version ($CHROMIUM)"
