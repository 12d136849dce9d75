#!/usr/bin/env bash
# Browser end-to-end tests: headless Debian Chromium (driven by playwright-core) against the real
# release binary. Server and browser run in a fresh network namespace that has only loopback, so
# Chromium's ICE candidates cannot send a packet anywhere else; nat.test.mjs builds its router and
# server namespaces inside it.
# firefox.test.mjs runs the WebRTC cases in Debian's firefox-esr too (the second engine, driven
# without a driver: firefox.mjs).
# Needs: /usr/bin/chromium (apt-get install chromium), /usr/bin/firefox-esr, node, and `npm ci`
# in this folder.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
cd "$here"
[ -d node_modules/playwright-core ] || npm ci --no-audit --no-fund
(cd .. && cargo build --release --locked --bin whip-echo)
if [ "$(id -u)" = 0 ]; then ns=(unshare --net); else ns=(unshare --user --map-root-user --net); fi
exec "${ns[@]}" bash -c 'ip link set lo up && exec node --test --test-concurrency=1 --test-timeout=180000 e2e.test.mjs page.test.mjs nat.test.mjs firefox.test.mjs'
